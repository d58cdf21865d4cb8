"""Blending: linear interpolation (lerp) and spherical interpolation (slerp)."""
from __future__ import annotations

import numpy as np

from . import _registry as registry
from ._config import threads_for
from ._dispatch import begin
from ._validate import as_c_contiguous, broadcast_shape, check_out, same_dtype

__all__ = ["lerp"]


def coalesce_broadcast(out_shape, *shapes):
    """Merge adjacent axes on which every operand is either full or broadcast (size 1).

    ``shapes`` are the operands' shapes (any rank up to ``len(out_shape)``).
    Returns ``(out_shape', [shape', ...])`` of equal rank (at least 1) with the
    same element order, so each operand can be reshaped without a copy.
    """
    nd = len(out_shape)
    padded = [(1,) * (nd - len(s)) + tuple(s) for s in shapes]
    axes = [i for i in range(nd) if out_shape[i] != 1]
    merged_out: list[int] = []
    merged: list[list[int]] = [[] for _ in shapes]
    prev_pattern = None
    for i in axes:
        pattern = tuple(p[i] != 1 for p in padded)
        if pattern == prev_pattern:
            merged_out[-1] *= out_shape[i]
            for m, p in zip(merged, padded):
                m[-1] *= p[i]
        else:
            merged_out.append(out_shape[i])
            for m, p in zip(merged, padded):
                m.append(p[i])
        prev_pattern = pattern
    if not merged_out:
        return (1,), [(1,) for _ in shapes]
    return tuple(merged_out), [tuple(m) for m in merged]


def _element_strides(arr, shape):
    """Strides in elements of C-contiguous ``arr`` viewed as ``shape``, 0 on size-1 axes."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step if n != 1 else 0)
        step *= n
    return np.array(strides[::-1], dtype=np.intp)


def _lerp_cpu(out, a, b, t):
    """Registry kernel: ``out`` and the operands share one coalesced rank (see lerp)."""
    from ._cpu import blend as cpu_blend
    shape = np.array(out.shape, dtype=np.intp)
    cpu_blend.lerp_fwd(out.reshape(-1), a.ctypes.data, b.ctypes.data, t.ctypes.data,
                       shape, _element_strides(a, a.shape), _element_strides(b, b.shape),
                       _element_strides(t, t.shape), threads_for(out.size))


for _dt in ("float32", "float64"):
    registry.register("lerp", "cpu", _dt, _lerp_cpu)
    registry.register("lerp", "cuda", _dt, "fastinterp._cuda.blend:lerp")


def _as_operand(prepared, name, value, dtype):
    if hasattr(value, "shape"):
        return value if prepared.backend == "cuda" else as_c_contiguous(value)
    if prepared.backend == "cuda":
        if name != "t":
            raise TypeError(f"lerp: {name} must be an array on the CUDA device (a scalar "
                            f"is accepted for t only); got {type(value).__name__}.")
        return np.asarray(value, dtype=dtype)  # a 0-d host scalar, passed by value
    return np.asarray(value, dtype=dtype)


def lerp(a, b, t, out=None):
    """Linear interpolation ``a + t * (b - a)``, element-wise with NumPy broadcasting.

    Parameters
    ----------
    a, b : array, float32 or float64
        Start and end values; they broadcast against each other and ``t``.
        Both must have the same dtype (like ``torch.lerp``).
    t : float or array
        The weight. A Python/NumPy scalar, or an array of the same dtype.
    out : array, optional
        Destination, C-contiguous, of the broadcast shape and the operands'
        dtype; it must not overlap an input. Returned when given.

    Returns
    -------
    array of the broadcast shape, the caller's array type (NumPy, CuPy, or the
    DLPack type passed in, e.g. a torch tensor).

    Conventions
    -----------
    Uses PyTorch's two-sided formula, ``a + t*(b - a)`` for ``|t| < 0.5`` and
    ``b - (b - a)*(1 - t)`` otherwise, so the result is exactly ``a`` at
    ``t = 0`` and exactly ``b`` at ``t = 1``; values equal ``torch.lerp``.
    Non-contiguous CPU inputs are copied once to contiguous memory.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> fi.lerp(np.array([0.0, 10.0]), np.array([1.0, 20.0]), 0.25)
    array([ 0.25, 12.5 ])
    """
    p = begin("lerp", a=a, b=b, t=t)
    arrays = {n: v for n, v in p.arrays.items() if hasattr(v, "shape")}
    if not any(n in arrays for n in ("a", "b")):
        raise TypeError("lerp: a or b must be an array; got two scalars.")
    dtype = same_dtype("lerp", **arrays)
    a_, b_, t_ = (_as_operand(p, n, p.arrays[n], dtype) for n in ("a", "b", "t"))
    shape = broadcast_shape("lerp", a=a_, b=b_, t=t_)
    if out is not None:
        out_caller, out_k = p.adopt_out(out)
        check_out("lerp", out_k, shape, dtype, {"a": a_, "b": b_, "t": t_})
    else:
        out_caller, out_k = p.empty(shape, dtype)
    if out_k.size == 0:
        return p.wrap(out_caller)
    cshape, (sa, sb, st) = coalesce_broadcast(shape, a_.shape, b_.shape, t_.shape)
    kernel = registry.lookup("lerp", p.backend, dtype)
    if p.backend == "cuda":
        # A scalar t stays a host scalar, passed to the kernel by value.
        t_k = t_[()] if isinstance(t_, np.ndarray) else t_.reshape(st)
        kernel(out_k.reshape(cshape), a_.reshape(sa), b_.reshape(sb), t_k, stream=p.stream)
    else:
        kernel(out_k.reshape(cshape), a_.reshape(sa), b_.reshape(sb), t_.reshape(st))
    return p.wrap(out_caller)
