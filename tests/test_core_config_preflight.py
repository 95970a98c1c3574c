"""Config cases a first-time user trips over, each refused (or accepted) with
a message naming the file and field, and with the same verdict from
``modelmon check-config`` and ``modelmon serve`` (both go through
modelmon.preflight before anything listens)."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from modelmon.cli import main
from modelmon.config import MAX_WINDOW_EVENTS, ConfigError, config_from_dict, load_config
from modelmon.pipeline import Pipeline
from modelmon.preflight import load_profiles, prepare, window_bytes
from servers import wait_until

#: name -> (file text, expected message after "FILE: "; None = accepted)
CASES: dict[str, tuple[str, str | None]] = {
    "empty": ("", "the file is empty"),
    "only-comments": ("# models: to come\n", "the file is empty"),
    "no-models": ("models: []\n", "models: no model configured"),
    "duplicate-key": ("models:\n  - name: a\n    task: classification\n    task: regression\n",
                      "models[0].task: duplicate key 'task' at line 4 (first at line 3"),
    "duplicate-top-level": ("models:\n  - name: a\nwindows: []\nmodels:\n  - name: b\n",
                            "models: duplicate key 'models' at line 4 (first at line 1"),
    "positive-class-on-regression": ("models:\n  - name: r\n    task: regression\n    positive_class: '1'\n",
                                     "models[0].positive_class: only classification models have a positive class"),
    "max-events-1e14": ("models:\n  - name: m\nwindows:\n  - {duration: 5m, max_events: 1e14}\n",
                        "windows[0].max_events: must be an integer (YAML reads 1e14 as a string"),
    "max-events-huge": ("models:\n  - name: m\nwindows:\n  - {duration: 5m, max_events: 100000000000000}\n",
                        f"windows[0].max_events: must be between 1 and {MAX_WINDOW_EVENTS}"),
    "web-bad-hash": ("models:\n  - name: m\nweb: {config_file: web-bad-hash.web.yml}\n",
                     "basic_auth_users.prometheus: must be a bcrypt hash"),
    "simulator-only": ("simulator: {enabled: true, rate: 50}\n", None),
    "one-model": ("models:\n  - name: plain\n", None),
}


def _write(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(CASES[name][0])
    # The web config the web-* cases point at: a plain-text password where a bcrypt hash belongs.
    (tmp_path / f"{name}.web.yml").write_text("basic_auth_users:\n  prometheus: secret\n")
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_config_verdict(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, name)
    code = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    expected = CASES[name][1]
    if expected is None:
        assert code == 0 and f"{path}: OK" in out, err
    else:
        assert code == 2 and out == ""
        where = tmp_path / f"{name}.web.yml" if name.startswith("web-") else path
        assert err.startswith(f"modelmon: error: {where}: {expected}"), err


def test_a_simulator_only_config_monitors_the_simulated_model(tmp_path: Path) -> None:
    # The Kubernetes base ConfigMap is such a config: without the model the simulator's events went nowhere.
    cfg = load_config(_write(tmp_path, "simulator-only"))
    assert cfg.models == []
    prepare(cfg)
    assert [m.name for m in cfg.models] == ["demo"] and cfg.models[0].features
    assert load_profiles(cfg)["demo"] is not None


def test_window_memory_is_bounded_by_the_machine() -> None:
    cfg = config_from_dict({"models": [{"name": "m", "features": [{"name": "x"}, {"name": "c", "type": "categorical"}]}],
                            "windows": [{"duration": "5m", "max_events": 1_000_000},
                                        {"duration": "1h", "max_events": 1_000_000}]}, source="m.yml")
    need = sum(window_bytes(cfg.models[0], w.max_events) for w in cfg.windows)
    assert need == 2 * 1_000_000 * (67 + 10 + 2 + 1)  # fixed, numerical, categorical, outlier flag
    with pytest.raises(ConfigError, match=r"^m\.yml: windows: the windows need 0\.1 GiB at start-up "
                                          r"\(1 model\(s\) x 2 window\(s\)\), more than this machine's 0\.1 GiB"):
        prepare(cfg, memory_bytes=need - 1)
    (warning,) = prepare(cfg, memory_bytes=need + 1)
    assert str(warning).startswith("m.yml: windows: the windows need") and "over half" in str(warning)
    assert prepare(cfg, memory_bytes=4 * need) == []


def test_window_memory_estimate_matches_the_allocation() -> None:
    cfg = config_from_dict({"simulator": {"enabled": True}, "windows": [{"duration": "5m", "max_events": 200_000}]})
    prepare(cfg)
    profiles = load_profiles(cfg)
    tracemalloc.start()
    try:
        pipeline = Pipeline(cfg, profiles)
        allocated, _ = tracemalloc.get_traced_memory()
        assert pipeline is not None  # alive while measured
    finally:
        tracemalloc.stop()
    estimate = window_bytes(cfg.models[0], 200_000)
    assert abs(allocated - estimate) / estimate < 0.05, (allocated, estimate)


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(CASES))
def test_serve_gives_the_same_verdict(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, name)
    check_code = main(["check-config", str(path)])
    check_err = capsys.readouterr().err
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        serve = subprocess.Popen([sys.executable, "-m", "modelmon", "serve", "--config", str(path),
                                  "--web.listen-address=127.0.0.1:0"], stdout=fh, stderr=subprocess.STDOUT)
    try:
        if check_code == 0:
            wait_until(lambda: "exporter started" in log.read_text() or serve.poll() is not None, 60,
                       what="modelmon serve to start")
            assert serve.poll() is None, log.read_text()
        else:
            assert serve.wait(timeout=60) == 2, log.read_text()
            errors = [ln for ln in log.read_text().splitlines() if ln.startswith("modelmon: error:")]
            assert errors == [check_err.strip()], (errors, check_err)
    finally:
        if serve.poll() is None:
            serve.terminate()
            assert serve.wait(timeout=20) == 0
