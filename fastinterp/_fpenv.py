"""The floating-point environment the CPU kernels compute in.

Results follow IEEE 754 for subnormal numbers whatever the calling thread's
flush-to-zero (FTZ) and denormals-are-zero (DAZ) settings: a thread may have them
set (an XLA host callback, ``torch.set_flush_denormal(True)``), and the NumPy
arithmetic a kernel does on the calling thread (float64 copies of float32 data,
centres, medians) would then read subnormal inputs as zero and flush subnormal
results, where the kernels' own parallel regions (_team.h) do not.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

__all__ = ["ieee_subnormals"]

_control: Any = None     # kernels/cpu/blend: the control word's save and restore


def _fp() -> Any:
    global _control
    if _control is None:
        from ._cpu import blend
        _control = blend
    return _control


def ieee_subnormals(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run with FTZ and DAZ cleared on the calling thread, the caller's
    setting restored after it (a few nanoseconds per call)."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        fp = _fp()
        saved = fp.ieee_subnormals()
        try:
            return fn(*args, **kwargs)
        finally:
            fp.restore_fp(saved)
    return run
