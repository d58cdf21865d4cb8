"""Demo section: models trained by hand with fastinterp's optimizers.

NCA on scikit-learn's digits (a 2-D embedding plot, 5-NN accuracy and
timings against raw pixels and scikit-learn's NCA) and a polynomial fitted
by gradient descent next to its closed form. Also home to the helpers of the
larger NCA workloads (``examples/nca_mnist_table.py``, ``bench/bench_models.py``):
:func:`mnist_like`, an MNIST-shaped data set built offline, and
:class:`PeakMemory`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fastinterp.demo import save_figure

TITLE = "Models trained by hand: NCA on digits, polynomial regression"
ORDER = 60


def mnist_like(n_train=60_000, n_test=10_000, seed=0, noise=0.1):
    """An MNIST-shaped data set built offline from scikit-learn's digits.

    The 1797 digits (8x8, values 0..16) are split 70/30 (stratified, so no
    source image is in both sets), upsampled to 20x20 with
    :func:`fastinterp.resize` (bicubic), centred in 28x28 like MNIST, and
    augmented: a random affine warp per image (rotation up to 15 degrees,
    scale 0.85..1.15, shear up to 0.15, shift up to 2.5 pixels, by
    :func:`fastinterp.affine_grid` and :func:`fastinterp.grid_sample`), then
    Gaussian pixel noise of standard deviation ``noise``, clipped to [0, 1].

    Returns
    -------
    Xtr (n_train, 784) float32, ytr (n_train,), Xte (n_test, 784) float32, yte (n_test,)
    """
    import fastinterp as fi
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    src_tr, src_te, lab_tr, lab_te = train_test_split(X, y, test_size=0.3, stratify=y,
                                                      random_state=seed)
    rng = np.random.default_rng(seed)

    def make(src, labels, n):
        pick = rng.integers(0, len(src), n)
        small = (src[pick] / 16.0).astype(np.float32).reshape(n, 1, 8, 8)
        big = np.zeros((n, 1, 28, 28), np.float32)
        big[:, :, 4:24, 4:24] = np.clip(fi.resize(small, (20, 20), mode="bicubic"), 0, 1)
        angle = rng.uniform(-15, 15, n) * np.pi / 180
        scale = rng.uniform(0.85, 1.15, n)
        shear = rng.uniform(-0.15, 0.15, n)
        theta = np.zeros((n, 2, 3), np.float32)
        theta[:, 0, 0] = np.cos(angle) / scale
        theta[:, 0, 1] = (-np.sin(angle) + shear) / scale
        theta[:, 1, 0] = np.sin(angle) / scale
        theta[:, 1, 1] = np.cos(angle) / scale
        theta[:, :, 2] = rng.uniform(-2.5, 2.5, (n, 2)) * (2 / 28)   # pixels -> [-1, 1] units
        warped = fi.grid_sample(big, fi.affine_grid(theta, (n, 1, 28, 28)))
        warped += rng.normal(0, noise, warped.shape).astype(np.float32)
        return np.clip(warped, 0, 1).reshape(n, 784), labels[pick]

    Xtr, ytr = make(src_tr, lab_tr, n_train)
    Xte, yte = make(src_te, lab_te, n_test)
    return Xtr, ytr, Xte, yte


class PeakMemory:
    """Context manager: ``.peak`` is the most memory allocated at once during the block
    beyond what was allocated at its start, in bytes, as :mod:`tracemalloc` sees it
    (NumPy arrays and Python objects; not the small scratch buffers of C kernels).

    Unlike the process's peak resident set, it does not depend on what the
    allocator kept from earlier work. Tracing slows allocation-heavy Python code
    a little while the block runs.
    """

    def __enter__(self):
        import tracemalloc
        self._started = not tracemalloc.is_tracing()
        if self._started:
            tracemalloc.start()
        tracemalloc.reset_peak()
        self._base, self.peak = tracemalloc.get_traced_memory()[0], 0
        return self

    def __exit__(self, *exc):
        import tracemalloc
        self.peak = max(0, tracemalloc.get_traced_memory()[1] - self._base)
        if self._started:
            tracemalloc.stop()
        return False


def _knn_accuracy(Ztr, ytr, Zte, yte, k=5):
    from sklearn.neighbors import KNeighborsClassifier
    return KNeighborsClassifier(k).fit(Ztr, ytr).score(Zte, yte)


def _nca(out_dir: Path, quick: bool) -> list[str]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    import matplotlib.pyplot as plt
    from fastinterp.models import NCA

    X, y = load_digits(return_X_y=True)
    if quick:
        X, y = X[:600], y[:600]
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    lines = [f"digits: {len(Xtr)} training / {len(Xte)} test images of 8x8 pixels, 10 classes"]
    lines.append(f"  raw 64 pixels            5-NN accuracy {_knn_accuracy(Xtr, ytr, Xte, yte):.4f}")

    NCA(16, max_iter=1).fit(Xtr[:300], ytr[:300])     # warm-up: first-call imports
    start = time.perf_counter()
    nca = NCA(16, random_state=0).fit(Xtr, ytr)
    ours = time.perf_counter() - start
    acc = _knn_accuracy(nca.transform(Xtr), ytr, nca.transform(Xte), yte)
    lines.append(f"  fastinterp NCA, 16 dims  5-NN accuracy {acc:.4f}   fit {ours * 1e3:7.1f} ms")
    if quick:
        lines.append("  (scikit-learn's NCA skipped in quick mode)")
    else:
        from sklearn.neighbors import NeighborhoodComponentsAnalysis
        start = time.perf_counter()
        sk = NeighborhoodComponentsAnalysis(16, random_state=0).fit(Xtr, ytr)
        theirs = time.perf_counter() - start
        acc_sk = _knn_accuracy(sk.transform(Xtr), ytr, sk.transform(Xte), yte)
        lines.append(f"  sklearn NCA, 16 dims     5-NN accuracy {acc_sk:.4f}   fit {theirs * 1e3:7.1f} ms"
                     f"   ({theirs / ours:.0f}x the time)")

    flat = NCA(2, random_state=0, max_iter=30).fit(Xtr, ytr)
    Z = flat.transform(Xte)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    sc = ax.scatter(Z[:, 0], Z[:, 1], c=yte, cmap="tab10", s=9)
    ax.legend(*sc.legend_elements(), title="digit", fontsize=7, loc="best")
    ax.set_title("NCA, 2 components: test digits")
    path = save_figure(fig, out_dir / "nca_digits_2d.png", dpi=110)
    acc2 = _knn_accuracy(flat.transform(Xtr), ytr, Z, yte)
    lines.append(f"  2-D NCA embedding: 5-NN accuracy {acc2:.4f} -> {path.name}")
    return lines


def _regression(out_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt
    from fastinterp.models import PolynomialRegression

    x = np.linspace(0, 1, 10)
    y = 3 * x + np.sin(6 * x) + 1
    fine = np.linspace(0, 1, 200)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(fine, 3 * fine + np.sin(6 * fine) + 1, "k:", label="3x + sin(6x) + 1")
    ax.plot(x, y, "ko", label="10 samples")
    lines = ["polynomial least squares by gradient descent (SGD + momentum) vs closed form:"]
    for degree in (1, 3, 5):
        model = PolynomialRegression(degree).fit(x, y)
        gap = np.abs(model.coef_ - model.closed_form()).max()
        ax.plot(fine, model.predict(fine), label=f"degree {degree} ({model.n_iter_} steps)")
        lines.append(f"  degree {degree}: {model.n_iter_:5d} steps, mse {model.loss_curve_[-1]:.2e}, "
                     f"max |coef - closed form| {gap:.1e}")
    ax.legend(fontsize=8)
    ax.set_title("PolynomialRegression: gradient descent fits")
    path = save_figure(fig, out_dir / "polynomial_regression.png", dpi=110)
    lines.append(f"  -> {path.name}")
    return lines


def run(out_dir: Path, quick: bool) -> list[str]:
    """Write nca_digits_2d.png and polynomial_regression.png; return the report lines."""
    return _nca(out_dir, quick) + _regression(out_dir)
