"""Benchmarks: fastinterp.dask against the in-memory ops (2 threads in all).

Run with ``python -m pytest bench/bench_dask.py --benchmark-min-rounds=3``.

kNN, a synthetic embedding set of ``KNN_N`` x 128 float32 rows (written to a
zarr store on disk), 1,000 queries, k = 10:

- ``fastinterp``: ``fi.knn`` on the array in memory (the reference time);
- ``faiss``: ``IndexFlatL2.search`` in memory (index built outside the timing);
- ``dask-cluster``: ``fastinterp.dask.knn`` over ``da.from_zarr`` on a
  LocalCluster of 2 worker processes x 1 thread, reading the store;
- ``stream``: ``fi.knn`` over the zarr array in-process (out-of-core, bounded memory).

Aims: the out-of-core rows/s at least 70% of the in-memory knn's; the Dask
version at most 1.3x the in-memory time.

Resize: a (1, 3, 4096, 4096) float32 image, bilinear with antialias to
half size: ``fi.resize`` in memory vs ``fastinterp.dask.resize`` on
1024 x 1024 spatial chunks (threaded scheduler, 2 threads; and the cluster
with the input persisted on the workers, result gathered to the client).
"""
from __future__ import annotations

import numpy as np
import pytest

import fastinterp as fi
from conftest import run

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")
distributed = pytest.importorskip("distributed")
import fastinterp.dask as fd  # noqa: E402
from fastinterp.demos.dask import create_zarr  # noqa: E402

KNN_N, KNN_D, KNN_Q, KNN_K, KNN_CHUNK = 400_000, 128, 1_000, 10, 50_000
KNN_GROUP = f"knn: {KNN_N} x {KNN_D} float32 (zarr), {KNN_Q} queries, k={KNN_K}"
IMG = (1, 3, 4096, 4096)
RESIZE_GROUP = f"resize: {IMG} float32 bilinear antialias to 1/2, 1024^2 chunks"


@pytest.fixture(scope="module")
def cluster_client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cl, distributed.Client(cl) as c:
        yield c


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    """(in-memory array, zarr path, queries): the same rows in RAM and on disk."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((KNN_N, KNN_D), dtype=np.float32)
    path = str(tmp_path_factory.mktemp("bench") / "emb.zarr")
    z = create_zarr(path, x.shape, (KNN_CHUNK, KNN_D), "f4")
    z[:] = x
    return x, path, rng.standard_normal((KNN_Q, KNN_D), dtype=np.float32)


def _rows_per_s(benchmark):
    benchmark.extra_info["Mrows/s"] = round(KNN_N / benchmark.stats.stats.median / 1e6, 2)


def test_knn_in_memory(benchmark, embeddings):
    x, _, q = embeddings
    run(benchmark, "fastinterp", KNN_GROUP, fi.knn, x, q, KNN_K)
    _rows_per_s(benchmark)


def test_knn_faiss(benchmark, embeddings):
    faiss = pytest.importorskip("faiss")
    x, _, q = embeddings
    faiss.omp_set_num_threads(2)
    index = faiss.IndexFlatL2(KNN_D)
    index.add(x)
    run(benchmark, "faiss", KNN_GROUP, index.search, q, KNN_K)
    _rows_per_s(benchmark)


def test_knn_dask_cluster(benchmark, embeddings, cluster_client):
    x, path, q = embeddings
    ref = fi.knn(x, q, KNN_K)
    dd, ii = fd.knn(da.from_zarr(path), da.from_array(q, chunks=(KNN_Q, KNN_D)), KNN_K)
    got = run(benchmark, "dask-cluster", KNN_GROUP,
              lambda: cluster_client.compute([dd, ii], sync=True))
    _rows_per_s(benchmark)
    assert np.array_equal(got[1], ref[1]) and np.array_equal(got[0], ref[0])


def test_knn_stream_zarr(benchmark, embeddings):
    x, path, q = embeddings
    z = zarr.open_array(path, mode="r")
    got = run(benchmark, "stream", KNN_GROUP, fi.knn, z, q, KNN_K)
    _rows_per_s(benchmark)
    assert np.array_equal(got[1], fi.knn(x, q, KNN_K)[1])


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).random(IMG, dtype=np.float32)


RESIZE = dict(scale_factor=0.5, mode="bilinear", antialias=True)


def test_resize_in_memory(benchmark, image):
    run(benchmark, "fastinterp", RESIZE_GROUP, fi.resize, image, **RESIZE)


def test_resize_dask_threads(benchmark, image):
    lazy = fd.resize(da.from_array(image, chunks=(1, 3, 1024, 1024)), **RESIZE)
    got = run(benchmark, "dask-threads", RESIZE_GROUP,
              lambda: lazy.compute(scheduler="threads", num_workers=2))
    assert np.array_equal(got, fi.resize(image, **RESIZE))


def test_resize_dask_cluster(benchmark, image, cluster_client):
    x = cluster_client.persist(da.from_array(image, chunks=(1, 3, 1024, 1024)))
    distributed.wait(x)
    lazy = fd.resize(x, **RESIZE)
    got = run(benchmark, "dask-cluster", RESIZE_GROUP,
              lambda: cluster_client.compute(lazy, sync=True))
    assert np.array_equal(got, fi.resize(image, **RESIZE))
