"""Command line: ``modelmon serve``, ``modelmon check-config`` and friends.

Flags follow Prometheus exporters (``--web.listen-address``, ``--log.level``).
Subcommands live in their own modules and are listed in :data:`SUBCOMMANDS`;
each module has ``add_parser(subparsers)`` that sets ``func`` on its parser.
Exit codes: 0 ok, 1 a check failed (drift found, gate failed), 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .app import Exporter
from .collectors.groups import GROUPS
from .config import PROTOCOLS, Config, ConfigError, load_config, parse_duration
from .log import LEVELS, setup_logging
from .preflight import load_profiles, prepare
from .sources.simulator import SCENARIOS, default_config, demo_model_config
from .web import ServerLimits

log = logging.getLogger("modelmon")

DEFAULT_PORT = 9874
DEFAULT_LISTEN = f":{DEFAULT_PORT}"

#: Modules providing more subcommands (each: ``add_parser(subparsers)``).
SUBCOMMANDS: list[str] = [
    "modelmon.drift_cli",  # drift, reference build
    "modelmon.gate_cli",  # gate (release gate)
    "modelmon.stack",  # stack (local Prometheus + Alertmanager, no Docker)
]


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
        if args.rate <= 0:
            raise ConfigError("--rate: must be > 0")
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


class _CollectorFlag(argparse.Action):
    """``--collector.NAME`` / ``--no-collector.NAME``: collects {NAME: enabled}."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        flag = str(option_string)
        chosen = dict(getattr(namespace, self.dest) or {})
        chosen[flag.split(".", 1)[1]] = not flag.startswith("--no-")
        setattr(namespace, self.dest, chosen)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelmon", description="Prometheus exporter for ML models in production.")
    parser.add_argument("--version", action="version", version=f"modelmon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the exporter (a simulated model unless a config says otherwise)")
    serve.add_argument("--config", "--config.file", dest="config", metavar="FILE",
                       help="YAML config (default: simulated demo model)")
    serve.add_argument("--web.listen-address", dest="web_listen_address", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                       help=f"address for /metrics and the API (default {DEFAULT_LISTEN}: all interfaces)")
    serve.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                       help="exporter-toolkit web config: TLS and basic auth (see docs/security.md)")
    serve.add_argument("--web.read-header-timeout", dest="web_read_header_timeout", type=float, default=10.0, metavar="SECONDS",
                       help="close a connection whose request head is not complete after this long (default 10)")
    serve.add_argument("--web.read-timeout", dest="web_read_timeout", type=float, default=30.0, metavar="SECONDS",
                       help="answer 408 to a request whose body is not complete this long after its head (default 30)")
    serve.add_argument("--web.max-connections", dest="web_max_connections", type=int, default=2048, metavar="N",
                       help="connections open at once; more get 503 (default 2048)")
    serve.add_argument("--web.enable-lifecycle", dest="web_enable_lifecycle", action="store_true",
                       help="serve POST /-/reload (as Prometheus; SIGHUP reloads either way)")
    serve.add_argument("--scenario", help="simulator scenario: normal, latency-spike, throughput-drop, error-burst, "
                                          "accuracy-decay, data-drift, covariate-shift, importance-shift, incident "
                                          "(implies --simulate)")
    serve.add_argument("--simulate", action="store_true", help="add the simulated demo model to a config's models")
    serve.add_argument("--anomaly-after", metavar="DURATION",
                       help="start the scenario's anomaly after this long (e.g. 0, 30s, 3m)")
    serve.add_argument("--anomaly-duration", metavar="DURATION", help="end the anomaly after this long (default: never)")
    serve.add_argument("--rate", type=float, help="simulated requests per second (default 1000)")
    serve.add_argument("--seed", type=int, help="random seed for reproducible simulation")
    serve.add_argument("--proxy.listen-address", dest="proxy_listen_address", metavar="HOST:PORT",
                       help="also run the reverse proxy here (overrides proxy.listen_address)")
    serve.add_argument("--proxy.upstream", dest="proxy_upstream", metavar="URL",
                       help="the model server the proxy forwards to (overrides proxy.upstream)")
    serve.add_argument("--proxy.protocol", dest="proxy_protocol", choices=PROTOCOLS,
                       help="how the proxy reads bodies: json (proxy.features paths, the default), kserve-v1, "
                            "oip-v2 (Open Inference Protocol: Triton, MLServer, Seldon, KServe v2) "
                            "(overrides proxy.protocol)")
    serve.add_argument("--log.level", dest="log_level", default="info", choices=LEVELS)
    for group in GROUPS:
        serve.add_argument(f"--collector.{group.name}", dest="collectors", action=_CollectorFlag, nargs=0,
                           help=f"export {group.description} (default on; --no-collector.{group.name} or config "
                                f"collectors.{group.name}: false turns it off)")
        serve.add_argument(f"--no-collector.{group.name}", dest="collectors", action=_CollectorFlag, nargs=0,
                           help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file (and its reference data) without serving")
    check.add_argument("file")
    check.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                       help="also check this web config, as serve --web.config.file would load it")
    check.set_defaults(func=cmd_check_config)

    for module in SUBCOMMANDS:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
