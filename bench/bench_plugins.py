"""Per-call overhead of plugin kernels against built-in ones, on tiny inputs.

The example plugin (examples/plugin_c/scale_add.c) is compiled with the
system C compiler into a temporary directory. On 16 elements the arithmetic
is negligible, so each median is the cost of getting from Python into the
kernel: for a plugin, describing the arrays as DLPack tensors and calling
the C function pointer with the GIL released.

Groups:
- "plugin overhead: lerp kernel, 16 elements": the registry kernel called
  directly with the front's arguments, the plugin's C kernel (library
  "fastinterp") against the built-in Cython kernel ("fastinterp-builtin").
- "plugin overhead: fi.lerp, 16 elements": the whole public call, with the
  plugin override loaded or not.
- "plugin overhead: new op, 16 elements": ``fastinterp.ops.scale_add`` (a
  plugin op with signature checks) against the NumPy expression.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import fastinterp as fi
from fastinterp import _registry as registry

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugin_c" / "scale_add.c"
N = 16


@pytest.fixture(scope="module")
def example_so(tmp_path_factory):
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("bench_plugins") / "libfi_example.so"
    subprocess.run([cc, "-std=c99", "-O2", "-fPIC", "-shared", "-I", fi.get_include(),
                    str(EXAMPLE), "-o", str(out), "-lm"], check=True)
    return out


def _operands():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(N).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    t = np.full(1, 0.3, np.float32)
    return np.empty(N, np.float32), a, b, t


@contextlib.contextmanager
def plugin_if(library, example_so):
    """The example plugin loaded for library "fastinterp", nothing for "fastinterp-builtin"."""
    if library == "fastinterp":
        fi.plugins.load(example_so)
    try:
        yield
    finally:
        if library == "fastinterp":
            fi.plugins.unload("example")


@pytest.mark.parametrize("library", ["fastinterp", "fastinterp-builtin"])
def test_lerp_kernel_call(benchmark, example_so, library):
    out, a, b, t = _operands()
    with plugin_if(library, example_so):
        kernel = registry.lookup("lerp", "cpu", "float32")
    # (an unloaded plugin's kernel object keeps its library mapped)
    benchmark.group = f"plugin overhead: lerp kernel, {N} elements"
    benchmark.extra_info["library"] = library
    benchmark(kernel, out, a, b, t)
    np.testing.assert_allclose(out, a + 0.3 * (b - a), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("library", ["fastinterp", "fastinterp-builtin"])
def test_lerp_front(benchmark, example_so, library):
    _, a, b, _ = _operands()
    with plugin_if(library, example_so):
        benchmark.group = f"plugin overhead: fi.lerp, {N} elements"
        benchmark.extra_info["library"] = library
        got = benchmark(fi.lerp, a, b, 0.3)
        assert fi.last_kernel().source == ("example" if library == "fastinterp" else "builtin")
    np.testing.assert_allclose(got, a + 0.3 * (b - a), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("library", ["fastinterp", "numpy"])
def test_new_op(benchmark, example_so, library):
    _, a, b, _ = _operands()
    with plugin_if("fastinterp", example_so):
        benchmark.group = f"plugin overhead: new op, {N} elements"
        benchmark.extra_info["library"] = library
        if library == "fastinterp":
            got = benchmark(lambda: fi.ops.scale_add(a, b, alpha=2.0))
        else:
            got = benchmark(lambda: 2.0 * a + b)
    np.testing.assert_allclose(got, 2.0 * a + b, rtol=1e-6)
