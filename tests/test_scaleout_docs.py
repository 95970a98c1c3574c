"""The scale-out page and the remote-write example stay true:
``prometheus/remote-write.example.yml`` is the bundle's prometheus.yml plus
``remote_write`` and passes promtool; the cardinality budget in
docs/scale-out.md is what ``bench/cardinality.py`` measures on a real
``/metrics`` today."""

from __future__ import annotations

import importlib.util
import re
import subprocess

import pytest
import yaml
from servers import REPO, require_binary

EXAMPLE = REPO / "prometheus" / "remote-write.example.yml"
DOC = REPO / "docs" / "scale-out.md"


def test_remote_write_example_is_the_bundle_config_plus_remote_write() -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    bundle = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    writes = example.pop("remote_write")
    assert example == bundle, "remote-write.example.yml drifted from prometheus.yml; copy its body again"
    assert writes and all(w["url"].startswith("http") for w in writes)
    proc = subprocess.run([require_binary("promtool"), "check", "config", str(EXAMPLE)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "WARNING" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_doc_links_exist() -> None:
    text = DOC.read_text()
    for path in re.findall(r"`((?:tests|bench|prometheus)/[\w./-]+\.(?:py|yml))`", text):
        assert (REPO / path).exists(), f"docs/scale-out.md names {path}, which does not exist"


@pytest.mark.e2e
def test_budget_table_is_measured() -> None:
    spec = importlib.util.spec_from_file_location("cardinality", REPO / "bench" / "cardinality.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    full = bench.attribute(bench.scrape())
    rows = {}
    for line in DOC.read_text().split("## Budget", 1)[1].splitlines():
        if m := re.match(r"^\| ((?:all groups|--no-collector)[^|]*) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|$", line):
            rows[m.group(1).strip()] = [int(x.replace(",", "")) for x in m.groups()[1:]]
    assert len(rows) == 4, rows
    for name, numbers in rows.items():
        off = set(re.findall(r"--no-collector\.(\w+)", name))
        # The fixed part grows by a few series as lazily created label values
        # (error reasons, refusal reasons) appear during the scrape window,
        # so the table must agree within 2 %, not to the series.
        measured = [bench.budget(full, n, off) for n in (10, 100, 1000)]
        assert measured == pytest.approx(numbers, rel=0.02), name
