"""Performance tracking: a quick benchmark subset, compared with a stored baseline.

Absolute times say little on shared or different machines, so every
fastinterp benchmark is read as a *ratio* to a peer measured in the same run
(torch, OpenCV, faiss, the memory ceiling at the same threads, a bare matmul): ratio =
peer time / fastinterp time, higher is better. A run fails when a ratio drops
more than the tolerance (25%) below the baseline stored in the repository.

    python bench/check.py run         # `make bench-check`: run, save history, compare, trend
    python bench/check.py baseline    # `make bench-baseline`: run and rewrite the baseline
    python bench/check.py compare RESULT.json   # compare a pytest-benchmark JSON, no run
    python bench/check.py trend       # the trend table of the saved history

Each run is saved with ``--benchmark-autosave`` under ``.benchmarks/check/``
(pytest-benchmark's storage: one JSON per run), which the trend table reads.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE = HERE / "baseline.json"
STORAGE = ROOT / ".benchmarks" / "check"
LATEST = ROOT / ".benchmarks" / "check-latest.json"
TOLERANCE = 0.25
OURS = "fastinterp"

#: The quick subset (file -> test functions, all their parameters): about 2 minutes on 2 cores.
QUICK: dict[str, tuple[str, ...]] = {
    "bench_blend.py": ("test_lerp_array_fastinterp", "test_lerp_array_memory_ceiling",
                       "test_lerp_array_torch", "test_slerp_rows_fastinterp",
                       "test_slerp_rows_numpy"),
    "bench_sample.py": ("test_fwd_fastinterp", "test_fwd_torch", "test_fwd_cv2_remap",
                        "test_bwd_fastinterp", "test_bwd_torch"),
    "bench_distance.py": ("test_pairwise_fastinterp", "test_pairwise_matmul",
                          "test_knn_fastinterp", "test_knn_faiss"),
    "bench_resize.py": ("test_pool_fastinterp", "test_pool_torch",
                        "test_backward_fastinterp", "test_backward_torch"),
    "bench_optim.py": ("test_adam_fastinterp", "test_adam_torch", "test_adam_memory_ceiling"),
}
#: pytest-benchmark settings that keep the subset short and still take a median of >= 5 rounds.
FAST_OPTIONS = ("--benchmark-min-rounds=5", "--benchmark-max-time=0.5",
                "--benchmark-warmup=on", "--benchmark-warmup-iterations=1")


# ------------------------------------------------------------------ reading results
def library_of(bench: dict[str, Any]) -> str:
    """The library a benchmark measured: ``extra_info["library"]``, else the test
    name's last word (``test_pairwise_matmul`` -> ``matmul``)."""
    lib = (bench.get("extra_info") or {}).get("library")
    if lib:
        return str(lib)
    return str(bench["name"]).split("[")[0].rsplit("_", 1)[-1]


def _param_suffix(bench: dict[str, Any]) -> str:
    name = str(bench["name"])
    return name[name.index("["):] if "[" in name else ""


def ratios(result: dict[str, Any], stat: str = "median") -> dict[str, float]:
    """``{"<group> | vs <peer>": peer time / fastinterp time}`` for one run.

    Within each group, each fastinterp benchmark is paired with every other
    library's; when a group holds several parametrisations of one test (as a
    group named without its parameter), pairs are formed within equal
    parameters first.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for bench in result.get("benchmarks", []):
        groups.setdefault(bench.get("group") or bench["name"], []).append(bench)
    out: dict[str, float] = {}
    for group, benches in groups.items():
        ours = [b for b in benches if library_of(b) == OURS]
        peers = [b for b in benches if not library_of(b).startswith(OURS)]
        for mine in ours:
            suffix = _param_suffix(mine)
            same = [p for p in peers if suffix and _param_suffix(p) == suffix] or peers
            for peer in same:
                t_ours, t_peer = mine["stats"][stat], peer["stats"][stat]
                if t_ours > 0 and t_peer > 0:
                    out[f"{group} | vs {_peer_label(peer, mine, same)}"] = t_peer / t_ours
    return out


def _peer_label(peer: dict[str, Any], mine: dict[str, Any], peers: list[dict[str, Any]]) -> str:
    """The peer's library, with its test parameter when that tells pairs apart."""
    lib = library_of(peer)
    shared = sum(library_of(p) == lib for p in peers) > 1
    return lib + (_param_suffix(peer) if _param_suffix(mine) or shared else "")


def combine(runs: list[dict[str, float]], how: str) -> dict[str, float]:
    """Merge the ratios of several runs: ``"best"`` (a regression must show in every
    run to count) or ``"median"`` (a baseline that no single disturbed run sets)."""
    keys = sorted(set().union(*runs)) if runs else []
    values = {k: sorted(r[k] for r in runs if k in r) for k in keys}
    if how == "best":
        return {k: v[-1] for k, v in values.items()}
    if how == "median":
        return {k: (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2 for k, v in values.items()}
    raise ValueError(f"combine: how must be 'best' or 'median'; got {how!r}.")


def compare(current: dict[str, float], baseline: dict[str, float],
            tolerance: float = TOLERANCE) -> dict[str, list[tuple[str, float | None, float | None]]]:
    """Sort each ratio into ``regressed`` (below ``(1 - tolerance) * baseline``),
    ``ok``, ``new`` (not in the baseline) and ``missing`` (not measured now)."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"compare: tolerance must be in [0, 1); got {tolerance}.")
    report: dict[str, list[tuple[str, float | None, float | None]]] = {
        "regressed": [], "ok": [], "new": [], "missing": []}
    for key in sorted(set(current) | set(baseline)):
        now, then = current.get(key), baseline.get(key)
        if now is None:
            report["missing"].append((key, then, None))
        elif then is None:
            report["new"].append((key, None, now))
        elif now < (1.0 - tolerance) * then:
            report["regressed"].append((key, then, now))
        else:
            report["ok"].append((key, then, now))
    return report


def format_report(report: dict[str, list[tuple[str, float | None, float | None]]],
                  tolerance: float = TOLERANCE) -> str:
    """The comparison as a table: baseline ratio, current ratio, change, verdict."""
    verdicts = {"regressed": f"REGRESSED (> {tolerance:.0%} below)", "ok": "ok",
                "new": "new (not in baseline)", "missing": "not measured"}
    rows = []
    for kind in ("regressed", "ok", "new", "missing"):
        for key, then, now in report[kind]:
            change = f"{now / then - 1:+.0%}" if now is not None and then else ""
            rows.append((key, _fmt(then), _fmt(now), change, verdicts[kind]))
    return _table(("benchmark (ratio = peer time / fastinterp time)", "baseline", "now",
                   "change", "verdict"), rows)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> str:
    rows = list(rows)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(tuple("-" * w for w in widths))] + [line(r) for r in rows])


# ------------------------------------------------------------------ history
def history(storage: Path) -> list[tuple[str, dict[str, Any]]]:
    """Saved runs under ``storage`` (pytest-benchmark's autosave layout), oldest first."""
    runs = []
    for path in sorted(storage.glob("*/*.json")) if storage.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        runs.append((str(data.get("datetime", "")), path.stem, data))
    runs.sort(key=lambda r: (r[0], r[1]))
    return [(stem, data) for _, stem, data in runs]


def trend(runs: list[tuple[str, dict[str, Any]]], baseline: dict[str, float] | None = None,
          last: int = 8, stat: str = "median") -> str:
    """A table of each ratio over the ``last`` saved runs (columns: run number, date)."""
    runs = runs[-last:]
    series = [ratios(data, stat) for _, data in runs]
    keys = sorted(set().union(*series) | set(baseline or {}))
    header = ("benchmark", "baseline") + tuple(
        f"{stem.split('_')[0]} {str(data.get('datetime', ''))[5:16]}" for stem, data in runs)
    rows = [(key, _fmt((baseline or {}).get(key))) + tuple(_fmt(s.get(key)) for s in series)
            for key in keys]
    return _table(header, rows)


# ------------------------------------------------------------------ running
def pytest_command(python: str, json_out: Path, storage: Path, extra: Iterable[str] = ()
                   ) -> list[str]:
    """The pytest invocation of the quick subset: its tests by node ID (every
    parametrisation of each, nothing whose name merely contains one; a ``-k`` in
    ``extra`` narrows that set)."""
    tests = [f"{HERE / f}::{name}" for f, names in QUICK.items() for name in names]
    return [python, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider",
            "--benchmark-only", *FAST_OPTIONS,
            "--benchmark-columns=median,iqr", "--benchmark-sort=name",
            f"--benchmark-json={json_out}", "--benchmark-autosave",
            f"--benchmark-storage=file://{storage}", *extra]


def run_subset(extra: Iterable[str] = (), storage: Path = STORAGE) -> dict[str, Any]:
    """Run the quick subset; return pytest-benchmark's JSON of the run."""
    LATEST.parent.mkdir(parents=True, exist_ok=True)
    cmd = pytest_command(sys.executable, LATEST, storage, extra)
    env = dict(os.environ)
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):   # as `make bench` does
        env.pop(var, None)
    print(f"bench-check: pytest on {sum(map(len, QUICK.values()))} benchmarks of "
          f"{', '.join(QUICK)}", " ".join(extra), flush=True)
    status = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    if status != 0:
        raise SystemExit(f"bench-check: the benchmark run failed (pytest exit status {status}).")
    return json.loads(LATEST.read_text())


ABOUT = ("ratio = peer time / fastinterp time (higher is better), from `make bench-baseline` "
         "(bench/check.py), one record per kernel variant and CPU model; `make bench-check` "
         f"fails when a ratio drops more than {TOLERANCE:.0%} below the record of the variant "
         "and CPU it ran on.")


def variant_of(result: dict[str, Any]) -> str:
    """The kernel variant a run (or a baseline record) measured: ``x86_64_v4``, ..."""
    return str((result.get("machine_info") or result.get("machine") or {})
               .get("fastinterp_variant") or "unknown")


def cpu_of(result: dict[str, Any]) -> str:
    """The CPU model a run (or a baseline record) measured on: ``AMD EPYC``, ..."""
    info = result.get("machine_info") or result.get("machine") or {}
    cpu = info.get("cpu")
    return str((cpu.get("brand_raw") if isinstance(cpu, dict) else cpu) or "unknown CPU")


def record_key(result: dict[str, Any]) -> str:
    """The baseline entry a run is held to: ``"<kernel variant> on <CPU model>"``."""
    return f"{variant_of(result)} on {cpu_of(result)}"


def load_baselines(path: Path) -> dict[str, dict[str, Any]]:
    """``{record_key: record}`` from a baseline file.

    Ratios depend on the kernel variant (AVX-512 permutes against AVX2
    gathers, say) and on the CPU model (the same AVX-512 kernels against the
    same peers differ by up to 40% between an AMD EPYC and an Intel Xeon,
    with memory-bound ops moving most), so the file keeps one record per
    variant and CPU under ``"variants"``, each found by its own machine
    fields (entries of older files, named by variant alone, included); a file
    holding a single record at its top level (the oldest format) is that record.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"bench-check: no baseline at {path}; create one with "
                         f"`make bench-baseline`.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SystemExit(f"bench-check: {path} is not valid JSON ({exc}); restore it from git "
                         f"or regenerate it with `make bench-baseline`.") from None
    records = data.get("variants") if isinstance(data, dict) and "variants" in data else {"": data}
    if not isinstance(records, dict) or not records or not all(
            isinstance(r, dict) and isinstance(r.get("ratios"), dict) for r in records.values()):
        raise SystemExit(f"bench-check: {path} has no 'ratios' table; regenerate it with "
                         f"`make bench-baseline`.")
    for record in records.values():
        bad = {k: v for k, v in record["ratios"].items() if not _is_ratio(v)}
        if bad:
            raise SystemExit(f"bench-check: {path} has ratios that are not positive numbers "
                             f"({bad}); regenerate it with `make bench-baseline`.")
    return {record_key(r): r for r in records.values()}


def _is_ratio(value: Any) -> bool:
    """A stored ratio: a positive, finite number (not a bool)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def load_baseline(path: Path, key: str | None = None) -> dict[str, Any]:
    """The baseline record of ``key`` (a :func:`record_key`; default: the file's only or
    first record), with ``"key"`` set to the record's own key.

    A key without a record gets, with ``"foreign": True`` set, the record of the
    same kernel variant on another CPU if there is one, else the first: compared
    for information only, never failing (another machine's ratios are not this
    one's).
    """
    records = load_baselines(path)
    if key is not None and key in records:
        return dict(records[key], foreign=False, key=key)
    same_variant = [k for k in records if key and k.split(" on ")[0] == key.split(" on ")[0]]
    name = (same_variant or list(records))[0]
    return dict(records[name], foreign=key is not None, key=name)


def save_baseline(path: Path, record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Store ``record`` as its variant and CPU's entry of the baseline file, keeping the
    others."""
    records = load_baselines(path) if path.exists() else {}
    records[record_key(record)] = record
    path.write_text(json.dumps({"about": ABOUT, "variants": dict(sorted(records.items()))},
                               indent=2) + "\n")
    return records


def baseline_record(result: dict[str, Any], stat: str, note: str,
                    more: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """What bench/baseline.json stores: the ratios (the median over ``result`` and
    ``more`` runs) and where they were measured."""
    machine = result.get("machine_info", {})
    return {
        "stat": stat,
        "measured": result.get("datetime") or _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "commit": (result.get("commit_info") or {}).get("id"),
        "machine": {k: machine.get(k) for k in ("node", "processor", "machine", "python_version",
                                                "fastinterp_variant")}
        | {"cpu": (machine.get("cpu") or {}).get("brand_raw"),
           "cores": (machine.get("cpu") or {}).get("count")},
        "note": note,
        "runs": 1 + len(more),
        "ratios": {k: round(v, 4) for k, v in sorted(
            combine([ratios(r, stat) for r in (result, *more)], "median").items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("run", "baseline", "compare", "trend"))
    parser.add_argument("result", nargs="?", help="compare: a pytest-benchmark JSON file")
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    parser.add_argument("--storage", type=Path, default=STORAGE)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--stat", default=None, choices=("min", "median", "mean"),
                        help="the statistic compared (default: the baseline record's; a new "
                             "baseline: min, the least disturbed round of each side; on a "
                             "busy machine the median moves more)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="run/compare: pass although baseline ratios were not measured "
                             "(a run narrowed with --pytest-arg, say)")
    parser.add_argument("--last", type=int, default=8, help="trend: runs shown")
    parser.add_argument("--runs", type=int, default=3,
                        help="baseline: runs whose median ratios it stores")
    parser.add_argument("--confirm", type=int, default=2,
                        help="run: extra runs when a ratio looks regressed; the best of "
                             "all runs counts")
    parser.add_argument("--note", default="", help="baseline: a remark stored with it")
    parser.add_argument("--pytest-arg", action="append", default=[],
                        help="an extra argument for pytest (repeatable)")
    args = parser.parse_args(argv)

    if args.command == "trend":
        runs = history(args.storage)
        key = record_key(runs[-1][1]) if runs else None
        base = (load_baseline(args.baseline, key)["ratios"] if args.baseline.exists()
                else None)
        stat = args.stat or (load_baseline(args.baseline, key).get("stat", "min")
                             if args.baseline.exists() else "min")
        print(trend(runs, base, args.last, stat))
        return 0
    if args.command == "baseline":
        runs = [run_subset(args.pytest_arg, args.storage) for _ in range(max(1, args.runs))]
        record = baseline_record(runs[0], args.stat or "min", args.note, runs[1:])
        save_baseline(args.baseline, record)
        print(f"bench-baseline: wrote {len(record['ratios'])} ratios for kernel variant "
              f"{record_key(record)} to {args.baseline}")
        return 0
    if args.command == "compare":
        if not args.result:
            parser.error("compare needs a pytest-benchmark JSON file")
        try:
            result = json.loads(Path(args.result).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SystemExit(f"bench-check: cannot read {args.result} as a pytest-benchmark "
                             f"JSON file ({exc}).") from None
    else:
        result = run_subset(args.pytest_arg, args.storage)
    base = load_baseline(args.baseline, record_key(result))
    if base["foreign"]:
        print(f"bench-check: {args.baseline} has no record for kernel variant "
              f"{record_key(result)}; shown against {base['key']}'s for information "
              f"only (`make bench-baseline` records this machine's).")
    stat = args.stat or base.get("stat", "min")
    if stat != base.get("stat", stat):
        print(f"bench-check: comparing {stat} ratios with a baseline of {base['stat']} ratios "
              f"(`make bench-baseline` with --stat {stat} records {stat} ones).")
    seen = [ratios(result, stat)]
    report = compare(seen[0], base["ratios"], args.tolerance)
    for _ in range(args.confirm if args.command == "run" and not base["foreign"] else 0):
        if not report["regressed"]:
            break
        print(f"bench-check: {len(report['regressed'])} ratio(s) below the baseline; "
              "measuring again (a regression must show in every run)", flush=True)
        seen.append(ratios(run_subset(args.pytest_arg, args.storage), stat))
        report = compare(combine(seen, "best"), base["ratios"], args.tolerance)
    print(format_report(report, args.tolerance))
    if args.command == "run":
        print("\ntrend (saved runs in", os.path.relpath(args.storage, ROOT) + "):")
        print(trend(history(args.storage), base["ratios"], args.last, stat))
    if report["regressed"] and not base["foreign"]:
        print(f"\nbench-check: {len(report['regressed'])} ratio(s) dropped more than "
              f"{args.tolerance:.0%} below the baseline.", file=sys.stderr)
        return 1
    if not base["foreign"] and not (report["ok"] or report["regressed"]):
        print("\nbench-check: no ratio of the baseline was measured: nothing compared.",
              file=sys.stderr)
        return 1
    if not base["foreign"] and report["missing"] and not args.allow_missing:
        print(f"\nbench-check: {len(report['missing'])} ratio(s) of the baseline were not "
              f"measured (a peer library not installed, or a benchmark renamed or skipped): "
              f"install the bench extras, refresh the baseline with `make bench-baseline` "
              f"after a rename, or pass --allow-missing for a run narrowed on purpose.",
              file=sys.stderr)
        return 1
    if base["foreign"]:
        print(f"\nbench-check: no baseline for kernel variant {record_key(result)}: nothing "
              f"compared (run `make bench-baseline` on this machine to record one).")
        return 0
    print(f"\nbench-check: {len(report['ok'])} ratio(s) within {args.tolerance:.0%} of the baseline.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
