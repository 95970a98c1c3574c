"""Wires one exporter process: config -> reference profiles -> pipeline ->
collectors/registry -> HTTP server, plus the sources that feed the pipeline
(built from the :data:`SOURCES` table)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .collectors import build_registry
from .config import Config, ConfigError, ModelConfig, listen_address
from .datasets import DataError, load_table
from .drift.reference import ReferenceProfile, build_profile
from .estimation.sections import fit_sections, load_estimators
from .inference_log import InferenceLogger
from .labels import LabelJoin
from .pipeline import Pipeline
from .profile_sections import fit_explain_sections, importance_profile, outlier_model
from .sources import Source, SourceContext, SourceSpec
from .sources import api as api_source
from .sources.proxy import ProxySource, validate_proxy_config
from .sources.simulator import Simulator, reference_profile
from .web import ExporterApp, ExporterServer, ServerLimits
from .webauth import WebSecurity, web_security

log = logging.getLogger(__name__)

__all__ = ["SOURCES", "Exporter", "check_sources", "listen_address", "load_profile"]

#: Every source the exporter can run, in start order.
SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("simulator", lambda c: c.simulator.enabled,
               lambda ctx: Simulator(ctx.cfg.simulator, ctx.pipeline.submit, clock=ctx.pipeline.clock)),
    SourceSpec("api", lambda c: c.ingest.enabled,
               lambda ctx: api_source.build(ctx.cfg, ctx.pipeline, ctx.label_join, ctx.ready)),
    SourceSpec("proxy", lambda c: bool(c.proxy.listen_address or c.proxy.upstream),
               lambda ctx: ProxySource(ctx.cfg, ctx.pipeline), check_config=validate_proxy_config),
)


def check_sources(cfg: Config) -> None:
    """Checks of the enabled sources' config sections (errors name the file and field)."""
    for spec in SOURCES:
        if spec.check_config is not None and spec.enabled(cfg):
            try:
                spec.check_config(cfg)
            except ConfigError as exc:
                raise ConfigError(exc.reason, file=cfg.source or None, field_path=exc.field_path) from None


def load_profile(cfg: Config, index: int, model: ModelConfig) -> ReferenceProfile | None:
    """The model's frozen reference profile, from a profile file or raw data."""
    if not model.monitored_features() and not model.performance_estimation.enabled:
        return None
    if not model.reference.path:
        if cfg.simulator.enabled and model.name == cfg.simulator.model:
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
            fit_explain_sections(prof, cols, model)
        load_estimators(prof, model)
        importance_profile(prof, model)  # a missing or malformed section names the file here
        outlier_model(prof, model)  # an enabled estimator the profile lacks is a config error
        return prof
    except (OSError, DataError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc),
                          file=cfg.source or None, field_path=field_path) from None


class Exporter:
    """One running exporter: pipeline, registry, HTTP server and sources.

    Built from a config; :meth:`start` serves and starts the sources,
    :meth:`stop` stops them and closes the server.  Nothing is started by the
    constructor except binding the listening socket (so a busy port fails early).
    """

    def __init__(self, cfg: Config, listen: str = "127.0.0.1:0", clock: Callable[[], float] = time.time,
                 limits: ServerLimits | None = None):
        check_sources(cfg)
        limits = limits or ServerLimits()
        self.cfg = cfg
        self.profiles = {m.name: load_profile(cfg, i, m) for i, m in enumerate(cfg.models)}
        self.pipeline = Pipeline(cfg, self.profiles, clock=clock)
        self._ready = threading.Event()
        self.label_join = LabelJoin(self.pipeline, cfg.ingest.label_join_max_events,
                                    cfg.ingest.label_join_horizon_seconds, clock=clock)
        self.pipeline.listeners.append(self.label_join.on_batch)
        self.inference_log: InferenceLogger | None = None
        if cfg.logs.enabled:  # JSON-lines inference logs
            self.inference_log = InferenceLogger(cfg)
            self.pipeline.listeners.append(self.inference_log)
        ctx = SourceContext(cfg=cfg, pipeline=self.pipeline, label_join=self.label_join, ready=self._ready.is_set)
        self.sources: dict[str, Source] = {spec.name: spec.build(ctx) for spec in SOURCES if spec.enabled(cfg)}
        collectors = [c for src in self.sources.values() for c in src.collectors()]
        self.registry = build_registry(self.pipeline, collectors, cfg.collectors.disabled())
        #: TLS, basic auth and headers from ``web:`` / ``--web.config.file`` (None when unset).
        self.security: WebSecurity | None = web_security(cfg)
        routes = [r for src in self.sources.values() for r in src.routes()]
        sec = self.security
        self.app = ExporterApp(self.registry, ready=self._ready.is_set, routes=routes,
                               authenticate=sec.authenticate if sec and sec.users else None,
                               default_headers=sec.headers if sec else None)
        self.registry.register(self.app.stats)
        if sec is not None:
            self.registry.register(sec)
        host, port = listen_address(listen)
        tls = sec.server_context if sec is not None and sec.context() is not None else None
        self.server = ExporterServer(self.app, host, port, limits, tls=tls,
                                     on_handshake_failure=sec.count_handshake_failure if sec else None)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def ingest_api(self) -> Any:
        return self.sources.get("api")

    @property
    def simulator(self) -> Any:
        return self.sources.get("simulator")

    @property
    def proxy(self) -> Any:
        return self.sources.get("proxy")

    def start(self) -> None:
        self.server.start()
        for src in self.sources.values():
            src.start()
        self._ready.set()
        log.info("exporter started", extra={"address": self.server.address,
                                            "models": [m.name for m in self.cfg.models]})

    def stop(self) -> None:
        self._ready.clear()
        for src in reversed(list(self.sources.values())):
            try:
                src.stop()
            except Exception:
                log.exception("error while stopping a source")
        if self.inference_log is not None:
            self.inference_log.close()
        self.server.stop()
        log.info("exporter stopped")
