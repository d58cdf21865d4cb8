"""uint8 images, the match= presets (OpenCV, Pillow) and mode='lanczos' of resize.

Parity tables: every preset and mode against the library itself on a spread
of geometries (up and down, odd and even, 1 px, unchanged axes) and channel
counts. Claims (also in the README's table): exact for OpenCV nearest and
bilinear and for every Pillow filter; within one grey level (and on all but
a small fraction of pixels) for OpenCV bicubic and area.
"""
import itertools
import zlib

import numpy as np
import pytest

import fastinterp as fi

cv2 = pytest.importorskip("cv2")
Image = pytest.importorskip("PIL.Image")

GEOMS = [((1, 1), (5, 7)), ((5, 7), (1, 1)), ((2, 3), (4, 6)), ((16, 24), (8, 12)),
         ((17, 23), (9, 11)), ((9, 11), (17, 30)), ((20, 30), (7, 45)), ((30, 20), (45, 7)),
         ((64, 48), (21, 16)), ((15, 15), (15, 15)), ((33, 35), (66, 70)),
         ((100, 90), (33, 31)), ((13, 7), (39, 21)), ((48, 36), (12, 9)), ((31, 29), (1, 29)),
         ((1, 40), (3, 13)), ((50, 50), (49, 51)), ((7, 120), (150, 3)), ((99, 99), (33, 33)),
         ((219, 163), (109, 81)), ((120, 120), (60, 61)), ((120, 120), (60, 120)),
         ((3, 240), (1, 120))]
CV_FLAGS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR,
            "bicubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}
PIL_FLAGS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
             "lanczos": Image.LANCZOS, "area": Image.BOX}
EXACT = {("opencv", "nearest"), ("opencv", "bilinear")} | {("pil", m) for m in PIL_FLAGS}


def _image(rng, h, w, c):
    return rng.integers(0, 256, (h, w, c), dtype=np.uint8)


def _reference(match, mode, img, oh, ow):
    c = img.shape[2]
    if match == "opencv":
        return cv2.resize(img, (ow, oh), interpolation=CV_FLAGS[mode]).reshape(oh, ow, c)
    pil = Image.fromarray(img[..., 0] if c == 1 else img)
    return np.asarray(pil.resize((ow, oh), PIL_FLAGS[mode])).reshape(oh, ow, c)


def _channels(match, mode):
    if match == "pil":
        return (1, 3)              # L and RGB (RGBA is premultiplied by Pillow)
    return (1, 2, 3, 4) if mode == "area" else (1, 2, 3, 4, 5)   # cv2 INTER_AREA: <= 4 channels


@pytest.mark.parametrize("match, mode", [("opencv", m) for m in CV_FLAGS]
                         + [("pil", m) for m in PIL_FLAGS])
def test_parity_table(match, mode):
    rng = np.random.default_rng(zlib.crc32(f"{match}-{mode}".encode()))   # not hash(): salted
    differing = total = 0
    for ((h, w), (oh, ow)), c in itertools.product(GEOMS, _channels(match, mode)):
        img = _image(rng, h, w, c)
        ref = _reference(match, mode, img, oh, ow)
        got = fi.resize(img, size=(oh, ow), mode=mode, layout="HWC", match=match)
        assert got.dtype == np.uint8 and got.shape == ref.shape
        d = np.abs(got.astype(int) - ref.astype(int))
        assert d.max() <= 1, ((h, w), (oh, ow), c, d.max())
        if (match, mode) in EXACT:
            assert d.max() == 0, ((h, w), (oh, ow), c, int((d > 0).sum()))
        # per image: near-ties of small images reach 0.8% over 40 seeds; a wrong rounding
        # rule (2 channels, halvings) gives 1.7-8%
        assert d.size < 500 or (d > 0).mean() <= 0.015, ((h, w), (oh, ow), c, (d > 0).mean())
        differing += int((d > 0).sum())
        total += d.size
    assert differing <= 0.002 * total


@pytest.mark.parametrize("mode", ["bilinear", "area"])
def test_opencv_batched_layouts_equal_single_images(mode):
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (3, 21, 34, 3), dtype=np.uint8)
    got = fi.resize(batch, size=(10, 17), mode=mode, layout="NHWC", match="opencv")
    for i in range(3):   # bilinear exact, area within 1 (see the module docstring)
        ref = _reference("opencv", mode, batch[i], 10, 17)
        assert np.abs(got[i].astype(int) - ref).max() <= (mode == "area")
    nchw = fi.resize(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)), size=(10, 17), mode=mode,
                     match="opencv")
    # bilinear is fixed-point arithmetic: the layouts agree bit for bit. INTER_AREA
    # with a non-integer factor is float arithmetic, rounded once: how a build fuses
    # its multiply-adds may move a value across a rounding boundary in one layout.
    diff = np.abs(nchw.transpose(0, 2, 3, 1).astype(int) - got)
    assert diff.max() <= (mode == "area") and (diff > 0).mean() <= 0.01


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic", "area"])
@pytest.mark.parametrize("geom", [((17, 23), (9, 11)), ((9, 11), (17, 30)), ((16, 24), (8, 12))])
def test_opencv_float32_matches_cv2(mode, geom):
    (h, w), (oh, ow) = geom
    img = np.random.default_rng(4).standard_normal((h, w, 3)).astype(np.float32)
    ref = cv2.resize(img, (ow, oh), interpolation=CV_FLAGS[mode])
    got = fi.resize(img, size=(oh, ow), mode=mode, layout="HWC", match="opencv")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-6)


# OpenCV 5 takes the sample positions of float images in float64 in its vector paths
# (1, 3 or 4 channels, no single-pixel input axis; bicubic: float32 images only, no
# input axis under 4 pixels), as fma(o + 0.5, in / out, -0.5), and rounds them to
# float32 elsewhere, as for uint8: on axes of a few hundred pixels the two differ by
# ~1e-5 in the weights, and an unfused float64 position by 2e-13 on 1000 pixels.
@pytest.mark.parametrize("mode, dtype, atol", [("bilinear", np.float32, 3e-7),
                                               ("bilinear", np.float64, 1e-14),
                                               ("bicubic", np.float32, 5e-6),
                                               ("bicubic", np.float64, 1e-14)])
@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("geom", [((100, 100), (37, 41)), ((288, 295), (292, 207)),
                                  ((33, 1000), (20, 77)), ((1, 300), (5, 113)),
                                  ((240, 1), (97, 3)), ((2, 1545), (2, 1798)),
                                  ((3, 2314), (3, 1000)), ((1545, 2), (800, 5)),
                                  ((3, 700), (9, 300))])
def test_opencv_float_sample_positions_match_cv2(mode, dtype, atol, channels, geom):
    (h, w), (oh, ow) = geom
    img = np.random.default_rng(6).uniform(0, 1, (h, w, channels)).astype(dtype)
    ref = cv2.resize(img, (ow, oh), interpolation=CV_FLAGS[mode]).reshape(oh, ow, channels)
    got = fi.resize(img, size=(oh, ow), mode=mode, layout="HWC", match="opencv")
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "lanczos", "area"])
def test_pil_float_matches_pillow_mode_f(mode):
    img = np.random.default_rng(5).standard_normal((19, 26)).astype(np.float32)
    for oh, ow in ((7, 9), (40, 53), (19, 11)):
        ref = np.asarray(Image.fromarray(img, mode="F").resize((ow, oh), PIL_FLAGS[mode]))
        got = fi.resize(img, size=(oh, ow), mode=mode, match="pil")
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- torch preset

def _float_then_round(x, **kw):
    """The documented uint8 rule: the float32 result rounded half to even, saturated."""
    f = fi.resize(x.astype(np.float32), **kw)
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode, kw", [("bilinear", {}), ("bicubic", {}), ("area", {}),
                                      ("nearest", {}), ("nearest-exact", {}),
                                      ("bilinear", {"antialias": True}), ("lanczos", {}),
                                      ("bicubic", {"align_corners": True})])
@pytest.mark.parametrize("size", [(7, 5), (40, 33), (1, 1)])
def test_torch_preset_uint8_is_float32_rounded(mode, kw, size):
    x = np.random.default_rng(6).integers(0, 256, (2, 3, 19, 14), dtype=np.uint8)
    got = fi.resize(x, size=size, mode=mode, **kw)
    want = _float_then_round(x, size=size, mode=mode, **kw)
    assert got.dtype == np.uint8
    # float32 sums in another order (or contracted to fma in other kernel
    # variants) may sit on the other side of .5 by an ulp: a few of 210 values
    d = np.abs(got.astype(int) - want.astype(int))
    assert d.max() <= 1 and (d > 0).sum() <= max(3, 0.002 * d.size)



@pytest.mark.parametrize("mode, kw", [("bilinear", {}), ("bicubic", {}), ("area", {}),
                                      ("bilinear", {"antialias": True}),
                                      ("bicubic", {"antialias": True}), ("lanczos", {})])
def test_torch_preset_uint8_differs_from_float32_rounded_only_within_an_ulp_of_a_half(mode, kw):
    """The README's uint8 rule on random geometries and images: the uint8 kernel computes
    in float32 in its own order, so it rounds the float32 result's way except where that
    lies within float32 rounding of a half (6 pixels to 5: 0.9 * 49 + 0.1 * 244 = 68.5,
    the float32 kernel gives 68.5 -> 68, the uint8 kernel 69)."""
    rng = np.random.default_rng(12)
    x = np.array([[[[49, 244, 178, 143, 0, 214]]]], np.uint8)
    cases = [(x, (1, 5))]
    for _ in range(12):
        h, w, oh, ow = (int(v) for v in rng.integers(1, 70, 4))
        img = rng.integers(0, 256, (1, 2, h, w), dtype=np.uint8)
        cases.append((img if rng.random() < 0.5 else (img > 127).astype(np.uint8) * 255, (oh, ow)))
    for img, size in cases:
        got = fi.resize(img, size=size, mode=mode, **kw)
        f = fi.resize(img.astype(np.float32), size=size, mode=mode, **kw)
        d = got.astype(int) - np.clip(np.rint(f), 0, 255).astype(int)
        assert np.abs(d).max() <= 1
        off = f[d != 0]
        assert np.all(np.abs(off - np.floor(off) - 0.5) <= 8 * np.spacing(np.abs(off))), size


def test_uint8_saturates_and_rounds_half_to_even():
    x = np.array([[0, 255, 0, 255]], np.uint8)
    got = fi.resize(x, size=(1, 8), mode="bicubic")     # overshoot past 0 and 255
    f = fi.resize(x.astype(np.float32), size=(1, 8), mode="bicubic")
    assert f.min() < 0 and f.max() > 255
    np.testing.assert_array_equal(got, np.clip(np.rint(f), 0, 255).astype(np.uint8))
    # exact halves: 1 and 2 averaged is 1.5 -> 2, 2 and 3 -> 2.5 -> 2
    y = np.array([[1, 2, 2, 3]], np.uint8)
    np.testing.assert_array_equal(fi.resize(y, size=(1, 2), mode="area"), [[2, 2]])


def test_torch_uint8_against_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(7).integers(0, 256, (1, 3, 23, 31), dtype=np.uint8)
    for mode in ("nearest", "nearest-exact"):
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(12, 50), mode=mode)
        np.testing.assert_array_equal(fi.resize(x, size=(12, 50), mode=mode), ref.numpy())
    for aa in (False, True):
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(12, 50),
                                              mode="bilinear", antialias=aa).numpy()
        got = fi.resize(x, size=(12, 50), mode="bilinear", antialias=aa)
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_adaptive_avg_pool2d_uint8():
    x = np.random.default_rng(8).integers(0, 256, (2, 3, 17, 22), dtype=np.uint8)
    got = fi.adaptive_avg_pool2d(x, (5, 7))
    f = fi.adaptive_avg_pool2d(x.astype(np.float64), (5, 7))
    assert got.dtype == np.uint8
    assert np.abs(got.astype(float) - f).max() <= 0.5 + 1e-4
    hwc = fi.adaptive_avg_pool2d(np.ascontiguousarray(x[0].transpose(1, 2, 0)), (5, 7),
                                 layout="HWC")
    np.testing.assert_array_equal(hwc, got[0].transpose(1, 2, 0))


@pytest.mark.parametrize("nthreads", [1, 2, 3])
@pytest.mark.parametrize("match, mode", [("torch", "bicubic"), ("opencv", "bilinear"),
                                         ("pil", "lanczos"), ("opencv", "area")])
def test_uint8_threads_bit_identical(nthreads, match, mode):
    x = np.random.default_rng(9).integers(0, 256, (2, 150, 97, 3), dtype=np.uint8)
    old = fi.get_num_threads()
    try:
        fi.set_num_threads(1)
        one = fi.resize(x, size=(61, 201), mode=mode, layout="NHWC", match=match)
        fi.set_num_threads(nthreads)
        many = fi.resize(x, size=(61, 201), mode=mode, layout="NHWC", match=match)
    finally:
        fi.set_num_threads(old)
    np.testing.assert_array_equal(one, many)


# --------------------------------------------------------------------------- lanczos

def test_lanczos_weights_and_identity():
    x = np.random.default_rng(10).standard_normal((1, 2, 9, 12))
    np.testing.assert_allclose(fi.resize(x, size=(9, 12), mode="lanczos"), x, atol=1e-12)
    const = np.full((1, 1, 8, 8), 3.25)
    for size in ((3, 5), (17, 21)):
        for aa in (False, True):
            np.testing.assert_allclose(fi.resize(const, size=size, mode="lanczos", antialias=aa),
                                       3.25, atol=1e-12)


@pytest.mark.parametrize("match", ["torch", "pil"])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_lanczos_samples_on_pixels_take_that_pixel_alone(match, bad):
    """sinc at a whole-pixel distance was about 1e-17, not 0: an axis of unchanged size
    under match='pil' (which Pillow leaves alone) and a 3x upscale's samples on pixel
    centres read their neighbours, spreading an inf or NaN (and moving values by ulps)."""
    x = np.array([[1, 2, bad, 4, 5, 6, 7]] * 2, np.float32)
    same = fi.resize(x, size=(2, 7), mode="lanczos", match=match)
    np.testing.assert_array_equal(same, x)
    y = np.random.default_rng(0).standard_normal((13, 97))
    np.testing.assert_array_equal(fi.resize(y, size=y.shape, mode="lanczos", match=match), y)
    up = fi.resize(x, size=(2, 21), mode="lanczos", match=match)
    np.testing.assert_array_equal(up[:, 1::3], x)       # output 3k + 1 sits on pixel k


def test_lanczos_align_corners_samples_the_corner_grid():
    """align_corners=True (without antialias) samples output o at o (H - 1) / (H_out - 1),
    as bilinear and bicubic do: integer positions return the input there exactly, a
    constant stays constant, and shrinking never leaves an output without taps."""
    x = np.arange(5.0)[None, None, None]
    up = fi.resize(x, size=(1, 9), mode="lanczos", align_corners=True)[0, 0, 0]
    np.testing.assert_allclose(up[::2], np.arange(5.0), atol=1e-12)
    for size in ((2, 2), (3, 5), (1, 7), (15, 4)):
        got = fi.resize(np.ones((1, 1, 8, 8)), size=size, mode="lanczos", align_corners=True)
        np.testing.assert_allclose(got, 1.0, atol=1e-12)
    x = np.random.default_rng(13).standard_normal((1, 1, 6, 11))
    corners = fi.resize(x, size=(3, 6), mode="lanczos", align_corners=True)
    np.testing.assert_allclose(corners[..., 0, 0], x[..., 0, 0], atol=1e-12)
    np.testing.assert_allclose(corners[..., -1, -1], x[..., -1, -1], atol=1e-12)
    g = np.random.default_rng(14).standard_normal(corners.shape)
    back = fi.resize_backward(g, x.shape, mode="lanczos", align_corners=True)
    assert np.isclose((corners * g).sum(), (x * back).sum(), rtol=1e-12)


def test_lanczos_antialias_equals_pillow_on_floats():
    img = np.random.default_rng(11).standard_normal((24, 30)).astype(np.float32)
    ref = np.asarray(Image.fromarray(img, mode="F").resize((11, 9), Image.LANCZOS))
    got = fi.resize(img, size=(9, 11), mode="lanczos", antialias=True)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_lanczos_backward_is_adjoint():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 2, 10, 13))
    g = rng.standard_normal((1, 2, 6, 17))
    y = fi.resize(x, size=(6, 17), mode="lanczos")
    gx = fi.resize_backward(g, x.shape, mode="lanczos")
    assert np.isclose((y * g).sum(), (x * gx).sum(), rtol=1e-12)


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(match="cv2"), ValueError, "match must be one of"),
    (dict(match="opencv", mode="lanczos"), ValueError, "with match='opencv'"),
    (dict(match="opencv", mode="nearest-exact"), ValueError, "with match='opencv'"),
    (dict(match="pil", align_corners=True), ValueError, "align_corners must be None for match"),
    (dict(match="pil", antialias=True), ValueError, "antialias=True needs"),
    (dict(mode="area", antialias=True), ValueError, "antialias=True needs"),
])
def test_preset_errors(kwargs, exc, words):
    x = np.zeros((1, 1, 4, 4), np.uint8)
    with pytest.raises(exc, match=words):
        fi.resize(x, size=2, **kwargs)


def test_uint8_out_and_backward_errors():
    x = np.zeros((1, 1, 4, 4), np.uint8)
    bad = np.full((1, 1, 2, 2), 7.0, np.float32)
    with pytest.raises(TypeError, match="out must have dtype uint8"):
        fi.resize(x, size=2, out=bad)
    assert (bad == 7).all()
    with pytest.raises(TypeError, match="grad_output must have dtype float32 or float64"):
        fi.resize_backward(x, (1, 1, 8, 8))
    out = np.empty((1, 1, 2, 2), np.uint8)
    assert fi.resize(x + 9, size=2, out=out) is out and (out == 9).all()


def test_u8_kernel_refuses_bad_tables():
    from fastinterp._cpu import resize as k
    out = np.zeros((1, 2, 3), np.uint8)
    x = np.zeros((1, 4, 5), np.uint8)
    idx = np.zeros((2, 2), np.int32)
    w = np.zeros((2, 2), np.float32)
    xi = np.full((2, 3), 9, np.int32)
    with pytest.raises(ValueError, match="inside x"):
        k.separable_u8(out, x, idx, w, xi, np.zeros((2, 3), np.float32), 0, 0, 1)
    with pytest.raises(ValueError, match="must match out"):
        k.separable_u8(out, x, idx, w, idx, w, 0, 0, 1)
    with pytest.raises(ValueError, match="shift"):
        k.separable_u8(out, x, idx, idx, xi * 0, np.zeros((2, 3), np.int32), 40, 0, 1)


def _opencv_block_means(x, fy, fx):
    """cv2.INTER_AREA's integer-factor block means of the NHWC uint8 ``x``: its 2x2
    vector path (1, 3, 4 channels) rounds half up, the rest cvRound(float(sum) *
    (1.f / area))."""
    n, h, w, c = x.shape
    sums = x.reshape(n, h // fy, fy, w // fx, fx, c).astype(np.int64).sum(axis=(2, 4))
    if (fy, fx) == (2, 2) and c in (1, 3, 4):
        return (sums + 2) // 4
    scale = np.float32(1) / np.float32(fy * fx)
    return np.rint(sums.astype(np.float32) * scale).astype(np.uint8)


def _cv2_area(img, out_hw):
    """cv2.resize INTER_AREA of an HWC image (cv2 drops a single channel's axis)."""
    got = cv2.resize(img, out_hw[::-1], interpolation=cv2.INTER_AREA)
    return got.reshape(out_hw + (img.shape[-1],))


@pytest.mark.parametrize("c", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("fy, fx", [(1, 1), (2, 2), (1, 2), (2, 1), (3, 3), (4, 2), (5, 7)])
def test_integer_factor_shrinks_are_exact_block_means(c, fy, fx):
    x = np.random.default_rng(fy * 10 + fx).integers(0, 256, (2, fy * 6, fx * 5, c),
                                                     dtype=np.uint8)
    sums = x.reshape(2, 6, fy, 5, fx, c).astype(np.int64).sum(axis=(2, 4))
    q, r = divmod(sums, fy * fx)
    even = q + ((2 * r > fy * fx) | ((2 * r == fy * fx) & (q % 2 == 1)))
    np.testing.assert_array_equal(fi.resize(x, size=(6, 5), mode="area", layout="NHWC"), even)
    cv = fi.resize(x, size=(6, 5), mode="area", layout="NHWC", match="opencv")
    np.testing.assert_array_equal(cv, _opencv_block_means(x, fy, fx))
    np.testing.assert_array_equal(cv[0], _cv2_area(x[0], (6, 5)))
    pooled = fi.adaptive_avg_pool2d(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), (6, 5))
    np.testing.assert_array_equal(pooled.transpose(0, 2, 3, 1), even)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "lanczos", "area"])
def test_pil_pass_order_when_both_axes_shrink(mode):
    """Pillow 13 blends vertically first when the height loses more than twice the
    pixels the width loses (h - oh > 2 (w - ow)), horizontally first otherwise; each
    pass rounds to uint8, so only the same order gives Pillow's bits. Geometries on
    both sides of that boundary, and on it (a tie runs horizontally first)."""
    rng = np.random.default_rng(11)
    geoms = [((96, 40), (48, 20)), ((100, 40), (50, 20)), ((80, 40), (40, 20)),
             ((100, 40), (60, 20)), ((140, 70), (40, 20)), ((105, 27), (58, 13)),
             ((150, 123), (9, 9)), ((145, 70), (6, 43)), ((113, 80), (74, 61)),
             ((92, 142), (67, 129)), ((318, 46), (159, 23)), ((452, 99), (226, 49))]
    for ((h, w), (oh, ow)), c in itertools.product(geoms, (1, 3)):
        img = _image(rng, h, w, c)
        ref = _reference("pil", mode, img, oh, ow)
        got = fi.resize(img, size=(oh, ow), mode=mode, layout="HWC", match="pil")
        np.testing.assert_array_equal(got, ref, err_msg=f"{(h, w)} -> {(oh, ow)}, C={c}")


def _half_even_block_means(x, out_hw):
    """The exact block means of the HWC uint8 image ``x``, rounded half to even."""
    (h, w), (oh, ow) = x.shape[:2], out_hw
    sums = x.reshape(oh, h // oh, ow, w // ow, -1).astype(np.int64).sum(axis=(1, 3))
    area = (h // oh) * (w // ow)
    q, r = divmod(sums, area)
    return q + ((2 * r > area) | ((2 * r == area) & (q % 2 == 1)))


BIG_BLOCKS = [((257, 257), (1, 1)), ((258, 258), (1, 1)), ((514, 514), (2, 2)),
              ((300, 600), (1, 1)), ((1, 70000), (1, 1)), ((700, 699), (1, 1))]


@pytest.mark.parametrize("match", ["torch", "opencv"])
@pytest.mark.parametrize("in_hw, out_hw", BIG_BLOCKS)
def test_uint8_area_with_blocks_beyond_24_bit_sums_is_exact(match, in_hw, out_hw):
    """Integer-factor shrinks are exact block means at any block size whose sums fit 32
    bits (16.8M pixels): the blocks of more than 65,793 pixels took float32 tables, and
    a mean of exactly 127.5 (a 258 x 258 image, half black, half white) came out 127
    where the exact rule gives 128 (124 of 296 such images); the opencv preset is
    cv2.INTER_AREA's bits there too."""
    rng = np.random.default_rng(in_hw[0] + in_hw[1])
    (h, w), (oh, ow) = in_hw, out_hw
    halves = np.zeros(in_hw + (3,), np.uint8)
    halves[:, w // 2:] = 255                            # 127.5 where w is even
    halves[..., 1] = (np.indices(in_hw).sum(axis=0) % 2) * 3    # 1.5 (or near it)
    halves[..., 2] = np.indices(in_hw)[0] % 2           # 0.5 (or near it)
    for x in (halves, rng.integers(0, 256, in_hw + (3,)).astype(np.uint8)):
        got = fi.resize(x, size=out_hw, mode="area", layout="HWC", match=match)
        if match == "torch":
            want = _half_even_block_means(x, out_hw)
            np.testing.assert_array_equal(got, want)
            pooled = fi.adaptive_avg_pool2d(np.ascontiguousarray(x.transpose(2, 0, 1))[None],
                                            out_hw)
            np.testing.assert_array_equal(pooled[0].transpose(1, 2, 0), want)
        else:
            np.testing.assert_array_equal(got, _cv2_area(x, out_hw))


def test_opencv_area_by_integer_factors_rounds_as_cv2():
    """cv2's INTER_AREA rounds float(sum) * (1.f / area), not the exact mean: the
    opencv preset gave the exact half-to-even mean, 116 for a 2 x 7 block summing to
    14 x 116.5 where cv2 gives 117 (38 of 1473 random geometries differed)."""
    img = np.zeros((2, 7, 1), np.uint8)
    img.flat[:6], img.flat[6] = 255, 101
    assert fi.resize(img, size=(1, 1), mode="area", layout="HWC", match="opencv")[0, 0, 0] == 117
    rng = np.random.default_rng(1)
    for trial in range(300):
        fy, fx = (int(v) for v in rng.integers(1, 12, 2))
        c, oh, ow = (int(v) for v in rng.integers(1, 6, 3))
        shape = (oh * fy, ow * fx, min(c, 4))
        img = [rng.integers(0, 256, shape), rng.integers(0, 2, shape) * 255,
               rng.integers(100, 103, shape)][trial % 3].astype(np.uint8)
        got = fi.resize(img, size=(oh, ow), mode="area", layout="HWC", match="opencv")
        np.testing.assert_array_equal(got, _cv2_area(img, (oh, ow)),
                                      err_msg=f"{shape} -> {(oh, ow)}")


@pytest.mark.parametrize("in_hw, out_hw", BIG_BLOCKS)
def test_pil_area_with_large_blocks_is_within_a_grey_level(in_hw, out_hw):
    """Pillow's box filter rounds each pass: within a grey level of the block means, a
    constant image kept."""
    rng = np.random.default_rng(in_hw[0] * in_hw[1])
    const = np.full(in_hw + (3,), 200, np.uint8)
    np.testing.assert_array_equal(fi.resize(const, size=out_hw, mode="area", layout="HWC",
                                            match="pil"), np.full(out_hw + (3,), 200))
    x = rng.integers(0, 256, in_hw + (3,)).astype(np.uint8)
    got = fi.resize(x, size=out_hw, mode="area", layout="HWC", match="pil").astype(float)
    (h, w), (oh, ow) = in_hw, out_hw
    means = x.reshape(oh, h // oh, ow, w // ow, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(got - means).max() <= 1.0


@pytest.mark.parametrize("shape, size, kw", [
    ((1, 3, 1025, 8), (1, 8), dict(mode="bicubic", antialias=True)),
    ((1, 2, 2100, 5), (1, 5), dict(mode="bilinear", antialias=True)),
    ((1, 1, 700, 3), (1, 3), dict(mode="lanczos", antialias=True)),
    ((1, 1, 70000, 1), (1, 1), dict(mode="area")),
    ((1, 2, 5003, 4), (3, 2), dict(mode="area")),
    ((1, 1, 5000, 4), (1, 4), dict(mode="area", match="pil")),
    ((1, 1, 5000, 4), (1, 4), dict(mode="area", match="opencv")),
    ((1, 1, 4, 9000), (4, 1), dict(mode="area")),
])
def test_uint8_windows_of_thousands_of_rows(shape, size, kw):
    """An output row may blend thousands of input rows (tall images shrunk hard): a
    constant keeps its value and random data is the float64 result correctly rounded
    (the torch convention), within a grey level of it for the presets."""
    const = np.full(shape, 200, np.uint8)
    np.testing.assert_array_equal(fi.resize(const, size=size, **kw), 200)
    x = np.random.default_rng(shape[2]).integers(0, 256, shape).astype(np.uint8)
    got = fi.resize(x, size=size, **kw).astype(np.float64)
    ref = fi.resize(x.astype(np.float64), size=size, **{**kw, "match": "torch"})
    tol = 0.5 + 1e-6 if kw.get("match", "torch") == "torch" else 1.0
    assert np.abs(got - ref).max() <= tol
    if kw["mode"] == "area" and "match" not in kw:
        np.testing.assert_array_equal(fi.adaptive_avg_pool2d(x, size), got)


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-15), (np.float32, 3e-7)])
@pytest.mark.parametrize("factors", [(3, 3), (5, 7), (2, 3), (6, 1), (4, 4), (7, 2)])
@pytest.mark.parametrize("channels", [1, 3])
def test_opencv_area_by_integer_factors_of_float_images_matches_cv2(dtype, atol, factors,
                                                                    channels):
    """cv2's INTER_AREA by integer factors (its fast path) multiplies each block's sum by
    float32(1 / (fy * fx)); the box weights took float32(1 / f) per axis, two roundings:
    float64 results were 5e-8 off cv2 (and off the exact mean by as much)."""
    fy, fx = factors
    oh, ow = 5, 4
    img = np.random.default_rng(9).uniform(0, 1, (oh * fy, ow * fx, channels)).astype(dtype)
    ref = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_AREA).reshape(oh, ow, channels)
    got = fi.resize(img, size=(oh, ow), mode="area", layout="HWC", match="opencv")
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)


@pytest.mark.parametrize("call", [
    lambda x, cuda: fi.resize(x, size=(2, 2)),
    lambda x, cuda: fi.adaptive_avg_pool2d(x, 2),
    lambda x, cuda: fi.grid_sample(x, cuda.to_device(np.zeros((1, 2, 2, 2), np.float32)))])
def test_uint8_images_on_a_gpu_are_the_same_type_error(cuda, call):
    """resize and the pool raised the registry's NotImplementedError ("no kernel for
    backend 'cuda' and dtype uint8") where grid_sample said uint8 runs on the CPU."""
    x = cuda.to_device(np.zeros((1, 1, 4, 4), np.uint8))
    with pytest.raises(TypeError, match=r"^\w+: uint8 input runs on the CPU; got a CUDA array\.$"):
        call(x, cuda)


@pytest.mark.parametrize("call", [
    lambda x, cuda: fi.resize(x, size=(2, 2)),
    lambda x, cuda: fi.adaptive_avg_pool2d(x, 2),
    lambda x, cuda: fi.grid_sample(x, cuda.to_device(np.zeros((1, 2, 2, 2), np.float32))),
    lambda x, cuda: fi.warp_affine(x, np.eye(2, 3), (3, 3)),
    lambda x, cuda: fi.lerp(x, x, 0.5),
    lambda x, cuda: fi.pairwise_sqdist(x[0, 0])])
@pytest.mark.parametrize("dtype", [np.int32, np.complex64, np.bool_])
def test_other_dtypes_on_a_gpu_name_what_cuda_takes(cuda, call, dtype):
    """The message listed uint8, float16 and bfloat16, which run on the CPU only."""
    x = cuda.to_device(np.zeros((1, 1, 4, 4), dtype))
    with pytest.raises(TypeError, match=r"^\w+: \w+ must have dtype float32 or float64 on CUDA; "
                                        rf"got {np.dtype(dtype)}\.$"):
        call(x, cuda)
