"""The command line, ``python -m fastinterp``: argument errors are argparse errors."""
from __future__ import annotations

import os
import re

import pytest

from fastinterp.__main__ import main


def _cli_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("usage: fastinterp demo")
    return err


def test_demo_out_is_an_existing_file(tmp_path, capsys):
    path = tmp_path / "afile"
    path.write_text("x")
    err = _cli_error(capsys, ["demo", "--quick", "--out", str(path)])
    assert f"argument --out: cannot create the folder {str(path)!r}: " in err
    assert path.read_text() == "x"


def test_demo_out_cannot_be_created(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    path = blocker / "sub" / "dir"
    err = _cli_error(capsys, ["demo", "--quick", "--out", str(path)])
    assert f"argument --out: cannot create the folder {str(path)!r}: " in err


def _demo_lines(section, tmp_path, quick=True):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    return section.run(tmp_path, quick=quick)


def test_volume_demo_quick_mode_recovers_the_angle(tmp_path):
    from fastinterp.demos import volume
    line = next(line for line in _demo_lines(volume, tmp_path) if "angle recovered" in line)
    start, end, true = (float(v) for v in
                        re.findall(r"([-\d.]+) -> ([-\d.]+) deg \(true ([-\d.]+)\)", line)[0])
    assert abs(end - true) < 0.1 and abs(start - true) > 10


def test_volume_fit_angle_converges_at_every_size():
    from fastinterp.demos.volume import fit_angle, phantom, rotate
    for n in (24, 48):
        vol = phantom(n)
        target, _ = rotate(vol, 0.0, 0.6, "bilinear")
        assert abs(fit_angle(vol, target, 0.3, 15)[-1] - 0.6) < 2e-3


def test_resize_demo_quick_timing_is_not_rounded_to_zero(tmp_path):
    from fastinterp.demos import resize
    line = _demo_lines(resize, tmp_path)[-1]
    assert re.search(r"fastinterp (\d+\.\d+) ms", line) and " 0.0 ms" not in line


def test_stn_demo_quick_mode_says_it_is_too_short_to_train(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from fastinterp.demos import stn
    lines = _demo_lines(stn, tmp_path)
    assert any("quick mode" in line and "--quick" in line for line in lines)


def test_demo_out_is_a_folder_that_takes_no_files(capsys):
    """An existing folder where no file can be written (/proc/self): PIL's raw
    FileNotFoundError came at the first image."""
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    err = _cli_error(capsys, ["demo", "--quick", "--out", "/proc/self"])
    assert "argument --out: cannot write in the folder '/proc/self': " in err



@pytest.mark.parametrize("out", ["", "  "])
def test_demo_out_that_is_empty_is_refused(capsys, out, tmp_path, monkeypatch):
    """--out '' wrote the PNG files into the current folder (Path('') is '.')."""
    monkeypatch.chdir(tmp_path)         # (where they would land)
    err = _cli_error(capsys, ["demo", "--quick", "--out", out])
    assert f"argument --out: expected a folder name; got {out!r}." in err
