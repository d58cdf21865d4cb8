/* Conversions between float32 and the 16-bit storage formats (IEEE binary16 and
 * bfloat16), round to nearest even, exact in the widening direction.
 *
 * With F16C (x86-64 since Ivy Bridge; -march=native enables it) binary16 uses
 * the vcvtph2ps / vcvtps2ph instructions, 8 values at a time; elsewhere the
 * portable integer versions below (same results: NaN in, a quiet NaN out).
 * bfloat16 is the upper half of a float32, so both directions are integer
 * operations the compiler vectorizes. None depends on the FPU's flush-to-zero
 * or denormals-are-zero modes, except F16C's float->half of a float32
 * subnormal (which rounds to zero either way).
 */
#ifndef FASTINTERP_HALF_H
#define FASTINTERP_HALF_H

#include <stdint.h>
#include <string.h>
#include <stddef.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

static inline uint32_t fi_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float fi_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float fi_half_to_float_sw(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0)     /* zero or subnormal: m * 2^-24, exact (an integer times a power of 2) */
        return fi_bits_f32(fi_f32_bits((float)m * 5.9604644775390625e-08f) | sign);
    if (e == 31)    /* inf or NaN (payload kept, as the hardware does) */
        return fi_bits_f32(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u));
    return fi_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

static inline uint16_t fi_float_to_half_sw(float f)
{
    uint32_t u = fi_f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)                       /* NaN: quiet, keep the top payload bits */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u)                      /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) {                     /* below 2^-14: a half subnormal (or 0) */
        /* a * 2^24 rounded to an integer, half to even; a < 2^-14 so the result is <= 1024 */
        uint32_t e = a >> 23;
        if (e < 102u)                          /* below 2^-25: rounds to 0 */
            return (uint16_t)sign;
        uint32_t mant = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;             /* value = mant * 2^(e - 150); * 2^24 -> >> (126 - e) */
        uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        q += (rem > half) || (rem == half && (q & 1u));
        return (uint16_t)(sign | q);
    }
    /* normal: drop 13 mantissa bits, rounding to nearest even; a carry into the
       exponent is the right result (up to 0x7bff + 1 = inf, excluded above) */
    a += 0xfffu + ((a >> 13) & 1u);
    return (uint16_t)(sign | ((a - 0x38000000u) >> 13));
}

static inline float fi_bf16_to_float(uint16_t b) { return fi_bits_f32((uint32_t)b << 16); }

static inline uint16_t fi_float_to_bf16(float f)
{
    uint32_t u = fi_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)       /* NaN: quiet, keep sign and top payload */
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* dst[i] = src[i] for i in [0, n) */
static inline void fi_half_to_float_run(const uint16_t *src, float *dst, ptrdiff_t n)
{
    ptrdiff_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++)
        dst[i] = fi_half_to_float_sw(src[i]);
}

static inline void fi_float_to_half_run(const float *src, uint16_t *dst, ptrdiff_t n)
{
    ptrdiff_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++)
        dst[i] = fi_float_to_half_sw(src[i]);
}

static inline void fi_bf16_to_float_run(const uint16_t *src, float *dst, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        dst[i] = fi_bf16_to_float(src[i]);
}

static inline void fi_float_to_bf16_run(const float *src, uint16_t *dst, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        dst[i] = fi_float_to_bf16(src[i]);
}

#endif
