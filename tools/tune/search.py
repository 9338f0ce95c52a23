"""The live search: a throwaway copy of the repository served by a real Triton, scraped by a real Prometheus,
loaded by the project's Locust runner; each candidate validated, loaded in place through the repository API while
the load runs, measured. Two strategies pick the candidates: the greedy one (`decide`) keeps a change that pays and
undoes one that does not; the sweep measures every point of a fixed grid (`space`), each loaded over the one before.
Both measure, load and record a setting the same way (`try_setting`).

Every step is one Locust run (constant users, closed loop): the change is loaded about a second into it, so the
requests in flight during the change are counted (they must all succeed); then `window_s` seconds are measured after
the change: throughput from Locust's running totals, p99 from its last 10 s, Prometheus' per-model view over the
same span. The greedy's decisions come from that view; keep-or-undo and the winner from Locust's numbers against
the SLO.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from tools import settings
from tools.errors import ServingError, TuneError, UsageError
from tools.loadtest import corpus, runner
from tools.loadtest.runner import LoadTestConfig, Progress
from tools.monitoring.prometheus import Prometheus, ScrapeTarget
from tools.repository import ConfigFile, ModelConfig, Repository, load_repository
from tools.serving import runtime
from tools.serving.control import Control
from tools.tune import decide, knobs, snapshot, space
from tools.tune.knobs import Setting
from tools.tune.space import Strategy
from tools.validation import Options, blocking_errors

SCRAPE_JOB = "triton"
SCRAPE_INTERVAL = "1s"
APPLY_AFTER_S = 1.0  # into a step's run (and the warm-up of the first): the change is loaded under load
APPLY_ALLOWANCE_S = 8.0  # added to a changing step's run: reloading the encoder took 2-12 s on a busy 2-core host
LOCUST_PERCENTILE_WINDOW_S = 10  # Locust's current percentiles cover the last 10 s: a p99 free of the change needs
# that much full load after it
RUN_OVERHEAD_S = 6.0  # a step's time beyond its Locust run: Locust's start and stop, 2 s, or 15-16 s when its gRPC
# teardown hangs until it is killed (3 runs in 7 on 2 busy cores)
SERVE_S = 14.0  # starting Triton on a copy and Prometheus until its first scrape (10-14 s on 2 busy cores)


@dataclass
class TuneOptions:
    model: str
    repository: Path
    slo_p99_ms: float
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    strategy: Strategy = Strategy.GREEDY
    steps: int = 8  # the greedy's budget: most changes measured after the start
    window_s: int = 15
    users: int = 8
    workload: corpus.Workload = corpus.DEFAULT_WORKLOAD  # the texts every measurement sends
    protocol: settings.Protocol = settings.Protocol.GRPC
    out_dir: Path = Path("results/tune")
    url: str | None = None  # a running server's HTTP endpoint: tune it in place (its --repository must be its own)
    metrics_url: str | None = None  # that server's metrics endpoint
    control_key: str | None = None  # that server's model-control secret


@dataclass
class Step:
    """One measured setting: what changed and why, what the client and Prometheus saw, and the verdict."""

    index: int
    change: str
    reason: str
    setting: Setting
    throughput_rps: float = 0.0
    p99_ms: float = 0.0
    failed: int = 0  # requests that failed with an error in the run the change was loaded in
    refused: int = 0  # requests the server shed (its queue policy) in that run
    requests: int = 0
    apply_s: float = 0.0  # how long Triton took to load the change
    measured_s: float = 0.0  # seconds of the run measured after the change
    slowest_ms: float = 0.0  # the slowest request of the run the change was loaded in (it may wait for the load)
    load_cpu: float = 0.0  # the load generator's own CPU, in cores, over its run
    kept: bool = False
    verdict: str = ""
    snapshot: snapshot.Snapshot | None = None

    def setting_text(self) -> str:
        return "; ".join(f"{model} {k.describe()}" for model, k in self.setting.items())

    def outcome(self) -> decide.Outcome:
        return decide.Outcome(self.throughput_rps, self.p99_ms, self.failed)

    def as_dict(self, slo_p99_ms: float) -> dict:
        return {"step": self.index, "change": self.change, "reason": self.reason,
                "setting": {m: k.__dict__ for m, k in self.setting.items()},
                "throughput_rps": self.throughput_rps, "p99_ms": self.p99_ms,
                "within_slo": self.outcome().within(slo_p99_ms), "failed": self.failed, "refused": self.refused,
                "requests": self.requests, "apply_s": self.apply_s, "measured_s": self.measured_s,
                "slowest_ms_during_change": self.slowest_ms,
                "load_generator_cpu_cores": self.load_cpu,
                "kept": self.kept, "verdict": self.verdict,
                "snapshot": self.snapshot.as_dict() if self.snapshot else None}


@dataclass
class Search:
    """A whole run: every step, the winner, and where the files went."""

    options: TuneOptions
    models: list[str]
    original: Setting
    steps: list[Step] = field(default_factory=list)
    wall_s: float = 0.0
    stopped: str = ""  # why the search ended
    loaded: Setting = field(default_factory=dict)  # what the server runs now
    grid: space.Grid | None = None  # the sweep's points

    def best(self) -> Step | None:
        """The fastest step inside the SLO; None when none was. A greedy search's winner is one it kept: a move it
        undid gained less than run-to-run noise, however its one window came out."""
        inside = [s for s in self.steps if s.outcome().within(self.options.slo_p99_ms)
                  and (s.kept or self.options.strategy == Strategy.SWEEP)]
        return max(inside, key=lambda s: s.throughput_rps) if inside else None

    def closest(self) -> Step:
        """What to name when nothing met the SLO: the step with the lowest p99."""
        return min(self.steps, key=lambda s: s.p99_ms)


def tuned_models(repository: Repository, model: str) -> list[str]:
    """The models whose settings are tuned: an ensemble's composing models, or the model itself."""
    if repository.error is not None or not repository.models:
        raise UsageError(f"{repository.root} is not a model repository (no model folders)")
    if model not in repository.models:
        raise UsageError(f"unknown model {model!r}: the repository has {', '.join(sorted(repository.models))}")
    entry = repository.models[model]
    if entry.config is None:
        raise TuneError(f"{model}'s config does not parse: run `tools validate`")
    return repository.composing_models(model) if entry.is_ensemble else [model]


def candidate_configs(repository: Repository, setting: Setting, cores: int) -> dict[str, ModelConfig]:
    """The config of every model whose knobs differ from the repository's, each validated as `write_config` would."""
    changed = {}
    for model, wanted in setting.items():
        config = repository.models[model].config
        if knobs.read(config) == wanted:
            continue
        candidate = knobs.write(config, wanted)
        found = blocking_errors(repository, model, ConfigFile(repository.models[model].path / "config.pbtxt",
                                                              config=candidate), Options(cores=cores))
        if found:
            raise TuneError(f"{model}: " + "; ".join(f"{f.code} {f.message}" for f in found))
        changed[model] = candidate
    return changed


def load_setting(control: Control, repository: Repository, setting: Setting, previous: Setting) -> float:
    """Load, with a config override, every model whose knobs differ between `previous` and `setting`; seconds."""
    started = time.monotonic()
    for model, wanted in setting.items():
        if wanted != previous[model]:
            control.load(model, knobs.as_override(knobs.write(repository.models[model].config, wanted)))
    return time.monotonic() - started


def load_or_restore(control: Control, repository: Repository, setting: Setting, last_good: Setting) -> float:
    """Load `setting` (seconds it took); if Triton refuses it, load `last_good` again and raise the refusal."""
    try:
        return load_setting(control, repository, setting, last_good)
    except ServingError:
        load_setting(control, repository, last_good, setting)
        raise


@dataclass
class Target:
    """What a search works on: the repository whose configs it starts from, the server's repository API, the URL
    Locust loads, and the Prometheus that scrapes the server."""

    repository: Repository
    control: Control
    url: str
    prometheus: Prometheus


def _scraping(address: str, metrics_path: str = "/metrics") -> Prometheus:
    prometheus = Prometheus([ScrapeTarget(SCRAPE_JOB, address, metrics_path=metrics_path)], interval=SCRAPE_INTERVAL)
    prometheus.start()
    try:
        prometheus.wait_for_targets()
    except BaseException:
        prometheus.stop()
        raise
    return prometheus


@contextlib.contextmanager
def serving(options: TuneOptions) -> Iterator[Target]:
    """A copy of the repository served by Triton on free ports, and Prometheus scraping it (scraped once)."""
    with tempfile.TemporaryDirectory(prefix="tune-repository-") as folder:
        copy = Path(folder) / "model_repository"
        shutil.copytree(options.repository, copy)
        with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=copy)) as server:
            prometheus = _scraping(urllib.parse.urlsplit(server.metrics_url).netloc)
            try:
                url = server.grpc_url if options.protocol == settings.Protocol.GRPC else server.http_url
                yield Target(load_repository(copy), Control(server.http_url, server.control_key), url, prometheus)
            finally:
                prometheus.stop()


@contextlib.contextmanager
def running(options: TuneOptions) -> Iterator[Target]:
    """The server at `options.url` (HTTP), its repository API, and Prometheus scraping its `metrics_url`."""
    control = Control(options.url, options.control_key)
    if not control.ready_versions(options.model):  # also: the server answers, and the key is right
        raise TuneError(f"{options.model} is not ready on the server at {options.url}")
    metrics = urllib.parse.urlsplit(runner.parse_metrics_url(options.metrics_url))
    prometheus = _scraping(metrics.netloc, metrics.path)
    try:
        yield Target(load_repository(options.repository), control, options.url, prometheus)
    finally:
        prometheus.stop()


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def settled(history: list[dict], since: float, users: int) -> tuple[float, float, float] | None:
    """Accepted requests/s, p99 (ms) and seconds measured from Locust's per-second history after `since` (a Unix
    time): throughput from the running totals, p99 from the last full-load row (Locust's percentiles of the last
    10 s). None when fewer than two rows follow `since`."""
    rows = [row for row in history if (row["timestamp"] or 0) >= since and row["users"] == users]
    if len(rows) < 2 or rows[-1]["p99_ms"] is None:
        return None

    def accepted(row: dict) -> float:
        return (row["requests"] or 0) - row["refused"] - row["failures"]

    seconds = rows[-1]["timestamp"] - rows[0]["timestamp"]
    return round((accepted(rows[-1]) - accepted(rows[0])) / seconds, 1), rows[-1]["p99_ms"], seconds


class Measure:
    """One step: a Locust run with the change loaded into it under load, then at least `window_s` seconds (and the
    10 s Locust's p99 looks back over) measured after it, by Locust and by Prometheus per model. A change slower than
    the run's allowance leaves too little measured: a second run, with nothing changing, measures it then."""

    def __init__(self, options: TuneOptions, url: str, prometheus: Prometheus, models: list[str]):
        self.options, self.url, self.prometheus, self.models = options, url, prometheus, models
        self.job = f'{{job="{SCRAPE_JOB}"}}'

    def __call__(self, step: Step, change: Callable[[], float] | None) -> Step:
        result, since, seen = self._run(step, change, "")
        step.slowest_ms = result.client.latency_ms["max"]
        measured = settled(result.history, since, self.options.users)
        if change is not None and (measured is None or measured[2] < LOCUST_PERCENTILE_WINDOW_S):
            failures, refused, requests = result.client.failures, result.client.refused, result.client.requests
            result, since, seen = self._run(step, None, "-measured")
            result.client = replace(result.client, failures=result.client.failures + failures,
                                    refused=result.client.refused + refused,
                                    requests=result.client.requests + requests)
            measured = settled(result.history, since, self.options.users)
        if measured is None:
            raise TuneError(f"Locust's history holds under two seconds of full load: raise --window "
                            f"(see {result.log})")
        client = result.client
        step.throughput_rps, step.p99_ms, step.measured_s = measured
        step.failed, step.refused, step.requests = client.failures, client.refused, client.requests
        step.snapshot = seen[0] if seen else snapshot.read(self.prometheus.client(), self.models,
                                                           self.options.window_s, self.job)
        return step

    def _run(self, step: Step, change: Callable[[], float] | None,
             suffix: str) -> tuple[runner.LoadTestResult, float, list[snapshot.Snapshot]]:
        """One Locust run; the change (if any) loaded a second into it. The run, when its measured part starts, and
        Prometheus' view of that part."""
        options = self.options
        run_s = APPLY_AFTER_S + options.window_s
        if change is not None:
            run_s = APPLY_AFTER_S + APPLY_ALLOWANCE_S + max(options.window_s, LOCUST_PERCENTILE_WINDOW_S)
        config = LoadTestConfig(url=self.url, protocol=options.protocol, model=options.model, users=options.users,
                                duration_s=run_s, corpus=corpus.CORPORA[options.workload])
        since: list[float] = []  # Unix time from which the setting is measured: after the change, or a warm-up
        error: list[ServingError] = []
        seen: list[snapshot.Snapshot] = []

        def on_progress(progress: Progress) -> None:
            if not since and progress.elapsed_s >= APPLY_AFTER_S:
                if change is not None:
                    try:
                        step.apply_s = round(change(), 2)
                    except ServingError as exc:
                        error.append(exc)
                since.append(time.time())
            if since and not seen and progress.elapsed_s >= run_s - 2 and time.time() - since[0] >= 3:
                seen.append(snapshot.read(self.prometheus.client(), self.models, int(time.time() - since[0]),
                                          self.job))

        cpu_before = _children_cpu_s()
        result = runner.run(config, options.out_dir / "steps" / f"{step.index:02d}{suffix}", on_progress=on_progress)
        step.load_cpu = round((_children_cpu_s() - cpu_before) / max(result.client.elapsed_s, 1e-3), 2)
        if error:
            raise error[0]
        if not since:
            raise TuneError(f"Locust reported no progress in its {run_s:.0f} s run: see {result.log}")
        return result, since[0], seen


def plan(options: TuneOptions, levels: space.Levels = space.Levels()) -> space.Grid:
    """The sweep's grid from the repository's settings, each model setting validated as `candidate_configs` would
    before it is loaded (a point with a refused one is left out: found before anything starts)."""
    repository = load_repository(options.repository)
    models = tuned_models(repository, options.model)

    def refusal(model: str, wanted: knobs.Knobs) -> str | None:
        try:
            candidate_configs(repository, {model: wanted}, options.cores)
        except TuneError as exc:
            return str(exc)
        return None

    grid = space.grid({m: knobs.read(repository.models[m].config) for m in models}, options.cores, levels, refusal)
    if not grid.points:
        raise TuneError(f"validation refuses every point of the sweep's grid: {grid.refusals()}")
    return grid


def estimate_s(grid: space.Grid, window_s: int) -> float:
    """About how long a sweep of `grid` takes: one changing step's Locust run per point, and the start."""
    changing = APPLY_AFTER_S + APPLY_ALLOWANCE_S + max(window_s, LOCUST_PERCENTILE_WINDOW_S) + RUN_OVERHEAD_S
    return len(grid.points) * changing + APPLY_AFTER_S + window_s + RUN_OVERHEAD_S + SERVE_S


def run(options: TuneOptions, on_step: Callable[[Step], None] = lambda step: None,
        grid: space.Grid | None = None) -> Search:
    """The search from the repository's settings, by `options.strategy` (the sweep measures `grid`, by default
    `plan(options)`); the winner is the fastest step inside the SLO."""
    started = time.monotonic()
    models = tuned_models(load_repository(options.repository), options.model)
    if options.strategy != Strategy.SWEEP:
        grid = None
    elif grid is None:
        grid = plan(options)
    with (running if options.url else serving)(options) as target:
        repository, control = target.repository, target.control
        current = {m: knobs.read(repository.models[m].config) for m in models}
        search = Search(options, models, original=dict(current), loaded=dict(current), grid=grid)
        try:
            measure = Measure(options, target.url, target.prometheus, models)
            snapshot.require_families(target.prometheus.client(), measure.job)
            start = _start(search, measure, on_step)
            if grid is None:
                _greedy(search, target, measure, start, on_step)
            else:
                _sweep(search, target, measure, grid, on_step)
        finally:
            if options.url:  # a server that stays: leave the winner loaded, else the repository's settings
                best = search.best()
                final = best.setting if best else search.original
                load_setting(control, repository, final, search.loaded)
                search.loaded = final
    search.wall_s = round(time.monotonic() - started, 1)
    return search


def _record(search: Search, step: Step, on_step: Callable[[Step], None]) -> None:
    search.steps.append(step)
    on_step(step)


def _start(search: Search, measure: Measure, on_step: Callable[[Step], None]) -> Step:
    """Measure the repository's settings, as loaded: the first step of either strategy."""
    start = measure(Step(0, "none", "the repository's settings", search.original), None)
    start.kept = True
    start.verdict = f"{start.throughput_rps:.1f} req/s, p99 {start.p99_ms:.0f} ms: the start"
    _record(search, start, on_step)
    return start


def try_setting(search: Search, target: Target, measure: Measure, step: Step) -> bool:
    """Validate `step.setting`, load it live under load over what the server runs now, and measure it: True when
    measured. False when validation or Triton refused it (the verdict says which); the server then runs what it
    ran before."""
    options, repository, last_good = search.options, target.repository, search.loaded
    try:
        candidate_configs(repository, step.setting, options.cores)
    except TuneError as exc:
        step.verdict = f"refused by validation ({exc})"
        return False
    search.loaded = step.setting
    try:
        measure(step, functools.partial(load_or_restore, target.control, repository, step.setting, last_good))
    except ServingError as exc:  # Triton refused it, and the last good setting is loaded again: go on
        search.loaded = last_good
        step.verdict = f"refused by Triton ({exc}): back to the last good setting"
        return False
    return True


def _greedy(search: Search, target: Target, measure: Measure, incumbent: Step,
            on_step: Callable[[Step], None]) -> None:
    """One move at a time from the start until none is left or the step budget is spent; a move is kept when it
    buys throughput inside the SLO, else undone."""
    options = search.options
    seen = [incumbent.setting]
    while len(search.steps) <= options.steps:
        moves = decide.propose(incumbent.snapshot, incumbent.setting, options.cores, seen, options.users,
                               short_texts=options.workload == corpus.Workload.QUERIES)
        if not moves:
            search.stopped = decide.why_stop(incumbent.snapshot, incumbent.setting, options.cores)
            break
        move = moves[0]
        seen.append(move.setting)
        step = Step(len(search.steps), knobs.describe_change(incumbent.setting, move.setting), move.reason,
                    move.setting)
        if try_setting(search, target, measure, step):
            step.kept, step.verdict = decide.judge(step.outcome(), incumbent.outcome(), options.slo_p99_ms)
            if step.kept:
                incumbent = step
            else:
                load_setting(target.control, target.repository, incumbent.setting, move.setting)
                search.loaded = incumbent.setting
        _record(search, step, on_step)
    else:
        search.stopped = f"the step budget ({options.steps}) is spent"


def _sweep(search: Search, target: Target, measure: Measure, grid: space.Grid,
           on_step: Callable[[Step], None]) -> None:
    """Every point of the grid in order, each loaded over the one before it (none is undone)."""
    slo = search.options.slo_p99_ms
    for number, point in enumerate(grid.points, 1):
        step = Step(len(search.steps), knobs.describe_change(search.loaded, point), "", point)
        step.reason = f"sweep {number}/{len(grid.points)}: {step.setting_text()}"
        if try_setting(search, target, measure, step):
            outcome = step.outcome()
            step.verdict = f"{outcome.throughput_rps:.1f} req/s, p99 {outcome.p99_ms:.0f} ms: " + (
                f"{outcome.failed} failed request(s)" if outcome.failed else
                "inside the SLO" if outcome.within(slo) else f"over the SLO ({slo:g} ms)")
        _record(search, step, on_step)
    search.stopped = f"every point of the grid was tried ({len(grid.points)})"
