"""Command line: ``modelmon serve``, ``modelmon check-config`` and friends.

Flags follow Prometheus exporters (``--web.listen-address``, ``--log.level``).
Subcommands live in their own modules and are listed in :data:`SUBCOMMANDS`;
each module has ``add_parser(subparsers)`` that sets ``func`` on its parser.
Exit codes: 0 ok, 1 a check failed (drift found, gate failed), 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .config import PROTOCOLS
from .log import LEVELS
from .metric_groups import GROUPS

DEFAULT_PORT = 9874
DEFAULT_LISTEN = f":{DEFAULT_PORT}"

#: Modules providing more subcommands (each: ``add_parser(subparsers)``).
SUBCOMMANDS: list[str] = [
    "modelmon.drift_cli",  # drift, reference build
    "modelmon.gate_cli",  # gate (release gate)
    "modelmon.stack",  # stack (local Prometheus + Alertmanager, no Docker)
]


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
    serve.set_defaults(func="modelmon.serve_cli:cmd_serve")

    check = sub.add_parser("check-config", help="validate a config file (and its reference data) without serving")
    check.add_argument("file")
    check.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                       help="also check this web config, as serve --web.config.file would load it")
    check.set_defaults(func="modelmon.serve_cli:cmd_check_config")

    for module in SUBCOMMANDS:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    func = args.func
    if isinstance(func, str):
        # serve and check-config load the whole exporter: their module is
        # imported only when one of them runs, so the parser stays light.
        module, _, name = func.partition(":")
        func = getattr(importlib.import_module(module), name)
    return int(func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
