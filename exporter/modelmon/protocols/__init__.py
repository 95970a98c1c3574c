"""Model-server wire protocols turned into modelmon events.

Each module reads one standard format and produces the same event item dicts
that ``POST /api/v1/events`` accepts (see docs/api.md), so validation, counting
and everything downstream stay in one place (the ingest schema):

* :mod:`.kserve_v1` - KServe's v1 prediction protocol (``instances`` /
  ``inputs`` rows, ``predictions``);
* :mod:`.oip_v2` - the Open Inference Protocol (KServe v2, Triton, MLServer,
  Seldon Core 2): typed tensors, Triton's binary tensor extension;
* :mod:`.cloudevents` - KServe's payload logger, which copies each request and
  response to a sink as CloudEvents 1.0.

Nothing here does HTTP or imports the exporter's higher layers; the proxy and
the CloudEvents route call these functions with bytes and headers.  A payload
that cannot be used raises :class:`ProtocolError` with a reason from
:data:`REASONS` (a bounded label value) and a message for the log.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Every reason a payload can be refused for (``reason`` label values).
REASONS = (
    "malformed",  # not JSON, or not the protocol's shape
    "shape_mismatch",  # tensor data does not match its shape, or columns of different lengths
    "unsupported_datatype",
    "unsupported_shape",  # a tensor of more than two dimensions for a feature
    "binary_unsupported",  # a binary tensor modelmon cannot decode (shared memory, bad sizes)
    "unknown_protocol",  # a CloudEvent body that is neither KServe v1 nor OIP v2
)


class ProtocolError(ValueError):
    """A payload that cannot be turned into events; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Mapping:
    """How a model's inputs and outputs sit in a protocol's payloads.

    ``feature_types`` lists the model's features in config order (name ->
    ``numerical`` / ``categorical``).  ``columns`` names the positions of a row
    (KServe v1 list rows, the columns of an OIP tensor); empty means the
    features in config order.  ``features`` maps a feature to a selector
    (OIP: ``input0[:, 3]`` or ``age``); ``prediction`` and ``score`` select
    outputs the same way.  Unset, features are found by name and the first
    output is the prediction (see each protocol module).
    """

    model: str
    feature_types: dict[str, str] = field(default_factory=dict)
    classification: bool = True
    positive_class: str = "1"
    columns: tuple[str, ...] = ()
    features: dict[str, str] = field(default_factory=dict)
    prediction: str = ""
    score: str = ""

    @property
    def row_columns(self) -> tuple[str, ...]:
        return self.columns or tuple(self.feature_types)


def feature_value(kind: str, v: Any) -> Any:
    """A decoded value in the form the ingest schema expects for a feature of
    this type; a value of the wrong type is missing (``None``), as in the proxy."""
    if kind == "numerical":
        if type(v) is bool:
            return float(v)
        return v if type(v) in (int, float) and math.isfinite(v) else None
    if v is None or type(v) is str:
        return v
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) is float and v.is_integer():
        return str(int(v))
    return str(v) if type(v) in (int, float) else None


def output_value(v: Any) -> Any:
    """A prediction as JSON would carry it (numbers, strings, booleans), else ``None``."""
    if type(v) in (str, bool, int):
        return v
    if type(v) is float:
        return v if math.isfinite(v) else None
    return None


def score_value(v: Any) -> float | None:
    if type(v) in (int, float) and math.isfinite(v):
        return float(v)
    return None


def build_events(mapping: Mapping, features: dict[str, list[Any]], predictions: Sequence[Any] | None,
                 scores: Sequence[Any] | None, n: int, base: dict[str, Any],
                 probabilities: Sequence[dict[str, float] | None] | None = None) -> list[dict[str, Any]]:
    """One event item per row: ``base`` (model, version, timestamp, latency,
    error, id) plus the row's features, prediction and score.

    With several rows and a string id, the i-th event's id is ``<id>:<i>``, as
    the dotted-path proxy does, so labels can be posted per row.
    """
    events: list[dict[str, Any]] = []
    kinds = mapping.feature_types
    base_id = base.get("id")
    for i in range(n):
        ev = dict(base)
        if n > 1 and base_id is not None:
            ev["id"] = f"{str(base_id)[:240]}:{i}"
        if features:
            ev["features"] = {name: feature_value(kinds.get(name, "numerical"), col[i]) for name, col in features.items()}
        if predictions is not None:
            p = output_value(predictions[i])
            if p is not None:
                ev["prediction"] = p
        if scores is not None:
            s = score_value(scores[i])
            if s is not None:
                ev["score"] = s
        if probabilities is not None and probabilities[i] is not None:
            ev["probabilities"] = probabilities[i]
        events.append(ev)
    return events


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes | None:
    """``body`` decoded per its ``Content-Encoding`` (gzip, deflate), or ``None``
    when the encoding is another or the decoded body would exceed ``limit`` bytes."""
    enc = (encoding or "").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc not in ("gzip", "x-gzip", "deflate"):
        return None
    d = zlib.decompressobj(16 + zlib.MAX_WBITS if enc != "deflate" else zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error:
        return None
    return None if len(out) > limit or d.unconsumed_tail else out
