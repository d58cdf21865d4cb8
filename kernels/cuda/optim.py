"""numba.cuda optimizer step kernels: SGD and Adam/AdamW, one thread per element.

The arithmetic is that of kernels/cpu/optim.pyx (torch.optim's single-tensor
formulas); the wrappers round the scalar hyper-parameters to the parameter's
dtype before launching, so float32 parameters are updated in float32.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ._support import THREADS_1D, blocks_1d


@cuda.jit
def _sgd_step(p, grad, buf, neg_lr, mom, one_minus_damp, wd, use_wd, use_mom,
              nesterov, maximize, first):
    """One thread applies one SGD step to one parameter element."""
    i = cuda.grid(1)
    if i >= p.shape[0]:
        return
    g = -grad[i] if maximize else grad[i]
    if use_wd:
        g = cuda.fma(p[i], wd, g)
    if use_mom:
        if first:
            b = g
        else:
            b = cuda.fma(g, one_minus_damp, buf[i] * mom)
        buf[i] = b
        g = cuda.fma(b, mom, g) if nesterov else b
    p[i] = cuda.fma(g, neg_lr, p[i])


@cuda.jit
def _adam_step(p, grad, m, v, vmax, wd, decay, w1, coeff, w1_small, beta2, w2,
               bc2_sqrt, eps, neg_step, use_wd, decoupled, amsgrad, maximize, first):
    """One thread applies one Adam/AdamW step to one parameter element."""
    i = cuda.grid(1)
    if i >= p.shape[0]:
        return
    g = -grad[i] if maximize else grad[i]
    pi = p[i]
    if use_wd:
        if decoupled:
            pi = pi * decay
        else:
            g = cuda.fma(pi, wd, g)
    zero = eps - eps  # a typed zero: the state is not read on the first step
    mi = zero if first else m[i]
    d = g - mi
    mi = cuda.fma(w1, d, mi) if w1_small else cuda.fma(coeff, d, g)
    m[i] = mi
    vi = zero if first else v[i]
    vi = cuda.fma(w2 * g, g, vi * beta2)
    v[i] = vi
    if amsgrad:
        if not first:
            vm = vmax[i]
            if vm > vi or vm != vm:  # torch.maximum: NaN wins
                vi = vm
        vmax[i] = vi
    den = math.sqrt(vi) / bc2_sqrt + eps
    p[i] = pi + neg_step * mi / den


def sgd_step(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov,
             maximize, first, stream=0):
    """Launch one SGD step over the 1-D device array ``param`` (see the CPU kernel)."""
    s = np.dtype(param.dtype).type
    n = param.shape[0]
    _sgd_step[blocks_1d(n), THREADS_1D, stream](
        param, grad, buf, s(-lr), s(momentum), s(1.0 - dampening), s(weight_decay),
        weight_decay != 0, momentum != 0, bool(nesterov), bool(maximize), bool(first))


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
              weight_decay, decoupled, amsgrad, maximize, step_size, bc2_sqrt, first,
              stream=0):
    """Launch one Adam/AdamW step over the 1-D device array ``param`` (see the CPU kernel)."""
    s = np.dtype(param.dtype).type
    n = param.shape[0]
    w1 = s(1.0 - beta1)
    _adam_step[blocks_1d(n), THREADS_1D, stream](
        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, s(weight_decay),
        s(1.0 - lr * weight_decay), w1, s(w1 - s(1)), bool(abs(w1) < 0.5), s(beta2),
        s(1.0 - beta2), s(bc2_sqrt), s(eps), s(-step_size), weight_decay != 0,
        bool(decoupled), bool(amsgrad), bool(maximize), bool(first))


def clone_into(dst, src, stream=0):
    """Copy the device array ``src`` into the device array ``dst`` (same shape and dtype)."""
    dst.copy_to_device(src, stream=stream)
