"""numba.cuda distance kernels: tiled direct-difference distances, per-query top-k,
and the backward pass.

On the GPU the arithmetic is cheap and memory is not, so these kernels use
direct differences ``sum_k (x_ik - y_jk)^2`` (no cancellation, exact zeros
for identical rows) rather than the GEMM expansion used on the CPU.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, float64, int64

from ._support import THREADS_1D, THREADS_2D, blocks_1d

TILE = THREADS_2D[0]       # shared-memory tile edge (threads per block side)
MAX_K = 128                # largest k of the per-query top-k kernel (local arrays)
MAX_BLOCKS = 1 << 16       # blocks per 1-D launch; grid-stride loops cover the rest


def _make_sqdist_kernel(nb_type):
    @cuda.jit
    def sqdist_tiled(out, x, y, take_sqrt):
        """One thread computes out[i, j] = sum_k (x[i, k] - y[j, k])**2 (or its root) for
        one (i, j) of each TILE x TILE output tile its block strides over (1-D grid:
        tile t is row block t // tiles_n, column block t % tiles_n); the block stages
        TILE-wide column strips of its x and y rows in shared memory."""
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        tiles_n = (out.shape[1] + TILE - 1) // TILE
        ntiles = ((out.shape[0] + TILE - 1) // TILE) * tiles_n
        xs = cuda.shared.array((TILE, TILE + 1), nb_type)
        ys = cuda.shared.array((TILE, TILE + 1), nb_type)
        d = x.shape[1]
        for t in range(cuda.blockIdx.x, ntiles, cuda.gridDim.x):   # same t for the block
            i = (t // tiles_n) * TILE + ty
            j = (t % tiles_n) * TILE + tx
            row_y = (t % tiles_n) * TILE + ty                 # the y row this thread stages
            acc = nb_type(0)
            for k0 in range(0, d, TILE):
                k = k0 + tx
                xs[ty, tx] = x[i, k] if i < x.shape[0] and k < d else 0
                ys[ty, tx] = y[row_y, k] if row_y < y.shape[0] and k < d else 0
                cuda.syncthreads()
                for kk in range(min(TILE, d - k0)):
                    v = xs[ty, kk] - ys[tx, kk]
                    acc += v * v
                cuda.syncthreads()
            if i < out.shape[0] and j < out.shape[1]:          # bounds guard (after syncs)
                out[i, j] = math.sqrt(acc) if take_sqrt else acc
    return sqdist_tiled


_SQDIST = {np.dtype(np.float32): _make_sqdist_kernel(float32),
           np.dtype(np.float64): _make_sqdist_kernel(float64)}


@cuda.jit(device=True, inline=True)
def _after(a, b):
    """a sorts after b: a > b, with NaN after every number."""
    return (a != a and b == b) or a > b


@cuda.jit
def _topk_per_query(dist, idx, x, q, k):
    """One thread scans every row of x for one query, keeping its k nearest
    (distances accumulated in float64, insertion sort, ties by smaller index)."""
    r = cuda.grid(1)
    if r >= q.shape[0]:
        return
    best_d = cuda.local.array(MAX_K, float64)
    best_i = cuda.local.array(MAX_K, int64)
    filled = 0
    d = x.shape[1]
    for j in range(x.shape[0]):
        s = 0.0
        for c in range(d):
            t = float64(q[r, c]) - float64(x[j, c])
            s += t * t
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
        dist[r, c] = best_d[c]
        idx[r, c] = best_i[c]


@cuda.jit(device=True, inline=True)
def _weight(g, dist, i, j, l2):
    """The pair (i, j)'s weight: g, or g / dist for the L2 backward (0 at dist == 0)."""
    w = g[i, j]
    if l2:
        dv = dist[i, j]
        w = w / dv if dv > 0 else 0.0
    return w


@cuda.jit
def _grad_rows(out, g, dist, a, b, transpose, both, l2):
    """One thread computes out[r, c] = F sum_s W(r, s) (a[r, c] - b[s, c]) for each
    element it strides over (1-D grid-stride), with W = w, w.T (transpose) or
    w + w.T (both) of the pair weights (see _weight); F = 2, or 1 for L2."""
    ncols = out.shape[1]
    for e in range(cuda.grid(1), out.shape[0] * ncols, cuda.gridsize(1)):
        r = e // ncols
        c = e - r * ncols
        acc = 0.0
        ar = a[r, c]
        for s in range(b.shape[0]):
            if both:
                w = _weight(g, dist, r, s, l2) + _weight(g, dist, s, r, l2)
            elif transpose:
                w = _weight(g, dist, s, r, l2)
            else:
                w = _weight(g, dist, r, s, l2)
            acc += w * (ar - b[s, c])
        out[r, c] = acc if l2 else 2 * acc


def _pairwise(out, x, y, take_sqrt, stream):
    y = x if y is None else y
    m, n = out.shape
    if m == 0 or n == 0:
        return
    kernel = _SQDIST[np.dtype(out.dtype)]
    tiles = math.ceil(m / TILE) * math.ceil(n / TILE)
    kernel[min(tiles, MAX_BLOCKS), THREADS_2D, stream](out, x, y, take_sqrt)


def pairwise_sqdist(out, x, y, stream=0):
    """Launch the tiled squared-distance kernel (y None means y = x)."""
    _pairwise(out, x, y, False, stream)


def pairwise_l2(out, x, y, stream=0):
    """Launch the tiled distance kernel with the square root."""
    _pairwise(out, x, y, True, stream)


def knn(dist, idx, x, q, k, stream=0):
    """Launch the per-query top-k kernel (k <= MAX_K)."""
    if k > MAX_K:
        raise NotImplementedError(
            f"knn: on CUDA k must be at most {MAX_K}; got {k}. Use the CPU path "
            f"(NumPy arrays) for larger k.")
    if q.shape[0] == 0:
        return
    _topk_per_query[blocks_1d(q.shape[0]), THREADS_1D, stream](dist, idx, x, q, k)


def _launch_grad(out, g, dist, a, b, transpose, both, l2, stream):
    if out.size:
        blocks = min(blocks_1d(out.size), MAX_BLOCKS)
        _grad_rows[blocks, THREADS_1D, stream](out, g, dist, a, b, transpose, both, l2)


def _backward(gx, gy, g, dist, x, y, l2, stream):
    symmetric = y is None
    yy = x if symmetric else y
    _launch_grad(gx, g, dist, x, yy, False, symmetric, l2, stream)
    if not symmetric:
        _launch_grad(gy, g, dist, yy, x, True, False, l2, stream)


def pairwise_sqdist_backward(gx, gy, g, x, y, stream=0):
    """Write the gradients of sum(g * pairwise_sqdist(x, y)) into gx, gy (y None: gy None)."""
    _backward(gx, gy, g, g, x, y, False, stream)


def pairwise_l2_backward(gx, gy, g, dist, x, y, stream=0):
    """Write the gradients of sum(g * pairwise_l2(x, y)) into gx, gy; ``dist`` is the
    forward's result, or None (computed here with direct differences)."""
    if dist is None:
        dist = cuda.device_array(g.shape, np.dtype(x.dtype), stream=stream)
        _pairwise(dist, x, y, True, stream)
    _backward(gx, gy, g, dist, x, y, True, stream)
