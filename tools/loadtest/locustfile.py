"""Locust users for any Triton model over HTTP and gRPC, built on tritonclient.

Each user reads the model's configuration and builds its requests from it (`tools.serving.payloads`): texts from
the corpus for its text input, generated data or perf_analyzer input data for the rest. A decoupled model is
streamed (a gRPC stream per user, or HTTP's generate_stream endpoint) and each accepted request's time to first
token, latency and output tokens are kept for the summary (`tools.loadtest.streaming`). Every request is reported to
Locust with its real latency (to the last response), response size and error, under one stats entry per outcome
(accepted, refused by an overloaded server, failed with an error: `tools.loadtest.outcomes`); a refusal is a result
like any other, never a crash of the user.
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

import gevent
from grpc.experimental import gevent as grpc_gevent
from locust import User, events, stats, task

from tools import settings
from tools.loadtest import corpus, outcomes, profiles, shapes, streaming
from tools.loadtest.runner import PERCENTILES
from tools.serving import client, infer, payloads

# Without gevent's gRPC integration every gRPC call blocks the whole Locust process: users would serialise.
grpc_gevent.init_gevent()
# `tools loadtest` shows live progress from the CSV history: flush it every second, not every five.
stats.CSV_STATS_FLUSH_INTERVAL_SEC = 1

_shape_name = os.environ.get(settings.LOADTEST_SHAPE_ENV)
if _shape_name:
    ActiveShape = shapes.BY_PROFILE[profiles.Shape(_shape_name)]
# Every accepted streamed request of this process's users (Locust runs them all as greenlets of one process), and
# whether the model streams at all: the summary then carries the rows, even none.
_streamed: list[streaming.StreamRecord] = []
_model_streams: list[bool] = []
# Requests sent again because their connection closed before an answer (`client.never_answered`): each is counted
# once, by its final outcome; how often it happened goes in the summary.
_resent: list[str] = []


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    group = parser.add_argument_group("Triton")
    group.add_argument("--model-name", default=settings.EMBED_MODEL, help="Model or ensemble to call.")
    group.add_argument("--model-version", default="", help="Model version (default: Triton's policy).")
    group.add_argument("--corpus", default=str(corpus.DEFAULT_CORPUS), help="Text file, one text per line.")
    group.add_argument("--texts-per-request", type=int, default=1)
    group.add_argument("--request-rate", type=float, default=0.0,
                       help="Open loop: requests/s for all users together (0: each user sends back to back).")
    group.add_argument("--text-input", default="", help="Input that takes the texts (default: the model's own).")
    group.add_argument("--params", default="{}", help="Request parameters, a JSON object.")
    group.add_argument("--shapes", default="{}", help="Dims of variable inputs, a JSON object of name -> list.")
    group.add_argument("--input-data", default="", help="perf_analyzer's input-data JSON file.")
    group.add_argument("--summary-file", default="", help="Where to write Locust's totals and percentiles as JSON.")
    group.add_argument("--stop-file", default="", help="End the run, as its run time would, once this file exists.")


@events.test_start.add_listener
def _watch_stop_file(environment, **_) -> None:
    if path := environment.parsed_options.stop_file:
        gevent.spawn(_quit_when_exists, environment, path)


def _quit_when_exists(environment, path: str) -> None:
    """What Locust does when the run time is up (runner.quit): users stop, `quitting` fires, the summary is written."""
    while not os.path.exists(path):
        gevent.sleep(0.2)
    environment.runner.quit()


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
    summary["resent"] = len(_resent)
    if any(_model_streams):
        summary["streaming"] = [record.as_row() for record in _streamed]
    partial = f"{path}.partial"
    with open(partial, "w") as handle:
        json.dump(summary, handle, indent=2)
    os.replace(partial, path)


@functools.cache
def _texts(path: str) -> tuple[str, ...]:
    return tuple(corpus.load(path))


class TritonUser(User):
    """One client connection sending requests built from the model's configuration; subclasses choose the
    protocol."""

    abstract = True
    protocol = client.Protocol.GRPC

    def on_start(self) -> None:
        self.options = options = self.environment.parsed_options
        self.texts = _texts(options.corpus)
        self.rng = random.Random()
        self.client = client.connect(self.protocol, self.host)
        self.spec, self.builder, self.grpc_stream = None, None, None
        self.sent = 0
        self.request_name = options.model_name + (f"/{options.model_version}" if options.model_version else "")
        self.next_start = time.monotonic()
        if options.request_rate > 0:  # spread the pool's start times over one pacing interval
            self.next_start += self.rng.random() * self._interval()

    def _learn_model(self) -> None:
        """Read the model's configuration (at the first request, so that a server that cannot be reached fails
        requests, as it would any other, rather than the user) and prepare its requests."""
        options = self.options
        self.spec = client.describe(self.client, options.model_name, options.model_version)
        input_data = payloads.read_input_data(options.input_data) if options.input_data else None
        shapes = {name: tuple(dims) for name, dims in json.loads(options.shapes).items()}
        self.builder = payloads.RequestBuilder(self.spec, self.texts, options.text_input or None,
                                               options.texts_per_request, shapes, input_data)
        self.parameters = json.loads(options.params)
        if self.spec.decoupled:
            self.parameters = {"stream": True, **self.parameters}
            if self.protocol == client.Protocol.GRPC:
                self.grpc_stream = client.GrpcStream(self.client)
        _model_streams.append(self.spec.decoupled)

    def on_stop(self) -> None:
        if self.grpc_stream is not None:
            self.grpc_stream.close()
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

    def _stream(self, arrays: payloads.Arrays, started: float) -> infer.StreamResult:
        options = self.options
        if self.grpc_stream is not None:
            pieces = self.grpc_stream.request(options.model_name, arrays, options.model_version, self.parameters)
        else:
            pieces = client.http_stream(self.host, options.model_name, arrays, options.model_version,
                                        self.parameters)
        return infer.StreamResult(self.protocol, self.host, options.model_name, "", started, tuple(pieces))

    @task
    def infer(self) -> None:
        started = time.perf_counter()
        size, error, streamed = 0, None, None
        try:
            if self.builder is None:
                self._learn_model()
            texts = self.rng.choices(self.texts, k=self.options.texts_per_request)
            arrays = self.builder.request(self.sent, texts)
            self.sent += 1
            started = time.perf_counter()  # the request's own time, without the first one's configuration read
            if self.spec.decoupled:
                streamed = self._stream(arrays, started)
                size = len(streamed.text.encode())
            else:
                outputs = client.call(self.client, self.options.model_name, arrays, self.options.model_version,
                                      self.parameters, on_resend=lambda exc: _resent.append(str(exc)))
                if problem := payloads.answer_problem(self.spec, arrays, outputs):
                    raise ValueError(problem)  # a wrong answer is a failure too
                size = sum(array.nbytes for array in outputs.values())
        except Exception as exc:  # every refusal or failure is a result to report, not a crash of the user
            error = exc
        self.environment.events.request.fire(
            request_type=self.protocol.value, name=outcomes.entry_name(self.request_name, outcomes.classify(error)),
            response_time=(time.perf_counter() - started) * 1e3, response_length=size,
            exception=None if error is None else outcomes.reported(error), context={})
        if streamed is not None and error is None:
            _streamed.append(streaming.StreamRecord(streamed.ttft_ms, streamed.latency_ms, streamed.output_tokens))


class GrpcTritonUser(TritonUser):
    protocol = client.Protocol.GRPC


class HttpTritonUser(TritonUser):
    protocol = client.Protocol.HTTP
