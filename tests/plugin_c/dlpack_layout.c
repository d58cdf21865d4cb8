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

/* Same layout, distinct types: a DLTensor* becomes an fi_tensor_t* by an
 * explicit cast. Without it (-DUNCAST) C compilers diagnose incompatible
 * pointer types (an error by default since GCC 14). */
int64_t numel_of(const DLTensor* t);
int64_t numel_of(const DLTensor* t) {
#ifdef UNCAST
  return fi_numel(t);
#else
  return fi_numel((const fi_tensor_t*)t);
#endif
}
