# cython: language_level=3
"""C-level entry points that kernel modules hand to the C ABI table (abi.pyx).

A kernel module exposes the addresses of these functions through its
``c_entry_points()``; abi.pyx casts them back to the types below, so the
signature is written once. They return a plugin.h status (FI_OK, FI_ERR_INVALID,
FI_ERR_NOMEM) and write nothing when it is not FI_OK.
"""

ctypedef int (*grid_sample_fwd_f32_t)(
    float* out, const float* inp, const float* grid, Py_ssize_t N, Py_ssize_t C,
    Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo, bint channels_last, int mode,
    int padding, bint align_corners, int nthreads) noexcept nogil

ctypedef int (*grid_sample_fwd_f64_t)(
    double* out, const double* inp, const double* grid, Py_ssize_t N, Py_ssize_t C,
    Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo, bint channels_last, int mode,
    int padding, bint align_corners, int nthreads) noexcept nogil
