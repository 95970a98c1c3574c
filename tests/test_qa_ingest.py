"""Hostile bodies found by QA against the ingestion API: byte-order marks,
UTF-16 text, a charset other than UTF-8, integers too long for the
interpreter's int conversion.  Each asserts what the client gets, that the
refusal is counted, that the good events around it are kept and that
``/metrics`` stays valid (``promtool check metrics``)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from modelmon.app import Exporter
from modelmon.config import config_from_dict
from modelmon.ingest import ItemError
from modelmon.ingest.values import timestamp
from servers import first_sample

EVENTS = "/api/v1/events"
GOOD = {"model": "fraud", "features": {"amount": 12.5, "country": "US"}, "prediction": 1}


def qa_config(tmp_path: Path) -> dict[str, Any]:
    ref = tmp_path / "ref.csv"
    ref.write_text("amount,country\n" + "".join(f"{i % 50},{['US', 'DE'][i % 2]}\n" for i in range(200)))
    return {
        "models": [{
            "name": "fraud", "task": "classification",
            "features": [{"name": "amount", "type": "numerical"}, {"name": "country", "type": "categorical"}],
            "reference": {"path": str(ref)}, "drift": {"recompute_interval": 0},
        }],
        "windows": [{"duration": "5m", "max_events": 10000}],
    }


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Exporter]:
    exp = Exporter(config_from_dict(qa_config(tmp_path)))
    exp.start()
    yield exp
    exp.stop()


def post(exp: Exporter, body: bytes, content_type: str = "application/json", path: str = EVENTS) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{exp.port}{path}", data=body,
                         headers={"Content-Type": content_type}, timeout=10)


def scrape(exp: Exporter) -> str:
    """One /metrics scrape: 200, and promtool finds nothing but lint hints about counters."""
    r = requests.get(f"http://127.0.0.1:{exp.port}/metrics", timeout=10)
    assert r.status_code == 200
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], check=False, input=r.content, capture_output=True, timeout=30)
        problems = [ln for ln in (p.stdout + p.stderr).decode().splitlines() if "should have" not in ln]
        assert not problems, problems
    return r.text


def sample(text: str, name: str, **labels: str) -> float:
    return first_sample(text, name, **labels) or 0.0


def events_seen(exp: Exporter) -> float:
    return sample(scrape(exp), "modelmon_requests_total", model="fraud")





def test_utf8_bom_before_a_json_array_is_skipped(exporter: Exporter) -> None:
    # A BOM-prefixed body (Windows tools, PowerShell's Out-File) was read as one NDJSON line
    # holding an array and refused as "must be a JSON object", losing every event in it.
    body = b"\xef\xbb\xbf" + json.dumps([GOOD, GOOD]).encode()
    r = post(exporter, body)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    r = post(exporter, b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n" + json.dumps(GOOD).encode(),
             "application/x-ndjson")
    assert r.json()["accepted"] == 2, r.text
    assert events_seen(exporter) == 4


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_and_utf32_bodies_are_refused_naming_the_encoding(exporter: Exporter, encoding: str) -> None:
    # These were parsed by the standard library's encoding guess into an array "item",
    # then refused with a misleading "item 0: must be a JSON object".
    r = post(exporter, json.dumps([GOOD]).encode(encoding))
    assert r.status_code == 400
    assert "UTF-8" in r.json()["error"] and "item 0" not in r.json()["error"]
    text = scrape(exporter)
    assert sample(text, "modelmon_events_rejected_total", source="api", reason="malformed") == 1
    assert post(exporter, json.dumps([GOOD]).encode()).status_code == 200  # the exporter keeps serving


def test_integer_longer_than_the_int_conversion_limit_refuses_only_its_item(exporter: Exporter) -> None:
    # A 5000-digit integer made the whole JSON array "invalid JSON: Exceeds the limit (4300 digits)
    # ... use sys.set_int_max_str_digits()": the good events beside it were lost.
    huge = "9" * 5000
    bad = json.dumps({"model": "fraud", "features": {"amount": 0}}).replace('"amount": 0', f'"amount": {huge}')
    body = ("[" + json.dumps(GOOD) + "," + bad + "," + json.dumps(GOOD) + "]").encode()
    r = post(exporter, body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 2
    assert out["rejected"] == [{"index": 1, "reason": "non_finite", "error": "features.amount: must be finite"}]
    assert "set_int_max_str_digits" not in r.text
    # the same as a label-valued field: refused by type, never a 5000-character label value
    r = post(exporter, ('[{"model": "fraud", "version": ' + huge + "}]").encode())
    assert r.status_code == 400 and r.json()["rejected"][0]["error"].startswith("version:")
    text = scrape(exporter)
    assert sample(text, "modelmon_events_rejected_total", source="api", reason="non_finite") == 1
    assert sample(text, "modelmon_requests_total", model="fraud") == 2


@pytest.fixture
def kolkata_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC+05:30 for the test."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_iso_timestamp_without_offset_is_utc_whatever_the_local_zone(kolkata_time: None) -> None:
    # "2020-01-01T00:00:00" was read in the exporter's local time zone: 5.5 h off in a UTC+05:30 container.
    assert timestamp("2020-01-01T00:00:00", 0.0) == timestamp("2020-01-01T00:00:00Z", 0.0) == 1577836800.0
    assert timestamp("2020-01-01T05:30:00+05:30", 0.0) == 1577836800.0


@pytest.mark.parametrize("value", ["1960-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "0001-01-01"])
def test_iso_timestamp_before_the_epoch_is_refused_like_a_negative_number(value: str) -> None:
    # These were accepted as negative timestamps (the numeric spelling -1 is refused), or, for
    # "0001-01-01", refused as "not an ISO 8601 time".
    with pytest.raises(ItemError, match="timestamp: must be after 1970-01-01T00:00:00Z"):
        timestamp(value, 0.0)


def test_pre_epoch_iso_timestamp_refuses_only_its_item(exporter: Exporter) -> None:
    body = json.dumps([GOOD, {**GOOD, "timestamp": "1960-01-01T00:00:00Z"}, GOOD]).encode()
    out = post(exporter, body).json()
    assert out["accepted"] == 2
    assert out["rejected"] == [{"index": 1, "reason": "invalid_field", "error": "timestamp: must be after 1970-01-01T00:00:00Z"}]


def post_gzip(exp: Exporter, body: bytes, encoding: str = "gzip") -> requests.Response:
    return requests.post(f"http://127.0.0.1:{exp.port}{EVENTS}", data=body, timeout=10,
                         headers={"Content-Type": "application/x-ndjson", "Content-Encoding": encoding})


def ndjson(n: int) -> bytes:
    return ("\n".join([json.dumps(GOOD)] * n) + "\n").encode()


def test_truncated_gzip_body_is_refused_not_half_accepted(exporter: Exporter) -> None:
    # A gzip stream cut in half was decoded as far as it went: 200 with 41 of 1000 events accepted,
    # one counted as malformed, the other 958 lost without a count.
    z = gzip.compress(ndjson(1000))
    r = post_gzip(exporter, z[: len(z) // 2])
    assert r.status_code == 400 and "truncated gzip body" in r.json()["error"]
    r = post_gzip(exporter, z[:-8])  # only the trailer (CRC, size) missing
    assert r.status_code == 400
    text = scrape(exporter)
    assert sample(text, "modelmon_events_rejected_total", source="api", reason="malformed") == 2
    assert sample(text, "modelmon_requests_total", model="fraud") == 0


def test_multi_member_gzip_keeps_every_member(exporter: Exporter) -> None:
    # Concatenated gzip members (RFC 1952 2.2; what appending compressed chunks gives) lost all but the first.
    r = post_gzip(exporter, gzip.compress(ndjson(3)) + gzip.compress(ndjson(4)))
    assert r.status_code == 200 and r.json()["accepted"] == 7
    r = post_gzip(exporter, gzip.compress(ndjson(3)) + b"trailing garbage")
    assert r.status_code == 400 and "invalid gzip body" in r.json()["error"]


def test_raw_deflate_is_accepted_like_zlib_deflate(exporter: Exporter) -> None:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = c.compress(ndjson(5)) + c.flush()
    assert post_gzip(exporter, raw, "deflate").json()["accepted"] == 5
    assert post_gzip(exporter, zlib.compress(ndjson(2)), "deflate").json()["accepted"] == 2
    assert events_seen(exporter) == 7


def test_refusals_repeat_a_long_or_broken_key_only_shortened(exporter: Exporter) -> None:
    # A 100,000-character unknown key came back twice in the 400 (200 kB per refused item, up to
    # 1000 items listed); a lone-surrogate key came back as a lone surrogate.
    long_key = "k" * 100_000
    r = post(exporter, json.dumps([{long_key: 1, "model": "fraud"}]).encode())
    assert r.status_code == 400 and len(r.content) < 2000
    assert r.json()["rejected"][0]["error"].startswith("k" * 64 + "...: unknown field")
    r = post(exporter, b'[{"model": "fraud", "probabilities": {"\\ud800": NaN}}]')
    msg = r.json()["rejected"][0]["error"]
    assert msg == "probabilities.\\ud800: must be finite"
    msg.encode("utf-8")  # no lone surrogate in what the client reads
    r = post(exporter, json.dumps([{"id": "x", "label": 1, long_key: 2}]).encode(), path="/api/v1/labels")
    assert r.status_code == 400 and len(r.content) < 2000
