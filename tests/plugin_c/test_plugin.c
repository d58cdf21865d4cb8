/*
 * A plugin for the tests, built in variants with -D flags:
 *   (none)               a well-formed plugin "testplug": fail_op, sum_rows, lerp (float64)
 *   -DMAJOR=n            claims ABI major n
 *   -DKERNEL_SIZE=n      claims sizeof(fi_kernel_t) = n
 *   -DPLUGIN_SIZE=n      claims sizeof(fi_plugin_t) = n
 *   -DNULL_DESCRIPTOR    the entry point returns NULL
 *   -DNO_ENTRY           does not export fastinterp_plugin at all
 *   -DDATA_ENTRY         exports fastinterp_plugin as the descriptor itself (data)
 *   -DBAD_DTYPE          declares an int32 kernel
 *   -DBAD_OP             declares an op whose name is not an identifier
 *   -DNULL_ENTRIES       adds entries with a NULL fn and otherwise malformed fields
 *                        (NULL op, a zeroed terminator...): skipped all the same
 *   -DFUTURE_MINOR       claims ABI 1.7 with kernel entries 16 bytes longer
 *                        (fields a later minor appended); only fail_op, sum_rows
 *   -DREFUSE             the entry point refuses with a message (ABI >= 1.1)
 *   -DNAME=\"x\"         plugin name (default "testplug")
 * It also builds against the frozen ABI 1.0 header (-I abi_1_0): a plugin
 * built before 1.1 must keep loading.
 */
#include <fastinterp/plugin.h>

#ifndef FI_PLUGIN_INIT /* an ABI 1.0 header: fi_plugin_t has no `error` yet */
#define FI_PLUGIN_INIT(name, version, kernels, n) \
  { FI_ABI_INIT, (name), (version), (kernels), (int64_t)(n) }
#endif

#ifndef NAME
#define NAME "testplug"
#endif

/* Always fails, with a message naming what it was given. */
static int fail_op(const fi_tensor_t* in, int32_t n_in, const fi_tensor_t* out,
                   int32_t n_out, const fi_params_t* params, char* err,
                   size_t err_size) {
  (void)in; (void)n_in; (void)n_out; (void)params;
  return fi_error(err, err_size, FI_ERR_UNSUPPORTED,
                  "fail_op: refusing %lld elements on purpose",
                  (long long)fi_numel(&out[0]));
}

/* out[i] = sum_j x[i, j] * w; signature "x(m, n) -> out(m)". */
static int sum_rows(const fi_tensor_t* in, int32_t n_in, const fi_tensor_t* out,
                    int32_t n_out, const fi_params_t* params, char* err,
                    size_t err_size) {
  const double* x = (const double*)fi_data(&in[0]);
  double* y = (double*)fi_data(&out[0]);
  int64_t m = in[0].shape[0], n = in[0].shape[1], i, j;
  double w = params->floats[0];
  if (n_in != 1 || n_out != 1 || params->n_floats != 1)
    return fi_error(err, err_size, FI_ERR_INVALID, "sum_rows: bad call");
  for (i = 0; i < m; ++i) {
    double s = 0;
    for (j = 0; j < n; ++j) s += x[i * n + j];
    y[i] = s * w + (double)params->ints[0];
  }
  return FI_OK;
}

/* lerp float64 through the built-in convention: out = a + t * (b - a). */
static int lerp_f64(const fi_tensor_t* in, int32_t n_in, const fi_tensor_t* out,
                    int32_t n_out, const fi_params_t* params, char* err,
                    size_t err_size) {
  int64_t n = fi_numel(&out[0]), idx, rem, k, off[3];
  int32_t d, j;
  double* z = (double*)fi_data(&out[0]);
  (void)params;
  if (n_in != 3 || n_out != 1)
    return fi_error(err, err_size, FI_ERR_INVALID, "lerp: bad call");
  for (idx = 0; idx < n; ++idx) {
    const double* p[3];
    off[0] = off[1] = off[2] = 0;
    rem = idx;
    for (d = out[0].ndim - 1; d >= 0; --d) {
      k = rem % out[0].shape[d];
      rem /= out[0].shape[d];
      for (j = 0; j < 3; ++j) off[j] += k * fi_stride(&in[j], d);
    }
    for (j = 0; j < 3; ++j) p[j] = (const double*)fi_data(&in[j]) + off[j];
    z[idx] = *p[0] + *p[2] * (*p[1] - *p[0]);
  }
  return FI_OK;
}

static const fi_kernel_t kernels[] = {
    {"fail_op", FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 32, 1}, fail_op,
     "x(...) -> out(...)", NULL, NULL, 0, 0},
    {"sum_rows", FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 64, 1}, sum_rows,
     "x(m, n) -> out(m)", "w: float = 1, bias: int = 0", "row sums", FI_KERNEL_SERIAL, 0},
    {"lerp", FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 64, 1}, lerp_f64, NULL, NULL, NULL, 0, 0},
    /* Skipped entries: a NULL kernel, and a device this build does not drive. */
    {"not_built", FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 32, 1}, NULL, NULL, NULL, NULL, 0, 0},
    {"gpu_only", FI_DEVICE_CUDA, {FI_DTYPE_FLOAT, 32, 1}, fail_op,
     "x(...) -> out(...)", NULL, NULL, 0, 0},
#ifdef BAD_DTYPE
    {"int_op", FI_DEVICE_CPU, {FI_DTYPE_INT, 32, 1}, fail_op, NULL, NULL, NULL, 0, 0},
#endif
#ifdef BAD_OP
    {"Fail-Op", FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 32, 1}, fail_op, NULL, NULL, NULL, 0, 0},
#endif
#ifdef NULL_ENTRIES
    {NULL, FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 64, 1}, NULL, NULL, NULL, NULL, 0, 0},
    {"Not Built", FI_DEVICE_CPU, {FI_DTYPE_INT, 32, 1}, NULL, "x(", "k: int = x", NULL, 0, 0},
    {"annotations", 99, {FI_DTYPE_FLOAT, 64, 1}, NULL, NULL, NULL, NULL, 0, 0},
    {NULL, 0, {0, 0, 0}, NULL, NULL, NULL, NULL, 0, 0},
#endif
};

#ifdef FUTURE_MINOR
typedef struct future_kernel {
  fi_kernel_t base;          /* the 1.0 prefix */
  uint64_t appended[2];      /* what a later minor might add */
} future_kernel_t;
static const future_kernel_t future_kernels[] = {
    {{"fail_op", FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 32, 1}, fail_op, "x(...) -> out(...)", NULL,
      NULL, 0, 0}, {1, 2}},
    {{"sum_rows", FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 64, 1}, sum_rows, "x(m, n) -> out(m)",
      "w: float = 1, bias: int = 0", NULL, 0, 0}, {3, 4}},
};
static fi_plugin_t plugin =
    FI_PLUGIN_INIT(NAME, "0.1", (const fi_kernel_t*)future_kernels, 2);
#else
static fi_plugin_t plugin =
    FI_PLUGIN_INIT(NAME, "0.1", kernels, sizeof(kernels) / sizeof(kernels[0]));
#endif

#if defined(DATA_ENTRY)
FI_EXTERN_C FI_EXPORT const fi_plugin_t* fastinterp_plugin = &plugin;
#elif !defined(NO_ENTRY)
FI_PLUGIN_ENTRY {
#ifdef NULL_DESCRIPTOR
  return NULL;
#endif
#ifdef REFUSE
  return fi_plugin_refuse(&plugin, "testplug: needs a CPU with the MOON instruction set");
#endif
#ifdef MAJOR
  plugin.abi.major = MAJOR;
#endif
#ifdef KERNEL_SIZE
  plugin.abi.kernel_size = KERNEL_SIZE;
#endif
#ifdef PLUGIN_SIZE
  plugin.abi.plugin_size = PLUGIN_SIZE;
#endif
#ifdef FUTURE_MINOR
  plugin.abi.minor = 7;
  plugin.abi.kernel_size = (uint32_t)sizeof(future_kernel_t);
  (void)kernels;
#endif
  return &plugin;
}
#else
FI_EXTERN_C FI_EXPORT int not_a_plugin(void) { return (int)plugin.n_kernels; }
#endif
