"""warp_affine / warp_perspective / rotate: OpenCV's and PyTorch's conventions, gradients."""
import doctest
import os

import numpy as np
import pytest

import fastinterp as fi
import fastinterp.warp as warp

cv2 = pytest.importorskip("cv2")

CV_BORDER = {"zeros": cv2.BORDER_CONSTANT, "border": cv2.BORDER_REPLICATE,
             "reflection": cv2.BORDER_REFLECT, "wrap": cv2.BORDER_WRAP}
CV_INTER = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def smooth_image(rng, N, C, H, W, dtype=np.float64):
    """Band-limited images: OpenCV's 1/32-pixel rounding of positions changes them little."""
    y, x = np.mgrid[0:H, 0:W]
    imgs = np.empty((N, C, H, W))
    for n in range(N):
        for c in range(C):
            fx, fy, ph = rng.uniform(0.05, 0.25, 3)
            imgs[n, c] = np.sin(fx * x + ph) * np.cos(fy * y - ph) + 0.1 * c
    return imgs.astype(dtype)


def random_affine(rng, H, W):
    angle = rng.uniform(-40, 40)
    M = cv2.getRotationMatrix2D((rng.uniform(0, W - 1), rng.uniform(0, H - 1)), angle,
                                rng.uniform(0.7, 1.3))
    M[:, 2] += rng.uniform(-3, 3, 2)
    return M


def random_homography(rng, H, W):
    src = np.float32([[0, 0], [W - 1, 0], [W - 1, H - 1], [0, H - 1]])
    dst = (src + rng.uniform(-0.15, 0.15, (4, 2)) * [W, H]).astype(np.float32)
    return cv2.getPerspectiveTransform(src, dst).astype(np.float64)


def test_docstring_examples():
    assert doctest.testmod(warp, raise_on_error=False).failed == 0


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection", "wrap"])
@pytest.mark.parametrize("inverse_map", [False, True])
def test_warp_affine_matches_opencv(seed, mode, padding_mode, inverse_map):
    rng = np.random.default_rng(seed)
    H, W, Ho, Wo = rng.integers(9, 30, 4)
    img = smooth_image(rng, 1, 1, H, W, np.float32)
    M = random_affine(rng, H, W)
    flags = CV_INTER[mode] | (cv2.WARP_INVERSE_MAP if inverse_map else 0)
    ref = cv2.warpAffine(img[0, 0], M, (int(Wo), int(Ho)), flags=flags,
                         borderMode=CV_BORDER[padding_mode], borderValue=0)
    got = fi.warp_affine(img, M, (Ho, Wo), mode=mode, padding_mode=padding_mode,
                         inverse_map=inverse_map)
    assert got.shape == (1, 1, Ho, Wo) and got.dtype == np.float32
    # OpenCV rounds positions to 1/32 px; with |grad| <= 0.5 per px that is <= 0.01
    np.testing.assert_allclose(got[0, 0], ref, atol=0.03)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_warp_perspective_matches_opencv(seed, padding_mode):
    rng = np.random.default_rng(10 + seed)
    H, W = rng.integers(12, 30, 2)
    img = smooth_image(rng, 1, 1, H, W, np.float32)
    Hm = random_homography(rng, H, W)
    ref = cv2.warpPerspective(img[0, 0], Hm, (int(W), int(H)), flags=cv2.INTER_LINEAR,
                              borderMode=CV_BORDER[padding_mode], borderValue=0)
    got = fi.warp_perspective(img, Hm, (H, W), padding_mode=padding_mode)
    np.testing.assert_allclose(got[0, 0], ref, atol=0.03)


@pytest.mark.parametrize("fill", [0.75, -2.0])
def test_constant_fill_is_opencv_border_value(fill):
    rng = np.random.default_rng(13)
    img = smooth_image(rng, 1, 1, 14, 17, np.float32)
    M = random_affine(rng, 14, 17)
    ref = cv2.warpPerspective(img[0, 0], np.vstack([M, [0, 0, 1]]), (15, 12),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=fill)
    got = fi.warp_affine(img, M, (12, 15), padding_mode="constant", fill=fill)
    np.testing.assert_allclose(got[0, 0], ref, atol=0.05)
    gi, gM = fi.warp_affine_backward(np.ones_like(got), img, M, (12, 15),
                                     padding_mode="constant", fill=fill)
    assert np.isfinite(gi).all() and np.isfinite(gM).all()


def test_integer_translation_matches_opencv():
    """Whole-pixel shifts: nearest is exact; bilinear is exact up to the float32 rounding of
    the normalized grid (a weight of 1e-7 on a neighbour)."""
    rng = np.random.default_rng(3)
    img = rng.standard_normal((1, 2, 7, 9)).astype(np.float32)   # not smooth on purpose
    M = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
    got = fi.warp_affine(img, M, (7, 9))
    got_nn = fi.warp_affine(img, M, (7, 9), mode="nearest")
    for c in range(2):
        ref = cv2.warpAffine(img[0, c], M, (9, 7), flags=cv2.INTER_LINEAR)
        np.testing.assert_allclose(got[0, c], ref, rtol=2e-6, atol=2e-6)
        np.testing.assert_array_equal(
            got_nn[0, c], cv2.warpAffine(img[0, c], M, (9, 7), flags=cv2.INTER_NEAREST))


@pytest.mark.parametrize("angle, scale", [(30.0, 1.0), (-75.0, 0.8), (90.0, 1.2)])
def test_rotate_matches_opencv(angle, scale):
    rng = np.random.default_rng(4)
    img = smooth_image(rng, 2, 3, 15, 20)
    center = ((20 - 1) / 2.0, (15 - 1) / 2.0)
    M = cv2.getRotationMatrix2D(center, angle, scale)
    np.testing.assert_allclose(fi.rotation_matrix(angle, center, scale), M, atol=1e-12)
    got = fi.rotate(img, angle, scale=scale)
    for n in range(2):
        for c in range(3):
            ref = cv2.warpAffine(img[n, c], M, (20, 15), flags=cv2.INTER_LINEAR)
            np.testing.assert_allclose(got[n, c], ref, atol=0.03)


# (layout, NCHW batch -> that layout)
TO_LAYOUT = {"NHWC": lambda a: a.transpose(0, 2, 3, 1), "CHW": lambda a: a[0],
             "HWC": lambda a: a[0].transpose(1, 2, 0), "HW": lambda a: a[0, 0]}


@pytest.mark.filterwarnings("error::FutureWarning")
@pytest.mark.parametrize("layout", sorted(TO_LAYOUT))
@pytest.mark.parametrize("op", ["warp_affine", "warp_perspective"])
def test_layouts_equal_nchw_forward_and_backward(layout, op):
    rng = np.random.default_rng(5)
    N = 2 if layout == "NHWC" else 1
    C = 1 if layout == "HW" else 3
    img = rng.standard_normal((N, C, 8, 11))
    M = random_affine(rng, 8, 11) if op == "warp_affine" else random_homography(rng, 8, 11)
    fwd, bwd = getattr(fi, op), getattr(fi, op + "_backward")
    conv = TO_LAYOUT[layout]
    nchw = fwd(img, M, (9, 10))
    got = fwd(np.ascontiguousarray(conv(img)), M, (9, 10), layout=layout)
    np.testing.assert_allclose(got, conv(nchw), rtol=1e-14, atol=1e-15)
    go = rng.standard_normal(nchw.shape)
    gi, gm = bwd(go, img, M, (9, 10))
    gi_l, gm_l = bwd(np.ascontiguousarray(conv(go)), np.ascontiguousarray(conv(img)), M,
                     (9, 10), layout=layout)
    assert gi_l.shape == conv(img).shape
    np.testing.assert_allclose(gi_l, conv(gi), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(gm_l, gm, rtol=1e-12, atol=1e-13)


@pytest.mark.filterwarnings("error::FutureWarning")
def test_rotate_single_hwc_image_equals_batched():
    rng = np.random.default_rng(12)
    img = rng.standard_normal((7, 9, 5))
    single = fi.rotate(img, 30, layout="HWC")
    batched = fi.rotate(img[None], 30, layout="NHWC")
    np.testing.assert_array_equal(single, batched[0])


def test_layout_errors_name_the_op_and_shape():
    with pytest.raises(ValueError, match=r"warp_affine: .*layout='CHW'"):
        fi.warp_affine(np.zeros((3, 4, 5)), np.eye(2, 3), (4, 5))
    with pytest.raises(ValueError, match=r"rotate: img must have shape \(H, W, C\)"):
        fi.rotate(np.zeros((1, 3, 4, 5)), 10, layout="HWC")
    with pytest.raises(TypeError):
        fi.warp_affine(np.zeros((1, 1, 4, 5)), np.eye(2, 3), (4, 5), channels_last=True)
    with pytest.raises(ValueError, match=r"warp_affine_backward: grad_output must have shape"):
        fi.warp_affine_backward(np.zeros((1, 1, 3, 5)), np.zeros((1, 1, 4, 5)), np.eye(2, 3),
                                (4, 5))


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_torch_convention_equals_affine_grid_then_grid_sample(torch, align_corners, mode,
                                                              padding_mode):
    F = torch.nn.functional
    rng = np.random.default_rng(6)
    img = rng.standard_normal((3, 2, 6, 7))
    theta = np.eye(2, 3) + rng.uniform(-0.3, 0.3, (3, 2, 3))
    kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    got = fi.warp_affine(img, theta, (5, 8), match="torch", **kw)
    t_grid = F.affine_grid(torch.from_numpy(theta), (3, 2, 5, 8), align_corners=align_corners)
    ref = F.grid_sample(torch.from_numpy(img), t_grid, **kw).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("align_corners", [False, True])
def test_torch_convention_gradients_equal_autograd(torch, align_corners):
    F = torch.nn.functional
    rng = np.random.default_rng(7)
    img = rng.standard_normal((2, 3, 6, 7))
    theta = np.eye(2, 3) + rng.uniform(-0.3, 0.3, (2, 2, 3))
    go = rng.standard_normal((2, 3, 5, 4))
    t_img = torch.from_numpy(img).requires_grad_()
    t_theta = torch.from_numpy(theta).requires_grad_()
    grid = F.affine_grid(t_theta, (2, 3, 5, 4), align_corners=align_corners)
    F.grid_sample(t_img, grid, align_corners=align_corners).backward(torch.from_numpy(go))
    gi, gm = fi.warp_affine_backward(go, img, theta, (5, 4), match="torch",
                                     align_corners=align_corners)
    np.testing.assert_allclose(gi, t_img.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gm, t_theta.grad.numpy(), rtol=1e-9, atol=1e-10)


def _loss_and_grad(fwd, bwd, img, M, go, dsize, **kw):
    def loss(m):
        return float((fwd(img, m, dsize, **kw) * go).sum())
    return loss, bwd(go, img, M, dsize, **kw)


@pytest.mark.parametrize("kind", ["affine", "perspective"])
@pytest.mark.parametrize("match, inverse_map", [("opencv", False), ("opencv", True),
                                                ("torch", False)])
@pytest.mark.parametrize("mode, padding", [("bilinear", "border"), ("bicubic", "border"),
                                           ("bilinear", "wrap"), ("bilinear", "constant")])
def test_matrix_gradient_by_finite_differences(kind, match, inverse_map, mode, padding):
    rng = np.random.default_rng(8)
    H, W = 9, 10
    img = smooth_image(rng, 2, 2, H, W)
    if match == "opencv":
        M = random_affine(rng, H, W) if kind == "affine" else random_homography(rng, H, W)
    else:
        M = np.eye(3)[:2 if kind == "affine" else 3] + rng.uniform(-0.1, 0.1,
                                                                  (2 if kind == "affine" else 3, 3))
    fwd, bwd = ((fi.warp_affine, fi.warp_affine_backward) if kind == "affine"
                else (fi.warp_perspective, fi.warp_perspective_backward))
    go = rng.standard_normal((2, 2, 8, 7))
    kw = dict(mode=mode, match=match, inverse_map=inverse_map, padding_mode=padding,
              fill=0.5 if padding == "constant" else None)
    loss, (gi, gm) = _loss_and_grad(fwd, bwd, img, M, go, (8, 7), **kw)
    assert gm.shape == M.shape
    scale = np.abs(M).max(axis=None)
    numeric = np.zeros_like(M)
    for idx in np.ndindex(M.shape):
        h = 1e-6 * max(abs(M[idx]), 1e-3 * scale)
        Mp, Mm = M.copy(), M.copy()
        Mp[idx] += h
        Mm[idx] -= h
        numeric[idx] = (loss(Mp) - loss(Mm)) / (2 * h)
    np.testing.assert_allclose(gm, numeric, rtol=2e-4, atol=2e-5 * np.abs(numeric).max())
    # grad_img is the adjoint of the (linear in img) forward
    probe = rng.standard_normal(img.shape)
    zero_fill = {**kw, "fill": 0.0 if padding == "constant" else None}    # linear in img
    lhs = float((fwd(probe, M, (8, 7), **zero_fill) * go).sum())
    assert np.isclose(lhs, float((probe * gi).sum()), rtol=1e-10)


def test_per_image_and_shared_matrices():
    rng = np.random.default_rng(9)
    img = rng.standard_normal((3, 1, 8, 8))
    M = random_affine(rng, 8, 8)
    shared = fi.warp_affine(img, M, (8, 8))
    per = fi.warp_affine(img, np.stack([M] * 3), (8, 8))
    np.testing.assert_array_equal(shared, per)
    go = rng.standard_normal(shared.shape)
    _, g_shared = fi.warp_affine_backward(go, img, M, (8, 8))
    _, g_per = fi.warp_affine_backward(go, img, np.stack([M] * 3), (8, 8))
    assert g_shared.shape == (2, 3) and g_per.shape == (3, 2, 3)
    np.testing.assert_allclose(g_shared, g_per.sum(axis=0), rtol=1e-12)


# Blocks of: runs of 10 pixels of a row, 2 rows of 21 pixels, 1 image, 2 images (the last
# block ragged). (An output of 1 x 2**25 pixels built its whole grid in one block.)
@pytest.mark.parametrize("block_points", [10, 50, 400, 850])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "HWC"])
def test_blocked_forward_is_bit_identical(monkeypatch, layout, block_points):
    rng = np.random.default_rng(11)
    shape = {"NCHW": (5, 3, 17, 23), "NHWC": (5, 17, 23, 3), "HWC": (17, 23, 3)}[layout]
    img = rng.standard_normal(shape).astype(np.float32)
    Hm = random_homography(rng, 17, 23)
    whole = fi.warp_perspective(img, Hm, (19, 21), layout=layout)
    go = rng.standard_normal(whole.shape).astype(np.float32)
    grads = fi.warp_perspective_backward(go, img, Hm, (19, 21), layout=layout)
    monkeypatch.setattr(warp, "BLOCK_POINTS", block_points)
    sampled = []

    def recorded_grid_sample(x, grid, **kw):
        sampled.append(grid.shape[0] * grid.shape[1] * grid.shape[2])
        return fi.grid_sample(x, grid, **kw)
    monkeypatch.setattr(warp, "grid_sample", recorded_grid_sample)
    out = np.full_like(whole, np.nan)
    blocked = fi.warp_perspective(img, Hm, (19, 21), layout=layout, out=out)
    assert blocked is out
    np.testing.assert_array_equal(blocked, whole)
    assert sum(sampled) == whole.size // 3 and max(sampled) <= block_points
    for got, want in zip(fi.warp_perspective_backward(go, img, Hm, (19, 21), layout=layout),
                         grads):
        np.testing.assert_array_equal(got, want)


def test_a_batch_warps_each_image_as_alone(rng):
    """Many small images were warped one at a time from Python (4096 MNIST digits took
    1 s, 9x grid_sample's time); blocks of images give each one's own bits."""
    img = rng.standard_normal((300, 2, 9, 8)).astype(np.float32)
    M = np.stack([random_affine(rng, 9, 8) for _ in range(300)])
    go = rng.standard_normal((300, 2, 7, 6)).astype(np.float32)
    batch = fi.warp_affine(img, M, (7, 6))
    gi, gm = fi.warp_affine_backward(go, img, M, (7, 6))
    for n in (0, 151, 299):
        np.testing.assert_array_equal(batch[n], fi.warp_affine(img[n], M[n], (7, 6),
                                                               layout="CHW"))
        one_gi, one_gm = fi.warp_affine_backward(go[n], img[n], M[n], (7, 6), layout="CHW")
        np.testing.assert_array_equal(gi[n], one_gi)
        np.testing.assert_allclose(gm[n], one_gm, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op", ["warp_affine", "warp_perspective", "rotate"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "HWC", "HW"])
@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection", "wrap", "constant"])
def test_uint8_images_are_the_rounded_float32_warp(monkeypatch, op, layout, mode, padding_mode):
    """A uint8 image is warped as grid_sample samples one: in float32, then each output
    rounded half to even and saturated; bit for bit, blocked or not, with out=."""
    rng = np.random.default_rng(13)
    shape = {"NCHW": (2, 3, 17, 23), "NHWC": (2, 17, 23, 3), "HWC": (17, 23, 3),
             "HW": (17, 23)}[layout]
    img = rng.integers(0, 256, shape).astype(np.uint8)
    fill = 300.0 if padding_mode == "constant" else None      # converted to uint8: 255
    kw = dict(mode=mode, padding_mode=padding_mode, layout=layout, fill=fill)
    if op == "rotate":
        call = lambda x, **more: fi.rotate(x, 23.0, **dict(kw, **more))           # noqa: E731
    elif op == "warp_affine":
        M = random_affine(rng, 17, 23)
        call = lambda x, **more: fi.warp_affine(x, M, (19, 21), **dict(kw, **more))  # noqa: E731
    else:
        Hm = random_homography(rng, 17, 23)
        call = lambda x, **more: fi.warp_perspective(x, Hm, (19, 21),  # noqa: E731
                                                     **dict(kw, **more))
    got = call(img)
    assert got.dtype == np.uint8
    as_float = call(img.astype(np.float32), fill=fill and 255.0)
    expected = np.clip(np.rint(as_float), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)
    monkeypatch.setattr(warp, "BLOCK_POINTS", 50)
    out = np.zeros_like(got)
    assert call(img, out=out) is out
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "constant"])
def test_uint8_warp_affine_within_a_grey_level_of_opencv(mode, padding_mode):
    rng = np.random.default_rng(14)
    fills = [(40.0, 90.0, 250.0), (300.0, -7.0, 100.5), (101.5, 255.5, -0.5), (1e6,) * 3,
             (254.50000001, 0.5000000001, 2.5000001)]  # OpenCV converts borderValue first
    for trial in range(5):
        H, W, Ho, Wo = (int(v) for v in rng.integers(12, 40, 4))
        img = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
        M = random_affine(rng, H, W)
        fill = fills[trial] if padding_mode == "constant" else None
        got = fi.warp_affine(img, M, (Ho, Wo), mode=mode, padding_mode=padding_mode,
                             fill=fill, layout="HWC")
        flag = {"nearest": cv2.INTER_NEAREST, **CV_INTER}[mode]
        ref = cv2.warpAffine(img, M, (Wo, Ho), flags=flag, borderValue=fill or 0,
                             borderMode=CV_BORDER.get(padding_mode, cv2.BORDER_CONSTANT))
        assert np.abs(got.astype(int) - ref).max() <= (mode != "nearest")


def test_uint8_gradients_are_refused():
    img = np.zeros((1, 1, 6, 6), np.uint8)
    with pytest.raises(TypeError, match="warp_affine_backward: img must have dtype float32 "
                                        "or float64; got uint8"):
        fi.warp_affine_backward(np.ones((1, 1, 6, 6), np.float32), img, np.eye(2, 3), (6, 6))


def test_points_at_infinity_sample_the_padding():
    img = np.ones((1, 1, 4, 4))
    Hm = np.array([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 1.0]])   # w = 1 - x: zero at x = 1
    out = fi.warp_perspective(img, Hm, (4, 4), inverse_map=True)
    assert np.isfinite(out).all()
    assert (out[0, 0, :, 1] == 0).all()
    gi, gH = fi.warp_perspective_backward(np.ones_like(out), img, Hm, (4, 4), inverse_map=True)
    assert np.isfinite(gi).all() and np.isfinite(gH).all()



@pytest.mark.parametrize("padding", ["reflection", "wrap", "zeros", "border"])
@pytest.mark.parametrize("dtype, tiny", [(np.float64, 1e-160), (np.float32, 1e-25)])
def test_matrix_gradient_of_points_moved_far_outside_is_finite(padding, dtype, tiny):
    """A homography whose w is tiny sends its points beyond what the sampler computes
    with; the forward samples them far outside, where they no longer depend on the
    matrix. Their grid gradient (not 0 with reflection or wrap) was still chained through
    1/w: u/w**2 overflowed, +inf and -inf summed to NaN in the whole grad_M."""
    img = np.random.default_rng(0).random((1, 1, 20, 30)).astype(dtype)
    Hm = np.diag([1.0, 1.0, tiny])
    out = fi.warp_perspective(img, Hm, (8, 9), inverse_map=True, padding_mode=padding)
    gi, gH = fi.warp_perspective_backward(np.ones_like(out), img, Hm, (8, 9),
                                          inverse_map=True, padding_mode=padding)
    assert np.isfinite(out).all() and np.isfinite(gi).all() and np.isfinite(gH).all()
    # a row of w = 1 beside them keeps its ordinary gradient
    Hm2 = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0 - tiny, tiny]])
    _, gH2 = fi.warp_perspective_backward(np.ones_like(out), img, Hm2, (8, 9),
                                          inverse_map=True, padding_mode=padding)
    assert np.isfinite(gH2).all()


def test_torch_tensors_come_back_as_torch(torch):
    img = torch.rand(1, 2, 5, 5)
    out = fi.rotate(img, 15.0)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 5, 5)
    np.testing.assert_array_equal(out.numpy(), fi.rotate(img.numpy(), 15.0))


@pytest.mark.parametrize("call, message", [
    (lambda: fi.warp_affine(np.zeros((1, 1, 4, 4)), np.eye(3), (4, 4)),
     r"warp_affine: M must have shape \(2, 3\) or \(N, 2, 3\)"),
    (lambda: fi.warp_affine(np.zeros((1, 1, 4, 4)), np.zeros((2, 3)), (4, 4)),
     "warp_affine: M must be invertible"),
    (lambda: fi.warp_affine(np.zeros((1, 1, 4, 4)), np.eye(2, 3), (4,)),
     r"warp_affine: dsize must be \(H_out, W_out\)"),
    (lambda: fi.warp_perspective(np.zeros((1, 1, 4, 4)), np.eye(3), (4, 4), match="kornia"),
     "warp_perspective: match must be one of"),
    (lambda: fi.warp_perspective(np.zeros((1, 1, 4, 4)), np.full((3, 3), np.nan), (4, 4)),
     "warp_perspective: M must be finite"),
    (lambda: fi.warp_affine(np.zeros((1, 4, 4)), np.eye(2, 3), (4, 4)),
     r"warp_affine: img must have shape .*layout="),
    (lambda: fi.warp_affine(np.zeros((1, 1, 4, 4)), np.eye(2, 3), (4, 4),
                            out=np.zeros((1, 1, 4, 5))), "warp_affine: out must have shape"),
])
def test_errors_name_the_op_and_argument(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_cuda_arrays_give_the_cpu_result(cuda):
    rng = np.random.default_rng(12)
    img = rng.standard_normal((2, 2, 6, 7))
    Hm = random_homography(rng, 6, 7)
    go = rng.standard_normal((2, 2, 5, 4))
    got = fi.warp_perspective(cuda.to_device(img), Hm, (5, 4))
    np.testing.assert_allclose(got.copy_to_host(), fi.warp_perspective(img, Hm, (5, 4)),
                               rtol=1e-12, atol=1e-12)
    gi, gm = fi.warp_perspective_backward(cuda.to_device(go), cuda.to_device(img), Hm, (5, 4))
    ref_gi, ref_gm = fi.warp_perspective_backward(go, img, Hm, (5, 4))
    np.testing.assert_allclose(gi.copy_to_host(), ref_gi, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gm, ref_gm, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("call", [lambda x: fi.warp_affine(x, np.eye(2, 3), (3, 3)),
                                  lambda x: fi.warp_perspective(x, np.eye(3), (3, 3)),
                                  lambda x: fi.rotate(x, 30.0)])
def test_uint8_cuda_images_are_refused_under_the_warps_name(cuda, call):
    x = cuda.to_device(np.zeros((1, 1, 4, 4), np.uint8))
    op = call.__code__.co_names[1]
    with pytest.raises(TypeError, match=rf"^{op}: uint8 input runs on the CPU; got a CUDA "
                                        rf"array\.$"):
        call(x)


@pytest.mark.parametrize("op", ["warp_affine", "warp_perspective", "rotate"])
def test_cuda_only_options_are_refused_under_the_warps_name(cuda, op):
    """A channels-last layout and the CPU-only paddings, which the CUDA sampler does not
    take, are refused naming the warp called (they named grid_sample)."""
    call = {"warp_affine": lambda x, **kw: fi.warp_affine(x, np.eye(2, 3), (3, 3), **kw),
            "warp_perspective": lambda x, **kw: fi.warp_perspective(x, np.eye(3), (3, 3), **kw),
            "rotate": lambda x, **kw: fi.rotate(x, 30.0, **kw)}[op]
    hwc = cuda.to_device(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match=rf"^{op}: layout must be 'NCHW' \(or 'CHW'/'HW'\) "
                                         rf"for CUDA arrays"):
        call(hwc, layout="HWC")
    nchw = cuda.to_device(np.zeros((1, 2, 4, 4)))
    for padding in ("wrap", "constant"):
        with pytest.raises(ValueError, match=rf"^{op}: padding_mode='{padding}' is supported "
                                             rf"for CPU arrays only"):
            call(nchw, padding_mode=padding)


def test_affine_inverse_is_opencvs_bit_for_bit():
    rng = np.random.default_rng(21)
    M = rng.standard_normal((50, 2, 3)) * 10.0 ** rng.uniform(-8, 8, (50, 1, 1))
    inner = warp._Map("warp_affine", M, 2, 50, 6, 7, 5, 4, "opencv", False, False).inner
    for m, got in zip(M, inner):
        np.testing.assert_array_equal(got[:2], cv2.invertAffineTransform(m))


# --------------------------------------------------------------------------- hostile arguments

IMG = np.zeros((1, 1, 4, 4))


@pytest.mark.parametrize("fn", ["rotate", "rotation_matrix"])
@pytest.mark.parametrize("kw, exc, match", [
    (dict(scale=None), TypeError, "scale must be a real number; got None"),
    (dict(scale="2"), TypeError, "scale must be a real number; got str '2'"),
    (dict(scale=True), TypeError, "scale must be a real number; got bool"),
    (dict(scale=1 + 2j), TypeError, "scale must be a real number; got complex"),
    (dict(scale=np.ones(2)), TypeError, "scale must be a real number; got ndarray"),
    (dict(scale=float("inf")), ValueError, "scale must be finite; got inf"),
    (dict(scale=float("nan")), ValueError, "scale must be finite; got nan"),
    (dict(scale=10**400), ValueError, "scale must be finite; got an int of 401 digits"),
    (dict(angle=float("inf")), ValueError, "angle must be finite; got inf"),
    (dict(angle=-np.inf), ValueError, "angle must be finite; got -inf"),
    (dict(angle=np.float32("nan")), ValueError, "angle must be finite; got nan"),
    (dict(angle=None), TypeError, "angle must be a real number; got None"),
    (dict(angle="30"), TypeError, "angle must be a real number; got str '30'"),
    (dict(angle=np.bool_(True)), TypeError, "angle must be a real number; got bool"),
    (dict(center=3), TypeError, r"center must be a pair \(x, y\) of numbers; got 3"),
    (dict(center="ab"), TypeError, r"center must be a pair \(x, y\) of numbers; got 'ab'"),
    (dict(center=(1.0, 2.0, 3.0)), ValueError, r"center must be a pair \(x, y\) of numbers; got 3"),
    (dict(center=(1.0,)), ValueError, r"center must be a pair"),
    (dict(center=(np.inf, 1.0)), ValueError, r"center\[0\] must be finite; got inf"),
    (dict(center=(1.0, None)), TypeError, r"center\[1\] must be a real number; got None"),
    (dict(center=(1.0, "2")), TypeError, r"center\[1\] must be a real number; got str"),
])
def test_rotation_arguments_raise_clear_errors(fn, kw, exc, match):
    args = dict(angle=30.0, center=(1.5, 1.5), scale=1.0)
    args.update(kw)
    call = (lambda: fi.rotate(IMG, **args)) if fn == "rotate" else (
        lambda: fi.rotation_matrix(**args))
    with pytest.raises(exc, match=rf"^{fn}: {match}"):
        call()


def test_rotation_takes_numpy_and_integer_scalars():
    M = fi.rotation_matrix(np.float32(90), (np.int64(1), 1), scale=np.int8(2))
    np.testing.assert_allclose(M, fi.rotation_matrix(90.0, (1.0, 1.0), 2.0), atol=1e-15)
    np.testing.assert_array_equal(fi.rotation_matrix(0, np.array([1.0, 2.0])), np.eye(2, 3))


@pytest.mark.parametrize("dsize, exc, match", [
    ("abc", TypeError, r"dsize must be a sequence \(H_out, W_out\) of ints; got 'abc'"),
    (b"ab", TypeError, r"dsize must be a sequence \(H_out, W_out\) of ints"),
    (4, TypeError, r"dsize must be a sequence \(H_out, W_out\) of ints; got 4"),
    (None, TypeError, r"dsize must be a sequence \(H_out, W_out\) of ints; got None"),
    (("a", 3), TypeError, r"dsize must be a sequence \(H_out, W_out\) of ints"),
    ((2.5, 3), TypeError, r"dsize must be a sequence \(H_out, W_out\) of ints"),
    ((4.0, 4), TypeError, r"dsize must be a sequence \(H_out, W_out\) of ints"),
    ((True, 4), TypeError, r"dsize must be a sequence \(H_out, W_out\) of ints"),
    ((4, None), TypeError, r"dsize must be a sequence \(H_out, W_out\) of ints"),
    ((4, 4, 4), ValueError, r"dsize must be \(H_out, W_out\) of ints; got \(4, 4, 4\)"),
    ((-1, 4), ValueError, r"dsize must have entries >= 0 and <= 2\*\*31 - 1"),
    ((2**70, 3), ValueError, r"dsize must have entries >= 0 and <= 2\*\*31 - 1"),
    ((4, 2**31), ValueError, r"dsize must have entries >= 0 and <= 2\*\*31 - 1"),
])
@pytest.mark.parametrize("fn", ["warp_affine", "warp_perspective"])
def test_dsize_errors(fn, dsize, exc, match):
    M = np.eye(2, 3) if fn == "warp_affine" else np.eye(3)
    with pytest.raises(exc, match=rf"^{fn}: {match}"):
        getattr(fi, fn)(IMG, M, dsize)
    with pytest.raises(exc, match=rf"^{fn}_backward: {match}"):
        getattr(fi, fn + "_backward")(IMG, IMG, M, dsize)


def test_dsize_takes_numpy_ints_and_arrays():
    out = fi.warp_affine(IMG, np.eye(2, 3), np.array([3, 5]))
    assert out.shape == (1, 1, 3, 5)
    assert fi.warp_affine(IMG, np.eye(2, 3), (np.int32(2), np.uint8(3))).shape == (1, 1, 2, 3)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(mode="linear"), ValueError, "mode must be one of 'bilinear'"),
    (dict(mode=None), ValueError, "mode must be one of"),
    (dict(padding_mode="replicate"), ValueError, "padding_mode must be one of 'zeros'"),
    (dict(padding_mode=np.zeros(2)), ValueError, r"padding_mode must be one of .*got ndarray"),
    (dict(padding_mode="constant", fill="x"), TypeError, "fill must be a real number"),
    (dict(padding_mode="constant", fill=[1.0, 2.0]), ValueError, r"fill must be a scalar or have shape \(C,\)"),
    (dict(padding_mode="constant", fill=np.nan), ValueError, "fill must be finite"),
    (dict(fill=1.0), ValueError, "fill applies to padding_mode='constant' only"),
])
@pytest.mark.parametrize("fn", ["warp_affine", "warp_perspective", "rotate",
                                "warp_affine_backward", "warp_perspective_backward"])
def test_sampling_option_errors_name_the_warp(fn, kw, exc, match):
    """mode, padding_mode and fill errors come under the warp's own name, not grid_sample's."""
    M = np.eye(3) if "perspective" in fn else np.eye(2, 3)
    calls = {"rotate": lambda: fi.rotate(IMG, 10.0, **kw)}
    call = calls.get(fn) or (
        (lambda: getattr(fi, fn)(IMG, IMG, M, (4, 4), **kw)) if fn.endswith("_backward")
        else (lambda: getattr(fi, fn)(IMG, M, (4, 4), **kw)))
    with pytest.raises(exc, match=rf"^{fn}: {match}"):
        call()


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.int8, np.float16,
                                   np.float32])
@pytest.mark.parametrize("fn, M", [("warp_affine", [[1, 0, 1], [0, 1, 0]]),
                                   ("warp_perspective", [[1, 0, 1], [0, 1, 0], [0, 0, 1]])])
def test_integer_and_float_matrices_are_used_as_float64(rng, fn, M, dtype):
    img = rng.standard_normal((2, 3, 5, 6))
    want = getattr(fi, fn)(img, np.array(M, np.float64), (5, 6))
    got = getattr(fi, fn)(img, np.array(M, dtype), (5, 6))
    np.testing.assert_array_equal(got, want)
    _, gm = getattr(fi, fn + "_backward")(np.ones_like(img), img, np.array(M, dtype), (5, 6))
    assert gm.shape == np.shape(M) and gm.dtype == img.dtype


@pytest.mark.parametrize("M", [
    np.eye(2, 3, dtype=bool), np.eye(2, 3, dtype=np.complex128), np.eye(2, 3, dtype=np.complex64),
    np.eye(2, 3).astype(object), np.array([["1", "0", "0"], ["0", "1", "0"]]),
    [[1, 0, 0], [0, 1, 1j]], [[True, False, False], [False, True, False]],
])
@pytest.mark.parametrize("fn", ["warp_affine", "warp_affine_backward"])
def test_non_real_matrices_are_refused(fn, M):
    args = (IMG, IMG) if fn.endswith("_backward") else (IMG,)
    with pytest.raises(TypeError, match=rf"^{fn}: M must hold real numbers \(an integer or "
                                        rf"float dtype, used as float64\); got dtype"):
        getattr(fi, fn)(*args, M, (4, 4))


@pytest.mark.parametrize("M, exc, match", [
    (None, TypeError, "M must be an array; got None"),
    ([[1, 0, 0], [0, 1]], ValueError, r"M must have shape \(2, 3\) or \(N, 2, 3\)"),
])
def test_missing_or_ragged_matrices_are_refused(M, exc, match):
    with pytest.raises(exc, match=rf"^warp_affine: {match}"):
        fi.warp_affine(IMG, M, (4, 4))


def test_angle_scale_and_center_take_one_element_arrays_of_any_framework():
    """torchvision's idiom ``rotate(img, torch.empty(1).uniform_(-30, 30))`` and 0-d arrays."""
    torch = pytest.importorskip("torch")
    want = fi.rotation_matrix(30.0, (4.5, 3.5), 1.25)
    for angle in (np.array(30.0), np.array([30.0]), torch.tensor(30.0), torch.tensor([30.0]),
                  torch.tensor(30.0, requires_grad=True), np.float32(30)):
        np.testing.assert_allclose(fi.rotation_matrix(angle, (4.5, 3.5), 1.25), want, rtol=1e-6)
    for center in (np.array([4.5, 3.5]), torch.tensor([4.5, 3.5]), [np.array(4.5), 3.5]):
        np.testing.assert_allclose(fi.rotation_matrix(30.0, center, np.array(1.25)), want)
    for bad in (torch.tensor(True), np.array(1 + 2j), np.array("30"), np.array([30.0, 1.0]),
                np.array(None)):
        with pytest.raises(TypeError, match="angle must be a real number"):
            fi.rotation_matrix(bad, (4.5, 3.5))


def test_sizes_take_integer_arrays_of_any_framework():
    torch = pytest.importorskip("torch")
    img = np.random.default_rng(0).random((1, 2, 5, 6))
    M = np.array([[1.0, 0.1, 0.5], [0.0, 0.9, -0.5]])
    want = fi.warp_affine(img, M, (6, 7))
    for dsize in ((np.int64(6), np.uint8(7)), (np.array(6), np.array(7)), torch.tensor([6, 7]),
                  (torch.tensor(6), 7), np.array([6, 7]), [6, 7]):
        assert np.array_equal(fi.warp_affine(img, M, dsize), want)
    theta = np.array([[[1.0, 0.2, 0.0], [0.0, 1.0, 0.1]]])
    assert np.array_equal(fi.affine_grid(theta, torch.tensor([1, 2, 6, 7])),
                          fi.affine_grid(theta, (1, 2, 6, 7)))
    for bad in ((6.0, 7), (True, 7), torch.tensor([True, False]), (torch.tensor(6.0), 7), "67"):
        with pytest.raises(TypeError, match="dsize must be a sequence"):
            fi.warp_affine(img, M, bad)


# --------------------------------------------------------------------------- tiny and singular matrices

@pytest.mark.parametrize("s", [1e-170, 1e-200, 1e-300])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiny_invertible_affine_matrices_warp_by_their_exact_inverse(s, dtype):
    """det underflows to 0 in float64, but the inverse exists: the warp samples by it."""
    img = np.random.default_rng(1).random((2, 3, 6, 7)).astype(dtype)
    for M in (s * np.eye(2, 3), np.array([[s, 0.0, 3 * s], [-2 * s, s, 0.0]])):
        A = M[:, :2] / s                                 # exact: entries are small integers
        inv = np.zeros((2, 3))
        inv[:, :2] = np.linalg.inv(A) / s
        inv[:, 2] = -inv[:, :2] @ M[:, 2]
        for padding_mode in ("zeros", "border", "reflection"):
            got = fi.warp_affine(img, M, (5, 4), padding_mode=padding_mode)
            want = fi.warp_affine(img, inv, (5, 4), padding_mode=padding_mode, inverse_map=True)
            assert np.isfinite(got).all()
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        # destination pixel (0, 0) is source pixel (0, 0): the only one inside the image
        got = fi.warp_affine(img, s * np.eye(2, 3), (5, 4))
        np.testing.assert_allclose(got[..., 0, 0], img[..., 0, 0], rtol=1e-6)
        assert not got.reshape(2, 3, -1)[..., 1:].any()


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("s", [1e-120, 1e-200, 1e-310, 1e120, 1e300, 2.0**-40])
def test_homographies_of_any_scale_are_the_same_warp(s):
    """A homography and its multiples are one map, however small or large the factor."""
    rng = np.random.default_rng(2)
    img = smooth_image(rng, 1, 2, 9, 8)
    Hm = random_homography(rng, 9, 8)
    tol = 1e-9 if s < 1e-300 else 1e-12        # subnormal entries: Hm * s holds fewer digits
    want = fi.warp_perspective(img, Hm, (7, 6))
    np.testing.assert_allclose(fi.warp_perspective(img, Hm * s, (7, 6)), want, rtol=tol, atol=tol)
    go = rng.standard_normal(want.shape)
    gi, gm = fi.warp_perspective_backward(go, img, Hm, (7, 6))
    gi_s, gm_s = fi.warp_perspective_backward(go, img, Hm * s, (7, 6))
    np.testing.assert_allclose(gi_s, gi, rtol=tol, atol=tol)
    if 1e-300 < s < 1e300:    # d/dM of a map of M / s: the gradient scales by 1 / s
        np.testing.assert_allclose(gm_s * s, gm, rtol=1e-9, atol=1e-9 * np.abs(gm).max())


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("Hm", [
    [[1, 0, 0], [0, 1, 0], [1e200, 1e200, 1]],          # entries of very different sizes
    [[1, 0, 0], [0, 1, 0], [1e300, -1e300, 1]],
    [[1, 0, 2], [0, 1, 0], [0, 0, 1e-300]],
    [[1.7e308, 0, 0], [0, 1.7e308, 0], [0, 0, 1.7e308]],  # near float64's top
    [[1e-200, 0, 0], [0, 1e-200, 0], [1, 1, 1]],
])
def test_homographies_with_a_float64_inverse_warp_by_it(Hm):
    """A homography whose power-of-two-scaled form inverts badly (its inverse under- or
    overflows) but which float64 inverts as given is not called singular: it warps by that
    inverse, with no overflow warning."""
    Hm = np.array(Hm, dtype=np.float64)
    img = np.random.default_rng(4).random((1, 2, 6, 7)).astype(np.float32)
    inv = np.linalg.inv(Hm)
    assert np.isfinite(inv).all()
    np.testing.assert_array_equal(
        fi.warp_perspective(img, Hm, (5, 4)),
        fi.warp_perspective(img, inv, (5, 4), inverse_map=True))


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("diag", [(1e200, 1e-200), (1e154, 1e-154), (4.0, 1e-308),
                                  (-1e-300, 1e300)])
def test_affine_matrices_of_very_different_scales_invert_as_opencv(diag):
    """An affine matrix whose 2 x 2 part scaled by its largest entry loses the smaller one
    (the determinant underflows to 0, or its reciprocal overflows) but which
    cv2.invertAffineTransform inverts as given warps by that inverse (it was refused as
    singular, "determinant 1.0")."""
    M = np.array([[diag[0], 0.0, 1.0], [0.0, diag[1], 0.0]])
    inv = cv2.invertAffineTransform(M)
    assert np.isfinite(inv).all()
    img = np.random.default_rng(5).random((1, 2, 6, 7))
    for mode in ("bilinear", "nearest"):
        np.testing.assert_array_equal(
            fi.warp_affine(img, M, (5, 4), mode=mode),
            fi.warp_affine(img, inv, (5, 4), mode=mode, inverse_map=True))


def test_tiny_affine_matrices_match_opencv_where_it_inverts_them():
    img = np.random.default_rng(3).random((8, 8)).astype(np.float32)
    M = 1e-150 * np.eye(2, 3)                    # det 1e-300: cv2 inverts it
    ref = cv2.warpAffine(img, M, (5, 4), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    got = fi.warp_affine(img, M, (4, 5), layout="HW")
    np.testing.assert_allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("scale", [1e-200, -1e-250, 1e-300])
def test_rotate_by_a_tiny_scale_keeps_only_the_fixed_point(scale):
    img = np.random.default_rng(4).random((1, 2, 8, 8))
    got = fi.rotate(img, 10, center=(0, 0), scale=scale)
    np.testing.assert_array_equal(got[..., 0, 0], img[..., 0, 0])
    assert not got.reshape(1, 2, -1)[..., 1:].any()
    assert np.isfinite(fi.rotate(img, 10, scale=scale)).all()


@pytest.mark.parametrize("scale, shown", [(0, "0"), (0.0, "0.0"), (-0.0, "-0.0"),
                                          (np.float32(0), "0.0")])
def test_rotate_by_scale_zero_names_scale(scale, shown):
    with pytest.raises(ValueError, match=rf"^rotate: scale must be non-zero; got {shown}\.$"):
        fi.rotate(IMG, 10, scale=scale)
    # rotation_matrix itself takes scale 0, as cv2.getRotationMatrix2D does
    np.testing.assert_array_equal(fi.rotation_matrix(10, (1.0, 2.0), scale),
                                  [[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]])


def test_rotate_by_a_scale_whose_inverse_overflows_names_scale():
    with pytest.raises(ValueError, match=r"^rotate: scale must be non-zero and large enough "
                                         r"for the rotation's inverse to be finite .*; got 1e-320"):
        fi.rotate(IMG, 10, scale=1e-320)


def test_singular_matrix_errors_show_the_matrix_given():
    img2 = np.zeros((2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"^warp_affine: M must be invertible \(OpenCV convention "
                                         r"maps source to destination\); got determinant 0\.0\.$"):
        fi.warp_affine(img2, np.zeros((2, 3)), (4, 4))
    with pytest.raises(ValueError, match=r"^warp_perspective_backward: M must be invertible .*; "
                                         r"got M\[1\] with determinant 0\.0\.$"):
        fi.warp_perspective_backward(img2, img2, np.stack([np.eye(3), np.ones((3, 3))]), (4, 4))
    with pytest.raises(ValueError, match=r"^warp_affine: M must have an inverse that float64 "
                                         r"can hold"):
        fi.warp_affine(img2, 1e-320 * np.eye(2, 3), (4, 4))
    # inverse_map=True takes M as the destination -> source map: a singular one is fine
    assert not fi.warp_affine(img2, np.zeros((2, 3)), (4, 4), inverse_map=True).any()


def test_singular_matrices_are_refused_but_nearly_singular_ones_are_not():
    M = np.array([[1.0, 2.0, 0.0], [1.0, 2.0 + 2**-50, 0.0]])
    assert np.isfinite(fi.warp_affine(IMG, M, (4, 4))).all()
    with pytest.raises(ValueError, match="M must be invertible"):
        fi.warp_affine(IMG, [[1.0, 2.0, 0.0], [1.0, 2.0, 5.0]], (4, 4))


# --------------------------------------------------------------------------- argument names

E = np.zeros((1, 3, 0, 5))


@pytest.mark.parametrize("fn, call", [
    ("warp_affine", lambda x, lay: fi.warp_affine(x, np.eye(2, 3), (4, 4), layout=lay)),
    ("warp_perspective", lambda x, lay: fi.warp_perspective(x, np.eye(3), (4, 4), layout=lay)),
    ("rotate", lambda x, lay: fi.rotate(x, 10.0, layout=lay)),
    ("warp_affine_backward", lambda x, lay: fi.warp_affine_backward(
        np.zeros((1, 3, 4, 4)), x, np.eye(2, 3), (4, 4), layout=lay)),
    ("warp_perspective_backward", lambda x, lay: fi.warp_perspective_backward(
        np.zeros((1, 3, 4, 4)), x, np.eye(3), (4, 4), layout=lay)),
])
@pytest.mark.parametrize("shape, layout", [((1, 3, 0, 5), None), ((1, 3, 5, 0), "NCHW"),
                                           ((0, 5, 3), "HWC"), ((1, 4, 0, 3), "NHWC")])
def test_empty_image_errors_name_img(fn, call, shape, layout):
    with pytest.raises(ValueError, match=rf"^{fn}: img must have H >= 1 and W >= 1; got"):
        call(np.zeros(shape), layout)


@pytest.mark.parametrize("fn", ["warp_affine_backward", "warp_perspective_backward"])
def test_grad_output_dtype_errors_name_the_backward_and_its_arguments(fn):
    M = np.eye(3) if "perspective" in fn else np.eye(2, 3)
    img = np.zeros((1, 1, 4, 4))
    with pytest.raises(TypeError, match=rf"^{fn}: grad_output must have the same dtype as img "
                                        rf"\(float64\); got float32"):
        getattr(fi, fn)(np.zeros((1, 1, 4, 4), np.float32), img, M, (4, 4))
    with pytest.raises(TypeError, match=rf"^{fn}: grad_output must have dtype float32 or "
                                        rf"float64; got int64"):
        getattr(fi, fn)(np.zeros((1, 1, 4, 4), np.int64), img, M, (4, 4))


# --------------------------------------------------------------------------- options that do not apply

WARPS = ["warp_affine", "warp_perspective", "warp_affine_backward", "warp_perspective_backward"]


def _warp_call(fn, **kw):
    M = np.eye(3) if "perspective" in fn else np.eye(2, 3)
    args = (IMG, IMG) if fn.endswith("_backward") else (IMG,)
    return getattr(fi, fn)(*args, M, (4, 4), **kw)


@pytest.mark.parametrize("fn", WARPS)
@pytest.mark.parametrize("kw, message", [
    (dict(match="torch", inverse_map=True), "inverse_map applies to match='opencv' only; got "
                                            "inverse_map=True with match='torch'"),
    (dict(align_corners=True), "align_corners applies to match='torch' only; got "
                               "align_corners=True with match='opencv'"),
    (dict(match="opencv", align_corners=np.bool_(True)), "align_corners applies to "
                                                         "match='torch' only; got "
                                                         "align_corners=True with match='opencv'"),
])
def test_options_of_the_other_convention_are_refused(fn, kw, message):
    with pytest.raises(ValueError, match=rf"^{fn}: {message}\.$"):
        _warp_call(fn, **kw)


@pytest.mark.parametrize("fn", WARPS)
def test_default_options_fit_both_conventions(fn):
    for kw in (dict(match="torch", inverse_map=False), dict(match="torch", align_corners=True),
               dict(match="opencv", align_corners=False), dict(match="opencv", inverse_map=True)):
        _warp_call(fn, **kw)


@pytest.mark.parametrize("match", ["opencv", "torch"])
def test_empty_output_with_a_huge_axis_costs_nothing(match):
    """dsize with one axis 0 and the other up to 2**31 - 1: an empty result at once,
    forward and backward (no per-axis coordinates of the other axis are built)."""
    import tracemalloc
    img = np.random.default_rng(0).random((1, 2, 4, 4)).astype(np.float32)
    tracemalloc.start()
    try:
        for dsize in ((2**31 - 1, 0), (0, 2**31 - 1)):
            for warp, back, M in ((fi.warp_affine, fi.warp_affine_backward, np.eye(2, 3)),
                                  (fi.warp_perspective, fi.warp_perspective_backward,
                                   np.eye(3))):
                out = warp(img, M, dsize, match=match)
                assert out.size == 0 and out.shape[:2] == (1, 2)
                gi, gm = back(out, img, M, dsize, match=match)
                assert (gi == 0).all() and (gm == 0).all() and gm.shape == M.shape
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_matrix_gradient_beyond_float32_is_inf_without_a_warning():
    """M = 1e-170 I in float32: the warp is defined (its inverse is huge) and so is the
    gradient, about 1e170, which float32 holds as inf: no RuntimeWarning."""
    import warnings
    img = np.random.default_rng(1).random((1, 1, 5, 5)).astype(np.float32)
    M = np.eye(2, 3) * 1e-170
    out = fi.warp_affine(img, M, (5, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gi, gm = fi.warp_affine_backward(np.ones_like(out), img, M, (5, 5))
    assert gm.dtype == np.float32 and not np.isnan(gm).any()


def test_rotate_reads_lists_as_every_op_does():
    img = np.random.default_rng(5).random((1, 2, 5, 6))
    np.testing.assert_array_equal(fi.rotate(img.tolist(), 17.0), fi.rotate(img, 17.0))
    np.testing.assert_array_equal(fi.rotate(img[0, 0].tolist(), 17.0), fi.rotate(img[0, 0], 17.0))
    with pytest.raises(ValueError, match=r"^rotate: img must be a rectangular array; got a "
                                         r"list NumPy cannot read as one"):
        fi.rotate([[1.0, 2.0], [3.0]], 10.0)


@pytest.mark.parametrize("op", ["warp_affine", "warp_perspective"])
def test_an_output_beyond_memory_is_a_memory_error_naming_it(op):
    # (NumPy's allocation error, or the operating system's kill, came first)
    x = np.zeros((1, 1, 8, 8))
    m = np.eye(2, 3) if op == "warp_affine" else np.eye(3)
    with pytest.raises(MemoryError, match=rf"^{op}: an output of \(2147483647, 1048576\) per "
                                          r"image would need"):
        getattr(fi, op)(x, m, (2**31 - 1, 2**20))


@pytest.mark.parametrize("match", ["opencv", "torch"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_rows_of_any_range_equal_the_whole_grid(match, align_corners):
    # each block computes only its own base coordinates, with the whole grid's values
    from fastinterp.warp import _Map
    m = np.array([[0.9, 0.2, 0.3], [-0.1, 1.1, 0.2], [0.01, -0.02, 1.0]])
    wmap = _Map("warp_perspective", m, 3, 1, 9, 11, 13, 17, match, False, align_corners)
    whole = wmap.grid_rows(0, 0, 13, np.float64)
    for r0, r1, c0, c1 in ((0, 13, 0, 17), (3, 7, 5, 16), (12, 13, 0, 1), (0, 1, 16, 17)):
        np.testing.assert_array_equal(wmap.grid_rows(0, r0, r1, np.float64, c0, c1),
                                      whole[r0:r1, c0:c1])


@pytest.mark.parametrize("op", ["warp_affine_backward", "warp_perspective_backward"])
def test_cuda_warp_backward_of_a_non_finite_gradient(cuda, op):
    """The CUDA deterministic backward refuses a NaN grad_output under the warp's own name
    (it named grid_sample_backward), and deterministic=False, which a warp did not take,
    computes it as the CPU does."""
    x = np.ones((1, 1, 3, 3))
    go = x.copy()
    go[0, 0, 0, 0] = np.nan
    M = np.eye(2, 3) if op == "warp_affine_backward" else np.eye(3)
    call = getattr(fi, op)
    with pytest.raises(ValueError, match=rf"^{op}: grad_output must be finite with "
                                         r"deterministic=True"):
        call(cuda.to_device(go), cuda.to_device(x), M, (3, 3))
    gi, gm = call(cuda.to_device(go), cuda.to_device(x), M, (3, 3), deterministic=False)
    want_gi, want_gm = call(go, x, M, (3, 3))
    np.testing.assert_array_equal(gi.copy_to_host(), want_gi)
    np.testing.assert_array_equal(np.isnan(gm), np.isnan(want_gm))


def test_cuda_rotate_takes_a_one_element_device_angle(cuda):
    img = np.random.default_rng(4).random((1, 1, 5, 5))
    got = fi.rotate(cuda.to_device(img), cuda.to_device(np.array([30.0])))
    np.testing.assert_allclose(got.copy_to_host(), fi.rotate(img, 30.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(inverse_map=True), dict(match="torch")])
@pytest.mark.parametrize("e", [-1074, -1070, -900, 900, 1000, 1016])
def test_a_homography_scaled_to_the_ends_of_float64_maps_as_it_does(kw, e):
    """A homography and its multiples are one map: used as given (inverse_map=True, or
    torch's convention) its product with the normalisation over- or underflowed near
    float64's limits (5e-324 * I warped every pixel to img[0, 0] / 4). It is divided by
    a power of two near its largest entry first, as the default path already did; its
    gradient is the given matrix's."""
    img = np.random.default_rng(0).random((1, 2, 6, 8))
    Mi = np.array([[100.0, 2, 3], [1, 100, 2], [2, 1, 100]])    # exact at every scale
    M = Mi * 2.0 ** e
    want = fi.warp_perspective(img, Mi, (5, 7), **kw)
    np.testing.assert_array_equal(fi.warp_perspective(img, M, (5, 7), **kw), want)
    np.testing.assert_array_equal(fi.warp_perspective(img, 2.0 ** e * np.eye(3), (5, 7), **kw),
                                  fi.warp_perspective(img, np.eye(3), (5, 7), **kw))
    if abs(e) < 1000:
        g = np.random.default_rng(1).random(want.shape)
        gi, gm = fi.warp_perspective_backward(g, img, M, (5, 7), **kw)
        want_i, want_m = fi.warp_perspective_backward(g, img, Mi, (5, 7), **kw)
        np.testing.assert_array_equal(gi, want_i)
        np.testing.assert_array_equal(gm * 2.0 ** e, want_m)


@pytest.mark.parametrize("kw", [dict(angle=180, center=(1e308, 0.0)),
                                dict(angle=30, scale=1e308)])
def test_rotate_whose_matrix_overflows_names_center_and_scale(kw):
    """A huge centre's translation overflowed: the error named scale (1.0), or an M that
    rotate does not take."""
    with pytest.raises(ValueError, match=r"^rotate: center and scale must give a rotation "
                                         r"matrix that float64 can hold"):
        fi.rotate(np.ones((1, 1, 5, 7)), **kw)


@pytest.mark.cudasim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, match, inverse", [(2, "opencv", False), (3, "opencv", True),
                                                  (2, "torch", False), (3, "torch", False)])
def test_cuda_warp_grid_is_the_hosts(cuda, dtype, rows, match, inverse):
    """The CUDA warps built their whole (N, H_out, W_out, 2) grid on the host and copied it
    to the device; it is computed on the device now, from the maps and base coordinates,
    with the host's operations (points at infinity and far outside included): bit for bit
    under the simulator, within the multiply-adds NVVM fuses on a device."""
    from fastinterp import _dispatch
    rng = np.random.default_rng(17)
    M = np.eye(3)[:rows] + 0.3 * rng.standard_normal((3, rows, 3))
    if rows == 3:
        M[1, 2] = [0.0, 0.0, 0.0]             # w == 0 on the whole image: at infinity
        M[2, 2, :2] = [0.4, -0.3]             # w crosses 0 inside the image
    M[0, 0, 2] = 1e25                          # far outside
    wmap = warp._Map("warp", M, rows, 3, 6, 5, 4, 7, match, inverse, False)
    p = _dispatch.begin("warp", img=cuda.to_device(np.zeros((3, 1, 6, 5), dtype)))
    with np.errstate(divide="ignore", invalid="ignore"):    # the simulator's NumPy scalars
        got = warp._grid_for(p, wmap, 3, np.dtype(dtype)).copy_to_host()
    want = warp._full_grid(wmap, 3, np.dtype(dtype))
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        np.testing.assert_array_equal(got, want)
        return
    # a real device: u/w near w == 0 may land on either side of the far-outside cut
    close = np.isclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=0)
    assert close.mean() > 0.95, np.argwhere(~close)[:5]


@pytest.mark.parametrize("call", [
    lambda go, x, M: fi.warp_affine_backward(go, x, M[:2], (go.shape[2], go.shape[3]),
                                             match="torch")[1],
    lambda go, x, M: fi.warp_perspective_backward(go, x, M, (go.shape[2], go.shape[3]))[1],
])
@pytest.mark.parametrize("out_hw", [(10001, 2), (1, 20011)])
def test_matrix_gradient_does_not_depend_on_the_blas_thread_count(call, out_hw):
    """The matrix gradient's moments were matrix products (NumPy -> OpenBLAS), which split
    a dot product of over 10,000 terms across BLAS threads: an output of 10,001 rows gave
    other bits with 1 and 2 BLAS threads (3e-12 apart). Fixed-order sums now."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 64, 64))
    M = np.array([[0.9, 0.1, 0.5], [-0.1, 0.9, 0.2], [1e-4, 2e-4, 1.0]])
    go = rng.standard_normal((1, 1) + out_hw)
    got = []
    for n in (1, 2):
        with threadpoolctl.threadpool_limits(n, user_api="blas"):
            got.append(call(go, x, M))
    np.testing.assert_array_equal(got[0], got[1])
