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
  ``align_corners``, ...) is static, a plain Python value.
- Shapes, dtypes and options are checked when the function is traced, with
  the NumPy API's own error messages (a zero-batch call of the NumPy op).
- ``jax.vmap``: the image ops (grid_sample, affine_grid, resize,
  adaptive_avg_pool2d) fold the mapped axes into the batch axis N and make
  one call (``vmap_method="broadcast_all"``); lerp broadcasts; slerp and the
  distances call once per mapped element (``"sequential"``).
- Results are computed on the host CPU (JAX arrays on a GPU are copied there
  and back by ``pure_callback``). JAX arrays are never written to.
- float16 and bfloat16 follow the NumPy API's half-precision rules;
  gradients come back in each primal's dtype.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import fastinterp as _fi

__all__ = ["grid_sample", "affine_grid", "resize", "interpolate", "adaptive_avg_pool2d",
           "pairwise_sqdist", "pairwise_l2", "lerp", "slerp"]


# ------------------------------------------------------------------ plumbing

def _spec(shape, dtype):
    return jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))


def _frozen(kwargs: dict) -> tuple:
    return tuple(sorted(kwargs.items()))


@functools.lru_cache(maxsize=512)
def _probe(fn, shapes: tuple, dtypes: tuple, kwargs: tuple, batch_zero: bool):
    """Output (shapes, dtypes) of ``fn`` on arrays of ``shapes``/``dtypes`` (cached).

    ``batch_zero``: call on arrays whose leading axis (N) is 0 (image ops, cheap),
    then put N back; else on zero-stride dummies of the full shapes. Either way
    the NumPy op validates the arguments, so errors surface at trace time.
    """
    n = shapes[0][0] if batch_zero else None
    dummies = [np.broadcast_to(np.zeros((), dt), ((0,) + s[1:]) if batch_zero else s)
               for s, dt in zip(shapes, dtypes)]
    outs = fn(*dummies, **dict(kwargs))
    outs = outs if isinstance(outs, tuple) else (outs,)
    res = tuple(((n,) + o.shape[1:]) if batch_zero else o.shape for o in outs)
    return res, tuple(np.dtype(o.dtype) for o in outs)


def _numpy_call(fn, kwargs, fold, specs, *arrays):
    """Host side of a callback: ``fn`` on NumPy views, mapped axes folded into N if ``fold``."""
    arrays = [np.asarray(a) for a in arrays]
    lead = ()
    if fold:    # every argument carries the same mapped axes in front of its own
        lead = arrays[0].shape[:arrays[0].ndim - fold[0]]
        arrays = [a.reshape((-1,) + a.shape[len(lead) + 1:]) if lead else a for a in arrays]
    outs = fn(*arrays, **kwargs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    return tuple(np.asarray(o, dtype=s.dtype).reshape(lead + tuple(s.shape) if fold else o.shape)
                 for o, s in zip(outs, specs))


def _callback(fn, kwargs, specs, arrays, vmap="fold"):
    """``fn(*arrays, **kwargs)`` on the host; ``specs`` its unbatched output structs.

    ``vmap``: ``"fold"`` (``fn`` is batched along axis 0 of every argument: mapped
    axes are folded into it, one call), ``"broadcast"`` (``fn`` broadcasts: mapped
    axes are just more leading axes) or ``"sequential"`` (one call per element).
    """
    fold = tuple(a.ndim for a in arrays) if vmap == "fold" else ()
    host = functools.partial(_numpy_call, fn, kwargs, fold, specs)
    method = "sequential" if vmap == "sequential" else "broadcast_all"
    return jax.pure_callback(host, tuple(specs), *arrays, vmap_method=method)


def _one(fn, kwargs, specs, arrays, vmap="fold"):
    return _callback(fn, kwargs, specs, arrays, vmap)[0]


def _image_specs(fn, arrays, kwargs):
    shapes, dtypes = _probe(fn, tuple(tuple(a.shape) for a in arrays),
                            tuple(np.dtype(a.dtype) for a in arrays), _frozen(kwargs), True)
    return [_spec(s, d) for s, d in zip(shapes, dtypes)]


def _full_specs(fn, arrays, kwargs):
    shapes, dtypes = _probe(fn, tuple(tuple(a.shape) for a in arrays),
                            tuple(np.dtype(a.dtype) for a in arrays), _frozen(kwargs), False)
    return [_spec(s, d) for s, d in zip(shapes, dtypes)]


def _cast_like(grads, primals):
    return tuple(None if g is None else jnp.asarray(g, p.dtype) for g, p in zip(grads, primals))


# ------------------------------------------------------------------ sampling

def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False,
                channels_last=False):
    """:func:`fastinterp.grid_sample` for JAX arrays, differentiable in input and grid.

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
    kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners,
              channels_last=channels_last)
    input, grid = jnp.asarray(input), jnp.asarray(grid)
    specs = _image_specs(_fi.grid_sample, (input, grid), kw)
    back = dict(kw, needs_input_grad=True, needs_grid_grad=True)

    @jax.custom_vjp
    def f(x, g):
        return _one(_fi.grid_sample, kw, specs, (x, g))

    def fwd(x, g):
        return f(x, g), (x, g)

    def bwd(res, go):
        x, g = res
        grads = _callback(_fi.grid_sample_backward, back,
                          [_spec(x.shape, x.dtype), _spec(g.shape, g.dtype)], (go, x, g))
        return _cast_like(grads, (x, g))

    f.defvjp(fwd, bwd)
    return f(input, grid)


def _affine_grid_fold(theta, size, align_corners):
    return _fi.affine_grid(theta, (theta.shape[0],) + tuple(size[1:]), align_corners)


def _affine_grid_bwd_fold(grad_grid, size, align_corners):
    return _fi.affine_grid_backward(grad_grid, (grad_grid.shape[0],) + tuple(size[1:]),
                                    align_corners)


def affine_grid(theta, size, align_corners=False):
    """:func:`fastinterp.affine_grid` for JAX arrays, differentiable in theta.

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> fij.affine_grid(jnp.array([[[1.0, 0, 0], [0, 1, 0]]]), (1, 1, 2, 3), True)[0, :, :, 0]
    Array([[-1.,  0.,  1.],
           [-1.,  0.,  1.]], dtype=float32)
    """
    theta = jnp.asarray(theta)
    size = tuple(int(s) for s in size)
    kw = dict(size=size, align_corners=align_corners)
    specs = _image_specs(_affine_grid_fold, (theta,), kw)

    @jax.custom_vjp
    def f(th):
        return _one(_affine_grid_fold, kw, specs, (th,))

    def fwd(th):
        return f(th), th

    def bwd(th, gg):
        return _cast_like(_callback(_affine_grid_bwd_fold, kw, [_spec(th.shape, th.dtype)],
                                    (gg,)), (th,))

    f.defvjp(fwd, bwd)
    return f(theta)


# ------------------------------------------------------------------ resize and pooling

def _spatial(shape, layout):
    return tuple(shape[1:3]) if layout == "NHWC" else tuple(shape[2:4])


def resize(input, size=None, scale_factor=None, mode="bilinear", align_corners=None,
           antialias=False, *, recompute_scale_factor=None, layout="NCHW"):
    """:func:`fastinterp.resize` for JAX arrays, differentiable in input.

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> x = jnp.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> fij.resize(x, size=(1, 4), mode="bilinear", align_corners=True)[0, 0, 0]
    Array([1.6666666, 2.       , 2.3333333, 2.6666667], dtype=float32)
    """
    input = jnp.asarray(input)
    kw = dict(size=size if size is None or isinstance(size, int) else tuple(size),
              scale_factor=scale_factor if scale_factor is None or isinstance(
                  scale_factor, (int, float)) else tuple(scale_factor),
              mode=mode, align_corners=align_corners, antialias=antialias,
              recompute_scale_factor=recompute_scale_factor, layout=layout)
    specs = _image_specs(_fi.resize, (input,), kw)
    back = dict(input_size=_spatial(input.shape, layout), scale_factor=kw["scale_factor"],
                mode=mode, align_corners=align_corners, antialias=antialias,
                recompute_scale_factor=recompute_scale_factor, layout=layout)

    @jax.custom_vjp
    def f(x):
        return _one(_fi.resize, kw, specs, (x,))

    def fwd(x):
        return f(x), x

    def bwd(x, go):
        return _cast_like(_callback(_fi.resize_backward, back, [_spec(x.shape, x.dtype)],
                                    (go,)), (x,))

    f.defvjp(fwd, bwd)
    return f(input)


interpolate = resize


def adaptive_avg_pool2d(input, output_size, *, layout="NCHW"):
    """:func:`fastinterp.adaptive_avg_pool2d` for JAX arrays, differentiable in input.

    Examples
    --------
    >>> import jax.numpy as jnp, fastinterp.jax as fij
    >>> fij.adaptive_avg_pool2d(jnp.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    Array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    """
    input = jnp.asarray(input)
    osize = output_size if output_size is None or isinstance(output_size, int) \
        else tuple(output_size)
    kw = dict(output_size=osize, layout=layout)
    specs = _image_specs(_fi.adaptive_avg_pool2d, (input,), kw)
    back = dict(input_size=_spatial(input.shape, layout), layout=layout)

    @jax.custom_vjp
    def f(x):
        return _one(_fi.adaptive_avg_pool2d, kw, specs, (x,))

    def fwd(x):
        return f(x), x

    def bwd(x, go):
        return _cast_like(_callback(_fi.adaptive_avg_pool2d_backward, back,
                                    [_spec(x.shape, x.dtype)], (go,)), (x,))

    f.defvjp(fwd, bwd)
    return f(input)


# ------------------------------------------------------------------ distances

def _pairwise(forward, backward, x, y, with_dist):
    x = jnp.asarray(x)
    arrays = (x,) if y is None else (x, jnp.asarray(y))
    specs = _full_specs(forward, arrays, {})

    @jax.custom_vjp
    def f(*xs):
        return _one(forward, {}, specs, xs, "sequential")

    def fwd(*xs):
        d = f(*xs)
        return d, (xs, d)

    def bwd(res, g):
        xs, d = res
        if len(xs) == 1:
            host, args = functools.partial(_first_only, backward), (g, xs[0])
        elif with_dist:
            host, args = _l2_bwd_with_dist, (g, *xs, d)
        else:
            host, args = backward, (g, *xs)
        grads = _callback(host, {}, [_spec(a.shape, a.dtype) for a in xs], args, "sequential")
        return _cast_like(grads, xs)

    f.defvjp(fwd, bwd)
    return f(*arrays)


def _first_only(backward, g, x):
    return backward(g, x)[0]


def _l2_bwd_with_dist(g, x, y, dist):
    return _fi.pairwise_l2_backward(g, x, y, dist=dist)


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
    if isinstance(t, (int, float)):
        return _lerp_arrays(jnp.asarray(a), jnp.asarray(b), float(t))
    return _lerp_arrays(jnp.asarray(a), jnp.asarray(b), jnp.asarray(t))


def _lerp_arrays(a, b, t):
    arrays = (a, b) if isinstance(t, float) else (a, b, t)
    shape = jnp.broadcast_shapes(*(x.shape for x in arrays))
    kw = {} if len(arrays) == 3 else {"t": t}
    specs = _full_specs(_fi.lerp, arrays, kw)
    # equal ranks, so that a mapped axis added in front of each broadcasts correctly
    padded = tuple(x.reshape((1,) * (len(shape) - x.ndim) + x.shape) for x in arrays)

    @jax.custom_vjp
    def f(*xs):
        return _one(_fi.lerp, kw, specs, xs, "broadcast")

    def fwd(*xs):
        return f(*xs), xs

    def bwd(xs, g):
        a_, b_ = xs[0], xs[1]
        w = xs[2] if len(xs) == 3 else t
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
    a, b = jnp.asarray(a), jnp.asarray(b)
    kw = dict(axis=axis, path=path, shortest_path=shortest_path, norm=norm)
    const_t = isinstance(t, (int, float))
    arrays = (a, b) if const_t else (a, b, jnp.asarray(t))
    fkw = dict(kw, t=float(t)) if const_t else kw
    specs = _full_specs(_fi.slerp, arrays, fkw)

    @jax.custom_vjp
    def f(*xs):
        return _one(_fi.slerp, fkw, specs, xs, "sequential")

    def fwd(*xs):
        return f(*xs), xs

    def bwd(xs, g):
        specs_b = [_spec(x.shape, x.dtype) for x in xs]
        grads = _callback(_slerp_bwd_host, fkw, specs_b, (g, *xs), "sequential")
        return _cast_like(grads, xs)

    f.defvjp(fwd, bwd)
    return f(*arrays)


def _slerp_bwd_host(g, a, b, t=None, **kw):
    if t is None:   # a constant t travels in kw; it gets no gradient
        return _fi.slerp_backward(g, a, b, **kw)[:2]
    return _fi.slerp_backward(g, a, b, t, **kw)
