"""Pairwise distances over row-chunked dask arrays, and kNN by a tree of exact merges."""
from __future__ import annotations

import importlib
import math
import operator
import warnings

import numpy as np
import dask.array as da
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from dask.layers import ArrayValuesDep     # block j's first row, bound into its task

import fastinterp as fi
from .. import _stream
from .._validate import as_index, check_flag
from ._graph import as_dask, callers_shapes, check_known_sizes, probe, single_chunk

_dist = importlib.import_module("fastinterp.distance")


def _rows(op, name, a):
    """``a`` as a 2-D dask array with one chunk along D, in the machine's byte order (as
    the in-memory op reads a byte-swapped array: copied once, block by block)."""
    a = as_dask(a, op, name)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if a.ndim != 2:
        batched = " (batched point clouds (B, N, D) are for the in-memory op)" if a.ndim == 3 else ""
        raise ValueError(f"{op}: {name} must have shape (rows, D){batched}; got "
                         f"{tuple(a.shape)}.")
    check_known_sizes(op, name, a, (1,))
    return a.rechunk({1: -1}) if a.numblocks[1] > 1 else a


def _centre(dtype, *arrays):
    """fastinterp's centring vector of the whole operands, from their row samples
    (the samples hold fewer than twice the rows the kernel's own sampling takes, so
    it keeps them whole), shaped (1, D) as the kernel takes it."""
    one = np.zeros(1, np.int64)
    return _dist._centres(dtype, *[(np.asarray(a)[None], one) for a in arrays])


def _sample(a):
    """The rows of ``a`` that fastinterp's centre samples (every centre_step-th)."""
    return a[::_dist.centre_step(a.shape[0], a.shape[1])] if a.shape[0] else a


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


def _centre_only(*samples, dtype_):
    """The centre of :func:`_centre` alone (a module-level task function: graphs pickle)."""
    return _centre(dtype_, *samples)[0]


def _pairwise(op, x, y, take_sqrt):
    x = _rows(op, "x", x)
    yy = x if y is None else _rows(op, "y", y)
    for name, arr in (("x", x), ("y", yy)):     # blocks of rows and columns of the result
        check_known_sizes(op, name, arr, (0,))
    result = probe(getattr(fi, op), {"x": x} if y is None else {"x": x, "y": yy},
                   {"y": None} if y is None else None)
    if x.shape[0] == 0 or yy.shape[0] == 0:     # an empty result reads no block
        return da.empty((x.shape[0], yy.shape[0]), dtype=result.dtype,
                        chunks=(x.chunks[0], yy.chunks[0]))
    samples = [_sample(x)] if y is None else [_sample(x), _sample(yy)]
    samples = [single_chunk(s)[0] for s in samples]
    centre = da.map_blocks(_centre_only, *samples, dtype_=x.dtype, drop_axis=0,
                           chunks=((x.shape[1],),), dtype=x.dtype, meta=np.empty(0, x.dtype))
    with warnings.catch_warnings():   # an outer product has rows x columns blocks by design
        warnings.simplefilter("ignore", da.PerformanceWarning)
        # not aligned: a length-1 x or y split as (0, 1) would be broadcast block by block
        return da.blockwise(_pair_block, "ij", x, "ik", yy, "jk", centre, "k",
                            take_sqrt=take_sqrt, concatenate=True, dtype=result.dtype,
                            meta=np.empty((0, 0), result.dtype), align_arrays=False)


def pairwise_sqdist(x, y=None):
    """:func:`fastinterp.pairwise_sqdist` over row-chunked x (M, D) and y (N, D).

    The result (M, N) is chunked (x's row chunks, y's row chunks). Every
    block runs fastinterp's kernel with the centring vector of the whole x and
    y (computed from the same row sample), so it equals the in-memory result
    bit for bit.

    Parameters
    ----------
    x : dask or NumPy array (M, D), float32 or float64
        Rows chunked along M (D is rechunked to one chunk; a NumPy array is
        one chunk). Batched point clouds (B, M, D) are for the in-memory op.
    y : dask or NumPy array (N, D) of x's dtype, optional
        Rows chunked along N; defaults to ``x``, as for
        :func:`fastinterp.pairwise_sqdist` (no ``out``).

    Returns
    -------
    dask.array.Array
        Lazy (M, N) of x's dtype, chunked (x's row chunks, y's row chunks).

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.random((5, 3)), rng.random((4, 3))
    >>> d = fd.pairwise_sqdist(da.from_array(x, chunks=(2, 3)), da.from_array(y, chunks=(2, 3)))
    >>> d.chunks
    ((2, 2, 1), (2, 2))
    >>> bool((d.compute(scheduler="sync") == fi.pairwise_sqdist(x, y)).all())
    True
    """
    return _pairwise("pairwise_sqdist", x, y, False)


def pairwise_l2(x, y=None):
    """:func:`fastinterp.pairwise_l2` over row-chunked arrays (see :func:`pairwise_sqdist`).

    Each block runs the kernel of :func:`pairwise_sqdist` with the square root
    taken (the same centring), so it equals the in-memory result bit for bit.

    Parameters
    ----------
    x : dask or NumPy array (M, D), float32 or float64
        Rows chunked along M (D is rechunked to one chunk).
    y : dask or NumPy array (N, D) of x's dtype, optional
        Rows chunked along N; defaults to ``x``, as for
        :func:`fastinterp.pairwise_l2` (no ``out``).

    Returns
    -------
    dask.array.Array
        Lazy (M, N) Euclidean distances of x's dtype, chunked (x's row
        chunks, y's row chunks).

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> x = np.random.default_rng(0).random((5, 3))
    >>> d = fd.pairwise_l2(da.from_array(x, chunks=(2, 3)))
    >>> d.chunks
    ((2, 2, 1), (2, 2, 1))
    >>> bool((d.compute(scheduler="sync") == fi.pairwise_l2(x)).all())
    True
    """
    return _pairwise("pairwise_l2", x, y, True)


# A search task reads at least this many bytes of the database (smaller chunks are
# merged): each task has a fixed cost (scheduling, the kernel's set-up, the
# candidates' float64 distances), so many small tasks run slower than a few large ones.
MIN_TASK_BYTES = 4 << 20
# Consecutive query chunks are searched together up to this many bytes (queries and
# their candidates), so each database block is read once per group, not once per chunk.
QUERY_GROUP_BYTES = 64 << 20


def _merge_parts(parts, k):
    return _stream.merge(list(parts), k)


def _block_part(queries, xb, start, k):
    """Exact top-k candidates of one database block for one query group (global indices)."""
    return _stream.block_candidates(xb, queries, k, start)


def _groups(sizes, row_bytes, limit):
    """Consecutive ``sizes`` merged into groups of at least ``limit`` bytes (the last may be
    smaller, and is joined to the one before); zero-size chunks are dropped."""
    groups, run = [], 0
    for s in sizes:
        if s == 0:
            continue
        run += s
        if run * row_bytes >= limit:
            groups.append(run)
            run = 0
    if run:
        if groups and run * row_bytes < limit:
            groups[-1] += run
        else:
            groups.append(run)
    return tuple(groups)


def _capped_groups(sizes, row_bytes, limit):
    """Consecutive ``sizes`` merged into groups of at most ``limit`` bytes (a larger
    chunk stays alone); zero-size chunks are dropped."""
    groups, run = [], 0
    for s in sizes:
        if s == 0:
            continue
        if run and (run + s) * row_bytes > limit:
            groups.append(run)
            run = 0
        run += s
    if run:
        groups.append(run)
    return tuple(groups)


def _task_blocks(x, min_bytes):
    """``x`` with chunks of at least ``min_bytes`` (whole chunks merged; none when 0)."""
    row_bytes = x.shape[1] * x.dtype.itemsize
    sizes = _groups(x.chunks[0], row_bytes, min_bytes) if min_bytes else \
        tuple(s for s in x.chunks[0] if s)
    return x if sizes == x.chunks[0] else x.rechunk({0: sizes})


def _query_groups(q, x, k):
    """``q`` with consecutive chunks merged into groups of at most QUERY_GROUP_BYTES."""
    # one database block: grouping would not save a read; chunk sizes left unknown by
    # boolean indexing cannot be grouped
    if x.numblocks[0] < 2 or q.shape[0] == 0 or any(math.isnan(c) for c in q.chunks[0]):
        return q
    row_bytes = q.shape[1] * q.dtype.itemsize + k * (2 * q.dtype.itemsize + 8)
    sizes = _capped_groups(q.chunks[0], row_bytes, QUERY_GROUP_BYTES)
    return q if sizes == q.chunks[0] else q.rechunk({0: sizes})


def knn(x, queries, k, return_distances=True, *, split_every=8, block_bytes=None):
    """:func:`fastinterp.knn` with a row-chunked database ``x`` and chunked ``queries``.

    Every (query group, database block) pair gives its exact top-k (indices
    made global); the lists are merged by a tree reduction (``split_every``
    lists per merge) with fastinterp's tie rule (smaller index first), so
    indices and distances equal ``fi.knn`` on the whole data, near-ties
    included (see fastinterp._stream).

    Task sizes: consecutive chunks of ``x`` smaller than ``block_bytes``
    (default :data:`MIN_TASK_BYTES`, 4 MiB; 0 keeps x's chunks) are
    searched together, and consecutive query chunks are grouped (up to
    :data:`QUERY_GROUP_BYTES` with their candidates) so that each database
    block is read once per group. Reading a block (``da.from_zarr``,
    ``da.from_array``) is fused into the task that searches it, so on a
    cluster each worker reads its blocks itself (from the zarr store, say)
    and only (Q, k) candidate lists travel between workers.

    Returns dask arrays ``(distances, indices)`` of shape (Q, k), chunked
    like ``queries`` along Q (``indices`` only when not return_distances).

    Parameters
    ----------
    x : dask or NumPy array (N, D), float32 or float64
        The database rows, chunked along N (D is rechunked to one chunk;
        small chunks are merged into tasks of ``block_bytes``).
    queries : dask or NumPy array (Q, D) of x's dtype
        Chunked along Q (D is rechunked to one chunk).
    k : int
        Number of neighbours, ``1 <= k <= N``.
    return_distances : bool
        As for :func:`fastinterp.knn` (no ``progress``).
    split_every : int
        Candidate lists per merge of the tree reduction, >= 2 (default 8).
    block_bytes : int, optional
        Least bytes of ``x`` per search task (default :data:`MIN_TASK_BYTES`;
        0 keeps x's chunks).

    Returns
    -------
    distances : dask.array.Array
        Lazy (Q, k) squared Euclidean distances of x's dtype, ascending along
        each row, chunked like ``queries`` along Q, one chunk along k (only
        when ``return_distances``).
    indices : dask.array.Array
        Lazy (Q, k) int64 rows of ``x``, chunked as ``distances``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastinterp as fi, fastinterp.dask as fd
    >>> rng = np.random.default_rng(0)
    >>> x, q = rng.random((10, 2)), rng.random((3, 2))
    >>> d, i = fd.knn(da.from_array(x, chunks=(4, 2)), da.from_array(q, chunks=(2, 2)), 2,
    ...               block_bytes=0)
    >>> d.chunks, i.dtype
    (((2, 1), (2,)), dtype('int64'))
    >>> want_d, want_i = fi.knn(x, q, 2)
    >>> bool((d.compute(scheduler="sync") == want_d).all())
    True
    >>> bool((i.compute(scheduler="sync") == want_i).all())
    True
    """
    op = "knn"
    x = _rows(op, "x", x)
    check_known_sizes(op, "x", x, (0,))         # (global indices: each block's first row)
    q = _rows(op, "queries", queries)
    stand_ins = np.zeros((1, x.shape[1]), x.dtype), np.zeros((0, q.shape[1]), q.dtype)
    with callers_shapes(*zip(stand_ins, (x, q))):
        fi.knn(*stand_ins, 1)                                                      # checks
    k = _dist.check_k(op, k, x.shape[0])
    return_distances = check_flag(op, "return_distances", return_distances)
    try:
        split_every = as_index(split_every)
    except TypeError:
        raise TypeError(f"knn: split_every must be an int; got {split_every!r}.") from None
    if split_every < 2:
        raise ValueError(f"knn: split_every must be >= 2; got {split_every}.")
    if block_bytes is None:
        block_bytes = MIN_TASK_BYTES
    try:
        block_bytes = as_index(block_bytes)
    except TypeError:
        raise TypeError(f"knn: block_bytes must be an int >= 0 or None; "
                        f"got {block_bytes!r}.") from None
    if block_bytes < 0:
        raise ValueError(f"knn: block_bytes must be an int >= 0 or None; got {block_bytes!r}.")
    k = int(k)
    if q.shape[0] == 0:          # no query: the result depends on no block of x
        outs = [da.empty((0, k), dtype=dtype, chunks=(q.chunks[0], (k,)))
                for dtype in (x.dtype, np.dtype(np.int64))]
        return tuple(outs) if return_distances else outs[1]
    x = _task_blocks(x, int(block_bytes))
    qg = _query_groups(q, x, k)
    starts = np.cumsum((0,) + x.chunks[0])[:-1]
    starts = ArrayValuesDep((x.chunks[0],), {(j,): int(s) for j, s in enumerate(starts)})
    # "d" (one chunk) stays an output index: no contraction, so the block reads
    # (da.from_zarr, da.from_array: Blockwise layers) fuse into these tasks
    parts = da.blockwise(_block_part, "ijd", qg, "id", x, "jd", starts, "j", k=k,
                         align_arrays=False, meta=np.empty((0, 0, 0), x.dtype),
                         name=f"knn-block-{tokenize(op, x, qg, k)}")
    token = tokenize(op, parts, split_every)
    dsk, name, width = {}, parts.name, x.numblocks[0]
    level, tail = 0, (0,)             # parts' keys have the "d" index
    while width > 1:
        level += 1
        merged = f"knn-merge{level}-{token}"
        for i in range(qg.numblocks[0]):
            for g in range(0, width, split_every):
                group = range(g, min(width, g + split_every))
                dsk[(merged, i, g // split_every)] = (
                    _merge_parts, [(name, i, m) + tail for m in group], k)
        name, width, tail = merged, -(-width // split_every), ()
    outs = []
    for pos, dtype in ((0, x.dtype), (1, np.dtype(np.int64))):
        out = f"knn-{'dist' if pos == 0 else 'idx'}-{token}"
        layer = {(out, i, 0): (operator.getitem, (name, i, 0) + tail, pos)
                 for i in range(qg.numblocks[0])}
        layer.update(dsk)
        graph = HighLevelGraph.from_collections(out, layer, dependencies=[parts])
        res = da.Array(graph, out, chunks=(qg.chunks[0], (k,)), meta=np.empty((0, 0), dtype))
        outs.append(res if qg.chunks[0] == q.chunks[0] else res.rechunk({0: q.chunks[0]}))
    return tuple(outs) if return_distances else outs[1]
