"""Graph building shared by the Dask frontend: batch-chunked calls, block keys, metas."""
from __future__ import annotations

import contextlib
import functools
import math
import operator
import re

import numpy as np
import dask.array as da
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .._dispatch import _to_numpy, array_kind
from .._validate import check_not_number, shape_str


def as_dask(value, op="fastinterp", name="argument"):
    """``value`` as a dask array (NumPy and other arrays are wrapped with one chunk); a
    string, a list holding non-numbers or a Python number is the in-memory op's TypeError
    naming ``op`` and the argument ``name``."""
    if isinstance(value, da.Array):
        return value
    check_not_number(op, name, value)
    if not hasattr(value, "__array_function__"):     # lists, DLPack tensors (bfloat16 too)
        value = _to_numpy(value, array_kind(value) or "numpy", op, name)
    return da.from_array(value, chunks=-1)


def unit_axes_whole(arr):
    """``arr`` with each axis of length 1 in one chunk. Dask broadcasts a length-1 axis
    block by block: one split into empty chunks and its row, ``(0, 1)``, came out as two
    rows (resize to one row can leave such chunks)."""
    axes = {ax: -1 for ax, (n, c) in enumerate(zip(arr.shape, arr.chunks))
            if n == 1 and len(c) > 1}
    return arr.rechunk(axes) if axes else arr


def is_array(value) -> bool:
    return isinstance(value, da.Array) or hasattr(value, "__array_function__")


def single_chunk(arr):
    """``arr`` rechunked to one block; its only key."""
    arr = arr.rechunk(tuple(-1 for _ in arr.shape)) if arr.npartitions > 1 else arr
    return arr, _first_key(arr.__dask_keys__())


def _first_key(keys):
    while isinstance(keys, list):
        keys = keys[0]
    return keys


def check_known_sizes(op, name, arr, axes):
    """Refuse unknown chunk sizes (NaN, after boolean indexing, say) along ``axes`` of
    ``arr``, naming the argument and saying how to resolve them."""
    for ax in axes:
        if math.isnan(arr.shape[ax]):
            raise ValueError(f"{op}: {name} has unknown chunk sizes along axis {ax} (after "
                             f"boolean indexing, say); call {name}.compute_chunk_sizes() "
                             f"first.")


def empty_like_probe(a):
    """A zero-length-batch NumPy stand-in for array ``a`` (for meta probes)."""
    return np.zeros((0,) + tuple(a.shape[1:]), dtype=a.dtype)


@contextlib.contextmanager
def callers_shapes(*pairs):
    """Errors raised inside (ValueError, TypeError: the in-memory op's checks on
    stand-ins) name the caller's shapes: ``pairs`` of (stand-in, the caller's array),
    each stand-in's shape in the message replaced by its caller's array's.

    A single image batched by ``as_batch`` is paired with the image as passed.
    """
    shown = {}
    for stand_in, real in pairs:           # (a stand-in shape naming two shapes is left)
        key, value = shape_str(stand_in.shape), shape_str(real.shape)
        shown[key] = value if shown.get(key, value) == value else None
    shown = {k: v for k, v in shown.items() if v not in (None, k)}
    try:
        yield
    except (ValueError, TypeError) as e:
        if shown and e.args and isinstance(e.args[0], str):
            pattern = "|".join(re.escape(k) for k in sorted(shown, key=len, reverse=True))
            e.args = (re.sub(pattern, lambda m: shown[m.group(0)], e.args[0]),) + e.args[1:]
        raise


def probe(fn, batch, consts=None, shown=None):
    """``fn(**stand-ins, **consts)``: the ``batch`` arrays (name -> array) replaced by
    zero-length-batch NumPy stand-ins (the in-memory op's checks, and its outputs'
    dtypes and trailing shapes).

    Its errors are the in-memory op's on the caller's shapes: on an error, ``fn``
    runs again on zero arrays of the full shapes (``np.zeros``: pages never
    written take no memory; skipped with unknown sizes or when the address space
    cannot hold them), whose error, raised by the same check before any work,
    names every shape as given (one derived from N too); in the message, each
    stand-in's shape is then replaced by that of its caller's array, ``shown``
    (name -> the array as passed: a single image before ``as_batch``), by default
    the batch array itself.
    """
    consts = consts or {}
    op = getattr(fn, "func", fn).__name__
    for k, a in batch.items():      # axes past the batch axis, as the caller's array has them
        given = (shown or {}).get(k, a)
        check_known_sizes(op, k, given, range(int(len(given.shape) == a.ndim), len(given.shape)))
    stand_ins = {k: empty_like_probe(a) for k, a in batch.items()}
    try:
        result = fn(**stand_ins, **consts)
    except (ValueError, TypeError, MemoryError):    # (a MemoryError names the full size)
        in_memory_error(fn, batch, consts, shown)
        shown = dict(batch, **(shown or {}))
        with callers_shapes(*((stand_ins[k], shown[k]) for k in batch)):
            raise
    if any(0 in np.shape(v) for v in consts.values() if is_array(v)):
        in_memory_error(fn, batch, consts, shown)   # an empty argument broadcasts against an
    return result                                   # empty batch, maybe not against N rows


def in_memory_error(fn, batch, consts=None, shown=None):
    """Raise the error ``fn`` (the in-memory op) gives on zero arrays of the ``batch``
    arrays' full shapes, naming the caller's shapes (``shown`` as for :func:`probe`);
    return quietly when it gives none or the stand-ins cannot be made."""
    whole = _full_stand_ins(batch)
    if whole is None:
        return
    shown = dict(batch, **(shown or {}))
    with callers_shapes(*((whole[k], shown[k]) for k in batch)):
        fn(**whole, **(consts or {}))


# The rerun of a failed probe on full-size zero arrays is skipped beyond this size:
# should an op ever refuse only the zero-batch stand-ins, it would compute them all.
_FULL_PROBE_BYTES = 1 << 28


def _full_stand_ins(batch):
    """Zero NumPy arrays of the ``batch`` arrays' shapes (None for unknown sizes, beyond
    _FULL_PROBE_BYTES in all, or when the address space cannot hold them)."""
    if any(math.isnan(d) for a in batch.values() for d in a.shape):
        return None
    if sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in batch.values()) \
            > _FULL_PROBE_BYTES:
        return None
    try:
        return {k: np.zeros(a.shape, a.dtype) for k, a in batch.items()}
    except MemoryError:
        return None


def meta_of(result):
    """The dask ``meta`` (an empty NumPy array of the right ndim and dtype) of a probe result."""
    return np.empty((0,) * result.ndim, dtype=result.dtype)


def _call(fn, names, blocks):
    return fn(**dict(zip(names, blocks)))


def batched(op, fn, batch, consts=None, n_out=1, per_block=(), shown=None):
    """Call ``fn(**batch_blocks, **consts)`` once per block along axis 0 (the batch N).

    ``batch`` maps argument names to arrays whose axis 0 is the batch: they
    are rechunked to the first one's N chunks and to single chunks along every
    other axis. ``consts`` (small arrays, scalars, options) reach every block
    whole. ``fn`` is first called on zero-length batches (NumPy), which checks
    every argument now and gives the outputs' dtypes and trailing shapes (its
    errors name the caller's shapes: ``shown`` as for :func:`probe`).
    Returns one dask array (or a tuple of ``n_out``, None where ``fn`` returns
    None), chunked along N like the first batch argument; outputs listed in
    ``per_block`` have one row per block instead (partial results to reduce).
    """
    consts = dict(consts or {})
    names = list(batch)
    arrays = [as_dask(batch[k], op, k) for k in names]
    for name, arr in zip(names, arrays):
        if arr.ndim == 0:
            raise ValueError(f"{op}: {name} must have a batch axis 0; got a 0-d array.")
    n = arrays[0].shape[0]
    unknown = [name for name, arr in zip(names, arrays) if math.isnan(arr.shape[0])]
    if unknown and len(arrays) > 1:
        raise ValueError(f"{op}: {unknown[0]} has unknown chunk sizes along the batch axis 0 "
                         f"(after boolean indexing, say), so its rows cannot be matched with "
                         f"the other arguments'; call {unknown[0]}.compute_chunk_sizes() first.")
    for name, arr in zip(names, arrays):        # (rows are matched above, or refused)
        check_known_sizes(op, name, arr, range(1, arr.ndim))
    for name, v in consts.items():
        if isinstance(v, da.Array):
            check_known_sizes(op, name, v, range(v.ndim))
    probe_consts = {k: (np.zeros(v.shape, v.dtype) if isinstance(v, da.Array) else v)
                    for k, v in consts.items()}
    for name, arr in zip(names, arrays):
        if arr.shape[0] != n and not unknown:
            in_memory_error(fn, dict(zip(names, arrays)), probe_consts, shown)
            raise ValueError(f"{op}: {name} must have {n} rows along the batch axis 0 (as "
                             f"{names[0]}); got shape {tuple(arr.shape)}.")
    if n == 0 and arrays[0].numblocks[0] > 1:
        # no rows: one empty block (dask leaves an empty array's empty blocks as they are
        # when asked for more of them, so the other arguments could not follow)
        arrays[0] = arrays[0].rechunk(((0,),) + tuple(-1 for _ in arrays[0].shape[1:]))
    nchunks = arrays[0].chunks[0]
    # (an array of unknown batch chunks is alone here, and already split along N only)
    arrays = [a if a.chunks[0] == nchunks and a.numblocks[1:] == (1,) * (a.ndim - 1) else
              a.rechunk((nchunks,) + tuple(-1 for _ in a.shape[1:])) for a in arrays]
    result = probe(fn, dict(zip(names, arrays)), probe_consts, shown)
    probes = result if n_out > 1 else (result,)
    # array constants travel as graph keys (one block each), the rest bound to fn
    const_arrays = {k: single_chunk(v) for k, v in consts.items() if isinstance(v, da.Array)}
    bound = functools.partial(fn, **{k: v for k, v in consts.items() if k not in const_arrays})
    deps = list(arrays) + [arr for arr, _ in const_arrays.values()]
    token = tokenize(op, fn, names, arrays, consts)
    call = f"{op}-call-{token}"
    dsk = {}
    all_names = names + list(const_arrays)
    for i in range(len(nchunks)):
        blocks = [(a.name, i) + (0,) * (a.ndim - 1) for a in arrays]
        blocks += [key for _, key in const_arrays.values()]
        dsk[(call, i)] = (_call, bound, all_names, blocks)
    outs = []
    for j, pr in enumerate(probes):
        if pr is None:
            outs.append(None)
            continue
        name = f"{op}-{j}-{token}" if n_out > 1 else f"{op}-{token}"
        if n_out > 1:
            layer = {(name, i) + (0,) * (pr.ndim - 1): (operator.getitem, (call, i), j)
                     for i in range(len(nchunks))}
        else:
            layer = {(name, i) + (0,) * (pr.ndim - 1): (call, i) for i in range(len(nchunks))}
        layer.update(dsk)
        graph = HighLevelGraph.from_collections(name, layer, dependencies=deps)
        lead = (1,) * len(nchunks) if j in per_block else nchunks
        chunks = (lead,) + tuple((s,) for s in pr.shape[1:])
        outs.append(da.Array(graph, name, chunks=chunks, meta=meta_of(pr)))
    return tuple(outs) if n_out > 1 else outs[0]


