"""Optimizers that step arrays in place from gradients the caller computes.

``SGD``, ``Adam`` and ``AdamW`` follow ``torch.optim`` step for step: the same
hyper-parameters, defaults, update formulas (the first moment is a lerp,
``m <- lerp(m, g, 1 - beta1)``), bias correction, state and ``state_dict``
layout. The difference is the calling convention: there is no autograd, so
``step(grads)`` takes the gradients as a list of arrays, one per parameter
(``None`` skips a parameter, like a tensor whose ``.grad`` is None), and there
is no ``zero_grad``.

Each step runs one fused kernel per parameter array (Cython + OpenMP on CPU,
numba.cuda for CUDA arrays), reading the parameter, its gradient and its
state once and writing them back; the result is bit-identical for any thread
count.

Parameters are viewed afresh at every step, so replacing a torch
parameter's storage (``p.data = new``, ``p.resize_`` back to its shape) is
followed; a parameter whose shape or dtype changed raises. Arrays appended to (or
removed from) a group's ``"params"`` list are followed too, as in torch. Non-finite values
follow torch: an infinite parameter stays infinite when nothing finite is
added to it (no ``0 * inf`` from a zero weight decay), NaN propagates, and
AMSGrad's maximum keeps NaN like ``torch.maximum``. Hyper-parameters are
numbers; a 0-d array or tensor (``lr=torch.tensor(0.1)``) is kept and read at
every step. ``load_state_dict`` takes the layout :meth:`Optimizer.state_dict`
returns and refuses anything else (a ``torch.optim`` state_dict, unknown
keys, a negative or NaN ``step``) with a message saying what it expected.
"""
from __future__ import annotations

import copy
import heapq
import math
from collections.abc import Mapping, Set as AbstractSet
from typing import Any, Callable, Iterable, NamedTuple, Sequence, SupportsFloat, Union

import numpy as np

from . import _registry as registry
from ._config import threads_for
from ._dispatch import (CPU, CUDA, Prepared, _read_only_hint, array_kind, begin,
                        mark_written, public_call, to_host)
from ._fpenv import ieee_subnormals
from ._validate import _extent, _is_c_contiguous as _c_contiguous, _overlaps, float_dtype
from ._validate import check_flag, same_view, shape_str

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]

#: A hyper-parameter: a Python number, or a 0-d array or tensor (converted with ``.item()``).
Number = SupportsFloat
#: ``params``: a list of arrays (NumPy, CuPy, torch ...), or of group dicts with a "params" list.
Params = Union[Iterable[Any], Iterable[dict[str, Any]]]
#: One parameter's work for a step: (param view, flat gradient, stream keyword arguments).
_Job = tuple[Any, Any, dict[str, Any]]


# --- registry kernels ---------------------------------------------------------------

def _sgd_cpu(param: np.ndarray, grad: np.ndarray, buf: np.ndarray, lr: float, momentum: float,
             dampening: float, weight_decay: float, nesterov: bool, maximize: bool,
             first: bool) -> None:
    from ._cpu import optim as cpu_optim
    cpu_optim.sgd_step(param, grad, buf, lr, momentum, dampening, weight_decay,
                       nesterov, maximize, first, threads_for(param.shape[0]))


def _adam_cpu(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
              max_exp_avg_sq: np.ndarray, lr: float, beta1: float, beta2: float, eps: float,
              weight_decay: float, decoupled: bool, amsgrad: bool, maximize: bool,
              step_size: float, bc2_sqrt: float, first: bool) -> None:
    from ._cpu import optim as cpu_optim
    decay_factor = 1.0 - lr * weight_decay      # AdamW's, rounded twice as torch rounds it
    cpu_optim.adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, decay_factor, beta1,
                        beta2, eps, weight_decay, decoupled, amsgrad, maximize,
                        step_size, bc2_sqrt, first, threads_for(param.shape[0], 65536))


def _addresses(rows: list[tuple[np.ndarray, ...]]) -> np.ndarray:
    """The data addresses of the (C-contiguous) arrays of each row, as an (n, len(row))
    int64 array."""
    from ._cpu import optim as cpu_optim
    starts = [start for start, _ in cpu_optim.data_extents([a for row in rows for a in row])]
    return np.array(starts, dtype=np.uint64).view(np.int64).reshape(len(rows), -1)


def _sizes(rows: list[tuple[Any, ...]]) -> np.ndarray:
    return np.array([row[0].size for row in rows], dtype=np.int64)


@ieee_subnormals
def _sgd_many_cpu(rows: list[tuple[np.ndarray, ...]], first: list[bool], lr: float,
                  momentum: float, dampening: float, weight_decay: float, nesterov: bool,
                  maximize: bool) -> None:
    """:func:`_sgd_cpu` on many ``(param, grad, buf)`` rows of one dtype in one call."""
    from ._cpu import optim as cpu_optim
    sizes = _sizes(rows)
    cpu_optim.sgd_step_many(rows[0][0].dtype == np.float64, _addresses(rows), sizes,
                            np.array(first, dtype=np.uint8), lr, momentum, dampening,
                            weight_decay, nesterov, maximize, threads_for(int(sizes.sum())))


@ieee_subnormals
def _adam_many_cpu(rows: list[tuple[np.ndarray, ...]], step_size: list[float],
                   bc2_sqrt: list[float], first: list[bool], lr: float, beta1: float,
                   beta2: float, eps: float, weight_decay: float, decoupled: bool,
                   amsgrad: bool, maximize: bool) -> None:
    """:func:`_adam_cpu` on many ``(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)``
    rows of one dtype in one call, each with its own step."""
    from ._cpu import optim as cpu_optim
    sizes = _sizes(rows)
    decay_factor = 1.0 - lr * weight_decay
    cpu_optim.adam_step_many(rows[0][0].dtype == np.float64, _addresses(rows), sizes,
                             np.array(step_size, dtype=np.float64),
                             np.array(bc2_sqrt, dtype=np.float64),
                             np.array(first, dtype=np.uint8), decay_factor, beta1, beta2,
                             eps, weight_decay, decoupled, amsgrad, maximize,
                             threads_for(int(sizes.sum()), 65536))


def _state_copy_cpu(dst: np.ndarray, src: np.ndarray) -> None:
    np.copyto(dst, src, casting="same_kind")


registry.register_builtin("sgd_step", _sgd_cpu, "fastinterp._cuda.optim:sgd_step")
registry.register_builtin("adam_step", _adam_cpu, "fastinterp._cuda.optim:adam_step")
registry.register_builtin("state_copy", _state_copy_cpu, "fastinterp._cuda.optim:clone_into")


# --- parameter handling ---------------------------------------------------------------

class _Param:
    """One parameter: the caller's object and what it must keep (shape, dtype, device).

    No view of its memory is kept between steps: the caller may replace the
    storage (``p.data = new`` or ``p.resize_(...)`` on a torch tensor), so every
    step takes a fresh view (:meth:`view`) and checks it still fits.
    """

    __slots__ = ("caller", "name", "backend", "dtype", "shape", "_op", "_template_kind")

    def __init__(self, op: str, name: str, obj: Any) -> None:
        _check_updatable(op, name, obj)
        prepared = begin(op, writes=(name,), **{name: _updatable(obj)})
        arr = prepared.arrays[name]
        self.caller, self.name, self.backend = obj, name, prepared.backend
        self.dtype = float_dtype(op, name, arr)
        self.shape = tuple(arr.shape)
        _check_writable_contiguous(op, name, arr, obj)
        self._op, self._template_kind = op, prepared.template_kind

    @property
    def template(self) -> Prepared:
        """What allocating state needs of the caller's object (its array type, device and
        stream), taken afresh: a kept one would hold the storage the parameter had when
        the optimizer was built (``p.data = new`` must release it, as in torch.optim)."""
        return Prepared(self._op, self.backend, {}, _updatable(self.caller),
                        self._template_kind)

    def view(self, op: str, arr: Any) -> Any:
        """The flat kernel view of this step's ``arr`` (a fresh view of the caller's object)."""
        return self._fitted(op, self.name, arr, self.caller, own=True)

    def state_view(self, op: str, what: str, value: Any) -> Any:
        """The flat kernel view of state buffer ``value`` (named ``what``): an array of
        this parameter's shape and dtype, C-contiguous and writable (the step updates it
        in place, so an array-like that would be copied, a list, is refused)."""
        arr = value
        if type(value) is not np.ndarray or self.backend == CUDA:   # else nothing to convert
            _check_updatable(op, what, value)
            arr = _kernel_array(op, what, value, self.backend)
        return self._fitted(op, what, arr, value)

    def _fitted(self, op: str, what: str, arr: Any, caller: Any, own: bool = False) -> Any:
        """``arr`` flat, if it has this parameter's dtype and shape and can be written
        (``own``: ``arr`` is the parameter's own storage, else a state buffer)."""
        if type(arr) is np.ndarray and arr.dtype == self.dtype and arr.shape == self.shape \
                and arr.flags.c_contiguous and arr.flags.writeable:
            return _flat(arr)       # the common case, all of the checks below at once
        verb = "keep its" if own else "have"
        replaced = "its storage was replaced{} since the optimizer was built"
        dtype_note = f" ({replaced.format('')})" if own else " like its parameter"
        shape_note = f" ({replaced.format(' or resized')})" if own else " like its parameter"
        dtype = np.dtype(arr.dtype)
        if dtype != self.dtype:
            raise TypeError(f"{op}: {what} must {verb} dtype {self.dtype}{dtype_note}; "
                            f"got {dtype}.")
        if tuple(arr.shape) != self.shape:
            raise ValueError(f"{op}: {what} must {verb} shape {shape_str(self.shape)}"
                             f"{shape_note}; got {shape_str(arr.shape)}.")
        _check_writable_contiguous(op, what, arr, caller)
        return _flat(arr)

    def empty_like(self) -> Any:
        """An uninitialised state buffer shaped like the parameter (the caller's array type:
        a torch parameter gets a torch tensor, as ``torch.optim`` keeps its state)."""
        return self.template.wrap(self.template.empty(self.shape, self.dtype)[0])


def _check_updatable(op: str, name: str, obj: Any) -> None:
    """``obj`` must be an array a step can write through: a NumPy array (0-d included), a
    CUDA array or a DLPack tensor. A NumPy scalar is immutable, and other array-likes
    (lists, objects with ``__array__``) convert by copy: a step would update the copy."""
    array_like = hasattr(obj, "shape") or hasattr(obj, "__dlpack__")
    kind = array_kind(obj) if obj is not None and array_like else None
    if kind is None or (kind == "numpy" and not isinstance(obj, np.ndarray)):
        shown = (f"a NumPy scalar {type(obj).__name__} (immutable; use a 0-d array, "
                 f"np.array(x))" if isinstance(obj, np.generic) else type(obj).__name__)
        raise TypeError(f"{op}: {name} must be an array (it is updated in place); got {shown}.")


def _listed(op: str, name: str, value: Any, expected: str, given: Any = None) -> list[Any]:
    """``value``, an iterable that is not a string or a dict, as a list; a ``TypeError``
    saying ``expected`` otherwise (``given``: the object to name, if not ``value``)."""
    if value is None or isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        shown = type(value if given is None else given).__name__
        raise TypeError(f"{op}: {name} must be {expected}; got {shown}.")
    return list(value)


def _updatable(obj: Any) -> Any:
    """The object whose memory a step writes: a torch parameter (``requires_grad``) as
    ``obj.detach()``, which shares its current storage. Like ``torch.optim``, which
    updates parameters under ``no_grad``, the update is invisible to autograd."""
    if getattr(obj, "requires_grad", False) and hasattr(obj, "detach"):
        return obj.detach()
    return obj


def _check_writable_contiguous(op: str, name: str, arr: Any, caller: Any = None) -> None:
    """``arr``, the kernel's view of the caller's ``caller``, can be updated in place."""
    if not _c_contiguous(arr):
        raise ValueError(f"{op}: {name} must be C-contiguous (it is updated in place); "
                         f"got strides {tuple(arr.strides)}.")
    if isinstance(arr, np.ndarray) and not arr.flags.writeable:
        raise ValueError(f"{op}: {name} must be writable (it is updated in place); "
                         f"got a read-only array{_read_only_hint(caller)}.")


def _byte_extents(arrays: list[Any]) -> list[tuple[int, int] | None]:
    """``[start, end)`` of the bytes of each array (None: empty): the C-contiguous NumPy
    arrays (a step's parameters, gradients and buffers) in one call to the kernels'
    module, any other (a strided gradient, a device array) on its own."""
    from ._cpu import optim as cpu_optim
    extents: list[tuple[int, int] | None] = [None] * len(arrays)
    plain = []
    for k, a in enumerate(arrays):
        if type(a) is np.ndarray and a.flags.c_contiguous:
            plain.append(k)
        elif a.size:
            extents[k] = _extent(a)
    for k, extent in zip(plain, cpu_optim.data_extents([arrays[k] for k in plain])):
        extents[k] = extent if extent[1] > extent[0] else None
    return extents


class _Span(NamedTuple):
    """One array a step reads or writes, as the memory check sweeps them."""
    start: int
    end: int
    rank: int                       # orders the labels in messages
    kind: str                       # "param", "buffer" (written), "grad", "source" (read)
    owner: int                      # the index of the parameter it belongs to
    key: str | None                 # a buffer's state key
    arr: Any

    def label(self, names: list[str]) -> str:
        if self.kind == "buffer":
            return f"state[{self.owner}][{self.key!r}]"
        return names[self.owner] if self.kind == "param" else f"grads[{self.owner}]"


def _step_arrays(jobs: list[Any], copied_from: list[Any], buffers: dict[tuple[int, str], Any]
                 ) -> list[tuple[str, int, str | None, Any]]:
    """``(kind, parameter index, buffer key, array)`` of every array a step uses: each
    state buffer, then per parameter its view, the kernel's gradient and the caller's
    gradient it was copied from (if it was)."""
    arrays: list[tuple[str, int, str | None, Any]] = [
        ("buffer", i, key, view) for (i, key), view in buffers.items()]
    for i, job in enumerate(jobs):
        if job is not None:
            arrays += [("param", i, None, job[0]), ("grad", i, None, job[1])]
            if copied_from[i] is not None:
                arrays.append(("source", i, None, copied_from[i]))
    return arrays


def _disjoint(extents: list[tuple[int, int] | None]) -> bool:
    """Whether no two of the (non-empty) extents overlap."""
    live = sorted(e for e in extents if e)
    return all(a[1] <= b[0] for a, b in zip(live, live[1:]))


def _shared_memory_error(op: str, names: list[str], a: _Span, b: _Span) -> str | None:
    """The message refusing spans ``a`` and ``b`` (whose extents overlap, one of them
    written), or None where the step may use both."""
    if a.kind == "buffer" or b.kind == "buffer":
        if "source" in (a.kind, b.kind):     # the kernel reads a copy of the source
            return None
        first, second = sorted((a, b), key=lambda s: (s.kind != "buffer", s.rank))
        return (f"{op}: {first.label(names)} shares memory with {second.label(names)}; "
                f"state buffers must be separate arrays (the step updates them in place).")
    if a.kind == b.kind == "param":
        first, second = sorted((a, b), key=lambda s: s.start)
        return (f"{op}: {first.label(names)} and {second.label(names)} share memory; "
                f"the parameters must be separate arrays (they are updated in place).")
    param, grad = (a, b) if a.kind == "param" else (b, a)
    own = grad.owner == param.owner
    if grad.kind == "grad" and own and same_view(param.arr, grad.arr):
        return None             # each element is read before it is written
    if not _overlaps(param.arr, grad.arr):
        return None             # interleaved strides
    return (f"{op}: grads[{grad.owner}] shares memory with "
            f"{'its parameter' if own else param.label(names)} (which this step updates) "
            f"without being exactly {names[grad.owner]}; pass a copy of the gradient.")


def _check_step_memory(op: str, names: list[str], jobs: list[Any], copied_from: list[Any],
                       buffers: dict[tuple[int, str], Any]) -> None:
    """A step writes each parameter and state buffer in place while it reads the
    gradients: refuse parameters that share memory with each other, gradients that share
    memory with a parameter other than exactly their own (``grads[i]`` may be parameter
    i itself: each element is read before it is written), and state buffers that share
    memory with anything the step reads or writes (torch.optim refuses them too). Any of
    these would make the result depend on the order of the updates, so on the thread
    count. Gradients may share memory with each other.

    ``jobs``: ``(param_flat, grad_flat, ...)`` or None, per parameter; ``copied_from``:
    per parameter, the caller's gradient when the kernel's is a copy of it (strided or
    byte-swapped), else None: such a gradient is never exactly a parameter, and may share
    no memory with any; ``buffers``: (parameter index, key) -> the kernel's flat view of
    a buffer the caller set (fresh buffers are new arrays).

    One sweep in address order: written arrays are disjoint unless refused, so each
    array is compared with at most one written array, and a written one with the read
    arrays that overlap it (each of them refused but its own exact gradient).
    """
    arrays = _step_arrays(jobs, copied_from, buffers)
    extents = _byte_extents([arr for *_, arr in arrays])
    if _disjoint(extents):
        return                  # the common case: every array apart
    spans = sorted((_Span(extent[0], extent[1], rank, *entry)
                    for rank, (entry, extent) in enumerate(zip(arrays, extents)) if extent),
                   key=lambda s: (s.start, s.rank))
    written: list[tuple[int, int]] = []      # heaps of (end, position) of open spans
    read: list[tuple[int, int]] = []
    for position, span in enumerate(spans):
        for heap in (written, read):
            while heap and heap[0][0] <= span.start:
                heapq.heappop(heap)
        is_written = span.kind in ("param", "buffer")
        for other in sorted(position for _, position in (written + read if is_written
                                                          else written)):
            message = _shared_memory_error(op, names, spans[other], span)
            if message:
                raise ValueError(message)
        heapq.heappush(written if is_written else read, (span.end, position))


def _flat(arr: Any) -> Any:
    return arr.reshape(-1) if len(arr.shape) != 1 else arr


def _kernel_array(op: str, name: str, obj: Any, backend: str) -> Any:
    """``obj`` converted for ``backend``'s kernels (NumPy arrays pass through)."""
    if backend != CUDA and isinstance(obj, np.ndarray):
        return obj
    prepared = begin(op, **{name: obj})
    if prepared.backend != backend:
        raise TypeError(f"{op}: {name} must be a {backend.upper()} array like its parameter; "
                        f"got {type(obj).__name__}.")
    return prepared.arrays[name]


def _state_source(param: _Param, value: Any, op: str, what: str) -> Any:
    """Saved state ``value`` as ``param``'s kernels read it. A snapshot made on another
    device (or, for a CUDA parameter, in another dtype) goes through the host, cast to
    the parameter's dtype: torch.optim's load_state_dict moves state to its parameter's
    device and dtype, so a checkpoint loaded on the CPU resumes on the GPU."""
    given = begin(op, **{what: value}) if not isinstance(value, np.ndarray) else None
    src = value if given is None else given.arrays[what]
    float_dtype(op, what, src)
    if (CUDA if given is not None and given.backend == CUDA else CPU) == param.backend and (
            param.backend != CUDA or np.dtype(src.dtype) == param.dtype):
        return src
    host = np.asarray(to_host(op, what, value))
    if param.backend != CUDA:
        return host
    from ._dispatch import _cuda_support
    return _cuda_support().to_device(np.ascontiguousarray(host, dtype=param.dtype),
                                     param.template.stream)


def _copy_state(param: _Param, value: Any, op: str, what: str) -> Any:
    """A fresh state buffer for ``param`` holding a copy of ``value`` (registry ``state_copy``)."""
    if not hasattr(value, "shape"):
        raise TypeError(f"{op}: {what} must be an array; got {type(value).__name__}.")
    src = _state_source(param, value, op, what)
    if tuple(src.shape) != param.shape:
        raise ValueError(f"{op}: {what} must have shape {shape_str(param.shape)} like its "
                         f"parameter; got {shape_str(src.shape)}.")
    caller = param.empty_like()
    dst = _kernel_array(op, what, caller, param.backend)
    kernel = registry.lookup("state_copy", param.backend, param.dtype)
    kwargs = {"stream": param.template.stream} if param.backend == CUDA else {}
    # copied once if strided (on CUDA on the caller's stream)
    src = param.template.contiguous(src) if param.backend == CUDA else np.ascontiguousarray(src)
    kernel(_flat(dst), _flat(src), **kwargs)
    return caller


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _scalar(value: Any) -> float | None:
    """A hyper-parameter as a Python float: a real number or a 0-d real array/tensor
    (converted with ``.item()``); None for anything else."""
    if getattr(value, "is_meta", False):     # a torch meta tensor holds no value
        return None
    if getattr(value, "shape", None) == () and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    try:
        return float(value)
    except OverflowError:        # an int beyond float: out of every range checked, like inf
        return math.inf if value > 0 else -math.inf


def _kept(given: Any, value: float) -> Any:
    """What a group stores for a hyper-parameter ``given`` (checked, read as ``value``):
    a 0-d array or tensor itself, read again at every step (a scheduler may change it
    in place, ``lr.fill_(0.01)``, as torch's do); else the float."""
    if getattr(given, "shape", None) != () or isinstance(given, np.generic) \
            or not hasattr(type(given), "__float__"):      # each step reads it with float()
        return value            # (a NumPy scalar is immutable; a numba device array has
    return given                # no __float__: both stored as the float)


def _copied(value: Any) -> Any:
    """A copy of a saved hyper-parameter (a number, a 0-d array or tensor, a tuple of
    them); a tensor that is not a graph leaf (no deepcopy) is copied detached."""
    if isinstance(value, tuple):
        return tuple(_copied(v) for v in value)
    try:
        return copy.deepcopy(value)
    except RuntimeError:
        return value.detach().clone()


def _shown(value: Any) -> str:
    """``repr(value)`` for an error message; an int beyond float's range by its size
    (its repr would run to hundreds of digits)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) \
            and abs(int(value)) > 2 ** 1024:
        return f"an int of {len(str(abs(int(value))))} digits (beyond float's range)"
    return repr(value)


# --- the base class -----------------------------------------------------------------

class Optimizer:
    """Base class: parameter groups, per-parameter state, state_dict round trips.

    Subclasses define ``_op`` (the registry op), ``_one_cpu`` and ``_many_cpu`` (its
    built-in CPU kernel, on one array and on many), ``_state_keys`` (the state entries it may hold),
    ``_check(group)``, ``_scalars(group)`` and ``_operands(index, param_flat,
    grad_flat, group)``: a kernel call is ``kernel(*arrays, *scalars, *own)``.

    Hyper-parameters are Python numbers; a 0-d array or tensor (``lr=
    torch.tensor(0.1)``) is kept in the group and read at every step (a scheduler
    may change it in place, as torch's do, or set a new one).

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> w = np.ones(3)
    >>> opt = fi.SGD([w], lr=0.5)
    >>> isinstance(opt, fi.optim.Optimizer), opt.param_groups[0]["lr"]
    (True, 0.5)
    >>> opt.param_groups[0]["lr"] = 0.25        # what a scheduler does
    >>> opt.step([np.ones(3)]); w
    array([0.75, 0.75, 0.75])
    """

    _op = "optimizer"
    #: The built-in CPU kernel (``_sgd_cpu``, ...) and the same on many parameters of one
    #: dtype (``_sgd_many_cpu``, ...): used while the registry's kernel is the built-in one.
    _one_cpu: Callable[..., None]
    _many_cpu: Callable[..., None]
    _state_keys: tuple[str, ...] = ()
    _required_state: tuple[str, ...] = ()

    def __init__(self, params: Params, defaults: dict[str, Any]) -> None:
        self._views: dict[tuple[int, str], Any] = {}   # a step's checked state buffers
        groups = _listed(self._name, "params", None if hasattr(params, "shape") else params,
                         "a sequence of arrays or of parameter group dicts", params)
        if not groups:
            raise ValueError(f"{self._name}: params must not be empty; got an empty list.")
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        self._params: list[_Param] = []
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _name(self) -> str:
        return type(self).__name__

    def __getstate__(self) -> dict[str, Any]:
        """What pickling keeps: the groups (each parameter once, in its group's list), the
        state and the defaults. The per-parameter records are rebuilt from the groups on
        loading, so a pickler that does not keep object identity (joblib copies NumPy
        arrays apart) restores the parameters and their state together."""
        self._sync_params(f"{self._name}.__getstate__")
        return {k: v for k, v in self.__dict__.items() if k not in ("_params", "_views")}

    def __setstate__(self, saved: dict[str, Any]) -> None:
        self.__dict__.update(saved)
        self._views = {}
        arrays = [a for group in self.param_groups for a in group["params"]]
        self._params = [_Param(self._name, f"params[{j}]", a) for j, a in enumerate(arrays)]

    def _check_keys(self, op: str, what: str, group: dict[str, Any]) -> None:
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            hint = ""
            if unknown & _TORCH_ONLY_KEYS:
                hint = (" This looks like a torch.optim state_dict: fastinterp takes the layout of "
                        "its own state_dict() (hyper-parameters as in the constructor, state "
                        "arrays shaped like their parameters, 'step' a number); drop torch's "
                        "implementation flags (foreach, fused, capturable, differentiable, ...) "
                        "and convert the 'step' tensors with float() first.")
            raise ValueError(f"{op}: {what} keys must be among {sorted(self.defaults)}; "
                             f"got unknown {sorted(unknown)}.{hint}")

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group: a dict with ``"params"`` (a list of arrays) and optional overrides."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{self._name}: a parameter group must be a dict with a 'params' "
                            f"list; got {type(group).__name__}.")
        arrays = group["params"]
        arrays = [arrays] if hasattr(arrays, "shape") else _listed(
            self._name, "a parameter group's 'params'", arrays, "a sequence of arrays")
        self._sync_params(self._name)
        self._check_keys(self._name, "parameter group", group)
        full = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        self._check(full)
        start = len(self._params)
        new: list[_Param] = []
        for j, a in enumerate(arrays):
            if any(p.caller is a for p in self._params + new):
                raise ValueError(f"{self._name}: params[{start + j}] appears twice; each array "
                                 f"may be in one group only.")
            new.append(_Param(self._name, f"params[{start + j}]", a))
        self._params += new
        full["params"] = arrays
        self.param_groups.append(full)

    def _sync_params(self, op: str) -> None:
        """Follow edits of the groups' ``"params"`` lists made since the last call (torch
        allows ``opt.param_groups[i]["params"].append(p)``): a new array is checked like
        a constructor's, the state of the others follows them to their new index, and a
        removed one loses its state. Nothing changes if a new array is refused."""
        lists = [g["params"] for g in self.param_groups]
        if all(type(lst) is list for lst in lists) and \
                sum(map(len, lists)) == len(self._params) and \
                all(p.caller is a for p, a in zip(self._params, (a for lst in lists for a in lst))):
            return                                   # unchanged: the common case, every step
        lists = [[lst] if hasattr(lst, "shape") else _listed(
            op, f"param_groups[{k}]['params']", lst, "a sequence of arrays")
            for k, lst in enumerate(lists)]
        old = {id(p.caller): (i, p) for i, p in enumerate(self._params)}
        params: list[_Param] = []
        state: dict[int, dict[str, Any]] = {}
        seen: set[int] = set()                   # ids of live objects (the lists hold them)
        for j, a in enumerate(a for lst in lists for a in lst):
            if id(a) in seen:
                raise ValueError(f"{op}: params[{j}] appears twice; each array may be in "
                                 f"one group only.")
            seen.add(id(a))
            i, p = old.get(id(a), (None, None))
            params.append(_Param(op, f"params[{j}]", a) if p is None else p)
            if i in self.state:
                state[j] = self.state[i]
        for j, p in enumerate(params):
            p.name = f"params[{j}]"
        for group, lst in zip(self.param_groups, lists):
            group["params"] = lst
        self._params, self.state = params, state

    # Validation helpers used by subclasses' _check.
    def _nonneg(self, group: dict[str, Any], *keys: str) -> None:
        """Each ``group[key]`` must be a finite number >= 0; a number is stored back as a
        float, a 0-d array or tensor is kept (read again at every step: a scheduler may
        change it in place, ``lr.fill_(0.01)``, as torch's do)."""
        for key in keys:
            value = _scalar(group[key])
            if value is None or not math.isfinite(value) or value < 0:
                raise ValueError(f"{self._name}: {key} must be a finite number >= 0 (a Python "
                                 f"number or 0-d array); got {_shown(group[key])}.")
            group[key] = _kept(group[key], value)

    def _flags(self, group: dict[str, Any], *keys: str) -> None:
        """Each ``group[key]`` must be a bool (NumPy bools pass); stored back as one."""
        for key in keys:
            group[key] = check_flag(self._name, key, group[key])

    def _check(self, group: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(self, grads: Sequence[Any]) -> list[_Job | None]:
        """Validate every gradient and parameter before any changes.

        Returns one ``(param_flat, grad_flat, stream_kwargs)`` per parameter
        (None where the gradient is None). The parameter views are taken now,
        from the caller's objects: a replaced storage is followed, a new shape
        or dtype refused.
        """
        op = f"{self._name}.step"
        if hasattr(grads, "shape"):
            raise TypeError(f"{op}: grads must be a list of arrays, one per "
                            f"parameter; got a single {type(grads).__name__}.")
        grads = _listed(op, "grads", grads, "a list of arrays (or None), one per parameter")
        self._sync_params(op)
        if len(grads) != len(self._params):
            raise ValueError(f"{op}: grads must have one entry per parameter "
                             f"({len(self._params)}); got {len(grads)}.")
        for k, group in enumerate(self.param_groups):
            self._check_keys(op, f"param_groups[{k}]", group)    # as load_state_dict would
            missing = sorted(set(self.defaults) - set(group))
            if missing:
                raise ValueError(f"{op}: param_groups[{k}] must have every key of "
                                 f"{sorted(self.defaults)}; missing {missing}.")
            self._check(group)
        jobs: list[_Job | None] = []
        copied_from: list[Any] = []         # see _check_step_memory
        for i, (p, g) in enumerate(zip(self._params, grads)):
            copied_from.append(None)
            if g is None:
                jobs.append(None)
                continue
            name = f"grads[{i}]"
            if not hasattr(g, "shape"):
                raise TypeError(f"{op}: {name} must be an array or None; "
                                f"got {type(g).__name__}.")
            given: Any
            if type(g) is np.ndarray and type(p.caller) is np.ndarray and g.dtype == p.dtype:
                param, arr, given, kwargs = p.view(op, p.caller), g, g, {}  # nothing converted
            else:
                prepared = begin(op, writes=(p.name,), **{p.name: _updatable(p.caller), name: g})
                param, arr = p.view(op, prepared.arrays[p.name]), prepared.arrays[name]
                given = prepared.given.get(name)
                kwargs = {"stream": prepared.stream} if p.backend == CUDA else {}
                dtype = float_dtype(op, name, arr)
                if dtype != p.dtype:
                    raise TypeError(f"{op}: {name} must have the dtype of {p.name} "
                                    f"({p.dtype}); got {dtype}.")
            if tuple(arr.shape) != p.shape:
                raise ValueError(f"{op}: {name} must have the shape of {p.name} "
                                 f"{shape_str(p.shape)}; got {shape_str(arr.shape)}.")
            if not _c_contiguous(arr):   # copied once (on CUDA on the caller's stream)
                arr = prepared.contiguous(arr) if p.backend == CUDA else np.ascontiguousarray(arr)
            if given is not None and given is not arr:
                copied_from[-1] = given
            jobs.append((param, _flat(arr), kwargs))
        index = 0
        for group in self.param_groups:
            checked: set[Any] = set()       # what _check_representable found fine
            for _ in group["params"]:
                if jobs[index] is not None:
                    self._check_saved_state(op, index, group)
                    self._precheck(index, group)
                    self._check_representable(op, index, group, checked)
                index += 1
        _check_step_memory(op, [p.name for p in self._params], jobs, copied_from, self._views)
        return jobs

    def _check_representable(self, op: str, index: int, group: dict[str, Any],
                             checked: set[Any]) -> None:
        """The update runs in the parameter's dtype: a hyper-parameter float32 cannot hold
        (``lr=1e300``) would turn float32 parameters into inf or NaN; torch refuses it.
        ``checked``: the group's hyper-parameters and derived values already found
        representable this step (each is checked once per group, not per parameter)."""
        p = self._params[index]
        if p.dtype != np.float32:
            return
        if "hyper-parameters" not in checked:
            for key, given in group.items():
                for v in (given if isinstance(given, tuple) else (given,)):
                    value = _scalar(v)
                    if value is not None and abs(value) > _FLOAT32_MAX:
                        raise ValueError(f"{op}: {key} must be representable in float32 (the "
                                         f"dtype of {p.name}); got {_shown(v)}.")
            checked.add("hyper-parameters")
        for label, value in self._derived_scalars(index, group):
            if value not in checked and math.isfinite(value) and abs(value) > _FLOAT32_MAX:
                raise ValueError(f"{op}: {label()} must be representable in float32 (the "
                                 f"dtype of {p.name}); got {value!r}.")
            checked.add(value)

    def _derived_scalars(self, index: int, group: dict[str, Any]
                         ) -> tuple[tuple[Callable[[], str], float], ...]:
        """Scalars the next step of parameter ``index`` computes from the hyper-parameters
        and passes to the kernel in the parameter's dtype, as (label, value), the label a
        function that names it: torch refuses one that float32 cannot hold as it refuses
        a hyper-parameter."""
        return ()

    def _precheck(self, index: int, group: dict[str, Any]) -> None:
        """Raise before any update if parameter ``index`` cannot be stepped."""

    def _buffers_used(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The state buffers a step of a parameter in ``group`` reads and writes."""
        return ()

    def _check_saved_state(self, op: str, index: int, group: dict[str, Any]) -> None:
        """The state of parameter ``index``, as the caller may have edited it (``opt.state``
        is theirs), checked before any update: a step count, the buffers the step uses
        (views kept for it). A buffer set to None starts afresh, as in ``torch.optim``."""
        st = self.state.get(index)
        if st is None:
            return
        if not isinstance(st, dict):
            raise TypeError(f"{op}: state[{index}] must be a dict; got {type(st).__name__}.")
        present = {k: v for k, v in st.items() if v is not None or k == "step"}
        step = present.get("step")
        if "step" in present and not (type(step) is float and 0.0 <= step < math.inf):
            _load_step(op, f"state[{index}]['step']", step)     # (a float >= 0 is fine)
        if present and ("step" in present or "step" not in self._state_keys):
            Optimizer._check_state(self, op, index, present, group)
            if len(present) < len(st):       # a buffer set to None: what its group needs
                self._check_state(op, index, st, group)
        for key in set(st) - set(present):      # checked: only now is the state changed
            del st[key]
        if not st:
            return
        p = self._params[index]
        for key in self._buffers_used(group):
            if key in st:
                self._views[(index, key)] = p.state_view(op, f"state[{index}][{key!r}]",
                                                         st[key])

    def _scalars(self, group: dict[str, Any]) -> tuple[Any, ...]:  # pragma: no cover
        """The kernel's arguments shared by every parameter of ``group``."""
        raise NotImplementedError

    def _operands(self, i: int, param: Any, g: Any,
                  group: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """Parameter ``i``'s arrays for its kernel (its flat view, gradient, state buffers)
        and its own scalars (those that follow its step count)."""
        raise NotImplementedError  # pragma: no cover

    @public_call
    def step(self, grads: Sequence[Any]) -> None:
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : list of arrays (or None)
            One gradient per parameter, in the order the parameters were given
            (group by group), each with its parameter's shape, dtype and
            device. ``None`` leaves that parameter and its state untouched.
            Everything is validated before any parameter changes. A gradient
            may be exactly its own parameter, but must share no memory with
            any other parameter stepped, nor partially with its own.

        Notes
        -----
        Each step views the parameters afresh: if a torch parameter's storage
        was replaced (``p.data = new``, ``p.resize_``) the new storage is
        updated; a parameter whose shape or dtype changed raises. Arrays
        appended to or removed from a group's ``"params"`` list since the last
        step are taken into account (their state follows them).
        """
        self._views = {}
        try:
            jobs = self._prepare(grads)
            index = 0
            for group in self.param_groups:
                stepped = [i for i in range(index, index + len(group["params"]))
                           if jobs[i] is not None]
                self._step_group(stepped, jobs, group)
                index += len(group["params"])
        finally:
            self._views = {}

    def _step_group(self, indices: list[int], jobs: list[_Job | None],
                    group: dict[str, Any]) -> None:
        """Update parameters ``indices`` of ``group``: the CPU arrays the built-in kernel
        steps in one call per dtype (a model's hundreds of small arrays would otherwise
        cost more in calls than in arithmetic), any other array (another kernel registered
        for the op, a CUDA array) in a call of its own."""
        together: dict[np.dtype, list[tuple[int, Any]]] = {}     # dtype -> (index, operands)
        for i in indices:           # in parameter order: the state is created in that order
            p, job = self._params[i], jobs[i]
            assert job is not None
            kernel = registry.lookup(self._op, p.backend, p.dtype)
            last = registry.last_kernel()
            operands = self._operands(i, job[0], job[1], group)
            if p.backend == CPU and last is not None and last.kernel is type(self)._one_cpu:
                together.setdefault(p.dtype, []).append((i, operands))
                continue
            arrays, per_array = operands
            kernel(*arrays, *self._scalars(group), *per_array, **job[2])
            self._stepped(i)
        for batch in together.values():
            rows, per_array = zip(*(operands for _, operands in batch))
            type(self)._many_cpu(list(rows), *map(list, zip(*per_array)),
                                 *self._scalars(group))
            for i, _ in batch:
                self._stepped(i)

    def _stepped(self, index: int) -> None:
        """Parameter ``index`` was updated: its state's records follow (a step count)."""
        # written through views: tell torch's autograd, as torch.optim's in-place
        # updates do (a graph that saved the old values raises)
        for obj in (self._params[index].caller, *self.state.get(index, {}).values()):
            mark_written(obj)

    # --- state ----------------------------------------------------------------------

    def _buffer(self, index: int, key: str) -> tuple[Any, bool]:
        """The flat kernel view of state buffer ``key`` of parameter ``index``, and
        whether it was just allocated (uninitialised). Viewed afresh each step."""
        st = self.state.setdefault(index, {})
        p = self._params[index]
        fresh = key not in st
        if fresh:
            st[key] = p.empty_like()
        view = self._views.pop((index, key), None)       # checked by the step's _prepare
        if view is None:
            view = p.state_view(f"{self._name}.step", f"state[{index}][{key!r}]", st[key])
        return view, fresh

    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the state and hyper-parameters (``torch.optim`` layout).

        Returns ``{"state": {index: {...}}, "param_groups": [{..., "params":
        [indices]}]}``. The state arrays are copies (of the parameters' array
        type), so later steps do not change a saved snapshot.
        """
        name = f"{self._name}.state_dict"
        self._sync_params(name)
        state = {i: {key: self._saved_value(name, i, key, value) for key, value in st.items()}
                 for i, st in self.state.items()}
        groups, index = [], 0
        for group in self.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def _saved_value(self, op: str, i: int, key: str, value: Any) -> Any:
        """State entry ``key`` of parameter ``i`` as a snapshot holds it (and as
        ``load_state_dict`` restores it): the step count as a float, a buffer set to None
        (start afresh) as None, any other buffer copied."""
        what = f"state[{i}][{key!r}]"
        if key == "step":
            return _load_step(op, what, value)
        return None if value is None else _copy_state(self._params[i], value, op, what)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a snapshot made by :meth:`state_dict` (arrays are copied in).

        Expected format: ``{"state": {index: {key: value}}, "param_groups":
        [{hyper-parameters..., "params": [indices]}]}`` where the groups have
        the same sizes as this optimizer's, the hyper-parameter keys are the
        constructor's, each state array has its parameter's shape and
        ``"step"`` (Adam, AdamW) is a finite number >= 0. Hyper-parameters are
        taken from the snapshot. Nothing changes unless all of it is valid.
        A ``torch.optim`` state_dict is refused with a note on converting it.
        """
        name = f"{self._name}.load_state_dict"
        self._sync_params(name)
        try:
            if not isinstance(state_dict, dict):      # a NumPy scalar indexes as an IndexError
                raise TypeError
            groups, saved = state_dict["param_groups"], state_dict["state"]
            theirs = [len(g["params"]) for g in groups]
            saved_items = list(saved.items())
        except (TypeError, KeyError, AttributeError):
            given = (f"a dict with keys {sorted(map(str, state_dict))}"
                     if isinstance(state_dict, dict) else type(state_dict).__name__)
            raise ValueError(f"{name}: state_dict must be a dict with 'state' (a dict of "
                             f"per-parameter dicts) and 'param_groups' (a list of dicts with "
                             f"'params'), as state_dict() returns; got {given}.") from None
        ours = [len(g["params"]) for g in self.param_groups]
        if ours != theirs:
            raise ValueError(f"{name}: group sizes must match this optimizer's {ours}; got {theirs}.")
        new_groups = []
        for k, (mine, g) in enumerate(zip(self.param_groups, groups)):
            self._check_keys(name, f"param_groups[{k}]", g)
            # copies, as torch's: a 0-d tensor hyper-parameter is not shared with the source
            full = {**mine, **{key: _copied(v) for key, v in g.items() if key != "params"}}
            self._check(full)
            new_groups.append(full)
        new_state: dict[int, dict] = {}
        owners = [g for g in new_groups for _ in g["params"]]     # each parameter's group
        for key, st in saved_items:
            i = _state_index(name, key, len(self._params))
            if not isinstance(st, dict):
                raise ValueError(f"{name}: state[{i}] must be a dict; got {type(st).__name__}.")
            unknown = set(st) - set(self._state_keys)
            if unknown:
                raise ValueError(f"{name}: state[{i}] keys must be among "
                                 f"{list(self._state_keys)}; got unknown {sorted(unknown)}.")
            entry = {k: self._saved_value(name, i, k, v) for k, v in st.items()}
            self._check_state(name, i, entry, owners[i])
            new_state[i] = entry
        self.param_groups, self.state = new_groups, new_state

    def _check_state(self, name: str, i: int, entry: dict[str, Any],
                     group: dict[str, Any]) -> None:
        """Raise if state ``entry`` of parameter ``i`` lacks what its ``group`` needs (a
        buffer set to None counts as absent; an entry of None buffers alone is a fresh
        start, as SGD's ``momentum_buffer = None``)."""
        present = {k for k, v in entry.items() if v is not None}
        missing = [k for k in self._required_state if k not in present]
        if present and missing:
            raise ValueError(f"{name}: state[{i}] must have keys {list(self._required_state)}; "
                             f"missing {missing}.")

    def __repr__(self) -> str:
        lines = [f"{self._name} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])


# Keys of torch.optim param_groups that fastinterp's optimizers do not take.
_TORCH_ONLY_KEYS = {"foreach", "fused", "capturable", "differentiable",
                    "decoupled_weight_decay", "initial_lr"}


def _state_index(name: str, key: Any, n: int) -> int:
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
        raise ValueError(f"{name}: state keys must be parameter indices (int); got {key!r}.")
    if not 0 <= int(key) < n:
        raise ValueError(f"{name}: state index must be in [0, {n}); got {int(key)}.")
    return int(key)


def _load_step(name: str, what: str, value: Any) -> float:
    """A saved step count: a finite number >= 0 (a 0-d array or tensor is converted)."""
    step = _scalar(value)
    if step is None:
        raise TypeError(f"{name}: {what} must be a finite number >= 0 (the number of steps "
                        f"taken); got {type(value).__name__} {value!r}.")
    if not math.isfinite(step) or step < 0:
        raise ValueError(f"{name}: {what} must be a finite number >= 0 (the number of steps "
                         f"taken); got {_shown(value)}.")
    return step


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

    The update is ``torch.optim.SGD``'s: with ``g = -grad`` if ``maximize``
    else ``grad``, then ``g += weight_decay * param``; with momentum,
    ``buf = g`` on the first step, else ``buf = momentum*buf + (1-dampening)*g``,
    and ``g = g + momentum*buf`` (Nesterov) or ``g = buf``; finally
    ``param -= lr * g``.

    Parameters
    ----------
    params : list of arrays, or list of dicts
        float32/float64 arrays, C-contiguous and writable (NumPy, 0-d included,
        CuPy, or DLPack CPU tensors such as torch tensors, updated in place; a
        NumPy scalar is immutable and refused), or
        parameter groups ``{"params": [...], "lr": ...}`` like torch.
    lr : float, optional
        Learning rate, >= 0 (default 1e-3).
    momentum, dampening, weight_decay : float, optional
        >= 0 each; default 0.
    nesterov : bool, optional
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    maximize : bool, optional
        Ascend instead of descend (keyword only).

    The positional order is ``torch.optim.SGD``'s: ``SGD(params, 0.1, 0.9, 0, 1e-4)`` is
    momentum 0.9 and weight decay 1e-4 in both.

    Examples
    --------
    >>> import numpy as np
    >>> from fastinterp.optim import SGD
    >>> w = np.array([1.0, -2.0])
    >>> opt = SGD([w], lr=0.1, momentum=0.9)
    >>> for _ in range(2):
    ...     opt.step([2 * w])          # the gradient of sum(w**2)
    >>> w
    array([ 0.46, -0.92])
    """

    _op = "sgd_step"
    _one_cpu, _many_cpu = staticmethod(_sgd_cpu), staticmethod(_sgd_many_cpu)
    _state_keys = _required_state = ("momentum_buffer",)

    def __init__(self, params: Params, lr: Number = 1e-3, momentum: Number = 0.0,
                 dampening: Number = 0.0, weight_decay: Number = 0.0, nesterov: bool = False,
                 *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay,
                                      maximize=maximize))

    def _check(self, group: dict[str, Any]) -> None:
        self._nonneg(group, "lr", "momentum", "dampening", "weight_decay")
        self._flags(group, "nesterov", "maximize")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: nesterov=True requires momentum > 0 and dampening == 0; "
                             f"got momentum={group['momentum']!r}, dampening={group['dampening']!r}.")

    def _buffers_used(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if float(group["momentum"]) != 0 else ()

    def _scalars(self, group: dict[str, Any]) -> tuple[Any, ...]:
        return (float(group["lr"]), float(group["momentum"]), float(group["dampening"]),
                float(group["weight_decay"]), bool(group["nesterov"]), bool(group["maximize"]))

    def _operands(self, i: int, param: Any, g: Any,
                  group: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        buf, first = param, False
        if float(group["momentum"]) != 0:
            buf, first = self._buffer(i, "momentum_buffer")
        return (param, g, buf), (first,)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, optional AMSGrad and weight decay.

    The update is ``torch.optim.Adam``'s: with ``g = -grad`` if ``maximize``
    else ``grad``, ``g += weight_decay * param`` (L2 penalty; AdamW instead
    scales ``param *= 1 - lr*weight_decay``), then ``m = lerp(m, g, 1-beta1)``,
    ``v = beta2*v + (1-beta2)*g*g``, ``vmax = max(vmax, v)`` (amsgrad), and
    ``param -= lr/(1-beta1**t) * m / (sqrt(v)/sqrt(1-beta2**t) + eps)``.

    Parameters
    ----------
    params : list of arrays, or list of dicts
        As for :class:`SGD`.
    lr : float, optional
        Learning rate, >= 0 (default 1e-3).
    betas : (float, float), optional
        Moment decay rates in [0, 1) (default (0.9, 0.999)).
    eps : float, optional
        Added to the denominator, >= 0 (default 1e-8).
    weight_decay : float, optional
        >= 0 (default 0).
    amsgrad, maximize : bool, optional

    Examples
    --------
    >>> import numpy as np
    >>> from fastinterp.optim import Adam
    >>> w = np.array([1.0, -2.0])
    >>> opt = Adam([w], lr=0.1)
    >>> opt.step([2 * w]); w          # the first step moves each entry by lr
    array([ 0.9, -1.9])
    >>> opt.state_dict()["state"][0]["step"]
    1.0
    """

    _op = "adam_step"
    _one_cpu, _many_cpu = staticmethod(_adam_cpu), staticmethod(_adam_many_cpu)
    _state_keys = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _required_state = ("step", "exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(self, params: Params, lr: Number = 1e-3,
                 betas: tuple[Number, Number] = (0.9, 0.999), eps: Number = 1e-8,
                 weight_decay: Number = 0.0, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _check(self, group: dict[str, Any]) -> None:
        self._nonneg(group, "lr", "eps", "weight_decay")
        self._flags(group, "amsgrad", "maximize")
        betas = group["betas"]
        try:
            if isinstance(betas, (str, bytes, bytearray, AbstractSet, Mapping)):
                raise TypeError     # no order (a set, a dict's keys), or not numbers
            betas = tuple(betas)    # (an iterator is read once)
            values = [_scalar(b) for b in betas]
        except TypeError:           # not a sequence
            values = []
        pair = [v for v in values if v is not None]
        if len(values) != 2 or len(pair) != 2:
            raise ValueError(f"{self._name}: betas must be two numbers in [0, 1) (Python "
                             f"numbers or 0-d arrays); got {group['betas']!r}.")
        for k, b in enumerate(pair):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{self._name}: betas[{k}] must be in [0, 1); got {b!r}.")
        group["betas"] = tuple(_kept(b, v) for b, v in zip(betas, pair))

    def _check_state(self, name: str, i: int, entry: dict[str, Any],
                     group: dict[str, Any]) -> None:
        super()._check_state(name, i, entry, group)
        if group["amsgrad"] and entry.get("max_exp_avg_sq") is None and any(
                v is not None for v in entry.values()):
            raise ValueError(f"{name}: state {i} must have key 'max_exp_avg_sq' (amsgrad=True "
                             f"in its group).")

    def _buffers_used(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())

    def _precheck(self, index: int, group: dict[str, Any]) -> None:
        st = self.state.get(index, {})
        if group["amsgrad"] and "step" in st and "max_exp_avg_sq" not in st:
            raise ValueError(f"{self._name}.step: amsgrad must be set before the first step; "
                             f"it was switched on after step {st['step']:g}.")

    def _step_size(self, index: int, group: dict[str, Any]) -> tuple[float, float]:
        """The next step's ``(step, lr / (1 - beta1**step))``."""
        step = float(self.state.get(index, {}).get("step", 0.0)) + 1.0
        return step, float(group["lr"]) / (1 - float(group["betas"][0]) ** step)

    def _derived_scalars(self, index: int, group: dict[str, Any]
                         ) -> tuple[tuple[Callable[[], str], float], ...]:
        step, step_size = self._step_size(index, group)
        return ((lambda: f"lr / (1 - beta1**step) at step {step:g}", step_size),)

    def _scalars(self, group: dict[str, Any]) -> tuple[Any, ...]:
        beta1, beta2 = (float(b) for b in group["betas"])
        return (float(group["lr"]), beta1, beta2, float(group["eps"]),
                float(group["weight_decay"]), self._decoupled, bool(group["amsgrad"]),
                bool(group["maximize"]))

    def _operands(self, i: int, param: Any, g: Any,
                  group: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        first = "step" not in self.state.get(i, {})
        m, _ = self._buffer(i, "exp_avg")
        v, _ = self._buffer(i, "exp_avg_sq")
        vmax = self._buffer(i, "max_exp_avg_sq")[0] if group["amsgrad"] else param
        step, step_size = self._step_size(i, group)
        bc2_sqrt = (1 - float(group["betas"][1]) ** step) ** 0.5
        return (param, g, m, v, vmax), (step_size, bc2_sqrt, first)

    def _stepped(self, index: int) -> None:
        st = self.state[index]
        st["step"] = float(st.get("step", 0.0)) + 1.0
        super()._stepped(index)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``.

    Identical to :class:`Adam` except that weight decay scales the parameter,
    ``param *= 1 - lr * weight_decay``, instead of adding to the gradient;
    the default ``weight_decay`` is 1e-2.

    Examples
    --------
    >>> import numpy as np
    >>> from fastinterp.optim import AdamW
    >>> w = np.array([1.0, -2.0])
    >>> AdamW([w], lr=0.1, weight_decay=0.5).step([2 * w]); w
    array([ 0.85, -1.8 ])
    """

    _decoupled = True

    def __init__(self, params: Params, lr: Number = 1e-3,
                 betas: tuple[Number, Number] = (0.9, 0.999), eps: Number = 1e-8,
                 weight_decay: Number = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)
