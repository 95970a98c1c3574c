"""The covariate-shift scenario through a real Prometheus: the label-free
accuracy alert fires while the label-based one cannot (no label arrives)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

RULES = Path(__file__).resolve().parents[1] / "prometheus" / "rules"


def rules_with_short_for(dest: Path, names: list[str]) -> list[Path]:
    """Copies of the bundle's rule files with every ``for:`` set to 2s."""
    out = []
    for name in names:
        doc = yaml.safe_load((RULES / name).read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = "2s"
        (dest / name).write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(dest / name)
    return out


def test_estimated_accuracy_alert_fires_before_any_label(servers, make_scrape_config, tmp_path) -> None:
    exp = servers.exporter("--scenario=covariate-shift", "--anomaly-after=0", "--seed=3", "--rate=300")
    rules = rules_with_short_for(tmp_path, ["recording.yml", "alerts-quality.yml", "alerts-estimation.yml"])
    prom = servers.prometheus(make_scrape_config([exp.address]), rule_files=rules)
    firing = prom.wait_for('ALERTS{alertname="ModelmonEstimatedAccuracyLow",alertstate="firing"}', timeout=60)
    assert firing[0]["metric"]["model"] == "demo"
    estimate = prom.value('modelmon_quality_estimated_accuracy_ratio{window="5m"}')
    assert estimate is not None and estimate < 0.85
    upper = prom.value('modelmon_quality_estimated_upper_bound_ratio{window="5m",metric="accuracy"}')
    assert upper is not None and upper < 0.85
    # Labels are withheld: no realized accuracy, and the label-based alert stays quiet.
    assert prom.query('modelmon_quality_accuracy_ratio{window="5m"}') == []
    assert prom.query('ALERTS{alertname="ModelmonLowAccuracy"}') == []
