"""How a load test is shown and kept: rich tables on the console, summary.json/.csv and a timeline PNG on disk.
Refusals (load shedding) are shown apart from errors everywhere; latencies are those of accepted requests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console

from tools.loadtest.runner import LATENCY_KEYS, PERCENTILES, REFUSAL_LATENCY_KEYS, LoadTestResult
from tools.loadtest.streaming import STAT_KEYS

STREAM_STATS = ("avg", "p50", "p90", "p99")  # what the table and the CSV show of TTFT and ITL (the JSON has all)
SUMMARY_FIELDS = ("model", "protocol", "shape", "users", "requests", "accepted", "refused", "failures",
                  "throughput_rps", "offered_rps", *(f"{k}_ms" for k in LATENCY_KEYS),
                  *(f"refused_{k}_ms" for k in REFUSAL_LATENCY_KEYS), "output_tokens_per_s",
                  *(f"{metric}_{k}_ms" for metric in ("ttft", "itl") for k in STREAM_STATS))


def summary_row(result: LoadTestResult) -> dict[str, object]:
    client = result.client
    return {"model": result.config.model, "protocol": result.config.protocol, "shape": result.config.shape,
            "users": result.config.users, "requests": client.requests, "accepted": client.accepted,
            "refused": client.refused, "failures": client.failures, "throughput_rps": round(client.throughput_rps, 2),
            "offered_rps": round(client.offered_rps, 2), **{f"{k}_ms": client.latency_ms[k] for k in LATENCY_KEYS},
            **{f"refused_{k}_ms": client.refusal_latency_ms[k] for k in REFUSAL_LATENCY_KEYS},
            **_streaming_fields(result)}


def _streaming_fields(result: LoadTestResult) -> dict[str, object]:
    """A streaming model's CSV columns; empty for a model that does not stream."""
    streamed = result.client.streaming
    if streamed is None:
        return {}
    return {"output_tokens_per_s": streamed.output_tokens_per_s,
            **{f"ttft_{k}_ms": streamed.ttft_ms[k] for k in STREAM_STATS},
            **{f"itl_{k}_ms": streamed.itl_ms[k] for k in STREAM_STATS}}


def write(result: LoadTestResult, out_dir: Path) -> dict[str, Path]:
    """summary.json (both views, SLO verdict, per-second history), summary.csv (one row), timeline.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "summary.json", "csv": out_dir / "summary.csv", "plot": out_dir / "timeline.png"}
    files["json"].write_text(json.dumps(result.as_dict(), indent=2))
    with files["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerow(summary_row(result))
    plot_timeline(result, files["plot"])
    return files


def plot_timeline(result: LoadTestResult, path: Path) -> None:
    """Requests/s by outcome (with users) and accepted requests' latency percentiles over the run, one point per
    second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = result.history
    start = history[0]["timestamp"] if history else 0
    seconds = [(row["timestamp"] or 0) - start for row in history]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.plot(seconds, [row["rps"] for row in history], label="sent/s", color="tab:blue")
    top.plot(seconds, [row["accepted_per_s"] for row in history], label="accepted/s", color="tab:green")
    top.plot(seconds, [row["refused_per_s"] for row in history], label="refused/s", color="tab:orange")
    top.plot(seconds, [row["failures_per_s"] for row in history], label="errors/s", color="tab:red")
    top.set_ylabel("requests/s")
    users_axis = top.twinx()
    users_axis.step(seconds, [row["users"] for row in history], where="post", color="tab:gray", alpha=0.6,
                    label="users")
    users_axis.set_ylabel("users")
    top.legend(loc="upper left")
    for p in PERCENTILES:
        bottom.plot(seconds, [row[f"p{p}_ms"] for row in history], label=f"p{p}")
    bottom.set_ylabel("accepted latency (ms, last 10 s)")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper left")
    config = result.config
    figure.suptitle(f"{config.model} over {config.protocol}: {config.shape}, {config.users} users")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def render(result: LoadTestResult, console: Console) -> None:
    """The client's view, Triton's per-model view beside it, and the SLO verdict, as rich tables."""
    from rich.table import Table

    client = result.client
    table = Table(title=f"client view: {result.config.model} over {result.config.protocol}, "
                        f"{result.config.shape} shape, {result.config.users} users (latencies: accepted requests)")
    for column in ("requests", "accepted", "refused", "errors", "accepted/s", *(f"{k} ms" for k in LATENCY_KEYS),
                   "refused p99 ms"):
        table.add_column(column, justify="right")
    table.add_row(str(client.requests), str(client.accepted), f"{client.refused} ({client.refusal_rate:.2%})",
                  f"{client.failures} ({client.error_rate:.2%})", f"{client.throughput_rps:.1f}",
                  *(f"{client.latency_ms[k]:g}" for k in LATENCY_KEYS), f"{client.refusal_latency_ms['p99']:g}")
    console.print(table)
    if client.streaming is not None:
        render_streaming(result, console)
    if client.resent:
        console.print(f"  {client.resent} x sent again on a new connection: the first closed before an answer "
                      "(a server stopping)", highlight=False)
    for message, count in client.refusals.items():
        console.print(f"  [yellow]{count} x refused:[/] {message}", highlight=False)
    for message, count in client.errors.items():
        console.print(f"  [red]{count} x[/] {message}", highlight=False)
    if result.triton:
        triton = Table(title="Triton's view (per request: request = queue + compute + waiting on other steps)")
        for column in ("model", "version", "requests", "failures", "request ms", "queue ms", "compute ms",
                       "avg batch"):
            triton.add_column(column, justify="left" if column == "model" else "right")
        for figures in result.triton:
            triton.add_row(figures.model, figures.version, str(figures.requests), str(figures.failures),
                           f"{figures.request_ms:.2f}", f"{figures.queue_ms:.2f}", f"{figures.compute_ms:.2f}",
                           f"{figures.avg_batch:.2f}")
        console.print(triton)
    else:
        console.print(f"[yellow]Triton's view unavailable:[/] {result.triton_note}", highlight=False)
    for target in result.slo:
        console.print(f"SLO {target.describe()}", highlight=False)
    for broken in result.slo_broken:
        console.print(f"[bold red]SLO broken:[/] {broken}", highlight=False)
    for problem in result.problems():
        console.print(f"[bold red]failed:[/] {problem}", highlight=False)


def render_streaming(result: LoadTestResult, console: Console) -> None:
    """A streaming model's figures as GenAI-Perf reports them: one row per metric, its statistics across requests."""
    from rich.table import Table

    client, streamed = result.client, result.client.streaming
    table = Table(title=f"streaming: {streamed.requests} requests, {client.throughput_rps:.2f} requests/s, "
                        f"{streamed.output_tokens} output tokens, {streamed.output_tokens_per_s:.1f} output tokens/s")
    table.add_column("metric", justify="left")
    for key in STAT_KEYS:
        table.add_column(key, justify="right")
    rows = (("time to first token (ms)", streamed.ttft_ms), ("inter-token latency (ms)", streamed.itl_ms),
            ("request latency (ms)", None), ("output tokens per request", streamed.output_tokens_per_request))
    for label, stats in rows:
        if stats is None:  # Locust's own figures of accepted requests (it has no mean or minimum at hand)
            latency = client.latency_ms
            table.add_row(label, *(f"{latency[key]:g}" if key in latency else "-" for key in STAT_KEYS))
        else:
            table.add_row(label, *(f"{stats[key]:g}" for key in STAT_KEYS))
    console.print(table)
