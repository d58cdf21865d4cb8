"""Call plans (fastinterp._plans): a repeated small call skips its checks and must
give exactly what the full path gives, raise exactly what it raises, and never
hold large tables."""
from __future__ import annotations

import numpy as np
import pytest

import fastinterp as fi
from fastinterp import _plans, _registry as registry


@pytest.fixture(autouse=True)
def fresh_plans():
    _plans.clear()
    yield
    _plans.clear()


def _full_path(fn, *args, **kwargs):
    """``fn``'s result with no plan stored before or after the call."""
    _plans.clear()
    try:
        return fn(*args, **kwargs)
    finally:
        _plans.clear()


RESIZE_CASES = [
    ((32, 32, 3), np.uint8, dict(size=(16, 16), layout="HWC")),                  # box means
    ((32, 30, 3), np.uint8, dict(size=(13, 41), layout="HWC")),
    ((2, 3, 17, 19), np.float32, dict(size=(9, 31), mode="bicubic", antialias=True)),
    ((2, 3, 17, 19), np.float64, dict(scale_factor=(0.5, 1.7), mode="bilinear",
                                      align_corners=True)),
    ((21, 18), np.float32, dict(size=7, mode="nearest")),
    ((21, 18), np.float32, dict(scale_factor=1.5, mode="nearest-exact")),
    ((3, 24, 20), np.float32, dict(size=(10, 8), mode="area", layout="CHW")),
    ((1, 20, 20, 4), np.float32, dict(size=(33, 12), mode="lanczos", layout="NHWC")),
    ((24, 20, 3), np.uint8, dict(size=(10, 13), mode="bilinear", layout="HWC", match="opencv")),
    ((24, 20, 3), np.uint8, dict(size=(10, 13), mode="bicubic", layout="HWC", match="pil")),
    ((20, 24, 1), np.uint8, dict(size=(30, 9), mode="lanczos", layout="HWC", match="pil")),
    ((2, 1, 9), np.float32, dict(size=4, mode="linear")),                         # 1-D data
]


def _image(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, shape).astype(np.uint8)
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[::7] = np.inf if seed % 2 else np.nan
    return x


@pytest.mark.parametrize("shape,dtype,kwargs", RESIZE_CASES)
def test_repeated_resize_calls_equal_the_full_path(shape, dtype, kwargs):
    first = fi.resize(_image(shape, dtype, 0), **kwargs)
    one_d = len(shape) == 3 and "layout" not in kwargs          # (N, C, L): no plan
    assert len(_plans._plans) == (0 if one_d else 1)
    assert first.shape == _full_path(fi.resize, _image(shape, dtype, 0), **kwargs).shape
    for seed in (1, 2, 3):
        x = _image(shape, dtype, seed)
        got = fi.resize(x, **kwargs)                  # planned after the first call
        want = _full_path(fi.resize, x, **kwargs)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()
        assert got is not first and not np.shares_memory(got, x)


def test_a_planned_signature_still_refuses_arguments_of_other_types():
    x = np.zeros((1, 1, 8, 8), np.float32)
    fi.resize(x, size=(4, 4), align_corners=True)
    fi.resize(x, size=(4, 4), align_corners=True)
    with pytest.raises(TypeError, match="size"):
        fi.resize(x, size=(4.0, 4))                   # 4.0 == 4, and hashes alike
    with pytest.raises(TypeError, match="align_corners"):
        fi.resize(x, size=(4, 4), align_corners=1)    # 1 == True
    with pytest.raises(TypeError, match="antialias"):
        fi.resize(x, size=(4, 4), align_corners=True, antialias=0)
    with pytest.raises(TypeError, match="size"):
        fi.resize(x, size=(True, 4))                  # True == 1
    got = fi.resize(x + 1, size=(np.int64(4), 4), align_corners=True)
    assert np.array_equal(got, np.ones((1, 1, 4, 4), np.float32))


def test_float_arguments_are_keyed_by_their_bits():
    assert _plans.key("op", (), (0.0,)) != _plans.key("op", (), (-0.0,))
    assert _plans.key("op", (), (1,)) != _plans.key("op", (), (1.0,))
    assert _plans.key("op", (), ([1, 2],)) is None                # lists are not keyed
    assert _plans.key("op", (np.zeros(2).tolist(),), ()) is None  # nor array-likes
    a = np.zeros((2, 3))
    assert _plans.key("op", (a,), ()) != _plans.key("op", (a.T.copy().T,), ())   # F order


def test_other_layouts_and_out_take_the_full_path():
    x = _image((2, 3, 16, 12), np.float32, 0)
    fi.resize(x, size=(5, 7))
    strided = np.asfortranarray(x)
    assert np.array_equal(fi.resize(strided, size=(5, 7)), fi.resize(x, size=(5, 7)),
                          equal_nan=True)
    cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    res = fi.resize(cl, size=(5, 7))                  # torch channels_last stays so
    assert res.transpose(0, 2, 3, 1).flags.c_contiguous
    out = np.empty((2, 3, 5, 7), np.float32)
    assert fi.resize(x, size=(5, 7), out=out) is out
    ro = x.copy()
    ro.flags.writeable = False
    assert np.array_equal(fi.resize(ro, size=(5, 7)), fi.resize(x, size=(5, 7)), equal_nan=True)


def test_a_plan_runs_the_kernel_registered_now():
    x = np.ones((1, 1, 6, 6), np.float64)
    fi.resize(x, size=(3, 3))
    fi.resize(x, size=(3, 3))
    calls = []

    def spy(out, x3, ytab, xtab, channels):
        calls.append(out.shape)
        out[...] = 7.0

    registry.register("resize", "cpu", "float64", spy, source="test-plans")
    try:
        got = fi.resize(x, size=(3, 3))
        assert calls and np.all(got == 7.0)
        assert fi.last_kernel().source == "test-plans"
    finally:
        registry.unregister("test-plans")
    assert np.all(fi.resize(x, size=(3, 3)) == 1.0)


def test_plans_are_bounded_in_number_and_table_bytes():
    x = np.zeros((1, 1, 3, 3), np.float32)
    for n in range(1, _plans.MAX_PLANS + 40):
        fi.resize(x, size=(2, n))
    assert 0 < len(_plans._plans) <= _plans.MAX_PLANS
    _plans.clear()
    fi.resize(x, size=(2, 50_000))                    # its tables: 800 KB
    assert not _plans._plans


SAMPLE_CASES = [
    ((2, 3, 8, 9), (2, 5, 4, 2), np.float32, dict()),
    ((2, 3, 8, 9), (2, 5, 4, 2), np.float64, dict(mode="bicubic", padding_mode="reflection",
                                                  align_corners=True)),
    ((1, 2, 7, 6), (1, 3, 3, 2), np.float32, dict(padding_mode="constant", fill=(0.5, -2.0))),
    ((1, 2, 7, 6), (1, 3, 3, 2), np.float64, dict(padding_mode="constant", fill=3.0)),
    ((7, 6, 3), (3, 4, 2), np.uint8, dict(mode="nearest", layout="HWC")),
    ((2, 7, 6, 3), (2, 4, 4, 2), np.float32, dict(layout="NHWC", padding_mode="border")),
    ((1, 2, 4, 5, 6), (1, 3, 2, 2, 3), np.float32, dict()),                    # a volume
]


def _sample_args(xshape, gshape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 256, xshape).astype(np.uint8) if dtype == np.uint8
         else rng.standard_normal(xshape).astype(dtype))
    g = (rng.uniform(-1.3, 1.3, gshape)).astype(np.float32 if dtype == np.uint8 else dtype)
    return x, g


@pytest.mark.parametrize("xshape,gshape,dtype,kwargs", SAMPLE_CASES)
def test_repeated_grid_sample_calls_equal_the_full_path(xshape, gshape, dtype, kwargs):
    fi.grid_sample(*_sample_args(xshape, gshape, dtype, 0), **kwargs)
    assert len(_plans._plans) == (0 if "fill" in kwargs else 1)   # a fill: the full path
    for seed in (1, 2):
        x, g = _sample_args(xshape, gshape, dtype, seed)
        got = fi.grid_sample(x, g, **kwargs)
        want = _full_path(fi.grid_sample, x, g, **kwargs)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def test_a_planned_grid_sample_still_checks_its_arguments():
    x, g = _sample_args((1, 2, 5, 5), (1, 3, 3, 2), np.float32, 0)
    fi.grid_sample(x, g, align_corners=True)
    fi.grid_sample(x, g, align_corners=True)
    with pytest.raises(TypeError, match="align_corners"):
        fi.grid_sample(x, g, align_corners=1)
    with pytest.raises(TypeError):
        fi.grid_sample(x, g.astype(np.float64), align_corners=True)     # dtypes differ
    with pytest.raises(ValueError, match="fill"):
        fi.grid_sample(x, g, align_corners=True, fill=1.0)              # not 'constant'
    strided = np.asfortranarray(x)
    assert np.array_equal(fi.grid_sample(strided, g, align_corners=True),
                          fi.grid_sample(x, g, align_corners=True))


PAIRWISE_SHAPES = [((5, 8), None), ((5, 8), (7, 8)), ((3, 5, 2), (3, 4, 2)),
                   ((5, 16), (2, 1, 6, 16)), ((0, 9), (4, 9))]


@pytest.mark.parametrize("op", ["pairwise_sqdist", "pairwise_l2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xshape,yshape", PAIRWISE_SHAPES)
def test_repeated_pairwise_calls_equal_the_full_path(op, dtype, xshape, yshape):
    fn = getattr(fi, op)

    def args(seed):
        r = np.random.default_rng(seed)
        x = (r.standard_normal(xshape) * 10.0 ** r.integers(-3, 4) + 1e3).astype(dtype)
        return x, None if yshape is None else r.standard_normal(yshape).astype(dtype)

    fn(*args(0))
    for seed in (1, 2, 3):
        x, y = args(seed)
        for yy in (y, x) if yshape is None else (y,):      # y = x itself: symmetric path
            got = fn(x, yy)
            want = _full_path(fn, x, yy)
            assert got.shape == want.shape and got.tobytes() == want.tobytes()


def test_the_fast_median_is_numpys_median():
    from fastinterp.distance import _median_last
    rng = np.random.default_rng(5)
    for n in range(1, 40):
        s = rng.standard_normal((3, 4, n)) * 10.0 ** rng.integers(-300, 300, (3, 4, 1))
        assert _median_last(s.copy()).tobytes() == np.median(s, axis=-1).tobytes()
    big = np.array([[1.7e308, 1.7e308, 1.0e308, -1.0]])
    with np.errstate(over="ignore"):
        want = np.median(big, axis=-1)
    assert _median_last(big).tobytes() == want.tobytes()      # inf, without a warning


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_repeated_lerp_calls_equal_the_full_path(dtype):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 3, 5)).astype(dtype)
    tarr = rng.uniform(-0.5, 1.5, (3, 1)).astype(dtype)
    for t in (0.25, 0.75, 1, 0, -0.0, float("nan"), 3.5, tarr, tarr * 2):
        got = fi.lerp(a, b, t)
        want = _full_path(fi.lerp, a, b, t)
        assert got.tobytes() == want.tobytes()
    m, m_full = a.copy(), a.copy()
    for step in range(6):                               # an in-place moving average
        fi.lerp(m, b, 0.1 * step, out=m)
        _full_path(fi.lerp, m_full, b, 0.1 * step, out=m_full)
        assert m.tobytes() == m_full.tobytes()


def test_a_planned_lerp_still_checks_t_and_out():
    a, b = np.zeros(8), np.ones(8)
    out = np.empty(8)
    for _ in range(2):
        fi.lerp(a, b, 0.5, out=out)
        fi.lerp(a, b, 0.5)
    with pytest.raises(ValueError, match="t"):
        fi.lerp(a, b, 10 ** 400)                       # planned signature (int t)
    fi.lerp(a, b, 1)
    with pytest.raises(ValueError, match="t"):
        fi.lerp(a, b, 10 ** 400)
    buf = np.zeros(9)
    x, y = buf[:8], buf[1:]                            # partially overlapping views
    fi.lerp(x, b, 0.5, out=np.empty(8))
    with pytest.raises(ValueError, match="overlap"):
        fi.lerp(x, b, 0.5, out=y)
    same = np.arange(8.0)
    fi.lerp(same, b, 0.5, out=same)
    alias = same[:]                                    # the same memory, another object
    assert fi.lerp(same, b, 0.5, out=alias) is alias
    assert np.array_equal(same, 1 - (1 - np.arange(8.0)) / 4)
    ro = np.zeros(8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        fi.lerp(a, b, 0.5, out=ro)


@pytest.mark.parametrize("xshape,gshape,dtype,kwargs", [
    c for c in SAMPLE_CASES if c[2] != np.uint8])
@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True), (False, False)])
def test_repeated_grid_sample_backward_calls_equal_the_full_path(xshape, gshape, dtype, kwargs,
                                                                  needs):
    def args(seed):
        x, g = _sample_args(xshape, gshape, dtype, seed)
        go = np.random.default_rng(seed + 9).standard_normal(
            fi.grid_sample(x, g, **kwargs).shape).astype(dtype)
        return go, x, g

    kw = dict(kwargs, needs_input_grad=needs[0], needs_grid_grad=needs[1])
    fi.grid_sample_backward(*args(0), **kw)
    for seed in (1, 2):
        a = args(seed)
        got = fi.grid_sample_backward(*a, **kw)
        want = _full_path(fi.grid_sample_backward, *a, **kw)
        for gv, wv in zip(got, want):
            assert (gv is None) == (wv is None)
            if gv is not None:
                assert gv.shape == wv.shape and gv.tobytes() == wv.tobytes()
                assert gv.flags.c_contiguous


def test_a_fill_is_converted_at_every_call():
    """Its conversion's float errors follow np.errstate, so no plan skips it."""
    x, g = _sample_args((1, 2, 5, 5), (1, 3, 3, 2), np.float32, 0)
    for _ in range(2):
        fi.grid_sample(x, g, padding_mode="constant", fill=(1e-50, 1.0))
    with np.errstate(under="raise"), pytest.raises(FloatingPointError):
        fi.grid_sample(x, g, padding_mode="constant", fill=(1e-50, 1.0))


def test_dtype_metadata_is_never_keyed():
    meta = np.dtype(np.float32, metadata={"unit": "m"})
    plain, tagged = np.ones((4, 3), np.float32), np.ones((4, 3), meta)
    assert _plans.key("op", (tagged,), ()) is None
    for first, second in ((plain, tagged), (tagged, plain)):
        _plans.clear()
        fi.pairwise_sqdist(first)
        assert fi.pairwise_sqdist(second).dtype.metadata == _full_path(
            fi.pairwise_sqdist, second).dtype.metadata


def test_pairwise_plans_hold_no_large_batch_maps():
    x, y = np.ones((3000, 1, 1, 1), np.float32), np.ones((1, 3000, 1, 1), np.float32)
    fi.pairwise_sqdist(x, y)                           # 9M batch elements: 144 MB of maps
    assert not _plans._plans
    fi.pairwise_sqdist(x[:3], y[:, :3])
    assert len(_plans._plans) == 1


@pytest.mark.parametrize("shape,dtype,size,layout", [
    ((2, 8, 7, 7), np.float32, 1, None), ((2, 8, 9, 6), np.float64, (4, 5), None),
    ((12, 10, 3), np.uint8, (6, 5), "HWC"), ((12, 10, 3), np.uint8, (5, 4), "HWC"),
    ((3, 12, 10), np.float32, (None, 3), "CHW")])
def test_repeated_pooling_calls_equal_the_full_path(shape, dtype, size, layout):
    fi.adaptive_avg_pool2d(_image(shape, dtype, 0), size, layout=layout)
    assert len(_plans._plans) == 1
    for seed in (1, 2):
        x = _image(shape, dtype, seed)
        got = fi.adaptive_avg_pool2d(x, size, layout=layout)
        want = _full_path(fi.adaptive_avg_pool2d, x, size, layout=layout)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    with pytest.raises(TypeError):
        fi.adaptive_avg_pool2d(x, 1.0 if size == 1 else (True, 3), layout=layout)
