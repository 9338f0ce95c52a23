"""Measure the embedding service on a real local tritonserver; prints medians, writes JSON + a PNG to results/.

1. start-to-ready time of the repository (median of a few starts);
2. single-request latency of `embed` over HTTP and gRPC (one short text, one request at a time: p50/p90);
3. how variable-length texts batch: the same corpus load (one text per request, many in flight over gRPC
   asyncio) against variants of the repository that differ only in the tokenizer's length buckets, the encoder
   version the ensemble calls (1 runs a batch at its padded length, 2 splits it into length classes) and the
   encoder's instances x threads. Variants run in interleaved rounds (the machine may be shared); the median
   round of each is reported.

Run: .venv/bin/python loadtests/bench_embed.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tools import repository, settings
from tools.loadtest import corpus
from tools.monitoring import scrape as triton_metrics
from tools.serving import client, runtime
from tools.validation import write_config

RESULTS_DIR = Path("results")
SHORT_TEXT = "A man is playing a guitar."


@dataclass(frozen=True)
class Variant:
    """One way to serve the same ensemble."""

    name: str
    length_buckets: str
    encoder_version: int
    encoder_instances: int = 2
    intra_op_threads: int = 1


VARIANTS = [
    Variant("pad to request's longest, v1", "", 1),
    Variant("pad to request's longest, v2", "", 2),  # shipped
    Variant("buckets 16/32/64/128, v1", "16,32,64,128", 1),
    Variant("buckets 16/32/64/128, v2", "16,32,64,128", 2),
    Variant("one shape (128), v1", "128", 1),
    Variant("one shape (128), v2", "128", 2),
    Variant("pad to request's longest, v2, 1 instance x 2 threads", "", 2, encoder_instances=1, intra_op_threads=2),
]


def _percentiles(latencies_ms: list[float]) -> dict[str, float]:
    values = np.asarray(latencies_ms)
    return {"p50_ms": float(np.percentile(values, 50)), "p90_ms": float(np.percentile(values, 90)),
            "p99_ms": float(np.percentile(values, 99))}


def measure_startup(starts: int) -> list[float]:
    seconds = []
    for attempt in range(starts):
        began = time.monotonic()
        with runtime.running_server(runtime.ServerOptions.on_free_ports()):
            seconds.append(time.monotonic() - began)
        print(f"  start {attempt + 1}/{starts}: ready in {seconds[-1]:.2f} s", flush=True)
    return seconds


def measure_single_request(server: runtime.TritonServer, requests: int) -> dict[str, dict[str, float]]:
    answers = {}
    for protocol in client.Protocol:
        connection = client.connect(protocol, server.http_url if protocol == client.Protocol.HTTP else server.grpc_url)
        for _ in range(20):  # warm the connection and every model
            client.embed(connection, [SHORT_TEXT])
        latencies = []
        for _ in range(requests):
            began = time.perf_counter()
            client.embed(connection, [SHORT_TEXT])
            latencies.append((time.perf_counter() - began) * 1000)
        connection.close()
        answers[str(protocol)] = _percentiles(latencies)
        print(f"  {protocol}: p50 {answers[str(protocol)]['p50_ms']:.2f} ms over {requests} requests", flush=True)
    return answers


def variant_repository(variant: Variant, root: Path) -> Path:
    """A copy of the repository with the variant's settings written through the repository model (validated)."""
    target = root / "repository"
    shutil.copytree(settings.MODEL_REPOSITORY, target, ignore=shutil.ignore_patterns("__pycache__"))
    repo = repository.load_repository(target)
    tokenizer = repo.models[settings.TOKENIZER_MODEL].config
    tokenizer.parameters["length_buckets"].string_value = variant.length_buckets
    write_config(repo, settings.TOKENIZER_MODEL, tokenizer)
    encoder = repo.models[settings.ENCODER_MODEL].config
    encoder.instance_group[0].count = variant.encoder_instances
    encoder.parameters["intra_op_threads"].string_value = str(variant.intra_op_threads)
    write_config(repo, settings.ENCODER_MODEL, encoder)
    embed = repo.models[settings.EMBED_MODEL].config
    for step in embed.ensemble_scheduling.step:
        if step.model_name == settings.ENCODER_MODEL:
            step.model_version = variant.encoder_version
    write_config(repo, settings.EMBED_MODEL, embed)
    return target


async def _load(url: str, texts: list[str], in_flight: int) -> tuple[list[float], float]:
    """Send every text once as its own request, `in_flight` at a time; latencies (ms) and wall time (s)."""
    connection = client.connect(client.Protocol.GRPC, url, aio=True)
    queue = iter(texts)
    latencies: list[float] = []

    async def worker():
        for text in queue:
            began = time.perf_counter()
            await client.embed_async(connection, [text])
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(in_flight)))
    finally:
        await connection.close()
    return latencies, time.perf_counter() - began


def measure_variant(variant: Variant, texts: list[str], in_flight: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        options = runtime.ServerOptions.on_free_ports(repository=variant_repository(variant, Path(tmp)))
        return _measure_on(options, variant, texts, in_flight)


def _measure_on(options: runtime.ServerOptions, variant: Variant, texts: list[str], in_flight: int) -> dict:
    with runtime.running_server(options) as server:
        asyncio.run(_load(server.grpc_url, texts[:in_flight * 2], in_flight))  # warm up
        before = triton_metrics.scrape(server.metrics_url)
        latencies, wall = asyncio.run(_load(server.grpc_url, texts, in_flight))
        figures = {f.model: f for f in triton_metrics.model_figures(before, triton_metrics.scrape(server.metrics_url))}
    encoder = figures[settings.ENCODER_MODEL]
    row = {**asdict(variant), "texts_per_s": len(texts) / wall, **_percentiles(latencies),
           "encoder_avg_batch": encoder.avg_batch, "encoder_executions": encoder.executions,
           # Triton charges each request of a batch with the whole batch's compute time: divide by the batch.
           "encoder_ms_per_text": encoder.compute_ms / max(encoder.avg_batch, 1.0)}
    print(f"  {variant.name:<52} {row['texts_per_s']:6.1f} texts/s  p50 {row['p50_ms']:6.0f} ms  "
          f"p90 {row['p90_ms']:6.0f} ms  encoder batch {row['encoder_avg_batch']:5.2f}, "
          f"{row['encoder_ms_per_text']:6.1f} ms/text", flush=True)
    return row


def median_round(runs: list[dict]) -> dict:
    """The round with the median throughput (its latencies belong to the same run)."""
    return sorted(runs, key=lambda row: row["texts_per_s"])[len(runs) // 2]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["name"] for row in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    axes[0].barh(names, [row["texts_per_s"] for row in rows], color="tab:blue")
    axes[0].set_xlabel("throughput (texts/s, higher is better)")
    axes[1].barh(names, [row["p50_ms"] for row in rows], color="tab:orange", label="p50")
    axes[1].barh(names, [row["p90_ms"] - row["p50_ms"] for row in rows], left=[row["p50_ms"] for row in rows],
                 color="tab:orange", alpha=0.4, label="p90")
    axes[1].set_xlabel("latency under load (ms, lower is better)")
    axes[1].legend(loc="lower right")
    axes[0].invert_yaxis()
    fig.suptitle("Variable-length texts through the embed ensemble (same corpus, same load)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer starts, requests and texts")
    parser.add_argument("--in-flight", type=int, default=32, help="concurrent requests in the length benchmark")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the length benchmark (0: skip)")
    args = parser.parse_args()
    starts, requests, text_count = (2, 100, 300) if args.quick else (5, 300, 600)
    texts = corpus.load()[:text_count]
    RESULTS_DIR.mkdir(exist_ok=True)

    print("start-to-ready of model_repository/:", flush=True)
    startup = measure_startup(starts)
    print("single-request latency of embed (one short text, one request at a time):", flush=True)
    with runtime.running_server(runtime.ServerOptions.on_free_ports()) as server:
        single = measure_single_request(server, requests)
    print(f"length batching: {args.rounds} rounds of {len(texts)} corpus texts, one per request, "
          f"{args.in_flight} in flight (gRPC aio):", flush=True)
    rounds = []
    for number in range(1, args.rounds + 1):
        print(f" round {number}/{args.rounds}", flush=True)
        rounds.append([measure_variant(variant, texts, args.in_flight) for variant in VARIANTS])
    rows = [median_round([runs[index] for runs in rounds]) for index in range(len(VARIANTS))] if rounds else []

    report = {"startup_s": startup, "startup_median_s": statistics.median(startup), "single_request": single,
              "length_batching": rows, "rounds": rounds, "in_flight": args.in_flight, "texts": len(texts)}
    (RESULTS_DIR / "bench_embed.json").write_text(json.dumps(report, indent=2))
    if rows:
        plot(rows, RESULTS_DIR / "bench_embed.png")
    print(f"start-to-ready median {report['startup_median_s']:.2f} s; "
          + "; ".join(f"{p} p50 {v['p50_ms']:.2f} ms" for p, v in single.items()))
    print(f"wrote {RESULTS_DIR / 'bench_embed.json'}" + (f" and {RESULTS_DIR / 'bench_embed.png'}" if rows else ""))


if __name__ == "__main__":
    main()
