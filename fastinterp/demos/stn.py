"""Demo section: a spatial transformer network trained in torch on scikit-learn's digits.

The digits (8x8) are placed on a 40x40 canvas, randomly rotated (up to 60
degrees either way), scaled and shifted. A localization network predicts an
affine transform from the canvas; the sampler (``affine_grid`` +
``grid_sample``) warps a 16-channel feature map of the canvas into a 24x24
view that a small classifier reads (a transformer inside the network, as in
Jaderberg et al., 2015). The same model, from the same seed, is trained once
with ``fastinterp.torch``'s sampler and once with torch's own ``F.affine_grid``
+ ``F.grid_sample``; the two reach the same test accuracy.

``examples/stn_digits.py`` runs the full-size version from the command line;
this module holds the data, the model and the training loop it shares with
the demo and the benchmarks (bench/bench_torch_frontend.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TITLE = "A spatial transformer trained in torch (fastinterp.torch vs torch's sampler)"
ORDER = 70

CANVAS = 40          # the distorted inputs are CANVAS x CANVAS
VIEW = 24            # the transformer's output
FEATURES = 16        # channels of the feature map the transformer warps


def distorted_digits(copies: int, seed: int, test_copies: int | None = None,
                     max_angle: float = np.pi / 3):
    """scikit-learn's digits on a CANVAS x CANVAS canvas, randomly rotated, scaled and shifted.

    Each digit of the training split (80%) appears ``copies`` times and each
    test digit ``test_copies`` times (default ``copies``), each time with its
    own random transform. Returns float32 ``(x_train, y_train, x_test,
    y_test)``, images (n, 1, CANVAS, CANVAS) in [0, 1]. The warping is
    fastinterp's own NumPy ``affine_grid`` + ``grid_sample``.
    """
    import fastinterp as fi
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    rng = np.random.default_rng(seed)

    def distort(images, labels, k):
        images, labels = np.repeat(images, k, axis=0), np.repeat(labels, k)
        n = len(images)
        angle = rng.uniform(-max_angle, max_angle, n)
        zoom = rng.uniform(0.45, 0.6, n)              # the digit's share of the canvas width
        shift = rng.uniform(-0.3, 0.3, (n, 2))
        # output (canvas) point p samples the digit at R(-angle) (p - shift) / zoom
        c, s = np.cos(angle) / zoom, np.sin(angle) / zoom
        t = -np.stack([c * shift[:, 0] + s * shift[:, 1], -s * shift[:, 0] + c * shift[:, 1]], 1)
        theta = np.stack([np.stack([c, s, t[:, 0]], 1), np.stack([-s, c, t[:, 1]], 1)], 1)
        grid = fi.affine_grid(theta.astype(np.float32), (n, 1, CANVAS, CANVAS))
        return fi.grid_sample(images, grid, padding_mode="zeros"), labels

    return (*distort(xtr, ytr, copies), *distort(xte, yte, test_copies or copies))


def samplers(kind: str):
    """``(affine_grid, grid_sample)``: fastinterp.torch's (``"fastinterp"``) or torch's."""
    if kind == "fastinterp":
        import fastinterp.torch as fit
        return fit.affine_grid, fit.grid_sample
    import torch.nn.functional as F
    return F.affine_grid, F.grid_sample


def make_model(kind: str, seed: int = 0):
    """The STN with the sampler of ``kind``; the weights depend on ``seed`` only."""
    import torch
    from torch import nn

    affine_grid, grid_sample = samplers(kind)

    class STN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, FEATURES, 3, padding=1), nn.ReLU())
            self.loc = nn.Sequential(
                nn.AvgPool2d(2),                                    # 20x20 is enough to see
                nn.Conv2d(1, 8, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),     # 10x10
                nn.Conv2d(8, 16, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),    # 5x5
                nn.Flatten(), nn.Linear(16 * 25, 32), nn.ReLU(), nn.Linear(32, 6))
            self.classify = nn.Sequential(
                nn.MaxPool2d(2),                                    # 12x12
                nn.Conv2d(FEATURES, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 6x6
                nn.Flatten(), nn.Linear(32 * 36, 64), nn.ReLU(), nn.Linear(64, 10))
            last = self.loc[-1]
            with torch.no_grad():        # start from a zoom onto the canvas centre
                last.weight.zero_()
                last.bias.copy_(torch.tensor([0.6, 0, 0, 0, 0.6, 0]))

        def theta(self, x):
            return self.loc(x).view(-1, 2, 3)

        def forward(self, x):
            theta = self.theta(x)
            feats = self.features(x)
            grid = affine_grid(theta, (x.shape[0], FEATURES, VIEW, VIEW), align_corners=False)
            return self.classify(grid_sample(feats, grid, align_corners=False))

        def rectify(self, x):
            """The input images as the transformer sees them (for the pictures)."""
            grid = affine_grid(self.theta(x), (x.shape[0], 1, VIEW, VIEW), align_corners=False)
            return grid_sample(x, grid, align_corners=False)

    torch.manual_seed(seed)
    return STN()


@dataclass
class Result:
    """One training run: the model, its test accuracy and the median step time."""

    model: object
    accuracy: float
    step_ms: float
    epochs: int


def accuracy(model, x, y, batch: int = 512) -> float:
    import torch
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((pred == y).float().mean())


def train(kind: str, data, epochs: int, seed: int = 0, batch: int = 64, lr: float = 2e-3,
          log=None) -> Result:
    """Train the STN with ``kind``'s sampler; the same ``seed`` gives the same
    initial weights and batch order for every kind."""
    import torch
    from torch import nn

    xtr, ytr, xte, yte = (torch.from_numpy(np.ascontiguousarray(a)) for a in data)
    model = make_model(kind, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = len(xtr) // batch
    # the rate decays to 0 so that the final weights (and accuracy) settle
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * steps_per_epoch))
    loss_fn = nn.CrossEntropyLoss()
    order = np.random.default_rng(seed)
    times = []
    for epoch in range(epochs):
        perm = torch.from_numpy(order.permutation(len(xtr)))
        for i in range(0, len(xtr) - batch + 1, batch):
            idx = perm[i:i + batch]
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
            schedule.step()
        if log is not None:
            log(f"   {kind:10s} epoch {epoch + 1}: loss {loss.item():.3f}, "
                f"test accuracy {accuracy(model, xte, yte):.4f}")
    return Result(model, accuracy(model, xte, yte), float(np.median(times)) * 1e3, epochs)


def train_both(epochs: int, copies: int, test_copies: int, seed: int = 0, log=None,
               limit: int | None = None):
    """Train with fastinterp.torch's sampler and with torch's, same data and seed
    (at most ``limit`` training and test images when given)."""
    data = distorted_digits(copies, seed, test_copies)
    if limit is not None:
        data = tuple(a[:limit] for a in data)
    return data, {kind: train(kind, data, epochs, seed, log=log) for kind in ("fastinterp", "torch")}


def plot(path: Path, model, x, count: int = 10) -> Path:
    """Inputs (top row) and the transformer's rectified views of them (bottom row)."""
    import matplotlib.pyplot as plt
    import torch

    from fastinterp.demo import save_figure
    with torch.no_grad():
        views = model.rectify(x[:count])
    fig, axes = plt.subplots(2, count, figsize=(1.3 * count, 2.9))
    for j in range(count):
        for row, img in enumerate((x[j, 0], views[j, 0])):
            axes[row, j].imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, j].axis("off")
    axes[0, 0].set_title("input", loc="left", fontsize=9)
    axes[1, 0].set_title("rectified", loc="left", fontsize=9)
    return save_figure(fig, path, dpi=80)


def report(results) -> list[str]:
    """The lines comparing the two runs."""
    ours, theirs = results["fastinterp"], results["torch"]
    return [f"   test accuracy: fastinterp.torch sampler {ours.accuracy:.4f}, "
            f"torch sampler {theirs.accuracy:.4f} "
            f"(difference {abs(ours.accuracy - theirs.accuracy) * 100:.2f} points)",
            f"   training step (batch 64, forward + backward + Adam): "
            f"{ours.step_ms:.2f} ms with fastinterp.torch, {theirs.step_ms:.2f} ms with torch "
            f"({theirs.step_ms / ours.step_ms:.2f}x)"]


def run(out_dir: Path, quick: bool) -> list[str]:
    try:
        import torch
    except ImportError:
        return ["   (skipped: torch is not installed)"]
    import fastinterp as fi
    torch.set_num_threads(fi.get_num_threads())
    # The two runs (same seed) drift apart through float rounding, so their accuracies
    # differ by chance: 10 epochs of 3 copies, tested on 1,440 images, differed by 0.5-1.0
    # points over three seeds; 12 epochs of 5 copies, tested on 3,600, by 0.14-0.56.
    epochs, copies, test_copies, limit = (1, 1, 1, 320) if quick else (12, 5, 10, None)
    data, results = train_both(epochs, copies, test_copies, limit=limit)
    lines = [f"   {len(data[0])} training / {len(data[2])} test images of {CANVAS}x{CANVAS}, "
             f"{epochs} epoch(s)"]
    lines += report(results)
    if quick:
        lines.append("   (quick mode: one epoch on 320 images is too short to learn the task; "
                     "the accuracies show only that the two samplers train alike. Run without "
                     "--quick for the trained comparison.)")
    path = plot(out_dir / "stn_digits.png", results["fastinterp"].model,
                torch.from_numpy(data[2][:10]))
    lines.append(f"   wrote {path.name}")
    return lines
