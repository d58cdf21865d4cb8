"""Optimizer steps on 10,000,000 float32 parameters: fastinterp vs torch.optim.

Threads are pinned to 2 for every library by bench/conftest.py; the
"(1 thread)" rows run fastinterp on one thread in the same process, for the
"two threads never slower than one" check (bench/threads_fresh.py repeats it
in fresh processes, where OpenMP start-up effects show). The GB/s
column counts the bytes a step must move: Adam reads param, grad, exp_avg,
exp_avg_sq and writes three of them back (7 x 40 MB); SGD with momentum
reads param, grad, buffer and writes two (5 x 40 MB).

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


def _bench_torch(benchmark, data, group, impl, cls, **kw):
    torch = pytest.importorskip("torch")
    p = torch.from_numpy(data[0].copy())
    p.grad = torch.from_numpy(data[1])
    benchmark.group = group
    benchmark.extra_info["library"] = f"torch ({impl})"
    try:
        opt = getattr(torch.optim, cls)([p], **kw, **{impl: True})
        opt.step()
    except (RuntimeError, ValueError) as exc:  # e.g. a fused CPU kernel missing in an old torch
        pytest.skip(f"torch {cls} {impl} unavailable: {exc}")
    benchmark(opt.step)
    return benchmark


def _bench_ours(benchmark, data, group, cls, threads=None, **kw):
    import fastinterp as fi
    benchmark.group = group
    benchmark.extra_info["library"] = "fastinterp" + (f" ({threads} thread)" if threads else "")
    p = data[0].copy()
    opt = cls([p], **kw)
    grads = [data[1]]
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
