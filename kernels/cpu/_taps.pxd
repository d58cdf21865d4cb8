# Interpolation taps shared by every CPU kernel (grid_sample, resize and
# their backwards): one place for each piece of arithmetic.
from libc.math cimport fabs, floor, fma, fmaf, fmod, trunc
from _types cimport real

# ---------------------------------------------------------------------------
# Grid-sampling coordinate arithmetic (grid_sample and its backward).
# PyTorch's CPU forward semantics, including its NaN handling: clipping maps NaN to 0
# (the backward helpers follow the forward there: a clipped coordinate has gradient 0).
# Padding codes: 0 = zeros, 1 = border, 2 = reflection, 3 = wrap (periodic).
# An axis is described by six numbers (see axis_params in sample.pyx):
#   scale, shift: unnormalize(g) = (g + 1) * scale - shift
#   max_val = size - 1; low, twice_span, empty: the reflection span.
# ---------------------------------------------------------------------------

cdef inline real unnormalize(real g, real scale, real shift) noexcept nogil:
    """Grid value in [-1, 1] -> pixel coordinate (align_corners lives in scale/shift)."""
    return (g + <real>1) * scale - shift


cdef inline real unnormalize_fused(real g, real scale, real shift) noexcept nogil:
    """unnormalize rounded once, fma(g + 1, scale, -shift), as PyTorch's 2-D CPU kernel
    (vectorised, its multiply and subtract contracted) computes it: where the coordinate
    falls on a half pixel, nearest's tap depends on its last bit. An explicit fma is
    rounded once on every build (-ffp-contract=off leaves it alone)."""
    if real is float:
        return fmaf(g + <real>1, scale, -shift)
    return fma(g + <real>1, scale, -shift)


cdef inline real clip_coordinate(real x, real max_val) noexcept nogil:
    """Clamp to [0, max_val]; NaN -> 0."""
    if not (x > 0):
        return 0
    if x < max_val:
        return x
    return max_val


cdef inline real clip_coordinate_grad(real x, real max_val, real* grad) noexcept nogil:
    """clip_coordinate (NaN -> 0, like the forward), and multiply *grad by d clip / dx:
    0 on and beyond the borders, which count as outside, and at NaN (clipped to 0)."""
    if x > 0 and x < max_val:
        return x
    grad[0] = 0
    if x > 0:
        return max_val
    return 0


cdef inline real reflect_coordinate(real x, real low, real twice_span, bint empty) noexcept nogil:
    """Reflect x into [low, low + twice_span / 2] by the borders (mirror, period twice_span)."""
    cdef real a, flips, extra, other
    if empty:
        return 0
    a = fabs(x - low)
    flips = trunc(a / twice_span)
    extra = a - flips * twice_span
    other = twice_span - extra
    if other < extra:
        extra = other
    return extra + low


cdef inline real reflect_coordinate_grad(real x, real low, real twice_span, bint empty,
                                         real* grad) noexcept nogil:
    """reflect_coordinate, and multiply *grad by d reflect / dx (+1 or -1)."""
    cdef real a, flips, extra, other, d = x - low
    cdef bint flip
    if empty:
        grad[0] = 0
        return 0
    a = fabs(d)
    flips = trunc(a / twice_span)
    extra = a - flips * twice_span
    other = twice_span - extra
    flip = extra > other
    if flip != (d < 0):
        grad[0] = -grad[0]
    if flip:
        return other + low
    return extra + low


cdef inline real wrap_coordinate(real x, real size) noexcept nogil:
    """x modulo size, in [0, size) (periodic padding). Exact for integral x (fmod is
    exact); NaN for NaN or infinite x. Used on tap coordinates, never on a fraction."""
    cdef real r = fmod(x, size)
    if r < 0:
        r = r + size
    return r


cdef inline real pad_coordinate(real x, int padding, real max_val, real low,
                                real twice_span, bint empty) noexcept nogil:
    """Apply the padding mode to a pixel coordinate (zeros: unchanged)."""
    if padding == 1:
        return clip_coordinate(x, max_val)
    if padding == 2:
        return clip_coordinate(reflect_coordinate(x, low, twice_span, empty), max_val)
    if padding == 3:
        return wrap_coordinate(x, max_val + 1)
    return x


cdef inline real pad_coordinate_grad(real x, int padding, real max_val, real low,
                                     real twice_span, bint empty, real* grad) noexcept nogil:
    """pad_coordinate for the backward pass (the same coordinate as the forward's, NaN
    included), and *grad gets the chain factor (0 where the coordinate was clipped)."""
    if padding == 1:
        return clip_coordinate_grad(x, max_val, grad)
    if padding == 2:
        x = reflect_coordinate_grad(x, low, twice_span, empty, grad)
        return clip_coordinate_grad(x, max_val, grad)
    if padding == 3:    # a translation by whole periods: the gradient passes unchanged
        return wrap_coordinate(x, max_val + 1)
    return x


cdef inline bint tap_inside(real t, real size) noexcept nogil:
    """Integral tap coordinate t lies in [0, size) (False for NaN and huge values)."""
    return t > -1 and t < size


cdef inline void linear_weights(real x, real* fl, real* t) noexcept nogil:
    """Left tap floor(x) and the fractional distance t = x - floor(x) (weights 1 - t, t)."""
    fl[0] = floor(x)
    t[0] = x - fl[0]


# ---------------------------------------------------------------------------
# Cubic convolution taps (shared by grid_sample and resize).
# ---------------------------------------------------------------------------


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
