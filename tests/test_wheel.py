"""The wheel, installed into a fresh venv, passes the tests away from the source tree.

``make test-wheel`` builds the wheel (``make wheel``) and runs this file with
``FASTINTERP_WHEEL`` naming it; without that variable the tests skip (a wheel
build compiles every kernel variant: minutes, too long for ``make test``).
The venv sees the test dependencies of the current environment through a
``.pth`` file (no network), but not its fastinterp: the wheel is installed
into the venv, and the tests run from a temporary copy of tests/ and
examples/, so neither the source tree nor an editable install can supply it.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parent.parent
WHEEL = os.environ.get("FASTINTERP_WHEEL", "")
X86 = platform.machine().lower() in ("x86_64", "amd64")
#: Test files run against the installed wheel: the C ABI, dispatch, one family per kind of kernel.
SUBSET = ("test_variants.py", "test_blend.py", "test_distance.py", "test_optim.py",
          "test_plugins.py", "test_dispatch.py", "test_typing.py")

needs_wheel = pytest.mark.skipif(not WHEEL, reason="set FASTINTERP_WHEEL=<wheel> (make test-wheel)")


def _families() -> list[str]:
    return sorted(p.stem for p in (ROOT / "kernels" / "cpu").glob("*.pyx")
                  if not p.stem.startswith("_"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with the wheel installed: (python, folder to run tests from, env)."""
    wheel = Path(WHEEL).resolve()
    assert wheel.is_file(), f"FASTINTERP_WHEEL={WHEEL!r} is not a file"
    base = tmp_path_factory.mktemp("wheel")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    # The current environment's packages (numpy, pytest, torch ...), after the venv's own,
    # with their start-up hooks (e.g. numba-cuda's redirect of numba.cuda) but not an
    # editable fastinterp's.
    deps = Path(sysconfig.get_paths()["purelib"])
    (site / "00-fastinterp-test-deps.pth").write_text(f"{deps}\n")
    for pth in deps.glob("*.pth"):
        if "fastinterp" not in pth.name:
            shutil.copy(pth, site / pth.name)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", "--ignore-installed", str(wheel)], check=True)
    work = base / "work"
    shutil.copytree(ROOT / "tests", work / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copytree(ROOT / "examples", work / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")   # pytest's settings only
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "FASTINTERP_CPU_VARIANT", "PYTHONHOME")}
    return python, work, env, env_dir


def _probe(installed, code: str, **extra_env: str) -> dict:
    python, work, env, _ = installed
    out = subprocess.run([python, "-c", code], cwd=work, env={**env, **extra_env},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


_WHERE = ("import json, fastinterp as fi, fastinterp._cpu.blend as b, fastinterp._cpu.abi as a\n"
          "import fastinterp.dask as fd\n"
          "print(json.dumps({'pkg': fi.__file__, 'blend': b.__file__, 'abi': a.__file__,\n"
          "                  'dask': fd.__file__, 'cfg': fi.show_config('dicts')['kernels']}))")


def _subpackages() -> list[str]:
    """Every Python package of the source tree (fastinterp and the folders below it)."""
    return sorted(".".join(p.parent.relative_to(ROOT).parts)
                  for p in (ROOT / "fastinterp").rglob("__init__.py"))


def test_every_subpackage_is_packaged():
    """pyproject.toml lists every package of the source tree (fastinterp.dask was left
    out: an installed fastinterp had no fastinterp.dask). Runs without a wheel."""
    import tomllib
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert set(_subpackages()) <= set(listed), set(_subpackages()) - set(listed)


@needs_wheel
def test_wheel_contents():
    """py.typed, the public header, every Python package and every kernel family in every
    variant are inside."""
    names = set(zipfile.ZipFile(WHEEL).namelist())
    for package in _subpackages():
        assert package.replace(".", "/") + "/__init__.py" in names, package
    assert "fastinterp/py.typed" in names
    assert "fastinterp/include/fastinterp/plugin.h" in names
    variants = ("x86_64_v2", "x86_64_v3", "x86_64_v4") if X86 else ("generic",)
    for variant in variants:
        for family in _families():
            assert any(n.startswith(f"fastinterp/_cpu/variants/{variant}/{family}.")
                       and n.endswith((".so", ".pyd")) for n in names), (variant, family)
    assert not any(n.startswith("fastinterp/_cpu/variants/native/") for n in names), \
        "a -march=native build must not go into a wheel"
    stale = [n for n in names if n.startswith("fastinterp/_cpu/") and n.count("/") == 2
             and n.endswith((".so", ".pyd")) and not n.split("/")[-1].startswith("_")]
    assert not stale, f"kernel modules outside the variant folders: {stale}"


@needs_wheel
def test_imports_from_the_venv(installed):
    """fastinterp and its kernels come from the venv, in the variant chosen for this CPU."""
    _, _, _, env_dir = installed
    where = _probe(installed, _WHERE)
    for key in ("pkg", "blend", "abi", "dask"):
        assert Path(where[key]).resolve().is_relative_to(env_dir.resolve()), where
    cfg = where["cfg"]
    assert Path(where["blend"]).parent.name == cfg["variant"]
    assert Path(where["abi"]).parent == Path(where["blend"]).parent
    assert cfg["missing"] == []
    if X86:
        assert set(cfg["built"]) == {"x86_64_v2", "x86_64_v3", "x86_64_v4"}
        assert cfg["variant"] == {4: "x86_64_v4", 3: "x86_64_v3"}.get(cfg["cpu_level"], "x86_64_v2")


@needs_wheel
@pytest.mark.skipif(not X86, reason="x86-64 variants only")
def test_forced_baseline_variant_loads(installed):
    """FASTINTERP_CPU_VARIANT picks the baseline build inside the installed wheel."""
    where = _probe(installed, _WHERE, FASTINTERP_CPU_VARIANT="x86-64-v2")
    assert Path(where["blend"]).parent.name == "x86_64_v2"
    assert where["cfg"]["forced"] is True


@needs_wheel
def test_suite_against_the_installed_wheel(installed):
    """A representative part of the test suite passes against the installed wheel."""
    python, work, env, _ = installed
    files = [f"tests/{name}" for name in SUBSET if (work / "tests" / name).exists()]
    out = subprocess.run([python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          "-m", "not wheel", *files], cwd=work, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert " passed" in out.stdout
