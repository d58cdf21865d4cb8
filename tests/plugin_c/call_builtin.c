/*
 * C code calling fastinterp's own kernels through the built-in table, with no
 * Python in the loop: the table comes from the capsule
 * "fastinterp.builtin_kernels" or the symbol fastinterp_builtin_kernels.
 *
 * run_lerp computes out = lerp(a, b, t) on (rows, cols) floats, t either a
 * scalar (t_stride 0) or an array (t_stride 1); run_grid_sample calls the
 * float32 grid_sample with the given shapes and int parameters.
 */
#include <fastinterp/plugin.h>

/* A CPU float32 tensor over `data` with the given strides (never NULL when
 * ndim > 0: compact ones come from compact_strides). */
static fi_tensor_t f32_tensor(const void* data, int32_t ndim, const int64_t* shape,
                              const int64_t* strides) {
  fi_tensor_t t;
  t.data = (void*)data;
  t.device.device_type = FI_DEVICE_CPU;
  t.device.device_id = 0;
  t.ndim = ndim;
  t.dtype.code = FI_DTYPE_FLOAT;
  t.dtype.bits = 32;
  t.dtype.lanes = 1;
  t.shape = (int64_t*)shape;
  t.strides = (int64_t*)strides;
  t.byte_offset = 0;
  return t;
}

/* Row-major strides (in elements) of `shape` into `strides`. */
static const int64_t* compact_strides(int32_t ndim, const int64_t* shape, int64_t* strides) {
  int64_t s = 1;
  int32_t d;
  for (d = ndim - 1; d >= 0; --d) {
    strides[d] = s;
    s *= shape[d];
  }
  return strides;
}

static fi_params_t params_with(int nthreads, const int64_t* ints, int32_t n_ints) {
  fi_params_t p;
  fi_params_init(&p); /* every field of this minor, zeroed */
  p.nthreads = nthreads;
  p.n_ints = n_ints;
  p.ints = ints;
  return p;
}

FI_EXTERN_C FI_EXPORT int run_lerp(const fi_plugin_t* table, float* out,
                                   const float* a, const float* b, const float* t,
                                   int64_t t_stride, int64_t rows, int64_t cols,
                                   int nthreads, char* err, size_t err_size) {
  int64_t shape[2], t_strides[2], strides[2];
  fi_tensor_t in[3], res;
  fi_params_t params = params_with(nthreads, NULL, 0);
  const fi_kernel_t* k = fi_find_kernel(table, "lerp", FI_DEVICE_CPU, FI_DTYPE_FLOAT, 32);
  if (k == NULL) return fi_error(err, err_size, FI_ERR_UNSUPPORTED, "no lerp float32 kernel");
  shape[0] = rows;
  shape[1] = cols;
  t_strides[0] = t_stride * cols;
  t_strides[1] = t_stride;
  compact_strides(2, shape, strides);
  in[0] = f32_tensor(a, 2, shape, strides);
  in[1] = f32_tensor(b, 2, shape, strides);
  in[2] = f32_tensor(t, 2, shape, t_strides);
  res = f32_tensor(out, 2, shape, strides);
  return k->fn(in, 3, &res, 1, &params, err, err_size);
}

/* Ask for a float16 lerp: the table has none, so this returns NULL (0). */
FI_EXTERN_C FI_EXPORT int has_lerp_f16(const fi_plugin_t* table) {
  return fi_find_kernel(table, "lerp", FI_DEVICE_CPU, FI_DTYPE_FLOAT, 16) != NULL;
}

/* Call lerp with one tensor for everything: must fail with a message. */
FI_EXTERN_C FI_EXPORT int lerp_bad_call(const fi_plugin_t* table, char* err, size_t err_size) {
  float x = 0;
  int64_t one = 1;
  fi_tensor_t t = f32_tensor(&x, 1, &one, &one);
  const fi_kernel_t* k = fi_find_kernel(table, "lerp", FI_DEVICE_CPU, FI_DTYPE_FLOAT, 32);
  t.dtype.code = FI_DTYPE_INT;
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
  int64_t strides[3][4];
  fi_params_t params = params_with(nthreads, ints, n_ints);
  const fi_kernel_t* k =
      fi_find_kernel(table, "grid_sample", FI_DEVICE_CPU, FI_DTYPE_FLOAT, 32);
  if (k == NULL) return fi_error(err, err_size, FI_ERR_UNSUPPORTED, "no grid_sample kernel");
  in[0] = f32_tensor(x, 4, x_shape, compact_strides(4, x_shape, strides[0]));
  in[1] = f32_tensor(grid, 4, grid_shape, compact_strides(4, grid_shape, strides[1]));
  res = f32_tensor(out, 4, out_shape, compact_strides(4, out_shape, strides[2]));
  return k->fn(in, 2, &res, 1, &params, err, err_size);
}

/* Call the exported float32 `op` ("lerp" or "grid_sample") with one hostile
 * argument (`which`, below); every case must return FI_ERR_INVALID with a
 * message, never crash. Case 9 is valid but asks for 2**30 threads; lerp takes no
 * int parameters, so cases 10 and 11 are valid for it. */
FI_EXTERN_C FI_EXPORT int hostile_call(const fi_plugin_t* table, const char* op, int which,
                                       char* err, size_t err_size) {
  float data[64];
  int64_t shape[4] = {1, 1, 2, 2}, strides[4] = {4, 4, 2, 1};
  int64_t grid_shape[4] = {1, 1, 2, 2}, out_shape[4] = {1, 1, 1, 2};
  int64_t big[4] = {INT64_C(1) << 40, INT64_C(1) << 40, 1, 1};
  int64_t ints[4] = {0, 0, 0, 0};
  int lerp = strcmp(op, "lerp") == 0;
  int32_t n_in = lerp ? 3 : 2, i;
  fi_tensor_t in[3], res;
  fi_params_t params = params_with(2, ints, lerp ? 0 : 4);
  const fi_kernel_t* k = fi_find_kernel(table, op, FI_DEVICE_CPU, FI_DTYPE_FLOAT, 32);
  if (k == NULL) return -1;
  memset(data, 0, sizeof(data));
  for (i = 0; i < n_in; ++i) in[i] = f32_tensor(data, 4, shape, strides);
  if (!lerp) in[1] = f32_tensor(data, 4, grid_shape, compact_strides(4, grid_shape, strides));
  res = f32_tensor(data + 32, 4, lerp ? shape : out_shape, lerp ? strides : NULL);
  if (!lerp) res.strides = NULL; /* a DLPack < 1.2 caller: read as compact */
  switch (which) {
    case 0: res.ndim = -1; break;
    case 1: in[0].ndim = 1000; break;
    case 2: in[0].shape = NULL; break;
    case 3: res.shape = shape; shape[2] = -2; break;
    case 4: in[0].shape = big; break;
    case 5: in[0].data = NULL; break;
    case 6: return k->fn(NULL, n_in, &res, 1, &params, err, err_size);
    case 7: params.struct_size = 4; break;
    case 8: params.n_ints = 3; params.ints = NULL; break;
    case 9: params.nthreads = 1 << 30; break;
    case 10: ints[0] = INT64_C(1) << 32; break;
    case 11: ints[2] = 2; break; /* align_corners is a flag */
    default: return -1;
  }
  return k->fn(in, n_in, &res, 1, &params, err, err_size);
}
