"""Pairwise Euclidean distances and k-nearest neighbours, at GEMM speed and exact.

The CPU path computes ``|x|^2 + |y|^2 - 2 x.y`` tile by tile with
fastinterp's own packed GEMM (kernels/cpu/_gemm.h) and finishes each
micro-tile while it is in L1 (one fused epilogue). No shared BLAS is called
and no process-wide setting is touched; the tiles and every summation order
are fixed, so results are bit-identical for any thread count and from any
calling thread. The usual precision problem of the expansion is fixed two ways:

* the rows are centred by one common vector, the coordinate-wise median of a
  sample (distances do not change, and the norms shrink to the spread of the
  data, so little cancels; a few huge rows do not move the median), and
* any entry whose result is small relative to ``|x_c|^2 + |y_c|^2`` (severe
  cancellation, identical rows), and every entry of a row whose centred norm
  would overflow the expansion (huge, infinite or NaN rows), is recomputed by
  direct differences, accumulated in float64.

Identical rows give exactly 0, every result is >= 0, float32 results stay
within a few 1e-6 relative of the float64 direct computation, and a result
is inf only where the true value overflows the dtype.

With at most DIRECT_MAX_D columns (point clouds: 2-D, 3-D, homogeneous 4-D)
the forward skips the GEMM: every entry is summed from direct differences in
float64, column by column (vectorised along each tile's row), which is both
faster there and exact up to one rounding.

Leading (batch) dimensions broadcast as in torch.cdist; a batch is one kernel
call whose parallel loop runs over batch elements x tiles, and each element
gets its own centre and the tiles of an unbatched call, so its bits are those
of a call on that element alone.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal, SupportsIndex, overload

import numpy as np

from . import _memory, _plans, _registry as registry
from ._config import threads_for
from ._dispatch import begin, public_call
from ._typing import Array, Flag, IntFlag, NumPyLike
from ._validate import (as_c_contiguous, as_index, broadcast_shapes, check_array, check_bool,
                        check_flag, check_out, check_shape, same_dtype, shape_str)

__all__ = ["pairwise_sqdist", "pairwise_l2", "pairwise_sqdist_backward",
           "pairwise_l2_backward", "knn"]

# An entry is recomputed directly when v <= TAU * (|x_c|^2 + |y_c|^2): the
# GEMM form's relative error there is at most ~2u/TAU times its typical size.
TAU = {np.dtype(np.float32): 1.0 / 8, np.dtype(np.float64): 1.0 / 256}
# L2 backward: a pair with |x_i - y_j| <= TAU_L2_BWD * (|x_c,i| + |y_c,j|) (always <= 1
# times it) is computed from direct differences; elsewhere the GEMM form's error on
# the pair's term (x_i - y_j) / |x_i - y_j| is at most ~u / TAU_L2_BWD relative.
TAU_L2_BWD = {np.dtype(np.float32): 1.0 / 4, np.dtype(np.float64): 1.0 / 32}
TILE_M, TILE_N = 1024, 2048   # pairwise tile (rows x columns) per GEMM call
TILE_SYM = 512               # square tile when y is x
MIN_TILES = 16               # split smaller outputs into at least this many tiles
TAIL_SPLIT = 4               # the last tiles, cut into quarters for load balance
SPLIT_MIN = 64               # ... unless a quarter would be thinner than this
KNN_QBLOCK = 1024     # queries per kNN block (amortises packing the rows of x)
KNN_TBLOCK = 256      # rows of x per GEMM in kNN
KNN_EXTRA = 8         # candidates kept beyond k, to prove the exact top-k
KNN_HEAP_BUDGET = 1 << 22   # heap entries per thread (query block x candidates)
KNN_SPECIAL_MAX = 256  # special rows (huge, inf, NaN) of x kept as candidates; beyond: exact scans
KNN_EXACT_MAX_N = 256  # up to this many rows of x, every query is scanned exactly (small clouds)
CENTRE_SAMPLE = 256   # rows per operand whose median is the centring vector,
CENTRE_VALUES = 1 << 18   # fewer for wide rows: about this many values per operand
DIRECT_MAX_D = 4      # pairwise forward: direct differences (no GEMM) up to this many columns
_INT_MAX = 2**31 - 1  # row and column limit (kernel tile and kNN arithmetic)
GEMM_WORK_PER_THREAD = 1 << 23   # multiply-adds below which one thread is used


def _cpu():
    from ._cpu import distance as kernels
    return kernels


def deterministic_matmul(a, b):
    """``a @ b`` for float32/float64 NumPy matrices, bit-identical everywhere.

    Runs fastinterp's packed GEMM on fixed output tiles instead of the
    process's BLAS, so the bits do not depend on ``set_num_threads``, on the
    BLAS thread count or on the calling thread, and no process-wide setting is
    touched. Used by kernels whose fronts need a matrix product (the models).

    Parameters
    ----------
    a : ndarray (M, K)
    b : ndarray (K, N) of a's dtype; any strides (``x.T`` is not copied)

    Returns
    -------
    ndarray (M, N), C-contiguous.

    Examples
    --------
    >>> import numpy as np
    >>> deterministic_matmul(np.eye(2), np.array([[1.0, 2.0], [3.0, 4.0]]))
    array([[1., 2.],
           [3., 4.]])
    """
    out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    _cpu().matmul(out, a, b, threads_for(out.size * max(1, a.shape[1]), GEMM_WORK_PER_THREAD))
    return out


# ----------------------------------------------------------------------------
# CPU kernels (registered below)
# ----------------------------------------------------------------------------

def centre_step(rows, d):
    """The stride of the rows of an operand (rows, d) sampled for the centre: about
    CENTRE_SAMPLE rows, fewer (at least 2) when they hold more than CENTRE_VALUES
    values (a median over 256 rows of a million columns would cost seconds)."""
    most = min(CENTRE_SAMPLE, max(2, CENTRE_VALUES // max(d, 1)))
    return max(1, rows // most)


def _sample_centre(s):
    """The coordinate-wise median of the sample ``s`` (D, rows), float64, ignoring
    non-finite values (NaN where a coordinate has none)."""
    return _median_last(s) if np.isfinite(s).all() else _finite_median_last(s)


def _finite_median_last(s):
    """The median along the last axis of ``s``'s finite values, NaN where there are none;
    the middle value or the two middle values' sum halved, as :func:`_median_last`."""
    v = np.sort(np.where(np.isfinite(s), s, np.nan), axis=-1)     # NaN last
    n = np.isfinite(v).sum(axis=-1)
    lo = np.take_along_axis(v, np.maximum((n - 1) // 2, 0)[..., None], -1)[..., 0]
    hi = np.take_along_axis(v, (n // 2)[..., None], -1)[..., 0]    # (rows >= 1)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(n % 2 == 1, lo, np.where(n > 0, (lo + hi) / 2, np.nan))


def _median_last(s):
    """``np.median(s, axis=-1)`` of finite ``s``, bit for bit (the middle value, or
    the sum of the two middle values halved), without np.median's overhead: this
    runs on every distance call, small ones included."""
    n = s.shape[-1]
    mid = n // 2
    if n % 2:
        return np.partition(s, mid, axis=-1)[..., mid]
    part = np.partition(s, (mid - 1, mid), axis=-1)
    with np.errstate(over="ignore"):     # two values near the float64 limit: the caller
        return (part[..., mid - 1] + part[..., mid]) / 2    # replaces an inf centre


def _centres(dtype, *operands):
    """The common centre of each batch element's rows: ``operands`` are pairs
    ``(a (S, rows, D), amap (B,))``, element b taking the rows of ``a[amap[b]]`` of
    each. Returns (B, D): the coordinate-wise median of evenly spaced rows of each
    operand (every :func:`centre_step`-th), in float64, rounded to ``dtype``.

    The median ignores non-finite values and is not moved by a few rows of huge
    magnitude (a mean would be: one row at 1e200 would shift every centred row
    far from the origin and overflow every norm). Each element's centre is the
    one a call on that element alone gets (the same sample, the same median)."""
    nbat, d = len(operands[0][1]), operands[0][0].shape[2]
    samples = [a[:, ::centre_step(a.shape[1], d)][amap] for a, amap in operands if a.shape[1]]
    if not samples or d == 0 or nbat == 0:
        return np.zeros((nbat, d), dtype)
    s = np.concatenate(samples, axis=1).astype(np.float64).transpose(0, 2, 1)  # (B, D, rows)
    if nbat == 1:     # the common unbatched call: no masks
        centre = _sample_centre(s[0])[None]
    else:
        finite = np.isfinite(s).all(axis=(1, 2))
        centre = np.empty((nbat, d))
        if finite.any():
            centre[finite] = _median_last(s[finite])
        if not finite.all():
            centre[~finite] = _finite_median_last(s[~finite])
    return np.where(np.isfinite(centre), centre, 0).astype(dtype)


def _norm_limit(dtype):
    """Centred rows with a larger squared norm are special (direct differences):
    below it, the prefill |x|^2 + |y|^2 and the GEMM's -2 x.y cannot overflow."""
    return float(np.finfo(dtype).max) / 8


def _centred(a, amap, centre, nthreads):
    """``(a[amap[b]] - centre[b], |a[amap[b]] - centre[b]|^2 per row)`` for every
    batch element b: (B, rows, D) and (B, rows) (+inf for special rows)."""
    nbat, rows, d = len(amap), a.shape[1], a.shape[2]
    ac = _memory.empty((nbat, rows, d), a.dtype)
    norms = _memory.empty((nbat, rows), a.dtype)
    _cpu().centre_rows(ac, norms, a, amap, centre, _norm_limit(a.dtype), nthreads)
    return ac, norms


@functools.lru_cache(maxsize=256)
def _tile_list(m, n, symmetric, head=0):
    """The tiles ``(i0, j0, rows, cols)`` of an (m, n) output, in work order (a
    read-only array, cached per shape).

    Large tiles first; the last TAIL_SPLIT tiles are cut into quarters so that
    the threads finish together. With ``symmetric`` only the upper triangle is
    listed (diagonal tiles square; the mirror fills the rest). Otherwise the
    first ``head`` columns (see _aligned_head) are a strip of their own, so
    that the other tiles start on a cache line.
    """
    tm, tn = _tile_shape(m, n, symmetric)
    if symmetric:
        rects = [(i, j, min(tm, m - i), min(tm, n - j))
                 for i in range(0, m, tm) for j in range(i, n, tm)]
    else:
        starts = ([0] if head else []) + list(range(head, n, tn))
        rects = [(i, j, min(tm, m - i), (head if j == 0 and head else min(tn, n - j)))
                 for i in range(0, m, tm) for j in starts]
    split = len(rects) - TAIL_SPLIT if len(rects) > TAIL_SPLIT else len(rects)
    tiles = rects[:split]
    for i, j, a, b in rects[split:]:
        if min(a, b) < 2 * SPLIT_MIN:
            tiles.append((i, j, a, b))
            continue
        a1, b1 = a // 2, b // 2 - (b // 2) % 32     # columns: keep whole micro-tiles
        if symmetric and i == j:      # upper-left, upper-right, lower-right
            tiles += [(i, j, a1, a1), (i, j + a1, a1, b - a1), (i + a1, j + a1, a - a1, b - a1)]
        else:
            tiles += [(i, j, a1, b1), (i, j + b1, a1, b - b1),
                      (i + a1, j, a - a1, b1), (i + a1, j + b1, a - a1, b - b1)]
    table = np.array(tiles, dtype=np.intp).reshape(-1, 4)
    table.flags.writeable = False
    return table


def _tile_shape(m, n, symmetric):
    """Tile rows x columns: large tiles amortise GEMM packing; small outputs are
    split into at least MIN_TILES tiles (when possible) so that threads share
    the work. The shape never depends on the thread count."""
    if symmetric:
        tm = tn = TILE_SYM
    else:
        tm, tn = TILE_M, TILE_N
    while tm > 64 and -(-m // tm) * -(-n // tn) < MIN_TILES:
        if tn > tm and not symmetric:
            tn //= 2
        else:
            tm //= 2
            tn = tm if symmetric else tn
    return tm, tn



def _aligned_head(out):
    """How many columns of ``out`` (B, M, N) precede the first one that starts a cache
    line in every row of every batch element (0 when they cannot all agree, or N is
    too narrow to matter). The GEMM's micro-tiles store whole rows of 64 bytes: from
    a caller's out= array as NumPy allocates it (16 bytes into a line), every store
    straddled two lines, ~25% of the time of a (4096, 8192) float32 distance matrix."""
    nbat, m, n = out.shape
    size = out.itemsize
    lanes = 64 // size
    if n < 4 * lanes or (n * size) % 64 or (nbat > 1 and (m * n * size) % 64):
        return 0
    address = out.__array_interface__["data"][0]
    return 0 if address % size else (-(address // size)) % lanes


def _pairwise_cpu(out, x, y, batch, take_sqrt):
    """Registry kernel: ``out[b, i, j] = |x[xmap[b], i] - y[ymap[b], j]|^2`` (or its root)
    for out (B, M, N), x (S, M, D), y (T, N, D); y None means y = x (symmetric)."""
    symmetric = y is None
    y = x if symmetric else y
    ymap = batch.xmap if symmetric else batch.ymap
    nbat, m, n = out.shape
    d = x.shape[2]
    direct = d <= DIRECT_MAX_D    # point clouds: direct differences beat the GEMM form
    if direct:
        centre = np.zeros((nbat, d), x.dtype)
    elif symmetric:
        centre = _centres(x.dtype, (x, batch.xmap))
    else:
        centre = _centres(x.dtype, (x, batch.xmap), (y, ymap))
    xc, nx = _memory.empty((nbat, m, d), x.dtype), _memory.empty((nbat, m), x.dtype)
    yc, ny = (xc, nx) if symmetric else (_memory.empty((nbat, n, d), x.dtype),
                                         _memory.empty((nbat, n), x.dtype))
    head = 0 if symmetric or direct else _aligned_head(out)
    tiles = _tile_list(m, n, symmetric, head) if m and n else np.zeros((0, 4), np.intp)
    nthreads = max(1, min(threads_for(nbat * m * n * d, GEMM_WORK_PER_THREAD),
                          nbat * len(tiles)))
    _cpu().sqdist_fwd(out, xc, yc, nx, ny, x, y, batch.xmap, ymap, centre, tiles,
                      TAU[x.dtype], _norm_limit(x.dtype), take_sqrt, symmetric, direct,
                      nthreads)


def _sqdist_cpu(out, x, y, batch):
    _pairwise_cpu(out, x, y, batch, False)


def _l2_cpu(out, x, y, batch):
    _pairwise_cpu(out, x, y, batch, True)


def _knn_cpu(dist, idx, x, queries, batch, k, bound=None):
    """Registry kernel: the k nearest rows of ``x[xmap[b]]`` for each row of
    ``queries[ymap[b]]`` (see knn), into dist/idx (B, Q, k).
    Returns the number of queries that took the exact rescan.

    ``bound`` (B, Q) float64, optional: only the rows within that squared
    distance of each query are wanted (see knn_fwd): a query with fewer gets
    them, then entries of distance +inf and index -1."""
    nbat, nq = dist.shape[0], dist.shape[1]
    n, d = x.shape[1], x.shape[2]
    nthreads = threads_for(nbat * nq * n * d, GEMM_WORK_PER_THREAD)
    if n <= KNN_EXACT_MAX_N:     # small clouds: every query scans x directly (no GEMM, no centre)
        xc, qc = np.empty((nbat, n, d), x.dtype), np.empty((nbat, nq, d), x.dtype)
        nx, nqn = np.zeros((nbat, n), x.dtype), np.zeros((nbat, nq), x.dtype)
        all_exact = np.ones(nbat, bool)
    else:
        centre = _centres(x.dtype, (x, batch.xmap), (queries, batch.ymap))
        xc, nx = _centred(x, batch.xmap, centre, nthreads)
        qc, nqn = _centred(queries, batch.ymap, centre, nthreads)
        all_exact = np.zeros(nbat, bool)
    special = np.isinf(nx)                                 # (B, N)
    count = special.sum(axis=1)
    all_exact |= count > KNN_SPECIAL_MAX      # then scanning directly is cheaper
    special &= ~all_exact[:, None]
    special_ptr = np.zeros(nbat + 1, np.int64)
    np.cumsum(np.where(all_exact, 0, count), out=special_ptr[1:])
    kc = min(n, k + KNN_EXTRA)
    qblock = max(1, min(KNN_QBLOCK, nq, KNN_HEAP_BUDGET // kc))
    nthreads = min(nthreads, -(-n // KNN_TBLOCK))
    fallbacks = np.zeros((nbat, nq), np.intc)
    _cpu().knn_fwd(dist, idx, x, queries, batch.xmap, batch.ymap, xc, qc, nx, nqn,
                   special_ptr, np.nonzero(special)[1].astype(np.int64),
                   all_exact.astype(np.uint8), k, kc, qblock, KNN_TBLOCK,
                   float(np.finfo(x.dtype).eps) / 2, fallbacks, nthreads, bound)
    return int(fallbacks.sum())


def _backward_cpu(gx, gy, s, x, y, batch, l2=None):
    """Shared CPU backward: ``gx[u, i] = F sum_b sum_j S_b,ij (x_u,i - y_j)`` over the batch
    elements b that use x[u], and ``gy`` likewise (y None: y = x, both roles summed into
    gx; else gx or gy None: that gradient is not computed). ``l2 = (g, dist)`` selects
    the L2 weights S = g / dist, with near pairs taken from direct differences."""
    symmetric = y is None
    yy = x if symmetric else y
    ymap = batch.xmap if symmetric else batch.ymap
    nbat, m, n, d = len(batch.xmap), x.shape[1], yy.shape[1], x.shape[2]
    nthreads = threads_for(nbat * m * n * max(d, 1), GEMM_WORK_PER_THREAD)
    centre = (_centres(x.dtype, (x, batch.xmap)) if symmetric
              else _centres(x.dtype, (x, batch.xmap), (yy, ymap)))
    xc, nx = _centred(x, batch.xmap, centre, nthreads)
    yc, ny = (xc, nx) if symmetric else _centred(yy, ymap, centre, nthreads)
    kernels = _cpu()
    if l2 is None:
        g, near = s, np.zeros((0, 0, 0), np.uint8)
        rows = cols = np.zeros((0, 0), np.int64)
        factor = 2.0
    else:
        g, dist = l2
        rx = np.sqrt(nx.astype(np.float64))
        ry = rx if symmetric else np.sqrt(ny.astype(np.float64))
        s, near = _memory.empty(g.shape, g.dtype), _memory.empty(g.shape, np.uint8)
        kernels.l2_scale(s, near, g, dist, rx, ry, TAU_L2_BWD[x.dtype],
                         threads_for(s.size, 1 << 20))
        rows = near.sum(axis=2, dtype=np.int64)
        cols = (near.sum(axis=1, dtype=np.int64) if rows.any()
                else np.zeros((nbat, n), np.int64))
        factor = 1.0
    if gx is not None:
        kernels.grad_rows(gx, s, False, x, yy, ymap, xc, yc, g, near, rows,
                          *batch.sets("x"), factor, nthreads)
    other = _memory.empty(x.shape, x.dtype) if symmetric else gy
    if other is not None:
        kernels.grad_rows(other, s, True, yy, x, batch.xmap, yc, xc, g, near, cols,
                          *batch.sets("x" if symmetric else "y"), factor, nthreads)
    if symmetric:
        with np.errstate(invalid="ignore", over="ignore"):    # non-finite rows
            np.add(gx, other, out=gx)


def _sqdist_bwd_cpu(gx, gy, g, x, y, batch):
    """Registry kernel: gradients of sum(g * pairwise_sqdist(x, y)) into gx, gy
    (y None: y = x and gy is None). Two GEMMs per element on centred rows:
    ``gx_i = 2 (rowsum(g)_i xc_i - (g @ yc)_i)``."""
    _backward_cpu(gx, gy, g, x, y, batch)
    _redo_overflowed(gx, gy, g, x, y, batch, l2=False)


def _l2_bwd_cpu(gx, gy, g, dist, x, y, batch):
    """Registry kernel: gradients of sum(g * pairwise_l2(x, y)) into gx, gy; dist is
    the forward's result or None (then computed here)."""
    _l2_backward(gx, gy, g, dist, x, y, batch)
    _redo_overflowed(gx, gy, g, x, y, batch, l2=True)


def _l2_backward(gx, gy, g, dist, x, y, batch):
    if dist is None:
        dist = _memory.empty(g.shape, x.dtype)
        _pairwise_cpu(dist, x, y, batch, True)
    _backward_cpu(gx, gy, None, x, y, batch, (g, dist))


def _exponent(a, axis=None):
    """The binary exponent e of the largest finite |a| (2^(e-1) <= it < 2^e; 0 for none)."""
    finite = np.where(np.isfinite(a), np.abs(a), 0).max(axis=axis, initial=0)
    return np.frexp(np.asarray(finite, np.float64))[1]


def _redo_overflowed(gx, gy, g, x, y, batch, l2):
    """Compute again the gradient rows that came out non-finite although every input
    they are made of is finite: rows of both signs near the dtype's largest value
    overflow their differences (from the centre, from each other) or a partial sum,
    while the exact gradient need not. Each batch element touching such a row is redone
    on its own (:func:`_redone_element`) and the rows are summed from those, in batch
    order, in long double: an element that did not overflow keeps its bits, and a
    non-finite input elsewhere leaves the rows it does not enter to be redone."""
    if all(np.isfinite(a).all() for a in (gx, gy) if a is not None):
        return
    rows_x, rows_y = _overflowed_rows(gx, gy, g, x, y, batch)
    if not rows_x.any() and not (rows_y is not None and rows_y.any()):
        return
    # long double (a 15-bit exponent on x86-64): elements' terms that overflow float64
    # on their own still sum to what the dtype holds
    acc_x = np.zeros(x.shape, np.longdouble)
    acc_y = None if gy is None else np.zeros(gy.shape, np.longdouble)
    for e, (u, v) in enumerate(zip(batch.xmap, batch.ymap)):
        if not rows_x[u].any() and not (rows_y is not None and rows_y[v].any()):
            continue
        ex, ey = _redone_element(g[e], x[u], None if y is None else y[v], l2)
        acc_x[u] += ex
        if acc_y is not None:
            acc_y[v] += ey
    with np.errstate(over="ignore"):        # beyond the dtype: inf, as it holds them
        if gx is not None:
            gx[rows_x] = acc_x[rows_x]
        if gy is not None:
            gy[rows_y] = acc_y[rows_y]      # type: ignore[index]  # (acc_y is set with gy)


def _overflowed_rows(gx, gy, g, x, y, batch):
    """(U, M) and (V, N) masks of the gradient rows to redo (None for gy when y is x or
    gy is not computed; none of x's when gx is not): a non-finite row all of whose
    terms, in every batch element summed into it, come from finite values (its own row,
    its weights, every row of the other operand)."""
    fin_g = np.isfinite(g)
    fin_x = np.isfinite(x).all(axis=2)
    fin_y = fin_x if y is None else np.isfinite(y).all(axis=2)
    g_rows, g_cols = fin_g.all(axis=2), fin_g.all(axis=1)
    ok_x = np.ones(x.shape[:2], bool)
    ok_y = None if gy is None else np.ones(gy.shape[:2], bool)
    xs, ys = batch.xmap, batch.ymap          # per element e: x's element xs[e], y's ys[e]
    whole_x, whole_y = fin_x.all(axis=1), fin_y.all(axis=1)
    if y is None:            # both roles of x: its weights as rows and as columns
        np.logical_and.at(ok_x, xs, fin_x[xs] & g_rows & g_cols & whole_x[xs][:, None])
    else:
        np.logical_and.at(ok_x, xs, fin_x[xs] & g_rows & whole_y[ys][:, None])
        if ok_y is not None:
            np.logical_and.at(ok_y, ys, fin_y[ys] & g_cols & whole_x[xs][:, None])
    rows_x = ok_x & (False if gx is None else ~np.isfinite(gx).all(axis=2))
    return rows_x, None if gy is None else ok_y & ~np.isfinite(gy).all(axis=2)


def _redone_element(g, x, y, l2):
    """The gradients (gx, gy) of one batch element (g (M, N), x (M, D), y (N, D) or
    None) as long doubles, computed in float64 with g, and the columns of x and y,
    scaled by powers of two that no difference, product or partial sum of its terms can
    overflow (one common scale for L2, whose gradient it does not change), then scaled
    back exactly. Non-finite values are left as they are."""
    yy = x if y is None else y
    room = 1020 - (max(x.shape[0], yy.shape[0], 1).bit_length() + 3)   # for |g| |x - y| sums
    eg = _exponent(g)
    ecol = np.maximum(_exponent(x, axis=0), _exponent(yy, axis=0))
    if l2:   # terms g (x - y) / |x - y|: only g's scale matters
        g_shift = max(0, eg - room)
        col_shift = np.full_like(ecol, max(0, ecol.max(initial=0) - 1020))
    else:
        g_shift = max(0, eg - room // 2)
        col_shift = np.maximum(0, np.maximum(ecol - 1020, ecol + (eg - g_shift) - room))
    gw = np.ldexp(g.astype(np.float64), -g_shift)[None]
    xw = np.ldexp(x.astype(np.float64), -col_shift)[None]
    yw = None if y is None else np.ldexp(y.astype(np.float64), -col_shift)[None]
    gx = np.empty(xw.shape)
    gy = None if y is None else np.empty(yw.shape)      # type: ignore[union-attr]  # (y: yw set)
    single = Batch((), _SINGLE, _SINGLE, 1, 1)
    if l2:
        _l2_backward(gx, gy, gw, None, xw, yw, single)
    else:
        _backward_cpu(gx, gy, gw, xw, yw, single)
    back = g_shift + (0 if l2 else col_shift)
    wide = [None if a is None else np.ldexp(a[0].astype(np.longdouble), back) for a in (gx, gy)]
    return wide[0], wide[1]


for _name, _kernel in (("pairwise_sqdist", _sqdist_cpu), ("pairwise_l2", _l2_cpu),
                       ("knn", _knn_cpu), ("pairwise_sqdist_backward", _sqdist_bwd_cpu),
                       ("pairwise_l2_backward", _l2_bwd_cpu)):
    registry.register_builtin(_name, _kernel, f"fastinterp._cuda.distance:{_name}")


# ----------------------------------------------------------------------------
# Validation shared by the public functions
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Batch:
    """How the leading (batch) dimensions of two operands broadcast, as in torch.cdist.

    ``x`` has leading shape Lx and ``y`` Ly; the result has ``shape`` =
    broadcast(Lx, Ly). Flattened, batch element b of the result pairs x's
    element ``xmap[b]`` with y's element ``ymap[b]`` (int64 indices into the
    flattened leading dimensions). ``nx``/``ny``: how many elements x and y hold.
    """

    shape: tuple
    xmap: np.ndarray
    ymap: np.ndarray
    nx: int
    ny: int

    def sets(self, which):
        """``(ptr, items)``: the result elements using x's (or y's) element u are
        ``items[ptr[u]:ptr[u+1]]``, ascending (the backward sums over them)."""
        amap, count = (self.xmap, self.nx) if which == "x" else (self.ymap, self.ny)
        if count == 1 and len(amap) == 1:
            return _SINGLE_SETS
        items = np.argsort(amap, kind="stable").astype(np.int64)
        ptr = np.zeros(count + 1, np.int64)
        np.cumsum(np.bincount(amap, minlength=count), out=ptr[1:])
        return ptr, items


def _flat_map(lead, shape):
    """For each element of the broadcast shape (flattened), the flat index of the
    operand's element with leading shape ``lead`` that it uses."""
    ids = np.arange(math.prod(lead), dtype=np.int64).reshape(lead)
    return np.ascontiguousarray(np.broadcast_to(ids, shape)).reshape(-1)


_SINGLE = np.zeros(1, np.int64)
_SINGLE.flags.writeable = False
_SINGLE_SETS = (np.array([0, 1], np.int64), _SINGLE)
_SINGLE_SETS[0].flags.writeable = False


def _batch(op, names, x, y):
    """The :class:`Batch` of operands x (..., M, D) and y (..., N, D); y None: x with itself."""
    lx = tuple(x.shape)[:-2]
    ly = lx if y is None else tuple(y.shape)[:-2]
    if not lx and not ly:
        return Batch((), _SINGLE, _SINGLE, 1, 1)
    try:
        shape = broadcast_shapes((lx, ly))
    except ValueError:
        raise ValueError(
            f"{op}: the leading (batch) dimensions of {names[0]} and {names[1]} must broadcast "
            f"together (as in torch.cdist); got {names[0]} {shape_str(x.shape)} and "
            f"{names[1]} {shape_str(y.shape)}.") from None
    return Batch(shape, _flat_map(lx, shape), _flat_map(ly, shape),
                 math.prod(lx), math.prod(ly))


def _rows(a):
    """The number of rows (the second-to-last dimension) of a validated operand."""
    return tuple(a.shape)[-2]


def _check_rows(op, name, a, layout):
    check_array(op, name, a)
    if len(a.shape) < 2:
        raise ValueError(f"{op}: {name} must have shape {layout}; got {shape_str(a.shape)}.")


def _stacked(p, a):
    """``a`` (..., R, D) as a C-contiguous (S, R, D) kernel array (S = product of the
    leading dimensions; a non-contiguous input is copied once)."""
    if a is None:
        return None
    a = as_c_contiguous(a) if p.backend == "cpu" else p.contiguous(a)
    shape = tuple(a.shape)
    shape = (math.prod(shape[:-2]),) + shape[-2:]
    return a if tuple(a.shape) == shape else a.reshape(shape)


def _operands(op, p, xname="x", yname="y", xlayout="(..., M, D)", ylayout="(..., N, D)"):
    """The validated ``(x, y, dtype, batch)`` of a call, x and y as given (y None when
    not given); see :func:`_stacked` for the kernels' view."""
    x = p.arrays[xname]
    y = p.arrays.get(yname)
    _check_rows(op, xname, x, xlayout)
    if y is not None:
        _check_rows(op, yname, y, ylayout)
        if tuple(y.shape)[-1] != tuple(x.shape)[-1]:
            raise ValueError(f"{op}: {yname} must have shape {ylayout} = "
                             f"(..., *, {tuple(x.shape)[-1]}); "
                             f"got {shape_str(y.shape)}.")
    dtype = same_dtype(op, **{xname: x, yname: y})
    for name, a in ((xname, x), (yname, y)):
        if a is not None and max(tuple(a.shape)[-2:]) > _INT_MAX:
            raise ValueError(f"{op}: {name} must have fewer than 2**31 rows and columns; "
                             f"got shape {shape_str(a.shape)}.")
    batch = _batch(op, (xname, yname), x, y)
    return x, y, dtype, batch


def _pairwise(op, x, y, out):
    plan_key = None
    if out is None:                      # repeated NumPy calls: see _plans
        plan_key, plan = _plans.find(op, (x, y), ())
        if plan is not None:
            return plan(x, y)
    p = begin(op, x=x, y=y)
    x_, y_, dtype, batch = _operands(op, p)
    m, n = _rows(x_), _rows(x_ if y_ is None else y_)
    shape = batch.shape + (m, n)
    empty = math.prod(shape) == 0
    if plan_key is not None and not empty and p.storage is None and x.flags.c_contiguous \
            and (y is None or y.flags.c_contiguous) \
            and batch.xmap.nbytes + batch.ymap.nbytes <= _plans.MAX_PLAN_BYTES:
        plan = _pairwise_plan(op, dtype, batch, shape, m, n)
        _plans.store(plan_key, plan)
        return plan(x, y)
    if out is not None:
        out_caller, out_k = p.adopt_out(out)
        check_out(op, out_k, shape, dtype, {"x": x_, "y": y_})
    else:
        out_caller, out_k = p.empty(shape, dtype)
    if empty:             # nothing to compute: the operands are not even copied
        return p.wrap(out_caller)
    if p.backend == "cpu" and _same_array(x_, y_):
        y_ = None        # pairwise_sqdist(x, x): take the exactly symmetric path
    out3 = out_k.reshape((len(batch.xmap), m, n))
    _run(p, registry.lookup(op, p.backend, dtype), out3, _stacked(p, x_), _stacked(p, y_), batch)
    return p.wrap(out_caller)


def _pairwise_plan(op, dtype, batch, shape, m, n):
    """A stored plan: ``plan(x, y)`` computes ``op`` on C-contiguous NumPy arrays of
    this call's shapes into a new array, as :func:`_pairwise` does on the CPU."""
    for a in (batch.xmap, batch.ymap):     # shared by every call of the plan
        a.flags.writeable = False
    out_shape = (len(batch.xmap), m, n)

    def stacked(a):
        return a.reshape((math.prod(a.shape[:-2]),) + a.shape[-2:])

    def plan(x, y):
        out = _memory.empty(shape, dtype)
        if y is not None and _same_array(x, y):
            y = None        # as the full path: the exactly symmetric one
        kernel = registry.lookup(op, "cpu", dtype)
        kernel(out.reshape(out_shape), stacked(x), None if y is None else stacked(y), batch)
        return out
    return plan


def _same_array(a, b):
    """True when NumPy arrays a and b view exactly the same elements."""
    return (b is not None and a.shape == b.shape and a.strides == b.strides
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------

@overload
def pairwise_sqdist(x: NumPyLike, y: NumPyLike | None = None,
                    out: Array | None = None) -> Array: ...
@overload
def pairwise_sqdist(x: Any, y: Any = None, out: Any = None) -> Any: ...
@public_call
def pairwise_sqdist(x: Any, y: Any = None, out: Any = None) -> Any:
    """Squared Euclidean distances between the rows of ``x`` and of ``y``.

    Parameters
    ----------
    x : array (..., M, D), float32 or float64
    y : array (..., N, D) of x's dtype, optional
        Defaults to ``x`` (all pairwise distances within one set; the result
        is then exactly symmetric with an exactly zero diagonal, and only
        half of the products are computed). Passing ``x`` itself as ``y``
        does the same.
    out : array (..., M, N), optional
        C-contiguous destination of the inputs' dtype, not overlapping them.

    Returns
    -------
    array (..., M, N): ``out[..., i, j] = sum_k (x[..., i, k] - y[..., j, k])**2``, the
    caller's array type (NumPy, CuPy, or e.g. a torch tensor through DLPack).

    Conventions
    -----------
    Batches: the leading dimensions of x and y broadcast as in
    ``torch.cdist`` ((B, M, D) with (B, N, D), (M, D) with (B, N, D), (A, 1,
    M, D) with (B, N, D) ...), giving ``broadcast(leading) + (M, N)``. Each
    batch element's result is bit-identical to the call on that element
    alone; the batch is one parallel loop over elements x tiles.

    CPU: for D <= 4 (point clouds) direct differences summed in float64 (float32
    results are the float64 result rounded once); otherwise a packed GEMM
    on centred data with a fused epilogue; entries where
    the expansion would cancel (``d^2 <= tau * (|x_c|^2 + |y_c|^2)``, tau =
    1/8 for float32, 1/256 for float64) and rows of huge magnitude are
    recomputed from direct differences in float64. Results are >= 0,
    identical rows give exactly 0, float32 results are within 5e-6 relative
    of the float64 direct computation (5e-7 typical), inf only where the
    true value overflows. Bit-identical for any thread count and calling
    thread. Temporary memory: one centred copy of x and y per batch element.
    CUDA: a tiled direct-difference kernel. Non-contiguous inputs are copied
    once.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> x = np.array([[0.0, 0.0], [3.0, 4.0]])
    >>> fi.pairwise_sqdist(x)
    array([[ 0., 25.],
           [25.,  0.]])
    >>> fi.pairwise_sqdist(x, np.zeros((3, 1, 2))).shape     # a batch of 3 clouds of 1 point
    (3, 2, 1)
    """
    return _pairwise("pairwise_sqdist", x, y, out)


@overload
def pairwise_l2(x: NumPyLike, y: NumPyLike | None = None,
                out: Array | None = None) -> Array: ...
@overload
def pairwise_l2(x: Any, y: Any = None, out: Any = None) -> Any: ...
@public_call
def pairwise_l2(x: Any, y: Any = None, out: Any = None) -> Any:
    """Euclidean distances between the rows of ``x`` and of ``y``.

    The square root of :func:`pairwise_sqdist` (same parameters, same
    batching and broadcasting, same precision story), taken in the same
    fused pass.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> fi.pairwise_l2(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [0.0, 1.0]]))
    array([[5., 1.]])
    """
    return _pairwise("pairwise_l2", x, y, out)


def _backward_arrays(op, p):
    """Validated (grad_out, x, y, dtype, batch, shape) of a backward call."""
    x_, y_, dtype, batch = _operands(op, p)
    g = p.arrays["grad_out"]
    check_array(op, "grad_out", g)
    shape = batch.shape + (_rows(x_), _rows(x_ if y_ is None else y_))
    _check_result_shaped(op, "grad_out", g, shape)
    same_dtype(op, x=x_, grad_out=g)
    return g, x_, y_, dtype, batch, shape


def _check_result_shaped(op, name, a, shape):
    check_shape(op, name, a, shape, "(..., M, N)")


def _run(p, kernel, *args):
    """Call a registry kernel (CUDA kernels also take the caller's stream; strided device
    inputs are copied once to contiguous memory, outputs are already contiguous)."""
    if p.backend == "cuda":
        return kernel(*(p.contiguous(a) for a in args), stream=p.stream)
    return kernel(*args)


def _gradients(p, op, dtype, x_, y_, batch, needs, g, *more):
    """Allocate (grad_x, grad_y) of the inputs' shapes, run ``op``'s kernel into them (it
    sums over the batch elements that share an input: broadcast dimensions are reduced
    as autograd would), wrap them back. ``needs``: (x's, y's) asked for; one not asked
    for is None (the built-in CPU kernel skips it; others compute it, then it is
    dropped). An empty ``g`` gives zeros without reading the operands (a broadcast
    operand is not copied)."""
    need_x, need_y = needs[0], needs[1] and y_ is not None
    if not (need_x or need_y):
        return None, None
    if g.size == 0:
        zeros = [p.zeros(a.shape, dtype)[0] if need else None
                 for a, need in ((x_, need_x), (y_, need_y))]
        return tuple(None if z is None else p.wrap(z) for z in zeros)
    kernel = registry.lookup(op, p.backend, dtype)
    skips = p.backend == "cpu" and getattr(registry.last_kernel(), "source", None) == "builtin"
    gx_caller, gx = p.empty(x_.shape, dtype) if need_x or not skips else (None, None)
    gy_caller, gy = (None, None) if y_ is None or (skips and not need_y) else \
        p.empty(y_.shape, dtype)
    _run(p, kernel, _stacked(p, gx), _stacked(p, gy), _stacked(p, g),
         *(_stacked(p, a) for a in more), _stacked(p, x_), _stacked(p, y_), batch)
    return (p.wrap(gx_caller) if need_x else None), (p.wrap(gy_caller) if need_y else None)


@overload
def pairwise_sqdist_backward(grad_out: NumPyLike, x: NumPyLike, y: None = None, *,
                             needs_x_grad: Literal[True] = True,
                             needs_y_grad: Flag = True) -> tuple[Array, None]: ...
@overload
def pairwise_sqdist_backward(grad_out: NumPyLike, x: NumPyLike, y: NumPyLike, *,
                             needs_x_grad: Literal[True] = True,
                             needs_y_grad: Literal[True] = True) -> tuple[Array, Array]: ...
@overload
def pairwise_sqdist_backward(grad_out: NumPyLike, x: NumPyLike, y: NumPyLike | None = None, *,
                             needs_x_grad: Flag = True, needs_y_grad: Flag = True
                             ) -> tuple[Array | None, Array | None]: ...
@overload
def pairwise_sqdist_backward(grad_out: Any, x: Any, y: Any = None, *, needs_x_grad: Flag = True,
                             needs_y_grad: Flag = True) -> tuple[Any, Any]: ...
@public_call
def pairwise_sqdist_backward(grad_out: Any, x: Any, y: Any = None, *, needs_x_grad: Flag = True,
                             needs_y_grad: Flag = True) -> Any:
    """Gradients of ``sum(grad_out * pairwise_sqdist(x, y))`` with respect to x and y.

    Parameters
    ----------
    grad_out : array (..., M, N)
        Gradient of the loss with respect to the distances (the forward's
        result shape, broadcast batch dimensions included); x's dtype.
    x : array (..., M, D)
    y : array (..., N, D), optional
        As passed to the forward. When omitted (y = x), the two roles of x
        are summed into one gradient.
    needs_x_grad, needs_y_grad : bool
        Which gradients to compute (default both); one not asked for is
        returned as None and costs nothing (the CPU kernels skip its GEMM).

    Returns
    -------
    (grad_x, grad_y) : arrays of x's and y's shapes; ``grad_y`` is None when y
    was omitted. ``grad_x[i] = 2 sum_j g_ij (x_i - y_j)``,
    ``grad_y[j] = -2 sum_i g_ij (x_i - y_j)``, computed with two GEMMs on
    centred coordinates (no cancellation for data far from the origin),
    row sums in a fixed order: bit-identical for any thread count. Over a
    broadcast batch dimension the gradient is summed, in batch order, as
    autograd would; without broadcasting each batch element's gradient is
    bit-identical to the call on that element alone.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> gx, gy = fi.pairwise_sqdist_backward(np.ones((1, 1)), np.array([[1.0, 2.0]]),
    ...                                      np.array([[0.0, 0.0]]))
    >>> gx, gy
    (array([[2., 4.]]), array([[-2., -4.]]))
    """
    op = "pairwise_sqdist_backward"
    needs = _needs(op, needs_x_grad, needs_y_grad)
    p = begin(op, grad_out=grad_out, x=x, y=y)
    g, x_, y_, dtype, batch, _ = _backward_arrays(op, p)
    return _gradients(p, op, dtype, x_, y_, batch, needs, g)


def _needs(op, needs_x_grad, needs_y_grad):
    """The backward's ``(needs_x_grad, needs_y_grad)`` as bools."""
    return (check_bool(op, "needs_x_grad", needs_x_grad),
            check_bool(op, "needs_y_grad", needs_y_grad))


@overload
def pairwise_l2_backward(grad_out: NumPyLike, x: NumPyLike, y: None = None,
                         dist: NumPyLike | None = None, *, needs_x_grad: Literal[True] = True,
                         needs_y_grad: Flag = True) -> tuple[Array, None]: ...
@overload
def pairwise_l2_backward(grad_out: NumPyLike, x: NumPyLike, y: NumPyLike,
                         dist: NumPyLike | None = None, *, needs_x_grad: Literal[True] = True,
                         needs_y_grad: Literal[True] = True) -> tuple[Array, Array]: ...
@overload
def pairwise_l2_backward(grad_out: NumPyLike, x: NumPyLike, y: NumPyLike | None = None,
                         dist: NumPyLike | None = None, *, needs_x_grad: Flag = True,
                         needs_y_grad: Flag = True) -> tuple[Array | None, Array | None]: ...
@overload
def pairwise_l2_backward(grad_out: Any, x: Any, y: Any = None, dist: Any = None, *,
                         needs_x_grad: Flag = True,
                         needs_y_grad: Flag = True) -> tuple[Any, Any]: ...
@public_call
def pairwise_l2_backward(grad_out: Any, x: Any, y: Any = None, dist: Any = None, *,
                         needs_x_grad: Flag = True, needs_y_grad: Flag = True) -> Any:
    """Gradients of ``sum(grad_out * pairwise_l2(x, y))`` with respect to x and y.

    Parameters
    ----------
    grad_out : array (..., M, N)
    x : array (..., M, D)
    y : array (..., N, D), optional (see :func:`pairwise_sqdist_backward`)
    dist : array (..., M, N), optional
        ``pairwise_l2(x, y)`` from the forward pass; recomputed when omitted.
    needs_x_grad, needs_y_grad : bool
        As in :func:`pairwise_sqdist_backward`.

    Returns
    -------
    (grad_x, grad_y), as :func:`pairwise_sqdist_backward`.

    Conventions
    -----------
    ``d|x_i - y_j| / dx_i = (x_i - y_j) / |x_i - y_j|``, undefined at zero
    distance; there the subgradient 0 is used (the pair contributes
    nothing), so no NaN or inf appears for identical rows. Pairs whose
    distance is small against their centred norms (near-duplicate rows, where
    the GEMM form would cancel), pairs with a huge row and pairs whose
    ``grad_out / dist`` exceeds the dtype (distances below about 3e-39 in
    float32: tiny rows) are computed from
    direct differences in float64, with ``|x_i - y_j|`` recomputed there:
    float32 gradients stay within a few ulps of float64 for such data. On
    CUDA every term comes from direct differences. Batches as in
    :func:`pairwise_sqdist_backward`.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> x = np.array([[3.0, 4.0], [3.0, 4.0]])
    >>> gx, _ = fi.pairwise_l2_backward(np.ones((2, 1)), x, np.zeros((1, 2)))
    >>> gx
    array([[0.6, 0.8],
           [0.6, 0.8]])
    """
    op = "pairwise_l2_backward"
    needs = _needs(op, needs_x_grad, needs_y_grad)
    p = begin(op, grad_out=grad_out, x=x, y=y, dist=dist)
    g, x_, y_, dtype, batch, shape = _backward_arrays(op, p)
    dist_ = p.arrays.get("dist")
    if dist is not None:
        check_array(op, "dist", dist_)
        _check_result_shaped(op, "dist", dist_, shape)
        same_dtype(op, x=x_, dist=dist_)
    return _gradients(p, op, dtype, x_, y_, batch, needs, g, dist_)


def _knn_shared(kernel, dist, idx, xs, qs, batch, k):
    """knn where batch elements share a database (broadcast): one search per database of
    all its elements' queries, scattered back. Searched element by element, each would
    centre its own copy of the shared database (200 query sets against one 20k x 64
    database: 1 GB and 4.7 s, against 0.12 s for one search); each query's answer does
    not depend on the others searched with it (exact indices, distances from direct
    differences)."""
    nx, per = batch.nx, len(batch.xmap) // batch.nx     # broadcasting: equal shares
    order = np.argsort(batch.xmap, kind="stable")       # the elements of database 0, 1, ...
    grouped = np.ascontiguousarray(qs[batch.ymap[order]]).reshape(nx, per * qs.shape[1],
                                                                  qs.shape[2])
    one_each = np.arange(nx, dtype=np.int64)
    d = np.empty((nx, grouped.shape[1], k), dist.dtype)
    i = np.empty((nx, grouped.shape[1], k), idx.dtype)
    kernel(d, i, xs, grouped, Batch((nx,), one_each, one_each, nx, nx), k)
    dist[order] = d.reshape(dist.shape)
    idx[order] = i.reshape(idx.shape)


def _knn_arguments(op, p, k):
    """Validated ``(x, queries, dtype, batch, k)`` of a knn call."""
    if p.arrays.get("queries") is None:
        raise TypeError(f"{op}: queries must be an array of shape (..., Q, D); got None.")
    x_, q_, dtype, batch = _operands(op, p, "x", "queries", "(..., N, D)", "(..., Q, D)")
    return x_, q_, dtype, batch, check_k(op, k, _rows(x_))


def check_k(op, k, n):
    """knn's ``k`` as an int in [1, n]: a Python or NumPy int, or a 0-d integer array or
    tensor (read by ``__index__``); TypeError for bools and the rest."""
    try:
        k = as_index(k)
    except TypeError:
        raise TypeError(f"{op}: k must be an int; got {type(k).__name__}.") from None
    if not 1 <= k <= n:
        raise ValueError(f"{op}: k must satisfy 1 <= k <= N = {n}; got {k}.")
    return k


def knn_within(x, queries, k, bound):
    """:func:`knn` of NumPy ``x`` (N, D) and ``queries`` (Q, D) where only the rows
    within squared distance ``bound`` (Q,) of each query are wanted (the k-th
    distance among rows searched before, when a database is searched block by
    block): far rows are then rarely inserted into the candidate heaps.

    Returns ``(distances, indices)`` (Q, k): a query with at least k rows
    within its bound gets knn's answer; one with fewer gets at least those
    rows, sorted as knn sorts them, then entries of distance +inf and index
    -1. A bound of +inf or NaN asks for knn's answer. CPU only; internal (the
    streamed and Dask kNN use it).
    """
    op = "knn"
    p = begin(op, x=x, queries=queries)
    x_, q_, dtype, batch, k = _knn_arguments(op, p, k)
    if p.backend != "cpu" or batch.shape != ():
        raise ValueError("knn_within: x (N, D) and queries (Q, D) must be CPU arrays.")
    nq = _rows(q_)
    bound = np.ascontiguousarray(bound, dtype=np.float64)
    if bound.shape != (nq,):
        raise ValueError(f"knn_within: bound must have shape (Q,) = ({nq},); "
                         f"got {shape_str(bound.shape)}.")
    bound = bound.reshape(1, nq)
    dist, idx = np.empty((1, nq, k), dtype), np.empty((1, nq, k), np.int64)
    _knn_cpu(dist, idx, _stacked(p, x_), _stacked(p, q_), batch, k, bound)
    return dist[0], idx[0]


def _knn_streamed(op, x, queries, k, return_distances, progress):
    """:func:`knn` over a database read block by block (a memmap, zarr or h5py array,
    or any database with ``progress``), returning the caller's array type."""
    from . import _stream
    if _stream.is_out_of_core(x):
        p = begin(op, queries=queries)
        x_ = x
    else:
        p = begin(op, x=x, queries=queries)
        x_ = _knn_arguments(op, p, k)[0]    # the in-memory call's checks and messages
    if p.backend != "cpu":
        raise ValueError(f"{op}: a search read in blocks (progress=True or an out-of-core "
                         f"database) runs on the CPU; got {p.backend.upper()} arrays: call "
                         f"it without progress.")
    result = _stream.knn_stream(x_, p.arrays["queries"], k, return_distances, progress)
    return tuple(p.wrap(r) for r in result) if return_distances else p.wrap(result)


@overload
def knn(x: NumPyLike, queries: NumPyLike, k: SupportsIndex,
        return_distances: Literal[True] = True, *,
        progress: IntFlag = False) -> tuple[Array, Array]: ...
@overload
def knn(x: NumPyLike, queries: NumPyLike, k: SupportsIndex, return_distances: Literal[False],
        *, progress: IntFlag = False) -> Array: ...
@overload
def knn(x: NumPyLike, queries: NumPyLike, k: SupportsIndex, return_distances: IntFlag = True,
        *, progress: IntFlag = False) -> tuple[Array, Array] | Array: ...
@overload
def knn(x: Any, queries: Any, k: SupportsIndex, return_distances: Literal[True] = True, *,
        progress: IntFlag = False) -> tuple[Any, Any]: ...
@overload
def knn(x: Any, queries: Any, k: SupportsIndex, return_distances: IntFlag = True, *,
        progress: IntFlag = False) -> Any: ...
@public_call
def knn(x: Any, queries: Any, k: SupportsIndex, return_distances: IntFlag = True, *,
        progress: IntFlag = False) -> Any:
    """The ``k`` nearest rows of ``x`` (Euclidean) for every row of ``queries``.

    Parameters
    ----------
    x : array (..., N, D), float32 or float64
        The rows searched (the "database" or training set).
    queries : array (..., Q, D) of x's dtype
        The leading (batch) dimensions of x and queries broadcast (as in
        ``torch.cdist``): each batch element's queries search that element's x.
    k : int
        Number of neighbours, ``1 <= k <= N``.
    return_distances : bool
        Also return the squared distances (default True).
    progress : bool
        Show a progress bar (tqdm when installed, else a line on stderr) while
        the rows of x are searched block by block.

    Returns
    -------
    distances : array (..., Q, k) of x's dtype, squared Euclidean distances,
        ascending along each row (only when ``return_distances``).
    indices : array (..., Q, k), int64, rows of the batch element's x.

    Conventions
    -----------
    Results are exact: ties are broken by the smaller index (the order of a
    stable argsort of the float64 distances, each summed from direct
    differences in eight partial sums, column c into sum c mod 8, combined as
    ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7))), and the returned distances are
    recomputed from direct differences. Those float64 sums round once their
    terms need more than 53 bits (float32 rows of a few hundred columns): two
    rows at the same exact distance can then differ by an ulp, and the
    float64-nearer comes first even where the float32 distances returned are
    equal. CPU: a database of at most 256 rows
    (a small point cloud) is scanned directly for each query; larger ones use
    a blocked GEMM with a fused top-k scan per query block (memory O(Q k + threads * block), never the
    full Q x N matrix); a candidate set slightly larger than k is proven to
    contain the answer with a rounding-error bound, else that query is
    rescanned exactly. Equal distances, inf included, keep the smaller index
    first; NaN distances sort after every number (and among themselves by
    index). So a query with an inf coordinate (every distance inf, or NaN
    from rows with a NaN or an inf in that coordinate) gets the rows at
    distance inf in index order, then the NaN ones; an all-NaN query gets
    rows 0, 1, ..., k-1. A batch is one kernel call (query sets that share a
    database are searched together, one search of it); each element's result
    equals the call on that element alone.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> x = np.array([[0.0], [1.0], [3.0], [-1.0]])
    >>> d, i = fi.knn(x, np.array([[0.2], [2.0]]), k=2)
    >>> i
    array([[0, 1],
           [1, 2]])
    >>> d
    array([[0.04, 0.64],
           [1.  , 1.  ]])
    """
    op = "knn"
    from . import _stream
    return_distances = check_flag(op, "return_distances", return_distances)
    # a batch of databases (B, N, D) is searched in memory, a memmap's or zarr's too
    if check_flag(op, "progress", progress) or (_stream.is_out_of_core(x)
                                                 and len(x.shape) == 2):
        return _knn_streamed(op, x, queries, k, return_distances, progress)
    p = begin(op, x=x, queries=queries)
    x_, q_, dtype, batch, k = _knn_arguments(op, p, k)
    nq = _rows(q_)
    shape = batch.shape + (nq, k)
    dist_caller, dist_k = p.empty(shape, dtype)
    idx_caller, idx_k = p.empty(shape, np.int64)
    flat = (len(batch.xmap), nq, k)
    if math.prod(shape) > 0:     # no query: the database is not even copied
        kernel = registry.lookup(op, p.backend, dtype)
        xs, qs = _stacked(p, x_), _stacked(p, q_)
        if p.backend == "cpu" and len(batch.xmap) > batch.nx:
            _knn_shared(kernel, dist_k.reshape(flat), idx_k.reshape(flat), xs, qs, batch, k)
        else:
            _run(p, kernel, dist_k.reshape(flat), idx_k.reshape(flat), xs, qs, batch, k)
    if return_distances:
        return p.wrap(dist_caller), p.wrap(idx_caller)
    return p.wrap(idx_caller)
