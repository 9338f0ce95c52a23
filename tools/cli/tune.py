"""`tools tune`: search instance counts, encoder threads and batching delays for a model under an SLO, live."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from tools import settings
from tools.cli import options
from tools.cli.app import app, console, data_console
from tools.errors import TuneError, UsageError
from tools.loadtest.corpus import DEFAULT_WORKLOAD, Workload
from tools.tune.space import Strategy

if TYPE_CHECKING:
    from tools.tune.observe import ObserveOptions


def _p99_limit(slo: str) -> float:
    from tools.loadtest.runner import parse_slo

    targets = parse_slo(slo)
    if [t.key for t in targets] != ["p99"]:
        raise UsageError(f"--slo {slo}: the tuner maximises throughput under one p99 bound, e.g. --slo p99=150ms")
    return targets[0].limit


@app.command("tune")
def tune_command(
    model: str = typer.Argument(..., help="Model to tune: an ensemble (its composing models are tuned) or a model."),
    slo: str | None = typer.Option(None, show_default=False,
                                   help="The latency bound every kept setting must meet, e.g. p99=150ms (required "
                                        "unless --observe)."),
    repository: Path = options.repository_option(),
    cores: int = typer.Option(os.cpu_count() or 1, min=1, show_default="this machine's",
                              help="CPU budget: no model's instances x ONNX threads may exceed it."),
    strategy: Strategy = typer.Option(Strategy.GREEDY, case_sensitive=False,
                                      help="greedy: one change at a time where the per-model metrics point, kept "
                                           "when it pays. sweep: every point of a fixed grid (instances, encoder "
                                           "threads, batching delays, length buckets; its size is printed first): "
                                           "the reference the greedy is measured against."),
    steps: int | None = typer.Option(None, min=0, show_default="8",
                                     help="The greedy's budget: most changes to measure after the starting point. "
                                          "Not with --strategy sweep, which measures its whole grid."),
    window: str | None = typer.Option(None, show_default="15s; --observe: 30m",
                                      help="Load per measured setting (at least 5s); with --observe, the span of "
                                           "traffic read back, e.g. 30m."),
    users: int = typer.Option(8, min=1, help="Concurrent Locust users (closed loop) driving every measurement."),
    workload: Workload = typer.Option(DEFAULT_WORKLOAD, case_sensitive=False,
                                      help="Texts every measurement sends: passages (reviews, tickets, documents) or "
                                           "queries (search-style, 2-12 words)."),
    out: Path = typer.Option(Path("results/tune"), help="Folder for report.json, search.png and each step's files."),
    write: bool = typer.Option(False, "--write", help="Write the winner into the repository's config.pbtxt files "
                                                     "(validated) and print the diff."),
    apply: bool = typer.Option(False, "--apply", help="Tune the running server at --url in place and leave the winner "
                                                     "loaded (no SLO met: the repository's settings)."),
    url: str | None = typer.Option(None, "--url", show_default=False,
                                   help="With --apply: the server's HTTP endpoint, host:port; --repository must be "
                                        "the repository it serves. With --observe: a serving pod, whose running "
                                        "settings are judged instead of the repository's."),
    metrics_url: str | None = typer.Option(None, "--metrics-url", envvar=settings.METRICS_URL_ENV,
                                           show_default=False, help="With --apply: the server's metrics endpoint."),
    control_key: str | None = options.control_key_option(
        "With --apply: the model-control secret (default: the key `tools serve` left for you)."),
    observe: bool = typer.Option(False, "--observe", help="Generate no load: recommend changes from the traffic an "
                                                         "existing Prometheus (--prometheus) recorded over --window."),
    prometheus: str | None = typer.Option(None, "--prometheus", show_default=False,
                                          help="With --observe: the Prometheus to read, e.g. http://127.0.0.1:9090."),
    job: str = typer.Option(settings.METRICS_JOB, help="With --observe: the scrape job of the deployment's pods."),
    namespace: str | None = typer.Option(None, "--namespace", "-n", show_default=False,
                                         help="With --observe: the deployment's namespace (label `namespace`)."),
    min_requests: int | None = typer.Option(None, min=1, show_default="300",
                                            help="With --observe: fewest requests to MODEL in the window to judge "
                                                 "from."),
) -> None:
    """Tune MODEL live: serve a copy of the repository with Triton, scrape it with Prometheus, load it with Locust,
    and change one setting at a time where the per-model metrics point (the composing model that queues most gets
    capacity, idle ones give it back, the batching delay grows while it pays), keeping a change only when it buys
    throughput inside the SLO. --strategy sweep measures every point of a fixed grid instead (each composing model's
    instances up to --cores, the encoder's instances x threads at --cores, a few batching delays, the tokenizer with
    and without length buckets), each loaded over the one before: the reference the greedy search is measured
    against. Each decision is printed with its reason; the end is a table, search.png and report.json in --out. The
    repository itself is only written with --write. --apply tunes a running server instead and leaves the winner
    loaded there. Exit 1 when no setting met the SLO.

    --observe generates no load: it reads what production traffic did over --window from an existing Prometheus
    (--prometheus; series of --job, in --namespace), prints per composing model the evidence, the recommended change
    with its reason, the config diff --write would make and the `tools deploy upgrade` that rolls it out; observe.json
    in --out. Exit 1 when Prometheus is unreachable or holds too little to judge from.
    """
    from tools.loadtest.runner import parse_duration
    from tools.repository import load_repository
    from tools.serving.runtime import saved_control_key
    from tools.tune import observe as observing
    from tools.tune import report, search

    if observe:
        if not prometheus or apply or strategy != Strategy.GREEDY:
            raise UsageError("--observe reads an existing Prometheus: give it with --prometheus (and no --apply or "
                             "--strategy)")
        _observe(observing.ObserveOptions(model, repository, prometheus, parse_duration(window or "30m"), job,
                                          namespace, cores, min_requests or observing.MIN_REQUESTS, url), out, write)
        return
    if slo is None:
        raise UsageError("--slo is required (e.g. --slo p99=150ms), unless --observe")
    if (window_s := parse_duration(window or "15")) < 5:
        raise UsageError(f"--window {window}: at least 5 s of load per setting")
    search.tuned_models(load_repository(repository), model)  # an unknown model fails before anything starts
    if apply != bool(url) or (apply and not metrics_url):
        raise UsageError("--apply tunes a running server: give it with --url and --metrics-url (and only then)")
    if strategy == Strategy.SWEEP and steps is not None:
        raise UsageError("--steps is the greedy's budget: --strategy sweep measures every point of its grid")
    tune_options = search.TuneOptions(model=model, repository=repository, slo_p99_ms=_p99_limit(slo), cores=cores,
                                      strategy=strategy, window_s=window_s, users=users, workload=workload,
                                      out_dir=out, url=url, metrics_url=metrics_url,
                                      control_key=saved_control_key(control_key) if apply else None,
                                      **({"steps": steps} if steps is not None else {}),
                                      **({"protocol": settings.Protocol.HTTP} if apply else {}))
    grid = None
    if strategy == Strategy.SWEEP:
        grid = search.plan(tune_options)
        budget = (f"the whole grid, {len(grid.points)} point(s), about "
                  f"{search.estimate_s(grid, window_s) / 60:.0f} min")
    else:
        budget = f"at most {tune_options.steps} change(s)"
    console.print(f"tuning {model} ({strategy}) for p99 <= {tune_options.slo_p99_ms:g} ms on {cores} core(s): "
                  f"{window_s} s of load at {users} users ({workload} workload) per setting, {budget}")
    if grid is not None:
        console.print(escape(f"sweep grid: {grid.describe()}"))
        if grid.refused:
            console.print(escape(f"refused by validation, left out: {grid.refusals()}"))
    result = search.run(tune_options, grid=grid,
                        on_step=lambda step: console.print(escape(report.progress_line(step, strategy))))
    console.print(escape(f"stopped: {result.stopped}"))
    files = report.write(result, out)
    table = Table(*report.table_columns(result),
                  title=f"tools tune {model} ({strategy}, p99 <= {tune_options.slo_p99_ms:g} ms)")
    for row in report.table_rows(result):
        table.add_row(*row)
    data_console().print(table)
    console.print(f"report: {files['json']}  plot: {files['plot']}  ({result.wall_s:.0f} s)")
    best = result.best()
    if best is None:
        closest = result.closest()
        raise TuneError(f"no setting met p99 <= {tune_options.slo_p99_ms:g} ms; the best seen was step "
                        f"{closest.index} at p99 {closest.p99_ms:g} ms, {closest.throughput_rps:.1f} req/s")
    console.print(escape(f"winner: step {best.index} ({best.setting_text()}): {best.throughput_rps:.1f} req/s at "
                         f"p99 {best.p99_ms:g} ms"))
    if write:
        diff = report.write_back(result, best)
        data_console().print(escape(diff) if diff else "the repository already has the winner's settings")


def _observe(observe_options: ObserveOptions, out: Path, write: bool) -> None:
    """Print the evidence, the recommendation and its reasons, the config diff and how to deploy it; observe.json."""
    from tools.tune import observe, report

    model = observe_options.model
    found = observe.observe(observe_options)
    console.print(escape(observe.headline(found)))
    table = Table(*observe.EVIDENCE_COLUMNS, title=f"{model}'s composing models over {found.view.window_s} s, "
                                                   "summed over the pods")
    for row in observe.evidence_rows(found):
        table.add_row(*row)
    data_console().print(table)
    for line in observe.decision_lines(found):
        console.print(escape(line))
    path = report.write_observation(found, out)
    if found.recommended is None:
        console.print(f"report: {path}")
        return
    diff = report.recommended_diff(found)
    data_console().print(escape(diff))
    if write:
        written = observe.write_recommended(found)
        console.print(f"written (validated): {', '.join(str(p) for p in written)}")
    console.print(escape(f"the chart has no values for instance counts or batching: they live in config.pbtxt. "
                         f"{'Deploy' if write else 'With --write, deploy'} the change with "
                         f"`{observe.deploy_command(found.options)}` (the repository's digest rolls the pods)"))
    console.print(f"report: {path}")
