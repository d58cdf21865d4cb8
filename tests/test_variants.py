"""CPU kernel variants: which build is chosen at import, forcing one, and that they agree.

Every kernel family is compiled once per variant (x86-64-v2, -v3, -v4, or a
-march=native build); fastinterp._cpu loads the fastest one the CPU runs.
Variants may differ in the last bits (FMA contraction, GEMM vector width):
they are compared within the suite's tolerances, and on the properties that
hold exactly in every build (self-distances 0, lerp end points, kNN order).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastinterp as fi
import fastinterp._cpu as cpu
from conftest import TOL

HERE = Path(__file__).resolve().parent
V4, V3, V2 = "x86_64_v4", "x86_64_v3", "x86_64_v2"


# ------------------------------------------------------------------ the choice
@pytest.mark.parametrize("level, expected", [(4, V4), (3, V3), (2, V2)])
def test_auto_takes_the_widest_variant_the_cpu_runs(level, expected):
    assert cpu.choose_variant([V4, V3, V2], level) == expected
    assert cpu.choose_variant([V4, V3, V2], level, "auto") == expected
    assert cpu.choose_variant([V4, V3, V2], level, "") == expected


def test_auto_prefers_native_then_generic():
    assert cpu.choose_variant(["native", V4, V3, V2], 4) == "native"
    assert cpu.choose_variant(["generic"], 0) == "generic"
    assert cpu.choose_variant([V3, V2], 4) == V3          # only what is built
    assert cpu.choose_variant([], 4) is None              # nothing built


def test_cpu_below_every_variant_is_refused():
    with pytest.raises(ImportError, match=r"this CPU \(x86-64 level 1\) can run none of the "
                                          r"kernel variants built \(x86_64_v4, x86_64_v3\)"):
        cpu.choose_variant([V4, V3], 1)


@pytest.mark.parametrize("name", ["x86-64-v3", "X86_64_V3", " x86_64_v3 "])
def test_forced_names_are_normalised(name):
    assert cpu.choose_variant([V4, V3, V2], 4, name) == V3


@pytest.mark.parametrize("forced, level, message", [
    ("avx9000", 4, r"FASTINTERP_CPU_VARIANT must be 'auto' or one of native, x86_64_v4, "
                   r"x86_64_v3, x86_64_v2, generic; got 'avx9000'"),
    ("native", 4, r"FASTINTERP_CPU_VARIANT='native' names a variant that is not built "
                  r"\(built: x86_64_v4, x86_64_v2\)"),
    ("x86-64-v4", 3, r"FASTINTERP_CPU_VARIANT='x86-64-v4' needs an x86-64-v4 CPU; this one is "
                     r"level 3 and would stop at an illegal instruction"),
])
def test_bad_forced_variant_is_refused(forced, level, message):
    with pytest.raises(ImportError, match=message):
        cpu.choose_variant([V4, V2], level, forced)


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists() or platform.machine() != "x86_64",
                    reason="needs Linux on x86-64")
def test_cpu_level_agrees_with_proc_cpuinfo():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    # /proc/cpuinfo's names: sse3 is "pni", lzcnt is "abm", bmi is "bmi1".
    v2 = {"pni", "ssse3", "sse4_1", "sse4_2", "popcnt"} <= flags
    v3 = v2 and {"avx", "avx2", "bmi1", "bmi2", "fma", "f16c", "abm", "movbe"} <= flags
    v4 = v3 and {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= flags
    assert cpu.cpu_level() == (4 if v4 else 3 if v3 else 2 if v2 else 1)
    assert ("avx512f" in cpu.cpu_features() and cpu.cpu_features()["avx512f"]) == \
        ("avx512f" in flags)


# ------------------------------------------------------------------ what is loaded
def test_every_family_comes_from_the_chosen_variant():
    import importlib
    assert cpu.VARIANT in cpu.built_variants()
    folder = Path(cpu.variant_info()["path"])
    assert folder.name == cpu.VARIANT
    for family in cpu.families():
        module = importlib.import_module(f"fastinterp._cpu.{family}")
        assert module.__name__ == f"fastinterp._cpu.{family}"
        assert Path(module.__file__).parent == folder, (family, module.__file__)


def test_show_config_names_the_variant(capsys):
    report = fi.show_config("dicts")
    assert report["kernels"]["variant"] == cpu.VARIANT
    assert report["kernels"]["missing"] == []
    assert report["kernels"]["cpu_level"] == cpu.cpu_level()
    assert fi.show_config() is None
    out = capsys.readouterr().out
    assert f"variant: {cpu.VARIANT}" in out and "FASTINTERP_CPU_VARIANT" in out


def test_show_config_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match=r"show_config: mode must be 'stdout' or 'dicts'; "
                                         r"got 'json'"):
        fi.show_config("json")  # type: ignore[call-overload]


def _run_with(variant: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, cpu.ENV: variant}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=HERE, timeout=300)


def test_import_with_an_unknown_forced_variant_says_so():
    out = _run_with("sse9", "import fastinterp")
    assert out.returncode != 0
    assert "FASTINTERP_CPU_VARIANT must be 'auto' or one of" in out.stderr
    assert "got 'sse9'" in out.stderr


def test_show_config_reports_the_variant_forced_at_import():
    """``forced`` says how this process chose its kernels, whatever the variable says now."""
    code = ("import os, json, fastinterp as fi\n"
            f"os.environ.pop({cpu.ENV!r})\n"
            "print(json.dumps(fi.show_config('dicts')['kernels']['forced']))")
    out = _run_with(cpu.VARIANT or "auto", code)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) is (cpu.VARIANT is not None)


def _selected_variants(value: str):
    """setup.py's selected_variants() with FASTINTERP_VARIANTS=value."""
    code = ("import runpy, sys, json\n"
            "sys.argv = ['setup.py', '--name']\n"
            "import setuptools; setuptools.setup = lambda **kw: None\n"
            "ns = runpy.run_path('setup.py')\n"
            "print(json.dumps(sorted(ns['selected_variants']())))")
    env = {**os.environ, "FASTINTERP_VARIANTS": value}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=HERE.parent, timeout=120)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="x86-64 variants")
@pytest.mark.skipif(not (HERE.parent / "setup.py").is_file(),
                    reason="the source tree's setup.py (not an installed wheel's tests)")
def test_the_build_refuses_a_variant_list_that_names_none():
    """FASTINTERP_VARIANTS=',' named nothing: nothing was built and every built variant
    pruned, an install without kernels; names are read in any case."""
    for value in (",", " , "):
        out = _selected_variants(value)
        assert out.returncode != 0 and "must name at least one variant" in out.stderr
    out = _selected_variants("X86-64-V3, x86_64_v2")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [V2, V3]


# ------------------------------------------------------------------ variants agree
def _workload() -> dict[str, np.ndarray]:
    """Fixed inputs through every family's kernels: what variants must agree on."""
    rng = np.random.default_rng(7)
    out: dict[str, np.ndarray] = {}
    for dt in (np.float32, np.float64):
        key = np.dtype(dt).name
        a = rng.standard_normal((37, 53)).astype(dt)
        b = rng.standard_normal((37, 53)).astype(dt)
        t = rng.random((37, 53)).astype(dt)
        out[f"lerp_{key}"] = fi.lerp(a, b, t)
        out[f"lerp_ends_{key}"] = np.stack([fi.lerp(a, b, 0.0), fi.lerp(a, b, 1.0)])
        out[f"slerp_{key}"] = fi.slerp(a, b, t[:, 0])
        x = rng.standard_normal((2, 3, 11, 13)).astype(dt)
        theta = np.array([[[0.9, -0.3, 0.1], [0.2, 1.1, -0.05]]] * 2, dt)
        grid = fi.affine_grid(theta, (2, 3, 7, 9))
        go = rng.standard_normal((2, 3, 7, 9)).astype(dt)
        for mode in ("bilinear", "bicubic"):
            out[f"grid_{mode}_{key}"] = fi.grid_sample(x, grid, mode=mode)
            gi, gg = fi.grid_sample_backward(go, x, grid, mode=mode)
            out[f"grid_{mode}_bwd_input_{key}"], out[f"grid_{mode}_bwd_grid_{key}"] = gi, gg
        for mode, kw in (("bilinear", {}), ("area", {}), ("bilinear_aa", {"antialias": True})):
            size = (5, 6) if mode != "bilinear" else (23, 17)
            out[f"resize_{mode}_{key}"] = fi.resize(x, size, mode=mode.split("_")[0], **kw)
        p = rng.standard_normal((301, 40)).astype(dt)
        q = np.concatenate([p[:50], rng.standard_normal((20, 40)).astype(dt)])
        out[f"sqdist_{key}"] = fi.pairwise_sqdist(q, p)
        dist, idx = fi.knn(p, q, 4)
        out[f"knn_dist_{key}"], out[f"knn_idx_{key}"] = dist, idx
        w = rng.standard_normal(1000).astype(dt)
        opt = fi.Adam([w], lr=0.01)
        for _ in range(3):
            opt.step([rng.standard_normal(1000).astype(dt)])
        out[f"adam_{key}"] = w
    return out


def _dump(path: str) -> None:
    np.savez(path, **_workload())


def _runnable_other_variants() -> list[str]:
    level = cpu.cpu_level()
    return [v for v in cpu.built_variants() if v != cpu.VARIANT
            and (cpu.VARIANTS[v][0] is None or cpu.VARIANTS[v][0] <= level)]


@pytest.mark.parametrize("variant", _runnable_other_variants() or [None])
def test_variants_agree(variant, tmp_path):
    """Each other variant this CPU runs (the baseline among them) gives the loaded
    variant's results within the suite's tolerance, and the exact properties exactly."""
    if variant is None:
        pytest.skip(f"only one runnable variant is built ({cpu.VARIANT})")
    path = tmp_path / "other.npz"
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_variants as t; "
            f"t._dump({str(path)!r}); import fastinterp._cpu as c; print(c.VARIANT)")
    out = _run_with(variant, code)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split()[-1] == variant
    other = dict(np.load(path))
    mine = _workload()
    assert sorted(other) == sorted(mine)
    for key, value in mine.items():
        if key.startswith("knn_idx"):
            np.testing.assert_array_equal(other[key], value, err_msg=key)
            continue
        rtol, atol = TOL[value.dtype]
        scale = max(1.0, float(np.abs(value).max()))    # sums of many terms
        np.testing.assert_allclose(other[key], value, rtol=rtol, atol=atol * scale,
                                   err_msg=f"{key}: {variant} vs {cpu.VARIANT}")
    for key in mine:
        if key.startswith("sqdist"):                    # identical rows: exactly 0 in every build
            assert np.all(np.diagonal(other[key][:50, :50]) == 0), key
        if key.startswith("lerp_ends"):
            dt = key.rsplit("_", 1)[1]
            np.testing.assert_array_equal(other[key], mine[key], err_msg=key)
            assert other[key].dtype == np.dtype(dt)
