"""Grafana's own dashboard model as JSON Schema, for the tests.

``@grafana/schema`` (the npm package Grafana's frontend is built with) ships
the dashboard model and each panel plugin's options as TypeScript types.
``make-schemas.mjs`` turns them into JSON Schema with ts-json-schema-generator;
this module installs the pinned npm packages (``package-lock.json``) into a
gitignored cache and runs it once per lockfile version.

One deliberate widening, :func:`dashboard_schema`: the TypeScript model has no
room for datasource-specific annotation fields (its ``target`` carries a
"TODO: this should be a regular DataQuery"), yet a Prometheus annotation
stores its query beside the common fields (grafana-foundation-sdk, generated
from the same schemas, gives AnnotationQuery an ``expr`` for that reason).
The Prometheus annotation fields are added with their types; everything else
is validated as strictly as the types say (no unknown keys anywhere).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = REPO / ".cache" / "grafana-schema"
INPUTS = ("package.json", "package-lock.json", "make-schemas.mjs")
#: Panel plugins with their own schemas (Options; FieldConfig where the plugin has one).
PANEL_TYPES = ("timeseries", "stat", "table", "barchart", "bargauge")


class SchemaUnavailable(RuntimeError):
    """node/npm missing or the npm registry unreachable: says how to fix it."""


def _key() -> str:
    h = hashlib.sha256()
    for name in INPUTS:
        h.update((HERE / name).read_bytes())
    return h.hexdigest()[:16]


def schema_dir(cache: Path = CACHE) -> Path:
    """The folder of generated ``*.schema.json`` files, building it if needed."""
    out = cache / _key()
    if (out / "schemas" / "Dashboard.schema.json").exists():
        return out / "schemas"
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise SchemaUnavailable(f"{tool} not found: install Node.js and npm (apt-get install nodejs npm, "
                                    "or run scripts/install-deps.sh)")
    work = out.with_name(out.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in INPUTS:
        shutil.copy(HERE / name, work / name)
    steps = [
        ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
        ["node", "make-schemas.mjs", str(work / "schemas")],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise SchemaUnavailable(f"{' '.join(cmd)} failed in {work} (the npm registry must be reachable the "
                                    f"first time):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    return out / "schemas"


def load(name: str, folder: Path | None = None) -> dict[str, Any]:
    folder = folder or schema_dir()
    return json.loads((folder / f"{name}.schema.json").read_text())


#: Fields of a Prometheus annotation query (Grafana's Prometheus datasource).
PROMETHEUS_ANNOTATION_FIELDS: dict[str, Any] = {
    "expr": {"type": "string"},
    "step": {"type": "string"},
    "titleFormat": {"type": "string"},
    "textFormat": {"type": "string"},
    "tagKeys": {"type": "string"},
    "useValueForTime": {"type": "boolean"},
}


def dashboard_schema(folder: Path | None = None) -> dict[str, Any]:
    schema = load("Dashboard", folder)
    schema["definitions"]["AnnotationQuery"]["properties"].update(PROMETHEUS_ANNOTATION_FIELDS)
    return schema


def panel_schemas(folder: Path | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """``{panel type: {"options": schema, "custom": schema}}`` (custom may be absent)."""
    folder = folder or schema_dir()
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for t in PANEL_TYPES:
        out[t] = {"options": load(f"{t}_Options", folder)}
        if (folder / f"{t}_FieldConfig.schema.json").exists():
            out[t]["custom"] = load(f"{t}_FieldConfig", folder)
    return out
