"""Reading the committed dashboard JSON back: every query with where it comes
from, and variable substitution as Grafana does it.  Used by the tests, which
judge the JSON files (what Grafana loads), not the builder's objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboards"
VAR_RE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
LABEL_VALUES_RE = re.compile(r"^label_values\((.*),\s*(\w+)\)$", re.S)


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a dashboard."""

    dashboard: str  # uid
    where: str  # "panel 'Title' A", "annotation 'Deploys'"
    expr: str
    instant: bool = False
    repeat: str | None = None  # the variable a repeated panel iterates over


def load_dashboards(folder: Path = DASHBOARD_DIR) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` in ``folder`` by file name."""
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, including panels nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries(dashboard: dict[str, Any]) -> Iterator[Query]:
    uid = dashboard["uid"]
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield Query(uid, f"panel {panel.get('title')!r} {target.get('refId')}", target.get("expr", ""),
                        bool(target.get("instant")), panel.get("repeat"))
    for ann in dashboard.get("annotations", {}).get("list", []):
        if ann.get("expr"):
            yield Query(uid, f"annotation {ann.get('name')!r}", ann["expr"])


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def substitute(text: str, values: dict[str, str]) -> str:
    """Replace ``$name`` / ``${name}`` with ``values[name]``; unknown names stay."""
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))

    return VAR_RE.sub(repl, text)


def variable_names(text: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in VAR_RE.finditer(text)}
