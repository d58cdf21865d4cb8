# Interpolation taps shared by every CPU kernel (grid_sample, resize and
# their backwards): one place for each piece of arithmetic.
from libc.math cimport fabs
from _types cimport real


cdef inline void cubic_weights(real t, real* w) noexcept nogil:
    """Keys cubic convolution weights (A = -0.75, PyTorch's and OpenCV's) for
    the taps at offsets -1, 0, 1, 2 of a point at fractional offset ``t``."""
    cdef real A = -0.75
    cdef real x
    x = t + 1
    w[0] = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A
    x = t
    w[1] = ((A + 2) * x - (A + 3)) * x * x + 1
    x = 1 - t
    w[2] = ((A + 2) * x - (A + 3)) * x * x + 1
    x = 2 - t
    w[3] = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A


cdef inline void cubic_weights_grad(real t, real* dw) noexcept nogil:
    """d(cubic_weights)/dt for the same four taps."""
    cdef real A = -0.75
    cdef real x
    x = t + 1   # dw0/dt = d/dx [(A x - 5A) x + 8A) x - 4A] * dx/dt (= 1)
    dw[0] = (3 * A * x - 10 * A) * x + 8 * A
    x = t
    dw[1] = (3 * (A + 2) * x - 2 * (A + 3)) * x
    x = 1 - t   # dx/dt = -1
    dw[2] = -((3 * (A + 2) * x - 2 * (A + 3)) * x)
    x = 2 - t
    dw[3] = -((3 * A * x - 10 * A) * x + 8 * A)
