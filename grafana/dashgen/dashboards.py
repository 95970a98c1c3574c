"""The dashboards modelmon ships, by output file name."""

from __future__ import annotations

from typing import Callable

from . import drift, exporter, overview, quality, system
from .model import Dashboard, Json

#: file name (without .json) -> builder
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "modelmon-overview": overview.build,
    "modelmon-drift": drift.build,
    "modelmon-quality": quality.build,
    "modelmon-exporter": exporter.build,
    "modelmon-system": system.build,
}


def build_all() -> dict[str, Json]:
    """Every dashboard as Grafana JSON, by file name."""
    return {name: build().to_json() for name, build in DASHBOARDS.items()}
