"""``modelmon drift`` (batch drift between two files) and ``modelmon reference
build`` (freeze a reference profile).

Both reuse the exporter's drift engine and profile builder (see
:mod:`modelmon.drift.batch`), so CI jobs, notebooks and the live exporter
agree.  Exit codes of ``modelmon drift``:

- 0: every feature scored (or below its noise floor), no drift, or drift
  without ``--fail-on-drift``;
- 1: the dataset drifted and ``--fail-on-drift`` was given;
- 2: bad input, nothing scored (a message naming the file, column or field);
- 3: at least one column was unusable (absent from one of the files, all
  missing, non-finite, or a statistic that is not finite); the other
  features were scored and are in the output, and exit 1 takes precedence
  when the dataset also drifted.

This module only builds the parsers: the commands are in
:mod:`modelmon.drift_commands`, which :mod:`modelmon.cli` imports when one of
them runs, so ``modelmon --help`` loads neither numpy, scipy nor pyarrow.
"""

from __future__ import annotations

from typing import Any

from .drift.catalog import METHOD_NAMES


def add_parser(sub: Any) -> None:
    """Register ``drift`` and ``reference`` with the main parser."""
    methods = ", ".join(METHOD_NAMES)
    d = sub.add_parser(
        "drift", help="compare a current data file with a reference (CI jobs, notebooks)",
        description="Per-feature and dataset drift of CUR against REF with the exporter's drift engine and "
                    "noise floors. Exit 0; 1 with --fail-on-drift when the dataset drifted; 2 on bad input "
                    "(nothing scored); 3 when a column was unusable or missing from a file (the others are "
                    "scored and printed).",
    )
    d.add_argument("--reference", required=True, metavar="REF",
                   help="reference data (CSV, .jsonl, .parquet) or a profile (.json) from 'modelmon reference build'")
    d.add_argument("--current", required=True, metavar="CUR", help="current data (CSV, .jsonl, .parquet)")
    d.add_argument("--method", metavar="METHOD", help=f"force one method for every feature it applies to ({methods})")
    d.add_argument("--format", choices=("json", "table", "html"), default="json",
                   help="output format (default json; html: a self-contained report with charts)")
    d.add_argument("-o", "--output", metavar="FILE", help="write the output to FILE instead of stdout")
    d.add_argument("--fail-on-drift", action="store_true", help="exit 1 when the dataset drifted")
    d.add_argument("--config", "--config.file", dest="config", metavar="FILE",
                   help="exporter config: feature types, methods, thresholds and bins of a model")
    d.add_argument("--model", metavar="NAME", help="model of --config (default: its only model with features)")
    d.add_argument("--chunk-size", type=int, metavar="N",
                   help="also report estimated performance and multivariate drift per consecutive chunk of N rows "
                        "(needs them enabled in --config)")
    d.set_defaults(func="modelmon.drift_commands:cmd_drift")

    r = sub.add_parser("reference", help="reference profiles")
    rsub = r.add_subparsers(dest="reference_command", metavar="COMMAND")
    b = rsub.add_parser(
        "build", help="freeze a reference profile from a data file",
        description="Build a frozen reference profile (quantile bins, counts, moments, sorted sample, "
                    "category frequencies) from DATA. Without --config a column is categorical when non-numeric.",
    )
    b.add_argument("data", metavar="DATA", help="reference data (CSV, .jsonl, .parquet)")
    b.add_argument("-o", "--output", required=True, metavar="PROFILE", help="profile file to write (.json)")
    b.add_argument("--config", "--config.file", dest="config", metavar="FILE",
                   help="take features and drift settings from a config")
    b.add_argument("--model", metavar="NAME", help="model of --config (default: its only model with features)")
    b.add_argument("--bins", type=int, help="quantile bins per numerical feature (default: config or 10)")
    b.add_argument("--sample-size", type=int, help="sorted reference sample kept for KS/Wasserstein (default: config or 10000)")
    b.add_argument("--top-k", type=int, help="categories kept per categorical feature (default: config or 20)")
    b.add_argument("--json", action="store_true", help="print a JSON summary")
    b.set_defaults(func="modelmon.drift_commands:cmd_reference_build")
    r.set_defaults(func=lambda _args: (r.print_help(), 2)[1])
