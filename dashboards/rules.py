"""Prometheus recording and alert rules for the service, in Prometheus' rule-file format (`groups: [...]`).

The recorded series are what the alerts compare and the dashboards may read; every expression comes from
`tools.monitoring.queries`. They select Triton's series by metric name and group them by `namespace`, `job` and
`model` (or `pod`), so they hold for every model and whatever the scrape job is called; the one list they need,
the entry models of the service queue time, is `entry_models` (the chart renders that rule from its own
`entryModels`). Thresholds are parameters (`Thresholds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tools import settings
from tools.monitoring import metrics
from tools.monitoring import queries as q

FAST_WINDOW = "1m"
SLOW_WINDOW = "5m"
# How long a target or a model is remembered after it stops exporting, so its absence can alert.
MEMORY = "1h"
BY_MODEL = (*q.SERVICE_LABELS, metrics.MODEL_LABEL)
BY_POD = (*q.SERVICE_LABELS, q.POD_LABEL)
GROUP_PREFIX = "triton"

# Recorded series (level:metric:operation). The two autoscaling metrics are QUEUE_TIME and PENDING_PER_POD.
REQUEST_RATE = f"triton:request_rate:rate{FAST_WINDOW}"
FAILURE_RATIO = f"triton:request_failure_ratio:rate{SLOW_WINDOW}"
MODEL_QUEUE_TIME = f"triton:model_queue_time_per_request_us:rate{FAST_WINDOW}"
QUEUE_TIME = f"triton:queue_time_per_request_us:rate{FAST_WINDOW}"
BATCH_SIZE = f"triton:average_batch_size:rate{FAST_WINDOW}"
PENDING_PER_POD = "triton:pending_requests:sum_by_pod"
FIRST_TOKEN_P99 = f"triton:first_token_latency_seconds:p99_rate{SLOW_WINDOW}"
OUTPUT_TOKEN_RATE = f"triton:output_tokens:rate{FAST_WINDOW}"
PROMPT_TOKEN_RATE = f"triton:prompt_tokens:rate{FAST_WINDOW}"

RUNBOOK_HINT = "Dashboards: 'Triton embeddings: overview', 'Triton: generation'. README: Monitoring."
WHERE = "{{ $labels.namespace }}/{{ $labels.job }}"


@dataclass(frozen=True)
class Thresholds:
    """What counts as unhealthy; the defaults suit the CPU service."""

    error_ratio: float = 0.05
    p99_latency_ms: float = 500.0  # end-to-end, for models that answer in one response
    first_token_p99_ms: float = 2000.0  # for generation models: a stream's whole duration grows with its length
    queue_time_per_request_ms: float = 100.0


def recording_rules(entry_models: Sequence[str] = settings.ENTRY_MODELS) -> list[dict]:
    recorded = {
        REQUEST_RATE: q.request_rate("", FAST_WINDOW, BY_MODEL),
        FAILURE_RATIO: q.failure_ratio("", SLOW_WINDOW, BY_MODEL),
        MODEL_QUEUE_TIME: q.time_per_request_us(metrics.QUEUE_DURATION_US, "", FAST_WINDOW, BY_MODEL),
        QUEUE_TIME: q.service_queue_time_per_request_us("", FAST_WINDOW, q.SERVICE_LABELS, entry_models),
        BATCH_SIZE: q.average_batch_size("", FAST_WINDOW, BY_MODEL),
        PENDING_PER_POD: q.pending_requests("", BY_POD),
        FIRST_TOKEN_P99: q.first_token_latency_s("", SLOW_WINDOW, BY_MODEL, "0.99"),
        OUTPUT_TOKEN_RATE: q.token_rate(metrics.GENERATION_OUTPUT_TOKENS, "", FAST_WINDOW, BY_MODEL),
        PROMPT_TOKEN_RATE: q.token_rate(metrics.GENERATION_PROMPT_TOKENS, "", FAST_WINDOW, BY_MODEL),
    }
    return [{"record": name, "expr": expr} for name, expr in recorded.items()]


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, runbook: str) -> dict:
    return {"alert": name, "expr": expr, "for": duration, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": f"{runbook}\n{RUNBOOK_HINT}"}}


def alert_rules(thresholds: Thresholds = Thresholds()) -> list[dict]:
    p99 = q.latency_quantiles_us("", BY_MODEL, ("0.99",))
    generators = q.generation_models("", BY_MODEL)
    return [
        _alert("TritonTargetDown", q.triton_target_down(MEMORY), "2m", "critical",
               f"Prometheus cannot scrape Triton at {{{{ $labels.instance }}}} ({WHERE})",
               "1. Is the pod running and Ready? `kubectl get pods`; look for restarts and OOMKilled.\n"
               "2. `kubectl logs` the pod: a model that fails to load stops the server (--exit-on-error).\n"
               f"3. Is the metrics port ({settings.DEFAULT_METRICS_PORT}) exposed by the Service and selected by the "
               "ServiceMonitor?"),
        _alert("TritonModelNotLoaded", q.model_missing(MEMORY), "5m", "critical",
               f"Triton at {{{{ $labels.instance }}}} ({WHERE}) no longer serves `{{{{ $labels.model }}}}`",
               "The server answers scrapes but stopped exporting the model's series: it was unloaded, or failed "
               "to load again (an ensemble goes when one of its steps goes).\n"
               f"1. `curl -X POST -H '{settings.CONTROL_KEY_HEADER}: ...' <pod>:{settings.DEFAULT_HTTP_PORT}"
               "/v2/repository/index` lists the models' states and reasons.\n"
               "2. Roll back the last model or chart change (`helm rollback`)."),
        _alert("TritonHighErrorRatio", f"{FAILURE_RATIO} > {thresholds.error_ratio}", "5m", "warning",
               f"{{{{ $value | humanizePercentage }}}} of requests to {{{{ $labels.model }}}} fail ({WHERE})",
               "1. Failure reasons: `sum by (reason) (rate(nv_inference_request_failure[5m]))`; REJECTED means "
               "queues are full (scale out), BACKEND/OTHER come from the models.\n"
               "2. Read the pod logs and the clients' error messages (400s are the callers' input).\n"
               "Triton 2.51 counts a failed ensemble request twice: the ratio reads high by up to 2x."),
        _alert("TritonP99LatencyHigh",
               f"{p99} > {thresholds.p99_latency_ms * 1000:g} unless on ({', '.join(BY_MODEL)}) {generators}",
               "10m", "warning",
               f"p99 latency of `{{{{ $labels.model }}}}` is {{{{ printf `%.0f` $value }}}} µs ({WHERE})",
               f"Above {thresholds.p99_latency_ms:g} ms for 10 minutes on the worst pod (generation models are "
               "judged on their first token instead).\n"
               "1. Queue time per request high too? Then the service is saturated: check the HPA "
               "(`kubectl get hpa`) is not at maxReplicas and that pods are not CPU-throttled.\n"
               "2. Compute time high? Look for larger inputs (longer texts) or a slower model version."),
        _alert("TritonFirstTokenSlow", f"{FIRST_TOKEN_P99} > {thresholds.first_token_p99_ms / 1000:g}", "10m",
               "warning",
               f"p99 time to the first token of `{{{{ $labels.model }}}}` is {{{{ humanizeDuration $value }}}} "
               f"({WHERE})",
               f"Above {thresholds.first_token_p99_ms:g} ms for 10 minutes, over all pods.\n"
               "1. Queue time of the model high? Each instance streams one request at a time: scale out, or add "
               "instances if the CPU has room.\n"
               "2. Prompt tokens/s up? Long prompts take longer before the first token (dashboard 'Triton: "
               "generation')."),
        _alert("TritonQueueTimeHigh", f"{QUEUE_TIME} > {thresholds.queue_time_per_request_ms * 1000:g}",
               "10m", "warning",
               f"Requests queue {{{{ printf `%.0f` $value }}}} µs each on average ({WHERE})",
               f"Queue time per request has been above {thresholds.queue_time_per_request_ms:g} ms for 10 "
               "minutes: the autoscaler has not caught up.\n"
               "1. `kubectl get hpa`: at maxReplicas? Raise it or add nodes.\n"
               "2. Pods Pending? The cluster has no room for more replicas.\n"
               "3. prometheus-adapter healthy? `kubectl get --raw /apis/external.metrics.k8s.io/v1beta1`."),
        _alert("TritonNoTraffic", f"{q.request_rate('', '15m', BY_MODEL)} == 0", "30m", "info",
               f"No successful requests to `{{{{ $labels.model }}}}` for 45 minutes ({WHERE})",
               "Expected outside business hours, or for a model nobody calls yet; otherwise check the "
               "Ingress/Service in front of Triton and the clients."),
    ]


def rule_file(thresholds: Thresholds = Thresholds(), entry_models: Sequence[str] = settings.ENTRY_MODELS) -> dict:
    """The whole rule file; also the `spec` of a PrometheusRule."""
    return {"groups": [
        {"name": f"{GROUP_PREFIX}.recording", "rules": recording_rules(entry_models)},
        {"name": f"{GROUP_PREFIX}.alerts", "rules": alert_rules(thresholds)},
    ]}
