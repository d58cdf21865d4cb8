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

def other_runnable_variants() -> list[str]:
    """The built kernel variants other than the one loaded that this CPU can run."""
    import fastinterp._cpu as cpu
    level = cpu.cpu_level()
    return [v for v in cpu.built_variants() if v != cpu.VARIANT
            and (cpu.VARIANTS[v][0] is None or cpu.VARIANTS[v][0] <= level)]


def assert_variant_gives_same_bits(variant, module, workload, tmp_path, cwd):
    """Run ``module.workload()`` (a dict of result arrays) in a fresh process that loads
    kernel ``variant`` and assert every array equals this process's, bit for bit.
    ``variant`` None (no other runnable build) skips."""
    import subprocess
    import sys

    import fastinterp._cpu as cpu
    if variant is None:
        pytest.skip(f"only one runnable kernel variant is built ({cpu.VARIANT})")
    path = tmp_path / "other.npz"
    code = (f"import sys, numpy as np; sys.path.insert(0, {str(cwd)!r}); import {module} as m; "
            f"np.savez({str(path)!r}, **m.{workload}())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, cpu.ENV: variant}, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    other = dict(np.load(path))
    mine = getattr(sys.modules[module], workload)()
    assert sorted(other) == sorted(mine)
    for key, value in mine.items():
        np.testing.assert_array_equal(other[key], value, err_msg=f"{key}: {variant}")


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


def assert_autograd_sees_write(torch, target, write):
    """``write()`` changes the torch tensor ``target`` in place: its version is bumped and a
    graph that saved ``target`` before refuses to backward, as after torch's own in-place
    ops (else the gradient would silently use the new values)."""
    w = torch.tensor(2.0, dtype=target.dtype, requires_grad=True)
    loss = (target * w).sum()                      # saves target for w's gradient
    before = target._version
    write()
    assert target._version > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def assert_close(actual, expected, dtype=None, table=TOL, scale=1.0):
    """assert_allclose with the tolerance for ``dtype`` (default: actual's dtype)."""
    actual = np.asarray(actual)
    rtol, atol = table[np.dtype(dtype or actual.dtype)]
    np.testing.assert_allclose(actual, expected, rtol=rtol * scale, atol=atol * scale)


def numeric_grads(f, arrays, go, eps=1e-6):
    """Central differences of sum(go * f(*arrays)) with respect to each array."""
    grads = []
    for k, a in enumerate(arrays):
        num = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            hi = [b.copy() for b in arrays]
            lo = [b.copy() for b in arrays]
            hi[k][idx] += eps
            lo[k][idx] -= eps
            num[idx] = (np.sum(go * f(*hi)) - np.sum(go * f(*lo))) / (2 * eps)
        grads.append(num)
    return grads


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


# --------------------------------------------------------------------------- device rules
# numba's CUDA simulator is laxer than a device: its arrays reshape strided views by
# copying (numba's DeviceNDArray raises NotImplementedError) and it launches any grid
# (a device refuses gridDim.x > 2**31 - 1, gridDim.y/z > 65,535, > 1,024 threads a
# block). The fixture below gives simulator tests the device's rules.

GRID_LIMITS = (2**31 - 1, 65535, 65535)
BLOCK_LIMITS = (1024, 1024, 64)
MAX_THREADS_PER_BLOCK = 1024


class LaunchLimitError(RuntimeError):
    """A launch configuration that a CUDA device would refuse."""


def _dim3(dims):
    dims = tuple(int(d) for d in dims) if isinstance(dims, (tuple, list)) else (int(dims),)
    if not 1 <= len(dims) <= 3:
        raise LaunchLimitError(f"launch dimensions must have 1 to 3 entries; got {dims}")
    return dims + (1,) * (3 - len(dims))


def check_launch(griddim, blockdim):
    """Raise LaunchLimitError for a (griddim, blockdim) that a CUDA device would refuse."""
    grid, block = _dim3(griddim), _dim3(blockdim)
    for axis, n, limit in zip("xyz", grid, GRID_LIMITS):
        if not 1 <= n <= limit:
            raise LaunchLimitError(f"gridDim.{axis} = {n} outside [1, {limit}] (grid {grid})")
    for axis, n, limit in zip("xyz", block, BLOCK_LIMITS):
        if not 1 <= n <= limit:
            raise LaunchLimitError(f"blockDim.{axis} = {n} outside [1, {limit}] (block {block})")
    if block[0] * block[1] * block[2] > MAX_THREADS_PER_BLOCK:
        raise LaunchLimitError(f"{block} is more than {MAX_THREADS_PER_BLOCK} threads a block")
    return grid, block


def _real_dummyarray():
    """numba-cuda's dummyarray (the simulator ships a stub): DeviceNDArray's reshape rules."""
    import importlib.util
    from pathlib import Path

    import numba.cuda.simulator as sim
    path = Path(sim.__file__).resolve().parents[1] / "cudadrv" / "dummyarray.py"
    spec = importlib.util.spec_from_file_location("_fastinterp_real_dummyarray", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class DeviceRules:
    """What the fixture saw: ``launches`` as (kernel name, grid, block) and their
    ``streams``; set
    ``execute = False`` to check launch configurations without running the threads."""

    def __init__(self):
        self.launches: list[tuple[str, tuple, tuple]] = []
        self.streams: list = []      # the stream of each launch (0: the default stream)
        self.execute = True


def _install_device_rules(monkeypatch) -> DeviceRules:
    from numba.cuda.simulator import kernel as sim_kernel
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    dummy = _real_dummyarray().Array
    rules = DeviceRules()

    def _as_dummy(arr):
        return dummy.from_desc(0, tuple(arr.shape), tuple(arr.strides), arr.dtype.itemsize)

    def reshape(self, *newshape, **kws):
        # numba's DeviceNDArray.reshape: the same view, or a no-copy reshape of one extent.
        # Stricter for F-ordered arrays: numba reinterprets their memory in C order
        # (values differ from NumPy's), which no caller here may rely on.
        if len(newshape) == 1 and isinstance(newshape[0], (tuple, list)):
            newshape = tuple(newshape[0])
        if tuple(newshape) != tuple(self.shape):
            d = _as_dummy(self)
            _, extents = d.reshape(*newshape, **kws)
            if extents != [d.extent] or not self._ary.flags.c_contiguous:
                raise NotImplementedError("operation requires copying")
        return FakeCUDAArray(self._ary.reshape(*newshape, **kws))

    def ravel(self, order="C", stream=0):
        d = _as_dummy(self)
        _, extents = d.ravel(order=order)
        if extents != [d.extent]:
            raise NotImplementedError("operation requires copying")
        return FakeCUDAArray(self._ary.ravel(order=order))

    getitem, call = sim_kernel.FakeCUDAKernel.__getitem__, sim_kernel.FakeCUDAKernel.__call__

    def configure(self, configuration):
        grid, block = check_launch(*configuration[:2])
        rules.launches.append((getattr(self.fn, "__name__", "?"), grid, block))
        rules.streams.append(configuration[2] if len(configuration) > 2 else 0)
        return getitem(self, configuration)

    def launch(self, *args):
        if not rules.execute and not self._device and not sim_kernel._kernel_context:
            return None
        return call(self, *args)

    monkeypatch.setattr(FakeCUDAArray, "reshape", reshape)
    monkeypatch.setattr(FakeCUDAArray, "ravel", ravel)
    monkeypatch.setattr(sim_kernel.FakeCUDAKernel, "__getitem__", configure)
    monkeypatch.setattr(sim_kernel.FakeCUDAKernel, "__call__", launch)
    return rules


@pytest.fixture(autouse=True)
def device_rules(request):
    """Under numba's CUDA simulator, for tests marked ``cudasim`` or using the ``cuda``
    fixture: device arrays follow numba's DeviceNDArray reshape/ravel rules and kernel
    launches are checked against a device's grid and block limits. Yields a
    :class:`DeviceRules` (None where it does not apply: CPU tests, a real device)."""
    wanted = "cudasim" in request.keywords or "cuda" in request.fixturenames
    if not wanted or os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        yield None
        return
    pytest.importorskip("numba.cuda")
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield _install_device_rules(monkeypatch)


def pytest_collection_modifyitems(config, items):
    """Under ``make test-sanitize`` (FASTINTERP_SANITIZE=1) skip the tests marked
    ``no_sanitizer``: an address-space limit or an RSS reading means nothing there."""
    if os.environ.get("FASTINTERP_SANITIZE") != "1":
        return
    skip = pytest.mark.skip(reason="address-space limits and RSS are meaningless under ASan")
    for item in items:
        if item.get_closest_marker("no_sanitizer"):
            item.add_marker(skip)
