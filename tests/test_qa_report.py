"""The HTML drift report on values near the float limit: ``np.linspace`` over
[-1.7e308, 1.7e308] computes ``hi - lo`` = inf, its edges came out NaN/inf and
``np.histogram`` raised "bins must increase monotonically", so ``modelmon
drift --format html`` ended in a traceback (exit 1) where the JSON and table
formats worked."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from modelmon.cli import main
from modelmon.drift.reference import build_numerical
from modelmon.report import numerical_histogram

BIG = 1.7e308


def test_histogram_edges_over_the_whole_float_range_are_finite_and_increasing() -> None:
    rng = np.random.default_rng(5)
    ref = np.r_[rng.normal(0, 1, 500), BIG, -BIG]
    prof = build_numerical("x", ref)
    h = numerical_histogram(prof, np.r_[rng.normal(0, 1, 500), BIG, BIG])
    edges = np.asarray(h.edges)
    assert np.isfinite(edges).all() and (np.diff(edges) >= 0).all()
    assert edges[0] == -BIG and edges[-1] == BIG
    assert math.isclose(sum(h.reference), 1.0) and math.isclose(sum(h.current), 1.0)
    # a constant reference at the limit still gets a non-empty range
    const = numerical_histogram(build_numerical("c", np.full(300, -BIG)), np.full(300, BIG))
    assert np.isfinite(const.edges).all() and const.edges[0] < const.edges[-1]


def test_drift_html_report_on_extreme_values(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(6)
    ref = [*rng.normal(0, 1, 400).tolist(), BIG, -BIG]
    cur = [*rng.normal(0, 1, 400).tolist(), BIG, BIG]
    (tmp_path / "ref.csv").write_text("x\n" + "".join(f"{v!r}\n" for v in ref))
    (tmp_path / "cur.csv").write_text("x\n" + "".join(f"{v!r}\n" for v in cur))
    out = tmp_path / "report.html"
    code = main(["drift", "--reference", str(tmp_path / "ref.csv"), "--current", str(tmp_path / "cur.csv"),
                 "--format", "html", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "<svg" in out.read_text()
