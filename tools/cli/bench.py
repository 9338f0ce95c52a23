"""`tools bench`: the embedding pipeline in-process, on Triton, as a FastAPI service and on PyTriton, side by side."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from tools.bench.cases import Case, WorkloadChoice, workloads_of
from tools.cli import options
from tools.cli.app import app, console, data_console
from tools.loadtest.corpus import DEFAULT_WORKLOAD


@app.command("bench")
def bench_command(
    quick: bool = typer.Option(False, help="One short point per case (a smoke run for CI)."),
    case: list[Case] = typer.Option([], case_sensitive=False, show_default=False,
                                    help="Case to run (repeatable; default: all four)."),
    workload: WorkloadChoice = typer.Option(DEFAULT_WORKLOAD, case_sensitive=False,
                                            help="Texts to send: passages, short search-style queries, or all "
                                                 "(each measured against its own ceiling, reported apart)."),
    server_threads: int = typer.Option(1, help="ONNX Runtime intra-op threads of the FastAPI and PyTriton "
                                                 "services (1 measured best under load here)."),
    repository: Path = options.repository_option("Model repository whose pipeline every case runs "
                                                 "(default: ./model_repository)."),
    out: Path = typer.Option(Path("results/bench"), help="Folder for bench.json, bench.md and bench.png."),
) -> None:
    """Benchmark the pipeline in-process, on Triton, as a FastAPI service and on PyTriton, side by side."""
    from tools.bench import report, runner

    config = runner.BenchConfig.quick() if quick else runner.BenchConfig()
    config = dataclasses.replace(config, server_threads=server_threads, repository=repository,
                                 workloads=workloads_of(workload))
    config.check()
    report.prepare(out)
    with console.status("benchmarking...") as status:
        result = runner.run(config, tuple(case or Case), progress=status.update)
    files = report.write(result, out)
    report.render(result, data_console())
    console.print("wrote " + ", ".join(str(path) for path in files.values()))
