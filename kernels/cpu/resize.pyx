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

The horizontal pass picks taps with AVX-512 two-source permutes from a
window of 2 or 4 vectors of source values when the front found one that
holds every block of outputs (``permute_form``), else with gathers.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport SIZE_MAX
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from _types cimport real
from _team cimport fi_team, fi_team_done, fi_team_enter, fi_team_leave, fi_team_plan
from _taps cimport cubic_weights

cdef extern from *:
    """
    #include <math.h>
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
    /* w * v for a tap of weight w, 0 for a tap of weight 0: a zero-weight
       tap (padding, an exact sample position) is not read, so an inf or NaN
       there cannot turn the output into NaN through 0 * inf. */
    #define FI_TAP(W, V) ((W) != 0 ? (W) * (V) : 0)
    /* The same for a gathered tap whose index is always in range (the tap
       tables pad with valid indices): the value is loaded unconditionally and
       only the product is selected, so the compiler can vectorise the loop
       with gathers where it has no permute form (AVX2). */
    static inline float fi_gtap_float(float w, float v) { return w != 0 ? w * v : 0; }
    static inline double fi_gtap_double(double w, double v) { return w != 0 ? w * v : 0; }
    #define FI_GTAP(T, W, V) fi_gtap_##T((W), (V))
    /* acc + w * v for a tap of non-zero weight, acc for a zero-weight tap, with
       one rounding where the build has fused multiply-adds (as the permute
       passes' masked fma) and two where it has not. Written out, not left to
       the compiler's contraction: that fuses the select-and-add of a
       vectorised loop but not of its scalar remainder, so an output's bits
       would depend on where the row's vector tail falls, and a spatially
       chunked resize (shorter rows) would round some outputs differently. */
    #if defined(__FP_FAST_FMAF)
    static inline float fi_gacc_float(float acc, float w, float v) {
        return w != 0 ? fmaf(w, v, acc) : acc;
    }
    #else
    static inline float fi_gacc_float(float acc, float w, float v) {
        return w != 0 ? acc + w * v : acc;
    }
    #endif
    #if defined(__FP_FAST_FMA)
    static inline double fi_gacc_double(double acc, double w, double v) {
        return w != 0 ? fma(w, v, acc) : acc;
    }
    #else
    static inline double fi_gacc_double(double acc, double w, double v) {
        return w != 0 ? acc + w * v : acc;
    }
    #endif
    #define FI_GACC(T, ACC, W, V) fi_gacc_##T((ACC), (W), (V))
    /* Horizontal taps by gathers, any tap count: restrict lets the compiler
       vectorise along x (the destination never overlaps the source row). */
    #define FI_HGATHER(NAME, T)                                                    \
    static FI_NOINLINE void NAME(T* __restrict d, const T* __restrict s,          \
                                 const int* __restrict idx, const T* __restrict w, \
                                 Py_ssize_t K, Py_ssize_t n) {                     \
        for (Py_ssize_t x = 0; x < n; ++x) d[x] = FI_GTAP(T, w[x], s[idx[x]]);         \
        for (Py_ssize_t k = 1; k < K; ++k) {                                       \
            const int* __restrict ik = idx + k * n;                                \
            const T* __restrict wk = w + k * n;                                    \
            for (Py_ssize_t x = 0; x < n; ++x) d[x] = FI_GACC(T, d[x], wk[x], s[ik[x]]); \
        }                                                                          \
    }
    FI_HGATHER(fi_hgather_f, float)
    FI_HGATHER(fi_hgather_d, double)
    /* Two and four taps per output, the common bilinear and bicubic rows. */
    #define FI_HGATHER_K(NAME, T)                                                  \
    static FI_NOINLINE void NAME##2(T* __restrict d, const T* __restrict s,       \
                                    const int* __restrict idx, const T* __restrict w, \
                                    Py_ssize_t n) {                                \
        for (Py_ssize_t x = 0; x < n; ++x)                                         \
            d[x] = FI_GTAP(T, w[x], s[idx[x]]) + FI_GTAP(T, w[n + x], s[idx[n + x]]);      \
    }                                                                              \
    static FI_NOINLINE void NAME##4(T* __restrict d, const T* __restrict s,       \
                                    const int* __restrict idx, const T* __restrict w, \
                                    Py_ssize_t n) {                                \
        for (Py_ssize_t x = 0; x < n; ++x) {                                       \
            T acc = FI_GTAP(T, w[x], s[idx[x]]);                                   \
            acc = FI_GACC(T, acc, w[n + x], s[idx[n + x]]);                        \
            acc = FI_GACC(T, acc, w[2 * n + x], s[idx[2 * n + x]]);                \
            d[x] = FI_GACC(T, acc, w[3 * n + x], s[idx[3 * n + x]]);               \
        }                                                                          \
    }
    FI_HGATHER_K(fi_hgather_f, float)
    FI_HGATHER_K(fi_hgather_d, double)
    """
    void fi_axpy_f(float* d, const float* s, float a, Py_ssize_t n) noexcept nogil
    void fi_axpy_d(double* d, const double* s, double a, Py_ssize_t n) noexcept nogil
    void fi_hgather_f(float* d, const float* s, const int* idx, const float* w,
                      Py_ssize_t K, Py_ssize_t n) noexcept nogil
    void fi_hgather_d(double* d, const double* s, const int* idx, const double* w,
                      Py_ssize_t K, Py_ssize_t n) noexcept nogil
    void fi_hgather_f2(float* d, const float* s, const int* idx, const float* w,
                       Py_ssize_t n) noexcept nogil
    void fi_hgather_d2(double* d, const double* s, const int* idx, const double* w,
                       Py_ssize_t n) noexcept nogil
    void fi_hgather_f4(float* d, const float* s, const int* idx, const float* w,
                       Py_ssize_t n) noexcept nogil
    void fi_hgather_d4(double* d, const double* s, const int* idx, const double* w,
                       Py_ssize_t n) noexcept nogil

cdef extern from *:
    """
    /* Ask for the source rows of the next output row while this one is
       blended: NCHW rows are short (a few KB), too short for the hardware
       stream prefetchers to ramp up on each. */
    static inline void fi_prefetch(const char* p, Py_ssize_t nbytes) {
        for (Py_ssize_t b = 0; b < nbytes; b += 64) __builtin_prefetch(p + b, 0, 3);
    }
    static inline void fi_prefetch_rows(const char* base, Py_ssize_t stride_bytes,
                                        const int* idx, Py_ssize_t K, Py_ssize_t ny,
                                        Py_ssize_t y, Py_ssize_t nbytes) {
        for (Py_ssize_t k = 0; k < K; ++k) {
            const char* row = base + (Py_ssize_t)idx[k * ny + y] * stride_bytes;
            for (Py_ssize_t b = 0; b < nbytes; b += 64) __builtin_prefetch(row + b, 0, 3);
        }
    }
    """
    void fi_prefetch(const char* p, Py_ssize_t nbytes) noexcept nogil
    void fi_prefetch_rows(const char* base, Py_ssize_t stride_bytes, const int* idx,
                          Py_ssize_t K, Py_ssize_t ny, Py_ssize_t y,
                          Py_ssize_t nbytes) noexcept nogil

cdef extern from *:
    """
    /* Horizontal pass by in-register permutes (AVX-512): a block of L outputs
       (L = 16 floats / 8 doubles, the vector lanes) whose taps all lie in a
       window of 2L source values starting at base[b] loads that window once
       (two vectors) and picks every tap with one two-source permute: no
       gathers. rel[k, x] is tap k's index minus its block's base; weights
       w[k, x] as usual. fi_hperm4_* use a window of four vectors: the tap's
       low bits pick within a vector pair by permute, its next bit picks the
       pair by a blend; their blocks hold B outputs (L, or L/2 for the wider
       taps of antialiased 4x downscales). Together they cover upscales and
       downscales by up to 4 (area, antialiasing, the backward of 2x
       upscales). Per-type vector primitives first, then one body per pass. */
    #if defined(__AVX512F__) && defined(__AVX512VL__)
    #include <immintrin.h>
    #define FI_HAVE_PERM 1
    static inline __mmask16 fi_mask_f(Py_ssize_t m) {
        return m >= 16 ? (__mmask16)0xFFFF : m <= 0 ? (__mmask16)0 : (__mmask16)((1u << m) - 1u);
    }
    static inline __mmask8 fi_mask_d(Py_ssize_t m) {
        return m >= 8 ? (__mmask8)0xFF : m <= 0 ? (__mmask8)0 : (__mmask8)((1u << m) - 1u);
    }
    /* the first m lanes of p (zeros beyond), as values / as tap indices */
    static inline __m512 fi_load_f(Py_ssize_t m, const float* p) {
        return _mm512_maskz_loadu_ps(fi_mask_f(m), p);
    }
    static inline __m512d fi_load_d(Py_ssize_t m, const double* p) {
        return _mm512_maskz_loadu_pd(fi_mask_d(m), p);
    }
    static inline __m512i fi_rel_f(Py_ssize_t m, const int* p) {
        return _mm512_maskz_loadu_epi32(fi_mask_f(m), p);
    }
    static inline __m512i fi_rel_d(Py_ssize_t m, const int* p) {
        return _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(fi_mask_d(m), p));
    }
    static inline void fi_store_f(Py_ssize_t m, float* p, __m512 v) {
        _mm512_mask_storeu_ps(p, fi_mask_f(m), v);
    }
    static inline void fi_store_d(Py_ssize_t m, double* p, __m512d v) {
        _mm512_mask_storeu_pd(p, fi_mask_d(m), v);
    }
    #define fi_perm_f _mm512_permutex2var_ps
    #define fi_perm_d _mm512_permutex2var_pd
    /* acc = w * v, then acc += w * v, only in lanes whose weight is non-zero
       (a zero-weight tap is not read: see FI_TAP) */
    #define fi_mul_f(w, v) _mm512_maskz_mul_ps(_mm512_cmpneq_ps_mask(w, _mm512_setzero_ps()), w, v)
    #define fi_mul_d(w, v) _mm512_maskz_mul_pd(_mm512_cmpneq_pd_mask(w, _mm512_setzero_pd()), w, v)
    #define fi_fma_f(w, v, acc) _mm512_mask3_fmadd_ps(w, v, acc, \
                                    _mm512_cmpneq_ps_mask(w, _mm512_setzero_ps()))
    #define fi_fma_d(w, v, acc) _mm512_mask3_fmadd_pd(w, v, acc, \
                                    _mm512_cmpneq_pd_mask(w, _mm512_setzero_pd()))
    /* a tap of a four-vector window: from (v0, v1) or (v2, v3) by the index's bit 2L */
    static inline __m512 fi_pick_f(__m512i r, __m512 v0, __m512 v1, __m512 v2, __m512 v3) {
        return _mm512_mask_blend_ps(_mm512_test_epi32_mask(r, _mm512_set1_epi32(32)),
                                    _mm512_permutex2var_ps(v0, r, v1),
                                    _mm512_permutex2var_ps(v2, r, v3));
    }
    static inline __m512d fi_pick_d(__m512i r, __m512d v0, __m512d v1, __m512d v2, __m512d v3) {
        return _mm512_mask_blend_pd(_mm512_test_epi64_mask(r, _mm512_set1_epi64(16)),
                                    _mm512_permutex2var_pd(v0, r, v1),
                                    _mm512_permutex2var_pd(v2, r, v3));
    }
    #define FI_HPERM(S, T, V, L)                                                         \
    static void fi_hperm_##S(T* dst, const T* src, Py_ssize_t nsrc, const int* base,   \
                             const int* rel, const T* w, Py_ssize_t K, Py_ssize_t n) {  \
        for (Py_ssize_t x0 = 0, b = 0; x0 < n; x0 += L, ++b) {                         \
            Py_ssize_t cnt = n - x0, avail = nsrc - base[b];                           \
            const T* s = src + base[b];                                                \
            V lo = fi_load_##S(avail, s), hi = fi_load_##S(avail - L, s + L);           \
            V acc = fi_mul_##S(fi_load_##S(cnt, w + x0),                               \
                               fi_perm_##S(lo, fi_rel_##S(cnt, rel + x0), hi));         \
            for (Py_ssize_t k = 1; k < K; ++k)                                         \
                acc = fi_fma_##S(fi_load_##S(cnt, w + k * n + x0),                     \
                                 fi_perm_##S(lo, fi_rel_##S(cnt, rel + k * n + x0), hi), acc); \
            fi_store_##S(cnt, dst + x0, acc);                                          \
        }                                                                              \
    }
    #define FI_HPERM4(S, T, V, L)                                                        \
    static void fi_hperm4_##S(T* dst, const T* src, Py_ssize_t nsrc, const int* base,  \
                              const int* rel, const T* w, Py_ssize_t K, Py_ssize_t n,  \
                              Py_ssize_t B) {                                          \
        for (Py_ssize_t x0 = 0, b = 0; x0 < n; x0 += B, ++b) {                         \
            Py_ssize_t cnt = n - x0 < B ? n - x0 : B, avail = nsrc - base[b];          \
            const T* s = src + base[b];                                                \
            V v0 = fi_load_##S(avail, s), v1 = fi_load_##S(avail - L, s + L);           \
            V v2 = fi_load_##S(avail - 2 * L, s + 2 * L);                              \
            V v3 = fi_load_##S(avail - 3 * L, s + 3 * L);                              \
            V acc = fi_mul_##S(fi_load_##S(cnt, w + x0),                               \
                               fi_pick_##S(fi_rel_##S(cnt, rel + x0), v0, v1, v2, v3)); \
            for (Py_ssize_t k = 1; k < K; ++k)                                         \
                acc = fi_fma_##S(fi_load_##S(cnt, w + k * n + x0),                     \
                                 fi_pick_##S(fi_rel_##S(cnt, rel + k * n + x0),        \
                                             v0, v1, v2, v3), acc);                    \
            fi_store_##S(cnt, dst + x0, acc);                                          \
        }                                                                              \
    }
    FI_HPERM(f, float, __m512, 16)
    FI_HPERM(d, double, __m512d, 8)
    FI_HPERM4(f, float, __m512, 16)
    FI_HPERM4(d, double, __m512d, 8)
    #else
    #define FI_HAVE_PERM 0
    static void fi_hperm_f(float* dst, const float* src, Py_ssize_t nsrc, const int* base,
                           const int* rel, const float* w, Py_ssize_t K, Py_ssize_t n) {}
    static void fi_hperm_d(double* dst, const double* src, Py_ssize_t nsrc, const int* base,
                           const int* rel, const double* w, Py_ssize_t K, Py_ssize_t n) {}
    static void fi_hperm4_f(float* dst, const float* src, Py_ssize_t nsrc, const int* base,
                            const int* rel, const float* w, Py_ssize_t K, Py_ssize_t n,
                            Py_ssize_t B) {}
    static void fi_hperm4_d(double* dst, const double* src, Py_ssize_t nsrc, const int* base,
                            const int* rel, const double* w, Py_ssize_t K, Py_ssize_t n,
                            Py_ssize_t B) {}
    #endif
    """
    int FI_HAVE_PERM
    void fi_hperm_f(float* dst, const float* src, Py_ssize_t nsrc, const int* base,
                    const int* rel, const float* w, Py_ssize_t K, Py_ssize_t n) noexcept nogil
    void fi_hperm_d(double* dst, const double* src, Py_ssize_t nsrc, const int* base,
                    const int* rel, const double* w, Py_ssize_t K, Py_ssize_t n) noexcept nogil
    void fi_hperm4_f(float* dst, const float* src, Py_ssize_t nsrc, const int* base,
                     const int* rel, const float* w, Py_ssize_t K, Py_ssize_t n,
                     Py_ssize_t B) noexcept nogil
    void fi_hperm4_d(double* dst, const double* src, Py_ssize_t nsrc, const int* base,
                     const int* rel, const double* w, Py_ssize_t K, Py_ssize_t n,
                     Py_ssize_t B) noexcept nogil

# Whether this build has the permute-based horizontal pass, and its vector
# lanes per dtype (outputs per full block; windows are 2 or 4 vectors).
HAVE_PERM = bool(FI_HAVE_PERM)
PERM_BLOCK = {"float32": 16, "float64": 8}


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
# V-first passes prefetch the source rows of the output row this far ahead.
cdef Py_ssize_t PREFETCH_AHEAD = 1


cdef struct HTable:
    # one horizontal tap table, as the row passes read it
    const int* idx
    const void* w
    Py_ssize_t K
    Py_ssize_t n
    bint unit
    const int* pbase   # NULL unless the permute form applies
    const int* prel
    Py_ssize_t pblock  # 0: window of 2 vectors; else 4 vectors, this many outputs per block


cdef inline void hrow(real* dst, const real* src, Py_ssize_t nsrc, const HTable* t,
                      Py_ssize_t C) noexcept nogil:
    """Resample one row horizontally (``nsrc`` source values) with table ``t``."""
    if t.pbase != NULL and C == 1:
        if real is float:
            if t.pblock:
                fi_hperm4_f(dst, src, nsrc, t.pbase, t.prel, <const float*> t.w, t.K, t.n,
                            t.pblock)
            else:
                fi_hperm_f(dst, src, nsrc, t.pbase, t.prel, <const float*> t.w, t.K, t.n)
        elif t.pblock:
            fi_hperm4_d(dst, src, nsrc, t.pbase, t.prel, <const double*> t.w, t.K, t.n,
                        t.pblock)
        else:
            fi_hperm_d(dst, src, nsrc, t.pbase, t.prel, <const double*> t.w, t.K, t.n)
        return
    hpass(dst, src, t.idx, <const real*> t.w, t.K, t.n, C, t.unit)


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
            if real is float:
                fi_hgather_f2(dst, src, idx, w, n)
            else:
                fi_hgather_d2(dst, src, idx, w, n)
        elif K == 4:
            if real is float:
                fi_hgather_f4(dst, src, idx, w, n)
            else:
                fi_hgather_d4(dst, src, idx, w, n)
        elif real is float:
            fi_hgather_f(dst, src, idx, w, K, n)
        else:
            fi_hgather_d(dst, src, idx, w, K, n)
        return
    for x in range(n):
        d = dst + x * C
        s = src + idx[x] * C
        if unit:
            for c in range(C):
                d[c] = s[c]
            continue
        for c in range(C):
            d[c] = 0
        for k in range(K):
            a = w[k * n + x]
            if a == 0:   # not read (see FI_TAP)
                continue
            s = src + idx[k * n + x] * C
            for c in range(C):
                d[c] += a * s[c]


cdef inline void vpass(real* dst, const real* base, Py_ssize_t stride,
                       const int* idx, const real* w, Py_ssize_t K, Py_ssize_t ny,
                       Py_ssize_t y, Py_ssize_t lo, Py_ssize_t L, bint unit) noexcept nogil:
    """Vertical blend for output row y: dst[j] = sum_k w[k, y] * row(idx[k, y] - lo)[j].

    Rows live at ``base + r * stride``; ``ny`` is the table's output count.
    """
    cdef Py_ssize_t j, k, nonzero = 0
    cdef const real* r0 = base + (idx[y] - lo) * stride
    cdef const real* r1
    cdef const real* r2
    cdef const real* r3
    cdef real w0, w1, w2, w3, a
    cdef bint first = True
    if unit:
        memcpy(dst, r0, L * sizeof(real))
        return
    for k in range(K):
        nonzero += w[k * ny + y] != 0
    if nonzero < K:
        # some taps have weight 0: blend only the others, so that an inf or
        # NaN row that this output does not use cannot reach it (0 * inf)
        for k in range(K):
            a = w[k * ny + y]
            if a == 0:
                continue
            r0 = base + (idx[k * ny + y] - lo) * stride
            if first:
                for j in range(L):
                    dst[j] = a * r0[j]
                first = False
            else:
                axpy(dst, r0, a, L)
        if first:
            memset(dst, 0, L * sizeof(real))
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


def cubic_coefficients(const real[::1] t, real[:, ::1] out):
    """out[k, i]: the Keys cubic weight (A = -0.75) of tap k - 1 at fraction t[i].

    The bicubic tap tables take their weights from here, so resize shares
    grid_sample's cubic arithmetic (``_taps.cubic_weights``).
    """
    cdef Py_ssize_t i, k
    cdef real w[4]
    for i in range(t.shape[0]):
        cubic_weights(t[i], w)
        for k in range(4):
            out[k, i] = w[k]


def cache_rows(const int[:, ::1] yidx):
    """Rows the H-first row cache needs per thread: the widest block's source span."""
    cdef Py_ssize_t ny = yidx.shape[1], K = yidx.shape[0]
    cdef Py_ssize_t y0, lo, hi, most = 1
    for y0 in range(0, ny, ROW_BLOCK):
        row_range(&yidx[0, 0], K, ny, y0, min(ny, y0 + ROW_BLOCK), &lo, &hi)
        most = max(most, hi - lo)
    return most


def separable_fwd(real[:, :, :] out, const real[:, :, :] x,
                  const int[:, ::1] yidx, const real[:, ::1] yw, bint yunit,
                  const int[:, ::1] xidx, const real[:, ::1] xw, bint xunit,
                  const int[::1] xbase, const int[:, ::1] xrel, Py_ssize_t xblock,
                  Py_ssize_t channels, int order, int nthreads):
    """out[p] = A_y @ x[p] @ A_x.T for every plane p (see the module docstring).

    ``out`` is (P, H_out, W_out*C), ``x`` is (P, H_in, W_in*C), each contiguous
    along its rows only (views of larger arrays are read and written in place,
    as a chunk of a tiled image is); the y table
    is (Ky, H_out), the x table (Kx, W_out); ``*unit`` marks a one-tap table
    whose weights are all exactly 1 (a pure gather: nearest modes).
    ``xbase``/``xrel`` are the x table's permute form (see HAVE_PERM), or
    empty arrays when it has none; ``xblock`` is 0 for its 2-vector window,
    else the outputs per block of its 4-vector window.
    """
    cdef Py_ssize_t P = out.shape[0], Ho = out.shape[1], Lo = out.shape[2]
    cdef Py_ssize_t Hi = x.shape[1], Li = x.shape[2]
    cdef Py_ssize_t pitch = x.strides[1] // <Py_ssize_t> sizeof(real)   # x's row stride
    cdef Py_ssize_t Ky = yidx.shape[0], Kx = xidx.shape[0], Wo = xidx.shape[1]
    cdef Py_ssize_t nblocks = (Ho + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t njobs = P * nblocks
    cdef Py_ssize_t C = channels
    cdef Py_ssize_t crows = 1, scratch, nteam, tid
    cdef Py_ssize_t job, p, y0, y1, y, r, lo, hi, k
    cdef real* bufs = NULL
    cdef unsigned char* dones = NULL
    cdef real* buf
    cdef unsigned char* done
    cdef const real* plane
    cdef const int* yi
    cdef const real* ywp
    cdef const int* xi
    cdef const real* xwp
    cdef bint ycopy = yunit and Ky == 1
    cdef HTable ht
    _check_args(out, x, yidx, yw, xidx, xw, xbase, xrel, xblock, channels, order)
    if P == 0 or Ho == 0 or Lo == 0:
        return
    if real is float and max(Ky, Kx) > WIDE_TAPS:
        _separable_wide(out, x, yidx, yw, yunit, xidx, xw, xunit, channels, order, nthreads)
        return
    yi = &yidx[0, 0]
    ywp = &yw[0, 0]
    xi = &xidx[0, 0]
    xwp = &xw[0, 0]
    ht.idx = xi
    ht.w = <const void*> xwp
    ht.K = Kx
    ht.n = Wo
    ht.unit = xunit
    ht.pbase = NULL
    ht.prel = NULL
    ht.pblock = xblock
    if xbase.shape[0] > 0 and FI_HAVE_PERM:
        ht.pbase = &xbase[0]
        ht.prel = &xrel[0, 0]
    if order == ORDER_H_FIRST:
        crows = cache_rows(yidx)
        scratch = crows * Lo
    else:
        scratch = Li
    nteam = max(1, min(nthreads, njobs))
    # Every thread's scratch is allocated before any output is written, so a
    # failed allocation raises MemoryError with ``out`` untouched.
    if (<size_t> scratch + 1) > SIZE_MAX // sizeof(real) // <size_t> nteam:
        raise MemoryError("resize: the per-thread scratch rows do not fit in memory.")
    bufs = <real*> malloc((scratch + 1) * sizeof(real) * nteam)
    dones = <unsigned char*> malloc((crows + 1) * nteam)
    if bufs == NULL or dones == NULL:
        free(bufs)
        free(dones)
        raise MemoryError("resize: could not allocate the per-thread scratch rows "
                          f"({nteam} x {(scratch + 1) * sizeof(real)} bytes).")
    cdef fi_team team
    try:
        nteam = fi_team_plan(&team, nteam)   # see _team.h: placement, stalled teams
        with nogil, parallel(num_threads=nteam):
            fi_team_enter(&team)
            tid = threadid()
            buf = bufs + tid * (scratch + 1)
            done = dones + tid * (crows + 1)
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
                                if r + 1 < Hi:
                                    fi_prefetch(<const char*> (plane + (r + 1) * pitch),
                                                Li * sizeof(real))
                                hrow(buf + (r - lo) * Lo, plane + r * pitch, Li, &ht, C)
                                done[r - lo] = 1
                        vpass(&out[p, y, 0], buf, Lo, yi, ywp, Ky, Ho, y, lo, Lo, ycopy)
                else:
                    for y in range(y0, y1):
                        if ycopy:
                            hrow(&out[p, y, 0], plane + yi[y] * pitch, Li, &ht, C)
                        else:
                            if y + PREFETCH_AHEAD < Ho:
                                fi_prefetch_rows(<const char*> plane, pitch * sizeof(real), yi,
                                                 Ky, Ho, y + PREFETCH_AHEAD, Li * sizeof(real))
                            vpass(buf, plane, pitch, yi, ywp, Ky, Ho, y, 0, Li, False)
                            hrow(&out[p, y, 0], buf, Li, &ht, C)
            fi_team_leave(&team)
        fi_team_done(&team)
    finally:
        free(bufs)
        free(dones)


# float32 tables of more taps than this run in float64: a float32 sum of K taps
# drifts by up to ~K/2 ulps (a constant 200 pooled over 1000 x 1000 would give
# 199.997), a float64 one rounds once, on the way out.
WIDE_TAPS = 16
# planes converted to float64 at a time (input and output), to bound the copies
_WIDE_GROUP_BYTES = 1 << 24


def _separable_wide(float[:, :, :] out, const float[:, :, :] x,
                    const int[:, ::1] yidx, const float[:, ::1] yw, bint yunit,
                    const int[:, ::1] xidx, const float[:, ::1] xw, bint xunit,
                    Py_ssize_t channels, int order, int nthreads):
    """:func:`separable_fwd` of float32 planes through the float64 passes; each output
    is the float64 result rounded to float32."""
    import numpy as np
    outs = np.asarray(out)
    for p0, p1, out64 in _float64_groups(x, out.shape, yidx, yw, yunit, xidx, xw, xunit,
                                         channels, order, nthreads):
        outs[p0:p1] = out64


def _float64_groups(x, out_shape, yidx, yw, bint yunit, xidx, xw, bint xunit,
                    Py_ssize_t channels, int order, int nthreads):
    """Yield ``(p0, p1, out64)``: planes [p0, p1) of ``x`` resampled by the float64
    kernel with float64 copies of the tables, a group of planes at a time (at most
    about _WIDE_GROUP_BYTES of float64 copies)."""
    import numpy as np
    f64 = np.float64
    yw64, xw64 = np.asarray(yw, dtype=f64), np.asarray(xw, dtype=f64)
    no_base, no_rel = np.zeros(0, np.int32), np.zeros((1, 1), np.int32)
    xs = np.asarray(x)
    P, Ho, Lo = out_shape[0], out_shape[1], out_shape[2]
    per_plane = 8 * (xs.shape[1] * xs.shape[2] + Ho * Lo)
    group = max(1, _WIDE_GROUP_BYTES // max(1, per_plane))
    for p0 in range(0, P, group):
        p1 = min(P, p0 + group)
        out64 = np.empty((p1 - p0, Ho, Lo), f64)
        separable_fwd(out64, xs[p0:p1].astype(f64), yidx, yw64, yunit, xidx, xw64,
                      xunit, no_base, no_rel, 0, channels, order, nthreads)
        yield p0, p1, out64


cdef bint _indices_within(const int[:, ::1] idx, Py_ssize_t n) noexcept nogil:
    """Every entry of idx lies in [0, n)."""
    cdef Py_ssize_t m = idx.shape[0] * idx.shape[1]
    return m == 0 or _within(&idx[0, 0], m, n)


cdef bint _within(const int* p, Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    """Every one of the m ints at p lies in [0, n)."""
    cdef Py_ssize_t i
    cdef bint ok = True
    for i in range(m):
        ok &= (p[i] >= 0) & (p[i] < n)
    return ok


def _check_args(out, x, const int[:, ::1] yidx, yw, const int[:, ::1] xidx, xw,
                const int[::1] xbase, const int[:, ::1] xrel, Py_ssize_t xblock,
                Py_ssize_t channels, int order):
    """Refuse arguments that would make separable_fwd read or write out of bounds.

    The front always passes consistent ones; this guards direct callers.
    """
    cdef Py_ssize_t P = out.shape[0], Ho = out.shape[1], Lo = out.shape[2]
    cdef Py_ssize_t Hi = x.shape[1], Li = x.shape[2], Wo = xidx.shape[1], B
    op = "resize.separable_fwd"
    if channels < 1 or x.shape[0] != P:
        raise ValueError(f"{op}: need channels >= 1 and as many planes in x as in out; got "
                         f"channels={channels}, x {tuple(x.shape[:3])}, "
                         f"out {tuple(out.shape[:3])}.")
    if order not in (ORDER_V_FIRST, ORDER_H_FIRST):
        raise ValueError(f"{op}: order must be 0 or 1; got {order}.")
    for name, a in (("out", out), ("x", x)):
        if a.strides[2] != a.itemsize or a.strides[1] % a.itemsize or a.strides[0] % a.itemsize:
            raise ValueError(f"{op}: {name} must be contiguous along its rows, its rows and "
                             f"planes on element boundaries; got strides {tuple(a.strides[:3])}.")
    ys, xs = (yidx.shape[0], yidx.shape[1]), (xidx.shape[0], xidx.shape[1])
    if (ys[0] < 1 or xs[0] < 1 or tuple(yw.shape[:2]) != ys or tuple(xw.shape[:2]) != xs
            or ys[1] != Ho or Wo * channels != Lo):
        raise ValueError(f"{op}: tap tables (K, n_out) must match out {tuple(out.shape[:3])} "
                         f"with channels={channels}; got y {ys}/{tuple(yw.shape[:2])}, "
                         f"x {xs}/{tuple(xw.shape[:2])}.")
    if Li % channels or not _indices_within(yidx, Hi) or \
            not _indices_within(xidx, Li // channels):
        raise ValueError(f"{op}: tap indices must lie inside x {tuple(x.shape[:3])} "
                         f"(channels={channels}).")
    if xbase.shape[0] > 0:
        _check_perm(op, xs, xbase, xrel, xblock, 16 if yw.itemsize == 4 else 8, Li)


def _check_perm(op, xs, const int[::1] xbase, const int[:, ::1] xrel, Py_ssize_t xblock,
                Py_ssize_t B, Py_ssize_t Li):
    """Refuse a permute form (blocks of B lanes) that does not fit the x table ``xs``."""
    if xblock not in (0, B, B // 2):
        raise ValueError(f"{op}: xblock must be 0, {B} or {B // 2}; got {xblock}.")
    if xblock:
        B = xblock
    if ((xrel.shape[0], xrel.shape[1]) != xs or xbase.shape[0] < (xs[1] + B - 1) // B
            or not _within(&xbase[0], xbase.shape[0], Li)):
        raise ValueError(f"{op}: the permute form must be (blocks,) and (K, n_out); got "
                         f"{xbase.shape[0]} blocks and {(xrel.shape[0], xrel.shape[1])}.")


# --------------------------------------------------------------------------- uint8 images

cdef extern from *:
    """
    /* uint8 images: rows are read as bytes and written as bytes; in between,
       each pass works in float32 (rounded half to even and saturated on
       output) or in int32 fixed point (weights scaled by 2^bits, each pass
       adding half of 2^shift and shifting right: floor(v + 0.5), the rule
       of OpenCV's and Pillow's integer paths). Horizontal first, as both
       libraries do: each needed source row is resampled once into a
       per-thread row cache, then cached rows are blended vertically. */
    #include <stdint.h>
    #include <math.h>
    #include "_u8simd.h"
    /* The source row is first widened to 4-byte values in ``wide`` (one
       contiguous, vectorised pass), so that the tap loops below read 32-bit
       lanes, which the compiler turns into vector gathers (bytes cannot be
       gathered). */
    static FI_NOINLINE void fi_u8_hrow_f(float* __restrict d, const unsigned char* __restrict s0,
                                         const int* __restrict idx, const float* __restrict w,
                                         Py_ssize_t K, Py_ssize_t n, float* __restrict s,
                                         Py_ssize_t ns) {
        for (Py_ssize_t i = 0; i < ns; ++i) s[i] = (float)s0[i];
        if (K == 2) {
            for (Py_ssize_t x = 0; x < n; ++x)
                d[x] = w[x] * s[idx[x]] + w[n + x] * s[idx[n + x]];
            return;
        }
        for (Py_ssize_t x = 0; x < n; ++x) d[x] = w[x] * s[idx[x]];
        for (Py_ssize_t k = 1; k < K; ++k) {
            const int* __restrict ik = idx + k * n;
            const float* __restrict wk = w + k * n;
            for (Py_ssize_t x = 0; x < n; ++x) d[x] += wk[x] * s[ik[x]];
        }
    }
    /* The same pass by in-register permutes (fi_hperm_f / fi_hperm4_f) of the
       widened row, for a table in the permute form: its taps are applied as
       mul, then fma per further tap; a two-tap table comes with its taps
       swapped, so that this is fma(w0, s0, w1 * s1), the contraction the
       compiler makes of fi_u8_hrow_f's two-tap sum in the builds that have
       the permutes (the same bits as that loop). */
    static FI_NOINLINE void fi_u8_hperm_f(float* __restrict d, const unsigned char* __restrict s0,
                                          const int* base, const int* rel, const float* w,
                                          Py_ssize_t K, Py_ssize_t n, Py_ssize_t block,
                                          float* __restrict s, Py_ssize_t ns) {
        for (Py_ssize_t i = 0; i < ns; ++i) s[i] = (float)s0[i];
        if (block) fi_hperm4_f(d, s, ns, base, rel, w, K, n, block);
        else fi_hperm_f(d, s, ns, base, rel, w, K, n);
    }
    static FI_NOINLINE void fi_u8_hrow_i(int32_t* __restrict d, const unsigned char* __restrict s0,
                                         const int* __restrict idx, const int32_t* __restrict w,
                                         Py_ssize_t K, Py_ssize_t n, int shift,
                                         int32_t* __restrict s, Py_ssize_t ns) {
        for (Py_ssize_t i = 0; i < ns; ++i) s[i] = (int32_t)s0[i];
        if (K == 2) {
            for (Py_ssize_t x = 0; x < n; ++x)
                d[x] = w[x] * s[idx[x]] + w[n + x] * s[idx[n + x]];
        } else {
            for (Py_ssize_t x = 0; x < n; ++x) d[x] = w[x] * s[idx[x]];
            for (Py_ssize_t k = 1; k < K; ++k) {
                const int* __restrict ik = idx + k * n;
                const int32_t* __restrict wk = w + k * n;
                for (Py_ssize_t x = 0; x < n; ++x) d[x] += wk[x] * s[ik[x]];
            }
        }
        if (shift > 0) {   /* a rounded uint8 intermediate (Pillow's two passes) */
            const int32_t half = (int32_t)1 << (shift - 1);
            for (Py_ssize_t x = 0; x < n; ++x) {
                int32_t v = (d[x] + half) >> shift;
                d[x] = v < 0 ? 0 : (v > 255 ? 255 : v);
            }
        }
    }
    static inline unsigned char fi_u8_round_f(float v) {
        v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
        return (unsigned char)(int)rintf(v);   /* half to even (default rounding mode) */
    }
    static inline unsigned char fi_u8_round_i(int32_t v, int32_t half, int shift) {
        v = (v + half) >> shift;
        return (unsigned char)(v < 0 ? 0 : (v > 255 ? 255 : v));
    }
    /* out[j] = round(sum_k w[k] * rows[k][j]): rows[k] = cache + off[k] */
    static FI_NOINLINE void fi_u8_vrow_f(unsigned char* __restrict out, const float* cache,
                                         const Py_ssize_t* off, const float* w, Py_ssize_t K,
                                         Py_ssize_t L, float* __restrict tmp) {
        /* whole vectors first (_u8simd.h: the same operations), then the rest */
        const Py_ssize_t j0 = fi_u8_vrow_f_vec(out, cache, off, w, K, L);
        const float* r0 = cache + off[0];
        if (K == 1) {
            const float a = w[0];
            for (Py_ssize_t j = j0; j < L; ++j) out[j] = fi_u8_round_f(a * r0[j]);
            return;
        }
        const float* r1 = cache + off[1];
        const float a = w[0], b = w[1];
        if (K == 2) {
            for (Py_ssize_t j = j0; j < L; ++j) out[j] = fi_u8_round_f(a * r0[j] + b * r1[j]);
            return;
        }
        for (Py_ssize_t j = j0; j < L; ++j) tmp[j] = a * r0[j] + b * r1[j];
        for (Py_ssize_t k = 2; k < K; ++k) {
            const float* __restrict rk = cache + off[k];
            const float c = w[k];
            for (Py_ssize_t j = j0; j < L; ++j) tmp[j] += c * rk[j];
        }
        for (Py_ssize_t j = j0; j < L; ++j) out[j] = fi_u8_round_f(tmp[j]);
    }
    static FI_NOINLINE void fi_u8_vrow_i(unsigned char* __restrict out, const int32_t* cache,
                                         const Py_ssize_t* off, const int32_t* w, Py_ssize_t K,
                                         Py_ssize_t L, int32_t* __restrict tmp, int shift,
                                         int cv16) {
        const int32_t half = shift > 0 ? (int32_t)1 << (shift - 1) : 0;
        const int32_t* r0 = cache + off[0];
        const int32_t a = w[0];
        if (K == 2 && cv16) {
            /* OpenCV's vector vertical linear pass (VResizeLinearVec_32s8u):
               rows of int16 values h >> 4 (fi_u8_narrow4), see _u8simd.h */
            fi_u8_vlinear_cv(out, (const int16_t*)r0, (const int16_t*)(cache + off[1]),
                             a, w[1], L);
            return;
        }
        const Py_ssize_t j0 = fi_u8_vrow_i_vec(out, cache, off, w, K, L, shift);   /* _u8simd.h */
        if (K == 1) {
            for (Py_ssize_t j = j0; j < L; ++j) out[j] = fi_u8_round_i(a * r0[j], half, shift);
            return;
        }
        const int32_t* r1 = cache + off[1];
        const int32_t b = w[1];
        if (K == 2) {
            for (Py_ssize_t j = j0; j < L; ++j)
                out[j] = fi_u8_round_i(a * r0[j] + b * r1[j], half, shift);
            return;
        }
        for (Py_ssize_t j = j0; j < L; ++j) tmp[j] = a * r0[j] + b * r1[j];
        for (Py_ssize_t k = 2; k < K; ++k) {
            const int32_t* __restrict rk = cache + off[k];
            const int32_t c = w[k];
            for (Py_ssize_t j = j0; j < L; ++j) tmp[j] += c * rk[j];
        }
        for (Py_ssize_t j = j0; j < L; ++j) out[j] = fi_u8_round_i(tmp[j], half, shift);
    }
    /* Vertical-first fixed point (Pillow when the height shrinks and the
       width grows): d[j] = clip((sum_k w[k] * rows[k][j] + half) >> shift) */
    static FI_NOINLINE void fi_u8_vfirst_i(int32_t* __restrict d, const unsigned char* plane,
                                           Py_ssize_t stride, const int* rows, const int32_t* w,
                                           Py_ssize_t K, Py_ssize_t L, int shift) {
        const int32_t half = shift > 0 ? (int32_t)1 << (shift - 1) : 0;
        const unsigned char* __restrict r0 = plane + rows[0] * stride;
        const int32_t a = w[0];
        for (Py_ssize_t j = 0; j < L; ++j) d[j] = a * (int32_t)r0[j];
        for (Py_ssize_t k = 1; k < K; ++k) {
            const unsigned char* __restrict rk = plane + rows[k] * stride;
            const int32_t c = w[k];
            for (Py_ssize_t j = 0; j < L; ++j) d[j] += c * (int32_t)rk[j];
        }
        for (Py_ssize_t j = 0; j < L; ++j) {
            int32_t v = (d[j] + half) >> shift;
            d[j] = v < 0 ? 0 : (v > 255 ? 255 : v);
        }
    }
    /* then out[x] = clip((sum_k w[k, x] * s[idx[k, x]] + half) >> shift) */
    static FI_NOINLINE void fi_u8_hlast_i(unsigned char* __restrict out, const int32_t* __restrict s,
                                          const int* __restrict idx, const int32_t* __restrict w,
                                          Py_ssize_t K, Py_ssize_t n, int shift) {
        const int32_t half = shift > 0 ? (int32_t)1 << (shift - 1) : 0;
        for (Py_ssize_t x = 0; x < n; ++x) {
            int32_t acc = 0;
            for (Py_ssize_t k = 0; k < K; ++k) acc += w[k * n + x] * s[idx[k * n + x]];
            out[x] = fi_u8_round_i(acc, half, shift);
        }
    }
    """
    void fi_u8_vfirst_i(int* d, const unsigned char* plane, Py_ssize_t stride, const int* rows,
                        const int* w, Py_ssize_t K, Py_ssize_t L, int shift) noexcept nogil
    void fi_u8_hlast_i(unsigned char* out, const int* s, const int* idx, const int* w,
                       Py_ssize_t K, Py_ssize_t n, int shift) noexcept nogil
    void fi_u8_hrow_f(float* d, const unsigned char* s, const int* idx, const float* w,
                      Py_ssize_t K, Py_ssize_t n, float* wide, Py_ssize_t ns) noexcept nogil
    void fi_u8_hperm_f(float* d, const unsigned char* s, const int* base, const int* rel,
                       const float* w, Py_ssize_t K, Py_ssize_t n, Py_ssize_t block,
                       float* wide, Py_ssize_t ns) noexcept nogil
    void fi_u8_hrow_i(int* d, const unsigned char* s, const int* idx, const int* w,
                      Py_ssize_t K, Py_ssize_t n, int shift, int* wide,
                      Py_ssize_t ns) noexcept nogil
    void fi_u8_vrow_f(unsigned char* out, const float* cache, const Py_ssize_t* off,
                      const float* w, Py_ssize_t K, Py_ssize_t L, float* tmp) noexcept nogil
    void fi_u8_vrow_i(unsigned char* out, const int* cache, const Py_ssize_t* off,
                      const int* w, Py_ssize_t K, Py_ssize_t L, int* tmp,
                      int shift, int cv16) noexcept nogil
    void fi_u8_narrow4(short* d16, const int* d, Py_ssize_t n) noexcept nogil

cdef extern from "_u8simd.h":
    int FI_U8_HAVE_PAIRS
    int FI_U8_BLOCK
    int FI_U8_WINDOW
    int fi_u8_hlast_pairs(unsigned char* out, const int* row, unsigned char* bytes, int* tmp,
                          Py_ssize_t Li, const int* base, const short* rel, const short* wlo,
                          const short* whi, Py_ssize_t P, Py_ssize_t Lo, int shift,
                          int span) noexcept nogil
    int fi_u8_hpairs(int* d, const unsigned char* s, Py_ssize_t ns, const int* base,
                     const short* rel, const short* wlo, const short* whi, Py_ssize_t P,
                     Py_ssize_t n, int shift, int narrow, int span) noexcept nogil

# Whether this build has the 16-bit multiply-add horizontal pass of int32
# tables (the pair form built by fastinterp.resize), its block and window.
HAVE_U8_PAIRS = bool(FI_U8_HAVE_PAIRS)
U8_PAIR_BLOCK = FI_U8_BLOCK
U8_PAIR_WINDOW = FI_U8_WINDOW

ctypedef fused u8weight:
    float
    int



def separable_u8(unsigned char[:, :, ::1] out, const unsigned char[:, :, ::1] x,
                 const int[:, ::1] yidx, const u8weight[:, ::1] yw,
                 const int[:, ::1] xidx, const u8weight[:, ::1] xw,
                 int hshift, int vshift, int nthreads, bint vfirst=False,
                 bint opencv_linear=False, const int[::1] xbase=None,
                 const short[::1] xrel=None, const short[::1] xwlo=None,
                 const short[::1] xwhi=None, const int[::1] xpbase=None,
                 const int[:, ::1] xprel=None, Py_ssize_t xpblock=0):
    """out[p] = round(A_y @ x[p] @ A_x.T) for uint8 planes, horizontal pass first.

    ``out`` is (P, H_out, L_out) and ``x`` (P, H_in, L_in) with one x-table
    column per output value (channels already expanded: value ``j`` reads
    ``x[.., idx[k, j]]``). float32 weights: float32 sums, each output rounded
    half to even and saturated to [0, 255] (``hshift``/``vshift`` ignored).
    int32 weights: fixed point; the horizontal pass keeps its sums
    (``hshift == 0``) or rounds them to a saturated uint8 value by
    ``(v + 2^(hshift-1)) >> hshift``; the vertical pass writes
    ``clip((v + 2^(vshift-1)) >> vshift)``. ``vfirst`` (int32 weights only)
    runs the vertical pass first, rounding its rows to uint8 by ``vshift``,
    then the horizontal pass by ``hshift`` (Pillow's order when the height
    shrinks and the width grows). ``opencv_linear`` (int32 two-tap y table)
    rounds each row as OpenCV's SIMD loop does (from horizontal sums kept as
    int16 values ``h >> 4``, as that loop reads them).
    ``xbase``, ``xrel``, ``xwlo`` and optionally ``xwhi`` (int32 weights only,
    builds with ``HAVE_U8_PAIRS``) give the x table in the pair form of
    _u8simd.h for the horizontal pass (either order): the same sums by
    16-bit multiply-adds. ``xpbase``, ``xprel``, ``xpblock`` (float32 weights only,
    builds with ``HAVE_PERM``) give its permute form (see separable_fwd)
    for the horizontal-first pass by permutes.
    """
    cdef Py_ssize_t P = out.shape[0], Ho = out.shape[1], Lo = out.shape[2]
    cdef Py_ssize_t Hi = x.shape[1], Li = x.shape[2]
    cdef Py_ssize_t Ky = yidx.shape[0], Kx = xidx.shape[0]
    cdef Py_ssize_t nblocks = (Ho + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t njobs = P * nblocks
    cdef int cv16 = opencv_linear and Ky == 2
    cdef Py_ssize_t crows, per, head, nteam, tid, job, p, y0, y1, y, r, lo, hi, k
    cdef char* bufs = NULL
    cdef char* buf
    cdef u8weight* cache
    cdef u8weight* wrow = NULL
    cdef u8weight* wide
    cdef u8weight* tmp
    cdef Py_ssize_t* off
    cdef unsigned char* done
    cdef const unsigned char* plane
    cdef const int* yi
    cdef const int* xi
    cdef const u8weight* ywp
    cdef const u8weight* xwp
    cdef const int* pbase = NULL
    cdef const short* prel = NULL
    cdef const short* pwlo = NULL
    cdef const short* pwhi = NULL
    cdef Py_ssize_t npairs = 0
    cdef int span = 0
    _check_u8_args(out, x, yidx, yw, xidx, xw, hshift, vshift)
    cdef const int* fpbase = NULL
    cdef const int* fprel = NULL
    npairs = _check_u8_pairs(out, x, xbase, xrel, xwlo, xwhi)
    if xpbase is not None and xpbase.shape[0] > 0 and FI_HAVE_PERM:
        _check_perm("resize.separable_u8", (xidx.shape[0], xidx.shape[1]), xpbase, xprel,
                    xpblock, 16, Li)
        if u8weight is float:
            fpbase = &xpbase[0]
            fprel = &xprel[0, 0]
    if npairs and u8weight is int:
        pbase = &xbase[0]
        prel = &xrel[0]
        pwlo = &xwlo[0]
        pwhi = &xwhi[0] if xwhi is not None and xwhi.shape[0] > 0 else NULL
        span = _pair_span(xrel)
    if P == 0 or Ho == 0 or Lo == 0:
        return
    if u8weight is float and max(Ky, Kx) > WIDE_TAPS:
        _separable_u8_wide(out, x, yidx, yw, xidx, xw, nthreads)
        return
    yi = &yidx[0, 0]
    xi = &xidx[0, 0]
    ywp = &yw[0, 0]
    xwp = &xw[0, 0]
    crows = cache_rows(yidx)
    if vfirst and u8weight is float:
        raise ValueError("resize.separable_u8: vfirst needs int32 weights.")
    if vfirst:
        crows = max(1, (Li + Lo - 1) // Lo)   # the cache holds one blended source row
    # per thread: the row cache, a blend row, the row offsets, the done flags
    head = (Ky * 16 + 63) // 64 * 64   # offsets and weights first, then the rows
    per = head + ((crows + 1) * Lo + Li) * sizeof(u8weight) + crows + 64
    per = (per + 63) // 64 * 64        # each thread's buffer starts 64-byte aligned
    nteam = max(1, min(nthreads, njobs))
    if <size_t> per > SIZE_MAX // <size_t> nteam:
        raise MemoryError("resize: the per-thread row caches do not fit in memory.")
    bufs = <char*> malloc(per * nteam)
    if bufs == NULL:
        raise MemoryError(f"resize: could not allocate the per-thread row caches "
                          f"({nteam} x {per} bytes).")
    cdef fi_team team
    try:
        nteam = fi_team_plan(&team, nteam)
        with nogil, parallel(num_threads=nteam):
            fi_team_enter(&team)
            tid = threadid()
            buf = bufs + tid * per
            off = <Py_ssize_t*> buf
            wrow = <u8weight*> (buf + Ky * 8)
            cache = <u8weight*> (buf + head)
            tmp = cache + crows * Lo
            wide = tmp + Lo
            done = <unsigned char*> (wide + Li)
            for job in prange(njobs, schedule="dynamic"):
                p = job // nblocks
                y0 = (job % nblocks) * ROW_BLOCK
                y1 = min(Ho, y0 + ROW_BLOCK)
                plane = &x[p, 0, 0]
                if u8weight is int:
                    if vfirst:
                        for y in range(y0, y1):
                            for k in range(Ky):
                                wrow[k] = ywp[k * Ho + y]
                                (<int*> off)[k] = yi[k * Ho + y]
                            fi_u8_vfirst_i(cache, plane, Li, <int*> off, wrow, Ky, Li, vshift)
                            if pbase == NULL or not fi_u8_hlast_pairs(
                                    &out[p, y, 0], cache, <unsigned char*> wide, tmp, Li, pbase,
                                    prel, pwlo, pwhi, npairs, Lo, hshift, span):
                                fi_u8_hlast_i(&out[p, y, 0], cache, xi, xwp, Kx, Lo, hshift)
                        continue
                lo = 0
                hi = 0
                row_range(yi, Ky, Ho, y0, y1, &lo, &hi)
                memset(done, 0, hi - lo)
                for y in range(y0, y1):
                    for k in range(Ky):
                        r = yi[k * Ho + y]
                        off[k] = (r - lo) * Lo
                        if not done[r - lo]:
                            if u8weight is float:
                                if fpbase != NULL:
                                    fi_u8_hperm_f(cache + off[k], plane + r * Li, fpbase, fprel,
                                                  xwp, Kx, Lo, xpblock, wide, Li)
                                else:
                                    fi_u8_hrow_f(cache + off[k], plane + r * Li, xi, xwp, Kx,
                                                 Lo, wide, Li)
                            elif pbase == NULL or not fi_u8_hpairs(
                                    cache + off[k], plane + r * Li, Li, pbase, prel, pwlo, pwhi,
                                    npairs, Lo, hshift, cv16, span):
                                if cv16:
                                    fi_u8_hrow_i(tmp, plane + r * Li, xi, xwp, Kx, Lo, hshift,
                                                 wide, Li)
                                    fi_u8_narrow4(<short*> (cache + off[k]), tmp, Lo)
                                else:
                                    fi_u8_hrow_i(cache + off[k], plane + r * Li, xi, xwp, Kx,
                                                 Lo, hshift, wide, Li)
                            done[r - lo] = 1
                    _u8_vrow(&out[p, y, 0], cache, off, wrow, ywp, Ky, Ho, y, Lo, tmp, vshift,
                             cv16)
            fi_team_leave(&team)
        fi_team_done(&team)
    finally:
        free(bufs)


cdef inline void _u8_vrow(unsigned char* dst, const u8weight* cache, const Py_ssize_t* off,
                          u8weight* w, const u8weight* yw, Py_ssize_t Ky, Py_ssize_t Ho, Py_ssize_t y,
                          Py_ssize_t L, u8weight* tmp, int vshift, int cv16) noexcept nogil:
    """Blend output row y's cached rows (tap k at ``cache + off[k]``) into ``dst``."""
    cdef Py_ssize_t k
    # the weights of row y are strided by Ho in the tap-major table: gather them
    for k in range(Ky):
        w[k] = yw[k * Ho + y]
    if u8weight is float:
        fi_u8_vrow_f(dst, cache, off, w, Ky, L, tmp)
    else:
        fi_u8_vrow_i(dst, cache, off, w, Ky, L, tmp, vshift, cv16)


def _separable_u8_wide(unsigned char[:, :, ::1] out, const unsigned char[:, :, ::1] x,
                       const int[:, ::1] yidx, const float[:, ::1] yw,
                       const int[:, ::1] xidx, const float[:, ::1] xw, int nthreads):
    """:func:`separable_u8` for float tables of more than WIDE_TAPS taps: the float64
    passes of :func:`separable_fwd`, each output rounded half to even and saturated
    (a float32 sum of thousands of taps could round the wrong way)."""
    import numpy as np
    outs = np.asarray(out)
    order = ORDER_V_FIRST if out.shape[1] < x.shape[1] else ORDER_H_FIRST   # shrinking: V first
    for p0, p1, out64 in _float64_groups(x, out.shape, yidx, yw, False, xidx, xw, False, 1,
                                         order, nthreads):
        outs[p0:p1] = np.clip(np.rint(out64), 0, 255)


def _check_u8_args(out, x, const int[:, ::1] yidx, yw, const int[:, ::1] xidx, xw,
                   int hshift, int vshift):
    """Refuse arguments that would make separable_u8 read or write out of bounds."""
    op = "resize.separable_u8"
    P, Ho, Lo = out.shape[0], out.shape[1], out.shape[2]
    ys, xs = (yidx.shape[0], yidx.shape[1]), (xidx.shape[0], xidx.shape[1])
    if x.shape[0] != P:
        raise ValueError(f"{op}: x must have as many planes as out; got x "
                         f"{tuple(x.shape[:3])}, out {tuple(out.shape[:3])}.")
    if (ys[0] < 1 or xs[0] < 1 or tuple(yw.shape[:2]) != ys
            or tuple(xw.shape[:2]) != xs or ys[1] != Ho or xs[1] != Lo):
        raise ValueError(f"{op}: tap tables (K, n_out) must match out {tuple(out.shape[:3])}; "
                         f"got y {ys}/{tuple(yw.shape[:2])}, x {xs}/{tuple(xw.shape[:2])}.")
    if not (0 <= hshift <= 30 and 0 <= vshift <= 30):
        raise ValueError(f"{op}: hshift and vshift must lie in [0, 30]; got {hshift}, {vshift}.")
    if not _indices_within(yidx, x.shape[1]) or not _indices_within(xidx, x.shape[2]):
        raise ValueError(f"{op}: tap indices must lie inside x {tuple(x.shape[:3])}.")


cdef int _pair_span(const short[::1] rel) noexcept:
    """One more than the pair form's largest window place, in [1, FI_U8_WINDOW]."""
    cdef Py_ssize_t i
    cdef int top = 0
    for i in range(rel.shape[0]):
        if rel[i] > top:
            top = rel[i]
    return min(top + 1, FI_U8_WINDOW)


def _check_u8_pairs(out, x, const int[::1] xbase, xrel, xwlo, xwhi):
    """The tap pairs per output of a valid pair form (0 when none is given).

    Only what keeps the kernel's memory accesses in bounds is checked: the
    table lengths and each block's window start (the window is read with
    masked loads and the permutes index registers).
    """
    op = "resize.separable_u8"
    if xbase is None or xbase.shape[0] == 0:
        return 0
    Lo, Li = out.shape[2], x.shape[2]
    nb = (Lo + FI_U8_BLOCK - 1) // FI_U8_BLOCK
    n = xrel.shape[0] if xrel is not None else 0
    P = n // (2 * FI_U8_BLOCK * nb) if nb else 0
    sizes = [a.shape[0] for a in (xrel, xwlo) if a is not None]
    if xwhi is not None and xwhi.shape[0]:
        sizes.append(xwhi.shape[0])
    if (xbase.shape[0] != nb or P < 1 or len(sizes) < 2 or any(m != P * 2 * FI_U8_BLOCK * nb for m in sizes)
            or not _within(&xbase[0], nb, Li)):
        raise ValueError(f"{op}: the pair form must have one window start in [0, {Li}) per "
                         f"block of {FI_U8_BLOCK} outputs ({nb}) and {2 * FI_U8_BLOCK} * pairs entries per "
                         f"block in xrel, xwlo (and xwhi); got {xbase.shape[0]} starts and "
                         f"lengths {sizes}.")
    return P


cdef extern from *:
    """
    /* Integer-factor box shrink of uint8 rows (area, and bilinear halving):
       exact integer sums of fy x fx blocks, then one rounded division. */
    static FI_NOINLINE void fi_box_rows(uint32_t* __restrict acc, const unsigned char* src,
                                        Py_ssize_t stride, Py_ssize_t fy, Py_ssize_t L) {
        for (Py_ssize_t j = 0; j < L; ++j) acc[j] = src[j];
        for (Py_ssize_t r = 1; r < fy; ++r) {
            const unsigned char* __restrict s = src + r * stride;
            for (Py_ssize_t j = 0; j < L; ++j) acc[j] += s[j];
        }
    }
    /* t[x*C + c] = sum_k a[(x*fx + k)*C + c], C a constant so that the
       interleaved channels vectorise */
    #define FI_BOX_HSUM(CC)                                                           \
    static FI_NOINLINE void fi_box_hsum##CC(uint32_t* __restrict t,                  \
                                            const uint32_t* __restrict a,            \
                                            Py_ssize_t Wo, Py_ssize_t fx) {          \
        if (fx == 2) {                                                                \
            for (Py_ssize_t x = 0; x < Wo; ++x)                                       \
                for (Py_ssize_t c = 0; c < CC; ++c)                                   \
                    t[x * CC + c] = a[2 * x * CC + c] + a[(2 * x + 1) * CC + c];      \
            return;                                                                   \
        }                                                                             \
        if (fx == 3) {   /* constant strides: vectorised too */                       \
            for (Py_ssize_t x = 0; x < Wo; ++x)                                       \
                for (Py_ssize_t c = 0; c < CC; ++c)                                   \
                    t[x * CC + c] = a[3 * x * CC + c] + a[(3 * x + 1) * CC + c]       \
                                    + a[(3 * x + 2) * CC + c];                        \
            return;                                                                   \
        }                                                                             \
        if (fx == 4) {                                                                \
            for (Py_ssize_t x = 0; x < Wo; ++x)                                       \
                for (Py_ssize_t c = 0; c < CC; ++c)                                   \
                    t[x * CC + c] = a[4 * x * CC + c] + a[(4 * x + 1) * CC + c]       \
                                    + a[(4 * x + 2) * CC + c] + a[(4 * x + 3) * CC + c]; \
            return;                                                                   \
        }                                                                             \
        for (Py_ssize_t x = 0; x < Wo; ++x)                                           \
            for (Py_ssize_t c = 0; c < CC; ++c) {                                     \
                uint32_t s = 0;                                                       \
                for (Py_ssize_t k = 0; k < fx; ++k) s += a[(x * fx + k) * CC + c];    \
                t[x * CC + c] = s;                                                    \
            }                                                                         \
    }
    FI_BOX_HSUM(1)
    FI_BOX_HSUM(2)
    FI_BOX_HSUM(3)
    FI_BOX_HSUM(4)
    static FI_NOINLINE void fi_box_hsum(uint32_t* __restrict t, const uint32_t* __restrict a,
                                        Py_ssize_t Wo, Py_ssize_t fx, Py_ssize_t C) {
        switch (C) {
            case 1: fi_box_hsum1(t, a, Wo, fx); return;
            case 2: fi_box_hsum2(t, a, Wo, fx); return;
            case 3: fi_box_hsum3(t, a, Wo, fx); return;
            case 4: fi_box_hsum4(t, a, Wo, fx); return;
        }
        for (Py_ssize_t x = 0; x < Wo; ++x)
            for (Py_ssize_t c = 0; c < C; ++c) {
                uint32_t s = 0;
                for (Py_ssize_t k = 0; k < fx; ++k) s += a[(x * fx + k) * C + c];
                t[x * C + c] = s;
            }
    }
    /* The common 2 x 2 case: every value is summed with the next row and
       the next pixel (C values on) in 16 bits and rounded, half up
       (s + 2) >> 2 or half to even (s + 1 + ((s >> 2) & 1)) >> 2, into the
       byte row ``b`` (contiguous and vectorised, twice the values needed);
       then every other pixel is kept (three channels: by 4-byte copies whose
       extra byte the next pixel overwrites). */
    #define FI_BOX2X2(CC)                                                             \
    static FI_NOINLINE void fi_box2x2_##CC(unsigned char* __restrict out,            \
                                           const unsigned char* __restrict r0,       \
                                           const unsigned char* __restrict r1,       \
                                           unsigned char* __restrict b,              \
                                           Py_ssize_t Wo, int half_up) {             \
        const Py_ssize_t L = 2 * Wo * CC;                                             \
        const uint16_t odd = half_up ? 0 : 1, bias = half_up ? 2 : 1;                \
        Py_ssize_t x = 0;                                                             \
        for (Py_ssize_t j = 0; j + CC < L; ++j) {                                     \
            uint16_t s = (uint16_t)((uint16_t)r0[j] + r0[j + CC] + r1[j] + r1[j + CC]); \
            b[j] = (unsigned char)((s + bias + (odd & (s >> 2))) >> 2);               \
        }                                                                             \
        if (CC == 3)                                                                  \
            for (; x + 2 < Wo; ++x) {                                                 \
                uint32_t w;                                                           \
                memcpy(&w, b + 6 * x, 4);                                             \
                memcpy(out + 3 * x, &w, 4);                                           \
            }                                                                         \
        for (; x < Wo; ++x)                                                           \
            for (Py_ssize_t c = 0; c < CC; ++c) out[x * CC + c] = b[2 * x * CC + c];  \
    }
    FI_BOX2X2(1)
    FI_BOX2X2(2)
    FI_BOX2X2(3)
    FI_BOX2X2(4)
    static int fi_box2x2(unsigned char* out, const unsigned char* r0, const unsigned char* r1,
                         unsigned char* v, Py_ssize_t Wo, Py_ssize_t C, int half_up,
                         const int16_t* perm) {
        if (C < 1 || C > 4) return 0;
        const Py_ssize_t x = fi_u8_box2x2_vec(out, r0, r1, Wo, C, half_up, perm);   /* _u8simd.h */
        out += x * C;
        r0 += 2 * x * C;
        r1 += 2 * x * C;
        Wo -= x;
        switch (C) {
            case 1: fi_box2x2_1(out, r0, r1, v, Wo, half_up); return 1;
            case 2: fi_box2x2_2(out, r0, r1, v, Wo, half_up); return 1;
            case 3: fi_box2x2_3(out, r0, r1, v, Wo, half_up); return 1;
            case 4: fi_box2x2_4(out, r0, r1, v, Wo, half_up); return 1;
        }
        return 0;
    }
    /* Rounding of a block mean: exact, half to even or half up; or OpenCV's float one. */
    enum { FI_BOX_HALF_EVEN = 0, FI_BOX_HALF_UP = 1, FI_BOX_OPENCV = 2 };
    /* out = round(t / area): the quotient's floor comes from a float division
       where the sums stay below 2^24 (they are <= 255 * area), else from a
       double one (exact for any uint32 sum); the remainder decides the rounding */
    static FI_NOINLINE void fi_box_round(unsigned char* __restrict out,
                                         const uint32_t* __restrict t, Py_ssize_t n,
                                         uint32_t area, int rounding) {
        if (rounding == FI_BOX_OPENCV) {  /* cv2's INTER_AREA: cvRound(float(s) * (1.f / area)) */
            const float scale = 1.0f / (float)area;
            for (Py_ssize_t i = 0; i < n; ++i) {
                long r = lrintf((float)t[i] * scale);
                out[i] = (unsigned char)(r > 255 ? 255 : r);
            }
            return;
        }
        const int half_up = rounding == FI_BOX_HALF_UP;
        if ((area & (area - 1)) == 0) {   /* a power of two: shifts */
            int sh = 0;
            while ((1u << sh) < area) ++sh;
            const uint32_t odd = (half_up || sh == 0) ? 0 : 1;
            const uint32_t bias = sh ? (area >> 1) - odd : 0;
            for (Py_ssize_t i = 0; i < n; ++i) {
                uint32_t v = t[i];
                out[i] = (unsigned char)((v + bias + (odd & (v >> sh))) >> sh);
            }
            return;
        }
        if ((uint64_t)area * 255u >= (1u << 24)) {
            const double da = (double)area;
            for (Py_ssize_t i = 0; i < n; ++i) {
                uint32_t s = t[i];
                uint32_t q = (uint32_t)((double)s / da);
                uint64_t twice_r = 2 * (uint64_t)(s - q * area);
                out[i] = (unsigned char)(q + (half_up ? twice_r >= area
                                                      : twice_r + (q & 1u) > area));
            }
            return;
        }
        const float fa = (float)area;
        if (half_up) {
            for (Py_ssize_t i = 0; i < n; ++i) {
                uint32_t s = t[i];
                uint32_t q = (uint32_t)((float)s / fa);
                out[i] = (unsigned char)(q + (2 * (s - q * area) >= area));
            }
            return;
        }
        for (Py_ssize_t i = 0; i < n; ++i) {
            uint32_t s = t[i];
            uint32_t q = (uint32_t)((float)s / fa);
            /* half to even: up when 2r > area, or 2r == area and q is odd */
            out[i] = (unsigned char)(q + (2 * (s - q * area) + (q & 1u) > area));
        }
    }
    """
    void fi_box_rows(unsigned int* acc, const unsigned char* src, Py_ssize_t stride,
                     Py_ssize_t fy, Py_ssize_t L) noexcept nogil
    void fi_box_hsum(unsigned int* t, const unsigned int* a, Py_ssize_t Wo, Py_ssize_t fx,
                     Py_ssize_t C) noexcept nogil
    void fi_box_round(unsigned char* out, const unsigned int* t, Py_ssize_t n,
                      unsigned int area, int rounding) noexcept nogil
    int fi_box2x2(unsigned char* out, const unsigned char* r0, const unsigned char* r1,
                  unsigned char* v, Py_ssize_t Wo, Py_ssize_t C, int half_up,
                  const short* perm) noexcept nogil
    void fi_u8_box2x2_perm(short* perm, Py_ssize_t C) noexcept nogil


def box_u8(unsigned char[:, :, ::1] out, const unsigned char[:, :, ::1] x,
           Py_ssize_t fy, Py_ssize_t fx, Py_ssize_t channels, int rounding, int nthreads):
    """out = the means of the fy x fx blocks of x, rounded (uint8 planes).

    ``out`` is (P, H_out, W_out*C) and ``x`` (P, H_out*fy, W_out*fx*C) with
    interleaved channels (C = ``channels``; 1 for planar data). ``rounding``:
    0 the exact mean rounded half to even, 1 half up (exact for any block size
    whose sums fit 32 bits, fy * fx * 255 < 2^32: blocks of up to 16.8M pixels),
    2 OpenCV's INTER_AREA, ``cvRound(float(sum) * (1.f / (fy * fx)))`` (the
    2 x 2 case as exact half to even, which it equals).
    """
    cdef Py_ssize_t P = out.shape[0], Ho = out.shape[1], Lo = out.shape[2]
    cdef Py_ssize_t Li = x.shape[2], C = channels, Wo, njobs, nteam, tid, job, p, y
    cdef unsigned int* bufs = NULL
    cdef unsigned int* acc
    cdef unsigned int* t
    cdef short perm[64]
    op = "resize.box_u8"
    xs = (x.shape[0], x.shape[1], x.shape[2])
    oshape = (P, Ho, Lo)
    if not 0 <= rounding <= 2:
        raise ValueError(f"{op}: rounding must be 0, 1 or 2; got {rounding}.")
    if C < 1 or fy < 1 or fx < 1 or Lo % C or x.shape[0] != P:
        raise ValueError(f"{op}: need channels, fy, fx >= 1, out rows a multiple of channels "
                         f"and as many planes in x as in out; got channels={C}, fy={fy}, "
                         f"fx={fx}, out {oshape}, x {xs}.")
    Wo = Lo // C
    if x.shape[1] != Ho * fy or Li != Lo * fx or fy * fx * 255 >= (<Py_ssize_t>1 << 32):
        raise ValueError(f"{op}: x must be (P, H_out*fy, W_out*fx*C) with fy*fx*255 < 2^32; "
                         f"got x {xs}, out {oshape}, fy={fy}, fx={fx}.")
    njobs = P * Ho
    if njobs == 0 or Lo == 0:
        return
    nteam = max(1, min(nthreads, njobs))
    fi_u8_box2x2_perm(perm, C)
    bufs = <unsigned int*> malloc((Li + Lo + 16) * sizeof(unsigned int) * nteam)
    if bufs == NULL:
        raise MemoryError(f"{op}: could not allocate the per-thread row sums.")
    cdef fi_team team
    try:
        nteam = fi_team_plan(&team, nteam)
        with nogil, parallel(num_threads=nteam):
            fi_team_enter(&team)
            tid = threadid()
            acc = bufs + tid * (Li + Lo + 16)
            t = acc + Li
            for job in prange(njobs, schedule="static"):
                p = job // Ho
                y = job % Ho
                if fy == 2 and fx == 2 and fi_box2x2(&out[p, y, 0], &x[p, 2 * y, 0],
                                                     &x[p, 2 * y + 1, 0],
                                                     <unsigned char*> acc, Wo, C,
                                                     rounding == 1, perm):
                    continue
                fi_box_rows(acc, &x[p, y * fy, 0], Li, fy, Li)
                fi_box_hsum(t, acc, Wo, fx, C)
                fi_box_round(&out[p, y, 0], t, Lo, <unsigned int> (fy * fx), rounding)
            fi_team_leave(&team)
        fi_team_done(&team)
    finally:
        free(bufs)
