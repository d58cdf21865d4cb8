"""Tests for fastinterp.distance: pairwise_sqdist, pairwise_l2, their backward, knn."""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import threadpoolctl
from hypothesis import given, settings
from hypothesis import strategies as st

import fastinterp as fi
from fastinterp import distance as fdist
from conftest import TOL_ORACLE, assert_close

DTYPES = [np.float32, np.float64]
# Elementwise relative error allowed against float64 direct differences.
REL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


@pytest.fixture(autouse=True)
def threads_even_for_small_inputs(monkeypatch):
    """Test-sized inputs would run on one thread; make them use every thread,
    so the multi-thread paths (shared tiles, per-thread kNN heaps) are tested; and keep
    test-sized kNN databases (above 16 rows) on the GEMM and heap path, which larger
    inputs take (tests/test_distance_batched.py covers the small-cloud exact scan)."""
    monkeypatch.setattr(fdist, "GEMM_WORK_PER_THREAD", 1 << 10)
    monkeypatch.setattr(fdist, "KNN_EXACT_MAX_N", 16)


def direct_sqdist(x, y):
    """The oracle: float64 direct differences."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def assert_rel(actual, expected, dtype):
    """|actual - expected| <= REL * expected elementwise (so exact zeros stay zeros)."""
    actual = np.asarray(actual, np.float64)
    bound = REL[np.dtype(dtype)] * expected
    err = np.abs(actual - expected)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert (err <= bound).all(), (f"relative error {err[worst] / max(expected[worst], 1e-300):.3g} "
                                  f"at {worst}: got {actual[worst]!r}, expected {expected[worst]!r}")


def clustered(rng, n, d, dtype, centre=0.0):
    """Rows in 12 tight clusters of mixed spreads (many near-identical pairs), plus duplicates."""
    centres = rng.standard_normal((12, d)) * 3 + centre
    spread = rng.choice([1e-3, 1e-2, 0.1, 1.0], n)[:, None]
    rows = centres[rng.integers(0, 12, n)] + rng.standard_normal((n, d)) * spread
    rows[n // 2: n // 2 + 3] = rows[:3]
    return rows.astype(dtype)


def near_1000(rng, n, d, dtype):
    return (1000 + 0.1 * rng.standard_normal((n, d))).astype(dtype)


def brute_knn(x, q, k):
    e = direct_sqdist(q, x)
    idx = np.argsort(e, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(e, idx, 1), idx


# ----------------------------------------------------------------------------
# pairwise: smoke, hand-computed cases, values
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_smoke_shapes_dtypes_and_kernel(dtype, rng):
    x = rng.standard_normal((5, 3)).astype(dtype)
    y = rng.standard_normal((4, 3)).astype(dtype)
    for fn, op in ((fi.pairwise_sqdist, "pairwise_sqdist"), (fi.pairwise_l2, "pairwise_l2")):
        r = fn(x, y)
        assert r.shape == (5, 4) and r.dtype == dtype
        assert fi.last_kernel().key == (op, "cpu", np.dtype(dtype).name)
    assert fi.pairwise_sqdist(x).shape == (5, 5)


def test_hand_computed():
    x = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    y = np.array([[3.0, 4.0], [0.0, 1.0]])
    assert_close(fi.pairwise_sqdist(x, y), [[25, 1], [13, 1], [0, 18]])
    assert_close(fi.pairwise_l2(x, y), [[5, 1], [13 ** 0.5, 1], [0, 18 ** 0.5]])
    assert fi.pairwise_sqdist(x, y)[2, 0] == 0
    assert_close(fi.pairwise_sqdist(x), [[0, 2, 25], [2, 0, 13], [25, 13, 0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_values_vs_direct_differences(dtype, rng):
    # Sizes span several 256-row tiles (and partial ones) in both directions.
    x = clustered(rng, 300, 37, dtype)
    y = np.concatenate([clustered(rng, 290, 37, dtype), x[:10]])
    expected = direct_sqdist(x, y)
    assert_rel(fi.pairwise_sqdist(x, y), expected, dtype)
    l2 = fi.pairwise_l2(x, y)
    np.testing.assert_allclose(l2, np.sqrt(expected), rtol=REL[np.dtype(dtype)], atol=0)
    # Identical rows of x and y give exact zeros.
    assert (fi.pairwise_sqdist(x, y)[np.arange(10), 290 + np.arange(10)] == 0).all()


@pytest.mark.parametrize("d", [64, 256, 1024])
@pytest.mark.parametrize("spread", [0.3, 0.6])
def test_float32_two_clusters_of_same_sign_products(d, spread):
    """Two clusters at +-a, every coordinate a +- s: the centred rows' products all have
    one sign within a cluster, the worst case for a float32 dot product summed term
    after term (1.3e-5 relative at D = 256 when each block was summed in one run); each
    block is summed in steps, so the documented 5e-6 holds."""
    rng = np.random.default_rng(d)
    a, s = 15.225, 15.225 * spread

    def cloud(n):
        sign = np.where(np.arange(n) < n // 2, 1.0, -1.0)[:, None]
        return (sign * a + s * rng.choice([-1.0, 1.0], (n, d))).astype(np.float32)
    x, y = cloud(61), cloud(47)
    expected = direct_sqdist(x, y)
    for got, want in ((fi.pairwise_sqdist(x, y), expected),
                      (fi.pairwise_l2(x, y), np.sqrt(expected)),
                      (fi.pairwise_sqdist(x), direct_sqdist(x, x))):
        err = np.abs(got.astype(np.float64) - want)
        assert (err <= 5e-6 * want).all(), (err / np.where(want > 0, want, 1)).max()


@pytest.mark.parametrize("dtype", DTYPES)
def test_self_distances_exact_zero_and_symmetric(dtype, rng):
    x = clustered(rng, 530, 19, dtype)
    r = fi.pairwise_sqdist(x)
    assert (np.diag(r) == 0).all()
    np.testing.assert_array_equal(r, r.T)
    assert_rel(r, direct_sqdist(x, x), dtype)
    assert (np.diag(fi.pairwise_l2(x)) == 0).all()
    np.testing.assert_array_equal(fi.pairwise_sqdist(x, x), r)   # same array: same path


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_near_1000_within_1e5_relative(dtype, rng):
    # True squared distances are about 1.3 while |x|^2 is about 6.4e7: the naive
    # float32 expansion errs by tens; fastinterp must stay within 1e-5 relative.
    x = near_1000(rng, 400, 64, dtype)
    y = near_1000(rng, 333, 64, dtype)
    expected = direct_sqdist(x, y)
    got = fi.pairwise_sqdist(x, y)
    assert np.abs(got - expected).max() / expected.min() < 1e-5
    assert_rel(got, expected, dtype)
    naive = (x * x).sum(1)[:, None] + (y * y).sum(1)[None] - 2 * x @ y.T
    if dtype == np.float32:
        assert np.abs(naive - expected).max() > 1.0   # the problem being solved is real
    s = fi.pairwise_sqdist(x)
    assert (np.diag(s) == 0).all() and (s >= 0).all()


@pytest.mark.parametrize("m, n", [(1, 1), (70, 300), (530, 530), (1100, 2300), (4096, 8192)])
@pytest.mark.parametrize("symmetric, head", [(False, 0), (True, 0), (False, 1), (False, 12)])
def test_tiles_cover_the_output_once(m, n, symmetric, head):
    if symmetric:
        n = m
    head = head if head < n else 0
    cover = np.zeros((m, n), np.int32)
    for i0, j0, a, b in fdist._tile_list(m, n, symmetric, head):
        assert a > 0 and b > 0
        if head and j0:
            assert (j0 - head) % 32 == 0, "tiles after the head strip start on micro-tiles"
        cover[i0:i0 + a, j0:j0 + b] += 1
        if symmetric:
            assert j0 >= i0 and (j0 >= i0 + a or (i0 == j0 and a == b))
    if symmetric:
        cover = np.triu(cover)
        expected = np.triu(np.ones((m, n), np.int32))
    else:
        expected = np.ones((m, n), np.int32)
    np.testing.assert_array_equal(cover, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_tiles_with_split_tail(dtype, rng, monkeypatch):
    # Small tiles make this size use many tiles, quartered tail tiles included.
    for name, value in (("TILE_M", 96), ("TILE_N", 128), ("TILE_SYM", 96), ("SPLIT_MIN", 16)):
        monkeypatch.setattr(fdist, name, value)
    x = clustered(rng, 384, 9, dtype)
    y = clustered(rng, 512, 9, dtype)
    for m, n, sym in ((384, 512, False), (384, 384, True)):
        tiles = fdist._tile_list(m, n, sym)
        assert len(set(map(tuple, tiles[:, 2:]))) > 1   # the tail was split
    assert_rel(fi.pairwise_sqdist(x, y), direct_sqdist(x, y), dtype)
    s = fi.pairwise_sqdist(x)
    np.testing.assert_array_equal(s, s.T)
    assert (np.diag(s) == 0).all()
    assert_rel(s, direct_sqdist(x, x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [fi.pairwise_sqdist, fi.pairwise_l2])
def test_a_distance_has_the_same_bits_anywhere_in_the_tiles(dtype, fn, rng):
    # Full micro-tiles are finished in registers, edge tiles (and tiles holding a
    # near-duplicate pair) in the epilogue: permuting the rows moves every pair between
    # them, and must not change a bit. All rows are in the centring sample, so the
    # centre, and every centred row, is the same after the permutation.
    x = rng.standard_normal((200, 64)).astype(dtype)
    y = rng.standard_normal((250, 64)).astype(dtype)
    y[:40] = x[:40] + dtype(1e-3) * y[:40]      # near duplicates: tiles the epilogue redoes
    y[40:45] = x[50:55]                         # exact duplicates
    assert len(x) <= fdist.CENTRE_SAMPLE and len(y) <= fdist.CENTRE_SAMPLE
    px, py = rng.permutation(len(x)), rng.permutation(len(y))
    want = fn(x, y)
    np.testing.assert_array_equal(fn(x[px], y[py]), want[px][:, py])
    assert_rel(want ** (1 if fn is fi.pairwise_sqdist else 2), direct_sqdist(x, y), dtype)


@pytest.mark.parametrize("nthreads", [1, 2])
def test_scratch_kept_between_calls_changes_no_bit(nthreads, threads, rng):
    # The GEMM workspace of one call is kept for the next: calls that take it over
    # (smaller, then larger, in every op that uses it) must not see what it held.
    small_x, small_y = rng.standard_normal((70, 40)), rng.standard_normal((50, 40))
    big_x = rng.standard_normal((600, 300)).astype(np.float32)
    big_y = rng.standard_normal((700, 300)).astype(np.float32)
    calls = [lambda: fi.pairwise_sqdist(small_x, small_y),
             lambda: fi.pairwise_l2(big_x, big_y),
             lambda: fi.knn(big_y, big_x[:90], 5),
             lambda: fi.pairwise_sqdist_backward(np.ones((70, 50)), small_x, small_y),
             lambda: fdist.deterministic_matmul(big_x, big_y.T)]
    threads.set_num_threads(nthreads)
    first = [c() for c in calls]
    again = [c() for c in reversed(calls)][::-1]
    for a, b in zip(first, again):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            np.testing.assert_array_equal(u, v)
    assert_rel(first[0], direct_sqdist(small_x, small_y), np.float64)


def test_nonnegative_on_duplicates_far_from_origin(rng):
    base = (1e4 + rng.standard_normal((50, 8))).astype(np.float32)
    x = np.repeat(base, 3, axis=0)
    r = fi.pairwise_sqdist(x, x[::-1].copy())
    assert (r >= 0).all()
    assert_rel(r, direct_sqdist(x, x[::-1]), np.float32)


def test_vs_torch_cdist(torch, rng):
    x = rng.standard_normal((70, 16)).astype(np.float32)
    y = rng.standard_normal((90, 16)).astype(np.float32)
    ref = torch.cdist(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    assert_close(fi.pairwise_l2(x, y), ref, table=TOL_ORACLE)


def test_torch_tensors_in_torch_tensors_out(torch, rng):
    x = torch.from_numpy(rng.standard_normal((6, 4)))
    r = fi.pairwise_sqdist(x)
    assert isinstance(r, torch.Tensor)
    assert_close(r.numpy(), direct_sqdist(x.numpy(), x.numpy()))
    d, i = fi.knn(x, x[:2], 2)
    assert isinstance(i, torch.Tensor) and i.dtype == torch.int64
    np.testing.assert_array_equal(i[:, 0].numpy(), [0, 1])


def test_non_contiguous_inputs(rng):
    x = rng.standard_normal((20, 8))[:, ::2]
    y = rng.standard_normal((4, 15)).T
    assert_rel(fi.pairwise_sqdist(x, y), direct_sqdist(x, y), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_degenerate_sizes(dtype):
    assert fi.pairwise_sqdist(np.zeros((0, 3), dtype), np.zeros((4, 3), dtype)).shape == (0, 4)
    assert fi.pairwise_sqdist(np.zeros((2, 3), dtype), np.zeros((0, 3), dtype)).shape == (2, 0)
    np.testing.assert_array_equal(fi.pairwise_sqdist(np.ones((2, 0), dtype)), np.zeros((2, 2)))


def test_nan_row_only_poisons_its_own_distances(rng):
    x = rng.standard_normal((30, 5)).astype(np.float32) + 100
    y = rng.standard_normal((20, 5)).astype(np.float32) + 100
    x[4] = np.nan
    r = fi.pairwise_sqdist(x, y)
    assert np.isnan(r[4]).all()
    keep = np.arange(30) != 4
    assert_rel(r[keep], direct_sqdist(x[keep], y), np.float32)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 40), d=st.integers(1, 20),
       dtype=st.sampled_from(DTYPES), shift=st.sampled_from([0.0, 10.0, 1000.0]),
       symmetric=st.booleans(), seed=st.integers(0, 2**16))
def test_hypothesis_shapes(m, n, d, dtype, shift, symmetric, seed):
    rng = np.random.default_rng(seed)
    x = (shift + rng.standard_normal((m, d))).astype(dtype)
    y = None if symmetric else (shift + rng.standard_normal((n, d))).astype(dtype)
    expected = direct_sqdist(x, x if symmetric else y)
    got = fi.pairwise_sqdist(x, y)
    assert got.shape == expected.shape
    assert_rel(got, expected, dtype)


# ----------------------------------------------------------------------------
# pairwise: out=, errors, threads
# ----------------------------------------------------------------------------

def test_out_argument(rng):
    x = rng.standard_normal((7, 3))
    y = rng.standard_normal((5, 3))
    out = np.full((7, 5), -1.0)
    r = fi.pairwise_sqdist(x, y, out=out)
    assert r is out
    assert_rel(out, direct_sqdist(x, y), np.float64)
    r = fi.pairwise_l2(x, out=np.empty((7, 7)))
    assert_rel(r ** 2, direct_sqdist(x, x), np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch, m, n", [(1, 70, 96), (2, 33, 160), (1, 9, 2080)])
def test_out_at_any_alignment_gets_the_allocated_bits(dtype, batch, m, n, rng):
    """Distance tiles start on a cache line of out= wherever the array starts (a strip
    of head columns before them): the bits are those of an allocated result, on 1
    and 2 threads, batched or not."""
    x = rng.standard_normal((batch, m, 40)).astype(dtype)
    y = rng.standard_normal((batch, n, 40)).astype(dtype)
    lanes = 64 // np.dtype(dtype).itemsize
    before = fi.get_num_threads()
    try:
        for threads in (1, 2):
            fi.set_num_threads(threads)
            for op in (fi.pairwise_sqdist, fi.pairwise_l2):
                expected = op(x, y)
                for offset in range(lanes):
                    buf = np.full(expected.size + 2 * lanes, np.nan, dtype)
                    start = offset + (-buf.ctypes.data // buf.itemsize) % lanes
                    out = buf[start:start + expected.size].reshape(expected.shape)
                    assert op(x, y, out=out) is out
                    np.testing.assert_array_equal(out, expected)
                    assert np.isnan(buf[:start]).all() and np.isnan(buf[start + out.size:]).all()
    finally:
        fi.set_num_threads(before)


@pytest.mark.parametrize("bad, exc, match", [
    (np.empty((5, 7)), ValueError, r"out must have shape \(7, 5\)"),
    (np.empty((7, 5), np.float32), TypeError, "out must have dtype float64"),
    (np.empty((5, 7)).T, ValueError, "out must be C-contiguous"),
])
def test_out_errors(bad, exc, match, rng):
    x = rng.standard_normal((7, 3))
    y = rng.standard_normal((5, 3))
    before = bad.copy()
    with pytest.raises(exc, match=match):
        fi.pairwise_sqdist(x, y, out=bad)
    np.testing.assert_array_equal(bad, before)


def test_out_read_only_and_overlap(rng):
    x = rng.standard_normal((4, 4))
    ro = np.zeros((4, 4))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writable"):
        fi.pairwise_sqdist(x, out=ro)
    before = x.copy()
    with pytest.raises(ValueError, match="out must not share memory with x"):
        fi.pairwise_sqdist(x, out=x)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("fn", [fi.pairwise_sqdist, fi.pairwise_l2])
def test_errors(fn):
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., M, D\); got \(4,\)"):
        fn(np.zeros(4))
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., N, D\) = \(\.\.\., \*, 3\); got \(2, 3, 1\)"):
        fn(x, np.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., N, D\) = \(\.\.\., \*, 3\); got \(2, 4\)"):
        fn(x, np.zeros((2, 4)))
    with pytest.raises(TypeError, match="y must have the same dtype as x"):
        fn(x, np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="float16 to float32"):
        fn(x.astype(np.float16))
    with pytest.raises(TypeError, match="x must have dtype float32 or float64; got int64"):
        fn(np.zeros((2, 3), np.int64))


# ----------------------------------------------------------------------------
# determinism: threads, BLAS threads, calling threads
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def det_data():
    """Inputs for every distance op: several tiles, rows near 1000 (direct-difference
    entries), near-duplicate rows (direct L2 backward pairs), a NaN-free mix."""
    rng = np.random.default_rng(7)
    x = clustered(rng, 330, 40, np.float32, centre=1000.0)
    y = np.concatenate([clustered(rng, 290, 40, np.float32, centre=1000.0),
                        x[:20] + np.float32(1e-3)])
    q = clustered(rng, 70, 40, np.float32, centre=1000.0)
    g = rng.standard_normal((330, 310)).astype(np.float32)
    gs = rng.standard_normal((330, 330)).astype(np.float32)
    return x, y, q, g, gs


def every_op(x, y, q, g, gs):
    """Every CPU distance op and backward on one input set, as a flat list of arrays."""
    results = [fi.pairwise_sqdist(x, y), fi.pairwise_sqdist(x), fi.pairwise_l2(x, y),
               fi.pairwise_l2(x), *fi.knn(y, q, 7),
               *fi.pairwise_sqdist_backward(g, x, y), fi.pairwise_sqdist_backward(gs, x)[0],
               *fi.pairwise_l2_backward(g, x, y), fi.pairwise_l2_backward(gs, x)[0]]
    for dt in (np.float64,):
        xd, yd, qd, gd = (a.astype(dt) for a in (x, y, q, g))
        results += [fi.pairwise_sqdist(xd, yd), *fi.knn(yd, qd, 3),
                    *fi.pairwise_sqdist_backward(gd, xd, yd), *fi.pairwise_l2_backward(gd, xd, yd)]
    return results


def assert_all_equal(first, second):
    assert len(first) == len(second)
    for n, (u, v) in enumerate(zip(first, second)):
        np.testing.assert_array_equal(u, v, err_msg=f"result {n}")


def test_thread_count_bit_identical(threads, det_data):
    results = []
    for n in (1, 2, 3):
        threads.set_num_threads(n)
        results.append(every_op(*det_data))
    assert_all_equal(results[0], results[1])
    assert_all_equal(results[0], results[2])


def test_blas_thread_count_bit_identical(det_data):
    outs = []
    for n in (1, 2):
        with threadpoolctl.threadpool_limits(n, user_api="blas"):
            outs.append(every_op(*det_data))
    assert_all_equal(outs[0], outs[1])


def test_worker_thread_equals_main_thread(det_data):
    main = every_op(*det_data)
    got = {}
    worker = threading.Thread(target=lambda: got.setdefault("r", every_op(*det_data)))
    worker.start()
    worker.join()
    assert_all_equal(main, got["r"])


def test_concurrent_callers_equal_serial_without_warnings(det_data, capfd):
    serial = every_op(*det_data)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(every_op, *det_data) for _ in range(8)]
        results = [f.result() for f in futures]
    for r in results:
        assert_all_equal(serial, r)
    err = capfd.readouterr().err
    assert "OpenMP Loop" not in err and "may hang" not in err


def test_blas_settings_unchanged_while_a_call_runs(rng):
    """Other threads never see a changed BLAS thread count (no process-wide setting)."""
    x = rng.standard_normal((600, 64)).astype(np.float32)
    g = rng.standard_normal((600, 600)).astype(np.float32)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = [i["num_threads"] for i in threadpoolctl.threadpool_info()
                  if i["user_api"] == "blas"]
        seen, stop = [], threading.Event()

        def watch():
            while not stop.is_set():
                seen.append([i["num_threads"] for i in threadpoolctl.threadpool_info()
                             if i["user_api"] == "blas"])

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            for _ in range(5):
                fi.pairwise_sqdist(x)
                fi.pairwise_sqdist_backward(g, x)
                fi.knn(x, x[:50], 3)
        finally:
            stop.set()
            watcher.join()
    assert seen and all(s == before for s in seen)


# ----------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------

def numeric_grad(f, a, eps=1e-6):
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        fp = f()
        a[idx] = old - eps
        fm = f()
        a[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


@pytest.mark.parametrize("fn, bwd", [(fi.pairwise_sqdist, fi.pairwise_sqdist_backward),
                                     (fi.pairwise_l2, fi.pairwise_l2_backward)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_gradcheck(fn, bwd, symmetric, rng):
    x = rng.standard_normal((5, 3))
    y = None if symmetric else rng.standard_normal((4, 3))
    n = 5 if symmetric else 4
    w = rng.standard_normal((5, n))
    if symmetric and fn is fi.pairwise_l2:
        np.fill_diagonal(w, 0)   # |x_i - x_i| has no derivative; it is covered below
    gx, gy = bwd(w, x, y)
    np.testing.assert_allclose(gx, numeric_grad(lambda: (w * fn(x, y)).sum(), x),
                               rtol=1e-6, atol=1e-7)
    if symmetric:
        assert gy is None
    else:
        np.testing.assert_allclose(gy, numeric_grad(lambda: (w * fn(x, y)).sum(), y),
                                   rtol=1e-6, atol=1e-7)


def test_l2_backward_zero_distance_is_zero_subgradient(rng):
    x = rng.standard_normal((4, 3))
    x[2] = x[0]
    w = np.ones((4, 4))
    gx, _ = fi.pairwise_l2_backward(w, x)
    assert np.isfinite(gx).all()
    # Rows 0 and 2 coincide: the pair (0, 2) contributes nothing, so their
    # gradients equal the ones computed with that pair's weight set to zero.
    w2 = w.copy()
    w2[0, 2] = w2[2, 0] = 0
    np.testing.assert_allclose(gx, fi.pairwise_l2_backward(w2, x)[0], rtol=1e-12, atol=1e-12)
    d = fi.pairwise_l2(x)
    np.testing.assert_array_equal(fi.pairwise_l2_backward(w, x, dist=d)[0], gx)


def _l2_backward_float64(w, x, y):
    """float64 gradients of sum(w * |x_i - y_j|) (the subgradient 0 at zero distance)."""
    x64, y64, w64 = (a.astype(np.float64) for a in (x, y, w))
    diff = x64[:, None, :] - y64[None, :, :]
    big = np.abs(diff).max(-1, keepdims=True)      # scaled: no overflow of the squares
    diff = diff / np.where(big > 0, big, 1.0)
    norm = np.sqrt((diff ** 2).sum(-1, keepdims=True))
    unit = np.divide(diff, norm, out=np.zeros_like(diff), where=norm > 0)
    return (w64[:, :, None] * unit).sum(1), -(w64[:, :, None] * unit).sum(0)


@pytest.mark.parametrize("dtype, scales", [
    (np.float32, [1e-17, 1e-19, 1e-20, 1e-21, 1e-22, 1e-23, 1e-24, 1e-26]),
    (np.float64, [1e-150, 1e-155, 1e-158, 1e-160, 1e-162])])
@pytest.mark.parametrize("d", [5, 16, 300])
def test_rows_of_tiny_norms_are_exact(dtype, scales, d):
    """Rows whose squares underflow (every entry tiny): the GEMM's products lose their
    relative precision there, so such rows take direct differences (float32 relative
    error 5e-6 down to the subnormals), alone or mixed with rows of ordinary size."""
    rng = np.random.default_rng(d)
    for scale in scales:
        x = (rng.standard_normal((9, d)) * scale).astype(dtype)
        y = (rng.standard_normal((11, d)) * scale).astype(dtype)
        y[3] = x[2]
        mixed = np.concatenate([y, rng.standard_normal((4, d)).astype(dtype)])
        for a, b in ((x, y), (x, mixed), (mixed, x)):
            ref = np.sqrt(((a[:, None].astype(np.float64) - b[None]) ** 2).sum(-1))
            got = fi.pairwise_l2(a, b)
            tol = 5e-6 if dtype == np.float32 else 1e-13
            # float32 results are rounded to the (subnormal) grid at the smallest scales
            atol = 2 * float(np.finfo(dtype).smallest_subnormal)
            np.testing.assert_allclose(got, ref, rtol=tol, atol=atol, err_msg=f"{scale}")
        np.testing.assert_allclose(fi.pairwise_l2(x), fi.pairwise_l2(x, x), rtol=0, atol=0)


@pytest.mark.parametrize("d", [1, 2, 5, 64])
@pytest.mark.parametrize("scale", [1e-39, 1e-38, 1e-37])
def test_l2_backward_float32_tiny_distances_are_finite_and_exact(d, scale):
    # |x_i - y_j| below 1 / FLT_MAX: g / dist overflows float32, yet the gradient
    # (a sum of unit vectors) is of order 1
    rng = np.random.default_rng(d)
    x = (rng.standard_normal((6, d)) * scale).astype(np.float32)
    y = (rng.standard_normal((7, d)) * scale).astype(np.float32)
    w = rng.standard_normal((6, 7)).astype(np.float32)
    ref_x, ref_y = _l2_backward_float64(w, x, y)
    for gx, gy in (fi.pairwise_l2_backward(w, x, y),
                   fi.pairwise_l2_backward(w, x, y, dist=fi.pairwise_l2(x, y))):
        assert np.isfinite(gx).all() and np.isfinite(gy).all()
        np.testing.assert_allclose(gx, ref_x, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gy, ref_y, rtol=1e-5, atol=1e-5)
    gs, _ = fi.pairwise_l2_backward(np.ones((6, 6), np.float32), x)
    ref_s = sum(_l2_backward_float64(np.ones((6, 6)), x, x))
    np.testing.assert_allclose(gs, ref_s, rtol=1e-5, atol=1e-5)


def test_l2_backward_weight_over_distance_beyond_float32_is_finite():
    # g / dist = 1e38 / 0.25 overflows float32; g times a unit vector does not
    x = np.array([[0.0, 0.0], [0.0, 0.0]], np.float32)
    y = np.array([[0.15, 0.2]], np.float32)
    w = np.array([[1e38], [1.0]], np.float32)
    gx, gy = fi.pairwise_l2_backward(w, x, y)
    ref_x, ref_y = _l2_backward_float64(w, x, y)
    np.testing.assert_allclose(gx, ref_x, rtol=1e-6)
    np.testing.assert_allclose(gy, ref_y, rtol=1e-6)


def test_backward_vs_torch(torch, rng):
    x = torch.tensor(rng.standard_normal((6, 5)), requires_grad=True)
    y = torch.tensor(rng.standard_normal((7, 5)), requires_grad=True)
    w = torch.tensor(rng.standard_normal((6, 7)))
    (w * torch.cdist(x, y)).sum().backward()
    gx, gy = fi.pairwise_l2_backward(w.numpy(), x.detach().numpy(), y.detach().numpy())
    assert_close(gx, x.grad.numpy(), table=TOL_ORACLE)
    assert_close(gy, y.grad.numpy(), table=TOL_ORACLE)


def test_backward_float32_far_from_origin(rng):
    x = near_1000(rng, 40, 16, np.float32)
    y = near_1000(rng, 30, 16, np.float32)
    w = rng.standard_normal((40, 30)).astype(np.float32)
    gx, gy = fi.pairwise_sqdist_backward(w, x, y)
    x64, y64, w64 = (a.astype(np.float64) for a in (x, y, w))
    diff = x64[:, None, :] - y64[None, :, :]
    ref_x = 2 * (w64[:, :, None] * diff).sum(1)
    ref_y = -2 * (w64[:, :, None] * diff).sum(0)
    assert gx.dtype == np.float32
    assert np.abs(gx - ref_x).max() <= 1e-5 * np.abs(ref_x).max()
    assert np.abs(gy - ref_y).max() <= 1e-5 * np.abs(ref_y).max()


def test_backward_errors(rng):
    x = rng.standard_normal((4, 3))
    y = rng.standard_normal((5, 3))
    with pytest.raises(ValueError, match=r"grad_out must have shape \(\.\.\., M, N\) = \(4, 5\); got \(5, 4\)"):
        fi.pairwise_sqdist_backward(np.zeros((5, 4)), x, y)
    with pytest.raises(TypeError, match="grad_out must have the same dtype as x"):
        fi.pairwise_sqdist_backward(np.zeros((4, 5), np.float32), x, y)
    with pytest.raises(ValueError, match=r"dist must have shape \(\.\.\., M, N\) = \(4, 5\); got \(4, 4\)"):
        fi.pairwise_l2_backward(np.zeros((4, 5)), x, y, dist=np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., N, D\) = \(\.\.\., \*, 3\)"):
        fi.pairwise_sqdist_backward(np.zeros((4, 5)), x, np.zeros((5, 2)))


@pytest.mark.parametrize("call", [
    ("x", lambda v, a: fi.pairwise_sqdist(v, a)),
    ("y", lambda v, a: fi.pairwise_l2(a, v)),
    ("x", lambda v, a: fi.knn(v, a, 1)),
    ("queries", lambda v, a: fi.knn(a, v, 1)),
    ("grad_out", lambda v, a: fi.pairwise_sqdist_backward(v, a, a)),
    ("grad_out", lambda v, a: fi.pairwise_l2_backward(v, a, a)),
    ("x", lambda v, a: fi.pairwise_sqdist_backward(np.ones((2, 2)), v, a)),
    ("dist", lambda v, a: fi.pairwise_l2_backward(np.ones((2, 2)), a, a, dist=v)),
], ids=lambda c: c[0] if isinstance(c, tuple) else None)
@pytest.mark.parametrize("value", [1.0, 3, np.float64(2.0), True], ids=repr)
def test_scalar_operands_raise_type_error_naming_them(call, value):
    name, fn = call
    with pytest.raises(TypeError, match=rf"{name} must be an array"):
        fn(value, np.ones((2, 3)))


def test_none_grad_out_raises_type_error():
    with pytest.raises(TypeError, match="grad_out must be an array"):
        fi.pairwise_sqdist_backward(None, np.ones((2, 3)), np.ones((2, 3)))


# ----------------------------------------------------------------------------
# knn
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 5, 17])
def test_knn_matches_brute_force(dtype, k, rng):
    x = rng.standard_normal((2100, 12)).astype(dtype)    # several 1024-row GEMM blocks
    q = rng.standard_normal((300, 12)).astype(dtype)     # several query blocks
    d, i = fi.knn(x, q, k)
    ref_d, ref_i = brute_knn(x, q, k)
    assert i.dtype == np.int64 and d.dtype == dtype and i.shape == (300, k)
    np.testing.assert_array_equal(i, ref_i)
    assert_rel(d, ref_d, dtype)
    assert fi.last_kernel().key == ("knn", "cpu", np.dtype(dtype).name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_knn_deliberate_ties(dtype, rng):
    # Integer grid points, each repeated: many exactly equal distances. The
    # answer must be the stable argsort's (smaller index first).
    grid = rng.integers(-3, 4, size=(400, 3)).astype(dtype)
    x = np.concatenate([grid, grid[::-1], grid[:50]])
    q = np.concatenate([rng.integers(-3, 4, size=(60, 3)).astype(dtype),
                        rng.integers(-6, 7, size=(20, 3)).astype(dtype) / 2])
    for k in (1, 4, 30):
        d, i = fi.knn(x, q, k)
        ref_d, ref_i = brute_knn(x, q, k)
        np.testing.assert_array_equal(i, ref_i)
        np.testing.assert_array_equal(d, ref_d.astype(dtype))


def test_knn_fallback_scan_is_exercised_and_exact():
    # All rows equal: no candidate set smaller than N can be proven, so every
    # query takes the exact rescan; the answer is then rows 0..k-1.
    x = np.ones((40, 3), np.float32)
    q = np.zeros((3, 3), np.float32)
    dist = np.empty((1, 3, 5), np.float32)
    idx = np.empty((1, 3, 5), np.int64)
    one = fdist._batch("knn", ("x", "queries"), x, q)
    assert fdist._knn_cpu(dist, idx, x[None], q[None], one, 5) == 3
    np.testing.assert_array_equal(idx[0], np.tile(np.arange(5), (3, 1)))
    np.testing.assert_array_equal(dist, 3.0)
    # On random data the candidate bound holds and no query is rescanned.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 8)).astype(np.float32)
    q = rng.standard_normal((50, 8)).astype(np.float32)
    dist, idx = np.empty((1, 50, 5), np.float32), np.empty((1, 50, 5), np.int64)
    assert fdist._knn_cpu(dist, idx, x[None], q[None], one, 5) == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_knn_near_1000(dtype, rng):
    x = near_1000(rng, 1500, 32, dtype)
    q = near_1000(rng, 40, 32, dtype)
    d, i = fi.knn(x, q, 10)
    ref_d, ref_i = brute_knn(x, q, 10)
    np.testing.assert_array_equal(i, ref_i)
    assert_rel(d, ref_d, dtype)


def test_knn_k_equals_n_and_options(rng):
    x = rng.standard_normal((9, 2))
    q = rng.standard_normal((4, 2))
    d, i = fi.knn(x, q, 9)
    ref_d, ref_i = brute_knn(x, q, 9)
    np.testing.assert_array_equal(i, ref_i)
    assert (np.diff(d, axis=1) >= 0).all()
    only = fi.knn(x, q, np.int64(3), return_distances=False)
    np.testing.assert_array_equal(only, ref_i[:, :3])
    assert fi.knn(x, np.zeros((0, 2)), 2)[1].shape == (0, 2)
    d0, i0 = fi.knn(np.zeros((5, 0)), np.zeros((2, 0)), 3)
    np.testing.assert_array_equal(i0, [[0, 1, 2]] * 2)
    np.testing.assert_array_equal(d0, 0)


def test_knn_nan_rows_sort_last(rng):
    x = rng.standard_normal((30, 4))
    x[[3, 7]] = np.nan
    d, i = fi.knn(x, rng.standard_normal((5, 4)), 30)
    assert set(i[:, -2:].ravel()) == {3, 7}
    assert np.isfinite(d[:, :-2]).all()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 50), nq=st.integers(1, 10), d=st.integers(1, 6),
       dtype=st.sampled_from(DTYPES), data=st.data())
def test_knn_hypothesis(n, nq, d, dtype, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    k = data.draw(st.integers(1, n))
    scale = data.draw(st.sampled_from([1.0, 0.5]))   # 0.5: half-integers, many ties
    x = (np.round(rng.standard_normal((n, d)) * 2) * scale).astype(dtype)
    q = (np.round(rng.standard_normal((nq, d)) * 2) * scale).astype(dtype)
    dist, idx = fi.knn(x, q, k)
    ref_d, ref_i = brute_knn(x, q, k)
    np.testing.assert_array_equal(idx, ref_i)
    assert_rel(dist, ref_d, dtype)


@pytest.mark.parametrize("name", ["return_distances", "progress"])
@pytest.mark.parametrize("bad", ["no", "", [1], [], 1.0, None, np.array([True]), object()])
def test_knn_flags_must_be_bools(name, bad):
    x = np.zeros((5, 3))
    with pytest.raises(TypeError, match=rf"^knn: {name} must be a bool \(or an int\); got "):
        fi.knn(x, x, 2, **{name: bad})


def test_knn_flags_take_numpy_bools():
    x = np.arange(15.0).reshape(5, 3)
    i = fi.knn(x, x, 2, return_distances=np.bool_(False), progress=np.False_)
    d, j = fi.knn(x, x, 2, return_distances=np.True_)
    np.testing.assert_array_equal(i, j)


def test_knn_k_as_a_0d_integer_array_is_an_int(rng, tmp_path):
    # as every size is read (a NumPy int passed; a 0-d array was refused), in memory and
    # over a database read in blocks
    x = rng.standard_normal((30, 4))
    q = x[:5]
    want = fi.knn(x, q, 3)
    np.save(tmp_path / "x.npy", x)
    for db in (x, np.load(tmp_path / "x.npy", mmap_mode="r")):
        for k in (np.array(3), np.array(3, np.int32), np.int16(3)):
            got = fi.knn(db, q, k)
            np.testing.assert_array_equal(got[1], want[1])
    for k in (np.array(True), np.array(3.0), np.array([3])):
        with pytest.raises(TypeError, match="knn: k must be an int"):
            fi.knn(x, q, k)


def test_knn_batched_memmap_database_is_searched_in_memory(rng, tmp_path):
    x = rng.standard_normal((2, 8, 3))
    q = rng.standard_normal((2, 4, 3))
    np.save(tmp_path / "b.npy", x)
    got = fi.knn(np.load(tmp_path / "b.npy", mmap_mode="r"), q, 2)
    want = fi.knn(x, q, 2)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_knn_errors():
    x = np.zeros((5, 3))
    q = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"k must satisfy 1 <= k <= N = 5; got 6"):
        fi.knn(x, q, 6)
    with pytest.raises(ValueError, match=r"k must satisfy 1 <= k <= N = 5; got 0"):
        fi.knn(x, q, 0)
    with pytest.raises(TypeError, match="k must be an int; got float"):
        fi.knn(x, q, 2.0)
    with pytest.raises(TypeError, match="k must be an int; got bool"):
        fi.knn(x, q, True)
    with pytest.raises(ValueError, match=r"queries must have shape \(\.\.\., Q, D\) = \(\.\.\., \*, 3\); got \(2, 2\)"):
        fi.knn(x, np.zeros((2, 2)), 1)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., N, D\); got \(5,\)"):
        fi.knn(np.zeros(5), q, 1)
    with pytest.raises(ValueError, match=r"queries must have shape \(\.\.\., Q, D\); got \(3,\)"):
        fi.knn(x, np.zeros(3), 1)
    with pytest.raises(TypeError, match="queries must have the same dtype as x"):
        fi.knn(x, q.astype(np.float32), 1)
    with pytest.raises(TypeError, match="queries must be an array"):
        fi.knn(x, None, 1)


# ----------------------------------------------------------------------------
# huge rows, near duplicates, non-finite queries
# ----------------------------------------------------------------------------

HUGE = {np.dtype(np.float32): 1e20, np.dtype(np.float64): 1e200}


def ref_pairs(x, y):
    """float64 differences (M, N, D) and their exact-as-possible norms (math.hypot)."""
    diff = np.asarray(x, np.float64)[:, None, :] - np.asarray(y, np.float64)[None, :, :]
    norms = np.array([[math.hypot(*v) for v in row] for row in diff]).reshape(diff.shape[:2])
    return diff, norms


def ref_backward(w, x, y, l2):
    """float64 direct-difference gradients of sum(w * d(x, y)), d = |.|^2 or |.|, and
    their scales."""
    diff, norms = ref_pairs(x, y)
    with np.errstate(all="ignore"):
        if l2:
            unit = np.where(norms[..., None] > 0, diff / np.where(norms > 0, norms, 1)[..., None], 0)
            terms = np.asarray(w, np.float64)[..., None] * unit
        else:
            terms = 2 * np.asarray(w, np.float64)[..., None] * diff
    # The natural scale of each gradient row: the sum of its terms' vector norms.
    big = np.abs(terms).max(-1)
    with np.errstate(invalid="ignore"):
        size = big * np.sqrt(((terms / np.where(big > 0, big, 1)[..., None]) ** 2).sum(-1))
    return (terms.sum(1), -terms.sum(0), size.sum(1)[:, None], size.sum(0)[:, None])


def with_huge_row(rng, dtype, m, n, d, where):
    x = (rng.standard_normal((m, d)) + 5).astype(dtype)
    y = (rng.standard_normal((n, d)) + 5).astype(dtype)
    target, row = where
    (x if target == "x" else y)[row] = dtype(HUGE[np.dtype(dtype)]) * rng.choice([-1, 1], d)
    return x, y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", [("x", 0), ("x", 17), ("y", 5), ("y", -1)])
@pytest.mark.parametrize("m, n", [(40, 30), (2100, 7)])   # 2100: beyond the centring sample
def test_one_huge_row_forward(dtype, where, m, n, rng):
    x, y = with_huge_row(rng, dtype, m, n, 6, where)
    diff, norms = ref_pairs(x, y)
    with np.errstate(over="ignore"):
        expected = (diff ** 2).sum(-1).astype(dtype)       # inf where it overflows dtype
        expected_l2 = norms.astype(dtype)
    got, got_l2 = fi.pairwise_sqdist(x, y), fi.pairwise_l2(x, y)
    assert not np.isnan(got).any() and not np.isnan(got_l2).any()
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    with np.errstate(over="ignore"):
        assert_rel(got[finite], (diff ** 2).sum(-1)[finite], dtype)
    np.testing.assert_allclose(got_l2, expected_l2, rtol=REL[np.dtype(dtype)], atol=0)
    s = fi.pairwise_sqdist(x if where[0] == "x" else y)
    assert not np.isnan(s).any() and (np.diag(s) == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", [("x", 3), ("y", 0)])
@pytest.mark.parametrize("l2", [False, True])
def test_one_huge_row_backward(dtype, where, l2, rng):
    x, y = with_huge_row(rng, dtype, 25, 20, 5, where)
    w = rng.standard_normal((25, 20)).astype(dtype)
    bwd = fi.pairwise_l2_backward if l2 else fi.pairwise_sqdist_backward
    gx, gy = bwd(w, x, y)
    rx, ry, sx, sy = ref_backward(w, x, y, l2)
    for got, ref, scale in ((gx, rx, sx), (gy, ry, sy)):
        assert np.isfinite(got).all()
        # Within a few ulps of the sum of the terms' magnitudes, row by row: the
        # other rows keep their (small) gradients next to the huge one.
        bound = 64 * np.finfo(dtype).eps * scale
        assert (np.abs(got - ref) <= bound).all(), np.max(np.abs(got - ref) / bound)


def test_many_huge_rows_and_infinite_rows(rng):
    x = rng.standard_normal((50, 4))
    x[::3] *= 1e200
    x[7, 2] = np.inf
    r = fi.pairwise_sqdist(x)
    with np.errstate(all="ignore"):
        expected = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.isnan(r), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(r), np.isinf(expected))
    ok = np.isfinite(expected)
    assert_rel(r[ok], expected[ok], np.float64)


@pytest.mark.parametrize("seed", range(4))
def test_l2_backward_float32_near_duplicates(seed):
    # Rows of x with values up to 255 and y = x + 1e-3 noise: the pair terms
    # (x_i - y_j) / |x_i - y_j| cancel badly in the GEMM form.
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (2, 31)).astype(np.float32)
    y = (x + 1e-3 * rng.standard_normal(x.shape)).astype(np.float32)
    w = np.ones((2, 2), np.float32)
    gx, gy = fi.pairwise_l2_backward(w, x, y)
    rx, ry, sx, sy = ref_backward(w, x, y, True)
    eps = np.finfo(np.float32).eps
    for got, ref, scale in ((gx, rx, sx), (gy, ry, sy)):
        assert (np.abs(got - ref) <= 4 * eps * scale).all()


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 30), n=st.integers(1, 30), d=st.integers(1, 40),
       shift=st.sampled_from([0.0, 10.0, 255.0, 1000.0]),
       noise=st.sampled_from([1e-3, 1e-1, 1.0, 10.0]), seed=st.integers(0, 2**16))
def test_l2_backward_float32_within_few_ulps(m, n, d, shift, noise, seed):
    rng = np.random.default_rng(seed)
    x = (shift + rng.standard_normal((m, d))).astype(np.float32)
    y = (x[rng.integers(0, m, n)] + noise * rng.standard_normal((n, d))).astype(np.float32)
    w = rng.standard_normal((m, n)).astype(np.float32)
    gx, gy = fi.pairwise_l2_backward(w, x, y)
    rx, ry, sx, sy = ref_backward(w, x, y, True)
    eps = np.finfo(np.float32).eps
    for got, ref, scale in ((gx, rx, sx), (gy, ry, sy)):
        assert (np.abs(got - ref) <= 8 * eps * scale).all(), np.max(np.abs(got - ref) / scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_knn_non_finite_query_ties_by_index(dtype, value, rng):
    x = rng.standard_normal((300, 5)).astype(dtype)
    q = rng.standard_normal((4, 5)).astype(dtype)
    q[1] = value
    q[2, 3] = value
    d, i = fi.knn(x, q, 6)
    for r in (1, 2):
        np.testing.assert_array_equal(i[r], np.arange(6))
        assert (np.isinf(d[r]) if value != np.nan and not np.isnan(value) else np.isnan(d[r])).all()
    ref_d, ref_i = brute_knn(x, q[[0, 3]], 6)
    np.testing.assert_array_equal(i[[0, 3]], ref_i)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [6, 300])
def test_knn_inf_query_takes_inf_distances_then_nan_ones(dtype, n):
    # the documented rule: rows at distance inf in index order, then the NaN distances
    # (a NaN in the row, or an inf in the query's inf coordinate)
    x = np.zeros((n, 2), dtype)
    x[:, 0] = np.arange(n)
    x[1, 1] = np.nan
    x[3, 0] = np.inf
    d, i = fi.knn(x, np.array([[np.inf, 0.0]], dtype), 4)
    np.testing.assert_array_equal(i[0], [0, 2, 4, 5])
    assert np.isinf(d[0]).all()
    d, i = fi.knn(x, np.array([[np.inf, 0.0]], dtype), n)
    np.testing.assert_array_equal(i[0, -2:], [1, 3])
    assert np.isnan(d[0, -2:]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("special_max", [256, 1])
def test_knn_huge_and_non_finite_rows(dtype, special_max, rng, monkeypatch):
    monkeypatch.setattr(fdist, "KNN_SPECIAL_MAX", special_max)
    x = rng.standard_normal((400, 6)).astype(dtype)
    x[[3, 250]] = HUGE[np.dtype(dtype)]
    x[10, 1] = np.inf
    x[11] = np.nan
    q = np.concatenate([rng.standard_normal((30, 6)), np.full((1, 6), HUGE[np.dtype(dtype)])]
                       ).astype(dtype)
    d, i = fi.knn(x, q, 8)
    with np.errstate(all="ignore"):
        e = direct_sqdist(x, q).T
    ref_i = np.argsort(e, axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(i, ref_i)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(np.isinf(d), np.isinf(np.take_along_axis(e, ref_i, 1).astype(dtype)))



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 7, 64, 131])
def test_block_candidates_merge_key_is_the_kernels_float64_distance(dtype, d, rng):
    """Block results of a streamed or Dask kNN merge by (distance, float64 distance,
    index): the float64 distance must be the very value the kernel ordered by, so that
    a merge orders near-ties exactly as one call on the whole data does."""
    from fastinterp import _stream
    x = rng.standard_normal((700, d)).astype(dtype)
    q = rng.standard_normal((60, d)).astype(dtype)
    x[5] = np.nan
    x[6, 0] = np.inf
    q[3] = np.nan
    dist, idx, d64 = _stream.block_candidates(x, q, 12, 1000)
    assert d64.dtype == np.float64 and d64.shape == dist.shape
    np.testing.assert_array_equal(d64.astype(dtype), dist)
    if dtype == np.float64:     # the kernel's float64 sums, bit for bit
        np.testing.assert_array_equal(d64, dist)
    np.testing.assert_array_equal(idx, fi.knn(x, q, 12)[1] + 1000)


def test_listed_sqdiff_refuses_rows_outside_x(rng):
    k = fdist._cpu()
    x, q = rng.standard_normal((5, 3)), rng.standard_normal((2, 3))
    out = np.empty((2, 2))
    with pytest.raises(ValueError, match="rows"):
        k.listed_sqdiff(out, x, q, np.array([[0, 5], [1, 2]], np.int64), 1)
    with pytest.raises(ValueError, match="rows"):
        k.listed_sqdiff(out, x, q, np.array([[0, -1], [1, 2]], np.int64), 1)
    with pytest.raises(ValueError, match="shape"):
        k.listed_sqdiff(out, x, q[:1], np.zeros((2, 2), np.int64), 1)

# ----------------------------------------------------------------------------
# kernels called directly: odd arguments raise, nothing crashes
# ----------------------------------------------------------------------------

NO_NEAR, NO_COUNT = np.zeros((0, 0, 0), np.uint8), np.zeros((0, 0), np.int64)
ONE = np.zeros(1, np.int64)                       # batch map of one element
SETS = (np.array([0, 1], np.int64), ONE)          # ... and its (ptr, items)


def _knn_direct(k, dist, idx, x, q, special, kk, kc, nthreads, qblock=1):
    """knn_fwd on one batch element (x (N, D), q (Q, D))."""
    return k.knn_fwd(dist, idx, x[None], q[None], ONE, ONE, x[None], q[None],
                     np.zeros((1, x.shape[0])), np.zeros((1, q.shape[0])),
                     np.array([0, len(special)], np.int64), special, np.zeros(1, np.uint8),
                     kk, kc, qblock, qblock, 1e-16, np.zeros((1, q.shape[0]), np.intc), nthreads)


def _sqdist_direct(k, out, x, c, tiles, symmetric=False, nx=None, nthreads=1):
    m, n = out.shape[1], out.shape[2]
    return k.sqdist_fwd(out, x[None].copy(), x[None].copy(),
                        np.zeros((1, m)) if nx is None else nx, np.zeros((1, n)), x[None],
                        x[None], ONE, ONE, c[None], tiles, 0.1, 1e300, False, symmetric,
                        False, nthreads)


def test_kernels_reject_odd_arguments():
    k = fdist._cpu()
    x = np.ones((4, 3))
    out = np.full((1, 4, 4), 7.0)
    c = np.zeros(3)
    with pytest.raises(ValueError, match="tile"):
        _sqdist_direct(k, out, x, c, np.array([[0, 0, 5, 4]], np.intp))
    with pytest.raises(ValueError, match="must agree"):
        _sqdist_direct(k, out, x, c, np.array([[0, 0, 4, 4]], np.intp), nx=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="batch map"):
        k.sqdist_fwd(out, x[None].copy(), x[None].copy(), np.zeros((1, 4)), np.zeros((1, 4)),
                     x[None], x[None], ONE + 1, ONE, c[None],
                     np.array([[0, 0, 4, 4]], np.intp), 0.1, 1e300, False, False, False, 1)
    np.testing.assert_array_equal(out, 7.0)
    x3 = x[None]
    with pytest.raises(ValueError, match="must agree"):
        k.grad_rows(np.zeros((1, 4, 3)), np.zeros((1, 4, 5)), False, x3, x3, ONE, x3, x3, x3,
                    NO_NEAR, NO_COUNT, *SETS, 2.0, 1)
    with pytest.raises(ValueError, match="near must have the shape of s"):
        k.grad_rows(np.zeros((1, 4, 3)), np.zeros((1, 4, 4)), False, x3, x3, ONE, x3, x3,
                    np.zeros((1, 4, 4)), np.zeros((1, 4, 3), np.uint8),
                    np.zeros((1, 4), np.int64), *SETS, 1.0, 1)
    with pytest.raises(ValueError, match="items must lie"):
        k.grad_rows(np.zeros((1, 4, 3)), np.zeros((1, 4, 4)), False, x3, x3, ONE, x3, x3, x3,
                    NO_NEAR, NO_COUNT, SETS[0], ONE + 3, 2.0, 1)
    with pytest.raises(ValueError, match="ptr must"):
        k.grad_rows(np.zeros((1, 4, 3)), np.zeros((1, 4, 4)), False, x3, x3, ONE, x3, x3, x3,
                    NO_NEAR, NO_COUNT, np.array([0, 2], np.int64), ONE, 2.0, 1)
    dist, idx = np.zeros((1, 2, 5)), np.zeros((1, 2, 5), np.int64)
    with pytest.raises(ValueError, match="k <= kc <= N"):
        _knn_direct(k, dist, idx, x, x[:2], np.zeros(0, np.int64), 5, 5, 1)
    with pytest.raises(ValueError, match="special rows"):
        _knn_direct(k, np.zeros((1, 2, 2)), np.zeros((1, 2, 2), np.int64), x, x[:2],
                    np.array([9], np.int64), 2, 2, 1)


def test_kernels_guard_empty_and_zero_width():
    k = fdist._cpu()
    e = np.zeros((3, 0))
    out = np.full((1, 3, 3), 7.0)
    k.sqdist_fwd(out, e[None].copy(), e[None].copy(), np.zeros((1, 3)), np.zeros((1, 3)),
                 e[None], e[None], ONE, ONE, np.zeros((1, 0)), np.zeros((0, 4), np.intp),
                 0.1, 1e300, True, True, False, 2)
    np.testing.assert_array_equal(out, 0)
    e3 = e[None]
    gx = np.full((1, 3, 0), 7.0)
    k.grad_rows(gx, np.zeros((1, 3, 3)), True, e3, e3, ONE, e3, e3, e3, NO_NEAR, NO_COUNT,
                *SETS, 2.0, 2)
    g1 = np.full((1, 3, 2), 7.0)
    z = np.zeros((1, 0, 2))
    k.grad_rows(g1, np.zeros((1, 3, 0)), False, np.ones((1, 3, 2)), z, ONE, np.ones((1, 3, 2)),
                z, z, NO_NEAR, NO_COUNT, *SETS, 2.0, 2)
    np.testing.assert_array_equal(g1, 0)
    g2 = np.full((2, 3, 2), 7.0)        # an element no batch entry uses: zero gradient
    k.grad_rows(g2, np.ones((1, 3, 4)), False, np.ones((2, 3, 2)), np.ones((1, 4, 2)), ONE,
                np.ones((1, 3, 2)), np.ones((1, 4, 2)), z, NO_NEAR, NO_COUNT,
                np.array([0, 1, 1], np.int64), ONE, 2.0, 2)
    np.testing.assert_array_equal(g2[1], 0)
    dist, idx = np.zeros((1, 2, 2)), np.zeros((1, 2, 2), np.int64)
    _knn_direct(k, dist, idx, e, e[:2], np.zeros(0, np.int64), 2, 3, 2, qblock=4)
    np.testing.assert_array_equal(idx[0], [[0, 1], [0, 1]])


@pytest.mark.no_sanitizer
def test_failed_scratch_allocation_raises_memory_error_and_writes_nothing():
    k = fdist._cpu()
    x = np.ones((4, 3))
    out = np.full((1, 4, 4), 7.0)
    with pytest.raises(MemoryError):
        _sqdist_direct(k, out, x, np.zeros(3), np.array([[0, 0, 4, 4]], np.intp),
                       nthreads=2**30)
    np.testing.assert_array_equal(out, 7.0)
    dist, idx = np.full((1, 2, 2), 7.0), np.zeros((1, 2, 2), np.int64)
    with pytest.raises(MemoryError):
        _knn_direct(k, dist, idx, x, x[:2], np.zeros(0, np.int64), 2, 2, 2**30)
    np.testing.assert_array_equal(dist, 7.0)


def test_backward_goes_through_the_registry(rng):
    x = rng.standard_normal((5, 3))
    fi.pairwise_l2_backward(np.ones((5, 5)), x)
    assert fi.last_kernel().key == ("pairwise_l2_backward", "cpu", "float64")
    fi.pairwise_sqdist_backward(np.ones((5, 5)), x)
    assert fi.last_kernel().key == ("pairwise_sqdist_backward", "cpu", "float64")


# ----------------------------------------------------------------------------
# CUDA kernels (numba's simulator on CPU machines: tiny sizes)
# ----------------------------------------------------------------------------

@pytest.mark.cudasim
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_pairwise(cuda, dtype, rng):
    x = clustered(rng, 19, 21, dtype)   # > one 16-wide tile in rows and in D
    y = rng.standard_normal((5, 21)).astype(dtype)
    x[1] = x[0]
    dx, dy = cuda.to_device(x), cuda.to_device(y)
    r = fi.pairwise_sqdist(dx, dy)
    assert fi.last_kernel().key == ("pairwise_sqdist", "cuda", np.dtype(dtype).name)
    # Direct differences: float64 to rounding, float32 within the oracle tolerance.
    assert_close(r.copy_to_host(), direct_sqdist(x, y), dtype, table=TOL_ORACLE)
    s = fi.pairwise_l2(dx).copy_to_host()
    assert fi.last_kernel().key == ("pairwise_l2", "cuda", np.dtype(dtype).name)
    assert (np.diag(s) == 0).all() and s[0, 1] == 0
    assert_close(s, np.sqrt(direct_sqdist(x, x)), dtype, table=TOL_ORACLE)
    out = cuda.device_array((19, 5), dtype)
    assert fi.pairwise_sqdist(dx, dy, out=out) is out


@pytest.mark.cudasim
def test_cuda_knn(cuda, rng):
    x = np.round(rng.standard_normal((23, 3)) * 2).astype(np.float32)   # ties
    q = np.round(rng.standard_normal((6, 3)) * 2).astype(np.float32)
    d, i = fi.knn(cuda.to_device(x), cuda.to_device(q), 4)
    assert fi.last_kernel().key == ("knn", "cuda", "float32")
    ref_d, ref_i = brute_knn(x, q, 4)
    np.testing.assert_array_equal(i.copy_to_host(), ref_i)
    np.testing.assert_array_equal(d.copy_to_host(), ref_d.astype(np.float32))
    from fastinterp._cuda import distance as cuda_distance
    big = np.zeros((cuda_distance.MAX_K + 1, 3), np.float32)
    with pytest.raises(NotImplementedError, match="on CUDA k must be at most"):
        fi.knn(cuda.to_device(big), cuda.to_device(q), cuda_distance.MAX_K + 1)


def lane_order_knn(x, q, k):
    """kNN by the documented key: float64 squared differences, column c into partial sum
    c mod 8, the sums combined as ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)); a stable
    argsort (ties: the smaller index). NumPy rounds every step (no fused multiply-add)."""
    t = (q[:, None, :].astype(np.float64) - x[None, :, :].astype(np.float64)) ** 2
    lanes = np.zeros(t.shape[:2] + (8,))
    for c in range(t.shape[2]):
        lanes[..., c % 8] += t[..., c]
    keys = (((lanes[..., 0] + lanes[..., 1]) + (lanes[..., 2] + lanes[..., 3]))
            + ((lanes[..., 4] + lanes[..., 5]) + (lanes[..., 6] + lanes[..., 7])))
    order = np.argsort(keys, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(keys, order, axis=1), order


@pytest.mark.parametrize("D", [3, 8, 11, 29])
def test_knn_orders_by_the_documented_lane_key(D, rng):
    """float32 rows: each squared float64 difference is exact, so every build (fused
    multiply-adds or not) computes the documented key bit for bit; rows that are
    permutations of one another tie in exact arithmetic but not always in the key."""
    base = rng.standard_normal((4, D)).astype(np.float32)
    x = np.concatenate([base[:, rng.permutation(D)] for _ in range(8)])
    q = rng.standard_normal((3, D)).astype(np.float32)
    d, i = fi.knn(x, q, 20)
    want_d, want_i = lane_order_knn(x, q, 20)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(d, want_d.astype(np.float32))


@pytest.mark.cudasim
def test_cuda_knn_orders_ties_by_the_cpus_key(cuda, rng):
    """Rows holding the same coordinates in another order are at the same distance, but
    their float64 keys may round apart: the CUDA kernel summed the columns in order where
    the CPU sums them in 8 lanes, so the backends returned such rows in opposite orders.
    (Builds that fuse multiply-adds, the CPU's v3/v4 and real GPUs, may round a key
    differently again; the simulator rounds every step.)"""
    a, b, c = 0.5118216247002567, 0.9504636963259353, 0.14415961271963373
    x = np.array([[a, b, c, 0.0], [a, 0.0, b, c]])
    base = rng.standard_normal((3, 11))
    for x, q, k in ((x, np.zeros((1, 4)), 2),
                    (np.concatenate([base[:, rng.permutation(11)] for _ in range(6)]),
                     rng.standard_normal((2, 11)), 18)):
        d, i = fi.knn(cuda.to_device(x), cuda.to_device(q), k)
        want_d, want_i = lane_order_knn(x, q, k)
        np.testing.assert_array_equal(i.copy_to_host(), want_i)
        np.testing.assert_array_equal(d.copy_to_host(), want_d)


@pytest.mark.cudasim
@pytest.mark.parametrize("symmetric", [False, True])
def test_cuda_backward(cuda, symmetric, rng):
    x = rng.standard_normal((5, 3))
    x[1] = x[0]
    y = None if symmetric else rng.standard_normal((4, 3))
    w = rng.standard_normal((5, 5 if symmetric else 4))
    for bwd in (fi.pairwise_sqdist_backward, fi.pairwise_l2_backward):
        ref_x, ref_y = bwd(w, x, y)
        gx, gy = bwd(cuda.to_device(w), cuda.to_device(x), None if symmetric else cuda.to_device(y))
        assert_close(gx.copy_to_host(), ref_x, table=TOL_ORACLE)
        if symmetric:
            assert gy is None
        else:
            assert_close(gy.copy_to_host(), ref_y, table=TOL_ORACLE)


@pytest.mark.cudasim
def test_cuda_backward_of_infinite_and_nan_rows_is_the_cpus(cuda, rng):
    """The special-value rules of the README hold on CUDA too: an infinite row's gradient
    is inf with the sign of the summed weights (product form; pair by pair gave NaN for
    weights of both signs), a NaN row's L2 gradient NaN (a NaN distance weighed 0)."""
    x = rng.standard_normal((4, 2))
    x[0, 0], x[2, 1] = np.inf, np.nan
    y = np.array([[0.0, 0.0], [1.0, 1.0], [-np.inf, 2.0]])
    g = np.array([[1.0, -0.5, 0.3], [1.0, 1.0, -2.0], [0.5, 0.5, 0.5], [0.1, -0.1, 0.2]])
    for bwd in (fi.pairwise_sqdist_backward, fi.pairwise_l2_backward):
        for got, want in zip(bwd(*(cuda.to_device(a) for a in (g, x, y))), bwd(g, x, y)):
            np.testing.assert_array_equal(np.isnan(got.copy_to_host()), np.isnan(want))
            assert_close(got.copy_to_host(), want, table=TOL_ORACLE)


@pytest.mark.cudasim
def test_cuda_symmetric_backward_of_infinite_rows_is_the_cpus(cuda):
    """y omitted: each row's gradient is its gradient as x plus its gradient as y (as
    torch's autograd sums the two uses of x), each in the product form; so a finite row
    whose weights towards an infinite row differ in sign in the two roles (g[i, j] and
    g[j, i]) is NaN, as on the CPU. CUDA weighed the pair once (inf)."""
    x = np.array([[np.inf, 0.0], [1.0, 2.0], [0.5, -1.0]])
    g = np.array([[0.0, 1.0, 0.5], [-2.0, 0.0, 1.0], [0.5, 0.25, 0.0]])
    for bwd in (fi.pairwise_sqdist_backward, fi.pairwise_l2_backward):
        want, _ = bwd(g, x)
        got, _ = bwd(cuda.to_device(g), cuda.to_device(x))
        if bwd is fi.pairwise_sqdist_backward:       # the case above
            assert np.isnan(want[1, 0]) and want[2, 0] == -np.inf, want
        np.testing.assert_array_equal(np.isnan(got.copy_to_host()), np.isnan(want))
        assert_close(got.copy_to_host(), want, table=TOL_ORACLE)


@pytest.mark.cudasim
def test_cuda_mixed_backends_rejected(cuda):
    with pytest.raises(fi.BackendMismatchError):
        fi.pairwise_sqdist(np.zeros((2, 2)), cuda.to_device(np.zeros((2, 2))))


@pytest.mark.cudasim
@pytest.mark.parametrize("symmetric", [False, True])
def test_cuda_l2_backward_route_and_dist(cuda, symmetric, rng):
    x = rng.standard_normal((6, 3))
    y = None if symmetric else rng.standard_normal((4, 3))
    w = rng.standard_normal((6, 6 if symmetric else 4))
    dx, dy, dw = cuda.to_device(x), None if symmetric else cuda.to_device(y), cuda.to_device(w)
    ref_x, ref_y = fi.pairwise_l2_backward(w, x, y)
    for dist in (None, fi.pairwise_l2(dx, dy)):
        gx, gy = fi.pairwise_l2_backward(dw, dx, dy, dist=dist)
        assert fi.last_kernel().key == ("pairwise_l2_backward", "cuda", "float64")
        assert_close(gx.copy_to_host(), ref_x, table=TOL_ORACLE)
        if not symmetric:
            assert_close(gy.copy_to_host(), ref_y, table=TOL_ORACLE)


@pytest.mark.cudasim
def test_cuda_l2_backward_float32_tiny_distances_are_finite(cuda):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 2)) * 1e-39).astype(np.float32)
    y = (rng.standard_normal((2, 2)) * 1e-39).astype(np.float32)
    w = np.ones((3, 2), np.float32)
    ref_x, ref_y = _l2_backward_float64(w, x, y)
    # the forward's distances from the CPU, which sums float32 squares in float64 (the
    # GPU sums them in float32, where these underflow to 0: the subgradient 0)
    dist = cuda.to_device(fi.pairwise_l2(x, y))
    gx, gy = fi.pairwise_l2_backward(cuda.to_device(w), cuda.to_device(x), cuda.to_device(y),
                                     dist=dist)
    np.testing.assert_allclose(gx.copy_to_host(), ref_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gy.copy_to_host(), ref_y, rtol=1e-5, atol=1e-5)


@pytest.mark.cudasim
@pytest.mark.parametrize("dtype, scale", [(np.float32, 1e20), (np.float32, 1e-30),
                                          (np.float32, 1e-39), (np.float64, 1e200)])
def test_cuda_l2_whose_squares_overflow_or_underflow(cuda, dtype, scale):
    """Distances whose squares leave the dtype's range (or float32's, summed there) are
    the CPU's: finite, not inf or 0, and so are the backward's unit-vector gradients."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 2)) * scale).astype(dtype)
    y = (rng.standard_normal((2, 2)) * scale).astype(dtype)
    w = np.ones((3, 2), dtype)
    want = fi.pairwise_l2(x, y)
    got = fi.pairwise_l2(cuda.to_device(x), cuda.to_device(y)).copy_to_host()
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-14)
    gx, gy = fi.pairwise_l2_backward(cuda.to_device(w), cuda.to_device(x), cuda.to_device(y))
    ref_x, ref_y = _l2_backward_float64(w, x, y)
    np.testing.assert_allclose(gx.copy_to_host(), ref_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gy.copy_to_host(), ref_y, rtol=1e-5, atol=1e-5)


@pytest.mark.cudasim
def test_cuda_launches_stride_over_more_tiles_than_blocks(cuda, rng, monkeypatch):
    # 1-D grid-stride launches (no gridDim.y cap): with one block per launch,
    # every tile and element must still be covered.
    from fastinterp._cuda import distance as cuda_distance
    monkeypatch.setattr(cuda_distance, "MAX_BLOCKS", 1)
    x = rng.standard_normal((37, 5))
    y = rng.standard_normal((18, 5))
    w = rng.standard_normal((37, 18))
    r = fi.pairwise_sqdist(cuda.to_device(x), cuda.to_device(y)).copy_to_host()
    assert_close(r, direct_sqdist(x, y), table=TOL_ORACLE)
    gx, gy = fi.pairwise_sqdist_backward(cuda.to_device(w), cuda.to_device(x), cuda.to_device(y))
    ref_x, ref_y = fi.pairwise_sqdist_backward(w, x, y)
    assert_close(gx.copy_to_host(), ref_x, table=TOL_ORACLE)
    assert_close(gy.copy_to_host(), ref_y, table=TOL_ORACLE)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_blocks_beyond_one_k_and_n_block(dtype, rng, monkeypatch):
    # D = 300 spans two K blocks of the packed GEMM (256 float32, 192 float64);
    # 2100 columns span two N blocks; 2100 rows give several backward tiles.
    monkeypatch.setattr(fdist, "TILE_N", 4096)
    x = rng.standard_normal((50, 300)).astype(dtype)
    y = rng.standard_normal((2100, 300)).astype(dtype)
    assert_rel(fi.pairwise_sqdist(x, y), direct_sqdist(x, y), dtype)
    w = rng.standard_normal((50, 2100)).astype(dtype)
    gx, gy = fi.pairwise_sqdist_backward(w, x, y)
    x64, y64, w64 = (a.astype(np.float64) for a in (x, y, w))
    ref_x = 2 * (w64.sum(1)[:, None] * x64 - w64 @ y64)
    ref_y = 2 * (w64.sum(0)[:, None] * y64 - w64.T @ x64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert np.abs(gx - ref_x).max() <= tol * np.abs(ref_x).max()
    assert np.abs(gy - ref_y).max() <= tol * np.abs(ref_y).max()
    d, i = fi.knn(y, x, 4)
    np.testing.assert_array_equal(i, brute_knn(y, x, 4)[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 3, 5), (400, 129, 2100), (50, 0, 4), (0, 3, 2)])
def test_deterministic_matmul_accurate_and_thread_invariant(dtype, shape):
    """The private product the models use: equal to float64 a @ b to rounding,
    the same bits for 1 and 2 threads, for transposed and negative-stride views."""
    from fastinterp.distance import deterministic_matmul
    m, k, n = shape
    rng = np.random.default_rng(sum(shape))
    a = rng.standard_normal((k, m)).astype(dtype).T            # transposed view
    b = rng.standard_normal((k, n)).astype(dtype)[::-1]        # negative row stride
    results, saved = [], fi.get_num_threads()
    for threads in (1, 2):
        fi.set_num_threads(threads)
        try:
            results.append(deterministic_matmul(a, b))
        finally:
            fi.set_num_threads(saved)
    assert results[0].tobytes() == results[1].tobytes()
    ref = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(results[0] - ref) <= 4 * eps * (k + 1) * scale + 1e-300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["x", "y"])
def test_l2_backward_nan_entry_poisons_its_pairs_like_the_formula(dtype, where):
    """A NaN coordinate makes every distance of its row NaN, so (x_i - y_j)/d_ij is NaN in
    every component of the pairs it touches (torch gives the same); other pairs are exact."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5)).astype(dtype)
    y = rng.standard_normal((3, 5)).astype(dtype)
    (x if where == "x" else y)[1, 2] = np.nan
    g = rng.standard_normal((4, 3)).astype(dtype)
    gx, gy = fi.pairwise_l2_backward(g, x, y)
    diff = x[:, None, :].astype(np.float64) - y[None, :, :]
    d = np.sqrt((diff ** 2).sum(-1))
    ref_x = (g[:, :, None] * diff / d[:, :, None]).sum(1)
    ref_y = -(g[:, :, None] * diff / d[:, :, None]).sum(0)
    for got, ref in ((gx, ref_x), (gy, ref_y)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        finite = ~np.isnan(ref)
        np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------
# knn_within: the bounded search behind the streamed and Dask kNN
# ----------------------------------------------------------------------------

def _knn_within_case(seed, dtype):
    rng = np.random.default_rng(seed)
    n, d, nq = int(rng.integers(257, 2500)), int(rng.integers(1, 40)), 17
    x = rng.standard_normal((n, d)) * 10.0 ** rng.integers(-2, 3)
    x[rng.integers(0, n, n // 5)] = x[rng.integers(0, n, n // 5)]      # duplicates: ties
    q = np.concatenate([x[rng.integers(0, n, nq - 5)],                  # queries on rows
                        rng.standard_normal((5, d)) * 3])
    if seed % 3 == 0:
        x[rng.integers(0, n, 3)] = np.nan
        x[rng.integers(0, n, 2)] = 1e30 if dtype == np.float32 else 1e200   # special rows
    return x.astype(dtype), q.astype(dtype), int(rng.integers(1, 25))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(8))
def test_knn_within_lists_every_row_within_the_bound_in_knn_order(dtype, seed):
    from fastinterp import _stream
    from fastinterp.distance import knn_within
    x, q, k = _knn_within_case(seed, dtype)
    n = x.shape[0]
    full_d, full_i = fi.knn(x, q, n)                   # every row, in knn's order
    full64 = _stream._direct64(x, q, full_i)           # knn's float64 sort keys
    rng = np.random.default_rng(seed + 100)
    kth = full64[:, k - 1]
    choices = [kth, kth * rng.uniform(0, 1, len(q)), full64[:, min(n - 1, 3 * k)],
               np.zeros(len(q)), np.full(len(q), -1.0), np.full(len(q), np.inf),
               np.full(len(q), np.nan), np.full(len(q), 1e300)]
    for bound in choices:
        d, i = knn_within(x, q, k, bound)
        for r in range(len(q)):
            within = full_i[r][full64[r] <= bound[r]][:k]
            assert np.array_equal(i[r, :len(within)], within), (r, bound[r])
            assert np.array_equal(d[r, :len(within)], full_d[r, :len(within)])
            rest = i[r, len(within):]
            missing = rest < 0
            assert np.all(d[r, len(within):][missing] == np.inf)
            assert np.all(missing[np.argmax(missing):] if missing.any() else True)
            listed = rest[~missing]
            assert not np.any(full64[r][np.isin(full_i[r], listed)] <= bound[r])   # extras
        if not np.all(bound < kth):          # no query can come up short: knn's answer
            full = ~(bound < kth)
            assert np.array_equal(i[full], full_i[full, :k])
            assert np.array_equal(d[full], full_d[full, :k])


def test_knn_within_checks_its_arguments():
    from fastinterp.distance import knn_within
    x, q = np.zeros((300, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match="bound"):
        knn_within(x, q, 2, np.zeros(5))
    with pytest.raises(ValueError, match="CPU arrays"):
        knn_within(np.zeros((2, 300, 3)), q, 2, np.zeros(4))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_streamed_knn_with_bounds_equals_knn(dtype, seed):
    """Blocks after the first are searched within the k-th distance found so far;
    rows tied across blocks (duplicates), NaN and huge rows included."""
    from fastinterp import _stream
    x, q, k = _knn_within_case(seed, dtype)
    x = np.concatenate([x, x[::-1], x[: len(x) // 3]])       # every row again, later
    for block_rows in (k + 1, 257, 700):
        d, i = _stream.knn_stream(x, q, k, block_rows=block_rows)
        rd, ri = fi.knn(x, q, k)
        assert np.array_equal(i, ri) and np.array_equal(d, rd, equal_nan=True)


def test_knn_flags_take_ints():
    x, q = np.random.default_rng(0).random((20, 3)), np.random.default_rng(1).random((4, 3))
    d, i = fi.knn(x, q, 3)
    assert np.array_equal(fi.knn(x, q, 3, 0), i)
    assert np.array_equal(fi.knn(x, q, 3, np.int64(1), progress=0)[1], i)
    for bad in ("no", [1], None, 1.0):
        with pytest.raises(TypeError, match="return_distances must be a bool"):
            fi.knn(x, q, 3, bad)


def test_streamed_knn_takes_what_the_in_memory_call_takes(tmp_path):
    """Batched queries, a list database with progress=True, and the in-memory call's
    errors (queries None, a batch of databases gets a clear message)."""
    import io
    import contextlib
    from fastinterp import _stream
    rng = np.random.default_rng(1)
    x, q = rng.standard_normal((300, 8)), rng.standard_normal((2, 3, 7, 8))
    x.tofile(tmp_path / "x.bin")
    mm = np.memmap(tmp_path / "x.bin", dtype=np.float64, mode="r", shape=x.shape)
    for got in (_stream.knn_stream(mm, q, 5, block_rows=40), fi.knn(mm, q, 5)):
        want = fi.knn(x, q, 5)
        assert got[0].shape == (2, 3, 7, 5)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    with contextlib.redirect_stderr(io.StringIO()):
        got = fi.knn(x[:50].tolist(), q[0, 0], 5, progress=True)
    assert np.array_equal(got[1], fi.knn(x[:50], q[0, 0], 5)[1])
    with pytest.raises(TypeError, match=r"^knn: queries must be an array"):
        fi.knn(mm, None, 5)
    with pytest.raises(TypeError, match="dtype"):
        fi.knn(mm, q.astype(np.float32), 5)
    with pytest.raises(ValueError, match="batch of databases is searched in memory"):
        fi.knn(mm.reshape(3, 100, 8), q[0], 5, progress=True)


def test_knn_with_progress_returns_the_callers_type(tmp_path):
    """progress=True searches the same way for every input the in-memory call takes:
    torch in, torch out (the queries' type with a memmap database), D = 0, and the
    in-memory call's errors."""
    import io
    import contextlib
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x, q = rng.standard_normal((60, 3)).astype(np.float32), rng.standard_normal((4, 3))
    q = q.astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    mm = np.memmap(tmp_path / "x.bin", dtype=np.float32, mode="r", shape=x.shape)
    want_d, want_i = fi.knn(x, q, 2)
    with contextlib.redirect_stderr(io.StringIO()):
        for db, queries in ((torch.from_numpy(x), torch.from_numpy(q)), (x, torch.from_numpy(q)),
                            (mm, torch.from_numpy(q))):
            d, i = fi.knn(db, queries, 2, progress=True)
            assert isinstance(d, torch.Tensor) and isinstance(i, torch.Tensor)
            assert np.array_equal(d.numpy(), want_d) and np.array_equal(i.numpy(), want_i)
        i = fi.knn(torch.from_numpy(x), torch.from_numpy(q), 2, False, progress=True)
        assert isinstance(i, torch.Tensor) and np.array_equal(i.numpy(), want_i)
        empty = np.zeros((5, 0), np.float32)
        for progress in (False, True):
            d, i = fi.knn(empty, np.zeros((2, 0), np.float32), 2, progress=progress)
            np.testing.assert_array_equal(i, [[0, 1], [0, 1]])
            np.testing.assert_array_equal(d, 0)
        for progress in (False, True):
            with pytest.raises(TypeError, match=r"^knn: x must be an array; got None"):
                fi.knn(None, q, 1, progress=progress)


def test_streamed_knn_with_a_first_block_shorter_than_k():
    """zarr chunks smaller than k: the first block holds fewer than k rows (no bound yet)."""
    zarr = pytest.importorskip("zarr")
    from fastinterp import _stream
    rng = np.random.default_rng(0)
    x, q = rng.standard_normal((120, 19)), rng.standard_normal((5, 19))
    z = zarr.create_array(zarr.storage.MemoryStore(), shape=x.shape, chunks=(7, 19),
                          dtype=x.dtype)
    z[:] = x
    got, want = _stream.knn_stream(z, q, 64, block_rows=64), fi.knn(x, q, 64)
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[0], want[0])


@pytest.mark.parametrize("dtype,scale,offset", [(np.float32, 1e-22, 0.0), (np.float32, 3e-21, 1e-19),
                                                (np.float64, 3e-162, 3e-159),
                                                (np.float64, 1e-158, 0.0)])
def test_knn_exact_where_distances_are_subnormal(dtype, scale, offset):
    """Squared distances below the dtype's smallest normal number lose their relative
    precision in the GEMM form: the candidate proof allows for that absolute error."""
    from fastinterp import _stream
    rng = np.random.default_rng(0)
    n, q_rows, k = 2000, 30, 20
    x = (offset + rng.standard_normal((n, 8)) * scale).astype(dtype)
    q = (offset + rng.standard_normal((q_rows, 8)) * scale).astype(dtype)
    key = _stream._direct64(x, q, np.tile(np.arange(n, dtype=np.int64), (q_rows, 1)))
    want = np.lexsort((np.tile(np.arange(n), (q_rows, 1)), key), axis=-1)[:, :k]
    d, i = fi.knn(x, q, k)
    assert np.array_equal(i, want)
    ds, is_ = _stream.knn_stream(x, q, k, block_rows=300)
    assert np.array_equal(is_, i) and ds.tobytes() == d.tobytes()


@pytest.mark.cudasim
@pytest.mark.parametrize("symmetric", [False, True])
def test_cuda_l2_backward_of_float32_distances_beyond_float32_is_the_cpus(cuda, symmetric):
    """A float32 distance that overflows (rows near +-3e38 apart) weighed its pair by
    g / inf = 0 on CUDA: the gradient vanished; the CPU takes it from float64 differences."""
    x = np.array([[1, 0, 0, 0], [0.5, 2, -1, 3]], np.float32)
    y = np.array([[-3e38, 3e38, -3e38, 3e38], [1, 1, 1, 1]], np.float32)
    if symmetric:
        x, y = np.concatenate([x, y]), None
    g = np.random.default_rng(1).standard_normal((len(x), 2 if y is not None else len(x)))
    g = g.astype(np.float32)
    want = fi.pairwise_l2_backward(g, x, y)
    got = fi.pairwise_l2_backward(*(None if a is None else cuda.to_device(a) for a in (g, x, y)))
    for w, gt in zip(want, got):
        if w is not None:
            assert_close(gt.copy_to_host(), w, table=TOL_ORACLE)


@pytest.mark.cudasim
def test_cuda_l2_backward_takes_differences_beyond_float32_in_float64(cuda):
    """Rows 3e38 and -3e38: their float32 difference overflows, the unit vector does not."""
    x, y = np.array([[3e38]], np.float32), np.array([[-3e38]], np.float32)
    g = np.ones((1, 1), np.float32)
    for got, want in zip(fi.pairwise_l2_backward(*map(cuda.to_device, (g, x, y))),
                         fi.pairwise_l2_backward(g, x, y)):
        np.testing.assert_array_equal(got.copy_to_host(), want)
    np.testing.assert_array_equal(fi.pairwise_l2_backward(g, x, y)[0], [[1.0]])


def wide_ref_backward(w, x, y, l2):
    """Like ref_backward, in long double (a 15-bit exponent): no difference, product
    or sum of float64 rows overflows, so rows spanning the dtype's range are exact."""
    wide = np.longdouble
    diff = np.asarray(x, wide)[:, None, :] - np.asarray(y, wide)[None, :, :]
    norms = np.sqrt((diff ** 2).sum(-1))
    if l2:
        unit = diff / np.where(norms > 0, norms, 1)[..., None]
        terms = np.asarray(w, wide)[..., None] * unit
    else:
        terms = 2 * np.asarray(w, wide)[..., None] * diff
    size = np.sqrt((terms ** 2).sum(-1))
    return terms.sum(1), -terms.sum(0), size.sum(1)[:, None], size.sum(0)[:, None]


def assert_wide_close(got, ref, scale, dtype):
    """Within a few ulps of the terms' scale where the exact result is finite in dtype;
    an infinity of the exact result's sign where it overflows dtype."""
    big = np.longdouble(np.finfo(dtype).max)
    overflows = np.abs(ref) > big * (1 + 4 * np.finfo(dtype).eps)
    np.testing.assert_array_equal(got[overflows], np.sign(ref[overflows]) * np.inf)
    fits = np.abs(ref) < big * (1 - 4 * np.finfo(dtype).eps)
    assert np.isfinite(got[fits]).all(), got
    err = np.abs(np.asarray(got, np.longdouble) - ref)
    bound = 64 * np.finfo(dtype).eps * np.broadcast_to(scale, ref.shape)
    assert (err[fits] <= bound[fits]).all(), np.max(err[fits] / bound[fits])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_backward_of_rows_spanning_the_dtypes_range(dtype, l2, symmetric, seed):
    # Rows of both signs near the largest finite value: their differences from the
    # centre (and from each other) overflow the dtype, while every gradient whose
    # exact value fits stays finite and accurate.
    rng = np.random.default_rng(seed)
    big = float(np.finfo(dtype).max)
    m, n, d = rng.integers(1, 9), rng.integers(1, 9), rng.integers(1, 6)
    x = (rng.uniform(-0.98, 0.98, (m, d)) * big).astype(dtype)
    y = x if symmetric else (rng.uniform(-0.98, 0.98, (n, d)) * big).astype(dtype)
    x[rng.random((m, d)) < 0.3] = rng.standard_normal() # ordinary values next to them
    w = rng.standard_normal((m, len(y))).astype(dtype)
    bwd = fi.pairwise_l2_backward if l2 else fi.pairwise_sqdist_backward
    with np.errstate(over="ignore"):
        gx, gy = bwd(w, x, None) if symmetric else bwd(w, x, y)
    rx, ry, sx, sy = wide_ref_backward(w, x, y, l2)
    if symmetric:
        assert gy is None
        assert_wide_close(gx, rx + ry, sx + sy, dtype)
    else:
        assert_wide_close(gx, rx, sx, dtype)
        assert_wide_close(gy, ry, sy, dtype)


@pytest.mark.parametrize("l2", [False, True])
def test_backward_whose_exact_gradient_cancels_near_the_float32_limit(l2):
    x = np.array([[-1.85e38]], np.float32)
    y = np.array([[3.3e38], [-1.96e38]], np.float32)
    bwd = fi.pairwise_l2_backward if l2 else fi.pairwise_sqdist_backward
    gx, gy = bwd(np.ones((1, 2), np.float32), x, y)
    rx, ry, sx, sy = wide_ref_backward(np.ones((1, 2)), x, y, l2)
    assert_wide_close(gx, rx, sx, np.float32)
    assert_wide_close(gy, ry, sy, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l2", [False, True])
def test_batched_backward_of_rows_spanning_the_dtypes_range(dtype, l2, rng):
    # y broadcast over x's batch: its gradient sums both elements' terms
    big = float(np.finfo(dtype).max)
    x = (rng.uniform(-0.98, 0.98, (2, 5, 3)) * big).astype(dtype)
    y = (rng.uniform(-0.98, 0.98, (4, 3)) * big).astype(dtype)
    y[1] = 0.5
    w = rng.standard_normal((2, 5, 4)).astype(dtype)
    bwd = fi.pairwise_l2_backward if l2 else fi.pairwise_sqdist_backward
    gx, gy = bwd(w, x, y)
    refs = [wide_ref_backward(w[b], x[b], y, l2) for b in range(2)]
    for b in range(2):
        assert_wide_close(gx[b], refs[b][0], refs[b][2], dtype)
    assert_wide_close(gy, refs[0][1] + refs[1][1], refs[0][3] + refs[1][3], dtype)


@pytest.mark.cudasim
@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("scale", ["huge", "tiny"])
def test_cuda_backward_of_float64_rows_at_the_ends_of_the_range(cuda, l2, scale):
    # float64 rows near the largest value (differences overflow float64, the exact
    # gradient need not), or 1e-150 apart with weights of 1e160 (g / dist overflows)
    rng = np.random.default_rng(7)
    w = rng.standard_normal((4, 3))
    if scale == "huge":
        x, y = (rng.uniform(-0.98, 0.98, (n, 3)) * 1.7976931348623157e308 for n in (4, 3))
    else:
        x, y = (rng.integers(-8, 8, (n, 3)) * 1e-150 for n in (4, 3))
        w *= 1e160
    bwd = fi.pairwise_l2_backward if l2 else fi.pairwise_sqdist_backward
    rx, ry, sx, sy = wide_ref_backward(w, x, y, l2)
    for got, ref, size in zip(bwd(*(cuda.to_device(a) for a in (w, x, y))), (rx, ry), (sx, sy)):
        assert_wide_close(got.copy_to_host(), ref, size, np.float64)
    for got, ref, size in zip(bwd(w, x, y), (rx, ry), (sx, sy)):
        assert_wide_close(got, ref, size, np.float64)


@pytest.mark.parametrize("l2", [False, True])
def test_overflow_redo_is_per_batch_element_and_row(l2):
    """The redo of an overflowed backward ran on the whole call, with one scale for every
    batch element, and not at all when any input anywhere was non-finite: a huge g in
    one element flushed another's tiny g to 0, an element that did not overflow lost its
    bits, and an inf grad_out or NaN row elsewhere kept the others' NaN."""
    bwd = fi.pairwise_l2_backward if l2 else fi.pairwise_sqdist_backward
    alone = lambda g, x, y: bwd(g, x, y)                      # noqa: E731
    with np.errstate(all="ignore"):
        # (a) float64: each element scaled on its own
        x, y = np.array([[[1.5e308]], [[1.0]]]), np.array([[[-1.5e308]], [[0.0]]])
        g = np.array([[[1e300]], [[1e-300]]])
        gx, gy = bwd(g, x, y)
        for e in range(2):
            want = alone(g[e], x[e], y[e])
            np.testing.assert_array_equal(gx[e], want[0])
            np.testing.assert_array_equal(gy[e], want[1])
        assert gx[1, 0, 0] != 0
        # (b) float32: an element that did not overflow keeps the bits of its own call
        r = np.random.default_rng(0)
        x, y = (r.standard_normal(s).astype(np.float32) for s in ((2, 4, 3), (2, 5, 3)))
        g = r.standard_normal((2, 4, 5)).astype(np.float32)
        x[0, 0, 0], y[0, 0, 0] = 3e38, -3e38
        gx, gy = bwd(g, x, y)
        for e in range(2):
            want = alone(g[e], x[e], y[e])
            np.testing.assert_array_equal(gx[e], want[0])
            np.testing.assert_array_equal(gy[e], want[1])
        # (c) an inf grad_out in another element, a NaN row beside an overflowing one
        x, y = np.array([[[0.0]], [[1.5e308]]]), np.array([[[0.0]], [[-1.5e308]]])
        g = np.array([[[np.inf]], [[1.0]]])
        np.testing.assert_array_equal(bwd(g, x, y)[0][1], alone(g[1], x[1], y[1])[0])
        assert np.isfinite(bwd(g, x, y)[0][1]).all() == l2    # 2 (x - y) exceeds float64
        gx, _ = bwd(np.ones((2, 1)), np.array([[np.nan], [1.5e308]]), np.array([[-1.5e308]]))
        assert np.isnan(gx[0]).all()
        np.testing.assert_array_equal(gx[1], alone(np.ones((1, 1)), np.array([[1.5e308]]),
                                                   np.array([[-1.5e308]]))[0][0])
        assert np.isfinite(gx[1]).all() == l2


def test_wide_rows_centre_from_a_bounded_sample():
    """The centre is a median of sampled rows: 256 rows of a million columns made a
    float64 copy and a partition of 2 GB (17 s for x (100, 1e6) against y (2, 1e6), 5.6x
    the inputs' memory). Wide rows are sampled fewer, and the call's memory stays near
    one centred copy of the inputs."""
    import tracemalloc
    rng = np.random.default_rng(0)
    x = rng.random((40, 2 ** 18), dtype=np.float32)
    y = rng.random((3, 2 ** 18), dtype=np.float32)
    fi.pairwise_sqdist(x[:2], y)
    tracemalloc.start()
    try:
        got = fi.pairwise_sqdist(x, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 1.25 * (x.nbytes + y.nbytes) + got.nbytes
    ref = ((x.astype(np.float64)[:, None] - y.astype(np.float64)[None]) ** 2).sum(-1)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    step = fi.distance.centre_step
    assert step(1000, 128) == 1000 // 256 and step(1000, 2 ** 18) == 500


def test_batched_non_finite_elements_share_one_vectorized_centre():
    """Batch elements holding NaN or inf took their centre one element at a time (100x
    the time of finite data for 8000 small clouds); each element's result is still the
    call on that element alone, and its centre the median of its finite sample."""
    import importlib
    dist = importlib.import_module("fastinterp.distance")
    rng = np.random.default_rng(4)
    p = rng.standard_normal((300, 6, 8)).astype(np.float32)
    q = rng.standard_normal((300, 5, 8)).astype(np.float32)
    p[::3, 0, 0] = np.nan
    p[1::7, 2] = np.inf
    q[2::5, :, 1] = -np.inf
    p[2::10, :, 1] = np.nan           # a column with no finite value: centre 0
    got = fi.pairwise_sqdist(p, q)
    for b in range(0, 300, 11):
        np.testing.assert_array_equal(got[b], fi.pairwise_sqdist(p[b], q[b]))
    s = np.concatenate([p, q], axis=1).astype(np.float64).transpose(0, 2, 1)
    with pytest.warns(RuntimeWarning, match="All-NaN"):
        want = np.nanmedian(np.where(np.isfinite(s), s, np.nan), axis=2)
    want = np.where(np.isfinite(want), want, 0).astype(np.float32)
    idx = np.arange(300)
    np.testing.assert_array_equal(dist._centres(np.float32, (p, idx), (q, idx)), want)


@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("shapes", [((7, 5), (9, 5)), ((3, 7, 5), (1, 9, 5)),
                                    ((2, 1, 7, 5), (4, 9, 5)), ((7, 5), None)])
def test_backward_computes_only_the_gradients_asked_for(l2, shapes, rng, monkeypatch):
    """needs_x_grad / needs_y_grad: the other gradient is None and its rows are never
    formed (the CPU kernel's GEMM for it does not run); the asked one's bits unchanged."""
    import importlib
    cpu = importlib.import_module("fastinterp._cpu.distance")
    x = rng.standard_normal(shapes[0])
    y = None if shapes[1] is None else rng.standard_normal(shapes[1])
    bwd = fi.pairwise_l2_backward if l2 else fi.pairwise_sqdist_backward
    g = rng.standard_normal((fi.pairwise_l2 if l2 else fi.pairwise_sqdist)(x, y).shape)
    gx, gy = bwd(g, x, y)
    calls = []
    real = cpu.grad_rows
    monkeypatch.setattr(cpu, "grad_rows", lambda *a: calls.append(a[2]) or real(*a))
    for flags, want in (({"needs_y_grad": False}, (gx, None)),
                        ({"needs_x_grad": False}, (None, gy)),
                        ({"needs_x_grad": False, "needs_y_grad": False}, (None, None))):
        calls.clear()
        got = bwd(g, x, y, **flags)
        if y is None:       # one gradient, both roles of x: asked for by needs_x_grad
            want = (gx if flags.get("needs_x_grad", True) else None, None)
        for a, b in zip(got, want):
            assert (a is None) == (b is None) and (a is None or np.array_equal(a, b))
        n_asked = sum(w is not None for w in want)
        assert len(calls) == (2 * n_asked if y is None else n_asked)
    with pytest.raises(TypeError, match="needs_y_grad"):
        bwd(g, x, y, needs_y_grad="no")



@pytest.mark.parametrize("scale, unit", [(1e160, 2.0 ** -600), (1e-170, 2.0 ** 600)])
def test_knn_of_float64_data_beyond_squares_ranks_after_power_of_two_scaling(scale, unit):
    """The README's advice for float64 data whose squared distances leave float64 (they
    rank as ties there): scaled by a power of two, knn ranks them right."""
    x = np.array([[0.0, 0], [3, 0], [1, 0], [0.5, 0.2]]) * scale
    q = np.array([[0.9, 0]]) * scale
    _, idx = fi.knn(x * unit, q * unit, 4)
    np.testing.assert_array_equal(idx[0], [2, 3, 0, 1])
