/* Streaming (non-temporal) stores of whole 64-byte cache lines.

   An ordinary store to a line that is not in the cache first reads the line
   from memory (read for ownership), so an element-wise op writing a fresh
   output moves 1.25-1.33x the bytes it needs: lerp reads a, b, t and writes
   out, five streams for four. A streaming store writes the line without
   reading it, and leaves it out of the caches: right for an output far larger
   than the last-level cache (its first lines are evicted before the op ends
   anyway), wrong for one that fits (its consumer would then read it from
   memory). Callers choose by size.

   fi_stream_line_f32/_f64(dst, src): copy one line (16 floats or 8 doubles)
   from src (any alignment) to dst (64-byte aligned) with streaming stores.
   fi_stream_fence(): order the streaming stores before later stores (call it
   before another thread may read the output). FI_STREAM_STORES is 0 where the
   instructions do not exist; the functions are then plain copies.
*/
#ifndef FASTINTERP_NTSTORE_H
#define FASTINTERP_NTSTORE_H

#include <string.h>

#if defined(__SSE2__)
#include <immintrin.h>
#define FI_STREAM_STORES 1

static inline void fi_stream_line_f32(float* dst, const float* src) {
#if defined(__AVX512F__)
    _mm512_stream_ps(dst, _mm512_loadu_ps(src));
#elif defined(__AVX__)
    _mm256_stream_ps(dst, _mm256_loadu_ps(src));
    _mm256_stream_ps(dst + 8, _mm256_loadu_ps(src + 8));
#else
    for (int i = 0; i < 16; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
#endif
}

static inline void fi_stream_line_f64(double* dst, const double* src) {
#if defined(__AVX512F__)
    _mm512_stream_pd(dst, _mm512_loadu_pd(src));
#elif defined(__AVX__)
    _mm256_stream_pd(dst, _mm256_loadu_pd(src));
    _mm256_stream_pd(dst + 4, _mm256_loadu_pd(src + 4));
#else
    for (int i = 0; i < 8; i += 2) _mm_stream_pd(dst + i, _mm_loadu_pd(src + i));
#endif
}

static inline void fi_stream_fence(void) { _mm_sfence(); }

#else
#define FI_STREAM_STORES 0
static inline void fi_stream_line_f32(float* dst, const float* src) { memcpy(dst, src, 64); }
static inline void fi_stream_line_f64(double* dst, const double* src) { memcpy(dst, src, 64); }
static inline void fi_stream_fence(void) {}
#endif

#endif  /* FASTINTERP_NTSTORE_H */
