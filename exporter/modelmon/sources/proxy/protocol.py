"""The extraction step for ``proxy.protocol`` kserve-v1 and oip-v2.

A :class:`ProtocolExtractor` reads the captured bodies with
:mod:`modelmon.protocols` (KServe v1 rows, Open Inference Protocol tensors and
Triton's binary extension) instead of dotted paths, so a standard model
server needs no extraction rules.  The serving part (latency, status, the
version and id headers) is the dotted-path extractor's.  What a protocol
cannot read is counted by reason in :attr:`ProtocolExtractor.failures` and the
part that could be read is kept.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ...config import ModelConfig, ProxyConfig, protocol_mapping
from ...protocols import REASONS, ProtocolError, kserve_v1, oip_v2
from .extract import DottedPathExtractor, Exchange, ExtractionError, decoded_bodies

log = logging.getLogger(__name__)

#: Triton's binary tensor extension: the length of the JSON part of a body.
BINARY_HEADER = "Inference-Header-Content-Length"
EXTRACT = {"kserve-v1": kserve_v1.extract, "oip-v2": oip_v2.extract}


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


class ProtocolExtractor:
    """Events of a KServe v1 or OIP v2 exchange (one per batched row)."""

    capture_request = True
    capture_response = True

    def __init__(self, model: ModelConfig, cfg: ProxyConfig):
        self.protocol = cfg.protocol
        self._extract = EXTRACT[cfg.protocol]
        self.mapping = protocol_mapping(model, cfg.columns, cfg.features, cfg.prediction, cfg.score)
        # Version and id headers, latency and status as for the dotted paths (which are not used here).
        self._serving = DottedPathExtractor(model, dataclasses.replace(cfg, features={}, prediction="", score="", id="",
                                                                       attributions={}))
        self.limit = cfg.max_parse_bytes
        #: Payloads the protocol could not read, by reason (read by the collector).
        self.failures: dict[str, int] = {r: 0 for r in REASONS}

    def serving_event(self, ex: Exchange) -> dict[str, Any]:
        return self._serving.serving_event(ex)

    def events(self, ex: Exchange) -> list[dict[str, Any]]:
        base = self.serving_event(ex)
        try:
            req, resp = decoded_bodies(ex, self.limit)
        except ExtractionError:
            self.failures["malformed"] += 1
            raise
        if ex.error:
            resp = None
        try:
            events, problems = self._extract(
                self.mapping, req, resp, base, status=ex.status,
                request_json_length=_int(ex.request_headers.get(BINARY_HEADER)),
                response_json_length=_int(ex.response_headers.get(BINARY_HEADER)))
        except ProtocolError as exc:
            events, problems = [base], [exc]
        except Exception:  # a decoding bug must not cost the request its record (counted as malformed)
            log.exception("protocol extraction failed", extra={"protocol": self.protocol})
            events, problems = [base], [ProtocolError("malformed", "extraction failed")]
        for p in problems:
            self.failures[p.reason] = self.failures.get(p.reason, 0) + 1
        return events or [base]
