"""Benchmarks: pairwise distances and kNN against their peers (2 threads each).

Run with
``unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; python -m pytest bench/bench_distance.py --benchmark-min-rounds=5``.

pairwise_sqdist, X (4096, 256) vs Y (8192, 256) float32: the peers are
``torch.cdist``, scikit-learn's ``euclidean_distances(squared=True)`` and the
raw BLAS product ``X @ Y.T`` alone (the speed limit of the GEMM form; it
computes no distance). fastinterp runs its own deterministic packed GEMM
(kernels/cpu/_gemm.h), never the shared BLAS: its results are bit-identical
for any thread count, so the ratio to ``X @ Y.T`` is the price of that
guarantee plus the centring and the exactness epilogue. Every call allocates
its (4096, 8192) result; a second group writes both into a preallocated one.

knn, 50,000 x 128 float32 rows, 2,000 queries, k = 10 and k = 5: the peers
are faiss ``IndexFlatL2.search`` (index built outside the timing) and
scikit-learn ``NearestNeighbors(algorithm="brute").kneighbors``.

Batched point clouds (leading batch dimensions, as ``torch.cdist`` takes
them): B clouds of P and R points in 3-D, float32, at (32, 1024, 1024) and
(1024, 32, 32). ``pairwise_sqdist`` on the whole batch (one kernel call)
against the same op called in a Python loop over the clouds, ``torch.cdist``
squared (its default mode uses the matrix-product expansion, inexact near
zero) and ``torch.cdist(compute_mode="donot_use_mm_for_euclid_dist")`` (direct
differences, exact like fastinterp). ``knn`` k=1 per cloud (the nearest
neighbour of a chamfer distance) against a Python loop and torch's
``cdist(...).min(-1)``.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastinterp as fi
from conftest import run

PAIR_M, PAIR_N, PAIR_D = 4096, 8192, 256
KNN_N, KNN_Q, KNN_D = 50_000, 2_000, 128
PAIR_GROUP = f"pairwise_sqdist: X ({PAIR_M}, {PAIR_D}) vs Y ({PAIR_N}, {PAIR_D}) float32"


CLOUDS = [(32, 1024, 1024), (1024, 32, 32)]


def cloud_group(op, shape):
    b, p, r = shape
    return f"{op} batched: {b} clouds, {p} x {r} points, 3-D float32"


def knn_group(k):
    return f"knn: {KNN_N} x {KNN_D} float32, {KNN_Q} queries, k={k}"


@pytest.fixture(scope="module", autouse=True)
def faiss_threads(bench_threads):
    """conftest's bench_threads pins fastinterp, torch and the BLAS; faiss
    keeps its own OpenMP pool."""
    try:
        import faiss
    except ImportError:
        return
    faiss.omp_set_num_threads(bench_threads)


@pytest.fixture(scope="module")
def pair_data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((PAIR_M, PAIR_D), dtype=np.float32),
            rng.standard_normal((PAIR_N, PAIR_D), dtype=np.float32))


@pytest.fixture(scope="module")
def knn_data():
    rng = np.random.default_rng(1)
    return (rng.standard_normal((KNN_N, KNN_D), dtype=np.float32),
            rng.standard_normal((KNN_Q, KNN_D), dtype=np.float32))


def gflops(benchmark, flops):
    benchmark.extra_info["GFLOP/s"] = round(flops / benchmark.stats.stats.median / 1e9, 1)


# ------------------------------------------------------------------ pairwise

PAIR_FLOPS = 2 * PAIR_M * PAIR_N * PAIR_D


def test_pairwise_fastinterp(benchmark, pair_data):
    x, y = pair_data
    r = run(benchmark, "fastinterp", PAIR_GROUP, fi.pairwise_sqdist, x, y)
    gflops(benchmark, PAIR_FLOPS)
    assert r.shape == (PAIR_M, PAIR_N)


def test_pairwise_matmul(benchmark, pair_data):
    x, y = pair_data
    run(benchmark, "numpy", PAIR_GROUP, np.matmul, x, y.T)
    benchmark.extra_info["note"] = "X @ Y.T only (no distance)"
    gflops(benchmark, PAIR_FLOPS)


# Both into a preallocated result: the computation alone, without the result's
# memory (fastinterp's allocating call reuses its previous result's freed block,
# README "Result memory"; np.matmul faults in 128 MB afresh on every call).
PAIR_OUT_GROUP = PAIR_GROUP + ", into out="


def test_pairwise_out_fastinterp(benchmark, pair_data):
    x, y = pair_data
    out = np.empty((PAIR_M, PAIR_N), np.float32)
    run(benchmark, "fastinterp", PAIR_OUT_GROUP, fi.pairwise_sqdist, x, y, out=out)
    gflops(benchmark, PAIR_FLOPS)


def test_pairwise_out_matmul(benchmark, pair_data):
    x, y = pair_data
    out = np.empty((PAIR_M, PAIR_N), np.float32)
    run(benchmark, "numpy", PAIR_OUT_GROUP, np.matmul, x, y.T, out=out)
    benchmark.extra_info["note"] = "X @ Y.T only (no distance)"
    gflops(benchmark, PAIR_FLOPS)


def test_pairwise_torch_cdist(benchmark, pair_data):
    torch = pytest.importorskip("torch")
    x, y = (torch.from_numpy(a) for a in pair_data)
    run(benchmark, "torch", PAIR_GROUP, torch.cdist, x, y)
    benchmark.extra_info["note"] = "cdist (Euclidean, not squared)"


def test_pairwise_sklearn(benchmark, pair_data):
    metrics = pytest.importorskip("sklearn.metrics")
    x, y = pair_data
    run(benchmark, "sklearn", PAIR_GROUP, metrics.euclidean_distances, x, y, squared=True)


# ----------------------------------------------------------------------- knn

@pytest.mark.parametrize("k", [10, 5])
def test_knn_fastinterp(benchmark, knn_data, k):
    x, q = knn_data
    d, i = run(benchmark, "fastinterp", knn_group(k), fi.knn, x, q, k)
    assert i.shape == (KNN_Q, k)


@pytest.mark.parametrize("k", [10, 5])
def test_knn_faiss(benchmark, knn_data, k):
    faiss = pytest.importorskip("faiss")
    x, q = knn_data
    index = faiss.IndexFlatL2(KNN_D)
    index.add(x)
    run(benchmark, "faiss", knn_group(k), index.search, q, k)
    benchmark.extra_info["note"] = "IndexFlatL2.search"


@pytest.mark.parametrize("k", [10, 5])
def test_knn_sklearn(benchmark, knn_data, k):
    neighbors = pytest.importorskip("sklearn.neighbors")
    x, q = knn_data
    nn = neighbors.NearestNeighbors(n_neighbors=k, algorithm="brute").fit(x)
    run(benchmark, "sklearn", knn_group(k), nn.kneighbors, q)
    benchmark.extra_info["note"] = "NearestNeighbors(algorithm='brute')"


# ----------------------------------------------------------- batched point clouds

@pytest.fixture(scope="module", params=CLOUDS, ids=lambda s: "x".join(map(str, s)))
def clouds(request):
    b, p, r = request.param
    rng = np.random.default_rng(2)
    return (request.param, rng.standard_normal((b, p, 3), dtype=np.float32),
            rng.standard_normal((b, r, 3), dtype=np.float32))


def _each(fn, x, y, *args):
    return [fn(a, b, *args) for a, b in zip(x, y)]


def test_clouds_fastinterp(benchmark, clouds):
    shape, x, y = clouds
    r = run(benchmark, "fastinterp", cloud_group("pairwise_sqdist", shape),
            fi.pairwise_sqdist, x, y)
    assert r.shape == shape


def test_clouds_fastinterp_loop(benchmark, clouds):
    shape, x, y = clouds
    run(benchmark, "fastinterp loop", cloud_group("pairwise_sqdist", shape), _each,
        fi.pairwise_sqdist, x, y)
    benchmark.extra_info["note"] = "one call per cloud (Python loop)"


def test_clouds_torch_cdist(benchmark, clouds):
    torch = pytest.importorskip("torch")
    shape, x, y = clouds
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    run(benchmark, "torch", cloud_group("pairwise_sqdist", shape),
        lambda: torch.cdist(tx, ty) ** 2)
    benchmark.extra_info["note"] = "cdist(x, y) ** 2 (matrix-product mode)"


def test_clouds_torch_cdist_direct(benchmark, clouds):
    torch = pytest.importorskip("torch")
    shape, x, y = clouds
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    run(benchmark, "torch direct", cloud_group("pairwise_sqdist", shape),
        lambda: torch.cdist(tx, ty, compute_mode="donot_use_mm_for_euclid_dist") ** 2)
    benchmark.extra_info["note"] = "cdist(..., compute_mode='donot_use_mm_for_euclid_dist') ** 2"


def test_clouds_knn_fastinterp(benchmark, clouds):
    shape, x, y = clouds
    d, i = run(benchmark, "fastinterp", cloud_group("knn k=1", shape), fi.knn, y, x, 1)
    assert i.shape == shape[:2] + (1,)


def test_clouds_knn_fastinterp_loop(benchmark, clouds):
    shape, x, y = clouds
    run(benchmark, "fastinterp loop", cloud_group("knn k=1", shape), _each, fi.knn, y, x, 1)
    benchmark.extra_info["note"] = "one call per cloud (Python loop)"


def test_clouds_knn_torch(benchmark, clouds):
    torch = pytest.importorskip("torch")
    shape, x, y = clouds
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    run(benchmark, "torch", cloud_group("knn k=1", shape), lambda: torch.cdist(tx, ty).min(-1))
    benchmark.extra_info["note"] = "cdist(x, y).min(-1)"
