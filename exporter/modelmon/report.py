"""The drift report as one self-contained HTML file (``modelmon drift --format html``).

Input is the batch command's JSON document (:func:`modelmon.drift.batch.report_json`)
plus per-feature reference-vs-current histograms (:func:`histograms`), so the
HTML shows exactly the numbers the JSON has.  The page needs no network and
no plotting library: styles and the few lines of table-sorting script are
inline, charts are SVG drawn here, and a Content-Security-Policy forbids
loading anything at all, so a report attached to a CI run or an incident
ticket opens the same anywhere, offline, years later.

Histograms: numerical features get equal-width bins over the range both data
sets cover (the reference from the profile's sorted sample, the current
values clipped to the reference range widened by the current's 0.5-99.5 %
percentiles, so one outlier cannot squash the chart); categorical features get
the profile's categories plus ``__other__``.  Bars are shares of each data set.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import __version__
from .datasets import CategoricalColumn, EmptyColumn, NumericColumn, Table
from .drift.reference import (
    CategoricalProfile,
    NumericalProfile,
    ReferenceProfile,
    to_float_array,
)
from .estimation.batch import html_section as label_free_html
from .explain.batch import html_section as explain_html

NUMERICAL_BINS = 30


@dataclass
class Histogram:
    """Reference and current shares over the same bins (``labels`` for categories, ``edges`` for numbers)."""

    feature: str
    type: str
    reference: list[float]
    current: list[float]
    edges: list[float] | None = None
    labels: list[str] | None = None
    #: Current values outside the plotted range, counted in the first/last bin.
    clipped: int = 0


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * len(counts)


def numerical_histogram(profile: NumericalProfile, values: Sequence[Any] | np.ndarray, bins: int = NUMERICAL_BINS) -> Histogram:
    ref = np.asarray(profile.sample, dtype=np.float64)
    cur = to_float_array(values)
    cur = cur[np.isfinite(cur)]
    lo, hi = profile.min, profile.max
    if cur.size:
        with np.errstate(over="ignore", invalid="ignore"):  # percentiles of values near 1e308 may overflow
            p_lo, p_hi = float(np.percentile(cur, 0.5)), float(np.percentile(cur, 99.5))
        lo = min(lo, p_lo) if math.isfinite(p_lo) else min(lo, float(cur.min()))
        hi = max(hi, p_hi) if math.isfinite(p_hi) else max(hi, float(cur.max()))
    if hi <= lo:
        pad = max(0.5, abs(lo) * 1e-9)
        lo, hi = lo - pad, hi + pad
    # lo * (1 - t) + hi * t, not linspace's lo + t * (hi - lo): hi - lo overflows for values near +-1e308
    t = np.linspace(0.0, 1.0, bins + 1)
    edges = lo * (1.0 - t) + hi * t
    clipped = int(((cur < lo) | (cur > hi)).sum())
    ref_counts, _ = np.histogram(np.clip(ref, lo, hi), bins=edges)
    cur_counts, _ = np.histogram(np.clip(cur, lo, hi), bins=edges)
    return Histogram(profile.name, "numerical", _shares(ref_counts), _shares(cur_counts), edges=edges.tolist(), clipped=clipped)


def categorical_histogram(profile: CategoricalProfile, values: Sequence[Any] | CategoricalColumn) -> Histogram:
    if isinstance(values, CategoricalColumn):
        codes = profile.column_codes(values)
    else:
        present = [v for v in values if v is not None and v != "" and not (isinstance(v, float) and math.isnan(v))]
        codes = profile.codes(present)
    cur_counts = np.bincount(codes[codes >= 0], minlength=profile.slots)
    return Histogram(profile.name, "categorical", _shares(np.asarray(profile.counts)), _shares(cur_counts),
                     labels=profile.slot_labels())


def histograms(profile: ReferenceProfile, current: Mapping[str, Sequence[Any]] | Table,
               features: Sequence[str]) -> dict[str, Histogram]:
    """Per-feature histograms of the current table against the frozen profile."""
    out: dict[str, Histogram] = {}
    for name in features:
        prof = profile.features.get(name)
        if prof is None or name not in current:
            continue
        col = current[name]
        if isinstance(prof, NumericalProfile):
            if isinstance(col, (CategoricalColumn, EmptyColumn)):
                continue  # reported as an unusable column
            out[name] = numerical_histogram(prof, col.values if isinstance(col, NumericColumn) else col)
        else:
            if isinstance(col, (NumericColumn, EmptyColumn)):
                continue
            out[name] = categorical_histogram(prof, col)
    return out


# --------------------------------------------------------------------------- SVG

_W, _H, _PAD_L, _PAD_B, _PAD_T = 420, 170, 40, 34, 18


def _num(x: float) -> str:
    return f"{x:,.0f}" if 1e4 <= abs(x) < 1e9 else f"{x:.4g}"


def svg_chart(h: Histogram) -> str:
    """Reference (filled) and current (outlined) shares side by side; axes labelled."""
    n = len(h.reference)
    top = max(max(h.reference, default=0.0), max(h.current, default=0.0)) or 1.0
    plot_w, plot_h = _W - _PAD_L - 8, _H - _PAD_B - _PAD_T
    bw = plot_w / max(n, 1)
    parts = [(f'<svg class="chart" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img" '
              f'aria-label="{html.escape(h.feature)}: reference vs current distribution">')]
    y0 = _PAD_T + plot_h
    for frac, label in ((0.0, "0"), (0.5, f"{top / 2:.0%}" if top < 1 else f"{top / 2:.2g}"), (1.0, f"{top:.0%}")):
        y = y0 - frac * plot_h
        parts.append(f'<line x1="{_PAD_L}" y1="{y:.1f}" x2="{_W - 8}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{_PAD_L - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">{label}</text>')
    for i, (r, c) in enumerate(zip(h.reference, h.current, strict=True)):
        x = _PAD_L + i * bw
        tip = html.escape(_bin_name(h, i))
        rh, ch = r / top * plot_h, c / top * plot_h
        if h.type == "categorical":  # side by side: categories are few
            w = bw * 0.4
            parts.append(f'<rect x="{x + bw * 0.1:.1f}" y="{y0 - rh:.1f}" width="{w:.1f}" height="{rh:.1f}" class="ref">'
                         f'<title>{tip}: reference {r:.1%}</title></rect>')
            parts.append(f'<rect x="{x + bw * 0.5:.1f}" y="{y0 - ch:.1f}" width="{w:.1f}" height="{ch:.1f}" class="cur">'
                         f'<title>{tip}: current {c:.1%}</title></rect>')
        else:  # overlaid: reference filled, current outlined
            parts.append(f'<rect x="{x:.1f}" y="{y0 - rh:.1f}" width="{bw:.1f}" height="{rh:.1f}" class="ref">'
                         f'<title>{tip}: reference {r:.1%}</title></rect>')
            parts.append(f'<rect x="{x + 1:.1f}" y="{y0 - ch:.1f}" width="{max(bw - 2, 0.5):.1f}" height="{ch:.1f}" class="cur">'
                         f'<title>{tip}: current {c:.1%}</title></rect>')
    if h.type == "categorical" and h.labels:
        for i, label in enumerate(h.labels):
            x = _PAD_L + (i + 0.5) * bw
            short = label if len(label) <= 10 else label[:9] + "…"
            parts.append(f'<text x="{x:.1f}" y="{y0 + 14}" class="tick" text-anchor="middle">{html.escape(short)}</text>')
    elif h.edges:
        for x_val, anchor, x in ((h.edges[0], "start", _PAD_L), (h.edges[len(h.edges) // 2], "middle", _PAD_L + plot_w / 2),
                                 (h.edges[-1], "end", _W - 8)):
            parts.append(f'<text x="{x:.1f}" y="{y0 + 14}" class="tick" text-anchor="{anchor}">{_num(x_val)}</text>')
    parts.append(f'<rect x="{_PAD_L}" y="{_H - 13}" width="10" height="8" class="ref"/>'
                 f'<text x="{_PAD_L + 14}" y="{_H - 5}" class="tick">reference</text>'
                 f'<rect x="{_PAD_L + 80}" y="{_H - 13}" width="10" height="8" class="cur"/>'
                 f'<text x="{_PAD_L + 94}" y="{_H - 5}" class="tick">current</text>')
    parts.append("</svg>")
    return "".join(parts)


def _bin_name(h: Histogram, i: int) -> str:
    if h.labels is not None:
        return h.labels[i]
    assert h.edges is not None
    return f"[{_num(h.edges[i])}, {_num(h.edges[i + 1])})"


# --------------------------------------------------------------------------- page

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;
  color:#1d2330;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}h3{font-size:15px;margin:0 0 6px}
.meta{color:#5a6275;font-size:12.5px}
.verdict{padding:12px 16px;border-radius:6px;margin:16px 0;font-size:16px;font-weight:600}
.verdict.drift{background:#fde8e8;color:#8b1a1a;border:1px solid #f3b4b4}
.verdict.ok{background:#e6f5ea;color:#185c2c;border:1px solid #a9dcb7}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:5px 8px;border-bottom:1px solid #e3e6ed;text-align:left;white-space:nowrap}
th{background:#f4f6fa;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right}.yes{color:#b42318;font-weight:600}.no{color:#2e7d32}.na{color:#8a6d00}
.features{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:14px}
.card{border:1px solid #e3e6ed;border-radius:6px;padding:10px 12px}.card.drifted{border-color:#f3b4b4}
.card p{margin:2px 0 6px;font-size:12.5px;color:#3d4455}
.chart .ref{fill:#7b93c6;fill-opacity:.75}.chart .cur{fill:#f0a35e;fill-opacity:.25;stroke:#d9731f;stroke-width:1.2}
.chart .grid{stroke:#e3e6ed}.chart .tick{font-size:10.5px;fill:#5a6275}
"""

#: Click a header to sort by it (numbers numerically, via data-v); click again to reverse.
_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var tbody = th.closest("table").tBodies[0];
    var asc = th.getAttribute("aria-sort") !== "ascending";
    th.closest("tr").querySelectorAll("th").forEach(function (o) { o.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var key = function (tr) {
      var c = tr.cells[col]; var v = c.getAttribute("data-v"); return v === null ? c.textContent : parseFloat(v);
    };
    Array.prototype.slice.call(tbody.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      if (typeof x === "number" && isNaN(x)) { return 1; } if (typeof y === "number" && isNaN(y)) { return -1; }
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    }).forEach(function (tr) { tbody.appendChild(tr); });
  });
});
"""

_STATUS = {"ok": "ok", "below_min_values": "below min_values", "error": "error"}

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def _cell(value: Any, fmt: str = "{:.4g}") -> str:
    if value is None:
        return '<td class="num" data-v="NaN">–</td>'
    if isinstance(value, bool):
        return f'<td class="{"yes" if value else "no"}" data-v="{int(value)}">{"yes" if value else "no"}</td>'
    if isinstance(value, (int, float)):
        v = float(value)
        shown = fmt.format(v) if math.isfinite(v) else str(v)
        return f'<td class="num" data-v="{v if math.isfinite(v) else "NaN"}">{shown}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def render_html(doc: Mapping[str, Any], hists: Mapping[str, Histogram], title: str = "Drift report",
                sources: Mapping[str, str] | None = None, generated_at: float | None = None) -> str:
    """The report page for a ``modelmon drift`` JSON document and its histograms."""
    ds = doc["dataset"]
    feats: Mapping[str, Any] = doc["features"]
    drifted = bool(ds["drifted"])
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(generated_at if generated_at is not None else time.time()))
    src = sources or {}
    meta = [f"generated {when} by modelmon {html.escape(__version__)}"]
    ref, cur = doc.get("reference", {}), doc.get("current", {})
    meta.append(f"reference: {html.escape(src.get('reference', ''))} ({ref.get('rows', '?')} rows, profile "
                f"{html.escape(str(ref.get('profile_hash', '?')))})")
    meta.append(f"current: {html.escape(src.get('current', ''))} ({cur.get('rows', '?')} rows)")
    share = "–" if ds["drifted_share"] is None else f"{ds['drifted_share']:.2f}"
    verdict = (f"Dataset drift: {'YES' if drifted else 'no'} — {ds['drifted_features']} of {ds['total_features']} "
               f"features drifted (share {share}; features with a verdict)")
    notes = []
    if ds.get("below_min_values_features"):
        notes.append(f"{ds['below_min_values_features']} feature(s) had fewer current values than the method's "
                     "min_values: no verdict, not counted.")
    if ds.get("unusable_features"):
        notes.append(f"{ds['unusable_features']} feature(s) could not be scored (see below).")
    if doc.get("ignored_columns"):
        notes.append("Ignored (only in the current file, not scored): " + ", ".join(doc["ignored_columns"]) + ".")
    rows = []
    for name, f in feats.items():
        quality = f.get("out_of_range_ratio", f.get("new_category_ratio"))
        rows.append("<tr>" + "".join([
            f'<td><a href="#f-{html.escape(name, quote=True)}">{html.escape(name)}</a></td>', _cell(f["type"]),
            _cell(f["method"] or "–"), _cell(f["statistic"]), _cell(f["p_value"]), _cell(f["threshold"], "{:g}"),
            _cell(f["drifted"]), _cell(f.get("values"), "{:.0f}"), _cell(f.get("missing_ratio"), "{:.2%}"),
            _cell(quality, "{:.2%}"), _cell(_STATUS[f["status"]]),
        ]) + "</tr>")
    cards = []
    for name, f in sorted(feats.items(), key=lambda kv: (not kv[1]["drifted"], kv[0])):
        h = hists.get(name)
        if f["status"] == "ok":
            stat = f"{f['method']} statistic {f['statistic']:.4g}"
            if f.get("p_value") is not None:
                stat += f", p-value {f['p_value']:.4g} (drift below {f['threshold']:g})"
            else:
                stat += f" (drift at or above {f['threshold']:g})"
            badge = ("yes", "drifted") if f["drifted"] else ("no", "no drift")
        elif f["status"] == "below_min_values":
            stat = (f"{f['method']}: {f['values']} current values, below the {f['min_values']} the exporter scores "
                    "it on: no verdict")
            badge = ("na", "below min_values")
        else:
            stat = f"not scored: {f['error']}"
            badge = ("na", "error")
        others = [f"{m} {r['statistic']:.3g}{' drifted' if r['drifted'] else ''}" for m, r in f.get("methods", {}).items()
                  if m != f["method"] and r["status"] == "ok" and f["status"] == "ok"]
        note = f"; {h.clipped} current values outside the plotted range are counted in the end bins" if h and h.clipped else ""
        cards.append(
            f'<div class="card{" drifted" if f["drifted"] else ""}" id="f-{html.escape(name, quote=True)}">'
            f'<h3>{html.escape(name)} <span class="{badge[0]}">{badge[1]}</span></h3>'
            f"<p>{html.escape(f['type'])}; {html.escape(stat)}"
            f"{html.escape('; also ' + ', '.join(others)) if others else ''}{html.escape(note)}</p>"
            f"{svg_chart(h) if h else '<p>(no histogram)</p>'}</div>"
        )
    head = ("feature", "type", "method", "statistic", "p-value", "threshold", "drifted", "values", "missing",
            "out of range / new category", "status")
    return "".join([
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", "".join(f'<div class="meta">{m}</div>' for m in meta),
        f'<div class="verdict {"drift" if drifted else "ok"}">{html.escape(verdict)}</div>',
        "".join(f'<p class="meta">{html.escape(n)}</p>' for n in notes),
        '<h2>Features</h2><p class="meta">Click a column to sort.</p>',
        '<table class="sortable" id="features"><thead><tr>', "".join(f"<th>{h}</th>" for h in head),
        "</tr></thead><tbody>", "".join(rows), "</tbody></table>", label_free_html(doc), explain_html(doc),
        "<h2>Distributions: reference vs current</h2>", '<div class="features">', "".join(cards), "</div>",
        f"<script>{_JS}</script></body></html>\n",
    ])


def write_report(doc: Mapping[str, Any], profile: ReferenceProfile, current: Mapping[str, Sequence[Any]] | Table,
                 reference_path: str, current_path: str, title: str | None = None) -> str:
    """Histograms + page in one call (what ``modelmon drift --format html`` uses)."""
    hists = histograms(profile, current, list(doc["features"]))
    return render_html(doc, hists, title=title or f"Drift report: {current_path}",
                       sources={"reference": reference_path, "current": current_path})
