"""`tools validate`: check a model repository offline (and optionally on a real server)."""

from __future__ import annotations

from pathlib import Path

import typer

from tools.cli import options
from tools.cli.app import app
from tools.validation import DEFAULT_CORES, Target
from tools.validation.run import OutputFormat, run_validation


@app.command()
def validate(
    repository: Path = options.repository_argument("Model repository to check (default: ./model_repository)."),
    output_format: OutputFormat = typer.Option(OutputFormat.HUMAN, "--format", help="Report format."),
    strict: bool = typer.Option(False, help="Exit 1 on warnings too."),
    target: Target = typer.Option(Target.CPU, help="Hardware the repository will be served on."),
    server: bool = typer.Option(False, help="Also load every model in a real tritonserver and report refusals."),
    cores: int | None = typer.Option(
        None, "--cores", min=1, show_default=False,
        help=f"CPU cores of one server on the target, for W502 (single-instance Python models). Default: `cores` "
             f"in the tool.tools-validate table of pyproject.toml, else {DEFAULT_CORES} (the chart's CPU limit); never "
             f"the cores of the machine running the check, so every machine gives the same verdict."),
    python_env: Path | None = typer.Option(
        None, "--python-env", show_default=False,
        help="Python interpreter (or venv folder) the Python models' stubs run with, for E219 (imports). "
             "Default: the one `tools serve` gives its stubs."),
) -> None:
    """Check a model repository offline (exit 0 clean, 1 findings, 2 usage error)."""
    raise typer.Exit(run_validation(repository, output_format, strict, target, server, cores=cores,
                                    python_env=python_env))
