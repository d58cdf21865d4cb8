"""Batch-chunked and spatially chunked ops on dask arrays (see fastinterp.dask)."""
from __future__ import annotations

import functools
import math

import numpy as np
import dask.array as da

import fastinterp as fi
import importlib

_rz = importlib.import_module("fastinterp.resize")   # the module (fastinterp.resize is the function)
from .. import warp as _wp
from .._dispatch import _to_numpy, array_kind
from .._half import is_half
from .._layout import as_batch, resolve as resolve_layout
from .._validate import (FLOAT_DTYPES, as_index, broadcast_shape, check_bool,
                          is_real_scalar, shape_str)
from ..blend import slerp_axis, weight_list
from ..sample import _check_size
from ._graph import (as_dask, batched, callers_shapes, check_known_sizes, in_memory_error,
                     is_array, probe, unit_axes_whole)
from . import _spatial


def lerp(a, b, t):
    """:func:`fastinterp.lerp` element-wise over dask arrays (any chunks, NumPy broadcasting).

    Each output block is ``fi.lerp`` of the matching blocks of ``a``, ``b``
    and ``t``, so it equals the in-memory call bit for bit.

    Parameters
    ----------
    a, b : dask or NumPy arrays, float32 or float64
        Start and end values, in any chunks; they broadcast against each
        other and ``t`` as in :func:`fastinterp.lerp` (a NumPy array is
        wrapped as one chunk, and the operands' chunks are lined up).
    t : float or array
        The weight: a scalar, or an array (dask or NumPy) of the same dtype
        that broadcasts, in any chunks (lined up with the others; size-1 axes
        stay whole). There is no ``out``: the result is a new lazy array.

    Returns
    -------
    dask.array.Array
        Lazy, of the broadcast shape and the operands' dtype, chunked as
        Dask's element-wise ops line the operands' chunks up. With NumPy
        operands only, ``da.from_array`` of the in-memory result.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> a, b = np.arange(6.0).reshape(2, 3), np.full((2, 3), 10.0)
    >>> y = fd.lerp(da.from_array(a, chunks=(1, 3)), b, 0.25)
    >>> y.chunks, y.dtype
    (((1, 1), (3,)), dtype('float64'))
    >>> bool((y.compute(scheduler="sync") == fi.lerp(a, b, 0.25)).all())
    True
    """
    a, b, t = (_host_t("lerp", v, n) for n, v in zip("abt", (a, b, t)))
    operand = next((v for v in (a, b) if is_array(v)), None)
    if operand is not None:     # a list t in the dtype the in-memory lerp reads it in
        t = _t_array(t, np.float32 if is_half(operand.dtype) else operand.dtype)
    args = [unit_axes_whole(as_dask(v, "lerp", n)) if is_array(v) else v
            for n, v in zip("abt", (a, b, t))]
    # the in-memory lerp's errors and dtype, dask arrays standing in as single values
    probe = fi.lerp(*[np.zeros(tuple(0 if s == 0 else 1 for s in v.shape), v.dtype)
                      if isinstance(v, da.Array) else v for v in args])
    broadcast_shape("lerp", **{n: v if is_array(v) else np.asarray(v)   # (checked above)
                               for n, v in zip("abt", args)})
    if not any(isinstance(v, da.Array) for v in args):
        return da.from_array(fi.lerp(a, b, t))
    # elemwise lines the operands' chunks up and keeps size-1 axes for fi.lerp to broadcast
    return da.core.elemwise(fi.lerp, *args, dtype=probe.dtype)


def _host_t(op, t, name="t"):
    """A weight ``t`` (or another operand ``name``) given as another framework's CPU array
    (a torch tensor) as a NumPy view (bfloat16 too), so that the blocks and the graph's
    metadata read it as NumPy."""
    return _to_numpy(t, "dlpack", op, name) if array_kind(t) == "dlpack" else t


def _t_array(t, dtype):
    """A list or tuple ``t`` as the in-memory lerp and slerp read it, an array of ``dtype``
    (one that NumPy cannot read stays as it is, for the in-memory call's error)."""
    if not isinstance(t, (list, tuple)):
        return t
    try:
        return weight_list("lerp", t, dtype)
    except (TypeError, ValueError):
        return t


def _slerp_batch(a, b, t, path):
    """(batched t?) ``t`` is batched when it holds every batch axis of ``a`` (axis 0 included)."""
    if not is_array(t):
        return False
    t_batch_ndim = (a.ndim - 1) + bool(path)
    return np.ndim(t) >= t_batch_ndim and t.shape[0] == a.shape[0] and a.shape[0] != 1


def _check_axis(op, a, axis):
    """The in-memory op's check of ``axis``, then: not 0 (the batch axis)."""
    if slerp_axis(op, a.ndim, axis) == 0:
        raise ValueError(f"{op}: axis must not be 0 (axis 0 is the batch axis the blocks "
                         f"split); got axis={axis} for a of shape {tuple(a.shape)}.")


def slerp(a, b, t, axis=-1, *, path=False, shortest_path=False, norm="linear"):
    """:func:`fastinterp.slerp` over dask arrays chunked along axis 0 (the batch).

    The vector axis (``axis``, not 0) and the other axes are rechunked to
    single chunks; ``t`` is split with the batch when it holds the batch axis,
    else it reaches every block whole.

    Parameters
    ----------
    a, b : dask or NumPy arrays, float32 or float64, shape (N, ..., D)
        Start and end vectors along ``axis``, chunked along axis 0 (N); the
        other axes are rechunked to one chunk, and ``b`` to ``a``'s N chunks.
    t : float or array
        The weights, as for :func:`fastinterp.slerp`: a ``t`` holding every
        batch axis of ``a`` (axis 0 included; plus the T axis when ``path``)
        is split with the batch, any other (a scalar, one weight per pair
        broadcast, the T steps shared by a path) goes to every block whole.
    axis : int
        The vector axis, not 0 (axis 0 is the batch the blocks split).
    path, shortest_path, norm
        As for :func:`fastinterp.slerp` (no ``out``).

    Returns
    -------
    dask.array.Array
        Lazy, of the in-memory result's shape (the T axis inserted before the
        vector axis in the path form) and ``a``'s dtype, chunked like ``a``
        along N, one chunk along the other axes.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> rng = np.random.default_rng(0)
    >>> a, b, t = rng.random((4, 3)), rng.random((4, 3)), np.linspace(0, 1, 4)
    >>> y = fd.slerp(da.from_array(a, chunks=(2, 3)), b, t)
    >>> y.chunks
    ((2, 2), (3,))
    >>> bool((y.compute(scheduler="sync") == fi.slerp(a, b, t)).all())
    True
    """
    check_bool("slerp", "path", path)       # read below, before the in-memory op checks it
    a = as_dask(a, "slerp", "a")
    check_known_sizes("slerp", "a", a, range(1, a.ndim))     # rechunked to one chunk
    t = _host_t("slerp", t)
    t = _t_array(t, np.float32 if is_half(a.dtype) else a.dtype)   # as in memory
    _check_axis("slerp", a, axis)
    fn = functools.partial(fi.slerp, axis=axis, path=path, shortest_path=shortest_path,
                           norm=norm)
    if _slerp_batch(a, b, t, path):
        return batched("slerp", fn, {"a": a, "b": b, "t": t})
    return batched("slerp", fn, {"a": a, "b": b}, {"t": t})


def slerp_backward(grad_out, a, b, t, axis=-1, *, path=False, shortest_path=False,
                   norm="linear", needs_ab_grad=True, needs_t_grad=True):
    """:func:`fastinterp.slerp_backward` over batch-chunked dask arrays.

    Returns ``(grad_a, grad_b, grad_t)`` (None for a gradient not asked for, as
    in memory: ``needs_ab_grad=False`` or ``needs_t_grad=False`` skips its
    work in every block). ``grad_a`` and ``grad_b`` (and
    ``grad_t`` when ``t`` is split with the batch) equal the in-memory call
    bit for bit. A ``t`` shared by the whole batch (a scalar, or steps of a
    path) gets the sum of the per-block gradients, equal to the in-memory
    one up to the rounding of that sum.

    Parameters
    ----------
    grad_out : dask or NumPy array, the forward's output shape and a's dtype
        Gradient of the loss with respect to :func:`slerp`'s output, chunked
        along axis 0 (N); the other axes are rechunked to one chunk.
    a, b, t, axis, path, shortest_path, norm
        As passed to :func:`slerp` (``a``, ``b`` and a batched ``t`` are
        rechunked to ``grad_out``'s N chunks; ``axis`` not 0); the options are
        those of :func:`fastinterp.slerp_backward`.
    needs_ab_grad, needs_t_grad : bool
        Which gradients to compute (default: all three).

    Returns
    -------
    (grad_a, grad_b, grad_t) : dask.array.Array or None
        Lazy, of the shapes of ``a``, ``b`` and ``t`` and ``a``'s dtype.
        ``grad_a`` and ``grad_b`` (and a batched ``grad_t``) are chunked like
        ``grad_out`` along N, one chunk along the other axes; a shared ``t``'s
        gradient is one chunk (0-d for a scalar ``t``).

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> rng = np.random.default_rng(0)
    >>> a, b, t = rng.random((4, 3)), rng.random((4, 3)), np.linspace(0, 1, 4)
    >>> g = np.ones((4, 3))
    >>> grads = fd.slerp_backward(da.from_array(g, chunks=(2, 3)), a, b, t)
    >>> [v.chunks for v in grads]
    [((2, 2), (3,)), ((2, 2), (3,)), ((2, 2),)]
    >>> [bool((v.compute(scheduler="sync") == w).all())
    ...  for v, w in zip(grads, fi.slerp_backward(g, a, b, t))]
    [True, True, True]
    """
    check_bool("slerp_backward", "path", path)
    a = as_dask(a, "slerp_backward", "a")
    check_known_sizes("slerp_backward", "a", a, range(1, a.ndim))
    t = _host_t("slerp_backward", t)
    # a list t is read in the compute dtype, its gradient stored in a's (as in memory)
    stored = a.dtype if is_half(a.dtype) and isinstance(t, (list, tuple)) else None
    t = _t_array(t, np.float32 if is_half(a.dtype) else a.dtype)
    _check_axis("slerp_backward", a, axis)
    fn = functools.partial(fi.slerp_backward, axis=axis, path=path,
                           shortest_path=shortest_path, norm=norm,
                           needs_ab_grad=needs_ab_grad, needs_t_grad=needs_t_grad)
    if _slerp_batch(a, b, t, path):
        ga, gb, gt = batched("slerp_backward", fn,
                             {"grad_out": grad_out, "a": a, "b": b, "t": t}, n_out=3)
    else:
        if is_half(a.dtype) and (is_real_scalar(t) or (
                isinstance(t, np.ndarray) and is_half(t.dtype))):
            # the blocks' partial sums of a shared t's gradient stay in float32 (t read in
            # it, as in memory: a number of any type, NumPy's included), rounded once to
            # half after the sum
            stored = stored or (t.dtype if is_array(t) else a.dtype)
            t = np.asarray(t, np.float32)
        ga, gb, gt_blocks = batched("slerp_backward", _stack_t_grad(fn),
                                    {"grad_out": grad_out, "a": a, "b": b}, {"t": t}, n_out=3,
                                    per_block=(2,))
        gt = None if gt_blocks is None else gt_blocks.sum(axis=0, dtype=gt_blocks.dtype)
    return ga, gb, (gt if gt is None or stored is None else gt.astype(stored))


class _stack_t_grad:
    """Wrap a backward so that the gradient of an unsplit ``t`` gets a leading block axis
    (a module-level class, not a closure: graphs pickle)."""

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "slerp_backward")

    def __call__(self, **kw):
        ga, gb, gt = self.fn(**kw)
        if gt is None:                 # not asked for
            return ga, gb, None
        kind = array_kind(gt)          # (a torch t's gradient is a tensor: bfloat16 too)
        gt = np.asarray(gt) if kind in (None, "numpy") else _to_numpy(gt, kind, "slerp_backward",
                                                                      "t")
        if kw["a"].shape[0] == 0:
            return ga, gb, np.zeros((0,) + gt.shape, gt.dtype)
        return ga, gb, gt[None]


def affine_grid(theta, size, align_corners=False):
    """:func:`fastinterp.affine_grid` over ``theta`` (N, 2, 3) (or (N, 3, 4) for a
    5-D size) chunked along N.

    Returns the grid (N, H, W, 2) (or (N, D, H, W, 3)) chunked like theta along N,
    one chunk along the other axes.

    Parameters
    ----------
    theta : dask or NumPy array (N, 2, 3) or (N, 3, 4), float32 or float64
        Affine matrices, chunked along N (the other axes are rechunked to one
        chunk).
    size : sequence of 4 or 5 ints
        The whole output size ``(N, C, H, W)`` or ``(N, C, D, H, W)``, with
        ``N`` theta's number of rows (each block gets its own share of N).
    align_corners : bool
        As for :func:`fastinterp.affine_grid` (no ``out``).

    Returns
    -------
    dask.array.Array
        Lazy grid (N, H, W, 2) (or (N, D, H, W, 3)) of theta's dtype, chunked
        like ``theta`` along N, one chunk along the other axes; equal to the
        in-memory grid bit for bit.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> theta = np.tile([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], (4, 1, 1))
    >>> y = fd.affine_grid(da.from_array(theta, chunks=(2, 2, 3)), (4, 1, 3, 5))
    >>> y.chunks
    ((2, 2), (3,), (5,), (2,))
    >>> bool((y.compute(scheduler="sync") == fi.affine_grid(theta, (4, 1, 3, 5))).all())
    True
    """
    dims = _check_size("affine_grid", size)
    theta = as_dask(theta, "affine_grid", "theta")
    _check_batch_of_size("affine_grid", "theta", theta, dims, functools.partial(
        fi.affine_grid, size=size, align_corners=align_corners))
    fn = _per_block_size(fi.affine_grid, "size", dims[1:], align_corners=align_corners)
    return batched("affine_grid", fn, {"theta": theta})


def affine_grid_backward(grad_grid, size, align_corners=False):
    """:func:`fastinterp.affine_grid_backward` over ``grad_grid`` (N, H, W, 2) chunked along N.

    One task per block of N calls the in-memory op: equal to it bit for bit.

    Parameters
    ----------
    grad_grid : dask or NumPy array (N, H, W, 2) or (N, D, H, W, 3), float32 or float64
        Gradient with respect to the grid, chunked along N (the other axes
        are rechunked to one chunk).
    size : sequence of 4 or 5 ints
        The whole ``size`` given to :func:`affine_grid`, ``N`` included.
    align_corners : bool
        As for :func:`fastinterp.affine_grid_backward`.

    Returns
    -------
    dask.array.Array
        Lazy ``grad_theta`` (N, 2, 3) (or (N, 3, 4)) of grad_grid's dtype,
        chunked like ``grad_grid`` along N, one chunk along the other axes.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> g = np.ones((4, 3, 5, 2))
    >>> y = fd.affine_grid_backward(da.from_array(g, chunks=(2, 3, 5, 2)), (4, 1, 3, 5))
    >>> y.chunks
    ((2, 2), (2,), (3,))
    >>> bool((y.compute(scheduler="sync") == fi.affine_grid_backward(g, (4, 1, 3, 5))).all())
    True
    """
    dims = _check_size("affine_grid_backward", size)
    grad_grid = as_dask(grad_grid, "affine_grid_backward", "grad_grid")
    _check_batch_of_size("affine_grid_backward", "grad_grid", grad_grid, dims,
                         functools.partial(fi.affine_grid_backward, size=size,
                                           align_corners=align_corners))
    fn = _per_block_size(fi.affine_grid_backward, "size", dims[1:], align_corners=align_corners)
    return batched("affine_grid_backward", fn, {"grad_grid": grad_grid})


def _check_batch_of_size(op, name, arr, dims, in_memory):
    """The batch axis must be size[0], as the in-memory op requires (the blocks see only
    their own batch size): else the error of ``in_memory`` (the op, given ``name=``
    and a whole size) on the caller's shapes."""
    if arr.ndim >= 1:
        check_known_sizes(op, name, arr, (0,))
    if arr.ndim < 1 or arr.shape[0] != dims[0]:
        in_memory_error(in_memory, {name: arr})
        raise ValueError(f"{op}: {name} must have N = size[0] = {dims[0]} rows along axis "
                         f"0; got shape {shape_str(arr.shape)}.")


class _per_block_size:
    """``fn`` given ``name=(block N,) + tail`` (the block's own batch size) on each call
    (a module-level class, not a closure: graphs pickle)."""

    def __init__(self, fn, name, tail, **options):
        self.fn, self.name, self.tail, self.options = fn, name, tuple(tail), options
        self.__name__ = getattr(fn, "__name__", "call")

    def __call__(self, **kw):
        first = next(iter(kw.values()))
        return self.fn(**kw, **{self.name: (first.shape[0],) + self.tail}, **self.options)


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False,
                fill=None, *, layout="NCHW", max_window=None):
    """:func:`fastinterp.grid_sample` over dask arrays; equal to the in-memory call bit for bit.

    ``input`` chunked along N only: one task per block of N, ``grid`` split
    with it. ``input`` chunked along H and W (C is rechunked to one chunk):
    the output is chunked like ``grid`` along H_out and W_out, and each
    output block reads only the source blocks its points can touch. To know
    them, a first pass computes every grid block's minimum and maximum when
    the graph is built (a lazy grid is computed for that, and again at
    compute time). Limits: a grid block that scatters widely (a strong
    rotation, random points) reads a wide window; ``max_window`` (pixels)
    makes that an error instead; with ``padding_mode='reflection'`` or
    ``'wrap'`` a block whose points leave the image, and with any padding but
    'zeros' a block holding NaN or inf points, reads its whole rows/columns
    of the source.
    Each task places its window in a zero-filled buffer of the block's full
    source shape (address space only: untouched pages take no memory).

    Parameters
    ----------
    input : dask or NumPy array (N, C, H, W) (``layout='NHWC'``: (N, H, W, C))
        The images, chunked along N, or along N, H and W (then C is rechunked
        to one chunk). Batch-chunked: any dtype of :func:`fastinterp.grid_sample`,
        and 5-D volumes (N, C, D, H, W) too.
    grid : dask or NumPy array (N, H_out, W_out, 2)
        Normalized sampling points. Batch-chunked input: rechunked to
        ``input``'s N chunks, one chunk along the other axes. Spatially
        chunked input: rechunked to ``input``'s N chunks, its chunks along
        H_out and W_out kept (they are the output's).
    mode, padding_mode, align_corners, fill
        As for :func:`fastinterp.grid_sample` (no ``out``).
    layout : {'NCHW', 'NHWC'}
        A batch only (default 'NCHW'; None reads as 'NCHW'): one image is not taken here.
    max_window : int, optional
        Spatially chunked input: the most source pixels (H x W) one output
        block may read; a grid block reaching more raises ``ValueError``
        when the graph is built. None (default): no limit.

    Returns
    -------
    dask.array.Array
        Lazy (N, C, H_out, W_out) in ``layout``, the in-memory result's dtype,
        chunked like ``input`` along N and one chunk along C; along H_out and
        W_out one chunk (batch-chunked input) or ``grid``'s chunks (spatially
        chunked input).

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> x = np.random.default_rng(0).random((2, 1, 8, 8))
    >>> theta = np.tile([[0.9, -0.2, 0.0], [0.2, 0.9, 0.0]], (2, 1, 1))
    >>> grid = fi.affine_grid(theta, (2, 1, 6, 6))
    >>> y = fd.grid_sample(da.from_array(x, chunks=(1, 1, 4, 4)),
    ...                    da.from_array(grid, chunks=(1, 3, 3, 2)))
    >>> y.chunks
    ((1, 1), (1,), (3, 3), (3, 3))
    >>> bool((y.compute(scheduler="sync") == fi.grid_sample(x, grid)).all())
    True
    """
    return _grid_sample("grid_sample", input, grid, mode, padding_mode, align_corners, fill,
                        layout, max_window)


def _grid_sample(op, input, grid, mode, padding_mode, align_corners, fill, layout,
                 max_window, known_bounds=None):
    """:func:`grid_sample` for ``op`` (itself or a warp, whose errors name it; its
    ``known_bounds``: see fastinterp.dask._warp.grid_sample_windows)."""
    from ._warp import grid_sample_windows
    max_window = _check_max_window(op, max_window)
    x = as_dask(input, op, "input")
    layout = _check_batched_layout(op, layout)
    hax, wax = (1, 2) if layout == "NHWC" else (2, 3)
    opts = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners,
                fill=fill, layout=layout)
    if x.ndim == 4 and (x.numblocks[hax] > 1 or x.numblocks[wax] > 1):
        check_known_sizes(op, "input", x, (0,))      # the grid is split along x's N chunks
        return grid_sample_windows(op, x, as_dask(grid, op, "grid"), opts, max_window,
                                   known_bounds)
    return batched("grid_sample", functools.partial(fi.grid_sample, **opts),
                   {"input": x, "grid": grid})


def _check_max_window(op, max_window):
    """``max_window`` as an int >= 1, or None."""
    if max_window is None:
        return None
    try:
        limit = as_index(max_window)
    except TypeError:
        raise TypeError(f"{op}: max_window must be an int (pixels) or None; got "
                        f"{type(max_window).__name__} {max_window!r}.") from None
    if limit < 1:
        raise ValueError(f"{op}: max_window must be at least 1 pixel; got {limit}.")
    return limit


def warp_affine(img, M, dsize, mode="bilinear", padding_mode="zeros", align_corners=False,
                match="opencv", inverse_map=False, fill=None, *, layout=None, chunks=None,
                max_window=None):
    """:func:`fastinterp.warp_affine` over a dask image; equal to the in-memory call bit for bit.

    ``img`` in any chunks and ``layout`` (a batch, None reading 4-D as NCHW,
    or one image, 'HWC', 'CHW', 'HW', as for :func:`resize`); ``M`` a host
    array, (2, 3) or (N, 2, 3). The sampling grid is built lazily, block
    by block, from the matrices, chunked like ``img`` along N and by
    ``chunks`` (H_out, W_out) (default: ``img``'s chunk size along H and W),
    and :func:`grid_sample` samples it: over an image chunked along H or W
    the result is chunked like the grid and each output block reads only the
    source blocks it reaches (``max_window`` as there; the graph is built
    from the grid's points at its blocks' corners, which bound the blocks,
    so no block is computed before the result is, except a perspective
    block that holds its map's horizon, w = 0); an image chunked along N
    only gives one block per image block. float32, float64 and uint8 images
    (forward), as the in-memory warps.

    Parameters
    ----------
    img : dask or NumPy array (N, C, H, W), or another shape named by ``layout``
        The images, in any chunks (C is rechunked to one chunk; a NumPy array
        is one chunk).
    M : array (2, 3) or (N, 2, 3)
        Affine matrices, a host (NumPy) array: one for the batch or one per
        image.
    dsize : (H_out, W_out)
        Output size, height first (``cv2.warpAffine`` takes (width, height)).
    mode, padding_mode, align_corners, match, inverse_map, fill
        As for :func:`fastinterp.warp_affine` (no ``out``).
    layout : {None, 'NCHW', 'NHWC', 'CHW', 'HWC', 'HW'}
        As for :func:`resize`: None reads 4-D as 'NCHW' and 2-D as 'HW'.
    chunks : (int, int) or dask chunks, optional
        The output's chunks along H_out and W_out (default: ``img``'s chunk
        size along H and W).
    max_window : int, optional
        As for :func:`grid_sample` (image chunked along H or W).

    Returns
    -------
    dask.array.Array
        Lazy (N, C, H_out, W_out) in ``img``'s layout (one image: no N) and
        dtype, chunked like ``img`` along N, one chunk along C, and by
        ``chunks`` along H_out and W_out (one chunk there when ``img`` is
        chunked along N only).

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> img = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    >>> M = fi.rotation_matrix(20, center=(31.5, 31.5))
    >>> y = fd.warp_affine(da.from_array(img, chunks=(1, 3, 32, 32)), M, (48, 64))
    >>> y.chunks[2:], np.array_equal(y.compute(), fi.warp_affine(img, M, (48, 64)))
    (((32, 16), (32, 32)), True)
    """
    return _warp("warp_affine", 2, img, M, dsize, mode, padding_mode, align_corners, match,
                 inverse_map, fill, layout, chunks, max_window)


def warp_perspective(img, M, dsize, mode="bilinear", padding_mode="zeros", align_corners=False,
                     match="opencv", inverse_map=False, fill=None, *, layout=None,
                     chunks=None, max_window=None):
    """:func:`fastinterp.warp_perspective` over a dask image (homographies (3, 3) or
    (N, 3, 3)); everything else as :func:`warp_affine`. Bit for bit the in-memory call.

    Parameters
    ----------
    img : dask or NumPy array (N, C, H, W), or another shape named by ``layout``
        The images, in any chunks, as for :func:`warp_affine`.
    M : array (3, 3) or (N, 3, 3)
        Homographies, a host (NumPy) array: one for the batch or one per image.
    dsize, mode, padding_mode, align_corners, match, inverse_map, fill
        As for :func:`fastinterp.warp_perspective` (no ``out``).
    layout, chunks, max_window
        As for :func:`warp_affine`.

    Returns
    -------
    dask.array.Array
        Lazy (N, C, H_out, W_out) in ``img``'s layout and dtype, chunked as
        for :func:`warp_affine`.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> img = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    >>> H = np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.001, 0.0, 1.0]])
    >>> y = fd.warp_perspective(da.from_array(img, chunks=(1, 1, 4, 4)), H, (6, 8))
    >>> y.chunks
    ((1,), (1,), (4, 2), (4, 4))
    >>> bool((y.compute(scheduler="sync") == fi.warp_perspective(img, H, (6, 8))).all())
    True
    """
    return _warp("warp_perspective", 3, img, M, dsize, mode, padding_mode, align_corners, match,
                 inverse_map, fill, layout, chunks, max_window)


def rotate(img, angle, center=None, scale=1.0, mode="bilinear", padding_mode="zeros", fill=None,
           *, layout=None, chunks=None, max_window=None):
    """:func:`fastinterp.rotate` over a dask image: :func:`warp_affine` by
    ``fastinterp.rotation_matrix(angle, center, scale)`` to the image's own size
    (``center`` defaults to the image centre).

    Parameters
    ----------
    img : dask or NumPy array (N, C, H, W), or another shape named by ``layout``
        The images, in any chunks, as for :func:`warp_affine`.
    angle, center, scale, mode, padding_mode, fill
        As for :func:`fastinterp.rotate` (no ``out``): degrees
        counter-clockwise, the fixed point in pixels, the isotropic scale.
    layout, chunks, max_window
        As for :func:`warp_affine`.

    Returns
    -------
    dask.array.Array
        Lazy, of ``img``'s shape and dtype, chunked as for :func:`warp_affine`
        (by default like ``img``).

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> img = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    >>> y = fd.rotate(da.from_array(img, chunks=(1, 1, 4, 4)), 30)
    >>> y.chunks, y.dtype
    (((1,), (1,), (4, 4), (4, 4)), dtype('float32'))
    >>> bool((y.compute(scheduler="sync") == fi.rotate(img, 30)).all())
    True
    """
    img = as_dask(img, "rotate", "img")
    x, batch_layout, _ = as_batch("rotate", "img", img, layout)
    _check_batched_layout("rotate", batch_layout)
    check_known_sizes("rotate", "img", img, range(img.ndim))     # (the centre is from H, W)
    H, W = _hw(x.shape, batch_layout == "NHWC")
    if center is None:
        center = ((W - 1) / 2.0, (H - 1) / 2.0)
    M = _wp._rotate_matrix("rotate", angle, center, scale)
    return _warp("rotate", 2, img, M, (H, W), mode, padding_mode, False, "opencv", False, fill,
                 layout, chunks, max_window)


def _warp(op, rows, img, M, dsize, mode, padding_mode, align_corners, match, inverse_map, fill,
          layout, chunks, max_window):
    """The warps: grid (fastinterp.dask._warp.warp_grid) then :func:`grid_sample`."""
    from ._warp import warp_grid, warp_grid_bounds
    img = as_dask(img, op, "img")
    x, layout, back = as_batch(op, "img", img, layout)
    _check_batched_layout(op, layout)
    check_known_sizes(op, "img", img, range(img.ndim))     # N too: M may be one per image
    nhwc = layout == "NHWC"
    if x.ndim != 4:
        given = "" if layout is None else f" (layout={layout!r})"
        raise ValueError(f"{op}: img must be a batch (N, C, H, W), or (N, H, W, C) with "
                         f"layout='NHWC'{given}; got shape {tuple(x.shape)}.")
    N = x.shape[0]
    C = x.shape[3] if nhwc else x.shape[1]
    H, W = _hw(x.shape, nhwc)
    # the in-memory checks (matrix, options, fill, dtype, H and W >= 1) on one pixel per
    # image (none along an empty axis)
    h, w = min(H, 1), min(W, 1)
    stand_in = np.zeros((N, h, w, C) if nhwc else (N, C, h, w), x.dtype)
    with callers_shapes((stand_in, img)):
        *_, opts = _wp._begin(op, stand_in, M, dsize, match, mode, padding_mode, align_corners,
                              inverse_map, layout, fill, rows, uint8_ok=True)
    Ho, Wo = _wp._check_dsize(op, dsize)
    inverse = check_bool(op, "inverse_map", inverse_map)
    align = check_bool(op, "align_corners", align_corners)
    wmap = _wp._Map(op, M, rows, N, H, W, Ho, Wo, match, inverse, align)
    max_window = _check_max_window(op, max_window)
    grid = warp_grid(op, x, wmap, nhwc, chunks, _wp._float_dtype(x))
    return back(_grid_sample(op, x, grid, opts["mode"], opts["padding_mode"],
                             opts["align_corners"], opts["fill"], layout, max_window,
                             functools.partial(warp_grid_bounds, wmap)))


def grid_sample_backward(grad_output, input, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False, needs_input_grad=True, needs_grid_grad=True,
                         deterministic=True, fill=None, *, layout="NCHW"):
    """:func:`fastinterp.grid_sample_backward` over arrays chunked along N.

    Returns ``(grad_input, grad_grid)`` (None for a gradient not asked for).
    One task per block of N calls the in-memory op: equal to it bit for bit.

    Parameters
    ----------
    grad_output : dask or NumPy array (N, C, H_out, W_out) (NHWC: (N, H_out, W_out, C))
        Gradient with respect to :func:`grid_sample`'s output, chunked along N
        (the other axes are rechunked to one chunk).
    input, grid : dask or NumPy arrays (N, C, H, W) and (N, H_out, W_out, 2)
        As given to :func:`grid_sample`, rechunked to ``grad_output``'s N
        chunks and one chunk along the other axes.
    mode, padding_mode, align_corners, needs_input_grad, needs_grid_grad, deterministic, fill
        As for :func:`fastinterp.grid_sample_backward` (the CPU backward is always
        deterministic).
    layout : {'NCHW', 'NHWC'} or None
        A batch only (default 'NCHW'; None reads as 'NCHW').

    Returns
    -------
    (grad_input, grad_grid) : dask.array.Array or None
        Lazy, of ``input``'s and ``grid``'s shapes and the in-memory
        gradients' dtypes, chunked like ``grad_output`` along N, one chunk
        along the other axes (None for a gradient not asked for).

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> x = np.random.default_rng(0).random((2, 1, 8, 8))
    >>> theta = np.tile([[0.9, -0.2, 0.0], [0.2, 0.9, 0.0]], (2, 1, 1))
    >>> grid, g = fi.affine_grid(theta, (2, 1, 6, 6)), np.ones((2, 1, 6, 6))
    >>> gi, gg = fd.grid_sample_backward(da.from_array(g, chunks=(1, 1, 6, 6)), x, grid)
    >>> gi.chunks, gg.chunks
    (((1, 1), (1,), (8,), (8,)), ((1, 1), (6,), (6,), (2,)))
    >>> [bool((u.compute(scheduler="sync") == v).all())
    ...  for u, v in zip((gi, gg), fi.grid_sample_backward(g, x, grid))]
    [True, True]
    """
    layout = _check_batched_layout("grid_sample_backward", layout)
    fn = functools.partial(fi.grid_sample_backward, mode=mode, padding_mode=padding_mode,
                           align_corners=align_corners, needs_input_grad=needs_input_grad,
                           needs_grid_grad=needs_grid_grad, deterministic=deterministic,
                           fill=fill, layout=layout)
    return batched("grid_sample_backward", fn,
                   {"grad_output": grad_output, "input": input, "grid": grid}, n_out=2)


# --------------------------------------------------------------------------- resize family

def _spatially_chunked(x, nhwc):
    """A 4-D batch chunked along H or W that holds values (an empty one is batch work)."""
    hax, wax = (1, 2) if nhwc else (2, 3)
    return (x.ndim == 4 and (x.numblocks[hax] > 1 or x.numblocks[wax] > 1)
            and 0 not in x.shape)


def _hw(shape, nhwc):
    return (shape[1], shape[2]) if nhwc else (shape[2], shape[3])


def _float_tables_dtype(op, dtype):
    """The dtype of a spatially chunked input: float32 or float64 (uint8 and half
    precision are batch-chunked only), else a TypeError when the graph is built. Either
    byte order: each block is read in the native one."""
    native = np.dtype(dtype).newbyteorder("=")
    if native not in FLOAT_DTYPES:
        raise TypeError(f"{op}: spatially chunked inputs must be float32 or float64; "
                        f"got {np.dtype(dtype).name} (give H and W one chunk each, "
                        f"x.rechunk({{2: -1, 3: -1}}) for NCHW, or cast it to float32).")
    return native


def resize(input, size=None, scale_factor=None, mode="bilinear", align_corners=None,
           antialias=False, *, recompute_scale_factor=None, match="torch", layout=None):
    """:func:`fastinterp.resize` on a dask array chunked along N, H and W (C too for NCHW).

    Output chunks are aligned to the input's (input boundary ``b`` along an
    axis becomes output boundary ``floor(b * out / in)``; a chunk may be
    empty when shrinking), and each reads exactly the input window its taps
    need. The result equals ``fi.resize`` of the whole array bit for bit.
    ``layout`` as there: a batch (None reads 4-D as 'NCHW'; (N, C, L) and
    (N, C, D, H, W) data are chunked along N only), or one image ('HWC',
    'CHW', 'HW', or a 2-D array), such as a whole-slide image chunked along
    H and W. ``match`` presets too (spatial chunks: float32/float64).

    Parameters
    ----------
    input : dask or NumPy array (N, C, H, W), or another shape named by ``layout``
        The images. Chunked along N only: any input of
        :func:`fastinterp.resize` (uint8, 1-D and 3-D data included), one
        task per block. Chunked along H or W too (4-D batches and single
        images): float32 or float64; for NHWC, C is rechunked to one chunk.
    size, scale_factor, mode, align_corners, antialias, recompute_scale_factor, match
        As for :func:`fastinterp.resize` (no ``out``).
    layout : {None, 'NCHW', 'NHWC', 'CHW', 'HWC', 'HW'}
        As for :func:`fastinterp.resize`: None reads 4-D as 'NCHW' and 2-D as
        'HW'.

    Returns
    -------
    dask.array.Array
        Lazy, of ``input``'s layout and dtype with (H_out, W_out). Chunked
        along H or W: chunked like ``input`` along N and C (NHWC: one chunk
        along C) and, along H_out and W_out, at the aligned boundaries above.
        Chunked along N only: like ``input`` along N, one chunk along the
        other axes.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> x = np.random.default_rng(0).random((2, 3, 8, 8))
    >>> y = fd.resize(da.from_array(x, chunks=(1, 3, 4, 4)), size=(4, 4))
    >>> y.chunks
    ((1, 1), (3,), (2, 2), (2, 2))
    >>> bool((y.compute(scheduler="sync") == fi.resize(x, size=(4, 4))).all())
    True
    """
    input = as_dask(input, "resize", "input")
    x, layout, back = as_batch("resize", "input", input, layout, nd_ok=True)
    opts = dict(size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners,
                antialias=antialias, recompute_scale_factor=recompute_scale_factor,
                match=match, layout=layout)
    fn = functools.partial(fi.resize, **opts)
    probe(fn, {"input": x}, shown={"input": input})      # every check, before any graph
    nhwc = layout == "NHWC"
    if not _spatially_chunked(x, nhwc):
        return back(batched("resize", fn, {"input": x}, shown={"input": input}))
    op = "resize"
    dtype = _float_tables_dtype(op, x.dtype)
    ac, aa = _rz._check_mode_options(op, mode, align_corners, antialias, match)
    in_hw = _hw(x.shape, nhwc)
    out_hw, scales = _rz._output_geometry(op, in_hw, size, scale_factor, mode,
                                          recompute_scale_factor)
    channels = x.shape[3] if nhwc else x.shape[1]
    (ytab, xtab), _ = _rz._resize_tables(match, mode, in_hw, out_hw, channels, ac, scales, aa,
                                         dtype)
    return back(_spatial.separable(op, x, ytab, xtab, out_hw, nhwc))


def resize_backward(grad_output, input_size, scale_factor=None, mode="bilinear",
                    align_corners=None, antialias=False, *, recompute_scale_factor=None,
                    layout=None):
    """:func:`fastinterp.resize_backward` on a dask array chunked along N, H and W.

    Chunked along H/W, each input-gradient chunk (aligned to grad_output's
    chunks) gathers exactly the gradient window its transposed taps read.
    ``layout`` as for :func:`resize` (one image included); 1-D (N, C, L) and
    3-D (N, C, D, H, W) gradients are chunked along N only.
    The result equals ``fi.resize_backward`` of the whole array bit for bit.

    Parameters
    ----------
    grad_output : dask or NumPy array (N, C, H_out, W_out), or the shape named by ``layout``
        Gradient with respect to :func:`resize`'s output. Chunked along N
        only, or along N, H_out and W_out too (then float32 or float64; for
        NHWC, C is rechunked to one chunk).
    input_size : (N, C, H, W) or (H, W), or the input array itself
        The forward input's shape (in ``layout`` order).
    scale_factor, mode, align_corners, antialias, recompute_scale_factor, layout
        As given to the forward call, as for
        :func:`fastinterp.resize_backward` (no ``out``).

    Returns
    -------
    dask.array.Array
        Lazy, of ``input_size`` (in ``layout``) and grad_output's dtype.
        Chunked along H_out or W_out: chunked like ``grad_output`` along N and
        C (NHWC: one chunk along C) and, along H and W, at the boundaries
        aligned to grad_output's chunks. Chunked along N only: like
        ``grad_output`` along N, one chunk along the other axes.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> g = np.ones((1, 1, 4, 4))
    >>> y = fd.resize_backward(da.from_array(g, chunks=(1, 1, 2, 2)), (1, 1, 8, 8))
    >>> y.chunks
    ((1,), (1,), (4, 4), (4, 4))
    >>> bool((y.compute(scheduler="sync") == fi.resize_backward(g, (1, 1, 8, 8))).all())
    True
    """
    op = "resize_backward"
    opts = dict(scale_factor=scale_factor, mode=mode, align_corners=align_corners,
                antialias=antialias, recompute_scale_factor=recompute_scale_factor)
    grad_output = as_dask(grad_output, op, "grad_output")
    if _rz._is_nd(grad_output, layout):
        shape = grad_output.shape
        if math.isnan(shape[0]):    # an unknown N: input_size's cannot be checked
            shape = (_batch_of(input_size, len(shape)),) + tuple(shape[1:])
        in_sp = _rz._nd_input_size(op, input_size, shape)
        fn = functools.partial(fi.resize_backward, input_size=in_sp, layout=layout, **opts)
        return batched(op, fn, {"grad_output": grad_output})
    g, layout, in_hw, back = _grad_batch(op, grad_output, input_size, layout)
    fn = functools.partial(fi.resize_backward, input_size=in_hw, layout=layout, **opts)
    shown = {"grad_output": grad_output}
    probe(fn, {"grad_output": g}, shown=shown)
    nhwc = layout == "NHWC"
    if not _spatially_chunked(g, nhwc):
        return back(batched(op, fn, {"grad_output": g}, shown=shown))
    dtype = _float_tables_dtype(op, g.dtype)
    ac, aa = _rz._check_mode_options(op, mode, align_corners, antialias)
    g_hw = _hw(g.shape, nhwc)
    scales = (None, None)
    if scale_factor is not None:
        _, scales = _rz._output_geometry(op, in_hw, None, scale_factor, mode,
                                         recompute_scale_factor)
    tabs = [_rz.transposed_table(t)
            for t in _rz._axis_tables(mode, in_hw, g_hw, ac, scales, aa, dtype)]
    return back(_spatial.separable(op, g, tabs[0], tabs[1], in_hw, nhwc))


def _grad_batch(op, grad_output, input_size, layout):
    """``(grad_output as a batch, its batched layout, the forward input's (H, W), a
    function putting a result back)``: one image as the forwards take it, and
    ``input_size`` a shape in the caller's layout or (H, W)."""
    g, batched_layout, back = as_batch(op, "grad_output", grad_output, layout)
    lay = resolve_layout(op, "grad_output", grad_output, layout)
    check_known_sizes(op, "grad_output", grad_output, range(int(lay.batched), grad_output.ndim))
    shape = grad_output.shape
    if lay.batched and math.isnan(shape[0]):    # an unknown N: input_size's cannot be checked
        shape = (_batch_of(input_size, len(shape)),) + tuple(shape[1:])
    return g, batched_layout, _rz._input_size(op, input_size, shape, lay), back


def _batch_of(input_size, ndim):
    """The N of ``input_size`` (a shape, or an array) if it names one (``ndim`` entries),
    else 0 (an (H, W) size names none)."""
    dims = getattr(input_size, "shape", input_size)
    try:
        return int(dims[0]) if len(dims) == ndim else 0
    except (TypeError, ValueError, IndexError):
        return 0            # (the size's own check names it)


def adaptive_avg_pool2d(input, output_size, *, layout=None):
    """:func:`fastinterp.adaptive_avg_pool2d` on a dask array chunked along N, H and W.

    Same chunk alignment, layouts (one image included) and bit-equality as :func:`resize`.

    Parameters
    ----------
    input : dask or NumPy array (N, C, H, W), or another shape named by ``layout``
        The images. Chunked along N only: any input of
        :func:`fastinterp.adaptive_avg_pool2d`, one task per block. Chunked
        along H or W too: float32 or float64 (for NHWC, C is rechunked to
        one chunk).
    output_size : int or (int or None, int or None)
        As for :func:`fastinterp.adaptive_avg_pool2d` (no ``out``).
    layout : {None, 'NCHW', 'NHWC', 'CHW', 'HWC', 'HW'}
        As for :func:`resize`.

    Returns
    -------
    dask.array.Array
        Lazy, of ``input``'s layout and dtype with (H_out, W_out), chunked as
        the result of :func:`resize`.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> x = np.random.default_rng(0).random((1, 2, 6, 6))
    >>> y = fd.adaptive_avg_pool2d(da.from_array(x, chunks=(1, 2, 3, 3)), 4)
    >>> y.chunks
    ((1,), (2,), (2, 2), (2, 2))
    >>> bool((y.compute(scheduler="sync") == fi.adaptive_avg_pool2d(x, 4)).all())
    True
    """
    input = as_dask(input, "adaptive_avg_pool2d", "input")
    x, layout, back = as_batch("adaptive_avg_pool2d", "input", input, layout, nd_ok=True)
    fn = functools.partial(fi.adaptive_avg_pool2d, output_size=output_size, layout=layout)
    probe(fn, {"input": x}, shown={"input": input})
    nhwc = layout == "NHWC"
    if not _spatially_chunked(x, nhwc):
        return back(batched("adaptive_avg_pool2d", fn, {"input": x}, shown={"input": input}))
    op = "adaptive_avg_pool2d"
    dtype = _float_tables_dtype(op, x.dtype)
    in_hw = _hw(x.shape, nhwc)
    out_hw = _rz._pool_size_k(op, output_size, in_hw)
    ytab, xtab = [_rz.axis_table("area", n_in, n_o, None, None, False, _rz._DTYPE_NAME[dtype])
                  for n_in, n_o in zip(in_hw, out_hw)]
    return back(_spatial.separable(op, x, ytab, xtab, out_hw, nhwc))


def adaptive_avg_pool2d_backward(grad_output, input_size, *, layout=None):
    """:func:`fastinterp.adaptive_avg_pool2d_backward` on a dask array chunked along N, H, W
    (``layout`` as for :func:`adaptive_avg_pool2d`, one image included).

    Chunk alignment and bit-equality as :func:`resize_backward`.

    Parameters
    ----------
    grad_output : dask or NumPy array (N, C, H_out, W_out), or the shape named by ``layout``
        Gradient with respect to :func:`adaptive_avg_pool2d`'s output, chunked
        along N, or along N, H_out and W_out too (then float32 or float64).
    input_size : (N, C, H, W) or (H, W), or the input array itself
        The forward input's shape (in ``layout`` order).
    layout : {None, 'NCHW', 'NHWC', 'CHW', 'HWC', 'HW'}
        As for :func:`fastinterp.adaptive_avg_pool2d_backward` (no ``out``).

    Returns
    -------
    dask.array.Array
        Lazy, of ``input_size`` (in ``layout``) and grad_output's dtype,
        chunked as the result of :func:`resize_backward`.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> g = np.ones((1, 2, 4, 4))
    >>> y = fd.adaptive_avg_pool2d_backward(da.from_array(g, chunks=(1, 2, 2, 2)), (1, 2, 6, 6))
    >>> y.chunks
    ((1,), (2,), (3, 3), (3, 3))
    >>> want = fi.adaptive_avg_pool2d_backward(g, (1, 2, 6, 6))
    >>> bool((y.compute(scheduler="sync") == want).all())
    True
    """
    op = "adaptive_avg_pool2d_backward"
    grad_output = as_dask(grad_output, op, "grad_output")
    g, layout, in_hw, back = _grad_batch(op, grad_output, input_size, layout)
    fn = functools.partial(fi.adaptive_avg_pool2d_backward, input_size=in_hw, layout=layout)
    shown = {"grad_output": grad_output}
    probe(fn, {"grad_output": g}, shown=shown)
    nhwc = layout == "NHWC"
    if not _spatially_chunked(g, nhwc):
        return back(batched(op, fn, {"grad_output": g}, shown=shown))
    dtype = _float_tables_dtype(op, g.dtype)
    tabs = [_rz.transposed_table(_rz.axis_table("area", n_in, n_o, None, None, False,
                                                _rz._DTYPE_NAME[dtype]))
            for n_in, n_o in zip(in_hw, _hw(g.shape, nhwc))]
    return back(_spatial.separable(op, g, tabs[0], tabs[1], in_hw, nhwc))


interpolate = resize


def _check_batched_layout(op, layout):
    """A batch's layout: 'NCHW' (None, the in-memory ops' default, reads as it) or 'NHWC'."""
    if layout is None:
        return "NCHW"
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"{op}: layout must be 'NCHW' or 'NHWC' for dask arrays (a batch); "
                         f"got {layout!r}.")
    return layout

