"""Every CPU op family with a team of two threads: the result is bit-identical to
one thread's, and the calling thread's CPU affinity is what it was before
(the kernels bind their OpenMP threads only while a region runs, _team.h).

The sizes are large enough for each op to go parallel (``threads_for``)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fastinterp as fi
from fastinterp import plugins
from fastinterp.distance import deterministic_matmul
from fastinterp.models.nca import nca_loss_grad

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"),
                                reason="needs os.sched_getaffinity")


def _rand(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _grid(n, ho, wo, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.1, 1.1, (n, ho, wo, 2)).astype(np.float32)


def _lerp_abi():
    """lerp through the built-in C ABI table (kernels/cpu/abi.pyx)."""
    entry = next(k for k in plugins.builtin_kernels()
                 if k["op"] == "lerp" and k["dtype"] == "float32")
    kernel = plugins.LerpKernel("builtin", "lerp", "float32", entry["address"], None, False)
    a, b, t = _rand((700, 1000)), _rand((700, 1000), seed=1), _rand((700, 1000), seed=2)
    out = np.empty_like(a)
    kernel(out, a, b, t)
    return out


def _slerp():
    a, b = _rand((2100, 257), np.float64), _rand((2100, 257), np.float64, seed=1)
    return (fi.slerp(a, b, np.random.default_rng(2).random(2100)),
            fi.slerp(a, b, np.linspace(0, 1, 5), path=True))


def _grid_sample(mode, channels_last):
    x = _rand((2, 80, 80, 4) if channels_last else (2, 4, 80, 80))
    return fi.grid_sample(x, _grid(2, 80, 80), mode=mode, channels_last=channels_last)


def _grid_sample_backward(n, mode):
    x, g = _rand((n, 4, 70, 70)), _grid(n, 100, 100)
    return fi.grid_sample_backward(_rand((n, 4, 100, 100), seed=3), x, g, mode=mode)


def _affine():
    theta = _rand((2, 2, 3))
    return (fi.affine_grid(theta, (2, 3, 256, 256)),
            fi.affine_grid_backward(_rand((2, 256, 256, 2)), (2, 3, 256, 256)))


def _resize(mode, antialias=False):
    x = _rand((2, 3, 256, 256))
    return (fi.resize(x, (300, 310), mode=mode, antialias=antialias),
            fi.resize(x, (120, 90), mode=mode, antialias=antialias),
            fi.resize_backward(_rand((2, 3, 300, 310)), x.shape, mode=mode,
                               antialias=antialias))


def _pool():
    x = _rand((2, 3, 400, 400))
    return (fi.adaptive_avg_pool2d(x, (70, 90)),
            fi.adaptive_avg_pool2d_backward(_rand((2, 3, 300, 300)), (2, 3, 400, 400)))


def _pairwise():
    x, y = _rand((600, 64)), _rand((500, 64), seed=1)
    return fi.pairwise_sqdist(x, y), fi.pairwise_l2(x), fi.pairwise_sqdist(x)


def _pairwise_backward():
    x, y = _rand((1500, 8), np.float64), _rand((1400, 8), np.float64, seed=1)
    g = _rand((1500, 1400), np.float64, seed=2)
    return fi.pairwise_sqdist_backward(g, x, y) + fi.pairwise_l2_backward(g, x, y)


def _knn():
    x, q = _rand((700, 64)), _rand((400, 64), seed=1)
    return fi.knn(x, q, 5) + fi.knn(x, x[:300], 3)


def _matmul():
    return deterministic_matmul(_rand((300, 64)), _rand((64, 1000), seed=1))


def _optim():
    p1, p2 = _rand(300_000), _rand(300_000, seed=1)
    adam, sgd = fi.Adam([p1], lr=1e-2), fi.SGD([p2], lr=1e-2, momentum=0.9)
    for seed in (2, 3):
        adam.step([_rand(300_000, seed=seed)])
        sgd.step([_rand(300_000, seed=seed + 10)])
    return p1, p2


def _nca():
    X = _rand((800, 10), np.float64)
    labels = np.random.default_rng(1).integers(0, 4, 800)
    return nca_loss_grad(_rand((3, 10), np.float64, seed=2), X, labels)


CASES = {
    "lerp": lambda: fi.lerp(_rand((1024, 600)), _rand((1024, 600), seed=1), 0.3),
    "lerp_broadcast": lambda: fi.lerp(_rand((1024, 600)), _rand((1, 600), seed=1),
                                      _rand((1024, 1), seed=2)),
    "lerp_c_abi": _lerp_abi,
    "slerp": _slerp,
    "grid_sample_bilinear": lambda: _grid_sample("bilinear", False),
    "grid_sample_bicubic_nhwc": lambda: _grid_sample("bicubic", True),
    "grid_sample_backward_per_image": lambda: _grid_sample_backward(3, "bilinear"),
    "grid_sample_backward_blocked": lambda: _grid_sample_backward(1, "bicubic"),
    "affine_grid": _affine,
    "resize_bilinear": lambda: _resize("bilinear"),
    "resize_bicubic_antialias": lambda: _resize("bicubic", True),
    "adaptive_avg_pool2d": _pool,
    "pairwise": _pairwise,
    "pairwise_backward": _pairwise_backward,
    "knn": _knn,
    "deterministic_matmul": _matmul,
    "optim": _optim,
    "nca": _nca,
}


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_threads_bit_identical_and_affinity_restored(threads, case):
    run = CASES[case]
    fi.set_num_threads(1)
    one = _as_tuple(run())
    fi.set_num_threads(2)
    for _ in range(2):     # a second region reuses the team
        before = os.sched_getaffinity(0)
        two = _as_tuple(run())
        assert os.sched_getaffinity(0) == before, f"{case}: the caller's affinity changed"
        assert len(one) == len(two)
        for i, (x, y) in enumerate(zip(one, two)):
            x, y = np.asarray(x), np.asarray(y)
            assert x.dtype == y.dtype and x.shape == y.shape, (case, i)
            assert x.tobytes() == y.tobytes(), f"{case}: output {i} differs with 2 threads"


def _run_forking_script(script, what):
    """Run ``script`` in a fresh interpreter (its own session: hung children are killed
    with it) and return its stdout; fails naming ``what`` when it hangs."""
    import signal
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{what} hung")
    assert proc.returncode == 0, err[-3000:]
    return out


_FORK_SCRIPT = r"""
import multiprocessing as mp, os, sys
import numpy as np, fastinterp as fi

fi.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.random((16, 32, 128, 128), dtype=np.float32)
grid = rng.uniform(-1.1, 1.1, (16, 128, 128, 2)).astype(np.float32)

def work():
    return (fi.lerp(x, x[::-1], 0.3), fi.grid_sample(x, grid),
            fi.resize(x, size=(100, 90)), fi.pairwise_sqdist(x[0, 0], x[1, 1]))

want = work()                       # the parent runs OpenMP teams before forking

def child(_=None):
    got = work()
    assert fi.get_num_threads() == 1
    try:
        fi.set_num_threads(2)
    except RuntimeError as e:
        assert "made by fork" in str(e), e
    else:
        raise AssertionError("set_num_threads(2) accepted in a forked child")
    fi.set_num_threads(1)
    return all(np.array_equal(g, w) for g, w in zip(got, want))

pid = os.fork()
if pid == 0:
    os._exit(0 if child() else 3)
assert os.waitpid(pid, 0)[1] == 0
with mp.get_context("fork").Pool(2) as pool:
    assert all(pool.map(child, range(2)))
assert fi.get_num_threads() == 2    # the parent keeps its setting
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_on_one_thread_and_does_not_hang():
    """GNU OpenMP's thread pool does not survive fork: a child whose parent ran teams would
    wait for ever in its first parallel region. fastinterp runs such a child on one thread
    (same bits), refuses more, and leaves the parent alone."""
    assert _run_forking_script(_FORK_SCRIPT, "a forked child").strip() == "ok"


# Each lock fastinterp's Python code takes on a call's way, held by another thread of
# the parent at the moment of the fork (a server's worker thread inside fastinterp while
# a DataLoader or multiprocessing forks): the child, where that thread does not exist,
# must still run every op.
_LOCK_HELD_AT_FORK_SCRIPT = r"""
import importlib, os, signal, threading
import numpy as np, fastinterp as fi
from fastinterp import _memory, _plans, _registry, plugins
rz = importlib.import_module("fastinterp.resize")
x = np.random.default_rng(0).random((1, 2, 9, 7)).astype(np.float32)

def child_work(size):
    a = fi.resize(x, size=size, mode="bicubic")             # registry, tap tables, plans
    b = fi.lerp(x, x[::-1], 0.25)
    fi.set_output_cache(fi.output_cache_info()["limit"])    # the output cache's lock
    names = [k["op"] for k in plugins.builtin_kernels()]    # the plugin table's lock
    return a.shape == (1, 2) + size and b.shape == x.shape and "lerp" in names

locks = {"registry": _registry._lock, "plans": _plans._lock, "memory": _memory._lock,
         "resize tables": rz._TABLE_CACHE._lock, "plugins": plugins._lock}
for i, (name, lock) in enumerate(locks.items()):
    held, release = threading.Event(), threading.Event()
    def hold():
        with lock:
            held.set()
            release.wait()
    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        signal.alarm(30)                # a hung child dies instead of waiting for ever
        os._exit(0 if child_work((5 + i, 3)) else 3)
    release.set()
    t.join()
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"the child forked while another thread held the {name} lock: {status}"
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_another_thread_holds_a_lock_runs_the_ops():
    """A child forked while another thread of the parent was inside fastinterp waited
    for ever for the lock that thread held (the registry's, the tap tables' cache's):
    2 to 6 children in 200 with a thread resizing in the background. Every lock of
    fastinterp's Python code is released afresh in a forked child."""
    assert _run_forking_script(_LOCK_HELD_AT_FORK_SCRIPT, "a forked child").strip() == "ok"


def test_every_python_lock_of_fastinterp_is_released_in_a_forked_child():
    """The class of the bug above: a lock made with ``threading`` directly is not reset in
    a forked child; fastinterp makes its locks with ``_config.fork_safe_lock``."""
    import re
    from pathlib import Path
    root = Path(fi.__file__).parent
    bare = [f"{path.relative_to(root)}:{n}"
            for path in sorted(root.rglob("*.py")) if path.name != "_config.py"
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(r"\b(R?Lock|Condition|Semaphore)\(", line)
            and "fork_safe_lock" not in line]
    assert not bare, f"locks not reset in forked children: {bare}"


_ABI_FORK_SCRIPT = r"""
import os, signal
import numpy as np, fastinterp as fi
from fastinterp import plugins
from fastinterp._cpu import abi
entry = next(k for k in plugins.builtin_kernels()
             if k["op"] == "lerp" and k["dtype"] == "float32")
rng = np.random.default_rng(1)
a, b, t = (rng.random((64, 1 << 16), dtype=np.float32) for _ in range(3))
want = fi.lerp(a, b, t)                 # the parent runs an OpenMP team before forking
pid = os.fork()
if pid == 0:
    signal.alarm(30)
    out = np.empty_like(a)
    status = abi.call(entry["address"], (a, b, t), (out,), nthreads=2, op="lerp")
    os._exit(0 if status is None and np.array_equal(out, want) else 3)
_, status = os.waitpid(pid, 0)
assert status == 0, status
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_exported_kernels_run_on_one_thread_in_a_forked_child():
    """A C caller of the exported kernel table in a forked child asking for 2 threads
    waited for ever in the first parallel region (GNU OpenMP's threads do not survive
    fork); the kernels now run on one thread there, as the Python API does."""
    assert _run_forking_script(_ABI_FORK_SCRIPT, "an exported kernel in a forked child"
                               ).strip() == "ok"

_SUBNORMAL_CALLS = {
    "lerp": lambda a: fi.lerp(a, np.flip(a), 0.5),     # (arithmetic here would flush)
    "resize": lambda a: fi.resize(a.reshape(1, 1, 600, 500), size=(300, 777)),
    "grid_sample": lambda a: fi.grid_sample(a.reshape(1, 1, 600, 500),
                                            _grid(1, 300, 400).astype(np.float32)),
    "pool": lambda a: fi.adaptive_avg_pool2d(a.reshape(1, 1, 600, 500), (70, 90)),
    # windows of more than 16 taps: float32 summed in float64 (conversions included)
    "pool_wide": lambda a: fi.adaptive_avg_pool2d(a.reshape(1, 1, 600, 500), (3, 7)),
    "area_wide": lambda a: fi.resize(a.reshape(3, 1, 200, 500), size=(9, 11), mode="area"),
    "antialias_wide": lambda a: fi.resize(a.reshape(1, 1, 600, 500), size=(5, 6),
                                          antialias=True, mode="bicubic"),
    "pool1d_wide": lambda a: fi.adaptive_avg_pool1d(a.reshape(2, 50, 3000), 4),
    "pool3d_wide": lambda a: fi.adaptive_avg_pool3d(a.reshape(1, 3, 40, 50, 50), (2, 3, 2)),
    "pool_backward_wide": lambda a: fi.adaptive_avg_pool2d_backward(
        a[:21].reshape(1, 1, 3, 7), (1, 1, 600, 500)),
    "resize_backward_wide": lambda a: fi.resize_backward(
        a[:99].reshape(1, 1, 9, 11), (1, 1, 600, 500), mode="area"),
    # the rows' centre is a float64 median of float32 samples (NumPy, the caller's thread)
    "sqdist_backward": lambda a: fi.pairwise_sqdist_backward(
        np.full((300, 200), 1e30, np.float32), a[:1500].reshape(300, 5),
        a[-1000:].reshape(200, 5)),
}


def _result_bytes(result):
    """The bits of a result or of a tuple of them."""
    parts = result if isinstance(result, tuple) else (result,)
    return b"".join(np.asarray(p).tobytes() for p in parts)


@pytest.mark.parametrize("name", sorted(_SUBNORMAL_CALLS))
def test_subnormals_do_not_depend_on_the_callers_flush_to_zero(threads, name):
    """A caller's thread with flush-to-zero set (an XLA host callback,
    torch.set_flush_denormal) computed its share of a region flushed, the team's other
    threads not: one result held both. Every region now clears it for its length, and
    every CPU kernel call for its own length (its NumPy arithmetic runs on the caller's
    thread)."""
    torch = pytest.importorskip("torch")
    a = (np.random.default_rng(3).random(300_000) * 2e-38).astype(np.float32)
    call = _SUBNORMAL_CALLS[name]
    fi.set_num_threads(2)
    want = _result_bytes(call(a))
    result = {}

    def flushing_caller():
        if not torch.set_flush_denormal(True):
            return
        try:
            result["got"] = _result_bytes(call(a))
        finally:
            torch.set_flush_denormal(False)
    import threading
    t = threading.Thread(target=flushing_caller)
    t.start()
    t.join()
    if "got" not in result:
        pytest.skip("this CPU has no flush-to-zero control")
    assert result["got"] == want


@pytest.mark.parametrize("value, expected", [
    ("2", 2), ("3,1", 3), (" 4 ", 4), ("99999999999", 2**31 - 1),
    ("\u00b2", None), ("\u0663", None), ("0", None), ("-2", None), ("", None), ("two", None)])
def test_the_default_thread_count_reads_omp_num_threads_as_openmp_does(value, expected):
    """ASCII decimal digits only (a superscript two crashed the import; an Arabic-Indic
    three was read as 3), at most the largest count set_num_threads takes; anything else
    falls back to the CPUs this process may use."""
    code = ("import os, fastinterp as fi\n"
            "fi.set_num_threads(fi.get_num_threads())\n"
            "print(fi.get_num_threads(), len(os.sched_getaffinity(0)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": value}, timeout=120)
    assert out.returncode == 0, out.stderr
    got, cpus = map(int, out.stdout.split())
    assert got == (cpus if expected is None else expected)


def _libm():
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("m")
    if sys.platform != "linux" or name is None:
        pytest.skip("needs glibc's fesetround")
    return ctypes.CDLL(name)


# x86-64 glibc: <fenv.h>'s FE_TONEAREST, FE_DOWNWARD, FE_UPWARD, FE_TOWARDZERO
_ROUNDING = {"downward": 0x400, "upward": 0x800, "towardzero": 0xC00}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc fesetround")
@pytest.mark.parametrize("mode", list(_ROUNDING))
def test_caller_rounding_mode_changes_no_bit(mode):
    """A caller thread rounding another way (fesetround: an interval-arithmetic library)
    rounded its own share of a parallel region that way and the team's other threads to
    nearest: the bits changed with the thread count and from call to call. Every call
    computes in round-to-nearest now, and the caller's mode is restored after it. The
    resize runs a geometry no earlier call built (its tap tables are built under the
    caller's mode, then cached) and is compared with a fresh build of them."""
    import importlib
    libm = _libm()
    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((900, 256), np.float32), rng.standard_normal((500, 256), np.float32)
    img = rng.random((4, 16, 128, 128), np.float32)
    grid = rng.uniform(-1.1, 1.1, (4, 96, 120, 2)).astype(np.float32)
    a, b = rng.standard_normal((2, 2_000_000))
    calls = {
        "pairwise_sqdist": lambda: fi.pairwise_sqdist(x, y),
        "resize": lambda: fi.resize(img, size=(97, 131 + len(mode)), mode="bicubic",
                                    antialias=True),
        "grid_sample": lambda: fi.grid_sample(img, grid),
        "grid_sample_backward": lambda: fi.grid_sample_backward(img[:, :, :96, :120], img,
                                                                grid)[1],
        "lerp": lambda: fi.lerp(a, b, 0.3),
    }
    got = {}
    try:
        for threads in (1, 2):
            fi.set_num_threads(threads)
            for name, call in calls.items():
                assert libm.fesetround(_ROUNDING[mode]) == 0
                got[name, threads] = call()
                assert libm.fegetround() == _ROUNDING[mode], name     # restored
                libm.fesetround(0)
    finally:
        libm.fesetround(0)
        fi.set_num_threads(2)
    importlib.import_module("fastinterp.resize")._TABLE_CACHE.clear()
    for name, call in calls.items():
        want = call()                                   # round-to-nearest, tables rebuilt
        for threads in (1, 2):
            np.testing.assert_array_equal(got[name, threads], want, err_msg=f"{name} {threads}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc fesetround")
def test_torch_warps_ignore_the_callers_rounding_mode():
    """fastinterp.torch's warps and rotate built their sampling positions (and rotate its
    matrix) in the caller's rounding mode: 5002 of 6000 float64 entries moved."""
    torch = pytest.importorskip("torch")
    import fastinterp.torch as fit
    libm = _libm()
    img = torch.rand(1, 2, 40, 50, dtype=torch.float64)
    M = torch.tensor([[0.9, 0.2, 1.3], [-0.1, 1.1, 0.7]], dtype=torch.float64)
    calls = {"warp_affine": lambda: fit.warp_affine(img, M, (30, 40)),
             "rotate": lambda: fit.rotate(img, 33.3, scale=1.1),
             "warp_perspective": lambda: fit.warp_perspective(
                 img, torch.tensor([[1.0, 0.1, 2], [0.05, 0.9, 1], [1e-3, 2e-3, 1]],
                                   dtype=torch.float64), (32, 32))}
    want = {name: call() for name, call in calls.items()}
    for name, call in calls.items():
        try:
            libm.fesetround(_ROUNDING["upward"])
            got = call()
        finally:
            libm.fesetround(0)
        assert torch.equal(got, want[name]), name
