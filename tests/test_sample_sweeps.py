"""The bilinear grid_sample sweeps: channel blocks (full and partial) and the tap
column carried from one pixel to the next must neither lose, double nor reorder
any contribution, whatever the pixel-to-pixel step of the taps (x stalls, skips,
y steps up or down, points leaving the image)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fastinterp as fi
from conftest import assert_variant_gives_same_bits, other_runnable_variants

HERE = Path(__file__).resolve().parent


def stepping_grid(n, ho, wo, rng):
    """Affine grids whose taps advance by 0, 1 or 2 pixels and step rows both ways
    (scales 0.6-1.5, angles of either sign), shifted so that some points fall out."""
    a = rng.uniform(-0.5, 0.5, n)
    s = rng.uniform(0.6, 1.5, n)
    t = rng.uniform(-0.4, 0.4, (n, 2))
    theta = np.stack([np.stack([s * np.cos(a), -s * np.sin(a), t[:, 0]], 1),
                      np.stack([s * np.sin(a), s * np.cos(a), t[:, 1]], 1)], 1)
    return fi.affine_grid(theta, (n, 1, ho, wo), align_corners=False)


def reference(x, grid, go, pad):
    """Float64 bilinear forward, grad_input and grad_grid (zeros or border padding,
    align_corners=False), written out directly."""
    n_, c_, h, w = x.shape
    gx = ((grid[..., 0] + 1) * w - 1) / 2
    gy = ((grid[..., 1] + 1) * h - 1) / 2
    mx = np.full(gx.shape, w / 2)
    my = np.full(gy.shape, h / 2)
    if pad == "border":
        mx = np.where((gx > 0) & (gx < w - 1), mx, 0)
        my = np.where((gy > 0) & (gy < h - 1), my, 0)
        gx, gy = np.clip(gx, 0, w - 1), np.clip(gy, 0, h - 1)
    x0, y0 = np.floor(gx).astype(int), np.floor(gy).astype(int)
    tx, ty = gx - x0, gy - y0
    out = np.zeros(go.shape)
    gi = np.zeros(x.shape)
    gg = np.zeros(grid.shape)
    vals = {}
    for dy, dx, wgt in ((0, 0, (1 - ty) * (1 - tx)), (0, 1, (1 - ty) * tx),
                        (1, 0, ty * (1 - tx)), (1, 1, ty * tx)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        xc, yc = np.clip(xi, 0, w - 1), np.clip(yi, 0, h - 1)
        nn = np.arange(n_)[:, None, None]
        v = x[nn, :, yc, xc] * inside[..., None]           # (N, Ho, Wo, C)
        vals[dy, dx] = v
        out += np.moveaxis(v * wgt[..., None], -1, 1)
        contrib = np.moveaxis(go, 1, -1) * (wgt * inside)[..., None]
        for c in range(c_):
            np.add.at(gi[:, c], (np.broadcast_to(nn, yc.shape), yc, xc), contrib[..., c])
    g = np.moveaxis(go, 1, -1)
    dvx = (vals[0, 1] - vals[0, 0]) * (1 - ty)[..., None] + (vals[1, 1] - vals[1, 0]) * ty[..., None]
    dvy = (vals[1, 0] - vals[0, 0]) * (1 - tx)[..., None] + (vals[1, 1] - vals[0, 1]) * tx[..., None]
    gg[..., 0] = (dvx * g).sum(-1) * mx
    gg[..., 1] = (dvy * g).sum(-1) * my
    return out, gi, gg


# partial and full blocks of 4 (channels first) and of 16 lanes (channels-last backward)
@pytest.mark.parametrize("channels", [1, 3, 4, 7, 9, 16, 17, 35])
@pytest.mark.parametrize("pad", ["zeros", "border"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bilinear_sweeps_match_a_direct_reference(channels, pad, channels_last, rng):
    n, h, w, ho, wo = 2, 13, 17, 11, 40
    x = rng.standard_normal((n, channels, h, w))
    grid = stepping_grid(n, ho, wo, rng)
    go = rng.standard_normal((n, channels, ho, wo))
    ref = reference(x, grid, go, pad)
    xs, gos = x, go
    if channels_last:
        xs, gos = (np.ascontiguousarray(a.transpose(0, 2, 3, 1)) for a in (x, go))
    out = fi.grid_sample(xs, grid, "bilinear", pad, layout="NHWC" if channels_last else None)
    gi, gg = fi.grid_sample_backward(gos, xs, grid, "bilinear", pad,
                                     layout="NHWC" if channels_last else None)
    if channels_last:
        out, gi = (a.transpose(0, 3, 1, 2) for a in (out, gi))
    for got, want in zip((out, gi, gg), ref):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pad", ["zeros", "border", "reflection", "wrap"])
def test_each_channel_as_if_sampled_alone(dtype, pad, rng):
    """A channel's output and grad_input are bit-identical whether it runs in a full
    block, a partial block or alone; the grid gradient is bit-identical whatever the
    gradients asked for."""
    n, c, h, w = 2, 6, 9, 23
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    grid = stepping_grid(n, 7, 50, rng).astype(dtype)
    go = rng.standard_normal((n, c, 7, 50)).astype(dtype)
    out = fi.grid_sample(x, grid, "bilinear", pad)
    gi, gg = fi.grid_sample_backward(go, x, grid, "bilinear", pad)
    for k in range(c):
        xk, gok = x[:, k:k + 1].copy(), go[:, k:k + 1].copy()
        np.testing.assert_array_equal(fi.grid_sample(xk, grid, "bilinear", pad), out[:, k:k + 1])
        gik, _ = fi.grid_sample_backward(gok, xk, grid, "bilinear", pad)
        np.testing.assert_array_equal(gik, gi[:, k:k + 1])
    gi_only, none = fi.grid_sample_backward(go, x, grid, "bilinear", pad, needs_grid_grad=False)
    none2, gg_only = fi.grid_sample_backward(go, x, grid, "bilinear", pad, needs_input_grad=False)
    assert none is None and none2 is None
    np.testing.assert_array_equal(gi_only, gi)
    np.testing.assert_array_equal(gg_only, gg)


SPECIAL = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, -1.0, 1.0, 0.0, 1e-40, 1.0000001])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pad", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_a_point_samples_the_same_bits_anywhere_in_a_row(dtype, pad, align_corners, rng):
    """Plans are computed in blocks of pixels: a grid point's output and gradients do
    not depend on where in a row it sits (block starts, block tails, short rows),
    special values and points on the borders included."""
    n, c, h, w, wo = 1, 3, 5, 7, 37
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    row = rng.uniform(-1.4, 1.4, (n, 1, wo, 2))
    row[0, 0, rng.choice(wo, 12, replace=False), rng.integers(0, 2, 12)] = rng.choice(SPECIAL, 12)
    row = row.astype(dtype)
    go = rng.standard_normal((n, c, 1, wo)).astype(dtype)
    kw = dict(padding_mode=pad, align_corners=align_corners)
    out = fi.grid_sample(x, row, **kw)
    gi, gg = fi.grid_sample_backward(go, x, row, **kw)
    for shift in (1, 5, 15, 16, 17):
        moved = np.roll(row, shift, axis=2)
        out_m = fi.grid_sample(x, moved, **kw)
        _, gg_m = fi.grid_sample_backward(np.roll(go, shift, axis=3), x, moved, **kw)
        np.testing.assert_array_equal(np.roll(out, shift, axis=3), out_m)
        np.testing.assert_array_equal(np.roll(gg, shift, axis=2), gg_m)
    for k in (0, 15, 16, wo - 1):             # one point alone: a one-pixel row
        np.testing.assert_array_equal(fi.grid_sample(x, row[:, :, k:k + 1], **kw),
                                      out[..., k:k + 1])
        _, gg_k = fi.grid_sample_backward(go[..., k:k + 1], x, row[:, :, k:k + 1], **kw)
        np.testing.assert_array_equal(gg_k, gg[:, :, k:k + 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pad", ["zeros", "border", "reflection", "wrap"])
@pytest.mark.parametrize("shape", [(2, 8, 11, 13, 9, 15), (5, 9, 7, 40, 8, 41),
                                   (1, 17, 33, 24, 30, 27), (2, 8, 16, 16, 16, 16),
                                   (6, 16, 20, 20, 12, 12)])
def test_channels_first_images_sample_as_channels_last(dtype, pad, shape, rng):
    """With 8 or more channels, a channels-first forward runs on a channels-last copy of
    each image (one per thread with two or more images a thread, else one shared): the
    result is bit-identical to the channels-last call and to each channel sampled
    alone, on 1 and 2 threads, special grid values included."""
    n, c, h, w, ho, wo = shape
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    grid = stepping_grid(n, ho, wo, rng)
    flat = grid.reshape(-1)
    flat[rng.choice(flat.size, 9, replace=False)] = rng.choice(SPECIAL, 9)
    grid = grid.astype(dtype)
    x_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    before = fi.get_num_threads()
    try:
        for threads in (1, 2):
            fi.set_num_threads(threads)
            out = fi.grid_sample(x, grid, padding_mode=pad)
            last = fi.grid_sample(x_last, grid, padding_mode=pad, layout="NHWC")
            np.testing.assert_array_equal(out, last.transpose(0, 3, 1, 2))
            for k in (0, c - 1):
                alone = fi.grid_sample(x[:, k:k + 1].copy(), grid, padding_mode=pad)
                np.testing.assert_array_equal(out[:, k:k + 1], alone)
    finally:
        fi.set_num_threads(before)



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 8, 16, 16, 16, 16), (3, 9, 13, 11, 23, 37)])
def test_out_at_any_alignment_gets_the_allocated_bits(dtype, shape, rng):
    """The channels-last route cuts each output run into blocks aligned to the output's
    address: an out= array starting at any element offset within a cache line (and a
    run length that is no multiple of the block) gets the bits of an allocated result,
    on 1 and 2 threads."""
    n, c, h, w, ho, wo = shape
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    grid = stepping_grid(n, ho, wo, rng).astype(dtype)
    size = n * c * ho * wo
    lanes = 64 // np.dtype(dtype).itemsize
    before = fi.get_num_threads()
    try:
        for threads in (1, 2):
            fi.set_num_threads(threads)
            expected = fi.grid_sample(x, grid)
            for offset in range(lanes):
                buf = np.full(size + 2 * lanes, np.nan, dtype)
                start = offset + (-buf.ctypes.data // buf.itemsize) % lanes
                out = buf[start:start + size].reshape(expected.shape)
                assert fi.grid_sample(x, grid, out=out) is out
                np.testing.assert_array_equal(out, expected)
                assert np.isnan(buf[:start]).all() and np.isnan(buf[start + size:]).all()
    finally:
        fi.set_num_threads(before)

# --------------------------------------------------------------------------- across builds

def _sampling_workload() -> dict:
    """grid_sample forward and backward, 2-D and 3-D, every mode and padding, both dtypes."""
    rng = np.random.default_rng(3)
    res = {}
    for dt in (np.float32, np.float64):
        x = rng.standard_normal((2, 5, 20, 30)).astype(dt)
        g = rng.uniform(-1.3, 1.3, (2, 17, 23, 2)).astype(dt)
        go = rng.standard_normal((2, 5, 17, 23)).astype(dt)
        for mode in ("bilinear", "bicubic", "nearest"):
            for pad in ("zeros", "border", "reflection", "wrap", "constant"):
                kw = dict(mode=mode, padding_mode=pad, fill=0.5 if pad == "constant" else None)
                key = f"{np.dtype(dt)}-{mode}-{pad}"
                res[key] = fi.grid_sample(x, g, **kw)
                res[key + "-gi"], res[key + "-gg"] = fi.grid_sample_backward(go, x, g, **kw)
        xl = rng.standard_normal((2, 20, 30, 19)).astype(dt)      # channels-last backward
        gol = rng.standard_normal((2, 17, 23, 19)).astype(dt)
        for pad in ("zeros", "border", "reflection", "wrap"):
            key = f"{np.dtype(dt)}-nhwc-{pad}"
            res[key + "-gi"], res[key + "-gg"] = fi.grid_sample_backward(
                gol, xl, g, padding_mode=pad, layout="NHWC")
        v = rng.standard_normal((1, 3, 9, 10, 11)).astype(dt)
        gv = rng.uniform(-1.2, 1.2, (1, 6, 7, 8, 3)).astype(dt)
        gov = rng.standard_normal((1, 3, 6, 7, 8)).astype(dt)
        for mode in ("bilinear", "bicubic", "nearest"):
            key = f"{np.dtype(dt)}-volume-{mode}"
            res[key] = fi.grid_sample(v, gv, mode=mode)
            res[key + "-gi"], res[key + "-gg"] = fi.grid_sample_backward(gov, v, gv, mode=mode)
    return res


@pytest.mark.parametrize("variant", other_runnable_variants() or [None])
def test_every_build_samples_the_same_bits(variant, tmp_path):
    # the sampling kernels are compiled without floating-point contraction, so the
    # x86-64-v2 build (no FMA) and the v3/v4 builds round every step alike
    assert_variant_gives_same_bits(variant, __name__, "_sampling_workload", tmp_path, HERE)
