"""CUDA rules a real device enforces and numba's simulator does not.

The ``device_rules`` fixture (tests/conftest.py) gives the simulator numba's
``DeviceNDArray`` reshape rules and a device's launch limits; these tests
check the fixture itself, then run every op on strided device arrays, on
huge launches, and on explicit streams.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL_ORACLE, LaunchLimitError, assert_close, check_launch

import fastinterp as fi

pytestmark = pytest.mark.cudasim


def strided(cuda, x, axis=-1):
    """A non-contiguous device view holding ``x`` (every other entry along ``axis``)."""
    x = np.asarray(x)
    shape = list(x.shape)
    shape[axis] *= 2
    big = np.zeros(shape, x.dtype)
    sl = [slice(None)] * x.ndim
    sl[axis] = slice(None, None, 2)
    big[tuple(sl)] = x
    view = cuda.to_device(big)[tuple(sl)]
    assert not view.is_c_contiguous()
    return view


def host(arr):
    return arr.copy_to_host()


@pytest.fixture
def sim_rules(device_rules):
    """The simulator's device rules; skips on a real device (which enforces them itself,
    and whose launches and streams these tests cannot intercept)."""
    if device_rules is None:
        pytest.skip("checks the simulator's emulation of device rules")
    return device_rules


# --------------------------------------------------------------------------- the fixture

def test_fixture_reshape_follows_device_rules(cuda, sim_rules):
    a = cuda.to_device(np.arange(24.0).reshape(4, 6))
    assert host(a.reshape(24)).tolist() == list(range(24))    # contiguous: a view
    assert a.reshape((2, 12)).shape == (2, 12)
    v = a[:, ::2]
    assert v.reshape(4, 3).shape == (4, 3)                     # same shape: allowed
    for bad in (lambda: v.reshape(12), lambda: v.reshape((1, 4, 3)), lambda: v.ravel(),
                lambda: a.T.reshape(24)):
        with pytest.raises(NotImplementedError):
            bad()


@pytest.mark.parametrize("grid, block", [((1, 65536), 1), ((1, 1, 65536), 32), (2**31, 1),
                                         (1, 1025), (1, (32, 33)), (1, (1, 1, 65)), (0, 1)])
def test_fixture_refuses_launches_a_device_refuses(cuda, sim_rules, grid, block):
    with pytest.raises(LaunchLimitError):
        check_launch(grid, block)

    @cuda.jit
    def noop(x):
        pass

    with pytest.raises(LaunchLimitError):
        noop[grid, block](cuda.to_device(np.zeros(1)))


def test_fixture_accepts_the_largest_valid_launch():
    assert check_launch((2**31 - 1, 65535, 65535), (1024, 1, 1))[0] == (2**31 - 1, 65535, 65535)
    assert check_launch(7, (8, 8, 16))[1] == (8, 8, 16)


# --------------------------------------------------------------------------- strided inputs

def batch_of_one(cuda, x):
    """``cuda.to_device(x[None])``: NumPy's stride 0 for the new axis is kept, and numba
    counts any zero stride as not contiguous (its reshape refuses the array)."""
    d = cuda.to_device(np.asarray(x)[None])
    assert 0 in tuple(d.strides)
    return d


_BATCH_OF_ONE_CALLS = {
    "lerp": lambda x, y: fi.lerp(x, y, 0.25),
    "slerp": lambda x, y: fi.slerp(x, y, 0.3),
    "resize": lambda x, y: fi.resize(x, size=(3, 3)),
    "pool": lambda x, y: fi.adaptive_avg_pool2d(x, 2),
}


@pytest.mark.parametrize("name", sorted(_BATCH_OF_ONE_CALLS))
def test_a_batch_of_one_with_a_zero_stride_is_copied_once(cuda, rng, name):
    """Such an input passed NumPy's contiguity rule, was not copied, and the kernels'
    reshape raised NotImplementedError on a device (and under the device rules)."""
    call = _BATCH_OF_ONE_CALLS[name]
    x, y = rng.standard_normal((2, 5, 6)), rng.standard_normal((2, 5, 6))
    got = call(batch_of_one(cuda, x), batch_of_one(cuda, y))
    assert_close(host(got), call(x[None], y[None]))


def test_grid_sample_backward_and_optimizers_take_a_batch_of_one(cuda, rng):
    go, x = rng.standard_normal((2, 3, 2)), rng.standard_normal((1, 2, 4, 5))
    grid = rng.uniform(-1, 1, (1, 3, 2, 2))
    got = fi.grid_sample_backward(batch_of_one(cuda, go), cuda.to_device(x),
                                  cuda.to_device(grid))
    for g, w in zip(got, fi.grid_sample_backward(go[None], x, grid)):
        assert_close(host(g), w)
    with pytest.raises(ValueError, match="param.* must be C-contiguous"):
        fi.optim.SGD([batch_of_one(cuda, np.zeros(3))], lr=1.0)
    p = cuda.to_device(np.zeros((1, 3)))
    fi.optim.SGD([p], lr=1.0).step([batch_of_one(cuda, np.ones(3))])
    assert host(p).tolist() == [[-1.0, -1.0, -1.0]]

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lerp_strided_operands(cuda, rng, dtype):
    a = rng.standard_normal((3, 5)).astype(dtype)
    b = rng.standard_normal((3, 5)).astype(dtype)
    t = rng.uniform(-0.5, 1.5, (3, 5)).astype(dtype)
    want = fi.lerp(a, b, t)
    assert_close(host(fi.lerp(strided(cuda, a), strided(cuda, b, 0), strided(cuda, t))), want)
    assert_close(host(fi.lerp(strided(cuda, a), cuda.to_device(b), 0.25)), fi.lerp(a, b, 0.25))


@pytest.mark.parametrize("depth", [3, 70])   # the thread-per-row and block-per-row kernels
def test_slerp_strided_operands(cuda, rng, depth):
    a, b = rng.standard_normal((2, 4, depth))
    t = rng.uniform(0, 1, (4,))
    got = fi.slerp(strided(cuda, a, 0), strided(cuda, b), strided(cuda, t))
    assert_close(host(got), fi.slerp(a, b, t), table=TOL_ORACLE)
    path_t = rng.uniform(0, 1, (4, 3))
    got = fi.slerp(strided(cuda, a), cuda.to_device(b), strided(cuda, path_t, 0), path=True)
    assert_close(host(got), fi.slerp(a, b, path_t, path=True), table=TOL_ORACLE)


@pytest.mark.parametrize("deterministic", [True, False])
def test_grid_sample_and_backward_strided(cuda, rng, deterministic):
    x = rng.standard_normal((1, 2, 4, 5))
    grid = rng.uniform(-1.1, 1.1, (1, 3, 2, 2))
    go = rng.standard_normal((1, 2, 3, 2))
    dx, dg, dgo = strided(cuda, x), strided(cuda, grid, 1), strided(cuda, go, 2)
    assert_close(host(fi.grid_sample(dx, dg)), fi.grid_sample(x, grid), table=TOL_ORACLE)
    gi, gg = fi.grid_sample_backward(dgo, dx, dg, deterministic=deterministic)
    ref_i, ref_g = fi.grid_sample_backward(go, x, grid)
    assert_close(host(gi), ref_i, table=TOL_ORACLE)
    assert_close(host(gg), ref_g, table=TOL_ORACLE)


@pytest.mark.parametrize("layout, shape", [("CHW", (2, 4, 5)), ("HW", (4, 5))])
def test_grid_sample_of_one_strided_image(cuda, rng, layout, shape):
    """A single image, its grid and grad_output strided on the device: copied once before
    they are seen as a batch of one (numba cannot reshape a strided device array)."""
    x = rng.standard_normal(shape)
    grid = rng.uniform(-1.1, 1.1, (3, 2, 2))
    want = fi.grid_sample(x, grid, layout=layout)
    go = rng.standard_normal(want.shape)
    assert_close(host(fi.grid_sample(strided(cuda, x), strided(cuda, grid, 0), layout=layout)),
                 want, table=TOL_ORACLE)
    gi, gg = fi.grid_sample_backward(strided(cuda, go), strided(cuda, x, 0),
                                     strided(cuda, grid, 1), layout=layout)
    ref_i, ref_g = fi.grid_sample_backward(go, x, grid, layout=layout)
    assert_close(host(gi), ref_i, table=TOL_ORACLE)
    assert_close(host(gg), ref_g, table=TOL_ORACLE)


def test_affine_grid_and_backward_strided(cuda, rng):
    theta = rng.standard_normal((2, 2, 3))
    size = (2, 1, 3, 4)
    assert_close(host(fi.affine_grid(strided(cuda, theta, 0), size)), fi.affine_grid(theta, size))
    g = rng.standard_normal((2, 3, 4, 2))
    assert_close(host(fi.affine_grid_backward(strided(cuda, g, 1), size)),
                 fi.affine_grid_backward(g, size))


@pytest.mark.parametrize("mode", ["bilinear", "area"])
def test_resize_and_backward_strided(cuda, rng, mode):
    x = rng.standard_normal((1, 2, 6, 4))
    got = fi.resize(strided(cuda, x), size=(3, 5) if mode == "bilinear" else (3, 2), mode=mode)
    want = fi.resize(x, size=(3, 5) if mode == "bilinear" else (3, 2), mode=mode)
    assert_close(host(got), want)
    g = rng.standard_normal(want.shape)
    assert_close(host(fi.resize_backward(strided(cuda, g, 1), x.shape, mode=mode)),
                 fi.resize_backward(g, x.shape, mode=mode))


def test_distance_ops_strided(cuda, rng):
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    w = rng.standard_normal((5, 4))
    dx, dy, dw = strided(cuda, x), strided(cuda, y, 0), strided(cuda, w)
    assert_close(host(fi.pairwise_sqdist(dx, dy)), fi.pairwise_sqdist(x, y), table=TOL_ORACLE)
    gx, gy = fi.pairwise_l2_backward(dw, dx, dy, dist=strided(cuda, fi.pairwise_l2(x, y)))
    ref_x, ref_y = fi.pairwise_l2_backward(w, x, y)
    assert_close(host(gx), ref_x, table=TOL_ORACLE)
    assert_close(host(gy), ref_y, table=TOL_ORACLE)
    _, idx = fi.knn(dx, dy, 2)
    assert host(idx).tolist() == fi.knn(x, y, 2)[1].tolist()


def test_optimizer_strided_grad_and_state(cuda, rng):
    p0, g = rng.standard_normal((2, 6))
    p_cpu, p_dev = p0.copy(), cuda.to_device(p0)
    opt_cpu, opt_dev = fi.optim.Adam([p_cpu], lr=0.1), fi.optim.Adam([p_dev], lr=0.1)
    opt_cpu.step([g])
    opt_dev.step([strided(cuda, g)])
    assert_close(host(p_dev), p_cpu)
    state = opt_dev.state_dict()
    for key, value in state["state"][0].items():   # strided device state: copied once
        if hasattr(value, "shape"):
            state["state"][0][key] = strided(cuda, host(value))
    opt_dev.load_state_dict(state)
    opt_cpu.step([g])
    opt_dev.step([cuda.to_device(g)])
    assert_close(host(p_dev), p_cpu)


def test_contiguous_copy_every_rank(cuda, rng):
    from fastinterp._cuda import _support
    for shape in [(7,), (3, 4), (2, 3, 4), (2, 1, 3, 2), (2, 2, 2, 1, 3)]:
        x = rng.standard_normal(shape)
        got = _support.contiguous(strided(cuda, x, 0))
        assert got.is_c_contiguous() and host(got).tolist() == x.tolist()
    row = cuda.to_device(np.arange(3.0))
    assert _support.contiguous(row) is row                      # contiguous: no copy
    empty = cuda.to_device(np.zeros((2, 0, 3)))[:, :, ::2]
    assert _support.contiguous(empty) is empty


def test_empty_device_outputs_and_parameters_are_contiguous(cuda):
    """An empty device array is C-contiguous whatever its strides (as NumPy and numba
    say): out= and optimizer parameters of size 0 are accepted, as on the CPU."""
    z = cuda.device_array((0, 4), np.float32)
    for out in (cuda.device_array((0, 4), np.float32), cuda.device_array((3, 4), np.float32)[:0]):
        assert fi.lerp(z, z, 0.5, out=out) is out
    view = cuda.device_array((2, 4), np.float32)[:, :0]
    assert fi.lerp(view, view, 0.5, out=view) is view
    out = cuda.device_array((0, 0), np.float32)
    assert fi.pairwise_sqdist(z, z, out=out) is out
    p = cuda.device_array((0,), np.float32)
    fi.optim.SGD([p], lr=0.1).step([cuda.device_array((0,), np.float32)])


# --------------------------------------------------------------------------- launch limits

def test_pairwise_two_million_rows_respects_grid_limits(cuda, device_rules, rng):
    # 2M rows put 125,000 tile rows on gridDim.y under the old 2-D launch. On a
    # real device the call runs and is checked; the simulator cannot run 2M x
    # 256-thread tiles in reasonable time, so there the launches are checked (and
    # recorded) without running their threads. Coverage of a grid-stride launch is
    # checked by running it in
    # test_distance.py::test_cuda_launches_stride_over_more_tiles_than_blocks.
    rows = 2_000_000
    xh = rng.standard_normal((rows, 2)).astype(np.float32)
    yh = rng.standard_normal((3, 2)).astype(np.float32)
    x, y = cuda.to_device(xh), cuda.to_device(yh)
    if device_rules is None:
        got = host(fi.pairwise_sqdist(x, y))
        pick = rng.integers(0, rows, 1000)
        assert_close(got[pick], fi.pairwise_sqdist(xh[pick], yh), table=TOL_ORACLE)
        return
    device_rules.execute = False
    fi.pairwise_sqdist(x, y)
    fi.pairwise_sqdist_backward(cuda.device_array((rows, 3), np.float32), x, y)
    names = [name for name, _, _ in device_rules.launches]
    assert any("sqdist" in n for n in names) and any("grad" in n for n in names)
    for _, grid, block in device_rules.launches:
        assert grid[1] == grid[2] == 1   # 1-D grids: nothing on y or z


def test_one_d_launch_over_too_many_blocks_is_refused():
    from fastinterp._cuda import _support
    assert _support.blocks_1d(2**31 * 256 - 256) == 2**31 - 1
    with pytest.raises(ValueError, match="gridDim.x"):
        _support.blocks_1d(2**31 * 256)


# --------------------------------------------------------------------------- streams

class _Spy:
    """Records host-to-device copies, events and synchronisations of numba.cuda."""

    def __init__(self, cuda, monkeypatch):
        self.copies, self.events, self.syncs = [], [], []
        to_device, stream_cls = cuda.to_device, type(cuda.stream())

        def spy_to_device(obj, stream=0, **kw):
            self.copies.append(stream)
            return to_device(obj, stream=stream, **kw)

        spy = self

        class Event:
            def __init__(self, *args, **kw):
                pass

            def record(self, stream=0):
                spy.events.append(("record", stream))

            def wait(self, stream=0):
                spy.events.append(("wait", stream))

        def forbidden():
            raise AssertionError("a device-wide synchronize")

        monkeypatch.setattr(cuda, "to_device", spy_to_device)
        monkeypatch.setattr(cuda, "event", Event)
        monkeypatch.setattr(cuda, "synchronize", forbidden)
        monkeypatch.setattr(stream_cls, "synchronize", lambda s: self.syncs.append(s))


def _sample_args(cuda, rng):
    x = cuda.to_device(rng.standard_normal((1, 2, 4, 5)))
    grid = cuda.to_device(rng.uniform(-1, 1, (1, 3, 2, 2)))
    return x, grid, cuda.device_array((1, 2, 3, 2)), cuda.device_array((1, 2, 4, 5))


def test_transfers_and_launches_use_the_callers_stream(cuda, rng, monkeypatch, sim_rules):
    from fastinterp._cuda import blend as cblend
    from fastinterp._cuda import sample as csample
    x, grid, out, gin = _sample_args(cuda, rng)
    theta = cuda.to_device(np.ones((1, 2, 3)))
    s = cuda.stream()
    spy = _Spy(cuda, monkeypatch)
    csample.grid_sample(out, x, grid, 1, 0, False, stream=s)
    csample.grid_sample_backward(gin, None, out, x, grid, 1, 0, False, deterministic=False,
                                 stream=s)
    csample.affine_grid(cuda.device_array((1, 3, 2, 2)), theta, False, stream=s)
    csample.affine_grid_backward(cuda.device_array((1, 2, 3)), grid, False, stream=s)
    a = cuda.device_array((2, 3))
    cblend.slerp(cuda.device_array((2, 3)), a, a, np.array([0.5]), 0, 1, False, True, stream=s)
    assert len(spy.copies) == 2 + 3 + 2 + 2 + 1   # axes, axes + flag, bases, bases, t
    assert all(c is s for c in spy.copies)
    assert spy.syncs == []          # nothing here needs a result on the host


def test_deterministic_backward_synchronises_only_the_callers_stream(cuda, rng, monkeypatch,
                                                                     sim_rules):
    from fastinterp._cuda import sample as csample
    x, grid, out, gin = _sample_args(cuda, rng)
    s = cuda.stream()
    spy = _Spy(cuda, monkeypatch)
    csample.grid_sample_backward(gin, None, out, x, grid, 1, 0, False, deterministic=True,
                                 stream=s)
    assert spy.syncs == [s, s]      # the scale's bound, then the non-finite flag
    assert all(c is s for c in spy.copies)


def test_cached_tables_wait_for_their_upload_on_other_streams(cuda, monkeypatch, sim_rules):
    from fastinterp._cuda import resize as cresize
    from fastinterp.resize import axis_table
    table = axis_table("bilinear", 17, 5, False, None, False, np.float32)
    cresize._on_device._entries.pop(table, None)
    s1, s2 = cuda.stream(), cuda.stream()
    spy = _Spy(cuda, monkeypatch)
    first = cresize._device_table(table, s1)
    assert spy.copies == [s1, s1] and spy.events == [("record", s1)]
    again = cresize._device_table(table, s2)
    assert again is first and spy.copies == [s1, s1]       # cached, not re-uploaded
    assert spy.events == [("record", s1), ("wait", s2)]    # s2 waits for s1's upload
    assert_close(host(first[1]), table.w)


def test_every_op_runs_on_the_callers_stream(cuda, rng, monkeypatch, sim_rules):
    # The caller's stream (CuPy's / torch's current one) stands in as a fresh stream:
    # every launch, upload and state copy must use it, and only the deterministic
    # grid_sample backward may synchronise (with that stream only).
    from fastinterp._cuda import _support
    x = rng.standard_normal((1, 2, 4, 5))
    grid = rng.uniform(-1, 1, (1, 3, 2, 2))
    go = rng.standard_normal((1, 2, 3, 2))
    p, q = rng.standard_normal((2, 5, 3))
    dev = {k: strided(cuda, v) for k, v in dict(x=x, grid=grid, go=go, p=p, q=q).items()}
    param, g = cuda.to_device(np.zeros(4)), cuda.to_device(np.ones(4))
    theta, w = cuda.to_device(np.ones((1, 2, 3))), cuda.to_device(np.ones((5, 5)))
    s = cuda.stream()
    monkeypatch.setattr(_support, "stream_for", lambda template: s)
    copies = []
    monkeypatch.setattr(type(param), "copy_to_device",
                        lambda self, ary, stream=0: copies.append(stream))
    spy = _Spy(cuda, monkeypatch)
    fi.lerp(dev["p"], dev["q"], 0.5)
    fi.slerp(dev["p"], dev["q"], 0.5)
    fi.grid_sample(dev["x"], dev["grid"])
    fi.grid_sample_backward(dev["go"], dev["x"], dev["grid"], deterministic=False)
    fi.affine_grid(theta, (1, 1, 2, 3))
    fi.affine_grid_backward(dev["grid"], (1, 1, 3, 2))
    fi.resize(dev["x"], size=(3, 3))
    fi.resize_backward(dev["go"], (1, 2, 5, 3))
    fi.pairwise_l2_backward(w, dev["p"], dev["q"])
    fi.knn(dev["p"], dev["q"], 2)
    opt = fi.optim.Adam([param], lr=0.1)
    opt.step([g])
    opt.state_dict()
    assert spy.syncs == []
    fi.warp_affine(dev["x"], np.eye(2, 3), (3, 2))
    assert spy.syncs == []
    fi.warp_affine_backward(dev["go"], dev["x"], np.eye(2, 3), (3, 2), deterministic=False)
    assert spy.syncs == [s]        # the matrix gradient reaches the host (it read on stream 0)
    spy.syncs.clear()
    fi.grid_sample_backward(dev["go"], dev["x"], dev["grid"], deterministic=True)
    assert spy.syncs == [s, s]
    assert len(sim_rules.streams) > 20 and all(t is s for t in sim_rules.streams)
    assert len(spy.copies) > 15 and all(c is s for c in spy.copies)
    assert copies and all(c is s for c in copies)


# --------------------------------------------------------------------------- caller types
# numba device arrays run everywhere (the simulator here); CuPy and torch CUDA
# inputs run on a real device (FASTINTERP_REAL_CUDA=1, see scripts/gpu_check.py).

@pytest.fixture(params=["numba", "cupy", "torch"])
def caller(request, cuda):
    """(to_device(x, strided=False), to_host(arr)) for one CUDA array type."""
    kind = request.param
    if kind == "numba":
        return (lambda x, s=False: strided(cuda, x) if s else cuda.to_device(x)), host
    if kind == "cupy":
        cp = request.getfixturevalue("cupy")
        return (lambda x, s=False: _strided_of(cp.asarray, x) if s else cp.asarray(x)), cp.asnumpy
    torch = request.getfixturevalue("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    to = (lambda x: torch.from_numpy(np.ascontiguousarray(x)).cuda())
    return (lambda x, s=False: _strided_of(to, x) if s else to(x)), (lambda a: a.cpu().numpy())


def _strided_of(to, x):
    big = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
    big[..., ::2] = x
    return to(big)[..., ::2]


@pytest.mark.parametrize("is_strided", [False, True])
def test_every_op_on_each_caller_type(caller, rng, is_strided):
    dev, back = caller
    d = (lambda x: dev(np.asarray(x), is_strided))
    a, b = rng.standard_normal((2, 3, 8)).astype(np.float32)
    t = rng.uniform(0, 1, (3, 8)).astype(np.float32)
    assert_close(back(fi.lerp(d(a), d(b), d(t))), fi.lerp(a, b, t))
    assert_close(back(fi.slerp(d(a), d(b), 0.3)), fi.slerp(a, b, 0.3), table=TOL_ORACLE)
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    grid = rng.uniform(-1, 1, (1, 3, 4, 2)).astype(np.float32)
    assert_close(back(fi.grid_sample(d(x), d(grid))), fi.grid_sample(x, grid), table=TOL_ORACLE)
    go = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    for got, want in zip(fi.grid_sample_backward(d(go), d(x), d(grid)),
                         fi.grid_sample_backward(go, x, grid)):
        assert_close(back(got), want, table=TOL_ORACLE)
    theta = rng.standard_normal((1, 2, 3)).astype(np.float32)
    assert_close(back(fi.affine_grid(d(theta), (1, 1, 3, 4))), fi.affine_grid(theta, (1, 1, 3, 4)))
    assert_close(back(fi.resize(d(x), size=(3, 9))), fi.resize(x, size=(3, 9)), table=TOL_ORACLE)
    p, q = rng.standard_normal((2, 6, 4)).astype(np.float32)
    assert_close(back(fi.pairwise_sqdist(d(p), d(q))), fi.pairwise_sqdist(p, q),
                 table=TOL_ORACLE)
    assert back(fi.knn(d(p), d(q), 2)[1]).tolist() == fi.knn(p, q, 2)[1].tolist()
    param, g = rng.standard_normal((2, 5)).astype(np.float32)
    p_cpu, p_dev = param.copy(), dev(param)
    fi.optim.SGD([p_cpu], lr=0.1, momentum=0.9).step([g])
    fi.optim.SGD([p_dev], lr=0.1, momentum=0.9).step([d(g)])
    assert_close(back(p_dev), p_cpu)


# --------------------------------------------------------------------------- make gpu-check

def test_gpu_check_dry_run_plans_and_writes_a_table(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    out = tmp_path / "gpu.md"
    res = subprocess.run([sys.executable, str(script), "--dry-run", "--out", str(out),
                          "--repeat", "2"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "FASTINTERP_REAL_CUDA=1" in res.stdout and "cupy-cuda12x" in res.stdout
    for op in ("lerp", "slerp", "grid_sample", "resize", "pairwise_sqdist", "knn", "adam_step"):
        assert f"    {op}:" in res.stdout
    table = out.read_text()
    assert "| op | workload | fastinterp ms |" in table and "fake timings" in table
    bad = subprocess.run([sys.executable, str(script), "--dry-run", "--repeat", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--repeat must be at least 1" in bad.stderr
