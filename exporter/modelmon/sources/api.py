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
bearer token, 413 for a body over ``ingest.max_body_bytes``, 415 for a
``Content-Type`` other than ``application/json`` / ``application/x-ndjson``,
a ``charset`` other than UTF-8 or an unsupported ``Content-Encoding``, 417 for
an ``Expect`` other than ``100-continue`` (before the body is read), 429 when
``ingest.max_concurrent_requests`` bodies are already waiting for or in
processing (one worker takes them in turn; a body is read in full, under
the server's whole-body deadline, before it takes a slot), 503 while the
exporter starts or stops.  Every refusal is counted in
``modelmon_events_rejected_total{source,reason}``: per item for item
problems, once per request for request-level ones.

Decoding and validation are the shared ingest schema (:mod:`modelmon.ingest`):
events become :class:`~modelmon.events.EventBatch` columns decoded in one
typed pass, numerical features as float arrays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..collectors.ingest import IngestCollector
from ..config import Config
from ..ingest import (
    BodyError,
    DecodedBody,
    EventValidator,
    ItemError,
    Malformed,
    Rejection,
    canonical_class,
    label_string,
    regression_value,
    shown_name,
)
from ..labels import LabelJoin
from ..pipeline import Pipeline
from ..web import Route, json_error, json_response
from .guard import Handler, IngestGuard, read_token

log = logging.getLogger(__name__)

EVENTS_PATH = "/api/v1/events"
LABELS_PATH = "/api/v1/labels"
#: Header a client sets to be counted as ``source="client"`` instead of ``api``.
SOURCE_HEADER = "X-Modelmon-Source"
#: Media types a body may have (parameters are allowed; a ``charset`` must be UTF-8).
MEDIA_TYPES = ("application/json", "application/x-ndjson")
LABEL_FIELDS = frozenset({"id", "label", "model"})
#: At most this many refused items are listed in a response (all are counted).
MAX_LISTED = 1000


# --------------------------------------------------------------------------- the API


class IngestAPI:
    """The two ingestion endpoints (the ``api`` source); stateless apart from counters and the join buffer."""

    name = "api"

    def __init__(self, pipeline: Pipeline, cfg: Config, join: LabelJoin, token: str | None = None,
                 ready: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.time):
        self.pipeline = pipeline
        self.cfg = cfg
        self.ing = cfg.ingest
        self.join = join
        self.ready = ready
        self.clock = clock
        self.guard = IngestGuard(pipeline, cfg, token, ready, MEDIA_TYPES)
        self.validator = EventValidator(cfg.models, unknown_feature=self.ing.unknown_feature, clock=clock)
        self._lock = threading.Lock()
        #: Feature values dropped because the feature is not configured, per model.
        self.unknown_features: dict[str, int] = {m.name: 0 for m in cfg.models}

    def reconfigure(self, cfg: Config) -> None:
        """A config reload: validate against the new models (the ingest section itself is unchanged)."""
        self.validator = EventValidator(cfg.models, unknown_feature=self.ing.unknown_feature, clock=self.clock)
        self.unknown_features = {m.name: self.unknown_features.get(m.name, 0) for m in cfg.models}
        self.cfg = cfg

    # ------------------------------------------------------------ source contract
    def routes(self) -> list[Route]:
        return [Route("POST", EVENTS_PATH, self.post_events, "ingest prediction events (JSON array, NDJSON or one object)"),
                Route("POST", LABELS_PATH, self.post_labels, "ground-truth labels for earlier events, by event id")]

    def collectors(self) -> list[Any]:
        return [IngestCollector(self, self.join)]

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.guard.close()

    @property
    def busy(self) -> int:
        """Bodies being decoded and validated now."""
        return self.guard.busy

    @busy.setter
    def busy(self, n: int) -> None:
        self.guard.busy = n

    # ------------------------------------------------------------ plumbing
    @staticmethod
    def _source(req: web.BaseRequest) -> str:
        return "client" if (req.headers.get(SOURCE_HEADER) or "").strip().lower() == "client" else "api"

    async def _guarded(self, req: web.BaseRequest, handle: Handler) -> web.StreamResponse:
        """Token, media type, body, load shedding, decoding (:mod:`.guard`); then ``handle(body, source)``."""
        return await self.guard(req, self._source(req), handle)

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
    async def post_events(self, req: web.BaseRequest) -> web.StreamResponse:
        return await self._guarded(req, self._events)

    def _events(self, body: DecodedBody, source: str) -> web.Response:
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
            return json_response(200, payload)
        if all(r.reason == "unknown_model" for r in res.rejected):
            names = ", ".join(repr(m) for m in sorted(res.unknown_models)[:5])
            if self.ing.unknown_model == "count":
                return json_response(200, payload)
            return json_response(404, {"error": f"unknown model {names} (not in the exporter's config)", **payload})
        index, _, message = res.rejected[0]
        return json_response(400, {"error": f"item {index}: {message}", **payload})

    # ------------------------------------------------------------ labels
    async def post_labels(self, req: web.BaseRequest) -> web.StreamResponse:
        return await self._guarded(req, self._labels)

    def _convert_label(self, model: str, label: Any) -> Any:
        mcfg = self.pipeline.monitors[model].cfg
        try:
            if mcfg.task == "classification":
                return canonical_class(label, "label")
            return regression_value(label, "label")
        except ItemError as exc:
            raise ValueError(str(exc)) from None

    def _labels(self, body: DecodedBody, source: str) -> web.Response:
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
                message = item.message if isinstance(item, Malformed) else "must be a JSON object"
                rejected.append(Rejection(index, "malformed", message))
                continue
            try:
                if item.keys() - LABEL_FIELDS:
                    bad = min(item.keys() - LABEL_FIELDS)
                    raise ItemError("invalid_field", f"{shown_name(bad)}: unknown field (expected id, label, model)")
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
            rejected.append(Rejection(where[pos], "unknown_id",
                                      f"id: no recent event with id {ids[pos][:64]!r} waiting for a label"))
        for pos, message in joined.invalid:
            reason = "non_finite" if "finite" in message else "invalid_field"
            rejected.append(Rejection(where[pos], reason, message))
        rejected.sort()
        self._count_rejections(source, rejected)
        accepted = sum(joined.joined.values())
        payload = {"accepted": accepted, "rejected_count": len(rejected), "rejected": self._listing(rejected)}
        if accepted or not rejected:
            return json_response(200, payload)
        if all(r == "unknown_id" for _, r, _ in rejected):
            return json_response(404, {"error": "no recent event with these ids (unknown, expired or already labelled)",
                                       **payload})
        index, _, message = rejected[0]
        return json_response(400, {"error": f"item {index}: {message}", **payload})


# --------------------------------------------------------------------------- wiring


def build(cfg: Config, pipeline: Pipeline, join: LabelJoin, ready: Callable[[], bool]) -> IngestAPI:
    """The ``api`` source from the config (reads the bearer token; never logs it)."""
    return IngestAPI(pipeline, cfg, join, token=read_token(cfg), ready=ready, clock=pipeline.clock)
