"""Wires one exporter process: config -> reference profiles -> pipeline ->
collectors/registry -> HTTP server, plus the sources that feed the pipeline."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from .collectors import build_registry
from .config import Config, ConfigError, ModelConfig
from .datasets import DataError, load_table
from .drift.reference import ReferenceProfile, build_profile
from .estimation.sections import fit_sections, load_estimators
from .pipeline import Pipeline
from .web import ExporterServer

log = logging.getLogger(__name__)


def load_profile(cfg: Config, index: int, model: ModelConfig) -> ReferenceProfile | None:
    """The model's frozen reference profile, from a profile file or raw data."""
    if not model.monitored_features() and not model.performance_estimation.enabled:
        return None
    if not model.reference.path:
        if cfg.simulator.enabled and model.name == cfg.simulator.model:
            from .sources.simulator import reference_profile

            return reference_profile(model, cfg.simulator.reference_rows, cfg.simulator.seed)
        raise ConfigError("a model with features needs reference.path (data file or profile)",
                          file=cfg.source or None, field_path=f"models[{index}].reference.path")
    path = cfg.resolve_path(model.reference.path)
    field_path = f"models[{index}].reference.path"
    try:
        if path.suffix == ".json":
            prof = ReferenceProfile.load(path)
            missing = [f.name for f in model.monitored_features() if f.name not in prof.features]
            if missing:
                raise ValueError(f"profile lacks features {', '.join(missing)}")
        else:
            cols = load_table(path, types={f.name: f.type for f in model.monitored_features()})
            prof = build_profile(cols, model.monitored_features(), bins=model.drift.bins,
                                 discrete_max=model.drift.discrete_max_values or None,
                                 sample_size=model.drift.reference_sample_size, top_k=model.drift.top_k_categories)
            fit_sections(prof, cols, model)
        load_estimators(prof, model)  # an enabled estimator the profile lacks is a config error
        return prof
    except (OSError, DataError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc),
                          file=cfg.source or None, field_path=field_path) from None


def listen_address(addr: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` / ``:PORT`` / ``[::1]:PORT`` as Prometheus exporters do."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {addr!r}: expected HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class Exporter:
    """One running exporter: pipeline, registry, HTTP server and sources."""

    def __init__(self, cfg: Config, listen: str = "127.0.0.1:0", clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.profiles = {m.name: load_profile(cfg, i, m) for i, m in enumerate(cfg.models)}
        self.pipeline = Pipeline(cfg, self.profiles, clock=clock)
        self.extra_collectors: list[Any] = []
        self.simulator = None
        if cfg.simulator.enabled:
            from .sources.simulator import Simulator

            self.simulator = Simulator(cfg.simulator, self.pipeline.submit, clock=clock)
            self.extra_collectors.append(SimulatorCollector(self))
        self.registry = build_registry(self.pipeline, self.extra_collectors)
        host, port = listen_address(listen)
        self._ready = threading.Event()
        self.server = ExporterServer(self.registry, host, port, ready=self._ready.is_set)
        #: Things to stop on shutdown (sources started by extensions).
        self.closers: list[Callable[[], None]] = []
        self._install_extensions()

    def _install_extensions(self) -> None:
        """Optional sources and endpoints that plug into the pipeline/server."""
        from .sources import api

        api.install(self)  # label join, /api/v1/events and /api/v1/labels, the reverse proxy
        from . import inference_log, webauth

        inference_log.install(self)  # JSON-lines inference logs when logs.enabled
        webauth.install(self)  # TLS, basic auth, headers from web: / --web.config.file

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        self.server.start()
        if self.simulator is not None:
            self.simulator.start()
        self._ready.set()
        log.info("exporter started", extra={"address": f"{self.server.httpd.server_address[0]}:{self.port}",
                                            "models": [m.name for m in self.cfg.models]})

    def stop(self) -> None:
        self._ready.clear()
        if self.simulator is not None:
            self.simulator.stop()
        for close in reversed(self.closers):
            try:
                close()
            except Exception:
                log.exception("error while stopping")
        self.server.stop()
        log.info("exporter stopped")


class SimulatorCollector:
    """``modelmon_simulator_anomaly_active{model,scenario}``: 1 while the scenario's anomaly runs."""

    def __init__(self, exporter: Exporter):
        self.exporter = exporter

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        sim = self.exporter.simulator
        g = GaugeMetricFamily("modelmon_simulator_anomaly_active",
                              "1 while the simulated scenario's anomaly is active.", labels=["model", "scenario"])
        if sim is not None:
            g.add_metric([sim.cfg.model, sim.cfg.scenario], int(sim.anomalous()))
        yield g
