# cython: language_level=3
"""Blend kernels: lerp (strided, broadcasting) and slerp (fused, blocks of rows).

The Python front (fastinterp.blend) validates, broadcasts and coalesces the
operands; these loops trust what they get.
"""
from cpython.pyport cimport PY_SSIZE_T_MAX
from cython.parallel cimport parallel, prange
from libc.math cimport M_PI, cos, fabs, frexp, isfinite, ldexp, sin, sqrt
from _types cimport real
from _team cimport (fi_fp_enter, fi_fp_leave, fi_team, fi_team_done, fi_team_enter,
                   fi_team_leave, fi_team_plan)
from _lerp cimport lerp_one, lerp_run

cdef extern from "_ntstore.h" nogil:
    bint FI_STREAM_STORES
    void fi_stream_line_f32(float* dst, const float* src)
    void fi_stream_line_f64(double* dst, const double* src)
    void fi_stream_fence()

cdef Py_ssize_t LERP_CHUNK = 65536  # elements per scheduled job (256 KiB of float32)
# A lerp touching at least this many bytes (output and full-size operands) writes its
# output with streaming stores (_ntstore.h): it cannot stay in the last-level cache,
# and the stores then skip reading each output line first (measured here: 16M float32
# elements 7.0 -> 6.1 ms at 2 threads; 2M, 34 MB in all, 0.46 -> 0.39 ms).
cdef size_t LERP_STREAM_MIN_BYTES = 32 << 20
cdef enum:
    LINE_BYTES = 64
    STREAM_BLOCK = 1024     # elements computed into a buffer (in L1), then streamed out


cdef inline void stream_lines(real* dst, const real* src, Py_ssize_t n) noexcept nogil:
    """Store src[:n] at the line-aligned dst with streaming stores (n whole lines)."""
    cdef Py_ssize_t i = 0, per = LINE_BYTES // sizeof(real)
    while i < n:
        if real is float:
            fi_stream_line_f32(dst + i, src + i)
        else:
            fi_stream_line_f64(dst + i, src + i)
        i = i + per


cdef void lerp_block(const real* a, const real* b, const real* t, real* out,
                     Py_ssize_t n, Py_ssize_t sa, Py_ssize_t sb, Py_ssize_t st,
                     bint streamed) noexcept nogil:
    """lerp_run; if ``streamed``, writing the whole aligned output lines with streaming
    stores: blocks of the result are computed into a buffer, then stored (the same
    values)."""
    cdef Py_ssize_t per = LINE_BYTES // sizeof(real)
    cdef Py_ssize_t head, i, m
    cdef real block[STREAM_BLOCK]
    if not streamed or (<size_t>out) % sizeof(real):
        lerp_run(a, b, t, out, n, sa, sb, st)
        return
    head = min(n, <Py_ssize_t>(((LINE_BYTES - (<size_t>out) % LINE_BYTES) % LINE_BYTES)
                               // sizeof(real)))
    lerp_run(a, b, t, out, head, sa, sb, st)
    i = head
    while i + per <= n:
        m = min(<Py_ssize_t>STREAM_BLOCK, (n - i) // per * per)
        lerp_run(a + i * sa, b + i * sb, t + i * st, block, m, sa, sb, st)
        stream_lines(out + i, block, m)
        i = i + m
    lerp_run(a + i * sa, b + i * sb, t + i * st, out + i, n - i, sa, sb, st)
    fi_stream_fence()


cdef enum:
    LERP_MAX_RANK = 64  # more than NumPy's 32 axes; coalescing only lowers the rank


cdef inline Py_ssize_t row_offset(Py_ssize_t row, Py_ssize_t ndim, const Py_ssize_t* shape,
                                  const Py_ssize_t* strides) noexcept nogil:
    """Element offset of outer row `row` (the last axis is the run axis)."""
    cdef Py_ssize_t d, off = 0, idx
    for d in range(ndim - 2, -1, -1):
        idx = row % shape[d]
        row = row // shape[d]
        off += idx * strides[d]
    return off


cdef void broadcast_strides(tuple shape, Py_ssize_t* strides):
    """Element strides of a C-contiguous array of ``shape``, 0 on size-1 axes.

    ``strides`` holds ``len(shape)`` entries; lerp_fwd checks the rank first.
    """
    cdef Py_ssize_t d, n, step = 1
    for d in range(len(shape) - 1, -1, -1):
        n = shape[d]
        strides[d] = step if n != 1 else 0
        step *= n


cdef int _check_operand(str name, Py_ssize_t size, tuple oshape, tuple shape) except -1:
    """An operand of lerp_fwd: the output's rank, each axis full or 1, ``size`` elements."""
    cdef Py_ssize_t d, m, count = 1, ndim = len(shape)
    if len(oshape) != ndim:
        raise ValueError(f"lerp_fwd: {name}_shape must have rank {ndim} like shape; "
                         f"got {len(oshape)}.")
    for d in range(ndim):
        m = oshape[d]
        if m < 0 or (m != shape[d] and m != 1):
            raise ValueError(f"lerp_fwd: {name}_shape must match shape {shape} or be 1 "
                             f"on each axis; got {oshape}.")
        if m and count > PY_SSIZE_T_MAX // m:
            raise ValueError(f"lerp_fwd: {name}_shape {oshape} has too many elements.")
        count *= m
    if count != size:
        raise ValueError(f"lerp_fwd: {name} must hold prod({name}_shape) = {count} elements; "
                         f"got {size}.")
    return 0


def lerp_fwd(real[::1] out, const real[::1] a, const real[::1] b, const real[::1] t,
             tuple shape, tuple a_shape, tuple b_shape, tuple t_shape, int nthreads):
    """out[...] = lerp(a, b, t) over a coalesced broadcast layout.

    ``shape`` is the coalesced output shape (C order, last axis = runs);
    ``a_shape/b_shape/t_shape`` have the same rank, each axis equal to
    ``shape``'s or 1 (broadcast). ``out, a, b, t`` are the flat C-contiguous
    data of the output and operands.
    """
    cdef Py_ssize_t ndim = len(shape)
    if ndim < 1 or ndim > LERP_MAX_RANK:
        raise ValueError(f"lerp_fwd: rank must be in [1, {LERP_MAX_RANK}]; got {ndim}.")
    _check_operand("out", out.shape[0], shape, shape)
    _check_operand("a", a.shape[0], a_shape, shape)
    _check_operand("b", b.shape[0], b_shape, shape)
    _check_operand("t", t.shape[0], t_shape, shape)
    cdef Py_ssize_t cshape[LERP_MAX_RANK]
    cdef Py_ssize_t sa[LERP_MAX_RANK]
    cdef Py_ssize_t sb[LERP_MAX_RANK]
    cdef Py_ssize_t st[LERP_MAX_RANK]
    cdef Py_ssize_t d
    for d in range(ndim):
        cshape[d] = shape[d]
    broadcast_strides(a_shape, sa)
    broadcast_strides(b_shape, sb)
    broadcast_strides(t_shape, st)
    cdef Py_ssize_t inner = cshape[ndim - 1]
    cdef Py_ssize_t rows = 1
    for d in range(ndim - 1):
        rows *= cshape[d]
    if rows * inner == 0:
        return
    cdef Py_ssize_t nchunks = (inner + LERP_CHUNK - 1) // LERP_CHUNK
    cdef Py_ssize_t job, row, c0, n
    cdef const real* pa = &a[0]
    cdef const real* pb = &b[0]
    cdef const real* pt = &t[0]
    cdef real* po = &out[0]
    cdef Py_ssize_t ia = sa[ndim - 1], ib = sb[ndim - 1], it = st[ndim - 1]
    cdef size_t touched = (1 + (a.shape[0] == out.shape[0]) + (b.shape[0] == out.shape[0])
                           + (t.shape[0] == out.shape[0])) * <size_t>out.shape[0] * sizeof(real)
    # (an in-place update, out being an operand, reads each line first anyway: measured
    # slower streamed)
    cdef bint streamed = (FI_STREAM_STORES and touched >= LERP_STREAM_MIN_BYTES
                          and &out[0] != &a[0] and &out[0] != &b[0] and &out[0] != &t[0])
    cdef fi_team team
    nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
    with nogil, parallel(num_threads=nthreads):
        fi_team_enter(&team)
        for job in prange(rows * nchunks, schedule="dynamic"):
            row = job // nchunks
            c0 = (job % nchunks) * LERP_CHUNK
            n = min(LERP_CHUNK, inner - c0)
            lerp_block(pa + row_offset(row, ndim, cshape, sa) + c0 * ia,
                       pb + row_offset(row, ndim, cshape, sb) + c0 * ib,
                       pt + row_offset(row, ndim, cshape, st) + c0 * it,
                       po + row * inner + c0, n, ia, ib, it, streamed)
        fi_team_leave(&team)
    fi_team_done(&team)


# ---------------------------------------------------------------------------
# slerp: one fused pass over memory per block of row pairs. Each row of a and
# b is read from memory once; the reductions, the per-row angle and weights
# and the blend then run on cache-resident data. Work is split in blocks of
# rows whose size depends only on D, so results do not depend on the thread
# count. Per block:
#   1. per row: the dot products |a|^2, |b|^2, a.b (reductions in double,
#      _blendmath.h); then across the block's rows (vectorized): norms,
#      cos θ, sin θ, tan(θ/2). Rows with a zero vector or |cos θ| > 0.7 are
#      redone by the scalar row_geometry (accurate angle, degenerate cases);
#   2. across the block's rows (vectorized): θ, then for each step the
#      weights (one sincos per row);
#   3. per row: rows with a degenerate case or t in {0, 1} get their weights
#      from the scalar row_coefs; then the blend out = ca a + cb b.

cdef enum RowKind:
    ROW_REGULAR = 0     # the great circle through a and b
    ROW_ZERO = 1        # a or b is the zero vector: lerp
    ROW_ANTIPODAL = 2   # b points opposite a: the documented perpendicular path

cdef enum:
    SLERP_BLOCK = 64    # most rows per block
    SLERP_BLOCK_ELEMS = 4096  # target a + b elements per block (cache-resident)
    SMALL_DEPTH = 16    # below this D, reductions are plain loops

# |u + v| at or below this (u, v the unit directions, computed in double)
# counts as antipodal: the great circle is then undefined in working precision.
cdef double ANTIPODAL_TOL = 1e-8
# Below this angle the sine ratios are replaced by their limits (1 - t, t).
cdef double TINY_ANGLE = 1e-100
# |cos| above this: the angle comes from the well-conditioned |u - v|, |u + v|.
cdef double COS_ACCURATE = 0.7
# |t θ| at or above this: the weights come from libm (wide argument reduction).
cdef double WIDE_ANGLE = 1e6
# float32 blends whose coefficients or terms exceed this run in double.
cdef double NARROW_LIMIT = 1e30


cdef struct RowGeom:
    double na           # |sa a| (sa = 1 unless the row is scaled)
    double nb           # |sb b|
    double sign         # -1 when the shortest path replaces b by -b, else 1
    double half_tan     # tan(θ / 2), θ the angle between a and sign * b
    double theta
    double sin_theta
    double cos_theta
    int kind            # RowKind
    Py_ssize_t k        # antipodal: the axis the perpendicular is built from
    double uk           # antipodal: a[k] / |a|
    # Rows whose squared norms would underflow or overflow are scaled: the
    # geometry uses sa a and sb b (powers of two), and the output is
    # 2^emax (ca sa a + cb sb b). pa, pb = 2^(ea - emax), 2^(eb - emax) put
    # both norms on the output's scale. Unscaled rows: all 1 (emax 0).
    bint scaled
    double sa
    double sb
    double pa
    double pb
    int emax


cdef extern from "_blendmath.h" nogil:
    double FI_SAFE_SQ_LO
    double FI_SAFE_SQ_HI
    void fi_dot3_f(const float* a, const float* b, Py_ssize_t n, double sa, double sb,
                   double* aa, double* bb, double* ab)
    void fi_dot3_d(const double* a, const double* b, Py_ssize_t n, double sa, double sb,
                   double* aa, double* bb, double* ab)
    void fi_sumdiff_f(const float* a, const float* b, Py_ssize_t n, double sa, double sb,
                      double ia, double ib, double* dm, double* dp)
    void fi_sumdiff_d(const double* a, const double* b, Py_ssize_t n, double sa, double sb,
                      double ia, double ib, double* dm, double* dp)
    double fi_maxabs_f(const float* a, Py_ssize_t n)
    double fi_maxabs_d(const double* a, Py_ssize_t n)
    void fi_row_angles(Py_ssize_t n, const double* aa, const double* bb, const double* ab,
                       int shortest_path, double cos_accurate, double* na, double* nb,
                       double* sign, double* q, double* sin_theta, double* cos_theta,
                       double* todo)
    void fi_half_angles(Py_ssize_t n, const double* q, double* theta)
    void fi_slerp_coefs(Py_ssize_t n, const double* t, const double* theta,
                        const double* sin_theta, const double* cos_theta,
                        const double* na, const double* nb, const double* sign,
                        int linear_norm, double* ca, double* cb)


cdef inline void row_sums(const real* a, const real* b, Py_ssize_t n, double sa, double sb,
                          double* aa, double* bb, double* ab) noexcept nogil:
    """aa = |sa a|^2, bb = |sb b|^2, ab = (sa a).(sb b), accumulated in double (vectorized)."""
    cdef Py_ssize_t i
    cdef double x, y, saa = 0.0, sbb = 0.0, sab = 0.0
    if n < SMALL_DEPTH:  # short vectors (quaternions): a plain loop beats SIMD set-up
        for i in range(n):
            x = a[i] * sa
            y = b[i] * sb
            saa += x * x
            sbb += y * y
            sab += x * y
        aa[0] = saa
        bb[0] = sbb
        ab[0] = sab
    elif real is float:
        fi_dot3_f(a, b, n, sa, sb, aa, bb, ab)
    else:
        fi_dot3_d(a, b, n, sa, sb, aa, bb, ab)


cdef inline void row_diff_sums(const real* a, const real* b, Py_ssize_t n, const RowGeom* g,
                               double ia, double ib,
                               double* dm, double* dp) noexcept nogil:
    """dm = |sa a ia - sb b ib|^2 and dp = |sa a ia + sb b ib|^2, accumulated in double."""
    if real is float:
        fi_sumdiff_f(a, b, n, g.sa, g.sb, ia, ib, dm, dp)
    else:
        fi_sumdiff_d(a, b, n, g.sa, g.sb, ia, ib, dm, dp)


cdef inline double max_abs(const real* a, Py_ssize_t n) noexcept nogil:
    if real is float:
        return fi_maxabs_f(a, n)
    else:
        return fi_maxabs_d(a, n)


cdef inline bint squares_unsafe(double sq, const real* a, Py_ssize_t n) noexcept nogil:
    """|a|^2 = sq lost bits to underflow or overflowed (a zero sum of non-zero entries too)."""
    if sq == 0:
        return max_abs(a, n) > 0
    return not (sq >= FI_SAFE_SQ_LO and sq <= FI_SAFE_SQ_HI)


cdef inline int scale_exponent(double m) noexcept nogil:
    """e with m = f 2^e, f in [0.5, 1); at least -1000 so that 2^-e is finite."""
    cdef int e
    frexp(m, &e)
    return e if e > -1000 else -1000


cdef inline void row_scales(const real* a, const real* b, Py_ssize_t n, double* aa,
                            double* bb, double* ab, RowGeom* g) noexcept nogil:
    """Scale a row pair by powers of two when its squared norms are out of range."""
    cdef double ma, mb
    cdef int ea, eb
    g.scaled = False
    g.sa = g.sb = g.pa = g.pb = 1.0
    g.emax = 0
    if not (squares_unsafe(aa[0], a, n) or squares_unsafe(bb[0], b, n)):
        return
    ma = max_abs(a, n)
    mb = max_abs(b, n)
    if not (isfinite(ma) and isfinite(mb)):
        return  # inf entries: no scale helps; the result is what IEEE gives
    ea = scale_exponent(ma) if ma > 0 else scale_exponent(mb)
    eb = scale_exponent(mb) if mb > 0 else ea
    g.scaled = True
    g.emax = ea if ea > eb else eb
    g.sa = ldexp(1.0, -ea)
    g.sb = ldexp(1.0, -eb)
    g.pa = ldexp(1.0, ea - g.emax)
    g.pb = ldexp(1.0, eb - g.emax)
    row_sums(a, b, n, g.sa, g.sb, aa, bb, ab)


cdef inline Py_ssize_t smallest_abs(const real* a, Py_ssize_t n) noexcept nogil:
    """The first index of the entry of a with the smallest magnitude."""
    cdef Py_ssize_t i, k = 0
    cdef double best = fabs(a[0])
    for i in range(1, n):
        if fabs(a[i]) < best:
            best = fabs(a[i])
            k = i
    return k


cdef inline void row_geometry(const real* a, const real* b, Py_ssize_t n,
                              bint shortest_path, RowGeom* g) noexcept nogil:
    """Norms, tan(θ/2), sin θ, cos θ and the degenerate-case class of one row pair."""
    cdef double aa, bb, ab, c, dm, dp, ia, ib
    row_sums(a, b, n, 1.0, 1.0, &aa, &bb, &ab)
    row_scales(a, b, n, &aa, &bb, &ab, g)
    g.na = sqrt(aa)
    g.nb = sqrt(bb)
    g.sign = -1.0 if (shortest_path and ab < 0) else 1.0
    g.kind = ROW_REGULAR
    g.half_tan = 0.0
    g.theta = 0.0
    g.sin_theta = 1.0   # harmless values for the degenerate rows' vector lanes
    g.cos_theta = 1.0
    g.k = 0
    g.uk = 0.0
    if g.na == 0 or g.nb == 0 or n == 1:
        # (one axis: a and s b point the same way, or opposite without shortest_path, where
        # no perpendicular exists: slerp is the lerp exactly; a / |a| is +-1 only to
        # rounding, which the backward's projections would multiply by |a| / |b|)
        g.kind = ROW_ZERO
        g.na = 1.0 if g.na == 0 else g.na
        g.nb = 1.0 if g.nb == 0 else g.nb
        return
    ia = 1.0 / g.na
    ib = g.sign / g.nb
    c = g.sign * ab * ia / g.nb
    if fabs(c) <= COS_ACCURATE:
        g.cos_theta = c
        g.sin_theta = sqrt(1.0 - c * c)  # 1 - c^2 >= 0.51: no cancellation
        g.half_tan = sqrt((1.0 - c) / (1.0 + c))
        return
    # tan(θ/2) = |u - v| / |u + v|: accurate for every angle
    row_diff_sums(a, b, n, g, ia, ib, &dm, &dp)
    if sqrt(dp) <= ANTIPODAL_TOL:
        if n < 2:  # no perpendicular direction exists: lerp through 0
            g.kind = ROW_ZERO
            return
        g.kind = ROW_ANTIPODAL
        g.k = smallest_abs(a, n)
        g.uk = (a[g.k] * g.sa) * ia
        return
    g.half_tan = sqrt(dm / dp)
    g.sin_theta = 2.0 * sqrt(dm * dp) / (dm + dp)
    g.cos_theta = (dp - dm) / (dm + dp)


cdef inline bint needs_scalar_coefs(const RowGeom* g, double t) noexcept nogil:
    """Rows whose weights the vectorized formula does not give (exactly)."""
    return (g.kind != ROW_REGULAR or g.scaled or g.theta < TINY_ANGLE or t == 0 or t == 1
            or not fabs(t * g.theta) < WIDE_ANGLE)


cdef inline void slerp_weights(double t, const RowGeom* g, double* w0,
                               double* w1) noexcept nogil:
    """w0 = sin((1-t)θ) / sin θ and w1 = sin(tθ) / sin θ as fi_slerp_coefs forms them: the
    nearer end point's weight directly, the other by sin((1-t)θ) = sin θ cos tθ -
    cos θ sin tθ (mirrored for t > 1/2), so that a small weight keeps its precision."""
    if t > 0.5:
        w0[0] = sin((1.0 - t) * g.theta) / g.sin_theta
        w1[0] = cos((1.0 - t) * g.theta) - g.cos_theta * w0[0]
    else:
        w1[0] = sin(t * g.theta) / g.sin_theta
        w0[0] = cos(t * g.theta) - g.cos_theta * w1[0]


cdef inline void row_coefs(const RowGeom* g, double t, bint linear_norm,
                           double* ca, double* cb, double* ck) noexcept nogil:
    """out = ca * a + cb * b (+ ck on axis g.k) for weight t: every case.

    Scaled rows: out = 2^emax (ca sa a + cb sb b (+ ck on axis g.k)).
    """
    cdef double r, w0, w1, s
    ck[0] = 0.0
    if t == 0:
        ca[0] = g.pa; cb[0] = 0.0
        return
    if t == 1:
        ca[0] = 0.0; cb[0] = g.sign * g.pb
        return
    if g.kind == ROW_ZERO:
        ca[0] = (1.0 - t) * g.pa; cb[0] = t * g.sign * g.pb
        return
    r = (1.0 - t) * (g.na * g.pa) + t * (g.nb * g.pb)
    if g.kind == ROW_ANTIPODAL:
        # u cos(t pi) + p sin(t pi), p = (e_k - u_k u) / sqrt(1 - u_k^2).
        w0 = sin((0.5 - t) * M_PI)  # cos(pi t), exactly 0 at t = 1/2
        w1 = sin(t * M_PI)
        s = sqrt(1.0 - g.uk * g.uk)
        ca[0] = r * (w0 - w1 * g.uk / s) / g.na
        cb[0] = 0.0
        ck[0] = r * w1 / s
        return
    if g.theta < TINY_ANGLE:
        w0 = 1.0 - t
        w1 = t
    else:
        slerp_weights(t, g, &w0, &w1)
    if linear_norm:
        ca[0] = w0 * (r / g.na)
        cb[0] = g.sign * w1 * (r / g.nb)
    else:
        ca[0] = w0 * g.pa
        cb[0] = g.sign * w1 * g.pb


cdef inline void blend_row(const real* a, const real* b, real* o, Py_ssize_t n,
                           double ca, double cb, Py_ssize_t k, double ck) noexcept nogil:
    """o = ca a + cb b (+ ck on axis k), in double: float32 rows would otherwise see
    coefficients beyond float32's range (|b| / |a| huge) and cancellation near θ = π."""
    cdef Py_ssize_t i
    cdef real ok = 0
    if ck != 0:  # before the loop: o may be a (in-place), whose a[k] the loop overwrites
        ok = <real> ((ca * a[k] + cb * b[k]) + ck)
    if cb == 0:     # an end point (t = 0): a itself, signed zeros included, whatever b holds
        for i in range(n):
            o[i] = <real> (ca * a[i])
    elif ca == 0:
        for i in range(n):
            o[i] = <real> (cb * b[i])
    else:
        for i in range(n):
            o[i] = <real> (ca * a[i] + cb * b[i])
    if ck != 0:
        o[k] = ok


cdef inline bint lerp_row(const RowGeom* g, double t) noexcept nogil:
    """Rows that are the lerp of a and sign * b: one axis, a zero vector, or a and sign * b
    parallel (θ = 0), away from the end points, at any magnitude. Blended as a + t (sign b - a) rather than
    (1 - t) a + t sign b: far outside [0, 1] the two terms of the latter cancel (|t| u of
    error; slerp(a, a, 1e16) gave noise), while the former is exactly a when b = a."""
    return g.kind != ROW_ANTIPODAL and g.theta < TINY_ANGLE and t != 0 and t != 1


cdef inline double lerp_entry(double x, double y, double t) noexcept nogil:
    """fastinterp.lerp's two-sided formula where y - x is finite; (1 - t) x + t y where
    it is not (an infinite entry stays infinite, opposite values near the maximum do not
    overflow). Equal entries give the nearer one itself, signed zeros included (x + t 0
    would turn -0 into +0). In double, so rows of any magnitude (the scaled ones too)
    need no rescaling: each entry is a lerp."""
    cdef double d = y - x
    if d == 0 and t == t:       # (a NaN weight stays NaN, as in lerp)
        return x if (t < 0.5 and t > -0.5) else y
    if isfinite(d):
        return lerp_one(x, y, t)
    return (1.0 - t) * x + t * y


cdef inline void blend_lerp_row(const real* a, const real* b, real* o, Py_ssize_t n,
                                double sign, double t) noexcept nogil:
    """o = lerp(a, sign * b, t), each entry in double (lerp_entry)."""
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = <real> lerp_entry(a[i], sign * b[i], t)


cdef inline void blend_row_narrow(const real* a, const real* b, real* o, Py_ssize_t n,
                                  real ca, real cb) noexcept nogil:
    """o = ca a + cb b in the input precision (float32: twice the SIMD width of double)."""
    cdef Py_ssize_t i
    if cb == 0:     # as in blend_row
        for i in range(n):
            o[i] = ca * a[i]
    elif ca == 0:
        for i in range(n):
            o[i] = cb * b[i]
    else:
        for i in range(n):
            o[i] = ca * a[i] + cb * b[i]


cdef inline bint narrow_blend_ok(double ca, double cb, double na, double nb, double aa,
                                 double bb, double ab) noexcept nogil:
    """float32 arithmetic is enough for o = ca a + cb b: coefficients and terms far from
    float32's limits, and |ca a| + |cb b| at most 8 |o| (little cancellation)."""
    cdef double s = fabs(ca) * na + fabs(cb) * nb
    cdef double o2 = ca * ca * aa + cb * cb * bb + 2.0 * ca * cb * ab
    return fabs(ca) <= NARROW_LIMIT and fabs(cb) <= NARROW_LIMIT and s <= NARROW_LIMIT \
        and s * s <= 64.0 * o2


cdef inline void blend_scaled_row(const real* a, const real* b, real* o, Py_ssize_t n,
                                  const RowGeom* g, double t, double ca, double cb,
                                  double ck) noexcept nogil:
    """o = 2^emax (ca sa a + cb sb b (+ ck on axis k)); exactly a at t = 0, b at t = 1."""
    cdef Py_ssize_t i
    cdef double v
    for i in range(n):
        if t == 0:
            v = a[i]
        elif t == 1:
            v = g.sign * b[i]
        else:
            v = ca * (a[i] * g.sa) + cb * (b[i] * g.sb)
            if i == g.k:
                v = v + ck
            v = ldexp(v, g.emax)
        o[i] = <real> v


cdef inline void slerp_block(const real* a, const real* b, real* out, Py_ssize_t rows,
                             Py_ssize_t n, const real* t, Py_ssize_t t_row_stride,
                             Py_ssize_t steps, bint shortest_path,
                             bint linear_norm) noexcept nogil:
    """All outputs of ``rows`` (<= SLERP_BLOCK) consecutive row pairs."""
    cdef RowGeom g[SLERP_BLOCK]
    cdef double aa[SLERP_BLOCK]
    cdef double bb[SLERP_BLOCK]
    cdef double ab[SLERP_BLOCK]
    cdef double q[SLERP_BLOCK]
    cdef double theta[SLERP_BLOCK]
    cdef double sin_t[SLERP_BLOCK]
    cdef double cos_t[SLERP_BLOCK]
    cdef double na[SLERP_BLOCK]
    cdef double nb[SLERP_BLOCK]
    cdef double sg[SLERP_BLOCK]
    cdef double tw[SLERP_BLOCK]
    cdef double ca[SLERP_BLOCK]
    cdef double cb[SLERP_BLOCK]
    cdef double todo[SLERP_BLOCK]
    cdef double ck
    cdef Py_ssize_t i, j
    cdef real* o
    for i in range(rows):
        row_sums(a + i * n, b + i * n, n, 1.0, 1.0, &aa[i], &bb[i], &ab[i])
    fi_row_angles(rows, aa, bb, ab, shortest_path, COS_ACCURATE, na, nb, sg, q, sin_t, cos_t,
                  todo)
    for i in range(rows):
        if todo[i] != 0:  # zero, near-parallel or near-antipodal: the accurate scalar path
            row_geometry(a + i * n, b + i * n, n, shortest_path, &g[i])
            q[i] = g[i].half_tan
            sin_t[i] = g[i].sin_theta
            cos_t[i] = g[i].cos_theta
            na[i] = g[i].na
            nb[i] = g[i].nb
        else:
            g[i].kind = ROW_REGULAR
            g[i].scaled = False
            g[i].sa = g[i].sb = g[i].pa = g[i].pb = 1.0
            g[i].emax = 0
            g[i].na = na[i]
            g[i].nb = nb[i]
            g[i].sign = sg[i]
            g[i].sin_theta = sin_t[i]
            g[i].cos_theta = cos_t[i]
    fi_half_angles(rows, q, theta)
    for i in range(rows):
        g[i].theta = theta[i]
    for j in range(steps):
        for i in range(rows):
            tw[i] = t[i * t_row_stride + j]
        fi_slerp_coefs(rows, tw, theta, sin_t, cos_t, na, nb, sg, linear_norm, ca, cb)
        for i in range(rows):
            ck = 0.0
            if needs_scalar_coefs(&g[i], tw[i]):
                row_coefs(&g[i], tw[i], linear_norm, &ca[i], &cb[i], &ck)
            o = out + (i * steps + j) * n
            if lerp_row(&g[i], tw[i]):
                blend_lerp_row(a + i * n, b + i * n, o, n, g[i].sign, tw[i])
            elif g[i].scaled:
                blend_scaled_row(a + i * n, b + i * n, o, n, &g[i], tw[i], ca[i], cb[i], ck)
            elif real is float and ck == 0 and narrow_blend_ok(ca[i], cb[i], g[i].na, g[i].nb,
                                                               aa[i], bb[i], ab[i]):
                blend_row_narrow(a + i * n, b + i * n, o, n, <real> ca[i], <real> cb[i])
            else:
                blend_row(a + i * n, b + i * n, o, n, ca[i], cb[i], g[i].k, ck)


def _check_slerp_layout(rows, n, b_shape, out_shape, t_len, t_row_stride, steps,
                        op="slerp_fwd"):
    """The layout slerp_fwd (or ``op``) trusts; a violation raises ValueError before any write."""
    if b_shape != (rows, n):
        raise ValueError(f"{op}: b must have a's shape {(rows, n)}; got {b_shape}.")
    if steps < 0 or t_row_stride < 0:
        raise ValueError(f"{op}: steps and t_row_stride must be >= 0; got {steps} "
                         f"and {t_row_stride}.")
    if out_shape != (rows * steps, n):
        raise ValueError(f"{op}: {'out' if op == 'slerp_fwd' else 'grad_out'} must have shape "
                         f"{(rows * steps, n)}; "
                         f"got {out_shape}.")
    if rows * steps and (rows - 1) * t_row_stride + steps > t_len:
        raise ValueError(f"{op}: t must hold (rows - 1) * t_row_stride + steps = "
                         f"{(rows - 1) * t_row_stride + steps} weights; got {t_len}.")


def slerp_fwd(real[:, ::1] out, const real[:, ::1] a, const real[:, ::1] b,
              const real[::1] t, Py_ssize_t t_row_stride, Py_ssize_t steps,
              bint shortest_path, bint linear_norm, int nthreads):
    """Spherical interpolation of the rows of a and b.

    ``a``, ``b``: (rows, D). ``out``: (rows * steps, D); output row
    ``r * steps + j`` uses weight ``t[r * t_row_stride + j]`` (``t_row_stride``
    is 0 when every row shares the same weights). ``linear_norm`` selects the
    great circle with a linearly interpolated norm; otherwise the textbook
    formula ``sin((1-t)θ)/sin θ a + sin(tθ)/sin θ b``.
    """
    cdef Py_ssize_t rows = a.shape[0], n = a.shape[1]
    cdef Py_ssize_t per_block, nblocks, blk, r0
    _check_slerp_layout(rows, n, (b.shape[0], b.shape[1]), (out.shape[0], out.shape[1]),
                        t.shape[0], t_row_stride, steps)
    if rows == 0 or n == 0 or steps == 0:
        return
    per_block = max(1, min(<Py_ssize_t> SLERP_BLOCK, SLERP_BLOCK_ELEMS // (2 * n)))
    nblocks = (rows + per_block - 1) // per_block
    cdef fi_team team
    nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
    with nogil, parallel(num_threads=nthreads):
        fi_team_enter(&team)
        for blk in prange(nblocks, schedule="dynamic", chunksize=8):
            r0 = blk * per_block
            slerp_block(&a[r0, 0], &b[r0, 0], &out[r0 * steps, 0], min(per_block, rows - r0), n,
                        &t[r0 * t_row_stride], t_row_stride, steps, shortest_path, linear_norm)
        fi_team_leave(&team)
    fi_team_done(&team)


# ---------------------------------------------------------------------------
# slerp backward: per row pair, the gradients of sum(g * slerp(a, b, t)) with
# respect to a, b and each weight, for the branch the forward takes on that
# row (row_geometry and row_coefs above). Scalar code, one row at a time;
# every row is independent, so the result does not depend on the threads.
#
# Regular rows: out = α w0 u + β w1 v with u = a/|a|, v = s b/|b|, w1 =
# sin(tθ)/sin θ, w0 = sin((1-t)θ)/sin θ and (α, β) = (r, r) for the linear
# norm (r = (1-t)|a| + t|b|) or (|a|, |b|) for the formula. With θ = acos(u.v),
# ∂θ/∂u = -v / sin θ: the θ term enters through H = (∂out/∂θ . g) / sin θ,
# built from h = (∂w/∂θ) / sin θ (fi_slerp_dweight), finite as θ -> 0.

import numpy as np
from cython.parallel cimport threadid
from libc.math cimport atan, round

cdef extern from "_blendmath.h" nogil:
    double fi_slerp_dweight(double r, double k, double theta, double sin_theta,
                            double cos_theta)
    void fi_gdot2_f(const float* g, const float* a, const float* b, Py_ssize_t n, double sa,
                    double sb, double* ga, double* gb)
    void fi_gdot2_d(const double* g, const double* a, const double* b, Py_ssize_t n,
                    double sa, double sb, double* ga, double* gb)


cdef inline void gdot2(const real* g, const real* a, const real* b, Py_ssize_t n, double sa,
                       double sb, double* ga, double* gb) noexcept nogil:
    """ga = g.(sa a), gb = g.(sb b) in double (vectorized, fixed order)."""
    if real is float:
        fi_gdot2_f(g, a, b, n, sa, sb, ga, gb)
    else:
        fi_gdot2_d(g, a, b, n, sa, sb, ga, gb)


cdef struct BwdAcc:
    double u_a      # grad_a += u_a u + v_a v + k_a e_k (+ the vector accumulator)
    double v_a
    double k_a
    double u_b      # grad_b += u_b u + v_b v (+ the vector accumulator)
    double v_b


cdef struct BwdScale:
    # grad_a is accumulated divided by 2^sh_a and grad_b by 2^sh_b, so that the ratio
    # |b| / |a| (which may exceed the double range) only enters as a final ldexp: a
    # gradient too large for its dtype is then ±inf, never inf - inf = NaN.
    double lam_a        # |b| / |a| / 2^sh_a
    double inv_a        # 2^-sh_a
    double ilam_b       # |a| / |b| / 2^sh_b
    double inv_b        # 2^-sh_b
    int sh_a
    int sh_b


cdef inline void acc_vec(double* acc, const real* g, Py_ssize_t n, double c) noexcept nogil:
    cdef Py_ssize_t i
    if c != 0:
        for i in range(n):
            acc[i] += c * g[i]


cdef inline double bwd_regular_step(const RowGeom* G, const real* g, const real* a,
                                    const real* b, Py_ssize_t n, double t, const BwdScale* K,
                                    double norm_a, double norm_b, bint linear_norm,
                                    double* acc_a, double* acc_b, Py_ssize_t n_acc,
                                    BwdAcc* S) noexcept nogil:
    """One weight of a regular row: accumulates grad_a, grad_b (the first n_acc entries:
    n, or 0 when they are not asked for); returns grad_t."""
    cdef Py_ssize_t i
    cdef double gu = 0.0, gv = 0.0, w0, w1, dw0, dw1, h0, h1, q, ra, rb, k0, k1
    cdef double a1, b1, ha, hb, gna, gnb, gd, gt
    cdef double ia = 1.0 / G.na, ib = G.sign / G.nb   # u = (sa a) ia, v = (sb b) ib
    gdot2(g, a, b, n, G.sa, G.sb, &gu, &gv)
    gu *= ia
    gv *= ib
    if G.theta < TINY_ANGLE:  # the forward's limit weights 1 - t, t: no θ term
        w0 = 1.0 - t; w1 = t; dw0 = -1.0; dw1 = 1.0; h0 = 0.0; h1 = 0.0
    else:
        slerp_weights(t, G, &w0, &w1)
        q = G.theta / G.sin_theta
        dw1 = q * cos(t * G.theta)
        dw0 = -q * cos((1.0 - t) * G.theta)
        k1 = round(t)                 # h1 = h(t), h0 = h(1 - t), each as h(r + k) with
        k0 = round(1.0 - t)           # |r| <= 1/2 formed exactly from t
        h1 = fi_slerp_dweight(t - k1, k1, G.theta, G.sin_theta, G.cos_theta)
        h0 = fi_slerp_dweight((1.0 - k0) - t, k0, G.theta, G.sin_theta, G.cos_theta)
    gd = w0 * gu + w1 * gv
    if linear_norm:
        ra = (1.0 - t) * K.inv_a + t * K.lam_a     # r / |a| / 2^sh_a
        rb = t * K.inv_b + (1.0 - t) * K.ilam_b    # r / |b| / 2^sh_b
        a1 = ra * w0; b1 = rb * w1
        ha = ra * (h0 * gu + h1 * gv); hb = rb * (h0 * gu + h1 * gv)
        gna = (1.0 - t) * gd * K.inv_a; gnb = t * gd * K.inv_b
        gt = (norm_b - norm_a) * gd + ((1.0 - t) * norm_a + t * norm_b) * (dw0 * gu + dw1 * gv)
    else:
        a1 = w0 * K.inv_a; b1 = w1 * K.inv_b
        ha = h0 * gu * K.inv_a + K.lam_a * h1 * gv; hb = h0 * gu * K.ilam_b + h1 * gv * K.inv_b
        gna = w0 * gu * K.inv_a; gnb = w1 * gv * K.inv_b
        gt = norm_a * dw0 * gu + norm_b * dw1 * gv
    if t == 0 or t == 1:  # the forward returns a (t = 0) or s b (t = 1) exactly
        a1 = K.inv_a if t == 0 else 0.0
        b1 = K.inv_b if t == 1 else 0.0
        ha = hb = gna = gnb = 0.0
        gu = gv = 0.0
    acc_vec(acc_a, g, n_acc, a1)
    acc_vec(acc_b, g, n_acc, G.sign * b1)
    S.u_a += -a1 * gu + ha * G.cos_theta + gna
    S.v_a += -ha
    S.v_b += G.sign * (-b1 * gv + hb * G.cos_theta + gnb)
    S.u_b += -G.sign * hb
    return gt


cdef inline double bwd_antipodal_step(const RowGeom* G, const real* g, const real* a,
                                      Py_ssize_t n, double t, const BwdScale* K, double norm_a,
                                      double norm_b, double* acc_a, double* acc_b,
                                      Py_ssize_t n_acc, BwdAcc* S) noexcept nogil:
    """One weight of an antipodal row: out = r (cos(πt) u + sin(πt) p), p built on axis k."""
    cdef Py_ssize_t i
    cdef double gu, unused, ia = 1.0 / G.na, uk = G.uk
    cdef double sk = sqrt(1.0 - uk * uk), cp, sp, phi, gd, ra, e, kk, gt
    gdot2(g, a, a, n, G.sa, G.sa, &gu, &unused)
    gu *= ia
    cp = sin((0.5 - t) * M_PI)
    sp = sin(t * M_PI)
    phi = g[G.k] - uk * gu
    gd = cp * gu + sp * phi / sk
    gt = (norm_b - norm_a) * gd \
        + ((1.0 - t) * norm_a + t * norm_b) * M_PI * (-sp * gu + cp * phi / sk)
    if t == 0 or t == 1:
        acc_vec(acc_a if t == 0 else acc_b, g, n_acc, K.inv_a if t == 0 else G.sign * K.inv_b)
        return gt
    ra = (1.0 - t) * K.inv_a + t * K.lam_a
    e = ra * (cp - sp * uk / sk)                      # coefficient of g in ∂/∂u, / |a|
    kk = ra * sp * (-gu / sk + phi * uk / (sk * sk * sk))   # coefficient of e_k
    acc_vec(acc_a, g, n_acc, e)
    S.k_a += kk
    S.u_a += -(e * gu + kk * uk) + (1.0 - t) * gd * K.inv_a
    S.v_b += t * gd * K.inv_b          # grad_b = t (g . d) b / |b|, and b / |b| = s v
    return gt


cdef inline double bwd_zero_step(const real* g, const real* a, const real* b, Py_ssize_t n,
                                 double t, double sign, double* acc_a, double* acc_b,
                                 Py_ssize_t n_acc) noexcept nogil:
    """One weight of a lerp row (a or b zero, or D = 1 antipodal): out = (1-t) a + t s b."""
    cdef Py_ssize_t i
    cdef double gt = 0.0
    for i in range(n):
        gt += g[i] * (sign * <double> b[i] - <double> a[i])
    acc_vec(acc_a, g, n_acc, 1.0 - t)
    acc_vec(acc_b, g, n_acc, sign * t)
    return gt


cdef inline void slerp_bwd_row(const real* g, const real* a, const real* b, Py_ssize_t n,
                               const real* t, Py_ssize_t steps, bint shortest_path,
                               bint linear_norm, bint need_ab, real* ga, real* gb, double* gt,
                               double* acc_a, double* acc_b) noexcept nogil:
    """grad_a, grad_b (n; skipped unless need_ab) and grad_t (steps) of one row pair; g
    holds steps rows of n."""
    cdef RowGeom G
    cdef BwdAcc S
    cdef Py_ssize_t i, j
    cdef double norm_a, norm_b, ia, ib, u, v, lm
    cdef int ea, eb, e, e_t
    cdef Py_ssize_t n_acc
    cdef BwdScale K
    row_geometry(a, b, n, shortest_path, &G)
    G.theta = 2.0 * atan(G.half_tan)
    S.u_a = S.v_a = S.k_a = S.u_b = S.v_b = 0.0
    for i in range(n if need_ab else 0):
        acc_a[i] = 0.0
        acc_b[i] = 0.0
    frexp(G.sa, &ea)                        # sa = 2^(ea - 1), sb = 2^(eb - 1)
    frexp(G.sb, &eb)
    e = ea - eb                             # |b| / |a| = (nb / na) 2^e
    lm = G.nb / G.na
    K.sh_a = e if (e > 0 and G.kind != ROW_ZERO) else 0
    K.sh_b = -e if (e < 0 and G.kind != ROW_ZERO) else 0
    K.inv_a = ldexp(1.0, -K.sh_a)
    K.inv_b = ldexp(1.0, -K.sh_b)
    K.lam_a = ldexp(lm, e - K.sh_a)
    K.ilam_b = ldexp(1.0 / lm, -e - K.sh_b)
    # grad_t is linear in the norms: it is formed with both norms divided by 2^e_t
    # and scaled back last, so that a norm beyond the double range (entries near the
    # largest double) gives grad_t's exact value, or ±inf only when that overflows.
    # Unscaled rows: e_t = 0, the norms as they are.
    e_t = 1 - (ea if ea < eb else eb)
    norm_a = ldexp(G.na, 1 - ea - e_t)          # |a| / 2^e_t (|a| = na / sa)
    norm_b = ldexp(G.nb, 1 - eb - e_t)
    n_acc = n if need_ab else 0
    for j in range(steps):
        if G.kind == ROW_ZERO:
            gt[j] = bwd_zero_step(g + j * n, a, b, n, t[j], G.sign, acc_a, acc_b,
                                  n_acc)  # sh = 0
        elif G.kind == ROW_ANTIPODAL:
            gt[j] = ldexp(bwd_antipodal_step(&G, g + j * n, a, n, t[j], &K, norm_a, norm_b,
                                             acc_a, acc_b, n_acc, &S), e_t)
        else:
            gt[j] = ldexp(bwd_regular_step(&G, g + j * n, a, b, n, t[j], &K, norm_a, norm_b,
                                           linear_norm, acc_a, acc_b, n_acc, &S), e_t)
    if not need_ab:
        return
    ia = 1.0 / G.na      # sa / na itself may overflow (subnormal rows)
    ib = G.sign / G.nb
    for i in range(n):
        u = (a[i] * G.sa) * ia
        v = (b[i] * G.sb) * ib
        ga[i] = <real> (acc_a[i] + S.u_a * u + S.v_a * v)
        gb[i] = <real> (acc_b[i] + S.u_b * u + S.v_b * v)
    if G.kind == ROW_ANTIPODAL:
        ga[G.k] = <real> (acc_a[G.k] + S.u_a * (a[G.k] * G.sa) * ia
                          + S.v_a * (b[G.k] * G.sb) * ib + S.k_a)
    if K.sh_a or K.sh_b:  # rows whose |b| / |a| needs a power-of-two factor (rare)
        for i in range(n):
            u = (a[i] * G.sa) * ia
            v = (b[i] * G.sb) * ib
            ga[i] = <real> ldexp(acc_a[i] + S.u_a * u + S.v_a * v
                                 + (S.k_a if (i == G.k and G.kind == ROW_ANTIPODAL) else 0.0),
                                 K.sh_a)
            gb[i] = <real> ldexp(acc_b[i] + S.u_b * u + S.v_b * v, K.sh_b)


def slerp_bwd(const real[:, ::1] grad_out, const real[:, ::1] a, const real[:, ::1] b,
              const real[::1] t, Py_ssize_t t_row_stride, Py_ssize_t steps,
              bint shortest_path, bint linear_norm, real[:, ::1] grad_a,
              real[:, ::1] grad_b, double[::1] grad_t, int nthreads, bint need_ab=True):
    """Gradients of ``sum(grad_out * slerp_fwd(a, b, t, ...))``.

    Layout as slerp_fwd: ``grad_out`` (rows * steps, D) like its ``out``;
    ``grad_a``, ``grad_b`` (rows, D); ``grad_t`` (rows * steps,) float64, the
    gradient of each output row's weight (the caller sums shared weights).
    Without ``need_ab`` only grad_t is computed (grad_a, grad_b may then be (0, D)
    and are not written): no pass over D per weight beyond the two dot products.
    """
    cdef Py_ssize_t rows = a.shape[0], n = a.shape[1]
    cdef Py_ssize_t r, tid
    cdef int nt = max(1, nthreads)
    _check_slerp_layout(rows, n, (b.shape[0], b.shape[1]),
                        (grad_out.shape[0], grad_out.shape[1]), t.shape[0], t_row_stride, steps,
                        "slerp_bwd")
    for name, arr in (("grad_a", grad_a), ("grad_b", grad_b)):
        if need_ab and (arr.shape[0], arr.shape[1]) != (rows, n):
            raise ValueError(f"slerp_bwd: {name} must have shape {(rows, n)}; "
                             f"got {(arr.shape[0], arr.shape[1])}.")
    if grad_t.shape[0] != rows * steps:
        raise ValueError(f"slerp_bwd: grad_t must hold rows * steps = {rows * steps} values; "
                         f"got {grad_t.shape[0]}.")
    if rows == 0 or n == 0:  # no output element depends on a weight
        grad_t[:] = 0.0
        return
    if steps == 0:
        if need_ab:
            grad_a[:, :] = 0
            grad_b[:, :] = 0
        return
    cdef double[:, ::1] work = np.empty((nt, 2 * n), np.float64)
    cdef double* w
    cdef fi_team team
    nt = fi_team_plan(&team, nt)   # never more than the nt rows of work allocated above
    with nogil, parallel(num_threads=nt):
        fi_team_enter(&team)
        for r in prange(rows, schedule="dynamic", chunksize=16):
            tid = threadid()
            w = &work[tid, 0]
            slerp_bwd_row(&grad_out[r * steps, 0], &a[r, 0], &b[r, 0], n,
                          &t[r * t_row_stride], steps, shortest_path, linear_norm, need_ab,
                          &grad_a[r, 0] if need_ab else NULL,
                          &grad_b[r, 0] if need_ab else NULL, &grad_t[r * steps], w, w + n)
        fi_team_leave(&team)
    fi_team_done(&team)


def ieee_subnormals():
    """Clear flush-to-zero and denormals-are-zero and round to nearest on the calling
    thread (for code that runs on a thread that has them set, such as an XLA host
    callback, or another rounding mode); returns the previous floating-point control
    word, for :func:`restore_fp`."""
    return fi_fp_enter()


def restore_fp(unsigned int saved):
    """Restore the control word :func:`ieee_subnormals` returned."""
    fi_fp_leave(saved)
