"""Numerical-only models: the typed pass builds their feature matrix in one block
(no per-event rows).  It must give exactly what the item-by-item checks give, on
plain bodies and on bodies with awkward items among good neighbours."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from modelmon.config import config_from_dict
from modelmon.ingest import EventValidator, ItemValidator, decode_items

CFG = config_from_dict({"models": [
    {"name": "n", "features": [{"name": f"f{i}"} for i in range(5)], "reference": {"path": "unused.csv"}},
]})
MODEL = CFG.models[0]
VALIDATOR = EventValidator(CFG.models, clock=lambda: 50.0)
NAMES = [f"f{i}" for i in range(5)]


def good(i: int, rng: random.Random) -> dict[str, Any]:
    return {"model": "n", "id": f"e{i}", "prediction": rng.choice([0, 1]), "latency_seconds": 0.01,
            "features": {n: rng.choice([rng.gauss(0, 1), 7, -(10**6), 0.0]) for n in NAMES}}


def compare(text: bytes) -> None:
    decoded = decode_items(text)
    fast = VALIDATOR.validate(decoded, "api")
    ref = VALIDATOR.validate_items(decode_items(text).items(), "api")
    assert fast.rejected == ref.rejected
    assert fast.accepted == ref.accepted
    assert fast.unknown_features == ref.unknown_features
    assert len(fast.batches) == len(ref.batches)
    for a, b in zip(fast.batches, ref.batches, strict=True):
        for field in ("timestamps", "versions", "ids", "latency_seconds", "errors", "predictions", "scores", "labels"):
            assert getattr(a, field) == getattr(b, field), field
        assert a.features.keys() == b.features.keys() == set(NAMES)
        for k in NAMES:
            assert a.features[k].dtype == np.float64 and a.features[k].flags.c_contiguous
            np.testing.assert_array_equal(a.features[k], b.features[k])


def test_plain_bodies_take_the_block_path_and_equal_item_by_item():
    rng = random.Random(7)
    for _trial in range(20):
        items = [good(i, rng) for i in range(rng.randrange(1, 80))]
        text = json.dumps(items).encode()
        assert VALIDATOR.decode_typed(decode_items(text)) is not None
        compare(text)
        res = VALIDATOR.validate(decode_items(text), "api")
        want = np.array([[ev["features"][n] for n in NAMES] for ev in items], dtype=float)
        got = np.column_stack([res.batches[0].features[n] for n in NAMES])
        np.testing.assert_array_equal(got, want)


AWKWARD = [
    b'{"model":"n","features":{"f0":null,"f1":1,"f2":2,"f3":3,"f4":4}}',  # missing value: NaN, typed pass keeps it
    b'{"model":"n","features":{"f1":1}}',  # absent features: NaN
    b'{"model":"n"}',  # no features at all
    b'{"model":"n","features":{"f0":NaN,"f1":1,"f2":2,"f3":3,"f4":4}}',
    b'{"model":"n","features":{"f0":Infinity,"f1":1,"f2":2,"f3":3,"f4":4}}',
    b'{"model":"n","features":{"f0":1e999,"f1":1,"f2":2,"f3":3,"f4":4}}',
    b'{"model":"n","features":{"f0":1,"f1":1,"f2":2,"f3":3,"f4":4,"zz":5}}',  # unknown feature
    b'{"model":"n","features":{"f0":"1","f1":1,"f2":2,"f3":3,"f4":4}}',  # mixed types
    b'{"model":"n","features":{"f0":true,"f1":1,"f2":2,"f3":3,"f4":4}}',
    b'{"model":"n","id":"\\ud800","features":{"f0":1,"f1":1,"f2":2,"f3":3,"f4":4}}',  # lone surrogate
    b'{"model":"n","features":{"f0":' + b"[" * 40 + b"]" * 40 + b',"f1":1}}',  # deep JSON
    b'{"model":"nope","features":{"f0":1}}',
    b'[1,2]',
]


@pytest.mark.parametrize("bad", AWKWARD, ids=range(len(AWKWARD)))
@pytest.mark.parametrize("where", [0, 3, 6])
def test_awkward_item_among_good_neighbours(bad, where):
    rng = random.Random(where)
    items = [json.dumps(good(i, rng)).encode() for i in range(6)]
    items.insert(where, bad)
    compare(b"[" + b",".join(items) + b"]")
    if not items[0].startswith(b"["):  # a body starting with "[" is one JSON array, not NDJSON
        compare(b"\n".join(items) + b"\n")  # NDJSON too


def test_typed_and_item_by_item_appends_keep_the_order():
    rng = random.Random(3)
    evs = [good(i, rng) for i in range(9)]
    typed = VALIDATOR.decode_typed(decode_items(json.dumps(evs[:3] + evs[6:]).encode()))
    v = ItemValidator(MODEL, "api")
    v.add_typed(typed[:3], 50.0)
    for ev in evs[3:6]:
        v.add(ev, 50.0)
    v.add_typed(typed[3:], 50.0)
    ref = ItemValidator(MODEL, "api")
    for ev in evs:
        ref.add(ev, 50.0)
    a, b = v.batch(), ref.batch()
    assert a.ids == b.ids == [f"e{i}" for i in range(9)]
    for k in NAMES:
        np.testing.assert_array_equal(a.features[k], b.features[k])
