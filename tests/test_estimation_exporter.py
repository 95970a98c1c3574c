"""Label-free monitoring end to end without a server: the config, the
profile sections, the exporter's gauges per window, ``modelmon drift`` giving
the same numbers on the same rows (whole file and per chunk), and the
simulator's covariate-shift scenario."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import numpy as np
import pytest
import yaml

from modelmon.app import load_profile
from modelmon.cli import main
from modelmon.collectors import build_registry
from modelmon.config import ConfigError, config_from_dict, load_config
from modelmon.estimation.sections import column_values, positive_indicator
from modelmon.events import EventBatch
from modelmon.pipeline import Pipeline
from modelmon.sources.simulator import (
    Simulator,
    default_config,
    generate_features,
    generate_outputs,
)

FEATURES = [{"name": "age"}, {"name": "income"}, {"name": "credit_score"}, {"name": "session_seconds"},
            {"name": "region", "type": "categorical"}, {"name": "device", "type": "categorical"}]
NUMERICAL = ["age", "income", "credit_score", "session_seconds"]


def read_csv(path):
    """The file's columns as lists of strings (None for empty cells)."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return {h: [r[i] or None for r in rows[1:]] for i, h in enumerate(rows[0])}


def write_columns(path, cols):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(list(cols))
        w.writerows(zip(*cols.values(), strict=True))


def write_csv(path, n, seed, shift=False):
    rng = np.random.default_rng(seed)
    feats = generate_features(rng, n, covariate_shift=shift)
    cols = {**feats, **generate_outputs(rng, feats)}
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        w.writerows(zip(*[c.tolist() for c in cols.values()], strict=True))


@pytest.fixture
def files(tmp_path):
    write_csv(tmp_path / "ref.csv", 20_000, 1)
    write_csv(tmp_path / "cur.csv", 3000, 2, shift=True)
    cfg = {"models": [{"name": "m", "features": FEATURES, "reference": {"path": "ref.csv"},
                       "performance_estimation": {"enabled": True}, "multivariate_drift": {"enabled": True}}],
           "windows": [{"duration": "5m", "max_events": 10_000}]}
    (tmp_path / "cfg.yml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def exporter_values(cfg_path, current, clock_start=1000.0):
    """Feed the current file's rows to a monitor as events and read the gauges back."""
    cfg = load_config(cfg_path)
    prof = load_profile(cfg, 0, cfg.models[0])
    t = [clock_start]
    pipe = Pipeline(cfg, {"m": prof}, clock=lambda: t[0])
    table = read_csv(current)
    n = len(table["age"])
    pipe.submit(EventBatch(
        model="m", timestamps=[t[0]] * n, versions=["1"] * n, ids=[str(i) for i in range(n)],
        latency_seconds=[0.1] * n, errors=[None] * n,
        features={f["name"]: table[f["name"]] for f in FEATURES},
        predictions=table["prediction"], scores=[float(s) for s in table["score"]], labels=[None] * n,
        attributes={}, source="api"))
    reg = build_registry(pipe)
    return reg, (lambda name, **labels: reg.get_sample_value(name, {"model": "m", "window": "5m", **labels}))


def drift_json(capsys, *argv):
    assert main(["drift", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_exporter_and_batch_command_agree(files, capsys):
    doc = drift_json(capsys, "--reference", str(files / "ref.csv"), "--current", str(files / "cur.csv"),
                     "--config", str(files / "cfg.yml"), "--chunk-size", "1000")
    _, g = exporter_values(files / "cfg.yml", files / "cur.csv")
    perf = doc["estimated_performance"]
    assert perf["rows"] == 3000 == g("modelmon_quality_estimated_events")
    for metric in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert g(f"modelmon_quality_estimated_{metric}_ratio") == pytest.approx(perf[metric]["value"], rel=1e-12)
        assert g("modelmon_quality_estimated_lower_bound_ratio", metric=metric) == pytest.approx(perf[metric]["lower"], rel=1e-12)
        assert g("modelmon_quality_estimated_upper_bound_ratio", metric=metric) == pytest.approx(perf[metric]["upper"], rel=1e-12)
    # The band is the reference's sampling spread; the shift here makes ROC AUC
    # far less stable than on the reference (0.86 vs 0.99), so only the
    # confusion-matrix metrics are held to it (docs/estimation.md, limits).
    for metric in ("accuracy", "precision", "recall", "f1"):
        assert perf[metric]["lower"] <= perf[metric]["realized"] <= perf[metric]["upper"]
    assert perf["roc_auc"]["value"] == pytest.approx(perf["roc_auc"]["realized"], abs=0.02)
    mv = doc["multivariate"]
    assert g("modelmon_multivariate_drift_reconstruction_error") == pytest.approx(mv["reconstruction_error"], rel=1e-12)
    assert g("modelmon_multivariate_drift_upper_threshold") == pytest.approx(mv["threshold"], rel=1e-12)
    assert g("modelmon_multivariate_drift_detected") == int(mv["drifted"])
    for feature, share in mv["feature_share"].items():
        assert g("modelmon_multivariate_drift_feature_error_ratio", feature=feature) == pytest.approx(share, rel=1e-9)
    # Chunk by chunk: a window holding only those rows reports the chunk's numbers.
    assert [c["rows"] for c in doc["chunks"]] == [1000, 1000, 1000]
    chunk_file = files / "chunk.csv"
    write_columns(chunk_file, {k: v[1000:2000] for k, v in read_csv(files / "cur.csv").items()})
    _, g2 = exporter_values(files / "cfg.yml", chunk_file)
    chunk = doc["chunks"][1]
    assert g2("modelmon_quality_estimated_accuracy_ratio") == pytest.approx(
        chunk["estimated_performance"]["accuracy"]["value"], rel=1e-12)
    assert g2("modelmon_multivariate_drift_reconstruction_error") == pytest.approx(
        chunk["multivariate"]["reconstruction_error"], rel=1e-12)


def test_a_column_the_label_free_sections_need_is_missing(files, capsys):
    """A current file without ``income`` (multivariate) and ``score`` (CBPE): the per-feature
    drift of the other columns is still printed, each section says what it lacks, exit 3."""
    cols = read_csv(files / "cur.csv")
    write_columns(files / "partial.csv", {k: v for k, v in cols.items() if k not in ("income", "score")})
    argv = ["drift", "--reference", str(files / "ref.csv"), "--current", str(files / "partial.csv"),
            "--config", str(files / "cfg.yml"), "--chunk-size", "1000"]
    assert main(argv) == 3
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["features"]["age"]["status"] == "ok" and doc["features"]["income"]["status"] == "error"
    assert "'income'" in doc["multivariate"]["error"] and "partial.csv" in doc["multivariate"]["error"]
    assert "'score'" in doc["estimated_performance"]["error"]
    assert all("error" in c["multivariate"] and "error" in c["estimated_performance"] for c in doc["chunks"])
    assert "multivariate not computed" in err and "estimated_performance not computed" in err
    for fmt in ("table", "html"):
        assert main([*argv, "--format", fmt]) == 3
        assert "not computed" in capsys.readouterr().out


def test_profile_file_carries_the_sections(files, capsys):
    assert main(["reference", "build", str(files / "ref.csv"), "-o", str(files / "prof.json"),
                 "--config", str(files / "cfg.yml"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sections"] == ["multivariate_drift", "outlier_model", "performance_estimation"]
    from_raw = drift_json(capsys, "--reference", str(files / "ref.csv"), "--current", str(files / "cur.csv"),
                          "--config", str(files / "cfg.yml"))
    from_profile = drift_json(capsys, "--reference", str(files / "prof.json"), "--current", str(files / "cur.csv"),
                              "--config", str(files / "cfg.yml"))
    assert from_profile["estimated_performance"] == from_raw["estimated_performance"]
    assert from_profile["multivariate"] == from_raw["multivariate"]
    # A profile built without the config lacks the sections: a clear error, exit 2.
    assert main(["reference", "build", str(files / "ref.csv"), "-o", str(files / "bare.json")]) == 0
    capsys.readouterr()
    assert main(["drift", "--reference", str(files / "bare.json"), "--current", str(files / "cur.csv"),
                 "--config", str(files / "cfg.yml")]) == 2
    assert "no performance_estimation section" in capsys.readouterr().err


def test_table_and_html_sections(files, capsys):
    args = ["--reference", str(files / "ref.csv"), "--current", str(files / "cur.csv"), "--config", str(files / "cfg.yml")]
    assert main(["drift", *args, "--format", "table", "--chunk-size", "1500"]) == 0
    out = capsys.readouterr().out
    assert "estimated performance (CBPE" in out and "rows 1500-2999" in out and "multivariate drift" in out
    assert main(["drift", *args, "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert "Estimated performance (CBPE)" in page and "Multivariate drift" in page


def test_missing_output_columns_are_named(files, capsys):
    write_columns(files / "noscore.csv", {k: v for k, v in read_csv(files / "ref.csv").items() if k != "score"})
    assert main(["drift", "--reference", str(files / "noscore.csv"), "--current", str(files / "cur.csv"),
                 "--config", str(files / "cfg.yml")]) == 2
    err = capsys.readouterr().err
    assert "noscore.csv" in err and "'score'" in err
    assert main(["drift", "--reference", str(files / "ref.csv"), "--current", str(files / "cur.csv"), "--chunk-size", "10"]) == 2
    assert "--chunk-size" in capsys.readouterr().err


@pytest.mark.parametrize("section,value,message", [
    ("performance_estimation", {"enabled": True, "calibration": "sometimes"}, "calibration: must be one of auto"),
    ("performance_estimation", {"metrics": ["mae"]}, "metrics[0]: unknown metric 'mae'"),
    ("multivariate_drift", {"enabled": True, "variance_share": 1.5}, "variance_share: must be between 0 and 1"),
    ("multivariate_drift", {"features": ["nope"]}, "multivariate_drift.features[0]: not a feature"),
    ("multivariate_drift", {"enabled": True, "features": ["age"]}, "at least two features"),
])
def test_config_errors_name_the_field(section, value, message):
    with pytest.raises(ConfigError, match="f.yml: models\\[0\\]") as exc:
        config_from_dict({"models": [{"name": "m", "features": FEATURES, section: value}]}, source="f.yml")
    assert message in str(exc.value)
    with pytest.raises(ConfigError, match="classification"):
        config_from_dict({"models": [{"name": "m", "task": "regression", "performance_estimation": {"enabled": True}}]})


def test_simulated_covariate_shift_is_estimated_before_labels_arrive():
    cfg = default_config()
    cfg.simulator.seed, cfg.simulator.scenario, cfg.simulator.anomaly_after_seconds = 7, "covariate-shift", 60
    cfg.simulator.rate = 200
    t = [1000.0]
    pipe = Pipeline(cfg, {"demo": load_profile(cfg, 0, cfg.models[0])}, clock=lambda: t[0])
    sim = Simulator(cfg.simulator, pipe.submit, clock=lambda: t[0])
    reg = build_registry(pipe)

    def g(name):
        return reg.get_sample_value(name, {"model": "demo", "window": "5m"})

    for _ in range(60):
        sim.step(1.0)
        t[0] += 1
    before, realized_before = g("modelmon_quality_estimated_accuracy_ratio"), g("modelmon_quality_accuracy_ratio")
    labelled_before = g("modelmon_window_labelled_events")
    assert before == pytest.approx(0.95, abs=0.02) and realized_before == pytest.approx(0.95, abs=0.03)
    for _ in range(400):  # past the 5m window: only shifted traffic in it
        sim.step(1.0)
        t[0] += 1
    after = g("modelmon_quality_estimated_accuracy_ratio")
    assert after == pytest.approx(0.76, abs=0.03)
    assert reg.get_sample_value("modelmon_quality_estimated_upper_bound_ratio",
                                {"model": "demo", "window": "5m", "metric": "accuracy"}) < cfg.models[0].thresholds.accuracy_min
    # No label arrived during the shift: the realized accuracy has nothing to say.
    assert g("modelmon_window_labelled_events") == 0 < labelled_before
    assert g("modelmon_quality_accuracy_ratio") is None


def test_odd_outputs_never_break_the_gauges(files):
    cfg = load_config(files / "cfg.yml")
    pipe = Pipeline(cfg, {"m": load_profile(cfg, 0, cfg.models[0])}, clock=lambda: 1000.0)
    n = 400
    rng = np.random.default_rng(9)
    scores = [float(v) for v in rng.uniform(-0.5, 1.5, n)]  # not probabilities
    scores[:50] = [None] * 50
    preds = ["1" if i % 2 else "0" for i in range(n)]
    preds[50:100] = [None] * 50
    preds[100:110] = ["cat"] * 10  # neither class: counts as a negative prediction
    feats = {f["name"]: [None] * n for f in FEATURES}  # every feature missing: imputed
    pipe.submit(EventBatch(model="m", timestamps=[1000.0] * n, versions=["1"] * n, ids=[str(i) for i in range(n)],
                           latency_seconds=[0.1] * n, errors=[None] * n, features=feats, predictions=preds,
                           scores=scores, labels=[None] * n, attributes={}, source="api"))
    reg = build_registry(pipe)

    def g(name: str, **kw: str) -> float | None:
        return reg.get_sample_value(name, {"model": "m", "window": "5m", **kw})

    assert g("modelmon_quality_estimated_events") == 300
    for metric in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        v = g(f"modelmon_quality_estimated_{metric}_ratio")
        assert v is not None and 0.0 <= v <= 1.0
    assert g("modelmon_multivariate_drift_events") == n
    assert g("modelmon_multivariate_drift_reconstruction_error") is not None


def test_exporter_start_errors_name_the_reference(files):
    write_columns(files / "nolabel.csv", {k: v for k, v in read_csv(files / "ref.csv").items() if k != "label"})
    text = (files / "cfg.yml").read_text().replace("path: ref.csv", "path: nolabel.csv")
    (files / "nolabel.yml").write_text(text)
    cfg = load_config(files / "nolabel.yml")
    with pytest.raises(ConfigError, match=r"models\[0\]\.reference\.path: .*'label'"):
        load_profile(cfg, 0, cfg.models[0])
    # A frozen profile without the sections the config enables.
    assert main(["reference", "build", str(files / "ref.csv"), "-o", str(files / "bare.json")]) == 0
    (files / "bare.yml").write_text((files / "cfg.yml").read_text().replace("path: ref.csv", "path: bare.json"))
    cfg = load_config(files / "bare.yml")
    with pytest.raises(ConfigError, match="no performance_estimation section"):
        load_profile(cfg, 0, cfg.models[0])


def test_positive_indicator_spellings():
    got = positive_indicator(["1", "0", None, "", 1, 0, 1.0, float("nan"), np.int64(1), True, "yes"], "1")
    assert np.array_equal(got, [1, 0, np.nan, np.nan, 1, 0, 1, np.nan, 1, 0, 0], equal_nan=True)
    assert np.array_equal(positive_indicator(["churn", "stay", 1], "churn"), [1, 0, 0])


def test_typed_columns_read_like_lists():
    """Tables may hold typed columns (float values / codes into a dictionary)."""
    @dataclass
    class Num:
        values: np.ndarray
        kind: str = "numerical"

    @dataclass
    class Cat:
        codes: np.ndarray
        dictionary: list
        kind: str = "categorical"

        def __len__(self):
            return len(self.codes)

    assert list(column_values(Cat(np.array([1, -1, 0]), ["0", "1"]))) == ["1", None, "0"]
    assert np.array_equal(positive_indicator(Num(np.array([1.0, 0.0, np.nan])), "1"), [1, 0, np.nan], equal_nan=True)
    assert np.array_equal(positive_indicator(Cat(np.array([1, -1, 0]), ["0", "1"]), "1"), [1, np.nan, 0], equal_nan=True)
