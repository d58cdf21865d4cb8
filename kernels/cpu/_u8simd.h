/* uint8 resize: the fixed-point passes with 16-bit multiply-adds.

   Horizontal pass ("pair form"): outputs go in blocks of 16; block b reads
   the window of 64 source bytes starting at base[b] (widened to two vectors
   of 32 int16), picks each output's taps two at a time with one two-source
   word permute, and multiplies-adds each pair with vpmaddwd into int32:
   sum_k w[k] * s[idx[k]] exactly, as the scalar loop. Per block and tap
   pair p, rel[(b * P + p) * 32 + 2 * i + t] is the window position of tap
   2p + t of output 16b + i, and wlo the same positions' weights. Weights
   that do not fit int16 (Pillow's 22 bits) are split as w = whi * 2^15 + wlo
   with 0 <= wlo < 2^15: the sum is (sum whi * s) * 2^15 + sum wlo * s, in
   wrapping int32 arithmetic, exact because the result fits int32.

   Vertical pass of OpenCV's INTER_LINEAR (VResizeLinearVec_32s8u), whole
   rows: ((((r0 >> 4) * a) >> 16) + (((r1 >> 4) * b) >> 16) + 2) >> 2.

   Every function has a scalar fallback giving the same bits. */
#ifndef FI_U8SIMD_H
#define FI_U8SIMD_H
#include <stdint.h>
#include <Python.h>
#if defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define FI_U8_HAVE_PAIRS 1
#else
#define FI_U8_HAVE_PAIRS 0
#endif

#define FI_U8_BLOCK 16     /* outputs per block of the pair form */
#define FI_U8_WINDOW 64    /* source bytes a block may read */

static inline int32_t fi_u8_clip255(int32_t v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

/* d[x] = sum_k w[k, x] * s[base + rel[...]] in the pair form (see above); when
   shift > 0 each sum is rounded to clip((v + 2^(shift-1)) >> shift); with
   ``narrow`` the sums are stored as fi_u8_narrow4 does, int16 values at d.
   Returns 0 (writing nothing) in a build without the vector instructions. */
static int fi_u8_hpairs(int32_t* d, const unsigned char* s, Py_ssize_t ns,
                        const int32_t* base, const int16_t* rel, const int16_t* wlo,
                        const int16_t* whi, Py_ssize_t P, Py_ssize_t n, int shift,
                        int narrow) {
#if FI_U8_HAVE_PAIRS
    const __m512i half = _mm512_set1_epi32(shift > 0 ? 1 << (shift - 1) : 0);
    const __m512i zero = _mm512_setzero_si512(), top = _mm512_set1_epi32(255);
    for (Py_ssize_t x0 = 0, b = 0; x0 < n; x0 += FI_U8_BLOCK, ++b) {
        const Py_ssize_t avail = ns - base[b], cnt = n - x0;
        const __mmask64 m = avail >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << avail) - 1);
        const __m512i raw = _mm512_maskz_loadu_epi8(m, s + base[b]);
        const __m512i v0 = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(raw));
        const __m512i v1 = _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(raw, 1));
        const Py_ssize_t at = b * P * 32;
        __m512i acc = zero, acch = zero;
        for (Py_ssize_t p = 0; p < P; ++p) {
            const __m512i pick = _mm512_permutex2var_epi16(
                v0, _mm512_loadu_si512((const void*)(rel + at + p * 32)), v1);
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(
                pick, _mm512_loadu_si512((const void*)(wlo + at + p * 32))));
            if (whi)
                acch = _mm512_add_epi32(acch, _mm512_madd_epi16(
                    pick, _mm512_loadu_si512((const void*)(whi + at + p * 32))));
        }
        if (whi) acc = _mm512_add_epi32(_mm512_slli_epi32(acch, 15), acc);
        if (shift > 0) {
            acc = _mm512_srai_epi32(_mm512_add_epi32(acc, half), shift);
            acc = _mm512_min_epi32(_mm512_max_epi32(acc, zero), top);
        }
        const __mmask16 mo = cnt >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cnt) - 1u);
        if (narrow)
            _mm256_mask_storeu_epi16((int16_t*)d + x0, mo,
                                     _mm512_cvtepi32_epi16(_mm512_srai_epi32(acc, 4)));
        else
            _mm512_mask_storeu_epi32(d + x0, mo, acc);
    }
    return 1;
#else
    (void)d; (void)s; (void)ns; (void)base; (void)rel; (void)wlo; (void)whi; (void)P;
    (void)n; (void)shift; (void)narrow;
    return 0;
#endif
}

/* OpenCV's INTER_LINEAR vertical rounding of one row from rows of int16
   values r = h >> 4 (see above): 16-bit high products, saturating adds
   (which only saturate where the result clips to 255 anyway). */
static inline int32_t fi_u8_mulhi16(int16_t r, int32_t a) {
    return (int32_t)(((int64_t)r * a) >> 16);
}
static void fi_u8_vlinear_cv(unsigned char* out, const int16_t* r0, const int16_t* r1,
                             int32_t a, int32_t b, Py_ssize_t L) {
    Py_ssize_t j = 0;
#if FI_U8_HAVE_PAIRS
    if (a >= 0 && b >= 0 && a < 32768 && b < 32768) {
        const __m512i wa = _mm512_set1_epi16((short)a), wb = _mm512_set1_epi16((short)b);
        const __m512i two = _mm512_set1_epi16(2), zero = _mm512_setzero_si512();
        for (; j + 32 <= L; j += 32) {
            __m512i v = _mm512_adds_epi16(
                _mm512_mulhi_epi16(_mm512_loadu_si512((const void*)(r0 + j)), wa),
                _mm512_mulhi_epi16(_mm512_loadu_si512((const void*)(r1 + j)), wb));
            v = _mm512_srai_epi16(_mm512_adds_epi16(v, two), 2);
            _mm256_storeu_si256((__m256i*)(out + j),
                                _mm512_cvtusepi16_epi8(_mm512_max_epi16(v, zero)));
        }
    }
#endif
    for (; j < L; ++j) {
        int32_t v = fi_u8_mulhi16(r0[j], a) + fi_u8_mulhi16(r1[j], b);
        v = v > 32767 ? 32767 : v;   /* as the saturating 16-bit adds */
        v = v + 2 > 32767 ? 32767 : v + 2;
        out[j] = (unsigned char)fi_u8_clip255(v >> 2);
    }
}

/* d16[j] = (int16_t)(d[j] >> 4): the horizontal sums as OpenCV's vertical
   linear pass reads them (wrapping outside int16, which its tables never reach) */
static void fi_u8_narrow4(int16_t* d16, const int32_t* d, Py_ssize_t n) {
    for (Py_ssize_t j = 0; j < n; ++j) d16[j] = (int16_t)(uint16_t)(uint32_t)(d[j] >> 4);
}
#endif
