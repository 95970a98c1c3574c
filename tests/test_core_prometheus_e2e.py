"""A real Prometheus scrapes ``modelmon serve``: the target is up and
``rate()`` of the request counter shows the simulated rate."""

from __future__ import annotations

import pytest

from conftest import scrape_config

pytestmark = pytest.mark.e2e


def test_prometheus_rate_matches_simulated_rate(servers) -> None:
    exp = servers.exporter("--rate=300", "--seed=2")
    prom = servers.prometheus(scrape_config([exp.address]))
    prom.wait_targets_up(1)
    assert prom.value('up{job="modelmon"}') == 1
    # rate() divides by the whole range, so wait until the range is full of
    # samples (1 s scrapes) before reading it.
    prom.wait_for('count_over_time(modelmon_requests_total{job="modelmon"}[15s]) >= 14', timeout=60)
    rate = prom.value('sum(rate(modelmon_requests_total{job="modelmon"}[15s]))')
    assert rate == pytest.approx(300, rel=0.2)
    # Drift and quality families made it through the real scrape too.
    prom.wait_for('modelmon_drift_score{job="modelmon"}', timeout=30)
    assert prom.value('modelmon_threshold_accuracy_min_ratio{job="modelmon"}') == 0.85
