"""Half-precision storage: float16 and bfloat16 arrays, computed in float32.

The contract (fastinterp._half, fastinterp._dispatch): half inputs are widened
to float32 exactly, the float32 kernels run, each result is rounded once (to
nearest even) to its storage dtype: the first array argument's dtype, or for
the backward ops the dtype of the primal whose gradient it is. Checked here:
the conversions bit for bit, that contract bit for bit, errors against a
float64 reference (at most torch's own half-precision CPU error on the same
data), mixed inputs, dtypes, ``out=``, threads and layouts.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastinterp as fi
from fastinterp import _half
from fastinterp.models import PolynomialRegression

ml_dtypes = pytest.importorskip("ml_dtypes")

F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16)
HALVES = (F16, BF16)
IDS = ("float16", "bfloat16")
UNIT = {F16: 2.0**-11, BF16: 2.0**-8}   # unit roundoff of the storage dtype
TINY = {F16: 2.0**-25, BF16: 0.0}       # half of float16's smallest subnormal


def _nan_equal_bits(got, expected):
    """Bit-identical where finite or infinite; NaN where NaN."""
    nan = np.isnan(expected.astype(np.float32))
    assert np.isnan(got[nan].astype(np.float32)).all()
    np.testing.assert_array_equal(got[~nan].view(np.uint16 if got.itemsize == 2 else np.uint32),
                                  expected[~nan].view(np.uint16 if got.itemsize == 2 else np.uint32))


# ------------------------------------------------------------------ conversions

def test_widen_is_exact_for_every_float16_pattern():
    bits = np.arange(2**16, dtype=np.uint16)
    for dt in HALVES:
        half = bits.view(dt)
        _nan_equal_bits(_half.widen(half), half.astype(np.float32))


def _float32_edge_bits(rng):
    """Random float32 patterns plus the neighbourhoods of every rounding boundary."""
    centres = [0x33000000, 0x33800000, 0x38800000, 0x387FC000, 0x477FE000, 0x477FF000,
               0x7F7FFFFF, 0x7F800000, 0x00800000, 0x3F800000]
    near = [np.arange(c - 600, c + 600, dtype=np.int64) for c in centres]
    exact16 = np.arange(2**16, dtype=np.uint16).view(F16).astype(np.float32).view(np.uint32)
    parts = [rng.integers(0, 2**32, 200_000, dtype=np.uint64), *near,
             exact16.astype(np.int64) + 0x1000, exact16.astype(np.int64)]
    u = np.concatenate([np.asarray(p, np.int64) & 0xFFFFFFFF for p in parts]).astype(np.uint32)
    signs = np.uint32(0x80000000) * rng.integers(0, 2, u.size, dtype=np.uint32)
    return (u | signs).view(np.float32)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_narrow_rounds_to_nearest_even_like_numpy_and_ml_dtypes(rng, dt):
    x = _float32_edge_bits(rng)
    with np.errstate(all="ignore"):
        expected = x.astype(dt)
    _nan_equal_bits(_half.narrow(x, dt), expected)
    out = np.empty(x.shape, dt)
    _half.narrow_into(out, x)
    _nan_equal_bits(out, expected)


@pytest.mark.parametrize("make", [
    lambda a: a, lambda a: a.transpose(0, 2, 3, 1), lambda a: a[:, :, ::2],
    lambda a: a[::-1], lambda a: a.T, lambda a: np.broadcast_to(a[:1], a.shape),
    lambda a: a[0, 0, 0, 0], lambda a: a[:0],
], ids=["c", "transposed", "gaps", "negative", "fortran", "zero-stride", "0d", "empty"])
def test_widen_and_narrow_any_layout(rng, make):
    base = rng.standard_normal((3, 4, 5, 6)).astype(F16)
    v = make(base)
    w = _half.widen(v)
    assert w.dtype == np.float32 and w.shape == v.shape
    np.testing.assert_array_equal(w, v.astype(np.float32))
    np.testing.assert_array_equal(_half.narrow(w, F16), v)


# ------------------------------------------------------------------ the ops

def _cases(rng):
    """name -> (call(*arrays), float inputs as float64 arrays, index of the first 'image')."""
    x = rng.standard_normal((2, 3, 7, 6))
    grid = rng.uniform(-1.15, 1.15, (2, 5, 4, 2))
    go = rng.standard_normal((2, 3, 5, 4))
    a, b = rng.standard_normal((6, 9)), rng.standard_normal((6, 9))
    t = rng.uniform(-0.2, 1.2, (6, 9))
    ts = rng.uniform(0, 1, 6)
    vol = rng.standard_normal((2, 3, 7, 6, 5))
    theta = rng.standard_normal((2, 2, 3))
    return {
        "grid_sample": (lambda x, g: fi.grid_sample(x, g, mode="bicubic", padding_mode="border"),
                        [x, grid]),
        "grid_sample_backward": (lambda go, x, g: fi.grid_sample_backward(go, x, g), [go, x, grid]),
        "resize": (lambda x: fi.resize(x, size=(9, 5), mode="bicubic"), [x]),
        "resize_backward": (lambda g: fi.resize_backward(g, (2, 3, 7, 6), mode="bilinear"), [go]),
        "adaptive_avg_pool2d": (lambda x: fi.adaptive_avg_pool2d(x, (3, 4)), [x]),
        "adaptive_avg_pool2d_backward":
            (lambda g: fi.adaptive_avg_pool2d_backward(g, (2, 3, 7, 6)), [go]),
        "adaptive_avg_pool1d": (lambda x: fi.adaptive_avg_pool1d(x, 4), [x[:, :, 0]]),
        "adaptive_avg_pool1d_backward":
            (lambda g: fi.adaptive_avg_pool1d_backward(g, (2, 3, 6)), [go[:, :, 0]]),
        "adaptive_avg_pool3d": (lambda v: fi.adaptive_avg_pool3d(v, (2, 4, 3)), [vol]),
        "adaptive_avg_pool3d_backward":
            (lambda g: fi.adaptive_avg_pool3d_backward(g, (2, 3, 7, 6, 5)),
             [vol[:, :, :2, :4, :3]]),
        "affine_grid": (lambda th: fi.affine_grid(th, (2, 3, 5, 4)), [theta]),
        "affine_grid_backward": (lambda g: fi.affine_grid_backward(g, (2, 3, 5, 4)), [grid]),
        "lerp": (lambda a, b, t: fi.lerp(a, b, t), [a, b, t]),
        "slerp": (lambda a, b, t: fi.slerp(a, b, t), [a, b, ts]),
        "slerp_backward": (lambda g, a, b, t: fi.slerp_backward(g, a, b, t), [a * 0.5, a, b, ts]),
    }


OPS = list(_cases(np.random.default_rng(0)))


def _tuple(res):
    return res if isinstance(res, tuple) else (res,)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("op", OPS)
def test_result_is_the_float32_result_rounded_once(rng, op, dt):
    """The whole contract, bit for bit: widen exactly, float32 kernels, one rounding."""
    fn, inputs = _cases(rng)[op]
    half = [v.astype(dt) for v in inputs]
    got = _tuple(fn(*half))
    f32 = _tuple(fn(*[h.astype(np.float32) for h in half]))
    assert len(got) == len(f32)
    for g, r in zip(got, f32):
        assert g.dtype == dt and g.shape == r.shape
        _nan_equal_bits(g, r.astype(dt))


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("op", OPS)
def test_error_against_float64_is_one_rounding(rng, op, dt):
    """|result - exact| <= u |exact| + float32's error, per element: the accumulation
    (backward passes included) runs in float32, never in the storage dtype."""
    fn, inputs = _cases(rng)[op]
    half = [v.astype(dt) for v in inputs]
    got = _tuple(fn(*half))
    exact = _tuple(fn(*[h.astype(np.float64) for h in half]))
    for g, e in zip(got, exact):
        scale = float(np.abs(e).max())
        err = np.abs(g.astype(np.float64) - e)
        bound = UNIT[dt] * np.abs(e) + TINY[dt] + 1e-5 * scale
        assert (err <= bound).all(), f"{op}: worst excess {np.max(err - bound)}"


# ------------------------------------------------------------------ against torch

def _torch_cases():
    for mode in ("bilinear", "nearest", "bicubic"):
        for pad in ("zeros", "border", "reflection"):
            for align in (False, True):
                yield f"grid_sample-{mode}-{pad}-{align}", ("grid_sample", mode, pad, align)
    for mode in ("bilinear", "bicubic"):
        yield f"grid_sample_backward-{mode}", ("grid_sample_backward", mode, "zeros", False)
    for mode in ("bilinear", "nearest", "nearest-exact", "bicubic", "area"):
        yield f"resize-{mode}", ("resize", mode, None, None)
    yield "adaptive_avg_pool2d", ("adaptive_avg_pool2d", None, None, None)
    yield "lerp", ("lerp", None, None, None)


def _pair(torch, case, x, grid, go, half):
    """(fastinterp's results, torch's results, float64 reference) for one case."""
    F = torch.nn.functional
    op, mode, pad, align = case
    tdt = torch.float16 if half == F16 else torch.bfloat16
    T = {k: torch.from_numpy(v).to(tdt) for k, v in (("x", x), ("grid", grid), ("go", go))}
    R = {k: v.double() for k, v in T.items()}
    if op == "grid_sample":
        def run(t):
            return (F.grid_sample(t["x"], t["grid"], mode=mode, padding_mode=pad,
                                  align_corners=align),)
        ours = (fi.grid_sample(T["x"], T["grid"], mode=mode, padding_mode=pad,
                               align_corners=align),)
    elif op == "grid_sample_backward":
        def run(t):
            xi, gi = t["x"].clone().requires_grad_(), t["grid"].clone().requires_grad_()
            F.grid_sample(xi, gi, mode=mode, align_corners=False).backward(t["go"])
            return xi.grad, gi.grad
        ours = fi.grid_sample_backward(T["go"], T["x"], T["grid"], mode=mode)
    elif op == "resize":
        kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}

        def run(t):
            return (F.interpolate(t["x"], size=(11, 4), mode=mode, **kw),)
        ours = (fi.resize(T["x"], size=(11, 4), mode=mode, **kw),)
    elif op == "adaptive_avg_pool2d":
        def run(t):
            return (F.adaptive_avg_pool2d(t["x"], (3, 4)),)
        ours = (fi.adaptive_avg_pool2d(T["x"], (3, 4)),)
    else:
        def run(t):
            return (torch.lerp(t["x"], t["x"].flip(-1), t["go"][..., :7, :6].sigmoid()),)
        ours = (fi.lerp(T["x"], T["x"].flip(-1), T["go"][..., :7, :6].sigmoid()),)
    return ours, run(T), run(R)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("case", [c for _, c in _torch_cases()], ids=[i for i, _ in _torch_cases()])
def test_error_at_most_torchs_own_half_precision_error(torch, rng, case, dt):
    """Max abs error against float64 on the same half-precision inputs: fastinterp's is at
    most torch's (CPU, same dtype), up to float32 rounding of the reference."""
    x = rng.standard_normal((2, 3, 7, 6))
    grid = rng.uniform(-1.15, 1.15, (2, 5, 4, 2))
    go = rng.standard_normal((2, 3, 5, 4)) if case[0] != "lerp" else rng.standard_normal((2, 3, 7, 6))
    ours, theirs, ref = _pair(torch, case, x, grid, go, dt)
    for o, t, r in zip(ours, theirs, ref):
        assert isinstance(o, torch.Tensor) and o.dtype == t.dtype
        ours_err = (o.double() - r).abs().max().item()
        torch_err = (t.double() - r).abs().max().item()
        assert ours_err <= torch_err + 2.0**-24 * r.abs().max().item(), (ours_err, torch_err)


# ------------------------------------------------------------------ dtypes and mixing

@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_mixed_half_image_and_float32_grid(rng, dt):
    x = rng.standard_normal((1, 2, 5, 5)).astype(dt)
    g32 = rng.uniform(-1, 1, (1, 3, 3, 2)).astype(np.float32)
    y = fi.grid_sample(x, g32)
    assert y.dtype == dt
    np.testing.assert_array_equal(y, fi.grid_sample(x.astype(np.float32), g32).astype(dt))
    assert fi.grid_sample(x.astype(np.float32), g32.astype(dt)).dtype == np.float32
    gi, gg = fi.grid_sample_backward(y, x, g32)
    assert gi.dtype == dt and gg.dtype == np.float32   # each gradient in its primal's dtype
    gi, gg = fi.grid_sample_backward(y, x.astype(np.float32), g32.astype(dt))
    assert gi.dtype == np.float32 and gg.dtype == dt
    a = rng.standard_normal((3, 4))
    assert fi.lerp(a.astype(dt), a.astype(np.float32), 0.5).dtype == dt
    assert fi.lerp(a.astype(np.float32), a.astype(dt), 0.5).dtype == np.float32
    ga, gb, gt = fi.slerp_backward(a.astype(dt), a.astype(dt), a[::-1].astype(np.float32),
                                   np.full(3, 0.5, np.float32))
    assert (ga.dtype, gb.dtype, gt.dtype) == (dt, np.float32, np.float32)


@pytest.mark.parametrize("layout, x_shape, grid_shape", [
    ("NCHW", (1, 3, 4, 2), (1, 3, 4, 2)),    # input and grid of one shape
    ("NHWC", (1, 3, 4, 2), (1, 3, 4, 2)),
    ("HWC", (3, 4, 2), (3, 4, 2)),
    ("NCHW", (2, 3, 5, 4), (2, 3, 4, 2)),
])
@pytest.mark.parametrize("needs", [(True, True), (False, True), (True, False)],
                         ids=["both", "grid-only", "input-only"])
@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_backward_results_take_their_primals_dtype_whatever_the_shapes(rng, dt, layout,
                                                                        x_shape, grid_shape,
                                                                        needs):
    """Each gradient is rounded to its own primal's dtype, by name: not the dtype of
    whichever argument happens to have its shape."""
    x = rng.standard_normal(x_shape)
    grid = rng.uniform(-1, 1, grid_shape)
    go = fi.grid_sample(x, grid, layout=layout)
    for xdt, gdt in ((dt, np.float32), (np.float32, dt), (dt, dt)):
        args = (go.astype(xdt), x.astype(xdt), grid.astype(gdt))
        gi, gg = fi.grid_sample_backward(*args, needs_input_grad=needs[0],
                                         needs_grid_grad=needs[1], layout=layout)
        ri, rg = fi.grid_sample_backward(*(a.astype(np.float32) for a in args), layout=layout)
        for got, want, primal in ((gi, ri, xdt), (gg, rg, gdt)):
            if got is not None:
                assert got.dtype == primal and got.shape == want.shape
                _nan_equal_bits(got, want.astype(primal))
        assert (gi is None, gg is None) == (not needs[0], not needs[1])


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_slerp_backward_results_take_their_primals_dtype(rng, dt):
    a, b = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    t = rng.uniform(0, 1, 4)
    g = rng.standard_normal((4, 4))
    for adt, bdt, tdt in itertools.product((dt, np.float32), repeat=3):
        args = (g.astype(adt), a.astype(adt), b.astype(bdt), t.astype(tdt))
        got = fi.slerp_backward(*args)
        want = fi.slerp_backward(*(v.astype(np.float32) for v in args))
        for r, w, primal in zip(got, want, (adt, bdt, tdt)):
            assert r.dtype == primal
            _nan_equal_bits(r, w.astype(primal))


@pytest.mark.parametrize("call, words", [
    (lambda h: fi.lerp(h, [1.0, 2.0, 3.0], 0.5),
     "lerp: b must have the same dtype as a ({dt}); got float64."),
    (lambda h: fi.lerp([1.0, 2.0, 3.0], h, 0.5),
     "lerp: b must have the same dtype as a (float64); got {dt}."),
    (lambda h: fi.lerp([1.0, 2.0, 3.0], np.zeros(3, np.float32), h),
     "lerp: b must have the same dtype as a (float64); got float32."),
    (lambda h: fi.slerp(h, [1.0, 2.0, 3.0], 0.5),
     "slerp: b must have the same dtype as a ({dt}); got float64."),
    (lambda h: fi.slerp([1.0, 2.0, 3.0], h, 0.5),
     "slerp: b must have the same dtype as a (float64); got {dt}."),
    (lambda h: fi.grid_sample(np.zeros((1, 1, 3, 3), h.dtype), [[[[0.0, 0.0]]]]),
     "grid_sample: grid must have the same dtype as input ({dt}); got float64."),
    (lambda h: fi.grid_sample([[[[0.0, 1.0], [2.0, 3.0]]]], np.zeros((1, 1, 1, 2), h.dtype)),
     "grid_sample: grid must have the same dtype as input (float64); got {dt}."),
    (lambda h: fi.grid_sample_backward(np.zeros((1, 1, 1, 1), h.dtype), [[[[0.0]]]],
                                       np.zeros((1, 1, 1, 2), np.float32)),
     "grid_sample_backward: input must have the same dtype as grad_output ({dt}); got "
     "float64."),
])
@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_dtype_errors_name_the_dtypes_the_caller_passed(call, words, dt):
    with pytest.raises(TypeError) as info:
        call(np.zeros(3, dt))
    assert str(info.value) == words.format(dt=dt)


@pytest.mark.parametrize("call, words", [
    (lambda h, d: fi.grid_sample(h, np.zeros((1, 2, 2, 2))), "grid must have dtype float32, "
     "float16 or bfloat16 next to input"),
    (lambda h, d: fi.lerp(np.zeros((1, 2, 4, 4)), h, 0.5), "a must have dtype float32, float16 "
     "or bfloat16 next to b"),
])
@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_half_with_float64_is_a_type_error_naming_both(call, words, dt):
    with pytest.raises(TypeError, match=f"{words} .*got float64"):
        call(np.zeros((1, 2, 4, 4), dt), dt)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("call", [
    lambda x: fi.pairwise_sqdist(x, x), lambda x: fi.knn(x, x, 1),
    lambda x: fi.pairwise_l2_backward(x, x[:1], x[1:]),
], ids=["pairwise_sqdist", "knn", "pairwise_l2_backward"])
def test_ops_without_half_storage_refuse_it(dt, call):
    with pytest.raises(TypeError, match=f"must have dtype float32 or float64.*got {dt}"):
        call(np.zeros((4, 3), dt))


# ------------------------------------------------------------------ out=

@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_half_out_is_filled_and_returned(rng, dt):
    x = rng.standard_normal((2, 3, 6, 5)).astype(dt)
    grid = rng.uniform(-1, 1, (2, 4, 4, 2)).astype(np.float32)
    expected = fi.grid_sample(x, grid)
    out = np.full(expected.shape, 7, dt)
    assert fi.grid_sample(x, grid, out=out) is out
    np.testing.assert_array_equal(out, expected)
    out = np.full((2, 3, 3, 2), 7, dt)
    assert fi.resize(x, size=(3, 2), out=out) is out
    np.testing.assert_array_equal(out, fi.resize(x, size=(3, 2)))
    a = rng.standard_normal((4, 5)).astype(dt)
    b = rng.standard_normal((4, 5)).astype(dt)
    expected = fi.lerp(a, b, 0.3)
    assert fi.lerp(a, b, 0.3, out=a) is a        # out may be exactly an input
    np.testing.assert_array_equal(a, expected)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("bad, exc, words", [
    ("float32", TypeError, "out must have dtype {dt} .*got float32"),
    ("strided", ValueError, "out must be C-contiguous"),
    ("readonly", ValueError, "out must be writable"),
    ("shape", ValueError, "out must have shape"),
])
def test_bad_half_out_raises_and_is_untouched(rng, dt, bad, exc, words):
    x = rng.standard_normal((1, 2, 4, 4)).astype(dt)
    shape = (1, 2, 3, 3)
    if bad == "float32":
        out = np.full(shape, 7, np.float32)
    elif bad == "strided":
        out = np.full(shape[:-1] + (6,), 7, dt)[..., ::2]
    elif bad == "shape":
        out = np.full((1, 2, 3, 4), 7, dt)
    else:
        out = np.full(shape, 7, dt)
        out.flags.writeable = False
    with pytest.raises(exc, match=f"^adaptive_avg_pool2d: {words.format(dt=dt)}"):
        fi.adaptive_avg_pool2d(x, 3, out=out)
    assert (out.astype(np.float32) == 7).all()


def _overlapping(dt, shape, shift):
    """(a C-contiguous array of ``shape``, a view of its memory shifted by ``shift`` elements)."""
    n = int(np.prod(shape))
    buf = np.zeros(n + abs(shift), dt)
    buf[...] = np.arange(buf.size) % 7
    lo, hi = (0, shift) if shift > 0 else (-shift, 0)
    return buf[lo:lo + n].reshape(shape), buf[hi:hi + n].reshape(shape)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("shift", [3, -5])
@pytest.mark.parametrize("op", ["adaptive_avg_pool2d", "resize", "grid_sample", "lerp",
                                "lerp-b", "slerp", "resize_backward",
                                "adaptive_avg_pool2d_backward"])
def test_half_out_partially_overlapping_an_input_is_refused(rng, dt, shift, op):
    """out= may be exactly a half input (it is written after the computation), never a
    shifted view of one: the check runs on the caller's arrays, before widening."""
    shape = (1, 2, 6, 6)
    x, out = _overlapping(dt, shape, shift)
    other = rng.standard_normal(shape).astype(dt)
    name = "b" if op == "lerp-b" else "a" if op in ("lerp", "slerp") else \
        "grad_output" if op.endswith("backward") else "input"
    calls = {
        "adaptive_avg_pool2d": lambda o: fi.adaptive_avg_pool2d(x, (6, 6), out=o),
        "resize": lambda o: fi.resize(x, size=(6, 6), mode="bicubic", out=o),
        "grid_sample": lambda o: fi.grid_sample(x, np.zeros((1, 6, 6, 2), np.float32), out=o),
        "lerp": lambda o: fi.lerp(x, other, 0.5, out=o),
        "lerp-b": lambda o: fi.lerp(other, x, 0.5, out=o),
        "slerp": lambda o: fi.slerp(x, other, 0.5, out=o),
        "resize_backward": lambda o: fi.resize_backward(x, shape, mode="bilinear", out=o),
        "adaptive_avg_pool2d_backward":
            lambda o: fi.adaptive_avg_pool2d_backward(x, shape, out=o),
    }
    before = out.copy()
    with pytest.raises(ValueError, match=f"^{op.removesuffix('-b')}: out must be either exactly "
                                         f"{name} .*partially overlaps {name}"):
        calls[op](out)
    np.testing.assert_array_equal(out.view(np.uint16), before.view(np.uint16))
    expected = calls[op](None)
    assert calls[op](x) is x                     # exactly the input: allowed
    np.testing.assert_array_equal(x.view(np.uint16), expected.view(np.uint16))


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_float32_out_partially_overlapping_a_half_input_is_refused(rng, dt):
    """A float32 result next to a half grid: the out= check sees the grid as passed."""
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    buf = np.zeros(40, np.float32)
    grid = buf[2:11].view(dt).reshape(1, 3, 3, 2)       # bytes 8..44 of buf
    out = buf[:18].reshape(1, 2, 3, 3)                  # bytes 0..72
    with pytest.raises(ValueError, match="^grid_sample: out must be either exactly grid "
                                         ".*partially overlaps grid"):
        fi.grid_sample(x, grid, out=out)
    assert not buf[:2].any() and not buf[11:].any()


# ------------------------------------------------------------------ frameworks, layouts, threads

@pytest.mark.parametrize("tdt", ["float16", "bfloat16"])
def test_torch_half_tensors_come_back_as_torch_half(torch, rng, tdt):
    t = getattr(torch, tdt)
    x = torch.from_numpy(rng.standard_normal((2, 3, 8, 8)).astype(np.float32)).to(t)
    cl = x.contiguous(memory_format=torch.channels_last)
    y = fi.resize(cl, size=(5, 4), mode="bilinear")
    assert isinstance(y, torch.Tensor) and y.dtype == t
    assert torch.equal(y, fi.resize(x, size=(5, 4), mode="bilinear"))
    assert y.is_contiguous(memory_format=torch.channels_last)   # the layout is kept
    out = torch.empty(2, 3, 4, 4, dtype=t)
    assert fi.adaptive_avg_pool2d(x, 4, out=out) is out
    assert torch.equal(out, fi.adaptive_avg_pool2d(x, 4))


@pytest.mark.parametrize("tdt", ["float16", "bfloat16"])
def test_a_half_spatial_transformer_runs_in_its_own_dtype(torch, rng, tdt):
    """affine_grid and the 1-D/3-D pools refused half precision, so a float16 spatial
    transformer stopped at its grid; now each is the float32 call rounded once."""
    import fastinterp.torch as fit
    t = getattr(torch, tdt)
    theta = torch.tensor(rng.standard_normal((2, 2, 3)), dtype=t, requires_grad=True)
    x = torch.tensor(rng.standard_normal((2, 3, 6, 5)), dtype=t, requires_grad=True)
    grid = fit.affine_grid(theta, (2, 3, 4, 4))
    y = fit.grid_sample(x, grid)
    y.float().sum().backward()
    assert grid.dtype == y.dtype == theta.grad.dtype == x.grad.dtype == t
    assert torch.equal(grid, fit.affine_grid(theta.detach().float(), (2, 3, 4, 4)).to(t))
    vol = torch.tensor(rng.standard_normal((1, 2, 5, 4, 3)), dtype=t)
    pooled = fit.adaptive_avg_pool3d(vol, (2, 2, 2))
    assert pooled.dtype == t
    assert torch.equal(pooled, fit.adaptive_avg_pool3d(vol.float(), (2, 2, 2)).to(t))


def test_half_results_bit_identical_across_thread_counts(threads, rng):
    x = rng.standard_normal((2, 16, 96, 96)).astype(np.float16)   # big enough to go parallel
    grid = rng.uniform(-1, 1, (2, 64, 64, 2)).astype(np.float16)
    results = []
    for n in (1, 2):
        threads.set_num_threads(n)
        results.append((_half.widen(x), fi.grid_sample(x, grid), fi.resize(x, size=(50, 70))))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.cudasim
def test_cuda_half_is_refused_clearly(cuda):
    d = cuda.to_device(np.zeros((2, 3), np.float16))
    with pytest.raises(TypeError, match="lerp: a must have dtype float32 or float64 on CUDA; "
                                        "got float16"):
        fi.lerp(d, d, 0.5)


def test_work_buffers_are_reused_never_shared_and_never_returned(rng):
    a = np.ones((1024, 512), F16)            # 2 MB in float32: pooled
    w1, w2 = _half.widen(a), _half.widen(a)
    assert not np.shares_memory(w1, w2)
    view = w1[10:]
    address = w1.__array_interface__["data"][0]
    del w1
    w3 = _half.widen(a)                       # w1's buffer is still held by its view
    assert not np.shares_memory(w3, view)
    del view, w3
    assert _half.widen(a).__array_interface__["data"][0] == address   # now it is free again
    x = rng.standard_normal((2, 4, 256, 256)).astype(F16)
    first = fi.adaptive_avg_pool2d(x, (128, 128))
    kept = first.copy()
    second = fi.adaptive_avg_pool2d(-x, (128, 128))
    np.testing.assert_array_equal(first, kept)          # not overwritten by the next call
    np.testing.assert_array_equal(second, -kept)


def test_concurrent_half_calls_equal_serial(rng):
    from concurrent.futures import ThreadPoolExecutor
    x = rng.standard_normal((2, 8, 128, 128)).astype(F16)
    grids = [rng.uniform(-1, 1, (2, 64, 64, 2)).astype(np.float32) for _ in range(6)]
    serial = [fi.grid_sample(x, g) for g in grids]
    with ThreadPoolExecutor(6) as pool:
        parallel = list(pool.map(lambda g: fi.grid_sample(x, g), grids))
    for s, p in zip(serial, parallel):
        np.testing.assert_array_equal(s.view(np.uint16), p.view(np.uint16))


@pytest.mark.parametrize("make_fill, values", [
    (lambda torch, ml: torch.tensor(0.75, dtype=torch.bfloat16), 0.75),
    (lambda torch, ml: torch.tensor([1.0, -2.5], dtype=torch.bfloat16), [1.0, -2.5]),
    (lambda torch, ml: np.array([1.0, -2.5], ml.bfloat16), [1.0, -2.5]),
])
def test_a_bfloat16_fill_is_read_as_its_values(make_fill, values):
    """A bfloat16 fill is a real number like a float16 one (NumPy cannot read a torch
    bfloat16 tensor: a raw 'unsupported ScalarType'; an ml_dtypes array was refused)."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).random((1, 2, 3, 4)).astype(np.float32)
    g = np.random.default_rng(3).uniform(-3, 3, (1, 2, 5, 2)).astype(np.float32)
    got = fi.grid_sample(x, g, padding_mode="constant", fill=make_fill(torch, ml_dtypes))
    np.testing.assert_array_equal(got, fi.grid_sample(x, g, padding_mode="constant",
                                                      fill=values))


@pytest.mark.parametrize("call", [lambda x: fi.resize(x, size=(1, 2)),
                                  lambda x: fi.adaptive_avg_pool2d(x, 1)])
def test_a_nested_list_of_half_scalars_is_a_half_array(call):
    """Only lists held the half values: no argument's storage was recorded (StopIteration)."""
    values = [[[[np.float16(v) for v in range(4)]] * 2]]
    np.testing.assert_array_equal(call(values), call(np.asarray(values)))
    assert call(values).dtype == np.float16


@pytest.mark.parametrize("call", [
    lambda s: fi.lerp(np.ones((2, 3), BF16), np.zeros((2, 3), BF16), s),
    lambda s: fi.slerp(np.ones((2, 3), np.float32), np.eye(2, 3, dtype=np.float32), s),
    lambda s: fi.grid_sample(np.ones((1, 1, 2, 2), np.float32),
                             np.full((1, 1, 1, 2), 3, np.float32), padding_mode="constant",
                             fill=s),
    lambda s: fi.resize(np.ones((1, 1, 4, 4), np.float32), scale_factor=8 * s),
    lambda s: PolynomialRegression(1, tol=s / 1000).fit(np.arange(4.0), np.arange(4.0)).coef_,
])
def test_a_bfloat16_scalar_is_a_number(call):
    """A bfloat16 scalar (what indexing a bfloat16 array gives) is read as its value, as a
    float16 scalar is (it was refused: it is not an np.floating)."""
    got = call(ml_dtypes.bfloat16(0.25))
    np.testing.assert_array_equal(np.asarray(got, np.float32),
                                  np.asarray(call(0.25), np.float32))


@pytest.mark.parametrize("call", [
    lambda h, b: fi.lerp(h, b, 1.0),
    lambda h, b: fi.grid_sample(h.reshape(1, 1, 2, 2), b.reshape(1, 1, 2, 2)),
])
def test_float16_next_to_bfloat16_is_refused(call):
    """README: half precision mixes with float32 only. float16 next to bfloat16 was
    computed and stored in the first one's dtype (a bfloat16 1e6 became float16 inf);
    torch refuses the pair."""
    h = np.zeros(4, np.float16)
    b = np.array([1e6, 3, 0.5, -0.5], BF16)
    with pytest.raises(TypeError, match=r"float16 .*bfloat16|bfloat16 .*float16"):
        call(h, b)
    with pytest.raises(TypeError, match=r"float16 .*bfloat16|bfloat16 .*float16"):
        call(b.astype(np.float32).astype(np.float16) * 0, h.astype(BF16))
