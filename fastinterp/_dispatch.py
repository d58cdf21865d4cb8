"""Which backend runs a call, and how results go back to the caller's type.

``backend_of`` decides from the arguments alone, without importing CuPy,
torch or numba: NumPy arrays (and lists) go to ``"cpu"``; objects with
``__cuda_array_interface__`` (CuPy, numba device arrays, torch CUDA tensors)
and numba's simulator arrays go to ``"cuda"``; DLPack-only objects (torch CPU
tensors, JAX arrays) are viewed zero-copy (versioned capsules first with a
fallback, ``byte_offset``, the read-only flag; bfloat16 and ``out=`` through
``fastinterp._dlpack``, see ``_to_numpy``) and their results are handed back
as the caller's own type.

Half precision lives here too: for the ops in ``HALF_OPS``, float16 and
bfloat16 arrays are widened to float32 once in :func:`begin`, the float32
kernels run, and :meth:`Prepared.wrap` rounds each result once to its
storage dtype: the first array argument's, or that of the argument named by
``like`` (a gradient takes its primal's).
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from numbers import Number
from typing import Any, Callable, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

import numpy as np

from . import _dlpack, _fpenv, _half, _memory
from ._validate import HALF_OPS, check_overlap, shape_str, shown

__all__ = ["BackendMismatchError", "backend_of", "begin", "Prepared", "CPU", "CUDA", "HALF_OPS"]

CPU = "cpu"
CUDA = "cuda"

_DLPACK_CPU = (1, 3)     # kDLCPU, kDLCUDAHost
_DLPACK_CUDA = (2, 13)   # kDLCUDA, kDLCUDAManaged


class BackendMismatchError(ValueError, TypeError):
    """Arrays on different devices (e.g. a NumPy and a CuPy array) in one call.

    Both a ``ValueError`` and a ``TypeError``, so code that catches either for bad
    arguments catches it too.

    Examples
    --------
    >>> import fastinterp as fi
    >>> issubclass(fi.BackendMismatchError, ValueError), issubclass(fi.BackendMismatchError, TypeError)
    (True, True)
    """


def _is_simulator_array(obj) -> bool:
    return type(obj).__module__.startswith("numba.cuda.simulator")


def _check_cuda_interface(op: str, name: str, obj) -> None:
    """A CUDA array must come with ``__cuda_array_interface__`` (CuPy, torch, numba): one
    that speaks only DLPack is refused, naming the ways in."""
    if not (_is_simulator_array(obj) or _has_cuda_interface(obj)):
        raise TypeError(f"{op}: {name} is a CUDA array given through DLPack only "
                        f"({type(obj).__name__}), which fastinterp does not take yet; pass "
                        f"it as a CuPy array (cupy.from_dlpack(x)) or a torch tensor "
                        f"(torch.from_dlpack(x)), both zero-copy.")


def _has_cuda_interface(obj) -> bool:
    try:
        getattr(obj, "__cuda_array_interface__")
    except Exception:  # torch raises for CPU tensors
        return False
    return True


def _cuda_read_only(obj) -> bool:
    """The read-only flag of ``__cuda_array_interface__`` (``data = (ptr, read_only)``)."""
    try:
        return bool(obj.__cuda_array_interface__["data"][1])
    except Exception:
        return False


def _torch_compiling() -> bool:
    """Whether torch.compile is tracing this call. torch may be half imported (another
    thread importing it) or not torch at all (a user's torch.py): neither traces."""
    compiler = getattr(sys.modules.get("torch"), "compiler", None)
    is_compiling = getattr(compiler, "is_compiling", None)
    return is_compiling is not None and bool(is_compiling())


def public_call(fn: _F) -> _F:
    """The entry of a public call of the NumPy API.

    - The whole call computes in IEEE 754's default floating-point environment
      (subnormals kept, rounding to nearest) whatever the calling thread has set
      (:mod:`fastinterp._fpenv`): its results, and the tables it caches for later
      calls, do not depend on the caller's mode or the thread count.
    - Under ``torch.compile`` it is a graph break: Dynamo cannot trace the NumPy API
      (DLPack device enums, compiled kernels; its attempt is an internal error), so
      while it traces, the call runs as ``torch.compiler.disable`` makes it, eagerly,
      with the eager result. torch is never imported here; ``fastinterp.torch`` holds
      the ops Dynamo compiles into graphs.
    """
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if _torch_compiling():
            return sys.modules["torch"].compiler.disable(call)(*args, **kwargs)  # eager there
        fp = _fpenv.control()
        saved = fp.ieee_subnormals()
        try:
            return fn(*args, **kwargs)
        finally:
            fp.restore_fp(saved)
    return call  # type: ignore[return-value]


def _dlpack_device(obj):
    try:
        return tuple(obj.__dlpack_device__())[0]
    except Exception:
        return None


def array_kind(obj) -> str | None:
    """``"numpy"``, ``"cuda"``, ``"dlpack"`` (a CPU DLPack object) or None (a scalar)."""
    if isinstance(obj, np.ndarray):  # the common case first: abc checks are slow
        return "numpy"
    if obj is None or isinstance(obj, (Number, np.generic)):
        return None
    if _is_simulator_array(obj) or _has_cuda_interface(obj):
        return "cuda"
    if hasattr(obj, "__dlpack__"):
        device = _dlpack_device(obj)
        if device in _DLPACK_CUDA:
            return "cuda"
        return "dlpack"
    return "numpy"  # list, tuple, or other array-like: np.asarray


def _backend_of_kind(kind: str) -> str:
    return CUDA if kind == "cuda" else CPU


def _describe(obj) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def backend_of(*arrays: object, names: tuple[str, ...] | None = None) -> str:
    """The backend (``"cpu"`` or ``"cuda"``) that must run a call on ``arrays``.

    Scalars and None are ignored. Arrays on different devices raise
    :class:`BackendMismatchError` (both a ``ValueError`` and a ``TypeError``)
    naming the arguments; fastinterp never copies across devices silently.

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> fi.backend_of(np.zeros(3), 2.0)
    'cpu'
    """
    names = names or tuple(f"argument {i}" for i in range(len(arrays)))
    if len(names) != len(arrays):
        raise ValueError(f"backend_of: names must name every array: {len(arrays)} arrays, "
                         f"{len(names)} names.")
    seen: dict[str, tuple[str, Any]] = {}
    for name, obj in zip(names, arrays):
        kind = array_kind(obj)
        if kind is None:
            continue
        seen.setdefault(_backend_of_kind(kind), (name, obj))
    if len(seen) > 1:
        (n1, o1), (n2, o2) = seen[CPU], seen[CUDA]
        raise BackendMismatchError(
            f"arrays on different devices: {n1} is a CPU array ({_describe(o1)}) "
            f"but {n2} is a CUDA array ({_describe(o2)}); move them to one device first.")
    return next(iter(seen), CPU)


def _cuda_support():
    from fastinterp._cuda import _support  # imports numba.cuda
    return _support


def mark_written(obj) -> None:
    """Tell torch's autograd that tensor ``obj`` was written in place (through a view it
    cannot see), as torch's own in-place ops and ``out=`` do: a graph that saved its old
    values then raises instead of using the new ones. Other arrays: nothing to do."""
    if _is_torch_tensor(obj):
        sys.modules["torch"].autograd.graph.increment_version(obj)


def _is_torch_tensor(obj) -> bool:
    """A torch tensor, detected without importing torch (as array-api-compat does)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


# Data types that NumPy cannot view through DLPack (torch/JAX names).
_NOT_VIEWABLE = ("float8", "complex32", "bits", "qint", "quint")


def _dtype_name(obj) -> str:
    return str(getattr(obj, "dtype", "")).removeprefix("torch.")


def requires_grad_error(op: str, name: str) -> TypeError:
    """The error for a tensor that requires grad where none may (out=, the NumPy API)."""
    return TypeError(f"{op}: {name} must not require grad (fastinterp's array ops attach "
                     f"no gradients); got a torch tensor with requires_grad=True: pass "
                     f"{name}.detach().")


def meta_tensor_error(op: str, name: str, obj) -> TypeError:
    """The error for a torch meta tensor where data is read: it holds none."""
    return TypeError(f"{op}: {name} is a torch meta tensor, which holds no data (shape "
                     f"{shape_str(tuple(obj.shape))}, dtype {_dtype_name(obj)}); pass one on "
                     f"a real device.")


def _plain_tensor(op: str, name: str, obj, writable: bool = False):
    """``obj`` with torch's lazy negative/conjugate bits resolved, or a clear error.

    DLPack exports a tensor's memory, which holds ``-x`` for a negative-bit
    view (``c.conj().imag``): read as is, it would have the wrong sign. An
    input is resolved (one copy); an ``out=`` cannot be (the result would
    land in the copy), so it is refused. A tensor that requires grad cannot
    be exported: the message says to detach it.
    """
    if not _is_torch_tensor(obj):
        return obj
    if obj.is_meta:
        raise meta_tensor_error(op, name, obj)
    if getattr(obj, "requires_grad", False):
        raise requires_grad_error(op, name)
    if obj.is_neg() or obj.is_conj():
        if writable:
            raise TypeError(f"{op}: {name} must be a plain tensor; got a view with torch's "
                            f"negative or conjugate bit set (e.g. c.conj().imag), whose memory "
                            f"does not hold the values it shows.")
        obj = obj.resolve_conj().resolve_neg()
    if writable and obj.is_inference() and not sys.modules["torch"].is_inference_mode_enabled():
        raise ValueError(f"{op}: {name} is an inference tensor, which torch lets only code "
                         f"under torch.inference_mode() write; got one outside it.")
    return obj


def to_host(op: str, name: str, obj):
    """A small argument given as an array (a warp matrix, a per-channel fill), ready
    for ``np.asarray`` on the host by the rules of an op's arrays: a device array
    (numba, CuPy, a CUDA tensor) is copied to the host (a bfloat16 tensor widened to
    float32, exactly); a torch tensor's negative
    or conjugate bit is resolved, and one that requires grad is the TypeError of
    :func:`_plain_tensor`; another DLPack object is viewed as NumPy. Anything else is
    returned as is."""
    if hasattr(obj, "copy_to_host"):                    # a numba device array
        return obj.copy_to_host()
    if _is_torch_tensor(obj):
        obj = _plain_tensor(op, name, obj)
        if str(obj.dtype) == "torch.bfloat16":       # NumPy cannot read it; float32 exactly
            obj = obj.float()
        return obj if obj.is_cpu else obj.cpu()
    if _has_cuda_interface(obj) and hasattr(obj, "get"):   # CuPy
        return obj.get()
    if array_kind(obj) == "dlpack":                    # JAX, or DLPack alone: a view
        return _to_numpy(obj, "dlpack", op, name)
    return obj


def _check_viewable(op: str, name: str, obj, writable: bool = False) -> None:
    dtype = _dtype_name(obj)
    if any(dtype.startswith(bad) for bad in _NOT_VIEWABLE):
        # a cast of an array written in place (an out=, a parameter) would take the result
        advice = "" if writable else f": cast it first, e.g. {name}.float()"
        raise TypeError(f"{op}: {name} must have dtype float32 or float64; got {dtype} "
                        f"({_describe(obj)}), which NumPy cannot read{advice}.")


_NOT_NUMBERS = frozenset("USOMm")   # NumPy dtype kinds: strings, objects, dates ('V' is
#                                   also ml_dtypes' bfloat16: left to the dtype checks)


def holds_numbers(arr: np.ndarray) -> bool:
    """Whether ``arr`` (NumPy's reading of a caller's value) holds numbers: a numeric or
    bool dtype, or objects that are all numbers (an int beyond int64: checked later)."""
    if arr.dtype.kind == "O":
        return all(isinstance(v, Number) for v in arr.flat)
    return arr.dtype.kind not in _NOT_NUMBERS


def not_numbers_error(op: str, name: str, obj) -> TypeError:
    """The error for an argument ``obj`` that does not hold real numbers (a string, a list
    holding None)."""
    return TypeError(f"{op}: {name} must be a real number or an array of reals (NumPy, CuPy, "
                     f"a DLPack tensor, or a list of numbers); got {type(obj).__name__} "
                     f"{shown(obj)}.")


def unreadable_error(op: str, name: str, obj, exc: Exception) -> TypeError:
    """The error for a list NumPy cannot read (one holding tensors that require grad:
    torch's own RuntimeError names neither the op nor the argument)."""
    return TypeError(f"{op}: {name} must be an array or a list of numbers NumPy can read; "
                     f"got a {type(obj).__name__} it cannot ({exc}).")


def _to_numpy(obj, kind: str, op: str = "fastinterp", name: str = "argument",
              writable: bool = False):
    """A NumPy view of a CPU array-like; DLPack objects zero-copy (read-only stays read-only).

    An input goes through NumPy's own consumer (C, fastest; it asks for a versioned
    capsule, falls back, honours byte_offset) and, for what NumPy refuses
    (bfloat16, exotic dtypes), through ``_dlpack`` (which also names the dtype in
    its error). An ``out`` always goes through ``_dlpack``: an unversioned capsule
    is writable there (NumPy marks it read-only), except from JAX.
    """
    if kind != "dlpack":
        try:
            arr = np.asarray(obj)
        except ValueError:                  # a ragged nest of lists, say
            raise ValueError(f"{op}: {name} must be a rectangular array; got a "
                             f"{type(obj).__name__} NumPy cannot read as one: "
                             f"{shown(obj)}.") from None
        except (RuntimeError, TypeError) as exc:   # a list holding tensors that require grad
            raise unreadable_error(op, name, obj, exc) from None
        if not isinstance(obj, np.ndarray) and not holds_numbers(arr):
            raise not_numbers_error(op, name, obj)
        return arr
    _check_viewable(op, name, obj, writable)
    if not writable:
        try:
            return np.from_dlpack(obj)
        except (BufferError, RuntimeError, TypeError, ValueError):
            pass   # "Unsupported dtype" and the like: _dlpack reads it or names it
    try:
        return _dlpack.to_numpy(obj)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise TypeError(f"{op}: {name} cannot be read through DLPack ({_describe(obj)}, dtype "
                        f"{_dtype_name(obj) or '?'}): {exc}. fastinterp's ops take float32 or "
                        f"float64 arrays (float16 and bfloat16 for some).") from None


def _read_only_hint(obj) -> str:
    root = type(obj).__module__.split(".")[0]
    return " (JAX arrays are immutable)" if root in ("jax", "jaxlib") else ""


def _half_storage(op: str, backend: str, arrays: dict, named: dict) -> dict | None:
    """Widen ``arrays``' float16/bfloat16 entries to float32 in place (ops in HALF_OPS).

    Returns the storage dtype of every argument given as a typed array
    (``named``: the caller's objects; a list or scalar has none), or None
    when nothing was widened. Half precision mixes with float32 only: a
    float64 array, or the other half dtype, next to a half one is a TypeError naming both.
    """
    half = [n for n, a in arrays.items()       # a NumPy scalar is a number, not storage
            if _half.is_half(getattr(a, "dtype", None)) and not isinstance(a, np.generic)]
    if not half or op not in HALF_OPS:
        return None  # an op without half support names the dtype in its own check
    h = half[0]
    hdt = arrays[h].dtype
    if backend == CUDA:
        raise TypeError(f"{op}: {h} must have dtype float32 or float64 on CUDA; got {hdt} "
                        f"(float16 and bfloat16 storage is CPU only for now).")
    storage = {n: np.dtype(a.dtype) for n, a in arrays.items()
               if isinstance(a, np.ndarray) and not isinstance(named[n], (list, tuple))
               and array_kind(named[n]) is not None}
    if not storage:     # only lists (of NumPy half scalars) hold half values: theirs
        storage = {n: np.dtype(arrays[n].dtype) for n in half}
    for n, dt in storage.items():
        if dt == np.float64:
            raise TypeError(f"{op}: {n} must have dtype float32, float16 or bfloat16 next to "
                            f"{h} ({hdt}), which is computed in float32; got float64. Cast "
                            f"{n} to float32, or {h} to float64.")
        if _half.is_half(dt) and dt != hdt:      # which one would the result be stored in?
            raise TypeError(f"{op}: {n} must have dtype {hdt} or float32 next to {h} ({hdt}); "
                            f"got {dt}. float16 and bfloat16 do not mix (as in torch): cast "
                            f"one of them.")
    for n in half:
        arrays[n] = _half.widen(arrays[n])
    return storage


@dataclass
class Prepared:
    """The arguments of one call, ready for a kernel of ``backend``.

    ``arrays`` holds NumPy arrays (cpu) or numba device arrays (cuda) under
    their argument names; scalars pass through. ``template`` is the caller's
    first array, whose type results are returned as.
    """

    op: str
    backend: str
    arrays: dict[str, Any]
    template: Any = None
    template_kind: str | None = None
    originals: dict[str, Any] = field(default_factory=dict)
    storage: dict[str, np.dtype] | None = None   # set when half-precision inputs were widened
    given: dict[str, np.ndarray] = field(default_factory=dict)   # CPU arrays as passed
    # per adopted out= (a plugin op may have several): [the caller's object, None or
    # (the kernel's float32 buffer, the caller's half view) to round into it]
    _outs: list = field(default_factory=list)

    @property
    def stream(self):
        """The CUDA stream to launch on (the caller's current CuPy/torch stream)."""
        return _cuda_support().stream_for(self.template) if self.backend == CUDA else None

    def contiguous(self, arr):
        """A kernel input as a C-contiguous array: CUDA arrays that are not are copied
        once into a new device array, on the caller's stream (the CPU path's rule;
        numba's device arrays cannot be reshaped otherwise). Other values pass through."""
        if self.backend != CUDA or not hasattr(arr, "strides"):
            return arr
        return _cuda_support().contiguous(arr, self.stream)

    def empty(self, shape, dtype, like=None):
        """Allocate an output: returns ``(for_caller, for_kernel)``. ``like`` names the
        argument whose storage dtype the result takes (see :meth:`wrap`); pass the
        same name to :meth:`wrap`."""
        dtype = np.dtype(dtype)
        if self.backend == CUDA:
            support = _cuda_support()
            caller = support.empty_like_caller(self.template, tuple(shape), dtype)
            return caller, support.as_device(caller)
        if self.storage is not None and self._rounded_result(dtype, like):
            arr = _half.work_array(shape)   # rounded into a new array by wrap: never escapes
        else:
            arr = _memory.empty(shape, dtype)
        return arr, arr

    def zeros(self, shape, dtype, like=None):
        """:meth:`empty`, filled with zeros (on a device, on the caller's stream): the
        result of an op whose output is empty, or a gradient nothing flows into."""
        if self.backend != CUDA:
            arr = np.zeros(shape, dtype)    # (pages zeroed by the system as first touched)
            return arr, arr
        caller, kernel = self.empty(shape, dtype, like)
        _cuda_support().fill_zero(kernel, self.stream)
        return caller, kernel

    def _rounded_result(self, dtype, like) -> bool:
        """True when a new result of ``dtype`` will be rounded to half precision by wrap."""
        return np.dtype(dtype) == _half.COMPUTE and _half.is_half(self._storage_for(like))

    def also_template(self, obj) -> None:
        """Let ``obj``, an argument read on the host rather than by a kernel (a warp's
        matrix), choose the results' type as :func:`begin`'s arguments do."""
        kind = array_kind(obj)
        if kind is not None and self.backend == CPU and _takes_over(self.template_kind, kind):
            self.template, self.template_kind = obj, kind

    def adopt_out(self, out, alias_ok=()):
        """A user's ``out=`` argument: returns ``(for_caller, for_kernel)``.

        ``for_caller`` is ``out`` itself, which :meth:`wrap` returns unchanged.
        ``alias_ok`` names the inputs ``out`` may be exactly (``True``: any), as the
        op's own check_out does; with half-precision storage it may be any input
        (``out`` is written once, after the computation).
        With half-precision storage, ``out`` must have the result's storage
        dtype; a float16/bfloat16 ``out`` gets a float32 buffer for the
        kernel, rounded into ``out`` by :meth:`wrap` (nothing is written
        into ``out`` before that).
        """
        kind = array_kind(out)
        if kind is None:
            raise TypeError(f"{self.op}: out must be an array (or None); got "
                            f"{type(out).__name__} {out!r}.")
        if _backend_of_kind(kind) != self.backend:
            raise BackendMismatchError(
                f"{self.op}: out must be a {self.backend.upper()} array like the inputs; "
                f"got {_describe(out)}.")
        if kind == "numpy" and not isinstance(out, np.ndarray):
            raise TypeError(f"{self.op}: out must be an array; got {_describe(out)}.")
        target = _plain_tensor(self.op, "out", out, writable=True)
        self._outs.append([out, None])
        if self.backend == CUDA:
            if _cuda_read_only(out):
                raise ValueError(f"{self.op}: out must be writable; got a read-only array.")
            return out, _cuda_support().as_device(target)
        view = _to_numpy(target, kind, self.op, "out", writable=True)
        if not view.flags.writeable:
            raise ValueError(f"{self.op}: out must be writable; got a read-only "
                             f"array{_read_only_hint(out)}.")
        # against the arrays as passed: the op's own check sees the copies made of
        # strided, byte-swapped or half-precision inputs, which out cannot overlap
        check_overlap(self.op, view, self.given,
                      alias_ok=True if self.storage is not None else alias_ok)
        if self.storage is not None:
            return out, self._half_out(view)
        return out, view

    def _half_out(self, view):
        """The kernel's buffer for a user's ``out`` when inputs were widened.

        ``out`` may be exactly one of the caller's arrays (it is written after the
        computation; adopt_out checked the arrays as given).
        """
        want = self._storage_for(None)
        if view.dtype != want:
            raise TypeError(f"{self.op}: out must have dtype {want} (the result's storage "
                            f"dtype); got {view.dtype}.")
        if not _half.is_half(want):
            return view
        if not view.flags.c_contiguous:
            raise ValueError(f"{self.op}: out must be C-contiguous; got strides "
                             f"{tuple(view.strides)}.")
        buffer = np.empty(view.shape, _half.COMPUTE)
        self._outs[-1][1] = (buffer, view)          # (the out adopted last: this one)
        return buffer

    def _storage_for(self, like) -> np.dtype:
        """The storage dtype of a result that takes argument ``like``'s (a gradient: its
        primal's name); None, or an argument given as a list or a number: the first
        array argument's (the image, ``a``, ``grad_output``). Only called once inputs
        were widened (``self.storage`` set)."""
        storage = self.storage
        assert storage is not None
        if like in storage:
            return storage[like]
        return next(iter(storage.values()))

    def output(self, shape, dtype, out=None):
        """``out`` adopted if given (already validated), else a new allocation."""
        return self.adopt_out(out) if out is not None else self.empty(shape, dtype)

    def wrap(self, caller_result, like=None):
        """Return a result as the caller's array type (DLPack inputs get DLPack outputs).

        The caller's own ``out=`` object is returned as is, whatever its type.
        With half-precision storage a float32 result is first rounded to its
        storage dtype: that of the argument named ``like`` (an op with several
        results names each one's primal), else the first array argument's.
        """
        for entry in self._outs:
            if caller_result is entry[0]:
                if entry[1] is not None:
                    buffer, view = entry[1]
                    entry[1] = None
                    _half.narrow_into(view, buffer)
                mark_written(caller_result)
                return caller_result
        if (self.storage is not None and isinstance(caller_result, np.ndarray)
                and caller_result.dtype == _half.COMPUTE):
            want = self._storage_for(like)
            if want != _half.COMPUTE:
                caller_result = _half.narrow(caller_result, want)
        if self.backend == CPU and self.template_kind == "dlpack" and isinstance(caller_result, np.ndarray):
            back = _dlpack.from_numpy_like(self.template, caller_result)
            if back is not None:
                return back
        return caller_result


def _native(arr):
    """A NumPy array in the machine's byte order: one stored in the other (read from a
    big-endian file, say) is copied once, as a non-contiguous input is."""
    if isinstance(arr, np.ndarray) and not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def begin(op: str, /, *, writes: tuple[str, ...] = (), **named) -> Prepared:
    """Decide the backend for ``named`` arguments and convert them for its kernels
    (:func:`begin_named`, for arguments of any names, ``writes`` and ``op`` included).

    CPU arrays in the other byte order are copied once into the native one, except
    those named in ``writes`` (updated in place: a copy would take the update), which
    the op's dtype check refuses; those are read as an ``out=`` is (a view with
    torch's negative bit refused, an unversioned DLPack capsule writable).

    Examples
    --------
    >>> import numpy as np
    >>> p = begin("lerp", a=np.zeros(2), b=[1.0, 2.0], t=0.5)
    >>> p.backend, type(p.arrays["b"]).__name__
    ('cpu', 'ndarray')
    """
    return begin_named(op, named, writes)


def begin_named(op: str, named: dict, writes: tuple[str, ...] = ()) -> Prepared:
    """:func:`begin` with the arguments as a ``name -> value`` dict."""
    if all(type(obj) in _PLAIN_NUMPY for obj in named.values()):
        return _begin_numpy(op, named, writes)
    backend = backend_of(*named.values(), names=tuple(named))
    arrays: dict[str, Any] = {}
    given: dict[str, np.ndarray] = {}       # the caller's CPU arrays, before any copy
    template = template_kind = None
    for name, obj in named.items():
        kind = array_kind(obj)
        if kind is None:
            arrays[name] = obj
            continue
        if _takes_over(template_kind, kind):
            template, template_kind = obj, kind
        written = name in writes
        plain = _plain_tensor(op, name, obj, writable=written)
        if backend == CUDA:
            _check_cuda_interface(op, name, plain)
            arrays[name] = _cuda_support().as_device(plain)
        else:
            arr = _to_numpy(plain, kind, op, name, writable=written)
            given[name] = arr
            arrays[name] = arr if written else _native(arr)
    storage = _half_storage(op, backend, arrays, named)
    return Prepared(op, backend, arrays, template, template_kind, dict(named), storage=storage,
                    given=given)


def _takes_over(template_kind, kind) -> bool:
    """Whether an argument of ``kind`` chooses the results' type over the template so far
    (the first array; a DLPack object over NumPy arrays: torch in, torch out)."""
    return template_kind is None or (template_kind == "numpy" and kind == "dlpack")


# Exact types (no subclasses, no array-likes) that need no conversion at all: NumPy
# arrays and Python scalars (None too). Calls on these alone take _begin_numpy, which
# is what the general path does with them, without its per-argument checks.
_PLAIN_NUMPY = frozenset({np.ndarray, float, int, bool, type(None)})


def _begin_numpy(op: str, named: dict, writes: tuple[str, ...] = ()) -> Prepared:
    """``begin`` for NumPy arrays and Python scalars only: the CPU backend, the arrays
    themselves (in native byte order), the first array as the template (half-precision
    arrays widened)."""
    arrays = {name: obj if name in writes else _native(obj) for name, obj in named.items()}
    template = next((obj for obj in named.values() if type(obj) is np.ndarray), None)
    given = {name: obj for name, obj in named.items() if type(obj) is np.ndarray}
    storage = _half_storage(op, CPU, arrays, named)
    return Prepared(op, CPU, arrays, template, None if template is None else "numpy",
                    dict(named), storage=storage, given=given)
