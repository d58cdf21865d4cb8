"""bench/report.py: the ratio tables built from pytest-benchmark JSON."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPORT = Path(__file__).resolve().parents[1] / "bench" / "report.py"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("bench_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(name, group, library, median, **extra):
    return {"name": name, "group": group, "stats": {"median": median},
            "extra_info": {"library": library, **extra}}


def test_tables_and_ratios(report, tmp_path):
    data = {"benchmarks": [
        _bench("t1", "lerp: big", "fastinterp", 0.010, **{"GB/s": 25.0}),
        _bench("t2", "lerp: big", "torch", 0.015, **{"GB/s": 16.7}),
        _bench("t3", "lerp: big", "numpy", 0.005),
        _bench("t4", "slerp: rows", "numpy", 2.0),
    ]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "table.md"
    assert report.main([str(path), "--output", str(out)]) == 0
    text = out.read_text()
    lerp, slerp = text.split("**slerp: rows**")
    assert "| library | median | ratio (peer / fastinterp) | GB/s |" in lerp
    rows = [line for line in lerp.splitlines() if line.startswith("| ") and "ms" in line]
    assert rows == ["| numpy | 5.00 ms | 0.50× |  |",
                    "| fastinterp | 10.00 ms | 1.00× | 25.0 |",
                    "| torch | 15.00 ms | 1.50× | 16.7 |"]
    assert "| numpy | 2.00 s | n/a |" in slerp  # no fastinterp entry: no ratio


def test_empty_file(report, tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"benchmarks": []}))
    assert report.report(path) == "(no benchmarks in the file)"
