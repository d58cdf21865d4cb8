"""Ops added by plugins: ``fastinterp.ops.<name>(*arrays, out=None, **params)``.

Each name is resolved when it is looked up, so ops appear when a plugin is
loaded (:func:`fastinterp.plugins.load`, :func:`fastinterp.plugins.discover`,
:func:`fastinterp.plugins.register_cfunc`) and disappear when it is unloaded.

Arrays are validated against the op's declared signature (e.g.
``"x(...), y(...) -> out(...)"``: named sizes must agree, ``...`` is a batch
shape shared by the operands using it), must share one dtype (float32 or
float64), and non-contiguous inputs are copied once. The output is allocated
from the signature, or given as ``out=`` (required when the signature does not
determine its shape). NumPy arrays in give NumPy arrays out; DLPack inputs
(e.g. torch CPU tensors) are used zero-copy and give the caller's type back.
"""
from __future__ import annotations

from typing import Any

from . import plugins as _plugins


class _PluginOp:
    """``fastinterp.ops.<name>``: a callable front for one plugin op."""

    def __init__(self, name: str) -> None:
        self.__name__ = self.__qualname__ = name

    @property
    def __doc__(self) -> str:  # type: ignore[override]  # computed: a plugin may load later
        spec = _plugins.op_spec(self.__name__)
        if spec is None:
            return f"{self.__name__}: no loaded plugin provides this op."
        return (f"{self.__name__}: {spec.describe()} (plugin {spec.source!r}).\n\n"
                f"{spec.doc or ''}\n\nSee fastinterp.ops for the calling conventions.")

    def __call__(self, /, *arrays: Any, **kwargs: Any) -> Any:
        return _plugins.call_op(self.__name__, arrays, kwargs)

    def __repr__(self) -> str:
        return f"<fastinterp.ops.{self.__name__}>"


_fronts: dict[str, _PluginOp] = {}


def __getattr__(name: str) -> _PluginOp:
    if name.startswith("__") or _plugins.op_spec(name) is None:
        raise AttributeError(f"fastinterp.ops has no op {name!r}; loaded plugin ops: "
                             f"{', '.join(_plugins.op_names()) or 'none'}.")
    front = _fronts.get(name)
    if front is None:
        front = _fronts.setdefault(name, _PluginOp(name))
    return front


def __dir__() -> list[str]:
    return _plugins.op_names()
