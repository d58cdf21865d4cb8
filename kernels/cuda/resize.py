"""numba.cuda resize kernels: the two separable passes of fastinterp.resize.

Every resize mode and every backward pass is ``out[p] = A_y @ x[p] @ A_x.T``
per plane ``p``, with each axis given as a tap table (``idx[k, o]``,
``w[k, o]``; see ``fastinterp.resize.AxisTable``; backward passes get the
transposed tables). Arrays are planes ``(P, rows, row_length)`` where a row
holds ``W * C`` values (``C = 1`` for NCHW, the channel count for NHWC).
Each output value is a gather summed over its taps in a fixed order, so the
results are deterministic (no atomics).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ._support import THREADS_1D, DeviceCache, blocks_1d


@cuda.jit(device=True, inline=True)
def _unflatten(i, dst):
    """(plane, row, column) of flat index i into dst (P, rows, length)."""
    length = dst.shape[2]
    pr = i // length
    return pr // dst.shape[1], pr % dst.shape[1], i % length


# float32 tables of more taps than this are summed in float64 and rounded once, as on the
# CPU (kernels/cpu/resize.pyx, WIDE_TAPS): a float32 sum of K taps drifts by up to ~K/2 ulps.
WIDE_TAPS = 16


@cuda.jit(device=True, inline=True)
def _hsum(src, p, r, idx, w, x, channels, c, zero):
    """sum_k w[k, x] * src[p, r, idx[k, x]*C + c] over the taps of non-zero weight, in
    the type of ``zero`` (the data's, or float64)."""
    acc = zero
    for k in range(idx.shape[0]):
        wk = w[k, x]
        if wk != 0:   # zero-weight taps are not read: 0 * inf would be NaN
            acc += (zero + wk) * src[p, r, idx[k, x] * channels + c]
    return acc


@cuda.jit
def _hpass(dst, src, idx, w, channels, zero):
    """One thread computes one value dst[p, r, j]: the horizontal taps of row r."""
    i = cuda.grid(1)
    if i >= dst.size:
        return
    p, r, j = _unflatten(i, dst)
    x = j // channels
    c = j - x * channels
    dst[p, r, j] = _hsum(src, p, r, idx, w, x, channels, c, zero)


@cuda.jit
def _vpass(dst, src, idx, w, zero):
    """One thread computes one value dst[p, y, j]: the vertical taps of column j, in the
    type of ``zero``."""
    i = cuda.grid(1)
    if i >= dst.size:
        return
    p, y, j = _unflatten(i, dst)
    acc = zero
    for k in range(idx.shape[0]):
        wk = w[k, y]
        if wk != 0:   # zero-weight taps are not read: 0 * inf would be NaN
            acc += (zero + wk) * src[p, idx[k, y], j]
    dst[p, y, j] = acc


_FLT_MAX = float(np.finfo(np.float32).max)


@cuda.jit
def _redo_inf_means(out, x, yi, yw, xi, xw, channels):
    """float32 means (non-negative weights summing to 1 but for their rounding) that came
    out inf: each recomputed from its window in float64, as the CPU redoes them; a finite
    mean of finite pixels is at most the largest float32 times the weights' rounding and
    is rounded to it (a window holding an inf stays inf)."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    p, y, j = _unflatten(i, out)
    if not math.isinf(out[p, y, j]):
        return
    col = j // channels
    c = j - col * channels
    acc = 0.0
    for ky in range(yi.shape[0]):
        wy = yw[ky, y]
        if wy != 0:
            row = 0.0
            for kx in range(xi.shape[0]):
                wx = xw[kx, col]
                if wx != 0:
                    row += np.float64(wx) * np.float64(x[p, yi[ky, y], xi[kx, col] * channels + c])
            acc += np.float64(wy) * row
    if math.isfinite(acc):
        acc = min(max(acc, -_FLT_MAX), _FLT_MAX)
    out[p, y, j] = acc


def _launch(kernel, dst, *args, stream):
    n = math.prod(dst.shape)
    kernel[blocks_1d(n), THREADS_1D, stream](dst, *args)


# Device copies of the (cached, immutable) tap tables, per table and device.
_on_device = DeviceCache()


def _device_table(table, stream):
    """(idx, w) of an AxisTable on the current device, copied once per device; a
    stream other than the uploading one waits for the upload's event."""
    return _on_device.get(table, lambda: (table.idx, table.w), stream)


def separable(out, x, ytab, xtab, channels, stream=0):
    """``out[p] = A_y @ x[p] @ A_x.T``: out (P, H_out, W_out*C), x (P, H_in, W_in*C).

    Runs rows-first or columns-first, whichever touches fewer values; the
    intermediate is one device array of the smaller shape.
    """
    P, h_in, len_in = x.shape
    _, h_out, len_out = out.shape
    yi, yw = _device_table(ytab, stream)
    xi, xw = _device_table(xtab, stream)
    h_first = h_in * len_out * xtab.taps + h_out * len_out * ytab.taps
    v_first = h_out * len_in * ytab.taps + h_out * len_out * xtab.taps
    wide = np.dtype(x.dtype) == np.float32 and max(ytab.taps, xtab.taps) > WIDE_TAPS
    acc_dtype = np.dtype(np.float64) if wide else np.dtype(x.dtype)
    zero = acc_dtype.type(0)
    if h_first <= v_first:
        tmp = cuda.device_array((P, h_in, len_out), dtype=acc_dtype, stream=stream)
        _launch(_hpass, tmp, x, xi, xw, channels, zero, stream=stream)
        _launch(_vpass, out, tmp, yi, yw, zero, stream=stream)
    else:
        tmp = cuda.device_array((P, h_out, len_in), dtype=acc_dtype, stream=stream)
        _launch(_vpass, tmp, x, yi, yw, zero, stream=stream)
        _launch(_hpass, out, tmp, xi, xw, channels, zero, stream=stream)
    from fastinterp.resize import _averages
    if np.dtype(out.dtype) == np.float32 and _averages(ytab, xtab):    # forward means only
        _launch(_redo_inf_means, out, x, yi, yw, xi, xw, channels, stream=stream)
