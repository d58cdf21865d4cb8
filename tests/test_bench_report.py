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


# --- updating a hand-written file between markers ------------------------------------

HAND_WRITTEN = (
    "# Title\n\nProse that must survive, with `code` and trailing spaces   \n\n"
    "<!-- bench:begin lerp-big -->\nold lerp table\n<!-- bench:end lerp-big -->\n"
    "\nMore prose\r\nwith a CRLF line and no final newline"
)


def _json(tmp_path, *benches):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": list(benches)}))
    return path


def _outside(text):
    """The text outside every marker pair (the markers themselves included)."""
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("<!-- bench:end"):
            inside = False
        if not inside:
            kept.append(line)
        if line.startswith("<!-- bench:begin"):
            inside = True
    return "".join(kept)


@pytest.mark.parametrize("group, name", [
    ("lerp: big", "lerp-big"),
    ("resize area: (8,3,512,512) -> 128x128", "resize-area-8-3-512-512-128x128"),
    ("plugin overhead: fi.lerp, 16 elements", "plugin-overhead-fi.lerp-16-elements"),
    ("adam_step: 10M float32 params", "adam_step-10m-float32-params"),
])
def test_table_name(report, group, name):
    assert report.table_name(group) == name


def test_readme_update_replaces_only_between_markers(report, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_bytes(HAND_WRITTEN.encode())
    data = _json(tmp_path, _bench("t1", "lerp: big", "fastinterp", 0.010),
                 _bench("t2", "lerp: big", "torch", 0.020))
    assert report.main([str(data), "--readme", str(readme)]) == 0
    new = readme.read_bytes().decode()
    assert _outside(new) == _outside(HAND_WRITTEN)          # byte-identical outside
    assert "old lerp table" not in new
    table = report.group_table("lerp: big", report.load(data)["lerp: big"])
    assert f"<!-- bench:begin lerp-big -->\n\n{table}\n\n<!-- bench:end lerp-big -->" in new
    # a second run with the same data changes nothing
    assert report.main([str(data), "--readme", str(readme)]) == 0
    assert readme.read_bytes().decode() == new


def test_readme_update_keeps_tables_missing_from_the_run(report, tmp_path, capsys):
    text = ("a\n<!-- bench:begin one -->\nkept table\n<!-- bench:end one -->\n"
            "<!-- bench:begin two -->\nold\n<!-- bench:end two -->\nz\n")
    new = report.update_markdown(text, {"two": "**two**\n\n| x |"})
    assert new == ("a\n<!-- bench:begin one -->\nkept table\n<!-- bench:end one -->\n"
                   "<!-- bench:begin two -->\n\n**two**\n\n| x |\n\n<!-- bench:end two -->\nz\n")
    readme = tmp_path / "R.md"
    readme.write_text(text)
    assert report.update_file(readme, {"two": "t"}) == ["one"]


def test_crlf_file_keeps_its_line_endings(report):
    text = "x\r\n<!-- bench:begin t -->\r\nold\r\n<!-- bench:end t -->\r\ny\r\n"
    new = report.update_markdown(text, {"t": "**t**\n\n| a |"})
    assert new == "x\r\n<!-- bench:begin t -->\r\n\r\n**t**\r\n\r\n| a |\r\n\r\n<!-- bench:end t -->\r\ny\r\n"


@pytest.mark.parametrize("text, message", [
    ("no markers at all\n", "no bench markers for 1 table(s) of the report: lerp-big"),
    ("<!-- bench:begin other -->\n<!-- bench:end other -->\n", "lerp-big"),
    ("<!-- bench:begin lerp-big -->\nold\n", "has no matching '<!-- bench:end lerp-big -->'"),
    ("<!-- bench:end lerp-big -->\n", "expected a bench:begin first"),
    ("<!-- bench:begin lerp-big -->\n<!-- bench:begin b -->\n<!-- bench:end b -->\n"
     "<!-- bench:end lerp-big -->\n", "inside the still open bench:begin lerp-big (line 1)"),
    ("<!-- bench:begin lerp-big -->\n<!-- bench:end other -->\n", "expected bench:end lerp-big"),
    ("<!-- bench:begin lerp-big -->\n<!-- bench:end lerp-big -->\n"
     "<!-- bench:begin lerp-big -->\n<!-- bench:end lerp-big -->\n", "a second bench:begin lerp-big"),
])
def test_bad_markers_are_an_error_and_nothing_is_written(report, tmp_path, capsys, text, message):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    before = readme.read_bytes(), readme.stat().st_mtime_ns
    data = _json(tmp_path, _bench("t1", "lerp: big", "fastinterp", 0.010))
    with pytest.raises(report.MarkerError, match="nothing was written|Nothing was written") as exc:
        report.update_file(readme, report.tables(data))
    assert message in str(exc.value)
    assert (readme.read_bytes(), readme.stat().st_mtime_ns) == before
    assert report.main([str(data), "--readme", str(readme)]) == 2
    assert message in capsys.readouterr().err
    assert readme.read_bytes() == before[0]
    assert sorted(tmp_path.iterdir()) == sorted([readme, data])  # no temporary file left


def test_missing_marker_error_lists_the_lines_to_add(report):
    with pytest.raises(report.MarkerError) as exc:
        report.update_markdown("text\n", {"knn-k-5": "t", "a-b": "u"}, "README.md")
    msg = str(exc.value)
    assert msg.startswith("README.md: no bench markers for 2 table(s) of the report: a-b, knn-k-5.")
    assert "<!-- bench:begin knn-k-5 -->\n  <!-- bench:end knn-k-5 -->" in msg


def test_readme_markers_name_existing_report_tables(report):
    """The project README's markers are well formed and named like report tables."""
    readme = REPORT.parents[1] / "README.md"
    text = readme.read_text(encoding="utf-8")
    spans = report._marked_spans(text.splitlines(keepends=True), "README.md")
    assert spans, "README.md has no bench markers"
    for name, (begin, end) in spans.items():
        body = "".join(text.splitlines(keepends=True)[begin + 1:end])
        if not body.strip():        # reserved for a table the next full run writes
            continue
        title = body.strip().splitlines()[0]
        assert title.startswith("**") and report.table_name(title.strip("*")) == name, (name, title)
