"""Every dashboard query, template variable and rule, run against a real Prometheus scraping a real Triton.

One tritonserver serves a tiny Python-backend ensemble shaped like the service (`embed` -> `tokenizer` ->
`encoder`, dynamic batching, a few refused requests); one Prometheus scrapes it every second with the labels a
ServiceMonitor would add and evaluates the generated rule file. Nothing is mocked.
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
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from dashboards import grafana, rules
from dashboards.generate import DASHBOARDS, RULE_FILE_NAME
from tests.support import paths
from tools import settings
from tools.monitoring.prometheus import Prometheus, ScrapeTarget, running_prometheus
from tools.serving import runtime

NAMESPACE, POD = "monitoring-test", "triton-embeddings-0"
STEPS = (settings.TOKENIZER_MODEL, settings.ENCODER_MODEL)
TRAFFIC_SECONDS, CLIENT_THREADS, FAILING_EVERY = 4.0, 6, 40
POLL_TIMEOUT_S = 20.0
# What a user would pick in Grafana; `$__rate_interval` as Grafana computes it for a 15 s scrape interval.
VARIABLE_VALUES = {"namespace": NAMESPACE, "pod": POD, "model": ".*", "__rate_interval": "1m"}

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
    return root


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
def stack(tmp_path_factory):
    repository = write_ensemble_repository(tmp_path_factory.mktemp("repository"))
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as server:
        target = ScrapeTarget(job=settings.METRICS_JOB, address=urllib.parse.urlsplit(server.metrics_url).netloc,
                              labels={"namespace": NAMESPACE, "pod": POD})
        with running_prometheus([target], [paths.CHART_RULES / RULE_FILE_NAME]) as prometheus:
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
    for variable in (v for d in DASHBOARDS for v in grafana.render(d)["templating"]["list"] if v["type"] == "query"):
        series, label = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["definition"]).groups()
        found[variable["name"]] = set(prometheus.client().get_label_values(label, {"match[]": substitute(series)}))
    assert found == {"namespace": {NAMESPACE}, "pod": {POD}, "model": {settings.EMBED_MODEL, *STEPS}}


def test_every_rule_loads_and_evaluates_cleanly(stack):
    _, prometheus = stack
    until = deadline()
    while True:
        loaded = {r["name"]: r for g in prometheus.api("rules")["groups"] for r in g["rules"]}
        if all(r["health"] == "ok" for r in loaded.values()) or time.monotonic() > until:
            break
        time.sleep(0.5)
    expected = {r.get("record") or r["alert"] for r in rules.recording_rules() + rules.alert_rules()}
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
    assert set(_recorded(prometheus, rules.MODEL_QUEUE_TIME, until)) == {settings.EMBED_MODEL, *STEPS}
    assert all(size >= 1 for model, size in _recorded(prometheus, rules.BATCH_SIZE, until).items()
               if model in STEPS)
    assert _recorded(prometheus, rules.PENDING_PER_POD, until)[POD] >= 0


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
    assert [s["metric"]["pod"] for s in result] == [POD]
