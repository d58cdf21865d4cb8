# cython: language_level=3
"""Blend kernels: lerp (strided, broadcasting) and slerp (fused, one row at a time).

The Python front (fastinterp.blend) validates, broadcasts and coalesces the
operands; these loops trust what they get.
"""
from cython.parallel cimport prange
from libc.math cimport M_PI, acos, atan2, fabs, sin, sqrt
from _types cimport real
from _lerp cimport lerp_run

cdef Py_ssize_t LERP_CHUNK = 16384


cdef inline Py_ssize_t row_offset(Py_ssize_t row, const Py_ssize_t[::1] shape,
                                  const Py_ssize_t[::1] strides) noexcept nogil:
    """Element offset of outer row `row` (the last axis is the run axis)."""
    cdef Py_ssize_t d, off = 0, idx
    for d in range(shape.shape[0] - 2, -1, -1):
        idx = row % shape[d]
        row = row // shape[d]
        off += idx * strides[d]
    return off


def lerp_fwd(real[::1] out, size_t a_addr, size_t b_addr, size_t t_addr,
             const Py_ssize_t[::1] shape,
             const Py_ssize_t[::1] sa, const Py_ssize_t[::1] sb,
             const Py_ssize_t[::1] st, int nthreads):
    """out[...] = lerp(a, b, t) over a coalesced broadcast layout.

    ``shape`` is the coalesced output shape (C order, last axis = runs);
    ``sa/sb/st`` are the operands' strides in elements (0 on broadcast axes).
    ``*_addr`` are the addresses of each operand's element at index 0 (the
    front keeps the arrays alive); their dtype is ``out``'s.
    """
    cdef Py_ssize_t ndim = shape.shape[0]
    cdef Py_ssize_t inner = shape[ndim - 1]
    cdef Py_ssize_t rows = 1, d
    for d in range(ndim - 1):
        rows *= shape[d]
    cdef Py_ssize_t nchunks = (inner + LERP_CHUNK - 1) // LERP_CHUNK
    cdef Py_ssize_t job, row, c0, n
    cdef const real* pa = <const real*> a_addr
    cdef const real* pb = <const real*> b_addr
    cdef const real* pt = <const real*> t_addr
    cdef real* po = &out[0]
    cdef Py_ssize_t ia = sa[ndim - 1], ib = sb[ndim - 1], it = st[ndim - 1]
    if rows * inner == 0:
        return
    for job in prange(rows * nchunks, nogil=True, schedule="dynamic",
                      num_threads=nthreads):
        row = job // nchunks
        c0 = (job % nchunks) * LERP_CHUNK
        n = min(LERP_CHUNK, inner - c0)
        lerp_run(pa + row_offset(row, shape, sa) + c0 * ia,
                 pb + row_offset(row, shape, sb) + c0 * ib,
                 pt + row_offset(row, shape, st) + c0 * it,
                 po + row * inner + c0, n, ia, ib, it)


# ---------------------------------------------------------------------------
# slerp: one fused pass over memory per row pair. Each row of a and b (2 KB
# for D = 512 in float32) is read from memory once; the reductions and the
# blend then run on the L1-resident row. Reductions are accumulated in double,
# one partial sum per vector lane (_reduce.h), in an order fixed by the build:
# results do not depend on the thread count.

cdef enum RowKind:
    ROW_REGULAR = 0     # the great circle through a and b
    ROW_ZERO = 1        # a or b is the zero vector: lerp
    ROW_ANTIPODAL = 2   # b points opposite a: the documented perpendicular path

# |u + v| at or below this (u, v the unit directions, computed in double)
# counts as antipodal: the great circle is then undefined in working precision.
cdef double ANTIPODAL_TOL = 1e-8
# Below this angle the sine ratios are replaced by their limits (1 - t, t).
cdef double TINY_ANGLE = 1e-100
# |cos| above this: the angle comes from the well-conditioned second pass.
cdef double COS_ACCURATE = 0.7


cdef struct RowGeom:
    double na           # |a|
    double nb           # |b|
    double sign         # -1 when the shortest path replaces b by -b, else 1
    double theta        # angle between a and sign * b
    double sin_theta
    int kind            # RowKind
    Py_ssize_t k        # antipodal: the axis the perpendicular is built from
    double uk           # antipodal: a[k] / |a|


cdef extern from "_reduce.h" nogil:
    void fi_dot3_f(const float* a, const float* b, Py_ssize_t n,
                   double* aa, double* bb, double* ab)
    void fi_dot3_d(const double* a, const double* b, Py_ssize_t n,
                   double* aa, double* bb, double* ab)
    void fi_sumdiff_f(const float* a, const float* b, Py_ssize_t n, double ia, double ib,
                      double* dm, double* dp)
    void fi_sumdiff_d(const double* a, const double* b, Py_ssize_t n, double ia, double ib,
                      double* dm, double* dp)


cdef inline void row_sums(const real* a, const real* b, Py_ssize_t n,
                          double* aa, double* bb, double* ab) noexcept nogil:
    """aa = a.a, bb = b.b, ab = a.b, accumulated in double (vectorized)."""
    if real is float:
        fi_dot3_f(a, b, n, aa, bb, ab)
    else:
        fi_dot3_d(a, b, n, aa, bb, ab)


cdef inline void row_diff_sums(const real* a, const real* b, Py_ssize_t n,
                               double ia, double ib,
                               double* dm, double* dp) noexcept nogil:
    """dm = |a*ia - b*ib|^2 and dp = |a*ia + b*ib|^2, accumulated in double."""
    if real is float:
        fi_sumdiff_f(a, b, n, ia, ib, dm, dp)
    else:
        fi_sumdiff_d(a, b, n, ia, ib, dm, dp)


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
    """Norms, angle and degenerate-case classification of one row pair."""
    cdef double aa, bb, ab, c, dm, dp, ia, ib
    row_sums(a, b, n, &aa, &bb, &ab)
    g.na = sqrt(aa)
    g.nb = sqrt(bb)
    g.sign = -1.0 if (shortest_path and ab < 0) else 1.0
    g.kind = ROW_REGULAR
    g.theta = 0.0
    g.sin_theta = 0.0
    g.k = 0
    g.uk = 0.0
    if g.na == 0 or g.nb == 0:
        g.kind = ROW_ZERO
        return
    ia = 1.0 / g.na
    ib = g.sign / g.nb
    c = g.sign * ab * ia / g.nb
    if fabs(c) <= COS_ACCURATE:
        g.theta = acos(c)
    else:
        # theta = 2 atan2(|u - v|, |u + v|): accurate for every angle.
        row_diff_sums(a, b, n, ia, ib, &dm, &dp)
        if sqrt(dp) <= ANTIPODAL_TOL:
            if n < 2:  # no perpendicular direction exists: lerp through 0
                g.kind = ROW_ZERO
                return
            g.kind = ROW_ANTIPODAL
            g.k = smallest_abs(a, n)
            g.uk = a[g.k] * ia
            return
        g.theta = 2.0 * atan2(sqrt(dm), sqrt(dp))
    g.sin_theta = sin(g.theta)


cdef inline void row_coefs(const RowGeom* g, double t, bint linear_norm,
                           double* ca, double* cb, double* ck) noexcept nogil:
    """out = ca * a + cb * b (+ ck on axis g.k) for weight t."""
    cdef double r, w0, w1, s
    ck[0] = 0.0
    if t == 0:
        ca[0] = 1.0; cb[0] = 0.0
        return
    if t == 1:
        ca[0] = 0.0; cb[0] = g.sign
        return
    if g.kind == ROW_ZERO:
        ca[0] = 1.0 - t; cb[0] = t * g.sign
        return
    r = (1.0 - t) * g.na + t * g.nb
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
        w0 = sin((1.0 - t) * g.theta) / g.sin_theta
        w1 = sin(t * g.theta) / g.sin_theta
    if linear_norm:
        ca[0] = w0 * (r / g.na)
        cb[0] = g.sign * w1 * (r / g.nb)
    else:
        ca[0] = w0
        cb[0] = g.sign * w1


cdef inline void blend_row(const real* a, const real* b, real* o, Py_ssize_t n,
                           real ca, real cb) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = ca * a[i] + cb * b[i]


cdef inline void slerp_row(const real* a, const real* b, real* out, Py_ssize_t n,
                           const real* t, Py_ssize_t steps, bint shortest_path,
                           bint linear_norm) noexcept nogil:
    """All ``steps`` outputs of one row pair (out: steps consecutive rows of n)."""
    cdef RowGeom g
    cdef double ca, cb, ck
    cdef Py_ssize_t j
    cdef real* o
    row_geometry(a, b, n, shortest_path, &g)
    for j in range(steps):
        row_coefs(&g, t[j], linear_norm, &ca, &cb, &ck)
        o = out + j * n
        blend_row(a, b, o, n, <real> ca, <real> cb)
        if ck != 0:
            o[g.k] = o[g.k] + <real> ck


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
    cdef Py_ssize_t r
    if rows == 0 or n == 0 or steps == 0:
        return
    for r in prange(rows, nogil=True, schedule="dynamic", chunksize=16,
                    num_threads=nthreads):
        slerp_row(&a[r, 0], &b[r, 0], &out[r * steps, 0], n,
                  &t[r * t_row_stride], steps, shortest_path, linear_norm)
