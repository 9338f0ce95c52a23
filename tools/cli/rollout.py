"""`tools rollout`: a new model version on a running server through canary, switch and drain, or back again."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from tools import settings
from tools.cli import options
from tools.cli.app import app, console
from tools.errors import UsageError
from tools.rollout.canary import DEFAULT_MAX_LATENCY_RATIO, DEFAULT_MIN_COSINE
from tools.rollout.steps import DEFAULT_DRAIN_TIMEOUT_S


@app.command("rollout")
def rollout_command(
    model: str = typer.Argument(..., help="Model to roll out (a model an ensemble calls, e.g. encoder)."),
    version: int | None = typer.Option(None, "--version", "-v", min=1, show_default=False,
                                       help="Version folder to roll out."),
    rollback: bool = typer.Option(False, "--rollback",
                                  help="Return to the versions before the last rollout recorded in the config."),
    url: str | None = typer.Option(None, "--url", envvar=settings.URL_ENV, show_default=False,
                                   help="The server's HTTP endpoint: host:port or http://host:port (default: "
                                        f"{settings.DEFAULT_HOST}:{settings.DEFAULT_HTTP_PORT})."),
    repository: Path = options.repository_option("The server's model repository (default: ./model_repository)."),
    control_key: str | None = options.control_key_option(),
    min_cosine: float = typer.Option(DEFAULT_MIN_COSINE, min=-1, max=1,
                                     help="Canary: lowest cosine similarity of new vs serving outputs."),
    max_latency_ratio: float = typer.Option(DEFAULT_MAX_LATENCY_RATIO, min=0,
                                            help="Canary: highest median latency of new / serving version."),
    drain_timeout: float = typer.Option(DEFAULT_DRAIN_TIMEOUT_S, min=0,
                                        help="Seconds the old versions may take to finish."),
    json_path: Path | None = typer.Option(None, "--json", show_default=False,
                                          help="Write the report as JSON to this file ('-': stdout)."),
) -> None:
    """Roll MODEL to --version on a running server (validate, load beside, canary, switch, drain, write the config);
    any failure restores the previous state and exits 1. --rollback returns to the previous version."""
    from tools.rollout import steps
    from tools.serving import client
    from tools.serving.control import Control
    from tools.serving.runtime import saved_control_key

    if (version is None) == (not rollback):
        raise UsageError("give --version N, or --rollback (not both)")
    if (url or "").lower().startswith("grpc://"):
        raise UsageError(f"--url {url}: the rollout calls Triton's repository API over HTTP; give the HTTP endpoint")
    _, address = client.resolve(url, settings.Protocol.HTTP)
    control = Control(address, saved_control_key(control_key))
    opts = steps.Options(min_cosine=min_cosine, max_latency_ratio=max_latency_ratio, drain_timeout_s=drain_timeout)
    with console.status("") as status:
        hooks = steps.Hooks(
            started=lambda name: status.update(f"{name}..."),
            finished=lambda step: console.print(  # a failure's detail is the error line that follows
                f"{'[green]ok[/]    ' if step.ok else '[red]failed[/]'} {escape(step.name):<18} {step.seconds:6.2f} s",
                highlight=False),
            canary=lambda done, total: status.update(f"canary: {done}/{total} texts"))
        try:
            report = steps.rollback(control, repository, model, opts, hooks) if rollback else \
                steps.rollout(control, repository, model, version, opts, hooks)
        except steps.RolloutError as exc:
            _write_json(json_path, exc.report.as_dict())
            raise
    if report.canary:
        canary = report.canary
        console.print(f"canary: {canary.requests} requests, min cosine {canary.min_cosine:.6f}, median "
                      f"{canary.new_median_ms:.1f} ms vs {canary.old_median_ms:.1f} ms "
                      f"({canary.latency_ratio:.2f}x)", highlight=False)
    console.print(f"{model}: versions {report.before} -> {report.after} in "
                  f"{sum(s.seconds for s in report.steps):.1f} s; config written", highlight=False)
    _write_json(json_path, report.as_dict())


def _write_json(path: Path | None, data: dict) -> None:
    if path is None:
        return
    text = json.dumps(data, indent=2)
    if str(path) == "-":
        typer.echo(text)
    else:
        path.write_text(text + "\n")
