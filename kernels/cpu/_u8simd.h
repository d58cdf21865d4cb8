/* uint8 resize: vector paths of the uint8 engine in resize.pyx: AVX-512BW
   (the x86-64-v4 build) and AVX2 (x86-64-v3, the same algorithms on 256-bit
   vectors, see "AVX2" below); x86-64-v2 compiles them to "nothing done".

   - fi_u8_hpairs: fixed-point horizontal pass by 16-bit multiply-adds;
   - fi_u8_vlinear_cv: OpenCV's INTER_LINEAR vertical rounding (int16 rows);
   - fi_u8_vrow_i_vec / fi_u8_vrow_f_vec: the fixed-point and float32
     vertical blends with their rounding;
   - fi_u8_box2x2_vec: 2 x 2 box means of 1 to 4 interleaved channels;
   - fi_u8_hlast_pairs: fi_u8_hpairs after Pillow's vertical-first pass.

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

   AVX2 (x86-64-v3): the same table layout with blocks of 8 outputs; no
   two-source word permute there, so taps are picked as bytes (vpshufb from
   the window's 16-byte chunks, below fi_u8_hpairs) and widened to words in
   the same instruction; the 2 x 2 box means pick both pixels of an output
   with one vpshufb per row and add them with vpmaddubsw.

   Vertical pass of OpenCV's INTER_LINEAR (VResizeLinearVec_32s8u), whole
   rows: ((((r0 >> 4) * a) >> 16) + (((r1 >> 4) * b) >> 16) + 2) >> 2.

   Each gives the bits of the plain loop it stands for: fi_u8_hpairs
   returns 0 without the instructions (the caller then runs its loop), the
   *_vec functions return how many values they did (the caller's loop does
   the rest), fi_u8_vlinear_cv has its own scalar tail. */
#ifndef FI_U8SIMD_H
#define FI_U8SIMD_H
#include <stdint.h>
#include <Python.h>
#include <string.h>
#if defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define FI_U8_HAVE_PAIRS 1
#define FI_U8_AVX2 0
#define FI_U8_BLOCK 16     /* outputs per block of the pair form */
#elif defined(__AVX2__)
#include <immintrin.h>
#define FI_U8_HAVE_PAIRS 1
#define FI_U8_AVX2 1       /* the x86-64-v3 forms: see "AVX2" below */
#define FI_U8_BLOCK 8
#else
#define FI_U8_HAVE_PAIRS 0
#define FI_U8_AVX2 0
#define FI_U8_BLOCK 16
#endif
#define FI_U8_WINDOW 64    /* source bytes a block may read */
#define FI_U8_AVX512 (FI_U8_HAVE_PAIRS && !FI_U8_AVX2)

static inline int32_t fi_u8_clip255(int32_t v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

/* d[x] = sum_k w[k, x] * s[base + rel[...]] in the pair form (see above); when
   shift > 0 each sum is rounded to clip((v + 2^(shift-1)) >> shift); with
   ``narrow`` the sums are stored as fi_u8_narrow4 does, int16 values at d.
   ``span`` is one more than the largest window place in ``rel`` (the AVX2
   form reads only the 16-byte chunks of the window below it).
   Returns 0 (writing nothing) in a build without the vector instructions. */
#if FI_U8_AVX2
/* AVX2: blocks of 8 outputs. The window's 16-byte chunks are broadcast to
   both 128-bit lanes; a tap's bytes are picked by vpshufb with the place
   r in the low byte and 0xFF in the high byte (which zeroes it: the word
   is the byte widened). Chunk q takes t = r - 16q plus 0x70 with unsigned
   saturation: bit 7 (a zero) is set unless 0 <= t < 16, and the low nibble
   is t; the last chunk needs no addition (no place lies above it). */
static inline __attribute__((always_inline)) __m256i
fi_u8_pick(const __m256i* ch, __m256i r, const int nch) {
    const __m256i sat = _mm256_set1_epi8(0x70);
    __m256i pick = _mm256_shuffle_epi8(ch[0], nch == 1 ? r : _mm256_adds_epu8(r, sat));
    for (int q = 1; q < nch; ++q) {
        __m256i t = _mm256_sub_epi8(r, _mm256_set1_epi8((char)(16 * q)));
        if (q + 1 < nch) t = _mm256_adds_epu8(t, sat);
        pick = _mm256_or_si256(pick, _mm256_shuffle_epi8(ch[q], t));
    }
    return pick;
}
/* the low 16 bits of 8 int32 values, in order */
static inline __m128i fi_u8_low16(__m256i v) {
    const __m256i sel = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,
                                         0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1);
    return _mm256_castsi256_si128(
        _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, sel), _MM_SHUFFLE(0, 0, 2, 0)));
}
/* 4 x 8 int32 values in [0, 255] as 32 bytes, in order */
static inline __m256i fi_u8_bytes32(const __m256i* v) {
    const __m256i p = _mm256_packus_epi16(_mm256_packs_epi32(v[0], v[1]),
                                          _mm256_packs_epi32(v[2], v[3]));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
static inline __attribute__((always_inline)) void
fi_u8_hpairs_avx2(int32_t* d, const unsigned char* s, Py_ssize_t ns, const int32_t* base,
                  const int16_t* rel, const int16_t* wlo, const int16_t* whi, Py_ssize_t P,
                  Py_ssize_t n, int shift, int narrow, const int nch) {
    const __m256i half = _mm256_set1_epi32(shift > 0 ? 1 << (shift - 1) : 0);
    const __m256i zero = _mm256_setzero_si256(), top = _mm256_set1_epi32(255);
    const __m256i hib = _mm256_set1_epi16((short)0xFF00);
    const __m128i sh = _mm_cvtsi32_si128(shift);
    unsigned char pad[FI_U8_WINDOW];
    for (Py_ssize_t x0 = 0, b = 0; x0 < n; x0 += FI_U8_BLOCK, ++b) {
        const Py_ssize_t avail = ns - base[b], cnt = n - x0;
        const unsigned char* w = s + base[b];
        if (avail < 16 * nch) {   /* the row's end: a zero-padded copy */
            memset(pad, 0, sizeof pad);
            if (avail > 0) memcpy(pad, w, (size_t)avail);
            w = pad;
        }
        __m256i ch[4];
        for (int q = 0; q < nch; ++q)
            ch[q] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(w + 16 * q)));
        const Py_ssize_t at = b * P * 16;
        __m256i acc = zero, acch = zero;
        for (Py_ssize_t p = 0; p < P; ++p) {
            const __m256i r = _mm256_or_si256(
                _mm256_loadu_si256((const __m256i*)(rel + at + p * 16)), hib);
            const __m256i pick = fi_u8_pick(ch, r, nch);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(
                pick, _mm256_loadu_si256((const __m256i*)(wlo + at + p * 16))));
            if (whi)
                acch = _mm256_add_epi32(acch, _mm256_madd_epi16(
                    pick, _mm256_loadu_si256((const __m256i*)(whi + at + p * 16))));
        }
        if (whi) acc = _mm256_add_epi32(_mm256_slli_epi32(acch, 15), acc);
        if (shift > 0) {
            acc = _mm256_sra_epi32(_mm256_add_epi32(acc, half), sh);
            acc = _mm256_min_epi32(_mm256_max_epi32(acc, zero), top);
        }
        if (narrow) {
            const __m128i v = fi_u8_low16(_mm256_srai_epi32(acc, 4));
            if (cnt >= 8) _mm_storeu_si128((__m128i*)((int16_t*)d + x0), v);
            else {
                int16_t t16[8];
                _mm_storeu_si128((__m128i*)t16, v);
                memcpy((int16_t*)d + x0, t16, (size_t)cnt * sizeof(int16_t));
            }
        } else if (cnt >= 8) {
            _mm256_storeu_si256((__m256i*)(d + x0), acc);
        } else {
            int32_t t32[8];
            _mm256_storeu_si256((__m256i*)t32, acc);
            memcpy(d + x0, t32, (size_t)cnt * sizeof(int32_t));
        }
    }
}
#endif
static int fi_u8_hpairs(int32_t* d, const unsigned char* s, Py_ssize_t ns,
                        const int32_t* base, const int16_t* rel, const int16_t* wlo,
                        const int16_t* whi, Py_ssize_t P, Py_ssize_t n, int shift,
                        int narrow, int span) {
#if FI_U8_AVX2
    const int nch = span <= 16 ? 1 : (span <= 32 ? 2 : (span <= 48 ? 3 : 4));
    switch (nch) {
        case 1: fi_u8_hpairs_avx2(d, s, ns, base, rel, wlo, whi, P, n, shift, narrow, 1); break;
        case 2: fi_u8_hpairs_avx2(d, s, ns, base, rel, wlo, whi, P, n, shift, narrow, 2); break;
        case 3: fi_u8_hpairs_avx2(d, s, ns, base, rel, wlo, whi, P, n, shift, narrow, 3); break;
        default: fi_u8_hpairs_avx2(d, s, ns, base, rel, wlo, whi, P, n, shift, narrow, 4); break;
    }
    return 1;
#elif FI_U8_AVX512
    (void)span;
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
    (void)n; (void)shift; (void)narrow; (void)span;
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
#if FI_U8_AVX512
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
#elif FI_U8_AVX2
    if (a >= 0 && b >= 0 && a < 32768 && b < 32768) {
        const __m256i wa = _mm256_set1_epi16((short)a), wb = _mm256_set1_epi16((short)b);
        const __m256i two = _mm256_set1_epi16(2);
        for (; j + 32 <= L; j += 32) {
            __m256i v[2];
            for (int h = 0; h < 2; ++h) {
                const Py_ssize_t i = j + 16 * h;
                v[h] = _mm256_adds_epi16(
                    _mm256_mulhi_epi16(_mm256_loadu_si256((const __m256i*)(r0 + i)), wa),
                    _mm256_mulhi_epi16(_mm256_loadu_si256((const __m256i*)(r1 + i)), wb));
                v[h] = _mm256_srai_epi16(_mm256_adds_epi16(v[h], two), 2);
            }
            /* packus clips to [0, 255] (in lane order: the permute restores it) */
            _mm256_storeu_si256((__m256i*)(out + j), _mm256_permute4x64_epi64(
                _mm256_packus_epi16(v[0], v[1]), _MM_SHUFFLE(3, 1, 2, 0)));
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
/* The 2 x 2 box mean of interleaved pixels (1 to 4 channels), as the scalar
   fi_box2x2_* in resize.pyx: s = the four values in 16 bits, rounded half up
   (s + 2) >> 2 or half to even (s + 1 + ((s >> 2) & 1)) >> 2. Blocks of 48
   output values: the rounded sums of a window of 96 input values (three
   vectors of words), of which two word permutes keep every other pixel.
   ``perm`` is fi_u8_box2x2_perm's table for C. Returns the pixels done (the
   rest, fewer than a block and a pixel, are the caller's); 0 in a build
   without the vector instructions. */
static void fi_u8_box2x2_perm(int16_t* perm, Py_ssize_t C) {
#if FI_U8_AVX2
    /* AVX2: per 128-bit lane Q = C * (8 / C) outputs from 16 bytes of each
       row; byte pair o of the vpshufb table (perm's first 16 bytes) picks
       the two pixels' values of output o, which vpmaddubsw adds */
    unsigned char* t = (unsigned char*)perm;
    const int c = C >= 1 && C <= 4 ? (int)C : 1, q = c * (8 / c);
    memset(perm, 0, 64 * sizeof(int16_t));
    for (int o = 0; o < 8; ++o) {
        const int at = 2 * c * (o / c) + o % c;
        t[2 * o] = (unsigned char)(o < q ? at : 0x80);
        t[2 * o + 1] = (unsigned char)(o < q ? at + c : 0x80);
    }
    return;
#endif
    /* perm[0..31]: window places of output values 0..31 (vectors 0, 1);
       perm[32..47]: of values 32..47, counted from vector 1 */
    for (int j = 0; j < 64; ++j) {
        const int o = j, at = C >= 1 && C <= 4 ? (int)(2 * C * (o / C) + o % C) : 0;
        perm[j] = (int16_t)(j < 32 ? at : (j < 48 ? at - 32 : 0));
    }
}
static Py_ssize_t fi_u8_box2x2_vec(unsigned char* out, const unsigned char* r0,
                                   const unsigned char* r1, Py_ssize_t Wo, Py_ssize_t C,
                                   int half_up, const int16_t* perm) {
    Py_ssize_t x = 0;
#if FI_U8_AVX512
    if (C < 1 || C > 4) return 0;
    const __m512i p0 = _mm512_loadu_si512((const void*)perm);
    const __m512i p1 = _mm512_loadu_si512((const void*)(perm + 32));
    const __m512i bias = _mm512_set1_epi16(half_up ? 2 : 1), odd = _mm512_set1_epi16(half_up ? 0 : 1);
    const Py_ssize_t px = 48 / C, row = 2 * Wo * C;
    for (; 2 * x * C + 96 + C <= row; x += px) {
        const unsigned char* a = r0 + 2 * x * C;
        const unsigned char* b = r1 + 2 * x * C;
        __m512i t[3];
        for (int q = 0; q < 3; ++q) {
            __m512i s = _mm512_add_epi16(
                _mm512_add_epi16(_mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(a + 32 * q))),
                                 _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(a + 32 * q + C)))),
                _mm512_add_epi16(_mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(b + 32 * q))),
                                 _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(b + 32 * q + C)))));
            s = _mm512_add_epi16(_mm512_add_epi16(s, bias),
                                 _mm512_and_si512(_mm512_srli_epi16(s, 2), odd));
            t[q] = _mm512_srli_epi16(s, 2);
        }
        const __m512i lo = _mm512_permutex2var_epi16(t[0], p0, t[1]);
        const __m512i hi = _mm512_permutex2var_epi16(t[1], p1, t[2]);
        _mm256_storeu_si256((__m256i*)(out + x * C), _mm512_cvtepi16_epi8(lo));
        _mm_storeu_si128((__m128i*)(out + x * C + 32),
                         _mm256_castsi256_si128(_mm512_cvtepi16_epi8(hi)));
    }
#elif FI_U8_AVX2
    if (C < 1 || C > 4) return 0;
    const Py_ssize_t q = C * (8 / C), step = 2 * q / C, row = 2 * Wo * C;
    const __m256i sel = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)perm));
    const __m256i ones = _mm256_set1_epi8(1);
    const __m256i bias = _mm256_set1_epi16(half_up ? 2 : 1), odd = _mm256_set1_epi16(half_up ? 0 : 1);
    /* reads up to 2 q + 16 bytes on, writes q + 8 bytes on (the bytes past
       2 q are rewritten by the next block or the caller's tail) */
    for (; 2 * x * C + 2 * q + 16 <= row; x += step) {
        const unsigned char* a = r0 + 2 * x * C;
        const unsigned char* b = r1 + 2 * x * C;
        const __m256i va = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)a)),
            _mm_loadu_si128((const __m128i*)(a + 2 * q)), 1);
        const __m256i vb = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)b)),
            _mm_loadu_si128((const __m128i*)(b + 2 * q)), 1);
        __m256i sum = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_shuffle_epi8(va, sel), ones),
                                       _mm256_maddubs_epi16(_mm256_shuffle_epi8(vb, sel), ones));
        sum = _mm256_add_epi16(_mm256_add_epi16(sum, bias),
                               _mm256_and_si256(_mm256_srli_epi16(sum, 2), odd));
        const __m256i v = _mm256_packus_epi16(_mm256_srli_epi16(sum, 2), sum);
        _mm_storel_epi64((__m128i*)(out + x * C), _mm256_castsi256_si128(v));
        _mm_storel_epi64((__m128i*)(out + x * C + q), _mm256_extracti128_si256(v, 1));
    }
#else
    (void)out; (void)r0; (void)r1; (void)Wo; (void)C; (void)half_up; (void)perm;
#endif
    return x;
}
/* The float32 vertical blend of the uint8 engine (fi_u8_vrow_f in
   resize.pyx) on whole vectors: the same operations in the same order as
   that loop compiles to in the builds with FMA (a * r0 for one tap,
   fma(a, r0, b * r1) for two, then fma(c, rk, acc) per further tap), then
   clip to [0, 255] (NaN to 0) and round half to even. Returns the values
   done; the caller's loop does the rest. */
static Py_ssize_t fi_u8_vrow_f_vec(unsigned char* out, const float* cache, const Py_ssize_t* off,
                                   const float* w, Py_ssize_t K, Py_ssize_t L) {
    Py_ssize_t j = 0;
#if defined(__AVX512F__) && defined(__FMA__)
    const __m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255.0f);
    const float* r0 = cache + off[0];
    const __m512 a = _mm512_set1_ps(w[0]);
    for (; j + 16 <= L; j += 16) {
        __m512 v;
        if (K == 1) {
            v = _mm512_mul_ps(a, _mm512_loadu_ps(r0 + j));
        } else {
            v = _mm512_fmadd_ps(a, _mm512_loadu_ps(r0 + j),
                                _mm512_mul_ps(_mm512_set1_ps(w[1]),
                                              _mm512_loadu_ps(cache + off[1] + j)));
            for (Py_ssize_t k = 2; k < K; ++k)
                v = _mm512_fmadd_ps(_mm512_set1_ps(w[k]), _mm512_loadu_ps(cache + off[k] + j), v);
        }
        v = _mm512_min_ps(_mm512_max_ps(v, zero), top);   /* max(NaN, 0) is 0 */
        _mm_storeu_si128((__m128i*)(out + j), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
    }
#elif FI_U8_AVX2 && defined(__FMA__)
    const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.0f);
    const float* r0 = cache + off[0];
    const __m256 a = _mm256_set1_ps(w[0]);
    for (; j + 32 <= L; j += 32) {
        __m256i q[4];
        for (int h = 0; h < 4; ++h) {
            const Py_ssize_t i = j + 8 * h;
            __m256 v;
            if (K == 1) {
                v = _mm256_mul_ps(a, _mm256_loadu_ps(r0 + i));
            } else {
                v = _mm256_fmadd_ps(a, _mm256_loadu_ps(r0 + i),
                                    _mm256_mul_ps(_mm256_set1_ps(w[1]),
                                                  _mm256_loadu_ps(cache + off[1] + i)));
                for (Py_ssize_t k = 2; k < K; ++k)
                    v = _mm256_fmadd_ps(_mm256_set1_ps(w[k]), _mm256_loadu_ps(cache + off[k] + i), v);
            }
            v = _mm256_min_ps(_mm256_max_ps(v, zero), top);   /* max(NaN, 0) is 0 */
            q[h] = _mm256_cvtps_epi32(v);
        }
        _mm256_storeu_si256((__m256i*)(out + j), fi_u8_bytes32(q));
    }
#else
    (void)out; (void)cache; (void)off; (void)w; (void)K; (void)L;
#endif
    return j;
}
/* The fixed-point vertical blend (fi_u8_vrow_i in resize.pyx) on whole
   vectors: out[j] = clip((sum_k w[k] * rows[k][j] + 2^(shift-1)) >> shift),
   exact int32 sums. Returns the values done. */
static Py_ssize_t fi_u8_vrow_i_vec(unsigned char* out, const int32_t* cache, const Py_ssize_t* off,
                                   const int32_t* w, Py_ssize_t K, Py_ssize_t L, int shift) {
    Py_ssize_t j = 0;
#if FI_U8_AVX512
    const __m512i half = _mm512_set1_epi32(shift > 0 ? 1 << (shift - 1) : 0);
    const __m512i zero = _mm512_setzero_si512(), top = _mm512_set1_epi32(255);
    const __m128i sh = _mm_cvtsi32_si128(shift);
    for (; j + 16 <= L; j += 16) {
        __m512i acc = half;
        for (Py_ssize_t k = 0; k < K; ++k)
            acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(
                _mm512_set1_epi32(w[k]), _mm512_loadu_si512((const void*)(cache + off[k] + j))));
        acc = _mm512_min_epi32(_mm512_max_epi32(_mm512_sra_epi32(acc, sh), zero), top);
        _mm_storeu_si128((__m128i*)(out + j), _mm512_cvtepi32_epi8(acc));
    }
#elif FI_U8_AVX2
    const __m256i half = _mm256_set1_epi32(shift > 0 ? 1 << (shift - 1) : 0);
    const __m256i zero = _mm256_setzero_si256(), top = _mm256_set1_epi32(255);
    const __m128i sh = _mm_cvtsi32_si128(shift);
    for (; j + 32 <= L; j += 32) {
        __m256i acc[4];
        for (int h = 0; h < 4; ++h) {
            const Py_ssize_t i = j + 8 * h;
            acc[h] = half;
            for (Py_ssize_t k = 0; k < K; ++k)
                acc[h] = _mm256_add_epi32(acc[h], _mm256_mullo_epi32(
                    _mm256_set1_epi32(w[k]), _mm256_loadu_si256((const __m256i*)(cache + off[k] + i))));
            acc[h] = _mm256_min_epi32(_mm256_max_epi32(_mm256_sra_epi32(acc[h], sh), zero), top);
        }
        _mm256_storeu_si256((__m256i*)(out + j), fi_u8_bytes32(acc));
    }
#else
    (void)out; (void)cache; (void)off; (void)w; (void)K; (void)L; (void)shift;
#endif
    return j;
}
/* The horizontal pass after a vertical one (Pillow's order when the height
   shrinks and the width grows, fi_u8_hlast_i in resize.pyx) by fi_u8_hpairs:
   the blended row ``row`` (Li values, already clipped to [0, 255]) as bytes
   in ``bytes``, the sums in ``tmp`` (Lo int32), then
   out[x] = clip((sum + 2^(shift-1)) >> shift). Returns 0 (writing nothing)
   in a build without the vector instructions. */
static int fi_u8_hlast_pairs(unsigned char* out, const int32_t* row, unsigned char* bytes,
                             int32_t* tmp, Py_ssize_t Li, const int32_t* base,
                             const int16_t* rel, const int16_t* wlo, const int16_t* whi,
                             Py_ssize_t P, Py_ssize_t Lo, int shift, int span) {
    if (!FI_U8_HAVE_PAIRS) return 0;
    for (Py_ssize_t i = 0; i < Li; ++i) bytes[i] = (unsigned char)fi_u8_clip255(row[i]);
    fi_u8_hpairs(tmp, bytes, Li, base, rel, wlo, whi, P, Lo, shift, 0, span);
    const int32_t half = shift > 0 ? (int32_t)1 << (shift - 1) : 0;
    for (Py_ssize_t x = 0; x < Lo; ++x)   /* hpairs rounded already when shift > 0 */
        out[x] = (unsigned char)fi_u8_clip255(shift > 0 ? tmp[x] : (tmp[x] + half) >> shift);
    return 1;
}
#endif
