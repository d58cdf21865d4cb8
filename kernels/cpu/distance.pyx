# cython: language_level=3
"""Distance kernels: blocked GEMM squared distances with a fused epilogue, kNN, and
the backward passes.

The Python front (fastinterp.distance) validates and picks the centring vector
and the tiles. Every matrix product goes through the packed GEMM of
``_gemm.h``, called single-threaded on fixed output tiles from OpenMP threads:
no shared BLAS and no process-wide setting is involved, and a tile's result
never depends on the thread count or on the calling thread, so every output
is bit-identical for any number of threads.

Rows are centred (subtracting a common vector changes no distance and removes
most of the cancellation) and their squared norms computed in float64. A row
whose squared norm exceeds ``limit`` (it would overflow the GEMM form) or is
not finite is "special": its norm is stored as +inf, and every entry it takes
part in is computed from direct differences.

Conventions for a forward tile: the GEMM writes ``-2 * xc[i0:i0+mb] @ yc[j0:j0+nb].T``
and its fused epilogue adds ``|xc_i|^2 + |yc_j|^2`` to each micro-tile while it
is in L1, giving ``v``.
Entries with ``not (v > tau * (|xc_i|^2 + |yc_j|^2))`` (severe cancellation,
identical rows, special rows, NaN) are recomputed by direct differences of the
original rows, accumulated in float64: identical rows give exact zeros, and
every result is >= 0.
"""
import numpy as np

from cython.parallel cimport parallel, prange, threadid
cimport openmp
from libc.float cimport DBL_MAX, FLT_MAX
from libc.math cimport sqrt, sqrtf, fabs, INFINITY, NAN
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport INT64_MAX, uintptr_t
from libc.stdlib cimport qsort, malloc, free
from libc.string cimport memset
from _types cimport real
from _team cimport (fi_omp_barrier, fi_team, fi_team_done, fi_team_enter, fi_team_leave,
                   fi_team_plan)

ctypedef long long i64

cdef extern from "_gemm.h" nogil:
    ctypedef void (*fi_epilogue_f)(void* ctx, size_t i, size_t j, size_t mr, size_t nr,
                                   float* c, ptrdiff_t rsc) noexcept nogil
    ctypedef void (*fi_epilogue_d)(void* ctx, size_t i, size_t j, size_t mr, size_t nr,
                                   double* c, ptrdiff_t rsc) noexcept nogil
    ctypedef struct fi_rank1:
        const void* r
        const void* s
        double tau
        int take_sqrt
    size_t fi_gemm_work_f()
    size_t fi_gemm_work_d()
    void fi_gemm_f(size_t m, size_t n, size_t k, float alpha,
                   const float* a, ptrdiff_t rsa, ptrdiff_t csa,
                   const float* b, ptrdiff_t rsb, ptrdiff_t csb,
                   float beta, float* c, ptrdiff_t rsc, float* work,
                   fi_epilogue_f epi, void* ctx, const fi_rank1* fin)
    void fi_gemm_d(size_t m, size_t n, size_t k, double alpha,
                   const double* a, ptrdiff_t rsa, ptrdiff_t csa,
                   const double* b, ptrdiff_t rsb, ptrdiff_t csb,
                   double beta, double* c, ptrdiff_t rsc, double* work,
                   fi_epilogue_d epi, void* ctx, const fi_rank1* fin)
    int FI_GEMM_ALIGN
    int FI_MR

cdef i64 I64_MAX = INT64_MAX

cdef enum:
    SCAN_BLOCK = 64
    BWD_ROWS = 96        # output rows per backward tile


cdef struct Cand:
    double d
    i64 i


# ----------------------------------------------------------------------------
# Workspace and the GEMM
# ----------------------------------------------------------------------------

cdef size_t round_up(size_t n, size_t a) noexcept nogil:
    return (n + a - 1) // a * a


# One freed scratch block is kept for the next call (the GIL guards it: blocks are taken
# and given back with the GIL held, around the parallel regions). A fresh block costs page
# faults on first touch, zeroing every page again, which is several percent of a large
# pairwise call; at most SCRATCH_KEEP_BYTES stay allocated between calls.
cdef enum:
    SCRATCH_KEEP_BYTES = 32 << 20

cdef void* kept_block = NULL
cdef size_t kept_bytes = 0


cdef char* alloc_per_thread(object per_thread, object nthreads, void** base,
                            size_t* nbytes) except NULL:
    """One checked allocation of ``nthreads`` aligned blocks of ``per_thread`` bytes
    (``per_thread`` a multiple of FI_GEMM_ALIGN), the kept block when it is large enough.
    Raises MemoryError; give it back with release_scratch(base[0], nbytes[0])."""
    global kept_block, kept_bytes
    total = per_thread * nthreads + FI_GEMM_ALIGN
    if per_thread < 0 or nthreads < 1 or total > (<size_t> -1) // 2:
        raise MemoryError(f"distance kernel: cannot allocate {total} bytes of scratch")
    if kept_block != NULL and kept_bytes >= <size_t> total:
        base[0], nbytes[0] = kept_block, kept_bytes
        kept_block, kept_bytes = NULL, 0
    else:
        base[0], nbytes[0] = malloc(<size_t> total), <size_t> total
    if base[0] == NULL:
        raise MemoryError(f"distance kernel: cannot allocate {total} bytes of scratch")
    return <char*> round_up(<uintptr_t> base[0], FI_GEMM_ALIGN)


cdef void release_scratch(void* block, size_t nbytes) noexcept:
    """Give back a block of alloc_per_thread: kept for the next call if it is the larger
    of it and the kept one and at most SCRATCH_KEEP_BYTES, else freed."""
    global kept_block, kept_bytes
    if block == NULL:
        return
    if nbytes <= SCRATCH_KEEP_BYTES and nbytes > kept_bytes:
        free(kept_block)
        kept_block, kept_bytes = block, nbytes
    else:
        free(block)


cdef inline size_t gemm_work_bytes(real* kind) noexcept nogil:
    """Bytes of GEMM workspace for the element type of ``kind`` (64-byte multiple)."""
    if real is float:
        return round_up(fi_gemm_work_f() * sizeof(float), FI_GEMM_ALIGN)
    else:
        return round_up(fi_gemm_work_d() * sizeof(double), FI_GEMM_ALIGN)


cdef inline void gemm(size_t m, size_t n, size_t k, real alpha,
                      const real* a, ptrdiff_t rsa, ptrdiff_t csa,
                      const real* b, ptrdiff_t rsb, ptrdiff_t csb,
                      real beta, real* c, ptrdiff_t rsc, void* work,
                      FwdCtx* fwd) noexcept nogil:
    """``c = beta c + alpha a @ b`` with the deterministic packed GEMM (single thread);
    with ``fwd``, each micro-tile is finished by the forward epilogue (micro_epilogue),
    full tiles first in registers (fi_rank1: the same arithmetic, see _gemm.h)."""
    cdef fi_rank1 fin
    cdef const fi_rank1* use = NULL
    if fwd != NULL:
        fin.r = fwd.nx
        fin.s = fwd.ny
        fin.tau = fwd.tau
        fin.take_sqrt = fwd.take_sqrt
        use = &fin
    if real is float:
        fi_gemm_f(m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, <float*> work,
                  micro_epilogue[float] if fwd != NULL else <fi_epilogue_f> NULL, fwd, use)
    else:
        fi_gemm_d(m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, <double*> work,
                  micro_epilogue[double] if fwd != NULL else <fi_epilogue_d> NULL, fwd, use)


# ----------------------------------------------------------------------------
# Shared arithmetic
# ----------------------------------------------------------------------------

cdef inline double sqdiff(const real* a, const real* b, Py_ssize_t d) noexcept nogil:
    """sum((a - b)**2) accumulated in float64 with 8 fixed partial sums (exact 0 for a == b)."""
    cdef double acc[8]
    cdef double t
    cdef Py_ssize_t k, l, d8 = d - d % 8
    for l in range(8):
        acc[l] = 0
    for k in range(0, d8, 8):
        for l in range(8):
            t = <double> a[k + l] - <double> b[k + l]
            acc[l] += t * t
    for k in range(d8, d):
        t = <double> a[k] - <double> b[k]
        acc[k - d8] += t * t
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline double sum_contig(const real* a, Py_ssize_t n) noexcept nogil:
    """sum(a) in float64 with 8 fixed partial sums."""
    cdef double acc[8]
    cdef Py_ssize_t k, l, n8 = n - n % 8
    for l in range(8):
        acc[l] = 0
    for k in range(0, n8, 8):
        for l in range(8):
            acc[l] += a[k + l]
    for k in range(n8, n):
        acc[k - n8] += a[k]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef double direct_norm(const real* a, const real* b, Py_ssize_t d) noexcept nogil:
    """|a - b| in float64; rescaled when the sum of squares overflows but the norm does not."""
    cdef double s = sqdiff(a, b, d), m = 0, t
    cdef Py_ssize_t k
    if s != INFINITY:
        return sqrt(s)
    for k in range(d):
        t = fabs(<double> a[k] - <double> b[k])
        if t > m:
            m = t
    if m == INFINITY:
        return m
    s = 0
    for k in range(d):
        t = (<double> a[k] - <double> b[k]) / m
        s += t * t
    return m * sqrt(s)


cdef double quarter_norm(const real* a, const real* b, Py_ssize_t d) noexcept nogil:
    """|a / 4 - b / 4| in float64, the differences divided by the largest first: finite
    for finite float64 rows whose difference overflows (their unit vector is
    (a / 4 - b / 4) / this); inf or NaN for rows holding inf or NaN."""
    cdef double m = 0, s = 0, t
    cdef Py_ssize_t k
    for k in range(d):
        t = fabs(<double> a[k] * 0.25 - <double> b[k] * 0.25)
        if not t <= m:
            m = t
    if not 0 < m < INFINITY:
        return m
    for k in range(d):
        t = (<double> a[k] * 0.25 - <double> b[k] * 0.25) / m
        s += t * t
    return m * sqrt(s)


cdef inline double direct_dist(const real* a, const real* b, Py_ssize_t d,
                               bint take_sqrt) noexcept nogil:
    """|a - b|^2 (or |a - b|) from direct differences, in float64."""
    return direct_norm(a, b, d) if take_sqrt else sqdiff(a, b, d)


cdef inline bint greater(double a, i64 ia, double b, i64 ib) noexcept nogil:
    """(a, ia) > (b, ib) lexicographically; NaN is larger than every number."""
    if a != a:
        return b == b or ia > ib
    if b != b:
        return False
    return a > b or (a == b and ia > ib)


cdef int cand_cmp(const void* pa, const void* pb) noexcept nogil:
    cdef const Cand* a = <const Cand*> pa
    cdef const Cand* b = <const Cand*> pb
    if greater(a.d, a.i, b.d, b.i):
        return 1
    if greater(b.d, b.i, a.d, a.i):
        return -1
    return 0


cdef enum:
    SHORT_SORT = 32     # candidate lists up to this long are insertion-sorted


cdef void sort_cands(Cand* c, Py_ssize_t n) noexcept nogil:
    """Sort by (distance, index), NaN last. The order is total (indices are distinct),
    so any algorithm gives the same result: insertion sort for short lists (qsort's
    call overhead dominates there), qsort otherwise."""
    cdef Py_ssize_t i, j
    cdef Cand t
    if n > SHORT_SORT:
        qsort(c, n, sizeof(Cand), cand_cmp)
        return
    for i in range(1, n):
        t = c[i]
        j = i
        while j > 0 and greater(c[j - 1].d, c[j - 1].i, t.d, t.i):
            c[j] = c[j - 1]
            j -= 1
        c[j] = t


cdef inline void heap_replace_top(double* hv, i64* hi, Py_ssize_t n, double v, i64 j) noexcept nogil:
    """Max-heap on (value, index): replace the largest entry by (v, j) and sift down."""
    cdef Py_ssize_t pos = 0, c
    while True:
        c = 2 * pos + 1
        if c >= n:
            break
        if c + 1 < n and greater(hv[c + 1], hi[c + 1], hv[c], hi[c]):
            c += 1
        if not greater(hv[c], hi[c], v, j):
            break
        hv[pos] = hv[c]
        hi[pos] = hi[c]
        pos = c
    hv[pos] = v
    hi[pos] = j


# ----------------------------------------------------------------------------
# Centring and norms
# ----------------------------------------------------------------------------

cdef inline double sqnorm(const real* a, Py_ssize_t d) noexcept nogil:
    """sum(a**2) in float64 with 8 fixed partial sums."""
    cdef double acc[8]
    cdef Py_ssize_t k, l, d8 = d - d % 8
    for l in range(8):
        acc[l] = 0
    for k in range(0, d8, 8):
        for l in range(8):
            acc[l] += <double> a[k + l] * <double> a[k + l]
    for k in range(d8, d):
        acc[k - d8] += <double> a[k] * <double> a[k]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline void centre_row(const real* src, const real* centre, real* dst, real* norm,
                            Py_ssize_t d, double limit) noexcept nogil:
    """dst = src - centre; norm = |dst|^2 (float64 sum, rounded once), or +inf for a
    special row: norm above ``limit``, not finite, or tiny but not 0 (below
    tiny_norm: the GEMM's products would underflow and lose their relative
    precision, which the cancellation test cannot see)."""
    cdef Py_ssize_t k
    cdef double s
    for k in range(d):
        dst[k] = src[k] - centre[k]
    s = sqnorm(dst, d)
    norm[0] = <real> s if s <= limit and not (0 < s < tiny_norm(dst)) else <real> INFINITY


cdef inline double tiny_norm(const real* like) noexcept nogil:
    """Squared centred norms below this (the smallest normal number over the unit
    roundoff: 2^-102 in float32, 2^-969 in float64) are special rows; above it, every
    product of two entries of such rows that matters is a normal number."""
    if real is float:
        return 1.9721522630525295e-31
    return 2.004168360008973e-292


cdef int check_map(const i64[::1] amap, Py_ssize_t nsrc, str what) except -1:
    """Every entry of a batch map must index one of the ``nsrc`` batch elements of its source."""
    cdef Py_ssize_t b
    for b in range(amap.shape[0]):
        if not 0 <= amap[b] < nsrc:
            raise ValueError(f"{what}: batch map entries must lie in [0, {nsrc}); "
                             f"got {amap[b]} at {b}.")
    return 0


def centre_rows(real[:, :, ::1] dst, real[:, ::1] norms, const real[:, :, ::1] src,
                const i64[::1] srcmap, const real[:, ::1] centre, double limit, int nthreads):
    """dst[b, i] = src[srcmap[b], i] - centre[b]; norms[b, i] = |dst[b, i]|^2, +inf above
    ``limit`` (see centre_row). Shapes: dst (B, M, D), norms (B, M), src (S, M, D),
    srcmap (B,), centre (B, D)."""
    cdef Py_ssize_t nb = dst.shape[0], m = src.shape[1], d = src.shape[2], r, b, i
    if (dst.shape[1] != m or dst.shape[2] != d or norms.shape[0] != nb
            or norms.shape[1] != m or srcmap.shape[0] != nb or centre.shape[0] != nb
            or centre.shape[1] != d):
        raise ValueError("centre_rows: dst (B, M, D), norms (B, M), srcmap (B,) and "
                         "centre (B, D) must match src (S, M, D).")
    check_map(srcmap, src.shape[0], "centre_rows")
    if nb == 0 or m == 0:
        return
    cdef fi_team team
    nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
    with nogil, parallel(num_threads=nthreads):
        fi_team_enter(&team)
        for r in prange(nb * m, schedule="static"):
            b = r // m
            i = r - b * m
            if d == 0:
                norms[b, i] = 0
            else:
                centre_row(&src[srcmap[b], i, 0], &centre[b, 0], &dst[b, i, 0], &norms[b, i],
                           d, limit)
        fi_team_leave(&team)
    fi_team_done(&team)


# ----------------------------------------------------------------------------
# Pairwise squared distances
# ----------------------------------------------------------------------------

cdef struct FwdCtx:
    const void* nx      # squared centred norms of the tile's rows (real*)
    const void* ny      # ... and of its columns
    const void* x       # the tile's first row of x (real*, row stride d)
    const void* y       # ... and of y
    Py_ssize_t d
    double tau
    bint take_sqrt


cdef void micro_epilogue(void* ctx, size_t i, size_t j, size_t mr, size_t nr, real* c,
                         ptrdiff_t rsc) noexcept nogil:
    """Finish rows i:i+mr, columns j:j+nr of a forward tile (c holds -2 xc.yc there):
    v = (|xc|^2 + |yc|^2) + c; entries with not (v > tau (|xc|^2 + |yc|^2)) are
    recomputed from direct differences; then the square root if asked."""
    cdef FwdCtx* f = <FwdCtx*> ctx
    cdef const real* nx = <const real*> f.nx + i
    cdef const real* ny = <const real*> f.ny + j
    cdef const real* x = <const real*> f.x + i * f.d
    cdef const real* y = <const real*> f.y + j * f.d
    cdef real tau = <real> f.tau
    cdef size_t ii, jj
    cdef real* row
    cdef real nxi, p, v
    cdef int cnt
    for ii in range(mr):
        row = c + ii * rsc
        nxi = nx[ii]
        cnt = 0
        for jj in range(nr):
            p = nxi + ny[jj]
            v = p + row[jj]
            row[jj] = v
            cnt += not (v > tau * p)
        if cnt:
            for jj in range(nr):
                if not (row[jj] > tau * (nxi + ny[jj])):
                    row[jj] = <real> direct_dist(x + ii * f.d, y + jj * f.d, f.d, f.take_sqrt)
                elif f.take_sqrt:
                    row[jj] = sqrt(row[jj])
        elif f.take_sqrt:
            if real is float:
                for jj in range(nr):
                    row[jj] = sqrtf(row[jj])
            else:
                for jj in range(nr):
                    row[jj] = sqrt(row[jj])


cdef void mirror_tile(real* out, Py_ssize_t n, Py_ssize_t i0, Py_ssize_t j0,
                      Py_ssize_t mb, Py_ssize_t nb, bint diagonal) noexcept nogil:
    """out[j0+jj, i0+ii] = out[i0+ii, j0+jj] (the strict upper part only on a diagonal tile)."""
    cdef Py_ssize_t ii, jj
    for jj in range(nb):
        for ii in range(mb):
            if diagonal and ii >= jj:
                break
            out[(j0 + jj) * n + i0 + ii] = out[(i0 + ii) * n + j0 + jj]


cdef int check_tiles(const Py_ssize_t[:, ::1] tiles, Py_ssize_t m, Py_ssize_t n,
                     bint symmetric) except -1:
    cdef Py_ssize_t t
    if tiles.shape[0] and tiles.shape[1] != 4:
        raise ValueError("sqdist_fwd: tiles must have shape (T, 4).")
    for t in range(tiles.shape[0]):
        if (tiles[t, 0] < 0 or tiles[t, 1] < 0 or tiles[t, 2] < 1 or tiles[t, 3] < 1
                or tiles[t, 2] > m - tiles[t, 0] or tiles[t, 3] > n - tiles[t, 1]
                or (symmetric and tiles[t, 1] < tiles[t, 0])):
            raise ValueError(f"sqdist_fwd: tile {t} lies outside the ({m}, {n}) output.")
    return 0


cdef void direct_tile(const real* x, const real* y, Py_ssize_t d, Py_ssize_t mb,
                      Py_ssize_t nb, real* out, Py_ssize_t ldo, bint take_sqrt,
                      double* yt, double* acc) noexcept nogil:
    """out[ii, jj] = |x_ii - y_jj|^2 (or its root) for one tile from direct differences in
    float64: the tile's rows of y are transposed into ``yt`` (d x nb), then each row of x is
    swept along the tile (k outer, contiguous and vectorisable inner loop over jj; the sum
    over k always runs in increasing order). For small D this beats the GEMM form and
    is exact up to one rounding: identical rows give exactly 0."""
    cdef Py_ssize_t ii, jj, k
    cdef double xk, t, v
    cdef const double* col
    cdef real* row
    for jj in range(nb):
        for k in range(d):
            yt[k * nb + jj] = y[jj * d + k]
    for ii in range(mb):
        for jj in range(nb):
            acc[jj] = 0
        for k in range(d):
            xk = x[ii * d + k]
            col = yt + k * nb
            for jj in range(nb):
                t = xk - col[jj]
                acc[jj] += t * t
        row = out + ii * ldo
        if not take_sqrt:
            for jj in range(nb):
                row[jj] = <real> acc[jj]
            continue
        for jj in range(nb):
            v = acc[jj]
            row[jj] = <real> (sqrt(v) if v != INFINITY else direct_norm(x + ii * d, y + jj * d, d))


def sqdist_fwd(real[:, :, ::1] out, real[:, :, ::1] xc, real[:, :, ::1] yc,
               real[:, ::1] nx, real[:, ::1] ny, const real[:, :, ::1] x,
               const real[:, :, ::1] y, const i64[::1] xmap, const i64[::1] ymap,
               const real[:, ::1] centre, const Py_ssize_t[:, ::1] tiles, double tau,
               double limit, bint take_sqrt, bint symmetric, bint direct, int nthreads):
    """out[b, i, j] = |x[xmap[b], i] - y[ymap[b], j]|^2 (or its square root), tile by tile.

    Shapes: out (B, M, N), x (S, M, D), y (T, N, D), xmap/ymap (B,), xc (B, M, D),
    yc (B, N, D), nx (B, M), ny (B, N), centre (B, D). One parallel region: first
    ``xc``/``yc`` (scratch, the rows of each batch element's x and y minus its
    ``centre``) and ``nx``/``ny`` (their squared norms, +inf for special rows
    above ``limit``) are filled, then every tile ``(i0, j0, rows, cols)`` of
    ``tiles`` of every batch element is multiplied and finished (dynamic
    schedule over batch x tiles: which thread runs a tile changes nothing in
    it, so each element's bits are those of a call on it alone). With
    ``symmetric`` (y is x: pass the same arrays and maps) the tiles cover the
    upper triangle (diagonal tiles square) and are mirrored into the lower one.
    With ``direct`` (for small D) every tile comes from direct differences
    (direct_tile) and xc, yc, nx, ny and centre are not used. D = 0 gives zeros.
    """
    cdef Py_ssize_t nbat = out.shape[0], m = out.shape[1], n = out.shape[2], d = x.shape[2]
    cdef Py_ssize_t maxcols = 0
    cdef Py_ssize_t ntiles = tiles.shape[0], t, i0, j0, mb, nb, r, b, rows
    cdef Py_ssize_t nrows = m if symmetric else m + n
    cdef real* po
    cdef void* base = NULL
    cdef size_t base_bytes = 0
    cdef char* work
    cdef size_t wstride, gbytes
    cdef char* mine
    cdef FwdCtx* ctx
    if (x.shape[1] != m or y.shape[1] != n or y.shape[2] != d or xc.shape[0] != nbat
            or xc.shape[1] != m or xc.shape[2] != d or yc.shape[0] != nbat
            or yc.shape[1] != n or yc.shape[2] != d or nx.shape[0] != nbat
            or nx.shape[1] != m or ny.shape[0] != nbat or ny.shape[1] != n
            or xmap.shape[0] != nbat or ymap.shape[0] != nbat or centre.shape[0] != nbat
            or centre.shape[1] != d or (symmetric and m != n)):
        raise ValueError("sqdist_fwd: out (B, M, N), x (S, M, D), y (T, N, D), xc (B, M, D), "
                         "yc (B, N, D), nx (B, M), ny (B, N), xmap/ymap (B,), centre (B, D) "
                         "must agree.")
    check_map(xmap, x.shape[0], "sqdist_fwd")
    check_map(ymap, y.shape[0], "sqdist_fwd")
    if nbat == 0 or m == 0 or n == 0:
        return
    if d == 0:
        out[:, :, :] = 0
        return
    check_tiles(tiles, m, n, symmetric)
    for t in range(ntiles):
        maxcols = max(maxcols, tiles[t, 3])
    nthreads = max(1, nthreads)
    if direct:   # the transposed y rows (d x cols) and one row of sums, in float64
        gbytes = round_up(<size_t> (d + 1) * maxcols * sizeof(double), FI_GEMM_ALIGN)
    else:
        gbytes = gemm_work_bytes(&out[0, 0, 0])
    wstride = gbytes + round_up(sizeof(FwdCtx), FI_GEMM_ALIGN)
    work = alloc_per_thread(wstride, nthreads, &base, &base_bytes)
    rows = 0 if direct else nbat * nrows
    cdef fi_team team
    try:
        nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
        with nogil, parallel(num_threads=nthreads):
            fi_team_enter(&team)
            for r in prange(rows, schedule="static"):
                b = r // nrows
                t = r - b * nrows
                if t < m:
                    centre_row(&x[xmap[b], t, 0], &centre[b, 0], &xc[b, t, 0], &nx[b, t],
                               d, limit)
                else:
                    centre_row(&y[ymap[b], t - m, 0], &centre[b, 0], &yc[b, t - m, 0],
                               &ny[b, t - m], d, limit)
            fi_omp_barrier()     # every centred row is ready before any tile starts
            for r in prange(nbat * ntiles, schedule="dynamic", chunksize=1):
                b = r // ntiles
                t = r - b * ntiles
                i0 = tiles[t, 0]
                j0 = tiles[t, 1]
                mb = tiles[t, 2]
                nb = tiles[t, 3]
                po = &out[b, 0, 0]
                mine = work + threadid() * wstride
                if direct:
                    direct_tile(&x[xmap[b], i0, 0], &y[ymap[b], j0, 0], d, mb, nb,
                                po + i0 * n + j0, n, take_sqrt, <double*> mine,
                                <double*> mine + d * nb)
                    if symmetric:
                        mirror_tile(po, n, i0, j0, mb, nb, i0 == j0)
                    continue
                ctx = <FwdCtx*> (mine + gbytes)      # this thread's epilogue context
                ctx.nx = &nx[b, i0]
                ctx.ny = &ny[b, j0]
                ctx.x = &x[xmap[b], i0, 0]
                ctx.y = &y[ymap[b], j0, 0]
                ctx.d = d
                ctx.tau = tau
                ctx.take_sqrt = take_sqrt
                gemm(mb, nb, d, <real> -2, &xc[b, i0, 0], d, 1, &yc[b, j0, 0], 1, d,
                     <real> 0, po + i0 * n + j0, n, mine, ctx)
                if symmetric:
                    mirror_tile(po, n, i0, j0, mb, nb, i0 == j0)
            fi_team_leave(&team)
        fi_team_done(&team)
    finally:
        release_scratch(base, base_bytes)


# ----------------------------------------------------------------------------
# Backward: gradients of sum(S * distances) with respect to the rows
# ----------------------------------------------------------------------------

cdef inline bint near_pair(double dist, double ra, double rb, double tau) noexcept nogil:
    """The L2 backward takes the pair from direct differences."""
    return not (dist > tau * (ra + rb))


cdef void grad_tile(real* dst, Py_ssize_t r0, Py_ssize_t mb, Py_ssize_t ns, Py_ssize_t d,
                    const real* s, ptrdiff_t rss, ptrdiff_t css, const real* g,
                    const unsigned char* near, const i64* count,
                    const real* a, const real* b, const real* ac, const real* bc,
                    double factor, double* rowsum, double* acc, void* work) noexcept nogil:
    """Rows r0:r0+mb of ``out[r] = factor sum_q S(r,q) (a_r - b_q)`` into ``dst`` (mb rows of
    d; S(r,q) = s[r*rss + q*css], likewise g and near), as ``factor (rowsum_r ac_r - (S @ bc)_r)``
    plus, for the near pairs (which carry S = 0; ``count[r]`` of them in row r, none when
    count is NULL), ``g(r,q) (a_r - b_q) / |a_r - b_q|`` from direct differences in float64.
    Every sum runs over q in increasing order."""
    cdef Py_ssize_t rr, q, k, r
    cdef ptrdiff_t o
    cdef double w, nrm
    cdef real* row
    gemm(mb, d, ns, <real> -1, s + r0 * rss, rss, css, bc, d, 1, <real> 0,
         dst, d, work, NULL)
    for rr in range(mb):
        rowsum[rr] = 0
    if css == 1:
        for rr in range(mb):
            rowsum[rr] = sum_contig(s + (r0 + rr) * rss, ns)
    else:
        for q in range(ns):
            for rr in range(mb):
                rowsum[rr] += s[(r0 + rr) * rss + q * css]
    for rr in range(mb):
        r = r0 + rr
        row = dst + rr * d
        for k in range(d):
            row[k] = <real> (factor * (rowsum[rr] * <double> ac[r * d + k] + <double> row[k]))
        if count == NULL or count[r] == 0:
            continue
        for k in range(d):
            acc[k] = 0
        for q in range(ns):
            o = r * rss + q * css
            if not near[o]:
                continue
            nrm = direct_norm(a + r * d, b + q * d, d)
            if nrm == 0:
                continue    # zero distance: the subgradient 0 (a NaN distance propagates)
            if nrm == INFINITY and real is double:
                nrm = quarter_norm(a + r * d, b + q * d, d)
                if nrm < INFINITY:  # finite rows farther apart than float64 holds: g times
                    for k in range(d):      # their unit vector (g / inf weighed them 0)
                        acc[k] += <double> g[o] * ((<double> a[r * d + k] * 0.25
                                                    - <double> b[q * d + k] * 0.25) / nrm)
                    continue
            w = <double> g[o] / nrm
            if fabs(w) <= DBL_MAX or not fabs(<double> g[o]) <= DBL_MAX:
                for k in range(d):
                    acc[k] += w * (<double> a[r * d + k] - <double> b[q * d + k])
            else:   # g / |a - b| overflows (float64 rows a few 1e-300 apart): g times the unit vector
                for k in range(d):
                    acc[k] += <double> g[o] * ((<double> a[r * d + k] - <double> b[q * d + k]) / nrm)
        for k in range(d):
            row[k] = <real> (<double> row[k] + acc[k])


cdef int check_sets(const i64[::1] ptr, const i64[::1] items, Py_ssize_t nout,
                    Py_ssize_t nelem) except -1:
    """``items[ptr[u]:ptr[u+1]]`` lists the batch elements summed into output u."""
    cdef Py_ssize_t u, e
    if ptr.shape[0] != nout + 1 or ptr[0] != 0 or ptr[nout] != items.shape[0]:
        raise ValueError(f"grad_rows: ptr must have {nout + 1} entries from 0 to len(items).")
    for u in range(nout):
        if ptr[u + 1] < ptr[u]:
            raise ValueError("grad_rows: ptr must be non-decreasing.")
    for e in range(items.shape[0]):
        if not 0 <= items[e] < nelem:
            raise ValueError(f"grad_rows: items must lie in [0, {nelem}).")
    return 0


def grad_rows(real[:, :, ::1] out, const real[:, :, ::1] s, bint transpose,
              const real[:, :, ::1] a, const real[:, :, ::1] b, const i64[::1] bmap,
              const real[:, :, ::1] ac, const real[:, :, ::1] bc,
              const real[:, :, ::1] g, const unsigned char[:, :, ::1] near,
              const i64[:, ::1] count, const i64[::1] ptr, const i64[::1] items,
              double factor, int nthreads):
    """``out[u, r] = sum_e factor * sum_q S_e(r, q) (a[u, r] - b[bmap[e], q])`` for every
    batch element u of ``a`` and every row r, e running over ``items[ptr[u]:ptr[u+1]]``
    in order (the batch elements whose operand is a[u]: one without broadcasting).

    Shapes: out and a (U, A, D), b (V, B, D), bmap (E,), ac (E, A, D) and bc (E, B, D)
    (a[u] and b[bmap[e]] minus element e's centre), s (E, A, B) or, with
    ``transpose``, (E, B, A) read as its transpose; ``g`` and ``near`` are read the
    same way. When ``count`` (E, A) is not empty (the L2 backward), the pairs with
    ``near`` set (``count[e, r]`` of them in row r) must carry S = 0 and contribute
    ``g (a_r - b_q) / |a_r - b_q|`` from direct differences instead; when it is
    empty, g and near are not read. Fixed tiles of BWD_ROWS rows of one u, each
    one GEMM per element (sums in increasing q order), the first element written
    in place and later ones added in order: bit-identical for any thread count,
    and a single element gives the bits of an unbatched call.
    """
    cdef Py_ssize_t nu = out.shape[0], na = a.shape[1], nb = b.shape[1], d = a.shape[2]
    cdef Py_ssize_t ne = bmap.shape[0], per, ntiles, t, r0, mb, u, e, l, rr, k
    cdef ptrdiff_t rss, css
    cdef bint direct = count.shape[0] * count.shape[1] != 0
    cdef void* base = NULL
    cdef size_t base_bytes = 0
    cdef char* work
    cdef char* mine
    cdef real* dst
    cdef real* tmp
    cdef size_t wstride, gbytes, o_tmp
    cdef Py_ssize_t s0 = nb if transpose else na, s1 = na if transpose else nb
    if (a.shape[0] != nu or out.shape[1] != na or out.shape[2] != d or b.shape[2] != d
            or s.shape[0] != ne or s.shape[1] != s0 or s.shape[2] != s1
            or ac.shape[0] != ne or ac.shape[1] != na or ac.shape[2] != d
            or bc.shape[0] != ne or bc.shape[1] != nb or bc.shape[2] != d):
        raise ValueError("grad_rows: out/a (U, A, D), b (V, B, D), bmap (E,), ac (E, A, D), "
                         "bc (E, B, D) and s (E, A, B) (transposed: (E, B, A)) must agree.")
    if direct and (g.shape[0] != ne or g.shape[1] != s0 or g.shape[2] != s1
                   or near.shape[0] != ne or near.shape[1] != s0 or near.shape[2] != s1
                   or count.shape[0] != ne or count.shape[1] != na):
        raise ValueError("grad_rows: g and near must have the shape of s, count (E, A).")
    check_map(bmap, b.shape[0], "grad_rows")
    check_sets(ptr, items, nu, ne)
    if nu == 0 or na == 0 or d == 0:
        return
    if nb == 0:
        out[:, :, :] = 0
        return
    if transpose:
        rss, css = 1, na
    else:
        rss, css = nb, 1
    per = (na + BWD_ROWS - 1) // BWD_ROWS
    ntiles = nu * per
    nthreads = max(1, min(nthreads, ntiles))
    gbytes = gemm_work_bytes(&out[0, 0, 0])
    o_tmp = gbytes + round_up((BWD_ROWS + d) * sizeof(double), FI_GEMM_ALIGN)
    wstride = o_tmp + round_up(<size_t> BWD_ROWS * d * sizeof(real), FI_GEMM_ALIGN)
    work = alloc_per_thread(wstride, nthreads, &base, &base_bytes)
    cdef fi_team team
    try:
        nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
        with nogil, parallel(num_threads=nthreads):
            fi_team_enter(&team)
            for t in prange(ntiles, schedule="dynamic", chunksize=1):
                mine = work + threadid() * wstride
                tmp = <real*> (mine + o_tmp)
                u = t // per
                r0 = (t - u * per) * BWD_ROWS
                mb = min(<Py_ssize_t> BWD_ROWS, na - r0)
                dst = &out[u, r0, 0]
                if ptr[u] == ptr[u + 1]:
                    memset(dst, 0, mb * d * sizeof(real))
                for l in range(ptr[u], ptr[u + 1]):
                    e = items[l]
                    grad_tile(dst if l == ptr[u] else tmp, r0, mb, nb, d, &s[e, 0, 0], rss, css,
                              &g[e, 0, 0] if direct else NULL,
                              &near[e, 0, 0] if direct else NULL,
                              &count[e, 0] if direct else NULL,
                              &a[u, 0, 0], &b[bmap[e], 0, 0], &ac[e, 0, 0], &bc[e, 0, 0],
                              factor, <double*> (mine + gbytes),
                              <double*> (mine + gbytes) + BWD_ROWS, mine)
                    if l != ptr[u]:
                        for rr in range(mb * d):
                            dst[rr] = dst[rr] + tmp[rr]
            fi_team_leave(&team)
        fi_team_done(&team)
    finally:
        release_scratch(base, base_bytes)


def l2_scale(real[:, :, ::1] s, unsigned char[:, :, ::1] near, const real[:, :, ::1] g,
             const real[:, :, ::1] dist, const double[:, ::1] rx, const double[:, ::1] ry,
             double tau, int nthreads):
    """``s = g / dist`` (0 where dist == 0), per batch element; ``near`` marks the pairs with
    ``not (dist > tau (rx_i + ry_j))``, and those whose finite g / dist exceeds the dtype
    (a distance below |g| / FLT_MAX: tiny rows), taken from direct differences in float64
    by grad_rows (their s is 0). Shapes: s, near, g, dist (E, M, N), rx (E, M), ry (E, N)."""
    cdef Py_ssize_t ne = s.shape[0], m = s.shape[1], n = s.shape[2], r, e, i, j
    cdef double dv, w
    cdef double limit = FLT_MAX if real is float else DBL_MAX
    if (g.shape[0] != ne or g.shape[1] != m or g.shape[2] != n or dist.shape[0] != ne
            or dist.shape[1] != m or dist.shape[2] != n or near.shape[0] != ne
            or near.shape[1] != m or near.shape[2] != n or rx.shape[0] != ne
            or rx.shape[1] != m or ry.shape[0] != ne or ry.shape[1] != n):
        raise ValueError("l2_scale: s, near, g, dist (E, M, N), rx (E, M), ry (E, N) "
                         "must agree.")
    if ne == 0 or m == 0 or n == 0:
        return
    cdef fi_team team
    nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
    with nogil, parallel(num_threads=nthreads):
        fi_team_enter(&team)
        for r in prange(ne * m, schedule="static"):
            e = r // m
            i = r - e * m
            for j in range(n):
                dv = dist[e, i, j]
                w = <double> g[e, i, j] / dv if dv > 0 else 0
                near[e, i, j] = near_pair(dv, rx[e, i], ry[e, j], tau) or (
                    fabs(<double> g[e, i, j]) <= limit and not (fabs(w) <= limit))
                s[e, i, j] = 0 if near[e, i, j] else <real> w
        fi_team_leave(&team)
    fi_team_done(&team)


# ----------------------------------------------------------------------------
# k nearest neighbours
# ----------------------------------------------------------------------------

cdef void scan_block(const real* g, const real* nx, Py_ssize_t nb, i64 j0,
                     double* hv, i64* hi, Py_ssize_t kc) noexcept nogil:
    """Offer v_j = g[j] + nx[j] (j0 + j the index) to a max-heap of kc entries.

    Runs of SCAN_BLOCK values are first tested against the heap's largest
    entry in one vectorised pass; only runs with a hit are walked one by one.
    Special rows (nx = +inf) give v = inf or NaN and never enter.
    """
    cdef Py_ssize_t jb = 0, l, run
    cdef real thr = <real> hv[0], v
    cdef int cnt
    while jb < nb:
        run = min(<Py_ssize_t> SCAN_BLOCK, nb - jb)
        cnt = 0
        for l in range(run):
            cnt += (g[jb + l] + nx[jb + l]) < thr
        if cnt:
            for l in range(run):
                v = g[jb + l] + nx[jb + l]
                if v < thr:
                    heap_replace_top(hv, hi, kc, v, j0 + jb + l)
                    thr = <real> hv[0]
        jb += SCAN_BLOCK


cdef void exact_scan(const real* q, const real* x, Py_ssize_t n, Py_ssize_t d,
                     Py_ssize_t k, double* hv, i64* hi) noexcept nogil:
    """Direct-difference top-k over all rows (the rare fallback); heap in hv/hi."""
    cdef Py_ssize_t j
    cdef double e
    for j in range(k):
        hv[j] = NAN          # sentinel: after every number and every NaN row
        hi[j] = I64_MAX
    for j in range(n):
        e = sqdiff(q, x + j * d, d)
        if greater(hv[0], hi[0], e, j):
            heap_replace_top(hv, hi, k, e, j)


cdef inline double heap_start(double tau, double nqr, double nxm, double delta) noexcept nogil:
    """The value a query's heap entries start from (with index -1): +inf, or, when
    only the rows within squared distance ``tau`` of the query are wanted (a
    bound from rows searched before, see knn_fwd), tau - |q_c|^2 + 2 delta, so
    that every row within tau enters the heap (its v is at most tau - |q_c|^2 +
    delta) and most others are never inserted. A tau beyond every possible
    distance ((|q_c| + max |x_c|)^2), NaN or +inf gives +inf."""
    if nqr == INFINITY or not (tau < nqr + 2 * sqrt(nqr * nxm) + nxm):
        return INFINITY
    return tau - nqr + 2 * delta


cdef inline double round_bound(double nqr, double nxm, double gamma,
                               double floor) noexcept nogil:
    """The bound ``delta`` on |v + |q_c|^2 - d| (v from the GEMM form, d the direct
    float64 distance) for a query of centred squared norm ``nqr`` against rows of
    centred squared norms up to ``nxm``: relative rounding, gamma (|q_c| + |x_c|)^2,
    plus ``floor`` for the absolute error of subnormal results (products and sums
    below the dtype's smallest normal number lose their relative precision)."""
    return gamma * (nqr + 2 * sqrt(nqr * nxm) + nxm) + floor


cdef void start_heaps(double* hv, i64* hi, Py_ssize_t nr, Py_ssize_t kc, const double* tau,
                      const real* nq, double nxm, double gamma, double floor) noexcept nogil:
    """Empty heaps for nr queries: kc entries each at heap_start (+inf when ``tau`` is
    NULL), index -1."""
    cdef Py_ssize_t r, c
    cdef double start = INFINITY, nqr
    for r in range(nr):
        if tau != NULL:
            nqr = nq[r]
            start = heap_start(tau[r], nqr, nxm, round_bound(nqr, nxm, gamma, floor))
        for c in range(kc):
            hv[r * kc + c] = start
            hi[r * kc + c] = -1


cdef int finish_query(const real* q, const real* x, Py_ssize_t n, Py_ssize_t d,
                      Py_ssize_t k, Py_ssize_t kc, Py_ssize_t nheaps, const double* hv,
                      const i64* hi, Py_ssize_t heap_stride, const i64* special,
                      Py_ssize_t nspecial, bint exact, double delta, double nqr, double tau,
                      Cand* cand, double* ev, i64* ei, real* dist_row,
                      i64* idx_row) noexcept nogil:
    """The k nearest rows of one query from the candidates of ``nheaps`` heaps
    (heap t at hv/hi + t * heap_stride, kc entries each; one heap per thread,
    each over its share of the rows of x) and the ``special`` rows of x.

    Every non-special row of x outside heap t has v >= that heap's largest
    entry, so every row outside all candidates has v >= a_out = min_t(largest
    of heap t) (+inf for a heap that is not full). When a_out exceeds the k-th
    smallest candidate (special ones counted as +inf) by more than twice the
    rounding bound ``delta``, the candidates contain the exact answer: their
    distances are recomputed directly and sorted. Otherwise (or with
    ``exact``) the query is rescanned exactly. Returns 1 on a rescan.

    With a bound ``tau`` (finite; heaps started at heap_start), fewer than k
    candidates is an answer too when every row outside them is proven farther
    than tau (a_out + |q_c|^2 - delta > tau): those candidates, sorted, then
    entries of distance +inf and index -1.
    """
    cdef Py_ssize_t c, t, ncand = 0, nout = k
    cdef double a_out = INFINITY
    cdef bint fallback = exact
    if not fallback:
        for t in range(nheaps):
            if hv[t * heap_stride] < a_out:
                a_out = hv[t * heap_stride]
            for c in range(kc):
                if hi[t * heap_stride + c] >= 0:
                    cand[ncand].d = hv[t * heap_stride + c]
                    cand[ncand].i = hi[t * heap_stride + c]
                    ncand += 1
        for c in range(nspecial):
            cand[ncand].d = INFINITY
            cand[ncand].i = special[c]
            ncand += 1
        if ncand < k:
            fallback = tau == INFINITY or not (a_out + nqr - delta > tau)
        else:
            sort_cands(cand, ncand)
            if a_out != INFINITY and not (a_out > cand[k - 1].d + 2 * delta):
                fallback = True
    if fallback:
        exact_scan(q, x, n, d, k, ev, ei)
        for c in range(k):
            cand[c].d = ev[c]
            cand[c].i = ei[c]
        sort_cands(cand, k)
    else:
        for c in range(ncand):
            cand[c].d = sqdiff(q, x + cand[c].i * d, d)
        sort_cands(cand, ncand)
        nout = min(k, ncand)
    for c in range(nout):
        dist_row[c] = <real> cand[c].d
        idx_row[c] = cand[c].i
    for c in range(nout, k):
        dist_row[c] = INFINITY
        idx_row[c] = -1
    return fallback


cdef enum:
    SOA_MAX = 1 << 18    # doubles of per-thread scratch for the transposed small-x scan


cdef void soa_rows(const real* x, Py_ssize_t n, Py_ssize_t d, double* xt) noexcept nogil:
    """xt[k * n + j] = x[j, k]: the n rows of x, column by column, in float64."""
    cdef Py_ssize_t j, k
    for j in range(n):
        for k in range(d):
            xt[k * n + j] = x[j * d + k]


cdef void soa_sqdiff(const real* q, const double* xt, Py_ssize_t n, Py_ssize_t d,
                     double* part, double* e) noexcept nogil:
    """e[j] = sqdiff(q, x_j) for all n rows at once (xt from soa_rows): the same eight
    partial sums, each in the same order, and the same final tree as sqdiff, so the
    bits are those of sqdiff; the loops run along j (vectorised)."""
    cdef Py_ssize_t j, k, l, d8 = d - d % 8
    cdef double qk, t
    cdef double* pl
    cdef const double* col
    for j in range(8 * n):
        part[j] = 0
    for k in range(d):
        l = k % 8 if k < d8 else k - d8
        pl = part + l * n
        col = xt + k * n
        qk = q[k]
        for j in range(n):
            t = qk - col[j]
            pl[j] += t * t
    for j in range(n):
        e[j] = (((part[j] + part[n + j]) + (part[2 * n + j] + part[3 * n + j]))
                + ((part[4 * n + j] + part[5 * n + j]) + (part[6 * n + j] + part[7 * n + j])))


cdef void top_k_of(const double* e, Py_ssize_t n, Py_ssize_t k, double* hv, i64* hi,
                   Cand* cand, real* dist_row, i64* idx_row) noexcept nogil:
    """The k smallest (e[j], j), sorted (NaN last, ties by index), into dist_row/idx_row."""
    cdef Py_ssize_t j
    for j in range(k):
        hv[j] = NAN          # sentinel: after every number and every NaN row
        hi[j] = I64_MAX
    for j in range(n):
        if greater(hv[0], hi[0], e[j], j):
            heap_replace_top(hv, hi, k, e[j], j)
    for j in range(k):
        cand[j].d = hv[j]
        cand[j].i = hi[j]
    sort_cands(cand, k)
    for j in range(k):
        dist_row[j] = <real> cand[j].d
        idx_row[j] = cand[j].i


cdef void fill_heaps(const real* qc, const real* xc, const real* nx, Py_ssize_t j0,
                     Py_ssize_t nb, Py_ssize_t nr, Py_ssize_t d, Py_ssize_t kc,
                     Py_ssize_t tblock, real* g, double* hv, i64* hi, void* work) noexcept nogil:
    """Offer rows j0:j0+nb of x to the heaps of the nr queries of a block: one GEMM
    (``-2 qc . xc_j`` into g, row stride tblock), then scan_block per query."""
    cdef Py_ssize_t r
    gemm(nr, nb, d, <real> -2, qc, d, 1, xc + j0 * d, 1, d, <real> 0, g, tblock, work, NULL)
    for r in range(nr):
        scan_block(g + r * tblock, nx + j0, nb, j0, hv + r * kc, hi + r * kc, kc)


def listed_sqdiff(double[:, ::1] out, const real[:, ::1] x, const real[:, ::1] q,
                  const i64[:, ::1] idx, int nthreads):
    """out[r, c] = |q[r] - x[idx[r, c]]|^2 in float64, summed exactly as knn_fwd sums
    the distances it orders by (sqdiff), so these are knn's float64 sort keys bit for
    bit. Shapes: out (Q, K), x (N, D), q (Q, D), idx (Q, K) with rows of x."""
    cdef Py_ssize_t nq = q.shape[0], kk = idx.shape[1], n = x.shape[0], d = x.shape[1]
    cdef Py_ssize_t r, c
    if (out.shape[0] != nq or out.shape[1] != kk or idx.shape[0] != nq
            or q.shape[1] != d):
        raise ValueError("listed_sqdiff: out (Q, K), x (N, D), q (Q, D) and idx (Q, K) "
                         "must agree in shape.")
    for r in range(nq):
        for c in range(kk):
            if not 0 <= idx[r, c] < n:
                raise ValueError(f"listed_sqdiff: idx must list rows of x in [0, {n}); "
                                 f"got {idx[r, c]}.")
    if nq == 0 or kk == 0:
        return
    cdef fi_team team
    nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
    with nogil, parallel(num_threads=nthreads):
        fi_team_enter(&team)
        for r in prange(nq, schedule="static"):
            for c in range(kk):
                out[r, c] = sqdiff(&q[r, 0], &x[idx[r, c], 0], d) if d else 0
        fi_team_leave(&team)
    fi_team_done(&team)


def knn_fwd(real[:, :, ::1] dist, i64[:, :, ::1] idx, const real[:, :, ::1] x,
            const real[:, :, ::1] q, const i64[::1] xmap, const i64[::1] qmap,
            const real[:, :, ::1] xc, const real[:, :, ::1] qc,
            const real[:, ::1] nx, const real[:, ::1] nq, const i64[::1] special_ptr,
            const i64[::1] special, const unsigned char[::1] all_exact,
            int k, int kc, int qblock, int tblock, double unit,
            int[:, ::1] fallbacks, int nthreads, const double[:, ::1] bound=None):
    """k nearest rows of ``x[xmap[b]]`` for every row of ``q[qmap[b]]``, for every batch
    element b (sorted, ties by smaller index).

    Shapes: dist/idx (B, Q, k), x (S, N, D), q (T, Q, D), xmap/qmap (B,), xc (B, N, D),
    qc (B, Q, D), nx (B, N), nq (B, Q), fallbacks (B, Q). ``xc``/``qc`` are element b's
    rows minus its centre and ``nx``/``nq`` their squared norms (+inf for special
    rows: see centre_rows); ``special[special_ptr[b]:special_ptr[b+1]]`` lists the
    special rows of element b's x (they never enter the heaps and are always
    candidates). A special query, or every query of an element with
    ``all_exact[b]``, is scanned exactly. Block by block (``qblock`` queries of one
    element), the threads share out the blocks of ``tblock`` rows of x (dynamic
    schedule): GEMM into the thread's buffer, then ``|xc_j|^2 - 2 qc.xc_j`` is
    offered to the thread's heap of ``kc`` candidates per query. Finally each
    query's candidates are checked and recomputed exactly (see finish_query), so
    the result never depends on the blocks or threads. When x fits one block of
    ``tblock`` rows, each thread instead takes whole query blocks with its own
    heap (no barrier: many small clouds). ``unit`` is the dtype's
    unit roundoff. ``fallbacks[b, q]`` is set to 1 for each query that was
    rescanned. Scratch is allocated here (MemoryError before anything is written).

    ``bound`` (B, Q), or None: a squared distance per query within
    which the answer is wanted (the k-th distance of rows already searched
    elsewhere, say; +inf or NaN for none). The heaps then start at the bound
    (see heap_start), so far rows are never inserted, and a query with fewer
    than k rows within its bound gets those rows, then entries of distance
    +inf and index -1. Every row within the bound is always listed.
    """
    cdef Py_ssize_t nbat = dist.shape[0], nqry = q.shape[1], n = x.shape[1], d = x.shape[2]
    cdef Py_ssize_t nspecial, maxspecial = 0
    cdef Py_ssize_t nblocks, ntb, blk, b, q0, nr, r, c, j, tb, j0, nb, tid
    cdef int nteam
    cdef double nqr, delta
    cdef double gamma = 2.0 * (d + 16) * unit
    # each of the ~2d + 16 roundings may lose up to the dtype's smallest subnormal
    cdef double floor = (2.0 * d + 16) * (1.401298464324817e-45 if real is float
                                          else 4.9406564584124654e-324)
    cdef void* base = NULL
    cdef size_t base_bytes = 0
    cdef char* work
    cdef char* mine
    cdef size_t gbytes, wstride, o_g, o_hv, o_hi, o_cand, o_ev, o_ei, o_soa
    cdef bint soa
    cdef bint bounded = bound is not None
    cdef double* xt
    cdef real* g
    cdef double* hv
    cdef i64* hi
    cdef const i64* spec
    if (dist.shape[1] != nqry or idx.shape[0] != nbat or idx.shape[1] != nqry
            or dist.shape[2] != k or idx.shape[2] != k or q.shape[2] != d
            or xmap.shape[0] != nbat or qmap.shape[0] != nbat or xc.shape[0] != nbat
            or xc.shape[1] != n or xc.shape[2] != d or qc.shape[0] != nbat
            or qc.shape[1] != nqry or qc.shape[2] != d or nx.shape[0] != nbat
            or nx.shape[1] != n or nq.shape[0] != nbat or nq.shape[1] != nqry
            or fallbacks.shape[0] != nbat or fallbacks.shape[1] != nqry
            or all_exact.shape[0] != nbat or special_ptr.shape[0] != nbat + 1
            or (bound is not None and (bound.shape[0] != nbat or bound.shape[1] != nqry))):
        raise ValueError("knn_fwd: dist/idx (B, Q, k), x (S, N, D), q (T, Q, D), xmap/qmap "
                         "(B,), xc (B, N, D), qc (B, Q, D), nx (B, N), nq (B, Q), "
                         "fallbacks (B, Q), all_exact (B,), special_ptr (B + 1,), bound (B, Q) "
                         "must agree.")
    if not (1 <= k <= kc <= n) or qblock < 1 or tblock < 1:
        raise ValueError(f"knn_fwd: need 1 <= k <= kc <= N, qblock >= 1, tblock >= 1; "
                         f"got k={k}, kc={kc}, N={n}, qblock={qblock}, tblock={tblock}.")
    check_map(xmap, x.shape[0], "knn_fwd")
    check_map(qmap, q.shape[0], "knn_fwd")
    if special_ptr[0] != 0 or special_ptr[nbat] != special.shape[0]:
        raise ValueError("knn_fwd: special_ptr must run from 0 to len(special).")
    for b in range(nbat):
        if special_ptr[b + 1] < special_ptr[b]:
            raise ValueError("knn_fwd: special_ptr must be non-decreasing.")
        maxspecial = max(maxspecial, special_ptr[b + 1] - special_ptr[b])
    for c in range(special.shape[0]):
        if not 0 <= special[c] < n:
            raise ValueError(f"knn_fwd: special rows must lie in [0, {n}).")
    if nbat == 0 or nqry == 0:
        return
    if d == 0:   # every distance is 0: the first k rows, by the index tie-break
        for b in range(nbat):
            for r in range(nqry):
                for c in range(k):
                    dist[b, r, c] = 0
                    idx[b, r, c] = c
                fallbacks[b, r] = 0
        return
    nthreads = max(1, nthreads)
    nblocks = (nqry + qblock - 1) // qblock
    ntb = (n + tblock - 1) // tblock
    # Per-thread scratch: GEMM workspace, the GEMM result, the heaps (read by
    # every thread when finishing), the candidate list and the exact-scan heap.
    gbytes = gemm_work_bytes(&dist[0, 0, 0])
    o_g = gbytes
    o_hv = o_g + round_up(<size_t> qblock * tblock * sizeof(real), FI_GEMM_ALIGN)
    o_hi = o_hv + round_up(<size_t> qblock * kc * sizeof(double), FI_GEMM_ALIGN)
    o_cand = o_hi + round_up(<size_t> qblock * kc * sizeof(i64), FI_GEMM_ALIGN)
    o_ev = o_cand + round_up((<size_t> nthreads * kc + maxspecial + k) * sizeof(Cand),
                             FI_GEMM_ALIGN)
    o_ei = o_ev + round_up(<size_t> k * sizeof(double), FI_GEMM_ALIGN)
    o_soa = o_ei + round_up(<size_t> k * sizeof(i64), FI_GEMM_ALIGN)
    soa = ntb == 1 and (d + 9) * n <= SOA_MAX   # small x: transposed once per block
    wstride = o_soa + (round_up(<size_t> (d + 9) * n * sizeof(double), FI_GEMM_ALIGN)
                       if soa else 0)
    work = alloc_per_thread(wstride, nthreads, &base, &base_bytes)
    nx_max_buf = np.zeros(nbat, np.float64)
    cdef double[::1] nx_max = nx_max_buf
    for b in range(nbat):
        for j in range(n):
            if nx[b, j] != INFINITY and nx[b, j] > nx_max[b]:
                nx_max[b] = nx[b, j]
    j = b = c = q0 = nr = tid = 0     # (thread-private below; set to quiet the compiler)
    g = NULL
    hv = NULL
    hi = NULL
    mine = NULL
    nteam = 1
    cdef fi_team team
    try:
        nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
        if ntb == 1:   # a small x: every thread takes whole blocks, one heap each, no barrier
            with nogil, parallel(num_threads=nthreads):
                fi_team_enter(&team)
                for blk in prange(nbat * nblocks, schedule="dynamic", chunksize=1):
                    mine = work + threadid() * wstride
                    b = blk // nblocks
                    q0 = (blk - b * nblocks) * qblock
                    nr = min(<Py_ssize_t> qblock, nqry - q0)
                    if soa and all_exact[b] != 0:    # every query scans x exactly
                        xt = <double*> (mine + o_soa)
                        soa_rows(&x[xmap[b], 0, 0], n, d, xt)
                        for r in range(nr):
                            soa_sqdiff(&q[qmap[b], q0 + r, 0], xt, n, d, xt + d * n,
                                       xt + (d + 8) * n)
                            top_k_of(xt + (d + 8) * n, n, k, <double*> (mine + o_ev),
                                     <i64*> (mine + o_ei), <Cand*> (mine + o_cand),
                                     &dist[b, q0 + r, 0], &idx[b, q0 + r, 0])
                            fallbacks[b, q0 + r] = 1
                        continue
                    start_heaps(<double*> (mine + o_hv), <i64*> (mine + o_hi), nr, kc,
                                &bound[b, q0] if bounded else NULL, &nq[b, q0], nx_max[b],
                                gamma, floor)
                    if all_exact[b] == 0:
                        fill_heaps(&qc[b, q0, 0], &xc[b, 0, 0], &nx[b, 0], 0, n, nr, d, kc,
                                   tblock, <real*> (mine + o_g), <double*> (mine + o_hv),
                                   <i64*> (mine + o_hi), mine)
                    nspecial = special_ptr[b + 1] - special_ptr[b]
                    for r in range(nr):
                        nqr = nq[b, q0 + r]
                        delta = round_bound(nqr, nx_max[b], gamma, floor)
                        fallbacks[b, q0 + r] = finish_query(
                            &q[qmap[b], q0 + r, 0], &x[xmap[b], 0, 0], n, d, k, kc, 1,
                            <double*> (mine + o_hv) + r * kc, <i64*> (mine + o_hi) + r * kc,
                            0, &special[special_ptr[b]] if nspecial else NULL, nspecial,
                            all_exact[b] != 0 or nqr == INFINITY, delta, nqr,
                            bound[b, q0 + r] if bounded else INFINITY,
                            <Cand*> (mine + o_cand), <double*> (mine + o_ev),
                            <i64*> (mine + o_ei), &dist[b, q0 + r, 0], &idx[b, q0 + r, 0])
                fi_team_leave(&team)
            fi_team_done(&team)
            return
        with nogil, parallel(num_threads=nthreads):
            fi_team_enter(&team)
            tid = threadid()
            nteam = openmp.omp_get_num_threads()   # the heaps in use (<= nthreads)
            mine = work + tid * wstride
            g = <real*> (mine + o_g)
            hv = <double*> (mine + o_hv)
            hi = <i64*> (mine + o_hi)
            for blk in range(nbat * nblocks):
                b = blk // nblocks
                q0 = (blk - b * nblocks) * qblock
                nr = min(<Py_ssize_t> qblock, nqry - q0)
                start_heaps(hv, hi, nr, kc, &bound[b, q0] if bounded else NULL, &nq[b, q0],
                            nx_max[b], gamma, floor)
                if all_exact[b] == 0:
                    for tb in prange(ntb, schedule="dynamic", chunksize=1):
                        j0 = tb * tblock
                        fill_heaps(&qc[b, q0, 0], &xc[b, 0, 0], &nx[b, 0], j0,
                                   min(<Py_ssize_t> tblock, n - j0), nr, d, kc, tblock,
                                   g, hv, hi, mine)
                fi_omp_barrier()     # all heaps of this block are complete
                nspecial = special_ptr[b + 1] - special_ptr[b]
                spec = &special[special_ptr[b]] if nspecial else NULL
                for r in prange(nr, schedule="dynamic", chunksize=16):
                    nqr = nq[b, q0 + r]
                    delta = round_bound(nqr, nx_max[b], gamma, floor)
                    fallbacks[b, q0 + r] = finish_query(
                        &q[qmap[b], q0 + r, 0], &x[xmap[b], 0, 0], n, d, k, kc, nteam,
                        <double*> (work + o_hv) + r * kc, <i64*> (work + o_hi) + r * kc,
                        wstride // sizeof(double), spec, nspecial,
                        all_exact[b] != 0 or nqr == INFINITY, delta, nqr,
                        bound[b, q0 + r] if bounded else INFINITY,
                        <Cand*> (work + tid * wstride + o_cand),
                        <double*> (work + tid * wstride + o_ev),
                        <i64*> (work + tid * wstride + o_ei),
                        &dist[b, q0 + r, 0], &idx[b, q0 + r, 0])
                fi_omp_barrier()     # heaps are read before the next block resets them
            fi_team_leave(&team)
        fi_team_done(&team)
    finally:
        release_scratch(base, base_bytes)


# ----------------------------------------------------------------------------
# A deterministic matrix product for other kernels' Python fronts
# ----------------------------------------------------------------------------

cdef enum:
    MATMUL_ROWS = 192     # output rows per tile
    MATMUL_COLS = 2048    # output columns per tile


def matmul(real[:, ::1] out, const real[:, :] a, const real[:, :] b, int nthreads):
    """``out = a @ b`` with the packed GEMM, bit-identical for any thread count.

    ``a`` (M, K) and ``b`` (K, N) may have any strides (transposed views
    included); ``out`` (M, N) is C-contiguous and must not overlap them. The
    output is cut into fixed tiles of MATMUL_ROWS x MATMUL_COLS, each computed
    by one thread with the summation order of the GEMM (increasing k), so the
    bits never depend on the thread count, on the calling thread, or on the
    process's BLAS.
    """
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    cdef Py_ssize_t trows, tcols, ntiles, t, r0, c0
    cdef ptrdiff_t isz = sizeof(real)
    cdef void* base = NULL
    cdef size_t base_bytes = 0
    cdef char* work
    cdef size_t wbytes
    if b.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
        raise ValueError("matmul: a (M, K), b (K, N) and out (M, N) must agree; got "
                         f"a ({m}, {k}), b ({b.shape[0]}, {n}), "
                         f"out ({out.shape[0]}, {out.shape[1]}).")
    if m == 0 or n == 0:
        return
    if k == 0:
        out[:, :] = 0
        return
    trows = (m + MATMUL_ROWS - 1) // MATMUL_ROWS
    tcols = (n + MATMUL_COLS - 1) // MATMUL_COLS
    ntiles = trows * tcols
    nthreads = max(1, min(nthreads, ntiles))
    wbytes = gemm_work_bytes(&out[0, 0])
    work = alloc_per_thread(wbytes, nthreads, &base, &base_bytes)
    cdef fi_team team
    try:
        nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
        with nogil, parallel(num_threads=nthreads):
            fi_team_enter(&team)
            for t in prange(ntiles, schedule="static", chunksize=1):
                r0 = (t // tcols) * MATMUL_ROWS
                c0 = (t % tcols) * MATMUL_COLS
                gemm[real](min(<Py_ssize_t> MATMUL_ROWS, m - r0),
                           min(<Py_ssize_t> MATMUL_COLS, n - c0), k, 1,
                           &a[r0, 0], a.strides[0] // isz, a.strides[1] // isz,
                           &b[0, c0], b.strides[0] // isz, b.strides[1] // isz,
                           0, &out[r0, c0], n, work + threadid() * wbytes, NULL)
            fi_team_leave(&team)
        fi_team_done(&team)
    finally:
        release_scratch(base, base_bytes)
