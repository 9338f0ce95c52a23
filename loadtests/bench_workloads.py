"""Both workloads side by side on this machine, in one run: short search-style queries and passages.

1. `tools bench`'s cases for each workload, in interleaved rounds: the in-process ceiling (the same ONNX file,
   tokenizer and pooling called in this machine's best way), Triton as shipped and the FastAPI service, one text per
   request from the bench's asyncio gRPC/HTTP load generator;
2. NVIDIA's perf_analyzer (the 2.51 client, an external C++ load generator) against Triton as shipped over HTTP,
   one text per request, at 1 and at 16 in flight, with Triton's metrics scraped around every run: per composing
   model, time queued and computing per request (input, infer, output), and average batch, so the gap between the
   ensemble's request time and the sum of its steps' shows what the hops cost.

Every figure is the median of the rounds; ratios are to the workload's own in-process ceiling.

perf_analyzer: the binary ships in the `tritonclient==2.51.0` wheel (`tritonclient-2.51.0.data/data/bin/`); pass
it with --perf-analyzer or $PERF_ANALYZER. Its two missing libraries are linked from nvidia-pytriton's copies.

Run: .venv/bin/python loadtests/bench_workloads.py [--quick] [--perf-analyzer PATH]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from tools import settings
from tools.bench import runner as bench
from tools.bench.cases import CASE_TITLES, Case
from tools.loadtest.corpus import Workload
from tools.monitoring import metrics
from tools.monitoring import scrape as triton_metrics
from tools.processes import run
from tools.serving import runtime

RESULTS_DIR = Path(__file__).with_name("results")
PERF_ANALYZER = "perf_analyzer"  # the name rows of perf_analyzer carry beside the bench's cases
HOPS = (settings.TOKENIZER_MODEL, settings.ENCODER_MODEL)
# perf_analyzer now and then exits 2, "Failed to obtain stable measurement", even with --stability-percentage 1000
PERF_ANALYZER_ATTEMPTS = 2


class PerfAnalyzerFailed(RuntimeError):
    """perf_analyzer failed every attempt at one measurement."""


# perf_analyzer's missing libraries -> the file name pattern of nvidia-pytriton's bundled copy
PERF_ANALYZER_LIBS = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}


def perf_analyzer_env(folder: Path) -> dict[str, str]:
    """An environment in which perf_analyzer finds libb64 and libcudart: links to nvidia-pytriton's copies."""
    import pytriton

    bundled = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    for name, pattern in PERF_ANALYZER_LIBS.items():
        found = sorted(bundled.glob(pattern))
        if not found:
            raise SystemExit(f"perf_analyzer needs {name}: no {pattern} in {bundled}")
        (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to(found[0])
    return {**os.environ, "LD_LIBRARY_PATH": str(folder)}


def perf_analyzer_data(texts: list[str], path: Path) -> Path:
    """perf_analyzer's --input-data: one text per request, cycled through in order."""
    rows = [{settings.EMBED_INPUT: {"content": [text], "shape": [1]}} for text in texts]
    path.write_text(json.dumps({"data": rows}))
    return path


def hop_figures(before: triton_metrics.Samples, after: triton_metrics.Samples) -> dict[str, dict[str, float]]:
    """Per model (the ensemble and each step): ms per request queued, in compute input/infer/output and in all,
    and the average batch, from two scrapes."""
    parts = {"queue_ms": metrics.QUEUE_DURATION_US, "input_ms": metrics.COMPUTE_INPUT_DURATION_US,
             "infer_ms": metrics.COMPUTE_INFER_DURATION_US, "output_ms": metrics.COMPUTE_OUTPUT_DURATION_US}

    def per_model(samples: triton_metrics.Samples, name: str) -> dict[str, float]:
        totals: dict[str, float] = {}
        for (metric, labels), value in samples.items():
            if metric == name:
                model = dict(labels).get(metrics.MODEL_LABEL, "")
                totals[model] = totals.get(model, 0.0) + value
        return totals

    def delta(name: str) -> dict[str, float]:
        start = per_model(before, name)
        return {model: value - start.get(model, 0.0) for model, value in per_model(after, name).items()}

    success = delta(metrics.REQUEST_SUCCESS)
    figures = {}
    for figure in triton_metrics.model_figures(before, after):
        requests = success.get(figure.model, 0.0) or 1.0
        figures[figure.model] = {"request_ms": round(figure.request_ms, 2), "avg_batch": round(figure.avg_batch, 2),
                                 **{key: round(delta(name).get(figure.model, 0.0) / 1000 / requests, 2)
                                    for key, name in parts.items()}}
    return figures


def measure_perf_analyzer(binary: Path, env: dict[str, str], url: str, metrics_url: str, data: Path,
                          concurrency: int, interval_ms: int) -> dict:
    """One perf_analyzer run (three measurement windows) with Triton's view around it, and its own CPU use."""
    before = triton_metrics.scrape(metrics_url)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    with tempfile.NamedTemporaryFile(suffix=".csv") as table:
        for attempt in range(1, PERF_ANALYZER_ATTEMPTS + 1):
            outcome = run("perf_analyzer", [
                binary, "-m", settings.EMBED_MODEL, "-u", url, "-i", "http", "-b", "1", "--input-data", str(data),
                "--concurrency-range", str(concurrency), "--measurement-interval", str(interval_ms),
                # Three windows, whatever their spread: a shared machine would otherwise keep it measuring.
                "--stability-percentage", "1000", "--max-trials", "3", "--percentile", "99", "-f", table.name],
                timeout=120, env=env)
            if outcome.returncode == 0:
                break
            failure = f"perf_analyzer failed ({outcome.returncode}): {outcome.stdout.strip().splitlines()[-1:]}"
            if attempt == PERF_ANALYZER_ATTEMPTS:
                raise PerfAnalyzerFailed(failure)
            print(f"  {failure}: measuring again", flush=True)
        row = next(csv.DictReader(io.StringIO(Path(table.name).read_text())))
    wall = time.monotonic() - began
    after_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after_cpu.ru_utime + after_cpu.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
    return {"concurrency": concurrency, "sentences_per_s": float(row["Inferences/Second"]),
            "p50_ms": float(row["p50 latency"]) / 1000, "p99_ms": float(row["p99 latency"]) / 1000,
            "loadgen_cpu": round(used / wall, 2),
            "hops": hop_figures(before, triton_metrics.scrape(metrics_url))}


def median_row(rows: list[dict]) -> dict:
    """Medians of every figure over rounds; the hops of the round with the median throughput."""
    middle = sorted(rows, key=lambda row: row["sentences_per_s"])[len(rows) // 2]
    keys = ("sentences_per_s", "p50_ms", "p99_ms", "loadgen_cpu")
    return {**middle, **{key: round(statistics.median(row[key] for row in rows), 2) for key in keys}}


def run_perf_analyzer(binary: Path, config: bench.BenchConfig, concurrencies: tuple[int, ...], interval_ms: int,
                      rounds: int) -> dict[str, dict[int, dict]]:
    """perf_analyzer against one Triton as the bench serves it (no queue limit), workloads interleaved per round."""
    results: dict[str, dict[int, list[dict]]] = {str(w): {c: [] for c in concurrencies} for w in config.workloads}
    with tempfile.TemporaryDirectory(prefix="bench-workloads-") as folder:
        folder = Path(folder)
        env = perf_analyzer_env(folder)
        data = {w: perf_analyzer_data(bench.workload_texts(w, config.texts), folder / f"{w}.json")
                for w in config.workloads}
        options = runtime.ServerOptions.on_free_ports(
            repository=bench.without_queue_limits(config.repository, folder))
        with runtime.running_server(options) as server:
            for number in range(1, rounds + 1):
                for workload in config.workloads:
                    for concurrency in concurrencies:
                        row = measure_perf_analyzer(binary, env, server.http_url, server.metrics_url, data[workload],
                                                    concurrency, interval_ms)
                        print(f"  round {number}/{rounds} perf_analyzer {workload:<8} {concurrency:>2} in flight: "
                              f"{row['sentences_per_s']:6.1f}/s p99 {row['p99_ms']:6.1f} ms", flush=True)
                        results[str(workload)][concurrency].append(row)
    return {w: {c: median_row(rows) for c, rows in by_c.items()} for w, by_c in results.items()}


def unbatched_ceiling(result: bench.BenchResult, workload: Workload) -> float:
    """The best in-process rate one text at a time: what a server gets when no batch ever forms."""
    return max((p.sentences_per_s for p in result.case_points(Case.CEILING, workload) if p.concurrency == 1),
               default=0.0)


def table(result: bench.BenchResult, analyzer: dict[str, dict[int, dict]], in_flight: int) -> list[dict]:
    """One row per workload and way of serving: the ceiling (best, and one text at a time), each served case at
    `in_flight`, perf_analyzer; ratios to the best ceiling and to the unbatched one."""
    rows = []
    for workload in result.workloads:
        ceiling, unbatched = result.best(Case.CEILING, workload), unbatched_ceiling(result, workload)
        single = max((p for p in result.case_points(Case.CEILING, workload) if p.concurrency == 1),
                     key=lambda p: p.sentences_per_s)
        for point in dict.fromkeys((ceiling, single)):  # one row when the best is one text at a time
            rows.append({"workload": str(workload), "case": CASE_TITLES[Case.CEILING],
                         "in_flight": f"batch {point.concurrency}, {point.threads}",
                         "sentences_per_s": point.sentences_per_s, "ratio": round(result.ratio(point), 3),
                         "ratio_unbatched": round(point.sentences_per_s / unbatched, 3), "p99_ms": point.p99_ms,
                         "loadgen_cpu": None})
        for case in (Case.TRITON, Case.FASTAPI):
            point = next((p for p in result.case_points(case, workload) if p.concurrency == in_flight), None)
            if point is not None:
                rows.append({"workload": str(workload), "case": CASE_TITLES[case] + " (bench client)",
                             "in_flight": str(in_flight), "sentences_per_s": point.sentences_per_s,
                             "ratio": round(result.ratio(point), 3),
                             "ratio_unbatched": round(point.sentences_per_s / unbatched, 3), "p99_ms": point.p99_ms,
                             "loadgen_cpu": point.loadgen_cpu})
        for concurrency, row in sorted(analyzer.get(str(workload), {}).items()):
            rows.append({"workload": str(workload), "case": CASE_TITLES[Case.TRITON] + " (perf_analyzer, HTTP)",
                         "in_flight": str(concurrency), "sentences_per_s": row["sentences_per_s"],
                         "ratio": round(row["sentences_per_s"] / result.ceiling_of(workload), 3),
                         "ratio_unbatched": round(row["sentences_per_s"] / unbatched, 3),
                         "p99_ms": row["p99_ms"], "loadgen_cpu": row["loadgen_cpu"]})
    return rows


def markdown(result: bench.BenchResult, rows: list[dict], analyzer: dict[str, dict[int, dict]]) -> str:
    info = result.machine
    lines = [f"{info['cpu_model']}, {info['logical_cores']} cores; load average "
             f"{info.get('load_average_1m_at_start', '?')} at start; medians of {result.config.rounds} rounds; "
             "one text per request; ratios to the workload's own in-process ceiling (its best batch, and one text "
             "at a time).", "",
             "| workload | case | in flight | sentences/s | x ceiling | x unbatched ceiling | p99 ms | "
             "load-gen CPU (cores) |", "|---|---|--:|--:|--:|--:|--:|--:|"]
    lines += [f"| {r['workload']} | {r['case']} | {r['in_flight']} | {r['sentences_per_s']:.1f} | {r['ratio']:.2f} | "
              f"{r['ratio_unbatched']:.2f} | {r['p99_ms']:.1f} | "
              f"{'-' if r['loadgen_cpu'] is None else r['loadgen_cpu']} |" for r in rows]
    lines += ["", "Where a request's time goes in Triton (perf_analyzer runs; ms per request as Triton's metrics "
              "count them; a batched execution is charged whole to each of its requests):", "",
              "| workload | in flight | model | request | queue | compute input | infer | compute output | avg batch |",
              "|---|--:|---|--:|--:|--:|--:|--:|--:|"]
    for workload, by_concurrency in analyzer.items():
        for concurrency, row in sorted(by_concurrency.items()):
            for model in (settings.EMBED_MODEL, *HOPS):
                hop = row["hops"].get(model)
                if hop:
                    lines.append(f"| {workload} | {concurrency} | {model} | {hop['request_ms']:.2f} | "
                                 f"{hop['queue_ms']:.2f} | {hop['input_ms']:.2f} | {hop['infer_ms']:.2f} | "
                                 f"{hop['output_ms']:.2f} | {hop['avg_batch']:.2f} |")
            steps = sum(row["hops"].get(model, {}).get("request_ms", 0.0) for model in HOPS)
            ensemble = row["hops"].get(settings.EMBED_MODEL, {}).get("request_ms", 0.0)
            lines.append(f"| {workload} | {concurrency} | *ensemble minus its steps* | {ensemble - steps:.2f} "
                         "| | | | | |")
    return "\n".join([*lines, "", *(f"- {line}" for line in result.verdicts())]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke run)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per bench point and round")
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--perf-analyzer", type=Path, default=os.environ.get("PERF_ANALYZER"),
                        help="perf_analyzer binary (default: $PERF_ANALYZER; without it, its rows are skipped)")
    args = parser.parse_args()
    rounds, seconds = (1, 1.5) if args.quick else (args.rounds, args.seconds)
    # Two callers of one ONNX Runtime thread each: the in-process way that measured best here for both workloads
    # (loadtests/results/bench.md), and the shape of the shipped encoder (two instances of one thread).
    config = bench.BenchConfig(concurrencies=(1, args.in_flight), ceiling_batches=(1, 8, 32),
                               ceiling_threads=((2, 1),), rounds=rounds, seconds=seconds,
                               workloads=tuple(Workload))
    print(f"bench cases, {rounds} round(s) of {seconds} s per point, workloads {', '.join(config.workloads)}:",
          flush=True)
    result = bench.run(config, (Case.CEILING, Case.TRITON, Case.FASTAPI), progress=lambda text: print(" ", text,
                                                                                                     flush=True))
    analyzer = {}
    if args.perf_analyzer:
        print("perf_analyzer against Triton as shipped (HTTP):", flush=True)
        analyzer = run_perf_analyzer(args.perf_analyzer, config, (1, args.in_flight),
                                     1000 if args.quick else 2500, rounds)
    rows = table(result, analyzer, args.in_flight)
    RESULTS_DIR.mkdir(exist_ok=True)
    report = {"bench": result.as_dict(), "perf_analyzer": analyzer, "table": rows}
    (RESULTS_DIR / "workloads.json").write_text(json.dumps(report, indent=2))
    text = markdown(result, rows, analyzer)
    (RESULTS_DIR / "workloads.md").write_text(text)
    print(text)
    print(f"wrote {RESULTS_DIR / 'workloads.json'} and {RESULTS_DIR / 'workloads.md'}")


if __name__ == "__main__":
    main()
