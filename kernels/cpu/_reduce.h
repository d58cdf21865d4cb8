/* Row reductions for the blend kernels, accumulated in double.
 *
 * `omp simd reduction` lets the compiler keep one partial sum per vector
 * lane (independent accumulators) and vectorize the loop; the summation
 * order depends only on the build, never on the thread count, so results
 * are bit-identical for any number of OpenMP threads.
 */
#ifndef FASTINTERP_REDUCE_H
#define FASTINTERP_REDUCE_H

#include <stddef.h>

#define FI_DEFINE_REDUCTIONS(SUFFIX, T)                                          \
/* aa = a.a, bb = b.b, ab = a.b */                                              \
static inline void fi_dot3_##SUFFIX(const T* a, const T* b, ptrdiff_t n,         \
                                     double* aa, double* bb, double* ab) {       \
    double saa = 0.0, sbb = 0.0, sab = 0.0;                                      \
    _Pragma("omp simd reduction(+:saa,sbb,sab)")                                 \
    for (ptrdiff_t i = 0; i < n; i++) {                                          \
        double x = a[i], y = b[i];                                               \
        saa += x * x; sbb += y * y; sab += x * y;                                \
    }                                                                            \
    *aa = saa; *bb = sbb; *ab = sab;                                             \
}                                                                                \
/* dm = |a*ia - b*ib|^2, dp = |a*ia + b*ib|^2 */                                 \
static inline void fi_sumdiff_##SUFFIX(const T* a, const T* b, ptrdiff_t n,      \
                                        double ia, double ib,                    \
                                        double* dm, double* dp) {                \
    double sm = 0.0, sp = 0.0;                                                   \
    _Pragma("omp simd reduction(+:sm,sp)")                                       \
    for (ptrdiff_t i = 0; i < n; i++) {                                          \
        double x = a[i] * ia, y = b[i] * ib;                                     \
        sm += (x - y) * (x - y); sp += (x + y) * (x + y);                        \
    }                                                                            \
    *dm = sm; *dp = sp;                                                          \
}

FI_DEFINE_REDUCTIONS(f, float)
FI_DEFINE_REDUCTIONS(d, double)

#endif
