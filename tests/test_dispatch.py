"""Dispatch, DLPack, the registry, thread settings and the shared validation."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastinterp as fi
from fastinterp import _registry as registry
from fastinterp import _validate as V
from fastinterp._dispatch import BackendMismatchError, array_kind, backend_of, begin


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
        assert registry.lookup("demo_builtin", "cpu", np.float32) is abs
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

@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_set_num_threads_validation(threads, bad):
    with pytest.raises(ValueError, match="n must be a positive int"):
        fi.set_num_threads(bad)


def test_set_num_threads_roundtrip(threads):
    fi.set_num_threads(3)
    assert fi.get_num_threads() == 3


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


def test_as_c_contiguous_keeps_rank_and_avoids_copies():
    x = np.zeros((3, 4))
    assert V.as_c_contiguous(x) is x
    assert V.as_c_contiguous(np.zeros(())).shape == ()
    y = V.as_c_contiguous(x.T)
    assert y.flags.c_contiguous and y.shape == (4, 3)


def test_lerp_of_0d_arrays_is_0d():
    res = fi.lerp(np.zeros(()), np.ones(()), np.array(0.5))
    assert res.shape == () and res == 0.5
