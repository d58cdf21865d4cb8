"""Is this installation complete? The compiled CPU kernels must be importable.

A plain source checkout that was never built (or a copy of the ``fastinterp/``
folder alone) has the Python package but not ``fastinterp._cpu``: importing
fastinterp then says so, and which command builds it, instead of failing with
``ModuleNotFoundError`` on the first call.
"""
from __future__ import annotations

import importlib
import importlib.util

__all__ = ["HELPER_MODULES", "KERNEL_MODULES", "missing_kernel_modules", "require_built_kernels"]

#: The kernel families when ``fastinterp._cpu`` cannot even list them (it is absent).
KERNEL_MODULES = ("abi", "blend", "distance", "models", "optim", "resize", "sample")
#: Compiled helpers built once for every CPU (not per kernel variant).
HELPER_MODULES = ("_outcache",)


def missing_kernel_modules() -> list[str]:
    """The ``fastinterp._cpu.<family>`` extension modules that cannot be found.

    They are looked up in the kernel variant chosen for this CPU (see
    kernels/cpu/__init__.py); an ImportError from that choice (a forced
    variant that is not built or that this CPU cannot run) propagates.
    """
    try:
        cpu = importlib.import_module("fastinterp._cpu")
    except ModuleNotFoundError as exc:   # fastinterp._cpu itself is absent
        if exc.name != "fastinterp._cpu":
            raise
        return [f"fastinterp._cpu.{name}" for name in KERNEL_MODULES]
    names = cpu.families() or list(KERNEL_MODULES)
    if cpu.VARIANT is None:              # no variant built at all
        return [f"fastinterp._cpu.{name}" for name in names]
    return [f"fastinterp._cpu.{name}" for name in [*names, *HELPER_MODULES]
            if importlib.util.find_spec(f"fastinterp._cpu.{name}") is None]


def require_built_kernels() -> None:
    """Raise ImportError naming the missing kernels and the command that builds them."""
    missing = missing_kernel_modules()
    if missing:
        raise ImportError(
            "fastinterp: the compiled CPU kernels are not built (missing: "
            f"{', '.join(missing)}). In a source checkout run `make build` (or "
            "`pip install -e .`, which compiles them); to use the package without "
            "a checkout, install it with `pip install .` or from a wheel.")
