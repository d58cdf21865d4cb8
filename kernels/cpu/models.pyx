# cython: language_level=3
"""Kernels of the models trained by hand (fastinterp.models).

nca_softmax_fwd: for Neighbourhood Components Analysis, turns a block of
squared distances into the per-anchor loss -log p_i and the gradient of that
loss with respect to every distance, in place, one row per anchor. Rows are
independent (one thread each), so results do not depend on the thread count.
"""
from cython.parallel cimport parallel, prange
from _team cimport fi_team, fi_team_done, fi_team_enter, fi_team_leave, fi_team_plan
from libc.math cimport exp, log, INFINITY
from _types cimport real

cdef extern from *:
    """
    /* exp(x) for x <= 0 in float32: Cody-Waite reduction and a degree-6
       polynomial (relative error ~2e-7); inputs below -87 (-inf included) give
       exp(-87), NaN gives NaN.
       Branch-free, so loops calling it vectorise. */
    static inline float fi_exp_nonpos_f(float x) {
        /* Clamp into [-87, 88] (both comparisons are false for NaN, which passes
           through); k is then in [-126, 127] or NaN, and a NaN k is replaced by 0
           before the float->int cast (casting NaN is undefined behaviour), while
           the polynomial keeps the NaN: NaN in, NaN out. */
        x = x < -87.0f ? -87.0f : x;
        x = x > 88.0f ? 88.0f : x;
        /* round to nearest by the 1.5 * 2^23 trick: plain adds vectorise
           where floorf/rintf would not (without -fno-trapping-math) */
        float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
        float r = x - k * 0.693145751953125f;
        r = r - k * 1.428606765330187e-06f;
        float p = 1.0f / 720.0f;
        p = p * r + 1.0f / 120.0f;
        p = p * r + 1.0f / 24.0f;
        p = p * r + 1.0f / 6.0f;
        p = p * r + 0.5f;
        p = p * r + 1.0f;
        p = p * r + 1.0f;
        union { unsigned int u; float f; } s;
        float kc = k == k ? k : 0.0f;
        s.u = (unsigned int)((int)kc + 127) << 23;
        return p * s.f;
    }
    /* w[j] <- exp(m - w[j]) for a row whose minimum is m (so every argument
       is <= 0); plain C loops, so that the compiler vectorises them. */
    static void fi_shifted_exp_f(float* w, Py_ssize_t n, float m) {
        for (Py_ssize_t j = 0; j < n; j++) w[j] = fi_exp_nonpos_f(m - w[j]);
    }
    static void fi_shifted_exp_d(double* w, Py_ssize_t n, double m) {
        for (Py_ssize_t j = 0; j < n; j++) w[j] = exp(m - w[j]);
    }
    /* Row reductions with GCC/Clang vector extensions (SSE or AVX, whatever
       the target has), each in a fixed order: 8 (float) or 4 (double)
       interleaved lanes, then the tail, then the lanes in turn.

       fi_mins: the minimum of w and the minimum over lab[j] == c. The
       entries are squared distances, >= 0 (NaN is ignored), and for such
       floats the bit patterns order like the values, so integer min
       (which vectorises exactly) does it.
       fi_sums: the sum of w and the sum over lab[j] == c. */
    #define FI_ROW_REDUCTIONS(T, IT, LANES, SUF, BIG)                                  \
    typedef T fi_vf_##SUF __attribute__((vector_size(LANES * sizeof(T))));            \
    typedef IT fi_vi_##SUF __attribute__((vector_size(LANES * sizeof(T))));           \
    static void fi_mins_##SUF(const T* w, const int* lab, int c, Py_ssize_t n,         \
                              T* m_all, T* m_same) {                                   \
        fi_vi_##SUF mn, mc, big;                                                       \
        for (int k = 0; k < LANES; k++) { mn[k] = BIG; mc[k] = BIG; big[k] = BIG; }    \
        Py_ssize_t j = 0;                                                              \
        for (; j + LANES <= n; j += LANES) {                                           \
            fi_vi_##SUF bits, l, same, lt;                                             \
            memcpy(&bits, w + j, sizeof(bits));                                        \
            for (int k = 0; k < LANES; k++) l[k] = lab[j + k];                         \
            same = l == c;                                                             \
            lt = bits < mn;                                                            \
            mn = (bits & lt) | (mn & ~lt);                                             \
            bits = (bits & same) | (big & ~same);                                      \
            lt = bits < mc;                                                            \
            mc = (bits & lt) | (mc & ~lt);                                             \
        }                                                                              \
        IT a = BIG, b = BIG, t;                                                        \
        for (; j < n; j++) {                                                           \
            memcpy(&t, w + j, sizeof(t));                                              \
            if (t < a) a = t;                                                          \
            if (lab[j] == c && t < b) b = t;                                           \
        }                                                                              \
        for (int k = 0; k < LANES; k++) {                                              \
            if (mn[k] < a) a = mn[k];                                                  \
            if (mc[k] < b) b = mc[k];                                                  \
        }                                                                              \
        memcpy(m_all, &a, sizeof(a));                                                  \
        memcpy(m_same, &b, sizeof(b));                                                 \
    }                                                                                  \
    static T fi_sums_##SUF(const T* w, const int* lab, int c, Py_ssize_t n,            \
                           T* same_sum) {                                              \
        fi_vf_##SUF acc = {0}, accc = {0}, v;                                          \
        fi_vi_##SUF l, same;                                                           \
        Py_ssize_t j = 0;                                                              \
        for (; j + LANES <= n; j += LANES) {                                           \
            memcpy(&v, w + j, sizeof(v));                                              \
            for (int k = 0; k < LANES; k++) l[k] = lab[j + k];                         \
            same = l == c;                                                             \
            acc += v;                                                                  \
            accc += (fi_vf_##SUF)((fi_vi_##SUF)v & same);                              \
        }                                                                              \
        T s = 0, sc = 0;                                                               \
        for (; j < n; j++) { s += w[j]; sc += lab[j] == c ? w[j] : 0; }                \
        for (int k = 0; k < LANES; k++) { s += acc[k]; sc += accc[k]; }                \
        *same_sum = sc;                                                                \
        return s;                                                                      \
    }
    FI_ROW_REDUCTIONS(float, int, 8, f, 0x7f800000)
    FI_ROW_REDUCTIONS(double, long long, 4, d, 0x7ff0000000000000LL)

    /* w[j] <- w[j] * (same_j ? a : 0) - w[j] * b, same_j = (lab[j] == c). */
    static void fi_class_scale_f(float* w, const int* lab, int c, Py_ssize_t n,
                                 float a, float b) {
        for (Py_ssize_t j = 0; j < n; j++) w[j] = w[j] * ((lab[j] == c ? a : 0.0f) - b);
    }
    static void fi_class_scale_d(double* w, const int* lab, int c, Py_ssize_t n,
                                 double a, double b) {
        for (Py_ssize_t j = 0; j < n; j++) w[j] = w[j] * ((lab[j] == c ? a : 0.0) - b);
    }
    """
    float fi_exp_nonpos_f(float x) noexcept nogil
    void fi_shifted_exp_f(float* w, Py_ssize_t n, float m) noexcept nogil
    void fi_shifted_exp_d(double* w, Py_ssize_t n, double m) noexcept nogil
    void fi_class_scale_f(float* w, const int* lab, int c, Py_ssize_t n, float a,
                          float b) noexcept nogil
    void fi_class_scale_d(double* w, const int* lab, int c, Py_ssize_t n, double a,
                          double b) noexcept nogil
    void fi_mins_f(const float* w, const int* lab, int c, Py_ssize_t n, float* m_all,
                   float* m_same) noexcept nogil
    void fi_mins_d(const double* w, const int* lab, int c, Py_ssize_t n, double* m_all,
                   double* m_same) noexcept nogil
    float fi_sums_f(const float* w, const int* lab, int c, Py_ssize_t n,
                    float* same_sum) noexcept nogil
    double fi_sums_d(const double* w, const int* lab, int c, Py_ssize_t n,
                     double* same_sum) noexcept nogil

cdef inline real exp_nonpos(real x) noexcept nogil:
    if real is float:
        return fi_exp_nonpos_f(x)
    else:
        return exp(x)


cdef inline void nca_row(real* w, const int* lab, Py_ssize_t n, Py_ssize_t a,
                         real* loss) noexcept nogil:
    """Row of anchor a: distances in w (n, all >= 0) -> d loss / d distance, in place."""
    cdef int c = lab[a]
    cdef Py_ssize_t j
    cdef real m = INFINITY, mc = INFINITY, d, e, s, sc, inv_s, inv_sc, ratio
    cdef real gap = 40 if real is float else 500
    cdef real own = w[a]
    w[a] = INFINITY                 # the anchor is not its own neighbour
    if real is float:
        fi_mins_f(w, lab, c, n, &m, &mc)
    else:
        fi_mins_d(w, lab, c, n, &m, &mc)
    w[a] = own
    if mc == INFINITY:              # no other point of the anchor's class: no term
        for j in range(n):
            w[j] = 0
        loss[0] = 0
        return
    if mc - m <= gap:
        # One shift (the nearest point) serves both sums: the same-class sum is
        # at least exp(-gap), far from underflow. Vectorised passes.
        if real is float:
            fi_shifted_exp_f(w, n, m)
        else:
            fi_shifted_exp_d(w, n, m)
        w[a] = 0
        if real is float:
            s = fi_sums_f(w, lab, c, n, &sc)
        else:
            s = fi_sums_d(w, lab, c, n, &sc)
        # -log p = log(sum e) - log(sum_same e); dL/dd_j = q_j - p_j
        loss[0] = log(s) - log(sc)
        inv_s = 1 / s
        inv_sc = 1 / sc
        if real is float:
            fi_class_scale_f(w, lab, c, n, inv_sc, inv_s)
        else:
            fi_class_scale_d(w, lab, c, n, inv_sc, inv_s)
        return
    # Rare: every same-class point is much farther than the nearest point, so
    # the same-class terms get their own shift (they would underflow).
    s = 0
    sc = 0
    for j in range(n):
        if j == a:
            w[j] = 0
        elif lab[j] == c:
            e = exp_nonpos(mc - w[j])
            sc = sc + e
            w[j] = e
        else:
            e = exp_nonpos(m - w[j])
            s = s + e
            w[j] = e
    ratio = exp(m - mc)
    s = s + sc * ratio
    loss[0] = (mc - m) + log(s) - log(sc)
    inv_s = 1 / s
    inv_sc = 1 / sc
    for j in range(n):
        if lab[j] == c:
            w[j] = w[j] * (inv_sc - ratio * inv_s)
        else:
            w[j] = -w[j] * inv_s


def nca_softmax_fwd(real[:, ::1] w, const int[::1] labels, const Py_ssize_t[::1] anchors,
                    real[::1] loss, int nthreads):
    """In place: w[i, j] = d^2(anchor_i, j) -> dL_i/dd_ij, with L_i = -log p_i.

    p_i = sum_{j != a_i, labels[j] == labels[a_i]} softmax_{j != a_i}(-w[i, j]);
    dL_i/dd_ij = q_ij - p_ij, q_ij the softmax restricted to the anchor's class.
    The anchor's own column (j = a_i) gets 0. loss[i] = L_i (0 for an anchor
    with no other point of its class).
    """
    cdef Py_ssize_t rows = w.shape[0], n = w.shape[1], i, a
    # The kernel is exported: check sizes and every anchor before writing anything.
    if labels.shape[0] != n:
        raise ValueError(f"nca_softmax_fwd: labels must have shape ({n},) like w's columns; "
                         f"got ({labels.shape[0]},).")
    if anchors.shape[0] != rows or loss.shape[0] != rows:
        raise ValueError(f"nca_softmax_fwd: anchors and loss must have shape ({rows},) like "
                         f"w's rows; got ({anchors.shape[0]},) and ({loss.shape[0]},).")
    for i in range(rows):
        a = anchors[i]
        if a < 0 or a >= n:
            raise ValueError(f"nca_softmax_fwd: anchors must be in [0, {n}); "
                             f"got {a} at position {i}.")
    if rows == 0 or n == 0:
        return
    cdef fi_team team
    nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
    with nogil, parallel(num_threads=nthreads):
        fi_team_enter(&team)
        for i in prange(rows, schedule="static"):
            nca_row(&w[i, 0], &labels[0], n, anchors[i], &loss[i])
        fi_team_leave(&team)
    fi_team_done(&team)
