"""Collectors: read the pipeline's state at scrape time and build fresh metric
families (the client_python custom-collector pattern).  One module per metric
group; :func:`build_registry` wires them into a private registry."""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from ..pipeline import Pipeline
from .drift import DriftCollector
from .estimation import EstimationCollector
from .explain import ExplainCollector
from .groups import GroupFilteredRegistry
from .health import HealthCollector
from .quality import QualityCollector
from .serving import ServingCollector
from .thresholds import ThresholdCollector


def build_registry(pipeline: Pipeline, extra: list | None = None, disabled: Iterable[str] = ()) -> CollectorRegistry:
    """A private registry with every modelmon collector plus process metrics,
    leaving out the metric groups named in ``disabled`` (:mod:`.groups`)."""
    registry = GroupFilteredRegistry(disabled)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    health = HealthCollector(pipeline)
    for c in (ServingCollector(pipeline), QualityCollector(pipeline), DriftCollector(pipeline), EstimationCollector(pipeline),
              ThresholdCollector(pipeline), ExplainCollector(pipeline), *(extra or [])):
        registry.register(health.timed(c))
    registry.register(health)
    return registry
