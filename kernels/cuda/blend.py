"""numba.cuda blend kernels: lerp (broadcasting over up to 4 coalesced axes)."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ._support import THREADS_1D, blocks_1d

MAX_RANK = 4


@cuda.jit(device=True, inline=True)
def _lerp_one(a, b, w):
    if abs(w) < 0.5:
        return a + w * (b - a)
    return b - (b - a) * (1 - w)


@cuda.jit(device=True, inline=True)
def _at(x, i0, i1, i2, i3):
    """x[i...] with size-1 axes broadcast."""
    return x[i0 if x.shape[0] > 1 else 0, i1 if x.shape[1] > 1 else 0,
             i2 if x.shape[2] > 1 else 0, i3 if x.shape[3] > 1 else 0]


@cuda.jit
def _lerp_array_weight(out, a, b, t):
    """One thread computes one element of the 4-D output."""
    i = cuda.grid(1)
    n1, n2, n3 = out.shape[1], out.shape[2], out.shape[3]
    if i >= out.shape[0] * n1 * n2 * n3:
        return
    i3 = i % n3
    r = i // n3
    i2 = r % n2
    r //= n2
    i1 = r % n1
    i0 = r // n1
    out[i0, i1, i2, i3] = _lerp_one(_at(a, i0, i1, i2, i3), _at(b, i0, i1, i2, i3),
                                    _at(t, i0, i1, i2, i3))


@cuda.jit
def _lerp_scalar_weight(out, a, b, w):
    """One thread computes one element of the 4-D output; the weight is a scalar."""
    i = cuda.grid(1)
    n1, n2, n3 = out.shape[1], out.shape[2], out.shape[3]
    if i >= out.shape[0] * n1 * n2 * n3:
        return
    i3 = i % n3
    r = i // n3
    i2 = r % n2
    r //= n2
    i1 = r % n1
    i0 = r // n1
    out[i0, i1, i2, i3] = _lerp_one(_at(a, i0, i1, i2, i3), _at(b, i0, i1, i2, i3),
                                    w)


def _as4d(x):
    if x.ndim > MAX_RANK:
        raise NotImplementedError(
            f"lerp: on CUDA the broadcast pattern must coalesce to at most {MAX_RANK} axes; "
            f"got {x.ndim}. Make the operands contiguous with the full shape first.")
    return x.reshape((1,) * (MAX_RANK - x.ndim) + tuple(x.shape))


def lerp(out, a, b, t, stream=0):
    """Launch lerp over ``out`` (contiguous); ``t`` is a device array or a host scalar."""
    n = math.prod(out.shape)
    out4, a4, b4 = _as4d(out), _as4d(a), _as4d(b)
    if isinstance(t, (float, np.floating)):
        _lerp_scalar_weight[blocks_1d(n), THREADS_1D, stream](out4, a4, b4, t)
    else:
        _lerp_array_weight[blocks_1d(n), THREADS_1D, stream](out4, a4, b4, _as4d(t))
