# Per-thread plan tables and the deterministic backward schedule shared by the
# grid_sample kernels of images (sample.pyx) and volumes (sample3d.pyx).
#
# Plans: each thread of a region plans a tile of output points (offsets, masks,
# weights) into its own table; the tables are allocated once per call, before
# anything is written, so a failed allocation leaves every output untouched.
#
# Backward schedule: with N >= nthreads one thread owns whole images; otherwise
# grad_input is split over (image, channel block) and grad_grid over (image,
# tile). Either way no two threads add into the same grad_input element, each
# element receives its additions in the same order, and each grad_grid entry
# is computed by the same code over the same channels: bit-identical results for
# any thread count.
from cython.parallel cimport prange, parallel, threadid
from libc.stdlib cimport malloc, free
from _team cimport fi_team, fi_team_done, fi_team_enter, fi_team_leave, fi_team_plan

cdef struct Plans:
    void* R             # nthreads tables of r_bytes each (reals)
    void* I             # nthreads tables of i_bytes each (offsets)
    size_t r_bytes
    size_t i_bytes


cdef inline int plans_alloc(Plans* p, int nthreads, size_t r_bytes,
                            size_t i_bytes) noexcept nogil:
    """One table pair per thread (r_bytes, i_bytes each); 0, or -1 with nothing held
    when the memory is not there."""
    p.r_bytes = r_bytes
    p.i_bytes = i_bytes
    p.R = malloc(r_bytes * <size_t>(nthreads if nthreads > 1 else 1))
    p.I = malloc(i_bytes * <size_t>(nthreads if nthreads > 1 else 1))
    if p.R == NULL or p.I == NULL:
        plans_free(p)
        return -1
    return 0


cdef inline void plans_free(Plans* p) noexcept nogil:
    free(p.R)
    free(p.I)
    p.R = NULL
    p.I = NULL


cdef inline void* thread_R(const Plans* p) noexcept nogil:
    """The calling thread's real table (inside a parallel region)."""
    return <char*>p.R + <size_t>threadid() * p.r_bytes


cdef inline void* thread_I(const Plans* p) noexcept nogil:
    return <char*>p.I + <size_t>threadid() * p.i_bytes


# The arguments of one backward pass (float or double buffers, as void*).
cdef struct BwdArgs:
    const void* ip
    void* gip
    const void* gop
    const void* gp
    void* ggp
    const Py_ssize_t* si    # element strides of input and output
    const Py_ssize_t* so
    const void* ax          # axis_params (_gridaxis) of x, y and, for volumes, z
    const void* ay
    const void* az
    Py_ssize_t H            # input height and width (images)
    Py_ssize_t W
    Py_ssize_t P            # output points per image
    int mode
    int padding


# One part of a backward pass: output points [p0, p1) of image n, channels [c0, c1),
# with the calling thread's plan tables R, I. With do_input the part first zeroes
# grad_input's channels [c0, c1) of image n (do_input comes with p0 = 0, p1 = P).
ctypedef void (*backward_part)(const BwdArgs* args, Py_ssize_t n, Py_ssize_t p0,
                               Py_ssize_t p1, Py_ssize_t c0, Py_ssize_t c1, bint do_input,
                               bint do_grid, void* R, void* I) noexcept nogil


cdef inline void run_backward(backward_part part, const BwdArgs* ctx, const Plans* plans,
                              Py_ssize_t N, Py_ssize_t C, Py_ssize_t P, Py_ssize_t tile,
                              bint do_input, bint do_grid, int nthreads) noexcept nogil:
    """Run a backward pass of N images of C channels and P output points (tiles of
    `tile` points) on nthreads threads (at most the count plans were made for)."""
    cdef Py_ssize_t n, job, nblk, blk, t, p0
    cdef Py_ssize_t nt = (P + tile - 1) // tile
    cdef void* R
    cdef void* I
    cdef fi_team team
    nthreads = fi_team_plan(&team, nthreads)   # see _team.h: placement, stalled teams
    if N >= nthreads or nthreads == 1:
        with parallel(num_threads=nthreads):
            fi_team_enter(&team)
            R = thread_R(plans)
            I = thread_I(plans)
            for n in prange(N, schedule="dynamic"):
                part(ctx, n, 0, P, 0, C, do_input, do_grid, R, I)
            fi_team_leave(&team)
        fi_team_done(&team)
        return
    nblk = min(C, (nthreads + N - 1) // N)
    with parallel(num_threads=nthreads):
        fi_team_enter(&team)
        R = thread_R(plans)
        I = thread_I(plans)
        if do_input:
            for job in prange(N * nblk, schedule="dynamic"):
                n = job // nblk
                blk = job - n * nblk
                part(ctx, n, 0, P, blk * C // nblk, (blk + 1) * C // nblk, True, False, R, I)
        if do_grid:
            for t in prange(N * nt, schedule="dynamic"):
                n = t // nt
                p0 = (t - n * nt) * tile
                part(ctx, n, p0, min(p0 + tile, P), 0, C, False, True, R, I)
        fi_team_leave(&team)
    fi_team_done(&team)
