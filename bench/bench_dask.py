"""Benchmarks: fastinterp.dask against the in-memory ops (2 threads in all).

Run with ``python -m pytest bench/bench_dask.py --benchmark-min-rounds=5``.
The cluster is a LocalCluster of 2 worker processes x 1 thread; its workers
run fastinterp, OpenMP and BLAS on one thread each (distributed starts them
with ``OMP_NUM_THREADS=1``, which fastinterp reads at import), so the two
workers use the machine's two cores as ``fi.set_num_threads(2)`` does in
memory. Compare medians: on a shared machine single rounds vary widely.

kNN, a synthetic embedding set of ``KNN_N`` x 128 float32 rows (the same
rows in memory, in a zarr store and in a ``.npy`` file), 1,000 queries,
k = 10:

- ``fastinterp``: ``fi.knn`` on the array in memory (the reference time);
- ``faiss``: ``IndexFlatL2.search`` in memory (index built outside the timing);
- ``dask-cluster-persisted``: ``fastinterp.dask.knn`` with the database
  already in the workers' memory (``client.persist``, half of the rows on
  each worker), as the in-memory call has it in the process: the
  like-for-like comparison;
- ``dask-cluster-zarr``: the same over ``da.from_zarr``: each worker reads
  its blocks from the store inside the search tasks, every round (zarr's
  reads cost about 15% of the search's CPU time on top);
- ``stream-zarr`` / ``stream-memmap``: ``fi.knn`` over the zarr array or
  the memory-mapped file in-process (out-of-core, bounded memory).

Aims: out-of-core rows/s at least 70% of the in-memory knn's; the Dask
version at most 1.3x the in-memory time.

Resize: a (1, 3, 4096, 4096) float32 image, bilinear with antialias to
half size, 1024 x 1024 spatial chunks: ``fi.resize`` in memory vs
``fastinterp.dask.resize`` on the threaded scheduler (2 threads, from and
to NumPy arrays), and on the cluster with the image persisted on the
workers and the result persisted there too (``dask-cluster-persisted``:
data that lives on the cluster, as a chunked image does) or gathered into
the client (``dask-cluster-gather``: 50 MB cross a process boundary).
The in-memory op takes a few tens of ms here; every chunk task copies its
window (its block and the halo strips cut from its neighbours) before the
kernel runs, dask joins the chunks into the result (one more copy of the
output), and a cluster round trip costs tens of ms, so the cluster's ratio
stays well above 1.3x at this size; the threaded scheduler shows the cost of
chunking alone. The windows and chunk results come from fastinterp's
result-memory cache, so neither faults in fresh pages (in workers too, where
distributed's ``MALLOC_TRIM_THRESHOLD_`` would otherwise map every large
array afresh).
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
from dask.graph_manipulation import clone  # noqa: E402
from fastinterp.demos.dask import create_zarr  # noqa: E402

KNN_N, KNN_D, KNN_Q, KNN_K, KNN_CHUNK = 400_000, 128, 1_000, 10, 50_000
KNN_GROUP = f"knn: {KNN_N} x {KNN_D} float32, {KNN_Q} queries, k={KNN_K}"
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


def _check_knn(got, x, q):
    ref = fi.knn(x, q, KNN_K)
    assert np.array_equal(got[1], ref[1]) and np.array_equal(got[0], ref[0])


def test_knn_dask_cluster_persisted(benchmark, embeddings, cluster_client):
    x, path, q = embeddings
    # each worker loads half of the rows from the store, as the in-memory call gives each
    # thread half: a search task runs where its block lives, and left to itself the
    # scheduler placed 6 and 2 of the 8 blocks (then 5 and 3 after a rebalance). A name
    # of its own keeps these keys apart from the zarr case's.
    src = da.from_zarr(path, name="knn-db-persisted")
    workers = sorted(cluster_client.scheduler_info()["workers"])
    cut = KNN_N // KNN_CHUNK // 2 * KNN_CHUNK
    halves = [cluster_client.persist(part, workers=[w])
              for part, w in zip((src[:cut], src[cut:]), workers)]
    distributed.wait(halves)
    db = da.concatenate(halves)
    dd, ii = fd.knn(db, da.from_array(q, chunks=(KNN_Q, KNN_D)), KNN_K)
    got = run(benchmark, "dask-cluster-persisted", KNN_GROUP,
              lambda: cluster_client.compute([dd, ii], sync=True))
    _rows_per_s(benchmark)
    _check_knn(got, x, q)


def test_knn_dask_cluster_zarr(benchmark, embeddings, cluster_client):
    x, path, q = embeddings
    dd, ii = fd.knn(da.from_zarr(path), da.from_array(q, chunks=(KNN_Q, KNN_D)), KNN_K)
    got = run(benchmark, "dask-cluster-zarr", KNN_GROUP,
              lambda: cluster_client.compute([dd, ii], sync=True))
    _rows_per_s(benchmark)
    _check_knn(got, x, q)


def test_knn_stream_zarr(benchmark, embeddings):
    x, path, q = embeddings
    z = zarr.open_array(path, mode="r")
    got = run(benchmark, "stream-zarr", KNN_GROUP, fi.knn, z, q, KNN_K)
    _rows_per_s(benchmark)
    _check_knn(got, x, q)


def test_knn_stream_memmap(benchmark, embeddings, tmp_path):
    x, _, q = embeddings
    np.save(tmp_path / "emb.npy", x)
    mm = np.load(tmp_path / "emb.npy", mmap_mode="r")
    got = run(benchmark, "stream-memmap", KNN_GROUP, fi.knn, mm, q, KNN_K)
    _rows_per_s(benchmark)
    _check_knn(got, x, q)


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


@pytest.fixture(scope="module")
def image_on_cluster(image, cluster_client):
    """The image persisted on the workers, its blocks spread over both."""
    x = cluster_client.persist(da.from_array(image, chunks=(1, 3, 1024, 1024)))
    distributed.wait(x)
    cluster_client.rebalance(x)
    return x


def test_resize_dask_cluster_persisted(benchmark, image, image_on_cluster, cluster_client):
    x = image_on_cluster
    lazy = fd.resize(x, **RESIZE)

    def persist():
        # new keys every round (the graph cloned, the persisted input kept): a key still
        # held from the previous round would not be computed again
        out = cluster_client.persist(clone(lazy, omit=x))
        distributed.wait(out)
        return out
    run(benchmark, "dask-cluster-persisted", RESIZE_GROUP, persist)
    assert np.array_equal(persist().compute(), fi.resize(image, **RESIZE))


def test_resize_dask_cluster_gather(benchmark, image, image_on_cluster, cluster_client):
    lazy = fd.resize(image_on_cluster, **RESIZE)
    got = run(benchmark, "dask-cluster-gather", RESIZE_GROUP,
              lambda: cluster_client.compute(lazy, sync=True))
    assert np.array_equal(got, fi.resize(image, **RESIZE))
