"""Optimizer steps on 10,000,000 float32 parameters: fastinterp vs torch.optim (2 threads)."""
from __future__ import annotations

import numpy as np
import pytest

import fastinterp as fi
from fastinterp.optim import SGD, Adam

N = 10_000_000
THREADS = 2


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal(N, dtype=np.float32),
            rng.standard_normal(N, dtype=np.float32) * np.float32(1e-2))


@pytest.fixture(autouse=True)
def two_threads():
    before = fi.get_num_threads()
    fi.set_num_threads(THREADS)
    yield
    fi.set_num_threads(before)


def _bench_torch(benchmark, data, group, impl, cls, **kw):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
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


def _bench_ours(benchmark, data, group, cls, **kw):
    benchmark.group = group
    benchmark.extra_info["library"] = "fastinterp"
    p = data[0].copy()
    opt = cls([p], **kw)
    grads = [data[1]]
    opt.step(grads)
    benchmark(opt.step, grads)


ADAM = "adam_step: 10M float32 params"
SGD_GROUP = "sgd_step (momentum 0.9): 10M float32 params"


def test_adam_fastinterp(benchmark, data):
    _bench_ours(benchmark, data, ADAM, Adam, lr=1e-3)


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_adam_torch(benchmark, data, impl):
    _bench_torch(benchmark, data, ADAM, impl, "Adam", lr=1e-3)


def test_sgd_fastinterp(benchmark, data):
    _bench_ours(benchmark, data, SGD_GROUP, SGD, lr=1e-3, momentum=0.9)


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_sgd_torch(benchmark, data, impl):
    _bench_torch(benchmark, data, SGD_GROUP, impl, "SGD", lr=1e-3, momentum=0.9)
