"""examples/kserve: an InferenceService whose payload logger posts to modelmon.
The kustomization renders offline, the logger's URL is the sink on the port the
packaged Service exposes, the ConfigMap's config is accepted by modelmon, and
CloudEvents shaped like the logger's for that InferenceService land on the
configured model and version."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import yaml

from modelmon.app import Exporter
from modelmon.config import config_from_dict
from modelmon.sources.cloudevents import PATH
from servers import require_binary

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "kserve"


def rendered() -> list[dict[str, Any]]:
    out = subprocess.run([require_binary("kubectl"), "kustomize", str(EXAMPLE)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def objects() -> tuple[dict[str, Any], dict[str, Any]]:
    docs = rendered()
    (isvc,) = [d for d in docs if d["kind"] == "InferenceService"]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    return isvc, cm


def test_logger_points_at_the_sink_of_the_packaged_service() -> None:
    isvc, cm = objects()
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    logger = isvc["spec"]["predictor"]["logger"]
    assert logger["mode"] == "all"
    url = urlsplit(logger["url"])
    assert url.path == PATH
    service = next(d for p in sorted((REPO / "deploy" / "kubernetes").rglob("service.yaml"))
                   for d in yaml.safe_load_all(p.read_text()) if d and d.get("kind") == "Service")
    host = f"{service['metadata']['name']}.{cm['metadata']['namespace']}.svc.cluster.local"
    assert url.hostname == host
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    assert cm["metadata"]["name"] == "modelmon-config"


def test_the_example_config_feeds_the_model(tmp_path: Path) -> None:
    isvc, cm = objects()
    cfg = yaml.safe_load(cm["data"]["modelmon.yml"])
    ref = tmp_path / "iris.csv"
    ref.write_text("sepal_length,sepal_width,petal_length,petal_width\n" +
                   "".join(f"{5 + i % 3},{3 + i % 2},{1 + i % 5},{0.2 * (i % 4)}\n" for i in range(150)))
    cfg["models"][0]["reference"]["path"] = str(ref)
    exp = Exporter(config_from_dict(cfg, source="modelmon.yml"))
    exp.start()
    try:
        # What the logger sends for one OIP v2 call of the iris model (KServe's v2 iris request).
        headers = {"Ce-Specversion": "1.0", "Ce-Id": "r-1", "Ce-Source": "http://localhost:9081/",
                   "Ce-Inferenceservicename": isvc["metadata"]["name"], "Ce-Namespace": isvc["metadata"]["namespace"],
                   "Ce-Component": "predictor", "Ce-Endpoint": "default", "Content-Type": "application/json"}
        request = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                               "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}]}
        response = {"model_name": "sklearn-iris", "id": "r-1", "outputs": [
            {"name": "output-0", "shape": [2], "datatype": "INT32", "data": [1, 1]}]}
        url = f"http://127.0.0.1:{exp.port}{PATH}"
        for kind, body, t in (("request", request, "2026-12-01T22:00:00Z"), ("response", response, "2026-12-01T22:00:00.03Z")):
            r = requests.post(url, data=json.dumps(body), timeout=5,
                              headers={**headers, "Ce-Type": f"org.kubeflow.serving.inference.{kind}", "Ce-Time": t})
            assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 2, "joined": True}
        text = requests.get(f"http://127.0.0.1:{exp.port}/metrics", timeout=5).text
        assert 'modelmon_requests_total{model="iris",version="stable"} 2.0' in text
    finally:
        exp.stop()
