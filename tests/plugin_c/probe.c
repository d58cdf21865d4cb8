/*
 * A plugin that reports what it was built with and what it is given:
 *   probe_value  "x(...) -> out(...)": out = VALUE everywhere (-DVALUE=n, default 1);
 *                tells which build of a library runs.
 *   probe_flags  "a(...), b(...) -> out(4)": out = {fi_input_readonly(a),
 *                fi_input_readonly(b), 1 if every tensor has non-NULL strides,
 *                params->struct_size}.
 * -DNAME=\"x\" sets the plugin name (default "probe").
 */
#include <fastinterp/plugin.h>

#ifndef NAME
#define NAME "probe"
#endif
#ifndef VALUE
#define VALUE 1
#endif

static int probe_value(const fi_tensor_t* in, int32_t n_in, const fi_tensor_t* out,
                       int32_t n_out, const fi_params_t* params, char* err, size_t err_size) {
  double* y = (double*)fi_data(&out[0]);
  int64_t i, n = fi_numel(&out[0]);
  (void)in;
  (void)params;
  if (n_in != 1 || n_out != 1)
    return fi_error(err, err_size, FI_ERR_INVALID, "probe_value: bad call");
  for (i = 0; i < n; ++i) y[i] = VALUE;
  return FI_OK;
}

static int probe_flags(const fi_tensor_t* in, int32_t n_in, const fi_tensor_t* out,
                       int32_t n_out, const fi_params_t* params, char* err, size_t err_size) {
  double* y = (double*)fi_data(&out[0]);
  int32_t i;
  int strides_ok = 1;
  if (n_in != 2 || n_out != 1 || fi_numel(&out[0]) != 4)
    return fi_error(err, err_size, FI_ERR_INVALID, "probe_flags: bad call");
  for (i = 0; i < n_in; ++i) strides_ok &= in[i].ndim == 0 || in[i].strides != NULL;
  strides_ok &= out[0].strides != NULL;
  y[0] = fi_input_readonly(params, 0);
  y[1] = fi_input_readonly(params, 1);
  y[2] = strides_ok;
  y[3] = (double)params->struct_size;
  return FI_OK;
}

static const fi_kernel_t kernels[] = {
    {"probe_value", FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 64, 1}, probe_value, "x(...) -> out(...)",
     NULL, "out = VALUE", 0, 0},
    {"probe_flags", FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 64, 1}, probe_flags,
     "a(...), b(...) -> out(4)", NULL, "read-only marks, strides, struct size", 0, 0},
};

static const fi_plugin_t plugin =
    FI_PLUGIN_INIT(NAME, "1", kernels, sizeof(kernels) / sizeof(kernels[0]));

FI_PLUGIN_ENTRY { return &plugin; }
