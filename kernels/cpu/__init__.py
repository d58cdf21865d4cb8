"""Compiled CPU kernels (Cython + OpenMP). Internal: call the public API in fastinterp.

Each kernel family (``<family>.pyx`` here) is compiled once per *variant*, a
set of target-CPU flags (setup.py), into ``variants/<variant>/``. Importing
this package chooses one variant and puts its folder first on ``__path__``,
so ``from fastinterp._cpu import blend`` loads that variant's ``blend`` as
``fastinterp._cpu.blend``: the callers, the C ABI (abi's exported table and
symbol) and the numba views of it all see one consistent build.

The choice: a ``native`` build when there is one (``FASTINTERP_NATIVE=1``),
else the widest x86-64 level the CPU supports among those built
(``x86_64_v4`` AVX-512, ``x86_64_v3`` AVX2+FMA, ``x86_64_v2``), else
``generic`` (non-x86 builds). ``FASTINTERP_CPU_VARIANT=<name>`` forces one
(``auto`` or unset: choose); forcing a variant the CPU cannot run is refused.
"""
from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Any

__all__ = ["ENV", "VARIANT", "VARIANTS", "built_variants", "choose_variant", "cpu_features",
           "cpu_level", "families", "variant_info"]

ENV = "FASTINTERP_CPU_VARIANT"
_HERE = os.path.dirname(os.path.abspath(__file__))
_VARIANTS_DIR = os.path.join(_HERE, "variants")

#: Variant name -> (x86-64 level the CPU needs, or None; what it targets), best first.
VARIANTS: dict[str, tuple[int | None, str]] = {
    "native": (None, "-march=native: the CPU it was built on"),
    "x86_64_v4": (4, "x86-64-v4: AVX-512 F/BW/CD/DQ/VL"),
    "x86_64_v3": (3, "x86-64-v3: AVX2, FMA, BMI2"),
    "x86_64_v2": (2, "x86-64-v2: SSE4.2, POPCNT"),
    "generic": (None, "the compiler's default target"),
}


def _modules_in(folder: str) -> list[str]:
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted({n.split(".")[0] for n in names
                   if any(n.endswith(s) for s in EXTENSION_SUFFIXES)})


def built_variants() -> list[str]:
    """The variants whose compiled modules are present, best first."""
    return [v for v in VARIANTS if _modules_in(os.path.join(_VARIANTS_DIR, v))]


def families() -> list[str]:
    """The kernel families (``<family>.pyx`` here, else the modules of the built variants)."""
    found = {n[:-4] for n in os.listdir(_HERE) if n.endswith(".pyx") and not n.startswith("_")}
    if not found:          # an installation without the sources
        for v in built_variants():
            found.update(_modules_in(os.path.join(_VARIANTS_DIR, v)))
    return sorted(found)


def cpu_features() -> dict[str, bool]:
    """``{feature: usable}`` for the x86 features probed; empty when no probe is built."""
    try:
        from . import _cpufeatures
    except ImportError:
        return {}
    return dict(_cpufeatures.features())


def cpu_level() -> int:
    """The running CPU's x86-64 level (1-4); 0 on other CPUs or when it cannot be probed."""
    try:
        from . import _cpufeatures
    except ImportError:
        return 0
    return int(_cpufeatures.x86_level())


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def choose_variant(built: list[str], level: int, forced: str | None = None) -> str | None:
    """The variant to load, given those ``built``, the CPU's ``level`` and a forced name.

    Returns None when nothing is built. Raises ImportError for a forced name
    that is unknown, not built or needs a higher level than the CPU's, and
    when the CPU supports none of the variants built.
    """
    if forced is not None and _normalise(forced) not in ("", "auto"):
        name = _normalise(forced)
        if name not in VARIANTS:
            raise ImportError(f"fastinterp: {ENV} must be 'auto' or one of "
                              f"{', '.join(VARIANTS)}; got {forced!r}.")
        if name not in built:
            raise ImportError(f"fastinterp: {ENV}={forced!r} names a variant that is not built "
                              f"(built: {', '.join(built) or 'none'}).")
        need = VARIANTS[name][0]
        if need is not None and level < need:
            raise ImportError(f"fastinterp: {ENV}={forced!r} needs an x86-64-v{need} CPU; this "
                              f"one is level {level} and would stop at an illegal instruction.")
        return name
    if "native" in built:
        return "native"
    for name in built:
        need = VARIANTS[name][0]
        if need is None or level >= need:
            return name
    if built:
        raise ImportError(f"fastinterp: this CPU (x86-64 level {level}) can run none of the "
                          f"kernel variants built ({', '.join(built)}); rebuild with "
                          "FASTINTERP_NATIVE=1 or FASTINTERP_VARIANTS=x86-64-v2.")
    return None


def variant_info() -> dict[str, Any]:
    """What was chosen and why: variant, its target, folder, the variants built, the CPU."""
    features = cpu_features()
    return {
        "variant": VARIANT,
        "target": VARIANTS[VARIANT][1] if VARIANT else None,
        "path": os.path.join(_VARIANTS_DIR, VARIANT) if VARIANT else None,
        "forced": _FORCED,
        "built": built_variants(),
        "cpu_level": cpu_level(),
        "cpu_features": sorted(f for f, ok in features.items() if ok),
    }


#: The variant loaded in this process (None when no variant is built).
VARIANT: str | None = choose_variant(built_variants(), cpu_level(), os.environ.get(ENV))
#: Whether ``ENV`` named it at import (what show_config reports, whatever the variable is now).
_FORCED: bool = _normalise(os.environ.get(ENV, "")) not in ("", "auto")
if VARIANT is not None:
    __path__.insert(0, os.path.join(_VARIANTS_DIR, VARIANT))  # noqa: F821 (package __path__)
