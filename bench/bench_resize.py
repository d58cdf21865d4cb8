"""Benchmarks: resize / adaptive_avg_pool2d and their backwards vs torch and OpenCV.

Run with ``make bench`` (all families) or
``python -m pytest bench/bench_resize.py --benchmark-min-rounds=5``.

Data: a batch (8, 3, 512, 512) float32 (NCHW for fastinterp and torch; the
same pixels as eight 512x512x3 HWC images for ``cv2.resize``, which takes
one image per call, so its row is a loop over the batch), and feature maps
(16, 64, 112, 112) for adaptive pooling. Every library runs with the same
thread count (bench/conftest.py: 2, or FASTINTERP_BENCH_THREADS).
Each call allocates its output, as users call these functions: torch and
OpenCV fault in fresh memory for it (large for the 100 MB outputs of the
1024x1024 upscales), fastinterp gets the previous result's freed block back
from its result-memory cache (README, "Result memory"). The
``fastinterp (out=)`` rows write into one preallocated output. ``fastinterp (NHWC)`` rows run
fastinterp on the HWC data that OpenCV gets.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastinterp as fi

BATCH = (8, 3, 512, 512)
POOL = (16, 64, 112, 112)
# Thread counts: bench/conftest.py pins every library to FASTINTERP_BENCH_THREADS (2).


@pytest.fixture(scope="module")
def images():
    x = np.random.default_rng(0).random(BATCH, dtype=np.float32)
    return x, np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def feature_maps():
    return np.random.default_rng(1).standard_normal(POOL, dtype=np.float32)


def _label(benchmark, group, library):
    benchmark.group = group
    benchmark.extra_info["library"] = library


# (group, fastinterp kwargs, torch kwargs, cv2 interpolation name or None)
FORWARD = [
    ("resize bilinear: (8,3,512,512) -> 1024x1024", dict(size=1024),
     dict(size=1024, mode="bilinear"), "INTER_LINEAR"),
    ("resize nearest: (8,3,512,512) -> 1024x1024", dict(size=1024, mode="nearest"),
     dict(size=1024, mode="nearest"), "INTER_NEAREST"),
    ("resize bilinear: (8,3,512,512) -> 256x256", dict(size=256),
     dict(size=256, mode="bilinear"), "INTER_LINEAR"),
    ("resize area: (8,3,512,512) -> 256x256", dict(size=256, mode="area"),
     dict(size=256, mode="area"), "INTER_AREA"),
    ("resize area: (8,3,512,512) -> 128x128", dict(size=128, mode="area"),
     dict(size=128, mode="area"), "INTER_AREA"),
    ("resize bilinear antialias: (8,3,512,512) -> 128x128", dict(size=128, antialias=True),
     dict(size=128, mode="bilinear", antialias=True), None),
]
IDS = [g.split(":")[0].replace(" ", "-") + "-" + g.split("-> ")[1] for g, *_ in FORWARD]


@pytest.mark.parametrize("group, fi_kw, torch_kw, cv2_name", FORWARD, ids=IDS)
def test_resize_fastinterp(benchmark, images, group, fi_kw, torch_kw, cv2_name):
    _label(benchmark, group, "fastinterp")
    benchmark(fi.resize, images[0], **fi_kw)


@pytest.mark.parametrize("group, fi_kw, torch_kw, cv2_name", FORWARD, ids=IDS)
def test_resize_fastinterp_out(benchmark, images, group, fi_kw, torch_kw, cv2_name):
    out = fi.resize(images[0], **fi_kw)
    _label(benchmark, group, "fastinterp (out=)")
    benchmark(fi.resize, images[0], out=out, **fi_kw)


@pytest.mark.parametrize("group, fi_kw, torch_kw, cv2_name", FORWARD, ids=IDS)
def test_resize_fastinterp_nhwc(benchmark, images, group, fi_kw, torch_kw, cv2_name):
    if cv2_name is None:
        pytest.skip("no OpenCV peer for this workload")
    _label(benchmark, group, "fastinterp (NHWC)")
    benchmark(fi.resize, images[1], layout="NHWC", **fi_kw)


@pytest.mark.parametrize("group, fi_kw, torch_kw, cv2_name", FORWARD, ids=IDS)
def test_resize_torch(benchmark, images, group, fi_kw, torch_kw, cv2_name):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    x = torch.from_numpy(images[0])
    _label(benchmark, group, "torch")
    benchmark(F.interpolate, x, **torch_kw)


@pytest.mark.parametrize("group, fi_kw, torch_kw, cv2_name", FORWARD, ids=IDS)
def test_resize_cv2(benchmark, images, group, fi_kw, torch_kw, cv2_name):
    cv2 = pytest.importorskip("cv2")
    if cv2_name is None:
        pytest.skip("OpenCV has no antialiased bilinear filter")
    size = fi_kw["size"]
    interp = getattr(cv2, cv2_name)
    hwc = images[1]

    def loop():
        return [cv2.resize(img, (size, size), interpolation=interp) for img in hwc]

    _label(benchmark, group, "cv2")
    benchmark(loop)


# ----------------------------------------------------------------------- adaptive pooling

POOL_GROUP = "adaptive_avg_pool2d: (16,64,112,112) -> 7x7"
POOL_BWD_GROUP = "adaptive_avg_pool2d_backward: 7x7 -> (16,64,112,112)"


def test_pool_fastinterp(benchmark, feature_maps):
    _label(benchmark, POOL_GROUP, "fastinterp")
    benchmark(fi.adaptive_avg_pool2d, feature_maps, 7)


def test_pool_torch(benchmark, feature_maps):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    _label(benchmark, POOL_GROUP, "torch")
    benchmark(F.adaptive_avg_pool2d, torch.from_numpy(feature_maps), 7)


def test_pool_backward_fastinterp(benchmark, feature_maps):
    g = np.ones(POOL[:2] + (7, 7), np.float32)
    _label(benchmark, POOL_BWD_GROUP, "fastinterp")
    benchmark(fi.adaptive_avg_pool2d_backward, g, POOL)


def test_pool_backward_torch(benchmark, feature_maps):
    torch = pytest.importorskip("torch")
    g = torch.ones(POOL[:2] + (7, 7))
    x = torch.from_numpy(feature_maps)
    _label(benchmark, POOL_BWD_GROUP, "torch")
    benchmark(torch.ops.aten._adaptive_avg_pool2d_backward, g, x)


# ----------------------------------------------------------------------- bilinear backward

BWD_GROUP = "resize_backward bilinear: 1024x1024 -> (8,3,512,512)"


@pytest.fixture(scope="module")
def grad_1024():
    return np.random.default_rng(2).standard_normal(BATCH[:2] + (1024, 1024), dtype=np.float32)


def test_backward_fastinterp(benchmark, grad_1024):
    _label(benchmark, BWD_GROUP, "fastinterp")
    benchmark(fi.resize_backward, grad_1024, BATCH, mode="bilinear")


def test_backward_torch(benchmark, grad_1024):
    torch = pytest.importorskip("torch")
    g = torch.from_numpy(grad_1024)
    _label(benchmark, BWD_GROUP, "torch")
    benchmark(torch.ops.aten.upsample_bilinear2d_backward, g, [1024, 1024], list(BATCH), False)


# ----------------------------------------------------------------------- volumes and 1-D

VOL = (2, 16, 48, 48, 48)
TRI_GROUP = "resize trilinear: (2,16,48,48,48) -> 80^3"
POOL3D_GROUP = "adaptive_avg_pool3d: (2,16,48,48,48) -> 7^3"
LIN_GROUP = "resize linear: (16,64,4096) -> 6000"


@pytest.fixture(scope="module")
def volumes():
    return np.random.default_rng(3).standard_normal(VOL, dtype=np.float32)


@pytest.fixture(scope="module")
def signals():
    return np.random.default_rng(4).standard_normal((16, 64, 4096), dtype=np.float32)


def test_trilinear_fastinterp(benchmark, volumes):
    _label(benchmark, TRI_GROUP, "fastinterp")
    benchmark(fi.resize, volumes, size=(80, 80, 80), mode="trilinear")


def test_trilinear_torch(benchmark, volumes):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    _label(benchmark, TRI_GROUP, "torch")
    benchmark(F.interpolate, torch.from_numpy(volumes), size=(80, 80, 80), mode="trilinear")


def test_pool3d_fastinterp(benchmark, volumes):
    _label(benchmark, POOL3D_GROUP, "fastinterp")
    benchmark(fi.adaptive_avg_pool3d, volumes, 7)


def test_pool3d_torch(benchmark, volumes):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    _label(benchmark, POOL3D_GROUP, "torch")
    benchmark(F.adaptive_avg_pool3d, torch.from_numpy(volumes), 7)


def test_linear_fastinterp(benchmark, signals):
    _label(benchmark, LIN_GROUP, "fastinterp")
    benchmark(fi.resize, signals, size=6000, mode="linear")


def test_linear_torch(benchmark, signals):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    _label(benchmark, LIN_GROUP, "torch")
    benchmark(F.interpolate, torch.from_numpy(signals), size=6000, mode="linear")


# ----------------------------------------------------------------------- uint8 photos

# A 1920x1080 RGB uint8 frame (HWC, as PIL / OpenCV / video decoders give it),
# resized by fastinterp (layout="HWC"; match="opencv" for the OpenCV rows'
# arithmetic, match="pil" against Pillow), cv2.resize and Pillow's Image.resize.
# Plain rows allocate their output on every call (cv2.resize and Image.resize
# do too); the "(out=)" and "cv2 (dst=)" rows write into a preallocated one,
# which leaves out the allocation and first touch of the output (25 MB for
# the 3840x2160 upscale).
PHOTO = (1080, 1920, 3)
UINT8 = [
    ("uint8 bilinear: 1920x1080x3 -> 960x540", (540, 960), "bilinear", "INTER_LINEAR", "BILINEAR"),
    ("uint8 bilinear: 1920x1080x3 -> 3840x2160", (2160, 3840), "bilinear", "INTER_LINEAR",
     "BILINEAR"),
    ("uint8 area: 1920x1080x3 -> 960x540", (540, 960), "area", "INTER_AREA", "BOX"),
    ("uint8 area: 1920x1080x3 -> 640x360", (360, 640), "area", "INTER_AREA", "BOX"),
    ("uint8 area: 1920x1080x3 -> 901x487", (487, 901), "area", "INTER_AREA", "BOX"),
]
U8_IDS = ["uint8-" + g.split(":")[0].split()[1] + "-" + g.split("-> ")[1] for g, *_ in UINT8]


@pytest.fixture(scope="module")
def photo():
    return np.random.default_rng(3).integers(0, 256, PHOTO, dtype=np.uint8)


@pytest.mark.parametrize("match", ["opencv", "pil", "torch"])
@pytest.mark.parametrize("group, size, mode, cv2_name, pil_name", UINT8, ids=U8_IDS)
def test_uint8_fastinterp(benchmark, photo, group, size, mode, cv2_name, pil_name, match):
    # the match='opencv' row is the group's reference for the report's ratios
    _label(benchmark, group, "fastinterp" if match == "opencv" else f"fastinterp (match={match!r})")
    benchmark(fi.resize, photo, size=size, mode=mode, layout="HWC", match=match)


@pytest.mark.parametrize("group, size, mode, cv2_name, pil_name", UINT8, ids=U8_IDS)
def test_uint8_fastinterp_out(benchmark, photo, group, size, mode, cv2_name, pil_name):
    out = np.empty(size + (3,), np.uint8)
    _label(benchmark, group, "fastinterp (match='opencv', out=)")
    benchmark(fi.resize, photo, size=size, mode=mode, layout="HWC", match="opencv", out=out)


@pytest.mark.parametrize("group, size, mode, cv2_name, pil_name", UINT8, ids=U8_IDS)
def test_uint8_cv2(benchmark, photo, group, size, mode, cv2_name, pil_name):
    cv2 = pytest.importorskip("cv2")
    _label(benchmark, group, "cv2")
    benchmark(cv2.resize, photo, size[::-1], interpolation=getattr(cv2, cv2_name))


@pytest.mark.parametrize("group, size, mode, cv2_name, pil_name", UINT8, ids=U8_IDS)
def test_uint8_cv2_dst(benchmark, photo, group, size, mode, cv2_name, pil_name):
    cv2 = pytest.importorskip("cv2")
    dst = np.empty(size + (3,), np.uint8)
    _label(benchmark, group, "cv2 (dst=)")
    benchmark(cv2.resize, photo, size[::-1], dst=dst, interpolation=getattr(cv2, cv2_name))


@pytest.mark.parametrize("group, size, mode, cv2_name, pil_name", UINT8, ids=U8_IDS)
def test_uint8_pil(benchmark, photo, group, size, mode, cv2_name, pil_name):
    Image = pytest.importorskip("PIL.Image")
    img = Image.fromarray(photo)
    _label(benchmark, group, "Pillow")
    benchmark(img.resize, size[::-1], getattr(Image, pil_name))
