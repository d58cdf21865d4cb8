"""fastinterp.dask: every op equals the in-memory op on randomly chunked dask arrays.

Most cases run on the synchronous scheduler; a few on a LocalCluster of two
worker processes (one module-scoped fixture), including a kNN over a zarr
database larger than the workers' combined memory limit.
"""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fastinterp as fi  # noqa: E402
import fastinterp.dask as fd  # noqa: E402
from fastinterp import _stream  # noqa: E402
from fastinterp.demos.dask import create_zarr  # noqa: E402

SYNC = {"scheduler": "sync"}


def random_chunks(rng, n, small=False):
    """A random chunking of n: sizes 1..3 when ``small``, else up to n/2; ragged last chunk."""
    sizes = [1] if small else []
    while sum(sizes) < n:
        top = 3 if small else max(1, n // 2)
        sizes.append(int(min(n - sum(sizes), rng.integers(1, top + 1))))
    return tuple(sizes)


def compute(*arrays):
    return dask.compute(*arrays, **SYNC)


class CountingSource:
    """An array-like source for da.from_array that records which slices were read."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads = []
        self._lock = threading.Lock()

    def __getitem__(self, key):
        with self._lock:
            self.reads.append(key)
        return self.data[key]


# --------------------------------------------------------------------------- import

def test_import_fastinterp_does_not_import_dask():
    code = ("import sys, fastinterp; "
            "print(sorted(m for m in ('dask', 'distributed', 'zarr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


# --------------------------------------------------------------------------- resize family

RESIZE_CASES = [
    dict(mode="nearest"), dict(mode="nearest-exact"), dict(mode="area"),
    dict(mode="bilinear"), dict(mode="bilinear", align_corners=True),
    dict(mode="bicubic"), dict(mode="bilinear", antialias=True),
    dict(mode="bicubic", antialias=True),
]


@pytest.mark.parametrize("opts", RESIZE_CASES, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_resize_spatial_chunks_bit_identical(opts, layout):
    rng = np.random.default_rng(len(str(opts)) + len(layout))
    for trial in range(3):
        dtype = (np.float32, np.float64)[trial % 2]
        c = int(rng.choice([1, 3, 6]))
        h, w = (int(v) for v in rng.integers(4, 36, 2))
        shape = (2, h, w, c) if layout == "NHWC" else (2, c, h, w)
        x = rng.standard_normal(shape).astype(dtype)
        small = trial == 0
        hw = (random_chunks(rng, h, small), random_chunks(rng, w, small))
        chunks = ((1, 1),) + ((hw + (c,)) if layout == "NHWC" else ((c,) + hw))
        size = tuple(int(v) for v in rng.integers(1, 60, 2))
        kw = dict(opts, layout=layout)
        if trial == 2 and opts["mode"] != "area":
            kw["scale_factor"] = tuple(float(v) for v in rng.uniform(0.3, 2.6, 2))
        else:
            kw["size"] = size
        ref = fi.resize(x, **kw)
        lazy = fd.resize(da.from_array(x, chunks=chunks), **kw)
        assert lazy.shape == ref.shape and lazy.dtype == ref.dtype
        (got,) = compute(lazy)
        np.testing.assert_array_equal(got, ref)
        assert got.dtype == ref.dtype


@pytest.mark.parametrize("opts", RESIZE_CASES, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_downscales_of_large_chunks_with_non_finite_pixels(opts, layout):
    """Large chunks shrunk by 2-5x, with inf/NaN pixels on block edges and inside
    blocks: bit-identical to the in-memory op."""
    rng = np.random.default_rng(7 + len(str(opts)) + len(layout))
    for trial in range(3):
        dtype = (np.float32, np.float64)[trial % 2]
        c = int(rng.choice([1, 3, 5]))
        h, w = (int(v) for v in rng.integers(60, 120, 2))
        shape = (2, h, w, c) if layout == "NHWC" else (2, c, h, w)
        x = rng.standard_normal(shape).astype(dtype)
        if trial == 1:
            hax, wax = (1, 2) if layout == "NHWC" else (2, 3)
            for value in (np.inf, -np.inf, np.nan):
                idx = [0] * 4
                idx[hax], idx[wax] = int(rng.integers(0, h)), int(rng.integers(0, w))
                x[tuple(idx)] = value
        hw = tuple(tuple(int(v) for v in np.diff(np.r_[0, np.sort(rng.choice(
            np.arange(20, n - 20), 2, replace=False)), n])) for n in (h, w))
        chunks = ((1, 1),) + ((hw + (c,)) if layout == "NHWC" else ((c,) + hw))
        kw = dict(opts, layout=layout)
        if opts["mode"] == "area" or trial != 2:
            kw["size"] = tuple(int(v) for v in rng.integers(12, 40, 2))
        else:
            kw["scale_factor"] = tuple(float(v) for v in rng.uniform(0.2, 0.6, 2))
        (got,) = compute(fd.resize(da.from_array(x, chunks=chunks), **kw))
        np.testing.assert_array_equal(got, fi.resize(x, **kw))



@pytest.mark.parametrize("mode, kw", [("bicubic", {}), ("bilinear", {}), ("lanczos", {}),
                                      ("bicubic", {"antialias": True}), ("area", {})])
@pytest.mark.parametrize("layout, c", [("NCHW", 1), ("NCHW", 3), ("NHWC", 2), ("NHWC", 3),
                                       ("NHWC", 4)])
def test_strong_horizontal_downscales_chunked_along_w_bit_identical(mode, kw, layout, c):
    """Rows shrunk 3-40x and cut into W chunks of 1 to 16 columns: a chunk's short
    rows put outputs into the horizontal pass's vector remainder that the whole
    row computes in its vector body; both must round alike."""
    rng = np.random.default_rng(c + len(mode) + len(layout))
    for w, wo in ((40, 5), (200, 13), (97, 33), (23, 3)):
        dtype = np.float64 if wo % 2 else np.float32
        shape = (1, 4, w, c) if layout == "NHWC" else (1, c, 4, w)
        x = rng.standard_normal(shape).astype(dtype)
        for cw in (1, 7, 16):
            chunks = (1, 4, cw, c) if layout == "NHWC" else (1, c, 4, cw)
            opts = dict(kw, size=(3, wo), mode=mode, layout=layout)
            (got,) = compute(fd.resize(da.from_array(x, chunks=chunks), **opts))
            np.testing.assert_array_equal(got, fi.resize(x, **opts), err_msg=f"{w}->{wo}/{cw}")


def test_resize_output_chunks_align_with_input():
    x = np.random.default_rng(0).standard_normal((1, 2, 10, 9))
    lazy = fd.resize(da.from_array(x, chunks=(1, 2, (3, 7), (1, 1, 7))), size=(20, 4))
    assert lazy.chunks == ((1,), (2,), (6, 14), (0, 0, 4))   # floor(b * out / in)
    np.testing.assert_array_equal(lazy.compute(**SYNC), fi.resize(x, size=(20, 4)))


@pytest.mark.parametrize("mode, blocks", [("bilinear", {1}), ("bicubic", {0, 1, 2})])
def test_resize_reads_only_its_halo(mode, blocks):
    """A 2x downscale: output rows 4..7 take input rows 8..15 (bilinear) or 7..16 (bicubic)."""
    x = np.random.default_rng(1).standard_normal((1, 1, 32, 32)).astype(np.float32)
    dx = da.from_array(x, chunks=(1, 1, 8, 8))
    lazy = fd.resize(dx, size=(16, 16), mode=mode)
    graph = dict(lazy.__dask_graph__())
    assert _source_blocks(graph, (lazy.name, 0, 0, 1, 1), dx.name) == \
        {(r, c) for r in blocks for c in blocks}
    np.testing.assert_array_equal(lazy.compute(**SYNC), fi.resize(x, size=(16, 16), mode=mode))


def _source_blocks(graph, key, source):
    """(row, column) of the blocks of array ``source`` that task ``key`` reads, at any depth."""
    found = set()
    for k in _keys_in(graph[key]):
        found |= {k[-2:]} if k[0] == source else _source_blocks(graph, k, source)
    return found


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_resize_moves_only_halo_strips(layout):
    """An output chunk's task takes its own input block whole and, from each neighbour,
    only the strip of rows or columns its taps reach (cut where the neighbour lives):
    on a cluster, only the strips travel between workers."""
    x = np.random.default_rng(2).standard_normal((1, 2, 32, 32)).astype(np.float32)
    x = x.transpose(0, 2, 3, 1).copy() if layout == "NHWC" else x
    blocks = (1, 8, 8, 2) if layout == "NHWC" else (1, 2, 8, 8)
    dx = da.from_array(x, chunks=blocks)
    lazy = fd.resize(dx, size=(16, 16), mode="bicubic", layout=layout)
    graph = dict(lazy.__dask_graph__())
    key = (lazy.name, 0, 1, 1, 0) if layout == "NHWC" else (lazy.name, 0, 0, 1, 1)
    inputs = _keys_in(graph[key])
    whole = [k for k in inputs if k[0] == dx.name]
    cuts = [k for k in inputs if k[0] != dx.name]     # one task per neighbour block
    assert len(whole) == 1 and len(cuts) == 8
    assert all(_keys_in(graph[k]) == [(dx.name,) + k[1:]] for k in cuts)
    strips = [s for k in cuts for s in dask.get(graph, k)]
    hax, wax = (1, 2) if layout == "NHWC" else (2, 3)
    assert all(min(s.shape[hax], s.shape[wax]) == 1 for s in strips)   # bicubic 2x: 1 px
    np.testing.assert_array_equal(lazy.compute(**SYNC),
                                  fi.resize(x, size=(16, 16), mode="bicubic", layout=layout))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("opts", [dict(mode="bilinear", antialias=True),
                                  dict(mode="bicubic"), dict(mode="area")])
def test_an_output_chunk_reads_its_own_block_in_place(layout, opts):
    """Only the edge bands of a chunk, whose taps reach into the neighbours' strips, are
    computed from copied windows: the task allocates about its result, never a copy of
    its whole window (a quarter of it here)."""
    import tracemalloc
    x = np.random.default_rng(5).standard_normal((1, 3, 768, 768)).astype(np.float32)
    x = x.transpose(0, 2, 3, 1).copy() if layout == "NHWC" else x
    blocks = (1, 256, 256, 3) if layout == "NHWC" else (1, 3, 256, 256)
    lazy = fd.resize(da.from_array(x, chunks=blocks), size=(384, 384), layout=layout, **opts)
    middle = lazy.blocks[0, 1, 1, 0] if layout == "NHWC" else lazy.blocks[0, 0, 1, 1]
    expected = fi.resize(x, size=(384, 384), layout=layout, **opts)
    rows = cols = slice(128, 256)
    want = expected[:, rows, cols] if layout == "NHWC" else expected[:, :, rows, cols]
    old = fi.set_output_cache(0)
    try:
        middle.compute(**SYNC)             # tables built and cached first
        tracemalloc.start()
        got = middle.compute(**SYNC)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        fi.set_output_cache(old)
    np.testing.assert_array_equal(got, want)
    window = 260 * 260 * 3 * 4
    assert peak < got.nbytes + window // 4 + (256 << 10), (peak, got.nbytes, window)


def _keys_in(task):
    """Dask keys (tuples led by a str) anywhere inside a (possibly new-style) task."""
    found = []
    deps = getattr(task, "dependencies", None)
    if deps is not None:
        return list(deps)

    def walk(t):
        if isinstance(t, tuple) and t and isinstance(t[0], str):
            found.append(t)
        elif isinstance(t, (list, tuple)):
            for v in t:
                walk(v)
    walk(task)
    return found


@pytest.mark.parametrize("opts", [dict(mode="area"), dict(mode="bilinear", antialias=True)])
def test_long_float32_windows_spatial_bit_identical(opts):
    """Windows of over 16 taps (summed in float64, rounded once) split over chunks."""
    rng = np.random.default_rng(5)
    x = rng.random((1, 2, 301, 277), dtype=np.float32)
    chunks = ((1,), (2,), random_chunks(rng, 301), random_chunks(rng, 277))
    got = fd.resize(da.from_array(x, chunks=chunks), size=(7, 5), **opts)
    np.testing.assert_array_equal(got.compute(**SYNC), fi.resize(x, size=(7, 5), **opts))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_pool_and_backwards_spatial_bit_identical(layout):
    rng = np.random.default_rng(2)
    for trial in range(3):
        h, w, c = int(rng.integers(2, 30)), int(rng.integers(2, 30)), 3
        shape = (2, h, w, c) if layout == "NHWC" else (2, c, h, w)
        x = rng.standard_normal(shape)
        hw = (random_chunks(rng, h, trial == 0), random_chunks(rng, w, trial == 0))
        chunks = ((2,),) + ((hw + (c,)) if layout == "NHWC" else ((c,) + hw))
        out = tuple(int(v) for v in rng.integers(1, 25, 2))
        ref = fi.adaptive_avg_pool2d(x, out, layout=layout)
        got = fd.adaptive_avg_pool2d(da.from_array(x, chunks=chunks), out, layout=layout)
        np.testing.assert_array_equal(got.compute(**SYNC), ref)
        g = rng.standard_normal(ref.shape)
        ghw = [random_chunks(rng, s) for s in ((ref.shape[1], ref.shape[2]) if layout == "NHWC"
                                                else (ref.shape[2], ref.shape[3]))]
        gch = ((2,),) + ((tuple(ghw) + (c,)) if layout == "NHWC" else ((c,) + tuple(ghw)))
        dg = da.from_array(g, chunks=gch)
        np.testing.assert_array_equal(
            fd.adaptive_avg_pool2d_backward(dg, x.shape, layout=layout).compute(**SYNC),
            fi.adaptive_avg_pool2d_backward(g, x.shape, layout=layout))
        mode = ("bilinear", "bicubic", "nearest")[trial]
        np.testing.assert_array_equal(
            fd.resize_backward(dg, x.shape, mode=mode, layout=layout).compute(**SYNC),
            fi.resize_backward(g, x.shape, mode=mode, layout=layout))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_spatial_backwards_near_the_largest_value_equal_in_memory(dtype, layout):
    """The in-memory backwards redo sums that overflowed from a finite gradient; the
    chunked tasks ran the kernel alone (inf where fi gives 1.5e307: 30 of 60 random
    overflow geometries differed)."""
    rng = np.random.default_rng(5)
    big = float(np.finfo(dtype).max)
    for trial in range(4):
        h_in, w_in = int(rng.integers(6, 13)), 1 + trial % 2
        oh, ow = int(rng.integers(1, 3)), int(rng.integers(3, 7))
        x_shape = (1, h_in, w_in, 2) if layout == "NHWC" else (1, 2, h_in, w_in)
        g_shape = (1, oh, ow, 2) if layout == "NHWC" else (1, 2, oh, ow)
        g = (rng.uniform(0.2, 0.4, g_shape) * big).astype(dtype)
        chunks = tuple((1,) * n if axis in ((1, 2) if layout == "NHWC" else (2, 3)) else (n,)
                       for axis, n in enumerate(g_shape))
        dg = da.from_array(g, chunks=chunks)
        mode = ("area", "bilinear", "bicubic", "nearest")[trial]
        np.testing.assert_array_equal(
            fd.resize_backward(dg, x_shape, mode=mode, layout=layout).compute(**SYNC),
            fi.resize_backward(g, x_shape, mode=mode, layout=layout))
        np.testing.assert_array_equal(
            fd.adaptive_avg_pool2d_backward(dg, x_shape, layout=layout).compute(**SYNC),
            fi.adaptive_avg_pool2d_backward(g, x_shape, layout=layout))


def test_resize_errors_are_raised_when_building_the_graph():
    x = da.zeros((1, 1, 8, 8), chunks=4)
    with pytest.raises(ValueError, match="resize: mode"):
        fd.resize(x, size=4, mode="linear")
    with pytest.raises(TypeError, match="resize"):
        fd.resize(da.zeros((1, 1, 8, 8), chunks=4, dtype=np.int32), size=4)


# --------------------------------------------------------------------------- laziness

def test_graphs_are_lazy_and_metadata_is_known():
    data = np.random.default_rng(3).standard_normal((4, 2, 12, 10)).astype(np.float32)
    src = CountingSource(data)
    x = da.from_array(src, chunks=(1, 2, 5, 4))
    src.reads.clear()               # from_array reads an empty slice for its meta
    r = fd.resize(x, size=(7, 21), mode="bicubic", antialias=True)
    p = fd.adaptive_avg_pool2d(x, 3)
    theta = da.from_array(np.tile(np.eye(2, 3, dtype=np.float32), (4, 1, 1)), chunks=1)
    grid = fd.affine_grid(theta, (4, 2, 6, 5))
    s = fd.grid_sample(x, grid)
    assert src.reads == []          # nothing read, nothing computed
    assert r.dtype == np.float32 and r.shape == (4, 2, 7, 21)
    assert isinstance(r._meta, np.ndarray) and r._meta.ndim == 4
    assert p.chunks[2:] == ((1, 1, 1), (1, 1, 1)) or p.numblocks[2] == 3
    assert grid.chunks == ((1, 1, 1, 1), (6,), (5,), (2,))
    assert s.chunks == ((1, 1, 1, 1), (2,), (6,), (5,)) and s.dtype == np.float32
    np.testing.assert_array_equal(r.compute(**SYNC), fi.resize(data, size=(7, 21),
                                                               mode="bicubic", antialias=True))
    assert src.reads


# --------------------------------------------------------------------------- batch ops

@pytest.mark.parametrize("seed", range(4))
def test_lerp_any_chunks_and_broadcasting(seed):
    # operands chunked differently, NumPy operands, size-1 and missing axes: the blocks
    # are lined up (and broadcast) before fi.lerp runs on them
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((6, 7)).astype(np.float32)
    b = rng.standard_normal((6, 7)).astype(np.float32)
    t = rng.uniform(size=(6, 1)).astype(np.float32)
    row = rng.standard_normal(7).astype(np.float32)

    def chunked(v):
        return da.from_array(v, chunks=tuple(random_chunks(rng, n) for n in v.shape))

    cases = [(a, b, 0.3), (a, b, t), (a, row, t), (row, b, 0.7), (t, row, np.float32(0.25)),
             (a, b, t.T[:, :1]), (a[:1], b, t)]
    for u, v, w in cases:
        want = fi.lerp(u, v, w)
        for args in ((chunked(u), chunked(v), w if np.ndim(w) == 0 else chunked(w)),
                     (chunked(u), v, w), (u, chunked(v), w)):
            got = fd.lerp(*args)
            assert got.shape == want.shape and got.dtype == want.dtype
            np.testing.assert_array_equal(got.compute(**SYNC), want)
    with pytest.raises(ValueError, match="lerp: shapes must broadcast together"):
        fd.lerp(chunked(a), chunked(b[:, :3]), 0.5)


def test_batch_ops_bit_identical():
    rng = np.random.default_rng(4)
    n = 7
    ch = random_chunks(rng, n, small=True)
    a = rng.standard_normal((n, 16)).astype(np.float32)
    b = rng.standard_normal((n, 16)).astype(np.float32)
    t = rng.uniform(size=n).astype(np.float32)
    da_, db_, dt_ = (da.from_array(v, chunks=ch if v.ndim == 1 else (ch, 16)) for v in (a, b, t))
    np.testing.assert_array_equal(fd.lerp(da_, db_, 0.3).compute(**SYNC), fi.lerp(a, b, 0.3))
    np.testing.assert_array_equal(fd.lerp(da_, db_, dt_[:, None]).compute(**SYNC),
                                  fi.lerp(a, b, t[:, None]))
    np.testing.assert_array_equal(fd.slerp(da_, db_, dt_).compute(**SYNC), fi.slerp(a, b, t))
    steps = np.linspace(0, 1, 5, dtype=np.float32)
    np.testing.assert_array_equal(fd.slerp(da_, db_, steps, path=True).compute(**SYNC),
                                  fi.slerp(a, b, steps, path=True))
    g = rng.standard_normal((n, 16)).astype(np.float32)
    got = compute(*fd.slerp_backward(da.from_array(g, chunks=(ch, 16)), da_, db_, dt_))
    for x, y in zip(got, fi.slerp_backward(g, a, b, t)):
        np.testing.assert_array_equal(x, y)
    ga, gb, gt = compute(*fd.slerp_backward(da.from_array(g, chunks=(ch, 16)), da_, db_, 0.4))
    ra, rb, rt = fi.slerp_backward(g, a, b, 0.4)
    np.testing.assert_array_equal(ga, ra)
    np.testing.assert_array_equal(gb, rb)
    np.testing.assert_allclose(gt, rt, rtol=1e-5)   # summed over blocks: equal to rounding

    theta = (np.tile(np.eye(2, 3), (n, 1, 1)) + 0.2 * rng.standard_normal((n, 2, 3)))
    size = (n, 3, 9, 11)
    dth = da.from_array(theta, chunks=(ch, 2, 3))
    grid = fi.affine_grid(theta, size)
    np.testing.assert_array_equal(fd.affine_grid(dth, size).compute(**SYNC), grid)
    gg = rng.standard_normal(grid.shape)
    np.testing.assert_array_equal(
        fd.affine_grid_backward(da.from_array(gg, chunks=(ch, 9, 11, 2)), size).compute(**SYNC),
        fi.affine_grid_backward(gg, size))
    x = rng.standard_normal(size)
    dx = da.from_array(x, chunks=(ch, 3, 9, 11))
    dgrid = da.from_array(grid, chunks=(ch, 9, 11, 2))
    for mode in ("bilinear", "bicubic"):
        np.testing.assert_array_equal(fd.grid_sample(dx, dgrid, mode=mode).compute(**SYNC),
                                      fi.grid_sample(x, grid, mode=mode))
    go = rng.standard_normal((n, 3, 9, 11))
    got = compute(*fd.grid_sample_backward(da.from_array(go, chunks=(ch, 3, 9, 11)), dx, dgrid))
    for x_, y_ in zip(got, fi.grid_sample_backward(go, x, grid)):
        np.testing.assert_array_equal(x_, y_)
    gi, gg2 = fd.grid_sample_backward(da.from_array(go, chunks=(ch, 3, 9, 11)), dx, dgrid,
                                      needs_grid_grad=False)
    assert gg2 is None and gi.shape == x.shape
    np.testing.assert_array_equal(fd.resize(dx, size=(5, 4)).compute(**SYNC),
                                  fi.resize(x, size=(5, 4)))


def test_batch_op_errors():
    a = da.zeros((4, 8), chunks=2)
    with pytest.raises(ValueError, match="slerp: axis must not be 0"):
        fd.slerp(a, a, 0.5, axis=0)
    # the in-memory wording, over batch and spatial chunks alike
    for chunks in (2, (2, 1, 2, 2)):
        with pytest.raises(ValueError, match=r"^grid_sample: grid must have the input's batch "
                                             r"size N = 4; got \(3, 2, 2, 2\)\.$"):
            fd.grid_sample(da.zeros((4, 1, 3, 3), chunks=chunks),
                           da.zeros((3, 2, 2, 2), chunks=1))


# --------------------------------------------------------------------------- grid_sample windows

@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection", "wrap", "constant"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_sample_spatial_source_with_grid_values_near_the_float64_limit(padding_mode,
                                                                          align_corners):
    # finite grid values whose pixel coordinates overflow to inf: far outside, as in memory
    x = np.random.default_rng(5).random((1, 1, 8, 8))
    for v in (1e308, -1.7e308, 5e307):
        grid = np.zeros((1, 2, 2, 2))
        grid[0, 0, 0, 0], grid[0, 1, 1, 1] = v, -v / 3
        opts = dict(padding_mode=padding_mode, align_corners=align_corners)
        got = fd.grid_sample(da.from_array(x, chunks=(1, 1, 4, 4)), grid, **opts)
        np.testing.assert_array_equal(got.compute(**SYNC), fi.grid_sample(x, grid, **opts))


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection", "wrap", "constant"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_spatial_source_bit_identical(mode, padding_mode):
    rng = np.random.default_rng(len(mode) * 7 + len(padding_mode))
    for trial, cl in enumerate((False, True)):
        dtype = (np.float32, np.float64)[trial]
        n, c, h, w = 2, 3, int(rng.integers(2, 30)), int(rng.integers(2, 30))
        x = rng.standard_normal((n, h, w, c) if cl else (n, c, h, w)).astype(dtype)
        theta = np.tile(np.eye(2, 3), (n, 1, 1)) + 0.3 * rng.standard_normal((n, 2, 3))
        grid = fi.affine_grid(theta.astype(dtype), (n, c, 9, 7), align_corners=bool(trial))
        grid[1, 0, 0] = (np.nan, 0.5)
        hw = (random_chunks(rng, h, trial == 0), random_chunks(rng, w))
        chunks = (1,) + ((hw + (c,)) if cl else ((c,) + hw))
        dg = da.from_array(grid, chunks=(1, random_chunks(rng, 9), random_chunks(rng, 7), 2))
        opts = dict(mode=mode, padding_mode=padding_mode, align_corners=bool(trial),
                    layout="NHWC" if cl else "NCHW",
                    fill=0.5 if padding_mode == "constant" else None)
        got = fd.grid_sample(da.from_array(x, chunks=chunks), dg, **opts).compute(**SYNC)
        np.testing.assert_array_equal(got, fi.grid_sample(x, grid, **opts))


@pytest.mark.parametrize("dtype", [np.uint8, np.float16])
def test_spatially_chunked_resize_and_pool_refuse_non_float_when_built(dtype):
    # uint8 and half precision are batch-chunked only: a clear error before anything runs,
    # never a float32 result or an error at compute time
    x = np.random.default_rng(3).integers(0, 255, (1, 3, 9, 11)).astype(dtype)
    spatial = da.from_array(x, chunks=(1, 3, 4, 11))
    name = np.dtype(dtype).name
    for call in (lambda v: fd.resize(v, size=(5, 7), mode="bicubic"),
                 lambda v: fd.adaptive_avg_pool2d(v, (4, 5))):
        with pytest.raises(TypeError, match=f"spatially chunked inputs must be float32 or "
                                            f"float64; got {name} .give H and W one chunk "
                                            r"each, x.rechunk\(\{2: -1, 3: -1\}\)"):
            call(spatial)
        batch = call(da.from_array(x, chunks=(1, 3, 9, 11)))     # batch-chunked: fine
        assert batch.dtype == dtype
        np.testing.assert_array_equal(batch.compute(**SYNC), call(x).compute(**SYNC))


def test_affine_grid_batch_must_be_size_0():
    theta = da.zeros((5, 2, 3), chunks=(2, 2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"^affine_grid: theta must have shape \(N, 2, 3\) "
                                         r"with N = size\[0\] = 4; got \(5, 2, 3\)\.$"):
        fd.affine_grid(theta, (4, 3, 4, 6))
    grad = da.zeros((3, 4, 6, 2), chunks=(1, 4, 6, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"^affine_grid_backward: grad_grid must have shape "
                                         r"\(N, H, W, 2\) = \(4, 4, 6, 2\) from size; got "
                                         r"\(3, 4, 6, 2\)\.$"):
        fd.affine_grid_backward(grad, (4, 3, 4, 6))
    assert fd.affine_grid(theta, (5, 3, 4, 6)).shape == (5, 4, 6, 2)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_sample_border_blocks_outside_the_image_read_the_edge_taps(mode, align_corners):
    """Grid blocks wholly beyond an edge clamp to the edge pixels, whose neighbours the
    kernel reads too (with weight 0: a NaN or inf there still shows): the window must hold
    them. NaN/inf pixels on and next to every edge; bit for bit the in-memory call."""
    rng = np.random.default_rng(17 + len(mode) + align_corners)
    for trial in range(4):
        h, w = (int(v) for v in rng.integers(2, 12, 2))
        x = rng.standard_normal((1, 2, h, w))
        for r, c in ((0, 1), (1, 0), (h - 2, w - 1), (h - 1, w - 2), (1, 1), (h - 2, w - 2)):
            x[0, int(rng.integers(2)), r, c] = rng.choice([np.nan, np.inf, -np.inf])
        # each 3 x 4 block beyond one edge or corner (trials 0, 1), or with some points inside
        side = np.repeat(np.repeat(rng.choice([-1, 1], (1, 4, 3, 2)), 3, 1), 4, 2)
        far = rng.uniform(1.2, 8.0, (1, 12, 12, 2)) * side
        inside = rng.random((1, 12, 12, 1)) < (0.0 if trial < 2 else 0.3)
        grid = np.where(inside, rng.uniform(-1, 1, far.shape), far)
        kw = dict(mode=mode, padding_mode="border", align_corners=align_corners)
        got = fd.grid_sample(da.from_array(x, chunks=(1, 2, random_chunks(rng, h, True),
                                                      random_chunks(rng, w, True))),
                             da.from_array(grid, chunks=(1, 3, 4, 2)), **kw)
        np.testing.assert_array_equal(got.compute(**SYNC), fi.grid_sample(x, grid, **kw))


def test_grid_sample_wrap_reads_across_the_border():
    # a point just left of the image wraps to its right edge, in another source block
    x = np.arange(32, dtype=np.float32).reshape(1, 1, 4, 8)
    grid = np.array([[[[-1.05, 0.0]]]], np.float32)
    kw = dict(mode="bilinear", padding_mode="wrap", align_corners=False)
    got = fd.grid_sample(da.from_array(x, chunks=(1, 1, 4, 4)), da.from_array(grid), **kw)
    np.testing.assert_array_equal(got.compute(**SYNC), fi.grid_sample(x, grid, **kw))


def test_grid_sample_reads_only_touched_source_blocks():
    x = np.random.default_rng(5).standard_normal((1, 1, 64, 64)).astype(np.float32)
    src = CountingSource(x)
    dx = da.from_array(src, chunks=(1, 1, 16, 16))
    # zoom into the top-left 8 x 8 pixels: only source block (0, 0) is needed
    theta = np.array([[[0.125, 0, -0.875], [0, 0.125, -0.875]]], np.float32)
    grid = fi.affine_grid(theta, (1, 1, 32, 32))
    got = fd.grid_sample(dx, da.from_array(grid, chunks=(1, 16, 16, 2))).compute(**SYNC)
    np.testing.assert_array_equal(got, fi.grid_sample(x, grid))
    blocks = {(k[2].start, k[3].start) for k in src.reads}
    assert blocks == {(0, 0)}
    with pytest.raises(ValueError, match="max_window"):
        fd.grid_sample(dx, fi.affine_grid(np.tile(np.eye(2, 3, dtype=np.float32), (1, 1, 1)),
                                          (1, 1, 8, 8)), max_window=100)


@pytest.mark.parametrize("op", ["grid_sample", "rotate"])
def test_max_window_is_checked_and_errors_name_the_op(op):
    x = da.from_array(np.zeros((1, 1, 16, 16)), chunks=(1, 1, 8, 8))
    grid = fi.affine_grid(np.eye(2, 3)[None], (1, 1, 8, 8))
    call = {"grid_sample": lambda **kw: fd.grid_sample(x, grid, **kw),
            "rotate": lambda **kw: fd.rotate(x, 20.0, **kw)}[op]
    for bad, exc in (("a", TypeError), (2.5, TypeError), (True, TypeError), (0, ValueError),
                     (-1, ValueError)):
        with pytest.raises(exc, match=f"^{op}: max_window must be"):
            call(max_window=bad)
    with pytest.raises(ValueError, match=f"^{op}: the grid block .* over max_window=10;"):
        call(max_window=10)
    assert call(max_window=np.int64(10**6)).shape[-2:] == ((8, 8) if op == "grid_sample"
                                                          else (16, 16))


@pytest.mark.parametrize("op", ["warp_affine", "warp_perspective", "rotate"])
def test_warps_take_auto_chunks(op):
    x = np.random.default_rng(6).random((2, 1, 16, 16))
    m = {"warp_affine": ([[0.9, -0.2, 1.0], [0.2, 0.9, 0.5]], (12, 12)),
         "warp_perspective": (np.eye(3), (12, 12)), "rotate": (20.0,)}[op]
    lazy = getattr(fd, op)(da.from_array(x, chunks=(1, 1, 8, 8)), *m, chunks="auto")
    np.testing.assert_array_equal(lazy.compute(**SYNC), getattr(fi, op)(x, *m))


# --------------------------------------------------------------------------- warps

@pytest.mark.parametrize("op", ["warp_affine", "warp_perspective", "rotate"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_warps_bit_identical_on_random_chunks(op, layout, dtype):
    """The warps over randomly chunked images (chunk size 1, ragged chunks, batch-only and
    spatial chunks), per-image and shared matrices, every padding and mode, both
    conventions: lazy shape/dtype/chunks right, values the in-memory call's bits."""
    rng = np.random.default_rng(len(op) * 5 + len(layout) + np.dtype(dtype).itemsize)
    for trial in range(4):
        n, c = 2, int(rng.choice([1, 3]))
        h, w = (int(v) for v in rng.integers(3, 30, 2))
        shape = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
        x = (rng.integers(0, 256, shape) if dtype == np.uint8
             else rng.standard_normal(shape)).astype(dtype)
        hw = (random_chunks(rng, h, trial == 0), random_chunks(rng, w)) if trial < 3 else (h, w)
        chunks = (random_chunks(rng, n, True),) + ((hw + (c,)) if layout == "NHWC"
                                                   else ((c,) + hw))
        padding = ["zeros", "border", "reflection", "wrap", "constant"][trial + (op == "rotate")]
        kw = dict(mode=["bilinear", "nearest", "bicubic"][trial % 3], padding_mode=padding,
                  layout=layout, fill=(7.5 if padding == "constant" else None))
        if op == "rotate":
            args = (float(rng.uniform(-60, 60)),)
            call_kw = dict(kw, center=(float(rng.uniform(0, w)), 2.0) if trial % 2 else None)
        else:
            rows = 2 if op == "warp_affine" else 3
            M = np.tile(np.eye(3)[:rows], (n, 1, 1)) + 0.1 * rng.standard_normal((n, rows, 3))
            M = M if trial % 2 else M[0]                 # per image, then one shared
            match = "torch" if trial == 2 else "opencv"
            args = (M, tuple(int(v) for v in rng.integers(1, 25, 2)))
            call_kw = dict(kw, match=match, inverse_map=trial == 1,
                           align_corners=match == "torch" and trial % 2 == 0)
        ref = getattr(fi, op)(x, *args, **call_kw)
        out_chunks = tuple(random_chunks(rng, s) for s in ref.shape[1:3] if layout == "NHWC") \
            or tuple(random_chunks(rng, s) for s in ref.shape[2:4])
        lazy = getattr(fd, op)(da.from_array(x, chunks=chunks), *args, chunks=out_chunks,
                               **call_kw)
        assert lazy.shape == ref.shape and lazy.dtype == ref.dtype
        spatial = lazy.chunks[1:3] if layout == "NHWC" else lazy.chunks[2:4]
        assert spatial == (out_chunks if trial < 3 else
                           tuple((s,) for s in spatial_size(ref, layout)))
        np.testing.assert_array_equal(lazy.compute(**SYNC), ref)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("fill", [None, 0.0, 300.0, (7.5, 255.0, 0.0)])
def test_spatial_warp_blocks_touch_only_their_window(monkeypatch, layout, dtype, fill):
    """A block of a uint8 warp converted the whole zero-filled source to float32 and a
    'constant' fill sampled a full-size image of ones: every page of a source the size of
    the whole image was written per block (880 MB for one 1000 x 1000 block of a
    12000 x 16000 uint8 slide). The block tasks now sample float sources with zeros
    padding only, with the in-memory call's bits."""
    from fastinterp.dask import _warp
    rng = np.random.default_rng(len(layout) + np.dtype(dtype).itemsize)
    shape = (2, 23, 19, 3) if layout == "NHWC" else (2, 3, 23, 19)
    x = (rng.integers(0, 256, shape) if dtype == np.uint8
         else rng.standard_normal(shape)).astype(dtype)
    hw = (random_chunks(rng, 23), random_chunks(rng, 19))
    chunks = ((1, 1),) + (hw + (3,) if layout == "NHWC" else (3,) + hw)
    padding = "zeros" if fill is None else "constant"
    kw = dict(mode="bilinear", padding_mode=padding, fill=fill, layout=layout)
    for op, args in (("rotate", (33.0,)), ("warp_affine", (np.array([[0.9, 0.2, 1.5],
                                                                      [-0.1, 1.1, -2.0]]),
                                                            (21, 17)))):
        ref = getattr(fi, op)(x, *args, **kw)
        lazy = getattr(fd, op)(da.from_array(x, chunks=chunks), *args, chunks=(7, 6), **kw)
        sampled = []
        real = _warp.fi.grid_sample

        def recorded(src, grid, **opts):
            sampled.append((src.dtype, opts["padding_mode"]))
            return real(src, grid, **opts)
        monkeypatch.setattr(_warp.fi, "grid_sample", recorded)
        got = lazy.compute(**SYNC)
        monkeypatch.setattr(_warp.fi, "grid_sample", real)
        np.testing.assert_array_equal(got, ref)
        assert sampled and all(dt != np.uint8 and pad != "constant" for dt, pad in sampled)


def spatial_size(a, layout="NCHW"):
    return a.shape[1:3] if layout == "NHWC" else a.shape[2:4]


def test_warp_reads_only_the_source_blocks_it_reaches():
    x = np.random.default_rng(9).standard_normal((1, 1, 64, 64)).astype(np.float32)
    src = CountingSource(x)
    dx = da.from_array(src, chunks=(1, 1, 16, 16))
    src.reads.clear()                                           # dask's own probe of the source
    shift = np.array([[1.0, 0.0, -3.0], [0.0, 1.0, -5.0]])     # 3 px left, 5 px up
    lazy = fd.warp_affine(dx, shift, (8, 8))
    assert src.reads == []                                     # nothing read to build it
    np.testing.assert_array_equal(lazy.compute(**SYNC), fi.warp_affine(x, shift, (8, 8)))
    assert {(k[2].start, k[3].start) for k in src.reads} == {(0, 0)}


@pytest.mark.parametrize("call", [lambda a: fd.resize(a, size=(5, 3), mode="bicubic"),
                                  lambda a: fd.adaptive_avg_pool2d(a, 3),
                                  lambda a: fd.warp_affine(a, 0.9 * np.eye(2, 3), (6, 6))])
def test_byte_swapped_sources_give_the_native_result(call):
    x = np.random.default_rng(3).random((1, 2, 8, 8))
    swapped = x.astype(x.dtype.newbyteorder("S"))
    got = call(da.from_array(swapped, chunks=(1, 2, 4, 4)))
    want = call(da.from_array(x, chunks=(1, 2, 4, 4)))
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.compute(**SYNC), want.compute(**SYNC))


@pytest.mark.parametrize("dsize", [(0, 4), (4, 0), (0, 0)])
@pytest.mark.parametrize("op, M", [("warp_affine", np.array([[1.0, 0, 0.5], [0, 1, 0]])),
                                   ("warp_perspective", np.eye(3))])
def test_warps_to_an_empty_output(op, M, dsize):
    """An output size with a zero axis gives an empty result, as in memory, over batch and
    spatial chunks alike."""
    x = np.random.default_rng(3).random((2, 1, 8, 8)).astype(np.float32)
    want = getattr(fi, op)(x, M, dsize)
    for chunks in ((1, 1, 8, 8), (1, 1, 4, 4)):
        got = getattr(fd, op)(da.from_array(x, chunks=chunks), M, dsize)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got.compute(**SYNC), want)


def test_warp_errors_are_the_in_memory_ones():
    dx = da.zeros((2, 3, 8, 8), chunks=(1, 3, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="warp_affine: M must be invertible"):
        fd.warp_affine(dx, np.zeros((2, 3)), (4, 4))
    with pytest.raises(ValueError, match=r"warp_perspective: M must have shape \(3, 3\)"):
        fd.warp_perspective(dx, np.eye(2, 3), (4, 4))
    with pytest.raises(ValueError, match="rotate: padding_mode must be one of"):
        fd.rotate(dx, 10.0, padding_mode="mirror")
    with pytest.raises(ValueError, match="^rotate: scale must be non-zero; got 0"):
        fd.rotate(dx, 10.0, scale=0)
    with pytest.raises(ValueError, match="^warp_affine: align_corners applies to match='torch'"):
        fd.warp_affine(dx, np.eye(2, 3), (4, 4), align_corners=True)
    with pytest.raises(ValueError, match="^warp_perspective: inverse_map applies to "
                                         "match='opencv' only"):
        fd.warp_perspective(dx, np.eye(3), (4, 4), match="torch", inverse_map=True)
    with pytest.raises(ValueError, match=r"warp_affine: img must have shape \(C, H, W\) for layout='CHW'; got \(2, 3, 8, 8\)"):
        fd.warp_affine(dx, np.eye(2, 3), (4, 4), layout="CHW")


# --------------------------------------------------------------------------- arguments as in memory

@pytest.mark.parametrize("match, mode", [("opencv", "bilinear"), ("opencv", "bicubic"),
                                         ("opencv", "area"), ("opencv", "nearest"),
                                         ("pil", "bilinear"), ("pil", "lanczos"),
                                         ("pil", "area")])
def test_resize_presets_bit_identical(match, mode):
    """match= presets: spatial chunks (float) and batch chunks (float and uint8)."""
    rng = np.random.default_rng(len(match) + len(mode))
    for trial in range(3):
        c = int(rng.choice([1, 3, 4]))
        h, w = (int(v) for v in rng.integers(5, 40, 2))
        dtype = (np.float32, np.float64, np.uint8)[trial]
        x = rng.uniform(0, 255, (2, h, w, c)).astype(dtype)
        hw = (random_chunks(rng, h, trial == 0), random_chunks(rng, w)) if trial < 2 else (h, w)
        size = tuple(int(v) for v in rng.integers(1, 50, 2))
        kw = dict(size=size, mode=mode, match=match, layout="NHWC")
        got = fd.resize(da.from_array(x, chunks=(1,) + hw + (c,)), **kw)
        np.testing.assert_array_equal(got.compute(**SYNC), fi.resize(x, **kw))


@pytest.mark.parametrize("layout", ["HW", "HWC", "CHW", None])
def test_one_image_chunked_along_h_and_w(layout):
    """A single (whole-slide) image in any single-image layout, chunked along H and W, as
    resize, adaptive_avg_pool2d and the warps take it in memory: same shape, same bits."""
    rng = np.random.default_rng(len(str(layout)))
    h, w = 37, 29
    shape = {"HW": (h, w), None: (h, w), "HWC": (h, w, 3), "CHW": (3, h, w)}[layout]
    x = rng.standard_normal(shape).astype(np.float32)
    chunks = tuple(random_chunks(rng, s) if s > 3 else s for s in shape)
    dx = da.from_array(x, chunks=chunks)
    for call in (lambda v: (fi, fd)[v is dx].resize(v, size=(15, 40), mode="bicubic",
                                                    antialias=False, layout=layout),
                 lambda v: (fi, fd)[v is dx].adaptive_avg_pool2d(v, (5, 7), layout=layout)):
        ref, lazy = call(x), call(dx)
        assert lazy.shape == ref.shape and lazy.dtype == ref.dtype
        np.testing.assert_array_equal(lazy.compute(**SYNC), ref)
    M = np.array([[1.0, 0.1, 2.0], [0.05, 1.0, -1.0]])
    for call in (lambda m, v: m.warp_affine(v, M, (30, 21), layout=layout),
                 lambda m, v: m.rotate(v, 13.0, mode="bicubic", layout=layout)):
        ref, lazy = call(fi, x), call(fd, dx)
        assert lazy.shape == ref.shape and lazy.dtype == ref.dtype
        np.testing.assert_array_equal(lazy.compute(**SYNC), ref)
    with pytest.raises(ValueError, match=r"resize: input must have shape \(H, W, C\) for layout='HWC'; got \(1, 4, 4, 3\)"):
        fd.resize(da.zeros((1, 4, 4, 3), chunks=2), size=2, layout="HWC")


def _one_image(x2d, layout, c=2):
    """A 2-D image in ``layout`` (C = ``c`` channels for 'CHW' and 'HWC')."""
    if layout == "CHW":
        return np.stack([x2d + k for k in range(c)])
    if layout == "HWC":
        return np.stack([x2d + k for k in range(c)], axis=-1)
    return x2d


def _image_chunks(shape, layout, hw_chunks):
    """Chunks of an image of ``shape`` in ``layout``: ``hw_chunks`` along H and W."""
    if layout == "CHW":
        return (shape[0],) + hw_chunks
    if layout == "HWC":
        return hw_chunks + (shape[2],)
    return hw_chunks


@pytest.mark.parametrize("layout", ["HW", None, "CHW", "HWC"])
def test_one_image_shrunk_to_empty_output_chunks(layout):
    """A single image shrunk so that an output chunk is empty (boundary b maps to
    floor(b * out / in) = 0): forwards and backwards compute the in-memory result."""
    x = _one_image(np.random.default_rng(5).random((4, 6)), layout)
    dx = da.from_array(x, chunks=_image_chunks(x.shape, layout, ((2, 2), (3, 3))))
    for size in ((4, 1), (1, 1), (1, 4)):
        for call in (lambda m, v: m.resize(v, size=size, mode="nearest", layout=layout),
                     lambda m, v: m.resize(v, size=size, mode="bilinear", layout=layout),
                     lambda m, v: m.adaptive_avg_pool2d(v, size, layout=layout)):
            ref, lazy = call(fi, x), call(fd, dx)
            assert lazy.shape == ref.shape
            np.testing.assert_array_equal(lazy.compute(**SYNC), ref)
        for call in (lambda m, v: m.resize_backward(v, size, mode="bilinear", layout=layout),
                     lambda m, v: m.adaptive_avg_pool2d_backward(v, size, layout=layout)):
            ref, lazy = call(fi, x), call(fd, dx)     # x as the gradient of a (4, 6) output
            assert lazy.shape == ref.shape
            np.testing.assert_array_equal(lazy.compute(**SYNC), ref)


@pytest.mark.parametrize("layout", ["HW", None, "CHW", "HWC"])
def test_backwards_take_one_image(layout):
    """resize_backward and adaptive_avg_pool2d_backward take one image as the forwards
    and the in-memory backwards do; input_size (H, W) or the image's shape."""
    rng = np.random.default_rng(6)
    g = _one_image(rng.standard_normal((6, 5)), layout, c=3)
    full = {"CHW": (3, 12, 10), "HWC": (12, 10, 3)}.get(layout, (12, 10))
    for chunks in (g.shape, _image_chunks(g.shape, layout, ((2, 4), (3, 2)))):
        dg = da.from_array(g, chunks=chunks)
        for input_size in ((12, 10), full):
            for mode in ("bilinear", "bicubic", "nearest"):
                ref = fi.resize_backward(g, input_size, mode=mode, layout=layout)
                lazy = fd.resize_backward(dg, input_size, mode=mode, layout=layout)
                assert lazy.shape == ref.shape == full
                np.testing.assert_array_equal(lazy.compute(**SYNC), ref)
            ref = fi.adaptive_avg_pool2d_backward(g, input_size, layout=layout)
            lazy = fd.adaptive_avg_pool2d_backward(dg, input_size, layout=layout)
            assert lazy.shape == ref.shape == full
            np.testing.assert_array_equal(lazy.compute(**SYNC), ref)


def test_resize_backward_of_one_dimensional_data_as_in_memory():
    g = np.random.default_rng(7).standard_normal((4, 3, 5))
    got = fd.resize_backward(da.from_array(g, chunks=(1, 3, 5)), (4, 3, 10), mode="linear")
    np.testing.assert_array_equal(got.compute(**SYNC),
                                  fi.resize_backward(g, (4, 3, 10), mode="linear"))


def _same_error(in_memory, lazy):
    """``lazy()`` raises the error ``in_memory()`` raises, message included."""
    with pytest.raises((ValueError, TypeError)) as want:
        in_memory()
    with pytest.raises(want.type) as got:
        lazy()
    assert str(got.value) == str(want.value)


def test_errors_name_the_callers_shapes():
    """The dask ops check their arguments on zero-length-batch stand-ins; the errors are
    the in-memory op's, naming the shapes the caller passed (single images included)."""
    z = np.zeros
    x4, grid, bad_grid = z((2, 3, 5, 5)), z((2, 4, 4, 2)), z((2, 4, 4, 3))
    cases = [
        ("grid_sample", (x4, bad_grid), {}),
        ("grid_sample_backward", (z((2, 3, 4, 5)), x4, grid), {}),
        ("grid_sample_backward", (z((2, 3, 4, 4)), x4, bad_grid), {}),
        ("affine_grid", (z((2, 2, 4)), (2, 3, 4, 4)), {}),
        ("affine_grid_backward", (z((2, 4, 4, 2)), (2, 3, 5, 5)), {}),
        ("slerp", (z((4, 3)), z((4, 2)), 0.5), {}),
        ("slerp", (z((4, 3)), z((4, 3)), z((4, 2))), {}),
        ("pairwise_sqdist", (z((5, 3)), z((6, 4))), {}),
        ("knn", (z((5, 3)), z((6, 4)), 2), {}),
        ("adaptive_avg_pool2d", (z((2, 3, 0, 5)), 2), {}),
        ("adaptive_avg_pool2d", (z((0, 5)), 2), {}),
        ("resize", (z((0, 5, 3)),), {"size": 2, "layout": "HWC"}),
        ("resize_backward", (z((6, 5, 3)), (12, 10, 4)), {"layout": "HWC"}),
        ("resize_backward", (z((2, 3, 4, 5)), (2, 3, 8, 8)), {"scale_factor": 2}),
        ("adaptive_avg_pool2d_backward", (z((3, 0, 5)), (4, 4)), {"layout": "CHW"}),
        ("warp_affine", (x4, np.eye(2, 3), (4, 4)), {"padding_mode": "constant", "fill": [1, 2]}),
        # batch sizes that differ: the in-memory op's wording, not the blocks'
        ("grid_sample", (x4, z((3, 4, 4, 2))), {}),
        ("grid_sample", (z((1, 3, 6, 6)), grid), {"layout": "NCHW"}),
        ("grid_sample", (z((6, 6)), z((1, 4, 4, 2))), {"layout": "NCHW"}),
        ("affine_grid", (z((2, 2, 3)), (3, 1, 4, 4)), {}),
        ("affine_grid", (z((2, 3, 4)), (3, 1, 2, 4, 4)), {}),
        ("affine_grid_backward", (z((2, 4, 4, 2)), (3, 1, 4, 4)), {}),
        ("slerp", (z((3, 4)), z((2, 4)), 0.5), {}),
        ("lerp", (z((3, 4)), z((2, 4)), 0.5), {}),
        # images with an empty spatial axis: the in-memory ValueError
        ("warp_affine", (z((1, 1, 0, 5)), np.eye(2, 3), (3, 3)), {}),
        ("warp_perspective", (z((1, 1, 5, 0)), np.eye(3), (3, 3)), {}),
        ("rotate", (z((1, 1, 0, 5)), 10.0), {}),
        ("rotate", (z((0, 5, 3)), 10.0), {"layout": "HWC"}),
    ]
    for op, args, kw in cases:
        lazy = [da.from_array(a, chunks=1) if isinstance(a, np.ndarray) and a.ndim > 1 else a
                for a in args]
        _same_error(lambda: getattr(fi, op)(*args, **kw), lambda: getattr(fd, op)(*lazy, **kw))
    with pytest.raises(ValueError, match="grid_sample_backward: layout must be 'NCHW' or "
                                         "'NHWC' for dask arrays"):
        fd.grid_sample_backward(da.zeros((3, 4, 4)), da.zeros((3, 5, 5)), da.zeros((4, 4, 2)),
                                layout="CHW")


@pytest.mark.parametrize("axis", [None, "1", 1.0, True, 2, -3])
def test_slerp_axis_checked_as_in_memory(axis):
    a = np.ones((4, 3))
    da_ = da.from_array(a, chunks=2)
    _same_error(lambda: fi.slerp(a, a, 0.5, axis=axis), lambda: fd.slerp(da_, a, 0.5, axis=axis))
    _same_error(lambda: fi.slerp_backward(a, a, a, 0.5, axis=axis),
                lambda: fd.slerp_backward(da_, da_, a, 0.5, axis=axis))


def test_lerp_broadcasts_unknown_chunk_sizes():
    """Operands of unknown length (boolean indexing) broadcast as in Dask: a missing or
    size-1 axis against an unknown one, or operands split alike along it."""
    x = np.arange(40.).reshape(10, 4)
    keep = x[:, 0] > 5
    dx = da.from_array(x, chunks=3)
    picked = dx[dx[:, 0] > 5]
    t = np.linspace(0, 1, 10)
    t_picked = da.from_array(t, chunks=3)[dx[:, 0] > 5]
    cases = [((picked, np.ones(4), 0.5), (x[keep], np.ones(4), 0.5)),
             ((np.ones((1, 4)), picked, np.ones((1, 1))),
              (np.ones((1, 4)), x[keep], np.ones((1, 1)))),
             ((picked, picked + 1, t_picked[:, None]), (x[keep], x[keep] + 1, t[keep][:, None])),
             ((picked, 2 * picked, 0.25), (x[keep], 2 * x[keep], 0.25))]
    for lazy, whole in cases:
        got = fd.lerp(*lazy)
        assert np.isnan(got.shape[0]) and got.shape[1] == 4
        np.testing.assert_array_equal(got.compute(**SYNC), fi.lerp(*whole))
    with pytest.raises(ValueError, match=r"lerp: shapes must broadcast together; "
                                         r"got a \(nan, 4\), b \(3,\), t \(\)\."):
        fd.lerp(picked, np.ones(3), 0.5)


def test_one_dimensional_data_and_empty_channels_as_in_memory():
    x = np.random.default_rng(1).standard_normal((4, 3, 10)).astype(np.float32)
    got = fd.resize(da.from_array(x, chunks=(1, 3, 10)), size=5, mode="linear")
    np.testing.assert_array_equal(got.compute(**SYNC), fi.resize(x, size=5, mode="linear"))
    empty = np.zeros((1, 4, 4, 0), np.float32)
    for call in (lambda v, m: m.resize(v, size=3, layout="NHWC"),
                 lambda v, m: m.adaptive_avg_pool2d(v, 3, layout="NHWC")):
        lazy = call(da.from_array(empty, chunks=(1, 2, 2, 1)), fd)
        assert lazy.shape == (1, 3, 3, 0) == call(empty, fi).shape


def test_slerp_t_as_a_list_is_read_as_in_memory():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 8, 3)).astype(np.float32)
    t = [float(v) for v in np.linspace(0, 1, 8)]
    got = fd.slerp(da.from_array(a, chunks=3), b, t)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.compute(**SYNC), fi.slerp(a, b, t))
    grads = fd.slerp_backward(da.from_array(np.ones_like(a), chunks=3), a, b, t)
    for g, ref in zip(grads, fi.slerp_backward(np.ones_like(a), a, b, t)):
        np.testing.assert_array_equal(g.compute(**SYNC), ref)
    with pytest.raises(TypeError, match="slerp: t must be a real number or an array of reals"):
        fd.slerp(da.from_array(a, chunks=3), b, ["x"] * 8)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_lerp_t_as_a_list_is_read_as_in_memory(dtype):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 5, 3)).astype(dtype)
    t = [[float(v)] for v in rng.uniform(-0.5, 1.5, 5)]
    for weight in (t, tuple(t)):
        got = fd.lerp(da.from_array(a, chunks=2), b, weight)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.compute(**SYNC), fi.lerp(a, b, t))
    with pytest.raises(TypeError, match="lerp: t must be a real number or an array of reals"):
        fd.lerp(da.from_array(a, chunks=2), b, ["x"])


@pytest.mark.parametrize("op", ["resize", "adaptive_avg_pool2d"])
def test_an_output_beyond_memory_is_the_in_memory_memory_error(op):
    # the message names the whole call's size, not that of the zero-batch probe
    x = np.zeros((4, 3, 8, 8), np.float32)
    with pytest.raises(MemoryError) as want:
        getattr(fi, op)(x, (10**9, 2))
    with pytest.raises(MemoryError) as got:
        getattr(fd, op)(da.from_array(x, chunks=(1, 3, 8, 8)), (10**9, 2))
    assert str(got.value) == str(want.value)


def test_unknown_batch_chunks():
    """After boolean indexing (unknown chunk sizes along N): a one-array op runs as in
    memory; one that must match several arrays' rows says to compute the chunk sizes."""
    x = np.random.default_rng(3).standard_normal((3, 3, 8, 8)).astype(np.float32)
    keep = np.array([True, False, True])
    for chunks in ((1, 3, 8, 8), (1, 3, 4, 8)):
        picked = da.from_array(x, chunks=chunks)[da.from_array(keep, chunks=1)]
        got = fd.resize(picked, size=3)
        np.testing.assert_array_equal(got.compute(**SYNC), fi.resize(x[keep], size=3))
    grid = da.zeros((3, 4, 4, 2), chunks=(1, 4, 4, 2), dtype=np.float32)[
        da.from_array(keep, chunks=1)]
    with pytest.raises(ValueError, match=r"grid_sample: input has unknown chunk sizes along "
                                         r"the batch axis 0 .* input\.compute_chunk_sizes\(\)"):
        fd.grid_sample(picked.rechunk((picked.chunks[0], 3, 8, 8)), grid)


# --------------------------------------------------------------------------- distances

def _db(rng, n, d, dtype, ties):
    x = rng.standard_normal((n, d))
    if ties:                       # integer values and duplicated rows: many exact ties
        x = np.round(2 * x)
        x[n // 2:] = x[:n - n // 2]
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ties", [False, True])
def test_pairwise_bit_identical(dtype, ties):
    rng = np.random.default_rng(6)
    x, y = _db(rng, 37, 13, dtype, ties), _db(rng, 30, 13, dtype, ties) + dtype(1000)
    x = x + dtype(1000)           # rows far from the origin: the centre matters
    dx = da.from_array(x, chunks=(random_chunks(rng, 37, ties), 13))
    dy = da.from_array(y, chunks=(random_chunks(rng, 30), 13))
    for name in ("pairwise_sqdist", "pairwise_l2"):
        lazy = getattr(fd, name)(dx, dy)
        assert lazy.chunks == (dx.chunks[0], dy.chunks[0])
        np.testing.assert_array_equal(lazy.compute(**SYNC), getattr(fi, name)(x, y))
        np.testing.assert_array_equal(getattr(fd, name)(dx).compute(**SYNC),
                                      getattr(fi, name)(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("block_bytes", [0, None])   # x's own chunks; merged into larger tasks
def test_knn_identical_to_in_memory(dtype, ties, block_bytes):
    rng = np.random.default_rng(7 + ties)
    n, q, d = 300, 23, 8
    x, queries = _db(rng, n, d, dtype, ties), _db(rng, q, d, dtype, ties)
    queries[0] = np.nan          # NaN query: rows 0..k-1
    dx = da.from_array(x, chunks=(random_chunks(rng, n), d))
    for k, split in ((1, 2), (9, 3), (40, 8)):
        dd, ii = fd.knn(dx, da.from_array(queries, chunks=(random_chunks(rng, q), d)), k,
                        split_every=split, block_bytes=block_bytes)
        assert dd.chunks[1] == (k,) and ii.dtype == np.int64 and dd.dtype == dtype
        gd, gi = compute(dd, ii)
        rd, ri = fi.knn(x, queries, k)
        np.testing.assert_array_equal(gi, ri)
        np.testing.assert_array_equal(gd, rd)
    # chunk size 1 everywhere, k = N
    small = x[:12]
    gd, gi = compute(*fd.knn(da.from_array(small, chunks=(1, d)),
                             da.from_array(queries, chunks=(1, d)), 12))
    rd, ri = fi.knn(small, queries, 12)
    np.testing.assert_array_equal(gi, ri)
    np.testing.assert_array_equal(gd, rd)


def _task_count(arr, prefix):
    graph = dask.optimize(arr)[0].__dask_graph__()
    return sum(1 for key in graph if (key[0] if isinstance(key, tuple) else key).startswith(prefix))


@pytest.mark.parametrize("chunk,block_bytes,tasks", [
    (10, 0, 20),               # x's own chunks
    (10, 40 * 16 * 4, 5),      # 40-row tasks: 4 chunks each
    (10, 35 * 16 * 4, 5),      # at least 35 rows: 4 chunks each (the last 4 chunks too)
    (10, 65 * 16 * 4, 2),      # 70 + 130 rows: the short remainder joins the last task
    (50, 10 * 16 * 4, 4),      # chunks already larger: kept
    (10, None, 3),             # the default (MIN_TASK_BYTES) merges this tiny database into
])                             # one block: then query chunks stay apart (3 tasks)
def test_knn_block_bytes_sets_task_sizes(chunk, block_bytes, tasks):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((200, 16)).astype(np.float32)
    q = rng.standard_normal((9, 16)).astype(np.float32)
    dd, ii = fd.knn(da.from_array(x, chunks=(chunk, 16)), da.from_array(q, chunks=(4, 16)), 6,
                    block_bytes=block_bytes)
    assert _task_count(ii, "knn-block") == tasks
    assert ii.chunks == ((4, 4, 1), (6,)) and dd.chunks == ii.chunks
    gd, gi = compute(dd, ii)
    rd, ri = fi.knn(x, q, 6)
    np.testing.assert_array_equal(gi, ri)
    np.testing.assert_array_equal(gd, rd)


def test_knn_query_chunks_grouped_and_reads_fused(tmp_path, monkeypatch):
    """One search task per (query group, database block), each reading its own block:
    the database is read once per group, not once per query chunk, and no read task
    (whose output would travel to another worker) is left in the optimized graph."""
    rng = np.random.default_rng(15)
    x = rng.standard_normal((120, 8)).astype(np.float32)
    q = rng.standard_normal((30, 8)).astype(np.float32)
    path = str(tmp_path / "x.zarr")
    z = create_zarr(path, x.shape, (40, 8), "f4")
    z[:] = x
    from fastinterp.dask import _knn
    monkeypatch.setattr(_knn, "QUERY_GROUP_BYTES", 12 * (8 * 4 + 3 * 12))   # 12 queries
    dd, ii = fd.knn(da.from_zarr(path), da.from_array(q, chunks=(5, 8)), 3, block_bytes=0)
    assert ii.chunks[0] == (5,) * 6
    assert _task_count(ii, "knn-block") == 3 * 3            # 3 groups (10, 10, 10) x 3 blocks
    assert _task_count(ii, "from-zarr") == 0                 # reads fused into the searches
    gd, gi = compute(dd, ii)
    rd, ri = fi.knn(x, q, 3)
    np.testing.assert_array_equal(gi, ri)
    np.testing.assert_array_equal(gd, rd)


def test_knn_block_distances_equal_whole_data_distances():
    """A block's distances (its own centre) are bit-identical to the whole-data call's."""
    rng = np.random.default_rng(8)
    x = (1000 + 0.1 * rng.standard_normal((500, 16))).astype(np.float32)
    q = (1000 + 0.1 * rng.standard_normal((20, 16))).astype(np.float32)
    rd, ri = fi.knn(x, q, 500)
    pos = np.argsort(ri, axis=1)
    whole = np.take_along_axis(rd, pos, axis=1)       # distance of (query, row) by row
    for s, e in ((0, 100), (100, 350), (350, 500)):
        bd, bi = fi.knn(x[s:e], q, e - s)
        np.testing.assert_array_equal(bd, np.take_along_axis(whole, bi + s, axis=1))


def test_knn_errors():
    x = da.zeros((10, 3), chunks=5)
    with pytest.raises(ValueError, match="knn: k must satisfy"):
        fd.knn(x, x, 11)
    with pytest.raises(TypeError, match="knn: k must be an int"):
        fd.knn(x, x, 2.0)
    with pytest.raises(ValueError, match="knn: block_bytes must be an int >= 0 or None"):
        fd.knn(x, x, 2, block_bytes=-1)
    for bad in (1.5, 4096.0, "4096", True):      # a TypeError, as for k and split_every
        with pytest.raises(TypeError, match="knn: block_bytes must be an int >= 0 or None"):
            fd.knn(x, x, 2, block_bytes=bad)
    for bad in ("no", [1], 1.0, None, np.array([True])):
        with pytest.raises(TypeError, match="^knn: return_distances must be a bool"):
            fd.knn(x, x, 2, return_distances=bad)
    for bad in ("4", 2.5, True, None):
        with pytest.raises(TypeError, match="^knn: split_every must be an int"):
            fd.knn(x, x, 2, split_every=bad)
    with pytest.raises(ValueError, match="^knn: split_every must be >= 2; got 1"):
        fd.knn(x, x, 2, split_every=1)
    clouds = da.zeros((2, 10, 3), chunks=5)
    for call in (lambda: fd.knn(clouds, clouds, 2), lambda: fd.pairwise_sqdist(clouds, clouds)):
        with pytest.raises(ValueError, match=r"must have shape \(rows, D\) \(batched point "
                                             r"clouds \(B, N, D\) are for the in-memory op\)"):
            call()
    d, i = fd.knn(x, x, 2, return_distances=np.bool_(True), split_every=np.int64(2))
    assert fd.knn(x, x, 2, return_distances=1, split_every=np.array(3))[1].shape == (10, 2)
    assert fd.knn(x, x, 2, return_distances=np.bool_(False)).compute().shape == (10, 2)


# --------------------------------------------------------------------------- fi.knn streaming

def test_fi_knn_streams_memmap_in_bounded_memory(tmp_path, monkeypatch, capsys):
    import tracemalloc
    rng = np.random.default_rng(9)
    n, d = 40_000, 32                          # 5 MB database
    mm = np.lib.format.open_memmap(tmp_path / "db.npy", mode="w+", dtype=np.float32,
                                   shape=(n, d))
    mm[:] = rng.standard_normal((n, d), dtype=np.float32)
    q = rng.standard_normal((50, d), dtype=np.float32)
    ref = fi.knn(np.array(mm), q, 7)
    monkeypatch.setattr(_stream, "BLOCK_BYTES", 256 << 10)
    tracemalloc.start()
    got = fi.knn(mm, q, 7, progress=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < mm.nbytes / 3        # a few 256 KB blocks and their scratch
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    assert "40000" in capsys.readouterr().err.replace(",", "").replace("40.0k", "40000")


def test_fi_knn_streams_zarr(tmp_path):
    pytest.importorskip("zarr")
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3000, 6)).astype(np.float64)
    z = create_zarr(str(tmp_path / "db.zarr"), x.shape, (700, 6), "f8")
    z[:] = x
    q = rng.standard_normal((9, 6))
    assert _stream.is_out_of_core(z)
    idx = fi.knn(z, q, 5, return_distances=False)
    np.testing.assert_array_equal(idx, fi.knn(x, q, 5, return_distances=False))
    np.testing.assert_array_equal(fi.knn(x, q, 5, progress=True)[1], idx)


def _record_blocks(monkeypatch):
    """Replace block_candidates by a wrapper recording (start, block) of every call."""
    seen, inner = [], _stream.block_candidates

    def record(xb, queries, k, offset, bound=None):
        seen.append((offset, xb))
        return inner(xb, queries, k, offset, bound)
    monkeypatch.setattr(_stream, "block_candidates", record)
    return seen


def test_fi_knn_stream_block_layout_over_zarr(tmp_path, monkeypatch):
    """A short first block (one chunk: the search waits for its read), then whole-chunk
    blocks of about BLOCK_BYTES, covering every row once."""
    pytest.importorskip("zarr")
    rng = np.random.default_rng(16)
    x = rng.standard_normal((5000, 8)).astype(np.float32)
    z = create_zarr(str(tmp_path / "db.zarr"), x.shape, (300, 8), "f4")
    z[:] = x
    q = rng.standard_normal((7, 8)).astype(np.float32)
    monkeypatch.setattr(_stream, "BLOCK_BYTES", 1000 * 8 * 4)     # 1000 rows -> 900 (chunks)
    seen = _record_blocks(monkeypatch)
    got = fi.knn(z, q, 4)
    sizes = [len(b) for _, b in seen]
    assert sizes == [300] + [900] * 5 + [200]
    blocks = [b for _, b in seen]            # two buffers in turn: no allocation per block
    assert np.shares_memory(blocks[1], blocks[3]) and not np.shares_memory(blocks[1], blocks[2])
    assert [s for s, _ in seen] == list(np.cumsum([0] + sizes[:-1]))
    ref = fi.knn(x, q, 4)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_fi_knn_streams_a_byte_swapped_memmap(tmp_path, monkeypatch, dtype):
    """A database in the other byte order (a big-endian .npy file) and such queries are
    read as the in-memory op reads them (it crashed in the float64 re-check)."""
    rng = np.random.default_rng(18)
    x = rng.standard_normal((3000, 8)).astype(dtype)
    np.save(tmp_path / "db.npy", x)
    mm = np.load(tmp_path / "db.npy", mmap_mode="r")
    monkeypatch.setattr(_stream, "BLOCK_BYTES", 400 * 8 * 8)
    for q in (x[:9], x[:9].astype(np.dtype(dtype).newbyteorder("="))):
        got = fi.knn(mm, q, 5)
        ref = fi.knn(x.astype(np.dtype(dtype).newbyteorder("=")), q, 5)
        assert got[0].dtype == ref[0].dtype and got[0].dtype.isnative
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


@pytest.mark.parametrize("swapped", ["x", "y", "both"])
def test_distances_and_knn_of_byte_swapped_arrays_equal_in_memory(swapped):
    rng = np.random.default_rng(19)
    x = rng.standard_normal((40, 6)).astype(">f8" if swapped != "y" else "<f8")
    y = rng.standard_normal((23, 6)).astype(">f8" if swapped != "x" else "<f8")
    for fn in ("pairwise_sqdist", "pairwise_l2"):
        lazy = getattr(fd, fn)(da.from_array(x, chunks=(7, 6)), y)
        want = getattr(fi, fn)(x, y)
        assert lazy.dtype == want.dtype == np.float64
        np.testing.assert_array_equal(lazy.compute(**SYNC), want)
    d, i = fd.knn(da.from_array(y, chunks=(5, 6)), x, 4)
    want_d, want_i = fi.knn(y, x, 4)
    assert d.dtype == want_d.dtype
    np.testing.assert_array_equal(d.compute(**SYNC), want_d)
    np.testing.assert_array_equal(i.compute(**SYNC), want_i)


@pytest.mark.parametrize("mode", ["r", "r+", "c"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_fi_knn_streams_memmap_without_copies(tmp_path, monkeypatch, mode, order):
    """A C-contiguous memmap's blocks are views of the mapping (no copy); a Fortran one is
    read by copies; a copy-on-write map keeps its in-memory changes after the search."""
    rng = np.random.default_rng(17)
    n, d = 3000, 16
    path = tmp_path / "db.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, d),
                                   fortran_order=order == "F")
    mm[:] = rng.standard_normal((n, d))
    mm.flush()
    del mm
    mm = np.load(path, mmap_mode=mode)
    if mode == "c":
        mm[::7] += 3.0                      # private changes, not in the file
    expect = np.array(mm)
    q = rng.standard_normal((11, d))
    monkeypatch.setattr(_stream, "BLOCK_BYTES", 400 * d * 8)
    seen = _record_blocks(monkeypatch)
    got = fi.knn(mm, q, 6)
    assert [len(b) for _, b in seen] == [50] + [400] * 7 + [150]
    assert all(np.shares_memory(b, mm) == (order == "C") for _, b in seen)
    assert all(type(b) is np.ndarray for _, b in seen)
    ref = fi.knn(expect, q, 6)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(np.array(mm), expect)     # nothing lost by unmapping


@pytest.mark.parametrize("make", ["copy", "view"])
def test_fi_knn_keeps_a_memmap_object_not_backed_by_a_file(tmp_path, monkeypatch, make):
    """np.memmap objects over ordinary memory (a memmap's copy, an array viewed as
    np.memmap) are searched without touching their pages: unmapping those would zero them."""
    rng = np.random.default_rng(5)
    n, d = 3000, 8
    data = rng.standard_normal((n, d)).astype(np.float32)
    np.save(tmp_path / "db.npy", data)
    if make == "view":
        x = data.copy().view(np.memmap)
    else:
        x = np.load(tmp_path / "db.npy", mmap_mode="r").copy()
    assert isinstance(x, np.memmap)
    expect = np.array(x)
    q = rng.standard_normal((5, d)).astype(np.float32)
    monkeypatch.setattr(_stream, "BLOCK_BYTES", 400 * d * 4)
    got = fi.knn(x, q, 4)
    np.testing.assert_array_equal(np.asarray(x), expect)
    ref = fi.knn(expect, q, 4)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


# --------------------------------------------------------------------------- distributed

# Per worker. A worker process starts at about 100 MB; the combined limit of
# the two (320 MiB = 336 MB) is below the zarr database of the kNN test (346 MB).
CLUSTER_MEMORY = 160 << 20
DB_ROWS, DB_DIM, DB_CHUNK = 2_700_000, 32, 50_000      # float32: 346 MB, 6.4 MB chunks


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit=CLUSTER_MEMORY, dashboard_address=None) as cl, \
            distributed.Client(cl) as c:
        yield c


def _worker_threads():
    from threadpoolctl import threadpool_info
    return fi.get_num_threads(), tuple(sorted({p["num_threads"] for p in threadpool_info()}))


@pytest.mark.no_sanitizer   # workers have memory limits, which ASan's shadow memory exceeds
def test_cluster_workers_run_kernels_on_one_thread(client):
    """2 workers x 1 thread on 2 cores: each worker's fastinterp (and BLAS) must use one
    thread, or the two oversubscribe the cores. distributed starts workers with
    OMP_NUM_THREADS=1, which fastinterp reads at import; an OMP_NUM_THREADS the user
    set in the environment is inherited instead, and honoured."""
    pytest.importorskip("threadpoolctl")
    want = int(os.environ.get("OMP_NUM_THREADS") or 1)
    assert set(client.run(_worker_threads).values()) <= {(want, ()), (want, (1,))}


@pytest.mark.no_sanitizer   # workers have memory limits, which ASan's shadow memory exceeds
def test_cluster_resize_and_knn_equal_in_memory(client):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 40, 33)).astype(np.float32)
    lazy = fd.resize(da.from_array(x, chunks=(1, 3, 7, 11)), size=(25, 70), mode="bicubic",
                     antialias=True)
    np.testing.assert_array_equal(client.compute(lazy).result(),
                                  fi.resize(x, size=(25, 70), mode="bicubic", antialias=True))
    db = rng.standard_normal((5000, 12)).astype(np.float32)
    q = rng.standard_normal((40, 12)).astype(np.float32)
    dd, ii = fd.knn(da.from_array(db, chunks=(600, 12)), da.from_array(q, chunks=(15, 12)), 6)
    gd, gi = client.compute([dd, ii], sync=True)
    rd, ri = fi.knn(db, q, 6)
    np.testing.assert_array_equal(gi, ri)
    np.testing.assert_array_equal(gd, rd)


@pytest.mark.no_sanitizer   # workers have memory limits, which ASan's shadow memory exceeds
def test_cluster_knn_over_zarr_larger_than_worker_memory(client, tmp_path):
    zarr = pytest.importorskip("zarr")
    path = str(tmp_path / "db.zarr")
    # written by the workers, block by block: the database never exists in memory
    data = da.random.default_rng(12).random((DB_ROWS, DB_DIM), dtype=np.float32,
                                            chunks=(DB_CHUNK, DB_DIM))
    client.compute(data.to_zarr(path, compute=False), sync=True)
    z = zarr.open_array(path, mode="r")
    assert z.nbytes > 2 * CLUSTER_MEMORY
    q = np.random.default_rng(13).random((64, DB_DIM), dtype=np.float32)
    dd, ii = fd.knn(da.from_zarr(path), da.from_array(q, chunks=(32, DB_DIM)), 5)
    gd, gi = client.compute([dd, ii], sync=True)
    rss = client.run(lambda: __import__("psutil").Process().memory_info().rss)
    assert max(rss.values()) < CLUSTER_MEMORY
    rd, ri = fi.knn(z, q, 5)            # in-process, streamed (equal to the in-memory call)
    np.testing.assert_array_equal(gi, ri)
    np.testing.assert_array_equal(gd, rd)


def _random_warp_maps(rng, trials):
    """(op, M, dsize, kw) of random affine and perspective warps, some with the horizon
    (w = 0) across the output."""
    for trial in range(trials):
        perspective = trial % 2 == 1
        rows = 3 if perspective else 2
        M = np.eye(3)[:rows] + 0.2 * rng.standard_normal((rows, 3))
        if perspective:
            M[2, :2] = rng.standard_normal(2) * (0.2 if trial % 4 == 1 else 0.01)
        match = "torch" if trial % 3 == 2 else "opencv"
        kw = dict(match=match, inverse_map=match == "opencv" and trial % 5 == 0,
                  align_corners=match == "torch" and trial % 2 == 0)
        dsize = tuple(int(v) for v in rng.integers(5, 40, 2))
        yield ("warp_perspective" if perspective else "warp_affine"), M, dsize, kw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_warp_corner_bounds_bound_every_grid_block(dtype):
    """The bounds a warp's graph takes from its grid's block corners hold every point of the
    block (rounding and the cast to the grid's dtype included); blocks they cannot bound
    (the horizon of a perspective map inside) are left to be computed."""
    from fastinterp import warp as wp
    from fastinterp.dask import _warp
    rng = np.random.default_rng(21)
    unknown = 0
    far = [("warp_affine", np.array([[1e20, 0, 5e20], [0, 1, 0]]), (9, 7),    # beyond the
            dict(match="torch", inverse_map=False, align_corners=False)),     # sampler's range
           ("warp_affine", np.array([[3e19, 0, 0], [0, 1e-3, 0]]), (9, 7),
            dict(match="torch", inverse_map=False, align_corners=True))]
    for op, M, (Ho, Wo), kw in far + list(_random_warp_maps(rng, 24)):
        rows = 3 if op == "warp_perspective" else 2
        wmap = wp._Map(op, M, rows, 2, 17, 23, Ho, Wo, kw["match"], kw["inverse_map"],
                       kw["align_corners"])
        grid = _warp.warp_grid(op, da.zeros((2, 1, 17, 23), chunks=(1, 1, 17, 23)), wmap, False,
                               (random_chunks(rng, Ho), random_chunks(rng, Wo)), np.dtype(dtype))
        known = _warp.warp_grid_bounds(wmap, grid)
        actual = _warp._grid_bounds(grid)
        sure = ~np.isnan(known[..., 4])
        unknown += int((~sure).sum())
        assert (known[sure][:, [0, 2]] <= actual[sure][:, [0, 2]]).all()
        assert (known[sure][:, [1, 3]] >= actual[sure][:, [1, 3]]).all()
        assert (actual[sure][:, 4] == 0).all()
        if op == "warp_affine":
            assert sure.all()
            if np.abs(actual[..., :4]).max() < 1e6:         # (within the sampler's range)
                np.testing.assert_array_equal(known, actual)    # the corners are the extremes
    assert unknown > 0          # some perspective blocks hold their horizon


def test_building_a_warp_graph_computes_no_grid_block(monkeypatch):
    """A warp over a spatially chunked image builds its graph from the grid's block corners:
    no grid block is computed until the result is, except blocks that hold the horizon
    of a perspective map; the result is the in-memory warp's bits."""
    from fastinterp.dask import _warp
    calls = []
    real = _warp._grid_block
    monkeypatch.setattr(_warp, "_grid_block", lambda *a: calls.append(a[3:7]) or real(*a))
    x = np.random.default_rng(5).random((1, 2, 40, 40)).astype(np.float32)
    dx = da.from_array(x, chunks=(1, 2, 10, 10))
    affine = np.array([[0.9, -0.3, 4.0], [0.3, 0.9, -2.0]])
    lazy = fd.warp_affine(dx, affine, (60, 50), chunks=(7, 9))
    assert calls == []
    np.testing.assert_array_equal(lazy.compute(**SYNC), fi.warp_affine(x, affine, (60, 50)))
    calls.clear()
    horizon = np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.05, -1.0]])  # w = 0 at row 20
    with dask.config.set(scheduler="sync"):     # (in this process, where calls are counted)
        lazy = fd.warp_perspective(dx, horizon, (40, 40), inverse_map=True, chunks=(10, 10))
    assert sorted(calls) == [(20, 30, c, c + 10) for c in range(0, 40, 10)]
    np.testing.assert_array_equal(lazy.compute(**SYNC),
                                  fi.warp_perspective(x, horizon, (40, 40), inverse_map=True))


def _unknown_rows(a, axis, chunk):
    """``a`` (NumPy) as a dask array whose ``axis`` has unknown chunk sizes (boolean indexing)."""
    keep = da.from_array(np.arange(a.shape[axis]) % 3 != 0,
                         chunks=chunk[axis] if isinstance(chunk, tuple) else chunk)
    index = (slice(None),) * axis + (keep,)
    return da.from_array(a, chunks=chunk)[index]


_IMG = np.random.default_rng(0).standard_normal((2, 3, 12, 10)).astype(np.float32)


@pytest.mark.parametrize("call, name, axis", [
    (lambda h, n: fd.resize(h, size=(4, 4)), "input", 2),
    (lambda h, n: fd.resize(h[0, 0], size=(3, 3)), "input", 0),
    (lambda h, n: fd.adaptive_avg_pool2d(h, 3), "input", 2),
    (lambda h, n: fd.grid_sample(h, np.zeros((2, 4, 4, 2), np.float32)), "input", 2),
    (lambda h, n: fd.resize_backward(h, (2, 3, 16, 16)), "grad_output", 2),
    (lambda h, n: fd.adaptive_avg_pool2d_backward(h, (2, 3, 16, 16)), "grad_output", 2),
    (lambda h, n: fd.warp_affine(h, np.eye(2, 3), (5, 5)), "img", 2),
    (lambda h, n: fd.rotate(h, 10.0), "img", 2),
    (lambda h, n: fd.warp_affine(n, np.eye(2, 3), (5, 5)), "img", 0),
    (lambda h, n: fd.rotate(n, 10.0), "img", 0),
    (lambda h, n: fd.knn(_unknown_rows(np.ones((20, 4)), 0, 5), np.zeros((3, 4)), 2), "x", 0),
    (lambda h, n: fd.pairwise_sqdist(_unknown_rows(np.ones((20, 4)), 0, 5)), "x", 0),
    (lambda h, n: fd.pairwise_l2(np.ones((3, 4)), _unknown_rows(np.ones((20, 4)), 0, 5)),
     "y", 0),
    # a spatially chunked image with an unknown batch: the grid is split along its N
    (lambda h, n: fd.grid_sample(_unknown_rows(_IMG, 0, (1, 3, 4, 5)),
                                 np.zeros((1, 4, 4, 2), np.float32)), "input", 0),
    # unknown sizes in a second argument's other axes, or in a whole-array argument
    (lambda h, n: fd.grid_sample(da.from_array(_IMG, chunks=(1, 3, 12, 10)),
                                 _unknown_rows(np.zeros((2, 6, 4, 2), np.float32), 1,
                                               (1, 3, 4, 2))), "grid", 1),
    (lambda h, n: fd.slerp(np.ones((4, 6)), _unknown_rows(np.ones((4, 6)), 1, 2), 0.5),
     "b", 1),
    (lambda h, n: fd.slerp(np.ones((4, 6)), np.ones((4, 6)),
                           _unknown_rows(np.linspace(0, 1, 6), 0, 2), path=True), "t", 0),
    (lambda h, n: fd.slerp_backward(np.ones((4, 4, 6)), np.ones((4, 6)), np.ones((4, 6)),
                                    _unknown_rows(np.linspace(0, 1, 6), 0, 2), path=True),
     "t", 0),
    (lambda h, n: fd.affine_grid_backward(_unknown_rows(np.zeros((2, 6, 5, 2)), 1, (1, 2, 5, 2)),
                                          (2, 3, 4, 5)), "grad_grid", 1),
    (lambda h, n: fd.slerp(_unknown_rows(np.ones((4, 6)), 1, 2), np.ones((4, 4)), 0.5), "a", 1),
    (lambda h, n: fd.slerp_backward(np.ones((4, 4)), _unknown_rows(np.ones((4, 6)), 1, 2),
                                    np.ones((4, 4)), 0.5), "a", 1),
])
def test_unknown_chunk_sizes_are_a_clear_error_when_the_graph_is_built(call, name, axis):
    """Chunk sizes left unknown by boolean indexing, where an op needs them (an image's H
    and W, a warp's N, a database's rows), are a ValueError naming the argument and the
    fix, not a raw error from a stand-in."""
    h = da.from_array(_IMG, chunks=(1, 3, 4, 5))[:, :, da.from_array(np.arange(12) % 3 != 0,
                                                                    chunks=4)]
    n = _unknown_rows(_IMG, 0, (1, 3, 12, 10))
    with pytest.raises(ValueError, match=rf"has unknown chunk sizes along axis {axis} .*call "
                                         rf"{name}\.compute_chunk_sizes\(\) first"):
        call(h, n)


def test_an_empty_batch_in_several_empty_chunks_with_per_row_weights():
    """Dask leaves an empty array's chunks as they are when asked for more: a per-row t
    then referred to a block it does not have (a graph key reached slerp as t)."""
    a = da.zeros((0, 5), chunks=((0, 0), 5))
    t = np.zeros(0)
    got = compute(fd.slerp(a, a, t), *fd.slerp_backward(a, a, a, t))
    want = (fi.slerp(np.zeros((0, 5)), np.zeros((0, 5)), t),
            *fi.slerp_backward(np.zeros((0, 5)), np.zeros((0, 5)), np.zeros((0, 5)), t))
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype


@pytest.mark.parametrize("chunks", [(0, 1), (1, 0), (0, 0, 1, 0)])
def test_length_one_axes_split_with_empty_chunks(chunks):
    """One row split as (0, 1): Dask broadcast it block by block, so lerp and the pairwise
    distances returned a copy of the row per chunk ((2, 3) for a (1, 3) result)."""
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((2, 1, 3)).astype(np.float32)
    x, y = rng.standard_normal((1, 3)), rng.standard_normal((4, 3))
    dx = da.from_array(a, chunks=(chunks, 3))
    got = compute(fd.lerp(dx, b, 0.25), fd.lerp(dx, dx, da.from_array(np.float32([[0.5]]))),
                  fd.pairwise_sqdist(da.from_array(x, chunks=(chunks, 3)), y),
                  fd.pairwise_l2(y, da.from_array(x, chunks=(chunks, 3))))
    want = (fi.lerp(a, b, 0.25), fi.lerp(a, a, np.float32([[0.5]])), fi.pairwise_sqdist(x, y),
            fi.pairwise_l2(y, x))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    y_img = fd.resize(da.from_array(np.ones((1, 1, 8, 8), np.float32), chunks=(1, 1, 2, 8)),
                      size=(1, 8))
    assert compute(fd.lerp(y_img, y_img, 0.5))[0].shape == (1, 1, 1, 8)


def test_a_warp_of_a_volume_names_the_shapes_it_takes():
    with pytest.raises(ValueError, match=r"^warp_affine: img must be a batch \(N, C, H, W\), or "
                                         r"\(N, H, W, C\) with layout='NHWC'; got shape "
                                         r"\(1, 2, 3, 8, 8\)\.$"):
        fd.warp_affine(da.zeros((1, 2, 3, 8, 8)), np.eye(2, 3), (4, 4))


def test_unknown_batch_and_query_sizes_still_work():
    n = _unknown_rows(_IMG, 0, (1, 3, 12, 10))
    want = fi.resize(_IMG[np.arange(2) % 3 != 0], size=4)
    np.testing.assert_array_equal(fd.resize(n, size=4).compute(**SYNC), want)
    db = np.random.default_rng(1).standard_normal((20, 4))
    q = _unknown_rows(db, 0, 5)
    for block_bytes in (None, 0):       # 0: four database blocks, whose query groups
        got = fd.knn(da.from_array(db, chunks=5), q, 2, block_bytes=block_bytes)  # need sizes
        for g, w in zip(dask.compute(*got, **SYNC), fi.knn(db, db[np.arange(20) % 3 != 0], 2)):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("backward", [fd.resize_backward, fd.adaptive_avg_pool2d_backward])
def test_a_backward_of_unknown_batch_takes_a_full_input_size(backward):
    """input_size (N, C, H, W) next to a gradient whose N is unknown: its N cannot be
    checked against the blocks' (it was int(nan): 'cannot convert float NaN')."""
    g = _unknown_rows(_IMG, 0, (1, 3, 12, 10))
    want = getattr(fi, backward.__name__)(_IMG[np.arange(2) % 3 != 0], (1, 3, 16, 16))
    np.testing.assert_array_equal(backward(g, (1, 3, 16, 16)).compute(**SYNC), want)


def test_an_empty_argument_is_checked_against_the_whole_batch():
    """An empty ``t`` broadcasts against the zero-length stand-in batch that checks the
    arguments: it is checked against the real batch too, when the graph is built."""
    a = np.ones((3, 4))
    with pytest.raises(ValueError, match=r"slerp: t must broadcast to the batch shape \(3,\); "
                                         r"got \(0,\)\."):
        fd.slerp(da.from_array(a, chunks=1), a, np.zeros(0))
    empty = fd.slerp(da.from_array(a[:0], chunks=1), a[:0], np.zeros(0))
    assert empty.compute(**SYNC).shape == (0, 4)


def test_warps_differing_only_in_align_corners_or_match_do_not_share_a_grid():
    """The grid's graph layer was named by the matrix and sizes only: two warps differing
    in align_corners computed together shared one grid (the first's)."""
    x = np.random.default_rng(0).random((1, 1, 16, 16))
    dx = da.from_array(x, chunks=(1, 1, 8, 8))
    M = np.array([[0.9, -0.2, 0.1], [0.2, 0.9, 0.0]])
    calls = [dict(match="torch", align_corners=False), dict(match="torch", align_corners=True),
             dict(match="opencv")]
    lazy = [fd.warp_affine(dx, M, (12, 12), **kw) for kw in calls]
    for got, kw in zip(dask.compute(*lazy, **SYNC), calls):
        np.testing.assert_array_equal(got, fi.warp_affine(x, M, (12, 12), **kw))


@pytest.mark.parametrize("seed", range(6))
def test_near_singular_homographies_read_every_source_block_they_touch(seed):
    """Near the horizon u and w lose most of their digits to cancellation, so the points
    at a block's corners no longer bound its points to 1e-9: the bounds now widen by the
    rounding error of u / w (relative to the magnitudes summed into u and w), or leave
    the block to be computed when w's sign is not certain."""
    rng = np.random.default_rng(seed)
    x = rng.random((1, 1, 2, 400))
    a = rng.uniform(-1, 1)
    # row 0 nearly a multiple of row 2: x = u / w stays near a, by cancellation in both
    K = np.array([[a, a * rng.uniform(1e-16, 1e-15), a * 0.75 + rng.uniform(-1e-15, 1e-15)],
                  [0.0, 0.0, 0.0],
                  [1.0, rng.uniform(1e-16, 1e-15), 0.75 + rng.uniform(-1e-15, 1e-15)]])
    dx = da.from_array(x, chunks=(1, 1, 2, 50))
    got = fd.warp_perspective(dx, K, (16, 4), chunks=(16, 4), match="torch")
    np.testing.assert_array_equal(got.compute(**SYNC),
                                  fi.warp_perspective(x, K, (16, 4), match="torch"))
    if seed == 0:       # the reproducer: x = -0.648, spread to [-0.75, -0.625] by rounding
        K0 = np.array([[-0.648, -1.8353883370416778e-16, -0.4860000000000006], [0.0, 0.0, 0.0],
                       [1.0, 2.8323894090149347e-16, 0.7500000000000009]])
        got = fd.warp_perspective(dx, K0, (16, 4), chunks=(16, 4), match="torch")
        np.testing.assert_array_equal(got.compute(**SYNC),
                                      fi.warp_perspective(x, K0, (16, 4), match="torch"))


@pytest.mark.parametrize("chunks", [(0, 5), (-2, 5), ((3, 3), (8,)), "x", (4,), 2.5])
def test_bad_warp_chunks_are_a_value_error_naming_them(chunks):
    dx = da.ones((1, 1, 8, 8), chunks=4)
    with pytest.raises((ValueError, TypeError), match=r"^warp_affine: chunks must "):
        fd.warp_affine(dx, np.eye(2, 3), (8, 8), chunks=chunks)


@pytest.mark.parametrize("call", [
    lambda x: (fd if isinstance(x, da.Array) else fi).adaptive_avg_pool2d(x, 2),
    lambda x: (fd if isinstance(x, da.Array) else fi).adaptive_avg_pool2d(x, (3, 5)),
    lambda x: (fd if isinstance(x, da.Array) else fi).resize(x, size=(5, 3), mode="area"),
    lambda x: (fd if isinstance(x, da.Array) else fi).resize(x, size=(4, 4), mode="bilinear",
                                                               antialias=True),
])
@pytest.mark.parametrize("chunks", [(1, 1, 2, 2), (1, 2, 5, 7), (2, 3, 12, 1)])
def test_spatial_float32_means_near_the_largest_float32_are_the_in_memory_ones(call, chunks):
    """A mean of finite pixels near FLT_MAX is redone in float64 in memory (the float32
    weights' rounding took it past FLT_MAX to inf); the spatially chunked path skipped it."""
    rng = np.random.default_rng(5)
    big = np.finfo(np.float32).max
    x = (big * rng.uniform(0.98, 1.0, (2, 3, 12, 12))).astype(np.float32)
    x[0, 0] = big
    x[1, 2, :, :6] = -big
    x[1, 1, 3, 3] = np.inf
    want = call(x)
    got = call(da.from_array(x, chunks=chunks)).compute(**SYNC)
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(want[0, 0]).all()


@pytest.mark.parametrize("op, arg, call", [
    ("pairwise_sqdist", "x", lambda v: fd.pairwise_sqdist(v)),
    ("knn", "queries", lambda v: fd.knn(np.ones((3, 2)), v, 1)),
    ("slerp", "a", lambda v: fd.slerp(v, np.ones(3), 0.5)),
    ("resize", "input", lambda v: fd.resize(v, size=(2, 2))),
    ("adaptive_avg_pool2d", "input", lambda v: fd.adaptive_avg_pool2d(v, 2)),
    ("resize_backward", "grad_output", lambda v: fd.resize_backward(v, (1, 1, 4, 4))),
    ("warp_affine", "img", lambda v: fd.warp_affine(v, np.eye(2, 3), (3, 3))),
    ("rotate", "img", lambda v: fd.rotate(v, 3.0)),
    ("grid_sample", "grid", lambda v: fd.grid_sample(da.ones((1, 1, 4, 4), chunks=2), v)),
    ("affine_grid", "theta", lambda v: fd.affine_grid(v, (1, 1, 2, 2))),
])
@pytest.mark.parametrize("value", ["ab", [None, 1.0]], ids=repr)
def test_strings_and_objects_are_the_in_memory_type_error(op, arg, call, value):
    """They were read as 0-d arrays: errors named a shape () or a dtype <U2."""
    with pytest.raises(TypeError, match=rf"^{op}: {arg} must be a real number or an array of "
                                        rf"reals .*; got {type(value).__name__} "):
        call(value)


@pytest.mark.parametrize("op, arg, call", [
    ("pairwise_sqdist", "x", lambda m, v: m.pairwise_sqdist(v)),
    ("knn", "x", lambda m, v: m.knn(v, np.ones((3, 2)), 1)),
    ("slerp", "a", lambda m, v: m.slerp(v, np.ones(3), 0.5)),
    ("slerp_backward", "a", lambda m, v: m.slerp_backward(np.ones(3), v, np.ones(3), 0.5)),
    ("resize", "input", lambda m, v: m.resize(v, size=(2, 2))),
    ("adaptive_avg_pool2d", "input", lambda m, v: m.adaptive_avg_pool2d(v, 2)),
    ("resize_backward", "grad_output", lambda m, v: m.resize_backward(v, (1, 1, 4, 4))),
    ("warp_affine", "img", lambda m, v: m.warp_affine(v, np.eye(2, 3), (3, 3))),
    ("grid_sample", "input", lambda m, v: m.grid_sample(v, np.zeros((1, 2, 2, 2)))),
    ("affine_grid_backward", "grad_grid", lambda m, v: m.affine_grid_backward(v, (1, 1, 2, 2))),
])
@pytest.mark.parametrize("value", [1.5, 2, True], ids=repr)
def test_a_python_number_for_an_array_is_the_in_memory_type_error(op, arg, call, value):
    """It was read as a 0-d array: a ValueError about its shape () instead."""
    for module in (fd, fi):
        with pytest.raises(TypeError, match=rf"^{op}: {arg} must be an array; "
                                            rf"got {type(value).__name__}\.$"):
            call(module, value)


def test_subnormal_homographies_read_every_source_block_they_touch():
    """The same homography scaled into subnormals: its products lose absolute precision
    (underflow), which a purely relative error bound missed."""
    M = np.array([[8, -4, 2], [4, 8, -5], [1, 2, 2]]) * 5e-324
    x = np.random.default_rng(0).random((1, 1, 64, 64)).astype(np.float32)
    kw = dict(match="torch", align_corners=True)
    got = fd.warp_perspective(da.from_array(x, chunks=(1, 1, 4, 4)), M, (48, 48), chunks=(5, 7),
                              **kw)
    np.testing.assert_array_equal(got.compute(**SYNC), fi.warp_perspective(x, M, (48, 48), **kw))


def test_a_bfloat16_torch_tensor_is_read_through_dlpack():
    torch = pytest.importorskip("torch")
    x = torch.arange(8, dtype=torch.bfloat16).reshape(1, 1, 2, 4)
    got = fd.resize(x, size=(1, 2)).compute(**SYNC)
    np.testing.assert_array_equal(np.asarray(got, np.float32),
                                  fi.resize(x, size=(1, 2)).float().numpy())


def test_a_lerp_list_operand_that_does_not_broadcast_names_the_shapes():
    """The shapes in the message are the caller's (b was named (0,): the stand-in's)."""
    with pytest.raises(ValueError, match=r"lerp: shapes must broadcast together; got a \(3,\), "
                                         r"b \(4,\), t \(\)\."):
        fd.lerp([1.0, 2.0, 3.0], da.ones((4,), chunks=2), 0.5)


@pytest.mark.parametrize("shape, size, mode", [
    ((4, 2, 6), (4, 2, 3), "linear"),
    ((4, 2, 4, 6, 6), (4, 2, 2, 3, 3), "trilinear"),
])
def test_nd_resize_backward_takes_an_unknown_batch_size(shape, size, mode):
    """1-D and 3-D grad_output with unknown N (after boolean indexing): input_size's N was
    compared with nan, a false 'same N and C' error; 2-D data took it."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    lazy = da.from_array(x, chunks=(2,) + shape[1:])
    lazy = lazy[lazy[(slice(None),) + (0,) * (len(shape) - 1)] > -10]
    got = fd.resize_backward(lazy, size, mode=mode).compute(**SYNC)
    np.testing.assert_array_equal(got, fi.resize_backward(x, size, mode=mode))


@pytest.mark.parametrize("op", ["affine_grid", "affine_grid_backward"])
def test_affine_grid_with_an_unknown_batch_size_says_how_to_resolve_it(op):
    """The error read as a shape mismatch: 'theta must have N = size[0] = 4 rows ...;
    got shape (nan, 2, 3)'; every other op names compute_chunk_sizes."""
    arr = np.zeros((4, 2, 3)) if op == "affine_grid" else np.zeros((4, 5, 5, 2))
    lazy = da.from_array(arr, chunks=(2,) + arr.shape[1:])
    lazy = lazy[da.ones(4, chunks=2, dtype=bool)]
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        getattr(fd, op)(lazy, (4, 1, 5, 5))


def test_grid_sample_takes_the_in_memory_defaults_as_keywords():
    """layout=None (the in-memory default) was refused, and grid_sample_backward had no
    deterministic=: code forwarding the in-memory call's keywords broke."""
    rng = np.random.default_rng(2)
    x, grid = rng.standard_normal((2, 3, 6, 7)), rng.uniform(-1, 1, (2, 4, 5, 2))
    go = rng.standard_normal((2, 3, 4, 5))
    lazy = fd.grid_sample(da.from_array(x, chunks=(1, 3, 3, 7)), grid, layout=None)
    np.testing.assert_array_equal(lazy.compute(**SYNC), fi.grid_sample(x, grid, layout=None))
    grads = fd.grid_sample_backward(da.from_array(go, chunks=(1, 3, 4, 5)), x, grid,
                                    deterministic=True, layout=None)
    for got, want in zip(grads, fi.grid_sample_backward(go, x, grid, deterministic=True)):
        np.testing.assert_array_equal(got.compute(**SYNC), want)


@pytest.mark.parametrize("needs_ab, needs_t", [(True, False), (False, True), (False, False)])
@pytest.mark.parametrize("form", ["rows, batched t", "rows, shared t", "path"])
def test_slerp_backward_computes_only_the_gradients_asked_for(needs_ab, needs_t, form,
                                                              monkeypatch):
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((2, 9, 5))
    path = form == "path"
    t = {"rows, batched t": rng.random(9), "rows, shared t": 0.3,
         "path": np.linspace(0, 1, 4)}[form]
    g = rng.standard_normal((9, 4, 5) if path else (9, 5))
    flags = dict(needs_ab_grad=needs_ab, needs_t_grad=needs_t)
    expected = fi.slerp_backward(g, a, b, t, path=path, **flags)
    seen = []
    real = fi.slerp_backward
    monkeypatch.setattr(fi, "slerp_backward", lambda *args, **kw: seen.append(
        (kw["needs_ab_grad"], kw["needs_t_grad"])) or real(*args, **kw))
    lazy = fd.slerp_backward(da.from_array(g, chunks=(4,) + g.shape[1:]), a, b, t, path=path,
                             **flags)
    for got, want in zip(lazy, expected):
        if want is None:
            assert got is None
        else:
            np.testing.assert_allclose(got.compute(**SYNC), want, rtol=1e-12, atol=1e-15)
    assert seen and set(seen) == {(needs_ab, needs_t)}     # every block skips the rest


def test_an_empty_distance_or_knn_result_reads_no_block_of_the_other_operand():
    """No query (or no row of x): the result is empty and depends on no block of the
    database, which may be a large store on disk."""
    reads = []

    def block(block_info=None):
        reads.append(block_info[None]["chunk-location"])
        return np.ones(block_info[None]["chunk-shape"], np.float32)
    x = da.map_blocks(block, chunks=((4,) * 8, (16,)), dtype=np.float32,
                      meta=np.empty((0, 0), np.float32))
    none = da.zeros((0, 16), dtype=np.float32, chunks=(4, 16))
    results = [*fd.knn(x, none, 3), fd.knn(x, none, 3, return_distances=False),
               fd.pairwise_sqdist(none, x), fd.pairwise_l2(x, none)]
    shapes = [(0, 3), (0, 3), (0, 3), (0, 32), (32, 0)]
    for lazy, shape in zip(results, shapes):
        got = lazy.compute(**SYNC)
        assert got.shape == shape and got.dtype == lazy.dtype
    assert results[1].dtype == np.int64 and results[0].dtype == np.float32
    assert reads == []


@pytest.mark.parametrize("padding_mode", ["zeros", "constant"])
def test_a_warp_block_of_a_whole_slide_needs_no_memory_for_the_rest_of_it(padding_mode):
    """README's whole-slide rotate: a task places its window in a full-size zero source;
    that source (here 3 x 2**17 x 2**17 float32, 192 GiB) takes address space only (an
    allocation larger than the machine's memory was a MemoryError)."""
    n = 2**17
    img = da.ones((1, 3, n, n), chunks=(1, 3, 1024, 1024), dtype=np.float32)
    lazy = fd.rotate(img, 12.0, padding_mode=padding_mode,
                     fill=0.0 if padding_mode == "constant" else None)
    middle = lazy.blocks[0, 0, 64, 64].compute(**SYNC)
    assert middle.shape == (1, 3, 1024, 1024)
    np.testing.assert_allclose(middle, 1.0, rtol=1e-6)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [3 * 2**24, 2**31 - 7, 1000])
def test_a_warp_window_holds_the_taps_of_float32_coordinates(align_corners, size):
    """The source window of a grid block covers the bicubic taps (floor - 1 .. floor + 2)
    of every point as the float32 sampler computes its coordinate (a few ulps from the
    exact one: 3-4 px on an axis of 5e7 px, where a one-pixel allowance read zeros)."""
    from fastinterp.dask import _warp
    g = np.random.default_rng(size).uniform(-1, 1, 20000).astype(np.float32)
    scale = np.float32((size - 1) / 2 if align_corners else size / 2)
    shift = np.float32(0.0 if align_corners else 0.5)
    unfused = (g + np.float32(1)) * scale - shift                     # each step rounded
    fused = ((g.astype(np.float64) + 1) * np.float64(scale)
             - np.float64(shift)).astype(np.float32)                  # an FMA: once
    for block in np.array_split(np.sort(g), 40):
        lo, hi = _warp._axis_window(float(block.min()), float(block.max()), False, size,
                                    "zeros", align_corners, 2.0**-24)
        for p in (unfused, fused):
            sel = p[(g >= block.min()) & (g <= block.max())]
            taps = np.floor(sel.astype(np.float64))
            inside = (taps - 1 >= 0) & (taps + 2 < size)
            assert (taps[inside] - 1 >= lo).all() and (taps[inside] + 2 < hi).all()


_HALF = ["float16", "bfloat16"]


def _half_dtype(name):
    return np.dtype(name) if name == "float16" else np.dtype(pytest.importorskip("ml_dtypes").bfloat16)


@pytest.mark.parametrize("half", _HALF)
@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
def test_grid_sample_over_a_chunked_half_source_with_a_fill_is_bit_exact(half, mode):
    """A half source was sampled in half (the result rounded), then the fill added in half
    (rounded again): 16-107 values off the in-memory call, which rounds once; and every
    task widened its whole full-size source (693 MB for a 12k x 12k float16 image, 148 MB
    in float32)."""
    dt = _half_dtype(half)
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, (2, 3, 32, 40)).astype(dt)
    g = rng.uniform(-1.3, 1.3, (2, 12, 14, 2)).astype(dt)
    for kw in ({"padding_mode": "constant", "fill": [1.3, -2.1, 5.5]},
               {"padding_mode": "border"}, {}):
        got = fd.grid_sample(da.from_array(x, chunks=(1, 3, 16, 20)),
                             da.from_array(g, chunks=(1, 6, 7, 2)), mode=mode, **kw
                             ).compute(**SYNC)
        want = fi.grid_sample(x, g, mode=mode, **kw)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


def test_grid_sample_of_a_half_grid_on_a_wide_half_source_reads_the_right_window():
    """With a half image and a half grid the window allowed float64's rounding of the
    pixel coordinate, but the sampler computes in float32 (3 px off at 3.7e7 px): a tap
    read zeros (0 instead of 1)."""
    W, b = 50331642, 37748729
    x = da.ones((1, 1, 1, W), dtype=np.float16, chunks=(1, 1, 1, (b, W - b)))
    g = np.array([0.5, 0.0], np.float16).reshape(1, 1, 1, 2)
    assert fd.grid_sample(x, da.from_array(g)).compute(**SYNC)[0, 0, 0, 0] == 1


@pytest.mark.parametrize("half", _HALF)
def test_slerp_reads_a_list_t_in_float32_for_half_operands(half):
    dt = _half_dtype(half)
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((4, 3)).astype(dt) for _ in range(2))
    t = [0.1, 0.3, 0.7, 0.9001]
    got = fd.slerp(da.from_array(a, chunks=(2, 3)), b, t).compute(**SYNC)
    np.testing.assert_array_equal(got.view(np.uint16), fi.slerp(a, b, t).view(np.uint16))
    g = np.ones((4, 3), dt)
    for x, y in zip(fd.slerp_backward(da.from_array(g, chunks=(2, 3)), a, b, t),
                    fi.slerp_backward(g, a, b, t)):
        np.testing.assert_array_equal(x.compute(**SYNC).view(np.uint16), y.view(np.uint16))


@pytest.mark.parametrize("half", _HALF)
@pytest.mark.parametrize("t_kind", ["scalar", "half 0-d", "half steps"])
def test_slerp_backward_sums_a_shared_t_gradient_in_float32(half, t_kind):
    """Each block's gradient of a shared t was rounded to half and the partial sums added
    in half: 2-3 ulps off the in-memory gradient with 200 blocks (and growing with
    them). The partials stay in float32; the sum is rounded once."""
    dt = _half_dtype(half)
    rng = np.random.default_rng(5)
    a, b = (rng.standard_normal((2000, 3)).astype(dt) for _ in range(2))
    t = {"scalar": 0.3, "half 0-d": np.array(0.3, dt),
         "half steps": np.array([0.2, 0.7], dt)}[t_kind]
    path = t_kind == "half steps"
    g = rng.standard_normal((2000, 2, 3) if path else (2000, 3)).astype(dt)
    want = fi.slerp_backward(g, a, b, t, path=path)[2]
    got = fd.slerp_backward(da.from_array(g, chunks=(10,) + g.shape[1:]), a, b, t,
                            path=path)[2].compute(**SYNC)
    assert got.dtype == want.dtype and got.shape == want.shape
    ulp = np.abs(np.spacing(np.abs(want).astype(np.float32)))
    spacing = (np.abs(want.astype(np.float32)) * (2.0 ** -10 if half == "float16" else 2.0 ** -7))
    assert (np.abs(got.astype(np.float32) - want.astype(np.float32)) <= spacing + ulp).all()


@pytest.mark.parametrize("half", _HALF)
@pytest.mark.parametrize("t", [0.5, np.float32(0.5), np.int64(0), np.float64(0.5)], ids=repr)
def test_slerp_backward_of_a_number_t_of_any_type_equals_in_memory(half, t):
    """Blocks whose t gradients nearly cancel: with t a NumPy scalar other than float64
    or half, each block's gradient was rounded to half before the sum (bfloat16: 8.0
    where the in-memory gradient is 1.109)."""
    dt = _half_dtype(half)
    a = np.array([[1.0, 0.0, 0.0, 0.0]] * 2, dt)
    b = np.array([[0.0, 1.0, 0.0, 0.0]] * 2, dt)
    g = np.array([[1000.0, 3.0, 0.0, 0.0], [-1000.0, -2.0, 0.0, 0.0]], dt)
    got = fd.slerp_backward(*(da.from_array(v, chunks=(1, 4)) for v in (g, a, b)), t)[2]
    want = fi.slerp_backward(g, a, b, t)[2]
    got = got.compute(**SYNC)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


def test_slerp_backward_with_half_operands_takes_a_torch_t():
    torch = pytest.importorskip("torch")
    dt = _half_dtype("bfloat16")
    rng = np.random.default_rng(6)
    a, b = (rng.standard_normal((40, 3)).astype(dt) for _ in range(2))
    g = rng.standard_normal((40, 3)).astype(dt)
    t = torch.tensor(0.3, dtype=torch.bfloat16)
    got = fd.slerp_backward(da.from_array(g, chunks=(10, 3)), a, b, t)[2].compute(**SYNC)
    want = fi.slerp_backward(g, a, b, t)[2].float().numpy()      # (a torch result)
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=2.0 ** -7)


@pytest.mark.parametrize("operand", [2, 0, 1])
def test_lerp_takes_torch_operands_and_weights(operand):
    """A torch t (and a torch a or b beside NumPy ones) failed while building the graph
    ("Cannot interpret 'torch.float32' as a data type"); slerp took them."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    args = [rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.random((4, 3))]
    args[operand] = torch.from_numpy(args[operand])
    args[0] = da.from_array(args[0], chunks=(2, 3)) if operand != 0 else args[0]
    got = fd.lerp(*args).compute(**SYNC)
    want = fi.lerp(*[a.compute() if isinstance(a, da.Array) else a for a in args])
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    got = fd.lerp(args[0], args[1], torch.tensor(0.25, dtype=torch.float64)).compute(**SYNC)
    want = fi.lerp(*[np.asarray(a) for a in args[:2]], 0.25)
    np.testing.assert_array_equal(np.asarray(got), want)


_PICKLED_GRAPHS = {
    "affine_grid": lambda th, x, g, p, a: fd.affine_grid(th, (4, 2, 8, 8)),
    "affine_grid_backward": lambda th, x, g, p, a: fd.affine_grid_backward(
        fd.affine_grid(th, (4, 2, 8, 8)), (4, 2, 8, 8)),
    "slerp_backward": lambda th, x, g, p, a: fd.slerp_backward(a, a, a[::-1], 0.3)[2],
    "pairwise_sqdist": lambda th, x, g, p, a: fd.pairwise_sqdist(p, a),
    "pairwise_l2": lambda th, x, g, p, a: fd.pairwise_l2(p),
    "grid_sample": lambda th, x, g, p, a: fd.grid_sample(x, g),
    "knn": lambda th, x, g, p, a: fd.knn(p, a, 3)[1],
}


@pytest.mark.parametrize("name", list(_PICKLED_GRAPHS))
def test_graphs_pickle_with_the_standard_pickle(name):
    """Task functions were closures for affine_grid(_backward), slerp_backward and the
    distances: pickle.dumps of those graphs failed (only cloudpickle took them)."""
    import pickle
    rng = np.random.default_rng(0)
    th = da.from_array(np.tile(np.eye(2, 3, dtype=np.float32), (4, 1, 1)), chunks=(2, 2, 3))
    x = da.from_array(rng.random((4, 2, 16, 16), dtype=np.float32), chunks=(2, 2, 16, 16))
    g = da.from_array(rng.uniform(-1, 1, (4, 8, 8, 2)).astype(np.float32), chunks=(2, 8, 8, 2))
    p = da.from_array(rng.random((100, 8)), chunks=(30, 8))
    a = da.from_array(rng.random((10, 8)), chunks=(5, 8))
    lazy = _PICKLED_GRAPHS[name](th, x, g, p, a)
    back = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_array_equal(back.compute(scheduler="sync"), lazy.compute(scheduler="sync"))



@pytest.mark.parametrize("op", ["slerp", "slerp_backward"])
def test_slerp_path_given_as_an_array_is_the_in_memory_type_error(op):
    """bool(path) ran before the in-memory op checked path: NumPy's 'truth value of an
    array is ambiguous' ValueError, naming neither the function nor the argument."""
    a = da.from_array(np.random.default_rng(0).random((4, 3)), chunks=(2, 3))
    t = np.linspace(0, 1, 4)             # (a scalar t reached the in-memory check first)
    args = (a, a, a[::-1], t) if op == "slerp_backward" else (a, a[::-1], t)
    with pytest.raises(TypeError, match=rf"^{op}: path must be a bool"):
        getattr(fd, op)(*args, path=np.array([True, False]))
