"""Memory for large CPU results: freed outputs are reused, already faulted in.

Every page of a new array is faulted in and zeroed by the operating system on
first touch; for results of tens of MB that costs as much as the op itself
on many machines (a (16, 32, 128, 128) float32 grid_sample: about 7 ms of
work, 8-20 ms more to fault in its 33 MB). fastinterp's CPU results of at
least 1 MiB are therefore allocated through a NumPy memory handler
(kernels/cpu/_outcache.pyx) that keeps freed blocks, oldest evicted first,
up to a byte limit, and hands them to the next result of the same size.
The arrays are ordinary NumPy arrays owning their data; memory that other
code allocates is untouched.

The limit is ``FASTINTERP_OUTPUT_CACHE_MB`` (default 128) MiB, changed at run
time with :func:`set_output_cache` (0 keeps nothing and frees what is kept).
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from typing import Any

import numpy as np

from ._config import fork_safe_lock

__all__ = ["empty", "output_cache_info", "set_output_cache"]

DEFAULT_LIMIT_MB = 128
#: Smaller results come from NumPy's own allocator (glibc reuses such blocks).
MIN_CACHED_BYTES = 1 << 20

_lock = fork_safe_lock()
_cache: Any = None
_enabled = True


def _limit_from_env() -> int:
    text = os.environ.get("FASTINTERP_OUTPUT_CACHE_MB", "").strip()
    if not text:
        return DEFAULT_LIMIT_MB << 20
    try:
        mb = float(text)
    except ValueError:
        mb = -1.0
    if not (0 <= mb < 2 ** 40):
        raise ValueError("FASTINTERP_OUTPUT_CACHE_MB must be a number of MiB >= 0; "
                         f"got {text!r}.")
    return int(mb * (1 << 20))


def _module(limit: int | None = None) -> Any:
    """The cache module, set up on first use with ``limit`` bytes (default: the
    environment's, whose bad value is a ValueError until a limit is set)."""
    global _cache, _enabled
    if _cache is None:
        with _lock:
            if _cache is None:
                from ._cpu import _outcache
                limit = _limit_from_env() if limit is None else limit
                _outcache.set_limit(limit)
                _enabled = limit > 0
                _cache = _outcache
    return _cache


@functools.lru_cache(maxsize=None)
def machine_bytes() -> int | None:
    """This machine's RAM plus swap in bytes (Linux ``/proc/meminfo``), else None."""
    try:
        with open("/proc/meminfo") as f:
            kb = {line.split(":")[0]: int(line.split()[1]) for line in f
                  if line.startswith(("MemTotal:", "SwapTotal:"))}
        return (kb["MemTotal"] + kb.get("SwapTotal", 0)) << 10
    except (OSError, ValueError, KeyError, IndexError):
        return None


def check_fits(op: str, what: str, nbytes: int) -> None:
    """A ``MemoryError`` naming ``what`` when ``nbytes`` exceed the machine's RAM and swap.

    With the operating system's overcommit, an allocation that big may succeed and the
    process be killed while filling it: refusing first is the only clean error.
    """
    total = machine_bytes()
    if total is not None and nbytes > total:
        raise MemoryError(f"{op}: {what} would need {nbytes / 2**30:.1f} GiB, more than this "
                          f"machine's memory and swap ({total / 2**30:.1f} GiB).")
    if getattr(_checking, "only", False):
        raise ChecksPassed


class ChecksPassed(Exception):
    """Raised by :func:`check_fits` within :func:`checks_only` when the memory fits."""


_checking = threading.local()


@contextlib.contextmanager
def checks_only():
    """Within the block, an op stops at its memory check (:func:`check_fits`): with its
    ``MemoryError``, or, when the memory fits, with :class:`ChecksPassed`, which the block
    swallows. An op called there on zero-stride dummies of the real shapes checks its
    arguments and its memory need as it would for real arrays, and computes nothing (the
    ops check before they allocate or compute); the JAX frontend checks so when a
    function is traced. Only for calls that reach a memory check."""
    _checking.only = True
    try:
        yield
    except ChecksPassed:
        pass
    finally:
        _checking.only = False


def empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` for a CPU result; large ones come from the cache."""
    dtype = np.dtype(dtype)
    if math.prod(shape) * dtype.itemsize < MIN_CACHED_BYTES:
        return np.empty(shape, dtype)
    cache = _module()
    return cache.empty(shape, dtype) if _enabled else np.empty(shape, dtype)


def set_output_cache(max_bytes: int) -> int:
    """Set how much freed result memory fastinterp keeps for reuse.

    fastinterp's CPU results of 1 MiB or more come from a cache of freed
    result memory: an op called in a loop gets back the block its previous
    result occupied, without the operating system faulting in and zeroing
    it again. This sets the most bytes kept (blocks beyond it are freed,
    oldest first); 0 keeps none. The default is ``FASTINTERP_OUTPUT_CACHE_MB``
    MiB, or 128 MiB.

    Parameters
    ----------
    max_bytes : int
        The limit in bytes, in [0, 2**62) (a ValueError otherwise; a TypeError for a
        value that is not an int).

    Returns
    -------
    int
        The previous limit.

    Examples
    --------
    >>> import fastinterp as fi
    >>> old = fi.set_output_cache(0)          # keep nothing; frees what is kept
    >>> fi.output_cache_info()["kept_bytes"]
    0
    >>> _ = fi.set_output_cache(old)
    """
    global _enabled
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)):
        raise TypeError(f"set_output_cache: max_bytes must be an int; got "
                        f"{type(max_bytes).__name__} {max_bytes!r}.")
    if not 0 <= max_bytes < 2 ** 62:
        raise ValueError(f"set_output_cache: max_bytes must be in [0, 2**62); got {max_bytes}.")
    try:
        cache = _module()
    except ValueError:          # a bad FASTINTERP_OUTPUT_CACHE_MB: this limit replaces it
        cache = _module(int(max_bytes))
    with _lock:
        old = cache.set_limit(int(max_bytes))
        _enabled = max_bytes > 0
    return int(old)


def output_cache_info() -> dict[str, int]:
    """What the result-memory cache holds now (see :func:`set_output_cache`).

    Returns
    -------
    dict
        ``limit`` and ``kept_bytes`` (bytes), ``kept_blocks``, and ``hits`` /
        ``misses``: how many cached allocations reused a kept block or took
        new memory since the process started.

    Examples
    --------
    >>> import fastinterp as fi
    >>> sorted(fi.output_cache_info())
    ['hits', 'kept_blocks', 'kept_bytes', 'limit', 'misses']
    """
    limit, kept, blocks, hits, misses = _module().info()
    return {"limit": limit, "kept_bytes": kept, "kept_blocks": blocks,
            "hits": hits, "misses": misses}
