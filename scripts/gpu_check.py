#!/usr/bin/env python3
"""`make gpu-check`: test and benchmark fastinterp's CUDA kernels on a real NVIDIA GPU.

On a machine with an NVIDIA GPU (``nvidia-smi`` on PATH) it

1. installs what the device run needs into the current interpreter's
   environment: CuPy for the CUDA version the driver reports
   (``cupy-cuda12x`` or ``cupy-cuda13x``), numba-cuda's CUDA libraries, and a
   CUDA build of torch when the installed one has no CUDA;
2. runs the test suite against the device (``FASTINTERP_REAL_CUDA=1``: the
   numba kernels run on the GPU, and tests/test_cuda_rules.py also feeds
   every op CuPy arrays and torch CUDA tensors);
3. times every op on CuPy inputs against torch CUDA and CuPy equivalents
   and writes a markdown table (default ``.benchmarks/gpu.md``).

It is sized to finish in under 8 minutes on one GPU (small repeat counts, a
time budget that skips the remaining benchmarks when it runs out).

``--dry-run`` does only the CPU parts: parses the arguments, prints the plan
it would run, checks the CUDA-version parsing, and writes the table from
made-up timings (run in CI).

    python scripts/gpu_check.py [--dry-run] [--out PATH] [--repeat N]
                                [--skip-install] [--skip-tests] [--skip-bench]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 8 * 60
TORCH_INDEX = {12: "https://download.pytorch.org/whl/cu126",
               13: "https://download.pytorch.org/whl/cu130"}


# --------------------------------------------------------------------------- planning

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU-only parts: print the plan, write the table from fake timings")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown table path (default .benchmarks/gpu.md; dry run: stdout only)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per op (median kept)")
    ap.add_argument("--budget", type=float, default=BUDGET_S - 60,
                    help="seconds after which remaining benchmarks are skipped")
    ap.add_argument("--skip-install", action="store_true")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--no-torch-cuda", action="store_true",
                    help="do not install a CUDA build of torch (torch CUDA tests are skipped)")
    ap.add_argument("--torch-index", default=None,
                    help="pip index for the CUDA torch wheel (default: PyTorch's cu126/cu130)")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error(f"--repeat must be at least 1; got {args.repeat}")
    return args


def cuda_major(smi_output: str) -> int | None:
    """The CUDA major version from ``nvidia-smi``'s banner ("CUDA Version: 12.4")."""
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", smi_output)
    return int(m.group(1)) if m else None


def cupy_package(major: int) -> str:
    """The CuPy wheel for a CUDA major version."""
    if major not in (11, 12, 13):
        raise SystemExit(f"gpu-check: no CuPy wheel for CUDA {major}; need 11, 12 or 13.")
    return f"cupy-cuda{major}x"


def probe_gpu() -> tuple[str, int]:
    """(GPU name and driver, CUDA major) from nvidia-smi, or exit with the reason."""
    if shutil.which("nvidia-smi") is None:
        raise SystemExit("gpu-check: nvidia-smi not found: this needs a machine with an NVIDIA "
                         "GPU and its driver (use --dry-run elsewhere).")
    banner = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=True).stdout
    name = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                           "--format=csv,noheader"], capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[0]
    major = cuda_major(banner)
    if major is None:
        raise SystemExit("gpu-check: could not read the CUDA version from nvidia-smi.")
    return name, major


def _installed_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _torch_has_cuda() -> bool:
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def install_commands(major: int, torch_cuda: bool, check_torch: bool = True,
                     torch_index: str | None = None) -> list[list[str]]:
    """The pip commands for a CUDA ``major`` machine."""
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    numba_cuda = _installed_version("numba-cuda")
    spec = f"numba-cuda[cu{major}]" + (f"=={numba_cuda}" if numba_cuda else "")
    cmds = [pip + [cupy_package(major), spec]]
    if torch_cuda and (not check_torch or not _torch_has_cuda()):
        torch_version = (_installed_version("torch") or "").split("+")[0]
        cmds.append(pip + [f"torch=={torch_version}" if torch_version else "torch",
                           "--index-url", torch_index or TORCH_INDEX.get(major, TORCH_INDEX[12])])
    return cmds


def test_command() -> tuple[list[str], dict]:
    env = dict(os.environ, FASTINTERP_REAL_CUDA="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], env


# --------------------------------------------------------------------------- the table

@dataclass
class Row:
    op: str
    workload: str
    fastinterp_ms: float | None
    torch_ms: float | None = None
    cupy_ms: float | None = None
    note: str = ""


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _ratio(peer: float | None, ours: float | None) -> str:
    return "—" if peer is None or not ours else f"{peer / ours:.2f}x"


def markdown_table(rows: list[Row], header: str) -> str:
    """Rows as a markdown table; ratios are peer time / fastinterp time (> 1: faster)."""
    lines = [header, "",
             "| op | workload | fastinterp ms | torch ms | vs torch | CuPy ms | vs CuPy | note |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.op} | {r.workload} | {_ms(r.fastinterp_ms)} | {_ms(r.torch_ms)} | "
                     f"{_ratio(r.torch_ms, r.fastinterp_ms)} | {_ms(r.cupy_ms)} | "
                     f"{_ratio(r.cupy_ms, r.fastinterp_ms)} | {r.note} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- benchmarks

@dataclass
class Bench:
    op: str
    workload: str
    setup: Callable     # (cp, torch) -> (fastinterp_fn, torch_fn | None, cupy_fn | None)
    note: str = ""


def _benches() -> list[Bench]:
    import fastinterp as fi

    def lerp(cp, torch):
        a, b, t = (cp.random.standard_normal(1 << 24, dtype=cp.float32) for _ in range(3))
        ta, tb, tt = (torch.as_tensor(x, device="cuda") for x in (a, b, t))
        return (lambda: fi.lerp(a, b, t), lambda: torch.lerp(ta, tb, tt),
                lambda: a + t * (b - a))

    def slerp(cp, torch):
        a, b = (cp.random.standard_normal((65536, 512), dtype=cp.float32) for _ in range(2))
        ta, tb = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")

        def naive(xp_a, xp_b, lib):
            na = lib.linalg.norm(xp_a, axis=-1, keepdims=True) if lib is cp else \
                xp_a.norm(dim=-1, keepdim=True)
            nb = lib.linalg.norm(xp_b, axis=-1, keepdims=True) if lib is cp else \
                xp_b.norm(dim=-1, keepdim=True)
            c = ((xp_a / na) * (xp_b / nb)).sum(-1, keepdims=True) if lib is cp else \
                ((xp_a / na) * (xp_b / nb)).sum(-1, keepdim=True)
            th = lib.arccos(lib.clip(c, -1, 1)) if lib is cp else torch.acos(c.clamp(-1, 1))
            s = lib.sin(th)
            return (lib.sin(0.7 * th) * xp_a + lib.sin(0.3 * th) * xp_b) / s
        return (lambda: fi.slerp(a, b, 0.3), lambda: naive(ta, tb, torch),
                lambda: naive(a, b, cp))

    def grid_inputs(cp, torch):
        x = cp.random.standard_normal((16, 32, 128, 128), dtype=cp.float32)
        th = cp.asarray([[[0.9, -0.2, 0.05], [0.2, 0.9, -0.05]]] * 16, dtype=cp.float32)
        g = fi.affine_grid(th, (16, 32, 128, 128))
        return x, g, torch.as_tensor(x, device="cuda"), torch.as_tensor(g, device="cuda")

    def grid_fwd(cp, torch):
        import cupyx.scipy.ndimage as ndi
        x, g, tx, tg = grid_inputs(cp, torch)
        F = torch.nn.functional
        # CuPy peer: map_coordinates on (N*C, H, W) planes (order 1; edge rule differs)
        iy = ((g[..., 1] + 1) * 128 - 1) / 2
        ix = ((g[..., 0] + 1) * 128 - 1) / 2
        n = cp.broadcast_to(cp.arange(16 * 32, dtype=cp.float32).reshape(16, 32, 1, 1),
                            (16, 32, 128, 128)).reshape(512, 128, 128)
        coords = cp.stack([n, cp.repeat(iy, 32, axis=0), cp.repeat(ix, 32, axis=0)])
        planes = x.reshape(512, 128, 128)
        return (lambda: fi.grid_sample(x, g), lambda: F.grid_sample(tx, tg, align_corners=False),
                lambda: ndi.map_coordinates(planes, coords, order=1, mode="constant"))

    def grid_bwd(cp, torch):
        x, g, tx, tg = grid_inputs(cp, torch)
        go = cp.random.standard_normal((16, 32, 128, 128), dtype=cp.float32)
        tgo = torch.as_tensor(go, device="cuda")
        tx.requires_grad_(True)
        tg.requires_grad_(True)
        F = torch.nn.functional

        def torch_bwd():
            return torch.autograd.grad(F.grid_sample(tx, tg, align_corners=False), (tx, tg), tgo)
        return lambda: fi.grid_sample_backward(go, x, g), torch_bwd, None

    def affine(cp, torch):
        th = cp.random.standard_normal((16, 2, 3), dtype=cp.float32)
        tth = torch.as_tensor(th, device="cuda")
        F = torch.nn.functional
        return (lambda: fi.affine_grid(th, (16, 32, 256, 256)),
                lambda: F.affine_grid(tth, (16, 32, 256, 256), align_corners=False), None)

    def warp(cp, torch):
        import numpy as np
        # a 4K frame rotated (its grid made on the device) against torch's two calls with
        # a rotation of the same cost (timing only: the two conventions differ)
        x = cp.random.standard_normal((1, 3, 2160, 3840), dtype=cp.float32)
        M = np.array([[0.96, -0.26, 300.0], [0.26, 0.96, -400.0]])
        theta = torch.tensor([[[0.96, -0.15, 0.1], [0.46, 0.96, -0.3]]], device="cuda")
        tx = torch.as_tensor(x, device="cuda")
        F = torch.nn.functional

        def torch_warp():
            grid = F.affine_grid(theta, (1, 3, 2160, 3840), align_corners=False)
            return F.grid_sample(tx, grid, align_corners=False)
        return lambda: fi.warp_affine(x, M, (2160, 3840)), torch_warp, None

    def resize(cp, torch):
        import cupyx.scipy.ndimage as ndi
        x = cp.random.standard_normal((8, 3, 512, 512), dtype=cp.float32)
        tx = torch.as_tensor(x, device="cuda")
        F = torch.nn.functional
        return (lambda: fi.resize(x, size=(1024, 1024)),
                lambda: F.interpolate(tx, size=(1024, 1024), mode="bilinear"),
                lambda: ndi.zoom(x, (1, 1, 2, 2), order=1, grid_mode=True, mode="nearest"))

    def resize_bwd(cp, torch):
        g = cp.random.standard_normal((8, 3, 1024, 1024), dtype=cp.float32)
        tg = torch.as_tensor(g, device="cuda")
        tx = torch.zeros((8, 3, 512, 512), device="cuda", requires_grad=True)
        F = torch.nn.functional
        return (lambda: fi.resize_backward(g, (8, 3, 512, 512), size=(1024, 1024)),
                lambda: torch.autograd.grad(F.interpolate(tx, size=(1024, 1024),
                                                          mode="bilinear"), tx, tg), None)

    def pairwise(cp, torch):
        x = cp.random.standard_normal((4096, 256), dtype=cp.float32)
        y = cp.random.standard_normal((8192, 256), dtype=cp.float32)
        tx, ty = torch.as_tensor(x, device="cuda"), torch.as_tensor(y, device="cuda")
        return (lambda: fi.pairwise_sqdist(x, y), lambda: torch.cdist(tx, ty) ** 2,
                lambda: (x * x).sum(1)[:, None] + (y * y).sum(1)[None] - 2 * x @ y.T)

    def pairwise_bwd(cp, torch):
        x = cp.random.standard_normal((2048, 128), dtype=cp.float32)
        y = cp.random.standard_normal((4096, 128), dtype=cp.float32)
        g = cp.random.standard_normal((2048, 4096), dtype=cp.float32)
        tx, ty, tg = (torch.as_tensor(a, device="cuda") for a in (x, y, g))
        tx.requires_grad_(True)
        ty.requires_grad_(True)
        return (lambda: fi.pairwise_sqdist_backward(g, x, y),
                lambda: torch.autograd.grad(torch.cdist(tx, ty) ** 2, (tx, ty), tg), None)

    def knn(cp, torch):
        x = cp.random.standard_normal((50000, 128), dtype=cp.float32)
        q = cp.random.standard_normal((2000, 128), dtype=cp.float32)
        tx, tq = torch.as_tensor(x, device="cuda"), torch.as_tensor(q, device="cuda")

        def cupy_knn():
            d = (q * q).sum(1)[:, None] + (x * x).sum(1)[None] - 2 * q @ x.T
            return cp.argpartition(d, 10, axis=1)[:, :10]
        return (lambda: fi.knn(x, q, 10),
                lambda: torch.cdist(tq, tx).topk(10, largest=False), cupy_knn)

    def optim(kind):
        def setup(cp, torch):
            p = cp.random.standard_normal(10_000_000, dtype=cp.float32)
            g = cp.random.standard_normal(10_000_000, dtype=cp.float32)
            tp = torch.nn.Parameter(torch.as_tensor(p.copy(), device="cuda"))
            tp.grad = torch.as_tensor(g, device="cuda")
            if kind == "adam":
                ours = fi.optim.Adam([p], lr=1e-3)
                theirs = torch.optim.Adam([tp], lr=1e-3, fused=True)
            else:
                ours = fi.optim.SGD([p], lr=1e-3, momentum=0.9)
                theirs = torch.optim.SGD([tp], lr=1e-3, momentum=0.9, foreach=True)
            return lambda: ours.step([g]), theirs.step, None
        return setup

    return [
        Bench("lerp", "16M float32, array weight", lerp),
        Bench("slerp", "(65536, 512) float32", slerp, "peers: naive formula"),
        Bench("grid_sample", "(16,32,128,128) bilinear fwd", grid_fwd,
              "CuPy: map_coordinates, order 1"),
        Bench("grid_sample_backward", "same, deterministic", grid_bwd),
        Bench("affine_grid", "(16,32,256,256)", affine),
        Bench("warp_affine", "(1,3,2160,3840) float32 rotation", warp,
              "torch: affine_grid + grid_sample"),
        Bench("resize", "(8,3,512,512) -> 1024 bilinear", resize, "CuPy: ndimage.zoom"),
        Bench("resize_backward", "same", resize_bwd),
        Bench("pairwise_sqdist", "4096 x 8192 x 256", pairwise,
              "torch: cdist**2; CuPy: GEMM expansion (inexact)"),
        Bench("pairwise_sqdist_backward", "2048 x 4096 x 128", pairwise_bwd),
        Bench("knn", "50k x 128, 2k queries, k=10", knn, "CuPy: GEMM + argpartition"),
        Bench("adam_step", "10M float32", optim("adam"), "torch: fused"),
        Bench("sgd_step", "10M float32, momentum", optim("sgd"), "torch: foreach"),
    ]


def _median_ms(fn, repeat: int, sync) -> float:
    fn()          # warm-up (and numba's JIT compile)
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def run_benchmarks(repeat: int, deadline: float) -> list[Row]:
    import cupy as cp
    import torch

    def sync():
        cp.cuda.Device().synchronize()   # the device: CuPy's and torch's streams alike
    rows = []
    for b in _benches():
        if time.monotonic() > deadline:
            rows.append(Row(b.op, b.workload, None, note="skipped: time budget"))
            continue
        fns = b.setup(cp, torch)
        timings = [None if f is None else _median_ms(f, repeat, sync) for f in fns]
        rows.append(Row(b.op, b.workload, *timings, note=b.note))
        print(f"  {b.op}: {', '.join(_ms(t) for t in timings)} ms", flush=True)
        del fns
        cp.get_default_memory_pool().free_all_blocks()
        torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------- main

def _fake_rows() -> list[Row]:
    names = ["lerp", "slerp", "grid_sample", "knn", "adam_step"]
    return [Row(n, "dry run", 1.0 + i, 2.0 + i, None if i % 2 else 3.0 + i, "fake timings")
            for i, n in enumerate(names)]


def _self_check():
    """Parsing checks that need no GPU (run by --dry-run)."""
    assert cuda_major("| NVIDIA-SMI 550.54   Driver Version: 550.54   CUDA Version: 12.4 |") == 12
    assert cuda_major("CUDA Version: 13.0") == 13 and cuda_major("no driver") is None
    assert cupy_package(12) == "cupy-cuda12x" and cupy_package(13) == "cupy-cuda13x"
    table = markdown_table([Row("op", "w", 2.0, 4.0, None)], "# t")
    assert "| op | w | 2.000 | 4.000 | 2.00x | — | — |  |" in table, table


def _run(cmd, env=None):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    if args.dry_run:
        _self_check()
        print("gpu-check plan (dry run: no GPU probed, nothing installed or run):")
        print("  probe: nvidia-smi -> GPU name, driver, CUDA major version")
        if not args.skip_install:
            for cmd in install_commands(12, not args.no_torch_cuda, False, args.torch_index):
                print("  install (CUDA 12 shown): python", " ".join(cmd[1:]))
        if not args.skip_tests:
            cmd, _ = test_command()
            print("  tests: FASTINTERP_REAL_CUDA=1 python", " ".join(cmd[1:]))
        if not args.skip_bench:
            print(f"  benchmarks ({args.repeat} timed runs each, budget {args.budget:.0f} s):")
            for b in _benches():
                print(f"    {b.op}: {b.workload}")
        table = markdown_table(_fake_rows(), "# GPU benchmark (dry run, fake timings)")
        print(table)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(table)
        return 0
    name, major = probe_gpu()
    print(f"gpu-check: {name}, CUDA {major}", flush=True)
    if not args.skip_install:
        for cmd in install_commands(major, not args.no_torch_cuda, True, args.torch_index):
            _run(cmd)
    if not args.skip_tests:
        cmd, env = test_command()
        _run(cmd, env)
    if not args.skip_bench:
        rows = run_benchmarks(args.repeat, start + args.budget)
        out = args.out or ROOT / ".benchmarks" / "gpu.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        header = (f"# GPU benchmark: {name}, CUDA {major}\n\nMedian of {args.repeat} runs "
                  f"after a warm-up; ratio = peer time / fastinterp time (> 1: fastinterp "
                  f"faster). Inputs are CuPy arrays (fastinterp, CuPy) and torch tensors.")
        out.write_text(markdown_table(rows, header))
        print(f"gpu-check: table written to {out}")
    print(f"gpu-check: done in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
