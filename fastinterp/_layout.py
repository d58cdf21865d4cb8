"""Image layouts shared by the image ops (resize, adaptive_avg_pool2d, grid_sample).

One option, ``layout=``, names the axes of an image argument:

========  =====================  ==========================================
layout    shape                  meaning
========  =====================  ==========================================
"NCHW"    (N, C, H, W)           a batch, channels first (PyTorch's default)
"NHWC"    (N, H, W, C)           a batch, channels last (OpenCV/TF style)
"CHW"     (C, H, W)              one image, channels first (torch unbatched)
"HWC"     (H, W, C)              one image, channels last (PIL/OpenCV arrays)
"HW"      (H, W)                 one single-channel image
========  =====================  ==========================================

The rule, with no guessing from sizes or dtypes: ``layout=None`` (the
default) reads a 4-D array as "NCHW" and a 2-D array as "HW"; a 3-D array
has no default, because ``(C, H, W)`` (torch) and ``(H, W, C)`` (an image from
PIL or OpenCV) cannot be told apart: pass ``layout="CHW"`` or ``"HWC"``. An
explicit layout must match the array's number of axes. Outputs keep the
input's layout. The kernels see every layout as a batched 4-D view
(no copy): "CHW" and "HW" as NCHW with N = 1 (and C = 1), "HWC" as NHWC.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from ._validate import check_array, shape_str, symbolic

__all__ = ["LAYOUTS", "Layout", "resolve", "as_batch", "from_channels_last"]

LAYOUTS = ("NCHW", "NHWC", "CHW", "HWC", "HW")
_AXES = {"NCHW": "(N, C, H, W)", "NHWC": "(N, H, W, C)", "CHW": "(C, H, W)",
         "HWC": "(H, W, C)", "HW": "(H, W)"}
_DEFAULT_BY_NDIM = {4: "NCHW", 2: "HW"}


@dataclass(frozen=True)
class Layout:
    """A resolved layout: its name and how it maps to a batched 4-D view."""

    name: str

    @property
    def nhwc(self) -> bool:
        """True when the kernels see this layout as NHWC (channels interleaved)."""
        return self.name in ("NHWC", "HWC")

    @property
    def batched(self) -> bool:
        return self.name in ("NCHW", "NHWC")

    @property
    def ndim(self) -> int:
        return len(self.name)

    @property
    def axes(self) -> str:
        """The axes in words, e.g. ``"(H, W, C)"``."""
        return _AXES[self.name]

    def split(self, shape) -> tuple[int, int, int, int]:
        """``(N, C, H, W)`` of a shape in this layout (a torch.SymInt stays symbolic)."""
        d = dict(zip(self.name, (s if type(s) is int or symbolic(s) else int(s) for s in shape)))
        return d.get("N", 1), d.get("C", 1), d["H"], d["W"]

    def join(self, n, c, h, w) -> tuple[int, ...]:
        """The shape in this layout of the image(s) ``(N, C, H, W)``."""
        d = {"N": n, "C": c, "H": h, "W": w}
        return tuple(d[a] for a in self.name)

    def batched_shape(self, shape) -> tuple[int, int, int, int]:
        """The 4-D shape (NCHW or NHWC, as :attr:`nhwc` says) the kernels see."""
        n, c, h, w = self.split(shape)
        return (n, h, w, c) if self.nhwc else (n, c, h, w)

    def as_batched(self, arr):
        """A 4-D view of a C-contiguous array (the array itself when batched)."""
        return arr if self.batched else arr.reshape(self.batched_shape(arr.shape))


def check_layout_name(op: str, layout) -> None:
    """``layout`` must be None or one of :data:`LAYOUTS` (a ValueError naming them)."""
    if layout is not None and (not isinstance(layout, str) or layout not in LAYOUTS):
        raise ValueError(f"{op}: layout must be one of {', '.join(map(repr, LAYOUTS))} or "
                         f"None; got {layout!r}.")


def resolve(op: str, name: str, arr, layout) -> Layout:
    """The :class:`Layout` of ``arr`` given the caller's ``layout`` (None: by ndim).

    Raises ValueError for an unknown layout, a layout that does not match the
    array's number of axes, and a 3-D array without an explicit layout;
    TypeError when ``arr`` is not an array at all (None, a scalar).
    """
    if not hasattr(arr, "shape"):          # None, a Python scalar (NumPy scalars pass)
        check_array(op, name, arr)
    ndim = len(arr.shape)
    if layout is None:
        layout = _DEFAULT_BY_NDIM.get(ndim)
        if layout is None:
            hint = (" a 3-D array needs layout='CHW' (channels first, as torch) or "
                    "layout='HWC' (an (H, W, C) image from PIL or OpenCV)" if ndim == 3 else
                    " the default layout reads 4-D arrays as (N, C, H, W) and 2-D as (H, W)")
            raise ValueError(f"{op}: {name} must have shape (N, C, H, W), (H, W), or another "
                             f"shape named by layout=;{hint}; got {shape_str(arr.shape)}.")
    else:
        check_layout_name(op, layout)
    lay = Layout(layout)
    if ndim != lay.ndim:
        raise ValueError(f"{op}: {name} must have shape {lay.axes} for layout={layout!r}; "
                         f"got {shape_str(arr.shape)}.")
    return lay


def as_batch(op: str, name: str, x, layout, nd_ok: bool = False):
    """``(x as a batch, its batched layout, a function putting a result back)`` for a
    lazy or traced array ``x`` (JAX, Dask: anything with ``shape`` and NumPy indexing).

    One image ('CHW', 'HWC', 'HW', or a 2-D array with layout None) becomes a batch
    of one by leading axes of size 1 (``x[None]``, no copy, and transforms see
    through it), and a result loses them by indexing (``y[0]``): unlike a reshape,
    indexing keeps a Dask array's chunks as they are, empty ones included. Batches
    pass as they are, as do 5-D volumes and, with ``nd_ok``, 3-D 1-D data (N, C, L)
    with layout None.
    """
    ndim = len(x.shape)
    if ndim == 5 or (nd_ok and ndim == 3 and layout is None):
        return x, layout, lambda y: y
    lay = resolve(op, name, x, layout)
    if lay.batched:
        return x, lay.name, lambda y: y
    lead = 4 - lay.ndim            # the axes the batched layout adds in front: N (and C)

    def back(y):
        return y[(0,) * lead]

    return x[(None,) * lead], "NHWC" if lay.nhwc else "NCHW", back


def from_channels_last(op: str, layout, channels_last):
    """``layout`` given the deprecated ``channels_last`` flag.

    ``channels_last=True`` means ``layout="NHWC"`` and warns (FutureWarning);
    ``False`` is the default layout and passes silently (callers that spell
    out the old default keep working quietly); giving a layout that
    contradicts it is a ValueError.
    """
    if channels_last is None:
        return layout
    if not isinstance(channels_last, bool) and type(channels_last).__name__ != "bool_":
        raise TypeError(f"{op}: channels_last must be a bool; got "
                        f"{type(channels_last).__name__} {channels_last!r}.")
    if channels_last:
        warnings.warn(f"{op}: channels_last is deprecated; use layout='NHWC'.",
                      FutureWarning, stacklevel=3)
    implied = "NHWC" if channels_last else "NCHW"
    if layout is not None and layout != implied:
        raise ValueError(f"{op}: channels_last={bool(channels_last)} contradicts "
                         f"layout={layout!r}; pass layout only.")
    return implied
