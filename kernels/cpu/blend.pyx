# cython: language_level=3
"""Blend kernels: lerp (strided, broadcasting) and slerp.

The Python front (fastinterp.blend) validates, broadcasts and coalesces the
operands; these loops trust what they get.
"""
from cython.parallel cimport prange
from libc.math cimport fabs
from _types cimport real
from _lerp cimport lerp_run

cdef Py_ssize_t LERP_CHUNK = 16384


cdef inline Py_ssize_t row_offset(Py_ssize_t row, const Py_ssize_t[::1] shape,
                                  const Py_ssize_t[::1] strides) noexcept nogil:
    """Element offset of outer row `row` (the last axis is the run axis)."""
    cdef Py_ssize_t d, off = 0, idx
    for d in range(shape.shape[0] - 2, -1, -1):
        idx = row % shape[d]
        row = row // shape[d]
        off += idx * strides[d]
    return off


def lerp_fwd(real[::1] out, size_t a_addr, size_t b_addr, size_t t_addr,
             const Py_ssize_t[::1] shape,
             const Py_ssize_t[::1] sa, const Py_ssize_t[::1] sb,
             const Py_ssize_t[::1] st, int nthreads):
    """out[...] = lerp(a, b, t) over a coalesced broadcast layout.

    ``shape`` is the coalesced output shape (C order, last axis = runs);
    ``sa/sb/st`` are the operands' strides in elements (0 on broadcast axes).
    ``*_addr`` are the addresses of each operand's element at index 0 (the
    front keeps the arrays alive); their dtype is ``out``'s.
    """
    cdef Py_ssize_t ndim = shape.shape[0]
    cdef Py_ssize_t inner = shape[ndim - 1]
    cdef Py_ssize_t rows = 1, d
    for d in range(ndim - 1):
        rows *= shape[d]
    cdef Py_ssize_t nchunks = (inner + LERP_CHUNK - 1) // LERP_CHUNK
    cdef Py_ssize_t job, row, c0, n
    cdef const real* pa = <const real*> a_addr
    cdef const real* pb = <const real*> b_addr
    cdef const real* pt = <const real*> t_addr
    cdef real* po = &out[0]
    cdef Py_ssize_t ia = sa[ndim - 1], ib = sb[ndim - 1], it = st[ndim - 1]
    if rows * inner == 0:
        return
    for job in prange(rows * nchunks, nogil=True, schedule="static",
                      num_threads=nthreads):
        row = job // nchunks
        c0 = (job % nchunks) * LERP_CHUNK
        n = min(LERP_CHUNK, inner - c0)
        lerp_run(pa + row_offset(row, shape, sa) + c0 * ia,
                 pb + row_offset(row, shape, sb) + c0 * ib,
                 pt + row_offset(row, shape, st) + c0 * it,
                 po + row * inner + c0, n, ia, ib, it)
