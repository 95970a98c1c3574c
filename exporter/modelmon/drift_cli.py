"""``modelmon drift`` (batch drift between two files) and ``modelmon reference
build`` (freeze a reference profile).

Both reuse the exporter's drift engine and profile builder (see
:mod:`modelmon.drift.batch`), so CI jobs, notebooks and the live exporter
agree.  Exit codes of ``modelmon drift``:

- 0: every feature scored (or below its noise floor), no drift, or drift
  without ``--fail-on-drift``;
- 1: the dataset drifted and ``--fail-on-drift`` was given;
- 2: bad input, nothing scored (a message naming the file, column or field);
- 3: at least one column was unusable (all missing, non-finite, or a
  statistic that is not finite); the other features were scored and are in
  the output, and exit 1 takes precedence when the dataset also drifted.

The drift engine, numpy and pyarrow are imported by the command functions,
not at module level: ``modelmon --help`` builds this module's parser and
must start in well under 200 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .config import (
    Config,
    ConfigError,
    DriftConfig,
    FeatureConfig,
    ModelConfig,
    load_config,
)
from .profile_sections import fit_explain_sections

#: The registered drift methods, for the help text only (importing the
#: registry loads numpy); tests check it against the registry.
METHOD_NAMES = ("chisquare", "jensenshannon", "ks", "meanstd", "psi", "wasserstein")
#: Exit status when some column could not be scored.
EXIT_UNUSABLE = 3


def _error(message: str) -> int:
    print(f"modelmon: error: {message}", file=sys.stderr)
    return 2


def _model(cfg: Config, name: str | None, path: str) -> ModelConfig:
    """The model a command works on: ``--model`` or the config's only model."""
    if name:
        model = cfg.model(name)
        if model is None:
            raise ConfigError(f"no model named {name!r} (models: {', '.join(m.name for m in cfg.models) or 'none'})", file=path)
        return model
    with_features = [m for m in cfg.models if m.features]
    if len(with_features) != 1:
        raise ConfigError("the config has several models with features: choose one with --model"
                          if with_features else "no model in the config has features", file=path)
    return with_features[0]


def _config_features(model: ModelConfig) -> list[FeatureConfig]:
    monitored = getattr(model, "monitored_features", None)
    return list(monitored() if monitored else model.features)


# --------------------------------------------------------------------- drift
def cmd_drift(args: argparse.Namespace) -> int:
    from .datasets import DataError
    from .drift import batch, registry

    if args.method is not None and args.method not in registry.names():
        return _error(f"--method: unknown drift method {args.method!r} (known: {', '.join(registry.names())})")
    from .estimation import batch as label_free
    from .estimation.sections import fit_sections, load_estimators
    from .explain import batch as explain

    features = None
    optional: set[str] = set()
    drift_cfg = DriftConfig()
    share = 0.5
    model: ModelConfig | None = None
    if args.chunk_size is not None and args.chunk_size < 1:
        return _error("--chunk-size: must be >= 1")
    try:
        if args.config:
            cfg = load_config(args.config)
            model = _model(cfg, args.model, args.config)
            drift_cfg, share = model.drift, model.thresholds.dataset_drift_share
            features = _config_features(model)
            # Output columns watched for prediction drift are optional in files.
            names = {f.name for f in model.features}
            optional = {f.name for f in features if f.name not in names}
        enabled = model is not None and (model.performance_estimation.enabled or model.multivariate_drift.enabled)
        if args.chunk_size is not None and not enabled:
            raise ConfigError("--chunk-size reports performance estimation and multivariate drift: "
                              "enable them for the model in --config")
        ref_columns: list[list[str]] = []

        def prepare(prof: Any, table: Any) -> None:
            if enabled and model is not None:
                fit_sections(prof, table, model)
            # Outlier model, and the importance when the reference has attribution columns.
            ref_columns.append(list(table))
            fit_explain_sections(prof, table, explain.batch_model(model, prof, ref_columns[0], None))

        result = batch.run(args.reference, args.current, features=features, drift=drift_cfg,
                           method=args.method, dataset_share_threshold=share, optional=optional,
                           prepare_profile=prepare)
        doc = batch.report_json(result)
        xmodel = explain.batch_model(model, result.profile, ref_columns[0] if ref_columns else None, result.current)
        try:
            doc.update(explain.evaluate(result.profile, result.current, xmodel, result.current.rows))
        except ValueError as exc:
            raise batch.BatchInputError(f"{args.reference}: {exc}") from None
        if enabled and model is not None:
            try:
                estimators = load_estimators(result.profile, model)
            except ValueError as exc:
                raise batch.BatchInputError(f"{args.reference}: {exc}") from None
            doc.update(label_free.evaluate(estimators, result.profile, result.current, model, result.current.rows,
                                           chunk_size=args.chunk_size, path=args.current))
    except (ConfigError, DataError, batch.BatchInputError, label_free.LabelFreeInputError) as exc:
        return _error(str(exc))
    if args.format == "html":  # self-contained page with charts (modelmon.report)
        from .report import write_report

        text = write_report(doc, result.profile, result.current, args.reference, args.current)
    elif args.format == "json":
        text = json.dumps(doc, indent=2, allow_nan=False)
    else:
        text = "\n".join([batch.report_table(doc), *label_free.table_lines(doc), *explain.table_lines(doc)])
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text if text.endswith("\n") else text + "\n")
        except OSError as exc:
            return _error(f"{args.output}: cannot write: {exc.strerror or exc}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    for name, f in doc["features"].items():
        if f["status"] == "error":
            print(f"modelmon: warning: feature {name!r} not scored: {f['error']}", file=sys.stderr)
    if args.fail_on_drift and (doc["dataset"]["drifted"] or label_free.any_drifted(doc)
                               or explain.any_drifted(doc)):
        return 1
    return EXIT_UNUSABLE if doc["dataset"]["unusable_features"] else 0


# ----------------------------------------------------------------- reference
def cmd_reference_build(args: argparse.Namespace) -> int:
    from .datasets import CategoricalColumn, DataError, load_table
    from .drift import batch
    from .drift.reference import build_profile
    from .estimation.sections import fit_sections

    drift_cfg = DriftConfig()
    model: ModelConfig | None = None
    try:
        if args.config:
            cfg = load_config(args.config)
            model = _model(cfg, args.model, args.config)
            drift_cfg = model.drift
            features = _config_features(model)
            table = load_table(args.data, types={f.name: f.type for f in features})
            missing = [f.name for f in features if f.name not in table]
            if missing:
                raise batch.BatchInputError(f"{args.data}: no column {', '.join(repr(m) for m in missing)} "
                                            f"(features of model {model.name!r} in {args.config})")
        else:
            table = load_table(args.data)
            features = [FeatureConfig(name=n, type="categorical" if isinstance(c, CategoricalColumn) else "numerical")
                        for n, c in table.columns.items()]
        bins = args.bins if args.bins is not None else drift_cfg.bins
        sample = args.sample_size if args.sample_size is not None else drift_cfg.reference_sample_size
        top_k = args.top_k if args.top_k is not None else drift_cfg.top_k_categories
        for flag, value, low in (("--bins", bins, 2), ("--sample-size", sample, 1), ("--top-k", top_k, 1)):
            if value < low:
                raise batch.BatchInputError(f"{flag}: must be >= {low}")
        try:
            profile = build_profile(table, features, bins=bins, sample_size=sample, top_k=top_k,
                                    discrete_max=drift_cfg.discrete_max_values or None)
            if args.config:
                fit_sections(profile, table, model)  # the label-free estimators the model enables
            # The outlier model and attribution importance as the model configures them.
            fit_explain_sections(profile, table, model or ModelConfig(name="reference", features=features))
        except ValueError as exc:
            raise batch.BatchInputError(f"{args.data}: {exc}") from None
        profile.save(args.output)
    except (ConfigError, DataError, batch.BatchInputError) as exc:
        return _error(str(exc))
    except OSError as exc:
        return _error(f"{args.output}: cannot write: {exc.strerror or exc}")
    summary: dict[str, Any] = {
        "profile": str(args.output), "rows": profile.rows, "hash": profile.hash,
        "features": {n: p.type for n, p in profile.features.items()},
        "sections": sorted(profile.sections),
    }
    print(json.dumps(summary) if args.json else
          f"wrote {args.output}: {len(profile.features)} features, {profile.rows} rows, hash {profile.hash}")
    return 0


def add_parser(sub: Any) -> None:
    """Register ``drift`` and ``reference`` with the main parser."""
    methods = ", ".join(METHOD_NAMES)
    d = sub.add_parser(
        "drift", help="compare a current data file with a reference (CI jobs, notebooks)",
        description="Per-feature and dataset drift of CUR against REF with the exporter's drift engine and "
                    "noise floors. Exit 0; 1 with --fail-on-drift when the dataset drifted; 2 on bad input "
                    "(nothing scored); 3 when a column was unusable (the others are scored and printed).",
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
    d.set_defaults(func=cmd_drift)

    r = sub.add_parser("reference", help="reference profiles")
    rsub = r.add_subparsers(dest="reference_command", metavar="COMMAND")
    b = rsub.add_parser(
        "build", help="freeze a reference profile from a data file",
        description="Build a frozen reference profile (quantile bins, counts, moments, sorted sample, "
                    "category frequencies) from DATA. Without --config a column is categorical when non-numeric.",
    )
    b.add_argument("data", metavar="DATA", help="reference data (CSV, .jsonl, .parquet)")
    b.add_argument("-o", "--output", required=True, metavar="PROFILE", help="profile file to write (.json)")
    b.add_argument("--config", "--config.file", dest="config", metavar="FILE", help="take features and drift settings from a config")
    b.add_argument("--model", metavar="NAME", help="model of --config (default: its only model with features)")
    b.add_argument("--bins", type=int, help="quantile bins per numerical feature (default: config or 10)")
    b.add_argument("--sample-size", type=int, help="sorted reference sample kept for KS/Wasserstein (default: config or 10000)")
    b.add_argument("--top-k", type=int, help="categories kept per categorical feature (default: config or 20)")
    b.add_argument("--json", action="store_true", help="print a JSON summary")
    b.set_defaults(func=cmd_reference_build)
    r.set_defaults(func=lambda _args: (r.print_help(), 2)[1])
