"""Shared argument checks. Every public op validates through these.

Messages follow one form: ``"<op>: <arg> must <expectation>; got <given>."``
A check that fails raises before anything is written (into ``out`` or
elsewhere). Exceptions are ``ValueError`` for bad values and shapes and
``TypeError`` for bad types and dtypes.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "float_dtype", "same_dtype", "check_ndim", "check_shape", "check_option",
    "check_out", "as_c_contiguous", "broadcast_shape", "shape_str",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def shape_str(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def float_dtype(op: str, name: str, arr) -> np.dtype:
    """The dtype of ``arr`` if float32/float64, else a ``TypeError``.

    float16 is rejected (cast it to float32 first); integer image data must be
    converted by the caller, who knows its scale.
    """
    dtype = np.dtype(arr.dtype)
    if dtype in FLOAT_DTYPES:
        return dtype
    hint = " (cast float16 to float32 first)" if dtype == np.float16 else ""
    raise TypeError(f"{op}: {name} must have dtype float32 or float64{hint}; got {dtype}.")


def same_dtype(op: str, **arrays) -> np.dtype:
    """Check all named arrays are float32 or all float64; return that dtype."""
    dtypes = {name: float_dtype(op, name, a) for name, a in arrays.items() if a is not None}
    first_name, first = next(iter(dtypes.items()))
    for name, dtype in dtypes.items():
        if dtype != first:
            raise TypeError(f"{op}: {name} must have the same dtype as {first_name} "
                            f"({first}); got {dtype}.")
    return first


def check_ndim(op: str, name: str, arr, ndims: int | Iterable[int], layout: str) -> None:
    """``arr.ndim`` must be one of ``ndims``; ``layout`` names the axes, e.g. ``"(N, C, H, W)"``."""
    allowed = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if len(arr.shape) not in allowed:
        raise ValueError(f"{op}: {name} must have shape {layout}; got {shape_str(arr.shape)}.")


def check_shape(op: str, name: str, arr, expected: Sequence[int | None], layout: str) -> None:
    """``arr.shape`` must equal ``expected`` (``None`` matches any size)."""
    shape = tuple(arr.shape)
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{op}: {name} must have shape {layout} = {want}; got {shape_str(shape)}.")


def check_option(op: str, name: str, value, allowed: Sequence) -> None:
    """``value`` must be one of ``allowed`` (strings are compared exactly)."""
    if value not in allowed:
        raise ValueError(f"{op}: {name} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")


def broadcast_shape(op: str, **arrays) -> tuple[int, ...]:
    """NumPy broadcasting of the named shapes, with a message naming them on failure."""
    shapes = {n: tuple(a.shape) for n, a in arrays.items() if hasattr(a, "shape")}
    try:
        return tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError:
        given = ", ".join(f"{n} {shape_str(s)}" for n, s in shapes.items())
        raise ValueError(f"{op}: shapes must broadcast together; got {given}.") from None


def _extent(arr) -> tuple[int, int] | None:
    if isinstance(arr, np.ndarray):
        lo, hi = np.byte_bounds(arr) if hasattr(np, "byte_bounds") else np.lib.array_utils.byte_bounds(arr)
        return lo, hi
    from fastinterp._cuda._support import device_extent
    return device_extent(arr)


def _overlaps(x, y) -> bool:
    if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
        return np.shares_memory(x, y, max_work=1000) if x.size * y.size else False
    ex, ey = _extent(x), _extent(y)
    return bool(ex and ey and ex[0] < ey[1] and ey[0] < ex[1])


def check_out(op: str, out, shape, dtype, inputs: dict | None = None) -> None:
    """Validate a user's ``out=`` (already converted for the kernel).

    ``out`` must have exactly ``shape`` and ``dtype``, be C-contiguous and
    writable, and share no memory with any of ``inputs`` (a name -> array
    dict), so that a failed or partial computation cannot corrupt an input.
    """
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{op}: out must have shape {shape_str(shape)}; got {shape_str(out.shape)}.")
    if np.dtype(out.dtype) != np.dtype(dtype):
        raise TypeError(f"{op}: out must have dtype {np.dtype(dtype)}; got {np.dtype(out.dtype)}.")
    if not _is_c_contiguous(out):
        raise ValueError(f"{op}: out must be C-contiguous; got strides {tuple(out.strides)}.")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError(f"{op}: out must be writable; got a read-only array.")
    for name, arr in (inputs or {}).items():
        if arr is not None and hasattr(arr, "shape") and _overlaps(out, arr):
            raise ValueError(f"{op}: out must not share memory with {name}; "
                             f"pass a separate output array.")


def _is_c_contiguous(arr) -> bool:
    if isinstance(arr, np.ndarray):
        return arr.flags.c_contiguous
    expected = np.dtype(arr.dtype).itemsize
    for n, s in zip(reversed(arr.shape), reversed(arr.strides)):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def as_c_contiguous(arr):
    """A C-contiguous version of a NumPy array (copied once if it is not already).

    Keeps the rank: unlike ``np.ascontiguousarray``, a 0-d array stays 0-d.
    """
    return np.asarray(arr, order="C")
