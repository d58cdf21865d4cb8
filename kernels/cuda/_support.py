"""Glue between caller arrays (CuPy, torch, numba) and numba.cuda kernels.

Launch arithmetic lives here and in each family's wrapper, never inside a
kernel. Works under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``),
whose arrays have no ``__cuda_array_interface__``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

THREADS_1D = 256
THREADS_2D = (16, 16)


def is_simulator() -> bool:
    """True when numba runs CUDA kernels in its CPU simulator."""
    from numba import config
    return bool(config.ENABLE_CUDASIM)


def _root(obj) -> str:
    return type(obj).__module__.split(".")[0]


def as_device(obj):
    """A numba device-array view of ``obj`` (zero-copy)."""
    if type(obj).__module__.startswith("numba.cuda"):
        return obj
    return cuda.as_cuda_array(obj)


def empty_like_caller(template, shape, dtype):
    """A new, uninitialised device array of the caller's type (CuPy, torch or numba)."""
    root = _root(template)
    if root == "cupy":
        import cupy
        with template.device:
            return cupy.empty(shape, dtype)
    if root == "torch":
        import torch
        return torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name), device=template.device)
    return cuda.device_array(shape, dtype)


def stream_for(template):
    """The caller's current stream as a numba stream (CuPy/torch), else the default."""
    root = _root(template)
    if root == "cupy":
        import cupy
        return cuda.external_stream(cupy.cuda.get_current_stream().ptr)
    if root == "torch":
        import torch
        return cuda.external_stream(torch.cuda.current_stream(template.device).cuda_stream)
    return cuda.default_stream()


def blocks_1d(n: int, threads: int = THREADS_1D) -> int:
    return max(1, math.ceil(n / threads))


def blocks_2d(rows: int, cols: int, threads=THREADS_2D) -> tuple[int, int]:
    return (max(1, math.ceil(rows / threads[0])), max(1, math.ceil(cols / threads[1])))


def device_pointer(arr) -> int | None:
    """The address of a device array's first element (its ``data`` pointer), if knowable."""
    try:
        return int(arr.__cuda_array_interface__["data"][0])
    except Exception:
        host = getattr(arr, "_ary", None)  # simulator arrays wrap a NumPy array
        return None if host is None else int(host.__array_interface__["data"][0])


def device_extent(arr) -> tuple[int, int] | None:
    """``(first_byte, last_byte_exclusive)`` of a device array's memory, if knowable."""
    ptr = device_pointer(arr)
    if ptr is None:
        return None
    shape, strides = arr.shape, arr.strides
    itemsize = np.dtype(arr.dtype).itemsize
    lo = ptr + sum(min(0, (n - 1) * s) for n, s in zip(shape, strides) if n)
    hi = ptr + sum(max(0, (n - 1) * s) for n, s in zip(shape, strides) if n) + itemsize
    return lo, hi
