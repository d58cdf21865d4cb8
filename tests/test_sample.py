"""affine_grid, grid_sample and their backwards: CPU kernels and the CUDA kernels
under numba's simulator, against PyTorch (the oracle) and finite differences."""
from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastinterp as fi
from conftest import TOL, TOL_ORACLE, assert_close

MODES = ("bilinear", "nearest", "bicubic")
PADS = ("zeros", "border", "reflection")
COMBOS = list(itertools.product(MODES, PADS, (False, True)))


def rotation_theta(n, rng, dtype=np.float64, angle=0.3, shift=0.2, scale=0.15):
    a = rng.uniform(-angle, angle, n)
    s = 1 + rng.uniform(-scale, scale, n)
    t = rng.uniform(-shift, shift, (n, 2))
    th = np.empty((n, 2, 3))
    th[:, 0] = np.stack([s * np.cos(a), -s * np.sin(a), t[:, 0]], 1)
    th[:, 1] = np.stack([s * np.sin(a), s * np.cos(a), t[:, 1]], 1)
    return th.astype(dtype)


def torch_grads(torch, x, grid, go, mode, pad, align):
    F = torch.nn.functional
    tx = torch.from_numpy(x).requires_grad_()
    tg = torch.from_numpy(grid).requires_grad_()
    out = F.grid_sample(tx, tg, mode=mode, padding_mode=pad, align_corners=align)
    out.backward(torch.from_numpy(go))
    return out.detach().numpy(), tx.grad.numpy(), tg.grad.numpy()


def scale_of(*arrays):
    return max(1.0, *(float(np.max(np.abs(a))) if a.size else 0.0 for a in arrays))


# --------------------------------------------------------------------------- smoke / hand-computed

def test_smoke_identity_grid_reproduces_input(rng):
    x = rng.standard_normal((2, 3, 5, 7))
    th = np.tile(np.array([[1.0, 0, 0], [0, 1, 0]]), (2, 1, 1))
    for align in (False, True):
        grid = fi.affine_grid(th, x.shape, align_corners=align)
        for mode in MODES:
            out = fi.grid_sample(x, grid, mode=mode, align_corners=align)
            assert_close(out, x, scale=10)


def test_hand_computed_bilinear_and_padding():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    # align_corners=True: pixel centres at -1 and 1; the centre is the mean
    g = np.array([[[[0.0, 0.0], [1.0, -1.0], [0.5, 0.0], [3.0, 0.0]]]])
    out = fi.grid_sample(x, g, align_corners=True)
    np.testing.assert_allclose(out[0, 0, 0], [2.5, 2.0, 2.75, 0.0])
    out = fi.grid_sample(x, g, padding_mode="border", align_corners=True)
    np.testing.assert_allclose(out[0, 0, 0], [2.5, 2.0, 2.75, 3.0])
    # align_corners=False: x = 3 -> pixel 3.5, mirrored at 1.5 (edge) -> -0.5 -> clip 0
    out = fi.grid_sample(x, g, padding_mode="reflection", align_corners=False)
    np.testing.assert_allclose(out[0, 0, 0, 3], 2.0)
    out = fi.grid_sample(x, g, mode="nearest", align_corners=True)
    np.testing.assert_allclose(out[0, 0, 0, :3], [1.0, 2.0, 2.0])  # pixel 0.5 rounds to 0 (ties to even)


def test_hand_computed_backward():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    g = np.array([[[[0.5, -0.5]]]])   # align True: pixel (0.75, 0.25)
    gi, gg = fi.grid_sample_backward(np.ones((1, 1, 1, 1)), x, g, align_corners=True)
    np.testing.assert_allclose(gi[0, 0], [[0.75 * 0.25, 0.75 * 0.75], [0.25 * 0.25, 0.25 * 0.75]])
    # d out / d px = (2 - 1) * 0.75 + (4 - 3) * 0.25 = 1; times d px / d g = 0.5
    np.testing.assert_allclose(gg[0, 0, 0], [0.5, 1.0])


def test_affine_grid_hand_computed():
    th = np.array([[[0.0, 1.0, 0.5], [2.0, 0.0, 0.0]]])
    grid = fi.affine_grid(th, (1, 4, 2, 3), align_corners=False)
    xs = np.array([-2 / 3, 0.0, 2 / 3])
    ys = np.array([-0.5, 0.5])
    np.testing.assert_allclose(grid[0, :, :, 0], ys[:, None] + 0.5 + 0 * xs, atol=1e-15)
    np.testing.assert_allclose(grid[0, :, :, 1], 2 * xs[None, :] + 0 * ys[:, None], atol=1e-15)


# --------------------------------------------------------------------------- exceptions

@pytest.mark.parametrize("call, exc, text", [
    (lambda x, g: fi.grid_sample(x[0], g), ValueError, "input must have shape (N, C, H, W)"),
    (lambda x, g: fi.grid_sample(x[None, None], g), ValueError,
     "input must have shape (N, C, H, W), (H, W), a volume (N, C, D, H, W)"),
    (lambda x, g: fi.grid_sample(x, g[..., :1]), ValueError, "grid must have shape (N, H_out, W_out, 2)"),
    (lambda x, g: fi.grid_sample(x, g[0]), ValueError, "grid must have shape"),
    (lambda x, g: fi.grid_sample(x, g[:1]), ValueError, "batch size N = 2"),
    (lambda x, g: fi.grid_sample(x.astype(np.int32), g), TypeError, "float32 or float64"),
    (lambda x, g: fi.grid_sample(x.astype(np.float16), g), TypeError, "float16"),
    (lambda x, g: fi.grid_sample(x.astype(np.float32), g), TypeError, "same dtype"),
    (lambda x, g: fi.grid_sample(x, g, mode="linear"), ValueError, "mode must be one of"),
    (lambda x, g: fi.grid_sample(x, g, padding_mode="mirror"), ValueError, "padding_mode must be"),
    (lambda x, g: fi.grid_sample(x, g, align_corners=1), TypeError, "align_corners must be a bool"),
    (lambda x, g: fi.grid_sample(x, g, out=np.empty((2, 3, 4, 5))), ValueError, "out must have shape"),
    (lambda x, g: fi.grid_sample(x[:, :, :0], g), ValueError, "H >= 1"),
    (lambda x, g: fi.grid_sample_backward(np.ones((2, 3, 4, 5)), x, g), ValueError,
     "grad_output must have grid_sample's output shape"),
    (lambda x, g: fi.grid_sample_backward(np.ones((2, 3, 4, 4)), x, g, mode="cubic"), ValueError,
     "mode must be one of"),
    (lambda x, g: fi.affine_grid(np.zeros((2, 3, 3)), (2, 1, 4, 4)), ValueError,
     "theta must have shape (N, 2, 3)"),
    (lambda x, g: fi.affine_grid(np.zeros((2, 2, 3)), (3, 1, 4, 4)), ValueError, "N = size[0] = 3"),
    (lambda x, g: fi.affine_grid(np.zeros((2, 2, 3)), (2, 1, 4)), ValueError, "size must be (N, C, H, W)"),
    (lambda x, g: fi.affine_grid(np.zeros((2, 2, 3)), (2, 1, -1, 4)), ValueError, ">= 0"),
    (lambda x, g: fi.affine_grid(np.zeros((2, 2, 3)), "abcd"), TypeError,
     "affine_grid: size must be a sequence (N, C, H, W) or (N, C, D, H, W) of ints; got 'abcd'."),
    (lambda x, g: fi.affine_grid(np.zeros((2, 2, 3)), (2, 1, "4", 4)), TypeError,
     "affine_grid: size must be a sequence"),
    (lambda x, g: fi.affine_grid(np.zeros((2, 2, 3)), (2, 1, 4.0, 4)), TypeError,
     "affine_grid: size must be a sequence"),
    (lambda x, g: fi.affine_grid(np.zeros((2, 2, 3)), None), TypeError,
     "affine_grid: size must be a sequence"),
    (lambda x, g: fi.affine_grid(np.zeros((2, 2, 3)), (2, 1, 2**70, 4)), ValueError,
     "affine_grid: size must have entries >= 0 and <= 2**31 - 1; got (2, 1, 1180591620717411303424, 4)."),
    (lambda x, g: fi.affine_grid_backward(np.zeros((2, 4, 4, 2)), (2, 1, True, 4)), TypeError,
     "affine_grid_backward: size must be a sequence"),
    (lambda x, g: fi.affine_grid(np.zeros((2, 2, 3), np.int64), (2, 1, 4, 4)), TypeError, "float32"),
    (lambda x, g: fi.affine_grid_backward(np.zeros((2, 4, 4, 2)), (2, 1, 4, 5)), ValueError,
     "grad_grid must have shape"),
    (lambda x, g: fi.grid_sample(x, g, channels_last="yes"), TypeError, "channels_last"),
])
def test_exceptions(call, exc, text, rng):
    x = rng.standard_normal((2, 3, 5, 6))
    g = rng.uniform(-1, 1, (2, 4, 4, 2))
    with pytest.raises(exc) as info:
        call(x, g)
    assert text in str(info.value)


def test_out_untouched_on_error(rng):
    x = rng.standard_normal((2, 3, 5, 6))
    out = np.full((2, 3, 4, 4), 7.0)
    with pytest.raises(ValueError):
        fi.grid_sample(x, rng.uniform(-1, 1, (2, 4, 4, 2)), mode="area", out=out)
    assert (out == 7.0).all()


# --------------------------------------------------------------------------- shapes / types

@pytest.mark.parametrize("shape, gshape", [((1, 1, 1, 1), (1, 1, 1, 2)), ((3, 2, 1, 5), (3, 7, 1, 2)),
                                           ((2, 4, 6, 1), (2, 1, 9, 2)), ((2, 0, 3, 3), (2, 2, 2, 2))])
def test_shapes(shape, gshape, rng):
    x = rng.standard_normal(shape)
    g = rng.uniform(-1.2, 1.2, gshape)
    out = fi.grid_sample(x, g)
    assert out.shape == (shape[0], shape[1]) + gshape[1:3]
    gi, gg = fi.grid_sample_backward(np.ones(out.shape), x, g)
    assert gi.shape == x.shape and gg.shape == g.shape
    assert gi.flags.c_contiguous and gi.flags.writeable and gi.dtype == x.dtype
    gi, gg = fi.grid_sample_backward(np.ones(out.shape), x, g, needs_input_grad=False)
    assert gi is None and gg.shape == g.shape
    gi, gg = fi.grid_sample_backward(np.ones(out.shape), x, g, needs_grid_grad=False)
    assert gg is None and gi.shape == x.shape


def test_torch_tensors_round_trip_and_registry(torch, rng):
    x = torch.from_numpy(rng.standard_normal((2, 3, 5, 6)).astype(np.float32))
    g = torch.from_numpy(rng.uniform(-1, 1, (2, 4, 4, 2)).astype(np.float32))
    out = fi.grid_sample(x, g)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert fi.last_kernel().key == ("grid_sample", "cpu", "float32")
    ref = torch.nn.functional.grid_sample(x, g, align_corners=False)
    assert_close(out.numpy(), ref.numpy(), table=TOL_ORACLE)
    # a channels_last torch tensor (NCHW shape, NHWC strides) is copied once and works
    xc = x.contiguous(memory_format=torch.channels_last)
    assert_close(fi.grid_sample(xc, g).numpy(), ref.numpy(), table=TOL_ORACLE)


def test_out_argument(rng):
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    g = rng.uniform(-1, 1, (2, 4, 4, 2)).astype(np.float32)
    out = np.empty((2, 3, 4, 4), np.float32)
    res = fi.grid_sample(x, g, out=out)
    assert res is out
    np.testing.assert_array_equal(out, fi.grid_sample(x, g))


# --------------------------------------------------------------------------- values vs torch

@st.composite
def cases(draw):
    mode = draw(st.sampled_from(MODES))
    pad = draw(st.sampled_from(PADS))
    align = draw(st.booleans())
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    ho, wo = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    kind = draw(st.sampled_from(["affine", "uniform", "far"]))
    seed = draw(st.integers(0, 2**31 - 1))
    return mode, pad, align, dtype, (n, c, h, w), (ho, wo), kind, seed


def make_grid(kind, n, ho, wo, dtype, rng, align):
    if kind == "affine":
        return fi.affine_grid(rotation_theta(n, rng, dtype), (n, 1, ho, wo), align_corners=align)
    spread = 1.5 if kind == "uniform" else 40.0
    return rng.uniform(-spread, spread, (n, ho, wo, 2)).astype(dtype)


@settings(max_examples=120, deadline=None)
@given(cases())
def test_forward_and_backward_match_torch(torch, case):
    mode, pad, align, dtype, shape, (ho, wo), kind, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    grid = make_grid(kind, shape[0], ho, wo, dtype, rng, align)
    go = rng.standard_normal((shape[0], shape[1], ho, wo)).astype(dtype)
    ref, ref_gi, ref_gg = torch_grads(torch, x, grid, go, mode, pad, align)
    out = fi.grid_sample(x, grid, mode, pad, align)
    gi, gg = fi.grid_sample_backward(go, x, grid, mode, pad, align)
    # f64 ~1e-10, f32 ~1e-5 relative to the magnitudes involved
    tol = 1e-10 if dtype == np.float64 else 2e-5
    s = scale_of(ref)
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * s)
    np.testing.assert_allclose(gi, ref_gi, rtol=tol, atol=tol * scale_of(ref_gi))
    np.testing.assert_allclose(gg, ref_gg, rtol=tol, atol=tol * scale_of(ref_gg, x) * max(shape[1:]))


@pytest.mark.parametrize("mode, pad, align", COMBOS)
def test_non_finite_and_far_points_forward_match_torch(torch, mode, pad, align, rng):
    vals = [np.nan, np.inf, -np.inf, 1e30, -1e30, 1e10, -3.7e5, 2.5e4]
    g = np.array([[[[v, 0.3] for v in vals] + [[0.2, v] for v in vals]]])
    x = rng.standard_normal((1, 2, 5, 6))
    for dtype in (np.float32, np.float64):
        xx, gg = x.astype(dtype), g.astype(dtype)
        out = fi.grid_sample(xx, gg, mode, pad, align)
        ref = torch.nn.functional.grid_sample(torch.from_numpy(xx), torch.from_numpy(gg),
                                              mode, pad, align).numpy()
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.filterwarnings("ignore:Since version 1.3.0")   # torch, unit-size grids
@pytest.mark.parametrize("size", [(3, 2, 7, 10), (3, 1, 1, 5), (3, 2, 6, 1)])
@pytest.mark.parametrize("align", [False, True])
def test_affine_grid_and_backward_match_torch(torch, align, size, rng):
    for dtype in (np.float32, np.float64):
        th = rotation_theta(3, rng, dtype)
        ref = torch.nn.functional.affine_grid(torch.from_numpy(th).requires_grad_(), size,
                                              align_corners=align)
        assert_close(fi.affine_grid(th, size, align_corners=align), ref.detach().numpy(),
                     table=TOL_ORACLE)
        g = rng.standard_normal((3,) + size[2:] + (2,)).astype(dtype)
        tth = torch.from_numpy(th).requires_grad_()
        torch.nn.functional.affine_grid(tth, size, align_corners=align).backward(torch.from_numpy(g))
        assert_close(fi.affine_grid_backward(g, size, align_corners=align), tth.grad.numpy(),
                     table=TOL_ORACLE, scale=10)


# --------------------------------------------------------------------------- finite differences

def nudged_grid(rng, n, ho, wo, h, w, align, far=False):
    """Random points whose pixel coordinates keep >= 0.05 away from integers
    (and from the clip/reflection borders), so the sampled function is smooth there."""
    def axis(size, count):
        px = rng.integers(-3 if far else 0, size + (3 if far else 0), count) + rng.uniform(0.1, 0.9, count)
        if align:
            return px * 2 / max(size - 1, 1) - 1
        return (2 * px + 1) / size - 1
    gx = axis(w, n * ho * wo).reshape(n, ho, wo)
    gy = axis(h, n * ho * wo).reshape(n, ho, wo)
    return np.stack([gx, gy], -1)


@pytest.mark.parametrize("mode, pad, align", [c for c in COMBOS if c[0] != "nearest"])
def test_finite_differences(mode, pad, align, rng):
    n, c, h, w, ho, wo = 2, 2, 5, 6, 3, 4
    x = rng.standard_normal((n, c, h, w))
    grid = nudged_grid(rng, n, ho, wo, h, w, align, far=(pad != "border"))
    go = rng.standard_normal((n, c, ho, wo))
    gi, gg = fi.grid_sample_backward(go, x, grid, mode, pad, align)
    loss = lambda xx, gr: float(np.sum(fi.grid_sample(xx, gr, mode, pad, align) * go))
    eps = 1e-6
    # grad_input: the sample is linear in x, so a central difference is exact up to rounding
    num_gi = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[idx] = eps
        num_gi[idx] = (loss(x + d, grid) - loss(x - d, grid)) / (2 * eps)
    np.testing.assert_allclose(gi, num_gi, rtol=1e-6, atol=1e-7)
    num_gg = np.zeros_like(grid)
    for idx in np.ndindex(grid.shape):
        d = np.zeros_like(grid)
        d[idx] = eps
        num_gg[idx] = (loss(x, grid + d) - loss(x, grid - d)) / (2 * eps)
    np.testing.assert_allclose(gg, num_gg, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("align", [False, True])
def test_finite_differences_theta(align, rng):
    n, c, h, w = 2, 2, 6, 7
    x = rng.standard_normal((n, c, h, w))
    th = rotation_theta(n, rng) + rng.uniform(-0.01, 0.01, (n, 2, 3))
    size = (n, c, 5, 4)
    go = rng.standard_normal((n, c, 5, 4))

    def loss(t):
        return float(np.sum(fi.grid_sample(x, fi.affine_grid(t, size, align_corners=align),
                                           align_corners=align) * go))
    grid = fi.affine_grid(th, size, align_corners=align)
    _, gg = fi.grid_sample_backward(go, x, grid, align_corners=align, needs_input_grad=False)
    gth = fi.affine_grid_backward(gg, size, align_corners=align)
    eps = 1e-7
    num = np.zeros_like(th)
    for idx in np.ndindex(th.shape):
        d = np.zeros_like(th)
        d[idx] = eps
        num[idx] = (loss(th + d) - loss(th - d)) / (2 * eps)
    np.testing.assert_allclose(gth, num, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- threads, NHWC

@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_bit_identical_for_any_thread_count(threads, n, mode, channels_last, rng):
    # 8 x 64 x 100 outputs per image: enough work for threads_for() to use 3 threads
    x = rng.standard_normal((n, 8, 40, 50)).astype(np.float32)
    grid = fi.affine_grid(rotation_theta(n, rng, np.float32, angle=0.6), (n, 8, 64, 100))
    grid[:, ::7] *= 1.6                                   # some points outside
    go = rng.standard_normal((n, 8, 64, 100)).astype(np.float32)
    if channels_last:
        x, go = (np.ascontiguousarray(a.transpose(0, 2, 3, 1)) for a in (x, go))
    res = []
    for t in (1, 2, 3):
        threads.set_num_threads(t)
        out = fi.grid_sample(x, grid, mode=mode, padding_mode="reflection",
                             channels_last=channels_last)
        assert fi._config.threads_for(go.size, 16384) == t
        gi, gg = fi.grid_sample_backward(go, x, grid, mode=mode, padding_mode="reflection",
                                         channels_last=channels_last)
        res.append((out, gi, gg))
    for other in res[1:]:
        for a, b in zip(res[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("Ho, Wo", [(25, 17), (37, 61), (1, 3000)])   # 1 and several plan tiles
def test_backward_kernel_paths_agree_bitwise(Ho, Wo, rng):
    """The per-image and the split (channel blocks + grid tiles) backward paths."""
    from fastinterp._cpu import sample as cpu
    N, C, H, W = 1, 6, 20, 30
    x = rng.standard_normal((N, C, H, W))
    grid = fi.affine_grid(rotation_theta(N, rng, angle=0.7), (N, C, Ho, Wo)) * 1.3
    go = rng.standard_normal((N, C, Ho, Wo))
    outs = []
    for nthreads in (1, 2, 4):
        gi, gg = np.empty_like(x), np.empty_like(grid)
        cpu.grid_sample_bwd(gi.reshape(-1), gg.reshape(-1), go.reshape(-1), x.reshape(-1),
                            grid.reshape(-1), N, C, H, W, Ho, Wo, False, 2, 2, False,
                            True, True, nthreads)
        outs.append((gi, gg))
    for gi, gg in outs[1:]:
        np.testing.assert_array_equal(gi, outs[0][0])
        np.testing.assert_array_equal(gg, outs[0][1])


@pytest.mark.parametrize("mode", MODES)
def test_channels_last_matches_nchw(mode, rng):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    grid = rng.uniform(-1.3, 1.3, (2, 5, 6, 2)).astype(np.float32)
    go = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    gol = np.ascontiguousarray(go.transpose(0, 2, 3, 1))
    out = fi.grid_sample(xl, grid, mode, "border", channels_last=True)
    # the NHWC forward is vectorised over channels: equal up to rounding
    assert_close(out.transpose(0, 3, 1, 2), fi.grid_sample(x, grid, mode, "border"))
    gi_l, gg_l = fi.grid_sample_backward(gol, xl, grid, mode, "border", channels_last=True)
    gi, gg = fi.grid_sample_backward(go, x, grid, mode, "border")
    np.testing.assert_array_equal(gi_l.transpose(0, 3, 1, 2), gi)
    np.testing.assert_array_equal(gg_l, gg)


# --------------------------------------------------------------------------- CUDA (simulator)

def to_dev(cuda, *arrays):
    return [cuda.to_device(np.ascontiguousarray(a)) for a in arrays]


@pytest.mark.cudasim
@pytest.mark.parametrize("mode, pad, align", [("bilinear", "zeros", False), ("bilinear", "reflection", True),
                                              ("nearest", "border", False), ("bicubic", "border", True),
                                              ("bicubic", "reflection", False)])
def test_cuda_matches_cpu(cuda, mode, pad, align, rng):
    n, c, h, w, ho, wo = 2, 2, 5, 6, 3, 4
    x = rng.standard_normal((n, c, h, w))
    grid = rng.uniform(-1.4, 1.4, (n, ho, wo, 2))
    grid[0, 0, 0, 0] = np.nan
    go = rng.standard_normal((n, c, ho, wo))
    dx, dg, dgo = to_dev(cuda, x, grid, go)
    out = fi.grid_sample(dx, dg, mode, pad, align)
    assert fi.last_kernel().key == ("grid_sample", "cuda", "float64")
    np.testing.assert_allclose(out.copy_to_host(), fi.grid_sample(x, grid, mode, pad, align),
                               rtol=1e-12, atol=1e-12, equal_nan=True)
    ref_gi, ref_gg = fi.grid_sample_backward(go, x, grid, mode, pad, align)
    nan_scatter = mode == "bicubic" and pad != "zeros"  # NaN taps clipped into the image
    if nan_scatter:
        with pytest.raises(ValueError, match="deterministic=True needs finite"):
            fi.grid_sample_backward(dgo, dx, dg, mode, pad, align, deterministic=True)
    for det in ((False,) if nan_scatter else (True, False)):
        gi, gg = fi.grid_sample_backward(dgo, dx, dg, mode, pad, align, deterministic=det)
        np.testing.assert_allclose(gi.copy_to_host(), ref_gi, rtol=1e-9, atol=1e-9, equal_nan=True)
        np.testing.assert_allclose(gg.copy_to_host(), ref_gg, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.cudasim
@pytest.mark.parametrize("dtype, scale", [(np.float64, 1e-300), (np.float64, 1e-310),
                                          (np.float32, 1e-25), (np.float32, 1e-40),
                                          (np.float64, 1e300), (np.float64, 1e307)])
def test_cuda_deterministic_backward_of_tiny_or_huge_gradients(cuda, rng, dtype, scale):
    """The fixed-point scale 2**k follows max|grad_output| to either end of the dtype's
    range (k beyond 1023 overflowed a float64 on the host; in float32 the scatter must
    scale in float64; the bound max|grad_output| * H_out * W_out may exceed float64:
    it was refused as "not finite")."""
    x = rng.standard_normal((1, 2, 3, 3)).astype(dtype)
    grid = rng.uniform(-0.9, 0.9, (1, 4, 4, 2)).astype(dtype)
    go = (rng.standard_normal((1, 2, 4, 4)) * scale).astype(dtype)
    got = fi.grid_sample_backward(*to_dev(cuda, go, x, grid), deterministic=True)[0]
    want = fi.grid_sample_backward(go, x, grid)[0]
    tiny = np.finfo(dtype).smallest_subnormal * 4
    np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-5, atol=tiny)


@pytest.mark.cudasim
def test_cuda_deterministic_backward_is_bit_identical(cuda, rng):
    n, c, h, w, ho, wo = 1, 2, 3, 3, 6, 6
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    grid = rng.uniform(-0.9, 0.9, (n, ho, wo, 2)).astype(np.float32)   # many points per pixel
    go = rng.standard_normal((n, c, ho, wo)).astype(np.float32)
    dx, dg, dgo = to_dev(cuda, x, grid, go)
    a = fi.grid_sample_backward(dgo, dx, dg, deterministic=True)[0].copy_to_host()
    b = fi.grid_sample_backward(dgo, dx, dg, deterministic=True)[0].copy_to_host()
    np.testing.assert_array_equal(a, b)
    ref = fi.grid_sample_backward(go.astype(np.float64), x.astype(np.float64),
                                  grid.astype(np.float64))[0]
    np.testing.assert_allclose(a, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.cudasim
def test_cuda_affine_grid_and_errors(cuda, rng):
    th = rotation_theta(2, rng)
    for align in (False, True):
        (dth,) = to_dev(cuda, th)
        grid = fi.affine_grid(dth, (2, 1, 3, 5), align_corners=align)
        np.testing.assert_allclose(grid.copy_to_host(), fi.affine_grid(th, (2, 1, 3, 5), align_corners=align),
                                   rtol=1e-13, atol=1e-14)
        g = rng.standard_normal((2, 3, 5, 2))
        (dg,) = to_dev(cuda, g)
        np.testing.assert_allclose(fi.affine_grid_backward(dg, (2, 1, 3, 5), align_corners=align).copy_to_host(),
                                   fi.affine_grid_backward(g, (2, 1, 3, 5), align_corners=align),
                                   rtol=1e-12, atol=1e-13)
    x = rng.standard_normal((1, 1, 3, 3))
    dx, dgrid = to_dev(cuda, x, np.zeros((1, 2, 2, 2)))
    with pytest.raises(ValueError, match="for CUDA arrays"):
        fi.grid_sample(dx, dgrid, layout="NHWC")
    with pytest.raises(fi.BackendMismatchError):
        fi.grid_sample(dx, np.zeros((1, 2, 2, 2)))


# --------------------------------------------------------------------------- AffineAlign

def blob_image(rng, h=48, w=56):
    yy, xx = np.mgrid[-1:1:h * 1j, -1:1:w * 1j]
    img = np.zeros((h, w))
    for _ in range(5):
        c = rng.uniform(-0.6, 0.6, 2)
        img += rng.uniform(0.5, 1) * np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / rng.uniform(0.05, 0.2))
    return img


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_affine_align_recovers_rotation_and_translation(fraction, rng, capsys):
    from fastinterp.models import AffineAlign
    img = blob_image(rng)
    a = 0.1
    true = np.array([[np.cos(a), -np.sin(a), 0.07], [np.sin(a), np.cos(a), -0.04]])
    fixed = fi.grid_sample(img[None, None], fi.affine_grid(true[None], (1, 1) + img.shape),
                           padding_mode="border")[0]
    fit = AffineAlign(sample_fraction=fraction, random_state=3, verbose=True, log_every=20).fit(img, fixed)
    assert np.abs(fit.theta_ - true).max() < 1e-2
    assert fit.loss_history_[-1] < 1e-3 * fit.loss_history_[0]
    assert "AffineAlign step" in capsys.readouterr().out
    np.testing.assert_allclose(fit.transform(img), fixed.reshape(img.shape), atol=0.05 * np.abs(fixed).max())
    again = AffineAlign(sample_fraction=fraction, random_state=3, verbose=False).fit(img, fixed)
    np.testing.assert_array_equal(again.theta_, fit.theta_)          # seeded: reproducible
    assert capsys.readouterr().out == ""


def test_affine_align_errors():
    from fastinterp.models import AffineAlign
    with pytest.raises(ValueError, match="sample_fraction"):
        AffineAlign(sample_fraction=0)
    with pytest.raises(ValueError, match="momentum"):
        AffineAlign(momentum=1.0)
    with pytest.raises(ValueError, match="moving must have shape"):
        AffineAlign().fit(np.zeros((1, 2, 3, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="same channel count"):
        AffineAlign().fit(np.zeros((2, 3, 4)), np.zeros((3, 3, 4)))
    with pytest.raises(ValueError, match="theta0 must have shape"):
        AffineAlign().fit(np.zeros((3, 4)), np.zeros((3, 4)), theta0=np.eye(3))


# --------------------------------------------------------------------------- memory, hostile input

def run_isolated(code, timeout=120):
    """Run ``code`` in a fresh interpreter (cases that could crash it); return it."""
    import subprocess
    import sys
    import textwrap
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


_LIMIT_PRELUDE = """
    import resource, numpy as np, fastinterp as fi
    from fastinterp._cpu import sample as cpu
    def vm_bytes():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize"))
    def limit(extra):
        resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + extra, resource.RLIM_INFINITY))
    """


@pytest.mark.no_sanitizer
@pytest.mark.parametrize("nthreads", [1, 2])
def test_many_sample_points_fit_in_a_small_memory_limit(nthreads):
    """The per-thread plan is sized by a fixed tile of output pixels, not by the
    output: 4M sample points (24 MB of grid and output, ~700 MB of plan if it
    scaled with the output) run under a limit of 96 MB above what the arrays use."""
    proc = run_isolated(_LIMIT_PRELUDE + f"""
    fi.set_num_threads({nthreads})
    P = 4_000_000
    x = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)
    grid = np.linspace(-1.1, 1.1, 2 * P, dtype=np.float32).reshape(1, 1, P, 2)
    go = np.ones((1, 1, 1, P), np.float32)
    small = grid[:, :, :4096]
    fi.grid_sample(x, small); fi.grid_sample_backward(go[..., :4096], x, small)  # start threads
    out = np.empty((1, 1, 1, P), np.float32)
    gi, gg = np.empty_like(x), np.empty_like(grid)
    limit(96 << 20)
    cpu.grid_sample_fwd(out.reshape(-1), x.reshape(-1), grid.reshape(-1), 1, 1, 8, 8, 1, P,
                        False, 1, 1, False, {nthreads})
    cpu.grid_sample_bwd(gi.reshape(-1), gg.reshape(-1), go.reshape(-1), x.reshape(-1),
                        grid.reshape(-1), 1, 1, 8, 8, 1, P, False, 1, 1, False, True, True,
                        {nthreads})
    ref = fi.grid_sample(x, grid[:, :, -5:], padding_mode="border")
    assert np.array_equal(out[..., -5:], ref), (out[..., -5:], ref)
    print("ok")
    """)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.no_sanitizer
@pytest.mark.parametrize("which", ["fwd", "bwd"])
def test_failed_plan_allocation_raises_memory_error_and_writes_nothing(which):
    proc = run_isolated(_LIMIT_PRELUDE + f"""
    fi.set_num_threads(2)
    x = np.ones((2, 3, 8, 8))
    grid = np.zeros((2, 64, 64, 2))
    go = np.ones((2, 3, 64, 64))
    fi.grid_sample(x, grid); fi.grid_sample_backward(go, x, grid)
    out, gi, gg = np.full(go.shape, 7.0), np.full(x.shape, 7.0), np.full(grid.shape, 7.0)
    limit(0)
    # 16 threads' plan tables (several MB) cannot come from memory the warm-up calls freed;
    # the tables are allocated before any thread starts
    try:
        if "{which}" == "fwd":
            cpu.grid_sample_fwd(out.reshape(-1), x.reshape(-1), grid.reshape(-1), 2, 3, 8, 8,
                                64, 64, False, 1, 0, False, 16)
        else:
            cpu.grid_sample_bwd(gi.reshape(-1), gg.reshape(-1), go.reshape(-1), x.reshape(-1),
                                grid.reshape(-1), 2, 3, 8, 8, 64, 64, False, 2, 1, False,
                                True, True, 16)
    except MemoryError as exc:
        assert "grid_sample" in str(exc), exc
        assert (out == 7).all() and (gi == 7).all() and (gg == 7).all()
        print("raised")
    """)
    assert proc.returncode == 0 and "raised" in proc.stdout, (proc.stdout, proc.stderr[-2000:])


def forward_matrix(h, w, grid, mode, pad, align):
    """The forward as a matrix A (outputs x input pixels), from basis images."""
    cols = []
    for k in range(h * w):
        e = np.zeros((1, 1, h, w), grid.dtype)
        e.reshape(-1)[k] = 1
        cols.append(fi.grid_sample(e, grid, mode, pad, align).reshape(-1))
    return np.stack(cols, 1).astype(np.float64)


HOSTILE = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e30, -1e30, 3e9, 0.37]


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("pad", ["border", "reflection"])
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_at_non_finite_points_is_the_forwards_adjoint(mode, pad, align, dtype, rng):
    """Border/reflection clip a NaN/inf coordinate into the image, so the forward reads
    pixels there: grad_input is A^T grad_output for the forward's matrix A, and the
    clipped coordinate's grid gradient is 0 (a clipped coordinate, as on the border)."""
    h, w = 4, 5
    with np.errstate(over="ignore"):
        pts = [[a, b] for a in HOSTILE for b in HOSTILE[-3:]] + [[b, a] for a in HOSTILE for b in (0.1,)]
        grid = np.array(pts, dtype).reshape(1, 1, -1, 2)
    x = rng.standard_normal((1, 1, h, w)).astype(dtype)
    go = rng.standard_normal((1, 1, 1, grid.shape[2])).astype(dtype)
    out = fi.grid_sample(x, grid, mode, pad, align)
    assert np.isfinite(out).all()
    gi, gg = fi.grid_sample_backward(go, x, grid, mode, pad, align)
    A = forward_matrix(h, w, grid, mode, pad, align)
    assert np.isfinite(A).all()
    expect = (A.T @ go.reshape(-1).astype(np.float64)).reshape(gi.shape)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gi, expect, rtol=tol, atol=tol)
    clipped = ~np.isfinite(grid) | ((np.abs(grid) > 1e3) & (pad == "border"))
    assert (gg[clipped] == 0).all()
    assert np.isfinite(gg).all()


@pytest.mark.parametrize("mode", MODES)
def test_backward_at_nan_points_with_zero_padding_reads_nothing(mode, rng):
    x = rng.standard_normal((1, 2, 5, 6))
    g = np.array([[[[np.nan, 0.1], [0.2, 0.3], [np.inf, 0.3]]]])
    gi, gg = fi.grid_sample_backward(np.ones((1, 2, 1, 3)), x, g, mode=mode)
    ref, _ = fi.grid_sample_backward(np.ones((1, 2, 1, 1)), x, g[:, :, 1:2], mode=mode)
    np.testing.assert_array_equal(gi, ref)        # the non-finite points add nothing
    if mode == "nearest":
        assert (gg == 0).all()
    else:
        assert np.isnan(gg[0, 0, 0]).any() and np.isfinite(gg[0, 0, 1]).all()


@pytest.mark.filterwarnings("ignore:Since version 1.3.0")   # torch, unit-size grids
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("align", [False, True])
def test_affine_grid_within_documented_bound_of_torch(torch, dtype, align, rng):
    """Bit-equality with torch is not possible across machines (its linspace and bmm
    depend on the CPU); the documented bound is 8 u (|t0| + |t1| + |t2|) per row."""
    u = np.finfo(dtype).eps / 2
    for _ in range(12):
        n, h, w = (int(v) for v in rng.integers(1, [4, 200, 200]))
        th = (rng.standard_normal((n, 2, 3)) * 10.0 ** rng.integers(-3, 4)).astype(dtype)
        ref = torch.nn.functional.affine_grid(torch.from_numpy(th), (n, 1, h, w),
                                              align_corners=align).numpy()
        ours = fi.affine_grid(th, (n, 1, h, w), align_corners=align)
        bound = 8 * u * np.abs(th.astype(np.float64)).sum(-1)[:, None, None, :]
        assert (np.abs(ours.astype(np.float64) - ref) <= bound).all()
        exact = fi.affine_grid(th.astype(np.float64), (n, 1, h, w), align_corners=align)
        if dtype == np.float32:
            assert (np.abs(ours - exact) <= 2 * u * np.abs(th.astype(np.float64)).sum(-1)[:, None, None, :]).all()


@pytest.mark.parametrize("size", [(0, 1, 4, 5), (2, 0, 4, 5), (2, 1, 0, 5), (2, 1, 4, 0)])
def test_affine_grid_empty_sizes(size, rng):
    th = rng.standard_normal((size[0], 2, 3))
    grid = fi.affine_grid(th, size)
    assert grid.shape == (size[0], size[2], size[3], 2)
    gt = fi.affine_grid_backward(grid, size)
    assert gt.shape == (size[0], 2, 3)
    assert (gt == 0).all() == (grid.size == 0)         # C is not used


def test_affine_grid_runs_its_registered_kernel(rng):
    th = rng.standard_normal((2, 2, 3)).astype(np.float32)
    fi.affine_grid(th, (2, 1, 3, 4))
    assert fi.last_kernel().key == ("affine_grid", "cpu", "float32")
    fi.affine_grid_backward(np.ones((2, 3, 4, 2)), (2, 1, 3, 4))
    assert fi.last_kernel().key == ("affine_grid_backward", "cpu", "float64")
    from fastinterp._cpu import sample as cpu
    with pytest.raises(ValueError, match="buffers too short"):
        cpu.affine_grid_fwd(np.empty(10), np.empty(6), 1, 2, 3, False, 1)
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        cpu.affine_grid_bwd(np.empty(6), np.empty(10), 1, -2, 3, False, 1)


def test_hostile_grids_never_crash_and_are_thread_invariant():
    """NaN, +-inf, 1e300 and other huge coordinates in every mode, padding, layout and
    dtype, forward and backward, 1 and 2 threads (in a subprocess: a crash must not
    take the test run down). Float-to-int conversions of such values would be
    undefined behaviour: the kernels convert only taps known to be inside."""
    proc = run_isolated("""
    import itertools, numpy as np, fastinterp as fi
    rng = np.random.default_rng(0)
    vals = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e38, -3e38, 2.0**62, -2.0**63, 1e18,
            1.0000001, -1.0, 0.0, -0.0, 5e-324]
    pts = np.array([[a, b] for a in vals for b in vals])
    for dtype, mode, pad, align, cl in itertools.product(
            (np.float32, np.float64), ("bilinear", "nearest", "bicubic"),
            ("zeros", "border", "reflection"), (False, True), (False, True)):
        with np.errstate(over="ignore"):
            grid = np.tile(pts.astype(dtype), (40, 1)).reshape(2, 15, -1, 2)
        x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
        if cl:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        res = []
        for t in (1, 2):
            fi.set_num_threads(t)
            out = fi.grid_sample(x, grid, mode, pad, align, channels_last=cl)
            go = np.ones_like(out)
            gi, gg = fi.grid_sample_backward(go, x, grid, mode, pad, align, channels_last=cl)
            res.append((out, gi, gg))
        for a, b in zip(*res):
            assert np.array_equal(a, b, equal_nan=True), (dtype, mode, pad, align, cl)
        out = res[0][0]
        finite = np.isfinite(grid).all(-1)
        if mode == "nearest" or (pad != "zeros" and mode == "bilinear"):
            assert np.isfinite(out).all(), (dtype, mode, pad, align, cl)
        if pad == "zeros":
            # far, and not so far that the pixel coordinate overflows to inf
            far = finite & (np.abs(grid) > 1e3).any(-1) & (np.abs(grid) < 1e30).all(-1)
            o = out if cl else out.transpose(0, 2, 3, 1)
            assert (o[far] == 0).all(), (dtype, mode, pad, align, cl)
    print("ok")
    """, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.parametrize("call, text", [
    (lambda k, b: k.grid_sample_fwd(b(8), b(4), b(2), 1, 1, 2, 2, 1, 1, False, 7, 0, False, 1),
     "invalid kernel arguments"),
    (lambda k, b: k.grid_sample_fwd(b(8), b(4), b(2), 1, 1, 2, 2, 1, 1, False, 1, -1, False, 1),
     "invalid kernel arguments"),
    (lambda k, b: k.grid_sample_fwd(b(8), b(4), b(2), 1, -1, 2, 2, 1, 1, False, 1, 0, False, 1),
     "invalid kernel arguments"),
    (lambda k, b: k.grid_sample_fwd(b(8), b(4), b(2), 1, 1, 0, 2, 1, 1, False, 1, 0, False, 1),
     "invalid kernel arguments"),
    (lambda k, b: k.grid_sample_fwd(b(8), b(3), b(2), 1, 1, 2, 2, 1, 1, False, 1, 0, False, 1),
     "inp must hold at least 4"),
    (lambda k, b: k.grid_sample_fwd(b(8), b(4), b(2), 1, 1, 2, 2, 2, 2, False, 1, 0, False, 1),
     "grid must hold at least 8"),
    (lambda k, b: k.grid_sample_fwd(b(1), b(4), b(2), 2**40, 2**40, 2, 2, 1, 1, False, 1, 0,
                                    False, 1), "must hold at least"),
    (lambda k, b: k.grid_sample_bwd(b(4), b(1), b(1), b(4), b(2), 1, 1, 2, 2, 1, 1, False, 1, 0,
                                    False, True, True, 1), "grad_grid must hold at least 2"),
])
def test_kernels_refuse_odd_arguments(call, text):
    """The kernels are reachable directly (and through the C ABI): sizes the buffers do
    not hold and out-of-range codes are refused, never read or written."""
    from fastinterp._cpu import sample as cpu
    with pytest.raises(ValueError, match=text):
        call(cpu, lambda n: np.zeros(n))


@pytest.mark.parametrize("shape, gshape", [((0, 2, 3, 4), (0, 5, 6, 2)), ((2, 3, 4, 5), (2, 0, 6, 2)),
                                           ((2, 3, 4, 5), (2, 5, 0, 2)), ((2, 0, 4, 5), (2, 5, 6, 2))])
@pytest.mark.parametrize("mode", MODES)
def test_empty_axes_give_defined_results(shape, gshape, mode, rng):
    x = rng.standard_normal(shape)
    grid = rng.uniform(-1, 1, gshape)
    out = fi.grid_sample(x, grid, mode)
    assert out.shape == (shape[0], shape[1], gshape[1], gshape[2])
    gi, gg = fi.grid_sample_backward(np.ones(out.shape), x, grid, mode)
    assert gi.shape == x.shape and gg.shape == grid.shape
    assert (gi == 0).all() and (gg == 0).all()          # nothing sampled: zero gradients


@pytest.mark.parametrize("bad", [(2, 3, 0, 5), (2, 3, 4, 0)])
def test_empty_input_image_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"grid_sample: input must have H >= 1 and W >= 1"):
        fi.grid_sample(np.zeros(bad), np.zeros((2, 3, 3, 2)))
    with pytest.raises(ValueError, match=r"grid_sample_backward: input must have H >= 1"):
        fi.grid_sample_backward(np.zeros((2, 3, 3, 3)), np.zeros(bad), np.zeros((2, 3, 3, 2)))


@pytest.mark.parametrize("mode", MODES)
def test_strided_negative_stride_and_read_only_inputs(mode, rng):
    x = rng.standard_normal((2, 3, 9, 16))[:, ::-1, :, ::2]          # negative and step strides
    grid = rng.uniform(-1.2, 1.2, (2, 6, 14, 2))[:, :, ::2]
    go = rng.standard_normal((2, 7, 6, 6)).transpose(0, 3, 2, 1)[:, :3]   # (2, 3, 6, 7), transposed
    for a in (x, grid, go):
        a.flags.writeable = False
    ref_out = fi.grid_sample(np.ascontiguousarray(x), np.ascontiguousarray(grid), mode)
    ref = fi.grid_sample_backward(np.ascontiguousarray(go), np.ascontiguousarray(x),
                                  np.ascontiguousarray(grid), mode)
    np.testing.assert_array_equal(fi.grid_sample(x, grid, mode), ref_out)
    for a, b in zip(fi.grid_sample_backward(go, x, grid, mode), ref):
        np.testing.assert_array_equal(a, b)
    th = rng.standard_normal((3, 2, 6))[:, :, ::2]
    th.flags.writeable = False
    np.testing.assert_array_equal(fi.affine_grid(th, (3, 1, 4, 5)),
                                  fi.affine_grid(np.ascontiguousarray(th), (3, 1, 4, 5)))


def test_worker_thread_results_equal_main_thread(threads, rng):
    import concurrent.futures as cf
    threads.set_num_threads(2)
    x = rng.standard_normal((1, 8, 40, 50)).astype(np.float32)
    grid = fi.affine_grid(rotation_theta(1, rng, np.float32, angle=0.6), (1, 8, 64, 100)) * 1.3
    go = rng.standard_normal((1, 8, 64, 100)).astype(np.float32)

    def run():
        return (fi.grid_sample(x, grid, "bicubic", "reflection"),
                *fi.grid_sample_backward(go, x, grid, "bilinear", "border"),
                fi.affine_grid_backward(grid, (1, 8, 64, 100)))
    main = run()
    with cf.ThreadPoolExecutor(4) as ex:
        others = [f.result() for f in [ex.submit(run) for _ in range(4)]]
    for other in others:
        for a, b in zip(main, other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.cudasim
def test_cuda_backward_of_empty_outputs_is_zero(cuda, rng):
    for xs, gs in [((2, 0, 3, 4), (2, 2, 3, 2)), ((2, 2, 3, 4), (2, 0, 3, 2)), ((0, 2, 3, 4), (0, 2, 3, 2))]:
        x, grid = rng.standard_normal(xs), rng.uniform(-1, 1, gs)
        go = np.ones((xs[0], xs[1]) + gs[1:3])
        dx, dg, dgo = to_dev(cuda, x, grid, go)
        for det in (True, False):
            gi, gg = fi.grid_sample_backward(dgo, dx, dg, deterministic=det)
            assert (gi.copy_to_host() == 0).all() and (gg.copy_to_host() == 0).all()
            assert gi.shape == xs and gg.shape == gs


def test_affine_grid_bit_identical_for_any_thread_count(threads, rng):
    th = rng.standard_normal((3, 2, 3)).astype(np.float32)
    size = (3, 1, 128, 400)
    res = []
    for t in (1, 2, 3):
        threads.set_num_threads(t)
        assert fi._config.threads_for(3 * 128 * 400 * 2, 65536) == t
        grid = fi.affine_grid(th, size)
        res.append((grid, fi.affine_grid_backward(grid, size)))
    for grid, gt in res[1:]:
        np.testing.assert_array_equal(grid, res[0][0])
        np.testing.assert_array_equal(gt, res[0][1])


@pytest.mark.parametrize("fill", [7.0, 0, -3.5, 300, [300.0, -5.0, 10.6], (0.5, 1.5, 2.5),
                                  np.array([254.5, 255.5, -0.5])])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_uint8_constant_fill_follows_the_uint8_rule(fill, mode):
    """uint8 input samples in float32 with the fill as given (not cast to uint8 first),
    then rounds half to even and saturates: the float32 call, rounded and clipped."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (2, 3, 5, 6)).astype(np.uint8)
    g = rng.uniform(-1.6, 1.6, (2, 4, 7, 2)).astype(np.float32)
    got = fi.grid_sample(x, g, mode=mode, padding_mode="constant", fill=fill)
    ref = fi.grid_sample(x.astype(np.float32), g, mode=mode, padding_mode="constant", fill=fill)
    assert got.dtype == np.uint8
    assert np.array_equal(got, np.clip(np.rint(ref), 0, 255).astype(np.uint8))
    hwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))        # the NHWC path too
    got_nhwc = fi.grid_sample(hwc, g, mode=mode, padding_mode="constant", fill=fill,
                              layout="NHWC")
    assert np.array_equal(got_nhwc, got.transpose(0, 2, 3, 1))


def test_argument_errors_copy_nothing():
    """A strided input is copied once for the kernels, after the shape checks: a call
    refused for its grid's shape allocates nothing of the input's size."""
    import tracemalloc
    x = np.zeros((4, 8, 256, 256), np.float32)[..., ::2]          # 8 MB, strided
    bad_grid = np.zeros((4, 5, 5, 3), np.float32)
    tracemalloc.start()
    try:
        for call in (lambda: fi.grid_sample(x, bad_grid),
                     lambda: fi.grid_sample_backward(np.zeros((4, 8, 5, 5), np.float32), x,
                                                     bad_grid)):
            with pytest.raises(ValueError, match="grid must have shape"):
                call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes // 4


def test_align_corners_none_is_torchs_default_false():
    """torch's functional grid_sample and affine_grid take align_corners=None for their
    default, False: so do fastinterp's (any other non-bool is still a TypeError)."""
    rng = np.random.default_rng(7)
    x, g = rng.random((1, 2, 4, 5)), rng.uniform(-1.1, 1.1, (1, 3, 3, 2))
    theta = rng.random((1, 2, 3))
    np.testing.assert_array_equal(fi.grid_sample(x, g, align_corners=None), fi.grid_sample(x, g))
    go = np.ones((1, 2, 3, 3))
    for got, want in zip(fi.grid_sample_backward(go, x, g, align_corners=None),
                         fi.grid_sample_backward(go, x, g)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(fi.affine_grid(theta, (1, 1, 3, 4), align_corners=None),
                                  fi.affine_grid(theta, (1, 1, 3, 4)))
    np.testing.assert_array_equal(
        fi.affine_grid_backward(np.ones((1, 3, 4, 2)), (1, 1, 3, 4), align_corners=None),
        fi.affine_grid_backward(np.ones((1, 3, 4, 2)), (1, 1, 3, 4)))
    with pytest.raises(TypeError, match="^affine_grid: align_corners must be a bool"):
        fi.affine_grid(theta, (1, 1, 3, 4), align_corners="no")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [1, 2, 3, 17])
def test_backward_of_one_pixel_images_matches_torch(torch, c, dtype):
    """An NCHW image of one pixel has a channel stride of 1, as an NHWC batch does: the
    backward must still read grad_output's channels a plane apart (it took the NHWC
    sweep and mixed up channels and pixels)."""
    rng = np.random.default_rng(c)
    for n, (ho, wo) in [(1, (1, 2)), (2, (3, 2)), (1, (1, 1)), (3, (2, 5))]:
        x = rng.standard_normal((n, c, 1, 1)).astype(dtype)
        grid = rng.uniform(-1.5, 1.5, (n, ho, wo, 2)).astype(dtype)
        go = rng.standard_normal((n, c, ho, wo)).astype(dtype)
        for align in (False, True):
            ref_out, ref_gi, ref_gg = torch_grads(torch, x, grid, go, "bilinear", "zeros", align)
            gi, gg = fi.grid_sample_backward(go, x, grid, align_corners=align)
            tol = 1e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(gi, ref_gi, rtol=tol, atol=tol)
            np.testing.assert_allclose(gg, ref_gg, rtol=tol, atol=tol)
            gi_l, gg_l = fi.grid_sample_backward(go.transpose(0, 2, 3, 1).copy(),
                                                 x.transpose(0, 2, 3, 1).copy(), grid,
                                                 align_corners=align, layout="NHWC")
            np.testing.assert_allclose(gi_l.transpose(0, 3, 1, 2), gi, rtol=tol, atol=tol)
            np.testing.assert_allclose(gg_l, gg, rtol=tol, atol=tol)


@pytest.mark.parametrize("size, align", [
    ((1, 1, 2, 2), False), ((2, 1, 1, 4), False), ((2, 1, 1, 3), True), ((3, 1, 1, 2), True),
    ((1, 1, 2, 1, 2), False), ((1, 1, 1, 2, 2), False), ((2, 1, 1, 1, 3), True)])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_affine_grid_backward_weighs_each_pixel_before_summing(size, align, sign):
    """float64 gradients near the largest double: the coordinate terms are sums of
    products g * coordinate, which cancel here (the coordinates are symmetric about 0;
    no partial sum of products overflows at these sizes), even though the plain sum of
    a row overflows; only the constant term is infinite. Multiplying a row's
    overflowed sum by its coordinate gave +-inf or NaN (inf * 0 on a single row)."""
    big = sign * 1.5e308
    g = np.full(size[:1] + size[2:] + (len(size) - 2,), big)
    gt = fi.affine_grid_backward(g, size, align_corners=align)
    coordinate_terms, constant_term = gt[..., :-1], gt[..., -1]
    assert np.all(np.abs(coordinate_terms) <= 1e-12 * abs(big) * g[0].size), gt
    assert np.all(constant_term == sign * np.inf), gt


def _exact_affine_grid_backward(g, size, align):
    """grad_theta as exact rationals (the coordinates as fastinterp computes them: an
    identity theta's grid), rounded once to float64 (inf beyond it)."""
    from fractions import Fraction
    nd = len(size) - 2
    eye = np.concatenate([np.eye(nd), np.zeros((nd, 1))], 1)[None].repeat(size[0], 0)
    base = fi.affine_grid(eye, size, align_corners=align)            # (N, ..., nd)
    out = np.empty((size[0], nd, nd + 1))
    for n in range(size[0]):
        coords = base[n].reshape(-1, nd)
        grads = g[n].reshape(-1, nd)
        for r in range(nd):
            for k in range(nd + 1):
                col = coords[:, k] if k < nd else np.ones(len(coords))
                exact = sum(Fraction(float(a)) * Fraction(float(b))
                            for a, b in zip(grads[:, r], col))
                try:
                    out[n, r, k] = float(exact)
                except OverflowError:
                    out[n, r, k] = np.inf if exact > 0 else -np.inf
    return out


@pytest.mark.parametrize("size", [(1, 1, 2, 3), (2, 1, 4, 2), (1, 1, 3, 5), (1, 1, 2, 1, 3),
                                  (2, 1, 3, 2, 2)])
@pytest.mark.parametrize("align", [False, True])
def test_affine_grid_backward_near_the_largest_double_is_the_exact_sum(size, align):
    """Partial sums of products g * coordinate near 1e308 overflowed where the exact
    result is finite (inf + -inf = NaN across rows): such images are summed again
    scaled by a power of two."""
    rng = np.random.default_rng(sum(size) + align)
    big = np.finfo(np.float64).max
    for trial in range(20):
        g = rng.choice([-1.0, 1.0], size[:1] + size[2:] + (len(size) - 2,)) * big * \
            rng.uniform(0.3, 1.0, size[:1] + size[2:] + (len(size) - 2,))
        if trial == 0:
            g = np.full_like(g, 1.5e308)
        want = _exact_affine_grid_backward(g, size, align)
        near_overflow = (np.abs(want) > big / 4) & np.isfinite(want)
        got = fi.affine_grid_backward(g, size, align_corners=align)
        finite = np.isfinite(want) & ~near_overflow
        np.testing.assert_allclose(got[finite], want[finite], rtol=0,
                                   atol=1e-14 * big * g[0].size)
        np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])


@pytest.mark.parametrize("fill", [[None, 1.0], ["a", "b"], [[1.0, 2.0], [3.0]],
                                  np.array([1 + 5j, 2])], ids=repr)
@pytest.mark.parametrize("call", [
    lambda f: fi.grid_sample(np.zeros((1, 2, 4, 4), np.float32), np.zeros((1, 2, 2, 2),
                             np.float32), padding_mode="constant", fill=f),
    lambda f: fi.warp_affine(np.zeros((1, 2, 4, 4), np.uint8), np.eye(2, 3), (3, 3),
                             padding_mode="constant", fill=f),
])
def test_a_fill_of_non_numbers_is_a_type_error(call, fill):
    """None was read as NaN ('fill must be finite'), a ragged list gave NumPy's error."""
    with pytest.raises(TypeError, match=r"fill must be a real number or a sequence of C = 2 "
                                        r"reals; got"):
        call(fill)


@pytest.mark.cudasim
@pytest.mark.parametrize("size", [(1, 1, 2, 3), (2, 1, 4, 2)])
def test_cuda_affine_grid_backward_near_the_largest_double_is_the_cpus(cuda, size):
    rng = np.random.default_rng(11)
    big = np.finfo(np.float64).max
    g = rng.choice([-1.0, 1.0], size[:1] + size[2:] + (2,)) * big * rng.uniform(0.3, 1.0, size[:1]
                                                                               + size[2:] + (2,))
    g[0] = 1.5e308
    want = fi.affine_grid_backward(g, size)
    got = fi.affine_grid_backward(cuda.to_device(g), size).copy_to_host()
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=0,
                               atol=1e-14 * big * g[0].size)
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])


def test_affine_grid_backward_redoes_an_overflowed_component_next_to_an_infinite_one():
    """An inf in the x component of an image does not keep its y component's overflowed
    sum from being redone (the CUDA kernel redoes each entry on its own)."""
    g = np.zeros((1, 1, 3, 2))
    g[0, 0, :, 1] = [1e308, 1e308, -1e308]
    g[0, 0, 0, 0] = np.inf
    got = fi.affine_grid_backward(g, (1, 1, 1, 3), align_corners=True)
    np.testing.assert_array_equal(got[0, 1], [-np.inf, 0.0, 1e308])
    assert np.isinf(got[0, 0, 0]) and np.isnan(got[0, 0, 1])     # (inf * 0 in the x row)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_nearest_picks_torchs_pixel_at_half_pixel_ties(torch, dtype, padding):
    """Nearest rounds the pixel coordinate half to even, so the coordinate's last bit
    decides a tie: torch's 2-D CPU kernel rounds (g + 1) * W/2 - 1/2 once (a fused
    multiply-add), fastinterp rounded twice and picked the neighbouring pixel (a 6x6
    image halved by an identity grid: [[0, 2, 4], ...] where torch gives [[7, 8, 10], ...];
    about 1 point in 1e5 of grids dense in half pixels)."""
    F = torch.nn.functional
    rng = np.random.default_rng(41)
    for h, w, ho, wo in [(6, 6, 3, 3), (97, 45, 50, 22), (33, 70, 65, 141), (7, 300, 5, 601)]:
        x = np.arange(h * w, dtype=dtype).reshape(1, 1, h, w)
        theta = np.eye(2, 3, dtype=dtype)[None]
        grids = [F.affine_grid(torch.from_numpy(theta), (1, 1, ho, wo),
                               align_corners=False).numpy(),
                 # every half-pixel point of each axis (in the input's dtype), shuffled
                 np.stack(np.meshgrid(((np.arange(2 * w + 1) - w) / w).astype(dtype),
                                      ((np.arange(2 * h + 1) - h) / h).astype(dtype)),
                          axis=-1)[None]]
        grids.append(rng.permutation(grids[1].reshape(-1, 2)).reshape(grids[1].shape))
        for g in grids:
            want = F.grid_sample(torch.from_numpy(x), torch.from_numpy(g), mode="nearest",
                                 padding_mode=padding, align_corners=False).numpy()
            got = fi.grid_sample(x, g, mode="nearest", padding_mode=padding)
            np.testing.assert_array_equal(got, want)


@pytest.mark.cudasim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_nearest_picks_the_cpus_pixel_at_half_pixel_ties(cuda, dtype, monkeypatch):
    """The CUDA kernel rounds nearest's coordinate once too (an explicit cuda.fma, as
    torch's nvcc build rounds it), in the grid's dtype (float32 +
    the literal 1 was float64 in numba). The simulator's cuda.fma rounds twice: it is
    made exact here, so that the simulator checks the kernel's arithmetic."""
    from fractions import Fraction
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        from numba.cuda.simulator import kernelapi
        monkeypatch.setattr(kernelapi.FakeCUDAModule, "fma", lambda self, a, b, c: type(a)(
            float(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))))
    h, w = 6, 7
    x = np.arange(h * w, dtype=dtype).reshape(1, 1, h, w)
    g = np.stack(np.meshgrid(((np.arange(2 * w + 1) - w) / w).astype(dtype),
                             ((np.arange(2 * h + 1) - h) / h).astype(dtype)), axis=-1)[None]
    want = fi.grid_sample(x, g, mode="nearest", padding_mode="border")
    dx, dg = to_dev(cuda, x, g)
    got = fi.grid_sample(dx, dg, mode="nearest", padding_mode="border").copy_to_host()
    np.testing.assert_array_equal(got, want)
    go = np.ones(want.shape, dtype)
    gi = fi.grid_sample_backward(*to_dev(cuda, go, x, g), mode="nearest",
                                 padding_mode="border")[0].copy_to_host()
    np.testing.assert_array_equal(gi, fi.grid_sample_backward(go, x, g, mode="nearest",
                                                              padding_mode="border")[0])



@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("padding", ["border", "zeros", "reflection"])
@pytest.mark.parametrize("axis", ["width", "height"])
def test_axes_beyond_2_to_24_pixels_keep_their_last_pixel(mode, padding, axis):
    """A float32 kernel held the axis size in float32: 2**24 + 1 rounds to 2**24, and its
    last pixel failed the bounds test (t < size): border padding of a constant image gave
    0 at the edge, torch (integer bounds) gives the pixel."""
    n = (1 << 24) + 1
    shape = (1, 1, 1, n) if axis == "width" else (1, 1, n, 1)
    x = np.full(shape, 7.0, np.float32)
    x.reshape(-1)[-1] = 5.0
    pts = np.array([0.5, 1.0, 1.5], np.float32)
    g = np.zeros((1, 1, 3, 2), np.float32)
    g[..., 0 if axis == "width" else 1] = pts
    got = fi.grid_sample(x, g, mode=mode, padding_mode=padding, align_corners=True)
    want = fi.grid_sample(x.astype(np.float64), g.astype(np.float64), mode=mode,
                          padding_mode=padding, align_corners=True)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0, 0, 0, 1] == 5.0          # the last pixel itself
    gi, _ = fi.grid_sample_backward(np.ones_like(got), x, g, mode=mode, padding_mode=padding,
                                    align_corners=True)
    assert gi.reshape(-1)[-1] > 0
