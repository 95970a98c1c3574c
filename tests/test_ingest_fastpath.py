"""The typed pass of the ingest schema (msgspec structs) must give exactly what
the item-by-item checks give, and must hand anything unusual to them."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest
from modelmon.config import config_from_dict
from modelmon.ingest import EventValidator, ItemError, ItemValidator, decode_items

CFG = config_from_dict({
    "models": [
        {"name": "c", "features": [{"name": "a"}, {"name": "b"}, {"name": "g", "type": "categorical"}],
         "fairness": {"attribute": "g", "groups": ["x", "y"]}, "reference": {"path": "unused.csv"}},
        {"name": "r", "task": "regression", "features": [{"name": "a"}], "reference": {"path": "unused.csv"}},
        {"name": "bare"},
        {"name": "attr", "features": [{"name": "a"}], "fairness": {"attribute": "sex", "groups": ["f", "m"]},
         "reference": {"path": "unused.csv"}},
    ],
})
MODELS = {m.name: m for m in CFG.models}
VALIDATOR = EventValidator(CFG.models, clock=lambda: 123.0)


def body(items: list[dict[str, Any]]) -> bytes:
    return json.dumps(items).encode()


def plain_event(rng: random.Random, model: str) -> dict[str, Any]:
    m = MODELS[model]
    ev: dict[str, Any] = {"model": model}
    if rng.random() < 0.7:
        ev["id"] = f"id{rng.randrange(10**6)}"
    if rng.random() < 0.5:
        ev["version"] = rng.choice(["1", "2.0", ""])
    if rng.random() < 0.5:
        ev["timestamp"] = rng.choice([1.7e9 + rng.random(), 1_700_000_000])
    if rng.random() < 0.7:
        ev["latency_seconds"] = rng.choice([0.01 * rng.random(), 0, 2])
    if rng.random() < 0.2:
        ev["error"] = rng.choice([True, False, "timeout", None])
    if m.task == "classification":
        ev["prediction"] = rng.choice([0, 1, "1", "cat", True, False, None])
        if rng.random() < 0.3:
            ev["label"] = rng.choice([0, 1, "0", True])
        if rng.random() < 0.5:
            ev["score"] = rng.choice([rng.random(), 1, 0])
    else:
        ev["prediction"] = rng.choice([1.5, 2, -3.25, None])
        if rng.random() < 0.3:
            ev["label"] = rng.choice([1.0, 7])
    feats: dict[str, Any] = {}
    for f in m.features:
        feats[f.name] = rng.choice(["x", "y", "zz"]) if f.type == "categorical" else rng.choice([rng.gauss(0, 1), 3, -10**6])
    if feats:
        ev["features"] = feats
    elif rng.random() < 0.5:
        ev["features"] = {}
    if m.fairness.attribute == "sex" and rng.random() < 0.8:
        ev["attributes"] = {"sex": rng.choice(["f", "m", "other"]), "region": "eu"}
    elif rng.random() < 0.2:
        ev["attributes"] = {"g": rng.choice(["x", "y"])}
    return ev


def one_by_one(model: str, items: list[dict[str, Any]]) -> ItemValidator:
    b = ItemValidator(MODELS[model], "api")
    for ev in items:
        b.add(ev, 123.0)
    return b


def same(x: Any, y: Any) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return np.array_equal(np.asarray(x, dtype=float), np.asarray(y, dtype=float), equal_nan=True)
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return type(x) is type(y) and x == y if not isinstance(x, list) else (
        len(x) == len(y) and all(same(a, b) for a, b in zip(x, y)))


@pytest.mark.parametrize("model", ["c", "r", "bare", "attr"])
def test_typed_pass_equals_item_by_item(model):
    rng = random.Random(sum(map(ord, model)))
    for trial in range(40):
        items = [plain_event(rng, model) for _ in range(rng.randrange(1, 60))]
        slow = one_by_one(model, items)
        decoded = decode_items(body(items))
        assert VALIDATOR.decode_typed(decoded) is not None, items
        res = VALIDATOR.validate(decoded, "api")
        assert not res.rejected and len(res.batches) == 1
        a, b = res.batches[0], slow.batch()
        for field in ("timestamps", "versions", "ids", "latency_seconds", "errors", "predictions", "scores", "labels"):
            assert same(getattr(a, field), getattr(b, field)), field
        assert a.features.keys() == b.features.keys()
        for k in a.features:
            assert same(a.features[k], b.features[k]), k
        assert a.attributes.keys() == b.attributes.keys()
        for k in a.attributes:
            assert same(a.attributes[k], b.attributes[k]), k


@pytest.mark.parametrize("bad", [
    {"features": {"a": 1.0, "b": None, "g": "x"}},  # missing value
    {"features": {"a": 1.0, "b": 2.0, "g": "x", "extra": 1}},  # unknown feature (counted item by item)
    {"features": {"a": "1", "b": 2.0, "g": "x"}},
    {"features": {"a": True, "b": 2.0, "g": "x"}},
    {"features": {"a": float("nan"), "b": 2.0, "g": "x"}},
    {"features": {"a": 1e308 * 10, "b": 2.0, "g": "x"}},
    {"features": {"a": 10**400, "b": 2.0, "g": "x"}},
    {"features": {"a": 1.0, "b": 2.0, "g": 3}},
    {"features": {"a": 1.0, "b": 2.0, "g": "x" * 300}},
    {"features": 0},
    {"timestamp": "2026-01-01T00:00:00Z"},
    {"timestamp": -1.0},
    {"latency_seconds": -0.5},
    {"latency_seconds": float("inf")},
    {"prediction": 1.0},
    {"prediction": [1]},
    {"prediction": "p" * 300},
    {"probabilities": {"1": 0.3}},
    {"score": "0.5"},
    {"id": 17},
    {"version": 2},
    {"error": 5},
    {"attributes": {"g": 1}},
    {"attributes": []},
    {"unknown": 1},
    {"version": "\ud800"},
    {"version": 10**4000 if hasattr(math, "lcm") else 0},
    {"model": 5},
    {"model": None},
])
def test_anything_unusual_goes_item_by_item(bad):
    good = {"model": "c", "id": "1", "prediction": 1, "features": {"a": 1.0, "b": 2.0, "g": "x"}}
    ev = {**good, **bad}
    decoded = decode_items(body([dict(good), ev]))
    typed = VALIDATOR.decode_typed(decoded)
    plain = ({"features": {"a": 1.0, "b": None, "g": "x"}}, {"probabilities": {"1": 0.3}})  # the typed schema takes these
    assert (typed is not None) == (bad in plain)
    res = VALIDATOR.validate(decoded, "api")
    ref = VALIDATOR.validate_items(decoded.items(), "api")  # the item-by-item checks on their own
    assert res.rejected == ref.rejected and res.accepted == ref.accepted >= 1  # the good neighbour is kept
    if res.rejected:
        assert [r.position for r in res.rejected] == [1]
    for x, y in zip(res.batches, ref.batches):
        for field in ("versions", "ids", "errors", "predictions", "scores", "labels"):
            assert same(getattr(x, field), getattr(y, field)), field
        for k in x.features:
            assert same(x.features[k], y.features[k]), k


def test_bare_model_rejects_non_object_features_item_by_item():
    decoded = decode_items(body([{"model": "bare", "features": 0}]))
    assert VALIDATOR.decode_typed(decoded) is None
    with pytest.raises(ItemError, match="features: must be an object"):
        one_by_one("bare", [{"model": "bare", "features": 0}])
