/*
 * An example fastinterp plugin in plain C99.
 *
 * It adds one op and replaces one built-in kernel:
 *   - scale_add(x, y, alpha=1) -> alpha * x + y, float32 and float64, a new op
 *     callable as fastinterp.ops.scale_add(x, y, alpha=...);
 *   - lerp for float32 on the CPU, replacing fastinterp's own kernel until the
 *     plugin is unloaded (the same formula with a plain loop: equal up to rounding,
 *     since the built-in kernel fuses its multiply-add where the CPU has FMA).
 *
 * Build:  ./build.sh            (or see the command in it)
 * Use:    import fastinterp as fi
 *         fi.plugins.load("examples/plugin_c/libfi_example.so")
 *         fi.ops.scale_add(x, y, alpha=2.0)
 */
#include <math.h>

#include <fastinterp/plugin.h>

/* ---- scale_add: out = alpha * x + y ------------------------------------ */
/* fastinterp has checked the shapes against the signature below and passes
 * C-contiguous arrays of one dtype; the kernel still checks what it relies on,
 * so that C callers get an error instead of a crash. */
#define SCALE_ADD(T, NAME)                                                    \
  static int NAME(const fi_tensor_t* in, int32_t n_in, const fi_tensor_t* out, \
                  int32_t n_out, const fi_params_t* params, char* err,        \
                  size_t err_size) {                                          \
    int64_t i, n;                                                             \
    double alpha;                                                             \
    const T* x;                                                               \
    const T* y;                                                               \
    T* z;                                                                     \
    if (n_in != 2 || n_out != 1)                                              \
      return fi_error(err, err_size, FI_ERR_INVALID,                          \
                      "scale_add: expects 2 inputs and 1 output; got %d, %d", \
                      (int)n_in, (int)n_out);                                 \
    if (params == NULL || params->n_floats < 1)                               \
      return fi_error(err, err_size, FI_ERR_INVALID,                          \
                      "scale_add: parameter alpha is missing");               \
    alpha = params->floats[0];                                                \
    if (!isfinite(alpha))                                                     \
      return fi_error(err, err_size, FI_ERR_INVALID,                          \
                      "scale_add: alpha must be finite; got %g", alpha);      \
    n = fi_numel(&out[0]);                                                    \
    if (fi_numel(&in[0]) != n || fi_numel(&in[1]) != n ||                     \
        !fi_is_contiguous(&in[0]) || !fi_is_contiguous(&in[1]) ||             \
        !fi_is_contiguous(&out[0]))                                           \
      return fi_error(err, err_size, FI_ERR_INVALID,                          \
                      "scale_add: x, y and out must be contiguous and of "    \
                      "one size");                                            \
    x = (const T*)fi_data(&in[0]);                                            \
    y = (const T*)fi_data(&in[1]);                                            \
    z = (T*)fi_data(&out[0]);                                                 \
    for (i = 0; i < n; ++i) z[i] = (T)(alpha * x[i] + y[i]);                  \
    return FI_OK;                                                             \
  }

SCALE_ADD(float, scale_add_f32)
SCALE_ADD(double, scale_add_f64)

/* ---- lerp (float32): the built-in calling convention ------------------- */
/* Inputs a, b, t all have out's shape; broadcast axes have stride 0 (strides
 * count elements). out is C-contiguous. PyTorch's two-sided formula. */
static int lerp_f32(const fi_tensor_t* in, int32_t n_in, const fi_tensor_t* out,
                    int32_t n_out, const fi_params_t* params, char* err,
                    size_t err_size) {
  const int32_t nd = out[0].ndim;
  const int64_t n = fi_numel(&out[0]);
  float* z = (float*)fi_data(&out[0]);
  const float* p[3];
  int64_t idx, k, rem, off[3];
  int32_t d, j;
  (void)params;
  if (n_in != 3 || n_out != 1)
    return fi_error(err, err_size, FI_ERR_INVALID,
                    "lerp: expects inputs a, b, t and 1 output");
  for (j = 0; j < 3; ++j) p[j] = (const float*)fi_data(&in[j]);
  for (idx = 0; idx < n; ++idx) {
    float a, b, w;
    off[0] = off[1] = off[2] = 0;
    rem = idx;
    for (d = nd - 1; d >= 0; --d) {
      k = rem % out[0].shape[d];
      rem /= out[0].shape[d];
      for (j = 0; j < 3; ++j) off[j] += k * fi_stride(&in[j], d);
    }
    a = p[0][off[0]];
    b = p[1][off[1]];
    w = p[2][off[2]];
    z[idx] = fabsf(w) < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
  }
  return FI_OK;
}

/* ---- the descriptor ----------------------------------------------------- */
static const fi_kernel_t kernels[] = {
    /* op, device, dtype, fn, signature, params, doc, flags, reserved */
    {"scale_add", FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 32, 1}, scale_add_f32,
     "x(...), y(...) -> out(...)", "alpha: float = 1",
     "alpha * x + y, element-wise", 0, 0},
    {"scale_add", FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 64, 1}, scale_add_f64,
     "x(...), y(...) -> out(...)", "alpha: float = 1",
     "alpha * x + y, element-wise", 0, 0},
    {"lerp", FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 32, 1}, lerp_f32, NULL, NULL,
     "lerp(a, b, t) with a plain C loop", 0, 0},
};

/* FI_PLUGIN_INIT fills every field of the header's ABI minor (fields a later
 * minor appends start as NULL/0). To refuse loading (e.g. a CPU feature is
 * missing), make the descriptor non-const and return
 * fi_plugin_refuse(&plugin, "why") from the entry point. */
static const fi_plugin_t plugin =
    FI_PLUGIN_INIT("example", "1.0", kernels, sizeof(kernels) / sizeof(kernels[0]));

FI_PLUGIN_ENTRY { return &plugin; }
