"""Resizing and area pooling: ``resize`` (alias ``interpolate``), ``adaptive_avg_pool2d``
and their analytic backward passes.

Values follow ``torch.nn.functional.interpolate`` and
``torch.nn.functional.adaptive_avg_pool2d`` for every mode. Every mode is a
separable linear map: each axis gets a small tap table (source indices and
weights per output index, built once per geometry and kept in a
byte-bounded cache), the kernels resample rows then columns (or columns then
rows, whichever is cheaper), and the backward passes run the same gather
kernels on the transposed tables, so gradients are deterministic and
bit-identical for any thread count.

Special values: a tap of weight 0 is never read, so an inf or NaN pixel
reaches exactly the outputs whose weight for it is non-zero, and the result
is the linear map applied over its non-zero entries (torch's bilinear and
bicubic kernels also form ``0 * inf = NaN`` from zero-weight taps).

Conventions (PyTorch's)
-----------------------
A pixel ``i`` covers ``[i, i + 1)`` with its centre at ``i + 0.5``.

- ``align_corners=False`` (bilinear/bicubic default): output centre ``o + 0.5``
  maps to input ``(o + 0.5) * scale`` with ``scale = in / out`` (or
  ``1 / scale_factor`` when a scale factor is given and not recomputed); the
  corner *edges* of the two images coincide. Bilinear clamps negative source
  coordinates to 0; bicubic replicates border pixels.
- ``align_corners=True``: the centres of the corner pixels coincide: output
  ``o`` maps to ``o * (in - 1) / (out - 1)``.
- ``nearest``: input ``floor(o * scale)`` (the legacy rule, OpenCV's
  ``INTER_NEAREST``); ``nearest-exact``: input ``floor((o + 0.5) * scale)``
  (pixel centres, PIL's and OpenCV's ``INTER_NEAREST_EXACT``); with torch's
  two index rules (outputs with H_out + W_out <= 128 in float32 and with
  exact shortcuts for kept and doubled axes; see ``_nearest_table``).
- ``area``: ``adaptive_avg_pool2d`` to the output size: output cell ``o``
  averages input ``[floor(o * in / out), ceil((o + 1) * in / out))``; cells
  overlap when the sizes do not divide.
- ``antialias=True`` (bilinear/bicubic): PIL-style filtering whose support
  widens by the downscale factor (triangle filter; Keys cubic with a = -0.5
  for bicubic, as in torch and PIL).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from . import _memory, _plans, _registry as registry
from ._config import fork_safe_lock, threads_for
from ._dispatch import _dtype_name, begin, public_call
from . import _resize_presets as presets
from ._layout import LAYOUTS, check_layout_name, resolve as resolve_layout
from ._typing import (Array, Flag, ImageLayout, NumPyLike, PoolSize, Reals, ResizeMatch, ResizeMode,
                      Shape, Size)
from ._validate import (AXIS_MAX, _one_real, as_index, from_dlpack_only, check_array, check_bool, check_dtype,
                        check_option, check_out, check_uint8_on_cpu, entries, float_dtype, is_int as _is_int,
                        int_digits, is_real_scalar, is_scalar, shape_str)

__all__ = ["resize", "interpolate", "resize_backward", "adaptive_avg_pool2d",
           "adaptive_avg_pool2d_backward", "MODES", "MATCHES", "LAYOUTS", "adaptive_avg_pool1d",
           "adaptive_avg_pool1d_backward", "adaptive_avg_pool3d", "adaptive_avg_pool3d_backward"]

MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area", "lanczos")
MATCHES = ("torch", "opencv", "pil")
# the modes each preset offers (pil's 'area' is Image.BOX)
_PRESET_MODES = {"torch": MODES,
                 "opencv": ("nearest", "bilinear", "bicubic", "area"),
                 "pil": ("nearest", "bilinear", "bicubic", "lanczos", "area")}
_INTERPOLATING = ("bilinear", "bicubic", "lanczos")
_ORDER_V_FIRST, _ORDER_H_FIRST = 0, 1
_F32, _F64 = np.float32, np.float64
_U8 = np.dtype(np.uint8)
_FLOAT_DTYPES = (np.dtype(_F32), np.dtype(_F64))
_IMAGE_DTYPES = _FLOAT_DTYPES + (_U8,)   # what the forward ops take
_DTYPE_NAME = {np.dtype(_F32): "float32", np.dtype(_F64): "float64",
               _U8: "uint8"}   # dtype.name is slow


# --------------------------------------------------------------------------- table cache

def _nbytes(obj: object) -> int:
    """Bytes held by the arrays in a cache key or value (tables, tuples of arrays)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, AxisTable):
        return obj.idx.nbytes + obj.w.nbytes
    if isinstance(obj, tuple):
        return sum(_nbytes(o) for o in obj)
    return 0


class _ByteLRU:
    """A thread-safe least-recently-used cache bounded by the bytes it holds.

    Tables are cached so that repeated calls with one geometry build them
    once; a table larger than ``entry_limit`` bytes is built on every call
    and never kept, so a wide one-off geometry costs no memory after the
    call. Keys count too (a transposed table's key is its forward table).
    """

    def __init__(self, budget: int, entry_limit: int):
        self.budget = budget
        self.entry_limit = entry_limit
        self._lock = fork_safe_lock()
        self._items: OrderedDict = OrderedDict()   # key -> (value, nbytes)
        self.nbytes = 0

    def get(self, key, make):
        """The cached value of ``key``, else ``make()`` (stored when it fits)."""
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit[0]
        value = make()   # outside the lock: two threads may build equal values
        size = _nbytes(key) + _nbytes(value)
        if size <= self.entry_limit:
            with self._lock:
                if key not in self._items:
                    self._items[key] = (value, size)
                    self.nbytes += size
                while self.nbytes > self.budget and self._items:
                    _, (_, freed) = self._items.popitem(last=False)
                    self.nbytes -= freed
        return value

    def clear(self):
        with self._lock:
            self._items.clear()
            self.nbytes = 0

    def __len__(self):
        return len(self._items)


# All resize tables share one budget: 32 MiB, no single entry over 4 MiB
# (a bilinear float32 table of ~250k outputs); larger ones are rebuilt per call.
_TABLE_CACHE = _ByteLRU(budget=32 << 20, entry_limit=4 << 20)


def _cached(fn):
    """Memoise ``fn`` in the shared byte-bounded table cache (keyed by its arguments)."""
    @functools.wraps(fn)
    def wrapper(*args):
        return _TABLE_CACHE.get((fn.__name__,) + args, lambda: fn(*args))
    wrapper.cache = _TABLE_CACHE      # type: ignore[attr-defined]  # (a function attribute)
    return wrapper


# --------------------------------------------------------------------------- tap tables

@dataclass(frozen=True, eq=False)   # hashed by identity: tables are cached objects
class AxisTable:
    """One axis of a separable resize: output ``o`` = sum_k ``w[k, o] * input[idx[k, o]]``.

    ``idx`` (int32) and ``w`` (the data dtype) are ``(K, n_out)``, tap-major.
    Rows of fewer real taps are padded by repeating their last tap with weight
    0; the kernels never use a tap of weight 0 (padding, exact sample
    positions, merged repeats), so an inf elsewhere cannot become NaN. Every
    index, padding included, lies in ``[0, n_in)``: the vectorised gathers
    load every tap and select by weight afterwards.
    Each (output, source) pair appears at most once with a non-zero weight.
    ``unit`` means K == 1 with every weight exactly 1 (a pure gather).
    Integer weights (``w`` int32, uint8 images only) are fixed point: the
    pass computes ``sum w * v`` and, when ``shift > 0``, rounds it to
    ``(sum + 2^(shift-1)) >> shift``, saturated to [0, 255].
    """

    idx: np.ndarray
    w: np.ndarray
    n_in: int
    unit: bool
    shift: int = 0

    def __post_init__(self):
        if self.idx.size and (int(self.idx.min()) < 0 or int(self.idx.max()) >= self.n_in):
            raise AssertionError(f"resize tap table: indices must lie in [0, {self.n_in}); got "
                                 f"[{int(self.idx.min())}, {int(self.idx.max())}].")

    @property
    def taps(self) -> int:
        return self.idx.shape[0]

    @property
    def n_out(self) -> int:
        return self.idx.shape[1]

    @functools.cached_property
    def means(self) -> bool:
        """Whether every output is a mean of its taps: non-negative weights summing to 1 but
        for their rounding (area, the pools, antialiased shrinks; not a backward's
        transposed table, whose sums exceed 1). Computed once per (cached) table."""
        w = self.w
        return bool((w >= 0).all()) and float(
            w.sum(axis=0, dtype=np.float64).max(initial=0.0)) <= 1 + w.shape[0] * 2.0**-23


def _readonly(*arrays):
    for a in arrays:
        a.flags.writeable = False


def _merge_repeated_taps(idx, w):
    """Sum the weights of consecutive taps of one output that read the same index.

    Each output's indices are non-decreasing in every table built here
    (bicubic's clamped border taps repeat an index), so the result has one
    tap per (output, source) pair: the coefficient of the linear map. The
    repeats keep their index with weight 0 (not read by the kernels), so a
    border pixel of inf gives inf where its summed weight is non-zero, and
    is ignored where the summed weight is exactly 0, instead of
    ``w0 * inf + w1 * inf`` = NaN for weights of opposite signs.
    """
    same = idx[1:] == idx[:-1]
    if not same.any():
        return w
    w = w.copy()
    if not np.any(w[1:][same]):
        # only zero weights repeat an index (the padding of ranges tables, any number
        # of taps): the fold below adds +0 to each run's first tap, and zeroes the rest
        before = np.zeros_like(same)
        before[1:] = same[:-1]
        w[:-1][same & ~before] += 0
        w[1:][same] = 0
        return w
    for k in range(idx.shape[0] - 1, 0, -1):   # fold each run into its first tap
        w[k - 1] = np.where(same[k - 1], w[k - 1] + w[k], w[k - 1])
        w[k] = np.where(same[k - 1], 0, w[k])
    return w


def _make_table(idx: Any, w: Any, n_in: int, dtype: Any) -> AxisTable:
    idx = np.ascontiguousarray(idx, dtype=np.int32)
    w = _merge_repeated_taps(idx, np.ascontiguousarray(w, dtype=dtype))
    if idx.shape[0] > 1 and np.all(w[0] == 1) and not np.any(w[1:]):
        idx, w = idx[:1].copy(), w[:1].copy()   # an identity axis: 1*x + 0*x[same]
    unit = idx.shape[0] == 1 and bool(np.all(w == 1))
    _readonly(idx, w)
    return AxisTable(idx, w, int(n_in), unit)


def _ranges_table(start: Any, count: Any, weights: Any, n_in: int, dtype: Any) -> AxisTable:
    """A table from contiguous tap ranges: taps ``start[o] + j`` for ``j < count[o]``.

    ``weights`` is ``(K, n_out)``; entries at ``j >= count[o]`` are ignored and
    become padding (the last real tap repeated with weight 0).
    """
    K = weights.shape[0]
    j = np.arange(K)[:, None]
    real = j < count[None, :]
    last = start + np.maximum(count, 1) - 1
    idx = np.where(real, start[None, :] + j, last[None, :])
    idx = np.clip(idx, 0, n_in - 1)
    return _make_table(idx, np.where(real, weights, 0), n_in, dtype)


def _area_scale(dt, n_in, n_out, align_corners, sf):
    """torch's area_pixel_compute_scale in the kernel's arithmetic type."""
    if align_corners:
        return dt(n_in - 1) / dt(n_out - 1) if n_out > 1 else dt(0)
    if sf is not None and sf > 0:
        return dt(1.0 / sf)
    return dt(n_in) / dt(n_out)


def _source_index(dt, scale, n_out, align_corners, cubic):
    """torch's area_pixel_compute_source_index for every output index, in ``dt``.

    For float32 the half-pixel formula is one fused multiply-add, as torch's
    compiled kernels evaluate it (the float64 product of two float32 values
    is exact, so rounding it once to float32 is the fused result); its operand
    ``o + 0.5`` is torch's float32 sum, rounded from 2**23 on (long signals).
    """
    o = np.arange(n_out, dtype=np.float64)
    if align_corners:
        return (dt(scale) * o.astype(dt)).astype(dt)
    if dt is _F32:
        half = (o.astype(_F32) + _F32(0.5)).astype(np.float64)
        src = (np.float64(scale) * half - 0.5).astype(_F32)
    else:
        src = scale * (o + 0.5) - 0.5
    if not cubic:
        src = np.maximum(src, dt(0))
    return src


def _guard(dt, src, n_in):
    """torch's guard_index_and_lambda: (floor index clamped to n_in - 1, fraction in [0, 1])."""
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = np.clip(src - i0.astype(dt), dt(0), dt(1)).astype(dt)
    return i0, lam


def _nearest_table(dt, n_in, n_out, sf, exact, small):
    """torch's nearest / nearest-exact source indices for one axis.

    torch's CPU kernel has two index rules, chosen by the output size
    (``small``: H_out + W_out <= 128, see :func:`_nearest_is_small`):

    - small outputs: ``nearest_idx`` / ``nearest_exact_idx``: a float32 scale
      (``1 / scale_factor`` or ``in / out``), the product in float32
      ('nearest': ``o * scale``) or in double rounded to float32
      ('nearest-exact': ``(o + 0.5) * scale``), then floor; 'nearest' copies
      (``o``) when the axis keeps its size and halves (``o // 2``) when it
      doubles, whatever the scale factor;
    - larger outputs: the source coordinate in the data's precision
      (``o * scale``, or the half-pixel formula plus 0.5), narrowed to
      float32 before the floor, with no shortcut.

    Both clamp to ``n_in - 1``.
    """
    o = np.arange(n_out)
    if small:
        if not exact and n_out == n_in:
            idx = o
        elif not exact and n_out == 2 * n_in:
            idx = o // 2
        else:
            scale = _area_scale(_F32, n_in, n_out, False, sf)
            if exact:
                pos = (np.float64(scale) * (o + 0.5)).astype(_F32)
            else:
                pos = o.astype(_F32) * scale
            idx = np.floor(pos).astype(np.int64)
    else:
        scale = _area_scale(dt, n_in, n_out, False, sf)
        if exact:
            src = _source_index(dt, scale, n_out, False, cubic=False)
            pos = (src.astype(np.float64) + 0.5).astype(_F32)
        else:
            pos = (dt(scale) * o.astype(dt)).astype(_F32)
        idx = np.floor(pos).astype(np.int64)
    idx = np.minimum(idx, n_in - 1)
    return _make_table(idx[None, :], np.ones((1, n_out)), n_in, dt)


def _nearest_is_small(out_hw: tuple[int, int]) -> bool:
    """Whether torch's CPU nearest kernel uses its small-output index rule.

    Measured on torch 2.13 over many sizes and scales: outputs with
    H_out + W_out <= 128 take ``nearest_idx`` (float32 scale, exact shortcuts
    for kept and doubled axes), larger ones the main kernel's arithmetic.
    """
    return out_hw[0] + out_hw[1] <= _NEAREST_SMALL_SUM


_NEAREST_SMALL_SUM = 128


def _linear_table(dt, n_in, n_out, align_corners, sf):
    if n_in == n_out:
        o = np.arange(n_out)
        return _make_table(o[None, :], np.ones((1, n_out)), n_in, dt)
    scale = _area_scale(dt, n_in, n_out, align_corners, sf)
    i0, lam1 = _guard(dt, _source_index(dt, scale, n_out, align_corners, False), n_in)
    i1 = i0 + (i0 < n_in - 1)
    return _make_table(np.stack([i0, i1]), np.stack([dt(1) - lam1, lam1]), n_in, dt)


def _cubic_table(dt, n_in, n_out, align_corners, sf):
    scale = _area_scale(dt, n_in, n_out, align_corners, sf)
    i0, t = _guard(dt, _source_index(dt, scale, n_out, align_corners, True), n_in)
    idx = np.clip(i0[None, :] + np.arange(-1, 3)[:, None], 0, n_in - 1)
    from ._cpu import resize as cpu_resize
    w = np.empty((4, n_out), dt)
    cpu_resize.cubic_coefficients(np.ascontiguousarray(t, dtype=dt), w)
    return _make_table(idx, w, n_in, dt)


# half-widths of the antialiasing filters (in input pixels, before widening)
_AA_SUPPORT = {"linear": 1, "cubic": 2, "lanczos": 3}


def _aa_filter(dt, x, kind):
    x = np.abs(x)
    if kind == "linear":
        return np.where(x < 1, dt(1) - x, dt(0)).astype(dt)
    if kind == "lanczos":   # sinc(x) sinc(x / 3) on |x| < 3, evaluated in float64
        xd = x.astype(np.float64)
        return np.where(xd < 3, presets.sinc(xd) * presets.sinc(xd / 3), 0.0).astype(dt)
    a = dt(-0.5)
    near = ((a + 2) * x - (a + 3)) * x * x + dt(1)
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, dt(0))).astype(dt)


def _antialias_table(dt, n_in, n_out, align_corners, sf, kind, widen=True):
    """torch's antialiased (PIL-style) taps: the filter support grows with the downscale.

    ``kind`` is 'linear', 'cubic' or 'lanczos'; ``widen=False`` keeps the
    filter's own support when shrinking (lanczos without antialias).
    """
    if n_in == n_out:   # torch leaves an unchanged axis alone
        return _linear_table(dt, n_in, n_out, align_corners, sf)
    half = _AA_SUPPORT[kind]
    scale = _area_scale(dt, n_in, n_out, align_corners, sf)
    wide = widen and scale >= 1
    support = dt(half * float(scale)) if wide else dt(half)
    # torch's align_corners_delta: without antialias, align_corners puts output o at
    # o * scale itself (scale = (n_in - 1) / (n_out - 1)), not at the centre of a cell
    delta = 0.5 if align_corners and not widen else 0.0
    o = np.arange(n_out, dtype=np.float64)
    center = (np.float64(scale) * (o + 0.5 - delta)).astype(dt)
    invscale = dt(1.0 / float(scale)) if wide else dt(1.0)
    xmin = np.maximum(np.trunc((center - support).astype(np.float64) + 0.5 + delta),
                      0).astype(np.int64)
    xsize = np.minimum(np.trunc((center + support).astype(np.float64) + 0.5 + delta)
                       .astype(np.int64), n_in) - xmin
    xsize = np.clip(xsize, 0, int(math.ceil(support)) * 2 + 1)
    K = max(1, int(xsize.max(initial=0)))   # no more taps than the longest window has
    j = np.arange(K)[:, None]
    arg = ((xmin + j).astype(dt) - center).astype(np.float64) + 0.5 - delta
    w = _aa_filter(dt, (arg * np.float64(invscale)).astype(dt), kind)
    w = np.where(j < xsize, w, dt(0)).astype(dt)
    # torch's running sum over the taps in order, in dt (a cumulative sum adds them one
    # after the other; a reduction may pair them up)
    total = np.cumsum(w, axis=0, dtype=dt)[-1]
    safe = np.where(total != 0, total, dt(1)).astype(dt)
    w = np.where(total != 0, w / safe, w).astype(dt)
    return _ranges_table(xmin, xsize, w, n_in, dt)


def _area_bounds(n_in, n_out):
    o = np.arange(n_out, dtype=np.int64)
    start = (o * n_in) // n_out
    end = ((o + 1) * n_in + n_out - 1) // n_out
    return start, end


def _area_table(dt, n_in, n_out):
    start, end = _area_bounds(n_in, n_out)
    count = end - start
    K = int(count.max())
    w = np.broadcast_to((dt(1) / count.astype(dt)).astype(dt), (K, n_out))
    return _ranges_table(start, count, w, n_in, dt)


@_cached
def axis_table(mode: str, n_in: int, n_out: int, align_corners: bool | None,
               scale_factor: float | None, antialias: bool, dtype: Any,
               small: bool = False) -> AxisTable:
    """The cached tap table of one axis (forward direction).

    ``small`` applies to the nearest modes only (torch's small-output index
    rule, see :func:`_nearest_table`); pass False for the other modes.
    """
    dt = np.dtype(dtype).type
    if mode == "area":
        return _area_table(dt, n_in, n_out)
    if mode in ("nearest", "nearest-exact"):
        return _nearest_table(dt, n_in, n_out, scale_factor, mode == "nearest-exact", small)
    if mode == "lanczos":
        return _antialias_table(dt, n_in, n_out, align_corners, scale_factor, "lanczos",
                                widen=antialias)
    if antialias:
        return _antialias_table(dt, n_in, n_out, align_corners, scale_factor,
                                "cubic" if mode == "bicubic" else "linear")
    if mode == "bilinear":
        return _linear_table(dt, n_in, n_out, align_corners, scale_factor)
    return _cubic_table(dt, n_in, n_out, align_corners, scale_factor)


def _fixed_table(idx: Any, w: Any, n_in: int, shift: int, merge: bool = True) -> AxisTable:
    """A table of int32 fixed-point weights (uint8 images; see AxisTable).

    With ``merge``, trailing tap rows whose weights are all 0 (Pillow's tables
    are sized for the widest support) are dropped: the same sums, fewer taps.

    ``merge=False`` keeps repeated taps apart (OpenCV rounds each product).
    """
    if merge:
        nz = np.flatnonzero(np.any(w != 0, axis=1))
        keep = int(nz[-1]) + 1 if nz.size else 1   # trailing taps of weight 0 add nothing
        idx, w = idx[:keep], w[:keep]
    idx = np.ascontiguousarray(idx, dtype=np.int32)
    w = np.ascontiguousarray(w, dtype=np.int32)
    if merge:
        w = _merge_repeated_taps(idx, w)
    _readonly(idx, w)
    return AxisTable(idx, w, int(n_in), False, int(shift))


@_cached
def preset_table(match: str, mode: str, n_in: int, n_out: int, area_kind: Any, dtype: str,
                 axis: str) -> AxisTable:
    """One axis of ``resize(match="opencv" | "pil")`` in the kernels' form.

    ``dtype`` is the image's ('float32', 'float64' or 'uint8'); ``axis`` is
    'y' or 'x' (the passes of the uint8 fixed-point paths differ); ``area_kind``
    is OpenCV's rule for the whole geometry
    (:func:`~fastinterp._resize_presets.opencv_variant`), else ignored.

    uint8 images get the library's own integer weights where the library
    uses them: OpenCV's 11-bit weights for INTER_LINEAR and area-mode linear
    (horizontal sums kept, ``>> 22`` after the vertical pass), Pillow's
    22-bit weights for every filter (each pass rounded to uint8, as Pillow
    does); nearest modes, OpenCV's INTER_CUBIC up to 4 channels (OpenCV 5
    applies float weights to such uint8 images) and its INTER_AREA box
    weights use float32 weights (rounded half to even, as ``saturate_cast``
    does).
    """
    if match == "opencv":
        idx, w = presets.opencv_taps(mode, n_in, n_out, area_kind, axis)
    else:
        idx, w = presets.pil_taps(mode, n_in, n_out)
    float_weights = mode == "nearest" or (match == "opencv" and area_kind in ("float", "area"))
    if dtype != "uint8" or float_weights:
        dt = _F32 if dtype == "uint8" else np.dtype(dtype).type
        return _make_table(idx, w.astype(dt), n_in, dt)
    if match == "pil":
        return _fixed_table(idx, presets.fixed_weights(w, "pil"), n_in, presets.PIL_BITS)
    shift = 0 if axis == "x" else 2 * presets.OPENCV_BITS
    return _fixed_table(idx, presets.fixed_weights(w, "opencv"), n_in, shift, merge=False)


@_cached
def transposed_table(table: AxisTable) -> AxisTable:
    """The adjoint axis table (maps gradients of the outputs to the inputs).

    Entries of one (input, output) pair are summed (bicubic's clamped border
    taps); each input's outputs are listed in increasing order, so backward
    sums run in one fixed order.
    """
    K, n_out = table.idx.shape
    n_in = table.n_in
    o = np.broadcast_to(np.arange(n_out), (K, n_out)).ravel()
    i = table.idx.ravel().astype(np.int64)
    w = table.w.ravel()
    key = i * n_out + o
    order = np.argsort(key, kind="stable")
    key, w = key[order], w[order]
    uniq, first = np.unique(key, return_index=True)
    wsum = np.add.reduceat(w, first) if len(first) else w[:0]
    ui, uo = uniq // n_out, uniq % n_out
    count = np.bincount(ui, minlength=n_in)
    KT = max(int(count.max()) if count.size else 1, 1)
    pos = np.arange(len(ui)) - np.concatenate([[0], np.cumsum(count)[:-1]])[ui]
    idx = np.zeros((KT, n_in), np.int64)
    wt = np.zeros((KT, n_in), table.w.dtype)
    idx[pos, ui] = uo
    wt[pos, ui] = wsum
    # pad each input's list with its last output (weight 0)
    last = np.zeros(n_in, np.int64)
    has = count > 0
    last[has] = idx[count[has] - 1, np.nonzero(has)[0]]
    j = np.arange(KT)[:, None]
    idx = np.where(j < count[None, :], idx, last[None, :])
    idx_t = np.ascontiguousarray(idx, dtype=np.int32)
    wt = np.ascontiguousarray(wt)
    unit = KT == 1 and bool(np.all(wt == 1))
    _readonly(idx_t, wt)
    return AxisTable(idx_t, wt, n_out, unit)


_NO_PERM = (np.zeros(0, np.int32), np.zeros((1, 1), np.int32), 0)


def _blocks(idx, B):
    """(smallest tap, tap span) of each block of B consecutive outputs."""
    K, n = idx.shape
    nb = -(-n // B)
    pad = np.pad(idx, ((0, 0), (0, nb * B - n)), mode="edge").reshape(K, nb, B)
    base = pad.min(axis=(0, 2))
    return base, pad.max(axis=(0, 2)) - base


@_cached
def permute_form(table: AxisTable) -> tuple[np.ndarray, np.ndarray, int]:
    """``(base, rel, block)`` for the CPU kernels' gather-free horizontal pass.

    Outputs go in blocks; the form exists when every block's taps fit in a
    window of source values starting at its smallest tap: ``base[b]`` is
    that start and ``rel = idx - base``. ``block`` is 0 for blocks of V
    outputs (V = 16 float32 / 8 float64 lanes) in a window of 2V values, or
    the block size (V, else V/2) for a window of 4V values. This covers any
    upscale and downscales by up to 4 (antialiased ones by up to ~3.5).
    Otherwise empty arrays.
    """
    from ._cpu import resize as cpu_resize
    if not cpu_resize.HAVE_PERM:
        return _NO_PERM
    V = cpu_resize.PERM_BLOCK[table.w.dtype.name]
    for B, window, block in ((V, 2 * V, 0), (V, 4 * V, V), (V // 2, 4 * V, V // 2)):
        base, span = _blocks(table.idx, B)
        if int(span.max()) < window:
            break
    else:
        return _NO_PERM
    rel = (table.idx - np.repeat(base, B)[:table.n_out][None, :]).astype(np.int32)
    base = base.astype(np.int32)
    _readonly(base, rel)
    return base, rel, block


# Interleaved channels up to this count are handled by expanding the x table
# to one tap list per (pixel, channel) value, so that NHWC rows take the
# same vectorised single-channel path as NCHW rows.
_EXPAND_CHANNELS = 4


@_cached
def channel_table(table: AxisTable, channels: int) -> AxisTable:
    """The x table over a row of interleaved channels: value ``x*C + c`` reads ``idx*C + c``."""
    c = np.arange(channels)
    idx = (table.idx[:, :, None].astype(np.int64) * channels + c).reshape(table.taps, -1)
    w = np.repeat(table.w, channels, axis=1)
    idx = np.ascontiguousarray(idx, dtype=np.int32)
    _readonly(idx, w)
    return AxisTable(idx, w, table.n_in * channels, table.unit, table.shift)


_NO_PAIRS = (None, None, None, None)


@_cached
def pair_form(table: AxisTable) -> tuple[Any, Any, Any, Any]:
    """``(base, rel, wlo, whi)``: an int32 x table for the uint8 kernel's 16-bit pass.

    The horizontal pass of fixed-point tables (kernels/cpu/_u8simd.h) runs
    blocks of ``U8_PAIR_BLOCK`` outputs whose taps all lie in a window of
    ``U8_PAIR_WINDOW`` source values starting at ``base[b]``, two taps per
    16-bit multiply-add: ``rel`` holds each tap's place in its window and
    ``wlo`` its weight, tap pairs interleaved (block, pair, output, tap).
    Weights beyond int16 (Pillow's 22 bits) are split into ``whi * 2^15 +
    wlo`` with ``0 <= wlo < 2^15``; ``whi`` is None when they fit. All None
    when the build lacks the pass or a block's taps span a wider window
    (downscales by more than about 3).
    """
    from ._cpu import resize as cpu_resize
    if not cpu_resize.HAVE_U8_PAIRS or table.w.dtype != np.int32:
        return _NO_PAIRS
    B, window = cpu_resize.U8_PAIR_BLOCK, cpu_resize.U8_PAIR_WINDOW
    K, n = table.idx.shape
    P, nb = -(-K // 2), -(-n // B)
    idx = np.pad(table.idx, ((0, 2 * P - K), (0, nb * B - n)), mode="edge").reshape(2 * P, nb, B)
    w = np.pad(table.w.astype(np.int64), ((0, 2 * P - K), (0, nb * B - n))).reshape(2 * P, nb, B)
    base = idx.min(axis=(0, 2))
    if int((idx.max(axis=(0, 2)) - base).max()) >= window:
        return _NO_PAIRS

    def interleave(a):   # (2P, nb, B) -> (nb, P, B, 2), flat int16
        a = a.reshape(P, 2, nb, B).transpose(2, 0, 3, 1)
        return np.ascontiguousarray(a, dtype=np.int16).ravel()

    rel = interleave(idx - base[None, :, None])
    if w.min() >= -(1 << 15) and w.max() < (1 << 15):
        wlo, whi = interleave(w), None
    else:
        wlo, whi = interleave(w & 0x7FFF), interleave(w >> 15)
    base = base.astype(np.int32)
    _readonly(*(a for a in (base, rel, wlo, whi) if a is not None))
    return base, rel, wlo, whi


@_cached
def u8_permute_form(table: AxisTable
                    ) -> tuple[AxisTable, tuple[np.ndarray, np.ndarray, int]]:
    """``(table', (base, rel, block))``: a float32 x table for the uint8 kernel's permutes.

    The uint8 kernel's plain two-tap loop computes ``fma(w0, s0, w1 * s1)``
    in the builds that have the permutes, which apply the taps in table
    order (``w0 * s0``, then an fma per tap): two-tap tables are given with
    their taps swapped so that the sums, and the rounded bytes, stay the
    same. ``(table, _NO_PERM)`` when there is no permute form.
    """
    if table.w.dtype != np.float32:
        return table, _NO_PERM
    form = permute_form(table)
    if len(form[0]) == 0:
        return table, _NO_PERM
    if table.taps != 2:
        return table, form
    swapped = AxisTable(np.ascontiguousarray(table.idx[::-1]), np.ascontiguousarray(table.w[::-1]),
                        table.n_in, table.unit, table.shift)
    _readonly(swapped.idx, swapped.w)
    base, rel, block = form
    rel = np.ascontiguousarray(rel[::-1])
    _readonly(rel)
    return swapped, (base, rel, block)


def image_pass_order(ytab: AxisTable, xtab: AxisTable, in_w: int) -> int:
    """The pass order of the separable kernel for an image ``in_w`` pixels wide, in any
    layout: the one-channel (NCHW) call's. The order decides the rounding, so an image
    gives the same bits stored either way (a torch channels_last tensor runs the NHWC
    kernel without a copy; a chunk of a Dask image takes the whole image's order)."""
    return pass_order(ytab, xtab, in_w, 1, len(permute_form(xtab)[0]) > 0)


@_cached
def pass_order(ytab: AxisTable, xtab: AxisTable, in_w: int, channels: int,
               permuted: bool = False) -> int:
    """Rows-first or columns-first, whichever needs less arithmetic.

    Horizontal taps are gathers (costlier than the contiguous vertical
    blends) unless a tap moves over several interleaved channels or the
    permute form applies.
    """
    gather = 3.0 if channels == 1 and not permuted else 1.0
    out_w = xtab.n_out * channels
    in_w = in_w * channels
    rows_used = len(np.unique(ytab.idx))
    h_first = rows_used * out_w * xtab.taps * gather + ytab.n_out * out_w * ytab.taps
    v_first = ytab.n_out * in_w * ytab.taps + ytab.n_out * out_w * xtab.taps * gather
    if ytab.unit:
        v_first = ytab.n_out * out_w * xtab.taps * gather
    return _ORDER_H_FIRST if h_first < v_first else _ORDER_V_FIRST


# --------------------------------------------------------------------------- kernels

def _separable_cpu(out, x, ytab, xtab, channels):
    """Registry kernel (CPU): ``out[p] = A_y @ x[p] @ A_x.T`` over planes.

    ``out`` is (P, H_out, W_out*C) and ``x`` (P, H_in, W_in*C), C-contiguous;
    ``ytab``/``xtab`` are AxisTable; ``channels`` is C (1 for NCHW).
    """
    from ._cpu import resize as cpu_resize
    order = image_pass_order(ytab, xtab, x.shape[2] // channels)
    if 1 < channels <= _EXPAND_CHANNELS:
        xtab, channels = channel_table(xtab, channels), 1
    perm = permute_form(xtab) if channels == 1 else _NO_PERM
    nthreads = threads_for(out.size + x.size, _MIN_PER_THREAD)
    args = (out, x, ytab.idx, ytab.w, ytab.unit, xtab.idx, xtab.w, xtab.unit, perm[0], perm[1],
            perm[2], channels, order, nthreads)
    if out.dtype != _F32 or not _averages(ytab, xtab):
        cpu_resize.separable_fwd(*args)
        return
    with np.errstate(over="ignore"):    # long windows: float64 sums rounded to inf, redone
        cpu_resize.separable_fwd(*args)
    if np.isinf(out).any():
        _redo_overflowed_means(cpu_resize, out, x, ytab, xtab, channels, order, nthreads)


def _separable_bwd_cpu(out, x, ytab, xtab, channels):
    """Registry kernel (CPU) of the backward ops: :func:`_separable_cpu` over the
    transposed tables, whose sums exceed 1 (an input pixel is read by many outputs): the
    first pass's partial sums may overflow where the exact gradient is finite (1e308
    through an upscale on one axis and a shrink on the other gave inf and NaN where
    torch's is 1.5e308). Planes that came out non-finite from a finite gradient are
    redone with headroom (:func:`_redo_overflowed_sums`)."""
    with np.errstate(over="ignore", invalid="ignore"):
        _separable_cpu(out, x, ytab, xtab, channels)
    if _sums_may_overflow(out, x, (ytab, xtab)):
        _redo_overflowed_sums(out, x, ytab, xtab, channels)


def _sums_may_overflow(out, x, tabs):
    """Whether ``out = map(x)`` by the transposed ``tabs`` may hold an inf or NaN: false
    when a bound rules it out, ``max|x|`` times each table's largest sum of absolute
    weights (the common case; a pass over ``x`` when it is the smaller array), else
    when the sum of ``out`` is not finite (a pass over ``out``; a false alarm only costs
    the check of :func:`_redo_overflowed_sums`)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if 2 * x.size <= out.size:
            peak = max(float(x.max()), -float(x.min())) if x.size else 0.0
            bound = peak
            for t in tabs:
                bound *= max(1.0, float(np.abs(t.w).sum(axis=0).max(initial=0.0)))
            if bound < float(np.finfo(out.dtype).max) / 2:      # NaN: not below
                return False
        return not np.isfinite(np.sum(out))


_HEADROOM = 64      # float64 gradients are redone scaled by 2**-_HEADROOM


def _redo_overflowed_sums(out, x, ytab, xtab, channels, order=None):
    """Entries of ``out`` (P, H_out, L_out) that are inf or NaN, recomputed where their
    partial sums cannot overflow: in float64 for float32 (then rounded: inf only where the
    exact value is beyond float32), for float64 with ``x`` scaled by an exact power of
    two, ``2**-64`` (then scaled back: inf only where the exact value is beyond
    float64). An entry an inf or NaN of ``x`` reaches stays inf or NaN (a plane holds
    every channel of an NHWC image: the others are redone). Entries that came out finite
    are kept. ``order``: the pass order of a chunk of a larger image (fastinterp.dask),
    whose tables are then already expanded over the channels as the image's call does."""
    from ._cpu import resize as cpu_resize
    bad = ~np.isfinite(out)
    planes = np.flatnonzero(bad.any(axis=(1, 2)))
    if not len(planes):
        return
    if order is None:
        order = image_pass_order(ytab, xtab, x.shape[2] // channels)
        if 1 < channels <= _EXPAND_CHANNELS:
            xtab, channels = channel_table(xtab, channels), 1
    nthreads = threads_for(out.size + x.size, _MIN_PER_THREAD)
    shift = _HEADROOM if out.dtype == np.float64 else 0
    src = np.ldexp(x[planes], -shift) if shift else x[planes]
    with np.errstate(over="ignore"):
        for p0, p1, out64 in cpu_resize._float64_groups(
                src, (len(planes),) + out.shape[1:], ytab.idx, ytab.w, ytab.unit, xtab.idx,
                xtab.w, xtab.unit, channels, order, nthreads):
            for plane, exact in zip(planes[p0:p1], out64):
                where = bad[plane]
                out[plane][where] = np.ldexp(exact[where], shift).astype(out.dtype)


def _averages(ytab, xtab):
    """Whether the tables take means of windows of 3 pixels or more (non-negative weights
    summing to 1 but for their rounding: area, the pools, antialiased shrinks), whose
    float32 weights (1/count, rounded) may take a mean of finite pixels near the largest
    float32 past it. Not a backward's transposed tables (their sums exceed 1: a true
    overflow), nor 2-tap interpolation (which overflows there as torch's does)."""
    return max(ytab.taps, xtab.taps) > 2 and ytab.means and xtab.means


def _redo_overflowed_means(cpu_resize, out, x, ytab, xtab, channels, order, nthreads):
    """Outputs of a float32 mean that came out inf: recomputed in float64 (the planes that
    hold one), where a window without an inf pixel has a finite mean, at most the
    largest float32 times the weights' rounding (1 + a few 2**-24): rounded to the
    largest float32 (the finite mean's nearest float32, to that rounding), not to inf."""
    big = np.finfo(_F32).max
    bad = np.isinf(out)
    planes = np.flatnonzero(bad.any(axis=(1, 2)))
    for p0, p1, out64 in cpu_resize._float64_groups(x[planes], (len(planes),) + out.shape[1:],
                                                    ytab.idx, ytab.w, ytab.unit, xtab.idx,
                                                    xtab.w, xtab.unit, channels, order,
                                                    nthreads):
        for plane, mean in zip(planes[p0:p1], out64):
            where = bad[plane]
            vals = mean[where]
            finite = np.isfinite(vals)
            vals[finite] = np.clip(vals[finite], -big, big)
            out[plane][where] = vals


@dataclass(frozen=True)
class _Box:
    """A uint8 integer-factor shrink run as block sums (``order`` of the uint8 kernel);
    ``rounding`` as the kernel's box_u8 takes it (0 half to even, 1 half up, 2 OpenCV's)."""

    fy: int
    fx: int
    rounding: int


def _box_plan(match, mode, in_hw, out_hw, channels, align_corners, antialias, scales):
    """The :class:`_Box` for a uint8 geometry that is a plain block mean, else None.

    Block means: area with integer factors (torch's adaptive pooling and
    OpenCV's fast INTER_AREA), and bilinear halving (torch: each axis
    halved or kept; OpenCV runs halving both axes as INTER_AREA). torch's
    preset rounds the exact mean half to even; OpenCV rounds its 2x2 vector
    path (1, 3 or 4 channels) half up and the rest as ``cvRound(float(sum) *
    (1.f / area))``, which rounds ties of large blocks either way. Pillow
    rounds each pass: not here.
    """
    (h, w), (oh, ow) = in_hw, out_hw
    if h % oh or w % ow or match == "pil":
        return None
    fy, fx = h // oh, w // ow
    if fy * fx * 255 >= 1 << 32:      # the block sums are exact in 32 bits: larger blocks
        return None                   # (over 16.8M pixels) take the float32 tables
    if mode == "bilinear":
        if match == "torch" and (antialias or align_corners or fy > 2 or fx > 2
                                 or any(s not in (None, 0.5) for s in scales)):
            return None
        if match == "opencv" and (fy, fx) != (2, 2):
            return None
    elif mode != "area":
        return None
    if match == "opencv" and presets.opencv_variant(mode, in_hw, out_hw, channels) == "linear":
        return None
    if match != "opencv":
        return _Box(fy, fx, 0)
    return _Box(fy, fx, 1 if (fy, fx) == (2, 2) and channels in (1, 3, 4) else 2)


def _separable_u8_cpu(out, x, ytab, xtab, channels, order=None):
    """Registry kernel (CPU, uint8): :func:`_separable_cpu` with uint8 rows in and out.

    Float tables are applied in float32 (each output rounded half to even
    and saturated), int32 tables in fixed point (see AxisTable); ``order``
    'vfirst' runs Pillow's vertical-first order, 'opencv_linear' rounds as
    OpenCV's vector loop; a :class:`_Box` runs exact block means instead.
    """
    from ._cpu import resize as cpu_resize
    nthreads = threads_for(out.size + x.size, _MIN_PER_THREAD * 4)
    if isinstance(order, _Box):
        cpu_resize.box_u8(out, x, order.fy, order.fx, channels, order.rounding, nthreads)
        return
    if channels > 1:
        xtab = channel_table(xtab, channels)
    if ytab.w.dtype != xtab.w.dtype:   # e.g. a float identity axis next to fixed-point taps
        raise TypeError(f"resize: uint8 tap tables must share one weight type; got "
                        f"{ytab.w.dtype} and {xtab.w.dtype}.")
    if ytab.w.dtype == np.float64:
        ytab, xtab = (AxisTable(t.idx, t.w.astype(_F32), t.n_in, t.unit) for t in (ytab, xtab))
    base, rel, wlo, whi = pair_form(xtab)
    xtab, perm = u8_permute_form(xtab)
    cpu_resize.separable_u8(out, x, ytab.idx, ytab.w, xtab.idx, xtab.w, xtab.shift, ytab.shift,
                            nthreads, order == "vfirst", order == "opencv_linear",
                            base, rel, wlo, whi, *perm)


# Values touched per extra thread: below this a parallel region costs more than it saves.
_MIN_PER_THREAD = 1 << 18

for _op in ("resize", "adaptive_avg_pool2d"):
    registry.register_builtin(_op, _separable_cpu, "fastinterp._cuda.resize:separable")
for _op in ("resize_backward", "adaptive_avg_pool2d_backward"):
    registry.register_builtin(_op, _separable_bwd_cpu, "fastinterp._cuda.resize:separable")
for _op in ("resize", "adaptive_avg_pool2d"):
    registry.register_builtin(_op, _separable_u8_cpu, None, dtypes=("uint8",))


# --------------------------------------------------------------------------- argument checks

def _check_mode_options(op, mode, align_corners, antialias, match="torch"):
    check_option(op, "mode", mode, MODES)
    if mode not in _PRESET_MODES[match]:
        raise ValueError(f"{op}: mode must be one of {', '.join(map(repr, _PRESET_MODES[match]))} "
                         f"with match={match!r}; got {mode!r}.")
    if mode in _INTERPOLATING and match == "torch":
        if align_corners is None:
            align_corners = False
        elif not isinstance(align_corners, (bool, np.bool_)):
            raise TypeError(f"{op}: align_corners must be a bool or None; got {align_corners!r}.")
    elif align_corners is not None:
        which = (f"mode={mode!r} (it applies to 'bilinear', 'bicubic' and 'lanczos' only)"
                 if match == "torch" else f"match={match!r} (the library fixes its pixel grid)")
        raise ValueError(f"{op}: align_corners must be None for {which}; got {align_corners!r}.")
    check_bool(op, "antialias", antialias)
    if antialias and (mode not in _INTERPOLATING or match != "torch"):
        raise ValueError(f"{op}: antialias=True needs mode 'bilinear', 'bicubic' or 'lanczos' "
                         f"and match='torch' (the presets filter as their library does); "
                         f"got mode={mode!r}, match={match!r}.")
    return bool(align_corners) if align_corners is not None else None, bool(antialias)


def _output_geometry(op, in_hw, size, scale_factor, mode, recompute_scale_factor):
    """(out_h, out_w), (scale_h, scale_w) as torch.nn.functional.interpolate derives them.

    The scales are None when the kernel must use ``in / out`` (a size was
    given, the mode is area, or recompute_scale_factor=True).
    """
    return _nd_geometry(op, in_hw, size, scale_factor, mode, recompute_scale_factor)


def _check_input(op, name, arr, lay, dtypes=_FLOAT_DTYPES):
    """The image's dtype (one of ``dtypes``), after checking it has H, W >= 1."""
    n, c, h, w = lay.split(arr.shape)
    if h < 1 or w < 1:
        raise ValueError(f"{op}: {name} must have H >= 1 and W >= 1; got {shape_str(arr.shape)}.")
    _check_extents_fit(op, name, arr.shape, (h, w))
    return check_dtype(op, name, arr, dtypes)


def _check_extents_fit(op, name, shape, extents):
    """Spatial ``extents`` must fit the int32 indices of the tap tables."""
    if max(extents) > AXIS_MAX:
        raise ValueError(f"{op}: {name} must have at most 2**31 - 1 pixels along each spatial "
                         f"axis (the tap tables index them with int32); got "
                         f"{shape_str(shape)}.")


def _input_size(op, input_size, grad_shape, lay):
    """The forward input's (H, W) from ``input_size`` (a full shape, (H, W), or an array)."""
    full = lay.axes
    try:
        dims = _size_dims(input_size)
    except TypeError:
        raise TypeError(f"{op}: input_size must be a shape {full} or (H, W); "
                        f"got {input_size!r}.") from None
    error = ValueError if all(_is_int(d) for d in dims) else TypeError
    if error is TypeError or len(dims) not in (2, lay.ndim):
        raise error(f"{op}: input_size must be a shape {full} or (H, W) of ints; "
                    f"got {input_size!r}.")
    dims = tuple(int(d) for d in dims)
    if len(dims) == lay.ndim and lay.ndim > 2:
        n, c, h, w = lay.split(dims)
        gn, gc, _, _ = lay.split(grad_shape)
        if (n, c) != (gn, gc):
            raise ValueError(f"{op}: input_size must have the same N and C as grad_output "
                             f"{shape_str(grad_shape)}; got {shape_str(dims)}.")
    else:
        h, w = dims
    if h < 1 or w < 1:
        raise ValueError(f"{op}: input_size must have H >= 1 and W >= 1; got {shape_str(dims)}.")
    return _axis_sizes_fit(op, "input_size", input_size, (h, w))


# --------------------------------------------------------------------------- the common call

def _plane_shape(nhwc, n, c, h, w):
    """The (P, rows, row_length) shape the kernels see of a 4-D array, and its channel step."""
    return ((n, h, w * c), c) if nhwc else ((n * c, h, w), 1)


def _planes(arr, nhwc, n, c, h, w):
    """A (P, rows, row_length) view of a C-contiguous 4-D array and its channel step."""
    shape, channels = _plane_shape(nhwc, n, c, h, w)
    return arr.reshape(shape), channels


def _channels_last_view(x):
    """For an NCHW-shaped NumPy array stored NHWC (torch channels_last): its NHWC view."""
    if isinstance(x, np.ndarray) and x.ndim == 4 and not x.flags.c_contiguous:
        t = x.transpose(0, 2, 3, 1)
        if t.flags.c_contiguous:
            return t
    return None


def _prepare(op, name, array, layout, dtypes=_FLOAT_DTYPES):
    """Dispatch one array argument: (prepared call, the array for the kernel, dtype, Layout)."""
    p = begin(op, **{name: array})
    arr = p.arrays[name]
    lay = resolve_layout(op, name, arr, layout)
    dtype = _check_input(op, name, arr, lay, dtypes)
    check_uint8_on_cpu(op, dtype, p.backend)
    return p, arr, dtype, lay


def _run(op, p, x, ytab, xtab, out, out_hw, lay, dtype, name, u8_order=None, plan_key=None):
    """Validate ``out``, allocate, run the registered separable kernel, wrap the result.

    With ``plan_key`` (a NumPy call's signature, see fastinterp._plans), a
    call that allocates its result from a C-contiguous input stores its plan.
    """
    n, c, h, w = lay.split(x.shape)
    oh, ow = out_hw
    shape = lay.join(n, c, oh, ow)
    nhwc = stored_nhwc = lay.nhwc
    if p.backend == "cpu":
        if out is None and lay.name == "NCHW":
            cl = _channels_last_view(x)
            if cl is not None:     # keep torch's channels_last layout, no copy
                x, stored_nhwc = cl, True
        if (plan_key is not None and out is None and p.storage is None
                and stored_nhwc == nhwc and x.flags.c_contiguous
                and _nbytes((ytab, xtab)) <= _plans.MAX_PLAN_BYTES):
            plan = _plan(op, dtype, lay, shape, (n, c, h, w, oh, ow), ytab, xtab, u8_order)
            _plans.store(plan_key, plan)
            return plan(x)
        x = np.ascontiguousarray(x)
    else:
        x = p.contiguous(x)    # a strided device array is copied once, as on the CPU
    if out is not None:
        out_caller, out_k = p.adopt_out(out)
        check_out(op, out_k, shape, dtype, {name: x})
    elif stored_nhwc and not nhwc:
        buf = _memory.empty((n, oh, ow, c), dtype)
        out_caller, out_k = buf.transpose(0, 3, 1, 2), buf
    else:
        out_caller, out_k = p.empty(shape, dtype)
    if n * c:
        _separable(op, p.backend, p.stream if p.backend == "cuda" else None, out_k, x, lay,
                   stored_nhwc, (n, c, h, w, oh, ow), ytab, xtab, u8_order)
    return p.wrap(out_caller)


def _plan(op, dtype, lay, shape, dims, ytab, xtab, u8_order):
    """A stored plan: ``plan(x)`` resizes a C-contiguous NumPy ``x`` of this call's
    shape into a new array, as :func:`_run` does on the CPU."""
    n, c, h, w, oh, ow = dims
    out3_shape, channels = _plane_shape(lay.nhwc, n, c, oh, ow)
    x3_shape, _ = _plane_shape(lay.nhwc, n, c, h, w)
    extra = () if u8_order is None else (u8_order,)

    def plan(x):
        out = _memory.empty(shape, dtype)
        if n * c:
            kernel = registry.lookup(op, "cpu", dtype)
            kernel(out.reshape(out3_shape), x.reshape(x3_shape), ytab, xtab, channels, *extra)
        return out
    return plan


def _separable(op, backend, stream, out_k, x, lay, stored_nhwc, dims, ytab, xtab, u8_order):
    """Run the registered separable kernel of ``op`` on C-contiguous ``x`` into ``out_k``
    (both in the layout ``lay``, stored channels-last when ``stored_nhwc``)."""
    n, c, h, w, oh, ow = dims
    out_k, x = lay.as_batched(out_k), lay.as_batched(x)   # one image: a batch of one (a view)
    out3, channels = _planes(out_k, stored_nhwc, n, c, oh, ow)
    x3, _ = _planes(x, stored_nhwc, n, c, h, w)
    kernel = registry.lookup(op, backend, out_k.dtype)
    if backend == "cuda":
        kernel(out3, x3, ytab, xtab, channels, stream=stream)
    elif u8_order is not None:   # uint8 fixed point in Pillow's or OpenCV's own order
        kernel(out3, x3, ytab, xtab, channels, u8_order)
    else:
        kernel(out3, x3, ytab, xtab, channels)


# --------------------------------------------------------------------------- public API

@overload
def resize(input: NumPyLike, size: Size | None = None, scale_factor: Reals | None = None,
           mode: ResizeMode = "bilinear", align_corners: Flag | None = None,
           antialias: Flag = False, out: Array | None = None, *,
           recompute_scale_factor: Flag | None = None, layout: ImageLayout | None = None,
           match: ResizeMatch = "torch") -> Array: ...
@overload
def resize(input: Any, size: Size | None = None, scale_factor: Reals | None = None,
           mode: ResizeMode = "bilinear", align_corners: Flag | None = None,
           antialias: Flag = False, out: Any = None, *,
           recompute_scale_factor: Flag | None = None, layout: ImageLayout | None = None,
           match: ResizeMatch = "torch") -> Any: ...
@public_call
def resize(input: Any, size: Size | None = None, scale_factor: Reals | None = None,
           mode: ResizeMode = "bilinear", align_corners: Flag | None = None,
           antialias: Flag = False, out: Any = None, *,
           recompute_scale_factor: Flag | None = None, layout: ImageLayout | None = None,
           match: ResizeMatch = "torch") -> Any:
    """Resize images; values equal ``torch.nn.functional.interpolate`` (or OpenCV / Pillow).

    Parameters
    ----------
    input : array, float32, float64 or uint8
        The images (NumPy, a CUDA array, or a DLPack tensor such as a torch
        CPU tensor) in ``layout``: a batch (N, C, H, W) by default, or a
        single image (H, W), (H, W, C), (C, H, W) (any C). uint8 runs on
        the CPU. 1-D data (N, C, L) (a 3-D input with ``layout=None``, as
        torch reads it) and volumes (N, C, D, H, W) are resized too (CPU
        arrays, float; modes 'linear' / 'trilinear', 'nearest',
        'nearest-exact', 'area'; ``size`` and ``scale_factor`` then take 1
        or 3 entries).
    size : int or (int, int), optional
        Output (H_out, W_out). Exactly one of ``size`` and ``scale_factor``.
    scale_factor : float or (float, float), optional
        Output size ``floor(H * s_h), floor(W * s_w)``. As in torch, the
        sampling positions then use ``1 / scale_factor`` (not ``H / H_out``)
        unless ``recompute_scale_factor=True`` or ``mode="area"`` (or a
        ``match`` preset, which always samples at ``H / H_out``).
    mode : {'bilinear', 'nearest', 'nearest-exact', 'bicubic', 'area', 'lanczos'}
        Note the default is 'bilinear' (torch's ``interpolate`` defaults to
        'nearest'). 'lanczos' is the Lanczos filter with a = 3 (6 taps;
        widened when shrinking if ``antialias=True``, as Pillow always does).
    align_corners : bool or None
        Only for 'bilinear'/'bicubic'/'lanczos' with ``match="torch"`` (None
        means False); must be None otherwise.
    antialias : bool
        ``match="torch"`` bilinear/bicubic/lanczos only: PIL-style low-pass
        filtering when shrinking.
    out : array, optional
        C-contiguous destination of the output shape and dtype; must not
        overlap ``input``.
    recompute_scale_factor : bool or None
        torch's flag: True samples at ``H / H_out`` even with a scale factor.
    layout : {None, 'NCHW', 'NHWC', 'CHW', 'HWC', 'HW'}
        The axes of ``input`` and of the result. None (default) reads a 4-D
        array as 'NCHW' and a 2-D one as 'HW'; a 3-D array needs 'CHW' or
        'HWC' (an (H, W, 3) image from PIL or OpenCV is 'HWC'). An
        NCHW-shaped CPU input stored channels-last (torch ``channels_last``)
        is processed in place and its result keeps that memory layout.
    match : {'torch', 'opencv', 'pil'}
        Whose sampling rules to follow: torch's ``F.interpolate`` (default),
        ``cv2.resize`` (modes nearest = INTER_NEAREST, bilinear =
        INTER_LINEAR, bicubic = INTER_CUBIC, area = INTER_AREA) or Pillow's
        ``Image.resize`` (nearest, bilinear, bicubic, lanczos, area = BOX;
        filters widened when shrinking). See the module
        :mod:`fastinterp._resize_presets` for the rules.

    Returns
    -------
    array of the input's layout and dtype with (H_out, W_out), the caller's array type.

    Conventions
    -----------
    PyTorch's pixel-centre conventions (see the module docstring and
    the README's resize section for the table against OpenCV and PIL). The nearest modes
    reproduce torch's CPU index arithmetic exactly, including its two rules:
    outputs with H_out + W_out <= 128 use float32 arithmetic and copy an
    axis that keeps its size (halve one that doubles) whatever the scale
    factor; larger outputs use ``floor(o / scale_factor)``. Taps of weight
    0 are never read, so an inf or NaN pixel only reaches the outputs whose
    weights for it are non-zero (torch's bilinear and bicubic kernels
    give NaN from ``0 * inf`` at exact sample positions). Other
    non-contiguous inputs (CPU or CUDA) are copied once.

    uint8 images are read and written as bytes (no float copy of the
    image). ``match="torch"``: float32 weights and sums, each output rounded
    half to even and saturated to [0, 255]. ``match="opencv"``: OpenCV's
    arithmetic: 11-bit integer weights for bilinear, bicubic and area on a
    growing axis (rounded half up, ``(v + 2^21) >> 22``), float32 box
    weights rounded half to even for area; ``match="pil"``: Pillow's 22-bit
    integer weights, each pass rounded half up to uint8. Both presets give
    the library's output exactly or within one grey level (see the README's
    parity table).

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> fi.resize(x, size=(4, 4), mode="bilinear", align_corners=True)[0, 0, 0]
    array([1.        , 1.33333333, 1.66666667, 2.        ])
    >>> fi.resize(x, scale_factor=2, mode="nearest")[0, 0, 0]
    array([1., 1., 2., 2.])
    >>> img = np.zeros((4, 6, 3), np.uint8)         # an (H, W, C) image, as from PIL
    >>> fi.resize(img, size=(2, 3), layout="HWC", match="opencv").shape
    (2, 3, 3)
    """
    plan_key = None
    if out is None:                                  # repeated NumPy calls: see _plans
        plan_key, plan = _plans.find("resize", (input,), (size, scale_factor, mode,
                                                          align_corners, antialias,
                                                          recompute_scale_factor, layout, match))
        if plan is not None:
            return plan(input)
    op = "resize"
    check_option(op, "match", match, MATCHES)
    input = from_dlpack_only(input)    # its rank decides the path: read it as an array
    if _is_nd(input, layout):      # 1-D (N, C, L) and 3-D (N, C, D, H, W) data
        if match != "torch":
            raise ValueError(f"{op}: match={match!r} applies to 2-D images; got "
                             f"{_rank(input)}-D input {_ND_AXES[_rank(input)]} (the presets "
                             f"follow OpenCV's and Pillow's image resizes): drop match=.")
        return _resize_nd(input, size, scale_factor, mode, align_corners, antialias, out,
                          recompute_scale_factor, layout)
    check_layout_name(op, layout)   # first: a 1-D mode with an unknown layout is not the error
    align_corners, antialias = _check_mode_options(op, mode, align_corners, antialias, match)
    p, x, dtype, lay = _prepare(op, "input", input, layout, _IMAGE_DTYPES)
    n, c, h, w = lay.split(x.shape)
    out_hw, scales = _output_geometry(op, (h, w), size, scale_factor, mode,
                                      recompute_scale_factor)
    _check_memory(op, n * c, (h, w), out_hw, dtype, mode, antialias, out)
    box = (_box_plan(match, mode, (h, w), out_hw, c, align_corners, antialias, scales)
           if dtype == _U8 and p.backend == "cpu" else None)
    if box is not None:
        return _run(op, p, x, None, None, out, out_hw, lay, dtype, "input", box, plan_key)
    tabs, order = _resize_tables(match, mode, (h, w), out_hw, c, align_corners, scales,
                                 antialias, dtype)
    return _run(op, p, x, tabs[0], tabs[1], out, out_hw, lay, dtype, "input", order, plan_key)


interpolate = resize


def _resize_tables(match, mode, in_hw, out_hw, channels, align_corners, scales, antialias,
                   dtype):
    """The (y, x) axis tables of a 2-D resize of checked arguments, and the pass order of
    its uint8 fixed-point kernels (None, 'vfirst' or 'opencv_linear'; always None for
    float images)."""
    if match == "torch":
        return _axis_tables(mode, in_hw, out_hw, align_corners, scales, antialias, dtype), None
    kind = (presets.opencv_variant(mode, in_hw, out_hw, channels, _DTYPE_NAME[dtype])
            if match == "opencv" else "")
    kinds = presets.area_fast_kinds(in_hw, out_hw) if kind == "area_fast" else (kind, kind)
    tabs = [preset_table(match, mode, n_in, n_o, k, _DTYPE_NAME[dtype], ax)
            for n_in, n_o, k, ax in zip(in_hw, out_hw, kinds, "yx")]
    fixed = dtype == _U8 and tabs[0].shift > 0
    if fixed and match == "pil" and presets.pil_vertical_first(in_hw, out_hw):
        return tabs, "vfirst"
    if fixed and match == "opencv" and tabs[0].taps == 2:
        return tabs, "opencv_linear"
    return tabs, None


def _axis_tables(mode, in_hw, out_hw, align_corners, scales, antialias, dtype):
    """The (y, x) forward tap tables of one resize geometry (float32 ones for uint8)."""
    small = mode in ("nearest", "nearest-exact") and _nearest_is_small(out_hw)
    name = "float32" if dtype == _U8 else _DTYPE_NAME[dtype]
    return [axis_table(mode, n_in, n_o, align_corners, s, antialias, name, small)
            for n_in, n_o, s in zip(in_hw, out_hw, scales)]


@overload
def resize_backward(grad_output: NumPyLike, input_size: Shape, scale_factor: Reals | None = None,
                    mode: ResizeMode = "bilinear", align_corners: Flag | None = None,
                    antialias: Flag = False, out: Array | None = None, *,
                    recompute_scale_factor: Flag | None = None,
                    layout: ImageLayout | None = None) -> Array: ...
@overload
def resize_backward(grad_output: Any, input_size: Shape, scale_factor: Reals | None = None,
                    mode: ResizeMode = "bilinear", align_corners: Flag | None = None,
                    antialias: Flag = False, out: Any = None, *,
                    recompute_scale_factor: Flag | None = None,
                    layout: ImageLayout | None = None) -> Any: ...
@public_call
def resize_backward(grad_output: Any, input_size: Shape, scale_factor: Reals | None = None,
                    mode: ResizeMode = "bilinear", align_corners: Flag | None = None,
                    antialias: Flag = False, out: Any = None, *,
                    recompute_scale_factor: Flag | None = None,
                    layout: ImageLayout | None = None) -> Any:
    """Gradient of :func:`resize` with respect to its input (analytic, deterministic).

    Parameters
    ----------
    grad_output : array (N, C, H_out, W_out), float32 or float64
        Gradient of the loss with respect to the resized output.
    input_size : (N, C, H, W) or (H, W), or the input array itself
        The forward input's shape (in ``layout`` order).
    scale_factor, mode, align_corners, antialias, recompute_scale_factor, layout
        As given to the forward :func:`resize` call; the output size is
        taken from ``grad_output``. With ``scale_factor`` it must match
        ``floor(H * s)``.
    out : array, optional
        C-contiguous destination of shape ``input_size``.

    Returns
    -------
    array (N, C, H, W): ``A_y.T @ grad_output @ A_x`` per plane, the exact
    adjoint of :func:`resize`'s matrix (torch's autograd of ``F.interpolate``
    is not, for nearest modes on outputs over the small-output rule (on 1-D and
    3-D data on small ones too) and for bicubic or antialias with a scale
    factor that keeps an axis's size;
    elsewhere they agree). It is computed as a gather over
    the transposed tap tables, in one fixed order: bit-identical for any
    thread count. Input positions that no output reads get 0 (for finite
    ``grad_output``).

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> g = np.ones((1, 1, 4, 4))
    >>> fi.resize_backward(g, (1, 1, 2, 2), mode="bilinear")[0, 0]
    array([[4., 4.],
           [4., 4.]])
    """
    grad_output = from_dlpack_only(grad_output)     # (as in resize)
    if _is_nd(grad_output, layout):        # 1-D and 3-D data
        return _resize_nd_backward(grad_output, input_size, scale_factor, mode, align_corners,
                                   antialias, out, recompute_scale_factor, layout)
    op = "resize_backward"
    check_layout_name(op, layout)
    align_corners, antialias = _check_mode_options(op, mode, align_corners, antialias)
    p, g, dtype, lay = _prepare(op, "grad_output", grad_output, layout)
    h, w = _input_size(op, input_size, g.shape, lay)
    n, c, gh, gw = lay.split(g.shape)
    if scale_factor is not None:
        out_hw, scales = _output_geometry(op, (h, w), None, scale_factor, mode,
                                          recompute_scale_factor)
        if out_hw != (gh, gw):
            raise ValueError(f"{op}: grad_output must have spatial size {shape_str(out_hw)} "
                             f"(input {shape_str((h, w))} times scale_factor "
                             f"{scale_factor!r}); got {shape_str((gh, gw))}.")
    else:
        _output_geometry(op, (h, w), (gh, gw), None, mode, recompute_scale_factor)  # checks
        scales = (None, None)
    _check_memory(op, n * c, (h, w), (gh, gw), dtype, mode, antialias, out, backward=True)
    tabs = [transposed_table(t) for t in _axis_tables(mode, (h, w), (gh, gw), align_corners,
                                                       scales, antialias, dtype)]
    return _run(op, p, g, tabs[0], tabs[1], out, (h, w), lay, dtype, "grad_output")


def _size_dims(input_size: Any) -> tuple[Any, ...]:
    """The extents a backward's ``input_size`` gives: a sequence, or a 1-D array (NumPy,
    torch: ``torch.tensor([6, 7])``) of ints, holds them; an array of another rank
    stands for the forward's input itself (its shape). ``TypeError`` for what holds no
    sizes (a string, a number); entries that are not ints are left for the caller's
    check."""
    shape = getattr(input_size, "shape", None)
    if shape is not None and len(shape) != 1:
        return tuple(shape)
    dims = []
    for v in entries(input_size):
        try:
            dims.append(as_index(v))
        except TypeError:
            dims.append(v)
    return tuple(dims)


@overload
def adaptive_avg_pool2d(input: NumPyLike, output_size: PoolSize, out: Array | None = None, *,
                        layout: ImageLayout | None = None) -> Array: ...
@overload
def adaptive_avg_pool2d(input: Any, output_size: PoolSize, out: Any = None, *,
                        layout: ImageLayout | None = None) -> Any: ...
@public_call
def adaptive_avg_pool2d(input: Any, output_size: PoolSize, out: Any = None, *,
                        layout: ImageLayout | None = None) -> Any:
    """Adaptive average pooling; values equal ``torch.nn.functional.adaptive_avg_pool2d``.

    Parameters
    ----------
    input : array (N, C, H, W), float32 or float64 (``layout="NHWC"``: (N, H, W, C))
    output_size : int or (int or None, int or None)
        (H_out, W_out); None keeps that input size.
    out : array, optional
        C-contiguous destination, not overlapping ``input``.
    layout : {'NCHW', 'NHWC'}

    Returns
    -------
    array (N, C, H_out, W_out): output cell ``(i, j)`` is the mean of input
    rows ``[floor(i*H/H_out), ceil((i+1)*H/H_out))`` and the matching columns
    (cells overlap when the sizes do not divide). This is ``resize(...,
    mode="area")`` and OpenCV's ``INTER_AREA`` when the sizes divide.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> fi.adaptive_avg_pool2d(x, 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    op = "adaptive_avg_pool2d"
    plan_key = None
    if out is None:                                  # repeated NumPy calls: see _plans
        plan_key, plan = _plans.find(op, (input,), (output_size, layout))
        if plan is not None:
            return plan(input)
    p, x, dtype, lay = _prepare(op, "input", input, layout, _IMAGE_DTYPES)
    n, c, h, w = lay.split(x.shape)
    out_hw = _pool_size_k(op, output_size, (h, w))
    _check_memory(op, n * c, (h, w), out_hw, dtype, "area", False, out)
    if dtype == _U8 and p.backend == "cpu":
        box = _box_plan("torch", "area", (h, w), out_hw, 1, None, False, (None, None))
        if box is not None:
            return _run(op, p, x, None, None, out, out_hw, lay, dtype, "input", box, plan_key)
    tabs = _axis_tables("area", (h, w), out_hw, None, (None, None), False, dtype)
    return _run(op, p, x, tabs[0], tabs[1], out, out_hw, lay, dtype, "input", None, plan_key)


@overload
def adaptive_avg_pool2d_backward(grad_output: NumPyLike, input_size: Shape,
                                 out: Array | None = None, *,
                                 layout: ImageLayout | None = None) -> Array: ...
@overload
def adaptive_avg_pool2d_backward(grad_output: Any, input_size: Shape, out: Any = None, *,
                                 layout: ImageLayout | None = None) -> Any: ...
@public_call
def adaptive_avg_pool2d_backward(grad_output: Any, input_size: Shape, out: Any = None, *,
                                 layout: ImageLayout | None = None) -> Any:
    """Gradient of :func:`adaptive_avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : array (N, C, H_out, W_out), float32 or float64
    input_size : (N, C, H, W) or (H, W), or the input array itself
    out : array, optional
    layout : {'NCHW', 'NHWC'}

    Returns
    -------
    array (N, C, H, W): each input pixel receives ``g / (kh * kw)`` from
    every output cell whose window holds it; deterministic (a gather).

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> fi.adaptive_avg_pool2d_backward(np.ones((1, 1, 1, 1)), (1, 1, 2, 2))[0, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    op = "adaptive_avg_pool2d_backward"
    p, g, dtype, lay = _prepare(op, "grad_output", grad_output, layout)
    h, w = _input_size(op, input_size, g.shape, lay)
    n, c, gh, gw = lay.split(g.shape)
    _check_memory(op, n * c, (h, w), (gh, gw), dtype, "area", False, out, backward=True)
    tabs = [transposed_table(axis_table("area", n_in, n_o, None, None, False, _DTYPE_NAME[dtype]))
            for n_in, n_o in zip((h, w), (gh, gw))]
    return _run(op, p, g, tabs[0], tabs[1], out, (h, w), lay, dtype, "grad_output")


# --------------------------------------------------------------------------- 1-D and 3-D data
#
# 1-D (N, C, L) and 3-D (N, C, D, H, W) resizing and pooling run the 2-D separable
# kernel: a 1-D axis is a plane of one row; a volume is resized over (H, W) plane by
# plane, then over D with the (H_out * W_out) values of each depth slice as the
# channels of a one-column image. This is torch's own order of operations (its
# trilinear kernel interpolates W, then H, then D), and the backward runs the
# transposed tables in the reverse order.

_ND_MODES = {3: ("linear", "nearest", "nearest-exact", "area"),
             5: ("trilinear", "nearest", "nearest-exact", "area")}
_ND_AXES = {3: "(N, C, L)", 5: "(N, C, D, H, W)"}
_ND_TABLE_MODE = {"linear": "bilinear", "trilinear": "bilinear"}


def _refuse_unnamed_image(op, x, size, scale_factor):
    """A 3-D input without layout= is 1-D data (N, C, L), as in torch; one that can only be
    an image (uint8, or two output sizes) gets the layout hint instead of a 1-D resize.
    ``x`` is the caller's array (a torch tensor, say: its dtype is named, not converted)."""
    two = any(v is not None and np.ndim(v) == 1 and len(v) == 2 for v in (size, scale_factor))
    if _dtype_name(x) == "uint8" and not two:
        raise ValueError(f"{op}: a 3-D uint8 input needs layout='CHW' (channels first) or "
                         f"layout='HWC' (an (H, W, C) image from PIL or OpenCV): uint8 runs on "
                         f"2-D images only, and a 3-D input without layout= is 1-D data "
                         f"(N, C, L), as in torch, which must be float32 or float64 (or "
                         f"float16, bfloat16); got uint8 {shape_str(x.shape)}.")
    if two:
        raise ValueError(f"{op}: a 3-D input without layout= is 1-D data (N, C, L), as in "
                         f"torch; for one image it needs layout='CHW' (channels first) or "
                         f"layout='HWC' (an (H, W, C) image from PIL or OpenCV); got "
                         f"{shape_str(x.shape)}.")


def _is_nd(arr: Any, layout: object) -> bool:
    """1-D (N, C, L) or volume (N, C, D, H, W) data rather than images: 5-D arrays,
    and 3-D arrays without a layout (torch reads those as (N, C, L))."""
    rank = _rank(arr)
    return rank == 5 or (rank == 3 and layout is None)


def _rank(arr: Any) -> int:
    """The number of axes of an array, or of a (nested) list or tuple read as NumPy reads
    it (0 for a ragged one: the array checks then name it)."""
    if isinstance(arr, (list, tuple)):
        try:
            return np.ndim(arr)
        except ValueError:
            return 0
    return len(getattr(arr, "shape", ()))


def _real_number(value: Any) -> float:
    """A real Python/NumPy number, or a 0-d real array or tensor, as a float; ``TypeError``
    for bools, complex numbers and the rest."""
    if is_real_scalar(value):
        return float(value)
    value = from_dlpack_only(value)
    one = _one_real(value) if len(getattr(value, "shape", (None,))) == 0 else None
    if one is None:
        raise TypeError
    return one


def _tuple_k(op, name, value, kind, k):
    """An int/float or a sequence of k of them, as a k-tuple of Python numbers.

    Ints are read by :func:`as_index`, as every size is: a NumPy int or a 0-d
    integer array or tensor is one int, and a 1-D integer array or tensor
    (``torch.tensor([6, 7])``) a sequence of them.
    """
    read = as_index if kind == "int" else _real_number
    many = "a pair of them" if k == 2 else f"a sequence of {k}"
    what = f"a positive {'int' if kind == 'int' else 'float'} or {many}"
    if is_scalar(value):
        try:
            vals = (read(value),) * k
        except TypeError:
            raise TypeError(f"{op}: {name} must be {what}; got {value!r}.") from None
        except OverflowError:           # an int beyond float64
            raise ValueError(f"{op}: {name} must be finite; got {int_digits(value)}.") from None
    else:
        axes = " (H, W)" if k == 2 else ""
        try:
            vals = tuple(read(v) for v in entries(value))
        except TypeError:
            raise TypeError(f"{op}: {name} must be {what}{axes}; got {value!r}.") from None
        except OverflowError:
            raise ValueError(f"{op}: {name} must be finite{axes}; got an int beyond "
                             f"float64 in {value!r}.") from None
        if len(vals) != k:
            raise ValueError(f"{op}: {name} must be {what}{axes}; got {value!r}.")
    if kind == "float" and not all(abs(v) < math.inf for v in vals):
        raise ValueError(f"{op}: {name} must be finite; got {value!r}.")
    if any(v <= 0 for v in vals):
        raise ValueError(f"{op}: {name} must be positive; got {value!r}.")
    return vals


def _nd_mode_options(op, rank, mode, align_corners, antialias, layout):
    if layout is not None:      # first, as for images: a wrong layout makes any mode look wrong
        raise ValueError(f"{op}: layout must be None (the default) for {rank}-D input "
                         f"{_ND_AXES[rank]}; got {layout!r}.")
    if not isinstance(mode, str) or mode not in _ND_MODES[rank]:
        allowed = ", ".join(repr(m) for m in _ND_MODES[rank])
        raise ValueError(f"{op}: mode must be one of {allowed} for input of shape "
                         f"{_ND_AXES[rank]}; got {mode!r}.")
    if check_bool(op, "antialias", antialias):
        raise ValueError(f"{op}: antialias must be False for {rank}-D input; "
                         f"got {antialias!r}.")
    if mode in _ND_TABLE_MODE:
        if align_corners is None:
            return False
        if not isinstance(align_corners, (bool, np.bool_)):
            raise TypeError(f"{op}: align_corners must be a bool or None; got {align_corners!r}.")
        return bool(align_corners)
    if align_corners is not None:
        raise ValueError(f"{op}: align_corners must be None for mode={mode!r} (it applies to "
                         f"{_ND_MODES[rank][0]!r} only); got {align_corners!r}.")
    return None


def _nd_geometry(op, in_sp, size, scale_factor, mode, recompute_scale_factor):
    """Output extents and the per-axis scales (None: in / out), as torch derives them."""
    k = len(in_sp)
    if size is not None and scale_factor is not None:
        raise ValueError(f"{op}: size and scale_factor must not both be given; got "
                         f"size={size!r}, scale_factor={scale_factor!r}.")
    if size is None and scale_factor is None:
        raise ValueError(f"{op}: size or scale_factor must be given; got neither.")
    if recompute_scale_factor is not None and not isinstance(recompute_scale_factor,
                                                             (bool, np.bool_)):
        raise TypeError(f"{op}: recompute_scale_factor must be a bool or None; "
                        f"got {recompute_scale_factor!r}.")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError(f"{op}: recompute_scale_factor must be None or False without a "
                             f"scale_factor (there is none to recompute); got "
                             f"{recompute_scale_factor!r}.")
        return _axis_sizes_fit(op, "size", size, _tuple_k(op, "size", size, "int", k)), \
            (None,) * k
    scales = _tuple_k(op, "scale_factor", scale_factor, "float", k)
    extents = (float(n) * s for n, s in zip(in_sp, scales))     # inf beyond float64
    out = _axis_sizes_fit(op, "scale_factor", scale_factor,
                          tuple(int(math.floor(e)) if e < math.inf else e for e in extents))
    if min(out) < 1:
        least = " x ".join("1" * k) + (" pixels" if k == 2 else " elements")
        raise ValueError(f"{op}: scale_factor must give an output of at least {least}; "
                         f"got scale_factor={scale_factor!r} for input size "
                         f"{shape_str(in_sp)} -> {shape_str(out)}.")
    if mode == "area" or recompute_scale_factor:
        return out, (None,) * k
    return out, scales


def _axis_sizes_fit(op, name, given, out):
    """``out`` (output extents), after checking each fits the int32 tap tables."""
    if max(out) > AXIS_MAX:
        raise ValueError(f"{op}: {name} must give an output of at most 2**31 - 1 pixels "
                         f"along each axis; got {name}={given!r}, an axis of "
                         f"{_extent_shown(max(out))} pixels.")
    return out


def _extent_shown(extent: "int | float") -> str:
    """An output extent (an int, or a float extent that is inf) for a message; an int
    too large for a float is shown by its number of digits."""
    if isinstance(extent, float) or extent < 10 ** 300:
        return f"{extent:.4g}"
    return f"about 10**{len(str(extent)) - 1}"


def _nd_tables(mode, in_sp, out_sp, align_corners, scales, dtype):
    """Forward tap tables, one per spatial axis (torch's large-output nearest rule: its
    small-output shortcuts are a 2-D kernel's)."""
    tmode = _ND_TABLE_MODE.get(mode, mode)
    name = _DTYPE_NAME[np.dtype(dtype)]
    return [axis_table(tmode, n_in, n_o, align_corners, s, False, name, False)
            for n_in, n_o, s in zip(in_sp, out_sp, scales)]


def _identity_table(dtype: Any) -> AxisTable:
    return axis_table("area", 1, 1, None, None, False, _DTYPE_NAME[np.dtype(dtype)])


def nd_shape_error(op, name, shape, ranks, one_item_ok=False):
    """The ValueError for 1-D/3-D data of another rank (``ranks``: the array ranks taken;
    ``one_item_ok``: one unbatched item is taken too)."""
    shapes = " or ".join(_ND_AXES[r] for r in ranks)
    if one_item_ok:
        shapes += " or, one item, " + " or ".join(_ND_AXES[r].replace("(N, ", "(")
                                                 for r in ranks)
    return ValueError(f"{op}: {name} must have shape {shapes}; got {shape_str(shape)}.")


def _nd_input(op, name, arr, ranks, one_item_ok=False):
    """Dispatch one 1-D/3-D array argument (CPU only): (prepared call, array, dtype); the
    array is made C-contiguous by :func:`_nd_apply`, after the memory check.
    ``one_item_ok``: the op also takes one unbatched item (the error says so)."""
    p = begin(op, **{name: arr})
    x = p.arrays[name]
    check_array(op, name, x)
    rank = _rank(x)
    if rank not in ranks:
        raise nd_shape_error(op, name, x.shape, ranks, one_item_ok)
    dtype = float_dtype(op, name, x)
    if p.backend != "cpu":
        raise TypeError(f"{op}: {rank - 2}-D data {_ND_AXES[rank]} is supported for CPU arrays "
                        f"(NumPy, DLPack CPU tensors) only; got a {p.backend} array.")
    if any(d < 1 for d in x.shape[2:]):
        raise ValueError(f"{op}: {name} must have every spatial extent >= 1; "
                         f"got {shape_str(x.shape)}.")
    _check_extents_fit(op, name, x.shape, x.shape[2:])
    return p, x, dtype


def _nd_apply(op, p, x, tabs, out_sp, out, name, transposed, unbatched=False):
    """out = the separable map of ``tabs`` (one table per spatial axis) applied to x.

    Volumes: in the order :func:`_planes_first` picks. ``unbatched``: ``x`` is the
    caller's one item with a batch axis of 1 in front, and the result (``out`` too) has
    none. ``x`` is made C-contiguous here, after the callers' checks (memory included)."""
    x = np.ascontiguousarray(x)
    n, c = x.shape[:2]
    dtype = x.dtype
    shape = (n, c) + tuple(out_sp)
    shown = shape[1:] if unbatched else shape      # the result's shape, as the caller has it
    if out is not None:
        caller, out_k = p.adopt_out(out)
        check_out(op, out_k, shown, dtype, {name: x})
    else:
        caller, out_k = p.empty(shown, dtype)
    out_k = out_k.reshape(shape)
    if n * c == 0:
        return p.wrap(caller)
    kernel = registry.lookup(op, p.backend, dtype)
    _nd_map(kernel, out_k, x, tabs, transposed)
    if len(tabs) == 3 and transposed and p.backend == "cpu" and \
            _sums_may_overflow(out_k, x, tabs):
        _redo_overflowed_volumes(op, out_k, x, tabs)
    return p.wrap(caller)


def _nd_map(kernel, out, x, tabs, transposed):
    """``out`` (n, c, *out_sp) = the separable map of ``tabs`` applied to ``x`` (n, c, *sp),
    both C-contiguous, by ``kernel`` (the registered separable kernel)."""
    n, c = x.shape[:2]
    one = _identity_table(x.dtype)
    if len(tabs) == 1:
        kernel(out.reshape(n * c, 1, -1), x.reshape(n * c, 1, -1), one, tabs[0], 1)
        return
    tz, ty, tx = tabs
    (d, h, w), (do, ho, wo) = x.shape[2:], out.shape[2:]
    if _planes_first(x.shape[2:], out.shape[2:], transposed):
        mid = _memory.empty((n * c * d, ho, wo), x.dtype)
        kernel(mid, x.reshape(n * c * d, h, w), ty, tx, 1)
        kernel(out.reshape(n * c, do, ho * wo), mid.reshape(n * c, d, ho * wo), tz, one,
               ho * wo)
    else:
        mid = _memory.empty((n * c, do, h * w), x.dtype)
        kernel(mid, x.reshape(n * c, d, h * w), tz, one, h * w)
        kernel(out.reshape(n * c * do, ho, wo), mid.reshape(n * c * do, h, w), ty, tx, 1)


def _redo_overflowed_volumes(op, out, x, tabs):
    """A volume backward's intermediate (one axis mapped, then the other two) may overflow
    where the exact gradient is finite, as in :func:`_redo_overflowed_sums`: the items
    (n, c) whose result came out inf or NaN are redone in float64 (float64 data scaled by
    ``2**-64``, then back), their finite entries kept."""
    n, c = x.shape[:2]
    x2, out2 = x.reshape(n * c, -1), out.reshape(n * c, -1)
    bad = ~np.isfinite(out2)
    items = np.flatnonzero(bad.any(axis=1))
    if not len(items):
        return
    shift = _HEADROOM if x.dtype == np.float64 else 0
    tabs64 = [dataclasses.replace(t, w=t.w.astype(np.float64)) for t in tabs]
    src = np.ldexp(x2[items].astype(np.float64), -shift).reshape((len(items), 1) + x.shape[2:])
    exact = np.empty((len(items), 1) + out.shape[2:], np.float64)
    _nd_map(registry.lookup(op, "cpu", np.float64), exact, src, tabs64, True)
    exact = exact.reshape(len(items), -1)
    with np.errstate(over="ignore"):
        for row, item in zip(exact, items):
            where = bad[item]
            out2[item, where] = np.ldexp(row[where], shift).astype(out.dtype)


def _planes_first(in_sp, out_sp, transposed):
    """Whether a volume's separable map runs (H, W) per depth slice before D: the order
    whose intermediate is smaller (d * ho * wo against do * h * w values per image: a
    depth that shrinks while the planes grow is mapped first). On a tie, (H, W) first
    for the forward tables (torch's own order), D first for the transposed ones (the
    forward's transpose; the same rule then picks it for every backward)."""
    (d, h, w), (do, ho, wo) = in_sp, out_sp
    planes, depth = d * ho * wo, do * h * w
    return planes < depth or (planes == depth and not transposed)


def _resize_nd(input, size, scale_factor, mode, align_corners, antialias, out,
               recompute_scale_factor, layout):
    """:func:`resize` of 1-D (N, C, L) and 3-D (N, C, D, H, W) data."""
    op = "resize"
    rank = _rank(input)
    if rank == 3:
        _refuse_unnamed_image(op, input, size, scale_factor)
    align = _nd_mode_options(op, rank, mode, align_corners, antialias, layout)
    p, x, dtype = _nd_input(op, "input", input, (rank,))
    out_sp, scales = _nd_geometry(op, x.shape[2:], size, scale_factor, mode,
                                  recompute_scale_factor)
    _check_memory(op, x.shape[0] * x.shape[1], x.shape[2:], out_sp, dtype, mode, False, out)
    tabs = _nd_tables(mode, x.shape[2:], out_sp, align, scales, dtype)
    return _nd_apply(op, p, x, tabs, out_sp, out, "input", False)


def _nd_input_size(op, input_size, grad_shape):
    """The forward input's spatial extents from ``input_size`` (a full shape, the
    spatial extents, or an array)."""
    k = len(grad_shape) - 2
    try:
        dims = _size_dims(input_size)
    except TypeError:
        raise TypeError(f"{op}: input_size must be a shape; got {input_size!r}.") from None
    error = ValueError if all(_is_int(v) for v in dims) else TypeError
    if error is TypeError or len(dims) not in (k, k + 2):
        raise error(f"{op}: input_size must be a shape of {k + 2} ints (or the {k} "
                    f"spatial extents); got {input_size!r}.")
    dims = tuple(int(v) for v in dims)
    if len(dims) == k + 2 and dims[:2] != tuple(grad_shape[:2]):
        raise ValueError(f"{op}: input_size must have the same N and C as grad_output "
                         f"{shape_str(grad_shape)}; got {shape_str(dims)}.")
    sp = dims[-k:]
    if any(v < 1 for v in sp):
        raise ValueError(f"{op}: input_size must have every spatial extent >= 1; "
                         f"got {shape_str(dims)}.")
    return _axis_sizes_fit(op, "input_size", input_size, sp)


def _resize_nd_backward(grad_output, input_size, scale_factor, mode, align_corners, antialias,
                        out, recompute_scale_factor, layout):
    """:func:`resize_backward` of 1-D and 3-D data."""
    op = "resize_backward"
    rank = _rank(grad_output)
    align = _nd_mode_options(op, rank, mode, align_corners, antialias, layout)
    p, g, dtype = _nd_input(op, "grad_output", grad_output, (rank,), one_item_ok=True)
    in_sp = _nd_input_size(op, input_size, g.shape)
    if scale_factor is not None:
        out_sp, scales = _nd_geometry(op, in_sp, None, scale_factor, mode,
                                      recompute_scale_factor)
        if tuple(out_sp) != tuple(g.shape[2:]):
            raise ValueError(f"{op}: grad_output must have spatial size {shape_str(out_sp)} "
                             f"(input {shape_str(in_sp)} times scale_factor "
                             f"{scale_factor!r}); got {shape_str(g.shape[2:])}.")
    else:
        _nd_geometry(op, in_sp, g.shape[2:], None, mode, recompute_scale_factor)
        scales = (None,) * len(in_sp)
    _check_memory(op, g.shape[0] * g.shape[1], in_sp, g.shape[2:], dtype, mode, False, out,
                  backward=True)
    tabs = [transposed_table(t) for t in _nd_tables(mode, in_sp, g.shape[2:], align, scales,
                                                     dtype)]
    return _nd_apply(op, p, g, tabs, in_sp, out, "grad_output", True)


def _pool_size_k(op, output_size, in_sp):
    """torch's output_size for k spatial axes: an int, or k entries whose None entries
    keep the input's size; ints (and integer arrays or tensors) as :func:`_tuple_k`
    reads them."""
    k = len(in_sp)
    form = "a pair (H, W)" if k == 2 else f"a sequence of {k}"
    if is_scalar(output_size):
        try:
            vals = (as_index(output_size),) * k
        except TypeError:
            raise TypeError(f"{op}: output_size must be an int or {form}; "
                            f"got {output_size!r}.") from None
    else:
        try:
            vals = entries(output_size)
        except TypeError:
            raise TypeError(f"{op}: output_size must be an int or {form}; "
                            f"got {output_size!r}.") from None
        if len(vals) != k:
            raise ValueError(f"{op}: output_size must be an int or {form}; "
                             f"got {output_size!r}.")
        vals = tuple(n if v is None else v for v, n in zip(vals, in_sp))
    try:
        sizes = _tuple_k(op, "output_size", vals, "int", k)
    except (TypeError, ValueError) as error:   # the message shows what was passed
        many = "a pair (H, W)" if k == 2 else f"a sequence of {k}"
        raise type(error)(f"{op}: output_size must be a positive int or {many} of positive "
                          f"ints (None keeps that input size); got {output_size!r}.") from None
    return _axis_sizes_fit(op, "output_size", output_size, sizes)


# Taps per output of each mode before widening (antialias, area and lanczos widen by
# the shrink factor), for the memory estimate of _check_memory.
_SUPPORT_TAPS = {"nearest": 1, "nearest-exact": 1, "bilinear": 2, "linear": 2, "trilinear": 2,
                 "bicubic": 4, "lanczos": 6, "area": 2}
# Bytes per tap of one axis table while it is built (float64 positions and weights, the
# int32 indices, the copies the kernels take): 15-50 measured, so the estimate is a lower
# bound, and a call it refuses could not have run.
_TABLE_BYTES_PER_TAP = 16


def _check_memory(op, lead, in_sp, out_sp, dtype, mode, antialias, out=None, backward=False):
    """``MemoryError`` (:func:`fastinterp._memory.check_fits`) when the result (``lead``
    = N * C values per point; none when ``out`` is given) or the axis tables of a resize
    or pool of ``in_sp`` to ``out_sp`` cannot fit in this machine: sizes up to 2**31 - 1
    per axis are valid, and a table is built before the result is allocated. A
    ``backward`` result has the shape of ``in_sp``."""
    widen = antialias or mode in ("area", "lanczos")
    taps = sum(n_o * (math.ceil(_SUPPORT_TAPS.get(mode, 6) * (max(1.0, n_i / n_o) if widen
                                                               and n_o else 1.0)) + 1)
               for n_i, n_o in zip(in_sp, out_sp))
    if backward:    # the transposed tables: the outputs each input sample feeds
        taps += sum(n_i * (math.ceil(_SUPPORT_TAPS.get(mode, 6) * max(1.0, n_o / max(n_i, 1)))
                           + 1) for n_i, n_o in zip(in_sp, out_sp))
    result_sp = tuple(in_sp if backward else out_sp)
    values = 0 if out is not None else math.prod(result_sp)
    if len(in_sp) == 3:     # a volume's intermediate (see _planes_first)
        (d, h, w), (do, ho, wo) = in_sp, out_sp
        values += min(d * ho * wo, do * h * w)
    _memory.check_fits(op, f"an output of {shape_str(result_sp)} per image, its "
                           f"intermediate and its tap tables",
                       lead * values * np.dtype(dtype).itemsize + _TABLE_BYTES_PER_TAP * taps)


def _pool_tables(in_sp, out_sp, dtype):
    name = _DTYPE_NAME[np.dtype(dtype)]
    return [axis_table("area", n_in, n_o, None, None, False, name)
            for n_in, n_o in zip(in_sp, out_sp)]


def _one_item(arr):
    """An unbatched array (a list read by NumPy) with a batch axis of 1 in front."""
    return (np.asarray(arr) if isinstance(arr, (list, tuple)) else arr)[None]


def _adaptive_pool(op, rank, input, output_size, out):
    input = from_dlpack_only(input)       # (as in resize)
    unbatched = _rank(input) == rank - 1  # one (C, L) / (C, D, H, W), as torch takes it
    p, x, dtype = _nd_input(op, "input", _one_item(input) if unbatched else input, (rank,),
                            one_item_ok=True)
    out_sp = _pool_size_k(op, output_size, x.shape[2:])
    _check_memory(op, x.shape[0] * x.shape[1], x.shape[2:], out_sp, dtype, "area", False, out)
    return _nd_apply(op, p, x, _pool_tables(x.shape[2:], out_sp, dtype), out_sp, out,
                     "input", False, unbatched)


def _same_channels(op, grad_output, dims):
    """An unbatched input_size (C, *spatial) must have grad_output's C: the error names
    both as the caller gave them (not with the batch axis added inside)."""
    g_shape = tuple(np.shape(grad_output))
    if all(_is_int(v) for v in dims) and g_shape and int(dims[0]) != g_shape[0]:
        raise ValueError(f"{op}: input_size must have the same C as grad_output "
                         f"{shape_str(g_shape)}; got {shape_str(tuple(int(v) for v in dims))}.")


def _adaptive_pool_backward(op, rank, grad_output, input_size, out):
    grad_output = from_dlpack_only(grad_output)     # (as in resize)
    unbatched = _rank(grad_output) == rank - 1
    if unbatched:                       # input_size (C, *spatial) or spatial
        dims = getattr(input_size, "shape", input_size)
        try:
            dims = entries(dims)
        except TypeError:
            dims = None             # (the batched call names it)
        if dims is not None and len(dims) == rank - 1:
            _same_channels(op, grad_output, dims)
            dims = (1,) + tuple(dims)
        grad_output, input_size = _one_item(grad_output), input_size if dims is None else dims
    p, g, dtype = _nd_input(op, "grad_output", grad_output, (rank,), one_item_ok=True)
    in_sp = _nd_input_size(op, input_size, g.shape)
    _check_memory(op, g.shape[0] * g.shape[1], in_sp, g.shape[2:], dtype, "area", False, out,
                  backward=True)
    tabs = [transposed_table(t) for t in _pool_tables(in_sp, g.shape[2:], dtype)]
    return _nd_apply(op, p, g, tabs, in_sp, out, "grad_output", True, unbatched)


for _op in ("adaptive_avg_pool1d", "adaptive_avg_pool3d"):
    registry.register_builtin(_op, _separable_cpu)
for _op in ("adaptive_avg_pool1d_backward", "adaptive_avg_pool3d_backward"):
    registry.register_builtin(_op, _separable_bwd_cpu)


@overload
def adaptive_avg_pool1d(input: NumPyLike, output_size: PoolSize,
                        out: Array | None = None) -> Array: ...
@overload
def adaptive_avg_pool1d(input: Any, output_size: PoolSize, out: Any = None) -> Any: ...
@public_call
def adaptive_avg_pool1d(input: Any, output_size: PoolSize, out: Any = None) -> Any:
    """Adaptive average pooling of 1-D data; values equal ``F.adaptive_avg_pool1d``.

    Parameters
    ----------
    input : array (N, C, L), or one unbatched (C, L), float32 or float64 (CPU arrays;
        float16/bfloat16 too, computed in float32)
    output_size : int or (int,)
        L_out.
    out : array, optional
        C-contiguous destination (N, C, L_out), not overlapping ``input``.

    Returns
    -------
    array (N, C, L_out): output ``i`` is the mean of input
    ``[floor(i L / L_out), ceil((i + 1) L / L_out))``.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> fi.adaptive_avg_pool1d(np.arange(6.0).reshape(1, 1, 6), 3)
    array([[[0.5, 2.5, 4.5]]])
    """
    return _adaptive_pool("adaptive_avg_pool1d", 3, input, output_size, out)


@overload
def adaptive_avg_pool1d_backward(grad_output: NumPyLike, input_size: Shape,
                                 out: Array | None = None) -> Array: ...
@overload
def adaptive_avg_pool1d_backward(grad_output: Any, input_size: Shape, out: Any = None) -> Any: ...
@public_call
def adaptive_avg_pool1d_backward(grad_output: Any, input_size: Shape, out: Any = None) -> Any:
    """Gradient of :func:`adaptive_avg_pool1d` with respect to its input.

    Parameters
    ----------
    grad_output : array (N, C, L_out)
    input_size : (N, C, L) or (L,), or the input array itself
    out : array, optional

    Returns
    -------
    array (N, C, L): each input element receives ``g / k`` from every output cell
    whose window (of k elements) holds it; deterministic (a gather).

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> fi.adaptive_avg_pool1d_backward(np.ones((1, 1, 1)), (1, 1, 2))
    array([[[0.5, 0.5]]])
    """
    return _adaptive_pool_backward("adaptive_avg_pool1d_backward", 3, grad_output,
                                   input_size, out)


@overload
def adaptive_avg_pool3d(input: NumPyLike, output_size: PoolSize,
                        out: Array | None = None) -> Array: ...
@overload
def adaptive_avg_pool3d(input: Any, output_size: PoolSize, out: Any = None) -> Any: ...
@public_call
def adaptive_avg_pool3d(input: Any, output_size: PoolSize, out: Any = None) -> Any:
    """Adaptive average pooling of volumes; values equal ``F.adaptive_avg_pool3d``.

    Parameters
    ----------
    input : array (N, C, D, H, W), or one unbatched (C, D, H, W), float32 or float64
        (or float16/bfloat16, computed in float32)
        (CPU arrays)
    output_size : int or (int or None, int or None, int or None)
        (D_out, H_out, W_out); None keeps that input extent.
    out : array, optional
        C-contiguous destination, not overlapping ``input``.

    Returns
    -------
    array (N, C, D_out, H_out, W_out): each output cell is the mean of its
    window, ``[floor(i n / n_out), ceil((i + 1) n / n_out))`` per axis,
    computed separably (W, H, then D means: within a few ulps of torch's
    single sum).

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> fi.adaptive_avg_pool3d(np.arange(8.0).reshape(1, 1, 2, 2, 2), 1)
    array([[[[[3.5]]]]])
    """
    return _adaptive_pool("adaptive_avg_pool3d", 5, input, output_size, out)


@overload
def adaptive_avg_pool3d_backward(grad_output: NumPyLike, input_size: Shape,
                                 out: Array | None = None) -> Array: ...
@overload
def adaptive_avg_pool3d_backward(grad_output: Any, input_size: Shape, out: Any = None) -> Any: ...
@public_call
def adaptive_avg_pool3d_backward(grad_output: Any, input_size: Shape, out: Any = None) -> Any:
    """Gradient of :func:`adaptive_avg_pool3d` with respect to its input.

    Parameters
    ----------
    grad_output : array (N, C, D_out, H_out, W_out)
    input_size : (N, C, D, H, W) or (D, H, W), or the input array itself
    out : array, optional

    Returns
    -------
    array (N, C, D, H, W): each input element receives ``g / (kd kh kw)`` from
    every output cell whose window holds it; deterministic (gathers).

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> fi.adaptive_avg_pool3d_backward(np.ones((1, 1, 1, 1, 1)), (1, 1, 1, 1, 2))
    array([[[[[0.5, 0.5]]]]])
    """
    return _adaptive_pool_backward("adaptive_avg_pool3d_backward", 5, grad_output,
                                   input_size, out)
