"""Locust users for a Triton text model over HTTP and gRPC, built on tritonclient.

Each request is one or more texts from the corpus and is reported to Locust with its real latency, response
size and error, under one stats entry per outcome (accepted, refused by an overloaded server, failed with an error:
`tools.loadtest.outcomes`); a refusal is a result like any other, never a crash of the user.
`tools loadtest` hands this module (shipped in the package) to Locust by its path, with --host already host:port;
`tools loadtest --web` opens Locust's UI. With --summary-file, Locust's own totals and percentiles (per outcome too)
are written there as it quits, for `tools loadtest` to read.
"""

from __future__ import annotations

import functools
import json
import os
import random
import time

from grpc.experimental import gevent as grpc_gevent
from locust import User, events, stats, task

from tools import settings
from tools.loadtest import corpus, outcomes, profiles, shapes
from tools.loadtest.runner import PERCENTILES
from tools.serving import client

# Without gevent's gRPC integration every gRPC call blocks the whole Locust process: users would serialise.
grpc_gevent.init_gevent()
# `tools loadtest` shows live progress from the CSV history: flush it every second, not every five.
stats.CSV_STATS_FLUSH_INTERVAL_SEC = 1

_shape_name = os.environ.get(settings.LOADTEST_SHAPE_ENV)
if _shape_name:
    ActiveShape = shapes.BY_PROFILE[profiles.Shape(_shape_name)]


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    group = parser.add_argument_group("Triton")
    group.add_argument("--model-name", default=settings.EMBED_MODEL, help="Model or ensemble to call.")
    group.add_argument("--model-version", default="", help="Model version (default: Triton's policy).")
    group.add_argument("--corpus", default=str(corpus.DEFAULT_CORPUS), help="Text file, one text per line.")
    group.add_argument("--texts-per-request", type=int, default=1)
    group.add_argument("--request-rate", type=float, default=0.0,
                       help="Open loop: requests/s for all users together (0: each user sends back to back).")
    group.add_argument("--summary-file", default="", help="Where to write Locust's totals and percentiles as JSON.")


def _entry_summary(entry: stats.StatsEntry) -> dict:
    """Locust's own figures for one stats entry: counts, rate, and percentiles from its response-time histogram."""
    start = entry.stats.start_time or 0.0
    return {"name": entry.name, "method": entry.method, "num_requests": entry.num_requests,
            "num_failures": entry.num_failures, "total_rps": entry.total_rps,
            # The window Locust divides by for total_rps: from the test's start to the last request.
            "elapsed_s": (entry.stats.last_request_timestamp or start) - start,
            "max_response_time": entry.max_response_time,
            "percentiles": {str(p): entry.get_response_time_percentile(p / 100) for p in PERCENTILES}}


def _outcome_summaries(request_stats: stats.RequestStats) -> dict[str, dict]:
    """Locust's figures per outcome, over every entry of that outcome (one per request name)."""
    merged: dict[str, stats.StatsEntry] = {}
    for entry in request_stats.entries.values():
        outcome = outcomes.outcome_of_entry(entry.name)
        if outcome not in merged:
            merged[outcome] = stats.StatsEntry(request_stats, str(outcome), "")
        merged[outcome].extend(entry)
    return {outcome: _entry_summary(entry) for outcome, entry in merged.items()}


@events.quitting.add_listener
def _write_summary(environment, **_) -> None:
    """Fired as Locust quits, after its users stopped: the totals are final. Written whole, then renamed, so a reader
    never sees half a file."""
    path = environment.parsed_options.summary_file
    if not path:
        return
    said: dict[str, dict[str, int]] = {"refusals": {}, "errors": {}}
    for error in environment.stats.errors.values():
        kind = "refusals" if outcomes.outcome_of_entry(error.name) == outcomes.Outcome.REFUSED else "errors"
        said[kind][error.to_name()] = said[kind].get(error.to_name(), 0) + error.occurrences
    summary = {"total": _entry_summary(environment.stats.total), "outcomes": _outcome_summaries(environment.stats),
               "entries": [_entry_summary(entry) for entry in environment.stats.entries.values()], **said}
    partial = f"{path}.partial"
    with open(partial, "w") as handle:
        json.dump(summary, handle, indent=2)
    os.replace(partial, path)


@functools.cache
def _texts(path: str) -> tuple[str, ...]:
    return tuple(corpus.load(path))


class TritonUser(User):
    """One client connection sending texts to the model; subclasses choose the protocol."""

    abstract = True
    protocol = client.Protocol.GRPC

    def on_start(self) -> None:
        self.options = self.environment.parsed_options
        self.texts = _texts(self.options.corpus)
        self.rng = random.Random()
        self.client = client.connect(self.protocol, self.host)
        self.request_name = self.options.model_name + (f"/{self.options.model_version}"
                                                       if self.options.model_version else "")
        self.next_start = time.monotonic()
        if self.options.request_rate > 0:  # spread the pool's start times over one pacing interval
            self.next_start += self.rng.random() * self._interval()

    def on_stop(self) -> None:
        self.client.close()

    def _interval(self) -> float:
        return profiles.pacing_interval(self.options.request_rate, self.options.num_users or 1)

    def wait_time(self) -> float:
        """Closed loop by default; with --request-rate a fixed schedule that does not wait for slow answers
        beyond one interval (a user that falls behind starts again at once instead of bursting to catch up)."""
        if self.options.request_rate <= 0:
            return 0.0
        interval = self._interval()
        now = time.monotonic()
        self.next_start = max(self.next_start + interval, now - interval)
        return max(0.0, self.next_start - now)

    @task
    def infer(self) -> None:
        texts = self.rng.choices(self.texts, k=self.options.texts_per_request)
        started = time.perf_counter()
        size, error = 0, None
        try:
            embeddings = client.embed(self.client, texts, self.options.model_name, self.options.model_version)
            if embeddings is None or len(embeddings) != len(texts):
                raise ValueError(f"expected {len(texts)} rows of {settings.EMBED_OUTPUT}, got "
                                 f"{None if embeddings is None else embeddings.shape}")
            size = embeddings.nbytes
        except Exception as exc:  # every refusal or failure is a result to report, not a crash of the user
            error = exc
        self.environment.events.request.fire(
            request_type=self.protocol.value, name=outcomes.entry_name(self.request_name, outcomes.classify(error)),
            response_time=(time.perf_counter() - started) * 1e3, response_length=size,
            exception=None if error is None else outcomes.reported(error), context={})


class GrpcTritonUser(TritonUser):
    protocol = client.Protocol.GRPC


class HttpTritonUser(TritonUser):
    protocol = client.Protocol.HTTP
