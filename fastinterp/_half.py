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

import threading

import numpy as np

from ._config import threads_for

__all__ = ["HALF_NAMES", "is_half", "widen", "narrow", "narrow_into", "work_array"]

HALF_NAMES = ("float16", "bfloat16")
COMPUTE = np.dtype(np.float32)
_MIN_PER_THREAD = 1 << 18


def is_half(dtype) -> bool:
    """True for float16 and bfloat16 (any object with ``dtype``-like attributes)."""
    return getattr(dtype, "itemsize", 0) == 2 and str(dtype) in HALF_NAMES


def _bfloat(dtype) -> bool:
    return str(dtype) == "bfloat16"


def _dense_flat(arr: np.ndarray):
    """A 1-D unit-stride view of every element of ``arr`` in memory order, or None."""
    if arr.flags.c_contiguous:
        return arr.reshape(-1)
    if arr.flags.f_contiguous:
        return arr.T.reshape(-1)
    flat = arr.ravel(order="K")
    dense = np.may_share_memory(flat, arr) and flat.strides == (arr.itemsize,)
    return flat if dense else None  # a copy shares nothing


def _flat_pair(src: np.ndarray, dst: np.ndarray):
    """1-D views of ``src`` and ``dst`` (same shape, the same strides in elements, no gaps)
    that visit the same elements in the same order; None if there are none."""
    for n, a, b in zip(src.shape, src.strides, dst.strides):
        if n > 1 and a * dst.itemsize != b * src.itemsize:
            return None
    fs, fd = _dense_flat(src), _dense_flat(dst)
    return None if fs is None or fd is None else (fs, fd)


# Work buffers (widened inputs, float32 results before rounding), reused per calling
# thread: a fresh 32 MB float32 array costs as much to map and zero as the conversion. A buffer goes back
# to its thread's pool when the last view of the array built on it is gone, so a
# buffer is never shared by two live arrays. At most _POOL_BYTES stay pooled.
_POOL_BYTES = 256 << 20
_MIN_POOLED = 1 << 20
_pools = threading.local()


class _Lease:
    """Owner of a pooled buffer lent to one array (NumPy keeps it as the array's base)."""

    __slots__ = ("__array_interface__", "_store", "_pool")

    def __init__(self, store, shape, pool):
        self._store, self._pool = store, pool
        self.__array_interface__ = {"version": 3, "shape": shape, "typestr": COMPUTE.str,
                                    "data": (store.ctypes.data, False), "strides": None}

    def __del__(self):
        pool = self._pool
        if sum(b.nbytes for b in pool) + self._store.nbytes <= _POOL_BYTES:
            pool.append(self._store)


def work_array(shape) -> np.ndarray:
    """A C-contiguous float32 array of ``shape``: pooled when large, else new."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * COMPUTE.itemsize
    if nbytes < _MIN_POOLED:
        return np.empty(shape, COMPUTE)
    pool = getattr(_pools, "free", None)
    if pool is None:
        pool = _pools.free = []
    fits = [i for i, b in enumerate(pool) if nbytes <= b.nbytes <= 2 * nbytes]
    if fits:
        store = pool.pop(min(fits, key=lambda i: pool[i].nbytes))
    else:
        store = np.empty(nbytes, np.uint8)
    return np.asarray(_Lease(store, tuple(shape), pool))


def widen(arr: np.ndarray) -> np.ndarray:
    """A new float32 array with the values of the half array ``arr`` (exact), in ``arr``'s
    memory order when ``arr`` has no gaps (channels-last stays so), else C order."""
    from ._cpu import convert
    if arr.flags.c_contiguous:
        out = work_array(arr.shape)
        pair = arr.reshape(-1), out.reshape(-1)
    else:
        out = np.empty_like(arr, dtype=COMPUTE)
        pair = _flat_pair(arr, out)
    if pair is None:    # a view with gaps is compacted first (2 bytes per element)
        out = work_array(arr.shape)
        pair = np.ascontiguousarray(arr).reshape(-1), out.reshape(-1)
    src, dst = pair
    convert.widen(src.view(np.uint16), dst, _bfloat(arr.dtype),
                  threads_for(src.size, _MIN_PER_THREAD))
    return out


def narrow(arr: np.ndarray, dtype) -> np.ndarray:
    """``arr`` (float32) rounded to ``dtype`` (float16/bfloat16), in a new array of its layout."""
    out = np.empty_like(arr, dtype=dtype)
    pair = _flat_pair(arr, out)
    if pair is None:        # gaps (the ops never return such results): NumPy's own cast
        out[...] = arr
    else:
        _narrow_flat(pair[0], pair[1], dtype)
    return out


def narrow_into(dst: np.ndarray, src: np.ndarray) -> None:
    """Round the float32 ``src`` into the C-contiguous half array ``dst`` of its shape."""
    _narrow_flat(np.ascontiguousarray(src).reshape(-1), dst.reshape(-1), dst.dtype)


def _narrow_flat(src, dst, dtype):
    from ._cpu import convert
    convert.narrow(src, dst.view(np.uint16), _bfloat(dtype), threads_for(src.size, _MIN_PER_THREAD))
