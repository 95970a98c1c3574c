"""``modelmon drift``: the JSON shape, statistics against scipy on the two
files, exit codes and error messages, and the same numbers as the exporter
for the same data."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from modelmon.cli import main
from modelmon.collectors import build_registry
from modelmon.drift.reference import ReferenceProfile
from modelmon.events import EventBatch
from modelmon.pipeline import Pipeline


def write_csv(path: Path, cols: dict[str, list]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(list(cols))
        for row in zip(*cols.values()):
            w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row])
    return path


def make_data(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, list]:
    p = [0.5, 0.3, 0.2] if not shift else [0.3, 0.3, 0.4]
    return {
        "age": [float(v) for v in rng.normal(40 + 10 * shift, 10, n)],
        "income": [float(v) for v in rng.lognormal(10, 0.5 + shift, n)],
        "visits": [int(v) for v in rng.poisson(3, n)],  # ties
        "plan": [str(v) for v in rng.choice(["free", "pro", "team"], n, p=p)],
    }


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, dict | str, str]:
    code = main(["drift", *argv])
    out = capsys.readouterr()
    try:
        return code, json.loads(out.out), out.err
    except json.JSONDecodeError:
        return code, out.out, out.err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(2024)
    ref, same, moved = make_data(rng, 800), make_data(rng, 1200), make_data(rng, 1200, shift=0.5)
    return {
        "ref": write_csv(tmp_path / "ref.csv", ref), "same": write_csv(tmp_path / "same.csv", same),
        "moved": write_csv(tmp_path / "moved.csv", moved), "dir": tmp_path,
        "data": {"ref": ref, "same": same, "moved": moved},  # type: ignore[dict-item]
    }


def test_json_shape_and_values_match_scipy(files, capsys) -> None:
    code, doc, _ = run_cli(capsys, "--reference", str(files["ref"]), "--current", str(files["moved"]))
    assert code == 0  # drift found, but --fail-on-drift not given
    assert set(doc) >= {"features", "dataset"}
    assert set(doc["dataset"]) >= {"drifted_features", "total_features", "drifted_share", "drifted"}
    assert list(doc["features"]) == ["age", "income", "visits", "plan"]
    for f in doc["features"].values():
        assert set(f) >= {"type", "method", "statistic", "p_value", "threshold", "drifted"}
        assert isinstance(f["statistic"], float) and isinstance(f["drifted"], bool) and isinstance(f["threshold"], float)
    ref, cur = files["data"]["ref"], files["data"]["moved"]
    # 800 reference rows (<= 1000): KS for numbers, chi-square for the plan
    for name in ("age", "income", "visits"):
        f = doc["features"][name]
        expected = stats.ks_2samp(np.array(cur[name], float), np.array(ref[name], float))
        assert (f["type"], f["method"], f["threshold"]) == ("numerical", "ks", 0.05)
        assert f["statistic"] == pytest.approx(expected.statistic, abs=1e-12)
        assert f["p_value"] == pytest.approx(expected.pvalue, abs=1e-9)
        assert f["drifted"] == (expected.pvalue < 0.05)
    plan = doc["features"]["plan"]
    cats = ["free", "pro", "team"]
    chi2, p, _, _ = stats.chi2_contingency([[ref["plan"].count(c) for c in cats], [cur["plan"].count(c) for c in cats]],
                                           correction=False)
    assert (plan["type"], plan["method"]) == ("categorical", "chisquare")
    assert plan["statistic"] == pytest.approx(chi2, rel=1e-9) and plan["p_value"] == pytest.approx(p, abs=1e-9)
    d = doc["dataset"]
    drifted = sum(f["drifted"] for f in doc["features"].values())
    assert d == {"drifted_features": drifted, "total_features": 4, "drifted_share": drifted / 4, "drifted": drifted / 4 >= 0.5,
                 "below_min_values_features": 0, "unusable_features": 0}
    assert d["drifted"] is True


@pytest.mark.parametrize("method", ["wasserstein", "psi", "jensenshannon", "meanstd", "chisquare", "ks"])
def test_forced_method(files, capsys, method) -> None:
    code, doc, _ = run_cli(capsys, "--reference", str(files["ref"]), "--current", str(files["moved"]), "--method", method)
    assert code == 0
    ref, cur = files["data"]["ref"], files["data"]["moved"]
    age = doc["features"]["age"]
    r, c = np.array(ref["age"]), np.array(cur["age"])
    if method == "wasserstein":
        assert age["statistic"] == pytest.approx(stats.wasserstein_distance(c, r) / r.std(), rel=1e-9)
        assert age["p_value"] is None
    if method == "meanstd":
        assert age["statistic"] == pytest.approx((abs(c.mean() - r.mean()) + abs(c.std() - r.std())) / (2 * r.std()), rel=1e-9)
    if method == "jensenshannon":
        cats = ["free", "pro", "team"]
        js = jensenshannon([ref["plan"].count(k) for k in cats], [cur["plan"].count(k) for k in cats], base=2)
        assert doc["features"]["plan"]["statistic"] == pytest.approx(js, abs=1e-9)
    applicable = {"wasserstein": {"age", "income", "visits"}, "meanstd": {"age", "income", "visits"},
                  "ks": {"age", "income", "visits"}, "chisquare": {"plan"},
                  "psi": {"age", "income", "visits", "plan"}, "jensenshannon": {"age", "income", "visits", "plan"}}[method]
    assert {n for n, f in doc["features"].items() if f["method"] == method} == applicable


def test_exit_codes_and_table(files, capsys) -> None:
    ref, same, moved = str(files["ref"]), str(files["same"]), str(files["moved"])
    code, doc, _ = run_cli(capsys, "--reference", ref, "--current", same, "--fail-on-drift")
    assert code == 0 and doc["dataset"]["drifted"] is False
    code, doc, _ = run_cli(capsys, "--reference", ref, "--current", moved, "--fail-on-drift")
    assert code == 1 and doc["dataset"]["drifted"] is True
    code, table, _ = run_cli(capsys, "--reference", ref, "--current", moved, "--format", "table")
    assert code == 0 and isinstance(table, str)
    lines = table.splitlines()
    assert lines[0].split() == ["feature", "type", "method", "statistic", "p_value", "threshold", "drifted", "values",
                                "status"]
    assert any(line.startswith("plan ") and "chisquare" in line for line in lines)
    assert "DRIFT" in next(line for line in lines if line.startswith("dataset:"))


def test_bad_input_exits_2_with_a_clear_message(files, capsys) -> None:
    d: Path = files["dir"]
    ref = str(files["ref"])
    write_csv(d / "other.csv", {"zzz": [1.0, 2.0]})
    (d / "header_only.csv").write_text("age,income,visits,plan\n")
    write_csv(d / "nan_age.csv", {"age": [None, "nan", None], "plan": ["free", "pro", "team"]})
    cases = [
        (["--reference", str(d / "missing.csv"), "--current", ref], "missing.csv: no such file"),
        (["--reference", ref, "--current", str(d / "other.csv")], "share no columns"),
        (["--reference", ref, "--current", str(d / "header_only.csv")], "header_only.csv: no data rows"),
        (["--reference", ref, "--current", ref, "--method", "bogus"], "unknown drift method 'bogus'"),
        (["--reference", ref, "--current", ref, "--config", str(d / "none.yml")], "none.yml"),
    ]
    for argv, message in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, argv
        assert message in err, (argv, err)
        assert "Traceback" not in err


def test_config_types_thresholds_and_profile_reference(files, capsys) -> None:
    d: Path = files["dir"]
    cfg = d / "modelmon.yml"
    cfg.write_text(
        "models:\n- name: churn\n  features:\n"
        "  - {name: age, methods: [psi], threshold: 0.5}\n  - {name: visits, type: categorical}\n"
        "  reference: {path: ref.csv}\n  thresholds: {dataset_drift_share: 0.9}\n"
    )
    code, doc, _ = run_cli(capsys, "--reference", str(files["ref"]), "--current", str(files["moved"]), "--config", str(cfg))
    assert code == 0
    assert set(doc["features"]) == {"age", "visits"}
    assert (doc["features"]["age"]["method"], doc["features"]["age"]["threshold"]) == ("psi", 0.5)
    assert (doc["features"]["visits"]["type"], doc["features"]["visits"]["method"]) == ("categorical", "chisquare")
    assert doc["dataset"]["drifted"] == (doc["dataset"]["drifted_share"] >= 0.9)
    # A profile as the reference gives the same numbers as the raw file
    assert main(["reference", "build", str(files["ref"]), "-o", str(d / "prof.json")]) == 0
    capsys.readouterr()
    _, raw, _ = run_cli(capsys, "--reference", str(files["ref"]), "--current", str(files["moved"]))
    _, prof, _ = run_cli(capsys, "--reference", str(d / "prof.json"), "--current", str(files["moved"]))
    assert raw["features"] == prof["features"] and raw["dataset"] == prof["dataset"]


@pytest.mark.e2e
def test_console_script_runs(files) -> None:
    proc = subprocess.run([sys.executable, "-m", "modelmon", "drift", "--reference", str(files["ref"]),
                           "--current", str(files["moved"]), "--fail-on-drift"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["dataset"]["drifted"] is True


# ------------------------------------------------- exporter == batch command
@pytest.mark.parametrize("ref_rows", [800, 3000])  # default rule: tests (<= 1000 rows) / distances
def test_exporter_exposes_the_same_numbers_as_the_batch_command(tmp_path: Path, capsys, ref_rows: int) -> None:
    rng = np.random.default_rng(ref_rows)
    # 1200 current values: above every default method's minimum window size
    ref, cur = make_data(rng, ref_rows), make_data(rng, 1200, shift=0.2)
    cur["age"][5] = None  # a missing value on both paths
    write_csv(tmp_path / "ref.csv", ref)
    write_csv(tmp_path / "cur.csv", cur)
    cfg_path = tmp_path / "modelmon.yml"
    cfg_path.write_text(
        "models:\n- name: m\n  features:\n  - {name: age}\n  - {name: income}\n  - {name: visits}\n"
        "  - {name: plan, type: categorical}\n  reference: {path: prof.json}\n"
        "  drift: {min_samples: 100, recompute_interval: 0s}\nwindows:\n- {duration: 5m}\n"
    )
    # The profile's sample holds the whole reference (10000 >= rows), so the
    # exporter's exact tests see what the batch command sees.
    assert main(["reference", "build", str(tmp_path / "ref.csv"), "-o", str(tmp_path / "prof.json"),
                 "--config", str(cfg_path)]) == 0
    capsys.readouterr()
    code, doc, err = run_cli(capsys, "--reference", str(tmp_path / "ref.csv"), "--current", str(tmp_path / "cur.csv"),
                             "--config", str(cfg_path))
    assert code == 0, err

    from modelmon.config import load_config

    cfg = load_config(cfg_path)
    profile = ReferenceProfile.load(tmp_path / "prof.json")
    pipeline = Pipeline(cfg, {"m": profile}, clock=lambda: 1000.0)
    registry = build_registry(pipeline)
    n = len(cur["age"])
    for s in range(0, n, 250):  # several batches, as traffic arrives
        e = min(n, s + 250)
        pipeline.submit(EventBatch(
            model="m", timestamps=[1000.0] * (e - s), versions=["v1"] * (e - s), ids=[None] * (e - s),
            latency_seconds=[0.05] * (e - s), errors=[None] * (e - s),
            features={k: v[s:e] for k, v in cur.items()}, predictions=[None] * (e - s), scores=[None] * (e - s),
            labels=[None] * (e - s), attributes={}, source="api",
        ))
    get = registry.get_sample_value
    compared = 0
    for name, f in doc["features"].items():
        for method, r in f["methods"].items():
            labels = {"model": "m", "feature": name, "method": method, "window": "5m"}
            assert get("modelmon_drift_score", labels) == pytest.approx(r["statistic"], rel=1e-12, abs=1e-15), labels
            if r["p_value"] is None:
                assert get("modelmon_drift_p_value", labels) is None
            else:
                assert get("modelmon_drift_p_value", labels) == pytest.approx(r["p_value"], rel=1e-12, abs=1e-15)
            assert get("modelmon_drift_threshold", labels) == r["threshold"]
            assert get("modelmon_drift_detected", labels) == int(r["drifted"])
            assert get("modelmon_drift_min_values", {k: labels[k] for k in ("model", "feature", "method")}) == r["min_values"]
            compared += 1
        fl = {"model": "m", "feature": name, "window": "5m"}
        assert get("modelmon_feature_values", fl) == f["values"]
        assert get("modelmon_feature_missing_ratio", fl) == pytest.approx(f["missing_ratio"])
    assert compared == 8
    assert {f["method"] for f in doc["features"].values()} == ({"ks", "chisquare"} if ref_rows <= 1000 else {"wasserstein", "jensenshannon"})
    ds = {"model": "m", "window": "5m"}
    assert get("modelmon_dataset_drifted_features_ratio", ds) == pytest.approx(doc["dataset"]["drifted_share"])
    assert get("modelmon_dataset_drift_detected", ds) == int(doc["dataset"]["drifted"])
    assert get("modelmon_reference_rows", {"model": "m"}) == ref_rows
    assert get("modelmon_reference_info", {"model": "m", "profile_hash": profile.hash}) == 1
    assert doc["reference"]["profile_hash"] == profile.hash  # the batch built the very same profile
    # The exposition with every drift family (tests with p-values included) passes promtool's lint.
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: apt-get install prometheus (see ../shared/conventions.md)")
    body = generate_latest(registry)
    assert (b"modelmon_drift_p_value{" in body) == (ref_rows <= 1000) and b"modelmon_feature_bin_values_total{" in body
    lint = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint.stdout + lint.stderr


def test_reference_decides_column_types(tmp_path: Path, capsys) -> None:
    """A stray non-numeric value in the current file is a missing value of a
    numerical feature (as in the exporter), not a reason to treat it as
    categorical."""
    rng = np.random.default_rng(9)
    ref = {"x": [float(v) for v in rng.normal(size=200)]}
    cur = {"x": [float(v) for v in rng.normal(size=300)]}
    cur["x"][7] = "oops"
    write_csv(tmp_path / "ref.csv", ref)
    write_csv(tmp_path / "cur.csv", cur)
    code, doc, _ = run_cli(capsys, "--reference", str(tmp_path / "ref.csv"), "--current", str(tmp_path / "cur.csv"))
    assert code == 0
    x = doc["features"]["x"]
    assert (x["type"], x["values"], x["missing_ratio"]) == ("numerical", 299, pytest.approx(1 / 300))
    present = np.array([v for v in cur["x"] if isinstance(v, float)])
    assert x["statistic"] == pytest.approx(stats.ks_2samp(present, np.array(ref["x"])).statistic, abs=1e-12)
