"""Type aliases of the public array API (for annotations and type checkers).

The ops take NumPy arrays, CuPy and other CUDA arrays, DLPack producers (torch,
JAX), lists and Python or NumPy scalars, and return the caller's array type.
Their annotations say so with two overloads each:

* every array argument :data:`NumPyLike` (a NumPy array, a nested list or
  tuple of numbers, a number) and ``out`` None or a NumPy array: the result
  is an :data:`Array` (``numpy.ndarray``), as at run time;
* anything else (a torch tensor, a CuPy array, a mix): the result is ``Any``,
  the caller's own type, which a type checker cannot follow through DLPack.

``NumPyLike`` deliberately leaves out ``numpy.typing.ArrayLike``'s objects
with ``__array__``: a torch tensor has one, but comes back as a torch tensor.
Options with a fixed set of values are ``Literal`` strings (the runtime tuples
they mirror are named next to each; ``tests/test_typing.py`` keeps them equal).

Nothing here runs at import time beyond building the aliases.
"""
from __future__ import annotations

from typing import (Any, Iterable, Iterator, Literal, Protocol, SupportsFloat, SupportsIndex,
                    TypeVar, Union)

import numpy as np
from numpy.typing import NDArray

__all__ = ["Array", "Axis", "Fill", "Flag", "ImageLayout", "IntFlag", "NestedSequence",
           "NumPyLike", "PaddingMode", "Point", "PoolSize", "Real", "Reals", "ResizeMatch",
           "ResizeMode", "SampleMode", "Scalar", "Shape", "Size", "Sizes", "SlerpNorm",
           "WarpMatch"]

_T_co = TypeVar("_T_co", covariant=True)


class NestedSequence(Protocol[_T_co]):
    """A list or tuple of ``_T_co``, or of such sequences, nested to any depth (NumPy's
    private ``_NestedSequence``). Arrays of the frameworks do not match it (they have no
    ``count``/``index``), so a torch tensor is not mistaken for a list."""

    def __len__(self, /) -> int: ...
    def __getitem__(self, index: int, /) -> _T_co | NestedSequence[_T_co]: ...
    def __contains__(self, x: object, /) -> bool: ...
    def __iter__(self, /) -> Iterator[_T_co | NestedSequence[_T_co]]: ...
    def __reversed__(self, /) -> Iterator[_T_co | NestedSequence[_T_co]]: ...
    def count(self, value: Any, /) -> int: ...
    def index(self, value: Any, /) -> int: ...


#: What a NumPy caller gets back: ``numpy.ndarray`` (its dtype follows the inputs).
Array = NDArray[Any]
#: A real number: Python (bool and int included, as type checkers promote them) or NumPy.
Scalar = Union[float, np.number[Any], np.bool_]
#: An array argument that runs on NumPy and gives an ndarray back: an ndarray (memmaps
#: and other subclasses too), a number, or a (nested) list or tuple of numbers or arrays.
NumPyLike = Union[NDArray[Any], Scalar, NestedSequence[Union[Scalar, NDArray[Any]]]]

#: A switch that must be a bool (``check_bool``): Python's or NumPy's.
Flag = Union[bool, np.bool_]
#: A switch that may also be an int (``check_flag``: knn's return_distances, progress).
IntFlag = Union[int, np.bool_, np.integer[Any]]
#: An axis index (slerp's ``axis``): a Python or NumPy int.
Axis = Union[int, np.integer[Any]]
#: One real number: a Python or NumPy number, or a one-element array of any framework
#: (anything with ``__float__``).
Real = SupportsFloat
#: One real number or one per axis (resize's ``scale_factor``).
Reals = Union[SupportsFloat, Iterable[SupportsFloat]]
#: Axis sizes, e.g. ``(N, C, H, W)``: a tuple or list of ints (or 0-d integer arrays), or a
#: 1-D integer array or tensor. (``Iterable``: what the checks read with ``tuple()``;
#: they refuse strings, sets and mappings at run time.)
Sizes = Iterable[SupportsIndex]
#: resize's ``size``: one int for every axis, or one per axis.
Size = Union[SupportsIndex, Iterable[SupportsIndex]]
#: The adaptive pools' ``output_size``: one int, or one per axis (None keeps that extent).
PoolSize = Union[SupportsIndex, Iterable[Union[SupportsIndex, None]]]
#: A backward's ``input_size``: the forward input's shape, or that input itself.
Shape = Union[Iterable[SupportsIndex], NDArray[Any]]
#: A point ``(x, y)`` (rotate's ``center``): two real numbers.
Point = Iterable[SupportsFloat]
#: ``fill`` of 'constant' padding: one number, or one per channel.
Fill = Union[SupportsFloat, Iterable[SupportsFloat], None]

#: grid_sample's and the warps' ``mode`` (``fastinterp.sample.MODES``).
SampleMode = Literal["bilinear", "nearest", "bicubic"]
#: grid_sample's and the warps' ``padding_mode`` (``fastinterp.sample.PADDINGS``).
PaddingMode = Literal["zeros", "border", "reflection", "constant", "wrap"]
#: The image ops' ``layout`` (``fastinterp._layout.LAYOUTS``); None reads it from the rank.
ImageLayout = Literal["NCHW", "NHWC", "CHW", "HWC", "HW"]
#: The warps' ``match`` (``fastinterp.warp.MATCHES``).
WarpMatch = Literal["opencv", "torch"]
#: resize's ``mode``: the image modes (``fastinterp.resize.MODES``) and those of 1-D
#: data and volumes ('linear', 'trilinear').
ResizeMode = Literal["nearest", "nearest-exact", "bilinear", "bicubic", "area", "lanczos",
                     "linear", "trilinear"]
#: resize's ``match`` (``fastinterp.resize.MATCHES``).
ResizeMatch = Literal["torch", "opencv", "pil"]
#: slerp's ``norm`` (``fastinterp.blend.SLERP_NORMS``).
SlerpNorm = Literal["linear", "formula"]
