"""Two threads never slower than one: each op timed in fresh processes.

OpenMP start-up effects (thread creation, the first wake-ups of the team,
where the scheduler puts the threads) differ from process to process, so a
single long-lived benchmark process can hide them. This script starts
``--procs`` fresh Python processes per (op, thread count); each one builds
the op's inputs, warms up, times ``--reps`` calls and prints its median. The
report gives, per op and thread count, the median over processes and the
range (min..max) of the per-process medians, and the ratio t(1)/t(2).

Run: ``python bench/threads_fresh.py [--ops adam,sgd] [--procs 10] [--reps 30]
[--env FASTINTERP_TEAM_CONTROL=0]``.

``--compare KEY=A,B`` times two settings of one environment variable instead
of two thread counts, both at ``--threads`` (default 2), interleaved the same
way; e.g. ``--compare FASTINTERP_CPU_VARIANT=x86_64_v3,native`` measures the
portable kernel variant against a ``-march=native`` build (ratio t(A)/t(B)).
It is a benchmark, not a test: on a shared or loaded machine the numbers are
noisy, so look at the medians and the spread together.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def _optim(cls_name, **kw):
    def make():
        from fastinterp import optim
        rng = np.random.default_rng(0)
        p = rng.standard_normal(10_000_000, dtype=np.float32)
        g = [rng.standard_normal(10_000_000, dtype=np.float32) * np.float32(1e-2)]
        opt = getattr(optim, cls_name)([p], **kw)
        return lambda: opt.step(g)
    return make


def _lerp():
    import fastinterp as fi
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(16_000_000, dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    return lambda: fi.lerp(a, b, 0.3, out=out)


def _slerp():
    import fastinterp as fi
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((16_384, 512), dtype=np.float32) for _ in range(2))
    t = rng.random(16_384, dtype=np.float32)
    return lambda: fi.slerp(a, b, t)


def _grid_sample():
    import fastinterp as fi
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 128, 128), dtype=np.float32)
    grid = rng.uniform(-1, 1, (4, 128, 128, 2)).astype(np.float32)
    return lambda: fi.grid_sample(x, grid)


def _grid_sample_bwd():
    import fastinterp as fi
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 128, 128), dtype=np.float32)
    grid = rng.uniform(-1, 1, (4, 128, 128, 2)).astype(np.float32)
    go = rng.standard_normal((4, 32, 128, 128), dtype=np.float32)
    return lambda: fi.grid_sample_backward(go, x, grid)


def _resize():
    import fastinterp as fi
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 512, 512), dtype=np.float32)
    return lambda: fi.resize(x, size=(768, 768), mode="bilinear")


def _volume_inputs():
    import fastinterp as fi
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 48, 48, 48), dtype=np.float32)
    theta = (np.eye(3, 4) + 0.05 * rng.standard_normal((2, 3, 4))).astype(np.float32)
    return x, fi.affine_grid(theta, x.shape)


def _grid_sample_3d():
    import fastinterp as fi
    x, grid = _volume_inputs()
    return lambda: fi.grid_sample(x, grid)


def _grid_sample_3d_bwd():
    import fastinterp as fi
    x, grid = _volume_inputs()
    go = np.ones_like(x)
    return lambda: fi.grid_sample_backward(go, x, grid)


def _resize_uint8():
    import fastinterp as fi
    img = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    return lambda: fi.resize(img, (2160, 3840), layout="HWC", match="opencv")


def _sqdist():
    import fastinterp as fi
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2048, 128), dtype=np.float32)
    y = rng.standard_normal((4096, 128), dtype=np.float32)
    return lambda: fi.pairwise_sqdist(x, y)


def _knn():
    import fastinterp as fi
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8192, 64), dtype=np.float32)
    q = rng.standard_normal((1024, 64), dtype=np.float32)
    return lambda: fi.knn(x, q, 10)


OPS = {
    "adam": _optim("Adam", lr=1e-3),
    "sgd": _optim("SGD", lr=1e-3, momentum=0.9),
    "lerp": _lerp,
    "slerp": _slerp,
    "grid_sample": _grid_sample,
    "grid_sample_backward": _grid_sample_bwd,
    "resize": _resize,
    "resize_uint8": _resize_uint8,
    "grid_sample_3d": _grid_sample_3d,
    "grid_sample_3d_backward": _grid_sample_3d_bwd,
    "pairwise_sqdist": _sqdist,
    "knn": _knn,
}


def child(op: str, threads: int, reps: int) -> None:
    """Time one op in this (fresh) process; print the median seconds."""
    import fastinterp as fi
    fi.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:  # pragma: no cover
        pass
    fn = OPS[op]()
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    print(statistics.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--procs", type=int, default=10)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="set in the child processes only, e.g. FASTINTERP_TEAM_CONTROL=0 "
                         "or OMP_PROC_BIND=true, to compare settings")
    ap.add_argument("--compare", metavar="KEY=A,B",
                    help="time two values of one environment variable at --threads")
    ap.add_argument("--threads", type=int, default=2, help="with --compare")
    ap.add_argument("--child", nargs=2, metavar=("OP", "THREADS"))
    args = ap.parse_args()
    env = {**os.environ, **dict(kv.split("=", 1) for kv in args.env)}
    if args.child:
        child(args.child[0], int(args.child[1]), args.reps)
        return
    settings = _settings(args.compare, args.threads)
    ratio_name = "t1/t2" if args.compare is None else "tA/tB"
    print(f"{'op':<22} " + " ".join(f"{label + ' ms (range)':>24}" for label, _, _ in settings)
          + f" {ratio_name:>6}")
    for op in args.ops.split(","):
        meds: dict[str, list[float]] = {}
        for _ in range(args.procs):
            for label, threads, extra in settings:  # interleaved: drifting load hits both
                r = subprocess.run([sys.executable, __file__, "--child", op, str(threads),
                                    "--reps", str(args.reps)],
                                   capture_output=True, text=True, env={**env, **extra})
                if r.returncode != 0:      # the child's own error, not just its status
                    raise SystemExit(f"threads_fresh: {op} with {label} failed:\n{r.stderr}")
                meds.setdefault(label, []).append(float(r.stdout.split()[-1]) * 1e3)
        first, second = (meds[label] for label, _, _ in settings)
        cols = [f"{statistics.median(m):7.2f} ({min(m):6.2f}..{max(m):6.2f})"
                for m in (first, second)]
        ratio = statistics.median(first) / statistics.median(second)
        print(f"{op:<22} {cols[0]:>24} {cols[1]:>24} {ratio:6.2f}", flush=True)


def _settings(compare: str | None, threads: int) -> list[tuple[str, int, dict[str, str]]]:
    """(label, thread count, extra environment) of the two columns."""
    if compare is None:
        return [("1 thread", 1, {}), ("2 threads", 2, {})]
    key, _, values = compare.partition("=")
    pair = values.split(",")
    if not key or len(pair) != 2:
        raise SystemExit(f"--compare must look like KEY=A,B; got {compare!r}.")
    return [(value, threads, {key: value}) for value in pair]


if __name__ == "__main__":
    main()
