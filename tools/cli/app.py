"""The Typer app every command module registers on, and the one place a `ToolsError` becomes one line and an exit
code (1: the job found a problem, 2: usage), the way helm and ruff report."""

from __future__ import annotations

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from tools import __version__
from tools.errors import ToolsError

COMMAND_ORDER = ("serve", "infer", "validate", "rollout", "loadtest", "bench", "tune", "deploy", "dashboards")
# Progress and summaries go to stderr; data (JSON, diffs, tables a script reads) to stdout.
console = Console(stderr=True)
PIPED_WIDTH = 1000  # rich falls back to 80 columns when stdout is not a terminal, and would cut the tables' cells


def data_console() -> Console:
    """stdout for the tables people and scripts read: a terminal's width, and when piped wide enough to cut nothing."""
    stdout = Console()
    if not stdout.is_terminal:
        stdout.width = PIPED_WIDTH
    return stdout


def report(exc: ToolsError) -> typer.Exit:
    """Print a ToolsError as one line on stderr; the Exit carries its exit code."""
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


class ToolsGroup(TyperGroup):
    """Runs every command (sub-apps included) under one handler for the project's error root."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ToolsError as exc:
            raise report(exc) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        """In the order a user meets them, not alphabetical."""
        return sorted(self.commands, key=lambda name: (COMMAND_ORDER.index(name) if name in COMMAND_ORDER
                                                       else len(COMMAND_ORDER), name))


app = typer.Typer(cls=ToolsGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Serve, validate, load-test, benchmark and deploy a Triton model repository.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tools {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="Print the version and exit."),
) -> None:
    """Serve, validate, load-test, benchmark and deploy a Triton model repository."""
