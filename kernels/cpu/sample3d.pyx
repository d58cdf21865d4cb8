# cython: language_level=3
"""Volume grid_sample kernels (forward and backward) and the 3-D affine_grid,
NCDHW, float32/float64.

The same design as the 2-D kernels (sample.pyx): an image's output voxels are
one run, cut into tiles of TILE voxels; for each tile the taps of every voxel
(offsets, masks, weights and, for the backward, gradient factors) are planned
once into a small per-thread table, then the channels are swept along the
tile. Plans are allocated once per call, before anything is written, and
their size depends only on TILE and the thread count (_plans.pxd, shared with
sample.pyx, as is the backward's schedule). Results do not depend on TILE or
on the thread count: in the backward no two threads ever add into the same
grad_input element, every element receives its additions in the same order
(voxels in increasing order, then taps), and each grid gradient sums the
channels in increasing order.

Trilinear sweeps take a few channels per pass over a tile's plan (CB_FWD,
CB_IN, CB_GRID: more would make the passes' rows, whose planes are often a
multiple of 4 KiB apart, evict each other from the L1 cache), and address the
eight corners of an all-inside voxel as four pairs of neighbours. The
backward runs the grad_input scatter and the grid gradient as separate passes
(each one compiled function, so the rounding cannot depend on how the work was
split); the grid gradient first sums g * value per corner over the pass's
channels and weights those sums once per voxel (it is linear in the values).

Modes: nearest (half to even), trilinear, tricubic (the tensor product of
Keys' cubic, A = -0.75, each of the 4 x 4 x 4 taps padded on its own:
PyTorch's bicubic conventions in three dimensions).
"""
from cython.parallel cimport prange, parallel
from libc.string cimport memset
from _types cimport real
from _team cimport fi_team, fi_team_done, fi_team_enter, fi_team_leave, fi_team_plan
from _plans cimport BwdArgs, Plans, plans_alloc, plans_free, thread_R, thread_I, run_backward
from _taps cimport unnormalize, tap_inside
from _gridaxis cimport (PAD_WRAP, PAD_ZEROS, PAD_REFLECTION, A_MAX, A_SCALE, A_SHIFT, A_SIZE, A_LIMIT, A_SLOTS,
                        LIN_SPLIT, axis_params, coordinate, linear_axis, nearest_tap,
                        cubic_axis)

cdef extern from *:
    void __builtin_prefetch(const void* addr) noexcept nogil

cdef enum:
    NEAREST = 0
    BILINEAR = 1    # trilinear
    BICUBIC = 2     # tricubic

# Plan table layout, per tile of L voxels: real slots (times L) ...
cdef enum:
    R_W0 = 0        # trilinear weights of corners k = kx + 2 ky + 4 kz: slots 0..7
    R_F0 = 8        # trilinear grid-gradient factors: (1-ty)(1-tz), ty(1-tz), (1-ty)tz,
                    # ty tz (x), the same in (tx, tz) (y) and in (tx, ty) (z): 8..19
    R_MX = 20       # d coordinate / d grid value per axis, after padding: 20..22
    R_CX = 23       # tricubic weights, x: 23..26, y: 27..30, z: 31..34
    R_DCX = 35      # their derivatives, x: 35..38, y: 39..42, z: 43..46
    R_GX = 47       # grad accumulators, x, y, z: 47..49
    R_SLOTS = 50
# ... and integer slots (times L).
cdef enum:
    I_MASK = 0      # valid-tap bits
    I_X = 1         # x offsets: trilinear 1..2, tricubic 1..4, nearest 1
    I_Y = 5         # y offsets: 5..8
    I_Z = 9         # z offsets: 9..12
    I_BASE = 13     # trilinear: x0 + y0 + z0 (the first corner)
    I_SLOTS = 14

cdef enum:
    TILE = 128              # voxels planned at once (40-65 KB of plan per thread)
    CB_FWD = 2              # trilinear forward: channels per pass over a tile's plan
    CB_IN = 4               # trilinear input pass: channels per pass over a tile's plan
    CB_GRID = 4             # trilinear grid pass: channels per pass
    PF = 64                 # prefetch distance, voxels
    ALL_IN = 255            # trilinear mask: all eight corners inside, adjacent

cdef enum:
    ST_OK = 0
    ST_INVALID = 1
    ST_NOMEM = 3


cdef inline int trilinear_mask(int bx, int by, int bz) noexcept nogil:
    """Corner k = kx + 2 ky + 4 kz is valid when its three taps are; bit 8 flags
    taps moved apart by wrap padding (the all-inside fast paths need neighbours)."""
    cdef int k, m = 0
    if bx == 3 and by == 3 and bz == 3:     # the common case: all inside, neighbours
        return ALL_IN
    for k in range(8):
        if (bx >> (k & 1)) & (by >> ((k >> 1) & 1)) & (bz >> (k >> 2)) & 1:
            m |= 1 << k
    if (bx | by | bz) & LIN_SPLIT:
        m |= 256
    return m


cdef void plan_tile(const real* g, Py_ssize_t L, int mode, int padding, bint grad,
                    const real* ax, const real* ay, const real* az, const Py_ssize_t* si,
                    real* R, Py_ssize_t* I) noexcept nogil:
    """Taps of the L output voxels whose grid points are g[0 .. 3 L)."""
    cdef Py_ssize_t j
    cdef real x, y, z, mx = 0, my = 0, mz = 0, tx, ty, tz, ux, uy, uz
    cdef real one = 1
    cdef int bx, by, bz
    cdef bint wrap = padding == PAD_WRAP
    cdef Py_ssize_t* M = I + I_MASK * L
    for j in range(L):
        if mode == BICUBIC:
            x = unnormalize(g[3 * j], ax[A_SCALE], ax[A_SHIFT])
            y = unnormalize(g[3 * j + 1], ay[A_SCALE], ay[A_SHIFT])
            z = unnormalize(g[3 * j + 2], az[A_SCALE], az[A_SHIFT])
            bx = cubic_axis(x, ax, padding, si[4], I + I_X * L + j, L,
                            R + R_CX * L + j, R + R_DCX * L + j, grad)
            by = cubic_axis(y, ay, padding, si[3], I + I_Y * L + j, L,
                            R + (R_CX + 4) * L + j, R + (R_DCX + 4) * L + j, grad)
            bz = cubic_axis(z, az, padding, si[2], I + I_Z * L + j, L,
                            R + (R_CX + 8) * L + j, R + (R_DCX + 8) * L + j, grad)
            M[j] = bx | (by << 4) | (bz << 8)
            R[R_MX * L + j] = ax[A_SCALE]
            R[(R_MX + 1) * L + j] = ay[A_SCALE]
            R[(R_MX + 2) * L + j] = az[A_SCALE]
            continue
        x = volume_coordinate(g[3 * j], ax, padding, grad, &mx)
        y = volume_coordinate(g[3 * j + 1], ay, padding, grad, &my)
        z = volume_coordinate(g[3 * j + 2], az, padding, grad, &mz)
        R[R_MX * L + j] = mx
        R[(R_MX + 1) * L + j] = my
        R[(R_MX + 2) * L + j] = mz
        if mode == NEAREST:
            x = nearest_tap(x, ax[A_SIZE], wrap)
            y = nearest_tap(y, ay[A_SIZE], wrap)
            z = nearest_tap(z, az[A_SIZE], wrap)
            if tap_inside(x, ax[A_LIMIT]) and tap_inside(y, ay[A_LIMIT]) \
                    and tap_inside(z, az[A_LIMIT]):
                M[j] = 1
                I[I_X * L + j] = (<Py_ssize_t>x) * si[4] + (<Py_ssize_t>y) * si[3] \
                    + (<Py_ssize_t>z) * si[2]
            else:
                M[j] = 0
                I[I_X * L + j] = 0
            continue
        bx = linear_axis(x, ax[A_SIZE], ax[A_LIMIT], si[4], wrap, I + I_X * L + j, I + (I_X + 1) * L + j,
                         &tx)
        by = linear_axis(y, ay[A_SIZE], ay[A_LIMIT], si[3], wrap, I + I_Y * L + j, I + (I_Y + 1) * L + j,
                         &ty)
        bz = linear_axis(z, az[A_SIZE], az[A_LIMIT], si[2], wrap, I + I_Z * L + j, I + (I_Z + 1) * L + j,
                         &tz)
        M[j] = trilinear_mask(bx, by, bz)
        I[I_BASE * L + j] = I[I_X * L + j] + I[I_Y * L + j] + I[I_Z * L + j]
        ux = one - tx
        uy = one - ty
        uz = one - tz
        R[R_W0 * L + j] = ux * uy * uz
        R[(R_W0 + 1) * L + j] = tx * uy * uz
        R[(R_W0 + 2) * L + j] = ux * ty * uz
        R[(R_W0 + 3) * L + j] = tx * ty * uz
        R[(R_W0 + 4) * L + j] = ux * uy * tz
        R[(R_W0 + 5) * L + j] = tx * uy * tz
        R[(R_W0 + 6) * L + j] = ux * ty * tz
        R[(R_W0 + 7) * L + j] = tx * ty * tz
        if grad:
            R[R_F0 * L + j] = uy * uz
            R[(R_F0 + 1) * L + j] = ty * uz
            R[(R_F0 + 2) * L + j] = uy * tz
            R[(R_F0 + 3) * L + j] = ty * tz
            R[(R_F0 + 4) * L + j] = ux * uz
            R[(R_F0 + 5) * L + j] = tx * uz
            R[(R_F0 + 6) * L + j] = ux * tz
            R[(R_F0 + 7) * L + j] = tx * tz
            R[(R_F0 + 8) * L + j] = ux * uy
            R[(R_F0 + 9) * L + j] = tx * uy
            R[(R_F0 + 10) * L + j] = ux * ty
            R[(R_F0 + 11) * L + j] = tx * ty


cdef inline real volume_coordinate(real g, const real* a, int padding, bint grad,
                                   real* mult) noexcept nogil:
    """coordinate() with PyTorch's volume rules for a NaN or infinite pixel coordinate
    (its 3-D kernels clip them differently from its 2-D ones): zero padding reads no
    voxel (the output is 0, not NaN), border sends NaN, and reflection NaN and +-inf,
    to the last voxel of the axis. Such a coordinate has no grid gradient."""
    cdef real x = unnormalize(g, a[A_SCALE], a[A_SHIFT])
    if x - x == 0 or padding == PAD_WRAP:      # finite (or wrap: fastinterp's own)
        return coordinate(g, a, padding, grad, mult)
    if padding == PAD_ZEROS:
        mult[0] = 0
        return -8                           # every tap outside the axis
    if padding == PAD_REFLECTION or x != x:
        mult[0] = 0
        return a[A_MAX]
    return coordinate(g, a, padding, grad, mult)   # border: +-inf clip to either end


cdef inline void corner_offsets(const Py_ssize_t* I, Py_ssize_t L, Py_ssize_t j,
                                Py_ssize_t* o) noexcept nogil:
    """The eight corner offsets of voxel j (corner k = kx + 2 ky + 4 kz)."""
    cdef Py_ssize_t x0 = I[I_X * L + j], x1 = I[(I_X + 1) * L + j]
    cdef Py_ssize_t y0 = I[I_Y * L + j], y1 = I[(I_Y + 1) * L + j]
    cdef Py_ssize_t z0 = I[I_Z * L + j], z1 = I[(I_Z + 1) * L + j]
    o[0] = x0 + y0 + z0
    o[1] = x1 + y0 + z0
    o[2] = x0 + y1 + z0
    o[3] = x1 + y1 + z0
    o[4] = x0 + y0 + z1
    o[5] = x1 + y0 + z1
    o[6] = x0 + y1 + z1
    o[7] = x1 + y1 + z1


cdef inline void corner_values(const real* ip, const Py_ssize_t* o, Py_ssize_t m,
                               real* v) noexcept nogil:
    """The eight corner values (0 for a corner outside)."""
    cdef int k
    for k in range(8):
        v[k] = ip[o[k]] if (m >> k) & 1 else 0


cdef inline real trilinear_sum(const real* v, const real* w) noexcept nogil:
    return ((v[0] * w[0] + v[1] * w[1]) + (v[2] * w[2] + v[3] * w[3])) \
        + ((v[4] * w[4] + v[5] * w[5]) + (v[6] * w[6] + v[7] * w[7]))


cdef inline real tricubic_value(const real* ip, const real* R, const Py_ssize_t* I,
                                Py_ssize_t L, Py_ssize_t j, Py_ssize_t m) noexcept nogil:
    """Sum over z of cz * (sum over y of cy * (sum over x of cx * v))."""
    cdef int a, b, k
    cdef Py_ssize_t oz, oy
    cdef real rz, ry, rx, v
    rz = 0
    for a in range(4):
        oz = I[(I_Z + a) * L + j]
        ry = 0
        for b in range(4):
            oy = oz + I[(I_Y + b) * L + j]
            rx = 0
            for k in range(4):
                if (m >> k) & (m >> (4 + b)) & (m >> (8 + a)) & 1:
                    v = ip[oy + I[(I_X + k) * L + j]]
                else:
                    v = 0
                rx = rx + R[(R_CX + k) * L + j] * v
            ry = ry + R[(R_CX + 4 + b) * L + j] * rx
        rz = rz + R[(R_CX + 8 + a) * L + j] * ry
    return rz


cdef inline void prefetch_rows(const real* p, const Py_ssize_t* si) noexcept nogil:
    """Fetch the four rows (two per slice) a trilinear voxel at p reads."""
    __builtin_prefetch(p)
    __builtin_prefetch(p + si[3])
    __builtin_prefetch(p + si[2])
    __builtin_prefetch(p + si[2] + si[3])


cdef void sweep_fwd(const real* ip, real* op, Py_ssize_t L, int mode, const Py_ssize_t* si,
                    const real* R, const Py_ssize_t* I) noexcept nogil:
    """One channel of one tile (nearest, tricubic): op[j] for j < L; ip is the channel's
    volume."""
    cdef Py_ssize_t j
    cdef const Py_ssize_t* M = I + I_MASK * L
    if mode == NEAREST:
        for j in range(L):
            op[j] = ip[I[I_X * L + j]] if M[j] else 0
    else:
        for j in range(L):
            op[j] = tricubic_value(ip, R, I, L, j, M[j])


cdef void sweep_fwd_trilinear(const real* ip, Py_ssize_t cs, real* op, Py_ssize_t ocs,
                              Py_ssize_t nc, Py_ssize_t L, const Py_ssize_t* si,
                              const real* R, const Py_ssize_t* I) noexcept nogil:
    """nc channels (planes ip + q cs, op + q ocs) of one tile, voxels outer: each voxel's
    weights are loaded once for nc channels."""
    cdef Py_ssize_t j, q, m, base
    cdef Py_ssize_t o[8]
    cdef real v[8]
    cdef real w[8]
    cdef const real* p
    cdef const real* a
    cdef Py_ssize_t sy = si[3], sz = si[2]
    cdef const Py_ssize_t* M = I + I_MASK * L
    cdef const Py_ssize_t* B = I + I_BASE * L
    cdef int k
    for j in range(L):
        if j + PF < L and (j & 3) == 0:     # the taps wander across rows and slices (see
            for q in range(nc):             # prefetch_rows; every fourth voxel: neighbours
                prefetch_rows(ip + q * cs + B[j + PF], si)     # share cache lines)
        m = M[j]
        for k in range(8):
            w[k] = R[(R_W0 + k) * L + j]
        if m == ALL_IN and si[4] == 1:      # the corners are four pairs of neighbours
            base = B[j]
            for q in range(nc):
                a = ip + q * cs + base
                p = a
                v[0] = p[0]
                v[1] = p[1]
                p = a + sy
                v[2] = p[0]
                v[3] = p[1]
                p = a + sz
                v[4] = p[0]
                v[5] = p[1]
                p = a + sz + sy
                v[6] = p[0]
                v[7] = p[1]
                op[q * ocs + j] = trilinear_sum(v, w)
        else:
            corner_offsets(I, L, j, o)
            for q in range(nc):
                corner_values(ip + q * cs, o, m, v)
                op[q * ocs + j] = trilinear_sum(v, w)


cdef inline void allin_bwd_voxel(const real* a, real* b, Py_ssize_t cs, const real* gop,
                                 Py_ssize_t ocs, Py_ssize_t nc, Py_ssize_t sy, Py_ssize_t sz,
                                 const real* w, real* A, bint do_input,
                                 bint do_grid) noexcept nogil:
    """One voxel whose eight corners are inside and neighbours, nc channels: a, b point
    at corner 0 of channel 0 in input and grad_input, gop at the voxel's grad_output.
    do_input: b[corner k] += w[k] g; do_grid: A[k] += g v[k] (channels in order)."""
    cdef Py_ssize_t q, syz = sy + sz
    cdef const real* r
    cdef real* t
    cdef real g
    cdef real A0 = A[0], A1 = A[1], A2 = A[2], A3 = A[3]
    cdef real A4 = A[4], A5 = A[5], A6 = A[6], A7 = A[7]
    for q in range(nc):     # each corner pair as neighbours (the compiler pairs them)
        g = gop[q * ocs]
        if do_input:
            t = b
            t[0] += w[0] * g
            t[1] += w[1] * g
            t = b + sy
            t[0] += w[2] * g
            t[1] += w[3] * g
            t = b + sz
            t[0] += w[4] * g
            t[1] += w[5] * g
            t = b + syz
            t[0] += w[6] * g
            t[1] += w[7] * g
            b = b + cs
        if do_grid:
            r = a
            A0 = A0 + r[0] * g
            A1 = A1 + r[1] * g
            r = a + sy
            A2 = A2 + r[0] * g
            A3 = A3 + r[1] * g
            r = a + sz
            A4 = A4 + r[0] * g
            A5 = A5 + r[1] * g
            r = a + syz
            A6 = A6 + r[0] * g
            A7 = A7 + r[1] * g
            a = a + cs
    A[0] = A0
    A[1] = A1
    A[2] = A2
    A[3] = A3
    A[4] = A4
    A[5] = A5
    A[6] = A6
    A[7] = A7


cdef inline void edge_bwd_voxel(const real* ip, real* gip, Py_ssize_t cs, const real* gop,
                                Py_ssize_t ocs, Py_ssize_t nc, const Py_ssize_t* o,
                                Py_ssize_t m, const real* w, real* A, bint do_input,
                                bint do_grid) noexcept nogil:
    """allin_bwd_voxel for a voxel with corners outside (mask m) or wrapped apart
    (offsets o); a corner outside reads 0."""
    cdef Py_ssize_t q
    cdef int k
    cdef real g
    cdef real v[8]
    for q in range(nc):
        g = gop[q * ocs]
        if do_input:
            for k in range(8):
                if (m >> k) & 1:
                    gip[q * cs + o[k]] += w[k] * g
        if do_grid:
            corner_values(ip + q * cs, o, m, v)
            for k in range(8):
                A[k] = A[k] + v[k] * g


cdef void redo_overflowed_voxels(const real* ip, Py_ssize_t cs, const real* gop,
                                 Py_ssize_t ocs, Py_ssize_t nc, Py_ssize_t L, real* R,
                                 const Py_ssize_t* I) noexcept nogil:
    """The trilinear grid gradient of one tile, all nc channels done (ip, gop: channel 0):
    a voxel whose sums are not finite (its per-corner channel sums overflowed, values near
    the dtype's maximum, or an infinite grad_output) is summed again term by term in
    PyTorch's order, finite wherever PyTorch's sum is. One test per voxel otherwise."""
    cdef Py_ssize_t j
    cdef Py_ssize_t o[8]
    cdef real* GX = R + R_GX * L
    for j in range(L):
        if GX[j] - GX[j] == 0 and GX[L + j] - GX[L + j] == 0 \
                and GX[2 * L + j] - GX[2 * L + j] == 0:
            continue
        GX[j] = 0
        GX[L + j] = 0
        GX[2 * L + j] = 0
        corner_offsets(I, L, j, o)
        grid_terms_voxel(ip, cs, gop + j, ocs, nc, o, I[I_MASK * L + j], R + R_F0 * L + j, L,
                         GX + j)


cdef void grid_terms_voxel(const real* ip, Py_ssize_t cs, const real* gop, Py_ssize_t ocs,
                           Py_ssize_t nc, const Py_ssize_t* o, Py_ssize_t m, const real* f,
                           Py_ssize_t L, real* G) noexcept nogil:
    """Add d out / d (x, y, z) of one voxel, nc channels, to its running sums G[0], G[L],
    G[2 L] term by term in PyTorch's order (corner value times its factor times g, over
    corners, then channels): for a voxel whose channel sums overflowed (values near the
    dtype's maximum), where this is finite wherever the terms and PyTorch's running sums
    are. f: the voxel's factors (slots R_F0.., stride L); the x factor of corner k is
    f[k >> 1] with the sign of kx, the y factor f[4 + (k & 1) + 2 (k >> 2)], the z factor
    f[8 + (k & 3)]."""
    cdef Py_ssize_t q
    cdef int k
    cdef real g, v, sx = G[0], sy = G[L], sz = G[2 * L]
    for q in range(nc):
        g = gop[q * ocs]
        for k in range(8):
            if not (m >> k) & 1:
                continue
            v = ip[q * cs + o[k]]
            if k & 1:
                sx = sx + v * f[(k >> 1) * L] * g
            else:
                sx = sx - v * f[(k >> 1) * L] * g
            if (k >> 1) & 1:
                sy = sy + v * f[(4 + (k & 1) + 2 * (k >> 2)) * L] * g
            else:
                sy = sy - v * f[(4 + (k & 1) + 2 * (k >> 2)) * L] * g
            if k >> 2:
                sz = sz + v * f[(8 + (k & 3)) * L] * g
            else:
                sz = sz - v * f[(8 + (k & 3)) * L] * g
    G[0] = sx
    G[L] = sy
    G[2 * L] = sz


cdef inline void tile_bwd_trilinear(const real* ip, real* gip, Py_ssize_t cs,
                                    const real* gop, Py_ssize_t ocs, Py_ssize_t nc,
                                    Py_ssize_t L, const Py_ssize_t* si, const real* R,
                                    const Py_ssize_t* I, real* GX, bint do_input,
                                    bint do_grid) noexcept nogil:
    """The voxels of one tile in order (sweep_input_trilinear, sweep_grid_trilinear).
    The grid gradient of a voxel is linear in its corner values, so the nc channels'
    sums A[k] = sum g v[k] are formed first and weighted once: d out / d x is
    ((A1 - A0) f0 + (A3 - A2) f1) + ((A5 - A4) f2 + (A7 - A6) f3), and so on."""
    cdef Py_ssize_t j, q, m, base, ahead
    cdef Py_ssize_t sy = si[3], sz = si[2]
    cdef Py_ssize_t o[8]
    cdef real w[8]
    cdef real A[8]
    cdef const real* f
    cdef int k
    for j in range(L):
        if j + PF < L and (j & 3) == 0:     # the taps wander across rows and slices: the
            # hardware prefetcher does not follow them, so fetch voxel j + PF's four rows
            # now (every fourth voxel: neighbours share cache lines)
            ahead = I[I_BASE * L + j + PF]
            for q in range(nc):
                if do_grid:
                    prefetch_rows(ip + q * cs + ahead, si)
                if do_input:
                    prefetch_rows(gip + q * cs + ahead, si)
        m = I[I_MASK * L + j]
        if do_input:
            for k in range(8):
                w[k] = R[(R_W0 + k) * L + j]
        if do_grid:
            for k in range(8):
                A[k] = 0
        if m == ALL_IN and si[4] == 1:
            base = I[I_BASE * L + j]
            allin_bwd_voxel(ip + base, gip + base, cs, gop + j, ocs, nc, sy, sz, w, A,
                            do_input, do_grid)
        else:
            corner_offsets(I, L, j, o)
            edge_bwd_voxel(ip, gip, cs, gop + j, ocs, nc, o, m, w, A, do_input, do_grid)
        if do_grid:
            f = R + R_F0 * L + j
            GX[j] = GX[j] + (((A[1] - A[0]) * f[0] + (A[3] - A[2]) * f[L])
                             + ((A[5] - A[4]) * f[2 * L] + (A[7] - A[6]) * f[3 * L]))
            GX[L + j] = GX[L + j] + (((A[2] - A[0]) * f[4 * L] + (A[3] - A[1]) * f[5 * L])
                                     + ((A[6] - A[4]) * f[6 * L] + (A[7] - A[5]) * f[7 * L]))
            GX[2 * L + j] = GX[2 * L + j] + (
                ((A[4] - A[0]) * f[8 * L] + (A[5] - A[1]) * f[9 * L])
                + ((A[6] - A[2]) * f[10 * L] + (A[7] - A[3]) * f[11 * L]))


cdef void sweep_input_trilinear(real* gip, Py_ssize_t cs, const real* gop, Py_ssize_t ocs,
                                Py_ssize_t nc, Py_ssize_t L, const Py_ssize_t* si,
                                const real* R, const Py_ssize_t* I) noexcept nogil:
    """nc channels (planes gip + q cs, gop + q ocs) of one tile, voxels outer (each
    voxel's taps are loaded once for nc channels): scatter g * weights into gip."""
    tile_bwd_trilinear(NULL, gip, cs, gop, ocs, nc, L, si, R, I, NULL, True, False)


cdef void sweep_grid_trilinear(const real* ip, Py_ssize_t cs, const real* gop, Py_ssize_t ocs,
                               Py_ssize_t nc, Py_ssize_t L, const Py_ssize_t* si, real* R,
                               const Py_ssize_t* I) noexcept nogil:
    """nc channels of one tile: add d out / d (x, y, z) to the tile's accumulators. One
    compiled instance serves every schedule, so the grid gradient's rounding never
    depends on how the work was split."""
    tile_bwd_trilinear(ip, NULL, cs, gop, ocs, nc, L, si, R, I, R + R_GX * L, False, True)


cdef inline void tricubic_bwd_voxel(const real* ip, real* gip, real g, const real* R,
                                    const Py_ssize_t* I, Py_ssize_t L, Py_ssize_t j,
                                    bint do_input, bint do_grid, real* G) noexcept nogil:
    """tricubic: taps in (z, y, x) order; grad_input gets g * cx cy cz, the grid
    gradient sums v * g * (dcx cy cz, cx dcy cz, cx cy dcz)."""
    cdef Py_ssize_t m = I[I_MASK * L + j]
    cdef int a, b, k
    cdef Py_ssize_t oz, oy, o
    cdef real cz, cy, cx, dz, dy, v, gx = G[0], gy = G[1], gz = G[2]
    for a in range(4):
        oz = I[(I_Z + a) * L + j]
        cz = R[(R_CX + 8 + a) * L + j]
        dz = R[(R_DCX + 8 + a) * L + j]
        for b in range(4):
            oy = oz + I[(I_Y + b) * L + j]
            cy = R[(R_CX + 4 + b) * L + j]
            dy = R[(R_DCX + 4 + b) * L + j]
            for k in range(4):
                cx = R[(R_CX + k) * L + j]
                if (m >> k) & (m >> (4 + b)) & (m >> (8 + a)) & 1:
                    o = oy + I[(I_X + k) * L + j]
                    if do_input:
                        gip[o] += g * (cx * cy * cz)
                    v = ip[o] * g
                else:
                    v = 0
                if do_grid:
                    gx = gx + v * (R[(R_DCX + k) * L + j] * cy * cz)
                    gy = gy + v * (cx * dy * cz)
                    gz = gz + v * (cx * cy * dz)
    G[0] = gx
    G[1] = gy
    G[2] = gz


cdef void sweep_bwd(const real* ip, real* gip, const real* gop, Py_ssize_t L, int mode,
                    const Py_ssize_t* si, bint do_input, bint do_grid, real* R,
                    const Py_ssize_t* I) noexcept nogil:
    """One channel of one tile (nearest, tricubic): scatter grad_output into gip
    (do_input) and add this channel's share of d out / d grid into the tile's
    accumulators (do_grid)."""
    cdef Py_ssize_t j
    cdef real G[3]
    cdef real* GX = R + R_GX * L
    cdef const Py_ssize_t* M = I + I_MASK * L
    if mode == NEAREST:
        if do_input:
            for j in range(L):
                if M[j]:
                    gip[I[I_X * L + j]] += gop[j]
        return
    for j in range(L):
        G[0] = GX[j]
        G[1] = GX[L + j]
        G[2] = GX[2 * L + j]
        tricubic_bwd_voxel(ip, gip, gop[j], R, I, L, j, do_input, do_grid, G)
        GX[j] = G[0]
        GX[L + j] = G[1]
        GX[2 * L + j] = G[2]


# --------------------------------------------------------------------------- drivers

cdef int plans_for(Plans* p, int nthreads, size_t real_size) noexcept nogil:
    """One plan table pair per thread, allocated up front; ST_NOMEM (nothing held) on
    failure."""
    if plans_alloc(p, nthreads, real_size * R_SLOTS * TILE,
                   sizeof(Py_ssize_t) * I_SLOTS * TILE) != 0:
        return ST_NOMEM
    return ST_OK


cdef inline void strides(Py_ssize_t C, Py_ssize_t D, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t* s) noexcept nogil:
    """Element strides (n, c, z, y, x) of a C-contiguous NCDHW batch."""
    s[4] = 1
    s[3] = W
    s[2] = H * W
    s[1] = D * H * W
    s[0] = C * D * H * W


cdef int check_args(Py_ssize_t N, Py_ssize_t C, Py_ssize_t D, Py_ssize_t H, Py_ssize_t W,
                    Py_ssize_t Do, Py_ssize_t Ho, Py_ssize_t Wo, int mode,
                    int padding) noexcept nogil:
    """ST_INVALID for arguments no kernel can run on."""
    if N < 0 or C < 0 or D < 0 or H < 0 or W < 0 or Do < 0 or Ho < 0 or Wo < 0:
        return ST_INVALID
    if mode < NEAREST or mode > BICUBIC or padding < 0 or padding > PAD_WRAP:
        return ST_INVALID
    if not (N == 0 or C == 0 or Do == 0 or Ho == 0 or Wo == 0) and (D < 1 or H < 1 or W < 1):
        return ST_INVALID
    return ST_OK


cdef object status_error(str op, int status, int nthreads, size_t real_size):
    if status == ST_NOMEM:
        return MemoryError(
            f"{op}: could not allocate the per-thread plan buffers "
            f"({(real_size * R_SLOTS + sizeof(Py_ssize_t) * I_SLOTS) * TILE * nthreads} "
            f"bytes for {nthreads} threads); nothing was written.")
    return ValueError(f"{op}: invalid kernel arguments (negative size, D, H or W < 1 with a "
                      f"non-empty output, or a mode/padding code out of range).")


def _check_buffers(str op, dims, int mode, int padding, **buffers):
    """Each buffer must hold at least the elements its role needs: ValueError otherwise."""
    if len(dims) != 8:
        raise ValueError(f"{op}: dims must be (N, C, D, H, W, D_out, H_out, W_out); "
                         f"got {tuple(dims)!r}.")
    N, C, D, H, W, Do, Ho, Wo = (int(d) for d in dims)
    if check_args(N, C, D, H, W, Do, Ho, Wo, mode, padding) != ST_OK:
        raise status_error(op, ST_INVALID, 1, sizeof(double))
    need = {"out": (N, C, Do, Ho, Wo), "grad_out": (N, C, Do, Ho, Wo),
            "inp": (N, C, D, H, W), "grad_input": (N, C, D, H, W),
            "grid": (N, Do, Ho, Wo, 3), "grad_grid": (N, Do, Ho, Wo, 3)}
    for name, length in buffers.items():
        count = 1
        for d in need[name]:
            count *= int(d)
        if length < count:
            raise ValueError(f"{op}: {name} must hold at least {count} elements for the "
                             f"sizes given; got {length}.")


def grid_sample3d_fwd(real[::1] out, const real[::1] inp, const real[::1] grid, dims,
                      int mode, int padding, bint align_corners, int nthreads):
    """out[n, c, d, h, w] = input sampled at grid[n, d, h, w]; dims = (N, C, D, H, W,
    D_out, H_out, W_out). ValueError for sizes the buffers do not hold, MemoryError when
    the plans cannot be allocated (out untouched either way)."""
    cdef int status
    cdef Py_ssize_t d[8]
    _check_buffers("grid_sample", dims, mode, padding, out=out.shape[0], inp=inp.shape[0],
                   grid=grid.shape[0])
    for k in range(8):
        d[k] = dims[k]
    if d[0] == 0 or d[1] == 0 or d[5] * d[6] * d[7] == 0:
        return
    nthreads = max(nthreads, 1)
    with nogil:
        status = fwd_run(&out[0], &inp[0], &grid[0], d, mode, padding, align_corners,
                         nthreads)
    if status != ST_OK:
        raise status_error("grid_sample", status, nthreads, sizeof(real))


cdef int fwd_run(real* op, const real* ip, const real* gp, const Py_ssize_t* d, int mode,
                 int padding, bint align_corners, int nthreads) noexcept nogil:
    cdef Py_ssize_t si[5]
    cdef Py_ssize_t so[5]
    cdef real ax[A_SLOTS]
    cdef real ay[A_SLOTS]
    cdef real az[A_SLOTS]
    cdef Py_ssize_t N = d[0], C = d[1]
    cdef Py_ssize_t P = d[5] * d[6] * d[7]
    cdef Py_ssize_t nt = (P + TILE - 1) // TILE
    cdef Py_ssize_t job, n, p0, c, L, nc
    cdef Plans plans
    cdef real* R
    cdef Py_ssize_t* I
    cdef fi_team team
    if plans_for(&plans, nthreads, sizeof(real)) != ST_OK:
        return ST_NOMEM
    strides(C, d[2], d[3], d[4], si)
    strides(C, d[5], d[6], d[7], so)
    axis_params(ax, d[4], align_corners)
    axis_params(ay, d[3], align_corners)
    axis_params(az, d[2], align_corners)
    nthreads = fi_team_plan(&team, nthreads)
    with parallel(num_threads=nthreads):
        fi_team_enter(&team)
        R = <real*>thread_R(&plans)
        I = <Py_ssize_t*>thread_I(&plans)
        for job in prange(N * nt, schedule="dynamic"):
            n = job // nt
            p0 = (job - n * nt) * TILE
            L = min(p0 + TILE, P) - p0
            plan_tile(gp + (n * P + p0) * 3, L, mode, padding, False, ax, ay, az, si, R, I)
            c = 0
            while c < C:
                if mode == BILINEAR:
                    nc = min(CB_FWD, C - c)
                    sweep_fwd_trilinear(ip + n * si[0] + c * si[1], si[1],
                                        op + n * so[0] + c * so[1] + p0, so[1], nc, L, si, R,
                                        I)
                else:
                    nc = 1
                    sweep_fwd(ip + n * si[0] + c * si[1], op + n * so[0] + c * so[1] + p0, L,
                              mode, si, R, I)
                c = c + nc
        fi_team_leave(&team)
    fi_team_done(&team)
    plans_free(&plans)
    return ST_OK


cdef void sweep_trilinear(const real* ip, real* gip, const real* gop, Py_ssize_t c0,
                          Py_ssize_t c1, Py_ssize_t L, const Py_ssize_t* si,
                          const Py_ssize_t* so, bint do_input, bint do_grid, real* R,
                          const Py_ssize_t* I) noexcept nogil:
    """Channels [c0, c1) of one tile of one image (ip, gip: the image; gop: the tile's
    first voxel in channel 0): the input pass in blocks of CB_IN channels, the grid
    pass in blocks of CB_GRID counted from c0."""
    cdef Py_ssize_t c, nc
    if do_input:
        c = c0
        while c < c1:
            nc = min(CB_IN, c1 - c)
            sweep_input_trilinear(gip + c * si[1], si[1], gop + c * so[1], so[1], nc, L, si,
                                  R, I)
            c = c + nc
    if do_grid:
        c = c0
        while c < c1:
            nc = min(CB_GRID, c1 - c)
            sweep_grid_trilinear(ip + c * si[1], si[1], gop + c * so[1], so[1], nc, L, si,
                                 R, I)
            c = c + nc


cdef void backward_voxels(const real* ip, real* gip, const real* gop, const real* gp,
                          real* ggp, Py_ssize_t n, Py_ssize_t p0, Py_ssize_t p1,
                          Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t P, const Py_ssize_t* si,
                          const Py_ssize_t* so, int mode, int padding, bint do_input,
                          bint do_grid, const real* ax, const real* ay, const real* az,
                          real* R, Py_ssize_t* I) noexcept nogil:
    """Output voxels [p0, p1) of image n, channels [c0, c1), in tiles of TILE voxels."""
    cdef Py_ssize_t p, j, c, L
    cdef real* GX
    cdef real* gg
    p = p0
    while p < p1:
        L = min(p + TILE, p1) - p
        GX = R + R_GX * L
        plan_tile(gp + (n * P + p) * 3, L, mode, padding, mode != NEAREST, ax, ay, az, si,
                  R, I)
        for j in range(3 * L):
            GX[j] = 0
        if mode == BILINEAR:
            sweep_trilinear(ip + n * si[0], gip + n * si[0], gop + n * so[0] + p, c0, c1, L,
                            si, so, do_input, do_grid, R, I)
            if do_grid:
                redo_overflowed_voxels(ip + n * si[0] + c0 * si[1], si[1],
                                       gop + n * so[0] + c0 * so[1] + p, so[1], c1 - c0, L,
                                       R, I)
        else:
            for c in range(c0, c1):
                sweep_bwd(ip + n * si[0] + c * si[1], gip + n * si[0] + c * si[1],
                          gop + n * so[0] + c * so[1] + p, L, mode, si, do_input, do_grid,
                          R, I)
        if do_grid:
            gg = ggp + (n * P + p) * 3
            for j in range(L):
                gg[3 * j] = GX[j] * R[R_MX * L + j]
                gg[3 * j + 1] = GX[L + j] * R[(R_MX + 1) * L + j]
                gg[3 * j + 2] = GX[2 * L + j] * R[(R_MX + 2) * L + j]
        p += TILE


def grid_sample3d_bwd(real[::1] grad_input, real[::1] grad_grid, const real[::1] grad_out,
                      const real[::1] inp, const real[::1] grid, dims, int mode,
                      int padding, bint align_corners, bint do_input, bint do_grid,
                      int nthreads):
    """grad_input (zeroed here) and grad_grid of the volume grid_sample; either may be
    skipped (pass a 1-element dummy). With N >= nthreads one thread owns whole images;
    otherwise grad_input is split over (image, channel block) and grad_grid over
    (image, tile): the same additions in the same order either way."""
    cdef int status
    cdef Py_ssize_t d[8]
    buffers = dict(grad_out=grad_out.shape[0], inp=inp.shape[0], grid=grid.shape[0])
    if do_input:
        buffers["grad_input"] = grad_input.shape[0]
    if do_grid:
        buffers["grad_grid"] = grad_grid.shape[0]
    _check_buffers("grid_sample_backward", dims, mode, padding, **buffers)
    for k in range(8):
        d[k] = dims[k]
    nthreads = max(nthreads, 1)
    if d[0] == 0 or (not do_input and not do_grid):
        return
    if d[1] == 0 or d[5] * d[6] * d[7] == 0:
        if do_input:
            grad_input[:d[0] * d[1] * d[2] * d[3] * d[4]] = 0
        if do_grid:
            grad_grid[:d[0] * d[5] * d[6] * d[7] * 3] = 0
        return
    with nogil:
        status = bwd_run(&grad_input[0], &grad_grid[0], &grad_out[0], &inp[0], &grid[0], d,
                         mode, padding, align_corners, do_input, do_grid, nthreads)
    if status != ST_OK:
        raise status_error("grid_sample_backward", status, nthreads, sizeof(real))


cdef inline void bwd_part(const real* ip, const BwdArgs* a, Py_ssize_t n, Py_ssize_t p0,
                          Py_ssize_t p1, Py_ssize_t c0, Py_ssize_t c1, bint do_input,
                          bint do_grid, void* R, void* I) noexcept nogil:
    """_plans' backward_part (ip selects the type): zero grad_input's channels [c0, c1)
    of image n (do_input), then run the output voxels [p0, p1)."""
    cdef real* gip = <real*>a.gip
    if do_input:
        memset(gip + n * a.si[0] + c0 * a.si[1], 0, sizeof(real) * (c1 - c0) * a.si[1])
    backward_voxels(ip, gip, <const real*>a.gop, <const real*>a.gp, <real*>a.ggp, n, p0, p1,
                    c0, c1, a.P, a.si, a.so, a.mode, a.padding, do_input, do_grid,
                    <const real*>a.ax, <const real*>a.ay, <const real*>a.az, <real*>R,
                    <Py_ssize_t*>I)


cdef void bwd_part_f32(const BwdArgs* a, Py_ssize_t n, Py_ssize_t p0, Py_ssize_t p1,
                       Py_ssize_t c0, Py_ssize_t c1, bint do_input, bint do_grid, void* R,
                       void* I) noexcept nogil:
    bwd_part(<const float*>a.ip, a, n, p0, p1, c0, c1, do_input, do_grid, R, I)


cdef void bwd_part_f64(const BwdArgs* a, Py_ssize_t n, Py_ssize_t p0, Py_ssize_t p1,
                       Py_ssize_t c0, Py_ssize_t c1, bint do_input, bint do_grid, void* R,
                       void* I) noexcept nogil:
    bwd_part(<const double*>a.ip, a, n, p0, p1, c0, c1, do_input, do_grid, R, I)


cdef int bwd_run(real* gip, real* ggp, const real* gop, const real* ip, const real* gp,
                 const Py_ssize_t* d, int mode, int padding, bint align_corners,
                 bint do_input, bint do_grid, int nthreads) noexcept nogil:
    cdef Py_ssize_t si[5]
    cdef Py_ssize_t so[5]
    cdef real ax[A_SLOTS]
    cdef real ay[A_SLOTS]
    cdef real az[A_SLOTS]
    cdef Py_ssize_t N = d[0], C = d[1]
    cdef Py_ssize_t P = d[5] * d[6] * d[7]
    cdef Plans plans
    cdef BwdArgs args
    if plans_for(&plans, nthreads, sizeof(real)) != ST_OK:
        return ST_NOMEM
    strides(C, d[2], d[3], d[4], si)
    strides(C, d[5], d[6], d[7], so)
    axis_params(ax, d[4], align_corners)
    axis_params(ay, d[3], align_corners)
    axis_params(az, d[2], align_corners)
    if mode == NEAREST:
        if do_grid:         # piecewise constant: no grid gradient
            memset(ggp, 0, sizeof(real) * N * P * 3)
        do_grid = False
    if do_input or do_grid:
        args = BwdArgs(ip=ip, gip=gip, gop=gop, gp=gp, ggp=ggp, si=&si[0], so=&so[0],
                       ax=&ax[0], ay=&ay[0], az=&az[0], H=d[3], W=d[4], P=P, mode=mode,
                       padding=padding)
        if real is float:
            run_backward(bwd_part_f32, &args, &plans, N, C, P, TILE, do_input, do_grid,
                         nthreads)
        else:
            run_backward(bwd_part_f64, &args, &plans, N, C, P, TILE, do_input, do_grid,
                         nthreads)
    plans_free(&plans)
    return ST_OK


# --------------------------------------------------------------------------- affine_grid 3-D

def affine_grid3d_fwd(real[::1] out, const real[::1] theta, const real[::1] xs,
                      const real[::1] ys, const real[::1] zs, Py_ssize_t N, int nthreads):
    """out[n, d, h, w, r] = t[r, 0] x_w + t[r, 1] y_h + t[r, 2] z_d + t[r, 3] (t = theta[n]),
    summed in that order in float64 and rounded once; xs, ys, zs are the base
    coordinates of the output axes (W, H, D entries)."""
    cdef Py_ssize_t W = xs.shape[0], H = ys.shape[0], D = zs.shape[0]
    cdef Py_ssize_t row, n, i, j, r, k
    cdef double x, y, z
    cdef real* o
    cdef const real* t
    cdef fi_team team
    _check_affine3d("affine_grid", N, D, H, W, theta.shape[0], out.shape[0])
    if N == 0 or D * H * W == 0:
        return
    with nogil:
        nthreads = fi_team_plan(&team, nthreads)
        with parallel(num_threads=nthreads):
            fi_team_enter(&team)
            for row in prange(N * D * H, schedule="static"):
                n = row // (D * H)
                k = (row // H) % D
                i = row % H
                t = &theta[0] + n * 12
                z = zs[k]
                y = ys[i]
                o = &out[0] + row * W * 3
                for j in range(W):
                    x = xs[j]
                    for r in range(3):
                        o[3 * j + r] = <real>(
                            ((<double>t[4 * r] * x + <double>t[4 * r + 1] * y)
                             + <double>t[4 * r + 2] * z) + <double>t[4 * r + 3])
            fi_team_leave(&team)
        fi_team_done(&team)


cdef void affine3d_bwd_image(real* gt, const real* g, const real* xs, const real* ys,
                             const real* zs, Py_ssize_t D, Py_ssize_t H,
                             Py_ssize_t W) noexcept nogil:
    """One image: gt[r, k] = sum grad_grid[d, h, w, r] * (x_w, y_h, z_d, 1)[k], float64,
    per row (d, h) the sums of the products over w in order, then rows in order; rounded
    once."""
    cdef Py_ssize_t row, j, r
    cdef double s[3]
    cdef double sx[3]
    cdef double sy[3]
    cdef double sz[3]
    cdef double acc[12]
    cdef double y, z, v
    cdef const real* gr
    for r in range(12):
        acc[r] = 0
    for row in range(D * H):
        z = zs[row // H]
        y = ys[row % H]
        gr = g + row * W * 3
        for r in range(3):
            s[r] = 0
            sx[r] = 0
            sy[r] = 0
            sz[r] = 0
        for j in range(W):
            for r in range(3):
                v = <double>gr[3 * j + r]
                s[r] = s[r] + v
                sx[r] = sx[r] + v * <double>xs[j]
                sy[r] = sy[r] + v * y   # per voxel: a row's sum may overflow where this does not
                sz[r] = sz[r] + v * z
        for r in range(3):
            acc[4 * r] = acc[4 * r] + sx[r]
            acc[4 * r + 1] = acc[4 * r + 1] + sy[r]
            acc[4 * r + 2] = acc[4 * r + 2] + sz[r]
            acc[4 * r + 3] = acc[4 * r + 3] + s[r]
    for r in range(12):
        gt[r] = <real>acc[r]


def affine_grid3d_bwd(real[::1] grad_theta, const real[::1] grad_grid, const real[::1] xs,
                      const real[::1] ys, const real[::1] zs, Py_ssize_t N, int nthreads):
    """grad_theta (N, 3, 4) of affine_grid3d_fwd; one image per thread (deterministic)."""
    cdef Py_ssize_t W = xs.shape[0], H = ys.shape[0], D = zs.shape[0]
    cdef Py_ssize_t n
    cdef fi_team team
    _check_affine3d("affine_grid_backward", N, D, H, W, grad_theta.shape[0],
                    grad_grid.shape[0])
    if N == 0:
        return
    if D * H * W == 0:
        grad_theta[:N * 12] = 0
        return
    with nogil:
        nthreads = fi_team_plan(&team, nthreads)
        with parallel(num_threads=nthreads):
            fi_team_enter(&team)
            for n in prange(N, schedule="static"):
                affine3d_bwd_image(&grad_theta[0] + n * 12, &grad_grid[0] + n * D * H * W * 3,
                                   &xs[0], &ys[0], &zs[0], D, H, W)
            fi_team_leave(&team)
        fi_team_done(&team)


def _check_affine3d(str op, Py_ssize_t N, Py_ssize_t D, Py_ssize_t H, Py_ssize_t W,
                    Py_ssize_t theta_len, Py_ssize_t grid_len):
    """N >= 0 and the buffers must hold (N, 3, 4) and (N, D, H, W, 3) (Python ints: no
    overflow)."""
    need_theta = int(N) * 12
    need_grid = int(N) * int(D) * int(H) * int(W) * 3
    if N < 0 or theta_len < need_theta or grid_len < need_grid:
        raise ValueError(f"{op}: N must be >= 0 and the buffers must hold theta "
                         f"{need_theta} and the grid {need_grid} elements for N={N}, D={D}, "
                         f"H={H}, W={W}; got {theta_len} and {grid_len}.")
