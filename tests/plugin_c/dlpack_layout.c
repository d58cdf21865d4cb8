/* fi_tensor_t has exactly DLPack's DLTensor layout (compile-time checks). */
#include <fastinterp/plugin.h>
#include <dlpack.h> /* -I the folder holding DLPack's header */

#define SAME(field) \
  _Static_assert(offsetof(fi_tensor_t, field) == offsetof(DLTensor, field), #field)
_Static_assert(sizeof(fi_tensor_t) == sizeof(DLTensor), "size");
_Static_assert(sizeof(fi_device_t) == sizeof(DLDevice), "device size");
_Static_assert(sizeof(fi_dtype_t) == sizeof(DLDataType), "dtype size");
SAME(data);
SAME(device);
SAME(ndim);
SAME(dtype);
SAME(shape);
SAME(strides);
SAME(byte_offset);
_Static_assert(FI_DEVICE_CPU == kDLCPU && FI_DEVICE_CUDA == kDLCUDA, "devices");
_Static_assert(FI_DTYPE_INT == kDLInt && FI_DTYPE_UINT == kDLUInt && FI_DTYPE_FLOAT == kDLFloat,
               "dtype codes");
