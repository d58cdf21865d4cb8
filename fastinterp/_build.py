"""Is this installation complete? The compiled CPU kernels must be importable.

A plain source checkout that was never built (or a copy of the ``fastinterp/``
folder alone) has the Python package but not ``fastinterp._cpu``: importing
fastinterp then says so, and which command builds it, instead of failing with
``ModuleNotFoundError`` on the first call.
"""
from __future__ import annotations

import importlib.util

__all__ = ["KERNEL_MODULES", "missing_kernel_modules", "require_built_kernels"]

KERNEL_MODULES = ("abi", "blend", "distance", "models", "optim", "resize", "sample")


def missing_kernel_modules() -> list[str]:
    """The ``fastinterp._cpu.<family>`` extension modules that cannot be found."""
    missing = []
    for name in KERNEL_MODULES:
        full = f"fastinterp._cpu.{name}"
        try:
            found = importlib.util.find_spec(full) is not None
        except ImportError:        # fastinterp._cpu itself is absent
            found = False
        if not found:
            missing.append(full)
    return missing


def require_built_kernels() -> None:
    """Raise ImportError naming the missing kernels and the command that builds them."""
    missing = missing_kernel_modules()
    if missing:
        raise ImportError(
            "fastinterp: the compiled CPU kernels are not built (missing: "
            f"{', '.join(missing)}). In a source checkout run `make build` (or "
            "`pip install -e .`, which compiles them); to use the package without "
            "a checkout, install it with `pip install .` or from a wheel.")
