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

- TLS: every connection.  The handshake runs in the connection's own thread,
  not the accept loop, so a slow client cannot stall the server; the
  certificate is reloaded when its file changes (cert-manager rotations).
- Basic auth: every path except ``/-/healthy`` and ``/-/ready`` (probes learn
  nothing from them) and, when the ingestion API has a bearer token
  (``ingest.token_env``/``token_file``), ``/api/`` paths, which that token
  protects (one ``Authorization`` header cannot carry both).
- Failures are counted: ``modelmon_web_auth_failures_total{reason}`` and
  ``modelmon_web_tls_handshake_failures_total``.

bcrypt is an optional extra (``pip install 'modelmon[security]'``), needed
only when ``basic_auth_users`` is set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import socket
import ssl
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import yaml

from .config import Config, ConfigError, WebConfig, _build

log = logging.getLogger(__name__)

#: Paths that never need credentials (probes).
OPEN_PATHS = frozenset({"/-/healthy", "/-/ready"})
BCRYPT_RE = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
HANDSHAKE_TIMEOUT_SECONDS = 10.0
AUTH_CACHE_SIZE = 64
AUTH_REASONS = ("missing", "invalid")


def load_web_config_file(path: str | Path) -> WebConfig:
    """Read an exporter-toolkit web config file; errors name the file and field.
    Relative paths inside it are relative to the file, as in the toolkit."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(p)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=str(p)) from None
    if isinstance(data, dict) and "config_file" in data:
        raise ConfigError("unknown field (a web config file cannot point to another)", file=str(p), field_path="config_file")
    try:
        web = _build(WebConfig, data, "")
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
        self.auth_failures = {r: 0 for r in AUTH_REASONS}
        self.handshake_failures = 0
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

    def wrap_connection(self, conn: socket.socket) -> socket.socket | None:
        """Server-side TLS handshake on an accepted connection (in its handler thread)."""
        ctx = self.context()
        if ctx is None:
            return conn
        conn.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
        try:
            tls_conn = ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            with self._lock:
                self.handshake_failures += 1
            log.debug("TLS handshake failed", extra={"error": str(exc)})
            conn.close()
            return None
        tls_conn.settimeout(None)
        return tls_conn

    # ----------------------------------------------------------- basic auth
    def needs_auth(self, path: str) -> bool:
        if not self.users or path in OPEN_PATHS:
            return False
        return not any(path.startswith(p) for p in self.bearer_paths)

    def check(self, authorization: str | None) -> str | None:
        """None when the ``Authorization`` header holds valid credentials, else the failure reason."""
        if not authorization or not authorization[:6].lower() == "basic ":
            return "missing"
        try:
            user, sep, password = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "invalid"
        if not sep:
            return "invalid"
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        with self._lock:
            if key in self._ok_cache:
                self._ok_cache.move_to_end(key)
                return None
        hashed = self.users.get(user)
        ok = self._bcrypt.checkpw(password.encode(), hashed if hashed else self._dummy_hash) and hashed is not None
        if not ok:
            return "invalid"
        with self._lock:
            self._ok_cache[key] = None
            while len(self._ok_cache) > AUTH_CACHE_SIZE:
                self._ok_cache.popitem(last=False)
        return None

    def authenticate(self, req: Any) -> Any:
        """The server's pre-routing hook: None to go on, or a 401 response."""
        if not self.needs_auth(req.path):
            return None
        reason = self.check(req.headers.get("Authorization"))
        if reason is None:
            return None
        with self._lock:
            self.auth_failures[reason] += 1
        from .web import Response

        return Response(401, "Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="modelmon", charset="UTF-8"',
                                                  "Connection": "close"})  # an unread body must not become a request

    # ------------------------------------------------------------ collector
    def collect(self) -> Iterator[Any]:
        """``modelmon_web_auth_failures_total{reason}``, ``modelmon_web_tls_handshake_failures_total``."""
        from prometheus_client.core import CounterMetricFamily

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
    """The web security the config asks for (certificates loaded, hashes checked), or None
    when it sets none; raises ConfigError.  ``modelmon check-config`` runs this too."""
    web, source = effective_web_config(cfg)
    if web == WebConfig(config_file=web.config_file) and not web.config_file:
        return None
    from_file = bool(web.config_file)
    bearer = ("/api/",) if (cfg.ingest.token_env or cfg.ingest.token_file) else ()
    return WebSecurity(web, source, resolve=(lambda p: Path(p)) if from_file else cfg.resolve_path,
                       bearer_paths=bearer, field_prefix="" if from_file else "web.")


def install(exporter: Any) -> WebSecurity | None:
    """Apply the config's web settings to the exporter's server (nothing when none are set)."""
    sec = web_security(exporter.cfg)
    if sec is None:
        return None
    server = exporter.server
    server.wrap_connection = sec.wrap_connection
    server.authenticate = sec.authenticate
    server.default_headers.update(sec.headers)
    exporter.registry.register(sec)
    return sec
