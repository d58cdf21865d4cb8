"""Tests of fastinterp.resize: resize/interpolate, adaptive_avg_pool2d and their backwards.

Vocabulary: smoke, exceptions, cardinality (shapes), feature (values against
torch and hand-computed cases), gradcheck (finite differences, float64),
determinism across thread counts, CUDA kernels under the simulator.
"""
from __future__ import annotations

import importlib

import sys

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fastinterp as fi
from conftest import TOL_ORACLE, assert_close

R = importlib.import_module("fastinterp.resize")   # fi.resize is the function

DTYPES = [np.float32, np.float64]
# (mode, align_corners, antialias) for every distinct kernel configuration
CONFIGS = [
    ("nearest", None, False), ("nearest-exact", None, False), ("area", None, False),
    ("bilinear", False, False), ("bilinear", True, False),
    ("bicubic", False, False), ("bicubic", True, False),
    ("bilinear", False, True), ("bilinear", True, True),
    ("bicubic", False, True), ("bicubic", True, True),
]
INTERP_CONFIGS = [c for c in CONFIGS if c[0] not in ("nearest", "nearest-exact")]


def _kw(mode, align_corners, antialias):
    kw = {"mode": mode, "antialias": antialias}
    if align_corners is not None:
        kw["align_corners"] = align_corners
    return kw


def _torch_fn(torch, xt, size=None, scale_factor=None, recompute=None, **kw):
    """F.interpolate on a torch tensor (autograd-capable).

    torch 2.13's antialiased kernel is wrong when the output width is 1 and the
    height changes (it repeats one row); there the reference is torch itself
    run one axis at a time, each on a transposed image (one axis changing).
    """
    import torch.nn.functional as F
    h, w = xt.shape[2:]
    if isinstance(scale_factor, float):
        scale_factor = (scale_factor, scale_factor)
    if isinstance(size, int):
        size = (size, size)
    oh, ow = size if size is not None else (int(h * scale_factor[0]), int(w * scale_factor[1]))
    if kw.get("antialias") and ow == 1 and oh != h:
        sf = scale_factor if recompute is None or not recompute else None
        a = F.interpolate(xt.transpose(2, 3), size=(1, h), **kw).transpose(2, 3) \
            if sf is None else \
            F.interpolate(xt.transpose(2, 3), scale_factor=(sf[1], 1.0), **kw).transpose(2, 3)
        if sf is None:
            return F.interpolate(a.transpose(2, 3), size=(1, oh), **kw).transpose(2, 3)
        return F.interpolate(a.transpose(2, 3), scale_factor=(1.0, sf[0]), **kw).transpose(2, 3)
    return F.interpolate(xt, size=size, scale_factor=scale_factor,
                         recompute_scale_factor=recompute, **kw)


def _torch_resize(torch, x, size=None, scale_factor=None, recompute=None, **kw):
    xt = torch.from_numpy(np.ascontiguousarray(x))
    return _torch_fn(torch, xt, size, scale_factor, recompute, **kw).numpy()


def _torch_grad(torch, x, g, size=None, scale_factor=None, **kw):
    xt = torch.from_numpy(x).requires_grad_()
    y = _torch_fn(torch, xt, size, scale_factor, **kw)
    y.backward(torch.from_numpy(g))
    return xt.grad.numpy()


# --------------------------------------------------------------------------- smoke, hand cases

def test_smoke_shapes_and_alias():
    x = np.zeros((2, 3, 5, 7), np.float32)
    assert fi.resize(x, size=(4, 9)).shape == (2, 3, 4, 9)
    assert fi.interpolate is fi.resize
    assert fi.resize(x, size=4).shape == (2, 3, 4, 4)
    assert fi.resize(x, scale_factor=(2, 0.5), mode="nearest").shape == (2, 3, 10, 3)
    assert fi.resize(x, size=(3, 3)).dtype == np.float32
    assert fi.adaptive_avg_pool2d(x, (None, 2)).shape == (2, 3, 5, 2)
    assert fi.resize_backward(np.zeros((2, 3, 4, 9)), x.shape).shape == x.shape
    assert fi.adaptive_avg_pool2d_backward(np.zeros((2, 3, 2, 2)), (5, 7)).shape == (2, 3, 5, 7)


def test_worked_example_bilinear_align_corners():
    """2x2 -> 4x4, align_corners=True: output o samples input o * (2-1)/(4-1)."""
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    y = fi.resize(x, size=(4, 4), mode="bilinear", align_corners=True)
    row = 1 + np.arange(4) / 3.0
    expected = row[None, :] + 2 * (np.arange(4) / 3.0)[:, None]
    np.testing.assert_allclose(y[0, 0], expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(y[0, 0, 0], [1, 4 / 3, 5 / 3, 2], atol=1e-15)


def test_worked_example_matches_torch(torch):
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)
    for ac in (True, False):
        ref = _torch_resize(torch, x, size=(4, 4), mode="bilinear", align_corners=ac)
        assert_close(fi.resize(x, size=(4, 4), align_corners=ac), ref, table=TOL_ORACLE)
    # align_corners=False: half-pixel centres, the border is clamped
    y = fi.resize(x.astype(np.float64), size=(4, 4))
    np.testing.assert_allclose(y[0, 0, 0], [1, 1.25, 1.75, 2])


def test_hand_nearest_area_and_overlapping_pool():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(fi.resize(x, scale_factor=0.5, mode="nearest")[0, 0],
                                  [[0, 2], [8, 10]])
    np.testing.assert_array_equal(fi.resize(x, size=2, mode="nearest-exact")[0, 0],
                                  [[5, 7], [13, 15]])
    np.testing.assert_array_equal(fi.resize(x, size=2, mode="area")[0, 0],
                                  [[2.5, 4.5], [10.5, 12.5]])
    # 5 -> 3: windows [0, 2), [1, 4), [3, 5) overlap
    v = np.array([1.0, 2.0, 4.0, 8.0, 16.0]).reshape(1, 1, 1, 5)
    np.testing.assert_allclose(fi.adaptive_avg_pool2d(v, (1, 3))[0, 0, 0],
                               [1.5, 14 / 3, 12.0])
    g = fi.adaptive_avg_pool2d_backward(np.ones((1, 1, 1, 3)), (1, 1, 1, 5))[0, 0, 0]
    np.testing.assert_allclose(g, [0.5, 0.5 + 1 / 3, 1 / 3, 1 / 3 + 0.5, 0.5])


def test_identity_and_constant_preserved():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 6, 5))
    for mode, ac, aa in CONFIGS:
        np.testing.assert_allclose(fi.resize(x, size=(6, 5), **_kw(mode, ac, aa)), x,
                                   rtol=0, atol=1e-15)
        c = np.full((1, 1, 7, 9), 3.5)
        np.testing.assert_allclose(fi.resize(c, size=(4, 13), **_kw(mode, ac, aa)), 3.5,
                                   rtol=1e-14)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mode, antialias, rtol", [("area", False, 3e-7),
                                                   ("bilinear", True, 2e-6),
                                                   ("bicubic", True, 2e-6)])
def test_float32_long_windows_accumulate_exactly(mode, antialias, rtol, layout):
    """Windows of hundreds of taps do not drift in float32: area keeps a constant to an
    ulp or two and random data to float32 rounding of the float64 result; the
    antialiased filters keep them to their float32 weights' own rounding (torch drifts
    by 2e-6 there)."""
    rng = np.random.default_rng(7)
    shape = (1, 1003, 997, 2) if layout == "NHWC" else (1, 2, 1003, 997)
    out_hw = (1, 3)
    for value in (200.0, 0.1, 1 / 3, 1.9999, 123456.7):
        c = np.full(shape, value, np.float32)
        got = fi.resize(c, size=out_hw, mode=mode, antialias=antialias, layout=layout)
        np.testing.assert_allclose(got, np.float32(value), rtol=rtol, atol=0)
        if mode == "area":
            pooled = fi.adaptive_avg_pool2d(c, out_hw, layout=layout)
            np.testing.assert_allclose(pooled, np.float32(value), rtol=3e-7, atol=0)
    x = (rng.random(shape) * 100 + 50).astype(np.float32)
    got = fi.resize(x, size=out_hw, mode=mode, antialias=antialias, layout=layout)
    ref = fi.resize(x.astype(np.float64), size=out_hw, mode=mode, antialias=antialias,
                    layout=layout)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=0)
    back = fi.resize_backward(np.ones_like(got), x.shape, mode=mode, antialias=antialias,
                              layout=layout)
    back64 = fi.resize_backward(np.ones(got.shape), x.shape, mode=mode, antialias=antialias,
                                layout=layout)
    np.testing.assert_allclose(back, back64, rtol=rtol, atol=1e-12)


def _antialias_weights_tap_by_tap(dt, n_in, n_out, align_corners, sf, kind, widen):
    """torch's antialiased weights as torch computes them, one tap at a time (the
    reference for the tables, which are built in one pass)."""
    scale = R._area_scale(dt, n_in, n_out, align_corners, sf)
    wide = widen and scale >= 1
    support = dt(R._AA_SUPPORT[kind] * float(scale)) if wide else dt(R._AA_SUPPORT[kind])
    delta = 0.5 if align_corners and not widen else 0.0
    center = (np.float64(scale) * (np.arange(n_out) + 0.5 - delta)).astype(dt)
    invscale = dt(1.0 / float(scale)) if wide else dt(1.0)
    xmin = np.maximum(np.trunc((center - support).astype(np.float64) + 0.5 + delta),
                      0).astype(np.int64)
    xsize = np.clip(np.minimum(np.trunc((center + support).astype(np.float64) + 0.5 + delta)
                               .astype(np.int64), n_in) - xmin,
                    0, int(np.ceil(support)) * 2 + 1)
    K = max(1, int(xsize.max(initial=0)))
    w = np.zeros((K, n_out), dt)
    total = np.zeros(n_out, dt)
    for j in range(K):
        arg = ((xmin + j).astype(dt) - center).astype(np.float64) + 0.5 - delta
        wj = R._aa_filter(dt, (arg * np.float64(invscale)).astype(dt), kind)
        w[j] = np.where(j < xsize, wj, dt(0))
        total = (total + w[j]).astype(dt)
    return xmin, xsize, np.where(total != 0, w / np.where(total != 0, total, 1), w).astype(dt)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind, widen", [("linear", True), ("cubic", True), ("lanczos", True),
                                         ("lanczos", False)])
def test_antialias_tables_are_built_in_one_pass_with_torchs_sums(dtype, kind, widen):
    """A shrink of a long axis has windows of thousands of taps: the table is built in one
    vectorized pass (a loop per tap took 20 s for 2**18 -> 3 pixels, at every call: a table that
    large is not cached), its weights bit-identical to torch's tap-by-tap
    running sums."""
    rng = np.random.default_rng(5)
    geometries = [(2 ** 13, 3), (4096, 1), (1000, 17), (999, 1000), (300, 299), (5, 2)]
    geometries += [tuple(int(v) for v in rng.integers(1, 3000, 2)) for _ in range(6)]
    calls = []
    filt = R._aa_filter
    for n_in, n_out in geometries:
        for align_corners, sf in ((False, None), (True, None), (False, n_out / n_in * 0.97)):
            if n_in == n_out:
                continue
            R._aa_filter = lambda *a: calls.append(1) or filt(*a)
            try:
                table = R._antialias_table(dtype, n_in, n_out, align_corners, sf, kind, widen)
            finally:
                R._aa_filter = filt
            assert len(calls) == 1
            calls.clear()
            xmin, xsize, w = _antialias_weights_tap_by_tap(dtype, n_in, n_out, align_corners,
                                                           sf, kind, widen)
            taps = np.arange(w.shape[0])[:, None]
            real = taps < xsize
            if table.taps < w.shape[0]:             # an identity axis keeps one tap
                assert table.taps == 1 and np.all(w[0] == 1) and not np.any(w[1:])
                continue
            np.testing.assert_array_equal(table.idx[real], np.broadcast_to(xmin + taps,
                                                                           w.shape)[real])
            assert table.w[real].tobytes() == w[real].tobytes()
            assert not np.any(table.w[~real])


# --------------------------------------------------------------------------- exceptions

@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(size=0), ValueError, "size must be positive"),
    (dict(size=(3, -1)), ValueError, "size must be positive"),
    (dict(size=(3, 2, 1)), ValueError, "size must be"),
    (dict(size=2.5), TypeError, "size must be"),
    (dict(size=True), TypeError, "size must be"),
    (dict(), ValueError, "size or scale_factor must be given"),
    (dict(size=2, scale_factor=2.0), ValueError, "must not both"),
    (dict(scale_factor=0.0), ValueError, "scale_factor must be positive"),
    (dict(scale_factor=-2.0), ValueError, "scale_factor must be positive"),
    (dict(scale_factor=float("nan")), ValueError, "finite"),
    (dict(scale_factor=0.1), ValueError, "at least 1 x 1"),
    (dict(scale_factor=1e300), ValueError, r"at most 2\*\*31 - 1 pixels along each axis"),
    (dict(scale_factor=(1e9, 1.0)), ValueError, r"scale_factor must give an output of at most"),
    (dict(size=(2**40, 2)), ValueError, r"size must give an output of at most 2\*\*31 - 1"),
    (dict(size=2, recompute_scale_factor=True), ValueError, "recompute_scale_factor"),
    (dict(size=2, mode="hamming"), ValueError, "mode must be one of"),
    (dict(size=2, mode="nearest", align_corners=False), ValueError, "align_corners must be None"),
    (dict(size=2, mode="area", align_corners=True), ValueError, "align_corners must be None"),
    (dict(size=2, mode="nearest", antialias=True), ValueError, "antialias=True needs"),
    (dict(size=2, align_corners="yes"), TypeError, "align_corners must be a bool"),
    (dict(size=2, layout="CWH"), ValueError, "layout must be one of"),
    (dict(size=2, layout="CHW"), ValueError, r"must have shape \(C, H, W\) for layout='CHW'"),
])
def test_resize_argument_errors(kwargs, exc, words):
    x = np.zeros((1, 1, 4, 5), np.float32)
    with pytest.raises(exc, match=words):
        fi.resize(x, **kwargs)


@pytest.mark.parametrize("call", [
    lambda x, **kw: fi.resize(x, 3, **kw),
    lambda x, **kw: fi.resize_backward(np.zeros(x.shape[:-1] + (3,)), x.shape, **kw),
])
@pytest.mark.parametrize("shape", [(1, 2, 9), (1, 2, 4, 9), (1, 1, 2, 4, 9)])
def test_resize_an_unknown_layout_is_the_error_whatever_the_mode(call, shape):
    # 'linear' is (N, C, L) data's mode: the unknown layout, not the mode, is what is wrong
    x = np.zeros(shape)
    for mode in ("linear", "bilinear", "trilinear"):
        with pytest.raises(ValueError, match="layout must be (one of .*|None .*); got 'NCL'"):
            call(x, mode=mode, layout="NCL")


@pytest.mark.parametrize("shape", [(1, 1, 4, 4), (1, 1, 4)])
def test_resize_backward_refuses_recompute_scale_factor_without_scale_factor_as_resize(shape):
    g = np.zeros(shape[:-1] + (3,))
    mode = "bilinear" if len(shape) == 4 else "linear"
    for call in (lambda: fi.resize(np.zeros(shape), 3, mode=mode, recompute_scale_factor=True),
                 lambda: fi.resize_backward(g, shape, mode=mode, recompute_scale_factor=True)):
        with pytest.raises(ValueError, match="recompute_scale_factor must be None or False "
                                             "without a scale_factor"):
            call()
    assert fi.resize_backward(g, shape, mode=mode, recompute_scale_factor=False).shape == shape


def test_scale_factor_as_a_0d_array_is_a_number():
    # as a NumPy scalar is (a 0-d array was refused)
    x = np.ones((1, 1, 4, 4))
    want = fi.resize(x, scale_factor=2.0)
    for sf in (np.array(2.0), np.array(2), np.float32(2.0), (np.array(2.0), 2.0)):
        np.testing.assert_array_equal(fi.resize(x, scale_factor=sf), want)
    for bad in (np.array(True), np.array(2j), np.array("2")):
        with pytest.raises(TypeError, match="scale_factor must be a positive float"):
            fi.resize(x, scale_factor=bad)


@pytest.mark.parametrize("shape", [(1, 2, 6), (1, 2, 6, 7), (1, 2, 3, 6, 7)])
def test_backward_input_size_as_a_1d_integer_array_is_read_as_the_sizes(shape):
    # (it was taken for the forward's input: its own shape (k,) read as 1-D data's length)
    k = len(shape) - 2
    g = np.ones(shape[:2] + (2,) * k)
    pool = getattr(fi, f"adaptive_avg_pool{k}d_backward")
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[k]
    sizes = [shape, shape[2:]]
    arrays = [np.array(s) for s in sizes] + [np.array(s, np.int32) for s in sizes]
    torch = sys.modules.get("torch")
    if torch is not None:
        arrays += [torch.tensor(s) for s in sizes]
    for size in arrays:
        np.testing.assert_array_equal(pool(g, size), pool(g, shape))
        np.testing.assert_array_equal(fi.resize_backward(g, size, mode=mode),
                                      fi.resize_backward(g, shape, mode=mode))
    assert pool(g, np.zeros(shape)).shape == shape          # the input itself: its shape
    with pytest.raises(TypeError, match="input_size must be a shape"):
        pool(g, np.array(shape, np.float64))


@pytest.mark.parametrize("shape", [(5,), (1, 1, 1, 1, 4, 5)])   # 3-D and 5-D: test_volume
def test_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"input must have shape \(N, C, H, W\)"):
        fi.resize(np.zeros(shape), size=2)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        fi.resize(np.zeros(shape), size=2, layout="NHWC")
    with pytest.raises(ValueError, match="input must have shape"):
        fi.adaptive_avg_pool2d(np.zeros(shape), 2)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.complex64, bool])  # half: test_half.py
def test_non_float_dtypes(dtype):
    if dtype is not np.uint8:   # uint8 images: tests/test_resize_uint8.py
        with pytest.raises(TypeError, match=r"must have dtype float32 or float64 "
                                            r"\(or uint8, float16, bfloat16\)"):
            fi.resize(np.zeros((1, 1, 4, 4), dtype), size=2)
    with pytest.raises(TypeError, match="grad_output must have dtype"):
        fi.resize_backward(np.zeros((1, 1, 2, 2), dtype), (1, 1, 4, 4))


def test_empty_spatial_input_rejected():
    with pytest.raises(ValueError, match="H >= 1 and W >= 1"):
        fi.resize(np.zeros((1, 1, 0, 4)), size=2)


def test_out_errors_leave_out_untouched():
    x = np.ones((1, 2, 4, 4), np.float32)
    out = np.full((1, 2, 2, 2), 7.0, np.float32)
    with pytest.raises(ValueError, match=r"out must have shape \(1, 2, 3, 3\)"):
        fi.resize(x, size=3, out=out)
    with pytest.raises(TypeError, match="out must have dtype float32"):
        fi.resize(x, size=2, out=out.astype(np.float64))
    with pytest.raises(ValueError, match="must not share memory"):
        fi.resize(x, size=4, out=x)
    with pytest.raises(ValueError, match="C-contiguous"):
        fi.resize(x, size=2, out=np.zeros((1, 2, 2, 4), np.float32)[..., ::2])
    with pytest.raises(ValueError, match="size must be positive"):
        fi.resize(x, size=0, out=out)
    assert np.all(out == 7.0)
    got = fi.resize(x, size=2, out=out)
    assert got is out and np.all(out == 1.0)


def test_backward_and_pool_argument_errors():
    g = np.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match="same N and C"):
        fi.resize_backward(g, (1, 3, 2, 2))
    with pytest.raises(ValueError, match="input_size must be a shape"):
        fi.resize_backward(g, (2, 2, 2))
    with pytest.raises(TypeError, match="input_size must be a shape"):
        fi.resize_backward(g, 5)
    with pytest.raises(ValueError, match="input_size must have H >= 1"):
        fi.resize_backward(g, (0, 2))
    with pytest.raises(ValueError, match=r"grad_output must have spatial size \(6, 6\)"):
        fi.resize_backward(g, (1, 2, 3, 3), scale_factor=2.0)
    with pytest.raises(ValueError, match="align_corners must be None"):
        fi.resize_backward(g, (2, 2), mode="nearest", align_corners=True)
    with pytest.raises(ValueError, match=r"output_size must be a positive int .*; got \(0, 2\)"):
        fi.adaptive_avg_pool2d(g, (0, 2))
    # the message shows the output_size given, None entries included
    with pytest.raises(ValueError, match=r"None keeps that input size\); got \(0, None\)"):
        fi.adaptive_avg_pool2d(g, (0, None))
    with pytest.raises(TypeError, match=r"got \(\(None, 4\), 2, None\)"):
        fi.adaptive_avg_pool3d(np.ones((1, 1, 4, 5, 6)), ((None, 4), 2, None))
    with pytest.raises(TypeError, match="output_size must be an int or a pair"):
        fi.adaptive_avg_pool2d(g, None)
    with pytest.raises(ValueError, match="output_size must be an int or a pair"):
        fi.adaptive_avg_pool2d(g, (1, 2, 3))


# --------------------------------------------------------------------------- values vs torch

def _assert_nearest_equals_torch(torch, x, mode, **kw):
    """fastinterp's nearest modes equal torch's bit for bit (index maps included)."""
    got = fi.resize(x, mode=mode, **kw)
    ref = _torch_resize(torch, x, mode=mode, **kw)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def _code(h, w, dtype):
    """An image whose every pixel holds its own flat index (exact in float32 up to 2**24)."""
    return np.arange(h * w, dtype=dtype).reshape(1, 1, h, w)


@settings(max_examples=60)
@given(h=st.integers(1, 90), w=st.integers(1, 90), oh=st.integers(1, 200),
       ow=st.integers(1, 200), mode=st.sampled_from(["nearest", "nearest-exact"]),
       dtype=st.sampled_from(DTYPES))
def test_nearest_index_maps_vs_torch(torch, h, w, oh, ow, mode, dtype):
    """Sizes on both sides of torch's small-output rule (H_out + W_out <= 128), ties included."""
    _assert_nearest_equals_torch(torch, _code(h, w, dtype), mode, size=(oh, ow))


_SPECIAL_SCALES = [1.0, 2.0, 1.25, 1.0001, 2.0001, 0.9999, 1.9999, 0.5, 3.0, 1.5, 1 / 3]


@settings(max_examples=80)
@given(h=st.integers(1, 150), w=st.integers(1, 150),
       sh=st.one_of(st.floats(0.2, 4.0), st.sampled_from(_SPECIAL_SCALES)),
       sw=st.one_of(st.floats(0.2, 4.0), st.sampled_from(_SPECIAL_SCALES)),
       mode=st.sampled_from(["nearest", "nearest-exact"]), dtype=st.sampled_from(DTYPES))
def test_nearest_scale_factor_vs_torch(torch, h, w, sh, sw, mode, dtype):
    """Any scale factor, incl. ones that keep or double an axis: torch's
    floor(o / scale_factor) on large outputs, its exact shortcuts on small ones."""
    if int(h * sh) < 1 or int(w * sw) < 1:
        return
    _assert_nearest_equals_torch(torch, _code(h, w, dtype), mode, scale_factor=(sh, sw))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, scale", [
    ((2, 295), 1.25),      # H keeps its size on a wide output: torch reads rows [0, 0]
    ((100, 100), 1.0001), ((100, 100), 2.0001), ((60, 68), 1.0001), ((60, 69), 1.0001),
    ((64, 64), 2.0001), ((63, 1), 2.0001), ((1, 63), 2.0001), ((1, 64), 2.0001),
])
def test_nearest_scale_factor_shortcut_reproducers(torch, dtype, shape, scale):
    x = _code(*shape, dtype)
    for mode in ("nearest", "nearest-exact"):
        _assert_nearest_equals_torch(torch, x, mode, scale_factor=scale)
    if shape == (2, 295):   # the reported case: floor(1 / 1.25) = 0
        np.testing.assert_array_equal(fi.resize(x, scale_factor=scale, mode="nearest")[0, 0, :, 0],
                                      [0, 0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nearest_large_sizes_equal_torch(torch, dtype):
    """Outputs over the small-output rule take torch's main nearest kernel, whose
    index arithmetic fastinterp reproduces: equal everywhere, ties included
    (these sizes contain ties: 3 -> 141, 2 -> 159, 6 -> 141 ...)."""
    for (h, w, oh, ow) in [(3, 5, 141, 300), (37, 64, 129, 1000), (512, 300, 1024, 151),
                           (2, 7, 159, 165), (6, 24, 141, 148)]:
        for mode in ("nearest", "nearest-exact"):
            _assert_nearest_equals_torch(torch, _code(h, w, dtype), mode, size=(oh, ow))


@pytest.mark.parametrize("layout", ["channels_last", "batch"])
def test_nearest_rule_independent_of_batch_and_layout(torch, layout):
    """torch picks its index rule from the output size only (not N, C or memory format)."""
    import torch.nn.functional as F
    x = np.random.default_rng(3).standard_normal((2, 3, 60, 68)).astype(np.float32)
    xt = torch.from_numpy(x)
    if layout == "channels_last":
        xt = xt.contiguous(memory_format=torch.channels_last)
    for scale in (1.0001, 2.0001, 0.9999):
        for mode in ("nearest", "nearest-exact"):
            ref = F.interpolate(xt, scale_factor=scale, mode=mode).numpy()
            np.testing.assert_array_equal(fi.resize(x, scale_factor=scale, mode=mode), ref)


config_st = st.sampled_from(INTERP_CONFIGS)


@settings(max_examples=40)
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 14), w=st.integers(1, 14),
       oh=st.integers(1, 24), ow=st.integers(1, 24), cfg=config_st, dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_forward_vs_torch_sizes(torch, n, c, h, w, oh, ow, cfg, dtype, seed):
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(dtype)
    kw = _kw(*cfg)
    ref = _torch_resize(torch, x, size=(oh, ow), **kw)
    assert_close(fi.resize(x, size=(oh, ow), **kw), ref, table=TOL_ORACLE, scale=4)


@settings(max_examples=30)
@given(h=st.integers(1, 14), w=st.integers(1, 14), sh=st.floats(0.25, 3.5),
       sw=st.floats(0.25, 3.5), cfg=config_st, recompute=st.sampled_from([None, False, True]),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_forward_vs_torch_scale_factors(torch, h, w, sh, sw, cfg, recompute, dtype, seed):
    if int(h * sh) < 1 or int(w * sw) < 1:
        return
    x = np.random.default_rng(seed).standard_normal((1, 2, h, w)).astype(dtype)
    kw = _kw(*cfg)
    ref = _torch_resize(torch, x, scale_factor=(sh, sw), recompute=recompute, **kw)
    got = fi.resize(x, scale_factor=(sh, sw), recompute_scale_factor=recompute, **kw)
    assert_close(got, ref, table=TOL_ORACLE, scale=4)


@settings(max_examples=30)
@given(n=st.integers(1, 2), c=st.integers(1, 2), h=st.integers(1, 12), w=st.integers(1, 12),
       oh=st.integers(1, 20), ow=st.integers(1, 20), cfg=st.sampled_from(CONFIGS),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_backward_vs_torch(torch, n, c, h, w, oh, ow, cfg, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    g = rng.standard_normal((n, c, oh, ow)).astype(dtype)
    kw = _kw(*cfg)
    if cfg[0] in ("nearest", "nearest-exact"):
        code = np.arange(h * w, dtype=dtype).reshape(1, 1, h, w)
        if not np.array_equal(fi.resize(code, size=(oh, ow), **kw),
                              _torch_resize(torch, code, size=(oh, ow), **kw)):
            return   # torch rounds a tie the other way: see the index-map tests
    ref = _torch_grad(torch, x, g, size=(oh, ow), **kw)
    assert_close(fi.resize_backward(g, x.shape, **kw), ref, table=TOL_ORACLE, scale=4)


def test_backward_scale_factor_vs_torch(torch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 7, 9))
    for cfg in INTERP_CONFIGS:
        kw = _kw(*cfg)
        y = fi.resize(x, scale_factor=(1.7, 0.6), **kw)
        g = rng.standard_normal(y.shape)
        ref = _torch_grad(torch, x, g, scale_factor=(1.7, 0.6), **kw)
        assert_close(fi.resize_backward(g, x.shape, scale_factor=(1.7, 0.6), **kw), ref,
                     table=TOL_ORACLE)


@settings(max_examples=30)
@given(h=st.integers(1, 20), w=st.integers(1, 20), oh=st.integers(1, 20), ow=st.integers(1, 20),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_adaptive_avg_pool_vs_torch(torch, h, w, oh, ow, dtype, seed):
    import torch.nn.functional as F
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    xt = torch.from_numpy(x).requires_grad_()
    y = F.adaptive_avg_pool2d(xt, (oh, ow))
    assert_close(fi.adaptive_avg_pool2d(x, (oh, ow)), y.detach().numpy(), table=TOL_ORACLE)
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(torch.from_numpy(g))
    assert_close(fi.adaptive_avg_pool2d_backward(g, x), xt.grad.numpy(), table=TOL_ORACLE)


def test_area_mode_with_scale_factor_vs_torch(torch):
    x = np.random.default_rng(4).standard_normal((1, 1, 11, 13))
    ref = _torch_resize(torch, x, scale_factor=0.45, mode="area")
    assert_close(fi.resize(x, scale_factor=0.45, mode="area"), ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_realistic_sizes_vs_torch(torch, dtype):
    """Paths taken only by longer rows: the permute forms (2- and 4-vector windows),
    the H-first row cache, several row blocks per plane."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 3, 96, 160)).astype(dtype)
    for size in [(192, 320), (48, 80), (100, 171), (24, 40), (40, 53)]:
        for cfg in [("bilinear", False, False), ("bicubic", True, False),
                    ("bilinear", False, True), ("area", None, False), ("nearest", None, False)]:
            kw = _kw(*cfg)
            ref = _torch_resize(torch, x, size=size, **kw)
            assert_close(fi.resize(x, size=size, **kw), ref, table=TOL_ORACLE, scale=4)
    g = rng.standard_normal((1, 3, 192, 320)).astype(dtype)
    for cfg in [("bilinear", False, False), ("bicubic", False, False)]:
        kw = _kw(*cfg)
        assert_close(fi.resize_backward(g, x.shape, **kw),
                     _torch_grad(torch, x, g, size=(192, 320), **kw), table=TOL_ORACLE, scale=4)


def test_permute_forms_cover_the_benchmark_shapes():
    """Which horizontal path a table gets (where this build has AVX-512)."""
    if not importlib.import_module("fastinterp._cpu.resize").HAVE_PERM:
        pytest.skip("built without AVX-512")
    up = R.axis_table("bilinear", 512, 1024, False, None, False, "float32")
    area4 = R.axis_table("area", 512, 128, None, None, False, "float32")
    aa4 = R.axis_table("bilinear", 512, 128, False, None, True, "float32")
    assert R.permute_form(up)[2] == 0 and len(R.permute_form(up)[0]) == 64
    assert R.permute_form(area4)[2] == 16
    assert R.permute_form(R.transposed_table(up))[2] == 16
    assert R.permute_form(aa4)[2] == 8   # 16 outputs would span 73 > 64 inputs: blocks of 8


# --------------------------------------------------------------------------- gradcheck

@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("sizes", [((5, 7), (9, 4)), ((8, 6), (3, 6))])
def test_gradcheck_finite_differences(cfg, sizes):
    """(f(x + eps v) - f(x - eps v)) / 2 eps == <v, resize_backward(g)> for f = <resize(x), g>."""
    rng = np.random.default_rng(6)
    (h, w), (oh, ow) = sizes
    x = rng.standard_normal((2, 2, h, w))
    g = rng.standard_normal((2, 2, oh, ow))
    kw = _kw(*cfg)
    grad = fi.resize_backward(g, x.shape, **kw)
    eps = 1e-6
    for _ in range(3):
        v = rng.standard_normal(x.shape)
        fd = (np.sum(fi.resize(x + eps * v, size=(oh, ow), **kw) * g)
              - np.sum(fi.resize(x - eps * v, size=(oh, ow), **kw) * g)) / (2 * eps)
        np.testing.assert_allclose(fd, np.sum(v * grad), rtol=1e-7, atol=1e-8)


def test_gradcheck_adaptive_pool():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 7, 10))
    g = rng.standard_normal((1, 2, 3, 4))
    grad = fi.adaptive_avg_pool2d_backward(g, x.shape)
    eps = 1e-6
    for i in np.ndindex(1, 2, 2, 3):
        e = np.zeros_like(x)
        e[i] = 1.0
        fd = (np.sum(fi.adaptive_avg_pool2d(x + eps * e, (3, 4)) * g)
              - np.sum(fi.adaptive_avg_pool2d(x - eps * e, (3, 4)) * g)) / (2 * eps)
        np.testing.assert_allclose(fd, grad[i], rtol=1e-7, atol=1e-9)


def test_transposed_tables_are_adjoint():
    for cfg in CONFIGS:
        t = R.axis_table(cfg[0], 9, 14, cfg[1], None, cfg[2], "float64")
        dense = np.zeros((t.n_out, t.n_in))
        np.add.at(dense, (np.broadcast_to(np.arange(t.n_out), t.idx.shape), t.idx), t.w)
        tt = R.transposed_table(t)
        back = np.zeros((t.n_in, t.n_out))
        np.add.at(back, (np.broadcast_to(np.arange(t.n_in), tt.idx.shape), tt.idx), tt.w)
        np.testing.assert_allclose(back, dense.T, atol=1e-15)


# --------------------------------------------------------------------------- determinism, layouts

@pytest.mark.parametrize("cfg", [("bilinear", False, False), ("bicubic", False, True),
                                 ("area", None, False), ("nearest", None, False)])
@pytest.mark.parametrize("size", [(131, 90), (29, 17)])
def test_bit_identical_across_thread_counts(threads, monkeypatch, cfg, size):
    monkeypatch.setattr(R, "_MIN_PER_THREAD", 1)   # parallel even for these small arrays
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 67, 45)).astype(np.float32)
    g = rng.standard_normal((2, 3) + size).astype(np.float32)
    kw = _kw(*cfg)
    results = []
    for n in (1, 2, 3):
        threads.set_num_threads(n)
        results.append((fi.resize(x, size=size, **kw), fi.resize_backward(g, x.shape, **kw),
                        fi.adaptive_avg_pool2d(x, size[::-1])))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cfg", [("bilinear", True, False), ("bicubic", False, True),
                                 ("area", None, False), ("nearest-exact", None, False)])
def test_nhwc_layout_equals_nchw(cfg):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 11, 8))
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    kw = _kw(*cfg)
    y = fi.resize(x, size=(7, 19), **kw)
    yh = fi.resize(xh, size=(7, 19), layout="NHWC", **kw)
    assert yh.shape == (2, 7, 19, 3)
    np.testing.assert_allclose(yh.transpose(0, 3, 1, 2), y, rtol=1e-13, atol=1e-14)
    g = rng.standard_normal(y.shape)
    gh = np.ascontiguousarray(g.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(
        fi.resize_backward(gh, xh.shape, layout="NHWC", **kw).transpose(0, 3, 1, 2),
        fi.resize_backward(g, x.shape, **kw), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(fi.adaptive_avg_pool2d(xh, 3, layout="NHWC").transpose(0, 3, 1, 2),
                               fi.adaptive_avg_pool2d(x, 3), rtol=1e-13, atol=1e-15)


def test_non_contiguous_input_is_copied():
    rng = np.random.default_rng(10)
    big = rng.standard_normal((2, 3, 20, 30))
    view = big[:, ::-1, ::2, 1::3]
    np.testing.assert_array_equal(fi.resize(view, size=(5, 4)),
                                  fi.resize(np.ascontiguousarray(view), size=(5, 4)))


def test_torch_tensors_round_trip_and_channels_last(torch):
    x = torch.randn(2, 3, 10, 12)
    y = fi.resize(x, size=(5, 7))
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == (2, 3, 5, 7)
    import torch.nn.functional as F
    assert_close(y.numpy(), F.interpolate(x, size=(5, 7), mode="bilinear").numpy(),
                 table=TOL_ORACLE)
    xc = x.contiguous(memory_format=torch.channels_last)
    yc = fi.resize(xc, size=(5, 7))
    assert yc.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(yc.numpy(), y.numpy(), rtol=1e-6, atol=1e-6)
    assert fi.last_kernel().key == ("resize", "cpu", "float32")


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("mode", ["linear", "nearest", "area"])
def test_torch_tensors_of_1d_data(torch, dtype, mode):
    import torch.nn.functional as F
    x = torch.randn(2, 3, 5).to(getattr(torch, dtype))
    y = fi.resize(x, size=7, mode=mode)
    assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and tuple(y.shape) == (2, 3, 7)
    want = F.interpolate(x.float(), size=7, mode=mode).to(x.dtype)
    torch.testing.assert_close(y, want, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match=r"^resize: a 3-D input without layout= is 1-D data"):
        fi.resize(x, size=(4, 4))
    with pytest.raises(ValueError, match=r"^resize: a 3-D uint8 input needs layout='CHW' .*: "
                                         r"uint8 runs on 2-D images only, and a 3-D input "
                                         r"without layout= is 1-D data \(N, C, L\)"):
        fi.resize(x.to(torch.uint8), size=4)     # an image without its layout, or 1-D data
    with pytest.raises(ValueError, match=r"^resize: a 3-D input without layout= is 1-D data"):
        fi.resize(x.to(torch.uint8), size=(4, 4))


def test_sizes_as_integer_arrays_and_tensors(torch):
    """Integer arrays and tensors, and 0-d ones, give a size as the ints they hold."""
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 6))
    want = fi.resize(x, size=(6, 7))
    for size in (torch.tensor([6, 7]), np.array([6, 7]), (torch.tensor(6), np.int8(7)),
                 np.array([6, 7], np.uint16)):
        np.testing.assert_array_equal(fi.resize(x, size=size), want)
    np.testing.assert_array_equal(fi.resize(x, size=torch.tensor(6)), fi.resize(x, size=6))
    np.testing.assert_array_equal(fi.resize(x, size=np.array(6)), fi.resize(x, size=6))
    np.testing.assert_array_equal(fi.adaptive_avg_pool2d(x, torch.tensor([2, 3])),
                                  fi.adaptive_avg_pool2d(x, (2, 3)))
    np.testing.assert_array_equal(fi.adaptive_avg_pool2d(x, torch.tensor(2)),
                                  fi.adaptive_avg_pool2d(x, 2))
    np.testing.assert_array_equal(fi.adaptive_avg_pool2d(x, (None, torch.tensor(3))),
                                  fi.adaptive_avg_pool2d(x, (5, 3)))
    np.testing.assert_array_equal(fi.adaptive_avg_pool1d(x[0], torch.tensor([4])),
                                  fi.adaptive_avg_pool1d(x[0], 4))
    v = x[:, :, None].repeat(3, axis=2)
    np.testing.assert_array_equal(fi.adaptive_avg_pool3d(v, np.array([2, 3, 4])),
                                  fi.adaptive_avg_pool3d(v, (2, 3, 4)))
    np.testing.assert_array_equal(fi.resize(v, size=torch.tensor([2, 3, 4]), mode="trilinear"),
                                  fi.resize(v, size=(2, 3, 4), mode="trilinear"))
    np.testing.assert_array_equal(fi.resize(x[0], size=torch.tensor([8]), mode="linear"),
                                  fi.resize(x[0], size=8, mode="linear"))


@pytest.mark.parametrize("call, exc, words", [
    (lambda x, t: fi.resize(x, size=t.tensor([6.0, 7.0])), TypeError,
     r"^resize: size must be a positive int or a pair of them \(H, W\); got tensor"),
    (lambda x, t: fi.resize(x, size=t.tensor([True, True])), TypeError,
     r"^resize: size must be a positive int or a pair"),
    (lambda x, t: fi.resize(x, size=np.array([6.0, 7.0])), TypeError,
     r"^resize: size must be a positive int or a pair"),
    (lambda x, t: fi.resize(x, size=t.tensor(6.0)), TypeError, r"^resize: size must be a positive"),
    (lambda x, t: fi.resize(x, size=t.tensor([6])), ValueError,
     r"^resize: size must be a positive int or a pair of them \(H, W\); got tensor\(\[6\]\)"),
    (lambda x, t: fi.resize(x, size=t.tensor([[6, 7]])), TypeError,
     r"^resize: size must be a positive int or a pair"),
    (lambda x, t: fi.resize(x, size=t.tensor([0, 7])), ValueError,
     r"^resize: size must be positive"),
    (lambda x, t: fi.adaptive_avg_pool2d(x, t.tensor([2.0, 3.0])), TypeError,
     r"^adaptive_avg_pool2d: output_size must be a positive int or a pair"),
    (lambda x, t: fi.adaptive_avg_pool2d(x, t.tensor([2, 3, 4])), ValueError,
     r"^adaptive_avg_pool2d: output_size must be an int or a pair \(H, W\); got tensor"),
    (lambda x, t: fi.adaptive_avg_pool2d(x, t.tensor(True)), TypeError,
     r"^adaptive_avg_pool2d: output_size must be"),
    (lambda x, t: fi.adaptive_avg_pool1d(x[0], t.tensor([2**40])), ValueError,
     r"^adaptive_avg_pool1d: output_size must give an output of at most 2\*\*31 - 1"),
])
def test_sizes_as_arrays_of_other_types(torch, call, exc, words):
    with pytest.raises(exc, match=words):
        call(np.zeros((2, 3, 5, 6)), torch)


def test_registry_records_each_op():
    x = np.zeros((1, 1, 4, 4))
    fi.resize(x, size=2)
    assert fi.last_kernel().key == ("resize", "cpu", "float64")
    fi.resize_backward(np.zeros((1, 1, 2, 2), np.float32), x.shape)
    assert fi.last_kernel().key == ("resize_backward", "cpu", "float32")
    fi.adaptive_avg_pool2d(x, 1)
    assert fi.last_kernel().key == ("adaptive_avg_pool2d", "cpu", "float64")
    fi.adaptive_avg_pool2d_backward(np.zeros((1, 1, 1, 1)), x.shape)
    assert fi.last_kernel().key == ("adaptive_avg_pool2d_backward", "cpu", "float64")


def test_empty_batch():
    assert fi.resize(np.zeros((0, 3, 4, 4)), size=2).shape == (0, 3, 2, 2)


# --------------------------------------------------------------------------- CUDA (simulator)

@pytest.mark.cudasim
@pytest.mark.parametrize("cfg", [("bilinear", False, False), ("nearest", None, False),
                                 ("bicubic", True, False), ("bilinear", False, True),
                                 ("area", None, False)])
def test_cuda_forward_backward_match_cpu(cuda, cfg):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 2, 3, 5)).astype(np.float32)
    kw = _kw(*cfg)
    y = fi.resize(cuda.to_device(x), size=(4, 3), **kw)
    assert fi.last_kernel().key == ("resize", "cuda", "float32")
    assert_close(y.copy_to_host(), fi.resize(x, size=(4, 3), **kw))
    g = rng.standard_normal((1, 2, 4, 3)).astype(np.float32)
    gb = fi.resize_backward(cuda.to_device(g), x.shape, **kw)
    assert fi.last_kernel().key == ("resize_backward", "cuda", "float32")
    assert_close(gb.copy_to_host(), fi.resize_backward(g, x.shape, **kw))


@pytest.mark.cudasim
@pytest.mark.parametrize("cfg", [("area", None, False), ("bilinear", False, False),
                                 ("bicubic", True, True)])
def test_cuda_special_values_match_cpu(cuda, cfg):
    """The CUDA passes skip zero-weight taps too: inf/NaN reach the same outputs."""
    rng = np.random.default_rng(12)
    x = _with_specials(rng, (1, 2, 4, 3), np.float32, 4)
    kw = _kw(*cfg)
    _assert_same_values(fi.resize(cuda.to_device(x), size=(3, 7), **kw).copy_to_host(),
                        fi.resize(x, size=(3, 7), **kw), np.float32)
    g = _with_specials(rng, (1, 2, 3, 7), np.float32, 4)
    _assert_same_values(fi.resize_backward(cuda.to_device(g), x.shape, **kw).copy_to_host(),
                        fi.resize_backward(g, x.shape, **kw), np.float32)


@pytest.mark.cudasim
@pytest.mark.parametrize("n", [17, 1000, 4096])
def test_cuda_float32_long_windows_sum_in_float64(cuda, n):
    """float32 windows of more than 16 taps are summed in float64 and rounded once on CUDA
    too (a float32 sum of 0.1 over 1000 taps drifted by 1.1e-5): the CPU's values."""
    x = np.full((1, 1, 2, n), 0.1, np.float32)
    x[0, 0, 1] = np.linspace(-3, 7, n, dtype=np.float32)
    for call in (lambda a: fi.adaptive_avg_pool2d(a, (1, 1)),
                 lambda a: fi.resize(a, size=(1, 3), mode="area")):
        got = call(cuda.to_device(x)).copy_to_host()
        np.testing.assert_allclose(got, call(x), rtol=2e-7, atol=1e-7)
    one_row = np.ascontiguousarray(x[:, :, :1])
    np.testing.assert_array_equal(fi.adaptive_avg_pool2d(cuda.to_device(one_row), 1)
                                  .copy_to_host(), fi.adaptive_avg_pool2d(one_row, 1))


@pytest.mark.cudasim
def test_cuda_nhwc_pool_and_out(cuda):
    rng = np.random.default_rng(12)
    xh = rng.standard_normal((1, 4, 3, 2))
    yh = fi.resize(cuda.to_device(xh), size=(2, 5), layout="NHWC")
    assert_close(yh.copy_to_host(), fi.resize(xh, size=(2, 5), layout="NHWC"))
    x = rng.standard_normal((1, 2, 5, 4))
    out = cuda.device_array((1, 2, 2, 3))
    got = fi.adaptive_avg_pool2d(cuda.to_device(x), (2, 3), out=out)
    assert got is out
    assert_close(out.copy_to_host(), fi.adaptive_avg_pool2d(x, (2, 3)))
    gp = fi.adaptive_avg_pool2d_backward(cuda.to_device(np.ones((1, 2, 2, 3))), x.shape)
    assert_close(gp.copy_to_host(), fi.adaptive_avg_pool2d_backward(np.ones((1, 2, 2, 3)), x.shape))


def test_cupy_arrays_on_a_real_gpu(cupy):
    """CuPy in, CuPy out (skipped without a GPU)."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 20, 30)).astype(np.float32)
    for cfg in [("bilinear", False, True), ("nearest", None, False), ("area", None, False)]:
        kw = _kw(*cfg)
        y = fi.resize(cupy.asarray(x), size=(41, 13), **kw)
        assert isinstance(y, cupy.ndarray)
        assert_close(cupy.asnumpy(y), fi.resize(x, size=(41, 13), **kw), table=TOL_ORACLE)
        g = rng.standard_normal((2, 3, 41, 13)).astype(np.float32)
        gb = fi.resize_backward(cupy.asarray(g), x.shape, **kw)
        assert_close(cupy.asnumpy(gb), fi.resize_backward(g, x.shape, **kw), table=TOL_ORACLE)


@pytest.mark.cudasim
def test_cuda_mixed_devices_rejected(cuda):
    with pytest.raises(fi.BackendMismatchError):
        fi.resize(np.zeros((1, 1, 2, 2)), size=3, out=cuda.device_array((1, 1, 3, 3)))


# --------------------------------------------------------------------------- OpenCV / PIL

def _peer_cases():
    rng = np.random.default_rng(13)
    img = rng.random((24, 36)).astype(np.float32)
    sizes = {"up x2": (48, 72), "up x1.5": (36, 54), "down /2": (12, 18), "down /3": (8, 12),
             "down x0.7": (17, 25)}
    return img, sizes


def _ours(img, size, **kw):
    return fi.resize(img[None, None].astype(np.float64), size=size, **kw)[0, 0]


def _peer_resize(peer, img, size, name):
    if peer == "cv2":
        cv2 = pytest.importorskip("cv2")
        return cv2.resize(img, size[::-1], interpolation=getattr(cv2, name))
    Image = pytest.importorskip("PIL.Image")
    return np.asarray(Image.fromarray(img).resize(size[::-1],
                                                  resample=getattr(Image.Resampling, name)))


@pytest.mark.parametrize("kw, peer, name, agree", [
    (dict(mode="bilinear"), "cv2", "INTER_LINEAR", "all"),
    (dict(mode="bicubic"), "cv2", "INTER_CUBIC", "all"),
    (dict(mode="nearest"), "cv2", "INTER_NEAREST", "all"),
    (dict(mode="nearest-exact"), "cv2", "INTER_NEAREST_EXACT", "all but ties"),
    (dict(mode="area"), "cv2", "INTER_AREA", "integer downscales and upscales"),
    (dict(mode="bilinear", antialias=True), "PIL", "BILINEAR", "all"),
    (dict(mode="bilinear"), "PIL", "BILINEAR", "upscales"),
    (dict(mode="bicubic", antialias=True), "PIL", "BICUBIC", "all"),
    (dict(mode="nearest-exact"), "PIL", "NEAREST", "all but ties"),
    (dict(mode="area"), "PIL", "BOX", "integer factors"),
])
def test_opencv_and_pil_correspondences(kw, peer, name, agree):
    """The table in the README's resize section: where cv2.resize / PIL's Image.resize (float32
    images) equal fastinterp, for each factor of _peer_cases."""
    img, sizes = _peer_cases()
    for case, size in sizes.items():
        close = np.allclose(_ours(img, size, **kw), _peer_resize(peer, img, size, name),
                            atol=1e-6)
        expect = {"all": True, "upscales": case.startswith("up"),
                  "all but ties": case != "up x1.5",
                  "integer downscales and upscales": case != "down x0.7",
                  "integer factors": case in ("up x2", "down /2", "down /3")}[agree]
        assert close == expect, (peer, name, case)



def test_nearest_differs_from_opencv_only_where_the_position_is_an_integer():
    """The README's table: OpenCV's INTER_NEAREST takes floor(o * in/out) with in/out
    rounded to float64 first, so where o * in/out is an integer it can land one pixel
    lower (17 of 34 outputs from 6 pixels: 2.9999999999999996 -> 2, torch's rule 3), and
    on wide axes torch's float32 position can round up to an integer OpenCV stays below;
    fastinterp's default follows torch, match='opencv' follows OpenCV everywhere."""
    from fractions import Fraction
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(11)
    integer_positions = 0
    sizes = [tuple(int(v) for v in rng.integers(1, 400, 2)) for _ in range(300)]
    sizes += [tuple(int(v) for v in rng.integers(2000, 30000, 2)) for _ in range(6)]
    for w, ow in [(6, 34), (24335, 25638)] + sizes:
        row = np.arange(w, dtype=np.float32)[None, :]
        theirs = cv2.resize(row, (ow, 1), interpolation=cv2.INTER_NEAREST)[0]
        ours = fi.resize(row, size=(1, ow), mode="nearest", layout="HW")[0]
        preset = fi.resize(row, size=(1, ow), mode="nearest", layout="HW", match="opencv")[0]
        np.testing.assert_array_equal(preset, theirs)
        for o in np.flatnonzero(ours != theirs):
            exact = Fraction(int(o) * w, ow)      # an integer, or within float32 rounding of one
            assert abs(exact - round(exact)) <= exact * Fraction(1, 1 << 22), (w, ow, o)
            integer_positions += exact.denominator == 1
    assert integer_positions > 0       # the README's example (6 -> 34) is one



@pytest.mark.parametrize("mode", ["linear", "nearest-exact"])
def test_float32_output_axes_beyond_2_to_23_follow_torch(torch, mode):
    """Three minutes of 48 kHz audio: torch adds o + 0.5 in float32, rounded from output
    2**23 on; fastinterp added it exactly, and its positions drifted by up to a whole
    sample there (0.25 off torch on [0, 1] data, 4M -> 9M samples)."""
    n_in, n_out = 4_000_000, (1 << 23) + 600_000
    x = np.random.default_rng(13).random((1, 1, n_in), dtype=np.float32)
    ours = fi.resize(x, size=(n_out,), mode=mode)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(n_out,), mode=mode).numpy()
    tail = slice((1 << 23) - 10, None)
    np.testing.assert_allclose(ours[..., tail], ref[..., tail], rtol=0, atol=1e-6)



@pytest.mark.parametrize("mode, match", [("lanczos", "pil"), ("bicubic", "pil"), ("bicubic", "torch")])
def test_float64_copy_resizes_data_near_the_float32_limit_finitely(mode, match):
    """The README's advice for float32 data within a factor of ~1.5 of the largest float32,
    whose negative-lobe passes may overflow in float32 (as torch's do)."""
    x = np.full((1, 1, 4, 6), 3e38, np.float32)
    x[..., 1, 2] = -3e38
    wide = fi.resize(x.astype(np.float64), size=(8, 12), mode=mode, match=match)
    assert np.isfinite(wide).all() and np.abs(wide).max() < 2 * 3e38


# --------------------------------------------------------------------------- inf and NaN

SPECIALS = [np.inf, -np.inf, np.nan]


def _dense(fn, h, w, dtype):
    """The forward's matrix A (outputs x inputs), from ``fn`` on every basis image."""
    basis = np.eye(h * w, dtype=dtype).reshape(h * w, 1, h, w)
    return fn(basis).reshape(h * w, -1).T.astype(np.float64)


def _apply_nonzero(A, v):
    """``A @ v`` in float64 over the non-zero entries of A only (0 * inf never formed)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(A != 0, A * v[None, :], 0).sum(axis=1)


def _assert_same_values(got, ref, dtype):
    """Same NaN and signed-inf positions; finite values close (float32/float64 tolerance)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.where(np.isinf(got), got, 0), np.where(np.isinf(ref), ref, 0))
    fin = np.isfinite(ref)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[fin], ref[fin], rtol=tol, atol=tol)


def _with_specials(rng, shape, dtype, count):
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    for i in rng.choice(flat.size, size=min(count, flat.size), replace=False):
        flat[i] = SPECIALS[rng.integers(3)]
    return x


@pytest.mark.parametrize("dtype", DTYPES)
def test_inf_through_area_reproducer(dtype):
    """The reported case: the inf pixel's window neighbours gave NaN through a
    zero-weight padding tap; torch gives [1 inf inf inf 3]."""
    x = np.array([[[[1.0, np.inf, 3.0]]]], dtype)
    expected = np.array([1, np.inf, np.inf, np.inf, 3], dtype)
    np.testing.assert_array_equal(fi.resize(x, size=(1, 5), mode="area")[0, 0, 0], expected)
    np.testing.assert_array_equal(fi.adaptive_avg_pool2d(x, (1, 5))[0, 0, 0], expected)
    np.testing.assert_array_equal(fi.adaptive_avg_pool2d(x.transpose(0, 1, 3, 2), (5, 1))
                                  [0, 0, :, 0], expected)


@pytest.mark.parametrize("cfg", INTERP_CONFIGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_inf_gradient_reproducers(cfg, dtype):
    """An inf in grad_output reaches exactly the inputs with a non-zero weight for it."""
    h, w, oh, ow = 3, 7, 5, 3
    kw = _kw(*cfg)
    g = np.ones((1, 1, oh, ow), dtype)
    g[0, 0, 2, 1] = np.inf
    A = _dense(lambda b: fi.resize(b, size=(oh, ow), **kw), h, w, dtype)
    got = fi.resize_backward(g, (1, 1, h, w), **kw)
    _assert_same_values(got.ravel(), _apply_nonzero(A.T, g.ravel().astype(np.float64)), dtype)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 8), w=st.integers(1, 8), oh=st.integers(1, 13), ow=st.integers(1, 13),
       cfg=st.sampled_from(CONFIGS), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
       count=st.integers(1, 3))
def test_special_values_forward_and_backward(h, w, oh, ow, cfg, dtype, seed, count):
    """With inf/-inf/NaN anywhere, forward and backward equal the linear map A
    (resp. A^T) applied over its non-zero entries: each output sees exactly
    the pixels it depends on, never NaN from 0 * inf."""
    rng = np.random.default_rng(seed)
    kw = _kw(*cfg)
    A = _dense(lambda b: fi.resize(b, size=(oh, ow), **kw), h, w, dtype)
    x = _with_specials(rng, (1, 1, h, w), dtype, count)
    _assert_same_values(fi.resize(x, size=(oh, ow), **kw).ravel(),
                        _apply_nonzero(A, x.ravel().astype(np.float64)), dtype)
    g = _with_specials(rng, (1, 1, oh, ow), dtype, count)
    _assert_same_values(fi.resize_backward(g, (1, 1, h, w), **kw).ravel(),
                        _apply_nonzero(A.T, g.ravel().astype(np.float64)), dtype)
    if cfg[0] == "area":
        P = _dense(lambda b: fi.adaptive_avg_pool2d(b, (oh, ow)), h, w, dtype)
        np.testing.assert_array_equal(P, A)
        _assert_same_values(fi.adaptive_avg_pool2d(x, (oh, ow)).ravel(),
                            _apply_nonzero(P, x.ravel().astype(np.float64)), dtype)
        _assert_same_values(fi.adaptive_avg_pool2d_backward(g, (1, 1, h, w)).ravel(),
                            _apply_nonzero(P.T, g.ravel().astype(np.float64)), dtype)


def _through_knot_noise(torch, x, size, kw):
    """Outputs that see a special input through a tap where the filter is zero but the
    computed weight is rounding noise in either library (a sample position or a filter
    knot, |x| = 1 or 2, reached through an inexact scale such as 2/10 or 7/3): one
    library reads ~1e-16 * inf, the other 1e-7 * inf or nothing, so inf and NaN land
    differently there."""
    out = np.zeros((1, 1) + size, bool)
    if kw["mode"] in ("nearest", "nearest-exact", "area"):
        return out
    h, w = x.shape[2:]
    ours = _dense(lambda b: fi.resize(b, size=size, **kw), h, w, x.dtype)
    theirs = _dense(lambda b: _torch_resize(torch, b, size=size, **kw), h, w, x.dtype)
    noise = ((np.abs(ours) < 1e-5) & (np.abs(theirs) < 1e-5)) & ((ours != 0) | (theirs != 0))
    special = ~np.isfinite(x.reshape(-1))
    return (noise & special[None, :]).any(axis=1).reshape(out.shape)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 8), w=st.integers(1, 8), oh=st.integers(1, 13), ow=st.integers(1, 13),
       cfg=st.sampled_from(CONFIGS), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
@example(h=2, w=8, oh=1, ow=4, cfg=("bicubic", True, True), dtype=np.float32, seed=217)
@example(h=2, w=3, oh=10, ow=2, cfg=("bilinear", False, False), dtype=np.float64, seed=0)
def test_special_values_vs_torch(torch, h, w, oh, ow, cfg, dtype, seed):
    """Where torch gives no NaN, fastinterp gives torch's values (inf signs
    included); fastinterp never gives NaN where torch does not. The nearest
    modes, area and adaptive pooling equal torch everywhere; torch's
    bilinear/bicubic (plain and antialiased) add 0 * inf = NaN from taps of
    weight 0 (exact sample positions, clamped or filter-edge taps), which
    fastinterp does not read."""
    rng = np.random.default_rng(seed)
    kw = _kw(*cfg)
    x = _with_specials(rng, (1, 1, h, w), dtype, int(rng.integers(1, 4)))
    got = fi.resize(x, size=(oh, ow), **kw)
    ref = _torch_resize(torch, x, size=(oh, ow), **kw)
    sane = ~np.isnan(ref) & ~_through_knot_noise(torch, x, (oh, ow), kw)
    _assert_same_values(got[sane], ref[sane], dtype)
    if cfg[0] in ("nearest", "nearest-exact", "area"):
        _assert_same_values(got, ref, dtype)
    if cfg[0] == "area":
        import torch.nn.functional as F
        pool = F.adaptive_avg_pool2d(torch.from_numpy(x), (oh, ow)).numpy()
        _assert_same_values(fi.adaptive_avg_pool2d(x, (oh, ow)), pool, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_and_subnormal_values_no_crash(dtype):
    """Huge finite values may overflow to inf in a sum (as in torch; bicubic's
    negative lobes can then give inf - inf = NaN), never crash or read out of
    place; subnormals stay finite."""
    big = np.finfo(dtype).max
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.full((1, 2, 9, 11), big, dtype)
    x[0, 1] = tiny
    for cfg in CONFIGS:
        y = fi.resize(x, size=(4, 17), **_kw(*cfg))
        assert np.all(np.isfinite(y[0, 1]))
        assert cfg[0] == "bicubic" or not np.any(np.isnan(y[0, 0]))
        g = fi.resize_backward(y, x.shape, **_kw(*cfg))
        assert g.shape == x.shape and np.all(np.isfinite(g[0, 1]))


def test_float32_means_near_the_largest_float32_stay_finite():
    """Area and the pools return the finite mean of finite float32 pixels however near the
    largest float32 they are (the rounded weights 1/count of a short window summed past
    it: a row of 6 x 3.4028235e38 pooled to inf); an inf pixel still gives inf."""
    big = np.finfo(np.float32).max
    rng = np.random.default_rng(3)
    for n in range(2, 40):
        for m in (1, 2, 3):
            x = (big * (1 - rng.uniform(0, 1e-6, (1, 2, 1, n)))).astype(np.float32)
            x[0, 1] = big
            exact = x.astype(np.float64)
            for got, mean in [
                    (fi.adaptive_avg_pool2d(x, (1, m)), _window_means(exact, 1, m)),
                    (fi.adaptive_avg_pool1d(x[0, :, 0], m), _window_means(exact, 1, m)[0, :, 0]),
                    (fi.adaptive_avg_pool3d(x[:, :, None], (1, 1, m)),
                     _window_means(exact, 1, m)[:, :, None])]:
                assert np.isfinite(got).all(), (n, m)
                np.testing.assert_allclose(got, mean, rtol=3e-7)
            if n % m == 0:       # area equals the pool where the windows are whole pixels
                np.testing.assert_array_equal(fi.resize(x, size=(1, m), mode="area"),
                                              fi.adaptive_avg_pool2d(x, (1, m)))
            assert np.isfinite(fi.resize(x, size=(3, m), mode="area")).all()
    x = np.full((1, 1, 1, 6), big, np.float32)
    x[..., 2] = np.inf
    assert fi.adaptive_avg_pool2d(x, (1, 2)).tolist() == [[[[np.inf, big]]]]
    # a backward's sums of many gradients exceed the largest float32: a true overflow
    g = np.full((1, 1, 6, 6), 3e38, np.float32)
    assert np.isposinf(fi.adaptive_avg_pool2d_backward(g, (1, 1, 1, 1))).all()
    assert np.isposinf(fi.adaptive_avg_pool1d_backward(g[0], (1, 6, 1))).all()
    assert np.isposinf(fi.resize_backward(g, (1, 1, 2, 2), mode="area")).all()


def _window_means(x, out_h, out_w):
    """adaptive_avg_pool2d of a float64 (N, C, 1, W) row in float64, for out_h = 1."""
    w = x.shape[-1]
    cols = [x[..., (j * w) // out_w:-(-(j + 1) * w // out_w)].mean(-1) for j in range(out_w)]
    return np.stack(cols, -1)


# --------------------------------------------------------------------------- backward = A^T g

# (input (H, W), size or scale_factor): small and large nearest outputs, axes that keep their
# size under a scale factor (torch's bicubic/antialias autograd is not the adjoint there)
ADJOINT_GEOMETRIES = [
    ((5, 7), {"size": (9, 4)}), ((6, 5), {"size": (3, 11)}),
    ((3, 150), {"scale_factor": 1.0001}), ((2, 70), {"size": (2, 200)}),
    ((3, 80), {"scale_factor": (1.0, 2.0001)}), ((5, 7), {"scale_factor": 1.1}),
    ((3, 6), {"size": (2, 141)}), ((2, 7), {"size": (159, 165)}),
    ((6, 9), {"scale_factor": (1.05, 0.7)}), ((4, 6), {"scale_factor": 2.0001}),
]


def _forward_matrix(h, w, dtype, geom, kw):
    return _dense(lambda b: fi.resize(b, **geom, **kw), h, w, dtype)


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("hw, geom", ADJOINT_GEOMETRIES)
def test_backward_is_adjoint_of_forward(cfg, hw, geom):
    """resize_backward(g) == A^T g for the forward's own matrix A (built on basis
    images), in every mode, including wide nearest outputs and scale factors that
    keep an axis's size, where torch's autograd is not the adjoint of its forward."""
    kw = _kw(*cfg)
    h, w = hw
    A = _forward_matrix(h, w, np.float64, geom, kw)
    oh, ow = fi.resize(np.zeros((1, 1, h, w)), **geom, **kw).shape[2:]
    g = np.random.default_rng(h * 100 + w).standard_normal((2, 1, oh, ow))
    sf = geom.get("scale_factor")
    got = fi.resize_backward(g, (2, 1, h, w), scale_factor=sf, **kw)
    ref = (A.T @ g.reshape(2, -1).T).T.reshape(2, 1, h, w)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cfg, hw, geom", [
    (("nearest", None, False), (3, 150), {"scale_factor": 1.0001}),
    (("nearest-exact", None, False), (3, 6), {"size": (2, 141)}),
    (("nearest", None, False), (3, 5), {"size": (141, 300)}),
    (("bicubic", False, False), (5, 7), {"scale_factor": 1.1}),
    (("bilinear", False, True), (6, 9), {"scale_factor": (1.05, 0.7)}),
    (("bicubic", False, True), (5, 7), {"scale_factor": 1.1}),
])
def test_backward_is_adjoint_of_torch_forward(torch, cfg, hw, geom):
    """The cases where torch's autograd of interpolate is not the adjoint of its own
    forward: fastinterp's forward equals torch's forward and its backward is A^T g
    for torch's forward matrix."""
    kw = _kw(*cfg)
    h, w = hw
    A_torch = _dense(lambda b: _torch_resize(torch, b, **geom, **kw), h, w, np.float64)
    A = _forward_matrix(h, w, np.float64, geom, kw)
    np.testing.assert_allclose(A, A_torch, rtol=1e-12, atol=1e-14)
    oh, ow = fi.resize(np.zeros((1, 1, h, w)), **geom, **kw).shape[2:]
    g = np.random.default_rng(5).standard_normal((1, 1, oh, ow))
    got = fi.resize_backward(g, (h, w), scale_factor=geom.get("scale_factor"), **kw)
    np.testing.assert_allclose(got.ravel(), A_torch.T @ g.ravel(), rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- bounded caches

_RSS_SCRIPT = """
import gc, numpy as np, fastinterp as fi
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def geometries(first, count):
    for i in range(first, first + count):
        y = fi.resize(x, size=(1, 600_000 + i))
        g = fi.resize_backward(y, x.shape)
        del y, g
    gc.collect()
x = np.zeros((1, 1, 1, 1), np.float32)
geometries(0, 2)                  # the allocator and the cache settle
settled = rss()
geometries(2, 6)
print((rss() - settled) / 2**20)
"""


@pytest.mark.no_sanitizer
def test_wide_geometries_leave_memory_bounded():
    """Tables of wide one-off geometries are not kept: each distinct geometry of
    600k outputs (forward and backward) used to keep ~35 MiB after the results were
    deleted (an lru_cache of 256 geometries: ~1.2 GB each at 50M outputs)."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT], capture_output=True, text=True,
                         timeout=300, check=True)
    grown_mib = float(out.stdout.strip().splitlines()[-1])
    assert grown_mib < 24, grown_mib


def test_table_cache_is_bounded_in_bytes(monkeypatch):
    cache = R._ByteLRU(budget=1 << 20, entry_limit=256 << 10)
    monkeypatch.setattr(R, "_TABLE_CACHE", cache)
    x = np.zeros((1, 1, 2, 3), np.float32)
    for n in range(1000, 40000, 1000):   # tables of 8..312 KiB (+ permute forms)
        fi.resize(x, size=(2, n))
        assert cache.nbytes <= cache.budget
    assert 0 < len(cache) and cache.nbytes > cache.budget // 2
    big = R.axis_table("bicubic", 3, 100_000, False, None, False, "float64", False)
    assert big.idx.shape == (4, 100_000) and cache.nbytes <= cache.budget
    assert all(v[0] is not big for v in cache._items.values())   # too large to keep
    small = R.axis_table("bicubic", 3, 10, False, None, False, "float64", False)
    assert R.axis_table("bicubic", 3, 10, False, None, False, "float64", False) is small


def test_table_cache_thread_safe_under_eviction(monkeypatch):
    """Many threads, many geometries, a cache that evicts constantly: results equal serial."""
    from concurrent.futures import ThreadPoolExecutor
    monkeypatch.setattr(R, "_TABLE_CACHE", R._ByteLRU(budget=64 << 10, entry_limit=32 << 10))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 13, 17)).astype(np.float32)
    jobs = [(cfg, (5 + i % 7, 9 + i % 11)) for i in range(40) for cfg in CONFIGS[::3]]

    def run(job):
        cfg, size = job
        return fi.resize(x, size=size, **_kw(*cfg)), fi.resize_backward(
            np.ones((1, 2) + size, np.float32), x.shape, **_kw(*cfg))
    serial = [run(j) for j in jobs]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(run, jobs))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


# --------------------------------------------------------------------------- robustness

@pytest.mark.parametrize("cfg", CONFIGS)
def test_bit_identical_threads_and_calling_thread_with_specials(threads, monkeypatch, cfg):
    """1 vs 2 threads and main vs worker thread give the same bits, specials included."""
    import threading
    monkeypatch.setattr(R, "_MIN_PER_THREAD", 1)
    rng = np.random.default_rng(9)
    x = _with_specials(rng, (2, 3, 37, 41), np.float32, 12)
    g = _with_specials(rng, (2, 3, 29, 53), np.float32, 12)
    kw = _kw(*cfg)

    def calls():
        return (fi.resize(x, size=(29, 53), **kw), fi.resize_backward(g, x.shape, **kw),
                fi.resize(x, size=(80, 19), layout="NCHW", **kw))
    results = []
    for n in (1, 2):
        threads.set_num_threads(n)
        results.append(calls())
        box = []
        t = threading.Thread(target=lambda: box.append(calls()))
        t.start()
        t.join()
        results.append(box[0])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_negative_and_readonly_inputs(dtype):
    rng = np.random.default_rng(11)
    big = _with_specials(rng, (2, 4, 22, 30), dtype, 5)
    views = [big[:, ::-1, ::-2, 1::3], big[:, :, :, ::-1], np.asfortranarray(big)]
    ro = big.copy()
    ro.flags.writeable = False
    views.append(ro)
    for v in views:
        c = np.ascontiguousarray(v)
        for cfg in (("bilinear", False, True), ("area", None, False), ("nearest", None, False)):
            np.testing.assert_array_equal(fi.resize(v, size=(7, 9), **_kw(*cfg)),
                                          fi.resize(c, size=(7, 9), **_kw(*cfg)))
            np.testing.assert_array_equal(fi.resize_backward(v, (3, 5), **_kw(*cfg)),
                                          fi.resize_backward(c, (3, 5), **_kw(*cfg)))
        np.testing.assert_array_equal(fi.adaptive_avg_pool2d(v, 3), fi.adaptive_avg_pool2d(c, 3))
    assert not ro.flags.writeable and np.array_equal(ro, big, equal_nan=True)


def test_empty_axes():
    for shape in [(0, 3, 4, 4), (2, 0, 4, 4)]:
        x = np.zeros(shape, np.float32)
        assert fi.resize(x, size=(2, 5)).shape == shape[:2] + (2, 5)
        assert fi.resize_backward(np.zeros(shape[:2] + (2, 5)), shape).shape == shape
        assert fi.adaptive_avg_pool2d(x, 3).shape == shape[:2] + (3, 3)
    with pytest.raises(ValueError, match="H >= 1 and W >= 1"):
        fi.resize(np.zeros((1, 1, 0, 3)), size=(2, 2))


def _kernel_args(dtype=np.float32, **change):
    """Consistent arguments of the CPU kernel separable_fwd for a 4x6 -> 3x5 bilinear resize."""
    yt = R.axis_table("bilinear", 4, 3, False, None, False, np.dtype(dtype).name, False)
    xt = R.axis_table("bilinear", 6, 5, False, None, False, np.dtype(dtype).name, False)
    args = dict(out=np.full((2, 3, 5), -7, dtype), x=np.ones((2, 4, 6), dtype),
                yidx=yt.idx, yw=yt.w, yunit=False, xidx=xt.idx, xw=xt.w, xunit=False,
                xbase=np.zeros(0, np.int32), xrel=np.zeros((1, 1), np.int32), xblock=0,
                channels=1, order=0, nthreads=2)
    args.update(change)
    return args


@pytest.mark.parametrize("change", [
    {"yidx": np.array([[0, 1, 9], [1, 2, 3]], np.int32)},        # row index past the input
    {"xidx": np.array([[0, 1, 2, 3, -1], [1, 2, 3, 4, 5]], np.int32)},
    {"channels": 0}, {"channels": 2}, {"order": 5},
    {"x": np.ones((1, 4, 6), np.float32)},
    {"xbase": np.array([100], np.int32), "xrel": np.zeros((2, 5), np.int32)},
    {"xbase": np.array([0], np.int32), "xrel": np.zeros((1, 5), np.int32)},
    {"xbase": np.array([0], np.int32), "xrel": np.zeros((2, 5), np.int32), "xblock": 3},
])
def test_kernel_refuses_inconsistent_arguments(change):
    """The kernel is callable directly: arguments that would read or write out of
    bounds raise ValueError and leave out untouched."""
    from fastinterp._cpu import resize as cpu_resize
    args = _kernel_args(**change)
    with pytest.raises(ValueError, match="separable_fwd"):
        cpu_resize.separable_fwd(**args)
    assert np.all(args["out"] == -7)


_MEMORY_SCRIPT = """
import resource, numpy as np
from fastinterp._cpu import resize as cpu_resize
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
n = 100_000                       # one output row reading rows 0 and n - 1: a row cache of
out = np.full((1, 1, n), -7.0, np.float32)   # n x n values (40 GB) per thread
x = np.ones((1, n, 1), np.float32)
yidx = np.array([[0], [n - 1]], np.int32); yw = np.full((2, 1), 0.5, np.float32)
xidx = np.zeros((1, n), np.int32); xw = np.ones((1, n), np.float32)
try:
    cpu_resize.separable_fwd(out, x, yidx, yw, False, xidx, xw, True, np.zeros(0, np.int32),
                             np.zeros((1, 1), np.int32), 0, 1, 1, 2)
except MemoryError as e:
    print("MemoryError", bool(np.all(out == -7)), e)
"""


@pytest.mark.no_sanitizer
def test_kernel_allocation_failure_raises_and_writes_nothing():
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("MemoryError True"), res.stdout + res.stderr[-2000:]


@pytest.mark.parametrize("channels", [3, 6])
def test_nhwc_special_values_equal_nchw(channels):
    """Interleaved channels (expanded tables for C <= 4, the per-pixel loop above) skip
    zero-weight taps as the planar path does."""
    rng = np.random.default_rng(13)
    x = _with_specials(rng, (2, channels, 7, 5), np.float32, 10)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    for cfg in CONFIGS:
        kw = _kw(*cfg)
        got = fi.resize(xh, size=(4, 11), layout="NHWC", **kw).transpose(0, 3, 1, 2)
        _assert_same_values(got, fi.resize(x, size=(4, 11), **kw), np.float32)
        gh = np.ascontiguousarray(fi.resize(x, size=(4, 11), **kw).transpose(0, 2, 3, 1))
        back = fi.resize_backward(gh, (7, 5), layout="NHWC", **kw).transpose(0, 3, 1, 2)
        _assert_same_values(back, fi.resize_backward(gh.transpose(0, 3, 1, 2), (7, 5), **kw),
                            np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_gather_path(monkeypatch, dtype):
    """The gather-based horizontal pass (used where no permute form applies, and on
    CPUs without AVX-512) skips zero-weight taps as the permute pass does."""
    monkeypatch.setattr(R, "permute_form", lambda table: R._NO_PERM)
    rng = np.random.default_rng(14)
    for cfg in CONFIGS:
        kw = _kw(*cfg)
        for (h, w), (oh, ow) in [((5, 7), (9, 4)), ((6, 9), (2, 20)), ((3, 8), (3, 3))]:
            A = _dense(lambda b: fi.resize(b, size=(oh, ow), **kw), h, w, dtype)
            x = _with_specials(rng, (1, 1, h, w), dtype, 3)
            _assert_same_values(fi.resize(x, size=(oh, ow), **kw).ravel(),
                                _apply_nonzero(A, x.ravel().astype(np.float64)), dtype)
            g = _with_specials(rng, (1, 1, oh, ow), dtype, 3)
            _assert_same_values(fi.resize_backward(g, (h, w), **kw).ravel(),
                                _apply_nonzero(A.T, g.ravel().astype(np.float64)), dtype)


# --------------------------------------------------------------------------- hostile sizes

@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(size="abc"), TypeError, r"^resize: size must be a positive int or a pair of them \(H, W\); got 'abc'"),
    (dict(size=b"ab"), TypeError, r"^resize: size must be a positive int"),
    (dict(size=(2.5, 3)), TypeError, r"^resize: size must be a positive int"),
    (dict(size=(2.0, 3)), TypeError, r"^resize: size must be a positive int"),
    (dict(size=("2", 3)), TypeError, r"^resize: size must be a positive int"),
    (dict(size=(True, 3)), TypeError, r"^resize: size must be a positive int"),
    (dict(size=(None, 3)), TypeError, r"^resize: size must be a positive int"),
    (dict(size=np.float64(2)), TypeError, r"^resize: size must be a positive int"),
    (dict(size=2**70), ValueError, r"^resize: size must give an output of at most 2\*\*31 - 1"),
    # beyond float64: an OverflowError escaped (from the size's float, or from floor(inf))
    (dict(size=10**400), ValueError, r"^resize: size must give an output of at most 2\*\*31 - 1 "
                                     r"pixels along each axis; got size=1000.*about 10\*\*400"),
    (dict(scale_factor=1e308), ValueError, r"^resize: scale_factor must give an output of at "
                                           r"most 2\*\*31 - 1 .* an axis of inf pixels"),
    (dict(scale_factor=10**400), ValueError, r"^resize: scale_factor must be finite; got an "
                                             r"int of 401 digits"),
    (dict(scale_factor=(2, 10**400)), ValueError, r"^resize: scale_factor must be finite"),
    (dict(scale_factor="2"), TypeError, r"^resize: scale_factor must be a positive float"),
    (dict(scale_factor=(2.0, "2")), TypeError, r"^resize: scale_factor must be a positive float"),
    (dict(scale_factor=(2.0, None)), TypeError, r"^resize: scale_factor must be a positive float"),
    (dict(size=2, antialias="no"), TypeError, r"^resize: antialias must be a bool; got str 'no'"),
    (dict(size=2, antialias=[1]), TypeError, r"^resize: antialias must be a bool"),
])
def test_resize_hostile_sizes(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        fi.resize(np.zeros((1, 1, 4, 5), np.float32), **kwargs)


@pytest.mark.parametrize("fn, shape", [("adaptive_avg_pool1d", (1, 1, 4)),
                                       ("adaptive_avg_pool2d", (1, 1, 4, 4)),
                                       ("adaptive_avg_pool3d", (1, 1, 2, 2, 2))])
@pytest.mark.parametrize("size, exc, words", [
    (2**70, ValueError, r"output_size must give an output of at most 2\*\*31 - 1 pixels along "
                        r"each axis; got output_size=\(?1180591620717411303424"),
    (2**31, ValueError, r"output_size must give an output of at most 2\*\*31 - 1"),
    (10**400, ValueError, r"output_size must give an output of at most 2\*\*31 - 1"),
    (np.int64(2**40), ValueError, r"output_size must give an output of at most 2\*\*31 - 1"),
    ("ab", TypeError, r"output_size must be an int or a"),
    (2.5, TypeError, r"output_size must be an int or a"),
    (True, TypeError, r"output_size must be"),
])
def test_pool_output_sizes_beyond_an_axis_are_refused(fn, shape, size, exc, words):
    with pytest.raises(exc, match=rf"^{fn}: {words}"):
        getattr(fi, fn)(np.zeros(shape), size)


def test_pool_output_size_pairs_are_bounded_too():
    with pytest.raises(ValueError, match=r"^adaptive_avg_pool2d: output_size must give an "
                                         r"output of at most 2\*\*31 - 1"):
        fi.adaptive_avg_pool2d(np.zeros((1, 1, 4, 4)), (None, 2**40))
    with pytest.raises(TypeError, match=r"^adaptive_avg_pool3d: output_size must be a positive "
                                        r"int or a sequence of 3"):
        fi.adaptive_avg_pool3d(np.zeros((1, 1, 2, 2, 2)), (2, "a", 2))


@pytest.mark.parametrize("call", [
    lambda: fi.resize_backward(np.zeros((1, 1, 4, 4)), (1, 1, 2**40, 4)),
    lambda: fi.adaptive_avg_pool2d_backward(np.zeros((1, 1, 4, 4)), (2**70, 4)),
    lambda: fi.adaptive_avg_pool1d_backward(np.zeros((1, 1, 4)), (2**70,)),
    lambda: fi.adaptive_avg_pool3d_backward(np.zeros((1, 1, 2, 2, 2)), (2, 2**31, 2)),
    lambda: fi.resize_backward(np.zeros((1, 1, 4, 4)), (1, 1, 5, 10**400)),
    lambda: fi.adaptive_avg_pool2d_backward(np.zeros((1, 1, 4, 4)), (10**400, 4)),
])
def test_backward_input_sizes_beyond_an_axis_are_refused(call):
    with pytest.raises(ValueError, match=r"_backward: input_size must give an output of at "
                                         r"most 2\*\*31 - 1 pixels"):
        call()


@pytest.mark.parametrize("fn, grad", [("resize_backward", (1, 1, 4, 4)),
                                      ("adaptive_avg_pool2d_backward", (1, 1, 4, 4)),
                                      ("adaptive_avg_pool1d_backward", (1, 1, 4)),
                                      ("adaptive_avg_pool3d_backward", (1, 1, 2, 2, 2))])
@pytest.mark.parametrize("bad", ["ab", "abcd", b"abcd", (1, 1, 2.0, 2), (1, 1, None, 2),
                                 (True, 1, 2, 2), None])
def test_backward_input_sizes_of_other_types(fn, grad, bad):
    with pytest.raises(TypeError, match=rf"^{fn}: input_size must be a shape"):
        getattr(fi, fn)(np.zeros(grad), bad)


@pytest.mark.parametrize("shape, kw", [((2, 3, 12), dict(size=23, mode="linear")),
                                       ((1, 2, 3, 4, 5), dict(size=(2, 3, 4), mode="trilinear")),
                                       ((2, 3, 12), dict(size=5, mode="area"))])
def test_one_dimensional_and_volume_data_as_lists(shape, kw):
    """A nested list is read as NumPy reads it, so 3-D and 5-D lists are (N, C, L) and
    (N, C, D, H, W) data as arrays of those shapes are (not images)."""
    x = np.random.default_rng(6).random(shape)
    np.testing.assert_array_equal(fi.resize(x.tolist(), **kw), fi.resize(x, **kw))
    pool = fi.adaptive_avg_pool1d if len(shape) == 3 else fi.adaptive_avg_pool3d
    np.testing.assert_array_equal(pool(x.tolist(), 2), pool(x, 2))


_HUGE = 2**31 - 1


@pytest.mark.parametrize("call", [
    lambda: fi.resize(np.zeros((16, 16), np.uint8), size=(1000, 2**30 + 2), match="pil",
                      layout="HW"),
    lambda: fi.resize(np.zeros((16, 16, 3), np.uint8), size=(_HUGE, _HUGE), match="opencv",
                      layout="HWC"),
    lambda: fi.resize(np.zeros((1, 1, 4, 4), np.float32), size=(_HUGE, 2)),
    lambda: fi.resize(np.zeros((1, 1, 4, 4), np.float32), size=(4, _HUGE), mode="bicubic",
                      antialias=True),
    lambda: fi.adaptive_avg_pool2d(np.zeros((1, 1, 4, 4), np.float32), (_HUGE, 2)),
    lambda: fi.adaptive_avg_pool2d(np.zeros((1, 1, 4, 4), np.uint8), (2, _HUGE)),
    lambda: fi.adaptive_avg_pool1d(np.zeros((1, 1, 4), np.float32), _HUGE),
    lambda: fi.adaptive_avg_pool3d(np.zeros((1, 1, 2, 2, 2), np.float32), (_HUGE, 2, 2)),
    lambda: fi.resize(np.zeros((1, 1, 4), np.float32), size=_HUGE, mode="linear"),
    lambda: fi.resize_backward(np.zeros((1, 1, 2, 2), np.float32), (1, 1, _HUGE, 2)),
    lambda: fi.resize_backward(np.zeros((1, 1, 2), np.float32), (1, 1, _HUGE), mode="linear"),
    lambda: fi.adaptive_avg_pool2d_backward(np.zeros((1, 1, 2, 2), np.float32), (1, 1, _HUGE, 2)),
    lambda: fi.adaptive_avg_pool1d_backward(np.zeros((1, 1, 2), np.float32), (1, 1, _HUGE)),
])
def test_sizes_beyond_the_machine_are_a_memory_error_before_any_work(call, monkeypatch):
    """Valid sizes (each axis <= 2**31 - 1) whose result or tap tables cannot fit in the
    machine's memory and swap raise MemoryError at once: the tables are built before the
    result is allocated, and with the system's overcommit a process filling them is killed
    rather than given an error."""
    from fastinterp import _memory
    monkeypatch.setattr(_memory, "machine_bytes", lambda: 8 << 30)     # an 8 GiB machine
    with pytest.raises(MemoryError, match=r"would need [0-9.]+ GiB, more than this machine's "
                                          r"memory and swap \(8\.0 GiB\)"):
        call()


def test_large_results_that_fit_are_not_refused(monkeypatch):
    from fastinterp import _memory
    monkeypatch.setattr(_memory, "machine_bytes", lambda: 8 << 30)
    y = fi.resize(np.ones((1, 1, 4, 4), np.float32), size=(2, 2**24))
    assert y.shape == (1, 1, 2, 2**24) and y[0, 0, 1, -1] == 1
    assert _memory.machine_bytes() == 8 << 30


@pytest.mark.cudasim
@pytest.mark.parametrize("call", [
    lambda x: fi.resize(x, size=(1, 2), mode="bilinear", antialias=True),
    lambda x: fi.resize(x, size=(1, 1), mode="bicubic", antialias=True),
    lambda x: fi.resize(x, size=(1, 2), mode="area"),
    lambda x: fi.adaptive_avg_pool2d(x, (1, 1)),
    lambda x: fi.resize(x, size=(1, 1), mode="area"),      # 25 taps: the float64 path
])
def test_cuda_float32_means_near_the_largest_float32_are_the_cpus(cuda, call):
    """Means of finite pixels at FLT_MAX came out inf on CUDA (the float32 weights' rounding
    sums past 1); the CPU redoes them in float64 and rounds to FLT_MAX."""
    big = np.finfo(np.float32).max
    x = np.full((2, 1, 1, 25), big, np.float32)
    x[1, 0, 0, :3] = -big
    x[1, 0, 0, 20] = np.inf                # a window holding an inf stays inf
    want = call(x)
    got = call(cuda.to_device(x)).copy_to_host()
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    assert_close(got, want)


@pytest.mark.parametrize("call", [
    lambda x: fi.resize(x, size=(1, 2), mode="bilinear", align_corners=True),
    lambda x: fi.resize(x, size=(1, 8), mode="bicubic"),
    lambda x: fi.resize(x, size=(1, 16), mode="nearest"),
    lambda x: fi.resize(x, size=(1, 8), match="pil"),
    lambda x: fi.adaptive_avg_pool2d(x, (1, 2)),
    lambda x: fi.resize(x[0], size=3, mode="linear"),
    lambda x: fi.adaptive_avg_pool1d(x[0], 2),
])
def test_an_input_axis_beyond_int32_is_a_value_error(call):
    """The tap tables index input pixels with int32: an axis of 2**31 + 1 pixels (a
    broadcast view: no memory) wrapped to negative indices (a raw AssertionError)."""
    x = np.broadcast_to(np.float32(1), (1, 1, 1, 2**31 + 1))
    with pytest.raises(ValueError, match=r"must have at most 2\*\*31 - 1 pixels along each "
                                         r"spatial axis"):
        call(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode, antialias, out_hw", [
    ("bilinear", False, (23, 31)), ("bicubic", True, (9, 13)), ("area", False, (3, 2)),
    ("bilinear", True, (50, 140)), ("nearest", False, (17, 61))])
@pytest.mark.parametrize("channels", [1, 3, 6])
def test_the_separable_kernel_reads_and_writes_rows_through_their_strides(
        dtype, mode, antialias, out_hw, channels):
    """Views of larger arrays (strided rows and planes, as a chunk of a tiled image)
    give the bits of their contiguous copies, in both pass orders, the permute form,
    channel expansion and the float64 path of long float32 windows included."""
    rng = np.random.default_rng(channels)
    h, w = 34, 50
    big = rng.standard_normal((4, h + 7, (w + 11) * channels)).astype(dtype)
    x = big[1:, 3:3 + h, 5 * channels:(5 + w) * channels]
    assert not x.flags.c_contiguous and x.strides[2] == x.itemsize
    ytab = R.axis_table(mode, h, out_hw[0], False, None, antialias, dtype)
    xtab = R.axis_table(mode, w, out_hw[1], False, None, antialias, dtype)
    expected = np.empty((3, out_hw[0], out_hw[1] * channels), dtype)
    R._separable_cpu(expected, np.ascontiguousarray(x), ytab, xtab, channels)
    canvas = np.full((5, out_hw[0] + 4, (out_hw[1] + 3) * channels), 7.0, dtype)
    out = canvas[1:4, 2:2 + out_hw[0], channels:(1 + out_hw[1]) * channels]
    R._separable_cpu(out, x, ytab, xtab, channels)
    assert np.array_equal(out, expected)
    outside = np.ones(canvas.shape, bool)
    outside[1:4, 2:2 + out_hw[0], channels:(1 + out_hw[1]) * channels] = False
    assert (canvas[outside] == 7.0).all()          # nothing written outside the view


def test_the_separable_kernel_refuses_values_strided_within_a_row():
    cpu_resize = importlib.import_module("fastinterp._cpu.resize")
    tab = R.axis_table("bilinear", 8, 4, False, None, False, np.float32)
    x = np.zeros((1, 8, 16), np.float32)[:, :, ::2]
    out = np.zeros((1, 4, 4), np.float32)
    args = (tab.idx, tab.w, tab.unit, tab.idx, tab.w, tab.unit, np.zeros(0, np.int32),
            np.zeros((1, 1), np.int32), 0, 1, 0, 1)
    with pytest.raises(ValueError, match="contiguous along its rows"):
        cpu_resize.separable_fwd(out, x, *args)
    with pytest.raises(ValueError, match="contiguous along its rows"):
        cpu_resize.separable_fwd(np.zeros((1, 4, 8), np.float32)[:, :, ::2],
                                 np.zeros((1, 8, 8), np.float32), *args)


def _exact_backward(fn, g, *args, **kw):
    """The backward's exact value, rounded once: float32 gradients computed in float64,
    float64 ones scaled by 2**-64 (the map is linear) and back."""
    if g.dtype == np.float32:
        with np.errstate(over="ignore"):
            return fn(g.astype(np.float64), *args, **kw).astype(np.float32)
    return np.ldexp(fn(np.ldexp(g, -64), *args, **kw), 64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim", [2, 3])
def test_backward_partial_sums_near_the_largest_value_do_not_overflow(dtype, dim):
    """The backward's transposed tables sum past 1 (an input pixel is read by many
    outputs): through an upscale on one axis and a shrink on another, its first pass
    overflowed where the exact gradient is finite (1e308 everywhere: inf and NaN where
    torch's is 1.5e308; 111 of 200 random geometries at 0.2-0.4 of the maximum)."""
    rng = np.random.default_rng(7 + dim)
    big = float(np.finfo(dtype).max)
    bad = 0
    for it in range(24):
        ins = [int(v) for v in rng.integers(1, 4, dim)]
        outs = [int(v) for v in rng.integers(1, 4, dim)]
        grow = int(rng.integers(dim))
        shrink = (grow + 1) % dim
        ins[grow], outs[grow] = 1, int(rng.integers(3, 7))
        ins[shrink], outs[shrink] = int(rng.integers(6, 12)), int(rng.integers(1, 3))
        g = (rng.uniform(-0.1, 0.4, [2, 1] + outs) * big).astype(dtype)
        size = tuple([2, 1] + ins)
        mode = ["area", "pool", "nearest", "bilinear" if dim == 2 else "trilinear"][it % 4]
        if mode == "pool":
            fn = getattr(fi, f"adaptive_avg_pool{dim}d_backward")
            got, want = fn(g, size), _exact_backward(fn, g, size)
        else:
            got = fi.resize_backward(g, size, mode=mode)
            want = _exact_backward(fi.resize_backward, g, size, mode=mode)
        assert np.array_equal(np.isfinite(got), np.isfinite(want)), (mode, ins, outs)
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5 if dtype == np.float32
                                   else 1e-13, err_msg=f"{mode} {ins} {outs}")
        bad += not np.isfinite(got).all()
    assert bad < 24          # most geometries have a finite exact gradient


def test_backward_overflow_redo_keeps_infinite_gradients_and_other_planes():
    """Only planes with a finite gradient are redone; an inf in grad_output still gives
    inf (or NaN) where it reaches, and the finite entries are the first pass's bits."""
    g = np.full((1, 3, 3, 2), 1e308)       # exact: 0 or 1.5e308 per input pixel
    g[0, 1] = 1.0                          # an ordinary plane beside two huge ones
    g[0, 2, 0, 0] = np.inf
    got = fi.resize_backward(g, (1, 3, 1, 8), mode="bilinear")
    assert np.isfinite(got[0, 0]).all() and np.isinf(got[0, 2]).any()
    np.testing.assert_array_equal(got[0, 1], fi.resize_backward(g[:, 1:2], (1, 1, 1, 8),
                                                                mode="bilinear")[0, 0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_overflow_redo_does_not_depend_on_the_layout(dtype):
    """In NHWC a kernel plane holds every channel: an inf in one channel kept the
    overflowed sums of the others (inf where the NCHW call gives 1.5e307)."""
    big = float(np.finfo(dtype).max) / 12
    g = np.full((1, 2, 30, 2), big, dtype)       # H 2 -> 30 up, W 30 -> 2 down
    g[0, 1, 0, 0] = np.inf
    size = (1, 2, 2, 30)
    g_nhwc = np.ascontiguousarray(g.transpose(0, 2, 3, 1))
    nchw = fi.resize_backward(g, size, mode="area")
    nhwc = fi.resize_backward(g_nhwc, (1, 2, 30, 2), mode="area", layout="NHWC")
    np.testing.assert_array_equal(nhwc.transpose(0, 3, 1, 2), nchw)
    assert np.isfinite(nchw[0, 0]).all() and np.isinf(nchw[0, 1]).any()
    pooled = fi.adaptive_avg_pool2d_backward(g_nhwc, (1, 2, 30, 2), layout="NHWC")
    np.testing.assert_array_equal(pooled.transpose(0, 3, 1, 2),
                                  fi.adaptive_avg_pool2d_backward(g, size))
