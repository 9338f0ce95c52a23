"""Side-by-side benchmark of one embedding pipeline served four ways, on this machine, in one run:

1. the ceiling: the pipeline called in-process at several batch sizes and thread counts (no server, no network);
2. the `embed` ensemble on Triton, as shipped;
3. a FastAPI microservice wrapping the same pipeline, one text per request;
4. PyTriton binding the same pipeline as one @batch callable.

Server cases get one text per request from an asyncio load generator in this process, at several concurrencies;
the load generator's own CPU use is measured, since it shares the cores with the servers. Each workload (passages,
short queries: `tools.loadtest.corpus.Workload`) is measured against its own ceiling, in the same rounds. The
tables, files and plot of a run are `tools.bench.report`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import psutil

from tools import processes, settings
from tools.bench import pipeline
from tools.bench.cases import CASE_TITLES, Case
from tools.errors import BenchmarkError, ProcessError, UsageError
from tools.loadtest import corpus
from tools.loadtest.corpus import Workload
from tools.processes import spawn
from tools.repository import load_repository, replace_config
from tools.serving import client, runtime

TARGET_RATIO = 0.85
SERVICE_READY_TIMEOUT_S = 120.0
# Children of the benchmark, run as `python -m <module>`.
CEILING_SERVICE = "tools.bench.runner"
FASTAPI_SERVICE = "tools.bench.fastapi_service"
PYTRITON_SERVICE = "tools.bench.pytriton_service"
PYTRITON_MODEL = "embed_pytriton"  # as tools.bench.pytriton_service binds it

Progress = Callable[[str], None]
Sender = Callable[[str], Awaitable[None]]
SenderFactory = Callable[[], contextlib.AbstractAsyncContextManager[Sender]]


@dataclass(frozen=True)
class BenchConfig:
    """How long and how wide to measure; `quick` is the CI smoke size."""

    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    ceiling_batches: tuple[int, ...] = (1, 8, 32)
    # (callers, intra-op threads): one caller with 1 or 2 ONNX Runtime threads, or two callers of 1 thread each.
    ceiling_threads: tuple[tuple[int, int], ...] = ((1, 1), (1, 2), (2, 1))
    rounds: int = 3  # every point is measured once per round; the report shows the medians
    seconds: float = 2.5  # measured time per point and round
    warmup_s: float = 0.5  # unmeasured time before each point
    texts: int = 512  # distinct corpus texts cycled through
    # ONNX Runtime threads of cases 3-4: one, like each of the shipped encoder's instances; the services still use
    # every core, FastAPI through its thread pool and PyTriton through concurrent batches.
    server_threads: int = 1
    # Every case computes with this repository's model logic; Triton serves it.
    repository: Path = settings.MODEL_REPOSITORY
    workloads: tuple[Workload, ...] = (corpus.DEFAULT_WORKLOAD,)  # each measured apart, against its own ceiling

    def check(self) -> None:
        """Refuse what cannot make a run before minutes of measuring, not after."""
        if self.server_threads < 1:
            raise UsageError("--server-threads must be at least 1")
        pipeline.check_repository(self.repository)

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(concurrencies=(8,), ceiling_batches=(8,), ceiling_threads=((2, 1),), rounds=1,
                   seconds=1.5, warmup_s=0.3, texts=64)


@dataclass(frozen=True)
class Point:
    """One measurement of one workload: for the ceiling `concurrency` is the batch size and `threads` reads callers x
    ONNX Runtime threads ("2x1"); loadgen_cpu is in cores (None in-process)."""

    case: Case
    concurrency: int
    threads: str
    sentences_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    loadgen_cpu: float | None
    workload: Workload = corpus.DEFAULT_WORKLOAD

    def __post_init__(self) -> None:
        object.__setattr__(self, "case", Case(self.case))
        object.__setattr__(self, "workload", Workload(self.workload))


def _latency_point(case: Case, concurrency: int, threads: str, latencies_s: list[float], sentences: int,
                   elapsed_s: float, loadgen_cpu: float | None) -> Point:
    if not latencies_s:
        raise BenchmarkError(f"{case} at {concurrency}: no request completed in {elapsed_s:.1f} s")
    p50, p99 = np.percentile(np.array(latencies_s) * 1e3, [50, 99])
    return Point(case, concurrency, threads, round(sentences / elapsed_s, 1), round(float(p50), 2),
                 round(float(p99), 2), len(latencies_s), None if loadgen_cpu is None else round(loadgen_cpu, 2))


# -- 1. the ceiling ------------------------------------------------------------------------------------------------
def measure_ceiling(texts: list[str], batch: int, callers: int, intra_threads: int, config: BenchConfig) -> Point:
    """`callers` threads embed back-to-back batches of `batch` texts in this process for `config.seconds`
    (ONNX Runtime releases the GIL, so two callers of one thread use two cores, as two encoder instances do)."""
    embed = pipeline.EmbeddingPipeline(intra_threads, config.repository)
    chunks = [texts[i:i + batch] for i in range(0, len(texts) - batch + 1, batch)] or [texts]

    def loop(caller: int, until: float) -> tuple[list[float], int]:
        latencies, sentences = [], 0
        batches = itertools.islice(itertools.cycle(chunks), caller * len(chunks) // callers, None)
        while (now := time.perf_counter()) < until:
            chunk = next(batches)
            embed(chunk)
            latencies.append(time.perf_counter() - now)
            sentences += len(chunk)
        return latencies, sentences

    with ThreadPoolExecutor(callers) as pool:
        warm_until = time.perf_counter() + config.warmup_s
        list(pool.map(loop, range(callers), [warm_until] * callers))
        start = time.perf_counter()
        results = list(pool.map(loop, range(callers), [start + config.seconds] * callers))
        elapsed = time.perf_counter() - start
    label = f"{callers}x{intra_threads}" if callers > 1 else str(intra_threads)
    return _latency_point(Case.CEILING, batch, label, [t for lat, _ in results for t in lat],
                          sum(n for _, n in results), elapsed, None)


@contextlib.contextmanager
def ceiling_process() -> Iterator[Callable[[int, int, int, BenchConfig, Workload], Point]]:
    """Measure the ceiling in a child process of its own session, as every server runs: with the kernel's
    autogroup scheduling each session gets its own share of a busy machine, so this keeps the comparison fair."""
    child = spawn("the ceiling process", [sys.executable, "-m", CEILING_SERVICE], stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE, text=True)

    def measure(batch: int, callers: int, threads: int, config: BenchConfig,
                workload: Workload = corpus.DEFAULT_WORKLOAD) -> Point:
        request = {"batch": batch, "callers": callers, "threads": threads, "seconds": config.seconds,
                   "warmup_s": config.warmup_s, "texts": config.texts, "repository": str(config.repository),
                   "workload": workload}
        child.process.stdin.write(json.dumps(request) + "\n")
        child.process.stdin.flush()
        answer = child.process.stdout.readline()
        if not answer:
            raise BenchmarkError(f"the ceiling process exited with code {child.wait()}")
        return Point(**json.loads(answer))

    try:
        yield measure
    finally:
        child.process.stdin.close()
        child.stop(runtime.STOP_TIMEOUT_S)


def serve_ceiling_requests() -> None:
    """The child's side: one JSON request per stdin line, one Point per stdout line."""
    for line in sys.stdin:
        request = json.loads(line)
        config = BenchConfig(seconds=request["seconds"], warmup_s=request["warmup_s"], texts=request["texts"],
                             repository=Path(request["repository"]))
        workload = Workload(request["workload"])
        point = measure_ceiling(workload_texts(workload, config.texts), request["batch"], request["callers"],
                                request["threads"], config)
        print(json.dumps(asdict(replace(point, workload=workload))), flush=True)


def workload_texts(workload: Workload, count: int) -> list[str]:
    return corpus.load(corpus.CORPORA[workload])[:count]


# -- load generation for the served cases ------------------------------------------------------------------------
async def drive(send: Sender, texts: list[str], concurrency: int,
                config: BenchConfig) -> tuple[list[float], float, float]:
    """`concurrency` workers send one text per request back to back until the measured window (after the warm-up)
    closes. Returns the latencies of every request that finished after the warm-up, the time from the warm-up's
    end to the last of them (requests in flight when the window closes are waited for, so a point slower than the
    window still counts), and this process's CPU time over the window (the load generator's)."""
    source = itertools.cycle(texts)
    loop = asyncio.get_running_loop()
    window_start = loop.time() + config.warmup_s
    window_end = window_start + config.seconds
    latencies: list[float] = []
    last_finish = window_start
    cpu_at: dict[str, float] = {}

    async def worker() -> None:
        nonlocal last_finish
        while (started := loop.time()) < window_end:
            await send(next(source))
            finished = loop.time()
            if finished >= window_start:
                latencies.append(finished - started)
                last_finish = max(last_finish, finished)

    async def clock() -> None:  # reads the CPU time at both ends of the window
        await asyncio.sleep(config.warmup_s)
        cpu_at["start"] = _cpu_seconds()
        await asyncio.sleep(config.seconds)
        cpu_at["end"] = _cpu_seconds()

    await asyncio.gather(clock(), *(worker() for _ in range(concurrency)))
    return latencies, last_finish - window_start, cpu_at["end"] - cpu_at["start"]


def _cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def measure_served(case: Case, make_sender: SenderFactory, texts: list[str], concurrency: int, threads: str,
                   config: BenchConfig, workload: Workload = corpus.DEFAULT_WORKLOAD) -> Point:
    """One point of a served case: `concurrency` requests in flight for `config.seconds`."""

    async def run() -> tuple[list[float], float, float]:
        async with make_sender() as send:
            return await drive(send, texts, concurrency, config)

    latencies, elapsed, cpu = asyncio.run(run())
    return replace(_latency_point(case, concurrency, threads, latencies, len(latencies), elapsed, cpu / config.seconds),
                   workload=workload)


@contextlib.asynccontextmanager
async def triton_sender(url: str, model: str):
    """Send one text per gRPC request (asyncio client) and check the answer's shape."""
    connection = client.connect(client.Protocol.GRPC, url, aio=True)

    async def send(text: str) -> None:
        embedding = await client.embed_async(connection, [text], model)
        if embedding.shape != (1, settings.EMBEDDING_DIM):
            raise BenchmarkError(f"{model} answered {embedding.shape}")

    try:
        yield send
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def fastapi_sender(base_url: str):
    import aiohttp

    async with aiohttp.ClientSession(base_url, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def send(text: str) -> None:
            async with session.post("/embed", json={"text": text}) as response:
                body = await response.json()
            if response.status != 200 or len(body.get("embedding", ())) != settings.EMBEDDING_DIM:
                raise BenchmarkError(f"the FastAPI service answered {response.status}: {str(body)[:200]}")

        yield send


# -- the comparison services ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def service_process(name: str, module: str, args: list[str], ready: Callable[[], bool], waiting_for: str,
                    env: dict[str, str] | None = None) -> Iterator[None]:
    """Run `python -m module args` as a supervised child until `ready()` holds; always stop its group."""
    log = Path(tempfile.gettempdir()) / f"bench-{name}-{os.getpid()}.log"
    log.unlink(missing_ok=True)
    try:
        with processes.running(f"the {name} service", [sys.executable, "-m", module, *args], log=log, env=env,
                               ready=ready, timeout=SERVICE_READY_TIMEOUT_S, waiting_for=waiting_for,
                               grace=runtime.STOP_TIMEOUT_S):
            yield
    except ProcessError as exc:
        raise BenchmarkError(str(exc)) from None


@dataclass(frozen=True)
class Target:
    """A running served case: how to open a sender to it, and the ONNX Runtime threads it computes with."""

    make_sender: SenderFactory
    threads: str


def without_queue_limits(source: Path, folder: Path) -> Path:
    """A copy of the repository in `folder` whose models shed no load (no default queue policy).

    The bench measures capacity with closed-loop clients, as it does for the services that have no queue limit; with
    the shipped policy, in-flight requests beyond the encoder's queue would be refused and measured as such.
    """
    copy = Path(shutil.copytree(source, folder / source.name, symlinks=True))
    repository = load_repository(copy)
    for name, model in repository.models.items():
        config = model.config_file.config if model.config_file else None
        if config is not None and config.dynamic_batching.HasField("default_queue_policy"):
            config.dynamic_batching.ClearField("default_queue_policy")
            replace_config(repository, name, config, accept=lambda candidate: None)
    return copy


@contextlib.contextmanager
def triton_target(config: BenchConfig) -> Iterator[Target]:
    with tempfile.TemporaryDirectory(prefix="bench-repository-") as folder, \
            runtime.running_server(runtime.ServerOptions.on_free_ports(
                repository=without_queue_limits(config.repository, Path(folder)))) as server:
        yield Target(lambda: triton_sender(server.grpc_url, settings.EMBED_MODEL), "config")


@contextlib.contextmanager
def fastapi_target(config: BenchConfig) -> Iterator[Target]:
    port = processes.free_port()
    base = f"http://{settings.DEFAULT_HOST}:{port}"
    args = ["--port", str(port), "--threads", str(config.server_threads), "--repository", str(config.repository)]
    with service_process(Case.FASTAPI, FASTAPI_SERVICE, args, lambda: processes.http_ok(f"{base}/health"),
                         f"an answer at {base}"):
        yield Target(lambda: fastapi_sender(base), str(config.server_threads))


@contextlib.contextmanager
def pytriton_target(config: BenchConfig) -> Iterator[Target]:
    http, grpc, metrics = (processes.free_port() for _ in range(3))
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
            "--threads", str(config.server_threads), "--repository", str(config.repository)]
    address = f"{settings.DEFAULT_HOST}:{http}"
    # PyTriton's Python-backend stub needs this interpreter's libpython, as ours does (see runtime.stub_environment).
    with service_process(Case.PYTRITON, PYTRITON_SERVICE, args, lambda: client.model_ready(address, PYTRITON_MODEL),
                         f"{PYTRITON_MODEL} ready at {address}", env=runtime.stub_environment()):
        url = f"{settings.DEFAULT_HOST}:{grpc}"
        yield Target(lambda: triton_sender(url, PYTRITON_MODEL), str(config.server_threads))


TARGETS = {Case.TRITON: triton_target, Case.FASTAPI: fastapi_target, Case.PYTRITON: pytriton_target}


# -- the whole run and its report ---------------------------------------------------------------------------------
def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    versions = {name: importlib.metadata.version(name) for name in ("onnxruntime", "nvidia-pytriton", "tritonclient")}
    return {"cpu_model": model, "logical_cores": psutil.cpu_count(), "physical_cores": psutil.cpu_count(False),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "os": platform.platform(), **versions}


@dataclass
class BenchResult:
    config: BenchConfig
    machine: dict[str, object]
    points: list[Point]  # medians over the rounds
    rounds: list[Point] = field(default_factory=list)  # every single measurement

    @property
    def workloads(self) -> tuple[Workload, ...]:
        return self.config.workloads

    def case_points(self, case: Case, workload: Workload | None = None) -> list[Point]:
        """A case's points, of one workload (default: the run's first)."""
        workload = workload or self.workloads[0]
        return [p for p in self.points if p.case == case and p.workload == workload]

    def best(self, case: Case, workload: Workload | None = None) -> Point | None:
        return max(self.case_points(case, workload), key=lambda p: p.sentences_per_s, default=None)

    def ceiling_of(self, workload: Workload | None = None) -> float:
        best = self.best(Case.CEILING, workload)
        return best.sentences_per_s if best else 0.0

    @property
    def ceiling(self) -> float:
        """The first workload's ceiling."""
        return self.ceiling_of()

    def ratio(self, point: Point) -> float:
        """A point against the ceiling of its own workload."""
        ceiling = self.ceiling_of(point.workload)
        return point.sentences_per_s / ceiling if ceiling else 0.0

    def verdicts(self) -> list[str]:
        """The benchmark's targets per workload (Triton near the ceiling, ahead of each rival at no worse p99), each
        stated with the figures that decide it."""
        lines = []
        for workload in self.workloads:
            triton = self.best(Case.TRITON, workload)
            if triton is None:
                continue
            named = f"{workload}: " if len(self.workloads) > 1 else ""
            lines.append(f"{named}Triton best {triton.sentences_per_s:.1f}/s at {triton.concurrency} in flight = "
                         f"{self.ratio(triton):.2f} x ceiling (target {TARGET_RATIO}): "
                         f"{'met' if self.ratio(triton) >= TARGET_RATIO else 'NOT met'}")
            for other in (Case.FASTAPI, Case.PYTRITON):
                rival = self.best(other, workload)
                if rival is None:
                    continue
                beating = [p for p in self.case_points(Case.TRITON, workload)
                           if p.sentences_per_s > rival.sentences_per_s and p.p99_ms <= rival.p99_ms]
                lines.append(f"{named}vs {CASE_TITLES[other]} (best {rival.sentences_per_s:.1f}/s, p99 "
                             f"{rival.p99_ms:.0f} ms): "
                             + (f"beaten at {beating[0].concurrency} in flight ({beating[0].sentences_per_s:.1f}/s, "
                                f"p99 {beating[0].p99_ms:.0f} ms)" if beating else "NOT beaten at equal or lower p99"))
        return lines

    def as_dict(self) -> dict:
        config = {**asdict(self.config), "repository": str(self.config.repository)}
        return {"machine": self.machine, "config": config, "ceiling_sentences_per_s": self.ceiling,
                "ceilings": {str(w): self.ceiling_of(w) for w in self.workloads},
                "points": [{**asdict(p), "ratio_to_ceiling": round(self.ratio(p), 3)} for p in self.points],
                "verdicts": self.verdicts(), "rounds": [asdict(p) for p in self.rounds]}


def combine(points: list[Point]) -> list[Point]:
    """One point per (workload, case, concurrency, threads): the median over rounds of each figure."""
    groups: dict[tuple[Workload, Case, int, str], list[Point]] = {}
    for point in points:
        groups.setdefault((point.workload, point.case, point.concurrency, point.threads), []).append(point)

    def median(values: list[float]) -> float:
        return round(float(np.median(values)), 2)

    return [Point(case, concurrency, threads, median([p.sentences_per_s for p in group]),
                  median([p.p50_ms for p in group]), median([p.p99_ms for p in group]),
                  sum(p.requests for p in group),
                  None if group[0].loadgen_cpu is None else median([p.loadgen_cpu for p in group]), workload)
            for (workload, case, concurrency, threads), group in groups.items()]


def run(config: BenchConfig, cases: tuple[Case, ...] = tuple(Case),
        progress: Progress = lambda _: None) -> BenchResult:
    """Start every served case at once, then measure all points round-robin for `config.rounds` rounds, so a
    noisy neighbour on the machine slows every case alike (each workload in turn, within each round); each figure is
    the median over the rounds."""
    config.check()
    texts = {workload: workload_texts(workload, config.texts) for workload in config.workloads}
    started_load = os.getloadavg()[0]
    rounds: list[Point] = []
    with contextlib.ExitStack() as stack:
        ceiling = stack.enter_context(ceiling_process()) if Case.CEILING in cases else None
        targets = {}
        for case in (c for c in TARGETS if c in cases):
            progress(f"starting {CASE_TITLES[case]}")
            targets[case] = stack.enter_context(TARGETS[case](config))
        for number, workload in itertools.product(range(1, config.rounds + 1), config.workloads):
            if ceiling is not None:
                for (callers, threads), batch in itertools.product(config.ceiling_threads, config.ceiling_batches):
                    progress(f"round {number}/{config.rounds}, {workload}: ceiling, batch {batch}, "
                             f"{callers}x{threads} threads")
                    rounds.append(ceiling(batch, callers, threads, config, workload))
            for case, target in targets.items():
                for concurrency in config.concurrencies:
                    progress(f"round {number}/{config.rounds}, {workload}: {CASE_TITLES[case]}, "
                             f"{concurrency} in flight")
                    rounds.append(measure_served(case, target.make_sender, texts[workload], concurrency,
                                                 target.threads, config, workload))
    info = {**machine(), "load_average_1m_at_start": round(started_load, 2),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2)}
    return BenchResult(config, info, combine(rounds), rounds)


if __name__ == "__main__":
    serve_ceiling_requests()
