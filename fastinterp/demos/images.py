"""Demo section: a uint8 photo resized by each ``match=`` preset next to the
library it matches (OpenCV, Pillow), with their difference in grey levels."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fastinterp.demo import save_figure

TITLE = "uint8 photos: resize(match='opencv' | 'pil') next to cv2.resize and Image.resize"
ORDER = 45

# (preset, mode, library flag name)
CASES = [("opencv", "bilinear", "INTER_LINEAR"), ("opencv", "bicubic", "INTER_CUBIC"),
         ("opencv", "area", "INTER_AREA"), ("pil", "bilinear", "BILINEAR"),
         ("pil", "bicubic", "BICUBIC"), ("pil", "lanczos", "LANCZOS")]


def photo(synthetic: bool = False) -> np.ndarray:
    """An RGB uint8 photo: scikit-learn's sample 'china.jpg' if installed (and not
    ``synthetic``), else a synthetic one of the same size."""
    if synthetic:
        return _synthetic()
    try:
        from sklearn.datasets import load_sample_image
        return np.ascontiguousarray(load_sample_image("china.jpg"))
    except Exception:   # scikit-learn (or its image reader) is optional
        return _synthetic()


def _synthetic() -> np.ndarray:
    yy, xx = np.mgrid[0:427, 0:640] / 64.0
    rgb = np.stack([np.sin(xx * yy), np.cos(xx + yy * yy / 4), np.sin(3 * xx - yy)], -1)
    return ((rgb + 1) * 127.5).astype(np.uint8)


def _reference(match, flag, img, size):
    """The library's own result, or None when it is not installed."""
    h, w = size
    try:
        if match == "opencv":
            import cv2
            return cv2.resize(img, (w, h), interpolation=getattr(cv2, flag))
        from PIL import Image
        return np.asarray(Image.fromarray(img).resize((w, h), getattr(Image, flag)))
    except ImportError:
        return None


def run(out_dir: Path, quick: bool) -> list[str]:
    import matplotlib.pyplot as plt
    import fastinterp as fi

    img = photo(synthetic=quick)   # importing scikit-learn takes seconds
    if quick:
        img = np.ascontiguousarray(img[::4, ::4])
    h, w = img.shape[:2]
    sizes = [(h * 2 // 5, w * 2 // 5), (h * 3 // 2 + 1, w * 3 // 2 + 1)]   # down and up
    lines = []
    fig, axes = plt.subplots(len(CASES), 3, figsize=(10, 2.6 * len(CASES)))
    for row, (match, mode, flag) in zip(axes, CASES):
        for k, size in enumerate(sizes):
            t0 = time.perf_counter()
            ours = fi.resize(img, size=size, mode=mode, layout="HWC", match=match)
            ms = (time.perf_counter() - t0) * 1e3
            ref = _reference(match, flag, img, size)
            if ref is None:
                lines.append(f"   {match}/{mode}: library not installed, skipped")
                continue
            d = np.abs(ours.astype(int) - ref.astype(int))
            lines.append(f"   {match:6s} {mode:8s} {img.shape[:2]} -> {size}: max |diff| "
                         f"{d.max()} grey level(s), {100 * (d > 0).mean():.3f}% of values "
                         f"differ ({ms:.1f} ms)")
            if k == 0:   # plot the shrink: ours, theirs, difference (x 64)
                row[0].imshow(ours)
                row[0].set_title(f"fastinterp match={match!r}, {mode}")
                row[1].imshow(ref)
                row[1].set_title(f"{'cv2' if match == 'opencv' else 'Pillow'} {flag}")
                row[2].imshow(np.clip(d.max(axis=-1) * 64, 0, 255), cmap="magma", vmin=0,
                              vmax=255)
                row[2].set_title(f"|difference| x 64 (max {d.max()})")
    for ax in axes.ravel():
        ax.axis("off")
    path = save_figure(fig, out_dir / "images_presets.png", dpi=70)
    lines.append(f"   wrote {path.name}")
    return lines
