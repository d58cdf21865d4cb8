"""Command line: ``python -m fastinterp demo [--out DIR]``."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastinterp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the visual demo and a small timing table")
    demo.add_argument("--out", default="fastinterp-demo", help="folder for the PNG files")
    demo.add_argument("--quick", action="store_true", help="small sizes (for tests)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if not args.out.strip():        # Path('') is the current folder: not what was meant
            demo.error(f"argument --out: expected a folder name; got {args.out!r}.")
        try:
            Path(args.out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            demo.error(f"argument --out: cannot create the folder {args.out!r}: "
                       f"{exc.strerror or exc}")
        try:        # a folder that exists but takes no files (read-only, /proc)
            tempfile.TemporaryFile(dir=args.out).close()
        except OSError as exc:
            demo.error(f"argument --out: cannot write in the folder {args.out!r}: "
                       f"{exc.strerror or exc}")
        from .demo import run_demo
        return run_demo(args.out, quick=args.quick)
    return 2


if __name__ == "__main__":
    sys.exit(main())
