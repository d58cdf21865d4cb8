"""Call plans: repeated calls with one signature skip the argument checks.

A small call (one 32 x 32 image, a few rows) spends most of its time in
argument checks, layout resolution and table look-ups, not in its kernel.
An op may therefore remember, for each *signature* of a successful call on
NumPy arrays (every array's type, shape, dtype, contiguity and writeability,
every other argument's exact type and value), a *plan*: a function of the
arrays alone that allocates the result and runs the kernel exactly as the
full call did.
The next call with the same signature runs the plan directly.

What makes this safe:

- only signatures made of NumPy arrays and plain scalars (and tuples of
  them) are keyed; anything else (lists, array-likes, DLPack tensors)
  takes the full path every time, and so do calls with ``out=`` except
  lerp's (whose plan checks the overlap of ``out`` at every call);
- a key holds each value's exact type, so ``True`` and ``1``, ``16`` and
  ``16.0``, ``np.int64(16)`` and ``16`` are different signatures, and
  floats are keyed by their exact value (``float.hex``: ``-0.0`` is not
  ``0.0``);
- a plan is stored only after the full path succeeded for its signature,
  so every error is raised by the full path, with its message;
- a plan looks its kernel up in the registry on every call, so kernels
  registered or removed later (plugins) and :func:`fastinterp.last_kernel`
  behave as on the full path; thread counts are decided at every call too.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._config import fork_safe_lock

__all__ = ["MAX_PLANS", "MAX_PLAN_BYTES", "clear", "find", "key", "lookup", "store"]

#: Plans kept at most (all ops together); the table is emptied when it fills.
MAX_PLANS = 256
#: The most bytes of arrays (tap tables, say) one plan may hold: plans are for small
#: calls, where the checks cost as much as the kernel; a large call gains nothing
#: measurable from one, and its tables stay in their own byte-bounded caches.
MAX_PLAN_BYTES = 32 << 10

_plans: dict[tuple, Callable[..., Any]] = {}
_lock = fork_safe_lock()
_SCALARS = (int, str, bool, type(None), np.int64, np.int32, np.intp, np.bool_)


def _item(v) -> Any:
    """One argument's part of a key, or raises TypeError (not keyable)."""
    t = type(v)
    if t is str or v is None:
        return v
    if t is float:
        return (float, v.hex())     # exact: -0.0 is not 0.0
    if t is tuple:
        return (tuple, *map(_item, v))
    if t in _SCALARS:
        return (t, v)               # True is not 1, np.int64(2) is not 2
    raise TypeError


def key(op: str, arrays: tuple, params: tuple) -> tuple | None:
    """The signature of a call of ``op`` on ``arrays`` (NumPy arrays, or None for an
    absent optional array) with the other arguments ``params``; None when the call
    cannot be keyed (it then always takes the full path)."""
    parts: list[Any] = [op]
    for a in arrays:
        if a is None:
            parts.append(None)
        elif (type(a) is np.ndarray and a.dtype.metadata is None   # metadata: never equal
              and a.dtype.isnative):           # byte-swapped: converted by the full path
            f = a.flags
            parts.append((a.shape, a.dtype, f.c_contiguous, f.f_contiguous, f.writeable))
        else:
            return None
    try:
        parts.extend(map(_item, params))
    except TypeError:
        return None
    return tuple(parts)


def find(op: str, arrays: tuple, params: tuple) -> tuple[tuple | None, Any]:
    """``(key, plan)`` of a call (see :func:`key`): the plan stored for it, or None."""
    k = key(op, arrays, params)
    return k, lookup(k)


def lookup(k: tuple | None) -> Callable[..., Any] | None:
    """The plan stored for signature ``k``, or None."""
    return None if k is None else _plans.get(k)


def store(k: tuple | None, plan: Callable[..., Any]) -> None:
    """Remember ``plan`` for signature ``k`` (nothing when ``k`` is None)."""
    if k is None:
        return
    with _lock:
        if len(_plans) >= MAX_PLANS:
            _plans.clear()
        _plans[k] = plan


def clear() -> None:
    """Forget every plan."""
    with _lock:
        _plans.clear()
