"""The proxy source: config -> listener socket, transport, extractor, recorder."""

from __future__ import annotations

import logging
import resource
import socket
import time
from typing import Any

from ...collectors.ingest import ProxyCollector
from ...config import Config, ConfigError, listen_address
from ...pipeline import Pipeline
from .extract import DottedPathExtractor, Extractor
from .protocol import ProtocolExtractor
from .recorder import Recorder
from .settings import proxy_model, validate_proxy_config
from .transport import ProxyTransport, TransportSettings

log = logging.getLogger(__name__)


def bind(address: str, backlog: int = 1024) -> socket.socket:
    """A listening socket for ``HOST:PORT`` (IPv4 or IPv6), or a :class:`ConfigError`."""
    host, port = listen_address(address)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        infos = socket.getaddrinfo(host, port, family if ":" in host else socket.AF_UNSPEC, socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        sock = socket.create_server(addr, family=family, backlog=backlog)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc.strerror or exc}", field_path="proxy.listen_address") from None
    sock.setblocking(False)
    return sock


def raise_fd_limit(needed: int) -> None:
    """Lift the soft open-files limit towards ``needed`` (as far as the hard limit allows), so
    that ``proxy.max_connections`` client sockets plus their upstream ones fit."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):  # not allowed here: the cap then meets the limit first
        log.warning("cannot raise the open-files limit to %d", needed)


class ProxySource:
    """A reverse-proxy listener feeding the pipeline (``source="proxy"``).

    Building it binds the listening socket (a busy port fails at once);
    :meth:`start` serves.
    """

    name = "proxy"

    def __init__(self, cfg: Config, pipeline: Pipeline, extractor: Extractor | None = None):
        validate_proxy_config(cfg)
        self.cfg = cfg.proxy
        model = proxy_model(cfg)
        assert model is not None
        self.model = model.name
        if extractor is None:
            extractor = DottedPathExtractor(model, self.cfg) if self.cfg.protocol == "json" else \
                ProtocolExtractor(model, self.cfg)
        self.extractor: Extractor = extractor
        self.recorder = Recorder(model, self.extractor, pipeline.submit, self.cfg.queue_max_events)
        raise_fd_limit(self.cfg.max_connections + self.cfg.upstream_connections + 256)
        self.sock = bind(self.cfg.listen_address)
        self.port = self.sock.getsockname()[1]
        p = self.cfg
        self.transport = ProxyTransport(self.sock, TransportSettings(
            upstream=p.upstream, upstream_timeout=p.timeout_seconds, upstream_connections=p.upstream_connections,
            header_timeout=p.header_timeout_seconds, body_timeout=p.timeout_seconds,
            max_connections=p.max_connections, max_capture=p.max_parse_bytes,
            capture_request=self.extractor.capture_request, capture_response=self.extractor.capture_response,
        ), self.recorder.record)

    # counters read by the collector
    @property
    def extraction_failures(self) -> int:
        return self.recorder.extraction_failures

    @property
    def protocol_failures(self) -> dict[str, int] | None:
        """Payloads ``proxy.protocol`` could not read, by reason (``None`` with dotted paths)."""
        return self.extractor.failures if isinstance(self.extractor, ProtocolExtractor) else None

    @property
    def dropped(self) -> int:
        return self.recorder.dropped

    @property
    def responses(self) -> dict[str, int]:
        return self.recorder.responses

    @property
    def rejected(self) -> dict[str, int]:
        return self.transport.rejected

    @property
    def open_connections(self) -> int:
        return self.transport.open_connections

    def routes(self) -> list[Any]:
        return []  # the proxy has its own listener

    def collectors(self) -> list[Any]:
        return [ProxyCollector(self)]

    def start(self) -> None:
        self.recorder.start()
        self.transport.start()
        log.info("proxy started", extra={"address": self.cfg.listen_address, "port": self.port,
                                         "upstream": self.cfg.upstream, "model": self.model})

    def stop(self) -> None:
        self.transport.stop()
        self.recorder.stop()
        self.sock.close()

    def drain(self, timeout: float = 5.0) -> int:
        """Wait for requests in progress to be recorded, then flush (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self.transport.in_flight and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.recorder.flush()


