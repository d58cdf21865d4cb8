"""Demo section: lerp vs slerp between Gaussian latent vectors, and timings."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import fastinterp as fi
from fastinterp.demo import save_figure

TITLE = "Blending: lerp vs slerp between 512-d Gaussian latents"
ORDER = 10


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (first-touch of the output, thread start)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def numpy_slerp(a, b, t):
    """The textbook formula with whole-array NumPy operations (the usual way)."""
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    nb = np.linalg.norm(b, axis=-1, keepdims=True)
    theta = np.arccos(np.clip(np.sum(a * b, -1, keepdims=True) / (na * nb), -1, 1))
    t = t[:, None]
    return (np.sin((1 - t) * theta) * a + np.sin(t * theta) * b) / np.sin(theta)


def tentpole(out_dir: Path, pairs: int, steps: int, depth: int = 512) -> tuple[Path, float, float]:
    """Plot |path(t)| for lerp and slerp; returns the PNG and the mid-point norms."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    a = rng.standard_normal((pairs, depth)).astype(np.float32)
    b = rng.standard_normal((pairs, depth)).astype(np.float32)
    t = np.linspace(0, 1, steps, dtype=np.float32)
    lerp_path = fi.lerp(a[:, None, :], b[:, None, :], t[None, :, None])   # (pairs, T, D)
    slerp_path = fi.slerp(a, b, t, path=True)                              # (pairs, T, D)
    norms = {name: np.linalg.norm(p, axis=-1) for name, p in
             (("lerp", lerp_path), ("slerp", slerp_path))}

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for (name, n), color in zip(norms.items(), ("tab:red", "tab:blue")):
        ax.plot(t, n.T, color=color, alpha=0.08, lw=0.8)
        ax.plot(t, n.mean(0), color=color, lw=2.2, label=f"{name} (mean of {pairs} pairs)")
    ax.axhline(np.sqrt(depth), color="k", ls=":", lw=1, label=r"$\sqrt{D}$: typical Gaussian norm")
    ax.set_xlabel("t")
    ax.set_ylabel("|path(t)|")
    ax.set_title(f"Interpolating {depth}-d Gaussian latents: lerp's norm sags ('tentpole')")
    ax.legend(loc="lower left", fontsize=8)
    png = save_figure(fig, out_dir / "blend_tentpole.png", dpi=110)
    mid = steps // 2
    return png, float(norms["lerp"][:, mid].mean()), float(norms["slerp"][:, mid].mean())


def timings(quick: bool) -> list[str]:
    """A small table: fastinterp vs NumPy on the same data, medians."""
    rng = np.random.default_rng(1)
    n = 1 << (18 if quick else 22)
    rows, depth = (512, 64) if quick else (16384, 512)
    repeats = 3 if quick else 7
    x = rng.standard_normal(n, dtype=np.float32)
    y = rng.standard_normal(n, dtype=np.float32)
    w = rng.random(n, dtype=np.float32)
    a = rng.standard_normal((rows, depth), dtype=np.float32)
    b = rng.standard_normal((rows, depth), dtype=np.float32)
    t = rng.random(rows, dtype=np.float32)
    cases = [
        (f"lerp, {n:,} float32, array weight",
         lambda: fi.lerp(x, y, w), lambda: x + w * (y - x)),
        (f"slerp, ({rows:,} x {depth}) float32",
         lambda: fi.slerp(a, b, t), lambda: numpy_slerp(a, b, t)),
    ]
    lines = ["| workload | fastinterp | NumPy | speed-up |", "|---|---|---|---|"]
    for name, ours, theirs in cases:
        mine, peer = _median_ms(ours, repeats), _median_ms(theirs, repeats)
        lines.append(f"| {name} | {mine:.2f} ms | {peer:.2f} ms | {peer / mine:.1f}x |")
    return lines


def run(out_dir: Path, quick: bool) -> list[str]:
    png, lerp_mid, slerp_mid = tentpole(out_dir, pairs=16 if quick else 64,
                                        steps=21 if quick else 101)
    lines = [
        f"norm at t = 0.5: lerp {lerp_mid:.1f}, slerp {slerp_mid:.1f} "
        f"(endpoints ~ sqrt(512) = {np.sqrt(512):.1f}); plot: {png.name}",
        f"timings with {fi.get_num_threads()} threads:",
    ]
    return lines + timings(quick)
