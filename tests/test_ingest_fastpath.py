"""The column-wise fast path of the ingestion API must give exactly what the
item-by-item path gives, and must hand anything unusual to it."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from modelmon.config import config_from_dict
from modelmon.sources.api import ItemError, _Builder

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


def one_by_one(model: str, items: list[dict[str, Any]]) -> _Builder:
    b = _Builder(MODELS[model], "api")
    for ev in items:
        b.add(ev, 123.0, False)
    return b


def same(x: Any, y: Any) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return np.array_equal(np.asarray(x, dtype=float), np.asarray(y, dtype=float), equal_nan=True)
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return type(x) is type(y) and x == y if not isinstance(x, list) else (
        len(x) == len(y) and all(same(a, b) for a, b in zip(x, y)))


@pytest.mark.parametrize("model", ["c", "r", "bare", "attr"])
def test_fast_path_equals_item_by_item(model):
    rng = random.Random(hash(model) % 1000)
    for trial in range(40):
        items = [plain_event(rng, model) for _ in range(rng.randrange(1, 60))]
        slow = one_by_one(model, items)
        fast = _Builder(MODELS[model], "api")
        assert fast.add_all(items, 123.0), items
        a, b = fast.batch(), slow.batch()
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
])
def test_anything_unusual_goes_item_by_item(bad):
    good = {"model": "c", "id": "1", "prediction": 1, "features": {"a": 1.0, "b": 2.0, "g": "x"}}
    ev = {**good, **bad}
    b = _Builder(MODELS["c"], "api")
    assert not b.add_all([dict(good), ev], 1.0)
    assert len(b) == 0 and b.batch().timestamps == []
    try:  # and the item-by-item path then decides
        one_by_one("c", [ev])
    except ItemError:
        pass


def test_bare_model_rejects_non_object_features_item_by_item():
    b = _Builder(MODELS["bare"], "api")
    assert not b.add_all([{"model": "bare", "features": 0}], 1.0)
    with pytest.raises(ItemError, match="features: must be an object"):
        one_by_one("bare", [{"model": "bare", "features": 0}])
