"""``modelmon drift`` sections ``outliers`` and ``attributions`` (docs/explainability.md).

The same profile sections the exporter uses (:mod:`modelmon.profile_sections`)
score the current file: the share of its rows above the reference's outlier
threshold, and, when both files carry ``<prefix><feature>`` attribution
columns, the importance of each feature and the rank correlation of the two
importance rankings.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from ..anomaly import OUTLIER_SECTION, OutlierModel
from ..config import FeatureConfig, ModelConfig
from ..drift.reference import ReferenceProfile, to_float_array
from ..estimation.sections import column_values
from .attributions import IMPORTANCE_SECTION, ImportanceProfile, compare_importance


def batch_model(model: ModelConfig | None, profile: ReferenceProfile, reference_columns: Iterable[str] | None,
                current_columns: Iterable[str] | None) -> ModelConfig:
    """The model config the batch sections follow: ``model`` (or one whose features are the
    profile's, less attribution columns), with attributions on when the files carry their
    columns: the reference's (``reference_columns``; None when the reference is a profile,
    which then needs its importance section) and the current file's (None: not checked yet)."""
    if model is None:
        prefix = ModelConfig(name="batch").attributions.column_prefix
        model = ModelConfig(name="batch", features=[FeatureConfig(name=n, type=p.type) for n, p in profile.features.items()
                                                    if not n.startswith(prefix)])
    cols = list(model.attribution_columns().values())
    present = bool(cols)
    if current_columns is not None:
        cur = set(current_columns)
        present = present and all(c in cur for c in cols)
    if reference_columns is not None:
        ref = set(reference_columns)
        present = present and all(c in ref for c in cols)
    else:
        present = present and IMPORTANCE_SECTION in profile.sections
    return replace(model, attributions=replace(model.attributions, enabled=present, drift=False))


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def evaluate(profile: ReferenceProfile, table: Mapping[str, Any], model: ModelConfig, rows: int) -> dict[str, Any]:
    """``outliers`` (always; values None when the profile has no outlier model) and
    ``attributions`` (when ``model.attributions.enabled``)."""
    out: dict[str, Any] = {}
    data = profile.sections.get(OUTLIER_SECTION)
    if data is None:
        out["outliers"] = {"share": None, "reference_share": None, "drifted": None,
                           "note": "the reference profile has no outlier model"}
    else:
        om = OutlierModel.from_section(data)
        num = np.vstack([to_float_array(column_values(table[n])) if n in table else np.full(rows, math.nan)
                         for n in om.numerical]) if om.numerical else np.zeros((0, rows))
        cat = None
        if om.categorical:
            cat = np.vstack([profile.features[n].codes(column_values(table[n])) if n in table  # type: ignore[union-attr]
                             else np.full(rows, -1) for n in om.categorical])
        flags = om.outlying(om.score(num, cat))
        share = float(flags.mean()) if rows else 0.0
        multiple = model.outliers.max_share_multiple
        out["outliers"] = {
            "share": share, "reference_share": om.reference_share, "drifted": share > multiple * om.reference_share,
            "outlying_rows": int(flags.sum()), "rows": rows, "threshold": om.threshold, "quantile": om.quantile,
            "max_share_multiple": multiple,
        }
    if model.attributions.enabled and IMPORTANCE_SECTION in profile.sections:
        imp = ImportanceProfile.from_section(profile.sections[IMPORTANCE_SECTION])
        cols = model.attribution_columns()
        mat = np.vstack([to_float_array(column_values(table[cols[f]])) for f in imp.features])
        mat[~np.isfinite(mat)] = math.nan
        cmp = compare_importance(mat, imp, model.attributions.min_rank_correlation, min_samples=1)
        out["attributions"] = {
            "rank_correlation": cmp.rank_correlation, "threshold": cmp.threshold, "drifted": cmp.drifted,
            "features": {f: {"importance": _num(cmp.importance[i]), "reference_importance": _num(cmp.reference_importance[i]),
                             "share": _num(cmp.shares[i]), "reference_share": _num(cmp.reference_shares[i])}
                         for i, f in enumerate(cmp.features)},
        }
    return out


def any_drifted(doc: Mapping[str, Any]) -> bool:
    return bool(doc.get("outliers", {}).get("drifted")) or bool(doc.get("attributions", {}).get("drifted"))


def _f(v: Any, fmt: str = "{:.4f}") -> str:
    return "-" if v is None else fmt.format(v)


def table_lines(doc: Mapping[str, Any]) -> list[str]:
    """Text lines for ``--format table``."""
    lines: list[str] = []
    o = doc.get("outliers")
    if o is not None:
        lines += ["", "outlying rows (score above the reference's quantile)"]
        if o["share"] is None:
            lines.append(o["note"])
        else:
            lines.append(f"share {o['share']:.4f} ({o['outlying_rows']}/{o['rows']}), reference {o['reference_share']:.4f}, "
                         f"limit x{o['max_share_multiple']:g} -> {'OUTLIERS' if o['drifted'] else 'ok'}")
    a = doc.get("attributions")
    if a is not None:
        lines += ["", "feature importance (mean |attribution|)"]
        rows = [("feature", "importance", "reference", "share", "reference share")]
        for f, v in a["features"].items():
            rows.append((f, _f(v["importance"], "{:.6g}"), _f(v["reference_importance"], "{:.6g}"),
                         _f(v["share"], "{:.3f}"), _f(v["reference_share"], "{:.3f}")))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        verdict = "-" if a["drifted"] is None else ("RANKING CHANGED" if a["drifted"] else "same ranking")
        lines.append(f"rank correlation {_f(a['rank_correlation'])} (threshold {a['threshold']:g}) -> {verdict}")
    return lines


def html_section(doc: Mapping[str, Any]) -> str:
    """HTML for ``--format html`` (empty when neither section is present)."""
    out = []
    o = doc.get("outliers")
    if o is not None:
        if o["share"] is None:
            out.append(f"<h2>Outlying rows</h2><p class=\"meta\">{html.escape(o['note'])}</p>")
        else:
            out.append(f"<h2>Outlying rows</h2><p>Share {_f(o['share'])} ({o['outlying_rows']} / {o['rows']} rows "
                       f"above the reference's {o['quantile']:.1%} score quantile), reference {_f(o['reference_share'])}, "
                       f"limit × {o['max_share_multiple']:g}: {'too many outliers' if o['drifted'] else 'ok'}</p>")
    a = doc.get("attributions")
    if a is not None:
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            f, _f(v["importance"], "{:.6g}"), _f(v["reference_importance"], "{:.6g}"), _f(v["share"], "{:.3f}"),
            _f(v["reference_share"], "{:.3f}"))) + "</tr>" for f, v in a["features"].items())
        verdict = "-" if a["drifted"] is None else ("yes" if a["drifted"] else "no")
        out.append(f"<h2>Feature importance</h2><p class=\"meta\">Rank correlation with the reference "
                   f"{_f(a['rank_correlation'])} (threshold {a['threshold']:g}); ranking changed: {verdict}</p>"
                   "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in (
                       "feature", "importance", "reference", "share", "reference share"))
                   + "</tr></thead><tbody>" + rows + "</tbody></table>")
    return "".join(out)
