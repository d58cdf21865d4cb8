"""Blending: linear interpolation (lerp) and spherical interpolation (slerp)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from . import _memory, _plans, _registry as registry
from ._config import threads_for
from ._dispatch import _to_numpy, array_kind, begin, not_numbers_error, public_call
from ._validate import (as_c_contiguous, broadcast_shape, broadcast_shapes, check_axis,
                        check_bool, check_option, check_out, contiguous_input, full_or_single,
                        real_float, real_scalar, same_dtype, shape_str)
from ._typing import Array, Axis, Flag, NumPyLike, SlerpNorm

__all__ = ["lerp", "slerp", "slerp_backward"]


def coalesce_broadcast(out_shape, *shapes):
    """Merge adjacent axes on which every operand is either full or broadcast (size 1).

    ``shapes`` are the operands' shapes (any rank up to ``len(out_shape)``).
    Returns ``(out_shape', [shape', ...])`` of equal rank (at least 1) with the
    same element order, so each operand can be reshaped without a copy.
    """
    out_shape = tuple(out_shape)
    if all(full_or_single(s, out_shape) for s in shapes):
        # every operand full or a single value (the common case): one axis
        size = math.prod(out_shape)
        return (size,), [(size,) if tuple(s) == out_shape else (1,) for s in shapes]
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


# Elements per extra thread: below this, waking another OpenMP thread costs
# more than it saves (a lerp of 2^18 float32 takes ~0.1 ms on one core).
LERP_MIN_PER_THREAD = 1 << 18
SLERP_MIN_PER_THREAD = 1 << 16


def _lerp_cpu(out, a, b, t):
    """Registry kernel: ``out`` and the operands share one coalesced rank (see lerp)."""
    from ._cpu import blend as cpu_blend
    cpu_blend.lerp_fwd(out.reshape(-1), a.reshape(-1), b.reshape(-1), t.reshape(-1),
                       out.shape, a.shape, b.shape, t.shape,
                       threads_for(out.size, LERP_MIN_PER_THREAD))


registry.register_builtin("lerp", _lerp_cpu, "fastinterp._cuda.blend:lerp")


def two_scalars_error() -> TypeError:
    """lerp's error for two scalar operands (every frontend's)."""
    return TypeError("lerp: a or b must be an array; got two scalars.")


def _is_array(value):
    """An array operand; NumPy scalars, like Python numbers, are weights passed by value."""
    return hasattr(value, "shape") and not isinstance(value, np.generic)


def _as_operand(prepared, name, value, dtype):
    """A lerp operand as the kernels take it: an array as given (:func:`contiguous_input`
    copies a strided CPU one once the result is known not to be empty), a scalar read in
    ``dtype``."""
    if _is_array(value):
        return value
    if prepared.backend == "cuda" and name != "t":
        raise TypeError(f"lerp: {name} must be an array on the CUDA device (a scalar "
                        f"is accepted for t only); got {type(value).__name__}.")
    return real_scalar("lerp", name, value, dtype)  # on CUDA: a host scalar, passed by value


def _is_weight_list(prepared):
    """Whether the call's weight ``t`` was given as a list or tuple (on the CPU)."""
    return isinstance(prepared.originals["t"], (list, tuple)) and prepared.backend == "cpu"


def _read_weight_list(prepared, op, dtype):
    """The call's list or tuple ``t`` read by :func:`weight_list`, stored in ``prepared``."""
    prepared.arrays["t"] = weight_list(op, prepared.originals["t"], dtype)
    return prepared.arrays["t"]


def weight_list(op, t, dtype):
    """A weight ``t`` given as a list or tuple, as an array of the operands' ``dtype``, each
    entry read and checked as a Python number ``t`` is (NumPy's float64 default would be
    refused next to float32 operands). A ragged list is the rectangular-array ValueError;
    an entry that is not a real number (None, a bool, a string) a TypeError, one that
    ``dtype`` cannot hold (1e300 for float32) a ValueError."""
    try:
        _to_numpy(t, "list", op, "t")       # a ragged list: its ValueError
        for v in np.asarray(t, dtype=object).ravel():
            real_float(op, "t", v, dtype)
    except TypeError:
        raise not_numbers_error(op, "t", t) from None
    return np.asarray(t, dtype=dtype)


@overload
def lerp(a: NumPyLike, b: NumPyLike, t: NumPyLike, out: Array | None = None) -> Array: ...
@overload
def lerp(a: Any, b: Any, t: Any, out: Any = None) -> Any: ...
@public_call
def lerp(a: Any, b: Any, t: Any, out: Any = None) -> Any:
    """Linear interpolation ``a + t * (b - a)``, element-wise with NumPy broadcasting.

    Parameters
    ----------
    a, b : array, float32 or float64
        Start and end values; they broadcast against each other and ``t``.
        Both must have the same dtype (like ``torch.lerp``).
    t : float or array
        The weight. A Python/NumPy scalar, an array of the same dtype, or a
        list/tuple of numbers (read in the operands' dtype, as a scalar is).
    out : array, optional
        Destination, C-contiguous, of the broadcast shape and the operands'
        dtype. Returned when given. It may be exactly ``a``, ``b`` or ``t``
        (the same memory, shape and strides: an in-place update such as
        ``lerp(m, g, 0.1, out=m)``, each element is read before it is
        written) but must not partially overlap any of them.

    Returns
    -------
    array of the broadcast shape, the caller's array type (NumPy, CuPy, or the
    DLPack type passed in, e.g. a torch tensor).

    Conventions
    -----------
    Uses PyTorch's two-sided formula, ``a + t*(b - a)`` for ``|t| < 0.5`` and
    ``b - (b - a)*(1 - t)`` otherwise, so the result is exactly ``a`` at
    ``t = 0`` and exactly ``b`` at ``t = 1``; values equal ``torch.lerp``.
    Non-contiguous inputs (CPU or CUDA) are copied once to contiguous memory.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> fi.lerp(np.array([0.0, 10.0]), np.array([1.0, 20.0]), 0.25)
    array([ 0.25, 12.5 ])
    """
    plan_key = _lerp_key(a, b, t, out)               # repeated NumPy calls: see _plans
    plan = _plans.lookup(plan_key)
    if plan is not None:
        result = plan(a, b, t, out)
        if result is not None:
            return result
    p = begin("lerp", a=a, b=b, t=t)
    arrays = {n: v for n, v in p.arrays.items() if _is_array(v)}
    if not any(n in arrays for n in ("a", "b")):
        raise two_scalars_error()
    t_list = _is_weight_list(p)
    if t_list:
        del arrays["t"]
    dtype = same_dtype("lerp", p.storage, **arrays)
    if t_list:
        _read_weight_list(p, "lerp", dtype)
    a_, b_, t_ = (_as_operand(p, n, p.arrays[n], dtype) for n in ("a", "b", "t"))
    shape = broadcast_shape("lerp", a=a_, b=b_, t=t_)
    if out is not None:
        out_caller, out_k = p.adopt_out(out, alias_ok=True)
        check_out("lerp", out_k, shape, dtype, {"a": a_, "b": b_, "t": t_}, alias_ok=True)
    else:
        out_caller, out_k = p.empty(shape, dtype)
    if out_k.size == 0:
        return p.wrap(out_caller)
    if p.backend == "cpu":
        a_, b_, t_ = (contiguous_input(v) if _is_array(v) else v for v in (a_, b_, t_))
    cshape, (sa, sb, st) = coalesce_broadcast(shape, a_.shape, b_.shape, t_.shape)
    if plan_key is not None and p.storage is None and a_ is a and b_ is b \
            and (t_ is t or not _is_array(t)):
        _plans.store(plan_key, _lerp_plan(dtype, shape, cshape, sa, sb, st))
    kernel = registry.lookup("lerp", p.backend, dtype)
    if p.backend == "cuda":
        # A scalar t stays a host scalar, passed to the kernel by value.
        # Strided device arrays are copied once: a device array reshapes only when contiguous.
        a_, b_ = p.contiguous(a_), p.contiguous(b_)
        t_k = t_[()] if isinstance(t_, np.ndarray) else p.contiguous(t_).reshape(st)
        kernel(out_k.reshape(cshape), a_.reshape(sa), b_.reshape(sb), t_k, stream=p.stream)
    else:
        kernel(out_k.reshape(cshape), a_.reshape(sa), b_.reshape(sb), t_.reshape(st))
    return p.wrap(out_caller)


def _lerp_key(a, b, t, out):
    """The plan signature of a lerp call (a scalar t by its type only: its value is an
    argument of the plan), or None."""
    if type(t) is np.ndarray:
        return _plans.key("lerp", (a, b, t, out), ())
    if type(t) in (float, int):
        return _plans.key("lerp", (a, b, None, out), (type(t).__name__,))
    return None


def _lerp_plan(dtype, shape, cshape, sa, sb, st):
    """A stored plan: ``plan(a, b, t, out)`` runs lerp on C-contiguous NumPy arrays of
    this call's signature, as :func:`lerp` does on the CPU; it returns None (the full
    path decides) when ``out`` shares memory with an operand other than being it."""
    def plan(a, b, t, out):
        t_is_array = type(t) is np.ndarray
        if out is not None:
            for v in (a, b, t if t_is_array else None):
                if v is not None and v is not out and np.may_share_memory(out, v):
                    return None
            res = out
        else:
            res = _memory.empty(shape, dtype)
        t_ = t if t_is_array else real_scalar("lerp", "t", t, dtype)
        kernel = registry.lookup("lerp", "cpu", dtype)
        kernel(res.reshape(cshape), a.reshape(sa), b.reshape(sb), t_.reshape(st))
        return res
    return plan


def _slerp_cpu(out, a, b, t, t_row_stride, steps, shortest_path, linear_norm):
    """Registry kernel: out (rows * steps, D), a and b (rows, D), t flat (see slerp)."""
    from ._cpu import blend as cpu_blend
    cpu_blend.slerp_fwd(out, a, b, t, t_row_stride, steps, shortest_path, linear_norm,
                        threads_for(out.size, SLERP_MIN_PER_THREAD))


registry.register_builtin("slerp", _slerp_cpu, "fastinterp._cuda.blend:slerp")

SLERP_NORMS = ("linear", "formula")


def _slerp_weights(p, t, dtype, batch, path, op="slerp", depth=1):
    """t as a flat array for the kernel: ``(t_flat, t_row_stride, steps)``.

    Plain form: one weight per batch row (t broadcast to ``batch``). Path
    form: ``t.shape[:-1]`` broadcasts to ``batch`` and ``t.shape[-1]`` is the
    number of steps. A weight shared by every row gets row stride 0 (no copy).
    With no element to compute (``depth``, the vectors' length, or a count of 0),
    ``t_flat`` is empty (t is checked, not copied).
    """
    if not _is_array(t):
        t = real_scalar(op, "t", t, dtype)
    if path and len(t.shape) == 0:
        raise ValueError(f"{op}: t must have shape (..., T) in the path form "
                         "(path=True); got a scalar.")
    tshape = tuple(t.shape)
    lead = tshape[:-1] if path else tshape
    steps = int(tshape[-1]) if path else 1
    try:
        fits = broadcast_shapes((lead, batch)) == tuple(batch)
    except ValueError:
        fits = False
    if not fits and path:
        want = "(" + "".join(f"{n}, " for n in batch) + "T)"
        raise ValueError(f"{op}: t must have shape {want} in the path form (its leading axes "
                         f"may broadcast); got {shape_str(t.shape)}.")
    if not fits:
        raise ValueError(f"{op}: t must broadcast to the batch shape {shape_str(batch)}; "
                         f"got {shape_str(t.shape)}.")
    rows = math.prod(batch)
    shared = math.prod(lead) == 1
    if rows * steps * depth == 0:
        return np.empty(0, dtype), 0, steps
    if p.backend == "cuda":
        if not shared and tuple(lead) != tuple(batch):
            raise ValueError(f"{op}: on CUDA, t must be shared by all rows or have the full "
                             f"batch shape {shape_str(batch)} before its step axis; got "
                             f"{shape_str(t.shape)}.")
        return p.contiguous(t).reshape(-1), 0 if shared else steps, steps
    if shared:
        return np.ascontiguousarray(t, dtype=dtype).reshape(-1), 0, steps
    full = np.broadcast_to(t, tuple(batch) + ((steps,) if path else ()))
    return np.ascontiguousarray(full, dtype=dtype).reshape(-1), steps, steps



@dataclass
class _SlerpCall:
    """A validated slerp call: the operands' dtype and layout (see _slerp_setup)."""

    dtype: Any
    ax: int           # the vector axis, non-negative
    last: bool        # the vector axis is the last one
    depth: int        # D
    batch: tuple      # a's shape without the vector axis
    t_flat: Any       # the weights as the kernel reads them
    t_row_stride: int
    steps: int
    shape: tuple      # the forward's output shape


def _slerp_setup(op, a, b, t, axis, path, shortest_path, norm, **extra):
    """Validate a slerp-like call: ``(Prepared, _SlerpCall)`` (t converted in place).

    ``extra`` arrays (the backward's ``grad_out``) go through ``begin`` first.
    """
    check_bool(op, "path", path)
    check_bool(op, "shortest_path", shortest_path)
    check_option(op, "norm", norm, SLERP_NORMS)
    p = begin(op, **extra, a=a, b=b, t=t)
    a_, b_, t_ = p.arrays["a"], p.arrays["b"], p.arrays["t"]
    for name in ("a", "b", *extra):
        if array_kind(p.originals[name]) is None:
            raise TypeError(f"{op}: {name} must be an array; got {type(p.originals[name]).__name__}.")
    if _is_weight_list(p):
        t_ = _read_weight_list(p, op, a_.dtype)
    dtype = same_dtype(op, p.storage, a=a_, b=b_, t=t_ if _is_array(t_) else None)
    if tuple(b_.shape) != tuple(a_.shape):
        raise ValueError(f"{op}: b must have the same shape as a {shape_str(a_.shape)}; "
                         f"got {shape_str(b_.shape)}.")
    ndim = len(a_.shape)
    ax = slerp_axis(op, ndim, axis)
    last = ax == ndim - 1
    if not last and p.backend == "cuda":
        raise ValueError(f"{op}: on CUDA the vectors must lie along the last axis; got "
                         f"axis={axis} for shape {shape_str(a_.shape)}.")
    depth = int(a_.shape[ax])
    batch = tuple(a_.shape[:ax]) + tuple(a_.shape[ax + 1:])
    t_flat, t_row_stride, steps = _slerp_weights(p, t_, dtype, batch, path, op, depth)
    shape = tuple(a_.shape) if not path else tuple(a_.shape[:ax]) + (steps,) + tuple(a_.shape[ax:])
    return p, _SlerpCall(dtype, ax, last, depth, batch, t_flat, t_row_stride, steps, shape)


def slerp_axis(op, ndim, axis):
    """The axis of the vectors of ``ndim``-D arrays, ``axis`` read as an index in
    [0, ndim), or the ValueError for 0-D arrays or an axis out of range."""
    if ndim == 0:
        raise ValueError(f"{op}: a must have at least one axis (the vectors); got shape ().")
    return check_axis(op, axis, ndim)


@overload
def slerp(a: NumPyLike, b: NumPyLike, t: NumPyLike, axis: Axis = -1, *, path: Flag = False,
          shortest_path: Flag = False, norm: SlerpNorm = "linear",
          out: Array | None = None) -> Array: ...
@overload
def slerp(a: Any, b: Any, t: Any, axis: Axis = -1, *, path: Flag = False,
          shortest_path: Flag = False, norm: SlerpNorm = "linear", out: Any = None) -> Any: ...
@public_call
def slerp(a: Any, b: Any, t: Any, axis: Axis = -1, *, path: Flag = False,
          shortest_path: Flag = False, norm: SlerpNorm = "linear", out: Any = None) -> Any:
    """Spherical linear interpolation of vectors along ``axis``, batched.

    Parameters
    ----------
    a, b : array, float32 or float64, shape (..., D)
        Start and end vectors along ``axis`` (the last axis by default); the
        other axes are the batch. ``a`` and ``b`` have the same shape and dtype.
    t : float or array of the same dtype
        Plain form (``path=False``): one weight per vector pair; ``t``
        broadcasts to the batch shape (a scalar applies to every row).
        Path form (``path=True``): ``t`` has shape ``(..., T)``; its last axis
        holds T weights per pair and its leading axes broadcast to the batch
        shape, so ``t`` of shape (T,) gives every pair the same T steps and
        ``t`` of shape (B, T) gives each pair its own.
    axis : int
        The vector axis of ``a``, ``b`` and the output. A non-last axis costs
        one copy of the inputs (CPU only; on CUDA the vectors must be last).
    path : bool
        Select the path form (above). The rule is explicit, never guessed
        from ``t``'s shape.
    shortest_path : bool
        Quaternion convention: where ``a . b < 0``, interpolate towards
        ``-b`` instead of ``b`` (``q`` and ``-q`` are the same rotation), so
        the result at ``t = 1`` is ``-b`` for those rows.
    norm : {"linear", "formula"}
        ``"linear"`` (default): the direction moves along the great circle
        from ``a/|a|`` to ``b/|b|`` at constant angular speed and the norm is
        interpolated linearly, ``(1-t)|a| + t|b|``. ``"formula"``: the
        textbook ``sin((1-t)θ)/sin θ · a + sin(tθ)/sin θ · b`` applied to the
        raw vectors. Both agree for vectors of equal norm.
    out : array, optional
        Destination of the output shape and dtype, C-contiguous. In the
        plain form it may be exactly ``a`` or ``b`` (same memory, shape and
        strides: each row is read whole before it is written); otherwise it
        must not overlap an input.

    Returns
    -------
    array, the caller's array type. Plain form: ``a``'s shape. Path form:
    ``a``'s shape with the T axis inserted just before the vector axis, e.g.
    (B, T, D) for ``a`` (B, D).

    Conventions
    -----------
    θ is the angle between ``a`` and ``b``, computed as ``2 atan(h)`` with
    ``h = tan(θ/2) = |u - v| / |u + v|`` for the unit directions ``u, v``
    when ``|cos θ| > 0.7`` (full precision as θ → 0 and θ → π), else
    ``h = sqrt((1 - cos θ) / (1 + cos θ))``.
    The result is exactly ``a`` at ``t = 0`` and exactly ``b`` at ``t = 1``.
    Degenerate cases, all without NaN:

    * parallel (θ = 0, or θ < 1e-100): the sine ratios take their limits
      ``1 - t`` and ``t``, i.e. a lerp of directions; the result is
      continuous as θ → 0. ``[1,0,0] → [0.5,0,0]`` at ``t = 0.5`` gives
      ``[0.75,0,0]``.
    * a or b is the zero vector: ``(1 - t) a + t b`` (lerp).
    * antipodal (``|u + v| <= 1e-8``): the path turns from ``u`` towards
      ``p = (e_k - u_k u)/sqrt(1 - u_k^2)``, where ``k`` is the first axis
      with the smallest ``|a_k|``: direction ``cos(πt) u + sin(πt) p``,
      norm linear. ``[1,0,0] → [-1,0,0]`` at ``t = 0.5`` gives
      ``[0,1,0]``. With D = 1 there is no perpendicular: lerp.
    * ``t`` outside [0, 1] extrapolates along the same great circle.

    Reductions run in float64 for both dtypes, in a fixed order: results are
    bit-identical for any thread count and calling thread. Every finite
    magnitude works, from subnormals to the largest finite values: a row pair
    whose squared norms would underflow or overflow float64 is rescaled by a
    power of two (exact) for the geometry and the blend, so
    ``slerp(2**k a, 2**k b, t) == 2**k slerp(a, b, t)`` up to rounding. Only
    a result whose exact value exceeds the dtype's range is ±inf. float32
    rows are blended in float64 where the weights are large (``|b| / |a|``
    beyond float32's range, or θ near π), so neither overflows nor cancels.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> a = np.array([1.0, 0.0, 0.0]); b = np.array([0.0, 1.0, 0.0])
    >>> np.round(fi.slerp(a, b, 0.5), 6)
    array([0.707107, 0.707107, 0.      ])
    >>> fi.slerp(a, np.array([-1.0, 0.0, 0.0]), 0.5)
    array([0., 1., 0.])
    >>> fi.slerp(a[None], b[None], np.array([0.0, 1.0]), path=True).shape
    (1, 2, 3)
    """
    p, c = _slerp_setup("slerp", a, b, t, axis, path, shortest_path, norm)
    a_, b_, t_ = p.arrays["a"], p.arrays["b"], p.arrays["t"]
    dtype, ax, last, depth, batch = c.dtype, c.ax, c.last, c.depth, c.batch
    t_flat, t_row_stride, steps, shape = c.t_flat, c.t_row_stride, c.steps, c.shape
    if out is not None:
        alias_ok = () if path else ("a", "b")     # (a path's out has another shape)
        out_caller, out_k = p.adopt_out(out, alias_ok)
        check_out("slerp", out_k, shape, dtype, {"a": a_, "b": b_, "t": t_}, alias_ok=alias_ok)
    else:
        out_caller, out_k = p.empty(shape, dtype)
    rows = math.prod(batch)
    if rows * depth * steps == 0:
        return p.wrap(out_caller)
    kernel = registry.lookup("slerp", p.backend, dtype)
    flags = (bool(shortest_path), norm == "linear")
    if p.backend == "cuda":
        a2, b2 = (p.contiguous(x).reshape((rows, depth)) for x in (a_, b_))
        kernel(out_k.reshape((rows * steps, depth)), a2, b2, t_flat, t_row_stride, steps,
               *flags, stream=p.stream)
        return p.wrap(out_caller)
    if last:
        a2, b2 = (as_c_contiguous(x).reshape(rows, depth) for x in (a_, b_))
        kernel(out_k.reshape(rows * steps, depth), a2, b2, t_flat, t_row_stride, steps, *flags)
        return p.wrap(out_caller)
    a2, b2 = (np.ascontiguousarray(np.moveaxis(x, ax, -1)).reshape(rows, depth) for x in (a_, b_))
    res = _memory.empty((rows * steps, depth), dtype)
    kernel(res, a2, b2, t_flat, t_row_stride, steps, *flags)
    res = res.reshape(batch + ((steps,) if path else ()) + (depth,))
    src, dst = ((-2, -1), (ax, ax + 1)) if path else (-1, ax)
    np.copyto(out_k, np.moveaxis(res, src, dst))
    return p.wrap(out_caller)


SLERP_BWD_MIN_PER_THREAD = 1 << 14


def _slerp_bwd_cpu(grad_a, grad_b, grad_t, grad_out, a, b, t, t_row_stride, steps,
                   shortest_path, linear_norm, need_ab=True):
    """Registry kernel: grad_out (rows * steps, D), a, b, grads (rows, D; (0, D) and not
    written without ``need_ab``), grad_t flat float64."""
    from ._cpu import blend as cpu_blend
    cpu_blend.slerp_bwd(grad_out, a, b, t, t_row_stride, steps, shortest_path, linear_norm,
                        grad_a, grad_b, grad_t, threads_for(grad_out.size, SLERP_BWD_MIN_PER_THREAD),
                        need_ab)


registry.register_builtin("slerp_backward", _slerp_bwd_cpu)


def _sum_to(x, shape):
    """Sum ``x`` over the axes that broadcasting added or stretched to reach ``x.shape``."""
    lead = x.ndim - len(shape)
    x = x.sum(axis=tuple(range(lead))) if lead else x
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(axis=stretched, keepdims=True) if stretched else x


@overload
def slerp_backward(grad_out: NumPyLike, a: NumPyLike, b: NumPyLike, t: NumPyLike,
                   axis: Axis = -1, *, path: Flag = False, shortest_path: Flag = False,
                   norm: SlerpNorm = "linear", needs_ab_grad: Literal[True] = True,
                   needs_t_grad: Literal[True] = True) -> tuple[Array, Array, Array]: ...
@overload
def slerp_backward(grad_out: NumPyLike, a: NumPyLike, b: NumPyLike, t: NumPyLike,
                   axis: Axis = -1, *, path: Flag = False, shortest_path: Flag = False,
                   norm: SlerpNorm = "linear", needs_ab_grad: Flag = True,
                   needs_t_grad: Flag = True
                   ) -> tuple[Array | None, Array | None, Array | None]: ...
@overload
def slerp_backward(grad_out: Any, a: Any, b: Any, t: Any, axis: Axis = -1, *,
                   path: Flag = False, shortest_path: Flag = False, norm: SlerpNorm = "linear",
                   needs_ab_grad: Flag = True, needs_t_grad: Flag = True
                   ) -> tuple[Any, Any, Any]: ...
@public_call
def slerp_backward(grad_out: Any, a: Any, b: Any, t: Any, axis: Axis = -1, *,
                   path: Flag = False, shortest_path: Flag = False, norm: SlerpNorm = "linear",
                   needs_ab_grad: Flag = True, needs_t_grad: Flag = True) -> Any:
    """Gradients of ``sum(grad_out * slerp(a, b, t, axis, ...))`` with respect to a, b and t.

    Parameters
    ----------
    grad_out : array, the forward's output shape and a's dtype
        Gradient of the loss with respect to slerp's output.
    a, b, t, axis, path, shortest_path, norm
        As passed to :func:`slerp`.
    needs_ab_grad, needs_t_grad : bool
        Which gradients to compute (default both): without ``needs_ab_grad``
        ``grad_a`` and ``grad_b`` are None and the backward only forms the two
        dot products per weight that ``grad_t`` needs; without ``needs_t_grad``
        ``grad_t`` is None.

    Returns
    -------
    (grad_a, grad_b, grad_t) : arrays of the shapes of a, b and t and a's
    dtype, the caller's array type (None for a gradient not asked for).
    ``grad_t`` is summed over the axes on which ``t`` was broadcast (a scalar
    ``t`` gives a 0-d array), as autograd does.

    Conventions
    -----------
    Each row's gradients are those of the branch the forward takes on that
    row (see :func:`slerp`), so they are finite wherever the forward's
    result and ``grad_out`` are:

    * regular rows: the exact derivative, including the θ dependence
      through ``u = a/|a|`` and ``v = b/|b|``; the θ term is computed without
      cancellation as θ → 0 (its limit is 0).
    * parallel rows below the forward's angle threshold (θ < 1e-100): the
      derivative of the forward's limit ``(1-t) u + t v`` direction (no θ
      term), the limit of the regular derivative.
    * a or b zero, or D = 1 antipodal: the derivative of the lerp
      ``(1-t) a + t b``.
    * antipodal rows: the derivative of the perpendicular construction
      (with ``k`` held fixed), ``b`` entering only through ``|b|``.
    * ``t`` exactly 0 or 1: the forward returns ``a`` or ``b`` itself, so
      ``grad_a = grad_out`` (or ``grad_b = ±grad_out``) and the other is 0;
      ``grad_t`` is the derivative of the row's formula there.
    * ``shortest_path``: the sign flip is piecewise constant, so where
      ``a . b < 0`` the gradient is that of ``slerp(a, -b)`` mapped back to b.
    * Where rows sit exactly on a branch boundary (the antipodal tolerance
      ``|u + v| = 1e-8``, ``a . b = 0`` with ``shortest_path``), the
      gradient of the branch the forward selects is used (a one-sided
      derivative).

    Extreme magnitudes are handled like the forward (power-of-two scaling):
    only a gradient whose exact value exceeds the dtype's range is ±inf.
    Accumulation runs in float64 for both dtypes; results are bit-identical
    for any thread count. CPU only for now.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> a = np.array([1.0, 0.0]); b = np.array([0.0, 1.0])
    >>> ga, gb, gt = fi.slerp_backward(np.array([0.0, 1.0]), a, b, 0.5)
    >>> round(float(gt), 6)  # d/dt of sin(tπ/2): π/2 cos(π/4)
    1.110721
    >>> ga.shape, gb.shape, gt.shape
    ((2,), (2,), ())
    """
    op = "slerp_backward"
    need_ab = check_bool(op, "needs_ab_grad", needs_ab_grad)
    need_t = check_bool(op, "needs_t_grad", needs_t_grad)
    p, c = _slerp_setup(op, a, b, t, axis, path, shortest_path, norm, grad_out=grad_out)
    g_, a_, b_, t_ = (p.arrays[n] for n in ("grad_out", "a", "b", "t"))
    same_dtype(op, p.storage, grad_out=g_, a=a_)
    if tuple(g_.shape) != c.shape:
        raise ValueError(f"{op}: grad_out must have the forward's output shape "
                         f"{shape_str(c.shape)}; got {shape_str(g_.shape)}.")
    if not (need_ab or need_t):
        return None, None, None
    kernel = registry.lookup(op, p.backend, c.dtype)
    rows, depth, steps = math.prod(c.batch), c.depth, c.steps
    ga_caller = gb_caller = ga = gb = None
    empty = rows * depth * steps == 0     # no gradient flows: zeros
    if need_ab:
        alloc = p.zeros if empty else p.empty
        ga_caller, ga = alloc(a_.shape, c.dtype, like="a")
        gb_caller, gb = alloc(b_.shape, c.dtype, like="b")
    gt = np.zeros(rows * steps, np.float64)
    if not empty:
        _slerp_bwd_run(kernel, c, path, g_, a_, b_, ga, gb, gt,
                       (bool(shortest_path), norm == "linear"), need_ab)
    grads = [None, None, None]
    if need_ab:
        grads[:2] = p.wrap(ga_caller, like="a"), p.wrap(gb_caller, like="b")
    if need_t:
        tshape = tuple(t_.shape) if hasattr(t_, "shape") else ()
        gt_full = gt.reshape(c.batch + ((steps,) if path else ()))
        grads[2] = p.wrap(np.asarray(_sum_to(gt_full, tshape).reshape(tshape), dtype=c.dtype),
                          like="t")
    return tuple(grads)


def _slerp_bwd_run(kernel, c, path, g_, a_, b_, ga, gb, gt, flags, need_ab):
    """Run the backward kernel on (rows, D) views, moving the vector axis last if needed
    (ga, gb: None without ``need_ab``)."""
    rows, depth, steps = math.prod(c.batch), c.depth, c.steps
    skipped = np.empty((0, depth), c.dtype)       # grad_a, grad_b not asked for
    if c.last:
        g2, a2, b2 = (as_c_contiguous(x) for x in (g_, a_, b_))
        ga2, gb2 = ((ga.reshape(rows, depth), gb.reshape(rows, depth)) if need_ab
                    else (skipped, skipped))
        kernel(ga2, gb2, gt, g2.reshape(rows * steps, depth), a2.reshape(rows, depth),
               b2.reshape(rows, depth), c.t_flat, c.t_row_stride, steps, *flags, need_ab)
        return
    ax = c.ax
    src, dst = ((ax, ax + 1), (-2, -1)) if path else (ax, -1)
    g2 = np.ascontiguousarray(np.moveaxis(g_, src, dst)).reshape(rows * steps, depth)
    a2, b2 = (np.ascontiguousarray(np.moveaxis(x, ax, -1)).reshape(rows, depth) for x in (a_, b_))
    ga2, gb2 = ((_memory.empty((rows, depth), c.dtype), _memory.empty((rows, depth), c.dtype))
                if need_ab else (skipped, skipped))
    kernel(ga2, gb2, gt, g2, a2, b2, c.t_flat, c.t_row_stride, steps, *flags, need_ab)
    if need_ab:
        for dst_arr, res in ((ga, ga2), (gb, gb2)):
            np.copyto(dst_arr, np.moveaxis(res.reshape(c.batch + (depth,)), -1, ax))
