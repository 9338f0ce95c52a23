"""`tools validate`: check a model repository offline (and optionally on a real server)."""

from __future__ import annotations

from pathlib import Path

import typer

from tools.cli import options
from tools.cli.app import app
from tools.validation import DEFAULT_CORES, Target
from tools.validation.explain import explain as explain_rule
from tools.validation.run import OutputFormat, run_validation
from tools.validation.suppress import split_codes

CODES_HELP = "Codes or prefixes, comma-separated or repeated (E201, E3, W)."


@app.command()
def validate(
    repository: Path = options.repository_argument("Model repository to check (default: ./model_repository)."),
    output_format: OutputFormat = typer.Option(
        OutputFormat.HUMAN, "--format", "--output-format",
        help="human: one `path:line:col: CODE message` line per finding; grouped: a block per model; json; sarif; "
             "github: workflow annotations; junit: a test case per model."),
    select: list[str] | None = typer.Option(
        None, "--select", metavar="CODES", show_default=False,
        help=f"Report only these codes (replaces `select` in pyproject.toml). {CODES_HELP}"),
    ignore: list[str] | None = typer.Option(
        None, "--ignore", metavar="CODES", show_default=False,
        help=f"Do not report these codes (adds to `ignore` in pyproject.toml); only codes Triton accepts. "
             f"{CODES_HELP}"),
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
    fix: bool = typer.Option(False, "--fix", help="Fix the mechanical findings (E201, W206, W203), print the diff, "
                                                  "then report what remains."),
    diff: bool = typer.Option(False, "--diff", help="Print the fixes --fix would make, write nothing (exit 1 if any)."),
    explain: str | None = typer.Option(None, "--explain", metavar="CODE", show_default=False,
                                       help="Explain a rule (why, Triton's behaviour, broken and fixed) and exit."),
) -> None:
    """Check a model repository offline (exit 0 clean, 1 findings, 2 usage error)."""
    if explain is not None:
        typer.echo(explain_rule(explain))
        raise typer.Exit()
    raise typer.Exit(run_validation(repository, output_format, strict, target, server, cores=cores,
                                    select=split_codes(select) if select else None, ignore=split_codes(ignore),
                                    fix=fix, diff=diff, python_env=python_env))
