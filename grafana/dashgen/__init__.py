"""Dashboards as code: a small typed builder (``model``), shared pieces
(``common``) and one module per dashboard.  ``grafana/generate.py`` writes the
committed JSON under ``grafana/dashboards/``.

Why not grafana-foundation-sdk: its 11.6 Python release installs and works, but
its JSON carries keys outside Grafana's own dashboard model (``auto``,
``auto_count``, ``auto_min`` on every variable, empty ``refId``s) that the
schema test would have to strip again.  A builder of ~300 lines that emits
exactly the model's fields, checked against the schema generated from
``@grafana/schema``, is simpler to trust.
"""

from .dashboards import DASHBOARDS, build_all

__all__ = ["DASHBOARDS", "build_all"]
