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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..config import DriftConfig, FeatureConfig
from ..datasets import DataError, load_table
from .engine import DriftEngine, DriftReport
from .reference import CategoricalProfile, NumericalProfile, ReferenceProfile, build_profile, to_float_array


class BatchInputError(ValueError):
    """Input the batch command cannot use; the message names the file and column."""


def is_numeric_column(values: Sequence[Any]) -> bool:
    """True when every present value reads as a number, ``nan`` and ``inf``
    included (the CLI's type rule: a column is categorical when the config
    says so or when it is non-numeric).  JSON booleans are categorical."""
    present = [v for v in values if v is not None and v != ""]
    if not present:
        return True  # decided by the other table, or reported as empty
    if any(type(v) is bool for v in present):
        return False
    try:
        return np.asarray(present, dtype=np.float64).ndim == 1
    except (TypeError, ValueError):
        return False


def infer_features(ref: Mapping[str, Sequence[Any]], cur: Mapping[str, Sequence[Any]]) -> list[FeatureConfig]:
    """Features for the columns both tables share, in the reference's order.

    The reference decides the type (the current table when the reference
    column is empty): a stray non-numeric value in the current data is then
    counted as missing, as the exporter counts it, instead of turning a
    numerical feature into a categorical one."""
    out = []
    for name in ref:
        if name in cur:
            has_ref = any(v is not None and v != "" for v in ref[name])
            numeric = is_numeric_column(ref[name] if has_ref else cur[name])
            out.append(FeatureConfig(name=name, type="numerical" if numeric else "categorical"))
    return out


def looks_like_profile(path: str | Path) -> bool:
    """Profiles are ``.json`` files (data files are CSV, ``.jsonl`` or
    Parquet), the same rule the exporter's ``reference.path`` follows."""
    return Path(path).suffix.lower() == ".json"


def load_reference_profile(path: str | Path) -> ReferenceProfile:
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    try:
        return ReferenceProfile.load(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BatchInputError(f"{path}: not a valid reference profile: {exc}") from None


@dataclass
class Window:
    """A table encoded like a window snapshot: ``size`` rows, the columns the
    engine may read and the per-slot counts it always reads."""

    size: int
    columns: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]


def encode(engine: DriftEngine, table: Mapping[str, Sequence[Any]], rows: int) -> Window:
    """Encode ``table`` as the exporter's monitor encodes incoming events:
    numerical values as float64 (non-finite -> NaN) with their reference slot,
    categorical values as codes into the profile's categories."""
    lay = engine.layout
    profs = engine.profile.features
    num_profiles = [profs[n] for n in lay.numerical]
    cat_profiles = [profs[n] for n in lay.categorical]
    num_slots = max((p.slots for p in num_profiles), default=1)
    cat_slots = max((p.slots for p in cat_profiles), default=1)
    num = np.full((max(len(num_profiles), 1), rows), math.nan)
    num_bin = np.full((max(len(num_profiles), 1), rows), -1, dtype=np.int16)
    num_counts = np.zeros((max(len(num_profiles), 1), num_slots), dtype=np.int64)
    for i, prof in enumerate(num_profiles):
        assert isinstance(prof, NumericalProfile)
        x = to_float_array(table[prof.name])
        x[~np.isfinite(x)] = math.nan
        num[i] = x
        idx = prof.bin_index(x)
        num_bin[i] = idx
        num_counts[i, : prof.slots] = np.bincount(idx[idx >= 0], minlength=prof.slots)
    cat = np.full((max(len(cat_profiles), 1), rows), -1, dtype=np.int32)
    cat_counts = np.zeros((max(len(cat_profiles), 1), cat_slots), dtype=np.int64)
    for i, prof in enumerate(cat_profiles):
        assert isinstance(prof, CategoricalProfile)
        values = [None if v is None or v == "" or (isinstance(v, float) and math.isnan(v)) else v for v in table[prof.name]]
        codes = prof.codes(values)
        cat[i] = codes
        cat_counts[i, : prof.slots] = np.bincount(codes[codes >= 0], minlength=prof.slots)
    return Window(size=rows, columns={"num": num, "num_bin": num_bin, "cat": cat}, counts={"num_bin": num_counts, "cat": cat_counts})


def run(
    reference: str | Path,
    current: str | Path,
    features: Sequence[FeatureConfig] | None = None,
    drift: DriftConfig | None = None,
    method: str | None = None,
    dataset_share_threshold: float = 0.5,
    prepare_profile: Callable[[ReferenceProfile, Mapping[str, Sequence[Any]]], None] | None = None,
) -> tuple[DriftReport, ReferenceProfile, int]:
    """Score ``current`` against ``reference`` (a data file or a profile).

    ``features`` come from a config; without them every shared column is a
    feature, typed by :func:`infer_features` (or by the profile).  Raises
    :class:`BatchInputError` / :class:`~modelmon.datasets.DataError` with a
    message naming the file and column.  ``prepare_profile(profile, table)``
    runs on a profile built from a raw reference file (to fit more sections).
    """
    drift = drift or DriftConfig()
    cur = load_table(current)
    rows = _rows(cur, current)
    if looks_like_profile(reference):
        profile = load_reference_profile(reference)
        if features is None:
            features = [FeatureConfig(name=n, type=p.type) for n, p in profile.features.items() if n in cur]
        missing = [f.name for f in features if f.name not in profile.features]
        if missing:
            raise BatchInputError(f"{reference}: the profile has no feature {', '.join(missing)}")
    else:
        ref = load_table(reference)
        ref_rows = _rows(ref, reference)
        if features is None:
            features = infer_features(ref, cur)
        missing = [f.name for f in features if f.name not in ref]
        if missing:
            raise BatchInputError(f"{reference}: no column {', '.join(repr(m) for m in missing)}")
        _check_present(ref, features, reference)
        try:
            profile = build_profile(ref, features, bins=drift.bins,
                                    sample_size=max(drift.reference_sample_size, ref_rows),
                                    top_k=drift.top_k_categories)
            if prepare_profile is not None:
                prepare_profile(profile, ref)
        except ValueError as exc:
            raise BatchInputError(f"{reference}: {exc}") from None
    if not features:
        raise BatchInputError(f"{reference} and {current} share no columns")
    missing = [f.name for f in features if f.name not in cur]
    if missing:
        raise BatchInputError(f"{current}: no column {', '.join(repr(m) for m in missing)}")
    _check_present(cur, features, current)
    try:
        engine = DriftEngine(features, profile, drift, dataset_share_threshold, force_method=method, min_samples=1)
    except (KeyError, ValueError) as exc:
        raise BatchInputError(str(exc).strip("'\"")) from None
    win = encode(engine, cur, rows)
    return engine.compute("batch", win.size, win.columns, win.counts), profile, rows


def _rows(table: Mapping[str, Sequence[Any]], path: str | Path) -> int:
    lengths = {len(v) for v in table.values()}
    if len(lengths) != 1:
        raise BatchInputError(f"{path}: columns have different lengths")
    rows = lengths.pop()
    if rows == 0:
        raise DataError(f"{path}: no data rows")
    return rows


def _check_present(table: Mapping[str, Sequence[Any]], features: Sequence[FeatureConfig], path: str | Path) -> None:
    """Every feature needs at least one usable value."""
    for f in features:
        col = table[f.name]
        if f.type == "numerical":
            x = to_float_array(col)
            if not np.isfinite(x).any():
                raise BatchInputError(f"{path}: column {f.name!r} has no numerical values (all missing, NaN or non-numeric)")
        elif not any(v is not None and v != "" and not (isinstance(v, float) and math.isnan(v)) for v in col):
            raise BatchInputError(f"{path}: column {f.name!r} has no values (all missing)")


def report_json(report: DriftReport, profile: ReferenceProfile, current_rows: int) -> dict[str, Any]:
    """The issue's JSON shape (plus extra keys: every method's result, data
    quality, the profile hash)."""
    feats: dict[str, Any] = {}
    total = drifted = 0
    for name, fr in report.features.items():
        primary = fr.results.get(fr.primary)
        if primary is None:
            continue
        total += 1
        drifted += int(primary.drifted)
        feats[name] = {
            "type": fr.type,
            "method": fr.primary,
            "statistic": primary.statistic,
            "p_value": primary.p_value,
            "threshold": primary.threshold,
            "drifted": primary.drifted,
            "values": fr.n,
            # The exporter would not score the method on so few values (its
            # noise floor, docs/drift.md): the verdict is shown but unreliable.
            "min_values": fr.required.get(fr.primary, 1),
            "below_min_values": fr.n < fr.required.get(fr.primary, 1),
            "missing_ratio": fr.missing_ratio,
            **({"out_of_range_ratio": fr.out_of_range_ratio} if fr.type == "numerical" else {}),
            **({"new_category_ratio": fr.new_category_ratio} if fr.type == "categorical" else {}),
            "methods": {
                m: {"statistic": r.statistic, "p_value": r.p_value, "threshold": r.threshold, "drifted": r.drifted,
                    "min_values": fr.required.get(m, 1)}
                for m, r in fr.results.items() if r is not None
            },
        }
    share = report.drifted_share if report.drifted_share is not None else 0.0
    return {
        "features": feats,
        "dataset": {
            "drifted_features": drifted,
            "total_features": total,
            "drifted_share": share,
            "drifted": bool(report.dataset_drifted),
        },
        "reference": {"rows": profile.rows, "profile_hash": profile.hash},
        "current": {"rows": current_rows},
    }


def report_table(doc: Mapping[str, Any]) -> str:
    """A fixed-width table of the JSON document, for humans."""
    head = ("feature", "type", "method", "statistic", "p_value", "threshold", "drifted")
    rows = [head]
    for name, f in doc["features"].items():
        rows.append((name, f["type"], f["method"], f"{f['statistic']:.6g}",
                     "-" if f["p_value"] is None else f"{f['p_value']:.4g}", f"{f['threshold']:g}",
                     "yes" if f["drifted"] else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    d = doc["dataset"]
    lines.append("")
    lines.append(f"dataset: {d['drifted_features']}/{d['total_features']} features drifted "
                 f"(share {d['drifted_share']:.3f}) -> {'DRIFT' if d['drifted'] else 'no drift'}")
    return "\n".join(lines)
