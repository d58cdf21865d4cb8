"""Optimizer steps: fastinterp vs torch.optim, on one array of 10,000,000 float32
parameters (the kernels' speed) and on a model's 162 arrays (the per-array cost).

Threads are pinned to 2 for every library by bench/conftest.py; the
"(1 thread)" rows run fastinterp on one thread in the same process, for the
"two threads never slower than one" check (bench/threads_fresh.py repeats it
in fresh processes, where OpenMP start-up effects show). The GB/s
column counts the bytes a step must move: Adam reads param, grad, exp_avg,
exp_avg_sq and writes three of them back (7 x 40 MB); SGD with momentum
reads param, grad, buffer and writes two (5 x 40 MB).

The model rows step the arrays of a 40-block MLP with layer norms (a 256x256 weight,
a bias and a norm's two vectors per block, a 2-vector head: 162 arrays, 2.7M
parameters), as a training loop does: what a step costs per array shows there,
where torch's ``foreach`` and ``fused`` implementations batch the arrays too.

The "memory ceiling" rows move the same bytes with the simplest in-place
kernel there is, torch's ``a += b`` on 2 threads (12 bytes an element: read
a and b, write a), over arrays sized to a step's byte count: the time any
step needs on this machine's memory. Where torch's fused step already runs
near it, no optimizer can be much faster than torch's.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import memory_ceiling
from fastinterp.optim import SGD, Adam

N = 10_000_000
ADAM_BYTES = 7 * 4 * N
SGD_BYTES = 5 * 4 * N


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal(N, dtype=np.float32),
            rng.standard_normal(N, dtype=np.float32) * np.float32(1e-2))


@pytest.fixture(scope="module")
def model():
    """(params, grads) of the 40-block model, float32."""
    rng = np.random.default_rng(1)
    shapes = [s for _ in range(40) for s in ((256, 256), (256,), (256,), (256,))] + [(2, 256), (2,)]
    params = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(1e-2) for s in shapes]
    return params, grads


def _bench_torch(benchmark, data, group, impl, cls, **kw):
    torch = pytest.importorskip("torch")
    params, grads = data if isinstance(data[0], list) else ([data[0]], [data[1]])
    ps = [torch.from_numpy(p.copy()) for p in params]
    for p, g in zip(ps, grads):
        p.grad = torch.from_numpy(g)
    benchmark.group = group
    benchmark.extra_info["library"] = f"torch ({impl})"
    try:
        opt = getattr(torch.optim, cls)(ps, **kw, **{impl: True})
        opt.step()
    except (RuntimeError, ValueError) as exc:  # e.g. a fused CPU kernel missing in an old torch
        pytest.skip(f"torch {cls} {impl} unavailable: {exc}")
    benchmark(opt.step)
    return benchmark


def _bench_ours(benchmark, data, group, cls, threads=None, **kw):
    import fastinterp as fi
    benchmark.group = group
    benchmark.extra_info["library"] = "fastinterp" + (f" ({threads} thread)" if threads else "")
    params, grads = data if isinstance(data[0], list) else ([data[0]], [data[1]])
    opt = cls([p.copy() for p in params], **kw)
    before = fi.get_num_threads()
    fi.set_num_threads(threads or before)
    try:
        opt.step(grads)
        benchmark(opt.step, grads)
    finally:
        fi.set_num_threads(before)
    return benchmark


ADAM = "adam_step: 10M float32 params"
SGD_GROUP = "sgd_step (momentum 0.9): 10M float32 params"


def test_adam_fastinterp(benchmark, data, bandwidth):
    bandwidth(_bench_ours(benchmark, data, ADAM, Adam, lr=1e-3), ADAM_BYTES)


def test_adam_fastinterp_one_thread(benchmark, data, bandwidth):
    bandwidth(_bench_ours(benchmark, data, ADAM, Adam, threads=1, lr=1e-3), ADAM_BYTES)


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_adam_torch(benchmark, data, impl, bandwidth):
    bandwidth(_bench_torch(benchmark, data, ADAM, impl, "Adam", lr=1e-3), ADAM_BYTES)


def test_adam_memory_ceiling(benchmark, bandwidth):
    bandwidth(memory_ceiling(benchmark, ADAM, ADAM_BYTES), ADAM_BYTES)


def test_sgd_memory_ceiling(benchmark, bandwidth):
    bandwidth(memory_ceiling(benchmark, SGD_GROUP, SGD_BYTES), SGD_BYTES)


def test_sgd_fastinterp(benchmark, data, bandwidth):
    bandwidth(_bench_ours(benchmark, data, SGD_GROUP, SGD, lr=1e-3, momentum=0.9), SGD_BYTES)


def test_sgd_fastinterp_one_thread(benchmark, data, bandwidth):
    bandwidth(_bench_ours(benchmark, data, SGD_GROUP, SGD, threads=1, lr=1e-3, momentum=0.9),
              SGD_BYTES)


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_sgd_torch(benchmark, data, impl, bandwidth):
    bandwidth(_bench_torch(benchmark, data, SGD_GROUP, impl, "SGD", lr=1e-3, momentum=0.9),
              SGD_BYTES)


MODEL_ADAM = "adam_step: a model's 162 float32 arrays (2.7M params)"
MODEL_SGD = "sgd_step (momentum 0.9): a model's 162 float32 arrays (2.7M params)"


def test_model_adam_fastinterp(benchmark, model):
    _bench_ours(benchmark, model, MODEL_ADAM, Adam, lr=1e-3)


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_model_adam_torch(benchmark, model, impl):
    _bench_torch(benchmark, model, MODEL_ADAM, impl, "Adam", lr=1e-3)


def test_model_sgd_fastinterp(benchmark, model):
    _bench_ours(benchmark, model, MODEL_SGD, SGD, lr=1e-3, momentum=0.9)


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_model_sgd_torch(benchmark, model, impl):
    _bench_torch(benchmark, model, MODEL_SGD, impl, "SGD", lr=1e-3, momentum=0.9)
