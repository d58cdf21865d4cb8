"""The command line, ``python -m fastinterp``: argument errors are argparse errors."""
from __future__ import annotations

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
