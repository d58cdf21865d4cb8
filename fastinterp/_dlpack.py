"""A DLPack consumer: a CPU producer's tensor as a NumPy array, zero-copy.

``to_numpy(obj)`` asks ``obj.__dlpack__(max_version=(1, 0))`` for a
versioned capsule and falls back to ``obj.__dlpack__()`` for producers
written before DLPack 1.0 (which reject the keyword with ``TypeError``).
Either capsule kind is read with ctypes: ``byte_offset`` is added to the
data pointer, strides (in elements) become NumPy byte strides, the
versioned ``READ_ONLY`` flag makes the array read-only, and bfloat16
(``kDLBfloat``, 16 bits) becomes ``ml_dtypes.bfloat16`` (NumPy's own
``from_dlpack`` refuses it). The capsule is renamed ``used_dltensor*`` as
the protocol requires and the producer's deleter runs when the array (and
every view of it) is gone. Anything that cannot be represented raises
``TypeError`` before the capsule is consumed, so the producer frees it.

An unversioned capsule carries no read-only flag: it is taken as writable,
except from JAX, whose arrays are immutable.
"""
from __future__ import annotations

import ctypes
import struct
import sys
from ctypes import c_char_p, c_void_p, py_object

import numpy as np

__all__ = ["to_numpy", "dtype_of", "bfloat16", "DLPackError"]

_VERSIONED = b"dltensor_versioned"
_LEGACY = b"dltensor"
# PyCapsule_SetName keeps the pointer it is given: these bytes must live forever.
_USED = {_VERSIONED: b"used_dltensor_versioned", _LEGACY: b"used_dltensor"}
_MAJOR = 1                  # the DLPack major version this consumer reads
_READ_ONLY = 1 << 0         # DLPACK_FLAG_BITMASK_READ_ONLY
_CPU_DEVICES = (1, 3)       # kDLCPU, kDLCUDAHost
_IMMUTABLE_ROOTS = ("jax", "jaxlib")

# DLDataTypeCode -> NumPy kind letter; 4 (kDLBfloat) is handled apart.
_KINDS = {0: "i", 1: "u", 2: "f", 5: "c", 6: "b"}
_CODE_NAMES = {0: "int", 1: "uint", 2: "float", 3: "opaque handle", 4: "bfloat", 5: "complex",
               6: "bool", 7: "float8_e3m4", 8: "float8_e4m3", 9: "float8_e4m3b11fnuz",
               10: "float8_e4m3fn", 11: "float8_e4m3fnuz", 12: "float8_e5m2",
               13: "float8_e5m2fnuz", 14: "float8_e8m0fnu", 15: "float6_e2m3fn",
               16: "float6_e3m2fn", 17: "float4_e2m1fn"}


class DLPackError(TypeError):
    """A DLPack tensor that fastinterp cannot read (device, dtype, version)."""


# Struct layouts (native alignment, as the C compiler lays them out).
# DLTensor: data, device (type, id), ndim, dtype (code, bits, lanes), shape, strides, byte_offset
_TENSOR = struct.Struct("@PiiiBBHPPQ")
# DLManagedTensor: dl_tensor, manager_ctx, deleter
_LEGACY_TAIL = struct.Struct("@PP")
# DLManagedTensorVersioned: version (major, minor), manager_ctx, deleter, flags, then dl_tensor
_VERSIONED_HEAD = struct.Struct("@IIPPQ")


_api = ctypes.pythonapi
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [py_object, c_char_p]
_api.PyCapsule_GetPointer.restype = c_void_p
_api.PyCapsule_GetPointer.argtypes = [py_object, c_char_p]
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = [py_object, c_char_p]
# The deleter is called with the GIL held: deleters of Python producers (NumPy) need it.
_DELETER = ctypes.PYFUNCTYPE(None, c_void_p)


def bfloat16():
    """``ml_dtypes.bfloat16`` as a NumPy dtype, or None when ml_dtypes is not installed."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


def dtype_of(code: int, bits: int, lanes: int = 1) -> np.dtype:
    """The NumPy dtype of a DLPack ``(code, bits, lanes)``; ``DLPackError`` if there is none."""
    if code not in _CODE_NAMES:
        name = f"type code {code} ({bits} bits)"
    elif code in (0, 1, 2, 4, 5, 6):      # the generic codes take their width: int8, float16
        name = f"{_CODE_NAMES[code]}{bits}"
    else:                                 # the narrow float names hold theirs: float8_e4m3fn
        name = _CODE_NAMES[code]
    if lanes != 1:
        raise DLPackError(f"{name}x{lanes} (vector lanes)")
    if code == 4 and bits == 16:
        dt = bfloat16()
        if dt is None:
            raise DLPackError("bfloat16, which needs the ml_dtypes package (pip install ml_dtypes)")
        return dt
    kind = _KINDS.get(code)
    if kind is None or bits % 8:
        raise DLPackError(name)
    try:
        return np.dtype(f"{kind}{bits // 8}") if kind != "b" else np.dtype(np.bool_)
    except TypeError:
        raise DLPackError(name) from None


_types: dict = {}  # (code, bits, lanes) -> (dtype, the dtype NumPy reads the memory as)


def _request(obj):
    """A capsule from ``obj``: versioned if the producer can, unversioned otherwise."""
    try:
        return obj.__dlpack__(max_version=(_MAJOR, 0))
    except TypeError:  # a producer from before DLPack 1.0 takes no max_version
        return obj.__dlpack__()


class _Owner:
    """Keeps a consumed DLPack tensor alive; runs the producer's deleter when collected."""

    __slots__ = ("__array_interface__", "_deleter", "_managed")

    def __init__(self, interface, deleter, managed):
        self.__array_interface__ = interface
        self._deleter, self._managed = deleter, managed

    def __del__(self):
        if self._deleter:
            try:
                _call_deleter(self._deleter, self._managed)
            except Exception:  # interpreter shutdown: nothing left to free into
                pass


_deleters: dict = {}


def _call_deleter(deleter: int, managed: int) -> None:
    fn = _deleters.get(deleter)
    if fn is None:
        fn = _deleters[deleter] = _DELETER(deleter)
    fn(managed)


_INT64S: dict = {}


def _dims(address: int, ndim: int, scale: int = 1) -> tuple:
    """``ndim`` int64 values at ``address``, times ``scale``."""
    fmt = _INT64S.get(ndim)
    if fmt is None:
        fmt = _INT64S[ndim] = struct.Struct(f"@{ndim}q")
    values = fmt.unpack(ctypes.string_at(address, fmt.size))
    return values if scale == 1 else tuple(v * scale for v in values)


def _header(capsule, immutable: bool):
    """``(name, address, tensor fields, deleter, read_only)`` of a capsule, without consuming it."""
    if _api.PyCapsule_IsValid(capsule, _VERSIONED):
        address = _api.PyCapsule_GetPointer(capsule, _VERSIONED)
        raw = ctypes.string_at(address, _VERSIONED_HEAD.size + _TENSOR.size)
        major, minor, _, deleter, flags = _VERSIONED_HEAD.unpack_from(raw)
        if major != _MAJOR:
            raise DLPackError(f"a DLPack {major}.{minor} tensor (this reader takes major "
                              f"version {_MAJOR})")
        return (_VERSIONED, address, _TENSOR.unpack_from(raw, _VERSIONED_HEAD.size), deleter,
                bool(flags & _READ_ONLY))
    if _api.PyCapsule_IsValid(capsule, _LEGACY):
        address = _api.PyCapsule_GetPointer(capsule, _LEGACY)
        raw = ctypes.string_at(address, _TENSOR.size + _LEGACY_TAIL.size)
        _, deleter = _LEGACY_TAIL.unpack_from(raw, _TENSOR.size)
        return _LEGACY, address, _TENSOR.unpack_from(raw), deleter, immutable
    raise DLPackError(f"__dlpack__ returned {capsule!r}, not a DLPack capsule")


def _types_of(code: int, bits: int, lanes: int):
    key = (code, bits, lanes)
    types = _types.get(key)
    if types is None:
        dt = dtype_of(*key)
        # NumPy reads bfloat16 memory as uint16; a view gives it its dtype
        types = _types[key] = (dt, np.dtype(f"u{dt.itemsize}") if dt.kind == "V" else dt)
    return types


def to_numpy(obj) -> np.ndarray:
    """``obj`` (any CPU DLPack producer) as a NumPy array sharing its memory.

    Raises
    ------
    DLPackError (a TypeError)
        The tensor is not on the CPU, has a dtype NumPy cannot hold, or a
        DLPack major version other than 1; the message names what was found.
    """
    capsule = _request(obj)
    immutable = type(obj).__module__.split(".")[0] in _IMMUTABLE_ROOTS
    name, address, fields, deleter, read_only = _header(capsule, immutable)
    data, device, _, ndim, code, bits, lanes, shape_p, strides_p, byte_offset = fields
    if device not in _CPU_DEVICES:
        raise DLPackError(f"a tensor on DLPack device type {device}, not the CPU")
    if ndim < 0:
        raise DLPackError(f"a tensor with ndim {ndim}")
    dt, plain = _types_of(code, bits, lanes)
    shape = _dims(shape_p, ndim) if ndim else ()
    strides = _dims(strides_p, ndim, dt.itemsize) if ndim and strides_p else None
    # Checks done: the tensor is ours now; the producer's capsule destructor must not free it.
    _api.PyCapsule_SetName(capsule, _USED[name])
    if 0 in shape or not data:
        if deleter:
            _call_deleter(deleter, address)
        empty = np.zeros(shape, dt)
        empty.flags.writeable = not read_only     # a read-only out= stays refused
        return empty
    interface = {"version": 3, "shape": shape, "typestr": plain.str, "strides": strides,
                 "data": (data + byte_offset, read_only)}
    arr = np.asarray(_Owner(interface, deleter, address))
    return arr if plain is dt else arr.view(dt)


def from_numpy_like(template, arr: np.ndarray):
    """``arr`` as ``template``'s array type, through DLPack (bfloat16 by bit pattern).

    Returns None when the template's library offers no way back (the caller
    then returns the NumPy array).
    """
    root = type(template).__module__.split(".")[0]
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(template, torch.Tensor):   # subclasses too
        torch = sys.modules["torch"]
        if arr.dtype.name == "bfloat16":
            return torch.from_dlpack(arr.view(np.uint16)).view(torch.bfloat16)
        return torch.from_dlpack(arr)
    if root in _IMMUTABLE_ROOTS:
        jnp = sys.modules.get("jax.numpy")
        if jnp is None:
            return None
        back = jnp.asarray(arr) if arr.dtype.name == "bfloat16" else jnp.from_dlpack(arr)
        if arr.dtype.kind == "f" and back.dtype != arr.dtype:
            # float64 with jax_enable_x64 off (a NumPy float64 operand beside JAX ones):
            # JAX would round the result to float32; it stays NumPy, in full
            return None
        return back
    if root == "cupy":  # a CuPy array on the host (rare): cupy.from_dlpack copies to the device
        return None
    module = sys.modules.get(root)
    from_dlpack = getattr(module, "from_dlpack", None) if module else None
    if from_dlpack is None or arr.dtype.name == "bfloat16":
        return None
    return from_dlpack(arr)
