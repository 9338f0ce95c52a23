"""Run Locust headless against Triton, then report the client's view beside Triton's own, and judge an SLO.

Locust runs as a subprocess (its gevent monkey-patching must not touch this process); we read its CSV history
while it runs for live progress and its JSON at the end for the totals (its final CSV misses the last second).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tools import settings
from tools.errors import LoadTestError
from tools.loadtest import corpus as corpus_texts
from tools.loadtest import profiles as load_profiles
from tools.monitoring import scrape as triton_metrics
from tools.processes import spawn
from tools.serving import runtime

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
USER_CLASSES = {"grpc": "GrpcTritonUser", "http": "HttpTritonUser"}
PERCENTILES = (50, 90, 95, 99)
LOCUST_STOP_GRACE_S = 30.0  # after --run-time, how long Locust may take to stop and write its files
PROGRESS_INTERVAL_S = 1.0
LOCUST_EXIT_GRACE_S = 5.0  # how long Locust may linger after writing its final report before we stop it


# -- parsing what users type ---------------------------------------------------------------------------------------
_UNITS_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """'60s', '2m', '1.5h', '500ms' or plain seconds -> seconds."""
    match = _DURATION.match(text)
    if match is None or float(match["number"]) <= 0:
        raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 2m, 500ms")
    return float(match["number"]) * _UNITS_S[match["unit"] or "s"]


LATENCY_KEYS = (*(f"p{p}" for p in PERCENTILES), "max")
_LATENCY_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
_SLO_TERM = re.compile(r"^\s*(?P<key>[a-z0-9]+)\s*=\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>us|ms|s|%)?\s*$")


@dataclass(frozen=True)
class SloTarget:
    """One bound a run must keep: a latency ceiling in ms, an error-rate ceiling (fraction) or a throughput floor."""

    key: str
    limit: float

    def describe(self) -> str:
        if self.key == "errors":
            return f"errors <= {self.limit:.4%}"
        if self.key == "rps":
            return f"throughput >= {self.limit:g} req/s"
        return f"{self.key} <= {self.limit:g} ms"


def parse_slo(text: str) -> list[SloTarget]:
    """'p99=50ms,errors=0.1%,rps=100' -> targets; latencies default to ms, errors to a fraction unless '%'."""
    targets = []
    for term in filter(str.strip, text.split(",")):
        match = _SLO_TERM.match(term)
        if match is None:
            raise ValueError(f"invalid SLO term {term.strip()!r}: use e.g. p99=50ms,errors=0.1%,rps=100")
        key, number, unit = match["key"], float(match["number"]), match["unit"]
        if key in LATENCY_KEYS and unit in (None, *_LATENCY_UNITS_MS):
            targets.append(SloTarget(key, number * _LATENCY_UNITS_MS[unit or "ms"]))
        elif key == "errors" and unit in (None, "%"):
            targets.append(SloTarget(key, number / 100 if unit == "%" else number))
        elif key == "rps" and unit is None:
            targets.append(SloTarget(key, number))
        else:
            raise ValueError(f"invalid SLO term {term.strip()!r}: keys are {', '.join(LATENCY_KEYS)} (a latency), "
                             "errors (a rate, e.g. 0.1%) and rps (a throughput floor)")
    if not targets:
        raise ValueError("empty SLO: use e.g. p99=50ms,errors=0.1%")
    return targets


# -- what a run is -----------------------------------------------------------------------------------------------
@dataclass
class LoadTestConfig:
    """Everything that shapes one Locust run."""

    url: str  # host:port of the protocol's endpoint
    protocol: str = "grpc"
    model: str = settings.EMBED_MODEL
    model_version: str = ""
    users: int = 16
    spawn_rate: float = 0.0  # users started per second; 0: all at once
    duration_s: float = 60.0
    shape: str = load_profiles.CONSTANT
    request_rate: float = 0.0  # requests/s for the `rate` shape
    texts_per_request: int = 1
    corpus: Path = corpus_texts.DEFAULT_CORPUS
    metrics_url: str | None = None

    def check(self) -> None:
        if self.protocol not in USER_CLASSES:
            raise ValueError(f"unknown protocol {self.protocol!r}: choose grpc or http")
        if self.shape not in load_profiles.PROFILES:
            raise ValueError(f"unknown shape {self.shape!r}: choose one of {', '.join(load_profiles.PROFILES)}")
        if self.users < 1 or self.texts_per_request < 1:
            raise ValueError("--users and --texts-per-request must be at least 1")
        if self.shape == load_profiles.RATE and self.request_rate <= 0:
            raise ValueError("the rate shape needs --rate (requests/s for the whole run)")
        if not Path(self.corpus).is_file():
            raise ValueError(f"corpus {self.corpus} does not exist")


def locust_command(config: LoadTestConfig, prefix: Path | None, web_port: int | None = None) -> list[str]:
    """The Locust argv: headless with CSV/JSON under `prefix`, or its web UI on loopback at `web_port`."""
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", config.url,
           "-u", str(config.users), "-r", str(config.spawn_rate or config.users),
           "--model-name", config.model, "--model-version", config.model_version,
           "--corpus", str(config.corpus), "--texts-per-request", str(config.texts_per_request),
           "--request-rate", str(config.request_rate), "--loglevel", "WARNING"]
    if web_port is not None:
        return [*cmd, "--web-host", settings.DEFAULT_HOST, "--web-port", str(web_port), USER_CLASSES[config.protocol]]
    return [*cmd, "--headless", "-t", f"{math.ceil(config.duration_s)}s", "--stop-timeout", "5",
            "--csv", str(prefix), "--csv-full-history", "--json-file", str(prefix), "--exit-code-on-error", "0",
            "--only-summary", USER_CLASSES[config.protocol]]


def locust_environment(config: LoadTestConfig) -> dict[str, str]:
    """Locust's environment: the shape its locustfile exports."""
    return {**os.environ, settings.LOADTEST_SHAPE_ENV: config.shape}


# -- what Locust measured ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """The latest second of a running test, from Locust's CSV history."""

    elapsed_s: float
    users: int
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None

    def describe(self, duration_s: float) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:g} ms"

        return (f"{self.elapsed_s:.0f}/{duration_s:.0f} s  users {self.users}  requests {self.requests}  "
                f"failures {self.failures}  {self.rps:.1f} req/s  p50 {ms(self.p50_ms)}  p99 {ms(self.p99_ms)}")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_history(path: Path) -> list[dict[str, float | None]]:
    """Locust's per-second aggregate rows: timestamp, users, rps, failures/s, current percentiles, totals."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("Name") == "Aggregated"]
    return [{"timestamp": _number(row["Timestamp"]), "users": _number(row["User Count"]),
             "rps": _number(row["Requests/s"]), "failures_per_s": _number(row["Failures/s"]),
             **{f"p{p}_ms": _number(row[f"{p}%"]) for p in PERCENTILES},
             "requests": _number(row["Total Request Count"]), "failures": _number(row["Total Failure Count"])}
            for row in rows]


def progress_of(history: list[dict[str, float | None]]) -> Progress | None:
    if not history:
        return None
    last = history[-1]
    return Progress(elapsed_s=(last["timestamp"] or 0) - (history[0]["timestamp"] or 0), users=int(last["users"] or 0),
                    requests=int(last["requests"] or 0), failures=int(last["failures"] or 0), rps=last["rps"] or 0.0,
                    p50_ms=last["p50_ms"], p99_ms=last["p99_ms"])


def percentile(histogram: dict[float, int], fraction: float) -> float:
    """The smallest response time with at least `fraction` of the requests at or below it."""
    total = sum(histogram.values())
    if total == 0:
        return 0.0
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= fraction * total:
            return value
    return max(histogram)


@dataclass(frozen=True)
class ClientSummary:
    """The client's view of a whole run (latencies in ms, Locust's rounding: 1 ms below 100 ms)."""

    requests: int
    failures: int
    elapsed_s: float
    throughput_rps: float
    latency_ms: dict[str, float]
    errors: dict[str, int]

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def summarize(entries: list[dict], errors: dict[str, int] | None = None) -> ClientSummary:
    """Merge Locust's JSON stats entries (one per request name) into one summary."""
    histogram: dict[float, int] = {}
    for entry in entries:
        for value, count in entry["response_times"].items():
            histogram[float(value)] = histogram.get(float(value), 0) + count
    requests = sum(entry["num_requests"] for entry in entries)
    failures = sum(entry["num_failures"] for entry in entries)
    elapsed = (max((e["last_request_timestamp"] or 0 for e in entries), default=0)
               - min((e["start_time"] for e in entries), default=0))
    latency = {f"p{p}": percentile(histogram, p / 100) for p in PERCENTILES}
    latency["max"] = max((entry["max_response_time"] or 0 for entry in entries), default=0.0)
    return ClientSummary(requests=requests, failures=failures, elapsed_s=round(elapsed, 3),
                         throughput_rps=requests / elapsed if elapsed > 0 else 0.0,
                         latency_ms={k: round(v, 2) for k, v in latency.items()}, errors=errors or {})


def read_errors(path: Path) -> dict[str, int]:
    """Locust's failures CSV: error message -> occurrences."""
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        return {row["Error"]: int(row["Occurrences"]) for row in csv.DictReader(handle)}


def check_slo(summary: ClientSummary, targets: list[SloTarget]) -> list[str]:
    """The SLO terms the run broke, each with what was measured; empty when the run kept them all."""
    broken = []
    for target in targets:
        if target.key == "errors":
            measured, ok = summary.error_rate, summary.error_rate <= target.limit
            shown = f"{measured:.4%}"
        elif target.key == "rps":
            measured, ok = summary.throughput_rps, summary.throughput_rps >= target.limit
            shown = f"{measured:.1f} req/s"
        else:
            measured = summary.latency_ms[target.key]
            ok, shown = measured <= target.limit, f"{measured:g} ms"
        if not ok:
            broken.append(f"{target.describe()} broken: measured {shown}")
    if summary.requests == 0:
        broken.append("no request completed")
    return broken


# -- one run -------------------------------------------------------------------------------------------------------
@dataclass
class LoadTestResult:
    config: LoadTestConfig
    client: ClientSummary
    triton: list[triton_metrics.ModelFigures]
    history: list[dict[str, float | None]]
    slo: list[SloTarget]
    slo_broken: list[str]
    triton_note: str = ""  # why Triton's view is missing, when it is
    files: dict[str, Path] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "config": {**asdict(self.config), "corpus": str(self.config.corpus)},
            "client": {**asdict(self.client), "error_rate": self.client.error_rate},
            "triton": [figures.as_dict() for figures in self.triton],
            "triton_note": self.triton_note,
            "slo": {"targets": [t.describe() for t in self.slo], "broken": self.slo_broken,
                    "passed": not self.slo_broken},
            "history": self.history,
        }


def _scrape_or_note(url: str | None) -> tuple[triton_metrics.Samples | None, str]:
    if url is None:
        return None, (f"the server is not on its default ports, so its metrics port is unknown: pass --metrics-url "
                      f"(or ${settings.METRICS_URL_ENV})")
    try:
        return triton_metrics.scrape(url), ""
    except triton_metrics.MetricsUnavailableError as exc:
        return None, str(exc)


def run(config: LoadTestConfig, out_dir: Path, slo: list[SloTarget] | None = None,
        on_progress: Callable[[Progress], None] | None = None) -> LoadTestResult:
    """Run Locust headless for the configured duration and collect both views; writes JSON, CSV and a PNG."""
    config.check()
    out_dir = out_dir.resolve()  # Locust gets absolute paths: its working folder is not ours to assume
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / "locust"
    for stale in out_dir.glob("locust*"):
        stale.unlink()
    before, note = _scrape_or_note(config.metrics_url)
    log_path = out_dir / "locust.log"
    log_path.unlink(missing_ok=True)
    locust = spawn("Locust", locust_command(config, prefix), log=log_path, env=locust_environment(config))
    deadline = time.monotonic() + config.duration_s + LOCUST_STOP_GRACE_S
    json_path = Path(f"{prefix}.json")
    report_seen_at = None
    try:
        while locust.running():
            now = time.monotonic()
            if report_seen_at is None and json_path.exists():
                report_seen_at = now
            # Locust writes its JSON report last; now and then its gRPC/gevent teardown hangs after that.
            if report_seen_at is not None and now - report_seen_at > LOCUST_EXIT_GRACE_S:
                break
            if now > deadline:
                raise LoadTestError(f"Locust did not stop {LOCUST_STOP_GRACE_S:.0f} s after the run; "
                                    f"log: {log_path}")
            if on_progress and (progress := progress_of(read_history(Path(f"{prefix}_stats_history.csv")))):
                on_progress(progress)
            time.sleep(PROGRESS_INTERVAL_S)
    finally:
        returncode = locust.stop()
    if (returncode != 0 and report_seen_at is None) or not json_path.exists():
        raise LoadTestError(f"Locust exited with code {returncode} without a report:\n{locust.log_tail(15)}")
    after, note_after = _scrape_or_note(config.metrics_url) if before is not None else (None, note)
    client = summarize(json.loads(json_path.read_text()), read_errors(Path(f"{prefix}_failures.csv")))
    targets = slo or []
    result = LoadTestResult(
        config=config, client=client,
        triton=triton_metrics.model_figures(before, after) if before is not None and after is not None else [],
        history=read_history(Path(f"{prefix}_stats_history.csv")), slo=targets,
        slo_broken=check_slo(client, targets) if targets else [], triton_note=note or note_after)
    result.files = write_report(result, out_dir)
    return result


# -- reports -------------------------------------------------------------------------------------------------------
SUMMARY_FIELDS = ("model", "protocol", "shape", "users", "requests", "failures", "throughput_rps",
                  *(f"{k}_ms" for k in LATENCY_KEYS))


def summary_row(result: LoadTestResult) -> dict[str, object]:
    client = result.client
    return {"model": result.config.model, "protocol": result.config.protocol, "shape": result.config.shape,
            "users": result.config.users, "requests": client.requests, "failures": client.failures,
            "throughput_rps": round(client.throughput_rps, 2),
            **{f"{k}_ms": client.latency_ms[k] for k in LATENCY_KEYS}}


def write_report(result: LoadTestResult, out_dir: Path) -> dict[str, Path]:
    """summary.json (both views, SLO verdict, per-second history), summary.csv (one row), timeline.png."""
    files = {"json": out_dir / "summary.json", "csv": out_dir / "summary.csv", "plot": out_dir / "timeline.png"}
    files["json"].write_text(json.dumps(result.as_dict(), indent=2))
    with files["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerow(summary_row(result))
    plot_timeline(result, files["plot"])
    return files


def plot_timeline(result: LoadTestResult, path: Path) -> None:
    """Throughput (with users) and latency percentiles over the run, one point per second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = result.history
    start = history[0]["timestamp"] if history else 0
    seconds = [(row["timestamp"] or 0) - start for row in history]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.plot(seconds, [row["rps"] for row in history], label="requests/s", color="tab:blue")
    top.plot(seconds, [row["failures_per_s"] for row in history], label="failures/s", color="tab:red")
    top.set_ylabel("requests/s")
    users_axis = top.twinx()
    users_axis.step(seconds, [row["users"] for row in history], where="post", color="tab:gray", alpha=0.6,
                    label="users")
    users_axis.set_ylabel("users")
    top.legend(loc="upper left")
    for p in PERCENTILES:
        bottom.plot(seconds, [row[f"p{p}_ms"] for row in history], label=f"p{p}")
    bottom.set_ylabel("latency (ms, last 10 s)")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper left")
    config = result.config
    figure.suptitle(f"{config.model} over {config.protocol}: {config.shape}, {config.users} users")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def check_target(config: LoadTestConfig) -> None:
    """Fail before Locust starts when nothing serves the model: a run of pure connection errors says less."""
    from tritonclient.utils import InferenceServerException

    from tools.serving import client

    where = f"{config.model}{f' version {config.model_version}' if config.model_version else ''} at {config.url}"
    try:
        connection = client.connect(settings.Protocol(config.protocol), config.url)
        try:
            ready = connection.is_model_ready(config.model, config.model_version)
        finally:
            connection.close()
    except (InferenceServerException, OSError) as exc:
        raise LoadTestError(f"cannot reach {config.protocol} server at {config.url} ({exc}); start one with "
                            "`tools serve`, pass --url, or use --serve") from None
    if not ready:
        raise LoadTestError(f"{where} is not ready (unknown model or version, or still loading)")


# -- a local server and the web UI -------------------------------------------------------------------------------
@contextlib.contextmanager
def local_server(config: LoadTestConfig, repository: Path = settings.MODEL_REPOSITORY) -> Iterator[LoadTestConfig]:
    """Start Triton on free loopback ports and yield the config pointed at it (its metrics too)."""
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as server:
        url = server.grpc_url if config.protocol == "grpc" else server.http_url
        yield replace(config, url=url, metrics_url=server.metrics_url)


def run_web(config: LoadTestConfig, web_port: int) -> None:
    """Locust's own web UI on 127.0.0.1, until Locust exits or Ctrl-C; Locust dies with us either way."""
    config.check()
    locust = spawn("Locust", locust_command(config, None, web_port), env=locust_environment(config))
    try:
        locust.wait()
    finally:
        locust.stop()


def default_metrics_url(address: str, protocol: settings.Protocol) -> str | None:
    """Triton's metrics endpoint for a server at host:port on its protocol's default port: the same host on the
    default metrics port. None for a server on other ports, whose metrics port cannot be guessed."""
    host, _, port = address.rpartition(":")
    default = settings.DEFAULT_HTTP_PORT if protocol == settings.Protocol.HTTP else settings.DEFAULT_GRPC_PORT
    if port != str(default):
        return None
    return f"http://{host}:{settings.DEFAULT_METRICS_PORT}/metrics"


def render(result: LoadTestResult, console) -> None:
    """The client's view, Triton's per-model view beside it, and the SLO verdict, as rich tables."""
    from rich.table import Table

    client = result.client
    table = Table(title=f"client view: {result.config.model} over {result.config.protocol}, "
                        f"{result.config.shape} shape, {result.config.users} users")
    for column in ("requests", "failures", "req/s", *(f"{k} ms" for k in LATENCY_KEYS)):
        table.add_column(column, justify="right")
    table.add_row(str(client.requests), f"{client.failures} ({client.error_rate:.2%})", f"{client.throughput_rps:.1f}",
                  *(f"{client.latency_ms[k]:g}" for k in LATENCY_KEYS))
    console.print(table)
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
