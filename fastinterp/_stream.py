"""Exact kNN over a database read in row blocks: merging per-block top-k lists.

Used by :func:`fastinterp.knn` for memory-mapped, zarr or h5py databases (or
when ``progress`` is asked for) and by ``fastinterp.dask.knn``.

Why block results merge exactly: ``knn`` returns, for each query, the rows
sorted by their float64 direct-difference distance and then by index, and
its distances are those direct differences rounded to the dtype. Neither
depends on the other rows of the database (the centring vector only steers
the GEMM candidate search, whose candidate set is proven to contain the
exact answer), so the top-k of each block lists the block's rows in the
global order, with the global call's distances bit for bit. Merging needs
the float64 distance for float32 data (two rows whose float64 distances
differ can round to one float32 value); the merge key is (distance in the
dtype, float64 distance, index), and that float64 distance is recomputed
here with the kernel's own summation (``listed_sqdiff``), so it is the
very key the kernel sorted by: merged lists order exactly as one call on
the whole database, near-ties included.
"""
from __future__ import annotations

import math
import mmap
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._dispatch import _native

# A block of the database this large (bytes) is read, searched and dropped at a time.
BLOCK_BYTES = 64 << 20


def is_out_of_core(x) -> bool:
    """Whether ``x`` is a database better streamed than loaded: a memmap, zarr or h5py array."""
    if isinstance(x, np.memmap):
        return True
    module = type(x).__module__.split(".")[0]
    return module in ("zarr", "h5py") and hasattr(x, "shape") and hasattr(x, "dtype")


#: The index of a missing candidate (a block with fewer than k rows within the bound):
#: with distance +inf it sorts after every row of finite distance.
MISSING = np.iinfo(np.int64).max


def block_candidates(xb, queries, k, offset, bound=None):
    """(distances, global indices, float64 distances) of the top-min(k, rows) rows of block ``xb``.

    ``xb`` is a NumPy (rows, D) block starting at global row ``offset``.
    With ``bound`` (Q,) (the float64 k-th distance of each query among rows
    searched before), only the rows within it are needed: a query with fewer
    gets those, then missing entries (+inf, index :data:`MISSING`), which the
    k rows behind the bound outrank in :func:`merge`.
    """
    from .distance import knn, knn_within
    xb, queries = _native(xb), _native(queries)      # the listed-rows kernel's byte order
    kb = min(k, xb.shape[0])
    if bound is None:
        d, i = knn(xb, queries, kb)
    else:
        d, i = knn_within(xb, queries, kb, bound)
    missing = i < 0
    d64 = _direct64(xb, queries, np.where(missing, 0, i))
    i = i + offset
    if missing.any():
        d64[missing] = np.inf
        i[missing] = MISSING
    return d, i, d64


def kth_bound(best, k):
    """The float64 k-th distance of each query in merged candidates ``best`` (Q,):
    the bound of :func:`block_candidates` for the rows not yet searched; None while
    fewer than k rows were searched (no bound yet)."""
    if best[2].shape[1] < k:
        return None
    return np.ascontiguousarray(best[2][:, k - 1])


def _direct64(xb, queries, idx):
    """knn's float64 sort key, |q - x|^2 summed as the kernel sums it, for each
    (query, listed row): the kernel's own distances, bit for bit."""
    from .distance import GEMM_WORK_PER_THREAD, _cpu, threads_for
    out = np.empty(idx.shape, np.float64)
    nthreads = threads_for(idx.size * max(1, xb.shape[1]), GEMM_WORK_PER_THREAD)
    _cpu().listed_sqdiff(out, np.ascontiguousarray(xb), np.ascontiguousarray(queries),
                         np.ascontiguousarray(idx, dtype=np.int64), nthreads)
    return out


def merge(parts, k):
    """Merge candidate triples ``(dist, index, dist64)`` (each (Q, k_i)) into the top ``k``.

    Sorted by distance in the dtype, then the float64 distance, then the
    index (NaN after every number); the tie rule of :func:`fastinterp.knn`.
    """
    if len(parts) == 1 and parts[0][0].shape[1] <= k:
        return parts[0]
    d = np.concatenate([p[0] for p in parts], axis=1)
    i = np.concatenate([p[1] for p in parts], axis=1)
    d64 = np.concatenate([p[2] for p in parts], axis=1)
    order = np.lexsort((i, d64, d), axis=-1)[:, :k]
    take = (lambda a: np.take_along_axis(a, order, axis=1))
    return take(d), take(i), take(d64)


class _Progress:
    """tqdm when installed, else one plain line rewritten on stderr."""

    def __init__(self, total, desc):
        self.total, self.done, self.desc = total, 0, desc
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self.bar, self.start = None, time.perf_counter()
        else:
            self.bar = tqdm(total=total, desc=desc, unit="rows", unit_scale=True)

    def update(self, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        sys.stderr.write(f"\r{self.desc}: {self.done}/{self.total} rows "
                         f"({100 * self.done / max(self.total, 1):.0f}%, {rate:,.0f} rows/s)")
        sys.stderr.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        else:
            sys.stderr.write("\n")


class _Reader:
    """Reads a database's row blocks: memory maps without copying, zarr into reused buffers.

    A C-contiguous ``np.memmap`` gives its blocks as views of the mapping: the
    background thread asks the kernel to read the next block's pages and map
    them (``madvise``), so the search neither copies the rows nor takes page
    faults, and a cold page cache is read ahead of the search. Once searched,
    a block's pages are unmapped from the process (they stay in the page
    cache), so the resident memory stays about two blocks. A zarr array is
    read into one of two buffers used in turn (``out=``): a fresh block
    would cost the page faults of a new allocation on every read, as much
    CPU time as the read itself. Other arrays (h5py, a non-contiguous
    memmap) are read by slicing into a copy.
    """

    def __init__(self, x, block_rows):
        self.x = x
        self.mapped = (isinstance(x, np.memmap) and x.flags.c_contiguous
                       and _madvise is not None)
        # Only a shared file mapping may be unmapped: a private (copy-on-write) one would
        # lose its changes, and the memory of a memmap object that maps no file (a
        # memmap's copy, an array viewed as np.memmap: no _mmap, mode None) would be zeroed.
        self.release_ok = (self.mapped and getattr(x, "_mmap", None) is not None
                           and getattr(x, "mode", None) in ("r", "r+", "w+"))
        self.into = None if self.mapped else _zarr_into(x)
        self.shape = (min(block_rows, x.shape[0]),) + tuple(x.shape[1:])
        self.buffers = [None, None]

    def read(self, s, e, slot):
        """Rows [s, e) of x; ``slot`` (0 or 1) names the buffer that may be overwritten."""
        if self.mapped:
            block = self.x[s:e].view(np.ndarray)          # a plain view: not out-of-core again
            _advise(block, _POPULATE_READ, _WILLNEED)
            return block
        if self.into is None:
            return np.ascontiguousarray(self.x[s:e])
        if self.buffers[slot] is None:
            self.buffers[slot] = np.empty(self.shape, self.x.dtype)
        block = self.buffers[slot][:e - s]
        self.into(s, e, block)
        return block

    def release(self, block):
        if self.release_ok:
            _advise(block, _DONTNEED)


def _zarr_into(x):
    """``into(s, e, out)`` reading rows [s, e) of zarr array ``x`` into ``out``, or None."""
    if type(x).__module__.split(".")[0] != "zarr" or not hasattr(x, "get_basic_selection"):
        return None
    try:
        from zarr.core.buffer.cpu import NDBuffer        # zarr 3 takes its own buffer type
        wrap = NDBuffer.from_numpy_array
    except ImportError:
        wrap = (lambda out: out)                          # zarr 2 takes the ndarray
    return lambda s, e, out: x.get_basic_selection(slice(s, e), out=wrap(out))


def _load_madvise():
    try:
        import ctypes
        import ctypes.util
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


# Linux values; elsewhere (no madvise, or other numbers) the advice is skipped
_madvise = _load_madvise() if sys.platform.startswith("linux") else None
_WILLNEED, _DONTNEED, _POPULATE_READ = 3, 4, 22
_PAGE = mmap.PAGESIZE


def _advise(block, *advice):
    """madvise the pages inside ``block`` with the first of ``advice`` the kernel accepts."""
    if block.size == 0:
        return
    start = block.ctypes.data
    lo = -(-start // _PAGE) * _PAGE          # pages wholly inside the block only
    hi = (start + block.nbytes) // _PAGE * _PAGE
    if hi <= lo:
        return
    for a in advice:          # MADV_POPULATE_READ needs Linux 5.14; WILLNEED is older
        if _madvise(lo, hi - lo, a) == 0:
            return


def _block_bounds(n, block_rows, first_rows):
    """[start, end) of each block: a short first block (its read is not overlapped), then
    blocks of ``block_rows``."""
    bounds, s = [], 0
    size = min(first_rows, block_rows)
    while s < n:
        bounds.append((s, min(n, s + size)))
        s, size = s + size, block_rows
    return bounds


def knn_stream(x, queries, k, return_distances=True, progress=False, block_rows=None):
    """:func:`fastinterp.knn` over a database read block by block (see the module docstring).

    Memory: two blocks of ``block_rows`` rows (default: about BLOCK_BYTES;
    the next is read in a background thread while one is searched) plus
    O(Q k) candidates, whatever the size of ``x``. The first block is short
    (one zarr chunk, or an eighth of a block), since the search waits for its
    read. The result equals ``fastinterp.knn`` on the whole array.
    Queries with leading (batch) dimensions all search the one database.
    """
    if not hasattr(x, "shape"):                        # a nest of lists, with progress=True
        x = np.asarray(x)
    if len(x.shape) != 2:
        raise ValueError(f"knn: a database read in blocks (a memmap, zarr or h5py array, or "
                         f"progress=True) must have shape (N, D); got {tuple(x.shape)} (a batch "
                         f"of databases is searched in memory, without progress).")
    from .distance import check_k, knn
    knn(np.zeros((1, x.shape[1]), x.dtype), queries, 1)   # the queries' checks, as in memory
    queries = np.asarray(queries)
    lead = queries.shape[:-1]                          # (..., Q): each query's place
    queries = np.ascontiguousarray(queries.reshape(math.prod(lead), queries.shape[-1]))
    n = x.shape[0]
    k = check_k("knn", k, n)
    if queries.shape[0] == 0:                          # no query: nothing is read
        dtype = np.dtype(x.dtype).newbyteorder("=")      # as the kernels' results
        d, i = np.empty(lead + (k,), dtype), np.empty(lead + (k,), np.int64)
        return (d, i) if return_distances else i
    if block_rows is None:
        row_bytes = max(1, x.shape[1] * np.dtype(x.dtype).itemsize)
        block_rows = max(k, BLOCK_BYTES // row_bytes)
    first_rows = max(k, block_rows // 8)
    chunks = getattr(x, "chunks", None)
    if isinstance(chunks, tuple) and chunks and isinstance(chunks[0], int) and chunks[0] > 0:
        block_rows = max(chunks[0], block_rows - block_rows % chunks[0])   # whole zarr chunks
        first_rows = chunks[0] * max(1, -(-first_rows // chunks[0]))
    reader = _Reader(x, block_rows)
    bar = _Progress(n, "knn") if progress else None
    best = None
    bounds = _block_bounds(n, block_rows, first_rows)
    # the next block is read while this one is searched (one block ahead: bounded memory)
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            pending = pool.submit(reader.read, *bounds[0], 0)
            for b, (s, e) in enumerate(bounds):
                xb = pending.result()
                if b + 1 < len(bounds):     # the other buffer: block b - 1 is searched
                    pending = pool.submit(reader.read, *bounds[b + 1], (b + 1) % 2)
                part = block_candidates(xb, queries, k, s,
                                        None if best is None else kth_bound(best, k))
                best = part if best is None else merge([best, part], k)
                if bar is not None:
                    bar.update(e - s)
                reader.release(xb)
                del xb
        finally:
            if bar is not None:
                bar.close()
    d, i = (a.reshape(lead + a.shape[-1:]) for a in best[:2])
    return (d, i) if return_distances else i
