"""The ingestion API: ``POST /api/v1/events`` and ``POST /api/v1/labels``.

Model services (directly or through :mod:`modelmon.client`) post what they
served; labels follow when they are known.  Both endpoints take a JSON array
or NDJSON (one JSON object per line).  Every item is validated on its own: a
partly bad batch keeps its good events, and the response lists each refused
item's index, reason and a message naming the field::

    {"accepted": 998, "rejected_count": 2,
     "rejected": [{"index": 3, "reason": "invalid_field", "error": "features.age: must be a number or null"}, ...]}

Status codes: 200 when anything was accepted (or the batch was empty), 400
when nothing was (the first item's problem is the message), 404 when every
item names an unknown model (policy ``reject``), 401 without the configured
bearer token, 413 for a body over ``ingest.max_body_bytes``, 415 for an
unsupported ``Content-Encoding``, 429 when ``ingest.max_concurrent_requests``
are already being processed, 503 while the exporter starts or stops (and,
from the web server, when too many connections are open).  Every
refusal is counted in ``modelmon_events_rejected_total{source,reason}``:
per item for item problems, once per request for request-level ones.

Decoding and validation are the shared ingest schema (:mod:`modelmon.ingest`):
events become :class:`~modelmon.events.EventBatch` columns decoded in one
typed pass, numerical features as float arrays.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from typing import Any, Callable

from ..config import Config, ConfigError
from ..ingest import (
    BodyError,
    BodyLimits,
    BodyTooLarge,
    DecodedBody,
    EventValidator,
    ItemError,
    Malformed,
    Rejection,
    UnsupportedEncoding,
    canonical_class,
    decode_items,
    label_string,
    regression_value,
)
from ..labels import LabelJoin
from ..pipeline import Pipeline
from ..web import ExporterServer, Request, Response, json_error

log = logging.getLogger(__name__)

EVENTS_PATH = "/api/v1/events"
LABELS_PATH = "/api/v1/labels"
#: Header a client sets to be counted as ``source="client"`` instead of ``api``.
SOURCE_HEADER = "X-Modelmon-Source"
LABEL_FIELDS = frozenset({"id", "label", "model"})
#: At most this many refused items are listed in a response (all are counted).
MAX_LISTED = 1000


# --------------------------------------------------------------------------- the API


def read_token(cfg: Config) -> str | None:
    """The bearer token from ``ingest.token_env`` / ``ingest.token_file`` (never logged)."""
    ing = cfg.ingest
    if ing.token_env:
        tok = os.environ.get(ing.token_env, "")
        if not tok.strip():
            raise ConfigError(f"environment variable {ing.token_env} is not set or empty",
                              file=cfg.source or None, field_path="ingest.token_env")
        return tok.strip()
    if ing.token_file:
        path = cfg.resolve_path(ing.token_file)
        try:
            tok = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", file=cfg.source or None,
                              field_path="ingest.token_file") from None
        if not tok:
            raise ConfigError(f"{path} is empty", file=cfg.source or None, field_path="ingest.token_file")
        return tok
    return None


class IngestAPI:
    """The two ingestion endpoints; stateless apart from counters and the join buffer."""

    def __init__(self, pipeline: Pipeline, cfg: Config, join: LabelJoin, token: str | None = None,
                 ready: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.time):
        self.pipeline = pipeline
        self.cfg = cfg
        self.ing = cfg.ingest
        self.join = join
        self._token = token.encode() if token else None
        self.ready = ready
        self.clock = clock
        self.limits = BodyLimits(max_bytes=self.ing.max_body_bytes)
        self.validator = EventValidator(cfg.models, unknown_feature=self.ing.unknown_feature, clock=clock)
        self._slots = threading.BoundedSemaphore(self.ing.max_concurrent_requests)
        self._lock = threading.Lock()
        #: Feature values dropped because the feature is not configured, per model.
        self.unknown_features: dict[str, int] = {m.name: 0 for m in cfg.models}

    def install(self, server: ExporterServer) -> None:
        server.add_route("POST", EVENTS_PATH, self.post_events)
        server.add_route("POST", LABELS_PATH, self.post_labels)

    # ------------------------------------------------------------ plumbing
    def _source(self, req: Request) -> str:
        return "client" if (req.headers.get(SOURCE_HEADER) or "").strip().lower() == "client" else "api"

    def guarded(self, req: Request, handle: Callable[[bytes, str], Response]) -> Response:
        """Auth, load shedding, body limits; then ``handle(body, source)`` (also for other ingestion routes)."""
        source = self._source(req)
        if self._token is not None:
            given = req.headers.get("Authorization") or ""
            scheme, _, cred = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(cred.strip().encode(), self._token):
                self.pipeline.reject(source, "unauthorized")
                return Response(401, {"error": "missing or invalid bearer token"},
                                headers={"WWW-Authenticate": 'Bearer realm="modelmon"', "Connection": "close"})
        if not self.ready():
            self.pipeline.reject(source, "overloaded")
            return Response(503, {"error": "exporter is starting or stopping"},
                            headers={"Retry-After": "1", "Connection": "close"})
        if not self._slots.acquire(timeout=0.05):
            self.pipeline.reject(source, "overloaded")
            return Response(429, {"error": f"too many ingestion requests at once (max {self.ing.max_concurrent_requests})"},
                            headers={"Retry-After": "1", "Connection": "close"})
        try:
            limit = self.ing.max_body_bytes
            raw = req.read_body(limit)
            if raw is None:
                self.pipeline.reject(source, "body_too_large")
                return Response(413, {"error": f"body larger than ingest.max_body_bytes ({limit} bytes)"},
                                headers={"Connection": "close"})
            try:
                body = decode_items(raw, req.headers.get("Content-Encoding"), self.limits)
            except BodyTooLarge:
                self.pipeline.reject(source, "body_too_large")
                return json_error(413, f"decoded body larger than ingest.max_body_bytes ({limit} bytes)")
            except UnsupportedEncoding as exc:
                self.pipeline.reject(source, "malformed")
                return json_error(415, str(exc))
            except BodyError as exc:
                self.pipeline.reject(source, "malformed")
                return json_error(400, str(exc))
            return handle(body, source)
        finally:
            self._slots.release()

    def _count_rejections(self, source: str, rejected: list[Rejection]) -> None:
        counts: dict[str, int] = {}
        for _, reason, _ in rejected:
            counts[reason] = counts.get(reason, 0) + 1
        for reason, n in counts.items():
            self.pipeline.reject(source, reason, n)

    @staticmethod
    def _listing(rejected: list[Rejection]) -> list[dict[str, Any]]:
        return [{"index": i, "reason": r, "error": m} for i, r, m in rejected[:MAX_LISTED]]

    # ------------------------------------------------------------ events
    def post_events(self, req: Request) -> Response:
        return self.guarded(req, self._events)

    def _events(self, body: DecodedBody, source: str) -> Response:
        try:
            res = self.validator.validate(body, source)
        except BodyError as exc:
            self.pipeline.reject(source, "malformed")
            return json_error(400, str(exc))
        for batch in res.batches:
            self.pipeline.submit(batch)
        if res.unknown_features:
            with self._lock:
                for name, n in res.unknown_features.items():
                    self.unknown_features[name] = self.unknown_features.get(name, 0) + n
        self._count_rejections(source, res.rejected)
        payload: dict[str, Any] = {"accepted": res.accepted, "rejected_count": len(res.rejected),
                                   "rejected": self._listing(res.rejected)}
        if res.accepted or not res.rejected:
            return Response(200, payload)
        if all(r.reason == "unknown_model" for r in res.rejected):
            names = ", ".join(repr(m) for m in sorted(res.unknown_models)[:5])
            if self.ing.unknown_model == "count":
                return Response(200, payload)
            return Response(404, {"error": f"unknown model {names} (not in the exporter's config)", **payload})
        index, _, message = res.rejected[0]
        return Response(400, {"error": f"item {index}: {message}", **payload})

    # ------------------------------------------------------------ labels
    def post_labels(self, req: Request) -> Response:
        return self.guarded(req, self._labels)

    def _convert_label(self, model: str, label: Any) -> Any:
        mcfg = self.pipeline.monitors[model].cfg
        try:
            if mcfg.task == "classification":
                return canonical_class(label, "label")
            return regression_value(label, "label")
        except ItemError as exc:
            raise ValueError(str(exc)) from None

    def _labels(self, body: DecodedBody, source: str) -> Response:
        try:
            items = body.items()
        except BodyError as exc:
            self.pipeline.reject(source, "malformed")
            return json_error(400, str(exc))
        rejected: list[Rejection] = []
        ids: list[str] = []
        labels: list[Any] = []
        models: list[str | None] = []
        where: list[int] = []
        for index, item in enumerate(items):
            if type(item) is not dict:
                rejected.append(Rejection(index, "malformed", item.message if isinstance(item, Malformed) else "must be a JSON object"))
                continue
            try:
                if item.keys() - LABEL_FIELDS:
                    bad = sorted(item.keys() - LABEL_FIELDS)[0]
                    raise ItemError("invalid_field", f"{bad}: unknown field (expected id, label, model)")
                if item.get("id") is None:
                    raise ItemError("invalid_field", "id: required")
                if "label" not in item or item["label"] is None:
                    raise ItemError("invalid_field", "label: required")
                id_ = label_string(item["id"], "id")
                model = item.get("model")
                if model is not None:
                    model = label_string(model, "model")
                label = item["label"]
                if type(label) not in (str, int, float, bool):
                    raise ItemError("invalid_field", "label: must be a string, number or boolean")
            except ItemError as exc:
                rejected.append(Rejection(index, exc.reason, str(exc)))
                continue
            ids.append(id_)
            labels.append(label)
            models.append(model)
            where.append(index)
        joined = self.join.join(ids, labels, convert=self._convert_label, models=models)
        for pos in joined.unknown:
            rejected.append(Rejection(where[pos], "unknown_id", f"id: no recent event with id {ids[pos][:64]!r} waiting for a label"))
        for pos, message in joined.invalid:
            reason = "non_finite" if "finite" in message else "invalid_field"
            rejected.append(Rejection(where[pos], reason, message))
        rejected.sort()
        self._count_rejections(source, rejected)
        accepted = sum(joined.joined.values())
        payload = {"accepted": accepted, "rejected_count": len(rejected), "rejected": self._listing(rejected)}
        if accepted or not rejected:
            return Response(200, payload)
        if all(r == "unknown_id" for _, r, _ in rejected):
            return Response(404, {"error": "no recent event with these ids (unknown, expired or already labelled)", **payload})
        index, _, message = rejected[0]
        return Response(400, {"error": f"item {index}: {message}", **payload})


# --------------------------------------------------------------------------- wiring


def install(exporter: Any) -> None:
    """Attach the label join, the ingestion endpoints and (when configured) the
    reverse proxy to an :class:`~modelmon.app.Exporter`."""
    from ..collectors.ingest import IngestCollector

    cfg = exporter.cfg
    token = read_token(cfg) if cfg.ingest.enabled else None
    join = LabelJoin(exporter.pipeline, cfg.ingest.label_join_max_events, cfg.ingest.label_join_horizon_seconds,
                     clock=exporter.pipeline.clock)
    exporter.pipeline.listeners.append(join.on_batch)
    exporter.label_join = join
    proxy = None
    if cfg.proxy.listen_address:
        from .proxy import ProxySource

        proxy = ProxySource(cfg, exporter.pipeline)
        proxy.start()
        exporter.closers.append(proxy.stop)
    exporter.proxy = proxy
    api = None
    if cfg.ingest.enabled:
        api = IngestAPI(exporter.pipeline, cfg, join, token=token, ready=exporter._ready.is_set,
                        clock=exporter.pipeline.clock)
        api.install(exporter.server)
        exporter.server.on_shed = lambda: exporter.pipeline.reject("api", "overloaded")
    exporter.ingest_api = api
    exporter.registry.register(IngestCollector(api, join, proxy))
    if api is not None:
        from ..collectors.cloudevents import CloudEventsCollector
        from .cloudevents import CloudEventsSink

        sink = CloudEventsSink(cfg, api)
        sink.install(exporter.server)
        sink.start()
        exporter.closers.append(sink.stop)
        exporter.registry.register(CloudEventsCollector(sink))
