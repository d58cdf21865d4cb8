"""Spatially chunked separable resampling (resize, area pooling and their backwards).

Every mode of :func:`fastinterp.resize` is ``out = A_y @ plane @ A_x.T`` with
one tap table per axis (fastinterp.resize builds them). An output chunk
``[o0, o1) x [p0, p1)`` reads exactly the input rows and columns that its
taps of non-zero weight name; its task assembles that window from the input
blocks it overlaps and runs the same compiled kernel on it with the slice of
the global tables (indices shifted by the window's offset). The kernel's
arithmetic per output element depends only on its taps and on three choices
made for the whole image (pass order, channel expansion, the permute form of
the horizontal pass), which are taken from the global tables and imposed on
every chunk; so every chunk equals the in-memory call bit for bit.

Within a chunk, the outputs whose taps all lie in one input block (the chunk's
own, most of them) are computed straight from that block, a view: only the
bands along the chunk's edges, whose taps reach into the neighbours' strips,
are computed from small copied windows (the kernel reads and writes rows
through their strides). A band of the x axis starts on a block of the permute
form, as a chunk does; so it changes no bit either.
"""
from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import dask.array as da
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

import importlib

_rz = importlib.import_module("fastinterp.resize")   # the module (fastinterp.resize is the function)
from .. import _memory
from .._config import threads_for


@dataclass(frozen=True)
class _Plan:
    """Whole-image kernel choices, imposed on every chunk."""

    ytab: object        # AxisTable, rows
    xtab: object        # AxisTable, columns (expanded over channels when ``expand``)
    expand: int         # values per pixel in the x table's units (C when expanded, else 1)
    chan: int           # the kernel's ``channels`` argument
    perm: bool          # the horizontal pass uses the permute form
    block: int          # the permute form's block (outputs), for chunk alignment
    order: int
    backward: bool = False   # transposed tables: overflowed sums are redone as in memory


def plan(ytab, xtab, c, w_in, nhwc, backward=False) -> _Plan:
    """The choices ``fastinterp.resize``'s CPU kernel makes for the whole image."""
    channels = c if nhwc else 1
    expand = 1 < channels <= _rz._EXPAND_CHANNELS
    xt = _rz.channel_table(xtab, channels) if expand else xtab
    chan = 1 if expand else channels
    perm = _rz.permute_form(xt) if chan == 1 else _rz._NO_PERM
    permuted = len(perm[0]) > 0
    order = _rz.image_pass_order(ytab, xtab, w_in)
    block = _cpu().PERM_BLOCK[xt.w.dtype.name] if permuted else 1
    return _Plan(ytab, xt, channels if expand else 1, chan, permuted, block, order, backward)


def _cpu():
    from .._cpu import resize as cpu_resize
    return cpu_resize


def out_bounds(chunks, n_in, n_out):
    """Output chunk sizes aligned to the input's: boundary b maps to floor(b * n_out / n_in)."""
    ends = np.cumsum((0,) + tuple(chunks))
    b = (ends * n_out) // n_in
    return tuple(int(v) for v in np.diff(b))


def _window(idx, w, lo_out, hi_out, per_pixel):
    """Input pixels [first, last + 1) read (non-zero weight) by table outputs [lo_out, hi_out)."""
    sub_i, sub_w = idx[:, lo_out:hi_out], w[:, lo_out:hi_out]
    nz = sub_w != 0
    vals = sub_i[nz] if nz.any() else sub_i
    return int(vals.min()) // per_pixel, int(vals.max()) // per_pixel + 1


def _slice_table(table, a0, a1, offset, n_units):
    """Outputs [a0, a1) of ``table``, indices shifted by ``offset`` and clipped into the window.

    Clipped entries are taps of weight 0 (never read) or outputs outside the
    chunk (computed for the permute form's block alignment, then dropped).
    """
    idx = np.clip(table.idx[:, a0:a1].astype(np.int64) - offset, 0, n_units - 1)
    return np.ascontiguousarray(idx, dtype=np.int32), np.ascontiguousarray(table.w[:, a0:a1])


class _Band(NamedTuple):
    """A run of a chunk's table outputs ``[t0, t1)`` computed by one kernel call from the
    window pixels ``[w0, w1)`` (relative to the chunk's window)."""

    t0: int
    t1: int
    w0: int
    w1: int


@dataclass(frozen=True)
class _AxisPiece:
    """One output chunk along one axis: its window, the input chunks it reads, its table."""

    size: int             # output pixels in the chunk
    src: tuple            # input chunk indices read
    crop: tuple           # (start, stop) of the window inside those chunks
    idx: np.ndarray
    w: np.ndarray
    drop: int             # leading table outputs computed only for alignment (x axis)
    bands: tuple = ()     # the _Band runs that tile [0, drop + size * per_pixel)


def _pieces(table, in_chunks, n_out_px, per_pixel, align):
    """The _AxisPiece of every output chunk of one axis (``per_pixel``: table units per pixel)."""
    starts = np.cumsum((0,) + tuple(in_chunks))
    sizes = out_bounds(in_chunks, int(starts[-1]), n_out_px)
    pieces, o0 = [], 0
    for size in sizes:
        o1 = o0 + size
        if size == 0:
            pieces.append(_AxisPiece(0, (), (0, 0), None, None, 0))
            continue
        u0, u1 = o0 * per_pixel, o1 * per_pixel
        lo, hi = _window(table.idx, table.w, u0, u1, per_pixel)
        a0 = u0 - u0 % align
        idx, w = _slice_table(table, a0, u1, lo * per_pixel, (hi - lo) * per_pixel)
        first = int(np.searchsorted(starts, lo, side="right")) - 1
        last = int(np.searchsorted(starts, hi, side="left"))
        crop = (lo - int(starts[first]), hi - int(starts[first]))
        spans = [(max(lo, int(starts[r])) - lo, min(hi, int(starts[r + 1])) - lo)
                 for r in range(first, last)]
        bands = _bands(idx, w, per_pixel, spans, align * per_pixel // math.gcd(align, per_pixel),
                       u0 - a0)
        pieces.append(_AxisPiece(size, tuple(range(first, last)), crop, idx, w, u0 - a0,
                                 bands))
        o0 = o1
    return pieces


def _reach(idx, w, per_pixel):
    """For each table output, ``(first, last + 1)``: the window pixels its taps of non-zero
    weight read (all its taps where none has a non-zero weight)."""
    nz = w != 0
    some = nz.any(axis=0)
    lo = np.where(some, np.where(nz, idx, np.iinfo(np.int64).max).min(axis=0), idx.min(axis=0))
    hi = np.where(some, np.where(nz, idx, -1).max(axis=0), idx.max(axis=0))
    return lo // per_pixel, hi // per_pixel + 1


def _bands(idx, w, per_pixel, spans, step, drop):
    """A chunk's table outputs as up to three _Band runs: those whose taps all lie in the
    widest part of the window (its own input block) in the middle, starting and ending
    on a multiple of ``step`` (a block of the permute form and a whole pixel) after the
    ``drop`` outputs computed only for alignment, the edges on either side. One band
    when no such middle run exists."""
    n = idx.shape[1]
    lo, hi = _reach(idx.astype(np.int64), w, per_pixel)
    whole = (_Band(0, n, int(lo.min()), int(hi.max())),)
    a, b = max(spans, key=lambda s: s[1] - s[0])
    inside = np.flatnonzero((lo >= a) & (hi <= b))
    if len(inside) == 0 or len(inside) != inside[-1] - inside[0] + 1:
        return whole
    t0 = -(-max(int(inside[0]), drop) // step) * step
    t1 = n if inside[-1] + 1 == n else (int(inside[-1]) + 1) // step * step
    if t1 <= t0:
        return whole
    cuts = [t for t in (0, t0, t1, n) if 0 <= t <= n]
    return tuple(_Band(c0, c1, int(lo[c0:c1].min()), int(hi[c0:c1].max()))
                 for c0, c1 in zip(cuts, cuts[1:]) if c1 > c0)


def _sub_window(parts, hax, wax, rows, cols, dtype):
    """Window pixels ``rows`` x ``cols`` (``(start, stop)`` pairs) of the window tiled by
    ``parts`` (rows of pieces, each already cropped): a view when they lie in one piece
    of ``dtype``, else assembled into a new array."""
    heights = np.cumsum([0] + [row[0].shape[hax] for row in parts])
    widths = np.cumsum([0] + [piece.shape[wax] for piece in parts[0]])
    r_first = int(np.searchsorted(heights, rows[0], side="right")) - 1
    r_last = int(np.searchsorted(heights, rows[1], side="left"))
    c_first = int(np.searchsorted(widths, cols[0], side="right")) - 1
    c_last = int(np.searchsorted(widths, cols[1], side="left"))
    shape = list(parts[0][0].shape)
    shape[hax], shape[wax] = rows[1] - rows[0], cols[1] - cols[0]
    one = r_last - r_first == 1 and c_last - c_first == 1
    x = None if one and parts[r_first][c_first].dtype == dtype else _memory.empty(shape, dtype)
    for r in range(r_first, r_last):
        for c in range(c_first, c_last):
            y0, y1 = max(rows[0], heights[r]), min(rows[1], heights[r + 1])
            x0, x1 = max(cols[0], widths[c]), min(cols[1], widths[c + 1])
            src, dst = [slice(None)] * 4, [slice(None)] * 4
            src[hax], src[wax] = slice(y0 - heights[r], y1 - heights[r]), \
                slice(x0 - widths[c], x1 - widths[c])
            if x is None:
                return parts[r][c][tuple(src)]
            dst[hax], dst[wax] = slice(y0 - rows[0], y1 - rows[0]), \
                slice(x0 - cols[0], x1 - cols[0])
            x[tuple(dst)] = parts[r][c][tuple(src)]
    return x


def _block_ranges(piece, chunks):
    """For each input chunk ``piece`` reads: (chunk index, [start, stop) inside it, whole?)."""
    starts = np.cumsum((0,) + tuple(chunks))
    lo = int(starts[piece.src[0]]) + piece.crop[0]
    hi = int(starts[piece.src[0]]) + piece.crop[1]
    out = []
    for r in piece.src:
        a, b = max(lo, int(starts[r])), min(hi, int(starts[r + 1]))
        whole = (a, b) == (starts[r], starts[r + 1])
        out.append((r, a - int(starts[r]), b - int(starts[r]), whole))
    return out


def _cut(block, slices):
    """The strips ``block[s]`` for each of ``slices`` (contiguous copies: only they travel)."""
    return tuple(np.ascontiguousarray(block[s]) for s in slices)


class _Taps(NamedTuple):
    """A chunk's piece of an axis table, as the kernels read one."""

    idx: np.ndarray
    w: np.ndarray
    unit: bool


def _planes(x, nhwc):
    """A 4-D window as the kernel's (planes, rows, values per row): a view when its strides
    allow one (rows may be strided; values within a row must be contiguous)."""
    if nhwc:
        n, h, w, c = x.shape
        x3 = x.reshape(n, h, w * c)
    else:
        n, c, h, w = x.shape
        x3 = x.reshape(n * c, h, w)
    return x3 if x3.strides[2] == x3.itemsize else np.ascontiguousarray(x3)


def _band_taps(piece, band, per_pixel):
    """The band's slice of a chunk's table, indices relative to the band's window (taps
    of weight 0 clipped into it: they are never read)."""
    idx = piece.idx[:, band.t0:band.t1].astype(np.int64) - band.w0 * per_pixel
    idx = np.clip(idx, 0, (band.w1 - band.w0) * per_pixel - 1)
    return np.ascontiguousarray(idx, dtype=np.int32), np.ascontiguousarray(
        piece.w[:, band.t0:band.t1])


def _run_band(out3, x3, ytaps, xtaps, plan_, dtype):
    """The kernel on one band: ``out3`` (planes, rows, values) from ``x3``."""
    window = _rz.AxisTable(xtaps[0], xtaps[1], x3.shape[2], False)   # indices checked
    base, rel, blk = _rz.permute_form(window) if plan_.perm else _rz._NO_PERM
    if plan_.perm and not len(base):   # cannot happen: block-aligned spans only shrink
        raise RuntimeError("resize: a chunk lost the whole image's permute form.")
    nthreads = threads_for(out3.size + x3.size, _rz._MIN_PER_THREAD)
    with np.errstate(over="ignore"):
        _cpu().separable_fwd(out3, x3, ytaps[0], ytaps[1], plan_.ytab.unit, xtaps[0],
                             xtaps[1], plan_.xtab.unit, base, rel, blk, plan_.chan,
                             plan_.order, nthreads)
    if plan_.backward:       # as the in-memory backward (resize._separable_bwd_cpu)
        ytab = _rz.AxisTable(ytaps[0], ytaps[1], x3.shape[1], plan_.ytab.unit)
        xtab = _rz.AxisTable(xtaps[0], xtaps[1], x3.shape[2], plan_.xtab.unit)
        if _rz._sums_may_overflow(out3, x3, (ytab, xtab)):
            _rz._redo_overflowed_sums(out3, x3, ytab, xtab, plan_.chan, plan_.order)
        return
    if dtype == np.float32 and _rz._averages(plan_.ytab, plan_.xtab) and np.isinf(out3).any():
        pieces = (_Taps(*ytaps, plan_.ytab.unit), _Taps(*xtaps, plan_.xtab.unit))
        _rz._redo_overflowed_means(_cpu(), out3, x3, *pieces, plan_.chan, plan_.order,
                                   nthreads)      # as the in-memory call redoes them


def _run_chunk(parts, ypiece, xpiece, plan_, nhwc, dtype):
    """One output chunk, band by band (see the module docstring): each band's kernel
    writes into the chunk's result, except the columns computed only for alignment."""
    hax, wax = (1, 2) if nhwc else (2, 3)
    first = parts[0][0]
    n = first.shape[0]
    c = first.shape[3] if nhwc else first.shape[1]
    ny, nx = ypiece.size, xpiece.size
    out = _memory.empty((n, ny, nx, c) if nhwc else (n, c, ny, nx), dtype)
    out3 = out.reshape((n, ny, nx * c) if nhwc else (n * c, ny, nx))
    if out3.size == 0:
        return out
    chan, per_pixel = plan_.chan, plan_.expand
    drop = xpiece.drop
    for yb in ypiece.bands:
        ytaps = _band_taps(ypiece, yb, 1)
        for xb in xpiece.bands:
            x3 = _planes(_sub_window(parts, hax, wax, (yb.w0, yb.w1), (xb.w0, xb.w1), dtype),
                         nhwc)
            xtaps = _band_taps(xpiece, xb, per_pixel)
            rows = slice(yb.t0, yb.t1)
            if xb.t0 >= drop:          # straight into the result
                _run_band(out3[:, rows, (xb.t0 - drop) * chan:(xb.t1 - drop) * chan], x3,
                          ytaps, xtaps, plan_, dtype)
                continue
            tmp = _memory.empty((out3.shape[0], yb.t1 - yb.t0, (xb.t1 - xb.t0) * chan), dtype)
            _run_band(tmp, x3, ytaps, xtaps, plan_, dtype)
            out3[:, rows, :(xb.t1 - drop) * chan] = tmp[:, :, (drop - xb.t0) * chan:]
    return out


def separable(op, x, ytab, xtab, out_hw, nhwc):
    """The dask array of ``A_y @ x @ A_x.T`` over a spatially chunked 4-D ``x``."""
    dtype = np.dtype(ytab.w.dtype)
    if nhwc and x.numblocks[3] > 1:
        x = x.rechunk({3: -1})
    hax, wax = (1, 2) if nhwc else (2, 3)
    c_ = x.shape[3] if nhwc else x.shape[1]
    h, w = x.shape[hax], x.shape[wax]
    p = plan(ytab, xtab, c_, w, nhwc, backward=op.endswith("_backward"))
    ypieces = _pieces(ytab, x.chunks[hax], out_hw[0], 1, 1)
    xpieces = _pieces(p.xtab, x.chunks[wax], out_hw[1], p.expand, p.block)
    token = tokenize(op, x, ytab.idx, ytab.w, xtab.idx, xtab.w, out_hw, nhwc)
    name, halo = f"{op}-spatial-{token}", f"{op}-halo-{token}"
    batch = [(i, j) for i in range(x.numblocks[0])
             for j in range(1 if nhwc else x.numblocks[1])]
    dsk = {}
    for i, j in batch:
        strips = {}              # input block -> the strips its neighbours read from it
        for oi, yp in enumerate(ypieces):
            for oj, xp in enumerate(xpieces):
                key = (name, i, oi, oj, 0) if nhwc else (name, i, j, oi, oj)
                if yp.size == 0 or xp.size == 0:
                    shape = _empty_shape(x, i, j, yp.size, xp.size, nhwc)
                    dsk[key] = (functools.partial(np.zeros, shape, dtype),)
                    continue
                parts = []
                for r, y0, y1, ywhole in _block_ranges(yp, x.chunks[hax]):
                    row = []
                    for c, x0, x1, xwhole in _block_ranges(xp, x.chunks[wax]):
                        block = (x.name, i, r, c, 0) if nhwc else (x.name, i, j, r, c)
                        if not (ywhole and xwhole):
                            sl = [slice(None)] * 4
                            sl[hax], sl[wax] = slice(y0, y1), slice(x0, x1)
                            cuts = strips.setdefault(block, [])
                            block = (operator.getitem, (halo,) + block[1:], len(cuts))
                            cuts.append(tuple(sl))
                        row.append(block)
                    parts.append(row)
                dsk[key] = (_run_chunk, parts, yp, xp, p, nhwc, dtype)
        # one task per input block cuts all its strips where the block lives: only the
        # strips travel to the neighbours' tasks (few tasks, little data)
        for block, cuts in strips.items():
            dsk[(halo,) + block[1:]] = (_cut, block, cuts)
    ych = tuple(yp.size for yp in ypieces)
    xch = tuple(xp.size for xp in xpieces)
    if nhwc:
        chunks = (x.chunks[0], ych, xch, (c_,))
    else:
        chunks = (x.chunks[0], x.chunks[1], ych, xch)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    return da.Array(graph, name, chunks=chunks, meta=np.empty((0,) * 4, dtype))


def _empty_shape(x, i, j, ny, nx, nhwc):
    if nhwc:
        return (x.chunks[0][i], ny, nx, x.shape[3])
    return (x.chunks[0][i], x.chunks[1][j], ny, nx)
