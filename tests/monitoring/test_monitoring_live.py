"""Every dashboard query, template variable and rule, run against a real Prometheus scraping a real Triton.

One tritonserver serves a tiny Python-backend ensemble shaped like the service (`embed` -> `tokenizer` ->
`encoder`, dynamic batching, a few refused requests) and a decoupled model streaming "tokens" under the generation
model's name, exporting the generation counters and first-token histogram as that model does. One Prometheus scrapes
it every second with the labels a ServiceMonitor would add and evaluates the rules as the chart ships them, rendered
by helm with another release name and nameOverride: the scrape job is named as that release's ServiceMonitor names
it, not as the defaults do, and every rule must still match. Nothing is mocked.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import InferenceServerException

from dashboards import grafana, rules
from dashboards.generate import DASHBOARDS
from tests.support.helm import by_kind, one, render
from tools import settings
from tools.monitoring import metrics, scrape
from tools.monitoring.prometheus import Prometheus, ScrapeTarget, running_prometheus
from tools.serving import runtime

NAMESPACE, POD = "monitoring-test", "llm-serving-0"
RELEASE, NAME_OVERRIDE = "other-release", "llm-serving"
STEPS = (settings.TOKENIZER_MODEL, settings.ENCODER_MODEL)
TRAFFIC_SECONDS, CLIENT_THREADS, FAILING_EVERY = 4.0, 6, 40
STREAMS, TOKENS_PER_STREAM, PROMPT_TOKENS = 12, 5, 3
POLL_TIMEOUT_S = 20.0
# What a user would pick in Grafana; `$__rate_interval` as Grafana computes it for a 15 s scrape interval.
VARIABLE_VALUES = {"namespace": NAMESPACE, "pod": POD, "model": ".*", "entry": "|".join(settings.ENTRY_MODELS),
                   "__rate_interval": "1m"}
# The first-token histogram's buckets (seconds), as a generation model would choose them.
BUCKETS = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0]

STREAM_MODEL = f"""\
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        labels = {{"model": args["model_name"], "version": args["model_version"]}}
        # The families must outlive their metrics: keep them on the model.
        self.families = [pb_utils.MetricFamily(name=name, description=name, kind=kind) for name, kind in (
            ("{metrics.GENERATION_PROMPT_TOKENS}", pb_utils.MetricFamily.COUNTER),
            ("{metrics.GENERATION_OUTPUT_TOKENS}", pb_utils.MetricFamily.COUNTER),
            ("{metrics.GENERATION_FIRST_TOKEN_SECONDS}", pb_utils.MetricFamily.HISTOGRAM))]
        self.prompt = self.families[0].Metric(labels=labels)
        self.output = self.families[1].Metric(labels=labels)
        self.first = self.families[2].Metric(labels=labels, buckets={BUCKETS})

    def execute(self, requests):
        for request in requests:
            started = time.monotonic()
            sender = request.get_response_sender()
            self.prompt.increment({PROMPT_TOKENS})
            for i in range({TOKENS_PER_STREAM}):
                time.sleep(0.005)
                if i == 0:
                    self.first.observe(time.monotonic() - started)
                text = pb_utils.Tensor("{settings.GENERATE_OUTPUT}", np.array([b"tok"], dtype=np.object_))
                sender.send(pb_utils.InferenceResponse([text]))
                self.output.increment(1)
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""
STREAM_CONFIG = f"""\
name: "{settings.GENERATE_MODEL}"
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [{{ name: "{settings.GENERATE_INPUT}", data_type: TYPE_STRING, dims: [ 1 ] }}]
output [{{ name: "{settings.GENERATE_OUTPUT}", data_type: TYPE_STRING, dims: [ 1 ] }}]
instance_group [{{ kind: KIND_CPU, count: 1 }}]
"""

STEP_MODEL = """\
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(0.003)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            if (x < 0).any():
                error = pb_utils.TritonError("negative input", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", x.astype(np.float32))]))
        return responses
"""
TENSORS = """\
max_batch_size: 8
input [{{ name: "IN", data_type: TYPE_FP32, dims: [ 4 ] }}]
output [{{ name: "OUT", data_type: TYPE_FP32, dims: [ 4 ] }}]
{extra}"""


def write_ensemble_repository(root: Path) -> Path:
    """An ensemble named like the service's over two batching Python models; loads in about two seconds."""
    for name in STEPS:
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.py").write_text(STEP_MODEL)
        extra = ('backend: "python"\ninstance_group [{ kind: KIND_CPU, count: 1 }]\n'
                 "dynamic_batching { max_queue_delay_microseconds: 2000 }\n")
        (root / name / "config.pbtxt").write_text(f'name: "{name}"\n' + TENSORS.format(extra=extra))
    (root / settings.EMBED_MODEL / "1").mkdir(parents=True)
    steps = ", ".join(
        f'{{ model_name: "{name}", model_version: -1, input_map {{ key: "IN", value: "{source}" }}, '
        f'output_map {{ key: "OUT", value: "{target}" }} }}'
        for name, source, target in zip(STEPS, ("IN", "mid"), ("mid", "OUT"), strict=True))
    ensemble = f'platform: "ensemble"\nensemble_scheduling {{ step [ {steps} ] }}\n'
    (root / settings.EMBED_MODEL / "config.pbtxt").write_text(
        f'name: "{settings.EMBED_MODEL}"\n' + TENSORS.format(extra=textwrap.dedent(ensemble)))
    (root / settings.GENERATE_MODEL / "1").mkdir(parents=True)
    (root / settings.GENERATE_MODEL / "config.pbtxt").write_text(STREAM_CONFIG)
    (root / settings.GENERATE_MODEL / "1" / "model.py").write_text(STREAM_MODEL)
    return root


def stream(server: runtime.TritonServer) -> int:
    """STREAMS streamed requests over one gRPC stream; the number of text responses received."""
    received: list = []
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: received.append((result, error)))
    for _ in range(STREAMS):
        prompt = grpcclient.InferInput(settings.GENERATE_INPUT, [1], "BYTES")
        prompt.set_data_from_numpy(np.array([b"Once upon a time"], dtype=np.object_))
        client.async_stream_infer(settings.GENERATE_MODEL, [prompt], enable_empty_final_response=True)
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while sum(1 for result, _ in received if result is not None and
              result.get_response().parameters["triton_final_response"].bool_param) < STREAMS:
        assert time.monotonic() < deadline, f"streams unfinished: {received[-1:]}"
        time.sleep(0.05)
    client.stop_stream()
    client.close()
    assert not [error for _, error in received if error is not None]
    return sum(1 for result, _ in received if result.as_numpy(settings.GENERATE_OUTPUT) is not None)


def chart_rules_and_job(helm: Path, folder: Path) -> tuple[Path, str]:
    """The rule file the chart ships for another release and nameOverride, and the job its ServiceMonitor gives."""
    objects = render(helm, {"nameOverride": NAME_OVERRIDE, "monitoring": {
        "scrape": "ServiceMonitor", "prometheusRule": {"enabled": True}}}, namespace=NAMESPACE, release=RELEASE)
    monitor = one(objects, "ServiceMonitor")
    selected = monitor["spec"]["selector"]["matchLabels"]
    [service] = [s for s in by_kind(objects, "Service")
                 if selected.items() <= s["metadata"].get("labels", {}).items()]
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    rule_file = folder / "rendered.rules.yaml"
    rule_file.write_text(yaml.safe_dump(one(objects, "PrometheusRule")["spec"]))
    return rule_file, job


def send_traffic(server: runtime.TritonServer) -> tuple[int, int]:
    """Concurrent single-row requests for a few seconds, every FAILING_EVERY-th one refused by the model."""
    counts, lock = {"ok": 0, "failed": 0}, threading.Lock()
    deadline = time.monotonic() + TRAFFIC_SECONDS

    def client_loop(offset: int) -> None:
        client = httpclient.InferenceServerClient(server.http_url)
        sent = offset
        while time.monotonic() < deadline:
            sent += 1
            value = -1.0 if sent % FAILING_EVERY == 0 else 1.0
            tensor = httpclient.InferInput("IN", [1, 4], "FP32")
            tensor.set_data_from_numpy(np.full((1, 4), value, np.float32))
            try:
                client.infer(settings.EMBED_MODEL, [tensor])
                outcome = "ok"
            except InferenceServerException:
                outcome = "failed"
            with lock:
                counts[outcome] += 1
        client.close()

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts["ok"], counts["failed"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, helm_binary):
    rule_file, job = chart_rules_and_job(helm_binary, tmp_path_factory.mktemp("rules"))
    assert job == NAME_OVERRIDE != settings.METRICS_JOB
    repository = write_ensemble_repository(tmp_path_factory.mktemp("repository"))
    options = runtime.ServerOptions.on_free_ports(repository=repository,
                                                  extra_args=["--metrics-config=histogram_latencies=true"])
    with runtime.running_server(options) as server:
        target = ScrapeTarget(job=job, address=urllib.parse.urlsplit(server.metrics_url).netloc,
                              labels={"namespace": NAMESPACE, "pod": POD})
        with running_prometheus([target], [rule_file]) as prometheus:
            assert stream(server) == STREAMS * TOKENS_PER_STREAM
            ok, failed = send_traffic(server)
            assert ok > 100 and failed > 0
            yield server, prometheus


def substitute(text: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: VARIABLE_VALUES[m[1]], text)


def finite_values(result: list[dict]) -> list[float]:
    return [v for v in (float(s["value"][1]) for s in result) if math.isfinite(v)]


def deadline() -> float:
    """One polling budget per test, shared by its queries: a broken query fails the test in seconds."""
    return time.monotonic() + POLL_TIMEOUT_S


def poll(prometheus: Prometheus, expr: str, until: float) -> list[dict]:
    """The query's result once it has a finite value (scrapes and rule evaluations lag a second or two)."""
    while True:
        result = prometheus.client().custom_query(expr)
        if finite_values(result) or time.monotonic() > until:
            return result
        time.sleep(0.5)


def panel_queries() -> list[tuple[str, str]]:
    """Every panel query a CPU-only Triton can answer (the GPU dashboards' are checked in test_gpu_panels.py)."""
    return [(panel["title"], target["expr"]) for d in DASHBOARDS if not d.gpu_only
            for panel in grafana.render(d)["panels"] for target in panel["targets"]]


def test_every_panel_query_returns_series(stack):
    _, prometheus = stack
    until = deadline()
    empty = [(title, substitute(expr)) for title, expr in panel_queries()
             if not finite_values(poll(prometheus, substitute(expr), until))]
    assert not empty, f"panels without data: {json.dumps(empty, indent=1)}"


def test_template_variables_list_the_running_service(stack):
    _, prometheus = stack
    found = {}
    for dashboard in DASHBOARDS:
        for variable in (v for v in grafana.render(dashboard)["templating"]["list"] if v["type"] == "query"):
            series, label = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["definition"]).groups()
            found[dashboard.uid, variable["name"]] = set(prometheus.client().get_label_values(
                label, {"match[]": substitute(series)}))
    models = {settings.EMBED_MODEL, settings.GENERATE_MODEL, *STEPS}
    for dashboard in DASHBOARDS:
        assert found[dashboard.uid, "namespace"] == {NAMESPACE} and found[dashboard.uid, "pod"] == {POD}
    assert found["triton-embeddings-overview", "model"] == found["triton-embeddings-overview", "entry"] == models
    assert found["triton-generation", "model"] == {settings.GENERATE_MODEL}, "only the models that count tokens"


def test_every_rule_loads_and_evaluates_cleanly(stack):
    _, prometheus = stack
    until = deadline()
    while True:
        loaded = {r["name"]: r for g in prometheus.api("rules")["groups"] for r in g["rules"]}
        if all(r["health"] == "ok" for r in loaded.values()) or time.monotonic() > until:
            break
        time.sleep(0.5)
    expected = {r.get("record") or r["alert"] for r in rules.recording_rules() + rules.alert_rules()}
    assert {r.get("labels", {}).get("job") for r in loaded.values()} == {None}, "no rule names a job"
    assert set(loaded) == expected
    assert {name: r.get("lastError") for name, r in loaded.items() if r["health"] != "ok"} == {}


def _recorded(prometheus: Prometheus, name: str, until: float) -> dict[str, float]:
    """Recorded series of our pod's namespace -> value, keyed by model (or pod for per-pod series)."""
    result = poll(prometheus, f'{name}{{namespace="{NAMESPACE}"}}', until)
    return {s["metric"].get("model", s["metric"].get("pod", "")): float(s["value"][1]) for s in result}


def test_recording_rules_produce_the_autoscaling_and_alerting_series(stack):
    _, prometheus = stack
    until = deadline()
    assert _recorded(prometheus, rules.REQUEST_RATE, until)[settings.EMBED_MODEL] > 1
    assert _recorded(prometheus, rules.FAILURE_RATIO, until)[settings.EMBED_MODEL] > 0  # the refused requests
    assert _recorded(prometheus, rules.FAILURE_RATIO, until)[settings.ENCODER_MODEL] == 0
    # Dynamic batching holds requests up to 2 ms: queue time per service request must be positive.
    assert _recorded(prometheus, rules.QUEUE_TIME, until)[""] > 0
    assert set(_recorded(prometheus, rules.MODEL_QUEUE_TIME, until)) == {settings.EMBED_MODEL, settings.GENERATE_MODEL,
                                                                         *STEPS}
    assert all(size >= 1 for model, size in _recorded(prometheus, rules.BATCH_SIZE, until).items()
               if model in STEPS)
    assert _recorded(prometheus, rules.PENDING_PER_POD, until)[POD] >= 0
    # The generation model's own counters and histogram (Triton 2.51 has no first-response histogram).
    assert set(_recorded(prometheus, rules.OUTPUT_TOKEN_RATE, until)) == {settings.GENERATE_MODEL}
    assert _recorded(prometheus, rules.OUTPUT_TOKEN_RATE, until)[settings.GENERATE_MODEL] > 0
    assert _recorded(prometheus, rules.PROMPT_TOKEN_RATE, until)[settings.GENERATE_MODEL] > 0
    first_token = _recorded(prometheus, rules.FIRST_TOKEN_P99, until)
    assert set(first_token) == {settings.GENERATE_MODEL} and 0 < first_token[settings.GENERATE_MODEL] <= BUCKETS[-1]


def test_triton_2_51_exports_no_first_response_histogram_even_when_asked(stack):
    """Why the panels fall back to the model's own histogram: the flag is accepted, the family never appears. When
    this fails, the image's Triton exports it: the dashboards already prefer it."""
    server, _ = stack
    exported = {name for name, _ in scrape.scrape(server.metrics_url)}
    assert metrics.GENERATION_FIRST_TOKEN_SECONDS + metrics.BUCKET_SUFFIX in exported
    assert not [name for name in exported if name.startswith(metrics.FIRST_RESPONSE_HISTOGRAM_MS)]


def test_alerts_stay_quiet_on_a_healthy_service(stack):
    _, prometheus = stack
    firing = {r["alert"]: prometheus.client().custom_query(r["expr"]) for r in rules.alert_rules()}
    assert {name: result for name, result in firing.items() if result} == {}


def test_unloading_the_ensemble_trips_model_not_loaded(stack):
    """Last on purpose: it unloads the ensemble, and the `unless` of the alert must then match the target."""
    server, prometheus = stack
    client = httpclient.InferenceServerClient(server.http_url)
    client.unload_model(settings.EMBED_MODEL, headers=server.control_headers)
    client.close()
    expr = next(r["expr"] for r in rules.alert_rules() if r["alert"] == "TritonModelNotLoaded")
    result = poll(prometheus, expr, deadline())
    assert [(s["metric"]["pod"], s["metric"]["model"]) for s in result] == [(POD, settings.EMBED_MODEL)]
