"""grid_sample over a spatially chunked source: each output block reads only the source
blocks its grid points touch.

First pass (documented in :func:`fastinterp.dask.grid_sample`): the minimum
and maximum of every grid block are computed (one small reduction over the
grid) to decide, for each output block, the source window its taps can
reach. That needs the grid's values when the graph is built, so a lazy grid
is computed once for its bounds and once when the result is computed. A
warp's grid is not: its blocks' bounds come from the grid at their corners
(:func:`warp_grid_bounds`), so building the graph of a huge warp costs a few
points per block, not the whole grid.

Exactness: each task writes its window into a zero-initialised buffer of
the batch block's full source shape and calls ``fi.grid_sample`` on it with
the untouched grid block, so the kernel runs with the whole image's geometry
and its result equals the in-memory call bit for bit. The buffer is
allocated with ``calloc`` (``np.zeros``): pages outside the window are never
written, so they take address space but no memory; the limit is the
process's address space (``vm.overcommit_memory``), not its RAM.
"""
from __future__ import annotations

import functools
import math
import mmap
import sys
from dataclasses import dataclass

import numpy as np
import dask
import dask.array as da
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

import fastinterp as fi
from fastinterp import warp as _wp
from fastinterp._half import is_half, narrow
from fastinterp._validate import shown
from fastinterp.sample import _fill_values, add_fill, outside_weight, round_for_uint8

from ._graph import in_memory_error, probe

# Source pixels beyond a point's floor coordinate that its taps may read (bicubic: -1..+2),
# plus one for the rounding of the bounds computed here in float64.
_MARGIN_LO, _MARGIN_HI = 2, 4


def _block_bounds(g):
    """(xmin, xmax, ymin, ymax, any non-finite) of one grid block, shaped (1, 1, 1, 5)."""
    out = np.full((1, 1, 1, 5), np.nan)
    if g.size:
        vals = g.reshape(-1, 2).astype(np.float64)
        finite = np.isfinite(vals)
        out[0, 0, 0, 4] = float(not finite.all())
        for axis in (0, 1):
            v = vals[finite[:, axis], axis]
            if v.size:
                out[0, 0, 0, 2 * axis] = v.min()
                out[0, 0, 0, 2 * axis + 1] = v.max()
    else:
        out[0, 0, 0, 4] = 0
    return out


def _pixels(g, size, align_corners):
    """Grid value -> pixel coordinate (float64), fastinterp's convention (a Python float:
    one beyond the float64 range is inf, without NumPy's overflow warning)."""
    g = float(g)
    return (g + 1) / 2 * (size - 1) if align_corners else ((g + 1) * size - 1) / 2


_FAR = 2.0 ** 62       # pixel coordinates beyond any image (and within an int64's range)


def _axis_window(gmin, gmax, nonfinite, size, padding, align_corners, eps=2.0**-53):
    """Source pixels [lo, hi) that points with grid values in [gmin, gmax] may read, the
    sampler computing their coordinates in a float of unit roundoff ``eps``."""
    if nonfinite and padding != "zeros":
        return 0, size          # NaN reads pixel 0, inf the border
    if math.isnan(gmin):
        return 0, 0             # no finite point: nothing is read
    # a finite grid value near the float64 limit gives an infinite pixel coordinate: such a
    # point is far outside either way (clipped, the window rule below is unchanged)
    pmin, pmax = (min(max(_pixels(g, size, align_corners), -_FAR), _FAR) for g in (gmin, gmax))
    if padding == "border":     # points clamp to the edge pixels, whose taps (weight 0 or not,
        pmin, pmax = (min(max(p, 0.0), size - 1.0) for p in (pmin, pmax))   # NaN included) count
    # the sampler's coordinate is off by a few of its ulps (float32: 4 px at 5e7 px); the
    # margins allow one pixel, enough below 2**21 px in float32
    slack = max(0, math.ceil(4 * eps * (max(abs(pmin), abs(pmax)) + size)) - 1)
    lo = math.floor(pmin) - _MARGIN_LO - slack
    hi = math.floor(pmax) + _MARGIN_HI + slack
    if padding in ("reflection", "wrap") and (lo < 0 or hi > size):
        return 0, size          # taps beyond an edge read pixels anywhere along the axis
    return max(lo, 0), max(min(hi, size), max(lo, 0))


@dataclass(frozen=True)
class _Window:
    rows: tuple        # source chunk indices along H
    cols: tuple        # ... along W
    y: tuple           # (start, stop) in source pixels
    x: tuple


def _chunk_span(starts, lo, hi):
    if hi <= lo:
        return ()
    first = int(np.searchsorted(starts, lo, side="right")) - 1
    last = int(np.searchsorted(starts, hi, side="left"))
    return tuple(range(first, last))


# Linux's MAP_NORESERVE (the mmap module names it from Python 3.12)
_NORESERVE = 0x4000 if sys.platform.startswith("linux") else 0


def _lazy_zeros(shape, dtype):
    """``np.zeros(shape, dtype)`` whose pages nothing reserves: anonymous memory mapped
    with MAP_NORESERVE, zero pages until written. A task writes one window of a
    full-size source; a plain allocation of a whole slide (100k x 100k x 3 float32:
    112 GiB) is refused by the kernel's overcommit check, this one needs address space
    only."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes == 0 or not hasattr(mmap, "MAP_ANONYMOUS"):
        return np.zeros(shape, dtype)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", _NORESERVE)
    return np.frombuffer(mmap.mmap(-1, nbytes, flags=flags), dtype).reshape(shape)


def _sample_block(grid, blocks, window, starts_y, starts_x, shape, nhwc, dtype, opts):
    """fi.grid_sample of one output block on a full-size, zero-filled source holding its
    window, as the in-memory op computes it. Only the window's pages are written: a uint8
    or half image is placed in a float32 source (the in-memory op's float32 copy of the
    whole image; widening a half one there would touch every page), and a 'constant' fill
    is added as that op adds it, in the compute dtype, with the weight of the taps inside
    the image sampled from ones placed in the window only (every tap of the block's
    points lies there); a half result is rounded once, at the end."""
    uint8, half = np.dtype(dtype) == np.uint8, is_half(dtype)
    buf = _lazy_zeros(shape, np.float32 if uint8 or half else dtype)
    hax, wax = (1, 2) if nhwc else (2, 3)
    ones = None
    if opts["padding_mode"] == "constant":
        ones = _lazy_zeros((shape[0], 1, shape[hax], shape[wax]), buf.dtype)
    for r, row in zip(window.rows, blocks):
        for s, block in zip(window.cols, row):
            ys = slice(starts_y[r], starts_y[r] + block.shape[hax])
            xs = slice(starts_x[s], starts_x[s] + block.shape[wax])
            sl = [slice(None)] * 4
            sl[hax], sl[wax] = ys, xs
            buf[tuple(sl)] = block
            if ones is not None:
                ones[:, :, ys, xs] = 1
    if uint8 or half:
        grid = np.ascontiguousarray(grid, dtype=np.float32)      # (exact for a half grid)
    res = fi.grid_sample(buf, grid, **dict(opts, padding_mode="zeros", fill=None)
                         if ones is not None else opts)
    if ones is not None:
        fills = _fill_values("grid_sample", opts.get("fill"), "constant",
                             shape[-1 if nhwc else 1], res.dtype)
        if fills is not None:
            # every tap of a point with a tap inside the image lies in the window, and so
            # does where 'border' clamps the others: both sums are the in-memory op's
            inside, full = (fi.grid_sample(ones, grid, **dict(
                opts, padding_mode=pad, fill=None, layout="NCHW")) for pad in ("zeros", "border"))
            add_fill(res, fills, outside_weight(inside, full), nhwc)
    if half:
        return narrow(res, dtype)
    return round_for_uint8(res).astype(np.uint8) if uint8 else res


def _grid_bounds(grid, known=None):
    """(numblocks..., 5) bounds (:func:`_block_bounds`) of every block of ``grid``: those of
    ``known`` (same shape; NaN in column 4 where unknown), the others computed, in one pass."""
    if known is None:
        return dask.compute(grid.map_blocks(_block_bounds, chunks=(1, 1, 1, 5),
                                            dtype=np.float64))[0]
    bounds = known.copy()
    todo = [idx for idx in np.ndindex(bounds.shape[:3]) if math.isnan(bounds[idx][4])]
    for idx, b in zip(todo, dask.compute(*[grid.blocks[idx].map_blocks(
            _block_bounds, chunks=(1, 1, 1, 5), dtype=np.float64) for idx in todo])):
        bounds[idx] = b[0, 0, 0]
    return bounds


def grid_sample_windows(op, x, grid, opts, max_window=None, known_bounds=None):
    """The windowed graph of grid_sample over a spatially chunked ``x`` (see module docstring);
    ``op`` names the caller (grid_sample or a warp) in the errors; ``known_bounds(grid)``,
    if given, returns the grid blocks' bounds where known (see :func:`_grid_bounds`)."""
    nhwc = opts["layout"] == "NHWC"
    hax, wax, cax = (1, 2, 3) if nhwc else (2, 3, 1)
    result = probe(functools.partial(fi.grid_sample, **opts), {"input": x, "grid": grid})
    if grid.ndim != 4 or grid.shape[0] != x.shape[0]:
        in_memory_error(functools.partial(fi.grid_sample, **opts), {"input": x, "grid": grid})
        raise ValueError(f"{op}: grid must have shape (N, H_out, W_out, 2) with N = "
                         f"{x.shape[0]}; got {tuple(grid.shape)}.")
    if x.numblocks[cax] > 1:
        x = x.rechunk({cax: -1})
    grid = grid.rechunk((x.chunks[0], grid.chunks[1], grid.chunks[2], 2))
    bounds = _grid_bounds(grid, None if known_bounds is None else known_bounds(grid))
    H, W = x.shape[hax], x.shape[wax]
    starts_y = np.cumsum((0,) + x.chunks[hax])
    starts_x = np.cumsum((0,) + x.chunks[wax])
    name = f"{op}-windows-{tokenize(x, grid, opts)}"
    dsk = {}
    # the sampler's coordinate arithmetic: float64 for float64 images and grids only
    # (uint8 and half operands are computed in float32)
    eps = 2.0**-53 if np.dtype(x.dtype) == np.float64 and grid.dtype == np.float64 \
        else 2.0**-24
    for i in range(grid.numblocks[0]):
        for a in range(grid.numblocks[1]):
            for b in range(grid.numblocks[2]):
                bx = bounds[i, a, b]
                y = _axis_window(bx[2], bx[3], bx[4] > 0, H, opts["padding_mode"],
                                 opts["align_corners"], eps)
                xw = _axis_window(bx[0], bx[1], bx[4] > 0, W, opts["padding_mode"],
                                  opts["align_corners"], eps)
                if max_window is not None and (y[1] - y[0]) * (xw[1] - xw[0]) > max_window:
                    raise ValueError(
                        f"{op}: the grid block {(i, a, b)} reaches a source window of "
                        f"{y[1] - y[0]} x {xw[1] - xw[0]} pixels, over max_window="
                        f"{max_window}; chunk the grid more finely along H_out/W_out.")
                win = _Window(_chunk_span(starts_y, *y), _chunk_span(starts_x, *xw), y, xw)
                src = [[(x.name, i, r, s, 0) if nhwc else (x.name, i, 0, r, s)
                        for s in win.cols] for r in win.rows]
                shape = list(x.shape)
                shape[0] = x.chunks[0][i]
                key = (name, i, a, b, 0) if nhwc else (name, i, 0, a, b)
                dsk[key] = (_sample_block, (grid.name, i, a, b, 0), src, win, starts_y,
                            starts_x, tuple(shape), nhwc, x.dtype, opts)
    C = x.shape[cax]
    if nhwc:
        chunks = (x.chunks[0], grid.chunks[1], grid.chunks[2], (C,))
    else:
        chunks = (x.chunks[0], (C,), grid.chunks[1], grid.chunks[2])
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x, grid])
    return da.Array(graph, name, chunks=chunks, meta=np.empty((0,) * 4, result.dtype))


def _output_chunks(op, chunks, shape, dtype):
    """A warp's ``chunks`` of its output (H_out, W_out), as dask normalises them ("auto",
    sizes >= 1 where the axis is not empty, -1 or None for one chunk), or a ValueError
    naming them."""
    bad = ValueError(f"{op}: chunks must be the output's (H_out, W_out) chunks as dask takes "
                     f"them (\"auto\", or per axis a size >= 1 or sizes summing to the axis); "
                     f"got {shown(chunks)} for an output of {shape}.")
    try:
        hc, wc = da.core.normalize_chunks(chunks, shape, dtype=np.dtype(dtype))
    except (ValueError, TypeError, ZeroDivisionError):
        raise bad from None
    if any(n and not all(c >= 1 for c in cs) for cs, n in zip((hc, wc), shape)):
        raise bad
    return hc, wc


def warp_grid(op, x, wmap, nhwc, chunks, dtype):
    """The sampling grid of a warp (``wmap``, a fastinterp.warp._Map) as a dask array
    (N, H_out, W_out, 2) of ``dtype``, chunked like ``x`` along N and by ``chunks``
    (H_out, W_out) (default: x's chunk size along H and W). Each block is computed
    from the matrices when needed, element by element as the in-memory warp
    computes the whole grid, so its values are the same bits."""
    hax, wax = (1, 2) if nhwc else (2, 3)
    if chunks is None:
        chunks = (x.chunksize[hax], x.chunksize[wax])
    hc, wc = _output_chunks(op, chunks, (wmap.Ho, wmap.Wo), dtype)
    # everything the grid's values depend on (the base coordinates: match, align_corners)
    token = tokenize(x.chunks[0], wmap.K, wmap.match, wmap.align_corners, wmap.Ho, wmap.Wo,
                     hc, wc, dtype)
    name = f"warp-grid-{token}"
    n_starts, r_starts, c_starts = (np.cumsum((0,) + c) for c in (x.chunks[0], hc, wc))
    dsk = {(name, i, a, b, 0): (_grid_block, wmap, int(n_starts[i]), int(n_starts[i + 1]),
                                int(r_starts[a]), int(r_starts[a + 1]), int(c_starts[b]),
                                int(c_starts[b + 1]), dtype)
           for i in range(len(x.chunks[0])) for a in range(len(hc)) for b in range(len(wc))}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[])
    return da.Array(graph, name, chunks=(x.chunks[0], hc, wc, (2,)),
                    meta=np.empty((0, 0, 0, 0), dtype))


def _grid_block(wmap, n0, n1, r0, r1, c0, c1, dtype):
    out = np.empty((n1 - n0, r1 - r0, c1 - c0, 2), dtype)
    for n in range(n0, n1):
        out[n - n0] = wmap.grid_rows(n, r0, r1, dtype, c0, c1)
    return out



def warp_grid_bounds(wmap, grid):
    """Bounds (as :func:`_block_bounds`) of every block of ``grid``, :func:`warp_grid`'s grid
    of ``wmap``, from its points at the block corners; NaN in column 4 where they do
    not bound the block (to be computed from the grid).

    An affine map's points, rounding included, are monotone along each axis (products
    by a constant and sums, each rounded, are), so a block's extremes are at its
    corners; :func:`_as_grid_values` takes them to the grid's values. A
    perspective map's are too, in exact arithmetic, where w keeps one sign over the
    block (the block's image is then a convex quadrilateral); their rounding is covered
    by widening each bound by twice the error bound of x = u / w, (|du| + |x| |dw|) /
    (|w| - |dw|) with |du| <= 4 eps sum|K b| (two products and two sums; likewise dw),
    at the block's worst corner (these magnitudes are convex, |w| affine), and by 1e-9
    relatively for the division and the cast. Near the horizon u and w lose most of
    their digits to cancellation and this widening grows; blocks where w's sign is not
    certain (|w| within its error of 0 at a corner), or any corner is not finite, are
    left unknown.
    """
    dtype = grid.dtype
    n_starts, r_starts, c_starts = (np.cumsum((0,) + tuple(c)) for c in grid.chunks[:3])
    known = np.full(grid.numblocks[:3] + (5,), np.nan)
    if grid.size == 0 or 0 in grid.chunks[0]:
        return known
    rows = np.unique(np.concatenate([r_starts[:-1], r_starts[1:] - 1]))
    cols = np.unique(np.concatenate([c_starts[:-1], c_starts[1:] - 1]))
    x, y, w = wmap.points(rows, cols)
    r0, r1 = np.searchsorted(rows, r_starts[:-1]), np.searchsorted(rows, r_starts[1:] - 1)
    c0, c1 = np.searchsorted(cols, c_starts[:-1]), np.searchsorted(cols, c_starts[1:] - 1)

    def corners(a):                       # (N, nH, nW, 4): a at each block's 4 corners
        return np.stack([a[:, r][:, :, c] for r in (r0, r1) for c in (c0, c1)], axis=-1)

    xs, ys = corners(x), corners(y)
    ok = np.isfinite(xs).all(-1) & np.isfinite(ys).all(-1)
    widths = (0.0, 0.0)
    if w is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            widths, certain = _rounding_widths(xs, ys, corners(w), [
                corners(m).max(axis=-1) for m in wmap.magnitudes(rows, cols)])
        ok &= certain
    first = n_starts[:-1]                 # per batch chunk: extremes over its images
    ok = np.logical_and.reduceat(ok, first, axis=0)
    for col, a, width in ((0, xs, widths[0]), (2, ys, widths[1])):
        with np.errstate(over="ignore", invalid="ignore"):
            lo = np.minimum.reduceat(a.min(axis=-1) - width, first, axis=0)
            hi = np.maximum.reduceat(a.max(axis=-1) + width, first, axis=0)
            if w is not None:
                lo, hi = lo - 1e-9 * (1 + np.abs(lo)), hi + 1e-9 * (1 + np.abs(hi))
            known[..., col], known[..., col + 1] = _as_grid_values(lo, hi, dtype)
    known[..., 4] = np.where(ok, 0.0, np.nan)
    return known


def _rounding_widths(xs, ys, ws, sums):
    """Per block (N, nH, nW): how far the computed x = u / w and y = v / w may stray from
    their exact values (twice the error bound: at a corner and inside), and whether w's
    sign is certain over the block; ``xs``, ``ys``, ``ws`` at the 4 corners (last axis),
    ``sums`` the largest magnitude sums of u, v, w over them."""
    eps = 4 * np.finfo(np.float64).eps / 2          # two products and two sums, rounded
    tiny = 4 * 2.0 ** -1074                         # ... each product's underflow, absolute
    su, sv, sw = (eps * m + tiny for m in sums)
    margin = np.abs(ws).min(axis=-1) - sw           # a lower bound of |w| over the block
    certain = ((ws > 0).all(-1) | (ws < 0).all(-1)) & (margin > 0)
    margin = np.where(certain, margin, np.nan)
    return tuple(2 * (s + np.abs(a).max(axis=-1) * sw) / margin
                 for s, a in ((su, xs), (sv, ys))), certain


def _as_grid_values(lo, hi, dtype):
    """Bounds of the grid's values (``dtype``, as float64) from bounds [lo, hi] of its
    points: those beyond the sampler's range become the point FAR_OUTSIDE in their
    direction (fastinterp.warp._far_outside, inside that range), the others are cast
    (both monotone)."""
    limit = np.float64(np.sqrt(np.finfo(dtype).max))
    ends = [_wp._far_outside(v, dtype) for v in (lo, hi)]
    inner_lo, inner_hi = np.maximum(lo, -limit), np.minimum(hi, limit)
    inner = inner_lo <= inner_hi
    lo = np.minimum(np.minimum(*ends), np.where(inner, inner_lo, np.inf))
    hi = np.maximum(np.maximum(*ends), np.where(inner, inner_hi, -np.inf))
    return lo.astype(dtype).astype(np.float64), hi.astype(dtype).astype(np.float64)
