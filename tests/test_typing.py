"""The public API's annotations, as a user's type checker sees them.

A small user script calls every public op the way README.md shows (NumPy
arrays, lists, Python and NumPy scalars, ``out=``, keyword options) and is
checked with ``mypy --strict``: no error, and ``assert_type`` pins what the
calls return (an ndarray for NumPy in, tuples for the backwards and knn).
A second script holds mistakes a checker must catch (an unknown ``mode``, a
gradient that may be None used as an array), one per line marked ``# E``.
fastinterp itself is followed silently, as mypy treats an installed package.

One mypy run (about 5 s with a cold cache, in ``tmp_path``) serves both; the
tests skip when mypy is not installed.
"""
from __future__ import annotations

import importlib
import inspect
import re
import site
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import get_args

import pytest

import fastinterp as fi
import fastinterp.ops
import fastinterp.plugins

GOOD = '''
from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import assert_type

import fastinterp as fi

Array = npt.NDArray[Any]

# quick start
a = np.random.rand(1024, 512).astype(np.float32)
b = np.random.rand(1024, 512).astype(np.float32)
mid = fi.lerp(a, b, 0.5)           # NumPy in, NumPy out
assert_type(mid, Array)
assert_type(fi.lerp([0.0, 1.0], [1.0, 2.0], 0.25), Array)          # lists and scalars
assert_type(fi.lerp(a, b, np.float32(0.1), out=a), Array)          # out=, a NumPy scalar
assert_type(fi.lerp(a, b, [0.25] * 512), Array)                     # t as a list
assert_type(fi.backend_of(a, 2.0), str)

# blending
t = np.random.rand(1024).astype(np.float32)
assert_type(fi.slerp(a, b, t), Array)
assert_type(fi.slerp(a, b, np.linspace(0, 1, 9, dtype=np.float32), path=True), Array)
assert_type(fi.slerp(a, b, 0.5, -1, shortest_path=True, norm="formula"), Array)
y = fi.slerp(a, b, t)
grad_a, grad_b, grad_t = fi.slerp_backward(np.ones_like(y), a, b, t)
print(grad_a.shape, grad_b.shape, grad_t.shape)    # arrays: every gradient was asked for
assert_type(fi.slerp_backward(y, a, b, t, needs_t_grad=False),
            tuple[Array | None, Array | None, Array | None])

# spatial sampling
x = np.random.rand(8, 3, 128, 128).astype(np.float32)            # NCHW
ang = np.deg2rad(25)
theta = np.array([[[np.cos(ang), -np.sin(ang), 0.0],
                   [np.sin(ang), np.cos(ang), 0.0]]], np.float32).repeat(8, 0)
grid = fi.affine_grid(theta, x.shape, align_corners=False)        # (8, 128, 128, 2)
s = fi.grid_sample(x, grid, mode="bilinear", padding_mode="zeros")
assert_type(s, Array)
s = fi.grid_sample(x, grid, "bicubic", "constant", True, fill=0.5, layout="NCHW")
s = fi.grid_sample(x, grid, padding_mode="constant", fill=[0.0, 0.5, 1.0], out=s)
gy = 2 * (s - x)
gx, ggrid = fi.grid_sample_backward(gy, x, grid)
assert_type(ggrid, Array)
gtheta = fi.affine_grid_backward(ggrid, x.shape)                  # (8, 2, 3)
assert_type(gtheta, Array)
assert_type(fi.grid_sample_backward(gy, x, grid, needs_grid_grad=False),
            tuple[Array | None, Array | None])
vol = np.random.rand(1, 1, 16, 16, 16)
assert_type(fi.grid_sample(vol, fi.affine_grid(np.eye(3, 4)[None], vol.shape),
                           mode="bicubic"), Array)

# warps
img = np.random.rand(2, 3, 64, 80).astype(np.float32)
H, W, H_out, W_out = 64, 80, 48, 60
M = fi.rotation_matrix(30, center=(W / 2, H / 2), scale=1.0)
assert_type(M, Array)
Hm = np.eye(3)
w = fi.warp_affine(img, M, (H_out, W_out))
w = fi.warp_perspective(img, Hm, (H_out, W_out), padding_mode="border")
assert_type(fi.rotate(img, 30), Array)
assert_type(fi.rotate(img, 12.5, center=(10, 20), scale=2, mode="nearest"), Array)
theta_y = fi.warp_affine(img, theta[:2], (H_out, W_out), match="torch", align_corners=False)
g_img, g_M = fi.warp_affine_backward(np.ones_like(w), img, M, (H_out, W_out))
g_img, g_M = fi.warp_perspective_backward(np.ones_like(w), img, Hm, (H_out, W_out))
assert_type(g_M, Array)
u8 = np.zeros((64, 80, 3), np.uint8)
assert_type(fi.warp_affine(u8, [[1, 0, 2], [0, 1, 0]], [64, 80], padding_mode="constant",
                           fill=(0, 0, 255), layout="HWC"), Array)

# resizing and area pooling
feats = np.random.rand(4, 16, 28, 28)
r = fi.resize(x, size=(224, 224))                       # bilinear, align_corners=False
r = fi.resize(x, scale_factor=0.5, mode="bilinear", antialias=True)
r = fi.interpolate(x, scale_factor=2, mode="nearest")  # interpolate is resize
assert_type(r, Array)
p = fi.adaptive_avg_pool2d(feats, 7)                   # == resize(feats, size=7, mode="area")
p = fi.adaptive_avg_pool2d(feats, (None, 7))
gr = fi.resize_backward(r, x.shape, mode="nearest")
gf = fi.adaptive_avg_pool2d_backward(p, feats.shape)
assert_type(gf, Array)
small = fi.resize(u8, size=(32, 40), mode="area", layout="HWC", match="opencv")
assert_type(fi.resize(vol, size=(8, 8, 8), mode="trilinear"), Array)
pooled = fi.adaptive_avg_pool3d(vol, (8, 8, 8))
assert_type(fi.adaptive_avg_pool3d_backward(pooled, vol.shape), Array)
sig = np.random.rand(2, 3, 50)
p1 = fi.adaptive_avg_pool1d(sig, 10)
assert_type(fi.adaptive_avg_pool1d_backward(p1, sig.shape), Array)

# distances and nearest neighbours
px = np.random.randn(32, 1024, 3).astype(np.float32)   # 32 clouds
py = np.random.randn(32, 1024, 3).astype(np.float32)
d2 = fi.pairwise_sqdist(px, py)                        # (32, 1024, 1024)
cloud = np.random.randn(1024, 3).astype(np.float32)  # (px[0] would be Any: NumPy's indexing)
d2 = fi.pairwise_sqdist(cloud, py)                     # (1024, 3) against 32 clouds
assert_type(fi.pairwise_sqdist(cloud), Array)          # y defaults to x
dist, idx = fi.knn(py, px, k=1)                        # nearest y for each x
assert_type(idx, Array)
assert_type(fi.knn(py, px, 3, return_distances=False), Array)
gx2, gy2 = fi.pairwise_sqdist_backward(np.ones_like(d2), cloud, py)
assert_type(gy2, Array)
g_self, no_y = fi.pairwise_sqdist_backward(np.ones((1024, 1024)), cloud)
assert_type(no_y, None)
d = fi.pairwise_l2(px, py, out=np.empty((32, 1024, 1024), np.float32))
gl_x, gl_y = fi.pairwise_l2_backward(np.ones_like(d), px, py, dist=d)
assert_type(gl_y, Array)

# infrastructure and plugins
fi.set_num_threads(2)
n: int = fi.get_num_threads()
for info in fi.plugins.list():
    assert_type(info.abi, tuple[int, int])
    assert_type(info.kernels, tuple[tuple[str, str, str], ...])
    assert_type(info.ops, tuple[str, ...])
assert_type(fi.plugins.discover(), list[fi.plugins.PluginInfo])
assert_type(fi.plugins.op_names(), list[str])
assert_type(fi.plugins.builtin_kernels(), list[dict[str, Any]])
include: str = fi.get_include()
'''

BAD = '''
import numpy as np

import fastinterp as fi

x = np.zeros((1, 1, 4, 4))
grid = np.zeros((1, 2, 2, 2))
fi.grid_sample(x, grid, mode="linear")                              # E
fi.grid_sample(x, grid, padding_mode="reflect")                     # E
fi.resize(x, size=2, match="cv2")                                   # E
fi.resize(x, size=2, layout="nchw")                                 # E
fi.slerp(x, x, 0.5, norm="unit")                                    # E
fi.warp_affine(x, np.eye(2, 3), (4, 4), match="pil")                # E
fi.affine_grid(np.eye(2, 3)[None], "1144")                          # E
fi.rotate(x, "30")                                                  # E
points = np.zeros((5, 2))
fi.knn(points, points, 1).shape                                     # E
ga, gb, gt = fi.slerp_backward(x, x, x, 0.5, needs_ab_grad=False)
ga.shape                                                            # E
fi.plugins.list()[0].abi[2]                                         # E
'''

ERROR = re.compile(r"^(?P<file>[^:\n]+\.py):(?P<line>\d+): error: (?P<message>.*)$", re.M)


def _search_path() -> str | None:
    """The folder holding the fastinterp under test, for mypy_path; None when it is
    installed (mypy finds site-packages itself, and refuses them in mypy_path)."""
    root = Path(fi.__file__).resolve().parent.parent
    installed = {Path(p).resolve() for p in site.getsitepackages()
                 + [site.getusersitepackages(), sysconfig.get_paths()["purelib"],
                    sysconfig.get_paths()["platlib"]]}
    return None if root in installed else str(root)


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory):
    """``(errors by file name, the output)`` of one ``mypy --strict`` run on both scripts."""
    pytest.importorskip("mypy", reason="mypy is not installed")
    folder = tmp_path_factory.mktemp("typing")
    (folder / "good.py").write_text(textwrap.dedent(GOOD))
    (folder / "bad.py").write_text(textwrap.dedent(BAD))
    path = _search_path()
    (folder / "mypy.ini").write_text(
        "[mypy]\nstrict = True\nshow_error_codes = True\n"
        + (f"mypy_path = {path}\n" if path else "")
        # as for an installed package: fastinterp's own modules are analysed, not reported
        + "\n[mypy-fastinterp.*]\nfollow_imports = silent\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini",
         "--cache-dir", str(folder / "cache"), "good.py", "bad.py"],
        cwd=folder, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    if result.returncode not in (0, 1):       # 2: mypy itself failed (a crash, bad config)
        pytest.fail(f"mypy failed (exit status {result.returncode}):\n{output}")
    errors: dict[str, list[tuple[int, str]]] = {"good.py": [], "bad.py": []}
    for m in ERROR.finditer(output):
        errors.setdefault(Path(m["file"]).name, []).append((int(m["line"]), m["message"]))
    return errors, output


def test_readme_style_code_passes_mypy_strict(mypy_run):
    errors, output = mypy_run
    assert not errors["good.py"], output


def test_mistakes_are_type_errors(mypy_run):
    """Each line marked ``# E`` gets an error (an unknown option value, a gradient that
    may be None used as an array, ...), and no other line does."""
    errors, output = mypy_run
    lines = textwrap.dedent(BAD).splitlines()
    expected = {i for i, text in enumerate(lines, 1) if text.rstrip().endswith("# E")}
    assert {line for line, _ in errors["bad.py"]} == expected, output
    assert not set(errors) - {"good.py", "bad.py"}, output


def _public_functions():
    """The public functions of fastinterp, fastinterp.plugins and fastinterp.ops."""
    for module in (fi, fastinterp.plugins):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj
    for name, obj in vars(fastinterp.plugins).items():
        if (inspect.isfunction(obj) and not name.startswith("_")
                and obj.__module__ == "fastinterp.plugins"):
            yield f"fastinterp.plugins.{name}", obj
    yield "fastinterp.ops.__getattr__", vars(fastinterp.ops)["__getattr__"]
    yield "fastinterp.ops.__dir__", vars(fastinterp.ops)["__dir__"]


@pytest.mark.parametrize("name, fn", sorted(dict(_public_functions()).items()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_public_functions_are_fully_annotated(name, fn):
    """Every parameter and the result annotated (the array ops' modules are checked by
    mypy with their internal helpers not yet annotated, so this holds the public line)."""
    sig = inspect.signature(fn)
    missing = [p.name for p in sig.parameters.values() if p.annotation is p.empty]
    assert not missing, f"{name}: parameters without annotation: {missing}"
    assert sig.return_annotation is not sig.empty, f"{name}: no return annotation"


def test_option_literals_match_the_accepted_values():
    """The Literal types are the tuples the checks accept, exactly."""
    from fastinterp import _layout, _typing, blend, sample, warp
    resize = importlib.import_module("fastinterp.resize")     # (fi.resize is the function)
    assert set(get_args(_typing.SampleMode)) == set(sample.MODES)
    assert set(get_args(_typing.PaddingMode)) == set(sample.PADDINGS)
    assert set(get_args(_typing.ImageLayout)) == set(_layout.LAYOUTS)
    assert set(get_args(_typing.WarpMatch)) == set(warp.MATCHES)
    assert set(get_args(_typing.ResizeMatch)) == set(resize.MATCHES)
    assert set(get_args(_typing.SlerpNorm)) == set(blend.SLERP_NORMS)
    nd_modes = {m for modes in resize._ND_MODES.values() for m in modes}
    assert set(get_args(_typing.ResizeMode)) == set(resize.MODES) | nd_modes
