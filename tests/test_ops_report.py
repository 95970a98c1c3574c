"""The drift HTML report: histograms checked by hand, the page checked for
self-containment, escaping and agreement with the JSON output of the same run."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from contextlib import redirect_stdout
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from modelmon.cli import main
from modelmon.drift.reference import build_categorical, build_numerical
from modelmon.report import categorical_histogram, numerical_histogram

VOID = {"meta", "br", "img", "input", "link", "hr", "line", "rect", "path", "circle"}


def test_numerical_histogram_by_hand() -> None:
    prof = build_numerical("x", list(range(10)), bins=4)  # reference 0..9
    h = numerical_histogram(prof, [0, 0, 0, 9, 9], bins=3)
    # Range [0, 9] in 3 bins [0,3) [3,6) [6,9]: reference 3/3/4 of 10, current 3/0/2 of 5.
    assert h.edges == pytest.approx([0, 3, 6, 9])
    assert h.reference == pytest.approx([0.3, 0.3, 0.4])
    assert h.current == pytest.approx([0.6, 0.0, 0.4])
    assert h.clipped == 0


def test_numerical_histogram_clips_a_lone_outlier() -> None:
    prof = build_numerical("x", np.linspace(0, 1, 101), bins=4)
    cur = list(np.linspace(0, 1, 1000)) + [1e6]
    h = numerical_histogram(prof, cur, bins=10)
    assert h.edges[-1] < 2  # the outlier does not stretch the axis ...
    assert h.clipped == 1  # ... it is counted in the last bin and reported
    assert sum(h.current) == pytest.approx(1.0) and sum(h.reference) == pytest.approx(1.0)


def test_categorical_histogram_by_hand() -> None:
    prof = build_categorical("c", ["a"] * 6 + ["b"] * 3 + ["c"], categories=["a", "b", "c"])
    h = categorical_histogram(prof, ["a", "a", "b", "zzz", None])
    assert h.labels == ["a", "b", "c", "__other__"]
    assert h.reference == pytest.approx([0.6, 0.3, 0.1, 0.0])
    assert h.current == pytest.approx([0.5, 0.25, 0.0, 0.25])  # None is missing, not a category


# --------------------------------------------------------------------------- page


class _Checker(HTMLParser):
    """Collects tags, checks nesting, and gathers table cells and script text."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.counts: dict[str, int] = {}
        self.attrs: list[tuple[str, dict]] = []
        self.rows: list[list[tuple[str, dict]]] = []
        self._in_tbody = False
        self._cell: list | None = None
        self.scripts: list[str] = []
        self._script = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.counts[tag] = self.counts.get(tag, 0) + 1
        a = dict(attrs)
        self.attrs.append((tag, a))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self.rows.append([])
        elif tag == "td" and self._in_tbody:
            self._cell = ["", a]
        elif tag == "script":
            self._script = True

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()
        if tag == "tbody":
            self._in_tbody = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append((self._cell[0], self._cell[1]))
            self._cell = None
        elif tag == "script":
            self._script = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0] += data
        if self._script:
            self.scripts.append(data)


def _write_csv(path: Path, columns: dict[str, list]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(list(columns))
        w.writerows(zip(*columns.values()))


@pytest.fixture(scope="module")
def drift_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(7)
    n = 3000
    evil = "<img src=x onerror=alert(1)>"
    ref = {"age": np.round(rng.normal(40, 10, n), 2).tolist(), "income": np.round(rng.lognormal(10, 0.5, n), 1).tolist(),
           "region": rng.choice(["n", "s", "e"], n, p=[0.5, 0.3, 0.2]).tolist(), evil: rng.choice(["</script>", "b"], n).tolist()}
    cur = {"age": np.round(rng.normal(40, 10, n), 2).tolist(), "income": np.round(rng.lognormal(10.6, 0.5, n), 1).tolist(),
           "region": rng.choice(["n", "s", "e"], n, p=[0.2, 0.3, 0.5]).tolist(), evil: rng.choice(["</script>", "b"], n).tolist()}
    _write_csv(d / "ref.csv", ref)
    _write_csv(d / "cur.csv", cur)
    return d / "ref.csv", d / "cur.csv"


def _drift(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["drift", *args])
    return rc, out.getvalue()


def test_html_report_matches_the_json_and_is_self_contained(drift_files: tuple[Path, Path], tmp_path: Path) -> None:
    ref, cur = drift_files
    page = tmp_path / "report.html"
    rc, _ = _drift("--reference", str(ref), "--current", str(cur), "--format", "html", "-o", str(page), "--fail-on-drift")
    assert rc == 1  # income and region drift: the exit code still says so
    rc, out = _drift("--reference", str(ref), "--current", str(cur), "--format", "json")
    doc = json.loads(out)
    text = page.read_text(encoding="utf-8")

    p = _Checker()
    p.feed(text)
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    # Self-contained: a CSP that forbids every fetch, and no reference to anything outside the page.
    csp = [a for t, a in p.attrs if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0]["content"].startswith("default-src 'none'")
    for tag, a in p.attrs:
        for key in ("src", "href", "xlink:href", "action", "data"):
            assert key not in a or a[key].startswith("#"), (tag, a)
    assert not re.search(r"https?://|@import|url\(", text)

    # The verdict and one table row per feature, with the JSON's numbers.
    ds = doc["dataset"]
    assert f"Dataset drift: YES — {ds['drifted_features']} of {ds['total_features']} features drifted" in text
    assert len(p.rows) == len(doc["features"]) == 4
    for row in p.rows:
        name = row[0][0]
        f = doc["features"][name]
        assert row[1][0] == f["type"] and row[2][0] == f["method"]
        assert float(row[3][1]["data-v"]) == pytest.approx(f["statistic"], rel=1e-12)
        assert row[6][0] == ("yes" if f["drifted"] else "no")
    assert p.counts["svg"] == 4
    # Column names and category values from data files are escaped, never markup.
    assert "<img" not in text and text.count("</script>") == 1
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


@pytest.mark.e2e
def test_html_report_to_stdout_and_without_matplotlib(drift_files: tuple[Path, Path]) -> None:
    ref, cur = drift_files
    code = ("import sys; from modelmon.cli import main; rc = main(['drift', '--reference', sys.argv[1], '--current', "
            "sys.argv[2], '--format', 'html']); assert 'matplotlib' not in sys.modules; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(ref), str(cur)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("<!doctype html>") and r.stdout.rstrip().endswith("</html>")


def test_unwritable_output_exits_2(drift_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ref, cur = drift_files
    rc = main(["drift", "--reference", str(ref), "--current", str(cur), "--format", "html", "-o", str(tmp_path / "no" / "r.html")])
    assert rc == 2 and "cannot write" in capsys.readouterr().err
