"""POST /api/v1/cloudevents through real HTTP (an in-process exporter): KServe's
payload logger posts each request and response as a binary-mode CloudEvent
(KServe pkg/logger/worker.go, handler.go); the sink joins them by Ce-Id, expands
batches, takes latency from the two Ce-Time values, maps the InferenceService
and endpoint to model and version, and counts what it cannot use."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from modelmon.app import Exporter
from modelmon.config import ConfigError, config_from_dict
from servers import first_sample, wait_until

PATH = "/api/v1/cloudevents"


def config(tmp_path: Path, **cloudevents: Any) -> dict[str, Any]:
    ref = tmp_path / "ref.csv"
    ref.write_text("amount,country\n" + "".join(f"{i % 50},{['US', 'DE'][i % 2]}\n" for i in range(200)))
    ref2 = tmp_path / "ref2.csv"
    ref2.write_text("tenure\n" + "".join(f"{i % 60}\n" for i in range(200)))
    return {
        "models": [{"name": "fraud", "features": [{"name": "amount"}, {"name": "country", "type": "categorical"}],
                    "reference": {"path": str(ref)}, "drift": {"recompute_interval": 0}},
                   {"name": "churn", "features": [{"name": "tenure"}], "reference": {"path": str(ref2)}}],
        "windows": [{"duration": "5m"}],
        "cloudevents": cloudevents,
    }


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Exporter]]:
    started: list[Exporter] = []

    def _start(**cloudevents: Any) -> Exporter:
        exp = Exporter(config_from_dict(config(tmp_path, **cloudevents)))
        exp.start()
        started.append(exp)
        return exp

    yield _start
    for exp in started:
        exp.stop()


def sample(exp: Exporter, name: str, **labels: str) -> float | None:
    text = requests.get(f"http://127.0.0.1:{exp.port}/metrics", timeout=5).text
    return first_sample(text, name, **labels)


def post(exp: Exporter, kind: str, body: Any, id_: str = "ce-1", time: str = "2026-12-01T22:00:00Z",
         isvc: str = "fraud", endpoint: str = "default", **headers: str) -> requests.Response:
    # Binary mode as KServe's logger sends it: attributes in Ce-* headers, the raw body as the body.
    h = {"Ce-Specversion": "1.0", "Ce-Id": id_, "Ce-Type": f"org.kubeflow.serving.inference.{kind}",
         "Ce-Source": "http://localhost:9081/", "Ce-Time": time, "Ce-Inferenceservicename": isvc,
         "Ce-Namespace": "default", "Ce-Component": "predictor", "Ce-Endpoint": endpoint,
         "Ce-Metadata": "{}", "Content-Type": "application/json", **headers}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"http://127.0.0.1:{exp.port}{PATH}", data=data, headers=h, timeout=5)


def test_joined_batch_becomes_one_event_per_row_with_latency_and_labels(start: Callable[..., Exporter]) -> None:
    exp = start()
    # The response may arrive first: the logger's workers send concurrently.
    r = post(exp, "response", {"predictions": [1, 0, 1]}, time="2026-12-01T22:00:00.250Z")
    assert r.status_code == 200 and r.json() == {"accepted": 0, "joined": False}
    assert sample(exp, "modelmon_cloudevents_pending") == 1
    r = post(exp, "request", {"instances": [[12.5, "US"], [30.0, "DE"], [7.0, "FR"]]}, time="2026-12-01T22:00:00.050Z")
    assert r.status_code == 200 and r.json() == {"accepted": 3, "joined": True}
    assert sample(exp, "modelmon_requests_total", model="fraud") == 3
    assert sample(exp, "modelmon_events_accepted_total", model="fraud", source="cloudevents") == 3
    assert sample(exp, "modelmon_request_duration_seconds_sum", model="fraud") == pytest.approx(3 * 0.2)
    assert sample(exp, "modelmon_cloudevents_received_total", type="request") == 1
    assert sample(exp, "modelmon_cloudevents_pending") == 0
    # Rows get ids <Ce-Id>:<row>, so labels join per row.
    labels = [{"id": "ce-1:0", "label": 1}, {"id": "ce-1:1", "label": 1}, {"id": "ce-1:2", "label": 1}]
    r = requests.post(f"http://127.0.0.1:{exp.port}/api/v1/labels", json=labels, timeout=5)
    assert r.json()["accepted"] == 3
    assert sample(exp, "modelmon_quality_accuracy_ratio", model="fraud", window="5m") == pytest.approx(2 / 3)


def test_structured_mode_and_oip_body(start: Callable[..., Exporter]) -> None:
    exp = start()
    doc = {"specversion": "1.0", "id": "s-1", "type": "org.kubeflow.serving.inference.request", "source": "x",
           "time": "2026-12-01T22:00:00Z", "inferenceservicename": "churn", "endpoint": "default",
           "datacontenttype": "application/json",
           "data": {"inputs": [{"name": "tenure", "shape": [2], "datatype": "FP32", "data": [3.0, 40.0]}]}}
    r = requests.post(f"http://127.0.0.1:{exp.port}{PATH}", data=json.dumps(doc),
                      headers={"Content-Type": "application/cloudevents+json"}, timeout=5)
    assert r.status_code == 200
    doc.update(type="org.kubeflow.serving.inference.response", time="2026-12-01T22:00:00.5Z",
               data={"model_name": "churn", "model_version": "4", "outputs": [
                   {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 1]}]})
    r = requests.post(f"http://127.0.0.1:{exp.port}{PATH}", data=json.dumps(doc),
                      headers={"Content-Type": "application/cloudevents+json"}, timeout=5)
    assert r.json() == {"accepted": 2, "joined": True}
    assert sample(exp, "modelmon_requests_total", model="churn", version="4") == 2


def test_structured_mode_charset_and_binary_mode_payload_charset(start: Callable[..., Exporter]) -> None:
    exp = start()
    doc = {"specversion": "1.0", "id": "s-2", "type": "org.kubeflow.serving.inference.request", "source": "x",
           "inferenceservicename": "fraud", "data": {"instances": [[12.5, "US"]]}}
    r = requests.post(f"http://127.0.0.1:{exp.port}{PATH}", data=json.dumps(doc),
                      headers={"Content-Type": "application/cloudevents+json; charset=latin-1"}, timeout=5)
    assert r.status_code == 415 and "'latin-1'" in r.json()["error"] and "UTF-8" in r.json()["error"]
    assert sample(exp, "modelmon_cloudevents_refused_total", reason="malformed") == 1
    r = requests.post(f"http://127.0.0.1:{exp.port}{PATH}", data=json.dumps(doc),
                      headers={"Content-Type": 'Application/CloudEvents+JSON ; charset="UTF-8"'}, timeout=5)
    assert r.status_code == 200 and r.json() == {"accepted": 0, "joined": False}
    # In binary mode the Content-Type is the served request's own: its charset is not the sink's to refuse.
    r = post(exp, "request", {"instances": [[1.0, "DE"]]}, id_="b-1", **{"Content-Type": "application/json; charset=latin-1"})
    assert r.status_code == 200
    assert sample(exp, "modelmon_cloudevents_received_total", type="request") == 2


def test_services_map_names_and_endpoints(start: Callable[..., Exporter]) -> None:
    exp = start(services=[{"inference_service": "fraud-detector", "model": "fraud",
                           "endpoints": {"default": "1.0", "canary": "1.1"}, "columns": ["country", "amount"]}])
    for i, endpoint in enumerate(("default", "canary", "canary")):
        post(exp, "request", {"instances": [["US", 5.0]]}, id_=f"e{i}", isvc="fraud-detector", endpoint=endpoint)
        post(exp, "response", {"predictions": [0]}, id_=f"e{i}", isvc="fraud-detector", endpoint=endpoint)
    assert sample(exp, "modelmon_requests_total", model="fraud", version="1.0") == 1
    assert sample(exp, "modelmon_requests_total", model="fraud", version="1.1") == 2
    # columns [country, amount]: the list rows were read in that order (else amount would be missing).
    assert sample(exp, "modelmon_feature_missing_ratio", model="fraud", feature="amount", window="5m") == 0
    assert sample(exp, "modelmon_feature_missing_ratio", model="fraud", feature="country", window="5m") == 0


def test_refusals_are_counted_and_answered(start: Callable[..., Exporter]) -> None:
    exp = start()
    r = post(exp, "request", {"instances": [[1, "US"]]}, isvc="unknown-isvc")
    assert r.status_code == 404 and "unknown-isvc" in r.json()["error"]
    r = post(exp, "request", b"{}", **{"Ce-Type": "com.example.other"})
    assert r.status_code == 400
    r = requests.post(f"http://127.0.0.1:{exp.port}{PATH}", data=b"{}", headers={"Content-Type": "application/json"},
                      timeout=5)
    assert r.status_code == 400 and "Ce-Id" in r.json()["error"]
    # A body of neither protocol: taken (the logger does not retry), counted, one event without features.
    post(exp, "request", {"text": "hi"}, id_="x1")
    assert post(exp, "response", {"answer": 1}, id_="x1").status_code == 200
    assert sample(exp, "modelmon_cloudevents_refused_total", reason="unknown_model") == 1
    assert sample(exp, "modelmon_cloudevents_refused_total", reason="malformed") == 2
    assert sample(exp, "modelmon_cloudevents_refused_total", reason="unknown_protocol") == 1
    assert sample(exp, "modelmon_requests_total", model="fraud") == 1
    # Rows that fail the event schema are rejected per item under source="cloudevents".
    post(exp, "request", {"instances": [[1, "x" * 300]]}, id_="long")
    post(exp, "response", {"predictions": [1]}, id_="long")
    assert sample(exp, "modelmon_events_rejected_total", source="cloudevents", reason="invalid_field") == 1
    assert requests.get(f"http://127.0.0.1:{exp.port}/metrics", timeout=5).status_code == 200


def test_lone_halves_are_used_after_the_horizon(start: Callable[..., Exporter]) -> None:
    exp = start(join_horizon="200ms")
    post(exp, "request", {"instances": [[1.0, "US"], [2.0, "DE"]]}, id_="lone-req")
    post(exp, "response", {"predictions": [1]}, id_="lone-resp")
    wait_until(lambda: sample(exp, "modelmon_cloudevents_unpaired_total", type="request") == 1
               and sample(exp, "modelmon_cloudevents_unpaired_total", type="response") == 1, timeout=10,
               what="lone halves swept")
    # A request alone still feeds drift (features) and the request counter; latency is unknown.
    assert sample(exp, "modelmon_requests_total", model="fraud") == 3
    assert sample(exp, "modelmon_request_duration_seconds_count", model="fraud") == 0
    assert sample(exp, "modelmon_cloudevents_pending") == 0


def test_token_protects_the_sink(start: Callable[..., Exporter], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MM_TOKEN", "s3cret")
    cfg = config(tmp_path)
    cfg["ingest"] = {"token_env": "MM_TOKEN"}
    exp = Exporter(config_from_dict(cfg))
    exp.start()
    try:
        assert post(exp, "request", {"instances": [[1, "US"]]}).status_code == 401
        assert post(exp, "request", {"instances": [[1, "US"]]}, Authorization="Bearer s3cret").status_code == 200
    finally:
        exp.stop()


@pytest.mark.parametrize("services,field", [
    ([{"model": "fraud"}], "cloudevents.services[0].inference_service"),
    ([{"inference_service": "x"}], "cloudevents.services[0].inference_service"),
    ([{"inference_service": "x", "model": "nope"}], "cloudevents.services[0].model"),
    ([{"inference_service": "x", "model": "fraud", "columns": ["amount", "typo"]}], "cloudevents.services[0].columns[1]"),
    ([{"inference_service": "x", "model": "fraud", "features": {"amount": "in[3]"}}], "cloudevents.services[0].features.amount"),
    ([{"inference_service": "x", "model": "fraud"}, {"inference_service": "x", "model": "churn"}],
     "cloudevents.services[1].inference_service"),
])
def test_config_errors_name_the_field(tmp_path: Path, services: list[dict[str, Any]], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(config(tmp_path, services=services), source="modelmon.yml")
    assert exc.value.field_path == field and str(exc.value).startswith("modelmon.yml: " + field)


def test_binary_payload_through_http(start: Callable[..., Exporter]) -> None:
    # Triton binary tensors: the logger posts the raw body with the request's Content-Type; the sink
    # reads it when metadataHeaders kept Inference-Header-Content-Length (in Ce-Metadata).
    import numpy as np

    exp = start()
    raw = np.array([3.0, 40.0], dtype="<f4").tobytes()
    head = json.dumps({"inputs": [{"name": "tenure", "shape": [2], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    meta = json.dumps({"Inference-Header-Content-Length": [str(len(head))]})
    r = post(exp, "request", head + raw, isvc="churn", **{"Content-Type": "application/octet-stream", "Ce-Metadata": meta})
    assert r.status_code == 200
    r = post(exp, "response", {"model_name": "churn", "outputs": [
        {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 1]}]}, isvc="churn")
    assert r.json() == {"accepted": 2, "joined": True}
    assert sample(exp, "modelmon_feature_missing_ratio", model="churn", feature="tenure", window="5m") == 0


def test_reload_applies_new_services(start: Callable[..., Exporter], tmp_path: Path) -> None:
    from modelmon.preflight import load_profiles

    exp = start()
    assert post(exp, "request", {"instances": [[1.0, "US"]]}, isvc="fraud-v2").status_code == 404
    cfg = config_from_dict(config(tmp_path, join_horizon="5s", services=[
        {"inference_service": "fraud-v2", "model": "fraud", "endpoints": {"default": "2.0"}}]))
    exp.reload(cfg, load_profiles(cfg))
    post(exp, "request", {"instances": [[1.0, "US"]]}, id_="r2", isvc="fraud-v2")
    assert post(exp, "response", {"predictions": [1]}, id_="r2", isvc="fraud-v2").json() == {"accepted": 1, "joined": True}
    assert sample(exp, "modelmon_requests_total", model="fraud", version="2.0") == 1
