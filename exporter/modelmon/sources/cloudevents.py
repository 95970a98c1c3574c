"""The KServe payload-logger sink: ``POST /api/v1/cloudevents``.

Point an InferenceService's ``logger.url`` here.  Each CloudEvent is parsed
(:mod:`modelmon.protocols.cloudevents`), its InferenceService mapped to a
configured model (``cloudevents.services``, else the model of the same name),
and held in a join buffer until its partner arrives; the joined exchange
becomes one event item per batched row and goes through the ingestion API's
validation as ``source="cloudevents"``.  A half whose partner does not come
within ``cloudevents.join_horizon`` is used alone (a background thread sweeps
the buffer every second) and counted.

Answers: 200 (taken: joined, or held for its partner), 400 for a body that is
not a KServe inference CloudEvent, 404 for an InferenceService that maps to
no model, plus the ingestion routes' own 401 / 413 / 415 / 429 / 503
(:mod:`.guard`: the same token and limits as ``/api/v1/events``; any
``Content-Type``, since the body is the logged payload, whose declared charset
is the served request's), and 415 for a structured-mode event (the envelope is
read as JSON here) whose ``charset`` is not UTF-8.  The logger does not retry,
so a refusal is final: every one is counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..collectors.cloudevents import CloudEventsCollector
from ..config import (
    CloudEventsServiceConfig,
    Config,
    cloudevents_model,
    protocol_mapping,
)
from ..httpfields import foreign_charset, media_type, shown
from ..ingest import DecodedBody, EventValidator
from ..pipeline import Pipeline
from ..protocols import Mapping, ProtocolError
from ..protocols import cloudevents as ce
from ..web import Route, json_error, json_response
from .guard import IngestGuard, read_token

log = logging.getLogger(__name__)

PATH = "/api/v1/cloudevents"
SOURCE = "cloudevents"
SWEEP_INTERVAL = 1.0
#: Values of the ``reason`` label of ``modelmon_cloudevents_refused_total``.
REFUSED_REASONS = ("malformed", "unknown_model", "unknown_protocol", "shape_mismatch", "unsupported_datatype",
                   "unsupported_shape", "binary_unsupported")


class _Target:
    """A model fed by one InferenceService: its protocol mapping and endpoint -> version map."""

    def __init__(self, mapping: Mapping, endpoints: dict[str, str]):
        self.mapping = mapping
        self.endpoints = endpoints


class CloudEventsSink:
    """The ``cloudevents`` source: joins logged requests and responses into validated events."""

    name = SOURCE

    def __init__(self, cfg: Config, pipeline: Pipeline, token: str | None = None,
                 ready: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg.cloudevents
        self.pipeline = pipeline
        self.guard = IngestGuard(pipeline, cfg, token, ready, media_types=None, thread_name="modelmon-cloudevents")
        self.validator = EventValidator(cfg.models, unknown_feature=cfg.ingest.unknown_feature, clock=pipeline.clock)
        self.buffer = ce.JoinBuffer(self.cfg.join_horizon_seconds, self.cfg.max_pending, self.cfg.max_pending_bytes,
                                    clock=clock)
        self._targets = self._targets_of(cfg)
        self._lock = threading.Lock()
        #: CloudEvents received, by ``request`` / ``response``.
        self.received = {"request": 0, "response": 0}
        #: Exchanges used without their other half (expired or pushed out), by the half that came.
        self.unpaired = {"request": 0, "response": 0}
        self.refused = {r: 0 for r in REFUSED_REASONS}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reconfigure(self, cfg: Config) -> None:
        """A config reload: the new models and services; the join buffer keeps what it holds
        (its bounds and horizon take the new values)."""
        self.validator = EventValidator(cfg.models, unknown_feature=cfg.ingest.unknown_feature,
                                        clock=self.pipeline.clock)
        self._targets = self._targets_of(cfg)
        self.cfg = c = cfg.cloudevents
        self.buffer.horizon, self.buffer.max_pending, self.buffer.max_bytes = (
            c.join_horizon_seconds, c.max_pending, c.max_pending_bytes)

    @classmethod
    def _targets_of(cls, cfg: Config) -> dict[tuple[str, str], _Target]:
        """(InferenceService, namespace) -> target; a model's own name (any namespace) unless mapped."""
        targets: dict[tuple[str, str], _Target] = {}
        for svc in cfg.cloudevents.services:
            model = cloudevents_model(cfg, svc)
            assert model is not None  # checked by the config loader
            targets[(svc.inference_service, svc.namespace)] = cls._target(model, svc)
        for model in cfg.models:
            key = (model.name, "")
            if key not in targets:
                targets[key] = cls._target(model, CloudEventsServiceConfig(inference_service=model.name))
        return targets

    @staticmethod
    def _target(model: Any, svc: CloudEventsServiceConfig) -> _Target:
        return _Target(protocol_mapping(model, svc.columns, svc.features, svc.prediction, svc.score),
                       dict(svc.endpoints))

    # ------------------------------------------------------------ source contract
    def routes(self) -> list[Route]:
        return [Route("POST", PATH, self.post, "KServe payload-logger sink: inference CloudEvents become events")]

    def collectors(self) -> list[Any]:
        return [CloudEventsCollector(self)]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._sweeper, name="modelmon-cloudevents", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._use(self.buffer.drain())
        self.guard.close()

    def _sweeper(self) -> None:
        while not self._stop.wait(SWEEP_INTERVAL):
            try:
                self.sweep()
            except Exception:  # keep sweeping: one bad exchange must not stop the sink
                log.exception("cloudevents sweep failed")

    def sweep(self) -> int:
        """Use the halves whose partner did not come in time; returns how many events were accepted."""
        return self._use(self.buffer.expired())

    # ------------------------------------------------------------ HTTP
    async def post(self, req: web.BaseRequest) -> web.StreamResponse:
        # The body is the logged payload (any bytes, Triton's binary extension included), read here.
        headers = dict(req.headers.items())

        def handle(body: DecodedBody, _source: str) -> web.Response:
            return self._handle(headers, body.data)

        return await self.guard(req, SOURCE, handle)

    def target(self, ev: ce.CloudEvent) -> _Target | None:
        return self._targets.get((ev.inference_service, ev.namespace)) or self._targets.get((ev.inference_service, ""))

    def _refuse(self, reason: str, status: int, message: str) -> web.Response:
        with self._lock:
            self.refused[reason] = self.refused.get(reason, 0) + 1
        return json_error(status, message)

    def _handle(self, headers: dict[str, str], body: bytes) -> web.Response:
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        charset = foreign_charset(media_type(ctype)) if ce.is_structured(ctype) else None
        if charset is not None:
            return self._refuse("malformed", 415, f"structured CloudEvent with charset {shown(charset)!r}: "
                                "the envelope is read as UTF-8 JSON (send charset=utf-8 or no charset)")
        try:
            ev = ce.parse(headers, body)
        except ProtocolError as exc:
            return self._refuse(exc.reason, 400, str(exc))
        if self.target(ev) is None:
            name = ev.inference_service[:64]
            return self._refuse("unknown_model", 404, f"InferenceService {name!r} maps to no configured model "
                                "(add it to cloudevents.services or name a model like it)")
        with self._lock:
            self.received[ev.kind] += 1
        exchange = self.buffer.add(ev)
        accepted = self._use([exchange] if exchange is not None else [])
        accepted += self.sweep()
        return json_response(200, {"accepted": accepted, "joined": exchange is not None})

    def _use(self, exchanges: list[ce.Exchange]) -> int:
        """Events of these exchanges into the pipeline (via the ingestion API's validation)."""
        items: list[dict[str, Any]] = []
        for ex in exchanges:
            if ex.request is None or ex.response is None:
                with self._lock:
                    self.unpaired[ex.first.kind] += 1
            target = self.target(ex.first)
            if target is None:
                continue
            try:
                events, problems = ce.exchange_events(target.mapping, ex, target.endpoints)
            except ProtocolError as exc:
                events, problems = [], [exc]
            for p in problems:
                with self._lock:
                    self.refused[p.reason] = self.refused.get(p.reason, 0) + 1
            items += events
        if not items:
            return 0
        res = self.validator.validate_items(items, SOURCE)
        for batch in res.batches:
            self.pipeline.submit(batch)
        counts: dict[str, int] = {}
        for r in res.rejected:
            counts[r.reason] = counts.get(r.reason, 0) + 1
        for reason, n in counts.items():
            self.pipeline.reject(SOURCE, reason, n)
        return int(res.accepted)


def build(cfg: Config, pipeline: Pipeline, ready: Callable[[], bool]) -> CloudEventsSink:
    """The ``cloudevents`` source from the config (the ingestion token applies to it too)."""
    return CloudEventsSink(cfg, pipeline, token=read_token(cfg), ready=ready)
