"""fastinterp.torch: the public ops as differentiable torch custom ops.

Values equal the NumPy API's; gradients equal torch's own ops' (grid_sample,
affine_grid, interpolate, adaptive_avg_pool2d, cdist, lerp) and pass
gradcheck in float64 for every mode, padding and align_corners; every op and
its backward pass ``torch.library.opcheck``; ``torch.compile(fullgraph=True)``
traces them; no_grad, partial requires_grad, strided and channels-last
inputs, ``out=`` and double backward behave as documented.
"""
from __future__ import annotations

import doctest
import math
import itertools
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import fastinterp as fi  # noqa: E402
import fastinterp.torch as fit  # noqa: E402
from conftest import TOL_ORACLE, assert_autograd_sees_write  # noqa: E402

OPS = torch.ops.fastinterp
GS_MODES = ("bilinear", "nearest", "bicubic")
GS_PADS = ("zeros", "border", "reflection")
GS_COMBOS = list(itertools.product(GS_MODES, GS_PADS, (False, True)))
# (mode, align_corners, antialias): every resize variant
RESIZE_COMBOS = ([("nearest", None, False), ("nearest-exact", None, False), ("area", None, False)]
                 + list(itertools.product(("bilinear", "bicubic"), (False, True), (False, True))))
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _t(a, requires_grad=False):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(requires_grad)


def off_knots(rng, shape, size_hw, align, dtype=np.float64, spread=1.2):
    """Grid points whose pixel coordinates stay >= 0.01 away from every integer and
    half-integer (knots, folds and clipping borders), so finite differences are valid."""
    g = rng.uniform(-spread, spread, shape)
    for k, n in enumerate((size_hw[1], size_hw[0])):       # x along W, y along H
        pix = (g[..., k] + 1) / 2 * (n - 1) if align else ((g[..., k] + 1) * n - 1) / 2
        frac = (pix * 2) % 1.0
        bad = (frac < 0.02) | (frac > 0.98)
        pix = np.where(bad, pix + 0.1, pix)
        g[..., k] = pix * 2 / (n - 1) - 1 if align else (2 * pix + 1) / n - 1
    return g.astype(dtype)


def rotations(rng, n, dtype=np.float64):
    a = rng.uniform(-0.5, 0.5, n)
    s = rng.uniform(0.8, 1.2, n)
    t = rng.uniform(-0.2, 0.2, (n, 2))
    return np.stack([np.stack([s * np.cos(a), -s * np.sin(a), t[:, 0]], 1),
                     np.stack([s * np.sin(a), s * np.cos(a), t[:, 1]], 1)], 1).astype(dtype)


def assert_grads_close(got, want, dtype, scale=1.0):
    rtol, atol = TOL_ORACLE[np.dtype(dtype)]
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        w = w.detach().numpy()
        mag = max(1.0, float(np.abs(w).max(initial=0)))
        np.testing.assert_allclose(g.detach().numpy(), w, rtol=rtol * scale,
                                   atol=atol * scale * mag)


def grads_of(fn, inputs, seed=1):
    """Output and gradients of sum(fn(*inputs) * G) for a fixed random G."""
    inputs = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    y = fn(*inputs)
    g = torch.from_numpy(_rng(seed).standard_normal(tuple(y.shape))).to(y.dtype)
    (y * g).sum().backward()
    return y.detach(), [x.grad if x.requires_grad else None for x in inputs]


# --------------------------------------------------------------------------- import

def test_import_fastinterp_does_not_import_torch_but_the_frontend_does():
    code = ("import sys, fastinterp, fastinterp.demos.stn; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert sys.modules["torch"] is torch and hasattr(torch.ops.fastinterp, "grid_sample")


def test_docstring_examples():
    result = doctest.testmod(fit, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0


def test_public_names_match_the_numpy_api():
    import inspect

    def parameters(fn):   # names, kinds and defaults (the NumPy API's annotations name arrays)
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
    for name in fit.__all__:
        assert parameters(getattr(fit, name)) == parameters(getattr(fi, name)), name
    assert fit.interpolate is fit.resize


# --------------------------------------------------------------------------- values and grads vs torch

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode, pad, align", GS_COMBOS)
def test_grid_sample_values_and_grads_equal_torch(mode, pad, align, dtype):
    rng = _rng(zlib.crc32(f"{mode}-{pad}-{align}".encode()) % 1000)   # not hash(): salted
    x = _t(rng.standard_normal((2, 3, 5, 6)).astype(dtype), True)
    g = _t(off_knots(rng, (2, 4, 3, 2), (5, 6), align, dtype), True)
    y, grads = grads_of(lambda a, b: fit.grid_sample(a, b, mode, pad, align), [x, g])
    ref, ref_grads = grads_of(lambda a, b: F.grid_sample(a, b, mode, pad, align), [x, g])
    assert y.dtype == ref.dtype and y.shape == ref.shape
    assert_grads_close([y], [ref], dtype)
    assert_grads_close(grads, ref_grads, dtype, scale=10)
    np.testing.assert_array_equal(y.numpy(), fi.grid_sample(x.detach().numpy(), g.detach().numpy(),
                                                            mode, pad, align))


@pytest.mark.parametrize("align", [False, True])
def test_affine_grid_feeding_grid_sample_grads_equal_torch(align):
    rng = _rng(3)
    x = _t(rng.standard_normal((3, 2, 7, 9)).astype(np.float32), True)
    theta = _t(rotations(rng, 3, np.float32), True)

    def chain(sampler, grid_fn):
        return lambda a, th: sampler(a, grid_fn(th, (3, 2, 6, 5), align_corners=align),
                                     align_corners=align)

    y, grads = grads_of(chain(fit.grid_sample, fit.affine_grid), [x, theta])
    ref, ref_grads = grads_of(chain(F.grid_sample, F.affine_grid), [x, theta])
    assert_grads_close([y], [ref], np.float32)
    assert_grads_close(grads, ref_grads, np.float32, scale=20)


@pytest.mark.parametrize("mode, align, aa", RESIZE_COMBOS)
def test_interpolate_values_and_grads_equal_torch(mode, align, aa):
    x = _t(_rng(4).standard_normal((2, 3, 7, 6)), True)
    for kw in ({"size": (5, 9)}, {"scale_factor": 1.5}):
        ours = lambda a: fit.interpolate(a, mode=mode, align_corners=align, antialias=aa, **kw)
        theirs = lambda a: F.interpolate(a, mode=mode, align_corners=align, antialias=aa, **kw)
        y, grads = grads_of(ours, [x])
        ref, ref_grads = grads_of(theirs, [x])
        assert_grads_close([y], [ref], np.float64)
        assert_grads_close(grads, ref_grads, np.float64)


@pytest.mark.parametrize("out_size", [(3, 4), 1, (None, 2)])
def test_adaptive_avg_pool2d_values_and_grads_equal_torch(out_size):
    x = _t(_rng(5).standard_normal((2, 3, 7, 5)).astype(np.float32), True)
    y, grads = grads_of(lambda a: fit.adaptive_avg_pool2d(a, out_size), [x])
    ref, ref_grads = grads_of(lambda a: F.adaptive_avg_pool2d(a, out_size), [x])
    assert_grads_close([y], [ref], np.float32)
    assert_grads_close(grads, ref_grads, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pairwise_values_and_grads_equal_cdist(dtype):
    rng = _rng(6)
    x = _t(rng.standard_normal((5, 3)).astype(dtype), True)
    y = _t(rng.standard_normal((4, 3)).astype(dtype), True)
    for ours, theirs in ((fit.pairwise_sqdist, lambda a, b: torch.cdist(a, b) ** 2),
                         (fit.pairwise_l2, torch.cdist)):
        got, grads = grads_of(ours, [x, y])
        ref, ref_grads = grads_of(theirs, [x, y])
        assert_grads_close([got], [ref], dtype)
        assert_grads_close(grads, ref_grads, dtype)
    # y omitted: the same set twice, one gradient holding both roles
    got, grads = grads_of(lambda a: fit.pairwise_sqdist(a), [x])
    ref, ref_grads = grads_of(lambda a: torch.cdist(a, a) ** 2, [x])
    assert_grads_close([got], [ref], dtype)
    assert_grads_close(grads, ref_grads, dtype)


@pytest.mark.parametrize("xs, ys", [((2, 5, 3), (2, 4, 3)), ((5, 3), (2, 4, 3)),
                                    ((3, 1, 5, 3), (2, 4, 3))])
def test_batched_pairwise_broadcast_like_cdist(xs, ys):
    rng = _rng(7)
    x, y = _t(rng.standard_normal(xs), True), _t(rng.standard_normal(ys), True)
    got, grads = grads_of(fit.pairwise_sqdist, [x, y])
    ref, ref_grads = grads_of(lambda a, b: torch.cdist(a, b) ** 2, [x, y])
    assert got.shape == ref.shape
    assert_grads_close([got], [ref], np.float64)
    assert_grads_close(grads, ref_grads, np.float64)
    fake = OPS.pairwise_sqdist(x.to("meta"), y.to("meta"))
    assert fake.shape == ref.shape


@pytest.mark.parametrize("tshape", [(), (4,), (3, 4), "scalar"])
def test_lerp_grads_equal_torch_lerp(tshape):
    rng = _rng(8)
    a = _t(rng.standard_normal((3, 1)), True)
    b = _t(rng.standard_normal((1, 4)), True)
    if tshape == "scalar":
        y, grads = grads_of(lambda a, b: fit.lerp(a, b, 0.3), [a, b])
        ref, ref_grads = grads_of(lambda a, b: torch.lerp(a, b, 0.3), [a, b])
    else:
        t = _t(rng.uniform(-0.5, 1.5, tshape), True)
        y, grads = grads_of(fit.lerp, [a, b, t])
        ref, ref_grads = grads_of(lambda a, b, t: torch.lerp(a.expand(3, 4), b, t), [a, b, t])
    assert_grads_close([y], [ref], np.float64)
    assert_grads_close(grads, ref_grads, np.float64)


@pytest.mark.parametrize("op, kwargs", [(fit.lerp, {}), (fit.slerp, {}), (fit.slerp, {"path": True})])
def test_list_weight_is_read_as_the_numpy_api_reads_it_with_or_without_grad(op, kwargs):
    rng = _rng(10)
    a, b = (torch.tensor(rng.standard_normal((3, 4)), dtype=torch.float32) for _ in range(2))
    t = {"lerp": [[0.2], [0.5], [0.9]], "slerp": [0.2, 0.5, 0.9]}[op.__name__]
    t = [0.2, 0.7] if kwargs else t
    want = op(a, b, t, **kwargs)
    ta = a.clone().requires_grad_()
    y = op(ta, b, t, **kwargs)
    y.sum().backward()
    assert y.dtype == ta.grad.dtype == torch.float32
    torch.testing.assert_close(y.detach(), want, rtol=0, atol=0)
    torch.testing.assert_close(y.detach(), op(a, b, torch.tensor(t), **kwargs), rtol=0, atol=0)


def test_slerp_grads_equal_slerp_backward():
    rng = _rng(9)
    a, b = (rng.standard_normal((4, 5)) for _ in range(2))
    t = rng.uniform(0, 1, (4, 3))
    g = rng.standard_normal((4, 3, 5))
    ta, tb, tt = _t(a, True), _t(b, True), _t(t, True)
    y = fit.slerp(ta, tb, tt, path=True, norm="formula")
    (y * _t(g)).sum().backward()
    want = fi.slerp_backward(g, a, b, t, path=True, norm="formula")
    np.testing.assert_array_equal(y.detach().numpy(), fi.slerp(a, b, t, path=True, norm="formula"))
    for got, w in zip((ta.grad, tb.grad, tt.grad), want):
        np.testing.assert_array_equal(got.numpy(), w)


# --------------------------------------------------------------------------- gradcheck

def _gradcheck(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("mode, pad, align", GS_COMBOS)
def test_gradcheck_grid_sample(mode, pad, align):
    rng = _rng(10)
    x = _t(rng.standard_normal((1, 2, 3, 4)), True)
    g = _t(off_knots(rng, (1, 2, 3, 2), (3, 4), align), True)
    _gradcheck(lambda a, b: fit.grid_sample(a, b, mode, pad, align), x, g)
    # the registered op's own autograd formula (the eager call above skips the dispatcher)
    _gradcheck(lambda a, b: OPS.grid_sample(a, b, mode, pad, align, None, None), x, g)


@pytest.mark.parametrize("align", [False, True])
def test_gradcheck_affine_grid_and_channels_last_sampling(align):
    rng = _rng(11)
    theta = _t(rotations(rng, 2), True)
    x = _t(rng.standard_normal((2, 4, 5, 3)), True)     # NHWC
    _gradcheck(lambda th: fit.affine_grid(th, (2, 1, 3, 4), align), theta)
    _gradcheck(lambda a, th: fit.grid_sample(a, fit.affine_grid(th, (2, 3, 2, 3), align),
                                             align_corners=align, layout="NHWC"), x, theta)


@pytest.mark.parametrize("mode, align, aa", RESIZE_COMBOS)
def test_gradcheck_resize(mode, align, aa):
    x = _t(_rng(12).standard_normal((1, 2, 5, 6)), True)
    _gradcheck(lambda a: fit.resize(a, (3, 8), mode=mode, align_corners=align, antialias=aa), x)
    _gradcheck(lambda a: OPS.resize(a, None, [0.7, 1.4], mode, align, aa, None, "NCHW", "torch"),
               x)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_gradcheck_adaptive_avg_pool2d(layout):
    x = _t(_rng(13).standard_normal((1, 5, 7, 2)), True)
    _gradcheck(lambda a: fit.adaptive_avg_pool2d(a, (3, 4), layout=layout), x)
    _gradcheck(lambda a: fit.resize(a, (2, 3), mode="area", layout=layout), x)


@pytest.mark.parametrize("fn", [fit.pairwise_sqdist, fit.pairwise_l2])
def test_gradcheck_pairwise(fn):
    rng = _rng(14)
    x, y = _t(rng.standard_normal((4, 3)), True), _t(rng.standard_normal((5, 3)), True)
    _gradcheck(fn, x, y)
    _gradcheck(lambda a: fn(a), x)
    _gradcheck(lambda a: getattr(OPS, fn.__name__)(a, y), x)


def test_gradcheck_lerp():
    rng = _rng(15)
    a, b = _t(rng.standard_normal((3, 1)), True), _t(rng.standard_normal((4,)), True)
    t = _t(rng.uniform(-0.5, 1.5, (3, 4)), True)
    _gradcheck(fit.lerp, a, b, t)
    _gradcheck(lambda a, b: fit.lerp(a, b, 0.7), a, b)
    _gradcheck(OPS.lerp, a, b, _t(rng.uniform(0, 1, (4,)), True))


@pytest.mark.parametrize("path, shortest, norm", [(False, False, "linear"), (True, False, "formula"),
                                                  (False, True, "formula"), (True, True, "linear")])
def test_gradcheck_slerp(path, shortest, norm):
    rng = _rng(16)
    a, b = _t(rng.standard_normal((3, 4)), True), _t(rng.standard_normal((3, 4)), True)
    t = _t(rng.uniform(0.1, 0.9, (3, 2) if path else (3,)), True)
    _gradcheck(lambda a, b, t: fit.slerp(a, b, t, path=path, shortest_path=shortest, norm=norm),
               a, b, t)
    _gradcheck(lambda a, b: fit.slerp(a.T, b.T, 0.3, axis=0, path=False, norm=norm), a, b)


# --------------------------------------------------------------------------- opcheck

def _opcheck_samples():
    rng = _rng(17)
    r = lambda *s, grad=True: _t(rng.standard_normal(s), grad)    # noqa: E731
    x, g = r(2, 3, 5, 4), _t(off_knots(rng, (2, 3, 2, 2), (5, 4), False), True)
    go = r(2, 3, 3, 2, grad=False)
    cl = r(2, 5, 4, 3).permute(0, 3, 1, 2).detach().requires_grad_()     # channels-last NCHW
    a, b = r(3, 4), r(5, 4)
    t = _t(rng.uniform(0, 1, (3,)), True)
    v, gv = r(1, 2, 3, 4, 5), r(1, 2, 3, 2, 3)       # a volume and its grid
    return [
        (OPS.grid_sample, (x, g, "bicubic", "reflection", False, None, None)),
        (OPS.grid_sample, (x, g, "bilinear", "constant", True, "NHWC", [0.5, -1.0, 2.0, 0.0])),
        (OPS.grid_sample, (v, gv, "bicubic", "wrap", False, None, None)),
        (OPS.grid_sample, (r(5, 4, 2), g[0], "nearest", "constant", False, "HWC", [3.0])),
        (OPS.grid_sample_backward, (go, x, g, "bilinear", "zeros", True, None, None, True, True)),
        (OPS.grid_sample_backward, (go, x, g, "bilinear", "border", True, None, None, False,
                                    True)),
        (OPS.grid_sample_backward, (r(1, 2, 2, 3, 2, grad=False), v, gv, "bilinear", "constant",
                                    True, None, [1.0], True, True)),
        (OPS.affine_grid, (_t(rotations(rng, 2), True), [2, 1, 3, 4], False)),
        (OPS.affine_grid, (r(2, 3, 4), [2, 1, 3, 4, 2], True)),
        (OPS.affine_grid_backward, (r(2, 3, 4, 2), [2, 1, 3, 4], True)),
        (OPS.affine_grid_backward, (r(2, 2, 3, 4, 3), [2, 1, 2, 3, 4], False)),
        (OPS.resize, (x, [7, 3], None, "bilinear", True, False, None, "NCHW", "torch")),
        (OPS.resize, (cl, None, [1.5, 0.5], "bicubic", False, True, None, None, "torch")),
        (OPS.resize, (x, None, [2.0, 2.0], "nearest", None, False, True, "NHWC", "torch")),
        (OPS.resize, (x[0], [4, 6], None, "lanczos", None, False, None, "HWC", "pil")),
        (OPS.resize, (v, [3, 2, 5], None, "trilinear", True, False, None, None, "torch")),
        (OPS.resize, (r(2, 3, 7), None, [1.5], "linear", False, False, None, None, "torch")),
        (OPS.resize_backward, (r(2, 3, 4, 2), [2, 3, 5, 4], None, "area", None, False, None,
                               "NCHW")),
        (OPS.resize_backward, (r(2, 3, 4), [2, 3, 7], None, "nearest", None, False, None, None)),
        (OPS.adaptive_avg_pool, (x, [2, 3], "NCHW")),
        (OPS.adaptive_avg_pool, (cl, [2, 2], None)),
        (OPS.adaptive_avg_pool, (v, [1, 2, 2], None)),
        (OPS.adaptive_avg_pool, (r(2, 3, 7), [3], None)),
        (OPS.adaptive_avg_pool_backward, (r(2, 3, 2, 3), [2, 3, 5, 4], "NCHW")),
        (OPS.adaptive_avg_pool_backward, (r(1, 2, 1, 2, 2), [1, 2, 2, 3, 4], None)),
        (OPS.warp, (x, _t(rotations(rng, 2), True), [4, 6], "bilinear", "zeros", False,
                    "opencv", False, None, None, "warp_affine")),
        (OPS.warp, (x[0].detach().requires_grad_(), r(3, 3), [3, 3], "bicubic", "constant",
                    True, "torch", False, [1.0], "HWC", "warp_perspective")),
        (OPS.warp_backward, (r(2, 3, 4, 6, grad=False), x, _t(rotations(rng, 1)[0], True),
                             [4, 6], "bilinear", "border", False, "opencv", True, None, None,
                             "rotate", True, True)),
        (OPS.pairwise_sqdist, (a, b)),
        (OPS.pairwise_sqdist, (a, None)),
        (OPS.pairwise_l2, (a, b)),
        (OPS.pairwise_sqdist_backward, (r(3, 5), a, b, True, True)),
        (OPS.pairwise_sqdist_backward, (r(3, 5), a, b, False, True)),
        (OPS.pairwise_l2_backward, (r(3, 3), a, None, fi.pairwise_l2(a.detach()), True, False)),
        (OPS.pairwise_l2_backward, (r(3, 5), a, b, fi.pairwise_l2(a.detach(), b.detach()),
                                    True, False)),
        (OPS.lerp, (a, r(1, 4), _t(np.array(0.25), True))),
        (OPS.lerp_backward, (r(3, 4), a, r(4), t[:, None].detach().requires_grad_(), True,
                             False, True)),
        (OPS.slerp, (a, r(3, 4), t, -1, False, False, "linear")),
        (OPS.slerp, (a, r(3, 4), t[:2], 0, True, True, "formula")),
        (OPS.slerp_backward, (r(3, 4), a, r(3, 4), t, -1, False, False, "linear", True, True)),
        (OPS.slerp_backward, (r(3, 4), a, r(3, 4), t, -1, False, False, "linear", False, True)),
    ]


@pytest.mark.parametrize("case", range(len(_opcheck_samples())))
def test_opcheck(case):
    op, args = _opcheck_samples()[case]
    if "backward" in str(op):     # not differentiable (double backward raises): plain inputs
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(op, args)


def test_every_op_and_backward_is_opchecked():
    checked = {str(op).split(".")[1] for op, _ in _opcheck_samples()}
    registered = {n.split("::")[1] for n in torch._C._dispatch_get_all_op_names()
                  if n.startswith("fastinterp::")}
    assert registered == checked


# --------------------------------------------------------------------------- merged API options

# (mode, padding, align_corners): a sample covering each value, not the full product
NEW_PAD_COMBOS = [("bilinear", "constant", False), ("bicubic", "wrap", True),
                  ("nearest", "wrap", False), ("bicubic", "constant", True),
                  ("bilinear", "wrap", False)]


@pytest.mark.parametrize("mode, pad, align", NEW_PAD_COMBOS)
def test_gradcheck_constant_and_wrap_padding(mode, pad, align):
    rng = _rng(30)
    x = _t(rng.standard_normal((1, 2, 3, 4)), True)
    g = _t(off_knots(rng, (1, 2, 3, 2), (3, 4), align), True)
    fill = [0.5, -2.0] if pad == "constant" else None
    _gradcheck(lambda a, b: fit.grid_sample(a, b, mode, pad, align, fill=fill), x, g)
    y = fit.grid_sample(x, g, mode, pad, align, fill=fill)
    np.testing.assert_array_equal(y.detach().numpy(), fi.grid_sample(
        x.detach().numpy(), g.detach().numpy(), mode, pad, align, fill=fill))


VOLUME_COMBOS = [("bilinear", "zeros", False), ("nearest", "border", True),
                 ("bicubic", "reflection", False), ("bilinear", "wrap", True),
                 ("bicubic", "constant", True)]


def _volume_grid(rng, shape, dhw, align):
    """Off-knot grid for a volume: the 2-D helper per axis pair (x, y), then z along D."""
    g = np.empty(shape)
    g[..., :2] = off_knots(rng, shape[:-1] + (2,), dhw[1:], align)
    g[..., 2:] = off_knots(rng, shape[:-1] + (2,), (dhw[0], dhw[0]), align)[..., :1]
    return g


@pytest.mark.parametrize("mode, pad, align", VOLUME_COMBOS)
def test_volume_grid_sample_gradcheck_and_torch(mode, pad, align):
    rng = _rng(31)
    x = _t(rng.standard_normal((1, 2, 3, 4, 3)), True)
    g = _t(_volume_grid(rng, (1, 2, 2, 2, 3), (3, 4, 3), align), True)
    fill = 1.5 if pad == "constant" else None
    _gradcheck(lambda a, b: fit.grid_sample(a, b, mode, pad, align, fill=fill), x, g)
    if mode != "bicubic" and pad in GS_PADS:         # torch has these
        y, grads = grads_of(lambda a, b: fit.grid_sample(a, b, mode, pad, align), [x, g])
        ref, ref_grads = grads_of(lambda a, b: F.grid_sample(a, b, mode, pad, align), [x, g])
        assert_grads_close([y], [ref], np.float64)
        assert_grads_close(grads, ref_grads, np.float64, scale=10)


@pytest.mark.parametrize("align", [False, True])
def test_affine_grid_3d_equals_torch_and_gradchecks(align):
    rng = _rng(32)
    theta = _t(np.eye(3, 4) + rng.uniform(-0.2, 0.2, (2, 3, 4)), True)
    size = (2, 1, 3, 4, 2)
    y, grads = grads_of(lambda th: fit.affine_grid(th, size, align), [theta])
    ref, ref_grads = grads_of(lambda th: F.affine_grid(th, size, align), [theta])
    assert_grads_close([y], [ref], np.float64)
    assert_grads_close(grads, ref_grads, np.float64)
    _gradcheck(lambda th: fit.affine_grid(th, size, align), theta)


# (shape, size, mode, align_corners): 1-D and 3-D data
ND_RESIZE = [((2, 3, 7), 5, "linear", False), ((1, 2, 6), 9, "nearest", None),
             ((1, 2, 8), 3, "area", None), ((1, 2, 3, 4, 5), (4, 3, 6), "trilinear", True),
             ((1, 1, 4, 3, 5), (2, 5, 3), "nearest-exact", None),
             ((1, 2, 4, 5, 3), (2, 2, 2), "area", None)]


@pytest.mark.parametrize("shape, size, mode, align", ND_RESIZE)
def test_resize_1d_3d_equal_torch_and_gradcheck(shape, size, mode, align):
    x = _t(_rng(33).standard_normal(shape), True)
    y, grads = grads_of(lambda a: fit.resize(a, size, mode=mode, align_corners=align), [x])
    ref, ref_grads = grads_of(lambda a: F.interpolate(a, size, mode=mode, align_corners=align),
                              [x])
    assert_grads_close([y], [ref], np.float64)
    assert_grads_close(grads, ref_grads, np.float64)
    _gradcheck(lambda a: fit.resize(a, size, mode=mode, align_corners=align), x)


@pytest.mark.parametrize("rank, out_size", [(1, 4), (1, (3,)), (3, (2, 3, 2)), (3, (None, 1, 2))])
def test_adaptive_avg_pool1d_3d_equal_torch_and_gradcheck(rank, out_size):
    shape = (2, 3, 7) if rank == 1 else (1, 2, 3, 5, 4)
    x = _t(_rng(34).standard_normal(shape), True)
    ours = getattr(fit, f"adaptive_avg_pool{rank}d")
    theirs = getattr(F, f"adaptive_avg_pool{rank}d")
    y, grads = grads_of(lambda a: ours(a, out_size), [x])
    ref, ref_grads = grads_of(lambda a: theirs(a, out_size), [x])
    assert_grads_close([y], [ref], np.float64)
    assert_grads_close(grads, ref_grads, np.float64)
    _gradcheck(lambda a: ours(a, out_size), x)


# single images in each layout: (layout, NCHW batch of one -> that layout)
TO_LAYOUT = {"NHWC": lambda a: a.permute(0, 2, 3, 1), "CHW": lambda a: a[0],
             "HWC": lambda a: a[0].permute(1, 2, 0), "HW": lambda a: a[0, 0]}


@pytest.mark.parametrize("layout", sorted(TO_LAYOUT))
def test_layouts_equal_nchw_with_gradients(layout):
    rng = _rng(35)
    C = 1 if layout == "HW" else 3
    x = _t(rng.standard_normal((1, C, 5, 6)), True)
    g = _t(off_knots(rng, (1, 3, 4, 2), (5, 6), False), True)
    conv = TO_LAYOUT[layout]
    single = layout != "NHWC"
    calls = [
        (lambda a, b: fit.grid_sample(a, b, "bicubic", "border"),
         lambda a, b: fit.grid_sample(conv(a), b[0] if single else b, "bicubic", "border",
                                      layout=layout)),
        (lambda a, b: fit.resize(a, (4, 7), mode="bilinear") + b.sum(),
         lambda a, b: fit.resize(conv(a), (4, 7), layout=layout) + b.sum()),
        (lambda a, b: fit.adaptive_avg_pool2d(a, (2, 3)) + b.sum(),
         lambda a, b: fit.adaptive_avg_pool2d(conv(a), (2, 3), layout=layout) + b.sum()),
        (lambda a, b: fit.warp_affine(a, torch.eye(2, 3, dtype=a.dtype) * 0.9, (4, 5)) + b.sum(),
         lambda a, b: fit.warp_affine(conv(a), torch.eye(2, 3, dtype=a.dtype) * 0.9, (4, 5),
                                      layout=layout) + b.sum()),
    ]
    for ref_fn, fn in calls:
        ref, ref_grads = grads_of(lambda a, b: conv(ref_fn(a, b)), [x, g])
        y, grads = grads_of(fn, [x, g])
        np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-13, atol=1e-13)
        assert_grads_close(grads, ref_grads, np.float64)
    _gradcheck(lambda a: fit.resize(conv(a), (3, 4), mode="bicubic", layout=layout), x)


def test_presets_and_uint8_are_forward_only():
    rng = _rng(36)
    u8 = torch.from_numpy(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8))
    for match, mode in (("opencv", "area"), ("pil", "lanczos"), ("torch", "bilinear")):
        got = fit.resize(u8, (4, 5), mode=mode, layout="HWC", match=match)
        assert got.dtype == torch.uint8
        np.testing.assert_array_equal(got.numpy(), fi.resize(u8.numpy(), (4, 5), mode=mode,
                                                             layout="HWC", match=match))
    g = torch.zeros(1, 2, 2, 2)
    assert fit.grid_sample(u8.permute(2, 0, 1)[None].contiguous(), g).dtype == torch.uint8
    x = torch.rand(1, 2, 6, 6, requires_grad=True)
    with pytest.raises(TypeError, match=r"^resize: match='pil' has no gradient"):
        fit.resize(x, (3, 3), mode="bicubic", match="pil")
    with torch.no_grad():
        fit.resize(x, (3, 3), mode="bicubic", match="pil")
    with pytest.raises(RuntimeError):          # torch: integer tensors cannot require grad
        u8.float().to(torch.uint8).requires_grad_()
    # a grid or matrix that requires grad next to a uint8 image: an error, not a result
    # that silently has no gradient
    img = u8.permute(2, 0, 1)[None].contiguous()
    gg = torch.zeros(1, 2, 2, 2, requires_grad=True)
    M = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]], requires_grad=True)
    for call, name in ((lambda: fit.grid_sample(img, gg), "grid"),
                       (lambda: fit.warp_affine(u8, M, (4, 4), layout="HWC"), "M")):
        with pytest.raises(TypeError, match=r"^(grid_sample|warp_affine): a uint8 image has no "
                                            rf"gradient \(forward only\); got {name} with "
                                            r"requires_grad=True.*float dtype"):
            call()
        with torch.no_grad():
            assert call().dtype == torch.uint8
    assert fit.rotate(u8, torch.tensor(10.0, requires_grad=True), layout="HWC").dtype == torch.uint8


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_values_and_float32_gradients(dtype):
    rng = _rng(37)
    x32 = _t(rng.standard_normal((2, 3, 6, 5)).astype(np.float32), True)
    g32 = _t(off_knots(rng, (2, 4, 3, 2), (6, 5), False, np.float32), True)
    M32 = _t(np.array([[1.0, 0.1, 0.3], [-0.1, 0.9, 0.2]], np.float32), True)
    tol = 2e-2 if dtype == torch.float16 else 1.5e-1
    for fn, args in ((lambda a, b: fit.grid_sample(a, b, "bilinear", "wrap"), (x32, g32)),
                     (lambda a: fit.resize(a, (4, 8), mode="bicubic"), (x32,)),
                     (lambda a: fit.adaptive_avg_pool2d(a, 3), (x32,)),
                     (lambda a, m: fit.warp_affine(a, m, (5, 5)), (x32, M32))):
        ref, ref_grads = grads_of(fn, list(args))
        half = [a.detach().to(dtype).requires_grad_() for a in args]
        y = fn(*half)
        assert y.dtype == dtype
        (y.float() * torch.from_numpy(_rng(1).standard_normal(tuple(y.shape))).float()
         ).sum().backward()
        np.testing.assert_allclose(y.float().detach().numpy(), ref.numpy(), atol=tol * 4)
        for h, r in zip(half, ref_grads):
            assert h.grad.dtype == dtype
            scale = float(r.abs().max()) + 1
            np.testing.assert_allclose(h.grad.float().numpy(), r.numpy(), atol=tol * scale * 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("mode", ["linear", "nearest", "area"])
def test_1d_data_of_every_dtype_with_and_without_grad(dtype, mode):
    x32 = torch.from_numpy(_rng(38).standard_normal((2, 3, 5)).astype(np.float32))
    x = x32.to(dtype)
    want = F.interpolate(x.float(), size=7, mode=mode).to(dtype)
    for grad in (False, True):
        xg = x.clone().requires_grad_(grad)
        y = fit.interpolate(xg, size=7, mode=mode)
        assert y.dtype == dtype and tuple(y.shape) == (2, 3, 7)
        torch.testing.assert_close(y.detach(), want, rtol=1e-2, atol=1e-2)
        if grad:
            y.float().sum().backward()
            ref = x.float().requires_grad_()
            F.interpolate(ref, size=7, mode=mode).sum().backward()
            assert xg.grad.dtype == dtype
            torch.testing.assert_close(xg.grad.float(), ref.grad, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("grad", [False, True])
def test_sizes_as_integer_tensors_and_arrays(grad):
    x = torch.rand(2, 3, 5, 6, requires_grad=grad)
    for size in (torch.tensor([6, 7]), np.array([6, 7]), (torch.tensor(6), 7)):
        torch.testing.assert_close(fit.resize(x, size=size), fit.resize(x, size=(6, 7)))
    torch.testing.assert_close(fit.resize(x, size=torch.tensor(6)), fit.resize(x, size=6))
    for size in (torch.tensor([2, 3]), np.array([2, 3]), (None, torch.tensor(3))):
        want = fit.adaptive_avg_pool2d(x, (5 if size[0] is None else 2, 3))
        torch.testing.assert_close(fit.adaptive_avg_pool2d(x, size), want)
    torch.testing.assert_close(fit.adaptive_avg_pool1d(x[0], torch.tensor(4)),
                               fit.adaptive_avg_pool1d(x[0], 4))
    v = x[:, :, None].expand(-1, -1, 3, -1, -1)
    torch.testing.assert_close(fit.adaptive_avg_pool3d(v, torch.tensor([2, 3, 4])),
                               fit.adaptive_avg_pool3d(v, (2, 3, 4)))
    torch.testing.assert_close(fit.resize(v, torch.tensor([2, 3, 4]), mode="trilinear"),
                               fit.resize(v, (2, 3, 4), mode="trilinear"))
    with pytest.raises(TypeError, match=r"^resize: size must be a positive int or a pair of "
                                        r"them \(H, W\); got tensor\(\[6\., 7\.\]\)"):
        fit.resize(x, size=torch.tensor([6.0, 7.0]))
    with pytest.raises(TypeError, match=r"^adaptive_avg_pool2d: output_size must be a positive "
                                        r"int or a pair"):
        fit.adaptive_avg_pool2d(x, torch.tensor([True, True]))


@pytest.mark.parametrize("op, rows, match, pad", [
    ("warp_affine", 2, "opencv", "zeros"), ("warp_affine", 2, "torch", "reflection"),
    ("warp_perspective", 3, "opencv", "border"), ("warp_perspective", 3, "torch", "constant")])
def test_warps_gradcheck_image_and_matrix(op, rows, match, pad):
    rng = _rng(38)
    x = _t(rng.standard_normal((2, 2, 5, 6)), True)
    M = np.eye(rows, 3) + rng.uniform(-0.05, 0.05, (rows, 3))
    M[:2, 2] += 0.37 if match == "opencv" else 0.07       # off the pixel knots
    if rows == 3:
        M[2, :2] = rng.uniform(-0.02, 0.02, 2)
    M = _t(M, True)
    fill = 0.25 if pad == "constant" else None
    fn = getattr(fit, op)
    _gradcheck(lambda a, m: fn(a, m, (4, 5), padding_mode=pad, match=match, fill=fill), x, M)
    y = fn(x, M, (4, 5), padding_mode=pad, match=match, fill=fill)
    np.testing.assert_array_equal(y.detach().numpy(), getattr(fi, op)(
        x.detach().numpy(), M.detach().numpy(), (4, 5), padding_mode=pad, match=match, fill=fill))


def test_rotate_gradcheck_and_values():
    x = _t(_rng(39).standard_normal((1, 2, 5, 6)), True)
    _gradcheck(lambda a: fit.rotate(a, 23.0, scale=0.9), x)
    y = fit.rotate(x, 23.0, scale=0.9)
    np.testing.assert_array_equal(y.detach().numpy(),
                                  fi.rotate(x.detach().numpy(), 23.0, scale=0.9))
    hwc = fit.rotate(x[0].permute(1, 2, 0), 23.0, scale=0.9, layout="HWC")
    np.testing.assert_allclose(hwc.detach().numpy(), y[0].permute(1, 2, 0).detach().numpy(),
                               rtol=1e-14, atol=1e-14)


def test_rotate_scale_and_warp_options_raise_under_their_names():
    x = _t(_rng(40).standard_normal((1, 2, 5, 6)))
    with pytest.raises(ValueError, match=r"^rotate: scale must be non-zero; got 0\.0"):
        fit.rotate(x, 23.0, scale=0.0)
    y = fit.rotate(x, 23.0, center=(0, 0), scale=1e-200)      # only the fixed point inside
    np.testing.assert_allclose(y[..., 0, 0].numpy(), x[..., 0, 0].numpy(), rtol=1e-12)
    assert not y.reshape(1, 2, -1)[..., 1:].any()
    with pytest.raises(ValueError, match=r"^warp_affine: align_corners applies to match='torch'"):
        fit.warp_affine(x, torch.eye(2, 3), (4, 4), align_corners=True)


def test_grid_sample_channels_last_is_deprecated():
    x, g = torch.rand(1, 4, 5, 2), torch.zeros(1, 2, 2, 2)
    with pytest.warns(FutureWarning, match="grid_sample: channels_last is deprecated"):
        y = fit.grid_sample(x, g, channels_last=True)
    torch.testing.assert_close(y, fit.grid_sample(x, g, layout="NHWC"))


# --------------------------------------------------------------------------- torch.compile

def _pipeline(x, theta, pts, a, b, t):
    grid = fit.affine_grid(theta, (x.shape[0], x.shape[1], 6, 6), align_corners=False)
    y = fit.grid_sample(x, grid, padding_mode="border")
    y = fit.resize(y, size=(4, 4), mode="bicubic") + fit.adaptive_avg_pool2d(y, 4)
    d = fit.pairwise_l2(pts) + fit.pairwise_sqdist(pts, pts[:2] * 0.5).sum(1, keepdim=True)
    s = fit.slerp(a, b, t) + fit.lerp(a, b, t[:, None])
    w = fit.warp_affine(x, theta, (5, 7), match="torch", padding_mode="wrap")
    w = fit.grid_sample(w, grid[:, :4, :5], padding_mode="constant", fill=[0.5, 1.0, -1.0])
    v = fit.resize(x[:, :, None].expand(-1, -1, 2, -1, -1), (3, 4, 4), mode="trilinear")
    p = fit.adaptive_avg_pool1d(y.flatten(2), 5) + fit.adaptive_avg_pool3d(v, 2).flatten(2)[..., :1]
    return (y.square().sum() + d.sum() + s.square().sum() + w.square().sum()
            + p.square().sum())


def test_compile_fullgraph_forward_and_backward():
    rng = _rng(18)
    inputs = [_t(rng.standard_normal((2, 3, 8, 8)).astype(np.float32), True),
              _t(rotations(rng, 2, np.float32), True),
              _t(rng.standard_normal((5, 3)).astype(np.float32), True),
              _t(rng.standard_normal((4, 6)).astype(np.float32), True),
              _t(rng.standard_normal((4, 6)).astype(np.float32), True),
              _t(rng.uniform(0, 1, 4).astype(np.float32), True)]
    want, want_grads = grads_of(lambda *a: _pipeline(*a)[None], inputs)
    torch._dynamo.reset()
    compiled = torch.compile(_pipeline, fullgraph=True, backend="aot_eager")
    got, got_grads = grads_of(lambda *a: compiled(*a)[None], inputs)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)


def _compile_counted(fn, **options):
    """``torch.compile(fn, fullgraph=True)`` (aot_eager) and its count of compiled frames."""
    from torch._dynamo.testing import CompileCounterWithBackend
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    return torch.compile(fn, fullgraph=True, backend=counter, **options), counter


def _sizes_from_shapes(x, theta):
    grid = fit.affine_grid(theta, x.shape)           # a size that is x's own (symbolic) shape
    y = fit.grid_sample(x, grid) + fit.rotate(x, 10.0)     # the default centre: symbolic floats
    return y.square().sum() + fit.resize(y, size=(x.shape[2] + 1, 3)).sum()


def test_compile_a_second_shape_traces_sizes_symbolically():
    compiled, counter = _compile_counted(_sizes_from_shapes)
    rng = _rng(19)
    frames = []
    for n, h, w in ((2, 8, 8), (3, 6, 10), (4, 7, 9)):
        inputs = [_t(rng.standard_normal((n, 2, h, w)).astype(np.float32), True),
                  _t(rotations(rng, n, np.float32), True)]
        want, want_grads = grads_of(lambda *a: _sizes_from_shapes(*a)[None], inputs)
        got, got_grads = grads_of(lambda *a: compiled(*a)[None], inputs)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5)
        for g, w_ in zip(got_grads, want_grads):
            np.testing.assert_allclose(g.numpy(), w_.numpy(), rtol=1e-5, atol=1e-5)
        frames.append(counter.frame_count)
    assert frames[2] == frames[1]      # the second shape's graph (dynamic) serves the third


def _numbers_with_dynamic_shapes(a, b, x):
    t = a.shape[0] / 10.0                # a symbolic float
    return (fit.lerp(a, b, 0.3).sum() + fit.slerp(a, b, 0.3).sum() + fit.lerp(a, b, t).sum()
            + fit.rotate(x, 10.0, scale=0.9).sum() + fit.rotate(x, 5.0, (1.5, 2.0)).sum())


def test_compile_dynamic_number_arguments():
    compiled, counter = _compile_counted(_numbers_with_dynamic_shapes, dynamic=True)
    rng = _rng(20)
    frames = []
    for p, h, w in ((4, 6, 7), (5, 8, 5)):
        a, b = (_t(rng.uniform(0.5, 1, (p, 3)).astype(np.float32)) for _ in range(2))
        x = _t(rng.standard_normal((2, 3, h, w)).astype(np.float32))
        torch.testing.assert_close(compiled(a, b, x), _numbers_with_dynamic_shapes(a, b, x))
        frames.append(counter.frame_count)
    assert frames[1] == frames[0]      # no shape was fixed by a check


def test_symbolic_sizes_and_numbers_outside_torch_compile():
    """make_fx (as torch.export) traces with torch.SymInt/SymFloat objects, which the checks
    pass on: the graph then serves other shapes."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def f(x, a, b):
        theta = torch.eye(2, 3).expand(x.shape[0], 2, 3)
        y = fit.grid_sample(x, fit.affine_grid(theta, x.shape)) + fit.rotate(x, 10.0)
        return (fit.resize(y, size=(x.shape[2] + 1, 3)).sum() + fit.lerp(a, b, a.shape[0] / 10).sum()
                + fit.adaptive_avg_pool2d(y, (None, 2)).sum())

    traced = make_fx(f, tracing_mode="symbolic")(torch.rand(2, 3, 6, 7), torch.rand(4, 3),
                                                 torch.rand(4, 3))
    args = (torch.rand(3, 3, 8, 5), torch.rand(5, 3), torch.rand(5, 3))
    torch.testing.assert_close(traced(*args), f(*args))



_FILL_CALLS = {
    "grid_sample": lambda x, v: fit.grid_sample(x, torch.full((2, 3, 4, 2), 1.5),
                                                padding_mode="constant", fill=v),
    "warp_affine": lambda x, v: fit.warp_affine(x, torch.tensor([[1.0, 0, 5], [0, 1, 0]]),
                                                (4, 6), padding_mode="constant", fill=v),
    "warp_perspective": lambda x, v: fit.warp_perspective(x, torch.eye(3) * 0.5, (4, 6),
                                                          padding_mode="constant", fill=v),
    "rotate": lambda x, v: fit.rotate(x, 30.0, padding_mode="constant", fill=v),
}


@pytest.mark.parametrize("dynamic", [None, True])
@pytest.mark.parametrize("name", list(_FILL_CALLS))
def test_compile_a_number_fill_that_changes_between_calls(name, dynamic):
    """A per-call random fill (augmentation): once dynamo made the float symbolic (its
    second value, or at once with dynamic=True), the fill's check asked it for .tolist,
    which dynamo cannot trace: fullgraph failed, eager graphs broke at every call."""
    call = _FILL_CALLS[name]
    compiled, _ = _compile_counted(call, dynamic=dynamic)
    x = torch.rand(2, 3, 8, 9)
    for v in (0.25, 0.75, -2.0):
        torch.testing.assert_close(compiled(x, v), call(x, v), rtol=0, atol=0)


def test_a_fill_computed_from_a_symbolic_size_is_refused_by_make_fx():
    """make_fx (as torch.export) would keep the traced value of such a fill for every
    size (the op's fill is a constant of its graph): a clear error instead of 'SymFloat
    object is not iterable'."""
    from torch.fx.experimental.proxy_tensor import make_fx
    g = torch.full((2, 3, 4, 2), 1.5)
    f = lambda x, g: fit.grid_sample(x, g, padding_mode="constant", fill=x.shape[0] / 10)  # noqa: E731
    with pytest.raises(TypeError, match="fill must not be computed from a symbolic size"):
        make_fx(f, tracing_mode="symbolic")(torch.rand(2, 3, 8, 9), g)


# --------------------------------------------------------------------------- autograd behaviour

def test_no_grad_and_inference_mode_record_nothing():
    x = torch.rand(1, 2, 4, 4, requires_grad=True)
    g = torch.rand(1, 3, 3, 2, requires_grad=True) * 2 - 1
    with torch.no_grad():
        y = fit.grid_sample(x, g)
    assert y.grad_fn is None and not y.requires_grad
    with torch.inference_mode():
        z = fit.resize(x, 3)
    assert z.grad_fn is None
    np.testing.assert_array_equal(y.numpy(), fit.grid_sample(x, g).detach().numpy())


@pytest.mark.parametrize("which", [(True, False), (False, True)])
def test_only_the_inputs_that_require_grad_get_grads(which, monkeypatch):
    rng = _rng(20)
    x = _t(rng.standard_normal((2, 3, 5, 4)), which[0])
    g = _t(off_knots(rng, (2, 3, 3, 2), (5, 4), False), which[1])
    seen = []
    real = fi.grid_sample_backward
    monkeypatch.setattr(fi, "grid_sample_backward",
                        lambda *a, **k: seen.append(a[6:8]) or real(*a, **k))
    fit.grid_sample(x, g).sum().backward()
    assert seen == [which]      # only the needed gradient was computed
    assert (x.grad is not None, g.grad is not None) == which
    ref_x, ref_g = x.detach().clone().requires_grad_(), g.detach().clone().requires_grad_()
    F.grid_sample(ref_x, ref_g, align_corners=False).sum().backward()
    got = x.grad if which[0] else g.grad
    want = ref_x.grad if which[0] else ref_g.grad
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("compiled", [False, True])
def test_only_the_gradients_the_backward_pass_reaches_are_computed(compiled, monkeypatch):
    """torch.autograd.grad(y, x) and backward(inputs=[x]) skip the other input's
    gradient even when it requires grad (they computed both: 2x the time)."""
    rng = _rng(22)
    x = _t(rng.standard_normal((2, 3, 5, 4)), True)
    g = _t(off_knots(rng, (2, 3, 3, 2), (5, 4), False), True)
    M = torch.tensor([[1.0, 0.1, 0.2], [0.0, 0.9, -0.1]], dtype=torch.float64,
                     requires_grad=True)
    seen = []
    for name, flags in (("grid_sample_backward", slice(6, 8)),
                        ("warp_affine_backward", slice(9, 11))):
        real = getattr(fi, name)

        def spy(*a, real=real, flags=flags, **k):
            seen.append(a[flags])
            return real(*a, **k)
        monkeypatch.setattr(fi, name, spy)
    sample = torch.compile(fit.grid_sample, backend="eager") if compiled else fit.grid_sample
    want = [p.detach().clone().requires_grad_() for p in (x, g)]
    fit.grid_sample(*want).sum().backward()
    seen.clear()
    (gx,) = torch.autograd.grad(sample(x, g).sum(), x)
    (gg,) = torch.autograd.grad(sample(x, g).sum(), g)
    sample(x, g).sum().backward(inputs=[g])
    assert seen == [(True, False), (False, True), (False, True)]
    assert gx.equal(want[0].grad) and gg.equal(want[1].grad) and g.grad.equal(gg)
    assert x.grad is None
    seen.clear()
    torch.autograd.grad(fit.warp_affine(x, M, (3, 3)).sum(), x)
    assert seen == [(True, False)]


def test_strided_and_channels_last_inputs():
    rng = _rng(21)
    base = _t(rng.standard_normal((2, 3, 6, 10)))
    strided = base[:, :, :, ::2].requires_grad_()            # non-contiguous
    cl = base.contiguous(memory_format=torch.channels_last).requires_grad_()
    dense = base[:, :, :, ::2].contiguous().requires_grad_()
    g = _t(off_knots(rng, (2, 4, 4, 2), (6, 5), True))
    for x, ref in ((strided, dense), (cl, base.clone().requires_grad_())):
        for fn in (lambda a: fit.grid_sample(a, g, "bicubic", align_corners=True),
                   lambda a: fit.resize(a, (4, 7), mode="bilinear"),
                   lambda a: fit.adaptive_avg_pool2d(a, (2, 3))):
            y, (gx,) = grads_of(fn, [x])
            want, (gref,) = grads_of(fn, [ref])
            np.testing.assert_array_equal(y.numpy(), want.numpy())
            np.testing.assert_allclose(gx.numpy(), gref.numpy(), rtol=1e-13, atol=1e-14)
    y = fit.resize(cl.detach(), (4, 7))
    assert y.is_contiguous(memory_format=torch.channels_last)       # the layout is kept
    assert fit.resize(cl, (4, 7)).is_contiguous(memory_format=torch.channels_last)


def test_negative_bit_views_are_read_by_value():
    c = torch.randn(2, 3, dtype=torch.complex128)
    neg = c.conj().imag                                     # a view with the negative bit
    assert neg.is_neg()
    x = neg.reshape(1, 1, 2, 3)
    np.testing.assert_array_equal(fit.resize(x, (4, 6)).numpy(),
                                  fit.resize(x.clone(), (4, 6)).numpy())


@pytest.mark.parametrize("name, call", [
    ("grid_sample", lambda x: fit.grid_sample(x, torch.zeros(1, 2, 2, 2, dtype=x.dtype))),
    ("affine_grid", lambda th: fit.affine_grid(th.reshape(1, 2, 3)[:, :, :3], (1, 1, 3, 3))),
    ("resize", lambda x: fit.resize(x, (3, 5))),
    ("adaptive_avg_pool2d", lambda x: fit.adaptive_avg_pool2d(x, 2)),
    ("pairwise_sqdist", lambda x: fit.pairwise_sqdist(x.reshape(4, 4))),
    ("pairwise_l2", lambda x: fit.pairwise_l2(x.reshape(4, 4) * torch.arange(4.0)[:, None])),
    ("lerp", lambda x: fit.lerp(x, x * 2, x)),
    ("slerp", lambda x: fit.slerp(x.reshape(4, 4), x.reshape(4, 4).flip(0), 0.3)),
    ("rotate", lambda x: fit.rotate(x, 30.0)),
    ("warp_affine", lambda x: fit.warp_affine(x, torch.eye(2, 3, dtype=x.dtype), (3, 3))),
    ("warp_perspective", lambda x: fit.warp_perspective(x, torch.eye(3, dtype=x.dtype), (3, 3))),
])
def test_double_backward_names_the_op(name, call):
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, requires_grad=True) + 0.5
    x = x.detach().requires_grad_() if name != "affine_grid" else \
        torch.rand(6, dtype=torch.float64, requires_grad=True)
    y = call(x)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match=rf"^{name}: double backward"):
        gx.sum().backward()


# --------------------------------------------------------------------------- out= and errors

def test_out_is_filled_outside_autograd_and_refused_inside():
    x = torch.rand(2, 3, 4, 4)
    out = torch.empty(2, 3, 8, 8)
    assert fit.resize(x, 8, out=out) is out
    np.testing.assert_array_equal(out.numpy(), fit.resize(x, 8).numpy())
    xr = x.clone().requires_grad_()
    with pytest.raises(TypeError, match=r"^resize: out= does not support automatic differ"):
        fit.resize(xr, 8, out=out)
    with torch.no_grad():
        assert fit.resize(xr, 8, out=torch.zeros_like(out)).equal(out)
    with pytest.raises(ValueError, match=r"^resize: out must have shape \(2, 3, 8, 8\)"):
        fit.resize(x, 8, out=torch.empty(2, 3, 8, 7))
    with pytest.raises(TypeError, match=r"^resize: out must have dtype float64; got float32"):
        fit.resize(x.double(), 8, out=out)


# every op that takes out=, as (name, call(x, out)) on a (2, 3, 5, 5) input x
OUT_CALLS = [
    ("grid_sample", lambda x, out: fit.grid_sample(x, torch.zeros(2, 3, 4, 2), out=out)),
    ("affine_grid", lambda x, out: fit.affine_grid(x[:, 0, :2, :3], (2, 1, 3, 4), out=out)),
    ("resize", lambda x, out: fit.resize(x, (4, 6), out=out)),
    ("adaptive_avg_pool1d", lambda x, out: fit.adaptive_avg_pool1d(x[:, :, 0], 2, out=out)),
    ("adaptive_avg_pool2d", lambda x, out: fit.adaptive_avg_pool2d(x, 2, out=out)),
    ("adaptive_avg_pool3d", lambda x, out: fit.adaptive_avg_pool3d(x[None], 2, out=out)),
    ("pairwise_sqdist", lambda x, out: fit.pairwise_sqdist(x[0, 0], x[1, 0], out=out)),
    ("pairwise_l2", lambda x, out: fit.pairwise_l2(x[0, 0], out=out)),
    ("lerp", lambda x, out: fit.lerp(x, x * 2, 0.5, out=out)),
    ("slerp", lambda x, out: fit.slerp(x, x.flip(0), 0.5, out=out)),
    ("warp_affine", lambda x, out: fit.warp_affine(x, torch.eye(2, 3), (4, 4), out=out)),
    ("warp_perspective", lambda x, out: fit.warp_perspective(x, torch.eye(3), (4, 4), out=out)),
    ("rotate", lambda x, out: fit.rotate(x, 30.0, out=out)),
]


def _neg_bit(t):
    return torch._neg_view(t)


def _conj_imag(t):
    return torch.complex(torch.zeros_like(t), t).conj().imag     # a negative-bit view


@pytest.mark.parametrize("name, call", OUT_CALLS)
@pytest.mark.parametrize("view", [_neg_bit, _conj_imag])
@pytest.mark.parametrize("grad", [False, True])
def test_out_with_the_negative_or_conjugate_bit_is_refused(name, call, view, grad):
    # its memory does not hold the values it shows: a result written there would be lost
    x = torch.rand(2, 3, 5, 5)
    out = view(torch.zeros(call(x, None).shape))
    assert out.is_neg()
    with torch.no_grad():
        with pytest.raises(TypeError, match=rf"^{name}: out must be a plain tensor; got a view "
                                            r"with torch's negative or conjugate bit set"):
            call(x.requires_grad_(grad), out)
    assert not out.any()


@pytest.mark.parametrize("name, call", OUT_CALLS)
@pytest.mark.parametrize("no_grad", [False, True])
def test_out_that_requires_grad_is_refused(name, call, no_grad):
    x = torch.rand(2, 3, 5, 5)
    out = torch.zeros(call(x, None).shape, requires_grad=True)
    with torch.set_grad_enabled(not no_grad):
        with pytest.raises(TypeError, match=rf"^{name}: out must not require grad .* pass "
                                            r"out\.detach\(\)"):
            call(x, out)
    assert not out.detach().any()


@pytest.mark.parametrize("name, call", OUT_CALLS)
def test_out_written_in_place_is_seen_by_autograd(name, call):
    """out= is written through a NumPy view: autograd did not see it, so a graph that had
    saved out's old values used the new ones silently (a wrong gradient) where torch's
    own out= ops make backward raise."""
    x = torch.rand(2, 3, 5, 5)
    out = torch.ones(call(x, None).shape)
    assert_autograd_sees_write(torch, out, lambda: call(x, out))


@pytest.mark.parametrize("name, call", OUT_CALLS)
def test_out_that_is_an_inference_tensor_is_written_in_inference_mode_only(name, call):
    x = torch.rand(2, 3, 5, 5)
    with torch.inference_mode():
        out = torch.zeros(call(x, None).shape)
    with pytest.raises(ValueError, match=rf"^{name}: out is an inference tensor"):
        call(x, out)
    assert not out.any()
    with torch.inference_mode():
        assert call(x, out) is out and out.any()


_HALF_WARPS = [
    ("warp_affine", lambda x, out: fit.warp_affine(x, torch.eye(2, 3), (4, 4), out=out)),
    ("warp_perspective", lambda x, out: fit.warp_perspective(x, torch.eye(3), (4, 4), out=out)),
    ("rotate", lambda x, out: fit.rotate(x, 30.0, out=out)),
]


@pytest.mark.parametrize("name, call", _HALF_WARPS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_warps_check_out_as_the_float_ones_do(name, call, dtype):
    """A half-precision warp is computed in float32 and rounded into out: out was never
    checked (an int64 out was cast into, a broadcastable shape filled, a strided or
    overlapping one written)."""
    x = torch.rand(2, 3, 5, 5).to(dtype)
    shape = tuple(call(x, None).shape)
    bad = [(torch.zeros(shape, dtype=torch.int64), TypeError,
            rf"^{name}: out must have dtype {str(dtype)[6:]}; got int64"),
           (torch.zeros((4,) + shape, dtype=dtype), ValueError, rf"^{name}: out must have shape"),
           (torch.zeros(shape[:-1] + (2 * shape[-1],), dtype=dtype)[..., ::2], ValueError,
            rf"^{name}: out must be C-contiguous"),
           (x.view(-1)[:math.prod(shape)].view(shape), ValueError,
            rf"^{name}: out must not share memory with img")]
    for out, error, message in bad:
        before = out.clone()
        with pytest.raises(error, match=message):
            call(x, out)
        assert torch.equal(out, before)
    out = torch.empty(shape, dtype=dtype)
    assert call(x, out) is out and torch.equal(out, call(x, None))


@pytest.mark.parametrize("name, call", OUT_CALLS)
def test_out_must_be_a_tensor(name, call):
    x = torch.rand(2, 3, 5, 5)
    out = np.zeros(tuple(call(x, None).shape), np.float32)
    with pytest.raises(TypeError, match=rf"^{name}: out must be a torch tensor; got "
                                        r"numpy\.ndarray\."):
        call(x, out)
    assert not out.any()


# every op with a NumPy array argument, as (call(*arrays), arrays): each array is given
# once as a NumPy array and the others as tensors (requiring grad where floating)
def _numpy_cases():
    r = _rng(41)

    def f64(*shape):
        return r.standard_normal(shape)
    grid = r.uniform(-1, 1, (2, 4, 3, 2))
    return [
        (lambda x, g: fit.grid_sample(x, g), (f64(2, 3, 5, 5), grid)),
        (lambda th: fit.affine_grid(th, (2, 1, 3, 4)), (f64(2, 2, 3),)),
        (lambda x: fit.resize(x, (4, 6)), (f64(2, 3, 5, 5),)),
        (lambda x: fit.interpolate(x, (4, 6), mode="bicubic"), (f64(2, 3, 5, 5),)),
        (lambda x: fit.adaptive_avg_pool1d(x, 2), (f64(2, 3, 5),)),
        (lambda x: fit.adaptive_avg_pool2d(x, 2), (f64(2, 3, 5, 5),)),
        (lambda x: fit.adaptive_avg_pool3d(x, 2), (f64(2, 3, 4, 5, 5),)),
        (lambda x, y: fit.pairwise_sqdist(x, y), (f64(3, 2), f64(4, 2))),
        (lambda x, y: fit.pairwise_l2(x, y), (f64(3, 2), f64(4, 2))),
        (lambda a, b, t: fit.lerp(a, b, t), (f64(3, 4), f64(3, 4), f64(4))),
        (lambda a, b, t: fit.slerp(a, b, t), (f64(3, 4), f64(3, 4), r.uniform(0, 1, 3))),
        (lambda x, M: fit.warp_affine(x, M, (4, 4)), (f64(2, 3, 5, 5), np.eye(2, 3) * 0.9)),
        (lambda x, M: fit.warp_perspective(x, M, (4, 4)), (f64(2, 3, 5, 5), np.eye(3))),
        (lambda x: fit.rotate(x, 30.0), (f64(2, 3, 5, 5),)),
    ]


@pytest.mark.parametrize("case", range(len(_numpy_cases())))
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("form", ["numpy", "list", "negative strides"])
def test_numpy_array_arguments_are_read_as_tensors(case, grad, form):
    """One rule for every op: a NumPy array argument, or nested lists of numbers, is read as
    the NumPy API reads it and converted to a tensor on the device of the tensor arguments
    (it gets no gradient), with or without autograd."""
    call, arrays = _numpy_cases()[case]
    ref = [_t(a, True) for a in arrays]
    want = call(*ref)
    want.sum().backward()
    want_grads = [r.grad for r in ref]
    given = {"numpy": arrays, "list": [a.tolist() for a in arrays],
             "negative strides": [a[::-1].copy()[::-1] for a in arrays]}[form]
    for i in range(len(arrays)):
        args = [given[i] if j == i else _t(a, grad) for j, a in enumerate(arrays)]
        y = call(*args)
        assert isinstance(y, torch.Tensor) and y.requires_grad == (grad and len(arrays) > 1)
        np.testing.assert_array_equal(y.detach().numpy(), want.detach().numpy())
        if y.requires_grad:
            y.sum().backward()
            for j, a in enumerate(args):
                if j != i:
                    np.testing.assert_allclose(a.grad.numpy(), want_grads[j].numpy(),
                                               rtol=1e-12, atol=1e-12)
    y = call(*given)                                                # no tensor at all
    assert isinstance(y, torch.Tensor)
    np.testing.assert_array_equal(y.numpy(), want.detach().numpy())


def test_read_only_numpy_arrays_are_read_without_a_warning():
    a = np.ones((2, 3))
    a.flags.writeable = False
    b = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fit.lerp(a, b, 0.25)
    y.sum().backward()
    np.testing.assert_array_equal(y.detach().numpy(), np.full((2, 3), 0.75))
    assert torch.equal(b.grad, torch.full((2, 3), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("call, error, message", [
    (lambda x: fit.grid_sample(x, torch.zeros(2, 3, 3, 3)), ValueError,
     "grid_sample: grid must have shape (N, H_out, W_out, 2); got (2, 3, 3, 3)."),
    (lambda x: fit.grid_sample(x, torch.zeros(2, 3, 3, 2), mode="area"), ValueError,
     "grid_sample: mode must be one of"),
    (lambda x: fit.resize(x, 4, mode="linear"), ValueError, "resize: mode must be one of"),
    (lambda x: fit.resize(x, 4, scale_factor=2.0), ValueError,
     "resize: size and scale_factor must not both be given"),
    (lambda x: fit.resize(x), ValueError, "resize: size or scale_factor must be given"),
    (lambda x: fit.adaptive_avg_pool2d(x, (2, 2, 2)), ValueError,
     "adaptive_avg_pool2d: output_size must be an int or a pair (H, W); got (2, 2, 2)."),
    (lambda x: fit.affine_grid(x[0, :2, :, :3], (2, 1, 4)), ValueError,
     "affine_grid: size must be (N, C, H, W) or (N, C, D, H, W) of ints; got (2, 1, 4)."),
    (lambda x: fit.pairwise_sqdist(x[0, 0], x[0, 0, :, :2]), ValueError, "pairwise_sqdist: y"),
    (lambda x: fit.lerp(x, x.double(), 0.5), TypeError, "lerp: b must have the same dtype"),
    (lambda x: fit.slerp(x, x, 0.5, axis=4), ValueError, "slerp: axis must be an int in"),
    (lambda x: fit.grid_sample(x.detach().int(), torch.zeros(2, 1, 1, 2)),
     TypeError, "grid_sample: input must have dtype float32 or float64"),
    (lambda x: fit.grid_sample(x, torch.zeros(2, 1, 1, 2), padding_mode="constant", fill=[1, 2]),
     ValueError, "grid_sample: fill must be a scalar"),
    (lambda x: fit.resize(x, 3, layout="HWC"), ValueError,
     "resize: input must have shape (H, W, C) for layout='HWC'"),
    (lambda x: fit.warp_affine(x, torch.eye(3), (4, 4)), ValueError, "warp_affine: M must"),
    (lambda x: fit.warp_affine(x, torch.eye(2, 3, dtype=torch.complex64), (4, 4)), TypeError,
     "warp_affine: M must hold real numbers"),
    (lambda x: fit.warp_perspective(x, torch.eye(3, dtype=torch.bool), (4, 4)), TypeError,
     "warp_perspective: M must hold real numbers"),
    (lambda x: fit.warp_affine(x, torch.eye(2, 3), "ab"), TypeError,
     "warp_affine: dsize must be a sequence (H_out, W_out) of ints; got 'ab'."),
    (lambda x: fit.warp_affine(x, torch.eye(2, 3), (4, 4), mode="linear"), ValueError,
     "warp_affine: mode must be one of"),
    (lambda x: fit.rotate(x, float("inf")), ValueError, "rotate: angle must be finite; got inf."),
    (lambda x: fit.rotate(x, 30, scale=None), TypeError, "rotate: scale must be a real number"),
    (lambda x: fit.rotate(x, 30, center=3), TypeError, "rotate: center must be a pair (x, y)"),
    # rotate's checks name rotate, not the warp_affine that computes it
    (lambda x: fit.rotate(x, 30, mode="foo"), ValueError, "rotate: mode must be one of"),
    (lambda x: fit.rotate(x, 30, padding_mode="foo"), ValueError,
     "rotate: padding_mode must be one of"),
    (lambda x: fit.rotate(x, 30, padding_mode="constant", fill=[1, 2]), ValueError,
     "rotate: fill must be a scalar or have shape (C,) = (3,)"),
    (lambda x: fit.slerp(x[0, 0, 0, 0], x[0, 0, 0, 1].detach(), 0.5), ValueError,
     "slerp: a must have at least one axis (the vectors); got shape ()."),
    (lambda x: fit.affine_grid(x[0, :2, :, :3], ("2", 1, 4, 4)), TypeError,
     "affine_grid: size must be a sequence"),
    (lambda x: fit.adaptive_avg_pool3d(x[0], 2), ValueError,
     "adaptive_avg_pool3d: input must have shape (N, C, D, H, W)"),
    # numbers and arrays that are not tensors: read as the NumPy API reads them
    (lambda x: fit.lerp(x, x, 1e300), ValueError, "lerp: t must be representable in float32"),
    (lambda x: fit.lerp(x, x, 10**400), ValueError, "lerp: t must be representable in float32"),
    (lambda x: fit.lerp(x, 1e300, 0.5), ValueError, "lerp: b must be representable in float32"),
    (lambda x: fit.lerp(x, x, True), TypeError, "lerp: t must be a real number or an array"),
    (lambda x: fit.lerp(x, x, None), TypeError, "lerp: t must be a real number or an array"),
    (lambda x: fit.lerp(x, x, np.bool_(True)), TypeError, "lerp: t must be a real number"),
    (lambda x: fit.lerp(x, x, [[0.1], [0.1, 0.2]]), ValueError,
     "lerp: t must be a rectangular array; got a list NumPy cannot read as one"),
    (lambda x: fit.lerp(x, x, [0.1, 1j]), TypeError,
     "lerp: t must be a real number or an array of reals (NumPy, CuPy, a DLPack tensor, or a "
     "list of numbers); got list [0.1, 1j]."),
    (lambda x: fit.slerp(x, x, ["a"]), TypeError,
     "slerp: t must be a real number or an array of reals (NumPy, CuPy, a DLPack tensor, "
     "or a list of numbers); got list ['a']."),
    (lambda x: fit.slerp([["a"] * 5], x[0, 0], 0.3), TypeError,
     "slerp: a must be a real number or an array of reals (NumPy, CuPy, a DLPack tensor, "
     "or a list of numbers); got list [['a', "),
    (lambda x: fit.adaptive_avg_pool2d("abc", 2), TypeError,
     "adaptive_avg_pool2d: input must be a real number or an array of reals (NumPy, CuPy, "
     "a DLPack tensor, or a list of numbers); got str 'abc'."),
    (lambda x: fit.adaptive_avg_pool1d(1.5, 2), TypeError,
     "adaptive_avg_pool1d: input must be an array; got float."),
    (lambda x: fit.adaptive_avg_pool1d(x[0, 0, 0], 2), ValueError,
     "adaptive_avg_pool1d: input must have shape (N, C, L) or, one item, (C, L); got (5,)."),
    (lambda x: fit.adaptive_avg_pool3d(x[0], 2), ValueError,
     "adaptive_avg_pool3d: input must have shape (N, C, D, H, W) or, one item, (C, D, H, W); "
     "got (3, 5, 5)."),
    (lambda x: fit.interpolate(x[0].to(torch.uint8), size=4), ValueError,
     "resize: a 3-D uint8 input needs layout='CHW' (channels first) or layout='HWC'"),
    (lambda x: fit.adaptive_avg_pool3d(b"x", 2), TypeError,
     "adaptive_avg_pool3d: input must be a real number or an array of reals (NumPy, CuPy, "
     "a DLPack tensor, or a list of numbers); got bytes b'x'."),
    (lambda x: fit.slerp(x, x, 1e300), ValueError, "slerp: t must be representable in float32"),
    (lambda x: fit.grid_sample(x, torch.zeros(2, 1, 1, 2), padding_mode="constant",
                               fill=10**400), ValueError, "grid_sample: fill must be representable"),
    # checks the gradient path makes itself (the custom op's schema) come after the API's
    (lambda x: fit.resize(x[0], size=(3, 3)), ValueError,
     "resize: a 3-D input without layout= is 1-D data (N, C, L)"),
    (lambda x: fit.resize(x, scale_factor=1e12), ValueError,
     "resize: scale_factor must give an output of at most 2**31 - 1 pixels along each axis; "
     "got scale_factor=1000000000000.0, an axis"),
])
@pytest.mark.parametrize("grad", [False, True])
def test_argument_errors_are_the_numpy_apis(call, error, message, grad):
    x = torch.rand(2, 3, 5, 5, requires_grad=grad)
    with pytest.raises(error) as info:
        call(x)
    assert str(info.value).startswith(message), str(info.value)


_META = dict(device="meta")


@pytest.mark.parametrize("call", [
    lambda m: fit.grid_sample(torch.rand(1, 1, 5, 6), torch.empty(1, 3, 4, 2, **m)),
    lambda m: fit.lerp(torch.zeros(4), torch.ones(4), torch.empty(4, **m)),
    lambda m: fit.slerp(torch.eye(3), torch.eye(3).flip(0), torch.empty(3, **m)),
    lambda m: fit.warp_affine(torch.rand(1, 1, 5, 6), torch.empty(2, 3, **m), (4, 4)),
    lambda m: fit.pairwise_sqdist(torch.rand(3, 2), torch.empty(4, 2, **m)),
    lambda m: fit.grid_sample(torch.rand(1, 1, 5, 6), torch.zeros(1, 3, 4, 2),
                              padding_mode="constant", fill=torch.empty(1, **m)),
])
def test_meta_tensors_beside_real_ones_are_refused(call):
    """torch's dispatcher ran the fake kernel for a CPU tensor beside a meta one and its
    uninitialised output came back as the result (values changing from run to run)."""
    with pytest.raises(TypeError, match=r"meta tensor"):
        call(_META)


def test_meta_tensors_alone_still_propagate_shapes():
    y = fit.grid_sample(torch.empty(2, 3, 5, 6, **_META), torch.empty(2, 4, 4, 2, **_META),
                        align_corners=False)
    assert y.is_meta and tuple(y.shape) == (2, 3, 4, 4)
    assert tuple(fit.affine_grid(torch.empty(1, 2, 3, **_META), (1, 1, 3, 3),
                                 align_corners=False).shape) == (1, 3, 3, 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_take_a_number_weight_in_float32_with_or_without_grad(dtype):
    # the weight is not rounded to the tensors' half dtype on the autograd path: the
    # NumPy API computes half storage in float32, t included
    rng = _rng(40)
    a = torch.from_numpy(rng.standard_normal((3, 50)).astype(np.float32) * 50).to(dtype)
    b = torch.from_numpy(rng.standard_normal((3, 50)).astype(np.float32) * 50).to(dtype)
    for t in (0.3, 0.7, 1 / 3):
        want = fit.lerp(a, b, t)     # the no-grad call (equal to torch's, rounding aside)
        torch.testing.assert_close(want.float(), torch.lerp(a.float(), b.float(), t).to(dtype)
                                   .float(), rtol=1e-2, atol=1e-2)
        for grad in ((True, False), (False, True)):
            ag, bg = a.clone().requires_grad_(grad[0]), b.clone().requires_grad_(grad[1])
            assert torch.equal(fit.lerp(ag, bg, t).detach(), want)
            assert torch.equal(fit.slerp(ag, bg, t).detach(), fit.slerp(a, b, t))
        ag = a.clone().requires_grad_()
        fit.lerp(ag, b, t).sum().backward()
        assert torch.equal(ag.grad, torch.full_like(a, 1 - t))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("t", [0.3141592, "tensor", "half-tensor"])
def test_mixed_precision_lerp_gradients_are_computed_in_float32_rounded_once(dtype, t):
    """Each gradient is computed in float32 and rounded once, to its own input's dtype:
    a float32 input next to a half one gets an unrounded gradient."""
    rng = _rng(41)
    a = torch.from_numpy(rng.standard_normal(1000).astype(np.float32)).to(dtype)
    b = torch.from_numpy(rng.standard_normal(1000).astype(np.float32))
    go = torch.from_numpy(rng.standard_normal(1000).astype(np.float32)).to(dtype)
    if t == "tensor":
        t = torch.tensor(0.3141592).requires_grad_()
    elif t == "half-tensor":
        t = torch.tensor(0.3141592).to(dtype).requires_grad_()
    for a_, b_ in ((a, b), (b, a)):
        a_, b_ = a_.clone().requires_grad_(), b_.clone().requires_grad_()
        if isinstance(t, torch.Tensor):
            t.grad = None
        fit.lerp(a_, b_, t).backward(go)
        g, w = go.float(), (t.detach().float() if isinstance(t, torch.Tensor)
                            else torch.tensor(t, dtype=torch.float32))
        for x, want in ((a_, g * (1 - w)), (b_, g * w)):
            assert x.grad.dtype == x.dtype
            assert torch.equal(x.grad, want.to(x.dtype))
        if isinstance(t, torch.Tensor):
            want = (g * (b_.detach().float() - a_.detach().float())).sum()
            assert t.grad.dtype == t.dtype and torch.equal(t.grad, want.to(t.dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_gradients_equal_the_numpy_apis(dtype):
    """grid_sample and slerp with one half and one float32 input: each gradient is the
    NumPy API's (computed in float32, rounded once to its input's dtype)."""
    rng = _rng(42)
    x = rng.standard_normal((1, 2, 5, 4)).astype(np.float32)
    grid = rng.uniform(-1, 1, (1, 3, 3, 2)).astype(np.float32)
    for xdt, gdt in ((dtype, torch.float32), (torch.float32, dtype)):
        xt = torch.from_numpy(x).to(xdt).requires_grad_()
        gt = torch.from_numpy(grid).to(gdt).requires_grad_()
        y = fit.grid_sample(xt, gt, "bilinear", "border")
        go = torch.from_numpy(rng.standard_normal(tuple(y.shape)).astype(np.float32)).to(y.dtype)
        y.backward(go)
        gi, gg = fi.grid_sample_backward(go.float().numpy(), xt.detach().float().numpy(),
                                         gt.detach().float().numpy(), "bilinear", "border")
        assert xt.grad.dtype == xdt and gt.grad.dtype == gdt
        assert torch.equal(xt.grad, torch.from_numpy(gi).to(xdt))
        assert torch.equal(gt.grad, torch.from_numpy(gg).to(gdt))
    a = rng.standard_normal((5, 3)).astype(np.float32)
    b = rng.standard_normal((5, 3)).astype(np.float32)
    for adt, bdt in ((dtype, torch.float32), (torch.float32, dtype)):
        at = torch.from_numpy(a).to(adt).requires_grad_()
        bt = torch.from_numpy(b).to(bdt).requires_grad_()
        tt = torch.tensor(0.3141592, requires_grad=True)
        y = fit.slerp(at, bt, tt)
        go = torch.from_numpy(rng.standard_normal((5, 3)).astype(np.float32)).to(y.dtype)
        y.backward(go)
        ga, gb, gw = fi.slerp_backward(go.float().numpy(), at.detach().float().numpy(),
                                       bt.detach().float().numpy(), np.float32(0.3141592))
        assert torch.equal(at.grad, torch.from_numpy(ga).to(adt))
        assert torch.equal(bt.grad, torch.from_numpy(gb).to(bdt))
        assert torch.equal(tt.grad, torch.tensor(float(gw), dtype=torch.float32))


# --------------------------------------------------------------------------- the STN demo

@pytest.mark.parametrize("argv, words", [
    (["--out", ""], "expected a file name"),
    (["--out", "{tmp}"], "(a folder)"),
    (["--epochs", "0"], "must be at least 1; got 0"),
    (["--copies", "-1"], "must be at least 1; got -1"),
])
def test_stn_example_refuses_bad_arguments_before_training(tmp_path, monkeypatch, capsys, argv,
                                                           words):
    """--out DIR wrote DIR.png beside the folder and printed DIR; --out '' wrote ./.png;
    --epochs 0 trained nothing and printed nan timings."""
    import pathlib
    import runpy
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "stn_digits.py"
    monkeypatch.chdir(tmp_path)
    main = runpy.run_path(str(path))["main"]
    with pytest.raises(SystemExit) as info:
        main([a.format(tmp=tmp_path) for a in argv])
    assert info.value.code == 2 and words in capsys.readouterr().err
    assert not list(tmp_path.iterdir()) and not tmp_path.with_suffix(".png").exists()


def test_stn_demo_trains_both_samplers_and_draws(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from fastinterp.demos import stn
    lines = stn.run(tmp_path, quick=True)
    assert (tmp_path / "stn_digits.png").stat().st_size > 1000
    text = "\n".join(lines)
    assert "fastinterp.torch sampler" in text and "torch sampler" in text and "ms" in text
    # same seed: the two models start from the same weights
    a, b = stn.make_model("fastinterp", 3), stn.make_model("torch", 3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    x = torch.from_numpy(stn.distorted_digits(1, 0)[2][:8])
    with torch.no_grad():
        np.testing.assert_allclose(a(x).numpy(), b(x).numpy(), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- CUDA

@CUDA
def test_cuda_tensors_match_the_cpu():
    rng = _rng(22)
    x = _t(rng.standard_normal((2, 3, 6, 5)).astype(np.float32), True)
    theta = _t(rotations(rng, 2, np.float32), True)
    pts = _t(rng.standard_normal((6, 3)).astype(np.float32), True)

    def f(x, theta, pts):
        y = fit.grid_sample(x, fit.affine_grid(theta, (2, 3, 4, 4)))
        y = fit.resize(y, (5, 3), mode="bicubic") + fit.adaptive_avg_pool2d(y, (5, 3))
        return y.square().sum() + fit.pairwise_sqdist(pts).sum() + fit.lerp(pts, pts * 2, 0.3).sum()

    want, want_grads = grads_of(lambda *a: f(*a)[None], [x, theta, pts])
    dev = [v.detach().cuda().requires_grad_() for v in (x, theta, pts)]
    got = f(*dev)
    got.backward()
    assert got.device.type == "cuda"
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-4)
    for g, w in zip(dev, want_grads):
        assert g.grad.device.type == "cuda"
        np.testing.assert_allclose(g.grad.cpu().numpy(), w.numpy(), rtol=1e-4, atol=1e-4)


def test_backward_saves_only_the_values_it_reads():
    """As torch's own ops: pairwise_sqdist's result, and lerp's operands whose values no
    needed gradient reads, may be changed in place before the backward."""
    x, y = torch.randn(4, 3, requires_grad=True), torch.randn(5, 3)
    d = fit.pairwise_sqdist(x, y)
    d.add_(1)
    d.sum().backward()
    xr = x.detach().clone().requires_grad_()
    (torch.cdist(xr, y) ** 2).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-5, atol=1e-5)
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3)
    grads = []
    for lerp in (fit.lerp, torch.lerp):
        a.grad = None
        aa = a * 1
        out = lerp(aa, b, 0.3)
        aa.mul_(2)                        # a's value is not needed: t is not learned
        out.backward(torch.arange(3.0))
        grads.append(a.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    t = torch.tensor(0.3, requires_grad=True)
    aa = a.detach() * 1
    out = fit.lerp(aa, b, t)
    aa.mul_(2)                            # t's gradient reads a: torch refuses this too
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_compiled_lerp_backward_of_a_channels_last_or_transposed_gradient():
    """lerp's backward kept the incoming gradient's strides while its fake kernel said
    contiguous: compiled code failed torch's stride check ('incorrect fake kernel')."""
    conv = torch.nn.Conv2d(3, 3, 3).to(memory_format=torch.channels_last)
    a = torch.rand(2, 3, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    b = torch.rand(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    torch.compile(lambda a, b: conv(fit.lerp(a, b, 0.3)).sum(), fullgraph=True)(a, b).backward()
    want = a.detach().clone().requires_grad_()
    conv(torch.lerp(want, b, 0.3)).sum().backward()
    torch.testing.assert_close(a.grad, want.grad)
    p = torch.rand(4, 3, requires_grad=True)
    t, w = torch.rand(4, 1), torch.rand(3, 4)
    torch.compile(lambda p: (fit.lerp(p * 2, torch.ones(4, 3), t).t() * w).sum(),
                  fullgraph=True)(p).backward()
    torch.testing.assert_close(p.grad, (2 * (1 - t) * w.t()).expand(4, 3))


_TRANSFORM_CALLS = {
    "lerp": lambda x: fit.lerp(x, x * 2, 0.25),
    "resize": lambda x: fit.resize(x, size=(2, 3)),
    "grid_sample": lambda x: fit.grid_sample(x, torch.zeros(1, 2, 2, 2, dtype=x.dtype)),
    "pairwise_sqdist": lambda x: fit.pairwise_sqdist(x[0, 0]),
}


@pytest.mark.parametrize("name", list(_TRANSFORM_CALLS))
def test_forward_mode_ad_is_a_clear_error_naming_the_op(name):
    """Forward-mode AD (torch.func.jvp/jacfwd, torch.autograd.forward_ad) dropped the
    tangents: derivatives of exactly 0, silently."""
    call = _TRANSFORM_CALLS[name]
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=rf"^{name}: forward-mode"):
        torch.func.jvp(call, (x,), (torch.ones_like(x),))
    with pytest.raises(TypeError, match=rf"^{name}: forward-mode"):
        torch.func.jacfwd(call)(x)
    fwad = torch.autograd.forward_ad
    with fwad.dual_level(), pytest.raises(TypeError, match=rf"^{name}: forward-mode"):
        call(fwad.make_dual(x, torch.ones_like(x)))


@pytest.mark.parametrize("name", list(_TRANSFORM_CALLS))
def test_forward_mode_ad_inside_torch_compile_is_a_clear_error(name):
    """Inside a compiled function the tangents are invisible to the op (Dynamo traces fake
    tensors): the op's tangent was dropped silently (only the other terms' remained)."""
    call = _TRANSFORM_CALLS[name]
    fwad = torch.autograd.forward_ad

    def tangent(x, v):
        with fwad.dual_level():
            d = fwad.make_dual(x, v)
            return fwad.unpack_dual(call(d).sum() + d.sum()).tangent
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    torch._dynamo.reset()
    with pytest.raises(TypeError, match=rf"{name}: forward-mode"):
        torch.compile(tangent)(x, torch.ones_like(x))


_BY_VALUE_CALLS = {      # arguments read as numbers: a transform would see a derivative of 0
    "rotate angle": ("rotate", lambda a: fit.rotate(torch.rand(1, 1, 4, 5, dtype=a.dtype), a)),
    "rotate scale": ("rotate", lambda s: fit.rotate(torch.rand(1, 1, 4, 5, dtype=s.dtype), 30,
                                                    scale=s)),
    "rotate center": ("rotate", lambda c: fit.rotate(torch.rand(1, 1, 4, 5, dtype=c.dtype), 30,
                                                     center=(c, c))),
    "grid_sample fill": ("grid_sample", lambda f: fit.grid_sample(
        torch.rand(1, 1, 3, 3, dtype=f.dtype), torch.full((1, 2, 2, 2), 3.0, dtype=f.dtype),
        padding_mode="constant", fill=f)),
    "warp_affine fill": ("warp_affine", lambda f: fit.warp_affine(
        torch.rand(1, 1, 3, 3, dtype=f.dtype), torch.eye(2, 3, dtype=f.dtype) * 9, (2, 2),
        padding_mode="constant", fill=f)),
}


@pytest.mark.parametrize("case", list(_BY_VALUE_CALLS))
def test_transforms_of_arguments_read_as_numbers_are_a_clear_error(case):
    """torch.func.grad / jacfwd / jvp with respect to rotate's angle (scale, centre) or a
    fill returned a derivative of exactly 0 (finite differences: -0.066 for the angle)."""
    name, call = _BY_VALUE_CALLS[case]
    v = torch.tensor(1.5, dtype=torch.float64)
    with pytest.raises(TypeError, match=rf"^{name}: torch\.func"):
        torch.func.grad(lambda v: call(v).sum())(v)
    with pytest.raises(TypeError, match=rf"^{name}: forward-mode"):
        torch.func.jvp(lambda v: call(v), (v,), (torch.ones_like(v),))
    fwad = torch.autograd.forward_ad
    with fwad.dual_level(), pytest.raises(TypeError, match=rf"^{name}: forward-mode"):
        call(fwad.make_dual(v, torch.ones_like(v)))
    assert call(v.clone().requires_grad_()).shape[0] == 1    # plain autograd: a number


@pytest.mark.parametrize("name", list(_TRANSFORM_CALLS))
def test_torch_func_reverse_transforms_are_a_clear_error_naming_the_op(name):
    call = _TRANSFORM_CALLS[name]
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=rf"^{name}: torch\.func"):
        torch.func.grad(lambda x: call(x).sum())(x)
    with pytest.raises(TypeError, match=rf"^{name}: torch\.func"):
        torch.func.jacrev(call)(x)
    with pytest.raises(TypeError, match=rf"^{name}: torch\.func"):
        torch.vmap(torch.func.grad(lambda x: call(x).sum()))(x[None].expand(2, -1, -1, -1, -1))


@pytest.mark.parametrize("name", list(_TRANSFORM_CALLS))
def test_transforms_of_other_variables_take_the_op_on_constant_data(name):
    """Under torch.func.grad or jvp, an op whose inputs do not depend on the variable (data
    resized, the parameters differentiated) runs as it did: only an argument wrapped at a
    grad or jvp level is refused."""
    call = _TRANSFORM_CALLS[name]
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    w = torch.rand(()).double()
    got = torch.func.grad(lambda w: (call(x) * w).sum())(w)
    torch.testing.assert_close(got, call(x).sum())
    _, tangent = torch.func.jvp(lambda w: (call(x) * w).sum(), (w,), (torch.ones(()).double(),))
    torch.testing.assert_close(tangent, call(x).sum())



@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("name", list(_TRANSFORM_CALLS))
def test_an_op_under_no_grad_inside_torch_func_grad_runs(name, mode):
    """A constant target built under no_grad (or inference_mode) inside a function given to
    torch.func.grad was refused as if it were differentiated: nothing is recorded there,
    as with torch's own ops."""
    call = _TRANSFORM_CALLS[name]
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    if name == "pairwise_sqdist":       # (torch cannot take a view of x in inference mode)
        call, x = fit.pairwise_sqdist, x[0, 0]

    def loss(x):
        with getattr(torch, mode)():
            target = call(x)
        return x.sum() * target.sum()

    torch.testing.assert_close(torch.func.grad(loss)(x), torch.full_like(x, call(x).sum()))


# ops whose backward op serves several public ops too (the error names the caller's)
_BATCHED_GRAD_CALLS = {
    **_TRANSFORM_CALLS,
    "adaptive_avg_pool2d": lambda x: fit.adaptive_avg_pool2d(x, 2),
    "adaptive_avg_pool1d": lambda x: fit.adaptive_avg_pool1d(x[0], 2),
    "adaptive_avg_pool3d": lambda x: fit.adaptive_avg_pool3d(x[None], 2),
    "warp_affine": lambda x: fit.warp_affine(x, torch.eye(2, 3), (2, 2)),
    "warp_perspective": lambda x: fit.warp_perspective(x, torch.eye(3), (2, 2)),
    "rotate": lambda x: fit.rotate(x, 10.0),
}


@pytest.mark.parametrize("name", list(_BATCHED_GRAD_CALLS))
def test_batched_gradients_are_a_clear_error_naming_the_op(name):
    """is_grads_batched (and jacobian(vectorize=True)) runs the backward on a batched
    gradient: 'Batching rule not implemented for aten::detach' named no op (and then the
    internal one shared by several: 'adaptive_avg_pool', 'warp'). lerp's backward is
    made of torch ops and takes it."""
    call = _BATCHED_GRAD_CALLS[name]
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    y = call(x)
    gs = torch.randn(3, *y.shape, dtype=torch.float64)
    if name != "lerp":
        with pytest.raises(TypeError, match=rf"^{name}: batched gradients"):
            torch.autograd.grad(y, x, gs, is_grads_batched=True, retain_graph=True)
        with pytest.raises(TypeError, match=rf"^{name}: batched gradients"):
            torch.autograd.functional.jacobian(call, x.detach(), vectorize=True)
        return
    (got,) = torch.autograd.grad(y, x, gs, is_grads_batched=True, retain_graph=True)
    for g, row in zip(gs, got):
        (want,) = torch.autograd.grad(y, x, g, retain_graph=True)
        torch.testing.assert_close(row, want)


def test_jit_trace_records_the_op_not_its_output():
    """Traced without an input requiring grad, the eager shortcut ran on NumPy views and
    the tracer kept the output as a constant: the traced function returned the traced
    input's result for every later input."""
    x, x2 = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(lambda v: fit.resize(v, size=(4, 4)), (x,))
        lerped = torch.jit.trace(lambda a, b: fit.lerp(a, b, 0.25), (x, x2))
    assert torch.equal(traced(x2), fit.resize(x2, size=(4, 4)))
    assert "fastinterp::resize" in str(traced.graph)
    assert torch.equal(lerped(x2, x), fit.lerp(x2, x, 0.25))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lerp_of_a_number_and_a_half_tensor_is_half_with_or_without_grad(dtype):
    """A number a was made a float32 tensor: with autograd, compiled or vmapped, the
    result came back float32 (half without autograd)."""
    b = torch.rand(6).to(dtype)
    want = fit.lerp(0.1, b, 0.3)
    grad_b = b.clone().requires_grad_()
    got = fit.lerp(0.1, grad_b, 0.3)
    got.float().sum().backward()
    assert want.dtype == got.dtype == grad_b.grad.dtype == dtype
    assert torch.equal(got.detach(), want)
    compiled = torch.compile(lambda v: fit.lerp(0.1, v, 0.3), fullgraph=True)(b)
    assert compiled.dtype == dtype and torch.equal(compiled, want)


def test_out_compiles_without_a_graph_break():
    """_check_out read out.is_neg(), which Dynamo cannot trace: fullgraph=True failed."""
    x, out = torch.rand(2, 3, 6, 7), torch.empty(2, 3, 3, 3)
    got = torch.compile(lambda v, o: fit.resize(v, size=(3, 3), out=o), fullgraph=True)(x, out)
    assert got.data_ptr() == out.data_ptr()
    assert torch.equal(out, fit.resize(x, size=(3, 3)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("weight_dtype", [torch.float16, torch.bfloat16, torch.float32,
                                          torch.float64])
@pytest.mark.parametrize("grad", [False, True])
def test_lerp_reads_a_zero_dim_weight_tensor_as_torch_lerp_does(dtype, weight_dtype, grad):
    """A 0-dim weight of another float dtype is cast to the operands' dtype (torch's
    promotion: 0-dim tensors do not promote dimensioned ones): float64 next to float32
    was a TypeError, and a float32 weight next to half operands was not rounded to half."""
    rng = _rng(23)
    a = torch.from_numpy(rng.standard_normal(40)).to(dtype)
    b = torch.from_numpy(rng.standard_normal(40) * 100).to(dtype)
    w = torch.tensor(0.3, dtype=weight_dtype, requires_grad=grad)
    want, got = torch.lerp(a, b, w), fit.lerp(a, b, w)
    # the weight in the operands' dtype, bit for bit; torch's own values to its rounding
    # (a build without FMA contraction rounds the last bit differently)
    assert got.dtype == want.dtype
    assert torch.equal(got, fit.lerp(a, b, w.detach().to(dtype)))
    tol = torch.finfo(dtype).eps
    torch.testing.assert_close(got, want, rtol=2 * tol, atol=2 * tol)
    if grad:
        (gw,) = torch.autograd.grad(want.sum(), w)
        (gg,) = torch.autograd.grad(got.sum(), w)
        assert gg.dtype == weight_dtype
        torch.testing.assert_close(gg.double(), gw.double(), rtol=1e-2, atol=0)


@pytest.mark.parametrize("which", [(True, False, False), (False, True, False),
                                   (False, False, True), (True, True, True)])
def test_slerp_backward_computes_the_gradients_asked_for(which, monkeypatch):
    """slerp's backward computed grad_a, grad_b and grad_t whatever was asked (a t-only
    gradient paid for two (rows, D) gradients it threw away)."""
    rng = _rng(24)
    a, b = (_t(rng.standard_normal((30, 5)), w) for w in which[:2])
    t = _t(rng.uniform(0, 1, 30), which[2])
    seen = []
    real = fi.slerp_backward
    monkeypatch.setattr(fi, "slerp_backward", lambda *p, **k: seen.append(
        (k["needs_ab_grad"], k["needs_t_grad"])) or real(*p, **k))
    fit.slerp(a, b, t).sum().backward()
    assert seen == [(which[0] or which[1], which[2])]
    want = real(np.ones((30, 5)), a.detach().numpy(), b.detach().numpy(), t.detach().numpy())
    for x, w, need in zip((a, b, t), want, which):
        assert (x.grad is not None) == need
        if need:
            np.testing.assert_array_equal(x.grad.numpy(), w)


@pytest.mark.parametrize("op", ["pairwise_sqdist", "pairwise_l2"])
def test_distances_compute_only_the_gradients_the_pass_needs(op, monkeypatch):
    """``requires_grad`` on one operand, or ``torch.autograd.grad`` of one of two, asks
    the NumPy backward for that gradient only (its GEMM alone runs); values unchanged."""
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.standard_normal((2, 6, 4)), requires_grad=True)
    y = torch.tensor(rng.standard_normal((1, 5, 4)), requires_grad=True)
    backward = getattr(fi, op + "_backward")
    asked = []
    monkeypatch.setattr(fi, op + "_backward", lambda *a, **kw: asked.append(
        (kw["needs_x_grad"], kw["needs_y_grad"])) or backward(*a, **kw))
    w = torch.tensor(rng.standard_normal((2, 6, 5)))
    loss = lambda a, b: (getattr(fit, op)(a, b) * w).sum()
    gx_full, gy_full = torch.autograd.grad(loss(x, y), (x, y))
    (gx,) = torch.autograd.grad(loss(x, y), (x,))
    (gy,) = torch.autograd.grad(loss(x.detach(), y), (y,))
    loss(x, y).backward(inputs=[y])
    assert asked == [(True, True), (True, False), (False, True), (False, True)]
    assert torch.equal(gx, gx_full) and torch.equal(gy, gy_full) and torch.equal(y.grad, gy)
    assert x.grad is None



@pytest.mark.parametrize("fill, error", [("red", TypeError), (True, TypeError),
                                         ([1, "a"], TypeError), ({1: 2}, TypeError),
                                         (0.5, ValueError), ((0.5, 0.5), ValueError)])
@pytest.mark.parametrize("op", ["grid_sample", "rotate", "warp_affine"])
def test_a_bad_fill_with_other_padding_is_the_numpy_apis_error(op, fill, error):
    """With padding other than 'constant', the NumPy API said ValueError (fill does not
    apply) before looking at the fill, the torch frontend TypeError (not a number) for the
    same call; both now say TypeError for a fill that is no number, then ValueError."""
    x, g = np.zeros((1, 2, 4, 4), np.float32), np.zeros((1, 3, 3, 2), np.float32)
    calls = {"grid_sample": lambda api, x: api.grid_sample(x, _t(g) if api is fit else g,
                                                           fill=fill),
             "rotate": lambda api, x: api.rotate(x, 10.0, fill=fill),
             "warp_affine": lambda api, x: api.warp_affine(x, np.eye(2, 3, dtype=np.float32),
                                                           (4, 4), fill=fill)}
    for api, arr in ((fi, x), (fit, _t(x))):
        with pytest.raises(error, match=f"^{op}: fill"):
            calls[op](api, arr)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("compiled", [False, True])
def test_autocast_gives_torchs_dtypes(dtype, compiled):
    """Under torch.autocast, torch runs grid_sampler and cdist in float32 (a bf16 feature
    map gives a float32 result); fit's ops kept the half dtype (the distances refused it)."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 6, 7).to(dtype).requires_grad_()
    grid = (torch.rand(2, 4, 5, 2) * 2 - 1).to(dtype)
    emb = torch.rand(5, 8).to(dtype).requires_grad_()
    M = torch.tensor([[1.0, 0.1, 0.5], [0.0, 0.9, 0.2]])
    calls = {
        "grid_sample": (lambda: fit.grid_sample(x, grid),
                        lambda: F.grid_sample(x, grid, align_corners=False),
                        lambda: fit.grid_sample(x.float(), grid.float())),
        "pairwise_l2": (lambda: fit.pairwise_l2(emb, emb), lambda: torch.cdist(emb, emb),
                        lambda: fit.pairwise_l2(emb.float(), emb.float())),
        "pairwise_sqdist": (lambda: fit.pairwise_sqdist(emb), lambda: torch.cdist(emb, emb),
                            lambda: fit.pairwise_sqdist(emb.float())),
        "warp_affine": (lambda: fit.warp_affine(x, M, (4, 5)), None,
                        lambda: fit.warp_affine(x.float(), M, (4, 5))),
    }
    for name, (ours, peer, want) in calls.items():
        run = torch.compile(ours, fullgraph=True) if compiled else ours
        torch._dynamo.reset()
        with torch.autocast("cpu", dtype=dtype):
            got = run()
            assert got.dtype == torch.float32, name
            if peer is not None:
                assert peer().dtype == got.dtype, name
        torch.testing.assert_close(got, want(), rtol=0, atol=0)
        got.sum().backward()                         # back to the half-precision input
        leaf = emb if name.startswith("pairwise") else x
        assert leaf.grad.dtype == dtype
        leaf.grad = None


def test_grad_fn_names_the_op():
    """Anomaly mode and graph dumps name a node by its grad_fn class: every eager op's was
    'EagerOpBackward'."""
    x = torch.rand(1, 1, 3, 3, requires_grad=True)
    names = {type(fit.grid_sample(x, torch.zeros(1, 2, 2, 2)).grad_fn).__name__,
             type(fit.pairwise_l2(x[0, 0]).grad_fn).__name__,
             type(fit.lerp(x, x * 2, 0.5).grad_fn).__name__}
    assert names == {"FastinterpGridSampleBackward", "FastinterpPairwiseL2Backward",
                     "FastinterpLerpBackward"}
