"""TLS and basic auth for the exporter's HTTP server, configured like every
other Prometheus exporter: the exporter-toolkit web config file.

    # web.yml, passed with --web.config.file (or inline under `web:` in modelmon.yml)
    tls_server_config:
      cert_file: /etc/modelmon/tls/tls.crt
      key_file: /etc/modelmon/tls/tls.key
      min_version: TLS12
    basic_auth_users:
      prometheus: $2b$10$...          # bcrypt hash, e.g. htpasswd -nBC 10 prometheus
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000

Reusing that format means Prometheus operators already know it and one file
can serve node_exporter and modelmon alike.  What is not supported (HTTP/2,
the ``cert``/``key`` inline PEM forms, cipher lists, ``RequestClientCert``)
is rejected as an unknown field or choice, never silently ignored.

Where it applies:

- TLS: every connection, through an ``ssl.SSLContext``.  Handshakes run on
  the server's event loop within the request-head deadline, so a slow client
  cannot stall the others; the certificate is reloaded when its file changes
  (cert-manager rotations).
- Basic auth: every path except ``/-/healthy`` and ``/-/ready`` (probes learn
  nothing from them) and, when the ingestion API has a bearer token
  (``ingest.token_env``/``token_file``), ``/api/`` paths, which that token
  protects (one ``Authorization`` header cannot carry both).
- bcrypt runs in a thread of its own, never on the event loop; verified
  credentials are cached, so a scrape every few seconds costs one bcrypt per
  password change.  Passwords over bcrypt's 72 bytes are refused as invalid.
  A client (address) with more than ``MAX_FAILURES`` failed attempts in
  ``FAILURE_WINDOW_SECONDS`` gets 429 without bcrypt running, as does every
  client while ``MAX_PENDING_CHECKS`` checks wait; a scraper whose
  credentials are cached is never throttled.
- Failures are counted: ``modelmon_web_auth_failures_total{reason}``
  (``missing``, ``invalid``, ``throttled``) and
  ``modelmon_web_tls_handshake_failures_total``.

bcrypt is an optional extra (``pip install 'modelmon[security]'``), needed
only when ``basic_auth_users`` is set.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, Metric

from .config import Config, ConfigError, WebConfig, build_dataclass

log = logging.getLogger(__name__)

#: Paths that never need credentials (probes).
OPEN_PATHS = frozenset({"/-/healthy", "/-/ready"})
BCRYPT_RE = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
AUTH_CACHE_SIZE = 64
AUTH_REASONS = ("missing", "invalid", "throttled")
#: bcrypt only looks at the first 72 bytes of a password; longer ones are refused.
BCRYPT_MAX_PASSWORD_BYTES = 72
#: Failed attempts per client address within the window before it is answered 429 without bcrypt.
MAX_FAILURES = 10
FAILURE_WINDOW_SECONDS = 60.0
#: bcrypt checks waiting at once (one runs at a time); beyond, 429 without bcrypt.
MAX_PENDING_CHECKS = 8
_TRACKED_CLIENTS = 10_000


def load_web_config_file(path: str | Path) -> WebConfig:
    """Read an exporter-toolkit web config file; errors name the file and field.
    Relative paths inside it are relative to the file, as in the toolkit."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(p)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", file=str(p)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=str(p)) from None
    if isinstance(data, dict) and "config_file" in data:
        raise ConfigError("unknown field (a web config file cannot point to another)", file=str(p), field_path="config_file")
    try:
        web = build_dataclass(WebConfig, data)
    except ConfigError as exc:
        raise ConfigError(exc.reason, file=str(p), field_path=exc.field_path) from None
    tls = web.tls_server_config
    for attr in ("cert_file", "key_file", "client_ca_file"):
        value = getattr(tls, attr)
        if value and not Path(value).is_absolute():
            setattr(tls, attr, str(p.parent / value))
    return web


def effective_web_config(cfg: Config) -> tuple[WebConfig, str]:
    """The web settings in force and the file they came from (for error messages)."""
    web = cfg.web
    if not web.config_file:
        return web, cfg.source
    inline = WebConfig(config_file=web.config_file)
    if web != inline:
        raise ConfigError("set either web.config_file (or --web.config.file) or inline web settings, not both",
                          file=cfg.source or None, field_path="web")
    path = cfg.resolve_path(web.config_file)
    loaded = load_web_config_file(path)
    loaded.config_file = str(path)
    return loaded, str(path)


class WebSecurity:
    """TLS context, basic-auth check and failure counters for one server."""

    def __init__(self, web: WebConfig, source: str = "", resolve: Any = None, bearer_paths: tuple[str, ...] = (),
                 field_prefix: str = "web."):
        self.source = source
        self.field_prefix = field_prefix
        self._resolve = resolve or (lambda p: Path(p))
        self.bearer_paths = bearer_paths
        self.headers = self._check_headers(web.http_server_config.headers)
        self.users = self._check_users(web.basic_auth_users)
        self.tls = web.tls_server_config
        self._ctx: ssl.SSLContext | None = None
        self._tls_files: list[Path] = []
        self._tls_mtimes: list[float] = []
        self._lock = threading.Lock()
        self._ok_cache: OrderedDict[bytes, None] = OrderedDict()
        self.auth_failures = dict.fromkeys(AUTH_REASONS, 0)
        self.handshake_failures = 0
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._pending = 0
        self._bcrypt_pool: ThreadPoolExecutor | None = None
        self._bcrypt: Any = None
        self._dummy_hash = b""
        if self.users:
            try:
                import bcrypt
            except ImportError:
                raise self._error("basic_auth_users needs bcrypt: pip install 'modelmon[security]'", "basic_auth_users") from None
            self._bcrypt = bcrypt
            # Unknown users are checked against this, so response time does not reveal which users exist.
            cost = int(next(iter(self.users.values()))[4:6])
            self._dummy_hash = bcrypt.hashpw(b"modelmon-dummy", bcrypt.gensalt(cost))
        if self.tls.cert_file or self.tls.key_file:
            if not (self.tls.cert_file and self.tls.key_file):
                raise self._error("cert_file and key_file must be set together", "tls_server_config")
            if self.tls.client_auth_type != "NoClientCert" and not self.tls.client_ca_file:
                raise self._error(f"client_auth_type {self.tls.client_auth_type} needs client_ca_file",
                                  "tls_server_config.client_ca_file")
            self._tls_files = [self._resolve(f) for f in (self.tls.cert_file, self.tls.key_file, self.tls.client_ca_file) if f]
            self._ctx = self._build_context()
        elif self.tls.client_ca_file or self.tls.client_auth_type != "NoClientCert":
            raise self._error("client certificates need TLS: set cert_file and key_file", "tls_server_config")

    # ----------------------------------------------------------- validation
    def _error(self, message: str, field_path: str) -> ConfigError:
        return ConfigError(message, file=self.source or None, field_path=self.field_prefix + field_path)

    def _check_users(self, users: dict[str, Any]) -> dict[str, bytes]:
        out = {}
        for user, hashed in users.items():
            if not isinstance(hashed, str) or not BCRYPT_RE.match(hashed):
                raise self._error("must be a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)", f"basic_auth_users.{user}")
            out[str(user)] = hashed.encode()
        return out

    def _check_headers(self, headers: dict[str, Any]) -> dict[str, str]:
        out = {}
        for name, value in headers.items():
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9-]+", str(name)) or any(c in value for c in "\r\n"):
                raise self._error("must be a header name and a one-line string value", f"http_server_config.headers.{name}")
            if name.lower() in ("content-type", "content-length", "content-encoding", "www-authenticate"):
                raise self._error("is set by the server and cannot be overridden", f"http_server_config.headers.{name}")
            out[str(name)] = value
        return out

    # ------------------------------------------------------------------ TLS
    def _build_context(self) -> ssl.SSLContext:
        tls = self.tls
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "TLS13" else ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self._resolve(tls.cert_file), self._resolve(tls.key_file))
            if tls.client_auth_type != "NoClientCert":
                ctx.load_verify_locations(cafile=str(self._resolve(tls.client_ca_file)))
                ctx.verify_mode = ssl.CERT_REQUIRED if tls.client_auth_type == "RequireAndVerifyClientCert" else ssl.CERT_OPTIONAL
        except (OSError, ssl.SSLError) as exc:
            raise self._error(f"cannot load certificate/key: {getattr(exc, 'strerror', None) or exc}", "tls_server_config") from None
        self._tls_mtimes = self._mtimes()
        return ctx

    def _mtimes(self) -> list[float]:
        out = []
        for p in self._tls_files:
            try:
                out.append(os.stat(p).st_mtime)
            except OSError:
                out.append(-1.0)
        return out

    def context(self) -> ssl.SSLContext | None:
        """The TLS context, rebuilt when a certificate file changed (kept when the new one is broken)."""
        if self._ctx is None:
            return None
        with self._lock:
            if self._mtimes() != self._tls_mtimes:
                try:
                    self._ctx = self._build_context()
                    log.info("TLS certificate reloaded", extra={"cert_file": str(self.tls.cert_file)})
                except ConfigError as exc:
                    self._tls_mtimes = self._mtimes()
                    log.error("TLS certificate reload failed; keeping the previous one", extra={"error": str(exc)})
            return self._ctx

    def server_context(self) -> ssl.SSLContext:
        """The TLS context for a new connection (only when TLS is configured)."""
        ctx = self.context()
        if ctx is None:
            raise RuntimeError("TLS is not configured")
        return ctx

    def count_handshake_failure(self) -> None:
        with self._lock:
            self.handshake_failures += 1

    # ----------------------------------------------------------- basic auth
    def needs_auth(self, path: str) -> bool:
        if not self.users or path in OPEN_PATHS:
            return False
        return not any(path.startswith(p) for p in self.bearer_paths)

    @staticmethod
    def _parse(authorization: str | None) -> tuple[str | None, str, str]:
        """(failure reason or None, user, password) of an ``Authorization`` header."""
        if not authorization or authorization[:6].lower() != "basic ":
            return "missing", "", ""
        try:
            user, sep, password = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "invalid", "", ""
        if not sep:
            return "invalid", "", ""
        return None, user, password

    @staticmethod
    def _key(user: str, password: str) -> bytes:
        return hashlib.sha256(f"{user}\0{password}".encode("utf-8", "surrogatepass")).digest()

    def _cached(self, key: bytes) -> bool:
        with self._lock:
            if key in self._ok_cache:
                self._ok_cache.move_to_end(key)
                return True
        return False

    def _verify(self, user: str, password: str, key: bytes) -> bool:
        """bcrypt (slow by design: call it off the event loop); caches a success."""
        secret = password.encode("utf-8", "surrogatepass")
        hashed = self.users.get(user)
        if len(secret) > BCRYPT_MAX_PASSWORD_BYTES:
            return False  # bcrypt would refuse it (or, in older versions, ignore the tail)
        ok = self._bcrypt.checkpw(secret, hashed if hashed else self._dummy_hash) and hashed is not None
        if ok:
            with self._lock:
                self._ok_cache[key] = None
                while len(self._ok_cache) > AUTH_CACHE_SIZE:
                    self._ok_cache.popitem(last=False)
        return ok

    def check(self, authorization: str | None) -> str | None:
        """None when the ``Authorization`` header holds valid credentials, else the failure reason
        (runs bcrypt in the calling thread)."""
        reason, user, password = self._parse(authorization)
        if reason is not None:
            return reason
        key = self._key(user, password)
        if self._cached(key):
            return None
        return None if self._verify(user, password, key) else "invalid"

    def _throttled(self, client: str, now: float) -> bool:
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                return False
            while times and times[0] < now - FAILURE_WINDOW_SECONDS:
                times.popleft()
            return len(times) >= MAX_FAILURES

    def _record_failure(self, client: str, reason: str, now: float) -> None:
        with self._lock:
            self.auth_failures[reason] += 1
            times = self._failures.get(client)
            if times is None:
                times = self._failures[client] = deque(maxlen=MAX_FAILURES)
                while len(self._failures) > _TRACKED_CLIENTS:
                    self._failures.popitem(last=False)
            else:
                self._failures.move_to_end(client)
            times.append(now)

    def _refuse(self, status: int = 401) -> web.Response:
        if status == 429:
            return web.Response(status=429, text="Too many failed login attempts; retry later\n",
                                headers={"Retry-After": str(int(FAILURE_WINDOW_SECONDS)), "Connection": "close"})
        return web.Response(status=401, text="Unauthorized\n",  # Connection: close: an unread body must not become a request
                            headers={"WWW-Authenticate": 'Basic realm="modelmon", charset="UTF-8"', "Connection": "close"})

    async def authenticate(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """The server's pre-routing hook: None to go on, or a 401 / 429 response."""
        if not self.needs_auth(request.path):
            return None
        client = request.remote or ""
        now = time.monotonic()
        reason, user, password = self._parse(request.headers.get("Authorization"))
        if reason is not None:  # no bcrypt ran: counted, not held against the client
            with self._lock:
                self.auth_failures[reason] += 1
            return self._refuse()
        key = self._key(user, password)
        if self._cached(key):
            return None
        if self._throttled(client, now) or self._pending >= MAX_PENDING_CHECKS:
            with self._lock:
                self.auth_failures["throttled"] += 1
            return self._refuse(429)
        if self._bcrypt_pool is None:
            self._bcrypt_pool = ThreadPoolExecutor(1, thread_name_prefix="modelmon-bcrypt")
        self._pending += 1  # only touched on the event loop
        try:
            ok = await asyncio.get_running_loop().run_in_executor(self._bcrypt_pool, self._verify, user, password, key)
        finally:
            self._pending -= 1
        if ok:
            return None
        self._record_failure(client, "invalid", now)
        return self._refuse()

    # ------------------------------------------------------------ collector
    def collect(self) -> Iterator[Metric]:
        """``modelmon_web_auth_failures_total{reason}``, ``modelmon_web_tls_handshake_failures_total``."""
        auth = CounterMetricFamily("modelmon_web_auth_failures", "HTTP requests refused for missing or invalid basic-auth credentials.",
                                   labels=["reason"])
        with self._lock:
            for reason, n in self.auth_failures.items():
                auth.add_metric([reason], n)
            handshakes = self.handshake_failures
        yield auth
        yield CounterMetricFamily("modelmon_web_tls_handshake_failures", "TLS handshakes that failed (plain HTTP, bad or missing client certificate).",
                                  value=handshakes)


def web_security(cfg: Config) -> WebSecurity | None:
    """The config's web settings (inline or ``web.config_file``), or None when none are set."""
    web_cfg, source = effective_web_config(cfg)
    if web_cfg == WebConfig(config_file=web_cfg.config_file) and not web_cfg.config_file:
        return None
    from_file = bool(web_cfg.config_file)
    bearer = ("/api/",) if (cfg.ingest.token_env or cfg.ingest.token_file) else ()
    return WebSecurity(web_cfg, source, resolve=(lambda p: Path(p)) if from_file else cfg.resolve_path,
                       bearer_paths=bearer, field_prefix="" if from_file else "web.")
