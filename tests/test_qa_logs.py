"""Inference-log output paths that cannot be written: a directory, or a file
in a directory that does not exist.  Both passed check-config and serve
started; then every batch printed a "--- Logging error ---" traceback to
stderr and its log lines were lost, counted nowhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelmon.app import Exporter
from modelmon.cli import main
from modelmon.config import ConfigError, load_config


def write_config(d: Path, output: str) -> Path:
    (d / "ref.csv").write_text("x\n" + "".join(f"{i % 11}\n" for i in range(200)))
    cfg = d / "modelmon.yml"
    cfg.write_text("models: [{name: m, features: [{name: x}], reference: {path: ref.csv}}]\n"
                   f"logs: {{enabled: true, output: '{output}'}}\n")
    return cfg


@pytest.mark.parametrize(("output", "problem"), [
    ("logdir", "is a directory, not a file"),
    ("missing/dir/inference.jsonl", "does not exist"),
])
def test_unwritable_log_output_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 output: str, problem: str) -> None:
    (tmp_path / "logdir").mkdir()
    cfg = write_config(tmp_path, output)
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: logs.output: " in err and problem in err
    with pytest.raises(ConfigError) as exc:
        Exporter(load_config(cfg))
    assert exc.value.field_path == "logs.output"


def test_log_file_in_an_existing_directory_is_accepted(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "inference.jsonl")
    assert main(["check-config", str(cfg)]) == 0
