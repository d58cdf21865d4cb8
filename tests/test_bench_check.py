"""bench/check.py (`make bench-check`): ratios to peers, the baseline comparison, the trend.

All on synthetic pytest-benchmark JSON: nothing is timed here.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "bench_check", Path(__file__).resolve().parent.parent / "bench" / "check.py")
check = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(check)


def _bench(name, group, library, median, minimum=None):
    extra = {"library": library} if library else {}
    return {"name": name, "group": group, "extra_info": extra,
            "stats": {"median": median, "min": minimum or median, "mean": median}}


def _run(*benches, when="2026-01-01T00:00:00", variant="x86_64_v4", cpu="CPU X"):
    return {"datetime": when, "benchmarks": list(benches),
            "machine_info": {"node": "box", "cpu": {"brand_raw": cpu, "count": 2},
                             "fastinterp_variant": variant},
            "commit_info": {"id": "abc123"}}


LERP = "lerp: 16M"
PAIR = "pairwise: 4096x8192"


def _typical(lerp_ours=0.010, pair_ours=0.200, scale=1.0, variant="x86_64_v4", cpu="CPU X"):
    """A run where every time is multiplied by ``scale`` (a slower or busier machine)."""
    return _run(_bench("test_lerp_fastinterp", LERP, "fastinterp", lerp_ours * scale),
                _bench("test_lerp_copy_reference", LERP, "numpy copy", 0.005 * scale),
                _bench("test_lerp_torch", LERP, "torch", 0.012 * scale),
                _bench("test_pairwise_fastinterp", PAIR, "fastinterp", pair_ours * scale),
                _bench("test_pairwise_matmul", PAIR, None, 0.180 * scale), variant=variant,
                cpu=cpu)


def test_ratios_are_peer_time_over_ours_within_each_group():
    r = check.ratios(_typical())
    assert r == pytest.approx({f"{LERP} | vs numpy copy": 0.5, f"{LERP} | vs torch": 1.2,
                               f"{PAIR} | vs matmul": 0.9})


def test_a_uniformly_slower_machine_changes_no_ratio():
    assert check.ratios(_typical(scale=3.7)) == pytest.approx(check.ratios(_typical()))


def test_ratios_pair_parametrised_tests_by_parameter():
    run = _run(_bench("test_knn_fastinterp[5]", "knn", "fastinterp", 1.0),
               _bench("test_knn_fastinterp[10]", "knn", "fastinterp", 2.0),
               _bench("test_knn_faiss[5]", "knn", "faiss", 3.0),
               _bench("test_knn_faiss[10]", "knn", "faiss", 3.0))
    assert check.ratios(run) == pytest.approx({"knn | vs faiss[5]": 3.0,
                                               "knn | vs faiss[10]": 1.5})


def test_an_unparametrised_benchmark_pairs_with_every_peer():
    """fastinterp's Adam (no parameter) against torch's fused and foreach steps
    (parametrised) and a plain reference: three ratios."""
    run = _run(_bench("test_adam_fastinterp", "adam", "fastinterp", 0.005),
               _bench("test_adam_torch[fused]", "adam", "torch (fused)", 0.006),
               _bench("test_adam_torch[foreach]", "adam", "torch (foreach)", 0.030),
               _bench("test_adam_memory_ceiling", "adam", "memory ceiling", 0.005))
    assert check.ratios(run) == pytest.approx({"adam | vs torch (fused)": 1.2,
                                               "adam | vs torch (foreach)": 6.0,
                                               "adam | vs memory ceiling": 1.0})


def test_ratios_ignore_other_fastinterp_entries_and_empty_groups():
    run = _run(_bench("test_adam_fastinterp", "adam", "fastinterp", 1.0),
               _bench("test_adam_fastinterp_one_thread", "adam", "fastinterp (1 thread)", 0.5),
               _bench("test_adam_torch[fused]", "adam", "torch (fused)", 2.0),
               _bench("test_only_torch", "alone", "torch", 1.0))
    assert check.ratios(run) == pytest.approx({"adam | vs torch (fused)": 2.0})


def test_ratios_can_use_another_statistic():
    run = _run(_bench("a_fastinterp", "g", "fastinterp", 2.0, minimum=1.0),
               _bench("a_torch", "g", "torch", 2.0, minimum=3.0))
    assert check.ratios(run, "min") == pytest.approx({"g | vs torch": 3.0})


@pytest.mark.parametrize("slowdown, regressed", [(1.0, False), (1.30, False), (1.36, True),
                                                 (2.0, True)])
def test_compare_fails_only_beyond_the_tolerance(slowdown, regressed):
    """pairwise vs matmul: baseline 0.9; fastinterp slower by ``slowdown``."""
    base = check.ratios(_typical())
    now = check.ratios(_typical(pair_ours=0.200 * slowdown))
    report = check.compare(now, base, 0.25)
    keys = [k for k, _, _ in report["regressed"]]
    assert keys == ([f"{PAIR} | vs matmul"] if regressed else [])
    assert len(report["ok"]) == 3 - len(keys)


def test_compare_reports_new_and_missing_ratios():
    report = check.compare({"a": 1.0, "new": 2.0}, {"a": 1.0, "gone": 3.0})
    assert report["new"] == [("new", None, 2.0)]
    assert report["missing"] == [("gone", 3.0, None)]
    assert report["regressed"] == []
    text = check.format_report(report)
    assert "new (not in baseline)" in text and "not measured" in text


def test_compare_rejects_a_bad_tolerance():
    with pytest.raises(ValueError, match=r"compare: tolerance must be in \[0, 1\); got 1.5"):
        check.compare({}, {}, 1.5)


def test_format_report_shows_the_change():
    report = check.compare({"x": 0.5}, {"x": 1.0})
    text = check.format_report(report)
    assert "REGRESSED" in text and "-50%" in text and "1.00x" in text and "0.50x" in text


def _save(storage: Path, number: int, run: dict) -> None:
    folder = storage / "Linux-CPython-3.11-64bit"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{number:04d}_abc_{number}.json").write_text(json.dumps(run))


def test_trend_table_lists_saved_runs_oldest_first(tmp_path):
    _save(tmp_path, 2, _typical(pair_ours=0.300) | {"datetime": "2026-01-02T10:00:00"})
    _save(tmp_path, 1, _typical() | {"datetime": "2026-01-01T10:00:00"})
    (tmp_path / "Linux-CPython-3.11-64bit" / "0003_broken.json").write_text("{not json")
    runs = check.history(tmp_path)
    assert [stem for stem, _ in runs] == ["0001_abc_1", "0002_abc_2"]
    table = check.trend(runs, {f"{PAIR} | vs matmul": 0.9})
    row = next(line for line in table.splitlines() if line.startswith(f"{PAIR} | vs matmul"))
    assert row.split()[-3:] == ["0.90x", "0.90x", "0.60x"]    # baseline, run 1, run 2
    assert "0001 01-01" in table.splitlines()[0]


def test_trend_of_no_history_is_just_the_baseline(tmp_path):
    table = check.trend(check.history(tmp_path / "none"), {"a": 1.0})
    assert table.splitlines()[-1].split() == ["a", "1.00x"]


def test_baseline_record_round_trips_through_compare(tmp_path):
    record = check.baseline_record(_typical(), "median", "shared machine")
    assert record["machine"]["cpu"] == "CPU X"
    assert record["machine"]["fastinterp_variant"] == "x86_64_v4"
    assert record["commit"] == "abc123" and record["note"] == "shared machine"
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(record))
    result = tmp_path / "result.json"
    result.write_text(json.dumps(_typical(scale=2.0)))
    assert check.main(["compare", str(result), "--baseline", str(path)]) == 0
    result.write_text(json.dumps(_typical(lerp_ours=0.020)))
    assert check.main(["compare", str(result), "--baseline", str(path)]) == 1


def test_missing_baseline_says_how_to_make_one(tmp_path):
    with pytest.raises(SystemExit, match="make bench-baseline"):
        check.load_baseline(tmp_path / "absent.json")


@pytest.mark.parametrize("variant", ["x86_64_v3", "x86_64_v4"])
def test_the_committed_baseline_covers_the_quick_subset(variant):
    """bench/baseline.json has, for the AVX2 and the AVX-512 kernels, a ratio for every
    group of the quick subset's files."""
    keys = [k for k in check.load_baselines(check.BASELINE) if k.startswith(variant + " on ")]
    assert keys
    data = check.load_baseline(check.BASELINE, keys[0])
    assert not data["foreign"] and data["machine"]["fastinterp_variant"] == variant
    groups = {key.split(" | ")[0] for key in data["ratios"]}
    assert len(groups) >= len(check.QUICK)
    assert all(value > 0 for value in data["ratios"].values())
    assert data["stat"] in ("median", "min", "mean")


def test_each_kernel_variant_is_compared_with_its_own_record(tmp_path):
    """An AVX2 run is held to the AVX2 record, not to the AVX-512 one; saving one
    variant's record keeps the other's."""
    path = tmp_path / "baseline.json"
    check.save_baseline(path, check.baseline_record(_typical(), "median", ""))
    check.save_baseline(path, check.baseline_record(
        _typical(pair_ours=0.400, variant="x86_64_v3"), "median", ""))
    assert set(check.load_baselines(path)) == {"x86_64_v3 on CPU X", "x86_64_v4 on CPU X"}
    result = tmp_path / "result.json"
    result.write_text(json.dumps(_typical(pair_ours=0.400, variant="x86_64_v3")))
    assert check.main(["compare", str(result), "--baseline", str(path)]) == 0
    result.write_text(json.dumps(_typical(pair_ours=0.400)))
    assert check.main(["compare", str(result), "--baseline", str(path)]) == 1


def test_a_variant_without_a_record_is_shown_but_never_fails(tmp_path, capsys):
    path = tmp_path / "baseline.json"
    check.save_baseline(path, check.baseline_record(_typical(), "median", ""))
    result = tmp_path / "result.json"
    result.write_text(json.dumps(_typical(pair_ours=0.400, variant="x86_64_v2")))
    assert check.main(["compare", str(result), "--baseline", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no record for kernel variant x86_64_v2 on CPU X" in out and "REGRESSED" in out


def test_another_cpu_model_is_compared_for_information_only(tmp_path, capsys):
    """The same kernels against the same peers move differently on another CPU model (an
    AMD EPYC against an Intel Xeon): a run is held only to its own CPU's record, and
    shown against the same variant's record from another CPU without failing."""
    path = tmp_path / "baseline.json"
    check.save_baseline(path, check.baseline_record(_typical(), "median", ""))
    check.save_baseline(path, check.baseline_record(_typical(variant="x86_64_v3", cpu="CPU Y"),
                                                    "median", ""))
    result = tmp_path / "result.json"
    result.write_text(json.dumps(_typical(pair_ours=0.400, cpu="CPU Y")))
    assert check.main(["compare", str(result), "--baseline", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("no record for kernel variant x86_64_v4 on CPU Y; shown against x86_64_v4 on "
            "CPU X's for information only") in out
    check.save_baseline(path, check.baseline_record(_typical(cpu="CPU Y"), "median", ""))
    assert len(check.load_baselines(path)) == 3
    assert check.main(["compare", str(result), "--baseline", str(path)]) == 1


def test_a_single_record_file_is_read_as_its_variant(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(check.baseline_record(_typical(), "median", "")))
    assert set(check.load_baselines(path)) == {"x86_64_v4 on CPU X"}
    assert not check.load_baseline(path, "x86_64_v4 on CPU X")["foreign"]


def test_records_named_by_variant_alone_are_found_by_their_machine(tmp_path):
    """Older files name each record by its variant only; the key comes from the record."""
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"variants": {"x86_64_v4": check.baseline_record(
        _typical(cpu="CPU Z"), "median", "")}}))
    assert not check.load_baseline(path, "x86_64_v4 on CPU Z")["foreign"]


def test_combine_takes_the_best_or_the_median_of_runs():
    runs = [{"a": 1.0, "b": 4.0}, {"a": 3.0}, {"a": 2.0, "b": 2.0}]
    assert check.combine(runs, "best") == {"a": 3.0, "b": 4.0}
    assert check.combine(runs, "median") == {"a": 2.0, "b": 3.0}
    assert check.combine([], "best") == {}
    with pytest.raises(ValueError, match=r"combine: how must be 'best' or 'median'; got 'max'"):
        check.combine(runs, "max")


def test_baseline_record_stores_the_median_of_its_runs():
    slow = _typical(pair_ours=0.400)          # one disturbed run among three
    record = check.baseline_record(_typical(), "median", "", [slow, _typical()])
    assert record["runs"] == 3
    assert record["ratios"][f"{PAIR} | vs matmul"] == pytest.approx(0.9)


def test_a_regression_must_show_in_every_run(tmp_path, monkeypatch):
    """`run` measures again when a ratio looks regressed; the best run counts."""
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps(check.baseline_record(_typical(), "median", "")))
    runs = iter([_typical(pair_ours=0.400), _typical()])      # disturbed, then normal
    monkeypatch.setattr(check, "run_subset", lambda *a, **k: next(runs))
    monkeypatch.setattr(check, "history", lambda storage: [])
    assert check.main(["run", "--baseline", str(base)]) == 0
    runs = iter([_typical(pair_ours=0.400), _typical(pair_ours=0.300),
                 _typical(pair_ours=0.350)])                            # slow every time
    assert check.main(["run", "--baseline", str(base)]) == 1
    runs = iter([_typical(pair_ours=0.400)])
    assert check.main(["run", "--baseline", str(base), "--confirm", "0"]) == 1


def _compare(tmp_path, result, *args, record=None):
    """``check.main(["compare", ...])`` of a run against a baseline of ``_typical()``."""
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps(record or check.baseline_record(_typical(), "median", "")))
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    return check.main(["compare", str(path), "--baseline", str(base), *args])


def test_a_baseline_ratio_not_measured_fails_unless_allowed(tmp_path, capsys):
    """A peer not installed or a benchmark renamed must not pass unnoticed."""
    without_torch = _run(*[b for b in _typical()["benchmarks"] if b["name"] != "test_lerp_torch"])
    assert _compare(tmp_path, without_torch) == 1
    assert "1 ratio(s) of the baseline were not measured" in capsys.readouterr().err
    assert _compare(tmp_path, without_torch, "--allow-missing") == 0


def test_a_run_that_measures_no_ratio_of_the_baseline_fails(tmp_path, capsys):
    for args in ((), ("--allow-missing",)):
        assert _compare(tmp_path, _run(), *args) == 1
        assert "nothing compared" in capsys.readouterr().err


def test_the_stat_option_chooses_the_statistic_compared(tmp_path, capsys):
    """Each side's median is 2x its minimum for fastinterp only: compared by median, the
    ratio halves (a regression); by minimum (the baseline's statistic) it holds."""
    record = check.baseline_record(_typical(), "min", "")
    run = _typical()
    for bench in run["benchmarks"]:
        if bench["extra_info"].get("library") == "fastinterp":
            bench["stats"]["median"] = 2 * bench["stats"]["min"]
    assert _compare(tmp_path, run, record=record) == 0
    assert _compare(tmp_path, run, "--stat", "median", record=record) == 1
    assert "comparing median ratios with a baseline of min ratios" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("{\"variants\": {", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", "no 'ratios' table"),
    (json.dumps({"ratios": {"a | vs b": "fast"}}), "not positive numbers"),
    (json.dumps({"ratios": {"a | vs b": None}}), "not positive numbers"),
    (json.dumps({"ratios": {"a | vs b": -1.0}}), "not positive numbers"),
    (json.dumps({"ratios": {"a | vs b": True}}), "not positive numbers"),
])
def test_a_malformed_baseline_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "baseline.json"
    path.write_text(text)
    with pytest.raises(SystemExit, match=message):
        check.load_baselines(path)


def test_an_unreadable_result_is_a_clear_error(tmp_path):
    bad = tmp_path / "result.json"
    bad.write_text("{")
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps(check.baseline_record(_typical(), "median", "")))
    for path in (bad, tmp_path / "absent.json"):
        with pytest.raises(SystemExit, match="cannot read"):
            check.main(["compare", str(path), "--baseline", str(base)])


def test_the_subset_selects_its_tests_by_node_id(tmp_path):
    """Tests named as prefixes of others (test_adam_fastinterp, ..._one_thread) run alone;
    every parametrisation runs; a -k of the caller narrows the set."""
    cmd = check.pytest_command("python", tmp_path / "out.json", tmp_path, ["-k", "lerp"])
    ids = [a for a in cmd if "::" in a]
    assert len(ids) == sum(len(v) for v in check.QUICK.values())
    assert any(a.endswith("bench_optim.py::test_adam_fastinterp") for a in ids)
    assert cmd.count("-k") == 1 and cmd[-2:] == ["-k", "lerp"]
