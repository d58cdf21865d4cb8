"""Glue between caller arrays (CuPy, torch, numba) and numba.cuda kernels.

Launch arithmetic lives here and in each family's wrapper, never inside a
kernel. Works under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``),
whose arrays have no ``__cuda_array_interface__``.

Rules every wrapper follows (a real device enforces them, the simulator
does not; tests/conftest.py makes the simulator enforce them too):

- Contiguity: kernels get C-contiguous arrays. A non-contiguous input is
  copied once (:func:`contiguous`, on the caller's stream); a device array
  is reshaped only when it is contiguous (:func:`flat`), since numba's
  ``DeviceNDArray.reshape`` cannot copy.
- Launches are 1-D: at most ``MAX_GRID_X`` blocks on x, none on y or z;
  kernels that may see more blocks than that are grid-stride loops.
- Streams: every copy and launch goes on the caller's stream; cached device
  data is guarded by an event (:class:`DeviceCache`); nothing synchronises
  except :func:`read_to_host`, for a value the host must see.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

THREADS_1D = 256
THREADS_2D = (16, 16)
MAX_GRID_X = 2**31 - 1     # CUDA's limit on gridDim.x (y and z: 65,535; unused here)
MAX_BLOCKS = 1 << 16       # blocks of one grid-stride launch


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
    """Blocks of a one-thread-per-element 1-D launch over ``n`` elements."""
    blocks = max(1, math.ceil(n / threads))
    if blocks > MAX_GRID_X:
        raise ValueError(f"fastinterp (CUDA): {n} elements need {blocks} blocks of {threads} "
                         f"threads, more than CUDA's gridDim.x limit ({MAX_GRID_X}).")
    return blocks


def blocks_strided(n: int, threads: int = THREADS_1D) -> int:
    """Blocks of a grid-stride launch over ``n`` elements (at most ``MAX_BLOCKS``)."""
    return min(max(1, math.ceil(n / threads)), MAX_BLOCKS)


def as_stream(stream):
    """A numba stream object for ``stream`` (0 or None: the default stream)."""
    return cuda.default_stream() if stream is None or isinstance(stream, int) else stream


def is_c_contiguous(arr) -> bool:
    """True when a device array's strides are those of a C-contiguous array (an
    empty array always is, as in NumPy and numba): the front's own rule."""
    from fastinterp._validate import _is_c_contiguous
    return _is_c_contiguous(arr)


def flat(arr):
    """A 1-D view of a C-contiguous device array (never a copy)."""
    if not is_c_contiguous(arr):
        raise ValueError(f"fastinterp (CUDA): a kernel needs a C-contiguous array; got "
                         f"shape {tuple(arr.shape)} with strides {tuple(arr.strides)}.")
    return arr if len(arr.shape) == 1 else arr.reshape(math.prod(arr.shape))


_GATHER: dict[int, object] = {}


def _gather_kernel(ndim: int):
    """``dst[i] = src[unravel(i)]`` for a 1-D dst and an ``ndim``-D strided src
    (grid-stride). Generated per rank: numba kernels index with fixed arity."""
    kernel = _GATHER.get(ndim)
    if kernel is None:
        lines = ["def gather(dst, src):",
                 "    for i in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):",
                 "        r = i"]
        for k in range(ndim - 1, 0, -1):
            lines += [f"        i{k} = r % src.shape[{k}]", f"        r //= src.shape[{k}]"]
        lines += ["        i0 = r",
                  f"        dst[i] = src[{', '.join(f'i{k}' for k in range(ndim))}]"]
        scope = {"cuda": cuda}
        exec("\n".join(lines), scope)   # noqa: S102 - fixed template, rank only
        kernel = _GATHER[ndim] = cuda.jit(scope["gather"])
    return kernel


def contiguous(arr, stream=0):
    """``arr`` if it is C-contiguous, else a C-contiguous device copy made on ``stream``."""
    if is_c_contiguous(arr):
        return arr
    n = math.prod(arr.shape)
    dst = cuda.device_array(n, np.dtype(arr.dtype), stream=stream)
    if n:
        _gather_kernel(len(arr.shape))[blocks_strided(n), THREADS_1D, stream](dst, arr)
    return dst.reshape(tuple(arr.shape))


@cuda.jit
def _fill_zero_kernel(dst):
    for i in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
        dst[i] = 0


def fill_zero(arr, stream=0):
    """Set every element of a C-contiguous device array to zero, on ``stream``."""
    n = math.prod(arr.shape)
    if n:
        _fill_zero_kernel[blocks_strided(n), THREADS_1D, stream](flat(arr))
    return arr


def to_device(host, stream=0):
    """A device copy of the host array ``host``, made on ``stream``."""
    return cuda.to_device(np.ascontiguousarray(host), stream=stream)


def read_to_host(arr, stream=0):
    """``arr`` copied to a new host array once ``stream``'s work before it is done.

    The one place a call synchronises (with ``stream`` only): use it only for a
    value the host must see.
    """
    host = arr.copy_to_host(stream=stream)
    as_stream(stream).synchronize()
    return host


class DeviceCache:
    """Device copies of immutable host data, per key object and device.

    An upload is made on the first caller's stream and an event recorded after
    it; a later caller, on any stream, makes its stream wait for that event
    before using the arrays (a no-op once the upload has finished).
    """

    def __init__(self):
        import weakref
        self._entries: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def get(self, key, make_host_arrays, stream=0):
        """The cached device arrays for ``key`` (``make_host_arrays()`` uploads on a miss)."""
        device = getattr(cuda.get_current_device(), "id", 0)   # the simulator has no id
        per_device = self._entries.setdefault(key, {})
        entry = per_device.get(device)
        if entry is None:
            arrays = tuple(to_device(h, stream) for h in make_host_arrays())
            ready = cuda.event() if is_simulator() else cuda.event(timing=False)
            ready.record(stream=stream)
            per_device[device] = arrays, ready
            return arrays
        arrays, ready = entry
        ready.wait(stream=stream)
        return arrays


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
