"""The floating-point environment the CPU kernels compute in.

Results follow IEEE 754's default environment (subnormal numbers kept, rounding to
nearest) whatever the calling thread has set: a thread may flush to zero
(FTZ/DAZ: an XLA host callback, ``torch.set_flush_denormal(True)``) or round
another way (``fesetround``), and the NumPy arithmetic a call does on the calling
thread (tap tables, float64 copies of float32 data, centres, medians) would then
differ from the kernels' own parallel regions (_team.h), which set that
environment on every thread, and from the tables cached for later calls.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

__all__ = ["ieee_subnormals"]

_control: Any = None     # kernels/cpu/blend: the control word's save and restore


def control() -> Any:
    """The module whose ``ieee_subnormals()`` sets the default environment on the calling
    thread and returns the previous control word, and ``restore_fp(saved)`` puts it back."""
    global _control
    if _control is None:
        from ._cpu import blend
        _control = blend
    return _control


def ieee_subnormals(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run with FTZ and DAZ cleared and rounding to nearest on the calling thread,
    the caller's setting restored after it (a few nanoseconds per call)."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        fp = control()
        saved = fp.ieee_subnormals()
        try:
            return fn(*args, **kwargs)
        finally:
            fp.restore_fp(saved)
    return run
