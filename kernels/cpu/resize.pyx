# cython: language_level=3
"""Resize kernels: one separable engine for every mode and its backward.

Every resize mode (nearest, nearest-exact, bilinear, bicubic, area, the
antialiased filters) and every backward pass is a separable linear map
``out = A_y @ plane @ A_x.T``. The Python front (fastinterp.resize) builds
each axis's sparse matrix once as a tap table: ``idx[k, o]`` (int32 source
index) and ``w[k, o]`` (weight) for taps ``k < K`` of output ``o``, tap-major
so that a pass over one output row reads the tables contiguously. Backward
passes use the transposed tables, so they are gathers too: no scatter, no
atomics, and every output element is summed in one fixed order whatever the
thread count.

Planes are ``(rows, row_length)`` blocks: for NCHW one plane per (n, c) with
``channels = 1``; for NHWC one plane per image, a row holding ``W * C``
values, and ``channels = C`` (a horizontal tap moves by ``C`` values).

Two pass orders, chosen by the front from a cost estimate:
- ``ORDER_V_FIRST``: per output row, blend the needed input rows vertically
  into a scratch row (contiguous, vectorised), then resample it horizontally.
- ``ORDER_H_FIRST``: per block of output rows, resample each needed input
  row horizontally once into a per-thread row cache, then blend cached rows
  vertically straight into the output (best for upscaling: fewer gathers).
"""
from cython.parallel cimport parallel, prange
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from _types cimport real

cdef extern from *:
    """
    /* dst[j] += a * src[j]: kept out of line so that the compiler vectorises
       it along j instead of across the caller's tap loop (which it would do
       with strided gathers). */
    #if defined(__GNUC__)
    #define FI_NOINLINE __attribute__((noinline))
    #else
    #define FI_NOINLINE
    #endif
    static FI_NOINLINE void fi_axpy_f(float* d, const float* s, float a, Py_ssize_t n) {
        for (Py_ssize_t j = 0; j < n; ++j) d[j] += a * s[j];
    }
    static FI_NOINLINE void fi_axpy_d(double* d, const double* s, double a, Py_ssize_t n) {
        for (Py_ssize_t j = 0; j < n; ++j) d[j] += a * s[j];
    }
    """
    void fi_axpy_f(float* d, const float* s, float a, Py_ssize_t n) noexcept nogil
    void fi_axpy_d(double* d, const double* s, double a, Py_ssize_t n) noexcept nogil


cdef inline void axpy(real* dst, const real* src, real a, Py_ssize_t n) noexcept nogil:
    """dst[j] += a * src[j] for j < n."""
    if real is float:
        fi_axpy_f(dst, src, a, n)
    else:
        fi_axpy_d(dst, src, a, n)

cdef enum:
    ORDER_V_FIRST = 0
    ORDER_H_FIRST = 1

# Output rows per job: jobs are (plane, block of rows); results do not depend
# on the block size or on which thread runs a job.
cdef Py_ssize_t ROW_BLOCK = 16


cdef inline void hpass(real* dst, const real* src, const int* idx, const real* w,
                       Py_ssize_t K, Py_ssize_t n, Py_ssize_t C, bint unit) noexcept nogil:
    """Horizontal pass of one row: dst[x*C + c] = sum_k w[k, x] * src[idx[k, x]*C + c]."""
    cdef Py_ssize_t x, k, c
    cdef const int* ik
    cdef const real* wk
    cdef const real* s
    cdef real* d
    cdef real a
    if C == 1:
        if unit:
            for x in range(n):
                dst[x] = src[idx[x]]
        elif K == 2:
            for x in range(n):
                dst[x] = w[x] * src[idx[x]] + w[n + x] * src[idx[n + x]]
        elif K == 4:
            for x in range(n):
                dst[x] = (w[x] * src[idx[x]] + w[n + x] * src[idx[n + x]]
                          + w[2 * n + x] * src[idx[2 * n + x]]
                          + w[3 * n + x] * src[idx[3 * n + x]])
        else:
            for x in range(n):
                dst[x] = w[x] * src[idx[x]]
            for k in range(1, K):
                ik = idx + k * n
                wk = w + k * n
                for x in range(n):
                    dst[x] += wk[x] * src[ik[x]]
        return
    for x in range(n):
        d = dst + x * C
        s = src + idx[x] * C
        if unit:
            for c in range(C):
                d[c] = s[c]
            continue
        a = w[x]
        for c in range(C):
            d[c] = a * s[c]
        for k in range(1, K):
            s = src + idx[k * n + x] * C
            a = w[k * n + x]
            for c in range(C):
                d[c] += a * s[c]


cdef inline void vpass(real* dst, const real* base, Py_ssize_t stride,
                       const int* idx, const real* w, Py_ssize_t K, Py_ssize_t ny,
                       Py_ssize_t y, Py_ssize_t lo, Py_ssize_t L, bint unit) noexcept nogil:
    """Vertical blend for output row y: dst[j] = sum_k w[k, y] * row(idx[k, y] - lo)[j].

    Rows live at ``base + r * stride``; ``ny`` is the table's output count.
    """
    cdef Py_ssize_t j, k
    cdef const real* r0 = base + (idx[y] - lo) * stride
    cdef const real* r1
    cdef const real* r2
    cdef const real* r3
    cdef real w0, w1, w2, w3, a
    if unit:
        memcpy(dst, r0, L * sizeof(real))
        return
    w0 = w[y]
    if K == 1:
        for j in range(L):
            dst[j] = w0 * r0[j]
        return
    r1 = base + (idx[ny + y] - lo) * stride
    w1 = w[ny + y]
    if K == 2:
        for j in range(L):
            dst[j] = w0 * r0[j] + w1 * r1[j]
        return
    if K == 4:
        r2 = base + (idx[2 * ny + y] - lo) * stride
        r3 = base + (idx[3 * ny + y] - lo) * stride
        w2 = w[2 * ny + y]
        w3 = w[3 * ny + y]
        for j in range(L):
            dst[j] = w0 * r0[j] + w1 * r1[j] + w2 * r2[j] + w3 * r3[j]
        return
    for j in range(L):
        dst[j] = w0 * r0[j] + w1 * r1[j]
    for k in range(2, K):
        axpy(dst, base + (idx[k * ny + y] - lo) * stride, w[k * ny + y], L)


cdef inline void row_range(const int* idx, Py_ssize_t K, Py_ssize_t ny, Py_ssize_t y0,
                           Py_ssize_t y1, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Smallest and one-past-largest source row used by output rows [y0, y1)."""
    cdef Py_ssize_t k, y, v
    lo[0] = idx[y0]
    hi[0] = idx[y0] + 1
    for k in range(K):
        for y in range(y0, y1):
            v = idx[k * ny + y]
            if v < lo[0]:
                lo[0] = v
            if v + 1 > hi[0]:
                hi[0] = v + 1


def cache_rows(const int[:, ::1] yidx):
    """Rows the H-first row cache needs per thread: the widest block's source span."""
    cdef Py_ssize_t ny = yidx.shape[1], K = yidx.shape[0]
    cdef Py_ssize_t y0, lo, hi, most = 1
    for y0 in range(0, ny, ROW_BLOCK):
        row_range(&yidx[0, 0], K, ny, y0, min(ny, y0 + ROW_BLOCK), &lo, &hi)
        most = max(most, hi - lo)
    return most


def separable_fwd(real[:, :, ::1] out, const real[:, :, ::1] x,
                  const int[:, ::1] yidx, const real[:, ::1] yw, bint yunit,
                  const int[:, ::1] xidx, const real[:, ::1] xw, bint xunit,
                  Py_ssize_t channels, int order, int nthreads):
    """out[p] = A_y @ x[p] @ A_x.T for every plane p (see the module docstring).

    ``out`` is (P, H_out, W_out*C), ``x`` is (P, H_in, W_in*C); the y table
    is (Ky, H_out), the x table (Kx, W_out); ``*unit`` marks a one-tap table
    whose weights are all exactly 1 (a pure gather: nearest modes).
    """
    cdef Py_ssize_t P = out.shape[0], Ho = out.shape[1], Lo = out.shape[2]
    cdef Py_ssize_t Hi = x.shape[1], Li = x.shape[2]
    cdef Py_ssize_t Ky = yidx.shape[0], Kx = xidx.shape[0], Wo = xidx.shape[1]
    cdef Py_ssize_t nblocks = (Ho + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t njobs = P * nblocks
    cdef Py_ssize_t C = channels
    cdef Py_ssize_t crows = 1, scratch
    cdef Py_ssize_t job, p, y0, y1, y, r, lo, hi, k
    cdef int failed = 0
    cdef int* failp = &failed
    cdef real* buf = NULL
    cdef unsigned char* done = NULL
    cdef const real* plane
    cdef const int* yi = &yidx[0, 0]
    cdef const real* ywp = &yw[0, 0]
    cdef const int* xi = &xidx[0, 0]
    cdef const real* xwp = &xw[0, 0]
    cdef bint ycopy = yunit and Ky == 1
    if njobs == 0 or Lo == 0:
        return
    if order == ORDER_H_FIRST:
        crows = cache_rows(yidx)
        scratch = crows * Lo
    else:
        scratch = Li
    with nogil, parallel(num_threads=nthreads):
        buf = <real*> malloc(scratch * sizeof(real) + 1)
        done = <unsigned char*> malloc(crows + 1)
        if buf == NULL or done == NULL:
            failp[0] = 1   # through a pointer: assignments in a parallel block are private
        else:
            for job in prange(njobs, schedule="dynamic"):
                p = job // nblocks
                y0 = (job % nblocks) * ROW_BLOCK
                y1 = min(Ho, y0 + ROW_BLOCK)
                plane = &x[p, 0, 0]
                if order == ORDER_H_FIRST:
                    lo = 0   # assigned here so that OpenMP makes lo/hi thread-private
                    hi = 0
                    row_range(yi, Ky, Ho, y0, y1, &lo, &hi)
                    memset(done, 0, hi - lo)
                    for y in range(y0, y1):
                        for k in range(Ky):
                            r = yi[k * Ho + y]
                            if not done[r - lo]:
                                hpass(buf + (r - lo) * Lo, plane + r * Li, xi, xwp,
                                      Kx, Wo, C, xunit)
                                done[r - lo] = 1
                        vpass(&out[p, y, 0], buf, Lo, yi, ywp, Ky, Ho, y, lo, Lo, ycopy)
                else:
                    for y in range(y0, y1):
                        if ycopy:
                            hpass(&out[p, y, 0], plane + yi[y] * Li, xi, xwp,
                                  Kx, Wo, C, xunit)
                        else:
                            vpass(buf, plane, Li, yi, ywp, Ky, Ho, y, 0, Li, False)
                            hpass(&out[p, y, 0], buf, xi, xwp, Kx, Wo, C, xunit)
        free(buf)
        free(done)
    if failed:
        raise MemoryError("resize: could not allocate the per-thread scratch rows.")
