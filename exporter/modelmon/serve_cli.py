"""``modelmon serve`` and ``modelmon check-config``: the config a serve runs
(file or simulated demo, then the command line's overrides, then the shared
checks of :mod:`modelmon.preflight`), the exporter's life cycle with its
signals (SIGTERM/SIGINT stop, SIGHUP reloads), and the check-only command.

The parser for both is in :mod:`modelmon.cli`, which imports this module only
when one of them runs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from .app import Exporter
from .config import MAX_SIMULATED_RATE, RATE_RANGE, Config, ConfigError, load_config, parse_duration
from .log import setup_logging
from .preflight import load_profiles, prepare
from .sources.simulator import SCENARIOS, default_config, demo_model_config
from .web import ServerLimits

log = logging.getLogger("modelmon")


def _load(path: str | None) -> Config:
    return load_config(path) if path else default_config()


def serve_config(args: argparse.Namespace) -> Config:
    """The config ``serve`` runs: the file (or the simulated demo), the command
    line's overrides, then the shared checks (modelmon.preflight), whose
    warnings are logged.  A reload builds its new config the same way."""
    cfg = _load(args.config)
    sim = cfg.simulator
    if args.scenario is not None or args.simulate:
        sim.enabled = True
        if not cfg.model(sim.model):
            cfg.models.append(demo_model_config(sim.model))
    if args.scenario is not None:
        if args.scenario not in SCENARIOS:
            raise ConfigError(f"--scenario: must be one of {', '.join(SCENARIOS)}")
        sim.scenario = args.scenario
    for flag, attr in (("anomaly_after", "anomaly_after_seconds"), ("anomaly_duration", "anomaly_duration_seconds")):
        value = getattr(args, flag)
        if value is not None:
            try:
                setattr(sim, attr, parse_duration(value))
            except ValueError as exc:
                raise ConfigError(f"--{flag.replace('_', '-')}: {exc}") from None
    if args.rate is not None:
        if not 0 < args.rate <= MAX_SIMULATED_RATE:  # also refuses nan
            raise ConfigError(f"--rate: {RATE_RANGE}")
        sim.rate = args.rate
    if args.seed is not None:
        sim.seed = args.seed
    if args.proxy_listen_address is not None or args.proxy_upstream is not None:
        cfg.proxy.listen_address = args.proxy_listen_address or cfg.proxy.listen_address
        cfg.proxy.upstream = args.proxy_upstream or cfg.proxy.upstream
    if args.proxy_protocol:
        cfg.proxy.protocol = args.proxy_protocol
    for group, enabled in (args.collectors or {}).items():
        setattr(cfg.collectors, group, enabled)
    if args.web_config_file:
        cfg.web.config_file = str(Path(args.web_config_file).resolve())
    for warning in prepare(cfg):
        log.warning("config: %s", warning, extra={"file": warning.file, "field": warning.field_path})
    return cfg


def cmd_serve(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    try:
        cfg = serve_config(args)
        if args.web_read_header_timeout <= 0 or args.web_read_timeout <= 0 or args.web_max_connections <= 0:
            raise ConfigError("--web.read-header-timeout, --web.read-timeout and --web.max-connections must be > 0")
        limits = ServerLimits(header_timeout_seconds=args.web_read_header_timeout,
                              body_timeout_seconds=args.web_read_timeout, max_connections=args.web_max_connections,
                              max_body_bytes=max(cfg.ingest.max_body_bytes, ServerLimits.max_body_bytes))
        exporter = Exporter(cfg, listen=args.web_listen_address, limits=limits)
    except (ConfigError, ValueError) as exc:
        print(f"modelmon: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"modelmon: error: cannot listen on {args.web_listen_address}: {exc.strerror or exc}", file=sys.stderr)
        return 2

    # A reload (SIGHUP, POST /-/reload) reads the config file, the web config and the flags again.
    exporter.config_loader = lambda: (lambda c: (c, load_profiles(c)))(serve_config(args))
    exporter.lifecycle_api = args.web_enable_lifecycle
    stop = threading.Event()
    hup = threading.Event()

    def _signal(signum: int, _frame: object) -> None:
        log.info("signal received, shutting down", extra={"signal": signal.Signals(signum).name})
        stop.set()

    def _hangup(_signum: int, _frame: object) -> None:
        hup.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    signal.signal(signal.SIGHUP, _hangup)
    exporter.start()
    while not stop.wait(0.2):
        if hup.is_set():
            hup.clear()
            log.info("signal received, reloading the config", extra={"signal": "SIGHUP"})
            exporter.reload_now("SIGHUP")
    exporter.stop()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """The checks ``serve --config FILE`` makes before it listens (modelmon.preflight), nothing more."""
    try:
        cfg = load_config(args.file)
        if args.web_config_file:
            cfg.web.config_file = str(Path(args.web_config_file).resolve())
        warnings = prepare(cfg)
        load_profiles(cfg)
    except ConfigError as exc:
        print(f"modelmon: error: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"modelmon: warning: {warning}", file=sys.stderr)
    print(f"{args.file}: OK ({len(cfg.models)} model(s), windows {', '.join(w.name for w in cfg.windows)})")
    return 0
