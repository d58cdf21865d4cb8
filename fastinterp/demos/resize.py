"""Demo section: one image resized by every mode, up and down, side by side,
with a timing line against torch and OpenCV when they are installed."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fastinterp.demo import save_figure

TITLE = "Resizing: every mode, up and down (resize / interpolate)"
ORDER = 40

UP_MODES = [("nearest", {}), ("nearest-exact", {}), ("bilinear", {}),
            ("bicubic", {}), ("area", {})]
DOWN_MODES = [("nearest", {}), ("bilinear", {}), ("area", {}),
              ("bilinear", {"antialias": True}), ("bicubic", {"antialias": True})]


def _zone_plate(n: int) -> np.ndarray:
    """A zone plate: rings whose frequency grows outwards (shows aliasing plainly)."""
    yy, xx = (np.mgrid[0:n, 0:n] - n / 2) / n
    return (0.5 + 0.5 * np.cos(np.pi * n * 0.45 * (xx ** 2 + yy ** 2))).astype(np.float32)


def _best_ms(fn, repeat=3):
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _name(mode, kw):
    return mode + (" +antialias" if kw.get("antialias") else "")


def _timing_lines(quick: bool) -> list[str]:
    import fastinterp as fi
    shape = (2, 3, 64, 64) if quick else (8, 3, 512, 512)
    up = shape[2] * 2
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    ours = _best_ms(lambda: fi.resize(x, size=up))
    parts = [f"fastinterp {ours:.2f} ms"]
    if quick:   # peers are imported for the full demo only (torch takes seconds to load)
        return [f"   bilinear {shape} -> {up}x{up}: " + parts[0]]
    try:
        import torch
        import torch.nn.functional as F
        xt = torch.from_numpy(x)
        ms = _best_ms(lambda: F.interpolate(xt, size=up, mode="bilinear"))
        parts.append(f"torch {ms:.2f} ms ({ms / ours:.1f}x)")
    except ImportError:
        pass
    try:
        import cv2
        hwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        ms = _best_ms(lambda: [cv2.resize(im, (up, up)) for im in hwc])
        parts.append(f"cv2 {ms:.2f} ms ({ms / ours:.1f}x)")
    except ImportError:
        pass
    return [f"   bilinear {shape} -> {up}x{up} ({fi.get_num_threads()} threads): "
            + ", ".join(parts)]


def run(out_dir: Path, quick: bool) -> list[str]:
    import matplotlib.pyplot as plt
    import fastinterp as fi

    n = 128 if quick else 512
    img = _zone_plate(n)[None, None]
    lines = []

    # Upscaling: a 16x16 crop blown up 8x shows how each mode fills in pixels.
    c0 = n // 2 + n // 32
    crop = np.ascontiguousarray(img[:, :, c0:c0 + 16, c0:c0 + 16])
    fig, axes = plt.subplots(2, len(UP_MODES) + 1, figsize=(15, 5.8))
    axes[0, 0].imshow(crop[0, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[0, 0].set_title("16x16 crop")
    for ax, (mode, kw) in zip(axes[0, 1:], UP_MODES):
        t0 = time.perf_counter()
        up = fi.resize(crop, size=128, mode=mode, **kw)
        ms = (time.perf_counter() - t0) * 1e3
        ax.imshow(up[0, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"up x8: {_name(mode, kw)}")
        lines.append(f"   up x8 {_name(mode, kw):22s} {ms:6.2f} ms")

    # Downscaling: the whole zone plate to a quarter; without a low-pass
    # filter the fine rings alias into false ring patterns.
    axes[1, 0].imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
    axes[1, 0].set_title(f"{n}x{n} zone plate")
    for ax, (mode, kw) in zip(axes[1, 1:], DOWN_MODES):
        t0 = time.perf_counter()
        down = fi.resize(img, size=n // 4, mode=mode, **kw)
        ms = (time.perf_counter() - t0) * 1e3
        ax.imshow(down[0, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"down /4: {_name(mode, kw)}")
        lines.append(f"   down /4 {_name(mode, kw):20s} {ms:6.2f} ms")
    for ax in axes.ravel():
        ax.axis("off")
    path = save_figure(fig, out_dir / "resize_modes.png", dpi=80)
    lines.append(f"   wrote {path.name}")
    lines.extend(_timing_lines(quick))
    return lines
