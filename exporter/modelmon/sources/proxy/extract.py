"""From one proxied exchange to event items: the step a protocol plugs into.

The transport (:mod:`.transport`) knows nothing about models: per request it
hands over an :class:`Exchange` (timing, status, headers and, when the
extractor asked for them, the JSON bodies captured up to
``proxy.max_parse_bytes``).  An :class:`Extractor` turns that into plain event
items (``{"model": ..., "features": {...}, "prediction": ...}``), which the
ingest schema then validates like any other source's.  Extraction runs on the
recorder's thread, never on the request path.

:class:`DottedPathExtractor` is the configurable default: features and the id
from the request body, prediction and score from the response body, by the
dotted paths of :mod:`.paths`, and per-feature attributions (explanations
served with the prediction) from the response body.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ...config import ModelConfig, ProxyConfig
from ...ingest import MAX_LABEL_LENGTH, is_label_safe
from ...ingest import loads as json_loads
from ...protocols import decompress
from .paths import JsonPath, PathError

#: Longest version string taken from a response header.
MAX_VERSION = 128


@dataclass(slots=True)
class Exchange:
    """One proxied request as the transport saw it."""

    #: Wall-clock time the request arrived (seconds since the epoch).
    timestamp: float
    #: Seconds from the request's arrival to the end of the response (or the failure).
    latency: float
    method: str
    #: Path and query as the client sent them.
    path: str
    #: Upstream status; 502/504 when the proxy answered for an unreachable or slow upstream.
    status: int
    #: ``None``, ``"error"`` (upstream 5xx), ``"timeout"`` or ``"upstream"`` (unreachable, broke off).
    error: str | None
    request_headers: Mapping[str, str]
    response_headers: Mapping[str, str]
    #: Complete JSON bodies, captured only when the extractor asks for them and they fit.
    request_body: bytes | None = None
    response_body: bytes | None = None


class ExtractionError(ValueError):
    """The bodies did not yield events (bad JSON, batch paths of different lengths)."""


class Extractor(Protocol):
    """What the proxy needs from a protocol: which bodies to capture, and the events."""

    #: Capture JSON request / response bodies for :meth:`events`.
    capture_request: bool
    capture_response: bool

    def serving_event(self, ex: Exchange) -> dict[str, Any]:
        """The one event recorded when extraction fails: model, version, id, latency, error."""

    def events(self, ex: Exchange) -> list[dict[str, Any]]:
        """The exchange's event items; raises :class:`ExtractionError` when the bodies do not fit."""


def label_safe(value: str, limit: int) -> str | None:
    """``value`` cut to ``limit`` characters, or ``None`` when the ingest schema's label rule
    refuses it (header values keep undecodable bytes as lone surrogates)."""
    value = value[:limit]
    return value if is_label_safe(value) else None


def loads(data: bytes) -> Any:
    """A captured body as JSON, or :class:`ExtractionError` (deep nesting included)."""
    try:
        return json_loads(data)
    except (ValueError, RecursionError) as exc:
        raise ExtractionError(f"invalid JSON: {exc}") from None


def decoded_bodies(ex: Exchange, limit: int) -> tuple[bytes | None, bytes | None]:
    """The captured bodies with their ``Content-Encoding`` (gzip, deflate) undone: the proxy
    forwards bodies as they came, so what it captured may be compressed (MLServer gzips
    large answers).  Raises :class:`ExtractionError` for one that cannot be decoded within ``limit``."""
    out: list[bytes | None] = []
    for body, headers in ((ex.request_body, ex.request_headers), (ex.response_body, ex.response_headers)):
        if body is not None:
            decoded = decompress(body, headers.get("Content-Encoding"), limit)
            if decoded is None:
                raise ExtractionError(f"body with Content-Encoding {headers.get('Content-Encoding')!r} "
                                      f"not decodable within {limit} bytes")
            body = decoded
        out.append(body)
    return out[0], out[1]


class DottedPathExtractor:
    """Features, id, prediction and score at configured dotted paths."""

    def __init__(self, model: ModelConfig, cfg: ProxyConfig):
        self.model = model.name
        self.version = cfg.version
        self.version_header = cfg.version_header
        self.id_header = cfg.id_header
        self.features = {name: JsonPath(path) for name, path in cfg.features.items()}
        self.id_path = JsonPath(cfg.id) if cfg.id else None
        self.prediction = JsonPath(cfg.prediction) if cfg.prediction else None
        self.score = JsonPath(cfg.score) if cfg.score else None
        self.attributions = {name: JsonPath(path) for name, path in cfg.attributions.items()}
        self.numerical = {f.name for f in model.features if f.type == "numerical"}
        self.classification = model.task == "classification"
        self.capture_request = bool(self.features or self.id_path)
        self.capture_response = bool(self.prediction or self.score or self.attributions)
        self.limit = cfg.max_parse_bytes

    def serving_event(self, ex: Exchange) -> dict[str, Any]:
        base: dict[str, Any] = {"model": self.model, "timestamp": ex.timestamp, "latency_seconds": ex.latency}
        if ex.error:
            base["error"] = ex.error
        version = self.version
        if self.version_header:
            sent = ex.response_headers.get(self.version_header)
            if sent:
                version = label_safe(sent, MAX_VERSION) or version
        if version:
            base["version"] = version
        if self.id_header:
            rid = ex.request_headers.get(self.id_header)
            if rid:
                rid = label_safe(rid, MAX_LABEL_LENGTH)
                if rid:
                    base["id"] = rid
        return base

    def events(self, ex: Exchange) -> list[dict[str, Any]]:
        base = self.serving_event(ex)
        if not (self.capture_request or self.capture_response):
            return [base]
        req_body, resp_body = decoded_bodies(ex, self.limit)
        columns = self._columns(req_body, None if ex.error else resp_body)
        n = max((len(v) for v in columns.values() if isinstance(v, list)), default=1)
        if n == 0:
            return [base]
        if any(isinstance(v, list) and len(v) != n for v in columns.values()):
            raise ExtractionError("[*] paths of different lengths")
        header_id = base.get("id")
        events = []
        for i in range(n):
            ev = dict(base)
            if n > 1 and header_id:
                ev["id"] = f"{header_id[:240]}:{i}"
            feats = {}
            attributions = {}
            for key, col in columns.items():
                v = col[i] if isinstance(col, list) else col
                if key == "__id":
                    if type(v) is str:
                        v = label_safe(v, MAX_LABEL_LENGTH)
                    if v is not None and type(v) in (str, int):
                        ev["id"] = str(v)[:MAX_LABEL_LENGTH]
                elif key == "__prediction":
                    ev["prediction"] = self._prediction(v)
                elif key == "__score":
                    ev["score"] = _finite(v)
                elif key.startswith("__attribution."):
                    attributions[key.partition(".")[2]] = _finite(v)
                else:
                    feats[key] = self._feature(key, v)
            if feats:
                ev["features"] = feats
            if attributions:
                ev["attributions"] = attributions
            events.append(ev)
        return events

    def _columns(self, req_body: bytes | None, resp_body: bytes | None) -> dict[str, Any]:
        cols: dict[str, Any] = {}
        try:
            if self.capture_request and req_body:
                doc = loads(req_body)
                for name, path in self.features.items():
                    cols[name] = path.extract(doc)
                if self.id_path is not None:
                    cols["__id"] = self.id_path.extract(doc)
            if self.capture_response and resp_body:
                doc = loads(resp_body)
                if self.prediction is not None:
                    cols["__prediction"] = self.prediction.extract(doc)
                if self.score is not None:
                    cols["__score"] = self.score.extract(doc)
                for name, path in self.attributions.items():
                    cols[f"__attribution.{name}"] = path.extract(doc)
        except PathError as exc:  # pragma: no cover - paths are checked with the config
            raise ExtractionError(str(exc)) from None
        return cols

    def _feature(self, name: str, v: Any) -> Any:
        if name in self.numerical:
            return _finite(v)
        if v is None or type(v) is str:
            return v
        return str(v).lower() if type(v) is bool else (str(v) if type(v) in (int, float) else None)

    def _prediction(self, v: Any) -> Any:
        if self.classification:
            if type(v) is bool:
                return "1" if v else "0"
            if type(v) is float:
                return (str(int(v)) if v.is_integer() else repr(v)) if math.isfinite(v) else None
            return v if type(v) in (str, int) else None
        return _finite(v)


def _finite(v: Any) -> float | int | None:
    return v if type(v) in (int, float) and math.isfinite(v) else None
