"""fastinterp.jax: values equal the NumPy API; jit, grad (check_grads in float64) and vmap.

Inputs are tiny and sampling points sit away from the kinks of the
piecewise-polynomial maps (pixel knots, nearest's rounding points, padding
boundaries), so that finite differences are valid.
"""
from __future__ import annotations

import contextlib
import re
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
from jax.test_util import check_grads  # noqa: E402

import fastinterp as fi  # noqa: E402
import fastinterp.jax as fij  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def x64():
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def rev(f, *args, atol=1e-6):
    check_grads(f, args, order=1, modes=["rev"], eps=1e-6, atol=atol, rtol=atol)


def grid_off_knots(rng, shape, h, w, align, spread=1.4):
    """Normalized points whose pixel coordinates have fractions in [0.15, 0.35] or
    [0.65, 0.85]: away from pixel centres, nearest's half-way points and the padding
    boundaries (which sit at pixel centres or half-way points, mirrored alike)."""
    out = np.empty(shape + (2,))
    for k, n in ((0, w), (1, h)):
        lo, hi = -spread * n / 2, (n - 1) + spread * n / 2
        base = rng.integers(int(np.floor(lo)), int(np.ceil(hi)), shape)
        frac = rng.uniform(0.15, 0.35, shape) + 0.5 * rng.integers(0, 2, shape)
        p = base + frac
        out[..., k] = 2 * p / (n - 1) - 1 if align else (2 * p + 1) / n - 1
    return out


def test_docstring_examples():
    import doctest
    jax.config.update("jax_enable_x64", False)      # the examples show JAX's default dtypes
    try:
        result = doctest.testmod(fij, optionflags=doctest.NORMALIZE_WHITESPACE)
    finally:
        jax.config.update("jax_enable_x64", True)
    assert result.attempted > 10 and result.failed == 0


def test_import_fastinterp_does_not_import_jax():
    code = ("import sys, fastinterp; assert 'jax' not in sys.modules; "
            "import fastinterp.jax; assert 'jax' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ grid_sample

MODES = ("bilinear", "nearest", "bicubic")
PADS = ("zeros", "border", "reflection")


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("mode", MODES)
def test_grid_sample_values_and_check_grads(rng, mode, pad, align):
    x = rng.standard_normal((2, 2, 4, 5))
    g = grid_off_knots(rng, (2, 3, 2), 4, 5, align)
    kw = dict(mode=mode, padding_mode=pad, align_corners=align)
    y = fij.grid_sample(jnp.asarray(x), jnp.asarray(g), **kw)
    np.testing.assert_array_equal(np.asarray(y), fi.grid_sample(x, g, **kw))
    rev(lambda x, g: fij.grid_sample(x, g, **kw), jnp.asarray(x), jnp.asarray(g))


def test_grid_sample_nhwc_and_partial_grads(rng):
    x = rng.standard_normal((1, 4, 5, 3))
    g = grid_off_knots(rng, (1, 2, 3), 4, 5, False)
    y = fij.grid_sample(x, g, layout="NHWC")
    np.testing.assert_array_equal(np.asarray(y), fi.grid_sample(x, g, layout="NHWC"))
    rev(lambda x: fij.grid_sample(x, jnp.asarray(g), layout="NHWC"), jnp.asarray(x))
    with pytest.warns(FutureWarning, match="grid_sample: channels_last is deprecated"):
        y2 = fij.grid_sample(x, g, channels_last=True)
    np.testing.assert_array_equal(np.asarray(y2), np.asarray(y))


# ------------------------------------------------------------------ the other ops

def _ops(rng):
    """name -> (fastinterp.jax call, NumPy call, float64 inputs)."""
    theta = rng.standard_normal((2, 2, 3))
    x = rng.standard_normal((2, 2, 5, 4))
    a, b = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    t = rng.uniform(0.1, 0.9, (3, 5))
    return {
        "affine_grid": (lambda th: fij.affine_grid(th, (2, 1, 3, 4), align_corners=False),
                        lambda th: fi.affine_grid(th, (2, 1, 3, 4), align_corners=False),
                        [theta]),
        "resize-bilinear": (lambda x: fij.resize(x, size=(7, 3), mode="bilinear"),
                            lambda x: fi.resize(x, size=(7, 3), mode="bilinear"), [x]),
        "resize-bicubic-align": (
            lambda x: fij.resize(x, scale_factor=1.5, mode="bicubic", align_corners=True),
            lambda x: fi.resize(x, scale_factor=1.5, mode="bicubic", align_corners=True), [x]),
        "resize-area": (lambda x: fij.resize(x, size=(2, 3), mode="area"),
                        lambda x: fi.resize(x, size=(2, 3), mode="area"), [x]),
        "resize-nearest": (lambda x: fij.interpolate(x, size=(3, 7), mode="nearest"),
                           lambda x: fi.interpolate(x, size=(3, 7), mode="nearest"), [x]),
        "resize-antialias-nhwc": (
            lambda x: fij.resize(x, size=(2, 2), antialias=True, layout="NHWC"),
            lambda x: fi.resize(x, size=(2, 2), antialias=True, layout="NHWC"), [x]),
        "adaptive_avg_pool2d": (lambda x: fij.adaptive_avg_pool2d(x, (3, 2)),
                                lambda x: fi.adaptive_avg_pool2d(x, (3, 2)), [x]),
        "pairwise_sqdist": (fij.pairwise_sqdist, fi.pairwise_sqdist, [a, b[:2]]),
        "pairwise_sqdist-self": (fij.pairwise_sqdist, fi.pairwise_sqdist, [a]),
        "pairwise_l2": (fij.pairwise_l2, fi.pairwise_l2, [a, b[:2]]),
        "pairwise_l2-self": (lambda x: fij.pairwise_l2(x), lambda x: fi.pairwise_l2(x), [a]),
        "lerp": (fij.lerp, fi.lerp, [a, b, t]),
        "lerp-broadcast": (fij.lerp, fi.lerp, [a, b[:1], t[0]]),
        "lerp-scalar-t": (lambda a, b: fij.lerp(a, b, 0.3), lambda a, b: fi.lerp(a, b, 0.3),
                          [a, b]),
        "slerp": (fij.slerp, fi.slerp, [a, b, t[:, 0]]),
        "slerp-scalar-t": (lambda a, b: fij.slerp(a, b, 0.3), lambda a, b: fi.slerp(a, b, 0.3),
                           [a, b]),
        "slerp-path-axis0": (lambda a, b, t: fij.slerp(a, b, t, axis=0, path=True),
                             lambda a, b, t: fi.slerp(a, b, t, axis=0, path=True),
                             [a, b, t[0, :3]]),
        "slerp-formula-shortest": (
            lambda a, b, t: fij.slerp(a, b, t, norm="formula", shortest_path=True),
            lambda a, b, t: fi.slerp(a, b, t, norm="formula", shortest_path=True),
            [a, b, t[:, 0]]),
    }


OPS = list(_ops(np.random.default_rng(0)))


@pytest.mark.parametrize("op", OPS)
def test_values_equal_numpy_and_check_grads(rng, op):
    jfn, nfn, inputs = _ops(rng)[op]
    got = jfn(*[jnp.asarray(v) for v in inputs])
    np.testing.assert_allclose(np.asarray(got), nfn(*inputs), rtol=1e-13, atol=1e-13)
    rev(jfn, *[jnp.asarray(v) for v in inputs])


@pytest.mark.parametrize("op", ["resize-bilinear", "lerp-broadcast", "slerp"])  # each vmap rule
def test_jit_and_vmap(rng, op):
    jfn, nfn, inputs = _ops(rng)[op]
    args = [jnp.asarray(v) for v in inputs]
    np.testing.assert_array_equal(np.asarray(jax.jit(jfn)(*args)), np.asarray(jfn(*args)))
    stacked = [jnp.stack([v, v * 0.5 + 0.1, v[::-1]]) for v in args]   # 3 mapped elements
    mapped = jax.vmap(jfn)(*stacked)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(mapped[i]),
                                   nfn(*[np.asarray(s[i]) for s in stacked]), rtol=1e-13,
                                   atol=1e-13)
    # gradients of a mapped, jitted loss equal the per-element gradients
    argnums = tuple(range(len(args)))
    grad = jax.grad(lambda *xs: (jfn(*xs) ** 2).sum(), argnums=argnums)
    got = jax.jit(jax.vmap(grad))(*stacked)
    want = grad(*[s[1] for s in stacked])
    for g_all, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g_all[1]), np.asarray(w), rtol=1e-12, atol=1e-12)


def test_vmap_only_some_arguments_mapped(rng):
    x = jnp.asarray(rng.standard_normal((4, 1, 2, 5, 5)))
    g = jnp.asarray(grid_off_knots(rng, (1, 3, 3), 5, 5, False))
    mapped = jax.vmap(lambda x: fij.grid_sample(x, g, mode="bicubic"))(x)
    for i in range(4):
        np.testing.assert_array_equal(np.asarray(mapped[i]),
                                      fi.grid_sample(np.asarray(x[i]), np.asarray(g),
                                                     mode="bicubic"))
    grads = jax.vmap(jax.grad(lambda g, x: fij.grid_sample(x, g).sum()), in_axes=(None, 0))(g, x)
    assert grads.shape == (4,) + g.shape


def test_errors_surface_at_trace_time_with_the_numpy_message():
    x = jnp.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"grid_sample: grid must have shape \(N, H_out, W_out, 2\)"):
        jax.jit(lambda x: fij.grid_sample(x, jnp.zeros((1, 3, 3, 3))))(x)
    with pytest.raises(ValueError, match="grid_sample: mode must be one of"):
        fij.grid_sample(x, jnp.zeros((1, 3, 3, 2)), mode="cubic")
    with pytest.raises(TypeError, match="grid must have the same dtype as input"):
        fij.grid_sample(x, jnp.zeros((1, 3, 3, 2), jnp.float32))


@pytest.mark.parametrize("trace", [lambda f: f, jax.jit])
def test_batch_sizes_are_checked_at_trace_time(trace):
    """The trace-time checks see the real N of every array (not the probe's N = 0)."""
    x, g = jnp.ones((2, 3, 5, 6)), jnp.zeros((1, 4, 3, 2))
    with pytest.raises(ValueError, match=r"^grid_sample: grid must have the input's batch size "
                                         r"N = 2; got \(1, 4, 3, 2\)\."):
        trace(lambda x, g: fij.grid_sample(x, g))(x, g)
    with pytest.raises(ValueError, match=r"^grid_sample: grid must have the input's batch size "
                                         r"N = 2; got \(3, 1, 2, 2, 3\)\."):
        trace(lambda x, g: fij.grid_sample(x, g))(jnp.ones((2, 1, 3, 3, 3)),
                                                  jnp.zeros((3, 1, 2, 2, 3)))
    with pytest.raises(ValueError, match=r"^affine_grid: theta must have shape \(N, 2, 3\) with "
                                         r"N = size\[0\] = 3; got \(2, 2, 3\)\."):
        trace(lambda th: fij.affine_grid(th, (3, 1, 4, 4)))(jnp.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"^affine_grid: theta must have shape \(N, 3, 4\) with "
                                         r"N = size\[0\] = 1"):
        trace(lambda th: fij.affine_grid(th, (1, 1, 2, 4, 4)))(jnp.zeros((2, 3, 4)))


@pytest.mark.parametrize("name, shapes, kw", [
    ("adaptive_avg_pool1d", [(4, 2, 5, 6)], dict(output_size=2)),
    ("adaptive_avg_pool2d", [(4, 2, 5, 6, 7)], dict(output_size=2)),
    ("adaptive_avg_pool2d", [(4, 2, 5, 6)], dict(output_size=2, layout="HWC")),
    ("adaptive_avg_pool3d", [(4, 2, 5)], dict(output_size=2)),
    ("adaptive_avg_pool3d", [(4, 2, 0, 5, 6)], dict(output_size=2)),
    ("grid_sample", [(4, 2, 5, 6), (4, 3, 3, 3)], {}),
    ("grid_sample", [(4, 2, 5, 6), (4, 3, 3, 3, 2)], {}),
    ("grid_sample", [(4, 2, 3, 5, 6), (4, 3, 3, 2)], {}),
    ("grid_sample", [(4, 2, 0, 6), (4, 3, 3, 2)], {}),
    ("grid_sample", [(4, 5, 6, 2), (4, 3, 3, 2)], dict(layout="NHWC", mode="area")),
    ("grid_sample", [(4, 2, 5, 6), (4, 3, 3, 2)], dict(padding_mode="constant", fill=[1, 2, 3])),
    ("resize", [(4, 2, 0, 6)], dict(size=3)),
    ("resize", [(4, 2, 5, 6)], dict(size=(1, 2, 3))),
    ("affine_grid", [(4, 2, 2)], dict(size=(4, 1, 3, 3))),
    ("affine_grid", [(4, 3, 3)], dict(size=(4, 1, 2, 3, 3))),
])
@pytest.mark.parametrize("trace", [lambda f: f, jax.jit])
def test_trace_time_errors_name_the_callers_shapes(name, shapes, kw, trace):
    """The trace-time checks run on arrays of batch 0, but their messages carry the
    caller's shapes: the NumPy API's message on arrays of the same shapes."""
    with pytest.raises((TypeError, ValueError)) as numpy_error:
        getattr(fi, name)(*(np.ones(s) for s in shapes), **kw)
    with pytest.raises(type(numpy_error.value)) as jax_error:
        trace(lambda *xs: getattr(fij, name)(*xs, **kw))(*(jnp.ones(s) for s in shapes))
    assert str(jax_error.value) == str(numpy_error.value)


@pytest.mark.parametrize("kw", [dict(mode="foo"), dict(padding_mode="foo"),
                                dict(padding_mode="constant", fill=[1, 2, 3]),
                                dict(layout="NHWC", padding_mode="constant", fill=[1, 2])])
def test_rotate_errors_name_rotate(kw):
    x = np.ones((1, 2, 4, 4))
    with pytest.raises((TypeError, ValueError)) as numpy_error:
        fi.rotate(x, 30.0, **kw)
    assert str(numpy_error.value).startswith("rotate: ")
    with pytest.raises(type(numpy_error.value)) as jax_error:
        fij.rotate(jnp.asarray(x), 30.0, **kw)
    assert str(jax_error.value) == str(numpy_error.value)


@pytest.mark.parametrize("call", [
    lambda x, a: fij.rotate(x, a),
    lambda x, a: fij.rotate(x, 30.0, scale=a),
    lambda x, a: fij.rotate(x, 30.0, center=(a, 1.0)),
    lambda x, a: fij.rotate(x, 30.0, center=jnp.stack([a, a])),
])
def test_rotate_refuses_a_traced_angle_scale_or_center(call):
    x = jnp.ones((1, 2, 4, 4))
    for transform in (jax.jit, jax.grad):
        with pytest.raises(TypeError, match=r"^rotate: (angle|scale|center) must be static: "
                                            r"a Python number"):
            transform(lambda a: call(x, a).sum())(30.0)
    np.testing.assert_array_equal(call(x, jnp.float64(1.0)), call(x, 1.0))   # concrete: read


@pytest.mark.parametrize("make", [jnp.asarray, jnp.float32, lambda v: jnp.asarray([v])])
@pytest.mark.parametrize("name", ["angle", "scale", "center", "center array"])
def test_rotate_reads_a_concrete_jax_value_inside_transforms(make, name):
    """A concrete JAX angle, scale or center captured by a jitted function (or a scan's,
    a checkpoint's body) is a constant as a NumPy one is: it was JAX's
    ConcretizationTypeError, naming no op (the value was reshaped inside the trace)."""
    kw = {"angle": dict(angle=make(30.0)), "scale": dict(angle=30.0, scale=make(1.5)),
          "center": dict(angle=30.0, center=(make(1.5), 2.0)),
          "center array": dict(angle=30.0, center=jnp.asarray([1.5, 2.0]))}[name]
    x = jnp.asarray(np.random.default_rng(0).random((1, 2, 6, 6)))
    want = np.asarray(fij.rotate(x, **kw))
    np.testing.assert_array_equal(jax.jit(lambda img: fij.rotate(img, **kw))(x), want)
    np.testing.assert_array_equal(jax.checkpoint(lambda img: fij.rotate(img, **kw))(x), want)
    _, stacked = jax.lax.scan(lambda c, img: (c, fij.rotate(img, **kw)), 0, x[None])
    np.testing.assert_array_equal(stacked[0], want)


def test_vmapped_looped_ops_read_unmapped_operands_in_place(monkeypatch):
    """vmap over the looped ops (distances, slerp, warps) copied every unmapped operand
    once per mapped element (JAX's broadcast_all: 200 queries against a 20000 x 128
    database took 5.9 GB); each call now views the one unmapped array."""
    seen = []
    original = fi.pairwise_sqdist

    def spy(x, y, **kw):
        if np.shape(y) == (50, 8):      # (not the shape checks' small stand-ins)
            seen.append(np.asarray(y).__array_interface__["data"][0])
        return original(x, y, **kw)

    monkeypatch.setattr(fi, "pairwise_sqdist", spy)
    rng = np.random.default_rng(0)
    db, qs = jnp.asarray(rng.random((50, 8))), jnp.asarray(rng.random((6, 3, 8)))
    out = jax.vmap(lambda q: fij.pairwise_sqdist(q, db))(qs)
    assert len(seen) == 6 and len(set(seen)) == 1
    np.testing.assert_array_equal(out, np.stack([original(np.asarray(q), np.asarray(db))
                                                 for q in qs]))
    nested = jax.vmap(jax.vmap(lambda q: fij.pairwise_sqdist(q[None], db)[0]))(qs)
    np.testing.assert_allclose(nested, out, rtol=1e-12)


def test_strict_dtype_promotion_takes_the_documented_half_float32_mixes():
    """Under jax.numpy_dtype_promotion('strict') every documented float16/float32 mix
    failed in fastinterp's own promotion of weak types (JAX's TypePromotionError)."""
    rng = np.random.default_rng(1)
    img = jnp.asarray(rng.random((1, 2, 5, 5)), jnp.float16)
    grid = jnp.asarray(rng.uniform(-1, 1, (1, 3, 3, 2)), jnp.float32)
    a, b = (jnp.asarray(rng.random((3, 4)), jnp.float16) for _ in range(2))
    t = jnp.asarray(rng.random(3), jnp.float32)
    calls = [lambda: fij.grid_sample(img, grid), lambda: fij.lerp(a, b, t[:, None]),
             lambda: fij.slerp(a, b, t), lambda: fij.lerp(a, b.astype(jnp.float32), 0.3)]
    for call in calls:
        with jax.numpy_dtype_promotion("strict"):
            strict = call()
        np.testing.assert_array_equal(strict, call())


@pytest.mark.parametrize("t", [[0.1, 0.2, 0.3, 0.4], (0.1, 0.2, 0.3, 0.4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_listed_t_is_read_in_the_operands_dtype_with_x64(t, dtype):
    """With jax_enable_x64 on (this module's setting), t as a list or tuple became a
    float64 array: "lerp: t must have the same dtype as a (float32); got float64"."""
    a = np.ones((3, 4), dtype)
    b = np.zeros((3, 4), dtype)
    got = fij.lerp(jnp.asarray(a), jnp.asarray(b), t)
    want = fi.lerp(a, b, t)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    c = b + np.eye(3, 4, dtype=dtype)
    np.testing.assert_array_equal(fij.slerp(jnp.asarray(a), jnp.asarray(c), t[:3]),
                                  fi.slerp(a, c, list(t[:3])))


@pytest.mark.parametrize("trace", [lambda f: f, jax.jit])
def test_a_listed_t_of_ints_or_huge_values_reads_as_the_numpy_api(trace):
    """A list of ints was a TypeError naming an int32/int64 array never passed (an int
    beyond int64 JAX's OverflowError); a value beyond float32 became inf silently under
    jit (and without x64): both read on the host now, as the NumPy API reads them."""
    a, b = np.zeros(3, np.float32), np.full(3, 2, np.float32)
    for t in ([1, 0, 2], (0, 1, 3), [2 ** 70, 1, 1]):
        got = trace(lambda x, y, t=t: fij.lerp(x, y, t))(jnp.asarray(a), jnp.asarray(b))
        np.testing.assert_array_equal(got, fi.lerp(a, b, list(t)))
    u, v = np.eye(2, 3, dtype=np.float32), np.eye(2, 3, 1, dtype=np.float32)
    got = trace(lambda x, y: fij.slerp(x, y, (0, 1)))(jnp.asarray(u), jnp.asarray(v))
    np.testing.assert_array_equal(got, fi.slerp(u, v, [0, 1]))
    for op, args in (("lerp", (a, b)), ("slerp", (u, v))):
        t = [1e39, 0.5, 0.5][:len(args[0])]
        with pytest.raises(ValueError, match=rf"^{op}: t must be representable in float32; "
                                             r"got 1e\+39"):
            trace(lambda x, y: getattr(fij, op)(x, y, t))(*map(jnp.asarray, args))


@pytest.mark.parametrize("t", [[None, 0.5, 0.5], [True, 0.5, 0.5], ["0.5", 0.5, 0.5],
                               [b"0.5", 0.5, 0.5], [10 ** 400, 0, 0], [0.5, [0.5], 0.5]])
def test_a_listed_t_is_refused_as_the_numpy_api_refuses_it(t):
    """None, bools and strings inside a list t (None became NaN silently, "0.5" was
    parsed), an int beyond float64 (JAX's OverflowError) and ragged lists: the NumPy
    API's errors, word for word."""
    a, b = np.zeros(3, np.float32), np.full(3, 2, np.float32)
    with pytest.raises((TypeError, ValueError)) as want:
        fi.lerp(a, b, t)
    with pytest.raises(type(want.value), match=f"^{re.escape(str(want.value))}$"):
        fij.lerp(jnp.asarray(a), jnp.asarray(b), t)


def test_a_listed_t_beside_integer_operands_reports_the_operands():
    """A list t was read as float32 beside int32 operands: its overflow was reported
    before the operands' dtype error that the NumPy API gives."""
    a = np.zeros(2, np.int32)
    with pytest.raises(TypeError, match=r"^lerp: a must have dtype float32 or float64"):
        fi.lerp(a, a, [1e300, 0.5])
    with pytest.raises(TypeError, match=r"^lerp: a must have dtype float32 or float64"):
        fij.lerp(jnp.asarray(a), jnp.asarray(a), [1e300, 0.5])


def test_a_deeply_nested_listed_t_is_the_numpy_apis_value_error():
    t = 0.5
    for _ in range(3000):
        t = [t]
    with pytest.raises(ValueError, match=r"^lerp: t must be a rectangular array"):
        fij.lerp(jnp.zeros(1), jnp.ones(1), t)


def test_cached_checks_tell_equal_arguments_of_other_types_apart():
    x = jnp.ones((1, 2, 5, 6))
    fij.resize(x, (7, 3))
    with pytest.raises(TypeError, match=r"^resize: size must be a positive int"):
        fij.resize(x, (7.0, 3))
    fij.grid_sample(x, jnp.zeros((1, 2, 2, 2)), align_corners=True)
    with pytest.raises(TypeError, match=r"^grid_sample: align_corners must be a bool"):
        fij.grid_sample(x, jnp.zeros((1, 2, 2, 2)), align_corners=1)


def test_sizes_as_jax_arrays():
    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 3, 5, 6)))
    np.testing.assert_array_equal(fij.resize(x, size=jnp.array([7, 3])), fij.resize(x, (7, 3)))
    np.testing.assert_array_equal(fij.resize(x, size=jnp.array(4)), fij.resize(x, 4))
    np.testing.assert_array_equal(fij.resize(x, size=(jnp.array(7), 3)), fij.resize(x, (7, 3)))
    np.testing.assert_array_equal(fij.adaptive_avg_pool2d(x, jnp.array([2, 3])),
                                  fij.adaptive_avg_pool2d(x, (2, 3)))
    np.testing.assert_array_equal(fij.adaptive_avg_pool1d(x[0], jnp.array([4])),
                                  fij.adaptive_avg_pool1d(x[0], 4))
    np.testing.assert_array_equal(fij.affine_grid(jnp.zeros((2, 2, 3)), jnp.array([2, 1, 4, 4])),
                                  fij.affine_grid(jnp.zeros((2, 2, 3)), (2, 1, 4, 4)))
    with pytest.raises(TypeError, match=r"^resize: size must be a positive int or a pair of "
                                        r"them \(H, W\); got"):
        fij.resize(x, size=jnp.array([7.0, 3.0]))
    for call in (lambda s: fij.resize(x, size=s), lambda s: fij.adaptive_avg_pool2d(x, s),
                 lambda s: fij.resize(x, size=(s[0], 3))):
        with pytest.raises(TypeError, match=r"^(resize: size|adaptive_avg_pool2d: output_size) "
                                            r"must be static: sizes are Python ints"):
            jax.jit(call)(jnp.array([7, 3]))


@pytest.mark.parametrize("fn", [fij.lerp, fij.slerp])
@pytest.mark.parametrize("t", [True, np.bool_(False), None])
def test_weights_that_are_not_numbers_are_refused_like_numpy(fn, t):
    a = jnp.ones((2, 3))
    with pytest.raises(TypeError) as numpy_error:
        getattr(fi, fn.__name__)(np.ones((2, 3)), np.ones((2, 3)), t)
    with pytest.raises(TypeError) as jax_error:
        fn(a, a, t)
    assert str(jax_error.value) == str(numpy_error.value)
    with pytest.raises(TypeError, match=rf"^{fn.__name__}: t must be a real number"):
        fn(a, a, "0.5")


@pytest.mark.parametrize("call, exc, match", [
    (lambda x: fij.warp_affine(x, jnp.eye(2, 3, dtype=jnp.complex64), (4, 4)), TypeError,
     r"^warp_affine: M must hold real numbers"),
    (lambda x: fij.warp_perspective(x, jnp.eye(3, dtype=bool), (4, 4)), TypeError,
     r"^warp_perspective: M must hold real numbers"),
    (lambda x: fij.warp_affine(x, jnp.eye(2, 3), "ab"), TypeError,
     r"^warp_affine: dsize must be a sequence \(H_out, W_out\) of ints; got 'ab'"),
    (lambda x: fij.warp_affine(x, jnp.eye(2, 3), (4, 4), padding_mode="edge"), ValueError,
     r"^warp_affine: padding_mode must be one of"),
    (lambda x: fij.rotate(x, float("nan")), ValueError, r"^rotate: angle must be finite; got nan"),
    (lambda x: fij.rotate(x, 30, scale=None), TypeError, r"^rotate: scale must be a real number"),
    (lambda x: fij.rotate(x, 30, center=3), TypeError, r"^rotate: center must be a pair"),
    (lambda x: fij.rotate(x, 30, scale=0), ValueError, r"^rotate: scale must be non-zero; got 0"),
    (lambda x: fij.warp_affine(x, jnp.eye(2, 3), (4, 4), align_corners=True), ValueError,
     r"^warp_affine: align_corners applies to match='torch' only"),
    (lambda x: fij.warp_perspective(x, jnp.eye(3), (4, 4), match="torch", inverse_map=True),
     ValueError, r"^warp_perspective: inverse_map applies to match='opencv' only"),
    (lambda x: fij.affine_grid(jnp.zeros((1, 2, 3)), ("a", 1, 4, 4)), TypeError,
     r"^affine_grid: size must be a sequence"),
    (lambda x: fij.resize(x, "ab"), TypeError,
     r"^resize: size must be a positive int or a pair of them \(H, W\); got 'ab'"),
    (lambda x: fij.adaptive_avg_pool2d(x, "ab"), TypeError,
     r"^adaptive_avg_pool2d: output_size must be an int or a pair \(H, W\); got 'ab'"),
    (lambda x: fij.adaptive_avg_pool1d(x[0], "a"), TypeError,
     r"^adaptive_avg_pool1d: output_size must be an int or a sequence of 1; got 'a'"),
    (lambda x: fij.adaptive_avg_pool2d(x, 2**70), ValueError,
     r"^adaptive_avg_pool2d: output_size must give an output of at most 2\*\*31 - 1"),
    # an empty image: the trace-time check ran on a 1 x 1 stand-in
    (lambda x: fij.rotate(x[:, :, :0], 30), ValueError, r"^rotate: img must have H >= 1"),
    (lambda x: fij.warp_affine(x[..., :0], jnp.eye(2, 3), (3, 3)), ValueError,
     r"^warp_affine: img must have H >= 1"),
    (lambda x: fij.warp_perspective(x[:, :, :0], jnp.eye(3), (3, 3)), ValueError,
     r"^warp_perspective: img must have H >= 1"),
])
def test_hostile_warp_arguments_name_the_op(call, exc, match):
    with pytest.raises(exc, match=match):
        call(jnp.zeros((1, 2, 4, 4)))


def test_integer_matrices_warp_as_float():
    x = jnp.arange(16.0).reshape(1, 1, 4, 4)
    M = [[1, 0, 1], [0, 1, 0]]
    np.testing.assert_array_equal(fij.warp_affine(x, jnp.array(M), (4, 4)),
                                  fij.warp_affine(x, jnp.array(M, jnp.float32), (4, 4)))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_through_jax(rng, dtype):
    dt = jnp.dtype(dtype)
    x = jnp.asarray(rng.standard_normal((1, 2, 5, 5)), dt)
    g = jnp.asarray(grid_off_knots(rng, (1, 3, 3), 5, 5, False), jnp.float32)
    y = fij.grid_sample(x, g)
    assert y.dtype == dt
    np.testing.assert_array_equal(np.asarray(y), fi.grid_sample(np.asarray(x), np.asarray(g)))
    gx, gg = jax.grad(lambda x, g: fij.grid_sample(x, g).astype(jnp.float32).sum(),
                      argnums=(0, 1))(x, g)
    assert gx.dtype == dt and gg.dtype == jnp.float32
    assert fij.resize(x, size=(3, 4)).dtype == dt


# ------------------------------------------------------------------ the merged API's options

def grid3d_off_knots(rng, shape, dhw, align):
    """Like grid_off_knots for volumes: (x, y) off the knots of (H, W), z of D."""
    g = np.empty(shape + (3,))
    g[..., :2] = grid_off_knots(rng, shape, dhw[1], dhw[2], align)
    g[..., 2] = grid_off_knots(rng, shape, dhw[0], dhw[0], align)[..., 0]
    return g


@pytest.mark.parametrize("mode, pad, align, fill", [
    ("bilinear", "constant", False, (0.5, -1.0)), ("bicubic", "wrap", True, None),
    ("nearest", "constant", True, 2.0)])
def test_constant_and_wrap_padding(rng, mode, pad, align, fill):
    x = rng.standard_normal((1, 2, 4, 5))
    g = grid_off_knots(rng, (1, 3, 2), 4, 5, align)
    kw = dict(mode=mode, padding_mode=pad, align_corners=align, fill=fill)
    y = fij.grid_sample(jnp.asarray(x), jnp.asarray(g), **kw)
    np.testing.assert_array_equal(np.asarray(y), fi.grid_sample(x, g, **kw))
    rev(lambda x, g: fij.grid_sample(x, g, **kw), jnp.asarray(x), jnp.asarray(g))


@pytest.mark.parametrize("mode, pad, align", [("bilinear", "zeros", False),
                                              ("bicubic", "reflection", True),
                                              ("bilinear", "wrap", True)])
def test_volume_grid_sample_and_affine_grid_3d(rng, mode, pad, align):
    x = rng.standard_normal((1, 2, 3, 4, 3))
    g = grid3d_off_knots(rng, (1, 2, 2, 2), (3, 4, 3), align)
    kw = dict(mode=mode, padding_mode=pad, align_corners=align)
    y = fij.grid_sample(jnp.asarray(x), jnp.asarray(g), **kw)
    np.testing.assert_array_equal(np.asarray(y), fi.grid_sample(x, g, **kw))
    rev(lambda x, g: fij.grid_sample(x, g, **kw), jnp.asarray(x), jnp.asarray(g))
    theta = np.eye(3, 4)[None] + rng.uniform(-0.2, 0.2, (2, 3, 4))
    got = fij.affine_grid(jnp.asarray(theta), (2, 1, 2, 3, 4), align)
    np.testing.assert_allclose(np.asarray(got), fi.affine_grid(theta, (2, 1, 2, 3, 4), align),
                               rtol=1e-14, atol=1e-14)
    rev(lambda th: fij.affine_grid(th, (2, 1, 2, 3, 4), align), jnp.asarray(theta))


@pytest.mark.parametrize("shape, call", [
    ((2, 3, 7), lambda m, x: m.resize(x, 5, mode="linear")),
    ((1, 2, 8), lambda m, x: m.resize(x, scale_factor=0.5, mode="area")),
    ((1, 2, 3, 4, 5), lambda m, x: m.resize(x, (4, 3, 6), mode="trilinear", align_corners=True)),
    ((2, 3, 7), lambda m, x: m.adaptive_avg_pool1d(x, 3)),
    ((1, 2, 3, 5, 4), lambda m, x: m.adaptive_avg_pool3d(x, (2, None, 3))),
    ((5, 4, 3), lambda m, x: m.resize(x, (3, 7), mode="bicubic", layout="HWC")),
    ((3, 5, 4), lambda m, x: m.adaptive_avg_pool2d(x, (2, 3), layout="CHW")),
    ((5, 4), lambda m, x: m.resize(x, (6, 2), mode="lanczos", layout="HW")),
])
def test_nd_data_layouts_and_pools(rng, shape, call):
    x = rng.standard_normal(shape)
    got = call(fij, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), call(fi, x), rtol=1e-13, atol=1e-13)
    rev(lambda x: call(fij, x), jnp.asarray(x))


@pytest.mark.parametrize("layout", ["CHW", "HWC", "HW"])
def test_single_image_grid_sample_and_vmap(rng, layout):
    x = rng.standard_normal({"CHW": (2, 4, 5), "HWC": (4, 5, 2), "HW": (4, 5)}[layout])
    g = grid_off_knots(rng, (3, 2), 4, 5, False)
    y = fij.grid_sample(jnp.asarray(x), jnp.asarray(g), "bicubic", layout=layout)
    np.testing.assert_array_equal(np.asarray(y), fi.grid_sample(x, g, "bicubic", layout=layout))
    rev(lambda x, g: fij.grid_sample(x, g, layout=layout), jnp.asarray(x), jnp.asarray(g))
    xs = jnp.stack([jnp.asarray(x), jnp.asarray(x) * 2])
    mapped = jax.vmap(lambda x: fij.grid_sample(x, jnp.asarray(g), layout=layout))(xs)
    np.testing.assert_allclose(np.asarray(mapped[1]), 2 * fi.grid_sample(x, g, layout=layout),
                               rtol=1e-13, atol=1e-13)


def test_presets_and_uint8_are_forward_only(rng):
    u8 = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    for match, mode in (("opencv", "bilinear"), ("pil", "lanczos")):
        got = fij.resize(jnp.asarray(u8), (4, 5), mode=mode, layout="HWC", match=match)
        assert got.dtype == jnp.uint8
        np.testing.assert_array_equal(np.asarray(got), fi.resize(u8, (4, 5), mode=mode,
                                                                 layout="HWC", match=match))
    x = jnp.asarray(rng.standard_normal((1, 2, 6, 6)))
    with pytest.raises(TypeError, match=r"resize: match='opencv' has no gradient"):
        jax.grad(lambda x: fij.resize(x, (3, 3), match="opencv").sum())(x)


@pytest.mark.parametrize("op, rows, match, pad", [
    ("warp_affine", 2, "opencv", "zeros"), ("warp_perspective", 3, "torch", "constant")])
def test_warps_values_and_check_grads(rng, op, rows, match, pad):
    x = rng.standard_normal((2, 2, 5, 6))
    M = np.eye(rows, 3) + rng.uniform(-0.05, 0.05, (rows, 3))
    M[:2, 2] += 0.37 if match == "opencv" else 0.07
    if rows == 3:
        M[2, :2] = rng.uniform(-0.02, 0.02, 2)
    kw = dict(padding_mode=pad, match=match, fill=0.25 if pad == "constant" else None)
    y = getattr(fij, op)(jnp.asarray(x), jnp.asarray(M), (4, 5), **kw)
    np.testing.assert_array_equal(np.asarray(y), getattr(fi, op)(x, M, (4, 5), **kw))
    rev(lambda x, m: getattr(fij, op)(x, m, (4, 5), **kw), jnp.asarray(x), jnp.asarray(M))
    jitted = jax.jit(lambda x, m: getattr(fij, op)(x, m, (4, 5), **kw))
    np.testing.assert_array_equal(np.asarray(jitted(jnp.asarray(x), jnp.asarray(M))),
                                  np.asarray(y))


def test_rotate_and_half_precision_warp(rng):
    x = rng.standard_normal((5, 6, 2))
    y = fij.rotate(jnp.asarray(x), 23.0, scale=0.9, layout="HWC")
    np.testing.assert_array_equal(np.asarray(y), fi.rotate(x, 23.0, scale=0.9, layout="HWC"))
    rev(lambda x: fij.rotate(x, 23.0, scale=0.9, layout="HWC"), jnp.asarray(x))
    h = jnp.asarray(x, jnp.bfloat16)
    gx = jax.grad(lambda h: fij.rotate(h, 23.0, layout="HWC").astype(jnp.float32).sum())(h)
    assert fij.rotate(h, 23.0, layout="HWC").dtype == jnp.bfloat16 and gx.dtype == jnp.bfloat16


def test_batched_distances_broadcast_like_cdist(rng):
    x, y = rng.standard_normal((2, 4, 3)), rng.standard_normal((5, 3))
    got = fij.pairwise_sqdist(jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got), fi.pairwise_sqdist(x, y), rtol=1e-13)
    rev(fij.pairwise_sqdist, jnp.asarray(x), jnp.asarray(y))
    rev(fij.pairwise_l2, jnp.asarray(x), jnp.asarray(y[None].repeat(2, 0)))


def test_numpy_scalar_sizes_are_static_values():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 2, 8, 6)), jnp.float32)
    want = fij.resize(x, size=4)
    np.testing.assert_array_equal(fij.resize(x, size=np.int64(4)), want)
    np.testing.assert_array_equal(fij.resize(x, size=(np.int32(4), 4)), want)
    np.testing.assert_array_equal(fij.resize(x, size=np.array([4, 4])), want)
    np.testing.assert_array_equal(fij.resize(x, scale_factor=np.float32(0.5)),
                                  fij.resize(x, scale_factor=0.5))
    np.testing.assert_array_equal(fij.adaptive_avg_pool2d(x, np.int64(3)),
                                  fij.adaptive_avg_pool2d(x, 3))
    with pytest.raises((TypeError, ValueError), match="resize: size"):
        fij.resize(x, size=4.5)



@pytest.fixture
def x32():
    """JAX's default: 64-bit types off (arrays made from float64 data are float32)."""
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("trace", [lambda f: f, jax.jit])
def test_constant_matrices_keep_float64_without_x64(rng, x32, trace):
    """rotate's matrix, and a constant NumPy float64 M, are read on the host in float64
    as the NumPy API reads them: the same bits as fi.rotate / fi.warp_* on float32 images
    (a float32 matrix moves points of a large image by ~1e-4 pixels)."""
    x = rng.standard_normal((1, 2, 300, 257)).astype(np.float32)
    M = fi.rotation_matrix(31.7, center=(130.3, 141.1), scale=1.07)
    cases = [(lambda v: fij.rotate(v, 31.7, scale=1.07), lambda v: fi.rotate(v, 31.7, scale=1.07)),
             (lambda v: fij.warp_affine(v, M, (280, 260)), lambda v: fi.warp_affine(v, M, (280, 260))),
             (lambda v: fij.warp_perspective(v, np.vstack([M, [1e-5, 2e-5, 1]]), (64, 64)),
              lambda v: fi.warp_perspective(v, np.vstack([M, [1e-5, 2e-5, 1]]), (64, 64)))]
    for jax_call, numpy_call in cases:
        got = trace(jax_call)(jnp.asarray(x))
        np.testing.assert_array_equal(np.asarray(got), numpy_call(x))
    gx = jax.grad(lambda v: fij.rotate(v, 31.7).sum())(jnp.asarray(x))
    np.testing.assert_array_equal(
        np.asarray(gx), fi.warp_affine_backward(np.ones((1, 2, 300, 257), np.float32), x,
                                                fi.rotation_matrix(31.7, center=(128, 149.5)),
                                                (300, 257), needs_matrix_grad=False)[0])


@pytest.mark.parametrize("op, M", [
    ("warp_affine", np.array([[np.nan, 0, 0], [0, 1, 0]])),
    ("warp_affine", np.array([[1, 0, np.inf], [0, 1, 0]])),
    ("warp_affine", np.zeros((2, 3))),
    ("warp_affine", np.stack([np.eye(2, 3), np.zeros((2, 3))])),
    ("warp_perspective", np.zeros((3, 3))),
    ("warp_perspective", np.array([[1, 0, 0], [0, 1, 0], [0, 0, np.nan]])),
])
@pytest.mark.parametrize("trace", [lambda f: f, jax.jit])
def test_constant_matrices_are_checked_at_trace_time(op, M, trace):
    """A matrix known when tracing (NumPy or concrete JAX) gets the NumPy API's checks
    then (finite, invertible), not an error from inside the compiled call."""
    x = np.ones((2, 1, 5, 5))
    with pytest.raises(ValueError) as numpy_error:
        getattr(fi, op)(x, M, (4, 4))
    for m in (M, jnp.asarray(M)):
        with pytest.raises(ValueError) as jax_error:
            trace(lambda v: getattr(fij, op)(v, m, (4, 4)))(jnp.asarray(x))
        assert str(jax_error.value) == str(numpy_error.value)


@pytest.mark.parametrize("a, b, t", [((3,), (4,), 0.5), ((2, 3), (3,), np.ones(4)),
                                     ((3,), (3,), 0.5 + 1j), ((3,), (3,), np.ones(3, np.complex64)),
                                     ((3,), (3,), np.ones(3, int))])
@pytest.mark.parametrize("fn", ["lerp", "slerp"])
def test_blend_argument_errors_are_the_numpy_ones(fn, a, b, t):
    with pytest.raises((TypeError, ValueError)) as numpy_error:
        getattr(fi, fn)(np.ones(a), np.ones(b), t)
    jt = t if np.isscalar(t) else jnp.asarray(t)
    with pytest.raises(type(numpy_error.value)) as jax_error:
        getattr(fij, fn)(jnp.ones(a), jnp.ones(b), jt)
    assert str(jax_error.value) == str(numpy_error.value)


@pytest.mark.parametrize("theta, size", [((2, 3), (1, 1, 4, 4)), ((3, 4), (1, 1, 2, 4, 4)),
                                         ((2, 3), (2, 1, 4, 4)), ((), (1, 1, 4, 4)),
                                         ((1, 2, 3), (1, 1, 2, 4, 4))])
def test_affine_grid_theta_shape_errors_are_the_numpy_ones(theta, size):
    with pytest.raises((TypeError, ValueError)) as numpy_error:
        fi.affine_grid(np.zeros(theta), size)
    with pytest.raises(type(numpy_error.value)) as jax_error:
        fij.affine_grid(jnp.zeros(theta), size)
    assert str(jax_error.value) == str(numpy_error.value)


@pytest.mark.parametrize("rank, shape", [(1, (3, 8)), (3, (2, 5, 2, 7))])
def test_pools_take_one_unbatched_item(rng, rank, shape):
    x = rng.random(shape)
    pool = getattr(fij, f"adaptive_avg_pool{rank}d")
    np.testing.assert_array_equal(np.asarray(pool(jnp.asarray(x), 3)),
                                  getattr(fi, f"adaptive_avg_pool{rank}d")(x, 3))
    rev(lambda v: pool(v, 3), jnp.asarray(x))


# --------------------------------------------------------------------------- eager calls

_EAGER_CALLS = {
    "grid_sample": lambda x: fij.grid_sample(x, jnp.zeros((1, 3, 3, 2))),
    "affine_grid": lambda x: fij.affine_grid(jnp.ones((1, 2, 3)), (1, 1, 4, 4)),
    "resize": lambda x: fij.resize(x, (3, 5)),
    "adaptive_avg_pool2d": lambda x: fij.adaptive_avg_pool2d(x, 2),
    "pairwise_sqdist": lambda x: fij.pairwise_sqdist(x[0, 0]),
    "pairwise_l2": lambda x: fij.pairwise_l2(x[0, 0], x[0, 0] + 1),
    "lerp": lambda x: fij.lerp(x, x + 1, 0.3),
    "slerp": lambda x: fij.slerp(x[0, 0], x[0, 0] + 1, 0.3),
    "warp_affine": lambda x: fij.warp_affine(x, jnp.eye(2, 3), (4, 4)),
    "warp_affine_constant_M": lambda x: fij.warp_affine(x, np.eye(2, 3), (4, 4)),
    "rotate": lambda x: fij.rotate(x, 30.0),
}


@pytest.mark.parametrize("name", list(_EAGER_CALLS))
def test_repeated_eager_calls_compile_once(name):
    """Outside jit each call of an op ran a callback JAX had not seen (a new host
    function object per call): XLA compiled it again, 14 ms a call, and kept every
    executable (about 1.4 MiB a call, never given back). Repeated calls, forward and
    backward, now compile nothing new."""
    with compile_events() as compiles:
        x = jnp.asarray(np.random.default_rng(0).random((1, 1, 4, 4)))
        call = _EAGER_CALLS[name]
        loss = lambda x: (call(x) ** 2).sum()       # noqa: E731
        call(x).block_until_ready()
        jax.grad(loss)(x).block_until_ready()
        before = len(compiles)
        for _ in range(3):
            call(x).block_until_ready()
            jax.grad(loss)(x).block_until_ready()
        assert len(compiles) == before


@contextlib.contextmanager
def compile_events():
    """A list that collects XLA's compile events while the block runs."""
    monitoring = pytest.importorskip("jax._src.monitoring")
    if not hasattr(monitoring, "unregister_event_duration_listener"):
        pytest.skip("this JAX has no compile-event listeners")
    compiles = []

    def count(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)
    monitoring.register_event_duration_secs_listener(count)
    try:
        yield compiles
    finally:
        monitoring.unregister_event_duration_listener(count)


_VARYING_CALLS = {
    "lerp": (lambda x, v: fij.lerp(x, x + 1, v), lambda x, v: fi.lerp(x, x + 1, v)),
    "slerp": (lambda x, v: fij.slerp(x[0, 0], x[0, 0] + 1, v),
              lambda x, v: fi.slerp(x[0, 0], x[0, 0] + 1, v)),
    "rotate": (lambda x, v: fij.rotate(x, 100 * v), lambda x, v: fi.rotate(x, 100 * v)),
    "warp_affine_constant_M": (
        lambda x, v: fij.warp_affine(x, np.array([[1, v, 0], [0, 1, v]]), (4, 4)),
        lambda x, v: fi.warp_affine(x, np.array([[1, v, 0], [0, 1, v]]), (4, 4))),
    "grid_sample_fill": (
        lambda x, v: fij.grid_sample(x, jnp.full((1, 2, 2, 2), 2.0, x.dtype), padding_mode="constant",
                                     fill=v),
        lambda x, v: fi.grid_sample(x, np.full((1, 2, 2, 2), 2.0, x.dtype),
                                    padding_mode="constant", fill=v)),
    "warp_fill": (
        lambda x, v: fij.warp_affine(x, jnp.eye(2, 3) * 3, (4, 4), padding_mode="constant",
                                     fill=(v,)),
        lambda x, v: fi.warp_affine(x, np.eye(2, 3) * 3, (4, 4), padding_mode="constant",
                                    fill=(v,))),
}


@pytest.mark.parametrize("name", list(_VARYING_CALLS))
def test_new_constant_values_compile_nothing_new(name):
    """A constant that changes from call to call (a weight t, an angle, a fill, a warp
    matrix: random augmentation) made a new callback each time, which XLA compiled and
    kept (40 ms and 1.4 MiB a call, without bound). The values travel as an operand; a
    weight of -0.0 keeps its sign (it shared 0.0's callback)."""
    call, numpy_call = _VARYING_CALLS[name]
    x = np.random.default_rng(0).random((1, 1, 4, 4)).astype(np.float32)
    with compile_events() as compiles:
        call(jnp.asarray(x), 0.25).block_until_ready()
        before = len(compiles)
        got = {v: np.asarray(call(jnp.asarray(x), v)) for v in (0.0, -0.0, 0.125, 0.375)}
        assert len(compiles) == before
    for v, y in got.items():
        want = numpy_call(x, v)
        np.testing.assert_array_equal(y, want)
        np.testing.assert_array_equal(np.signbit(y), np.signbit(want))


def test_lerp_half_precision_gradients_are_float32_rounded_once():
    """lerp's gradients were computed in the cotangent's half dtype: now in float32 and
    rounded once to each primal's dtype, as fastinterp.torch and the NumPy API do."""
    a = jnp.asarray(np.array([0.1, 0.7], np.float16))
    b = jnp.asarray(np.array([1.3, -0.9], np.float16))
    t = jnp.asarray(np.array([0.3, 0.6], np.float32))
    w = jnp.asarray(np.array([1.7, -2.3], np.float16))
    _, vjp = jax.vjp(fij.lerp, a, b, t)
    ga, gb, gt = vjp(w)
    f32 = [np.asarray(v, np.float32) for v in (a, b, t, w)]
    np.testing.assert_array_equal(gt, f32[3] * (f32[1] - f32[0]))       # float32, unrounded
    np.testing.assert_array_equal(ga, (f32[3] * (1 - f32[2])).astype(np.float16))
    np.testing.assert_array_equal(gb, (f32[3] * f32[2]).astype(np.float16))


@pytest.mark.parametrize("op", [fij.lerp, fij.slerp])
def test_weight_errors_are_the_numpy_apis(op):
    a = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="t must be representable"):
        op(a, a, 10 ** 400)
    np.testing.assert_allclose(op(a, a + 1, np.float32(0.25)), op(a, a + 1, 0.25))


@pytest.mark.parametrize("kw, exc, match", [
    ({"antialias": [1]}, TypeError, "resize: antialias must be a bool; got list"),
    ({"mode": ["bilinear"]}, ValueError, "resize: mode must be one of"),
    ({"match": {}}, ValueError, "resize: match must be one of"),
])
def test_unhashable_options_get_the_numpy_apis_error(kw, exc, match):
    with pytest.raises(exc, match=match):
        fij.resize(jnp.ones((1, 1, 4, 4)), (2, 2), **kw)


def test_uint8_images_are_forward_only():
    img = jnp.asarray(np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4))
    g = jnp.zeros((1, 1, 2, 2))
    M = jnp.asarray(np.eye(2, 3))
    for call, arg in ((lambda g: fij.grid_sample(img, g), g),
                      (lambda m: fij.warp_affine(img, m, (4, 4)), M)):
        y, vjp = jax.vjp(call, arg)
        assert y.dtype == jnp.uint8
        with pytest.raises(TypeError, match="a uint8 image has no gradient"):
            vjp(np.zeros(y.shape, jax.dtypes.float0))


_IMG = np.linspace(-1, 1, 2 * 3 * 5 * 5).reshape(2, 3, 5, 5)


@pytest.mark.parametrize("op, call", [
    ("resize", lambda x: fij.resize(x, size=(7, 7), mode="bicubic")),
    ("adaptive_avg_pool2d", lambda x: fij.adaptive_avg_pool2d(x, 3)),
    ("grid_sample", lambda x: fij.grid_sample(_IMG, jnp.stack([x[:, 0], x[:, 1]], -1) * 0.9)),
    ("pairwise_l2", lambda x: fij.pairwise_l2(x[0, 0], x[1, 0] + 0.1)),
    ("slerp", lambda x: fij.slerp(x[0, 0], x[1, 0] + 2.0, 0.3)),
    ("warp_affine", lambda x: fij.warp_affine(x, np.array([[0.9, 0.1, 0.2], [-0.1, 1.1, 0]]),
                                              (4, 4))),
    ("affine_grid", lambda x: fij.affine_grid(x[:, 0, :2, :3], (2, 1, 4, 4))),
])
def test_second_order_derivatives_are_a_clear_error_naming_the_op(x64, op, call):
    """grad of grad through a compiled backward: JAX's own error named no op."""
    def loss(x):
        return (call(x) ** 2).sum()

    x = jnp.asarray(_IMG)
    jax.grad(loss)(x)             # first order works
    with pytest.raises(TypeError, match=rf"^fastinterp.jax.{op}: second-order derivatives"):
        jax.grad(lambda x: jax.grad(loss)(x).sum())(x)


def test_second_order_derivative_of_a_linear_op_under_a_sum_stays_zero(x64):
    """Its gradient does not depend on the input: nothing to differentiate, no error."""
    x = jnp.asarray(_IMG)
    hess_sum = jax.grad(lambda x: jax.grad(lambda x: fij.resize(x, size=(7, 7)).sum())(x).sum())
    np.testing.assert_array_equal(np.asarray(hess_sum(x)), 0.0)


@pytest.mark.parametrize("op, arg, call", [
    ("resize", "input", lambda v: fij.resize(v, size=(2, 2))),
    ("adaptive_avg_pool3d", "input", lambda v: fij.adaptive_avg_pool3d(v, 2)),
    ("grid_sample", "grid", lambda v: fij.grid_sample(jnp.ones((1, 1, 4, 4)), v)),
    ("affine_grid", "theta", lambda v: fij.affine_grid(v, (1, 1, 2, 2))),
    ("pairwise_l2", "y", lambda v: fij.pairwise_l2(jnp.ones((2, 2)), v)),
    ("lerp", "a", lambda v: fij.lerp(v, jnp.ones(2), 0.5)),
    ("slerp", "b", lambda v: fij.slerp(jnp.ones(2), v, 0.5)),
    ("warp_affine", "img", lambda v: fij.warp_affine(v, np.eye(2, 3), (3, 3))),
])
@pytest.mark.parametrize("value", ["ab", [None, 1.0]], ids=repr)
def test_strings_and_objects_are_the_numpy_apis_type_error(op, arg, call, value):
    """JAX's own errors ("not a valid JAX array type") named neither op nor argument."""
    with pytest.raises(TypeError, match=rf"^{op}: {arg} must be a real number or an array of "
                                        rf"reals .*; got {type(value).__name__} "):
        call(value)


@pytest.mark.parametrize("op, arg, call", [
    ("resize", "input", lambda m, v: m.resize(v, size=(2, 2))),
    ("adaptive_avg_pool1d", "input", lambda m, v: m.adaptive_avg_pool1d(v, 2)),
    ("grid_sample", "input", lambda m, v: m.grid_sample(v, np.zeros((1, 2, 2, 2)))),
    ("grid_sample", "grid", lambda m, v: m.grid_sample(np.ones((1, 1, 4, 4)), v)),
    ("affine_grid", "theta", lambda m, v: m.affine_grid(v, (1, 1, 2, 2))),
    ("pairwise_sqdist", "x", lambda m, v: m.pairwise_sqdist(v)),
    ("pairwise_l2", "y", lambda m, v: m.pairwise_l2(np.ones((2, 2)), v)),
    ("slerp", "a", lambda m, v: m.slerp(v, np.ones(2), 0.5)),
    ("warp_perspective", "img", lambda m, v: m.warp_perspective(v, np.eye(3), (3, 3))),
    ("rotate", "img", lambda m, v: m.rotate(v, 30.0)),
])
@pytest.mark.parametrize("value", [1.5, 2, True], ids=repr)
def test_a_python_number_for_an_array_is_the_numpy_apis_type_error(op, arg, call, value):
    """It was read as a 0-d array: a ValueError about its shape () instead."""
    for module in (fij, fi):
        with pytest.raises(TypeError, match=rf"^{op}: {arg} must be an array; "
                                            rf"got {type(value).__name__}\.$"):
            call(module, value)


@pytest.mark.parametrize("a, b", [(1.0, 2.0), (np.float32(1), 2), (1, np.float64(2.0))], ids=repr)
def test_lerp_of_two_scalars_is_the_numpy_apis_type_error(a, b):
    for lerp in (fij.lerp, fi.lerp):
        with pytest.raises(TypeError, match="^lerp: a or b must be an array; got two scalars"):
            lerp(a, b, 0.5)
    np.testing.assert_array_equal(np.asarray(fij.lerp(1.0, jnp.ones(2), 0.5)), [1.0, 1.0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("jit", [False, True])
def test_lerp_number_operand_is_read_as_the_numpy_api_reads_it(dtype, jit):
    """A number operand was cast to the array's dtype unchecked under jit (1e300 with
    float32 arrays: inf; 1e5 with float16: inf) and refused eagerly for half precision,
    where the NumPy API reads it in float32 (lerp(1e5, ones_f16, 0.999) = 101)."""
    import ml_dtypes
    np_dtype = np.dtype(getattr(ml_dtypes, dtype, None) or dtype)
    rng = np.random.default_rng(3)
    b = rng.uniform(-2, 2, 6).astype(np_dtype)
    t = rng.uniform(-0.5, 1.5, 6).astype(np_dtype)
    wrap = jax.jit if jit else (lambda f: f)
    for number in (1e5, -7e4, 3.25, 1e30, np.int64(2), np.float64(2.5), np.float16(0.1)):
        for call in (lambda m, b_, t_: m.lerp(number, b_, t_),
                     lambda m, b_, t_: m.lerp(b_, number, t_)):
            with np.errstate(over="ignore"):
                want = call(fi, b, t)
            got = wrap(lambda b_, t_: call(fij, b_, t_))(jnp.asarray(b), jnp.asarray(t))
            assert got.dtype == np_dtype
            np.testing.assert_array_equal(np.asarray(got).astype(np.float64),
                                          want.astype(np.float64))
    too_big = 1e300 if np_dtype != np.float64 else None
    if too_big is not None:
        with pytest.raises(ValueError, match="^lerp: a must be representable in float32"):
            fi.lerp(too_big, b, t)
        with pytest.raises(ValueError, match="^lerp: a must be representable in float32"):
            wrap(lambda b_, t_: fij.lerp(too_big, b_, t_))(jnp.asarray(b), jnp.asarray(t))


@pytest.mark.parametrize("M", ["ab", [[1, 0, 0], [0, 1, None]]], ids=repr)
def test_a_constant_matrix_of_non_numbers_is_the_numpy_apis_type_error(M):
    with pytest.raises(TypeError, match=r"^warp_affine: M must hold real numbers"):
        fij.warp_affine(jnp.ones((1, 1, 6, 6)), M, (5, 5))


def test_a_list_of_traced_values_is_an_array_under_grad():
    """A theta built as a list from traced parameters (the NumPy conversion that checks
    for strings must not see the tracers)."""
    weights = jnp.arange(32.0).reshape(1, 4, 4, 2)

    def loss(a, as_list):
        c, s = jnp.cos(a), jnp.sin(a)
        rows = [[[c, -s, 0.0], [s, c, 0.0]]]
        theta = rows if as_list else jnp.array(rows)
        return jnp.sum(fij.affine_grid(theta, (1, 1, 4, 4)) * weights)

    assert float(jax.grad(loss)(0.3, True)) == float(jax.grad(loss)(0.3, False))
    assert float(jax.jit(loss, static_argnums=1)(0.3, True)) == float(loss(0.3, False))


def test_a_matrix_given_as_nested_lists_of_traced_values_is_traced():
    img = jnp.asarray(np.random.default_rng(5).random((1, 1, 4, 4)))

    def warped(s):
        return fij.warp_affine(img, [[1.0, 0.0, s], [0.0, 1.0, 0.0]], (4, 4)).sum()

    assert float(jax.jit(warped)(0.5)) == float(warped(0.5))
    assert np.isfinite(float(jax.grad(warped)(0.5)))


def test_a_traced_fill_is_a_type_error_saying_it_must_be_static():
    img, grid = jnp.ones((1, 1, 3, 3)), jnp.full((1, 2, 2, 2), 5.0)
    with pytest.raises(TypeError, match=r"^grid_sample: fill must be static"):
        jax.jit(lambda s: fij.grid_sample(img, grid, padding_mode="constant", fill=s))(
            jnp.array(2.0))


def test_python_scalars_take_the_dtype_of_the_arrays_beside_them():
    """With x64 a Python scalar is a weakly typed float64: next to float32 arrays it takes
    their dtype, as in JAX's arithmetic (the NumPy API's same-dtype check refused it)."""
    a = jnp.ones(3, jnp.float32)
    b = jnp.zeros(3, jnp.float32)
    assert fij.lerp(a, 2.0, 0.5).dtype == jnp.float32
    np.testing.assert_array_equal(fij.lerp(a, 2.0, 0.5), fi.lerp(np.ones(3, np.float32), 2.0, 0.5))
    np.testing.assert_array_equal(jax.jit(fij.lerp)(a, b, 0.3), fi.lerp(np.ones(3, np.float32),
                                                                      np.zeros(3, np.float32),
                                                                      np.float32(0.3)))
    assert float(jax.grad(lambda t: fij.lerp(a, b, t).sum())(0.3)) == -3.0
    u, v = jnp.array([1.0, 0.0], jnp.float32), jnp.array([0.0, 1.0], jnp.float32)
    assert jax.jit(fij.slerp)(u, v, 0.5).dtype == jnp.float32
    y = jax.jit(lambda x, s: fij.pairwise_sqdist(x, jnp.broadcast_to(s, (3, 1))))(
        jnp.ones((2, 1), jnp.float32), 2.0)
    np.testing.assert_array_equal(y, np.ones((2, 3), np.float32))
    img = jnp.ones((1, 1, 2, 2), jnp.float32)
    out = jax.jit(lambda s: fij.grid_sample(img, jnp.broadcast_to(s, (1, 1, 1, 2))))(0.0)
    assert out.dtype == jnp.float32
    assert jax.grad(lambda t: fij.slerp(u, v, t).sum())(0.5).dtype == jnp.float64


@pytest.mark.parametrize("call", [
    lambda z, v: fij.rotate(z, v),
    lambda z, v: fij.warp_affine(z, np.array([[1.0, 0.1 * v, 0], [0, 1, 0]]), (3, 4)),
    lambda z, v: fij.slerp(z[0, 0, 0], z[0, 0, 0] + 1, v / 100),
])
def test_vmapped_constants_compile_once_per_value(call):
    """Under jax.vmap a constant passed as data became a constant of the per-element loop,
    compiled again at every call (1.7 MiB each), even for the same value."""
    x = jnp.asarray(np.random.default_rng(0).random((2, 1, 1, 3, 4)), jnp.float32)
    f = lambda v: jax.vmap(lambda z: call(z, v))(x)      # noqa: E731
    with compile_events() as compiles:
        f(10.0).block_until_ready()
        before = len(compiles)
        for _ in range(3):
            f(10.0).block_until_ready()
        assert len(compiles) == before


@pytest.mark.parametrize("name, call", [
    ("size", lambda v: fij.resize(jnp.ones((1, 1, 8, 8)), size=v)),
    ("scale_factor", lambda v: fij.resize(jnp.ones((1, 1, 8, 8)), scale_factor=v)),
    ("output_size", lambda v: fij.adaptive_avg_pool2d(jnp.ones((1, 1, 8, 8)), v)),
    ("size", lambda v: fij.affine_grid(jnp.zeros((1, 2, 3)), v | {1, 3} if isinstance(v, set)
                                       else {**v, 1: 0, 3: 0})),
    ("dsize", lambda v: fij.warp_affine(jnp.ones((1, 1, 4, 4)), np.eye(2, 3), v)),
])
@pytest.mark.parametrize("unordered", [lambda: {5, 4}, lambda: {5: 0, 4: 0}], ids=["set", "dict"])
def test_an_unordered_collection_of_sizes_is_the_numpy_apis_type_error(name, call, unordered):
    """_static read a set as a tuple, in the set's order: {5, 3} gave a 3 x 5 result."""
    with pytest.raises(TypeError, match=rf"{name} must be"):
        call(unordered())


def test_subnormals_are_the_numpy_apis():
    """XLA runs host callbacks with flush-to-zero set: a 1e-40 fill came out 0, and a lerp
    of subnormal arrays held flushed and unflushed halves (the caller's thread flushed,
    the team's other thread did not)."""
    a = np.full(300_000, 1e-39, np.float32)
    b = np.full(300_000, 3e-39, np.float32)
    with_threads = fi.get_num_threads()
    fi.set_num_threads(2)
    try:
        got = np.asarray(fij.lerp(jnp.asarray(a), jnp.asarray(b), 0.5))
    finally:
        fi.set_num_threads(with_threads)
    np.testing.assert_array_equal(got, fi.lerp(a, b, 0.5))
    img, grid = np.ones((1, 1, 2, 2), np.float32), np.full((1, 1, 1, 2), 5.0, np.float32)
    got = fij.grid_sample(jnp.asarray(img), jnp.asarray(grid), padding_mode="constant",
                          fill=1e-40)
    np.testing.assert_array_equal(got, fi.grid_sample(img, grid, padding_mode="constant",
                                                      fill=1e-40))


@pytest.mark.parametrize("call", [
    lambda g: fij.grid_sample(jnp.ones((1, 0, 4, 4)), g),
    lambda g: fij.grid_sample(jnp.ones((1, 4, 4, 0)), g, layout="NHWC"),
])
def test_vmapped_gradients_of_zero_size_arrays(call):
    """A mapped callback folded its axes into N with reshape((-1, ...)), which is
    ambiguous for a zero-size array: the backward of an empty image failed."""
    grads = jax.vmap(jax.grad(lambda g: call(g).sum()))(jnp.zeros((2, 1, 2, 2, 2)))
    np.testing.assert_array_equal(grads, np.zeros((2, 1, 2, 2, 2)))


@pytest.mark.parametrize("value", [np.zeros((0, 2, 3)), np.zeros((2, 0))])
def test_packed_values_of_no_bytes_unpack(value):
    words, layout = fij._packed({"M": value})
    for mapped in (words, np.broadcast_to(words, (3,) + words.shape)):
        got = fij._unpacked(mapped, layout)["M"]
        assert got.shape == value.shape and got.dtype == value.dtype


def _asked_gradients(monkeypatch):
    """A list of the (needs_input_grad, needs_<other>_grad) pairs that reach the NumPy
    backwards of grid_sample and of the warps while the test runs."""
    import inspect
    import fastinterp.warp
    asked = []

    def spy(real, other):
        def backward(*args, **kw):
            bound = inspect.signature(real).bind(*args, **kw)
            bound.apply_defaults()
            asked.append((bound.arguments["needs_input_grad"], bound.arguments[other]))
            return real(*args, **kw)
        return backward

    monkeypatch.setattr(fi, "grid_sample_backward",
                        spy(fi.grid_sample_backward, "needs_grid_grad"))
    monkeypatch.setattr(fastinterp.warp, "_backward", spy(fastinterp.warp._backward, "needs_matrix_grad"))
    return asked


_SAMPLERS = {
    "grid_sample": (lambda x, g: fij.grid_sample(x, g, mode="bicubic"),
                    lambda go, x, g: fi.grid_sample_backward(go, x, g, mode="bicubic"),
                    (2, 3, 5, 4), (2, 3, 2, 2)),
    "warp_affine": (lambda x, m: fij.warp_affine(x, m, (3, 4)),
                    lambda go, x, m: fi.warp_affine_backward(go, x, m, (3, 4)),
                    (2, 3, 5, 4), (2, 2, 3)),
    "warp_perspective": (lambda x, m: fij.warp_perspective(x, m, (3, 4), layout="NHWC"),
                         lambda go, x, m: fi.warp_perspective_backward(go, x, m, (3, 4),
                                                                       layout="NHWC"),
                         (2, 5, 4, 3), (3, 3)),
}


@pytest.mark.parametrize("name", list(_SAMPLERS))
@pytest.mark.parametrize("argnums", [(0,), (1,), (0, 1)])
@pytest.mark.parametrize("transform", ["eager", "jit", "vmap"])
def test_only_the_gradients_asked_for_are_computed(monkeypatch, rng, name, argnums, transform):
    """The backward computed the gradients of both arguments whatever jax.grad asked for
    (an input-only gradient of grid_sample cost 2.7x as much): it now computes those of
    the arguments differentiated, bit for bit as before."""
    call, numpy_bwd, x_shape, m_shape = _SAMPLERS[name]
    x = rng.standard_normal(x_shape)
    m = (grid_off_knots(rng, m_shape[1:3], 5, 4, False)[None].repeat(2, 0)
         if name == "grid_sample" else np.eye(m_shape[-2], 3) + 0.1 * rng.random(m_shape))
    go = rng.standard_normal(call(jnp.asarray(x), jnp.asarray(m)).shape)
    want = numpy_bwd(go, x, m)
    grad = jax.grad(lambda x, m: (call(x, m) * go).sum(), argnums=argnums)
    asked = _asked_gradients(monkeypatch)
    if transform == "vmap":
        got = [g[1] for g in jax.vmap(grad)(*(jnp.stack([v, v]) for v in (x, m)))]
    else:
        got = (jax.jit(grad) if transform == "jit" else grad)(jnp.asarray(x), jnp.asarray(m))
    assert set(asked) == {(0 in argnums, 1 in argnums)}
    for g, i in zip(got, argnums):
        np.testing.assert_array_equal(g, want[i])


_M = np.array([[0.9, 0.1, 0.2], [-0.1, 1.1, 0.0]])
_GRID = np.linspace(-0.9, 0.8, 2 * 3 * 2 * 2).reshape(2, 3, 2, 2)


@pytest.mark.parametrize("call", [
    lambda x: fij.warp_affine(x, _M, (4, 4)),
    lambda x: fij.warp_perspective(x, np.eye(3) + 0.01, (4, 4), layout="NHWC"),
    lambda x: fij.rotate(x, 30.0),
    lambda x: fij.grid_sample(x, _GRID),
    lambda x: fij.grid_sample(x, jnp.asarray(_GRID), mode="bicubic", padding_mode="reflection"),
])
@pytest.mark.parametrize("transform", ["eager", "jit"])
def test_second_derivative_of_a_linear_op_under_a_sum_is_zero_for_every_op(x64, call, transform):
    """The backward of a warp by a constant matrix (rotate's too) and grid_sample's input
    gradient took the input itself, though they read only its shape: grad of grad was a
    TypeError instead of 0."""
    x = jnp.ones((2, 3, 6, 5))
    hess_sum = jax.grad(lambda x: jax.grad(lambda x: call(x).sum())(x).sum())
    got = (jax.jit(hess_sum) if transform == "jit" else hess_sum)(x)
    np.testing.assert_array_equal(got, np.zeros(x.shape))


def test_second_derivative_in_the_image_of_a_warp_by_a_traced_matrix_is_zero(x64):
    """A traced M that is not differentiated: the image's gradient reads M, not the image."""
    x = jnp.ones((2, 3, 6, 5))

    def hess_sum(x, m):
        return jax.grad(lambda x: jax.grad(lambda x: fij.warp_affine(x, m, (4, 4)).sum())(x).sum())(x)

    np.testing.assert_array_equal(jax.jit(hess_sum)(x, jnp.asarray(_M)), np.zeros(x.shape))


def _spied(monkeypatch, name):
    """A list of the sizes (largest argument or result) of the calls of the NumPy op
    ``name`` that fastinterp.jax makes while the test runs."""
    import functools
    real, sizes = getattr(fi, name), []

    @functools.wraps(real)
    def op(*args, **kw):
        result = real(*args, **kw)
        sizes.append(max(np.size(v) for v in (*args, result) if hasattr(v, "shape")))
        return result

    monkeypatch.setattr(fi, name, op)
    return sizes


def _abstract(*shapes, dtype=jnp.float32):
    return [jax.ShapeDtypeStruct(s, dtype) for s in shapes]


@pytest.mark.parametrize("name, call, shapes, want", [
    ("pairwise_sqdist", fij.pairwise_sqdist, [(4000, 3), (3000, 3)], (4000, 3000)),
    ("pairwise_sqdist", fij.pairwise_sqdist, [(4000, 3)], (4000, 4000)),
    ("pairwise_l2", fij.pairwise_l2, [(5, 1, 900, 3), (4, 700, 3)], (5, 4, 900, 700)),
    ("lerp", fij.lerp, [(4000, 1), (1, 4000), (4000, 4000)], (4000, 4000)),
    ("lerp", lambda a, b: fij.lerp(a, b, 0.25), [(4000, 1), (1, 1, 4000)], (1, 4000, 4000)),
    ("slerp", fij.slerp, [(1000, 1000, 4), (1000, 1000, 4), (1000, 1)], (1000, 1000, 4)),
    ("slerp", lambda a, b, t: fij.slerp(a, b, t, axis=0, path=True),
     [(4, 500, 500), (4, 500, 500), (500, 1, 16)], (16, 4, 500, 500)),
])
def test_shapes_are_probed_on_small_arrays(monkeypatch, name, call, shapes, want):
    """The distances, lerp and slerp ran the NumPy op at full size when traced (an
    eval_shape of pairwise_sqdist on 16000 x 3 points took 3.3 s and about 1 GB): now on
    small shapes whose sizes relate as the real ones do, the result's shape mapped back."""
    sizes = _spied(monkeypatch, name)
    out = jax.eval_shape(call, *_abstract(*shapes))
    assert out.shape == want and out.dtype == jnp.float32
    assert sizes and max(sizes) <= 1000


@pytest.mark.parametrize("name, call", [
    ("lerp", lambda a, t: fij.lerp(a, a + 1, t)),
    ("slerp", lambda a, t: fij.slerp(a, a + 1, t)),
])
def test_a_new_constant_weight_probes_nothing_again(monkeypatch, name, call):
    """t was part of the probe's cache key: every new Python number t ran the probe again."""
    sizes = _spied(monkeypatch, name)
    a = jax.ShapeDtypeStruct((3, 4), jnp.float32)
    jax.eval_shape(lambda a: call(a, 0.125), a)
    probes = len(sizes)
    for t in (0.25, -0.5, 3.0):
        jax.eval_shape(lambda a: call(a, t), a)
    assert len(sizes) == probes
    with pytest.raises(ValueError, match=rf"^{name}: t must be representable in float32"):
        call(jnp.ones((3, 4), jnp.float32), 1e300)
    with pytest.raises(ValueError, match=rf"^{name}: t must be representable in float32"):
        call(jnp.ones((3, 4), jnp.bfloat16), 1e300)
    call(jnp.ones((3, 4), jnp.float64), 1e300)


_E = np.eye(2, 3)


@pytest.mark.parametrize("name, shapes, kw", [
    ("grid_sample", [(1, 3, 4, 4, 4), (1, 2, 2, 2, 3)], dict(layout="NHWC")),
    ("grid_sample", [(1, 3, 4, 4, 4), (1, 2, 2, 2, 3)], dict(layout="CHW", mode="foo")),
    ("grid_sample", [(3,), (1, 2, 2, 2)], {}),
    ("grid_sample", [(1, 3, 4), (1, 2, 2)], {}),
    ("grid_sample", [(3, 4, 4), (2, 2, 3)], dict(layout="CHW")),
    ("grid_sample", [(4, 4), (1, 2, 2, 2)], {}),
    ("grid_sample", [(3, 0, 4), (2, 2, 2)], dict(layout="CHW")),
    ("grid_sample", [(4, 4, 3), (2, 2, 2)], dict(layout="HWC", padding_mode="constant",
                                                  fill=(1, 2))),
    ("grid_sample", [(1, 3, 4, 4), (2, 2, 2, 2)], dict(mode="foo")),
    ("grid_sample", [(1, 3, 4, 4), (1, 2, 2, 2)], dict(layout="foo")),
    ("resize", [(3, 0, 4)], dict(size=(2, 2), layout="CHW")),
    ("resize", [(0, 4)], dict(size=(2, 2))),
    ("resize", [(4, 5, 3)], dict(size=(2, 2, 2), layout="HWC")),
    ("resize", [(1, 3, 4, 4)], dict(size=(2, 2), match="foo", layout="CHW")),
    ("resize", [(1, 3, 4, 4, 4)], dict(size=(2, 2, 2), match="opencv")),
    ("resize", [(1, 3, 4, 4)], dict(size=(2, 2), scale_factor=2)),
    ("adaptive_avg_pool2d", [(3, 0, 4)], dict(output_size=2, layout="CHW")),
    ("adaptive_avg_pool2d", [(0, 4)], dict(output_size=2)),
    ("adaptive_avg_pool1d", [(3, 0)], dict(output_size=2)),
    ("adaptive_avg_pool3d", [(3, 0, 4, 4)], dict(output_size=2)),
    ("warp_affine", [(1, 3, 4, 4)], dict(M=_E, dsize=(3, 3), layout="CHW")),
    ("warp_affine", [(1, 3, 0, 4)], dict(M=_E, dsize=(3, 3))),
    ("warp_affine", [(3, 0, 4)], dict(M=_E, dsize=(3, 3), layout="CHW")),
    ("warp_affine", [(3, 4, 4)], dict(M=_E, dsize=(3, 3))),
    ("warp_affine", [(1, 3, 4, 4, 4)], dict(M=_E, dsize=(3, 3))),
    ("warp_affine", [(1, 3, 4, 4, 4)], dict(M=_E, dsize=(3, 3), match="foo")),
    ("warp_affine", [(4, 4)], dict(M=np.stack([_E] * 3), dsize=(3, 3))),
    ("warp_affine", [(1, 3, 4, 4)], dict(M=_E, dsize=(2 ** 31, 3))),
    ("warp_affine", [(1, 3, 4, 4)], dict(M=np.zeros((2, 3)), dsize=(3, 3))),
    ("warp_perspective", [(1, 3, 4, 0)], dict(M=np.eye(3), dsize=(3, 3))),
    ("warp_perspective", [(1, 3, 4, 4)], dict(M=np.eye(3), dsize=(3, 3), layout="HWC")),
    ("rotate", [(1, 3, 0, 4)], dict(angle=30)),
    ("rotate", [(0, 4)], dict(angle=30)),
    ("rotate", [(3, 4, 4)], dict(angle=30)),
    ("pairwise_sqdist", [(2, 4, 3), (3, 5, 2)], {}),
    ("pairwise_l2", [(2, 4, 3), (3, 5, 3)], {}),
    ("lerp", [(3, 4), (5, 4), (7,)], {}),
    ("slerp", [(3, 4), (3, 4), (2, 5)], dict(path=True)),
])
@pytest.mark.parametrize("trace", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_every_trace_time_error_is_the_numpy_apis(name, shapes, kw, trace):
    """Errors raised by the frontend's own steps (an image made a batch of one, a probe
    on one pixel per image) named its own shapes, "input" for a warp's img, or another
    check than the NumPy API's (a volume in another layout)."""
    with pytest.raises((TypeError, ValueError)) as numpy_error:
        getattr(fi, name)(*(np.ones(s) for s in shapes), **kw)
    with pytest.raises(type(numpy_error.value)) as jax_error:
        trace(lambda *xs: getattr(fij, name)(*xs, **kw))(*(jnp.ones(s) for s in shapes))
    assert str(jax_error.value) == str(numpy_error.value)


_HUGE = (10 ** 6, 10 ** 6)


@pytest.mark.parametrize("name, call, shape", [
    ("resize", lambda m, x: m.resize(x, size=_HUGE), (1, 2, 4, 4)),
    ("resize", lambda m, x: m.resize(x, size=_HUGE, layout="HWC", match="opencv"), (4, 4, 3)),
    ("resize", lambda m, x: m.resize(x, size=(10 ** 4,) * 3, mode="trilinear"), (1, 2, 3, 4, 4)),
    ("resize", lambda m, x: m.resize(x, size=2 ** 31 - 1, mode="linear"), (1, 4096, 4)),
    ("adaptive_avg_pool2d", lambda m, x: m.adaptive_avg_pool2d(x, _HUGE, layout="CHW"), (3, 4, 4)),
    ("adaptive_avg_pool3d", lambda m, x: m.adaptive_avg_pool3d(x, 10 ** 4), (1, 2, 3, 4, 4)),
    ("warp_affine", lambda m, x: m.warp_affine(x, np.eye(2, 3), _HUGE), (2, 3, 4, 4)),
    ("warp_perspective", lambda m, x: m.warp_perspective(x, np.eye(3), _HUGE, layout="HW"),
     (4, 4)),
])
@pytest.mark.parametrize("trace", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_results_beyond_memory_are_the_numpy_apis_memory_error(name, call, shape, trace):
    """The probes ran at batch 0 (or dsize 1 x 1), where the NumPy API's memory check
    passes: XLA then failed to allocate the result (RESOURCE_EXHAUSTED). The check now
    runs with the real sizes when the function is traced."""
    x = np.ones(shape, np.float32)
    with pytest.raises(MemoryError) as numpy_error:
        call(fi, x)
    assert str(numpy_error.value).startswith(f"{name}: ")
    with pytest.raises(MemoryError) as jax_error:
        trace(lambda x: call(fij, x))(jnp.asarray(x))
    assert str(jax_error.value) == str(numpy_error.value)


@pytest.mark.parametrize("call, shape", [
    (lambda x: fij.resize(x, size=(2, 3)), (1, 1, 2 ** 20, 2 ** 20)),
    (lambda x: fij.resize(x, size=(2, 3, 2), mode="trilinear"), (1, 1, 2 ** 14, 2 ** 14, 2 ** 14)),
    (lambda x: fij.adaptive_avg_pool1d(x, 3), (1, 2 ** 20, 2 ** 22)),
    (lambda x: fij.warp_affine(x, np.eye(2, 3), (5, 5)), (1, 1, 2 ** 20, 2 ** 20)),
    (lambda x: fij.rotate(x, 30.0), (1, 1, 2 ** 15, 2 ** 14)),
])
def test_memory_checks_of_abstract_inputs_allocate_nothing(call, shape):
    """The memory check runs on zero-stride dummies of the real shapes and stops there:
    nothing of the input's size (terabytes here) is copied, nothing is computed."""
    out = jax.eval_shape(call, jax.ShapeDtypeStruct(shape, jnp.float32))
    assert out.dtype == jnp.float32


def test_rotate_of_an_abstract_image_beyond_memory_is_a_memory_error():
    with pytest.raises(MemoryError, match=r"^rotate: an output of \(1000000, 1000000\) per image "
                                          r"would need"):
        jax.eval_shape(lambda x: fij.rotate(x, 30.0), jax.ShapeDtypeStruct((1, 1) + _HUGE,
                                                                          jnp.float32))


@pytest.mark.parametrize("argnums", [(0,), (1,), (2,), (0, 2)])
def test_slerp_backward_computes_the_gradients_asked_for(argnums, monkeypatch):
    """jax.grad of slerp in some of a, b, t asks the host backward for those only."""
    rng = np.random.default_rng(25)
    a, b = (jnp.asarray(rng.standard_normal((20, 4))) for _ in range(2))
    t = jnp.asarray(rng.uniform(0, 1, 20))
    seen = []
    real = fi.slerp_backward
    monkeypatch.setattr(fi, "slerp_backward", lambda *p, **k: seen.append(
        (k["needs_ab_grad"], k["needs_t_grad"])) or real(*p, **k))
    grads = jax.grad(lambda a, b, t: fij.slerp(a, b, t).sum(), argnums=argnums)(a, b, t)
    assert seen == [(0 in argnums or 1 in argnums, 2 in argnums)]
    want = real(np.ones((20, 4)), np.asarray(a), np.asarray(b), np.asarray(t))
    for got, i in zip(grads, argnums):
        np.testing.assert_array_equal(np.asarray(got), want[i])


@pytest.mark.parametrize("name", ["pairwise_sqdist", "pairwise_l2"])
@pytest.mark.parametrize("argnums", [(0,), (1,), (0, 1)])
@pytest.mark.parametrize("transform", ["eager", "jit", "vmap"])
def test_distances_compute_the_gradients_asked_for(monkeypatch, name, argnums, transform):
    """jax.grad of a distance in x only (or y only) ran the backward of both: the product
    for the other operand's gradient is as large as the one asked for. The host backward
    now gets needs_x_grad / needs_y_grad, and the gradients are bit for bit the same."""
    rng = np.random.default_rng(31)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal((5, 3))
    go = rng.standard_normal((7, 5))
    real = getattr(fi, f"{name}_backward")
    want = real(go, x, y)
    seen = []
    monkeypatch.setattr(fi, f"{name}_backward", lambda *p, **k: seen.append(
        (k.get("needs_x_grad", True), k.get("needs_y_grad", True))) or real(*p, **k))
    op = getattr(fij, name)
    grad = jax.grad(lambda x, y: (op(x, y) * go).sum(), argnums=argnums)
    if transform == "vmap":
        got = [g[1] for g in jax.vmap(grad)(jnp.stack([x, x]), jnp.stack([y, y]))]
    else:
        got = (jax.jit(grad) if transform == "jit" else grad)(jnp.asarray(x), jnp.asarray(y))
    assert set(seen) == {(0 in argnums, 1 in argnums)}
    for g, i in zip(got, argnums):
        np.testing.assert_array_equal(np.asarray(g), want[i])


@pytest.mark.parametrize("call, error, words", [
    (lambda b: fij.lerp(1 + 2j, b, 0.5), TypeError, "lerp: a must be a real number"),
    (lambda b: fij.lerp(b, b, jnp.array(0.5 + 3j)), TypeError, "lerp: t must have dtype"),
    (lambda b: fij.slerp(b + 1, b, jnp.array(0.5 + 3j)), TypeError, "slerp: t must have dtype"),
    (lambda b: fij.lerp(1e300, b, 0.5), ValueError, "lerp: a must be representable in float32"),
    (lambda b: fij.lerp(10 ** 400, b, 0.5), ValueError, "lerp: a must be representable"),
])
def test_python_numbers_get_the_numpy_apis_errors(call, error, words):
    """A complex number lost its imaginary part (lerp(1+2j, b, 0.5) returned 0.5), a
    finite float beyond float32 became inf, and an int beyond int32 was JAX's raw
    OverflowError: the NumPy API refuses the first two and reads the third as a float."""
    with pytest.raises(error, match=words):
        call(jnp.zeros((2, 3), jnp.float32))


def test_an_int_beyond_int32_is_read_as_a_float():
    b = jnp.zeros((2, 3), jnp.float32)
    np.testing.assert_array_equal(fij.lerp(2 ** 70, b, 0.5),
                                  fi.lerp(2 ** 70, np.zeros((2, 3), np.float32), 0.5))
