"""Spatial sampling: affine_grid and grid_sample with analytic, deterministic gradients.

Coordinate conventions follow PyTorch's ``F.affine_grid`` / ``F.grid_sample``.
A grid holds normalized points ``(x, y)`` in ``[-1, 1]``, ``x`` along the
width and ``y`` along the height. With ``align_corners=True``, -1 and 1 are
the *centres* of the first and last pixels (pixel ``i`` sits at
``-1 + 2 i / (W - 1)``); with ``align_corners=False`` they are the outer
*edges* of those pixels (pixel ``i`` sits at ``-1 + (2 i + 1) / W``).
"""
from __future__ import annotations

import math

import numpy as np

from . import _registry as registry
from ._config import threads_for
from ._dispatch import begin
from ._layout import from_channels_last, resolve as resolve_layout
from ._validate import (as_c_contiguous, check_dtype, check_option, check_out,
                        same_dtype, shape_str)

__all__ = ["affine_grid", "affine_grid_backward", "grid_sample", "grid_sample_backward"]

MODES = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection")
_MODE_CODE = {"nearest": 0, "bilinear": 1, "bicubic": 2}
_PAD_CODE = {"zeros": 0, "border": 1, "reflection": 2}


# --------------------------------------------------------------------------- helpers

def _check_bool(op, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool; got {type(value).__name__} {value!r}.")
    return bool(value)


def _check_size(op, size):
    try:
        dims = tuple(int(s) for s in size)
    except TypeError:
        raise TypeError(f"{op}: size must be a sequence (N, C, H, W); got {size!r}.") from None
    if len(dims) != 4 or any(d != s for d, s in zip(dims, size)):
        raise ValueError(f"{op}: size must be (N, C, H, W) of 4 ints; got {tuple(size)!r}.")
    if any(d < 0 for d in dims):
        raise ValueError(f"{op}: size must have all entries >= 0; got {shape_str(dims)}.")
    return dims


def base_coordinates(n: int, align_corners: bool, dtype) -> np.ndarray:
    """The normalized coordinates of ``n`` pixel centres (PyTorch's affine_grid base).

    ``linspace(-1, 1, n)``, scaled by ``(n - 1) / n`` when ``align_corners``
    is False; a single pixel sits at 0.
    """
    if n <= 1:
        return np.zeros(max(n, 0), dtype)
    step = 2.0 / (n - 1)
    i = np.arange(n, dtype=np.float64)
    half = n // 2
    # torch.linspace fills the first half from the start, the rest from the end
    vals = np.where(i < half, -1.0 + step * i, 1.0 - step * (n - 1 - i)).astype(dtype)
    if not align_corners:
        vals = (vals * dtype.type(n - 1) / dtype.type(n)).astype(dtype)
    return vals


def _layout_dims(op, x, lay):
    """(N, C, H, W) of the input in its resolved layout, with H, W >= 1.

    ``lay`` is a Layout, or a bool meaning a batched NHWC (True) / NCHW input.
    """
    if isinstance(lay, (bool, np.bool_)):
        lay = resolve_layout(op, "input", x, "NHWC" if lay else "NCHW")
    n, c, h, w = lay.split(x.shape)
    if h < 1 or w < 1:
        raise ValueError(f"{op}: input must have H >= 1 and W >= 1; got {shape_str(x.shape)}.")
    return n, c, h, w


def _batched_grid(op, grid, lay, n):
    """The grid as (N, H_out, W_out, 2): a single image takes an (H_out, W_out, 2) grid."""
    if not lay.batched:
        if len(grid.shape) != 3 or grid.shape[2] != 2:
            raise ValueError(f"{op}: grid must have shape (H_out, W_out, 2) for a single image "
                             f"(layout={lay.name!r}); got {shape_str(grid.shape)}.")
        return grid.reshape((1,) + tuple(grid.shape))
    return grid


def _check_grid(op, grid, n):
    if len(grid.shape) != 4 or grid.shape[3] != 2:
        raise ValueError(f"{op}: grid must have shape (N, H_out, W_out, 2); "
                         f"got {shape_str(grid.shape)}.")
    if grid.shape[0] != n:
        raise ValueError(f"{op}: grid must have the input's batch size N = {n}; "
                         f"got {shape_str(grid.shape)}.")
    return grid.shape[1], grid.shape[2]


def _check_options(op, mode, padding_mode, align_corners):
    check_option(op, "mode", mode, MODES)
    check_option(op, "padding_mode", padding_mode, PADDINGS)
    return _check_bool(op, "align_corners", align_corners)


# --------------------------------------------------------------------------- affine_grid

def _affine_grid_cpu(out, theta, H, W, align_corners):
    from ._cpu import sample as cpu
    cpu.affine_grid_fwd(out.reshape(-1), theta.reshape(-1), theta.shape[0], H, W,
                        align_corners, threads_for(out.size, 65536))


def _affine_grid_bwd_cpu(grad_theta, grad_grid, H, W, align_corners):
    from ._cpu import sample as cpu
    cpu.affine_grid_bwd(grad_theta.reshape(-1), grad_grid.reshape(-1), grad_theta.shape[0],
                        H, W, align_corners, threads_for(grad_grid.size, 65536))


registry.register_builtin("affine_grid", _affine_grid_cpu, "fastinterp._cuda.sample:affine_grid")
registry.register_builtin("affine_grid_backward", _affine_grid_bwd_cpu,
                          "fastinterp._cuda.sample:affine_grid_backward")


def affine_grid(theta, size, align_corners=False, out=None):
    """Sampling grid of a batch of 2-D affine maps (PyTorch's ``F.affine_grid``).

    Parameters
    ----------
    theta : array (N, 2, 3), float32 or float64
        Affine matrices acting on normalized output coordinates ``(x, y, 1)``.
    size : sequence of 4 ints
        The target output size ``(N, C, H, W)`` (C is not used).
    align_corners : bool
        Pixel-centre convention of the normalized coordinates (see Conventions).
    out : array (N, H, W, 2), optional
        Destination, C-contiguous, theta's dtype.

    Returns
    -------
    grid : array (N, H, W, 2)
        ``grid[n, i, j] = theta[n] @ (x_j, y_i, 1)`` where ``x_j`` / ``y_i`` are
        the normalized centres of output column j / row i.

    Conventions
    -----------
    ``align_corners=True``: ``x_j = -1 + 2 j / (W - 1)`` (centres of the corner
    pixels at -1 and 1). ``align_corners=False``: ``x_j = -1 + (2 j + 1) / W``
    (corner pixels' outer edges at -1 and 1). A size-1 axis sits at 0. Zero
    sizes give an empty grid.

    Precision: ``x_j`` and ``y_i`` are computed as PyTorch does (``linspace``
    from both ends, then scaled by ``(n - 1) / n``), rounded to theta's dtype;
    the three products are summed in float64 in the order above and rounded
    once, so each entry is within about ``1.5 u (|t0| + |t1| + |t2|)`` of the
    exact value (``t`` the row of theta, ``u`` = 2**-24 for float32, 2**-53
    for float64). PyTorch's result is not bit-reproducible across machines
    (its linspace and its batched matrix product depend on the CPU's vector
    width, the thread count for very wide grids, and the BLAS kernel), so the
    two agree to within ``8 u (|t0| + |t1| + |t2|)`` (measured: 3.6 u), not
    bit for bit. The result is the same on every thread count.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> theta = np.array([[[1.0, 0, 0], [0, 1, 0]]])
    >>> fi.affine_grid(theta, (1, 1, 2, 3), align_corners=True)[0, :, :, 0]
    array([[-1.,  0.,  1.],
           [-1.,  0.,  1.]])
    """
    op = "affine_grid"
    align = _check_bool(op, "align_corners", align_corners)
    N, _, H, W = _check_size(op, size)
    p = begin(op, theta=theta)
    th = p.arrays["theta"]
    dtype = same_dtype(op, theta=th)
    if tuple(th.shape) != (N, 2, 3):
        raise ValueError(f"{op}: theta must have shape (N, 2, 3) with N = size[0] = {N}; "
                         f"got {shape_str(th.shape)}.")
    if p.backend == "cpu":
        th = as_c_contiguous(th)
    shape = (N, H, W, 2)
    if out is not None:
        caller, out_k = p.adopt_out(out)
        check_out(op, out_k, shape, dtype, {"theta": th})
    else:
        caller, out_k = p.empty(shape, dtype)
    kernel = registry.lookup(op, p.backend, dtype)
    if p.backend == "cuda":
        kernel(out_k, p.contiguous(th), align, stream=p.stream)
    else:
        kernel(out_k, th, H, W, align)
    return p.wrap(caller)


def affine_grid_backward(grad_grid, size, align_corners=False):
    """Gradient of a loss with respect to ``theta`` of :func:`affine_grid`.

    Parameters
    ----------
    grad_grid : array (N, H, W, 2), float32 or float64
        Gradient with respect to the grid (e.g. from :func:`grid_sample_backward`).
    size : sequence of 4 ints
        The ``size`` given to affine_grid, ``(N, C, H, W)``.
    align_corners : bool
        As given to affine_grid.

    Returns
    -------
    grad_theta : array (N, 2, 3)
        ``sum_ij grad_grid[n, i, j, r] * (x_j, y_i, 1)[k]``, summed in float64
        in a fixed order (each row over j, then the rows in order; the same
        bits for any thread count), rounded once to grad_grid's dtype.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> g = np.ones((1, 2, 2, 2))
    >>> fi.affine_grid_backward(g, (1, 1, 2, 2), align_corners=True)
    array([[[0., 0., 4.],
            [0., 0., 4.]]])
    """
    op = "affine_grid_backward"
    align = _check_bool(op, "align_corners", align_corners)
    N, _, H, W = _check_size(op, size)
    p = begin(op, grad_grid=grad_grid)
    g = p.arrays["grad_grid"]
    dtype = same_dtype(op, grad_grid=g)
    if tuple(g.shape) != (N, H, W, 2):
        raise ValueError(f"{op}: grad_grid must have shape (N, H, W, 2) = "
                         f"{shape_str((N, H, W, 2))} from size; got {shape_str(g.shape)}.")
    if p.backend == "cpu":
        g = as_c_contiguous(g)
    caller, out_k = p.empty((N, 2, 3), dtype)
    kernel = registry.lookup(op, p.backend, dtype)
    if p.backend == "cuda":
        kernel(out_k, p.contiguous(g), align, stream=p.stream)
    else:
        kernel(out_k, g, H, W, align)
    return p.wrap(caller)


# --------------------------------------------------------------------------- grid_sample

def _grid_sample_cpu(out, x, grid, dims, mode, padding, align_corners, channels_last):
    from ._cpu import sample as cpu
    N, C, H, W, Ho, Wo = dims
    cpu.grid_sample_fwd(out.reshape(-1), x.reshape(-1), grid.reshape(-1), N, C, H, W, Ho, Wo,
                        channels_last, _MODE_CODE[mode], _PAD_CODE[padding], align_corners,
                        threads_for(N * C * Ho * Wo, 16384))


def _grid_sample_bwd_cpu(grad_input, grad_grid, grad_output, x, grid, dims, mode, padding,
                         align_corners, channels_last, deterministic):
    from ._cpu import sample as cpu
    N, C, H, W, Ho, Wo = dims
    dummy = np.zeros(1, x.dtype)
    gi = grad_input.reshape(-1) if grad_input is not None else dummy
    gg = grad_grid.reshape(-1) if grad_grid is not None else dummy
    cpu.grid_sample_bwd(gi, gg, grad_output.reshape(-1), x.reshape(-1), grid.reshape(-1),
                        N, C, H, W, Ho, Wo, channels_last, _MODE_CODE[mode], _PAD_CODE[padding],
                        align_corners, grad_input is not None, grad_grid is not None,
                        threads_for(N * C * Ho * Wo, 16384))


registry.register_builtin("grid_sample", _grid_sample_cpu, "fastinterp._cuda.sample:grid_sample")
registry.register_builtin("grid_sample_backward", _grid_sample_bwd_cpu,
                          "fastinterp._cuda.sample:grid_sample_backward")


def _prepare(op, p, names, channels_last, uint8_input=False):
    """The named arrays (C-contiguous on the CPU) and their dtype.

    ``uint8_input``: a uint8 ``input`` is allowed (grid_sample's forward);
    its grid must then be float32 or float64, and the dtype returned is uint8.
    """
    arrays = {k: p.arrays[k] for k in names}
    for k, v in arrays.items():
        if not hasattr(v, "shape"):
            raise TypeError(f"{op}: {k} must be an array; got {type(v).__name__}.")
    x = arrays.get("input")
    if uint8_input and x is not None and np.dtype(x.dtype) == np.uint8:
        if p.backend != "cpu":
            raise TypeError(f"{op}: uint8 input runs on the CPU; got a {p.backend.upper()} array.")
        dtype = np.dtype(np.uint8)
        check_dtype(op, "grid", arrays["grid"], (np.float32, np.float64))
    else:
        dtype = same_dtype(op, **arrays)
    if p.backend == "cuda" and channels_last:
        raise ValueError(f"{op}: layout must be 'NCHW' (or 'CHW'/'HW') for CUDA arrays; "
                         f"got a channels-last layout.")
    if p.backend == "cpu":
        arrays = {k: as_c_contiguous(v) for k, v in arrays.items()}
    return tuple(arrays.values()), dtype


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False,
                out=None, channels_last=None, *, layout=None):
    """Sample ``input`` at the points of ``grid`` (PyTorch's ``F.grid_sample``, 2-D).

    Parameters
    ----------
    input : array (N, C, H, W), float32, float64 or uint8 (CPU)
        The images in ``layout``: a batch, or one image (H, W), (H, W, C),
        (C, H, W) (then ``grid`` is (H_out, W_out, 2)).
    grid : array (N, H_out, W_out, 2), input's dtype
        Normalized sampling points ``(x, y)``: x along W, y along H, [-1, 1]
        spanning the image (see Conventions); values outside are padded.
        For a uint8 input: float32 or float64.
    mode : {'bilinear', 'nearest', 'bicubic'}
        Interpolation. ``nearest`` rounds half to even (like PyTorch);
        ``bicubic`` is Keys' cubic convolution with A = -0.75.
    padding_mode : {'zeros', 'border', 'reflection'}
        Values outside the image: 0, the nearest border pixel, or the image
        mirrored at its borders (period 2 H / 2 W, as PyTorch).
    align_corners : bool
        False: -1 and 1 are the outer edges of the corner pixels; True: their
        centres.
    out : array, optional
        Destination of the output's shape and dtype, C-contiguous.
    channels_last : bool, optional
        Deprecated (FutureWarning): ``True`` is ``layout="NHWC"``.
    layout : {None, 'NCHW', 'NHWC', 'CHW', 'HWC', 'HW'}
        The axes of ``input`` and of the result, as in :func:`resize`: None
        reads 4-D as 'NCHW' and 2-D as 'HW'; a 3-D input needs 'CHW' or
        'HWC'. Channels-last layouts run on the CPU only.

    Returns
    -------
    array (N, C, H_out, W_out) in ``layout`` (one image: no N), input's dtype.

    Conventions
    -----------
    A grid value g maps to the pixel coordinate ``((g + 1) / 2) * (W - 1)``
    (align_corners=True) or ``((g + 1) * W - 1) / 2`` (False), where pixel i's
    centre is at i. OpenCV's ``remap`` and PIL use pixel coordinates with
    pixel i's centre at i too, so ``map_x = ((g + 1) * W - 1) / 2`` gives
    ``cv2.remap`` the points of an align_corners=False grid.

    Non-finite grid values, as PyTorch's CPU kernels: a NaN or infinite point
    with ``padding_mode='zeros'`` gives NaN for bilinear and bicubic and 0 for
    nearest; with 'border' and 'reflection' (bilinear, nearest) a NaN
    coordinate is clipped to pixel 0 and an infinite one to the border
    (reflection: to pixel 0); bicubic gives NaN there. No memory outside the
    input is ever read. Points far outside (any finite value) are exact.
    Non-contiguous inputs are copied once.

    uint8 input: sampled in float32 (the grid is used as float32) and each
    output rounded half to even and saturated to [0, 255]; the image is
    converted to a float32 copy once (4 bytes per value).

    Memory: besides its output, a call allocates only a tap table per thread
    for a tile of 1,024 output pixels (about 150 KB in float32, 280 KB in
    float64), whatever the output size; if even that fails, MemoryError is
    raised and nothing is written.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> x = np.arange(4.0).reshape(1, 1, 2, 2)
    >>> grid = np.array([[[[0.0, 0.0], [-1.0, -1.0]]]])  # image centre, top-left corner
    >>> fi.grid_sample(x, grid, align_corners=True)
    array([[[[1.5, 0. ]]]])
    """
    op = "grid_sample"
    align = _check_options(op, mode, padding_mode, align_corners)
    layout = from_channels_last(op, layout, channels_last)
    p = begin(op, input=input, grid=grid)
    lay = resolve_layout(op, "input", p.arrays["input"], layout)
    (x, g), dtype = _prepare(op, p, ("input", "grid"), lay.nhwc, uint8_input=True)
    N, C, H, W = _layout_dims(op, x, lay)
    g = _batched_grid(op, g, lay, N)
    Ho, Wo = _check_grid(op, g, N)
    shape = lay.join(N, C, Ho, Wo)
    if out is not None:
        caller, out_k = p.adopt_out(out)
        check_out(op, out_k, shape, dtype, {"input": x, "grid": g})
    else:
        caller, out_k = p.empty(shape, dtype)
    if math.prod(shape) == 0:
        return p.wrap(caller)
    x, out_k = lay.as_batched(x), lay.as_batched(out_k)
    if dtype == np.uint8:
        _grid_sample_uint8(out_k, x, g, (N, C, H, W, Ho, Wo), mode, padding_mode, align, lay.nhwc)
        return p.wrap(caller)
    kernel = registry.lookup(op, p.backend, dtype)
    dims = (N, C, H, W, Ho, Wo)
    if p.backend == "cuda":
        kernel(out_k, p.contiguous(x), p.contiguous(g), _MODE_CODE[mode], _PAD_CODE[padding_mode],
               align, stream=p.stream)
    else:
        kernel(out_k, x, g, dims, mode, padding_mode, align, lay.nhwc)
    return p.wrap(caller)


def _grid_sample_uint8(out, x, grid, dims, mode, padding, align, nhwc):
    """grid_sample of a uint8 image: float32 sampling, rounded half to even, saturated."""
    kernel = registry.lookup("grid_sample", "cpu", np.float32)
    res = np.empty(out.shape, np.float32)
    kernel(res, x.astype(np.float32), np.ascontiguousarray(grid, dtype=np.float32), dims, mode,
           padding, align, nhwc)
    np.rint(res, out=res)
    np.clip(res, 0, 255, out=res)
    out[...] = res


def grid_sample_backward(grad_output, input, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False, needs_input_grad=True, needs_grid_grad=True,
                         channels_last=None, deterministic=True, *, layout=None):
    """Gradients of :func:`grid_sample` with respect to ``input`` and ``grid``.

    Parameters
    ----------
    grad_output : array, the shape of grid_sample's output
        Gradient of the loss with respect to the sampled output.
    input, grid, mode, padding_mode, align_corners, layout, channels_last
        As given to :func:`grid_sample` (float32 or float64 only).
    needs_input_grad, needs_grid_grad : bool
        Which gradients to compute; a skipped one is returned as None.
    deterministic : bool
        CUDA only (the CPU backward is always deterministic): True accumulates
        grad_input in 64-bit fixed point with integer atomics, so results are
        bit-identical run to run; False uses float atomics (faster, order
        dependent, like PyTorch's CUDA backward).

    Returns
    -------
    (grad_input, grad_grid)
        ``grad_input`` has input's shape, ``grad_grid`` grid's shape (zero for
        ``mode='nearest'``, which is piecewise constant).

    Conventions
    -----------
    Analytic derivatives of the forward, PyTorch's conventions included: at a
    clipped coordinate (border/reflection padding) the grid gradient is 0, with
    points exactly on the border counting as clipped; bicubic pads each tap
    separately, so its grid gradient ignores padding. On the CPU, each image
    (or image and channel block) belongs to one thread, and every grad_input
    element receives its additions in one fixed order: results are
    bit-identical for any thread count.

    Non-finite grid values: the backward differentiates exactly what the
    forward computed there (see :func:`grid_sample`).

    - 'border' / 'reflection', bilinear and nearest: the forward clips a NaN
      coordinate to pixel 0 and an infinite one to the border ('border') or
      to pixel 0 ('reflection') and reads the pixels there; grad_input
      receives grad_output at those pixels with the forward's weights
      (``grad_input = A^T grad_output`` for the forward's matrix A), and that
      coordinate's grid gradient is 0 (clipped).
    - bicubic with 'border' / 'reflection': the forward's weights are NaN
      (so is its output); the pixels its clipped taps hit receive NaN in
      grad_input, and grad_grid is NaN.
    - 'zeros': the forward reads no pixel (output NaN for bilinear and
      bicubic, 0 for nearest); nothing is added to grad_input and grad_grid
      is NaN (bilinear, bicubic) or 0 (nearest).

    PyTorch's own backward (2.13, CPU) is not usable as a reference there: it
    indexes with the integer conversion of NaN and can crash.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> x = np.arange(4.0).reshape(1, 1, 2, 2)
    >>> grid = np.array([[[[0.0, 0.0]]]])
    >>> gi, gg = fi.grid_sample_backward(np.ones((1, 1, 1, 1)), x, grid, align_corners=True)
    >>> gi
    array([[[[0.25, 0.25],
             [0.25, 0.25]]]])
    >>> gg
    array([[[[0.5, 1. ]]]])
    """
    op = "grid_sample_backward"
    align = _check_options(op, mode, padding_mode, align_corners)
    layout = from_channels_last(op, layout, channels_last)
    need_in = _check_bool(op, "needs_input_grad", needs_input_grad)
    need_grid = _check_bool(op, "needs_grid_grad", needs_grid_grad)
    det = _check_bool(op, "deterministic", deterministic)
    p = begin(op, grad_output=grad_output, input=input, grid=grid)
    lay = resolve_layout(op, "input", p.arrays["input"], layout)
    cl = lay.nhwc
    (go, x, g), dtype = _prepare(op, p, ("grad_output", "input", "grid"), cl)
    N, C, H, W = _layout_dims(op, x, lay)
    g_user = g
    g = _batched_grid(op, g, lay, N)
    Ho, Wo = _check_grid(op, g, N)
    shape = lay.join(N, C, Ho, Wo)
    if tuple(go.shape) != shape:
        raise ValueError(f"{op}: grad_output must have grid_sample's output shape "
                         f"{shape_str(shape)}; got {shape_str(go.shape)}.")
    go, x = lay.as_batched(go), lay.as_batched(x)
    gi_caller = gi_k = gg_caller = gg_k = None
    if need_in and p.backend == "cpu":
        gi_caller = _staggered_empty(lay.join(N, C, H, W), dtype, x)
        gi_k = lay.as_batched(gi_caller)
    elif need_in:
        gi_caller, gi_k = p.empty(lay.join(N, C, H, W), dtype)
        gi_k = lay.as_batched(gi_k)
    if need_grid:
        gg_caller, gg_k = p.empty(tuple(g_user.shape), dtype)
        gg_k = gg_k.reshape(tuple(g.shape))
    kernel = registry.lookup(op, p.backend, dtype)
    if need_in or need_grid:     # the kernels zero the gradients of an empty output
        if p.backend == "cuda":
            go, x, g = (p.contiguous(a) for a in (go, x, g))   # copied once if strided
            kernel(gi_k, gg_k, go, x, g, _MODE_CODE[mode], _PAD_CODE[padding_mode], align,
                   deterministic=det, stream=p.stream)
        else:
            kernel(gi_k, gg_k, go, x, g, (N, C, H, W, Ho, Wo), mode, padding_mode, align,
                   cl, det)
    wrap = (lambda a: None if a is None else p.wrap(a))
    return wrap(gi_caller), wrap(gg_caller)


def _staggered_empty(shape, dtype, other):
    """A C-contiguous array whose address is half a 4 KiB page away from ``other``'s
    (mod 4096). The backward adds into grad_input at the offsets it reads input
    from; were the two addresses equal mod 4096, every load would wait on the
    stores (4K aliasing), costing ~2x."""
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    buf = np.empty(n + 4096 // dtype.itemsize, dtype)
    target = (other.ctypes.data + 2048) % 4096
    skip = ((target - buf.ctypes.data) % 4096) // dtype.itemsize
    return buf[skip:skip + n].reshape(shape)
