"""The commands behind ``modelmon drift`` and ``modelmon reference build``
(their parsers, exit codes and the why of the split are in
:mod:`modelmon.drift_cli`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, DriftConfig, FeatureConfig, ModelConfig, load_config
from .datasets import CategoricalColumn, DataError, EmptyColumn, load_table
from .drift import batch, registry
from .drift.reference import build_profile
from .estimation import batch as label_free
from .estimation.sections import fit_sections, load_estimators
from .explain import batch as explain
from .profile_sections import fit_explain_sections
from .report import write_report

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


def _overwrites_input(output: str | None, *inputs: str | None) -> str | None:
    """The input file ``-o`` names, if any (``-o ref.csv`` would replace the data with the output)."""
    if not output:
        return None
    out = Path(output)
    for name in inputs:
        if name and out.exists() and Path(name).exists() and out.resolve() == Path(name).resolve():
            return name
    return None


# --------------------------------------------------------------------- drift
def cmd_drift(args: argparse.Namespace) -> int:
    same = _overwrites_input(args.output, args.reference, args.current, args.config)
    if same is not None:
        return _error(f"-o {args.output}: is the input file {same}; write the report elsewhere")
    if args.method is not None and args.method not in registry.names():
        return _error(f"--method: unknown drift method {args.method!r} (known: {', '.join(registry.names())})")

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
    except (ConfigError, DataError, batch.BatchInputError) as exc:
        return _error(str(exc))
    if args.format == "html":  # self-contained page with charts (modelmon.report)

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
    unusable_sections = label_free.unusable_sections(doc)
    for section in unusable_sections:
        print(f"modelmon: warning: {section} not computed: {doc[section]['error']}", file=sys.stderr)
    if args.fail_on_drift and (doc["dataset"]["drifted"] or label_free.any_drifted(doc)
                               or explain.any_drifted(doc)):
        return 1
    return EXIT_UNUSABLE if doc["dataset"]["unusable_features"] or unusable_sections else 0


# ----------------------------------------------------------------- reference
def cmd_reference_build(args: argparse.Namespace) -> int:
    same = _overwrites_input(args.output, args.data, args.config)
    if same is not None:
        return _error(f"-o {args.output}: is the input file {same}; write the profile elsewhere")
    if Path(args.output).suffix.lower() != ".json":
        return _error(f"-o {args.output}: a profile file must end in .json (reference.path and --reference "
                      "read any other name as data)")
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
            # Without a config every column is a feature, but for those of a type none can have (lists, structs).
            features = []
            for n, c in table.columns.items():
                if isinstance(c, EmptyColumn) and c.why:
                    print(f"modelmon: warning: {args.data}: column {n!r} left out: it has {c.problem}", file=sys.stderr)
                else:
                    features.append(FeatureConfig(name=n, type="categorical" if isinstance(c, CategoricalColumn)
                                                  else "numerical"))
        bins = args.bins if args.bins is not None else drift_cfg.bins
        sample = args.sample_size if args.sample_size is not None else drift_cfg.reference_sample_size
        top_k = args.top_k if args.top_k is not None else drift_cfg.top_k_categories
        for flag, value, low in (("--bins", bins, 2), ("--sample-size", sample, 1), ("--top-k", top_k, 1)):
            if value < low:
                raise batch.BatchInputError(f"{flag}: must be >= {low}")
        try:
            profile = build_profile(table, features, bins=bins, sample_size=sample, top_k=top_k,
                                    discrete_max=drift_cfg.discrete_max_values or None)
            if model is not None:  # from --config
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


