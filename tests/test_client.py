"""modelmon.client against a real exporter: batching, background flush, labels
after events, bounded buffer that drops and counts, never raising."""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Iterator

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from modelmon.app import Exporter
from modelmon.client import Client
from modelmon.config import config_from_dict


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
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


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


def test_retries_after_429_and_sends_token():
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
        assert wrong.stats.rejected == 1 and wrong.stats.sent == 0
    finally:
        del os.environ["MODELMON_CLIENT_TEST_TOKEN"]
        exp.stop()
