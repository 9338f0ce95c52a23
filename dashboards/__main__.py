"""`python -m dashboards`: regenerate the chart's dashboards and rules (same as `tools dashboards`)."""

from dashboards.generate import rendered_outputs, write_outputs

for path in write_outputs(rendered_outputs()):
    print(f"wrote {path}")
