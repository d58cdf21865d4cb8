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

from ._support import THREADS_1D, THREADS_2D, as_device, blocks_1d, blocks_2d, empty_like_caller

TILE = THREADS_2D[0]       # shared-memory tile edge (threads per block side)
MAX_K = 128                # largest k of the per-query top-k kernel (local arrays)


def _make_sqdist_kernel(nb_type):
    @cuda.jit
    def sqdist_tiled(out, x, y, take_sqrt):
        """One thread computes out[i, j] = sum_k (x[i, k] - y[j, k])**2 (or its root);
        the block stages TILE-wide column strips of its x and y rows in shared memory."""
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        i = cuda.blockIdx.y * TILE + ty
        j = cuda.blockIdx.x * TILE + tx
        inside = i < out.shape[0] and j < out.shape[1]   # bounds guard (all threads sync)
        xs = cuda.shared.array((TILE, TILE + 1), nb_type)
        ys = cuda.shared.array((TILE, TILE + 1), nb_type)
        row_y = cuda.blockIdx.x * TILE + ty               # the y row this thread stages
        d = x.shape[1]
        acc = nb_type(0)
        for k0 in range(0, d, TILE):
            k = k0 + tx
            xs[ty, tx] = x[i, k] if i < x.shape[0] and k < d else 0
            ys[ty, tx] = y[row_y, k] if row_y < y.shape[0] and k < d else 0
            cuda.syncthreads()
            for kk in range(min(TILE, d - k0)):
                t = xs[ty, kk] - ys[tx, kk]
                acc += t * t
            cuda.syncthreads()
        if inside:
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


@cuda.jit
def _grad_rows(out, g, a, b, transpose, both):
    """One thread computes out[r, c] = 2 sum_s G(r, s) (a[r, c] - b[s, c]) with
    G = g, g.T (transpose) or g + g.T (both)."""
    r, c = cuda.grid(2)
    if r >= out.shape[0] or c >= out.shape[1]:
        return
    acc = 0.0
    ar = a[r, c]
    for s in range(b.shape[0]):
        if both:
            w = g[r, s] + g[s, r]
        elif transpose:
            w = g[s, r]
        else:
            w = g[r, s]
        acc += w * (ar - b[s, c])
    out[r, c] = 2 * acc


@cuda.jit
def _l2_scale(out, g, dist):
    """One thread computes out = g / (2 dist) for one element (0 where dist == 0)."""
    i, j = cuda.grid(2)
    if i >= out.shape[0] or j >= out.shape[1]:
        return
    dv = dist[i, j]
    out[i, j] = g[i, j] / (2 * dv) if dv > 0 else 0


def _pairwise(out, x, y, take_sqrt, stream):
    y = x if y is None else y
    m, n = out.shape
    if m == 0 or n == 0:
        return
    kernel = _SQDIST[np.dtype(out.dtype)]
    kernel[blocks_2d(n, m, THREADS_2D), THREADS_2D, stream](out, x, y, take_sqrt)


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


def pairwise_sqdist_backward(g, x, y, template=None, stream=0):
    """Launch the gradient kernels; returns caller-type (grad_x, grad_y or None)."""
    symmetric = y is None
    yy = x if symmetric else y
    dtype = np.dtype(x.dtype)
    gx_caller = empty_like_caller(template, tuple(x.shape), dtype)
    gx = as_device(gx_caller)
    if gx.size:
        _grad_rows[blocks_2d(*gx.shape), THREADS_2D, stream](gx, g, x, yy, False, symmetric)
    if symmetric:
        return gx_caller, None
    gy_caller = empty_like_caller(template, tuple(yy.shape), dtype)
    gy = as_device(gy_caller)
    if gy.size:
        _grad_rows[blocks_2d(*gy.shape), THREADS_2D, stream](gy, g, yy, x, True, False)
    return gx_caller, gy_caller


def l2_grad_scale(g, dist, template=None, stream=0):
    """``g / (2 dist)`` with 0 at zero distance, as a new caller-type array."""
    out_caller = empty_like_caller(template, tuple(g.shape), np.dtype(g.dtype))
    out = as_device(out_caller)
    if out.size:
        _l2_scale[blocks_2d(*out.shape), THREADS_2D, stream](out, g, dist)
    return out_caller
