"""Shared argument checks. Every public op validates through these.

Messages follow one form: ``"<op>: <arg> must <expectation>; got <given>."``
A check that fails raises before anything is written (into ``out`` or
elsewhere). Exceptions are ``ValueError`` for bad values and shapes and
``TypeError`` for bad types and dtypes. A message is built only when its
check fails: the checks also run while ``torch.compile`` traces the torch
frontend, where sizes and the numbers computed from them are symbolic (shown
to the checks as ints and floats) and cannot be formatted, and they test
finiteness with ``abs(x) < inf`` (which such numbers support) rather than
``math.isfinite``.
"""
from __future__ import annotations

import itertools
import math
import reprlib
import operator
import sys
from numbers import Integral, Number, Real
from collections.abc import Mapping, Set
from typing import Collection, Iterable, Sequence

import numpy as np

__all__ = [
    "float_dtype", "same_dtype", "check_overlap", "check_ndim", "check_shape", "check_option",
    "check_out", "same_view", "as_c_contiguous", "broadcast_shape", "shape_str", "real_scalar",
    "check_dtype", "check_array", "check_not_number", "check_uint8_on_cpu", "check_bool", "check_flag", "as_index", "is_int", "int_sizes",
    "finite_float", "is_scalar", "symbolic", "shown", "AXIS_MAX",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def shape_str(shape) -> str:
    """``shape`` as NumPy prints it; an unknown size (NaN, a Dask array's) as ``nan``."""
    return "(" + ", ".join(_size_str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _message_repr() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict = 8, 16, 16, 8
    r.maxstring = r.maxother = r.maxlong = 80
    return r


_MESSAGE_REPR = _message_repr()


def shown(value, width: int = 80) -> str:
    """``value``'s repr for an error message, at most ``width`` characters. Nests and long
    sequences are abbreviated first, so a list nested thousands deep costs no recursion
    and a list of millions no full repr.

    >>> shown([[[[[[[[[[1.0]]]]]]]]]])
    '[[[[[[[[[...]]]]]]]]]'
    """
    return f"{_MESSAGE_REPR.repr(value):.{width}}"


def _size_str(s) -> str:
    return "nan" if isinstance(s, float) and math.isnan(s) else str(int(s))


# Ops (the names given to ``_dispatch.begin``) that take float16/bfloat16 storage,
# computed in float32 (the dispatcher widens it before the checks here run).
HALF_OPS = frozenset({"lerp", "slerp", "slerp_backward", "grid_sample", "grid_sample_backward",
                      "affine_grid", "affine_grid_backward", "resize", "resize_backward",
                      "adaptive_avg_pool1d", "adaptive_avg_pool1d_backward",
                      "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
                      "adaptive_avg_pool3d", "adaptive_avg_pool3d_backward"})


def _dtype_names(op: str, names: Sequence[str]) -> str:
    """The dtypes an argument of ``op`` takes, for an error: ``names`` (floats first,
    then uint8) and, for the ops in HALF_OPS, float16 and bfloat16."""
    floats = [n for n in names if n.startswith("float")]
    more = [n for n in names if n not in floats]
    if op in HALF_OPS and floats:
        more += ["float16", "bfloat16"]
    return " or ".join(floats) + (f" (or {', '.join(more)})" if more else "")


def float_dtype(op: str, name: str, arr, uint8: bool = False) -> np.dtype:
    """The dtype of ``arr`` if float32/float64, else a ``TypeError`` naming what ``op``
    takes (with ``uint8``: a uint8 image too, which the caller handles).

    float16 is rejected outside HALF_OPS (cast it to float32 first); integer
    image data must be converted by the caller, who knows its scale.
    """
    if not hasattr(arr, "dtype"):          # None, a Python scalar (NumPy scalars pass)
        check_array(op, name, arr)
    dtype = np.dtype(arr.dtype)
    if dtype in FLOAT_DTYPES:
        return dtype
    hint = f" (cast {dtype} to float32 first)" if dtype.name in ("float16", "bfloat16") else ""
    _refuse_on_cuda(op, name, arr)
    names = _dtype_names(op, ("float32", "float64") + (("uint8",) if uint8 else ()))
    raise TypeError(f"{op}: {name} must have dtype {names}{hint}"
                    f"{_byte_order_hint(dtype, FLOAT_DTYPES)}; got {dtype}.")


def _refuse_on_cuda(op: str, name: str, arr) -> None:
    """The ``TypeError`` for a CUDA array of a dtype a kernel does not take: CUDA kernels
    take float32 and float64 only (uint8 and half-precision storage run on the CPU), so
    the CPU's list would mislead. Returns for any other array."""
    from ._dispatch import array_kind   # (the dispatcher imports this module)
    if not isinstance(arr, np.ndarray) and array_kind(arr) == "cuda":
        raise TypeError(f"{op}: {name} must have dtype float32 or float64 on CUDA; "
                        f"got {np.dtype(arr.dtype)}.")


def _byte_order_hint(dtype: np.dtype, allowed) -> str:
    """" in native byte order" when ``dtype`` is refused for its byte order alone (the
    arrays an op writes in place, which cannot be converted), else ""."""
    if dtype.isnative or dtype.newbyteorder("=") not in allowed:
        return ""
    return " in native byte order"


def same_dtype(op: str, given: dict | None = None, /, **arrays) -> np.dtype:
    """Check all named arrays are float32 or all float64; return that dtype.

    ``given`` maps names to the dtypes the caller passed where they differ from the
    arrays' (half-precision storage widened to float32: ``Prepared.storage``); the
    error names those.
    """
    if not arrays:
        raise TypeError(f"{op}: at least one input array is required; got none.")
    dtypes = {name: float_dtype(op, name, a) for name, a in arrays.items() if a is not None}
    if not dtypes:
        raise TypeError(f"{op}: {next(iter(arrays))} must be an array; got None.")
    shown = {name: (given or {}).get(name, dtype) for name, dtype in dtypes.items()}
    first_name, first = next(iter(dtypes.items()))
    for name, dtype in dtypes.items():
        if dtype != first:
            raise TypeError(f"{op}: {name} must have the same dtype as {first_name} "
                            f"({shown[first_name]}); got {shown[name]}.")
    return first


# |x| at or above this rounds to inf in float32 (its largest value plus half an ulp), as the
# int it is: torch.compile reads an int constant as it is, a float one as a graph input.
_F32_ROUNDS_TO_INF = int(float(np.finfo(np.float32).max) + 2.0**103)
_PLAIN_REALS = (float, int, np.float64, np.float32)  # checked without the slow ABC tests


def symbolic(value) -> bool:
    """Whether ``value`` is a torch symbolic number, a ``torch.SymInt`` or
    ``torch.SymFloat``, as sizes and the numbers computed from them are while
    torch.export or make_fx trace a function with dynamic shapes.

    The checks pass such a number on as it is: its value is known only when the
    graph runs (where the op's own call checks it), and reading it as a Python
    number would fix the shape it comes from. (``torch.compile`` shows these
    numbers to the checks as ints and floats.) False whenever torch is not imported.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return isinstance(value, (torch.SymInt, torch.SymFloat))


def real_scalar(op: str, name: str, value, dtype) -> np.ndarray:
    """A real Python/NumPy scalar as a 0-d array of ``dtype``.

    ``None``, bools, complex numbers and other non-real objects raise
    ``TypeError``; a finite number that ``dtype`` cannot hold (``10**400``, or
    ``1e300`` for float32) raises ``ValueError``. ``nan`` and ``inf`` pass.
    """
    return np.asarray(real_float(op, name, value, dtype), dtype=dtype)


def is_real_scalar(value) -> bool:
    """A real Python/NumPy scalar: not None, a bool, a complex number or a string. A
    bfloat16 scalar (ml_dtypes: a NumPy scalar outside np.floating) is one."""
    return type(value) in _PLAIN_REALS or (
        not isinstance(value, (bool, np.bool_))
        and (isinstance(value, (Real, np.integer, np.floating))
             or (isinstance(value, np.generic) and _half_scalar(value))))


def _half_scalar(value) -> bool:
    return _half_dtype(value.dtype)


def _given(value) -> str:
    return "None" if value is None else f"{type(value).__name__} {value!r}"


def int_digits(value) -> str:
    """An int too large to show whole (one beyond float64), for an error message."""
    return f"an int of {len(str(abs(int(value))))} digits"


def real_float(op: str, name: str, value, dtype) -> float:
    """``value`` checked as :func:`real_scalar` checks it, as a Python float (not yet
    rounded to ``dtype``): for callers that build their own scalar of that dtype. A
    torch symbolic number passes as it is (see :func:`symbolic`)."""
    if not is_real_scalar(value):
        if symbolic(value):
            return value
        raise TypeError(f"{op}: {name} must be a real number or an array; got {_given(value)}.")
    dtype = np.dtype(dtype)
    try:
        wide = float(value)
    except OverflowError:  # an int beyond float64
        wide = math.inf
    bound = _F32_ROUNDS_TO_INF if dtype == np.float32 else math.inf
    # numbers that round to inf are refused, but inf and nan themselves pass
    if not abs(wide) < bound and (isinstance(value, Integral) or abs(wide) < math.inf):
        shown = int_digits(value) if isinstance(value, Integral) else repr(value)
        raise ValueError(f"{op}: {name} must be representable in {dtype}; got {shown}.")
    return wide


def from_dlpack_only(value):
    """An object that offers DLPack and no ``shape`` (not a NumPy, torch, JAX or CuPy
    array) as the NumPy array it stands for, so that it reads as the arrays do; anything
    else (and such an object NumPy cannot import) as it is."""
    if hasattr(value, "__dlpack__") and not hasattr(value, "shape"):
        from ._dispatch import _to_numpy        # (the dispatcher imports this module)
        try:                                    # the arrays' own reading (bfloat16 too)
            return _to_numpy(value, "dlpack")
        except (TypeError, ValueError, BufferError, RuntimeError):
            return value
    return value


def _half_dtype(dtype) -> bool:
    from ._half import is_half        # (_half imports this module's users)
    return is_half(dtype)


def _one_real(value) -> float | None:
    """A one-element real array of any framework (a 0-d NumPy array, a torch tensor
    such as ``torch.empty(1).uniform_(-30, 30)``, a JAX array) as a float; None for
    anything else, bool, complex, string and object arrays included. A traced JAX
    value raises JAX's own error, which says that it must be concrete. An object that
    offers DLPack alone is read through it."""
    value = from_dlpack_only(value)
    shape = getattr(value, "shape", None)
    if shape is None or not hasattr(value, "reshape") or isinstance(value, (str, bytes)):
        return None
    try:
        if math.prod(tuple(shape)) != 1:
            return None
    except TypeError:
        return None
    dtype = getattr(value, "dtype", None)
    if isinstance(dtype, np.dtype):
        if dtype.kind not in "iuf" and not _half_dtype(dtype):   # ml_dtypes' bfloat16: 'V'
            return None
    elif dtype is None or any(w in str(dtype) for w in ("bool", "complex")):
        return None
    if getattr(value, "is_meta", False):    # a torch meta tensor holds no value
        return None
    if hasattr(value, "detach"):        # a torch tensor that requires grad
        value = value.detach()
    if hasattr(value, "copy_to_host"):  # a numba device array (no __float__)
        value = value.copy_to_host()
    return float(_host_if_concrete_jax(value).reshape(()))


def _host_if_concrete_jax(value):
    """A concrete JAX array as a NumPy one (read on the host: a JAX method on it inside
    ``jax.jit`` or ``lax.scan`` would be traced, and its value lost); anything else, a
    traced value included, unchanged."""
    if isinstance(value, (tuple, list, int, float)) or hasattr(value, "detach"):
        return value        # the common arguments, and torch tensors (under torch.compile too)
    jax = sys.modules.get("jax")
    if jax is None or isinstance(value, jax.core.Tracer) or not isinstance(value, jax.Array):
        return value
    return np.asarray(value)


def finite_float(op: str, name: str, value) -> float:
    """A finite real number as a float: a Python/NumPy scalar or a one-element real
    array (NumPy, torch, JAX). A ``TypeError`` for ``None``, bools, strings, complex
    numbers and other arrays, a ``ValueError`` for nan, inf and ints beyond float64. A
    torch symbolic number passes as it is (see :func:`symbolic`)."""
    if not is_real_scalar(value):
        if symbolic(value):
            return value
        one = _one_real(value)
        if one is None:
            raise TypeError(f"{op}: {name} must be a real number; got {_given(value)}.")
        value = one
    try:
        wide = float(value)
    except OverflowError:  # an int beyond float64
        wide = math.inf
    if not abs(wide) < math.inf:
        shown = int_digits(value) if is_int(value) else repr(wide)
        raise ValueError(f"{op}: {name} must be finite; got {shown}.")
    return wide


def check_flag(op: str, name: str, value) -> bool:
    """A switch given as a bool or an int (``nesterov=1``, ``progress=0``, as torch and
    scikit-learn accept them), as a bool: a ``TypeError`` for anything else (``'no'``,
    ``[1]``, ``None``: truthy or falsy by accident)."""
    if isinstance(value, (bool, np.bool_)) or is_int(value):
        return bool(value)
    raise TypeError(f"{op}: {name} must be a bool (or an int); got "
                    f"{type(value).__name__} {value!r}.")


def check_bool(op: str, name: str, value) -> bool:
    """``value`` must be a bool (Python or NumPy): a ``TypeError`` otherwise (no truthy
    stand-ins such as ``'no'``, ``[1]`` or ``1``)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool; got {type(value).__name__} {value!r}.")
    return bool(value)


def is_int(value) -> bool:
    """Whether ``value`` is an integer (Python or NumPy), bools excluded."""
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


#: The largest extent of an output axis: tap tables and grids index an axis with int32.
AXIS_MAX = 2**31 - 1


def as_index(value) -> int:
    """An int, or a 0-d integer array of any framework (NumPy, torch, JAX: through
    ``__index__``), as a Python int; ``TypeError`` for bools, floats, arrays of other
    shapes and the rest. A ``torch.SymInt`` passes as it is (see :func:`symbolic`)."""
    if is_int(value):
        return int(value)
    if (isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__")
            or "bool" in str(getattr(value, "dtype", "")) or len(getattr(value, "shape", ()))):
        raise TypeError
    return value if symbolic(value) else operator.index(value)   # a SymFloat has no __index__


def is_scalar(value) -> bool:
    """Whether ``value`` is one value rather than a sequence of them: not iterable, or an
    array of shape () (a NumPy scalar, or a 0-d array or tensor of any framework)."""
    if isinstance(value, (int, float)):    # torch.compile's symbolic numbers among them
        return True
    shape = getattr(value, "shape", None)
    return not hasattr(value, "__iter__") if shape is None else len(shape) == 0


def entries(value) -> tuple:
    """The entries of a sequence argument (a tuple, a list, a 1-D array or tensor), in
    order; a ``TypeError`` for a string, an unordered collection (a set or a dict, whose
    order says nothing about axes) or a value that is not iterable. An object that offers
    DLPack alone is read through it."""
    value = _host_if_concrete_jax(from_dlpack_only(value))
    if isinstance(value, (str, bytes, Set, Mapping)):
        raise TypeError(f"{type(value).__name__} is not an ordered sequence of numbers")
    return tuple(value)


def int_sizes(op: str, name: str, value, layout: str, lengths: Collection[int],
              lo: int = 0) -> tuple[int, ...]:
    """``value``, a sequence of axis sizes, as a tuple of Python ints.

    ``layout`` names the entries for the message (``"(H_out, W_out)"``). An
    entry is an int or a 0-d integer array (:func:`as_index`), and ``value``
    may be a 1-D integer array or tensor. A string, a non-sequence or an entry
    that is not an int (a bool, a float, ``None``) raises ``TypeError``; a
    length not in ``lengths`` or an entry outside ``[lo, 2**31 - 1]`` raises
    ``ValueError``. ``torch.SymInt`` entries pass as they are (see :func:`symbolic`).
    """
    try:
        dims = tuple(as_index(d) for d in entries(value))
    except TypeError as exc:
        if type(exc) is not TypeError:   # a framework's own (a traced JAX value: not static)
            raise
        raise TypeError(f"{op}: {name} must be a sequence {layout} of ints; "
                        f"got {value!r}.") from None
    if len(dims) not in lengths:
        raise ValueError(f"{op}: {name} must be {layout} of ints; got {shape_str(dims)}.")
    if not all(lo <= d <= AXIS_MAX for d in dims if type(d) is int or not symbolic(d)):
        raise ValueError(f"{op}: {name} must have entries >= {lo} and <= 2**31 - 1; "
                         f"got {shape_str(dims)}.")
    return dims


def check_ndim(op: str, name: str, arr, ndims: int | Iterable[int], layout: str) -> None:
    """``arr.ndim`` must be one of ``ndims``; ``layout`` names the axes, e.g. ``"(N, C, H, W)"``."""
    allowed = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if len(arr.shape) not in allowed:
        raise ValueError(f"{op}: {name} must have shape {layout}; got {shape_str(arr.shape)}.")


def check_shape(op: str, name: str, arr, expected: Sequence[int | None], layout: str) -> None:
    """``arr.shape`` must equal ``expected`` (``None`` matches any size)."""
    shape = tuple(arr.shape)
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) \
            + ("," if len(expected) == 1 else "") + ")"
        raise ValueError(f"{op}: {name} must have shape {layout} = {want}; got {shape_str(shape)}.")


def check_array(op: str, name: str, arr) -> None:
    """``arr`` must be an array (anything with a shape), not ``None`` or a scalar:
    a ``TypeError`` naming the argument otherwise."""
    if not hasattr(arr, "shape") or isinstance(arr, (np.generic, bool)):
        given = "None" if arr is None else type(arr).__name__
        raise TypeError(f"{op}: {name} must be an array; got {given}.")


def check_uint8_on_cpu(op: str, dtype, backend: str) -> None:
    """uint8 images run on the CPU only: a ``TypeError`` for one on another backend (the
    registry would say only that it has no such kernel)."""
    if np.dtype(dtype) == np.uint8 and backend != "cpu":
        raise TypeError(f"{op}: uint8 input runs on the CPU; got a {backend.upper()} array.")


def check_not_number(op: str, name: str, value) -> None:
    """A Python number where an array is required: :func:`check_array`'s ``TypeError``, as
    the NumPy API raises it, for frontends that would otherwise read it as a 0-d array
    (a NumPy scalar has a shape: the NumPy API's shape error follows for it)."""
    if isinstance(value, Number) and not isinstance(value, np.generic):
        check_array(op, name, value)


def check_option(op: str, name: str, value, allowed: Sequence) -> None:
    """``value`` must be one of ``allowed`` (strings are compared exactly)."""
    try:
        known = value in allowed
    except (TypeError, ValueError):     # an array (no single truth value), say
        known = False
    if not known:
        given = (f"{type(value).__name__} of shape {shape_str(value.shape)}"
                 if hasattr(value, "shape") else shown(value))
        raise ValueError(f"{op}: {name} must be one of {', '.join(map(repr, allowed))}; "
                         f"got {given}.")


def check_axis(op: str, axis, ndim: int) -> int:
    """``axis`` (an int in [-ndim, ndim - 1], not a bool) as an axis in [0, ndim): a
    ``TypeError`` for another type (as for sizes: ``1.0``, None, a string), a
    ``ValueError`` for an int out of range."""
    expected = f"{op}: axis must be an int in [{-ndim}, {ndim - 1}]; got {axis!r}."
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(expected)
    if not -ndim <= axis < ndim:
        raise ValueError(expected)
    return int(axis) % ndim


def full_or_single(shape, full) -> bool:
    """Whether ``shape`` is ``full`` itself or holds a single value (every axis 1): the
    operands that broadcast against ``full`` without any axis to line up."""
    return tuple(shape) == tuple(full) or all(d == 1 for d in shape)


def broadcast_shape(op: str, **arrays) -> tuple[int, ...]:
    """NumPy broadcasting of the named shapes, with a message naming them on failure."""
    shapes = {n: tuple(a.shape) for n, a in arrays.items() if hasattr(a, "shape")}
    widest = max(shapes.values(), key=len, default=())
    if all(full_or_single(s, widest) for s in shapes.values()):
        return widest      # equal shapes and size-1 operands (scalars): the common case
    try:
        return broadcast_shapes(shapes.values())
    except ValueError:
        given = ", ".join(f"{n} {shape_str(s)}" for n, s in shapes.items())
        raise ValueError(f"{op}: shapes must broadcast together; got {given}.") from None


def broadcast_shapes(shapes) -> tuple:
    """``np.broadcast_shapes`` for any number of dimensions (NumPy's own stops at 32; its
    arrays have up to 64); an unknown size (NaN, a Dask array's) matches any size and
    stays unknown, as in Dask. Raises ValueError when the shapes do not broadcast."""
    out = []
    for sizes in itertools.zip_longest(*(tuple(s)[::-1] for s in shapes), fillvalue=1):
        unknown = any(isinstance(d, float) and math.isnan(d) for d in sizes)
        known = {int(d) for d in sizes if not (isinstance(d, float) and math.isnan(d))}
        if len(known - {1}) > 1:
            raise ValueError("shapes do not broadcast")
        out.append(math.nan if unknown else max(known - {1}, default=1))
    return tuple(out[::-1])


def _extent(arr) -> tuple[int, int] | None:
    if isinstance(arr, np.ndarray):
        lo, hi = np.byte_bounds(arr) if hasattr(np, "byte_bounds") else np.lib.array_utils.byte_bounds(arr)
        return lo, hi
    from fastinterp._cuda._support import device_extent
    return device_extent(arr)


def _overlaps(x, y) -> bool:
    if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
        if not x.size * y.size:
            return False
        try:
            return np.shares_memory(x, y, max_work=1000)
        except np.exceptions.TooHardError:   # interleaved strides, too costly to rule out:
            return True                      # taken as sharing (refused, nothing written)
    ex, ey = _extent(x), _extent(y)
    return bool(ex and ey and ex[0] < ey[1] and ey[0] < ex[1])


def _data_ptr(arr) -> int | None:
    if isinstance(arr, np.ndarray):
        return arr.__array_interface__["data"][0]
    from fastinterp._cuda._support import device_pointer
    return device_pointer(arr)


def same_view(x, y) -> bool:
    """True when ``x`` and ``y`` are the same elements: pointer, shape, strides and dtype."""
    if tuple(x.shape) != tuple(y.shape) or np.dtype(x.dtype) != np.dtype(y.dtype):
        return False
    if any(n > 1 and sx != sy for n, sx, sy in zip(x.shape, x.strides, y.strides)):
        return False
    px = _data_ptr(x)
    return px is not None and px == _data_ptr(y)


def check_out(op: str, out, shape, dtype, inputs: dict | None = None,
              alias_ok: Collection[str] | bool = (), name: str = "out") -> None:
    """Validate a user's ``out=`` (already converted for the kernel).

    ``out`` must have exactly ``shape`` and ``dtype``, be C-contiguous and
    writable, and share no memory with any of ``inputs`` (a name -> array
    dict), so that a failed or partial computation cannot corrupt an input.

    ``alias_ok`` names the inputs (``True``: all of them) that ``out`` may be
    exactly (the same memory, shape and strides, as in ``lerp(m, g, w,
    out=m)``). An op opts in only where its kernel reads every element of
    those inputs that an output element depends on before writing that
    output element. A partial overlap (a shifted or re-strided view) is
    still refused. ``name``: the output's name in messages (``out[1]`` of several).
    """
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {shape_str(shape)}; got {shape_str(out.shape)}.")
    if np.dtype(out.dtype) != np.dtype(dtype):
        hint = _byte_order_hint(np.dtype(out.dtype), (np.dtype(dtype),))
        raise TypeError(f"{op}: {name} must have dtype {np.dtype(dtype)}{hint}; "
                        f"got {np.dtype(out.dtype)}.")
    if not _is_c_contiguous(out):
        raise ValueError(f"{op}: {name} must be C-contiguous; got strides {tuple(out.strides)}.")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError(f"{op}: {name} must be writable; got a read-only array.")
    check_overlap(op, out, inputs, alias_ok, name)


def check_overlap(op: str, out, inputs: dict | None,
                  alias_ok: Collection[str] | bool = (), name: str = "out") -> None:
    """Refuse an ``out`` sharing memory with any of ``inputs`` (a name -> array dict),
    except being exactly one of those named by ``alias_ok`` (``True``: any of them;
    see :func:`check_out`). A partial overlap is always refused."""
    for other, arr in (inputs or {}).items():
        if arr is None or not hasattr(arr, "shape") or not _overlaps(out, arr):
            continue
        may_alias = alias_ok is True or (alias_ok is not False and other in alias_ok)
        if not may_alias:
            raise ValueError(f"{op}: {name} must not share memory with {other}; "
                             f"pass a separate output array.")
        if not same_view(out, arr):
            raise ValueError(f"{op}: {name} must be either exactly {other} (same memory, shape "
                             f"and strides) or share no memory with it; got a view that "
                             f"partially overlaps {other}: pass a separate output array.")


def _is_c_contiguous(arr) -> bool:
    """Whether ``arr``'s strides are those of a C-contiguous array (NumPy's flag for
    NumPy arrays; for others, as numba decides: an empty array always is, and a zero
    stride, even along an axis of length 1, never is, since numba refuses to reshape
    such a device array without a copy)."""
    if isinstance(arr, np.ndarray):
        return arr.flags.c_contiguous
    if 0 in tuple(arr.shape):
        return True
    if 0 in tuple(arr.strides):
        return False
    expected = np.dtype(arr.dtype).itemsize
    for n, s in zip(reversed(tuple(arr.shape)), reversed(tuple(arr.strides))):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def as_c_contiguous(arr):
    """A C-contiguous version of a NumPy array (copied once if it is not already).

    Keeps the rank: unlike ``np.ascontiguousarray``, a 0-d array stays 0-d.
    """
    return np.asarray(arr, order="C")


def contiguous_input(arr):
    """:func:`as_c_contiguous` of an input, a copy read-only when ``arr`` is, so that a
    plugin kernel's ``params->readonly_inputs`` marks what the caller passed."""
    out = as_c_contiguous(arr)
    if out is not arr and not arr.flags.writeable:
        out.flags.writeable = False
    return out


def check_dtype(op: str, name: str, arr, allowed: Sequence) -> np.dtype:
    """The dtype of ``arr`` if it is one of ``allowed``, else a ``TypeError`` listing them."""
    dtype = np.dtype(arr.dtype)
    if dtype in allowed:
        return dtype
    _refuse_on_cuda(op, name, arr)
    names = _dtype_names(op, [np.dtype(d).name for d in allowed])
    hint = _byte_order_hint(dtype, [np.dtype(d) for d in allowed])
    raise TypeError(f"{op}: {name} must have dtype {names}{hint}; got {dtype}.")
