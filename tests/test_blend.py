"""lerp and slerp: values against torch / a float64 NumPy reference, shapes,
degenerate cases, errors, the CUDA kernels under the simulator, CuPy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import fastinterp as fi
from conftest import TOL, TOL_ORACLE, assert_close

DTYPES = [np.float32, np.float64]


# ----------------------------------------------------------------- references

def ref_slerp_row(a, b, t, shortest_path=False, norm="linear"):
    """The documented slerp of one pair, in float64, written out plainly."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    t = float(t)
    if shortest_path and a @ b < 0:
        b = -b
    if t == 0:
        return a.copy()
    if t == 1:
        return b.copy()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return (1 - t) * a + t * b
    u, v = a / na, b / nb
    r = (1 - t) * na + t * nb
    if np.linalg.norm(u + v) <= 1e-8:
        if a.size < 2:
            return (1 - t) * a + t * b
        k = int(np.argmin(np.abs(a)))
        p = -u[k] * u
        p[k] += 1
        p /= np.linalg.norm(p)
        return r * (math.cos(math.pi * t) * u + math.sin(math.pi * t) * p)
    theta = 2 * math.atan2(np.linalg.norm(u - v), np.linalg.norm(u + v))
    if theta == 0:
        w0, w1 = 1 - t, t
    else:
        w0 = math.sin((1 - t) * theta) / math.sin(theta)
        w1 = math.sin(t * theta) / math.sin(theta)
    if norm == "linear":
        return r * (w0 * u + w1 * v)
    return w0 * a + w1 * b


def ref_slerp(a, b, t, shortest_path=False, norm="linear"):
    """Rows of (..., D) a, b with t broadcast to the batch shape."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    tb = np.broadcast_to(np.asarray(t, np.float64), a64.shape[:-1])
    out = np.empty_like(a64)
    for idx in np.ndindex(a64.shape[:-1]):
        out[idx] = ref_slerp_row(a64[idx], b64[idx], tb[idx], shortest_path, norm)
    return out


def angle(x, y):
    """Angle between two vectors, float64, accurate for small angles."""
    x = np.asarray(x, np.float64) / np.linalg.norm(x)
    y = np.asarray(y, np.float64) / np.linalg.norm(y)
    return 2 * math.atan2(np.linalg.norm(x - y), np.linalg.norm(x + y))


# ======================================================================= lerp

class TestLerp:
    def test_smoke(self):
        out = fi.lerp(np.zeros(3, np.float32), np.ones(3, np.float32), 0.25)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, [0.25, 0.25, 0.25])

    @settings(max_examples=40, deadline=None)
    @given(shapes=mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=5),
           dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
    def test_matches_torch_broadcasting(self, torch, shapes, dtype, seed):
        rng = np.random.default_rng(seed)
        sa, sb, stt = shapes.input_shapes
        a = rng.standard_normal(sa).astype(dtype)
        b = rng.standard_normal(sb).astype(dtype)
        t = rng.uniform(-0.5, 1.5, stt).astype(dtype)
        got = fi.lerp(a, b, t)
        want = torch.lerp(*(torch.from_numpy(np.ascontiguousarray(x)) for x in (a, b, t)))
        assert got.shape == shapes.result_shape
        assert_close(got, want.numpy())

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("t", [0.3, 0.5, 0.7, -1.0, 2.0])
    def test_scalar_weight_matches_torch(self, torch, rng, dtype, t):
        a = rng.standard_normal((7, 33)).astype(dtype)
        b = rng.standard_normal((7, 33)).astype(dtype)
        want = torch.lerp(torch.from_numpy(a), torch.from_numpy(b), t).numpy()
        assert_close(fi.lerp(a, b, t), want)
        assert_close(fi.lerp(a, b, dtype(t)), want)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_exact_at_0_and_1(self, rng, dtype):
        a = (rng.standard_normal(100_000) * 1e3).astype(dtype)
        b = (rng.standard_normal(100_000) * 1e-3).astype(dtype)
        np.testing.assert_array_equal(fi.lerp(a, b, 0.0), a)
        np.testing.assert_array_equal(fi.lerp(a, b, 1.0), b)
        t = rng.integers(0, 2, a.shape).astype(dtype)
        np.testing.assert_array_equal(fi.lerp(a, b, t), np.where(t == 1, b, a))

    def test_large_hand_case(self):
        a = np.arange(200_000, dtype=np.float64)
        out = fi.lerp(a, 2 * a, 0.5)
        np.testing.assert_array_equal(out, 1.5 * a)

    def test_list_inputs(self):
        np.testing.assert_array_equal(fi.lerp([0.0, 2.0], np.array([2.0, 4.0]), 0.5), [1.0, 3.0])

    @pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
    def test_list_weight_is_read_in_the_operands_dtype(self, rng, dtype):
        # as a Python number t is, and as slerp reads a list t
        a, b = rng.standard_normal((2, 3, 4)).astype(dtype)
        t = rng.uniform(-0.5, 1.5, (3, 1)).tolist()
        want = fi.lerp(a, b, np.asarray(t, dtype=np.float32 if dtype == np.float16 else dtype))
        for weight in (t, tuple(t)):
            got = fi.lerp(a, b, weight)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, want)
        with pytest.raises(TypeError, match="t must be a real number or an array of reals"):
            fi.lerp(a, b, ["x"])

    @pytest.mark.parametrize("op", ["lerp", "slerp"])
    def test_list_weight_entries_are_checked_as_a_number_weight(self, op):
        # a list of None was all NaN, 1e300 inf in float32, bools were read as 0 and 1
        a, b = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
        call = getattr(fi, op)
        for bad, exc, words in (([None, 0.5], TypeError, "a real number or an array of reals"),
                                ([True, False], TypeError, "a real number or an array of reals"),
                                ([1e300, 0.5], ValueError, "representable in float32"),
                                ([10**400, 0], ValueError, "representable in float32")):
            with pytest.raises(exc, match=f"^{op}: t must be {words}"):
                call(a, b, bad if op == "slerp" else [bad[:1] * 1, bad[1:]])
        got = call(a, b, [0.5, float("nan")] if op == "slerp" else [[0.5], [float("nan")]])
        assert np.isnan(got[1]).all() and not np.isnan(got[0]).any()

    def test_non_contiguous_input(self, rng):
        a = rng.standard_normal((8, 10))[:, ::2]
        b = rng.standard_normal((8, 5))
        assert_close(fi.lerp(a, b, 0.3), a + 0.3 * (b - a))

    def test_out_is_written_and_returned(self, rng):
        a, b = rng.standard_normal((2, 4, 5))
        out = np.empty((4, 5))
        res = fi.lerp(a, b, 0.2, out=out)
        assert res is out
        assert_close(out, a + 0.2 * (b - a))

    @pytest.mark.parametrize("bad, exc, words", [
        (np.empty((4, 6)), ValueError, "out must have shape (4, 5)"),
        (np.empty((4, 5), np.float32), TypeError, "out must have dtype float64"),
        (np.empty((5, 4)).T, ValueError, "out must be C-contiguous"),
        ([0.0] * 20, TypeError, "out must be an array"),
    ])
    def test_bad_out(self, rng, bad, exc, words):
        a, b = rng.standard_normal((2, 4, 5))
        with pytest.raises(exc, match=words.replace("(", r"\(").replace(")", r"\)")):
            fi.lerp(a, b, 0.5, out=bad)

    def test_out_untouched_on_failure(self, rng):
        a = rng.standard_normal((4, 5))
        out = np.full((4, 5), 7.0)
        with pytest.raises(TypeError):
            fi.lerp(a, a.astype(np.float32), 0.5, out=out)
        np.testing.assert_array_equal(out, 7.0)

    def test_out_aliasing_input(self, rng):
        buf = rng.standard_normal((5, 5))
        a, b = buf[:4], rng.standard_normal((4, 5))
        with pytest.raises(ValueError, match="out must be either exactly a .* partially overlaps a"):
            fi.lerp(a, b, 0.5, out=buf[1:])

    def test_out_read_only(self, rng):
        a, b = rng.standard_normal((2, 3))
        out = np.empty(3)
        out.flags.writeable = False
        with pytest.raises(ValueError, match="writable"):
            fi.lerp(a, b, 0.5, out=out)

    @pytest.mark.parametrize("a, b, t, exc, words", [
        (np.zeros(3, np.float16), np.zeros(3), 0.5, TypeError, "float16"),  # half with float64
        (np.zeros(3), np.zeros(3, np.float32), 0.5, TypeError, "b must have the same dtype"),
        (np.zeros(3), np.zeros(3), np.zeros(3, np.float32), TypeError, "t must have the same"),
        (np.zeros(3, np.int64), np.zeros(3, np.int64), 0.5, TypeError, "a must have dtype"),
        (np.zeros(3), np.zeros(4), 0.5, ValueError, "shapes must broadcast"),
        (1.0, 2.0, 0.5, TypeError, "a or b must be an array"),
    ])
    def test_errors(self, a, b, t, exc, words):
        with pytest.raises(exc, match=words):
            fi.lerp(a, b, t)

    def test_empty(self):
        assert fi.lerp(np.zeros((0, 3)), np.zeros((0, 3)), 0.5).shape == (0, 3)

    def test_torch_tensors_come_back_as_torch(self, torch):
        a, b = torch.zeros(4), torch.ones(4)
        res = fi.lerp(a, b, 0.5)
        assert isinstance(res, torch.Tensor)
        assert torch.equal(res, torch.full((4,), 0.5))


# ====================================================================== slerp

class TestSlerp:
    def test_smoke(self):
        out = fi.slerp(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.5)
        np.testing.assert_allclose(out, [math.sqrt(0.5)] * 2, rtol=1e-15)
        assert fi.last_kernel().key == ("slerp", "cpu", "float64")

    @pytest.mark.parametrize("b, t, want", [
        ([1.0, 0, 0], 0.0, [1.0, 0, 0]),
        ([1.0, 0, 0], 0.5, [1.0, 0, 0]),
        ([0.5, 0, 0], 0.0, [1.0, 0, 0]),
        ([0.5, 0, 0], 0.5, [0.75, 0, 0]),
        ([-1.0, 0, 0], 0.0, [1.0, 0, 0]),
        ([-1.0, 0, 0], 0.5, [0.0, 1.0, 0]),
        ([-1.0, 0, 0], 1.0, [-1.0, 0, 0]),
    ])
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("norm", ["linear", "formula"])
    def test_documented_examples(self, b, t, want, dtype, norm):
        a = np.array([1.0, 0, 0], dtype)
        got = fi.slerp(a, np.array(b, dtype), t, norm=norm)
        np.testing.assert_array_equal(got, np.array(want, dtype))

    @settings(max_examples=40, deadline=None)
    @given(batch=st.lists(st.integers(1, 4), max_size=2), depth=st.integers(1, 9),
           dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
           per_row=st.booleans(), norm=st.sampled_from(["linear", "formula"]))
    def test_matches_reference(self, batch, depth, dtype, seed, per_row, norm):
        rng = np.random.default_rng(seed)
        shape = tuple(batch) + (depth,)
        a = (rng.standard_normal(shape) * rng.uniform(0.1, 3, shape[:-1] + (1,))).astype(dtype)
        b = (rng.standard_normal(shape) * rng.uniform(0.1, 3, shape[:-1] + (1,))).astype(dtype)
        t = rng.uniform(-0.25, 1.25, shape[:-1]).astype(dtype) if per_row else dtype(0.37)
        got = fi.slerp(a, b, t, norm=norm)
        want = ref_slerp(a, b, t, norm=norm)
        assert got.shape == shape and got.dtype == dtype
        # near-antipodal random pairs are ill-conditioned: compare on a scale of |a|+|b|
        scale = np.linalg.norm(a, axis=-1, keepdims=True) + np.linalg.norm(b, axis=-1, keepdims=True)
        assert_close(got / scale, want / scale, dtype=dtype, table=TOL_ORACLE)

    @settings(max_examples=40, deadline=None)
    @given(depth=st.integers(1, 8), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
           scale=st.sampled_from([-3.0, -1.0, 0.0, 0.5, 1.0]),
           noise=st.sampled_from([0.0, 1e-12, 1e-7, 1e-3]),
           t=st.sampled_from([0.0, 1e-9, 0.25, 0.5, 1.0 - 1e-9, 1.0, 1.5]),
           shortest_path=st.booleans())
    def test_edge_pairs(self, depth, dtype, seed, scale, noise, t, shortest_path):
        """b = scale·a + noise: parallel, antipodal, zero and nearly so; never NaN."""
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((3, depth))
        b = scale * a + noise * rng.standard_normal((3, depth))
        a, b = a.astype(dtype), b.astype(dtype)
        got = fi.slerp(a, b, dtype(t), shortest_path=shortest_path)
        assert np.isfinite(got).all()
        want = ref_slerp(a, b, t, shortest_path=shortest_path)
        size = np.linalg.norm(a.astype(np.float64), axis=-1, keepdims=True) + \
            np.linalg.norm(b.astype(np.float64), axis=-1, keepdims=True) + 1e-300
        # near-antipodal pairs are ill-conditioned (error ~ eps / |u + v|, with weights
        # ~ 1 / |u + v| cancelling in the blend): skip those values. In float32 the
        # forward error reaches ~1e-4 relative already at |u + v| ~ 1e-3.
        ill = 1e-3 if dtype == np.float64 else 3e-2
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        u = a64 / np.maximum(np.linalg.norm(a64, axis=-1, keepdims=True), 1e-300)
        v = b64 / np.maximum(np.linalg.norm(b64, axis=-1, keepdims=True), 1e-300)
        if shortest_path:
            v = np.where(np.sum(a64 * b64, -1, keepdims=True) < 0, -v, v)
        gap = np.linalg.norm(u + v, axis=-1, keepdims=True)
        well = ((gap > ill) | (gap <= 1e-9)).ravel()
        assert_close(got[well] / size[well], want[well] / size[well], dtype=dtype, table=TOL_ORACLE)
        if t in (0.0, 1.0):
            np.testing.assert_array_equal(got, a if t == 0 else np.where(
                (np.sum(a * b, -1, keepdims=True) < 0) & shortest_path, -b, b))

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_latent_rows_match_reference(self, rng, dtype):
        a = rng.standard_normal((37, 512)).astype(dtype)
        b = rng.standard_normal((37, 512)).astype(dtype)
        t = rng.random(37).astype(dtype)
        assert_close(fi.slerp(a, b, t), ref_slerp(a, b, t), dtype=dtype, table=TOL_ORACLE)

    def test_geometry(self, rng):
        """Unit vectors: the result is a unit vector in span(a, b) at angle t·θ from a."""
        a = rng.standard_normal((50, 6))
        b = rng.standard_normal((50, 6))
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        t = rng.random(50)
        out = fi.slerp(a, b, t)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-14)
        for i in range(50):
            theta = angle(a[i], b[i])
            assert angle(a[i], out[i]) == pytest.approx(t[i] * theta, abs=1e-12)
            assert angle(out[i], b[i]) == pytest.approx((1 - t[i]) * theta, abs=1e-12)
            coef, *_ = np.linalg.lstsq(np.stack([a[i], b[i]], 1), out[i], rcond=None)
            np.testing.assert_allclose(np.stack([a[i], b[i]], 1) @ coef, out[i], atol=1e-13)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_unit_norm_preserved(self, rng, dtype):
        a = rng.standard_normal((200, 512))
        b = rng.standard_normal((200, 512))
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        out = fi.slerp(a.astype(dtype), b.astype(dtype), rng.random(200).astype(dtype))
        rtol = 1e-5 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(np.linalg.norm(out.astype(np.float64), axis=1), 1.0, rtol=rtol)

    def test_norm_interpolated_linearly(self, rng):
        a = rng.standard_normal((20, 5))
        b = 3 * rng.standard_normal((20, 5))
        t = rng.random(20)
        out = fi.slerp(a, b, t)
        want = (1 - t) * np.linalg.norm(a, axis=1) + t * np.linalg.norm(b, axis=1)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), want, rtol=1e-13)

    def test_formula_option_is_textbook(self, rng):
        a = rng.standard_normal((20, 5))
        b = 3 * rng.standard_normal((20, 5))
        t = rng.random(20)[:, None]
        theta = np.arccos(np.sum(a * b, 1, keepdims=True)
                          / np.linalg.norm(a, axis=1, keepdims=True)
                          / np.linalg.norm(b, axis=1, keepdims=True))
        want = (np.sin((1 - t) * theta) * a + np.sin(t * theta) * b) / np.sin(theta)
        np.testing.assert_allclose(fi.slerp(a, b, t[:, 0], norm="formula"), want, rtol=1e-9)
        # the two options agree for vectors of equal norm
        b2 = b / np.linalg.norm(b, axis=1, keepdims=True) * np.linalg.norm(a, axis=1, keepdims=True)
        assert_close(fi.slerp(a, b2, t[:, 0], norm="formula"), fi.slerp(a, b2, t[:, 0]),
                     table=TOL_ORACLE)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_exact_at_0_and_1(self, rng, dtype):
        a = rng.standard_normal((30, 17)).astype(dtype)
        b = (5 * rng.standard_normal((30, 17))).astype(dtype)
        b[0] = -2 * a[0]   # antipodal
        b[1] = 0           # zero
        np.testing.assert_array_equal(fi.slerp(a, b, 0.0), a)
        np.testing.assert_array_equal(fi.slerp(a, b, 1.0), b)
        path = fi.slerp(a, b, np.array([0, 1], dtype), path=True)
        np.testing.assert_array_equal(path[:, 0], a)
        np.testing.assert_array_equal(path[:, 1], b)

    def test_unit_circle_to_machine_precision(self):
        """In 2-D the answer is [cos tφ, sin tφ]: checks the angle and the sine/cosine
        evaluation over the whole range of φ, and t outside [0, 1] (extrapolation)."""
        phi = np.linspace(1e-3, np.pi - 1e-3, 401)
        a = np.tile([1.0, 0.0], (phi.size, 1))
        b = np.stack([np.cos(phi), np.sin(phi)], 1)
        for t in (0.1, 0.5, 0.93, -2.5, 3.75, 1e7):
            out = fi.slerp(a, b, t)
            want = np.stack([np.cos(t * phi), np.sin(t * phi)], 1)
            # b's rounding moves the answer by ~eps / sin φ (more near antipodal)
            tol = 2e-15 * max(1.0, abs(t)) / np.sin(phi)
            assert (np.abs(out - want) <= tol[:, None]).all(), t

    def test_near_parallel_is_accurate(self):
        """The angle comes from atan2 of |u-v|, |u+v|: no loss as θ → 0."""
        for eps in (1e-4, 1e-7, 1e-10, 1e-13):
            a = np.array([1.0, 0.0])
            b = np.array([math.cos(eps), math.sin(eps)])
            out = fi.slerp(a, b, 0.25)
            assert out[1] == pytest.approx(math.sin(0.25 * eps), rel=1e-12)
            assert out[0] == pytest.approx(math.cos(0.25 * eps), rel=1e-15)

    def test_near_antipodal_is_accurate(self):
        """|u + v| = δ from antipodal: the problem's own conditioning, error ~ 1e-16/δ."""
        for delta in (1e-3, 1e-6):
            a = np.array([1.0, 0.0])
            b = np.array([-1.0, delta])
            out = fi.slerp(a, b, 0.5)
            half = (math.pi - math.atan(delta)) / 2
            r = (1 + math.hypot(1.0, delta)) / 2
            np.testing.assert_allclose(out, [r * math.cos(half), r * math.sin(half)],
                                       rtol=1e-12, atol=1e-15 / delta)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("a, b", [
        ([0.0, 0, 0], [0.0, 0, 0]),
        ([0.0, 0, 0], [1.0, 2, 3]),
        ([1.0, 2, 3], [0.0, 0, 0]),
        ([1.0, 2, 3], [1.0, 2, 3]),
        ([1.0, 2, 3], [2.0, 4, 6]),
        ([1.0, 2, 3], [-1.0, -2, -3]),
        ([1.0, 2, 3], [-3.0, -6, -9]),
        ([1.0, 2, 3], [1.0, 2, 3 + 1e-12]),
        ([1.0, 2, 3], [-1.0, -2, -3 - 1e-12]),
        ([2.0], [-1.0]),
        ([2.0], [3.0]),
        ([1e-30, 0], [0.0, 1e-30]),
    ])
    def test_degenerate_cases_are_finite_and_documented(self, dtype, a, b):
        a, b = np.array(a, dtype), np.array(b, dtype)
        ts = np.linspace(0, 1, 9).astype(dtype)
        got = fi.slerp(a, b, ts, path=True)
        assert np.isfinite(got).all()
        want = np.stack([ref_slerp_row(a, b, t) for t in ts])
        scale = 1 + np.linalg.norm(a.astype(np.float64)) + np.linalg.norm(b.astype(np.float64))
        assert_close(got / scale, want / scale, dtype=dtype, table=TOL_ORACLE)

    def test_antipodal_path_is_deterministic_great_circle(self):
        a = np.array([0.0, 3.0, 1.0])
        out = fi.slerp(a, -a, np.linspace(0, 1, 11), path=True)
        # turns towards e_0 (the smallest |a_k|), keeping |a|
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.linalg.norm(a), rtol=1e-14)
        np.testing.assert_allclose(out[5], [np.linalg.norm(a), 0, 0], atol=1e-14)
        np.testing.assert_array_equal(out, fi.slerp(a, -a, np.linspace(0, 1, 11), path=True))

    def test_float64_extremes_keep_the_great_circle(self):
        b = np.array([0.0, 1.0])
        got = fi.slerp(np.array([1e-170, 0.0]), b, 0.5)   # |a|^2 underflows
        np.testing.assert_allclose(got, [0.5 * 2**-0.5, 0.5 * 2**-0.5], rtol=1e-15)
        np.testing.assert_allclose(fi.slerp(np.array([1e200, 0.0]), b * 1e200, 0.5),
                                   [1e200 * 0.5**0.5] * 2, rtol=1e-15)
        top = np.finfo(np.float64).max
        np.testing.assert_allclose(fi.slerp(np.array([top, 0.0]), np.array([0.0, top]), 0.5),
                                   [top * 0.5**0.5] * 2, rtol=1e-15)
        same = fi.slerp(np.array([top, -top]), np.array([top, -top]), 0.5)  # |a| overflows
        np.testing.assert_allclose(same, [top, -top], rtol=1e-15)

    def test_zero_vector_falls_back_to_lerp(self):
        b = np.array([2.0, -4.0])
        np.testing.assert_allclose(fi.slerp(np.zeros(2), b, 0.25), 0.25 * b, rtol=1e-15)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("depth", [1, 3, 130])
    def test_far_extrapolation_of_parallel_rows_stays_on_their_line(self, rng, dtype, depth):
        """Identical, parallel (b = 2a, -a with shortest_path) and zero rows are the lerp of
        a and b, exact however far t extrapolates: (1 - t) a + t b cancelled (relative
        error |t| u: slerp(a, a, 1e16) was noise, 1e-8 off at t = 1e8)."""
        a = rng.standard_normal((5, depth)).astype(dtype)
        big = [1e3, -1e6, 7.5, -2.5] if dtype == np.float32 else [1e8, -1e16, 1e300, 7.5]
        t = np.array(big + [-0.75], dtype)
        # lerp's two-sided formula: b - (b - a)(1 - t) rounds twice without a fused
        # multiply-add (up to ~30 u of the result when it cancels, t = -0.75)
        rtol = 2e-7 if dtype == np.float32 else 4e-15
        for norm in ("linear", "formula"):
            for w in t:
                same = fi.slerp(a, a, w, norm=norm)
                np.testing.assert_array_equal(same, a)
                flipped = fi.slerp(a, -a, w, norm=norm, shortest_path=True)
                np.testing.assert_array_equal(flipped, a)
                with np.errstate(over="ignore"):
                    want = (a.astype(np.float64) * (1.0 + np.float64(w))).astype(dtype)
                    np.testing.assert_allclose(fi.slerp(a, 2 * a, w, norm=norm), want,
                                               rtol=rtol)
                    want = (a.astype(np.float64) * (1.0 - np.float64(w))).astype(dtype)
                    np.testing.assert_allclose(fi.slerp(a, np.zeros_like(a), w, norm=norm),
                                               want, rtol=rtol)
            path = fi.slerp(a, a, t, path=True, norm=norm)
            np.testing.assert_array_equal(path, np.broadcast_to(a[:, None], path.shape))

    @pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e200, 2.0**1000])
    @pytest.mark.parametrize("depth", [1, 3, 70])
    def test_far_extrapolation_of_identical_rows_of_extreme_magnitude(self, rng, scale,
                                                                        depth):
        """Rows rescaled for their geometry (|a|^2 out of range) took the old blend:
        slerp(1e-300 a, 1e-300 a, -1e16) was 0.27 a."""
        a = rng.standard_normal((4, depth)) * scale
        for t in (1e16, -1e16, 12.5, 0.3, 0.7):
            np.testing.assert_array_equal(fi.slerp(a, a, t), a)
            np.testing.assert_array_equal(fi.slerp(a, -a, t, shortest_path=True), a)
            np.testing.assert_allclose(fi.slerp(a, 2 * a, t), a * (1 + t), rtol=4e-15)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_identical_rows_keep_signed_zeros(self, dtype):
        """a + t (a - a) turned -0 into +0 (identical rows are a itself, bit for bit)."""
        a = np.array([[-0.0, 1.0, 2.0], [-0.0, -0.0, -0.0], [0.0, -0.0, 3.0]], dtype)
        for t in (0.3, 0.7, 2.0, -1.5):
            got = fi.slerp(a, a, t)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(a))
            np.testing.assert_array_equal(got, a)
        assert np.isnan(fi.slerp(a, a, np.nan)).all()

    def test_quaternion_shortest_path(self, rng):
        q0 = rng.standard_normal((40, 4))
        q1 = rng.standard_normal((40, 4))
        q0 /= np.linalg.norm(q0, axis=1, keepdims=True)
        q1 /= np.linalg.norm(q1, axis=1, keepdims=True)
        t = rng.random(40)
        flip = np.sum(q0 * q1, 1) < 0
        assert flip.any() and (~flip).any()
        got = fi.slerp(q0, q1, t, shortest_path=True)
        want = fi.slerp(q0, np.where(flip[:, None], -q1, q1), t)
        assert_close(got, want)
        for i in range(40):  # never turns by more than 90 degrees in quaternion space
            assert angle(q0[i], got[i]) <= math.pi / 2 * t[i] + 1e-12
        end = fi.slerp(q0, q1, 1.0, shortest_path=True)
        np.testing.assert_array_equal(end, np.where(flip[:, None], -q1, q1))
        # without the option, antipodal-ish quaternions take the long way
        assert not np.allclose(fi.slerp(q0, q1, t), got)

    # ------------------------------------------------------------ path form

    @pytest.mark.parametrize("a_shape, t_shape, out_shape", [
        ((5, 3), (4,), (5, 4, 3)),
        ((5, 3), (5, 4), (5, 4, 3)),
        ((5, 3), (1, 4), (5, 4, 3)),
        ((2, 5, 3), (5, 4), (2, 5, 4, 3)),
        ((3,), (6,), (6, 3)),
        ((5, 3), (5, 0), (5, 0, 3)),
    ])
    def test_path_shapes(self, rng, a_shape, t_shape, out_shape):
        a, b = rng.standard_normal((2,) + a_shape)
        t = rng.random(t_shape)
        out = fi.slerp(a, b, t, path=True)
        assert out.shape == out_shape
        tb = np.broadcast_to(t, a_shape[:-1] + t_shape[-1:])
        for j in range(t_shape[-1]):
            np.testing.assert_array_equal(out[..., j, :], fi.slerp(a, b, tb[..., j].copy()))

    def test_plain_t_broadcasts_to_batch(self, rng):
        a, b = rng.standard_normal((2, 4, 5, 3))
        t = rng.random((4, 1))
        want = fi.slerp(a, b, np.ascontiguousarray(np.broadcast_to(t, (4, 5))))
        np.testing.assert_array_equal(fi.slerp(a, b, t), want)
        np.testing.assert_array_equal(fi.slerp(a, b, t.tolist()), want)

    def test_axis(self, rng):
        a, b = rng.standard_normal((2, 3, 7, 4))
        t = rng.random((3, 4))
        got = fi.slerp(a, b, t, axis=1)
        want = np.moveaxis(fi.slerp(np.moveaxis(a, 1, -1), np.moveaxis(b, 1, -1), t), -1, 1)
        np.testing.assert_array_equal(got, want)
        ts = np.linspace(0, 1, 5)
        path = fi.slerp(a, b, ts, axis=-2, path=True)
        assert path.shape == (3, 5, 7, 4)
        np.testing.assert_array_equal(path[:, 2], fi.slerp(a, b, ts[2], axis=1))
        out = np.empty((3, 5, 7, 4))
        assert fi.slerp(a, b, ts, axis=1, path=True, out=out) is out
        np.testing.assert_array_equal(out, path)

    def test_non_contiguous_inputs(self, rng):
        a = rng.standard_normal((6, 16))[:, ::2]
        b = rng.standard_normal((8, 6)).T
        t = rng.random(12)[::2]
        np.testing.assert_array_equal(fi.slerp(a, b, t), fi.slerp(a.copy(), b.copy(), t.copy()))

    def test_out(self, rng):
        a, b = rng.standard_normal((2, 6, 8)).astype(np.float32)
        out = np.empty((6, 8), np.float32)
        assert fi.slerp(a, b, 0.3, out=out) is out
        np.testing.assert_array_equal(out, fi.slerp(a, b, 0.3))
        with pytest.raises(ValueError, match=r"out must have shape \(6, 2, 8\)"):
            fi.slerp(a, b, np.zeros(2, np.float32), path=True, out=out)
        with pytest.raises(ValueError, match="out must be either exactly a .* partially overlaps a"):
            fi.slerp(a[:-1], b[:-1], 0.3, out=a[1:])

    @pytest.mark.parametrize("kwargs, exc, words", [
        (dict(b=np.zeros((4, 2))), ValueError, r"b must have the same shape as a \(4, 3\)"),
        (dict(t=np.zeros(5)), ValueError, r"t must broadcast to the batch shape \(4,\)"),
        (dict(t=np.zeros((4, 2)), path=False), ValueError, "t must broadcast to the batch"),
        (dict(t=np.zeros((3, 2)), path=True), ValueError, r"t must have shape \(4, T\)"),
        (dict(t=0.5, path=True), ValueError, r"t must have shape \(..., T\)"),
        (dict(axis=2), ValueError, r"axis must be an int in \[-2, 1\]"),
        # another type is a TypeError, as the README's table has it for sizes (was ValueError)
        (dict(axis=1.0), TypeError, "axis must be an int"),
        (dict(axis=None), TypeError, "axis must be an int"),
        (dict(axis="1"), TypeError, "axis must be an int"),
        (dict(axis=True), TypeError, "axis must be an int"),
        (dict(norm="great"), ValueError, "norm must be one of 'linear', 'formula'"),
        (dict(shortest_path="yes"), TypeError, "shortest_path must be a bool"),
        (dict(path=1), TypeError, "path must be a bool"),
        (dict(t=np.zeros(4, np.float32)), TypeError, "t must have the same dtype"),
        (dict(b=np.zeros((4, 3), np.float32)), TypeError, "b must have the same dtype"),
        (dict(a=np.zeros((4, 3), np.float16)), TypeError, r"next to a \(float16\)"),
        (dict(a=np.float64(1.0)), TypeError, "a must be an array"),
        (dict(a=np.zeros(()), b=np.zeros(())), ValueError, "a must have at least one axis"),
    ])
    def test_errors(self, kwargs, exc, words):
        args = dict(a=np.ones((4, 3)), b=np.ones((4, 3)), t=0.5)
        args.update(kwargs)
        with pytest.raises(exc, match=words):
            fi.slerp(**args)

    def test_empty(self):
        assert fi.slerp(np.zeros((0, 3)), np.zeros((0, 3)), 0.5).shape == (0, 3)
        assert fi.slerp(np.zeros((2, 0)), np.zeros((2, 0)), 0.5).shape == (2, 0)

    def test_torch_round_trip(self, torch):
        a = torch.randn(6, 4, dtype=torch.float64)
        b = torch.randn(6, 4, dtype=torch.float64)
        out = torch.empty(6, 3, 4, dtype=torch.float64)
        t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
        res = fi.slerp(a, b, t, path=True, out=out)
        assert res is out
        assert torch.equal(out[:, 0], a) and torch.equal(out[:, 2], b)
        res = fi.slerp(a, b, 0.5)
        assert isinstance(res, torch.Tensor)
        assert_close(res.numpy(), ref_slerp(a.numpy(), b.numpy(), 0.5))


# ================================================= CUDA kernels (simulator)

def _dev(cuda, x):
    return cuda.to_device(np.ascontiguousarray(x))


@pytest.mark.cudasim
class TestCudaKernels:
    @pytest.mark.parametrize("dtype", DTYPES)
    def test_lerp_broadcast_array_weight(self, cuda, rng, dtype):
        a = rng.standard_normal((3, 1, 5)).astype(dtype)
        b = rng.standard_normal((4, 1)).astype(dtype)
        t = rng.uniform(-0.5, 1.5, (1, 4, 5)).astype(dtype)
        got = fi.lerp(_dev(cuda, a), _dev(cuda, b), _dev(cuda, t))
        assert fi.last_kernel().key == ("lerp", "cuda", np.dtype(dtype).name)
        assert_close(got.copy_to_host(), fi.lerp(a, b, t))

    def test_lerp_scalar_weight_and_out(self, cuda, rng):
        a, b = rng.standard_normal((2, 7, 9)).astype(np.float32)
        out = cuda.device_array((7, 9), np.float32)
        res = fi.lerp(_dev(cuda, a), _dev(cuda, b), 0.75, out=out)
        assert res is out
        assert_close(out.copy_to_host(), fi.lerp(a, b, 0.75))
        np.testing.assert_array_equal(fi.lerp(_dev(cuda, a), _dev(cuda, b), 1.0).copy_to_host(), b)

    def _pairs(self, rng, rows, depth, dtype):
        a = rng.standard_normal((rows, depth))
        b = rng.standard_normal((rows, depth))
        b[1] = -2 * a[1]   # antipodal
        b[2] = 3 * a[2]    # parallel
        b[3] = 0           # zero
        return a.astype(dtype), b.astype(dtype)

    @pytest.mark.parametrize("depth", [3, 64])          # thread kernel, block kernel
    @pytest.mark.parametrize("norm", ["linear", "formula"])
    def test_slerp_nan_row_is_nan_everywhere(self, cuda, rng, depth, norm):
        a, b = rng.standard_normal((2, 2, depth))
        a[0, 0] = np.nan
        b[1, 1] = np.nan
        want = fi.slerp(a, b, 0.5, norm=norm)
        assert np.isnan(want).all()
        got = fi.slerp(_dev(cuda, a), _dev(cuda, b), 0.5, norm=norm).copy_to_host()
        assert np.isnan(got).all()

    @pytest.mark.parametrize("depth", [3, 67])          # thread kernel, block kernel
    def test_slerp_end_points_are_the_inputs_bit_for_bit(self, cuda, depth):
        """As on the CPU: a at t = 0 and b at t = 1, signed zeros kept, an inf in the
        other vector not turned into NaN."""
        a = np.zeros((2, depth))
        b = np.zeros((2, depth))
        a[0, 0], b[0, 1] = np.inf, 1.0
        a[1, :2], b[1, 0], b[1, 2] = (-0.0, 1.0), 1.0, -0.0
        for t, want in ((0.0, a[1]), (1.0, b[1])):
            got = fi.slerp(_dev(cuda, a), _dev(cuda, b), t).copy_to_host()
            np.testing.assert_array_equal(np.signbit(got[1]), np.signbit(want))
            np.testing.assert_array_equal(got[1], want)
        got = fi.slerp(_dev(cuda, a), _dev(cuda, b), 1.0).copy_to_host()
        np.testing.assert_array_equal(got[0], b[0])

    @pytest.mark.parametrize("depth", [3, 67])          # thread kernel, block kernel
    def test_slerp_far_extrapolation_of_identical_rows_is_exact(self, cuda, rng, depth):
        """As on the CPU: identical and parallel rows are the lerp a + t (b - a)."""
        a = rng.standard_normal((2, depth))
        a[0, 0] = -0.0
        for t in (1e8, -1e16, 3.5):
            got = fi.slerp(_dev(cuda, a), _dev(cuda, a), t).copy_to_host()
            np.testing.assert_array_equal(got, a)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(a))
            tiny = a * 1e-300           # rescaled for its geometry
            got = fi.slerp(_dev(cuda, tiny), _dev(cuda, tiny), t).copy_to_host()
            np.testing.assert_array_equal(got, tiny)
            got = fi.slerp(_dev(cuda, a), _dev(cuda, 2 * a), t).copy_to_host()
            np.testing.assert_allclose(got, a * (1 + t), rtol=4e-15)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_lerp_broadcast_of_any_rank(self, cuda, rng, dtype):
        """Broadcast patterns that coalesce to more than 4 axes run too (they were refused
        on CUDA): array and scalar weights."""
        a = rng.standard_normal((2, 1, 2, 1, 2, 1)).astype(dtype)
        b = rng.standard_normal((1, 3, 1, 2, 1, 2)).astype(dtype)
        t = rng.random((2, 1, 1, 2, 1, 1)).astype(dtype)
        for w in (t, 0.3):
            got = fi.lerp(_dev(cuda, a), _dev(cuda, b), _dev(cuda, w) if w is t else w)
            assert_close(got.copy_to_host(), fi.lerp(a, b, w), table=TOL_ORACLE)

    @pytest.mark.parametrize("shortest_path", [False, True])
    def test_slerp_of_one_axis_is_the_lerp_as_on_the_cpu(self, cuda, rng, shortest_path):
        """Rows of one axis are the lerp on CUDA too: an infinite entry gave NaN there (the
        general angle code), the CPU's inf."""
        a = np.array([[np.inf], [2.0], [1e300], [-3.0]] + [[v] for v in rng.standard_normal(4)])
        b = np.array([[1.0], [-np.inf], [-1e300], [0.0]] + [[v] for v in rng.standard_normal(4)])
        for t in (0.25, 0.0, 1.0, 1.7, -0.5):
            want = fi.slerp(a, b, t, shortest_path=shortest_path)
            got = fi.slerp(_dev(cuda, a), _dev(cuda, b), t,
                           shortest_path=shortest_path).copy_to_host()
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_allclose(got, want, rtol=1e-12)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_slerp_thread_kernel(self, cuda, rng, dtype):
        a, b = self._pairs(rng, 6, 4, dtype)
        t = rng.random(6).astype(dtype)
        got = fi.slerp(_dev(cuda, a), _dev(cuda, b), _dev(cuda, t))
        assert fi.last_kernel().key == ("slerp", "cuda", np.dtype(dtype).name)
        assert_close(got.copy_to_host(), fi.slerp(a, b, t), table=TOL_ORACLE)
        got = fi.slerp(_dev(cuda, a), _dev(cuda, b), 0.4, shortest_path=True)
        assert_close(got.copy_to_host(), fi.slerp(a, b, 0.4, shortest_path=True), table=TOL_ORACLE)

    def test_slerp_thread_kernel_path(self, cuda, rng):
        a, b = self._pairs(rng, 5, 3, np.float64)
        t = np.array([0.0, 0.3, 1.0])
        got = fi.slerp(_dev(cuda, a), _dev(cuda, b), _dev(cuda, t), path=True).copy_to_host()
        assert got.shape == (5, 3, 3)
        assert_close(got, fi.slerp(a, b, t, path=True), table=TOL_ORACLE)
        np.testing.assert_array_equal(got[:, 0], a)
        np.testing.assert_array_equal(got[:, 2], b)
        out = cuda.device_array((5, 3, 3))
        res = fi.slerp(_dev(cuda, a), _dev(cuda, b), _dev(cuda, t), path=True, out=out)
        assert res is out
        np.testing.assert_array_equal(out.copy_to_host(), got)
        with pytest.raises(ValueError, match=r"out must have shape \(5, 3\)"):
            fi.slerp(_dev(cuda, a), _dev(cuda, b), 0.5, out=out)

    def test_slerp_block_kernel(self, cuda, rng):
        a, b = self._pairs(rng, 4, 67, np.float32)
        t = rng.random((4, 2)).astype(np.float32)
        got = fi.slerp(_dev(cuda, a), _dev(cuda, b), _dev(cuda, t), path=True).copy_to_host()
        assert_close(got, fi.slerp(a, b, t, path=True), table=TOL_ORACLE)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("depth", [3, 67])   # the thread and the block kernel
    def test_slerp_whole_range_matches_cpu(self, cuda, rng, dtype, depth):
        """Subnormal to largest-finite rows: the CUDA kernels scale rows like the CPU one."""
        a0, b0 = _range_pairs(rng, depth)
        info = np.finfo(dtype)
        exps = _exponents(dtype)
        slow = depth >= 64   # the simulator runs the block kernel's 128 threads one by one
        if slow:
            a0, b0 = a0[[0, 2, 6]], b0[[0, 2, 6]]   # random, antipodal, unequal norms
        for e in (exps[0], exps[-1]) if slow else (exps[0], exps[2], 0, exps[-1]):
            a = np.ldexp(a0, e).astype(dtype)
            b = np.ldexp(b0, e).astype(dtype)
            for t in (0.35,) if slow else (0.0, 0.35):
                want = fi.slerp(a, b, dtype(t)).astype(np.float64)
                with np.errstate(over="ignore", invalid="ignore"):  # simulator scalars warn
                    got = fi.slerp(_dev(cuda, a), _dev(cuda, b), dtype(t)).copy_to_host()
                finite = np.isfinite(want)
                assert (np.isfinite(got) == finite).all(), (e, t)
                scale = np.abs(np.where(finite, want, 0)).max() + np.ldexp(1.0, e)
                tol = 1e3 * info.eps * scale + 4 * info.smallest_subnormal
                assert np.abs(np.where(finite, got - want, 0)).max() <= tol, (e, t)

    @pytest.mark.parametrize("depth", [3, 67])
    def test_slerp_in_place(self, cuda, rng, depth):
        a, b = self._pairs(rng, 6, depth, np.float64)
        t = rng.random(6)
        want = fi.slerp(a, b, t)
        da = _dev(cuda, a)
        assert fi.slerp(da, _dev(cuda, b), _dev(cuda, t), out=da) is da
        assert_close(da.copy_to_host(), want, table=TOL_ORACLE)

    def test_lerp_in_place(self, cuda, rng):
        a, b = rng.standard_normal((2, 5, 7))
        da = _dev(cuda, a)
        assert fi.lerp(da, _dev(cuda, b), 0.3, out=da) is da
        np.testing.assert_allclose(da.copy_to_host(), fi.lerp(a, b, 0.3), rtol=1e-15)

    def test_slerp_cuda_errors(self, cuda, rng):
        a = _dev(cuda, rng.standard_normal((3, 4)))
        with pytest.raises(ValueError, match="vectors must lie along the last axis"):
            fi.slerp(a, a, 0.5, axis=0)
        with pytest.raises(fi.BackendMismatchError, match="a is a CUDA array.*|b is a CPU"):
            fi.slerp(a, np.zeros((3, 4)), 0.5)


# ================================================================= CuPy (GPU)

class TestCupy:
    def test_lerp(self, cupy, rng):
        a, b, t = rng.standard_normal((3, 1000, 33)).astype(np.float32)
        got = fi.lerp(cupy.asarray(a), cupy.asarray(b), cupy.asarray(t))
        assert isinstance(got, cupy.ndarray)
        assert_close(cupy.asnumpy(got), fi.lerp(a, b, t))

    def test_slerp(self, cupy, rng):
        for depth in (4, 512):
            a, b = rng.standard_normal((2, 300, depth)).astype(np.float32)
            t = rng.random(300).astype(np.float32)
            got = fi.slerp(cupy.asarray(a), cupy.asarray(b), cupy.asarray(t))
            assert isinstance(got, cupy.ndarray)
            assert_close(cupy.asnumpy(got), fi.slerp(a, b, t), table=TOL_ORACLE)


# ------------------------------------------------- weights, aliasing, threads

@pytest.mark.parametrize("t, exc, words", [
    (None, TypeError, "lerp: t must be a real number or an array; got None"),
    (1j, TypeError, "lerp: t must be a real number or an array; got complex 1j"),
    (np.complex128(0.5), TypeError, "lerp: t must be a real number or an array; got complex128"),
    (np.array(0.5 + 0j), TypeError,
     r"lerp: t must have dtype float32 or float64 \(or float16, bfloat16\); got complex128"),
    (10**400, ValueError, "lerp: t must be representable in float(32|64); got an int of 401 digits"),
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_lerp_weight_must_be_real(t, exc, words, dtype):
    out = np.full(3, 7, dtype)
    with pytest.raises(exc, match=words):
        fi.lerp(np.zeros(3, dtype), np.ones(3, dtype), t, out=out)
    assert (out == 7).all()


@pytest.mark.parametrize("t, exc", [(None, TypeError), (2j, TypeError), (-(10**400), ValueError)])
@pytest.mark.parametrize("path", [False, True])
def test_slerp_weight_must_be_real(t, exc, path):
    with pytest.raises(exc, match="slerp: t must"):
        fi.slerp(np.ones((2, 3)), np.eye(2, 3), t, path=path)


def test_lerp_scalar_a_or_b_must_be_real():
    with pytest.raises(TypeError, match="lerp: a must be a real number or an array; got None"):
        fi.lerp(None, np.ones(3), 0.5)
    with pytest.raises(TypeError, match="lerp: b must be a real number or an array; got complex"):
        fi.lerp(np.ones(3), 1j, 0.5)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("scalar", [np.float64, np.float32, np.float16, np.int64])
def test_numpy_scalar_weights_are_passed_by_value_like_python_numbers(rng, dtype, scalar):
    # ``for t in np.linspace(...)`` over float32 data: a NumPy scalar is a number, not an
    # array of another dtype
    a = rng.standard_normal((3, 8)).astype(dtype)
    b = rng.standard_normal((3, 8)).astype(dtype)
    t = scalar(0.25) if scalar is not np.int64 else scalar(1)
    same = (lambda u, v: np.testing.assert_array_equal(u, v))
    same(fi.lerp(a, b, t), fi.lerp(a, b, t.item()))
    same(fi.lerp(a, t, 0.5), fi.lerp(a, t.item(), 0.5))
    same(fi.slerp(a, b, t), fi.slerp(a, b, t.item()))
    if dtype != np.float16:
        for got, want in zip(fi.slerp_backward(np.ones_like(a), a, b, t),
                             fi.slerp_backward(np.ones_like(a), a, b, t.item())):
            same(got, want)
    with pytest.raises(TypeError, match="lerp: t must be a real number or an array; got bool"):
        fi.lerp(a, b, np.bool_(True))
    with pytest.raises(ValueError, match="slerp: t must be representable"):
        fi.slerp(a, b, np.float64(1e300)) if dtype != np.float64 else fi.slerp(a, b, 10**400)


@pytest.mark.parametrize("which", ["a", "b", "t"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5,), (3, 70001), (2, 3, 4)])
def test_lerp_in_place(rng, which, dtype, shape):
    """out may be exactly an operand (m.lerp_(g, w)): the same values as a fresh output."""
    ops = {n: rng.standard_normal(shape).astype(dtype) for n in ("a", "b")}
    ops["t"] = rng.random(shape).astype(dtype)
    expected = fi.lerp(ops["a"], ops["b"], ops["t"])
    target = ops[which]
    res = fi.lerp(ops["a"], ops["b"], ops["t"], out=target)
    assert res is target
    np.testing.assert_array_equal(target, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight", ["array", "scalar", "row"])
@pytest.mark.parametrize("offset", [0, 1, 5])
def test_lerp_large_outputs_equal_the_small_call_bits(rng, dtype, weight, offset):
    """A lerp touching more than the last-level cache stores its output with streaming
    stores: the same bits as the same elements lerped in small calls (cached stores),
    for an output at any element offset from a cache line, and nothing written around it."""
    n = (1 << 22) + 37                          # > 32 MiB touched in float32 and float64
    a, b = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    t = {"array": rng.uniform(-0.5, 1.5, n).astype(dtype), "scalar": 0.3,
         "row": rng.random(1).astype(dtype)}[weight]
    buf = np.full(n + 8, 7, dtype)
    out = buf[offset:offset + n]
    assert fi.lerp(a, b, t, out=out) is out
    step = 1 << 16
    for i in range(0, n, step):
        part = t[i:i + step] if weight == "array" else t
        small = fi.lerp(a[i:i + step], b[i:i + step], part)
        np.testing.assert_array_equal(out[i:i + step], small)
    assert (buf[:offset] == 7).all() and (buf[offset + n:] == 7).all()
    np.testing.assert_array_equal(fi.lerp(a, b, t), out)


def test_lerp_in_place_ema_with_scalar_weight_and_torch(torch, rng):
    m, g = rng.standard_normal(1000), rng.standard_normal(1000)
    expected = m + 0.1 * (g - m)
    fi.lerp(m, g, 0.1, out=m)
    np.testing.assert_allclose(m, expected, rtol=1e-12, atol=1e-15)
    tm, tg = torch.randn(100), torch.randn(100)
    ref = torch.lerp(tm, tg, 0.3)
    separate = fi.lerp(tm, tg, 0.3)
    assert fi.lerp(tm, tg, 0.3, out=tm) is tm
    assert torch.equal(tm, separate)            # in place gives the out-of-place bits
    torch.testing.assert_close(tm, ref)         # and torch's values (TestLerp checks bits)


@pytest.mark.parametrize("make_out", [
    lambda a: a[1:],                      # shifted by one row
    lambda a: a.reshape(-1)[1:13].reshape(3, 4),
])
def test_lerp_partial_overlap_is_refused_and_untouched(rng, make_out):
    a = rng.standard_normal((4, 4))
    before = a.copy()
    out = make_out(a)
    with pytest.raises(ValueError, match="lerp: out must be either exactly a .* partially overlaps a"):
        fi.lerp(a[:3], np.ones((3, 4)), 0.5, out=out)
    np.testing.assert_array_equal(a, before)


def test_lerp_broadcast_operand_inside_out_is_refused(rng):
    out = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="partially overlaps a"):
        fi.lerp(out[0], np.ones((3, 4)), 0.5, out=out)


@pytest.mark.parametrize("which", ["a", "b"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("depth", [3, 200])
def test_slerp_in_place(rng, which, dtype, depth):
    ops = {n: rng.standard_normal((300, depth)).astype(dtype) for n in ("a", "b")}
    ops["b"][:4] = -ops["a"][:4]   # antipodal rows read a[k] after the sums
    ops["b"][4:8] = 2 * ops["a"][4:8]
    t = rng.random(300).astype(dtype)
    expected = fi.slerp(ops["a"], ops["b"], t)
    res = fi.slerp(ops["a"], ops["b"], t, out=ops[which])
    assert res is ops[which]
    np.testing.assert_array_equal(ops[which], expected)


def test_slerp_path_out_overlapping_a_is_refused(rng):
    # the path form's out never is a (another shape): the message does not offer it
    buf = rng.standard_normal((2, 1, 3))
    with pytest.raises(ValueError, match="^slerp: out must not share memory with a; pass"):
        fi.slerp(buf[:, 0], np.eye(2, 3), np.array([0.5]), path=True, out=buf)


@pytest.mark.parametrize("offset", [0, 2])
def test_slerp_out_overlapping_t_is_refused_without_offering_out_t(rng, offset):
    buf = np.zeros(20)
    a, b = rng.standard_normal((2, 4, 3))
    with pytest.raises(ValueError, match="^slerp: out must not share memory with t; pass"):
        fi.slerp(a, b, buf[:4], out=buf[offset:offset + 12].reshape(4, 3))


def _blend_calls(rng, dtype):
    a = rng.standard_normal((700, 130)).astype(dtype)
    b = rng.standard_normal((700, 130)).astype(dtype)
    b[:5] = -a[:5]
    b[5:10] = a[5:10] * 3
    b[10:15] = 0
    info = np.finfo(dtype)
    a[15:20] *= info.smallest_subnormal * 2**20   # rows scaled by powers of two
    b[15:20] *= info.smallest_subnormal * 2**20
    a[20:25] *= info.max / 64
    b[20:25] *= info.max / 64
    t = rng.uniform(-0.5, 1.5, 700).astype(dtype)
    ts = np.linspace(0, 1, 5).astype(dtype)
    return lambda: (fi.lerp(a, b, t[:, None]), fi.lerp(a, b, 0.7),
                    fi.slerp(a, b, t), fi.slerp(a, b, t, norm="formula"),
                    fi.slerp(a, b, ts, path=True, shortest_path=True))


@pytest.mark.parametrize("dtype", DTYPES)
def test_blend_bit_identical_on_worker_threads(threads, rng, dtype):
    """Main thread, one worker, and 4 concurrent workers give the same bits (1 and 2 threads)."""
    import concurrent.futures as cf
    calls = _blend_calls(rng, dtype)
    for n in (1, 2):
        fi.set_num_threads(n)
        main = calls()
        with cf.ThreadPoolExecutor(4) as pool:
            results = [f.result() for f in [pool.submit(calls) for _ in range(4)]]
        with cf.ThreadPoolExecutor(1) as pool:
            results.append(pool.submit(calls).result())
        for res in results:
            for x, y in zip(main, res):
                np.testing.assert_array_equal(x, y)
        if n == 1:
            serial = main
    for x, y in zip(serial, main):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------- the whole float32/float64 range

def _range_pairs(rng, depth):
    """Row pairs of unit scale: random, near-parallel, antipodal, zero b, parallel, equal,
    and a pair whose norms differ by 2^40."""
    a = rng.standard_normal((8, depth))
    b = rng.standard_normal((8, depth))
    b[1] = a[1] * 1.001 + 1e-4 * rng.standard_normal(depth)
    b[2] = -a[2] * 0.75
    b[3] = 0
    b[4] = a[4] * 2
    b[5] = a[5]
    b[6] = b[6] * 2.0**-40
    a /= np.abs(a).max(1, keepdims=True) * 2
    b /= np.maximum(np.abs(b).max(1, keepdims=True) * 2, 1)
    return a, b


def _exponents(dtype):
    info = np.finfo(dtype)
    lo, hi = info.minexp - info.nmant, info.maxexp   # smallest subnormal .. largest finite
    return sorted({lo + 8, lo + 30, info.minexp - 3, info.minexp + 2, -60, 0, 60,
                   hi - 40, hi - 3, hi})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("depth", [2, 3, 4, 17, 70])
@pytest.mark.parametrize("norm", ["linear", "formula"])
def test_slerp_across_the_whole_range(rng, dtype, depth, norm):
    """slerp(2^e a, 2^e b) = 2^e slerp(a, b) (power-of-two scaling is exact) from the
    subnormals to the largest finite values: no inf/NaN where the result is finite."""
    a0, b0 = _range_pairs(rng, depth)
    info = np.finfo(dtype)
    ts = np.array([0.0, 0.3, 0.5, 1.0, 1.4])
    for e in _exponents(dtype):
        a = np.ldexp(a0, e).astype(dtype)
        b = np.ldexp(b0, e).astype(dtype)
        a64, b64 = np.ldexp(a.astype(np.float64), -e), np.ldexp(b.astype(np.float64), -e)
        for t in ts:
            got = fi.slerp(a, b, dtype(t), norm=norm).astype(np.float64)
            for i in range(len(a)):
                with np.errstate(over="ignore"):
                    want = np.ldexp(ref_slerp_row(a64[i], b64[i], t, norm=norm), e)
                if (np.abs(want) > info.max).any():
                    continue   # the exact result overflows the dtype
                scale = max(np.abs(want).max(), np.ldexp(np.abs(a64[i]).max(), e))
                # subnormal results keep fewer bits: the absolute floor is the subnormal step
                tol = 50 * info.eps * scale + 4 * info.smallest_subnormal
                if norm == "formula" and i == 2:
                    tol *= 10   # antipodal: the textbook weights are 1/sin θ
                err = np.abs(got[i] - want).max()
                assert np.isfinite(got[i]).all() and err <= tol, (e, t, i, got[i], want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_slerp_subnormal_and_normal_vectors_together(dtype):
    """|b| / |a| beyond the dtype's range: the weights must not overflow (issue: float32 inf)."""
    tiny = np.finfo(dtype).smallest_subnormal
    a = np.array([[tiny * 3, 0.0, 0.0]], dtype)
    b = np.array([[0.0, 1.0, 0.0]], dtype)
    got = fi.slerp(a, b, 0.5).astype(np.float64)
    r = 0.5 * float(a[0, 0]) + 0.5
    np.testing.assert_allclose(got, [[r * 0.5**0.5, r * 0.5**0.5, 0.0]], rtol=1e-6)
    got = fi.slerp(b, a, 0.25, norm="formula").astype(np.float64)
    want = [[math.sin(0.25 * math.pi / 2) * float(a[0, 0]), math.sin(0.75 * math.pi / 2), 0.0]]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=float(tiny))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["linear", "formula"])
def test_slerp_end_points_are_the_inputs_bit_for_bit(rng, dtype, norm):
    """t = 0 gives a itself and t = 1 gives b itself, signed zeros included (as the
    README and slerp_backward's degenerate table say), in the plain and path forms,
    for ordinary, parallel, zero and subnormal rows."""
    a = rng.standard_normal((6, 5)).astype(dtype)
    b = rng.standard_normal((6, 5)).astype(dtype)
    a[:, 0], b[:, 1] = -0.0, -0.0
    a[1], b[2] = 2 * b[1], 0.0
    a[3] *= np.finfo(dtype).smallest_subnormal * 4
    for row_t in (np.zeros(6, dtype), np.ones(6, dtype)):
        want = a if row_t[0] == 0 else b
        got = fi.slerp(a, b, row_t, norm=norm)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
        np.testing.assert_array_equal(got, want)
    path = fi.slerp(a, b, np.array([0.0, 0.5, 1.0], dtype), path=True, norm=norm)
    for j, want in ((0, a), (2, b)):
        np.testing.assert_array_equal(np.signbit(path[:, j]), np.signbit(want))
        np.testing.assert_array_equal(path[:, j], want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_slerp_nearly_antipodal_float32_keeps_precision(rng, dtype):
    """Near θ = π the weights are large and cancel: the blend runs in float64."""
    a = rng.standard_normal((50, 3)).astype(dtype)
    b = (-a * 0.9 + 1e-6 * rng.standard_normal((50, 3))).astype(dtype)
    got = fi.slerp(a, b, 0.3)
    want = ref_slerp(a, b, 0.3)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("depth", [2, 40])     # short rows and the vectorized reductions
@pytest.mark.parametrize("scale", [1e-6, 1e-200])   # a vectorized row and a scaled one
@pytest.mark.parametrize("norm", ["formula", "linear"])
def test_slerp_small_weight_keeps_its_relative_precision(depth, scale, norm):
    """a = e0, b = scale e1 (θ = π/2): out[0] = r / |a| sin((1-t) π/2), a tiny multiple of
    a large entry as t -> 1; as t -> 0 the mirror image, out[1] = r / |b| sin(tπ/2) |b|."""
    a = np.zeros(depth)
    b = np.zeros(depth)
    a[0], b[1] = 1.0, scale
    for t in (0.75, 1 - 1e-6, 1 - 2.0**-40, 1 - 2.0**-53, 0.25, 1e-6, 2.0**-40):
        r = (1 - t) + t * scale if norm == "linear" else None
        got = fi.slerp(a, b, t, norm=norm)
        want0 = np.sin((1 - t) * np.pi / 2) * (r if r is not None else 1.0)
        want1 = np.sin(t * np.pi / 2) * (r / scale if r is not None else 1.0) * scale
        np.testing.assert_allclose(got[:2], [want0, want1], rtol=1e-14, atol=0)
        np.testing.assert_array_equal(got[2:], 0)


# ---------------------------------------------- kernels called directly (C ABI)

_KERNEL_CALLS = {
    "slerp_zero_depth": "k.slerp_fwd(np.empty((4, 0)), np.empty((4, 0)), np.empty((4, 0)), "
                        "np.zeros(4), 1, 1, False, True, 1)",
    "slerp_out_too_small": "k.slerp_fwd(np.empty((1, 3)), np.ones((4, 3)), np.ones((4, 3)), "
                           "np.zeros(4), 1, 1, False, True, 2)",
    "slerp_t_too_short": "k.slerp_fwd(np.empty((8, 3)), np.ones((4, 3)), np.ones((4, 3)), "
                         "np.zeros(2), 2, 2, False, True, 2)",
    "slerp_b_shape": "k.slerp_fwd(np.empty((4, 3)), np.ones((4, 3)), np.ones((2, 3)), "
                     "np.zeros(4), 1, 1, False, True, 1)",
    "slerp_negative_steps": "k.slerp_fwd(np.empty((0, 3)), np.ones((4, 3)), np.ones((4, 3)), "
                            "np.zeros(4), 1, -1, False, True, 1)",
    "lerp_rank_over_64": "k.lerp_fwd(np.empty(1), np.ones(1), np.ones(1), np.ones(1), (1,), "
                         "(1,) * 100, (1,), (1,), 1)",
    "lerp_operand_too_short": "k.lerp_fwd(np.empty(6), np.ones(2), np.ones(6), np.ones(6), "
                              "(2, 3), (2, 3), (2, 3), (2, 3), 1)",
    "lerp_operand_not_broadcastable": "k.lerp_fwd(np.empty(6), np.ones(4), np.ones(6), "
                                      "np.ones(6), (2, 3), (2, 2), (2, 3), (2, 3), 1)",
    "lerp_out_wrong_size": "k.lerp_fwd(np.empty(5), np.ones(6), np.ones(6), np.ones(6), "
                           "(2, 3), (2, 3), (2, 3), (2, 3), 1)",
}


@pytest.mark.parametrize("name", sorted(_KERNEL_CALLS))
def test_blend_kernels_refuse_bad_layouts_without_crashing(name):
    """The private kernels guard themselves (the C ABI exports kernels): a ValueError,
    in a subprocess so that a regression cannot take the test run down."""
    import subprocess
    import sys
    code = ("import numpy as np\nfrom fastinterp._cpu import blend as k\n"
            f"try:\n    {_KERNEL_CALLS[name]}\n    print('OK')\n"
            f"except ValueError as e:\n    print('VE', e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    if name == "slerp_zero_depth":  # a valid, empty computation
        assert done.stdout == "OK\n"
        return
    assert done.stdout.startswith("VE "), done.stdout + done.stderr[-2000:]
    assert ("lerp_fwd: " if name.startswith("lerp") else "slerp_fwd: ") in done.stdout


# ------------------------------------------------------------ slerp_backward

def _slerp_loss(g, kw):
    return lambda a, b, t: float(np.sum(g * fi.slerp(a, b, t, **kw)))


def _central_diff(f, x, eps):
    """d f / d x by central differences, element by element (x float64)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        grad[i] = (f(xp) - f(xm)) / (2 * eps)
    return grad


def _regular_pairs(rng, rows, depth):
    """Random row pairs whose angle stays well inside (0, π): no branch switch nearby."""
    a = rng.standard_normal((rows, depth))
    b = rng.standard_normal((rows, depth)) * rng.uniform(0.3, 3.0, (rows, 1))
    while True:     # redraw the rows within acos(0.95) of parallel or antipodal
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        bad = np.abs(cos) > 0.95
        if not bad.any():
            return a, b
        b[bad] = rng.standard_normal((int(bad.sum()), depth)) * rng.uniform(0.3, 3.0)


def _check_fd(g, a, b, t, kw, eps=1e-6, rtol=1e-6, eps_t=None):
    ga, gb, gt = fi.slerp_backward(g, a, b, t, **kw)
    f = _slerp_loss(g, kw)
    want = (_central_diff(lambda x: f(x, b, t), a, eps),
            _central_diff(lambda x: f(a, x, t), b, eps),
            _central_diff(lambda x: f(a, b, x), t, eps if eps_t is None else eps_t))
    for got, exp in zip((ga, gb, gt), want):
        assert np.shape(got) == np.shape(exp)
        scale = max(1.0, np.abs(exp).max(initial=0))
        np.testing.assert_allclose(got, exp, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("path", [False, True])
@pytest.mark.parametrize("norm", ["linear", "formula"])
@pytest.mark.parametrize("shortest_path", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_slerp_backward_matches_finite_differences(path, norm, shortest_path, seed):
    rng = np.random.default_rng(seed)
    rows, depth, steps = 4, int(rng.integers(2, 7)), 3
    a, b = _regular_pairs(rng, rows, depth)
    t = rng.uniform(-0.4, 1.4, (rows, steps) if path else rows)
    kw = dict(path=path, norm=norm, shortest_path=shortest_path)
    g = rng.standard_normal(fi.slerp(a, b, t, **kw).shape)
    _check_fd(g, a, b, t, kw)


@pytest.mark.parametrize("t_shape,path", [((), False), ((1,), False), ((3, 1), False),
                                          ((4,), True), ((3, 1, 4), True), ((1, 2, 4), True)])
def test_slerp_backward_grad_t_is_reduced_to_t_shape(t_shape, path):
    rng = np.random.default_rng(5)
    a, b = _regular_pairs(rng, 6, 3)
    a, b = a.reshape(3, 2, 3), b.reshape(3, 2, 3)
    t = rng.uniform(0.1, 0.9, t_shape)
    kw = dict(path=path)
    g = rng.standard_normal(fi.slerp(a, b, t, **kw).shape)
    _check_fd(g, a, b, t, kw)
    assert fi.slerp_backward(g, a, b, t, **kw)[2].shape == t_shape


def test_slerp_backward_python_scalar_t_gives_0d():
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]])
    ga, gb, gt = fi.slerp_backward(np.ones((1, 2)), a, b, 0.25)
    assert gt.shape == () and gt.dtype == np.float64
    _check_fd(np.ones((1, 2)), a, b, np.float64(0.25), {})


@pytest.mark.parametrize("axis,path", [(0, False), (1, False), (0, True), (1, True)])
def test_slerp_backward_other_axis_and_strided_inputs(axis, path):
    rng = np.random.default_rng(7)
    a, b = _regular_pairs(rng, 5, 4)
    a3 = np.moveaxis(a.reshape(5, 1, 4), -1, axis).copy()
    b3 = np.moveaxis(b.reshape(5, 1, 4), -1, axis).copy()
    t = rng.uniform(0, 1, (5, 1, 3) if path else (5, 1))
    kw = dict(axis=axis, path=path)
    shape = fi.slerp(a3, b3, t, **kw).shape
    g = rng.standard_normal(shape)
    _check_fd(g, a3, b3, t, kw)
    # strided views give the same bits as contiguous copies
    big = np.zeros(a3.shape + (2,))
    big[..., 0] = a3
    got = fi.slerp_backward(g, big[..., 0], b3, t, **kw)
    for x, y in zip(got, fi.slerp_backward(g, a3, b3, t, **kw)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("norm", ["linear", "formula"])
@pytest.mark.parametrize("path", [False, True])
def test_slerp_backward_equals_torch_autograd(torch, norm, path):
    """torch autograd of the same formula (regular rows, shortest path on some)."""
    rng = np.random.default_rng(11)
    rows, depth = 6, 5
    a, b = _regular_pairs(rng, rows, depth)
    t = rng.uniform(-0.3, 1.3, (rows, 4) if path else rows)
    kw = dict(path=path, norm=norm, shortest_path=True)
    g = rng.standard_normal(fi.slerp(a, b, t, **kw).shape)
    ta, tb, tt = (torch.tensor(x, requires_grad=True) for x in (a, b, t))
    sign = torch.where((ta * tb).sum(-1, keepdim=True) < 0, -1.0, 1.0).detach()
    bb = sign * tb
    na, nb = ta.norm(dim=-1, keepdim=True), bb.norm(dim=-1, keepdim=True)
    u, v = ta / na, bb / nb
    theta = torch.acos((u * v).sum(-1, keepdim=True))
    tw = tt if path else tt[:, None]
    tw, theta3 = tw[..., None], theta[:, None] if path else theta
    if not path:
        tw = tt[:, None]
    w0 = torch.sin((1 - tw) * theta3) / torch.sin(theta3)
    w1 = torch.sin(tw * theta3) / torch.sin(theta3)
    if path:
        u3, v3, na3, nb3, a3, b3 = u[:, None], v[:, None], na[:, None], nb[:, None], ta[:, None], bb[:, None]
    else:
        u3, v3, na3, nb3, a3, b3 = u, v, na, nb, ta, bb
    if norm == "linear":
        out = ((1 - tw) * na3 + tw * nb3) * (w0 * u3 + w1 * v3)
    else:
        out = w0 * a3 + w1 * b3
    np.testing.assert_allclose(out.detach().numpy(), fi.slerp(a, b, t, **kw), rtol=1e-10,
                               atol=1e-12)
    (out * torch.tensor(g)).sum().backward()
    for got, want in zip(fi.slerp_backward(g, a, b, t, **kw), (ta.grad, tb.grad, tt.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-11)


def _nudge_off(a, b, eps):
    """b rotated by about eps radians away from a's direction (a small 2D turn)."""
    perp = np.roll(a, 1, axis=-1) - a * ((np.roll(a, 1, -1) * a).sum(-1, keepdims=True)
                                         / (a * a).sum(-1, keepdims=True))
    perp /= np.linalg.norm(perp, axis=-1, keepdims=True)
    return b * np.cos(eps) + perp * np.linalg.norm(b, axis=-1, keepdims=True) * np.sin(eps)


@pytest.mark.parametrize("norm", ["linear", "formula"])
@pytest.mark.parametrize("theta", [1e-3, 1e-5, 0.4, 0.8])
def test_slerp_backward_near_parallel_is_accurate(norm, theta):
    """Small θ: no cancellation in the θ term; finite differences at a step below θ."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 4))
    b = _nudge_off(a, 1.7 * a, theta)
    t = np.array([0.3, -0.5, 1.6])
    g = rng.standard_normal((3, 4))
    _check_fd(g, a, b, t, dict(norm=norm), eps=min(1e-6, theta * 1e-3), rtol=3e-6)


@pytest.mark.parametrize("norm", ["linear", "formula"])
def test_slerp_backward_exactly_parallel_is_the_limit(norm):
    """θ = 0: the gradient of the forward's limit weights, the limit of θ -> 0."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2, 3))
    b = a * 2.0
    t = np.array([0.25, 1.5])
    g = rng.standard_normal((2, 3))
    got = fi.slerp_backward(g, a, b, t, norm=norm)
    near = fi.slerp_backward(g, a, _nudge_off(a, b, 1e-7), t, norm=norm)
    for x, y in zip(got, near):
        assert np.all(np.isfinite(x))
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["a", "b"])
@pytest.mark.parametrize("path", [False, True])
def test_slerp_backward_zero_vector_is_lerp_gradient(which, path):
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((2, 3, 4))
    (a if which == "a" else b)[1] = 0
    t = rng.uniform(-0.2, 1.2, (3, 2) if path else 3)
    g = rng.standard_normal(fi.slerp(a, b, t, path=path).shape)
    ga, gb, gt = fi.slerp_backward(g, a, b, t, path=path)
    tw = t[1][:, None] if path else t[1]
    g1 = g[1]
    np.testing.assert_allclose(ga[1], ((1 - tw) * g1).sum(0) if path else (1 - tw) * g1)
    np.testing.assert_allclose(gb[1], (tw * g1).sum(0) if path else tw * g1)
    np.testing.assert_allclose(gt[1], (g1 * (b[1] - a[1])).sum(-1))
    for x in (ga, gb, gt):
        assert np.all(np.isfinite(x))


def test_slerp_backward_depth_one():
    """D = 1: same direction or opposite; both finite, opposite is the lerp's gradient."""
    a = np.array([[2.0], [2.0], [-1.0]])
    b = np.array([[3.0], [-3.0], [4.0]])
    t = np.array([0.3, 0.3, 0.6])
    g = np.array([[1.0], [0.5], [-2.0]])
    ga, gb, gt = fi.slerp_backward(g, a, b, t)
    _check_fd(g, a, b, t, {}, eps=1e-7)
    np.testing.assert_allclose(gt[1:], (g * (b - a)).sum(-1)[1:])


@pytest.mark.parametrize("depth", [2, 3, 5])
@pytest.mark.parametrize("norm", ["linear", "formula"])
def test_slerp_backward_antipodal_follows_the_perpendicular_path(depth, norm):
    """Exactly antipodal rows: derivative of the perpendicular construction, k fixed."""
    rng = np.random.default_rng(depth)
    a = rng.standard_normal((3, depth))
    b = -a * np.array([[0.5], [1.0], [2.0]])
    t = np.array([0.2, 0.5, 1.3])
    g = rng.standard_normal((3, depth))
    ga, gb, gt = fi.slerp_backward(g, a, b, t, norm=norm)
    for x in (ga, gb, gt):
        assert np.all(np.isfinite(x))
    f = _slerp_loss(g, dict(norm=norm))
    # t: the path is smooth in t
    np.testing.assert_allclose(gt, _central_diff(lambda x: f(a, b, x), t, 1e-6), rtol=1e-6,
                               atol=1e-8)
    # b enters only through |b|: scaling b along itself stays antipodal
    dirb = b / np.linalg.norm(b, axis=1, keepdims=True)
    for i in range(3):
        def along(s):
            bb = b.copy()
            bb[i] = b[i] + s * dirb[i]
            return f(a, bb, t)
        np.testing.assert_allclose((gb[i] * dirb[i]).sum(), (along(1e-6) - along(-1e-6)) / 2e-6,
                                   rtol=1e-6, atol=1e-8)
    # a: moving a and b together keeps the row antipodal; d/ds f(a + s e, b - s' e)
    for i in range(3):
        e = rng.standard_normal(depth)
        ratio = np.linalg.norm(b[i]) / np.linalg.norm(a[i])
        def both(s):
            aa, bb = a.copy(), b.copy()
            aa[i] += s * e
            bb[i] -= s * ratio * e
            return f(aa, bb, t)
        want = (both(1e-6) - both(-1e-6)) / 2e-6
        np.testing.assert_allclose((ga[i] * e).sum() - ratio * (gb[i] * e).sum(), want,
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("t0", [0.0, 1.0])
@pytest.mark.parametrize("kind", ["regular", "antipodal", "zero"])
def test_slerp_backward_at_endpoints_is_identity(t0, kind):
    """t exactly 0 or 1: the forward returns a or b itself; so do the gradients."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 2, 3))
    if kind == "antipodal":
        b = -2 * a
    elif kind == "zero":
        b[:] = 0
    g = rng.standard_normal((2, 3))
    for sp in (False, True):
        ga, gb, gt = fi.slerp_backward(g, a, b, np.full(2, t0), shortest_path=sp)
        sign = np.where((a * b).sum(1) < 0, -1.0, 1.0)[:, None] if sp else 1.0
        np.testing.assert_array_equal(ga, g if t0 == 0 else 0 * g)
        np.testing.assert_array_equal(gb, 0 * g if t0 == 0 else sign * g)
        assert np.all(np.isfinite(gt))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["linear", "formula"])
def test_slerp_backward_extreme_magnitudes_scale_exactly(dtype, norm):
    """Gradients are invariant to scaling a and b together by 2^k (grad_t scales by 2^k)."""
    rng = np.random.default_rng(9)
    a, b = _regular_pairs(rng, 4, 3)
    a, b = a.astype(dtype) / 4, b.astype(dtype) / 4
    t = rng.uniform(-0.2, 1.2, 4).astype(dtype)
    g = rng.standard_normal((4, 3)).astype(dtype)
    info = np.finfo(dtype)
    for k in (info.minexp - info.nmant + 12, info.minexp - 2, -40, 40, info.maxexp - 4):
        sa, sb = np.ldexp(a, k), np.ldexp(b, k)
        # the reference on the inputs as stored (subnormals keep fewer bits), scaled back exactly
        ref = fi.slerp_backward(g, np.ldexp(sa, -k), np.ldexp(sb, -k), t, norm=norm)
        ga, gb, gt = fi.slerp_backward(g, sa, sb, t, norm=norm)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        for got, want in ((ga, ref[0]), (gb, ref[1])):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
        want_t = np.ldexp(ref[2].astype(np.float64), k)
        np.testing.assert_allclose(gt.astype(np.float64), want_t, rtol=tol,  # a result may
                                   atol=tol * np.abs(want_t).max()  # itself be subnormal
                                   + 2 * np.finfo(dtype).smallest_subnormal)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["linear", "formula"])
@pytest.mark.parametrize("shortest_path", [False, True])
def test_slerp_backward_grad_t_for_norms_beyond_the_dtype_range(dtype, norm, shortest_path):
    """Entries near the largest value, so |a| and |b| exceed the dtype's range: grad_t is
    its exact value scaled by 2^k (±inf only where that overflows), never NaN."""
    rng = np.random.default_rng(31)
    rows, depth, steps = 64, 32, 3
    a, b = _regular_pairs(rng, rows, depth)
    b[:8] = -0.5 * a[:8]                      # antipodal rows
    b[8:12] = 0.0                             # zero rows
    peak = np.maximum(np.abs(a).max(1, keepdims=True), np.abs(b).max(1, keepdims=True))
    a, b = (0.9 * a / peak).astype(dtype), (0.9 * b / peak).astype(dtype)
    t = rng.uniform(-0.2, 1.2, (rows, steps)).astype(dtype)
    g = (rng.standard_normal((rows, steps, depth)) / 64).astype(dtype)  # grad_t mostly finite
    k = np.finfo(dtype).maxexp - 1
    kw = dict(path=True, norm=norm, shortest_path=shortest_path)
    ref = fi.slerp_backward(g, a, b, t, **kw)[2].astype(np.float64)
    got = fi.slerp_backward(g, np.ldexp(a, k), np.ldexp(b, k), t, **kw)[2]
    want = np.ldexp(ref, k)
    assert np.linalg.norm(np.ldexp(a, k).astype(np.float64), axis=1).max() > np.finfo(dtype).max
    assert not np.isnan(got).any()
    inside = np.abs(want) < np.finfo(dtype).max / 2
    assert inside[8:].mean() > 0.5           # most rows' exact grad_t is representable
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[inside].astype(np.float64), want[inside], rtol=tol,
                               atol=tol * np.abs(want[inside]).max())
    beyond = np.abs(want) > 2 * np.finfo(dtype).max
    assert np.all(got[beyond] == np.sign(want[beyond]) * np.inf)


@pytest.mark.parametrize("scale", [1e-150, 1e-310])
@pytest.mark.parametrize("norm", ["linear", "formula"])
def test_slerp_backward_norms_far_apart_never_nan(scale, norm):
    """|b| / |a| up to beyond the double range: grad_b finite, grad_a large or ±inf, never
    NaN (the ratio enters as a final power of two)."""
    a = np.array([[scale, 2 * scale, 0.0], [1.0, 0.5, 0.0]])
    b = np.array([[0.0, 1e150, 3e150], [0.0, 1e150, 3e150]])
    g = np.ones((2, 3))
    ga, gb, gt = fi.slerp_backward(g, a, b, np.array([0.4, 0.7]), norm=norm)
    assert not np.isnan(ga).any() and np.all(np.isfinite(gb)) and np.isfinite(gt).all()
    assert np.abs(ga[0]).max() > 1e150


@pytest.mark.parametrize("dtype", DTYPES)
def test_slerp_backward_float32_accumulates_in_float64(dtype):
    rng = np.random.default_rng(12)
    a, b = _regular_pairs(rng, 8, 33)
    t = rng.uniform(0, 1, (8, 5))
    g = rng.standard_normal((8, 5, 33))
    ref = fi.slerp_backward(g, a, b, t, path=True)
    got = fi.slerp_backward(*(x.astype(dtype) for x in (g, a, b, t)), path=True)
    for x, y in zip(got, ref):
        assert x.dtype == dtype
        np.testing.assert_allclose(x, y, rtol=2e-5 if dtype == np.float32 else 1e-15,
                                   atol=2e-5 * np.abs(y).max())


@pytest.mark.parametrize("shape,path", [((0, 3), False), ((4, 0), False), ((0, 3), True),
                                        ((2, 3), True)])
def test_slerp_backward_empty(shape, path):
    a = np.ones(shape)
    t = np.zeros((shape[0], 0)) if path and shape == (2, 3) else (
        np.zeros((shape[0], 2)) if path else np.zeros(shape[0]))
    out_shape = fi.slerp(a, a, t, path=path).shape
    ga, gb, gt = fi.slerp_backward(np.ones(out_shape), a, 2 * a, t, path=path)
    assert ga.shape == a.shape and gb.shape == a.shape and gt.shape == t.shape
    for x in (ga, gb, gt):
        assert not np.any(x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_slerp_backward_bit_identical_for_1_and_2_threads(threads, dtype):
    rng = np.random.default_rng(13)
    a, b = _regular_pairs(rng, 3000, 6)
    a[::7] = -b[::7]      # antipodal rows
    b[::11] = 0           # zero rows
    a[::13] = b[::13] * 3  # parallel rows
    a, b = a.astype(dtype), b.astype(dtype)
    t = rng.uniform(-0.2, 1.2, (3000, 2)).astype(dtype)
    g = rng.standard_normal((3000, 2, 6)).astype(dtype)
    res = []
    for n in (1, 2):
        fi.set_num_threads(n)
        res.append(fi.slerp_backward(g, a, b, t, path=True, norm="formula"))
    for x, y in zip(*res):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("call,exc,words", [
    (lambda g, a, t: fi.slerp_backward(g[:, :2], a, a, t), ValueError,
     "slerp_backward: grad_out must have the forward's output shape (3, 4); got (3, 2)."),
    (lambda g, a, t: fi.slerp_backward(g.astype(np.float32), a, a, t), TypeError,
     "slerp_backward"),
    (lambda g, a, t: fi.slerp_backward(g, a, a, t, norm="cubic"), ValueError,
     "slerp_backward: norm"),
    (lambda g, a, t: fi.slerp_backward(g, a, a[:2], t), ValueError, "slerp_backward: b"),
    (lambda g, a, t: fi.slerp_backward([[1.0]], a, a, t), ValueError, "slerp_backward"),
    (lambda g, a, t: fi.slerp_backward(g, a, a, np.zeros(2)), ValueError, "slerp_backward: t"),
])
def test_slerp_backward_errors_name_the_op(call, exc, words):
    g, a, t = np.ones((3, 4)), np.ones((3, 4)), np.zeros(3)
    with pytest.raises(exc, match=None) as info:
        call(g, a, t)
    assert words in str(info.value)


def test_slerp_backward_kernel_refuses_bad_layouts():
    from fastinterp._cpu import blend as k
    a = np.ones((2, 3))
    with pytest.raises(ValueError, match="slerp_bwd: grad_out"):
        k.slerp_bwd(np.ones((3, 3)), a, a, np.ones(2), 1, 1, False, True, np.empty((2, 3)),
                    np.empty((2, 3)), np.empty(2), 1)
    with pytest.raises(ValueError, match="slerp_bwd: grad_t"):
        k.slerp_bwd(np.ones((2, 3)), a, a, np.ones(2), 1, 1, False, True, np.empty((2, 3)),
                    np.empty((2, 3)), np.empty(1), 1)
    with pytest.raises(ValueError, match="slerp_bwd: grad_b"):
        k.slerp_bwd(np.ones((2, 3)), a, a, np.ones(2), 1, 1, False, True, np.empty((2, 3)),
                    np.empty((1, 3)), np.empty(2), 1)
    with pytest.raises(ValueError, match="slerp_bwd: t must hold"):
        k.slerp_bwd(np.ones((2, 3)), a, a, np.ones(1), 1, 1, False, True, np.empty((2, 3)),
                    np.empty((2, 3)), np.empty(2), 1)


def _mp_slerp_loss(mp, g, a, b, t, linear):
    """sum(g * slerp(a, b, t)) for one row, in mpmath (θ from tan(θ/2), any precision)."""
    na = mp.sqrt(mp.fsum(x * x for x in a))
    nb = mp.sqrt(mp.fsum(x * x for x in b))
    u, v = [x / na for x in a], [x / nb for x in b]
    dm = mp.sqrt(mp.fsum((x - y) ** 2 for x, y in zip(u, v)))
    dp = mp.sqrt(mp.fsum((x + y) ** 2 for x, y in zip(u, v)))
    th = 2 * mp.atan(dm / dp)
    w0, w1 = mp.sin((1 - t) * th) / mp.sin(th), mp.sin(t * th) / mp.sin(th)
    if linear:
        r = (1 - t) * na + t * nb
        out = [r * (w0 * x + w1 * y) for x, y in zip(u, v)]
    else:
        out = [w0 * x + w1 * y for x, y in zip(a, b)]
    return mp.fsum(gi * oi for gi, oi in zip(g, out))


@pytest.mark.parametrize("theta", [1e-2, 1e-4, 1e-7, 1e-10, 2.5, 3.0])
@pytest.mark.parametrize("t", [0.3, -2.5, 7.0])
@pytest.mark.parametrize("norm", ["linear", "formula"])
def test_slerp_backward_against_high_precision(theta, t, norm):
    """The θ term keeps full accuracy at small θ (the textbook form loses eps/θ² there)
    and for weights far outside [0, 1]; reference: mpmath derivatives at 60 digits."""
    rng = np.random.default_rng(int(theta * 1e3) + int(t * 10) + 100)
    a = rng.standard_normal((1, 3))
    b = _nudge_off(a, 1.3 * a, theta)
    _check_against_mpmath(a, b, rng.standard_normal((1, 3)), t, norm, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("gap", [1e-7, 1e-5, 1e-3])        # |u + v|, about pi - theta
@pytest.mark.parametrize("t", [1e-9, 1e-5, 0.3, 1 - 1e-5, 1 - 1e-9])
@pytest.mark.parametrize("norm", ["linear", "formula"])
def test_slerp_backward_nearly_antipodal_against_high_precision(gap, t, norm):
    """Near θ = π with t near an end point the θ term's weights must not cancel (the
    weight derivative of the far end point lost eps / (π - θ)^2: errors up to 30%)."""
    rng = np.random.default_rng(int(-np.log10(gap)) + int(t * 100))
    a = rng.standard_normal((1, 3))
    b = _nudge_off(a, -1.3 * a, gap)
    _check_against_mpmath(a, b, rng.standard_normal((1, 3)), t, norm, rtol=5e-8, atol=1e-9,
                          joint=True)


@pytest.mark.parametrize("theta", [1e-3, 0.93, 2.0])
@pytest.mark.parametrize("t", [1e-13, 1e-15, 1 - 1e-13, -1.0, 2.0, -1 + 1e-9, 1.4999, -1.4999])
@pytest.mark.parametrize("norm", ["linear", "formula"])
def test_slerp_backward_near_the_end_points_against_high_precision(theta, t, norm):
    """grad_b as t -> 0 and grad_a as t -> 1 (the far end point's weight derivative
    cancelled there: 5% off at t = 1e-15), and t = -1 or 2, where that derivative is 0
    and an eps of it was multiplied by |b| / |a|."""
    rng = np.random.default_rng(int(theta * 100) + 7)
    a = rng.standard_normal((1, 3))
    b = _nudge_off(a, 0.7 * a, theta)
    _check_against_mpmath(a, b, rng.standard_normal((1, 3)), t, norm, rtol=1e-10, atol=1e-12)
    far = _nudge_off(a, 1e-12 * a, theta)        # |b| / |a| = 1e-12
    _check_against_mpmath(a, far, rng.standard_normal((1, 3)), t, norm, rtol=1e-9, atol=1e-11,
                          joint=True)


@pytest.mark.parametrize("t", [3.0, 2.0, -1.0, -2.0, 2 + 1e-9, 2.0001, 7.5, -5.2])
@pytest.mark.parametrize("norm", ["linear", "formula"])
def test_slerp_backward_nearly_antipodal_extrapolation_against_high_precision(t, norm):
    """t near an integer outside [0, 1] on a nearly antipodal row: the weight derivative
    there is small against the terms of its closed forms (1e-2 of the gradient off at
    t = 3, |u + v| = 1e-7); it is stepped from |t| <= 1/2 instead."""
    a = np.array([[1.0, 2.0, 3.0]])
    b = -a + 1e-7 * np.array([[3.0, 0.0, -1.0]])
    _check_against_mpmath(a, b, np.array([[0.5, -1.0, 2.0]]), t, norm, rtol=5e-8, atol=5e-9,
                          joint=True)


@pytest.mark.parametrize("norm", ["linear", "formula"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_slerp_one_axis_is_the_lerp_with_its_gradient(norm, dtype):
    # D = 1: a / |a| is +-1 only to rounding, which the regular path's projections
    # multiplied by |a| / |b| (grad_b 0.149 for 3 at |b| / |a| = 1e-15)
    rng = np.random.default_rng(12)
    a = rng.uniform(0.5, 10, (40, 1)) * rng.choice([-1, 1], (40, 1))
    b = a * 10.0 ** rng.uniform(-15, 15, (40, 1))
    if dtype == np.float32:
        b = a * 10.0 ** rng.uniform(-6, 6, (40, 1))
    a, b = a.astype(dtype), b.astype(dtype)
    t = rng.uniform(-3, 4, 40).astype(dtype)
    g = rng.standard_normal((40, 1)).astype(dtype)
    ga, gb, gt = fi.slerp_backward(g, a, b, t, norm=norm)
    np.testing.assert_allclose(ga, (1 - t[:, None]) * g, rtol=1e-6 if dtype == np.float32 else 1e-14)
    np.testing.assert_allclose(gb, t[:, None] * g, rtol=1e-6 if dtype == np.float32 else 1e-14)
    want = (1 - t[:, None].astype(np.float64)) * a + t[:, None] * b.astype(np.float64)
    np.testing.assert_allclose(fi.slerp(a, b, t, norm=norm), want,
                               rtol=1e-6 if dtype == np.float32 else 1e-14)


def _check_against_mpmath(a, b, g, t, norm, rtol, atol, joint=False):
    """slerp_backward of one row against mpmath derivatives at 60 digits (atol relative
    to each gradient's largest entry, or with ``joint`` to the largest of grad_a and
    grad_b together: near θ = π and t = 0 grad_b is small and inherits grad_a's
    rounding)."""
    mp = pytest.importorskip("mpmath")
    got = fi.slerp_backward(g, a, b, np.array([t]), norm=norm)
    with mp.workdps(60):
        ga, bb, gg = ([mp.mpf(float(x)) for x in row] for row in (a[0], b[0], g[0]))
        t = mp.mpf(t)       # (1 - t in float64 would round: t = 1e-9 is then 1e-7 off)
        lin = norm == "linear"

        def diff(fun):
            return float(mp.diff(fun, 0))

        want_a = [diff(lambda e, i=i: _mp_slerp_loss(
            mp, gg, [x + (e if j == i else 0) for j, x in enumerate(ga)], bb, t, lin))
            for i in range(3)]
        want_b = [diff(lambda e, i=i: _mp_slerp_loss(
            mp, gg, ga, [x + (e if j == i else 0) for j, x in enumerate(bb)], t, lin))
            for i in range(3)]
        want_t = diff(lambda e: _mp_slerp_loss(mp, gg, ga, bb, t + e, lin))
    joint_scale = np.abs(np.r_[want_a, want_b]).max()
    for x, y in ((got[0][0], want_a), (got[1][0], want_b), (got[2], [want_t])):
        y = np.array(y)
        scale = joint_scale if joint and len(y) > 1 else np.abs(y).max()
        np.testing.assert_allclose(np.ravel(x), y, rtol=rtol, atol=atol * scale)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), depth=st.integers(2, 9), steps=st.integers(1, 3),
       path=st.booleans(), norm=st.sampled_from(["linear", "formula"]),
       shortest_path=st.booleans(), dtype_scale=st.sampled_from([1e-3, 1.0, 1e4]))
def test_slerp_backward_finite_differences_property(seed, depth, steps, path, norm,
                                                    shortest_path, dtype_scale):
    rng = np.random.default_rng(seed)
    a, b = _regular_pairs(rng, 3, depth)
    a, b = a * dtype_scale, b * dtype_scale
    t = rng.uniform(-1.0, 2.0, (3, steps) if path else 3)
    kw = dict(path=path, norm=norm, shortest_path=shortest_path)
    g = rng.standard_normal(fi.slerp(a, b, t, **kw).shape)
    _check_fd(g, a, b, t, kw, eps=1e-6 * dtype_scale, rtol=2e-6, eps_t=1e-6)


@pytest.mark.parametrize("norm", ["linear", "formula"])
def test_slerp_backward_antipodal_path_form_grad_t(norm):
    rng = np.random.default_rng(21)
    a = rng.standard_normal((2, 4))
    b = -a * 1.5
    t = rng.uniform(-0.3, 1.3, (2, 5))
    kw = dict(path=True, norm=norm)
    g = rng.standard_normal((2, 5, 4))
    gt = fi.slerp_backward(g, a, b, t, **kw)[2]
    f = _slerp_loss(g, kw)
    np.testing.assert_allclose(gt, _central_diff(lambda x: f(a, b, x), t, 1e-6), rtol=1e-6,
                               atol=1e-8)


@pytest.mark.parametrize("path", [False, True])
@pytest.mark.parametrize("axis", [-1, 0])
def test_slerp_backward_computes_only_the_gradients_asked_for(path, axis):
    """needs_ab_grad / needs_t_grad: a gradient not asked for is None, the others are
    bit-identical to the full call's (t's alone skips the passes over D that a's and b's
    take per weight)."""
    rng = np.random.default_rng(17)
    a, b = _regular_pairs(rng, 40, 6)
    b[:4] = -2 * a[:4]                      # antipodal rows
    b[4:6] = 0                              # zero rows
    t = rng.uniform(-0.2, 1.2, (40, 3) if path else 40)
    t[0] = 0
    if axis == 0:
        a, b = a.T.copy(), b.T.copy()
    g = rng.standard_normal(fi.slerp(a, b, t, axis, path=path).shape)
    full = fi.slerp_backward(g, a, b, t, axis, path=path)
    ga, gb, gt = fi.slerp_backward(g, a, b, t, axis, path=path, needs_t_grad=False)
    assert gt is None and ga.tobytes() == full[0].tobytes() and gb.tobytes() == full[1].tobytes()
    ga, gb, gt = fi.slerp_backward(g, a, b, t, axis, path=path, needs_ab_grad=False)
    assert ga is None and gb is None and gt.tobytes() == full[2].tobytes()
    assert fi.slerp_backward(g, a, b, t, axis, path=path, needs_ab_grad=False,
                             needs_t_grad=False) == (None, None, None)
    with pytest.raises(TypeError, match="needs_t_grad must be a bool"):
        fi.slerp_backward(g, a, b, t, axis, path=path, needs_t_grad=0)
