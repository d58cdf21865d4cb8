"""Turn pytest-benchmark JSON into one markdown ratio table per benchmark group.

Usage::

    python bench/report.py .benchmarks/latest.json [--output bench.md] [--readme README.md]

``--output`` writes all tables into a file of their own. ``--readme`` updates
a hand-written markdown file in place, touching nothing but the text between
a pair of marker lines per table::

    <!-- bench:begin lerp-16m-float32-array-weight -->
    (generated: replaced by the group's table on every run)
    <!-- bench:end lerp-16m-float32-array-weight -->

The name in the markers is :func:`table_name` of the benchmark group. Every
group in the JSON must have its markers (the error lists the lines to add);
markers whose group is not in the JSON (a partial run) keep their table. On
any error the file is left exactly as it was.

Each benchmark names its library in ``extra_info["library"]`` and its
workload in its group. For every group the table lists each library's median
time and the ratio *peer median / fastinterp median* (above 1: fastinterp is
faster; below 1: it is slower, and the table says so as plainly). Other
``extra_info`` entries (such as ``GB/s``) become extra columns.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REFERENCE = "fastinterp"
MARKER = re.compile(r"^<!-- bench:(begin|end) (\S+) -->[ \t]*\r?$")


class MarkerError(ValueError):
    """The markdown file's bench markers are missing or malformed; nothing was written."""


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


def table_name(group: str) -> str:
    """The marker name of a benchmark group: lowercase, runs of other characters as '-'.

    >>> table_name("resize area: (8,3,512,512) -> 128x128")
    'resize-area-8-3-512-512-128x128'
    """
    return re.sub(r"[^a-z0-9_.]+", "-", group.lower()).strip("-")


def tables(path: str | Path) -> dict[str, str]:
    """The table of every group of a JSON file, keyed by :func:`table_name`."""
    return {table_name(name): group_table(name, benches)
            for name, benches in load(path).items()}


def _marked_spans(lines: list[str], where: str) -> dict[str, tuple[int, int]]:
    """``name -> (begin line index, end line index)`` of every marker pair."""
    spans: dict[str, tuple[int, int]] = {}
    open_name, open_at = None, -1
    for i, line in enumerate(lines):
        m = MARKER.match(line)
        if not m:
            continue
        kind, name = m.groups()
        if kind == "begin":
            if open_name is not None:
                raise MarkerError(f"{where}:{i + 1}: bench:begin {name} inside the still open "
                                  f"bench:begin {open_name} (line {open_at + 1}); nothing was written.")
            if name in spans:
                raise MarkerError(f"{where}:{i + 1}: a second bench:begin {name} (the first is "
                                  f"line {spans[name][0] + 1}); nothing was written.")
            open_name, open_at = name, i
        elif name != open_name:
            expected = f"bench:end {open_name}" if open_name else "a bench:begin first"
            raise MarkerError(f"{where}:{i + 1}: bench:end {name} does not close a table: expected "
                              f"{expected}; nothing was written.")
        else:
            spans[name] = (open_at, i)
            open_name = None
    if open_name is not None:
        raise MarkerError(f"{where}:{open_at + 1}: bench:begin {open_name} has no matching "
                          f"'<!-- bench:end {open_name} -->' line; nothing was written.")
    return spans


def update_markdown(text: str, new_tables: dict[str, str], where: str = "the file") -> str:
    """``text`` with the span between each table's markers replaced by the table.

    Lines outside the marker pairs come back byte for byte. Raises
    :class:`MarkerError` when the markers are malformed or a table has none.
    """
    lines = text.splitlines(keepends=True)
    spans = _marked_spans(lines, where)
    missing = sorted(set(new_tables) - set(spans))
    if missing:
        add = "\n".join(f"  <!-- bench:begin {n} -->\n  <!-- bench:end {n} -->" for n in missing)
        raise MarkerError(f"{where}: no bench markers for {len(missing)} table(s) of the report: "
                          f"{', '.join(missing)}. Add these lines where each table belongs:\n{add}\n"
                          "Nothing was written.")
    for name, (begin, end) in sorted(spans.items(), key=lambda kv: -kv[1][0]):
        if name in new_tables:
            eol = "\r\n" if lines[begin].endswith("\r\n") else "\n"
            body = new_tables[name].strip("\n").replace("\n", eol)
            lines[begin + 1:end] = [eol, body + eol, eol]
    return "".join(lines)


def update_file(path: str | Path, new_tables: dict[str, str]) -> list[str]:
    """Rewrite the marked tables of a markdown file in place (atomically).

    Returns the marker names whose group was not in the report (left as they were).
    """
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    new = update_markdown(text, new_tables, str(path))
    kept = sorted(set(_marked_spans(text.splitlines(keepends=True), str(path))) - set(new_tables))
    if new != text:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(new)
            os.chmod(tmp, path.stat().st_mode & 0o7777)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    return kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("--output", "-o", help="also write the tables into this markdown file")
    parser.add_argument("--readme", help="update the tables between the bench markers of this "
                        "markdown file, leaving everything else as it is")
    args = parser.parse_args(argv)
    text = report(args.json)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    if args.readme:
        try:
            kept = update_file(args.readme, tables(args.json))
        except MarkerError as exc:
            print(f"report.py: {exc}", file=sys.stderr)
            return 2
        if kept:
            print(f"report.py: not in this run, left as they were in {args.readme}: "
                  + ", ".join(kept), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
