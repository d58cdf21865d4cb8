/* Out-of-place matrix transposes for the layout changes inside kernels:
 *
 *     b[j * ldb + i] = a[i * lda + j]    for i < rows, j < cols.
 *
 * float32 moves 16 x 16 blocks through AVX-512 registers, else 8 x 8 blocks
 * through AVX registers (loads and stores of whole rows, the standard
 * unpack / shuffle / permute network); the edges and the other builds copy
 * element by element. Only data moves: the
 * values are bit-identical whichever path runs.
 */
#ifndef FASTINTERP_TRANSPOSE_H
#define FASTINTERP_TRANSPOSE_H

#include <stddef.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

static inline void fi_transpose_scalar_f(const float* a, ptrdiff_t lda, float* b, ptrdiff_t ldb,
                                         ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t j0, ptrdiff_t j1) {
    for (ptrdiff_t i = i0; i < i1; ++i)
        for (ptrdiff_t j = j0; j < j1; ++j)
            b[j * ldb + i] = a[i * lda + j];
}

#if defined(__AVX__)
static inline void fi_transpose8x8_f(const float* a, ptrdiff_t lda, float* b, ptrdiff_t ldb) {
    __m256 r0 = _mm256_loadu_ps(a), r1 = _mm256_loadu_ps(a + lda);
    __m256 r2 = _mm256_loadu_ps(a + 2 * lda), r3 = _mm256_loadu_ps(a + 3 * lda);
    __m256 r4 = _mm256_loadu_ps(a + 4 * lda), r5 = _mm256_loadu_ps(a + 5 * lda);
    __m256 r6 = _mm256_loadu_ps(a + 6 * lda), r7 = _mm256_loadu_ps(a + 7 * lda);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(b, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(b + ldb, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(b + 2 * ldb, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(b + 3 * ldb, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(b + 4 * ldb, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(b + 5 * ldb, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(b + 6 * ldb, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(b + 7 * ldb, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

#if defined(__AVX512F__)
/* 16 x 16: whole cache lines in and out (rows of 64 bytes). Within each 128-bit
   lane the unpack / shuffle stages transpose 4 x 4 blocks (u[4m + c], lane L:
   column 4L + c of rows 4m..4m+3); two stages of lane shuffles then gather
   output row 4L + c from lane L of u[c], u[4 + c], u[8 + c], u[12 + c]. */
static inline void fi_transpose16x16_f(const float* a, ptrdiff_t lda, float* b, ptrdiff_t ldb) {
    __m512 r[16], t[16], u[16];
    for (int k = 0; k < 16; ++k)
        r[k] = _mm512_loadu_ps(a + k * lda);
    for (int k = 0; k < 16; k += 2) {
        t[k] = _mm512_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm512_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int m = 0; m < 16; m += 4) {
        u[m] = _mm512_shuffle_ps(t[m], t[m + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[m + 1] = _mm512_shuffle_ps(t[m], t[m + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[m + 2] = _mm512_shuffle_ps(t[m + 1], t[m + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[m + 3] = _mm512_shuffle_ps(t[m + 1], t[m + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int c = 0; c < 4; ++c) {
        __m512 p0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
        __m512 p1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
        __m512 p2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
        __m512 p3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        _mm512_storeu_ps(b + c * ldb, _mm512_shuffle_f32x4(p0, p2, 0x88));
        _mm512_storeu_ps(b + (4 + c) * ldb, _mm512_shuffle_f32x4(p0, p2, 0xDD));
        _mm512_storeu_ps(b + (8 + c) * ldb, _mm512_shuffle_f32x4(p1, p3, 0x88));
        _mm512_storeu_ps(b + (12 + c) * ldb, _mm512_shuffle_f32x4(p1, p3, 0xDD));
    }
}
#endif

/* Rows i0 <= i < i1 and columns j0 <= j < j1 of a: 8 x 8 blocks where AVX is
   there, element by element at the right and bottom edges. */
static inline void fi_transpose_region_f(const float* a, ptrdiff_t lda, float* b, ptrdiff_t ldb,
                                         ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t j0, ptrdiff_t j1) {
    ptrdiff_t i8 = i0, j8 = j0;
#if defined(__AVX__)
    i8 = i1 - (i1 - i0) % 8;
    j8 = j1 - (j1 - j0) % 8;
    for (ptrdiff_t j = j0; j < j8; j += 8)
        for (ptrdiff_t i = i0; i < i8; i += 8)
            fi_transpose8x8_f(a + i * lda + j, lda, b + j * ldb + i, ldb);
#endif
    fi_transpose_scalar_f(a, lda, b, ldb, i0, i8, j8, j1);   /* right edge */
    fi_transpose_scalar_f(a, lda, b, ldb, i8, i1, j0, j1);   /* bottom rows */
}

static inline void fi_transpose_f(const float* a, ptrdiff_t lda, float* b, ptrdiff_t ldb,
                                  ptrdiff_t rows, ptrdiff_t cols) {
    ptrdiff_t r16 = 0, c16 = 0;
    /* column blocks outside: each pass writes whole rows of b (a run along b's
       rows) while reading a few floats from every row of a; with rows outside, a
       tall b (an image's planes into its pixels) was written 32 bytes per row per
       pass, revisiting every line rows/8 times: twice the time of this order. */
#if defined(__AVX512F__)
    /* 16 x 16 blocks read and write whole lines: with planes 64 KB apart (in one
       cache set), 8 x 8 blocks fetched each line twice; about 1.5x faster. */
    r16 = rows - rows % 16;
    c16 = cols - cols % 16;
    for (ptrdiff_t j = 0; j < c16; j += 16)
        for (ptrdiff_t i = 0; i < r16; i += 16)
            fi_transpose16x16_f(a + i * lda + j, lda, b + j * ldb + i, ldb);
#endif
    fi_transpose_region_f(a, lda, b, ldb, 0, r16, c16, cols);   /* right edge */
    fi_transpose_region_f(a, lda, b, ldb, r16, rows, 0, cols);  /* bottom rows */
}

static inline void fi_transpose_d(const double* a, ptrdiff_t lda, double* b, ptrdiff_t ldb,
                                  ptrdiff_t rows, ptrdiff_t cols) {
    for (ptrdiff_t i = 0; i < rows; ++i)
        for (ptrdiff_t j = 0; j < cols; ++j)
            b[j * ldb + i] = a[i * lda + j];
}

#endif
