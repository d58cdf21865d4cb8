# cython: language_level=3
"""Storage conversions for half precision: float16 / bfloat16 <-> float32.

The Python side (fastinterp._half) widens half-precision inputs to float32
once and rounds results once (round to nearest even). These loops take flat
C-contiguous buffers; half-precision data travels as its uint16 bit patterns.
"""
from cython.parallel cimport parallel, prange
from libc.stdint cimport uint16_t
from _team cimport fi_team, fi_team_done, fi_team_enter, fi_team_leave, fi_team_plan

cdef extern from "_half.h" nogil:
    void fi_half_to_float_run(const uint16_t* src, float* dst, Py_ssize_t n)
    void fi_float_to_half_run(const float* src, uint16_t* dst, Py_ssize_t n)
    void fi_bf16_to_float_run(const uint16_t* src, float* dst, Py_ssize_t n)
    void fi_float_to_bf16_run(const float* src, uint16_t* dst, Py_ssize_t n)

cdef Py_ssize_t CHUNK = 32768  # elements per scheduled job


cdef int _check(str fn, Py_ssize_t n_src, Py_ssize_t n_dst) except -1:
    if n_src != n_dst:
        raise ValueError(f"{fn}: src and dst must have the same length; got {n_src} and {n_dst}.")
    return 0


def widen(const uint16_t[::1] src, float[::1] dst, bint bfloat, int nthreads):
    """dst[i] = float32 value of the 16-bit pattern src[i] (binary16, or bfloat16 if ``bfloat``)."""
    _check("widen", src.shape[0], dst.shape[0])
    cdef Py_ssize_t n = src.shape[0], nchunks = (n + CHUNK - 1) // CHUNK, job, i0
    if n == 0:
        return
    cdef const uint16_t* s = &src[0]
    cdef float* d = &dst[0]
    cdef fi_team team
    nthreads = fi_team_plan(&team, max(1, nthreads))
    with nogil, parallel(num_threads=nthreads):
        fi_team_enter(&team)
        for job in prange(nchunks, schedule="static"):
            i0 = job * CHUNK
            if bfloat:
                fi_bf16_to_float_run(s + i0, d + i0, min(CHUNK, n - i0))
            else:
                fi_half_to_float_run(s + i0, d + i0, min(CHUNK, n - i0))
        fi_team_leave(&team)
    fi_team_done(&team)


def narrow(const float[::1] src, uint16_t[::1] dst, bint bfloat, int nthreads):
    """dst[i] = src[i] rounded to nearest even, as binary16 (or bfloat16 if ``bfloat``) bits."""
    _check("narrow", src.shape[0], dst.shape[0])
    cdef Py_ssize_t n = src.shape[0], nchunks = (n + CHUNK - 1) // CHUNK, job, i0
    if n == 0:
        return
    cdef const float* s = &src[0]
    cdef uint16_t* d = &dst[0]
    cdef fi_team team
    nthreads = fi_team_plan(&team, max(1, nthreads))
    with nogil, parallel(num_threads=nthreads):
        fi_team_enter(&team)
        for job in prange(nchunks, schedule="static"):
            i0 = job * CHUNK
            if bfloat:
                fi_float_to_bf16_run(s + i0, d + i0, min(CHUNK, n - i0))
            else:
                fi_float_to_half_run(s + i0, d + i0, min(CHUNK, n - i0))
        fi_team_leave(&team)
    fi_team_done(&team)
