"""numba.cuda distance kernels: tiled direct-difference distances, per-query top-k,
and the backward pass.

On the GPU the arithmetic is cheap and memory is not, so these kernels use
direct differences ``sum_k (x_ik - y_jk)^2`` (no cancellation, exact zeros
for identical rows) rather than the GEMM expansion used on the CPU.

Batches: every kernel works on stacked operands (S, rows, D) and a batch map
per operand (``fastinterp.distance.Batch``): result element b pairs x's
element ``xmap[b]`` with y's ``ymap[b]``. The launches stay 1-D, over batch
x tiles (or batch x rows), so one launch covers the whole batch.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, float64, int64

from ._support import THREADS_1D, THREADS_2D, blocks_strided, to_device

TILE = THREADS_2D[0]       # shared-memory tile edge (threads per block side)
MAX_K = 128                # largest k of the per-query top-k kernel (local arrays)
MAX_BLOCKS = 1 << 16       # blocks per 1-D launch; grid-stride loops cover the rest


@cuda.jit(device=True)
def _scaled_l2(x, y, xb, yb, i, j, q):
    """|q x[xb, i] - q y[yb, j]| in float64, the differences divided by the largest
    first: the L2 distance of rows whose squares overflow or underflow the sum (rare:
    called only for those pairs); q = 1/4 keeps the differences of finite float64 rows
    finite."""
    big = 0.0
    for k in range(x.shape[2]):
        big = max(big, abs(float64(x[xb, i, k]) * q - float64(y[yb, j, k]) * q))
    if not (0.0 < big < math.inf):
        return big
    acc = 0.0
    for k in range(x.shape[2]):
        t = (float64(x[xb, i, k]) * q - float64(y[yb, j, k]) * q) / big
        acc += t * t
    return big * math.sqrt(acc)


def _make_sqdist_kernel(nb_type):
    # Overflowed L2 entries are redone scaled, and so are float32 ones below this (their
    # squares are summed in float32 here, in float64 on the CPU, which resolves them);
    # float64 squares underflow on the CPU too (distances below 1e-162 are 0 in both)
    tiny = 1e-30 if nb_type == float32 else -1.0

    @cuda.jit
    def sqdist_tiled(out, x, y, xmap, ymap, take_sqrt):
        """One thread computes out[b, i, j] = sum_k (x[xmap[b], i, k] - y[ymap[b], j, k])**2
        (or its root) for one (i, j) of each TILE x TILE output tile its block strides over
        (1-D grid over batch x tiles: tile t is element t // per, then row block
        (t % per) // tiles_n, column block t % tiles_n); the block stages TILE-wide
        column strips of its x and y rows in shared memory."""
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        tiles_n = (out.shape[2] + TILE - 1) // TILE
        per = ((out.shape[1] + TILE - 1) // TILE) * tiles_n
        xs = cuda.shared.array((TILE, TILE + 1), nb_type)
        ys = cuda.shared.array((TILE, TILE + 1), nb_type)
        d = x.shape[2]
        for t in range(cuda.blockIdx.x, out.shape[0] * per, cuda.gridDim.x):  # same t per block
            b = t // per
            tt = t - b * per
            xb = xmap[b]
            yb = ymap[b]
            i = (tt // tiles_n) * TILE + ty
            j = (tt % tiles_n) * TILE + tx
            row_y = (tt % tiles_n) * TILE + ty                # the y row this thread stages
            acc = nb_type(0)
            for k0 in range(0, d, TILE):
                k = k0 + tx
                xs[ty, tx] = x[xb, i, k] if i < x.shape[1] and k < d else 0
                ys[ty, tx] = y[yb, row_y, k] if row_y < y.shape[1] and k < d else 0
                cuda.syncthreads()
                for kk in range(min(TILE, d - k0)):
                    v = xs[ty, kk] - ys[tx, kk]
                    acc += v * v
                cuda.syncthreads()
            if i < out.shape[1] and j < out.shape[2]:          # bounds guard (after syncs)
                if take_sqrt and acc == acc and not (tiny < acc < math.inf):
                    out[b, i, j] = _scaled_l2(x, y, xb, yb, i, j, 1.0)
                else:
                    out[b, i, j] = math.sqrt(acc) if take_sqrt else acc
    return sqdist_tiled


_SQDIST = {np.dtype(np.float32): _make_sqdist_kernel(float32),
           np.dtype(np.float64): _make_sqdist_kernel(float64)}


@cuda.jit(device=True, inline=True)
def _after(a, b):
    """a sorts after b: a > b, with NaN after every number."""
    return (a != a and b == b) or a > b


@cuda.jit(device=True, inline=True)
def _lane_sqdist(q, qb, r, x, xb, j, d, lanes):
    """The kNN key of query row (qb, r) and database row (xb, j): sum of squared float64
    differences in the CPU kernels' order (column c into partial sum c mod 8, the sums
    combined as ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7))), so that both backends order
    ties alike."""
    for lane in range(8):
        lanes[lane] = 0.0
    for c in range(d):
        t = float64(q[qb, r, c]) - float64(x[xb, j, c])
        lanes[c % 8] += t * t
    return (((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
            + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])))


@cuda.jit
def _topk_per_query(dist, idx, x, q, xmap, qmap, k):
    """One thread scans every row of x[xmap[b]] for one query r of q[qmap[b]], keeping its
    k nearest (distances accumulated in float64, insertion sort, ties by smaller index);
    grid-stride over batch x queries."""
    nq = q.shape[1]
    d = x.shape[2]
    best_d = cuda.local.array(MAX_K, float64)
    best_i = cuda.local.array(MAX_K, int64)
    lanes = cuda.local.array(8, float64)
    for e in range(cuda.grid(1), dist.shape[0] * nq, cuda.gridsize(1)):
        b = e // nq
        r = e - b * nq
        xb = xmap[b]
        qb = qmap[b]
        filled = 0
        for j in range(x.shape[1]):
            s = _lane_sqdist(q, qb, r, x, xb, j, d, lanes)
            if filled == k and not _after(best_d[k - 1], s):
                continue
            pos = filled if filled < k else k - 1
            while pos > 0 and _after(best_d[pos - 1], s):
                if pos < k:
                    best_d[pos] = best_d[pos - 1]
                    best_i[pos] = best_i[pos - 1]
                pos -= 1
            best_d[pos] = s
            best_i[pos] = j
            if filled < k:
                filled += 1
        for c in range(k):
            dist[b, r, c] = best_d[c]
            idx[b, r, c] = best_i[c]


@cuda.jit(device=True, inline=True)
def _weight(g, dist, e, i, j, l2):
    """Pair (i, j) of batch element e: its weight g, or g / dist for the L2 backward
    (0 at dist == 0; NaN at a NaN dist, as on the CPU), in float64 (a float32 g / dist
    overflows for rows a few 1e-39 apart)."""
    w = float64(g[e, i, j])
    if l2:
        dv = float64(dist[e, i, j])
        w = 0.0 if dv == 0 else w / dv
    return w


@cuda.jit(device=True)
def _unit(a, u, r, b, bb, s, c):
    """Component c of (a[u, r] - b[bb, s]) / |a[u, r] - b[bb, s]| in float64 from quartered
    differences (finite for finite float64 rows, however far apart or close); 0 at
    distance 0; NaN when a coordinate is not finite."""
    for k in range(a.shape[2]):
        if not (math.isfinite(a[u, r, k]) and math.isfinite(b[bb, s, k])):
            return math.nan
    dv = _scaled_l2(a, b, u, bb, r, s, 0.25)
    if dv == 0:
        return 0.0
    return (float64(a[u, r, c]) * 0.25 - float64(b[bb, s, c]) * 0.25) / dv


@cuda.jit(device=True, inline=True)
def _unit_pair(g, dist, w, e, i, j, l2):
    """Whether an L2 pair takes g times the unit vector between its rows (see _unit): its
    distance overflowed, or its finite g / dist overflows float64."""
    return l2 and (math.isinf(dist[e, i, j]) or (math.isinf(w) and math.isfinite(g[e, i, j])))


@cuda.jit(device=True)
def _role_pass(g, dist, a, b, bmap, ptr, items, u, r, c, transpose, l2, wdown, ddown, track):
    """One pass over the terms of _one_role, the weights scaled by ``wdown`` and the
    coordinates by ``ddown`` (powers of two): (sum W (a - b), sum W, sum W b, and with
    ``track`` (a rare second pass) whether every weight and coordinate is finite, the
    largest |weight| and |coordinate|, the number of terms). An L2 pair of finite rows
    whose distance overflowed, or whose g / dist overflows float64, takes g times the
    unit vector between the rows (see _unit); an infinite distance between rows that
    are not finite weighs 0."""
    acc = 0.0
    wsum = 0.0
    wb = 0.0
    finite = True
    wmax = 0.0
    ar = float64(a[u, r, c]) * ddown
    bmax = abs(ar)
    for l in range(ptr[u], ptr[u + 1]):
        e = items[l]
        bb = bmap[e]
        for s in range(b.shape[1]):
            i, j = (s, r) if transpose else (r, s)
            w = _weight(g, dist, e, i, j, l2)
            bv = float64(b[bb, s, c]) * ddown
            unit = math.nan
            if _unit_pair(g, dist, w, e, i, j, l2):
                unit = _unit(a, u, r, b, bb, s, c)
                if math.isnan(unit) and math.isinf(dist[e, i, j]):
                    w = 0.0     # an infinite row: g / inf, as on the CPU
            if not math.isnan(unit):
                w = float64(g[e, i, j]) * wdown
                acc += w * unit * ddown
            else:
                w *= wdown
                acc += w * (ar - bv)        # in float64: a float32 difference may overflow
                wsum += w
                wb += w * bv
            if track:
                finite = finite and math.isfinite(w) and math.isfinite(bv)
                wmax = max(wmax, abs(w))
                bmax = max(bmax, abs(bv))
    return acc, wsum, wb, finite, wmax, bmax, (ptr[u + 1] - ptr[u]) * b.shape[1]


@cuda.jit(device=True)
def _one_role(g, dist, a, b, bmap, ptr, items, u, r, c, transpose, l2):
    """sum_e sum_s W_e(r, s) (a[u, r, c] - b[bmap[e], s, c]) for one role of a[u]: W = w,
    or w.T with ``transpose`` (see _grad_rows). An infinite a[u, r, c] takes the CPU's
    product form, (sum W) a - sum W b: inf with the sign of sum W (pair by pair,
    weights of both signs would give NaN). A sum that overflowed although every input
    is finite (float64 rows near the largest value) is summed again with the weights
    and coordinates scaled by powers of two that no term or partial sum can overflow,
    then scaled back, as the CPU redoes such rows."""
    acc, wsum, wb, _, _, _, _ = _role_pass(g, dist, a, b, bmap, ptr, items, u, r, c,
                                           transpose, l2, 1.0, 1.0, False)
    ar = float64(a[u, r, c])
    if math.isinf(ar):
        return wsum * ar - wb
    if math.isfinite(acc) or not math.isfinite(ar):
        return acc
    _, _, _, finite, wmax, bmax, n = _role_pass(g, dist, a, b, bmap, ptr, items, u, r, c,
                                                transpose, l2, 1.0, 1.0, True)
    if not finite:
        return acc
    eb = math.frexp(bmax)[1]
    sd = max(0, eb - 1020)                     # differences below 2^1022
    sw = max(0, math.frexp(wmax)[1] + eb - sd + math.frexp(float64(n))[1] + 3 - 1020)
    acc = _role_pass(g, dist, a, b, bmap, ptr, items, u, r, c, transpose, l2,
                     math.ldexp(1.0, -sw), math.ldexp(1.0, -sd), False)[0]
    up = sw + sd       # two factors: each is a float64, the product may overflow to inf
    return acc * math.ldexp(1.0, up // 2) * math.ldexp(1.0, up - up // 2)


@cuda.jit
def _grad_rows(out, g, dist, a, b, bmap, ptr, items, transpose, both, l2):
    """One thread computes out[u, r, c] = F sum_e sum_s W_e(r, s) (a[u, r, c] - b[bmap[e], s, c])
    for each element it strides over (1-D grid-stride), e running over the batch elements
    items[ptr[u]:ptr[u+1]] that use a[u], with W = w or w.T (transpose) of the pair
    weights (see _weight), or with ``both`` (y is x) the sum of the two roles' results,
    each summed on its own as the CPU does (and torch's autograd for x used twice);
    F = 2, or 1 for L2."""
    ncols = out.shape[2]
    nrows = out.shape[1]
    for f in range(cuda.grid(1), out.shape[0] * nrows * ncols, cuda.gridsize(1)):
        u = f // (nrows * ncols)
        rc = f - u * nrows * ncols
        r = rc // ncols
        c = rc - r * ncols
        acc = _one_role(g, dist, a, b, bmap, ptr, items, u, r, c, transpose, l2)
        if both:
            acc += _one_role(g, dist, a, b, bmap, ptr, items, u, r, c, True, l2)
        out[u, r, c] = acc if l2 else 2 * acc


def _maps(batch, stream, *which):
    """Device copies of the batch's maps named in ``which`` ("x" or "y")."""
    return tuple(to_device(batch.xmap if w == "x" else batch.ymap, stream) for w in which)


def _pairwise(out, x, y, batch, take_sqrt, stream):
    nbat, m, n = out.shape
    if nbat == 0 or m == 0 or n == 0:
        return
    xmap, ymap = _maps(batch, stream, "x", "x" if y is None else "y")
    y = x if y is None else y
    kernel = _SQDIST[np.dtype(out.dtype)]
    tiles = nbat * math.ceil(m / TILE) * math.ceil(n / TILE)
    kernel[min(tiles, MAX_BLOCKS), THREADS_2D, stream](out, x, y, xmap, ymap, take_sqrt)


def pairwise_sqdist(out, x, y, batch, stream=0):
    """Launch the tiled squared-distance kernel (y None means y = x)."""
    _pairwise(out, x, y, batch, False, stream)


def pairwise_l2(out, x, y, batch, stream=0):
    """Launch the tiled distance kernel with the square root."""
    _pairwise(out, x, y, batch, True, stream)


def knn(dist, idx, x, q, batch, k, stream=0):
    """Launch the per-query top-k kernel (k <= MAX_K) over batch x queries."""
    if k > MAX_K:
        raise NotImplementedError(
            f"knn: on CUDA k must be at most {MAX_K}; got {k}. Use the CPU path "
            f"(NumPy arrays) for larger k.")
    n = dist.shape[0] * dist.shape[1]
    if n == 0:
        return
    xmap, qmap = _maps(batch, stream, "x", "y")
    _topk_per_query[blocks_strided(n), THREADS_1D, stream](dist, idx, x, q, xmap, qmap, k)


def _launch_grad(out, g, dist, a, b, bmap, sets, transpose, both, l2, stream):
    n = out.shape[0] * out.shape[1] * out.shape[2]
    if n:
        ptr, items = (to_device(v, stream) for v in sets)
        _grad_rows[blocks_strided(n), THREADS_1D, stream](out, g, dist, a, b, bmap, ptr, items,
                                                          transpose, both, l2)


def _backward(gx, gy, g, dist, x, y, batch, l2, stream):
    symmetric = y is None
    (xmap,) = _maps(batch, stream, "x")
    if symmetric:
        _launch_grad(gx, g, dist, x, x, xmap, batch.sets("x"), False, True, l2, stream)
        return
    (ymap,) = _maps(batch, stream, "y")
    _launch_grad(gx, g, dist, x, y, ymap, batch.sets("x"), False, False, l2, stream)
    _launch_grad(gy, g, dist, y, x, xmap, batch.sets("y"), True, False, l2, stream)


def pairwise_sqdist_backward(gx, gy, g, x, y, batch, stream=0):
    """Write the gradients of sum(g * pairwise_sqdist(x, y)) into gx, gy (y None: gy None),
    summed over the batch elements that share an operand."""
    _backward(gx, gy, g, g, x, y, batch, False, stream)


def pairwise_l2_backward(gx, gy, g, dist, x, y, batch, stream=0):
    """Write the gradients of sum(g * pairwise_l2(x, y)) into gx, gy; ``dist`` is the
    forward's result, or None (computed here with direct differences)."""
    if dist is None:
        dist = cuda.device_array(tuple(g.shape), np.dtype(x.dtype), stream=stream)
        _pairwise(dist, x, y, batch, True, stream)
    _backward(gx, gy, g, dist, x, y, batch, True, stream)
