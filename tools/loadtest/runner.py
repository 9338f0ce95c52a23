"""Run Locust headless against Triton and collect the client's view beside Triton's own, and judge an SLO; the
tables, files and plot of a run are `tools.loadtest.report`'s.

Every request ends accepted, refused (an overloaded server shed it: expected in a burst) or failed with an error
(`tools.loadtest.outcomes`); latencies are those of accepted requests. Requests are built from the model's
configuration (`tools.serving.payloads`); a decoupled model is streamed and its run also gets GenAI-Perf's figures
(`tools.loadtest.streaming`), which the SLO can bound.

Locust runs as a subprocess (its gevent monkey-patching must not touch this process); we read its CSV history
while it runs for live progress, and at the end the totals and percentiles Locust itself computed, which our
locustfile writes as Locust quits.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib.util
import json
import math
import os
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tools import settings
from tools.errors import LoadTestError, UsageError
from tools.loadtest import corpus as corpus_texts
from tools.loadtest.outcomes import Outcome, outcome_of_entry
from tools.loadtest.profiles import Shape
from tools.loadtest.streaming import STAT_KEYS, StreamingSummary
from tools.monitoring import metrics, scrape
from tools.processes import spawn
from tools.serving import payloads, runtime

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
USER_CLASSES = {settings.Protocol.GRPC: "GrpcTritonUser", settings.Protocol.HTTP: "HttpTritonUser"}
PERCENTILES = (50, 90, 95, 99)  # what the locustfile asks Locust for
LOCUST_STOP_GRACE_S = 30.0  # after --run-time, how long Locust may take to stop and write its files
PROGRESS_INTERVAL_S = 1.0
LOCUST_EXIT_GRACE_S = 2.0  # how long Locust may linger after writing its summary before we stop it
HUNG_STOP_GRACE_S = 1.0  # a Locust whose teardown hangs past that ignores SIGTERM too: kill it soon after


# -- parsing what users type ---------------------------------------------------------------------------------------
DURATION_FORMS = "20, 20s, 3m, 2h, 1h30m"


@functools.cache
def _locust_parse_timespan() -> Callable[[str], int]:
    """Locust's own parser for -t, loaded from its file: `import locust` (the package) would monkey-patch this whole
    process with gevent, so the module is executed on its own (it needs only re and datetime)."""
    package = importlib.util.find_spec("locust")  # finds the package without running its __init__
    if package is None or package.origin is None:
        raise LoadTestError("Locust is not installed")
    spec = importlib.util.spec_from_file_location("_locust_timespan", Path(package.origin).parent / "util" /
                                                  "timespan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse_timespan


def parse_duration(text: str) -> int:
    """A run length as `locust -t` reads it ('20', '20s', '3m', '1h30m') -> whole seconds, at least one."""
    try:
        seconds = _locust_parse_timespan()(text.strip())
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise UsageError(f"invalid duration {text!r}: use a positive time span such as {DURATION_FORMS}")
    return seconds


LATENCY_KEYS = (*(f"p{p}" for p in PERCENTILES), "max")
RATE_KEYS = {"errors": "error rate", "refused": "refusal rate"}  # SLO ceilings on a share of all requests
# A streaming model's latencies (GenAI-Perf's time to first token and inter-token latency): ttft_p99, itl_p50, ...
STREAM_LATENCY_KEYS = tuple(f"{metric}_{stat}" for metric in ("ttft", "itl") for stat in STAT_KEYS if stat != "min")
FLOOR_KEYS = {"rps": "req/s", "output_tokens_per_s": "output tokens/s"}  # SLO floors on throughput
_LATENCY_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
_SLO_TERM = re.compile(r"^\s*(?P<key>[a-z0-9_]+)\s*(?P<op><=|>=|=)\s*(?P<number>\d+(?:\.\d+)?)\s*"
                       r"(?P<unit>us|ms|s|%)?\s*$")


@dataclass(frozen=True)
class SloTarget:
    """One bound a run must keep: a latency ceiling in ms (accepted requests; a streaming model's time to first
    token and inter-token latency too), an error- or refusal-rate ceiling (fraction of all requests) or a floor on
    accepted requests or output tokens per second."""

    key: str
    limit: float

    def describe(self) -> str:
        if self.key in RATE_KEYS:
            return f"{self.key} <= {self.limit:.4%}"
        if self.key in FLOOR_KEYS:
            return f"{self.key} >= {self.limit:g} {FLOOR_KEYS[self.key]}"
        return f"{self.key} <= {self.limit:g} ms"


def parse_slo(text: str) -> list[SloTarget]:
    """'p99=50ms,ttft_p99=500ms,errors=0.1%,refused=5%,rps>=100' -> targets; latencies default to ms, rates to a
    fraction unless '%'. `=` takes each key's own direction; `<=` (ceilings) or `>=` (floors) must agree with it."""
    targets = []
    for term in filter(str.strip, text.split(",")):
        match = _SLO_TERM.match(term)
        if match is None:
            raise UsageError(f"invalid SLO term {term.strip()!r}: use e.g. p99=50ms,ttft_p99=500ms,errors=0.1%,"
                             "rps>=100")
        key, op, number, unit = match["key"], match["op"], float(match["number"]), match["unit"]
        if op != "=" and (op == ">=") != (key in FLOOR_KEYS):
            raise UsageError(f"invalid SLO term {term.strip()!r}: {key} is a "
                             f"{'floor (>=)' if key in FLOOR_KEYS else 'ceiling (<=)'}")
        if key in (*LATENCY_KEYS, *STREAM_LATENCY_KEYS) and unit in (None, *_LATENCY_UNITS_MS):
            targets.append(SloTarget(key, number * _LATENCY_UNITS_MS[unit or "ms"]))
        elif key in RATE_KEYS and unit in (None, "%"):
            rate = number / 100 if unit == "%" else number
            if rate > 1:
                raise UsageError(f"invalid SLO term {term.strip()!r}: an {RATE_KEYS[key]} is at most 100% (or 1)")
            targets.append(SloTarget(key, rate))
        elif key in FLOOR_KEYS and unit is None:
            targets.append(SloTarget(key, number))
        else:
            raise UsageError(f"invalid SLO term {term.strip()!r}: keys are {', '.join(LATENCY_KEYS)} (a latency), "
                             "ttft_ and itl_ with avg, p50, p90, p95, p99 or max (a streaming model's latencies), "
                             "errors and refused (rates, e.g. 0.1%), rps and output_tokens_per_s (throughput floors)")
    if not targets:
        raise UsageError("empty SLO: use e.g. p99=50ms,errors=0.1%")
    return targets


_HOST_PORT = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[^\s/:\[\]]+):\d+$")


def parse_metrics_url(text: str) -> str:
    """Triton's metrics endpoint from what a user typed: http(s)://host:port[/path], or host:port for
    http://host:port/metrics. Anything else is refused before the run, not after it."""
    given = text.strip()
    if "://" in given:
        text = given
    elif _HOST_PORT.match(given):
        text = f"http://{given}/metrics"
    else:
        raise UsageError(f"invalid metrics URL {given!r}: use http://host:port/metrics or host:port")
    parts = urllib.parse.urlsplit(text)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number in 0-65535
        valid = False
    if not valid:
        raise UsageError(f"invalid metrics URL {given!r}: use http(s)://host:port[/path] or host:port")
    return urllib.parse.urlunsplit(parts._replace(path=parts.path or "/metrics"))


# -- what a run is -----------------------------------------------------------------------------------------------
@dataclass
class LoadTestConfig:
    """Everything that shapes one Locust run."""

    url: str  # host:port of the protocol's endpoint
    protocol: settings.Protocol = settings.DEFAULT_PROTOCOL
    model: str = settings.EMBED_MODEL
    model_version: str = ""
    users: int = 16
    spawn_rate: float = 0.0  # users started per second; 0: all at once
    duration_s: float = 60.0
    shape: Shape = Shape.CONSTANT
    request_rate: float = 0.0  # requests/s for the `rate` shape
    texts_per_request: int = 1
    corpus: Path = corpus_texts.DEFAULT_CORPUS
    metrics_url: str | None = None
    text_input: str | None = None  # the input that takes the corpus's texts (default: the model's own)
    params: dict[str, bool | int | float | str] = field(default_factory=dict)  # request parameters
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # dims of variable inputs
    input_data: Path | None = None  # perf_analyzer's input-data JSON

    def __post_init__(self) -> None:
        self.protocol, self.shape = settings.Protocol(self.protocol), Shape(self.shape)
        if self.metrics_url is not None:
            self.metrics_url = parse_metrics_url(self.metrics_url)

    def check(self) -> None:
        """Refuse what cannot make a run, before Locust starts (Locust's users would die one by one instead)."""
        if self.users < 1 or self.texts_per_request < 1:
            raise UsageError("--users and --texts-per-request must be at least 1")
        if self.spawn_rate < 0:
            raise UsageError("--spawn-rate cannot be negative (0 starts every user at once)")
        if self.shape == Shape.RATE and self.request_rate <= 0:
            raise UsageError("the rate shape needs --rate (requests/s for the whole run)")
        corpus_texts.load(self.corpus)
        if self.input_data is not None:
            payloads.read_input_data(self.input_data)


def locust_command(config: LoadTestConfig, prefix: Path | None, web_port: int | None = None) -> list[str]:
    """The Locust argv: headless with its CSV/JSON and our summary under `prefix`, or its web UI on loopback."""
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", config.url,
           "-u", str(config.users), "-r", str(config.spawn_rate or config.users),
           "--model-name", config.model, "--model-version", config.model_version,
           "--corpus", str(config.corpus), "--texts-per-request", str(config.texts_per_request),
           "--request-rate", str(config.request_rate), "--loglevel", "WARNING",
           "--text-input", config.text_input or "", "--params", json.dumps(config.params),
           "--shapes", json.dumps(config.shapes),
           "--input-data", str(config.input_data.resolve()) if config.input_data else "",
           # The run time is the shape's too: the web UI starts the same shapes, and they need a length.
           "-t", f"{math.ceil(config.duration_s)}s"]
    if web_port is not None:
        return [*cmd, "--web-host", settings.DEFAULT_HOST, "--web-port", str(web_port), USER_CLASSES[config.protocol]]
    return [*cmd, "--headless", "--stop-timeout", "5",
            "--csv", str(prefix), "--csv-full-history", "--json-file", str(prefix), "--exit-code-on-error", "0",
            "--only-summary", "--summary-file", str(summary_path(prefix)), "--stop-file", str(stop_path(prefix)),
            USER_CLASSES[config.protocol]]


def stop_path(prefix: Path) -> Path:
    """The file whose appearance ends a run early (`run(until=...)`)."""
    return Path(f"{prefix}_stop")


def summary_path(prefix: Path) -> Path:
    """Where the locustfile writes Locust's own totals and percentiles, next to Locust's JSON report."""
    return Path(f"{prefix}_summary.json")


def locust_environment(config: LoadTestConfig) -> dict[str, str]:
    """Locust's environment: the shape its locustfile exports."""
    return {**os.environ, settings.LOADTEST_SHAPE_ENV: config.shape.value}


# -- what Locust measured ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """The latest second of a running test, from Locust's CSV history."""

    elapsed_s: float
    users: int
    requests: int
    refused: int
    failures: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None

    def describe(self, duration_s: float) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:g} ms"

        return (f"{self.elapsed_s:.0f}/{duration_s:.0f} s  users {self.users}  requests {self.requests}  "
                f"refused {self.refused}  errors {self.failures}  {self.rps:.1f} req/s  "
                f"accepted p50 {ms(self.p50_ms)}  p99 {ms(self.p99_ms)}")


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_history(path: Path) -> list[dict[str, float | None]]:
    """One row per second from Locust's full CSV history: users and offered requests/s over all requests, accepted
    requests' current percentiles, refusals/s and errors/s, and the running totals of each."""
    if not path.exists():
        return []
    seconds: dict[str, dict[str, dict[str, str]]] = {}  # timestamp -> outcome (or "all") -> Locust's row
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            kind = "all" if row.get("Name") == "Aggregated" else outcome_of_entry(row.get("Name") or "")
            seconds.setdefault(row["Timestamp"], {})[kind] = row
    history = []
    for stamp, rows in seconds.items():
        if "all" not in rows:
            continue
        accepted, refused, error = (rows.get(outcome, {}) for outcome in Outcome)
        history.append({
            "timestamp": _number(stamp), "users": _number(rows["all"]["User Count"]),
            "rps": _number(rows["all"]["Requests/s"]),
            "accepted_per_s": _number(accepted.get("Requests/s")) or 0.0,
            "refused_per_s": _number(refused.get("Requests/s")) or 0.0,
            "failures_per_s": _number(error.get("Requests/s")) or 0.0,
            **{f"p{p}_ms": _number(accepted.get(f"{p}%")) for p in PERCENTILES},
            "requests": _number(rows["all"]["Total Request Count"]),
            "refused": _number(refused.get("Total Request Count")) or 0.0,
            "failures": _number(error.get("Total Request Count")) or 0.0})
    return history


def progress_of(history: list[dict[str, float | None]]) -> Progress | None:
    if not history:
        return None
    last = history[-1]
    return Progress(elapsed_s=(last["timestamp"] or 0) - (history[0]["timestamp"] or 0), users=int(last["users"] or 0),
                    requests=int(last["requests"] or 0), refused=int(last["refused"] or 0),
                    failures=int(last["failures"] or 0), rps=last["rps"] or 0.0, p50_ms=last["p50_ms"],
                    p99_ms=last["p99_ms"])


REFUSAL_LATENCY_KEYS = ("p50", "p99", "max")


@dataclass(frozen=True)
class ClientSummary:
    """The client's view of a whole run, as Locust computed it (latencies in ms, Locust's rounding). `failures` are
    errors only: refusals (load shedding) are counted apart, and latencies are of accepted requests only."""

    requests: int
    refused: int
    failures: int
    elapsed_s: float
    throughput_rps: float  # accepted requests per second
    latency_ms: dict[str, float]  # accepted requests
    errors: dict[str, int]  # error message -> count
    refusals: dict[str, int] = field(default_factory=dict)  # the server's words -> count
    refusal_latency_ms: dict[str, float] = field(default_factory=dict)  # how fast refusals came back
    offered_rps: float = 0.0  # all requests per second, refused and failed ones too
    streaming: StreamingSummary | None = None  # a streaming model's figures (accepted requests)
    resent: int = 0  # requests sent again because their connection closed before an answer

    @property
    def accepted(self) -> int:
        return self.requests - self.refused - self.failures

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def refusal_rate(self) -> float:
        return self.refused / self.requests if self.requests else 0.0

    def rate(self, key: str) -> float:
        """The share of all requests an SLO rate term (`RATE_KEYS`) bounds."""
        return self.error_rate if key == "errors" else self.refusal_rate


def _latencies(entry: dict | None, keys: tuple[str, ...]) -> dict[str, float]:
    if not entry or not entry["num_requests"]:
        return dict.fromkeys(keys, 0.0)
    latency = {key: float(entry["percentiles"][key[1:]]) for key in keys if key != "max"}
    latency["max"] = float(entry["max_response_time"])
    return {key: round(latency[key], 2) for key in keys}


def read_summary(path: Path) -> ClientSummary:
    """The totals the locustfile wrote as Locust quit: Locust's own counts, rates and percentiles, per outcome."""
    summary = json.loads(path.read_text())
    total, outcomes = summary["total"], summary["outcomes"]
    accepted, refused, error = (outcomes.get(outcome) for outcome in Outcome)

    def count(entry: dict | None) -> int:
        return entry["num_requests"] if entry else 0

    return ClientSummary(requests=total["num_requests"], refused=count(refused), failures=count(error),
                         elapsed_s=round(total["elapsed_s"], 3),
                         throughput_rps=accepted["total_rps"] if accepted else 0.0,
                         latency_ms=_latencies(accepted, LATENCY_KEYS), errors=summary["errors"],
                         refusals=summary["refusals"], refusal_latency_ms=_latencies(refused, REFUSAL_LATENCY_KEYS),
                         offered_rps=total["total_rps"], resent=summary.get("resent", 0),
                         streaming=None if "streaming" not in summary else
                         StreamingSummary.from_rows(summary["streaming"], total["elapsed_s"]))


def check_slo(summary: ClientSummary, targets: list[SloTarget]) -> list[str]:
    """The SLO terms the run broke, each with what was measured; empty when the run kept them all."""
    broken = []
    for target in targets:
        streamed = summary.streaming
        if target.key in RATE_KEYS:
            measured = summary.rate(target.key)
            ok, shown = measured <= target.limit, f"{measured:.4%}"
        elif target.key == "rps":
            measured, ok = summary.throughput_rps, summary.throughput_rps >= target.limit
            shown = f"{measured:.1f} req/s"
        elif streamed is None and (target.key in STREAM_LATENCY_KEYS or target.key in FLOOR_KEYS):
            ok, shown = False, "nothing: the model does not stream (it is not decoupled)"
        elif target.key == "output_tokens_per_s":
            measured, ok = streamed.output_tokens_per_s, streamed.output_tokens_per_s >= target.limit
            shown = f"{measured:.1f} output tokens/s"
        elif target.key in STREAM_LATENCY_KEYS:
            metric, stat = target.key.split("_", 1)
            measured = (streamed.ttft_ms if metric == "ttft" else streamed.itl_ms)[stat]
            ok, shown = measured <= target.limit, f"{measured:g} ms"
        else:
            measured = summary.latency_ms[target.key]
            ok, shown = measured <= target.limit, f"{measured:g} ms"
        if not ok:
            broken.append(f"{target.describe()} broken: measured {shown}")
    return broken


# -- Triton's view -------------------------------------------------------------------------------------------------
def default_metrics_url(address: str, protocol: settings.Protocol) -> str | None:
    """Triton's metrics endpoint for a server at host:port on its protocol's default port: the same host on the
    default metrics port. None for a server on other ports, whose metrics port cannot be guessed."""
    host, _, port = address.rpartition(":")
    default = settings.DEFAULT_HTTP_PORT if protocol == settings.Protocol.HTTP else settings.DEFAULT_GRPC_PORT
    if port != str(default):
        return None
    return f"http://{host}:{settings.DEFAULT_METRICS_PORT}/metrics"


def serves_model(samples: scrape.Samples, model: str) -> bool:
    """Whether a scrape has Triton's request counter for `model`: a server that loaded it exposes one, even at 0."""
    return any(name == metrics.REQUEST_SUCCESS and dict(labels).get(metrics.MODEL_LABEL) == model
               for name, labels in samples)


def scrape_before(config: LoadTestConfig) -> tuple[scrape.Samples | None, str]:
    """The first of Triton's two scrapes, or None and a note saying why Triton's view will be missing."""
    url = config.metrics_url
    if url is None:
        return None, (f"the server is not on its default ports, so its metrics port is unknown: pass --metrics-url "
                      f"(or ${settings.METRICS_URL_ENV})")
    try:
        samples = scrape.scrape(url)
    except scrape.MetricsUnavailableError as exc:
        return None, str(exc)
    if not serves_model(samples, config.model):
        return None, (f"{url} has no series for model {config.model}: it is not the metrics endpoint of the server "
                      f"under test; pass --metrics-url (or ${settings.METRICS_URL_ENV})")
    return samples, ""


# -- one run -------------------------------------------------------------------------------------------------------
@dataclass
class LoadTestResult:
    config: LoadTestConfig
    client: ClientSummary
    triton: list[scrape.ModelFigures]
    history: list[dict[str, float | None]]
    slo: list[SloTarget]
    slo_broken: list[str]
    triton_note: str = ""  # why Triton's view is missing, when it is
    log: Path | None = None  # Locust's own log of the run

    def problems(self) -> list[str]:
        """Why the run fails beyond its broken SLO terms: errors, unless an `errors` term bounds them; refusals
        outside a spike (where shedding is expected), unless a `refused` term bounds them."""
        keys = {target.key for target in self.slo}
        client, found = self.client, []
        if client.failures and "errors" not in keys:
            found.append(f"{client.failures} request(s) failed with an error (bound them with --slo errors=...)")
        if client.refused and "refused" not in keys and self.config.shape != Shape.SPIKE:
            found.append(f"the server refused {client.refused} request(s) outside a spike shape (bound them with "
                         "--slo refused=...)")
        return found

    def verdict(self) -> None:
        """Raise LoadTestError for a run that proved nothing (not one request accepted), broke its SLO, or met errors
        or refusals it did not allow (the rule `tools loadtest --help` states)."""
        client = self.client
        if client.accepted <= 0:
            said = list(client.refusals.items())[:2] + list(client.errors.items())[:3]
            shown = "; ".join(f"{count} x {message}" for message, count in said)
            raise LoadTestError(f"no request succeeded ({client.requests} sent, {client.refused} refused, "
                                f"{client.failures} failed{': ' + shown if shown else ''}); Locust's log: {self.log}")
        if self.slo_broken:
            raise LoadTestError("the run broke the SLO")
        if problems := self.problems():
            raise LoadTestError("; ".join(problems))

    def as_dict(self) -> dict:
        return {
            "config": {**asdict(self.config), "corpus": str(self.config.corpus),
                       "input_data": self.config.input_data and str(self.config.input_data),
                       "workload": corpus_texts.workload_of(self.config.corpus)},
            "client": {**asdict(self.client), "accepted": self.client.accepted, "error_rate": self.client.error_rate,
                       "refusal_rate": self.client.refusal_rate},
            "triton": [figures.as_dict() for figures in self.triton],
            "triton_note": self.triton_note,
            "slo": {"targets": [t.describe() for t in self.slo], "broken": self.slo_broken,
                    "passed": not self.slo_broken, "problems": self.problems()},
            "history": self.history,
        }


def run(config: LoadTestConfig, out_dir: Path, slo: list[SloTarget] | None = None,
        on_progress: Callable[[Progress], None] | None = None, until: threading.Event | None = None) -> LoadTestResult:
    """Run Locust headless for the configured duration, or until `until` is set (traffic for as long as an operation
    under load takes), and collect both views; Locust's own files go to `out_dir`."""
    config.check()
    out_dir = out_dir.resolve()  # Locust gets absolute paths: its working folder is not ours to assume
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / "locust"
    for stale in out_dir.glob("locust*"):
        stale.unlink()
    before, note = scrape_before(config)
    log_path = out_dir / "locust.log"
    locust = spawn("Locust", locust_command(config, prefix), log=log_path, env=locust_environment(config))
    deadline = time.monotonic() + config.duration_s + LOCUST_STOP_GRACE_S
    summary_file, history_file = summary_path(prefix), Path(f"{prefix}_stats_history.csv")
    summary_seen_at = None
    try:
        while locust.running():
            now = time.monotonic()
            if summary_seen_at is None and summary_file.exists():
                summary_seen_at = now
            # The summary is written as Locust quits; now and then its gRPC/gevent teardown hangs after that.
            if summary_seen_at is not None and now - summary_seen_at > LOCUST_EXIT_GRACE_S:
                locust.stop(HUNG_STOP_GRACE_S)
                break
            if now > deadline:
                raise LoadTestError(f"Locust did not stop {LOCUST_STOP_GRACE_S:.0f} s after the run; "
                                    f"log: {log_path}")
            if until is not None and until.is_set():
                stop_path(prefix).touch()  # the locustfile ends the run as its run time would
            if on_progress and (progress := progress_of(read_history(history_file))):
                on_progress(progress)
            time.sleep(PROGRESS_INTERVAL_S)
    finally:
        returncode = locust.stop()
    if not summary_file.exists():
        raise LoadTestError(f"Locust exited with code {returncode} without a summary:\n{locust.log_tail(15)}")
    after = None
    if before is not None:
        try:
            after = scrape.scrape(config.metrics_url)
        except scrape.MetricsUnavailableError as exc:
            note = str(exc)
    client = read_summary(summary_file)
    targets = slo or []
    return LoadTestResult(
        config=config, client=client,
        triton=scrape.model_figures(before, after) if after is not None else [],
        history=read_history(history_file), slo=targets,
        slo_broken=check_slo(client, targets) if targets else [], triton_note=note, log=log_path)


def check_target(config: LoadTestConfig) -> None:
    """Fail before Locust starts when nothing serves the model: a run of pure connection errors says less."""
    from tools.serving import client

    where = f"{config.model}{f' version {config.model_version}' if config.model_version else ''} at {config.url}"
    try:
        connection = client.connect(config.protocol, config.url)
        try:
            ready = connection.is_model_ready(config.model, config.model_version)
        finally:
            connection.close()
    except Exception as exc:  # refused, timed out, or another protocol's answer (an HTTP parser error, say)
        raise LoadTestError(f"cannot reach {config.protocol} server at {config.url} ({exc}); start one with "
                            "`tools serve`, pass --url, or use --serve") from None
    if not ready:
        raise LoadTestError(f"{where} is not ready (unknown model or version, or still loading)")
    connection = client.connect(config.protocol, config.url)
    try:
        spec = client.describe(connection, config.model, config.model_version)
    finally:
        connection.close()
    # What each Locust user will build: a request that cannot be built is refused here, not user by user.
    payloads.RequestBuilder(spec, corpus_texts.load(config.corpus), config.text_input, config.texts_per_request,
                            config.shapes, payloads.read_input_data(config.input_data) if config.input_data else None
                            ).request()


# -- a local server and the web UI -------------------------------------------------------------------------------
@contextlib.contextmanager
def local_server(config: LoadTestConfig, repository: Path = settings.MODEL_REPOSITORY) -> Iterator[LoadTestConfig]:
    """Start Triton on free loopback ports and yield the config pointed at it (its metrics too)."""
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as server:
        url = server.grpc_url if config.protocol == settings.Protocol.GRPC else server.http_url
        yield replace(config, url=url, metrics_url=server.metrics_url)


def run_web(config: LoadTestConfig, web_port: int) -> None:
    """Locust's own web UI on 127.0.0.1, until Locust exits or Ctrl-C; Locust dies with us either way. Check the
    port first with `processes.require_free_port` (before starting a local server for it)."""
    config.check()
    check_target(config)
    locust = spawn("Locust", locust_command(config, None, web_port), env=locust_environment(config))
    try:
        returncode = locust.wait()
    finally:
        locust.stop()
    if returncode != 0:
        raise LoadTestError(f"Locust's web UI exited with code {returncode} (its output is above)")
