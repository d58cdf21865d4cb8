"""Build the Cython CPU kernels (one extension per file in kernels/cpu/).

Everything declarative lives in pyproject.toml; this file only says what
pyproject cannot: the extension list and the OpenMP/optimisation flags.

Kernel variants. Each kernel family ``kernels/cpu/<family>.pyx`` is
translated to C once and compiled once per *variant*, a set of target-CPU
flags, into ``fastinterp/_cpu/variants/<variant>/<family>.<ext>``. At import,
``fastinterp._cpu`` picks the fastest variant the running CPU supports (see
kernels/cpu/__init__.py), so one wheel runs on any x86-64 machine:

- ``x86_64_v2`` (SSE4.2, POPCNT: every x86-64 CPU since about 2009),
- ``x86_64_v3`` (AVX2, FMA, BMI2: Haswell, Zen and later),
- ``x86_64_v4`` (AVX-512 F/BW/CD/DQ/VL: Skylake-SP, Ice Lake, Zen 4 and later);

on other architectures a single ``generic`` variant uses the compiler's
default target. Files named ``_<name>.pyx`` are helpers built once for the
baseline CPU (the CPU-feature probe ``_cpufeatures.pyx``).

Environment variables:

- ``FASTINTERP_NATIVE=1``: build only a ``native`` variant with
  ``-march=native`` (fastest on the build machine; may not run elsewhere).
- ``FASTINTERP_VARIANTS=x86-64-v3,x86-64-v4``: build only these variants
  (a quicker development build; the import picks among those built).
- ``FASTINTERP_PORTABLE=1``: accepted for compatibility; the portable
  variants are the default.
- ``FASTINTERP_SANITIZE=1``: AddressSanitizer and UndefinedBehaviorSanitizer
  (``make test-sanitize``); builds the ``native`` variant unless
  FASTINTERP_VARIANTS says otherwise.
"""
import copy
import json
import os
import platform
import shutil
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext

HERE = Path(__file__).parent
SUFFIXES = tuple(EXTENSION_SUFFIXES)
CPU_DIR = HERE / "kernels" / "cpu"
INCLUDE_DIR = HERE / "kernels" / "include"  # the public C headers (plugin ABI)

#: Variant name -> target flags. Keep in step with VARIANTS in kernels/cpu/__init__.py.
X86_VARIANTS = {
    "x86_64_v2": ["-march=x86-64-v2", "-mtune=generic"],
    "x86_64_v3": ["-march=x86-64-v3", "-mtune=generic"],
    "x86_64_v4": ["-march=x86-64-v4", "-mtune=generic"],
}
OTHER_VARIANTS = {"native": ["-march=native"], "generic": []}


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def selected_variants():
    """The variants to build, from the environment (see the module docstring)."""
    known = {**X86_VARIANTS, **OTHER_VARIANTS}
    if _flag("FASTINTERP_NATIVE") and os.environ.get("FASTINTERP_PORTABLE", "").strip() in ("1",):
        raise SystemExit("setup.py: FASTINTERP_NATIVE=1 and FASTINTERP_PORTABLE=1 contradict "
                         "each other; set one of them.")
    wanted = os.environ.get("FASTINTERP_VARIANTS", "").strip()
    if wanted:
        names = [w.strip().lower().replace("-", "_") for w in wanted.split(",") if w.strip()]
        if not names:     # (",": nothing would be built, and every built variant pruned)
            raise SystemExit(f"setup.py: FASTINTERP_VARIANTS must name at least one variant "
                             f"among {', '.join(sorted(known))}; got {wanted!r}.")
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SystemExit(f"setup.py: FASTINTERP_VARIANTS must name variants among "
                             f"{', '.join(sorted(known))}; got {', '.join(unknown)}.")
        return {n: known[n] for n in names}
    if _flag("FASTINTERP_NATIVE") or _flag("FASTINTERP_SANITIZE"):
        return {"native": OTHER_VARIANTS["native"]}
    if platform.machine().lower() in ("x86_64", "amd64"):
        return dict(X86_VARIANTS)
    return {"generic": OTHER_VARIANTS["generic"]}


# -fno-trapping-math: no FP exception flags are promised, so branch-free selects
# (lerp's two-sided formula) vectorize without AVX-512 masks too (4x on AVX2);
# it changes no result.
compile_args = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
link_args = ["-fopenmp"]
if _flag("FASTINTERP_SANITIZE"):
    # -fno-wrapv undoes Python's -fwrapv, which would hide signed overflow;
    # GCC's "undefined" group does not include float-cast-overflow.
    sanitize = ["-fsanitize=address,undefined", "-fsanitize=float-cast-overflow",
                "-fno-sanitize-recover=all"]
    compile_args += sanitize + ["-fno-wrapv", "-fno-omit-frame-pointer", "-O1", "-g"]
    link_args += sanitize


def _rel(paths):
    return [str(p.relative_to(HERE)) for p in paths]


# The sampling kernels compute one value by several code paths (a pixel inside
# or at a border, a gradient alone or with the other, one thread's schedule or
# another's). With contraction into fused multiply-adds left to the compiler,
# each inlined copy may fuse differently, so the paths, and the x86-64-v2 and
# v3/v4 builds, could round differently. Without it every path rounds alike.
NO_CONTRACTION = {"sample", "sample3d"}


def _extension(name, pyx):
    flags = ["-ffp-contract=off"] if pyx.stem in NO_CONTRACTION else []
    return Extension(
        name,
        [str(pyx.relative_to(HERE))],
        include_dirs=[np.get_include()] + _rel([CPU_DIR, INCLUDE_DIR]),
        depends=_rel(sorted(CPU_DIR.glob("*.h")) + sorted(INCLUDE_DIR.glob("fastinterp/*.h"))),
        extra_compile_args=list(compile_args) + flags,
        extra_link_args=list(link_args),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )


def cpu_extensions():
    """Helpers ``fastinterp._cpu._<name>`` once, and every kernel family once per variant.

    Each family is cythonized once as ``fastinterp._cpu.<family>`` (the name
    its code carries and is imported under); the generated C is then compiled
    per variant into ``fastinterp._cpu.variants.<variant>.<family>``, a file
    that ``fastinterp._cpu`` loads as ``fastinterp._cpu.<family>``.
    """
    pyx_files = sorted(CPU_DIR.glob("*.pyx"))
    helpers = [_extension(f"fastinterp._cpu.{p.stem}", p) for p in pyx_files
               if p.stem.startswith("_")]
    families = [_extension(f"fastinterp._cpu.{p.stem}", p) for p in pyx_files
                if not p.stem.startswith("_")]
    translated = cythonize(
        helpers + families,
        include_path=[str(CPU_DIR.relative_to(HERE))],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "nonecheck": False,
            "embedsignature": True,
        },
        nthreads=int(os.environ.get("FASTINTERP_BUILD_JOBS", "0")) or None,
    )
    out = translated[:len(helpers)]
    for variant, flags in selected_variants().items():
        for ext in translated[len(helpers):]:
            clone = copy.deepcopy(ext)
            clone.name = f"fastinterp._cpu.variants.{variant}.{ext.name.rpartition('.')[2]}"
            clone.extra_compile_args = ext.extra_compile_args + flags
            out.append(clone)
    return out


class build_ext(_build_ext):
    """Compile each variant's objects in its own temporary folder.

    The variants share their C sources, so their object files would
    otherwise land on the same paths; extensions are built one at a time.
    """

    def run(self):
        build_py = self.get_finalized_command("build_py")
        in_source = self.inplace or self.editable_mode
        if in_source:          # the variant folders are not packages: create them
            for ext in self.extensions:
                os.makedirs(build_py.get_package_dir(ext.name.rpartition(".")[0]), exist_ok=True)
        # The compiler flags are part of what a module is: rebuild everything when they change.
        stamp = os.path.join(self.build_temp, "fastinterp-flags")
        flags = json.dumps([compile_args, link_args, selected_variants()])
        try:
            with open(stamp) as f:
                self.force = self.force or f.read() != flags
        except OSError:
            self.force = True
        super().run()
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w") as f:
            f.write(flags)
        # Variants built earlier but not now must not be picked up (by the import's
        # choice, or by a wheel packing build/lib).
        self._prune(os.path.join(self.build_lib, "fastinterp", "_cpu"))
        if in_source:
            self._prune(build_py.get_package_dir("fastinterp._cpu"))

    def _prune(self, folder):
        """Remove from ``folder`` (fastinterp/_cpu) the variants not built now, and
        kernel modules of the one-build layout (``<family>.so`` beside the sources)."""
        keep = selected_variants()
        variants = os.path.join(folder, "variants")
        for name in os.listdir(variants) if os.path.isdir(variants) else []:
            if name not in keep and os.path.isdir(os.path.join(variants, name)):
                shutil.rmtree(os.path.join(variants, name))
        helpers = {ext.name.rpartition(".")[2] for ext in self.extensions
                   if ext.name.count(".") == 2}
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            module, _, rest = name.partition(".")
            if rest and name.endswith(SUFFIXES) and module not in helpers:
                os.remove(os.path.join(folder, name))

    def build_extensions(self):
        self.parallel = None
        super().build_extensions()

    def build_extension(self, ext):
        base = self.build_temp
        parts = ext.name.split(".")
        if parts[:3] == ["fastinterp", "_cpu", "variants"]:
            self.build_temp = os.path.join(base, "variants", parts[3])
        try:
            super().build_extension(ext)
        finally:
            self.build_temp = base


setup(ext_modules=cpu_extensions(), cmdclass={"build_ext": build_ext})
