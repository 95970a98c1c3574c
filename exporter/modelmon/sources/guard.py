"""What every ingestion route does before it looks at a body.

In order: the bearer token (``ingest.token_env`` / ``ingest.token_file``,
compared in constant time), readiness, the ``Expect`` field (only
``100-continue``, answered with ``100 Continue`` just before the body is read,
so a refused request's body is never sent), the media type and its
``charset`` (UTF-8 or none: bodies are read as UTF-8 JSON), the whole body within
``ingest.max_body_bytes`` (and the server's whole-body deadline), load
shedding at ``ingest.max_concurrent_requests`` bodies in progress, then
``Content-Encoding`` decoding; the route's handler runs in the worker thread
(one: it takes the bodies in turn) with the decoded body.  Each refusal is answered (401, 503, 417, 415, 413,
429, 400) and counted once in ``modelmon_events_rejected_total{source,reason}``.

Shared by the ingestion API and the KServe CloudEvents sink, so both take the
same token and limits; it is a helper of the sources, not a source.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from ..config import Config, ConfigError
from ..httpfields import expects_continue, foreign_charset, media_type, shown, unmet_expectation
from ..ingest import (
    BodyError,
    BodyLimits,
    BodyTooLarge,
    DecodedBody,
    UnsupportedEncoding,
    decode_items,
)
from ..pipeline import Pipeline
from ..web import BodyTooLarge as BodyOverLimit
from ..web import json_error, read_body

#: A route's work on a decoded body: ``handle(body, source) -> response`` (runs in a worker thread).
Handler = Callable[[DecodedBody, str], web.Response]


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
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}", file=cfg.source or None,
                              field_path="ingest.token_file") from None
        if not tok:
            raise ConfigError(f"{path} is empty", file=cfg.source or None, field_path="ingest.token_file")
        return tok
    return None


class IngestGuard:
    """Token, readiness, media type, body limit, load shedding and decoding for one family of routes.

    ``media_types`` are the accepted ``Content-Type`` values (parameters allowed,
    a ``charset`` only if it is UTF-8); ``None`` accepts any (a route whose body is
    an opaque payload, whose declared type and charset are its sender's business).
    """

    def __init__(self, pipeline: Pipeline, cfg: Config, token: str | None, ready: Callable[[], bool],
                 media_types: tuple[str, ...] | None, thread_name: str = "modelmon-ingest"):
        self.pipeline = pipeline
        self.ing = cfg.ingest
        self._token = token.encode() if token else None
        self.ready = ready
        self.media_types = media_types
        self.limits = BodyLimits(max_bytes=self.ing.max_body_bytes)
        #: Bodies being decoded and handled now (touched on the event loop only).
        self.busy = 0
        # One worker: decoding and validation hold the GIL throughout, so two bodies worked on at once only
        # take turns (and evict each other's data from the CPU caches: ~30 % more CPU per body measured).
        # Up to ``max_concurrent_requests`` bodies wait their turn here; more are refused with 429.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=thread_name)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, req: web.BaseRequest, source: str, handle: Handler) -> web.StreamResponse:
        if self._token is not None:
            given = req.headers.get("Authorization") or ""
            scheme, _, cred = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(cred.strip().encode("utf-8", "surrogatepass"), self._token):
                self.pipeline.reject(source, "unauthorized")
                return json_error(401, "missing or invalid bearer token",
                                  headers={"WWW-Authenticate": 'Bearer realm="modelmon"', "Connection": "close"})
        if not self.ready():
            self.pipeline.reject(source, "overloaded")
            return json_error(503, "exporter is starting or stopping", headers={"Retry-After": "1", "Connection": "close"})
        expectations = req.headers.getall("Expect", [])
        unmet = unmet_expectation(expectations)
        if unmet is not None:  # answered before the body, which is never read
            self.pipeline.reject(source, "malformed")
            resp = json_error(417, f"Expect {shown(unmet)!r} cannot be met: only 100-continue is supported",
                              headers={"Connection": "close"})
            resp.force_close()
            return resp
        if self.media_types is not None:
            refused = self._media_refusal(req.headers.get("Content-Type"))
            if refused is not None:
                self.pipeline.reject(source, "unsupported_media_type")
                return json_error(415, refused, headers={"Connection": "close"})
        limit = self.ing.max_body_bytes
        length = req.content_length
        if expects_continue(expectations) and req.version >= (1, 1) and (length is None or length <= limit):
            # The client holds its body back until told to go on (a body over the limit gets its 413 instead).
            await req.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            req.writer.output_size = 0  # the interim response is not part of the response's size
        try:
            raw = await read_body(req, limit)
        except BodyOverLimit:
            self.pipeline.reject(source, "body_too_large")
            return json_error(413, f"body larger than ingest.max_body_bytes ({limit} bytes)", headers={"Connection": "close"})
        if self.busy >= self.ing.max_concurrent_requests:
            self.pipeline.reject(source, "overloaded")
            return json_error(429, f"too many ingestion requests at once (max {self.ing.max_concurrent_requests})",
                              headers={"Retry-After": "1"})
        self.busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, self._decode_and_handle, raw, req.headers.get("Content-Encoding"), source, handle)
        finally:
            self.busy -= 1

    def _media_refusal(self, content_type: str | None) -> str | None:
        """Why a body of this ``Content-Type`` is refused (the 415 message), or None."""
        assert self.media_types is not None
        accepted = " or ".join(self.media_types)
        mt = media_type(content_type)
        if mt.type not in self.media_types:
            return f"Content-Type {shown(mt.type) or 'none'!r} not accepted: send {accepted}"
        charset = foreign_charset(mt)
        if charset is not None:
            return (f"Content-Type charset {shown(charset)!r} not accepted: bodies are read as UTF-8 "
                    f"(send {accepted} with charset=utf-8 or no charset)")
        return None

    def _decode_and_handle(self, raw: bytes, encoding: str | None, source: str, handle: Handler) -> web.Response:
        limit = self.ing.max_body_bytes
        try:
            body = decode_items(raw, encoding, self.limits)
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
