"""Train a spatial transformer network on distorted scikit-learn digits, twice.

The same model, from the same seed, with the same data and batch order, is
trained once with ``fastinterp.torch.affine_grid`` + ``fastinterp.torch.grid_sample``
as its sampler and once with torch's ``F.affine_grid`` + ``F.grid_sample``.
The script prints both test accuracies (they agree within a point), the
median time of one training step (batch 64: forward, backward, Adam), and
saves a picture of test inputs and the transformer's rectified views of them.

The data, model and training loop live in ``fastinterp/demos/stn.py`` (the
demo runs a small version of this script: ``python -m fastinterp demo``).

Usage::

    python examples/stn_digits.py [--epochs 12] [--copies 5] [--threads 2] [--out stn_digits.png]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from fastinterp.demo import at_least_one


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=at_least_one, default=12,
                        help="training epochs (default 12)")
    parser.add_argument("--copies", type=at_least_one, default=5,
                        help="random distortions of each training digit (default 5)")
    parser.add_argument("--test-copies", type=at_least_one, default=10,
                        help="random distortions of each test digit (default 10)")
    parser.add_argument("--threads", type=at_least_one, default=2,
                        help="threads for torch and fastinterp (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="stn_digits.png",
                        help="the picture's file (PNG; .png is added to a name without a suffix)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not args.out.strip() or out.is_dir():
        parser.error(f"argument --out: expected a file name, such as stn_digits.png; got "
                     f"{args.out!r}{' (a folder)' if args.out.strip() else ''}.")
    out = out if out.suffix else out.with_suffix(".png")    # as matplotlib writes it
    try:            # now, not after minutes of training
        tempfile.TemporaryFile(dir=out.parent).close()
    except OSError as exc:
        parser.error(f"argument --out: cannot write in the folder of {args.out!r}: "
                     f"{exc.strerror or exc}")

    import matplotlib
    matplotlib.use("Agg")
    import torch

    import fastinterp as fi
    from fastinterp.demos import stn

    torch.set_num_threads(args.threads)
    fi.set_num_threads(args.threads)
    print(f"spatial transformer on distorted digits: {args.epochs} epochs, "
          f"{args.threads} threads, seed {args.seed}")
    data, results = stn.train_both(args.epochs, args.copies, args.test_copies, args.seed,
                                   log=print)
    print(f"{len(data[0])} training / {len(data[2])} test images "
          f"({stn.CANVAS}x{stn.CANVAS}, rotated up to 60 degrees, scaled and shifted)")
    for line in stn.report(results):
        print(line.strip())
    path = stn.plot(out, results["fastinterp"].model, torch.from_numpy(data[2][:10]))
    print(f"saved inputs and rectified outputs to {path}")
    gap = abs(results["fastinterp"].accuracy - results["torch"].accuracy) * 100
    return 0 if gap <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
