"""KServe's payload logger: CloudEvents 1.0 carrying inference requests and responses.

An InferenceService with ``logger: {mode: all, url: ...}`` copies every
request and every HTTP 200 response to the URL as a CloudEvent in *binary
mode*: the attributes are ``Ce-*`` headers, the body is the raw request or
response body::

    Ce-Specversion: 1.0
    Ce-Id: 6d0b1e0c-...                                  (the same for a request and its response)
    Ce-Type: org.kubeflow.serving.inference.request      (or ...inference.response)
    Ce-Source: http://localhost:9081/
    Ce-Time: 2026-12-01T22:00:00.123456789Z              (request received / response written)
    Ce-Inferenceservicename: fraud
    Ce-Namespace: default
    Ce-Component: predictor                              (or transformer, explainer)
    Ce-Endpoint: default                                 (or canary)
    Ce-Metadata: {"X-Request-Id": ["abc"]}               (the request headers the logger was told to keep)
    Content-Type: application/json

*Structured mode* (``Content-Type: application/cloudevents+json``, the same
attributes as members of one JSON object and the body as ``data`` or
``data_base64``) is read too.

The two halves of an exchange arrive separately, in either order, and a
response only exists for HTTP 200 (the logger never sends errors).
:class:`JoinBuffer` holds each half until its partner arrives, at most
``horizon`` seconds and ``max_pending`` halves; a half that expires alone is
still used (a request gives features, a response predictions) and counted as
lone.  The body is KServe v1 or the Open Inference Protocol; with no request
path in the event, :func:`detect` tells them apart by shape.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Mapping as MappingType
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..httpfields import media_type
from . import Mapping, ProtocolError, kserve_v1, oip_v2

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
#: Headers a binary-mode event must have (CloudEvents HTTP binding, section 3.1.3).
REQUIRED = ("id", "type", "source", "specversion")
#: Extension attributes KServe's logger sets, read from ``Ce-<name>`` headers.
EXTENSIONS = ("inferenceservicename", "namespace", "component", "endpoint", "metadata")
BINARY_HEADER = "inference-header-content-length"


@dataclass
class CloudEvent:
    """One logged request or response."""

    id: str
    kind: str  # "request" or "response"
    time: float | None
    data: bytes
    content_type: str = ""
    inference_service: str = ""
    namespace: str = ""
    component: str = ""
    endpoint: str = ""
    #: Request headers the logger kept (``Ce-Metadata``), lower-cased name -> first value.
    metadata: dict[str, str] = field(default_factory=dict)
    #: When the join buffer took it (its clock), for the horizon.
    arrival: float = 0.0


def parse_time(text: str) -> float | None:
    """An RFC 3339 time (nanoseconds allowed, as Go writes them) as epoch seconds, else ``None``."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _kind(ce_type: str) -> str:
    if ce_type == REQUEST_TYPE:
        return "request"
    if ce_type == RESPONSE_TYPE:
        return "response"
    raise ProtocolError("malformed", f"Ce-Type {ce_type[:100]!r} is not a KServe inference request or response")


def _metadata(text: str) -> dict[str, str]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    out: dict[str, str] = {}
    for k, v in doc.items():
        if isinstance(v, list) and v and type(v[0]) is str:
            out[str(k).lower()] = v[0]
        elif type(v) is str:
            out[str(k).lower()] = v
    return out


def is_structured(content_type: str | None) -> bool:
    """Whether a request with this ``Content-Type`` carries a structured-mode CloudEvent."""
    return media_type(content_type).type == STRUCTURED_CONTENT_TYPE


def parse(headers: MappingType[str, str], body: bytes) -> CloudEvent:
    """A CloudEvent from an HTTP request (binary or structured mode); raises :class:`ProtocolError`."""
    h = {k.lower(): v for k, v in headers.items()}
    ctype = h.get("content-type", "")
    if is_structured(ctype):
        return _structured(body)
    missing = [a for a in REQUIRED if not h.get(f"ce-{a}")]
    if missing:
        raise ProtocolError("malformed", "not a CloudEvent: missing " + ", ".join(f"Ce-{m.capitalize()}" for m in missing))
    attrs = {a: h.get(f"ce-{a}", "") for a in EXTENSIONS}
    return CloudEvent(
        id=h["ce-id"], kind=_kind(h["ce-type"]), time=parse_time(h["ce-time"]) if h.get("ce-time") else None,
        data=body, content_type=ctype, inference_service=attrs["inferenceservicename"], namespace=attrs["namespace"],
        component=attrs["component"], endpoint=attrs["endpoint"],
        metadata=_metadata(attrs["metadata"]) if attrs["metadata"] else {},
    )


def _structured(body: bytes) -> CloudEvent:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("malformed", f"structured CloudEvent is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("malformed", "structured CloudEvent must be a JSON object")
    missing = [a for a in REQUIRED if type(doc.get(a)) is not str or not doc.get(a)]
    if missing:
        raise ProtocolError("malformed", "not a CloudEvent: missing " + ", ".join(missing))
    if "data_base64" in doc:
        try:
            data = base64.b64decode(str(doc["data_base64"]), validate=True)
        except ValueError:
            raise ProtocolError("malformed", "data_base64: not base64") from None
    elif isinstance(doc.get("data"), str):
        data = doc["data"].encode()
    else:
        data = json.dumps(doc.get("data")).encode()
    def attr(name: str) -> str:
        v = doc.get(name)
        return v if type(v) is str else ""
    return CloudEvent(
        id=doc["id"], kind=_kind(doc["type"]), time=parse_time(attr("time")) if attr("time") else None, data=data,
        content_type=attr("datacontenttype"), inference_service=attr("inferenceservicename"),
        namespace=attr("namespace"), component=attr("component"), endpoint=attr("endpoint"),
        metadata=_metadata(attr("metadata")) if attr("metadata") else {},
    )


# --------------------------------------------------------------------------- the join


@dataclass
class Exchange:
    """A request and its response (either may be missing when it expired alone)."""

    request: CloudEvent | None
    response: CloudEvent | None

    @property
    def first(self) -> CloudEvent:
        ev = self.request or self.response
        assert ev is not None
        return ev


class JoinBuffer:
    """Pending halves by ``Ce-Id``, bounded by a horizon, a count and a byte budget.

    :meth:`add` returns the completed exchange when the partner is already
    held; :meth:`expired` hands back halves older than the horizon (and, when
    a bound is crossed, the oldest) as exchanges with one side missing.  A
    second half of the same kind for a held id replaces the first (counted as
    ``duplicates``).
    """

    def __init__(self, horizon_seconds: float, max_pending: int, max_bytes: int,
                 clock: Callable[[], float] = time.monotonic):
        self.horizon = float(horizon_seconds)
        self.max_pending = int(max_pending)
        self.max_bytes = int(max_bytes)
        self.clock = clock
        self._held: OrderedDict[str, CloudEvent] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.duplicates = 0
        self._overflow: list[Exchange] = []

    def __len__(self) -> int:
        return len(self._held)

    @property
    def bytes(self) -> int:
        return self._bytes

    def add(self, ev: CloudEvent) -> Exchange | None:
        with self._lock:
            ev.arrival = self.clock()
            other = self._held.get(ev.id)
            if other is not None and other.kind != ev.kind:
                del self._held[ev.id]
                self._bytes -= len(other.data)
                return Exchange(ev, other) if ev.kind == "request" else Exchange(other, ev)
            if other is not None:
                self.duplicates += 1
                del self._held[ev.id]
                self._bytes -= len(other.data)
            self._held[ev.id] = ev
            self._bytes += len(ev.data)
            while self._held and (len(self._held) > self.max_pending or self._bytes > self.max_bytes):
                _, old = self._held.popitem(last=False)
                self._bytes -= len(old.data)
                self._overflow.append(_alone(old))
            return None

    def expired(self, now: float | None = None) -> list[Exchange]:
        """Halves that waited past the horizon or were pushed out by the bounds, oldest first."""
        now = self.clock() if now is None else now
        with self._lock:
            out, self._overflow = self._overflow, []
            while self._held:
                key, ev = next(iter(self._held.items()))
                if now - ev.arrival < self.horizon:
                    break
                del self._held[key]
                self._bytes -= len(ev.data)
                out.append(_alone(ev))
        return out

    def drain(self) -> list[Exchange]:
        """Everything held, as lone halves (shutdown)."""
        with self._lock:
            out, self._overflow = self._overflow, []
            out += [_alone(ev) for ev in self._held.values()]
            self._held.clear()
            self._bytes = 0
        return out


def _alone(ev: CloudEvent) -> Exchange:
    return Exchange(ev, None) if ev.kind == "request" else Exchange(None, ev)


# --------------------------------------------------------------------------- exchange -> events


def detect(ex: Exchange) -> str:
    """``oip-v2`` or ``kserve-v1`` from the bodies' shape; raises ``unknown_protocol``."""
    for ev, oip, v1 in ((ex.request, oip_v2.looks_like_request, kserve_v1.looks_like_request),
                        (ex.response, oip_v2.looks_like_response, kserve_v1.looks_like_response)):
        if ev is None:
            continue
        if _binary_length(ev) is not None:
            return "oip-v2"
        try:
            doc = json.loads(ev.data)
        except (ValueError, UnicodeDecodeError):
            continue
        if oip(doc):
            return "oip-v2"
        if v1(doc):
            return "kserve-v1"
    raise ProtocolError("unknown_protocol", "body is neither KServe v1 (instances / predictions) nor Open Inference Protocol v2")


def _binary_length(ev: CloudEvent) -> int | None:
    v = ev.metadata.get(BINARY_HEADER)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def exchange_events(mapping: Mapping, ex: Exchange, versions: MappingType[str, str] | None = None
                    ) -> tuple[list[dict[str, Any]], list[ProtocolError]]:
    """The event items of one exchange: one per batched row.

    Timestamp: the request's ``Ce-Time`` (else the response's, else now);
    latency: response time minus request time when both are known; id: the
    ``Ce-Id``; version: ``versions[Ce-Endpoint]`` when mapped, else the OIP
    response's ``model_version`` (else the model's default version).  Bodies of
    neither protocol still give one event (the request was served), with the
    ``unknown_protocol`` problem.
    """
    first = ex.first
    base: dict[str, Any] = {"model": mapping.model, "id": first.id[:256]}
    req_t = ex.request.time if ex.request is not None else None
    resp_t = ex.response.time if ex.response is not None else None
    ts = req_t if req_t is not None else resp_t
    if ts is not None:
        base["timestamp"] = ts
    if req_t is not None and resp_t is not None and resp_t >= req_t:
        base["latency_seconds"] = resp_t - req_t
    version = (versions or {}).get(first.endpoint)
    if version:
        base["version"] = version
    try:
        protocol = detect(ex)
    except ProtocolError as exc:
        return [base], [exc]
    kwargs: dict[str, Any] = {}
    if protocol == "oip-v2":
        if ex.request is not None:
            kwargs["request_json_length"] = _binary_length(ex.request)
        if ex.response is not None:
            kwargs["response_json_length"] = _binary_length(ex.response)
        return oip_v2.extract(mapping, _body(ex.request), _body(ex.response), base, **kwargs)
    return kserve_v1.extract(mapping, _body(ex.request), _body(ex.response), base)


def _body(ev: CloudEvent | None) -> bytes | None:
    return ev.data if ev is not None else None
