"""The dashboard JSON has what Grafana's sidecar and Grafana 11 need (no Grafana server can run here, so the
structure is checked; the queries themselves run against a real Prometheus in test_monitoring_live.py)."""

from __future__ import annotations

import json
import re

from dashboards import grafana
from dashboards.generate import DASHBOARDS, rendered_outputs
from tests.support import paths

BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


def _dashboards() -> list[dict]:
    return [json.loads(content) for path, content in rendered_outputs(paths.CHART).items()
            if path.parent == paths.CHART_DASHBOARDS]


def test_one_json_file_per_dashboard_named_by_uid():
    uids = [d["uid"] for d in _dashboards()]
    assert sorted(uids) == sorted(d.uid for d in DASHBOARDS)
    assert all(re.fullmatch(r"[a-z0-9-]{1,40}", uid) for uid in uids)  # Grafana caps uids at 40 characters


def test_sidecar_loadable_without_import_inputs():
    for dashboard in _dashboards():
        assert dashboard["title"] and dashboard["schemaVersion"] == grafana.SCHEMA_VERSION
        assert "__inputs" not in dashboard and "id" not in dashboard  # provisioned files must not pin an id
        variables = dashboard["templating"]["list"]
        assert variables[0] == {**variables[0], "name": "datasource", "type": "datasource", "query": "prometheus"}


def test_every_panel_and_query_uses_the_datasource_variable():
    for dashboard in _dashboards():
        assert dashboard["panels"]
        for panel in dashboard["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
            assert all(t["datasource"] == panel["datasource"] and t["expr"] for t in panel["targets"])
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_queries_only_use_declared_variables():
    for dashboard in _dashboards():
        declared = {v["name"] for v in dashboard["templating"]["list"]} | BUILTIN_VARIABLES
        texts = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        texts += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
        used = {name for text in texts for name in re.findall(r"\$\{?(\w+)", text)}
        assert used <= declared, used - declared
        assert {"namespace", "pod", "model"} <= used


def test_panels_have_unique_ids_and_do_not_overlap():
    for dashboard in _dashboards():
        panels = dashboard["panels"]
        assert len({p["id"] for p in panels}) == len(panels)
        cells = [(x, y) for p in panels for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
                 for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])]
        assert len(cells) == len(set(cells))
        assert all(0 <= x < grafana.GRID_WIDTH for x, _ in cells)
