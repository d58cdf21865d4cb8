"""The demo: every module in fastinterp.demos contributes one section.

Each section module defines ``TITLE`` (a string), ``ORDER`` (an int, lower
runs first) and ``run(out_dir: pathlib.Path, quick: bool) -> list[str]``,
which writes its PNG files into ``out_dir`` and returns the lines to print
(results, timings). ``quick`` asks for small sizes (used by the tests).
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from pathlib import Path

from . import demos


def sections():
    """The demo section modules, in their declared order."""
    mods = [importlib.import_module(f"{demos.__name__}.{m.name}")
            for m in pkgutil.iter_modules(demos.__path__) if not m.name.startswith("_")]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def at_least_one(text: str) -> int:
    """An ``argparse`` type for the examples' counts: an int of at least 1.

    >>> at_least_one("3")
    3
    """
    import argparse
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write and close a matplotlib figure; returns ``path``."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def run_demo(out: str = "fastinterp-demo", quick: bool = False) -> int:
    """Run every demo section, writing PNGs into ``out``; returns a process exit code."""
    import matplotlib
    matplotlib.use("Agg")
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    from . import get_num_threads
    print(f"fastinterp demo ({get_num_threads()} CPU threads); pictures go to {out_dir}")
    for section in sections():
        print(f"\n== {section.TITLE} ==")
        start = time.perf_counter()
        for line in section.run(out_dir, quick):
            print(line)
        print(f"   ({time.perf_counter() - start:.1f} s)")
    print(f"\nDone. Pictures: {out_dir}")
    return 0
