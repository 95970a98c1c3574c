"""A small typed builder for Grafana dashboard JSON (schemaVersion 41, Grafana 11).

Only what modelmon's dashboards use: Prometheus targets, panels laid out in
rows on the 24-column grid, template variables and annotations.  Every object
turns into plain dicts with ``to_json``; the output is checked against the JSON
Schema generated from ``@grafana/schema`` (tests/test_dashboards_schema.py), so
a field this builder gets wrong fails a test rather than a Grafana import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 41
GRID_WIDTH = 24
#: Every panel, target and variable query goes through this datasource variable.
DATASOURCE_REF: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}

Json = dict[str, Any]


@dataclass
class Target:
    """One PromQL query of a panel.

    ``threshold`` marks a series that is a limit (a ``modelmon_threshold_*``
    gauge): the panel draws it as a dashed red line instead of data.
    """

    expr: str
    legend: str = "__auto"
    instant: bool = False
    table: bool = False
    threshold: bool = False

    def to_json(self, ref_id: str) -> Json:
        out: Json = {
            "datasource": dict(DATASOURCE_REF),
            "editorMode": "code",
            "expr": self.expr,
            "instant": self.instant,
            "legendFormat": self.legend,
            "range": not self.instant,
            "refId": ref_id,
        }
        if self.table:
            out["format"] = "table"
        return out


@dataclass
class Step:
    """A threshold step: from ``value`` (None = base) upwards, ``color``."""

    color: str
    value: float | None = None

    def to_json(self) -> Json:
        return {"color": self.color, "value": self.value}


@dataclass
class Panel:
    """A visualisation.  ``options`` and ``custom`` are the plugin's own
    settings (validated against the plugin's schema in the tests)."""

    type: str
    title: str
    description: str
    unit: str
    targets: list[Target]
    width: int = 12
    height: int = 8
    options: Json = field(default_factory=dict)
    custom: Json = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    mappings: list[Json] = field(default_factory=list)
    overrides: list[Json] = field(default_factory=list)
    transformations: list[Json] = field(default_factory=list)
    min: float | None = None
    max: float | None = None
    decimals: int | None = None
    no_value: str | None = None
    color: Json | None = None
    repeat: str | None = None
    max_per_row: int | None = None

    def ref_ids(self) -> list[str]:
        return [chr(ord("A") + i) for i in range(len(self.targets))]

    def to_json(self, panel_id: int, x: int, y: int) -> Json:
        defaults: Json = {"unit": self.unit}
        if self.custom:
            defaults["custom"] = self.custom
        if self.min is not None:
            defaults["min"] = self.min
        if self.max is not None:
            defaults["max"] = self.max
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        if self.no_value is not None:
            defaults["noValue"] = self.no_value
        if self.color is not None:
            defaults["color"] = self.color
        defaults["mappings"] = self.mappings
        steps = self.steps or [Step("green")]
        defaults["thresholds"] = {"mode": "absolute", "steps": [s.to_json() for s in steps]}
        overrides = list(self.overrides)
        for ref, target in zip(self.ref_ids(), self.targets, strict=True):
            if target.threshold:
                overrides.append(threshold_line_override(ref))
        out: Json = {
            "datasource": dict(DATASOURCE_REF),
            "description": self.description,
            "fieldConfig": {"defaults": defaults, "overrides": overrides},
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "id": panel_id,
            "options": self.options,
            "targets": [t.to_json(r) for r, t in zip(self.ref_ids(), self.targets, strict=True)],
            "title": self.title,
            "type": self.type,
        }
        if self.transformations:
            out["transformations"] = self.transformations
        if self.repeat:
            out["repeat"] = self.repeat
            out["repeatDirection"] = "h"
            if self.max_per_row:
                out["maxPerRow"] = self.max_per_row
        return out


def threshold_line_override(ref_id: str) -> Json:
    """Draw query ``ref_id`` as a dashed red limit line without fill."""
    return {
        "matcher": {"id": "byFrameRefID", "options": ref_id},
        "properties": [
            {"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}},
            {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}},
            {"id": "custom.fillOpacity", "value": 0},
            {"id": "custom.lineWidth", "value": 2},
        ],
    }


@dataclass
class Row:
    """A titled band of panels, laid out left to right and wrapped at 24 columns."""

    title: str
    panels: list[Panel]


@dataclass
class Variable:
    """A template variable: ``datasource`` type or a ``label_values`` query."""

    name: str
    label: str
    type: str  # "datasource" or "query"
    query: str
    description: str
    include_all: bool = False
    multi: bool = False
    all_value: str | None = None
    current: str | None = None
    hide: int = 0

    def to_json(self) -> Json:
        out: Json = {
            "description": self.description,
            "hide": self.hide,
            "includeAll": self.include_all,
            "label": self.label,
            "multi": self.multi,
            "name": self.name,
            "options": [],
            "query": self.query,
            "skipUrlSync": False,
            "type": self.type,
        }
        if self.type == "query":
            out["datasource"] = dict(DATASOURCE_REF)
            out["refresh"] = 2  # on time range change: new models/features show up
            out["regex"] = ""
            out["sort"] = 1
        else:
            out["refresh"] = 1
            out["regex"] = ""
        if self.include_all and self.all_value is not None:
            out["allValue"] = self.all_value
        if self.current is not None:
            text = "All" if self.current == "$__all" else self.current
            out["current"] = {"selected": True, "text": text, "value": self.current}
        return out


@dataclass
class Annotation:
    """A Prometheus annotation query (e.g. deploy markers).

    ``use_value_for_time``: the series' value (in ms) is the event time, so a
    ``*_timestamp_seconds`` gauge times 1000 marks the moment it records.
    """

    name: str
    expr: str
    title: str
    color: str
    tags: str = ""
    use_value_for_time: bool = False

    def to_json(self) -> Json:
        return {
            "datasource": dict(DATASOURCE_REF),
            "enable": True,
            "expr": self.expr,
            "hide": False,
            "iconColor": self.color,
            "name": self.name,
            "step": "15s",
            "tagKeys": self.tags,
            "textFormat": "",
            "titleFormat": self.title,
            "useValueForTime": self.use_value_for_time,
        }


BUILTIN_ANNOTATION: Json = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[Row]
    variables: list[Variable]
    annotations: list[Annotation] = field(default_factory=list)
    tags: list[str] = field(default_factory=lambda: ["modelmon"])
    refresh: str = "30s"
    time_from: str = "now-1h"

    def panels(self) -> list[Panel]:
        return [p for r in self.rows for p in r.panels]

    def to_json(self) -> Json:
        panels: list[Json] = []
        next_id = 1
        y = 0
        for row in self.rows:
            panels.append({
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "id": next_id,
                "panels": [],
                "title": row.title,
                "type": "row",
            })
            next_id += 1
            y += 1
            x, line_height = 0, 0
            for panel in row.panels:
                if panel.width > GRID_WIDTH:
                    raise ValueError(f"{self.uid}: panel {panel.title!r} is wider than the grid")
                if x + panel.width > GRID_WIDTH:
                    x, y, line_height = 0, y + line_height, 0
                panels.append(panel.to_json(next_id, x, y))
                next_id += 1
                x += panel.width
                line_height = max(line_height, panel.height)
            y += line_height
        return {
            "annotations": {"list": [BUILTIN_ANNOTATION] + [a.to_json() for a in self.annotations]},
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "links": [{
                "asDropdown": True,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": ["modelmon"],
                "targetBlank": False,
                "title": "modelmon dashboards",
                "tooltip": "",
                "type": "dashboards",
                "url": "",
            }],
            "panels": panels,
            "refresh": self.refresh,
            "schemaVersion": SCHEMA_VERSION,
            "tags": self.tags,
            "templating": {"list": [v.to_json() for v in self.variables]},
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }
