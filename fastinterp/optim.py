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
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _registry as registry
from ._config import threads_for
from ._dispatch import CUDA, Prepared, begin
from ._validate import _is_c_contiguous as _c_contiguous, float_dtype, shape_str

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]


# --- registry kernels ---------------------------------------------------------------

def _sgd_cpu(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov,
             maximize, first):
    from ._cpu import optim as cpu_optim
    cpu_optim.sgd_step(param, grad, buf, lr, momentum, dampening, weight_decay,
                       nesterov, maximize, first, threads_for(param.shape[0]))


def _adam_cpu(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
              weight_decay, decoupled, amsgrad, maximize, step_size, bc2_sqrt, first):
    from ._cpu import optim as cpu_optim
    cpu_optim.adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1,
                        beta2, eps, weight_decay, decoupled, amsgrad, maximize,
                        step_size, bc2_sqrt, first, threads_for(param.shape[0], 65536))


registry.register_builtin("sgd_step", _sgd_cpu, "fastinterp._cuda.optim:sgd_step")
registry.register_builtin("adam_step", _adam_cpu, "fastinterp._cuda.optim:adam_step")


# --- parameter handling ---------------------------------------------------------------

class _Param:
    """One parameter: the caller's object, the kernel's flat view, and how to allocate."""

    __slots__ = ("caller", "flat", "backend", "dtype", "shape", "prepared")

    def __init__(self, op: str, name: str, obj):
        if obj is None or not hasattr(obj, "shape"):
            raise TypeError(f"{op}: {name} must be an array; got {type(obj).__name__}.")
        prepared = begin(op, param=obj)
        arr = prepared.arrays["param"]
        self.dtype = float_dtype(op, name, arr)
        if not _c_contiguous(arr):
            raise ValueError(f"{op}: {name} must be C-contiguous (it is updated in place); "
                             f"got strides {tuple(arr.strides)}.")
        if isinstance(arr, np.ndarray) and not arr.flags.writeable:
            raise ValueError(f"{op}: {name} must be writable (it is updated in place); "
                             f"got a read-only array.")
        self.caller, self.backend, self.prepared = obj, prepared.backend, prepared
        self.shape = tuple(arr.shape)
        self.flat = arr.reshape(-1) if arr.ndim != 1 else arr

    def empty_like(self) -> tuple[Any, Any]:
        """An uninitialised state buffer shaped like the parameter: (caller, flat kernel view)."""
        caller, kern = self.prepared.empty(self.shape, self.dtype)
        return caller, (kern.reshape(-1) if len(self.shape) != 1 else kern)


def _flat(arr):
    return arr.reshape(-1) if len(arr.shape) != 1 else arr


def _copy_state(param: _Param, value, op: str, what: str):
    """A fresh state buffer for ``param`` holding a copy of ``value``: (caller, flat view)."""
    if tuple(value.shape) != param.shape:
        raise ValueError(f"{op}: state {what} must have shape {shape_str(param.shape)} like its "
                         f"parameter; got {shape_str(value.shape)}.")
    caller, flat = param.empty_like()
    if param.backend == CUDA:
        from ._cuda import optim as cuda_optim
        src = begin(op, value=value)
        if src.backend != CUDA:
            raise TypeError(f"{op}: state {what} must be a CUDA array like its parameter; "
                            f"got {type(value).__name__}.")
        cuda_optim.clone_into(flat, _flat(src.arrays["value"]))
    else:
        np.copyto(flat, np.asarray(value).reshape(-1), casting="same_kind")
    return caller, flat


# --- the base class -----------------------------------------------------------------

class Optimizer:
    """Base class: parameter groups, per-parameter state, state_dict round trips.

    Subclasses define ``_op`` (the registry op), ``_check(group)`` and
    ``_update(index, param, grad_flat, group)``.
    """

    _op = "optimizer"
    _state_keys: tuple[str, ...] = ()

    def __init__(self, params, defaults: dict):
        if hasattr(params, "shape") or isinstance(params, dict):
            raise TypeError(f"{self._name}: params must be a list of arrays or of parameter "
                            f"group dicts; got {type(params).__name__}.")
        groups = list(params)
        if not groups:
            raise ValueError(f"{self._name}: params must not be empty; got an empty list.")
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}
        self._params: list[_Param] = []
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _name(self) -> str:
        return type(self).__name__

    def add_param_group(self, group: dict) -> None:
        """Add a group: a dict with ``"params"`` (a list of arrays) and optional overrides."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{self._name}: a parameter group must be a dict with a 'params' "
                            f"list; got {type(group).__name__}.")
        arrays = group["params"]
        arrays = [arrays] if hasattr(arrays, "shape") else list(arrays)
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{self._name}: parameter group keys must be among "
                             f"{sorted(self.defaults)}; got {sorted(unknown)}.")
        full = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        self._check(full)
        start = len(self._params)
        for j, a in enumerate(arrays):
            if any(p.caller is a for p in self._params):
                raise ValueError(f"{self._name}: params[{start + j}] appears twice; each array "
                                 f"may be in one group only.")
            self._params.append(_Param(self._name, f"params[{start + j}]", a))
        full["params"] = arrays
        self.param_groups.append(full)

    # Validation helpers used by subclasses' _check.
    def _nonneg(self, group, *keys):
        for key in keys:
            value = group[key]
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(value) or value < 0:
                raise ValueError(f"{self._name}: {key} must be a finite number >= 0; got {value!r}.")

    def _check(self, group: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare_grads(self, grads) -> list:
        """Validate every gradient before any parameter changes; returns flat kernel views."""
        if hasattr(grads, "shape"):
            raise TypeError(f"{self._name}.step: grads must be a list of arrays, one per "
                            f"parameter; got a single {type(grads).__name__}.")
        grads = list(grads)
        if len(grads) != len(self._params):
            raise ValueError(f"{self._name}.step: grads must have one entry per parameter "
                             f"({len(self._params)}); got {len(grads)}.")
        for group in self.param_groups:
            self._check(group)
        flats = []
        for i, (p, g) in enumerate(zip(self._params, grads)):
            if g is None:
                flats.append(None)
                continue
            name = f"grads[{i}]"
            if not hasattr(g, "shape"):
                raise TypeError(f"{self._name}.step: {name} must be an array or None; "
                                f"got {type(g).__name__}.")
            prepared = begin(f"{self._name}.step", **{f"params[{i}]": p.caller, name: g})
            arr = prepared.arrays[name]
            dtype = float_dtype(f"{self._name}.step", name, arr)
            if dtype != p.dtype:
                raise TypeError(f"{self._name}.step: {name} must have the dtype of params[{i}] "
                                f"({p.dtype}); got {dtype}.")
            if tuple(arr.shape) != p.shape:
                raise ValueError(f"{self._name}.step: {name} must have the shape of params[{i}] "
                                 f"{shape_str(p.shape)}; got {shape_str(arr.shape)}.")
            if not _c_contiguous(arr):
                if p.backend == CUDA:
                    raise ValueError(f"{self._name}.step: {name} must be C-contiguous on CUDA; "
                                     f"got strides {tuple(arr.strides)}.")
                arr = np.ascontiguousarray(arr)  # copied once
            flats.append(_flat(arr))
        index = 0
        for group in self.param_groups:
            for _ in group["params"]:
                if flats[index] is not None:
                    self._precheck(index, group)
                index += 1
        return flats

    def _precheck(self, index: int, group: dict) -> None:
        """Raise before any update if parameter ``index`` cannot be stepped."""

    def step(self, grads) -> None:
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : list of arrays (or None)
            One gradient per parameter, in the order the parameters were given
            (group by group), each with its parameter's shape, dtype and
            device. ``None`` leaves that parameter and its state untouched.
            Everything is validated before any parameter changes.
        """
        flats = self._prepare_grads(grads)
        index = 0
        for group in self.param_groups:
            for _ in group["params"]:
                p, g = self._params[index], flats[index]
                if g is not None:
                    kernel = registry.lookup(self._op, p.backend, p.dtype)
                    kwargs = {"stream": p.prepared.stream} if p.backend == CUDA else {}
                    self._update(index, p, g, group, kernel, kwargs)
                index += 1

    # --- state_dict ---------------------------------------------------------------

    def state_dict(self) -> dict:
        """A snapshot of the state and hyper-parameters (``torch.optim`` layout).

        Returns ``{"state": {index: {...}}, "param_groups": [{..., "params":
        [indices]}]}``. The state arrays are copies (of the parameters' array
        type), so later steps do not change a saved snapshot.
        """
        state = {}
        for i, st in self.state.items():
            entry = {}
            for key, value in st.items():
                if key.startswith("_"):
                    continue
                entry[key] = self._copy_out(i, value) if hasattr(value, "shape") else value
            state[i] = entry
        groups, index = [], 0
        for group in self.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def _copy_out(self, i: int, value):
        caller, _ = _copy_state(self._params[i], value, self._name, "copy")
        return caller

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a snapshot made by :meth:`state_dict` (arrays are copied in).

        The groups must have the same sizes as this optimizer's; each state
        array must have its parameter's shape. Hyper-parameters are taken
        from the snapshot.
        """
        name = f"{self._name}.load_state_dict"
        try:
            groups, saved = state_dict["param_groups"], state_dict["state"]
        except (TypeError, KeyError):
            raise ValueError(f"{name}: state_dict must have 'state' and 'param_groups'; "
                             f"got {type(state_dict).__name__}.") from None
        ours = [len(g["params"]) for g in self.param_groups]
        theirs = [len(g["params"]) for g in groups]
        if ours != theirs:
            raise ValueError(f"{name}: group sizes must match this optimizer's {ours}; got {theirs}.")
        new_groups = []
        for mine, g in zip(self.param_groups, groups):
            full = {**mine, **{k: v for k, v in g.items() if k != "params"}}
            self._check(full)
            new_groups.append(full)
        new_state: dict[int, dict] = {}
        for key, st in saved.items():
            i = int(key)
            if not 0 <= i < len(self._params):
                raise ValueError(f"{name}: state index must be in [0, {len(self._params)}); got {i}.")
            entry = {}
            for k, v in st.items():
                if hasattr(v, "shape"):
                    entry[k], entry["_" + k] = _copy_state(self._params[i], v, name, repr(k))
                else:
                    entry[k] = v
            self._check_state(name, i, entry)
            new_state[i] = entry
        self.param_groups, self.state = new_groups, new_state

    def _check_state(self, name, i, entry) -> None:
        missing = [k for k in self._state_keys if k not in entry]
        if missing:
            raise ValueError(f"{name}: state {i} must have keys {list(self._state_keys)}; "
                             f"missing {missing}.")

    def _buffer(self, st: dict, key: str, p: _Param):
        """The flat kernel view of state buffer ``key``, allocated (uninitialised) if absent."""
        if key not in st:
            st[key], st["_" + key] = p.empty_like()
        return st["_" + key]

    def __repr__(self) -> str:
        lines = [f"{self._name} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])


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
        float32/float64 arrays, C-contiguous and writable (NumPy, CuPy, or
        DLPack CPU tensors such as torch tensors, updated in place), or
        parameter groups ``{"params": [...], "lr": ...}`` like torch.
    lr : float
        Learning rate, >= 0.
    momentum, dampening, weight_decay : float, optional
        >= 0 each; default 0.
    nesterov : bool, optional
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    maximize : bool, optional
        Ascend instead of descend.

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

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay,
                                      maximize=maximize))

    def _check(self, group):
        self._nonneg(group, "lr", "momentum", "dampening", "weight_decay")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: nesterov=True requires momentum > 0 and dampening == 0; "
                             f"got momentum={group['momentum']!r}, dampening={group['dampening']!r}.")

    def _check_state(self, name, i, entry):
        if "momentum_buffer" not in entry:
            raise ValueError(f"{name}: state {i} must have key 'momentum_buffer'.")

    def _update(self, i, p, g, group, kernel, kwargs):
        momentum = float(group["momentum"])
        buf, first = p.flat, False
        if momentum != 0:
            st = self.state.setdefault(i, {})
            first = "momentum_buffer" not in st
            buf = self._buffer(st, "momentum_buffer", p)
        kernel(p.flat, g, buf, float(group["lr"]), momentum, float(group["dampening"]),
               float(group["weight_decay"]), bool(group["nesterov"]),
               bool(group["maximize"]), first, **kwargs)


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
    _state_keys = ("step", "exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _check(self, group):
        self._nonneg(group, "lr", "eps", "weight_decay")
        betas = group["betas"]
        try:
            b1, b2 = (float(b) for b in betas)
        except (TypeError, ValueError):
            raise ValueError(f"{self._name}: betas must be two numbers in [0, 1); "
                             f"got {betas!r}.") from None
        for k, b in enumerate((b1, b2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{self._name}: betas[{k}] must be in [0, 1); got {b!r}.")

    def _check_state(self, name, i, entry):
        super()._check_state(name, i, entry)
        if self.param_groups and any(g["amsgrad"] for g in self.param_groups) \
                and "max_exp_avg_sq" not in entry:
            raise ValueError(f"{name}: state {i} must have key 'max_exp_avg_sq' (amsgrad=True).")

    def _precheck(self, index, group):
        st = self.state.get(index, {})
        if group["amsgrad"] and "step" in st and "max_exp_avg_sq" not in st:
            raise ValueError(f"{self._name}.step: amsgrad must be set before the first step; "
                             f"it was switched on after step {st['step']:g}.")

    def _update(self, i, p, g, group, kernel, kwargs):
        st = self.state.setdefault(i, {})
        first = "step" not in st
        amsgrad = bool(group["amsgrad"])
        m = self._buffer(st, "exp_avg", p)
        v = self._buffer(st, "exp_avg_sq", p)
        vmax = p.flat
        if amsgrad:
            vmax = self._buffer(st, "max_exp_avg_sq", p)
        step = float(st.get("step", 0.0)) + 1.0
        beta1, beta2 = (float(b) for b in group["betas"])
        lr = float(group["lr"])
        step_size = lr / (1 - beta1 ** step)
        bc2_sqrt = (1 - beta2 ** step) ** 0.5
        kernel(p.flat, g, m, v, vmax, lr, beta1, beta2, float(group["eps"]),
               float(group["weight_decay"]), self._decoupled, amsgrad,
               bool(group["maximize"]), step_size, bc2_sqrt, first, **kwargs)
        st["step"] = step


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

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)
