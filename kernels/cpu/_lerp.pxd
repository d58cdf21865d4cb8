# cython: language_level=3
"""The lerp arithmetic, shared by the blend kernels and the C ABI export (abi.pyx).

One place for the formula: ``fastinterp.blend.lerp`` (blend.pyx) and the
``lerp`` kernel exported to C callers (abi.pyx) both run ``lerp_run``.
"""
from libc.math cimport fabs
from _types cimport real


cdef inline real lerp_one(real a, real b, real w) noexcept nogil:
    # PyTorch's two-sided formula: exact at w = 0 and at w = 1. Both sides
    # are computed and one selected (no branch), so random weights do not
    # cost branch mispredictions and the loop vectorizes.
    cdef real d = b - a
    cdef real lo = a + w * d
    cdef real hi = b - d * (<real> 1 - w)
    return lo if (w < <real> 0.5) and (w > <real> -0.5) else hi  # |w| < 0.5 in real


cdef inline void lerp_run(const real* a, const real* b, const real* t, real* out,
                          Py_ssize_t n, Py_ssize_t sa, Py_ssize_t sb,
                          Py_ssize_t st) noexcept nogil:
    """One contiguous run of the output: n elements, operand strides in elements."""
    cdef Py_ssize_t i
    cdef real w
    if sa == 1 and sb == 1 and st == 1:
        for i in range(n):
            out[i] = lerp_one(a[i], b[i], t[i])
    elif sa == 1 and sb == 1 and st == 0:
        w = t[0]
        if fabs(w) < 0.5:
            for i in range(n):
                out[i] = a[i] + w * (b[i] - a[i])
        else:
            for i in range(n):
                out[i] = b[i] - (b[i] - a[i]) * (<real> 1 - w)
    else:
        for i in range(n):
            out[i] = lerp_one(a[i * sa], b[i * sb], t[i * st])
