"""``modelmon gate``: the release gate as a CI step (logic in :mod:`modelmon.gate`).

Exit codes: 0 the candidate may be promoted, 1 a check failed or had no
data, 2 bad input or Prometheus unreachable.  ``--format json`` prints the
same verdict for machines (also on exit 2, with an ``error`` field).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .config import parse_duration


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "gate", help="release gate: judge a candidate model on evaluation metrics and live canary metrics",
        description="Decide whether a candidate model may be promoted. Exit 0 pass, 1 fail, 2 bad input or "
                    "Prometheus unreachable. Without --gate: evaluation accuracy >= 0.90 and, with "
                    "--prometheus.url, the default serving thresholds.",
    )
    p.add_argument("--gate", metavar="FILE", help="gate file (YAML) with checks and thresholds")
    p.add_argument("--evaluation", metavar="FILE", help="offline evaluation metrics (JSON object, e.g. {\"accuracy\": 0.93})")
    p.add_argument("--prometheus.url", dest="prometheus_url", metavar="URL", help="Prometheus for live canary checks")
    p.add_argument("--model", help="model name (live checks)")
    p.add_argument("--candidate-version", help="version being judged (live checks)")
    p.add_argument("--baseline-version", help="current version to compare with (live checks)")
    p.add_argument("--window", metavar="DURATION", help="live evidence window, e.g. 30m (default 30m)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_gate)


def cmd_gate(args: argparse.Namespace) -> int:
    # Imported here, not at module level, for start-up cost: the gate loads
    # requests (and certifi), and ``modelmon --help`` builds this parser.
    from .gate import GateInputError, default_gate, format_table, load_gate, run_gate

    try:
        overrides: dict[str, Any] = {
            "prometheus_url": args.prometheus_url, "model": args.model,
            "candidate_version": args.candidate_version, "baseline_version": args.baseline_version,
        }
        if args.window is not None:
            try:
                overrides["window_seconds"] = parse_duration(args.window)
            except ValueError as exc:
                raise GateInputError(f"--window: {exc}") from None
        if args.gate:
            gate = load_gate(args.gate)
        elif not (args.evaluation or args.prometheus_url):
            raise GateInputError("no evidence: give --evaluation FILE and/or --prometheus.url URL (see modelmon gate --help)")
        else:
            # The default gate: accuracy >= 0.90 on the evaluation, default serving checks live.
            gate = default_gate(live=False, baseline=False)
            if not args.evaluation:
                gate.evaluation = []
        result = run_gate(gate, args.evaluation, overrides)
    except GateInputError as exc:
        print(f"modelmon gate: error: {exc}", file=sys.stderr)
        if args.format == "json":
            print(json.dumps({"passed": False, "exit_code": 2, "error": str(exc)}, indent=2))
        return 2
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_table(result))
    return result.exit_code
