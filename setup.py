"""Build the Cython CPU kernels (one extension per file in kernels/cpu/).

Everything declarative lives in pyproject.toml; this file only says what
pyproject cannot: the extension list and the OpenMP/optimisation flags.

Set FASTINTERP_PORTABLE=1 to build without ``-march=native`` (for a wheel
that must run on other x86-64 CPUs). FASTINTERP_SANITIZE=1 adds
AddressSanitizer and UndefinedBehaviorSanitizer (``make test-sanitize``).
"""
import os
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
CPU_DIR = HERE / "kernels" / "cpu"
INCLUDE_DIR = HERE / "kernels" / "include"  # the public C headers (plugin ABI)

compile_args = ["-O3", "-fopenmp", "-fno-math-errno"]
if os.environ.get("FASTINTERP_PORTABLE", "") not in ("1", "true", "yes"):
    compile_args.append("-march=native")
link_args = ["-fopenmp"]
if os.environ.get("FASTINTERP_SANITIZE", "") in ("1", "true", "yes"):
    # -fno-wrapv undoes Python's -fwrapv, which would hide signed overflow;
    # GCC's "undefined" group does not include float-cast-overflow.
    sanitize = ["-fsanitize=address,undefined", "-fsanitize=float-cast-overflow",
                "-fno-sanitize-recover=all"]
    compile_args += sanitize + ["-fno-wrapv", "-fno-omit-frame-pointer", "-O1", "-g"]
    link_args += sanitize


def cpu_extensions():
    """One extension ``fastinterp._cpu.<family>`` per kernels/cpu/<family>.pyx."""
    return [
        Extension(
            f"fastinterp._cpu.{pyx.stem}",
            [str(pyx.relative_to(HERE))],
            include_dirs=[np.get_include(), str(CPU_DIR.relative_to(HERE)),
                          str(INCLUDE_DIR.relative_to(HERE))],
            depends=[str(h.relative_to(HERE)) for h in sorted(CPU_DIR.glob("*.h"))]
            + [str(h.relative_to(HERE)) for h in sorted(INCLUDE_DIR.glob("fastinterp/*.h"))],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
        for pyx in sorted(CPU_DIR.glob("*.pyx"))
    ]


setup(
    ext_modules=cythonize(
        cpu_extensions(),
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
    ),
)
