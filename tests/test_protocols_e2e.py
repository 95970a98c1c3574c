"""A real Open Inference Protocol server behind ``modelmon serve --proxy.protocol oip-v2``,
with no extraction rules: a scikit-learn model trained here on
``load_breast_cancer`` (400 rows; the other 169 are served), one FP64 input
tensor of 30 columns mapped to the 30 configured features by position, the
prediction from ``predict`` and the score from ``predict_proba``.  Accuracy, ROC
AUC and the KS drift gauges must equal what scikit-learn and scipy compute on
the same rows.

Two servers: MLServer (``mlserver start``), which needs its own 500 MB
virtual environment and so runs only on request (``python3 -m venv
/tmp/mlserver-venv && /tmp/mlserver-venv/bin/pip install mlserver
mlserver-sklearn``, then ``MODELMON_MLSERVER=/tmp/mlserver-venv/bin/mlserver
pytest -m mlserver tests/test_protocols_e2e.py``), and always a small OIP server
written here on aiohttp that also answers with Triton's binary tensor
extension when asked (``"binary_data_output": true``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, roc_auc_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from servers import ServerProcess, first_sample, free_port, wait_until

pytestmark = pytest.mark.e2e

TRAIN = 400
BATCH = 13  # 169 served rows = 13 batches of 13
MLSERVER = os.environ.get("MODELMON_MLSERVER", "")
DRIFT_CHECKED = ("mean_radius", "mean_texture", "worst_area", "worst_concave_points")


class Data:
    def __init__(self) -> None:
        ds = load_breast_cancer()
        self.names = [re.sub(r"[^A-Za-z0-9_]", "_", n) for n in ds.feature_names]
        self.X, self.y = ds.data, ds.target
        self.model = make_pipeline(StandardScaler(), LogisticRegression()).fit(self.X[:TRAIN], self.y[:TRAIN])
        self.serve_X, self.serve_y = self.X[TRAIN:], self.y[TRAIN:]


@pytest.fixture(scope="module")
def data() -> Data:
    return Data()


# --------------------------------------------------------------------------- an OIP server on aiohttp


class OipServer:
    """``POST /v2/models/cancer/infer``: predict and predict_proba, JSON or binary outputs."""

    def __init__(self, model: Any):
        from aiohttp import web

        self.model = model
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = web.Application()
        app.router.add_post("/v2/models/cancer/infer", self.infer)
        app.router.add_post("/v1/models/cancer:predict", self.predict_v1)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(web), self._loop).result(10)

    async def _start(self, web: Any) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def infer(self, request: Any) -> Any:
        from aiohttp import web

        req = await request.json()
        t = req["inputs"][0]
        x = np.asarray(t["data"], dtype=np.float64).reshape(t["shape"])
        if x.ndim != 2 or x.shape[1] != 30:
            return web.json_response({"error": f"expected shape [n, 30], got {t['shape']}"}, status=400)
        pred = self.model.predict(x).astype(np.int64)
        proba = self.model.predict_proba(x)
        outputs = [{"name": "predict", "shape": [len(x), 1], "datatype": "INT64", "data": pred.tolist()},
                   {"name": "predict_proba", "shape": [len(x), 2], "datatype": "FP64", "data": proba.ravel().tolist()}]
        doc = {"model_name": "cancer", "model_version": "v1", "id": req.get("id", ""), "outputs": outputs}
        if not (req.get("parameters") or {}).get("binary_data_output"):
            return web.json_response(doc)
        raws = [pred.astype("<i8").tobytes(), proba.astype("<f8").tobytes()]
        for o, raw in zip(outputs, raws, strict=True):
            del o["data"]
            o["parameters"] = {"binary_data_size": len(raw)}
        head = json.dumps(doc).encode()
        return web.Response(body=head + b"".join(raws), content_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(len(head))})

    async def predict_v1(self, request: Any) -> Any:
        """KServe v1: {"instances": [[...30 values], ...]} -> {"predictions": [[p0, p1], ...]} (predict_proba)."""
        from aiohttp import web

        x = np.asarray((await request.json())["instances"], dtype=np.float64)
        return web.json_response({"predictions": self.model.predict_proba(x).tolist()})

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# --------------------------------------------------------------------------- MLServer


@pytest.fixture
def mlserver(data: Data, tmp_path: Path) -> Iterator[str]:
    if not os.access(MLSERVER, os.X_OK):
        pytest.fail(f"MODELMON_MLSERVER={MLSERVER} is not an executable (see the module docstring)", pytrace=False)
    import joblib

    root = tmp_path / "mlserver"
    root.mkdir()
    joblib.dump(data.model, root / "model.joblib")
    (root / "model-settings.json").write_text(json.dumps({
        "name": "cancer", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"}}))
    port = free_port()
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 0}))
    proc = ServerProcess("mlserver", [MLSERVER, "start", str(root)], tmp_path)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if not proc.alive():
            pytest.fail(f"mlserver exited:\n{proc.log_tail()}", pytrace=False)
        try:
            return requests.get(f"{url}/v2/models/cancer/ready", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(ready, timeout=90, what="MLServer ready")
        yield url
    finally:
        proc.stop()


@pytest.fixture
def oip_server(data: Data) -> Iterator[str]:
    server = OipServer(data.model)
    try:
        yield server.url
    finally:
        server.stop()


# --------------------------------------------------------------------------- the scenario


def sample(text: str, name: str, **labels: str) -> float | None:
    return first_sample(text, name, **labels)


def total(text: str, name: str, **labels: str) -> float:
    """The sum over the series that match (e.g. over versions)."""
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def scenario(data: Data, upstream: str, servers: Any, tmp_path: Path, binary_every: int = 0) -> None:
    ref = tmp_path / "reference.csv"
    rows = [",".join(data.names)] + [",".join(repr(float(v)) for v in row) for row in data.X[:TRAIN]]
    ref.write_text("\n".join(rows) + "\n")
    cfg = {
        "models": [{"name": "cancer", "task": "classification", "positive_class": "1",
                    "features": [{"name": n} for n in data.names], "reference": {"path": str(ref)},
                    "drift": {"recompute_interval": 0}}],
        "windows": [{"duration": "5m", "max_events": 10000}],
        "proxy": {"model": "cancer"},
    }
    (tmp_path / "modelmon.yml").write_text(yaml.safe_dump(cfg))
    proxy_port = free_port()
    exp = servers.exporter("--config", str(tmp_path / "modelmon.yml"), "--proxy.listen-address", f"127.0.0.1:{proxy_port}",
                           "--proxy.upstream", upstream, "--proxy.protocol", "oip-v2")
    served_pred, served_proba = [], []
    session = requests.Session()
    for k in range(len(data.serve_X) // BATCH):
        x = data.serve_X[k * BATCH:(k + 1) * BATCH]
        body: dict[str, Any] = {"id": f"b{k}", "inputs": [
            {"name": "input-0", "shape": [len(x), 30], "datatype": "FP64", "data": x.tolist()}],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
        if binary_every and k % binary_every == 1:
            body["parameters"] = {"binary_data_output": True}
        r = session.post(f"http://127.0.0.1:{proxy_port}/v2/models/cancer/infer", json=body, timeout=30)
        assert r.status_code == 200, r.text
        if "Inference-Header-Content-Length" in r.headers:
            n = int(r.headers["Inference-Header-Content-Length"])
            head = json.loads(r.content[:n])
            sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
            pred = np.frombuffer(r.content[n:n + sizes[0]], "<i8")
            proba = np.frombuffer(r.content[n + sizes[0]:], "<f8").reshape(-1, 2)
        else:
            outs = {o["name"]: o for o in r.json()["outputs"]}
            pred = np.asarray(outs["predict"]["data"]).ravel()
            proba = np.asarray(outs["predict_proba"]["data"], dtype=float).reshape(-1, 2)
        served_pred += pred.tolist()
        served_proba += proba[:, 1].tolist()
    n_served = len(served_pred)
    assert n_served == len(data.serve_y) == 169
    # The proxy passed the model's answers through unchanged.
    assert served_pred == data.model.predict(data.serve_X).tolist()
    try:
        wait_until(lambda: sample(exp.metrics(), "modelmon_requests_total", model="cancer", version="v1") == n_served,
                   timeout=20, what="proxied predictions recorded")
    except TimeoutError:
        print("".join(line for line in exp.metrics().splitlines(True) if "cancer" in line and "drift" not in line
                      and "feature" not in line and "bucket" not in line))
        raise
    labels = [{"id": f"b{i // BATCH}:{i % BATCH}", "label": int(v)} for i, v in enumerate(data.serve_y)]
    r = requests.post(f"{exp.url}/api/v1/labels", json=labels, timeout=10)
    assert r.json()["accepted"] == n_served, r.text
    text = exp.metrics()
    assert sample(text, "modelmon_proxy_protocol_failures_total", reason="binary_unsupported") == 0
    assert sample(text, "modelmon_quality_accuracy_ratio", model="cancer", window="5m") == pytest.approx(
        accuracy_score(data.serve_y, served_pred), abs=1e-12)
    assert sample(text, "modelmon_quality_roc_auc_ratio", model="cancer", window="5m") == pytest.approx(
        roc_auc_score(data.serve_y, served_proba), abs=1e-12)
    for name in DRIFT_CHECKED:
        j = data.names.index(name)
        expected = stats.ks_2samp(data.X[:TRAIN, j], data.serve_X[:, j])
        got = sample(text, "modelmon_drift_score", model="cancer", feature=name, method="ks", window="5m")
        assert got == pytest.approx(expected.statistic, abs=1e-12), name
        p = sample(text, "modelmon_drift_p_value", model="cancer", feature=name, method="ks", window="5m")
        assert p == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-12), name
    # A request the model refuses (MLServer: 500 with a traceback; the aiohttp server: 400 with {"error"}):
    # passed through, counted as an error.
    r = session.post(f"http://127.0.0.1:{proxy_port}/v2/models/cancer/infer",
                     json={"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
                     timeout=30)
    assert r.status_code >= 400
    reason = "invalid_request" if r.status_code < 500 else "error"
    wait_until(lambda: total(exp.metrics(), "modelmon_request_errors_total", model="cancer", reason=reason) == 1,
               timeout=20, what="refused request counted as an error")


@pytest.mark.mlserver
def test_mlserver_behind_the_oip_proxy(data: Data, mlserver: str, servers: Any, tmp_path: Path) -> None:
    scenario(data, mlserver, servers, tmp_path)


def test_oip_server_behind_the_oip_proxy_json_and_binary(data: Data, oip_server: str, servers: Any, tmp_path: Path) -> None:
    scenario(data, oip_server, servers, tmp_path, binary_every=2)


def test_kserve_v1_behind_the_proxy_gzip_request(data: Data, oip_server: str, servers: Any, tmp_path: Path) -> None:
    """kserve-v1: list rows by the configured features' order, probability lists as predictions."""
    import gzip

    ref = tmp_path / "reference.csv"
    ref.write_text("\n".join([",".join(data.names)] + [",".join(map(repr, map(float, r))) for r in data.X[:TRAIN]]) + "\n")
    cfg = {"models": [{"name": "cancer", "features": [{"name": n} for n in data.names], "reference": {"path": str(ref)},
                       "drift": {"recompute_interval": 0}}],
           "windows": [{"duration": "5m", "max_events": 10000}], "proxy": {"version": "1.0"}}
    (tmp_path / "modelmon.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    exp = servers.exporter("--config", str(tmp_path / "modelmon.yml"), "--proxy.listen-address", f"127.0.0.1:{port}",
                           "--proxy.upstream", oip_server, "--proxy.protocol", "kserve-v1")
    x = data.serve_X[:100]
    body = gzip.compress(json.dumps({"instances": x.tolist()}).encode())
    r = requests.post(f"http://127.0.0.1:{port}/v1/models/cancer:predict", data=body, timeout=30,
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip", "X-Request-Id": "q"})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 100
    wait_until(lambda: sample(exp.metrics(), "modelmon_requests_total", model="cancer", version="1.0") == 100,
               timeout=20, what="proxied predictions recorded")
    labels = [{"id": f"q:{i}", "label": int(v)} for i, v in enumerate(data.serve_y[:100])]
    assert requests.post(f"{exp.url}/api/v1/labels", json=labels, timeout=10).json()["accepted"] == 100
    text = exp.metrics()
    assert sample(text, "modelmon_quality_accuracy_ratio", model="cancer", window="5m") == pytest.approx(
        accuracy_score(data.serve_y[:100], data.model.predict(x)), abs=1e-12)
    assert sample(text, "modelmon_quality_roc_auc_ratio", model="cancer", window="5m") == pytest.approx(
        roc_auc_score(data.serve_y[:100], data.model.predict_proba(x)[:, 1]), abs=1e-12)
    j = data.names.index("mean_radius")
    assert sample(text, "modelmon_drift_score", model="cancer", feature="mean_radius", method="ks", window="5m") == \
        pytest.approx(stats.ks_2samp(data.X[:TRAIN, j], x[:, j]).statistic, abs=1e-12)


def test_proxy_protocol_config_errors_name_the_field(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = {"models": [{"name": "m", "features": [{"name": "a"}]}],
           "proxy": {"listen_address": "127.0.0.1:0", "upstream": "http://127.0.0.1:1", "protocol": "oip-v2",
                     "features": {"a": "input0[3]"}}}
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "modelmon", "serve", "--config", str(tmp_path / "bad.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "bad.yml: proxy.features.a: invalid tensor selector" in out.stderr, out.stderr
    cfg["proxy"].update(protocol="kserve-v1", features={}, columns=["a", "b"])
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "modelmon", "serve", "--config", str(tmp_path / "bad.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "proxy.columns[1]: not a feature of model 'm'" in out.stderr, out.stderr
    out = subprocess.run([sys.executable, "-m", "modelmon", "serve", "--proxy.protocol", "grpc"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--proxy.protocol" in out.stderr


def test_json_paths_read_gzip_bodies_that_pass_unchanged(data: Data, oip_server: str, servers: Any, tmp_path: Path) -> None:
    """The proxy forwards a gzip body as it came (Content-Encoding intact) and the dotted paths read it decoded."""
    import gzip

    ref = tmp_path / "reference.csv"
    ref.write_text("\n".join([data.names[0]] + [repr(float(v)) for v in data.X[:TRAIN, 0]]) + "\n")
    cfg = {"models": [{"name": "cancer", "features": [{"name": data.names[0]}], "reference": {"path": str(ref)}}],
           "windows": [{"duration": "5m"}],
           "proxy": {"features": {data.names[0]: "instances[*].0"}, "score": "predictions[*].1"}}
    (tmp_path / "modelmon.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    exp = servers.exporter("--config", str(tmp_path / "modelmon.yml"), "--proxy.listen-address", f"127.0.0.1:{port}",
                           "--proxy.upstream", oip_server)
    x = data.serve_X[:20]
    r = requests.post(f"http://127.0.0.1:{port}/v1/models/cancer:predict", timeout=30,
                      data=gzip.compress(json.dumps({"instances": x.tolist()}).encode()),
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 20
    wait_until(lambda: sample(exp.metrics(), "modelmon_requests_total", model="cancer") == 20, timeout=20,
               what="proxied rows recorded")
    text = exp.metrics()
    assert sample(text, "modelmon_proxy_extraction_failures_total", model="cancer") == 0
    assert sample(text, "modelmon_feature_missing_ratio", model="cancer", feature=data.names[0], window="5m") == 0
