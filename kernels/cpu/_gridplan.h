/* Bilinear grid_sample plans (sample.pyx's plan_bilinear) in blocks of
 * FI_PLAN_BLOCK pixels, written so that the compiler vectorises the
 * per-pixel arithmetic: the padding mode is switched outside the loops,
 * every loop body is branch-free, and NaN or out-of-range coordinates are
 * replaced by 0 before they are converted to integers.
 *
 * The operations and their order are those of the scalar helpers in
 * _taps.pxd and _gridaxis.pxd (sample.pyx compiles with -ffp-contract=off,
 * so no product is fused into an addition here either): the plans, and so
 * the results, are bit-identical to the scalar path in every build. Wrap
 * padding stays on the scalar path.
 *
 * Layout written (see sample.pyx), one slot of wo values per quantity so that
 * every store is a contiguous vector store: R[k wo + j] = pixel j's weights
 * nw, ne, sw, se (k < 4), then tx (k = 4), ty (5), d coordinate / d grid x, y
 * (6, 7; 0 without grad); I[j] = tap mask (bit k: tap k inside), I[wo + j] =
 * x0 + y0, I[(2 + k) wo + j] = offsets x0, x1, y0, y1 (0 for a tap outside).
 * Full blocks run with the constant count FI_PLAN_BLOCK (no remainder loops).
 */
#ifndef FASTINTERP_GRIDPLAN_H
#define FASTINTERP_GRIDPLAN_H

#include <math.h>
#include <stddef.h>
#include <string.h>

#define FI_PLAN_BLOCK 16
#if defined(__GNUC__)
#define FI_PLAN_INLINE inline __attribute__((always_inline))
#else
#define FI_PLAN_INLINE inline
#endif

/* Axis slots (_gridaxis.pxd's A_*) and padding codes (PAD_*). */
enum { FI_A_SCALE, FI_A_SHIFT, FI_A_MAX, FI_A_LOW, FI_A_SPAN2, FI_A_EMPTY, FI_A_SIZE,
       FI_A_LIMIT };
enum { FI_PAD_ZEROS, FI_PAD_BORDER, FI_PAD_REFLECTION };

#define FI_DEFINE_GRIDPLAN(SUFFIX, T, FLOOR, TRUNC, FABS)                           \
/* Padded coordinates of n <= FI_PLAN_BLOCK grid values g[0], g[2], ... along      \
   one axis, and (grad) d coordinate / d g, else 0: _gridaxis.coordinate. */       \
static inline void fi_plan_axis_##SUFFIX(const T* g, ptrdiff_t n, const T* a,      \
                                         int padding, int grad, T* x, T* m) {      \
    const T scale = a[FI_A_SCALE], shift = a[FI_A_SHIFT], hi = a[FI_A_MAX];         \
    const T low = a[FI_A_LOW], span2 = a[FI_A_SPAN2];                               \
    const T mult = grad ? scale : (T)0;                                             \
    for (ptrdiff_t k = 0; k < n; ++k) {                                             \
        x[k] = (g[2 * k] + (T)1) * scale - shift;                                   \
        m[k] = mult;                                                                \
    }                                                                               \
    if (padding == FI_PAD_REFLECTION) {                                             \
        if (a[FI_A_EMPTY] != 0) {                                                   \
            for (ptrdiff_t k = 0; k < n; ++k) { x[k] = 0; m[k] = 0; }               \
        } else {                                                                    \
            for (ptrdiff_t k = 0; k < n; ++k) {                                     \
                T d = x[k] - low;                                                   \
                T r = FABS(d);                                                      \
                T flips = TRUNC(r / span2);                                         \
                T extra = r - flips * span2;                                        \
                T other = span2 - extra;                                            \
                int flip = extra > other;                                           \
                x[k] = (flip ? other : extra) + low;                                \
                m[k] = (grad && flip != (d < 0)) ? -m[k] : m[k];                    \
            }                                                                       \
        }                                                                           \
    }                                                                               \
    if (padding == FI_PAD_BORDER || padding == FI_PAD_REFLECTION) {                 \
        for (ptrdiff_t k = 0; k < n; ++k) {                                         \
            T v = x[k];                                                             \
            int inside = v > 0 && v < hi;                                           \
            x[k] = inside ? v : (v > 0 ? hi : (T)0);                                \
            m[k] = inside ? m[k] : (T)0;                                            \
        }                                                                           \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* Taps floor(x), floor(x) + 1 of one axis: inside bits, element offsets, the      \
   fraction t (_gridaxis.linear_axis without wrap). */                              \
static inline void fi_plan_taps_##SUFFIX(const T* x, ptrdiff_t n, T size,          \
                                         ptrdiff_t stride, int* in0, int* in1,     \
                                         ptrdiff_t* o0, ptrdiff_t* o1, T* t) {     \
    for (ptrdiff_t k = 0; k < n; ++k) {                                             \
        T f = FLOOR(x[k]);                                                          \
        T f1 = f + (T)1;                                                            \
        int a = f > -1 && f < size, b = f1 > -1 && f1 < size;                       \
        t[k] = x[k] - f;                                                            \
        in0[k] = a;                                                                 \
        in1[k] = b;                                                                 \
        o0[k] = (ptrdiff_t)(int)(a ? f : (T)0) * stride;                            \
        o1[k] = (ptrdiff_t)(int)(b ? f1 : (T)0) * stride;                           \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* Pixels j0 <= j < j0 + n (n <= FI_PLAN_BLOCK) of plan_bilinear. */              \
static FI_PLAN_INLINE void fi_plan_block_##SUFFIX(const T* g, ptrdiff_t j0, ptrdiff_t n, \
                                          ptrdiff_t wo, int padding, int grad,      \
                                          const T* ax, const T* ay, ptrdiff_t sx,   \
                                          ptrdiff_t sy, T* R, ptrdiff_t* I) {       \
    T x[FI_PLAN_BLOCK], y[FI_PLAN_BLOCK], mx[FI_PLAN_BLOCK], my[FI_PLAN_BLOCK];     \
    T tx[FI_PLAN_BLOCK], ty[FI_PLAN_BLOCK];                                         \
    int bx0[FI_PLAN_BLOCK], bx1[FI_PLAN_BLOCK], by0[FI_PLAN_BLOCK], by1[FI_PLAN_BLOCK]; \
    ptrdiff_t ox0[FI_PLAN_BLOCK], ox1[FI_PLAN_BLOCK], oy0[FI_PLAN_BLOCK], oy1[FI_PLAN_BLOCK]; \
    fi_plan_axis_##SUFFIX(g + 2 * j0, n, ax, padding, grad, x, mx);                 \
    fi_plan_axis_##SUFFIX(g + 2 * j0 + 1, n, ay, padding, grad, y, my);             \
    fi_plan_taps_##SUFFIX(x, n, ax[FI_A_LIMIT], sx, bx0, bx1, ox0, ox1, tx);         \
    fi_plan_taps_##SUFFIX(y, n, ay[FI_A_LIMIT], sy, by0, by1, oy0, oy1, ty);         \
    /* Each slot's n values are computed into a local block, then copied out:      \
       the compiler cannot tell that the slots (wo apart) do not overlap, and would \
       keep a loop storing into them directly scalar. */                            \
    T w[4][FI_PLAN_BLOCK];                                                          \
    ptrdiff_t mask[FI_PLAN_BLOCK], base[FI_PLAN_BLOCK];                             \
    for (ptrdiff_t k = 0; k < n; ++k) {                                             \
        T one = 1;                                                                  \
        w[0][k] = (one - ty[k]) * (one - tx[k]);                                    \
        w[1][k] = (one - ty[k]) * tx[k];                                            \
        w[2][k] = ty[k] * (one - tx[k]);                                            \
        w[3][k] = ty[k] * tx[k];                                                    \
        mask[k] = (bx0[k] & by0[k]) | (bx1[k] & by0[k]) << 1                        \
                  | (bx0[k] & by1[k]) << 2 | (bx1[k] & by1[k]) << 3;                \
        base[k] = ox0[k] + oy0[k];                                                  \
    }                                                                               \
    const T* rslots[8] = {w[0], w[1], w[2], w[3], tx, ty, mx, my};                  \
    const ptrdiff_t* islots[6] = {mask, base, ox0, ox1, oy0, oy1};                  \
    for (int s = 0; s < 8; ++s)                                                     \
        memcpy(R + s * wo + j0, rslots[s], (size_t)n * sizeof(T));                  \
    for (int s = 0; s < 6; ++s)                                                     \
        memcpy(I + s * wo + j0, islots[s], (size_t)n * sizeof(ptrdiff_t));         \
}                                                                                   \
                                                                                    \
/* plan_bilinear for padding zeros, border or reflection (see the top): full       \
   blocks with the constant count (vectorised without remainder loops). */          \
static void fi_plan_bilinear_##SUFFIX(const T* g, ptrdiff_t wo, int padding,        \
                                      int grad, const T* ax, const T* ay,           \
                                      ptrdiff_t sx, ptrdiff_t sy, T* R,             \
                                      ptrdiff_t* I) {                               \
    ptrdiff_t j0 = 0;                                                               \
    for (; j0 + FI_PLAN_BLOCK <= wo; j0 += FI_PLAN_BLOCK)                           \
        fi_plan_block_##SUFFIX(g, j0, FI_PLAN_BLOCK, wo, padding, grad, ax, ay,     \
                               sx, sy, R, I);                                       \
    if (j0 < wo)                                                                    \
        fi_plan_block_##SUFFIX(g, j0, wo - j0, wo, padding, grad, ax, ay, sx, sy,   \
                               R, I);                                               \
}

FI_DEFINE_GRIDPLAN(f, float, floorf, truncf, fabsf)
FI_DEFINE_GRIDPLAN(d, double, floor, trunc, fabs)

#endif
