"""`tools bench`: the embedding pipeline in-process, on Triton, as a FastAPI service and on PyTriton, side by side."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console

from tools.cli.app import app, console
from tools.errors import UsageError


@app.command("bench")
def bench_command(
    quick: bool = typer.Option(False, help="One short point per case (a smoke run for CI)."),
    case: list[str] = typer.Option([], help="Case to run (repeatable; default: all four)."),
    server_threads: int = typer.Option(1, help="ONNX Runtime intra-op threads of the FastAPI and PyTriton "
                                                 "services (1 measured best under load here)."),
    out: Path = typer.Option(Path("results/bench"), help="Folder for bench.json, bench.md and bench.png."),
) -> None:
    """Benchmark the pipeline in-process, on Triton, as a FastAPI service and on PyTriton, side by side."""
    from tools.bench import runner

    case = case or list(runner.CASE_TITLES)
    unknown = set(case) - set(runner.CASE_TITLES)
    if unknown:
        raise UsageError(f"unknown case(s) {', '.join(sorted(unknown))}: choose from {', '.join(runner.CASE_TITLES)}")
    if server_threads < 1:
        raise UsageError("--server-threads must be at least 1")
    config = runner.BenchConfig.quick() if quick else runner.BenchConfig()
    config = dataclasses.replace(config, server_threads=server_threads)
    with console.status("benchmarking...") as status:
        result = runner.run(config, out, tuple(case), progress=status.update)
    runner.render(result, Console())
    console.print("wrote " + ", ".join(str(path) for path in result.files.values()))
