"""Files a first-time user points the CLI at by mistake: a config that is not
UTF-8, a directory where a data file or profile belongs.  Each must exit 2
with one line naming the file, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from modelmon.cli import main


def test_config_that_is_not_utf8_is_an_error_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A Latin-1 config (here a version "\xff") ended check-config and serve in a UnicodeDecodeError traceback, exit 1.
    cfg = tmp_path / "modelmon.yml"
    cfg.write_bytes(b"models:\n  - name: m\n    version: caf\xe9\n")
    for argv in (["check-config", str(cfg)], ["serve", "--config", str(cfg)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert f"{cfg}: not UTF-8 text: byte 0xe9 on line 3" in err
