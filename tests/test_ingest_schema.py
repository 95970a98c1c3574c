"""The shared ingest schema without a server: body decoding (encodings, bombs,
forms, depth) and the label-safety rule, on the inputs that once broke /metrics."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from modelmon.config import config_from_dict
from modelmon.ingest import (
    MAX_LABEL_LENGTH,
    BodyError,
    BodyLimits,
    BodyTooLarge,
    EventValidator,
    ItemError,
    Malformed,
    UnsupportedEncoding,
    check_label,
    decode_items,
    is_label_safe,
    label_string,
)
from modelmon.pipeline import REJECT_REASONS

CFG = config_from_dict({"models": [
    {"name": "m", "features": [{"name": "f0"}], "reference": {"path": "unused.csv"}},
    {"name": "r", "task": "regression"},
]})
V = EventValidator(CFG.models, clock=lambda: 100.0)


def validate(body: bytes | str, encoding: str | None = None):
    return V.validate(decode_items(body.encode() if isinstance(body, str) else body, encoding), "api")


def test_lone_surrogate_version_is_refused_and_neighbours_kept():
    body = '[{"model":"m","version":"\\ud800","features":{"f0":1}}, {"model":"m","version":"1","features":{"f0":2}}]'
    res = validate(body)
    assert res.accepted == 1 and res.batches[0].versions == ["1"]
    assert [(r.position, r.reason) for r in res.rejected] == [(0, "invalid_field")]
    assert "version" in res.rejected[0].message and "surrogate" in res.rejected[0].message
    # the same in NDJSON, a low surrogate, and one inside a longer string
    for bad in ('"\\udc00"', '"a\\ud800b"'):
        res = validate('{"model":"m","version":' + bad + '}\n{"model":"m","version":"2"}\n')
        assert res.accepted == 1 and res.rejected[0].reason == "invalid_field"
    # a lone surrogate in a group, an error reason, a class
    for field in ('"error":"\\ud800"', '"prediction":"\\ud800"', '"id":"\\ud800"'):
        res = validate('[{"model":"m",' + field + '}]')
        assert res.accepted == 0 and res.rejected[0].reason == "invalid_field", field


def test_a_model_name_of_nul_is_an_unknown_model_not_a_crash():
    """The typed schema's placeholder is tagged with a NUL character; an item sending that as its model is
    refused as an unknown model, and the good items of the same body are kept."""
    for body in ('[{"model":"\\u0000"}]', '[{"model":"m","features":{"f0":1}}, {"model":"\\u0000","features":{}}]',
                 '{"model":"\\u0000"}\n{"model":"r","prediction":1.5}\n'):
        res = validate(body)
        assert [r.reason for r in res.rejected] == ["unknown_model"], body
        assert res.accepted == body.count('"model":"m"') + body.count('"model":"r"')


def test_every_label_string_is_bounded_whatever_its_json_type():
    res = validate('[{"model":"m","version":%s}, {"model":"m","version":7}]' % ("9" * 4000))
    assert [r.position for r in res.rejected] == [0] and "version" in res.rejected[0].message
    assert res.batches[0].versions == ["7"]
    res = validate(json.dumps([{"model": "m", "version": "v" * (MAX_LABEL_LENGTH + 1)},
                               {"model": "m", "version": "v" * MAX_LABEL_LENGTH}]))
    assert [r.position for r in res.rejected] == [0] and res.accepted == 1
    for big in (10**300, 1e300):  # a class spelled as a huge integer or an integral float
        res = validate(json.dumps([{"model": "m", "prediction": big}, {"model": "m", "prediction": 2**63 - 1}]))
        assert [(r.position, r.reason) for r in res.rejected] == [(0, "invalid_field")]
        assert res.batches[0].predictions == [str(2**63 - 1)]
    with pytest.raises(ItemError):
        label_string(-(10**MAX_LABEL_LENGTH), "version")
    assert label_string(-(10**(MAX_LABEL_LENGTH - 2)), "version").startswith("-1")
    assert not is_label_safe("\udcff")  # a non-UTF-8 byte read with surrogateescape
    assert check_label("é✓", "x") == "é✓"


def test_deep_json_line_is_malformed_and_the_good_lines_are_kept():
    deep = "[" * 5000 + "]" * 5000
    body = '{"model":"m","features":{"f0":1}}\n' + deep + '\n{"model":"m","features":{"f0":2}}\n'
    res = validate(body)
    assert res.accepted == 2
    assert [(r.position, r.reason) for r in res.rejected] == [(1, "malformed")]
    assert "nested deeper" in res.rejected[0].message
    # just past the limit, and inside a JSON array: only that item is refused
    limits = BodyLimits(max_depth=8)
    item = {"model": "m", "features": {"f0": 1}, "attributes": {"a": None}}
    nested: object = 1
    for _ in range(9):
        nested = [nested]
    body2 = json.dumps([item, {"model": "m", "prediction": nested}, item]).encode()
    res = V.validate(decode_items(body2, None, limits), "api")
    assert res.accepted == 2 and [(r.position, r.reason) for r in res.rejected] == [(1, "malformed")]
    # a whole array too deep to parse is one malformed body
    with pytest.raises(BodyError):
        decode_items(deep.encode()).items()


def test_body_forms_and_errors():
    assert decode_items(b' [{"model":"m"}]').form == "array"
    assert decode_items(b'{\n "model": "m"\n}').form == "object"
    assert decode_items(b'{"model":"m"}\n{"model":"m"}').form == "ndjson"
    with pytest.raises(BodyError, match="empty body"):
        decode_items(b"  \n")
    with pytest.raises(BodyError, match="invalid JSON"):
        decode_items(b'[{"model":').items()
    with pytest.raises(BodyError, match="NDJSON"):
        decode_items(b"nope\nnot json").items()
    items = decode_items(b'{"model":"m"}\nnope\n').items()
    assert items[0] == {"model": "m"} and isinstance(items[1], Malformed) and "line 2" in items[1].message
    res = validate('[{"model":"m","score":NaN}, {"model":"m","features":{"f0":Infinity}}, 5]')
    assert [(r.position, r.reason) for r in res.rejected] == [(0, "non_finite"), (1, "non_finite"), (2, "malformed")]


def test_encodings_and_decompression_bomb():
    raw = json.dumps([{"model": "m", "features": {"f0": 1}}]).encode()
    assert validate(gzip.compress(raw), "gzip").accepted == 1
    assert validate(zlib.compress(raw), "deflate").accepted == 1
    assert validate(raw, " Identity ").accepted == 1
    with pytest.raises(UnsupportedEncoding):
        decode_items(raw, "br")
    with pytest.raises(BodyError, match="invalid gzip"):
        decode_items(b"not gzip", "gzip")
    bomb = gzip.compress(b"[" + b" " * (20 * 1024 * 1024) + b"]")  # 20 MiB of spaces in ~20 kB
    assert len(bomb) < 100_000
    with pytest.raises(BodyTooLarge):
        decode_items(bomb, "gzip", BodyLimits(max_bytes=1024 * 1024))
    with pytest.raises(BodyTooLarge):
        decode_items(b"[" + b" " * 2000 + b"]", None, BodyLimits(max_bytes=1000))


def test_every_reason_given_is_a_known_reject_reason():
    bodies = ['[{"model":"x"}]', '[{"model":"m","features":{"f0":"a"}}]', '[{"model":"m","score":NaN}]', '[3]',
              '[{"model":"m","nope":1}]', '[{}]']
    reasons = {r.reason for b in bodies for r in validate(b).rejected}
    assert reasons == {"unknown_model", "invalid_field", "non_finite", "malformed"}
    assert reasons <= set(REJECT_REASONS)
    assert validate('[{"model":"x"}]').unknown_models == {"x"}
    assert validate('[{"model":"\\ud800"}]').rejected[0].reason == "unknown_model"


def test_random_bodies_never_raise_and_metrics_stay_valid():
    """Seeded random JSON in every field (nesting, huge numbers, lone surrogates, NUL, long strings):
    each body is accepted in part or refused with known reasons, never an exception, and the
    pipeline's /metrics page still renders with every label value valid UTF-8."""
    import random

    import numpy as np
    from prometheus_client import generate_latest

    from modelmon.collectors import build_registry
    from modelmon.drift.reference import build_profile
    from modelmon.pipeline import Pipeline

    cfg = config_from_dict({"models": [{"name": "m", "features": [{"name": "a"}, {"name": "c", "type": "categorical"}],
                                        "reference": {"path": "unused.csv"}}]})
    rng = np.random.default_rng(0)
    profile = build_profile({"a": rng.normal(size=500), "c": ["x", "y"] * 250}, cfg.models[0].features)
    pipe = Pipeline(cfg, {"m": profile})
    validator = EventValidator(cfg.models)
    r = random.Random(7)
    atoms = [None, True, False, 0, -1, 1.5, -0.0, 1e308, 2**63, -(2**63) - 1, 10**30, "", "x", "NA", "\u0000",
             "\ud800", "é" * 300, "a" * 5000, "1e5", "nan", [], {}]
    fields = ["model", "version", "id", "timestamp", "features", "prediction", "score", "probabilities",
              "latency_seconds", "error", "attributes", "label", "attributions", "extra"]

    def value(depth: int = 0):
        x = r.random()
        if depth > 3 or x < 0.6:
            return r.choice(atoms)
        if x < 0.8:
            return [value(depth + 1) for _ in range(r.randint(0, 3))]
        return {r.choice(["a", "c", "x", "1", ""]): value(depth + 1) for _ in range(r.randint(0, 3))}

    def event():
        ev = {"model": r.choice(["m", "m", "m", "zz", "\u0000", 5])}
        for f in r.sample(fields, r.randint(0, 6)):
            ev[f] = {k: value(2) for k in r.sample(["a", "c", "zz"], r.randint(0, 3))} \
                if f == "features" and r.random() < 0.6 else value()
        return ev

    accepted = refused = 0
    for _ in range(2000):
        body = json.dumps([event() for _ in range(r.randint(1, 4))]).encode("utf-8", "surrogatepass")
        try:
            res = validator.validate(decode_items(body), "api")
        except BodyError:
            refused += 1
            continue
        assert {x.reason for x in res.rejected} <= set(REJECT_REASONS)
        for batch in res.batches:
            pipe.submit(batch)
        accepted += res.accepted
        refused += len(res.rejected)
    assert accepted > 100 and refused > 1000  # both paths were exercised
    generate_latest(build_registry(pipe)).decode("utf-8")
