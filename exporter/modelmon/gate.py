"""The release gate: may this candidate model be promoted?

A CI step (``modelmon gate``) that weighs evidence against a gate file and
exits 0 (pass), 1 (fail) or 2 (bad input, or Prometheus unreachable).  It
never passes silently: a check without data fails, a missing evidence file or
an unreachable Prometheus is an error, not a skip.

Evidence comes from

- an offline evaluation file: a JSON object of metrics such as
  ``{"accuracy": 0.93, "f1": 0.91}`` (or the same under ``"metrics"``), and/or
- live Prometheus (canary analysis): the candidate version's error ratio,
  latency quantile, accuracy and drift over a window, compared with the
  current (baseline) version's, queried from the Prometheus HTTP API.  The
  gate queries raw modelmon metrics over its own window, so it needs no
  recording rules and works with any window length.

Gate file (every field optional; durations as in modelmon.yml)::

    evaluation:                         # checks on the evaluation file
      - {metric: accuracy, min: 0.90}
    live:
      prometheus_url: http://prometheus:9090
      model: fraud
      window: 30m
      candidate: {version: "2.0.0", selector: {track: canary}}
      baseline:  {version: "1.4.2", selector: {track: stable}}
      checks:
        - {metric: error_ratio, max: 0.05, max_increase: 0.01}
        - {metric: latency_p95_seconds, max: 0.2, max_ratio: 1.25}
        - {metric: accuracy, min: 0.90, max_decrease: 0.02}
        - {metric: drifted_features_ratio, max: 0.5}

Serving metrics (requests, errors, latency) and the labelled/correct
prediction counters behind accuracy carry a ``version`` label, so a version is
enough to isolate the candidate.  Drift is exported per model, so comparing it
needs ``selector`` labels that separate the two (the canary pods' own
exporter, e.g. a ``track`` target label or ``instance``); the gate refuses to
compare a model with itself.

With no gate file the default gate applies: evaluation accuracy >= 0.90
(``thresholds.release_accuracy_min``)
and, when Prometheus is given, the default serving thresholds (error ratio <=
0.05, p95 latency <= 200 ms; with a baseline also error ratio at most +0.01 and
p95 at most x1.25 the baseline's).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests
import yaml

from .config import ConfigError, ThresholdsConfig, build_dataclass, format_duration

PASS, FAIL, NO_DATA = "pass", "fail", "no_data"
_LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUANTILE_RE = re.compile(r"^latency_p(\d{1,2}(?:\.\d+)?)_seconds$")


class GateInputError(Exception):
    """Bad input or unreachable evidence: exit code 2."""


# --------------------------------------------------------------------------- gate file


@dataclass
class CheckConfig:
    """One metric with one or more bounds; each bound becomes one line of the verdict."""

    metric: str
    min: float | None = None
    max: float | None = None
    #: Live only: candidate - baseline <= max_increase (for lower-is-better metrics).
    max_increase: float | None = None
    #: Live only: baseline - candidate <= max_decrease (for higher-is-better metrics).
    max_decrease: float | None = None
    #: Live only: candidate / baseline <= max_ratio.
    max_ratio: float | None = None

    def bounds(self) -> list[tuple[str, float]]:
        return [(k, v) for k in ("min", "max", "max_increase", "max_decrease", "max_ratio") if (v := getattr(self, k)) is not None]


@dataclass
class SideConfig:
    """Which series belong to one side (candidate or baseline)."""

    version: str = ""
    #: Extra label matchers (target labels such as ``track`` or ``instance``).
    selector: dict[str, str] = field(default_factory=dict)


@dataclass
class LiveConfig:
    prometheus_url: str = ""
    model: str = ""
    window_seconds: float = 1800.0
    #: The exporter window whose drift gauge is read (``window`` label).
    drift_window: str = "5m"
    #: Fewer candidate requests than this in the window: serving checks have no data.
    min_requests: int = 100
    #: Fewer labelled predictions than this: accuracy has no data.
    min_labelled: int = 100
    timeout_seconds: float = 10.0
    candidate: SideConfig = field(default_factory=SideConfig)
    baseline: SideConfig | None = None
    checks: list[CheckConfig] = field(default_factory=list)


@dataclass
class GateConfig:
    evaluation: list[CheckConfig] = field(default_factory=list)
    live: LiveConfig | None = None


#: Live metrics: name -> (PromQL template, split by version, support query name).
#: ``{sv}`` is the side's selector with model and version, ``{s}`` without version.
LIVE_METRICS: dict[str, tuple[str, bool, str | None]] = {
    "error_ratio": ("sum(increase(modelmon_request_errors_total{sv}[{w}])) / sum(increase(modelmon_requests_total{sv}[{w}]))",
                    True, "requests"),
    "requests_per_second": ("sum(rate(modelmon_requests_total{sv}[{w}]))", True, None),
    "accuracy": ("sum(increase(modelmon_correct_predictions_total{sv}[{w}])) / sum(increase(modelmon_labelled_events_total{sv}[{w}]))",
                 True, "labelled"),
    "drifted_features_ratio": ("max(max_over_time(modelmon_dataset_drifted_features_ratio{sd}[{w}]))", False, None),
}
SUPPORT = {
    "requests": ("sum(increase(modelmon_requests_total{sv}[{w}]))", "min_requests", "requests"),
    "labelled": ("sum(increase(modelmon_labelled_events_total{sv}[{w}]))", "min_labelled", "labelled predictions"),
}
LATENCY_TEMPLATE = "histogram_quantile({q}, sum by (le) (increase(modelmon_request_duration_seconds_bucket{sv}[{w}])))"


def live_metric(name: str) -> tuple[str, bool, str | None] | None:
    if name in LIVE_METRICS:
        return LIVE_METRICS[name]
    m = _QUANTILE_RE.match(name)
    if m and 0 < float(m.group(1)) < 100:
        return LATENCY_TEMPLATE.replace("{q}", repr(float(m.group(1)) / 100)), True, "requests"
    return None


def default_gate(live: bool, baseline: bool) -> GateConfig:
    """The default gate (evaluation accuracy >= 0.90) plus the default serving thresholds when live."""
    t = ThresholdsConfig()
    gate = GateConfig(evaluation=[CheckConfig(metric="accuracy", min=t.release_accuracy_min)])
    if live:
        gate.live = LiveConfig(checks=default_live_checks(baseline))
    return gate


def default_live_checks(baseline: bool) -> list[CheckConfig]:
    t = ThresholdsConfig()
    return [
        CheckConfig(metric="error_ratio", max=t.error_ratio_max, max_increase=0.01 if baseline else None),
        CheckConfig(metric="latency_p95_seconds", max=t.latency_p95_seconds, max_ratio=1.25 if baseline else None),
    ]


def load_gate(path: str | Path) -> GateConfig:
    """Parse and validate a gate file; errors name the file and field."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GateInputError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise GateInputError(f"{p}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except yaml.YAMLError as exc:
        raise GateInputError(f"{p}: invalid YAML: {exc}") from None
    try:
        gate = build_dataclass(GateConfig, data)
        validate_gate(gate)
    except ConfigError as exc:
        raise GateInputError(str(ConfigError(exc.reason, file=str(p), field_path=exc.field_path))) from None
    return gate


def validate_gate(gate: GateConfig) -> None:
    """Checks the schema cannot express; raises ConfigError with the field path."""
    for i, c in enumerate(gate.evaluation):
        path = f"evaluation[{i}]"
        if not c.bounds():
            raise ConfigError("needs a bound: min or max", field_path=path)
        for k in ("max_increase", "max_decrease", "max_ratio"):
            if getattr(c, k) is not None:
                raise ConfigError("only live checks compare with a baseline", field_path=f"{path}.{k}")
    live = gate.live
    if live is None:
        return
    for side in ("candidate", "baseline"):
        s = getattr(live, side)
        for k, v in (s.selector.items() if s else ()):
            if not _LABEL_RE.match(str(k)) or k in ("model", "version", "__name__") or not isinstance(v, str):
                raise ConfigError("must map label names (not model, version) to string values", field_path=f"live.{side}.selector.{k}")
    if not live.window_seconds > 0:
        raise ConfigError("must be > 0", field_path="live.window")
    same_series = live.baseline is not None and live.baseline.selector == live.candidate.selector
    for i, c in enumerate(live.checks):
        path = f"live.checks[{i}]"
        spec = live_metric(c.metric)
        if spec is None:
            known = ", ".join([*LIVE_METRICS, "latency_pNN_seconds"])
            raise ConfigError(f"unknown live metric {c.metric!r} (known: {known})", field_path=f"{path}.metric")
        if not c.bounds():
            raise ConfigError("needs a bound: min, max, max_increase, max_decrease or max_ratio", field_path=path)
        relative = any(getattr(c, k) is not None for k in ("max_increase", "max_decrease", "max_ratio"))
        if relative and live.baseline is None:
            raise ConfigError("comparing with a baseline needs live.baseline", field_path=path)
        if not spec[1] and same_series:
            raise ConfigError(
                f"{c.metric} is exported per model, not per version: candidate and baseline need different "
                "selectors (e.g. the canary's track or instance label)", field_path=path)


# --------------------------------------------------------------------------- evidence


def load_evaluation(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GateInputError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise GateInputError(f"{p}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise GateInputError(f"{p}: invalid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise GateInputError(f"{p}: expected a JSON object of metrics")
    return data


def evaluation_value(data: dict[str, Any], metric: str, source: str) -> float:
    """``metric`` from the evaluation: a top-level key, a key under ``metrics``, or a dotted path."""
    candidates: list[Any] = []
    if metric in data:
        candidates.append(data[metric])
    if isinstance(data.get("metrics"), dict) and metric in data["metrics"]:
        candidates.append(data["metrics"][metric])
    node: Any = data
    for part in metric.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is not None:
        candidates.append(node)
    if not candidates:
        raise GateInputError(f"{source}: no metric {metric!r} (keys: {', '.join(sorted(map(str, data)))})")
    value = candidates[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GateInputError(f"{source}: {metric}: must be a finite number, got {value!r}")
    return float(value)


class PrometheusAPI:
    """Instant queries against the Prometheus HTTP API (``/api/v1/query``)."""

    def __init__(self, url: str, timeout: float = 10.0, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def scalar(self, query: str) -> float | None:
        """The single value of ``query``; None when it returns nothing (or NaN: 0/0)."""
        try:
            r = self.session.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=self.timeout)
        except requests.Timeout:
            raise GateInputError(f"Prometheus at {self.url} is unreachable: no answer within {self.timeout:g}s") from None
        except requests.ConnectionError as exc:
            reason = getattr(exc.args[0], "reason", exc.args[0]) if exc.args else exc
            raise GateInputError(f"Prometheus at {self.url} is unreachable: {reason}") from None
        except requests.RequestException as exc:
            raise GateInputError(f"Prometheus at {self.url}: {exc}") from None
        try:
            body = r.json()
        except ValueError:
            raise GateInputError(f"Prometheus at {self.url} answered HTTP {r.status_code} without JSON "
                                 "(is this the Prometheus URL?)") from None
        if r.status_code != 200 or body.get("status") != "success":
            raise GateInputError(f"Prometheus rejected the query {query!r}: {body.get('error') or r.status_code}")
        data = body["data"]
        result = data["result"]
        if data["resultType"] == "scalar":
            value = float(result[1])
        elif not result:
            return None
        elif len(result) > 1:
            raise GateInputError(f"query {query!r} returned {len(result)} series; expected one")
        else:
            value = float(result[0]["value"][1])
        return None if math.isnan(value) else value


def _matchers(labels: dict[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def side_queries(live: LiveConfig, side: SideConfig) -> dict[str, str]:
    """The label selectors of one side: with version (``sv``), without (``s``), drift (``sd``)."""
    base = {"model": live.model, **side.selector}
    sv = dict(base)
    if side.version:
        sv["version"] = side.version
    return {"sv": _matchers(sv), "s": _matchers(base), "sd": _matchers({**base, "window": live.drift_window})}


def render_query(template: str, live: LiveConfig, side: SideConfig) -> str:
    q = side_queries(live, side)
    out = template.replace("{w}", format_duration(live.window_seconds))
    for k in ("sv", "sd", "s"):
        out = out.replace("{" + k + "}", q[k])
    return out


# --------------------------------------------------------------------------- verdict


@dataclass
class CheckResult:
    source: str  # evaluation | live
    metric: str
    rule: str
    bound: str
    threshold: float
    candidate: float | None
    baseline: float | None
    observed: float | None  # the value compared with the threshold (a difference or ratio for relative bounds)
    status: str
    detail: str = ""


@dataclass
class GateResult:
    checks: list[CheckResult]
    evidence: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.status == PASS for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "exit_code": self.exit_code, "checks": [asdict(c) for c in self.checks],
                "evidence": self.evidence, "notes": self.notes}


_RULE = {"min": "{m} >= {t:g}", "max": "{m} <= {t:g}", "max_increase": "{m} - baseline <= {t:g}",
         "max_decrease": "baseline - {m} <= {t:g}", "max_ratio": "{m} / baseline <= {t:g}"}


def judge(bound: str, threshold: float, cand: float | None, base: float | None) -> tuple[str, float | None, str]:
    """(status, observed value, detail) of one bound."""
    if cand is None:
        return NO_DATA, None, "no candidate data"
    if bound == "min":
        return (PASS if cand >= threshold else FAIL), cand, ""
    if bound == "max":
        return (PASS if cand <= threshold else FAIL), cand, ""
    if base is None:
        return NO_DATA, None, "no baseline data"
    if bound in ("max_increase", "max_decrease"):
        # Rounded so float noise (0.95 - 0.95 = -2e-16) neither shows nor decides.
        d = round(cand - base if bound == "max_increase" else base - cand, 12) + 0.0
        return (PASS if d <= threshold else FAIL), d, ""
    if base == 0:  # 0/0 counts as "no worse"; anything over a zero baseline is an infinite ratio
        return (PASS, 1.0, "") if cand == 0 else (FAIL, None, "baseline is 0")
    r = cand / base
    return (PASS if r <= threshold else FAIL), r, ""


def evaluate_offline(checks: list[CheckConfig], data: dict[str, Any], source: str) -> list[CheckResult]:
    out = []
    for c in checks:
        value = evaluation_value(data, c.metric, source)
        for bound, thr in c.bounds():
            status, observed, detail = judge(bound, thr, value, None)
            out.append(CheckResult("evaluation", c.metric, _RULE[bound].format(m=c.metric, t=thr), bound, thr,
                                   value, None, observed, status, detail))
    return out


def evaluate_live(live: LiveConfig, api: PrometheusAPI, notes: list[str]) -> list[CheckResult]:
    cache: dict[str, float | None] = {}

    def q(template: str, side: SideConfig) -> float | None:
        query = render_query(template, live, side)
        if query not in cache:
            cache[query] = api.scalar(query)
        return cache[query]

    def support_ok(name: str | None, side: SideConfig, who: str) -> tuple[bool, str]:
        if name is None:
            return True, ""
        template, limit_attr, what = SUPPORT[name]
        n = q(template, side) or 0.0
        limit = getattr(live, limit_attr)
        if n < limit:
            return False, f"{who} has {n:.0f} {what} in {format_duration(live.window_seconds)} (< {limit_attr} {limit})"
        return True, ""

    w = format_duration(live.window_seconds)
    if not live.candidate.version and not live.candidate.selector:
        notes.append(f"candidate = all traffic of model {live.model!r} (no version or selector given)")
    out = []
    for c in live.checks:
        template, by_version, support = live_metric(c.metric)  # type: ignore[misc]
        if not by_version and live.baseline is None and live.candidate.version and not live.candidate.selector:
            notes.append(f"{c.metric} is exported per model: measured over all of {live.model!r}'s traffic, not only "
                         f"version {live.candidate.version}")
        ok_c, why_c = support_ok(support, live.candidate, "candidate")
        cand = q(template, live.candidate) if ok_c else None
        base = None
        why_b = ""
        if live.baseline is not None:
            ok_b, why_b = support_ok(support, live.baseline, "baseline")
            base = q(template, live.baseline) if ok_b else None
        for bound, thr in c.bounds():
            status, observed, detail = judge(bound, thr, cand, base)
            if status == NO_DATA:
                detail = why_c or (why_b if cand is not None else "") or f"{detail} for {live.model!r} in the last {w}"
            out.append(CheckResult("live", c.metric, _RULE[bound].format(m=c.metric, t=thr), bound, thr,
                                   cand, base, observed, status, detail))
    return out


def run_gate(gate: GateConfig, evaluation: str | None, live_overrides: dict[str, Any],
             api_factory: Callable[[str, float], PrometheusAPI] = PrometheusAPI) -> GateResult:
    """Collect the evidence and judge every check.  Raises GateInputError for exit 2."""
    live = gate.live
    for key, value in live_overrides.items():
        if value is None:
            continue
        if live is None:
            live = gate.live = LiveConfig(checks=[])
        if key in ("candidate_version", "baseline_version"):
            side = key.split("_")[0]
            if side == "baseline" and live.baseline is None:
                live.baseline = SideConfig()
            getattr(live, side).version = value
        else:
            setattr(live, key, value)
    if live is not None and not live.checks:
        live.checks = default_live_checks(live.baseline is not None)
    try:
        validate_gate(gate)
    except ConfigError as exc:
        raise GateInputError(f"gate: {exc}") from None
    if not gate.evaluation and live is None:
        raise GateInputError("the gate has no checks")
    evidence: dict[str, Any] = {}
    notes: list[str] = []
    checks: list[CheckResult] = []
    if gate.evaluation:
        if not evaluation:
            raise GateInputError("the gate has evaluation checks: give the evaluation file with --evaluation")
        evidence["evaluation"] = str(evaluation)
        checks += evaluate_offline(gate.evaluation, load_evaluation(evaluation), str(evaluation))
    elif evaluation:
        notes.append(f"{evaluation}: given but the gate has no evaluation checks")
    if live is not None:
        if not live.prometheus_url:
            raise GateInputError("the gate has live checks: give --prometheus.url (or live.prometheus_url)")
        if not live.model:
            raise GateInputError("the gate has live checks: give --model (or live.model)")
        evidence["prometheus"] = {
            "url": live.prometheus_url, "model": live.model, "window": format_duration(live.window_seconds),
            "candidate": asdict(live.candidate), "baseline": asdict(live.baseline) if live.baseline else None,
        }
        api = api_factory(live.prometheus_url, live.timeout_seconds)
        checks += evaluate_live(live, api, notes)
    return GateResult(checks=checks, evidence=evidence, notes=notes)


# --------------------------------------------------------------------------- output


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}"


def format_table(result: GateResult) -> str:
    """The human verdict: one line per bound, then notes."""
    failed = [c for c in result.checks if c.status != PASS]
    head = "RELEASE GATE: " + ("PASS" if result.passed else "FAIL")
    head += f"  ({len(result.checks) - len(failed)}/{len(result.checks)} checks passed)"
    rows = [("source", "check", "candidate", "baseline", "observed", "result")]
    for c in result.checks:
        rows.append((c.source, c.rule, _fmt(c.candidate), _fmt(c.baseline), _fmt(c.observed),
                     c.status.upper().replace("_", " ")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head, ""]
    for r in rows:
        lines.append("  ".join(v.ljust(widths[i]) for i, v in enumerate(r)).rstrip())
    details = [f"  - {c.rule}: {c.detail}" for c in result.checks if c.detail]
    if details:
        lines += ["", "details:", *details]
    if result.notes:
        lines += ["", "notes:", *(f"  - {n}" for n in result.notes)]
    ev = result.evidence.get("prometheus")
    if ev:
        lines += ["", f"live evidence: {ev['url']} model={ev['model']} window={ev['window']} "
                      f"candidate={_side(ev['candidate'])} baseline={_side(ev['baseline'])}"]
    return "\n".join(lines)


def _side(side: dict[str, Any] | None) -> str:
    if not side:
        return "-"
    parts = ([f"version={side['version']}"] if side.get("version") else []) + [f"{k}={v}" for k, v in side["selector"].items()]
    return ",".join(parts) or "(all)"
