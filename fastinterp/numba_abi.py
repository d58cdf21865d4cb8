"""numba views of the plugin ABI, for kernels written as ``@cfunc``.

``signature`` is the C kernel signature of ``fastinterp/plugin.h`` for
``numba.cfunc``; the helpers below are ``@njit`` functions usable inside
such a kernel. Struct layouts come from the compiled header (offsets read
from ``fastinterp._cpu.abi``), not from a copy. Importing this module imports
numba; ``import fastinterp`` never does.

Example
-------
>>> import numpy as np
>>> from numba import cfunc
>>> from fastinterp import numba_abi as nb
>>> @cfunc(nb.signature)
... def scale(inputs, n_in, outputs, n_out, params, err, err_size):
...     if n_in != 1:
...         return nb.error(err, err_size, 1, "scale: expects one input")
...     x, y = nb.flat(inputs, 0, np.float32), nb.flat(outputs, 0, np.float32)
...     alpha = nb.float_param(params, 0)
...     for i in range(x.size):
...         y[i] = alpha * x[i]
...     return 0
"""
from __future__ import annotations

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

from ._cpu import abi as _abi

__all__ = ["signature", "TENSOR", "PARAMS", "tensor", "shape", "flat", "numel",
           "float_param", "int_param", "nthreads", "input_readonly", "error"]

#: ``int32(inputs, n_inputs, outputs, n_outputs, params, errbuf, errbuf_size)``.
signature = types.int32(types.voidptr, types.int32, types.voidptr, types.int32,
                        types.voidptr, types.voidptr, types.uintp)


def _record(offsets: dict, formats: dict, itemsize: int) -> np.dtype:
    names = list(offsets)
    return np.dtype({"names": names, "formats": [formats[n] for n in names],
                     "offsets": [offsets[n] for n in names], "itemsize": itemsize})


#: NumPy record dtypes laid out like fi_tensor_t and fi_params_t.
TENSOR = _record(_abi.TENSOR_OFFSETS, {
    "data": np.uintp, "device_type": np.int32, "device_id": np.int32, "ndim": np.int32,
    "dtype_code": np.uint8, "dtype_bits": np.uint8, "dtype_lanes": np.uint16,
    "shape": np.uintp, "strides": np.uintp, "byte_offset": np.uint64}, _abi.SIZES["tensor"])
PARAMS = _record(_abi.PARAMS_OFFSETS, {
    "struct_size": np.uint32, "nthreads": np.int32, "n_floats": np.int32, "n_ints": np.int32,
    "floats": np.uintp, "ints": np.uintp, "stream": np.uintp, "readonly_inputs": np.uint64},
    _abi.SIZES["params"])
_READONLY_END = _abi.PARAMS_OFFSETS["readonly_inputs"] + 8


@intrinsic
def _as_pointer(typingctx, address, dtype):
    """Reinterpret an integer address as a pointer to ``dtype`` elements."""
    target = dtype.dtype if isinstance(dtype, types.NumberClass) else dtype
    ptr = types.CPointer(target)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr))
    return ptr(address, dtype), codegen


@njit(inline="always")
def tensor(tensors, i):
    """The ``i``-th fi_tensor_t of ``tensors`` (inputs or outputs) as a record."""
    return carray(tensors, (i + 1,), dtype=TENSOR)[i]


@njit(inline="always")
def shape(tensors, i):
    """The shape of tensor ``i`` as an int64 array (a view, not a copy)."""
    t = tensor(tensors, i)
    return carray(_as_pointer(t.shape, np.int64), (t.ndim,))


@njit(inline="always")
def numel(tensors, i):
    n = 1
    for s in shape(tensors, i):
        n *= s
    return n


@njit(inline="always")
def flat(tensors, i, dtype):
    """Tensor ``i`` as a 1-D array of ``dtype`` over all its elements.

    fastinterp passes new ops C-contiguous arrays, so this is the whole tensor
    in row-major order.
    """
    t = tensor(tensors, i)
    return carray(_as_pointer(t.data + t.byte_offset, dtype), (numel(tensors, i),))


@njit(inline="always")
def float_param(params, i):
    p = carray(params, (1,), dtype=PARAMS)[0]
    return carray(_as_pointer(p.floats, np.float64), (p.n_floats,))[i]


@njit(inline="always")
def int_param(params, i):
    p = carray(params, (1,), dtype=PARAMS)[0]
    return carray(_as_pointer(p.ints, np.int64), (p.n_ints,))[i]


@njit(inline="always")
def nthreads(params):
    return carray(params, (1,), dtype=PARAMS)[0].nthreads


@njit(inline="always")
def input_readonly(params, i):
    """1 if the caller marked input ``i`` read-only, 0 if writable, -1 if it cannot
    say (``fi_input_readonly`` of plugin.h). Never write an input either way."""
    p = carray(params, (1,), dtype=PARAMS)[0]
    if p.struct_size < _READONLY_END or i < 0 or i >= 64:
        return -1
    return np.int64((p.readonly_inputs >> np.uint64(i)) & np.uint64(1))


@njit
def error(errbuf, errbuf_size, status, message):
    """Copy ``message`` (ASCII) into the error buffer and return ``status``."""
    if errbuf_size > 0:
        buf = carray(errbuf, (errbuf_size,), dtype=np.uint8)
        n = min(len(message), errbuf_size - 1)
        for j in range(n):
            buf[j] = ord(message[j])
        buf[n] = 0
    return status
