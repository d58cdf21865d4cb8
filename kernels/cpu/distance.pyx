# cython: language_level=3
"""Distance kernels: blocked GEMM squared distances with a fused epilogue, and kNN.

The Python front (fastinterp.distance) validates, picks the centring vector
and the tiles, and keeps the BLAS single-threaded while these kernels run.
Each kernel is one OpenMP parallel region: the rows are centred (subtracting
a common vector changes no distance, and removes most of the cancellation)
and their squared norms computed; then every thread calls BLAS ``?gemm`` on
its own tile and finishes that tile while it is still in cache. A tile's
result never depends on the thread count, so the output is bit-identical
for any number of threads.

Conventions for a tile: it is filled with ``|xc_i|^2 + |yc_j|^2``, then
``?gemm`` adds ``-2 * xc[i0:i0+mb] @ yc[j0:j0+nb].T`` (beta = 1: no separate
scaling pass) giving ``v``. Entries with
``v <= tau * (|xc_i|^2 + |yc_j|^2)`` (severe cancellation, identical rows)
are recomputed by direct differences of the original rows, accumulated in
float64: identical rows give exact zeros, and every result is >= 0.
"""
from cython.parallel cimport parallel, prange, threadid
cimport openmp
from libc.math cimport sqrt, sqrtf, INFINITY, NAN
from libc.stdint cimport INT64_MAX
from libc.stdlib cimport qsort
from scipy.linalg.cython_blas cimport sgemm, dgemm
from _types cimport real

ctypedef long long i64

cdef extern from *:
    """
    /* An orphaned OpenMP barrier: binds to the enclosing parallel region.
       (Cython's prange inside a parallel block ends with "nowait".) */
    static void fastinterp_omp_barrier(void) {
    #pragma omp barrier
    }
    """
    void omp_barrier "fastinterp_omp_barrier"() noexcept nogil

cdef i64 I64_MAX = INT64_MAX

cdef enum:
    SCAN_BLOCK = 64


cdef struct Cand:
    double d
    i64 i


# ----------------------------------------------------------------------------
# Shared arithmetic
# ----------------------------------------------------------------------------

cdef inline void gemm_neg2_nt(int m, int n, int k, const real* a, int lda,
                              const real* b, int ldb, real* c, int ldc,
                              real beta) noexcept nogil:
    """Row-major ``c[m, n] = beta * c - 2 * a[m, k] @ b[n, k].T`` (column-major
    ``c.T = beta c.T - 2 b a.T``); beta is 0 or 1 (1 skips BLAS's scaling pass)."""
    cdef char ta = b'T'
    cdef char tn = b'N'
    cdef real alpha = -2
    if real is float:
        sgemm(&ta, &tn, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda,
              &beta, <float*> c, &ldc)
    else:
        dgemm(&ta, &tn, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda,
              &beta, <double*> c, &ldc)


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
                            Py_ssize_t d) noexcept nogil:
    """dst = src - centre; norm = |dst|^2 (float64 sum, rounded once)."""
    cdef Py_ssize_t k
    for k in range(d):
        dst[k] = src[k] - centre[k]
    norm[0] = <real> sqnorm(dst, d)


def centre_rows(real[:, ::1] dst, real[::1] norms, const real[:, ::1] src,
                const real[::1] centre, int nthreads):
    """dst[i] = src[i] - centre; norms[i] = |dst[i]|^2 (float64 sum, rounded once)."""
    cdef Py_ssize_t m = src.shape[0], d = src.shape[1], i
    if m == 0 or d == 0:
        return
    for i in prange(m, nogil=True, schedule="static", num_threads=nthreads):
        centre_row(&src[i, 0], &centre[0], &dst[i, 0], &norms[i], d)


# ----------------------------------------------------------------------------
# Pairwise squared distances
# ----------------------------------------------------------------------------

cdef void tile_prefill(real* c, Py_ssize_t ldc, Py_ssize_t mb, Py_ssize_t nb,
                       const real* nx, const real* ny) noexcept nogil:
    """c[ii, jj] = |x_c,ii|^2 + |y_c,jj|^2 (the GEMM then adds -2 x_c.y_c with beta = 1)."""
    cdef Py_ssize_t ii, jj
    cdef real* row
    cdef real nxi
    for ii in range(mb):
        row = c + ii * ldc
        nxi = nx[ii]
        for jj in range(nb):
            row[jj] = nxi + ny[jj]


cdef void tile_epilogue(real* c, Py_ssize_t ldc, Py_ssize_t mb, Py_ssize_t nb,
                        const real* nx, const real* ny, const real* x, const real* y,
                        Py_ssize_t d, real tau, bint take_sqrt) noexcept nogil:
    """Finish one tile of ``c`` in place (rows x[0:mb], columns y[0:nb], row stride d):
    entries with v <= tau * (|x_c|^2 + |y_c|^2) are recomputed directly."""
    cdef Py_ssize_t ii, jj
    cdef real* row
    cdef real nxi
    cdef int cnt
    for ii in range(mb):
        row = c + ii * ldc
        nxi = nx[ii]
        cnt = 0
        for jj in range(nb):
            cnt += row[jj] <= tau * (nxi + ny[jj])
        if cnt:
            for jj in range(nb):
                if row[jj] <= tau * (nxi + ny[jj]):
                    row[jj] = <real> sqdiff(x + ii * d, y + jj * d, d)
        if take_sqrt:
            if real is float:
                for jj in range(nb):
                    row[jj] = sqrtf(row[jj])
            else:
                for jj in range(nb):
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


def sqdist_fwd(real[:, ::1] out, real[:, ::1] xc, real[:, ::1] yc,
               real[::1] nx, real[::1] ny, const real[:, ::1] x, const real[:, ::1] y,
               const real[::1] centre, const Py_ssize_t[:, ::1] tiles, double tau,
               bint take_sqrt, bint symmetric, int nthreads):
    """out[i, j] = |x_i - y_j|^2 (or its square root), tile by tile.

    One parallel region: first ``xc``/``yc`` (scratch, the rows of x and y
    minus ``centre``) and ``nx``/``ny`` (their squared norms) are filled,
    then every tile ``(i0, j0, rows, cols)`` of ``tiles`` is prefilled,
    multiplied and finished (dynamic schedule, in list order). With
    ``symmetric`` (y is x: pass the same arrays) the tiles cover the upper
    triangle (diagonal tiles square) and are mirrored into the lower one.
    """
    cdef Py_ssize_t m = out.shape[0], n = out.shape[1], d = xc.shape[1]
    cdef Py_ssize_t ntiles = tiles.shape[0], t, i0, j0, mb, nb, r
    cdef Py_ssize_t nrows = m if symmetric else m + n
    cdef real* po = &out[0, 0]
    with nogil, parallel(num_threads=nthreads):
        for r in prange(nrows, schedule="static"):
            if r < m:
                centre_row(&x[r, 0], &centre[0], &xc[r, 0], &nx[r], d)
            else:
                centre_row(&y[r - m, 0], &centre[0], &yc[r - m, 0], &ny[r - m], d)
        omp_barrier()     # every centred row is ready before any tile starts
        for t in prange(ntiles, schedule="dynamic", chunksize=1):
            i0 = tiles[t, 0]
            j0 = tiles[t, 1]
            mb = tiles[t, 2]
            nb = tiles[t, 3]
            tile_prefill(po + i0 * n + j0, n, mb, nb, &nx[i0], &ny[j0])
            gemm_neg2_nt(<int> mb, <int> nb, <int> d, &xc[i0, 0], <int> d, &yc[j0, 0],
                         <int> d, po + i0 * n + j0, <int> n, 1)
            tile_epilogue(po + i0 * n + j0, n, mb, nb, &nx[i0], &ny[j0], &x[i0, 0],
                          &y[j0, 0], d, <real> tau, take_sqrt)
            if symmetric:
                mirror_tile(po, n, i0, j0, mb, nb, i0 == j0)


# ----------------------------------------------------------------------------
# k nearest neighbours
# ----------------------------------------------------------------------------

cdef void scan_block(const real* g, const real* nx, Py_ssize_t nb, i64 j0,
                     double* hv, i64* hi, Py_ssize_t kc) noexcept nogil:
    """Offer v_j = g[j] + nx[j] (j0 + j the index) to a max-heap of kc entries.

    Runs of SCAN_BLOCK values are first tested against the heap's largest
    entry in one vectorised pass; only runs with a hit are walked one by one.
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


cdef int finish_query(const real* q, const real* x, Py_ssize_t n, Py_ssize_t d,
                      Py_ssize_t k, Py_ssize_t kc, Py_ssize_t nheaps, const double* hv,
                      const i64* hi, Py_ssize_t heap_stride, double delta, Cand* cand,
                      double* ev, i64* ei, real* dist_row, i64* idx_row) noexcept nogil:
    """The k nearest rows of one query from the candidates of ``nheaps`` heaps
    (heap t at hv/hi + t * heap_stride, kc entries each; one heap per thread,
    each over its share of the rows of x).

    Every row of x outside heap t has v >= that heap's largest entry, so every
    row outside all heaps has v >= a_out = min_t(largest of heap t) (+inf for
    a heap that is not full). When a_out exceeds the k-th smallest candidate
    by more than twice the rounding bound ``delta``, the candidates contain
    the exact answer: their distances are recomputed directly and sorted.
    Otherwise the query is rescanned exactly. Returns 1 on a rescan.
    """
    cdef Py_ssize_t c, t, ncand = 0
    cdef double a_out = INFINITY
    cdef bint fallback = False
    for t in range(nheaps):
        if hv[t * heap_stride] < a_out:
            a_out = hv[t * heap_stride]
        for c in range(kc):
            if hi[t * heap_stride + c] >= 0:
                cand[ncand].d = hv[t * heap_stride + c]
                cand[ncand].i = hi[t * heap_stride + c]
                ncand += 1
    if ncand < k:
        fallback = True
    else:
        qsort(cand, ncand, sizeof(Cand), cand_cmp)
        if a_out != INFINITY and not (a_out > cand[k - 1].d + 2 * delta):
            fallback = True
    if fallback:
        exact_scan(q, x, n, d, k, ev, ei)
        for c in range(k):
            cand[c].d = ev[c]
            cand[c].i = ei[c]
        qsort(cand, k, sizeof(Cand), cand_cmp)
    else:
        for c in range(ncand):
            cand[c].d = sqdiff(q, x + cand[c].i * d, d)
        qsort(cand, ncand, sizeof(Cand), cand_cmp)
    for c in range(k):
        dist_row[c] = <real> cand[c].d
        idx_row[c] = cand[c].i
    return fallback


def knn_fwd(real[:, ::1] dist, i64[:, ::1] idx, const real[:, ::1] x,
            const real[:, ::1] q, const real[::1] centre, real[:, ::1] xc,
            real[:, ::1] qc, real[::1] nx, real[::1] nq, int k, int kc, int qblock,
            int tblock, double unit, real[:, ::1] gbuf, double[:, ::1] hvbuf,
            i64[:, ::1] hibuf, double[:, ::1] evbuf, i64[:, ::1] eibuf,
            int[::1] fallbacks, int nthreads):
    """k nearest rows of ``x`` for every row of ``q`` (sorted, ties by smaller index).

    One parallel region. First ``xc``/``qc`` (scratch: rows minus ``centre``)
    and ``nx``/``nq`` (their squared norms) are filled. Then, query block by
    query block (``qblock`` queries), the threads share out the blocks of
    ``tblock`` rows of x (dynamic schedule): GEMM into the thread's ``gbuf``,
    then ``|xc_j|^2 - 2 qc.xc_j`` is offered to the thread's heap of ``kc``
    candidates per query. Finally each query's candidates from all heaps are
    checked and recomputed exactly (see finish_query). ``unit`` is the
    dtype's unit roundoff. Per-thread scratch: gbuf (nthreads, qblock*tblock),
    hvbuf/hibuf (nthreads, qblock*kc), evbuf (nthreads, 2*nthreads*kc + k),
    eibuf (nthreads, k). ``fallbacks[q]`` is set to 1 for each query that
    took the exact rescan.
    """
    cdef Py_ssize_t nqry = q.shape[0], n = x.shape[0], d = x.shape[1]
    cdef Py_ssize_t nblocks = (nqry + qblock - 1) // qblock
    cdef Py_ssize_t ntb = (n + tblock - 1) // tblock
    cdef Py_ssize_t stride = hvbuf.shape[1]
    cdef Py_ssize_t b, q0, nr, r, c, j, tb, j0, nb, tid
    cdef int nteam
    cdef double nx_max = 0, nqr, delta
    cdef double gamma = 2.0 * (d + 16) * unit
    cdef real* g
    cdef double* hv
    cdef i64* hi
    j = b = c = q0 = nr = tid = 0     # (thread-private below; set to quiet the compiler)
    g = NULL
    hv = NULL
    hi = NULL
    nteam = 1
    with nogil, parallel(num_threads=nthreads):
        tid = threadid()
        nteam = openmp.omp_get_num_threads()   # the heaps in use (<= nthreads)
        g = &gbuf[tid, 0]
        hv = &hvbuf[tid, 0]
        hi = &hibuf[tid, 0]
        for r in prange(n + nqry, schedule="static"):
            if r < n:
                centre_row(&x[r, 0], &centre[0], &xc[r, 0], &nx[r], d)
            else:
                centre_row(&q[r - n, 0], &centre[0], &qc[r - n, 0], &nq[r - n], d)
        omp_barrier()     # every centred row is ready before any block starts
        nx_max = 0        # every thread finds the same maximum (order-free)
        for j in range(n):
            if nx[j] > nx_max:
                nx_max = nx[j]
        for b in range(nblocks):
            q0 = b * qblock
            nr = min(<Py_ssize_t> qblock, nqry - q0)
            for c in range(nr * kc):
                hv[c] = INFINITY
                hi[c] = -1
            for tb in prange(ntb, schedule="dynamic", chunksize=1):
                j0 = tb * tblock
                nb = min(<Py_ssize_t> tblock, n - j0)
                gemm_neg2_nt(<int> nr, <int> nb, <int> d, &qc[q0, 0], <int> d,
                             &xc[j0, 0], <int> d, g, <int> tblock, 0)
                for r in range(nr):
                    scan_block(g + r * tblock, &nx[j0], nb, j0, hv + r * kc,
                               hi + r * kc, kc)
            omp_barrier()     # all heaps of this block are complete
            for r in prange(nr, schedule="dynamic", chunksize=16):
                nqr = nq[q0 + r]
                delta = gamma * (nqr + 2 * sqrt(nqr * nx_max) + nx_max)
                fallbacks[q0 + r] = finish_query(
                    &q[q0 + r, 0], &x[0, 0], n, d, k, kc, nteam, &hvbuf[0, r * kc],
                    &hibuf[0, r * kc], stride, delta, <Cand*> &evbuf[tid, 0],
                    &evbuf[tid, 2 * nthreads * kc], &eibuf[tid, 0],
                    &dist[q0 + r, 0], &idx[q0 + r, 0])
            omp_barrier()     # heaps are read before the next block resets them
