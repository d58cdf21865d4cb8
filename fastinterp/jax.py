"""fastinterp's ops for JAX: ``jax.jit``, ``jax.grad`` and ``jax.vmap`` work.

``import fastinterp.jax as fij`` gives the NumPy API's ops with the same names
and arguments, taking and returning JAX arrays: :func:`grid_sample`,
:func:`affine_grid`, :func:`resize` (and :func:`interpolate`),
:func:`adaptive_avg_pool2d`, :func:`pairwise_sqdist`, :func:`pairwise_l2`,
:func:`lerp` and :func:`slerp`. Each is a ``jax.custom_vjp`` whose forward and
backward run fastinterp's CPU kernels through ``jax.pure_callback`` (the
backward is the NumPy API's analytic ``*_backward``), so they work inside
``jax.jit``, under ``jax.grad`` / ``jax.vjp`` (reverse mode; forward mode,
``jax.jvp``, is not defined) and under ``jax.vmap``.

Conventions
-----------
- Arrays are passed as JAX arrays; every other argument (``mode``, ``size``,
  ``align_corners``, ...) is static, a plain Python value (a size may also be
  a NumPy or concrete JAX integer array; a traced one is a TypeError).
- Shapes, dtypes and options are checked when the function is traced, with
  the NumPy API's own error messages, which name the caller's shapes (a call
  of the NumPy op on small arrays: batch 0 for the image ops, every size
  replaced by a small one for the others; repeated on zero-stride arrays of
  the real shapes when it fails; and a check of the batch sizes N of its
  arrays). Whatever the sizes, tracing allocates and computes next to nothing.
- ``rotate``'s angle, scale and center are constants: a traced one is a
  TypeError. A warp matrix known when tracing (NumPy, a concrete JAX array,
  rotate's own) is a constant, checked then and read in its own precision
  (float64 kept without x64); a traced one is differentiable.
- ``jax.vmap``: the image ops (grid_sample, affine_grid, resize,
  adaptive_avg_pool2d) fold the mapped axes into the batch axis N and make
  one call (``vmap_method="broadcast_all"``); lerp broadcasts; slerp, the
  distances and the warps call once per mapped element, in a loop on the host
  (JAX's ``"sequential"`` method compiled a loop again at every eager call),
  reading the unmapped operands in place (``vmap_method="expand_dims"``).
- Results are computed on the host CPU (JAX arrays on a GPU are copied there
  and back by ``pure_callback``). JAX arrays are never written to.
- float16 and bfloat16 follow the NumPy API's half-precision rules;
  gradients come back in each primal's dtype.
"""
from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping, Set
from numbers import Number

import jax
import jax.numpy as jnp
import numpy as np

import fastinterp as _fi
from . import _memory
from ._dispatch import _to_numpy
from ._fpenv import ieee_subnormals
from ._layout import Layout, as_batch, from_channels_last, resolve as resolve_layout
from ._validate import check_not_number, is_real_scalar, real_float
from .blend import two_scalars_error, weight_list
from .sample import _check_size, check_grid_batch, static_fill
from .warp import _check_dsize, _image_layout, _rotate_matrix, _warp_as, matrix_type_error

__all__ = ["grid_sample", "affine_grid", "resize", "interpolate", "adaptive_avg_pool1d",
           "adaptive_avg_pool2d", "adaptive_avg_pool3d", "pairwise_sqdist", "pairwise_l2",
           "lerp", "slerp", "warp_affine", "warp_perspective", "rotate"]


# ------------------------------------------------------------------ plumbing

def _array(op, name, v, scalar_ok=False):
    """``v`` as a JAX array (a nest of traced values included); a string or a nest holding
    non-numbers is the NumPy API's TypeError naming ``op`` and ``name`` (JAX's own names
    neither), and so is a Python number unless ``scalar_ok`` (lerp's operands and the
    weights t)."""
    if not scalar_ok:
        check_not_number(op, name, v)
    number = is_real_scalar(v) and not isinstance(v, np.generic)
    if number or isinstance(v, (complex, np.complexfloating)):
        # the NumPy API's errors for a complex number (JAX would drop its imaginary part)
        # and an int beyond float64; an int beyond JAX's int32 is read as a float, as the
        # NumPy API reads numbers in the operands' float dtype
        wide = real_float(op, name, v, np.float64)
        v = wide if isinstance(v, int) and abs(v) >= 2 ** 31 else v
    if _nested_deeper_than(v, 64):
        # JAX reads nests recursively, and its RecursionError (from within its C++) leaves
        # the thread unable to recurse for a while: NumPy's error, read without recursion
        _to_numpy(v, "numpy", op, name)
    try:
        arr = jnp.asarray(v)
    except (TypeError, ValueError):
        _to_numpy(v, "numpy", op, name)    # its error, where it has one for v
        raise
    if number and math.isfinite(wide) and not _traced(arr) and not np.isfinite(np.asarray(arr)):
        raise ValueError(f"{op}: {name} must be representable in {arr.dtype}; got {v!r}.")
    return arr


def _nested_deeper_than(v, levels: int) -> bool:
    """Whether ``v`` is a nest of lists and tuples more than ``levels`` deep (walked level
    by level, without recursion)."""
    level = [v]
    for _ in range(levels + 1):
        level = [x for item in level if isinstance(item, (list, tuple)) for x in item]
        if not level:
            return False
    return True


def _spec(shape, dtype):
    return jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))


def _frozen(kwargs: dict) -> tuple:
    """``kwargs`` as a key of :func:`_probe`'s cache: (name, value, the value's types)
    triples. The types tell ``True`` from ``1`` and ``7.0`` from ``7`` (equal as keys),
    which the NumPy API's checks tell apart."""
    return tuple(sorted((k, v, _types(v)) for k, v in kwargs.items()))


def _types(v):
    return tuple(map(_types, v)) if type(v) is tuple else type(v)


def _specs(fn, arrays, kwargs, shrink, probe_kwargs=None):
    """The output structs of ``fn`` on ``arrays`` (JAX arrays or structs) and ``kwargs``,
    from :func:`_probe` on small arrays (``probe_kwargs``: the kwargs to probe with, when
    a value differs from call to call). The NumPy op validates the arguments there, so
    errors surface at trace time. A probe that fails is made again on zero-stride dummies
    of the real shapes with the real kwargs, so that the error names the caller's shapes
    (the NumPy API checks before it computes)."""
    shapes = tuple(tuple(a.shape) for a in arrays)
    dtypes = tuple(np.dtype(a.dtype) for a in arrays)
    try:
        outs = _cached(_probe, fn, shapes, dtypes, _frozen(probe_kwargs or kwargs), shrink)
    except (TypeError, ValueError):
        outs = None         # again on the real shapes: the error then names them
    if outs is None:
        outs = _outputs(fn, shapes, dtypes, kwargs)
    return [_spec(s, d) for s, d in zip(*outs)]


@functools.lru_cache(maxsize=512)
def _probe(fn, shapes: tuple, dtypes: tuple, kwargs: tuple, shrink: str):
    """Output (shapes, dtypes) of ``fn`` on arrays of ``shapes``/``dtypes`` (cached),
    from a call on small arrays: ``shrink`` names the :data:`_SHRINKS` rule that makes
    them and maps the outputs' shapes back."""
    kw = {k: v for k, v, _ in kwargs}
    if fn in _MEMORY_CHECKED:     # with the real sizes: the small probe's are not the need
        with _memory.checks_only():
            _outputs(fn, shapes, [_compute_dtype(d) for d in dtypes], kw)
    small, restore = _SHRINKS[shrink](shapes)
    outs, out_dtypes = _outputs(fn, small, dtypes, kw)
    return restore(outs), out_dtypes


# The NumPy ops that refuse a result beyond the machine's memory (_memory.check_fits)
_MEMORY_CHECKED = frozenset((_fi.resize, _fi.adaptive_avg_pool1d, _fi.adaptive_avg_pool2d,
                             _fi.adaptive_avg_pool3d))


def _compute_dtype(dtype):
    """The dtype the NumPy ops compute ``dtype`` in: float32 for half precision (on
    zero-stride dummies, what the op then checks without widening a full-size copy)."""
    return np.dtype(np.float32) if np.dtype(dtype).itemsize == 2 else np.dtype(dtype)


def _batch_zero(shapes):
    """Image ops: the shapes with N (the leading axis) = 0, and the function putting the N
    back. The probe then cannot compare the N of two arguments, which the callers that
    take two (grid_sample, affine_grid) check on the real shapes."""
    if not all(shapes):
        return shapes, lambda outs: outs
    n = shapes[0][0]
    return ([(0,) + s[1:] for s in shapes],
            lambda outs: tuple((n,) + s[1:] for s in outs))


def _relabeled(shapes):
    """Broadcasting ops (distances, lerp, slerp): the shapes with their sizes relabeled,
    0 and 1 kept and the larger sizes replaced by 2, 3, ... in increasing order, and the
    function mapping the labels back. Every relation between sizes that the NumPy checks
    read (equal, 1 broadcasts, 0 is empty, which is larger) holds as for the real shapes,
    and each output size is an input size. Sizes from 2**31 on are kept: the NumPy API
    refuses some of them."""
    big = sorted({d for s in shapes for d in s if 1 < d < 2 ** 31})
    label = {d: i + 2 for i, d in enumerate(big)}
    size = {i: d for d, i in label.items()}
    return ([tuple(label.get(d, d) for d in s) for s in shapes],
            lambda outs: tuple(tuple(size.get(d, d) for d in s) for s in outs))


_SHRINKS = {"batch": _batch_zero, "sizes": _relabeled}


def _outputs(fn, shapes, dtypes, kw):
    """(shapes, dtypes) of ``fn``'s outputs on :func:`_dummy` arrays."""
    outs = fn(*(_dummy(s, dt) for s, dt in zip(shapes, dtypes)), **kw)
    outs = outs if isinstance(outs, tuple) else (outs,)
    return tuple(o.shape for o in outs), tuple(np.dtype(o.dtype) for o in outs)


def _dummy(shape, dtype):
    """A read-only array of zeros of ``shape`` taking no memory (zero strides)."""
    return np.broadcast_to(np.zeros((), dtype), tuple(shape))


# Keyword arguments holding numbers that may change from call to call (a weight, a
# fill, a constant warp matrix: random augmentation). They reach the host as an
# operand, not inside the host function: JAX compiles, and keeps, one executable per
# host function object, so one per value grew memory without bound.
_VALUE_KWARGS = ("M", "fill", "t")


def _packed(values: dict):
    """``values`` (name -> a float, a tuple of floats or a NumPy array) as one uint32
    array holding their bytes (float64 kept without x64), and the hashable layout that
    :func:`_unpacked` reads them back with."""
    parts, layout = [], []
    for name in sorted(values):
        v = values[name]
        if isinstance(v, np.ndarray):
            arr, kind = np.ascontiguousarray(v), ("array", v.shape, v.dtype.str)
        else:
            arr, kind = np.array(v, np.float64).reshape(-1), type(v).__name__
        raw = arr.tobytes()
        parts.append(raw + bytes(-len(raw) % 4))
        layout.append((name, kind, len(raw)))
    return np.frombuffer(b"".join(parts), np.uint32), tuple(layout)


def _unpacked(words, layout) -> dict:
    """The values packed by :func:`_packed` (``words`` may carry mapped axes in front:
    an unmapped operand broadcast by vmap, every row the same)."""
    raw = np.ascontiguousarray(words[(0,) * (words.ndim - 1)]).tobytes()
    values, at = {}, 0
    for name, kind, size in layout:
        chunk, at = raw[at:at + size], at + size + (-size % 4)
        if kind == "float":
            values[name] = float(np.frombuffer(chunk, np.float64)[0])
        elif kind == "tuple":
            values[name] = tuple(np.frombuffer(chunk, np.float64).tolist())
        else:
            _, shape, dtype = kind
            values[name] = np.frombuffer(chunk, dtype).reshape(shape).copy()
    return values


def _numpy_call(fn, kwargs, mapped, specs, layout, *arrays):
    """Host side of a callback: ``fn`` on NumPy views, with subnormal numbers computed
    as the NumPy API computes them. ``mapped`` = (how, ranks): the arguments' unmapped
    ranks, any axes in front of them mapped by vmap, folded into N (``"fold"``) or looped
    over (``"loop"``); () when ``fn`` broadcasts. With a value ``layout``, the last array
    holds the packed values."""
    # XLA runs host callbacks with flush-to-zero set; the NumPy steps here run with it
    # cleared, as the kernels do
    return _host_call(fn, kwargs, mapped, specs, layout, arrays)


@ieee_subnormals
def _host_call(fn, kwargs, mapped, specs, layout, arrays):
    arrays = [np.asarray(a) for a in arrays]
    if layout:
        kwargs = dict(kwargs, **_unpacked(arrays.pop(), layout))
    how, ranks = mapped or (None, ())
    if how == "loop":       # size-1 axes in front of the unmapped operands (expand_dims)
        lead = np.broadcast_shapes(*(a.shape[:a.ndim - r] for a, r in zip(arrays, ranks)))
        if lead:
            return _looped(fn, kwargs, specs, lead, arrays)
    lead = arrays[0].shape[:arrays[0].ndim - ranks[0]] if ranks else ()
    if how == "fold" and lead:   # every argument carries the same mapped axes in front
        arrays = [_folded(a, len(lead)) for a in arrays]
    outs = fn(*arrays, **kwargs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    return tuple(np.asarray(o, dtype=s.dtype).reshape(lead + tuple(s.shape) if how else o.shape)
                 for o, s in zip(outs, specs))


def _folded(a, mapped):
    """``a`` with its ``mapped`` leading axes folded into the axis after them (N). The
    size is spelled out: a -1 is ambiguous for an array of size 0."""
    return a.reshape((math.prod(a.shape[:mapped + 1]),) + a.shape[mapped + 1:])


def _looped(fn, kwargs, specs, lead, arrays):
    """``fn`` once per element of the mapped axes ``lead`` (vmap's sequential method run on
    the host: JAX's own compiled a loop again at every eager call)."""
    outs = [np.empty(lead + tuple(s.shape), s.dtype) for s in specs]
    for index in np.ndindex(*lead):
        # an unmapped operand's size-1 axes: its one element, for every index
        results = fn(*(a[tuple(i if n > 1 else 0 for i, n in zip(index, a.shape))]
                       for a in arrays), **kwargs)
        for out, r in zip(outs, results if isinstance(results, tuple) else (results,)):
            out[index] = r
    return tuple(outs)


def _callback(fn, kwargs, specs, arrays, vmap="fold", backward_of=None):
    """``fn(*arrays, **kwargs)`` on the host; ``specs`` its unbatched output structs.

    ``vmap``: ``"fold"`` (``fn`` is batched along axis 0 of every argument: mapped
    axes are folded into it, one call), ``"broadcast"`` (``fn`` broadcasts: mapped
    axes are just more leading axes) or ``"sequential"`` (one call per element).
    ``backward_of``: the op whose gradient this callback computes; differentiating it
    (a second-order derivative) is then a TypeError naming the op.
    """
    how = {"fold": "fold", "sequential": "loop"}.get(vmap)
    mapped = (how, tuple(a.ndim for a in arrays)) if how else ()
    values = {k: kwargs[k] for k in _VALUE_KWARGS if kwargs.get(k) is not None}
    layout = ()
    if values:
        words, layout = _packed(values)
        arrays = (*arrays, jnp.asarray(words))
        kwargs = {k: v for k, v in kwargs.items() if k not in values}
    host = _cached(_host, fn, _frozen(kwargs), mapped, tuple(specs), layout)
    # a looped op reads each element's operands as views: the unmapped ones come with a
    # size-1 axis instead of broadcast copies (a 20000 x 128 database copied once per query
    # of a vmap: 5.9 GB for 200 queries)
    method = "expand_dims" if how == "loop" else "broadcast_all"
    if backward_of is None:
        return jax.pure_callback(host, tuple(specs), *arrays, vmap_method=method)
    return _cached(_not_differentiable, backward_of, host, tuple(specs), method)(*arrays)


@functools.lru_cache(maxsize=1024)
def _not_differentiable(op, host, specs, method):
    """The callback of ``host`` (a gradient's) as a custom_jvp whose derivative is a clear
    error: JAX's own ("Pure callbacks do not support JVP") names no op. Reached only
    where the callback's inputs depend on the variable (grad of a gradient that is
    constant in it, a linear op's under a sum, stays zero). One object per
    configuration, as :func:`_host`'s."""
    def call(*xs):
        return jax.pure_callback(host, specs, *xs, vmap_method=method)

    checked = jax.custom_jvp(call)

    def jvp(primals, tangents):
        raise TypeError(f"fastinterp.jax.{op}: second-order derivatives (the derivative of "
                        f"its gradient, e.g. jax.grad of jax.grad) are not implemented: its "
                        f"gradient runs a compiled kernel that JAX cannot differentiate.")

    checked.defjvp(jvp)
    return checked


@functools.lru_cache(maxsize=1024)
def _host(fn, kwargs: tuple, mapped: tuple, specs: tuple, layout: tuple):
    """The host function of one callback configuration, one object per configuration:
    JAX compiles a callback per host function object (outside jit every call runs on
    its own), so a new object per call compiled, and kept, a new executable each time
    (14 ms and about 1.4 MiB per eager call). Values that change from call to call
    are not part of it (see _VALUE_KWARGS)."""
    return functools.partial(_numpy_call, fn, {k: v for k, v, _ in kwargs}, mapped, specs,
                             layout)


def _one(fn, kwargs, specs, arrays, vmap="fold"):
    return _callback(fn, kwargs, specs, arrays, vmap)[0]


def _cached(cached_fn, *key):
    """``cached_fn(*key)`` through its cache, or uncached when ``key`` holds an
    unhashable value (an option given as a list, say: the NumPy API's check then
    names it, instead of "unhashable type")."""
    try:
        hash(key)
    except TypeError:
        return cached_fn.__wrapped__(*key)
    return cached_fn(*key)


def _image_specs(fn, arrays, kwargs):
    return _specs(fn, arrays, kwargs, "batch")


# The weight a constant t is probed with: a new t each call probes nothing again.
_PROBE_T = 0.5


def _relabeled_specs(op, fn, arrays, kwargs):
    """The output structs of ``fn`` (lerp, slerp, a distance) on ``arrays``; a constant
    weight ``t`` in ``kwargs`` is probed as :data:`_PROBE_T`, then checked as the NumPy
    API reads it, in the operands' compute dtype (float32 for half operands)."""
    t = kwargs.get("t")
    specs = _specs(fn, arrays, kwargs, "sizes", None if t is None else dict(kwargs, t=_PROBE_T))
    if t is not None:
        real_float(op, "t", t, np.float64 if specs[0].dtype == np.float64 else np.float32)
    return specs


def _cast_like(grads, primals):
    return tuple(None if g is None else jnp.asarray(g, p.dtype) for g, p in zip(grads, primals))


class _Static:
    """A residual known when the function is traced (which gradients a backward computes,
    the shapes of the primals it does not keep): a pytree without leaves, so it reaches
    the backward as it is."""

    def __init__(self, value):
        self.value = value


jax.tree_util.register_pytree_node(_Static, lambda s: ((), s.value), lambda v, _: _Static(v))


def _partial_vjp(op, forward, backward, kw, primals, reads, flags=None, vmap="fold"):
    """``forward(*primals)`` as a custom_vjp whose backward runs ``backward(go, *primals,
    **kw)`` on the host (its results: the primals' gradients, in order) for the gradients
    asked for only.

    ``flags``: ``backward``'s arguments that ask for each primal's gradient (they get
    whether the primal is differentiated; None: ``backward`` computes every gradient).
    ``reads(needs)``: for each primal, whether the backward reads its values when
    ``needs`` says which gradients it computes. The others reach it as host zeros of their
    shape, so that a gradient that does not depend on a primal (a linear op's in its
    input) does not depend on it for JAX either: its derivative there is 0, not an error.
    """
    f = jax.custom_vjp(forward)

    def fwd(*ps):
        needs, values = tuple(p.perturbed for p in ps), tuple(p.value for p in ps)
        kept = tuple(v if r else None for v, r in zip(values, reads(needs)))
        return f(*values), (kept, _Static((needs, [_spec(v.shape, v.dtype) for v in values])))

    def bwd(res, go):
        kept, static = res
        needs, specs = static.value
        if isinstance(go, jax.custom_derivatives.SymbolicZero):
            return (None,) * len(needs)
        back = dict(kw, **dict(zip(flags, needs))) if flags else dict(kw)
        absent = tuple((i, s.shape, s.dtype) for i, (k, s) in enumerate(zip(kept, specs))
                       if k is None)
        if absent:
            back["absent"] = absent
        grads = iter(_callback(_asked(backward, needs), back,
                               [s for s, n in zip(specs, needs) if n],
                               (go, *(k for k in kept if k is not None)), vmap, backward_of=op))
        return _cast_like(tuple(next(grads) if n else None for n in needs), specs)

    f.defvjp(fwd, bwd, symbolic_zeros=True)
    return f(*primals)


@functools.lru_cache(maxsize=None)
def _asked(backward, needs):
    """``backward`` as the host function of :func:`_partial_vjp`'s callback (one object
    per configuration: see _host)."""
    return functools.partial(_asked_host, backward, needs)


def _asked_host(backward, needs, go, *arrays, absent=(), **kw):
    """``backward(go, *arrays, **kw)`` with the ``absent`` (position, shape, dtype) arrays
    put back as zeros of go's N (mapped axes folded in; calloc'd: pages nobody reads are
    never touched), returning the gradients ``needs`` asks for only."""
    arrays = list(arrays)
    for at, shape, dtype in absent:
        arrays.insert(at, np.zeros((go.shape[0],) + tuple(shape[1:]), dtype))
    grads = backward(go, *arrays, **kw)
    return tuple(g for g, n in zip(grads if isinstance(grads, tuple) else (grads,), needs) if n)


# ------------------------------------------------------------------ layouts and options

def _as_batch(op, x, layout, nd_ok=False, name="input"):
    """:func:`fastinterp._layout.as_batch` of the argument ``name``."""
    return as_batch(op, name, x, layout, nd_ok)


@contextlib.contextmanager
def _numpy_errors(call, memory_checked=False):
    """Within the block (a frontend's trace-time checks, its probe included), an error
    becomes the NumPy API's for the caller's own call: ``call()`` makes it on zero-stride
    dummies of the caller's arrays, as given (one image, not its batch of one), and
    raises what the NumPy API raises first for it (it checks before it computes).
    ``memory_checked``: the op has a memory check, where the call stops (computing
    nothing if its arguments pass)."""
    try:
        yield
        return
    except (TypeError, ValueError) as e:
        error = e
    try:
        with _memory.checks_only() if memory_checked else contextlib.nullcontext():
            call()
    except (TypeError, ValueError, MemoryError) as e:
        raise e from None
    raise error


def _dummies(*arrays, compute=False):
    """:func:`_dummy` arrays of the shapes and dtypes of JAX arrays (``compute``: in the
    dtypes the NumPy ops compute them in, see :func:`_compute_dtype`)."""
    return [_dummy(a.shape, _compute_dtype(a.dtype) if compute else a.dtype) for a in arrays]


def _forward_only_vjp(op, what, f, instead="use match='torch' with float data"):
    """``f`` as a custom_vjp whose gradient is a clear error (an option or a dtype without
    one); ``instead`` says what to do for one."""
    g = jax.custom_vjp(f)

    def bwd(res, ct):
        raise TypeError(f"{op}: {what} has no gradient (forward only); {instead} to "
                        f"differentiate.")

    g.defvjp(lambda *xs: (g(*xs), None), bwd)
    return g


_TO_FLOAT = "convert the image to a float dtype"


# ------------------------------------------------------------------ sampling

def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False,
                channels_last=None, fill=None, *, layout=None):
    """:func:`fastinterp.grid_sample` for JAX arrays, differentiable in input and grid.

    Images in any ``layout`` (a single image takes an (H_out, W_out, 2) grid),
    5-D volumes with (N, D_out, H_out, W_out, 3) grids, paddings 'constant'
    (with ``fill``, a constant) and 'wrap', uint8 (forward only) and
    float16/bfloat16 inputs. ``channels_last`` is deprecated: use
    ``layout="NHWC"``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, fastinterp.jax as fij
    >>> x = jnp.arange(4.0).reshape(1, 1, 2, 2)
    >>> g = jnp.zeros((1, 1, 1, 2))
    >>> fij.grid_sample(x, g, align_corners=True)
    Array([[[[1.5]]]], dtype=float32)
    >>> jax.grad(lambda x: fij.grid_sample(x, g, align_corners=True).sum())(x)[0, 0]
    Array([[0.25, 0.25],
           [0.25, 0.25]], dtype=float32)
    """
    op = "grid_sample"
    layout = from_channels_last(op, layout, channels_last)
    input, grid = _weak_to_strong(op, ("input", "grid"), _array(op, "input", input),
                                  _array(op, "grid", grid))
    given = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners,
                 fill=_constant(op, "fill", fill), layout=layout)
    with _numpy_errors(lambda: _fi.grid_sample(*_dummies(input, grid), **given)):
        x_b, name, back_fn = _as_batch(op, input, layout)
        # one image: its grid is (H_out, W_out, 2)
        g_b = grid.reshape((1,) + grid.shape) if input.ndim in (2, 3) else grid
        kw = dict(given, fill=static_fill(op, given["fill"]), layout=name)
        specs = _image_specs(_fi.grid_sample, (x_b, g_b), kw)
        check_grid_batch(op, g_b, x_b.shape[0])    # the probe's arrays all have N = 0
    if x_b.dtype == jnp.uint8:    # forward only: a gradient asked of the grid is an error
        return back_fn(_forward_only_vjp(
            op, "a uint8 image", lambda x, g: _one(_fi.grid_sample, kw, specs, (x, g)),
            _TO_FLOAT)(x_b, g_b))
    return back_fn(_partial_vjp(op, lambda x, g: _one(_fi.grid_sample, kw, specs, (x, g)),
                                _fi.grid_sample_backward, kw, (x_b, g_b), _sampler_reads,
                                ("needs_input_grad", "needs_grid_grad")))


def _sampler_reads(needs):
    """What a sampler's backward (grid_sample's, a warp's) reads: the input's gradient
    needs the grid (or matrix) and the input's shape only; the grid's needs both."""
    return needs[1], True


def _affine_grid_fold(theta, size, align_corners):
    return _fi.affine_grid(theta, (theta.shape[0],) + tuple(size[1:]), align_corners)


def _affine_grid_bwd_fold(grad_grid, size, align_corners):
    return _fi.affine_grid_backward(grad_grid, (grad_grid.shape[0],) + tuple(size[1:]),
                                    align_corners)


def affine_grid(theta, size, align_corners=False):
    """:func:`fastinterp.affine_grid` for JAX arrays (2-D: theta (N, 2, 3), size
    (N, C, H, W); 3-D: theta (N, 3, 4), size (N, C, D, H, W)), differentiable in theta.

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> fij.affine_grid(jnp.array([[[1.0, 0, 0], [0, 1, 0]]]), (1, 1, 2, 3), True)[0, :, :, 0]
    Array([[-1.,  0.,  1.],
           [-1.,  0.,  1.]], dtype=float32)
    """
    theta = _array("affine_grid", "theta", theta)
    size = _check_size("affine_grid", _static("affine_grid", "size", size, int))
    kw = dict(size=size, align_corners=align_corners)
    if theta.shape[:1] != size[:1]:   # the probe's N = 0 cannot see it: the NumPy API's error
        _fi.affine_grid(_dummy(theta.shape, theta.dtype), size, align_corners)
    specs = _image_specs(_affine_grid_fold, (theta,), kw)

    @jax.custom_vjp
    def f(th):
        return _one(_affine_grid_fold, kw, specs, (th,))

    def fwd(th):
        return f(th), th

    def bwd(th, gg):
        return _cast_like(_callback(_affine_grid_bwd_fold, kw, [_spec(th.shape, th.dtype)],
                                    (gg,), backward_of="affine_grid"), (th,))

    f.defvjp(fwd, bwd)
    return f(theta)


# ------------------------------------------------------------------ resize and pooling

def _spatial(shape, layout):
    """The spatial extents of a batch (or of 1-D / volume data when ``layout`` is None)."""
    if layout == "NHWC":
        return tuple(shape[1:3])
    return tuple(shape[2:])


def _static(op, name, v, kinds=(int, float)):
    """A size-like argument as a hashable static value: None, a number or a tuple. NumPy
    and (concrete) JAX scalars and arrays are read as Python values; a traced JAX value
    is a TypeError; a wrong value is left for the NumPy API's error (a float size, say)."""
    if v is None or isinstance(v, kinds):
        return v
    if _traced(v):
        what = "sizes are Python ints" if kinds is int else "scale factors are Python numbers"
        raise TypeError(f"{op}: {name} must be static: {what}, known when the function is "
                        f"traced (they set the result's shape); got a traced array.")
    if isinstance(v, _HOST_ARRAYS):
        v = np.asarray(v).tolist()
    if isinstance(v, (int, float, str, bytes, Set, Mapping)) or not hasattr(v, "__iter__"):
        return v        # (a set or dict has no order for its axes: the NumPy API's error)
    return tuple(np.asarray(x).tolist() if isinstance(x, _HOST_ARRAYS) else x for x in v)


_HOST_ARRAYS = (np.generic, np.ndarray, jax.Array)


def _traced(v) -> bool:
    """Whether ``v``, or an entry of a (nested) tuple or list ``v``, is a traced JAX value."""
    if isinstance(v, (tuple, list)):
        return any(_traced(x) for x in v)
    return isinstance(v, jax.core.Tracer)


def _constant(op, name, v):
    """A number read on the host when the function is traced (rotate's angle, scale and
    centre, which make the matrix): ``v`` itself, or a TypeError for a traced value."""
    if _traced(v):
        raise TypeError(f"{op}: {name} must be static: a Python number (or a concrete array), "
                        f"known when the function is traced (it has no gradient); got a traced "
                        f"array.")
    return v


def _image_op(fn, bwd_fn, input, kw, back, specs=None, forward_only=None):
    """One differentiable call of a resize-like op on a batch ``input`` (``specs``: its
    output structs, when the caller has them)."""
    specs = specs or _image_specs(fn, (input,), kw)

    def f(x):
        return _one(fn, kw, specs, (x,))

    if forward_only:
        return _forward_only_vjp(fn.__name__, forward_only, f)(input)
    f = jax.custom_vjp(f)

    def fwd(x):
        return f(x), x

    def bwd(x, go):
        return _cast_like(_callback(bwd_fn, back, [_spec(x.shape, x.dtype)], (go,),
                                    backward_of=fn.__name__), (x,))

    f.defvjp(fwd, bwd)
    return f(input)


def resize(input, size=None, scale_factor=None, mode="bilinear", align_corners=None,
           antialias=False, *, recompute_scale_factor=None, layout=None, match="torch"):
    """:func:`fastinterp.resize` for JAX arrays, differentiable in input.

    Images in any ``layout``, 1-D (N, C, L) and 3-D (N, C, D, H, W) data,
    mode 'lanczos', uint8 and float16/bfloat16. ``match='opencv'``/``'pil'``
    are forward only (their gradient is a TypeError).

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> x = jnp.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> fij.resize(x, size=(1, 4), mode="bilinear", align_corners=True)[0, 0, 0]
    Array([1.       , 1.3333333, 1.6666667, 2.       ], dtype=float32)
    """
    input = _array("resize", "input", input)
    given = dict(size=_static("resize", "size", size, int),
                 scale_factor=_static("resize", "scale_factor", scale_factor),
                 mode=mode, align_corners=align_corners, antialias=antialias,
                 recompute_scale_factor=recompute_scale_factor, layout=layout, match=match)
    with _numpy_errors(lambda: _fi.resize(*_dummies(input, compute=True), **given), True):
        x_b, name, back_fn = _as_batch("resize", input, layout, nd_ok=True)
        kw = dict(given, layout=name)
        specs = _image_specs(_fi.resize, (x_b,), kw)
    back = dict(input_size=_spatial(x_b.shape, name), scale_factor=kw["scale_factor"],
                mode=mode, align_corners=align_corners, antialias=antialias,
                recompute_scale_factor=recompute_scale_factor, layout=name)
    what = None if match == "torch" else f"match={match!r}"
    return back_fn(_image_op(_fi.resize, _fi.resize_backward, x_b, kw, back, specs, what))


interpolate = resize


def adaptive_avg_pool1d(input, output_size):
    """:func:`fastinterp.adaptive_avg_pool1d` for JAX arrays (N, C, L), differentiable.

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> fij.adaptive_avg_pool1d(jnp.arange(4.0).reshape(1, 1, 4), 2)
    Array([[[0.5, 2.5]]], dtype=float32)
    """
    input = _array("adaptive_avg_pool1d", "input", input)
    if input.ndim == 2:         # one unbatched (C, L), as torch takes it
        return adaptive_avg_pool1d(input[None], output_size)[0]
    kw = dict(output_size=_static("adaptive_avg_pool1d", "output_size", output_size, int))
    back = dict(input_size=_spatial(input.shape, None))
    return _image_op(_fi.adaptive_avg_pool1d, _fi.adaptive_avg_pool1d_backward, input, kw, back)


def adaptive_avg_pool2d(input, output_size, *, layout=None):
    """:func:`fastinterp.adaptive_avg_pool2d` for JAX arrays (any ``layout``), differentiable.

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> fij.adaptive_avg_pool2d(jnp.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    Array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    """
    input = _array("adaptive_avg_pool2d", "input", input)
    given = dict(output_size=_static("adaptive_avg_pool2d", "output_size", output_size, int),
                 layout=layout)
    with _numpy_errors(lambda: _fi.adaptive_avg_pool2d(*_dummies(input, compute=True),
                                                      **given), True):
        x_b, name, back_fn = _as_batch("adaptive_avg_pool2d", input, layout)
        kw = dict(given, layout=name)
        specs = _image_specs(_fi.adaptive_avg_pool2d, (x_b,), kw)
    back = dict(input_size=_spatial(x_b.shape, name), layout=name)
    return back_fn(_image_op(_fi.adaptive_avg_pool2d, _fi.adaptive_avg_pool2d_backward, x_b, kw,
                             back, specs))


def adaptive_avg_pool3d(input, output_size):
    """:func:`fastinterp.adaptive_avg_pool3d` for JAX arrays (N, C, D, H, W), differentiable.

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> fij.adaptive_avg_pool3d(jnp.ones((1, 1, 2, 4, 4)), 1).shape
    (1, 1, 1, 1, 1)
    """
    input = _array("adaptive_avg_pool3d", "input", input)
    if input.ndim == 4:         # one unbatched (C, D, H, W), as torch takes it
        return adaptive_avg_pool3d(input[None], output_size)[0]
    kw = dict(output_size=_static("adaptive_avg_pool3d", "output_size", output_size, int))
    back = dict(input_size=_spatial(input.shape, None))
    return _image_op(_fi.adaptive_avg_pool3d, _fi.adaptive_avg_pool3d_backward, input, kw, back)


# ------------------------------------------------------------------ warps

def _warp_host(op):
    """The NumPy warp ``op`` (float32/float64; rotate is warp_affine under its own name in
    errors) for a host callback; half images run in float32."""
    def host(img, M, **kw):
        if img.dtype.itemsize == 2:
            return _warp_as(op, img.astype(_compute_dtype(img.dtype)), M,
                            **kw).astype(img.dtype)
        return _warp_as(op, img, M, **kw)
    return host


def _warp_bwd_host(op):
    fn = _fi.warp_perspective_backward if op == "warp_perspective" else _fi.warp_affine_backward

    def host(go, img, M, **kw):
        if img.dtype.itemsize == 2:
            go, img = go.astype(np.float32), img.astype(np.float32)
        return fn(go, img, M, **kw)
    return host


def _warp_spec(op, x_b, M, kw):
    """The output struct of a warp of the batch ``x_b`` (its dtype: the image's), after the
    NumPy API's checks, its memory check of the real dsize included, on one zero pixel per
    image (N, C and dsize make the memory need; as cheap for any image size): the call
    stops at the memory check, computing nothing."""
    lay = Layout(kw["layout"])
    n, c, h, w = lay.split(x_b.shape)
    pixels = np.zeros(lay.join(n, c, min(h, 1), min(w, 1)),      # H, W = 0 kept
                      _compute_dtype(x_b.dtype))
    with _memory.checks_only():
        _warp_as(op, pixels, M, **kw)
    return _spec(lay.join(n, c, *kw["dsize"]), x_b.dtype)


def _identity_like(shape, rows):
    """Identity matrices of ``shape`` when it is (rows, 3) or (N, rows, 3), else zeros (the
    NumPy API then names the bad shape)."""
    m = np.zeros(shape)
    if tuple(shape[-2:]) == (rows, 3):
        m[...] = np.eye(rows, 3)
    return m


_WARP_HOSTS = {op: (_warp_host(op), _warp_bwd_host(op))
               for op in ("warp_affine", "warp_perspective", "rotate")}


def _warp(op, rows, img, M, dsize, mode, padding_mode, align_corners, match, inverse_map, fill,
          layout):
    img, traced = _array(op, "img", img), _traced(M)
    if traced:
        M = _array(op, "M", M)
    else:       # a constant: read on the host in its own precision (float64 kept)
        M = np.asarray(M)
    if jnp.issubdtype(M.dtype, jnp.bool_) or jnp.issubdtype(M.dtype, jnp.complexfloating) \
            or M.dtype.kind in "USOMm":         # (strings, objects: not numbers)
        raise matrix_type_error(op, "M", M.dtype)
    if not jnp.issubdtype(M.dtype, jnp.floating) or M.dtype.itemsize == 2:
        M = M.astype(np.float64 if not traced else
                     jnp.float64 if img.dtype == jnp.float64 else jnp.float32)
    # the NumPy API's checks of a constant M (finite, invertible: errors now, not from the
    # compiled call); identity matrices of M's shape for a traced one
    matrix = _identity_like(M.shape, rows) if traced else M
    given = dict(dsize=_static(op, "dsize", dsize, int), mode=mode, padding_mode=padding_mode,
                 align_corners=align_corners, match=match, inverse_map=inverse_map,
                 fill=_constant(op, "fill", fill), layout=layout)
    host, host_bwd = _WARP_HOSTS[op]
    with _numpy_errors(lambda: _warp_as(op, *_dummies(img, compute=True), matrix, **given),
                       True):
        _image_layout(op, img, layout)          # (as_batch passes a volume)
        x_b, name, back_fn = _as_batch(op, img, layout, name="img")
        kw = dict(given, dsize=_check_dsize(op, given["dsize"]),
                  fill=static_fill(op, given["fill"]), layout=name)
        specs = [_warp_spec(op, x_b, matrix, kw)]
    if not traced:
        return back_fn(_warp_constant_matrix(op, host, host_bwd, M, kw, specs, x_b))
    if x_b.dtype == jnp.uint8:    # forward only: a gradient asked of M is an error
        return back_fn(_forward_only_vjp(
            op, "a uint8 image", lambda x, m: _one(host, kw, specs, (x, m), "sequential"),
            _TO_FLOAT)(x_b, M))
    return back_fn(_partial_vjp(op, lambda x, m: _one(host, kw, specs, (x, m), "sequential"),
                                host_bwd, kw, (x_b, M), _sampler_reads,
                                ("needs_input_grad", "needs_matrix_grad"), "sequential"))


def _warp_constant_matrix(op, host, host_bwd, M, kw, specs, x):
    """The warp of ``x`` by a constant host matrix ``M`` (passed as a value: see
    _VALUE_KWARGS), differentiable in ``x``."""
    fwd_host, bwd_host = _CONSTANT_MATRIX_HOSTS[op]
    kw = dict(kw, M=M)
    return _partial_vjp(op, lambda x: _one(fwd_host, kw, specs, (x,), "sequential"), bwd_host,
                        kw, (x,), lambda needs: (False,), vmap="sequential")


def _warp_by(host, img, M, **kw):
    return host(img, M, **kw)


def _warp_grad_by(host_bwd, go, img, M, **kw):
    return host_bwd(go, img, M, needs_matrix_grad=False, **kw)[0]


_CONSTANT_MATRIX_HOSTS = {op: (functools.partial(_warp_by, host),
                               functools.partial(_warp_grad_by, host_bwd))
                          for op, (host, host_bwd) in _WARP_HOSTS.items()}


def warp_affine(img, M, dsize, mode="bilinear", padding_mode="zeros", align_corners=False,
                match="opencv", inverse_map=False, fill=None, *, layout=None):
    """:func:`fastinterp.warp_affine` for JAX arrays, differentiable in img and M.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, fastinterp.jax as fij
    >>> M = jnp.array([[1.0, 0, 0.5], [0, 1, 0]])
    >>> jax.grad(lambda m: fij.warp_affine(jnp.ones((1, 1, 4, 4)), m, (4, 4)).sum())(M).shape
    (2, 3)
    """
    return _warp("warp_affine", 2, img, M, dsize, mode, padding_mode, align_corners, match,
                 inverse_map, fill, layout)


def warp_perspective(img, M, dsize, mode="bilinear", padding_mode="zeros", align_corners=False,
                     match="opencv", inverse_map=False, fill=None, *, layout=None):
    """:func:`fastinterp.warp_perspective` for JAX arrays, differentiable in img and M.

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> fij.warp_perspective(jnp.ones((1, 1, 4, 4)), jnp.eye(3), (4, 4))[0, 0, 1]
    Array([1., 1., 1., 1.], dtype=float32)
    """
    return _warp("warp_perspective", 3, img, M, dsize, mode, padding_mode, align_corners, match,
                 inverse_map, fill, layout)


def rotate(img, angle, center=None, scale=1.0, mode="bilinear", padding_mode="zeros", fill=None,
           *, layout=None):
    """:func:`fastinterp.rotate` for JAX arrays (``angle`` in degrees, a constant),
    differentiable in img.

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> fij.rotate(jnp.arange(9.0).reshape(1, 1, 3, 3), 90)[0, 0].round()
    Array([[2., 5., 8.],
           [1., 4., 7.],
           [0., 3., 6.]], dtype=float32)
    """
    img = _array("rotate", "img", img)
    _, _, H, W = resolve_layout("rotate", "img", img, layout).split(img.shape)
    if center is None:
        center = ((W - 1) / 2.0, (H - 1) / 2.0)
    op = "rotate"
    angle, scale = _constant(op, "angle", angle), _constant(op, "scale", scale)
    M = _rotate_matrix(op, angle, _constant(op, "center", center), scale)
    return _warp(op, 2, img, M, (H, W), mode, padding_mode, False, "opencv", False, fill,
                 layout)


# ------------------------------------------------------------------ distances

def _pairwise(forward, backward, x, y, with_dist):
    op = forward.__name__
    x = _array(op, "x", x)
    arrays = (x,) if y is None else _weak_to_strong(op, ("x", "y"), x, _array(op, "y", y))
    specs = _relabeled_specs(op, forward, arrays, {})

    @jax.custom_vjp
    def f(*xs):
        return _one(forward, {}, specs, xs, "sequential")

    def fwd(*ps):
        xs, needs = tuple(p.value for p in ps), tuple(p.perturbed for p in ps)
        d = f(*xs)
        return d, (xs, d if with_dist else None, _Static(needs))

    def bwd(res, g):
        xs, d, static = res
        needs = static.value
        if isinstance(g, jax.custom_derivatives.SymbolicZero):
            return (None,) * len(xs)
        args = (g, *xs) if d is None or len(xs) == 1 else (g, *xs, d)
        grads = iter(_callback(_distance_host(backward, len(xs), needs), {},
                               [_spec(a.shape, a.dtype) for a, n in zip(xs, needs) if n],
                               args, "sequential", backward_of=op))
        return _cast_like(tuple(next(grads) if n else None for n in needs), xs)

    f.defvjp(fwd, bwd, symbolic_zeros=True)
    return f(*arrays)


@functools.lru_cache(maxsize=None)
def _distance_host(backward, n_operands, needs):
    """The host function of a distance's gradient callback, computing the gradients
    ``needs`` asks for only (one object per configuration: see _host)."""
    return functools.partial(_distance_grads, backward, n_operands, needs)


def _distance_grads(backward, n_operands, needs, g, x, y=None, dist=None):
    """``backward``'s gradients of the operands ``needs`` names (x alone: one gradient,
    both of its roles), asked for with needs_x_grad / needs_y_grad."""
    if n_operands == 1:
        return backward(g, x)[:1]
    kw = {} if dist is None else {"dist": dist}
    grads = backward(g, x, y, needs_x_grad=needs[0], needs_y_grad=needs[1], **kw)
    return tuple(gr for gr, n in zip(grads, needs) if n)


def pairwise_sqdist(x, y=None):
    """:func:`fastinterp.pairwise_sqdist` for JAX arrays, differentiable in x and y.

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> fij.pairwise_sqdist(jnp.array([[0.0, 0.0]]), jnp.array([[3.0, 4.0]]))
    Array([[25.]], dtype=float32)
    """
    return _pairwise(_fi.pairwise_sqdist, _fi.pairwise_sqdist_backward, x, y, False)


def pairwise_l2(x, y=None):
    """:func:`fastinterp.pairwise_l2` for JAX arrays, differentiable in x and y (the
    subgradient 0 at zero distance).

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> fij.pairwise_l2(jnp.array([[0.0, 0.0]]), jnp.array([[3.0, 4.0]]))
    Array([[5.]], dtype=float32)
    """
    return _pairwise(_fi.pairwise_l2, _fi.pairwise_l2_backward, x, y, True)


# ------------------------------------------------------------------ blending

def _widened(v):
    """A float16/bfloat16 array as float32 (the half-precision compute dtype), others
    unchanged."""
    return v.astype(jnp.float32) if v.dtype in (jnp.float16, jnp.bfloat16) else v


def _sum_to(g, shape):
    """Sum ``g`` over the axes broadcasting added or stretched to reach ``shape``."""
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def lerp(a, b, t):
    """:func:`fastinterp.lerp` for JAX arrays, differentiable in a, b and an array t.

    A Python number ``t`` is a constant. Gradients: ``(1 - t) g``, ``t g`` and
    ``(b - a) g``, summed over broadcast axes.

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> fij.lerp(jnp.array([0.0, 10.0]), jnp.array([1.0, 20.0]), 0.25)
    Array([ 0.25, 12.5 ], dtype=float32)
    """
    if isinstance(a, (Number, np.generic)) and isinstance(b, (Number, np.generic)):
        raise two_scalars_error()
    # a NumPy number operand is a number, as the NumPy API reads it (JAX would make it a
    # strongly typed array: np.int64(2) a dtype error, np.float16 the result's dtype)
    a, b = (v.item() if isinstance(v, np.generic) and is_real_scalar(v) else v for v in (a, b))
    const_t = _constant_t("lerp", t)
    arrays = [_array("lerp", "a", a, scalar_ok=True), _array("lerp", "b", b, scalar_ok=True)]
    if const_t is None:
        arrays.append(_weights("lerp", t, arrays))
    half = _number_operand_dtype(a, b, arrays)
    if half is not None and all(x.dtype == half for x in arrays if not x.weak_type):
        # the NumPy API reads a number operand in the float32 it computes half precision
        # in (lerp(1e5, ones_f16, 0.999) is 101): so do the JAX one, jit or not
        arrays = [x.astype(jnp.float32) for x in arrays]
    arrays = list(_weak_to_strong("lerp", ("a", "b", "t"), *arrays))
    out = _lerp_arrays(*arrays, *(() if const_t is None else (const_t,)))
    return out.astype(half) if half is not None and out.dtype != half else out


def _number_operand_dtype(a, b, arrays):
    """For lerp with a Python or NumPy number as ``a`` or ``b``: the number checked as the
    NumPy API checks it, in the dtype it computes in (float32 for half-precision operands;
    a number is never traced, so this holds under jit too, where the cast below would
    otherwise turn it into inf unchecked). Returns the half-precision dtype of the other
    operand, whose lerp then runs in float32, or None."""
    for name, v, other in (("a", a, arrays[1]), ("b", b, arrays[0])):
        if not isinstance(v, (Number, np.generic)) or other.weak_type \
                or not jnp.issubdtype(other.dtype, jnp.floating):
            continue
        half = other.dtype in (jnp.float16, jnp.bfloat16)
        compute = np.float32 if half else np.dtype(other.dtype)
        if is_real_scalar(v):
            real_float("lerp", name, v, compute)
        return other.dtype if half else None
    return None


def _weak_to_strong(op, names, *arrays):
    """JAX's weak types: a real value from a Python scalar (weakly typed; float64 with
    x64) takes the floating dtype of the strongly typed arrays beside it, as in JAX's own
    arithmetic, instead of failing the NumPy API's same-dtype check. A complex one keeps
    its dtype (the NumPy API's TypeError); a finite one beyond that dtype is the NumPy
    API's ValueError (``names``: the arrays' argument names, for the message)."""
    strong = [a for a in arrays if not a.weak_type]
    if not strong or not all(jnp.issubdtype(a.dtype, jnp.floating) for a in strong):
        return arrays
    with jax.numpy_dtype_promotion("standard"):    # the NumPy API's rules, whatever the mode
        dtype = jnp.result_type(*strong)
    return tuple(_weak_cast(op, name, a, dtype)
                 if a.weak_type and not jnp.issubdtype(a.dtype, jnp.complexfloating) else a
                 for name, a in zip(names, arrays))


def _weak_cast(op, name, a, dtype):
    """Weakly typed ``a`` in ``dtype``; a concrete finite value that becomes inf there is
    the NumPy API's ValueError (``t=1e300`` with float32 operands)."""
    if not _traced(a):          # (checked in NumPy: jnp inside a jit would be traced)
        host = np.asarray(a)
        with np.errstate(over="ignore"):
            lost = np.isfinite(host) & ~np.isfinite(host.astype(dtype))
        if lost.any():
            raise ValueError(f"{op}: {name} must be representable in {np.dtype(dtype)}; "
                             f"got {host!r}.")
    return a.astype(dtype)


def _weights(op, t, operands):
    """A weight ``t`` that is not a number, as a JAX array. A list or tuple (not traced) is
    read on the host by the NumPy API's own reader (:func:`fastinterp.blend.weight_list`)
    in the dtype the NumPy API computes in for floating ``operands`` (float32 for
    half-precision ones) whatever jax_enable_x64 says: ints of any size, its errors for
    None, bools, strings and values beyond that dtype. Anything else, or a list beside
    operands that are not floating, as :func:`_array` reads it (the operands' errors
    follow)."""
    strong = [x.dtype for x in operands if not x.weak_type]
    if isinstance(t, (list, tuple)) and strong \
            and all(jnp.issubdtype(d, jnp.floating) for d in strong) \
            and not _nested_deeper_than(t, 64) and not _traced(t):
        dtype = np.float64 if any(d == jnp.float64 for d in strong) else np.float32
        return jnp.asarray(weight_list(op, t, dtype))
    return _array(op, "t", t, scalar_ok=True)


def _constant_t(op, t):
    """A Python or NumPy number ``t`` as a float (a constant weight, passed by value as
    the NumPy API passes numbers), else None (an array). None, bools, strings and
    complex numbers get the NumPy API's TypeError, an int beyond float64 its ValueError."""
    if t is None or isinstance(t, (bool, np.bool_, str, bytes, complex)):
        real_float(op, "t", t, np.float64)
    if isinstance(t, (int, float, np.integer, np.floating)):
        return real_float(op, "t", t, np.float64)
    return None


def _lerp_arrays(a, b, t):
    arrays = (a, b) if isinstance(t, float) else (a, b, t)
    kw = {} if len(arrays) == 3 else {"t": t}
    specs = _relabeled_specs("lerp", _fi.lerp, arrays, kw)    # first: the NumPy API's errors
    shape = jnp.broadcast_shapes(*(x.shape for x in arrays))
    # equal ranks, so that a mapped axis added in front of each broadcasts correctly
    padded = tuple(x.reshape((1,) * (len(shape) - x.ndim) + x.shape) for x in arrays)

    @jax.custom_vjp
    def f(*xs):
        return _one(_fi.lerp, kw, specs, xs, "broadcast")

    def fwd(*xs):
        return f(*xs), xs

    def bwd(xs, g):
        # in float32 for half-precision values, each gradient rounded once to its
        # primal's dtype (the NumPy API's half-precision rule)
        g, a_, b_ = _widened(g), _widened(xs[0]), _widened(xs[1])
        w = _widened(xs[2]) if len(xs) == 3 else t
        grads = [g * (1 - w), g * w]
        if len(xs) == 3:
            grads.append(g * (b_ - a_))
        return tuple(_sum_to(gr, x.shape).astype(x.dtype) for gr, x in zip(grads, xs))

    f.defvjp(fwd, bwd)
    return f(*padded).reshape(shape)


def slerp(a, b, t, axis=-1, *, path=False, shortest_path=False, norm="linear"):
    """:func:`fastinterp.slerp` for JAX arrays, differentiable in a, b and an array t
    (:func:`fastinterp.slerp_backward`). A Python number ``t`` is a constant.

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> fij.slerp(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]), 0.5).round(6)
    Array([0.707107, 0.707107], dtype=float32)
    """
    a, b = _array("slerp", "a", a), _array("slerp", "b", b)
    kw = dict(axis=axis, path=path, shortest_path=shortest_path, norm=norm)
    const_t = _constant_t("slerp", t)
    t_array = () if const_t is not None else (_weights("slerp", t, (a, b)),)
    arrays = _weak_to_strong("slerp", ("a", "b", "t"), a, b, *t_array)
    fkw = dict(kw, t=const_t) if const_t is not None else kw
    specs = _relabeled_specs("slerp", _fi.slerp, arrays, fkw)
    return _partial_vjp("slerp", lambda *xs: _one(_fi.slerp, fkw, specs, xs, "sequential"),
                        _slerp_bwd_host, fkw, arrays, lambda needs: (True,) * len(needs),
                        ("needs_a", "needs_b", "needs_t")[:len(arrays)], "sequential")


def _slerp_bwd_host(g, a, b, t=None, *, needs_a=True, needs_b=True, needs_t=True, **kw):
    """slerp_backward for :func:`_partial_vjp` (a's and b's gradients come together)."""
    ab = needs_a or needs_b
    if t is None:   # a constant t travels in kw; it gets no gradient
        return _fi.slerp_backward(g, a, b, needs_ab_grad=ab, needs_t_grad=False, **kw)[:2]
    return _fi.slerp_backward(g, a, b, t, needs_ab_grad=ab, needs_t_grad=needs_t, **kw)
