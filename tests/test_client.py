"""modelmon.client against a real exporter: batching, background flush, labels
after events, bounded buffer that drops and counts, never raising."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
import requests

from modelmon.app import Exporter
from modelmon.client import Client
from modelmon.config import config_from_dict
from servers import first_sample

pytestmark = pytest.mark.e2e


def make_exporter(**ingest: Any) -> Exporter:
    cfg = config_from_dict({
        "models": [{"name": "svc", "drift": {"recompute_interval": 0}}],
        "windows": [{"duration": "5m", "max_events": 10000}],
        "ingest": ingest,
    })
    exp = Exporter(cfg)
    exp.start()
    return exp


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    exp = make_exporter()
    yield exp
    exp.stop()


def sample(exp: Exporter, name: str, **labels: str) -> float | None:
    text = requests.get(f"http://127.0.0.1:{exp.port}/metrics", timeout=5).text
    return first_sample(text, name, **labels)


class CountingSession(requests.Session):
    """A real session that remembers how many items each POST carried."""

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[tuple[str, int]] = []

    def post(self, url: str, data: Any = None, **kw: Any) -> requests.Response:  # type: ignore[override]
        self.posts.append((url.rsplit("/", 1)[-1], len(json.loads(data))))
        return super().post(url, data=data, **kw)


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_batches_labels_after_events_and_close_flushes(exporter):
    session = CountingSession()
    client = Client(f"http://127.0.0.1:{exporter.port}", model="svc", version="2.0",
                    batch_size=50, flush_interval=30.0, session=session)
    for i in range(120):
        assert client.log_event(id=f"q{i}", prediction=i % 2, score=0.9 if i % 2 else 0.1, latency_seconds=0.01)
    for i in range(40):
        assert client.log_label(f"q{i}", 1 if i < 30 else i % 2)  # q0..q29: half wrong
    client.close()
    assert client.stats.sent == 160 and client.stats.dropped == 0 and client.stats.rejected == 0
    assert all(n <= 50 for _, n in session.posts)
    assert sum(n for kind, n in session.posts if kind == "events") == 120
    assert sum(n for kind, n in session.posts if kind == "labels") == 40
    first_label = next(i for i, (kind, _) in enumerate(session.posts) if kind == "labels")
    assert all(kind == "events" for kind, _ in session.posts[:first_label])
    assert sample(exporter, "modelmon_events_accepted_total", model="svc", source="client") == 120
    assert sample(exporter, "modelmon_requests_total", model="svc", version="2.0") == 120
    # q0..q29 labelled 1: the 15 odd ones were right; q30..q39 labelled with their own prediction.
    assert sample(exporter, "modelmon_quality_accuracy_ratio", model="svc", window="5m") == pytest.approx(25 / 40)
    assert client.log_event(id="late") is False  # closed: dropped, counted, no exception
    assert client.stats.dropped == 1


def test_background_thread_flushes_on_its_own(exporter):
    client = Client(f"http://127.0.0.1:{exporter.port}", model="svc", flush_interval=0.1)
    try:
        client.log_event(id="a", prediction=1)
        deadline = time.monotonic() + 5
        while client.stats.sent < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.stats.sent == 1
    finally:
        client.close()


def test_full_buffer_drops_and_counts_without_blocking_or_raising():
    client = Client(f"http://127.0.0.1:{unused_port()}", model="svc", max_buffer=10, batch_size=5,
                    flush_interval=0.05, timeout=0.5)
    try:
        t0 = time.perf_counter()
        results = [client.log_event(id=str(i), prediction=1) for i in range(25)]
        elapsed = time.perf_counter() - t0
        assert elapsed < 0.5  # no network on the caller's path (25 calls)
        assert results.count(False) >= 15
        assert client.log_label("x", 1) in (True, False)
        assert client.flush(timeout=0.5) is False  # nothing can be delivered
    finally:
        client.close(timeout=0.5)
    st = client.stats
    assert st.sent == 0 and st.failed_requests >= 1
    assert st.dropped == 26  # 15+ at once when full, the rest when closing: every item accounted for


def test_bad_values_are_dropped_not_raised(exporter):
    client = Client(f"http://127.0.0.1:{exporter.port}", model="svc", flush_interval=30.0)
    assert client.log_event(id="np", features={"x": np.float32(1.5), "v": np.arange(3)}, prediction=np.int64(1),
                            score=np.float64(0.7), latency_seconds=np.float32(0.02))
    assert client.log_event(id="obj", features={"x": object()}, prediction=1)  # queued, fails to encode
    assert client.log_event(id="nan", prediction=1, score=float("nan"))  # JSON has no NaN: dropped
    assert client.log_event(id="bad", features=42) is False  # not a mapping: dropped at once
    assert client.log_event(id="ghost", model="not-configured", prediction=1)  # refused by the exporter
    client.close()
    assert client.stats.sent == 1
    assert client.stats.dropped == 3
    assert client.stats.rejected == 1
    assert sample(exporter, "modelmon_events_rejected_total", source="client", reason="unknown_model") == 1


class ScriptedExporter:
    """A real HTTP server standing in for the exporter: ``answer(items)`` gives
    (status, headers, body) per POST; every POST is recorded with its time."""

    def __init__(self, answer: Callable[[list[dict[str, Any]]], tuple[int, dict[str, str], dict[str, Any]]]):
        outer = self
        self.posts: list[tuple[float, str, list[dict[str, Any]], dict[str, str]]] = []
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.posts.append((time.monotonic(), self.path, items, dict(self.headers.items())))
                status, headers, body = answer(items)
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.posts)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedExporter]]:
    made: list[ScriptedExporter] = []

    def make(answer: Callable[[list[dict[str, Any]]], tuple[int, dict[str, str], dict[str, Any]]]) -> ScriptedExporter:
        made.append(ScriptedExporter(answer))
        return made[-1]

    yield make
    for srv in made:
        srv.stop()


def accept_all(items: list[dict[str, Any]]) -> tuple[int, dict[str, str], dict[str, Any]]:
    return 200, {}, {"accepted": len(items), "rejected_count": 0, "rejected": []}


def test_retry_after_is_honoured_however_full_the_buffer(scripted):
    srv = scripted(lambda items: (429, {"Retry-After": "1"}, {"error": "overloaded"}))
    client = Client(srv.url, model="svc", batch_size=10, flush_interval=0.05, max_buffer=100_000)
    logged = 0
    spent = 0.0  # time inside log_event: it must never wait for the sender
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.2:  # keep the buffer over batch_size the whole time
            c0 = time.perf_counter()
            for i in range(50):
                client.log_event(id=str(i), prediction=1)
            spent += time.perf_counter() - c0
            logged += 50
            time.sleep(0.01)
        n = srv.count()
    finally:
        client.close(timeout=0.1)
    # One POST at once, then one per Retry-After second: 4 in 3.2 s (the old client made ~60).
    assert 3 <= n <= 5, n
    times = [t for t, *_ in srv.posts[:n]]
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times)), times
    st = client.stats
    assert st.sent == 0 and st.failed_requests == n
    assert st.dropped == logged  # never delivered: every item is counted as dropped at close
    assert spent < 1.0, f"{spent:.2f} s in {logged} log_event calls"


def test_backoff_without_retry_after_grows_and_recovers(scripted):
    state = {"fail": 3}

    def answer(items):
        if state["fail"] > 0:
            state["fail"] -= 1
            return 503, {}, {"error": "starting"}
        return accept_all(items)

    srv = scripted(answer)
    client = Client(srv.url, model="svc", batch_size=5, flush_interval=0.02, retry_backoff=0.2)
    try:
        for i in range(5):
            client.log_event(id=str(i), prediction=1)
        assert client.flush(timeout=10)
    finally:
        client.close()
    times = [t for t, *_ in srv.posts]
    assert len(times) == 4  # three 503s, then delivered: the same batch each time
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.19 and gaps[1] >= 0.39 and gaps[2] >= 0.79, gaps  # 0.2, 0.4, 0.8 s
    assert all(items == srv.posts[0][2] for _, _, items, _ in srv.posts)
    assert client.stats.sent == 5 and client.stats.dropped == 0 and client.stats.given_up == 0


def test_4xx_batch_is_dropped_and_counted_not_retried(scripted):
    def answer(items):
        if any(it.get("id") == "bad" for it in items):
            return 413, {}, {"error": "body too large"}
        return accept_all(items)

    srv = scripted(answer)
    client = Client(srv.url, model="svc", batch_size=3, flush_interval=30.0)
    try:
        for i in ("bad", "x1", "x2", "g1", "g2", "g3"):
            client.log_event(id=i, prediction=1)
        assert client.flush(timeout=5)
    finally:
        client.close()
    assert srv.count() == 2  # the refused batch once, the good one once
    assert client.stats.rejected == 3 and client.stats.sent == 3 and client.stats.failed_requests == 0


def test_poison_5xx_batch_is_retried_a_bounded_number_of_times_then_dropped(scripted):
    def answer(items):
        if any(it.get("id") == "poison" for it in items):
            return 500, {}, {"error": "internal error"}
        return accept_all(items)

    srv = scripted(answer)
    client = Client(srv.url, model="svc", batch_size=2, flush_interval=0.02, max_retries=3, retry_backoff=0.05)
    try:
        client.log_event(id="poison", prediction=1)
        client.log_event(id="p2", prediction=1)
        for i in range(10):
            client.log_event(id=f"good{i}", prediction=1)
            client.log_label(f"good{i}", 1)
        assert client.flush(timeout=10)
    finally:
        client.close()
    poison = [p for p in srv.posts if any(it.get("id") == "poison" for it in p[2])]
    assert len(poison) == 4  # the first attempt and 3 retries
    assert client.stats.given_up == 2 and client.stats.sent == 20 and client.stats.dropped == 0
    events = [it["id"] for _, path, items, _ in srv.posts if path.endswith("/events") for it in items]
    assert events.count("good9") == 1
    first_label = next(i for i, p in enumerate(srv.posts) if p[1].endswith("/labels"))
    assert first_label > max(i for i, p in enumerate(srv.posts) if p in poison)  # labels waited for the events


def test_retries_after_overload_and_sends_token(scripted):
    state = {"shed": 2}

    def answer(items):
        if state["shed"] > 0:
            state["shed"] -= 1
            return 429, {"Retry-After": "0"}, {"error": "overloaded"}
        return accept_all(items)

    srv = scripted(answer)
    client = Client(srv.url, model="svc", token="tok-123", flush_interval=0.02, retry_backoff=0.05)
    client.log_event(id="r", prediction=1)
    assert client.flush(timeout=5)
    client.close()
    assert srv.count() == 3 and client.stats.failed_requests == 2
    assert client.stats.sent == 1 and client.stats.dropped == 0
    assert all(h.get("Authorization") == "Bearer tok-123" for *_, h in srv.posts)


def test_overload_and_wrong_token_against_the_exporter():
    import os

    os.environ["MODELMON_CLIENT_TEST_TOKEN"] = "tok-123"
    exp = make_exporter(max_concurrent_requests=1, token_env="MODELMON_CLIENT_TEST_TOKEN")
    try:
        api = exp.ingest_api
        api.busy += 1  # one body "being processed": the next is shed with 429
        client = Client(f"http://127.0.0.1:{exp.port}", model="svc", token="tok-123", flush_interval=0.05)
        client.log_event(id="r", prediction=1)
        deadline = time.monotonic() + 5
        while client.stats.failed_requests < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.stats.failed_requests >= 1 and client.stats.sent == 0
        api.busy -= 1
        assert client.flush(timeout=5)
        client.close()
        assert client.stats.sent == 1 and client.stats.dropped == 0
        assert sample(exp, "modelmon_events_rejected_total", source="client", reason="overloaded") >= 1
        wrong = Client(f"http://127.0.0.1:{exp.port}", model="svc", token="nope")
        wrong.log_event(id="w", prediction=1)
        wrong.close()
        assert wrong.stats.rejected == 1 and wrong.stats.sent == 0 and wrong.stats.failed_requests == 0
        right = Client(f"http://127.0.0.1:{exp.port}", model="svc", token="tok-123")
        right.log_event(id="r", prediction=1)
        right.close()
        assert right.stats.sent == 1
    finally:
        del os.environ["MODELMON_CLIENT_TEST_TOKEN"]
        exp.stop()
