"""numba.cuda kernels for affine_grid and grid_sample (NCHW), forward and backward.

The coordinate arithmetic mirrors kernels/cpu/_taps.pxd (PyTorch's semantics,
NaN handling included). The backward offers a deterministic mode: grad_input
is accumulated in 64-bit fixed point with integer atomics (integer addition
is associative, so the order in which threads add does not matter), then
converted to floating point. The fixed-point scale 2**k is chosen per call
from a bound on any partial sum, ``B = f * H_out * W_out * max|grad_output|``
(``f`` = 1 for bilinear/nearest, 2 for bicubic), as the largest k with
``B * 2**k < 2**62`` (applied as two float64 factors: ``2**k`` alone overflows
for subnormal gradients): no overflow is possible and each addition is rounded to
``2**-k`` (about ``2**-62 * B``, far below float32 resolution and close to
float64's). Cost: an int64 buffer the size of input, one max reduction, one
conversion pass and 64-bit atomics (not yet timed on GPU hardware). The
scale must be known on the host before the scatter is launched, so this
mode synchronises with the caller's stream twice (only that stream): once to
read max|grad_output|, once to read the non-finite flag after the scatter.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from ._support import THREADS_1D, blocks_1d, flat, read_to_host, to_device

ZEROS, BORDER, REFLECTION = 0, 1, 2
NEAREST, BILINEAR, BICUBIC = 0, 1, 2
A = -0.75


# --------------------------------------------------------------------------- device helpers

@cuda.jit(device=True, inline=True)
def _trunc(x):
    """Truncation as a float (NaN, inf and |x| >= 2**52 pass through)."""
    if not (abs(x) < 4503599627370496.0):
        return x
    return float(int(x))


@cuda.jit(device=True, inline=True)
def _floor(x):
    """floor as a float (NaN and inf pass through)."""
    r = _trunc(x)
    if r > x:
        r -= 1.0
    return r


@cuda.jit(device=True, inline=True)
def _clip(x, max_val):
    if not (x > 0):
        return 0.0
    if x < max_val:
        return x
    return max_val


@cuda.jit(device=True, inline=True)
def _reflect(x, low, span2, empty):
    if empty:
        return 0.0
    a = abs(x - low)
    extra = a - _trunc(a / span2) * span2
    other = span2 - extra
    if other < extra:
        extra = other
    return extra + low


@cuda.jit(device=True, inline=True)
def _pad(x, padding, max_val, low, span2, empty):
    if padding == BORDER:
        return _clip(x, max_val)
    if padding == REFLECTION:
        return _clip(_reflect(x, low, span2, empty), max_val)
    return x


@cuda.jit(device=True, inline=True)
def _pad_grad(x, padding, max_val, low, span2, empty, mult):
    """(padded coordinate as in the forward, NaN clipped to 0; mult times d padded / d x,
    0 where the coordinate was clipped)."""
    if padding == REFLECTION:
        if empty:
            return 0.0, 0.0
        d = x - low
        a = abs(d)
        extra = a - _trunc(a / span2) * span2
        other = span2 - extra
        flip = extra > other
        if flip != (d < 0):
            mult = -mult
        x = (other if flip else extra) + low
    if padding != ZEROS:
        if x > 0 and x < max_val:
            return x, mult
        return (max_val if x > 0 else 0.0), 0.0
    return x, mult


@cuda.jit(device=True, inline=True)
def _inside(t, size):
    return t > -1 and t < size


@cuda.jit(device=True, inline=True)
def _rint(x):
    """Round half to even (PyTorch's nearest)."""
    r = _floor(x + 0.5)
    if r - x == 0.5 and _floor(r * 0.5) * 2 != r:
        r -= 1.0
    return r


@cuda.jit(device=True, inline=True)
def _cubic(t, k):
    """Keys weight (A = -0.75) of tap k (offsets -1..2) at fractional offset t."""
    if k == 0:
        x = t + 1
        return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A
    if k == 1:
        x = t
        return ((A + 2) * x - (A + 3)) * x * x + 1
    if k == 2:
        x = 1 - t
        return ((A + 2) * x - (A + 3)) * x * x + 1
    x = 2 - t
    return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A


@cuda.jit(device=True, inline=True)
def _cubic_grad(t, k):
    """d _cubic(t, k) / dt."""
    if k == 0:
        x = t + 1
        return (3 * A * x - 10 * A) * x + 8 * A
    if k == 1:
        x = t
        return (3 * (A + 2) * x - 2 * (A + 3)) * x
    if k == 2:
        x = 1 - t
        return -((3 * (A + 2) * x - 2 * (A + 3)) * x)
    x = 2 - t
    return -((3 * A * x - 10 * A) * x + 8 * A)


@cuda.jit(device=True, inline=True)
def _cubic_tap(fl, k, padding, size, max_val, low, span2, empty):
    """Padded integer coordinate of cubic tap k, or -1 when it is outside."""
    t = _pad(fl + (k - 1), padding, max_val, low, span2, empty)
    if _inside(t, size):
        return int(t)
    return -1


@cuda.jit(device=True, inline=True)
def _scatter(gin, fixed, n, c, y, x, v, det, scale, flag):
    if det:
        # scale = (2**a, 2**b), a + b = k: each factor is a float64 even where 2**k is not
        s = (float64(v) * scale[0]) * scale[1]
        if s != s or abs(s) > 9.2e18:
            cuda.atomic.max(flag, 0, 1)
        else:
            cuda.atomic.add(fixed, (n, c, y, x), int(_floor(s + 0.5)))
    else:
        cuda.atomic.add(gin, (n, c, y, x), v)


# --------------------------------------------------------------------------- kernels

@cuda.jit(device=True, inline=True)
def _nhw(i, H, W):
    """(n, h, w) of flat index i over (N, H, W)."""
    return i // (W * H), (i // W) % H, i % W


@cuda.jit(device=True, inline=True)
def _point(i, grid, Ho, Wo, ax, ay, fused):
    """Output pixel (n, h, w) of flat index i and its unnormalized grid point (x, y).
    ``fused`` (nearest): (g + 1) * scale - shift rounded once, an explicit fma, as torch's
    kernels round it: it decides half-pixel ties (left to the compiler, NVVM may or may
    not contract it)."""
    n, h, w = _nhw(i, Ho, Wo)
    gx, gy = grid[n, h, w, 0] + ax[6], grid[n, h, w, 1] + ay[6]     # in the grid's dtype
    if fused:
        return n, h, w, cuda.fma(gx, ax[0], -ax[1]), cuda.fma(gy, ay[0], -ay[1])
    return n, h, w, gx * ax[0] - ax[1], gy * ay[0] - ay[1]


@cuda.jit(device=True, inline=True)
def _linear(x, size):
    """Bilinear taps of a padded coordinate on one axis: (first index, fraction,
    first tap inside, second tap inside)."""
    fx = _floor(x)
    v0, v1 = _inside(fx, size), _inside(fx + 1, size)
    return (int(fx) if (v0 or v1) else 0), x - fx, v0, v1


@cuda.jit(device=True, inline=True)
def _corners(inp, n, c, iy, ix, vx0, vx1, vy0, vy1):
    """The four bilinear tap values (0 outside): nw, ne, sw, se."""
    v0 = inp[n, c, iy, ix] if (vx0 and vy0) else 0.0
    v1 = inp[n, c, iy, ix + 1] if (vx1 and vy0) else 0.0
    v2 = inp[n, c, iy + 1, ix] if (vx0 and vy1) else 0.0
    v3 = inp[n, c, iy + 1, ix + 1] if (vx1 and vy1) else 0.0
    return v0, v1, v2, v3



@cuda.jit
def _grid_sample_fwd(out, inp, grid, mode, padding, ax, ay):
    """One thread computes one output pixel (n, h, w) for every channel."""
    i = cuda.grid(1)
    N, C, Ho, Wo = out.shape
    if i >= N * Ho * Wo:
        return
    n, h, w, x, y = _point(i, grid, Ho, Wo, ax, ay, mode == NEAREST)
    H, W = inp.shape[2], inp.shape[3]
    if mode == BICUBIC:
        fx = _floor(x)
        fy = _floor(y)
        tx = x - fx
        ty = y - fy
        for c in range(C):
            acc = 0.0
            for i2 in range(4):
                yy = _cubic_tap(fy, i2, padding, H, ay[2], ay[3], ay[4], ay[5] != 0)
                r = 0.0
                for k in range(4):
                    xx = _cubic_tap(fx, k, padding, W, ax[2], ax[3], ax[4], ax[5] != 0)
                    v = inp[n, c, yy, xx] if (xx >= 0 and yy >= 0) else 0.0
                    r += _cubic(tx, k) * v
                acc += _cubic(ty, i2) * r
            out[n, c, h, w] = acc
        return
    x = _pad(x, padding, ax[2], ax[3], ax[4], ax[5] != 0)
    y = _pad(y, padding, ay[2], ay[3], ay[4], ay[5] != 0)
    if mode == NEAREST:
        x = _rint(x)
        y = _rint(y)
        ok = _inside(x, W) and _inside(y, H)
        ix = int(x) if ok else 0
        iy = int(y) if ok else 0
        for c in range(C):
            out[n, c, h, w] = inp[n, c, iy, ix] if ok else 0.0
        return
    ix, tx, vx0, vx1 = _linear(x, W)
    iy, ty, vy0, vy1 = _linear(y, H)
    w0 = (1 - ty) * (1 - tx)
    w1 = (1 - ty) * tx
    w2 = ty * (1 - tx)
    w3 = ty * tx
    for c in range(C):
        v0, v1, v2, v3 = _corners(inp, n, c, iy, ix, vx0, vx1, vy0, vy1)
        out[n, c, h, w] = v0 * w0 + v1 * w1 + v2 * w2 + v3 * w3


@cuda.jit
def _grid_sample_bwd(gin, fixed, ggrid, gout, inp, grid, mode, padding, ax, ay,
                     do_input, do_grid, det, scale, flag):
    """One thread handles one output pixel: scatters its grad_output into grad_input
    (atomics) and writes its grad_grid entry (summed over channels in order)."""
    i = cuda.grid(1)
    N, C, Ho, Wo = gout.shape
    if i >= N * Ho * Wo:
        return
    n, h, w, x, y = _point(i, grid, Ho, Wo, ax, ay, mode == NEAREST)
    H, W = inp.shape[2], inp.shape[3]
    gx = 0.0
    gy = 0.0
    if mode == BICUBIC:
        fx = _floor(x)
        fy = _floor(y)
        tx = x - fx
        ty = y - fy
        for c in range(C):
            g = gout[n, c, h, w]
            for k in range(4):
                xx = _cubic_tap(fx, k, padding, W, ax[2], ax[3], ax[4], ax[5] != 0)
                cxk = _cubic(tx, k)
                for i2 in range(4):
                    yy = _cubic_tap(fy, i2, padding, H, ay[2], ay[3], ay[4], ay[5] != 0)
                    cyi = _cubic(ty, i2)
                    v = 0.0
                    if xx >= 0 and yy >= 0:
                        if do_input:
                            _scatter(gin, fixed, n, c, yy, xx, g * cxk * cyi, det, scale, flag)
                        v = inp[n, c, yy, xx]
                    gx += v * g * _cubic_grad(tx, k) * cyi
                    gy += v * g * _cubic_grad(ty, i2) * cxk
        if do_grid:
            ggrid[n, h, w, 0] = gx * ax[0]
            ggrid[n, h, w, 1] = gy * ay[0]
        return
    if mode == NEAREST:
        x = _rint(_pad(x, padding, ax[2], ax[3], ax[4], ax[5] != 0))
        y = _rint(_pad(y, padding, ay[2], ay[3], ay[4], ay[5] != 0))
        if do_input and _inside(x, W) and _inside(y, H):
            for c in range(C):
                _scatter(gin, fixed, n, c, int(y), int(x), gout[n, c, h, w], det, scale, flag)
        if do_grid:
            ggrid[n, h, w, 0] = 0.0
            ggrid[n, h, w, 1] = 0.0
        return
    x, mx = _pad_grad(x, padding, ax[2], ax[3], ax[4], ax[5] != 0, ax[0])
    y, my = _pad_grad(y, padding, ay[2], ay[3], ay[4], ay[5] != 0, ay[0])
    ix, tx, vx0, vx1 = _linear(x, W)
    iy, ty, vy0, vy1 = _linear(y, H)
    for c in range(C):
        g = gout[n, c, h, w]
        if do_input:
            if vx0 and vy0:
                _scatter(gin, fixed, n, c, iy, ix, (1 - ty) * (1 - tx) * g, det, scale, flag)
            if vx1 and vy0:
                _scatter(gin, fixed, n, c, iy, ix + 1, (1 - ty) * tx * g, det, scale, flag)
            if vx0 and vy1:
                _scatter(gin, fixed, n, c, iy + 1, ix, ty * (1 - tx) * g, det, scale, flag)
            if vx1 and vy1:
                _scatter(gin, fixed, n, c, iy + 1, ix + 1, ty * tx * g, det, scale, flag)
        v0, v1, v2, v3 = _corners(inp, n, c, iy, ix, vx0, vx1, vy0, vy1)
        gx += ((v1 - v0) * (1 - ty) + (v3 - v2) * ty) * g
        gy += ((v2 - v0) * (1 - tx) + (v3 - v1) * tx) * g
    if do_grid:
        ggrid[n, h, w, 0] = gx * mx
        ggrid[n, h, w, 1] = gy * my


@cuda.jit
def _fixed_to_float(out, fixed, inv_scale):
    """One thread converts one fixed-point accumulator to floating point."""
    i = cuda.grid(1)
    if i >= out.shape[0]:
        return
    out[i] = (fixed[i] * inv_scale[0]) * inv_scale[1]


@cuda.jit
def _max_abs(x, result):
    """One thread folds one element into result[0] = max |x| (NaN wins: order-free)."""
    i = cuda.grid(1)
    if i >= x.shape[0]:
        return
    v = abs(x[i])
    if v != v:
        v = math.inf
    cuda.atomic.max(result, 0, v)


@cuda.jit
def _fill(x, value):
    """One thread writes one element."""
    i = cuda.grid(1)
    if i >= x.shape[0]:
        return
    x[i] = value


@cuda.jit
def _affine_grid_fwd(out, theta, xs, ys):
    """One thread writes one grid point (n, h, w): theta[n] @ (x_w, y_h, 1), summed in
    float64 in that order and rounded once (as the CPU kernel)."""
    i = cuda.grid(1)
    N, H, W = out.shape[0], out.shape[1], out.shape[2]
    if i >= N * H * W:
        return
    n, h, w = _nhw(i, H, W)
    for r in range(2):
        out[n, h, w, r] = ((np.float64(theta[n, r, 0]) * np.float64(xs[w])
                            + np.float64(theta[n, r, 1]) * np.float64(ys[h]))
                           + np.float64(theta[n, r, 2]))


@cuda.jit(device=True)
def _affine_grid_bwd_sum(g, xs, ys, n, r, k, scale):
    """sum over pixels of g[n, h, w, r] * scale * (x_w, y_h, 1)[k], in float64, in a
    fixed order; and whether every g term was finite."""
    acc = 0.0
    finite = True
    for h in range(g.shape[1]):
        for w in range(g.shape[2]):
            b = xs[w] if k == 0 else (ys[h] if k == 1 else 1.0)
            v = np.float64(g[n, h, w, r])
            finite = finite and math.isfinite(v)
            acc += (v * scale) * b
    return acc, finite


@cuda.jit
def _affine_grid_bwd(out, g, xs, ys, down, up):
    """One thread sums one grad_theta entry (n, r, k) over all pixels, in float64,
    in a fixed order (deterministic). A finite gradient whose sum overflowed on the way
    (near 1e308) is summed again scaled by ``down`` (a power of two), no partial sum of
    which can overflow, then scaled back by ``up`` = 1 / down, as on the CPU."""
    i = cuda.grid(1)
    N = out.shape[0]
    if i >= N * 6:
        return
    k = i % 3
    r = (i // 3) % 2
    n = i // 6
    acc, finite = _affine_grid_bwd_sum(g, xs, ys, n, r, k, 1.0)
    if finite and not math.isfinite(acc):
        acc, finite = _affine_grid_bwd_sum(g, xs, ys, n, r, k, down)
        acc = acc * up
    out[n, r, k] = acc


# --------------------------------------------------------------------------- wrappers

def _axis(size, align_corners, dtype, stream):
    if align_corners:
        vals = ((size - 1) / 2, 0.0, size - 1, 0.0, (size - 1) * 2, 1.0 if size <= 1 else 0.0)
    else:
        vals = (size / 2, 0.5, size - 1, -0.5, size * 2.0, 0.0)
    # [6]: 1 in the grid's dtype (numba types float32 + an int literal as float64)
    return to_device(np.array(vals + (1.0,), dtype=dtype), stream)


@cuda.jit(device=True, inline=True)
def _far(u, limit, far):
    """A warp's grid coordinate, or +-far beyond ``limit`` (NaN: +far)."""
    if abs(u) <= limit:
        return u
    return -far if u < 0 else far


@cuda.jit
def _warp_grid(grid, K, bx, by, affine, limit, far):
    """Grid point (n, h, w) of a warp, g = (K[:2] b) / (K[2] b) with b = (bx[w], by[h], 1):
    in float64, in fastinterp.warp._Map.grid_block's order of operations, stored in the
    grid's dtype. NVVM contracts a multiply and an add into an fma where it can (numba
    offers no switch without fastmath): on a device a point can be an ulp or so from the
    host's (bit for bit under the simulator)."""
    i = cuda.grid(1)
    N, Ho, Wo = grid.shape[0], grid.shape[1], grid.shape[2]
    if i >= N * Ho * Wo:
        return
    n, h, w = _nhw(i, Ho, Wo)
    k = n if K.shape[0] > 1 else 0
    x, y = bx[w], by[h]
    u = K[k, 0, 0] * x + K[k, 0, 1] * y + K[k, 0, 2]
    v = K[k, 1, 0] * x + K[k, 1, 1] * y + K[k, 1, 2]
    if not affine:
        d = K[k, 2, 0] * x + K[k, 2, 1] * y + K[k, 2, 2]
        u = u / d
        v = v / d
    grid[n, h, w, 0] = _far(u, limit, far)
    grid[n, h, w, 1] = _far(v, limit, far)


def warp_grid(grid, K, bx, by, affine, limit, far, stream=0):
    """Fill a warp's device grid (N, Ho, Wo, 2) from its maps K (N or 1, 3, 3) and the base
    coordinates bx (Wo), by (Ho), all float64 on the device (see _warp_grid)."""
    n = grid.shape[0] * grid.shape[1] * grid.shape[2]
    if n:
        _warp_grid[blocks_1d(n), THREADS_1D, stream](grid, K, bx, by, bool(affine),
                                                      float(limit), float(far))


def fill_zero(arr, stream=0):
    """Zero a device array."""
    if arr.size:
        _fill[blocks_1d(arr.size), THREADS_1D, stream](flat(arr), 0)


def grid_sample(out, inp, grid, mode, padding, align_corners, stream=0):
    """Launch the forward: one thread per output pixel."""
    N, _, H, W = inp.shape
    Ho, Wo = grid.shape[1], grid.shape[2]
    dt = np.dtype(inp.dtype)
    ax, ay = _axis(W, align_corners, dt, stream), _axis(H, align_corners, dt, stream)
    _grid_sample_fwd[blocks_1d(N * Ho * Wo), THREADS_1D, stream](out, inp, grid, mode, padding,
                                                                 ax, ay)


def grid_sample_backward(gin, ggrid, gout, inp, grid, mode, padding, align_corners,
                         deterministic=True, stream=0):
    """Launch the backward; ``gin``/``ggrid`` may be None (not wanted)."""
    N, C, H, W = inp.shape
    Ho, Wo = grid.shape[1], grid.shape[2]
    dt = np.dtype(inp.dtype)
    ax, ay = _axis(W, align_corners, dt, stream), _axis(H, align_corners, dt, stream)
    do_input, do_grid = gin is not None, ggrid is not None
    det = bool(deterministic and do_input)
    scale = (1.0, 1.0)
    fixed = cuda.device_array((1, 1, 1, 1), np.int64, stream=stream)
    flag = to_device(np.zeros(1, np.int32), stream)
    if do_input:
        fill_zero(gin, stream)
    if det:
        m = to_device(np.zeros(1, dt), stream)
        _max_abs[blocks_1d(gout.size), THREADS_1D, stream](flat(gout), m)
        # The fixed-point scale is a launch argument: the host must read the bound.
        largest = float(read_to_host(m, stream)[0])
        if not math.isfinite(largest):
            raise ValueError("grid_sample_backward: grad_output must be finite with "
                             "deterministic=True (fixed-point accumulation); got a NaN or inf.")
        # the bound's binary exponent, as a sum (the bound itself may exceed float64)
        points = Ho * Wo * (2 if mode == BICUBIC else 1)
        k = 62 - math.frexp(largest)[1] - math.frexp(points)[1] if largest > 0 else 62
        # 2**k itself can exceed float64 (k reaches 1136 for subnormal gradients): two factors
        scale = (math.ldexp(1.0, k // 2), math.ldexp(1.0, k - k // 2))
        fixed = cuda.device_array(inp.shape, np.int64, stream=stream)
        fill_zero(fixed, stream)
    gin_k = gin if do_input else cuda.device_array((1, 1, 1, 1), dt, stream=stream)
    gg_k = ggrid if do_grid else cuda.device_array((1, 1, 1, 2), dt, stream=stream)
    _grid_sample_bwd[blocks_1d(N * Ho * Wo), THREADS_1D, stream](
        gin_k, fixed, gg_k, gout, inp, grid, mode, padding, ax, ay, do_input, do_grid, det,
        scale, flag)
    if det:
        if read_to_host(flag, stream)[0]:   # the error must reach the caller now
            raise ValueError("grid_sample_backward: deterministic=True needs finite "
                             "contributions to grad_input; the grid has NaN/inf points that "
                             "bicubic border/reflection padding sends to the image. Use "
                             "deterministic=False or clean the grid.")
        _fixed_to_float[blocks_1d(gin.size), THREADS_1D, stream](flat(gin), flat(fixed),
                                                                   (1.0 / scale[0],
                                                                    1.0 / scale[1]))


def _base(n, align_corners, dtype, stream):
    from fastinterp.sample import base_coordinates
    return to_device(base_coordinates(n, align_corners, np.dtype(dtype)), stream)


def affine_grid(out, theta, align_corners, stream=0):
    """Launch affine_grid: one thread per grid point."""
    N, H, W, _ = out.shape
    xs, ys = _base(W, align_corners, out.dtype, stream), _base(H, align_corners, out.dtype, stream)
    _affine_grid_fwd[blocks_1d(N * H * W), THREADS_1D, stream](out, theta, xs, ys)


def affine_grid_backward(out, grad_grid, align_corners, stream=0):
    """Launch affine_grid's backward: one thread per grad_theta entry."""
    N, H, W, _ = grad_grid.shape
    xs = to_device(_base_host(W, align_corners, grad_grid.dtype), stream)
    ys = to_device(_base_host(H, align_corners, grad_grid.dtype), stream)
    shift = math.ceil(math.log2(max(H * W * 2, 1))) + 2    # terms |g * coordinate| <= |g|
    _affine_grid_bwd[blocks_1d(N * 6), THREADS_1D, stream](out, grad_grid, xs, ys,
                                                           2.0 ** -shift, 2.0 ** shift)


def _base_host(n, align_corners, dtype):
    from fastinterp.sample import base_coordinates
    return base_coordinates(n, align_corners, np.dtype(dtype)).astype(np.float64)
