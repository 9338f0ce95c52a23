"""`tools dashboards`: regenerate the chart's Grafana dashboards and Prometheus rules from dashboards/."""

from __future__ import annotations

from pathlib import Path

import typer

from tools import settings
from tools.cli.app import app, console
from tools.errors import ToolsError, UsageError


@app.command("dashboards")
def dashboards_command(
    chart: Path = typer.Option(settings.CHART_DIR, show_default=False,
                               help="The chart to write into (default: ./charts/triton-embeddings)."),
    check: bool = typer.Option(False, help="Write nothing; exit 1 if the chart's copies are stale (for CI)."),
) -> None:
    """Regenerate the Grafana dashboards and Prometheus rules in the Helm chart from dashboards/."""
    from dashboards import generate

    if not (chart / "Chart.yaml").is_file():
        raise UsageError(f"no chart at {chart} (no Chart.yaml there): run from the checkout or pass --chart")
    outputs = generate.rendered_outputs(chart)
    if check:
        stale = generate.stale_outputs(outputs)
        if stale:
            raise ToolsError("stale (run `tools dashboards`): " + ", ".join(map(str, stale)))
        console.print("dashboards and rules are up to date")
        return
    written = generate.write_outputs(outputs)
    console.print("wrote " + ", ".join(map(str, written)) if written else "dashboards and rules are up to date")
