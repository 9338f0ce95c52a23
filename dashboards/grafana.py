"""A small builder for Grafana dashboard JSON (schema of Grafana 11), only what our dashboards use.

Written by hand rather than with grafana-foundation-sdk: the JSON we need is a few plain dicts, and keeping it
here avoids a dependency whose default build targets another Grafana version. Every panel and query points at
the `datasource` template variable, so the file loads through Grafana's dashboard sidecar without `__inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEMA_VERSION = 39  # Grafana 11.0-11.2; later 11.x migrate it on load
DATASOURCE_VARIABLE = "datasource"
DATASOURCE_REF = {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
GRID_WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 12
    height: int = 8
    min_value: float | None = 0
    max_value: float | None = None


@dataclass(frozen=True)
class Variable:
    """A query variable over one label's values, multi-select with "All" (a regex matching everything)."""

    name: str
    label: str
    values_of: str  # `label_values(...)` argument: a series selector and the label, e.g. `up{job="x"}, pod`
    default: tuple[str, ...] = ()  # values selected when the dashboard opens; empty: Grafana's first choice
    all_value: str | None = ".*"  # what "All" stands for; None: the regex of the values listed (only those)


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    tags: tuple[str, ...]
    variables: tuple[Variable, ...]
    panels: tuple[Panel, ...] = field(default_factory=tuple)
    refresh: str = "30s"
    time_from: str = "now-1h"
    gpu_only: bool = False  # its queries read Triton's GPU families: data only from a GPU deployment


def _layout(panels: tuple[Panel, ...]) -> list[dict[str, int]]:
    """Left-to-right, top-to-bottom grid positions; a panel that does not fit starts a new row."""
    positions, x, y, row_height = [], 0, 0, 0
    for panel in panels:
        if x + panel.width > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        positions.append({"h": panel.height, "w": panel.width, "x": x, "y": y})
        x, row_height = x + panel.width, max(row_height, panel.height)
    return positions


def _target(query: Query, index: int) -> dict:
    return {"datasource": DATASOURCE_REF, "expr": query.expr, "legendFormat": query.legend or "__auto",
            "range": True, "refId": chr(ord("A") + index)}


def _panel(panel: Panel, panel_id: int, grid_pos: dict[str, int]) -> dict:
    defaults: dict = {"unit": panel.unit}
    if panel.min_value is not None:
        defaults["min"] = panel.min_value
    if panel.max_value is not None:
        defaults["max"] = panel.max_value
    if panel.kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "value", "graphMode": "area", "textMode": "auto"}
    else:
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                              "spanNulls": False}
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    return {
        "id": panel_id, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": DATASOURCE_REF, "gridPos": grid_pos,
        "fieldConfig": {"defaults": defaults, "overrides": []}, "options": options,
        "targets": [_target(q, i) for i, q in enumerate(panel.queries)],
    }


def _datasource_variable() -> dict:
    return {"name": DATASOURCE_VARIABLE, "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def _query_variable(variable: Variable) -> dict:
    definition = f"label_values({variable.values_of})"
    current = {"selected": True, "text": list(variable.default), "value": list(variable.default)} \
        if variable.default else {}
    return {"name": variable.name, "label": variable.label, "type": "query", "datasource": DATASOURCE_REF,
            "definition": definition, "query": {"query": definition, "refId": "PrometheusVariableQueryEditor"},
            "current": current, "hide": 0, "includeAll": True, "allValue": variable.all_value, "multi": True,
            "options": [],
            "refresh": 2, "regex": "", "sort": 1, "skipUrlSync": False}


def render(dashboard: Dashboard) -> dict:
    """The dashboard as Grafana's JSON model."""
    panels = [_panel(p, i, pos) for i, (p, pos) in enumerate(zip(dashboard.panels, _layout(dashboard.panels),
                                                                  strict=True), start=1)]
    return {
        "uid": dashboard.uid, "title": dashboard.title, "description": dashboard.description,
        "tags": list(dashboard.tags), "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True,
        "graphTooltip": 1, "timezone": "browser", "refresh": dashboard.refresh,
        "time": {"from": dashboard.time_from, "to": "now"},
        "annotations": {"list": []}, "links": [],
        "templating": {"list": [_datasource_variable(), *(_query_variable(v) for v in dashboard.variables)]},
        "panels": panels,
    }
