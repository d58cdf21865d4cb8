"""Demo section: the rings of the NCA paper (Goldberger et al., 2004, section 4).

Five classes on concentric circles (radii 1..5, radial noise 0.1) plus a third
feature of Gaussian noise with standard deviation 10; 500 points per class,
70/30 split. Projected to 2-D, PCA keeps the noise and loses the rings, NCA
(fastinterp's defaults) recovers them.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fastinterp.demo import save_figure

TITLE = "NCA vs PCA on the rings of the NCA paper"
ORDER = 61


def rings(seed=0, noise=10.0, radial=0.1, per_class=500):
    """The rings data set: X (5 * per_class, 3) and labels y in 0..4.

    Class c lies on the circle of radius ``c + 1`` (radial Gaussian noise of
    standard deviation ``radial``) in the first two features; the third is
    Gaussian noise of standard deviation ``noise``.
    """
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, 5 * per_class)
    y = np.repeat(np.arange(5), per_class)
    r = y + 1 + radial * rng.standard_normal(t.size)
    X = np.c_[r * np.cos(t), r * np.sin(t), noise * rng.standard_normal(t.size)]
    return X, y


def run(out_dir: Path, quick: bool) -> list[str]:
    """Write nca_rings.png (PCA vs NCA embeddings of the test points); return the lines."""
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier
    from fastinterp.models import NCA

    X, y = rings(0, per_class=200 if quick else 500)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)

    def accuracy(Ztr, Zte):
        return KNeighborsClassifier(5).fit(Ztr, ytr).score(Zte, yte)

    lines = [f"rings: {len(Xtr)} training / {len(Xte)} test points, 5 classes, "
             f"3 features (2 ring coordinates + noise of std 10)"]
    lines.append(f"  raw 3-D           5-NN accuracy {accuracy(Xtr, Xte):.4f}")
    pca = PCA(2).fit(Xtr)
    lines.append(f"  PCA, 2-D          5-NN accuracy {accuracy(pca.transform(Xtr), pca.transform(Xte)):.4f}")
    start = time.perf_counter()
    nca = NCA(2, random_state=0).fit(Xtr, ytr)
    took = time.perf_counter() - start
    Ztr, Zte = nca.transform(Xtr), nca.transform(Xte)
    lines.append(f"  NCA (defaults)    5-NN accuracy {accuracy(Ztr, Zte):.4f}   fit {took:.2f} s")
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.3))
    for ax, Z, name in ((axes[0], pca.transform(Xte), "PCA"), (axes[1], Zte, "NCA")):
        ax.scatter(Z[:, 0], Z[:, 1], c=yte, cmap="tab10", s=5, vmin=0, vmax=9)
        ax.set_title(f"{name}, 2 components: test points")
        ax.set_aspect("equal", adjustable="datalim")
    path = save_figure(fig, out_dir / "nca_rings.png", dpi=80)
    lines.append(f"  -> {path.name}")
    return lines
