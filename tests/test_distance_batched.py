"""Batched distances: leading dimensions broadcast as torch.cdist accepts them.

pairwise_sqdist, pairwise_l2, knn and the backwards over (..., M, D) operands:
output shapes, each batch element bit-identical to the call on that element
alone, values and gradients against torch.cdist and its autograd, gradients
summed over broadcast dimensions, errors, knn ties per element, empty batches,
determinism over thread counts, and the CUDA kernels under the simulator.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL_ORACLE, assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

import fastinterp as fi
from fastinterp import distance as fdist

DTYPES = [np.float32, np.float64]
PAIRWISE = [fi.pairwise_sqdist, fi.pairwise_l2]
BACKWARDS = {fi.pairwise_sqdist: fi.pairwise_sqdist_backward,
             fi.pairwise_l2: fi.pairwise_l2_backward}

# (x shape, y shape): the forms torch.cdist accepts, plus broadcasting on both sides.
SHAPES = [
    ((3, 5, 4), (3, 6, 4)),          # (B, P, D) with (B, R, D)
    ((5, 4), (3, 6, 4)),             # (P, D) with (B, R, D)
    ((3, 5, 4), (6, 4)),             # (B, P, D) with (R, D)
    ((2, 1, 5, 4), (3, 6, 4)),       # (A, 1, P, D) with (B, R, D)
    ((1, 5, 4), (2, 3, 6, 4)),       # size-1 and missing leading dimensions
    ((2, 3, 5, 4), (2, 3, 6, 4)),    # two batch dimensions, no broadcasting
]


@pytest.fixture(autouse=True)
def threads_even_for_small_inputs(monkeypatch):
    """Test-sized inputs would run on one thread; make them use every thread."""
    monkeypatch.setattr(fdist, "GEMM_WORK_PER_THREAD", 1 << 10)


def _cloud(rng, shape, dtype, centre=0.0):
    """Points with a few exact duplicates (exact zeros, direct-difference entries)."""
    a = (centre + rng.standard_normal(shape)).astype(dtype)
    a[..., 1, :] = a[..., 0, :]
    return a


def _lead(xs, ys):
    return np.broadcast_shapes(xs[:-2], ys[:-2])


def _elements(lead, *arrays):
    """For each index of the broadcast leading shape: that element of every array."""
    views = [np.broadcast_to(a, lead + a.shape[-2:]) for a in arrays]
    for ix in np.ndindex(*lead):
        yield ix, [v[ix] for v in views]


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint8) if a.dtype.kind == "f" else a


def assert_same_bits(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(_bits(a), _bits(b))


def _direct(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)


# ----------------------------------------------------------------------------
# forward: shapes, bit-identity per element, values
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("d", [3, 9])          # the direct (small D) and the GEMM paths
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ys", SHAPES)
@pytest.mark.parametrize("fn", PAIRWISE)
def test_pairwise_batch_is_bitwise_the_per_element_calls(fn, xs, ys, dtype, d, rng):
    xs, ys = xs[:-1] + (d,), ys[:-1] + (d,)
    x = _cloud(rng, xs, dtype, centre=50.0)
    y = _cloud(rng, ys, dtype, centre=50.0)
    lead = _lead(xs, ys)
    got = fn(x, y)
    assert got.shape == lead + (xs[-2], ys[-2]) and got.dtype == dtype
    for ix, (xe, ye) in _elements(lead, x, y):
        assert_same_bits(got[ix], fn(np.ascontiguousarray(xe), np.ascontiguousarray(ye)))
    ref = _direct(x, y)
    assert_close(got, np.sqrt(ref) if fn is fi.pairwise_l2 else ref, table=TOL_ORACLE,
                 scale=10 if dtype == np.float32 else 1)


@st.composite
def _broadcastable(draw):
    """Two leading shapes that broadcast: each dimension of one is 1, missing or equal."""
    full = draw(st.lists(st.integers(0, 3), min_size=0, max_size=3))
    def side():
        dims = [draw(st.sampled_from([n, 1])) for n in full]
        return tuple(dims[draw(st.integers(0, len(dims))):])
    return side(), side()


@settings(max_examples=20, deadline=None)
@given(lead=_broadcastable(), m=st.integers(0, 7), n=st.integers(1, 7),
       d=st.sampled_from([1, 3, 6]), seed=st.integers(0, 2**16))
def test_any_broadcast_matches_per_element_calls(lead, m, n, d, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(lead[0] + (m, d)).astype(np.float32)
    y = rng.standard_normal(lead[1] + (n, d)).astype(np.float32)
    both = np.broadcast_shapes(lead[0], lead[1])
    got = fi.pairwise_l2(x, y)
    d_, i_ = fi.knn(y, x, min(n, 2))
    g = rng.standard_normal(both + (m, n)).astype(np.float32)
    gx, gy = fi.pairwise_sqdist_backward(g, x, y)
    assert got.shape == both + (m, n) and i_.shape == both + (m, min(n, 2))
    assert gx.shape == x.shape and gy.shape == y.shape
    for ix, (xe, ye) in _elements(both, x, y):
        xe, ye = np.ascontiguousarray(xe), np.ascontiguousarray(ye)
        assert_same_bits(got[ix], fi.pairwise_l2(xe, ye))
        np.testing.assert_array_equal(i_[ix], fi.knn(ye, xe, min(n, 2))[1])
    ref_x, ref_y = _per_element_grads(fi.pairwise_sqdist_backward, g, x, y, both)
    assert_same_bits(gx, ref_x)
    assert_same_bits(gy, ref_y)


@pytest.mark.parametrize("fn", PAIRWISE)
def test_symmetric_batch(fn, rng):
    x = _cloud(rng, (3, 2, 9, 5), np.float32, centre=1000.0)
    for got in (fn(x), fn(x, x)):
        assert got.shape == (3, 2, 9, 9)
        for ix in np.ndindex(3, 2):
            assert_same_bits(got[ix], fn(x[ix]))
            np.testing.assert_array_equal(np.diagonal(got[ix]), 0)
            np.testing.assert_array_equal(got[ix], got[ix].T)


@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_point_clouds_are_float64_direct_differences_rounded_once(d, rng):
    """Up to DIRECT_MAX_D columns the forward sums exact float64 squares in column order:
    float32 results are the float64 reference rounded once, bit for bit."""
    assert d <= fdist.DIRECT_MAX_D
    x = (100 + rng.standard_normal((2, 40, d))).astype(np.float32)
    y = (100 + rng.standard_normal((2, 33, d))).astype(np.float32)
    y[:, 5] = x[:, 7]
    ref = _direct(x, y)
    assert_same_bits(fi.pairwise_sqdist(x, y), ref.astype(np.float32))
    assert_same_bits(fi.pairwise_l2(x, y), np.sqrt(ref).astype(np.float32))
    s = fi.pairwise_sqdist(x)
    np.testing.assert_array_equal(np.diagonal(s, axis1=-2, axis2=-1), 0)
    np.testing.assert_array_equal(s, np.swapaxes(s, -1, -2))


def test_point_clouds_with_huge_and_non_finite_coordinates():
    x = np.array([[[1e200, 0.0, 0.0], [0.0, 0.0, 0.0]], [[np.inf, 0, 0], [np.nan, 0, 0]]])
    y = np.array([[-1e200, 0.0, 0.0], [3.0, 4.0, 0.0]])
    sq, l2 = fi.pairwise_sqdist(x, y), fi.pairwise_l2(x, y)
    assert sq[0, 0, 0] == np.inf and l2[0, 0, 0] == 2e200     # the root does not overflow
    assert sq[0, 1, 1] == 25 and l2[0, 1, 1] == 5
    assert np.isinf(sq[1, 0]).all() and np.isnan(sq[1, 1]).all() and np.isnan(l2[1, 1]).all()


@pytest.mark.parametrize("xs,ys", SHAPES[:4])
def test_pairwise_matches_torch_cdist(xs, ys, rng, torch):
    x, y = rng.standard_normal(xs), rng.standard_normal(ys)
    ref = torch.cdist(torch.from_numpy(x), torch.from_numpy(y),
                      compute_mode="donot_use_mm_for_euclid_dist").numpy()
    assert_close(fi.pairwise_l2(x, y), ref, table=TOL_ORACLE)
    assert_close(fi.pairwise_sqdist(x, y), ref ** 2, table=TOL_ORACLE)


@pytest.mark.parametrize("d", [3, 9])
def test_batch_with_non_finite_rows_in_one_element(d, rng):
    """An element holding NaN/inf/huge rows takes its own centre; the others are unaffected."""
    x = rng.standard_normal((4, 7, d)).astype(np.float32)
    y = rng.standard_normal((4, 6, d)).astype(np.float32)
    x[1, 2] = np.nan
    y[2, 0] = np.inf
    x[3, 4] = 1e30
    for fn in PAIRWISE:
        got = fn(x, y)
        for b in range(4):
            assert_same_bits(got[b], fn(x[b], y[b]))


def test_out_and_torch_tensors_with_batches(rng, torch):
    x, y = rng.standard_normal((2, 5, 3)), rng.standard_normal((4, 3))
    out = np.full((2, 5, 4), 7.0)
    assert fi.pairwise_sqdist(x, y, out=out) is out
    assert_same_bits(out, fi.pairwise_sqdist(x, y))
    with pytest.raises(ValueError, match=r"out must have shape \(2, 5, 4\)"):
        fi.pairwise_sqdist(x, y, out=np.zeros((5, 4)))
    t = fi.pairwise_l2(torch.from_numpy(x), torch.from_numpy(y))
    assert isinstance(t, torch.Tensor) and tuple(t.shape) == (2, 5, 4)
    assert_same_bits(t.numpy(), fi.pairwise_l2(x, y))


# ----------------------------------------------------------------------------
# backward: gradients of the inputs' shapes, reduced over broadcast dimensions
# ----------------------------------------------------------------------------

def _per_element_grads(bwd, g, x, y, lead):
    """The unbatched backward on each element, summed into x's and y's shapes in batch
    order (the order the kernels sum in)."""
    sums = [np.zeros((int(np.prod(a.shape[:-2])),) + a.shape[-2:], a.dtype) for a in (x, y)]
    used = [np.zeros(len(s), bool) for s in sums]
    ids = [np.broadcast_to(np.arange(len(s)).reshape(a.shape[:-2]), lead)
           for s, a in zip(sums, (x, y))]
    for ix, (xe, ye) in _elements(lead, x, y):
        grads = bwd(np.ascontiguousarray(g[ix]), np.ascontiguousarray(xe),
                    np.ascontiguousarray(ye))
        for s, u, i, e in zip(sums, used, ids, grads):
            s[i[ix]] = s[i[ix]] + e if u[i[ix]] else e     # the first one exactly, then +
            u[i[ix]] = True
    return sums[0].reshape(x.shape), sums[1].reshape(y.shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ys", SHAPES)
@pytest.mark.parametrize("fn", PAIRWISE)
def test_backward_batch_is_bitwise_the_per_element_sums(fn, xs, ys, dtype, rng):
    bwd = BACKWARDS[fn]
    x = _cloud(rng, xs, dtype, centre=20.0)
    y = _cloud(rng, ys, dtype, centre=20.0)
    y[..., 2, :] = x.reshape(-1, *xs[-2:])[0, 3]      # a zero-distance pair
    lead = _lead(xs, ys)
    g = rng.standard_normal(lead + (xs[-2], ys[-2])).astype(dtype)
    gx, gy = bwd(g, x, y)
    assert gx.shape == x.shape and gy.shape == y.shape
    ref_x, ref_y = _per_element_grads(bwd, g, x, y, lead)
    assert_same_bits(gx, ref_x)
    assert_same_bits(gy, ref_y)


@pytest.mark.parametrize("fn", PAIRWISE)
def test_symmetric_backward_batch(fn, rng):
    bwd = BACKWARDS[fn]
    x = _cloud(rng, (3, 8, 4), np.float64)
    g = rng.standard_normal((3, 8, 8))
    gx, gy = bwd(g, x)
    assert gy is None and gx.shape == x.shape
    for b in range(3):
        assert_same_bits(gx[b], bwd(g[b], x[b])[0])


@pytest.mark.parametrize("xs,ys", SHAPES)
@pytest.mark.parametrize("fn", PAIRWISE)
def test_backward_matches_torch_autograd(fn, xs, ys, rng, torch):
    x, y = rng.standard_normal(xs), rng.standard_normal(ys)
    lead = _lead(xs, ys)
    g = rng.standard_normal(lead + (xs[-2], ys[-2]))
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = torch.from_numpy(y).requires_grad_(True)
    d = torch.cdist(tx, ty, compute_mode="donot_use_mm_for_euclid_dist")
    ((d * d if fn is fi.pairwise_sqdist else d) * torch.from_numpy(g)).sum().backward()
    gx, gy = BACKWARDS[fn](g, x, y)
    assert_close(gx, tx.grad.numpy(), table=TOL_ORACLE)
    assert_close(gy, ty.grad.numpy(), table=TOL_ORACLE)
    if fn is fi.pairwise_l2:
        gx2, gy2 = fi.pairwise_l2_backward(g, x, y, dist=fi.pairwise_l2(x, y))
        assert_same_bits(gx2, gx)
        assert_same_bits(gy2, gy)


# ----------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("call,names", [
    (lambda x, y: fi.pairwise_sqdist(x, y), ("pairwise_sqdist", "x", "y")),
    (lambda x, y: fi.pairwise_l2(x, y), ("pairwise_l2", "x", "y")),
    (lambda x, y: fi.knn(x, y, 1), ("knn", "x", "queries")),
    (lambda x, y: fi.pairwise_sqdist_backward(np.zeros((2, 5, 6)), x, y),
     ("pairwise_sqdist_backward", "x", "y")),
    (lambda x, y: fi.pairwise_l2_backward(np.zeros((2, 5, 6)), x, y),
     ("pairwise_l2_backward", "x", "y")),
])
def test_non_broadcastable_batches_are_refused(call, names):
    x, y = np.zeros((2, 5, 3)), np.zeros((3, 6, 3))
    with pytest.raises(ValueError) as exc:
        call(x, y)
    msg = str(exc.value)
    for part in names + ("(2, 5, 3)", "(3, 6, 3)", "broadcast"):
        assert part in msg, msg


def test_backward_shape_errors_name_the_batch():
    x, y = np.zeros((2, 5, 3)), np.zeros((6, 3))
    with pytest.raises(ValueError, match=r"pairwise_sqdist_backward: grad_out must have shape "
                                         r"\(\.\.\., M, N\) = \(2, 5, 6\); got \(5, 6\)"):
        fi.pairwise_sqdist_backward(np.zeros((5, 6)), x, y)
    with pytest.raises(ValueError, match=r"pairwise_l2_backward: dist must have shape "
                                         r"\(\.\.\., M, N\) = \(2, 5, 6\); got \(1, 5, 6\)"):
        fi.pairwise_l2_backward(np.zeros((2, 5, 6)), x, y, dist=np.zeros((1, 5, 6)))
    out = np.full((2, 5, 6), 7.0)
    with pytest.raises(ValueError, match=r"pairwise_l2: the leading \(batch\) dimensions"):
        fi.pairwise_l2(x, np.zeros((3, 6, 3)), out=out)
    np.testing.assert_array_equal(out, 7.0)


# ----------------------------------------------------------------------------
# knn
# ----------------------------------------------------------------------------

# N = 40: the small-cloud exact scan; N = 300: the GEMM and heap path.
KNN_SHAPES = [((3, 40, 3), (3, 9, 3)), ((40, 3), (3, 9, 3)), ((3, 300, 3), (9, 3)),
              ((2, 1, 300, 5), (3, 9, 5))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,qs", KNN_SHAPES)
def test_knn_batch_equals_per_element_calls(xs, qs, dtype, rng):
    x = _cloud(rng, xs, dtype)
    q = _cloud(rng, qs, dtype)
    lead = _lead(xs, qs)
    d, i = fi.knn(x, q, 5)
    assert d.shape == i.shape == lead + (qs[-2], 5) and i.dtype == np.int64
    for ix, (xe, qe) in _elements(lead, x, q):
        de, ie = fi.knn(np.ascontiguousarray(xe), np.ascontiguousarray(qe), 5)
        assert_same_bits(d[ix], de)
        np.testing.assert_array_equal(i[ix], ie)
    assert_same_bits(fi.knn(x, q, 5, return_distances=False), i)


@pytest.mark.parametrize("n", [60, 400])
def test_knn_ties_by_index_per_element(n, rng):
    """Integer grids: many equal distances, broken by the smaller index in each element's
    own database (a stable argsort of the float64 distances)."""
    x = rng.integers(-2, 3, size=(4, n, 2)).astype(np.float32)
    q = rng.integers(-2, 3, size=(4, 15, 2)).astype(np.float32)
    x[2] = x[2, ::-1]                # the same points in another order: other indices
    d, i = fi.knn(x, q, 7)
    for b in range(4):
        e = _direct(q[b], x[b])
        ref = np.argsort(e, axis=1, kind="stable")[:, :7]
        np.testing.assert_array_equal(i[b], ref)
        np.testing.assert_array_equal(d[b], np.take_along_axis(e, ref, 1).astype(np.float32))


def test_knn_special_rows_in_some_elements(rng):
    x = rng.standard_normal((3, 300, 4))
    x[0, :260] = np.inf              # many special rows: that element is scanned exactly
    x[1, 5] = np.nan
    q = rng.standard_normal((3, 6, 4))
    d, i = fi.knn(x, q, 4)
    for b in range(3):
        de, ie = fi.knn(x[b], q[b], 4)
        np.testing.assert_array_equal(i[b], ie)
        assert_same_bits(d[b], de)


@pytest.mark.parametrize("d", [1, 3, 9, 17])
@pytest.mark.parametrize("dtype", DTYPES)
def test_knn_small_cloud_scan_equals_the_gemm_path(d, dtype, monkeypatch, rng):
    """The transposed exact scan of small databases returns the bits of the GEMM and heap
    path (whose candidates are recomputed by direct differences), NaN and inf rows too."""
    x = (10 * rng.standard_normal((3, 200, d))).astype(dtype)
    q = (10 * rng.standard_normal((3, 50, d))).astype(dtype)
    x[0, 7], x[1, 3], x[2, 5] = np.nan, np.inf, x[2, 4]
    small = fi.knn(x, q, 5)
    monkeypatch.setattr(fdist, "KNN_EXACT_MAX_N", 0)
    gemm = fi.knn(x, q, 5)
    np.testing.assert_array_equal(small[1], gemm[1])
    assert_same_bits(small[0], gemm[0])


def test_knn_matches_torch_topk(rng, torch):
    x, q = rng.standard_normal((4, 50, 3)), rng.standard_normal((4, 20, 3))
    d, i = fi.knn(x, q, 6)
    ref = torch.cdist(torch.from_numpy(q), torch.from_numpy(x)).topk(6, largest=False)
    np.testing.assert_array_equal(i, ref.indices.numpy())
    assert_close(d, ref.values.numpy() ** 2, table=TOL_ORACLE)


# ----------------------------------------------------------------------------
# empty batches, threads
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("xs,ys", [((0, 5, 3), (0, 6, 3)), ((5, 3), (0, 6, 3)),
                                   ((2, 0, 5, 3), (6, 3)), ((0, 5, 3), (1, 6, 3))])
def test_empty_batch(xs, ys):
    x, y = np.ones(xs), np.ones(ys)
    lead = _lead(xs, ys)
    for fn in PAIRWISE:
        assert fn(x, y).shape == lead + (5, 6)
        g = np.ones(lead + (5, 6))
        gx, gy = BACKWARDS[fn](g, x, y)
        assert gx.shape == xs and gy.shape == ys
        np.testing.assert_array_equal(gx, 0)      # no element uses them: zero gradient
        np.testing.assert_array_equal(gy, 0)
    d, i = fi.knn(y, x, 2)
    assert d.shape == i.shape == lead + (5, 2)


def test_batched_results_do_not_depend_on_threads(threads, rng):
    x = _cloud(rng, (3, 70, 6), np.float32, centre=100.0)
    y = _cloud(rng, (2, 1, 90, 6), np.float32, centre=100.0)
    g = rng.standard_normal((2, 3, 70, 90)).astype(np.float32)

    def run():
        return (fi.pairwise_sqdist(x, y), fi.pairwise_l2(x), *fi.knn(y, x, 4),
                *fi.pairwise_sqdist_backward(g, x, y), *fi.pairwise_l2_backward(g, x, y))

    fi.set_num_threads(1)
    one = run()
    fi.set_num_threads(2)
    for a, b in zip(run(), one):
        assert_same_bits(a, b)


# ----------------------------------------------------------------------------
# CUDA (the simulator on CPU machines): tiny sizes
# ----------------------------------------------------------------------------

@pytest.mark.cudasim
def test_cuda_batched_forward_knn_backward(cuda, rng):
    x = rng.standard_normal((2, 1, 5, 3)).astype(np.float32)
    y = rng.standard_normal((3, 4, 3)).astype(np.float32)
    g = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    dx, dy, dg = cuda.to_device(x), cuda.to_device(y), cuda.to_device(g)
    for fn in PAIRWISE:
        got = fn(dx, dy)
        assert fi.last_kernel().key[1] == "cuda"
        assert_close(got.copy_to_host(), fn(x, y), table=TOL_ORACLE)
        gx, gy = BACKWARDS[fn](dg, dx, dy)
        ref_x, ref_y = BACKWARDS[fn](g, x, y)
        assert gx.shape == x.shape and gy.shape == y.shape
        assert_close(gx.copy_to_host(), ref_x, table=TOL_ORACLE)
        assert_close(gy.copy_to_host(), ref_y, table=TOL_ORACLE)
    s = fi.pairwise_sqdist(dy)
    assert_close(s.copy_to_host(), fi.pairwise_sqdist(y), table=TOL_ORACLE)
    d, i = fi.knn(dy, dx, 2)
    ref_d, ref_i = fi.knn(y, x, 2)
    np.testing.assert_array_equal(i.copy_to_host(), ref_i)
    assert_close(d.copy_to_host(), ref_d, table=TOL_ORACLE)


@pytest.mark.cudasim
def test_cuda_batch_elements_are_bitwise_the_per_element_calls(cuda, rng):
    x = rng.standard_normal((3, 4, 2))
    y = rng.standard_normal((3, 5, 2))
    got = fi.pairwise_l2(cuda.to_device(x), cuda.to_device(y)).copy_to_host()
    for b in range(3):
        one = fi.pairwise_l2(cuda.to_device(x[b]), cuda.to_device(y[b])).copy_to_host()
        assert_same_bits(got[b], one)


@pytest.mark.cudasim
def test_cuda_empty_batch(cuda):
    x, y = np.ones((4, 2)), np.ones((0, 3, 2))
    out = fi.pairwise_sqdist(cuda.to_device(x), cuda.to_device(y))
    assert tuple(out.shape) == (0, 4, 3)
    gx, gy = fi.pairwise_sqdist_backward(cuda.to_device(np.ones((0, 4, 3))),
                                         cuda.to_device(x), cuda.to_device(y))
    np.testing.assert_array_equal(gx.copy_to_host(), 0)
    assert tuple(gy.shape) == (0, 3, 2)


# ----------------------------------------------------------------------------
# the chamfer example
# ----------------------------------------------------------------------------

def test_chamfer_example_runs_and_checks_itself(torch, capsys):
    import pathlib
    import runpy
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "chamfer.py"
    example = runpy.run_path(str(path))
    example["main"](batch=2, p=60, r=45, seed=3)        # asserts against torch inside
    assert "equal torch.cdist" in capsys.readouterr().out


def test_chamfer_example_takes_its_sizes_and_help():
    """`--help` ran the whole example instead of printing its usage."""
    import pathlib
    import subprocess
    import sys
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "chamfer.py"
    done = subprocess.run([sys.executable, str(path), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "usage: chamfer.py" in done.stdout
    assert "--batch" in done.stdout and "equal torch.cdist" not in done.stdout


def test_chamfer_example_takes_clouds_smaller_than_its_k(torch, capsys):
    """knn_points(..., K=4) failed on clouds of fewer than 4 points (a raw knn error)."""
    import pathlib
    import runpy
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "chamfer.py"
    runpy.run_path(str(path))["main"](batch=1, p=3, r=2, seed=0)
    assert "K=2" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--r", "--p", "--batch"])
def test_chamfer_example_refuses_empty_clouds(flag):
    import pathlib
    import subprocess
    import sys
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "chamfer.py"
    done = subprocess.run([sys.executable, str(path), flag, "0"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "must be at least 1; got 0" in done.stderr


@pytest.mark.parametrize("x_shape, q_shape", [((4000, 32), (100, 3, 32)),
                                              ((2, 1, 4000, 32), (2, 50, 3, 32)),
                                              ((1, 4000, 32), (100, 3, 32))])
def test_knn_of_query_sets_sharing_a_database_searches_it_once(x_shape, q_shape):
    """Each batch element centred its own copy of a shared (broadcast) database: 200 query
    sets against a 20k x 64 database took 1 GB and 4.7 s (a loop of calls: 0.9 s). The
    sets sharing a database are searched together; each element still equals its own
    call, ties and non-finite values included."""
    import tracemalloc
    rng = np.random.default_rng(8)
    x = rng.integers(0, 4, x_shape).astype(np.float32)      # many exact ties
    q = rng.integers(0, 4, q_shape).astype(np.float32)
    x.reshape(-1, 32)[7, 3] = np.nan
    q.reshape(-1, 32)[5, 0] = np.inf
    tracemalloc.start()
    d, i = fi.knn(x, q, 6)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * x.nbytes + 4 * d.nbytes
    xb = np.broadcast_to(x, np.broadcast_shapes(x.shape[:-2], q.shape[:-2]) + x.shape[-2:])
    for b in np.ndindex(*d.shape[:-2]):
        d1, i1 = fi.knn(xb[b], q[b if len(b) == q.ndim - 2 else b[-(q.ndim - 2):]], 6)
        np.testing.assert_array_equal(d1, d[b])
        np.testing.assert_array_equal(i1, i[b])
