"""Pairwise distances over row-chunked dask arrays, and kNN by a tree of exact merges."""
from __future__ import annotations

import importlib
import operator
import warnings

import numpy as np
import dask.array as da
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

import fastinterp as fi
from .. import _stream
from ._graph import as_dask, single_chunk

_dist = importlib.import_module("fastinterp.distance")


def _rows(op, name, a):
    """``a`` as a 2-D dask array with one chunk along D."""
    a = as_dask(a)
    if a.ndim != 2:
        raise ValueError(f"{op}: {name} must have shape (rows, D); got {tuple(a.shape)}.")
    return a.rechunk({1: -1}) if a.numblocks[1] > 1 else a


def _centre(dtype, *arrays):
    """fastinterp's centring vector of the whole operands, from their row samples
    (the samples hold at most 2 * CENTRE_SAMPLE rows, which the kernel's own sampling
    keeps whole), shaped (1, D) as the kernel takes it."""
    one = np.zeros(1, np.int64)
    return _dist._centres(dtype, *[(np.asarray(a)[None], one) for a in arrays])


def _sample(a):
    """The rows of ``a`` that fastinterp's centre samples (every n // CENTRE_SAMPLE-th)."""
    return a[::max(1, a.shape[0] // _dist.CENTRE_SAMPLE)] if a.shape[0] else a


def _pair_block(x, y, centre, take_sqrt):
    """One block of the distance matrix, centred by the whole operands' ``centre``.

    Same kernel and arguments as ``fi.pairwise_sqdist`` on the whole arrays
    except the tiles; an entry's value depends on its two rows and the
    centre only, so the block equals the matching part of the whole result.
    """
    m, n, d = x.shape[0], y.shape[0], x.shape[1]
    out = np.empty((1, m, n), x.dtype)
    if m == 0 or n == 0:
        return out[0]
    direct = d <= _dist.DIRECT_MAX_D      # as the whole call: direct differences, no centre
    centre = np.zeros((1, d), x.dtype) if direct else np.asarray(centre).reshape(1, d)
    xc, nx = np.empty((1, m, d), x.dtype), np.empty((1, m), x.dtype)
    yc, ny = np.empty((1, n, d), x.dtype), np.empty((1, n), x.dtype)
    one = np.zeros(1, np.int64)
    tiles = _dist._tile_list(m, n, False)
    nthreads = max(1, min(_dist.threads_for(m * n * d, _dist.GEMM_WORK_PER_THREAD),
                          len(tiles)))
    _dist._cpu().sqdist_fwd(out, xc, yc, nx, ny, np.ascontiguousarray(x)[None],
                            np.ascontiguousarray(y)[None], one, one, centre, tiles,
                            _dist.TAU[x.dtype], _dist._norm_limit(x.dtype), take_sqrt, False,
                            direct, nthreads)
    return out[0]


def _pairwise(op, x, y, take_sqrt):
    x = _rows(op, "x", x)
    yy = x if y is None else _rows(op, "y", y)
    probe = getattr(fi, op)(np.zeros((0, x.shape[1]), x.dtype),
                            None if y is None else np.zeros((0, yy.shape[1]), yy.dtype))
    samples = [_sample(x)] if y is None else [_sample(x), _sample(yy)]
    samples = [single_chunk(s)[0] for s in samples]
    centre = da.map_blocks(lambda *s: _centre(x.dtype, *s)[0], *samples, drop_axis=0,
                           chunks=((x.shape[1],),), dtype=x.dtype, meta=np.empty(0, x.dtype))
    with warnings.catch_warnings():   # an outer product has rows x columns blocks by design
        warnings.simplefilter("ignore", da.PerformanceWarning)
        return da.blockwise(_pair_block, "ij", x, "ik", yy, "jk", centre, "k",
                            take_sqrt=take_sqrt, concatenate=True, dtype=probe.dtype,
                            meta=np.empty((0, 0), probe.dtype))


def pairwise_sqdist(x, y=None):
    """:func:`fastinterp.pairwise_sqdist` over row-chunked x (M, D) and y (N, D).

    The result (M, N) is chunked (x's row chunks, y's row chunks). Every
    block runs fastinterp's kernel with the centring vector of the whole x and
    y (computed from the same row sample), so it equals the in-memory result
    bit for bit.
    """
    return _pairwise("pairwise_sqdist", x, y, False)


def pairwise_l2(x, y=None):
    """:func:`fastinterp.pairwise_l2` over row-chunked arrays (see :func:`pairwise_sqdist`)."""
    return _pairwise("pairwise_l2", x, y, True)


def _merge_parts(parts, k):
    return _stream.merge(list(parts), k)


def knn(x, queries, k, return_distances=True, *, split_every=8):
    """:func:`fastinterp.knn` with a row-chunked database ``x`` and chunked ``queries``.

    Every (query chunk, database chunk) pair gives its exact top-k (indices
    made global); the lists are merged by a tree reduction (``split_every``
    lists per merge) with fastinterp's tie rule (smaller index first), so
    indices and distances equal ``fi.knn`` on the whole data (see
    fastinterp._stream for the one caveat on float32 near-ties).

    Returns dask arrays ``(distances, indices)`` of shape (Q, k), chunked
    like ``queries`` along Q (``indices`` only when not return_distances).
    """
    op = "knn"
    x = _rows(op, "x", x)
    q = _rows(op, "queries", queries)
    fi.knn(np.zeros((1, x.shape[1]), x.dtype), np.zeros((0, q.shape[1]), q.dtype), 1)  # checks
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"knn: k must be an int; got {type(k).__name__}.")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"knn: k must satisfy 1 <= k <= N = {x.shape[0]}; got {k}.")
    if split_every < 2:
        raise ValueError(f"knn: split_every must be >= 2; got {split_every}.")
    k = int(k)
    token = tokenize(op, x, q, k, split_every)
    starts = np.cumsum((0,) + x.chunks[0])
    blocks = [j for j in range(x.numblocks[0]) if x.chunks[0][j] > 0]
    dsk = {}
    level, name = 0, f"knn-block-{token}"
    for i in range(q.numblocks[0]):
        for pos, j in enumerate(blocks):
            dsk[(name, i, pos)] = (_stream.block_candidates, (x.name, j, 0), (q.name, i, 0), k,
                                   int(starts[j]))
    width = len(blocks)
    while width > 1:
        level += 1
        merged = f"knn-merge{level}-{token}"
        for i in range(q.numblocks[0]):
            for g in range(0, width, split_every):
                dsk[(merged, i, g // split_every)] = (
                    _merge_parts, [(name, i, m) for m in range(g, min(width, g + split_every))],
                    k)
        name, width = merged, -(-width // split_every)
    outs = []
    for pos, dtype in ((0, x.dtype), (1, np.dtype(np.int64))):
        out = f"knn-{'dist' if pos == 0 else 'idx'}-{token}"
        layer = {(out, i, 0): (operator.getitem, (name, i, 0), pos)
                 for i in range(q.numblocks[0])}
        layer.update(dsk)
        graph = HighLevelGraph.from_collections(out, layer, dependencies=[x, q])
        outs.append(da.Array(graph, out, chunks=(q.chunks[0], (k,)),
                             meta=np.empty((0, 0), dtype)))
    return tuple(outs) if return_distances else outs[1]
