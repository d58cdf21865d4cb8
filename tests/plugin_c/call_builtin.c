/*
 * C code calling fastinterp's own lerp kernel through the built-in table,
 * with no Python in the loop: the table comes from the capsule
 * "fastinterp.builtin_kernels" or the symbol fastinterp_builtin_kernels.
 *
 * run_lerp computes out[i] = lerp(a[i], b[i], t) for n floats with a scalar t
 * (stride 0), or with an array t when t_stride is 1.
 */
#include <fastinterp/plugin.h>

FI_EXTERN_C FI_EXPORT int run_lerp(const fi_plugin_t* table, float* out,
                                   const float* a, const float* b, const float* t,
                                   int64_t t_stride, int64_t rows, int64_t cols,
                                   int nthreads, char* err, size_t err_size) {
  int64_t shape[2];
  int64_t compact[2];
  int64_t t_strides[2];
  fi_tensor_t in[3], res;
  fi_params_t params;
  int j;
  const fi_kernel_t* k = fi_find_kernel(table, "lerp", FI_DEVICE_CPU, FI_DTYPE_FLOAT, 32);
  if (k == NULL) return fi_error(err, err_size, FI_ERR_UNSUPPORTED, "no lerp float32 kernel");
  shape[0] = rows; shape[1] = cols;
  compact[0] = cols; compact[1] = 1;
  t_strides[0] = t_stride * cols; t_strides[1] = t_stride;
  for (j = 0; j < 3; ++j) {
    in[j].device.device_type = FI_DEVICE_CPU;
    in[j].device.device_id = 0;
    in[j].ndim = 2;
    in[j].dtype.code = FI_DTYPE_FLOAT;
    in[j].dtype.bits = 32;
    in[j].dtype.lanes = 1;
    in[j].shape = shape;
    in[j].strides = compact;
    in[j].byte_offset = 0;
  }
  in[0].data = (void*)a;
  in[1].data = (void*)b;
  in[2].data = (void*)t;
  in[2].strides = t_strides;
  res = in[0];
  res.data = out;
  res.strides = NULL; /* compact */
  params.struct_size = sizeof(params);
  params.nthreads = nthreads;
  params.n_floats = params.n_ints = 0;
  params.floats = NULL;
  params.ints = NULL;
  params.stream = NULL;
  return k->fn(in, 3, &res, 1, &params, err, err_size);
}

/* Ask for a float16 lerp: the table has none, so this returns NULL (0). */
FI_EXTERN_C FI_EXPORT int has_lerp_f16(const fi_plugin_t* table) {
  return fi_find_kernel(table, "lerp", FI_DEVICE_CPU, FI_DTYPE_FLOAT, 16) != NULL;
}

/* Call lerp with the wrong dtype for its output: must fail with a message. */
FI_EXTERN_C FI_EXPORT int lerp_bad_call(const fi_plugin_t* table, char* err, size_t err_size) {
  float x = 0;
  int64_t one = 1;
  fi_tensor_t t;
  const fi_kernel_t* k = fi_find_kernel(table, "lerp", FI_DEVICE_CPU, FI_DTYPE_FLOAT, 32);
  t.data = &x; t.device.device_type = FI_DEVICE_CPU; t.device.device_id = 0;
  t.ndim = 1; t.dtype.code = FI_DTYPE_INT; t.dtype.bits = 32; t.dtype.lanes = 1;
  t.shape = &one; t.strides = NULL; t.byte_offset = 0;
  return k->fn(&t, 1, &t, 1, NULL, err, err_size);
}

/* out = grid_sample(x, grid) through the table: NCHW (or NHWC) float32. */
FI_EXTERN_C FI_EXPORT int run_grid_sample(const fi_plugin_t* table, float* out,
                                          const float* x, const float* grid,
                                          const int64_t* x_shape, const int64_t* grid_shape,
                                          const int64_t* out_shape, const int64_t* ints,
                                          int32_t n_ints, int nthreads, char* err,
                                          size_t err_size) {
  fi_tensor_t in[2], res;
  fi_params_t params;
  int j;
  const fi_kernel_t* k =
      fi_find_kernel(table, "grid_sample", FI_DEVICE_CPU, FI_DTYPE_FLOAT, 32);
  if (k == NULL) return fi_error(err, err_size, FI_ERR_UNSUPPORTED, "no grid_sample kernel");
  for (j = 0; j < 2; ++j) {
    in[j].device.device_type = FI_DEVICE_CPU;
    in[j].device.device_id = 0;
    in[j].ndim = 4;
    in[j].dtype.code = FI_DTYPE_FLOAT;
    in[j].dtype.bits = 32;
    in[j].dtype.lanes = 1;
    in[j].strides = NULL;
    in[j].byte_offset = 0;
  }
  in[0].data = (void*)x;
  in[0].shape = (int64_t*)x_shape;
  in[1].data = (void*)grid;
  in[1].shape = (int64_t*)grid_shape;
  res = in[0];
  res.data = out;
  res.shape = (int64_t*)out_shape;
  params.struct_size = sizeof(params);
  params.nthreads = nthreads;
  params.n_floats = 0;
  params.n_ints = n_ints;
  params.floats = NULL;
  params.ints = ints;
  params.stream = NULL;
  return k->fn(in, 2, &res, 1, &params, err, err_size);
}
