"""Affine and perspective warps of images, with gradients (built on grid_sample).

A warp samples its source image at the points a matrix maps the output's
pixels to. Two conventions are offered by ``match``:

- ``"opencv"``: ``M`` is a pixel matrix, pixel i's centre at coordinate i, and
  by default it maps *source* pixels to *destination* pixels as in
  ``cv2.warpAffine`` / ``cv2.warpPerspective`` (``inverse_map=True`` is
  OpenCV's ``WARP_INVERSE_MAP``: ``M`` maps destination to source).
- ``"torch"``: ``M`` is a normalized matrix as for ``F.affine_grid``: it maps
  the output's normalized coordinates ([-1, 1] spanning the image,
  ``align_corners`` as in PyTorch) to the input's. ``warp_affine(x, theta,
  size, match="torch")`` equals ``grid_sample(x, affine_grid(theta, ...))``.

On the CPU the sampling grid is generated in blocks of at most ``2**18`` output
pixels (see ``_blocks``) and sampled block by block, so the forward never holds a
full-size grid; the backward builds the grid once (it needs the grid gradient of
every pixel), block by block. On CUDA the grid is computed on the device, from the
maps and the base coordinates, with the host's arithmetic (the same values, but for
the multiply-adds the GPU compiler fuses).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Literal, overload

import numpy as np

from . import _memory
from ._dispatch import _to_numpy, begin, public_call, to_host, unreadable_error
from ._fpenv import ieee_subnormals
from ._half import is_half
from ._layout import resolve as resolve_layout
from ._typing import (Array, Fill, Flag, ImageLayout, NumPyLike, PaddingMode, Point, Real,
                      SampleMode, Sizes, WarpMatch)
from ._validate import (check_array, check_bool, check_option, check_out, check_uint8_on_cpu,
                        entries, finite_float, float_dtype, from_dlpack_only, int_sizes,
                        same_dtype, shape_str, symbolic)
from .sample import (_check_options, _fill_values, _layout_dims, base_coordinates,
                     check_device_options, grid_sample, grid_sample_backward)

__all__ = ["warp_affine", "warp_affine_backward", "warp_perspective",
           "warp_perspective_backward", "rotate", "rotation_matrix"]

MATCHES = ("torch", "opencv")
BLOCK_POINTS = 1 << 18     # output pixels per generated grid block
FAR_OUTSIDE = 1.0e7        # normalized coordinate for points at infinity (w == 0)


# --------------------------------------------------------------------------- validation

def _check_dsize(op, dsize):
    """The output size (H_out, W_out) as two Python ints."""
    return int_sizes(op, "dsize", dsize, "(H_out, W_out)", (2,))


def matrix_type_error(op, name, dtype):
    """The TypeError for a matrix of a dtype a warp does not take (bool, complex, ...)."""
    return TypeError(f"{op}: {name} must hold real numbers (an integer or float dtype, "
                     f"used as float64); got dtype {dtype}.")


def _host_matrix(op, name, M, rows, N):
    """The matrix as float64 NumPy, shape (N, rows, 3) (a single matrix is broadcast).

    Any integer or float dtype is converted to float64 (as ``cv2.warpAffine``
    reads any numeric matrix); bool, complex, object and string data are refused.
    """
    if M is None:
        raise TypeError(f"{op}: {name} must be an array; got None.")
    M = to_host(op, name, M)
    try:
        arr = np.asarray(M)
    except ValueError:                       # a ragged nest of lists, say
        raise ValueError(f"{op}: {name} must have shape ({rows}, 3) or (N, {rows}, 3); "
                         f"got {M!r}.") from None
    except (RuntimeError, TypeError) as exc:  # bfloat16, or tensors that require grad
        raise unreadable_error(op, name, M, exc) from None
    if arr.dtype.kind not in "fiu" and not is_half(arr.dtype):   # bfloat16: kind 'V'
        raise matrix_type_error(op, name, arr.dtype)
    arr = arr.astype(np.float64)
    if arr.shape not in ((rows, 3), (N, rows, 3)):
        raise ValueError(f"{op}: {name} must have shape ({rows}, 3) or (N, {rows}, 3) with "
                         f"N = {N}; got {shape_str(arr.shape)}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{op}: {name} must be finite; got {arr!r}.")
    return np.broadcast_to(arr, (N, rows, 3)), arr.ndim == 2


def _square(M):
    """(N, 2, 3) affine or (N, 3, 3) matrices as (N, 3, 3)."""
    if M.shape[1] == 3:
        return np.array(M)
    sq = np.zeros((M.shape[0], 3, 3))
    sq[:, :2] = M
    sq[:, 2, 2] = 1.0
    return sq


def _pixel_to_normalized(H, W):
    """Pixel coordinates (centre of pixel i at i) -> align_corners=False normalized ones."""
    return np.array([[2.0 / W, 0.0, 1.0 / W - 1.0],
                     [0.0, 2.0 / H, 1.0 / H - 1.0],
                     [0.0, 0.0, 1.0]])


# --------------------------------------------------------------------------- the map

class _Map:
    """Output pixel -> normalized input point: ``g = (K[:2] b) / (K[2] b)`` with ``b`` the
    output pixel's base coordinates (pixels for OpenCV, normalized for torch)."""

    def __init__(self, op, M, rows, N, H, W, Ho, Wo, match, inverse_map, align_corners):
        self.M, self.shared = _host_matrix(op, "M", M, rows, N)
        self.affine = rows == 2
        self.match, self.inverse_map = match, inverse_map
        self.Ho, self.Wo = Ho, Wo
        self.align_corners = align_corners
        square = _square(self.M)
        if match == "opencv" and not inverse_map:
            if self.shared and N == 0:     # an empty batch: its one matrix is checked too
                _inverted(op, _square(_host_matrix(op, "M", M, rows, 1)[0]), True, self.affine)
            square, self.scales = _inverted(op, square, self.shared, self.affine)
        else:
            square, self.scales = _scaled(square, self.affine)
        if match == "opencv":
            self.norm = _pixel_to_normalized(H, W)
            self.inner = square                      # destination pixel -> source pixel
            self.K = self.norm @ square
        else:
            self.K = square

    def base(self, size, start=0, stop=None):
        """Base coordinates [start, stop) of an output axis of ``size`` pixels (pixels for
        OpenCV, normalized for torch), float64, computed for the range asked only: an
        output axis may be huge (a Dask warp's blocks each take their own range)."""
        stop = size if stop is None else min(stop, size)
        if self.match == "opencv":
            return np.arange(start, max(stop, start), dtype=np.float64)
        return base_coordinates(size, self.align_corners, np.dtype(np.float64), start, stop)

    @property
    def bx(self):
        return self.base(self.Wo)

    @property
    def by(self):
        return self.base(self.Ho)

    def _uvw(self, K, bx, by):
        """u, v, w (w None when affine) of base coordinates ``bx``, ``by`` (broadcast) by
        ``K`` (3, 3), or by ``K[..., i, j]`` shaped to broadcast against them."""
        u = K[..., 0, 0] * bx + K[..., 0, 1] * by + K[..., 0, 2]
        v = K[..., 1, 0] * bx + K[..., 1, 1] * by + K[..., 1, 2]
        if self.affine:
            return u, v, None
        return u, v, K[..., 2, 0] * bx + K[..., 2, 1] * by + K[..., 2, 2]

    def points(self, rows, cols):
        """``(x, y, w)`` at output pixels ``rows`` x ``cols`` (index sequences) of every
        image, each (N, len(rows), len(cols)) float64 (w None when affine): the grid
        points before :func:`_far_outside` and the cast to the grid's dtype, element by
        element the values :meth:`grid_rows` computes."""
        bx, by = self._bases(rows, cols)
        K = self.K[:, None, None]                       # (N, 1, 1, 3, 3)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            u, v, w = self._uvw(K, bx, by[:, None])
            if w is not None:
                u, v = u / w, v / w
        return u, v, w

    def magnitudes(self, rows, cols):
        """``(|u|, |v|, |w|)`` sums at the points of :meth:`points`: each of u, v, w summed
        from the terms' magnitudes (``|K| |b|``), so that its rounding error is at most a
        few ulps of this (w None when affine)."""
        bx, by = self._bases(rows, cols)
        with np.errstate(over="ignore", invalid="ignore"):
            return self._uvw(np.abs(self.K[:, None, None]), np.abs(bx), np.abs(by[:, None]))

    def _bases(self, rows, cols):
        """The base coordinates of output columns ``cols`` and rows ``rows``."""
        bx = np.concatenate([self.base(self.Wo, c, c + 1) for c in cols] or [np.empty(0)])
        by = np.concatenate([self.base(self.Ho, r, r + 1) for r in rows] or [np.empty(0)])
        return bx, by

    def grid_rows(self, n, r0, r1, dtype, c0=0, c1=None):
        """Grid points of output rows [r0, r1), columns [c0, c1) (default: all) of image n:
        (r1 - r0, c1 - c0, 2) in dtype."""
        return self.grid_block(n, n + 1, r0, r1, dtype, c0, c1)[0]

    def grid_block(self, n0, n1, r0, r1, dtype, c0=0, c1=None):
        """Grid points of output rows [r0, r1), columns [c0, c1) (default: all) of images
        [n0, n1): (n1 - n0, r1 - r0, c1 - c0, 2) in dtype, element by element the values
        of any other block holding the same points."""
        c1 = self.Wo if c1 is None else c1
        if (n1 - n0) * (r1 - r0) * (c1 - c0) == 0:   # (an empty map has no base coordinates)
            return np.empty((n1 - n0, r1 - r0, c1 - c0, 2), dtype)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            u, v, w = self._uvw(self.K[n0:n1, None, None], self.base(self.Wo, c0, c1),
                                self.base(self.Ho, r0, r1)[:, None])
            if w is not None:
                u, v = u / w, v / w
        grid = np.empty(u.shape + (2,), dtype)
        grid[..., 0] = _far_outside(u, dtype)
        grid[..., 1] = _far_outside(v, dtype)
        return grid

    def grad_K(self, grad_grid):
        """d loss / d K (N, 3, 3) from the grid gradient (N, H_out, W_out, 2), in float64,
        computed a few images at a time (each block's float64 temporaries hold at most
        about BLOCK_POINTS points, or one image)."""
        N = grad_grid.shape[0]
        out = np.zeros((N, 3, 3))
        if grad_grid.size == 0:
            return out
        step = max(1, BLOCK_POINTS // (self.Ho * self.Wo))
        for n0 in range(0, N, step):
            n1 = min(N, n0 + step)
            out[n0:n1] = self._grad_K_block(grad_grid[n0:n1], n0, n1)
        return out

    def _grad_K_block(self, grad_grid, n0, n1):
        """grad_K of images [n0, n1) from their grid gradient (n1 - n0, H_out, W_out, 2)."""
        out = np.zeros((n1 - n0, 3, 3))
        bx, by = self.bx, self.by
        gx = grad_grid[..., 0].astype(np.float64)
        gy = grad_grid[..., 1].astype(np.float64)
        u, v, w = self._uvw(self.K[n0:n1, None, None], bx, by[:, None])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            x, y = (u, v) if w is None else (u / w, v / w)
        # a point the forward moved far outside (grid_block) does not depend on K: its grid
        # gradient (not 0 with reflection or wrap padding) must not reach K through 1/w
        gx, gy = _sampled_only(gx, x, grad_grid.dtype), _sampled_only(gy, y, grad_grid.dtype)
        if w is not None:
            ok = w != 0
            inv_w = np.where(ok, 1.0 / np.where(ok, w, 1.0), 0.0)
            gx, gy = gx * inv_w, gy * inv_w
            gw = -(gx * u + gy * v) * inv_w
            out[:, 2] = _moments(gw, bx, by)
        out[:, 0] = _moments(gx, bx, by)
        out[:, 1] = _moments(gy, bx, by)
        return out

    def grad_M(self, grad_K):
        """Chain d loss / d K back to the caller's matrix (its shape)."""
        g = grad_K
        if self.match == "opencv":
            g = self.norm.T @ grad_K                         # K = norm @ inner
            if not self.inverse_map:                         # inner = inv(square / scales)
                g = -np.swapaxes(self.inner, 1, 2) @ g @ np.swapaxes(self.inner, 1, 2)
        with np.errstate(over="ignore"):     # (square / scales): as large as 1 / scale, maybe inf
            g = g / self.scales
        g = g[:, :2] if self.affine else g
        return g.sum(axis=0) if self.shared else g


def _far_outside(u, dtype):
    """Normalized coordinates with those beyond what the sampler computes with in ``dtype``
    (the square root of its largest value: 1.8e19 for float32), and nan and inf (points at
    infinity, w == 0), replaced by the point ``FAR_OUTSIDE`` in their direction (nan: +)."""
    far = ~_within_sampler(u, dtype)
    if not far.any():
        return u
    return np.where(far, np.where(u < 0, -FAR_OUTSIDE, FAR_OUTSIDE), u)


def _sampled_only(grad, u, dtype):
    """``grad`` with 0 where coordinate ``u`` was moved far outside by :func:`_far_outside`
    (the same array when none was: the common case costs no copy)."""
    inside = _within_sampler(u, dtype)
    return grad if inside.all() else np.where(inside, grad, 0.0)


def _within_sampler(u, dtype):
    """Where normalized coordinates ``u`` are kept as they are by :func:`_far_outside`."""
    return np.abs(u) <= np.sqrt(np.finfo(dtype).max)


def _power_of_two_near(big):
    """The power of two nearest above ``big``'s magnitude (1 for 0): dividing by it is exact."""
    return np.ldexp(1.0, np.frexp(np.where(big > 0, big, 1.0))[1])


def _lapack_inverses(square):
    """``(inverses, singular)`` of (N, 3, 3) matrices; singular: an exactly zero pivot."""
    inv = np.zeros_like(square)
    singular = np.zeros(len(square), bool)
    try:
        inv[...] = np.linalg.inv(square)
    except np.linalg.LinAlgError:                    # which ones: one at a time
        for n, m in enumerate(square):
            try:
                inv[n] = np.linalg.inv(m)
            except np.linalg.LinAlgError:
                singular[n] = True
    return inv, singular


def _affine_inverses(square, scaled=True):
    """``(inverses, singular)`` of (N, 3, 3) affine matrices, as ``cv2.invertAffineTransform``
    computes them (the same bits), with the 2 x 2 part first divided by a power of two near
    its largest entry (``scaled``): its determinant then neither under- nor overflows
    (1e-170 * I is invertible). Singular: that determinant is 0."""
    p2 = (_power_of_two_near(np.abs(square[:, :2, :2]).max(axis=(1, 2))) if scaled
          else np.ones(len(square)))
    a, b = square[:, 0, 0] / p2, square[:, 0, 1] / p2
    c, d = square[:, 1, 0] / p2, square[:, 1, 1] / p2
    det = a * d - b * c
    singular = det == 0
    r = 1.0 / np.where(singular, 1.0, det)
    inv = np.zeros_like(square)
    inv[:, 0, 0], inv[:, 0, 1] = d * r / p2, -b * r / p2
    inv[:, 1, 0], inv[:, 1, 1] = -c * r / p2, a * r / p2
    tx, ty = square[:, 0, 2], square[:, 1, 2]
    inv[:, 0, 2] = -inv[:, 0, 0] * tx - inv[:, 0, 1] * ty
    inv[:, 1, 2] = -inv[:, 1, 0] * tx - inv[:, 1, 1] * ty
    inv[:, 2, 2] = 1.0
    return inv, singular


def _invert_unscaled(mats, inv, singular, scales, invert):
    """Matrices whose scaled inverse under- or overflows (entries of very different
    magnitudes: the homography [[1, 0, 0], [0, 1, 0], [1e200, 1e200, 1]], the affine
    diag(1e200, 1e-200)) inverted as given by ``invert`` instead, where that inverse is
    finite: ``inv``, ``singular`` and ``scales`` updated in place."""
    retry = np.flatnonzero(singular | ~np.isfinite(inv).all(axis=(1, 2)))
    if not retry.size:
        return
    again, still_singular = invert(mats[retry])
    ok = ~still_singular & np.isfinite(again).all(axis=(1, 2))
    inv[retry[ok]], singular[retry[ok]], scales[retry[ok]] = again[ok], False, 1.0


def _homography_scales(mats):
    """Per matrix (N, 1, 1): the power of two nearest above its largest entry (at most
    2**1023): dividing a homography by it is exact and leaves its map unchanged."""
    with np.errstate(all="ignore"):
        return np.minimum(_power_of_two_near(np.abs(mats).max(axis=(1, 2), keepdims=True)),
                          2.0 ** 1023)


def _scaled(square, affine):
    """``(square / scales, scales)``: a homography used as given (inverse_map, or torch's
    convention) divided by :func:`_homography_scales`, so that a multiple of it near
    float64's limits maps as it does (its product with the normalisation would over- or
    underflow); an affine matrix (not scale-free) as it is, scale 1."""
    if affine:
        return square, np.ones((len(square), 1, 1))
    scales = _homography_scales(square)
    return square / scales, scales


def _inverted(op, square, shared, affine):
    """``(inner, scales)``: the inverses of OpenCV's source -> destination matrices (N, 3, 3)
    as ``inner[n] = inv(square[n] / scales[n])``, scales (N, 1, 1).

    An affine matrix is inverted as OpenCV inverts it (scale 1; its 2 x 2 part scaled for
    the determinant, see _affine_inverses). A homography is the same
    map at any scale: it is divided by a power of two near its largest entry first (exact:
    its warp and gradient are unchanged), so that neither it nor its inverse over- or
    underflows, then inverted by LAPACK (singular: an exactly zero pivot). Either one whose
    scaled inverse fails is inverted as given. Neither test is a determinant, which underflows to 0 for invertible matrices such as 1e-170 * I.
    A singular matrix, or an inverse beyond float64, is a ValueError naming ``M``.
    """
    mats = square[:1] if shared else square
    scales = np.ones((len(mats), 1, 1))
    with np.errstate(all="ignore"):
        if not affine:
            scales = _homography_scales(mats)
        inv, singular = (_affine_inverses if affine else _lapack_inverses)(mats / scales)
        _invert_unscaled(mats, inv, singular, scales,
                         functools.partial(_affine_inverses, scaled=False) if affine
                         else _lapack_inverses)
    overflows = ~singular & ~np.isfinite(inv).all(axis=(1, 2))
    if singular.any():
        i = int(np.argmax(singular))
        which = "" if shared else f"M[{i}] with "
        raise ValueError(f"{op}: M must be invertible (OpenCV convention maps source to "
                         f"destination); got {which}determinant "
                         f"{float(np.linalg.det(mats[i]))!r}.")
    if overflows.any():
        i = int(np.argmax(overflows))
        given = (mats[i, :2] if affine else mats[i]).tolist()
        raise ValueError(f"{op}: M must have an inverse that float64 can hold (OpenCV "
                         f"convention maps source to destination); got "
                         f"{'M' if shared else f'M[{i}]'} = {given}.")
    n = len(square)
    return np.broadcast_to(inv, (n, 3, 3)), np.broadcast_to(scales, (n, 1, 1))


def _moments(weights, bx, by):
    """(sum w * bx, sum w * by, sum w) over each image's pixel grid (weights (N, H_out,
    W_out), C-contiguous), as (N, 3): each row first, then the rows. Sums in a fixed
    order (einsum's own loops): a matrix product would go to the BLAS, which splits a
    long dot product across its threads (other bits for another BLAS thread count)."""
    rows = weights.sum(axis=2)
    return np.stack([np.einsum("nhw,w->nh", weights, bx).sum(axis=1),
                     np.einsum("nh,h->n", rows, by), rows.sum(axis=1)], axis=1)


# --------------------------------------------------------------------------- drivers

def _float_dtype(x):
    dtype = np.dtype(getattr(x, "dtype", np.float64))
    return dtype if dtype.kind == "f" and dtype.itemsize >= 4 else np.dtype(np.float32)


def _image_layout(op, img, layout):
    """The resolved Layout of ``img`` (batched or one image; no 5-D volumes)."""
    if not hasattr(img, "shape"):
        raise TypeError(f"{op}: img must be an array; got {type(img).__name__}.")
    return resolve_layout(op, "img", img, layout)


def _check_convention(op, match, align_corners, inverse_map):
    """``(align_corners, inverse_map)`` as bools, each refused when set for the ``match``
    it does not apply to (its default, False, fits both)."""
    check_option(op, "match", match, MATCHES)
    align = check_bool(op, "align_corners", align_corners)
    inverse = check_bool(op, "inverse_map", inverse_map)
    for name, value, applies in (("align_corners", align, "torch"),
                                 ("inverse_map", inverse, "opencv")):
        if value and match != applies:
            raise ValueError(f"{op}: {name} applies to match={applies!r} only; got "
                             f"{name}=True with match={match!r}.")
    return align, inverse


def _begin(op, img, M, dsize, match, mode, padding_mode, align_corners, inverse_map,
           layout, fill, rows, uint8_ok=False, **more):
    """Validate a warp call: ``(p, lay, batched img, map, (N, C, Ho, Wo), grid_sample options)``;
    ``uint8_ok``: a uint8 image is allowed (the forward, which grid_sample runs on it)."""
    align, inverse = _check_convention(op, match, align_corners, inverse_map)
    Ho, Wo = _check_dsize(op, dsize)
    p = begin(op, img=img, **more)
    p.also_template(M)          # a torch matrix with a NumPy image: torch results
    x = p.arrays["img"]
    lay = _image_layout(op, x, layout)
    if not (uint8_ok and getattr(x, "dtype", None) == np.uint8):
        float_dtype(op, "img", x, uint8=uint8_ok)
    check_uint8_on_cpu(op, x.dtype, p.backend)
    N, C, H, W = _layout_dims(op, x, lay, "img")
    check_device_options(op, p.backend, lay.nhwc, padding_mode)
    wmap = _Map(op, M, rows, N, H, W, Ho, Wo, match, inverse, align)
    # OpenCV's pixel matrices address pixel centres: align_corners=False normalization
    sample_align = False if match == "opencv" else align
    _check_options(op, mode, padding_mode, sample_align)      # errors under this op's name
    uint8 = x.dtype == np.uint8     # (its fill read in float64, then rounded once to uint8)
    fills = _fill_values(op, fill, padding_mode, C, np.dtype(np.float64) if uint8
                         else _float_dtype(x))
    if fills is not None and uint8:
        fill = _saturated_uint8(fills)
    opts = dict(mode=mode, padding_mode=padding_mode, align_corners=sample_align,
                layout="NHWC" if lay.nhwc else "NCHW", fill=fill)
    return p, lay, lay.as_batched(p.contiguous(x)), wmap, (N, C, Ho, Wo), opts


def _saturated_uint8(fills):
    """A uint8 image's fill as OpenCV takes ``borderValue``: converted to the image's type
    (rounded half to even, clamped to [0, 255]) before it is interpolated. (OpenCV's
    rounding to int wraps fills beyond the int32 range; here they clamp too.)"""
    return np.clip(np.rint(fills), 0, 255)


def _grid_for(p, wmap, N, dtype):
    """The whole grid of a warp where ``p``'s backend samples: on the CPU built on the
    host (:func:`_full_grid`), on CUDA computed on the device from the maps and the base
    coordinates (the same values up to the multiply-adds the GPU compiler fuses: an ulp
    or so; nothing of the grid's size is built on the host or
    copied to the device)."""
    if p.backend != "cuda":
        return _full_grid(wmap, N, dtype)
    from numba import cuda
    from ._cuda import sample as cuda_sample
    grid = cuda.device_array((N, wmap.Ho, wmap.Wo, 2), dtype, stream=p.stream)
    if N * wmap.Ho * wmap.Wo:
        put = functools.partial(cuda.to_device, stream=p.stream)
        cuda_sample.warp_grid(grid, put(np.ascontiguousarray(wmap.K, np.float64)),
                              put(wmap.bx), put(wmap.by), wmap.affine,
                              float(np.sqrt(np.finfo(dtype).max)), FAR_OUTSIDE, p.stream)
    return grid


def _blocks(N, Ho, Wo):
    """``(n0, n1, r0, r1, c0, c1)``: the output of N images of Ho x Wo pixels in blocks
    of at most BLOCK_POINTS points, in order: whole images when one fits, else whole
    rows of one image, else runs of one row."""
    per_image = Ho * Wo
    if per_image <= BLOCK_POINTS:
        step = BLOCK_POINTS // max(per_image, 1)
        for n0 in range(0, N, step):
            yield n0, min(N, n0 + step), 0, Ho, 0, Wo
        return
    rows, cols = max(1, BLOCK_POINTS // Wo), min(Wo, BLOCK_POINTS)
    for n in range(N):
        for r0 in range(0, Ho, rows):
            for c0 in range(0, Wo, cols):
                yield n, n + 1, r0, min(Ho, r0 + rows), c0, min(Wo, c0 + cols)


def _full_grid(wmap, N, dtype):
    """The whole grid (N, H_out, W_out, 2), generated block by block (the float64
    temporaries of a block hold at most BLOCK_POINTS points)."""
    Ho, Wo = wmap.Ho, wmap.Wo
    grid = np.empty((N, Ho, Wo, 2), dtype)
    if N * Ho * Wo == 0:     # no point to map (an axis of 0 would still cost its length)
        return grid
    for n0, n1, r0, r1, c0, c1 in _blocks(N, Ho, Wo):
        grid[n0:n1, r0:r1, c0:c1] = wmap.grid_block(n0, n1, r0, r1, dtype, c0, c1)
    return grid


def _forward(op, img, M, dsize, match, mode, padding_mode, align_corners, inverse_map,
             layout, out, fill, rows):
    p, lay, x, wmap, (N, C, Ho, Wo), opts = _begin(op, img, M, dsize, match, mode,
                                                    padding_mode, align_corners, inverse_map,
                                                    layout, fill, rows, uint8_ok=True)
    dtype = _float_dtype(x)
    cl = lay.nhwc
    if out is not None:
        caller, target = p.adopt_out(out)
        check_out(op, target, lay.join(N, C, Ho, Wo), x.dtype, {"img": x})
    else:
        _memory.check_fits(op, f"an output of {shape_str((Ho, Wo))} per image",
                           N * C * Ho * Wo * x.dtype.itemsize)
        caller, target = p.empty(lay.join(N, C, Ho, Wo), x.dtype)
    if N * C * Ho * Wo == 0:     # nothing to sample: no grid is built, no input copied
        return p.wrap(caller)
    target = lay.as_batched(target)
    if N * Ho * Wo <= BLOCK_POINTS or p.backend == "cuda":
        grid_sample(x, _grid_for(p, wmap, N, dtype), out=target, **opts)
        return p.wrap(caller)
    for n0, n1, r0, r1, c0, c1 in _blocks(N, Ho, Wo):
        grid = wmap.grid_block(n0, n1, r0, r1, dtype, c0, c1)
        block = (target[n0:n1, r0:r1, c0:c1] if cl else target[n0:n1, :, r0:r1, c0:c1])
        if block.flags.c_contiguous:    # whole images, or NHWC rows: sample straight into it
            grid_sample(x[n0:n1], grid, out=block, **opts)
        else:
            block[...] = grid_sample(x[n0:n1], grid, **opts)
    return p.wrap(caller)


def _backward(op, grad_output, img, M, dsize, match, mode, padding_mode, align_corners,
              inverse_map, layout, needs_input_grad, needs_matrix_grad, fill, rows,
              deterministic):
    need_m = check_bool(op, "needs_matrix_grad", needs_matrix_grad)
    need_in = check_bool(op, "needs_input_grad", needs_input_grad)
    det = check_bool(op, "deterministic", deterministic)
    p, lay, x, wmap, (N, C, Ho, Wo), opts = _begin(op, img, M, dsize, match, mode,
                                                    padding_mode, align_corners, inverse_map,
                                                    layout, fill, rows, grad_output=grad_output)
    dtype = _float_dtype(x)
    go = p.arrays["grad_output"]
    check_array(op, "grad_output", go)
    same_dtype(op, img=x, grad_output=go)
    if tuple(go.shape) != lay.join(N, C, Ho, Wo):
        raise ValueError(f"{op}: grad_output must have shape "
                         f"{shape_str(lay.join(N, C, Ho, Wo))} (the forward's output); "
                         f"got {shape_str(go.shape)}.")
    if N * C * Ho * Wo == 0:     # no gradient flows: no grid is built, no input copied
        return _zero_gradients(p, wmap, dtype, need_in, need_m)
    try:
        gi, gg = grid_sample_backward(lay.as_batched(p.contiguous(go)), x,
                                      _grid_for(p, wmap, N, dtype), needs_input_grad=need_in,
                                      needs_grid_grad=need_m, deterministic=det, **opts)
    except ValueError as e:      # the CUDA sampler's refusals: under this op's name
        prefix = "grid_sample_backward:"
        if not str(e).startswith(prefix):
            raise
        raise ValueError(f"{op}:{str(e)[len(prefix):]}") from None
    gm = None
    if need_m:
        host = _grid_grad_on_host(p, gg)
        with np.errstate(over="ignore"):      # a gradient beyond float32 is +-inf, quietly
            gm = p.wrap(wmap.grad_M(wmap.grad_K(host)).astype(dtype))
    if gi is not None:
        gi = p.wrap(gi.reshape(tuple(p.arrays["img"].shape)))
    return gi, gm


def _zero_gradients(p, wmap, dtype, need_in, need_m):
    """``(grad_img, grad_M)`` of an empty output (None where not wanted): the image's
    is zero; the matrix's is the chain rule applied to a zero grid gradient, as for any
    output nothing flows into."""
    gi = p.wrap(p.zeros(tuple(p.arrays["img"].shape), dtype)[0]) if need_in else None
    gm = None
    if need_m:
        with np.errstate(over="ignore"):
            gm = p.wrap(wmap.grad_M(np.zeros((len(wmap.K), 3, 3))).astype(dtype))
    return gi, gm


def _grid_grad_on_host(p, gg):
    """The grid gradient on the host: on CUDA read on the caller's stream, once the
    backward kernel that writes it is done (that stream synchronised only)."""
    if p.backend != "cuda":
        return np.asarray(gg)
    from ._cuda import _support
    return _support.read_to_host(gg, p.stream)


# --------------------------------------------------------------------------- public API

@overload
def warp_affine(img: NumPyLike, M: NumPyLike, dsize: Sizes, mode: SampleMode = "bilinear",
                padding_mode: PaddingMode = "zeros", align_corners: Flag = False,
                match: WarpMatch = "opencv", inverse_map: Flag = False, out: Array | None = None,
                fill: Fill = None, *, layout: ImageLayout | None = None) -> Array: ...
@overload
def warp_affine(img: Any, M: Any, dsize: Sizes, mode: SampleMode = "bilinear",
                padding_mode: PaddingMode = "zeros", align_corners: Flag = False,
                match: WarpMatch = "opencv", inverse_map: Flag = False, out: Any = None,
                fill: Fill = None, *, layout: ImageLayout | None = None) -> Any: ...
@public_call
def warp_affine(img: Any, M: Any, dsize: Sizes, mode: SampleMode = "bilinear",
                padding_mode: PaddingMode = "zeros", align_corners: Flag = False,
                match: WarpMatch = "opencv", inverse_map: Flag = False, out: Any = None,
                fill: Fill = None, *, layout: ImageLayout | None = None) -> Any:
    """Warp images by 2-D affine maps (``cv2.warpAffine``; kornia's ``warp_affine``).

    Parameters
    ----------
    img : array (N, C, H, W) float32, float64 or uint8 (CPU), or another shape named by ``layout``
    M : array (2, 3) or (N, 2, 3)
        One matrix for the batch or one per image; see ``match``. Any integer
        or float dtype, used as float64 (bool, complex and object matrices
        raise ``TypeError``).
    dsize : (H_out, W_out)
        Output size, height first (note: ``cv2.warpAffine`` takes (width, height)).
    mode, padding_mode, fill : as :func:`fastinterp.grid_sample`
        ``padding_mode`` 'zeros' is OpenCV's BORDER_CONSTANT with 0,
        'constant' with ``fill`` BORDER_CONSTANT with ``borderValue=fill``
        (on a uint8 image converted to uint8 first, as OpenCV does: rounded
        half to even, clamped to [0, 255]), 'border' BORDER_REPLICATE,
        'reflection' BORDER_REFLECT, 'wrap' BORDER_WRAP.
    align_corners : bool
        ``match="torch"`` only: PyTorch's normalized-coordinate convention
        (True with ``match="opencv"`` raises ``ValueError``).
    match : {'opencv', 'torch'}
        'opencv': ``M`` maps source pixels to destination pixels (pixel i's
        centre at i); 'torch': ``M`` is ``F.affine_grid``'s theta (output
        normalized coordinates to input normalized coordinates).
    inverse_map : bool
        'opencv' only: ``M`` maps destination to source (``WARP_INVERSE_MAP``);
        True with ``match="torch"`` raises ``ValueError``. Without it ``M`` must be
        invertible (``ValueError`` otherwise); it is inverted as
        ``cv2.invertAffineTransform`` does, scale-aware, so that tiny matrices
        whose determinant underflows (``1e-170 * np.eye(2, 3)``) still warp.
    out : array, optional
        Destination of the output's shape and dtype, C-contiguous.
    layout : {None, 'NCHW', 'NHWC', 'CHW', 'HWC', 'HW'}
        The axes of ``img`` (and of the output), as for
        :func:`fastinterp.grid_sample`: None reads a 4-D array as NCHW and a
        2-D one as HW; a 3-D image needs 'CHW' or 'HWC'. A single image is
        warped as a batch of one (``M`` then (2, 3) or (1, 2, 3)).

    Returns
    -------
    array (N, C, H_out, W_out) in img's layout, img's dtype.

    Conventions
    -----------
    OpenCV rounds its sample positions to 1/32 pixel (INTER_BITS); fastinterp
    samples at the exact positions, so values differ from ``cv2.warpAffine``
    by at most the image's change over 1/64 pixel. With ``match="torch"`` the
    result equals ``grid_sample(img, affine_grid(M, (N, C, H_out, W_out)))``
    up to the rounding of the grid (computed here in float64, rounded once).

    A uint8 image (CPU, forward only) is sampled as :func:`fastinterp.grid_sample`
    samples one: in float32 at the exact positions, each output rounded half
    to even and saturated to [0, 255] (``cv2.warpAffine`` also rounds its
    weights to 15 bits, so the two differ by a grey level here and there).

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> img = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> shift = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])   # one pixel to the right
    >>> fi.warp_affine(img, shift, (3, 3))[0, 0]
    array([[0., 0., 1.],
           [0., 3., 4.],
           [0., 6., 7.]])
    """
    return _forward("warp_affine", img, M, dsize, match, mode, padding_mode, align_corners,
                    inverse_map, layout, out, fill, rows=2)


@overload
def warp_perspective(img: NumPyLike, M: NumPyLike, dsize: Sizes, mode: SampleMode = "bilinear",
                     padding_mode: PaddingMode = "zeros", align_corners: Flag = False,
                     match: WarpMatch = "opencv", inverse_map: Flag = False,
                     out: Array | None = None, fill: Fill = None, *,
                     layout: ImageLayout | None = None) -> Array: ...
@overload
def warp_perspective(img: Any, M: Any, dsize: Sizes, mode: SampleMode = "bilinear",
                     padding_mode: PaddingMode = "zeros", align_corners: Flag = False,
                     match: WarpMatch = "opencv", inverse_map: Flag = False, out: Any = None,
                     fill: Fill = None, *, layout: ImageLayout | None = None) -> Any: ...
@public_call
def warp_perspective(img: Any, M: Any, dsize: Sizes, mode: SampleMode = "bilinear",
                     padding_mode: PaddingMode = "zeros", align_corners: Flag = False,
                     match: WarpMatch = "opencv", inverse_map: Flag = False, out: Any = None,
                     fill: Fill = None, *, layout: ImageLayout | None = None) -> Any:
    """Warp images by homographies (``cv2.warpPerspective``).

    Parameters
    ----------
    img : array (N, C, H, W) float32, float64 or uint8 (CPU), or another shape named by ``layout``
    M : array (3, 3) or (N, 3, 3)
        Homography (one for the batch or one per image); ``match`` and
        ``inverse_map`` as in :func:`warp_affine` ('torch': normalized
        output coordinates to normalized input coordinates).
    dsize, mode, padding_mode, align_corners, match, inverse_map, out, fill, layout
        As :func:`warp_affine`.

    Returns
    -------
    array (N, C, H_out, W_out) in img's layout, img's dtype.

    Conventions
    -----------
    An output pixel whose homogeneous coordinate w is 0 maps to a point at
    infinity, which is sampled as a point far outside the image (0 with
    'zeros' padding). See :func:`warp_affine` for OpenCV's 1/32-pixel rounding.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> img = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> fi.warp_perspective(img, np.eye(3), (4, 4))[0, 0, 1]
    array([4., 5., 6., 7.])
    """
    return _forward("warp_perspective", img, M, dsize, match, mode, padding_mode, align_corners,
                    inverse_map, layout, out, fill, rows=3)


@ieee_subnormals         # the frontends' entry (torch, JAX): the environment of a public call
def _warp_as(op, img, M, dsize, mode="bilinear", padding_mode="zeros", align_corners=False,
             match="opencv", inverse_map=False, out=None, fill=None, *, layout=None):
    """:func:`warp_affine` (:func:`warp_perspective` for ``op="warp_perspective"``) with
    its errors under the name ``op``: the frontends' ``rotate`` is a warp_affine."""
    rows = 3 if op == "warp_perspective" else 2
    return _forward(op, img, M, dsize, match, mode, padding_mode, align_corners, inverse_map,
                    layout, out, fill, rows=rows)


@overload
def warp_affine_backward(grad_output: NumPyLike, img: NumPyLike, M: NumPyLike, dsize: Sizes,
                         mode: SampleMode = "bilinear", padding_mode: PaddingMode = "zeros",
                         align_corners: Flag = False, match: WarpMatch = "opencv",
                         inverse_map: Flag = False, needs_input_grad: Literal[True] = True,
                         needs_matrix_grad: Literal[True] = True, fill: Fill = None, *,
                         layout: ImageLayout | None = None, deterministic: Flag = True
                         ) -> tuple[Array, Array]: ...
@overload
def warp_affine_backward(grad_output: NumPyLike, img: NumPyLike, M: NumPyLike, dsize: Sizes,
                         mode: SampleMode = "bilinear", padding_mode: PaddingMode = "zeros",
                         align_corners: Flag = False, match: WarpMatch = "opencv",
                         inverse_map: Flag = False, needs_input_grad: Flag = True,
                         needs_matrix_grad: Flag = True, fill: Fill = None, *,
                         layout: ImageLayout | None = None, deterministic: Flag = True
                         ) -> tuple[Array | None, Array | None]: ...
@overload
def warp_affine_backward(grad_output: Any, img: Any, M: Any, dsize: Sizes,
                         mode: SampleMode = "bilinear", padding_mode: PaddingMode = "zeros",
                         align_corners: Flag = False, match: WarpMatch = "opencv",
                         inverse_map: Flag = False, needs_input_grad: Flag = True,
                         needs_matrix_grad: Flag = True, fill: Fill = None, *,
                         layout: ImageLayout | None = None, deterministic: Flag = True
                         ) -> tuple[Any, Any]: ...
@public_call
def warp_affine_backward(grad_output: Any, img: Any, M: Any, dsize: Sizes,
                         mode: SampleMode = "bilinear", padding_mode: PaddingMode = "zeros",
                         align_corners: Flag = False, match: WarpMatch = "opencv",
                         inverse_map: Flag = False, needs_input_grad: Flag = True,
                         needs_matrix_grad: Flag = True, fill: Fill = None, *,
                         layout: ImageLayout | None = None, deterministic: Flag = True) -> Any:
    """Gradients of :func:`warp_affine` with respect to the image and the matrix.

    Parameters
    ----------
    grad_output : array, warp_affine's output shape
    img, M, dsize, mode, padding_mode, align_corners, match, inverse_map, fill, layout
        As given to :func:`warp_affine`.
    needs_input_grad, needs_matrix_grad : bool
        Which gradients to compute; a skipped one is None.
    deterministic : bool
        CUDA images only, as for :func:`grid_sample_backward`: True sums the image
        gradient in fixed point (bit-reproducible; needs a finite ``grad_output``),
        False with atomic float adds. The CPU is always deterministic.

    Returns
    -------
    (grad_img, grad_M)
        ``grad_img`` has img's shape; ``grad_M`` has M's shape (summed over the
        batch when one M served all images). Both have img's dtype and array
        type (a NumPy ``grad_M`` for CUDA images).

    Conventions
    -----------
    Exact derivatives of the forward (grid_sample's backward, then the chain
    rule through the grid and, for ``match="opencv"`` without
    ``inverse_map``, through the matrix inverse). Deterministic: sums run in
    a fixed order in float64.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> img = np.ones((1, 1, 4, 4))
    >>> gi, gM = fi.warp_affine_backward(np.ones((1, 1, 4, 4)), img, np.eye(2, 3), (4, 4))
    >>> gi.shape, gM.shape
    ((1, 1, 4, 4), (2, 3))
    """
    return _backward("warp_affine_backward", grad_output, img, M, dsize, match, mode,
                     padding_mode, align_corners, inverse_map, layout, needs_input_grad,
                     needs_matrix_grad, fill, rows=2, deterministic=deterministic)


@overload
def warp_perspective_backward(grad_output: NumPyLike, img: NumPyLike, M: NumPyLike, dsize: Sizes,
                              mode: SampleMode = "bilinear", padding_mode: PaddingMode = "zeros",
                              align_corners: Flag = False, match: WarpMatch = "opencv",
                              inverse_map: Flag = False, needs_input_grad: Literal[True] = True,
                              needs_matrix_grad: Literal[True] = True, fill: Fill = None, *,
                              layout: ImageLayout | None = None, deterministic: Flag = True
                              ) -> tuple[Array, Array]: ...
@overload
def warp_perspective_backward(grad_output: NumPyLike, img: NumPyLike, M: NumPyLike, dsize: Sizes,
                              mode: SampleMode = "bilinear", padding_mode: PaddingMode = "zeros",
                              align_corners: Flag = False, match: WarpMatch = "opencv",
                              inverse_map: Flag = False, needs_input_grad: Flag = True,
                              needs_matrix_grad: Flag = True, fill: Fill = None, *,
                              layout: ImageLayout | None = None, deterministic: Flag = True
                              ) -> tuple[Array | None, Array | None]: ...
@overload
def warp_perspective_backward(grad_output: Any, img: Any, M: Any, dsize: Sizes,
                              mode: SampleMode = "bilinear", padding_mode: PaddingMode = "zeros",
                              align_corners: Flag = False, match: WarpMatch = "opencv",
                              inverse_map: Flag = False, needs_input_grad: Flag = True,
                              needs_matrix_grad: Flag = True, fill: Fill = None, *,
                              layout: ImageLayout | None = None, deterministic: Flag = True
                              ) -> tuple[Any, Any]: ...
@public_call
def warp_perspective_backward(grad_output: Any, img: Any, M: Any, dsize: Sizes,
                              mode: SampleMode = "bilinear", padding_mode: PaddingMode = "zeros",
                              align_corners: Flag = False, match: WarpMatch = "opencv",
                              inverse_map: Flag = False, needs_input_grad: Flag = True,
                              needs_matrix_grad: Flag = True, fill: Fill = None, *,
                              layout: ImageLayout | None = None, deterministic: Flag = True) -> Any:
    """Gradients of :func:`warp_perspective` with respect to the image and the homography.

    Parameters and returns as :func:`warp_affine_backward` (``grad_M`` of M's shape).

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> img = np.ones((1, 1, 4, 4))
    >>> gi, gM = fi.warp_perspective_backward(np.ones((1, 1, 4, 4)), img, np.eye(3), (4, 4))
    >>> gM.shape
    (3, 3)
    """
    return _backward("warp_perspective_backward", grad_output, img, M, dsize, match, mode,
                     padding_mode, align_corners, inverse_map, layout, needs_input_grad,
                     needs_matrix_grad, fill, rows=3, deterministic=deterministic)


@public_call
def rotation_matrix(angle: Real, center: Point, scale: Real = 1.0) -> Array:
    """The 2x3 pixel matrix of a rotation about ``center`` (``cv2.getRotationMatrix2D``).

    Parameters
    ----------
    angle : float
        Degrees, counter-clockwise as seen on screen (y pointing down).
    center : (x, y)
        Pixel coordinates of the fixed point (pixel i's centre at i), used in
        float64 (cv2 rounds them to float32 first: the same matrix whenever
        float32 holds the centre exactly, as it holds ``((W - 1) / 2, (H - 1) / 2)``).
    scale : float
        Isotropic scale factor.

    ``angle``, ``scale`` and both coordinates of ``center`` must be finite
    real numbers: ``TypeError`` for another type (None, a string, a bool),
    ``ValueError`` for nan or inf.

    Returns
    -------
    ndarray (2, 3), float64, mapping source pixels to destination pixels.

    Examples
    --------
    >>> import fastinterp as fi
    >>> fi.rotation_matrix(90, (1.0, 1.0)).round(12) + 0.0
    array([[ 0.,  1.,  0.],
           [-1.,  0.,  2.]])
    """
    return _rotation_matrix("rotation_matrix", angle, center, scale)


def _rotation_matrix(op, angle, center, scale):
    """:func:`rotation_matrix`, its errors under the name ``op``."""
    return np.array(_rotation_rows(op, angle, center, scale))


def _rotation_rows(op, angle, center, scale):
    """The two rows of :func:`rotation_matrix` as tuples of numbers (from which the torch
    frontend builds its matrix: a centre computed from a traced shape stays symbolic)."""
    rad = math.radians(finite_float(op, "angle", angle))
    s = finite_float(op, "scale", scale)
    a, b = s * math.cos(rad), s * math.sin(rad)
    cx, cy = _center(op, center)
    return (a, b, (1 - a) * cx - b * cy), (-b, a, b * cx + (1 - a) * cy)


def _rotate_rows(op, angle, center, scale):
    """:func:`_rotation_rows` for :func:`rotate`, which inverts the rotation: a ValueError
    naming ``scale`` when it is 0, or so small that the inverse overflows. (Symbolic
    numbers of a traced torch function pass: the warp checks the matrix when it runs.)"""
    rows = _rotation_rows(op, angle, center, scale)
    s = finite_float(op, "scale", scale)
    if symbolic(s) or any(symbolic(v) for row in rows for v in row):
        return rows
    if s == 0:
        shown = repr(scale) if type(scale) in (int, float) else repr(s)
        raise ValueError(f"{op}: scale must be non-zero; got {shown}.")
    _check_finite_rows(op, rows, center, s)
    inverse = (None if not abs(1.0 / s) < math.inf else      # rotation_matrix(-angle, c, 1/s)
               _rotation_rows(op, -finite_float(op, "angle", angle), center, 1.0 / s))
    if inverse is None or not all(abs(v) < math.inf for row in inverse for v in row):
        raise ValueError(f"{op}: scale must be non-zero and large enough for the rotation's "
                         f"inverse to be finite (in float64); got {s!r}.")
    return rows


def _check_finite_rows(op, rows, center, scale):
    """A rotation matrix whose entries overflow float64 (a huge centre or scale): a
    ValueError naming center and scale, the arguments it is made of."""
    if not all(abs(v) < math.inf for row in rows for v in row):
        raise ValueError(f"{op}: center and scale must give a rotation matrix that float64 "
                         f"can hold; got center={center!r}, scale={scale!r}, whose matrix is "
                         f"{[list(r) for r in rows]}.")


@ieee_subnormals
def _rotate_matrix(op, angle, center, scale):
    """:func:`_rotate_rows` as a (2, 3) float64 array."""
    return np.array(_rotate_rows(op, angle, center, scale))


def _center(op, center):
    """A rotation centre (x, y) as two finite floats."""
    try:
        vals = entries(center)
    except TypeError:
        vals = None
    if vals is None:
        raise TypeError(f"{op}: center must be a pair (x, y) of numbers; got {center!r}.")
    if len(vals) != 2:
        raise ValueError(f"{op}: center must be a pair (x, y) of numbers; got {len(vals)} "
                         f"of them ({center!r}).")
    return tuple(finite_float(op, f"center[{i}]", v) for i, v in enumerate(vals))


@overload
def rotate(img: NumPyLike, angle: Real, center: Point | None = None, scale: Real = 1.0,
           mode: SampleMode = "bilinear", padding_mode: PaddingMode = "zeros",
           out: Array | None = None, fill: Fill = None, *,
           layout: ImageLayout | None = None) -> Array: ...
@overload
def rotate(img: Any, angle: Real, center: Point | None = None, scale: Real = 1.0,
           mode: SampleMode = "bilinear", padding_mode: PaddingMode = "zeros", out: Any = None,
           fill: Fill = None, *, layout: ImageLayout | None = None) -> Any: ...
@public_call
def rotate(img: Any, angle: Real, center: Point | None = None, scale: Real = 1.0,
           mode: SampleMode = "bilinear", padding_mode: PaddingMode = "zeros", out: Any = None,
           fill: Fill = None, *, layout: ImageLayout | None = None) -> Any:
    """Rotate images about ``center`` by ``angle`` degrees (counter-clockwise), same size.

    Parameters
    ----------
    img : array (N, C, H, W) float32/float64 or uint8, or another shape named by ``layout``
    angle : float
        Degrees, counter-clockwise on screen (OpenCV's and kornia's sign).
    center : (x, y), optional
        Pixel coordinates of the fixed point; default the image centre
        ``((W - 1) / 2, (H - 1) / 2)``.
    scale : float
        Isotropic scale, non-zero (the rotation is inverted): 0, or a scale so
        small that the inverse overflows float64, raises ``ValueError``.
    mode, padding_mode, out, fill, layout
        As :func:`warp_affine`.

    Returns
    -------
    array of img's shape: ``warp_affine(img, rotation_matrix(angle, center, scale),
    (H, W), match="opencv")``. For gradients, call :func:`warp_affine_backward`
    with that matrix.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> img = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> fi.rotate(img, 90)[0, 0].round(12)
    array([[2., 5., 8.],
           [1., 4., 7.],
           [0., 3., 6.]])
    """
    if isinstance(img, (list, tuple)):      # read as every op reads a list
        img = _to_numpy(img, "numpy", "rotate", "img")
    img = from_dlpack_only(img)             # its shape gives the centre: read it as an array
    _, _, H, W = _image_layout("rotate", img, layout).split(img.shape)
    if center is None:
        center = ((W - 1) / 2.0, (H - 1) / 2.0)
    M = _rotate_matrix("rotate", angle, center, scale)
    return _forward("rotate", img, M, (H, W), "opencv", mode, padding_mode, False, False,
                    layout, out, fill, rows=2)
