"""The result-memory cache: large CPU results reuse freed blocks (fastinterp/_memory.py)."""
from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastinterp as fi
from fastinterp import _memory

try:
    from numpy._core.multiarray import get_handler_name
except ImportError:   # NumPy < 2
    from numpy.core.multiarray import get_handler_name

CACHE = "fastinterp_output_cache"


@pytest.fixture
def fresh_cache():
    """An empty cache with the default limit, restored afterwards."""
    old = fi.set_output_cache(0)
    fi.set_output_cache(_memory.DEFAULT_LIMIT_MB << 20)
    yield
    fi.set_output_cache(old)


def big_grid_sample_case(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 8, 64, 64)).astype(np.float32)   # 256 KiB in
    grid = rng.uniform(-1.1, 1.1, (2, 96, 96, 2)).astype(np.float32)
    return x, grid   # (2, 8, 96, 96) float32 out: 576 KiB; float64 twice that


def test_large_results_come_from_the_cache_and_small_ones_do_not(fresh_cache):
    big = fi.lerp(np.zeros(1 << 18, np.float32), np.ones(1 << 18, np.float32), 0.5)   # 1 MiB
    small = fi.lerp(np.zeros(1000, np.float32), np.ones(1000, np.float32), 0.5)
    assert get_handler_name(big) == CACHE and big.flags.owndata
    assert get_handler_name(small) != CACHE
    assert get_handler_name(np.empty(1 << 20)) != CACHE    # other code is untouched


def test_a_freed_result_is_reused_and_the_results_are_unchanged(fresh_cache):
    x, grid = big_grid_sample_case()
    x, grid = x.astype(np.float64), grid.astype(np.float64)
    first = fi.grid_sample(x, grid)
    expected = first.copy()
    address = first.__array_interface__["data"][0]
    first.fill(np.nan)          # stale contents must never show through
    del first
    before = fi.output_cache_info()
    again = fi.grid_sample(x, grid)
    after = fi.output_cache_info()
    assert after["hits"] == before["hits"] + 1
    assert again.__array_interface__["data"][0] == address
    np.testing.assert_array_equal(again, expected)


@pytest.mark.parametrize("op", ["resize", "grid_sample_backward", "pairwise_sqdist", "lerp"])
def test_results_equal_with_and_without_the_cache(op):
    rng = np.random.default_rng(3)
    x, grid = big_grid_sample_case(1)
    calls = {
        "resize": lambda: fi.resize(x, size=(160, 150), mode="bicubic"),
        "grid_sample_backward": lambda: fi.grid_sample_backward(
            np.ones((2, 8, 96, 96), np.float32), x, grid),
        "pairwise_sqdist": lambda: fi.pairwise_sqdist(
            rng.standard_normal((600, 16)).astype(np.float32),
            rng.standard_normal((700, 16)).astype(np.float32)),
        "lerp": lambda: fi.lerp(np.full((512, 1024), 2.0), np.full((512, 1024), 4.0), 0.25),
    }
    old = fi.set_output_cache(0)
    try:
        rng = np.random.default_rng(3)
        plain = calls[op]()
        fi.set_output_cache(_memory.DEFAULT_LIMIT_MB << 20)
        for _ in range(3):      # the second and third reuse the blocks freed by the one before
            rng = np.random.default_rng(3)
            cached = calls[op]()
            for a, b in zip(np.atleast_1d(plain) if not isinstance(plain, tuple) else plain,
                            np.atleast_1d(cached) if not isinstance(cached, tuple) else cached):
                np.testing.assert_array_equal(a, b)
            del cached
    finally:
        fi.set_output_cache(old)


def test_the_limit_bounds_what_is_kept(fresh_cache):
    fi.set_output_cache(6 << 20)
    arrays = [_memory.empty((n, 1024, 256), np.float32) for n in (1, 2, 3, 1, 2, 5)]
    del arrays
    info = fi.output_cache_info()
    assert 0 < info["kept_bytes"] <= 6 << 20
    huge = _memory.empty((8, 1024, 256), np.float32)         # 8 MiB: larger than the limit
    del huge
    assert fi.output_cache_info()["kept_bytes"] <= 6 << 20
    many = [_memory.empty((1, 1024, 256 + i), np.float32) for i in range(0, 40 * 64, 64)]
    del many                                                  # more blocks than slots
    info = fi.output_cache_info()
    assert info["kept_blocks"] <= 16 and info["kept_bytes"] <= 6 << 20
    assert fi.set_output_cache(0) == 6 << 20
    assert fi.output_cache_info()["kept_bytes"] == 0 == fi.output_cache_info()["kept_blocks"]


def test_a_zero_limit_allocates_plainly(fresh_cache):
    fi.set_output_cache(0)
    out = fi.lerp(np.zeros(1 << 20), np.ones(1 << 20), 0.5)
    assert get_handler_name(out) != CACHE
    assert fi.output_cache_info()["kept_bytes"] == 0


def test_cached_arrays_behave_as_ordinary_arrays(fresh_cache):
    a = _memory.empty((512, 1024), np.float32)
    a[...] = np.arange(a.size, dtype=np.float32).reshape(a.shape)
    b = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a, b)
    a.resize((1024, 1024), refcheck=False)                  # realloc through the handler
    np.testing.assert_array_equal(a[:512].ravel(), np.arange(512 * 1024, dtype=np.float32))
    a.resize((16, 1024), refcheck=False)
    np.testing.assert_array_equal(a.ravel(), np.arange(16 * 1024, dtype=np.float32))
    view = a[::2]
    del a
    np.testing.assert_array_equal(view[1], np.arange(2048, 3072, dtype=np.float32))


def test_concurrent_callers_get_distinct_blocks_and_right_results(fresh_cache):
    x = np.linspace(0, 1, 1 << 18)
    errors = []

    def worker(k):
        try:
            for _ in range(30):
                y = fi.lerp(x, x + k, 1.0)
                if not np.array_equal(y, x + k):
                    errors.append(k)
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("setting, error, message", [
    (-1, ValueError, r"max_bytes must be in \[0, 2\*\*62\); got -1"),
    (2 ** 70, ValueError, r"max_bytes must be in \[0, 2\*\*62\); got 1180591620717411303424"),
    (1.5, TypeError, "max_bytes must be an int; got float 1.5"),
    (True, TypeError, "max_bytes must be an int; got bool"),
    (None, TypeError, "max_bytes must be an int; got NoneType"),
    ("1", TypeError, "max_bytes must be an int; got str")])
def test_bad_limits_are_refused(setting, error, message):
    """A value of the wrong type is a TypeError, an int out of range a ValueError naming
    the range (the README's error conventions)."""
    before = fi.output_cache_info()
    with pytest.raises(error, match=message):
        fi.set_output_cache(setting)
    assert fi.output_cache_info() == before


def _run(code, env_extra=None):
    import os
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env=env)


def test_the_limit_comes_from_the_environment():
    code = "import fastinterp as fi; print(fi.output_cache_info()['limit'])"
    assert _run(code, {"FASTINTERP_OUTPUT_CACHE_MB": "3"}).stdout.strip() == str(3 << 20)
    assert _run(code, {"FASTINTERP_OUTPUT_CACHE_MB": "0"}).stdout.strip() == "0"
    bad = _run(code, {"FASTINTERP_OUTPUT_CACHE_MB": "lots"})
    assert bad.returncode != 0 and "FASTINTERP_OUTPUT_CACHE_MB" in bad.stderr
    # a limit set at run time replaces the bad value: the cache, and the ops, work again
    fixed = _run("import fastinterp as fi, numpy as np; fi.set_output_cache(1 << 22); "
                 "print(fi.output_cache_info()['limit'], fi.lerp(np.zeros(1 << 18), 1.0, 0.5)[0])",
                 {"FASTINTERP_OUTPUT_CACHE_MB": "lots"})
    assert fixed.stdout.split() == [str(1 << 22), "0.5"], fixed.stderr


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_allocates_while_the_parent_threads_do():
    proc = _run("""
        import os, threading, numpy as np, fastinterp as fi
        stop = False
        def churn():
            while not stop:
                fi.lerp(np.zeros(1 << 18), np.ones(1 << 18), 0.5)
        t = threading.Thread(target=churn); t.start()
        for _ in range(20):
            pid = os.fork()
            if pid == 0:
                y = fi.lerp(np.zeros(1 << 18), np.ones(1 << 18), 0.5)
                os._exit(0 if y[0] == 0.5 else 1)
            _, status = os.waitpid(pid, 0)
            assert status == 0, status
        stop = True; t.join(); print("ok")
    """)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
