"""The uint8 resize kernels' vector paths give the plain loops' bits.

kernels/cpu/_u8simd.h has fixed-point horizontal passes by 16-bit
multiply-adds (the "pair form" of an x table, fastinterp.resize.pair_form),
OpenCV's linear vertical rounding from int16 rows, and 2 x 2 box means by
word permutes. Each is checked against the kernel run without it (the plain
tap loops) and against a NumPy model of the rounding, on channel counts 1-7,
widths 1, 2, odd and long rows, and against the other compiled kernel
variants (x86-64-v2 has none of these paths) in a subprocess.
"""
from __future__ import annotations

import importlib
import math
import os
from pathlib import Path

import numpy as np
import pytest

import fastinterp as fi
from conftest import assert_variant_gives_same_bits, other_runnable_variants
import fastinterp._cpu as cpu
from fastinterp import _resize_presets as presets
from fastinterp._cpu import resize as K

R = importlib.import_module("fastinterp.resize")   # the module (fi.resize is the function)

HERE = Path(__file__).resolve().parent
CHANNELS = [1, 2, 3, 4, 5, 7]


def _tables(match, mode, in_hw, out_hw, c):
    kind = presets.opencv_variant(mode, in_hw, out_hw, c) if match == "opencv" else ""
    return [R.preset_table(match, mode, n, m, kind, "uint8", ax)
            for n, m, ax in zip(in_hw, out_hw, "yx")]


def _run(x, ytab, xtab, c, pairs, order=None):
    """separable_u8 on one (H, W, C) image, with or without the x table's pair form."""
    h, w = x.shape[:2]
    xt = R.channel_table(xtab, c) if c > 1 else xtab
    out = np.zeros((1, ytab.n_out, xt.n_out), np.uint8)
    form = R.pair_form(xt) if pairs else R._NO_PAIRS
    K.separable_u8(out, x.reshape(1, h, w * c), ytab.idx, ytab.w, xt.idx, xt.w, xt.shift,
                   ytab.shift, 2, order == "vfirst", order == "opencv_linear", *form)
    return out.reshape(ytab.n_out, xtab.n_out, c), form[0] is not None


# in width -> out width: up, down, 1 px, odd; (9, 400) shrinks too much for a window
WIDTHS = [(1, 5), (2, 3), (7, 13), (33, 17), (50, 149), (97, 41), (64, 32), (400, 9)]
PRESETS = [("opencv", "bilinear"), ("pil", "bilinear"), ("pil", "bicubic"), ("pil", "lanczos"),
           ("pil", "area")]


@pytest.mark.parametrize("match, mode", PRESETS)
@pytest.mark.parametrize("c", CHANNELS)
def test_pair_form_equals_plain_taps(match, mode, c):
    rng = np.random.default_rng(c)
    used = 0
    for w, ow in WIDTHS:
        x = rng.integers(0, 256, (9, w, c), dtype=np.uint8)
        x[0, :, :] = 255        # saturation on both sides (bicubic, lanczos overshoot)
        x[1, ::2, :] = 0
        ytab, xtab = _tables(match, mode, (9, w), (13, ow), c)
        order = "opencv_linear" if match == "opencv" else None
        plain, _ = _run(x, ytab, xtab, c, False, order)
        vec, has = _run(x, ytab, xtab, c, True, order)
        np.testing.assert_array_equal(vec, plain, err_msg=f"{w} -> {ow}")
        if ow >= w or 2 * ow >= w and c <= 3:   # windows of 64 values hold these
            assert has == K.HAVE_U8_PAIRS, (w, ow)
        used += has
    assert used == 0 or K.HAVE_U8_PAIRS


def test_opencv_fixed_bicubic_uses_pairs_with_negative_weights():
    # more than 4 channels: OpenCV's 11-bit bicubic weights (some negative)
    x = np.random.default_rng(1).integers(0, 256, (11, 23, 5), dtype=np.uint8)
    ytab, xtab = _tables("opencv", "bicubic", (11, 23), (17, 40), 5)
    assert xtab.w.dtype == np.int32 and xtab.w.min() < 0
    plain, _ = _run(x, ytab, xtab, 5, False)
    vec, has = _run(x, ytab, xtab, 5, True)
    np.testing.assert_array_equal(vec, plain)
    assert has == K.HAVE_U8_PAIRS


def _random_table(rng, n_in, n_out, taps, big):
    """A fixed-point table within the pair form's reach, weights of 15 or ~21 bits
    (sums of bytes by them stay inside int32, as the libraries' tables do)."""
    start = np.clip((np.arange(n_out) * n_in) // n_out - taps // 2, 0, None)
    idx = np.clip(start[None, :] + np.arange(taps)[:, None], 0, n_in - 1).astype(np.int32)
    lim = (1 << 31) // (256 * taps) if big else 1 << 14
    w = rng.integers(-lim, lim, (taps, n_out)).astype(np.int32)
    return R.AxisTable(idx, w, n_in, False, 22 if big else 0)


@pytest.mark.parametrize("taps", [1, 2, 3, 5, 6])
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("n_in, n_out", [(1, 1), (2, 37), (45, 45), (90, 47), (31, 2)])
def test_pair_form_random_tables(taps, big, n_in, n_out):
    """Large and negative weights, sums that saturate: the exact integer sums either way."""
    rng = np.random.default_rng(taps * 100 + n_out)
    xtab = _random_table(rng, n_in, n_out, taps, big)
    ytab = R.AxisTable(np.zeros((1, 3), np.int32), np.ones((1, 3), np.int32), 1, False, 0)
    x = rng.integers(0, 256, (1, n_in, 1), dtype=np.uint8)
    plain, _ = _run(x, ytab, xtab, 1, False)
    vec, has = _run(x, ytab, xtab, 1, True)
    np.testing.assert_array_equal(vec, plain)
    assert has == K.HAVE_U8_PAIRS
    # the NumPy model: exact sums, then the pass's rounding and saturation
    s = (xtab.w.astype(np.int64) * x[0, :, 0][xtab.idx]).sum(axis=0)
    if xtab.shift:
        s = (s + (1 << (xtab.shift - 1))) >> xtab.shift
    np.testing.assert_array_equal(plain[0, :, 0], np.clip(s, 0, 255))


@pytest.mark.parametrize("span", [1, 2, 15, 16, 17, 31, 33, 48, 49, 63])
def test_pair_form_windows_of_every_width(span):
    """Taps spread over 1 to 63 window places (the vector forms read the window
    in chunks), the last windows ending at the row's end, odd output counts."""
    rng = np.random.default_rng(span)
    n_out = 37
    start = 16 * (np.arange(n_out) // 16)
    n_in = int(start.max()) + span
    mid = start + rng.integers(0, span, n_out)
    idx = np.stack([start, mid, start + span - 1]).astype(np.int32)
    for big in (False, True):
        lim = (1 << 31) // (256 * 3) if big else 1 << 14
        w = rng.integers(-lim, lim, idx.shape).astype(np.int32)
        xtab = R.AxisTable(idx, w, n_in, False, 22 if big else 0)
        ytab = R.AxisTable(np.zeros((1, 2), np.int32), np.ones((1, 2), np.int32), 1, False, 0)
        x = rng.integers(0, 256, (1, n_in, 1), dtype=np.uint8)
        plain, _ = _run(x, ytab, xtab, 1, False)
        vec, has = _run(x, ytab, xtab, 1, True)
        assert has == K.HAVE_U8_PAIRS
        np.testing.assert_array_equal(vec, plain)
        s = (w.astype(np.int64) * x[0, :, 0][idx]).sum(axis=0)
        if xtab.shift:
            s = (s + (1 << (xtab.shift - 1))) >> xtab.shift
        np.testing.assert_array_equal(plain[0, :, 0], np.clip(s, 0, 255))


def _opencv_linear_model(x, ytab, xtab):
    """OpenCV's INTER_LINEAR uint8 arithmetic (horizontal sums >> 4 in int16, 16-bit high
    products, saturating adds), in NumPy on one (H, W) plane."""
    h = (xtab.w.astype(np.int64)[None] * x[:, xtab.idx]).sum(axis=1)
    r = (h >> 4).astype(np.int16).astype(np.int64)
    m = sum((r[ytab.idx[k]] * ytab.w[k][:, None].astype(np.int64)) >> 16 for k in range(2))
    m = np.minimum(np.minimum(m, 32767) + 2, 32767) >> 2
    return np.clip(m, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("hw, out_hw", [((3, 1), (5, 4)), ((6, 2), (11, 3)), ((9, 21), (20, 53)),
                                        ((5, 40), (7, 33)), ((4, 70), (9, 141))])
def test_opencv_linear_rows(c, hw, out_hw):
    x = np.random.default_rng(c).integers(0, 256, hw + (c,), dtype=np.uint8)
    got = fi.resize(x, size=out_hw, mode="bilinear", layout="HWC", match="opencv")
    ytab, xtab = _tables("opencv", "bilinear", hw, out_hw, c)
    xt = R.channel_table(xtab, c)
    model = _opencv_linear_model(x.reshape(hw[0], -1), ytab, xt)
    np.testing.assert_array_equal(got.reshape(out_hw[0], -1), model)
    plain, _ = _run(x, ytab, xtab, c, False, "opencv_linear")
    np.testing.assert_array_equal(plain, got)


@pytest.mark.parametrize("c", CHANNELS)
def test_box2x2_long_and_short_rows(c):
    """Every row length around the vector blocks (48 values) and the scalar tail."""
    rng = np.random.default_rng(c)
    for wo in (1, 2, 15, 16, 17, 25, 33, 49, 64, 97):
        x = rng.integers(0, 256, (2, 6, 2 * wo, c), dtype=np.uint8)
        x[0, :2] = 255
        sums = x.reshape(2, 3, 2, wo, 2, c).astype(np.int64).sum(axis=(2, 4))
        q, r = divmod(sums, 4)
        even = q + ((r > 2) | ((r == 2) & (q % 2 == 1)))
        np.testing.assert_array_equal(fi.resize(x, size=(3, wo), mode="area", layout="NHWC"),
                                      even, err_msg=str(wo))
        np.testing.assert_array_equal(fi.resize(x, size=(3, wo), mode="bilinear",
                                                layout="NHWC"), even, err_msg=str(wo))
        cv = fi.resize(x, size=(3, wo), mode="area", layout="NHWC", match="opencv")
        np.testing.assert_array_equal(cv, q + (r >= 2) if c in (1, 3, 4) else even,
                                      err_msg=str(wo))


def test_pair_form_is_refused_when_out_of_bounds():
    ytab = R.AxisTable(np.zeros((1, 2), np.int32), np.ones((1, 2), np.int32), 1, False, 0)
    xtab = _random_table(np.random.default_rng(0), 20, 20, 2, False)
    form = R.pair_form(xtab)
    if form[0] is None:
        pytest.skip("this build has no pair form")
    out = np.zeros((1, 2, 20), np.uint8)
    x = np.zeros((1, 1, 20), np.uint8)
    args = (out, x, ytab.idx, ytab.w, xtab.idx, xtab.w, 0, 0, 1, False, False)
    bad_base = form[0].copy()
    bad_base[-1] = 20
    for bad in ((bad_base,) + form[1:], (form[0][:1],) + form[1:],
                (form[0], form[1][:-1], form[2], form[3])):
        with pytest.raises(ValueError, match="pair form"):
            K.separable_u8(*args, *bad)
    assert not out.any()


# --------------------------------------------------------------------------- variants

def _fixed_point_workload() -> dict[str, np.ndarray]:
    """uint8 resizes whose arithmetic is integer in every build: equal bit for bit."""
    rng = np.random.default_rng(5)
    res = {}
    for c in (1, 3, 4, 5):
        x = rng.integers(0, 256, (18, 70, c), dtype=np.uint8)
        for (match, mode), size in [(p, s) for p in PRESETS + [("opencv", "area"),
                                                               ("torch", "area")]
                                    for s in ((9, 35), (41, 151), (13, 60), (25, 30))]:
            if match == "opencv" and mode == "area" and size != (9, 35):
                continue   # float weights outside the exact 2 x 2 halving
            if match == "torch" and size != (9, 35):
                continue
            res[f"{match}-{mode}-{c}-{size}"] = fi.resize(x, size=size, mode=mode, layout="HWC",
                                                          match=match)
    return res


@pytest.mark.parametrize("variant", other_runnable_variants() or [None])
def test_fixed_point_variants_identical(variant, tmp_path):
    assert_variant_gives_same_bits(variant, __name__, "_fixed_point_workload", tmp_path, HERE)


# --------------------------------------------------------------------------- float32 weights

def _run_float(x, ytab, xtab, c, perm):
    """separable_u8 with float32 tables (torch preset), with or without the permute form."""
    h, w = x.shape[:2]
    xt = R.channel_table(xtab, c) if c > 1 else xtab
    xt, form = R.u8_permute_form(xt) if perm else (xt, R._NO_PERM)
    out = np.zeros((1, ytab.n_out, xt.n_out), np.uint8)
    K.separable_u8(out, x.reshape(1, h, w * c), ytab.idx, ytab.w, xt.idx, xt.w, 0, 0, 2,
                   False, False, None, None, None, None, *form)
    return out.reshape(ytab.n_out, xtab.n_out, c), len(form[0]) > 0


@pytest.mark.parametrize("mode, kw", [("bilinear", {}), ("bicubic", {}), ("area", {}),
                                      ("nearest", {}), ("lanczos", {}),
                                      ("bilinear", {"antialias": True})])
@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.skipif(os.environ.get("FASTINTERP_SANITIZE") == "1",
                    reason="the instrumented -O1 build fuses multiply-adds unlike the -O3 "
                           "builds whose two paths this compares")
def test_float_permutes_equal_plain_taps(mode, kw, c):
    """The permute pass (taps swapped for two-tap tables) gives the plain loop's bytes."""
    rng = np.random.default_rng(c)
    ac = False if mode in ("bilinear", "bicubic", "lanczos") else None
    for w, ow in WIDTHS + [(11, 30), (300, 1000), (77, 200)]:
        x = rng.integers(0, 256, (13, w, c), dtype=np.uint8)
        x[0] = 255
        ytab, xtab = R._axis_tables(mode, (13, w), (17, ow), ac, (None, None),
                                    kw.get("antialias", False), np.dtype(np.uint8))
        plain, _ = _run_float(x, ytab, xtab, c, False)
        vec, has = _run_float(x, ytab, xtab, c, True)
        np.testing.assert_array_equal(vec, plain, err_msg=f"{w} -> {ow}")
        if ow >= w:
            assert has == K.HAVE_PERM, (w, ow)


# --------------------------------------------------------------------------- OpenCV tables

def _f32(v):
    return float(np.float32(v))


def _scalar_opencv_taps(mode, n_in, n_out, axis):
    """cv2.resize's per-pixel rules, one output at a time (as resize.cpp's loops)."""
    scale = 1.0 / (float(n_out) / float(n_in))
    taps = []
    for dx in range(n_out):
        if mode == "area":   # area-mode linear (an axis that grows)
            sx = math.floor(dx * scale)
            fx = _f32((dx + 1) - (sx + 1) * (float(n_out) / float(n_in)))
            fx = 0.0 if fx <= 0 else _f32(fx - math.floor(fx))
        else:
            f = _f32((dx + 0.5) * scale - 0.5)
            sx = math.floor(f)
            fx = _f32(f - sx)
        if mode == "bicubic":
            w = [float(v) for v in presets._cv_cubic(np.float32(fx))]
            taps.append([(min(max(sx - 1 + k, 0), n_in - 1), w[k]) for k in range(4)])
            continue
        if axis == "x" and sx < 0:
            sx, fx = 0, 0.0
        if axis == "x" and sx >= n_in - 1:
            sx, fx = n_in - 1, 0.0
        taps.append([(min(max(sx, 0), n_in - 1), _f32(np.float32(1) - np.float32(fx))),
                     (min(max(sx + 1, 0), n_in - 1), fx)])
    return taps


def _scalar_opencv_area(n_in, n_out):
    scale = 1.0 / (float(n_out) / float(n_in))
    taps = []
    for o in range(n_out):
        f1 = o * scale
        f2 = f1 + scale
        cell = min(scale, n_in - f1)
        s2 = min(math.floor(f2), n_in - 1)
        s1 = min(math.ceil(f1), s2)
        t = [(s1 - 1, _f32((s1 - f1) / cell))] if s1 - f1 > 1e-3 else []
        t += [(s, _f32(1.0 / cell)) for s in range(s1, s2)]
        if f2 - s2 > 1e-3:
            t.append((s2, _f32(min(min(f2 - s2, 1.0), cell) / cell)))
        taps.append(t)
    return taps


def _assert_taps(got, taps):
    idx, w = got
    for o, t in enumerate(taps):
        k = len(t)
        assert [(int(i), float(v)) for i, v in zip(idx[:k, o], w[:k, o])] == t, o
        assert (w[k:, o] == 0).all() and (idx[k:, o] == (t[-1][0] if t else 0)).all(), o


SIZES = [1, 2, 3, 5, 7, 16, 17, 33, 100, 487, 540, 901, 960]


@pytest.mark.parametrize("n_in", SIZES)
def test_opencv_tables_follow_the_per_pixel_rules(n_in):
    """The vectorised tables give each output's taps exactly as OpenCV's loops do."""
    for n_out in SIZES:
        for mode in ("bilinear", "bicubic", "area"):
            for axis in "xy":
                got = presets.opencv_taps(mode, n_in, n_out, "linear" * (mode == "area"), axis)
                _assert_taps(got, _scalar_opencv_taps(mode, n_in, n_out, axis))
        if n_out < n_in:
            _assert_taps(presets.opencv_taps("area", n_in, n_out, "area"),
                         _scalar_opencv_area(n_in, n_out))


@pytest.mark.parametrize("kw, words", [
    (dict(xpbase=np.zeros(2, np.int32), xprel=None), "permute form must be"),
    (dict(xpbase=np.full(2, 99, np.int32), xprel=np.zeros((2, 20), np.int32)),
     "permute form must be"),
    (dict(xpbase=np.zeros(2, np.int32), xprel=np.zeros((2, 20), np.int32), xpblock=3),
     "xblock must be"),
    (dict(xbase=np.zeros(2, np.int32), xrel=np.zeros(64, np.int16)), "pair form must"),
])
def test_u8_kernel_refuses_bad_forms(kw, words):
    if "xpbase" in kw and not K.HAVE_PERM:
        pytest.skip("this build has no permute form")
    out = np.zeros((1, 2, 20), np.uint8)
    x = np.full((1, 1, 20), 9, np.uint8)
    yi, xi = np.zeros((1, 2), np.int32), np.zeros((2, 20), np.int32)
    with pytest.raises(ValueError, match=words):
        K.separable_u8(out, x, yi, np.ones((1, 2), np.float32), xi,
                       np.ones((2, 20), np.float32), 0, 0, 1, **kw)
    assert not out.any()


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "lanczos", "area"])
@pytest.mark.parametrize("c", [1, 3, 5])
def test_pair_form_after_pillows_vertical_pass(mode, c):
    """Pillow blends vertically first when the height shrinks and the width grows."""
    Image = pytest.importorskip("PIL.Image")
    flag = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS,
            "area": Image.BOX}[mode]
    rng = np.random.default_rng(c)
    for w, ow in [(1, 5), (2, 3), (7, 13), (50, 149), (33, 40)]:
        x = rng.integers(0, 256, (17, w, c), dtype=np.uint8)
        x[:3] = 255
        assert presets.pil_vertical_first((17, w), (6, ow))
        ytab, xtab = _tables("pil", mode, (17, w), (6, ow), c)
        plain, _ = _run(x, ytab, xtab, c, False, "vfirst")
        vec, has = _run(x, ytab, xtab, c, True, "vfirst")
        np.testing.assert_array_equal(vec, plain, err_msg=f"{w} -> {ow}")
        assert has == K.HAVE_U8_PAIRS
        ref = np.asarray(Image.fromarray(x[..., 0] if c == 1 else x[..., :3]).resize(
            (ow, 6), flag))
        np.testing.assert_array_equal(vec[..., 0] if c == 1 else vec[..., :3], ref)


@pytest.mark.parametrize("c", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("fy, fx", [(3, 3), (1, 4), (4, 4), (2, 3)])
def test_box_means_on_long_rows(c, fy, fx):
    """Integer-factor area shrinks with the specialised 3- and 4-pixel sums, long rows."""
    x = np.random.default_rng(c * fx).integers(0, 256, (1, 2 * fy, 67 * fx, c), dtype=np.uint8)
    x[0, 0] = 255
    sums = x.reshape(1, 2, fy, 67, fx, c).astype(np.int64).sum(axis=(2, 4))
    q, r = divmod(sums, fy * fx)
    even = q + ((2 * r > fy * fx) | ((2 * r == fy * fx) & (q % 2 == 1)))
    np.testing.assert_array_equal(fi.resize(x, size=(2, 67), mode="area", layout="NHWC"), even)
