"""The "kNN on MNIST" table: 5-NN on raw pixels vs on a 32-D NCA projection.

An MNIST-shaped workload built offline (``fastinterp.demos.models.mnist_like``:
60,000 + 10,000 images of 28x28 float32 from scikit-learn's digits, upsampled
and augmented). For the raw 784 pixels and for NCA's 32-D embedding it prints
the 5-NN test error, the search time (``fastinterp.knn``, the whole test set),
the storage of the searched set, and NCA's fit time (wall clock, and CPU time
of all threads) and peak memory (the most memory allocated at once during
``fit``, by tracemalloc), as a markdown table.

    python examples/nca_mnist_table.py [--threads 2] [--n-train 60000] [--n-test 10000]
                                       [--batch-sizes 256 1024]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fastinterp as fi
from fastinterp.demos.models import PeakMemory, mnist_like
from fastinterp.models import NCA


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
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024],
                    help="one NCA row per minibatch size")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits
    fi.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        return _table(args)


def _table(args):
    Xtr, ytr, Xte, yte = mnist_like(args.n_train, args.n_test)
    NCA(args.components, max_iter=1).fit(Xtr[:512], ytr[:512])     # warm-up: imports
    raw_err, raw_t = knn_error(Xtr, ytr, Xte, yte)

    n, d, k = Xtr.shape[0], Xtr.shape[1], args.components
    print(f"MNIST-shaped data: {n} train / {len(Xte)} test images of {d} float32 pixels, "
          f"{args.threads} threads\n")
    print("| representation | 5-NN test error | search time (all test queries) | storage "
          "| NCA fit time | NCA fit peak memory |")
    print("|---|---|---|---|---|---|")
    print(f"| raw pixels ({d}-D) | {raw_err:.2%} | {raw_t:.2f} s | {mb(Xtr.nbytes)} | - | - |")
    for batch in args.batch_sizes:
        print(_nca_row(args, batch, Xtr, ytr, Xte, yte), flush=True)
    return 0


def _nca_row(args, batch, Xtr, ytr, Xte, yte):
    """One table row: NCA with minibatches of ``batch`` anchors, fitted and searched."""
    with PeakMemory() as mem:
        start, cpu = time.perf_counter(), time.process_time()
        nca = NCA(args.components, batch_size=batch, random_state=0).fit(Xtr, ytr)
        fit_t, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    Ztr, Zte = nca.transform(Xtr), nca.transform(Xte)
    embed_t = time.perf_counter() - start
    err, search_t = knn_error(Ztr, ytr, Zte, yte)
    return (f"| NCA ({args.components}-D, batch {batch}) | {err:.2%} | {search_t:.2f} s "
            f"(+ {embed_t:.2f} s to embed) | {mb(Ztr.nbytes)} (+ {mb(nca.components_.nbytes)} "
            f"map) | {fit_t:.1f} s ({fit_cpu:.1f} s CPU, {nca.n_iter_} epochs) | {mb(mem.peak)} |")


if __name__ == "__main__":
    raise SystemExit(main())
