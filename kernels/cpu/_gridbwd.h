/* Bilinear grid_sample backward over channels-last (NHWC) images: one pass over a
 * planned run of output pixels (sample.pyx's plan_bilinear layout, see
 * _gridplan.h) handles all of a pixel's channels at once, as contiguous vectors:
 *
 *   grad_input: the four taps get w_k * grad_output[c] added, pixel after pixel
 *     (each element's additions in pixel order, as the channels-first sweep);
 *   grad_grid: d out / d x and d out / d y summed over the channels in
 *     FI_BWD_LANES interleaved partial sums (channel c goes to lane c % LANES),
 *     the lanes then added in order: a fixed order for every build and thread
 *     count (sample.pyx compiles with -ffp-contract=off), which the compiler
 *     vectorises without reassociating anything.
 *
 * A pixel with a tap outside the image (mask != 15, or wrap padding's split
 * taps) reads and writes only its valid taps, channel by channel, into the
 * same lanes.
 */
#ifndef FASTINTERP_GRIDBWD_H
#define FASTINTERP_GRIDBWD_H

#include <stddef.h>

#define FI_BWD_LANES 16

#define FI_DEFINE_GRIDBWD(SUFFIX, T)                                                 \
/* Channels [0, nc) of pixels [0, wo) of a planned run: ip/gip point at channel c0  \
   of the image and its gradient (pixel steps sx, sy), gop at the run's first      \
   output pixel's channel c0 (pixel step ostep); GX, GY get the grid sums added. */ \
static void fi_bwd_bilinear_nhwc_##SUFFIX(const T* ip, T* gip, const T* gop,         \
                                          ptrdiff_t nc, ptrdiff_t ostep,             \
                                          ptrdiff_t wo, ptrdiff_t sx, ptrdiff_t sy,  \
                                          const T* R, const ptrdiff_t* I,            \
                                          int do_input, int do_grid, T* GX, T* GY) { \
    const ptrdiff_t full = nc - nc % FI_BWD_LANES;                                   \
    for (ptrdiff_t j = 0; j < wo; ++j) {                                             \
        const ptrdiff_t m = I[j];                                                    \
        const T w[4] = {R[j], R[wo + j], R[2 * wo + j], R[3 * wo + j]};              \
        const T tx = R[4 * wo + j], ty = R[5 * wo + j];                              \
        const T one = 1, ux = one - tx, uy = one - ty;                               \
        const T* g = gop + j * ostep;                                                \
        T lx[FI_BWD_LANES], ly[FI_BWD_LANES];                                        \
        for (int l = 0; l < FI_BWD_LANES; ++l) { lx[l] = 0; ly[l] = 0; }             \
        if (m == 15) {                                                               \
            const ptrdiff_t b = I[wo + j];                                           \
            const T* p0 = ip + b;                                                    \
            const T* p1 = p0 + sx;                                                   \
            const T* p2 = p0 + sy;                                                   \
            const T* p3 = p2 + sx;                                                   \
            if (do_input) {                                                          \
                T* q0 = gip + b;                                                     \
                T* q1 = q0 + sx;                                                     \
                T* q2 = q0 + sy;                                                     \
                T* q3 = q2 + sx;                                                     \
                for (ptrdiff_t c = 0; c < nc; ++c) {                                 \
                    q0[c] = q0[c] + w[0] * g[c];                                     \
                    q1[c] = q1[c] + w[1] * g[c];                                     \
                    q2[c] = q2[c] + w[2] * g[c];                                     \
                    q3[c] = q3[c] + w[3] * g[c];                                     \
                }                                                                    \
            }                                                                        \
            if (do_grid) {                                                           \
                for (ptrdiff_t c0 = 0; c0 < full; c0 += FI_BWD_LANES)                \
                    for (int l = 0; l < FI_BWD_LANES; ++l) {                         \
                        const ptrdiff_t c = c0 + l;                                  \
                        lx[l] = lx[l] + ((p1[c] - p0[c]) * uy + (p3[c] - p2[c]) * ty) * g[c]; \
                        ly[l] = ly[l] + ((p2[c] - p0[c]) * ux + (p3[c] - p1[c]) * tx) * g[c]; \
                    }                                                                \
                for (ptrdiff_t c = full; c < nc; ++c) {                              \
                    const int l = (int)(c - full);                                   \
                    lx[l] = lx[l] + ((p1[c] - p0[c]) * uy + (p3[c] - p2[c]) * ty) * g[c]; \
                    ly[l] = ly[l] + ((p2[c] - p0[c]) * ux + (p3[c] - p1[c]) * tx) * g[c]; \
                }                                                                    \
            }                                                                        \
        } else {                                                                     \
            /* taps x0, x1 (slots 2, 3) and y0, y1 (slots 4, 5); tap k = x_(k&1)     \
               + y_(k>>1), read and written only where mask bit k is set */          \
            ptrdiff_t off[4];                                                        \
            for (int k = 0; k < 4; ++k)                                              \
                off[k] = I[(2 + (k & 1)) * wo + j] + I[(4 + (k >> 1)) * wo + j];     \
            for (ptrdiff_t c = 0; c < nc; ++c) {                                     \
                T v[4];                                                              \
                for (int k = 0; k < 4; ++k) {                                        \
                    const int in = (int)((m >> k) & 1);                              \
                    v[k] = in ? ip[off[k] + c] : (T)0;                               \
                    if (in && do_input)                                              \
                        gip[off[k] + c] = gip[off[k] + c] + w[k] * g[c];             \
                }                                                                    \
                if (do_grid) {                                                       \
                    const int l = (int)(c % FI_BWD_LANES);                           \
                    lx[l] = lx[l] + ((v[1] - v[0]) * uy + (v[3] - v[2]) * ty) * g[c]; \
                    ly[l] = ly[l] + ((v[2] - v[0]) * ux + (v[3] - v[1]) * tx) * g[c]; \
                }                                                                    \
            }                                                                        \
        }                                                                            \
        if (do_grid) {                                                               \
            T sxs = GX[j], sys = GY[j];                                              \
            for (int l = 0; l < FI_BWD_LANES; ++l) {                                 \
                sxs = sxs + lx[l];                                                   \
                sys = sys + ly[l];                                                   \
            }                                                                        \
            GX[j] = sxs;                                                             \
            GY[j] = sys;                                                             \
        }                                                                            \
    }                                                                                \
}

FI_DEFINE_GRIDBWD(f, float)
FI_DEFINE_GRIDBWD(d, double)

#endif
