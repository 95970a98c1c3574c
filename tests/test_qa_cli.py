"""Files a first-time user points the CLI at by mistake: a config that is not
UTF-8, a directory where a data file or profile belongs.  Each must exit 2
with one line naming the file, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelmon.app import Exporter
from modelmon.cli import main
from modelmon.config import ConfigError, load_config


def ref_csv(d: Path) -> Path:
    p = d / "ref.csv"
    p.write_text("x\n" + "".join(f"{i % 13}\n" for i in range(200)))
    return p


def test_config_that_is_not_utf8_is_an_error_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A Latin-1 config (here a version "\xff") ended check-config and serve in a UnicodeDecodeError traceback, exit 1.
    cfg = tmp_path / "modelmon.yml"
    cfg.write_bytes(b"models:\n  - name: m\n    version: caf\xe9\n")
    for argv in (["check-config", str(cfg)], ["serve", "--config", str(cfg)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert f"{cfg}: not UTF-8 text" in err


def test_directory_instead_of_a_data_file_or_profile_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A directory was reported as "no such file", sending the user to look for a missing path.
    ref = ref_csv(tmp_path)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    assert main(["drift", "--reference", str(ref), "--current", str(data_dir)]) == 2
    assert f"{data_dir}: a directory, not a data file" in capsys.readouterr().err
    prof_dir = tmp_path / "profile.json"
    prof_dir.mkdir()
    assert main(["drift", "--reference", str(prof_dir), "--current", str(ref)]) == 2
    assert f"{prof_dir}: a directory, not a profile file" in capsys.readouterr().err
    assert main(["reference", "build", str(data_dir), "-o", str(tmp_path / "p.json")]) == 2
    assert "a directory, not a data file" in capsys.readouterr().err
    cfg = tmp_path / "modelmon.yml"
    cfg.write_text(f"models: [{{name: m, features: [{{name: x}}], reference: {{path: {data_dir}}}}}]\n")
    assert main(["check-config", str(cfg)]) == 2
    assert "models[0].reference.path: " in (err := capsys.readouterr().err) and "a directory, not a data file" in err


@pytest.mark.parametrize(("snippet", "field"), [
    ("name: {long}", "models[0].name"),
    ("name: m, version: {long}", "models[0].version"),
    ("name: m, positive_class: {long}", "models[0].positive_class"),
    ("name: m, error_reasons: [error, {long}]", "models[0].error_reasons[1]"),
    ("name: m, fairness: {{attribute: g, groups: [a, {long}]}}", "models[0].fairness.groups[1]"),
    ("name: m, features: [{{name: {long}}}]", "models[0].features[0].name"),
    ("name: m, features: [{{name: c, type: categorical, categories: [a, {long}]}}]", "models[0].features[0].categories[1]"),
    ('name: m, version: "v\\ud800"', "models[0].version"),
])
def test_config_strings_that_become_label_values_are_bounded(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            snippet: str, field: str) -> None:
    # A 3000-character model name was accepted and exported as a 3000-character `model` label on every series;
    # a config version with a lone surrogate would fail every /metrics encode once used.
    ref_csv(tmp_path)
    cfg = tmp_path / "modelmon.yml"
    cfg.write_text("models: [{" + snippet.format(long="x" * 3000) + ", reference: {path: ref.csv}}]\n")
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: {field}: " in err and "label value" in err and "Traceback" not in err


@pytest.mark.parametrize("rate", ["nan", "inf", "1e12", "0", "-5"])
def test_serve_rate_out_of_range_is_refused_before_serving(capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch, rate: str) -> None:
    # --rate nan / inf / 1e12 were accepted: the exporter started and the simulator logged a traceback
    # every 0.1 s forever (a NaN batch size, or a 746 GiB array allocation).
    def no_serving(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"serve --rate {rate} got as far as building the exporter")

    monkeypatch.setattr("modelmon.serve_cli.Exporter", no_serving)
    assert main(["serve", "--rate", rate, "--web.listen-address=127.0.0.1:0"]) == 2
    assert "--rate: must be > 0 and at most 1000000" in capsys.readouterr().err


def test_config_simulator_rate_is_bounded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "modelmon.yml"
    cfg.write_text("simulator: {enabled: true, rate: 1.0e+12}\n")
    assert main(["check-config", str(cfg)]) == 2
    assert f"{cfg}: simulator.rate: must be > 0 and at most 1000000" in capsys.readouterr().err


def test_gate_files_that_are_not_utf8_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # modelmon gate ended in a UnicodeDecodeError traceback (exit 1) on a Latin-1 evaluation or gate file.
    good = tmp_path / "eval.json"
    good.write_text('{"accuracy": 0.95}')
    bad_eval = tmp_path / "bad.json"
    bad_eval.write_bytes(b'{"accuracy": 0.95, "note": "caf\xe9"}')
    bad_gate = tmp_path / "gate.yml"
    bad_gate.write_bytes(b"evaluation: [{metric: accuracy, min: 0.9}]  # caf\xe9\n")
    for argv, name in ((["gate", "--evaluation", str(bad_eval)], bad_eval),
                       (["gate", "--gate", str(bad_gate), "--evaluation", str(good)], bad_gate)):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{name}: not UTF-8 text" in err and "Traceback" not in err


def test_web_config_and_token_file_that_are_not_utf8_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Both were reported as a bare "'utf-8' codec can't decode byte 0xff ..." with no file named.
    web = tmp_path / "web.yml"
    web.write_bytes(b"\xff")
    assert main(["serve", "--web.config.file", str(web), "--web.listen-address=127.0.0.1:0"]) == 2
    assert f"{web}: not UTF-8 text" in capsys.readouterr().err
    tok = tmp_path / "token"
    tok.write_bytes(b"\xffsecret")
    cfg = tmp_path / "modelmon.yml"
    cfg.write_text(f"ingest: {{enabled: true, token_file: {tok}}}\nsimulator: {{enabled: true}}\n")
    with pytest.raises(ConfigError) as exc:
        Exporter(load_config(cfg))
    assert exc.value.field_path == "ingest.token_file" and f"{tok}: not UTF-8 text" in str(exc.value)


def test_output_that_names_an_input_is_refused_and_the_input_kept(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # `reference build ref.csv -o ref.csv` replaced the reference data with its profile, and
    # `drift ... -o cur.csv` the current data with the report: both exited 0.
    ref = ref_csv(tmp_path)
    before = ref.read_bytes()
    assert main(["reference", "build", str(ref), "-o", str(ref)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert main(["drift", "--reference", str(ref), "--current", str(ref), "-o", str(ref)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert ref.read_bytes() == before


def test_profile_must_be_written_to_a_json_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # `-o profile.txt` wrote a profile that --reference and reference.path then read as CSV
    # ("cannot parse CSV ..."): profiles are recognised by their .json name.
    ref = ref_csv(tmp_path)
    assert main(["reference", "build", str(ref), "-o", str(tmp_path / "profile.txt")]) == 2
    assert "must end in .json" in capsys.readouterr().err and not (tmp_path / "profile.txt").exists()
    assert main(["reference", "build", str(ref), "-o", str(tmp_path / "profile.JSON")]) == 0
    # ... and the exporter reads that name as a profile too (it took ".JSON" for a CSV file)
    cfg = tmp_path / "modelmon.yml"
    cfg.write_text("models: [{name: m, features: [{name: x}], reference: {path: profile.JSON}}]\n")
    Exporter(load_config(cfg)).server.stop()
