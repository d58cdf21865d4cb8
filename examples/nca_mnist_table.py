"""The "kNN on MNIST" table: 5-NN on raw pixels vs on a 32-D NCA projection.

An MNIST-shaped workload built offline (``fastinterp.demos.models.mnist_like``:
60,000 + 10,000 images of 28x28 float32 from scikit-learn's digits, upsampled
and augmented). For the raw 784 pixels and for NCA's 32-D embedding it prints
the 5-NN test error, the search time (``fastinterp.knn``, the whole test set),
the storage of the searched set, and NCA's fit time and peak memory (the rise
of the process's resident set during ``fit``), as a markdown table.

    python examples/nca_mnist_table.py [--threads 2] [--n-train 60000] [--n-test 10000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fastinterp as fi
from fastinterp.demos.models import mnist_like
from fastinterp.models import NCA


def rss_peak_reset():
    """Reset the kernel's peak-RSS mark (Linux); returns the current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status("VmRSS")


def _status(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rise(before):
    """Peak RSS since :func:`rss_peak_reset` minus the RSS then, in bytes (0 if unknown)."""
    return max(0, _status("VmHWM") - before)


def knn_error(train, ytr, test, yte, k=5):
    """(error, seconds) of the majority vote of the k nearest training rows."""
    start = time.perf_counter()
    idx = fi.knn(train, test, k, return_distances=False)
    took = time.perf_counter() - start
    votes = np.zeros((len(test), int(ytr.max()) + 1), np.int64)
    np.add.at(votes, (np.arange(len(test))[:, None], ytr[idx]), 1)
    return float(np.mean(votes.argmax(axis=1) != yte)), took


def mb(nbytes):
    return f"{nbytes / 2**20:.1f} MB"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=60_000)
    ap.add_argument("--n-test", type=int, default=10_000)
    ap.add_argument("--components", type=int, default=32)
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits
    fi.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        return _table(args)


def _table(args):
    Xtr, ytr, Xte, yte = mnist_like(args.n_train, args.n_test)
    NCA(args.components, max_iter=1).fit(Xtr[:512], ytr[:512])     # warm-up: imports
    raw_err, raw_t = knn_error(Xtr, ytr, Xte, yte)

    before = rss_peak_reset()
    start = time.perf_counter()
    nca = NCA(args.components, random_state=0).fit(Xtr, ytr)
    fit_t = time.perf_counter() - start
    fit_mem = peak_rise(before)
    start = time.perf_counter()
    Ztr, Zte = nca.transform(Xtr), nca.transform(Xte)
    embed_t = time.perf_counter() - start
    nca_err, nca_t = knn_error(Ztr, ytr, Zte, yte)

    n, d, k = Xtr.shape[0], Xtr.shape[1], args.components
    print(f"MNIST-shaped data: {n} train / {len(Xte)} test images of {d} float32 pixels, "
          f"{args.threads} threads\n")
    print("| representation | 5-NN test error | search time (all test queries) | storage "
          "| NCA fit time | NCA fit peak memory |")
    print("|---|---|---|---|---|---|")
    print(f"| raw pixels ({d}-D) | {raw_err:.2%} | {raw_t:.2f} s | {mb(Xtr.nbytes)} | - | - |")
    print(f"| NCA ({k}-D) | {nca_err:.2%} | {nca_t:.2f} s (+ {embed_t:.2f} s to embed) "
          f"| {mb(Ztr.nbytes)} (+ {mb(nca.components_.nbytes)} map) "
          f"| {fit_t:.1f} s ({nca.n_iter_} epochs) | {mb(fit_mem)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
