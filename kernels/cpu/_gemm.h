/* A deterministic, cache-blocked, packed GEMM (float32 and float64).
 *
 *     C[m, n] = beta * C + alpha * A[m, k] @ B[k, n]
 *
 * A, B are read through arbitrary element strides (rows, columns; operands
 * stored the other way round are packed by the transposes of _transpose.h); C has
 * unit column stride and row stride rsc. beta is 0 (C is overwritten, never
 * read) or 1.
 *
 * BLIS-style: B is packed into panels of FI_NR columns (kc x NR each), A
 * into panels of FI_MR rows (MR x kc each), both zero-padded to full panels;
 * a register-blocked MR x NR micro-kernel, written with GCC vector
 * extensions (the vector width follows __AVX512F__ / __AVX__), accumulates
 * one micro-tile over one kc block. Every output element is then
 *
 *     c = beta*c + alpha*dot(block 0);  c += alpha*dot(block 1); ...
 *
 * with each block's dot product accumulated over k in increasing order: the
 * arithmetic of an element never depends on where it lies in a tile, on the
 * tile shape, or on any thread (the routine is single-threaded; callers
 * parallelise over fixed output tiles). Results are bit-identical for a
 * given build, whatever the thread count.
 *
 * The caller provides the workspace: fi_gemm_work_<t>() elements of the
 * type, aligned to 64 bytes (see FI_GEMM_ALIGN).
 *
 * An optional epilogue epi(ctx, i, j, mr, nr, t, FI_NR) is called on each
 * micro-tile (rows i..i+mr, columns j..j+nr of C) after its final update,
 * on the finished values in an L1 buffer t (row stride FI_NR) that are then
 * stored into C: a fused finish costs no extra pass over C. The finish of a
 * squared-distance tile, (r_i + s_j) + alpha * acc with a per-element check,
 * can instead run on the accumulators in registers (fi_rank1_<t>): full tiles
 * it accepts skip the buffer, the epilogue call and the copy into C.
 */
#ifndef FASTINTERP_GEMM_H
#define FASTINTERP_GEMM_H

#include <stddef.h>
#include <string.h>

#include "_transpose.h"

#if defined(__AVX512F__)
#define FI_VBYTES 64
#define FI_MR 12           /* 2*MR accumulators + 2 B vectors + 1 broadcast <= 32 registers */
#elif defined(__AVX__)
#define FI_VBYTES 32
#define FI_MR 6            /* <= 16 registers */
#else
#define FI_VBYTES 16
#define FI_MR 6
#endif
#define FI_GEMM_ALIGN 64

typedef float fi_vec_f __attribute__((vector_size(FI_VBYTES), aligned(FI_VBYTES)));
typedef double fi_vec_d __attribute__((vector_size(FI_VBYTES), aligned(FI_VBYTES)));

/* Block sizes (elements). The micro-panel of B (KC x NR) stays in L1, the
 * packed block of A (MC x KC) in L2, the packed block of B (KC x NC) in L3. */
#define FI_NR_f (2 * FI_VBYTES / 4)
#define FI_NR_d (2 * FI_VBYTES / 8)
#define FI_KC_f 256
#define FI_KC_d 192
/* Each block's dot products are summed in steps of FI_KSTEP values of k, each step
 * from zero, then added to the block's running sums: a float32 sum of k same-sign
 * products (the centred rows of two clusters, say) then errs by ~(KSTEP + k/KSTEP) u
 * instead of ~k u (4.4x less at k = 256). float64 keeps one step per block. */
#define FI_KSTEP_f 32
#define FI_KSTEP_d FI_KC_d
#define FI_MC_f (FI_MR * 32)
#define FI_MC_d (FI_MR * 12)
#define FI_NC_f 2048
#define FI_NC_d 1024

/* The finish of a squared-distance tile, fused into the micro-kernel: row addends
   r (indexed like C's rows), column addends s (like its columns), the acceptance
   factor tau and whether to take square roots (see fi_ukr_rank1_<t>), for
   either element type. */
typedef struct {
    const void* r;      /* T*: one addend per row of C */
    const void* s;      /* T*: one per column */
    double tau;         /* rounded to T before use */
    int take_sqrt;
} fi_rank1;

/* Vectors stored to or loaded from any element of C (element alignment only). */
typedef float fi_uvec_f __attribute__((vector_size(FI_VBYTES), aligned(sizeof(float))));
typedef double fi_uvec_d __attribute__((vector_size(FI_VBYTES), aligned(sizeof(double))));
typedef int fi_mask_f __attribute__((vector_size(FI_VBYTES)));
typedef long long fi_mask_d __attribute__((vector_size(FI_VBYTES)));
static inline float fi_sqrt_f(float v) { return __builtin_sqrtf(v); }
static inline double fi_sqrt_d(double v) { return __builtin_sqrt(v); }

#define FI_ROUND_UP(a, b) ((((a) + (b) - 1) / (b)) * (b))

#define FI_DEFINE_GEMM(S, T)                                                      \
                                                                                  \
/* Workspace (elements of T) that fi_gemm_##S needs. */                           \
static inline size_t fi_gemm_work_##S(void) {                                     \
    return (size_t) FI_MC_##S * FI_KC_##S                                         \
         + (size_t) FI_KC_##S * FI_ROUND_UP(FI_NC_##S, FI_NR_##S)                 \
         + (size_t) FI_MR * FI_NR_##S;                                            \
}                                                                                 \
                                                                                  \
/* c0/c1[MR] = a_panel (MR x kc) @ b_panel (kc x NR), k in increasing order.       \
   Meanwhile the next micro-tile of C (pn/2 rows from pc, row stride prs; pn may  \
   be 0) is prefetched for writing, one line every 8 steps of k: issued in one    \
   burst before the tile, the 2 MR prefetches of lines that are not cached filled \
   the line-fill buffers and stalled the core (about 8% of a 4096 x 8192 x 256    \
   distance matrix on one AVX-512 core); spread out, they cost nothing. */       \
static inline __attribute__((always_inline))                                     \
void fi_accumulate_##S(size_t kc, const T* restrict a, const T* restrict b,      \
                       fi_vec_##S c0[FI_MR], fi_vec_##S c1[FI_MR],               \
                       const T* pc, ptrdiff_t prs, size_t pn) {                  \
    enum { NV = FI_VBYTES / sizeof(T) };                                          \
    a = (const T*) __builtin_assume_aligned(a, FI_GEMM_ALIGN);                    \
    b = (const T*) __builtin_assume_aligned(b, FI_GEMM_ALIGN);                    \
    for (size_t p0 = 0; p0 < kc; p0 += FI_KSTEP_##S) {                            \
        const size_t p1 = kc - p0 < FI_KSTEP_##S ? kc : p0 + FI_KSTEP_##S;        \
        fi_vec_##S d0[FI_MR], d1[FI_MR];                                          \
        for (int i = 0; i < FI_MR; i++) {                                         \
            d0[i] = (fi_vec_##S){0};                                              \
            d1[i] = (fi_vec_##S){0};                                              \
        }                                                                         \
        for (size_t p = p0; p < p1; p++) {                                        \
            const fi_vec_##S b0 = *(const fi_vec_##S*) (b + p * 2 * NV);          \
            const fi_vec_##S b1 = *(const fi_vec_##S*) (b + p * 2 * NV + NV);     \
            const T* ap = a + p * FI_MR;                                          \
            _Pragma("GCC unroll 16")                                              \
            for (int i = 0; i < FI_MR; i++) {                                     \
                const fi_vec_##S ai = ap[i] - (fi_vec_##S){0};                    \
                d0[i] += ai * b0;                                                 \
                d1[i] += ai * b1;                                                 \
            }                                                                     \
            if ((p & 7) == 0 && (p >> 3) < pn)                                    \
                __builtin_prefetch(pc + (ptrdiff_t) (p >> 4) * prs               \
                                   + ((p >> 3) & 1) * (FI_NR_##S - 1), 1, 3);     \
        }                                                                         \
        for (int i = 0; i < FI_MR; i++) {   /* the first step's sums as they are */ \
            c0[i] = p0 == 0 ? d0[i] : c0[i] + d0[i];                              \
            c1[i] = p0 == 0 ? d1[i] : c1[i] + d1[i];                              \
        }                                                                         \
    }                                                                             \
    for (size_t q = (kc + 7) >> 3; q < pn; q++)   /* a short k: the rest now */   \
        __builtin_prefetch(pc + (ptrdiff_t) (q >> 1) * prs                       \
                           + (q & 1) * (FI_NR_##S - 1), 1, 3);                    \
}                                                                                 \
                                                                                  \
/* C[MR x NR] (row stride rsc) = alpha * (a_panel @ b_panel), stored from the      \
   registers: with alpha = 1 the micro-tile itself (into the buffer t), else what \
   fi_update would store from t, without the pass through it. pc, prs, pn: the    \
   next micro-tile of C to prefetch (see fi_accumulate). */                       \
static inline void fi_ukr_scale_##S(size_t kc, const T* restrict a,              \
                                    const T* restrict b, T alpha,                \
                                    T* restrict c, ptrdiff_t rsc,                \
                                    const T* pc, ptrdiff_t prs, size_t pn) {      \
    enum { NV = FI_VBYTES / sizeof(T) };                                          \
    fi_vec_##S c0[FI_MR], c1[FI_MR];                                              \
    fi_accumulate_##S(kc, a, b, c0, c1, pc, prs, pn);                             \
    for (int i = 0; i < FI_MR; i++) {                                             \
        *(fi_uvec_##S*) (c + (ptrdiff_t) i * rsc) = alpha * c0[i];                \
        *(fi_uvec_##S*) (c + (ptrdiff_t) i * rsc + NV) = alpha * c1[i];           \
    }                                                                             \
}                                                                                 \
                                                                                  \
/* t[MR x NR] = a_panel (MR x kc) @ b_panel (kc x NR), k in increasing order;     \
   prefetches C's micro-tile pc (pn: see fi_accumulate; row stride rsc). */       \
static inline void fi_ukr_##S(size_t kc, const T* restrict a,                     \
                              const T* restrict b, T* restrict t,                 \
                              const T* pc, ptrdiff_t prs, size_t pn) {            \
    fi_ukr_scale_##S(kc, a, b, (T) 1, t, FI_NR_##S, pc, prs, pn);                \
}                                                                                 \
                                                                                  \
/* A full MR x NR tile of C, overwritten and finished as a squared-distance tile  \
   without leaving the registers: v = (r[i] + s[j]) + alpha * acc, then sqrt(v)   \
   if asked, each operation rounded as in fi_finish and the epilogue. Returns 1   \
   when every v > tau * (r[i] + s[j]); otherwise 0, and the caller redoes the     \
   tile through the epilogue (which overwrites all of it). */                    \
static inline int fi_ukr_rank1_##S(size_t kc, const T* restrict a,               \
                                   const T* restrict b, T alpha,                 \
                                   const fi_rank1* fin, size_t i0, size_t j0, \
                                   T* restrict c, ptrdiff_t rsc,                 \
                                   const T* pc, size_t pn) {                      \
    enum { NV = FI_VBYTES / sizeof(T) };                                          \
    fi_vec_##S c0[FI_MR], c1[FI_MR];                                              \
    fi_accumulate_##S(kc, a, b, c0, c1, pc, rsc, pn);                             \
    const T* r = (const T*) fin->r + i0;                                          \
    const fi_vec_##S s0 = *(const fi_uvec_##S*) ((const T*) fin->s + j0);             \
    const fi_vec_##S s1 = *(const fi_uvec_##S*) ((const T*) fin->s + j0 + NV);        \
    const fi_vec_##S tau = (T) fin->tau - (fi_vec_##S){0};                        \
    fi_mask_##S bad = {0};                                                        \
    for (int i = 0; i < FI_MR; i++) {                                             \
        fi_vec_##S m0 = alpha * c0[i], m1 = alpha * c1[i];                        \
        /* the products round on their own (no fused multiply-add), as in         \
           fi_finish, which stores them before the epilogue adds */               \
        __asm__("" : "+x"(m0), "+x"(m1));                                         \
        const fi_vec_##S p0 = r[i] + s0, p1 = r[i] + s1;                          \
        fi_vec_##S v0 = p0 + m0, v1 = p1 + m1;                                    \
        bad |= ~(v0 > tau * p0) | ~(v1 > tau * p1);                               \
        if (fin->take_sqrt)                                                       \
            for (int l = 0; l < NV; l++) {                                        \
                v0[l] = fi_sqrt_##S(v0[l]);                                       \
                v1[l] = fi_sqrt_##S(v1[l]);                                       \
            }                                                                     \
        *(fi_uvec_##S*) (c + (ptrdiff_t) i * rsc) = v0;                               \
        *(fi_uvec_##S*) (c + (ptrdiff_t) i * rsc + NV) = v1;                          \
    }                                                                             \
    int accepted = 1;                                                             \
    for (int l = 0; l < NV; l++)                                                  \
        accepted &= bad[l] == 0;                                                  \
    return accepted;                                                              \
}                                                                                 \
                                                                                  \
/* Pack B[0:kc, 0:nc] (strides rs, cs) into kc x NR panels, zero-padded. */        \
static void fi_pack_b_##S(size_t kc, size_t nc, const T* b, ptrdiff_t rs,         \
                          ptrdiff_t cs, T* restrict dst) {                        \
    for (size_t j0 = 0; j0 < nc; j0 += FI_NR_##S) {                               \
        size_t nr = nc - j0 < FI_NR_##S ? nc - j0 : FI_NR_##S;                    \
        T* panel = dst + j0 * kc;                                                 \
        const T* src = b + (ptrdiff_t) j0 * cs;                                   \
        if (nr < FI_NR_##S)                                                       \
            memset(panel, 0, kc * FI_NR_##S * sizeof(T));                         \
        if (cs == 1 && nr == FI_NR_##S) {   /* constant-size row copies */        \
            for (size_t p = 0; p < kc; p++)                                       \
                memcpy(panel + p * FI_NR_##S, src + (ptrdiff_t) p * rs,           \
                       FI_NR_##S * sizeof(T));                                    \
        } else if (cs == 1) {                                                     \
            for (size_t p = 0; p < kc; p++)                                       \
                for (size_t j = 0; j < nr; j++)                                   \
                    panel[p * FI_NR_##S + j] = src[(ptrdiff_t) p * rs + j];       \
        } else if (rs == 1) {   /* B's columns are rows in memory: a transpose */  \
            fi_transpose_##S(src, cs, panel, FI_NR_##S, (ptrdiff_t) nr, (ptrdiff_t) kc); \
        } else {                                                                  \
            for (size_t j = 0; j < nr; j++)                                       \
                for (size_t p = 0; p < kc; p++)                                   \
                    panel[p * FI_NR_##S + j] = src[(ptrdiff_t) p * rs + (ptrdiff_t) j * cs]; \
        }                                                                         \
    }                                                                             \
}                                                                                 \
                                                                                  \
/* Pack A[0:mc, 0:kc] (strides rs, cs) into MR x kc panels, zero-padded. */       \
static void fi_pack_a_##S(size_t mc, size_t kc, const T* a, ptrdiff_t rs,         \
                          ptrdiff_t cs, T* restrict dst) {                        \
    for (size_t i0 = 0; i0 < mc; i0 += FI_MR) {                                   \
        size_t mr = mc - i0 < FI_MR ? mc - i0 : FI_MR;                            \
        T* panel = dst + i0 * kc;                                                 \
        const T* src = a + (ptrdiff_t) i0 * rs;                                   \
        if (mr < FI_MR)                                                           \
            memset(panel, 0, kc * FI_MR * sizeof(T));                             \
        if (rs == 1 && mr == FI_MR) {       /* constant-size column copies */     \
            for (size_t p = 0; p < kc; p++)                                       \
                memcpy(panel + p * FI_MR, src + (ptrdiff_t) p * cs, FI_MR * sizeof(T)); \
        } else if (rs == 1) {                                                     \
            for (size_t p = 0; p < kc; p++)                                       \
                for (size_t i = 0; i < mr; i++)                                   \
                    panel[p * FI_MR + i] = src[(ptrdiff_t) p * cs + i];           \
        } else if (cs == 1) {   /* A's rows are contiguous: a transpose */       \
            fi_transpose_##S(src, rs, panel, FI_MR, (ptrdiff_t) mr, (ptrdiff_t) kc); \
        } else {                                                                  \
            for (size_t i = 0; i < mr; i++)                                       \
                for (size_t p = 0; p < kc; p++)                                   \
                    panel[p * FI_MR + i] = src[(ptrdiff_t) i * rs + (ptrdiff_t) p * cs]; \
        }                                                                         \
    }                                                                             \
}                                                                                 \
                                                                                  \
/* C[mr x nr] = (first ? beta * C : C) + alpha * t, t an MR x NR micro-tile. */   \
static inline void fi_update_##S(size_t mr, size_t nr, const T* restrict t,       \
                                 T alpha, int overwrite, T* restrict c,           \
                                 ptrdiff_t rsc) {                                 \
    for (size_t i = 0; i < mr; i++) {                                             \
        T* row = c + (ptrdiff_t) i * rsc;                                         \
        const T* ti = t + i * FI_NR_##S;                                          \
        if (overwrite) {                                                          \
            for (size_t j = 0; j < nr; j++) row[j] = alpha * ti[j];               \
        } else {                                                                  \
            for (size_t j = 0; j < nr; j++) row[j] += alpha * ti[j];              \
        }                                                                         \
    }                                                                             \
}                                                                                 \
                                                                                  \
/* t[mr x nr] = (overwrite ? 0 : C) + alpha * t: the final value, kept in t. */    \
static inline void fi_finish_##S(size_t mr, size_t nr, T* restrict t, T alpha,   \
                                 int overwrite, const T* restrict c, ptrdiff_t rsc) { \
    for (size_t i = 0; i < mr; i++) {                                             \
        const T* row = c + (ptrdiff_t) i * rsc;                                   \
        T* ti = t + i * FI_NR_##S;                                                \
        if (overwrite) {                                                          \
            for (size_t j = 0; j < nr; j++) ti[j] = alpha * ti[j];                \
        } else {                                                                  \
            for (size_t j = 0; j < nr; j++) ti[j] = row[j] + alpha * ti[j];       \
        }                                                                         \
    }                                                                             \
}                                                                                 \
                                                                                  \
/* C[mr x nr] = t. */                                                             \
static inline void fi_store_##S(size_t mr, size_t nr, const T* restrict t,        \
                                T* restrict c, ptrdiff_t rsc) {                   \
    if (nr == FI_NR_##S) {   /* constant size: a few vector moves per row */    \
        for (size_t i = 0; i < mr; i++)                                           \
            memcpy(c + (ptrdiff_t) i * rsc, t + i * FI_NR_##S, FI_NR_##S * sizeof(T)); \
    } else {                                                                      \
        for (size_t i = 0; i < mr; i++)                                           \
            for (size_t j = 0; j < nr; j++)                                       \
                c[(ptrdiff_t) i * rsc + j] = t[i * FI_NR_##S + j];                \
    }                                                                             \
}                                                                                 \
                                                                                  \
typedef void (*fi_epilogue_##S)(void* ctx, size_t i, size_t j, size_t mr,        \
                                size_t nr, T* c, ptrdiff_t rsc);                  \
                                                                                  \
/* C = beta * C + alpha * A @ B (beta 0 or 1), then epi (may be NULL) on every    \
   micro-tile; single-threaded, deterministic. With fin (may be NULL), full tiles \
   of an overwritten C in one k block are first tried by fi_ukr_rank1, and only   \
   those it does not accept go through epi (which must compute what it would). \
   work: fi_gemm_work_##S() elements, FI_GEMM_ALIGN-aligned. */                   \
static void fi_gemm_##S(size_t m, size_t n, size_t k, T alpha,                    \
                        const T* a, ptrdiff_t rsa, ptrdiff_t csa,                 \
                        const T* b, ptrdiff_t rsb, ptrdiff_t csb,                 \
                        T beta, T* c, ptrdiff_t rsc, T* work,                     \
                        fi_epilogue_##S epi, void* ctx,                           \
                        const fi_rank1* fin) {                                \
    T* ap = work;                                                                 \
    T* bp = ap + (size_t) FI_MC_##S * FI_KC_##S;                                  \
    T* t = bp + (size_t) FI_KC_##S * FI_ROUND_UP(FI_NC_##S, FI_NR_##S);           \
    if (m == 0 || n == 0)                                                         \
        return;                                                                   \
    if (k == 0) {                                                                 \
        for (size_t i = 0; i < m; i++)                                            \
            for (size_t j = 0; j < n; j++)                                        \
                c[(ptrdiff_t) i * rsc + j] = beta == 0 ? 0 : c[(ptrdiff_t) i * rsc + j]; \
        if (epi)                                                                  \
            epi(ctx, 0, 0, m, n, c, rsc);                                         \
        return;                                                                   \
    }                                                                             \
    for (size_t jc = 0; jc < n; jc += FI_NC_##S) {                                \
        size_t nc = n - jc < FI_NC_##S ? n - jc : FI_NC_##S;                      \
        for (size_t pc = 0; pc < k; pc += FI_KC_##S) {                            \
            size_t kc = k - pc < FI_KC_##S ? k - pc : FI_KC_##S;                  \
            int overwrite = pc == 0 && beta == 0;                                 \
            int last = pc + kc == k;                                              \
            fi_pack_b_##S(kc, nc, b + (ptrdiff_t) pc * rsb + (ptrdiff_t) jc * csb, \
                          rsb, csb, bp);                                          \
            for (size_t ic = 0; ic < m; ic += FI_MC_##S) {                        \
                size_t mc = m - ic < FI_MC_##S ? m - ic : FI_MC_##S;              \
                fi_pack_a_##S(mc, kc, a + (ptrdiff_t) ic * rsa + (ptrdiff_t) pc * csa, \
                              rsa, csa, ap);                                      \
                for (size_t jr = 0; jr < nc; jr += FI_NR_##S) {                   \
                    size_t nr = nc - jr < FI_NR_##S ? nc - jr : FI_NR_##S;        \
                    for (size_t ir = 0; ir < mc; ir += FI_MR) {                   \
                        size_t mr = mc - ir < FI_MR ? mc - ir : FI_MR;            \
                        T* ct = c + (ptrdiff_t) (ic + ir) * rsc + jc + jr;        \
                        /* the next micro-tile of C, fetched while this one runs */ \
                        const T* pc = NULL;                                       \
                        size_t pn = 0;                                            \
                        if (ir + FI_MR < mc) {                                    \
                            pc = ct + (ptrdiff_t) FI_MR * rsc;                    \
                            pn = 2 * (mc - ir - FI_MR < FI_MR ? mc - ir - FI_MR : FI_MR); \
                        } else if (jr + FI_NR_##S < nc) {                         \
                            pc = c + (ptrdiff_t) ic * rsc + jc + jr + FI_NR_##S;  \
                            pn = 2 * (mc < FI_MR ? mc : FI_MR);                   \
                        }                                                         \
                        int full = mr == FI_MR && nr == FI_NR_##S;               \
                        if (full && overwrite && last && fin                      \
                            && fi_ukr_rank1_##S(kc, ap + ir * kc, bp + jr * kc,   \
                                                alpha, fin, ic + ir, jc + jr, ct, rsc, pc, pn)) \
                            continue;                                             \
                        if (full && overwrite && !(epi && last)) {                \
                            fi_ukr_scale_##S(kc, ap + ir * kc, bp + jr * kc, alpha, ct, rsc, \
                                             pc, rsc, pn);                        \
                            continue;                                             \
                        }                                                         \
                        fi_ukr_##S(kc, ap + ir * kc, bp + jr * kc, t, pc, rsc, pn); \
                        if (epi && last) {   /* finish in t (in L1), store C once */ \
                            fi_finish_##S(mr, nr, t, alpha, overwrite, ct, rsc);  \
                            epi(ctx, ic + ir, jc + jr, mr, nr, t, FI_NR_##S);     \
                            fi_store_##S(mr, nr, t, ct, rsc);                     \
                        } else {                                                  \
                            fi_update_##S(mr, nr, t, alpha, overwrite, ct, rsc);  \
                        }                                                         \
                    }                                                             \
                }                                                                 \
            }                                                                     \
        }                                                                         \
    }                                                                             \
}

FI_DEFINE_GEMM(f, float)
FI_DEFINE_GEMM(d, double)

#endif /* FASTINTERP_GEMM_H */
