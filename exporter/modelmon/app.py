"""Wires one exporter process: config -> reference profiles -> pipeline ->
collectors/registry -> HTTP server, plus the sources that feed the pipeline
(built from the :data:`SOURCES` table)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from .collectors import build_registry
from .collectors.inference_log import InferenceLogCollector
from .config import Config, ConfigError, ModelConfig, listen_address
from .datasets import DataError, load_table
from .drift.reference import ReferenceProfile, build_profile
from .estimation.sections import fit_sections, load_estimators
from .inference_log import InferenceLogger
from .labels import LabelJoin
from .pipeline import Pipeline
from .profile_sections import fit_explain_sections, importance_profile, outlier_model
from .reload import ReloadPlan, plan
from .sources import Source, SourceContext, SourceSpec
from .sources import api as api_source
from .sources import cloudevents as cloudevents_source
from .sources.proxy import ProxySource, proxy_model, validate_proxy_config
from .sources.simulator import Simulator, reference_profile
from .web import ExporterApp, ExporterServer, Route, ServerLimits, json_error, json_response
from .webauth import WebSecurity, effective_web_config, web_security

log = logging.getLogger(__name__)

__all__ = ["SOURCES", "Exporter", "check_sources", "listen_address", "load_profile"]

#: Every source the exporter can run, in start order.
SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("simulator", lambda c: c.simulator.enabled,
               lambda ctx: Simulator(ctx.cfg.simulator, ctx.pipeline.submit, clock=ctx.pipeline.clock)),
    SourceSpec("api", lambda c: c.ingest.enabled,
               lambda ctx: api_source.build(ctx.cfg, ctx.pipeline, ctx.label_join, ctx.ready)),
    SourceSpec("cloudevents", lambda c: c.ingest.enabled,
               lambda ctx: cloudevents_source.build(ctx.cfg, ctx.pipeline, ctx.ready)),
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
        if path.suffix.lower() == ".json":  # the same rule as modelmon drift --reference
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
        if self.inference_log is not None:
            collectors.append(InferenceLogCollector(self.inference_log))
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
        #: Builds the config a reload switches to (cli: the file and flags again, checked); None: no reload.
        self.config_loader: Callable[[], tuple[Config, dict[str, ReferenceProfile | None]]] | None = None
        #: Serve POST /-/reload (Prometheus: --web.enable-lifecycle); SIGHUP always reloads.
        self.lifecycle_api = False
        self._reload_lock = threading.Lock()
        #: The web settings in force (a reload compares the new ones with these, not with the file now).
        self._web = effective_web_config(cfg)[0]
        self.reloads = ReloadCollector()
        self.registry.register(self.reloads)
        self.app.add_route(Route("POST", "/-/reload", self._reload_route,
                                 "re-read the config and web config, as SIGHUP does (--web.enable-lifecycle)",
                                 listed=lambda: self.lifecycle_api))

    # ------------------------------------------------------------ reload
    def reload(self, new_cfg: Config, new_profiles: dict[str, ReferenceProfile | None]) -> ReloadPlan:
        """Switch to a checked new config (modelmon.reload): kept models keep
        their counters and windows; raises ConfigError, changing nothing, when
        the new config cannot be applied without a restart."""
        p = plan(self.cfg, new_cfg, self.profiles, new_profiles)
        old_web = self._web
        new_web, _ = effective_web_config(new_cfg)
        if old_web.tls_server_config != new_web.tls_server_config:
            raise ConfigError("TLS settings changed: restart modelmon to apply them (renewed certificate files are "
                              "picked up without one)", file=new_cfg.source or None, field_path="web")
        proxied = proxy_model(self.cfg) if "proxy" in self.sources else None
        if proxied is not None and proxied.name not in p.kept:
            raise ConfigError(f"the proxied model {proxied.name!r} changed: restart modelmon to apply it",
                              file=new_cfg.source or None, field_path="proxy.model")
        sec = web_security(new_cfg)
        p.web_changed = old_web != new_web
        # Everything is checked: switch.
        self.pipeline.reconfigure(new_cfg, new_profiles, set(p.kept))
        for src in self.sources.values():
            reconfigure = getattr(src, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(new_cfg)
        if self.inference_log is not None:  # which features' values each model logs (log_value)
            self.inference_log.logged_features = {m.name: [f.name for f in m.features if f.log_value]
                                                  for m in new_cfg.models}
        if self.security is not None:
            self.registry.unregister(self.security)
        if sec is not None:
            self.registry.register(sec)
        self.security = sec
        self.app.authenticate = sec.authenticate if sec and sec.users else None
        self.app.default_headers = dict(sec.headers) if sec else {}
        self.cfg, self.profiles, self._web = new_cfg, new_profiles, new_web
        return p

    def reload_now(self, trigger: str) -> tuple[bool, dict[str, Any]]:
        """Load the config again with :attr:`config_loader` and switch to it;
        logs what changed, or why the new config was refused (the running one
        stays).  Returns (ok, what changed or the error)."""
        if self.config_loader is None:
            return False, {"error": "this exporter was started without a config to reload"}
        with self._reload_lock:
            try:
                new_cfg, new_profiles = self.config_loader()
                summary = self.reload(new_cfg, new_profiles).summary()
            except (ConfigError, ValueError, OSError) as exc:
                self.reloads.failed()
                log.error("config reload refused, the running config stays",
                          extra={"trigger": trigger, "error": str(exc)})
                return False, {"error": str(exc)}
            self.reloads.succeeded(time.time())
            log.info("config reloaded", extra={"trigger": trigger, **summary})
            return True, summary

    async def _reload_route(self, request: Any) -> Any:
        if not self.lifecycle_api:
            return json_error(403, "Lifecycle API is not enabled (start with --web.enable-lifecycle)")
        loop = asyncio.get_running_loop()
        ok, body = await loop.run_in_executor(None, self.reload_now, "http")
        return json_response(200, body) if ok else json_error(500, f"config reload refused: {body['error']}")

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


class ReloadCollector:
    """Config reload outcome, as Prometheus reports its own::

        modelmon_config_last_reload_successful 1
        modelmon_config_last_reload_success_timestamp_seconds 1.7e9
    """

    def __init__(self) -> None:
        self.ok = True
        self.last_success = time.time()

    def succeeded(self, at: float) -> None:
        self.ok, self.last_success = True, at

    def failed(self) -> None:
        self.ok = False

    def collect(self) -> Any:
        yield GaugeMetricFamily("modelmon_config_last_reload_successful",
                                "Whether the last config reload (SIGHUP, POST /-/reload) succeeded.", value=int(self.ok))
        yield GaugeMetricFamily("modelmon_config_last_reload_success_timestamp_seconds",
                                "When the config was last loaded successfully (start or reload).",
                                value=self.last_success)
