"""`tools tune --observe`: recommend settings from what production traffic did, without generating any load.

An existing Prometheus (for example the one scraping the chart's pods) is asked about a window: per composing model
the request rate, queue and compute time per request, batch size and failures, every ratio a ratio of sums over the
pods (`tools.monitoring.queries`). The decision logic the live search uses (`tools.tune.decide`) turns that view and
the repository's settings into moves with reasons; the first is the recommendation (`tools.tune.report` shows it
as the config diff `--write` would make). Instance counts and batching live in config.pbtxt, not in the chart's
values, so the diff is deployed with `tools deploy upgrade`, whose repository digest rolls the pods.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from google.protobuf import json_format
from prometheus_api_client import PrometheusConnect
from urllib3.util import Retry

from tools import settings
from tools.monitoring import metrics, queries
from tools.repository import ModelConfig, load_repository
from tools.serving.control import Control
from tools.tune import decide, knobs, search, snapshot
from tools.tune.knobs import Setting
from tools.tune.snapshot import SnapshotError
from tools.validation import write_config

# Requests to the observed model over the window below which its queueing says too little to act on (the CLI shows
# it as --min-requests' default).
MIN_REQUESTS = 300
CONNECT_TIMEOUT_S = 10
# What the evidence is read from: the families a decision needs, and the latency summaries the p99 comes from.
OBSERVED_FAMILIES = (*snapshot.REQUIRED_FAMILIES, metrics.REQUEST_SUMMARY_US)
FAMILY_HINTS = {metrics.REQUEST_SUMMARY_US: "latency summaries off? start Triton with "
                                            "--metrics-config=summary_latencies=true (the chart does)",
                metrics.CPU_UTILIZATION: "CPU metrics off? start Triton with --allow-cpu-metrics=true"}


@dataclass(frozen=True)
class ObserveOptions:
    model: str
    repository: Path
    prometheus_url: str
    window_s: int = 1800
    job: str = settings.METRICS_JOB
    namespace: str | None = None
    cores: int = 1
    min_requests: int = MIN_REQUESTS
    url: str | None = None  # a serving pod's HTTP endpoint: judge the settings it runs, not the repository's

    @property
    def selector(self) -> str:
        """The series of the deployment observed: its scrape job, in its namespace if given."""
        return queries.selector(queries.equals(queries.JOB_LABEL, self.job),
                                queries.equals(queries.NAMESPACE_LABEL, self.namespace) if self.namespace else "")


@dataclass
class Observation:
    """The evidence, the settings it was judged against, and the moves it calls for (the first is recommended)."""

    options: ObserveOptions
    models: list[str]
    requests: float  # requests to the observed model over the window, summed over the pods
    p99_ms: float  # the observed model's p99 at the window's end, worst pod (Triton's summaries)
    view: snapshot.Snapshot
    current: Setting
    moves: list[decide.Move] = field(default_factory=list)
    why_none: str = ""
    on_disk: Setting = field(default_factory=dict)  # the repository's settings, when the server runs others

    @property
    def repository_setting(self) -> Setting:
        return self.on_disk or self.current

    @property
    def recommended(self) -> decide.Move | None:
        return self.moves[0] if self.moves else None

    def as_dict(self) -> dict:
        options = self.options
        return {"model": options.model, "prometheus": options.prometheus_url, "selector": options.selector,
                "window_s": options.window_s, "cores": options.cores, "requests": self.requests,
                "p99_ms": self.p99_ms, "snapshot": self.view.as_dict(),
                "bottleneck": decide.bottleneck(self.view, self.current),
                "current": {m: asdict(k) for m, k in self.current.items()},
                "server_differs_from_repository": self.server_differs() or None,
                "recommended": _move_dict(self.current, self.recommended) if self.recommended else None,
                "alternatives": [_move_dict(self.current, move) for move in self.moves[1:]],
                "no_change_because": self.why_none or None}

    def server_differs(self) -> str:
        """How the settings the server runs differ from the repository's ('' when they do not)."""
        return knobs.describe_change(self.on_disk, self.current) if self.on_disk and self.on_disk != self.current \
            else ""


def _move_dict(current: Setting, move: decide.Move) -> dict:
    return {"model": move.model, "change": knobs.describe_change(current, move.setting), "reason": move.reason,
            "setting": {m: asdict(k) for m, k in move.setting.items()}}


def window_text(seconds: int) -> str:
    """PromQL's duration for a window: '30m', '90s'."""
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def connect(url: str) -> PrometheusConnect:
    """A client of the Prometheus at `url`, which answered once (no retries: an address that refuses is a typo)."""
    client = PrometheusConnect(url=url, disable_ssl=True, retry=Retry(total=0), timeout=CONNECT_TIMEOUT_S)
    try:
        answered = client.check_prometheus_connection()
    except OSError:  # requests' errors are OSErrors
        answered = False
    if not answered:
        raise SnapshotError(f"Prometheus at {url} is unreachable")
    return client


def require_evidence(client: PrometheusConnect, options: ObserveOptions, models: list[str]) -> float:
    """Fail unless Prometheus holds, within the window, every family for every model and enough traffic; the
    requests to the observed model."""
    sel, window = options.selector, window_text(options.window_s)
    seen = snapshot.query(client, queries.series_by_model(metrics.REQUEST_SUCCESS, sel, window))
    if missing := [m for m in [options.model, *models] if m not in seen]:
        raise SnapshotError(f"no series of {metrics.REQUEST_SUCCESS}{sel} for {', '.join(missing)} in the last "
                            f"{window} at {options.prometheus_url} (--job / --namespace choose the selector)")
    absent = [family for family in OBSERVED_FAMILIES
              if not snapshot.query(client, queries.series_count(family, sel, window))]
    if absent:
        hints = "; ".join(FAMILY_HINTS[f] for f in absent if f in FAMILY_HINTS)
        raise SnapshotError(f"Prometheus holds no series of {', '.join(absent)}{sel} in the last {window}"
                            + (f" ({hints})" if hints else ""))
    entry = queries.with_matcher(sel, queries.equals(metrics.MODEL_LABEL, options.model))
    requests = sum(snapshot.query(client, queries.total_increase(metrics.REQUEST_SUCCESS, entry, window)).values())
    if requests < options.min_requests:
        raise SnapshotError(f"too little traffic to judge: {requests:.0f} request(s) to {options.model} in the last "
                            f"{window}, at least {options.min_requests} needed (--window, --min-requests)")
    return requests


def observe(options: ObserveOptions) -> Observation:
    """Read the window's evidence and decide on it."""
    repository = load_repository(options.repository)
    models = search.tuned_models(repository, options.model)
    client = connect(options.prometheus_url)
    requests = require_evidence(client, options, models)
    view = snapshot.read(client, models, options.window_s, options.selector)
    entry = queries.with_matcher(options.selector, queries.equals(metrics.MODEL_LABEL, options.model))
    p99_us = snapshot.query(client, queries.latency_quantiles_us(entry, (), ("0.99",)))
    on_disk = {m: knobs.read(repository.models[m].config) for m in models}
    current = running_settings(options.url, models) if options.url else on_disk
    moves = decide.propose(view, current, options.cores, [current])
    return Observation(options, models, round(requests), round(next(iter(p99_us.values()), 0.0) / 1e3, 1), view,
                       current, moves, "" if moves else decide.why_stop(view, current, options.cores),
                       on_disk if options.url else {})


def running_settings(url: str, models: list[str]) -> Setting:
    """The settings the server at `url` runs (the traffic was served with them; overrides included)."""
    control = Control(url, None)  # reading a config is not a repository call: no key needed
    return {m: _as_written(knobs.read(json_format.ParseDict(control.config(m), ModelConfig(),
                                                            ignore_unknown_fields=True)),
                           int(control.config(m).get("max_batch_size", 0)))
            for m in models}


def _as_written(served: knobs.Knobs, max_batch_size: int) -> knobs.Knobs:
    """Triton fills an empty preferred_batch_size with max_batch_size when it loads a config; both mean the same."""
    if served.preferred == (max_batch_size,):
        return replace(served, preferred=())
    return served


def evidence_rows(observation: Observation) -> list[tuple[str, ...]]:
    """model, req/s, failed/s, queue ms, compute ms, batch, settings: one row per composing model."""
    rows = []
    for model in observation.models:
        v = observation.view.models[model]
        rows.append((model, f"{v.requests_per_s:.1f}", f"{v.failures_per_s:.2f}", f"{v.queue_ms:.2f}",
                     f"{v.compute_ms:.2f}", f"{v.batch_size:.2f}", observation.current[model].describe()))
    return rows


EVIDENCE_COLUMNS = ("model", "req/s", "failed/s", "queue ms/req", "compute ms/req", "batch", "settings now")


def headline(observation: Observation) -> str:
    options = observation.options
    source = f"the settings the server at {options.url} runs" if options.url else "the repository's settings"
    differs = f" (the repository differs: {observation.server_differs()})" if observation.server_differs() else ""
    return (f"{options.model} over the last {window_text(options.window_s)} ({options.selector}): "
            f"{observation.requests:.0f} requests, p99 {observation.p99_ms:g} ms (worst pod, at the end), "
            f"CPU {observation.view.cpu:.0%}; judged against {source}{differs}")


def decision_lines(observation: Observation) -> list[str]:
    """The recommendation with its reason, then the other moves the evidence allows; or why nothing changes."""
    if observation.recommended is None:
        return [f"no change recommended: {observation.why_none}"]
    move = observation.recommended
    lines = [f"recommended: {knobs.describe_change(observation.current, move.setting)} ({move.reason})"]
    lines += [f"  also possible: {knobs.describe_change(observation.current, m.setting)} ({m.reason})"
              for m in observation.moves[1:]]
    return lines


def write_recommended(observation: Observation) -> list[Path]:
    """Write the recommendation into the repository (through the validator); the files written."""
    move = observation.recommended
    if move is None:
        return []
    repository = load_repository(observation.options.repository)
    return [write_config(repository, model, knobs.write(repository.models[model].config, move.setting[model]))
            for model in observation.models if move.setting[model] != observation.repository_setting[model]]


def deploy_command(options: ObserveOptions, release: str = settings.DEFAULT_RELEASE) -> str:
    """The rollout that carries a changed repository to the pods: the chart has no values for instance counts or
    batching; `tools deploy upgrade` sets its repository digest (modelRepository.checksum), which rolls the pods."""
    argv = ["tools", "deploy", "upgrade", "--repository", str(options.repository), "--release", release]
    if options.namespace:
        argv += ["--namespace", options.namespace]
    return shlex.join(argv)
