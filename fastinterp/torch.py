"""fastinterp's ops as differentiable PyTorch ops (autograd, ``torch.compile``, CUDA tensors).

``import fastinterp.torch as fit`` gives the functions of the NumPy-level API
with the same names and signatures, taking and returning torch tensors:
:func:`grid_sample` (2-D and 3-D), :func:`affine_grid` (2-D and 3-D),
:func:`resize` (alias :func:`interpolate`; 1-D, 2-D and 3-D data),
:func:`adaptive_avg_pool1d`, :func:`adaptive_avg_pool2d`,
:func:`adaptive_avg_pool3d`, :func:`pairwise_sqdist`, :func:`pairwise_l2`
(batched like ``torch.cdist``), :func:`lerp`, :func:`slerp`,
:func:`warp_affine`, :func:`warp_perspective` and :func:`rotate`. Each is a
``torch.library.custom_op`` in the ``fastinterp`` namespace
(``torch.ops.fastinterp.grid_sample`` ...) with a fake (meta) kernel and an
autograd formula, so

- ``y = fit.grid_sample(x, grid); y.sum().backward()`` fills ``x.grad`` and
  ``grid.grad`` from fastinterp's analytic, deterministic backward kernels;
- ``torch.compile(fullgraph=True)`` traces functions that call them (each op
  is one node of the graph; its backward is another);
- CPU tensors run the compiled CPU kernels on zero-copy NumPy views; CUDA
  tensors run the CUDA backend on the caller's current stream.

A frontend is thin: it converts, calls the NumPy-level op and its
``*_backward`` function, and converts back; values and gradients are exactly
those of the NumPy API, whose docstrings give the conventions. Only the
gradients that autograd asks for are computed. Gradients of gradients (double
backward) are not implemented and raise ``NotImplementedError`` naming the op.

Conventions of the frontend
---------------------------
- Argument errors are the NumPy API's (the same ValueError/TypeError and
  message), raised before anything is computed.
- ``out=`` works outside autograd only (as for torch's own ops): with an
  input that requires grad while grad mode is on it raises ``TypeError``.
  ``out`` must be a torch tensor that does not require grad and has neither
  the negative nor the conjugate bit set (``TypeError``, as in the NumPy API).
- Array arguments may be NumPy arrays, in every op and with or without
  autograd: each is read as a tensor on the device of the call's first tensor
  argument (the CPU if there is none; a writable CPU array is shared, not
  copied) and gets no gradient. Results are tensors.
- Options are the NumPy API's: ``layout=`` for images (batched or single),
  'constant' (with ``fill``, which gets no gradient) and 'wrap' padding,
  ``match=`` presets of resize. The presets and uint8 data are forward only
  (a gradient through a preset is a TypeError; torch itself keeps integer
  tensors from requiring grad). float16/bfloat16 tensors are computed in
  float32 and each gradient is rounded once, to its own input's dtype.
- Non-contiguous and channels-last tensors are accepted; the NumPy API copies
  a strided input once. ``resize`` and ``adaptive_avg_pool2d`` keep a
  channels-last CPU input's memory format in their result.
- In plain eager mode with no gradient to record (``torch.no_grad()``, or no
  input requiring grad), a call skips torch's dispatcher and runs the same
  implementation directly, so a tiny call costs a few microseconds over the
  NumPy API; under ``torch.compile``, tracing, ``vmap`` or a dispatch mode the
  registered op is called.

Examples
--------
>>> import torch, fastinterp.torch as fit
>>> x = torch.arange(4.0).reshape(1, 1, 2, 2).requires_grad_()
>>> grid = torch.zeros(1, 1, 1, 2, requires_grad=True)          # the image centre
>>> y = fit.grid_sample(x, grid, align_corners=True)
>>> y.sum().backward()
>>> y.detach(), x.grad.flatten(), grid.grad.flatten()
(tensor([[[[1.5000]]]]), tensor([0.2500, 0.2500, 0.2500, 0.2500]), tensor([0.5000, 1.0000]))
"""
from __future__ import annotations

import numbers
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad

try:        # functorch's internals (a torch without them runs no transform checks)
    from torch._C._functorch import TransformType as _TransformType
    from torch._functorch import pyfunctorch as _pyfunctorch
except ImportError:          # pragma: no cover
    _TransformType = _pyfunctorch = None

import fastinterp as _fi
from ._validate import (check_bool, check_option, check_overlap, real_float, shape_str,
                        symbolic)
from ._layout import Layout, from_channels_last, resolve as resolve_layout
from ._dispatch import (_dtype_name, _plain_tensor, _to_numpy, meta_tensor_error,
                        requires_grad_error)
from .blend import SLERP_NORMS, slerp_axis, weight_list
from .resize import MATCHES, _is_nd, _pool_size_k, _tuple_k, nd_shape_error
from .sample import _check_options, _check_size, check_align_corners, static_fill
from ._fpenv import ieee_subnormals
from .warp import _check_dsize, _rotate_rows, _warp_as, matrix_type_error

__all__ = ["adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "affine_grid",
           "grid_sample", "interpolate", "lerp", "pairwise_l2", "pairwise_sqdist", "resize",
           "rotate", "slerp", "warp_affine", "warp_perspective"]

_NUMPY_VIEWABLE = frozenset({torch.float16, torch.float32, torch.float64, torch.uint8})
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)
_C = torch._C


# --------------------------------------------------------------------------- plumbing

def _arg(t):
    """A tensor as the NumPy-level API takes it: a zero-copy NumPy view of a CPU tensor,
    else the detached tensor (CUDA tensors, and dtypes NumPy cannot view, whose error
    messages then come from the dispatcher). None and scalars pass through."""
    if not isinstance(t, Tensor):
        return t
    if t.requires_grad:
        t = t.detach()
    if t.is_cpu and t.dtype in _NUMPY_VIEWABLE:
        return (t.resolve_neg() if t.is_neg() else t).numpy()
    return t


def _tensor(r):
    """A NumPy-level result as a tensor (NumPy arrays are wrapped without a copy)."""
    if isinstance(r, np.ndarray):
        return torch.from_numpy(r)
    if isinstance(r, np.generic):
        return torch.from_numpy(np.asarray(r))
    return r


def _grad_needed(tensors) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad
                                           for t in tensors)


def _eager(tensors) -> bool:
    """True when a call may skip the dispatcher: eager mode, not traced, transformed or
    under a dispatch mode, and only plain tensors (not a functorch-wrapped one: the
    batched gradient of ``is_grads_batched``, which reaches a backward without an
    active transform)."""
    if (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or _C._len_torch_dispatch_stack() or _C._are_functorch_transforms_active()):
        return False
    return all(not isinstance(t, Tensor) or (type(t) in _PLAIN_TYPES and not t.is_meta
                                             and not _is_wrapped(t))
               for t in tensors)


_is_wrapped = getattr(_C._functorch, "is_functorch_wrapped_tensor", lambda t: False)


def _refuse_transforms(name, tensors):
    """Forward-mode AD (torch.func.jvp and jacfwd, torch.autograd.forward_ad) and
    torch.func's reverse-mode transforms (grad, jacrev, vjp) are a TypeError naming the
    op: torch drops a custom op's tangents silently (derivatives of exactly 0), and its
    own error for the others names no op. torch.func.vmap works."""
    if getattr(_forward_ad, "_current_level", -1) >= 0 and (
            torch.compiler.is_compiling() or any(
                isinstance(t, Tensor) and _forward_ad.unpack_dual(t).tangent is not None
                for t in tensors)):
        # while Dynamo traces, tangents are not visible (fake tensors carry none): a call
        # under an open dual level is refused outright there
        raise _forward_mode_error(name)
    if (_pyfunctorch is None or not _C._are_functorch_transforms_active()
            or torch.compiler.is_compiling()):
        return
    levels = {i.level(): i.key() for i in _pyfunctorch.retrieve_all_functorch_interpreters()
              if i.key() in (_TransformType.Jvp, _TransformType.Grad)}
    # only an argument that depends on the variable: data the transform does not
    # differentiate passes (its derivative is 0 anyway), as under torch.autograd
    kinds = {levels[lv] for t in tensors if isinstance(t, Tensor)
             for lv, wrapper in _wrappers(t) if lv in levels and _depends(levels[lv], wrapper)}
    if _TransformType.Jvp in kinds:
        raise _forward_mode_error(name)
    if _TransformType.Grad in kinds:
        raise TypeError(f"{name}: torch.func's grad, jacrev, vjp and hessian are not supported "
                        f"(the op's gradient is registered for torch.autograd): use "
                        f"torch.autograd.grad or .backward(); torch.func.vmap works.")


def _refuse_transforms_by_value(name, *values):
    """:func:`_refuse_transforms` for arguments read as numbers (``fill``, ``rotate``'s
    angle, centre and scale): a transform would see their derivative as 0."""
    found = []

    def collect(v):
        if isinstance(v, Tensor):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            for item in v:
                collect(item)
    for v in values:
        collect(v)
    if found:
        _refuse_transforms(name, found)


def _wrappers(t):
    """(functorch level, wrapper) of each wrapper around tensor ``t``, outermost first."""
    while _is_wrapped(t):
        yield _C._functorch.maybe_get_level(t), t
        t = _C._functorch.get_unwrapped(t)


def _depends(kind, wrapper) -> bool:
    """Whether a tensor wrapped at a grad or jvp level carries that level's derivative (a
    tangent that cannot be read, inside a vmap, counts as one)."""
    if kind == _TransformType.Grad:     # under no_grad/inference_mode nothing is recorded
        return wrapper.requires_grad and torch.is_grad_enabled()
    try:
        return _forward_ad.unpack_dual(wrapper).tangent is not None
    except RuntimeError:
        return True


def _forward_mode_error(name):
    return TypeError(f"{name}: forward-mode differentiation (torch.func.jvp, jacfwd, "
                     f"torch.autograd.forward_ad) is not implemented; use reverse mode "
                     f"(.backward(), torch.autograd.grad, or jacobian's default strategy).")


def _refuse_meta_beside_data(name, tensors):
    """Meta tensors run with meta tensors only (shape propagation through the ops' fake
    kernels); beside a tensor that holds data, torch's dispatcher would run the fake
    kernel and hand back its uninitialised result as the answer."""
    given = [t for t in tensors if isinstance(t, Tensor)]
    meta = next((t for t in given if t.is_meta), None)
    real = next((t for t in given if not t.is_meta), None)
    if meta is not None and real is not None:
        raise TypeError(f"{name}: got a torch meta tensor (which holds no data; shape "
                        f"{shape_str(tuple(meta.shape))}) beside a tensor on "
                        f"{real.device.type}; meta tensors run only with meta tensors.")


def _call(name, op, direct, args, tensors, out, op_args=None):
    """Run one public call and return its result (``out``, filled, if given).

    The registered custom ``op`` runs on ``op_args(*args)`` (default: ``args``).
    In plain eager mode the same computation skips torch's dispatcher: without
    a gradient to record, ``direct(*args, out=out)`` (the op's body) runs as is;
    with one, the op's eager autograd.Function (same body, same backward). Its
    argument errors are the direct path's (the NumPy API's, in its order of checks).
    """
    _refuse_transforms(name, tensors)
    _refuse_meta_beside_data(name, tensors)
    if out is not None:
        _check_out(name, out)
    needs_grad = _grad_needed(tensors)
    if out is not None and needs_grad:
        raise TypeError(f"{name}: out= does not support automatic differentiation; got an "
                        f"input with requires_grad=True while grad mode is on: call it under "
                        f"torch.no_grad() or drop out=.")
    eager = _eager(tensors)
    if eager and not needs_grad:
        if out is None:
            return direct(*args)
        direct(*args, out=out)
        # written through a NumPy view: tell autograd, as torch's own out= ops do (a graph
        # that saved out's old values then raises instead of using the new ones)
        torch.autograd.graph.increment_version(out)
        return out
    try:
        op_in = args if op_args is None else op_args(*args)
        result = _EAGER_AUTOGRAD[op].apply(*op_in) if eager else op(*op_in)
    except (TypeError, ValueError):
        if eager:           # the message the same arguments get without a gradient
            direct(*(a.detach() if isinstance(a, Tensor) else a for a in args))
        raise
    if out is None:
        return result
    if tuple(out.shape) != tuple(result.shape) or out.dtype != result.dtype:
        raise ValueError(f"{name}: out must have shape {shape_str(result.shape)} and dtype "
                         f"{result.dtype}; got {shape_str(out.shape)} and {out.dtype}.")
    return out.copy_(result)


def _check_out(op, out):
    """``out=`` as the NumPy API takes it, checked before the zero-copy view that
    :func:`_arg` makes of it would hide its flags: a torch tensor that does not
    require grad and has neither the negative nor the conjugate bit (a result
    written through such a view would land in a copy)."""
    if not isinstance(out, Tensor):
        raise TypeError(f"{op}: out must be a torch tensor; got {_type_name(out)}.")
    if torch.compiler.is_compiling():    # Dynamo cannot trace is_neg/is_conj (a graph
        if out.requires_grad:            # break); the bits are checked in eager calls
            raise requires_grad_error(op, "out")
        return
    _plain_tensor(op, "out", out, writable=True)     # (inference tensors included)


def _type_name(value):
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _tensors(op, names, *values):
    """The array arguments of one call (``values``, named by the space-separated ``names``),
    NumPy arrays and nested lists or tuples of numbers (read as the NumPy API reads them)
    as tensors on the device of the first tensor among them (the CPU if there is none; a
    writable CPU array is shared, not copied). They get no gradient. Other values
    (tensors, numbers, None, a weight ``t`` given as a list: see _as_tensor_like) pass
    through."""
    values = tuple(_list_as_numpy(op, name, v) for name, v in zip(names.split(), values))
    if not any(isinstance(v, np.ndarray) for v in values):
        return values
    like = next((v for v in values if isinstance(v, Tensor)), None)
    device = None if like is None else like.device
    return tuple(_from_numpy(op, name, v, device) if isinstance(v, np.ndarray) else v
                 for name, v in zip(names.split(), values))


def _autocast_fp32(*values):
    """Under ``torch.autocast``, half-precision tensors as float32, for the ops whose torch
    counterparts autocast runs in float32 (``grid_sampler``, ``cdist``: grid_sample, the
    warps, the pairwise distances), so that they give torch's dtypes there; other values
    and calls outside autocast unchanged."""
    like = next((v for v in values if isinstance(v, Tensor)), None)
    if like is None or like.device.type not in ("cpu", "cuda") or \
            not torch.is_autocast_enabled(like.device.type):     # (meta has no autocast)
        return values
    return tuple(v.float() if isinstance(v, Tensor) and v.dtype in _HALF else v
                 for v in values)


def _list_as_numpy(op, name, value):
    """A list or tuple array argument as the NumPy API reads it (``np.asarray``; a ragged
    one is its ValueError; one of strings a NumPy array that :func:`_from_numpy` names);
    the weight ``t`` stays as it is, for the op reads it in its operands' dtype."""
    if not isinstance(value, (list, tuple)) or name == "t":
        return value
    return _to_numpy(value, "list", op, name)


def _from_numpy(op, name, a, device):
    if not a.flags.writeable or not a.dtype.isnative or any(s < 0 for s in a.strides):
        # a copy torch may share (torch holds no negative strides)
        a = np.array(a, dtype=a.dtype.newbyteorder("="), order="C")      # (always a copy)
    try:
        if a.dtype.name == "bfloat16":                     # ml_dtypes' bfloat16: torch's
            t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(a)
    except TypeError:
        raise TypeError(f"{op}: {name} must be a torch tensor or a NumPy array of a dtype torch "
                        f"holds; got numpy.ndarray of dtype {a.dtype}.") from None
    return t if device is None else t.to(device)


def _empty_like_missing(grad, like):
    """A gradient the caller did not ask for, as an empty tensor (custom ops return tensors)."""
    return like.new_empty(0) if grad is None else grad


def _grad_or_none(grad, needed):
    return grad if needed else None


def _sum_to(grad, like):
    """``grad`` summed over the axes that broadcasting added or stretched to reach it."""
    if grad is None or tuple(grad.shape) == tuple(like.shape):
        return grad
    return grad.sum_to_size(like.shape)


def _no_double_backward(name):
    """The backward op's autograd formula: an error naming the forward op (``name``, or
    ``name(inputs)`` for one backward op serving several public ops)."""
    def backward(ctx, *grads):
        raise NotImplementedError(
            f"{getattr(ctx, 'op_name', name)}: double backward (the gradient of a gradient) is "
            f"not implemented: fastinterp's backward ops are not themselves differentiable.")
    return backward


def _no_setup(ctx, inputs, output):
    pass


_BODY: dict = {}             # custom op -> the Python function it runs
_EAGER_AUTOGRAD: dict = {}   # forward op -> the autograd.Function eager calls use (see _call)


def _custom_op(name):
    """Decorator: register ``fn`` as the custom op ``fastinterp::name`` (no mutation)."""
    def register(fn):
        op = torch.library.custom_op(f"fastinterp::{name}", mutates_args=())(fn)
        _BODY[op] = fn
        return op
    return register


def _invoke(op, *args):
    """Call a backward op: its body directly when no graph is being recorded in plain
    eager mode (the usual backward pass), else through the dispatcher (so that
    ``create_graph=True`` records the node whose backward raises, and tracing sees it)."""
    if op is not _lerp_bwd_op and any(isinstance(a, Tensor) and _is_legacy_batched(a)
                                      for a in args):
        raise TypeError(f"{_forward_name(op, args)}: batched gradients "
                        f"(torch.autograd.grad(..., is_grads_batched=True), "
                        f"jacobian(..., vectorize=True)) are not supported: its backward runs "
                        f"a compiled kernel on one gradient at a time (use vectorize=False, or "
                        f"torch.func.vmap over the whole computation).")
    if not torch.is_grad_enabled() and _eager(args):
        return _BODY[op](*args)
    return op(*args)


_is_legacy_batched = getattr(_C._functorch, "is_legacy_batchedtensor", lambda t: False)


def _eager_autograd(op, setup, backward):
    """An autograd.Function running ``op``'s body with ``op``'s own setup and backward:
    what the registered op does under autograd, without the dispatcher's overhead.
    (Old-style ``forward(ctx, ...)``: ``apply`` then skips binding the signature.)"""
    body = _BODY[op]

    def forward(ctx, *args):
        output = body(*args)
        setup(ctx, args, output)
        return output

    def backward_(ctx, *grads):
        return backward(ctx, *(_dense(g) for g in grads))

    # named when the class is made: autograd names the grad_fn class after it then
    # (FastinterpGridSampleBackward, as torch's GridSampler2DBackward0), which anomaly
    # mode and graph dumps show
    name = "Fastinterp" + "".join(part.title() for part in op._name.split("_"))
    return type(name, (torch.autograd.Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward_),
                 "__module__": __name__, "__qualname__": name})


def _dense(grad):
    """An expanded gradient (a zero stride: ``y.sum().backward()`` sends ones expanded to
    y's shape) as a contiguous tensor: the NumPy API copies a strided array once anyway,
    and a contiguous one takes its call plans (a tiny call then costs a third less)."""
    if isinstance(grad, Tensor) and 0 in grad.stride() and not grad.is_contiguous():
        return grad.contiguous()
    return grad


_FORWARD_NAME: dict = {}     # backward op -> its public op's name, or name(*inputs)


def _forward_name(op, inputs):
    """The public op a backward ``op`` called with ``inputs`` serves, for its errors."""
    name = _FORWARD_NAME.get(op)
    if callable(name):
        return name(*inputs)
    return name or op._name.removesuffix("_backward")


def _register(op, fake, backward=None, setup=None, name=None):
    """Attach the fake kernel and the autograd formula (or, for a backward op, the
    double-backward error naming the forward ``name``)."""
    op.register_fake(fake)
    if backward is None:
        _FORWARD_NAME[op] = name
        if callable(name):
            def setup(ctx, inputs, output):
                ctx.op_name = _forward_name(op, inputs)
            op.register_autograd(_no_double_backward(None), setup_context=setup)
        else:
            op.register_autograd(_no_double_backward(name), setup_context=_no_setup)
    else:
        op.register_autograd(backward, setup_context=setup)
        _EAGER_AUTOGRAD[op] = _eager_autograd(op, setup, backward)
    return op


def _fake_rank(op, name, t, ndims, layout):
    if t.dim() not in ((ndims,) if isinstance(ndims, int) else ndims):
        raise ValueError(f"{op}: {name} must have shape {layout}; got {shape_str(t.shape)}.")


def _as_tensor_like(value, like, name, op, weight=False):
    """A non-tensor argument as a tensor on ``like``'s device, read as the NumPy API reads
    it: a Python or NumPy number (bools refused, range checked; symbolic under tracing)
    in the dtype ``like`` computes in (float32 for half tensors, whose storage the NumPy
    API widens); NumPy arrays, lists and tuples as ``np.asarray`` gives them, dtype kept,
    so that the op checks their dtype as the NumPy API does, except that a ``weight``
    (lerp's and slerp's t) given as a list or tuple is read in the compute dtype too."""
    if isinstance(value, Tensor):
        return value
    compute = torch.float32 if like.dtype in _HALF else like.dtype
    if isinstance(value, _NUMBERS) and compute in _NUMPY_FLOAT:
        wide = real_float(op, name, value, _NUMPY_FLOAT[compute])
        return torch.scalar_tensor(wide, dtype=compute, device=like.device)
    if value is None or isinstance(value, (bool, np.bool_, str, bytes)):
        real_float(op, name, value, np.float64)     # the NumPy API's TypeError
    if weight and isinstance(value, (list, tuple)) and compute in _NUMPY_FLOAT:
        return torch.as_tensor(weight_list(op, value, _NUMPY_FLOAT[compute]), device=like.device)
    try:
        return _from_numpy(op, name, np.asarray(value), like.device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{op}: {name} must be a real number or an array; got "
                        f"{type(value).__name__} {value!r}.") from None


_NUMPY_FLOAT = {torch.float32: np.float32, torch.float64: np.float64}
_NUMBERS = (numbers.Number, torch.SymInt, torch.SymFloat)


def _first_tensor(op, **named):
    for value in named.values():
        if isinstance(value, Tensor):
            return value
    raise TypeError(f"{op}: {' or '.join(named)} must be a torch tensor; got "
                    + ", ".join(_type_name(v) for v in named.values()) + ".")


# --------------------------------------------------------------------------- half precision

_HALF = (torch.float16, torch.bfloat16)


def _up(t):
    """A half-precision tensor as float32 for the backward kernels (float32 accumulation,
    the NumPy API's backward passes take float32/float64), others unchanged."""
    return t.float() if isinstance(t, Tensor) and t.dtype in _HALF else t


def _down(g, like):
    """A gradient back in ``like``'s dtype (a half input gets a half gradient)."""
    return g.to(like.dtype) if isinstance(g, Tensor) and g.dtype != like.dtype else g


def _fill_list(op, fill):
    """``fill`` as the custom ops' schema takes it: None, or a list of floats (a scalar as
    one entry, which the NumPy API's rule gives every channel)."""
    _refuse_transforms_by_value(op, fill)
    if isinstance(fill, Tensor):
        if fill.is_meta:
            raise meta_tensor_error(op, "fill", fill)
        fill = fill.detach().cpu()
    fill = static_fill(op, fill)
    fill = None if fill is None else list(fill) if isinstance(fill, tuple) else [fill]
    if fill is not None and any(map(symbolic, fill)):
        raise TypeError(f"{op}: fill must not be computed from a symbolic size while "
                        f"make_fx or torch.export traces (the op's fill is a constant of the "
                        f"graph: the traced value would be kept for every size); compute "
                        f"it outside the traced function.")
    return fill


def _fill_arg(fill):
    return fill[0] if fill is not None and len(fill) == 1 else fill


# --------------------------------------------------------------------------- grid_sample

def _grid_sample_direct(input, grid, mode, padding_mode, align_corners, layout, fill, out=None):
    return _tensor(_fi.grid_sample(_arg(input), _arg(grid), mode, padding_mode, align_corners,
                                   out=_arg(out), fill=_fill_arg(fill), layout=layout))


@_custom_op("grid_sample")
def _grid_sample_op(input: Tensor, grid: Tensor, mode: str, padding_mode: str,
                    align_corners: bool, layout: Optional[str],
                    fill: Optional[list[float]]) -> Tensor:
    return _grid_sample_direct(input, grid, mode, padding_mode, align_corners, layout, fill)


def _grid_sample_fake(input, grid, mode, padding_mode, align_corners, layout, fill):
    op = "grid_sample"
    if input.dim() == 5:
        _fake_rank(op, "grid", grid, 5, "(N, D_out, H_out, W_out, 3)")
        return input.new_empty((grid.shape[0], input.shape[1], *grid.shape[1:4]))
    lay = resolve_layout(op, "input", input, layout)
    n, c, _, _ = lay.split(input.shape)
    _fake_rank(op, "grid", grid, 4 if lay.batched else 3, "(N, H_out, W_out, 2)")
    return input.new_empty(lay.join(grid.shape[0] if lay.batched else 1, c,
                                    grid.shape[-3], grid.shape[-2]))


@_custom_op("grid_sample_backward")
def _grid_sample_bwd_op(grad_output: Tensor, input: Tensor, grid: Tensor, mode: str,
                        padding_mode: str, align_corners: bool, layout: Optional[str],
                        fill: Optional[list[float]], needs_input_grad: bool,
                        needs_grid_grad: bool) -> tuple[Tensor, Tensor]:
    gi, gg = _fi.grid_sample_backward(_arg(_up(grad_output)), _arg(_up(input)), _arg(_up(grid)),
                                      mode, padding_mode, align_corners, needs_input_grad,
                                      needs_grid_grad, fill=_fill_arg(fill), layout=layout)
    return (_empty_like_missing(_down(_tensor(gi), input), input),
            _empty_like_missing(_down(_tensor(gg), grid), grid))


def _grid_sample_bwd_fake(grad_output, input, grid, mode, padding_mode, align_corners, layout,
                          fill, needs_input_grad, needs_grid_grad):
    gi = input.new_empty(input.shape if needs_input_grad else (0,))
    gg = grid.new_empty(grid.shape if needs_grid_grad else (0,))
    return gi, gg


def _needed(ctx, count):
    """Which of the first ``count`` inputs' gradients this backward pass uses: those that
    required grad in the forward, less those the running pass does not reach
    (``torch.autograd.grad(y, x)`` or ``backward(inputs=...)`` of one of them). Where
    the engine cannot tell (a compiled backward), every one that required grad."""
    needs = tuple(ctx.needs_input_grad[:count])
    try:
        edges = ctx.next_functions
    except (AttributeError, RuntimeError):
        return needs
    return tuple(need and _engine_runs(edge[0]) for need, edge in zip(needs, edges))


def _engine_runs(node) -> bool:
    if node is None:
        return False
    try:
        return bool(_C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):   # a leaf captured by inputs=, or no engine
        return True


def _two_tensor_autograd(backward_op):
    """(setup, backward) of an op whose first two inputs take gradients and whose other
    inputs are options: ``backward_op(grad, a, b, *options, need_a, need_b) -> (ga, gb)``."""
    def setup(ctx, inputs, output):
        a, b, *options = inputs
        ctx.save_for_backward(a, b)
        ctx.options = tuple(options)

    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        need_a, need_b = _needed(ctx, 2)
        ga, gb = _invoke(backward_op, grad, a, b, *ctx.options, need_a, need_b)
        return (_grad_or_none(ga, need_a), _grad_or_none(gb, need_b)) + (None,) * len(ctx.options)

    return setup, backward


_grid_sample_setup, _grid_sample_backward = _two_tensor_autograd(_grid_sample_bwd_op)
_register(_grid_sample_op, _grid_sample_fake, _grid_sample_backward, _grid_sample_setup)
_register(_grid_sample_bwd_op, _grid_sample_bwd_fake, name="grid_sample")


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False,
                out=None, channels_last=None, fill=None, *, layout=None):
    """Differentiable :func:`fastinterp.grid_sample` (PyTorch's ``F.grid_sample``, 2-D and 3-D).

    Parameters and values as :func:`fastinterp.grid_sample`: images in any
    ``layout``, 5-D volumes (N, C, D, H, W) with grids (N, D_out, H_out,
    W_out, 3) (CPU), paddings 'zeros', 'border', 'reflection', 'constant'
    (with ``fill``, no gradient for it) and 'wrap', uint8 (forward only) and
    float16/bfloat16 inputs (gradients computed in float32, returned in the
    input's dtype). Gradients flow to ``input`` and ``grid`` (see
    :func:`fastinterp.grid_sample_backward`: analytic, deterministic,
    PyTorch's conventions at clipped points). ``channels_last`` is deprecated
    (FutureWarning): use ``layout="NHWC"``.

    Examples
    --------
    >>> import torch, fastinterp.torch as fit
    >>> x = torch.rand(2, 3, 8, 8)
    >>> theta = torch.tensor([[[1.0, 0, 0], [0, 1, 0]]]).repeat(2, 1, 1).requires_grad_()
    >>> y = fit.grid_sample(x, fit.affine_grid(theta, (2, 3, 8, 8)))
    >>> y.square().sum().backward()
    >>> theta.grad.shape
    torch.Size([2, 2, 3])
    """
    op = "grid_sample"
    input, grid = _autocast_fp32(*_tensors(op, "input grid", input, grid))
    _uint8_forward_only(op, input, {"grid": grid})
    align = _check_options(op, mode, padding_mode, align_corners)
    layout = from_channels_last(op, layout, channels_last)
    return _call(op, _grid_sample_op, _grid_sample_direct,
                 (input, grid, mode, padding_mode, align, layout, _fill_list(op, fill)),
                 (input, grid), out)


# --------------------------------------------------------------------------- affine_grid

def _affine_grid_direct(theta, size, align_corners, out=None):
    return _tensor(_fi.affine_grid(_arg(theta), size, align_corners, out=_arg(out)))


@_custom_op("affine_grid")
def _affine_grid_op(theta: Tensor, size: list[int], align_corners: bool) -> Tensor:
    return _affine_grid_direct(theta, size, align_corners)


def _affine_grid_fake(theta, size, align_corners):
    return theta.new_empty((size[0], *size[2:], len(size) - 2))


@_custom_op("affine_grid_backward")
def _affine_grid_bwd_op(grad_grid: Tensor, size: list[int], align_corners: bool) -> Tensor:
    return _down(_tensor(_fi.affine_grid_backward(_arg(_up(grad_grid)), size, align_corners)),
                 grad_grid)


def _affine_grid_bwd_fake(grad_grid, size, align_corners):
    k = len(size) - 2
    return grad_grid.new_empty((size[0], k, k + 1))


def _affine_grid_setup(ctx, inputs, output):
    ctx.size, ctx.align_corners = inputs[1], inputs[2]


def _affine_grid_backward(ctx, grad):
    return _invoke(_affine_grid_bwd_op, grad, ctx.size, ctx.align_corners), None, None


_register(_affine_grid_op, _affine_grid_fake, _affine_grid_backward, _affine_grid_setup)
_register(_affine_grid_bwd_op, _affine_grid_bwd_fake, name="affine_grid")


def affine_grid(theta, size, align_corners=False, out=None):
    """Differentiable :func:`fastinterp.affine_grid` (PyTorch's ``F.affine_grid``, 2-D and 3-D).

    ``theta`` (N, 2, 3) with ``size`` (N, C, H, W), or (N, 3, 4) with
    (N, C, D, H, W), as :func:`fastinterp.affine_grid`;
    the gradient flows to ``theta`` (:func:`fastinterp.affine_grid_backward`).

    Examples
    --------
    >>> import torch, fastinterp.torch as fit
    >>> theta = torch.tensor([[[1.0, 0, 0], [0, 1, 0]]], requires_grad=True)
    >>> fit.affine_grid(theta, (1, 1, 2, 2), align_corners=True)[0, 0].detach()
    tensor([[-1., -1.],
            [ 1., -1.]])
    """
    op = "affine_grid"
    (theta,) = _tensors(op, "theta", theta)
    align = check_align_corners(op, align_corners)
    dims = list(_check_size(op, size))
    return _call(op, _affine_grid_op, _affine_grid_direct, (theta, dims, align), (theta,), out)


# --------------------------------------------------------------------------- resize and pooling

def _keeps_channels_last(x, layout) -> bool:
    """Whether the NumPy API returns an NCHW-shaped result stored channels-last for ``x``
    (a CPU input stored NHWC); the fake kernels mirror it."""
    return (x.dim() == 4 and not x.is_contiguous() and layout in (None, "NCHW") and x.is_cpu
            and x.permute(0, 2, 3, 1).is_contiguous())


def _spatial(op, name, t, layout):
    """``(lay, (N, C), spatial sizes)`` of an image op's array: ``lay`` is None for 1-D
    (N, C, L) and volume (N, C, D, H, W) data, else the resolved image Layout."""
    if _is_nd(t, layout):
        return None, tuple(t.shape[:2]), tuple(t.shape[2:])
    lay = resolve_layout(op, name, t, layout)
    n, c, h, w = lay.split(t.shape)
    return lay, (n, c), (h, w)


def _new_image(like, lay, nc, sp):
    """An empty result of an image op, in the layout and memory format the op returns."""
    if lay is None:
        return like.new_empty((*nc, *sp))
    shape = lay.join(*nc, *sp)
    if _keeps_channels_last(like, lay.name):
        n, c, h, w = shape
        return like.new_empty((n, h, w, c)).permute(0, 3, 1, 2)
    return like.new_empty(shape)


def _in_layout_of(like, layout, result):
    """``result`` in the memory format the fake kernel promised (it already is, normally)."""
    if result.dim() == 4 and _keeps_channels_last(like, layout):
        if not result.permute(0, 2, 3, 1).is_contiguous():
            return result.contiguous(memory_format=torch.channels_last)
        return result
    return result if result.is_contiguous() else result.contiguous()


def _resize_direct(input, size, scale_factor, mode, align_corners, antialias,
                   recompute_scale_factor, layout, match, out=None):
    r = _fi.resize(_arg(input), size, scale_factor, mode, align_corners, antialias, _arg(out),
                   recompute_scale_factor=recompute_scale_factor, layout=layout, match=match)
    return _tensor(r) if out is not None else _in_layout_of(input, layout, _tensor(r))


@_custom_op("resize")
def _resize_op(input: Tensor, size: Optional[list[int]], scale_factor: Optional[list[float]],
               mode: str, align_corners: Optional[bool], antialias: bool,
               recompute_scale_factor: Optional[bool], layout: Optional[str],
               match: str) -> Tensor:
    return _resize_direct(input, size, scale_factor, mode, align_corners, antialias,
                          recompute_scale_factor, layout, match)


def _resize_out(sp, size, scale_factor):
    """The output size as the NumPy API derives it (symbolic sizes allowed)."""
    if size is not None:
        return tuple(size)
    return tuple(torch.sym_int(torch.sym_float(n) * s) if isinstance(n, torch.SymInt)
                 else int(np.floor(float(n) * s)) for n, s in zip(sp, scale_factor))


def _resize_fake(input, size, scale_factor, mode, align_corners, antialias,
                 recompute_scale_factor, layout, match):
    lay, nc, sp = _spatial("resize", "input", input, layout)
    return _new_image(input, lay, nc, _resize_out(sp, size, scale_factor))


@_custom_op("resize_backward")
def _resize_bwd_op(grad_output: Tensor, input_size: list[int],
                   scale_factor: Optional[list[float]], mode: str, align_corners: Optional[bool],
                   antialias: bool, recompute_scale_factor: Optional[bool],
                   layout: Optional[str]) -> Tensor:
    r = _fi.resize_backward(_arg(_up(grad_output)), input_size, scale_factor, mode,
                            align_corners, antialias, recompute_scale_factor=recompute_scale_factor,
                            layout=layout)
    return _down(_in_layout_of(grad_output, layout, _tensor(r)), grad_output)


def _image_bwd_fake(grad_output, input_size, layout):
    lay, nc, sp = _spatial("backward", "input_size", grad_output.new_empty(input_size), layout)
    return _new_image(grad_output, lay, nc, sp)


def _resize_bwd_fake(grad_output, input_size, scale_factor, mode, align_corners, antialias,
                     recompute_scale_factor, layout):
    return _image_bwd_fake(grad_output, input_size, layout)


def _resize_setup(ctx, inputs, output):
    input, size, *options = inputs
    ctx.input_size = list(input.shape)
    ctx.options = tuple(options[:-1])          # match='torch' (the only one with a gradient)


def _resize_backward(ctx, grad):
    return (_invoke(_resize_bwd_op, grad, ctx.input_size, *ctx.options),) + (None,) * 8


_register(_resize_op, _resize_fake, _resize_backward, _resize_setup)
_register(_resize_bwd_op, _resize_bwd_fake, name="resize")


def _forward_only(op, what, tensors, instead="use match='torch'"):
    """The error for a gradient through an option or dtype that has none (the presets,
    uint8 images): ``tensors`` maps argument names to the tensors that would need one,
    and the message names the first that does; ``instead`` says what to do."""
    if _grad_needed(tensors.values()):
        name = next(n for n, t in tensors.items() if isinstance(t, Tensor) and t.requires_grad)
        raise TypeError(f"{op}: {what} has no gradient (forward only); got {name} with "
                        f"requires_grad=True while grad mode is on: detach it, call under "
                        f"torch.no_grad(), or {instead}.")


def _uint8_forward_only(op, image, others):
    """uint8 images are forward only: a gradient asked of the other inputs (``others``:
    name -> tensor, a grid, a warp matrix) through one is the TypeError of
    :func:`_forward_only` (torch itself keeps the integer image from requiring grad)."""
    if isinstance(image, Tensor) and image.dtype == torch.uint8:
        _forward_only(op, "a uint8 image", others,
                      "convert the image to a float dtype for gradients")


def resize(input, size=None, scale_factor=None, mode="bilinear", align_corners=None,
           antialias=False, out=None, *, recompute_scale_factor=None, layout=None,
           match="torch"):
    """Differentiable :func:`fastinterp.resize`; values equal ``F.interpolate``.

    Parameters as :func:`fastinterp.resize` (note the default mode is
    'bilinear'): images in any ``layout``, 1-D (N, C, L) and 3-D
    (N, C, D, H, W) data, mode 'lanczos', uint8 and float16/bfloat16 inputs.
    The gradient flows to ``input`` (:func:`fastinterp.resize_backward`, the
    exact adjoint of the forward; float32 arithmetic for half inputs).
    ``match='opencv'``/``'pil'`` and uint8 are forward only: a gradient
    through them is a TypeError.

    Examples
    --------
    >>> import torch, fastinterp.torch as fit
    >>> x = torch.ones(1, 1, 2, 2, requires_grad=True)
    >>> fit.resize(x, size=4, mode="bilinear").sum().backward()
    >>> x.grad[0, 0]
    tensor([[4., 4.],
            [4., 4.]])
    """
    op = "resize"
    (input,) = _tensors(op, "input", input)
    check_option(op, "match", match, MATCHES)
    if match != "torch":
        _forward_only(op, f"match={match!r}", {"input": input})
    if recompute_scale_factor is not None:
        recompute_scale_factor = check_bool(op, "recompute_scale_factor", recompute_scale_factor)
    args = (input, size, scale_factor, mode, align_corners, antialias, recompute_scale_factor,
            layout, match)
    return _call(op, _resize_op, _resize_direct, args, (input,), out, _resize_op_args)


def _resize_op_args(input, size, scale_factor, *options):
    """``resize``'s arguments as the custom op's schema takes them: ``size`` and
    ``scale_factor`` as one entry per spatial axis (the direct path leaves that to the
    NumPy API)."""
    if isinstance(input, Tensor):
        op, layout = "resize", options[-2]
        _, _, sp = _spatial(op, "input", input, layout)
        if size is not None:
            size = list(_tuple_k(op, "size", size, "int", len(sp)))
        if scale_factor is not None:
            scale_factor = list(_tuple_k(op, "scale_factor", scale_factor, "float", len(sp)))
    return (input, size, scale_factor, *options)


interpolate = resize


def _pool_direct(input, output_size, layout, out=None):
    if input.dim() == 3 and layout is None:
        r = _fi.adaptive_avg_pool1d(_arg(input), output_size, _arg(out))
    elif input.dim() == 5:
        r = _fi.adaptive_avg_pool3d(_arg(input), output_size, _arg(out))
    else:
        r = _fi.adaptive_avg_pool2d(_arg(input), output_size, _arg(out), layout=layout)
    return _tensor(r) if out is not None else _in_layout_of(input, layout, _tensor(r))


@_custom_op("adaptive_avg_pool")
def _pool_op(input: Tensor, output_size: list[int], layout: Optional[str]) -> Tensor:
    return _pool_direct(input, output_size, layout)


def _pool_fake(input, output_size, layout):
    lay, nc, _ = _spatial("adaptive_avg_pool", "input", input, layout)
    return _new_image(input, lay, nc, tuple(output_size))


@_custom_op("adaptive_avg_pool_backward")
def _pool_bwd_op(grad_output: Tensor, input_size: list[int], layout: Optional[str]) -> Tensor:
    g = _arg(_up(grad_output))
    if len(input_size) == 3 and layout is None:
        r = _fi.adaptive_avg_pool1d_backward(g, input_size)
    elif len(input_size) == 5:
        r = _fi.adaptive_avg_pool3d_backward(g, input_size)
    else:
        r = _fi.adaptive_avg_pool2d_backward(g, input_size, layout=layout)
    return _down(_in_layout_of(grad_output, layout, _tensor(r)), grad_output)


def _pool_setup(ctx, inputs, output):
    ctx.input_size, ctx.layout = list(inputs[0].shape), inputs[2]


def _pool_backward(ctx, grad):
    return _invoke(_pool_bwd_op, grad, ctx.input_size, ctx.layout), None, None


_register(_pool_op, _pool_fake, _pool_backward, _pool_setup)
def _pool_name(grad_output, input_size, layout):
    rank = 1 if len(input_size) == 3 and layout is None else 3 if len(input_size) == 5 else 2
    return f"adaptive_avg_pool{rank}d"


_register(_pool_bwd_op, _image_bwd_fake, name=_pool_name)


def _pool(op, rank, input, output_size, out, layout=None):
    """One adaptive average pool over ``rank`` spatial axes (1, 2 or 3)."""
    (input,) = _tensors(op, "input", input)
    if not isinstance(input, Tensor):
        if not hasattr(input, "shape"):     # a number, a string, None: the NumPy API's error
            getattr(_fi, op)(input, output_size)
        input = torch.as_tensor(input)
    if rank != 2 and input.dim() == rank + 1:    # one unbatched item, as torch takes it
        if out is not None:                        # checked as the caller gave it
            _check_out(op, out)
            want = (input.shape[0],) + tuple(_pool_size_k(op, output_size, input.shape[1:]))
            if tuple(out.shape) != want:
                raise ValueError(f"{op}: out must have shape {shape_str(want)}; got "
                                 f"{shape_str(out.shape)}.")
        y = _pool(op, rank, input.unsqueeze(0), output_size,
                  None if out is None else out.unsqueeze(0), layout)
        return out if out is not None else y.squeeze(0)
    lay = None                     # bound on every path: torch.compile reads the closure's cell
    if rank == 2:
        lay = resolve_layout(op, "input", input, layout)
    elif input.dim() != rank + 2:
        raise nd_shape_error(op, "input", input.shape, (rank + 2,), one_item_ok=True)

    def op_args(input, output_size, layout):
        """The output size as one entry per spatial axis, as the custom op takes it (the
        direct path leaves that to the NumPy API)."""
        sp = lay.split(input.shape)[2:] if lay is not None else tuple(input.shape[2:])
        return input, list(_pool_size_k(op, output_size, sp)), layout
    return _call(op, _pool_op, _pool_direct, (input, output_size, layout), (input,), out, op_args)


def adaptive_avg_pool1d(input, output_size, out=None):
    """Differentiable :func:`fastinterp.adaptive_avg_pool1d` on (N, C, L) (or one (C, L))
    tensors; values equal ``F.adaptive_avg_pool1d``, gradient
    :func:`fastinterp.adaptive_avg_pool1d_backward`.

    Examples
    --------
    >>> import torch, fastinterp.torch as fit
    >>> fit.adaptive_avg_pool1d(torch.arange(4.0).reshape(1, 1, 4), 2)
    tensor([[[0.5000, 2.5000]]])
    """
    return _pool("adaptive_avg_pool1d", 1, input, output_size, out)


def adaptive_avg_pool2d(input, output_size, out=None, *, layout=None):
    """Differentiable :func:`fastinterp.adaptive_avg_pool2d` (images in any ``layout``);
    values equal ``F.adaptive_avg_pool2d``, gradient
    :func:`fastinterp.adaptive_avg_pool2d_backward`.

    Examples
    --------
    >>> import torch, fastinterp.torch as fit
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> fit.adaptive_avg_pool2d(x, 2)[0, 0]
    tensor([[ 2.5000,  4.5000],
            [10.5000, 12.5000]])
    """
    return _pool("adaptive_avg_pool2d", 2, input, output_size, out, layout)


def adaptive_avg_pool3d(input, output_size, out=None):
    """Differentiable :func:`fastinterp.adaptive_avg_pool3d` on (N, C, D, H, W) (or one
    (C, D, H, W)) tensors;
    values equal ``F.adaptive_avg_pool3d``, gradient
    :func:`fastinterp.adaptive_avg_pool3d_backward`.

    Examples
    --------
    >>> import torch, fastinterp.torch as fit
    >>> fit.adaptive_avg_pool3d(torch.ones(1, 1, 2, 4, 4), 1).shape
    torch.Size([1, 1, 1, 1, 1])
    """
    return _pool("adaptive_avg_pool3d", 3, input, output_size, out)


# --------------------------------------------------------------------------- warps

def _warp_backward_fn(name):
    """The NumPy API's backward of the warp ``name`` (rotate's is warp_affine's)."""
    return _fi.warp_perspective_backward if name == "warp_perspective" else \
        _fi.warp_affine_backward


def _host(M):
    """A warp matrix as the NumPy API reads it (a host array; it is tiny)."""
    if not isinstance(M, Tensor):
        return M
    M = M.detach().cpu()
    return _arg(M.float() if M.dtype in _HALF else M)   # read as float64 by the warps


def _warp_direct(img, M, dsize, mode, padding_mode, align_corners, match, inverse_map, fill,
                 layout, name, out=None):
    # the NumPy warps take float32/float64: a half image is warped in float32, rounded once
    half = isinstance(img, Tensor) and img.dtype in _HALF
    r = _tensor(_warp_as(name, _arg(_up(img)), _host(M), dsize, mode, padding_mode,
                         align_corners, match, inverse_map, None if half else _arg(out),
                         _fill_arg(fill), layout=layout))
    if not half:
        return r
    if out is None:
        return r.to(img.dtype)
    _check_half_out(name, out, r.shape, img)
    return out.copy_(r)


def _check_half_out(op, out, shape, img):
    """The NumPy API's ``out=`` checks for a half-precision result computed in float32
    (the NumPy call it comes from had no ``out`` to check)."""
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{op}: out must have shape {shape_str(shape)}; got "
                         f"{shape_str(out.shape)}.")
    if out.dtype != img.dtype:
        raise TypeError(f"{op}: out must have dtype {_dtype_name(img)}; got "
                        f"{_dtype_name(out)}.")
    if not out.is_contiguous():
        raise ValueError(f"{op}: out must be C-contiguous; got strides "
                         f"{tuple(s * out.element_size() for s in out.stride())}.")
    check_overlap(op, _words(out), {"img": _words(img)})


def _words(t):
    """A half tensor's memory as 16-bit words (NumPy has no bfloat16): a NumPy view on the
    CPU, a CUDA tensor (read through its array interface) on the device."""
    words = t.detach().view(torch.int16)
    return words.numpy() if words.is_cpu else words


@_custom_op("warp")
def _warp_op(img: Tensor, M: Tensor, dsize: list[int], mode: str, padding_mode: str,
             align_corners: bool, match: str, inverse_map: bool, fill: Optional[list[float]],
             layout: Optional[str], name: str) -> Tensor:
    return _warp_direct(img, M, dsize, mode, padding_mode, align_corners, match, inverse_map,
                        fill, layout, name)


def _warp_fake(img, M, dsize, mode, padding_mode, align_corners, match, inverse_map, fill,
               layout, name):
    lay = resolve_layout(name, "img", img, layout)
    n, c, _, _ = lay.split(img.shape)
    return img.new_empty(lay.join(n, c, *dsize))


@_custom_op("warp_backward")
def _warp_bwd_op(grad_output: Tensor, img: Tensor, M: Tensor, dsize: list[int], mode: str,
                 padding_mode: str, align_corners: bool, match: str, inverse_map: bool,
                 fill: Optional[list[float]], layout: Optional[str], name: str,
                 needs_input_grad: bool, needs_matrix_grad: bool) -> tuple[Tensor, Tensor]:
    gi, gm = _warp_backward_fn(name)(_arg(_up(grad_output)), _arg(_up(img)), _host(M), dsize,
                                     mode, padding_mode, align_corners, match, inverse_map,
                                     needs_input_grad, needs_matrix_grad, _fill_arg(fill),
                                     layout=layout)
    gm = None if gm is None else _tensor(gm).to(device=M.device, dtype=M.dtype)
    return (_empty_like_missing(_down(_tensor(gi), img), img), _empty_like_missing(gm, M))


def _warp_bwd_fake(grad_output, img, M, dsize, mode, padding_mode, align_corners, match,
                   inverse_map, fill, layout, name, needs_input_grad, needs_matrix_grad):
    return (img.new_empty(img.shape if needs_input_grad else (0,)),
            M.new_empty(M.shape if needs_matrix_grad else (0,)))


_warp_setup, _warp_backward = _two_tensor_autograd(_warp_bwd_op)
_register(_warp_op, _warp_fake, _warp_backward, _warp_setup)
_register(_warp_bwd_op, _warp_bwd_fake, name=lambda *inputs: inputs[11])


def _matrix(rows):
    """A float64 matrix of rows of numbers: in eager mode a NumPy array, as the NumPy API
    makes it; when traced, a tensor in which torch's symbolic numbers (a centre computed
    from a traced shape) stay graph values, which NumPy would fix at their traced values
    (``torch.tensor`` keeps those of ``torch.compile``; under torch.export or make_fx they
    are ``torch.SymFloat`` objects, each made a scalar tensor)."""
    if any(symbolic(v) for row in rows for v in row):
        return torch.stack([torch.stack([torch.scalar_tensor(v, dtype=torch.float64) for v in row])
                            for row in rows])
    if torch.compiler.is_compiling():
        return torch.tensor(rows, dtype=torch.float64)
    return np.array(rows)


def _warp(op, img, M, dsize, mode, padding_mode, align_corners, match, inverse_map, out, fill,
          layout):
    def op_args(img, M, *options):
        like = _first_tensor(op, img=img)
        M = _as_tensor_like(M, like, "M", op)
        if M.dtype == torch.bool or M.is_complex():
            raise matrix_type_error(op, "M", M.dtype)
        if not M.is_floating_point() or M.dtype in _HALF:
            M = M.to(torch.float64 if like.dtype == torch.float64 else torch.float32)
        return (like, M) + options

    # M: read on the host, or as a tensor by op_args
    img, M = _autocast_fp32(*_tensors(op, "img", img), M)
    _uint8_forward_only(op, img, {"M": M})
    dims = list(_check_dsize(op, dsize))
    args = (img, M, dims, mode, padding_mode, align_corners, match, inverse_map,
            _fill_list(op, fill), layout, op)
    return _call(op, _warp_op, _warp_direct, args, (img, M), out, op_args)


def warp_affine(img, M, dsize, mode="bilinear", padding_mode="zeros", align_corners=False,
                match="opencv", inverse_map=False, out=None, fill=None, *, layout=None):
    """Differentiable :func:`fastinterp.warp_affine` (``cv2.warpAffine`` / kornia).

    Parameters and values as :func:`fastinterp.warp_affine`; gradients flow
    to ``img`` and to a tensor ``M`` (:func:`fastinterp.warp_affine_backward`).

    Examples
    --------
    >>> import torch, fastinterp.torch as fit
    >>> M = torch.tensor([[1.0, 0, 0.5], [0, 1, 0]], requires_grad=True)
    >>> fit.warp_affine(torch.rand(1, 1, 4, 4), M, (4, 4)).sum().backward()
    >>> M.grad.shape
    torch.Size([2, 3])
    """
    return _warp("warp_affine", img, M, dsize, mode, padding_mode, align_corners, match,
                 inverse_map, out, fill, layout)


def warp_perspective(img, M, dsize, mode="bilinear", padding_mode="zeros", align_corners=False,
                     match="opencv", inverse_map=False, out=None, fill=None, *, layout=None):
    """Differentiable :func:`fastinterp.warp_perspective` (homographies,
    ``cv2.warpPerspective``); gradients flow to ``img`` and a tensor ``M``
    (:func:`fastinterp.warp_perspective_backward`).

    Examples
    --------
    >>> import torch, fastinterp.torch as fit
    >>> fit.warp_perspective(torch.ones(1, 1, 4, 4), torch.eye(3), (4, 4))[0, 0, 1]
    tensor([1., 1., 1., 1.])
    """
    return _warp("warp_perspective", img, M, dsize, mode, padding_mode, align_corners, match,
                 inverse_map, out, fill, layout)


def rotate(img, angle, center=None, scale=1.0, mode="bilinear", padding_mode="zeros", out=None,
           fill=None, *, layout=None):
    """Differentiable :func:`fastinterp.rotate` (about ``center``, degrees counter-clockwise);
    the gradient flows to ``img`` (the rotation is :func:`warp_affine` with
    :func:`fastinterp.rotation_matrix`). ``angle``, ``scale`` and ``center`` are read as
    numbers, also from tensors that require grad, and get no gradient: to differentiate
    the angle, build the matrix in torch and call :func:`warp_affine`.

    Examples
    --------
    >>> import torch, fastinterp.torch as fit
    >>> img = torch.arange(9.0).reshape(1, 1, 3, 3)
    >>> fit.rotate(img, 90)[0, 0].round()
    tensor([[2., 5., 8.],
            [1., 4., 7.],
            [0., 3., 6.]])
    """
    op = "rotate"
    _refuse_transforms_by_value(op, angle, center, scale)
    (img,) = _tensors(op, "img", img)
    x = _first_tensor(op, img=img)
    _, _, H, W = resolve_layout(op, "img", x, layout).split(x.shape)
    if center is None:
        center = ((W - 1) / 2.0, (H - 1) / 2.0)     # symbolic when the shape is
    # eager: the matrix in the default float environment, as the NumPy API computes it
    # (Dynamo traces the rows symbolically and cannot trace the control-word calls)
    rows = (_rotate_rows if torch.compiler.is_compiling() else ieee_subnormals(_rotate_rows))
    M = _matrix(rows(op, angle, center, scale))
    return _warp(op, img, M, (H, W), mode, padding_mode, False, "opencv", False, out, fill,
                 layout)


# --------------------------------------------------------------------------- distances

def _pairwise_direct(name, x, y, out=None):
    fn = _fi.pairwise_sqdist if name == "pairwise_sqdist" else _fi.pairwise_l2
    return _tensor(fn(_arg(x), _arg(y), _arg(out)))


def _sqdist_direct(x, y, out=None):
    return _pairwise_direct("pairwise_sqdist", x, y, out)


def _l2_direct(x, y, out=None):
    return _pairwise_direct("pairwise_l2", x, y, out)


@_custom_op("pairwise_sqdist")
def _sqdist_op(x: Tensor, y: Optional[Tensor]) -> Tensor:
    return _sqdist_direct(x, y)


@_custom_op("pairwise_l2")
def _l2_op(x: Tensor, y: Optional[Tensor]) -> Tensor:
    return _l2_direct(x, y)


def _pairwise_fake(x, y):
    """(..., P, R) with the batch axes broadcast as ``torch.cdist`` does."""
    _fake_rank("pairwise", "x", x, range(2, 64), "(..., P, D)")
    if y is None:
        return x.new_empty((*x.shape[:-1], x.shape[-2]))
    _fake_rank("pairwise", "y", y, range(2, 64), "(..., R, D)")
    batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    return x.new_empty((*batch, x.shape[-2], y.shape[-2]))


def _pairwise_grads(x, y, grads):
    """The gradients as tensors of x's and y's shapes; one not computed (or y None) an
    empty tensor."""
    gx, gy = grads
    gx = x.new_empty(0) if gx is None else _sum_to(_tensor(gx), x)
    gy = x.new_empty(0) if gy is None else _sum_to(_tensor(gy), y)
    return gx, gy


@_custom_op("pairwise_sqdist_backward")
def _sqdist_bwd_op(grad_out: Tensor, x: Tensor, y: Optional[Tensor], needs_x_grad: bool,
                   needs_y_grad: bool) -> tuple[Tensor, Tensor]:
    return _pairwise_grads(x, y, _fi.pairwise_sqdist_backward(
        _arg(grad_out), _arg(x), _arg(y), needs_x_grad=needs_x_grad,
        needs_y_grad=needs_y_grad))


@_custom_op("pairwise_l2_backward")
def _l2_bwd_op(grad_out: Tensor, x: Tensor, y: Optional[Tensor], dist: Tensor,
               needs_x_grad: bool, needs_y_grad: bool) -> tuple[Tensor, Tensor]:
    return _pairwise_grads(x, y, _fi.pairwise_l2_backward(
        _arg(grad_out), _arg(x), _arg(y), _arg(dist), needs_x_grad=needs_x_grad,
        needs_y_grad=needs_y_grad))


def _pairwise_bwd_fake(grad_out, x, y, *rest):
    needs_x, needs_y = rest[-2:]
    gx = x.new_empty(x.shape if needs_x else (0,))
    gy = x.new_empty(0) if y is None or not needs_y else y.new_empty(y.shape)
    return gx, gy


def _sqdist_setup(ctx, inputs, output):
    x, y = inputs
    ctx.has_y = y is not None
    ctx.save_for_backward(x, y, None)       # not the output: the caller may change it in place


def _l2_setup(ctx, inputs, output):
    x, y = inputs
    ctx.has_y = y is not None
    ctx.save_for_backward(x, y, output)     # the distances divide the gradient


def _pairwise_backward(ctx, grad, l2):
    x, y, dist = ctx.saved_tensors
    need_x, need_y = (_needed(ctx, 2) if ctx.has_y else _needed(ctx, 1) + (False,))
    y = y if ctx.has_y else None
    if l2:
        gx, gy = _invoke(_l2_bwd_op, grad, x, y, dist, need_x, need_y)
    else:
        gx, gy = _invoke(_sqdist_bwd_op, grad, x, y, need_x, need_y)
    return _grad_or_none(gx, need_x), _grad_or_none(gy, need_y)


def _sqdist_backward(ctx, grad):
    return _pairwise_backward(ctx, grad, False)


def _l2_backward(ctx, grad):
    return _pairwise_backward(ctx, grad, True)


_register(_sqdist_op, _pairwise_fake, _sqdist_backward, _sqdist_setup)
_register(_l2_op, _pairwise_fake, _l2_backward, _l2_setup)
_register(_sqdist_bwd_op, _pairwise_bwd_fake, name="pairwise_sqdist")
_register(_l2_bwd_op, _pairwise_bwd_fake, name="pairwise_l2")


def pairwise_sqdist(x, y=None, out=None):
    """Differentiable :func:`fastinterp.pairwise_sqdist`: ``torch.cdist(x, y) ** 2``,
    exact and deterministic (see the NumPy API), gradients from
    :func:`fastinterp.pairwise_sqdist_backward`.

    Examples
    --------
    >>> import torch, fastinterp.torch as fit
    >>> x = torch.tensor([[0.0, 0.0], [3.0, 4.0]], requires_grad=True)
    >>> d = fit.pairwise_sqdist(x)
    >>> d.sum().backward()
    >>> d.detach(), x.grad
    (tensor([[ 0., 25.],
            [25.,  0.]]), tensor([[-12., -16.],
            [ 12.,  16.]]))
    """
    x, y = _autocast_fp32(*_tensors("pairwise_sqdist", "x y", x, y))
    return _call("pairwise_sqdist", _sqdist_op, _sqdist_direct, (x, y), (x, y), out)


def pairwise_l2(x, y=None, out=None):
    """Differentiable :func:`fastinterp.pairwise_l2` (``torch.cdist(x, y)``); the
    gradient at zero distance is 0 (:func:`fastinterp.pairwise_l2_backward`).

    Examples
    --------
    >>> import torch, fastinterp.torch as fit
    >>> fit.pairwise_l2(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]))
    tensor([[5.]])
    """
    x, y = _autocast_fp32(*_tensors("pairwise_l2", "x y", x, y))
    return _call("pairwise_l2", _l2_op, _l2_direct, (x, y), (x, y), out)


# --------------------------------------------------------------------------- lerp

def _lerp_direct(a, b, t, out=None):
    return _tensor(_fi.lerp(_arg(a), _arg(b), _arg(t), _arg(out)))


@_custom_op("lerp")
def _lerp_op(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    return _lerp_direct(a, b, t)


def _lerp_fake(a, b, t):
    return a.new_empty(torch.broadcast_shapes(a.shape, b.shape, t.shape))


@_custom_op("lerp_backward")
def _lerp_bwd_op(grad: Tensor, a: Tensor, b: Tensor, t: Tensor, needs_a: bool, needs_b: bool,
                 needs_t: bool) -> tuple[Tensor, Tensor, Tensor]:
    # torch.lerp's derivatives: d/da = 1 - t, d/db = t, d/dt = b - a, summed to each shape,
    # computed in float32 for half tensors (torch's promotion would round a float32 input's
    # gradient through a half grad) and rounded once to each input's dtype.
    # (No graph is recorded here: the op runs below autograd, or with grad mode off.)
    go, a_, b_, t_ = (_up(v) for v in (grad, a, b, t))
    ga = _down(_sum_to(go * (1 - t_), a), a) if needs_a else None
    gb = _down(_sum_to(go * t_, b), b) if needs_b else None
    gt = _down(_sum_to(go * (b_ - a_), t), t) if needs_t else None
    # contiguous, as the fake kernel says (go * (1 - t) takes go's strides: a
    # channels-last or transposed gradient failed torch.compile's stride check)
    return tuple(_empty_like_missing(g, like).contiguous()
                 for g, like in ((ga, a), (gb, b), (gt, t)))


def _lerp_bwd_fake(grad, a, b, t, needs_a, needs_b, needs_t):
    return tuple(like.new_empty(like.shape if need else (0,))
                 for like, need in ((a, needs_a), (b, needs_b), (t, needs_t)))


def _lerp_setup(ctx, inputs, output):
    """Save only the values a needed gradient reads (t for a's and b's, a and b for t's),
    as torch.lerp does: the others may be changed in place before the backward; their
    shapes and dtypes are kept."""
    a, b, t = inputs
    need_ab, need_t = any(ctx.needs_input_grad[:2]), ctx.needs_input_grad[2]
    ctx.save_for_backward(a if need_t else None, b if need_t else None, t if need_ab else None)
    ctx.specs = [(v.shape, v.dtype, v.device) for v in inputs]


def _lerp_backward(ctx, grad):
    # an unsaved operand stands in as an expanded scalar of its shape and dtype (no memory)
    a, b, t = (v if v is not None else torch.zeros((), dtype=dtype, device=device).expand(shape)
               for v, (shape, dtype, device) in zip(ctx.saved_tensors, ctx.specs))
    needs = _needed(ctx, 3)
    grads = _invoke(_lerp_bwd_op, grad, a, b, t, *needs)
    return tuple(_grad_or_none(g, n) for g, n in zip(grads, needs))


_register(_lerp_op, _lerp_fake, _lerp_backward, _lerp_setup)
_register(_lerp_bwd_op, _lerp_bwd_fake, name="lerp")


def lerp(a, b, t, out=None):
    """Differentiable :func:`fastinterp.lerp`: ``a + t * (b - a)``, values equal ``torch.lerp``.

    ``t`` is a real number or a tensor; gradients flow to ``a``, ``b`` and a
    tensor ``t`` (``torch.lerp``'s derivatives, summed over broadcast axes).

    Examples
    --------
    >>> import torch, fastinterp.torch as fit
    >>> t = torch.tensor(0.25, requires_grad=True)
    >>> y = fit.lerp(torch.zeros(2), torch.tensor([4.0, 8.0]), t)
    >>> y.sum().backward()
    >>> y.detach(), t.grad
    (tensor([1., 2.]), tensor(12.))
    """
    op = "lerp"
    a, b, t = _tensors(op, "a b t", a, b, t)
    if isinstance(a, Tensor) and isinstance(b, Tensor) and a.dtype == b.dtype:
        t = _zero_dim_weight(t, a)      # (mixed operand dtypes: the NumPy API's rule)

    def op_args(a, b, t):
        like = _first_tensor(op, a=a, b=b)
        a, b = (_as_tensor_like(v, like, n, op) for v, n in ((a, "a"), (b, "b")))
        return a, b, _as_tensor_like(t, like, "t", op, weight=True)

    result = _call(op, _lerp_op, _lerp_direct, (a, b, t), (a, b, t), out, op_args)
    if out is None and not isinstance(a, Tensor) and isinstance(b, Tensor) and (
            b.dtype in _HALF and result.dtype != b.dtype):
        # a number a is computed in float32 next to a half b: the result is b's dtype,
        # rounded once, as the NumPy API gives it (with or without autograd)
        result = result.to(b.dtype)
    return result


def _zero_dim_weight(t, like):
    """torch.lerp's reading of a 0-dim floating weight tensor next to operands of one
    dtype with dimensions: cast to that dtype (a 0-dim tensor does not promote them), so that
    ``lerp(a32, b32, torch.tensor(0.3, dtype=torch.float64))`` is float32 and a half
    operand's weight is rounded to half, as torch rounds it."""
    if (isinstance(t, Tensor) and t.dim() == 0 and like.dim() > 0 and t.is_floating_point()
            and like.is_floating_point() and t.dtype != like.dtype):
        return t.to(like.dtype)
    return t


# --------------------------------------------------------------------------- slerp

def _slerp_direct(a, b, t, axis, path, shortest_path, norm, out=None):
    return _tensor(_fi.slerp(_arg(a), _arg(b), _arg(t), axis, path=path,
                             shortest_path=shortest_path, norm=norm, out=_arg(out)))


@_custom_op("slerp")
def _slerp_op(a: Tensor, b: Tensor, t: Tensor, axis: int, path: bool, shortest_path: bool,
              norm: str) -> Tensor:
    return _slerp_direct(a, b, t, axis, path, shortest_path, norm)


def _slerp_fake(a, b, t, axis, path, shortest_path, norm):
    if not path:
        return a.new_empty(a.shape)
    ax = axis % a.dim()
    return a.new_empty((*a.shape[:ax], t.shape[-1], *a.shape[ax:]))


@_custom_op("slerp_backward")
def _slerp_bwd_op(grad_out: Tensor, a: Tensor, b: Tensor, t: Tensor, axis: int, path: bool,
                  shortest_path: bool, norm: str, needs_ab_grad: bool,
                  needs_t_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    grads = _fi.slerp_backward(_arg(grad_out), _arg(a), _arg(b), _arg(t), axis, path=path,
                               shortest_path=shortest_path, norm=norm,
                               needs_ab_grad=needs_ab_grad, needs_t_grad=needs_t_grad)
    return tuple(_empty_like_missing(None if g is None else _tensor(g), like)
                 for g, like in zip(grads, (a, b, t)))


def _slerp_bwd_fake(grad_out, a, b, t, axis, path, shortest_path, norm, needs_ab_grad,
                    needs_t_grad):
    return tuple(like.new_empty(like.shape if need else (0,)) for like, need in
                 ((a, needs_ab_grad), (b, needs_ab_grad), (t, needs_t_grad)))


def _slerp_setup(ctx, inputs, output):
    a, b, t, *options = inputs
    ctx.save_for_backward(a, b, t)
    ctx.options = tuple(options)


def _slerp_backward(ctx, grad):
    a, b, t = ctx.saved_tensors
    needs = _needed(ctx, 3)
    grads = _invoke(_slerp_bwd_op, grad, a, b, t, *ctx.options, needs[0] or needs[1], needs[2])
    return tuple(_grad_or_none(g, n) for g, n in zip(grads, needs)) + (None,) * 4


_register(_slerp_op, _slerp_fake, _slerp_backward, _slerp_setup)
_register(_slerp_bwd_op, _slerp_bwd_fake, name="slerp")


def slerp(a, b, t, axis=-1, *, path=False, shortest_path=False, norm="linear", out=None):
    """Differentiable :func:`fastinterp.slerp` (spherical interpolation along ``axis``).

    Parameters and values as :func:`fastinterp.slerp` (plain and path forms);
    gradients flow to ``a``, ``b`` and a tensor ``t`` through
    :func:`fastinterp.slerp_backward` (finite in every degenerate case the
    forward handles).

    Examples
    --------
    >>> import torch, fastinterp.torch as fit
    >>> a = torch.tensor([1.0, 0.0]); b = torch.tensor([0.0, 1.0])
    >>> t = torch.tensor(0.5, requires_grad=True)
    >>> y = fit.slerp(a, b, t)
    >>> y[1].backward()
    >>> round(float(t.grad), 6)  # d/dt sin(t pi/2) at t = 1/2
    1.110721
    """
    op = "slerp"
    a, b, t = _tensors(op, "a b t", a, b, t)
    check_bool(op, "path", path)
    check_bool(op, "shortest_path", shortest_path)
    check_option(op, "norm", norm, SLERP_NORMS)

    def op_args(a, b, t, axis, *options):
        a = _first_tensor(op, a=a)
        slerp_axis(op, a.dim(), axis)
        return (a, b, _as_tensor_like(t, a, "t", op, weight=True), int(axis)) + options

    return _call(op, _slerp_op, _slerp_direct, (a, b, t, axis, bool(path), bool(shortest_path),
                                                 norm), (a, b, t), out, op_args)
