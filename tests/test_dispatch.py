"""Dispatch, DLPack, the registry, thread settings and the shared validation."""
from __future__ import annotations

import inspect
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastinterp as fi
from fastinterp import _registry as registry
from fastinterp import _validate as V
from fastinterp._dispatch import HALF_OPS, BackendMismatchError, array_kind, backend_of, begin


# ------------------------------------------------------------------ backends

@pytest.mark.parametrize("args", [
    (np.zeros(3),),
    ([1.0, 2.0],),
    ((1.0, 2.0), 3.0),
    (2.0, np.float32(1.0), None),
    (np.zeros(3), [1.0], 0.5),
])
def test_backend_of_cpu(args):
    assert backend_of(*args) == "cpu"


def test_backend_of_nothing_but_scalars_is_cpu():
    assert backend_of(1.0, 2) == "cpu"


@pytest.mark.cudasim
def test_backend_of_simulator_arrays(cuda):
    d = cuda.to_device(np.zeros(4))
    assert array_kind(d) == "cuda"
    assert backend_of(d, 0.5) == "cuda"
    assert backend_of(d, cuda.device_array(3)) == "cuda"


@pytest.mark.cudasim
def test_mixed_devices_name_both_arguments(cuda):
    d = cuda.to_device(np.zeros(4))
    with pytest.raises(BackendMismatchError) as info:
        fi.lerp(np.zeros(4), d, 0.5)
    msg = str(info.value)
    assert "a is a CPU array (numpy.ndarray)" in msg and "b is a CUDA array" in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
    with pytest.raises(BackendMismatchError, match="out must be a CPU array"):
        fi.lerp(np.zeros(4), np.ones(4), 0.5, out=d)


def test_backend_of_default_names():
    class FakeCuda:
        __cuda_array_interface__ = {}
    with pytest.raises(BackendMismatchError, match="argument 0 is a CPU array.*argument 1 is a CUDA"):
        backend_of(np.zeros(2), FakeCuda())


def test_torch_cpu_tensor_is_dlpack(torch):
    x = torch.zeros(3)
    assert array_kind(x) == "dlpack"
    assert backend_of(x) == "cpu"
    p = begin("lerp", a=x, b=np.ones(3))
    assert isinstance(p.arrays["a"], np.ndarray)
    assert np.shares_memory(p.arrays["a"], x.numpy())


def test_dlpack_round_trip_shares_memory_with_out(torch):
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    b = torch.ones(2, 3)
    out = torch.empty(2, 3)
    ptr = out.data_ptr()
    res = fi.lerp(a, b, 0.5, out=out)
    assert res is out and out.data_ptr() == ptr
    assert torch.equal(out, torch.lerp(a, b, 0.5))
    fresh = fi.lerp(a, b, torch.full((2, 3), 0.25))
    assert isinstance(fresh, torch.Tensor) and fresh.dtype == torch.float32
    assert torch.allclose(fresh, torch.lerp(a, b, 0.25))


def test_numpy_inputs_with_torch_weight_give_torch(torch):
    res = fi.lerp(np.zeros(3, np.float32), np.ones(3, np.float32), torch.full((3,), 0.5))
    assert isinstance(res, torch.Tensor)


# ------------------------------------------------------------------ registry

def test_missing_key_lists_what_exists():
    with pytest.raises(NotImplementedError) as info:
        registry.lookup("lerp", "cpu", "float16")
    msg = str(info.value)
    assert "lerp: no kernel for backend 'cpu' and dtype float16" in msg
    assert "(cpu, float32)" in msg and "(cuda, float64)" in msg
    with pytest.raises(NotImplementedError, match="available \\(backend, dtype\\): none"):
        registry.lookup("no_such_op", "cpu", "float32")


def test_register_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        registry.register("lerp", "tpu", "float32", lambda *a: None)


def test_plugin_override_and_unregister_restores():
    calls = []

    def fake(out, a, b, t):
        calls.append(out.shape)
        out[...] = 42.0

    registry.register("lerp", "cpu", "float64", fake, source="test-plugin")
    try:
        res = fi.lerp(np.zeros(3), np.ones(3), 0.5)
        np.testing.assert_array_equal(res, 42.0)
        assert fi.last_kernel().source == "test-plugin" and calls
        assert registry.entries("lerp")[1].source in ("builtin", "test-plugin")
    finally:
        assert registry.unregister("test-plugin") == 1
    res = fi.lerp(np.zeros(3), np.ones(3), 0.5)
    np.testing.assert_array_equal(res, 0.5)
    assert fi.last_kernel().source == "builtin"
    assert registry.unregister("test-plugin") == 0


def test_lazy_string_kernel_resolves():
    registry.register("demo_op", "cpu", "float64", "math:sqrt", source="test-lazy")
    try:
        assert registry.lookup("demo_op", "cpu", np.float64)(4.0) == 2.0
        assert registry.has_op("demo_op")
    finally:
        registry.unregister("test-lazy")
    assert not registry.has_op("demo_op")


def test_register_builtin_covers_both_float_dtypes_and_backends():
    registry.register_builtin("demo_builtin", abs, "math:fabs")
    try:
        keys = {e.key for e in registry.entries("demo_builtin")}
        assert keys == {("demo_builtin", b, d) for b in ("cpu", "cuda")
                        for d in ("float32", "float64")}
        assert inspect.unwrap(registry.lookup("demo_builtin", "cpu", np.float32)) is abs
    finally:
        registry.unregister("builtin", op="demo_builtin")
    assert not registry.has_op("demo_builtin")


def test_last_kernel_names_the_op():
    fi.slerp(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), 0.5)
    assert fi.last_kernel().key == ("slerp", "cpu", "float32")
    fi.lerp(np.ones(2), np.ones(2), 0.5)
    assert fi.last_kernel().key == ("lerp", "cpu", "float64")


def test_cuda_kernels_are_registered_lazily():
    entry = [e for e in registry.entries("slerp") if e.backend == "cuda"][0]
    assert entry.kernel == "fastinterp._cuda.blend:slerp"


def test_import_does_not_import_optional_libraries():
    code = textwrap.dedent("""
        import sys, numpy as np
        import fastinterp as fi
        fi.lerp(np.zeros(3), np.ones(3), 0.5)
        fi.slerp(np.ones((2, 3)), np.ones((2, 3)), 0.5)
        print(sorted(m for m in ("numba", "cupy", "torch", "jax") if m in sys.modules))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


# ------------------------------------------------------------------- threads

@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None, 2**31, 2**70])
def test_set_num_threads_validation(threads, bad):
    with pytest.raises(ValueError, match="n must be a positive int"):
        fi.set_num_threads(bad)


def test_set_num_threads_roundtrip(threads):
    fi.set_num_threads(3)
    assert fi.get_num_threads() == 3
    fi.set_num_threads(np.int64(2))            # a NumPy int, as set_output_cache takes
    assert fi.get_num_threads() == 2 and type(fi.get_num_threads()) is int


def test_threads_for_is_serial_for_tiny_work(threads):
    from fastinterp._config import threads_for
    fi.set_num_threads(2)
    assert threads_for(10) == 1
    assert threads_for(10**7) == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_across_thread_counts(threads, rng, dtype):
    from fastinterp._config import threads_for
    from fastinterp.blend import LERP_MIN_PER_THREAD, SLERP_MIN_PER_THREAD
    rows, depth = 2100, 257
    a = rng.standard_normal((rows, depth)).astype(dtype)
    b = rng.standard_normal((rows, depth)).astype(dtype)
    b[:5] = -a[:5]          # antipodal rows take another branch
    b[5:10] = 2 * a[5:10]   # parallel rows
    t = rng.random(rows).astype(dtype)
    fi.set_num_threads(2)   # the sizes are large enough to use both threads
    assert threads_for(a.size, LERP_MIN_PER_THREAD) == threads_for(a.size, SLERP_MIN_PER_THREAD) == 2
    ts = np.linspace(0, 1, 7).astype(dtype)
    results = {}
    for n in (1, 2):
        fi.set_num_threads(n)
        results[n] = (fi.lerp(a, b, t[:, None]), fi.lerp(a, b, 0.3),
                      fi.slerp(a, b, t), fi.slerp(a, b, ts, path=True, shortest_path=True))
    for one, two in zip(results[1], results[2]):
        np.testing.assert_array_equal(one, two)


# ---------------------------------------------------------------- validation

def test_float_dtype():
    assert V.float_dtype("op", "x", np.zeros(1, np.float32)) == np.float32
    with pytest.raises(TypeError, match="op: x must have dtype float32 or float64 "
                                        r"\(cast float16 to float32 first\); got float16."):
        V.float_dtype("op", "x", np.zeros(1, np.float16))
    ml_dtypes = pytest.importorskip("ml_dtypes")     # bfloat16 had no hint
    with pytest.raises(TypeError, match=r"\(cast bfloat16 to float32 first\); got bfloat16."):
        V.float_dtype("op", "x", np.zeros(1, ml_dtypes.bfloat16))
    with pytest.raises(TypeError, match="got int32"):
        V.float_dtype("op", "x", np.zeros(1, np.int32))


def test_same_dtype():
    assert V.same_dtype("op", a=np.zeros(1), b=None, c=np.zeros(2)) == np.float64
    with pytest.raises(TypeError, match=r"op: c must have the same dtype as a \(float64\); got float32."):
        V.same_dtype("op", a=np.zeros(1), c=np.zeros(2, np.float32))


def test_check_ndim():
    V.check_ndim("op", "x", np.zeros((2, 3)), (2, 3), "(N, C) or (N, C, L)")
    with pytest.raises(ValueError, match=r"op: x must have shape \(N, C, H, W\); got \(2, 3\)."):
        V.check_ndim("op", "x", np.zeros((2, 3)), 4, "(N, C, H, W)")


def test_check_shape():
    V.check_shape("op", "g", np.zeros((2, 5, 2)), (2, None, 2), "(N, L, 2)")
    with pytest.raises(ValueError, match=r"op: g must have shape \(N, L, 2\) = \(2, \*, 2\); got \(2, 5, 3\)."):
        V.check_shape("op", "g", np.zeros((2, 5, 3)), (2, None, 2), "(N, L, 2)")
    with pytest.raises(ValueError, match="got \\(2, 5\\)"):
        V.check_shape("op", "g", np.zeros((2, 5)), (2, None, 2), "(N, L, 2)")


def test_check_option():
    V.check_option("op", "mode", "a", ("a", "b"))
    with pytest.raises(ValueError, match="op: mode must be one of 'a', 'b'; got 'c'."):
        V.check_option("op", "mode", "c", ("a", "b"))


def test_broadcast_shape():
    assert V.broadcast_shape("op", a=np.zeros((3, 1)), b=np.zeros(4), s=1.0) == (3, 4)
    with pytest.raises(ValueError, match=r"op: shapes must broadcast together; got a \(3,\), b \(4,\)."):
        V.broadcast_shape("op", a=np.zeros(3), b=np.zeros(4))


# Equal shapes and size-1 operands take a shortcut in broadcast_shape and in lerp's
# coalesce_broadcast; both must agree with NumPy's broadcasting everywhere.
SHAPE_CASES = [
    [(2, 3), (2, 3)], [(2, 3), ()], [(2, 3), (1, 1, 1)], [(1, 1, 1), (1, 1)], [(0, 3), (0, 3)],
    [(0, 3), (1,)], [(0,), ()], [(3, 1), (1,)], [(1, 3), (3, 1)], [(2, 1, 4), (3, 1), ()],
    [(5,), (5,), (5,)], [(), ()], [(4, 1, 1), (4, 1, 1), (1,)], [(2, 3), (2, 1)],
]


@pytest.mark.parametrize("shapes", SHAPE_CASES)
def test_broadcast_shape_matches_numpy(shapes):
    named = {f"x{i}": np.zeros(s) for i, s in enumerate(shapes)}
    assert V.broadcast_shape("op", **named) == np.broadcast_shapes(*shapes)


@pytest.mark.parametrize("shapes", SHAPE_CASES)
def test_coalesce_broadcast_keeps_the_element_order(shapes):
    from fastinterp.blend import coalesce_broadcast
    out = np.broadcast_shapes(*shapes)
    merged_out, merged = coalesce_broadcast(out, *shapes)
    assert len(merged) == len(shapes) and all(len(m) == len(merged_out) for m in merged)
    rng = np.random.default_rng(0)
    for shape, m in zip(shapes, merged):
        x = rng.standard_normal(shape)
        want = np.broadcast_to(x, out).ravel()
        np.testing.assert_array_equal(np.broadcast_to(x.reshape(m), merged_out).ravel(), want)


def test_begin_on_numpy_arrays_and_scalars():
    a, b = np.zeros(3, np.float32), np.ones(3, np.float16)
    p = begin("lerp", a=a, b=np.ones(3, np.float32), t=0.5)
    assert (p.backend, p.template_kind) == ("cpu", "numpy")
    assert p.arrays["a"] is a and p.template is a and p.arrays["t"] == 0.5
    assert p.storage is None
    p = begin("lerp", a=a, b=b, t=None)          # half storage is widened, as on every path
    assert p.arrays["b"].dtype == np.float32 and p.storage == {"a": np.float32, "b": np.float16}
    p = begin("lerp", a=1.0, b=2, t=True)
    assert (p.backend, p.template, p.template_kind) == ("cpu", None, None)
    sub = np.zeros(3).view(np.matrix)              # a subclass is converted as before
    assert type(begin("lerp", a=sub).arrays["a"]) is np.ndarray


@pytest.mark.parametrize("make, exc, words", [
    (lambda: np.zeros((2, 4)), ValueError, r"out must have shape \(2, 3\); got \(2, 4\)"),
    (lambda: np.zeros((2, 3), np.float32), TypeError, "out must have dtype float64; got float32"),
    (lambda: np.zeros((3, 2)).T, ValueError, "out must be C-contiguous"),
])
def test_check_out(make, exc, words):
    with pytest.raises(exc, match=words):
        V.check_out("op", make(), (2, 3), np.float64)


def test_check_out_read_only_and_overlap():
    out = np.zeros((2, 3))
    V.check_out("op", out, (2, 3), np.float64, {"x": np.zeros(3)})
    with pytest.raises(ValueError, match="op: out must not share memory with x"):
        V.check_out("op", out, (2, 3), np.float64, {"x": out[0]})
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writable"):
        V.check_out("op", out, (2, 3), np.float64)


_OUT_OPS = {
    "lerp": lambda x, out: fi.lerp(x, x, 0.5, out=out),
    "resize": lambda x, out: fi.resize(x, size=x.shape[2:], out=out),
    "adaptive_avg_pool2d": lambda x, out: fi.adaptive_avg_pool2d(x, x.shape[2:], out=out),
    "grid_sample": lambda x, out: fi.grid_sample(x, np.zeros((2, 4, 5, 2), x.dtype), out=out),
}


@pytest.mark.parametrize("op", list(_OUT_OPS))
@pytest.mark.parametrize("view", ["reversed", "strided", "byteswapped", "fortran"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_out_overlapping_an_input_that_is_copied_is_refused(op, view, dtype):
    """An input the kernel takes as a copy (strided, reversed, byte-swapped) that shares
    memory with out is refused before anything is written, as a contiguous one is: the
    check sees the caller's array, not the copy."""
    if op == "grid_sample" and dtype == np.float16:
        dtype = np.float32          # (the grid must match; float16 images are tested above)
    base = np.arange(2 * 3 * 4 * 5 * 2, dtype=dtype)
    out = base[:120].reshape(2, 3, 4, 5)
    fortran = tuple(np.cumprod((1, 2, 3, 4)) * base.itemsize)   # out's memory, F order
    x = {"reversed": out[:, :, ::-1],
         "strided": base[::2].reshape(2, 3, 4, 5),
         "byteswapped": out.view(out.dtype.newbyteorder()),
         "fortran": np.lib.stride_tricks.as_strided(out, out.shape, fortran)}[view]
    before = base.copy()
    with pytest.raises(ValueError, match=f"^{op}: out must"):
        _OUT_OPS[op](x, out)
    np.testing.assert_array_equal(base, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_out_whose_overlap_numpy_cannot_decide_is_refused(dtype):
    """np.shares_memory gives up on interleaved strides (TooHardError): such an out is
    taken as sharing memory, a ValueError, never NumPy's RuntimeError."""
    shape = (7, 11, 13, 17)
    base = np.zeros(400000, dtype)
    it = base.itemsize
    x = np.lib.stride_tricks.as_strided(base, shape, tuple(s * it for s in (30011, 2003, 157, 7)))
    out = base[100000:100000 + x.size].reshape(shape)
    for call in (lambda: fi.lerp(x, np.ones(shape, dtype), 0.5, out=out),
                 lambda: fi.resize(x, size=(13, 17), out=out)):
        with pytest.raises(ValueError, match="out must"):
            call()
    assert not base.any()


def test_as_c_contiguous_keeps_rank_and_avoids_copies():
    x = np.zeros((3, 4))
    assert V.as_c_contiguous(x) is x
    assert V.as_c_contiguous(np.zeros(())).shape == ()
    y = V.as_c_contiguous(x.T)
    assert y.flags.c_contiguous and y.shape == (4, 3)


def test_lerp_of_0d_arrays_is_0d():
    res = fi.lerp(np.zeros(()), np.ones(()), np.array(0.5))
    assert res.shape == () and res == 0.5


# --------------------------------------------------- torch views through DLPack
# Every op reads its arrays through the shared layer (begin / adopt_out): a
# torch view must give exactly what its plain NumPy values give, or a clear
# error. Each case: op name, a function of the inputs, the float32 inputs.

def _op_cases(rng):
    f32 = np.float32
    x4 = rng.standard_normal((2, 3, 5, 6)).astype(f32)
    grid = rng.uniform(-1.1, 1.1, (2, 4, 3, 2)).astype(f32)
    pts = rng.standard_normal((9, 4)).astype(f32)
    qry = rng.standard_normal((5, 4)).astype(f32)
    return {
        "lerp": (lambda a, b, t: fi.lerp(a, b, t),
                 [rng.standard_normal((4, 6)).astype(f32), rng.standard_normal((4, 6)).astype(f32),
                  rng.random((4, 6)).astype(f32)]),
        "slerp": (lambda a, b: fi.slerp(a, b, 0.3),
                  [rng.standard_normal((4, 6)).astype(f32), rng.standard_normal((4, 6)).astype(f32)]),
        "resize": (lambda x: fi.resize(x, size=(7, 4), mode="bilinear"), [x4]),
        "grid_sample": (lambda x, g: fi.grid_sample(x, g, align_corners=False), [x4, grid]),
        "pairwise_sqdist": (lambda x, y: fi.pairwise_sqdist(x, y), [pts, qry]),
        "knn": (lambda x, q: fi.knn(x, q, 3), [pts, qry]),
    }


def _transposed(torch, x):
    return torch.from_numpy(np.ascontiguousarray(np.swapaxes(x, -1, -2))).transpose(-1, -2)


def _negative_bit(torch, x):
    c = torch.complex(torch.zeros(x.shape), torch.from_numpy(-x))
    view = c.conj().imag
    assert view.is_neg()
    return view


def _strided(torch, x):
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
    wide[..., ::2] = x
    return torch.from_numpy(wide)[..., ::2]


def _expanded(torch, x):
    return torch.from_numpy(np.ascontiguousarray(x[:1])).expand(*x.shape)


def _as_plain(x, view):
    """The values a view is meant to hold (expand repeats the first row)."""
    return np.ascontiguousarray(np.broadcast_to(x[:1], x.shape)) if view is _expanded else x


def _to_numpy_result(res):
    return tuple(np.asarray(r) for r in res) if isinstance(res, tuple) else (np.asarray(res),)


OPS = ["lerp", "slerp", "resize", "grid_sample", "pairwise_sqdist", "knn"]


@pytest.mark.parametrize("view", [_transposed, _negative_bit, _strided, _expanded],
                         ids=["t", "neg_bit", "strided", "expand"])
@pytest.mark.parametrize("op", OPS)
def test_torch_views_read_as_their_values(torch, rng, op, view):
    fn, inputs = _op_cases(rng)[op]
    for i in range(len(inputs)):  # one view at a time, the others plain tensors
        plain = [_as_plain(x, view) if j == i else x for j, x in enumerate(inputs)]
        args = [view(torch, x) if j == i else torch.from_numpy(x.copy())
                for j, x in enumerate(inputs)]
        expected = _to_numpy_result(fn(*plain))
        got = fn(*args)
        got_np = _to_numpy_result(got)
        assert all(isinstance(g, torch.Tensor) for g in (got if isinstance(got, tuple) else (got,)))
        for e, g in zip(expected, got_np):
            np.testing.assert_array_equal(g, e, err_msg=f"{op}, view of input {i}")


@pytest.mark.parametrize("make, words", [
    (lambda torch, x: torch.from_numpy(x).requires_grad_(), r"must not require grad.*detach\(\)"),
    (lambda torch, x: torch.complex(torch.from_numpy(x), torch.from_numpy(x)).conj(),
     r"float32 or float64.*complex64"),
])
@pytest.mark.parametrize("op", OPS)
def test_unreadable_torch_tensors_raise_clear_type_errors(torch, rng, op, make, words):
    fn, inputs = _op_cases(rng)[op]
    args = [torch.from_numpy(x) for x in inputs]
    args[0] = make(torch, inputs[0])
    with pytest.raises(TypeError, match=f"^{op}: .*{words}"):
        fn(*args)


@pytest.mark.parametrize("op", OPS)
def test_torch_bfloat16_is_half_storage_or_a_clear_type_error(torch, rng, op):
    """bfloat16 tensors are read through DLPack: ops with half-precision storage return a
    bfloat16 tensor equal to the NumPy call on the same bits (ml_dtypes); the others raise
    a TypeError naming the dtype."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    fn, inputs = _op_cases(rng)[op]
    args = [torch.from_numpy(x) for x in inputs]
    args[0] = args[0].to(torch.bfloat16)
    if op not in HALF_OPS:
        with pytest.raises(TypeError, match=f"^{op}: .*must have dtype float32 or float64.*got bfloat16"):
            fn(*args)
        return
    got = fn(*args)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.bfloat16
    expected = fn(inputs[0].astype(ml_dtypes.bfloat16), *inputs[1:])
    np.testing.assert_array_equal(got.view(torch.int16).numpy(), expected.view(np.int16))


@pytest.mark.parametrize("op, call", [
    ("lerp", lambda a, b, out: fi.lerp(a, b, 0.25, out=out)),
    ("slerp", lambda a, b, out: fi.slerp(a, b, 0.25, out=out)),
    ("pairwise_sqdist", lambda a, b, out: fi.pairwise_sqdist(a, b, out=out)),
])
def test_numpy_out_with_torch_inputs_returns_out_itself(torch, rng, op, call):
    a = rng.standard_normal((4, 4)).astype(np.float32)
    b = rng.standard_normal((4, 4)).astype(np.float32)
    out = np.zeros((4, 4), np.float32)
    res = call(torch.from_numpy(a), torch.from_numpy(b), out)
    assert res is out
    np.testing.assert_array_equal(out, np.asarray(call(a, b, None)))
    tout = torch.zeros(4, 4)
    assert call(a, b, tout) is tout  # and the other way round


@pytest.mark.parametrize("out", [1.0, 3, np.float32(2.0)])
def test_scalar_out_is_a_type_error(out):
    with pytest.raises(TypeError, match=r"^lerp: out must be an array \(or None\); got "):
        fi.lerp(np.zeros(3), np.ones(3), 0.5, out=out)


def test_parameter_with_negative_bit_is_refused_not_copied(torch):
    """An optimizer writes its parameters in place: a view with torch's negative bit would
    be resolved into a copy, which would take the update; it is refused as out= is."""
    base = torch.complex(torch.zeros(3), torch.full((3,), -7.0))
    with pytest.raises(TypeError, match=r"SGD: params\[0\] must be a plain tensor; got a "
                                        r"view with torch's negative"):
        fi.SGD([base.conj().imag], lr=0.1)


def test_out_with_negative_bit_or_requires_grad_is_refused_and_untouched(torch):
    a, b = torch.zeros(3), torch.ones(3)
    base = torch.complex(torch.zeros(3), torch.full((3,), -7.0))
    neg = base.conj().imag
    with pytest.raises(TypeError, match="out must be a plain tensor; got a view with torch's negative"):
        fi.lerp(a, b, 0.5, out=neg)
    assert torch.equal(base.imag, torch.full((3,), -7.0))
    g = torch.full((3,), 7.0, requires_grad=True)
    with pytest.raises(TypeError, match="out must not require grad"):
        fi.lerp(a, b, 0.5, out=g)
    assert torch.equal(g.detach(), torch.full((3,), 7.0))


_SMALL_ARRAY_ARGUMENTS = {   # op -> call(image, small tensor), the small tensor's name
    "warp_affine M": (lambda x, m: fi.warp_affine(x, m, (7, 6)),
                      [[1.0, 0.1, 0.5], [0.0, 1.0, -0.3]], "M"),
    "warp_perspective M": (lambda x, m: fi.warp_perspective(x, m, (7, 6)),
                           [[1.0, 0.1, 0.5], [0.0, 1.0, -0.3], [0.01, 0.0, 1.0]], "M"),
    "warp_affine_backward M": (
        lambda x, m: fi.warp_affine_backward(np.ones((1, 3, 7, 6), np.float32), x, m, (7, 6))[0],
        [[1.0, 0.1, 0.5], [0.0, 1.0, -0.3]], "M"),
    "grid_sample fill": (
        lambda x, f: fi.grid_sample(x, np.full((1, 4, 5, 2), 0.9, np.float32),
                                    padding_mode="constant", fill=f),
        [0.5, -2.0, 3.0], "fill"),
}


@pytest.mark.parametrize("case", list(_SMALL_ARRAY_ARGUMENTS))
def test_small_array_arguments_follow_the_tensor_rules(torch, case, rng):
    """A warp matrix or a per-channel fill given as a tensor is read like an image: a
    negative-bit view by its values, one that requires grad is the same TypeError."""
    call, values, name = _SMALL_ARRAY_ARGUMENTS[case]
    x = rng.standard_normal((1, 3, 8, 9)).astype(np.float32)
    plain = torch.tensor(values)
    expected = call(x, plain.numpy())
    np.testing.assert_array_equal(call(x, plain), expected)
    np.testing.assert_array_equal(call(x, torch._neg_view(-plain)), expected)
    with pytest.raises(TypeError, match=f": {name} must not require grad .* pass "
                                        f"{name}.detach"):
        call(x, plain.clone().requires_grad_())


class _ReadOnlyExporter:
    """A DLPack producer of a read-only array; ``legacy`` takes no max_version."""

    def __init__(self, arr, legacy=False):
        self.arr, self.legacy = arr, legacy

    def __dlpack__(self, stream=None, **kw):
        if self.legacy and kw:
            raise TypeError("unexpected keyword")
        return self.arr.__dlpack__(stream=stream, **kw)

    def __dlpack_device__(self):
        return self.arr.__dlpack_device__()


@pytest.mark.parametrize("legacy", [False, True])
def test_dlpack_read_only_input_is_fine_and_read_only_out_is_refused(legacy):
    a = np.arange(4.0)
    a.flags.writeable = legacy  # an unversioned capsule cannot carry the read-only flag
    res = fi.lerp(_ReadOnlyExporter(a, legacy), np.ones(4), 0.5)
    np.testing.assert_array_equal(np.asarray(res), (a + 1) / 2)
    if legacy:
        return
    frozen = np.zeros(4)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="lerp: out must be writable; got a read-only array"):
        fi.lerp(np.zeros(4), np.ones(4), 0.5, out=_ReadOnlyExporter(frozen))
    assert not frozen.any()


def test_check_out_alias_rule():
    out = np.zeros((2, 3))
    V.check_out("op", out, (2, 3), np.float64, {"x": out}, alias_ok=("x",))
    V.check_out("op", out, (2, 3), np.float64, {"x": out[:]}, alias_ok=True)
    with pytest.raises(ValueError, match="op: out must not share memory with y"):
        V.check_out("op", out, (2, 3), np.float64, {"x": out, "y": out}, alias_ok=("x",))
    wide = np.zeros(8)
    target = wide[:6].reshape(2, 3)
    for partial in (wide[1:7].reshape(2, 3), target[:, ::-1], target.reshape(3, 2)):
        with pytest.raises(ValueError, match="out must be either exactly x .* partially overlaps x"):
            V.check_out("op", target, (2, 3), np.float64, {"x": partial}, alias_ok=("x",))


@pytest.mark.parametrize("call", [
    lambda buf: fi.resize(buf[:16].reshape(1, 1, 4, 4), (2, 2), out=buf[14:18].reshape(1, 1, 2, 2)),
    lambda buf: fi.adaptive_avg_pool2d(buf[:16].reshape(1, 1, 4, 4), 2,
                                       out=buf[15:19].reshape(1, 1, 2, 2)),
    lambda buf: fi.pairwise_sqdist(buf[:8].reshape(4, 2), out=buf[6:22].reshape(4, 4)),
    lambda buf: fi.grid_sample(buf[:16].reshape(1, 1, 4, 4), np.zeros((1, 2, 2, 2), np.float32),
                               out=buf[12:16].reshape(1, 1, 2, 2)),
])
def test_partial_overlap_of_an_op_without_aliasing_does_not_offer_exact_aliasing(call):
    # such an op refuses out=input too: the message must not suggest it
    buf = np.arange(24, dtype=np.float32)
    with pytest.raises(ValueError, match=r"out must not share memory with (input|x); pass"):
        call(buf)


@pytest.mark.parametrize("value, exc, words", [
    (None, TypeError, "got None"),
    (1j, TypeError, "got complex 1j"),
    (np.complex64(1), TypeError, "got complex64"),
    ("0.5", TypeError, "got str '0.5'"),
    (True, TypeError, "got bool True"),
    (10**400, ValueError, "representable in float64; got an int of 401 digits"),
    (2**200, ValueError, "representable in float32; got an int of 61 digits"),
    (1e300, ValueError, "representable in float32; got 1e[+]?300"),
])
def test_real_scalar(value, exc, words):
    dtype = np.float32 if words.find("float32") >= 0 else np.float64
    with pytest.raises(exc, match=f"^op: t must .*{words}"):
        V.real_scalar("op", "t", value, dtype)


def test_real_scalar_accepts_reals_and_non_finite():
    assert V.real_scalar("op", "t", 3, np.float32).dtype == np.float32
    assert V.real_scalar("op", "t", np.int64(2), np.float64) == 2.0
    assert np.isnan(V.real_scalar("op", "t", float("nan"), np.float32))
    assert V.real_scalar("op", "t", -math.inf, np.float64) == -math.inf


@pytest.mark.parametrize("call, shape", [
    (lambda x, out: fi.resize(x, size=(8, 6), out=out), (1, 2, 8, 6)),
    (lambda x, out: fi.adaptive_avg_pool2d(x, (2, 3), out=out), (1, 2, 2, 3)),
    (lambda x, out: fi.grid_sample(x, np.zeros((1, 3, 3, 2), np.float32), out=out), (1, 2, 3, 3)),
])
def test_numpy_out_with_a_torch_image_returns_out_itself(torch, rng, call, shape):
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    out = np.full(shape, np.nan, np.float32)
    assert call(torch.from_numpy(x), out) is out
    np.testing.assert_array_equal(out, call(x, None))


@pytest.mark.cudasim
def test_read_only_cuda_out_is_refused(cuda):
    class ReadOnlyDevice:
        """A device array that says read-only in its __cuda_array_interface__."""
        shape, strides, dtype = (3,), (8,), np.dtype(np.float64)
        __cuda_array_interface__ = {"shape": (3,), "typestr": "<f8", "data": (4096, True),
                                    "version": 3, "strides": None}

    a = cuda.to_device(np.zeros(3))
    with pytest.raises(ValueError, match="lerp: out must be writable; got a read-only array"):
        fi.lerp(a, a, 0.5, out=ReadOnlyDevice())


def test_unbuilt_checkout_says_how_to_build(tmp_path):
    """The Python package without its compiled kernels (a checkout never built) fails at
    import with an ImportError that names the missing kernels and `make build`."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import fastinterp
    shutil.copytree(Path(fastinterp.__file__).parent, tmp_path / "fastinterp",
                    ignore=shutil.ignore_patterns("__pycache__", "_cpu", "_cuda"))
    code = ("import sys; sys.path.insert(0, %r)\n"
            "try:\n    import fastinterp\nexcept ImportError as e:\n    print('ERR', e)\n"
            "else:\n    print('OK', fastinterp.__file__)\n") % str(tmp_path)
    # -S: no site-packages, so no editable-install finder can supply the kernels
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.stdout.startswith("ERR"), out.stdout + out.stderr
    assert "fastinterp._cpu.blend" in out.stdout and "make build" in out.stdout


_IMG = np.zeros((1, 1, 4, 4), np.float32)
_GRID = np.zeros((1, 2, 2, 2), np.float32)


@pytest.mark.parametrize("op, arg, call", [
    ("resize", "input", lambda v: fi.resize(v, size=(2, 2))),
    ("adaptive_avg_pool2d", "input", lambda v: fi.adaptive_avg_pool2d(v, 2)),
    ("adaptive_avg_pool1d", "input", lambda v: fi.adaptive_avg_pool1d(v, 2)),
    ("resize_backward", "grad_output", lambda v: fi.resize_backward(v, (1, 1, 4, 4))),
    ("affine_grid", "theta", lambda v: fi.affine_grid(v, (1, 1, 4, 4))),
    ("affine_grid_backward", "grad_grid", lambda v: fi.affine_grid_backward(v, (1, 1, 4, 4))),
    ("grid_sample", "input", lambda v: fi.grid_sample(v, _GRID)),
    ("grid_sample_backward", "input",
     lambda v: fi.grid_sample_backward(np.zeros((1, 1, 2, 2), np.float32), v, _GRID)),
    ("warp_affine_backward", "grad_output",
     lambda v: fi.warp_affine_backward(v, _IMG, np.eye(2, 3), (4, 4))),
])
@pytest.mark.parametrize("value", [None, 2.5], ids=repr)
def test_a_scalar_or_none_for_the_main_array_is_a_type_error_naming_it(op, arg, call, value):
    with pytest.raises(TypeError, match=rf"^{op}: {arg} must be an array; got"):
        call(value)


@pytest.mark.parametrize("op, arg, call", [
    ("lerp", "a", lambda v: fi.lerp(v, np.ones(2), 0.5)),
    ("slerp", "t", lambda v: fi.slerp(np.ones((2, 3)), np.ones((2, 3)), v)),
    ("pairwise_sqdist", "x", lambda v: fi.pairwise_sqdist(v)),
    ("knn", "queries", lambda v: fi.knn(np.zeros((3, 2)), v, 1)),
    ("resize", "input", lambda v: fi.resize(v, size=(2, 2))),
    ("adaptive_avg_pool2d", "input", lambda v: fi.adaptive_avg_pool2d(v, 2)),
    ("affine_grid", "theta", lambda v: fi.affine_grid(v, (1, 1, 4, 4))),
    ("grid_sample", "grid", lambda v: fi.grid_sample(_IMG, v)),
])
@pytest.mark.parametrize("value", ["ab", b"xy", [None, 1.0], [1.0, "a"]], ids=repr)
def test_strings_and_objects_are_a_type_error_naming_the_argument(op, arg, call, value):
    """NumPy reads a string as a 0-d array of dtype <U2: the error named a dtype or a
    shape () instead of what was passed."""
    with pytest.raises(TypeError, match=rf"^{op}: {arg} must be a real number or an array of reals .*; "
                                        rf"got {type(value).__name__} "):
        call(value)


@pytest.mark.parametrize("call, name", [
    (lambda r: fi.lerp(r, np.ones(2), 0.5), "a"),
    (lambda r: fi.slerp(np.ones((2, 3)), np.ones((2, 3)), r), "t"),
    (lambda r: fi.pairwise_sqdist(r), "x"),
])
def test_ragged_lists_are_a_clear_value_error(call, name):
    op = call.__code__.co_names[1]
    with pytest.raises(ValueError, match=f"^{op}: {name} must be a rectangular array; got a list"):
        call([[1.0, 2.0], [3.0]])


def _nested(depth):
    v = [1.0]
    for _ in range(depth):
        v = [v]
    return v


@pytest.mark.parametrize("frontend", ["numpy", "jax", "dask", "torch"])
def test_a_list_nested_thousands_deep_is_a_clear_value_error(frontend):
    """Its repr in the message recursed (RecursionError); JAX's own reading recursed too.
    Options are shown abbreviated as well."""
    m = {"numpy": fi}.get(frontend) or pytest.importorskip(f"fastinterp.{frontend}")
    img = np.ones((1, 1, 4, 4), np.float32)
    if frontend == "torch":
        img = pytest.importorskip("torch").ones(1, 1, 4, 4)
    deep = _nested(5000)
    for call, name in ((lambda: m.resize(deep, size=(2, 2)), "input"),
                       (lambda: m.lerp(img, img, deep), "t")):
        with pytest.raises(ValueError, match=rf"must be a rectangular array; got a list") as info:
            call()
        assert str(info.value).startswith(f"{('resize', 'lerp')[name == 't']}: {name} ")
        assert len(str(info.value)) < 300
    with pytest.raises(ValueError, match=r"^resize: mode must be one of .*; got \[\[\[") as info:
        m.resize(img, size=(2, 2), mode=deep)
    assert len(str(info.value)) < 300


def test_messages_show_long_lists_abbreviated():
    with pytest.raises(ValueError, match=r"^resize: mode must be one of .*; got \[0, 1, 2, .*\.\.\.\]\.$"):
        fi.resize(np.ones((4, 4)), size=(2, 2), mode=list(range(10**6)))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(kernel=42), TypeError,
     r"register: kernel must be a callable or a 'module:attr' string; got int 42"),
    (dict(kernel="math.sqrt"), TypeError,
     r"register: kernel must be a callable or a 'module:attr' string; got str 'math.sqrt'"),
    (dict(dtype="float17"), ValueError,
     r"register: dtype must be one of .*float32.*float64.*; got 'float17'"),
    (dict(dtype="complex64"), ValueError, r"register: dtype must be one of .*; got 'complex64'"),
    (dict(backend="tpu"), ValueError, r"register: backend must be one of"),
])
def test_register_validates_its_arguments(kwargs, error, message):
    args = dict(op="lerp", backend="cpu", dtype="float64", kernel=lambda *a: None) | kwargs
    before = registry.entries()
    try:
        with pytest.raises(error, match=message):
            registry.register(**args, source="test-bad")
    finally:
        assert registry.unregister("test-bad") == 0
    assert registry.entries() == before
    np.testing.assert_array_equal(fi.lerp(np.zeros(3), np.ones(3), 0.5), 0.5)


# ------------------------------------------------------------------ byte order

def _swapped(a):
    """``a`` stored in the other byte order (as read from a big-endian file, say)."""
    return a.astype(a.dtype.newbyteorder("S"))


_BYTE_ORDER_CALLS = {
    "grid_sample": lambda x, g: fi.grid_sample(x, g, align_corners=True),
    "grid_sample_backward": lambda x, g: fi.grid_sample_backward(x[:, :, :4, :5], x, g),
    "affine_grid": lambda x, g: fi.affine_grid(x[:1, 0, :2, :3], (1, 1, 4, 5)),
    "warp_affine": lambda x, g: fi.warp_affine(x, np.array([[1.0, 0.2, 0.5], [0.1, 0.9, 0.0]]),
                                               (4, 5)),
    "warp_perspective_backward": lambda x, g: fi.warp_perspective_backward(
        x[:, :, :4, :5], x, np.eye(3) + 0.01, (4, 5)),
    "resize": lambda x, g: fi.resize(x, size=(9, 4), mode="bicubic"),
    "adaptive_avg_pool2d": lambda x, g: fi.adaptive_avg_pool2d(x, 3),
    "lerp": lambda x, g: fi.lerp(x, x[:, :, ::-1], 0.25),
    "slerp": lambda x, g: fi.slerp(x[0, 0], x[1, 0], 0.5),
    "pairwise_sqdist": lambda x, g: fi.pairwise_sqdist(x[0, 0], x[1, 1]),
    "knn": lambda x, g: fi.knn(x[0, 0], x[1, 2], 2),
}


@pytest.mark.parametrize("op", sorted(_BYTE_ORDER_CALLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_byte_swapped_arrays_are_read_as_their_values(op, dtype, rng):
    """Arrays of the other byte order are converted once (like non-contiguous ones): every
    op gives the native array's result, in the native dtype, for the first and later calls."""
    x = rng.random((2, 3, 6, 7)).astype(dtype)
    g = rng.uniform(-1.1, 1.1, (2, 4, 5, 2)).astype(dtype)
    call = _BYTE_ORDER_CALLS[op]
    want = call(x, g)
    for _ in range(2):        # the second call may run a stored plan
        got = call(_swapped(x), _swapped(g))
        for w, r in zip(*((want, got) if isinstance(want, tuple) else ((want,), (got,)))):
            assert r.dtype == w.dtype and r.dtype.isnative
            np.testing.assert_array_equal(r, w)


def test_byte_swapped_arrays_are_named_where_they_cannot_be_converted():
    """An ``out`` or an optimizer's parameter is written in place: no copy, a clear error."""
    x = np.zeros((1, 1, 4, 4))
    f8, f4, i4 = (_swapped(np.zeros(3, d)).dtype for d in ("f8", "f4", "i4"))
    with pytest.raises(TypeError, match=rf"^resize: out must have dtype float64 in native byte "
                                        rf"order; got \{f8}\."):
        fi.resize(x, size=(4, 4), out=np.zeros((1, 1, 4, 4), f8))
    with pytest.raises(TypeError, match=rf"^SGD: params\[0\] must have dtype float32 or float64 "
                                        rf"in native byte order; got \{f8}\."):
        fi.SGD([np.zeros(3, f8)], lr=0.1)
    with pytest.raises(TypeError, match=rf"^op: x must have dtype float32 or float64 in native "
                                        rf"byte order; got \{f4}\."):
        V.float_dtype("op", "x", np.zeros(1, f4))
    with pytest.raises(TypeError, match=rf"^op: x must have dtype float32 or float64; got \{i4}\."):
        V.float_dtype("op", "x", np.zeros(1, i4))


@pytest.mark.parametrize("op, arg, call", [
    ("lerp", "a", lambda v: fi.lerp(v, np.ones(2), 0.5)),
    ("lerp", "t", lambda v: fi.lerp(np.ones(2), np.ones(2), v)),
    ("pairwise_sqdist", "x", lambda v: fi.pairwise_sqdist([v])),
    ("warp_affine", "M", lambda v: fi.warp_affine(np.ones((1, 2, 4, 4)), [v + [0.0], [0, 1, 0]],
                                                  (3, 3))),
    ("warp_perspective", "M", lambda v: fi.warp_perspective(
        np.ones((1, 2, 4, 4)), [v + [0.0], [0, 1, 0], [0, 0, 1]], (3, 3))),
    ("rotate", "fill", lambda v: fi.rotate(np.ones((1, 2, 4, 4)), 10.0,
                                           padding_mode="constant", fill=v)),
    ("grid_sample", "fill", lambda v: fi.grid_sample(np.ones((1, 2, 4, 4)),
                                                     np.zeros((1, 3, 3, 2)),
                                                     padding_mode="constant", fill=v)),
])
def test_a_list_holding_tensors_that_require_grad_is_a_type_error_naming_it(op, arg, call):
    """NumPy cannot read such a list: torch's raw RuntimeError named neither op nor argument."""
    torch = pytest.importorskip("torch")
    t = torch.ones(2, requires_grad=True)
    with pytest.raises(TypeError, match=rf"^{op}: {arg} must be an array or a list of numbers "
                                        r".*requires grad"):
        call([t[0], t[1]])


@pytest.mark.parametrize("name, values, call", [
    ("size", (5, 4), lambda v: fi.resize(np.ones((1, 1, 8, 8)), size=v)),
    ("scale_factor", (2.0, 3.0), lambda v: fi.resize(np.ones((1, 1, 8, 8)), scale_factor=v)),
    ("output_size", (5, 4), lambda v: fi.adaptive_avg_pool2d(np.ones((1, 1, 8, 8)), v)),
    ("size", (1, 3, 5, 4), lambda v: fi.affine_grid(np.zeros((1, 2, 3)), v)),
    ("dsize", (5, 4), lambda v: fi.warp_affine(np.ones((1, 1, 4, 4)), np.eye(2, 3), v)),
    ("center", (1.0, 2.0), lambda v: fi.rotate(np.ones((1, 1, 4, 4)), 3.0, center=v)),
    ("input_size", (1, 3, 8, 9), lambda v: fi.resize_backward(np.ones((1, 3, 4, 5)), v)),
])
@pytest.mark.parametrize("unordered", [set, dict.fromkeys, frozenset])
def test_an_unordered_collection_of_sizes_is_a_type_error(name, values, call, unordered):
    """A set has no order for its axes: {5, 4} was read as (4, 5)."""
    with pytest.raises(TypeError, match=rf"{name} must be"):
        call(unordered(values))


def test_a_cuda_array_given_through_dlpack_only_is_a_clear_type_error():
    """Such an object (a JAX GPU array) was sent to the CUDA backend, whose
    cuda.as_cuda_array needs __cuda_array_interface__: an AttributeError or a TypeError
    about numba's interface, not one naming the argument and the ways in."""
    class CudaDLPackOnly:
        shape, dtype = (2, 3), np.dtype(np.float32)

        def __dlpack__(self, stream=None, **kwargs):
            raise AssertionError("not to be read")

        def __dlpack_device__(self):
            return (2, 0)          # kDLCUDA

    with pytest.raises(TypeError, match=r"lerp: a is a CUDA array given through DLPack "
                                        r"only \(CudaDLPackOnly\).*cupy.from_dlpack"):
        fi.lerp(CudaDLPackOnly(), CudaDLPackOnly(), 0.5)


# NumPy arrays have up to 64 dimensions; np.broadcast (and np.broadcast_shapes) only 32.
MANY_DIMS = (2,) + (1,) * 31 + (3, 4)          # 34 dimensions


def test_lerp_and_slerp_take_arrays_of_more_than_32_dimensions():
    rng = np.random.default_rng(5)
    a = rng.standard_normal(MANY_DIMS)
    b = rng.standard_normal((1,) * 33 + (4,))    # broadcasts against a
    np.testing.assert_allclose(fi.lerp(a, b, 0.25), a + 0.25 * (b - a), rtol=1e-15)
    bb = np.broadcast_to(b, MANY_DIMS).copy()
    got = fi.slerp(a, bb, 0.5)
    want = fi.slerp(a.reshape(-1, 4), bb.reshape(-1, 4), 0.5).reshape(MANY_DIMS)
    np.testing.assert_array_equal(got, want)
    t = rng.random(MANY_DIMS[:-1])
    np.testing.assert_array_equal(
        fi.slerp(a, bb, t), fi.slerp(a.reshape(-1, 4), bb.reshape(-1, 4),
                                     t.reshape(-1)).reshape(MANY_DIMS))


def test_distances_take_more_than_32_batch_dimensions():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2,) + (1,) * 32 + (5, 3))       # 33 batch dimensions
    y = rng.standard_normal((1,) * 32 + (3, 4, 3))
    d = fi.pairwise_sqdist(x, y)
    assert d.shape == (2,) + (1,) * 31 + (3, 5, 4)
    ref = fi.pairwise_sqdist(x.reshape(2, 1, 5, 3), y.reshape(1, 3, 4, 3))
    np.testing.assert_array_equal(d.reshape(2, 3, 5, 4), ref)
    dist, idx = fi.knn(y, x, 2)
    ref_d, ref_i = fi.knn(y.reshape(1, 3, 4, 3), x.reshape(2, 1, 5, 3), 2)
    np.testing.assert_array_equal(idx.reshape(2, 3, 5, 2), ref_i)
    np.testing.assert_array_equal(dist.reshape(2, 3, 5, 2), ref_d)


def test_public_calls_work_while_torch_is_half_imported(monkeypatch):
    """A call made while another thread imports torch saw a half-initialised module
    without ``torch.compiler`` (an AttributeError in almost every call); a user's own
    module named torch has none either."""
    import types
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    np.testing.assert_array_equal(fi.lerp(np.zeros(3), np.ones(3), 0.5), 0.5)
    half = types.ModuleType("torch")
    half.compiler = types.ModuleType("torch.compiler")     # its own import under way
    monkeypatch.setitem(sys.modules, "torch", half)
    np.testing.assert_array_equal(fi.lerp(np.zeros(3), np.ones(3), 0.5), 0.5)
