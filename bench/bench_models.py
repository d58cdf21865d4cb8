"""NCA fit: fastinterp vs scikit-learn, on digits and on an MNIST-shaped workload.

Threads are pinned to 2 for every library by bench/conftest.py.

Digits (16 components): each benchmark also records the 5-NN test accuracy of
the learnt embedding (70/30 stratified split, seed 0) in
``extra_info["5nn_accuracy"]``: the speed comparison only counts at equal or
better accuracy.

MNIST-shaped (60,000 x 784 float32, 32 components; see
``fastinterp.demos.models.mnist_like``): fastinterp fits all 60,000 points;
scikit-learn's NCA holds N x N float64 arrays, so it runs on a subset, and the
largest subset that fits in 8 GB is estimated from its measured bytes per N^2
(``n_max_8GB``). Each records ``n_train``, the peak memory allocated by the fit
(``peak_MB``, tracemalloc) and the 5-NN test error on 10,000 test images (``5nn_error``).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from fastinterp.models import NCA

GROUP = "nca_fit: digits (1257 x 64), 16 components"


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.model_selection import train_test_split
    X, y = datasets.load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)


def _accuracy(model, split):
    from sklearn.neighbors import KNeighborsClassifier
    Xtr, Xte, ytr, yte = split
    return KNeighborsClassifier(5).fit(model.transform(Xtr), ytr).score(model.transform(Xte), yte)


def test_nca_fastinterp(benchmark, digits):
    benchmark.group = GROUP
    benchmark.extra_info["library"] = "fastinterp"
    Xtr, _, ytr, _ = digits
    model = benchmark(lambda: NCA(16, random_state=0).fit(Xtr, ytr))
    benchmark.extra_info["5nn_accuracy"] = _accuracy(model, digits)


def test_nca_sklearn(benchmark, digits):
    from sklearn.neighbors import NeighborhoodComponentsAnalysis
    benchmark.group = GROUP
    benchmark.extra_info["library"] = "sklearn"
    Xtr, _, ytr, _ = digits
    model = benchmark.pedantic(
        lambda: NeighborhoodComponentsAnalysis(16, random_state=0).fit(Xtr, ytr),
        rounds=5, iterations=1)
    benchmark.extra_info["5nn_accuracy"] = _accuracy(model, digits)


# --- NCA on an MNIST-shaped workload: 60,000 x 784 float32, 32 components ------------------

MNIST_GROUP = "nca_fit: MNIST-shaped (60000 x 784 float32), 32 components"
SKLEARN_BUDGET = 8 * 2**30          # the memory scikit-learn's NCA may use
SKLEARN_N = int(os.environ.get("FASTINTERP_BENCH_SKLEARN_N", "3000"))


@pytest.fixture(scope="module")
def mnist():
    pytest.importorskip("sklearn")
    from fastinterp.demos.models import mnist_like
    return mnist_like(60_000, 10_000)


def _knn_error(train, ytr, test, yte):
    import fastinterp as fi
    idx = fi.knn(train, test, 5, return_distances=False)
    votes = np.zeros((len(test), 10), np.int64)
    np.add.at(votes, (np.arange(len(test))[:, None], ytr[idx]), 1)
    return round(float(np.mean(votes.argmax(axis=1) != yte)), 4)


def _measured(benchmark, fit):
    """Run ``fit`` once under the benchmark; record its peak memory; return the model."""
    from fastinterp.demos.models import PeakMemory
    with PeakMemory() as mem:
        model = benchmark.pedantic(fit, rounds=1, iterations=1)
    benchmark.extra_info["peak_MB"] = round(mem.peak / 2**20, 1)
    return model


def test_nca_mnist_fastinterp(benchmark, mnist):
    """fastinterp fits all 60,000 points: minibatches, never an N x N matrix."""
    Xtr, ytr, Xte, yte = mnist
    benchmark.group = MNIST_GROUP
    benchmark.extra_info.update(library="fastinterp", n_train=len(Xtr))
    model = _measured(benchmark, lambda: NCA(32, random_state=0).fit(Xtr, ytr))
    benchmark.extra_info["5nn_error"] = _knn_error(model.transform(Xtr), ytr,
                                                   model.transform(Xte), yte)


def _sklearn_bytes_per_n2(X, y):
    """scikit-learn's NCA peak memory per N^2 (its softmax and gradient are N x N
    float64 arrays), measured on a small subset."""
    from sklearn.neighbors import NeighborhoodComponentsAnalysis
    from fastinterp.demos.models import PeakMemory
    n = 1500
    with PeakMemory() as mem:
        NeighborhoodComponentsAnalysis(32, max_iter=2, random_state=0).fit(X[:n], y[:n])
    return max(mem.peak, 1) / n ** 2


def test_nca_mnist_sklearn(benchmark, mnist):
    """scikit-learn on the largest subset that fits in 8 GB is estimated from its
    measured bytes per N^2; it is run on FASTINTERP_BENCH_SKLEARN_N points (default
    3000, or that estimate if smaller) with its default 50 iterations."""
    from sklearn.neighbors import NeighborhoodComponentsAnalysis
    Xtr, ytr, Xte, yte = mnist
    per_n2 = _sklearn_bytes_per_n2(Xtr, ytr)
    n_max = int(np.sqrt(SKLEARN_BUDGET / per_n2))
    n = min(SKLEARN_N, n_max, len(Xtr))
    benchmark.group = MNIST_GROUP
    benchmark.extra_info.update(library="sklearn", n_train=n, bytes_per_n2=round(per_n2, 1),
                                n_max_8GB=n_max)
    model = _measured(benchmark, lambda: NeighborhoodComponentsAnalysis(32, random_state=0)
                      .fit(Xtr[:n], ytr[:n]))
    benchmark.extra_info["5nn_error"] = _knn_error(
        model.transform(Xtr[:n]).astype(np.float32), ytr[:n],
        model.transform(Xte).astype(np.float32), yte)
