"""``modelmon drift``: the outliers section on every run and the attributions section
when both files carry attribution columns, checked against numpy and scipy."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from modelmon.cli import main
from scipy import stats


def write(path: Path, cols: dict) -> Path:
    names = list(cols)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        w.writerows(zip(*(cols[n] for n in names)))
    return path


def data(rng, n, shift=0.0, sds=(3.0, 2.0, 1.0), attributions=True):
    cols = {"x": rng.normal(0, 1, n) + shift, "y": rng.normal(10, 2, n),
            "c": rng.choice(["a", "b", "z"], n, p=[0.6, 0.3, 0.1])}
    if attributions:
        for name, sd in zip(("x", "y", "c"), sds):
            cols[f"attribution_{name}"] = rng.normal(0, sd, n)
    return cols


def drift(capsys, *argv):
    code = main(["drift", *argv])
    out = capsys.readouterr().out
    try:
        return code, json.loads(out)
    except json.JSONDecodeError:
        return code, out


def test_attribution_ranking_and_importance_match_numpy_and_scipy(tmp_path, capsys):
    rng = np.random.default_rng(5)
    ref_cols, cur_cols = data(rng, 4000), data(rng, 1500, sds=(1.0, 2.0, 3.0))
    ref, cur = write(tmp_path / "ref.csv", ref_cols), write(tmp_path / "cur.csv", cur_cols)
    code, doc = drift(capsys, "--reference", str(ref), "--current", str(cur))
    assert code == 0
    a = doc["attributions"]
    imp = {f: np.mean(np.abs(cur_cols[f"attribution_{f}"])) for f in ("x", "y", "c")}
    rimp = {f: np.mean(np.abs(ref_cols[f"attribution_{f}"])) for f in ("x", "y", "c")}
    for f in ("x", "y", "c"):
        assert a["features"][f]["importance"] == pytest.approx(imp[f], rel=1e-9)
        assert a["features"][f]["reference_importance"] == pytest.approx(rimp[f], rel=1e-9)
    expected = stats.spearmanr(list(imp.values()), list(rimp.values())).statistic
    assert a["rank_correlation"] == pytest.approx(expected) == pytest.approx(-1.0)
    assert a["drifted"] is True
    code, _ = drift(capsys, "--reference", str(ref), "--current", str(cur), "--fail-on-drift")
    assert code == 1
    _, table = drift(capsys, "--reference", str(ref), "--current", str(cur), "--format", "table")
    assert "RANKING CHANGED" in table and "feature importance" in table
    _, page = drift(capsys, "--reference", str(ref), "--current", str(cur), "--format", "html")
    assert "<h2>Feature importance</h2>" in page and "<h2>Outlying rows</h2>" in page


def test_outliers_on_every_run_and_no_attributions_without_columns(tmp_path, capsys):
    rng = np.random.default_rng(6)
    ref = write(tmp_path / "ref.csv", data(rng, 20_000, attributions=False))
    same = write(tmp_path / "same.csv", data(rng, 20_000, attributions=False))
    moved = write(tmp_path / "moved.csv", data(rng, 2000, shift=3.0, attributions=False))
    _, doc = drift(capsys, "--reference", str(ref), "--current", str(same))
    assert "attributions" not in doc
    o = doc["outliers"]
    assert o["reference_share"] == pytest.approx(0.005, abs=1e-3)
    assert o["share"] == pytest.approx(0.005, abs=0.003) and o["drifted"] is False
    _, doc = drift(capsys, "--reference", str(ref), "--current", str(moved))
    assert doc["outliers"]["share"] > 0.1 and doc["outliers"]["drifted"] is True
    _, table = drift(capsys, "--reference", str(ref), "--current", str(moved), "--format", "table")
    assert "-> OUTLIERS" in table


def test_a_frozen_profile_carries_the_outlier_model_to_the_batch_command(tmp_path, capsys):
    rng = np.random.default_rng(7)
    ref = write(tmp_path / "ref.csv", data(rng, 5000, attributions=False))
    moved = write(tmp_path / "moved.csv", data(rng, 1000, shift=3.0, attributions=False))
    assert main(["reference", "build", str(ref), "-o", str(tmp_path / "p.json")]) == 0
    capsys.readouterr()
    _, from_data = drift(capsys, "--reference", str(ref), "--current", str(moved))
    _, from_profile = drift(capsys, "--reference", str(tmp_path / "p.json"), "--current", str(moved))
    assert from_profile["outliers"]["share"] == from_data["outliers"]["share"] > 0.1
