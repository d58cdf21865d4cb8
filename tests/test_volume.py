"""Volumes and 1-D data: 5-D grid_sample (trilinear, nearest, tricubic), 3-D affine_grid,
resize of (N, C, L) and (N, C, D, H, W) data, adaptive_avg_pool1d/3d, with backwards."""
import re

import numpy as np
import pytest

import fastinterp as fi
from conftest import numeric_grads

# Values equal torch's: float64 within 1e-10, float32 within 1e-5 (relative to the scale).
REL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
DTYPES = [np.float64, np.float32]


def assert_rel(actual, expected):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max(initial=0)))
    err = float(np.abs(actual - expected).max(initial=0)) / scale
    assert err <= REL[actual.dtype], err


def random_grid(rng, shape, dtype, spread=1.3):
    return rng.uniform(-spread, spread, shape).astype(dtype)


def torch_vjp(torch, fn, arrays, go):
    """torch's outputs and the gradients of sum(go * fn(*arrays)) for each array."""
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.backward(torch.tensor(go))
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


# --------------------------------------------------------------------------- grid_sample 5-D

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_sample_5d_equals_torch(torch, dtype, mode, padding_mode, align_corners, rng):
    F = torch.nn.functional
    x = rng.standard_normal((2, 3, 4, 5, 6)).astype(dtype)
    g = random_grid(rng, (2, 3, 4, 5, 3), dtype)
    go = rng.standard_normal((2, 3, 3, 4, 5)).astype(dtype)
    kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    ref, (rgi, rgg) = torch_vjp(torch, lambda a, b: F.grid_sample(a, b, **kw), (x, g), go)
    assert_rel(fi.grid_sample(x, g, **kw), ref)
    gi, gg = fi.grid_sample_backward(go, x, g, **kw)
    assert_rel(gi, rgi)
    assert_rel(gg, rgg)
    assert gi.dtype == gg.dtype == np.dtype(dtype)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection", "wrap"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_tricubic_gradients_by_finite_differences(padding_mode, align_corners, rng):
    x = rng.standard_normal((1, 2, 3, 4, 5))
    g = random_grid(rng, (1, 2, 2, 2, 3), np.float64, spread=1.15)
    go = rng.standard_normal((1, 2, 2, 2, 2))
    kw = dict(mode="bicubic", padding_mode=padding_mode, align_corners=align_corners)
    gi, gg = fi.grid_sample_backward(go, x, g, **kw)
    ngi, ngg = numeric_grads(lambda a, b: fi.grid_sample(a, b, **kw), [x, g], go)
    np.testing.assert_allclose(gi, ngi, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gg, ngg, rtol=1e-5, atol=1e-6)


def tricubic_reference(x, g, align_corners):
    """Tensor-product Keys cubic (A = -0.75) with zero padding, one channel, per point."""
    def w(t):
        t = abs(t)
        a = -0.75
        if t <= 1:
            return ((a + 2) * t - (a + 3)) * t * t + 1
        if t < 2:
            return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
        return 0.0

    sizes = x.shape[::-1]              # W, H, D against the grid's (x, y, z)
    pos = [((gc + 1) / 2) * (n - 1) if align_corners else ((gc + 1) * n - 1) / 2
           for gc, n in zip(g, sizes)]
    base = [int(np.floor(p)) for p in pos]
    total = 0.0
    for dz in range(-1, 3):
        for dy in range(-1, 3):
            for dx in range(-1, 3):
                i, j, k = base[2] + dz, base[1] + dy, base[0] + dx
                if 0 <= i < x.shape[0] and 0 <= j < x.shape[1] and 0 <= k < x.shape[2]:
                    total += (w(pos[0] - k) * w(pos[1] - j) * w(pos[2] - i)) * x[i, j, k]
    return total


@pytest.mark.parametrize("align_corners", [False, True])
def test_tricubic_values_match_a_direct_sum(align_corners, rng):
    x = rng.standard_normal((1, 1, 4, 5, 6))
    g = random_grid(rng, (1, 2, 3, 2, 3), np.float64)
    out = fi.grid_sample(x, g, mode="bicubic", align_corners=align_corners)
    ref = np.array([tricubic_reference(x[0, 0], g[0][idx], align_corners)
                    for idx in np.ndindex(g.shape[1:4])]).reshape(out.shape)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-13)


def test_tricubic_reduces_to_bicubic_on_a_constant_depth(torch, rng):
    # a volume constant along D, sampled with z inside: the 2-D bicubic of torch
    F = torch.nn.functional
    img = rng.standard_normal((1, 2, 5, 6))
    vol = np.repeat(img[:, :, None], 4, axis=2)
    g2 = random_grid(rng, (1, 3, 4, 2), np.float64, spread=1.2)
    g3 = np.concatenate([g2[:, None], np.full((1, 1, 3, 4, 1), 0.1)], axis=-1)
    ref = F.grid_sample(torch.tensor(img), torch.tensor(g2), mode="bicubic",
                        padding_mode="border", align_corners=False).numpy()
    out = fi.grid_sample(vol, g3, mode="bicubic", padding_mode="border")
    np.testing.assert_allclose(out[:, :, 0], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_volume_bit_identical_for_any_thread_count(threads, mode, rng):
    # N = 1 takes the split (channel-block, tile) backward, N = 3 one image per thread;
    # values near float32's max send some voxels' grid gradients term by term
    for n, scale in ((1, 1.0), (3, 1.0), (1, 3e37)):
        x = (rng.standard_normal((n, 5, 6, 7, 8)) * scale).astype(np.float32)
        g = random_grid(rng, (n, 8, 32, 40, 3), np.float32)   # 3 threads' work per image
        go = rng.standard_normal((n, 5, 8, 32, 40)).astype(np.float32)
        res = []
        for t in (1, 2, 3):
            threads.set_num_threads(t)
            out = fi.grid_sample(x, g, mode=mode, padding_mode="reflection")
            assert fi._config.threads_for(go.size, 16384) == t
            res.append((out,) + fi.grid_sample_backward(go, x, g, mode=mode,
                                                        padding_mode="reflection"))
        for other in res[1:]:
            for a, b in zip(res[0], other):
                np.testing.assert_array_equal(a, b)


def near_identity_grid(rng, N, size, dtype, turn=0.3, shift=0.1):
    """A rotated and shifted 3-D affine grid: most voxels' eight corners are inside and
    neighbours (the trilinear kernels' fast path), the rest cross the border."""
    a, b = rng.uniform(-turn, turn, 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    theta = np.concatenate([rz @ rx, rng.uniform(-shift, shift, (3, 1))], 1)
    theta = np.repeat(theta[None], N, 0).astype(dtype)
    return fi.affine_grid(theta, (N, 1) + size, align_corners=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("C", [1, 6, 9])
def test_trilinear_near_identity_equals_torch(torch, threads, dtype, padding_mode, C, rng):
    # power-of-two planes (channels 4 KiB apart) and channel counts around the kernels'
    # channel blocks; one image and two (the two backward schedules at 2 threads)
    F = torch.nn.functional
    for N in (1, 2):
        x = rng.standard_normal((N, C, 8, 16, 32)).astype(dtype)
        g = near_identity_grid(rng, N, (8, 16, 32), dtype)
        go = rng.standard_normal((N, C, 8, 16, 32)).astype(dtype)
        kw = dict(mode="bilinear", padding_mode=padding_mode, align_corners=False)
        ref, (rgi, rgg) = torch_vjp(torch, lambda a, b: F.grid_sample(a, b, **kw), (x, g), go)
        res = []
        for t in (1, 2):
            threads.set_num_threads(t)
            if C == 9:      # large enough for 2 threads: both schedules run
                assert fi._config.threads_for(go.size, 16384) == t
            out = fi.grid_sample(x, g, **kw)
            gi, gg = fi.grid_sample_backward(go, x, g, **kw)
            assert_rel(out, ref)
            assert_rel(gi, rgi)
            assert_rel(gg, rgg)
            res.append((out, gi, gg))
        for a, b in zip(*res):
            np.testing.assert_array_equal(a, b)


def test_volume_errors(rng):
    x = np.zeros((1, 2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"grid must have shape \(N, D_out, H_out, W_out, 3\)"):
        fi.grid_sample(x, np.zeros((1, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match="batch size"):
        fi.grid_sample(x, np.zeros((2, 2, 2, 2, 3)))
    with pytest.raises(ValueError, match=r"5-D \(volume\) input is NCDHW only"):
        fi.grid_sample(x, np.zeros((1, 2, 2, 2, 3)), channels_last=True)
    with pytest.raises(ValueError, match="D, H, W >= 1"):
        fi.grid_sample(np.zeros((1, 2, 0, 4, 5)), np.zeros((1, 2, 2, 2, 3)))
    with pytest.raises(ValueError, match="grad_output must have"):
        fi.grid_sample_backward(np.zeros((1, 2, 2, 2, 3)), x, np.zeros((1, 2, 2, 2, 3)))
    with pytest.raises(ValueError, match=r"theta must have shape \(N, 3, 4\)"):
        fi.affine_grid(np.zeros((1, 2, 3)), (1, 1, 2, 2, 2))
    out = np.full((1, 2, 1, 1, 1), 7.0)
    with pytest.raises(ValueError):
        fi.grid_sample(x, np.zeros((1, 1, 1, 1, 3)), out=np.zeros((1, 2, 1, 1, 2)))
    assert np.all(out == 7.0)


def test_volume_empty_outputs():
    x = np.ones((2, 3, 2, 2, 2))
    assert fi.grid_sample(x, np.zeros((2, 0, 4, 4, 3))).shape == (2, 3, 0, 4, 4)
    gi, gg = fi.grid_sample_backward(np.zeros((2, 3, 0, 4, 4)), x, np.zeros((2, 0, 4, 4, 3)))
    assert not gi.any() and gg.shape == (2, 0, 4, 4, 3)


def test_volume_kernels_are_registered():
    fi.grid_sample(np.zeros((1, 1, 2, 2, 2)), np.zeros((1, 1, 1, 1, 3)))
    assert fi.last_kernel().key == ("grid_sample", "cpu", "float64")
    fi.affine_grid(np.zeros((1, 3, 4)), (1, 1, 2, 2, 2))
    assert fi.last_kernel().key == ("affine_grid", "cpu", "float64")


# --------------------------------------------------------------------------- affine_grid 3-D

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_3d_equals_torch(torch, dtype, align_corners, rng):
    F = torch.nn.functional
    th = rng.standard_normal((2, 3, 4)).astype(dtype)
    size = (2, 1, 3, 4, 5)
    go = rng.standard_normal((2, 3, 4, 5, 3)).astype(dtype)
    ref, (rgt,) = torch_vjp(torch, lambda t: F.affine_grid(t, list(size),
                                                          align_corners=align_corners),
                            (th,), go)
    assert_rel(fi.affine_grid(th, size, align_corners=align_corners), ref)
    assert_rel(fi.affine_grid_backward(go, size, align_corners=align_corners), rgt)


# --------------------------------------------------------------------------- resize 1-D / 3-D

RESIZE_CASES = [
    ((2, 3, 4, 5, 6), "trilinear", dict(size=(7, 3, 9))),
    ((2, 3, 4, 5, 6), "trilinear", dict(scale_factor=1.7)),
    ((2, 3, 4, 5, 6), "nearest", dict(size=(9, 2, 13))),
    ((2, 3, 4, 5, 6), "nearest", dict(scale_factor=(1.5, 0.7, 2.3))),
    ((2, 3, 4, 5, 6), "nearest-exact", dict(size=(3, 11, 4))),
    ((2, 3, 4, 5, 6), "area", dict(size=(3, 2, 4))),
    ((2, 3, 11), "linear", dict(size=17)),
    ((2, 3, 11), "linear", dict(scale_factor=0.6)),
    ((2, 3, 11), "nearest", dict(size=200)),
    ((2, 3, 11), "nearest", dict(scale_factor=1.05)),
    ((2, 3, 11), "nearest-exact", dict(size=4)),
    ((2, 3, 11), "area", dict(size=(4,))),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, mode, kw", RESIZE_CASES)
def test_resize_nd_equals_torch(torch, dtype, shape, mode, kw, rng):
    F = torch.nn.functional
    aligns = [False, True] if mode in ("linear", "trilinear") else [None]
    for align in aligns:
        x = rng.standard_normal(shape).astype(dtype)
        def fn(a):
            return F.interpolate(a, mode=mode, align_corners=align, **kw)
        ref = fn(torch.tensor(x)).numpy()
        go = rng.standard_normal(ref.shape).astype(dtype)
        assert_rel(fi.resize(x, mode=mode, align_corners=align, **kw), ref)
        gi = fi.resize_backward(go, x.shape, mode=mode, align_corners=align,
                                scale_factor=kw.get("scale_factor"))
        assert_rel(gi, torch_adjoint(torch, fn, x.shape, go))


def torch_adjoint(torch, fn, shape, go):
    """A^T go for the matrix A of torch's forward, built on basis vectors (torch's
    autograd of nearest interpolation is not always the adjoint of its forward)."""
    spatial = shape[2:]
    size = int(np.prod(spatial))
    basis = np.eye(size, dtype=go.dtype).reshape((size, 1) + spatial)
    A = fn(torch.tensor(basis)).numpy().reshape(size, -1)
    flat = go.reshape(shape[0] * shape[1], -1).astype(np.float64)
    return (flat @ A.T.astype(np.float64)).astype(go.dtype).reshape(shape)


@pytest.mark.parametrize("shape, mode, kw", RESIZE_CASES[::2])
def test_resize_nd_backward_is_the_adjoint(shape, mode, kw, rng):
    x = rng.standard_normal(shape)
    out = fi.resize(x, mode=mode, **kw)
    go = rng.standard_normal(out.shape)
    gi = fi.resize_backward(go, x.shape, mode=mode, scale_factor=kw.get("scale_factor"))
    assert np.isclose(np.sum(out * go), np.sum(x * gi), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_pools_equal_torch(torch, dtype, rng):
    F = torch.nn.functional
    x1 = rng.standard_normal((2, 3, 13)).astype(dtype)
    go1 = rng.standard_normal((2, 3, 5)).astype(dtype)
    ref, (rgi,) = torch_vjp(torch, lambda a: F.adaptive_avg_pool1d(a, 5), (x1,), go1)
    assert_rel(fi.adaptive_avg_pool1d(x1, 5), ref)
    assert_rel(fi.adaptive_avg_pool1d_backward(go1, x1.shape), rgi)
    x3 = rng.standard_normal((2, 3, 7, 9, 10)).astype(dtype)
    go3 = rng.standard_normal((2, 3, 3, 9, 6)).astype(dtype)
    ref, (rgi,) = torch_vjp(torch, lambda a: F.adaptive_avg_pool3d(a, (3, None, 6)), (x3,), go3)
    assert_rel(fi.adaptive_avg_pool3d(x3, (3, None, 6)), ref)
    assert_rel(fi.adaptive_avg_pool3d_backward(go3, x3), rgi)


def test_resize_nd_errors():
    x = np.zeros((1, 2, 3, 4, 5))
    with pytest.raises(ValueError, match="mode must be one of"):
        fi.resize(x, size=2, mode="bilinear")
    with pytest.raises(ValueError, match="mode must be one of"):
        fi.resize(np.zeros((1, 2, 3)), size=2, mode="trilinear")
    with pytest.raises(ValueError, match="size must be"):
        fi.resize(x, size=(2, 2), mode="nearest")
    with pytest.raises(ValueError, match="align_corners must be None"):
        fi.resize(x, size=2, mode="area", align_corners=False)
    for layout in ("NHWC", "NCHW"):     # no image layout names a volume's axes
        with pytest.raises(ValueError, match=r"layout must be None \(the default\)"):
            fi.resize(x, size=2, mode="nearest", layout=layout)
    for data, mode in ((x, "trilinear"), (np.zeros((1, 2, 9)), "linear")):
        for match in ("opencv", "pil"):
            with pytest.raises(ValueError, match=f"match='{match}' applies to 2-D images"):
                fi.resize(data, size=2, mode=mode, match=match)
        with pytest.raises(ValueError, match="match must be one of"):
            fi.resize(data, size=2, mode=mode, match="bogus")
    with pytest.raises(ValueError, match="output_size must be"):
        fi.adaptive_avg_pool3d(x, (2, 2))
    with pytest.raises(ValueError, match=r"input must have shape \(N, C, L\)"):
        fi.adaptive_avg_pool1d(x, 2)
    with pytest.raises(ValueError, match="spatial size"):
        fi.resize_backward(np.zeros((1, 2, 5)), (1, 2, 3), scale_factor=2.0, mode="linear")
    with pytest.raises(ValueError, match=r"at most 2\*\*31 - 1 pixels along each axis"):
        fi.resize(np.zeros((1, 2, 3)), scale_factor=1e300, mode="linear")
    with pytest.raises(ValueError, match=r"size must give an output of at most"):
        fi.resize(x, size=(2, 2**33, 2), mode="nearest")


def test_resize_nd_bit_identical_for_any_thread_count(threads, rng):
    x = rng.standard_normal((2, 4, 20, 30, 40)).astype(np.float32)
    res = []
    for t in (1, 2, 3):
        threads.set_num_threads(t)
        out = fi.resize(x, size=(31, 17, 50), mode="trilinear")
        res.append((out, fi.resize_backward(out, x.shape, mode="trilinear")))
    for other in res[1:]:
        for a, b in zip(res[0], other):
            np.testing.assert_array_equal(a, b)


def test_volume_kernels_reject_odd_direct_arguments():
    # the raw kernels check sizes in Python ints (no overflow) and write nothing
    from fastinterp._cpu import sample3d as k
    z = np.zeros
    calls = [
        lambda: k.affine_grid3d_fwd(z(3), z(12), z(1), z(1), z(1), 2**62, 1),
        lambda: k.affine_grid3d_bwd(z(12), z(3), z(1), z(1), z(1), -1, 1),
        lambda: k.grid_sample3d_fwd(z(1), z(1), z(3), (1,) * 7, 1, 0, False, 1),
        lambda: k.grid_sample3d_fwd(z(1), z(1), z(3), (2**40, 2**40) + (1,) * 6, 1, 0, False, 1),
        lambda: k.grid_sample3d_fwd(z(1), z(1), z(3), (1,) * 8, 1, 4, False, 1),
        lambda: k.grid_sample3d_bwd(z(1), z(1), z(1), z(1), z(3), (1, 1, 0) + (1,) * 5, 1, 0,
                                    False, True, True, 1),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_volume_non_finite_grid_points_follow_torch(torch, padding_mode, mode, align_corners):
    """torch's volume kernels clip NaN and +-inf coordinates differently from its 2-D
    ones: zeros gives 0 (not NaN), border sends NaN, reflection NaN and +-inf, to the
    last voxel of the axis. The backward is the forward's adjoint: with zeros nothing
    is read (all gradients 0, as torch gives); with border/reflection the voxel read
    gets grad_output (torch's own backward leaves it 0) and that coordinate's grid
    gradient is 0."""
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 3, 4, 5))
    grid = rng.uniform(-1.1, 1.1, (2, 3, 3, 4, 3))
    for point, value in enumerate((np.nan, np.inf, -np.inf)):
        for axis in range(3):
            grid[point % 2, point, axis, axis, axis] = value
    want = F.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), mode=mode,
                         padding_mode=padding_mode, align_corners=align_corners).numpy()
    got = fi.grid_sample(x, grid, mode=mode, padding_mode=padding_mode,
                         align_corners=align_corners)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    gi, gg = fi.grid_sample_backward(np.ones_like(got), x, grid, mode=mode,
                                     padding_mode=padding_mode, align_corners=align_corners)
    bad = ~np.isfinite(grid)
    assert np.isfinite(gi).all() and np.isfinite(gg).all()
    assert (gg[bad] == 0).all()
    if padding_mode == "zeros":
        assert (gg[bad.any(-1)] == 0).all()
    # the forward's adjoint: <grid_sample(x), g> = <x, grad_input>
    np.testing.assert_allclose((got * 1.0).sum(), (x * gi).sum(), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_trilinear_grid_gradient_of_values_near_the_dtype_max(torch, dtype, padding_mode,
                                                              align_corners, rng):
    """Values within a few times of the dtype's maximum: summed over channels before
    the corner differences are taken, the grid gradient's partial sums overflow (inf -
    inf = NaN) where torch's term-by-term sum is finite. Such voxels are summed term by
    term: finite wherever torch's is, and equal to it within the dtype's rounding."""
    F = torch.nn.functional
    big = float(np.finfo(dtype).max) / 4
    x = (rng.choice([-1.0, 1.0], (2, 7, 3, 4, 5)) * rng.uniform(0.5, 1.0, (2, 7, 3, 4, 5))
         * big).astype(dtype)
    grid = random_grid(rng, (2, 4, 5, 6, 3), dtype, spread=1.1)
    go = rng.uniform(1.0, 2.0, (2, 7, 4, 5, 6)).astype(dtype)
    kw = dict(mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)
    _, (_, want) = torch_vjp(torch, lambda a, b: F.grid_sample(a, b, **kw), (x, grid), go)
    _, got = fi.grid_sample_backward(go, x, grid, **kw)
    finite = np.isfinite(want)
    assert finite.mean() > 0.5
    assert np.isfinite(got[finite]).all(), int((~np.isfinite(got[finite])).sum())
    # compared in units of the largest term (v f g <= 2 big), where no difference overflows
    unit = 2 * big
    err = np.abs(got[finite] / unit - want[finite] / unit).max()
    assert err <= 256 * float(np.finfo(dtype).eps), err


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_trilinear_grid_gradient_of_an_infinite_grad_output_is_torchs(torch, padding_mode, rng):
    """An infinite grad_output entry: its voxel's grid gradient is torch's NaN or +-inf
    (summed term by term as torch sums it), the others stay finite."""
    F = torch.nn.functional
    kw = dict(mode="bilinear", padding_mode=padding_mode, align_corners=False)
    for _ in range(8):
        x = rng.standard_normal((1, 6, 3, 4, 5))
        grid = random_grid(rng, (1, 2, 3, 4, 3), np.float64, spread=1.1)
        go = rng.standard_normal((1, 6, 2, 3, 4))
        at = tuple(int(rng.integers(0, n)) for n in go.shape)
        go[at] = rng.choice([-np.inf, np.inf])
        _, (_, want) = torch_vjp(torch, lambda a, b: F.grid_sample(a, b, **kw), (x, grid), go)
        _, got = fi.grid_sample_backward(go, x, grid, **kw)
        voxel = (at[0],) + at[2:]
        np.testing.assert_array_equal(got[voxel], want[voxel])
        others = np.ones(got.shape[:-1], bool)
        others[voxel] = False
        assert np.isfinite(got[others]).all()


@pytest.mark.parametrize("rank, shape, size, want", [(1, (3, 10), 5, (3, 5)),
                                                     (3, (2, 4, 4, 6), 2, (2, 2, 2, 2))])
def test_unbatched_pools_check_out_as_the_caller_gave_it(rank, shape, size, want):
    """An unbatched pool's out= (and its backward's) is checked against the unbatched
    result: the messages name the shapes the caller has, and a list or a scalar is
    the usual "must be an array" error."""
    pool = getattr(fi, f"adaptive_avg_pool{rank}d")
    back = getattr(fi, f"adaptive_avg_pool{rank}d_backward")
    x = np.zeros(shape)
    for bad in ((1,) + want, want[:-1] + (want[-1] + 1,)):
        with pytest.raises(ValueError, match=rf"out must have shape \({', '.join(map(str, want))}"
                                             rf"\); got \({', '.join(map(str, bad))}\)\."):
            pool(x, size, out=np.empty(bad))
        with pytest.raises(ValueError, match=rf"out must have shape \({', '.join(map(str, shape))}"
                                             rf"\); got"):
            back(np.ones(want), shape, out=np.empty((1,) + shape))
    for bad in ([[0.0] * want[-1]] * want[0], np.float64(0)):
        with pytest.raises(TypeError, match="out must be"):
            pool(x, size, out=bad)
    torch = pytest.importorskip("torch")
    import fastinterp.torch as fit
    tpool = getattr(fit, f"adaptive_avg_pool{rank}d")
    with pytest.raises(TypeError, match="out must be a torch tensor; got numpy.ndarray"):
        tpool(torch.zeros(shape), size, out=np.empty(want))
    with pytest.raises(ValueError, match=rf"out must have shape \({', '.join(map(str, want))}"
                                         rf"\); got \(1, "):
        tpool(torch.zeros(shape), size, out=torch.empty((1,) + want))
    out = torch.empty(want, dtype=torch.float64)
    assert tpool(torch.zeros(shape, dtype=torch.float64), size, out=out) is out


@pytest.mark.parametrize("shape, mode", [((1, 1, 4), "nearest"), ((1, 1, 4, 4, 4), "trilinear")])
def test_nd_resize_antialias_is_a_bool_flag(shape, mode):
    """1-D and 3-D resize take antialias as a bool flag, NumPy's included (False only):
    a non-bool is a TypeError, as for images."""
    x = np.ones(shape)
    size = 2 if len(shape) == 3 else (2, 2, 2)
    np.testing.assert_array_equal(fi.resize(x, size=size, mode=mode, antialias=np.False_),
                                  fi.resize(x, size=size, mode=mode))
    gi = fi.resize_backward(np.ones(shape[:2] + (2,) * (len(shape) - 2)), shape, mode=mode,
                            antialias=np.False_)
    assert gi.shape == shape
    with pytest.raises(TypeError, match="antialias must be a bool; got NoneType"):
        fi.resize(x, size=size, mode=mode, antialias=None)
    with pytest.raises(ValueError, match="antialias must be False for"):
        fi.resize(x, size=size, mode=mode, antialias=np.True_)


@pytest.mark.parametrize("rank, shape, size", [(1, (3, 8), 5), (3, (3, 5, 2, 7), 3),
                                               (3, (2, 4, 4, 4), (2, None, 3))])
def test_pools_take_one_unbatched_item_as_torch(rank, shape, size):
    """adaptive_avg_pool1d/3d take an unbatched (C, L) / (C, D, H, W), as torch's do:
    the result (and gradient) of the batch of one, without its batch axis."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    pool = getattr(fi, f"adaptive_avg_pool{rank}d")
    back = getattr(fi, f"adaptive_avg_pool{rank}d_backward")
    x = np.random.default_rng(rank).random(shape)
    y = pool(x, size)
    np.testing.assert_allclose(y, getattr(F, f"adaptive_avg_pool{rank}d")(
        torch.from_numpy(x), size).numpy(), rtol=1e-12)
    np.testing.assert_array_equal(y, pool(x[None], size)[0])
    out = np.empty_like(y)
    assert pool(x, size, out=out) is out and np.array_equal(out, y)
    g = np.random.default_rng(9).random(y.shape)
    want = back(g[None], (1,) + shape)[0]
    for input_size in (shape, shape[1:]):
        np.testing.assert_array_equal(back(g, input_size), want)
    import fastinterp.torch as fit
    tx = torch.from_numpy(x).requires_grad_()
    ty = getattr(fit, f"adaptive_avg_pool{rank}d")(tx, size)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(ty.detach().numpy(), y)
    np.testing.assert_array_equal(tx.grad.numpy(), want)


@pytest.mark.parametrize("op, shape, axes", [
    ("adaptive_avg_pool1d", (4,), "(N, C, L) or, one item, (C, L)"),
    ("adaptive_avg_pool1d", (1, 2, 3, 4), "(N, C, L) or, one item, (C, L)"),
    ("adaptive_avg_pool3d", (2, 2, 2), "(N, C, D, H, W) or, one item, (C, D, H, W)"),
    ("adaptive_avg_pool3d", (1,) * 6, "(N, C, D, H, W) or, one item, (C, D, H, W)"),
])
def test_pool_rank_errors_name_the_unbatched_shape_too(op, shape, axes):
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=rf"^{op}: input must have shape {re.escape(axes)}; "):
        getattr(fi, op)(x, 2)
    with pytest.raises(ValueError, match=rf"^{op}_backward: grad_output must have shape "
                                         rf"{re.escape(axes)}; "):
        getattr(fi, op + "_backward")(x, (1, 1) + (4,) * (1 if "1d" in op else 3))


# A depth that shrinks while the planes grow (and the reverse): the intermediate of
# the order (H, W) first, then D, is far larger than input and output.
DEPTH_PLANE_CASES = [
    ((1, 2, 60, 3, 4), dict(size=(2, 40, 30))),
    ((2, 1, 3, 40, 30), dict(size=(50, 4, 3))),
    ((1, 1, 9, 9, 9), dict(size=(9, 9, 9))),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["trilinear", "nearest", "area"])
@pytest.mark.parametrize("shape, kw", DEPTH_PLANE_CASES)
def test_volume_maps_allocate_the_smaller_intermediate(torch, monkeypatch, dtype, mode,
                                                       shape, kw, rng):
    """(N, C, 1000, 8, 8) resized to (1, 256, 256) built a 1000 x 256 x 256 intermediate
    (250 MB for a 256 KB result) and the memory check never counted it; the volume
    pass that shrinks now runs first, forward and backward, with the same values."""
    from fastinterp import _memory
    F = torch.nn.functional
    x = rng.standard_normal(shape).astype(dtype)
    fn = (lambda a: F.adaptive_avg_pool3d(a, kw["size"])) if mode == "area" else (
        lambda a: F.interpolate(a, mode=mode, **kw))
    ref, (rgi,) = torch_vjp(torch, fn, (x,), np.ones(fn(torch.tensor(x)).shape, dtype))
    go = np.ones(ref.shape, dtype)
    sizes = []
    real_empty = _memory.empty

    def recorded_empty(shape, dtype, *args, **kwargs):
        sizes.append(int(np.prod(shape)))
        return real_empty(shape, dtype, *args, **kwargs)
    monkeypatch.setattr(_memory, "empty", recorded_empty)
    got = fi.resize(x, mode=mode, **kw)
    gi = fi.resize_backward(go, x.shape, mode=mode)
    assert max(sizes) <= max(x.size, ref.size)
    assert_rel(got, ref)
    assert_rel(gi, rgi)


def test_a_volume_intermediate_counts_in_the_memory_check(monkeypatch):
    """The check passed (1, 1, 4000, 8, 8) to (1, 2048, 2048), whose intermediate in the
    order (H, W) first held 62.5 GiB; the one built now (D first) holds 64 values, and
    the check counts it with the 16 MiB result."""
    from fastinterp import _memory
    need = []
    real_check = _memory.check_fits

    def recorded_check(op, what, nbytes):
        need.append(nbytes)
        return real_check(op, what, nbytes)
    monkeypatch.setattr(_memory, "check_fits", recorded_check)
    fi.resize(np.zeros((1, 1, 4000, 8, 8), np.float32), size=(1, 2048, 2048), mode="nearest")
    assert 16 * 2**20 + 64 * 4 <= need[0] < 64 * 2**20


@pytest.mark.parametrize("op, grad_shape, input_size", [
    ("adaptive_avg_pool3d_backward", (2, 1, 1, 1), (3, 4, 5, 6)),
    ("adaptive_avg_pool1d_backward", (2, 3), (5, 7)),
])
def test_unbatched_pool_backward_errors_show_the_callers_shapes(op, grad_shape, input_size):
    """The message showed the shapes with the batch axis added inside: "same N and C as
    grad_output (1, 2, 1, 1, 1); got (1, 3, 4, 5, 6)"."""
    want = (rf"{op}: input_size must have the same C as grad_output "
            rf"{re.escape(str(grad_shape))}; got {re.escape(str(input_size))}\.")
    with pytest.raises(ValueError, match=want):
        getattr(fi, op)(np.zeros(grad_shape), input_size)
