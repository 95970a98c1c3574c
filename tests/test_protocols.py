"""Wire protocols of standard model servers turned into modelmon events:
KServe v1, the Open Inference Protocol (OIP, "v2") with Triton's binary
tensor extension, and KServe's payload-logger CloudEvents.  Payloads are
built from the specifications; every event produced must pass the same
validation as ``POST /api/v1/events``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from modelmon.config import FeatureConfig, ModelConfig
from modelmon.ingest import ItemValidator
from modelmon.protocols import Mapping, ProtocolError, kserve_v1, oip_v2
from modelmon.protocols import cloudevents as ce

MODEL = ModelConfig(name="m", features=[FeatureConfig("a"), FeatureConfig("b"), FeatureConfig("colour", type="categorical")])
MAP = Mapping(model="m", feature_types={"a": "numerical", "b": "numerical", "colour": "categorical"})


def accepted(events: list[dict[str, Any]], model: ModelConfig = MODEL) -> Any:
    """Validate events as the ingestion API does; returns the resulting batch."""
    v = ItemValidator(model, "api", unknown_feature="reject")
    for ev in events:
        v.add(ev, 1000.0)
    return v.batch()


def js(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# --------------------------------------------------------------------------- OIP v2


def test_oip_spec_example_request_and_response() -> None:
    # Open Inference Protocol, "Inference Request Examples" (kserve docs/predict-api/v2/required_api.md):
    # input0 UINT32 [2, 2] data [1, 2, 3, 4]; input1 BOOL shape [3] data [true] (sic: one value for three).
    request = js({"id": "42", "inputs": [
        {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
        {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True]}],
        "outputs": [{"name": "output0"}]})
    # The spec's response to it: output0 FP32 [3, 2] (three rows for a two-row request).
    response = js({"id": "42", "outputs": [
        {"name": "output0", "shape": [3, 2], "datatype": "FP32", "data": [1.0, 1.1, 2.0, 2.1, 3.0, 3.1]}]})
    m = Mapping(model="m", feature_types=MAP.feature_types, features={"a": "input0[:, 0]", "b": "input0[:, 1]"},
                prediction="output0[:, 0]")
    events, problems = oip_v2.extract(m, request, response, {"model": "m"})
    # input1 is not mapped, so its inconsistency does not matter; the 3-row output does.
    assert [p.reason for p in problems] == ["shape_mismatch"]
    assert [e["features"] for e in events] == [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]
    assert [e["id"] for e in events] == ["42:0", "42:1"]
    assert all("prediction" not in e for e in events)
    accepted(events)


def test_oip_nested_and_flat_data_give_the_same_rows() -> None:
    # "data" : [ [ 1, 2 ], [ 4, 5 ] ]  or  "data" : [ 1, 2, 4, 5 ]  (OIP, "Tensor Data")
    rows = []
    for data in ([[1, 2], [4, 5]], [1, 2, 4, 5]):
        req = js({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": data}]})
        m = Mapping(model="m", feature_types={"a": "numerical", "b": "numerical"})
        n, cols = oip_v2.request_features(m, oip_v2.decode_request(req))
        rows.append((n, cols))
    assert rows[0] == rows[1] == (2, {"a": [1.0, 4.0], "b": [2.0, 5.0]})


def test_oip_pandas_content_type_one_input_per_column() -> None:
    # MLServer's "pd" content type: one input per DataFrame column, the column name as input name.
    req = js({"parameters": {"content_type": "pd"}, "inputs": [
        {"name": "a", "shape": [3, 1], "datatype": "INT32", "data": [1, 2, 3]},
        {"name": "colour", "shape": [3, 1], "datatype": "BYTES", "data": ["red", "blue", "red"],
         "parameters": {"content_type": "str"}},
        {"name": "b", "shape": [3], "datatype": "FP32", "data": [0.5, 1.5, 2.5]},
        {"name": "unmonitored", "shape": [3], "datatype": "FP32", "data": [0, 0, 0]}]})
    resp = js({"model_name": "m", "model_version": "v7", "outputs": [
        {"name": "predict", "shape": [3, 1], "datatype": "INT64", "data": [1, 0, 1]}]})
    events, problems = oip_v2.extract(MAP, req, resp, {"model": "m"})
    assert problems == []
    assert [e["features"] for e in events] == [
        {"a": 1.0, "colour": "red", "b": 0.5}, {"a": 2.0, "colour": "blue", "b": 1.5}, {"a": 3.0, "colour": "red", "b": 2.5}]
    assert [e["prediction"] for e in events] == [1, 0, 1]
    assert {e["version"] for e in events} == {"v7"}
    batch = accepted(events)
    assert batch.predictions == ["1", "0", "1"] and batch.versions == ["v7"] * 3


def test_oip_one_tensor_maps_positionally_to_the_configured_features() -> None:
    # iris-style request (kserve test/e2e/data/iris_input_v2_binary.json, JSON form): input-0 FP32 [2, 4].
    m = Mapping(model="m", feature_types={f"f{i}": "numerical" for i in range(4)})
    req = js({"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                          "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}]})
    n, cols = oip_v2.request_features(m, oip_v2.decode_request(req))
    assert n == 2 and cols["f0"] == [6.8, 6.0] and cols["f3"] == [1.4, 1.6]
    # With explicit columns a padding column is skipped.
    m2 = Mapping(model="m", feature_types={"f0": "numerical", "f3": "numerical"}, columns=("f0", "skip1", "skip2", "f3"))
    assert oip_v2.request_features(m2, oip_v2.decode_request(req))[1] == {"f0": [6.8, 6.0], "f3": [1.4, 1.6]}
    # A tensor of another width is not guessed at.
    m3 = Mapping(model="m", feature_types={"f0": "numerical", "f1": "numerical"})
    assert oip_v2.request_features(m3, oip_v2.decode_request(req)) == (2, {})


def test_oip_predict_proba_gives_the_score() -> None:
    resp = js({"model_name": "m", "outputs": [
        {"name": "predict", "shape": [2], "datatype": "INT64", "data": [1, 0]},
        {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64", "data": [[0.2, 0.8], [0.9, 0.1]]}]})
    preds, scores = oip_v2.response_outputs(MAP, oip_v2.decode_response(resp))
    assert preds == [1, 0] and scores == [0.8, 0.1]
    # A configured selector wins.
    m = Mapping(model="m", score="predict_proba[:, 0]", prediction="predict")
    assert oip_v2.response_outputs(m, oip_v2.decode_response(resp)) == ([1, 0], [0.2, 0.9])


def binary_body(doc: dict[str, Any], tensors: list[bytes]) -> tuple[bytes, int]:
    head = js(doc)
    return head + b"".join(tensors), len(head)


@pytest.mark.parametrize("datatype,dtype", [
    ("BOOL", "|b1"), ("UINT8", "|u1"), ("UINT16", "<u2"), ("UINT32", "<u4"), ("UINT64", "<u8"),
    ("INT8", "|i1"), ("INT16", "<i2"), ("INT32", "<i4"), ("INT64", "<i8"),
    ("FP16", "<f2"), ("FP32", "<f4"), ("FP64", "<f8"),
])
def test_oip_binary_extension_fixed_width(datatype: str, dtype: str) -> None:
    # Triton binary tensor data extension: little-endian, row-major, no padding; BOOL one byte.
    values = np.array([[1, 0], [1, 1], [0, 1]], dtype=dtype) if datatype == "BOOL" else \
        np.array([[1, 2], [3, 4], [5, 126]], dtype=dtype)
    raw = values.tobytes()
    body, n = binary_body({"inputs": [{"name": "x", "shape": [3, 2], "datatype": datatype,
                                       "parameters": {"binary_data_size": len(raw)}}]}, [raw])
    m = Mapping(model="m", feature_types={"a": "numerical", "b": "numerical"})
    rows, cols = oip_v2.request_features(m, oip_v2.decode_request(body, n))
    assert rows == 3
    assert cols == {"a": values[:, 0].astype(float).tolist(), "b": values[:, 1].astype(float).tolist()}
    accepted(oip_v2.extract(m, body, None, {"model": "m"}, request_json_length=n)[0],
             ModelConfig(name="m", features=[FeatureConfig("a"), FeatureConfig("b")]))


def test_oip_binary_bf16_and_bytes() -> None:
    f32 = np.array([1.5, -2.25, 3.0e10], dtype="<f4")
    bf16 = (f32.view("<u4") >> 16).astype("<u2").tobytes()  # bf16 is the upper half of a float32
    words = ["red", "blüe", ""]
    bytes_raw = b"".join(len(w.encode()).to_bytes(4, "little") + w.encode() for w in words)
    body, n = binary_body({"inputs": [
        {"name": "a", "shape": [3], "datatype": "BF16", "parameters": {"binary_data_size": len(bf16)}},
        {"name": "colour", "shape": [3, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(bytes_raw)}}]},
        [bf16, bytes_raw])
    _, cols = oip_v2.request_features(MAP, oip_v2.decode_request(body, n))
    truncated = (f32.view("<u4") & 0xFFFF0000).view("<f4").astype(float).tolist()  # bf16 keeps 8 mantissa bits
    assert cols["a"] == truncated and truncated[:2] == [1.5, -2.25]
    assert cols["a"][2] == pytest.approx(3.0e10, rel=1e-2)
    assert cols["colour"] == words


def test_oip_binary_output_and_refusals() -> None:
    preds = np.array([0, 1, 1], dtype="<i8").tobytes()
    body, n = binary_body({"model_name": "m", "outputs": [
        {"name": "out", "shape": [3], "datatype": "INT64", "parameters": {"binary_data_size": len(preds)}}]}, [preds])
    assert oip_v2.response_outputs(MAP, oip_v2.decode_response(body, n))[0] == [0, 1, 1]
    # A size that does not fit the shape, a size past the body, a header length past the body.
    for doc, raw, length in (
        ({"inputs": [{"name": "a", "shape": [3], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}, b"\0" * 8, None),
        ({"inputs": [{"name": "a", "shape": [3], "datatype": "FP32", "parameters": {"binary_data_size": 99}}]}, b"\0" * 12, None),
        ({"inputs": [{"name": "a", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]}, b"", 10_000),
    ):
        body, n = binary_body(doc, [raw])
        events, problems = oip_v2.extract(MAP, body, None, {"model": "m"}, request_json_length=length or n)
        assert [p.reason for p in problems] == ["binary_unsupported"]
        assert events == [{"model": "m"}]  # the request is still recorded
    # Triton's shared-memory extension: the data never travels through HTTP.
    shm = js({"inputs": [{"name": "a", "shape": [2], "datatype": "FP32",
                          "parameters": {"shared_memory_region": "in0", "shared_memory_byte_size": 8}}]})
    assert [p.reason for p in oip_v2.extract(MAP, shm, None, {"model": "m"})[1]] == ["binary_unsupported"]


def test_oip_error_body_and_status() -> None:
    # "$inference_error_response = { "error": <error message string> }", typically with HTTP 400.
    req = js({"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 2]}]})
    events, problems = oip_v2.extract(MAP, req, js({"error": "unexpected shape for input 'a'"}), {"model": "m"}, status=400)
    assert problems == []
    assert [(e["error"], e["features"]["a"]) for e in events] == [("invalid_request", 1.0), ("invalid_request", 2.0)]
    events, _ = oip_v2.extract(MAP, req, js({"error": "CUDA out of memory"}), {"model": "m"}, status=500)
    assert {e["error"] for e in events} == {"error"}
    events, _ = oip_v2.extract(MAP, req, b"<html>bad gateway</html>", {"model": "m"}, status=502)
    assert {e.get("error") for e in events} == {"error"}
    accepted(events)


def test_oip_response_without_request_and_bad_shapes() -> None:
    resp = js({"model_name": "m", "id": "r1", "outputs": [
        {"name": "out", "shape": [2, 1], "datatype": "BYTES", "data": ["cat", "dog"]}]})
    events, problems = oip_v2.extract(MAP, None, resp, {"model": "m"})
    assert problems == [] and [(e["id"], e["prediction"]) for e in events] == [("r1:0", "cat"), ("r1:1", "dog")]
    for tensor, reason in (
        ({"name": "a", "shape": [2, 2, 2], "datatype": "FP32", "data": [0] * 8}, "unsupported_shape"),
        ({"name": "a", "shape": [2], "datatype": "COMPLEX64", "data": [0, 0]}, "unsupported_datatype"),
        ({"name": "a", "shape": [3], "datatype": "FP32", "data": [1, 2]}, "shape_mismatch"),
        ({"name": "a", "shape": "3", "datatype": "FP32", "data": [1, 2, 3]}, "malformed"),
        ({"name": "a", "shape": [2], "datatype": "FP32", "data": ["x", "y"]}, "malformed"),
    ):
        with pytest.raises(ProtocolError) as exc:
            oip_v2.request_features(MAP, oip_v2.decode_request(js({"inputs": [tensor]})))
        assert exc.value.reason == reason
    assert [p.reason for p in oip_v2.extract(MAP, b"not json", None, {"model": "m"})[1]] == ["malformed"]


def test_oip_selectors() -> None:
    assert oip_v2.parse_selector("input0[:, 3]") == oip_v2.Selector("input0", 3)
    assert oip_v2.parse_selector(" age ") == oip_v2.Selector("age", None)
    for bad in ("", "x[3]", "x[:, -1]", "x[:, 1"):
        with pytest.raises(ValueError):
            oip_v2.parse_selector(bad)


# --------------------------------------------------------------------------- KServe v1


def test_kserve_v1_doc_example_rows_as_lists() -> None:
    # KServe "First InferenceService" (sklearn iris): {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
    # answered {"predictions": [1, 1]}.
    m = Mapping(model="m", feature_types={n: "numerical" for n in ("sl", "sw", "pl", "pw")})
    events, problems = kserve_v1.extract(m, js({"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}),
                                         js({"predictions": [1, 1]}), {"model": "m", "id": "x"})
    assert problems == []
    assert events == [
        {"model": "m", "id": "x:0", "features": {"sl": 6.8, "sw": 2.8, "pl": 4.8, "pw": 1.4}, "prediction": 1},
        {"model": "m", "id": "x:1", "features": {"sl": 6.0, "sw": 3.4, "pl": 4.5, "pw": 1.6}, "prediction": 1}]
    accepted(events, ModelConfig(name="m", features=[FeatureConfig(n) for n in ("sl", "sw", "pl", "pw")]))


def test_kserve_v1_objects_columns_and_probabilities() -> None:
    req = js({"instances": [{"a": 1, "colour": "red", "extra": 9}, {"b": 2.5, "colour": 3}]})
    resp = js({"predictions": [[0.3, 0.7], [0.9, 0.1]]})
    events, problems = kserve_v1.extract(MAP, req, resp, {"model": "m"})
    assert problems == []
    assert [e["features"] for e in events] == [{"a": 1, "b": None, "colour": "red"}, {"a": None, "b": 2.5, "colour": "3"}]
    assert [e["prediction"] for e in events] == [1, 0]
    batch = accepted(events)
    assert batch.scores == [0.7, 0.1] and batch.predictions == ["1", "0"]
    # TensorFlow Serving's columnar "inputs".
    n, cols = kserve_v1.request_features(MAP, {"inputs": {"a": [1, 2], "colour": ["x", "y"]}})
    assert n == 2 and cols == {"a": [1, 2], "colour": ["x", "y"]}
    # Positional rows by configured column order.
    m = Mapping(model="m", feature_types=MAP.feature_types, columns=("colour", "a", "b"))
    assert kserve_v1.request_features(m, {"instances": [["red", 1, 2]]})[1] == {"a": [1], "b": [2], "colour": ["red"]}


def test_kserve_v1_problems() -> None:
    events, problems = kserve_v1.extract(MAP, js({"instances": [[1, 2]]}), js({"predictions": [1]}), {"model": "m"})
    assert [p.reason for p in problems] == ["shape_mismatch"]  # two values for three columns
    assert events == [{"model": "m", "prediction": 1}]
    events, problems = kserve_v1.extract(MAP, js({"instances": [[1, 2, "r"], [3, 4, "b"]]}),
                                         js({"predictions": [1]}), {"model": "m"})
    assert [p.reason for p in problems] == ["shape_mismatch"] and len(events) == 2
    assert all("prediction" not in e for e in events)
    events, _ = kserve_v1.extract(MAP, js({"instances": [[1, 2, "r"]]}), b"oops", {"model": "m"}, status=503)
    assert events[0]["error"] == "error" and events[0]["features"]["a"] == 1
    assert kserve_v1.extract(MAP, js({"instances": []}), js({"predictions": []}), {"model": "m"}) == ([], [])


# --------------------------------------------------------------------------- CloudEvents


def ce_headers(kind: str, id_: str = "abc-1", time: str = "2026-12-01T22:00:00.100000000Z", **extra: str) -> dict[str, str]:
    # KServe pkg/logger/worker.go: binary mode, Ce-Type org.kubeflow.serving.inference.{request,response},
    # extensions inferenceservicename, namespace, component, endpoint, metadata (JSON of kept headers).
    h = {"Ce-Specversion": "1.0", "Ce-Id": id_, "Ce-Type": f"org.kubeflow.serving.inference.{kind}",
         "Ce-Source": "http://localhost:9081/", "Ce-Time": time, "Ce-Inferenceservicename": "fraud",
         "Ce-Namespace": "default", "Ce-Component": "predictor", "Ce-Endpoint": "default",
         "Ce-Metadata": "{}", "Content-Type": "application/json"}
    h.update(extra)
    return h


def test_cloudevents_binary_mode_join_in_either_order() -> None:
    req = ce.parse(ce_headers("request"), js({"instances": [[1, 2, "r"], [3, 4, "b"]]}))
    resp = ce.parse(ce_headers("response", time="2026-12-01T22:00:00.142500000Z"), js({"predictions": [0, 1]}))
    assert req.kind == "request" and resp.kind == "response" and req.inference_service == "fraud"
    for first, second in ((req, resp), (resp, req)):
        buf = ce.JoinBuffer(60, 100, 1 << 20, clock=lambda: 0.0)
        assert buf.add(first) is None and len(buf) == 1
        ex = buf.add(second)
        assert ex is not None and ex.request is req and ex.response is resp and len(buf) == 0 and buf.bytes == 0
        events, problems = ce.exchange_events(MAP, ex, {"canary": "2.0"})
        assert problems == []
        assert [e["id"] for e in events] == ["abc-1:0", "abc-1:1"]
        assert [e["prediction"] for e in events] == [0, 1]
        assert events[0]["latency_seconds"] == pytest.approx(0.0425)
        assert events[0]["timestamp"] == pytest.approx(1796162400.1)
        assert "version" not in events[0]
        accepted(events)


def test_cloudevents_endpoint_version_and_oip_body() -> None:
    req = ce.parse(ce_headers("request", **{"Ce-Endpoint": "canary"}), js({"inputs": [
        {"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]}]}))
    resp = ce.parse(ce_headers("response", **{"Ce-Endpoint": "canary"}), js({"model_name": "fraud", "model_version": "7",
                    "outputs": [{"name": "p", "shape": [1], "datatype": "INT64", "data": [1]}]}))
    ex = ce.Exchange(req, resp)
    assert ce.detect(ex) == "oip-v2"
    assert ce.exchange_events(MAP, ex, {"canary": "2.0"})[0][0]["version"] == "2.0"
    assert ce.exchange_events(MAP, ex, {})[0][0]["version"] == "7"  # else OIP's model_version


def test_cloudevents_structured_mode() -> None:
    doc = {"specversion": "1.0", "id": "s1", "type": ce.RESPONSE_TYPE, "source": "x", "time": "2026-12-01T22:00:01Z",
           "datacontenttype": "application/json", "inferenceservicename": "fraud", "endpoint": "default",
           "data": {"predictions": [1]}}
    ev = ce.parse({"content-type": "application/cloudevents+json; charset=utf-8"}, js(doc))
    assert (ev.id, ev.kind, ev.inference_service, json.loads(ev.data)) == ("s1", "response", "fraud", {"predictions": [1]})
    doc.pop("data")
    doc["data_base64"] = "eyJwcmVkaWN0aW9ucyI6IFswXX0="  # {"predictions": [0]}
    assert json.loads(ce.parse({"Content-Type": "application/cloudevents+json"}, js(doc)).data) == {"predictions": [0]}


def test_cloudevents_refusals() -> None:
    with pytest.raises(ProtocolError, match="Ce-Id"):
        ce.parse({k: v for k, v in ce_headers("request").items() if k != "Ce-Id"}, b"{}")
    with pytest.raises(ProtocolError, match="not a KServe"):
        ce.parse(ce_headers("request", **{"Ce-Type": "com.example.other"}), b"{}")
    with pytest.raises(ProtocolError) as exc:
        ce.detect(ce.Exchange(ce.parse(ce_headers("request"), js({"text": "hello"})), None))
    assert exc.value.reason == "unknown_protocol"


def test_cloudevents_lone_halves_expire_and_bounds_hold() -> None:
    now = [0.0]
    buf = ce.JoinBuffer(30, 3, 1 << 20, clock=lambda: now[0])
    buf.add(ce.parse(ce_headers("request", "r1"), js({"instances": [[1, 2, "x"]]})))
    now[0] = 10
    buf.add(ce.parse(ce_headers("response", "r2"), js({"predictions": [1]})))
    assert buf.expired() == []
    now[0] = 31
    (lone,) = buf.expired()  # r1 waited 31 s; r2 only 21 s
    assert lone.response is None and lone.request is not None and lone.request.id == "r1"
    events, _ = ce.exchange_events(MAP, lone)
    assert events[0]["features"] == {"a": 1, "b": 2, "colour": "x"} and "prediction" not in events[0]
    assert "latency_seconds" not in events[0]
    # Count bound: the oldest goes first, as a lone half.
    for i in range(4):
        buf.add(ce.parse(ce_headers("request", f"q{i}"), js({"instances": [[i, i, "x"]]})))
    pushed = buf.expired(now=31)
    assert [e.first.id for e in pushed] == ["r2", "q0"] and len(buf) == 3
    # Byte bound.
    small = ce.JoinBuffer(30, 100, 100, clock=lambda: 0.0)
    small.add(ce.parse(ce_headers("request", "big"), b"{" + b" " * 200 + b"}"))
    assert len(small) == 0 and [e.first.id for e in small.expired()] == ["big"]
    # The same half twice: the newer wins, counted.
    buf.add(ce.parse(ce_headers("request", "q3"), js({"instances": [[9, 9, "y"]]})))
    assert buf.duplicates == 1
    assert len(buf.drain()) == 3 and len(buf) == 0 and buf.bytes == 0


def test_cloudevents_binary_oip_through_metadata_header() -> None:
    raw = np.array([1.0, 2.0], dtype="<f4").tobytes()
    body, n = binary_body({"inputs": [{"name": "a", "shape": [2], "datatype": "FP32",
                                       "parameters": {"binary_data_size": len(raw)}}]}, [raw])
    meta = json.dumps({"Inference-Header-Content-Length": [str(n)]})
    ev = ce.parse(ce_headers("request", **{"Ce-Metadata": meta, "Content-Type": "application/octet-stream"}), body)
    events, problems = ce.exchange_events(MAP, ce.Exchange(ev, None))
    assert problems == [] and [e["features"]["a"] for e in events] == [1.0, 2.0]
    # Without the header kept in the metadata the body cannot be read.
    ev = ce.parse(ce_headers("request", **{"Content-Type": "application/octet-stream"}), body)
    events, problems = ce.exchange_events(MAP, ce.Exchange(ev, None))
    assert [p.reason for p in problems] == ["unknown_protocol"]
    assert events == [{"model": "m", "id": "abc-1", "timestamp": ev.time}]  # still one served request


def test_cloudevents_time_parsing() -> None:
    assert ce.parse_time("2026-12-01T22:00:00.123456789Z") == pytest.approx(1796162400.123456)
    assert ce.parse_time("2026-12-01T23:00:00+01:00") == 1796162400.0
    assert ce.parse_time("yesterday") is None


def test_garbage_never_raises_anything_but_counted_problems() -> None:
    """Mutated payloads (types swapped, fields dropped, bytes flipped) give events and
    counted problems, never an exception: the proxy and the sink must keep going."""
    rng = np.random.default_rng(7)
    oip_req = {"id": "1", "inputs": [{"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]},
                                     {"name": "colour", "shape": [2], "datatype": "BYTES", "data": ["x", "y"]}]}
    oip_resp = {"model_name": "m", "model_version": "1", "outputs": [
        {"name": "p", "shape": [2], "datatype": "INT64", "data": [0, 1]},
        {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64", "data": [0.1, 0.9, 0.5, 0.5]}]}
    v1_req, v1_resp = {"instances": [[1, 2, "r"], {"a": 1}]}, {"predictions": [[0.2, 0.8], 1]}
    junk = [None, True, -1, 2**70, 1.5, "x", [], {}, [[1]], {"a": [1]}, float("nan")]

    def mutate(doc: Any) -> Any:
        if isinstance(doc, dict) and doc and rng.random() < 0.7:
            key = list(doc)[rng.integers(len(doc))]
            out = dict(doc)
            if rng.random() < 0.3:
                del out[key]
            else:
                out[key] = mutate(doc[key]) if rng.random() < 0.6 else junk[rng.integers(len(junk))]
            return out
        if isinstance(doc, list) and doc and rng.random() < 0.7:
            out = list(doc)
            i = rng.integers(len(doc))
            out[i] = mutate(doc[i]) if rng.random() < 0.6 else junk[rng.integers(len(junk))]
            return out
        return junk[rng.integers(len(junk))] if rng.random() < 0.3 else doc

    for _ in range(1500):
        for module, req, resp in ((oip_v2, oip_req, oip_resp), (kserve_v1, v1_req, v1_resp)):
            a, b = json.dumps(mutate(req)).encode(), json.dumps(mutate(resp)).encode()
            if rng.random() < 0.1:
                a = a[: rng.integers(len(a))]
            events, problems = module.extract(MAP, a, b, {"model": "m"}, request_json_length=None)
            assert all(isinstance(p, ProtocolError) for p in problems)
            assert all(e["model"] == "m" for e in events)  # none when a batch of zero rows was sent
        ex = ce.Exchange(ce.parse(ce_headers("request"), json.dumps(mutate(oip_req)).encode()),
                         ce.parse(ce_headers("response"), json.dumps(mutate(v1_resp)).encode()))
        events, problems = ce.exchange_events(MAP, ex)
        assert all(isinstance(p, ProtocolError) for p in problems)
    # Binary extension: sizes and header lengths that do not fit, random tensor bytes.
    for _ in range(500):
        dt = ["BOOL", "INT8", "FP16", "BF16", "FP64", "BYTES", "UINT64"][rng.integers(7)]
        raw = rng.bytes(int(rng.integers(0, 40)))
        head = json.dumps({"inputs": [{"name": "a", "shape": [int(rng.integers(0, 5))], "datatype": dt,
                                       "parameters": {"binary_data_size": int(rng.integers(-2, 45))}}]}).encode()
        length = len(head) + int(rng.integers(-3, 3))
        events, problems = oip_v2.extract(MAP, head + raw, None, {"model": "m"}, request_json_length=length)
        assert all(isinstance(p, ProtocolError) for p in problems)
