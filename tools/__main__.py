"""`python -m tools` is the `tools` command."""

from tools.cli import app

app(prog_name="tools")
