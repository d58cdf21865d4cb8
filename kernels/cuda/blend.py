"""numba.cuda blend kernels: lerp (broadcasting over up to 4 coalesced axes) and slerp."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda
from numba import float64 as numba_float64
from numba import int64 as numba_int64

from ._support import THREADS_1D, blocks_1d, is_c_contiguous, to_device

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


@cuda.jit(device=True, inline=True)
def _unravel(i, shape):
    """The 4-D index of flat (C-order) position i in an array of this shape."""
    i3 = i % shape[3]
    r = i // shape[3]
    i2 = r % shape[2]
    r //= shape[2]
    return r // shape[1], r % shape[1], i2, i3


@cuda.jit
def _lerp_array_weight(out, a, b, t):
    """One thread computes one element of the 4-D output."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    i0, i1, i2, i3 = _unravel(i, out.shape)
    out[i0, i1, i2, i3] = _lerp_one(_at(a, i0, i1, i2, i3), _at(b, i0, i1, i2, i3),
                                    _at(t, i0, i1, i2, i3))


@cuda.jit
def _lerp_scalar_weight(out, a, b, w):
    """One thread computes one element of the 4-D output; the weight is a scalar."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    i0, i1, i2, i3 = _unravel(i, out.shape)
    out[i0, i1, i2, i3] = _lerp_one(_at(a, i0, i1, i2, i3), _at(b, i0, i1, i2, i3),
                                    w)


def _contiguous(x):
    if not is_c_contiguous(x):   # a device array cannot be reshaped by copying
        raise ValueError(f"lerp: on CUDA the operands must be C-contiguous here; got strides "
                         f"{tuple(x.strides)} for shape {tuple(x.shape)}.")
    return x


def _as4d(x):
    return _contiguous(x).reshape((1,) * (MAX_RANK - x.ndim) + tuple(x.shape))


@cuda.jit
def _lerp_any_rank(out, a, b, t, shape, strides, w, scalar):
    """One thread computes one element of the flat output of ``shape``; ``strides`` holds
    each operand's element strides per axis (a, b, t rows; 0 along a broadcast axis)."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    r = i
    oa = 0
    ob = 0
    ot = 0
    for d in range(shape.size - 1, -1, -1):
        k = r % shape[d]
        r //= shape[d]
        oa += k * strides[0, d]
        ob += k * strides[1, d]
        ot += k * strides[2, d]
    out[i] = _lerp_one(a[oa], b[ob], w if scalar else t[ot])


def _broadcast_strides(x, shape):
    """Element strides of contiguous ``x`` broadcast to ``shape`` (0 along size-1 axes)."""
    dims = (1,) * (len(shape) - x.ndim) + tuple(x.shape)
    strides = np.zeros(len(shape), np.int64)
    step = 1
    for d in range(len(shape) - 1, -1, -1):
        strides[d] = step if dims[d] > 1 else 0
        step *= dims[d]
    return strides


def lerp(out, a, b, t, stream=0):
    """Launch lerp over ``out`` (contiguous); ``t`` is a device array or a host scalar."""
    n = math.prod(out.shape)
    scalar = isinstance(t, (float, np.floating))
    if out.ndim > MAX_RANK:     # a broadcast pattern that coalesces to more axes: any rank
        shape = tuple(out.shape)
        ops = [_contiguous(v) for v in (a, b, a if scalar else t)]
        strides = np.stack([_broadcast_strides(v, shape) for v in ops])
        _lerp_any_rank[blocks_1d(n), THREADS_1D, stream](
            out.reshape(n), *(v.reshape(math.prod(v.shape)) for v in ops),
            to_device(np.array(shape, np.int64), stream), to_device(strides, stream),
            float(t) if scalar else 0.0, scalar)
        return
    out4, a4, b4 = _as4d(out), _as4d(a), _as4d(b)
    if scalar:
        _lerp_scalar_weight[blocks_1d(n), THREADS_1D, stream](out4, a4, b4, t)
    else:
        _lerp_array_weight[blocks_1d(n), THREADS_1D, stream](out4, a4, b4, _as4d(t))


# ---------------------------------------------------------------------------
# slerp. The per-row math (norms, angle, degenerate cases, coefficients) is
# the same as the CPU kernel's (kernels/cpu/blend.pyx) and is computed in
# float64 for both dtypes. Small vectors: one thread per output vector.
# Long vectors: one block per row pair, with deterministic tree reductions
# in shared memory and coalesced loads and stores.

ROW_REGULAR, ROW_ZERO, ROW_ANTIPODAL = 0, 1, 2
ANTIPODAL_TOL = 1e-8
TINY_ANGLE = 1e-100
COS_ACCURATE = 0.7
ROW_BLOCK = 128          # threads per block in the block-per-row kernel
BLOCK_ROW_MIN_DEPTH = 64  # vectors at least this long use one block per row
# Squared norms outside this range lost bits to underflow or overflowed: such
# rows are redone scaled by powers of two (as the CPU kernel, _blendmath.h).
SAFE_SQ_LO = 2.0 ** -900
SAFE_SQ_HI = 2.0 ** 900


@cuda.jit(device=True, inline=True)
def _unsafe(sq, m):
    """|x|^2 = sq is not usable; m = max |x_i| (a zero sum of non-zero entries too)."""
    if sq == 0:
        return m > 0
    return not (sq >= SAFE_SQ_LO and sq <= SAFE_SQ_HI)


@cuda.jit(device=True, inline=True)
def _exponent(m):
    """e with m = f 2^e, f in [0.5, 1); at least -1000 so that 2^-e is finite."""
    e = math.frexp(m)[1]
    return e if e > -1000 else -1000


@cuda.jit(device=True, inline=True)
def _scales(aa, bb, ma, mb):
    """(scaled, sa, sb, pa, pb, emax): the geometry uses sa a, sb b; the output is
    2^emax (ca sa a + cb sb b); pa, pb put both norms on the output's scale."""
    if not (_unsafe(aa, ma) or _unsafe(bb, mb)) or not (math.isfinite(ma) and math.isfinite(mb)):
        return False, 1.0, 1.0, 1.0, 1.0, 0
    ea = _exponent(ma) if ma > 0 else _exponent(mb)
    eb = _exponent(mb) if mb > 0 else ea
    emax = max(ea, eb)
    return (True, math.ldexp(1.0, -ea), math.ldexp(1.0, -eb), math.ldexp(1.0, ea - emax),
            math.ldexp(1.0, eb - emax), emax)


@cuda.jit(device=True, inline=True)
def _value(x, y, ca, cb, extra, sa, sb, scaled, emax, t, sign, lerp):
    """One output entry from entries x of a and y of b, in float64; exact at t = 0, 1.
    lerp: the row is the lerp of a and sign * b (see _lerp_row)."""
    x = float(x)  # float32 entries: float64 arithmetic on the device and in the simulator
    y = float(y)
    if lerp:  # as the CPU's lerp_entry (equal entries: the nearer one, signed zeros kept;
        y = sign * y    # the product form where y - x is not finite)
        if y - x == 0 and t == t:     # (a NaN weight stays NaN, as in lerp)
            return x if abs(t) < 0.5 else y
        return _lerp_one(x, y, t) if math.isfinite(y - x) else (1.0 - t) * x + t * y
    if not scaled:
        if cb == 0:     # an end point: a itself (signed zeros kept, whatever b holds)
            v = ca * x
        elif ca == 0:
            v = cb * y
        else:
            v = ca * x + cb * y
        return v + extra if extra != 0 else v
    if t == 0:
        return float(x)
    if t == 1:
        return sign * y
    # 2^emax in two exact steps: finite factors, one rounding, inf on overflow
    half = emax // 2
    v = (ca * (x * sa) + cb * (y * sb) + extra) * math.ldexp(1.0, half)
    return v * math.ldexp(1.0, emax - half)


@cuda.jit(device=True, inline=True)
def _norms(aa, bb, ab, shortest_path):
    """(|a|, |b|, sign, cos) from the three dot products; sign = -1 flips b."""
    na = math.sqrt(aa)
    nb = math.sqrt(bb)
    sign = -1.0 if (shortest_path and ab < 0) else 1.0
    c = 0.0
    if na > 0 and nb > 0:
        c = sign * ab / na / nb
    elif na != na or nb != nb:
        c = math.nan        # a NaN row: its angle, so its whole result, is NaN (as on the CPU)
    return na, nb, sign, c


@cuda.jit(device=True, inline=True)
def _coarse_angle(na, nb, c, depth):
    """(kind, theta, fine) from the norms and cosine; fine: needs the direct-difference pass.
    Rows of one axis are the lerp (as on the CPU: a / |a| is +-1 only to rounding, and an
    infinite entry has no angle)."""
    if na == 0 or nb == 0 or depth == 1:
        return ROW_ZERO, 0.0, False
    if abs(c) <= COS_ACCURATE:
        return ROW_REGULAR, math.acos(c), False
    return ROW_REGULAR, 0.0, True


@cuda.jit(device=True, inline=True)
def _angle(dm, dp, depth):
    """(kind, theta) from |u - v|^2 and |u + v|^2 (the accurate form)."""
    if math.sqrt(dp) <= ANTIPODAL_TOL:
        return (ROW_ANTIPODAL if depth >= 2 else ROW_ZERO), 0.0
    return ROW_REGULAR, 2.0 * math.atan2(math.sqrt(dm), math.sqrt(dp))


@cuda.jit(device=True, inline=True)
def _lerp_row(kind, theta, t):
    """One axis, a zero vector or parallel rows, away from the end points, at any
    magnitude: the lerp a + t (sign b - a), exactly a when b = a however far t
    extrapolates (as on the CPU)."""
    return kind != ROW_ANTIPODAL and theta < TINY_ANGLE and t != 0 and t != 1


@cuda.jit(device=True, inline=True)
def _coefs(kind, na, nb, sign, theta, uk, t, linear_norm, pa, pb):
    """(ca, cb, ck): out = ca * a + cb * b, plus ck on the antipodal axis k (see _scales)."""
    if t == 0:
        return pa, 0.0, 0.0
    if t == 1:
        return 0.0, sign * pb, 0.0
    if kind == ROW_ZERO:
        return (1.0 - t) * pa, t * sign * pb, 0.0
    r = (1.0 - t) * (na * pa) + t * (nb * pb)
    if kind == ROW_ANTIPODAL:
        w0 = math.sin((0.5 - t) * math.pi)
        w1 = math.sin(t * math.pi)
        s = math.sqrt(1.0 - uk * uk)
        return r * (w0 - w1 * uk / s) / na, 0.0, r * w1 / s
    if theta < TINY_ANGLE:
        w0 = 1.0 - t
        w1 = t
    else:
        st = math.sin(theta)
        w0 = math.sin((1.0 - t) * theta) / st
        w1 = math.sin(t * theta) / st
    if linear_norm:
        return w0 * (r / na), sign * w1 * (r / nb), 0.0
    return w0 * pa, sign * w1 * pb, 0.0


@cuda.jit
def _slerp_thread(out, a, b, t, t_row_stride, steps, shortest_path, linear_norm):
    """One thread computes one output vector: row pair i // steps at step i % steps."""
    i = cuda.grid(1)
    if i >= out.shape[0]:
        return
    r = i // steps
    depth = a.shape[1]
    aa = 0.0
    bb = 0.0
    ab = 0.0
    ma = 0.0
    mb = 0.0
    for d in range(depth):
        x = float(a[r, d])
        y = float(b[r, d])
        aa += x * x
        bb += y * y
        ab += x * y
        ma = abs(x) if abs(x) > ma else ma  # NaN entries ignored
        mb = abs(y) if abs(y) > mb else mb
    scaled, sa, sb, pa, pb, emax = _scales(aa, bb, ma, mb)
    if scaled:
        aa = 0.0
        bb = 0.0
        ab = 0.0
        for d in range(depth):
            x = float(a[r, d]) * sa
            y = float(b[r, d]) * sb
            aa += x * x
            bb += y * y
            ab += x * y
    na, nb, sign, c = _norms(aa, bb, ab, shortest_path)
    kind, theta, fine = _coarse_angle(na, nb, c, depth)
    k = 0
    uk = 0.0
    if fine:
        dm = 0.0
        dp = 0.0
        for d in range(depth):
            x = (float(a[r, d]) * sa) / na
            y = sign * (float(b[r, d]) * sb) / nb
            dm += (x - y) * (x - y)
            dp += (x + y) * (x + y)
        kind, theta = _angle(dm, dp, depth)
        if kind == ROW_ANTIPODAL:
            best = abs(a[r, 0])
            for d in range(1, depth):
                if abs(a[r, d]) < best:
                    best = abs(a[r, d])
                    k = d
            uk = (float(a[r, k]) * sa) / na
    w = float(t[r * t_row_stride + i - r * steps])
    ca, cb, ck = _coefs(kind, na, nb, sign, theta, uk, w, linear_norm, pa, pb)
    lerp = _lerp_row(kind, theta, w)
    for d in range(depth):
        out[i, d] = _value(a[r, d], b[r, d], ca, cb, ck if d == k else 0.0, sa, sb, scaled,
                           emax, w, sign, lerp)


@cuda.jit(device=True, inline=True)
def _block_sum3(x, y, z, tid):
    """Tree-sum x, y, z[0:ROW_BLOCK] into their [0] together (fixed order: deterministic)."""
    step = ROW_BLOCK // 2
    while step > 0:
        cuda.syncthreads()
        if tid < step:
            x[tid] += x[tid + step]
            y[tid] += y[tid + step]
            z[tid] += z[tid + step]
        step //= 2
    cuda.syncthreads()


@cuda.jit(device=True, inline=True)
def _block_dots(a, b, r, tid, sa, sb, s_aa, s_bb, s_ab):
    """|sa a_r|^2, |sb b_r|^2, (sa a_r).(sb b_r) into s_aa[0], s_bb[0], s_ab[0]."""
    aa = 0.0
    bb = 0.0
    ab = 0.0
    for d in range(tid, a.shape[1], ROW_BLOCK):
        x = float(a[r, d]) * sa
        y = float(b[r, d]) * sb
        aa += x * x
        bb += y * y
        ab += x * y
    s_aa[tid] = aa
    s_bb[tid] = bb
    s_ab[tid] = ab
    _block_sum3(s_aa, s_bb, s_ab, tid)


@cuda.jit(device=True, inline=True)
def _block_max2(x, y, tid):
    """Tree-max x, y[0:ROW_BLOCK] into their [0]."""
    step = ROW_BLOCK // 2
    while step > 0:
        cuda.syncthreads()
        if tid < step:
            x[tid] = max(x[tid], x[tid + step])
            y[tid] = max(y[tid], y[tid + step])
        step //= 2
    cuda.syncthreads()


@cuda.jit
def _slerp_block(out, a, b, t, t_row_stride, steps, shortest_path, linear_norm):
    """One block handles one row pair; each thread strides over the vector's entries."""
    r = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    if r >= a.shape[0]:
        return
    depth = a.shape[1]
    s_aa = cuda.shared.array(ROW_BLOCK, numba_float64)
    s_bb = cuda.shared.array(ROW_BLOCK, numba_float64)
    s_ab = cuda.shared.array(ROW_BLOCK, numba_float64)
    s_k = cuda.shared.array(ROW_BLOCK, numba_int64)
    s_ma = cuda.shared.array(ROW_BLOCK, numba_float64)
    s_mb = cuda.shared.array(ROW_BLOCK, numba_float64)
    _block_dots(a, b, r, tid, 1.0, 1.0, s_aa, s_bb, s_ab)
    ma = 0.0
    mb = 0.0
    for d in range(tid, depth, ROW_BLOCK):
        x = abs(float(a[r, d]))
        y = abs(float(b[r, d]))
        ma = x if x > ma else ma  # NaN entries ignored
        mb = y if y > mb else mb
    s_ma[tid] = ma
    s_mb[tid] = mb
    _block_max2(s_ma, s_mb, tid)
    scaled, sa, sb, pa, pb, emax = _scales(s_aa[0], s_bb[0], s_ma[0], s_mb[0])
    if scaled:  # uniform across the block
        cuda.syncthreads()
        _block_dots(a, b, r, tid, sa, sb, s_aa, s_bb, s_ab)
    na, nb, sign, c = _norms(s_aa[0], s_bb[0], s_ab[0], shortest_path)
    kind, theta, fine = _coarse_angle(na, nb, c, depth)
    k = 0
    uk = 0.0
    if fine:  # uniform across the block: every thread sees the same sums
        dm = 0.0
        dp = 0.0
        for d in range(tid, depth, ROW_BLOCK):
            x = (float(a[r, d]) * sa) / na
            y = sign * (float(b[r, d]) * sb) / nb
            dm += (x - y) * (x - y)
            dp += (x + y) * (x + y)
        cuda.syncthreads()
        s_aa[tid] = dm
        s_bb[tid] = dp
        s_ab[tid] = 0.0
        _block_sum3(s_aa, s_bb, s_ab, tid)
        kind, theta = _angle(s_aa[0], s_bb[0], depth)
        if kind == ROW_ANTIPODAL:
            # first index of the smallest |a_d|: per-thread, then a tree argmin
            best_k = tid if tid < depth else 0
            for d in range(tid + ROW_BLOCK, depth, ROW_BLOCK):
                if abs(a[r, d]) < abs(a[r, best_k]):
                    best_k = d
            s_k[tid] = best_k
            step = ROW_BLOCK // 2
            while step > 0:
                cuda.syncthreads()
                if tid < step:
                    k0 = s_k[tid]
                    k1 = s_k[tid + step]
                    v0 = abs(a[r, k0])
                    v1 = abs(a[r, k1])
                    if v1 < v0 or (v1 == v0 and k1 < k0):
                        s_k[tid] = k1
                step //= 2
            cuda.syncthreads()
            k = s_k[0]
            uk = (float(a[r, k]) * sa) / na
    # Every read of a and b above happens before any thread writes: out may be a or b.
    cuda.syncthreads()
    for j in range(steps):
        w = float(t[r * t_row_stride + j])
        ca, cb, ck = _coefs(kind, na, nb, sign, theta, uk, w, linear_norm, pa, pb)
        row = r * steps + j
        lerp = _lerp_row(kind, theta, w)
        for d in range(tid, depth, ROW_BLOCK):
            out[row, d] = _value(a[r, d], b[r, d], ca, cb, ck if d == k else 0.0, sa, sb,
                                 scaled, emax, w, sign, lerp)


def slerp(out, a, b, t, t_row_stride, steps, shortest_path, linear_norm, stream=0):
    """Launch slerp: out (rows * steps, D), a and b (rows, D), t flat (device or host)."""
    if isinstance(t, np.ndarray):  # a host weight (a scalar): copy its few bytes over
        t = to_device(t, stream)
    rows, depth = a.shape
    args = (out, a, b, t, t_row_stride, steps, bool(shortest_path), bool(linear_norm))
    if depth >= BLOCK_ROW_MIN_DEPTH:
        _slerp_block[blocks_1d(rows, 1), ROW_BLOCK, stream](*args)   # one block per row
    else:
        _slerp_thread[blocks_1d(out.shape[0]), THREADS_1D, stream](*args)
