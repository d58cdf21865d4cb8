"""DLPack in and out: versioned and unversioned producers, byte_offset, the read-only
flag, dtypes, deleters, and results returned as the caller's array type."""
from __future__ import annotations

import ctypes
import gc

import numpy as np
import pytest

import fastinterp as fi
from conftest import assert_autograd_sees_write
from fastinterp import _dlpack


# ------------------------------------------------------------------ hand-made capsules

class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32),
                ("device_id", ctypes.c_int32), ("ndim", ctypes.c_int32),
                ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16),
                ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _Managed(ctypes.Structure):
    _fields_ = [("dl_tensor", _Tensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


class _Versioned(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32),
                ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p),
                ("flags", ctypes.c_uint64), ("dl_tensor", _Tensor)]


_DELETER = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)
_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype = ctypes.py_object
_new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype = ctypes.c_char_p
_capsule_name.argtypes = [ctypes.py_object]


class HandMade:
    """A CPU DLPack producer over ``buffer`` built field by field: any byte_offset,
    strides (in elements), dtype code, flags and version; counts deleter calls."""

    def __init__(self, buffer, shape, byte_offset=0, strides=None, code=2, bits=None,
                 lanes=1, versioned=True, flags=0, major=1, device_type=1):
        self.buffer = buffer
        self.deleted = 0
        self._shape = (ctypes.c_int64 * max(len(shape), 1))(*shape)
        self._strides = None if strides is None else (ctypes.c_int64 * len(strides))(*strides)
        self._deleter = _DELETER(self._delete)   # kept alive with the producer
        self.structs = []
        self.calls = []
        self.spec = dict(shape=shape, byte_offset=byte_offset, code=code,
                         bits=bits or buffer.itemsize * 8, lanes=lanes, versioned=versioned,
                         flags=flags, major=major, device_type=device_type)

    def _delete(self, _address):
        self.deleted += 1

    def _tensor(self):
        s = self.spec
        return _Tensor(self.buffer.ctypes.data, s["device_type"], 0, len(s["shape"]), s["code"],
                       s["bits"], s["lanes"], self._shape,
                       self._strides, s["byte_offset"])

    def __dlpack__(self, stream=None, max_version=None, **kw):
        self.calls.append(max_version)
        deleter = ctypes.cast(self._deleter, ctypes.c_void_p).value
        if self.spec["versioned"] and max_version is not None:
            m = _Versioned(self.spec["major"], 0, None, deleter, self.spec["flags"], self._tensor())
            name = b"dltensor_versioned"
        else:
            m = _Managed(self._tensor(), None, deleter)
            name = b"dltensor"
        self.structs.append(m)
        return _new_capsule(ctypes.addressof(m), name, None)

    def __dlpack_device__(self):
        return (1, 0)


class OldProducer:
    """A producer from before DLPack 1.0: ``__dlpack__(stream=None)`` only."""

    def __init__(self, arr):
        self.arr, self.calls = arr, 0

    def __dlpack__(self, stream=None):
        self.calls += 1
        return self.arr.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return self.arr.__dlpack_device__()


class NewProducer(OldProducer):
    """A DLPack 1.0 producer: returns a versioned capsule when asked for one."""

    def __init__(self, arr):
        super().__init__(arr)
        self.asked = []

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        self.asked.append(max_version)
        return self.arr.__dlpack__(stream=stream, max_version=max_version)


# ------------------------------------------------------------------ versions

def test_old_producer_falls_back_to_unversioned_capsule(rng):
    a = rng.standard_normal((3, 4))
    prod = OldProducer(a)
    res = fi.lerp(prod, np.zeros((3, 4)), 0.5)
    assert isinstance(res, np.ndarray) and prod.calls == 1
    np.testing.assert_array_equal(res, a / 2)


def test_new_producer_is_asked_for_a_versioned_capsule(rng):
    a = rng.standard_normal((3, 4))
    prod = NewProducer(a)
    capsule = prod.__dlpack__(max_version=(1, 0))
    assert _capsule_name(capsule) == b"dltensor_versioned"
    del capsule
    prod.asked.clear()
    res = fi.resize(NewProducer(a[None, None]), size=(5, 2))
    np.testing.assert_array_equal(res, fi.resize(a[None, None], size=(5, 2)))
    np.testing.assert_array_equal(_dlpack.to_numpy(prod), a)
    assert prod.asked == [(1, 0)]


@pytest.mark.parametrize("versioned", [True, False])
def test_byte_offset_and_strides_are_honoured(versioned):
    buf = np.arange(40, dtype=np.float64)
    # the (3, 4) view buf[5:, ...] with row stride 8: data at buf[0], byte_offset 5 elements
    prod = HandMade(buf, (3, 4), byte_offset=5 * 8, strides=(8, 1), versioned=versioned)
    view = _dlpack.to_numpy(prod)
    expected = np.lib.stride_tricks.as_strided(buf[5:], (3, 4), (64, 8))
    np.testing.assert_array_equal(view, expected)
    assert np.shares_memory(view, buf)
    np.testing.assert_array_equal(fi.lerp(prod, np.zeros((3, 4)), 0.0), expected)
    assert prod.calls == ([(1, 0)] * 2)


def test_each_capsule_is_released_once_when_its_array_dies():
    buf = np.arange(6, dtype=np.float32)
    prod = HandMade(buf, (6,))
    view = _dlpack.to_numpy(prod)
    sub = view[2:]        # a view keeps the capsule's memory alive
    del view
    gc.collect()
    assert prod.deleted == 0
    np.testing.assert_array_equal(sub, buf[2:])
    del sub
    gc.collect()
    assert prod.deleted == 1
    fi.lerp(prod, np.ones(6, np.float32), 0.5)
    gc.collect()
    assert prod.deleted == 2


def test_unsupported_major_version_is_refused_and_not_consumed():
    prod = HandMade(np.zeros(3), (3,), major=2)
    with pytest.raises(TypeError, match=r"lerp: a cannot be read through DLPack .*DLPack 2\.0 "
                                        r"tensor"):
        fi.lerp(prod, np.zeros(3), 0.5)
    gc.collect()
    assert prod.deleted == 0  # left to its producer (no destructor here)


@pytest.mark.parametrize("code, bits, lanes, words", [
    (8, 8, 1, "float8_e4m3"), (2, 32, 4, "float32x4"), (3, 64, 1, "opaque handle"),
    (2, 8, 1, "float8"), (10, 8, 1, r"float8_e4m3fn\b(?!8)"), (99, 16, 1, r"type code 99 \(16 bits\)"),
])
def test_unreadable_dtypes_are_clear_type_errors(code, bits, lanes, words):
    prod = HandMade(np.zeros(8), (2,), code=code, bits=bits, lanes=lanes)
    with pytest.raises(TypeError, match=f"grid_sample: input cannot be read through DLPack.*{words}"):
        fi.grid_sample(prod, np.zeros((2, 1, 1, 2)))


def test_a_tensor_on_another_device_is_refused():
    prod = HandMade(np.zeros(3), (3,), device_type=2)
    with pytest.raises(TypeError, match="not the CPU"):
        _dlpack.to_numpy(prod)


@pytest.mark.parametrize("code, bits, dtype", [
    (0, 32, np.int32), (1, 8, np.uint8), (2, 16, np.float16), (5, 128, np.complex128),
    (6, 8, np.bool_),
])
def test_dtype_codes(code, bits, dtype):
    buf = np.zeros(4, dtype)
    assert _dlpack.to_numpy(HandMade(buf, (4,), code=code, bits=bits)).dtype == dtype


def test_bfloat16_capsule_reads_as_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bits = np.array([1.5, -2.0, 3.25], ml_dtypes.bfloat16).view(np.uint16)
    got = _dlpack.to_numpy(HandMade(bits, (3,), code=4, bits=16))
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.astype(np.float32), [1.5, -2.0, 3.25])


def test_zero_size_and_zero_dim():
    assert _dlpack.to_numpy(HandMade(np.zeros(1), (0, 3))).shape == (0, 3)
    v = _dlpack.to_numpy(HandMade(np.array([7.0]), ()))
    assert v.shape == () and v == 7.0


# ------------------------------------------------------------------ read-only

def test_read_only_flag_input_is_fine_out_is_refused_and_untouched():
    buf = np.full(4, 7.0)
    prod = HandMade(buf, (4,), flags=1)     # DLPACK_FLAG_BITMASK_READ_ONLY
    view = _dlpack.to_numpy(prod)
    assert not view.flags.writeable
    np.testing.assert_array_equal(fi.lerp(prod, np.zeros(4), 0.5), buf / 2)
    with pytest.raises(ValueError, match="^lerp: out must be writable; got a read-only array"):
        fi.lerp(np.zeros(4), np.ones(4), 0.5, out=prod)
    np.testing.assert_array_equal(buf, 7.0)


def test_zero_size_read_only_out_is_refused():
    prod = HandMade(np.zeros(1), (0,), flags=1)
    assert not _dlpack.to_numpy(prod).flags.writeable
    with pytest.raises(ValueError, match="^lerp: out must be writable; got a read-only array"):
        fi.lerp(np.zeros(0), np.ones(0), 0.5, out=HandMade(np.zeros(1), (0,), flags=1))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_producers_without_a_dtype_attribute_are_typed_arrays(torch, dtype, rng):
    # half storage, slerp's t: a DLPack object is an array whether or not it has .dtype
    tdt = getattr(torch, dtype)
    a = torch.from_numpy(rng.standard_normal((3, 5)).astype(np.float32)).to(tdt)
    b = torch.from_numpy(rng.standard_normal((3, 5)).astype(np.float32)).to(tdt)
    t = torch.rand(3).to(tdt)
    for wrap in (OldProducer, NewProducer):
        got = fi.lerp(wrap(a), wrap(b), 0.25)
        assert isinstance(got, np.ndarray)     # a wrapper has no way back: NumPy
        np.testing.assert_array_equal(torch.from_numpy(np.asarray(got, np.float32)),
                                      fi.lerp(a, b, 0.25).float())
        got = fi.slerp(a, b, wrap(t))             # a torch template: torch back
        assert isinstance(got, torch.Tensor) and got.dtype == tdt
        assert torch.equal(got, fi.slerp(a, b, t))
        x = torch.rand(1, 2, 4, 4).to(tdt)
        np.testing.assert_array_equal(np.asarray(fi.resize(wrap(x), size=(2, 2)), np.float32),
                                      fi.resize(x, size=(2, 2)).float().numpy())


def test_unversioned_capsule_is_writable_as_out():
    buf = np.zeros(4)
    res = fi.lerp(np.zeros(4), np.ones(4), 0.25, out=OldProducer(buf))
    assert isinstance(res, OldProducer)
    np.testing.assert_array_equal(buf, 0.25)


@pytest.mark.parametrize("cls", [fi.SGD, fi.Adam])
def test_unversioned_capsule_is_an_updatable_parameter(cls):
    """A parameter is written in place, so it is read as an ``out=`` is: an unversioned
    capsule is writable (NumPy's own reader marks it read-only)."""
    buf, ref = np.ones(4), np.ones(4)
    for p in (OldProducer(buf), ref):
        cls([p], lr=0.5).step([np.arange(4.0)])
    np.testing.assert_array_equal(buf, ref)
    assert (ref[1:] < 1).all()


# ------------------------------------------------------------------ the caller's type back

@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_torch_in_torch_out(torch, rng, dtype):
    t = getattr(torch, dtype)
    x = torch.from_numpy(rng.standard_normal((1, 2, 4, 4))).to(t)
    for res in (fi.resize(x, size=(3, 3)), fi.adaptive_avg_pool2d(x, 2),
                fi.lerp(x, x.flip(-1), 0.5)):
        assert isinstance(res, torch.Tensor) and res.dtype == t


def test_jax_in_jax_out_and_jax_out_is_refused(rng):
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.asarray(rng.standard_normal((1, 2, 4, 4)).astype(np.float32))
    g = jnp.zeros((1, 2, 3, 2), jnp.float32)
    res = fi.grid_sample(x, g)
    assert type(res).__module__.split(".")[0] in ("jax", "jaxlib")
    np.testing.assert_array_equal(np.asarray(res), fi.grid_sample(np.asarray(x), np.asarray(g)))
    bf = fi.resize(x.astype(jnp.bfloat16), size=(2, 2))
    assert bf.dtype == jnp.bfloat16 and type(bf).__module__.split(".")[0] in ("jax", "jaxlib")
    out = jnp.zeros((1, 2, 2, 3), jnp.float32)
    with pytest.raises(ValueError, match=r"grid_sample: out must be writable; got a read-only "
                                         r"array \(JAX arrays are immutable\)"):
        fi.grid_sample(x, g, out=out)
    assert not np.asarray(out).any()


def test_cupy_in_cupy_out(cupy, rng):
    x = cupy.asarray(rng.standard_normal((1, 2, 4, 4)).astype(np.float32))
    res = fi.resize(x, size=(3, 3))
    assert isinstance(res, cupy.ndarray)


@pytest.mark.parametrize("call", [
    lambda m, out: fi.lerp(out, out * 0, 0.5, out=out),
    lambda m, out: fi.slerp(out, out + 1, 0.5, out=out),
    lambda m, out: fi.pairwise_sqdist(out[:1].reshape(1, 1) * 0, out.reshape(3, 1) * 2,
                                      out=out.view(1, 3)),
])
def test_torch_out_written_by_the_numpy_api_is_seen_by_autograd(call):
    """fi.lerp(m, g, w, out=m) is the README's m.lerp_(g, w), but a graph that had saved
    m used the new values (a silently wrong gradient) where torch's own in-place op makes
    backward raise: out= now bumps the tensor's version."""
    torch = pytest.importorskip("torch")
    m = torch.tensor([1.0, 2.0, 3.0])
    assert_autograd_sees_write(torch, m, lambda: call(None, m))


def test_a_torch_tensor_subclass_gets_torch_results():
    """MONAI's MetaTensor, torchvision's tv_tensors: a torch.Tensor subclass defined in
    another module came back as a NumPy array (the way back was chosen by the module of
    the template's type)."""
    torch = pytest.importorskip("torch")

    class Sub(torch.Tensor):
        pass

    x = torch.rand(1, 3, 8, 8).as_subclass(Sub)
    got = fi.resize(x, size=(4, 4))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), fi.resize(x.numpy(), size=(4, 4)))


class _DLPackOnly:
    """An object that offers DLPack and nothing else (no __array__, no shape)."""

    def __init__(self, arr):
        self.arr = arr

    def __dlpack__(self, **kw):
        return self.arr.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.arr.__dlpack_device__()


_IMG = np.random.default_rng(3).random((8, 9, 3)).astype(np.float32)
_M = np.array([[1.0, 0.1, 0.5], [0.05, 0.9, 0.3]])


@pytest.mark.parametrize("call", [
    lambda wrap: fi.warp_affine(_IMG, wrap(_M), (7, 6), layout="HWC"),
    lambda wrap: fi.warp_affine(_IMG, _M, (7, 6), layout="HWC", padding_mode="constant",
                                fill=wrap(np.array([1.0, 2.0, 3.0]))),
    lambda wrap: fi.warp_affine(_IMG, _M, (7, 6), layout="HWC", padding_mode="constant",
                                fill=wrap(np.array(2.0))),
    lambda wrap: fi.rotate(_IMG, wrap(np.array([20.0])), layout="HWC",
                           center=wrap(np.array([3.0, 4.0]))),
    lambda wrap: fi.resize(_IMG, scale_factor=wrap(np.array(0.5)), layout="HWC"),
])
def test_small_arguments_given_through_dlpack_only_are_read(call):
    """An image may be any DLPack object; a matrix, fill, angle, center or scale factor
    given as one was read by np.asarray as a 0-d object array ('M must hold real numbers
    ...; got dtype object', a fill taken as a scalar)."""
    np.testing.assert_array_equal(call(_DLPackOnly), call(lambda a: a))


_X3 = np.random.default_rng(4).standard_normal((2, 3, 7)).astype(np.float32)
_X5 = np.random.default_rng(5).standard_normal((1, 2, 3, 4, 5)).astype(np.float32)


@pytest.mark.parametrize("call", [
    lambda a: fi.interpolate(a(_X3), size=11, mode="linear"),
    lambda a: fi.resize(a(_X3), size=11, mode="nearest"),
    lambda a: fi.resize(a(_X5), size=(2, 3, 4), mode="trilinear"),
    lambda a: fi.resize(a(_X5), scale_factor=0.5, mode="area"),
    lambda a: fi.resize_backward(a(_X3), (2, 3, 3), mode="linear"),
    lambda a: fi.resize_backward(a(_X5), (1, 2, 2, 2, 2), mode="trilinear"),
    lambda a: fi.adaptive_avg_pool1d(a(_X3[0]), 4),
    lambda a: fi.adaptive_avg_pool3d(a(_X5[0]), 2),
    lambda a: fi.adaptive_avg_pool1d_backward(a(_X3[0]), (3, 9)),
    lambda a: fi.rotate(a(_IMG), 20.0, layout="HWC"),
])
def test_dlpack_only_data_whose_rank_decides_the_path(call):
    """The rank was read from a .shape the object does not have: 1-D and volume data
    were taken for images (a mode error, a layout error) and rotate refused the image."""
    np.testing.assert_array_equal(call(_DLPackOnly), call(lambda a: a))


@pytest.mark.parametrize("call", [
    lambda v: fi.rotate(_IMG, v(20.0), layout="HWC"),
    lambda v: fi.resize(np.zeros((1, 1, 4, 4), np.float32), scale_factor=v(2.0)),
    lambda v: fi.warp_affine(_IMG, v(np.float32(_M)), (7, 6), layout="HWC"),
])
def test_bfloat16_numbers_from_jax_are_numbers(call):
    """README: a bfloat16 scalar is a number wherever a number is taken, and a matrix
    of any float dtype is read as float64; JAX's (ml_dtypes) bfloat16, of dtype kind
    'V', was refused where torch's was accepted."""
    jnp = pytest.importorskip("jax.numpy")
    got = call(lambda v: jnp.asarray(v, jnp.bfloat16))
    want = call(lambda v: np.asarray(np.asarray(v, jnp.bfloat16), np.float64))
    np.testing.assert_array_equal(np.asarray(got), want)


def test_a_torch_matrix_gets_torch_results_from_a_warp():
    """For every other op any torch argument makes the results torch; a warp's matrix
    took no part (a NumPy image with a torch M gave NumPy results and gradients)."""
    torch = pytest.importorskip("torch")
    M = torch.tensor(_M)
    out = fi.warp_affine(_IMG, M, (7, 6), layout="HWC")
    assert isinstance(out, torch.Tensor)
    grads = fi.warp_affine_backward(np.ones((7, 6, 3), np.float32), _IMG, M, (7, 6),
                                    layout="HWC")
    assert all(isinstance(g, torch.Tensor) for g in grads)
    np.testing.assert_array_equal(out.numpy(), fi.warp_affine(_IMG, _M, (7, 6), layout="HWC"))


@pytest.mark.parametrize("call, name", [
    (lambda m: fi.warp_affine(_IMG, m(_M), (7, 6), layout="HWC"), "M"),
    (lambda m: fi.warp_perspective(_IMG, m(np.eye(3)), (7, 6), layout="HWC"), "M"),
    (lambda m: fi.warp_affine(_IMG, _M, (7, 6), layout="HWC", padding_mode="constant",
                              fill=m(np.ones(3))), "fill"),
    (lambda m: fi.rotate(m(_IMG), 20.0, layout="HWC"), "img"),
    (lambda m: fi.rotate(_IMG, m(np.array(20.0)), layout="HWC"), "angle"),
    (lambda m: fi.lerp(m(np.ones(3)), np.ones(3), 0.5), "a"),
])
def test_torch_meta_tensors_are_type_errors_naming_the_argument(call, name):
    """A meta tensor holds no data: as a matrix or fill it raised torch's own
    NotImplementedError/RuntimeError, naming neither the op nor the argument."""
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=rf"^\w+: {name}\b.*(meta tensor|real number)"):
        call(lambda v: torch.as_tensor(v).to("meta"))


@pytest.mark.parametrize("x64", [False, True])
def test_a_float64_result_is_never_rounded_to_jaxs_float32(x64):
    """A float64 NumPy image warped with a JAX matrix came back as JAX float32 with
    jax_enable_x64 off (rounded, 3e-8 off the NumPy call): it stays NumPy float64 then."""
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", x64)
    try:
        img = np.random.default_rng(6).standard_normal((8, 9, 3))
        want = fi.warp_affine(img, _M.astype(np.float32), (7, 6), layout="HWC")
        got = fi.warp_affine(img, jnp.asarray(_M, jnp.float32), (7, 6), layout="HWC")
        assert got.dtype == np.float64
        assert isinstance(got, jax.Array) == x64
        np.testing.assert_array_equal(np.asarray(got), want)
        small = fi.warp_affine(img.astype(np.float32), jnp.asarray(_M), (7, 6), layout="HWC")
        assert isinstance(small, jax.Array)          # float32 results: JAX as before
    finally:
        jax.config.update("jax_enable_x64", before)


@pytest.mark.parametrize("write", [
    lambda o: fi.lerp(np.ones(3, np.float32), np.zeros(3, np.float32), 0.5, out=o),
    lambda o: fi.pairwise_sqdist(np.ones((3, 2), np.float32), np.ones((1, 2), np.float32),
                                 out=o.reshape(3, 1)),
    lambda o: fi.SGD([o], lr=0.1).step([np.ones(3, np.float32)]),
    lambda o: fi.Adam([o]).step([np.ones(3, np.float32)]),
])
def test_inference_tensors_are_written_only_under_inference_mode(write):
    """torch refuses any in-place write to an inference tensor outside inference_mode;
    the NumPy API's out= and the optimizers wrote it (fastinterp.torch refused it)."""
    torch = pytest.importorskip("torch")
    with torch.inference_mode():
        o = torch.full((3,), 7.0)
    with pytest.raises(ValueError, match=r"(out|params\[0\]) is an inference tensor, which "
                                         r"torch lets only code under torch.inference_mode"):
        write(o)
    assert torch.equal(o, torch.full((3,), 7.0))
    with torch.inference_mode():
        write(o)
    assert not torch.equal(o, torch.full((3,), 7.0))


def test_read_only_or_unreadable_written_arrays_get_errors_for_what_they_are():
    """A float8 out= was told to cast itself (a copy: the result would be lost); a JAX
    parameter's 'read-only array' did not say why, as out= does."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("no float8 in this torch")
    out = torch.zeros(3, dtype=torch.float8_e4m3fn)
    with pytest.raises(TypeError, match=r"out must have dtype float32 or float64; got "
                                        r"float8_e4m3fn .*which NumPy cannot read\.$"):
        fi.lerp(np.zeros(3, np.float32), np.ones(3, np.float32), 0.5, out=out)
    jnp = pytest.importorskip("jax.numpy")
    with pytest.raises(ValueError, match=r"JAX arrays are immutable"):
        fi.SGD([jnp.zeros(3)], lr=0.1)


def test_numpy_api_on_torch_tensors_inside_torch_compile_runs_eagerly():
    """Dynamo cannot trace the NumPy API (DLPack device enums, compiled kernels): each public
    call is a graph break that runs eagerly, with the eager result, not a Dynamo crash.
    fastinterp.torch holds the traceable ops."""
    torch = pytest.importorskip("torch")
    x, q = torch.rand(40, 3), torch.rand(6, 3)
    img = torch.rand(1, 2, 5, 7)
    calls = {
        "knn": lambda x, q: fi.knn(x + 0, q, 4),
        "resize": lambda x, q: fi.resize(img * 1, size=(3, 4)) + 1,
        "lerp": lambda x, q: fi.lerp(q, q * 2, 0.25),
        "pairwise_sqdist": lambda x, q: fi.pairwise_sqdist(x, q) * 2,
    }
    for name, f in calls.items():
        torch._dynamo.reset()
        got, want = torch.compile(f)(x, q), f(x, q)
        for g, w in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,)):
            assert torch.equal(g, w), name


def test_optimizer_step_on_torch_parameters_inside_torch_compile_runs_eagerly():
    torch = pytest.importorskip("torch")
    w = torch.ones(5)
    opt = fi.SGD([w], lr=0.5)

    def step(g):
        opt.step([g * 1])
        return w.sum()
    torch._dynamo.reset()
    assert float(torch.compile(step)(torch.ones(5))) == 2.5
    np.testing.assert_array_equal(w.numpy(), 0.5)
