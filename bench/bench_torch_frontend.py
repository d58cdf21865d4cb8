"""Benchmarks: the torch frontend (``fastinterp.torch``) against the NumPy API and torch.

Three workloads, 2 threads everywhere (bench/conftest.py pins every library):

- Per-call overhead on tiny inputs, for every op: ``fastinterp.torch`` on
  torch tensors against the NumPy API on NumPy arrays (and torch's own op as a
  peer), without gradients and with forward + backward. Each
  ``fastinterp.torch`` benchmark also stores ``overhead_us``: its median
  minus the NumPy API's, measured interleaved in the same test (aim: at
  most 15 us).
- One training step (forward, backward, Adam; batch 64) of the spatial
  transformer of ``fastinterp/demos/stn.py`` (examples/stn_digits.py): with
  ``fastinterp.torch``'s sampler against the identical model with torch's
  ``F.affine_grid`` + ``F.grid_sample`` (aim: 1.5x).
- grid_sample forward + backward (input and grid gradients) through
  ``fastinterp.torch`` at the spatial-transformer size (16, 32, 128, 128)
  against torch's autograd (aim: 2.5x), the NumPy API's forward + backward
  alongside.

Run: ``python -m pytest bench/bench_torch_frontend.py --benchmark-min-rounds=5``, or
``python bench/bench_torch_frontend.py`` for a quick printed summary.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import fastinterp as fi  # noqa: E402
import fastinterp.torch as fit  # noqa: E402


# --------------------------------------------------------------------------- tiny calls

def _tiny_cases():
    """name -> (fastinterp.torch call, NumPy API call, torch call or None, grad inputs).

    Every call returns its output; the grad inputs are the tensors that need
    gradients in the forward + backward variant.
    """
    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)    # noqa: E731
    x, g = r(1, 2, 4, 4), rng.uniform(-1, 1, (1, 3, 3, 2)).astype(np.float32)
    th = np.array([[[0.9, 0.1, 0.0], [-0.1, 0.9, 0.1]]], np.float32)
    p, q, a, b = r(8, 3), r(6, 3), r(16), r(16)
    v, w = r(4, 8), r(4, 8)
    T = torch.from_numpy
    return {
        "grid_sample": ((fit.grid_sample, T(x), T(g)), (fi.grid_sample, x, g),
                        (lambda x, g: F.grid_sample(x, g, align_corners=False), T(x), T(g))),
        "affine_grid": ((lambda t: fit.affine_grid(t, (1, 1, 4, 4)), T(th)),
                        (lambda t: fi.affine_grid(t, (1, 1, 4, 4)), th),
                        (lambda t: F.affine_grid(t, (1, 1, 4, 4), align_corners=False), T(th))),
        "resize": ((lambda x: fit.resize(x, 6), T(x)), (lambda x: fi.resize(x, 6), x),
                   (lambda x: F.interpolate(x, 6, mode="bilinear"), T(x))),
        "adaptive_avg_pool2d": ((lambda x: fit.adaptive_avg_pool2d(x, 2), T(x)),
                                (lambda x: fi.adaptive_avg_pool2d(x, 2), x),
                                (lambda x: F.adaptive_avg_pool2d(x, 2), T(x))),
        "pairwise_sqdist": ((fit.pairwise_sqdist, T(p), T(q)), (fi.pairwise_sqdist, p, q),
                            (lambda p, q: torch.cdist(p, q) ** 2, T(p), T(q))),
        "pairwise_l2": ((fit.pairwise_l2, T(p), T(q)), (fi.pairwise_l2, p, q),
                        (torch.cdist, T(p), T(q))),
        "lerp": ((lambda a, b: fit.lerp(a, b, 0.3), T(a), T(b)),
                 (lambda a, b: fi.lerp(a, b, 0.3), a, b),
                 (lambda a, b: torch.lerp(a, b, 0.3), T(a), T(b))),
        "slerp": ((lambda a, b: fit.slerp(a, b, 0.3), T(v), T(w)),
                  (lambda a, b: fi.slerp(a, b, 0.3), v, w), None),
    }


_BACKWARD = {   # the NumPy API's backward of each tiny case, for the forward + backward variant
    "grid_sample": lambda go, x, g: fi.grid_sample_backward(go, x, g),
    "affine_grid": lambda go, t: fi.affine_grid_backward(go, (1, 1, 4, 4)),
    "resize": lambda go, x: fi.resize_backward(go, x.shape),
    "adaptive_avg_pool2d": lambda go, x: fi.adaptive_avg_pool2d_backward(go, x.shape),
    "pairwise_sqdist": lambda go, p, q: fi.pairwise_sqdist_backward(go, p, q),
    "pairwise_l2": lambda go, p, q: fi.pairwise_l2_backward(go, p, q),
    "lerp": lambda go, a, b: (go * np.float32(0.7), go * np.float32(0.3)),
    "slerp": lambda go, a, b: fi.slerp_backward(go, a, b, 0.3),
}
TINY = list(_tiny_cases())


def _with_grad(call):
    """``call`` as forward + backward with gradients for every input (reset each time)."""
    fn, *args = call
    args = [a.detach().clone().requires_grad_() for a in args]
    ones = torch.ones_like(fn(*args))

    def forward_backward(*inputs):
        for x in inputs:
            x.grad = None
        fn(*inputs).backward(ones)
    return forward_backward, *args


def _numpy_fwd_bwd(name, call):
    """The NumPy API's forward then backward of a tiny case."""
    fn, *args = call
    go = np.ones_like(fn(*args))
    back = _BACKWARD[name]

    def forward_backward(*inputs):
        fn(*inputs)
        return back(go, *inputs)
    return forward_backward, *args


def _median_us(fn, args, repeat=7, number=200):
    """Median over ``repeat`` blocks of the mean time of ``number`` calls, in microseconds."""
    blocks = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn(*args)
        blocks.append((time.perf_counter() - start) / number)
    return float(np.median(blocks)) * 1e6


def overhead_us(ours, base, rounds=5):
    """The median of (ours - base) over interleaved rounds, in microseconds."""
    diffs = []
    for _ in range(rounds):
        diffs.append(_median_us(ours[0], ours[1:], 3) - _median_us(base[0], base[1:], 3))
    return float(np.median(diffs))


def _label(benchmark, group, library):
    benchmark.group = group
    benchmark.extra_info["library"] = library


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "fwd+bwd"])
@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("library", ["fastinterp", "fastinterp.torch", "torch"])
def test_tiny_call_overhead(benchmark, name, library, grad):
    ours, base, peer = _tiny_cases()[name]
    if grad:
        ours, base = _with_grad(ours), _numpy_fwd_bwd(name, base)
        peer = None if peer is None else _with_grad(peer)
    call = {"fastinterp": base, "fastinterp.torch": ours, "torch": peer}[library]
    if call is None:
        pytest.skip(f"torch has no {name}")
    _label(benchmark, f"torch frontend, tiny {name}, {'forward+backward' if grad else 'no grad'}",
           library)
    benchmark(call[0], *call[1:])
    if library == "fastinterp.torch":
        benchmark.extra_info["overhead_us"] = round(overhead_us(ours, base), 1)


# --------------------------------------------------------------------------- STN training step

STN_GROUP = "STN training step, batch 64 (forward+backward+Adam), f32"


@pytest.fixture(scope="module")
def stn_batch():
    from fastinterp.demos import stn
    xtr, ytr, _, _ = stn.distorted_digits(1, 0, 1)
    return torch.from_numpy(xtr[:64]), torch.from_numpy(ytr[:64])


def stn_step(kind):
    """One training step of the demo's STN with ``kind``'s sampler, as a closure."""
    from fastinterp.demos import stn
    model = stn.make_model(kind, 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    return step


@pytest.mark.parametrize("kind", ["fastinterp", "torch"])
def test_stn_training_step(benchmark, stn_batch, kind):
    _label(benchmark, STN_GROUP, kind)
    benchmark(stn_step(kind), *stn_batch)


# --------------------------------------------------------------------------- grid_sample fwd+bwd

N, C, H, W = 16, 32, 128, 128
FWD_BWD = "grid_sample fwd+bwd via fastinterp.torch: (16,32,128,128) f32"


@pytest.fixture(scope="module")
def stn_big():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    a, t = rng.uniform(-0.2, 0.2, N), rng.uniform(-0.1, 0.1, (N, 2))
    theta = np.stack([np.stack([np.cos(a), -np.sin(a), t[:, 0]], 1),
                      np.stack([np.sin(a), np.cos(a), t[:, 1]], 1)], 1).astype(np.float32)
    grid = fi.affine_grid(theta, (N, C, H, W), align_corners=False)
    go = rng.standard_normal((N, C, H, W), dtype=np.float32)
    return x, grid, go


def _autograd_fwd_bwd(sampler, x, grid, go):
    x.grad = grid.grad = None
    sampler(x, grid, align_corners=False).backward(go)


@pytest.mark.parametrize("library", ["fastinterp", "torch", "fastinterp NumPy API"])
def test_grid_sample_forward_backward(benchmark, stn_big, library):
    x, grid, go = stn_big
    _label(benchmark, FWD_BWD, library)
    if library == "fastinterp NumPy API":
        def numpy_fwd_bwd():
            fi.grid_sample(x, grid)
            return fi.grid_sample_backward(go, x, grid)
        benchmark(numpy_fwd_bwd)
        return
    tx, tg = (torch.from_numpy(a).requires_grad_() for a in (x, grid))
    sampler = fit.grid_sample if library == "fastinterp" else F.grid_sample
    benchmark(_autograd_fwd_bwd, sampler, tx, tg, torch.from_numpy(go))


# --------------------------------------------------------------------------- quick summary

def main():
    torch.set_num_threads(2)
    fi.set_num_threads(2)
    print("per-call overhead of fastinterp.torch over the NumPy API (tiny inputs, median us)")
    for name, (ours, base, _) in _tiny_cases().items():
        plain = overhead_us(ours, base)
        graded = overhead_us(_with_grad(ours), _numpy_fwd_bwd(name, base))
        print(f"  {name:20s} no grad {plain:6.1f} us   forward+backward {graded:6.1f} us")


if __name__ == "__main__":
    main()
