"""Which backend runs a call, and how results go back to the caller's type.

``backend_of`` decides from the arguments alone, without importing CuPy,
torch or numba: NumPy arrays (and lists) go to ``"cpu"``; objects with
``__cuda_array_interface__`` (CuPy, numba device arrays, torch CUDA tensors)
and numba's simulator arrays go to ``"cuda"``; DLPack-only objects (torch CPU
tensors, JAX arrays) are viewed zero-copy with ``np.from_dlpack`` and their
results are handed back as the caller's own type.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from numbers import Number
from typing import Any

import numpy as np

__all__ = ["BackendMismatchError", "backend_of", "begin", "Prepared", "CPU", "CUDA"]

CPU = "cpu"
CUDA = "cuda"

_DLPACK_CPU = (1, 3)     # kDLCPU, kDLCUDAHost
_DLPACK_CUDA = (2, 13)   # kDLCUDA, kDLCUDAManaged

# Where to find ``from_dlpack`` for the caller's array type, by top-level module.
_FROM_DLPACK = {"torch": "torch", "jax": "jax.numpy", "jaxlib": "jax.numpy",
                "cupy": "cupy", "numpy": "numpy"}


class BackendMismatchError(ValueError, TypeError):
    """Arrays on different devices (e.g. a NumPy and a CuPy array) in one call."""


def _is_simulator_array(obj) -> bool:
    return type(obj).__module__.startswith("numba.cuda.simulator")


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


def backend_of(*arrays, names: tuple[str, ...] | None = None) -> str:
    """The backend (``"cpu"`` or ``"cuda"``) that must run a call on ``arrays``.

    Scalars and None are ignored. Arrays on different devices raise
    :class:`BackendMismatchError` (both a ``ValueError`` and a ``TypeError``)
    naming the arguments; fastinterp never copies across devices silently.

    Examples
    --------
    >>> import numpy as np
    >>> backend_of(np.zeros(3), 2.0)
    'cpu'
    """
    names = names or tuple(f"argument {i}" for i in range(len(arrays)))
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


def _is_torch_tensor(obj) -> bool:
    """A torch tensor, detected without importing torch (as array-api-compat does)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


# Data types that NumPy cannot view through DLPack (torch/JAX names).
_NOT_VIEWABLE = ("bfloat16", "float8", "complex32", "bits", "qint", "quint")


def _dtype_name(obj) -> str:
    return str(getattr(obj, "dtype", "")).removeprefix("torch.")


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
    if getattr(obj, "requires_grad", False):
        raise TypeError(f"{op}: {name} must not require grad (fastinterp's array ops attach "
                        f"no gradients); got a torch tensor with requires_grad=True: pass "
                        f"{name}.detach().")
    if obj.is_neg() or obj.is_conj():
        if writable:
            raise TypeError(f"{op}: {name} must be a plain tensor; got a view with torch's "
                            f"negative or conjugate bit set (e.g. c.conj().imag), whose memory "
                            f"does not hold the values it shows.")
        obj = obj.resolve_conj().resolve_neg()
    return obj


def _check_viewable(op: str, name: str, obj) -> None:
    dtype = _dtype_name(obj)
    if any(dtype.startswith(bad) for bad in _NOT_VIEWABLE):
        raise TypeError(f"{op}: {name} must have dtype float32 or float64; got {dtype} "
                        f"({_describe(obj)}), which NumPy cannot read: cast it first, "
                        f"e.g. {name}.float().")


def _to_numpy(obj, kind: str, op: str = "fastinterp", name: str = "argument"):
    """A NumPy view of a CPU array-like; DLPack objects zero-copy (read-only stays read-only)."""
    if kind != "dlpack":
        return np.asarray(obj)
    _check_viewable(op, name, obj)
    try:
        return np.from_dlpack(obj)  # asks for a versioned capsule, falls back to the old one
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise TypeError(f"{op}: {name} cannot be read through DLPack ({_describe(obj)}, dtype "
                        f"{_dtype_name(obj) or '?'}): {exc} fastinterp's ops take float32 or "
                        f"float64 arrays.") from None


def _from_dlpack_for(template):
    root = type(template).__module__.split(".")[0]
    modname = _FROM_DLPACK.get(root)
    module = sys.modules.get(modname) if modname else None
    return getattr(module, "from_dlpack", None) if module else None


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
    out_caller: Any = None

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

    def empty(self, shape, dtype):
        """Allocate an output: returns ``(for_caller, for_kernel)``."""
        dtype = np.dtype(dtype)
        if self.backend == CUDA:
            support = _cuda_support()
            caller = support.empty_like_caller(self.template, tuple(shape), dtype)
            return caller, support.as_device(caller)
        arr = np.empty(shape, dtype)
        return arr, arr

    def adopt_out(self, out):
        """A user's ``out=`` argument: returns ``(for_caller, for_kernel)``.

        ``for_caller`` is ``out`` itself, which :meth:`wrap` returns unchanged.
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
        self.out_caller = out
        if self.backend == CUDA:
            if _cuda_read_only(out):
                raise ValueError(f"{self.op}: out must be writable; got a read-only array.")
            return out, _cuda_support().as_device(target)
        return out, _to_numpy(target, kind, self.op, "out")

    def output(self, shape, dtype, out=None):
        """``out`` adopted if given (already validated), else a new allocation."""
        return self.adopt_out(out) if out is not None else self.empty(shape, dtype)

    def wrap(self, caller_result):
        """Return a result as the caller's array type (DLPack inputs get DLPack outputs).

        The caller's own ``out=`` object is returned as is, whatever its type.
        """
        if self.out_caller is not None and caller_result is self.out_caller:
            return caller_result
        if self.backend == CPU and self.template_kind == "dlpack" and isinstance(caller_result, np.ndarray):
            from_dlpack = _from_dlpack_for(self.template)
            if from_dlpack is not None:
                return from_dlpack(caller_result)
        return caller_result


def begin(op: str, **named) -> Prepared:
    """Decide the backend for ``named`` arguments and convert them for its kernels.

    Examples
    --------
    >>> import numpy as np
    >>> p = begin("lerp", a=np.zeros(2), b=[1.0, 2.0], t=0.5)
    >>> p.backend, type(p.arrays["b"]).__name__
    ('cpu', 'ndarray')
    """
    backend = backend_of(*named.values(), names=tuple(named))
    arrays: dict[str, Any] = {}
    template = template_kind = None
    for name, obj in named.items():
        kind = array_kind(obj)
        if kind is None:
            arrays[name] = obj
            continue
        if template is None or (template_kind == "numpy" and kind == "dlpack"):
            template, template_kind = obj, kind
        plain = _plain_tensor(op, name, obj)
        if backend == CUDA:
            arrays[name] = _cuda_support().as_device(plain)
        else:
            arrays[name] = _to_numpy(plain, kind, op, name)
    return Prepared(op, backend, arrays, template, template_kind, dict(named))
