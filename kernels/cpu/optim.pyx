# cython: language_level=3
"""Optimizer step kernels: SGD (momentum, Nesterov) and Adam/AdamW (amsgrad).

Each call updates one parameter array in place in a single pass that reads
the parameter, its gradient and its state and writes the parameter and the
state. The arithmetic follows torch.optim's single-tensor implementations
operation by operation (``grad.add(param, alpha=wd)``, ``exp_avg.lerp_(grad,
1 - beta1)``, ``exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)``,
``param.addcdiv_(exp_avg, denom, -step_size)``), with the scalars rounded to
the parameter's dtype as torch does. The Python front (fastinterp.optim)
validates everything; these loops trust what they get. Every element is
independent, so results are bit-identical for any thread count.
"""
from cython.parallel cimport parallel, prange
from _team cimport fi_team, fi_team_done, fi_team_enter, fi_team_leave, fi_team_plan
from libc.math cimport fma, fmaf, sqrt, sqrtf
cimport numpy as cnp
import numpy as np
from _types cimport real

cdef Py_ssize_t STEP_CHUNK = 65536


def _check_sizes(str op, Py_ssize_t n, **sizes):
    """The kernels are exported: every buffer must hold the parameter's n elements."""
    for name, size in sizes.items():
        if size != n:
            raise ValueError(f"{op}: {name} must have shape ({n},) like param; got ({size},).")


cdef inline long long _address(const void* p) noexcept:
    """A data pointer as the many-array kernels take it (a row of their address table)."""
    return <long long><size_t>p


cdef inline real fma_(real a, real b, real c) noexcept nogil:
    """a*b + c with one rounding, in the dtype of the operands."""
    if real is float:
        return fmaf(a, b, c)
    else:
        return fma(a, b, c)


cdef inline real sqrt_(real x) noexcept nogil:
    if real is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline void sgd_run(real* p, const real* g_in, real* buf, Py_ssize_t n,
                         real sign, real neg_lr, real mom, real one_minus_damp, real wd,
                         const bint use_mom, const bint nesterov,
                         const bint first) noexcept nogil:
    """One contiguous run. The bint flags are literals at every call site, so each
    call inlines to its own branch-free, vectorisable loop. ``wd == 0`` skips the
    decay term like torch (0 * inf would turn an infinite parameter into NaN); the
    test is loop-invariant, so the compiler hoists it out of the loop."""
    cdef Py_ssize_t i
    cdef real g, b
    for i in range(n):
        g = sign * g_in[i]
        if wd != 0:
            g = fma_(p[i], wd, g)                     # grad.add(param, alpha=wd)
        if use_mom:
            if first:
                b = g                                 # buf = clone(grad)
            else:
                b = fma_(g, one_minus_damp, buf[i] * mom)  # buf.mul_(m).add_(g, 1-d)
            buf[i] = b
            if nesterov:
                g = fma_(b, mom, g)
            else:
                g = b
        p[i] = fma_(g, neg_lr, p[i])                   # param.add_(grad, alpha=-lr)


def sgd_step(real[::1] param, const real[::1] grad, real[::1] buf,
             double lr, double momentum, double dampening, double weight_decay,
             bint nesterov, bint maximize, bint first, int nthreads):
    """One SGD step on ``param`` in place (``buf``: the momentum buffer).

    ``first`` marks the first step with momentum (the buffer is set to the
    gradient, not read). ``buf`` is not touched when ``momentum == 0``.
    Negation (maximize) and a zero weight decay enter as exact arithmetic
    (a factor -1, an added 0 * param).
    """
    cdef Py_ssize_t n = param.shape[0]
    _check_sizes("sgd_step", n, grad=grad.shape[0],
                 buf=buf.shape[0] if momentum != 0 else n)
    if n == 0:
        return
    row = [_address(&param[0]), _address(&grad[0]),
           _address(&buf[0] if momentum != 0 else &param[0])]
    sgd_step_many(real is double, np.array([row], dtype=np.int64), np.array([n], np.int64),
                  np.array([first], np.uint8), lr, momentum, dampening, weight_decay,
                  nesterov, maximize, nthreads)


cdef inline void adam_run(real* p, const real* g_in, real* m, real* v, real* vmax,
                          Py_ssize_t n, real sign, real wd, real decay, real coeff,
                          real base_m, real base_g, real beta2, real w2,
                          real inv_bc2, real eps, real neg_step, const bint amsgrad,
                          const bint first) noexcept nogil:
    """One contiguous run; ``amsgrad`` and ``first`` are literals at every call site.

    Non-finite values follow torch: a zero (coupled) weight decay adds nothing
    (no 0 * inf), the lerp uses only its own branch's operands, and the AMSGrad
    maximum propagates NaN like torch.maximum."""
    cdef Py_ssize_t i
    cdef real g, mi, vi, pi, d, den, vm
    cdef real one = sign * sign
    cdef bint small = base_m != 0
    for i in range(n):
        pi = p[i] * decay                             # AdamW: param.mul_(1 - lr*wd)
        g = sign * g_in[i]
        if wd != 0:
            g = fma_(p[i], wd, g)                     # Adam: grad.add(param, alpha=wd)
        mi = 0 if first else m[i]
        d = g - mi
        # exp_avg.lerp_(grad, 1 - beta1): torch's two-sided form, base = m or g
        mi = fma_(coeff, d, mi if small else g)
        m[i] = mi
        vi = 0 if first else v[i]
        vi = fma_(w2 * g, g, vi * beta2)               # mul_(beta2).addcmul_(g, g, 1-beta2)
        v[i] = vi
        if amsgrad:
            if not first:
                vm = vmax[i]
                vi = vm if (vm > vi or vm != vm) else vi
            vmax[i] = vi
        # torch: den = sqrt(v) / bc2_sqrt + eps; param.addcdiv_(m, den, -step_size),
        # i.e. p + (-step_size * m) / den. The numerator is torch's; den multiplies by
        # 1 / bc2_sqrt instead of dividing (an ulp at most): one division instead of
        # two, as sqrt and division share the divider, which bounds this loop. (Scaling
        # the numerator by bc2_sqrt instead would make a small m subnormal, losing
        # bits.) `one` (== 1 at run time) keeps the compiler from fusing the AdamW
        # decay product into it.
        den = sqrt_(vi) * inv_bc2 + eps
        p[i] = fma_(pi, one, neg_step * mi / den)


def adam_step(real[::1] param, const real[::1] grad, real[::1] exp_avg,
              real[::1] exp_avg_sq, real[::1] max_exp_avg_sq,
              double decay_factor, double beta1, double beta2, double eps,
              double weight_decay, bint decoupled, bint amsgrad, bint maximize,
              double step_size, double bc2_sqrt, bint first, int nthreads):
    """One Adam (``decoupled=False``) or AdamW step on ``param`` in place.

    ``decay_factor = 1 - lr * weight_decay`` (AdamW's), ``step_size = lr /
    (1 - beta1**t)`` and ``bc2_sqrt = sqrt(1 - beta2**t)`` come from the
    caller, computed in double like torch (here the compiler could fuse
    ``1 - lr * weight_decay`` into one rounding: 0 would become -5.6e-17 at
    lr = 10, weight_decay = 0.1, on some CPU variants only). ``first`` marks
    step 1: the moment buffers are written without being read, so they may
    be uninitialised. ``max_exp_avg_sq`` is touched only when ``amsgrad``.
    The unused weight-decay form and maximize enter as exact arithmetic
    (a factor 1 or -1, an added 0 * param).
    """
    cdef Py_ssize_t n = param.shape[0]
    _check_sizes("adam_step", n, grad=grad.shape[0], exp_avg=exp_avg.shape[0],
                 exp_avg_sq=exp_avg_sq.shape[0],
                 max_exp_avg_sq=max_exp_avg_sq.shape[0] if amsgrad else n)
    if n == 0:
        return
    row = [_address(&param[0]), _address(&grad[0]), _address(&exp_avg[0]),
           _address(&exp_avg_sq[0]),
           _address(&max_exp_avg_sq[0] if amsgrad else &param[0])]
    adam_step_many(real is double, np.array([row], dtype=np.int64), np.array([n], np.int64),
                   np.array([step_size]), np.array([bc2_sqrt]), np.array([first], np.uint8),
                   decay_factor, beta1, beta2, eps, weight_decay, decoupled, amsgrad, maximize,
                   nthreads)


# --- many parameters in one call ------------------------------------------------------
#
# A model's step updates hundreds of small arrays: one call per array would cost more
# in call overhead than the arithmetic. These take every array of a parameter group as
# addresses and run their chunks in one parallel region, each chunk through the inlined
# loops above; the single-array kernels are these on one row, so the bits are the same.


def _chunk_table(const long long[::1] sizes):
    """One row per chunk of the arrays of ``sizes``: (array index, first element, length)."""
    cdef Py_ssize_t j, c0, row = 0, count = 0
    for j in range(sizes.shape[0]):
        if sizes[j] < 0:
            raise ValueError(f"sizes must be >= 0; got {sizes[j]} at {j}.")
        count += (sizes[j] + STEP_CHUNK - 1) // STEP_CHUNK
    table = np.empty((count, 3), dtype=np.intp)
    cdef Py_ssize_t[:, ::1] t = table
    for j in range(sizes.shape[0]):
        for c0 in range(0, sizes[j], STEP_CHUNK):
            t[row, 0] = j
            t[row, 1] = c0
            t[row, 2] = min(STEP_CHUNK, sizes[j] - c0)
            row += 1
    return table


def data_extents(arrays):
    """``[start, end)`` byte addresses of each of ``arrays`` (C-contiguous NumPy arrays),
    as a list of pairs: what ``__array_interface__`` gives, without building its dict
    (a step reads the addresses of every parameter, gradient and buffer)."""
    cdef cnp.ndarray arr
    out = []
    for obj in arrays:
        arr = <cnp.ndarray?>obj
        start = <size_t>cnp.PyArray_DATA(arr)
        out.append((start, start + cnp.PyArray_NBYTES(arr)))
    return out


def _check_many(str op, addresses, sizes, int columns, **per_array):
    n = sizes.shape[0]
    if addresses.shape[0] != n or addresses.shape[1] != columns:
        raise ValueError(f"{op}: addresses must have shape ({n}, {columns}); "
                         f"got {tuple(addresses.shape)}.")
    for name, arr in per_array.items():
        if arr.shape[0] != n:
            raise ValueError(f"{op}: {name} must have shape ({n},); got ({arr.shape[0]},).")


cdef void _adam_many(real* kind, const long long[:, ::1] addr, const long long[::1] sizes,
                     const double[::1] step_size, const double[::1] bc2_sqrt,
                     const unsigned char[::1] first, double decay_factor, double beta1,
                     double beta2, double eps, double weight_decay, bint decoupled,
                     bint amsgrad, bint maximize, int nthreads,
                     const Py_ssize_t[:, ::1] table) noexcept nogil:
    cdef real sign = -1 if maximize else 1
    cdef real w1 = <real>(1.0 - beta1)
    cdef bint small = (w1 if w1 >= 0 else -w1) < 0.5
    cdef real coeff = w1 if small else w1 - 1
    cdef real base_m = 1 if small else 0
    cdef real base_g = 0 if small else 1
    cdef real wd = 0 if decoupled else <real>weight_decay
    cdef real decay = <real>decay_factor if decoupled else 1
    cdef real b2 = <real>beta2, w2 = <real>(1.0 - beta2)
    cdef real ep = <real>eps
    cdef real inv_bc2, neg_step
    cdef real *pp
    cdef real *pg
    cdef real *pm
    cdef real *pv
    cdef real *px
    cdef Py_ssize_t c, j, c0, k
    cdef fi_team team
    nthreads = fi_team_plan(&team, nthreads)
    with parallel(num_threads=nthreads):
        fi_team_enter(&team)
        for c in prange(table.shape[0], schedule="dynamic"):
            j = table[c, 0]
            c0 = table[c, 1]
            k = table[c, 2]
            pp = (<real*><size_t>addr[j, 0]) + c0
            pg = (<real*><size_t>addr[j, 1]) + c0
            pm = (<real*><size_t>addr[j, 2]) + c0
            pv = (<real*><size_t>addr[j, 3]) + c0
            px = ((<real*><size_t>addr[j, 4]) + c0) if amsgrad else pp
            inv_bc2 = <real>(1.0 / bc2_sqrt[j])
            neg_step = <real>(-step_size[j])
            if amsgrad:
                if first[j]:
                    adam_run(pp, pg, pm, pv, px, k, sign, wd, decay, coeff, base_m, base_g,
                             b2, w2, inv_bc2, ep, neg_step, 1, 1)
                else:
                    adam_run(pp, pg, pm, pv, px, k, sign, wd, decay, coeff, base_m, base_g,
                             b2, w2, inv_bc2, ep, neg_step, 1, 0)
            elif first[j]:
                adam_run(pp, pg, pm, pv, px, k, sign, wd, decay, coeff, base_m, base_g,
                         b2, w2, inv_bc2, ep, neg_step, 0, 1)
            else:
                adam_run(pp, pg, pm, pv, px, k, sign, wd, decay, coeff, base_m, base_g,
                         b2, w2, inv_bc2, ep, neg_step, 0, 0)
        fi_team_leave(&team)
    fi_team_done(&team)


def adam_step_many(bint is_double, const long long[:, ::1] addresses,
                   const long long[::1] sizes, const double[::1] step_size,
                   const double[::1] bc2_sqrt, const unsigned char[::1] first,
                   double decay_factor, double beta1, double beta2, double eps,
                   double weight_decay, bint decoupled, bint amsgrad, bint maximize,
                   int nthreads):
    """:func:`adam_step` on many arrays of one dtype (float64 if ``is_double``) sharing
    the hyper-parameters: row j of ``addresses`` holds the data addresses of array j's
    param, grad, exp_avg, exp_avg_sq and max_exp_avg_sq (read only with ``amsgrad``),
    each of ``sizes[j]`` elements, C-contiguous; ``step_size[j]``, ``bc2_sqrt[j]`` and
    ``first[j]`` are array j's. The caller keeps the arrays alive and guarantees the
    addresses (nothing here can check them). Bit-identical to one :func:`adam_step`
    per array."""
    _check_many("adam_step_many", addresses, sizes, 5, step_size=step_size,
                bc2_sqrt=bc2_sqrt, first=first)
    cdef const Py_ssize_t[:, ::1] table = _chunk_table(sizes)
    with nogil:
        if is_double:
            _adam_many[double](NULL, addresses, sizes, step_size, bc2_sqrt, first, decay_factor,
                               beta1, beta2, eps, weight_decay, decoupled, amsgrad, maximize,
                               nthreads, table)
        else:
            _adam_many[float](NULL, addresses, sizes, step_size, bc2_sqrt, first, decay_factor,
                              beta1, beta2, eps, weight_decay, decoupled, amsgrad, maximize,
                              nthreads, table)


cdef void _sgd_many(real* kind, const long long[:, ::1] addr, const unsigned char[::1] first,
                    double lr, double momentum, double dampening, double weight_decay,
                    bint nesterov, bint maximize, int nthreads,
                    const Py_ssize_t[:, ::1] table) noexcept nogil:
    cdef real sign = -1 if maximize else 1
    cdef real neg_lr = <real>(-lr), mom = <real>momentum
    cdef real omd = <real>(1.0 - dampening), wd = <real>weight_decay
    cdef bint use_mom = momentum != 0
    cdef real *pp
    cdef real *pg
    cdef real *pb
    cdef Py_ssize_t c, j, c0, k
    cdef fi_team team
    nthreads = fi_team_plan(&team, nthreads)
    with parallel(num_threads=nthreads):
        fi_team_enter(&team)
        for c in prange(table.shape[0], schedule="dynamic"):
            j = table[c, 0]
            c0 = table[c, 1]
            k = table[c, 2]
            pp = (<real*><size_t>addr[j, 0]) + c0
            pg = (<real*><size_t>addr[j, 1]) + c0
            pb = ((<real*><size_t>addr[j, 2]) + c0) if use_mom else pp
            if not use_mom:
                sgd_run(pp, pg, pb, k, sign, neg_lr, mom, omd, wd, 0, 0, 0)
            elif first[j]:
                if nesterov:
                    sgd_run(pp, pg, pb, k, sign, neg_lr, mom, omd, wd, 1, 1, 1)
                else:
                    sgd_run(pp, pg, pb, k, sign, neg_lr, mom, omd, wd, 1, 0, 1)
            elif nesterov:
                sgd_run(pp, pg, pb, k, sign, neg_lr, mom, omd, wd, 1, 1, 0)
            else:
                sgd_run(pp, pg, pb, k, sign, neg_lr, mom, omd, wd, 1, 0, 0)
        fi_team_leave(&team)
    fi_team_done(&team)


def sgd_step_many(bint is_double, const long long[:, ::1] addresses,
                  const long long[::1] sizes, const unsigned char[::1] first,
                  double lr, double momentum, double dampening, double weight_decay,
                  bint nesterov, bint maximize, int nthreads):
    """:func:`sgd_step` on many arrays of one dtype (float64 if ``is_double``) sharing
    the hyper-parameters: row j of ``addresses`` holds the data addresses of array j's
    param, grad and momentum buffer (read only when ``momentum != 0``), each of
    ``sizes[j]`` elements, C-contiguous; ``first[j]`` marks array j's first step with
    momentum. The caller keeps the arrays alive and guarantees the addresses.
    Bit-identical to one :func:`sgd_step` per array."""
    _check_many("sgd_step_many", addresses, sizes, 3, first=first)
    cdef const Py_ssize_t[:, ::1] table = _chunk_table(sizes)
    with nogil:
        if is_double:
            _sgd_many[double](NULL, addresses, first, lr, momentum, dampening, weight_decay,
                              nesterov, maximize, nthreads, table)
        else:
            _sgd_many[float](NULL, addresses, first, lr, momentum, dampening, weight_decay,
                             nesterov, maximize, nthreads, table)
