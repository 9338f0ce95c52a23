"""The tuner against its alternatives on this machine, in one run, under one SLO and one workload:

1. the shipped config (model_repository/ as is);
2. `tools tune embed` (the greedy search, the default strategy);
3. `tools tune embed --strategy sweep` (an exhaustive grid over the same space);
4. NVIDIA Triton Model Analyzer 1.58 (`model-analyzer profile`, quick search, local launch mode with the bundled
   tritonserver), in a venv of its own under the toolkit's cache folder (created, with pip's progress, if missing).

Both `tools tune` runs go through the CLI as child processes and are read back from their report.json. Then every
row's winning configuration is served by its own tritonserver (all up at once, on free loopback ports) and measured
side by side with one load generator, NVIDIA's perf_analyzer 2.51 at a fixed number of requests in flight (the
tuner's --users), over HTTP, one text of the workload per request, in interleaved rounds; every figure is the median
of the rounds. perf_analyzer rather than Locust: a C++ client costs a fraction of Locust's CPU on a 2-core machine
(its own CPU is reported), so the servers compete less with their load; it is also what Model Analyzer measures with.

Model Analyzer profiles the ensemble itself (quick search over each composing model's instances, max_batch_size and
dynamic batching) with `run_config_search_min_model_batch_size: 8` (the encoder's batch-8 warm-up fails to load under
a smaller max_batch_size) and at most 64 in flight. Its measurements are read from its checkpoint, so a search that
crashes is still counted (its quick search was seen looping over measured configs until an OverflowError); its best
measurement inside the SLO is served with the composing configs it wrote and its ensemble's max_batch_size.

perf_analyzer: the binary ships in the `tritonclient==2.51.0` wheel; pass it with --perf-analyzer or $PERF_ANALYZER
(loadtests/bench_workloads.py links its missing libraries).

Run: .venv/bin/python loadtests/bench_tune.py [--quick] [--workload queries|passages] [--slo p99=100ms]
     [--skip-sweep] [--skip-ma] --perf-analyzer PATH
Writes loadtests/results/tune_bench.json, tune_bench.md and tune_bench.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from bench_workloads import PerfAnalyzerFailed, measure_perf_analyzer, median_row, perf_analyzer_data, perf_analyzer_env

from tools import settings
from tools.bench import runner as bench
from tools.loadtest.corpus import Workload
from tools.loadtest.runner import parse_slo
from tools.processes import Child, free_port, spawn
from tools.repository import ModelConfig, load_repository
from tools.serving import runtime
from tools.tune import knobs
from tools.validation import write_config

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
RESULTS_DIR = Path(__file__).with_name("results")
TOOLS = Path(sys.executable).with_name("tools")
MA_REQUIREMENT = "triton-model-analyzer==1.58.*"
MA_VENV = settings.CACHE_DIR / "model-analyzer-1.58"
# Columns of Model Analyzer's results table (export/results/metrics-model-inference.csv), and the log lines kept.
MA_CONFIG, MA_THROUGHPUT, MA_P99 = "Model Config Path", "Throughput (infer/sec)", "p99 Latency (ms)"
MA_NOTABLE = re.compile(r"load failed|WARNING|ERROR|Profile complete|Exceeds|Traceback|Exception", re.IGNORECASE)
# Model Analyzer's log lines not echoed as progress: blank ones and the details of each config it builds
MA_QUIET = re.compile(r"^\[Model Analyzer\]\s*$|^\[Model Analyzer\]\s+(Setting|Enabling|Found existing|Existing "
                      r"measurement|No changes made)|^\s*$")
MA_PROFILED = re.compile(r"Profiling (\S+): concurrency=")
MA_COMPLETE = re.compile(r"Profile complete\. Profiled (\d+) configurations")
MA_BATCH = 8  # the encoder's warm-up sends batches of 8: a config with a smaller max_batch_size fails to load
SHIPPED, GREEDY, SWEEP, MODEL_ANALYZER = "shipped", "tools tune (greedy)", "tools tune --strategy sweep", \
    "Model Analyzer 1.58"
TUNER_SHARE = 0.95  # of the sweep's best throughput the tuner must reach
WALL_SHARE = 0.25  # of the other search's wall time the tuner may take
MATCH = 0.98  # "matches" Model Analyzer: within 2 % of its throughput (side-by-side medians are that noisy)


@dataclass
class Row:
    """One way of choosing the configuration: how the search went, what it chose, and how that served."""

    name: str
    wall_s: float | None = None  # the search's wall time (None: no search)
    configs: int | None = None  # configurations the search measured
    chosen: str = ""  # the winning configuration, in words
    search_rps: float | None = None  # the winner as the search itself measured it
    search_p99_ms: float | None = None
    note: str = ""  # why a row has no winner, or how it was obtained
    points: list[dict] = field(default_factory=list)  # every configuration the search measured (rps, p99)
    log: list[str] = field(default_factory=list)  # what a search said that matters (Model Analyzer's failures)
    repository: Path | None = None  # the repository serving the winner (None: nothing to serve)
    measured: dict[int, dict] = field(default_factory=dict)  # side by side: in flight -> medians

    def best(self, slo_ms: float) -> dict | None:
        """The side-by-side measurement with the most throughput inside the SLO."""
        inside = [m for m in self.measured.values() if m["p99_ms"] <= slo_ms]
        return max(inside, key=lambda m: m["sentences_per_s"]) if inside else None


# -- the repository copies that serve each winner ---------------------------------------------------------------
def repository_copy(folder: Path, name: str) -> Path:
    copy = folder / name / "model_repository"
    shutil.copytree(REPOSITORY, copy)
    return copy


def with_setting(folder: Path, name: str, setting: dict[str, dict]) -> Path:
    """A copy of the repository carrying a tune report's setting (model -> knobs), written through the validator."""
    copy = repository_copy(folder, name)
    repository = load_repository(copy)
    for model, wanted in setting.items():
        write_config(repository, model, knobs.write(repository.models[model].config, knobs.Knobs.from_dict(wanted)))
    return copy


def with_configs(folder: Path, name: str, configs: dict[str, ModelConfig]) -> Path:
    """A copy of the repository carrying other configs, named back to each model's own name, the ensemble's first (a
    smaller max_batch_size there lets its steps take one)."""
    copy = repository_copy(folder, name)
    repository = load_repository(copy)
    for model in sorted(configs, key=lambda m: m != settings.EMBED_MODEL):
        configs[model].name = model
        write_config(repository, model, configs[model])
    return copy


# -- rows 2 and 3: tools tune through its CLI -------------------------------------------------------------------
def tune_row(name: str, args: argparse.Namespace, folder: Path, strategy: list[str]) -> Row:
    """One `tools tune` run as a child process (its progress on this console), read back from its report.json."""
    out = folder / ("tune-" + (strategy[-1] if strategy else "greedy"))
    argv = [TOOLS, "tune", settings.EMBED_MODEL, "--slo", args.slo, "--workload", args.workload,
            "--repository", REPOSITORY, "--users", str(args.users), "--out", out, *strategy]
    if args.quick:
        argv += ["--window", "5s", *([] if strategy else ["--steps", "2"])]  # a sweep has no step budget
    print(f"{name}: {' '.join(map(str, argv[1:]))}", flush=True)
    child = spawn(name, argv)
    try:
        code = child.wait(args.search_timeout)
    finally:
        child.stop()
    report_file = out / "report.json"
    if not report_file.is_file():
        return Row(name, note=f"`tools tune` exited with code {code} and wrote no report.json")
    report = json.loads(report_file.read_text())
    steps = report["steps"]
    measured = [s for s in steps if s["throughput_rps"] or s["p99_ms"]]
    row = Row(name, wall_s=report["wall_s"], configs=len(measured),
              points=[{"rps": s["throughput_rps"], "p99_ms": s["p99_ms"]} for s in measured])
    winner = next((s for s in steps if s.get("step") == report["winner"]), None) if report["winner"] is not None \
        else None
    if winner is None:
        row.note = f"no setting met the SLO (exit code {code})"
        return row
    row.chosen = "; ".join(f"{model} {knobs.Knobs.from_dict(k).describe()}" for model, k in winner["setting"].items())
    row.search_rps, row.search_p99_ms = winner["throughput_rps"], winner["p99_ms"]
    row.repository = with_setting(folder, out.name, winner["setting"])
    return row


# -- row 4: Model Analyzer ----------------------------------------------------------------------------------------
def model_analyzer() -> Path:
    """Model Analyzer's entry point in its own venv under the toolkit's cache folder, installed when missing."""
    binary = MA_VENV / "bin" / "model-analyzer"
    if binary.is_file():
        return binary
    print(f"installing {MA_REQUIREMENT} into {MA_VENV} (about 600 MB, a few minutes)", flush=True)
    python = Path(getattr(sys, "_base_executable", sys.executable))
    for argv in ([python, "-m", "venv", "--clear", MA_VENV],
                 [MA_VENV / "bin" / "pip", "install", "--progress-bar", "on", MA_REQUIREMENT]):
        child = spawn("model-analyzer install", argv)  # pip's progress on this console
        try:
            if child.wait(1800) != 0:
                raise SystemExit(f"installing Model Analyzer failed: {' '.join(map(str, argv))}")
        finally:
            child.stop()
    return binary


def ma_config(args: argparse.Namespace, work: Path, repository: Path, data: Path, models: str) -> dict:
    """Model Analyzer's profile config: quick search of `models` in local launch mode with the bundled tritonserver,
    on free loopback ports, the same SLO as its p99 constraint, perf_analyzer 2.51 with the workload's texts."""
    host = settings.DEFAULT_HOST
    stub_env = runtime.stub_environment()
    config = {
        "model_repository": str(repository),
        "profile_models": models,
        "run_config_search_mode": "quick",
        "cpu_only_composing_models": load_repository(repository).composing_models(settings.EMBED_MODEL),
        "run_config_search_min_model_batch_size": MA_BATCH,
        # Little's law: past 64 in flight no p99 of 100 ms is possible below 640 req/s, twice this model's best here
        "run_config_search_max_concurrency": 64,
        "constraints": {"perf_latency_p99": {"max": args.slo_ms}},
        "objectives": ["perf_throughput"],
        "triton_launch_mode": "local",
        "triton_server_path": str(runtime.find_tritonserver()),
        "triton_http_endpoint": f"{host}:{free_port()}",
        "triton_grpc_endpoint": f"{host}:{free_port()}",
        "triton_metrics_url": f"http://{host}:{free_port()}/metrics",
        "triton_server_flags": {"backend-directory": str(runtime.prepare_backends()), "http-address": host,
                                "grpc-address": host, "metrics-address": host, "allow-gpu-metrics": "false",
                                "backend-config": f"python,shm-region-prefix-name=model_analyzer_{os.getpid()}_"},
        # Model Analyzer gives perf_analyzer the server's environment too: perf_analyzer's libraries go in it.
        "triton_server_environment": {"LD_LIBRARY_PATH": f"{work}:{stub_env['LD_LIBRARY_PATH']}",
                                      "PATH": stub_env["PATH"]},
        "triton_output_path": str(work / "tritonserver.log"),
        "perf_analyzer_path": str(args.perf_analyzer.resolve()),
        "perf_analyzer_flags": {"input-data": str(data)},
        "perf_output": True, "perf_output_path": str(work / "perf_analyzer.log"),
        "client_protocol": "http",
        "output_model_repository_path": str(work / "output_models"),
        "override_output_model_repository": True,
        "export_path": str(work / "export"),
        "checkpoint_directory": str(work / "checkpoints"),
    }
    if args.quick:  # a tiny search: batch 8 or 16, one or two instances, a few concurrencies, no report sweep
        config |= {"run_config_search_max_model_batch_size": 2 * MA_BATCH, "run_config_search_max_instance_count": 2,
                   "run_config_search_max_concurrency": 8, "concurrency_sweep_disable": True,
                   # three windows whatever their spread: on a busy machine it otherwise keeps growing them
                   "perf_analyzer_flags": {**config["perf_analyzer_flags"], "stability-percentage": 1000,
                                           "max-trials": 3}}
    return config


MA_TIMED_OUT = -1  # follow()'s exit code for a search stopped at --search-timeout


def follow(child: Child, log: Path, timeout: float) -> int:
    """Wait for `child`, echoing its log's new lines (Model Analyzer's progress) as they come."""
    deadline, offset = time.monotonic() + timeout, 0
    while True:
        running = child.running()
        with contextlib.suppress(OSError), log.open(errors="replace") as text:
            text.seek(offset)
            new = text.read()
            offset = text.tell()
            for line in new.splitlines():
                if not MA_QUIET.search(line):
                    print(f"  | {line}", flush=True)
        if not running:
            return child.returncode
        if time.monotonic() > deadline:  # stopped by the caller; what it measured so far is in its checkpoint
            print(f"  Model Analyzer still running after {timeout:.0f} s: stopped (log: {log})", flush=True)
            return MA_TIMED_OUT
        time.sleep(2)


def ma_results(work: Path) -> list[dict]:
    """Every measurement Model Analyzer made, from its last checkpoint (saved after each one, so a search that
    crashed still counts): config path ("embed_config_3: tokenizer_config_0, encoder_config_1", as
    its results table names it), concurrency, throughput and p99."""
    checkpoints = sorted((work / "checkpoints").glob("*.ckpt"), key=lambda path: int(path.stem))
    if not checkpoints:
        return []
    saved = json.loads(checkpoints[-1].read_text())["ResultManager.results"]["_results"]
    found = []
    for variant, (_, runs) in saved.get(settings.EMBED_MODEL, {}).items():
        for key, run_measured in runs.items():
            for measured in run_measured["_model_config_measurements"]:
                figures = {name: value["_value"] for name, value in measured["_non_gpu_data_from_tag"].values()}
                found.append({MA_CONFIG: f"{variant}: {', '.join(key.rsplit(' ', 1)[-1].split(','))}",
                              "Concurrency": measured["_model_specific_pa_params"]["concurrency-range"],
                              MA_THROUGHPUT: figures["perf_throughput"], MA_P99: figures["perf_latency_p99"]})
    return found


def ma_profile(args: argparse.Namespace, work: Path, data: Path, models: str) -> tuple[int, float, str]:
    """One `model-analyzer profile`: its exit code, wall time and log."""
    binary = model_analyzer()
    work.mkdir(parents=True)
    repository = shutil.copytree(REPOSITORY, work / "model_repository")
    config_file = work / "config.yaml"
    config_file.write_text(json.dumps(ma_config(args, work, repository, data, models), indent=2))  # JSON is YAML
    log = work / "model-analyzer.log"
    perf_analyzer_env(work)  # links perf_analyzer's missing libraries into `work`
    print(f"{MODEL_ANALYZER}: profile {models} (log {log})", flush=True)
    began = time.monotonic()
    child = spawn("model-analyzer", [binary, "profile", "-f", config_file], log=log, cwd=work)
    try:
        code = follow(child, log, args.search_timeout)
    finally:
        # Model Analyzer starts tritonserver and perf_analyzer in sessions of their own: stop them too, whatever
        # state it leaves them in.
        leftovers = []
        with contextlib.suppress(psutil.Error):
            leftovers = psutil.Process(child.pid).children(recursive=True)
        child.stop()
        for process in leftovers:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        for process in psutil.wait_procs(leftovers, timeout=runtime.STOP_TIMEOUT_S)[1]:
            with contextlib.suppress(psutil.Error):
                process.kill()
        for region in Path("/dev/shm").glob(f"model_analyzer_{os.getpid()}_*"):
            region.unlink(missing_ok=True)
    return code, round(time.monotonic() - began, 1), log.read_text(errors="replace")


def ma_row(args: argparse.Namespace, folder: Path, data: Path) -> Row:
    """Model Analyzer on the ensemble; the composing configs of its best run inside the SLO served as the ensemble's.
    Configs tried: as its last word says ("Profiled 5 configurations"; the shipped config's failed run not counted),
    or when it stopped early the distinct configurations it started to profile."""
    work = folder / "model-analyzer"
    code, wall, log = ma_profile(args, work, data, settings.EMBED_MODEL)
    results = ma_results(work)
    said = MA_COMPLETE.search(log)
    row = Row(MODEL_ANALYZER, wall_s=wall, configs=int(said[1]) if said else len(set(MA_PROFILED.findall(log))),
              log=list(dict.fromkeys(line.split("] ", 1)[-1].strip() for line in log.splitlines()
                                     if MA_NOTABLE.search(line) and "gpu" not in line.lower())))
    failed = ""
    if code != 0:
        errors = [line.strip() for line in log.splitlines() if "error" in line.lower() or "Exception" in line]
        failed = f"model-analyzer exited with code {code} ({' | '.join(errors[-2:]) or log.strip().splitlines()[-1]})"
    if not results:
        row.note = f"{failed or 'model-analyzer finished'} with no measurement"
        return row
    row.points = [{"rps": float(r[MA_THROUGHPUT]), "p99_ms": float(r[MA_P99])} for r in results]
    inside = [r for r in results if float(r[MA_P99]) <= args.slo_ms]
    if not inside:
        row.note = f"{failed + '; ' if failed else ''}no configuration met the SLO"
        return row
    best = max(inside, key=lambda r: float(r[MA_THROUGHPUT]))
    row.search_rps, row.search_p99_ms = float(best[MA_THROUGHPUT]), float(best[MA_P99])
    configs = ma_composing_configs(work / "output_models", best[MA_CONFIG])
    row.chosen = f"{best[MA_CONFIG].split(':')[0]} at concurrency {best['Concurrency']}: " + "; ".join(
        f"{model} {knobs.read(config).describe()}, max batch {config.max_batch_size}"
        for model, config in configs.items() if model != settings.EMBED_MODEL) + \
        f"; {settings.EMBED_MODEL} max batch {configs[settings.EMBED_MODEL].max_batch_size}"
    row.note = (f"{failed}; its {len(results)} measurements up to then (checkpoint) are used. " if failed else "") + \
        "Its best run inside the SLO; the composing configs from its output model repository."
    row.repository = with_configs(folder, "model-analyzer-winner", configs)
    return row


def ma_composing_configs(output: Path, variant: str) -> dict[str, ModelConfig]:
    """Model -> the config Model Analyzer wrote for it, from a results row's config path ("embed_config_3:
    tokenizer_config_0, encoder_config_1"): each composing model's, and the ensemble's own with its
    steps left as they are (only its max_batch_size is Model Analyzer's)."""
    repository = load_repository(output)
    ensemble, steps = variant.split(":", 1)
    configs = {name.strip().rsplit("_config_", 1)[0]: repository.models[name.strip()].config
               for name in steps.split(",")}
    own = ModelConfig()
    own.CopyFrom(load_repository(REPOSITORY).models[settings.EMBED_MODEL].config)
    own.max_batch_size = repository.models[ensemble.strip()].config.max_batch_size
    return {settings.EMBED_MODEL: own, **configs}


# -- the side-by-side measurement --------------------------------------------------------------------------------
def side_by_side(rows: list[Row], args: argparse.Namespace, folder: Path, data: Path) -> None:
    """Every served row's winner on its own tritonserver (all up at once), perf_analyzer at each in-flight count,
    rows interleaved within each round and their order rotated round to round; medians into `row.measured`."""
    served = [row for row in rows if row.repository is not None]
    env = perf_analyzer_env(folder)
    rounds, interval_ms = (1, 1000) if args.quick else (args.rounds, 2500)
    with contextlib.ExitStack() as stack:
        servers = {}
        for row in served:
            print(f"serving {row.name}'s winner", flush=True)
            servers[row.name] = stack.enter_context(runtime.running_server(
                runtime.ServerOptions.on_free_ports(repository=row.repository)))
        samples: dict[str, dict[int, list[dict]]] = {row.name: {c: [] for c in args.in_flight} for row in served}
        for number in range(rounds):
            for row in served[number % len(served):] + served[:number % len(served)]:
                server = servers[row.name]
                for concurrency in args.in_flight:
                    try:
                        sample = measure_perf_analyzer(args.perf_analyzer, env, server.http_url, server.metrics_url,
                                                       data, concurrency, interval_ms)
                    except PerfAnalyzerFailed as exc:  # one lost sample; the medians come from the other rounds
                        print(f"  round {number + 1}/{rounds} {row.name:<28} {concurrency:>2} in flight: {exc}",
                              flush=True)
                        continue
                    samples[row.name][concurrency].append(sample)
                    print(f"  round {number + 1}/{rounds} {row.name:<28} {concurrency:>2} in flight: "
                          f"{sample['sentences_per_s']:6.1f}/s p99 {sample['p99_ms']:6.1f} ms "
                          f"(perf_analyzer {sample['loadgen_cpu']:.2f} cores)", flush=True)
    for row in served:
        row.measured = {c: {k: v for k, v in median_row(s).items() if k != "hops"}
                        for c, s in samples[row.name].items() if s}


# -- verdicts and files ---------------------------------------------------------------------------------------------
def targets(rows: dict[str, Row], slo_ms: float) -> list[str]:
    """The two targets, each met / NOT met with its figures, or why it could not be judged."""
    def judged(other: str, share: float, wording: str) -> str:
        tuner, them = rows.get(GREEDY), rows.get(other)
        title = f"{wording} in <= {WALL_SHARE:.0%} of {other}'s wall time"
        missing = [r.name for r in (tuner, them) if r is None or r.best(slo_ms) is None or r.wall_s is None]
        if tuner is None or them is None or missing:
            why = them.note if them is not None and them.note and them is not tuner else "no served winner"
            return f"{title}: not judged ({', '.join(n for n in missing if n) or other}: {why})"
        ratio = tuner.best(slo_ms)["sentences_per_s"] / them.best(slo_ms)["sentences_per_s"]
        time_ratio = tuner.wall_s / them.wall_s if them.wall_s else float("inf")
        met = ratio >= share and time_ratio <= WALL_SHARE
        return (f"{title}: {'met' if met else 'NOT met'} (throughput {ratio:.2f}x, wall time {time_ratio:.2f}x: "
                f"{tuner.wall_s:.0f} s vs {them.wall_s:.0f} s)")

    return [judged(SWEEP, TUNER_SHARE, f"the tuner reaches >= {TUNER_SHARE:.0%} of the sweep's best"),
            judged(MODEL_ANALYZER, MATCH, f"the tuner matches (>= {MATCH:.0%} of) or beats Model Analyzer's best")]


TABLE_HEADER = ("| row | best req/s within SLO | its p99 ms | in flight | load-gen CPU (cores) | search wall s | "
                "configs tried | winner as the search measured it | chosen configuration |")


def table(rows: list[Row], slo_ms: float) -> list[str]:
    lines = [TABLE_HEADER, "|---|--:|--:|--:|--:|--:|--:|---|---|"]
    for row in rows:
        best = row.best(slo_ms)
        shown = (f"{best['sentences_per_s']:.1f} | {best['p99_ms']:.1f} | {best['concurrency']} | "
                 f"{best['loadgen_cpu']:.2f}") if best else "none | - | - | -"
        searched = "-" if row.wall_s is None else f"{row.wall_s:.0f}"
        own = "-" if row.search_rps is None else f"{row.search_rps:.1f}/s, p99 {row.search_p99_ms:.1f} ms"
        chosen = row.chosen or row.note or "-"
        lines.append(f"| {row.name} | {shown} | {searched} | {'-' if row.configs is None else row.configs} | {own} | "
                     f"{chosen} |")
    return lines


def markdown(rows: list[Row], args: argparse.Namespace, verdicts: list[str], machine: dict) -> str:
    head = (f"{machine['cpu_model']}, {machine['logical_cores']} cores; load average "
            f"{machine['load_average_1m_at_start']} at start; workload {args.workload}, SLO p99 <= {args.slo_ms:g} ms; "
            f"every winner served side by side and measured by perf_analyzer 2.51 over HTTP, one text per request, at "
            f"{', '.join(map(str, args.in_flight))} in flight, medians of {1 if args.quick else args.rounds} "
            f"interleaved round(s){' (--quick: a smoke run, not a result)' if args.quick else ''}.")
    measured = [f"| {row.name} | {c} | {m['sentences_per_s']:.1f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
                f"{'yes' if m['p99_ms'] <= args.slo_ms else 'no'} | {m['loadgen_cpu']:.2f} |"
                for row in rows for c, m in sorted(row.measured.items())]
    notes = [f"- {row.name}: {row.note}" for row in rows if row.note]
    return "\n".join([head, "", *table(rows, args.slo_ms), "", "Every side-by-side measurement:", "",
                      "| row | in flight | req/s | p50 ms | p99 ms | within SLO | load-gen CPU |",
                      "|---|--:|--:|--:|--:|---|--:|", *measured, "", *(f"- {line}" for line in verdicts),
                      *notes]) + "\n"


def plot(rows: list[Row], slo_ms: float, path: Path) -> None:
    """Throughput against p99: each search's own measurements (faint) and its winner served side by side (solid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 5.5))
    for number, row in enumerate(rows):
        color = f"C{number}"
        if row.points:
            axis.scatter([p["p99_ms"] for p in row.points], [p["rps"] for p in row.points], color=color, alpha=0.25,
                         s=18)
        for concurrency, m in sorted(row.measured.items()):
            axis.scatter(m["p99_ms"], m["sentences_per_s"], color=color, s=80, edgecolors="black", zorder=3)
            axis.annotate(str(concurrency), (m["p99_ms"], m["sentences_per_s"]), textcoords="offset points",
                          xytext=(5, 5), fontsize=8)
        axis.scatter([], [], color=color, label=row.name)
    axis.axvline(slo_ms, color="tab:red", linestyle="--", label=f"SLO p99 {slo_ms:g} ms")
    axis.set_xlabel("p99 latency (ms)")
    axis.set_ylabel("throughput (req/s)")
    axis.set_title("searched (faint) and served side by side (solid, labelled with requests in flight)")
    axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def as_json(row: Row) -> dict:
    data = asdict(row)
    data["repository"] = None
    data["measured"] = {str(c): m for c, m in row.measured.items()}
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 5 s windows and 2 steps per tune, a tiny Model Analyzer search, one round")
    parser.add_argument("--workload", choices=[str(w) for w in Workload], default=str(Workload.QUERIES))
    parser.add_argument("--slo", default="p99=100ms", help="one p99 bound, as `tools tune --slo` takes it")
    parser.add_argument("--users", type=int, default=8,
                        help="requests in flight: the tuner's Locust users, and perf_analyzer's concurrency")
    parser.add_argument("--also-in-flight", type=int, nargs="*", default=[],
                        help="more perf_analyzer concurrencies for the side-by-side measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-ma", action="store_true")
    parser.add_argument("--search-timeout", type=float, default=4 * 3600, help="seconds any one search may take")
    parser.add_argument("--perf-analyzer", type=Path, default=os.environ.get("PERF_ANALYZER"),
                        help="perf_analyzer binary of the tritonclient 2.51.0 wheel (default: $PERF_ANALYZER)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop every server and search on the way out
    if args.perf_analyzer is None or not args.perf_analyzer.is_file():
        parser.error("perf_analyzer is needed: --perf-analyzer PATH or $PERF_ANALYZER (the tritonclient 2.51.0 "
                     "wheel's tritonclient-2.51.0.data/data/bin/perf_analyzer)")
    targets_found = parse_slo(args.slo)
    if [t.key for t in targets_found] != ["p99"]:
        parser.error(f"--slo {args.slo}: one p99 bound, e.g. p99=100ms")
    args.slo_ms = targets_found[0].limit
    args.in_flight = sorted({args.users, *args.also_in_flight})
    machine = {**bench.machine(), "load_average_1m_at_start": round(os.getloadavg()[0], 2)}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as name:
        folder = Path(name)
        data = perf_analyzer_data(bench.workload_texts(Workload(args.workload), 1000), folder / "input_data.json")
        rows = [Row(SHIPPED, chosen="model_repository/ as shipped", repository=repository_copy(folder, SHIPPED))]
        rows.append(tune_row(GREEDY, args, folder, []))
        if args.skip_sweep:
            rows.append(Row(SWEEP, note="skipped (--skip-sweep)"))
        else:
            rows.append(tune_row(SWEEP, args, folder, ["--strategy", "sweep"]))
        rows.append(Row(MODEL_ANALYZER, note="skipped (--skip-ma)") if args.skip_ma else ma_row(args, folder, data))
        side_by_side(rows, args, folder, data)
    by_name = {row.name: row for row in rows}
    verdicts = targets(by_name, args.slo_ms)
    RESULTS_DIR.mkdir(exist_ok=True)
    report = {"machine": machine, "workload": args.workload, "slo_p99_ms": args.slo_ms, "in_flight": args.in_flight,
              "rounds": 1 if args.quick else args.rounds, "quick": args.quick,
              "load_generator": "perf_analyzer 2.51, HTTP, one text per request, fixed concurrency",
              "wall_s": round(time.monotonic() - began, 1), "rows": [as_json(row) for row in rows],
              "targets": verdicts}
    (RESULTS_DIR / "tune_bench.json").write_text(json.dumps(report, indent=2))
    text = markdown(rows, args, verdicts, machine)
    (RESULTS_DIR / "tune_bench.md").write_text(text)
    plot(rows, args.slo_ms, RESULTS_DIR / "tune_bench.png")
    print(text)
    print(f"wrote {RESULTS_DIR / 'tune_bench.json'}, tune_bench.md and tune_bench.png ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
