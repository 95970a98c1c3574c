"""Attributions in event items: validated like features, typed and item-by-item paths agree."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from modelmon.config import config_from_dict
from modelmon.ingest import EventValidator, decode_items

CFG = config_from_dict({"models": [{
    "name": "m", "features": [{"name": "a"}, {"name": "c", "type": "categorical"}],
    "reference": {"path": "unused.csv"}, "attributions": {"enabled": True},
}]})


def validate(items, unknown_feature="ignore"):
    v = EventValidator(CFG.models, unknown_feature=unknown_feature, clock=lambda: 100.0)
    return v.validate(decode_items(json.dumps(items).encode(), None), "api")


def columns(res):
    b = res.batches[0]
    return {k: [None if math.isnan(x) else x for x in np.asarray(v).tolist()] for k, v in b.attributions.items()}


def test_plain_attributions_take_the_typed_path_and_match_item_by_item():
    items = [{"model": "m", "features": {"a": 1.0, "c": "x"}, "attributions": {"a": 0.5, "c": -2}},
             {"model": "m", "features": {"a": 2.0, "c": "y"}, "attributions": {"a": None}},
             {"model": "m", "features": {"a": 3.0, "c": "y"}}]
    v = EventValidator(CFG.models, clock=lambda: 100.0)
    body = decode_items(json.dumps(items).encode(), None)
    assert v.decode_typed(body) is not None
    typed = v.validate(body, "api")
    by_item = v.validate_items(json.loads(json.dumps(items)), "api")
    expected = {"a": [0.5, None, None], "c": [-2.0, None, None]}
    assert columns(typed) == columns(by_item) == expected


def test_bad_attributions_are_refused_one_by_one_with_the_field_named():
    items = [{"model": "m", "attributions": {"a": 1e999}},
             {"model": "m", "attributions": {"a": "high"}},
             {"model": "m", "attributions": [1, 2]},
             {"model": "m", "attributions": {"a": True}},
             {"model": "m", "attributions": {"a": 0.25}}]
    res = validate(items)
    assert res.accepted == 1 and columns(res)["a"] == [0.25]
    got = [(r.position, r.reason) for r in res.rejected]
    assert got == [(0, "non_finite"), (1, "invalid_field"), (2, "invalid_field"), (3, "invalid_field")]
    assert all("attributions" in r.message for r in res.rejected)


@pytest.mark.parametrize("policy,accepted,reason", [("ignore", 1, None), ("reject", 0, "unknown_feature")])
def test_unknown_attribution_names_follow_the_unknown_feature_policy(policy, accepted, reason):
    res = validate([{"model": "m", "attributions": {"a": 1.0, "zzz": 3.0}}], unknown_feature=policy)
    assert res.accepted == accepted
    if reason:
        assert res.rejected[0].reason == reason and "attributions.zzz" in res.rejected[0].message
    else:
        assert res.unknown_features == {"m": 1} and columns(res)["a"] == [1.0]


def test_batch_without_attributions_has_none():
    res = validate([{"model": "m", "features": {"a": 1.0, "c": "x"}}])
    assert res.batches[0].attributions == {}
