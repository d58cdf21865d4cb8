# Per-axis grid-sampling arithmetic shared by the 2-D and 3-D grid_sample kernels
# (sample.pyx, sample3d.pyx): PyTorch's unnormalize constants, the padded
# coordinate, and the taps of one axis (linear and cubic).
from libc.math cimport nearbyint, nextafter, nextafterf, INFINITY
from _types cimport real
from _taps cimport (unnormalize, unnormalize_fused, pad_coordinate, pad_coordinate_grad,
                    tap_inside, linear_weights, cubic_weights, cubic_weights_grad, wrap_coordinate)

# Padding codes (the fronts map the strings; 'constant' runs as 'zeros' plus the
# fill times the weight that fell outside, see fastinterp.sample).
cdef enum:
    PAD_ZEROS = 0
    PAD_BORDER = 1
    PAD_REFLECTION = 2
    PAD_WRAP = 3

# Axis description: the six numbers _taps' coordinate helpers take, plus size (the wrap
# period) and the bound of the taps inside it (see axis_params).
cdef enum:
    A_SCALE = 0
    A_SHIFT = 1
    A_MAX = 2
    A_LOW = 3
    A_SPAN2 = 4
    A_EMPTY = 5
    A_SIZE = 6
    A_LIMIT = 7
    A_SLOTS = 8

# linear_axis's flag: the two taps are not neighbours in memory (wrapped around).
cdef enum:
    LIN_SPLIT = 4


cdef inline void axis_params(real* a, Py_ssize_t size, bint align_corners) noexcept nogil:
    """PyTorch's per-axis constants (ComputeLocationBase) for an input extent."""
    a[A_MAX] = <real>(size - 1)
    a[A_SIZE] = <real>size
    # an integral tap t lies in [0, size) exactly when t < A_LIMIT, the least value of
    # real >= size: float32 rounds sizes beyond 2**24 (2**24 + 1 to 2**24), which
    # would turn the last pixel away
    a[A_LIMIT] = a[A_SIZE]
    if <double>a[A_LIMIT] < <double>size:
        if real is float:
            a[A_LIMIT] = nextafterf(a[A_LIMIT], INFINITY)
        else:
            a[A_LIMIT] = nextafter(a[A_LIMIT], INFINITY)
    if align_corners:
        a[A_SCALE] = (<real>(size - 1)) / 2
        a[A_SHIFT] = 0
        a[A_LOW] = 0
        a[A_SPAN2] = (<real>(size - 1)) * 2
        a[A_EMPTY] = 1 if size <= 1 else 0
    else:
        a[A_SCALE] = (<real>size) / 2
        a[A_SHIFT] = <real>0.5
        a[A_LOW] = <real>-0.5
        a[A_SPAN2] = (<real>size) * 2
        a[A_EMPTY] = 0


cdef inline real coordinate(real g, const real* a, int padding, bint grad,
                            real* mult, bint fused=False) noexcept nogil:
    """Grid value -> padded pixel coordinate; with grad, *mult = d coordinate / d g.
    Wrap padding acts on the taps (linear_axis), so the coordinate is left as is.
    ``fused``: unnormalized with one rounding (unnormalize_fused)."""
    cdef real x = (unnormalize_fused(g, a[A_SCALE], a[A_SHIFT]) if fused
                   else unnormalize(g, a[A_SCALE], a[A_SHIFT]))
    if padding == PAD_WRAP:
        padding = PAD_ZEROS
    if grad:
        mult[0] = a[A_SCALE]
        return pad_coordinate_grad(x, padding, a[A_MAX], a[A_LOW], a[A_SPAN2],
                                   a[A_EMPTY] != 0, mult)
    return pad_coordinate(x, padding, a[A_MAX], a[A_LOW], a[A_SPAN2], a[A_EMPTY] != 0)


cdef inline int linear_axis(real x, real size, real limit, Py_ssize_t stride, bint wrap,
                            Py_ssize_t* o0, Py_ssize_t* o1, real* t) noexcept nogil:
    """Two taps of a padded coordinate: offsets and the valid bits (1: first, 2: second;
    LIN_SPLIT when wrap padding moved them apart). ``size``: the wrap period (A_SIZE),
    ``limit``: the taps' bound (A_LIMIT)."""
    cdef real fl, a, b
    cdef int bits = 0
    linear_weights(x, &fl, t)
    a = fl
    b = fl + 1
    if wrap:
        a = wrap_coordinate(a, size)
        b = wrap_coordinate(b, size)
    if tap_inside(a, limit):
        bits |= 1
    if tap_inside(b, limit):
        bits |= 2
    o0[0] = (<Py_ssize_t>a) * stride if bits & 1 else 0
    o1[0] = (<Py_ssize_t>b) * stride if bits & 2 else 0
    if wrap and b != a + 1:
        bits |= LIN_SPLIT
    return bits


cdef inline real nearest_tap(real x, real size, bint wrap) noexcept nogil:
    """The tap nearest to a padded coordinate (half to even, as PyTorch), wrapped
    into [0, size) with wrap padding; callers check tap_inside."""
    x = nearbyint(x)
    if wrap:
        x = wrap_coordinate(x, size)
    return x


cdef inline int cubic_axis(real x, const real* a, int padding, Py_ssize_t stride,
                           Py_ssize_t* off, Py_ssize_t wo, real* c, real* dc,
                           bint grad) noexcept nogil:
    """Four taps (floor(x) - 1 .. + 2), each padded on its own (PyTorch's rule);
    writes offsets off[k * wo], weights c[k * wo] (and dc) and returns valid bits."""
    cdef real fl, t, tap
    cdef real w[4]
    cdef real dw[4]
    cdef int k, bits = 0
    linear_weights(x, &fl, &t)
    cubic_weights(t, w)
    if grad:
        cubic_weights_grad(t, dw)
    for k in range(4):
        tap = pad_coordinate(fl + (k - 1), padding, a[A_MAX], a[A_LOW], a[A_SPAN2],
                             a[A_EMPTY] != 0)
        if tap_inside(tap, a[A_LIMIT]):
            bits |= 1 << k
            off[k * wo] = (<Py_ssize_t>tap) * stride
        else:
            off[k * wo] = 0
        c[k * wo] = w[k]
        if grad:
            dc[k * wo] = dw[k]
    return bits
