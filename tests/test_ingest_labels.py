"""Labels sent late, joined by id within a bounded horizon, and the quality,
fairness, label-delay and drift metrics they produce on /metrics, checked
against hand-computed values and scipy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from scipy import stats

from modelmon.app import Exporter
from modelmon.config import config_from_dict
from modelmon.events import EventBatch
from modelmon.labels import LabelJoin
from modelmon.pipeline import Pipeline
from servers import first_sample

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def sample(exp: Exporter, name: str, **labels: str) -> float | None:
    text = requests.get(f"http://127.0.0.1:{exp.port}/metrics", timeout=5).text
    return first_sample(text, name, **labels)


def post(exp: Exporter, path: str, items: list[dict[str, Any]]) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{exp.port}{path}", data=json.dumps(items), timeout=10,
                         headers={"Content-Type": "application/json"})


# --------------------------------------------------------------------------- the join buffer


def join_pipeline(max_events: int = 5, horizon: float = 100.0) -> tuple[Pipeline, LabelJoin, Clock]:
    clock = Clock()
    cfg = config_from_dict({"models": [{"name": "m"}], "windows": [{"duration": "1h", "max_events": 100}]})
    pipe = Pipeline(cfg, {"m": None}, clock=clock)
    join = LabelJoin(pipe, max_events=max_events, horizon_seconds=horizon, clock=clock)
    pipe.listeners.append(join.on_batch)
    return pipe, join, clock


def batch(ids: list[str | None], labels: list[Any] | None = None) -> EventBatch:
    n = len(ids)
    return EventBatch(model="m", timestamps=[T0] * n, versions=[""] * n, ids=ids, latency_seconds=[None] * n,
                      errors=[None] * n, features={}, predictions=["1"] * n, scores=[None] * n,
                      labels=labels or [None] * n, attributes={}, source="api")


def test_join_cap_keeps_newest_and_counts_expired():
    pipe, join, clock = join_pipeline(max_events=5)
    pipe.submit(batch([f"a{i}" for i in range(4)]))
    pipe.submit(batch([f"b{i}" for i in range(4)]))  # over the cap: the oldest batch goes
    assert len(join) == 4 and join.expired == 4
    res = join.join(["a0", "b3"], ["1", "0"])
    assert res.unknown == [0] and res.joined == {"m": 1}
    pipe.submit(batch([f"c{i}" for i in range(9)]))  # one batch larger than the cap: newest 5 kept
    assert join.pending() == 5
    assert join.join(["c3", "c4", "c8"], ["1", "1", "1"]).unknown == [0]


def test_join_horizon_duplicates_and_single_use():
    pipe, join, clock = join_pipeline(max_events=100, horizon=100.0)
    pipe.submit(batch(["x", None, "y"], labels=[None, None, "1"]))  # no id / inline label: not buffered
    assert join.pending() == 1
    clock.t += 60
    pipe.submit(batch(["x"]))  # the same id again: the newest event wins
    clock.t += 50  # first batch is past the horizon, second is not
    res = join.join(["x", "x"], ["1", "1"])
    assert res.joined == {"m": 1} and res.unknown == [1]  # labelled once
    delay = pipe.monitors["m"].label_delay_sum
    assert delay == pytest.approx(110.0)  # event timestamps are T0 (set by the source)
    clock.t += 200
    assert join.pending() == 0
    pipe.submit(batch(["d", "d", "e"]))  # an id twice in one batch: held once
    assert join.pending() == 2
    assert join.join(["d", "d", "e"], ["1", "1", "0"]).unknown == [1]
    assert join.pending() == 0 and join.expired == 0  # the first "x" was superseded, not expired


def test_invalid_label_keeps_the_event_waiting():
    pipe, join, _ = join_pipeline()
    pipe.submit(batch(["k"]))

    def convert(model: str, label: Any) -> Any:
        if label == "bad":
            raise ValueError("label: nope")
        return label

    res = join.join(["k"], ["bad"], convert=convert)
    assert res.invalid == [(0, "label: nope")] and join.pending() == 1
    assert join.join(["k"], ["1"], convert=convert, models=["other"]).unknown == [0]
    assert join.join(["k"], ["1"], convert=convert, models=["m"]).joined == {"m": 1}


# --------------------------------------------------------------------------- end to end

PRED = [1, 1, 0, 0, 1, 0, 0, 0]
LABEL = [1, 0, 1, 0, 1, 1, 1, 0]
GROUP = ["f", "f", "f", "f", "m", "m", "m", "m"]
SCORE = [0.9, 0.6, 0.4, 0.2, 0.7, 0.3, 0.45, 0.1]


@pytest.fixture
def late(tmp_path: Path):
    rng = np.random.default_rng(1)
    ref_amount = np.round(rng.normal(50, 10, 300), 3)
    ref_score = np.round(rng.random(300), 4)
    lines = ["amount,gender,prediction,score"] + [
        f"{a},{'f' if i % 2 else 'm'},{i % 2},{s}" for i, (a, s) in enumerate(zip(ref_amount, ref_score, strict=True))
    ]
    (tmp_path / "ref.csv").write_text("\n".join(lines) + "\n")
    cfg = config_from_dict({
        "models": [{
            "name": "fraud", "positive_class": "1",
            "features": [{"name": "amount"}],
            "reference": {"path": str(tmp_path / "ref.csv")},
            "fairness": {"attribute": "gender", "groups": ["f", "m"], "reference_group": "f"},
            "prediction_drift": {"prediction": True, "score": True},
            "drift": {"recompute_interval": 0, "min_samples": 5, "methods": ["ks"]},
        }, {"name": "price", "task": "regression"}],
        "windows": [{"duration": "5m", "max_events": 10000}],
        "ingest": {"label_join_horizon": "10m"},
    })
    clock = Clock()
    exp = Exporter(cfg, clock=clock)
    exp.start()
    yield exp, clock, ref_amount, ref_score
    exp.stop()


def test_late_labels_quality_fairness_delay_and_drift(late):
    exp, clock, ref_amount, ref_score = late
    amounts = [40.0, 45.5, 50.0, 52.25, 61.0, 70.0, 30.5, 55.0, 49.0, 48.0]
    scores = SCORE + [0.5, 0.55]
    events = [
        {"model": "fraud", "id": f"e{i}", "features": {"amount": amounts[i]},
         "prediction": (PRED + [1, 0])[i], "score": scores[i], "attributes": {"gender": (GROUP + ["f", "m"])[i]}}
        for i in range(10)
    ]
    assert post(exp, "/api/v1/events", events).json()["accepted"] == 10
    assert sample(exp, "modelmon_label_join_pending_events") == 10
    assert sample(exp, "modelmon_quality_accuracy_ratio", model="fraud", window="5m") is None  # no labels yet

    clock.t += 30
    r = post(exp, "/api/v1/labels", [{"id": f"e{i}", "label": LABEL[i]} for i in range(4)])
    assert r.status_code == 200 and r.json()["accepted"] == 4
    clock.t += 170
    r = post(exp, "/api/v1/labels", [{"id": f"e{i}", "label": LABEL[i]} for i in range(4, 8)] + [
        {"id": "e0", "label": 1},  # already labelled
        {"id": "never-seen", "label": 1},
        {"id": "e9", "label": {"x": 1}},
        {"id": "e9"},
    ])
    assert r.status_code == 200
    out = r.json()
    assert out["accepted"] == 4
    assert [(x["index"], x["reason"]) for x in out["rejected"]] == [
        (4, "unknown_id"), (5, "unknown_id"), (6, "invalid_field"), (7, "invalid_field")]
    assert out["rejected"][2]["error"] == "label: must be a string, number or boolean"
    assert out["rejected"][3]["error"] == "label: required"

    m = lambda name, **kw: sample(exp, name, model="fraud", window="5m", **kw)  # noqa: E731
    # Hand-computed: tp=2 fp=1 fn=3 tn=2.
    assert m("modelmon_quality_accuracy_ratio") == pytest.approx(4 / 8)
    assert m("modelmon_quality_precision_ratio") == pytest.approx(2 / 3)
    assert m("modelmon_quality_recall_ratio") == pytest.approx(2 / 5)
    assert m("modelmon_quality_f1_ratio") == pytest.approx(4 / 8)
    assert m("modelmon_quality_roc_auc_ratio") == pytest.approx(12 / 15)
    assert m("modelmon_label_coverage_ratio") == pytest.approx(8 / 10)
    assert m("modelmon_window_labelled_events") == 8
    assert m("modelmon_fairness_positive_prediction_ratio", group="f") == pytest.approx(0.5)
    assert m("modelmon_fairness_positive_prediction_ratio", group="m") == pytest.approx(0.25)
    assert m("modelmon_fairness_group_accuracy_ratio", group="m") == pytest.approx(0.5)
    assert m("modelmon_fairness_true_positive_ratio", group="m") == pytest.approx(1 / 3)
    assert m("modelmon_fairness_group_labelled_events", group="f") == 4
    assert m("modelmon_fairness_demographic_parity_difference") == pytest.approx(0.25)
    assert m("modelmon_fairness_equal_opportunity_difference") == pytest.approx(1 / 2 - 1 / 3)
    assert m("modelmon_fairness_disparate_impact_ratio", group="m") == pytest.approx(0.5)
    # Label delay: four labels after 30 s, four after 200 s.
    d = lambda le: sample(exp, "modelmon_label_delay_seconds_bucket", model="fraud", le=le)  # noqa: E731
    assert (d("15.0"), d("60.0"), d("300.0"), d("+Inf")) == (0, 4, 8, 8)
    assert sample(exp, "modelmon_label_delay_seconds_sum", model="fraud") == pytest.approx(4 * 30 + 4 * 200)
    assert sample(exp, "modelmon_events_rejected_total", source="api", reason="unknown_id") == 2
    assert sample(exp, "modelmon_labelled_events_total", model="fraud") == 8
    # Drift of a feature and of the scores (prediction drift), against scipy on the same data.
    for feature, ref, cur in (("amount", ref_amount, amounts), ("score", ref_score, scores)):
        want = stats.ks_2samp(ref, cur)
        assert m("modelmon_drift_score", feature=feature, method="ks") == pytest.approx(want.statistic, abs=1e-12)
        assert m("modelmon_drift_p_value", feature=feature, method="ks") == pytest.approx(want.pvalue, abs=1e-9)
    # The predictions are a categorical column: counted per reference class.
    preds = PRED + [1, 0]
    assert sample(exp, "modelmon_feature_bin_values_total", model="fraud", feature="prediction", bin="1") == sum(preds)
    assert sample(exp, "modelmon_feature_bin_values_total", model="fraud", feature="prediction", bin="0") == 10 - sum(preds)

    # Past the horizon the remaining events are forgotten: their labels are unknown ids.
    clock.t += 500
    r = post(exp, "/api/v1/labels", [{"id": "e8", "label": 1}])
    assert r.status_code == 404 and r.json()["rejected"][0]["reason"] == "unknown_id"
    assert sample(exp, "modelmon_label_join_expired_events_total") == 2
    assert sample(exp, "modelmon_label_join_pending_events") == 0


def test_regression_labels_mae_rmse(late):
    exp, clock, *_ = late
    preds = [2.5, 0.0, 2.0, 8.0]
    truth = [3, -0.5, 2, 7]
    assert post(exp, "/api/v1/events", [
        {"model": "price", "id": f"p{i}", "prediction": p} for i, p in enumerate(preds)
    ]).json()["accepted"] == 4
    clock.t += 5
    r = post(exp, "/api/v1/labels", [{"id": f"p{i}", "label": t} for i, t in enumerate(truth)] + [
        {"id": "p0", "label": "three"}])
    assert r.json()["accepted"] == 4
    assert r.json()["rejected"][0]["reason"] == "unknown_id"  # p0 was labelled just before
    # sklearn's docs for the same data: MAE 0.5, MSE 0.375
    assert sample(exp, "modelmon_quality_mean_absolute_error", model="price", window="5m") == pytest.approx(0.5)
    assert sample(exp, "modelmon_quality_root_mean_squared_error", model="price", window="5m") == pytest.approx(0.375 ** 0.5)
    assert sample(exp, "modelmon_quality_accuracy_ratio", model="price", window="5m") is None
    assert post(exp, "/api/v1/events", [{"model": "price", "id": "q", "prediction": 1.0}]).status_code == 200
    r = post(exp, "/api/v1/labels", [{"id": "q", "label": "three"}])
    assert r.status_code == 400 and r.json()["error"] == "item 0: label: must be a number"


def test_late_labels_are_counted_for_the_version_that_made_the_prediction() -> None:
    pipe, join, _ = join_pipeline(max_events=50)
    b = batch(["a", "b", "c", "d"])
    b.versions = ["1.0", "2.0", "2.0", "2.0"]
    b.predictions = ["1", "1", "0", "1"]
    pipe.submit(b)
    join.join(["a", "b", "c", "d"], ["1", "1", "1", "1"])  # 1.0: 1/1 right; 2.0: 2/3 right
    counts = pipe.monitors["m"].quality_counts
    assert counts["1.0"] == [1, 1]
    assert counts["2.0"] == [3, 2]
