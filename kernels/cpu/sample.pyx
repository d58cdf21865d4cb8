# cython: language_level=3
"""grid_sample kernels (forward and backward), NCHW or NHWC, float32/float64.

The Python front (fastinterp.sample) validates and makes every array
C-contiguous; these loops trust what they get. The per-coordinate arithmetic
(unnormalize, padding, weights) lives in _taps.pxd.

Design: an image's output pixels are one run (the grid and every output
layout store consecutive rows contiguously), cut into tiles of TILE pixels.
For each tile the taps of every pixel (offsets, masks, weights and, for the
backward, gradient factors) are computed once into a small per-thread table
("plan"); then the channels are swept along the tile (bilinear: CB channels
per pass). The plans are allocated once per call, before any output is
written, and their size depends only on TILE and the thread count, never on
the output: a failed allocation is reported (MemoryError) with nothing
written. The channels-first bilinear forward may also take channels-last
copies of its images (at most 16 MB each, 64 MB in all, see fwd_via_nhwc);
when they cannot be allocated it runs without them. Results do not depend
on TILE, on the thread count or on the copies.
The backward scatter into grad_input is parallelised so that no two threads
ever add into the same element, and every element receives its additions in
the same order whatever the thread count: results are bit-identical.
"""
from cython.parallel cimport prange, parallel, threadid
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from _types cimport real
from _team cimport (fi_omp_barrier, fi_team, fi_team_done, fi_team_enter, fi_team_leave,
                   fi_team_plan)
from _plans cimport BwdArgs, Plans, plans_alloc, plans_free, thread_R, thread_I, run_backward
from _c_entry cimport grid_sample_fwd_f32_t, grid_sample_fwd_f64_t
from _taps cimport unnormalize, tap_inside
from _gridaxis cimport (PAD_WRAP, A_SCALE, A_SHIFT, A_SIZE, A_LIMIT, A_SLOTS, LIN_SPLIT, axis_params,
                        coordinate, linear_axis, nearest_tap, cubic_axis)

cdef extern from *:
    void __builtin_prefetch(const void* addr) noexcept nogil
    void prefetch_for_write "__builtin_prefetch"(const void* addr, int rw, int locality) noexcept nogil

cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void** ptr, size_t alignment, size_t size)
cdef extern from "_transpose.h" nogil:
    void fi_transpose_f(const float* a, Py_ssize_t lda, float* b, Py_ssize_t ldb,
                        Py_ssize_t rows, Py_ssize_t cols) noexcept
    void fi_transpose_d(const double* a, Py_ssize_t lda, double* b, Py_ssize_t ldb,
                        Py_ssize_t rows, Py_ssize_t cols) noexcept

cdef extern from "_gridbwd.h" nogil:
    void fi_bwd_bilinear_nhwc_f(const float* ip, float* gip, const float* gop, Py_ssize_t nc,
                                Py_ssize_t ostep, Py_ssize_t wo, Py_ssize_t sx, Py_ssize_t sy,
                                const float* R, const Py_ssize_t* I, int do_input,
                                int do_grid, float* GX, float* GY) noexcept
    void fi_bwd_bilinear_nhwc_d(const double* ip, double* gip, const double* gop,
                                Py_ssize_t nc, Py_ssize_t ostep, Py_ssize_t wo, Py_ssize_t sx,
                                Py_ssize_t sy, const double* R, const Py_ssize_t* I,
                                int do_input, int do_grid, double* GX, double* GY) noexcept

cdef extern from "_gridplan.h" nogil:
    void fi_plan_bilinear_f(const float* g, Py_ssize_t wo, int padding, int grad,
                            const float* ax, const float* ay, Py_ssize_t sx, Py_ssize_t sy,
                            float* R, Py_ssize_t* I) noexcept
    void fi_plan_bilinear_d(const double* g, Py_ssize_t wo, int padding, int grad,
                            const double* ax, const double* ay, Py_ssize_t sx, Py_ssize_t sy,
                            double* R, Py_ssize_t* I) noexcept

# Mode and padding codes (the front maps the strings).
cdef enum:
    NEAREST = 0
    BILINEAR = 1
    BICUBIC = 2

# Plan table layout, per output row of width Wo: real slots (times Wo) ...
cdef enum:
    # slots 0..5: bilinear's weights and fractions (BL_* below)
    R_MX = 6       # d coordinate / d grid value (x), after padding
    R_MY = 7
    R_CX = 8       # bicubic x weights: slots 8..11
    R_CY = 12      # bicubic y weights: 12..15
    R_DCX = 16     # bicubic d weights / dt: 16..19
    R_DCY = 20     # 20..23
    R_GX = 24      # grad accumulators (backward)
    R_GY = 25
    R_SLOTS = 26
# ... and integer slots (times Wo).
cdef enum:
    I_MASK = 0     # valid-tap bits
    I_X = 1        # x offsets (elements): bicubic 1..4, nearest 1
    I_Y = 5        # y offsets: bicubic 5..8, nearest 5
    I_SLOTS = 9

# Bilinear's own slots (plan_bilinear): real slots 0..3 hold the weights nw, ne, sw,
# se, then the fractions tx, ty; R_MX, R_MY, R_GX, R_GY as above. Integer slots:
# I_MASK, then the base offset x0 + y0 and the offsets x0, x1, y0, y1. One slot per
# plane (not one record per pixel), so the planner's vector stores stay contiguous.
cdef enum:
    BL_TX = 4
    BL_TY = 5
    BL_BASE = 1
    BL_OFF = 2     # x0, x1, y0, y1: slots 2..5

cdef enum:
    INT_TAPS = 2147483647   # _gridplan.h converts tap coordinates through int
cdef enum:
    TILE = 1024          # output pixels planned at once (~280 KB of plan per thread)

# Status codes of the nogil drivers (the values of plugin.h's FI_OK, FI_ERR_INVALID
# and FI_ERR_NOMEM, so the C ABI can pass them on).
cdef enum:
    ST_OK = 0
    ST_INVALID = 1
    ST_NOMEM = 3

cdef void plan_row(const real* g, Py_ssize_t wo, int mode, int padding, bint grad,
                   const real* ax, const real* ay, Py_ssize_t sx, Py_ssize_t sy,
                   real* R, Py_ssize_t* I) noexcept nogil:
    """Taps of the wo output pixels whose grid points are g[0..2*wo) (bilinear: packed,
    see plan_bilinear)."""
    cdef Py_ssize_t j
    cdef real x, y, mx = 0, my = 0
    cdef int bx, by
    cdef Py_ssize_t* M = I + I_MASK * wo
    cdef bint wrap = padding == PAD_WRAP
    if mode == BILINEAR:
        plan_bilinear(g, wo, padding, grad, ax, ay, sx, sy, R, I)
        return
    for j in range(wo):
        if mode == BICUBIC:
            x = unnormalize(g[2 * j], ax[A_SCALE], ax[A_SHIFT])
            y = unnormalize(g[2 * j + 1], ay[A_SCALE], ay[A_SHIFT])
            bx = cubic_axis(x, ax, padding, sx, I + I_X * wo + j, wo,
                            R + R_CX * wo + j, R + R_DCX * wo + j, grad)
            by = cubic_axis(y, ay, padding, sy, I + I_Y * wo + j, wo,
                            R + R_CY * wo + j, R + R_DCY * wo + j, grad)
            M[j] = bx | (by << 4)
            R[R_MX * wo + j] = ax[A_SCALE]
            R[R_MY * wo + j] = ay[A_SCALE]
            continue
        # nearest: torch's rounding of the coordinate, which decides half-pixel ties
        x = coordinate(g[2 * j], ax, padding, grad, &mx, mode == NEAREST)
        y = coordinate(g[2 * j + 1], ay, padding, grad, &my, mode == NEAREST)
        R[R_MX * wo + j] = mx
        R[R_MY * wo + j] = my
        if mode == NEAREST:
            x = nearest_tap(x, ax[A_SIZE], wrap)
            y = nearest_tap(y, ay[A_SIZE], wrap)
            if tap_inside(x, ax[A_LIMIT]) and tap_inside(y, ay[A_LIMIT]):
                M[j] = 1
                I[I_X * wo + j] = (<Py_ssize_t>x) * sx
                I[I_Y * wo + j] = (<Py_ssize_t>y) * sy
            else:
                M[j] = 0
                I[I_X * wo + j] = 0
                I[I_Y * wo + j] = 0
            continue


cdef void plan_bilinear(const real* g, Py_ssize_t wo, int padding, bint grad,
                        const real* ax, const real* ay, Py_ssize_t sx, Py_ssize_t sy,
                        real* R, Py_ssize_t* I) noexcept nogil:
    """plan_row for bilinear: pixel j's weights nw, ne, sw, se at R[k * wo + j] (k < 4),
    tx, ty in slots BL_TX, BL_TY; its mask in I_MASK, x0 + y0 in BL_BASE, the offsets
    x0, x1, y0, y1 in BL_OFF..; R_MX, R_MY (with grad) in their slots. Mask bit k:
    tap k inside (15: all four).
    Every padding but wrap runs the block-vectorised copy of this loop in _gridplan.h
    (the same operations in the same order: the same plans)."""
    cdef Py_ssize_t j
    cdef real x, y, mx = 0, my = 0, tx, ty
    cdef real one = 1
    cdef int bx, by
    cdef bint wrap = padding == PAD_WRAP
    cdef Py_ssize_t* t
    if not wrap and ax[A_SIZE] < INT_TAPS and ay[A_SIZE] < INT_TAPS:
        if real is float:
            fi_plan_bilinear_f(g, wo, padding, grad, ax, ay, sx, sy, R, I)
        else:
            fi_plan_bilinear_d(g, wo, padding, grad, ax, ay, sx, sy, R, I)
        return
    for j in range(wo):
        x = coordinate(g[2 * j], ax, padding, grad, &mx)
        y = coordinate(g[2 * j + 1], ay, padding, grad, &my)
        R[R_MX * wo + j] = mx
        R[R_MY * wo + j] = my
        t = I + BL_OFF * wo + j
        bx = linear_axis(x, ax[A_SIZE], ax[A_LIMIT], sx, wrap, t, t + wo, &tx)
        by = linear_axis(y, ay[A_SIZE], ay[A_LIMIT], sy, wrap, t + 2 * wo, t + 3 * wo, &ty)
        # bit 4 (wrapped, non-adjacent taps) keeps the mask off the all-inside fast paths
        I[I_MASK * wo + j] = (bx & by & 1) | ((bx >> 1) & by & 1) << 1 \
            | (bx & (by >> 1) & 1) << 2 | ((bx >> 1) & (by >> 1) & 1) << 3 \
            | ((bx | by) & LIN_SPLIT) << 2
        I[BL_BASE * wo + j] = t[0] + t[2 * wo]
        R[j] = (one - ty) * (one - tx)
        R[wo + j] = (one - ty) * tx
        R[2 * wo + j] = ty * (one - tx)
        R[3 * wo + j] = ty * tx
        R[BL_TX * wo + j] = tx
        R[BL_TY * wo + j] = ty


cdef inline real tap_value(const real* ip, Py_ssize_t off, Py_ssize_t mask,
                           int bit) noexcept nogil:
    return ip[off] if (mask >> bit) & 1 else 0


cdef inline void masked_taps(const real* R, const Py_ssize_t* I, Py_ssize_t wo, Py_ssize_t j,
                             Py_ssize_t* t, real* w) noexcept nogil:
    """Pixel j's offsets x0, x1, y0, y1 and weights from plan_bilinear's plan, copied
    into local arrays for bilinear_masked, as the sweeps always passed them: which
    products the compiler fuses into multiply-adds there depends on that shape, and
    results must not change with it."""
    cdef int k
    for k in range(4):
        t[k] = I[(BL_OFF + k) * wo + j]
        w[k] = R[k * wo + j]


cdef inline real bilinear_masked(const real* ip, const Py_ssize_t* t, const real* w,
                                 Py_ssize_t m) noexcept nogil:
    """Bilinear value with only the taps in mask m read (PyTorch's order of sums)."""
    return (tap_value(ip, t[0] + t[2], m, 0) * w[0] + tap_value(ip, t[1] + t[2], m, 1) * w[1]) \
        + tap_value(ip, t[0] + t[3], m, 2) * w[2] + tap_value(ip, t[1] + t[3], m, 3) * w[3]


cdef void sweep_fwd(const real* ip, real* op, Py_ssize_t ostep, Py_ssize_t wo, int mode,
                    Py_ssize_t sx, Py_ssize_t sy, const real* R,
                    const Py_ssize_t* I) noexcept nogil:
    """One channel of one output row, nearest or bicubic: op[j * ostep] for j < wo; ip
    is the channel's plane (bilinear: sweep_fwd_bilinear)."""
    cdef Py_ssize_t j, m, ya
    cdef int i, k
    cdef real v, r
    cdef real rows[4]
    cdef const Py_ssize_t* M = I + I_MASK * wo
    if mode == NEAREST:
        for j in range(wo):
            op[j * ostep] = tap_value(ip, I[I_X * wo + j] + I[I_Y * wo + j], M[j], 0)
    else:
        for j in range(wo):
            m = M[j]
            for i in range(4):
                ya = I[(I_Y + i) * wo + j]
                r = 0
                for k in range(4):
                    v = ip[I[(I_X + k) * wo + j] + ya] if (m >> k) & (m >> (4 + i)) & 1 else 0
                    r = r + R[(R_CX + k) * wo + j] * v
                rows[i] = r
            op[j * ostep] = ((R[R_CY * wo + j] * rows[0] + R[(R_CY + 1) * wo + j] * rows[1])
                             + R[(R_CY + 2) * wo + j] * rows[2]) + R[(R_CY + 3) * wo + j] * rows[3]


cdef inline void bilinear_bwd_masked(const real* ip, real* gip, real g, Py_ssize_t m,
                                     const Py_ssize_t* t, const real* w, bint do_input,
                                     bint do_grid, real tx, real ty, real* gx,
                                     real* gy) noexcept nogil:
    """One channel of one pixel with the taps in mask m only: scatter g * weights into
    gip (do_input); add d out / d (x, y) times g to *gx, *gy (do_grid, PyTorch's
    formula)."""
    cdef real v0, v1, v2, v3
    cdef real one = 1
    if do_input:
        if m & 1:
            gip[t[0] + t[2]] += w[0] * g
        if m & 2:
            gip[t[1] + t[2]] += w[1] * g
        if m & 4:
            gip[t[0] + t[3]] += w[2] * g
        if m & 8:
            gip[t[1] + t[3]] += w[3] * g
    if do_grid:
        v0 = tap_value(ip, t[0] + t[2], m, 0)
        v1 = tap_value(ip, t[1] + t[2], m, 1)
        v2 = tap_value(ip, t[0] + t[3], m, 2)
        v3 = tap_value(ip, t[1] + t[3], m, 3)
        gx[0] = gx[0] + ((v1 - v0) * (one - ty) + (v3 - v2) * ty) * g
        gy[0] = gy[0] + ((v2 - v0) * (one - tx) + (v3 - v1) * tx) * g


cdef void sweep_bwd(const real* ip, real* gip, const real* gop, Py_ssize_t ostep,
                    Py_ssize_t wo, int mode, Py_ssize_t sx, Py_ssize_t sy,
                    bint do_input, bint do_grid, real* R,
                    const Py_ssize_t* I) noexcept nogil:
    """One channel of one output row, nearest or bicubic: scatter grad_output into gip
    (do_input) and add this channel's share of d out / d grid into the row's
    accumulators (do_grid). Bilinear: sweep_bwd_bilinear."""
    cdef Py_ssize_t j, m, xa, o
    cdef int i, k
    cdef real g, v, cxk, cyi, gx, gy
    cdef const Py_ssize_t* M = I + I_MASK * wo
    cdef real* GX = R + R_GX * wo
    cdef real* GY = R + R_GY * wo
    if mode == NEAREST:
        if do_input:
            for j in range(wo):
                if M[j]:
                    gip[I[I_X * wo + j] + I[I_Y * wo + j]] += gop[j * ostep]
    else:
        for j in range(wo):
            g = gop[j * ostep]
            m = M[j]
            gx = GX[j]
            gy = GY[j]
            for k in range(4):          # x taps outer, y taps inner (PyTorch's order)
                cxk = R[(R_CX + k) * wo + j]
                xa = I[(I_X + k) * wo + j]
                for i in range(4):
                    cyi = R[(R_CY + i) * wo + j]
                    o = xa + I[(I_Y + i) * wo + j]
                    if (m >> k) & (m >> (4 + i)) & 1:
                        if do_input:
                            gip[o] += g * cxk * cyi
                        v = ip[o]
                    else:
                        v = 0
                    if do_grid:
                        gx = gx + v * g * R[(R_DCX + k) * wo + j] * cyi
                        gy = gy + v * g * R[(R_DCY + i) * wo + j] * cxk
            GX[j] = gx
            GY[j] = gy



# Channel blocks: the bilinear sweeps handle up to CB channels per pass over the
# plan, so each pixel's record is loaded once for CB channels. Their channel loops
# run to the constant CB (guarded by q < nc) so that the compiler unrolls them and
# keeps the carried values in registers. Builds with FMA let the compiler fuse
# products into multiply-adds (GCC's default -ffp-contract=fast), and which ones it
# fuses depends on the loop shape: changing CB, the unrolling or these expressions
# can change the last bit of results (4 is also the fastest block here; 8 was 30-40%
# slower). tests/test_sample_sweeps.py checks that a channel's values do not depend
# on its block.
cdef enum:
    CB = 4
    PF = 32         # prefetch distance, pixels


cdef void sweep_fwd_bilinear(const real* ip, Py_ssize_t cs, real* op, Py_ssize_t ocs,
                             Py_ssize_t ostep, Py_ssize_t wo, Py_ssize_t sx, Py_ssize_t sy,
                             const real* R, const Py_ssize_t* I, int nc) noexcept nogil:
    """fwd_bilinear_run, with a constant channel count for full blocks."""
    if nc == CB:
        fwd_bilinear_run(ip, cs, op, ocs, ostep, wo, sx, sy, R, I, CB)
    else:
        fwd_bilinear_run(ip, cs, op, ocs, ostep, wo, sx, sy, R, I, nc)


cdef inline void fwd_bilinear_run(const real* ip, Py_ssize_t cs, real* op, Py_ssize_t ocs,
                                  Py_ssize_t ostep, Py_ssize_t wo, Py_ssize_t sx,
                                  Py_ssize_t sy, const real* R, const Py_ssize_t* I,
                                  int nc) noexcept nogil:
    """nc <= CB channels (planes ip + q * cs -> op + q * ocs) of one run of output
    pixels, from plan_bilinear's plan; PyTorch's order of sums. When pixel j's west
    taps are pixel j - 1's east taps (the usual case along a row), their values are
    carried over in registers instead of loaded again."""
    cdef Py_ssize_t j, m, q, b
    cdef Py_ssize_t pend = -1       # offset of the carried column (north; south is + sy)
    cdef real w0, w1, w2, w3, v1, v3
    cdef real vn[CB]
    cdef real vs[CB]
    cdef Py_ssize_t t[4]
    cdef real w[4]
    cdef const real* p
    cdef real* o
    cdef Py_ssize_t ahead
    for j in range(wo):
        m = I[I_MASK * wo + j]
        b = I[BL_BASE * wo + j]
        o = op + j * ostep
        if (j & 7) == 0 and j + PF < wo:
            # the taps wander across input rows: the hardware prefetcher does not follow
            # them, so fetch pixel j + PF's rows now (every 8 pixels: a line holds 8-16)
            ahead = I[BL_BASE * wo + j + PF]
            for q in range(CB):
                if q < nc:
                    __builtin_prefetch(ip + q * cs + ahead)
                    __builtin_prefetch(ip + q * cs + ahead + sy)
        if m != 15:
            masked_taps(R, I, wo, j, t, w)
            for q in range(CB):
                if q < nc:
                    o[q * ocs] = bilinear_masked(ip + q * cs, t, w, m)
            pend = -1
            continue
        w0 = R[j]
        w1 = R[wo + j]
        w2 = R[2 * wo + j]
        w3 = R[3 * wo + j]
        if b != pend:
            for q in range(CB):     # unrolled: the carries stay in registers
                if q < nc:
                    vn[q] = ip[q * cs + b]
                    vs[q] = ip[q * cs + b + sy]
        for q in range(CB):     # unrolled: the carries stay in registers
            if q < nc:
                p = ip + q * cs + b
                v1 = p[sx]
                v3 = p[sy + sx]
                o[q * ocs] = (vn[q] * w0 + v1 * w1) + vs[q] * w2 + v3 * w3
                vn[q] = v1
                vs[q] = v3
        pend = b + sx


cdef void sweep_bwd_bilinear(const real* ip, real* gip, Py_ssize_t cs, const real* gop,
                             Py_ssize_t ocs, Py_ssize_t ostep, Py_ssize_t wo,
                             Py_ssize_t sx, Py_ssize_t sy, bint do_input, bint do_grid,
                             real* R, const Py_ssize_t* I, int nc) noexcept nogil:
    """bwd_bilinear_run with constant arguments for the common cases (full channel
    blocks, both gradients), so that the compiler drops the tests from the loop."""
    if nc == CB and do_input and do_grid:
        bwd_bilinear_run(ip, gip, cs, gop, ocs, ostep, wo, sx, sy, True, True, R, I, CB)
    elif nc == CB and do_input:
        bwd_bilinear_run(ip, gip, cs, gop, ocs, ostep, wo, sx, sy, True, False, R, I, CB)
    elif nc == CB:
        bwd_bilinear_run(ip, gip, cs, gop, ocs, ostep, wo, sx, sy, False, True, R, I, CB)
    else:
        bwd_bilinear_run(ip, gip, cs, gop, ocs, ostep, wo, sx, sy, do_input, do_grid, R, I, nc)


cdef inline void bwd_bilinear_run(const real* ip, real* gip, Py_ssize_t cs, const real* gop,
                                  Py_ssize_t ocs, Py_ssize_t ostep, Py_ssize_t wo,
                                  Py_ssize_t sx, Py_ssize_t sy, bint do_input, bint do_grid,
                                  real* R, const Py_ssize_t* I, int nc) noexcept nogil:
    """nc <= CB channels of the bilinear backward over one planned run of pixels: for
    every grad_input element the additions come in pixel order (taps nw, ne, sw, se),
    and the grid sums run over channels in increasing order, whatever nc.

    Along a row, pixel j's west taps are usually pixel j - 1's east taps. The east
    column (grad_input being summed, and input values) is then carried in registers
    into the next pixel instead of being stored and reloaded at once: the additions
    are the same, but no addition waits for the store of the one before (a chain
    through memory, ~10 cycles a pixel). Any other pixel first stores the carry."""
    cdef Py_ssize_t j, m, q, b
    cdef Py_ssize_t pend = -1       # offset of the carried column (north; south is + sy)
    cdef real w0, w1, w2, w3, tx, ty, gx, gy, g, v1, v3
    cdef real one = 1
    cdef real cn[CB]                # carried grad_input sums, north and south
    cdef real csouth[CB]
    cdef real vn[CB]                # carried input values
    cdef real vs[CB]
    cdef real* gp
    cdef const real* p
    cdef real* GX = R + R_GX * wo
    cdef real* GY = R + R_GY * wo
    cdef Py_ssize_t t[4]
    cdef real w[4]
    for j in range(wo):
        m = I[I_MASK * wo + j]
        b = I[BL_BASE * wo + j]
        tx = R[BL_TX * wo + j]
        ty = R[BL_TY * wo + j]
        gx = GX[j]
        gy = GY[j]
        if m != 15 or b != pend:
            if pend >= 0 and do_input:
                for q in range(CB):     # unrolled: the carries stay in registers
                    if q < nc:
                        gip[q * cs + pend] = cn[q]
                        gip[q * cs + pend + sy] = csouth[q]
            pend = -1
            if m != 15:
                masked_taps(R, I, wo, j, t, w)
                for q in range(CB):     # unrolled: the carries stay in registers
                    if q < nc:
                        bilinear_bwd_masked(ip + q * cs, gip + q * cs, gop[q * ocs + j * ostep], m,
                                            t, w, do_input, do_grid, tx, ty, &gx, &gy)
                GX[j] = gx
                GY[j] = gy
                continue
            for q in range(CB):     # unrolled: the carries stay in registers
                if q < nc:
                    if do_input:
                        cn[q] = gip[q * cs + b]
                        csouth[q] = gip[q * cs + b + sy]
                    if do_grid:
                        vn[q] = ip[q * cs + b]
                        vs[q] = ip[q * cs + b + sy]
        w0 = R[j]
        w1 = R[wo + j]
        w2 = R[2 * wo + j]
        w3 = R[3 * wo + j]
        for q in range(CB):     # unrolled: the carries stay in registers
            if q < nc:
                g = gop[q * ocs + j * ostep]
                if do_input:
                    gp = gip + q * cs + b
                    gp[0] = cn[q] + w0 * g
                    cn[q] = gp[sx] + w1 * g
                    gp[sy] = csouth[q] + w2 * g
                    csouth[q] = gp[sy + sx] + w3 * g
                if do_grid:
                    p = ip + q * cs + b
                    v1 = p[sx]
                    v3 = p[sy + sx]
                    gx = gx + ((v1 - vn[q]) * (one - ty) + (v3 - vs[q]) * ty) * g
                    gy = gy + ((vs[q] - vn[q]) * (one - tx) + (v3 - v1) * tx) * g
                    vn[q] = v1
                    vs[q] = v3
        pend = b + sx
        GX[j] = gx
        GY[j] = gy
    if pend >= 0 and do_input:
        for q in range(CB):     # unrolled: the carries stay in registers
            if q < nc:
                gip[q * cs + pend] = cn[q]
                gip[q * cs + pend + sy] = csouth[q]


cdef void sweep_fwd_bilinear_nhwc(const real* ip, real* op, Py_ssize_t C, Py_ssize_t wo,
                                  Py_ssize_t sx, Py_ssize_t sy, const real* R,
                                  const Py_ssize_t* I) noexcept nogil:
    """NHWC: all C channels of each pixel, contiguous (vectorisable); ip is the
    image, op the run's first output pixel. Same arithmetic as sweep_fwd_bilinear."""
    sweep_fwd_bilinear_pixels(ip, op, C, wo, 0, wo, sx, sy, R, I, NULL, 0, 0)


cdef void sweep_fwd_bilinear_pixels(const real* ip, real* op, Py_ssize_t C, Py_ssize_t wo,
                                    Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t sx,
                                    Py_ssize_t sy, const real* R,
                                    const Py_ssize_t* I, real* pf, Py_ssize_t pf_stride,
                                    Py_ssize_t pf_len) noexcept nogil:
    """sweep_fwd_bilinear_nhwc for pixels j0 <= j < j1 of a run of wo planned pixels;
    op is pixel j0's output. With ``pf``, the C runs of pf_len values at pf,
    pf + pf_stride, ... (the planes the next block will be written to) are
    prefetched for writing, a few lines per pixel: spread out, the prefetches
    do not fill the line-fill buffers as a burst would."""
    cdef Py_ssize_t j, m, c, q
    cdef Py_ssize_t per_plane = (pf_len * <Py_ssize_t> sizeof(real) + 63) // 64
    cdef Py_ssize_t lines = C * per_plane if pf != NULL else 0
    cdef Py_ssize_t step = (lines + (j1 - j0) - 1) // (j1 - j0) if j1 > j0 else 0
    cdef Py_ssize_t line = 0        # the next line to prefetch: line of plane pf_plane
    cdef real* pf_plane = pf
    cdef Py_ssize_t t[4]
    cdef real w[4]
    cdef real w0, w1, w2, w3
    cdef const real* p0
    cdef const real* p1
    cdef const real* p2
    cdef const real* p3
    cdef real* o
    for j in range(j0, j1):
        m = I[I_MASK * wo + j]
        w0, w1, w2, w3 = R[j], R[wo + j], R[2 * wo + j], R[3 * wo + j]
        o = op + (j - j0) * C
        q = 0
        while q < step and lines > 0:
            prefetch_for_write(pf_plane + line * (64 // <Py_ssize_t> sizeof(real)), 1, 3)
            lines -= 1
            line += 1
            if line == per_plane:
                line = 0
                pf_plane += pf_stride
            q += 1
        if m == 15:
            p0 = ip + I[BL_BASE * wo + j]
            p1 = p0 + sx
            p2 = p0 + sy
            p3 = p2 + sx
            for c in range(C):
                o[c] = (p0[c] * w0 + p1[c] * w1) + p2[c] * w2 + p3[c] * w3
        else:
            masked_taps(R, I, wo, j, t, w)
            for c in range(C):
                o[c] = bilinear_masked(ip + c, t, w, m)


# Channels-first bilinear forward through an NHWC copy of each image: the NHWC sweep
# reads a pixel's four taps for all channels from four contiguous runs, where the
# channels-first sweep gathers them plane by plane (about twice its time with 8 or
# more channels). Worth it when the copy is small next to the work: enough channels,
# at least a quarter as many output pixels as input pixels (the copy costs about a
# sixth of a sweep's time per value), an image of at most 16 MB.
cdef enum:
    NHWC_MIN_CHANNELS = 8
    NHWC_SUB = 64           # pixels swept into the per-thread NHWC buffer at a time
    NHWC_CHUNK = 256        # pixels per transposition task
cdef size_t NHWC_IMAGE_BYTES = 16 << 20
cdef size_t NHWC_TOTAL_BYTES = 64 << 20    # one copy per thread up to this much in all


cdef inline bint fwd_via_nhwc(int mode, bint channels_last, Py_ssize_t C, Py_ssize_t H,
                              Py_ssize_t W, Py_ssize_t P, size_t real_size) noexcept nogil:
    return (mode == BILINEAR and not channels_last and C >= NHWC_MIN_CHANNELS
            and 4 * P >= H * W and <size_t>(C * H * W) * real_size <= NHWC_IMAGE_BYTES)


cdef inline void transpose(const real* a, Py_ssize_t lda, real* b, Py_ssize_t ldb,
                           Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """b[j * ldb + i] = a[i * lda + j] for i < rows, j < cols (see _transpose.h)."""
    if real is float:
        fi_transpose_f(a, lda, b, ldb, rows, cols)
    else:
        fi_transpose_d(a, lda, b, ldb, rows, cols)


cdef void sweep_fwd_bilinear_from_nhwc(const real* img, real* op, Py_ssize_t P, Py_ssize_t C,
                                       Py_ssize_t wo, Py_ssize_t sx, Py_ssize_t sy,
                                       const real* R, const Py_ssize_t* I,
                                       real* buf) noexcept nogil:
    """One run of wo planned pixels of a channels-first output (op: the run's first
    pixel of channel 0, planes P apart) from an NHWC image: NHWC_SUB pixels at a time
    into buf, then out to the C planes. The NHWC sweep's arithmetic, so the same bits
    as the channels-first sweep. The blocks after the first start 32-byte aligned in
    channel 0's plane (in every plane when P is a multiple of 8 floats), so that the
    transposition's whole-row stores do not straddle cache lines: a caller's out=
    array from NumPy's allocator starts 16 bytes into a line, where the straddling
    stores cost about a third more time."""
    cdef Py_ssize_t j0 = 0
    cdef Py_ssize_t j1 = NHWC_SUB - (<size_t>op // sizeof(real)) % (32 // sizeof(real))
    while j0 < wo:
        j1 = min(j1, wo)
        sweep_fwd_bilinear_pixels(img, buf, C, wo, j0, j1, sx, sy, R, I, op + j1, P,
                                  min(j1 + NHWC_SUB, wo) - j1)
        transpose(buf, C, op + j0, P, j1 - j0, C)
        j0 = j1
        j1 = j0 + NHWC_SUB


cdef void* line_aligned_malloc(size_t size) noexcept nogil:
    """malloc's memory starting on a cache line (free() releases it), or NULL: the NHWC
    copies' pixel runs and the transposition's rows then split no more lines than
    they must (malloc's large blocks start 16 bytes into a line)."""
    cdef void* p = NULL
    if posix_memalign(&p, 64, size) != 0:
        return NULL
    return p


cdef int grid_sample_fwd_via_nhwc(real* op, const real* ip, const real* gp, Py_ssize_t N,
                                  Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t P,
                                  int padding, const real* ax, const real* ay,
                                  const Plans* plans, int nthreads) noexcept nogil:
    """Bilinear forward of channels-first images (see fwd_via_nhwc). With at least two
    images per thread, each thread takes whole images into its own NHWC copy (no
    barrier inside the region: a descheduled thread holds nobody up); else, per image,
    the threads transpose it into one shared copy, then sweep its tiles. ST_NOMEM,
    nothing written, when the copies cannot be allocated."""
    cdef Py_ssize_t HW = H * W
    cdef Py_ssize_t nt = (P + TILE - 1) // TILE
    cdef size_t image = <size_t>(C * HW)
    cdef bint own = N >= 2 * nthreads and nthreads * image * sizeof(real) <= NHWC_TOTAL_BYTES
    cdef real* img = <real*>line_aligned_malloc((nthreads if own else 1) * image * sizeof(real))
    cdef real* bufs = <real*>line_aligned_malloc(<size_t>(nthreads * NHWC_SUB * C) * sizeof(real))
    cdef real* mine
    cdef real* buf
    cdef real* R
    cdef Py_ssize_t* I
    cdef Py_ssize_t n, k, b
    cdef fi_team team
    if img == NULL or bufs == NULL:
        free(img)
        free(bufs)
        return ST_NOMEM
    nthreads = fi_team_plan(&team, nthreads)
    with parallel(num_threads=nthreads):
        fi_team_enter(&team)
        R = <real*>thread_R(plans)
        I = <Py_ssize_t*>thread_I(plans)
        buf = bufs + threadid() * NHWC_SUB * C
        if own:
            mine = img + threadid() * image
            for k in prange(N, schedule="dynamic"):
                transpose(ip + k * C * HW, HW, mine, C, C, HW)
                sample_from_nhwc(mine, op + k * C * P, gp + k * P * 2, P, C, W, 0, nt,
                                 padding, ax, ay, R, I, buf)
        else:
            for n in range(N):
                for b in prange(0, HW, NHWC_CHUNK, schedule="static"):
                    transpose(ip + n * C * HW + b, HW, img + b * C, C, C,
                              min(b + NHWC_CHUNK, HW) - b)
                fi_omp_barrier()    # the copy is whole before any tile reads it
                for b in prange(nt, schedule="dynamic"):
                    sample_from_nhwc(img, op + n * C * P, gp + n * P * 2, P, C, W, b, b + 1,
                                     padding, ax, ay, R, I, buf)
                fi_omp_barrier()    # every tile is done before the next image overwrites it
        fi_team_leave(&team)
    fi_team_done(&team)
    free(img)
    free(bufs)
    return ST_OK


cdef void sample_from_nhwc(const real* img, real* op, const real* gp, Py_ssize_t P,
                           Py_ssize_t C, Py_ssize_t W, Py_ssize_t t0, Py_ssize_t t1,
                           int padding, const real* ax, const real* ay, real* R,
                           Py_ssize_t* I, real* buf) noexcept nogil:
    """Tiles t0 <= t < t1 of one image's P output pixels (op: its channel-0 plane, gp:
    its grid) from its NHWC copy img."""
    cdef Py_ssize_t t, p0, length
    for t in range(t0, t1):
        p0 = t * TILE
        length = min(p0 + TILE, P) - p0
        plan_row(gp + p0 * 2, length, BILINEAR, padding, False, ax, ay, C, W * C, R, I)
        sweep_fwd_bilinear_from_nhwc(img, op + p0, P, C, length, C, W * C, R, I, buf)


cdef inline void layout(bint channels_last, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t* s) noexcept nogil:
    """Element strides (n, c, y, x) of a C-contiguous NCHW or NHWC image batch."""
    if channels_last:
        s[0] = H * W * C
        s[1] = 1
        s[2] = W * C
        s[3] = C
    else:
        s[0] = C * H * W
        s[1] = H * W
        s[2] = W
        s[3] = 1


cdef int plans_for(Plans* p, int nthreads, size_t real_size) noexcept nogil:
    """One plan table pair per thread, allocated up front; ST_NOMEM (nothing held) on
    failure."""
    if plans_alloc(p, nthreads, real_size * R_SLOTS * TILE,
                   sizeof(Py_ssize_t) * I_SLOTS * TILE) != 0:
        return ST_NOMEM
    return ST_OK


cdef int check_args(Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho,
                    Py_ssize_t Wo, int mode, int padding) noexcept nogil:
    """ST_INVALID for arguments no kernel can run on (the C ABI passes them unchecked)."""
    if N < 0 or C < 0 or H < 0 or W < 0 or Ho < 0 or Wo < 0:
        return ST_INVALID
    if mode < NEAREST or mode > BICUBIC or padding < 0 or padding > PAD_WRAP:
        return ST_INVALID
    if not (N == 0 or C == 0 or Ho == 0 or Wo == 0) and (H < 1 or W < 1):
        return ST_INVALID
    return ST_OK


cdef inline int clamp_threads(int nthreads) noexcept nogil:
    return 1 if nthreads < 1 else nthreads


cdef object status_error(str op, int status, int nthreads, size_t real_size):
    """The Python exception for a driver's status."""
    if status == ST_NOMEM:
        return MemoryError(
            f"{op}: could not allocate the per-thread plan buffers "
            f"({(real_size * R_SLOTS + sizeof(Py_ssize_t) * I_SLOTS) * TILE * nthreads} "
            f"bytes for {nthreads} threads); nothing was written.")
    return ValueError(f"{op}: invalid kernel arguments (negative size, H or W < 1 with a "
                      f"non-empty output, or a mode/padding code out of range).")


def _check_buffers(str op, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                   Py_ssize_t Ho, Py_ssize_t Wo, int mode, int padding, **buffers):
    """Each buffer must hold at least the elements its role needs (in Python ints: no
    overflow), and the sizes and codes must be valid: ValueError otherwise."""
    if check_args(N, C, H, W, Ho, Wo, mode, padding) != ST_OK:
        raise status_error(op, ST_INVALID, 1, sizeof(double))
    need = {"out": (N, C, Ho, Wo), "grad_out": (N, C, Ho, Wo), "inp": (N, C, H, W),
            "grad_input": (N, C, H, W), "grid": (N, Ho, Wo, 2), "grad_grid": (N, Ho, Wo, 2)}
    for name, length in buffers.items():
        count = 1
        for d in need[name]:
            count *= int(d)
        if length < count:
            raise ValueError(f"{op}: {name} must hold at least {count} elements for the "
                             f"sizes given; got {length}.")


def grid_sample_fwd(real[::1] out, const real[::1] inp, const real[::1] grid,
                    Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                    Py_ssize_t Ho, Py_ssize_t Wo, bint channels_last, int mode,
                    int padding, bint align_corners, int nthreads):
    """out[n, c, h, w] (or [n, h, w, c]) = input sampled at grid[n, h, w].

    Raises ValueError for sizes the buffers do not hold, MemoryError when the plan
    buffers cannot be allocated (out untouched either way)."""
    cdef int status
    _check_buffers("grid_sample", N, C, H, W, Ho, Wo, mode, padding, out=out.shape[0],
                   inp=inp.shape[0], grid=grid.shape[0])
    if N == 0 or C == 0 or Ho == 0 or Wo == 0:
        return
    nthreads = clamp_threads(nthreads)
    with nogil:
        status = grid_sample_fwd_run(&out[0], &inp[0], &grid[0], N, C, H, W, Ho, Wo,
                                     channels_last, mode, padding, align_corners, nthreads)
    if status != ST_OK:
        raise status_error("grid_sample", status, nthreads, sizeof(real))


cdef int grid_sample_fwd_run(real* op, const real* ip, const real* gp,
                             Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                             Py_ssize_t Ho, Py_ssize_t Wo, bint channels_last, int mode,
                             int padding, bint align_corners, int nthreads) noexcept nogil:
    """grid_sample_fwd on raw C-contiguous buffers; also exported to C (abi.pyx).
    Returns ST_OK, ST_INVALID (bad sizes or codes) or ST_NOMEM; on an error nothing
    is written."""
    cdef Py_ssize_t si[4]
    cdef Py_ssize_t so[4]
    cdef real ax[A_SLOTS]
    cdef real ay[A_SLOTS]
    cdef Py_ssize_t job, n, p0, c, length
    cdef Py_ssize_t P = Ho * Wo
    cdef Py_ssize_t nt
    cdef Plans plans
    cdef real* R
    cdef Py_ssize_t* I
    cdef int status = check_args(N, C, H, W, Ho, Wo, mode, padding)
    if status != ST_OK or N == 0 or C == 0 or P == 0:
        return status
    nthreads = clamp_threads(nthreads)
    if plans_for(&plans, nthreads, sizeof(real)) != ST_OK:
        return ST_NOMEM
    nt = (P + TILE - 1) // TILE
    layout(channels_last, C, H, W, si)
    layout(channels_last, C, Ho, Wo, so)
    axis_params(ax, W, align_corners)
    axis_params(ay, H, align_corners)
    if fwd_via_nhwc(mode, channels_last, C, H, W, P, sizeof(real)) and grid_sample_fwd_via_nhwc(
            op, ip, gp, N, C, H, W, P, padding, ax, ay, &plans, nthreads) == ST_OK:
        plans_free(&plans)
        return ST_OK
    cdef fi_team team
    nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
    with parallel(num_threads=nthreads):
        fi_team_enter(&team)
        R = <real*>thread_R(&plans)
        I = <Py_ssize_t*>thread_I(&plans)
        for job in prange(N * nt, schedule="dynamic"):
            n = job // nt
            p0 = (job - n * nt) * TILE
            length = min(p0 + TILE, P) - p0
            plan_row(gp + (n * P + p0) * 2, length, mode, padding, False, ax, ay,
                     si[3], si[2], R, I)
            c = 0
            if mode == BILINEAR and channels_last:
                sweep_fwd_bilinear_nhwc(ip + n * si[0], op + n * so[0] + p0 * so[3], C, length,
                                        si[3], si[2], R, I)
                c = C
            while mode == BILINEAR and c < C:
                sweep_fwd_bilinear(ip + n * si[0] + c * si[1], si[1],
                                   op + n * so[0] + c * so[1] + p0 * so[3], so[1], so[3],
                                   length, si[3], si[2], R, I, min(CB, C - c))
                c = c + CB
            while c < C:
                sweep_fwd(ip + n * si[0] + c * si[1], op + n * so[0] + c * so[1] + p0 * so[3],
                          so[3], length, mode, si[3], si[2], R, I)
                c = c + 1
        fi_team_leave(&team)
    fi_team_done(&team)
    plans_free(&plans)
    return ST_OK


def c_entry_points():
    """Addresses of the C-level kernels, for fastinterp's C ABI table (abi.pyx)."""
    cdef grid_sample_fwd_f32_t f32 = grid_sample_fwd_run[float]
    cdef grid_sample_fwd_f64_t f64 = grid_sample_fwd_run[double]
    return {"grid_sample_fwd_f32": <size_t>f32, "grid_sample_fwd_f64": <size_t>f64}


cdef void zero_channels(real* gip, Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t H,
                        Py_ssize_t W, const Py_ssize_t* si) noexcept nogil:
    """Zero channels [c0, c1) of one image (gip points at the image), in memory order."""
    cdef Py_ssize_t c, p
    if si[3] == 1:      # NCHW: each channel is one contiguous plane
        memset(gip + c0 * si[1], 0, sizeof(real) * (c1 - c0) * H * W)
        return
    for p in range(H * W):
        for c in range(c0, c1):
            gip[p * si[3] + c] = 0


cdef void sweep_channels(const real* ip, real* gip, const real* gop, Py_ssize_t n,
                         Py_ssize_t p0, Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t length,
                         const Py_ssize_t* si, const Py_ssize_t* so, int mode,
                         bint do_input, bint do_grid, real* R,
                         const Py_ssize_t* I) noexcept nogil:
    """Backward sweeps of channels [c0, c1) over one planned tile of pixels starting
    at output pixel p0 (bilinear in blocks of CB channels, then one by one)."""
    cdef Py_ssize_t c = c0
    # NHWC: all channels as vectors. (A unit channel stride alone is not NHWC: an NCHW
    # image of one pixel has it too, and its grad_output's channels are planes apart.)
    if mode == BILINEAR and si[1] == 1 and so[1] == 1 and c1 > c0:
        bwd_bilinear_nhwc(ip + n * si[0] + c0, gip + n * si[0] + c0,
                          gop + n * so[0] + c0 + p0 * so[3], c1 - c0, so[3], length,
                          si[3], si[2], R, I, do_input, do_grid)
        return
    while mode == BILINEAR and c < c1:
        sweep_bwd_bilinear(ip + n * si[0] + c * si[1], gip + n * si[0] + c * si[1], si[1],
                           gop + n * so[0] + c * so[1] + p0 * so[3], so[1], so[3], length,
                           si[3], si[2], do_input, do_grid, R, I, min(CB, c1 - c))
        c = c + CB
    while c < c1:
        sweep_bwd(ip + n * si[0] + c * si[1], gip + n * si[0] + c * si[1],
                  gop + n * so[0] + c * so[1] + p0 * so[3], so[3], length, mode,
                  si[3], si[2], do_input, do_grid, R, I)
        c = c + 1


cdef inline void bwd_bilinear_nhwc(const real* ip, real* gip, const real* gop, Py_ssize_t nc,
                                   Py_ssize_t ostep, Py_ssize_t wo, Py_ssize_t sx,
                                   Py_ssize_t sy, const real* R, const Py_ssize_t* I,
                                   bint do_input, bint do_grid) noexcept nogil:
    """The NHWC bilinear backward of one planned run (_gridbwd.h), grid sums into the
    plan's R_GX, R_GY slots."""
    if real is float:
        fi_bwd_bilinear_nhwc_f(ip, gip, gop, nc, ostep, wo, sx, sy, R, I, do_input, do_grid,
                               <float*>R + R_GX * wo, <float*>R + R_GY * wo)
    else:
        fi_bwd_bilinear_nhwc_d(ip, gip, gop, nc, ostep, wo, sx, sy, R, I, do_input, do_grid,
                               <double*>R + R_GX * wo, <double*>R + R_GY * wo)


cdef void backward_pixels(const real* ip, real* gip, const real* gop, const real* gp,
                          real* ggp, Py_ssize_t n, Py_ssize_t p0, Py_ssize_t p1,
                          Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t P,
                          const Py_ssize_t* si, const Py_ssize_t* so,
                          int mode, int padding, bint do_input, bint do_grid,
                          const real* ax, const real* ay, real* R,
                          Py_ssize_t* I) noexcept nogil:
    """Output pixels [p0, p1) of image n (P per image), channels [c0, c1), in tiles of
    TILE pixels: every call adds in the same order (pixels, taps) per grad_input
    element and sums channels in increasing order per grad_grid entry."""
    cdef Py_ssize_t p, j, length
    cdef real* GX
    cdef real* GY
    cdef real* gg
    p = p0
    while p < p1:
        length = min(p + TILE, p1) - p
        GX = R + R_GX * length
        GY = R + R_GY * length
        # nearest plans like the forward (no coordinate gradient exists)
        plan_row(gp + (n * P + p) * 2, length, mode, padding, mode != NEAREST, ax, ay,
                 si[3], si[2], R, I)
        for j in range(length):
            GX[j] = 0
            GY[j] = 0
        # one sweep does both (the front places grad_input so that its stores do not
        # 4K-alias the input reads, which would stall every load)
        sweep_channels(ip, gip, gop, n, p, c0, c1, length, si, so, mode, do_input, do_grid, R, I)
        if do_grid:
            gg = ggp + (n * P + p) * 2
            for j in range(length):
                gg[2 * j] = GX[j] * R[R_MX * length + j]
                gg[2 * j + 1] = GY[j] * R[R_MY * length + j]
        p += TILE


def grid_sample_bwd(real[::1] grad_input, real[::1] grad_grid, const real[::1] grad_out,
                    const real[::1] inp, const real[::1] grid,
                    Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                    Py_ssize_t Ho, Py_ssize_t Wo, bint channels_last, int mode,
                    int padding, bint align_corners, bint do_input, bint do_grid,
                    int nthreads):
    """grad_input (zeroed here) and grad_grid of grid_sample; either may be skipped
    (pass a 1-element dummy). With N >= nthreads one thread owns whole images;
    otherwise grad_input is split over (image, channel block) and grad_grid over
    (image, tile): the same additions in the same order either way.

    Raises ValueError for sizes the buffers do not hold, MemoryError when the plan
    buffers cannot be allocated (nothing written either way)."""
    cdef int status
    buffers = dict(grad_out=grad_out.shape[0], inp=inp.shape[0], grid=grid.shape[0])
    if do_input:
        buffers["grad_input"] = grad_input.shape[0]
    if do_grid:
        buffers["grad_grid"] = grad_grid.shape[0]
    _check_buffers("grid_sample_backward", N, C, H, W, Ho, Wo, mode, padding, **buffers)
    nthreads = clamp_threads(nthreads)
    if N == 0 or (not do_input and not do_grid):
        return
    if C == 0 or Ho == 0 or Wo == 0:      # nothing sampled: both gradients are zero
        if do_input:
            grad_input[:N * C * H * W] = 0
        if do_grid:
            grad_grid[:N * Ho * Wo * 2] = 0
        return
    with nogil:
        status = grid_sample_bwd_run(&grad_input[0], &grad_grid[0], &grad_out[0], &inp[0],
                                     &grid[0], N, C, H, W, Ho, Wo, channels_last, mode,
                                     padding, align_corners, do_input, do_grid, nthreads)
    if status != ST_OK:
        raise status_error("grid_sample_backward", status, nthreads, sizeof(real))


cdef inline void bwd_part(const real* ip, const BwdArgs* a, Py_ssize_t n, Py_ssize_t p0,
                          Py_ssize_t p1, Py_ssize_t c0, Py_ssize_t c1, bint do_input,
                          bint do_grid, void* R, void* I) noexcept nogil:
    """_plans' backward_part (ip selects the type): zero grad_input's channels [c0, c1)
    of image n (do_input), then run the output pixels [p0, p1)."""
    cdef real* gip = <real*>a.gip
    if do_input:
        zero_channels(gip + n * a.si[0], c0, c1, a.H, a.W, a.si)
    backward_pixels(ip, gip, <const real*>a.gop, <const real*>a.gp, <real*>a.ggp, n, p0, p1,
                    c0, c1, a.P, a.si, a.so, a.mode, a.padding, do_input, do_grid,
                    <const real*>a.ax, <const real*>a.ay, <real*>R, <Py_ssize_t*>I)


cdef void bwd_part_f32(const BwdArgs* a, Py_ssize_t n, Py_ssize_t p0, Py_ssize_t p1,
                       Py_ssize_t c0, Py_ssize_t c1, bint do_input, bint do_grid, void* R,
                       void* I) noexcept nogil:
    bwd_part(<const float*>a.ip, a, n, p0, p1, c0, c1, do_input, do_grid, R, I)


cdef void bwd_part_f64(const BwdArgs* a, Py_ssize_t n, Py_ssize_t p0, Py_ssize_t p1,
                       Py_ssize_t c0, Py_ssize_t c1, bint do_input, bint do_grid, void* R,
                       void* I) noexcept nogil:
    bwd_part(<const double*>a.ip, a, n, p0, p1, c0, c1, do_input, do_grid, R, I)


cdef int grid_sample_bwd_run(real* gip, real* ggp, const real* gop, const real* ip,
                             const real* gp, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H,
                             Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo, bint channels_last,
                             int mode, int padding, bint align_corners, bint do_input,
                             bint do_grid, int nthreads) noexcept nogil:
    """grid_sample_bwd on raw C-contiguous buffers of a non-empty output; returns ST_OK
    or ST_NOMEM (then nothing is written). The schedule: _plans.run_backward."""
    cdef Py_ssize_t si[4]
    cdef Py_ssize_t so[4]
    cdef real ax[A_SLOTS]
    cdef real ay[A_SLOTS]
    cdef Py_ssize_t P = Ho * Wo
    cdef Plans plans
    cdef BwdArgs args
    if plans_for(&plans, nthreads, sizeof(real)) != ST_OK:
        return ST_NOMEM
    layout(channels_last, C, H, W, si)
    layout(channels_last, C, Ho, Wo, so)
    axis_params(ax, W, align_corners)
    axis_params(ay, H, align_corners)
    if mode == NEAREST:
        if do_grid:         # piecewise constant: no grid gradient
            memset(ggp, 0, sizeof(real) * N * P * 2)
        do_grid = False
    if do_input or do_grid:
        args = BwdArgs(ip=ip, gip=gip, gop=gop, gp=gp, ggp=ggp, si=&si[0], so=&so[0],
                       ax=&ax[0], ay=&ay[0], az=NULL, H=H, W=W, P=P, mode=mode,
                       padding=padding)
        if real is float:
            run_backward(bwd_part_f32, &args, &plans, N, C, P, TILE, do_input, do_grid,
                         nthreads)
        else:
            run_backward(bwd_part_f64, &args, &plans, N, C, P, TILE, do_input, do_grid,
                         nthreads)
    plans_free(&plans)
    return ST_OK


# --------------------------------------------------------------------------- affine_grid

cdef inline real base_coordinate(Py_ssize_t i, Py_ssize_t n, bint align_corners,
                                 real kind) noexcept nogil:
    """Normalized centre of pixel i of n (PyTorch's affine_grid base): linspace(-1, 1, n)
    (first half from -1, the rest from 1, as torch.linspace), rounded to real, times
    (n - 1) / n in real arithmetic when not align_corners; 0 for a single pixel.
    ``kind`` only selects the precision."""
    cdef double step, v
    cdef real r
    if n <= 1:
        return 0
    step = 2.0 / <double>(n - 1)
    if i < n // 2:
        v = -1.0 + step * <double>i
    else:
        v = 1.0 - step * <double>(n - 1 - i)
    r = <real>v
    if not align_corners:
        r = r * <real>(n - 1)
        r = r / <real>n
    return r


def affine_grid_fwd(real[::1] out, const real[::1] theta, Py_ssize_t N, Py_ssize_t H,
                    Py_ssize_t W, bint align_corners, int nthreads):
    """out[n, i, j, r] = theta[n, r, 0] * x_j + theta[n, r, 1] * y_i + theta[n, r, 2],
    summed in that order in float64 and rounded once (x_j, y_i: base_coordinate)."""
    cdef Py_ssize_t row, n, i, j, r
    cdef double x, y
    cdef real* o
    cdef const real* t
    _check_affine("affine_grid", N, H, W, theta.shape[0], out.shape[0])
    if N == 0 or H == 0 or W == 0:
        return
    cdef fi_team team
    with nogil:
        nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
        with parallel(num_threads=nthreads):
            fi_team_enter(&team)
            for row in prange(N * H, schedule="static"):
                n = row // H
                i = row - n * H
                t = &theta[0] + n * 6
                y = base_coordinate(i, H, align_corners, t[0])
                o = &out[0] + row * W * 2
                for j in range(W):
                    x = base_coordinate(j, W, align_corners, t[0])
                    for r in range(2):
                        o[2 * j + r] = <real>(
                            (<double>t[3 * r] * x + <double>t[3 * r + 1] * y)
                            + <double>t[3 * r + 2])
            fi_team_leave(&team)
        fi_team_done(&team)


cdef void affine_bwd_image(real* gt, const real* g, Py_ssize_t H, Py_ssize_t W,
                           bint align_corners) noexcept nogil:
    """One image of affine_grid_bwd: gt[0..6) from g[0 .. H * W * 2)."""
    cdef Py_ssize_t i, j, r
    cdef double s[2]
    cdef double sx[2]
    cdef double sy[2]
    cdef double acc[6]
    cdef double x, y, v
    for r in range(6):
        acc[r] = 0
    for i in range(H):
        y = base_coordinate(i, H, align_corners, gt[0])
        for r in range(2):
            s[r] = 0
            sx[r] = 0
            sy[r] = 0
        for j in range(W):
            x = base_coordinate(j, W, align_corners, gt[0])
            for r in range(2):
                v = <double>g[(i * W + j) * 2 + r]
                s[r] = s[r] + v
                sx[r] = sx[r] + v * x
                sy[r] = sy[r] + v * y   # per pixel: a row's sum may overflow where this does not
        for r in range(2):
            acc[3 * r] = acc[3 * r] + sx[r]
            acc[3 * r + 1] = acc[3 * r + 1] + sy[r]
            acc[3 * r + 2] = acc[3 * r + 2] + s[r]
    for r in range(6):
        gt[r] = <real>acc[r]


def affine_grid_bwd(real[::1] grad_theta, const real[::1] grad_grid, Py_ssize_t N,
                    Py_ssize_t H, Py_ssize_t W, bint align_corners, int nthreads):
    """grad_theta[n, r, k] = sum_ij grad_grid[n, i, j, r] * (x_j, y_i, 1)[k], in float64:
    per row i the sums of the products over j in increasing order, then over rows in
    increasing order;
    rounded once. Deterministic for any thread count (one image per thread)."""
    cdef Py_ssize_t n
    _check_affine("affine_grid_backward", N, H, W, grad_theta.shape[0], grad_grid.shape[0])
    if N == 0:
        return
    if H == 0 or W == 0:
        grad_theta[:N * 6] = 0
        return
    cdef fi_team team
    with nogil:
        nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
        with parallel(num_threads=nthreads):
            fi_team_enter(&team)
            for n in prange(N, schedule="static"):
                affine_bwd_image(&grad_theta[0] + n * 6, &grad_grid[0] + n * H * W * 2, H, W,
                                 align_corners)
            fi_team_leave(&team)
        fi_team_done(&team)


def _check_affine(str op, Py_ssize_t N, Py_ssize_t H, Py_ssize_t W, Py_ssize_t theta_len,
                  Py_ssize_t grid_len):
    """Sizes must be >= 0 and the buffers must hold (N, 2, 3) and (N, H, W, 2)."""
    if N < 0 or H < 0 or W < 0:
        raise ValueError(f"{op}: sizes must be >= 0; got N={N}, H={H}, W={W}.")
    if theta_len < int(N) * 6 or grid_len < int(N) * int(H) * int(W) * 2:
        raise ValueError(f"{op}: buffers too short for N={N}, H={H}, W={W}: theta holds "
                         f"{theta_len} (needs {int(N) * 6}), the grid {grid_len} (needs "
                         f"{int(N) * int(H) * int(W) * 2}).")
