"""Plugins: kernels from shared libraries (C, C++, Rust, Zig...) and numba ``@cfunc``.

A plugin is a shared library exporting the descriptor of
``fastinterp/plugin.h`` (find the header with :func:`get_include`). Loading it
checks its ABI version and struct sizes, then registers its kernels in the
same registry as fastinterp's built-in kernels, keyed by (op, backend,
dtype). A kernel for a built-in op (``lerp``) replaces the built-in one for
its key until the plugin is unloaded; a kernel for a new op makes it
callable as ``fastinterp.ops.<name>(...)``.

Discovery of installed plugins (the ``fastinterp.plugins`` entry-point
group) never runs at ``import fastinterp``: call :func:`discover`. Importing
third-party code as a side effect of an import would make ``import
fastinterp`` slow and let a broken plugin break it.

Libraries stay mapped while anything refers to their kernels (the registry,
``fastinterp.last_kernel()``, a call in flight) and are closed when the last
reference goes, so unloading is safe while other threads still call. Loading a
path whose file changed since an earlier copy of it was mapped (a rebuilt
plugin) loads the new file, through a private copy, since ``dlopen`` would hand
back the old one.
"""
from __future__ import annotations

import builtins
import collections.abc
import ctypes
import functools
import itertools
import math
import numbers
import os
import re
import shutil
import tempfile
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NoReturn, TypeGuard

import numpy as np

from . import _memory, _registry as registry
from ._config import fork_safe_lock, threads_for
from ._dispatch import begin_named, public_call
from ._validate import (check_array, check_bool, check_out, check_shape,
                        contiguous_input, same_dtype, shape_str, shown)

__all__ = [
    "ENTRY_POINT_GROUP", "PluginError", "PluginKernelError", "PluginArgumentError",
    "PluginMemoryError", "PluginInfo", "PluginWarning",
    "builtin_capsule", "builtin_kernels", "discover", "get_include", "list", "load",
    "register_cfunc", "unload",
]

ENTRY_POINT_GROUP = "fastinterp.plugins"
SYMBOL = "fastinterp_plugin"           # FI_PLUGIN_SYMBOL
DEVICE_CPU, DEVICE_CUDA = 1, 2          # FI_DEVICE_*
SERIAL = 0x1                            # FI_KERNEL_SERIAL
STATUS_NAMES = {1: "invalid argument", 2: "unsupported", 3: "out of memory", 4: "internal error"}
ERR_INVALID, ERR_NOMEM = 1, 3           # FI_ERR_INVALID, FI_ERR_NOMEM
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
_DTYPES = {(2, 32, 1): "float32", (2, 64, 1): "float64"}
_DEVICE_NAMES = {DEVICE_CPU: "CPU", DEVICE_CUDA: "CUDA"}
_OP_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_PLUGIN_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


class PluginError(ImportError):
    """A plugin could not be loaded or registered; nothing of it was registered.

    Examples
    --------
    >>> import fastinterp as fi
    >>> try:
    ...     fi.plugins.load("/nonexistent/libnothing.so")
    ... except fi.plugins.PluginError as exc:
    ...     print(exc)
    load('/nonexistent/libnothing.so'): no such file; nothing was registered.
    """


class PluginKernelError(RuntimeError):
    """A plugin kernel returned an error status; ``.status`` and ``.message`` hold it.

    Examples
    --------
    >>> import fastinterp as fi
    >>> err = fi.plugins.PluginKernelError("myop: failed", 3, "bad state")
    >>> err.status, err.message
    (3, 'bad state')
    """

    def __init__(self, text: str, status: int, message: str):
        super().__init__(text)
        self.status = status
        self.message = message


class PluginArgumentError(PluginKernelError, ValueError):
    """A plugin kernel refused its arguments (status ``FI_ERR_INVALID``).

    Examples
    --------
    >>> import fastinterp as fi
    >>> issubclass(fi.plugins.PluginArgumentError, ValueError)    # catch it as ValueError
    True
    """


class PluginMemoryError(PluginKernelError, MemoryError):
    """A plugin kernel could not allocate memory (status ``FI_ERR_NOMEM``).

    Examples
    --------
    >>> import fastinterp as fi
    >>> issubclass(fi.plugins.PluginMemoryError, MemoryError)     # catch it as MemoryError
    True
    """


class PluginWarning(UserWarning):
    """A kernel entry or an installed plugin was skipped (the reason is in the message).

    Examples
    --------
    >>> import warnings, fastinterp as fi
    >>> with warnings.catch_warnings():          # make a broken installed plugin an error
    ...     warnings.simplefilter("error", fi.plugins.PluginWarning)
    ...     fi.plugins.discover("example.no_such_group")
    []
    """


def _abi() -> Any:
    from ._cpu import abi
    return abi


def get_include() -> str:
    """The directory to pass to the C compiler as ``-I`` for ``#include <fastinterp/plugin.h>``.

    Like ``numpy.get_include()``; it works for installed wheels and editable
    installs alike.

    Examples
    --------
    >>> import os, fastinterp as fi
    >>> os.path.isfile(os.path.join(fi.get_include(), "fastinterp", "plugin.h"))
    True
    """
    from . import include  # type: ignore[attr-defined]  # fastinterp.include: kernels/include
    return os.path.dirname(os.path.abspath(include.__file__))


# --------------------------------------------------------------------------- declarations
@dataclass(frozen=True)
class _Operand:
    name: str
    batch: bool                      # leading "..."
    dims: tuple                      # names (str) and fixed sizes (int)

    @functools.cached_property
    def layout(self) -> str:
        parts = (["..."] if self.batch else []) + [str(d) for d in self.dims]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 and not self.batch else "") + ")"


@dataclass(frozen=True)
class Signature:
    """An op's array signature, e.g. ``"a(m,k), b(k,n) -> c(m,n)"`` (see plugin.h)."""

    inputs: tuple[_Operand, ...]
    outputs: tuple[_Operand, ...]
    text: str

    @classmethod
    def parse(cls, text: str, where: str) -> "Signature":
        if "->" not in text:
            raise ValueError(f"{where}: signature must look like 'x(...), y(...) -> out(...)'; "
                             f"got {text!r}.")
        left, right = text.split("->", 1)
        inputs = _parse_operands(left, "x", where, text)
        outputs = _parse_operands(right, "out", where, text)
        names = [o.name for o in [*inputs, *outputs]]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: signature operand names must be unique; got {text!r}.")
        if not inputs:
            raise ValueError(f"{where}: signature must declare at least one input array; "
                             f"got {text!r}.")
        if any(o.name == "out" for o in inputs):
            raise ValueError(f"{where}: an input must not be named 'out' (the keyword that "
                             f"takes the outputs); got {text!r}.")
        if not outputs:
            raise ValueError(f"{where}: signature must declare at least one output; got {text!r}.")
        return cls(tuple(inputs), tuple(outputs), text)

    def output_shapes(self, op: str, arrays: Iterable[Any]
                      ) -> builtins.list[builtins.list[int | None] | None]:
        """Check ``arrays`` against the inputs; return each output's shape as a list
        of sizes, None standing for a size the inputs do not determine (the
        whole shape is None when its batch shape is not determined)."""
        sizes: dict[str, int] = {}
        batch: tuple[int, ...] | None = None
        for operand, arr in zip(self.inputs, arrays):
            batch = _bind_operand(op, operand, arr, sizes, batch)
        return [None if o.batch and batch is None else
                builtins.list[int | None](batch if o.batch and batch is not None else ())
                + [d if isinstance(d, int) else sizes.get(d) for d in o.dims]
                for o in self.outputs]

    def check_outputs(self, op: str, arrays: Iterable[Any], outs: Iterable[Any]) -> None:
        """Check the caller's output arrays ``outs`` against the signature, after the
        inputs ``arrays``: a size or batch shape no input determines is bound by the
        first output that has it, and every other output must agree (a kernel may read
        a size from any of its outputs)."""
        sizes: dict[str, int] = {}
        batch: tuple[int, ...] | None = None
        for operand, arr in (*zip(self.inputs, arrays), *zip(self.outputs, outs)):
            batch = _bind_operand(op, operand, arr, sizes, batch)


def _bind_operand(op: str, operand: _Operand, arr: Any, sizes: dict[str, int],
                  batch: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """Check ``arr`` against ``operand`` given the names bound so far (``sizes``) and the
    batch shape (None: not bound yet); bind the names it is the first to have (added to
    ``sizes``) and, if it is the first batched operand, the batch shape (returned)."""
    shape = tuple(arr.shape)
    if operand.batch and batch is None:
        if len(shape) < len(operand.dims):
            raise ValueError(f"{op}: {operand.name} must have shape {operand.layout}; "
                             f"got {shape_str(shape)}.")
        batch = shape[:len(shape) - len(operand.dims)]
    want: builtins.list[int | None] = [*(batch or () if operand.batch else ())]
    tail = shape[len(shape) - len(operand.dims):] if len(shape) >= len(operand.dims) else ()
    mine: dict[str, int] = {}      # names first seen in this operand, bound in order
    for i, d in enumerate(operand.dims):
        if isinstance(d, int):
            want.append(d)
            continue
        # a name repeated within the operand (x(n, n)) must agree with its first use
        want.append(sizes.get(d, mine.get(d)))
        if tail and d not in sizes:
            mine.setdefault(d, tail[i])
    check_shape(op, operand.name, arr, want, operand.layout)
    for d, s in mine.items():
        sizes.setdefault(d, s)
    return batch


def _parse_operands(text: str, prefix: str, where: str, whole: str
                    ) -> builtins.list[_Operand]:
    operands: builtins.list[_Operand] = []
    pos, text = 0, text.strip()
    pattern = re.compile(r"\s*(?:([A-Za-z_]\w*)\s*)?\(([^()]*)\)\s*(,|\Z)")
    while pos < len(text):
        m = pattern.match(text, pos)
        if not m:
            raise ValueError(f"{where}: cannot parse signature {whole!r} near {text[pos:]!r}; "
                             f"expected operands like 'x(..., n)'.")
        dims: builtins.list[int | str] = []
        batch = False
        for i, token in enumerate(t.strip() for t in m.group(2).split(",") if t.strip()):
            if token == "..." and i == 0:
                batch = True
            elif token.isascii() and token.isdigit():
                size = int(token)
                if size > INT64_MAX:
                    raise ValueError(f"{where}: signature size must be in [0, 2**63 - 1] "
                                     f"(int64); got {size} in {whole!r}.")
                dims.append(size)
            elif re.fullmatch(r"[A-Za-z_]\w*", token):
                dims.append(token)
            else:
                raise ValueError(f"{where}: signature dimension must be a name, a size or a "
                                 f"leading '...'; got {token!r} in {whole!r}.")
        if len(dims) > _abi().MAX_NDIM:
            raise ValueError(f"{where}: signature operands have at most {_abi().MAX_NDIM} "
                             f"dimensions; got {len(dims)} in {whole!r}.")
        operands.append(_Operand(m.group(1) or f"{prefix}{len(operands)}", batch, tuple(dims)))
        pos = m.end()
        if m.group(3) == "," and pos >= len(text):
            raise ValueError(f"{where}: signature {whole!r} ends with a comma.")
    if prefix == "out" and len(operands) == 1 and operands[0].name == "out0":
        operands[0] = _Operand("out", operands[0].batch, operands[0].dims)
    return operands


@dataclass(frozen=True)
class Param:
    name: str
    kind: type          # float or int
    default: Any        # None: required


def parse_params(text: str | None, where: str) -> tuple[Param, ...]:
    """Parse ``"alpha: float = 1, k: int"`` into :class:`Param` entries."""
    out = []
    for item in (t.strip() for t in (text or "").split(",") if t.strip()):
        m = re.fullmatch(r"([A-Za-z_]\w*)\s*:\s*(float|int)\s*(?:=\s*(\S+))?", item)
        if not m:
            raise ValueError(f"{where}: parameters must look like 'alpha: float = 1, k: int'; "
                             f"got {item!r}.")
        kind = float if m.group(2) == "float" else int
        try:
            default = None if m.group(3) is None else param_value(
                where, Param(m.group(1), kind, None), _literal(kind, m.group(3)))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: default of parameter {m.group(1)!r} must be "
                             f"{'an int64' if kind is int else 'a float'}; "
                             f"got {m.group(3)!r}.") from None
        out.append(Param(m.group(1), kind, default))
    if len({p.name for p in out}) != len(out):
        raise ValueError(f"{where}: parameter names must be unique; got {text!r}.")
    return tuple(out)


def _literal(kind: type, text: str) -> float | int:
    """A default's text as ``kind``: ASCII only (int() and float() also read other
    scripts' digits), and a float beyond float64's range is refused (float() reads
    '1e400' as inf), as a call's 10**400 is; 'inf' and 'nan' pass, as in a call."""
    if not text.isascii():
        raise ValueError(text)
    value = kind(text)
    if kind is float and math.isinf(value) and "inf" not in text.lower():
        raise ValueError(text)
    return value


def param_value(op: str, param: Param, value: Any) -> float | int:
    """``value`` as the kernel will get it (a float64 or an int64), or a clear error.

    bool is refused for both kinds (``True`` is rarely meant as 1), so are
    strings, complex numbers and arrays; an int must fit int64, a float the
    float64 range. NaN and infinities pass: the kernel decides.
    """
    def refuse(kind: str) -> TypeError:
        return TypeError(f"{op}: {param.name} must be {kind}; got {type(value).__name__} "
                         f"{value!r}.")
    if isinstance(value, (bool, np.bool_)):
        raise refuse("an int" if param.kind is int else "a float")
    if param.kind is int:
        if not isinstance(value, numbers.Integral):
            raise refuse("an int")
        value = int(value)
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"{op}: {param.name} must be an int in [-2**63, 2**63 - 1] "
                             f"(int64); got {value}.")
        return value
    if not isinstance(value, numbers.Real):
        raise refuse("a float")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{op}: {param.name} must be a float within the float64 range "
                         f"(about ±1.8e308); got {value}.") from None


@dataclass(frozen=True)
class OpSpec:
    """What a plugin declares about a new op: its signature, parameters and doc."""

    name: str
    signature: Signature | None
    params: tuple[Param, ...]
    doc: str | None
    source: str

    def same_interface(self, other: "OpSpec") -> bool:
        sig = lambda s: None if s.signature is None else (s.signature.inputs, s.signature.outputs)
        return sig(self) == sig(other) and self.params == other.params

    def describe(self) -> str:
        sig = self.signature.text if self.signature else "<out= required>"
        params = ", ".join(f"{p.name}: {p.kind.__name__}" + ("" if p.default is None else f" = {p.default}")
                           for p in self.params)
        return f"{sig}" + (f"; params {params}" if params else "")


# --------------------------------------------------------------------------- kernels
class PluginKernel:
    """A plugin's kernel for one (op, backend, dtype), callable like a built-in kernel.

    It keeps its library (or numba cfunc) alive; calls release the GIL.
    """

    __slots__ = ("plugin", "op", "backend", "dtype", "address", "_owner", "_lock", "_call")

    def __init__(self, plugin: str, op: str, dtype: str, address: int, owner: Any,
                 serial: bool) -> None:
        self.plugin, self.op, self.backend, self.dtype = plugin, op, "cpu", dtype
        self.address = address
        self._owner = owner
        self._lock = fork_safe_lock() if serial else None
        self._call = _abi().call

    def _run(self, inputs: tuple[Any, ...], outputs: tuple[Any, ...], floats: tuple[float, ...],
             ints: tuple[int, ...], nthreads: int, broadcast_to: Any = None) -> None:
        if self._lock is None:
            result = self._call(self.address, inputs, outputs, floats, ints, nthreads,
                                broadcast_to, self.op)
        else:
            with self._lock:
                result = self._call(self.address, inputs, outputs, floats, ints, nthreads,
                                    broadcast_to, self.op)
        if result is not None:
            status, message = result
            error = {ERR_INVALID: PluginArgumentError, ERR_NOMEM: PluginMemoryError}.get(
                status, PluginKernelError)
            raise error(
                f"{self.op}: plugin kernel {self.plugin}:{self.op} ({self.backend}, {self.dtype}) "
                f"failed with status {status} ({STATUS_NAMES.get(status, 'unknown status')}): "
                f"{message or '(no message)'}", status, message)

    def _below(self) -> Callable[..., Any]:
        """The kernel registered below this one (the built-in one unless another
        plugin's is stacked there): it runs the calls this kernel's ABI cannot express."""
        return registry.lookup_below(self.op, self.backend, self.dtype, self.plugin)

    def __repr__(self) -> str:
        return f"<plugin kernel {self.plugin}:{self.op} ({self.backend}, {self.dtype})>"


class OpKernel(PluginKernel):
    """Calling convention of a new op: ``kernel(outputs, inputs, floats, ints)``."""

    __slots__ = ()

    def __call__(self, outputs: Any, inputs: Any, floats: Iterable[float] = (),
                 ints: Iterable[int] = ()) -> None:
        inputs, outputs = tuple(inputs), tuple(outputs)
        work = max(a.size for a in inputs + outputs)    # a reduction's work is its input
        self._run(inputs, outputs, tuple(floats), tuple(ints), threads_for(work))


class LerpKernel(PluginKernel):
    """Adapter to the built-in lerp convention, ``kernel(out, a, b, t)``.

    The front passes operands of out's rank with size 1 on broadcast axes; the
    C kernel sees inputs ``a, b, t`` with out's shape, stride 0 on those axes.
    """

    __slots__ = ()

    def __call__(self, out: Any, a: Any, b: Any, t: Any) -> None:
        self._run((a, b, t), (out,), (), (), threads_for(out.size), out)


#: grid_sample's mode and padding codes in the ABI (FI_GRID_*, FI_PAD_* in plugin.h).
GRID_MODES = {"nearest": 0, "bilinear": 1, "bicubic": 2}
GRID_PADDINGS = {"zeros": 0, "border": 1, "reflection": 2}
#: The paddings a grid_sample kernel gets that the ABI expresses: 'constant' is the
#: 'zeros' kernel (the front adds fill times the weight that fell outside, for
#: built-in and plugin kernels alike); 'wrap' has no ABI code.
_GRID_KERNEL_PADDINGS = {**GRID_PADDINGS, "constant": GRID_PADDINGS["zeros"]}


class GridSampleKernel(PluginKernel):
    """Adapter to the built-in grid_sample convention,
    ``kernel(out, x, grid, dims, mode, padding, align_corners, channels_last)``.

    The C kernel gets inputs ``x, grid`` and output ``out`` (compact) and
    ``params->ints = {mode, padding, align_corners, channels_last}``. Calls the ABI
    cannot express (volumes: 8 dims; 'wrap' padding) run the kernel below this one.
    """

    __slots__ = ()

    def __call__(self, out: Any, x: Any, grid: Any, dims: tuple[int, ...], mode: str,
                 padding: str, align_corners: bool, channels_last: bool) -> None:
        pad = _GRID_KERNEL_PADDINGS.get(padding)
        if len(dims) != 6 or pad is None or mode not in GRID_MODES:
            self._below()(out, x, grid, dims, mode, padding, align_corners, channels_last)
            return
        n, c, _, _, ho, wo = dims
        self._run((x, grid), (out,), (), (GRID_MODES[mode], pad, int(align_corners),
                                          int(channels_last)),
                  threads_for(n * c * ho * wo, 16384))


#: Built-in ops whose kernels a plugin may replace, and the adapter for each.
CONVENTIONS: dict[str, type] = {"lerp": LerpKernel, "grid_sample": GridSampleKernel}


# --------------------------------------------------------------------------- state
@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin, as listed by :func:`list` and returned by :func:`load` and
    :func:`register_cfunc` (whose example registers one).

    Examples
    --------
    >>> import dataclasses, fastinterp as fi
    >>> [f.name for f in dataclasses.fields(fi.plugins.PluginInfo)]
    ['name', 'version', 'path', 'abi', 'kernels', 'ops', 'kind']
    """

    name: str
    version: str
    path: str | None
    abi: tuple[int, int]                        # (major, minor) of its C ABI
    kernels: tuple[tuple[str, str, str], ...]   # ((op, backend, dtype), ...)
    ops: tuple[str, ...]                        # new ops it defines
    kind: str                                   # "library" or "cfunc"


def _file_id(path: str) -> tuple:
    """What tells a rebuilt file from the one mapped earlier: a new file (the
    compiler's and pip's way) has a new inode; one rewritten in place a new
    size or modification time."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


_MODE = os.RTLD_NOW | os.RTLD_LOCAL
_mapped: weakref.WeakValueDictionary[str, _Library] = weakref.WeakValueDictionary()  # realpath -> the newest live _Library of it
_copies = itertools.count()


def _is_mapped(real: str) -> bool:
    """True if the dynamic loader holds a library opened as ``real`` (by anyone)."""
    try:
        probe = ctypes.CDLL(real, mode=_MODE | getattr(os, "RTLD_NOLOAD", 0x4))
    except OSError:
        return False
    import _ctypes
    _ctypes.dlclose(probe._handle)
    return True


class _Library:
    """A dlopen()ed plugin, dlclose()d when the last kernel referring to it goes.

    Open one with :meth:`open`: dlopen() of a path already mapped returns the
    mapped library, even when the file was rebuilt since; then the current
    file is opened through a private copy (``fresh_copy``), so that a load
    always runs the code the file holds now.
    """

    def __init__(self, real: str, file_id: tuple, fresh_copy: bool):
        self.file_id = file_id
        self.fresh_copy = fresh_copy
        self.cdll = self._open_copy(real) if fresh_copy else ctypes.CDLL(real, mode=_MODE)
        # dlclose() once the object is gone: a finalizer runs after the weak references
        # (_mapped's) are cleared, so a concurrent open() cannot take back a library
        # being closed (a __del__ runs before, and open() could resurrect the object
        # whose handle it then closed). Libraries stay mapped at interpreter exit.
        weakref.finalize(self, _dlclose, self.cdll._handle).atexit = False

    @classmethod
    def open(cls, path: str) -> "_Library":
        """The library of the file at ``path`` as it is now (shared with an earlier
        load while that is alive and the file unchanged)."""
        real = os.path.realpath(path)
        file_id = _file_id(real)
        known = _mapped.get(real)
        if known is not None and known.file_id == file_id:
            return known
        lib = cls(real, file_id, _is_mapped(real))
        _mapped[real] = lib
        return lib

    @staticmethod
    def _open_copy(real: str) -> ctypes.CDLL:
        """dlopen() a copy of ``real`` at a new path (next to it, so that $ORIGIN
        dependencies resolve the same, else in a temporary folder); the copy is
        deleted at once: the mapping keeps its pages."""
        name = f".{os.path.basename(real)}.fastinterp-{os.getpid()}-{next(_copies)}"
        for folder in (os.path.dirname(real), None):
            tmp = tempfile.mkdtemp(prefix="fastinterp-plugin-") if folder is None else None
            copy = os.path.join(folder or tmp or "", name)
            try:
                shutil.copyfile(real, copy)
            except OSError:
                if tmp is not None:
                    os.rmdir(tmp)
                    raise
                continue
            try:
                return ctypes.CDLL(copy, mode=_MODE)
            finally:
                os.unlink(copy)
                if tmp is not None:
                    os.rmdir(tmp)
        raise AssertionError("unreachable: the temporary folder either works or raises")

    def entry_address(self) -> int:
        fn = getattr(self.cdll, SYMBOL)
        return ctypes.cast(fn, ctypes.c_void_p).value or 0


def _dlclose(handle: int) -> None:
    import _ctypes
    _ctypes.dlclose(handle)


def _executable(address: int) -> bool:
    """Whether ``address`` lies in executable memory (Linux: /proc/self/maps; True where
    that cannot be read): a plugin entry point defined as data would crash when called."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                span, perms = line.split(None, 2)[:2]
                lo, hi = (int(v, 16) for v in span.split("-"))
                if lo <= address < hi:
                    return "x" in perms
    except (OSError, ValueError):
        return True
    return False


_lock = fork_safe_lock(reentrant=True)
_plugins: dict[str, PluginInfo] = {}
_ops: dict[str, builtins.list[OpSpec]] = {}       # op name -> stack of OpSpec


def _fail(where: str, reason: str) -> NoReturn:
    raise PluginError(f"{where}: {reason}; nothing was registered.")


def _is_op_name(op: Any) -> TypeGuard[str]:
    """True if ``op`` can name a plugin op (else refuse it with :func:`_op_name_error`)."""
    return isinstance(op, str) and _OP_NAME.match(op) is not None


def _op_name_error(op: Any) -> str:
    """Why ``op`` cannot name a plugin op (the same words for libraries and cfuncs)."""
    return f"op name must match [a-z][a-z0-9_]*; got {op!r}"


def _optional_str(where: str, arg: str, value: Any) -> None:
    """Refuse a ``value`` for argument ``arg`` that is neither a str nor None."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{where}: {arg} must be a str or None; "
                        f"got {type(value).__name__} {value!r}.")


def _builtin_ops() -> set:
    """Every built-in op name: those registered now, the frontends' conventions, and the
    kernels the op table lists (some, like ``nca_softmax``, are registered only when
    their module is imported, and must not be claimable before that)."""
    from . import _optable
    listed = {k for record in _optable.records() for k in record.kernels}
    return {e.op for e in registry.entries() if e.source == registry.BUILTIN} | set(
        CONVENTIONS) | listed


def _ops_module_names() -> set:
    """The names ``fastinterp.ops`` defines itself (public lowercase ones): an op of
    that name could not be reached as ``fastinterp.ops.<name>``."""
    from . import ops
    return {n for n in vars(ops) if _OP_NAME.match(n)}


def _prepare(name: str, raw_kernels: Iterable[dict[str, Any]], owner: Any, where: str
             ) -> tuple[builtins.list[tuple[str, str, OpKernel]], dict[str, OpSpec],
                        builtins.list[str]]:
    """Validate kernel entries; return ``(registrations, new_specs, skipped)`` or raise
    PluginError. ``skipped`` holds a warning per entry for a device this build does
    not drive, to be issued once the plugin is registered."""
    builtin = _builtin_ops()
    regs: builtins.list[tuple[str, str, OpKernel]] = []
    specs: dict[str, OpSpec] = {}
    seen: set[Any] = set()
    skipped: builtins.list[str] = []
    for i, k in enumerate(raw_kernels):
        if not k["fn"]:
            continue  # NULL: not supported, whatever else the entry holds (policy rule 6)
        what = f"kernel {i} ({k.get('op')!r})"
        op = k.get("op")
        if not _is_op_name(op):
            _fail(where, f"{what}: {_op_name_error(op)}")
        if op not in builtin and op in _ops_module_names():
            _fail(where, f"{what}: op name must not be an attribute of fastinterp.ops "
                         f"({', '.join(sorted(_ops_module_names()))}); got {op!r}")
        if k["device_type"] != DEVICE_CPU:
            dev = _DEVICE_NAMES.get(k["device_type"], f"device type {k['device_type']}")
            skipped.append(f"{where}: {what} for {dev} skipped: this fastinterp runs plugin "
                           f"kernels on the CPU (device type {DEVICE_CPU}) only.")
            continue
        dtype = _DTYPES.get(tuple(k["dtype"]))
        if dtype is None:
            _fail(where, f"{what}: dtype must be float32 {{2, 32, 1}} or float64 {{2, 64, 1}}; "
                         f"got {{{', '.join(map(str, k['dtype']))}}}")
        if (op, dtype) in seen:
            _fail(where, f"{what}: a second kernel for ({op}, cpu, {dtype})")
        seen.add((op, dtype))
        serial = bool(k.get("flags", 0) & SERIAL)
        if op in builtin:
            if op not in CONVENTIONS:
                _fail(where, f"{what}: built-in op {op!r} cannot be replaced by a plugin kernel "
                             f"(fastinterp defines no C calling convention for it); replaceable: "
                             f"{', '.join(sorted(CONVENTIONS))}")
            kernel = CONVENTIONS[op](name, op, dtype, k["fn"], owner, serial)
            regs.append((op, dtype, kernel))
            continue
        try:
            sig = Signature.parse(k["signature"], f"{where}: {what}") if k.get("signature") else None
            params = parse_params(k.get("params"), f"{where}: {what}")
        except ValueError as exc:
            raise PluginError(f"{str(exc).rstrip('.')}; nothing was registered.") from None
        arrays = {o.name for o in sig.inputs + sig.outputs} if sig else set()
        clash = (arrays | {"out"}) & {p.name for p in params}
        if clash:
            _fail(where, f"{what}: parameter names {sorted(clash)} clash with array names")
        limits = _abi()
        if sig is not None and len(arrays) > limits.MAX_TENSORS_PER_CALL:
            _fail(where, f"{what}: at most {limits.MAX_TENSORS_PER_CALL} arrays per op; "
                         f"got {len(arrays)}")
        for kind in (float, int):
            count = sum(p.kind is kind for p in params)
            if count > limits.MAX_PARAMS_PER_KIND:
                _fail(where, f"{what}: at most {limits.MAX_PARAMS_PER_KIND} {kind.__name__} "
                             f"parameters; got {count}")
        spec = OpSpec(op, sig, params, k.get("doc"), name)
        other = specs.get(op) or (_ops[op][-1] if _ops.get(op) else None)
        if other is not None and not other.same_interface(spec):
            _fail(where, f"{what}: op {op!r} is already declared as {other.describe()!r} "
                         f"(by {other.source!r}); this kernel declares {spec.describe()!r}")
        specs.setdefault(op, spec)
        regs.append((op, dtype, OpKernel(name, op, dtype, k["fn"], owner, serial)))
    return regs, specs, skipped


def _commit(info: PluginInfo, regs: builtins.list[tuple[str, str, OpKernel]],
            specs: dict[str, OpSpec], skipped: builtins.list[str],
            stacklevel: int = 3) -> PluginInfo:
    """Register a validated plugin; ``stacklevel`` points warnings at the public caller."""
    for message in skipped:
        warnings.warn(message, PluginWarning, stacklevel=stacklevel)
    for op, dtype, kernel in regs:
        registry.register(op, "cpu", dtype, kernel, source=info.name)
    for op, spec in specs.items():
        _ops.setdefault(op, []).append(spec)
    _plugins[info.name] = info
    return info


_MAX_STRUCT_SIZE = 4096     # far above any minor's growth; a bigger size is garbage


def _check_abi(where: str, abi_info: dict[str, int] | None) -> None:
    host = _abi()
    if abi_info is None:
        _fail(where, f"{SYMBOL}() returned NULL without saying why (a plugin built for ABI "
                     f"1.1 or later says why with fi_plugin_refuse())")
    if abi_info["major"] != host.ABI_MAJOR:
        _fail(where, f"ABI major version mismatch: this fastinterp implements ABI "
                     f"{host.ABI_MAJOR}.{host.ABI_MINOR} and loads plugins built for major "
                     f"{host.ABI_MAJOR}; the plugin was built for "
                     f"{abi_info['major']}.{abi_info['minor']}. Rebuild it against "
                     f"fastinterp.get_include()")
    for struct in ("plugin", "kernel", "params"):
        if not host.MIN_SIZES[struct] <= abi_info[struct] <= _MAX_STRUCT_SIZE:
            _fail(where, f"fi_{struct}_t size mismatch: expected at least "
                         f"{host.MIN_SIZES[struct]} bytes (the ABI {host.ABI_MAJOR}.0 prefix) "
                         f"and at most {_MAX_STRUCT_SIZE}, got {abi_info[struct]}")
    if abi_info["tensor"] != host.SIZES["tensor"]:
        _fail(where, f"fi_tensor_t size mismatch: expected {host.SIZES['tensor']} bytes "
                     f"(DLPack's DLTensor), got {abi_info['tensor']}")


def load(path: str | bytes | os.PathLike[Any]) -> PluginInfo:
    """Load a plugin shared library and register its kernels.

    Parameters
    ----------
    path : str, bytes or os.PathLike
        A shared library exporting ``fastinterp_plugin`` (see ``fastinterp/plugin.h``).

    Returns
    -------
    PluginInfo
        Its name, version, ABI version, the (op, backend, dtype) keys it
        registered and the new ops it defines (callable as ``fastinterp.ops.<op>``).

    Raises
    ------
    PluginError
        (an ``ImportError``) when the file is missing or not a loadable
        library, lacks the ``fastinterp_plugin`` symbol, was built for another
        ABI major version or with too-small structs, declares a malformed
        kernel, or its name is already loaded. The message says what was
        expected and what was found; nothing is registered.

    Examples
    --------
    >>> import fastinterp as fi
    >>> fi.plugins.load("/nonexistent/libnothing.so")
    Traceback (most recent call last):
    ...
    fastinterp.plugins.PluginError: load('/nonexistent/libnothing.so'): no such file; nothing was registered.
    """
    path = _path_str("load", path)
    where = f"load({path!r})"
    if not os.path.exists(path):
        _fail(where, "no such file")
    with _lock:     # one load at a time: the library table, the entry point, the registry
        try:
            lib = _Library.open(path)
        except OSError as exc:
            _fail(where, f"not a loadable shared library ({exc})")
        return _load_library(lib, path, where)


def _path_str(op: str, path: Any) -> str:
    """``path`` (str, bytes or os.PathLike) as a str, or a TypeError naming it."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{op}: path must be a str, bytes or os.PathLike; "
                        f"got {type(path).__name__} {path!r}.")
    return os.fsdecode(path)


def _load_library(lib: _Library, path: str, where: str) -> PluginInfo:
    try:
        entry = lib.entry_address()
    except AttributeError:
        _fail(where, f"the library does not export the symbol {SYMBOL!r}; a plugin defines it "
                     f"with FI_PLUGIN_ENTRY from fastinterp/plugin.h")
    if not _executable(entry):
        _fail(where, f"the symbol {SYMBOL!r} is not a function (a variable of that name?); a "
                     f"plugin defines it with FI_PLUGIN_ENTRY from fastinterp/plugin.h, a "
                     f"function returning its fi_plugin_t")
    address, abi_info = _abi().plugin_abi(entry)
    _check_abi(where, abi_info)
    contents = _abi().plugin_contents(address)
    name = contents["name"]
    if contents["error"] is not None:
        _fail(where, f"the plugin {name!r} refused to load: {contents['error']}")
    if not name or not _PLUGIN_NAME.match(name) or name == registry.BUILTIN:
        _fail(where, f"plugin name must match [A-Za-z0-9_.-]+ and not be 'builtin'; got {name!r}")
    limit = _abi().MAX_KERNELS_PER_PLUGIN
    if not 0 <= contents["n_kernels"] <= limit or (contents["kernels_null"]
                                                   and contents["n_kernels"]):
        table = "NULL" if contents["kernels_null"] else "non-NULL"
        _fail(where, f"kernel table must hold 0 to {limit} entries; got n_kernels="
                     f"{contents['n_kernels']} with a {table} table")
    if name in _plugins:
        loaded = _plugins[name]
        origin = loaded.path if loaded.path is not None else "register_cfunc"
        _fail(where, f"a plugin named {name!r} is already loaded (from {origin}); "
                     f"unload it first")
    regs, specs, skipped = _prepare(name, contents["kernels"], lib, where)
    info = PluginInfo(name, contents["version"] or "", os.path.abspath(path),
                      (abi_info["major"], abi_info["minor"]),
                      tuple((op, "cpu", dt) for op, dt, _ in regs), tuple(specs), "library")
    return _commit(info, regs, specs, skipped, stacklevel=4)


def register_cfunc(op: str, dtype: Any, cfunc: Any, *, signature: str | None = None,
                   params: str | None = None, doc: str | None = None,
                   name: str | None = None, serial: bool = False) -> PluginInfo:
    """Register a numba ``@cfunc`` kernel through the plugin ABI.

    Parameters
    ----------
    op : str
        The op: ``"lerp"`` to replace the built-in one, or a new op name
        (then callable as ``fastinterp.ops.<op>``).
    dtype : {"float32", "float64"} or NumPy dtype
    cfunc : numba CFunc
        Compiled with ``fastinterp.numba_abi.signature``, i.e. the C kernel
        signature of ``plugin.h``; ``fastinterp.numba_abi`` has helpers to view
        the tensors as arrays.
    signature, params, doc : str, optional
        As in ``fi_kernel_t``: e.g. ``"x(...) -> out(...)"``, ``"alpha: float = 1"``.
    name : str, optional
        The plugin name to list and unload it by (default ``"numba.<op>"``).
        Several kernels may be registered under one name.
    serial : bool
        The kernel is not reentrant: serialise calls (``FI_KERNEL_SERIAL``).

    Returns
    -------
    PluginInfo

    Examples
    --------
    >>> import numpy as np, fastinterp as fi
    >>> from numba import cfunc
    >>> from fastinterp import numba_abi as nb
    >>> @cfunc(nb.signature)
    ... def twice(inputs, n_in, outputs, n_out, params, err, err_size):
    ...     x, y = nb.flat(inputs, 0, np.float64), nb.flat(outputs, 0, np.float64)
    ...     for i in range(x.size):
    ...         y[i] = 2 * x[i]
    ...     return 0
    >>> _ = fi.plugins.register_cfunc("twice", "float64", twice, signature="x(...) -> out(...)")
    >>> fi.ops.twice(np.arange(3.0))
    array([0., 2., 4.])
    >>> fi.plugins.unload("numba.twice")
    """
    where = f"register_cfunc({op!r})"
    if not _is_op_name(op):
        _fail(where, _op_name_error(op))
    address = getattr(cfunc, "address", None)
    sig = getattr(cfunc, "_sig", None)
    if address is None or sig is None:
        raise TypeError(f"{where}: cfunc must be a numba @cfunc compiled with "
                        f"fastinterp.numba_abi.signature; got {type(cfunc).__name__}.")
    from . import numba_abi
    if sig != numba_abi.signature:
        raise TypeError(f"{where}: cfunc must have the signature {numba_abi.signature} "
                        f"(fastinterp.numba_abi.signature); got {sig}.")
    try:
        dtype_name = str(np.dtype(dtype)) if dtype is not None else "None"
    except TypeError:                     # not a dtype at all ("bogus")
        dtype_name = repr(dtype)
    code = {v: k for k, v in _DTYPES.items()}.get(dtype_name)
    if code is None:
        raise TypeError(f"{where}: dtype must be float32 or float64; got {dtype_name}.")
    for arg, value in (("signature", signature), ("params", params), ("doc", doc),
                       ("name", name)):
        _optional_str(where, arg, value)
    serial = check_bool(where, "serial", serial)
    name = f"numba.{op}" if name is None else name
    if not _PLUGIN_NAME.match(name) or name == registry.BUILTIN:
        raise ValueError(f"{where}: name must match [A-Za-z0-9_.-]+ and not be 'builtin'; "
                         f"got {name!r}.")
    raw = {"op": op, "device_type": DEVICE_CPU, "dtype": code, "fn": address,
           "signature": signature, "params": params, "doc": doc,
           "flags": SERIAL if serial else 0}
    with _lock:
        old = _plugins.get(name)
        if old is not None and old.kind != "cfunc":
            _fail(where, f"a plugin library named {name!r} is already loaded")
        if old is not None and (op, "cpu", dtype_name) in old.kernels:
            _fail(where, f"plugin {name!r} already has a kernel for ({op}, cpu, {dtype_name})")
        regs, specs, skipped = _prepare(name, [raw], cfunc, where)
        specs = {o: s for o, s in specs.items() if old is None or o not in old.ops}
        host = _abi()
        info = PluginInfo(name, "numba", None, (host.ABI_MAJOR, host.ABI_MINOR),
                          (old.kernels if old else ()) + ((op, "cpu", dtype_name),),
                          (old.ops if old else ()) + tuple(specs), "cfunc")
        return _commit(info, regs, specs, skipped)


def unload(name: str) -> None:
    """Unregister every kernel of plugin ``name``; the kernels below them apply again.

    A built-in kernel the plugin replaced is restored. The library itself is
    closed once no kernel object refers to it any more.

    Raises
    ------
    TypeError
        If ``name`` is not a str.
    ValueError
        If no plugin of that name is loaded (the message lists those that are).

    Examples
    --------
    >>> import fastinterp as fi
    >>> fi.plugins.unload("no_such_plugin")
    Traceback (most recent call last):
    ...
    ValueError: unload: name must be a loaded plugin (none); got 'no_such_plugin'.
    """
    if not isinstance(name, str):
        raise TypeError(f"unload: name must be a str (a plugin's name, PluginInfo.name); got "
                        f"{type(name).__name__} {shown(name)}.")
    with _lock:
        if name not in _plugins:
            loaded = ", ".join(sorted(_plugins)) or "none"
            raise ValueError(f"unload: name must be a loaded plugin ({loaded}); got {name!r}.")
        registry.unregister(name)
        for op in builtins.list(_ops):
            _ops[op] = [s for s in _ops[op] if s.source != name]
            if not _ops[op]:
                del _ops[op]
        del _plugins[name]


def list_plugins() -> builtins.list[PluginInfo]:
    """The loaded plugins, as :class:`PluginInfo` records, in load order.

    Examples
    --------
    >>> import fastinterp as fi
    >>> [p.name for p in fi.plugins.list()]
    []
    """
    with _lock:
        return builtins.list(_plugins.values())


list = list_plugins


def discover(group: str = ENTRY_POINT_GROUP) -> builtins.list[PluginInfo]:
    """Load the plugins that installed packages declare in the entry-point group.

    An entry point may name a path (str, bytes or os.PathLike) to a plugin
    library, a list of paths, or a callable returning a path, a list of paths,
    or None (for a callable that registers kernels itself, e.g. with
    :func:`register_cfunc`). Plugins whose
    name is already loaded are skipped; one that fails to load is skipped
    with a :class:`PluginWarning` saying why, so one broken package does not
    hide the others. Discovery never runs at ``import fastinterp``.

    Returns
    -------
    list of PluginInfo
        The plugins this call loaded.

    Examples
    --------
    A package declares its plugin in its ``pyproject.toml``::

        [project.entry-points."fastinterp.plugins"]
        mykernels = "mykernels:library_path"

    and its users call ``fi.plugins.discover()`` once per process. Another group
    may be named (here one that no installed package declares):

    >>> import fastinterp as fi
    >>> fi.plugins.discover("example.no_such_group")
    []
    """
    if not isinstance(group, str):
        raise TypeError(f"discover: group must be a str (an entry-point group); got "
                        f"{type(group).__name__} {shown(group)}.")
    from importlib.metadata import entry_points
    loaded: builtins.list[PluginInfo] = []
    for ep in entry_points(group=group):
        try:
            target = ep.load()
            if callable(target):
                before = set(_plugins)
                target = target()
                loaded.extend(_plugins[n] for n in _plugins if n not in before)
            for path in _entry_point_paths(target):
                try:
                    loaded.append(load(path))
                except PluginError as exc:
                    if "is already loaded" not in str(exc):
                        raise
        except Exception as exc:
            warnings.warn(f"discover: entry point {ep.name!r} ({ep.value}) skipped: {exc}",
                          PluginWarning, stacklevel=2)
    return loaded


def _entry_point_paths(target: Any) -> builtins.list:
    """The plugin paths an entry point (or the callable it names) gave."""
    if target is None:
        return []
    if isinstance(target, (str, bytes, os.PathLike)):
        return [target]
    if isinstance(target, collections.abc.Iterable) and not isinstance(target, dict):
        return builtins.list(target)
    raise TypeError(f"it must give a path (str, bytes or os.PathLike), a list of paths, a "
                    f"callable returning one of those, or None; got {type(target).__name__} "
                    f"{target!r}.")


# --------------------------------------------------------------------------- new ops
def op_spec(op: str) -> OpSpec | None:
    """The active declaration of plugin op ``op`` (None if no plugin provides it)."""
    with _lock:
        stack = _ops.get(op)
        return stack[-1] if stack else None


def op_names() -> builtins.list[str]:
    with _lock:
        return sorted(_ops)


_NOT_GIVEN = object()     # a parameter left out of the call (None is a value, refused)


def _param_values(op: str, spec: OpSpec, given: dict[str, Any]
                  ) -> tuple[tuple[float, ...], tuple[int, ...]]:
    floats: builtins.list[float] = []
    ints: builtins.list[int] = []
    for p in spec.params:
        value = given.pop(p.name, _NOT_GIVEN)
        if value is _NOT_GIVEN:
            value = p.default
            if value is None:
                raise TypeError(f"{op}: missing required parameter {p.name!r} "
                                f"({p.kind.__name__}).")
        if p.kind is float:
            floats.append(param_value(op, p, value))
        else:
            ints.append(int(param_value(op, p, value)))
    return tuple(floats), tuple(ints)


@public_call
def call_op(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run plugin op ``op`` (the body of ``fastinterp.ops.<op>(...)``): on the kernel of
    the declaration its arguments were checked against (a plugin swapped in between, by
    another thread, makes the call start again with the new one)."""
    while True:
        result = _call_declared(op, op_spec(op), args, kwargs)
        if result is not _SWAPPED:
            return result


_SWAPPED = object()      # _call_declared: the op's declaration changed during the call


def _call_declared(op: str, spec: OpSpec | None, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
    if spec is None:
        raise NotImplementedError(f"ops.{op}: no loaded plugin provides this op "
                                  f"(loaded ops: {', '.join(op_names()) or 'none'}).")
    kwargs = dict(kwargs)
    out = kwargs.pop("out", None)
    sig = spec.signature
    names = [o.name for o in sig.inputs] if sig else [f"x{i}" for i in range(len(args))]
    if len(args) > len(names):
        raise TypeError(f"{op}: expected {len(names)} arrays ({', '.join(names)}); got {len(args)}.")
    named = dict(zip(names, args))
    for n in names[len(args):]:
        if n not in kwargs:
            raise TypeError(f"{op}: missing array argument {n!r}.")
        named[n] = kwargs.pop(n)
    if not names:
        raise TypeError(f"{op}: at least one input array is required; got none.")
    floats, ints = _param_values(op, spec, kwargs)
    if kwargs:
        allowed = ", ".join(p.name for p in spec.params) or "none"
        raise TypeError(f"{op}: unexpected keyword argument {next(iter(kwargs))!r}; "
                        f"parameters: {allowed}.")
    p = begin_named(op, named)
    for n in names:
        check_array(op, n, p.arrays[n])
    dtype = same_dtype(op, **{n: p.arrays[n] for n in names})
    with _lock:     # the kernel of the declaration read above (a plugin may be swapped)
        if op_spec(op) is not spec:
            return _SWAPPED
        kernel = registry.lookup(op, p.backend, dtype)
    arrays = [contiguous_input(p.arrays[n]) for n in names]
    n_out = len(sig.outputs) if sig else None
    shapes = sig.output_shapes(op, arrays) if sig else None
    if out is None:
        if shapes is None or any(sh is None or None in sh for sh in shapes):
            raise ValueError(f"{op}: out must be given: the signature "
                             f"{sig.text if sig else '(none)'!r} does not determine the output "
                             f"shape; got out=None.")
        assert sig is not None                 # (the shapes come from it)
        for operand, shape in zip(sig.outputs, shapes):     # (a signature may ask for any size)
            nbytes = np.dtype(dtype).itemsize
            for d in shape or ():
                nbytes *= int(d or 0)
            _memory.check_fits(op, f"output {operand.name} of shape {shape_str(shape)}", nbytes)
        pairs = [p.empty(shape, dtype) for shape in shapes]
    else:
        outs = _outputs(op, out, n_out)
        pairs = [p.adopt_out(o) for o in outs]
        if sig is not None:
            sig.check_outputs(op, arrays, [o_k for _, o_k in pairs])
        others = dict(zip(names, arrays))      # inputs, then the outputs before each one
        for i, (_, o_k) in enumerate(pairs):
            check_out(op, o_k, o_k.shape, dtype, others,
                      name="out" if len(pairs) == 1 else f"out[{i}]")
            others[f"out[{i}]"] = o_k
    if any(k.size for _, k in pairs):      # kernels never see only empty outputs
        kernel(tuple(k for _, k in pairs), tuple(arrays), floats, ints)
    results = tuple(p.wrap(c) for c, _ in pairs)
    return results[0] if len(results) == 1 else results


def _outputs(op: str, out: Any, n_out: int | None) -> tuple[Any, ...]:
    """The caller's ``out=``: one array, or a tuple of ``n_out`` arrays."""
    if isinstance(out, builtins.list):
        raise TypeError(f"{op}: out must be an array or a tuple of arrays; got a list.")
    outs = out if isinstance(out, tuple) else (out,)
    if n_out is not None and len(outs) != n_out:
        raise ValueError(f"{op}: out must be {n_out} array(s); got {len(outs)}.")
    for i, o in enumerate(outs):
        if o is None and len(outs) > 1:
            raise TypeError(f"{op}: out[{i}] must be an array; got None (a tuple of outputs "
                            f"gives every one).")
    return outs


# --------------------------------------------------------------------------- built-ins for C
def builtin_capsule() -> Any:
    """fastinterp's CPU kernels for C callers: a PyCapsule named ``"fastinterp.builtin_kernels"``.

    It holds a ``const fi_plugin_t*`` whose table lists the built-in kernels
    (op, device, dtype, function pointer), in the layout of
    ``fastinterp/plugin.h``; ``fi_find_kernel()`` looks one up. The same
    pointer is returned by the C function ``fastinterp_builtin_kernels()``
    exported by the extension ``fastinterp._cpu.abi``.

    Examples
    --------
    >>> import ctypes, fastinterp as fi
    >>> capsule = fi.plugins.builtin_capsule()
    >>> ctypes.pythonapi.PyCapsule_IsValid.restype = ctypes.c_int
    >>> ctypes.pythonapi.PyCapsule_IsValid(ctypes.py_object(capsule),
    ...                                    b"fastinterp.builtin_kernels")
    1
    """
    return _abi().builtin_capsule()


def builtin_kernels() -> builtins.list[dict[str, Any]]:
    """The (op, device, dtype) keys and C addresses of the built-in ABI table.

    Examples
    --------
    >>> import fastinterp as fi
    >>> [(k["op"], k["dtype"]) for k in fi.plugins.builtin_kernels() if k["op"] == "lerp"]
    [('lerp', 'float32'), ('lerp', 'float64')]
    """
    contents = _abi().plugin_contents(_abi().builtin_address())
    return [{"op": k["op"], "device": _DEVICE_NAMES[k["device_type"]].lower(),
             "dtype": _DTYPES[tuple(k["dtype"])], "address": k["fn"], "doc": k["doc"]}
            for k in contents["kernels"]]
