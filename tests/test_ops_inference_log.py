"""Structured inference logs: record shape, privacy (log_value, hashing, no token),
sampling, rotation, and a real exporter writing them for events posted to its API."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelmon.app import Exporter
from modelmon.config import ConfigError, config_from_dict
from modelmon.events import EventBatch
from modelmon.inference_log import InferenceLogger


def _cfg(logs: dict, **model: object) -> object:
    return config_from_dict({
        "models": [{"name": "fraud", "version": "1.0", "features": [
            {"name": "amount", "type": "numerical", "log_value": True},
            {"name": "email", "type": "categorical", "log_value": True},
            {"name": "ssn", "type": "categorical"},  # never logged: log_value is off
        ], **model}],
        "logs": {"enabled": True, **logs},
    })


def _batch(n: int = 3, errors: list | None = None, ids: list | None = None) -> EventBatch:
    return EventBatch(
        model="fraud", timestamps=[1_700_000_000.25 + i for i in range(n)], versions=["2.0"] + [""] * (n - 1),
        ids=ids or [f"req-{i}" for i in range(n)], latency_seconds=[0.12, None, math.nan][:n] + [0.1] * max(0, n - 3),
        errors=errors or [None, "timeout", None][:n] + [None] * max(0, n - 3),
        features={"amount": [10.5, 20.0, None][:n] + [1.0] * max(0, n - 3),
                  "email": ["a@x.org", "b@y.org", None][:n] + ["c"] * max(0, n - 3),
                  "ssn": ["123-45-6789"] * n},
        predictions=[1, None, 0][:n] + [0] * max(0, n - 3), scores=[0.9, None, 0.2][:n] + [0.1] * max(0, n - 3),
        labels=[None] * n, attributes={"user": ["u1", "u2", "u3"][:n] + ["u"] * max(0, n - 3), "region": ["eu"] * n},
        source="api",
    )


def _lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_record_fields_and_privacy_defaults() -> None:
    buf = io.StringIO()
    InferenceLogger(_cfg({}), stream=buf)(_batch())
    recs = _lines(buf)
    assert len(recs) == 3
    ok, failed, nan = recs
    assert ok == {
        "ts": "2023-11-14T22:13:20.250Z", "level": "info", "logger": "modelmon.inference", "msg": "prediction",
        "model": "fraud", "version": "2.0", "request_id": "req-0", "latency_seconds": 0.12, "prediction": 1,
        "error": None, "source": "api", "score": 0.9, "features": {"amount": 10.5, "email": "a@x.org"},
    }
    # The failure is logged at error level with its reason; the default version fills in.
    assert failed["level"] == "error" and failed["error"] == "timeout" and failed["msg"] == "prediction failed"
    assert failed["version"] == "1.0" and failed["latency_seconds"] is None
    assert nan["latency_seconds"] is None  # NaN is not JSON: logged as null
    text = buf.getvalue()
    assert "123-45-6789" not in text and "ssn" not in text  # log_value off: never logged
    assert "u1" not in text and "region" not in text  # attributes off unless listed


def test_hashed_fields_are_salted_hmac(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_SALT", "pepper")
    buf = io.StringIO()
    cfg = _cfg({"hash_fields": ["request_id", "features.email", "attributes.user"], "hash_salt_env": "LOG_SALT",
                "attributes": ["user", "region"]})
    InferenceLogger(cfg, stream=buf)(_batch())
    rec = _lines(buf)[0]

    def ref(v: str) -> str:  # independent HMAC-SHA256 reference
        return "sha256:" + hmac.new(b"pepper", v.encode(), hashlib.sha256).hexdigest()[:16]

    assert rec["request_id"] == ref("req-0")
    assert rec["features"] == {"amount": 10.5, "email": ref("a@x.org")}
    assert rec["attributes"] == {"user": ref("u1"), "region": "eu"}
    assert "a@x.org" not in buf.getvalue() and "req-0" not in buf.getvalue()


@pytest.mark.parametrize("logs, path, message", [
    ({"hash_fields": ["features.ssn"]}, "logs.hash_fields[0]", "log_value: true"),
    ({"hash_fields": ["attributes.user"]}, "logs.hash_fields[0]", "logs.attributes"),
    ({"hash_fields": ["token"]}, "logs.hash_fields[0]", "must be one of"),
    ({"hash_fields": ["request_id"], "hash_salt_env": "NO_SUCH_SALT_VAR"}, "logs.hash_salt_env", "not set"),
])
def test_config_errors_name_the_field(logs: dict, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        InferenceLogger(_cfg(logs), stream=io.StringIO())
    assert err.value.field_path == path and message in str(err.value)


def test_sampling_keeps_the_configured_share_and_every_error() -> None:
    n = 20_000
    errors = [("error" if i % 50 == 0 else None) for i in range(n)]
    batch = _batch(n, errors=errors, ids=[f"id-{i}" for i in range(n)])
    buf = io.StringIO()
    InferenceLogger(_cfg({"sample_ratio": 0.25}), stream=buf)(batch)
    recs = _lines(buf)
    logged_errors = sum(r["error"] is not None for r in recs)
    ok = len(recs) - logged_errors
    assert logged_errors == n // 50  # errors_always
    expected = 0.25 * (n - n // 50)
    sd = math.sqrt(expected * 0.75)
    assert abs(ok - expected) < 5 * sd, (ok, expected)
    # The decision is a function of the id: a second logger keeps exactly the same requests.
    buf2 = io.StringIO()
    InferenceLogger(_cfg({"sample_ratio": 0.25}), stream=buf2)(batch)
    assert buf2.getvalue() == buf.getvalue()
    # And with errors_always off, errors are sampled too.
    buf3 = io.StringIO()
    InferenceLogger(_cfg({"sample_ratio": 0.0, "errors_always": False}), stream=buf3)(batch)
    assert buf3.getvalue() == ""


def test_file_output_rotates(tmp_path: Path) -> None:
    cfg = _cfg({"output": str(tmp_path / "inference.log"), "max_bytes": 2000, "backup_count": 2})
    logger = InferenceLogger(cfg)
    for _ in range(30):
        logger(_batch())
    logger.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["inference.log", "inference.log.1", "inference.log.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 2000 + 1500  # at most one batch over the limit
        for line in p.read_text().splitlines():
            json.loads(line)


def _scrape(exp: Exporter, name: str, **labels: str) -> float | None:
    """The sum of the matching samples in the exporter's /metrics text (None: no such series)."""
    values = [s.value for fam in text_string_to_metric_families(generate_latest(exp.registry).decode())
              for s in fam.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(values) if values else None


def _directory_gone(tmp_path: Path) -> tuple[Path, Callable[[], None]]:
    target = tmp_path / "logs" / "inference.jsonl"
    target.parent.mkdir()
    return target, lambda: shutil.rmtree(target.parent)


def _directory_in_the_way(tmp_path: Path) -> tuple[Path, Callable[[], None]]:
    target = tmp_path / "inference.jsonl"
    return target, target.mkdir


def _disk_full(tmp_path: Path) -> tuple[Path, Callable[[], None]]:
    full = Path("/dev/full")  # every write fails with ENOSPC, whoever writes (root included)
    if not full.exists():
        pytest.skip("no /dev/full here")
    return full, lambda: None


@pytest.mark.parametrize("broken", [_directory_gone, _directory_in_the_way, _disk_full])
def test_failed_writes_are_counted_logged_once_and_the_events_still_monitored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        broken: Callable[[Path], tuple[Path, Callable[[], None]]]) -> None:
    target, break_it = broken(tmp_path)
    cfg = config_from_dict({"models": [{"name": "fraud", "version": "1.0"}],
                            "logs": {"enabled": True, "output": str(target)}})
    exp = Exporter(cfg)  # the config checks pass: the output is broken only now
    try:
        break_it()
        with caplog.at_level(logging.WARNING):
            exp.pipeline.submit(_batch(3))  # never raises into the pipeline
            exp.pipeline.submit(_batch(4))
        assert _scrape(exp, "modelmon_inference_log_write_failures_total") == 2
        assert _scrape(exp, "modelmon_inference_log_lines_dropped_total") == 7
        assert _scrape(exp, "modelmon_inference_log_lines_written_total") == 0
        # The monitor counted every event all the same.
        assert _scrape(exp, "modelmon_requests_total", model="fraud") == 7
        # One warning for both failures (rate-limited), and no "listener failed" traceback from the pipeline.
        assert [r.name for r in caplog.records] == ["modelmon.inference_log"], caplog.text
        assert "modelmon_inference_log_write_failures_total" in caplog.records[0].getMessage()
    finally:
        exp.app.close()
        exp.server.sock.close()


def test_writes_resume_once_the_directory_is_back(tmp_path: Path) -> None:
    target = tmp_path / "logs" / "inference.jsonl"
    target.parent.mkdir()
    logger = InferenceLogger(_cfg({"output": str(target)}))
    shutil.rmtree(target.parent)
    logger(_batch(3))
    assert (logger.write_failures, logger.lines_dropped, logger.lines_written) == (1, 3, 0)
    target.parent.mkdir()
    logger(_batch(2))
    logger.close()
    assert (logger.write_failures, logger.lines_written) == (1, 2)
    assert len(target.read_text().splitlines()) == 2


@pytest.mark.e2e
def test_real_exporter_logs_posted_events_without_the_token(servers, tmp_path: Path) -> None:
    token = "s3cr3t-token-value-42"
    log_path = tmp_path / "inference.log"
    (tmp_path / "ref.csv").write_text("amount\n" + "\n".join(str(i) for i in range(200)) + "\n")
    (tmp_path / "modelmon.yml").write_text(yaml.safe_dump({
        "models": [{"name": "fraud", "version": "3.1", "reference": {"path": "ref.csv"},
                    "features": [{"name": "amount", "type": "numerical"}]}],
        "ingest": {"token_env": "MODELMON_TEST_TOKEN"},
        "logs": {"enabled": True, "output": str(log_path), "hash_fields": ["request_id"]},
    }))
    exp = servers.exporter("--config", str(tmp_path / "modelmon.yml"), env={"MODELMON_TEST_TOKEN": token})
    events = [{"model": "fraud", "id": f"r{i}", "features": {"amount": i}, "prediction": i % 2,
               "latency_seconds": 0.05, "error": "timeout" if i == 3 else None} for i in range(5)]
    r = requests.post(exp.url + "/api/v1/events", json=events, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    bad = requests.post(exp.url + "/api/v1/events", json=events, headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert bad.status_code == 401
    recs = [json.loads(x) for x in log_path.read_text().splitlines()]
    assert [r["request_id"].startswith("sha256:") for r in recs] == [True] * 5
    assert [r["level"] for r in recs] == ["info", "info", "info", "error", "info"]
    assert recs[3]["error"] == "timeout" and recs[0]["version"] == "3.1"
    assert "features" not in recs[0]  # amount has no log_value
    exp.stop()
    assert token not in log_path.read_text()
    assert token not in exp.process.log_path.read_text()  # nor in the exporter's own logs


@pytest.mark.parametrize("move", ["remove", "rename"])
def test_a_log_file_removed_or_rotated_away_is_written_afresh(tmp_path: Path, move: str) -> None:
    target = tmp_path / "inference.jsonl"
    logger = InferenceLogger(_cfg({"output": str(target)}))
    logger(_batch(3))
    if move == "remove":
        target.unlink()
    else:  # logrotate's default: rename, then expect the writer to open a new file
        target.rename(tmp_path / "inference.jsonl.1")
    logger(_batch(2))
    logger.close()
    assert len(target.read_text().splitlines()) == 2  # not lost to the unlinked or renamed inode
    assert (logger.write_failures, logger.lines_written) == (0, 5)
    if move == "rename":
        assert len((tmp_path / "inference.jsonl.1").read_text().splitlines()) == 3
