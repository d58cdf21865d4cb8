"""NCA fit on scikit-learn's digits (16 components): fastinterp vs scikit-learn.

Threads are pinned to 2 for every library by bench/conftest.py.

Each benchmark also records the 5-NN test accuracy of the learnt embedding
(70/30 stratified split, seed 0) in ``extra_info["5nn_accuracy"]``: the
speed comparison only counts at equal or better accuracy.
"""
from __future__ import annotations

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
