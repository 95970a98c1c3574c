"""The reverse proxy in front of a tiny model server started by the test:
requests and responses pass unchanged, predictions are recorded (features and
outputs extracted by dotted paths), errors and an unreachable upstream are
counted, streams and non-JSON bodies pass through."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from scipy import stats

from modelmon.app import Exporter, check_sources
from modelmon.config import ConfigError, config_from_dict
from modelmon.sources.proxy import JsonPath, PathError
from servers import first_sample, require_binary

BIG = bytes(range(256)) * 8192  # 2 MiB, over max_parse_bytes


class ModelServer:
    """A small model server: predict, echo, stream, text, fail, slow, big."""

    def __init__(self) -> None:
        outer = self
        self.seen: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if not size:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, body: bytes, ctype: str, extra: list[tuple[str, str]] = ()) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                path = self.path.split("?")[0]
                outer.seen.append({"method": self.command, "path": self.path, "headers": self.headers.items(), "body": body})
                if path == "/v1/predict":
                    doc = json.loads(body)
                    preds = [{"label": int(x["age"] > 40), "score": round(min(1.0, x["age"] / 80), 4)} for x in doc["instances"]]
                    self._send(200, json.dumps({"predictions": preds}).encode(), "application/json",
                               [("X-Model-Version", "3.1")])
                elif path == "/echo":
                    self._send(201, body, "application/octet-stream",
                               [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Upstream", "yes")])
                elif path == "/stream":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(3):
                        piece = f"data: {i}\n\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        time.sleep(0.05)
                    self.wfile.write(b"0\r\n\r\n")
                elif path == "/stream-json":  # a JSON body sent in chunks, no Content-Length
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for piece in (b'{"predictions": [{"label": 1, ', b'"score": 0.75}, ', b'{"label": 0, "score": 0.25}]}'):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                elif path == "/latin1-version":
                    self._send(200, b'{"predictions": [{"label": 1}]}', "application/json", [("X-Model-Version", "3.\xe9")])
                elif path == "/text":
                    self._send(200, b"plain words, not json", "text/plain")
                elif path == "/big":
                    self._send(200, BIG, "application/json")
                elif path == "/fail":
                    self._send(503, b'{"error": "model crashed"}', "application/json")
                elif path == "/slow":
                    time.sleep(1.0)
                    self._send(200, b"{}", "application/json")
                else:
                    self._send(404, b"no", "text/plain")

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def upstream() -> Iterator[ModelServer]:
    srv = ModelServer()
    yield srv
    srv.stop()


def write_reference(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(5)
    ages = np.round(rng.normal(40, 10, 300), 2)
    lines = ["age,gender,prediction"] + [f"{a},{'f' if i % 2 else 'm'},{int(a > 40)}" for i, a in enumerate(ages)]
    path = tmp_path / "ref.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, ages


def start_proxy(tmp_path: Path, upstream_url: str, **proxy: Any) -> tuple[Exporter, np.ndarray]:
    return start_proxy_at(tmp_path, upstream_url, "127.0.0.1:0", **proxy)


def start_proxy_at(tmp_path: Path, upstream_url: str, listen: str, **proxy: Any) -> tuple[Exporter, np.ndarray]:
    ref, ages = write_reference(tmp_path)
    cfg = config_from_dict({
        "models": [{
            "name": "clf",
            "features": [{"name": "age"}],
            "reference": {"path": str(ref)},
            "fairness": {"attribute": "gender", "groups": ["f", "m"]},
            "prediction_drift": {"prediction": True},
            "drift": {"recompute_interval": 0, "min_samples": 5, "methods": ["ks"]},
        }],
        "windows": [{"duration": "5m", "max_events": 10000}],
        "proxy": {"listen_address": listen, "upstream": upstream_url, **proxy},
    })
    exp = Exporter(cfg)
    exp.start()
    return exp, ages


@pytest.fixture
def proxied(tmp_path: Path, upstream: ModelServer) -> Iterator[Any]:
    exps: list[Exporter] = []

    def make(upstream_url: str | None = None, **proxy: Any) -> Exporter:
        exp, ages = start_proxy(tmp_path, upstream_url or upstream.url, **proxy)
        exp.reference_ages = ages  # type: ignore[attr-defined]
        exps.append(exp)
        return exp

    yield make
    for e in exps:
        e.stop()


def purl(exp: Exporter, path: str) -> str:
    return f"http://127.0.0.1:{exp.proxy.port}{path}"


def sample(exp: Exporter, name: str, **labels: str) -> float | None:
    exp.proxy.drain()  # the proxy hands events over every 100 ms; do it now
    text = requests.get(f"http://127.0.0.1:{exp.port}/metrics", timeout=5).text
    return first_sample(text, name, **labels)


@pytest.mark.e2e
def test_request_and_response_pass_unchanged(proxied, upstream):
    exp = proxied()
    body = bytes(range(256)) * 4
    headers = {"X-Custom": "1", "Authorization": "Bearer for-the-model", "Content-Type": "application/octet-stream"}
    direct = requests.put(upstream.url + "/echo?x=1&y=%20z", data=body, headers=headers, timeout=5)
    via = requests.put(purl(exp, "/echo?x=1&y=%20z"), data=body, headers=headers, timeout=5)
    a, b = upstream.seen[-2], upstream.seen[-1]
    assert (b["method"], b["path"], b["body"]) == ("PUT", "/echo?x=1&y=%20z", body)
    strip = {"host", "connection"}
    assert [h for h in b["headers"] if h[0].lower() not in strip] == [h for h in a["headers"] if h[0].lower() not in strip]
    assert via.status_code == direct.status_code == 201
    assert via.content == direct.content == body
    # Response headers as the upstream sent them, duplicates included.
    conn = http.client.HTTPConnection("127.0.0.1", exp.proxy.port, timeout=5)
    conn.request("PUT", "/echo", body=b"x")
    resp = conn.getresponse()
    assert resp.read() == b"x"
    assert [v for k, v in resp.getheaders() if k == "Set-Cookie"] == ["a=1", "b=2"]
    assert resp.getheader("X-Upstream") == "yes"
    conn.close()
    assert sample(exp, "modelmon_proxy_responses_total", model="clf", code="2xx") == 2  # two went through the proxy
    assert sample(exp, "modelmon_requests_total", model="clf", version="unknown") == 2


@pytest.mark.e2e
def test_extracts_features_predictions_and_joins_labels(proxied, upstream):
    exp = proxied(
        features={"age": "instances[*].age", "gender": "instances[*].gender"},
        prediction="predictions[*].label", score="predictions[*].score", version_header="X-Model-Version",
    )
    rng = np.random.default_rng(11)
    ages = np.round(rng.normal(45, 12, 30), 2)  # shifted: the proxy should see drift-worthy data
    s = requests.Session()
    for r in range(10):
        inst = [{"age": float(a), "gender": "f" if (r + j) % 2 else "m"} for j, a in enumerate(ages[3 * r: 3 * r + 3])]
        resp = s.post(purl(exp, "/v1/predict"), json={"instances": inst}, headers={"X-Request-Id": f"req{r}"}, timeout=5)
        assert resp.status_code == 200 and len(resp.json()["predictions"]) == 3
    assert sample(exp, "modelmon_requests_total", model="clf", version="3.1") == 30
    assert sample(exp, "modelmon_events_accepted_total", model="clf", source="proxy") == 30
    # Labels arrive later through the API, ids "<request id>:<index>" for batch requests.
    truth = (ages > 42).astype(int)  # the model's threshold is 40: ages in (40, 42] are wrong
    labels = [{"id": f"req{r}:{j}", "label": int(truth[3 * r + j])} for r in range(10) for j in range(3)]
    out = requests.post(f"http://127.0.0.1:{exp.port}/api/v1/labels", json=labels, timeout=5).json()
    assert out["accepted"] == 30
    pred = (ages > 40).astype(int)
    assert sample(exp, "modelmon_quality_accuracy_ratio", model="clf", window="5m") == pytest.approx(np.mean(pred == truth))
    g = np.array(["f" if (i // 3 + i % 3) % 2 else "m" for i in range(30)])
    for grp in ("f", "m"):
        want = np.mean(pred[g == grp] == 1)
        got = sample(exp, "modelmon_fairness_positive_prediction_ratio", model="clf", window="5m", group=grp)
        assert got == pytest.approx(want)
    ks = stats.ks_2samp(exp.reference_ages, ages)
    age_ks = {"model": "clf", "feature": "age", "method": "ks", "window": "5m"}
    assert sample(exp, "modelmon_drift_score", **age_ks) == pytest.approx(ks.statistic)
    assert sample(exp, "modelmon_drift_p_value", **age_ks) == pytest.approx(ks.pvalue)
    assert sample(exp, "modelmon_feature_bin_values_total", model="clf", feature="prediction", bin="1") == pred.sum()
    assert sample(exp, "modelmon_proxy_extraction_failures_total", model="clf") == 0
    # Everything this issue adds (quality, fairness, delay, join, proxy) passes promtool's lint.
    text = requests.get(f"http://127.0.0.1:{exp.port}/metrics", timeout=5).text
    assert "modelmon_label_delay_seconds_bucket" in text and "modelmon_proxy_responses_total" in text
    lint = subprocess.run([require_binary("promtool"), "check", "metrics"], check=False, input=text, capture_output=True,
                          text=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.e2e
def test_mismatched_batch_paths_count_a_failure_but_serve(proxied):
    exp = proxied(features={"age": "instances[*].age", "gender": "groups[*]"}, prediction="predictions[*].label")
    r = requests.post(purl(exp, "/v1/predict"), json={"instances": [{"age": 50}, {"age": 20}], "groups": ["f"]}, timeout=5)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    # two ages but one group: the request is recorded (latency, status) without features
    assert sample(exp, "modelmon_proxy_extraction_failures_total", model="clf") == 1
    assert sample(exp, "modelmon_requests_total", model="clf", version="unknown") == 1
    assert sample(exp, "modelmon_feature_values", model="clf", feature="age", window="5m") == 0
    # A request body that is not JSON: the upstream fails on it, the proxy still answers and counts.
    r = requests.post(purl(exp, "/v1/predict"), data=b'{"instances": [', headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 502
    assert sample(exp, "modelmon_proxy_extraction_failures_total", model="clf") == 2
    assert sample(exp, "modelmon_request_errors_total", model="clf", reason="upstream") == 1


@pytest.mark.e2e
def test_upstream_errors_down_and_timeouts_are_counted(proxied, tmp_path):
    exp = proxied(timeout_seconds=0.3)
    r = requests.get(purl(exp, "/fail"), timeout=5)
    assert r.status_code == 503 and r.json() == {"error": "model crashed"}  # passed on unchanged
    r = requests.get(purl(exp, "/slow"), timeout=5)
    assert r.status_code == 504
    down = proxied(upstream_url=f"http://127.0.0.1:{unused_port()}")
    r = requests.post(purl(down, "/v1/predict"), json={"instances": []}, timeout=5)
    assert r.status_code == 502 and "upstream unavailable" in r.json()["error"]
    assert sample(exp, "modelmon_request_errors_total", model="clf", reason="error") == 1
    assert sample(exp, "modelmon_request_errors_total", model="clf", reason="timeout") == 1
    assert sample(down, "modelmon_request_errors_total", model="clf", reason="upstream") == 1
    assert sample(down, "modelmon_proxy_responses_total", model="clf", code="5xx") == 1
    # The exporter and the proxy keep running.
    assert requests.get(f"http://127.0.0.1:{down.port}/-/healthy", timeout=5).status_code == 200
    assert requests.get(purl(exp, "/text"), timeout=5).text == "plain words, not json"


@pytest.mark.e2e
def test_streams_and_non_json_bodies_pass_through(proxied):
    exp = proxied(prediction="predictions[0].label", max_parse_bytes=1024)
    with requests.get(purl(exp, "/stream"), stream=True, timeout=5) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        pieces = [p for p in r.iter_content(chunk_size=None) if p]
    assert b"".join(pieces) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert requests.get(purl(exp, "/big"), timeout=10).content == BIG
    assert requests.get(purl(exp, "/text"), timeout=5).content == b"plain words, not json"
    head = requests.head(purl(exp, "/text"), timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert sample(exp, "modelmon_requests_total", model="clf", version="unknown") == 4
    assert sample(exp, "modelmon_proxy_extraction_failures_total", model="clf") == 0
    # Chunked request bodies are streamed to the upstream too.
    r = requests.post(purl(exp, "/echo"), data=iter([b"ab", b"cd"]), timeout=5)
    assert r.status_code == 201 and r.content == b"abcd"


@pytest.mark.e2e
def test_streamed_json_is_captured_and_bad_bodies_only_cost_extraction(proxied):
    exp = proxied(features={"age": "instances[*].age"}, prediction="predictions[*].label",
                  score="predictions[*].score", version_header="X-Model-Version")
    r = requests.post(purl(exp, "/stream-json"), json={"instances": [{"age": 50}, {"age": 20}]}, timeout=5)
    assert r.json()["predictions"][1] == {"label": 0, "score": 0.25}
    assert sample(exp, "modelmon_feature_bin_values_total", model="clf", feature="prediction", bin="1") == 1
    assert sample(exp, "modelmon_feature_bin_values_total", model="clf", feature="prediction", bin="0") == 1
    # A version header that is not UTF-8 never becomes a label value: the event keeps the default.
    r = requests.post(purl(exp, "/latin1-version"), json={"instances": [{"age": 30}]}, timeout=5)
    assert r.status_code == 200 and r.headers["X-Model-Version"].startswith("3.")  # the undecodable byte is not sent on
    assert sample(exp, "modelmon_requests_total", model="clf", version="unknown") == 3
    # JSON nested 5000 deep: the request is served, extraction fails and is counted.
    deep = b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = requests.post(purl(exp, "/echo"), data=deep, headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 201 and r.content == deep
    assert sample(exp, "modelmon_proxy_extraction_failures_total", model="clf") == 1
    assert requests.get(f"http://127.0.0.1:{exp.port}/metrics", timeout=5).status_code == 200


@pytest.mark.e2e
def test_proxy_listens_on_ipv6(tmp_path, upstream):
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback", pytrace=False)
    exp, _ = start_proxy(tmp_path, upstream.url)
    exp.stop()
    cfg_exp, _ = start_proxy_at(tmp_path, upstream.url, "[::1]:0")
    try:
        r = requests.get(f"http://[::1]:{cfg_exp.proxy.port}/text", timeout=5)
        assert r.text == "plain words, not json"
    finally:
        cfg_exp.stop()


@pytest.mark.parametrize("path, doc, want", [
    ("inputs[0]", {"inputs": [[1, 2], [3]]}, [1, 2]),
    ("instances[*].age", {"instances": [{"age": 1}, {}, {"age": 3}]}, [1, None, 3]),
    ("outputs.label", {"outputs": {"label": "cat"}}, "cat"),
    ("outputs.label", {"outputs": []}, None),
    ("[*].x", [{"x": 1}, {"x": 2}], [1, 2]),
    ("data.1", {"data": ["a", "b"]}, "b"),
    ("a[*].b[*]", {"a": [{"b": [1, 2]}, {"b": [3]}]}, [1, 2, 3]),
    ("missing[*].x", {}, []),
])
def test_json_paths(path, doc, want):
    assert JsonPath(path).extract(doc) == want


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a[x]", "a[1", "a]"])
def test_invalid_json_paths(bad):
    with pytest.raises(PathError):
        JsonPath(bad)


@pytest.mark.parametrize("proxy, field, message", [
    ({"listen_address": "127.0.0.1:0"}, "proxy.upstream", "required"),
    ({"listen_address": "127.0.0.1:0", "upstream": "ftp://x"}, "proxy.upstream", "http:// or https://"),
    ({"upstream": "http://x"}, "proxy.listen_address", "required"),
    ({"listen_address": "nope", "upstream": "http://x"}, "proxy.listen_address", "invalid listen address"),
    ({"listen_address": ":0", "upstream": "http://x", "model": "zzz"}, "proxy.model", "unknown model"),
    ({"listen_address": ":0", "upstream": "http://x", "features": {"height": "a.b"}}, "proxy.features.height", "not a feature"),
    ({"listen_address": ":0", "upstream": "http://x", "prediction": "a..b"}, "proxy.prediction", "invalid path"),
    ({"listen_address": ":0", "upstream": "http://x", "attributions": {"height": "a"}}, "proxy.attributions.height",
     "not a feature"),
    ({"listen_address": ":0", "upstream": "http://x", "attributions": {"age": "a..b"}}, "proxy.attributions.age",
     "invalid path"),
])
def test_proxy_config_errors_name_the_field(proxy, field, message):
    with pytest.raises(ConfigError) as exc:  # the proxy's own section is checked by the source table
        check_sources(config_from_dict({"models": [{"name": "m", "features": [{"name": "age"}]}], "proxy": proxy},
                                       source="x.yml"))
    assert f"x.yml: {field}: " in str(exc.value) and message in str(exc.value)


@pytest.mark.e2e
def test_serve_flags_run_the_proxy(tmp_path, upstream):
    cfg = tmp_path / "m.yml"
    cfg.write_text("models:\n  - name: m\n")
    port, pport = unused_port(), unused_port()
    cmd = [sys.executable, "-m", "modelmon", "serve", "--config", str(cfg), f"--web.listen-address=127.0.0.1:{port}",
           f"--proxy.listen-address=127.0.0.1:{pport}", f"--proxy.upstream={upstream.url}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60  # a cold start on a busy 2-core machine takes seconds
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{pport}/text", timeout=1)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    proc.stdout.read().decode() if proc.poll() is not None else "timeout"
                time.sleep(0.1)
        assert r.text == "plain words, not json"
        deadline = time.monotonic() + 15
        while "modelmon_requests_total{model=\"m\"" not in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    bad = subprocess.run(cmd[:-1] + ["--proxy.upstream=not-a-url"], check=False, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "proxy.upstream: must be an http:// or https:// URL" in bad.stderr


@pytest.mark.e2e
def test_extracts_attributions_from_the_response(proxied):
    exp = proxied(features={"age": "instances[*].age"}, prediction="predictions[*].label",
                  attributions={"age": "predictions[*].score"})
    seen: list[Any] = []
    exp.pipeline.listeners.append(seen.append)
    resp = requests.post(purl(exp, "/v1/predict"), json={"instances": [{"age": 20.0}, {"age": 60.0}]}, timeout=5)
    assert resp.status_code == 200
    assert sample(exp, "modelmon_events_accepted_total", model="clf", source="proxy") == 2
    assert [float(v) for b in seen for v in b.attributions["age"]] == [0.25, 0.75]  # the upstream's scores
