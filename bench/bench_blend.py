"""Benchmarks: lerp and slerp against NumPy and torch (2 threads each).

Run with ``make bench`` (all families) or
``python -m pytest bench/bench_blend.py --benchmark-min-rounds=5``.

lerp: 16,777,216 float32 elements, scalar and array weight; the references
for memory speed are the memory ceiling (torch's ``a += b`` over the bytes
lerp reads and writes, on the same 2 threads: the gauge bench/check.py
tracks) and ``np.copyto`` of one operand (single-threaded); GB/s = bytes
read + written per second. slerp: the textbook formula written with
whole-array NumPy / torch operations is the peer (it is what users write).
"""
from __future__ import annotations

import numpy as np
import pytest

import fastinterp as fi
from conftest import memory_ceiling

N_LERP = 16_777_216
SLERP_ROWS, SLERP_DIM = 65_536, 512
N_QUAT = 1_000_000
F32 = 4


@pytest.fixture(scope="module")
def lerp_data():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(N_LERP, dtype=np.float32)
    b = rng.standard_normal(N_LERP, dtype=np.float32)
    t = rng.random(N_LERP, dtype=np.float32)
    return a, b, t, np.empty_like(a)


@pytest.fixture(scope="module")
def slerp_data():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((SLERP_ROWS, SLERP_DIM), dtype=np.float32)
    b = rng.standard_normal((SLERP_ROWS, SLERP_DIM), dtype=np.float32)
    t = rng.random(SLERP_ROWS, dtype=np.float32)
    return a, b, t, np.empty_like(a)


@pytest.fixture(scope="module")
def quat_data():
    rng = np.random.default_rng(2)
    q0 = rng.standard_normal((N_QUAT, 4), dtype=np.float32)
    q1 = rng.standard_normal((N_QUAT, 4), dtype=np.float32)
    q0 /= np.linalg.norm(q0, axis=1, keepdims=True)
    q1 /= np.linalg.norm(q1, axis=1, keepdims=True)
    t = rng.random(N_QUAT, dtype=np.float32)
    return q0, q1, t, np.empty_like(q0)


# ----------------------------------------------------------------------- lerp

LERP_ARRAY = "lerp: 16M float32, array weight"
LERP_SCALAR = "lerp: 16M float32, scalar weight"


def numpy_lerp(a, b, t, out):
    np.subtract(b, a, out=out)
    np.multiply(out, t, out=out)
    np.add(out, a, out=out)
    return out


def test_lerp_array_fastinterp(benchmark, bench, bandwidth, lerp_data):
    a, b, t, out = lerp_data
    bench(benchmark, "fastinterp", LERP_ARRAY, fi.lerp, a, b, t, out=out)
    bandwidth(benchmark, 4 * N_LERP * F32)


def test_lerp_array_numpy(benchmark, bench, bandwidth, lerp_data):
    a, b, t, out = lerp_data
    bench(benchmark, "numpy", LERP_ARRAY, numpy_lerp, a, b, t, out)
    bandwidth(benchmark, 4 * N_LERP * F32)


def test_lerp_array_torch(benchmark, bench, bandwidth, lerp_data):
    torch = pytest.importorskip("torch")
    a, b, t, out = (torch.from_numpy(x) for x in lerp_data)
    bench(benchmark, "torch", LERP_ARRAY, torch.lerp, a, b, t, out=out)
    bandwidth(benchmark, 4 * N_LERP * F32)


def test_lerp_array_memory_ceiling(benchmark, bandwidth):
    bandwidth(memory_ceiling(benchmark, LERP_ARRAY, 4 * N_LERP * F32), 4 * N_LERP * F32)


def test_lerp_array_copy_reference(benchmark, bench, bandwidth, lerp_data):
    a, _, _, out = lerp_data
    bench(benchmark, "numpy copyto (bandwidth)", LERP_ARRAY, np.copyto, out, a)
    bandwidth(benchmark, 2 * N_LERP * F32)


def test_lerp_scalar_fastinterp(benchmark, bench, bandwidth, lerp_data):
    a, b, _, out = lerp_data
    bench(benchmark, "fastinterp", LERP_SCALAR, fi.lerp, a, b, 0.3, out=out)
    bandwidth(benchmark, 3 * N_LERP * F32)


def test_lerp_scalar_numpy(benchmark, bench, bandwidth, lerp_data):
    a, b, _, out = lerp_data
    bench(benchmark, "numpy", LERP_SCALAR, numpy_lerp, a, b, np.float32(0.3), out)
    bandwidth(benchmark, 3 * N_LERP * F32)


def test_lerp_scalar_torch(benchmark, bench, bandwidth, lerp_data):
    torch = pytest.importorskip("torch")
    a, b, _, out = (torch.from_numpy(x) for x in lerp_data)
    bench(benchmark, "torch", LERP_SCALAR, torch.lerp, a, b, 0.3, out=out)
    bandwidth(benchmark, 3 * N_LERP * F32)


# ---------------------------------------------------------------------- slerp

SLERP_ROWS_GROUP = "slerp: (65536, 512) float32"
SLERP_QUAT_GROUP = "slerp: 1M quaternions float32, shortest path"


def formula(xp, a, b, t, shortest_path=False):
    """The textbook slerp with whole-array operations (NumPy or torch namespace)."""
    na = xp.sqrt((a * a).sum(-1, keepdims=True))
    nb = xp.sqrt((b * b).sum(-1, keepdims=True))
    dot = (a * b).sum(-1, keepdims=True)
    if shortest_path:
        b = xp.where(dot < 0, -b, b)
        dot = abs(dot)
    theta = xp.arccos(xp.clip(dot / (na * nb), -1.0, 1.0))
    s = xp.sin(theta)
    t = t[:, None]
    return xp.sin((1 - t) * theta) / s * a + xp.sin(t * theta) / s * b


def test_slerp_rows_fastinterp(benchmark, bench, bandwidth, slerp_data):
    a, b, t, out = slerp_data
    bench(benchmark, "fastinterp", SLERP_ROWS_GROUP, fi.slerp, a, b, t, out=out)
    bandwidth(benchmark, 3 * a.nbytes)


def test_slerp_rows_numpy(benchmark, bench, slerp_data):
    a, b, t, _ = slerp_data
    bench(benchmark, "numpy", SLERP_ROWS_GROUP, formula, np, a, b, t)


def test_slerp_rows_torch(benchmark, bench, slerp_data):
    torch = pytest.importorskip("torch")
    a, b, t, _ = (torch.from_numpy(x) for x in slerp_data)
    bench(benchmark, "torch", SLERP_ROWS_GROUP, formula, torch, a, b, t)


def test_slerp_quat_fastinterp(benchmark, bench, bandwidth, quat_data):
    q0, q1, t, out = quat_data
    bench(benchmark, "fastinterp", SLERP_QUAT_GROUP, fi.slerp, q0, q1, t,
          shortest_path=True, out=out)
    bandwidth(benchmark, 3 * q0.nbytes + t.nbytes)


def test_slerp_quat_numpy(benchmark, bench, quat_data):
    q0, q1, t, _ = quat_data
    bench(benchmark, "numpy", SLERP_QUAT_GROUP, formula, np, q0, q1, t, True)


def test_slerp_quat_torch(benchmark, bench, quat_data):
    torch = pytest.importorskip("torch")
    q0, q1, t, _ = (torch.from_numpy(x) for x in quat_data)
    bench(benchmark, "torch", SLERP_QUAT_GROUP, formula, torch, q0, q1, t, True)


# ------------------------------------------------------------ in-place lerp (EMA)

LERP_INPLACE = "lerp in place (EMA m <- lerp(m, g, 0.1)): 16M float32"


def test_lerp_inplace_fastinterp(benchmark, bench, bandwidth, lerp_data):
    a, b, _, _ = lerp_data
    m = a.copy()
    bench(benchmark, "fastinterp", LERP_INPLACE, fi.lerp, m, b, 0.1, out=m)
    bandwidth(benchmark, 3 * N_LERP * F32)


def test_lerp_inplace_torch(benchmark, bench, bandwidth, lerp_data):
    torch = pytest.importorskip("torch")
    m, g = torch.from_numpy(lerp_data[0].copy()), torch.from_numpy(lerp_data[1])
    bench(benchmark, "torch", LERP_INPLACE, m.lerp_, g, 0.1)
    bandwidth(benchmark, 3 * N_LERP * F32)


# ------------------------------------------------------------ slerp backward

SLERP_BWD_GROUP = "slerp forward + backward (a, b, t): (16384, 512) float32, norm='formula'"
SLERP_BWD_ROWS = 16_384


@pytest.fixture(scope="module")
def slerp_bwd_data(slerp_data):
    a, b, t, _ = slerp_data
    g = np.random.default_rng(3).standard_normal((SLERP_BWD_ROWS, SLERP_DIM), dtype=np.float32)
    return g, a[:SLERP_BWD_ROWS], b[:SLERP_BWD_ROWS], t[:SLERP_BWD_ROWS]


def fastinterp_slerp_fwd_bwd(g, a, b, t):
    fi.slerp(a, b, t, norm="formula")
    return fi.slerp_backward(g, a, b, t, norm="formula")


def test_slerp_backward_fastinterp(benchmark, bench, slerp_bwd_data):
    bench(benchmark, "fastinterp", SLERP_BWD_GROUP, fastinterp_slerp_fwd_bwd, *slerp_bwd_data)


def test_slerp_backward_torch(benchmark, bench, slerp_bwd_data):
    """torch autograd through the textbook formula (what a torch user writes)."""
    torch = pytest.importorskip("torch")
    g, a, b, t = (torch.from_numpy(x) for x in slerp_bwd_data)

    def run():
        leaves = [x.clone().requires_grad_(True) for x in (a, b, t)]
        formula(torch, *leaves).backward(g)
        return tuple(x.grad for x in leaves)
    bench(benchmark, "torch", SLERP_BWD_GROUP, run)
