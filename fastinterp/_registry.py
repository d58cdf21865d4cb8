"""The kernel registry: ``(op, backend, dtype) -> kernel``.

Built-in Cython and numba.cuda kernels and plugin kernels all register here
the same way. Registrations stack: a plugin registering an existing key
overrides the built-in until it is unregistered, which restores the one
below. A kernel may be given as a callable or as a lazy ``"module:attr"``
string, imported on first use (this keeps ``import fastinterp`` from
importing numba).
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Union

import numpy as np

from ._config import fork_safe_lock
from ._fpenv import ieee_subnormals

__all__ = ["KernelEntry", "register", "register_builtin", "unregister", "lookup",
           "lookup_below", "entries", "last_kernel", "BUILTIN"]

BUILTIN = "builtin"
BACKENDS = ("cpu", "cuda")
#: The dtypes kernels are looked up with (float16 and bfloat16 are computed in float32).
DTYPES = ("uint8", "float32", "float64")

KernelRef = Union[Callable[..., Any], str]


@dataclass(frozen=True)
class KernelEntry:
    """One registered kernel.

    Attributes
    ----------
    op, backend, dtype : str
        The key, e.g. ``("lerp", "cpu", "float32")``.
    kernel : callable or str
        The callable, or a lazy ``"module:attr"`` reference.
    source : str
        ``"builtin"`` or the name of the plugin that registered it.
    """

    op: str
    backend: str
    dtype: str
    kernel: KernelRef
    source: str = BUILTIN

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.op, self.backend, self.dtype)

    def resolve(self) -> Callable[..., Any]:
        """The callable, importing a lazy ``"module:attr"`` reference."""
        if callable(self.kernel):
            return self.kernel
        module, _, attr = self.kernel.partition(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
        return fn


_DTYPE_KEYS: dict[Any, str] = {}


def _dtype_key(dtype: Any) -> str:
    """``"float32"`` for np.float32, np.dtype("float32") or "float32" alike."""
    try:
        return _DTYPE_KEYS[dtype]
    except (KeyError, TypeError):
        pass
    try:
        key = np.dtype(dtype).name
    except TypeError:
        return str(dtype)
    try:
        _DTYPE_KEYS[dtype] = key
    except TypeError:  # unhashable
        pass
    return key


_lock = fork_safe_lock(reentrant=True)
_table: dict[tuple[str, str, str], list[KernelEntry]] = {}
_resolved: dict[KernelEntry, Callable[..., Any]] = {}
_last = threading.local()


def register(op: str, backend: str, dtype: str, kernel: KernelRef,
             source: str = BUILTIN) -> KernelEntry:
    """Register ``kernel`` for ``(op, backend, dtype)``, on top of any earlier one."""
    if backend not in BACKENDS:
        raise ValueError(f"register: backend must be one of {BACKENDS}; got {backend!r}.")
    key = _dtype_key(dtype)
    if key not in DTYPES:
        raise ValueError(f"register: dtype must be one of {DTYPES}; got {key!r}.")
    if not callable(kernel) and not (isinstance(kernel, str)
                                     and all(kernel.partition(":")[::2])):
        raise TypeError(f"register: kernel must be a callable or a 'module:attr' string; "
                        f"got {type(kernel).__name__} {kernel!r}.")
    entry = KernelEntry(op, backend, key, kernel, source)
    with _lock:
        _table.setdefault(entry.key, []).append(entry)
    return entry


def register_builtin(op: str, cpu: KernelRef | None = None, cuda: str | None = None,
                     dtypes: Iterable[str] = ("float32", "float64")) -> None:
    """Register a built-in op's kernels for every float dtype.

    ``cpu`` is the CPU kernel; ``cuda`` a lazy ``"fastinterp._cuda.<family>:<fn>"``
    reference (so that importing fastinterp never imports numba).
    """
    for dtype in dtypes:
        if cpu is not None:
            register(op, "cpu", dtype, cpu)
        if cuda is not None:
            register(op, "cuda", dtype, cuda)


def unregister(source: str, op: str | None = None) -> int:
    """Remove every entry registered by ``source`` (optionally only for ``op``).

    Returns the number of entries removed; the entries below them apply again.
    """
    removed = 0
    with _lock:
        for key in list(_table):
            if op is not None and key[0] != op:
                continue
            kept = [e for e in _table[key] if e.source != source]
            removed += len(_table[key]) - len(kept)
            for e in _table[key]:
                if e.source == source:
                    _resolved.pop(e, None)
            if kept:
                _table[key] = kept
            else:
                del _table[key]
    return removed


def entries(op: str | None = None) -> list[KernelEntry]:
    """The active (top-most) entry for every key, optionally for one op."""
    with _lock:
        return [stack[-1] for key, stack in sorted(_table.items())
                if op is None or key[0] == op]


def has_op(op: str) -> bool:
    """True if any kernel is registered for ``op``."""
    with _lock:
        return any(key[0] == op for key in _table)


def lookup(op: str, backend: str, dtype: Any) -> Callable[..., Any]:
    """The active kernel for ``(op, backend, dtype)``; records it for last_kernel().

    A CPU kernel comes back wrapped so that it runs with IEEE 754 subnormals
    (:func:`fastinterp._fpenv.ieee_subnormals`); ``__wrapped__`` is the registered
    callable.

    Raises
    ------
    NotImplementedError
        If nothing is registered for the key; the message lists what exists.
    """
    key = (op, backend, _dtype_key(dtype))
    with _lock:
        stack = _table.get(key)
        entry = stack[-1] if stack else None
    return _use(entry, key)


def lookup_below(op: str, backend: str, dtype: Any, source: str) -> Callable[..., Any]:
    """The kernel below ``source``'s for ``(op, backend, dtype)``: the one a call runs
    that ``source``'s kernel cannot take (the top-most entry under source's own, or
    the active one once source is unregistered). Records it for last_kernel().

    Raises
    ------
    NotImplementedError
        If nothing but ``source`` is registered for the key.
    """
    key = (op, backend, _dtype_key(dtype))
    with _lock:
        stack = _table.get(key, [])
        own = [i for i, e in enumerate(stack) if e.source == source]
        below = stack[:own[-1]] if own else stack
        entry = next((e for e in reversed(below) if e.source != source), None)
    return _use(entry, key)


def _use(entry: KernelEntry | None, key: tuple[str, str, str]) -> Callable[..., Any]:
    """``entry``'s callable, recorded for last_kernel(); None: no kernel for ``key``."""
    if entry is None:
        op, backend, dtype = key
        with _lock:
            have = ", ".join(f"({b}, {d})" for (o, b, d) in sorted(_table) if o == op)
        raise NotImplementedError(
            f"{op}: no kernel for backend {backend!r} and dtype {dtype}; "
            f"available (backend, dtype): {have or 'none'}.")
    fn = _resolved.get(entry)
    if fn is None:
        fn = entry.resolve()
        if entry.backend == "cpu":
            fn = ieee_subnormals(fn)
        with _lock:     # cached only while registered: an entry unregistered meanwhile
            if any(e is entry for e in _table.get(entry.key, ())):   # would stay cached,
                fn = _resolved.setdefault(entry, fn)     # its kernel (a library) held
    _last.entry = entry
    return fn


def last_kernel() -> KernelEntry | None:
    """The registry entry of the last kernel looked up in this thread (a debug hook).

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> _ = fi.lerp(np.zeros(3), np.ones(3), 0.5)
    >>> fi.last_kernel().key
    ('lerp', 'cpu', 'float64')
    """
    return getattr(_last, "entry", None)
