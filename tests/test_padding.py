"""grid_sample's 'constant' (with fill) and 'wrap' paddings, 2-D and 3-D, forward and
backward, against scipy.ndimage.map_coordinates ('grid-constant', 'grid-wrap')."""
import warnings

import numpy as np
import pytest

import fastinterp as fi
from conftest import numeric_grads

ndimage = pytest.importorskip("scipy.ndimage")

SCIPY_MODE = {"constant": "grid-constant", "wrap": "grid-wrap"}
ORDER = {"bilinear": 1, "nearest": 0}


def pixel(g, n, align_corners):
    """Normalized grid value -> pixel coordinate (pixel i's centre at i)."""
    return ((g + 1) / 2) * (n - 1) if align_corners else ((g + 1) * n - 1) / 2


def scipy_sample(x, g, mode, padding_mode, align_corners, fill):
    """map_coordinates per channel; x (N, C, *spatial), g (N, *out, k) with (x, y[, z])."""
    n_sp = x.ndim - 2
    out = np.empty(x.shape[:2] + g.shape[1:-1])
    for n in range(x.shape[0]):
        coords = [pixel(g[n, ..., n_sp - 1 - a], x.shape[2 + a], align_corners)
                  for a in range(n_sp)]
        for c in range(x.shape[1]):
            cval = float(np.broadcast_to(fill, (x.shape[1],))[c]) if fill is not None else 0.0
            out[n, c] = ndimage.map_coordinates(x[n, c], coords, order=ORDER[mode],
                                                mode=SCIPY_MODE[padding_mode], cval=cval)
    return out


def off_ties(rng, shape, sizes, align_corners, spread=1.9):
    """Random grid points, nudged away from pixel-centre half-way points (where the
    nearest modes' rounding conventions differ) and from integer knots."""
    g = rng.uniform(-spread, spread, shape)
    for a, n in enumerate(sizes):                     # sizes in grid-component order
        p = pixel(g[..., a], n, align_corners)
        frac = p - np.floor(p)
        bad = (np.abs(frac - 0.5) < 0.05) | (frac < 0.05) | (frac > 0.95)
        p = np.where(bad, p + 0.2, p)
        g[..., a] = (p / (n - 1)) * 2 - 1 if align_corners else (2 * p + 1) / n - 1
    return g


CASES = [(mode, pad, ac) for mode in ("bilinear", "nearest") for pad in ("constant", "wrap")
         for ac in (False, True)]


@pytest.mark.parametrize("mode, padding_mode, align_corners", CASES)
@pytest.mark.parametrize("ndim", [2, 3])
def test_matches_scipy_map_coordinates(mode, padding_mode, align_corners, ndim, rng):
    spatial = (5, 6) if ndim == 2 else (3, 4, 5)
    x = rng.standard_normal((2, 3) + spatial)
    g = off_ties(rng, (2, 4, 7) + ((3,) if ndim == 3 else ()) + (ndim,), spatial[::-1],
                 align_corners)
    fill = np.array([0.7, -1.3, 2.5]) if padding_mode == "constant" else None
    kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners, fill=fill)
    out = fi.grid_sample(x, g, **kw)
    ref = scipy_sample(x, g, mode, padding_mode, align_corners, fill)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    out32 = fi.grid_sample(x.astype(np.float32), g.astype(np.float32), **kw)
    if mode == "bilinear":      # float32 rounding of the grid can move a nearest tap
        np.testing.assert_allclose(out32, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fill", [0.0, 1.5, -2.0])
def test_scalar_fill_is_every_channel(fill, rng):
    x = rng.standard_normal((1, 2, 4, 4))
    g = rng.uniform(-2, 2, (1, 3, 3, 2))
    a = fi.grid_sample(x, g, padding_mode="constant", fill=fill)
    b = fi.grid_sample(x, g, padding_mode="constant", fill=[fill, fill])
    np.testing.assert_array_equal(a, b)
    if fill == 0.0:
        np.testing.assert_array_equal(a, fi.grid_sample(x, g, padding_mode="zeros"))


def test_constant_far_outside_is_the_fill_and_inside_unchanged(rng):
    x = rng.standard_normal((1, 2, 3, 4, 5))
    far = np.full((1, 1, 1, 2, 3), 5.0)
    out = fi.grid_sample(x, far, padding_mode="constant", fill=[3.0, -4.0])
    np.testing.assert_array_equal(out[0, :, 0, 0, 0], [3.0, -4.0])
    inside = rng.uniform(-0.5, 0.5, (1, 2, 2, 2, 3))
    np.testing.assert_allclose(fi.grid_sample(x, inside, padding_mode="constant", fill=9.0),
                               fi.grid_sample(x, inside), rtol=0, atol=1e-14)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("align_corners", [False, True])
def test_constant_fill_never_reaches_points_whose_taps_are_all_inside(mode, ndim, dtype,
                                                                      align_corners, rng):
    """The fill was weighted by 1 - (the inside weights' sum), 1 ulp off 0 at interior
    points where that sum rounds off 1 (1.5% of bilinear points in 2-D, most bicubic
    ones): 596 for a zero image at fill=1e10 (SciPy's grid-constant gives 0)."""
    sizes = (6, 7) if ndim == 2 else (4, 5, 6)
    g = rng.uniform(-1.4, 1.4, (2,) + (9,) * ndim + (ndim,)).astype(dtype)
    x = np.zeros((2, 2) + sizes, dtype)
    fill = 1e10 if dtype == np.float32 else 1e300
    got = fi.grid_sample(x, g, mode=mode, padding_mode="constant", fill=[fill, -fill],
                         align_corners=align_corners)
    lo, hi = {"bilinear": (0, 1), "bicubic": (-1, 2), "nearest": (0, 0)}[mode]
    p = np.stack([pixel(g[..., a].astype(np.float64), sizes[::-1][a], align_corners)
                  for a in range(ndim)], -1)
    base = np.round(p) if mode == "nearest" else np.floor(p)
    clear = np.abs(p - np.round(p * 2) / 2) > 1e-3        # away from knots and half-way points
    interior = np.all((base + lo >= 0) & (base + hi <= np.array(sizes[::-1]) - 1) & clear, -1)
    assert interior.sum() > 10
    np.testing.assert_array_equal(got[:, 0][interior], 0)
    np.testing.assert_array_equal(got[:, 1][interior], 0)
    far = fi.grid_sample(x, np.full_like(g, 5), mode=mode, padding_mode="constant",
                         fill=[fill, -fill], align_corners=align_corners)
    np.testing.assert_array_equal(far[:, 0], dtype(fill))


def test_a_per_channel_fill_beyond_the_dtype_is_named():
    """[1e39, 1, 1] with float32 said 'fill must be finite' and leaked an overflow warning."""
    x, g = np.zeros((1, 3, 4, 4), np.float32), np.zeros((1, 2, 2, 2), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"^grid_sample: fill must be representable in "
                                             r"float32; got 1e\+39 in \[1e\+39, 1.0, 1.0\]\.$"):
            fi.grid_sample(x, g, padding_mode="constant", fill=[1e39, 1.0, 1.0])


def test_wrap_is_periodic(rng):
    # shifting the grid by whole periods (2 in normalized units, align_corners=False)
    x = rng.standard_normal((1, 2, 5, 6))
    g = rng.uniform(-1, 1, (1, 4, 4, 2))
    for mode in ("bilinear", "nearest", "bicubic"):
        a = fi.grid_sample(x, g, mode=mode, padding_mode="wrap")
        b = fi.grid_sample(x, g + np.array([2.0, -4.0]), mode=mode, padding_mode="wrap")
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_wrap_channels_last_equals_nchw(rng):
    x = rng.standard_normal((2, 5, 4, 6))
    g = rng.uniform(-1.7, 1.7, (2, 3, 8, 2))
    go = rng.standard_normal((2, 5, 3, 8))
    for pad, fill in (("wrap", None), ("constant", [1.0, 2, 3, 4, 5])):
        kw = dict(padding_mode=pad, fill=fill)
        ref = fi.grid_sample(x, g, **kw)
        cl = fi.grid_sample(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), g,
                            channels_last=True, **kw)
        np.testing.assert_allclose(cl.transpose(0, 3, 1, 2), ref, rtol=1e-13, atol=1e-13)
        gi, gg = fi.grid_sample_backward(go, x, g, **kw)
        gi2, gg2 = fi.grid_sample_backward(np.ascontiguousarray(go.transpose(0, 2, 3, 1)),
                                           np.ascontiguousarray(x.transpose(0, 2, 3, 1)), g,
                                           channels_last=True, **kw)
        np.testing.assert_allclose(gi2.transpose(0, 3, 1, 2), gi, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(gg2, gg, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["constant", "wrap"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_gradients_by_finite_differences(mode, padding_mode, ndim, rng):
    spatial = (3, 4) if ndim == 2 else (2, 3, 4)
    x = rng.standard_normal((1, 2) + spatial)
    out_sp = (2, 3) if ndim == 2 else (2, 2, 2)
    g = off_ties(rng, (1,) + out_sp + (ndim,), spatial[::-1], False, spread=1.6)
    go = rng.standard_normal((1, 2) + out_sp)
    fill = [0.8, -1.7] if padding_mode == "constant" else None
    kw = dict(mode=mode, padding_mode=padding_mode, fill=fill)
    gi, gg = fi.grid_sample_backward(go, x, g, **kw)
    ngi, ngg = numeric_grads(lambda a, b: fi.grid_sample(a, b, **kw), [x, g], go)
    np.testing.assert_allclose(gi, ngi, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gg, ngg, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("padding_mode", ["constant", "wrap"])
def test_nearest_gradients(padding_mode, rng):
    # input gradient: the adjoint of the forward; grid gradient: zero
    x = rng.standard_normal((1, 2, 4, 5))
    g = off_ties(rng, (1, 3, 3, 2), (5, 4), False)
    go = rng.standard_normal((1, 2, 3, 3))
    fill = 2.0 if padding_mode == "constant" else None
    kw = dict(mode="nearest", padding_mode=padding_mode, fill=fill)
    gi, gg = fi.grid_sample_backward(go, x, g, **kw)
    base = fi.grid_sample(np.zeros_like(x), g, **kw)
    assert np.isclose(np.sum(go * (fi.grid_sample(x, g, **kw) - base)), np.sum(gi * x))
    assert not gg.any()


@pytest.mark.parametrize("padding_mode", ["constant", "wrap"])
def test_bit_identical_for_any_thread_count(threads, padding_mode, rng):
    x = rng.standard_normal((1, 6, 30, 40)).astype(np.float32)
    g = rng.uniform(-1.6, 1.6, (1, 64, 100, 2)).astype(np.float32)
    go = rng.standard_normal((1, 6, 64, 100)).astype(np.float32)
    fill = np.linspace(-1, 1, 6) if padding_mode == "constant" else None
    res = []
    for t in (1, 2, 3):
        threads.set_num_threads(t)
        kw = dict(padding_mode=padding_mode, fill=fill)
        res.append((fi.grid_sample(x, g, **kw),) + fi.grid_sample_backward(go, x, g, **kw))
    for other in res[1:]:
        for a, b in zip(res[0], other):
            np.testing.assert_array_equal(a, b)


def test_fill_errors(rng):
    x = np.zeros((1, 3, 4, 4))
    g = np.zeros((1, 2, 2, 2))
    with pytest.raises(ValueError, match="fill applies to padding_mode='constant' only"):
        fi.grid_sample(x, g, padding_mode="zeros", fill=1.0)
    with pytest.raises(ValueError, match=r"fill must be a scalar or have shape \(C,\)"):
        fi.grid_sample(x, g, padding_mode="constant", fill=[1.0, 2.0])
    with pytest.raises(ValueError, match="fill must be finite"):
        fi.grid_sample(x, g, padding_mode="constant", fill=np.nan)
    with pytest.raises(TypeError, match="fill must be a real number"):
        fi.grid_sample(x, g, padding_mode="constant", fill="red")
    for huge in (10**400, [0.0, 10**400, 1.0]):    # beyond float64: a ValueError, not Overflow
        with pytest.raises(ValueError, match="fill must be representable in float64"):
            fi.grid_sample(x, g, padding_mode="constant", fill=huge)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        fi.grid_sample(x, g, padding_mode="periodic")
    out = np.full((1, 3, 2, 2), 7.0)
    with pytest.raises(ValueError):
        fi.grid_sample(x, g, padding_mode="constant", fill=[1.0, 2.0], out=out)
    assert np.all(out == 7.0)


def test_wrap_kernel_code_reaches_the_c_abi_checks():
    # the raw kernel accepts padding code 3 (wrap) and still rejects codes beyond it
    from fastinterp._cpu import sample as cpu
    x = np.arange(4.0)
    out = np.zeros(1)
    cpu.grid_sample_fwd(out, x, np.array([1.0, 0.0]), 1, 1, 1, 4, 1, 1, False, 1, 3, False, 1)
    assert out[0] == 1.5          # half-way between the last and the first pixel
    with pytest.raises(ValueError):
        cpu.grid_sample_fwd(out, x, np.zeros(2), 1, 1, 1, 4, 1, 1, False, 1, 4, False, 1)


@pytest.mark.parametrize("fill", [np.array(0.5), np.array(0.5, np.float32)])
def test_zero_d_array_fill_is_a_number(fill):
    """A 0-d array (or tensor) fill is the number it holds, as a NumPy scalar is."""
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 9)).astype(np.float32)
    g = np.full((1, 4, 5, 2), 1.5, np.float32)
    np.testing.assert_array_equal(fi.grid_sample(x, g, padding_mode="constant", fill=fill),
                                  fi.grid_sample(x, g, padding_mode="constant", fill=0.5))
    M = np.array([[2.0, 0, 0], [0, 2.0, 0]])
    np.testing.assert_array_equal(fi.warp_affine(x, M, (5, 5), padding_mode="constant", fill=fill),
                                  fi.warp_affine(x, M, (5, 5), padding_mode="constant", fill=0.5))
    with pytest.raises(TypeError, match="grid_sample: fill must be a real number"):
        fi.grid_sample(x, g, padding_mode="constant", fill=np.array(True))
