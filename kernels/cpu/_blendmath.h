/* Arithmetic of the slerp kernel that gcc must vectorize: row reductions
 * and the per-row angle and weights, vectorized across rows.
 *
 * Reductions are accumulated in double; `omp simd reduction` lets the
 * compiler keep one partial sum per vector lane (independent accumulators)
 * and vectorize the loop. The summation order depends only on the build,
 * never on the thread count, so results are bit-identical for any number of
 * OpenMP threads.
 *
 * atan, sin and cos are Cephes' double-precision approximations (max error
 * about 1 ulp, checked against libm in the tests), written without branches
 * so that a loop over rows vectorizes; libm's scalar calls would not.
 */
#ifndef FASTINTERP_BLENDMATH_H
#define FASTINTERP_BLENDMATH_H

#include <math.h>
#include <stddef.h>

/* Rows whose squared norms lie outside [FI_SAFE_SQ_LO, FI_SAFE_SQ_HI] (or are
 * zero, inf or NaN) are redone on rows scaled by a power of two: below, squares
 * of the entries lose bits to underflow; above, sums may overflow. float32
 * rows never leave this range unless zero or non-finite. */
#define FI_SAFE_SQ_LO 0x1p-900
#define FI_SAFE_SQ_HI 0x1p+900

#define FI_DEFINE_REDUCTIONS(SUFFIX, T)                                          \
/* aa = |sa a|^2, bb = |sb b|^2, ab = (sa a).(sb b); sa, sb: powers of two */   \
static inline void fi_dot3_##SUFFIX(const T* a, const T* b, ptrdiff_t n,         \
                                     double sa, double sb,                       \
                                     double* aa, double* bb, double* ab) {       \
    double saa = 0.0, sbb = 0.0, sab = 0.0;                                      \
    _Pragma("omp simd reduction(+:saa,sbb,sab)")                                 \
    for (ptrdiff_t i = 0; i < n; i++) {                                          \
        double x = a[i] * sa, y = b[i] * sb;                                     \
        saa += x * x; sbb += y * y; sab += x * y;                                \
    }                                                                            \
    *aa = saa; *bb = sbb; *ab = sab;                                             \
}                                                                                \
/* dm = |(sa a) ia - (sb b) ib|^2, dp = |(sa a) ia + (sb b) ib|^2. x and y are   \
   rounded before they are subtracted (no fused multiply-subtract): identical    \
   rows then give dm = 0, θ = 0, in every build (FMA builds gave θ ~ 1e-16). */  \
__attribute__((optimize("fp-contract=off")))                                    \
static inline void fi_sumdiff_##SUFFIX(const T* a, const T* b, ptrdiff_t n,      \
                                        double sa, double sb,                    \
                                        double ia, double ib,                    \
                                        double* dm, double* dp) {                \
    double sm = 0.0, sp = 0.0;                                                   \
    _Pragma("omp simd reduction(+:sm,sp)")                                       \
    for (ptrdiff_t i = 0; i < n; i++) {                                          \
        double x = (a[i] * sa) * ia, y = (b[i] * sb) * ib;                       \
        sm += (x - y) * (x - y); sp += (x + y) * (x + y);                        \
    }                                                                            \
    *dm = sm; *dp = sp;                                                          \
}                                                                                \
/* max |a_i|, NaN entries ignored */                                             \
static inline double fi_maxabs_##SUFFIX(const T* a, ptrdiff_t n) {               \
    double m = 0.0;                                                              \
    for (ptrdiff_t i = 0; i < n; i++) {                                          \
        double x = fabs((double)a[i]);                                           \
        m = x > m ? x : m;                                                       \
    }                                                                            \
    return m;                                                                    \
}

FI_DEFINE_REDUCTIONS(f, float)
FI_DEFINE_REDUCTIONS(d, double)

/* atan(x) for x >= 0 (Cephes' rational approximation, branch-free). */
static inline double fi_atan_nonneg(double x) {
    const double T3P8 = 2.41421356237309504880, MOREBITS = 6.123233995736765886130e-17;
    int big = x > T3P8, mid = x > 0.66;
    double y = big ? 1.57079632679489661923 : (mid ? 0.78539816339744830962 : 0.0);
    double more = big ? MOREBITS : (mid ? 0.5 * MOREBITS : 0.0);
    double xr = big ? -1.0 / x : (mid ? (x - 1.0) / (x + 1.0) : x);
    double z = xr * xr;
    double p = ((((-8.750608600031904122785e-1 * z - 1.615753718733365076637e1) * z
                 - 7.500855792314704667340e1) * z - 1.228866684490136173410e2) * z
                 - 6.485021904942025371773e1);
    double q = (((((z + 2.485846490142306297962e1) * z + 1.650270098316988542046e2) * z
                 + 4.328810604912902668951e2) * z + 4.853903996359136964868e2) * z
                 + 1.945506571482613964425e2);
    return y + (xr * (z * p / q) + xr + more);
}
/* floor(y) for 0 <= y < 2^51, branch-free and vectorizable (no rounding instruction). */
static inline double fi_floor_nonneg(double y) {
    const double MAGIC = 6755399441055744.0;  /* 1.5 * 2^52: y + MAGIC rounds y to an integer */
    double r = (y + MAGIC) - MAGIC;
    return r > y ? r - 1.0 : r;
}
/* sin and cos of x (Cephes' octant reduction and polynomials, branch-free), |x| < 2^26. */
static inline void fi_sincos(double x, double* s, double* c) {
    const double DP1 = 7.85398125648498535156e-1, DP2 = 3.77489470793079817668e-8,
                 DP3 = 2.69515142907905952645e-15, FOPI = 1.27323954473516268615;
    double ax = fabs(x);
    double j = fi_floor_nonneg(ax * FOPI);
    j += j - 2.0 * fi_floor_nonneg(0.5 * j);      /* odd octants round up to even */
    double z = ((ax - j * DP1) - j * DP2) - j * DP3;
    double zz = z * z;
    double ps = z + z * zz * (((((1.58962301576546568060e-10 * zz - 2.50507477628578072866e-8) * zz
                 + 2.75573136213857245213e-6) * zz - 1.98412698295895385996e-4) * zz
                 + 8.33333333332211858878e-3) * zz - 1.66666666666666307295e-1);
    double pc = 1.0 - 0.5 * zz + zz * zz * (((((-1.13585365213876817300e-11 * zz
                 + 2.08757008419747316778e-9) * zz - 2.75573141792967388112e-7) * zz
                 + 2.48015872888517045348e-5) * zz - 1.38888888888730564116e-3) * zz
                 + 4.16666666666665929218e-2);
    double oct = j - 8.0 * fi_floor_nonneg(0.125 * j);  /* 0, 2, 4 or 6 */
    int swap = (oct == 2.0) | (oct == 6.0);
    double sv = swap ? pc : ps, cv = swap ? ps : pc;
    double ssign = (oct >= 4.0) ? -1.0 : 1.0;
    double csign = ((oct == 2.0) | (oct == 4.0)) ? -1.0 : 1.0;
    *s = (x < 0 ? -ssign : ssign) * sv;
    *c = csign * cv;
}

/* Per-row geometry from the dot products, vectorized across rows, for the
 * common case: both squared norms in the safe range and |cos θ| <= cos_accurate. Other rows
 * get todo[i] = 1 (the caller redoes them with the accurate scalar code).
 * The arithmetic matches the scalar row_geometry in blend.pyx step by step. */
static inline void fi_row_angles(ptrdiff_t n, const double* aa, const double* bb,
                                 const double* ab, int shortest_path, double cos_accurate,
                                 double* na, double* nb, double* sign, double* q,
                                 double* sin_theta, double* cos_theta, double* todo) {
    double flip = shortest_path ? -1.0 : 1.0;
    _Pragma("omp simd")
    for (ptrdiff_t i = 0; i < n; i++) {
        double ra = sqrt(aa[i]), rb = sqrt(bb[i]);
        double sg = ab[i] < 0 ? flip : 1.0;
        double sa = ra > 0 ? ra : 1.0, sb = rb > 0 ? rb : 1.0;
        double c = sg * ab[i] * (1.0 / sa) / sb;
        double in_range = (aa[i] >= FI_SAFE_SQ_LO) & (aa[i] <= FI_SAFE_SQ_HI)
                          & (bb[i] >= FI_SAFE_SQ_LO) & (bb[i] <= FI_SAFE_SQ_HI);
        double ok = (ra > 0 ? 1.0 : 0.0) * (rb > 0 ? 1.0 : 0.0) * in_range
                    * (fabs(c) <= cos_accurate ? 1.0 : 0.0);
        double cc = ok > 0 ? c : 0.0;
        na[i] = ra;
        nb[i] = rb;
        sign[i] = sg;
        cos_theta[i] = cc;
        sin_theta[i] = sqrt(1.0 - cc * cc);
        q[i] = sqrt((1.0 - cc) / (1.0 + cc));
        todo[i] = 1.0 - ok;
    }
}

/* theta[i] = 2 atan(q[i]), q = tan(theta / 2) >= 0. */
static inline void fi_half_angles(ptrdiff_t n, const double* q, double* theta) {
    _Pragma("omp simd")
    for (ptrdiff_t i = 0; i < n; i++)
        theta[i] = 2.0 * fi_atan_nonneg(q[i]);
}

/* Coefficients of a regular row pair: out = ca * a + cb * b.
 * w1 = sin(t θ) / sin θ and w0 = sin((1 - t) θ) / sin θ, one sincos per row: the weight
 * of the nearer end point (t <= 1/2: w1; else w0, 1 - t exact) directly, the other by
 * sin((1 - t) θ) = sin θ cos tθ - cos θ sin tθ (w0 = cos tθ - cos θ w1, and mirrored), so
 * that a small weight keeps its relative precision (t -> 0 or t -> 1);
 * with linear_norm the direction is rescaled to r = (1 - t)|a| + t|b|. */
static inline void fi_slerp_coefs(ptrdiff_t n, const double* t, const double* theta,
                                  const double* sin_theta, const double* cos_theta,
                                  const double* na, const double* nb, const double* sign,
                                  int linear_norm, double* ca, double* cb) {
    _Pragma("omp simd")
    for (ptrdiff_t i = 0; i < n; i++) {
        double s, c;
        int near_b = t[i] > 0.5;
        fi_sincos((near_b ? 1.0 - t[i] : t[i]) * theta[i], &s, &c);
        double wd = s / sin_theta[i];            /* the nearer end point's weight */
        double wo = c - cos_theta[i] * wd;       /* the other one */
        double w1 = near_b ? wo : wd;
        double w0 = near_b ? wd : wo;
        double r = (1.0 - t[i]) * na[i] + t[i] * nb[i];
        double ka = linear_norm ? r / na[i] : 1.0;
        double kb = linear_norm ? r / nb[i] : 1.0;
        ca[i] = w0 * ka;
        cb[i] = sign[i] * w1 * kb;
    }
}


/* ---- slerp backward: derivatives of the weights ------------------------
 * With x - sin x = x^3 S(x) and 1 - cos x = x^2 C(x), the derivative of
 * w(t, θ) = sin(tθ)/sin θ with respect to θ, divided once more by sin θ, is
 *   h(t, θ) = t (θ/sin θ)^3 [D(θ) - t^2 D(tθ) + t^2 θ^2 (C(tθ) S(θ) - S(tθ) C(θ))],
 * D = C - S, free of the cancellation of the textbook
 * (t cos(tθ) sin θ - sin(tθ) cos θ) / sin^3 θ as θ -> 0 (limit t (1 - t^2) / 3). */
static inline double fi_sinc(double x) {
    return x == 0.0 ? 1.0 : sin(x) / x;
}
/* S(x) = (x - sin x) / x^3: Taylor series below |x| = 0.5 (truncation < 1e-16). */
static inline double fi_xsin3(double x) {
    double z = x * x;
    if (fabs(x) < 0.5)
        return 1.0 / 6 + z * (-1.0 / 120 + z * (1.0 / 5040 + z * (-1.0 / 362880
               + z * (1.0 / 39916800 + z * (-1.0 / 6227020800.0 + z / 1307674368000.0)))));
    return (x - sin(x)) / (x * z);
}
/* C(x) = (1 - cos x) / x^2 = sinc(x/2)^2 / 2. */
static inline double fi_xcos2(double x) {
    double s = fi_sinc(0.5 * x);
    return 0.5 * s * s;
}
/* h(t, θ) above, for |t| <= 1/2 (and far extrapolation); sin_theta, cos_theta are
 * sin θ, cos θ as the forward computed them (sin θ > 0). Below θ = π/2 the form above, its
 * last term written (cx - c1) s1 - (sx - s1) c1 (exactly 0 at t = ±1, FMA or not); from
 * θ = π/2 on, N / sin^3 θ with the textbook numerator N = t cos(tθ) sin θ - sin(tθ) cos θ,
 * whose two terms have one sign there for |t| <= 1/2 (no cancellation as θ -> π). */
static inline double fi_slerp_dweight_near0(double t, double theta, double sin_theta,
                                            double cos_theta) {
    if (theta >= 1.5707963267948966) {
        double n = t * cos(t * theta) * sin_theta - sin(t * theta) * cos_theta;
        return n / (sin_theta * sin_theta * sin_theta);
    }
    double x = t * theta;
    double s1 = fi_xsin3(theta), c1 = fi_xcos2(theta);
    double sx = fi_xsin3(x), cx = fi_xcos2(x);
    double q = theta / sin_theta;
    return t * q * q * q * ((c1 - s1) - t * t * (cx - sx)
                            + t * t * theta * theta * ((cx - c1) * s1 - (sx - s1) * c1));
}
/* h(r + k, θ) for |r| <= 1/2 and an integer k (r exact: the caller forms it from its
 * exact t). The form above cancels where h is small against its terms (t near an integer
 * other than 0, θ -> π); there the weights' identity sin((x + 1)θ) = sin(xθ) cos θ +
 * cos(xθ) sin θ, differentiated, steps from h(r): h(x + 1) = cos θ h(x) - (x + 1) w(x),
 * w(x) = sin(xθ) / sin θ, and h is odd in t. Beyond |k| = 64 (far extrapolation) the
 * form above is used as it is. */
static inline double fi_slerp_dweight(double r, double k, double theta, double sin_theta,
                                      double cos_theta) {
    if (!(fabs(k) <= 64.0))
        return fi_slerp_dweight_near0(r + k, theta, sin_theta, cos_theta);
    double sign = 1.0;
    if (k < 0) {
        sign = -1.0;
        r = -r;
        k = -k;
    }
    double h = fi_slerp_dweight_near0(r, theta, sin_theta, cos_theta);
    for (int j = 0; j < (int)k; j++) {
        double x = r + j;
        h = cos_theta * h - (x + 1.0) * (sin(x * theta) / sin_theta);
    }
    return sign * h;
}


/* ga = g.(sa a), gb = g.(sb b): the backward's projections, accumulated in double. */
#define FI_DEFINE_GDOT2(SUFFIX, T)                                               \
static inline void fi_gdot2_##SUFFIX(const T* g, const T* a, const T* b,         \
                                     ptrdiff_t n, double sa, double sb,          \
                                     double* ga, double* gb) {                   \
    double s1 = 0.0, s2 = 0.0;                                                   \
    _Pragma("omp simd reduction(+:s1,s2)")                                       \
    for (ptrdiff_t i = 0; i < n; i++) {                                          \
        double x = g[i];                                                         \
        s1 += x * (a[i] * sa); s2 += x * (b[i] * sb);                            \
    }                                                                            \
    *ga = s1; *gb = s2;                                                          \
}
FI_DEFINE_GDOT2(f, float)
FI_DEFINE_GDOT2(d, double)

#endif
