"""Multivariate drift on extreme values: a feature constant in the reference
(scale 1) that arrives as 1e300 overflowed the squared residuals to inf, so
the statistic was inf, every feature share NaN, and ``modelmon drift
--format json`` died in a traceback (``Out of range float values are not JSON
compliant``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from modelmon.cli import main
from modelmon.drift.multivariate import fit_pca_drift


def test_extreme_value_in_a_constant_reference_feature_gives_a_finite_drifted_statistic() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(0, 1, 2000)
    model = fit_pca_drift({"x": np.full(2000, 3.0), "y": y, "z": 2 * y}, {}, {})
    y2 = rng.normal(0, 1, 500)
    res = model.evaluate({"x": np.full(500, 1e300), "y": y2, "z": 2 * y2}, {})
    assert res.reconstruction_error is not None and math.isfinite(res.reconstruction_error)
    assert res.drifted and res.reconstruction_error > 1e40
    assert all(math.isfinite(v) for v in res.feature_share.values())
    assert res.feature_share["x"] == pytest.approx(1.0)  # the share names the culprit
    # unchanged data still is not drifted (the clip never touches ordinary values)
    same = model.evaluate({"x": np.full(500, 3.0), "y": y2, "z": 2 * y2}, {})
    assert not same.drifted


def test_drift_cli_writes_json_for_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(8)
    y = rng.normal(0, 1, 1500).tolist()
    (tmp_path / "ref.csv").write_text("x,y,z\n" + "".join(f"3.0,{a!r},{2 * a!r}\n" for a in y))
    (tmp_path / "cur.csv").write_text("x,y,z\n" + "".join(f"1e300,{a!r},{2 * a!r}\n" for a in y[:500]))
    (tmp_path / "m.yml").write_text("models: [{name: m, features: [{name: x}, {name: y}, {name: z}], "
                                    "reference: {path: ref.csv}, multivariate_drift: {enabled: true}}]\n")
    code = main(["drift", "--config", str(tmp_path / "m.yml"), "--reference", str(tmp_path / "ref.csv"),
                 "--current", str(tmp_path / "cur.csv")])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert code == 0
    mv = json.loads(out.out)["multivariate"]
    assert mv["drifted"] is True and mv["reconstruction_error"] > 1e40
