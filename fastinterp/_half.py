"""Half-precision storage: float16 and bfloat16 arrays computed in float32.

The dispatcher (``_dispatch.begin``) widens an op's float16/bfloat16 inputs
to float32 once, the float32 kernels run (accumulating in float32 or
wider), and each result is rounded once, to nearest even, back to its
storage dtype. The conversions run in compiled loops (kernels/cpu/convert.pyx):
F16C instructions where the CPU has them, bit operations otherwise.
bfloat16 arrays are ``ml_dtypes.bfloat16`` on NumPy; this module reads their
bits and never imports ml_dtypes itself.
"""
from __future__ import annotations

import numpy as np

from ._config import threads_for

__all__ = ["HALF_NAMES", "is_half", "widen", "narrow", "narrow_into"]

HALF_NAMES = ("float16", "bfloat16")
COMPUTE = np.dtype(np.float32)
_MIN_PER_THREAD = 1 << 18


def is_half(dtype) -> bool:
    """True for float16 and bfloat16 (any object with ``dtype``-like attributes)."""
    return getattr(dtype, "itemsize", 0) == 2 and str(dtype) in HALF_NAMES


def _bfloat(dtype) -> bool:
    return str(dtype) == "bfloat16"


def _dense_flat(arr: np.ndarray):
    """A 1-D view of every element of ``arr`` in memory order, or None if it has gaps."""
    if arr.flags.c_contiguous:
        return arr.reshape(-1)
    if arr.flags.f_contiguous:
        return arr.T.reshape(-1)
    flat = arr.ravel(order="K")
    return flat if np.shares_memory(flat, arr, max_work=0) else None


def widen(arr: np.ndarray) -> np.ndarray:
    """A new C-contiguous float32 array with the values of the half array ``arr`` (exact)."""
    from ._cpu import convert
    src = np.ascontiguousarray(arr)  # a strided view is compacted first (2 bytes per element)
    out = np.empty(src.shape, COMPUTE)
    n = src.size
    convert.widen(src.view(np.uint16).reshape(-1), out.reshape(-1), _bfloat(arr.dtype),
                  threads_for(n, _MIN_PER_THREAD))
    return out


def narrow(arr: np.ndarray, dtype) -> np.ndarray:
    """``arr`` (float32) rounded to ``dtype`` (float16/bfloat16), in a new array of its layout."""
    out = np.empty_like(arr, dtype=dtype)  # same memory order (channels-last stays so)
    src, dst = _dense_flat(arr), _dense_flat(out)
    if src is None or dst is None or src.strides != (arr.itemsize,):
        out[...] = arr                      # gaps (not produced by the ops): NumPy's cast
        return out
    _narrow_flat(src, dst, dtype)
    return out


def narrow_into(dst: np.ndarray, src: np.ndarray) -> None:
    """Round the float32 ``src`` into the C-contiguous half array ``dst`` of its shape."""
    _narrow_flat(np.ascontiguousarray(src).reshape(-1), dst.reshape(-1), dst.dtype)


def _narrow_flat(src, dst, dtype):
    from ._cpu import convert
    convert.narrow(src, dst.view(np.uint16), _bfloat(dtype), threads_for(src.size, _MIN_PER_THREAD))
