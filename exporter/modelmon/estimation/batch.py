"""Label-free sections of ``modelmon drift``: estimated performance and
multivariate drift of a current table, whole and per consecutive chunk.

The table is encoded with the same functions the exporter's monitor uses
(:mod:`.sections`) and scored by the same fitted estimators, so a chunk of
``n`` rows reports what a window holding those rows reports on ``/metrics``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..chunking import split_fixed
from ..config import PREDICTION_FEATURE, SCORE_FEATURE, ModelConfig
from ..drift.reference import ReferenceProfile
from .cbpe import realized_metrics
from .sections import (
    LABEL,
    Columns,
    Estimators,
    encode_features,
    positive_indicator,
    scores_array,
)


def evaluate(estimators: Estimators, profile: ReferenceProfile, table: Columns,
             model: ModelConfig, rows: int, chunk_size: int | None = None, path: str = "") -> dict[str, Any]:
    """JSON sections ``estimated_performance`` and ``multivariate`` (those
    enabled) for the whole table, plus ``chunks`` when ``chunk_size`` is set.

    A section whose columns the table lacks is reported as ``{"error": ...}``
    (naming the file and the columns) instead of failing the whole report, as
    a missing feature column is: the per-feature drift is still worth having.
    :func:`unusable_sections` lists such sections.
    """
    cols: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    if estimators.cbpe is not None:
        missing = [c for c in (PREDICTION_FEATURE, SCORE_FEATURE) if c not in table]
        if missing:
            errors["estimated_performance"] = (f"{path}: performance estimation needs the column(s) "
                                               f"{', '.join(repr(c) for c in missing)}")
        else:
            cols["score"] = scores_array(table[SCORE_FEATURE])
            cols["pred_pos"] = positive_indicator(table[PREDICTION_FEATURE], model.positive_class)
            if LABEL in table:
                cols["label_pos"] = positive_indicator(table[LABEL], model.positive_class)
    num: dict[str, np.ndarray] = {}
    codes: dict[str, np.ndarray] = {}
    if estimators.multivariate is not None:
        absent = [n for n in estimators.multivariate.features if n not in table]
        if absent:
            errors["multivariate"] = (f"{path}: multivariate drift needs the column(s) "
                                      f"{', '.join(repr(a) for a in absent)}")
        else:
            num, codes = encode_features(profile, estimators.multivariate.features, table)
    out = _sections(estimators, cols, num, codes, slice(0, rows), errors)
    if chunk_size:
        chunks = []
        for a, b in split_fixed(rows, chunk_size):
            chunks.append({"start": a, "end": b, "rows": b - a,
                           **_sections(estimators, cols, num, codes, slice(a, b), errors)})
        out["chunks"] = chunks
    return out


def unusable_sections(doc: Mapping[str, Any]) -> list[str]:
    """The label-free sections of a report that could not be computed (see :func:`evaluate`)."""
    return [k for k in ("estimated_performance", "multivariate") if "error" in doc.get(k, {})]


def _sections(est: Estimators, cols: Mapping[str, np.ndarray], num: Mapping[str, np.ndarray],
              codes: Mapping[str, np.ndarray], sel: slice, errors: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {name: {"error": message} for name, message in errors.items()}
    if est.cbpe is not None and "estimated_performance" not in errors:
        res = est.cbpe.estimate(cols["score"][sel], cols["pred_pos"][sel])
        realized: Mapping[str, float | None] = {}
        if "label_pos" in cols:
            lab, pred, score = cols["label_pos"][sel], cols["pred_pos"][sel], cols["score"][sel]
            ok = np.isfinite(lab) & np.isfinite(pred) & np.isfinite(score)
            if ok.any():
                realized = realized_metrics(lab[ok], pred[ok], score[ok])
        perf: dict[str, Any] = {"rows": res.n}
        for metric, e in res.estimates.items():
            perf[metric] = {"value": e.value, "lower": e.lower, "upper": e.upper, "sampling_error": e.sampling_error,
                            "realized": realized.get(metric)}
        out["estimated_performance"] = perf
    if est.multivariate is not None and "multivariate" not in errors:
        mv = est.multivariate.evaluate({k: v[sel] for k, v in num.items()}, {k: v[sel] for k, v in codes.items()})
        out["multivariate"] = {
            "rows": mv.n, "reconstruction_error": mv.reconstruction_error, "threshold": mv.upper,
            "lower_threshold": mv.lower, "drifted": mv.drifted, "feature_share": mv.feature_share,
        }
    return out


def any_drifted(doc: Mapping[str, Any]) -> bool:
    """True when the multivariate statistic flags the table or any chunk."""
    parts = [doc, *doc.get("chunks", [])]
    return any(p.get("multivariate", {}).get("drifted") for p in parts)


def _f(v: Any, fmt: str = "{:.4f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def table_lines(doc: Mapping[str, Any]) -> list[str]:
    """Text lines for ``--format table``."""
    lines: list[str] = []
    parts = [("all rows", doc)] + [(f"rows {c['start']}-{c['end'] - 1}", c) for c in doc.get("chunks", [])]
    if "estimated_performance" in doc:
        table: list[tuple[str, ...]] = [("rows", "metric", "estimate", "lower", "upper", "realized")]
        notes = []
        for label, part in parts:
            perf = part["estimated_performance"]
            if "error" in perf:
                notes.append(f"{label}: not computed: {perf['error']}")
                continue
            metrics = [m for m in perf if m != "rows"]
            if not metrics:
                notes.append(f"{label}: {perf['rows']} scored rows, too few for an estimate")
            for m in metrics:
                e = perf[m]
                table.append((label if m == metrics[0] else "", m, _f(e["value"]), _f(e["lower"]), _f(e["upper"]),
                              _f(e["realized"])))
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        lines += ["", "estimated performance (CBPE, no labels needed)"]
        if len(table) > 1:
            lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
        lines += notes
    if "multivariate" in doc:
        lines += ["", "multivariate drift (PCA reconstruction error)"]
        for label, part in parts:
            mv = part["multivariate"]
            if "error" in mv:
                lines.append(f"{label}: not computed: {mv['error']}")
                continue
            if mv["reconstruction_error"] is None:
                lines.append(f"{label}: {mv['rows']} rows, too few")
                continue
            top = sorted(mv["feature_share"].items(), key=lambda kv: -kv[1])[:3]
            lines.append(f"{label}: error {_f(mv['reconstruction_error'])} (thresholds {_f(mv['lower_threshold'])} .. "
                         f"{_f(mv['threshold'])}) -> {'DRIFT' if mv['drifted'] else 'no drift'}; largest shares "
                         + ", ".join(f"{k} {v:.0%}" for k, v in top))
    return lines


def html_section(doc: Mapping[str, Any]) -> str:
    """HTML tables for ``--format html`` (empty when neither section is present)."""
    parts = [("all rows", doc)] + [(f"rows {c['start']}–{c['end'] - 1}", c) for c in doc.get("chunks", [])]
    out = []
    if "estimated_performance" in doc:
        rows = []
        for label, part in parts:
            perf = part["estimated_performance"]
            if "error" in perf:
                rows.append(f"<tr><td>{html.escape(label)}</td><td colspan=\"5\">not computed: "
                            f"{html.escape(perf['error'])}</td></tr>")
                continue
            for m in (k for k in perf if k != "rows"):
                e = perf[m]
                rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
                    label, perf["rows"], m, _f(e["value"]), f"{_f(e['lower'])} – {_f(e['upper'])}", _f(e["realized"]))) + "</tr>")
        out.append("<h2>Estimated performance (CBPE)</h2><p class=\"meta\">From calibrated scores, without labels; "
                   "the band is the sampling error measured on the reference.</p><table><thead><tr>"
                   + "".join(f"<th>{h}</th>" for h in ("rows", "scored", "metric", "estimate", "band", "realized"))
                   + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    if "multivariate" in doc:
        rows = []
        for label, part in parts:
            mv = part["multivariate"]
            if "error" in mv:
                rows.append(f"<tr><td>{html.escape(label)}</td><td colspan=\"5\">not computed: "
                            f"{html.escape(mv['error'])}</td></tr>")
                continue
            top = ", ".join(f"{k} {v:.0%}" for k, v in sorted(mv["feature_share"].items(), key=lambda kv: -kv[1])[:3])
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
                label, mv["rows"], _f(mv["reconstruction_error"]), f"{_f(mv['lower_threshold'])} – {_f(mv['threshold'])}",
                "yes" if mv["drifted"] else "no", top)) + "</tr>")
        out.append("<h2>Multivariate drift (PCA reconstruction error)</h2><table><thead><tr>"
                   + "".join(f"<th>{h}</th>" for h in ("rows", "count", "error", "thresholds", "drifted", "largest shares"))
                   + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    return "".join(out)
