"""Drift between two tables, for CI jobs and notebooks (``modelmon drift``).

The batch path reuses the exporter's pieces end to end: the reference becomes
a frozen :class:`~.reference.ReferenceProfile`, the current table is encoded
into the same column layout and per-slot counts a window snapshot has, and the
same :class:`~.engine.DriftEngine` scores it.  So for the same profile and the
same values the batch command and the exporter report the same numbers.

One difference is deliberate: a *raw* reference file is profiled with a
sample as large as the file, so KS and Wasserstein compare against the whole
reference (exactly what scipy computes on the two files), whereas the
exporter keeps a bounded sample of ``drift.reference_sample_size`` values.
They coincide whenever the reference has at most that many rows, or when both
are given the same profile file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DriftConfig, FeatureConfig
from ..datasets import (
    CategoricalColumn,
    DataError,
    EmptyColumn,
    NumericColumn,
    Table,
    categorical_from_values,
    load_table,
)
from .engine import DriftEngine, DriftReport
from .reference import (
    CategoricalProfile,
    NumericalProfile,
    ProfileError,
    ReferenceProfile,
    build_profile,
    to_float_array,
)


class BatchInputError(ValueError):
    """Input the batch command cannot use; the message names the file and column."""


def infer_features(ref: Table, cur: Table) -> list[FeatureConfig]:
    """Features for every reference column, in the reference's order.

    A reference column the current file lacks is still a feature, so the
    batch command reports it as unusable instead of quietly scoring the rest
    (a vanished production column must not pass a drift gate).  The
    reference column's Arrow type decides (the current column's when the
    reference column is empty): a stray non-numeric value in the current
    data is then a missing value, as the exporter counts it, instead of
    turning a numerical feature into a categorical one."""
    out = []
    for name in ref:
        col = ref[name] if not isinstance(ref[name], EmptyColumn) or name not in cur else cur[name]
        out.append(FeatureConfig(name=name, type=_kind(col)))
    return out


def looks_like_profile(path: str | Path) -> bool:
    """Profiles are ``.json`` files (data files are CSV, ``.jsonl`` or
    Parquet), the same rule the exporter's ``reference.path`` follows."""
    return Path(path).suffix.lower() == ".json"


def load_reference_profile(path: str | Path) -> ReferenceProfile:
    if not Path(path).is_file():
        raise DataError(f"{path}: {'a directory, not a profile file' if Path(path).is_dir() else 'no such file'}")
    try:
        return ReferenceProfile.load(path)
    except ProfileError as exc:
        raise BatchInputError(f"not a valid reference profile: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchInputError(f"{path}: cannot read: {exc}") from None


@dataclass
class Window:
    """A table encoded like a window snapshot: ``size`` rows, the columns the
    engine may read and the per-slot counts it always reads."""

    size: int
    columns: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]


@dataclass
class BatchResult:
    """What :func:`run` found: the engine's report, the profile, the current
    table, and the features that could not be scored with the reason."""

    report: DriftReport
    profile: ReferenceProfile
    current: Table
    #: Feature -> why it was not scored (a column without usable values).
    column_errors: dict[str, str] = field(default_factory=dict)
    #: Feature types in output order (scored and unusable ones).
    types: dict[str, str] = field(default_factory=dict)
    #: Scored feature -> its (method, threshold) pairs, primary first.
    methods: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    #: Columns of the current file the reference lacks: nothing to compare them with.
    ignored: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.current.rows


def table_from_columns(columns: Mapping[str, Any], path: str = "<memory>") -> Table:
    """A :class:`~modelmon.datasets.Table` from in-memory columns (numpy
    arrays or lists; lists of strings become categorical columns), for
    notebooks and tests."""
    cols: dict[str, Any] = {}
    for name, values in columns.items():
        arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
        if arr.dtype.kind in "fiub":
            cols[name] = NumericColumn(arr.astype(np.float64))
        else:
            try:
                x = to_float_array(list(arr))
                numeric = all(v is None or isinstance(v, (int, float)) for v in arr)
            except (TypeError, ValueError):
                numeric = False
            cols[name] = NumericColumn(x) if numeric else categorical_from_values(arr)
    rows = len(next(iter(cols.values()))) if cols else 0
    return Table(path=Path(path), rows=rows, columns=cols)


def encode(engine: DriftEngine, table: Table) -> Window:
    """Encode ``table`` as the exporter's monitor encodes incoming events:
    numerical values as float64 (non-finite -> NaN) with their reference slot,
    categorical values as codes into the profile's categories (vectorised:
    one lookup per distinct value)."""
    lay = engine.layout
    profs = engine.profile.features
    rows = table.rows
    num_profiles = [profs[n] for n in lay.numerical]
    cat_profiles = [profs[n] for n in lay.categorical]
    num_slots = max((p.slots for p in num_profiles), default=1)
    cat_slots = max((p.slots for p in cat_profiles), default=1)
    # Per-feature arrays (the engine indexes rows): the file's own values are
    # used without a copy unless they hold infinities (missing, as in the exporter).
    num: list[np.ndarray] = []
    num_bin: list[np.ndarray] = []
    num_counts = np.zeros((max(len(num_profiles), 1), num_slots), dtype=np.int64)
    for i, prof in enumerate(num_profiles):
        assert isinstance(prof, NumericalProfile)
        col = table[prof.name]
        x = col.values if isinstance(col, NumericColumn) else np.full(rows, math.nan)
        if np.isinf(x).any():
            x = np.where(np.isinf(x), math.nan, x)
        idx = prof.bin_index(x).astype(np.int16)
        num.append(x)
        num_bin.append(idx)
        num_counts[i, : prof.slots] = np.bincount(idx[idx >= 0], minlength=prof.slots)
    cat = np.full((max(len(cat_profiles), 1), rows), -1, dtype=np.int32)
    cat_counts = np.zeros((max(len(cat_profiles), 1), cat_slots), dtype=np.int64)
    for i, prof in enumerate(cat_profiles):
        assert isinstance(prof, CategoricalProfile)
        col = table[prof.name]
        if isinstance(col, CategoricalColumn):
            codes = prof.column_codes(col)
            cat[i] = codes
            cat_counts[i, : prof.slots] = np.bincount(codes[codes >= 0], minlength=prof.slots)
    return Window(size=rows, columns={"num": num, "num_bin": num_bin, "cat": cat},  # type: ignore[dict-item]
                  counts={"num_bin": num_counts, "cat": cat_counts})


def run(
    reference: str | Path,
    current: str | Path,
    features: Sequence[FeatureConfig] | None = None,
    drift: DriftConfig | None = None,
    method: str | None = None,
    dataset_share_threshold: float = 0.5,
    optional: Iterable[str] = (),
    prepare_profile: Callable[[ReferenceProfile, Table], None] | None = None,
) -> BatchResult:
    """Score ``current`` against ``reference`` (a data file or a profile).

    ``features`` come from a config; without them every reference column
    (or profile feature) is a feature, typed by :func:`infer_features` (or
    by the profile); features named in ``optional`` may be absent from the
    current file.  Each method is scored only on at least as many values as
    the exporter requires (``drift.min_samples`` and the method's noise
    floor).  A feature whose column is missing from either file or has no
    usable value is left out of scoring and listed in ``column_errors``; the
    others are scored.  Current columns the reference lacks are ``ignored``.  Raises
    :class:`BatchInputError` / :class:`~modelmon.datasets.DataError` with a
    message naming the file and column for input nothing can be scored on.  ``prepare_profile(profile, table)``
    runs on a profile built from a raw reference file (to fit more sections).
    """
    drift = drift or DriftConfig()
    declared = {f.name: f.type for f in features} if features is not None else {}
    errors: dict[str, str] = {}
    inferred = features is None  # every reference column is a feature
    if looks_like_profile(reference):
        profile = load_reference_profile(reference)
        types = declared or {n: p.type for n, p in profile.features.items()}
        cur = load_table(current, types=types, on_non_numeric="missing")
        known = list(profile.features)
        if features is None:
            features = [FeatureConfig(name=n, type=p.type) for n, p in profile.features.items()]
        for f in features:
            if f.name not in profile.features:
                errors[f.name] = f"column {f.name!r} missing in reference profile {reference}"
    else:
        ref = load_table(reference, types=declared, on_non_numeric="error")
        known = list(ref)
        if features is None:
            # The reference decides the current file's types (infer_features).
            ref_types = {n: _kind(c) for n, c in ref.columns.items() if not isinstance(c, EmptyColumn)}
            cur = load_table(current, types=ref_types, on_non_numeric="missing")
            features = infer_features(ref, cur)
        else:
            cur = load_table(current, types=declared, on_non_numeric="missing")
        for f in features:
            if f.name not in ref:
                errors[f.name] = f"column {f.name!r} missing in reference file {reference}"
            elif why := _unusable(ref[f.name], f.type):
                errors[f.name] = f"{reference}: column {f.name!r} {why}"
        # Columns the current file lacks are profiled all the same: the
        # profile is the one `modelmon reference build` makes of this file.
        usable = [f for f in features if f.name not in errors]
        try:
            profile = build_profile(ref, usable, bins=drift.bins, sample_size=max(drift.reference_sample_size, ref.rows),
                                    top_k=drift.top_k_categories, discrete_max=drift.discrete_max_values or None)
            if prepare_profile is not None:
                prepare_profile(profile, ref)
        except ValueError as exc:
            raise BatchInputError(f"{reference}: {exc}") from None
        del ref  # the profile holds what scoring needs; free the raw columns before encoding the current file
    optional = set(optional)
    features = [f for f in features if f.name in cur or f.name not in optional]
    if inferred and not any(f.name in cur for f in features):
        raise BatchInputError(f"{reference} and {current} share no columns")
    for f in features:
        if f.name in errors:
            continue
        if f.name not in cur:
            errors[f.name] = f"column {f.name!r} missing in current file {current}"
        elif why := _unusable(cur[f.name], f.type):
            errors[f.name] = f"{current}: column {f.name!r} {why}"
    scored = [f for f in features if f.name not in errors]
    if not scored:
        raise BatchInputError("no feature can be scored: " + "; ".join(errors.values()))
    try:
        engine = DriftEngine(scored, profile, drift, dataset_share_threshold, force_method=method, log_errors=False)
    except (KeyError, ValueError) as exc:
        raise BatchInputError(str(exc).strip("'\"")) from None
    win = encode(engine, cur)
    report = engine.compute("batch", win.size, win.columns, win.counts)
    watched = {f.name for f in features}
    return BatchResult(report=report, profile=profile, current=cur, column_errors=errors,
                       types={f.name: f.type for f in features},
                       methods={p.name: list(p.methods) for p in engine.plans},
                       ignored=[n for n in cur if n not in known and n not in watched])


def _kind(col: Any) -> str:
    return "categorical" if isinstance(col, CategoricalColumn) else "numerical"


def _unusable(col: Any, ftype: str) -> str | None:
    """Why a column cannot be scored as ``ftype``, or None."""
    if isinstance(col, EmptyColumn):
        return f"has {col.problem}"
    if ftype == "numerical":
        if isinstance(col, CategoricalColumn):
            return "is text, not numbers"
        if not np.isfinite(col.values).any():
            return f"has no numerical values (all {len(col)} missing, NaN, infinite or non-numeric)"
    elif isinstance(col, CategoricalColumn) and not (col.codes >= 0).any():
        return f"has no values (all {len(col)} missing)"
    return None


def report_json(result: BatchResult) -> dict[str, Any]:
    """The JSON document ``modelmon drift`` prints (strict JSON: no NaN).

    Per feature, ``status`` is ``"ok"`` (a verdict), ``"below_min_values"``
    (fewer current values than the exporter scores the primary method on:
    ``statistic`` and ``drifted`` are null, and the feature does not count
    toward dataset drift) or ``"error"`` (``error`` says why: an unusable
    column, or a statistic that is not finite).  ``dataset.total_features``
    counts the features with a verdict; a column missing from either file
    is an ``"error"`` (an unusable feature).  ``ignored_columns`` lists the
    current file's columns the reference lacks."""
    report, profile = result.report, result.profile
    feats: dict[str, Any] = {}
    total = drifted = below = unusable = 0
    for name, ftype in result.types.items():
        fr = report.features.get(name)
        if fr is None:
            unusable += 1
            feats[name] = {"type": ftype, "method": None, "status": "error", "error": result.column_errors[name],
                           "statistic": None, "p_value": None, "threshold": None, "drifted": None}
            continue
        primary = fr.results.get(fr.primary)
        need = fr.required.get(fr.primary, 1)
        if primary is not None:
            status = "ok"
            total += 1
            drifted += int(primary.drifted)
        elif fr.primary in fr.errors:
            status = "error"
            unusable += 1
        else:
            status = "below_min_values"
            below += 1
        entry: dict[str, Any] = {
            "type": fr.type,
            "method": fr.primary,
            "status": status,
            "statistic": None if primary is None else primary.statistic,
            "p_value": None if primary is None else primary.p_value,
            "threshold": dict(result.methods[name]).get(fr.primary),
            "drifted": None if primary is None else primary.drifted,
            "values": fr.n,
            # The exporter's noise floor (docs/drift.md): below it, no verdict.
            "min_values": need,
            "below_min_values": fr.n < need,
            "missing_ratio": fr.missing_ratio,
            **({"out_of_range_ratio": fr.out_of_range_ratio} if fr.type == "numerical" else {}),
            **({"new_category_ratio": fr.new_category_ratio} if fr.type == "categorical" else {}),
            "methods": {},
        }
        if status == "error":
            entry["error"] = fr.errors[fr.primary]
        for m, thr in result.methods[name]:
            r = fr.results.get(m)
            entry["methods"][m] = {
                "statistic": None if r is None else r.statistic, "p_value": None if r is None else r.p_value,
                "threshold": thr, "drifted": None if r is None else r.drifted, "min_values": fr.required.get(m, 1),
                "status": "ok" if r is not None else ("error" if m in fr.errors else "below_min_values"),
                **({"error": fr.errors[m]} if m in fr.errors else {}),
            }
        feats[name] = entry
    return {
        "features": feats,
        "dataset": {
            "drifted_features": drifted,
            "total_features": total,
            "drifted_share": (drifted / total) if total else None,
            "drifted": bool(report.dataset_drifted),
            "below_min_values_features": below,
            "unusable_features": unusable,
        },
        "reference": {"rows": profile.rows, "profile_hash": profile.hash},
        "current": {"rows": result.rows},
        # Only in the current file: no reference to compare with, so not scored.
        "ignored_columns": list(result.ignored),
    }


def report_table(doc: Mapping[str, Any]) -> str:
    """A fixed-width table of the JSON document, for humans."""
    head = ("feature", "type", "method", "statistic", "p_value", "threshold", "drifted", "values", "status")
    rows = [head]
    for name, f in doc["features"].items():
        rows.append((name, f["type"], f["method"] or "-",
                     "-" if f["statistic"] is None else f"{f['statistic']:.6g}",
                     "-" if f["p_value"] is None else f"{f['p_value']:.4g}",
                     "-" if f["threshold"] is None else f"{f['threshold']:g}",
                     "-" if f["drifted"] is None else ("yes" if f["drifted"] else "no"),
                     str(f.get("values", "-")),
                     {"ok": "ok", "below_min_values": f"below min_values ({f.get('min_values')})",
                      "error": "error"}[f["status"]]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    d = doc["dataset"]
    lines.append("")
    share = "-" if d["drifted_share"] is None else f"{d['drifted_share']:.3f}"
    lines.append(f"dataset: {d['drifted_features']}/{d['total_features']} features drifted "
                 f"(share {share}) -> {'DRIFT' if d['drifted'] else 'no drift'}")
    if d["below_min_values_features"]:
        lines.append(f"{d['below_min_values_features']} feature(s) below min_values: no verdict, not counted")
    for name, f in doc["features"].items():
        if f["status"] == "error":
            lines.append(f"error: {name}: {f['error']}")
    if doc.get("ignored_columns"):
        lines.append(f"ignored (not in the reference, not scored): {', '.join(doc['ignored_columns'])}")
    return "\n".join(lines)
