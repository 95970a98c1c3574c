"""Structured inference logs: one JSON line per prediction, for log shippers.

The metrics on ``/metrics`` are aggregates; when an incident needs the single
request behind a spike, these logs are where to look.  The logger is a
pipeline listener (``Pipeline.listeners``), so it sees exactly the events that
were accepted, from every source, and nothing else.  One line per event, for
example::

    {"ts": "2024-05-01T12:00:00.123Z", "level": "error", "logger": "modelmon.inference",
     "msg": "prediction failed", "model": "fraud", "version": "2.1.0",
     "request_id": "sha256:5f1c...", "latency_seconds": 0.231, "prediction": null,
     "error": "timeout", "source": "api"}

Loki (promtail ``json`` stage) and Elasticsearch (Filebeat ``ndjson``) read
that without parsing rules; ``ts``/``level``/``logger``/``msg`` match the
exporter's own logs (:mod:`modelmon.log`).

Privacy by default (see docs/security.md): raw feature values are logged only
for features with ``log_value: true``, event attributes only when listed in
``logs.attributes``, and fields named in ``logs.hash_fields`` are replaced by a
salted SHA-256, so logs can still be joined on a request id without holding
it.  The logger never sees HTTP headers, so a bearer token cannot reach it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import logging.handlers
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from .config import Config, ConfigError
from .events import EventBatch

LOGGER_NAME = "modelmon.inference"
#: Top-level fields that may be hashed; ``features.NAME`` and ``attributes.NAME`` too.
HASHABLE = ("request_id", "prediction", "score")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"


def _finite(x: Any) -> Any:
    """JSON has no NaN/Infinity: log them as null rather than emit invalid JSON."""
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    return x


class _LineSink:
    """Writes whole lines to stdout/stderr or a size-rotated file, thread-safely.

    The file case reuses the standard library's ``RotatingFileHandler`` (the
    rename-to-``.1`` scheme logrotate users know); a batch is written as one
    record, so a file can exceed ``max_bytes`` by at most one batch.
    """

    def __init__(self, output: str, max_bytes: int, backup_count: int, stream: TextIO | None = None):
        self.handler: logging.Handler
        if stream is not None:
            self.handler = logging.StreamHandler(stream)
        elif output in ("stdout", "-"):
            self.handler = logging.StreamHandler(sys.stdout)
        elif output == "stderr":
            self.handler = logging.StreamHandler(sys.stderr)
        else:
            self.handler = logging.handlers.RotatingFileHandler(
                output, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True
            )
        self.handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, lines: list[str]) -> None:
        self.handler.handle(logging.makeLogRecord({"msg": "\n".join(lines), "name": LOGGER_NAME}))

    def close(self) -> None:
        self.handler.close()


class InferenceLogger:
    """A pipeline listener writing one JSON line per (sampled) event."""

    def __init__(self, cfg: Config, stream: TextIO | None = None, rng: Callable[[], float] | None = None):
        lc = cfg.logs
        validate_logs_config(cfg)
        self.sample_ratio = lc.sample_ratio
        self.errors_always = lc.errors_always
        self.outliers_always = lc.outliers_always
        self.hash_fields = frozenset(lc.hash_fields)
        self.attributes = list(lc.attributes)
        self.salt = os.environ.get(lc.hash_salt_env, "").encode() if lc.hash_salt_env else b""
        #: model -> features whose raw value may be logged.
        self.logged_features = {m.name: [f.name for f in m.features if f.log_value] for m in cfg.models}
        self.default_version = {m.name: m.version for m in cfg.models}
        self._rng = rng or random.Random().random
        output = lc.output if lc.output in ("stdout", "stderr", "-") else str(cfg.resolve_path(lc.output))
        self.sink = _LineSink(output, lc.max_bytes, lc.backup_count, stream)
        self._lock = threading.Lock()
        self.lines_written = 0

    # ----------------------------------------------------------------- pieces
    def hash(self, value: Any) -> str:
        """``sha256:`` + 16 hex digits of HMAC-SHA256(salt, value): stable, joinable, not reversible
        without the salt (an unsalted hash of a short id can be brute-forced; set ``hash_salt_env``)."""
        digest = hmac.new(self.salt, str(value).encode(), hashlib.sha256).hexdigest()
        return f"sha256:{digest[:16]}"

    def _maybe_hash(self, name: str, value: Any) -> Any:
        if value is None or name not in self.hash_fields:
            return value
        return self.hash(value)

    def sampled(self, request_id: str | None, failed: bool) -> bool:
        """Whether to log an event.  With a request id the decision is a hash of
        the id, so every service sampling the same way keeps the same requests."""
        if failed and self.errors_always:
            return True
        if self.sample_ratio >= 1.0:
            return True
        if self.sample_ratio <= 0.0:
            return False
        if request_id:
            h = int.from_bytes(hashlib.blake2b(str(request_id).encode(), digest_size=8).digest(), "big")
            return h / 2**64 < self.sample_ratio
        return self._rng() < self.sample_ratio

    def record(self, batch: EventBatch, i: int) -> dict[str, Any]:
        """The log record of event ``i`` of ``batch``."""
        error = batch.errors[i]
        out: dict[str, Any] = {
            "ts": _iso(batch.timestamps[i]),
            "level": "error" if error is not None else "info",
            "logger": LOGGER_NAME,
            "msg": "prediction failed" if error is not None else "prediction",
            "model": batch.model,
            "version": batch.versions[i] or self.default_version.get(batch.model) or "unknown",
            "request_id": self._maybe_hash("request_id", batch.ids[i]),
            "latency_seconds": _finite(batch.latency_seconds[i]),
            "prediction": self._maybe_hash("prediction", _finite(batch.predictions[i])),
            "error": error,
            "source": batch.source,
        }
        score = _finite(batch.scores[i])
        if score is not None:
            out["score"] = self._maybe_hash("score", score)
        feats = {}
        for name in self.logged_features.get(batch.model, ()):
            col = batch.features.get(name)
            if col is not None:
                feats[name] = self._maybe_hash(f"features.{name}", _finite(col[i]))
        if feats:
            out["features"] = feats
        if batch.outlying is not None and batch.outlying[i]:
            # Marked so a user can find the outlying inputs; raw values follow the features' log_value.
            out["outlier"] = True
            out["outlier_score"] = _finite(float(batch.outlier_scores[i]))
        attrs = {}
        for name in self.attributes:
            col = batch.attributes.get(name)
            if col is not None and col[i] is not None:
                attrs[name] = self._maybe_hash(f"attributes.{name}", col[i])
        if attrs:
            out["attributes"] = attrs
        return out

    # --------------------------------------------------------------- listener
    def __call__(self, batch: EventBatch) -> None:
        lines = []
        outlying = batch.outlying if self.outliers_always else None
        for i in range(len(batch)):
            if (outlying is not None and outlying[i]) or self.sampled(batch.ids[i], batch.errors[i] is not None):
                lines.append(json.dumps(self.record(batch, i), default=str, separators=(",", ":")))
        if lines:
            self.sink.write(lines)
            with self._lock:
                self.lines_written += len(lines)

    def close(self) -> None:
        self.sink.close()


def validate_logs_config(cfg: Config) -> None:
    """Hash fields must name something that is logged; say which setting is missing."""
    lc = cfg.logs
    logged = {f.name for m in cfg.models for f in m.features if f.log_value}
    for k, name in enumerate(lc.hash_fields):
        path = f"logs.hash_fields[{k}]"
        kind, _, rest = name.partition(".")
        if name in HASHABLE:
            continue
        if kind == "features" and rest:
            if rest not in logged:
                raise ConfigError(f"feature {rest!r} is not logged: set log_value: true on it to log it hashed",
                                  file=cfg.source or None, field_path=path)
            continue
        if kind == "attributes" and rest:
            if rest not in lc.attributes:
                raise ConfigError(f"attribute {rest!r} is not logged: add it to logs.attributes",
                                  file=cfg.source or None, field_path=path)
            continue
        raise ConfigError(f"must be one of {', '.join(HASHABLE)}, features.NAME or attributes.NAME",
                          file=cfg.source or None, field_path=path)
    if lc.enabled and lc.output not in ("stdout", "stderr", "-"):
        path = cfg.resolve_path(lc.output)
        problem = ("is a directory, not a file" if path.is_dir()
                   else f"directory {path.parent} does not exist" if not path.parent.is_dir() else None)
        if problem is not None:  # else every batch would print a logging traceback and lose its lines
            raise ConfigError(f"{path}: {problem}", file=cfg.source or None, field_path="logs.output")
    if lc.hash_fields and lc.hash_salt_env and lc.hash_salt_env not in os.environ:
        raise ConfigError(f"environment variable {lc.hash_salt_env} (the hash salt) is not set",
                          file=cfg.source or None, field_path="logs.hash_salt_env")
