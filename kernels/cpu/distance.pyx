# cython: language_level=3
"""Distance kernels: blocked GEMM squared distances with a fused epilogue, and kNN.

The Python front (fastinterp.distance) validates, centres the data by a common
vector (distances do not change, cancellation mostly goes away), computes the
row norms and keeps the BLAS single-threaded while these kernels run: every
OpenMP thread calls BLAS ``?gemm`` on its own tile, then finishes that tile
while it is still in cache. A tile's result never depends on the thread
count, so the output is bit-identical for any number of threads.

Conventions for a tile: ``G = -2 * xc[i0:i0+mb] @ yc[j0:j0+nb].T`` (exact
scaling), then ``v = (G + |xc_i|^2) + |yc_j|^2``. Entries with
``v <= tau * (|xc_i|^2 + |yc_j|^2)`` (severe cancellation, identical rows)
are recomputed by direct differences of the original rows, accumulated in
float64: identical rows give exact zeros, and every result is >= 0.
"""
from cython.parallel cimport prange, threadid
from libc.math cimport sqrt, INFINITY, NAN
from libc.stdint cimport INT64_MAX
from libc.stdlib cimport qsort
from scipy.linalg.cython_blas cimport sgemm, dgemm
from _types cimport real

ctypedef long long i64

cdef i64 I64_MAX = INT64_MAX

cdef enum:
    SCAN_BLOCK = 16


cdef struct Cand:
    double d
    i64 i


# ----------------------------------------------------------------------------
# Shared arithmetic
# ----------------------------------------------------------------------------

cdef inline void gemm_neg2_nt(int m, int n, int k, const real* a, int lda,
                              const real* b, int ldb, real* c, int ldc) noexcept nogil:
    """Row-major ``c[m, n] = -2 * a[m, k] @ b[n, k].T`` (column-major ``c.T = -2 b a.T``)."""
    cdef char ta = b'T'
    cdef char tn = b'N'
    cdef real alpha = -2
    cdef real beta = 0
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


def centre_rows(real[:, ::1] dst, real[::1] norms, const real[:, ::1] src,
                const real[::1] centre, int nthreads):
    """dst[i] = src[i] - centre; norms[i] = |dst[i]|^2 (float64 sum, rounded once)."""
    cdef Py_ssize_t m = src.shape[0], d = src.shape[1], i, k
    if m == 0 or d == 0:
        return
    for i in prange(m, nogil=True, schedule="static", num_threads=nthreads):
        for k in range(d):
            dst[i, k] = src[i, k] - centre[k]
        norms[i] = <real> sqnorm(&dst[i, 0], d)


# ----------------------------------------------------------------------------
# Pairwise squared distances
# ----------------------------------------------------------------------------

cdef void tile_epilogue(real* c, Py_ssize_t ldc, Py_ssize_t mb, Py_ssize_t nb,
                        const real* nx, const real* ny, const real* x, const real* y,
                        Py_ssize_t d, real tau, bint take_sqrt) noexcept nogil:
    """Finish one tile of ``c`` in place (rows x[0:mb], columns y[0:nb], row stride d)."""
    cdef Py_ssize_t ii, jj
    cdef real* row
    cdef real nxi, v
    cdef int cnt
    for ii in range(mb):
        row = c + ii * ldc
        nxi = nx[ii]
        cnt = 0
        for jj in range(nb):
            v = (row[jj] + nxi) + ny[jj]
            row[jj] = v
            cnt += v <= tau * (nxi + ny[jj])
        if cnt:
            for jj in range(nb):
                if row[jj] <= tau * (nxi + ny[jj]):
                    row[jj] = <real> sqdiff(x + ii * d, y + jj * d, d)
        if take_sqrt:
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


def sqdist_fwd(real[:, ::1] out, const real[:, ::1] xc, const real[:, ::1] yc,
               const real[::1] nx, const real[::1] ny,
               const real[:, ::1] x, const real[:, ::1] y,
               const int[:, ::1] tiles, int tile, double tau, bint take_sqrt,
               bint symmetric, int nthreads):
    """out[i, j] = |x_i - y_j|^2 (or its square root), tile by tile.

    ``xc``/``yc`` are the centred rows and ``nx``/``ny`` their squared norms;
    ``x``/``y`` the original rows for the direct recomputation. ``tiles`` lists
    (row block, column block) pairs of ``tile`` x ``tile`` tiles; with
    ``symmetric`` (y is x) only blocks with column >= row are listed and
    each is mirrored into the lower triangle.
    """
    cdef Py_ssize_t m = out.shape[0], n = out.shape[1], d = xc.shape[1]
    cdef Py_ssize_t ntiles = tiles.shape[0], t, i0, j0, mb, nb
    cdef real* po = &out[0, 0]
    for t in prange(ntiles, nogil=True, schedule="dynamic", chunksize=1,
                    num_threads=nthreads):
        i0 = tiles[t, 0] * tile
        j0 = tiles[t, 1] * tile
        mb = min(tile, m - i0)
        nb = min(tile, n - j0)
        gemm_neg2_nt(<int> mb, <int> nb, <int> d, &xc[i0, 0], <int> d, &yc[j0, 0],
                     <int> d, po + i0 * n + j0, <int> n)
        tile_epilogue(po + i0 * n + j0, n, mb, nb, &nx[i0], &ny[j0], &x[i0, 0],
                      &y[j0, 0], d, <real> tau, take_sqrt)
        if symmetric:
            mirror_tile(po, n, i0, j0, mb, nb, i0 == j0)


# ----------------------------------------------------------------------------
# k nearest neighbours
# ----------------------------------------------------------------------------

cdef void scan_block(const real* g, const real* nx, Py_ssize_t nb, i64 j0,
                     double* hv, i64* hi, Py_ssize_t kc) noexcept nogil:
    """Offer v_j = g[j] + nx[j] (j0 + j the index) to a max-heap of kc entries."""
    cdef Py_ssize_t blk, jb, l, nfull = nb - nb % SCAN_BLOCK
    cdef real thr = <real> hv[0], v
    cdef int cnt
    for blk in range(nfull // SCAN_BLOCK):
        jb = blk * SCAN_BLOCK
        cnt = 0
        for l in range(SCAN_BLOCK):
            cnt += (g[jb + l] + nx[jb + l]) < thr
        if cnt:
            for l in range(SCAN_BLOCK):
                v = g[jb + l] + nx[jb + l]
                if v < thr:
                    heap_replace_top(hv, hi, kc, v, j0 + jb + l)
                    thr = <real> hv[0]
    for jb in range(nfull, nb):
        v = g[jb] + nx[jb]
        if v < thr:
            heap_replace_top(hv, hi, kc, v, j0 + jb)
            thr = <real> hv[0]


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
                      Py_ssize_t k, Py_ssize_t kc, double* hv, i64* hi, double delta,
                      Cand* cand, double* ev, real* dist_row, i64* idx_row) noexcept nogil:
    """Exact distances of the kc candidates, sorted; falls back to an exact scan
    when the candidates cannot be proven to contain the true k nearest. Returns
    1 on a fallback."""
    cdef Py_ssize_t c
    cdef bint fallback = False
    for c in range(kc):
        cand[c].d = hv[c]
        cand[c].i = hi[c]
        if hi[c] < 0:
            fallback = True
    if not fallback and kc < n:
        qsort(cand, kc, sizeof(Cand), cand_cmp)
        # Every row outside the heap has v >= cand[kc-1].d; it cannot beat the
        # k-th candidate when that gap exceeds twice the error bound.
        if not (cand[kc - 1].d > cand[k - 1].d + 2 * delta):
            fallback = True
    if fallback:
        exact_scan(q, x, n, d, k, ev, hi)
        for c in range(k):
            cand[c].d = ev[c]
            cand[c].i = hi[c]
        qsort(cand, k, sizeof(Cand), cand_cmp)
    else:
        for c in range(kc):
            cand[c].d = sqdiff(q, x + cand[c].i * d, d)
        qsort(cand, kc, sizeof(Cand), cand_cmp)
    for c in range(k):
        dist_row[c] = <real> cand[c].d
        idx_row[c] = cand[c].i
    return fallback


def knn_fwd(real[:, ::1] dist, i64[:, ::1] idx, const real[:, ::1] qc,
            const real[:, ::1] xc, const real[::1] nq, const real[::1] nx,
            const real[:, ::1] q, const real[:, ::1] x, int k, int kc, int qblock,
            int tblock, double unit, double nx_max,
            real[:, ::1] gbuf, double[:, ::1] hvbuf, i64[:, ::1] hibuf,
            double[:, ::1] evbuf, int nthreads):
    """k nearest rows of ``x`` for every row of ``q`` (sorted, ties by smaller index).

    Per query block (``qblock`` queries, one thread): for each block of
    ``tblock`` rows of x, GEMM into the thread's ``gbuf`` and offer
    ``|xc_j|^2 - 2 qc.xc_j`` to a heap of ``kc`` candidates per query; then
    recompute the candidates' distances exactly (see finish_query).
    ``unit`` is the dtype's unit roundoff, ``nx_max`` max_j |xc_j|^2.
    Per-thread scratch: gbuf (nthreads, qblock*tblock), hvbuf/hibuf
    (nthreads, qblock*kc), evbuf (nthreads, k + kc*3). Returns the number of
    queries that took the exact fallback scan.
    """
    cdef Py_ssize_t nqry = q.shape[0], n = x.shape[0], d = x.shape[1]
    cdef Py_ssize_t nblocks = (nqry + qblock - 1) // qblock
    cdef Py_ssize_t b, q0, nr, r, tb, j0, nb, c, tid
    cdef real* g
    cdef double* hv
    cdef i64* hi
    cdef double delta, nqr
    cdef int fallbacks = 0
    cdef double gamma = 2.0 * (d + 16) * unit
    for b in prange(nblocks, nogil=True, schedule="dynamic", chunksize=1,
                    num_threads=nthreads):
        tid = threadid()
        g = &gbuf[tid, 0]
        hv = &hvbuf[tid, 0]
        hi = &hibuf[tid, 0]
        q0 = b * qblock
        nr = min(qblock, nqry - q0)
        for c in range(nr * kc):
            hv[c] = INFINITY
            hi[c] = -1
        for tb in range((n + tblock - 1) // tblock):
            j0 = tb * tblock
            nb = min(tblock, n - j0)
            gemm_neg2_nt(<int> nr, <int> nb, <int> d, &qc[q0, 0], <int> d, &xc[j0, 0],
                         <int> d, g, <int> tblock)
            for r in range(nr):
                scan_block(g + r * tblock, &nx[j0], nb, j0, hv + r * kc, hi + r * kc, kc)
        for r in range(nr):
            nqr = nq[q0 + r]
            delta = gamma * (nqr + 2 * sqrt(nqr * nx_max) + nx_max)
            fallbacks += finish_query(&q[q0 + r, 0], &x[0, 0], n, d, k, kc,
                                      hv + r * kc, hi + r * kc, delta,
                                      <Cand*> &evbuf[tid, 0], &evbuf[tid, 2 * kc],
                                      &dist[q0 + r, 0], &idx[q0 + r, 0])
    return fallbacks
