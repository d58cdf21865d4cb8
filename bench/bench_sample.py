"""Benchmarks: grid_sample forward/backward against torch, OpenCV and SciPy.

The spatial-transformer workload: input (16, 32, 128, 128) float32, grid
(16, 128, 128, 2) from small random rotations (|angle| <= 0.2 rad, shifts
<= 0.1), bilinear, zero padding, align_corners=False; 2 threads everywhere.

Peers:
- torch ``F.grid_sample`` (forward) and autograd's backward of it (both
  gradients; the forward graph is built once outside the timing).
- ``cv2.remap`` on NHWC images, looped over the batch, into a preallocated
  output (fastinterp and torch allocate theirs), with float maps
  precomputed outside the timing (``map = ((g + 1) * W - 1) / 2`` is the same
  point set). With 32 channels OpenCV uses 1/32-pixel fixed-point weights, so
  it is faster but not exact (errors ~1e-1 on unit-variance data).
- ``scipy.ndimage.map_coordinates(order=1, mode='grid-constant')`` per
  (image, channel) plane: single-threaded, exact.

Memory: peak RSS of one call with 16M sample points on a (1,1,8,8) input
(``MEM_FWD``/``MEM_BWD``), each library in a fresh process (fastinterp's
without torch imported), stored as ``extra_info["peak_rss_GiB"]``.

Run: ``python -m pytest bench/bench_sample.py --benchmark-min-rounds=5``.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastinterp as fi
from conftest import BENCH_THREADS as THREADS  # the session pins every library to it

N, C, H, W = 16, 32, 128, 128
FWD = "grid_sample fwd: (16,32,128,128) f32 bilinear"
BWD = "grid_sample bwd (input+grid): (16,32,128,128) f32"
FWD_NHWC = "grid_sample fwd NHWC: (16,128,128,32) f32 bilinear"


@pytest.fixture(scope="module")
def stn():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    a = rng.uniform(-0.2, 0.2, N)
    t = rng.uniform(-0.1, 0.1, (N, 2))
    theta = np.stack([np.stack([np.cos(a), -np.sin(a), t[:, 0]], 1),
                      np.stack([np.sin(a), np.cos(a), t[:, 1]], 1)], 1).astype(np.float32)
    grid = fi.affine_grid(theta, (N, C, H, W), align_corners=False)
    go = rng.standard_normal((N, C, H, W), dtype=np.float32)
    return x, grid, go


def label(benchmark, group, library):
    benchmark.group = group
    benchmark.extra_info["library"] = library


def test_fwd_fastinterp(benchmark, stn):
    x, grid, _ = stn
    label(benchmark, FWD, "fastinterp")
    benchmark(fi.grid_sample, x, grid)      # allocates its output, like torch


def test_fwd_torch(benchmark, stn):
    torch = pytest.importorskip("torch")
    x, grid, _ = stn
    tx, tg = torch.from_numpy(x), torch.from_numpy(grid)
    label(benchmark, FWD, "torch")
    out = benchmark(torch.nn.functional.grid_sample, tx, tg, align_corners=False)
    np.testing.assert_allclose(out.numpy(), fi.grid_sample(x, grid), rtol=1e-4, atol=1e-4)


def remap_maps(grid):
    mx = ((grid[..., 0] + 1) * W - 1) / 2
    my = ((grid[..., 1] + 1) * H - 1) / 2
    return mx.astype(np.float32), my.astype(np.float32)


def cv2_remapper(stn):
    """NHWC copy of the input, float maps, and a function remapping the whole batch."""
    cv2 = pytest.importorskip("cv2")
    x, grid, _ = stn
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    mx, my = remap_maps(grid)
    out = np.empty_like(xl)

    def remap_all():
        for n in range(N):
            cv2.remap(xl[n], mx[n], my[n], cv2.INTER_LINEAR, dst=out[n],
                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out
    return remap_all


def test_fwd_cv2_remap(benchmark, stn):
    x, grid, _ = stn
    remap_all = cv2_remapper(stn)
    label(benchmark, FWD, "cv2")
    res = benchmark(remap_all)
    err = float(np.abs(res.transpose(0, 3, 1, 2) - fi.grid_sample(x, grid)).max())
    benchmark.extra_info["max_abs_err_vs_exact"] = round(err, 4)


# The same forward into a preallocated output, as cv2.remap above writes it. An
# allocating call gets its previous result's freed block back from fastinterp's
# result-memory cache; the first call of a run, or one with the cache off, also
# pays for faulting in the 33 MB output.
FWD_OUT = "grid_sample fwd into a preallocated output: (16,32,128,128) f32 bilinear"


def test_fwd_out_fastinterp(benchmark, stn):
    x, grid, _ = stn
    out = np.empty_like(x)
    label(benchmark, FWD_OUT, "fastinterp")
    benchmark(fi.grid_sample, x, grid, out=out)


def test_fwd_out_cv2_remap(benchmark, stn):
    x, grid, _ = stn
    remap_all = cv2_remapper(stn)
    label(benchmark, FWD_OUT, "cv2")
    res = benchmark(remap_all)
    err = float(np.abs(res.transpose(0, 3, 1, 2) - fi.grid_sample(x, grid)).max())
    benchmark.extra_info["max_abs_err_vs_exact"] = round(err, 4)


def test_fwd_scipy_map_coordinates(benchmark, stn):
    ndimage = pytest.importorskip("scipy.ndimage")
    x, grid, _ = stn
    mx, my = remap_maps(grid)
    out = np.empty_like(x)

    def map_all():
        for n in range(N):
            coords = np.stack([my[n], mx[n]])
            for c in range(C):
                ndimage.map_coordinates(x[n, c], coords, output=out[n, c], order=1,
                                        mode="grid-constant", cval=0.0, prefilter=False)
        return out
    label(benchmark, FWD, "scipy")
    res = benchmark.pedantic(map_all, rounds=3, iterations=1)
    np.testing.assert_allclose(res, fi.grid_sample(x, grid), rtol=1e-4, atol=1e-4)


def test_fwd_nhwc_fastinterp(benchmark, stn):
    x, grid, _ = stn
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    label(benchmark, FWD_NHWC, "fastinterp")
    benchmark(fi.grid_sample, xl, grid, layout="NHWC")


def test_fwd_nhwc_cv2(benchmark, stn):
    remap_all = cv2_remapper(stn)
    label(benchmark, FWD_NHWC, "cv2")
    benchmark(remap_all)


def test_bwd_fastinterp(benchmark, stn):
    x, grid, go = stn
    label(benchmark, BWD, "fastinterp")
    benchmark(fi.grid_sample_backward, go, x, grid)


def test_bwd_torch(benchmark, stn):
    torch = pytest.importorskip("torch")
    x, grid, go = stn
    tx = torch.from_numpy(x).requires_grad_()
    tg = torch.from_numpy(grid).requires_grad_()
    out = torch.nn.functional.grid_sample(tx, tg, align_corners=False)
    tgo = torch.from_numpy(go)
    label(benchmark, BWD, "torch")
    gi, gg = benchmark(torch.autograd.grad, out, (tx, tg), tgo, retain_graph=True)
    ref_gi, ref_gg = fi.grid_sample_backward(go, x, grid)
    np.testing.assert_allclose(gi.numpy(), ref_gi, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gg.numpy(), ref_gg, rtol=1e-3, atol=1e-2)


# --------------------------------------------------------------------------- half precision
# The same workload stored in float16 (input and grid): fastinterp widens to float32 once,
# runs the float32 kernel and rounds once; the goal is no slower than its own float32 call.
# Peers: fastinterp's float32 call, its bfloat16 call, and torch's float16 grid_sample.
HALF = "grid_sample fwd, float16 storage: (16,32,128,128) bilinear (peers incl. float32)"


def test_half_fastinterp(benchmark, stn):
    x, grid, _ = stn
    label(benchmark, HALF, "fastinterp")
    benchmark(fi.grid_sample, x.astype(np.float16), grid.astype(np.float16))


def test_half_fastinterp_float32(benchmark, stn):
    x, grid, _ = stn
    label(benchmark, HALF, "fastinterp float32")
    benchmark(fi.grid_sample, x, grid)


def test_half_fastinterp_bfloat16(benchmark, stn):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x, grid, _ = stn
    label(benchmark, HALF, "fastinterp bfloat16 (grid float32)")
    benchmark(fi.grid_sample, x.astype(ml_dtypes.bfloat16), grid)


def test_half_torch(benchmark, stn):
    torch = pytest.importorskip("torch")
    x, grid, _ = stn
    tx, tg = torch.from_numpy(x).half(), torch.from_numpy(grid).half()
    label(benchmark, HALF, "torch float16")
    benchmark(torch.nn.functional.grid_sample, tx, tg, align_corners=False)


# --------------------------------------------------------------------------- 1 thread
# The same comparisons on one thread each: on a shared machine these are less
# disturbed by other jobs than the 2-thread runs.
FWD1 = "grid_sample fwd, 1 thread: (16,32,128,128) f32 bilinear"
BWD1 = "grid_sample bwd, 1 thread: (16,32,128,128) f32"


@pytest.fixture
def one_thread():
    fi.set_num_threads(1)
    torch = cv2 = None
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:
        cv2 = None
    yield
    fi.set_num_threads(THREADS)
    if torch is not None:
        torch.set_num_threads(THREADS)
    if cv2 is not None:
        cv2.setNumThreads(THREADS)


def test_fwd1_fastinterp(benchmark, stn, one_thread):
    x, grid, _ = stn
    label(benchmark, FWD1, "fastinterp")
    benchmark(fi.grid_sample, x, grid)


def test_fwd1_torch(benchmark, stn, one_thread):
    torch = pytest.importorskip("torch")
    x, grid, _ = stn
    label(benchmark, FWD1, "torch")
    benchmark(torch.nn.functional.grid_sample, torch.from_numpy(x), torch.from_numpy(grid),
              align_corners=False)


def test_fwd1_cv2_remap(benchmark, stn, one_thread):
    remap_all = cv2_remapper(stn)
    label(benchmark, FWD1, "cv2")
    benchmark(remap_all)


def test_bwd1_fastinterp(benchmark, stn, one_thread):
    x, grid, go = stn
    label(benchmark, BWD1, "fastinterp")
    benchmark(fi.grid_sample_backward, go, x, grid)


def test_bwd1_torch(benchmark, stn, one_thread):
    torch = pytest.importorskip("torch")
    x, grid, go = stn
    tx = torch.from_numpy(x).requires_grad_()
    tg = torch.from_numpy(grid).requires_grad_()
    out = torch.nn.functional.grid_sample(tx, tg, align_corners=False)
    label(benchmark, BWD1, "torch")
    benchmark(torch.autograd.grad, out, (tx, tg), torch.from_numpy(go), retain_graph=True)


# --------------------------------------------------------------------------- peak memory
MEM_FWD = "grid_sample fwd peak RSS: (1,1,8,8) input, 16M points f32"
MEM_BWD = "grid_sample bwd peak RSS: (1,1,8,8) input, 16M points f32"
_PEAK = """
import resource, sys, numpy as np
lib, which, P = sys.argv[1], sys.argv[2], 16_000_000
x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
grid = np.random.default_rng(1).random((1, 1, P, 2), dtype=np.float32) * np.float32(2.2) - np.float32(1.1)
go = np.ones((1, 1, 1, P), np.float32)
if lib == "fastinterp":
    import fastinterp as fi
    fi.grid_sample(x, grid) if which == "fwd" else fi.grid_sample_backward(go, x, grid)
else:
    import torch
    tx, tg = torch.from_numpy(x), torch.from_numpy(grid)
    if which == "fwd":
        torch.nn.functional.grid_sample(tx, tg, align_corners=False)
    else:
        torch.ops.aten.grid_sampler_2d_backward(torch.from_numpy(go), tx, tg, 0, 0, False,
                                                [True, True])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.parametrize("which, group", [("fwd", MEM_FWD), ("bwd", MEM_BWD)])
@pytest.mark.parametrize("library", ["fastinterp", "torch"])
def test_peak_memory(benchmark, which, group, library):
    import subprocess
    import sys
    if library == "torch":
        pytest.importorskip("torch")
    peak = {}

    def run():
        proc = subprocess.run([sys.executable, "-c", _PEAK, library, which], check=True,
                              capture_output=True, text=True)
        peak["kib"] = int(proc.stdout.split()[-1])
    label(benchmark, group, library)
    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["peak_rss_GiB"] = round(peak["kib"] / 2**20, 3)


# --------------------------------------------------------------------------- volumes
# Trilinear grid_sample of (2, 16, 64, 64, 64) float32 volumes at a rotated and
# shifted 3-D affine grid of the same size (zeros padding, align_corners=False),
# against torch's F.grid_sample (5-D) and its autograd backward (both gradients).
VOL = (2, 16, 64, 64, 64)
VOL_FWD = "grid_sample 5-D fwd: (2,16,64,64,64) f32 trilinear"
VOL_BWD = "grid_sample 5-D bwd (input+grid): (2,16,64,64,64) f32"


@pytest.fixture(scope="module")
def volumes():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(VOL, dtype=np.float32)
    a, b = rng.uniform(-0.3, 0.3, 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    theta = np.concatenate([rz @ rx, rng.uniform(-0.1, 0.1, (3, 1))], 1)
    theta = np.repeat(theta[None], VOL[0], 0).astype(np.float32)
    grid = fi.affine_grid(theta, VOL, align_corners=False)
    go = rng.standard_normal(VOL, dtype=np.float32)
    return x, grid, go


def test_vol_fwd_fastinterp(benchmark, volumes):
    x, grid, _ = volumes
    label(benchmark, VOL_FWD, "fastinterp")
    benchmark(fi.grid_sample, x, grid)


def test_vol_fwd_torch(benchmark, volumes):
    torch = pytest.importorskip("torch")
    x, grid, _ = volumes
    tx, tg = torch.from_numpy(x), torch.from_numpy(grid)
    label(benchmark, VOL_FWD, "torch")
    out = benchmark(torch.nn.functional.grid_sample, tx, tg, align_corners=False)
    np.testing.assert_allclose(out.numpy(), fi.grid_sample(x, grid), rtol=1e-4, atol=1e-5)


def test_vol_bwd_fastinterp(benchmark, volumes):
    x, grid, go = volumes
    label(benchmark, VOL_BWD, "fastinterp")
    benchmark(fi.grid_sample_backward, go, x, grid)


def test_vol_bwd_torch(benchmark, volumes):
    torch = pytest.importorskip("torch")
    x, grid, go = volumes
    tx = torch.from_numpy(x).requires_grad_()
    tg = torch.from_numpy(grid).requires_grad_()
    out = torch.nn.functional.grid_sample(tx, tg, align_corners=False)
    label(benchmark, VOL_BWD, "torch")
    gi, gg = benchmark(torch.autograd.grad, out, (tx, tg), torch.from_numpy(go),
                       retain_graph=True)
    ref_gi, ref_gg = fi.grid_sample_backward(go, x, grid)
    np.testing.assert_allclose(gi.numpy(), ref_gi, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gg.numpy(), ref_gg, rtol=1e-3, atol=1e-2)
