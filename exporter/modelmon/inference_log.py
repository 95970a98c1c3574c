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

A write that fails (disk full, permission denied, the directory gone) loses
that batch's lines only: the events have already reached the monitors, the
failure is counted (``modelmon_inference_log_write_failures_total``, the lines
in ``modelmon_inference_log_lines_dropped_total``) and logged at most once a
minute, and the next batch tries again (a file is reopened, so a directory
that comes back is written to again).  A file removed or renamed under the
logger (logrotate without ``copytruncate``) is noticed at the next batch and
written afresh, not to the unlinked inode.
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

log = logging.getLogger(__name__)

LOGGER_NAME = "modelmon.inference"
#: Write failures are logged at most once per this many seconds (each is counted).
FAILURE_LOG_INTERVAL = 60.0
#: Top-level fields that may be hashed; ``features.NAME`` and ``attributes.NAME`` too.
HASHABLE = ("request_id", "prediction", "score")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"


def _finite(x: Any) -> Any:
    """JSON has no NaN/Infinity: log them as null rather than emit invalid JSON."""
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    return x


class _Raising(logging.Handler):
    """The standard handlers swallow a failed write (and print a traceback to stderr
    for every record); these hand it to the sink instead, which counts it."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - the logging API's name
        exc = sys.exc_info()[1]
        if exc is not None:
            raise exc


class _RaisingStream(_Raising, logging.StreamHandler):
    pass


class _RaisingRotatingFile(_Raising, logging.handlers.RotatingFileHandler):
    pass


class _LineSink:
    """Writes whole lines to stdout/stderr or a size-rotated file, thread-safely.

    The file case reuses the standard library's ``RotatingFileHandler`` (the
    rename-to-``.1`` scheme logrotate users know); a batch is written as one
    record, so a file can exceed ``max_bytes`` by at most one batch.
    :meth:`write` raises the ``OSError`` of a failed write.
    """

    def __init__(self, output: str, max_bytes: int, backup_count: int, stream: TextIO | None = None):
        self.handler: logging.Handler
        self.is_file = False
        if stream is not None:
            self.handler = _RaisingStream(stream)
        elif output in ("stdout", "-"):
            self.handler = _RaisingStream(sys.stdout)
        elif output == "stderr":
            self.handler = _RaisingStream(sys.stderr)
        else:
            self.is_file = True
            self.handler = _RaisingRotatingFile(
                output, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True
            )
        self.handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, lines: list[str]) -> None:
        if self.is_file:
            self._reopen_if_moved()
        try:
            self.handler.handle(logging.makeLogRecord({"msg": "\n".join(lines), "name": LOGGER_NAME}))
        except (OSError, ValueError):
            if self.is_file:  # drop what the failed write left buffered; the next write reopens the file
                try:
                    self.handler.close()
                except (OSError, ValueError):
                    pass
            raise

    def _reopen_if_moved(self) -> None:
        """Start a new file when the open one was removed or renamed (logrotate without
        ``copytruncate``, an operator's ``rm``): Linux would go on writing to the old inode
        without an error, and every line would be lost to the shipper (as ``WatchedFileHandler``)."""
        handler = self.handler
        assert isinstance(handler, logging.FileHandler)
        stream = handler.stream
        if stream is None:
            return
        try:
            on_disk = os.stat(handler.baseFilename)
            open_now = os.fstat(stream.fileno())
        except (OSError, ValueError):
            moved = True
        else:
            moved = (on_disk.st_dev, on_disk.st_ino) != (open_now.st_dev, open_now.st_ino)
        if moved:
            try:
                handler.close()  # opened again (delay=True) by the next record
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        try:
            self.handler.close()
        except (OSError, ValueError):
            pass


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
        #: Writes (one per batch) that failed, and the lines they lost.
        self.write_failures = 0
        self.lines_dropped = 0
        self._clock = time.monotonic
        self._last_failure_log: float | None = None
        self._failures_unlogged = 0

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
            values = batch.attributes.get(name)
            if values is not None and values[i] is not None:
                attrs[name] = self._maybe_hash(f"attributes.{name}", values[i])
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
        if not lines:
            return
        try:
            self.sink.write(lines)
        except (OSError, ValueError) as exc:  # ValueError: a stream that was closed under us
            self._write_failed(exc, len(lines))
            return
        with self._lock:
            self.lines_written += len(lines)

    def _write_failed(self, exc: BaseException, n: int) -> None:
        """Count a failed write; log it unless one was logged within :data:`FAILURE_LOG_INTERVAL`."""
        now = self._clock()
        with self._lock:
            self.write_failures += 1
            self.lines_dropped += n
            self._failures_unlogged += 1
            if self._last_failure_log is not None and now - self._last_failure_log < FAILURE_LOG_INTERVAL:
                return
            self._last_failure_log, failures, self._failures_unlogged = now, self._failures_unlogged, 0
        log.warning("inference log write failed; the lines of %d batch(es) were dropped (counted in "
                    "modelmon_inference_log_write_failures_total; logged at most every %.0f s)",
                    failures, FAILURE_LOG_INTERVAL, extra={"error": str(exc) or type(exc).__name__})

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
        out = cfg.resolve_path(lc.output)
        problem = ("is a directory, not a file" if out.is_dir()
                   else f"directory {out.parent} does not exist" if not out.parent.is_dir() else None)
        if problem is not None:  # else every batch would print a logging traceback and lose its lines
            raise ConfigError(f"{out}: {problem}", file=cfg.source or None, field_path="logs.output")
    if lc.hash_fields and lc.hash_salt_env and lc.hash_salt_env not in os.environ:
        raise ConfigError(f"environment variable {lc.hash_salt_env} (the hash salt) is not set",
                          file=cfg.source or None, field_path="logs.hash_salt_env")
