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
"""
from __future__ import annotations

import functools
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


def plan(ytab, xtab, c, w_in, nhwc) -> _Plan:
    """The choices ``fastinterp.resize``'s CPU kernel makes for the whole image."""
    channels = c if nhwc else 1
    expand = 1 < channels <= _rz._EXPAND_CHANNELS
    xt = _rz.channel_table(xtab, channels) if expand else xtab
    chan = 1 if expand else channels
    perm = _rz.permute_form(xt) if chan == 1 else _rz._NO_PERM
    permuted = len(perm[0]) > 0
    order = _rz.image_pass_order(ytab, xtab, w_in)
    block = _cpu().PERM_BLOCK[xt.w.dtype.name] if permuted else 1
    return _Plan(ytab, xt, channels if expand else 1, chan, permuted, block, order)


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


@dataclass(frozen=True)
class _AxisPiece:
    """One output chunk along one axis: its window, the input chunks it reads, its table."""

    size: int             # output pixels in the chunk
    src: tuple            # input chunk indices read
    crop: tuple           # (start, stop) of the window inside those chunks
    idx: np.ndarray
    w: np.ndarray
    drop: int             # leading table outputs computed only for alignment (x axis)


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
        pieces.append(_AxisPiece(size, tuple(range(first, last)), crop, idx, w, u0 - a0))
        o0 = o1
    return pieces


def _assemble(parts, hax, wax, dtype):
    """The window tiled by ``parts`` (rows of pieces, each already cropped), copied once."""
    if len(parts) == 1 and len(parts[0]) == 1:
        return np.ascontiguousarray(parts[0][0], dtype=dtype)
    shape = list(parts[0][0].shape)
    shape[hax] = sum(row[0].shape[hax] for row in parts)
    shape[wax] = sum(piece.shape[wax] for piece in parts[0])
    x = _memory.empty(shape, dtype)
    r0 = 0
    for row in parts:
        c0 = 0
        for piece in row:
            dst = [slice(None)] * 4
            dst[hax] = slice(r0, r0 + piece.shape[hax])
            dst[wax] = slice(c0, c0 + piece.shape[wax])
            x[tuple(dst)] = piece
            c0 += piece.shape[wax]
        r0 += row[0].shape[hax]
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


def _run_chunk(parts, ypiece, xpiece, plan_, nhwc, dtype):
    """One output chunk: assemble the window, run the kernel on it, crop the alignment columns."""
    hax, wax = (1, 2) if nhwc else (2, 3)
    x = _assemble(parts, hax, wax, dtype)
    if nhwc:
        n, h, w, c = x.shape
        x3, planes = x.reshape(n, h, w * c), n
    else:
        n, c, h, w = x.shape
        x3, planes = x.reshape(n * c, h, w), n * c
    ny = ypiece.idx.shape[1]
    units = xpiece.idx.shape[1]
    out3 = _memory.empty((planes, ny, units * plan_.chan), dtype)
    if planes:
        window = _rz.AxisTable(xpiece.idx, xpiece.w, x3.shape[2], False)   # indices checked
        base, rel, blk = _rz.permute_form(window) if plan_.perm else _rz._NO_PERM
        if plan_.perm and not len(base):   # cannot happen: block-aligned spans only shrink
            raise RuntimeError("resize: a chunk lost the whole image's permute form.")
        nthreads = threads_for(out3.size + x3.size, _rz._MIN_PER_THREAD)
        with np.errstate(over="ignore"):
            _cpu().separable_fwd(out3, x3, ypiece.idx, ypiece.w, plan_.ytab.unit, xpiece.idx,
                                 xpiece.w, plan_.xtab.unit, base, rel, blk, plan_.chan,
                                 plan_.order, nthreads)
        if dtype == np.float32 and _rz._averages(plan_.ytab, plan_.xtab) and np.isinf(out3).any():
            pieces = (_Taps(ypiece.idx, ypiece.w, plan_.ytab.unit),
                      _Taps(xpiece.idx, xpiece.w, plan_.xtab.unit))
            _rz._redo_overflowed_means(_cpu(), out3, x3, *pieces, plan_.chan, plan_.order,
                                       nthreads)      # as the in-memory call redoes them
    cu = c if nhwc else 1
    drop = xpiece.drop * plan_.chan
    keep = xpiece.size * cu
    out = out3[:, :, drop:drop + keep]
    if nhwc:
        return np.ascontiguousarray(out).reshape(n, ny, xpiece.size, c)
    return np.ascontiguousarray(out).reshape(n, c, ny, xpiece.size)


def separable(op, x, ytab, xtab, out_hw, nhwc):
    """The dask array of ``A_y @ x @ A_x.T`` over a spatially chunked 4-D ``x``."""
    dtype = np.dtype(ytab.w.dtype)
    if nhwc and x.numblocks[3] > 1:
        x = x.rechunk({3: -1})
    hax, wax = (1, 2) if nhwc else (2, 3)
    c_ = x.shape[3] if nhwc else x.shape[1]
    h, w = x.shape[hax], x.shape[wax]
    p = plan(ytab, xtab, c_, w, nhwc)
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
