"""Attacks on a real ``modelmon serve`` over real sockets: broken framing, stalled
uploads, slowloris, connection floods, hostile JSON, hostile labels, long and
wrong passwords.  Each case asserts what a client gets, what the exporter
counts, and that ``/metrics`` keeps answering within a second meanwhile.

Deadlines are shortened (``--web.read-header-timeout=1 --web.read-timeout=2``)
so the whole module runs in seconds."""

from __future__ import annotations

import base64
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

import bcrypt
import pytest
import requests
import yaml

from servers import ExporterServer, ServerProcess, first_sample, free_port, wait_until

pytestmark = pytest.mark.e2e

EVENTS = "/api/v1/events"
JSON = {"Content-Type": "application/json"}
PASSWORD = "correct horse battery staple"
TOKEN = "s3cret-ingest-token"


def write_config(d: Path, **extra: object) -> Path:
    (d / "ref.csv").write_text("f0\n" + "\n".join(str(i % 17) for i in range(200)) + "\n")
    cfg = {"models": [{"name": "m", "features": [{"name": "f0"}], "reference": {"path": "ref.csv"},
                       "drift": {"recompute_interval": 0}}], **extra}
    path = d / "modelmon.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


FAST = ["--web.read-header-timeout=1", "--web.read-timeout=2", "--log.level=debug"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterServer]:
    d = tmp_path_factory.mktemp("plain")
    srv = ExporterServer(d, ["--config", str(write_config(d)), *FAST])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterServer]:
    """Basic auth (bcrypt cost 12, as the issue's measurement) and an ingestion token."""
    d = tmp_path_factory.mktemp("secured")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12)).decode()
    (d / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    cfg = write_config(d, ingest={"token_env": "MODELMON_ATTACK_TOKEN"})
    srv = ExporterServer(d, ["--config", str(cfg), "--web.config.file", str(d / "web.yml"), *FAST],
                         env={"MODELMON_ATTACK_TOKEN": TOKEN})
    yield srv
    srv.stop()


# --------------------------------------------------------------------------- helpers


def metrics(srv: ExporterServer, **kw: object) -> str:
    """One scrape, which must succeed within a second."""
    t0 = time.perf_counter()
    r = requests.get(srv.url + "/metrics", timeout=5, **kw)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200, r.text[:200]
    assert elapsed < 1.0, f"/metrics took {elapsed:.2f}s"
    return r.text


def sample(text: str, name: str, **labels: str) -> float:
    return first_sample(text, name, **labels) or 0.0


def refused(srv: ExporterServer, reason: str, **kw: object) -> float:
    return sample(metrics(srv, **kw), "modelmon_http_requests_refused_total", reason=reason)


def rejected(srv: ExporterServer, reason: str, source: str = "api", **kw: object) -> float:
    return sample(metrics(srv, **kw), "modelmon_events_rejected_total", source=source, reason=reason)


def read_all(s: socket.socket) -> bytes:
    """Everything ``s`` receives until the server closes it (or goes quiet for the socket's timeout)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def raw(srv: ExporterServer, data: bytes, timeout: float = 3.0) -> bytes:
    """Send bytes on a fresh connection; everything the server answers until it closes (or goes quiet)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as s:
        s.sendall(data)
        return read_all(s)


def statuses(answer: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)]


def event(i: int = 0, **over: object) -> dict[str, object]:
    return {"model": "m", "id": f"e{i}", "features": {"f0": float(i % 17)}, "prediction": 1, **over}


def post(srv: ExporterServer, body: object, headers: dict[str, str] | None = None, **kw: object) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(srv.url + EVENTS, data=data, headers={**JSON, **(headers or {})}, timeout=10, **kw)  # type: ignore[arg-type]


class Scraper:
    """Scrapes /metrics in a loop while an attack runs; records each scrape's status and time."""

    def __init__(self, srv: ExporterServer, **kw: object):
        self.srv, self.kw = srv, kw
        self.results: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                status = requests.get(self.srv.url + "/metrics", timeout=5, **self.kw).status_code  # type: ignore[arg-type]
            except requests.RequestException:
                status = 0
            self.results.append((status, time.perf_counter() - t0))
            time.sleep(0.05)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert len(self.results) >= 3, "too few scrapes during the attack"
        assert all(status == 200 for status, _ in self.results), self.results
        worst = max(t for _, t in self.results)
        assert worst < 1.0, f"slowest scrape during the attack: {worst:.2f}s"


# --------------------------------------------------------------------------- 1, 13: label values


def test_lone_surrogate_is_refused_and_metrics_keep_working(plain):
    before = rejected(plain, "invalid_field")
    r = post(plain, b'[{"model":"m","version":"\\ud800","features":{"f0":1}}, {"model":"m","version":"2","features":{"f0":2}}]')
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert r.json()["rejected"][0]["reason"] == "invalid_field" and "surrogate" in r.json()["rejected"][0]["error"]
    r = post(plain, b'[{"model":"m","version":"\\ud800"}]')
    assert r.status_code == 400 and "version" in r.json()["error"]
    text = metrics(plain)
    assert sample(text, "modelmon_events_rejected_total", source="api", reason="invalid_field") == before + 2
    assert 'version="2"' in text and "\\ud800" not in text


def test_long_integer_version_is_refused(plain):
    before = rejected(plain, "invalid_field")
    r = post(plain, b'[{"model":"m","version":' + b"7" * 4000 + b"}]")
    assert r.status_code == 400 and "version: longer than 256" in r.json()["error"]
    assert rejected(plain, "invalid_field") == before + 1


def test_only_json_bodies_are_taken(plain):
    before = rejected(plain, "unsupported_media_type")
    body = json.dumps([event()])
    for ctype in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"):
        r = requests.post(plain.url + EVENTS, data=body, headers={"Content-Type": ctype}, timeout=5)
        assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = requests.post(plain.url + EVENTS, data=body.encode(), timeout=5)  # no Content-Type at all
    assert r.status_code == 415
    assert post(plain, body, headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200
    assert post(plain, body, headers={"Content-Type": "application/x-ndjson"}).status_code == 200
    assert rejected(plain, "unsupported_media_type") == before + 4


def test_only_utf8_bodies_are_taken(plain):
    before = rejected(plain, "unsupported_media_type")
    body = json.dumps([event(0, prediction="é")], ensure_ascii=False)
    for ctype, shown in (("application/json; charset=latin-1", "latin-1"), ('application/json; charset="utf-16"', "utf-16"),
                         ("application/json; charset=utf-8; charset=ISO-8859-1", "ISO-8859-1")):
        r = requests.post(plain.url + EVENTS, data=body.encode("latin-1"), headers={"Content-Type": ctype}, timeout=5)
        assert r.status_code == 415 and repr(shown) in r.json()["error"] and "UTF-8" in r.json()["error"], r.text
    for ctype in ("application/json; charset=UTF-8", 'application/json; charset="utf-8"', "application/json; ;=;charset",
                  "application/json ; foo=bar ; charset = Utf-8"):
        assert post(plain, body.encode(), headers={"Content-Type": ctype}).status_code == 200, ctype
    assert rejected(plain, "unsupported_media_type") == before + 3


def test_unknown_expectation_is_417_before_the_body(plain):
    before = rejected(plain, "malformed")
    body = json.dumps([event(0)]).encode()
    head = b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    answer = raw(plain, head + b"Expect: 999-nope\r\n\r\n" + body + head + b"Connection: close\r\n\r\n" + body)
    assert statuses(answer) == [417], answer  # closed at once: the pipelined request is never run
    assert b"\r\nconnection: close" in answer.split(b"\r\n\r\n")[0].lower()
    assert rejected(plain, "malformed") == before + 1
    # 100-continue: told to go on, then served.
    with socket.create_connection(("127.0.0.1", plain.port), timeout=3) as s:
        s.sendall(head + b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert statuses(out) == [200] and b'"accepted": 1' in out


# --------------------------------------------------------------------------- 6: hostile JSON


def test_deep_json_line_is_malformed_and_neighbours_are_kept(plain):
    before = rejected(plain, "malformed")
    body = (json.dumps(event(1)) + "\n" + "[" * 5000 + "]" * 5000 + "\n" + json.dumps(event(2)) + "\n").encode()
    r = post(plain, body, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["accepted"] == 2 and r.json()["rejected"] == [
        {"index": 1, "reason": "malformed", "error": "line 2: nested deeper than 32 levels"}]
    r = post(plain, b"[" * 100_000 + b"]" * 100_000)  # a whole array too deep to parse
    assert r.status_code == 400 and "nested deeper" in r.json()["error"]
    assert rejected(plain, "malformed") == before + 2


# --------------------------------------------------------------------------- 4, 5: framing


FRAMING = {
    "content-length and chunked": b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                                  b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    "two content-lengths": b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n[]   ",
    "same content-length twice": b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n[]",
    "content-length abc": b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n[]",
    "content-length -1": b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n" + b" " * 1000,
    "content-length +2": b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n[]",
    "chunk size zz": b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n[]\r\n0\r\n\r\n",
    "chunk size -5": b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n[]\r\n0\r\n\r\n",
    "chunk size -1": b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n" + b" " * 1000,
    "chunked twice": b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n",
    "gzip transfer coding": b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n",
    "chunked on HTTP/1.0": b"POST /api/v1/events HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n",
    "space before colon": b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length : 2\r\n\r\n[]",
}


@pytest.mark.parametrize("case", list(FRAMING))
def test_ambiguous_framing_is_400_counted_and_closed(plain, case):
    before = refused(plain, "bad_request")
    answer = raw(plain, FRAMING[case])
    assert statuses(answer) == [400], answer[:300]  # one answer: nothing smuggled as a second request
    assert b"Traceback" not in answer
    assert refused(plain, "bad_request") == before + 1


def test_chunked_trailers_and_pipelining_are_served(plain):
    answer = raw(plain, b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\nX-Trailer: 1\r\n\r\n"
                        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(answer) == [200, 200] and answer.endswith(b"Healthy.\n")


def test_huge_chunk_is_refused_at_the_limit_not_buffered(plain):
    before = rejected(plain, "body_too_large")
    with socket.create_connection(("127.0.0.1", plain.port), timeout=10) as s:
        s.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n12C00000\r\n")  # one 300 MiB chunk announced
        sent, answer = 0, b""
        block = b" " * (1024 * 1024)
        try:
            while sent < 40 * 1024 * 1024 and b"\r\n\r\n" not in answer:
                s.sendall(block)
                sent += len(block)
                s.setblocking(False)
                try:
                    answer += s.recv(65536)
                except BlockingIOError:
                    pass
                s.setblocking(True)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(3)
        try:
            answer += s.recv(65536)
        except (TimeoutError, ConnectionResetError):
            pass
    assert statuses(answer) == [413], answer[:200]
    assert sent <= 20 * 1024 * 1024  # refused near the 10 MiB limit, not after the whole chunk
    assert rejected(plain, "body_too_large") == before + 1


# --------------------------------------------------------------------------- 2: stalled uploads


def test_stalled_uploads_take_no_slots_and_time_out(plain):
    before = refused(plain, "body_timeout")
    head = (b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n[{")
    stalled = [socket.create_connection(("127.0.0.1", plain.port), timeout=10) for _ in range(8)]
    trickle = socket.create_connection(("127.0.0.1", plain.port), timeout=10)
    try:
        for s in stalled:
            s.sendall(head)
        trickle.sendall(head)
        t0 = time.monotonic()
        with Scraper(plain):
            while time.monotonic() - t0 < 1.2:  # good posts get through while 9 uploads stall
                assert post(plain, [event(1)]).status_code == 200
                trickle.sendall(b" ")  # one byte at a time never extends the deadline
                time.sleep(0.1)
        for s in [*stalled, trickle]:
            s.settimeout(5)
            answer = read_all(s)
            assert statuses(answer) == [408], answer[:200]
        assert time.monotonic() - t0 < 4  # the whole-body deadline is 2 s
    finally:
        for s in [*stalled, trickle]:
            s.close()
    assert refused(plain, "body_timeout") == before + 9


# --------------------------------------------------------------------------- 3, 7: slowloris, floods


def test_slowloris_does_not_stop_scrapes_or_ingestion(plain):
    before = refused(plain, "header_timeout")
    socks = []
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", plain.port), timeout=10)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(s)
    try:
        t0 = time.monotonic()
        with Scraper(plain):
            while time.monotonic() - t0 < 2.0:
                for s in socks[:50]:
                    try:
                        s.send(b"a")  # a byte now and then, never the end of the head
                    except OSError:
                        pass
                assert post(plain, [event(2)]).status_code == 200
                time.sleep(0.2)
        closed = 0
        for s in socks:
            s.settimeout(3)
            try:
                data = s.recv(4096)
                closed += data == b"" or data.startswith(b"HTTP/1.1 408")
            except (TimeoutError, ConnectionResetError):
                closed += isinstance(s, socket.socket) and False
        assert closed == len(socks)
    finally:
        for s in socks:
            s.close()
    assert refused(plain, "header_timeout") >= before + 300


def test_silent_connections_are_closed_at_the_head_deadline(plain):
    before = refused(plain, "header_timeout")
    socks = [socket.create_connection(("127.0.0.1", plain.port), timeout=10) for _ in range(100)]
    try:
        t0 = time.monotonic()
        for s in socks:
            s.settimeout(5)
            answer = read_all(s)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            head, _, body = answer.partition(b"\r\n\r\n")
            # The whole JSON body, as long as Content-Length says: a client can show the error.
            assert json.loads(body) == {"error": "request head not received in time"}
            assert f"Content-Length: {len(body)}".encode() in head
        assert time.monotonic() - t0 < 3  # the head deadline is 1 s here
    finally:
        for s in socks:
            s.close()
    assert refused(plain, "header_timeout") >= before + 100


def test_a_quiet_kept_alive_connection_is_not_a_head_timeout(plain):
    """After a completed exchange, a kept-alive connection owes nothing: it
    is neither answered 408 nor counted at the head deadline (the proxy
    listener behaves the same, tests/test_attack_proxy.py)."""
    before = refused(plain, "header_timeout")
    with socket.create_connection(("127.0.0.1", plain.port), timeout=5) as s:
        s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.settimeout(2.0)  # twice the 1 s head deadline
        with pytest.raises(TimeoutError):
            s.recv(4096)
        s.settimeout(5)
        s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    assert refused(plain, "header_timeout") == before


def test_100_simultaneous_connections_are_all_served_quickly(plain):
    barrier = threading.Barrier(100)

    def one(i: int) -> float:
        barrier.wait()
        t0 = time.perf_counter()
        if i % 2:
            r = requests.get(plain.url + "/metrics", timeout=10)
        else:
            r = post(plain, [event(i)])
        assert r.status_code in (200, 429), r.status_code  # 429 only from the ingestion slot limit, never a drop
        return time.perf_counter() - t0

    with ThreadPoolExecutor(100) as pool:
        times = sorted(pool.map(one, range(100)))
    assert times[89] < 3.0, f"p90 {times[89]:.2f}s"


# --------------------------------------------------------------------------- 10: passwords


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_long_password_is_a_counted_auth_failure(secured):
    auth = _basic("prometheus", PASSWORD)
    before = sample(metrics(secured, headers=auth), "modelmon_web_auth_failures_total", reason="invalid")
    r = requests.get(secured.url + "/metrics", headers=_basic("prometheus", "x" * 100), timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    r = requests.get(secured.url + "/metrics", headers=_basic("prometheus", PASSWORD + "é" * 40), timeout=10)
    assert r.status_code == 401
    assert sample(metrics(secured, headers=auth), "modelmon_web_auth_failures_total", reason="invalid") == before + 2
    assert "Traceback" not in secured.process.log_tail(400)


def test_wrong_password_flood_is_throttled_and_scrapes_stay_fast(secured):
    auth = _basic("prometheus", PASSWORD)
    metrics(secured, headers=auth)  # the scraper's credentials are verified (and cached) once
    codes: list[int] = []

    def attempt(i: int) -> None:
        try:
            codes.append(requests.get(secured.url + "/metrics", headers=_basic("prometheus", f"guess{i}"),
                                      timeout=10).status_code)
        except requests.RequestException:
            codes.append(0)

    with Scraper(secured, headers=auth), ThreadPoolExecutor(20) as pool:
        list(pool.map(attempt, range(200)))
    assert set(codes) <= {401, 429} and codes.count(429) >= 150, sorted(set(codes))
    text = metrics(secured, headers=auth)
    assert sample(text, "modelmon_web_auth_failures_total", reason="throttled") >= 150


def test_token_is_never_logged(secured):
    r = requests.post(secured.url + EVENTS + f"?token={TOKEN}&x=1", data=json.dumps([event()]), headers=JSON, timeout=10)
    assert r.status_code == 401  # a token belongs in the Authorization header
    r = requests.post(secured.url + EVENTS, data=json.dumps([event()]),
                      headers={**JSON, "Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 200
    log = secured.process.log_path.read_text(errors="replace")
    assert '"path": "/api/v1/events?<redacted>"' in log
    assert TOKEN not in log


# --------------------------------------------------------------------------- 11: listeners, encodings


def test_ipv6_listen_address_and_gzip_refusal(tmp_path):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    port = free_port()
    proc = ServerProcess(f"modelmon-v6-{port}", [sys.executable, "-m", "modelmon", "serve",
                                                   f"--web.listen-address=[::1]:{port}"], tmp_path)
    try:
        url = f"http://[::1]:{port}"
        wait_until(lambda: requests.get(url + "/-/ready", timeout=2).status_code == 200, 30, what="exporter on [::1]")
        r = requests.get(url + "/metrics", headers={"Accept-Encoding": "gzip;q=0"}, timeout=5)
        assert r.status_code == 200 and "Content-Encoding" not in r.headers
        r = requests.get(url + "/metrics", headers={"Accept-Encoding": "gzip;q=0.5"}, timeout=5)
        assert r.headers["Content-Encoding"] == "gzip"
    finally:
        proc.stop()
