"""One layout option for the image ops: batched NCHW/NHWC and single images HW/HWC/CHW.

Every layout must give the batched NCHW result with its axes moved, for
resize, adaptive_avg_pool2d, grid_sample and their backwards; 3-D arrays
need an explicit layout; channels_last is a deprecated alias of layout.
"""
import re
import warnings

import numpy as np
import pytest

import fastinterp as fi

# layout -> (from NCHW with N = 1 to the layout, and back)
TO = {"NCHW": lambda a: a, "NHWC": lambda a: a.transpose(0, 2, 3, 1),
      "CHW": lambda a: a[0], "HWC": lambda a: a[0].transpose(1, 2, 0), "HW": lambda a: a[0, 0]}


def _layouts(c):
    return [lay for lay in TO if lay != "HW" or c == 1]


def _as(layout, a):
    return np.ascontiguousarray(TO[layout](a))


@pytest.mark.parametrize("c", [1, 3, 7])
@pytest.mark.parametrize("dtype", [np.float64, np.uint8])
@pytest.mark.parametrize("call", [
    lambda x, lay: fi.resize(x, size=(5, 9), mode="bicubic", layout=lay),
    lambda x, lay: fi.resize(x, size=(5, 9), mode="area", layout=lay, match="opencv"),
    lambda x, lay: fi.resize(x, size=(13, 4), mode="lanczos", layout=lay, match="pil"),
    lambda x, lay: fi.adaptive_avg_pool2d(x, (3, 4), layout=lay),
])
def test_forward_layouts_agree(c, dtype, call):
    rng = np.random.default_rng(c)
    x = (rng.integers(0, 256, (1, c, 11, 8)) if dtype == np.uint8
         else rng.standard_normal((1, c, 11, 8))).astype(dtype)
    want = call(x, "NCHW")
    for lay in _layouts(c):
        got = call(_as(lay, x), lay)
        if dtype == np.uint8:
            np.testing.assert_array_equal(got, TO[lay](want), err_msg=lay)
        else:   # the channels-last kernels sum in another order where the compiler contracts
            np.testing.assert_allclose(got, TO[lay](want), rtol=1e-13, atol=1e-15, err_msg=lay)


def _stored_nhwc(x):
    """``x``'s values in an NCHW-shaped view of NHWC memory (torch's channels_last)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("op", ["pool", "resize", "backward"])
def test_channels_last_storage_takes_the_nchw_pass_order(seed, dtype, c, op):
    """An NCHW-shaped input stored channels-last runs the NHWC kernel (no copy) with the
    NCHW call's pass order (the order was chosen per layout, and such an input differed
    from the contiguous call, e.g. pooled (2, 11) -> (1, 1)): up to 4 channels (one
    interleaved row, the NCHW loops) the same bits as the contiguous call; beyond, the
    channel loop may fuse multiply-adds differently (last-bit differences on some builds)."""
    rng = np.random.default_rng(seed)
    h, w, oh, ow = [(2, 11, 1, 1), (2, 22, 1, 2), (16, 21, 3, 2)][seed] if seed < 3 else \
        (int(v) for v in rng.integers(1, 40, 4))
    if op == "pool":
        x = rng.standard_normal((2, c, h, w)).astype(dtype)
        call = lambda a: fi.adaptive_avg_pool2d(a, (oh, ow))   # noqa: E731
    elif op == "resize":
        x = rng.standard_normal((2, c, h, w)).astype(dtype)
        mode = ["bilinear", "bicubic", "area", "lanczos"][seed % 4]
        call = lambda a: fi.resize(a, (oh, ow), mode=mode, antialias=mode != "area")  # noqa: E731
    else:
        x = rng.standard_normal((2, c, oh, ow)).astype(dtype)
        mode = ["bilinear", "bicubic", "area", "nearest"][seed % 4]
        call = lambda g: fi.resize_backward(g, (2, c, h, w), mode=mode)    # noqa: E731
    want, got = call(x), call(_stored_nhwc(x))
    if c <= 4:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=8 * np.finfo(dtype).eps,
                                   atol=8 * np.finfo(dtype).eps * np.abs(want).max())


@pytest.mark.parametrize("c", [1, 3, 5])
def test_default_layout_reads_2d_as_hw_and_4d_as_nchw(c):
    x = np.random.default_rng(0).standard_normal((1, c, 6, 7))
    np.testing.assert_array_equal(fi.resize(x, size=(3, 3)),
                                  fi.resize(x, size=(3, 3), layout="NCHW"))
    if c == 1:
        np.testing.assert_array_equal(fi.resize(x[0, 0], size=(3, 3)),
                                      fi.resize(x, size=(3, 3))[0, 0])


@pytest.mark.parametrize("call", [lambda x: fi.resize(x, size=2),
                                  lambda x: fi.resize(x.astype(np.float32), size=(2, 2)),
                                  lambda x: fi.adaptive_avg_pool2d(x, 2),
                                  lambda x: fi.grid_sample(x, np.zeros((2, 2, 2)))])
def test_3d_input_needs_a_layout(call):
    img = np.zeros((8, 8, 3), np.uint8)       # an (H, W, 3) photo, never read as CHW
    with pytest.raises(ValueError, match="needs layout='CHW'.*or layout='HWC'"):
        call(img)


@pytest.mark.parametrize("layout, shape", [("HWC", (4, 4)), ("NCHW", (1, 4, 4)), ("HW", (2, 4, 4)),
                                           ("CHW", (1, 1, 4, 4))])
def test_explicit_layout_must_match_ndim(layout, shape):
    with pytest.raises(ValueError, match=f"for layout='{layout}'"):
        fi.resize(np.zeros(shape), size=2, layout=layout)


def test_unknown_layout():
    with pytest.raises(ValueError, match="layout must be one of"):
        fi.grid_sample(np.zeros((1, 1, 4, 4)), np.zeros((1, 2, 2, 2)), layout="nhwc")


# --------------------------------------------------------------------------- grid_sample

def _grid(rng, n, ho, wo):
    return rng.uniform(-1.1, 1.1, (n, ho, wo, 2))


@pytest.mark.parametrize("c", [1, 3, 6])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_layouts_agree(c, mode):
    rng = np.random.default_rng(c)
    x = rng.standard_normal((1, c, 9, 8))
    g = _grid(rng, 1, 5, 6)
    want = fi.grid_sample(x, g, mode=mode, padding_mode="border")
    go = rng.standard_normal(want.shape)
    gi, gg = fi.grid_sample_backward(go, x, g, mode=mode, padding_mode="border")
    for lay in _layouts(c):
        grid = g if lay.startswith("N") else g[0]
        got = fi.grid_sample(_as(lay, x), grid, mode=mode, padding_mode="border", layout=lay)
        np.testing.assert_allclose(got, TO[lay](want), rtol=1e-13, atol=1e-13, err_msg=lay)
        gi_l, gg_l = fi.grid_sample_backward(_as(lay, go), _as(lay, x), grid, mode=mode,
                                             padding_mode="border", layout=lay)
        np.testing.assert_allclose(gi_l, TO[lay](gi), rtol=1e-12, atol=1e-12, err_msg=lay)
        np.testing.assert_allclose(gg_l, gg if lay.startswith("N") else gg[0], rtol=1e-12,
                                   atol=1e-12, err_msg=lay)


def test_grid_sample_single_image_needs_a_3d_grid():
    with pytest.raises(ValueError, match=r"grid must have shape \(H_out, W_out, 2\) for a single"):
        fi.grid_sample(np.zeros((4, 4, 3)), np.zeros((1, 2, 2, 2)), layout="HWC")


@pytest.mark.parametrize("lay", ["NHWC", "HWC", "NCHW", "HW"])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
def test_grid_sample_uint8_is_float32_rounded(lay, mode):
    rng = np.random.default_rng(1)
    c = 1 if lay == "HW" else 3
    x = rng.integers(0, 256, (1, c, 12, 10)).astype(np.uint8)
    g = _grid(rng, 1, 7, 9).astype(np.float32)
    grid = g if lay.startswith("N") else g[0]
    got = fi.grid_sample(_as(lay, x), grid, mode=mode, layout=lay)
    f = fi.grid_sample(x.astype(np.float32), g, mode=mode)
    want = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, TO[lay](want))


def test_grid_sample_uint8_errors_leave_out_untouched():
    x = np.zeros((1, 1, 4, 4), np.uint8)
    with pytest.raises(TypeError, match="grid must have dtype float32 or float64"):
        fi.grid_sample(x, np.zeros((1, 2, 2, 2), np.int32))
    out = np.full((1, 1, 2, 2), 7, np.float32)
    with pytest.raises(TypeError, match="out must have dtype uint8"):
        fi.grid_sample(x, np.zeros((1, 2, 2, 2), np.float32), out=out)
    assert (out == 7).all()
    with pytest.raises(TypeError, match="input must have dtype float32 or float64 "
                                        r"\(or float16, bfloat16\); got uint8"):
        fi.grid_sample_backward(np.zeros((1, 1, 2, 2)), x, np.zeros((1, 2, 2, 2)))


_U8_NAN_CASES = [(m, p, False) for m in ("bilinear", "bicubic", "nearest")
                 for p in ("zeros", "border", "reflection", "constant", "wrap")] + \
                [(m, p, True) for m in ("bilinear", "nearest") for p in ("zeros", "border",
                                                                         "reflection")]


@pytest.mark.parametrize("mode, padding_mode, volume", _U8_NAN_CASES)
def test_grid_sample_uint8_nan_points_are_zero(mode, padding_mode, volume):
    """A sample the float path makes NaN (a NaN or infinite grid point) is 0 in uint8,
    with no warning from casting NaN (undefined in C) and out= written once."""
    rng = np.random.default_rng(5)
    k = 3 if volume else 2
    x = rng.integers(0, 256, (2, 3) + (4,) * k, dtype=np.uint8)
    g = rng.uniform(-1.2, 1.2, (2,) + (1,) * (k - 1) + (6, k)).astype(np.float32)
    flat = g.reshape(2, 6, k)
    flat[0, 0, 0] = np.nan
    flat[0, 1, -1] = np.inf
    flat[1, 2, 0] = -np.inf
    flat[1, 3] = np.nan
    kw = dict(mode=mode, padding_mode=padding_mode)
    if padding_mode == "constant":
        kw["fill"] = 77.0
    ref = fi.grid_sample(x.astype(np.float32), g, **kw)
    want = np.clip(np.rint(np.nan_to_num(ref, nan=0.0)), 0, 255).astype(np.uint8)
    out = np.full(want.shape, 9, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fi.grid_sample(x, g, out=out, **kw)
    assert got is out
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("call, message", [
    (lambda x: fi.grid_sample(x, np.zeros((1, 2, 2, 2), np.float32)),
     "grid_sample: input must have dtype float32 or float64 (or uint8, float16, bfloat16)"),
    (lambda x: fi.warp_affine(x[0, 0], np.eye(2, 3), (3, 3)),
     "warp_affine: img must have dtype float32 or float64 (or uint8)"),
    (lambda x: fi.rotate(x[0, 0], 10.0),
     "rotate: img must have dtype float32 or float64 (or uint8)"),
    (lambda x: fi.resize(x, 3), "resize: input must have dtype float32 or float64 "
                                "(or uint8, float16, bfloat16)"),
    (lambda x: fi.resize(x[None], 3, mode="nearest"),
     "resize: input must have dtype float32 or float64 (or float16, bfloat16)"),
    (lambda x: fi.adaptive_avg_pool2d(x, 2), "adaptive_avg_pool2d: input must have dtype float32 "
                                             "or float64 (or uint8, float16, bfloat16)"),
    (lambda x: fi.adaptive_avg_pool3d(x[None], 2),
     "adaptive_avg_pool3d: input must have dtype float32 or float64 "
     "(or float16, bfloat16)"),
    (lambda x: fi.lerp(x, x, 0.5),
     "lerp: a must have dtype float32 or float64 (or float16, bfloat16)"),
    (lambda x: fi.pairwise_sqdist(x[0, 0], x[0, 0]),
     "pairwise_sqdist: x must have dtype float32 or float64;"),
], ids=["grid_sample", "warp_affine", "rotate", "resize", "resize-3d", "pool2d", "pool3d", "lerp",
        "pairwise"])
def test_dtype_errors_name_every_dtype_the_argument_takes(call, message):
    with pytest.raises(TypeError, match="^" + re.escape(message)):
        call(np.zeros((1, 1, 4, 4), np.int16))


def test_channels_last_is_a_deprecated_alias():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 6, 3))
    g = _grid(rng, 2, 4, 4)
    with pytest.warns(FutureWarning, match="channels_last is deprecated"):
        old = fi.grid_sample(x, g, channels_last=True)
    np.testing.assert_array_equal(old, fi.grid_sample(x, g, layout="NHWC"))
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="contradicts"):
        fi.grid_sample(x, g, channels_last=True, layout="NCHW")
    with pytest.warns(FutureWarning):
        fi.grid_sample_backward(np.ones_like(old), x, g, channels_last=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fi.grid_sample(x, g, layout="NHWC")
        fi.grid_sample(x.transpose(0, 3, 1, 2), g, channels_last=False)   # the old default


def test_torch_single_images_round_trip():
    torch = pytest.importorskip("torch")
    x = torch.rand(3, 9, 7, dtype=torch.float64)
    y = fi.resize(x, size=(4, 5), layout="CHW")
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == (3, 4, 5)
    ref = torch.nn.functional.interpolate(x[None], size=(4, 5), mode="bilinear")[0]
    torch.testing.assert_close(y, ref)
    p = fi.adaptive_avg_pool2d(x, (2, 3), layout="CHW")
    torch.testing.assert_close(p, torch.nn.functional.adaptive_avg_pool2d(x, (2, 3)))
    img = torch.randint(0, 256, (9, 7, 3), dtype=torch.uint8)
    z = fi.resize(img, size=(4, 5), layout="HWC", match="opencv")
    assert z.dtype == torch.uint8 and tuple(z.shape) == (4, 5, 3)
