"""Per-axis sampling rules of ``resize(..., match="opencv" | "pil")``.

Each function returns one axis's taps as ``(idx, w)``: ``idx`` (K, n_out)
source indices and ``w`` (K, n_out) float64 weights (entries past an
output's last tap have weight 0), computed with the library's own
arithmetic (float32 where OpenCV uses float, double where Pillow does), and
:func:`fixed_weights` gives the integer weights of the libraries' uint8
paths. The kernels then apply them (fastinterp.resize).

OpenCV (``cv2.resize``, 4.x/5.x ``resize.cpp``)
    ``scale = 1 / (out / in)`` in double. INTER_NEAREST: ``min(floor(o * scale),
    in - 1)``. INTER_LINEAR / INTER_CUBIC: source ``f = float((o + 0.5) * scale
    - 0.5)``, taps at ``floor(f) + {0, 1}`` (linear: a coordinate before the
    first or at/after the last pixel snaps to it) or ``floor(f) + {-1..2}``
    (Keys cubic, a = -0.75, border replicated); uint8 weights are
    ``round(w * 2048)`` (11 bits). INTER_AREA when both axes shrink: box
    weights of the overlap of output cell ``[o * s, (o + 1) * s)`` with each
    input pixel, in float32; otherwise OpenCV's "area-mode" linear weights.
Pillow (``Image.resize``, ``Resample.c``)
    Output ``o`` is centred at ``(o + 0.5) * scale``; the filter (triangle,
    Keys cubic a = -0.5, Lanczos a = 3, box) is stretched by ``scale`` when
    shrinking; taps ``[int(c - support + 0.5), int(c + support + 0.5))``
    clipped to the image, weights normalised to sum 1 in double, then to
    22-bit integers. NEAREST samples ``((o * FIX(scale) + FIX(scale / 2)) >> 16)``
    in 16.16 fixed point.
"""
from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["opencv_taps", "pil_taps", "opencv_variant", "area_fast_kinds", "pil_vertical_first",
           "fixed_weights", "OPENCV_BITS", "PIL_BITS"]

OPENCV_BITS = 11   # INTER_RESIZE_COEF_BITS
PIL_BITS = 22      # PRECISION_BITS = 32 - 8 - 2
_F32 = np.float32


# --------------------------------------------------------------------------- OpenCV

def _cv_scale(n_in, n_out):
    return 1.0 / (float(n_out) / float(n_in))


def _cv_cubic(x):
    """OpenCV's interpolateCubic (A = -0.75) in float32 (of a scalar or an array)."""
    A = _F32(-0.75)
    x = np.asarray(x, dtype=_F32)
    one = _F32(1)
    c0 = ((A * (x + one) - _F32(5) * A) * (x + one) + _F32(8) * A) * (x + one) - _F32(4) * A
    c1 = ((A + _F32(2)) * x - (A + _F32(3))) * x * x + one
    c2 = ((A + _F32(2)) * (one - x) - (A + _F32(3))) * (one - x) * (one - x) + one
    c3 = one - c0 - c1 - c2
    return [c0, c1, c2, c3]


def opencv_variant(mode, in_hw, out_hw, channels, dtype="uint8") -> str:
    """Which of its rules cv2.resize applies to this 2-D geometry.

    For mode 'area' (and 'bilinear' halving both axes, which OpenCV runs as
    INTER_AREA): ``"area_fast"`` for float images shrunk by integer factors (its
    fast path: each block's sum times ``float32(1 / (fy * fx))``; see
    :func:`area_fast_kinds`), ``"area"`` (box weights) when neither axis grows,
    ``"area2x2"`` for exact halving of both with 1, 3 or 4 channels (its
    vector path: the same weights, rounded half up), ``"linear"`` (its
    area-mode linear weights) otherwise. For 'bicubic': ``"float"`` (float
    weights: 1, 3 or 4 channels) or ``"fixed"`` (11-bit weights: 2 or more
    than 4 channels). With fixed weights OpenCV's vector loop rounds the
    vertical sum half to even; ties need weights that are whole multiples of
    2^-11 on both axes (halving, doubling, unchanged axes), and there the float
    weights are those same numbers, so such geometries take ``"float"`` (exact,
    rounded half to even). ``"float_positions"`` for 'bilinear' and 'bicubic'
    on float32 images (``dtype``, the image's dtype name), with 1, 3 or 4
    channels and no input axis of one pixel (bicubic: of fewer than four):
    OpenCV 5's vector paths take those sample positions in float64, where
    uint8 images, other channel counts and narrower inputs have them rounded
    to float32; ``"double_positions"`` for 'bilinear' on such float64 images,
    whose fractions and weights stay in float64 too.
    Otherwise ``""``.
    """
    scales = [_cv_scale(i, o) for i, o in zip(in_hw, out_hw)]
    vector_path = channels in (1, 3, 4) and min(in_hw) > 1
    if mode == "bicubic":
        if dtype == "float32" and vector_path and min(in_hw) >= 4:
            return "float_positions"
        if channels in (1, 3, 4) or all(_cv_dyadic_cubic(i, o) for i, o in zip(in_hw, out_hw)):
            return "float"
        return "fixed"
    if mode not in ("area", "bilinear"):
        return ""
    if scales == [2.0, 2.0]:
        return "area2x2" if channels in (1, 3, 4) else "area"
    if mode == "area" and dtype != "uint8" and all(s >= 1 and abs(s - round(s)) < 2.2e-16
                                                   for s in scales):
        return "area_fast"
    if mode == "bilinear" and dtype != "uint8" and vector_path:
        return "double_positions" if dtype == "float64" else "float_positions"
    if mode == "bilinear":
        return ""
    return "area" if min(scales) >= 1 else "linear"


@functools.lru_cache(maxsize=512)      # one bool per axis geometry: asked on every call
def _cv_dyadic_cubic(n_in, n_out) -> bool:
    """Whether every INTER_CUBIC weight of this axis is a whole multiple of 2^-11."""
    if n_in == n_out:
        return True
    w = opencv_taps("bicubic", n_in, n_out)[1] * float(1 << OPENCV_BITS)
    return bool(np.all(w == np.round(w)))


def area_fast_kinds(in_hw, out_hw):
    """The per-axis ``area_kind`` of an ``"area_fast"`` geometry: the rows summed
    (``"area_sum"``, weight 1), the columns weighted by ``float32(1 / (fy * fx))``
    (``"area_mean/<fy>"``), so that each output is its block's sum times OpenCV's one
    rounded factor (``float32(1 / f)`` on each axis rounds twice: 5e-8 off in float64)."""
    fy = int(round(_cv_scale(in_hw[0], out_hw[0])))
    return "area_sum", f"area_mean/{fy}"


def _cv_area_fast(n_in, n_out, area_kind):
    """Box taps of an integer factor with the weights of :func:`area_fast_kinds`."""
    idx, w = _cv_area(n_in, n_out)
    if area_kind == "area_sum":
        value = 1.0
    else:
        other = int(area_kind.split("/")[1])
        value = float(_F32(1.0 / (int(round(_cv_scale(n_in, n_out))) * other)))
    return idx, np.where(w != 0, value, 0.0)


def _cv_area(n_in, n_out):
    """INTER_AREA box weights of a shrinking axis: output ``o`` covers ``[o * s, (o + 1) * s)``.

    Its taps: a partial first pixel, the whole pixels, a partial last pixel
    (partial ones only when they overlap by more than 1e-3), weights in float32.
    """
    scale = _cv_scale(n_in, n_out)
    f1 = np.arange(n_out) * scale
    f2 = f1 + scale
    cell = np.minimum(scale, n_in - f1)
    s2 = np.minimum(np.floor(f2), n_in - 1).astype(np.int64)
    s1 = np.minimum(np.ceil(f1), s2).astype(np.int64)
    first = s1 - f1 > 1e-3
    mid = s2 - s1
    last = f2 - s2 > 1e-3
    count = first + mid + last
    K = max(1, int(count.max()))
    j = np.arange(K)[:, None] - first[None, :]        # tap position past the partial first pixel
    idx = np.where(j < 0, s1 - 1, np.where(j < mid, s1 + j, s2))
    w_first = ((s1 - f1) / cell).astype(_F32)
    w_mid = (1.0 / cell).astype(_F32)
    w_last = (np.minimum(np.minimum(f2 - s2, 1.0), cell) / cell).astype(_F32)
    w = np.where(j < 0, w_first, np.where(j < mid, w_mid, w_last)).astype(np.float64)
    real = np.arange(K)[:, None] < count[None, :]
    end = np.where(count > 0, idx[np.maximum(count - 1, 0), np.arange(n_out)], 0)
    return np.where(real, idx, end[None, :]), np.where(real, w, 0.0)


def _two_product(a, b):
    """``(p, e)`` with ``p = fl(a * b)`` and ``p + e == a * b`` exactly (Dekker's product,
    Veltkamp's split), for float64 arrays."""
    def split(x):
        t = 134217729.0 * x            # 2**27 + 1
        hi = t - (t - x)
        return hi, x - hi
    p = a * b
    (ah, al), (bh, bl) = split(a), split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _vector_positions(n_in, n_out):
    """OpenCV 5's float64 sample positions of its vector paths, ``fma(o + 0.5, n_in /
    n_out, -0.5)``: one rounding (``(o + 0.5) * scale - 0.5`` in two roundings is off by
    up to an ulp of the position: 2e-13 at 1000 px), as (floor, fraction).

    ``p - 0.5`` is exact for ``p >= 0.25`` (below, the position is under -0.25: a tap
    outside the image, whose fraction OpenCV ignores on x and that moves a sum of one
    border pixel by an ulp at most on y), so adding the product's error rounds once."""
    p, e = _two_product(np.arange(n_out) + 0.5, n_in / n_out)
    f = (p - 0.5) + e
    sx = np.floor(f)
    return sx, f - sx


def opencv_taps(mode, n_in, n_out, area_kind="", axis="x"):
    """One axis of cv2.resize: mode 'nearest', 'bilinear', 'bicubic' or 'area'.

    Linear taps before the first or past the last pixel snap to it on the x
    axis; on the y axis OpenCV keeps both weights and reads the border row
    twice (which its uint8 rounding can tell apart). Sample positions are
    rounded to float32 before their fractions are taken, except for
    ``area_kind="float_positions"`` and ``"double_positions"`` (float64
    fractions and weights; see :func:`opencv_variant`).
    """
    double = area_kind == "double_positions"
    frac = np.float64 if double else _F32
    scale = _cv_scale(n_in, n_out)
    o = np.arange(n_out)
    if mode == "nearest":
        idx = np.minimum(np.floor(o * scale).astype(np.int64), n_in - 1)
        return idx[None, :], np.ones((1, n_out))
    if mode == "area" and area_kind.startswith("area_") and area_kind != "area_fast":
        return _cv_area_fast(n_in, n_out, area_kind)
    if mode in ("area", "bilinear") and area_kind in ("area", "area2x2"):
        if n_in == n_out:
            return o[None, :].astype(np.int64), np.ones((1, n_out))
        return _cv_area(n_in, n_out)
    dx = o.astype(np.float64)
    if mode == "area":   # INTER_AREA on a growing axis: OpenCV's "area mode" linear
        sx = np.floor(dx * scale)
        fx = ((dx + 1) - (sx + 1) * (float(n_out) / float(n_in))).astype(_F32)
        fx = np.where(fx <= 0, _F32(0), (fx - np.floor(fx.astype(np.float64))).astype(_F32))
    elif area_kind in ("float_positions", "double_positions"):
        sx, fx = _vector_positions(n_in, n_out)
        fx = fx.astype(frac)
    else:
        f = ((dx + 0.5) * scale - 0.5).astype(_F32).astype(np.float64)
        sx = np.floor(f)
        fx = (f - sx).astype(frac)
    sx = sx.astype(np.int64)
    if mode == "bicubic":
        w = np.stack(_cv_cubic(fx)).astype(np.float64)
        idx = np.clip(sx[None, :] - 1 + np.arange(4)[:, None], 0, n_in - 1)
        return idx, w
    if axis == "x":   # a coordinate before the first or past the last pixel snaps to it
        edge = (sx < 0) | (sx >= n_in - 1)
        sx = np.where(sx < 0, 0, np.where(sx >= n_in - 1, n_in - 1, sx))
        fx = np.where(edge, frac(0), fx)
    idx = np.clip(np.stack([sx, sx + 1]), 0, n_in - 1)
    w = np.stack([(frac(1) - fx).astype(frac), fx]).astype(np.float64)
    return idx, w


# --------------------------------------------------------------------------- Pillow

def sinc(x):
    """sin(pi x) / (pi x) of a float64 array: 1 at 0 and exactly 0 at the other integers
    (sin(pi k) is about 1e-16, not 0), so that a Lanczos tap at a whole-pixel distance
    has weight 0 and is never read: a sample position on a pixel takes that pixel alone."""
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sin(np.pi * x) / (np.pi * x)
    return np.where(x == np.round(x), np.where(x == 0, 1.0, 0.0), s)


def _pil_filter(mode):
    """(support, filter on a float64 array) of Pillow's resampling filters."""
    if mode == "bilinear":
        return 1.0, lambda x: np.where(np.abs(x) < 1, 1.0 - np.abs(x), 0.0)
    if mode == "bicubic":
        def cubic(x, a=-0.5):
            x = np.abs(x)
            near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
            far = (((x - 5) * x + 8) * x - 4) * a
            return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))
        return 2.0, cubic
    if mode == "lanczos":
        return 3.0, lambda x: np.where((x >= -3.0) & (x < 3.0), sinc(x) * sinc(x / 3), 0.0)
    if mode == "area":   # Pillow's BOX
        return 0.5, lambda x: np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)
    raise ValueError(mode)


def pil_taps(mode, n_in, n_out):
    """One axis of PIL's Image.resize: 'nearest', 'bilinear', 'bicubic', 'lanczos', 'area' (BOX)."""
    if mode == "nearest":   # ImagingScaleAffine: positions accumulated in double
        scale = float(n_in) / float(n_out)
        steps = np.full(n_out, scale)
        steps[0] = scale * 0.5
        idx = np.cumsum(steps).astype(np.int64)   # cumsum adds in order, as the C loop
        return np.minimum(idx, n_in - 1)[None, :], np.ones((1, n_out))
    if n_in == n_out:      # Pillow skips the pass of an axis whose size is unchanged
        return np.arange(n_in)[None, :], np.ones((1, n_in))
    support, filt = _pil_filter(mode)
    scale = float(n_in) / float(n_out)
    filterscale = max(scale, 1.0)
    support = support * filterscale
    K = int(math.ceil(support)) * 2 + 1
    center = (np.arange(n_out) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)   # C's (int): truncation
    xmax = np.minimum((center + support + 0.5).astype(np.int64), n_in) - xmin
    j = np.arange(K)[:, None]
    w = filt(((j + xmin[None, :]).astype(np.float64) - center[None, :] + 0.5)
             * (1.0 / filterscale))
    w = np.where(j < xmax[None, :], w, 0.0)
    total = w.sum(axis=0)   # Pillow sums in tap order; sums of <= 19 doubles agree to an ulp
    w = np.where(total != 0, w / np.where(total != 0, total, 1.0), w)
    last = xmin + np.maximum(xmax, 1) - 1
    idx = np.where(j < xmax[None, :], j + xmin[None, :], last[None, :])
    return np.clip(idx, 0, n_in - 1), w


def pil_vertical_first(in_hw, out_hw) -> bool:
    """Whether Pillow runs its vertical pass first: from Pillow 13 on, when the height
    shrinks by more than twice the pixels the width loses (a growing width loses a
    negative count); ties and everything else run horizontally first. Each pass
    rounds to uint8, so the order decides the bits."""
    (h, w), (oh, ow) = in_hw, out_hw
    return oh < h and h - oh > 2 * (w - ow)


# --------------------------------------------------------------------------- integer weights

def fixed_weights(w, match) -> np.ndarray:
    """The libraries' integer weights for uint8 data (int32, scaled by 2^bits).

    OpenCV: ``saturate_cast<short>(w * 2048)`` (round half to even).
    Pillow: ``(int)(w * 2^22 + 0.5)`` (``- 0.5`` for negative weights), truncated.
    """
    if match == "opencv":
        v = np.rint(w.astype(_F32) * _F32(1 << OPENCV_BITS))
        return np.clip(v, -32768, 32767).astype(np.int32)
    scaled = w * float(1 << PIL_BITS)
    return np.trunc(np.where(w < 0, scaled - 0.5, scaled + 0.5)).astype(np.int32)
