"""The service's overview dashboard: traffic, errors, latency, queueing, batching, resources, pods; every model's
figures grouped by model, chosen with the `model` variable; the service-wide ratios divide by the requests to the
models picked in `entry` (the models clients call, the repository's entry models by default)."""

from __future__ import annotations

from dashboards.grafana import Dashboard, Panel, Query, Variable
from tools import settings
from tools.monitoring import metrics
from tools.monitoring import queries as q

UID = "triton-embeddings-overview"
RATE_WINDOW = "$__rate_interval"  # Grafana picks a window of at least four scrape intervals

NAMESPACE = q.matches(q.NAMESPACE_LABEL, "$namespace")
POD = q.matches(q.POD_LABEL, "$pod")
MODEL = q.matches(metrics.MODEL_LABEL, "$model")
POD_SEL = q.selector(NAMESPACE, POD)
MODEL_SEL = q.selector(NAMESPACE, POD, MODEL)
ENTRY = "$entry"
ENTRY_SEL = q.selector(NAMESPACE, POD, q.matches(metrics.MODEL_LABEL, ENTRY))
BY_MODEL = (metrics.MODEL_LABEL,)
BY_POD = (q.POD_LABEL,)
STEPS = {"queue": metrics.QUEUE_DURATION_US, "compute input": metrics.COMPUTE_INPUT_DURATION_US,
         "compute infer": metrics.COMPUTE_INFER_DURATION_US, "compute output": metrics.COMPUTE_OUTPUT_DURATION_US}

VARIABLES = (
    Variable("namespace", "Namespace", f"{metrics.CPU_UTILIZATION}, {q.NAMESPACE_LABEL}"),
    Variable("pod", "Pod", f"{metrics.CPU_UTILIZATION}{q.selector(NAMESPACE)}, {q.POD_LABEL}"),
    Variable("model", "Model", f"{metrics.REQUEST_SUCCESS}{POD_SEL}, {metrics.MODEL_LABEL}"),
    Variable("entry", "Entry models", f"{metrics.REQUEST_SUCCESS}{POD_SEL}, {metrics.MODEL_LABEL}",
             default=settings.ENTRY_MODELS),
)


def _stat(title: str, description: str, expr: str, unit: str) -> Panel:
    return Panel(title, description, (Query(expr),), unit=unit, kind="stat", width=6, height=4)


PANELS = (
    _stat("Requests / s", "Successful requests to each entry model, all selected pods.",
          q.request_rate(ENTRY_SEL, RATE_WINDOW, BY_MODEL), "reqps"),
    _stat("Failure ratio", "Failed / all requests to each entry model (Triton 2.51 counts a failed ensemble "
          "request twice, so an ensemble's reads high by up to 2x).",
          q.failure_ratio(ENTRY_SEL, RATE_WINDOW, BY_MODEL), "percentunit"),
    _stat("p99 latency (worst pod)", "End-to-end p99 of each entry model from Triton's summary (a streaming "
          "model's runs to its last token: see 'Triton: generation' for its first token).",
          q.latency_quantiles_us(ENTRY_SEL, BY_MODEL, ("0.99",)), "µs"),
    _stat("Pending requests", "Requests received and not yet executing, all selected pods.",
          q.pending_requests(POD_SEL, ()), "short"),
    Panel("Request rate per model", "Successful requests per second; composing models see one request per "
          "ensemble request and step.", (Query(q.request_rate(MODEL_SEL, RATE_WINDOW, BY_MODEL), "{{model}}"),),
          unit="reqps"),
    Panel("Failure ratio per model", "Failed / all requests, summed over failure reasons and pods first.",
          (Query(q.failure_ratio(MODEL_SEL, RATE_WINDOW, BY_MODEL), "{{model}}"),), unit="percentunit",
          max_value=1),
    Panel("Latency quantiles per model", "p50/p90/p99 of the request duration from Triton's summaries "
          "(per process: the worst pod is shown).",
          (Query(q.latency_quantiles_us(MODEL_SEL, BY_MODEL), "{{model}} q{{quantile}}"),), unit="µs"),
    Panel("Queue vs compute time per request", "Microseconds per request spent queued and in each compute "
          "phase: rate of the summed durations / rate of the summed requests.",
          tuple(Query(q.time_per_request_us(metric, MODEL_SEL, RATE_WINDOW, BY_MODEL), f"{{{{model}}}} {step}")
                for step, metric in STEPS.items()), unit="µs"),
    Panel("Service queue time per request (autoscaling signal)", "Queue time requests accumulate over all "
          "models, per request to the entry models, per namespace: what the autoscaler scales on.",
          (Query(q.service_queue_time_per_request_us(POD_SEL, RATE_WINDOW, (q.NAMESPACE_LABEL,), (ENTRY,)),
                 "{{namespace}}"),), unit="µs"),
    Panel("Average batch size per model", "Inferences per execution: how full dynamic batching makes the "
          "batches (an ensemble's is just its rows per request).",
          (Query(q.average_batch_size(MODEL_SEL, RATE_WINDOW, BY_MODEL), "{{model}}"),)),
    Panel("Pending requests per pod and model", "Requests waiting for a model instance.",
          (Query(q.pending_requests(MODEL_SEL, (q.POD_LABEL, metrics.MODEL_LABEL)), "{{pod}} {{model}}"),)),
    Panel("CPU utilisation per pod", "Triton's reading of its host's CPU.",
          (Query(q.cpu_utilisation(POD_SEL, BY_POD), "{{pod}}"),), unit="percentunit", max_value=1),
    Panel("Memory used per pod", "Triton's reading of its host's used memory.",
          (Query(q.memory_used_bytes(POD_SEL, BY_POD), "{{pod}}"),), unit="bytes"),
    Panel("Serving pods", "Triton processes being scraped (one CPU series each): follows the autoscaler.",
          (Query(q.pod_count(POD_SEL), "pods"),)),
)

DASHBOARD = Dashboard(
    uid=UID, title="Triton embeddings: overview",
    description="Traffic, errors, latency, queueing, batching and resources of every model the Triton service runs.",
    tags=("triton", "embeddings"), variables=VARIABLES, panels=PANELS,
)
