"""Pieces every modelmon dashboard shares: label selectors, template
variables, and panel factories with sensible plugin options.

Selectors always carry ``job=~"$job", instance=~"$instance"`` (so one replica
can be singled out) and, for per-model metrics, ``model="$model"``.  Every
``rate()`` uses ``$__rate_interval`` so panels stay correct whatever the scrape
interval and zoom.
"""

from __future__ import annotations

from typing import Any

from .model import Json, Panel, Step, Target, Variable

RATE = "$__rate_interval"

# Units Grafana knows (its unit picker ids).
REQPS = "reqps"
EPS = "eps"  # events per second
RATIO = "percentunit"
SECONDS = "s"
COUNT = "short"
PLAIN = "none"
BYTES = "bytes"


def sel(metric: str, *, model: bool = True, **labels: str) -> str:
    """``metric{job=~"$job", instance=~"$instance", model="$model", ...}``.

    Label values starting with ``=~`` or ``!~`` or ``!=`` keep that operator,
    others are exact matches.
    """
    parts = ['job=~"$job"', 'instance=~"$instance"']
    if model:
        parts.append('model="$model"')
    for name, value in labels.items():
        op = "="
        for candidate in ("=~", "!~", "!="):
            if value.startswith(candidate):
                op, value = candidate, value[len(candidate):]
                break
        parts.append(f'{name}{op}"{value}"')
    return f"{metric}{{{', '.join(parts)}}}"


def rate(selector: str) -> str:
    return f"rate({selector}[{RATE}])"


# ---------------------------------------------------------------- variables

def datasource_var() -> Variable:
    return Variable(
        "datasource", "Data source", "datasource", "prometheus",
        "Prometheus that scrapes modelmon (the provisioned one by default).",
        current="modelmon-prometheus",
    )


def job_var() -> Variable:
    return Variable(
        "job", "Job", "query", "label_values(modelmon_build_info, job)",
        "Scrape jobs that run the modelmon exporter.", include_all=True, multi=True, all_value=".+",
        current="$__all",
    )


def instance_var() -> Variable:
    return Variable(
        "instance", "Instance", "query", 'label_values(modelmon_build_info{job=~"$job"}, instance)',
        "Exporter replicas; pick one to see a single replica.", include_all=True, multi=True,
        all_value=".+", current="$__all",
    )


def model_var() -> Variable:
    # The threshold gauges exist for every configured model from the first
    # scrape, before any traffic, so a new model is selectable at once.
    return Variable(
        "model", "Model", "query",
        'label_values(modelmon_threshold_error_ratio_max{job=~"$job", instance=~"$instance"}, model)',
        "The monitored model (model names from the exporter's config).",
    )


def window_var() -> Variable:
    return Variable(
        "window", "Window", "query",
        'label_values(modelmon_window_events{job=~"$job", instance=~"$instance", model="$model"}, window)',
        "Sliding window the windowed gauges (quality, drift, data quality) are computed over.",
        current="5m",
    )


def base_vars(*extra: Variable) -> list[Variable]:
    return [datasource_var(), job_var(), instance_var(), model_var(), *extra]


# ---------------------------------------------------------------- panels

def _legend(calcs: list[str] | None = None, table: bool = False) -> Json:
    return {
        "calcs": calcs or [],
        "displayMode": "table" if table else "list",
        "placement": "bottom",
        "showLegend": True,
    }


def timeseries(title: str, description: str, unit: str, targets: list[Target], *,
               width: int = 12, height: int = 8, steps: list[Step] | None = None,
               min: float | None = None, max: float | None = None, log: bool = False,
               legend_calcs: list[str] | None = None, fill: int = 10, **kw: Any) -> Panel:
    """A time series.  ``steps`` draw fixed dashed threshold lines; targets
    marked ``threshold=True`` are drawn as dashed red limit lines."""
    custom: Json = {
        "axisBorderShow": False,
        "axisPlacement": "auto",
        "drawStyle": "line",
        "fillOpacity": fill,
        "gradientMode": "none",
        "lineInterpolation": "linear",
        "lineWidth": 1,
        "pointSize": 4,
        "scaleDistribution": {"log": 10, "type": "log"} if log else {"type": "linear"},
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "none"},
        "thresholdsStyle": {"mode": "dashed" if steps else "off"},
    }
    return Panel(
        "timeseries", title, description, unit, targets, width=width, height=height,
        options={"legend": _legend(legend_calcs, table=bool(legend_calcs)),
                 "tooltip": {"mode": "multi", "sort": "desc"}},
        custom=custom, steps=steps or [], min=min, max=max, color={"mode": "palette-classic"}, **kw,
    )


def stat(title: str, description: str, unit: str, targets: list[Target], *,
         width: int = 4, height: int = 4, text_mode: str = "auto", color_mode: str = "none",
         graph: bool = False, **kw: Any) -> Panel:
    """A single value (the last one) per series."""
    return Panel(
        "stat", title, description, unit, targets, width=width, height=height,
        options={
            "colorMode": color_mode,
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "percentChangeColorMode": "standard",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showPercentChange": False,
            "textMode": text_mode,
            "wideLayout": True,
        },
        **kw,
    )


def table(title: str, description: str, unit: str, targets: list[Target], *,
          width: int = 12, height: int = 8, sort_by: str | None = None, **kw: Any) -> Panel:
    """A table of instant results; targets should be ``instant=True, table=True``."""
    options: Json = {"cellHeight": "sm", "frameIndex": 0, "showHeader": True}
    if sort_by:
        options["sortBy"] = [{"desc": True, "displayName": sort_by}]
    return Panel(
        "table", title, description, unit, targets, width=width, height=height, options=options,
        custom={"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False},
        **kw,
    )


def barchart(title: str, description: str, unit: str, targets: list[Target], x_field: str, *,
             width: int = 8, height: int = 8, **kw: Any) -> Panel:
    return Panel(
        "barchart", title, description, unit, targets, width=width, height=height,
        options={
            "barRadius": 0,
            "barWidth": 0.9,
            "fullHighlight": False,
            "groupWidth": 0.8,
            "legend": _legend(),
            "orientation": "vertical",
            "showValue": "never",
            "stacking": "none",
            "tooltip": {"mode": "multi", "sort": "none"},
            "xField": x_field,
            "xTickLabelMaxLength": 12,
            "xTickLabelRotation": 0,
        },
        custom={"axisPlacement": "auto", "fillOpacity": 70, "gradientMode": "none", "lineWidth": 1},
        **kw,
    )


def bargauge(title: str, description: str, unit: str, targets: list[Target], *,
             width: int = 8, height: int = 8, **kw: Any) -> Panel:
    return Panel(
        "bargauge", title, description, unit, targets, width=width, height=height,
        options={
            "displayMode": "gradient",
            "legend": _legend(),
            "maxVizHeight": 300,
            "minVizHeight": 16,
            "minVizWidth": 8,
            "namePlacement": "auto",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
            "sizing": "auto",
            "valueMode": "color",
        },
        **kw,
    )


def value_mapping(mapping: dict[str, tuple[str, str]]) -> Json:
    """A value mapping: ``{"0": ("OK", "green")}``."""
    return {
        "type": "value",
        "options": {v: {"color": color, "index": i, "text": text} for i, (v, (text, color)) in enumerate(mapping.items())},
    }


def organize(exclude: list[str], rename: dict[str, str] | None = None) -> Json:
    """The ``organize`` transformation: hide columns, rename others."""
    return {
        "id": "organize",
        "options": {
            "excludeByName": {name: True for name in exclude},
            "indexByName": {},
            "renameByName": rename or {},
        },
    }


MERGE: Json = {"id": "merge", "options": {}}
LABEL_COLUMNS = ["Time", "__name__", "job", "instance", "model"]
