"""Shared benchmark set-up: every library runs with 2 threads, same data.

fastinterp, torch, OpenCV and the BLAS behind NumPy are all limited to
``BENCH_THREADS`` threads for the whole session, so the ratios compare
kernels, not thread counts. The ``bandwidth`` fixture records a result's
effective memory bandwidth (bytes read + written per second) in
``extra_info``, where bench/report.py prints it.
"""
from __future__ import annotations

import os

import pytest

BENCH_THREADS = int(os.environ.get("FASTINTERP_BENCH_THREADS", "2"))


@pytest.fixture(scope="session", autouse=True)
def bench_threads():
    """Pin every library's thread pool to BENCH_THREADS for the session."""
    import fastinterp as fi
    before = fi.get_num_threads()
    fi.set_num_threads(BENCH_THREADS)
    try:
        import torch
        torch.set_num_threads(BENCH_THREADS)
    except ImportError:
        pass
    try:
        import cv2
        cv2.setNumThreads(BENCH_THREADS)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(limits=BENCH_THREADS)
    except ImportError:
        limits = None
    yield BENCH_THREADS
    if limits is not None:
        limits.restore_original_limits()
    fi.set_num_threads(before)


@pytest.fixture
def bandwidth():
    """``record(benchmark, nbytes)``: store GB/s of the median run in extra_info."""
    def record(benchmark, nbytes: int) -> None:
        median = benchmark.stats.stats.median
        benchmark.extra_info["GB/s"] = round(nbytes / median / 1e9, 2)
    return record


def memory_ceiling(benchmark, group: str, nbytes: int):
    """Benchmark torch's in-place ``a += b`` over ``nbytes`` bytes read and written (a
    third per array) in ``group``: the speed of memory at BENCH_THREADS threads, for
    ops that only stream their operands (the same bytes, the same threads)."""
    torch = pytest.importorskip("torch")
    a, b = torch.zeros(nbytes // 12), torch.ones(nbytes // 12)
    benchmark.group = group
    benchmark.extra_info["library"] = "memory ceiling (torch a += b, same bytes)"
    benchmark(a.add_, b)
    return benchmark


def run(benchmark, library: str, group: str, fn, *args, **kwargs):
    """Benchmark ``fn(*args, **kwargs)`` as ``library`` in ``group``."""
    benchmark.group = group
    benchmark.extra_info["library"] = library
    return benchmark(fn, *args, **kwargs)


@pytest.fixture
def bench():
    """``bench(benchmark, library, group, fn, *args)``: label and run one benchmark."""
    return run


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record which compiled kernel variant ran (bench/check.py keeps it with the baseline)."""
    import fastinterp._cpu as cpu
    machine_info["fastinterp_variant"] = cpu.VARIANT
