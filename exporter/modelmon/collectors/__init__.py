"""Collectors: read the pipeline's state at scrape time and build fresh metric
families (the client_python custom-collector pattern).  One module per metric
group; :func:`build_registry` wires them into a private registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from ..pipeline import Pipeline
from .drift import DriftCollector
from .estimation import EstimationCollector
from .health import HealthCollector
from .quality import QualityCollector
from .serving import ServingCollector
from .thresholds import ThresholdCollector


def build_registry(pipeline: Pipeline, extra: list | None = None) -> CollectorRegistry:
    """A private registry with every modelmon collector plus process metrics."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    health = HealthCollector(pipeline)
    for c in (ServingCollector(pipeline), QualityCollector(pipeline), DriftCollector(pipeline), EstimationCollector(pipeline),
              ThresholdCollector(pipeline), *(extra or [])):
        registry.register(health.timed(c))
    registry.register(health)
    return registry
