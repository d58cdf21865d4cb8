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
from typing import Any, Literal, overload

import numpy as np

from . import _memory, _plans, _registry as registry
from ._config import threads_for
from ._dispatch import begin, holds_numbers, public_call, to_host, unreadable_error
from ._layout import from_channels_last, resolve as resolve_layout
from ._typing import Array, Fill, Flag, ImageLayout, NumPyLike, PaddingMode, SampleMode, Sizes
from ._validate import (as_c_contiguous, check_array, check_bool, check_dtype, check_ndim,
                        check_uint8_on_cpu,
                        check_option, check_out, float_dtype, int_sizes, real_float, real_scalar,
                        is_real_scalar, same_dtype, shape_str, shown, symbolic)

__all__ = ["affine_grid", "affine_grid_backward", "grid_sample", "grid_sample_backward"]

MODES = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection", "constant", "wrap")
_MODE_CODE = {"nearest": 0, "bilinear": 1, "bicubic": 2}
_PAD_CODE = {"zeros": 0, "border": 1, "reflection": 2}     # the C ABI's FI_PAD_* codes
# The CPU kernels' codes: wrap is 3; 'constant' runs the 'zeros' kernels and adds fill
# times the weight that fell outside.
_KERNEL_PAD = {**_PAD_CODE, "wrap": 3, "constant": 0}
_CPU_ONLY_PADDINGS = ("constant", "wrap")


# --------------------------------------------------------------------------- helpers

def _check_size(op, size):
    """(N, C, H, W) or (N, C, D, H, W) as a tuple of ints >= 0."""
    return int_sizes(op, "size", size, "(N, C, H, W) or (N, C, D, H, W)", (4, 5))


def base_coordinates(n: int, align_corners: bool, dtype: np.dtype[Any], start: int = 0,
                     stop: int | None = None) -> np.ndarray:
    """The normalized coordinates of ``n`` pixel centres (PyTorch's affine_grid base), or
    of pixels [start, stop) of them (each value as in the whole array).

    ``linspace(-1, 1, n)``, scaled by ``(n - 1) / n`` when ``align_corners``
    is False; a single pixel sits at 0.
    """
    stop = n if stop is None else min(stop, n)
    if n <= 1:
        return np.zeros(max(stop - start, 0), dtype)
    step = 2.0 / (n - 1)
    i = np.arange(start, stop, dtype=np.float64)
    half = n // 2
    # torch.linspace fills the first half from the start, the rest from the end
    vals = np.where(i < half, -1.0 + step * i, 1.0 - step * (n - 1 - i)).astype(dtype)
    if not align_corners:
        vals = (vals * dtype.type(n - 1) / dtype.type(n)).astype(dtype)
    return vals


def _layout_dims(op, x, lay, name="input"):
    """(N, C, H, W) of the image argument ``name`` in its resolved layout, with H, W >= 1.

    ``lay`` is a Layout, or a bool meaning a batched NHWC (True) / NCHW input.
    """
    if isinstance(lay, (bool, np.bool_)):
        lay = resolve_layout(op, name, x, "NHWC" if lay else "NCHW")
    n, c, h, w = lay.split(x.shape)
    if h < 1 or w < 1:
        raise ValueError(f"{op}: {name} must have H >= 1 and W >= 1; got {shape_str(x.shape)}.")
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
    check_grid_batch(op, grid, n)
    return grid.shape[1], grid.shape[2]


def check_grid_batch(op, grid, n):
    """The grid (of images or volumes) must have the input's batch size ``n``."""
    if grid.shape[0] != n:
        raise ValueError(f"{op}: grid must have the input's batch size N = {n}; "
                         f"got {shape_str(grid.shape)}.")


def check_align_corners(op: str, align_corners: object) -> bool:
    """grid_sample's and affine_grid's ``align_corners``: a bool, or None for False (torch's
    default, which its functional ops take as None)."""
    return False if align_corners is None else check_bool(op, "align_corners", align_corners)


def _check_options(op, mode, padding_mode, align_corners):
    check_option(op, "mode", mode, MODES)
    check_option(op, "padding_mode", padding_mode, PADDINGS)
    return check_align_corners(op, align_corners)


# --------------------------------------------------------------------------- affine_grid

def _affine_grid_cpu(out, theta, H, W, align_corners, D=None):
    """Registry kernel (CPU): 2-D grids, or volume grids when the depth D is given."""
    if D is not None:
        return _affine_grid_3d_cpu(out, theta, _bases_3d((0, 0, D, H, W), align_corners,
                                                         out.dtype))
    from ._cpu import sample as cpu
    cpu.affine_grid_fwd(out.reshape(-1), theta.reshape(-1), theta.shape[0], H, W,
                        align_corners, threads_for(out.size, 65536))


def _affine_grid_bwd_cpu(grad_theta, grad_grid, H, W, align_corners, D=None):
    """Registry kernel (CPU): 2-D grids, or volume grids when the depth D is given.

    float64 sums of products near the largest double can overflow on the way to a
    finite result (inf + -inf = NaN where the exact sum is 0): an entry that came out
    non-finite from a finite gradient component is summed again scaled by a power of
    two that no partial sum can overflow, then scaled back (exact, unless a product
    underflows there: below the largest terms' rounding), as the CUDA kernel does."""
    _affine_grid_bwd_raw(grad_theta, grad_grid, H, W, align_corners, D)
    if grad_theta.dtype != np.float64 or np.isfinite(grad_theta).all():
        return
    redo = np.flatnonzero(~np.isfinite(grad_theta).all(axis=(1, 2)))
    shift = math.ceil(math.log2(max(grad_grid[0].size, 1))) + 2   # terms |g * coordinate|
    part = np.empty((len(redo),) + grad_theta.shape[1:])          # <= |g|, < 2**1024
    _affine_grid_bwd_raw(part, np.ldexp(grad_grid[redo], -shift), H, W, align_corners, D)
    # the entries that came out non-finite from a finite gradient component
    nd = grad_grid.shape[-1]
    finite = np.isfinite(grad_grid[redo]).reshape(len(redo), -1, nd).all(axis=1)
    take = ~np.isfinite(grad_theta[redo]) & finite[:, :, None]
    with np.errstate(over="ignore"):
        grad_theta[redo] = np.where(take, np.ldexp(part, shift), grad_theta[redo])


def _affine_grid_bwd_raw(grad_theta, grad_grid, H, W, align_corners, D):
    if D is not None:
        return _affine_grid_3d_bwd_cpu(grad_theta, grad_grid,
                                       _bases_3d((0, 0, D, H, W), align_corners,
                                                 grad_theta.dtype))
    from ._cpu import sample as cpu
    cpu.affine_grid_bwd(grad_theta.reshape(-1), grad_grid.reshape(-1), grad_theta.shape[0],
                        H, W, align_corners, threads_for(grad_grid.size, 65536))


registry.register_builtin("affine_grid", _affine_grid_cpu, "fastinterp._cuda.sample:affine_grid")
registry.register_builtin("affine_grid_backward", _affine_grid_bwd_cpu,
                          "fastinterp._cuda.sample:affine_grid_backward")


@overload
def affine_grid(theta: NumPyLike, size: Sizes, align_corners: Flag | None = False,
                out: Array | None = None) -> Array: ...
@overload
def affine_grid(theta: Any, size: Sizes, align_corners: Flag | None = False,
                out: Any = None) -> Any: ...
@public_call
def affine_grid(theta: Any, size: Sizes, align_corners: Flag | None = False,
                out: Any = None) -> Any:
    """Sampling grid of a batch of 2-D or 3-D affine maps (PyTorch's ``F.affine_grid``).

    Parameters
    ----------
    theta : array (N, 2, 3) or (N, 3, 4), float32 or float64 (or float16/bfloat16,
        computed in float32)
        Affine matrices acting on normalized output coordinates ``(x, y, 1)``
        (or ``(x, y, z, 1)`` for volumes).
    size : sequence of 4 or 5 ints
        The target output size ``(N, C, H, W)`` or ``(N, C, D, H, W)`` (C is
        not used). A 5-entry size makes a volume grid (N, D, H, W, 3)
        (NumPy / CPU arrays only).
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
    align = check_align_corners(op, align_corners)
    dims = _check_size(op, size)
    if len(dims) == 5:
        return _affine_grid_3d(op, theta, dims, align, out)
    N, _, H, W = dims
    p = begin(op, theta=theta)
    th = p.arrays["theta"]
    dtype = same_dtype(op, theta=th)
    if tuple(th.shape) != (N, 2, 3):
        raise ValueError(f"{op}: theta must have shape (N, 2, 3) with N = size[0] = {N}; "
                         f"got {shape_str(th.shape)}.")
    shape = (N, H, W, 2)
    if out is not None:
        caller, out_k = p.adopt_out(out)
        check_out(op, out_k, shape, dtype, {"theta": th})
    else:
        caller, out_k = p.empty(shape, dtype)
    if math.prod(shape) == 0:
        return p.wrap(caller)
    if p.backend == "cpu":
        th = as_c_contiguous(th)
    kernel = registry.lookup(op, p.backend, dtype)
    if p.backend == "cuda":
        kernel(out_k, p.contiguous(th), align, stream=p.stream)
    else:
        kernel(out_k, th, H, W, align)
    return p.wrap(caller)


@overload
def affine_grid_backward(grad_grid: NumPyLike, size: Sizes,
                         align_corners: Flag | None = False) -> Array: ...
@overload
def affine_grid_backward(grad_grid: Any, size: Sizes,
                         align_corners: Flag | None = False) -> Any: ...
@public_call
def affine_grid_backward(grad_grid: Any, size: Sizes,
                         align_corners: Flag | None = False) -> Any:
    """Gradient of a loss with respect to ``theta`` of :func:`affine_grid`.

    Parameters
    ----------
    grad_grid : array (N, H, W, 2) or (N, D, H, W, 3), float32 or float64 (or float16/bfloat16)
        Gradient with respect to the grid (e.g. from :func:`grid_sample_backward`).
    size : sequence of 4 or 5 ints
        The ``size`` given to affine_grid, ``(N, C, H, W)`` or ``(N, C, D, H, W)``.
    align_corners : bool
        As given to affine_grid.

    Returns
    -------
    grad_theta : array (N, 2, 3) (or (N, 3, 4) for volumes)
        ``sum_ij grad_grid[n, i, j, r] * (x_j, y_i, 1)[k]`` (volumes: over
        ``(x, y, z, 1)``), summed in float64
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
    align = check_align_corners(op, align_corners)
    dims = _check_size(op, size)
    if len(dims) == 5:
        return _affine_grid_3d_backward(op, grad_grid, dims, align)
    N, _, H, W = dims
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


def _volume_cpu_only(op, p):
    """Volumes run on the CPU kernels only: a clear TypeError for CUDA arrays."""
    if p.backend != "cpu":
        raise TypeError(f"{op}: 5-D (volume) data is supported for CPU arrays (NumPy, "
                        f"DLPack CPU tensors) only; got a {p.backend} array.")


def _bases_3d(dims, align, dtype):
    """The base coordinates (x over W, y over H, z over D) of a volume grid."""
    _, _, D, H, W = dims
    return [base_coordinates(n, align, np.dtype(dtype)) for n in (W, H, D)]


def _affine_grid_3d_cpu(out, theta, bases):
    from ._cpu import sample3d as cpu
    cpu.affine_grid3d_fwd(out.reshape(-1), theta.reshape(-1), *bases, theta.shape[0],
                          threads_for(out.size, 65536))


def _affine_grid_3d_bwd_cpu(grad_theta, grad_grid, bases):
    from ._cpu import sample3d as cpu
    cpu.affine_grid3d_bwd(grad_theta.reshape(-1), grad_grid.reshape(-1), *bases,
                          grad_theta.shape[0], threads_for(grad_grid.size, 65536))




def _affine_grid_3d(op, theta, dims, align, out):
    """affine_grid for a volume size (N, C, D, H, W): theta (N, 3, 4) -> (N, D, H, W, 3)."""
    N, _, D, H, W = dims
    p = begin(op, theta=theta)
    th = p.arrays["theta"]
    dtype = same_dtype(op, theta=th)
    if tuple(th.shape) != (N, 3, 4):
        raise ValueError(f"{op}: theta must have shape (N, 3, 4) with N = size[0] = {N} for "
                         f"a 5-D size; got {shape_str(th.shape)}.")
    _volume_cpu_only(op, p)
    shape = (N, D, H, W, 3)
    if out is not None:
        caller, out_k = p.adopt_out(out)
        check_out(op, out_k, shape, dtype, {"theta": th})
    else:
        caller, out_k = p.empty(shape, dtype)
    if math.prod(shape) == 0:
        return p.wrap(caller)
    registry.lookup(op, p.backend, dtype)(out_k, as_c_contiguous(th), H, W, align, D=D)
    return p.wrap(caller)


def _affine_grid_3d_backward(op, grad_grid, dims, align):
    """affine_grid_backward for a volume size: grad_grid (N, D, H, W, 3) -> (N, 3, 4)."""
    N, _, D, H, W = dims
    p = begin(op, grad_grid=grad_grid)
    g = p.arrays["grad_grid"]
    dtype = same_dtype(op, grad_grid=g)
    if tuple(g.shape) != (N, D, H, W, 3):
        raise ValueError(f"{op}: grad_grid must have shape (N, D, H, W, 3) = "
                         f"{shape_str((N, D, H, W, 3))} from size; got {shape_str(g.shape)}.")
    _volume_cpu_only(op, p)
    g = as_c_contiguous(g)
    caller, out_k = p.empty((N, 3, 4), dtype)
    registry.lookup(op, p.backend, dtype)(out_k, g, H, W, align, D=D)
    return p.wrap(caller)


# --------------------------------------------------------------------------- grid_sample

def _grid_sample_cpu(out, x, grid, dims, mode, padding, align_corners, channels_last):
    """Registry kernel (CPU): images (dims N, C, H, W, H_out, W_out) or volumes (dims
    N, C, D, H, W, D_out, H_out, W_out: the kernels of sample3d)."""
    if len(dims) == 8:
        return _grid_sample_3d_cpu(out, x, grid, dims, mode, padding, align_corners)
    from ._cpu import sample as cpu
    N, C, H, W, Ho, Wo = dims
    cpu.grid_sample_fwd(out.reshape(-1), x.reshape(-1), grid.reshape(-1), N, C, H, W, Ho, Wo,
                        channels_last, _MODE_CODE[mode], _KERNEL_PAD[padding], align_corners,
                        threads_for(N * C * Ho * Wo, 16384))


def _grid_sample_bwd_cpu(grad_input, grad_grid, grad_output, x, grid, dims, mode, padding,
                         align_corners, channels_last, deterministic):
    """Registry kernel (CPU): images or volumes, as _grid_sample_cpu."""
    if len(dims) == 8:
        return _grid_sample_3d_bwd_cpu(grad_input, grad_grid, grad_output, x, grid, dims,
                                       mode, padding, align_corners)
    from ._cpu import sample as cpu
    N, C, H, W, Ho, Wo = dims
    dummy = np.zeros(1, x.dtype)
    gi = grad_input.reshape(-1) if grad_input is not None else dummy
    gg = grad_grid.reshape(-1) if grad_grid is not None else dummy
    cpu.grid_sample_bwd(gi, gg, grad_output.reshape(-1), x.reshape(-1), grid.reshape(-1),
                        N, C, H, W, Ho, Wo, channels_last, _MODE_CODE[mode],
                        _KERNEL_PAD[padding], align_corners, grad_input is not None,
                        grad_grid is not None,
                        threads_for(N * C * Ho * Wo, 16384))


def _grid_sample_3d_cpu(out, x, grid, dims, mode, padding, align_corners):
    from ._cpu import sample3d as cpu
    N, C = dims[:2]
    cpu.grid_sample3d_fwd(out.reshape(-1), x.reshape(-1), grid.reshape(-1), dims,
                          _MODE_CODE[mode], _KERNEL_PAD[padding], align_corners,
                          threads_for(N * C * math.prod(dims[5:]), 16384))


def _grid_sample_3d_bwd_cpu(grad_input, grad_grid, grad_output, x, grid, dims, mode, padding,
                            align_corners):
    from ._cpu import sample3d as cpu
    N, C = dims[:2]
    dummy = np.zeros(1, x.dtype)
    gi = grad_input.reshape(-1) if grad_input is not None else dummy
    gg = grad_grid.reshape(-1) if grad_grid is not None else dummy
    cpu.grid_sample3d_bwd(gi, gg, grad_output.reshape(-1), x.reshape(-1), grid.reshape(-1),
                          dims, _MODE_CODE[mode], _KERNEL_PAD[padding], align_corners,
                          grad_input is not None, grad_grid is not None,
                          threads_for(N * C * math.prod(dims[5:]), 16384))


registry.register_builtin("grid_sample", _grid_sample_cpu, "fastinterp._cuda.sample:grid_sample")
registry.register_builtin("grid_sample_backward", _grid_sample_bwd_cpu,
                          "fastinterp._cuda.sample:grid_sample_backward")


def _prepare(op, p, names, channels_last, uint8_input=False):
    """The named arrays (as given: :func:`_host_contiguous` copies them once the
    shapes are checked) and their dtype.

    ``uint8_input``: a uint8 ``input`` is allowed (grid_sample's forward);
    its grid must then be float32 or float64, and the dtype returned is uint8.
    """
    arrays = {k: p.arrays[k] for k in names}
    for k, v in arrays.items():
        check_array(op, k, v)
    x = arrays.get("input")
    if uint8_input and x is not None and np.dtype(x.dtype) == np.uint8:
        check_uint8_on_cpu(op, x.dtype, p.backend)
        dtype = np.dtype(np.uint8)
        check_dtype(op, "grid", arrays["grid"], (np.float32, np.float64))
    else:
        if uint8_input and x is not None:
            float_dtype(op, "input", x, uint8=True)       # names uint8 in the error
        dtype = same_dtype(op, p.storage, **arrays)
    check_device_options(op, p.backend, channels_last=channels_last)
    return tuple(arrays.values()), dtype


def check_device_options(op, backend, channels_last=False, padding_mode=None):
    """What the CUDA sampler does not take: a channels-last layout, the CPU-only paddings
    (``op`` names the caller: grid_sample, its backward or a warp)."""
    if backend == "cpu":
        return
    if channels_last:
        raise ValueError(f"{op}: layout must be 'NCHW' (or 'CHW'/'HW') for CUDA arrays; "
                         f"got a channels-last layout.")
    if padding_mode in _CPU_ONLY_PADDINGS:
        raise ValueError(f"{op}: padding_mode={padding_mode!r} is supported for CPU "
                         f"arrays only; got a {backend} array.")


def _host_contiguous(p, *arrays):
    """The arrays C-contiguous on the CPU (a strided one copied once), as they are on
    a device (whose kernels take strided arrays through ``p.contiguous``)."""
    if p.backend != "cpu":
        return arrays
    return tuple(as_c_contiguous(a) for a in arrays)


class _Geometry:
    """One grid_sample call's sizes: ``dims`` for the kernel (6 entries for images, 8 for
    volumes), the output shape and the spatial input/output extents."""

    dims: tuple[int, ...]
    shape: tuple[int, ...]
    spatial_in: tuple[int, ...]
    spatial_out: tuple[int, ...]

    def __init__(self, op, p, x, g, channels_last, padding_mode):
        check_ndim(op, "input", x, (4, 5), "(N, H, W, C)" if channels_last
                   else "(N, C, H, W) or (N, C, D, H, W)")
        check_device_options(op, p.backend, padding_mode=padding_mode)
        self.volume = len(x.shape) == 5
        if not self.volume:
            N, C, H, W = _layout_dims(op, x, channels_last)
            Ho, Wo = _check_grid(op, g, N)
            self.dims = (N, C, H, W, Ho, Wo)
            self.shape = (N, Ho, Wo, C) if channels_last else (N, C, Ho, Wo)
            self.spatial_in, self.spatial_out = (H, W), (Ho, Wo)
            return
        if channels_last:
            raise ValueError(f"{op}: channels_last must be False for 5-D (volume) input "
                             f"(NCDHW only); got True.")
        _volume_cpu_only(op, p)
        N, C, D, H, W = x.shape
        if D < 1 or H < 1 or W < 1:
            raise ValueError(f"{op}: input must have D, H, W >= 1; got {shape_str(x.shape)}.")
        if len(g.shape) != 5 or g.shape[4] != 3:
            raise ValueError(f"{op}: grid must have shape (N, D_out, H_out, W_out, 3) for 5-D "
                             f"input; got {shape_str(g.shape)}.")
        check_grid_batch(op, g, N)
        Do, Ho, Wo = g.shape[1:4]
        self.dims = (N, C, D, H, W, Do, Ho, Wo)
        self.shape = (N, C, Do, Ho, Wo)
        self.spatial_in, self.spatial_out = (D, H, W), (Do, Ho, Wo)

    def ones_dims(self):
        """dims of the same call on one channel (the outside-weight pass of 'constant')."""
        return (self.dims[0], 1) + self.dims[2:]


def _is_scalar(value):
    """Whether ``value`` has no axes (a ragged nest of lists has some; so has any list or
    tuple, even one NumPy cannot read)."""
    if isinstance(value, (list, tuple)):
        return False
    try:
        return np.ndim(value) == 0
    except ValueError:
        return False


def _fill_sequence(op, fill, count=""):
    """A per-channel ``fill`` as a float64 array: a TypeError for non-reals, a ValueError
    for numbers beyond float64 (as :func:`real_scalar` gives for a scalar fill)."""
    fill = to_host(op, "fill", fill)
    try:
        held = np.asarray(fill)             # None would read as NaN, a string as its digits,
        if not holds_numbers(held) or held.dtype.kind == "c":   # a complex as its real part
            raise TypeError
        return held.astype(np.float64)
    except OverflowError:
        raise ValueError(f"{op}: fill must be representable in float64; got an int beyond "
                         f"it in {type(fill).__name__} fill.") from None
    except RuntimeError as exc:             # a list holding tensors that require grad
        raise unreadable_error(op, "fill", fill, exc) from None
    except (TypeError, ValueError):
        raise TypeError(f"{op}: fill must be a real number or a sequence of {count}"
                        f"reals; got {fill!r}.") from None


def static_fill(op, fill):
    """``fill`` as plain Python floats, for frontends that pass it as a static argument:
    None, one float (a scalar, which the NumPy API gives every channel) or a tuple of
    floats (per channel), with the NumPy API's errors for what it cannot be. Arrays of
    any framework are read with ``tolist``; the rest is plain Python (traceable)."""
    if fill is None:
        return None
    if is_real_scalar(fill) or symbolic(fill):     # first: a traced number has no attributes
        return real_float(op, "fill", fill, np.float64)
    if hasattr(fill, "tolist") and not isinstance(fill, np.generic):
        fill = fill.tolist()
    if isinstance(fill, (list, tuple)):
        return tuple(real_float(op, "fill", v, np.float64) for v in fill)
    return real_float(op, "fill", fill, np.float64)


def _fill_values(op, fill, padding_mode, C, dtype):
    """The per-channel fill of 'constant' padding as a (C,) array; None when no fill
    is added (other modes, or a zero fill)."""
    if padding_mode != "constant":
        if fill is not None:
            # a fill that is no number is that TypeError first, as in the frontends
            static_fill(op, to_host(op, "fill", fill))
            raise ValueError(f"{op}: fill applies to padding_mode='constant' only; got "
                             f"fill={fill!r} with padding_mode={padding_mode!r}.")
        return None
    if fill is None:
        return None
    fill = to_host(op, "fill", fill)        # (an object offering DLPack alone has no axes)
    if _is_scalar(fill):
        if getattr(fill, "shape", None) == () and not isinstance(fill, np.generic):
            fill = np.asarray(to_host(op, "fill", fill)).item()   # a 0-d array or tensor
        vals = np.full(C, real_scalar(op, "fill", fill, dtype), dtype)
    else:
        vals = _fill_sequence(op, fill, f"C = {C} ")
        if vals.shape != (C,):
            raise ValueError(f"{op}: fill must be a scalar or have shape (C,) = ({C},); "
                             f"got shape {shape_str(vals.shape)}.")
        with np.errstate(over="ignore"):
            narrow = vals.astype(dtype)
        lost = np.isfinite(vals) & ~np.isfinite(narrow)
        if lost.any():
            raise ValueError(f"{op}: fill must be representable in {np.dtype(dtype)}; got "
                             f"{float(vals[lost][0])!r} in {shown(fill)}.")
        vals = narrow
    if not np.all(np.isfinite(vals)):
        raise ValueError(f"{op}: fill must be finite; got {fill!r}.")
    return vals if np.any(vals) else None


def _outside_weight(geo, g, mode, align, dtype):
    """The interpolation weight of the taps outside the image per output point, (N, 1,
    *spatial_out), from an image of ones sampled with 'zeros' and 'border' padding (see
    :func:`outside_weight`)."""
    ones = np.ones((geo.dims[0], 1) + geo.spatial_in, dtype)
    inside = np.empty((geo.dims[0], 1) + geo.spatial_out, dtype)
    full = np.empty_like(inside)
    kernel = registry.lookup("grid_sample", "cpu", dtype)
    kernel(inside, ones, g, geo.ones_dims(), mode, "zeros", align, False)
    kernel(full, ones, g, geo.ones_dims(), mode, "border", align, False)
    return outside_weight(inside, full)


def outside_weight(inside, full):
    """The weight of the taps outside the image, ``full - inside``: ``inside`` the sum of
    the weights of the taps inside (ones sampled with 'zeros' padding), ``full`` that of
    all of them (with 'border'). Where every tap is inside, the two sums have the same
    terms, so the weight is exactly 0 (``1 - inside`` left 1 ulp of the sum there: fill
    times that leaked into interior points, 596 at fill=1e10); where none is, exactly 1."""
    with np.errstate(invalid="ignore"):
        outside = full - inside
    return np.where(inside == 0, outside.dtype.type(1), outside)


def add_fill(out, fills, outside, cl):
    """'constant' padding: ``out`` (the 'zeros' result, batched) += fill times the weight
    of the taps outside the image (:func:`outside_weight`); ``fills`` (C,), ``cl``: ``out``
    is channels-last."""
    if cl:
        out += fills * np.moveaxis(outside, 1, -1)
    else:
        out += fills.reshape((-1,) + (1,) * (outside.ndim - 2)) * outside


def _fill_grid_grad(geo, grad_grid, go, g, fill, mode, align, cl, dtype):
    """Subtract the grid gradient of fill * (inside weight) from grad_grid ('constant'):
    d/dgrid sum_c fill_c go_c (1 - inside) = -d inside/dgrid * sum_c fill_c go_c, with
    the channel sum in increasing channel order (bit-identical on any thread count)."""
    h = np.zeros((geo.dims[0],) + geo.spatial_out, dtype)
    for c, f in enumerate(fill):
        h += f * (go[..., c] if cl else go[:, c])
    ones = np.ones((geo.dims[0], 1) + geo.spatial_in, dtype)
    part = np.empty_like(grad_grid)
    kernel = registry.lookup("grid_sample_backward", "cpu", dtype)
    kernel(None, part, h[:, None], ones, g, geo.ones_dims(), mode, "zeros", align, False, True)
    grad_grid -= part


@overload
def grid_sample(input: NumPyLike, grid: NumPyLike, mode: SampleMode = "bilinear",
                padding_mode: PaddingMode = "zeros", align_corners: Flag | None = False,
                out: Array | None = None, channels_last: Flag | None = None, fill: Fill = None,
                *, layout: ImageLayout | None = None) -> Array: ...
@overload
def grid_sample(input: Any, grid: Any, mode: SampleMode = "bilinear",
                padding_mode: PaddingMode = "zeros", align_corners: Flag | None = False,
                out: Any = None, channels_last: Flag | None = None, fill: Fill = None, *,
                layout: ImageLayout | None = None) -> Any: ...
@public_call
def grid_sample(input: Any, grid: Any, mode: SampleMode = "bilinear",
                padding_mode: PaddingMode = "zeros", align_corners: Flag | None = False,
                out: Any = None, channels_last: Flag | None = None, fill: Fill = None, *,
                layout: ImageLayout | None = None) -> Any:
    """Sample ``input`` at the points of ``grid`` (PyTorch's ``F.grid_sample``, 2-D and 3-D).

    Parameters
    ----------
    input : array (N, C, H, W) or (N, C, D, H, W), float32, float64 or uint8 (CPU)
        The images in ``layout``: a batch, or one image (H, W), (H, W, C),
        (C, H, W) (then ``grid`` is (H_out, W_out, 2)). A 5-D input is a
        batch of volumes, NCDHW (CPU arrays only).
    grid : array (N, H_out, W_out, 2) or (N, D_out, H_out, W_out, 3), input's dtype
        Normalized sampling points ``(x, y)`` or ``(x, y, z)``: x along W, y
        along H, z along D, [-1, 1] spanning the image (see Conventions);
        values outside are padded. For a uint8 input: float32 or float64.
    mode : {'bilinear', 'nearest', 'bicubic'}
        Interpolation. ``nearest`` rounds half to even (like PyTorch);
        ``bicubic`` is Keys' cubic convolution with A = -0.75. On volumes
        'bilinear' is trilinear and 'bicubic' tricubic (the tensor product
        of the same cubic over 4 x 4 x 4 taps, each tap padded on its own as
        PyTorch's 2-D bicubic does; PyTorch has no tricubic mode).
    padding_mode : {'zeros', 'border', 'reflection', 'constant', 'wrap'}
        Values outside the image: 0, the nearest border pixel, the image
        mirrored at its borders (period 2 H / 2 W, as PyTorch), ``fill``
        ('constant'), or the image repeated periodically (period H / W:
        taps past the last pixel read the first, SciPy's 'grid-wrap').
        'constant' and 'wrap' need CPU arrays.
    align_corners : bool
        False: -1 and 1 are the outer edges of the corner pixels; True: their
        centres.
    out : array, optional
        Destination of the output's shape and dtype, C-contiguous.
    channels_last : bool, optional
        Deprecated (FutureWarning): ``True`` is ``layout="NHWC"``.
    fill : float or sequence of C floats, optional
        The value outside the image for ``padding_mode='constant'`` (one per
        channel allowed; default 0; must be finite). Only valid with 'constant'.
    layout : {None, 'NCHW', 'NHWC', 'CHW', 'HWC', 'HW'}
        The axes of ``input`` and of the result, as in :func:`resize`: None
        reads 4-D as 'NCHW' and 2-D as 'HW'; a 3-D input needs 'CHW' or
        'HWC'. Channels-last layouts run on the CPU only. Volumes (5-D) are
        NCDHW only (None or 'NCHW').

    Returns
    -------
    array (N, C, H_out, W_out) in ``layout`` (one image: no N), or
    (N, C, D_out, H_out, W_out) for volumes; input's dtype.

    Conventions
    -----------
    A grid value g maps to the pixel coordinate ``((g + 1) / 2) * (W - 1)``
    (align_corners=True) or ``((g + 1) * W - 1) / 2`` (False), where pixel i's
    centre is at i. OpenCV's ``remap`` and PIL use pixel coordinates with
    pixel i's centre at i too, so ``map_x = ((g + 1) * W - 1) / 2`` gives
    ``cv2.remap`` the points of an align_corners=False grid.

    'constant' padding is SciPy's ``map_coordinates(mode='grid-constant',
    cval=fill)`` (order 1 for bilinear): each tap outside the image reads
    ``fill``. It is computed as the 'zeros' result plus ``fill`` times the
    weight of the taps outside (an image of ones sampled with 'border' minus
    the same with 'zeros' padding), exactly 0 where every tap is inside.
    'wrap' wraps each tap index modulo the size (bilinear, nearest, bicubic
    alike), so interpolation between the last and first pixels is smooth.
    A non-zero fill costs one extra single-channel pass: it allocates an
    image of ones (N, 1, H, W) and one output-sized plane (N, 1, H_out, W_out).

    Non-finite grid values, as PyTorch's CPU kernels: a NaN or infinite point
    with ``padding_mode='zeros'`` gives NaN for bilinear and bicubic and 0 for
    nearest; with 'border' and 'reflection' (bilinear, nearest) a NaN
    coordinate is clipped to pixel 0 and an infinite one to the border
    (reflection: to pixel 0); bicubic gives NaN there. No memory outside the
    input is ever read. Points far outside (any finite value) are exact.
    Non-contiguous inputs are copied once.

    Volumes (5-D input) use NCDHW only, CPU arrays only (a CUDA array
    raises TypeError), and the same tiled design as images (a tap table per
    thread for 512 output voxels, about 100 KB in float32).

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
    plan_key = None
    if out is None and channels_last is None and fill is None:   # repeated calls: _plans
        plan_key, plan = _plans.find("grid_sample", (input, grid),
                                     (mode, padding_mode, align_corners, layout))
        if plan is not None:
            return plan(input, grid)
    op = "grid_sample"
    align = _check_options(op, mode, padding_mode, align_corners)
    layout = from_channels_last(op, layout, channels_last)
    p = begin(op, input=input, grid=grid)
    lay = _input_layout(op, p.arrays["input"], layout)
    cl = bool(lay and lay.nhwc)
    (x, g), dtype = _prepare(op, p, ("input", "grid"), cl, uint8_input=True)
    x, g, geo = _batched_geometry(op, p, x, g, lay, padding_mode)
    # uint8 samples in float32: the fill joins the float32 result before it is rounded
    fills = _fill_values(op, fill, padding_mode, geo.dims[1],
                         np.float32 if dtype == np.uint8 else dtype)
    shape = _user_shape(lay, geo)
    if plan_key is not None and p.storage is None and p.backend == "cpu" \
            and input.flags.c_contiguous and grid.flags.c_contiguous:
        plan = _sample_plan(shape, dtype, lay, x.shape, g.shape, geo, fills, mode,
                            padding_mode, align, cl)
        _plans.store(plan_key, plan)
        return plan(input, grid)
    if out is not None:
        caller, out_k = p.adopt_out(out)
        check_out(op, out_k, shape, dtype, {"input": x, "grid": g})
    else:
        caller, out_k = p.empty(shape, dtype)
    if math.prod(shape) == 0:     # nothing to sample: the inputs are not even copied
        return p.wrap(caller)
    x, g = _host_contiguous(p, x, g)
    out_k = lay.as_batched(out_k) if lay else out_k
    _sample_any(p.backend, p.contiguous if p.backend == "cuda" else None, p.stream
                if p.backend == "cuda" else None, out_k, x, g, geo, fills, mode, padding_mode,
                align, cl)
    return p.wrap(caller)


def _sample_plan(shape, dtype, lay, x_shape, g_shape, geo, fills, mode, padding_mode, align,
                 cl):
    """A stored plan: ``plan(input, grid)`` samples C-contiguous NumPy arrays of this
    call's shapes into a new array, as :func:`grid_sample` does on the CPU."""
    empty = math.prod(shape) == 0

    def plan(x, g):
        out = _memory.empty(shape, dtype)
        if not empty:
            out_k = lay.as_batched(out) if lay else out
            _sample_any("cpu", None, None, out_k, x.reshape(x_shape), g.reshape(g_shape), geo,
                        fills, mode, padding_mode, align, cl)
        return out
    return plan


def _sample_any(backend, contiguous, stream, out_k, x, g, geo, fills, mode, padding_mode,
                align, cl):
    """grid_sample's kernels into ``out_k`` (batched): uint8 through a float32 copy."""
    if out_k.dtype != np.uint8:
        _sample_float(backend, contiguous, stream, out_k, x, g, geo, fills, mode,
                      padding_mode, align, cl)
        return
    res = np.empty(out_k.shape, np.float32)
    _sample_float(backend, contiguous, stream, res, x.astype(np.float32),
                  np.ascontiguousarray(g, dtype=np.float32), geo, fills, mode, padding_mode,
                  align, cl)
    out_k[...] = round_for_uint8(res)


def round_for_uint8(res):
    """A float32 sample of a uint8 image rounded half to even and saturated to [0, 255],
    in place (returns ``res``; a NaN sample, from a NaN or infinite grid point, gives 0)."""
    np.rint(res, out=res)
    np.fmax(res, 0, out=res)        # fmax, not clip: NaN -> 0
    np.fmin(res, 255, out=res)
    return res


def _input_layout(op, x, layout):
    """The resolved Layout of an image input, or None for a 5-D volume (NCDHW only)."""
    if len(getattr(x, "shape", ())) == 5:
        if layout not in (None, "NCHW", "NCDHW"):
            raise ValueError(f"{op}: 5-D (volume) input is NCDHW only; got layout={layout!r}.")
        return None
    if layout is None and len(getattr(x, "shape", (0, 0))) not in (2, 3, 4):
        raise ValueError(f"{op}: input must have shape (N, C, H, W), (H, W), a volume "
                         f"(N, C, D, H, W), or another image shape named by layout=; got "
                         f"{shape_str(x.shape)}.")
    return resolve_layout(op, "input", x, layout)


def _batched_geometry(op, p, x, g, lay, padding_mode):
    """``(x, grid, geometry)`` with a single image seen as a batch of one (views)."""
    if lay is not None:
        x = _as_batch(p, lay, x)
        g = _batched_grid(op, g if lay.batched else p.contiguous(g), lay, x.shape[0])
    return x, g, _Geometry(op, p, x, g, bool(lay and lay.nhwc), padding_mode)


def _as_batch(p, lay, a):
    """A single image as a batch of one (a view; a strided CUDA array, which numba cannot
    reshape, copied once first); a batch as it is."""
    return a if lay is None or lay.batched else lay.as_batched(p.contiguous(a))


def _user_shape(lay, geo):
    """The output's shape in the caller's layout."""
    if lay is None:
        return geo.shape
    N, C = geo.dims[0], geo.dims[1]
    return lay.join(N, C, *geo.spatial_out)


def _sample_float(backend, contiguous, stream, out_k, x, g, geo, fills, mode, padding_mode,
                  align, cl):
    """The float kernels into ``out_k`` (batched), 'constant' fill included."""
    kernel = registry.lookup("grid_sample", backend, out_k.dtype)
    if backend == "cuda":
        kernel(out_k, contiguous(x), contiguous(g), _MODE_CODE[mode], _PAD_CODE[padding_mode],
               align, stream=stream)
        return
    if fills is None:
        kernel(out_k, x, g, geo.dims, mode, padding_mode, align, cl)
        return
    outside = _outside_weight(geo, g, mode, align, out_k.dtype)   # before out is written
    kernel(out_k, x, g, geo.dims, mode, padding_mode, align, cl)
    add_fill(out_k, fills, outside, cl)


@overload
def grid_sample_backward(grad_output: NumPyLike, input: NumPyLike, grid: NumPyLike,
                         mode: SampleMode = "bilinear", padding_mode: PaddingMode = "zeros",
                         align_corners: Flag | None = False,
                         needs_input_grad: Literal[True] = True,
                         needs_grid_grad: Literal[True] = True,
                         channels_last: Flag | None = None, deterministic: Flag = True,
                         fill: Fill = None, *, layout: ImageLayout | None = None
                         ) -> tuple[Array, Array]: ...
@overload
def grid_sample_backward(grad_output: NumPyLike, input: NumPyLike, grid: NumPyLike,
                         mode: SampleMode = "bilinear", padding_mode: PaddingMode = "zeros",
                         align_corners: Flag | None = False, needs_input_grad: Flag = True,
                         needs_grid_grad: Flag = True, channels_last: Flag | None = None,
                         deterministic: Flag = True, fill: Fill = None, *,
                         layout: ImageLayout | None = None
                         ) -> tuple[Array | None, Array | None]: ...
@overload
def grid_sample_backward(grad_output: Any, input: Any, grid: Any, mode: SampleMode = "bilinear",
                         padding_mode: PaddingMode = "zeros", align_corners: Flag | None = False,
                         needs_input_grad: Flag = True, needs_grid_grad: Flag = True,
                         channels_last: Flag | None = None, deterministic: Flag = True,
                         fill: Fill = None, *, layout: ImageLayout | None = None
                         ) -> tuple[Any, Any]: ...
@public_call
def grid_sample_backward(grad_output: Any, input: Any, grid: Any, mode: SampleMode = "bilinear",
                         padding_mode: PaddingMode = "zeros", align_corners: Flag | None = False,
                         needs_input_grad: Flag = True, needs_grid_grad: Flag = True,
                         channels_last: Flag | None = None, deterministic: Flag = True,
                         fill: Fill = None, *, layout: ImageLayout | None = None) -> Any:
    """Gradients of :func:`grid_sample` with respect to ``input`` and ``grid``.

    Parameters
    ----------
    grad_output : array, the shape of grid_sample's output
        Gradient of the loss with respect to the sampled output.
    input, grid, mode, padding_mode, align_corners, channels_last, fill, layout
        As given to :func:`grid_sample` (images in any layout or 5-D volumes;
        float32, float64, or float16/bfloat16 computed in float32; not uint8).
        ``fill`` is a constant: it has no gradient, but it enters the grid
        gradient.
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
    plan_key = None
    if channels_last is None and fill is None:       # repeated NumPy calls: see _plans
        plan_key, plan = _plans.find("grid_sample_backward", (grad_output, input, grid),
                                     (mode, padding_mode, align_corners, needs_input_grad,
                                      needs_grid_grad, deterministic, layout))
        if plan is not None:
            return plan(grad_output, input, grid)
    op = "grid_sample_backward"
    align = _check_options(op, mode, padding_mode, align_corners)
    layout = from_channels_last(op, layout, channels_last)
    need_in = check_bool(op, "needs_input_grad", needs_input_grad)
    need_grid = check_bool(op, "needs_grid_grad", needs_grid_grad)
    det = check_bool(op, "deterministic", deterministic)
    p = begin(op, grad_output=grad_output, input=input, grid=grid)
    lay = _input_layout(op, p.arrays["input"], layout)
    cl = bool(lay and lay.nhwc)
    (go, x_user, g_user), dtype = _prepare(op, p, ("grad_output", "input", "grid"), cl)
    x, g, geo = _batched_geometry(op, p, x_user, g_user, lay, padding_mode)
    fills = _fill_values(op, fill, padding_mode, geo.dims[1], dtype)
    shape = _user_shape(lay, geo)
    if tuple(go.shape) != shape:
        raise ValueError(f"{op}: grad_output must have grid_sample's output shape "
                         f"{shape_str(shape)}; got {shape_str(go.shape)}.")
    if math.prod(shape) == 0:     # no gradient flows: zeros, the inputs not even copied
        return _zero_gradients(p, dtype, x_user, g_user, need_in, need_grid)
    go, x, g = _host_contiguous(p, _as_batch(p, lay, go), x, g)
    if plan_key is not None and p.storage is None and p.backend == "cpu" and all(
            a.flags.c_contiguous for a in (grad_output, input, grid)):
        plan = _backward_plan(op, dtype, tuple(x_user.shape), tuple(g_user.shape), go.shape,
                              x.shape, g.shape, geo, fills, mode, padding_mode, align, cl,
                              det, need_in, need_grid)
        _plans.store(plan_key, plan)
        return plan(grad_output, input, grid)
    gi_caller = gi_k = gg_caller = gg_k = None
    if need_in and p.backend == "cpu":
        gi_caller = _staggered_empty(tuple(x_user.shape), dtype, x)
        gi_k = _as_batch(p, lay, gi_caller)
    elif need_in:
        gi_caller, gi_k = p.empty(tuple(x_user.shape), dtype, like="input")
        gi_k = _as_batch(p, lay, gi_k)
    if need_grid:
        gg_caller, gg_k = p.empty(tuple(g_user.shape), dtype, like="grid")
        gg_k = gg_k.reshape(tuple(g.shape))
    kernel = registry.lookup(op, p.backend, dtype)
    if need_in or need_grid:     # the kernels zero the gradients of an empty output
        if p.backend == "cuda":
            go, x, g = (p.contiguous(a) for a in (go, x, g))   # copied once if strided
            kernel(gi_k, gg_k, go, x, g, _MODE_CODE[mode], _PAD_CODE[padding_mode], align,
                   deterministic=det, stream=p.stream)
        else:
            _backward_cpu(kernel, gi_k, gg_k, go, x, g, geo, fills, mode, padding_mode, align,
                          cl, det)
    wrap = (lambda a, like: None if a is None else p.wrap(a, like))
    return wrap(gi_caller, "input"), wrap(gg_caller, "grid")


def _zero_gradients(p, dtype, x, g, need_in, need_grid):
    """``(grad_input, grad_grid)`` of an empty output: zeros of x's and g's shapes (None
    where not wanted)."""
    gi = p.wrap(p.zeros(tuple(x.shape), dtype, like="input")[0], "input") if need_in else None
    gg = p.wrap(p.zeros(tuple(g.shape), dtype, like="grid")[0], "grid") if need_grid else None
    return gi, gg


def _backward_cpu(kernel, gi_k, gg_k, go, x, g, geo, fills, mode, padding_mode, align, cl,
                  det):
    """The CPU backward kernel into the batched gradients (None: not wanted), the grid
    gradient of a 'constant' fill included."""
    kernel(gi_k, gg_k, go, x, g, geo.dims, mode, padding_mode, align, cl, det)
    if gg_k is not None and fills is not None and mode != "nearest" and go.size:
        _fill_grid_grad(geo, gg_k, go, g, fills, mode, align, cl, gg_k.dtype)


def _backward_plan(op, dtype, x_user_shape, g_user_shape, go_shape, x_shape, g_shape, geo,
                   fills, mode, padding_mode, align, cl, det, need_in, need_grid):
    """A stored plan: ``plan(grad_output, input, grid)`` computes the wanted gradients
    of C-contiguous NumPy arrays of this call's shapes, as :func:`grid_sample_backward`
    does on the CPU."""
    def plan(go, x_user, g_user):
        x, g = x_user.reshape(x_shape), g_user.reshape(g_shape)
        gi = _staggered_empty(x_user_shape, dtype, x) if need_in else None
        gg = _memory.empty(g_user_shape, dtype) if need_grid else None
        if need_in or need_grid:
            _backward_cpu(registry.lookup(op, "cpu", dtype),
                          None if gi is None else gi.reshape(x_shape),
                          None if gg is None else gg.reshape(g_shape), go.reshape(go_shape),
                          x, g, geo, fills, mode, padding_mode, align, cl, det)
        return gi, gg
    return plan


# grad_input of at most this many bytes stays in the caches: 4K aliasing costs nothing there.
_UNSTAGGERED_BYTES = 1 << 16


def _staggered_empty(shape, dtype, other):
    """A C-contiguous array whose address is half a 4 KiB page away from ``other``'s
    (mod 4096). The backward adds into grad_input at the offsets it reads input
    from; were the two addresses equal mod 4096, every load would wait on the
    stores (4K aliasing), costing ~2x."""
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    if n * dtype.itemsize <= _UNSTAGGERED_BYTES:
        return _memory.empty(shape, dtype)
    buf = _memory.empty((n + 4096 // dtype.itemsize,), dtype)
    target = (other.__array_interface__["data"][0] + 2048) % 4096
    skip = ((target - buf.__array_interface__["data"][0]) % 4096) // dtype.itemsize
    return buf[skip:skip + n].reshape(shape)
