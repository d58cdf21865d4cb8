"""Shared test set-up: tolerances, oracles, and the CUDA simulator.

GPU kernels run under numba's CUDA simulator unless FASTINTERP_REAL_CUDA=1
(set it on a machine with a GPU to test the real device). The simulator
must be chosen before numba is imported, hence here, at collection time.
"""
from __future__ import annotations

import os

if os.environ.get("FASTINTERP_REAL_CUDA") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# Tolerances per dtype, used by every family's tests: (rtol, atol).
TOL = {
    np.dtype(np.float32): (2e-5, 1e-6),
    np.dtype(np.float64): (1e-12, 1e-13),
}
# Looser pair for comparisons against a different algorithm (e.g. torch) in float32.
TOL_ORACLE = {
    np.dtype(np.float32): (1e-4, 1e-5),
    np.dtype(np.float64): (1e-10, 1e-11),
}


def assert_close(actual, expected, dtype=None, table=TOL, scale=1.0):
    """assert_allclose with the tolerance for ``dtype`` (default: actual's dtype)."""
    actual = np.asarray(actual)
    rtol, atol = table[np.dtype(dtype or actual.dtype)]
    np.testing.assert_allclose(actual, expected, rtol=rtol * scale, atol=atol * scale)


@pytest.fixture(scope="session")
def torch():
    """The torch oracle, or skip when torch is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture(scope="session")
def cuda():
    """numba.cuda (the simulator on CPU machines), or skip when unavailable."""
    numba_cuda = pytest.importorskip("numba.cuda")
    if not numba_cuda.is_available():
        pytest.skip("no CUDA device and the simulator is off")
    return numba_cuda


@pytest.fixture(scope="session")
def cupy():
    """CuPy with a working GPU, or skip."""
    cp = pytest.importorskip("cupy")
    try:
        if not cp.cuda.is_available():
            pytest.skip("CuPy installed but no GPU")
        cp.zeros(1)
    except Exception as exc:  # CUDARuntimeError without a driver
        pytest.skip(f"CuPy cannot allocate: {exc}")
    return cp


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def threads():
    """Restore the thread count after a test that changes it."""
    import fastinterp as fi
    before = fi.get_num_threads()
    yield fi
    fi.set_num_threads(before)
