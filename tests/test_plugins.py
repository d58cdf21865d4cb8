"""Plugins: the C ABI header, loading, overriding, new ops, numba cfuncs, and
fastinterp's own kernels called from C.

Plugins are compiled at test time with the system C compiler (``$CC``, else
``cc``) into a temporary directory; without a compiler those tests skip.
"""
from __future__ import annotations

import ctypes
import gc
import inspect
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastinterp as fi
from fastinterp import _registry as registry
from fastinterp.plugins import PluginError, PluginKernelError, Signature, parse_params

from conftest import TOL, assert_autograd_sees_write, assert_close

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plugin_c" / "scale_add.c"
SOURCES = Path(__file__).resolve().parent / "plugin_c"
CC = os.environ.get("CC", "cc")
CXX = os.environ.get("CXX", "c++")


def _need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"no {tool} compiler on PATH")


def compile_so(src: Path, out: Path, *flags: str, include: str | None = None) -> Path:
    """Build a shared library from ``src`` with the system compiler, against the
    header in ``include`` (default: fastinterp's)."""
    _need(CC)
    cmd = [CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
           "-I", include or fi.get_include(), *flags, str(src), "-o", str(out), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("plugins")


@pytest.fixture(scope="session")
def example_so(build_dir):
    return compile_so(EXAMPLE, build_dir / "libfi_example.so")


@pytest.fixture(scope="session")
def test_so(build_dir):
    return compile_so(SOURCES / "test_plugin.c", build_dir / "libtestplug.so")


def snapshot():
    """Everything a failed load must leave untouched."""
    return ([(e.key, e.source, e.kernel) for e in registry.entries()],
            [p.name for p in fi.plugins.list()], dir(fi.ops))


@pytest.fixture(autouse=True)
def clean_plugins():
    """Every test starts and ends with no plugin loaded."""
    yield
    for p in fi.plugins.list():
        fi.plugins.unload(p.name)


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------- header
@pytest.mark.parametrize("compiler, std", [(CC, "-std=c99"), (CC, "-std=c11"),
                                           (CXX, "-std=c++11"), (CXX, "-std=c++17")])
def test_header_compiles_standalone(compiler, std, tmp_path):
    _need(compiler)
    lang = "c++" if compiler == CXX else "c"
    header = Path(fi.get_include()) / "fastinterp" / "plugin.h"
    subprocess.run([compiler, std, "-Wall", "-Wextra", "-pedantic", "-Werror", "-fsyntax-only",
                    "-x", lang, str(header)], check=True, capture_output=True, text=True)


def test_tensor_matches_dlpack_layout(torch):
    _need(CC)
    dlpack_dir = Path(torch.__file__).parent / "include" / "ATen"
    if not (dlpack_dir / "dlpack.h").exists():
        pytest.skip("torch ships no dlpack.h")
    cmd = [CC, "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I",
           fi.get_include(), "-I", str(dlpack_dir), str(SOURCES / "dlpack_layout.c")]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    # The header says to cast: passing a DLTensor* as is is diagnosed.
    res = subprocess.run(cmd + ["-DUNCAST"], capture_output=True, text=True)
    assert res.returncode != 0 and "incompatible" in res.stderr, res.stderr


def test_get_include_holds_the_header():
    inc = Path(fi.get_include())
    assert (inc / "fastinterp" / "plugin.h").is_file()
    text = (inc / "fastinterp" / "plugin.h").read_text()
    assert f"#define FI_ABI_VERSION_MAJOR {fi.plugins._abi().ABI_MAJOR}" in text


def test_import_runs_no_discovery_and_no_numba():
    code = ("import sys, fastinterp as fi; "
            "assert fi.plugins.list() == [], fi.plugins.list(); "
            "assert 'numba' not in sys.modules; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


# --------------------------------------------------------------------------- loading
def test_load_example_lists_it(example_so):
    info = fi.plugins.load(example_so)
    assert info.name == "example" and info.version == "1.0" and info.kind == "library"
    assert info.abi == (1, fi.plugins._abi().ABI_MINOR)
    assert set(info.kernels) == {("scale_add", "cpu", "float32"),
                                 ("scale_add", "cpu", "float64"), ("lerp", "cpu", "float32")}
    assert info.ops == ("scale_add",)
    assert fi.plugins.list() == [info]
    assert "scale_add" in dir(fi.ops)
    fi.plugins.unload("example")
    assert fi.plugins.list() == []
    assert "scale_add" not in dir(fi.ops)
    with pytest.raises(AttributeError, match="no op 'scale_add'"):
        fi.ops.scale_add


def test_null_entries_skipped_and_other_devices_warned(test_so):
    with pytest.warns(fi.plugins.PluginWarning, match="CUDA skipped"):
        info = fi.plugins.load(test_so)
    ops = {k[0] for k in info.kernels}
    assert ops == {"fail_op", "sum_rows", "lerp"}
    assert not hasattr(fi.ops, "not_built") and not hasattr(fi.ops, "gpu_only")


def test_entries_with_a_null_fn_are_skipped_whatever_they_hold(build_dir):
    """plugin.h rule 6: an entry whose fn is NULL is skipped, even with a NULL or
    malformed op name, dtype or signature (a zeroed terminator counted in n_kernels)."""
    so = compile_so(SOURCES / "test_plugin.c", build_dir / "libnullentries.so",
                    "-DNULL_ENTRIES", '-DNAME="nullentries"')
    with pytest.warns(fi.plugins.PluginWarning, match="CUDA skipped") as record:
        info = fi.plugins.load(so)
    assert len(record) == 1
    assert {k[0] for k in info.kernels} == {"fail_op", "sum_rows", "lerp"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_add_numpy(example_so, rng, dtype):
    fi.plugins.load(example_so)
    x, y = rand(rng, (3, 5, 7), dtype), rand(rng, (3, 5, 7), dtype)
    got = fi.ops.scale_add(x, y, alpha=2.5)
    assert got.dtype == dtype and got.shape == x.shape
    assert_close(got, (dtype(2.5) * x.astype(np.float64) + y).astype(dtype), scale=4)
    assert fi.last_kernel().source == "example"
    assert_close(fi.ops.scale_add(x, y), x + y)                   # default alpha = 1
    out = np.full_like(x, np.nan)
    assert fi.ops.scale_add(x, y, out=out, alpha=-1) is out
    assert_close(out, y - x)


def test_scale_add_hand_computed(example_so):
    fi.plugins.load(example_so)
    got = fi.ops.scale_add(np.array([1.0, 2.0]), np.array([10.0, 20.0]), alpha=3)
    np.testing.assert_array_equal(got, [13.0, 26.0])
    # A non-contiguous input is copied once; a 0-d pair works too.
    x = np.arange(12.0).reshape(3, 4)[:, ::2]
    np.testing.assert_array_equal(fi.ops.scale_add(x, x, alpha=1), 2 * x)
    zero_d = fi.ops.scale_add(np.full((), 2.0), np.ones(()))
    assert zero_d.shape == () and zero_d == 3.0
    with pytest.raises(TypeError, match="x must be an array; got float64"):
        fi.ops.scale_add(np.float64(2.0), np.ones(()))


def test_scale_add_torch_dlpack(example_so, torch):
    fi.plugins.load(example_so)
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    y = torch.ones(2, 3)
    got = fi.ops.scale_add(x, y, alpha=0.5)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    torch.testing.assert_close(got, 0.5 * x + y)
    out = torch.empty(2, 3)
    assert fi.ops.scale_add(x, y, out=out) is out
    torch.testing.assert_close(out, x + y)
    # Mixed NumPy / torch inputs are both CPU: the torch type wins.
    assert isinstance(fi.ops.scale_add(x.numpy(), y), torch.Tensor)


def test_op_argument_checks(example_so, test_so):
    fi.plugins.load(example_so)
    x = np.ones((2, 3), np.float32)
    out = np.full((2, 3), 7.0, np.float32)
    cases = [
        (ValueError, r"scale_add: y must have shape \(\.\.\.\) = \(2, 3\); got \(3, 2\)\.",
         (x, np.ones((3, 2), np.float32)), {}),
        (TypeError, "y must have the same dtype as x", (x, x.astype(np.float64)), {}),
        (TypeError, "must have dtype float32 or float64", (x.astype(np.float16),) * 2, {}),
        (TypeError, "expected 2 arrays", (x, x, x), {}),
        (TypeError, "missing array argument 'y'", (x,), {}),
        (TypeError, "y must be an array", (x, 1.0), {}),
        (TypeError, "unexpected keyword argument 'beta'", (x, x), {"beta": 1}),
        (TypeError, "alpha must be a float; got str", (x, x), {"alpha": "a"}),
        (ValueError, r"out must have shape \(\.\.\.\) = \(2, 3\); got \(6,\)",
         (x, x), {"out": np.zeros(6, np.float32)}),
        (TypeError, "out must have dtype float32; got float64", (x, x),
         {"out": np.zeros((2, 3))}),
        (ValueError, "out must not share memory with x", (x, x), {"out": x}),
    ]
    for exc, msg, args, kwargs in cases:
        with pytest.raises(exc, match=msg):
            fi.ops.scale_add(*args, **kwargs)
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        fi.ops.scale_add(x[:, :2], x[:, :2], out=np.zeros((2, 4), np.float32)[:, ::2])
    np.testing.assert_array_equal(out, 7.0)   # untouched by the failures above
    with pytest.warns(fi.plugins.PluginWarning):
        fi.plugins.load(test_so)
    with pytest.raises(TypeError, match="bias must be an int; got float"):
        fi.ops.sum_rows(np.ones((2, 3)), bias=1.5)
    with pytest.raises(ValueError, match=r"x must have shape \(m, n\)"):
        fi.ops.sum_rows(np.ones(3))
    with pytest.raises(NotImplementedError, match=r"available \(backend, dtype\): \(cpu, float64\)"):
        fi.ops.sum_rows(np.ones((2, 3), np.float32))


def test_signature_rule_and_params(test_so, rng):
    with pytest.warns(fi.plugins.PluginWarning):
        fi.plugins.load(test_so)
    x = rand(rng, (4, 5), np.float64)
    got = fi.ops.sum_rows(x, w=2.0, bias=3)
    assert got.shape == (4,)
    assert_close(got, 2.0 * x.sum(axis=1) + 3)
    assert "w: float = 1.0, bias: int = 0" in fi.ops.sum_rows.__doc__


def test_signature_parser():
    sig = Signature.parse("a(m, k), b(k, n) -> c(m, n)", "t")
    a, b = np.zeros((2, 3)), np.zeros((3, 4))
    assert sig.output_shapes("mm", [a, b]) == [[2, 4]]
    with pytest.raises(ValueError, match=r"mm: b must have shape \(k, n\) = \(3, \*\); got \(2, 4\)"):
        sig.output_shapes("mm", [a, np.zeros((2, 4))])
    sig = Signature.parse("x(..., 3), y(...) -> (..., 2), z(q)", "t")
    assert [o.name for o in sig.outputs] == ["out0", "z"]
    assert sig.output_shapes("f", [np.zeros((5, 6, 3)), np.zeros((5, 6))]) == [[5, 6, 2], [None]]
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\.\) = \(5, 6\); got \(5,\)"):
        sig.output_shapes("f", [np.zeros((5, 6, 3)), np.zeros(5)])
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        sig.output_shapes("f", [np.zeros(()), np.zeros(())])
    for bad in ["x(n)", "x(n), -> y(n)", "x(n, ...) -> y(n)", "x(n) -> x(n)", "x(n-1) -> y(n)",
                "x(n) ->"]:
        with pytest.raises(ValueError, match="signature"):
            Signature.parse(bad, "t")
    assert [p.name for p in parse_params("a: float = 1, k: int", "t")] == ["a", "k"]
    for bad in ["a", "a: str", "a: int = 1.5", "a: float, a: int"]:
        with pytest.raises(ValueError, match="parameter"):
            parse_params(bad, "t")


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(0, 4), max_size=4), alpha=st.floats(-4, 4),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_scale_add_shapes_property(example_so, shape, alpha, dtype):
    rng = np.random.default_rng(len(shape))
    x, y = rand(rng, shape, dtype), rand(rng, shape, dtype)
    fi.plugins.load(example_so)
    try:
        got = fi.ops.scale_add(x, y, alpha=alpha)
    finally:
        fi.plugins.unload("example")
    assert got.shape == tuple(shape) and got.dtype == dtype
    assert_close(got, alpha * x.astype(np.float64) + y, scale=10)


# --------------------------------------------------------------------------- overriding
def _lerp_cases(rng, dtype):
    a = rand(rng, (4, 6, 5), dtype)
    yield a, rand(rng, (4, 6, 5), dtype), 0.3
    yield a, rand(rng, (6, 1), dtype), rand(rng, (4, 1, 5), dtype)
    yield a, rand(rng, (5,), dtype), dtype(0.8)
    yield rand(rng, (7,), dtype), rand(rng, (7,), dtype), rand(rng, (7,), dtype)


def test_override_used_then_unloaded_restores_builtin(example_so, rng):
    before = registry.lookup("lerp", "cpu", "float32")
    cases = list(_lerp_cases(rng, np.float32))
    builtin = [fi.lerp(a, b, t) for a, b, t in cases]
    assert fi.last_kernel().source == registry.BUILTIN
    fi.plugins.load(example_so)
    for (a, b, t), ref in zip(cases, builtin):
        got = fi.lerp(a, b, t)
        entry = fi.last_kernel()
        assert entry.source == "example" and entry.key == ("lerp", "cpu", "float32")
        assert got.shape == ref.shape and got.dtype == ref.dtype
        assert_close(got, ref)
    # float64 is not overridden by this plugin.
    fi.lerp(np.zeros(3), np.ones(3), 0.5)
    assert fi.last_kernel().source == registry.BUILTIN
    fi.plugins.unload("example")
    for (a, b, t), ref in zip(cases, builtin):
        np.testing.assert_array_equal(fi.lerp(a, b, t), ref)
        assert fi.last_kernel().source == registry.BUILTIN
    assert registry.lookup("lerp", "cpu", "float32") is before


@st.composite
def _broadcast_triplet(draw):
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    def operand():
        rank = draw(st.integers(0, len(shape)))
        return [1 if draw(st.booleans()) else n for n in shape[len(shape) - rank:]]
    return operand(), operand(), operand()


@settings(max_examples=25, deadline=None)
@given(shapes=_broadcast_triplet())
def test_override_matches_builtin_on_any_broadcast(example_so, shapes):
    rng = np.random.default_rng(sum(map(len, shapes)))
    a, b, t = (rand(rng, s, np.float32) for s in shapes)
    ref = fi.lerp(a, b, t)
    fi.plugins.load(example_so)
    try:
        got = fi.lerp(a, b, t)
        assert fi.last_kernel().source == "example"
    finally:
        fi.plugins.unload("example")
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert_close(got, ref)


def test_override_with_out_and_torch(example_so, torch):
    fi.plugins.load(example_so)
    a, b = torch.zeros(2, 3), torch.ones(3)
    got = fi.lerp(a, b, 0.25)
    assert isinstance(got, torch.Tensor) and fi.last_kernel().source == "example"
    torch.testing.assert_close(got, torch.lerp(a, b.expand(2, 3), 0.25))
    out = np.empty((2, 3), np.float32)
    assert fi.lerp(a.numpy(), b.numpy(), 0.75, out=out) is out
    np.testing.assert_allclose(out, 0.75)


def test_two_overrides_stack(example_so, test_so, rng):
    a, b = rand(rng, (3, 4), np.float64), rand(rng, (3, 4), np.float64)
    with pytest.warns(fi.plugins.PluginWarning):
        fi.plugins.load(test_so)                      # lerp float64
    fi.plugins.load(example_so)                       # lerp float32
    assert_close(fi.lerp(a, b, 0.4), a + 0.4 * (b - a))
    assert fi.last_kernel().source == "testplug"
    fi.lerp(a.astype(np.float32), b.astype(np.float32), 0.4)
    assert fi.last_kernel().source == "example"
    fi.plugins.unload("testplug")
    fi.lerp(a, b, 0.4)
    assert fi.last_kernel().source == registry.BUILTIN


# --------------------------------------------------------------------------- refusals
@pytest.fixture(scope="session")
def bad_plugins(build_dir, test_so):
    src = SOURCES / "test_plugin.c"
    kernel_size = fi.plugins._abi().MIN_SIZES["kernel"]
    plugin_size = fi.plugins._abi().MIN_SIZES["plugin"]
    variants = {
        "major": ["-DMAJOR=2"],
        "kernel_size": [f"-DKERNEL_SIZE={kernel_size - 8}"],
        "plugin_size": [f"-DPLUGIN_SIZE={plugin_size - 8}"],
        "null": ["-DNULL_DESCRIPTOR"],
        "no_entry": ["-DNO_ENTRY"],
        "data_entry": ["-DDATA_ENTRY"],
        "dtype": ["-DBAD_DTYPE"],
        "op_name": ["-DBAD_OP"],
    }
    paths = {k: compile_so(src, build_dir / f"libbad_{k}.so", *flags)
             for k, flags in variants.items()}
    text = build_dir / "libnotalib.so"
    text.write_text("this is not a shared library\n")
    paths["not_a_library"] = text
    paths["missing"] = build_dir / "libdoesnotexist.so"
    paths["duplicate"] = test_so
    return paths


@pytest.mark.parametrize("op", ["Bad Op", "Fail-Op", "", "9lives", 5, None])
@pytest.mark.parametrize("name", [None, "mine"])
def test_register_cfunc_bad_op_name_same_error_as_a_library(numba_kernels, bad_plugins, op,
                                                            name):
    """The op name is checked, with the library loader's words, before anything else
    (the default plugin name numba.<op> used to be blamed)."""
    with pytest.raises(PluginError) as lib:
        fi.plugins.load(bad_plugins["op_name"])
    reason = str(lib.value).split(": ", 2)[2]
    assert reason == "op name must match [a-z][a-z0-9_]*; got 'Fail-Op'; nothing was registered."
    before = snapshot()
    with pytest.raises(PluginError) as info:
        fi.plugins.register_cfunc(op, "float64", numba_kernels[0], name=name)
    assert str(info.value) == (f"register_cfunc({op!r}): op name must match [a-z][a-z0-9_]*; "
                               f"got {op!r}; nothing was registered.")
    assert snapshot() == before


@pytest.mark.parametrize("case, message", [
    ("major", r"ABI major version mismatch: this fastinterp implements ABI 1\.1 .*built for 2\.1"),
    ("kernel_size", r"fi_kernel_t size mismatch: expected at least 56 bytes .*got 48"),
    ("plugin_size", r"fi_plugin_t size mismatch: expected at least 56 bytes .*got 48"),
    ("null", r"fastinterp_plugin\(\) returned NULL"),
    ("no_entry", r"does not export the symbol 'fastinterp_plugin'"),
    ("data_entry", r"the symbol 'fastinterp_plugin' is not a function"),   # (was a segfault)
    ("dtype", r"dtype must be float32 \{2, 32, 1\} or float64 \{2, 64, 1\}; got \{0, 32, 1\}"),
    ("op_name", r"kernel 5 \('Fail-Op'\): op name must match \[a-z\]\[a-z0-9_\]\*"),
    ("not_a_library", r"not a loadable shared library \(.*\)"),
    ("missing", r"no such file"),
    ("duplicate", r"a plugin named 'testplug' is already loaded"),
])
def test_refused_plugins_register_nothing(bad_plugins, case, message):
    if case == "duplicate":
        with pytest.warns(fi.plugins.PluginWarning):
            fi.plugins.load(bad_plugins[case])
    before = snapshot()
    with pytest.raises(PluginError, match=message) as info:
        fi.plugins.load(bad_plugins[case])
    assert "nothing was registered" in str(info.value)
    assert isinstance(info.value, ImportError)
    assert snapshot() == before
    fi.lerp(np.zeros(2), np.ones(2), 0.5)
    expected = "testplug" if case == "duplicate" else registry.BUILTIN
    assert fi.last_kernel().source == expected


def test_newer_minor_with_longer_entries_loads(build_dir, rng):
    """Compatibility rule 3: a plugin built for a later minor (bigger kernel entries)
    loads; the table is walked by the plugin's own entry size."""
    so = compile_so(SOURCES / "test_plugin.c", build_dir / "libfuture.so", "-DFUTURE_MINOR",
                    '-DNAME="future"')
    info = fi.plugins.load(so)
    assert info.abi == (1, 7)
    assert info.kernels == (("fail_op", "cpu", "float32"), ("sum_rows", "cpu", "float64"))
    x = rand(rng, (3, 4), np.float64)
    assert_close(fi.ops.sum_rows(x, w=0.5, bias=2), 0.5 * x.sum(axis=1) + 2)


def test_builtin_op_without_convention_refused(test_so):
    registry.register("fake_builtin_op", "cpu", "float32", lambda *a: None)
    try:
        from fastinterp.plugins import _prepare
        raw = {"op": "fake_builtin_op", "device_type": 1, "dtype": (2, 32, 1), "fn": 1,
               "signature": None, "params": None, "doc": None, "flags": 0}
        before = snapshot()
        with pytest.raises(PluginError, match="built-in op 'fake_builtin_op' cannot be replaced"):
            _prepare("x", [raw], None, "t")
        assert _prepare("x", [dict(raw, op="new_op")], None, "t")[0]  # accepted as a new op
        assert snapshot() == before
    finally:
        registry.unregister(registry.BUILTIN, op="fake_builtin_op")


@pytest.mark.parametrize("signature, params, message", [
    ("x(n) -> out(n)", "out: float", r"parameter names \['out'\] clash"),
    ("x(n) -> y(n)", "x: int", r"parameter names \['x'\] clash"),
    (", ".join(f"x{i}(n)" for i in range(16)) + " -> y(n)", None, "at most 16 arrays per op"),
    ("x(n) -> y(n)", ", ".join(f"p{i}: float" for i in range(17)), "at most 16 float parameters"),
    ("x(n) -> y(n", None, "cannot parse signature"),
    ("x(" + ", ".join(["1"] * 33) + ") -> y(1)", None, "at most 32 dimensions; got 33"),
    ("x(\u00b2) -> y(\u00b2)", None, "dimension must be a name, a size"),   # a superscript 2
    ("x(\u0663) -> y(n)", None, "dimension must be a name, a size"),       # an Arabic-Indic 3
    ("x(n) -> y(n)", "a: float = \u0663", "default of parameter 'a' must be a float"),
    ("x(n) -> y(n)", "a: int = \u0663", "default of parameter 'a' must be an int64"),
    ("x(n) -> y(n)", "a: float = 1e400", "default of parameter 'a' must be a float"),
    ("out(n) -> y(n)", None, "an input must not be named 'out'"),
])
def test_malformed_declarations_refused(numba_kernels, signature, params, message):
    axpb = numba_kernels[0]
    before = snapshot()
    with pytest.raises(PluginError, match=message):
        fi.plugins.register_cfunc("odd", "float64", axpb, signature=signature, params=params)
    assert snapshot() == before


def test_conflicting_op_declaration_refused(example_so):
    fi.plugins.load(example_so)
    from numba import cfunc
    from fastinterp import numba_abi as nb

    @cfunc(nb.signature)
    def other(inputs, n_in, outputs, n_out, params, err, err_size):
        return 0
    before = snapshot()
    with pytest.raises(PluginError, match="op 'scale_add' is already declared as"):
        fi.plugins.register_cfunc("scale_add", "float32", other, signature="x(n) -> out(n)")
    assert snapshot() == before


def test_kernel_error_status_raises_with_message(test_so):
    with pytest.warns(fi.plugins.PluginWarning):
        fi.plugins.load(test_so)
    x = np.ones((2, 5), np.float32)
    before = snapshot()
    with pytest.raises(PluginKernelError, match=r"fail_op: plugin kernel testplug:fail_op "
                       r"\(cpu, float32\) failed with status 2 \(unsupported\): "
                       r"fail_op: refusing 10 elements on purpose") as info:
        fi.ops.fail_op(x)
    assert info.value.status == 2 and info.value.message == "fail_op: refusing 10 elements on purpose"
    assert snapshot() == before


@pytest.mark.parametrize("kwargs, message", [
    (dict(name=5), r"name must be a str or None; got int 5\."),
    (dict(name=b"mine"), r"name must be a str or None; got bytes b'mine'\."),
    (dict(signature=5), r"signature must be a str or None; got int 5\."),
    (dict(signature=["x(n) -> out(n)"]), r"signature must be a str or None; got list"),
    (dict(params=1.5), r"params must be a str or None; got float 1\.5\."),
    (dict(doc=3), r"doc must be a str or None; got int 3\."),
    (dict(serial="no"), r"serial must be a bool; got str 'no'\."),
])
def test_register_cfunc_argument_types_are_clear_errors(numba_kernels, kwargs, message):
    before = snapshot()
    with pytest.raises(TypeError, match=r"register_cfunc\('ok'\): " + message):
        fi.plugins.register_cfunc("ok", "float64", numba_kernels[0], **kwargs)
    assert snapshot() == before


@pytest.mark.parametrize("path, typename", [(None, "NoneType"), (3, "int"), (2.5, "float"),
                                            (["lib.so"], "list")])
def test_load_path_of_the_wrong_type(path, typename):
    with pytest.raises(TypeError, match=rf"load: path must be a str, bytes or os\.PathLike; "
                                        rf"got {typename} "):
        fi.plugins.load(path)


def test_load_takes_a_bytes_path(example_so):
    info = fi.plugins.load(os.fsencode(example_so))
    assert info.name == "example" and info.path == str(example_so)
    with pytest.raises(PluginError, match=r"load\('/nonexistent/lib\.so'\): no such file"):
        fi.plugins.load(b"/nonexistent/lib.so")


def test_unload_unknown_name():
    with pytest.raises(ValueError, match=r"unload: name must be a loaded plugin \(none\); got 'nope'"):
        fi.plugins.unload("nope")


@pytest.mark.parametrize("name", [["example"], None, b"example", 3])
def test_unload_and_discover_arguments_of_the_wrong_type(name):
    with pytest.raises(TypeError, match=r"^unload: name must be a str"):
        fi.plugins.unload(name)
    with pytest.raises(TypeError, match=r"^discover: group must be a str"):
        fi.plugins.discover(name)


def test_infinite_and_nan_defaults_are_taken_as_written(numba_kernels):
    fi.plugins.register_cfunc("odd", "float64", numba_kernels[0], signature="x(n) -> y(n)",
                              params="a: float = -inf, b: float = nan")
    a, b = fi.plugins.op_spec("odd").params
    assert a.default == -math.inf and math.isnan(b.default)


def test_reopening_a_library_while_another_thread_closes_it(example_so, tmp_path,
                                                            monkeypatch):
    """open() found the library of an earlier load in _mapped while another thread was
    closing it (dropping its last kernel, whose __del__ closed it), took it back and ran
    its closed code: a segfault. A library leaves _mapped before it is closed."""
    from fastinterp import plugins
    path = shutil.copy(example_so, tmp_path / "libfi_own_copy.so")   # mapped by this test only
    closing, proceed = threading.Event(), threading.Event()
    real_dlclose = plugins._dlclose

    def slow_dlclose(handle):
        closing.set()
        proceed.wait(10)
        real_dlclose(handle)
    monkeypatch.setattr(plugins, "_dlclose", slow_dlclose)
    held = [plugins._Library.open(str(path))]
    dropper = threading.Thread(target=held.clear)     # the last reference goes there
    dropper.start()
    assert closing.wait(10)
    again = plugins._Library.open(str(path))          # while the old one is being closed
    proceed.set()
    dropper.join()
    assert plugins._abi().plugin_contents(
        plugins._abi().plugin_abi(again.entry_address())[0])["name"] == "example"


def test_a_call_runs_the_kernel_of_the_declaration_it_checked(monkeypatch):
    """call_op read an op's declaration and looked its kernel up separately: an op
    swapped between plugins in between (another thread unloading one and loading the
    other) ran the new kernel on the old declaration's shapes (a segfault for a
    kernel that trusts them). The call now runs on the declaration its kernel has."""
    numba = pytest.importorskip("numba")
    from fastinterp import numba_abi as nb
    from fastinterp import plugins

    def filler(size):
        @numba.cfunc(nb.signature)
        def fill(inputs, n_in, outputs, n_out, params, err, err_size):
            y = nb.flat(outputs, 0, np.float64)
            if y.size != size:
                return nb.error(err, err_size, 1, "race: output of the wrong size")
            for i in range(y.size):
                y[i] = size
            return 0
        return fill
    fill_n, fill_2 = filler(3), filler(2)
    fi.plugins.register_cfunc("race", "float64", fill_n, signature="x(n) -> out(n)", name="a")
    real_spec, calls = plugins.op_spec, []

    def op_spec(op):        # the swap lands right after the call read the declaration
        spec = real_spec(op)
        if op == "race" and not calls:
            calls.append(op)
            fi.plugins.unload("a")
            fi.plugins.register_cfunc("race", "float64", fill_2, signature="x(n) -> out(2)",
                                      name="b")
        return spec
    race = fi.ops.race      # (fi.ops reads the declaration itself: before the swap)
    monkeypatch.setattr(plugins, "op_spec", op_spec)
    np.testing.assert_array_equal(race(np.zeros(3)), [2.0, 2.0])


# --------------------------------------------------------------------------- numba
@pytest.fixture(scope="module")
def numba_kernels():
    numba = pytest.importorskip("numba")
    from fastinterp import numba_abi as nb

    @numba.cfunc(nb.signature)
    def axpb(inputs, n_in, outputs, n_out, params, err, err_size):
        if n_in != 1 or n_out != 1:
            return nb.error(err, err_size, 1, "axpb: expects one input and one output")
        a = nb.float_param(params, 0)
        if a == 0:
            return nb.error(err, err_size, 1, "axpb: a must be non-zero")
        x, y = nb.flat(inputs, 0, np.float64), nb.flat(outputs, 0, np.float64)
        b = nb.int_param(params, 0)
        for i in range(x.size):
            y[i] = a * x[i] + b
        return 0

    @numba.cfunc(nb.signature)
    def rowlen(inputs, n_in, outputs, n_out, params, err, err_size):
        y = nb.flat(outputs, 0, np.float32)
        shape = nb.shape(inputs, 0)
        for i in range(y.size):
            y[i] = shape[1] + nb.nthreads(params) * 0
        return 0

    @numba.cfunc("float64(float64)")
    def wrong(x):
        return x
    return axpb, rowlen, wrong


def test_numba_cfunc_plugin(numba_kernels, rng, torch):
    axpb, rowlen, wrong = numba_kernels
    info = fi.plugins.register_cfunc("axpb", "float64", axpb, signature="x(...) -> y(...)",
                                     params="a: float, b: int = 0", doc="a * x + b")
    assert info.kind == "cfunc" and info.name == "numba.axpb"
    x = rand(rng, (3, 4), np.float64)
    assert_close(fi.ops.axpb(x, a=2.0, b=1), 2 * x + 1)
    assert fi.last_kernel().source == "numba.axpb"
    got = fi.ops.axpb(torch.from_numpy(x), a=-1.0)
    assert isinstance(got, torch.Tensor)
    assert_close(got.numpy(), -x)
    with pytest.raises(PluginKernelError, match="axpb: a must be non-zero"):
        fi.ops.axpb(x, a=0.0)
    with pytest.raises(TypeError, match="missing required parameter 'a'"):
        fi.ops.axpb(x)
    # A second kernel under another name; "out=" needed when the rule cannot say.
    fi.plugins.register_cfunc("rowlen", np.float32, rowlen, signature="x(m, n) -> out(k)",
                              name="mine")
    with pytest.raises(ValueError, match="out must be given"):
        fi.ops.rowlen(np.zeros((2, 5), np.float32))
    out = np.zeros(3, np.float32)
    fi.ops.rowlen(np.zeros((2, 5), np.float32), out=out)
    np.testing.assert_array_equal(out, 5.0)
    with pytest.raises(TypeError, match=r"cfunc must have the signature \(void\*, int32, void\*"):
        fi.plugins.register_cfunc("w", "float64", wrong)
    with pytest.raises(TypeError, match="cfunc must be a numba @cfunc"):
        fi.plugins.register_cfunc("w", "float64", lambda x: x)
    with pytest.raises(TypeError, match="dtype must be float32 or float64; got int32"):
        fi.plugins.register_cfunc("w", "int32", axpb)
    fi.plugins.unload("numba.axpb")
    assert not hasattr(fi.ops, "axpb") and hasattr(fi.ops, "rowlen")


def test_numba_cfunc_overrides_lerp(numba_kernels, rng):
    numba = pytest.importorskip("numba")
    from fastinterp import numba_abi as nb

    @numba.cfunc(nb.signature)
    def lerp_flat(inputs, n_in, outputs, n_out, params, err, err_size):
        # Handles contiguous, same-shape a, b, t only; says so otherwise.
        a, b, t = nb.tensor(inputs, 0), nb.tensor(inputs, 1), nb.tensor(inputs, 2)
        if a.ndim != 1 or b.ndim != 1 or t.ndim != 1:
            return nb.error(err, err_size, 2, "lerp_flat: 1-D only")
        x, y, w = nb.flat(inputs, 0, np.float64), nb.flat(inputs, 1, np.float64), \
            nb.flat(inputs, 2, np.float64)
        z = nb.flat(outputs, 0, np.float64)
        for i in range(z.size):
            z[i] = x[i] + w[i] * (y[i] - x[i])
        return 0
    fi.plugins.register_cfunc("lerp", "float64", lerp_flat)
    a, b, t = (rand(rng, 9, np.float64) for _ in range(3))
    assert_close(fi.lerp(a, b, t), a + t * (b - a))
    assert fi.last_kernel().source == "numba.lerp"
    with pytest.raises(PluginKernelError, match="lerp_flat: 1-D only"):
        fi.lerp(np.zeros((2, 3)), np.ones(3), np.ones((2, 3)))   # 2-D after coalescing
    fi.plugins.unload("numba.lerp")
    fi.lerp(a, b, t)
    assert fi.last_kernel().source == registry.BUILTIN


@pytest.fixture(scope="module")
def nthreads_kernel():
    numba = pytest.importorskip("numba")
    from fastinterp import numba_abi as nb

    @numba.cfunc(nb.signature)
    def nthreads(inputs, n_in, outputs, n_out, params, err, err_size):
        y = nb.flat(outputs, 0, np.float64)
        for i in range(y.size):
            y[i] = nb.nthreads(params)
        return 0
    return nthreads


@pytest.mark.parametrize("op", ["annotations", "helper"])
def test_op_names_taken_by_the_ops_module_refused(nthreads_kernel, op, monkeypatch):
    import fastinterp.ops
    monkeypatch.setattr(fastinterp.ops, "helper", len, raising=False)  # any module attribute
    assert op in vars(fastinterp.ops)
    before = snapshot()
    with pytest.raises(PluginError, match=rf"op name must not be an attribute of "
                                          rf"fastinterp.ops \(.*\); got '{op}'"):
        fi.plugins.register_cfunc(op, "float64", nthreads_kernel, signature="x(...) -> y(...)")
    assert snapshot() == before


def test_op_without_inputs_refused(nthreads_kernel):
    before = snapshot()
    with pytest.raises(PluginError, match=r"signature must declare at least one input array; "
                                          r"got '-> y\(3\)'"):
        fi.plugins.register_cfunc("gen", "float64", nthreads_kernel, signature="-> y(3)")
    assert snapshot() == before
    # Without a signature the arrays are counted at the call: none is a clear TypeError.
    fi.plugins.register_cfunc("gen", "float64", nthreads_kernel)
    with pytest.raises(TypeError, match=r"gen: at least one input array is required; got none"):
        fi.ops.gen(out=np.zeros(3))


def test_outputs_of_one_call_are_separate_arrays():
    """A call's outputs may not share memory with each other (a kernel writing both would
    leave one's values in the other), a tuple of outputs gives every one, and a
    parameter given as None is a wrong value, not a missing one."""
    numba = pytest.importorskip("numba")
    from fastinterp import numba_abi as nb

    @numba.cfunc(nb.signature)
    def two(inputs, n_in, outputs, n_out, params, err, err_size):
        x = nb.flat(inputs, 0, np.float64)
        p, q = nb.flat(outputs, 0, np.float64), nb.flat(outputs, 1, np.float64)
        w = nb.float_param(params, 0)
        for i in range(x.size):
            p[i] = x[i] + w
        for i in range(x.size):
            q[i] = x[i] * 10
        return 0
    fi.plugins.register_cfunc("two", "float64", two, signature="x(...) -> p(...), q(...)",
                              params="w: float = 1")
    x, o, buf = np.arange(3.0), np.zeros(3), np.zeros(6)
    with pytest.raises(ValueError, match=r"two: out\[1\] must not share memory with out\[0\]"):
        fi.ops.two(x, out=(o, o))
    with pytest.raises(ValueError, match=r"two: out\[1\] must not share memory with out\[0\]"):
        fi.ops.two(x, out=(buf[:3], buf[2:5]))
    with pytest.raises(TypeError, match=r"two: out\[1\] must be an array; got None"):
        fi.ops.two(x, out=(o, None))
    with pytest.raises(TypeError, match=r"two: out must be an array or a tuple of arrays; got "
                                        r"a list"):
        fi.ops.two(x, out=[o, o])
    with pytest.raises(TypeError, match=r"two: w must be a float; got NoneType None"):
        fi.ops.two(x, w=None)
    p, q = fi.ops.two(x, out=(buf[:3], buf[3:]))
    np.testing.assert_array_equal(buf, [1, 2, 3, 0, 10, 20])
    torch = pytest.importorskip("torch")
    # every torch output tells autograd it was written (only the last one did: a graph
    # that saved the first used its new values silently)
    o0, o1 = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for target in (o0, o1):
        assert_autograd_sees_write(torch, target, lambda: fi.ops.two(x, out=(o0, o1)))
    r0, r1 = fi.ops.two(x, out=(o0, o1))
    assert r0 is o0 and r1 is o1


def test_backend_of_names_every_array():
    with pytest.raises(ValueError, match=r"backend_of: names must name every array: 2 arrays, "
                                         r"1 names"):
        fi.backend_of(np.zeros(3), np.zeros(2), names=("x",))


def test_same_dtype_without_arrays_is_a_type_error():
    from fastinterp._validate import same_dtype
    with pytest.raises(TypeError, match=r"f: at least one input array is required; got none"):
        same_dtype("f")
    with pytest.raises(TypeError, match=r"f: x must be an array; got None"):
        same_dtype("f", x=None)


def test_reduction_op_threads_follow_the_work_size(nthreads_kernel):
    fi.plugins.register_cfunc("rowred", "float64", nthreads_kernel, signature="x(m, n) -> y(m)")
    fi.plugins.register_cfunc("ident", "float64", nthreads_kernel, signature="x(...) -> y(...)")
    before = fi.get_num_threads()
    fi.set_num_threads(2)
    try:
        big = np.ones((4, 10**5))
        assert fi.ops.ident(big)[0, 0] == 2
        assert fi.ops.rowred(big)[0] == 2
        assert fi.ops.rowred(np.ones((4, 3)))[0] == 1      # still serial for tiny inputs
    finally:
        fi.set_num_threads(before)


@pytest.mark.parametrize("size", [2**63, 99999999999999999999999])
def test_signature_size_beyond_int64_refused(nthreads_kernel, size):
    before = snapshot()
    with pytest.raises(PluginError, match=rf"signature size must be in \[0, 2\*\*63 - 1\] "
                                          rf"\(int64\); got {size}"):
        fi.plugins.register_cfunc("huge", "float64", nthreads_kernel,
                                  signature=f"x(...) -> y({size})")
    assert snapshot() == before
    sig = Signature.parse(f"x(n) -> y({2**63 - 1})", "t")
    assert sig.outputs[0].dims == (2**63 - 1,)


@pytest.mark.parametrize("size", [2**63 - 1, 2**40])
def test_an_output_beyond_memory_is_a_memory_error_naming_it(nthreads_kernel, size):
    """A signature may declare any output size: one the machine cannot hold is a
    MemoryError naming the op and the output (NumPy's own "array is too big" before)."""
    fi.plugins.register_cfunc("big", "float64", nthreads_kernel, signature=f"x(n) -> y({size})")
    with pytest.raises(MemoryError, match=rf"big: output y of shape \({size},\) would need"):
        fi.ops.big(np.zeros(3))


# --------------------------------------------------------------------------- built-ins from C
@pytest.fixture(scope="session")
def c_caller(build_dir):
    lib = ctypes.CDLL(str(compile_so(SOURCES / "call_builtin.c", build_dir / "libcaller.so")))
    f32p = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
    lib.run_lerp.argtypes = [ctypes.c_void_p, f32p, f32p, f32p, f32p, ctypes.c_int64,
                             ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_char_p,
                             ctypes.c_size_t]
    lib.has_lerp_f16.argtypes = [ctypes.c_void_p]
    lib.lerp_bad_call.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    return lib


def _table_from_capsule():
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get(fi.plugins.builtin_capsule(), b"fastinterp.builtin_kernels")


def _table_from_symbol():
    from fastinterp._cpu import abi
    fn = ctypes.CDLL(abi.__file__).fastinterp_builtin_kernels
    fn.restype = ctypes.c_void_p
    return fn()


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("source", [_table_from_capsule, _table_from_symbol])
def test_builtin_lerp_called_from_c(c_caller, source, nthreads, rng):
    table = source()
    assert table == _table_from_capsule()
    err = ctypes.create_string_buffer(256)
    for rows, cols in [(1, 1), (3, 17), (40, 20000)]:
        a, b = rand(rng, (rows, cols), np.float32), rand(rng, (rows, cols), np.float32)
        t = rand(rng, (rows, cols), np.float32)
        for t_arg, stride, t_py in [(t, 1, t), (np.float32([0.7]), 0, np.float32(0.7)),
                                    (np.float32([0.2]), 0, np.float32(0.2))]:
            out = np.full((rows, cols), np.nan, np.float32)
            status = c_caller.run_lerp(table, out, a, b, t_arg, stride, rows, cols, nthreads,
                                       err, 256)
            assert status == 0, err.value
            np.testing.assert_array_equal(out, fi.lerp(a, b, t_py))
    assert c_caller.has_lerp_f16(table) == 0
    assert c_caller.lerp_bad_call(table, err, 256) == 1
    assert err.value.decode() == "lerp: expects 3 inputs (a, b, t) and 1 output; got 1 and 1"


def _grid_sample_exported():
    keys = {(k["op"], k["dtype"]) for k in fi.plugins.builtin_kernels()}
    if ("grid_sample", "float32") not in keys:
        pytest.skip("grid_sample is not built into this fastinterp")


def test_grid_sample_codes_match_the_front():
    _grid_sample_exported()
    from fastinterp import sample
    assert fi.plugins.GRID_MODES == sample._MODE_CODE
    assert fi.plugins.GRID_PADDINGS == sample._PAD_CODE
    header = (Path(fi.get_include()) / "fastinterp" / "plugin.h").read_text()
    for name, code in fi.plugins.GRID_MODES.items():
        assert f"#define FI_GRID_{name.upper()} {code}" in header
    for name, code in fi.plugins.GRID_PADDINGS.items():
        assert f"#define FI_PAD_{name.upper()} {code}" in header


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("align", [False, True])
def test_builtin_grid_sample_called_from_c(c_caller, rng, align, channels_last):
    _grid_sample_exported()
    table = _table_from_capsule()
    i64p = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
    f32p = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
    c_caller.run_grid_sample.argtypes = [ctypes.c_void_p, f32p, f32p, f32p, i64p, i64p, i64p,
                                         i64p, ctypes.c_int32, ctypes.c_int, ctypes.c_char_p,
                                         ctypes.c_size_t]
    err = ctypes.create_string_buffer(256)
    N, C, H, W, Ho, Wo = 2, 3, 7, 9, 5, 11
    x = rand(rng, (N, H, W, C) if channels_last else (N, C, H, W), np.float32)
    grid = rng.uniform(-1.2, 1.2, (N, Ho, Wo, 2)).astype(np.float32)
    for mode in fi.plugins.GRID_MODES:
        for padding in fi.plugins.GRID_PADDINGS:
            ref = fi.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align,
                                 channels_last=channels_last)
            out = np.full(ref.shape, np.nan, np.float32)
            ints = np.array([fi.plugins.GRID_MODES[mode], fi.plugins.GRID_PADDINGS[padding],
                             align, channels_last], np.int64)
            status = c_caller.run_grid_sample(
                table, out, x, grid, np.array(x.shape, np.int64), np.array(grid.shape, np.int64),
                np.array(out.shape, np.int64), ints, 4, 2, err, 256)
            assert status == 0, err.value
            np.testing.assert_array_equal(out, ref)
    # Defaults for missing ints (bilinear, zeros, align_corners=False), and a bad grid.
    if not channels_last:
        out = np.empty((N, C, Ho, Wo), np.float32)
        shapes = [np.array(a.shape, np.int64) for a in (x, grid, out)]
        assert c_caller.run_grid_sample(table, out, x, grid, *shapes, ints, 0, 1, err, 256) == 0
        np.testing.assert_array_equal(out, fi.grid_sample(x, grid))
        bad = np.array([N, Ho, Wo, 3], np.int64)
        assert c_caller.run_grid_sample(table, out, x, grid, shapes[0], bad, shapes[2], ints, 0,
                                        1, err, 256) == 1
        assert err.value.decode() == "grid_sample: grid must have shape (N, H_out, W_out, 2) with N = 2"


def test_grid_sample_override_through_the_abi(rng, torch):
    """The exported grid_sample, registered as a plugin kernel, is indistinguishable."""
    _grid_sample_exported()
    from fastinterp.plugins import GridSampleKernel
    addr = {(k["op"], k["dtype"]): k["address"] for k in fi.plugins.builtin_kernels()}
    x = rand(rng, (2, 4, 6, 5), np.float64)
    grid = rng.uniform(-1.1, 1.1, (2, 3, 7, 2))
    refs = [fi.grid_sample(x, grid, mode=m, align_corners=True) for m in fi.plugins.GRID_MODES]
    kernel = GridSampleKernel("exported", "grid_sample", "float64",
                              addr[("grid_sample", "float64")], None, False)
    registry.register("grid_sample", "cpu", "float64", kernel, source="exported")
    try:
        for m, ref in zip(fi.plugins.GRID_MODES, refs):
            np.testing.assert_array_equal(fi.grid_sample(x, grid, mode=m, align_corners=True), ref)
            assert fi.last_kernel().source == "exported"
        got = fi.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), align_corners=True,
                             mode="bicubic")
        assert isinstance(got, torch.Tensor)
        np.testing.assert_array_equal(got.numpy(), refs[2])
    finally:
        registry.unregister("exported")
    fi.grid_sample(x, grid)
    assert fi.last_kernel().source == registry.BUILTIN


def _grid_sample_calls(rng, dtype):
    """grid_sample calls covering every option: (kwargs, reaches a plugin kernel)."""
    x = rand(rng, (2, 3, 6, 5), dtype)
    grid = rng.uniform(-1.3, 1.3, (2, 4, 3, 2)).astype(dtype)
    x3 = rand(rng, (1, 2, 3, 4, 5), dtype)
    grid3 = rng.uniform(-1.3, 1.3, (1, 2, 2, 3, 3)).astype(dtype)
    u8 = rng.integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
    calls = []
    for pad in ("zeros", "border", "reflection", "constant", "wrap"):
        for mode in fi.plugins.GRID_MODES:
            kw = dict(mode=mode, padding_mode=pad, align_corners=mode == "bicubic")
            if pad == "constant":
                kw["fill"] = 0.5
            calls.append(((x, grid), kw, pad != "wrap"))
            calls.append(((x3, grid3), kw, False))        # volumes: no ABI convention
    calls.append(((np.moveaxis(x, 1, -1), grid), dict(layout="NHWC"), True))
    calls.append(((np.moveaxis(x, 1, -1), grid), dict(layout="NHWC", padding_mode="constant",
                                                      fill=[1.0, -2.0, 3.0]), True))
    calls.append(((x[0], grid[0]), dict(layout="CHW", padding_mode="border"), True))
    if dtype == np.float32:
        calls.append(((u8, grid), dict(layout="NHWC", padding_mode="reflection"), True))
        calls.append(((u8, grid), dict(layout="NHWC", padding_mode="wrap"), False))
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grid_sample_override_is_indistinguishable_for_every_option(rng, dtype):
    """The exported grid_sample as a plugin kernel gives the built-in's results for every
    call: those the ABI cannot express (wrap padding, volumes) run the built-in kernel."""
    _grid_sample_exported()
    from fastinterp.plugins import GridSampleKernel
    name = np.dtype(dtype).name
    addr = {(k["op"], k["dtype"]): k["address"] for k in fi.plugins.builtin_kernels()}
    calls = _grid_sample_calls(rng, dtype)
    refs = [fi.grid_sample(*args, **kw) for args, kw, _ in calls]
    kernel = GridSampleKernel("exported", "grid_sample", name, addr[("grid_sample", name)],
                              None, False)
    registry.register("grid_sample", "cpu", name, kernel, source="exported")
    try:
        for (args, kw, by_plugin), ref in zip(calls, refs):
            np.testing.assert_array_equal(fi.grid_sample(*args, **kw), ref, err_msg=str(kw))
            expected = "exported" if by_plugin else registry.BUILTIN
            assert fi.last_kernel().source == expected, kw
    finally:
        registry.unregister("exported")


@pytest.fixture(scope="module")
def marker_grid_sample():
    """A numba grid_sample kernel that writes 7 everywhere."""
    numba = pytest.importorskip("numba")
    from fastinterp import numba_abi as nb

    @numba.cfunc(nb.signature)
    def sevens(inputs, n_in, outputs, n_out, params, err, err_size):
        y = nb.flat(outputs, 0, np.float32)
        for i in range(y.size):
            y[i] = 7.0
        return 0
    return sevens


def test_grid_sample_plugin_gets_the_calls_its_abi_expresses(marker_grid_sample, rng):
    """wrap padding and volumes run the built-in kernel below the plugin's; 'constant'
    runs the plugin's 'zeros' kernel plus fill times the weight outside (as built in: the
    plugin's 'border' minus its 'zeros' kernel on ones)."""
    calls = _grid_sample_calls(rng, np.float32)
    refs = [fi.grid_sample(*args, **kw) for args, kw, _ in calls]
    fi.plugins.register_cfunc("grid_sample", "float32", marker_grid_sample)
    for (args, kw, by_plugin), ref in zip(calls, refs):
        got = fi.grid_sample(*args, **kw)
        if not by_plugin:
            np.testing.assert_array_equal(got, ref, err_msg=str(kw))
            assert fi.last_kernel().source == registry.BUILTIN, kw
            continue
        assert fi.last_kernel().source == "numba.grid_sample", kw
        fill = np.asarray(kw.get("fill", 0.0), np.float32)
        # 'constant': out = zeros kernel (7) + fill * (border kernel on ones (7) - zeros
        # kernel on ones (7)): the fill's weight is what the two kernels' sums differ by
        want = 7 + fill * (np.float32(7) - np.float32(7))
        np.testing.assert_array_equal(got, np.broadcast_to(want, got.shape), err_msg=str(kw))
    # The float64 kernels stay built-in.
    x = rand(rng, (1, 2, 5, 5), np.float64)
    grid = rng.uniform(-1, 1, (1, 4, 3, 2))
    fi.grid_sample(x, grid, padding_mode="wrap")
    assert fi.last_kernel().source == registry.BUILTIN


def test_grid_sample_fallback_runs_the_kernel_below_a_stacked_plugin(marker_grid_sample, rng):
    """Two plugins stacked: a call the top one cannot take runs the one below it."""
    x = rand(rng, (1, 2, 3, 4, 5), np.float32)
    grid = rng.uniform(-1, 1, (1, 2, 2, 3, 3)).astype(np.float32)
    seen = []

    def volumes(out, x_, grid_, dims, *args):
        seen.append(len(dims))
        out[...] = 3.0
    registry.register("grid_sample", "cpu", "float32", volumes, source="python_volumes")
    try:
        fi.plugins.register_cfunc("grid_sample", "float32", marker_grid_sample)
        np.testing.assert_array_equal(fi.grid_sample(x, grid), 3.0)
        assert seen == [8] and fi.last_kernel().source == "python_volumes"
        fi.plugins.unload("numba.grid_sample")
    finally:
        registry.unregister("python_volumes")


def test_builtin_table_listing():
    keys = {(k["op"], k["device"], k["dtype"]) for k in fi.plugins.builtin_kernels()}
    assert {("lerp", "cpu", "float32"), ("lerp", "cpu", "float64")} <= keys


def test_builtin_kernel_loaded_as_plugin_matches(rng):
    """The exported float64 lerp, registered like a plugin kernel, equals the built-in."""
    from fastinterp.plugins import LerpKernel
    addr = {(k["op"], k["dtype"]): k["address"] for k in fi.plugins.builtin_kernels()}
    kernel = LerpKernel("exported", "lerp", "float64", addr[("lerp", "float64")], None, False)
    a, b, t = rand(rng, (5, 8), np.float64), rand(rng, (8,), np.float64), rand(rng, (5, 1), np.float64)
    ref = fi.lerp(a, b, t)
    registry.register("lerp", "cpu", "float64", kernel, source="exported")
    try:
        np.testing.assert_array_equal(fi.lerp(a, b, t), ref)
        assert fi.last_kernel().source == "exported"
    finally:
        registry.unregister("exported")


# --------------------------------------------------------------------------- threads, leaks
def test_concurrent_calls_from_four_threads(example_so, test_so):
    fi.plugins.load(example_so)
    with pytest.warns(fi.plugins.PluginWarning):
        fi.plugins.load(test_so)                 # sum_rows is FI_KERNEL_SERIAL
    errors, barrier = [], threading.Barrier(4)

    def work(k):
        rng = np.random.default_rng(k)
        try:
            barrier.wait()
            for _ in range(200):
                x = rng.standard_normal((64, 33)).astype(np.float32)
                y = rng.standard_normal((64, 33)).astype(np.float32)
                alpha = float(k + 1)
                np.testing.assert_allclose(fi.ops.scale_add(x, y, alpha=alpha), alpha * x + y,
                                           rtol=1e-6, atol=1e-6)
                np.testing.assert_allclose(fi.lerp(x, y, 0.25), x + 0.25 * (y - x),
                                           rtol=1e-6, atol=1e-6)
                xd = x.astype(np.float64)
                np.testing.assert_allclose(fi.ops.sum_rows(xd, w=alpha), alpha * xd.sum(1))
        except Exception as exc:  # reported in the main thread
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[0]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
@pytest.mark.skipif(os.environ.get("FASTINTERP_SANITIZE") == "1",
                    reason="AddressSanitizer keeps freed memory in quarantine: RSS is not flat")
def test_load_call_unload_cycles_keep_rss_flat(example_so):
    x = np.ones(8, np.float32)

    def cycle(n):
        for _ in range(n):
            fi.plugins.load(example_so)
            fi.ops.scale_add(x, x, alpha=2.0)
            fi.lerp(x, x, 0.5)
            fi.plugins.unload("example")
    cycle(500)                                  # warm up caches and allocator pools
    before = _rss_bytes()
    cycle(10_000)
    grown = _rss_bytes() - before
    assert grown < 2 * 2**20, f"RSS grew by {grown / 2**20:.2f} MiB over 10,000 cycles"
    assert fi.plugins.list() == []
    # Once nothing refers to its kernels, the library is unmapped (dlclose).
    fi.lerp(x, x, 0.5)                          # last_kernel() no longer holds it
    gc.collect()
    with open("/proc/self/maps") as f:
        assert str(example_so) not in f.read()


# --------------------------------------------------------------------------- discovery
def test_entry_point_discovery(example_so, tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "fi_example_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fi-example-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [fastinterp.plugins]
        example = fi_example_plugin:library_path
        broken = fi_example_plugin:does_not_exist
        """))
    (site / "fi_example_plugin.py").write_text(
        f"def library_path():\n    return {str(example_so)!r}\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(fi.plugins.PluginWarning, match="entry point 'broken'"):
        loaded = fi.plugins.discover()
    assert [p.name for p in loaded] == ["example"]
    assert_close(fi.ops.scale_add(np.ones(2), np.ones(2), alpha=2), [3.0, 3.0])
    with pytest.warns(fi.plugins.PluginWarning, match="broken"):
        assert fi.plugins.discover() == []      # already loaded: skipped quietly
    # Installed, but not loaded by a plain import.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", "import fastinterp as fi; print(fi.plugins.list())"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr


def test_entry_points_giving_no_path_are_named(example_so, tmp_path, monkeypatch):
    """An entry point whose value is not a path, a list of paths, a callable or None
    is skipped with a warning that says what it gave; a bytes path loads."""
    site = tmp_path / "site"
    dist = site / "fi_odd_plugins-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fi-odd-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [fastinterp.plugins]
        number = fi_odd_plugins:NUMBER
        gives_number = fi_odd_plugins:gives_number
        list_of_junk = fi_odd_plugins:JUNK
        as_bytes = fi_odd_plugins:AS_BYTES
        """))
    (site / "fi_odd_plugins.py").write_text(
        f"NUMBER = 5\nJUNK = [None]\nAS_BYTES = {os.fsencode(example_so)!r}\n"
        "def gives_number():\n    return 7\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(fi.plugins.PluginWarning) as record:
        loaded = fi.plugins.discover()
    assert [p.name for p in loaded] == ["example"]
    messages = sorted(str(w.message) for w in record)
    assert messages == [
        "discover: entry point 'gives_number' (fi_odd_plugins:gives_number) skipped: it must "
        "give a path (str, bytes or os.PathLike), a list of paths, a callable returning one "
        "of those, or None; got int 7.",
        "discover: entry point 'list_of_junk' (fi_odd_plugins:JUNK) skipped: load: path must "
        "be a str, bytes or os.PathLike; got NoneType None.",
        "discover: entry point 'number' (fi_odd_plugins:NUMBER) skipped: it must give a path "
        "(str, bytes or os.PathLike), a list of paths, a callable returning one of those, or "
        "None; got int 5.",
    ]


# --------------------------------------------------------------------------- example script
def test_example_builds_as_cpp(tmp_path, rng):
    """The header and the example also compile as C++ (a C++ plugin)."""
    _need(CXX)
    out = tmp_path / "libfi_example_cpp.so"
    subprocess.run([CXX, "-std=c++11", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
                    "-I", fi.get_include(), "-x", "c++", str(EXAMPLE), "-o", str(out)],
                   check=True, capture_output=True, text=True)
    fi.plugins.load(out)
    x, y = rand(rng, 5, np.float64), rand(rng, 5, np.float64)
    assert_close(fi.ops.scale_add(x, y, alpha=3.0), 3 * x + y)


def test_example_build_script(tmp_path):
    _need(CC)
    _need("sh")
    work = tmp_path / "plugin_c"
    shutil.copytree(EXAMPLE.parent, work, ignore=shutil.ignore_patterns("*.so"))
    res = subprocess.run(["sh", str(work / "build.sh")], capture_output=True, text=True,
                         env=dict(os.environ, PYTHON=sys.executable))
    assert res.returncode == 0, res.stderr
    info = fi.plugins.load(work / "libfi_example.so")
    assert info.name == "example"


# --------------------------------------------------------------------------- ABI 1.1
ABI_1_0 = str(SOURCES / "abi_1_0")        # the header as released with ABI 1.0, frozen


def _probe(build_dir, path, value, name="probe"):
    """Build probe.c at ``path`` (replacing what is there) returning ``value``."""
    return compile_so(SOURCES / "probe.c", path, f"-DVALUE={value}", f'-DNAME="{name}"')


def _probe_value():
    return fi.ops.probe_value(np.zeros(3))[0]


@pytest.mark.parametrize("replace", ["compile_in_place", "rename_over"])
def test_reload_rebuilt_library_runs_new_code(build_dir, tmp_path, replace):
    """A library rebuilt at the same path while the old one is still mapped (here
    kept by last_kernel()) is loaded anew, not handed back by dlopen."""
    path = tmp_path / "libprobe.so"
    _probe(build_dir, path, 1)
    fi.plugins.load(path)
    assert _probe_value() == 1
    fi.plugins.unload("probe")
    assert fi.last_kernel().source == "probe"          # the old library stays mapped
    for value in (2, 3):
        if replace == "compile_in_place":
            _probe(build_dir, path, value)
        else:
            os.replace(_probe(build_dir, tmp_path / "staging.so", value), path)
        info = fi.plugins.load(path)
        assert info.path == str(path)
        assert _probe_value() == value
        fi.plugins.unload("probe")
    assert sorted(os.listdir(tmp_path)) == ["libprobe.so"]   # no copy left behind


def test_reload_keeps_both_builds_apart(build_dir, tmp_path):
    """Two builds of one path loaded at once (under two names) each run their own code."""
    path = tmp_path / "libprobe.so"
    _probe(build_dir, path, 10, name="old")
    fi.plugins.load(path)
    old_kernel = registry.lookup("probe_value", "cpu", "float64")
    _probe(build_dir, path, 20, name="new")
    fi.plugins.load(path)
    assert _probe_value() == 20
    out = np.zeros(2)
    old_kernel((out,), (np.zeros(2),))
    np.testing.assert_array_equal(out, 10)
    fi.plugins.unload("new")
    assert _probe_value() == 10
    fi.plugins.unload("old")
    for _ in range(2):                    # the newest build, however often it is loaded
        fi.plugins.load(path)
        assert _probe_value() == 20
        fi.plugins.unload("new")
        old_kernel((out,), (np.zeros(2),))    # the old build, still mapped, still runs
        np.testing.assert_array_equal(out, 10)


def test_unchanged_library_is_shared_not_copied(build_dir, tmp_path):
    path = _probe(build_dir, tmp_path / "libprobe.so", 5)
    fi.plugins.load(path)
    first = inspect.unwrap(registry.lookup("probe_value", "cpu", "float64"))._owner
    fi.plugins.unload("probe")
    fi.plugins.load(path)
    again = inspect.unwrap(registry.lookup("probe_value", "cpu", "float64"))._owner
    assert again is first and not again.fresh_copy
    assert _probe_value() == 5


def test_refusing_plugin_says_why(build_dir):
    so = compile_so(SOURCES / "test_plugin.c", build_dir / "librefuse.so", "-DREFUSE")
    before = snapshot()
    with pytest.raises(PluginError, match=r"the plugin 'testplug' refused to load: testplug: "
                       r"needs a CPU with the MOON instruction set; nothing was registered"):
        fi.plugins.load(so)
    assert snapshot() == before


@pytest.mark.parametrize("variant, message", [
    ([], None),
    (["-DNULL_DESCRIPTOR"], r"fastinterp_plugin\(\) returned NULL without saying why"),
])
def test_abi_1_0_plugin_still_loads(build_dir, rng, variant, message):
    """A plugin built against the 1.0 header (no `error` field, 1.0 struct sizes)."""
    so = compile_so(SOURCES / "test_plugin.c", build_dir / f"libv10{len(variant)}.so",
                    *variant, '-DNAME="v10"', include=ABI_1_0)
    if message is not None:
        with pytest.raises(PluginError, match=message):
            fi.plugins.load(so)
        return
    with pytest.warns(fi.plugins.PluginWarning, match="CUDA skipped"):
        info = fi.plugins.load(so)
    assert info.abi == (1, 0)
    x = rand(rng, (3, 4), np.float64)
    assert_close(fi.ops.sum_rows(x, w=2.0, bias=1), 2 * x.sum(axis=1) + 1)
    a, b = rand(rng, (2, 5), np.float64), rand(rng, (5,), np.float64)
    assert_close(fi.lerp(a, b, 0.3), a + 0.3 * (b - a))
    assert fi.last_kernel().source == "v10"
    with pytest.raises(PluginKernelError, match="refusing 4 elements on purpose"):
        fi.ops.fail_op(np.ones(4, np.float32))


def test_readonly_inputs_and_strides_reach_the_kernel(build_dir, rng, torch):
    fi.plugins.load(compile_so(SOURCES / "probe.c", build_dir / "libprobe_flags.so"))
    size = fi.plugins._abi().SIZES["params"]
    ro = rand(rng, (4, 6), np.float64)
    ro.flags.writeable = False
    rw = rand(rng, (4, 6), np.float64)
    ro_f = np.asfortranarray(ro)
    ro_f.flags.writeable = False
    cases = [
        ((ro, rw), [1, 0]),
        ((rw, ro), [0, 1]),
        ((ro[:, ::2], rw[:, ::2]), [1, 0]),       # copied to be contiguous: still marked
        ((ro[::-1], ro_f), [1, 1]),               # negative strides, Fortran order
        ((np.zeros(()), np.zeros(())), [0, 0]),   # 0-d
        ((np.zeros((0, 3)), np.zeros((0, 3))), [0, 0]),
        ((torch.zeros(4, 6, dtype=torch.float64), rw), [0, 0]),
    ]
    for (a, b), marks in cases:
        got = fi.ops.probe_flags(a, b)
        np.testing.assert_array_equal(np.asarray(got), marks + [1, size])
    assert size == fi.plugins._abi().PARAMS_OFFSETS["readonly_inputs"] + 8


def test_readonly_mask_through_numba(rng):
    numba = pytest.importorskip("numba")
    from fastinterp import numba_abi as nb

    @numba.cfunc(nb.signature)
    def marks(inputs, n_in, outputs, n_out, params, err, err_size):
        y = nb.flat(outputs, 0, np.float64)
        for i in range(n_in):
            y[i] = nb.input_readonly(params, i)
        return 0
    fi.plugins.register_cfunc("marks", "float64", marks, signature="a(n), b(n) -> out(2)")
    a = np.ones(3)
    a.flags.writeable = False
    np.testing.assert_array_equal(fi.ops.marks(a, np.ones(3)), [1, 0])
    np.testing.assert_array_equal(fi.ops.marks(np.ones(3), a), [0, 1])

    @numba.cfunc(nb.signature)
    def lerp_marks(inputs, n_in, outputs, n_out, params, err, err_size):
        y = nb.flat(outputs, 0, np.float64)
        for i in range(y.size):
            y[i] = 4 * nb.input_readonly(params, 0) + 2 * nb.input_readonly(params, 1) \
                + nb.input_readonly(params, 2)
        return 0
    fi.plugins.register_cfunc("lerp", "float64", lerp_marks)      # through the lerp front
    b = np.ones((2, 3))
    np.testing.assert_array_equal(fi.lerp(a, b, 0.5), 4)
    np.testing.assert_array_equal(fi.lerp(b, b, b), 0)
    # read-only inputs the front copies (strided, broadcast views) keep their mark
    wide = np.ones((2, 6))
    wide.flags.writeable = False
    np.testing.assert_array_equal(fi.lerp(wide[:, ::2], b, b), 4)
    np.testing.assert_array_equal(fi.lerp(b, np.broadcast_to(np.ones(3), (2, 3)), b), 2)


_HEADER_USE = r"""
#include <fastinterp/plugin.h>
static int k(const fi_tensor_t* in, int32_t n_in, const fi_tensor_t* out, int32_t n_out,
             const fi_params_t* params, char* err, size_t err_size) {
  int64_t n = fi_numel(&out[0]) + fi_stride(&in[0], 0) + fi_is_contiguous(&in[0]);
  (void)n_in; (void)n_out;
  if (!fi_dtype_is(&in[0], FI_DTYPE_FLOAT, 32) || fi_input_readonly(params, 0) < 0)
    return fi_error(err, err_size, FI_ERR_INVALID, "k: %lld", (long long)n);
  return FI_PARAMS_HAS(params, readonly_inputs) ? FI_OK : FI_ERR_UNSUPPORTED;
}
static const fi_kernel_t kernels[] = {
    {"k", FI_DEVICE_CPU, {FI_DTYPE_FLOAT, 32, 1}, k, "x(...) -> out(...)", NULL, NULL, 0, 0}};
static fi_plugin_t plugin = FI_PLUGIN_INIT("use", "1", kernels, 1);
FI_PLUGIN_ENTRY {
  fi_params_t p;
  fi_params_init(&p);
  if (p.nthreads != 1) return fi_plugin_refuse(&plugin, "never");
  return fi_find_kernel(&plugin, "k", FI_DEVICE_CPU, FI_DTYPE_FLOAT, 32) ? &plugin : NULL;
}
"""


@pytest.mark.parametrize("compiler, std", [(CC, "-std=c99"), (CC, "-std=c11"),
                                           (CXX, "-std=c++11"), (CXX, "-std=c++17")])
def test_header_and_helpers_compile_warning_free(compiler, std, tmp_path):
    """Every macro and inline helper, compiled (not just parsed) as C and C++ with
    -Wall -Wextra -pedantic -Werror: -Wmissing-field-initializers included."""
    _need(compiler)
    src = tmp_path / "use.c"
    src.write_text(_HEADER_USE)
    lang = "c++" if compiler == CXX else "c"
    subprocess.run([compiler, std, "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror", "-fPIC",
                    "-c", "-x", lang, "-I", fi.get_include(), str(src), "-o",
                    str(tmp_path / "use.o")], check=True, capture_output=True, text=True)


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("kwargs, error, message", [
    ({"bias": 2**70}, ValueError,
     r"sum_rows: bias must be an int in \[-2\*\*63, 2\*\*63 - 1\] \(int64\); "
     r"got 1180591620717411303424\."),
    ({"bias": -2**63 - 1}, ValueError, r"bias must be an int in .*; got -9223372036854775809\."),
    ({"bias": True}, TypeError, r"sum_rows: bias must be an int; got bool True\."),
    ({"bias": 1.0}, TypeError, r"sum_rows: bias must be an int; got float 1\.0\."),
    ({"bias": np.float64(2)}, TypeError, r"bias must be an int; got float64"),
    ({"bias": "3"}, TypeError, r"bias must be an int; got str '3'\."),
    ({"w": "1.5"}, TypeError, r"sum_rows: w must be a float; got str '1\.5'\."),
    ({"w": False}, TypeError, r"sum_rows: w must be a float; got bool False\."),
    ({"w": 1j}, TypeError, r"w must be a float; got complex"),
    ({"w": np.ones(1)}, TypeError, r"w must be a float; got ndarray"),
    ({"w": 10**400}, ValueError, r"sum_rows: w must be a float within the float64 range"),
    ({"w": 1.0, "z": 2}, TypeError, r"sum_rows: unexpected keyword argument 'z'; "
                                    r"parameters: w, bias\."),
])
def test_parameter_edge_cases_are_clear_errors(test_so, kwargs, error, message):
    with pytest.warns(fi.plugins.PluginWarning):
        fi.plugins.load(test_so)
    with pytest.raises(error, match=message):
        fi.ops.sum_rows(np.ones((2, 3)), **kwargs)


@pytest.mark.parametrize("bias", [2**63 - 1, -2**63, np.int64(-5), np.uint8(7), 0])
def test_int_parameter_extremes_reach_the_kernel(test_so, bias):
    with pytest.warns(fi.plugins.PluginWarning):
        fi.plugins.load(test_so)
    got = fi.ops.sum_rows(np.zeros((2, 3)), bias=bias)
    np.testing.assert_array_equal(got, float(int(bias)))


def test_nan_parameter_reaches_the_kernel(test_so, example_so):
    with pytest.warns(fi.plugins.PluginWarning):
        fi.plugins.load(test_so)
    assert np.isnan(fi.ops.sum_rows(np.ones((1, 2)), w=np.nan)).all()
    fi.plugins.load(example_so)                 # scale_add refuses a non-finite alpha
    x = np.ones(3)
    for alpha in (np.nan, np.inf):
        with pytest.raises(ValueError, match=r"scale_add: plugin kernel example:scale_add "
                           r"\(cpu, float64\) failed with status 1 \(invalid argument\): "
                           r"scale_add: alpha must be finite") as info:
            fi.ops.scale_add(x, x, alpha=alpha)
        assert isinstance(info.value, fi.plugins.PluginArgumentError)
        assert isinstance(info.value, PluginKernelError)


@pytest.mark.parametrize("params, message", [
    ("k: int = 99999999999999999999999", "default of parameter 'k' must be an int64"),
    ("k: int = 1.5", "default of parameter 'k' must be an int64"),
    ("w: float = one", "default of parameter 'w' must be a float"),
])
def test_out_of_range_defaults_refused_at_declaration(params, message):
    with pytest.raises(ValueError, match=message):
        parse_params(params, "t")


# --------------------------------------------------------------------------- hostile calls
def test_hostile_arrays_give_clear_errors(example_so):
    fi.plugins.load(example_so)
    deep = np.zeros((1,) * 33)
    with pytest.raises(ValueError, match=r"scale_add: .*at most 32 dimensions; got 33"):
        fi.ops.scale_add(deep, deep)
    from fastinterp._cpu import abi
    addr = inspect.unwrap(registry.lookup("scale_add", "cpu", "float64")).address
    x = np.ones(3)
    with pytest.raises(ValueError, match=r"myop: at most 16 arrays per call; got 17"):
        abi.call(addr, (x,) * 16, (x.copy(),), (1.0,), (), 1, None, "myop")
    with pytest.raises(ValueError, match=r"myop: at most 16 float and 16 int parameters"):
        abi.call(addr, (x, x), (x.copy(),), (1.0,) * 17, (), 1, None, "myop")
    with pytest.raises(ValueError, match=r"myop: int parameters must lie in \[-2\*\*63"):
        abi.call(addr, (x, x), (x.copy(),), (1.0,), (2**64,), 1, None, "myop")
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"myop: outputs must be writable arrays; output 0"):
        abi.call(addr, (x, x), (ro,), (1.0,), (), 1, None, "myop")
    np.testing.assert_array_equal(ro, 0)
    with pytest.raises(ValueError, match="out"):
        fi.ops.scale_add(x, x, out=ro)
    np.testing.assert_array_equal(ro, 0)
    # Zero-size and negative-stride inputs are fine.
    assert fi.ops.scale_add(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 4)
    y = np.arange(6.0)
    np.testing.assert_array_equal(fi.ops.scale_add(y[::-1], y[::-2].repeat(2), alpha=2),
                                  2 * y[::-1] + y[::-2].repeat(2))


_HOSTILE_SCRIPT = """
import ctypes, json, sys
import fastinterp as fi
lib = ctypes.CDLL(sys.argv[1])
lib.hostile_call.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                             ctypes.c_size_t]
get = ctypes.pythonapi.PyCapsule_GetPointer
get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
table = get(fi.plugins.builtin_capsule(), b"fastinterp.builtin_kernels")
for op in sys.argv[2:]:
    for which in range(12):
        print(json.dumps([op, which]), flush=True)          # the case about to run
        err = ctypes.create_string_buffer(512)
        status = lib.hostile_call(table, op.encode(), which, err, 512)
        print(json.dumps([op, which, status, err.value.decode()]), flush=True)
"""


@pytest.fixture(scope="module")
def hostile_results(build_dir):
    """Every hostile C call of the built-in kernels, run in a child process (a crash
    there fails the tests below instead of ending the test run)."""
    lib = compile_so(SOURCES / "call_builtin.c", build_dir / "libhostile.so")
    ops = [k for k in ("lerp", "grid_sample")
           if (k, "float32") in {(e["op"], e["dtype"]) for e in fi.plugins.builtin_kernels()}]
    res = subprocess.run([sys.executable, "-c", _HOSTILE_SCRIPT, str(lib), *ops],
                         capture_output=True, text=True)
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    done = {(op, which): (status, text) for op, which, *rest in lines if rest
            for status, text in [rest]}
    crashed = lines[-1] if lines and len(lines[-1]) == 2 else None
    return done, crashed, res


@pytest.mark.parametrize("op", ["lerp", "grid_sample"])
@pytest.mark.parametrize("which, message", [
    (0, r"output 0 must have 0 to 32 dimensions; got -1"),
    (1, r"input 0 must have 0 to 32 dimensions; got 1000"),
    (2, r"input 0 has 4 dimensions and a NULL shape"),
    (3, r"has size -2 on axis 2; sizes must be >= 0"),
    (4, r"input 0 has more than 2\*\*63 - 1 elements"),
    (5, r"input 0 has elements and NULL data"),
    (6, r"inputs and outputs must not be NULL"),
    (7, r"params->struct_size must be at least 40 \(ABI 1\.0\); got 4"),
    (8, r"params must give n_floats, n_ints >= 0 and non-NULL arrays for them"),
    (9, None),
    (10, r"grid_sample: int parameter 0 \(mode\) must be 0, 1 or 2; got 4294967296"),
    (11, r"grid_sample: int parameter 2 \(align_corners\) must be 0 or 1; got 2"),
])
def test_builtin_kernels_refuse_hostile_c_calls(hostile_results, op, which, message):
    if op == "grid_sample":
        _grid_sample_exported()
    done, crashed, res = hostile_results
    assert (op, which) in done, f"crashed at {crashed} (exit {res.returncode}): {res.stderr[-2000:]}"
    status, text = done[op, which]
    if message is None or (op == "lerp" and which >= 10):   # valid calls
        assert status == 0, text
        return
    assert status == 1
    assert text.startswith(f"{op}: ")
    assert re.search(message, text), text


def test_size_name_repeated_within_one_operand_must_agree():
    numba = pytest.importorskip("numba")
    from fastinterp import numba_abi as nb

    @numba.cfunc(nb.signature)
    def diag(inputs, n_in, outputs, n_out, params, err, err_size):
        x = nb.flat(inputs, 0, np.float64)
        y = nb.flat(outputs, 0, np.float64)
        n = y.size
        for i in range(n):
            y[i] = x[i * n + i]
        return 0
    fi.plugins.register_cfunc("diag", "float64", diag, signature="x(n, n) -> out(n)")
    np.testing.assert_array_equal(fi.ops.diag(np.arange(9.0).reshape(3, 3)), [0, 4, 8])
    for shape in ((3, 2), (2, 3)):      # the kernel would read past the input
        with pytest.raises(ValueError, match=r"diag: x must have shape \(n, n\)"):
            fi.ops.diag(np.zeros(shape))


def test_lazily_registered_builtin_op_is_refused_before_its_module_is_imported():
    """nca_softmax's kernel is registered when fastinterp.models is imported; a plugin
    claiming that name first must be refused all the same (a fresh interpreter)."""
    pytest.importorskip("numba")
    code = """
import sys, numpy as np, fastinterp as fi
from numba import cfunc
from fastinterp import numba_abi as nb
assert "fastinterp.models" not in sys.modules
@cfunc(nb.signature)
def k(inputs, n_in, outputs, n_out, params, err, err_size):
    return 0
try:
    fi.plugins.register_cfunc("nca_softmax", "float64", k, signature="x(...) -> out(...)")
except fi.plugins.PluginError as e:
    print("refused:", e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("refused:") and "nca_softmax" in out


@pytest.mark.parametrize("dtype", ["bogus", None, "int32"])
def test_register_cfunc_names_a_bad_dtype(dtype):
    numba = pytest.importorskip("numba")
    from fastinterp import numba_abi as nb

    @numba.cfunc(nb.signature)
    def k(inputs, n_in, outputs, n_out, params, err, err_size):
        return 0
    with pytest.raises(TypeError, match=r"register_cfunc\('odd'\): dtype must be float32 or "
                                        r"float64; got"):
        fi.plugins.register_cfunc("odd", dtype, k, signature="x(...) -> out(...)")


@pytest.fixture(scope="module")
def copy_kernel():
    """A numba kernel copying input 0 into output 0 (sizes from the input)."""
    numba = pytest.importorskip("numba")
    from fastinterp import numba_abi as nb

    @numba.cfunc(nb.signature)
    def copy(inputs, n_in, outputs, n_out, params, err, err_size):
        x, y = nb.flat(inputs, 0, np.float64), nb.flat(outputs, 0, np.float64)
        for i in range(x.size):
            y[i] = x[i]
        return 0
    return copy


@pytest.mark.parametrize("signature, out, message", [
    ("x(n) -> a(m), b(m)", (np.zeros(2), np.zeros(5)), r"b must have shape \(m,\) = \(2,\)"),
    ("x(n) -> out(m, m)", np.zeros((2, 5)), r"out must have shape \(m, m\)"),
    ("x(n) -> out(..., n)", np.zeros(7), r"out must have shape \(\.\.\., n\) = \(3,\)"),
    ("x(n) -> out(..., n)", np.zeros((2, 5)), r"out must have shape \(\.\.\., n\) = \(2, 3\)"),
    ("x(n) -> out(..., n)", np.zeros(()), r"out must have shape \(\.\.\., n\); got \(\)"),
    ("x(n) -> a(..., m), b(..., m)", (np.zeros((2, 4)), np.zeros((3, 4))),
     r"b must have shape \(\.\.\., m\) = \(2, 4\)"),
])
def test_outputs_given_agree_on_the_sizes_no_input_determines(copy_kernel, signature, out,
                                                              message):
    """A size or batch shape only outputs name was left unchecked across the caller's
    out= arrays: a kernel reading m from one output wrote past the end of another."""
    fi.plugins.register_cfunc("sizes", "float64", copy_kernel, signature=signature)
    with pytest.raises(ValueError, match=rf"^sizes: {message}"):
        fi.ops.sizes(np.zeros(3), out=out)
    outs = out if isinstance(out, tuple) else (out,)
    assert all((o == 0).all() for o in outs)


def test_outputs_given_that_agree_are_taken(copy_kernel):
    fi.plugins.register_cfunc("sizes", "float64", copy_kernel,
                              signature="x(n) -> a(..., m), b(..., m)")
    a, b = np.zeros((2, 4)), np.zeros((2, 4))
    fi.ops.sizes(np.arange(3.0), out=(a, b))
    np.testing.assert_array_equal(a.ravel()[:3], [0, 1, 2])


@pytest.mark.parametrize("signature, params, call", [
    ("op(...) -> y(...)", None, lambda f, x: f(x)),
    ("writes(...) -> y(...)", None, lambda f, x: f(x)),
    ("op(...) -> y(...)", None, lambda f, x: f(op=x)),
    ("x(...), self(...) -> y(...)", None, lambda f, x: f(x, self=x)),
    ("x(...) -> y(...)", "self: float = 1", lambda f, x: f(x, self=2.0)),
    ("x(...) -> y(...)", "self: float", lambda f, x: f(x, self=2.0)),
])
def test_any_declared_name_can_be_passed(copy_kernel, signature, params, call):
    """Inputs named op or writes, and a parameter or input named self, clashed with the
    call machinery's own arguments: every call failed (TypeError, KeyError)."""
    fi.plugins.register_cfunc("named", "float64", copy_kernel, signature=signature,
                              params=params)
    np.testing.assert_array_equal(call(fi.ops.named, np.arange(3.0)), [0, 1, 2])


def test_several_outputs_are_named_in_their_errors(copy_kernel):
    fi.plugins.register_cfunc("two", "float64", copy_kernel, signature="x(n) -> a(n), b(n)")
    a = np.zeros(3)
    with pytest.raises(ValueError, match=r"^two: out\[1\] must not share memory with out\[0\]"):
        fi.ops.two(np.zeros(3), out=(a, a))
    with pytest.raises(TypeError, match=r"^two: out\[0\] must have dtype float64"):
        fi.ops.two(np.zeros(3), out=(np.zeros(3, np.float32), np.zeros(3)))


def test_an_entry_unregistered_while_it_is_resolved_is_not_cached(monkeypatch):
    """A lookup racing unload() put the entry back into the resolved cache after unload
    removed it: the stale entry held its kernel (and a plugin's library) for good."""
    def kernel(*args):
        return None
    entry = registry.register("lerp", "cpu", "float64", kernel, source="racing")
    real = registry.ieee_subnormals

    def unregister_meanwhile(fn):
        registry.unregister("racing")      # another thread's unload, mid-lookup
        return real(fn)
    monkeypatch.setattr(registry, "ieee_subnormals", unregister_meanwhile)
    try:
        registry.lookup("lerp", "cpu", "float64")
    finally:
        registry.unregister("racing")
    assert entry not in registry._resolved


def test_a_library_named_as_a_registered_cfunc_says_where_that_came_from(copy_kernel, test_so):
    fi.plugins.register_cfunc("copied", "float64", copy_kernel, signature="x(n) -> out(n)",
                              name="testplug")
    with pytest.raises(fi.plugins.PluginError,
                       match=r"a plugin named 'testplug' is already loaded \(from register_cfunc\)"):
        fi.plugins.load(test_so)
