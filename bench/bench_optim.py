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


def _torch(data):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    p = torch.from_numpy(data[0].copy())
    p.grad = torch.from_numpy(data[1])
    return torch, p


def test_adam_fastinterp(benchmark, data):
    benchmark.group = "adam_step: 10M float32 params"
    benchmark.extra_info["library"] = "fastinterp"
    p = data[0].copy()
    opt = Adam([p], lr=1e-3)
    grads = [data[1]]
    opt.step(grads)
    benchmark(opt.step, grads)


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_adam_torch(benchmark, data, impl):
    torch, p = _torch(data)
    benchmark.group = "adam_step: 10M float32 params"
    benchmark.extra_info["library"] = f"torch ({impl})"
    opt = torch.optim.Adam([p], lr=1e-3, **{impl: True})
    opt.step()
    benchmark(opt.step)


def test_sgd_fastinterp(benchmark, data):
    benchmark.group = "sgd_step (momentum 0.9): 10M float32 params"
    benchmark.extra_info["library"] = "fastinterp"
    p = data[0].copy()
    opt = SGD([p], lr=1e-3, momentum=0.9)
    grads = [data[1]]
    opt.step(grads)
    benchmark(opt.step, grads)


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_sgd_torch(benchmark, data, impl):
    torch, p = _torch(data)
    benchmark.group = "sgd_step (momentum 0.9): 10M float32 params"
    benchmark.extra_info["library"] = f"torch ({impl})"
    try:
        opt = torch.optim.SGD([p], lr=1e-3, momentum=0.9, **{impl: True})
        opt.step()
    except (RuntimeError, ValueError) as exc:  # fused SGD on CPU needs a recent torch
        pytest.skip(f"torch SGD {impl} unavailable: {exc}")
    benchmark(opt.step)
