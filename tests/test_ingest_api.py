"""POST /api/v1/events through real HTTP: good events are counted, every kind of
bad input gets its status, reason and a message naming the field, and the
exporter keeps serving."""

from __future__ import annotations

import gzip
import json
import logging
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from modelmon.app import Exporter
from modelmon.config import ConfigError, config_from_dict
from modelmon.httpfields import foreign_charset, media_type, unmet_expectation
from servers import first_sample, wait_until


def write_reference(path: Path, rows: int = 400) -> Path:
    lines = ["amount,age,country"]
    for i in range(rows):
        lines.append(f"{10 + i % 50},{20 + i % 40},{['US', 'DE', 'FR'][i % 3]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def base_config(tmp_path: Path, **ingest: Any) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": "fraud",
                "task": "classification",
                "features": [
                    {"name": "amount", "type": "numerical"},
                    {"name": "age", "type": "numerical"},
                    {"name": "country", "type": "categorical", "categories": ["US", "DE", "FR"]},
                ],
                "reference": {"path": str(write_reference(tmp_path / "ref.csv"))},
                "fairness": {"attribute": "gender", "groups": ["f", "m"]},
                "drift": {"recompute_interval": 0},
            },
            {"name": "price", "task": "regression", "drift": {"recompute_interval": 0}},
        ],
        "windows": [{"duration": "5m", "max_events": 10000}],
        "ingest": ingest,
    }


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Exporter]]:
    started: list[Exporter] = []

    def _start(**ingest: Any) -> Exporter:
        exp = Exporter(config_from_dict(base_config(tmp_path, **ingest)))
        exp.start()
        started.append(exp)
        return exp

    yield _start
    for exp in started:
        exp.stop()


def url(exp: Exporter, path: str = "/api/v1/events") -> str:
    return f"http://127.0.0.1:{exp.port}{path}"


def sample(exp: Exporter, name: str, **labels: str) -> float | None:
    text = requests.get(url(exp, "/metrics"), timeout=5).text
    return first_sample(text, name, **labels)


def good(i: int = 0, **over: Any) -> dict[str, Any]:
    ev = {"model": "fraud", "id": f"r{i}", "features": {"amount": 12.5 + i, "age": 31, "country": "DE"},
          "prediction": 1, "score": 0.8, "latency_seconds": 0.05, "attributes": {"gender": "f"}}
    ev.update(over)
    return ev


def post(exp: Exporter, body: Any, path: str = "/api/v1/events", **kw: Any) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    kw["headers"] = {"Content-Type": "application/json", **kw.get("headers", {})}
    return requests.post(url(exp, path), data=data, timeout=10, **kw)


def test_good_batch_is_accepted_and_counted(start):
    exp = start()
    r = post(exp, [good(i) for i in range(5)])
    assert r.status_code == 200
    assert r.json() == {"accepted": 5, "rejected_count": 0, "rejected": []}
    assert sample(exp, "modelmon_events_accepted_total", model="fraud", source="api") == 5
    assert sample(exp, "modelmon_requests_total", model="fraud", version="unknown") == 5
    assert sample(exp, "modelmon_feature_values", model="fraud", feature="amount", window="5m") == 5
    assert sample(exp, "modelmon_request_duration_seconds_count", model="fraud") == 5


def test_ndjson_single_object_and_client_source(start):
    exp = start()
    body = "\n".join(json.dumps(good(i)) for i in range(3)) + "\n\n"
    r = post(exp, body, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200 and r.json()["accepted"] == 3
    pretty = json.dumps(good(9), indent=2)  # one pretty-printed object
    assert post(exp, pretty).json()["accepted"] == 1
    r = post(exp, [good(10)], headers={"X-Modelmon-Source": "client"})
    assert r.json()["accepted"] == 1
    assert sample(exp, "modelmon_events_accepted_total", model="fraud", source="api") == 4
    assert sample(exp, "modelmon_events_accepted_total", model="fraud", source="client") == 1


def test_partial_batch_keeps_good_events_and_names_each_field(start):
    exp = start()
    items = [
        good(0),
        good(1, features={"amount": "12", "age": 3}),  # 1: string for a numerical feature
        good(2, prediction={"class": 1}),  # 2: object as prediction
        {"id": "x"},  # 3: no model
        "not an object",  # 4
        good(5, model="nope"),  # 5: unknown model
        good(6, latency_seconds=-1),  # 6
        good(7, timestamp="yesterday"),  # 7
        good(8, colour="red"),  # 8: unknown top-level field
        good(9, features=[1, 2]),  # 9
        good(10, score="high"),  # 10
        good(11, features={"amount": None, "country": 7}),  # 11: fine (null = missing, 7 -> "7")
        good(12),
    ]
    body = json.dumps(items)[:-1] + ', {"model": "fraud", "features": {"amount": NaN}}]'  # 13: NaN literal
    r = post(exp, body)
    assert r.status_code == 200
    out = r.json()
    assert out["accepted"] == 3
    got = {x["index"]: (x["reason"], x["error"]) for x in out["rejected"]}
    assert got == {
        1: ("invalid_field", "features.amount: must be a number or null"),
        2: ("invalid_field", "prediction: must be a string, number or boolean"),
        3: ("invalid_field", "model: required"),
        4: ("malformed", "must be a JSON object"),
        5: ("unknown_model", "model: unknown model 'nope'"),
        6: ("invalid_field", "latency_seconds: must be >= 0"),
        7: ("invalid_field", "timestamp: must be seconds since the epoch or an ISO 8601 time"),
        8: ("invalid_field", got[8][1]),
        9: ("invalid_field", "features: must be an object"),
        10: ("invalid_field", "score: must be a number"),
        13: ("non_finite", "features.amount: must be finite"),
    }
    assert got[8][1].startswith("colour: unknown field")
    assert out["rejected_count"] == 11
    # The good events are in; the bad ones are counted per reason.
    assert sample(exp, "modelmon_events_accepted_total", model="fraud", source="api") == 3
    assert sample(exp, "modelmon_requests_total", model="fraud", version="unknown") == 3
    assert sample(exp, "modelmon_feature_values", model="fraud", feature="amount", window="5m") == 2
    assert sample(exp, "modelmon_feature_missing_ratio", model="fraud", feature="amount", window="5m") == pytest.approx(1 / 3)
    assert sample(exp, "modelmon_events_rejected_total", source="api", reason="invalid_field") == 8
    assert sample(exp, "modelmon_events_rejected_total", source="api", reason="malformed") == 1
    assert sample(exp, "modelmon_events_rejected_total", source="api", reason="unknown_model") == 1
    assert sample(exp, "modelmon_events_rejected_total", source="api", reason="non_finite") == 1


def test_nothing_valid_is_400_naming_the_field(start):
    exp = start()
    r = post(exp, [good(0, features={"age": True})])
    assert r.status_code == 400
    assert r.json()["error"] == "item 0: features.age: must be a number or null"
    r = post(exp, [{"model": "price", "prediction": "cheap"}])
    assert r.status_code == 400 and r.json()["error"] == "item 0: prediction: must be a number"


@pytest.mark.parametrize("body, message", [
    (b"", "empty body"),
    (b"[{\"model\": \"fraud\"", "invalid JSON"),
    (b"42", "item 0: must be a JSON object"),
    (b"{\"a\": 1}\n{broken\n", None),
])
def test_malformed_bodies(start, body, message):
    exp = start()
    r = post(exp, body)
    assert r.status_code == 400
    if message:
        assert message in r.json()["error"]
    else:  # NDJSON: the broken line is an item of its own
        rej = {x["index"]: x for x in r.json()["rejected"]}
        assert rej[1]["reason"] == "malformed" and rej[1]["error"].startswith("line 2: invalid JSON")
        assert rej[0]["reason"] == "invalid_field"
    assert requests.get(url(exp, "/-/healthy"), timeout=5).status_code == 200


def test_ndjson_bad_line_keeps_the_others(start):
    exp = start()
    body = json.dumps(good(0)) + "\n{nope}\n" + json.dumps(good(1)) + "\n"
    r = post(exp, body)
    assert r.status_code == 200
    assert r.json()["accepted"] == 2
    assert [x["index"] for x in r.json()["rejected"]] == [1]


def test_oversized_body_is_413_and_counted(start):
    exp = start(max_body_bytes=2000)
    r = post(exp, [good(i) for i in range(50)])
    assert r.status_code == 413
    assert "max_body_bytes" in r.json()["error"]
    # A small gzip body that inflates past the limit is refused too, without inflating it all.
    bomb = gzip.compress(json.dumps([good(1)] * 500).encode())
    assert len(bomb) < 2000
    r = post(exp, bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    small = gzip.compress(json.dumps([good(1)]).encode())
    r = post(exp, small, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    r = post(exp, small, headers={"Content-Encoding": "br"})
    assert r.status_code == 415
    assert sample(exp, "modelmon_events_rejected_total", source="api", reason="body_too_large") == 2
    assert sample(exp, "modelmon_events_accepted_total", model="fraud", source="api") == 1


def test_unknown_model_404_or_counted_by_policy(start):
    exp = start()
    r = post(exp, [good(0, model="ghost"), good(1, model="ghost")])
    assert r.status_code == 404
    assert r.json()["error"] == "unknown model 'ghost' (not in the exporter's config)"
    assert sample(exp, "modelmon_events_rejected_total", source="api", reason="unknown_model") == 2
    # No label value is ever created for it.
    assert sample(exp, "modelmon_requests_total", model="ghost") is None
    exp2 = start(unknown_model="count")
    r = post(exp2, [good(0, model="ghost")])
    assert r.status_code == 200 and r.json()["accepted"] == 0 and r.json()["rejected"][0]["reason"] == "unknown_model"
    assert sample(exp2, "modelmon_events_rejected_total", source="api", reason="unknown_model") == 1


def test_unknown_features_ignored_and_counted_or_rejected(start):
    exp = start()
    r = post(exp, [good(0, features={"amount": 1.0, "colour": "red", "size": 3})])
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert sample(exp, "modelmon_ingest_unknown_feature_values_total", model="fraud") == 2
    strict = start(unknown_feature="reject")
    r = post(strict, [good(0, features={"amount": 1.0, "colour": "red"}), good(1)])
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert r.json()["rejected"] == [{"index": 0, "reason": "unknown_feature",
                                     "error": "features.colour: not a feature of model 'fraud'"}]
    assert sample(strict, "modelmon_events_rejected_total", source="api", reason="unknown_feature") == 1
    # Whatever happened to the refused event, the good one's columns stayed aligned.
    assert sample(strict, "modelmon_feature_values", model="fraud", feature="amount", window="5m") == 1


def test_bearer_token_required_and_never_logged(start, monkeypatch, caplog):
    secret = "s3cr3t-token-value"
    monkeypatch.setenv("MODELMON_TEST_TOKEN", secret)
    caplog.set_level(logging.DEBUG)
    exp = start(token_env="MODELMON_TEST_TOKEN")
    r = post(exp, [good(0)])
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = post(exp, [good(0)], headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = post(exp, [{"id": "r0", "label": 1}], path="/api/v1/labels", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    r = post(exp, [good(0)], headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert sample(exp, "modelmon_events_rejected_total", source="api", reason="unauthorized") == 3
    assert secret not in caplog.text
    assert secret not in requests.get(url(exp, "/metrics"), timeout=5).text


def test_token_file_and_missing_token_env(tmp_path, monkeypatch):
    monkeypatch.delenv("MODELMON_NO_SUCH_VAR", raising=False)
    with pytest.raises(ConfigError, match="ingest.token_env: environment variable MODELMON_NO_SUCH_VAR"):
        Exporter(config_from_dict(base_config(tmp_path, token_env="MODELMON_NO_SUCH_VAR")))
    (tmp_path / "tok").write_text("file-token\n")
    exp = Exporter(config_from_dict(base_config(tmp_path, token_file=str(tmp_path / "tok"))))
    exp.start()
    try:
        assert post(exp, [good(0)], headers={"Authorization": "Bearer file-token"}).status_code == 200
        assert post(exp, [good(0)], headers={"Authorization": "Bearer file-token2"}).status_code == 401
    finally:
        exp.stop()


def test_overload_sheds_with_429_and_not_ready_with_503(start):
    exp = start(max_concurrent_requests=1)
    api = exp.ingest_api
    api.busy += 1  # one body "being processed" (the counter lives on the server's event loop)
    try:
        r = post(exp, [good(0)])
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert "too many ingestion requests" in r.json()["error"]
    finally:
        api.busy -= 1
    assert post(exp, [good(0)]).status_code == 200
    exp._ready.clear()  # as while stopping
    r = post(exp, [good(1)])
    assert r.status_code == 503
    exp._ready.set()
    assert sample(exp, "modelmon_events_rejected_total", source="api", reason="overloaded") == 2
    assert sample(exp, "modelmon_events_accepted_total", model="fraud", source="api") == 1


def test_connection_flood_is_shed_with_503(tmp_path):
    import socket

    from modelmon.web import ServerLimits

    exp = Exporter(config_from_dict(base_config(tmp_path)), limits=ServerLimits(max_connections=3))
    exp.start()
    held = [socket.create_connection(("127.0.0.1", exp.port)) for _ in range(3)]
    try:
        r = post(exp, [good(0)])
        assert r.status_code == 503 and r.headers["Connection"] == "close"
        assert "too many connections" in r.json()["error"]
    finally:
        for s in held:
            s.close()
    try:
        wait_until(lambda: post(exp, [good(0)]).status_code == 200, 10, what="a free connection slot")
        assert sample(exp, "modelmon_http_requests_refused_total", reason="too_many_connections") == 1
    finally:
        exp.stop()


def test_wrong_method_and_path(start):
    exp = start()
    assert requests.get(url(exp), timeout=5).status_code == 405
    assert requests.post(url(exp, "/api/v1/nothing"), data="[]", timeout=5).status_code == 404
    r = post(exp, [])
    assert r.status_code == 200 and r.json()["accepted"] == 0


def test_values_are_canonicalised(start):
    exp = start()
    r = post(exp, [
        good(0, prediction=True, label=1.0, timestamp="2026-01-01T00:00:00+00:00"),
        good(1, prediction=0, label=False, error="timeout"),
        good(2, probabilities={"0": 0.3, "1": 0.7}, score=None, error=True),
    ])
    assert r.json()["accepted"] == 3, r.json()
    assert sample(exp, "modelmon_labelled_events_total", model="fraud") == 2
    assert sample(exp, "modelmon_correct_predictions_total", model="fraud") == 2  # true == 1.0, 0 == false
    assert sample(exp, "modelmon_request_errors_total", model="fraud", reason="timeout") == 1
    assert sample(exp, "modelmon_request_errors_total", model="fraud", reason="error") == 1


# --------------------------------------------------------------------------- header fields: charset, Expect


@pytest.mark.parametrize("ctype", [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=UTF-8",
    'application/json; charset="UTF-8"',
    "Application/JSON ;  Charset = utf-8 ; foo=bar",
    "application/x-ndjson; foo=bar; charset=utf8",
    "application/json; ;=;charset",  # junk parameters are skipped, not a crash
    'application/json; x="a;charset=latin-1"; charset=utf-8',  # a quoted ';' does not split
    "application/json; charset=",
])
def test_utf8_or_no_charset_is_accepted(start, ctype):
    exp = start()
    r = post(exp, [good(0)], headers={"Content-Type": ctype})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    assert not sample(exp, "modelmon_events_rejected_total", source="api", reason="unsupported_media_type")


@pytest.mark.parametrize("ctype, shown", [
    ("application/json; charset=latin-1", "latin-1"),
    ('application/json; charset="ISO-8859-1"', "ISO-8859-1"),
    ("application/json;charset=utf-16", "utf-16"),
    ("application/x-ndjson; foo=1; charset=windows-1252", "windows-1252"),
    ("application/json; charset=utf-8; charset=latin-1", "latin-1"),  # a second charset is not ignored
])
def test_other_charsets_are_415_naming_the_charset(start, ctype, shown):
    exp = start()
    body = json.dumps([good(0, prediction="é")]).encode("latin-1")  # what a latin-1 client would send
    for path in ("/api/v1/events", "/api/v1/labels"):
        r = post(exp, body, path=path, headers={"Content-Type": ctype})
        assert r.status_code == 415, r.text
        assert repr(shown) in r.json()["error"] and "UTF-8" in r.json()["error"]
        assert "charset=utf-8" in r.json()["error"]
    assert sample(exp, "modelmon_events_rejected_total", source="api", reason="unsupported_media_type") == 2
    assert not sample(exp, "modelmon_events_rejected_total", source="api", reason="malformed")
    assert not sample(exp, "modelmon_events_accepted_total", model="fraud", source="api")


def test_a_long_charset_is_cut_in_the_message(start):
    exp = start()
    r = post(exp, [good(0)], headers={"Content-Type": "application/json; charset=" + "x" * 5000})
    assert r.status_code == 415 and len(r.json()["error"]) < 250
    assert sample(exp, "modelmon_events_rejected_total", source="api", reason="unsupported_media_type") == 1


@pytest.mark.parametrize("value, mtype, charset", [
    (None, "", None),
    ("", "", None),
    (";", "", None),
    ("application/json; ;=;charset", "application/json", None),
    ('application/json; charset="', "application/json", '"'),
    ('application/json; charset="lat\\"in"; x', "application/json", 'lat"in'),
    ("application/json; charset = ' latin-1 '", "application/json", "' latin-1 '"),
    ("application/json;;;charset=latin-1;;", "application/json", "latin-1"),
    ('a/b; charset="utf-8"; charset="utf-8"', "a/b", None),
])
def test_media_type_parsing_never_raises(value, mtype, charset):
    mt = media_type(value)
    assert mt.type == mtype and foreign_charset(mt) == charset


def test_expect_members():
    assert unmet_expectation([]) is None and unmet_expectation(["", " , "]) is None
    assert unmet_expectation(["100-Continue"]) is None
    assert unmet_expectation(["100-continue", "x=1"]) == "x=1"


def _raw(exp: Exporter, data: bytes, then: bytes | None = None, timeout: float = 3.0) -> bytes:
    """Send ``data``; once ``100 Continue`` arrives, ``then``; everything answered until the server closes."""
    with socket.create_connection(("127.0.0.1", exp.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if then is not None and b" 100 Continue\r\n\r\n" in out:
                    s.sendall(then)
                    then = None
        except TimeoutError:
            pass
        return out


def _head(path: str, body: bytes, *fields: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json", f"Content-Length: {len(body)}",
             *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("expect", ["999-nope", "100-continue, 999-nope", "100-continuex"])
def test_unknown_expectation_is_417_closed_and_the_body_never_read(start, expect):
    exp = start()
    body = json.dumps([good(0)]).encode()
    pipelined = _head("/api/v1/events", body, "Connection: close") + body
    for path in ("/api/v1/events", "/api/v1/labels"):
        answer = _raw(exp, _head(path, body, f"Expect: {expect}") + body + pipelined)
        statuses = [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
        assert statuses == [417], answer  # answered at once, then closed: the pipelined request is not run
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert b"\r\nconnection: close" in head.lower()
        assert "only 100-continue" in json.loads(payload)["error"]
    assert sample(exp, "modelmon_events_rejected_total", source="api", reason="malformed") == 2
    assert not sample(exp, "modelmon_events_accepted_total", model="fraud", source="api")


def test_expect_100_continue_is_answered_before_the_body(start):
    exp = start(max_body_bytes=2000)
    body = json.dumps([good(0)]).encode()
    answer = _raw(exp, _head("/api/v1/events", body, "Expect: 100-Continue", "Connection: close"), then=body)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), answer
    assert json.loads(answer.rsplit(b"\r\n\r\n", 1)[1])["accepted"] == 1
    # A body over the limit, or a refused request, gets its final answer instead of 100 Continue.
    big = b"[" + b" " * 3000 + b"]"
    answer = _raw(exp, _head("/api/v1/events", big, "Expect: 100-continue"), then=big)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    answer = _raw(exp, _head("/api/v1/events", body, "Expect: 100-continue").replace(b"application/json", b"text/plain"),
                  then=body)
    assert answer.startswith(b"HTTP/1.1 415 "), answer
    assert requests.post(url(exp), data=body, headers={"Content-Type": "application/json", "Expect": "100-continue"},
                         timeout=5).status_code == 200
    assert sample(exp, "modelmon_events_accepted_total", model="fraud", source="api") == 2


def test_categorical_values_spelled_as_missing_are_missing_as_in_reference_files(start):
    """A reference file's "NA" or empty cell is a null; the same spelling over the API must be one too,
    or the monitor would see an unseen category (drift) and too few missing values."""
    exp = start()
    spellings = ["NA", "", "null", "N/A", "None", "#N/A"]
    events = [good(i, features={"amount": 12.5, "age": 31, "country": c}) for i, c in enumerate(spellings)]
    events += [good(100 + i) for i in range(4)]  # country DE
    r = post(exp, events)
    assert r.status_code == 200 and r.json()["accepted"] == 10
    assert sample(exp, "modelmon_feature_missing_ratio", model="fraud", feature="country", window="5m") == \
        pytest.approx(6 / 10)
    assert sample(exp, "modelmon_feature_values", model="fraud", feature="country", window="5m") == 4
    # The same through the item-by-item path (an unknown field elsewhere in the body sends it there).
    r = post(exp, [good(200, features={"amount": 1.0, "age": 30, "country": "NA", "extra": 1})])
    assert r.status_code == 200
    assert sample(exp, "modelmon_feature_missing_ratio", model="fraud", feature="country", window="5m") == \
        pytest.approx(7 / 11)
