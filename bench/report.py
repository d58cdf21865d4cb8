"""Turn pytest-benchmark JSON into one markdown ratio table per benchmark group.

Usage::

    python bench/report.py .benchmarks/latest.json [--output bench.md]

Each benchmark names its library in ``extra_info["library"]`` and its
workload in its group. For every group the table lists each library's median
time and the ratio *peer median / fastinterp median* (above 1: fastinterp is
faster; below 1: it is slower, and the table says so as plainly). Other
``extra_info`` entries (such as ``GB/s``) become extra columns.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REFERENCE = "fastinterp"


def load(path: str | Path) -> dict[str, list[dict]]:
    """Benchmarks of a pytest-benchmark JSON file, grouped by their group name."""
    data = json.loads(Path(path).read_text())
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data.get("benchmarks", []):
        groups[bench.get("group") or bench["name"]].append(bench)
    return dict(groups)


def _library(bench: dict) -> str:
    return bench.get("extra_info", {}).get("library", bench["name"])


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def group_table(name: str, benches: list[dict]) -> str:
    """The markdown table of one group."""
    extras = sorted({k for b in benches for k in b.get("extra_info", {}) if k != "library"})
    ref = [b["stats"]["median"] for b in benches if _library(b) == REFERENCE]
    ref_median = min(ref) if ref else None
    header = ["library", "median", f"ratio (peer / {REFERENCE})"] + extras
    lines = [f"**{name}**", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for b in sorted(benches, key=lambda b: b["stats"]["median"]):
        median = b["stats"]["median"]
        ratio = f"{median / ref_median:.2f}×" if ref_median else "n/a"
        info = b.get("extra_info", {})
        row = [_library(b), _fmt_time(median), ratio] + [str(info.get(k, "")) for k in extras]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def report(path: str | Path) -> str:
    """All group tables of a JSON file, in group-name order."""
    groups = load(path)
    if not groups:
        return "(no benchmarks in the file)"
    return "\n\n".join(group_table(name, groups[name]) for name in sorted(groups)) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("--output", "-o", help="also write the tables into this markdown file")
    args = parser.parse_args(argv)
    text = report(args.json)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
