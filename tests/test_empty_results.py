"""An op whose result is empty returns at once: it neither copies nor reads its inputs.

A broadcast input (``np.broadcast_to``: a zero stride, no memory behind it) may stand
for gigabytes; a strided input would be copied to contiguous memory before a kernel
reads it. With nothing to compute that copy is pure cost (seconds and gigabytes, or a
MemoryError), so every op checks for an empty result first. A gradient nothing flows
into is zero, of its input's shape.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastinterp as fi

GIB = 1 << 30
COPY_BUDGET = 16 << 20     # bytes an empty-result call may allocate beyond its results


@pytest.fixture(autouse=True)
def plain_allocations():
    """Results allocated by NumPy itself (seen by tracemalloc), not the result cache."""
    old = fi.set_output_cache(0)
    yield
    fi.set_output_cache(old)


def huge(shape, dtype=np.float32):
    """A read-only broadcast array of ``shape`` (about 1 GiB as a copy), no memory used."""
    return np.broadcast_to(np.array(1.5, dtype), shape)


def traced_peak(call):
    """``(result, peak bytes allocated during call())``."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def nbytes(result):
    parts = result if isinstance(result, tuple) else (result,)
    return sum(a.nbytes for a in parts if a is not None)


D = 64
ROWS = GIB // (4 * D)
IMAGE = (1, 4, 8192, 8192)
EYE_AFFINE = np.eye(2, 3, dtype=np.float32)

# (name, call, expected shapes of the results)
FORWARD_CASES = [
    ("knn, no query", lambda: fi.knn(huge((ROWS, D)), np.zeros((0, D), np.float32), 3),
     [(0, 3), (0, 3)]),
    ("knn, batch of databases, no query",
     lambda: fi.knn(huge((4, ROWS // 4, D)), np.zeros((4, 0, D), np.float32), 2),
     [(4, 0, 2), (4, 0, 2)]),
    ("pairwise_sqdist, no row in x",
     lambda: fi.pairwise_sqdist(np.zeros((0, D), np.float32), huge((ROWS, D))),
     [(0, ROWS)]),
    ("pairwise_l2, no row in y",
     lambda: fi.pairwise_l2(huge((ROWS, D)), np.zeros((0, D), np.float32)), [(ROWS, 0)]),
    ("pairwise_sqdist, empty batch",
     lambda: fi.pairwise_sqdist(huge((1, 4096, D)), huge((0, 4096, D))), [(0, 4096, 4096)]),
    ("lerp, empty partner",
     lambda: fi.lerp(np.zeros((0, GIB // 4), np.float32), huge((1, GIB // 4)), 0.5),
     [(0, GIB // 4)]),
    ("lerp, broadcast weight",
     lambda: fi.lerp(np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32),
                     huge((1, GIB // 4))), [(0, GIB // 4)]),
    ("slerp path, no row",
     lambda: fi.slerp(np.zeros((0, D), np.float32), np.zeros((0, D), np.float32),
                      huge((GIB // 4,)), path=True), [(0, GIB // 4, D)]),
    ("grid_sample, no grid point",
     lambda: fi.grid_sample(huge(IMAGE), np.zeros((1, 0, 5, 2), np.float32)), [(1, 4, 0, 5)]),
    ("grid_sample, no channel",
     lambda: fi.grid_sample(huge((1, 0, 4, 4)), huge((1, 8192, 8192, 2))),
     [(1, 0, 8192, 8192)]),
    ("grid_sample uint8, no grid point",
     lambda: fi.grid_sample(huge(IMAGE, np.uint8), np.zeros((1, 0, 5, 2), np.float32)),
     [(1, 4, 0, 5)]),
    ("grid_sample volume, no grid point",
     lambda: fi.grid_sample(huge((1, 4, 512, 512, 256)), np.zeros((1, 0, 2, 2, 3), np.float32)),
     [(1, 4, 0, 2, 2)]),
    ("affine_grid, no row",
     lambda: fi.affine_grid(huge((GIB // 24, 2, 3)), (GIB // 24, 3, 0, 8)),
     [(GIB // 24, 0, 8, 2)]),
    ("affine_grid volume, no row",
     lambda: fi.affine_grid(huge((GIB // 48, 3, 4)), (GIB // 48, 3, 2, 0, 8)),
     [(GIB // 48, 2, 0, 8, 3)]),
    ("warp_affine, empty dsize", lambda: fi.warp_affine(huge(IMAGE), EYE_AFFINE, (0, 5)),
     [(1, 4, 0, 5)]),
    ("warp_perspective, empty dsize",
     lambda: fi.warp_perspective(huge(IMAGE), np.eye(3, dtype=np.float32), (5, 0)),
     [(1, 4, 5, 0)]),
    ("rotate, no channel", lambda: fi.rotate(huge((1, 0, 8192, 8192)), 30.0),
     [(1, 0, 8192, 8192)]),
]


@pytest.mark.parametrize("name, call, shapes", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_an_empty_result_copies_no_input(name, call, shapes):
    result, peak = traced_peak(call)
    results = result if isinstance(result, tuple) else (result,)
    assert [r.shape for r in results] == shapes
    assert peak <= COPY_BUDGET, f"{name}: {peak / 2**20:.0f} MiB allocated for an empty result"


# (name, call, expected results: arrays, None where not asked for)
BACKWARD_CASES = [
    ("pairwise_sqdist_backward",
     lambda: fi.pairwise_sqdist_backward(np.zeros((0, 4096), np.float32),
                                         np.zeros((0, D), np.float32), huge((4096, D))),
     (np.zeros((0, D), np.float32), np.zeros((4096, D), np.float32))),
    ("pairwise_l2_backward, empty batch",
     lambda: fi.pairwise_l2_backward(np.zeros((0, 8, 4096), np.float32), huge((0, 8, D)),
                                     huge((1, 4096, D))),
     (np.zeros((0, 8, D), np.float32), np.zeros((1, 4096, D), np.float32))),
    ("grid_sample_backward, grid gradient only",
     lambda: fi.grid_sample_backward(np.zeros((1, 4, 0, 5), np.float32), huge(IMAGE),
                                     np.zeros((1, 0, 5, 2), np.float32), needs_input_grad=False),
     (None, np.zeros((1, 0, 5, 2), np.float32))),
    ("grid_sample_backward, no channel",
     lambda: fi.grid_sample_backward(np.zeros((1, 0, 8, 8), np.float32), huge((1, 0, 4, 4)),
                                     huge((1, 8, 8, 2))),
     (np.zeros((1, 0, 4, 4), np.float32), np.zeros((1, 8, 8, 2), np.float32))),
    ("warp_affine_backward, matrix gradient only",
     lambda: fi.warp_affine_backward(np.zeros((1, 4, 0, 5), np.float32), huge(IMAGE),
                                     EYE_AFFINE, (0, 5), needs_input_grad=False),
     (None, np.zeros((2, 3), np.float32))),
    ("warp_perspective_backward, no channel, one matrix per image",
     lambda: fi.warp_perspective_backward(np.zeros((2, 0, 8192, 8192), np.float32),
                                          huge((2, 0, 16, 16)),
                                          np.stack([np.eye(3, dtype=np.float32)] * 2),
                                          (8192, 8192)),
     (np.zeros((2, 0, 16, 16), np.float32), np.zeros((2, 3, 3), np.float32))),
]


@pytest.mark.parametrize("name, call, expected", BACKWARD_CASES,
                         ids=[c[0] for c in BACKWARD_CASES])
def test_a_gradient_of_an_empty_result_is_zero_and_copies_no_input(name, call, expected):
    result, peak = traced_peak(call)
    assert len(result) == len(expected)
    for got, want in zip(result, expected):
        if want is None:
            assert got is None
        else:
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(got, want)
    assert peak <= nbytes(result) + COPY_BUDGET, f"{name}: {peak / 2**20:.0f} MiB allocated"


def test_an_out_of_core_knn_without_queries_reads_no_block(tmp_path, monkeypatch):
    from fastinterp import _stream
    db = np.lib.format.open_memmap(tmp_path / "db.npy", mode="w+", dtype=np.float32,
                                   shape=(4096, 8))
    db[:] = np.arange(8, dtype=np.float32)
    db.flush()
    reads = []
    real_read = _stream._Reader.read
    monkeypatch.setattr(_stream._Reader, "read",
                        lambda self, *a: reads.append(a) or real_read(self, *a))
    x = np.load(tmp_path / "db.npy", mmap_mode="r")
    for kwargs in ({}, {"progress": True}):
        d, i = fi.knn(x, np.zeros((2, 0, 8), np.float32), 3, **kwargs)
        assert d.shape == i.shape == (2, 0, 3) and d.dtype == np.float32 and i.dtype == np.int64
        assert fi.knn(x, np.zeros((0, 8), np.float32), 3, return_distances=False).shape == (0, 3)
    assert reads == []
    with pytest.raises(ValueError, match="k must satisfy"):     # still checked
        fi.knn(x, np.zeros((0, 8), np.float32), 5000)


@pytest.mark.parametrize("order", ["<", ">"])
def test_an_out_of_core_knn_without_queries_returns_native_distances(tmp_path, order):
    """As with queries: the distances are the kernels' (native byte order), so that they
    equal np.float32 and go back through DLPack to a torch caller."""
    db = np.lib.format.open_memmap(tmp_path / "db.npy", mode="w+", dtype=order + "f4",
                                   shape=(20, 4))
    db[:] = 1
    db.flush()
    x = np.load(tmp_path / "db.npy", mmap_mode="r")
    for queries in (np.zeros((0, 4), np.float32), np.zeros((2, 4), np.float32)):
        d, i = fi.knn(x, queries, 3)
        assert d.dtype == np.float32 and d.dtype.isnative and i.dtype == np.int64
    torch = pytest.importorskip("torch")
    d, i = fi.knn(x, torch.zeros(0, 4), 3)
    assert isinstance(d, torch.Tensor) and d.dtype == torch.float32 and d.shape == (0, 3)


def test_empty_results_still_check_their_arguments():
    with pytest.raises(ValueError, match="must have shape"):
        fi.pairwise_sqdist(np.zeros((0, 3), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        fi.lerp(np.zeros((0, 3), np.float32), np.zeros((1, 3)), 0.5)
    with pytest.raises(ValueError, match="partially overlaps"):
        buf = np.zeros(8, np.float32)
        fi.lerp(buf[:4], buf[1:5], 0.5, out=buf[2:6])
    with pytest.raises(ValueError, match="grad_output"):
        fi.grid_sample_backward(np.zeros((1, 4, 1, 5), np.float32), np.zeros((1, 4, 3, 3),
                                np.float32), np.zeros((1, 0, 5, 2), np.float32))
    with pytest.raises(ValueError, match="finite"):
        fi.warp_affine(np.zeros((1, 1, 4, 4), np.float32),
                       np.array([[np.nan, 0, 0], [0, 1, 0]]), (0, 4))
    for n in (0, 1):          # an empty batch's shared matrix is checked as a batch of one's
        img = np.zeros((n, 3, 5, 5), np.float32)
        with pytest.raises(ValueError, match="M must be invertible"):
            fi.warp_affine(img, np.zeros((2, 3)), (4, 4))
        with pytest.raises(ValueError, match="M must be invertible"):
            fi.warp_perspective(img, np.zeros((3, 3)), (4, 4))
        with pytest.raises(ValueError, match="M must be invertible"):
            fi.warp_affine_backward(np.zeros((n, 3, 4, 4), np.float32), img, np.zeros((2, 3)),
                                    (4, 4))


@pytest.mark.cudasim
def test_device_gradients_of_an_empty_result_are_zero(cuda):
    x = cuda.to_device(np.full((1, 2, 3, 3), 7.0, np.float32))
    g = cuda.to_device(np.zeros((1, 0, 4, 2), np.float32))
    go = cuda.to_device(np.zeros((1, 2, 0, 4), np.float32))
    gi, gg = fi.grid_sample_backward(go, x, g)
    assert np.array_equal(gi.copy_to_host(), np.zeros((1, 2, 3, 3), np.float32))
    assert gg.shape == (1, 0, 4, 2)
    y = cuda.to_device(np.full((5, 3), 2.0))
    gx, gy = fi.pairwise_sqdist_backward(cuda.to_device(np.zeros((0, 5))),
                                         cuda.to_device(np.zeros((0, 3))), y)
    assert gx.shape == (0, 3)
    assert np.array_equal(gy.copy_to_host(), np.zeros((5, 3)))
