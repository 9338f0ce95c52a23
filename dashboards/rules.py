"""Prometheus recording and alert rules for the service, in Prometheus' rule-file format (`groups: [...]`).

The recorded series are what the autoscaler reads (through prometheus-adapter) and what the alerts compare;
every expression comes from `dashboards.queries`. Thresholds are parameters (`Thresholds`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tools import settings
from tools.monitoring import metrics
from tools.monitoring import queries as q

FAST_WINDOW = "1m"
SLOW_WINDOW = "5m"
BY_MODEL = (*q.SERVICE_LABELS, metrics.MODEL_LABEL)
BY_POD = (*q.SERVICE_LABELS, q.POD_LABEL)

# Recorded series (level:metric:operation). The two autoscaling metrics are QUEUE_TIME and PENDING_PER_POD.
REQUEST_RATE = f"triton:request_rate:rate{FAST_WINDOW}"
FAILURE_RATIO = f"triton:request_failure_ratio:rate{SLOW_WINDOW}"
MODEL_QUEUE_TIME = f"triton:model_queue_time_per_request_us:rate{FAST_WINDOW}"
QUEUE_TIME = f"triton:queue_time_per_request_us:rate{FAST_WINDOW}"
BATCH_SIZE = f"triton:average_batch_size:rate{FAST_WINDOW}"
PENDING_PER_POD = "triton:pending_requests:sum_by_pod"

RUNBOOK_HINT = "Dashboard: 'Triton embeddings: overview'. README: Monitoring."


@dataclass(frozen=True)
class Thresholds:
    """What counts as unhealthy; the defaults suit the CPU embedding service."""

    error_ratio: float = 0.05
    p99_latency_ms: float = 500.0
    queue_time_per_request_ms: float = 100.0


def recording_rules(job: str = settings.METRICS_JOB) -> list[dict]:
    sel = q.selector(q.equals(q.JOB_LABEL, job))
    recorded = {
        REQUEST_RATE: q.request_rate(sel, FAST_WINDOW, BY_MODEL),
        FAILURE_RATIO: q.failure_ratio(sel, SLOW_WINDOW, BY_MODEL),
        MODEL_QUEUE_TIME: q.time_per_request_us(metrics.QUEUE_DURATION_US, sel, FAST_WINDOW, BY_MODEL),
        QUEUE_TIME: q.service_queue_time_per_request_us(sel, FAST_WINDOW, q.SERVICE_LABELS),
        BATCH_SIZE: q.average_batch_size(sel, FAST_WINDOW, BY_MODEL),
        PENDING_PER_POD: q.pending_requests(sel, BY_POD),
    }
    return [{"record": name, "expr": expr} for name, expr in recorded.items()]


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, runbook: str) -> dict:
    return {"alert": name, "expr": expr, "for": duration, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": f"{runbook}\n{RUNBOOK_HINT}"}}


def alert_rules(thresholds: Thresholds = Thresholds(), job: str = settings.METRICS_JOB) -> list[dict]:
    job_sel = q.selector(q.equals(q.JOB_LABEL, job))
    entry_sel = q.with_matcher(job_sel, q.equals(metrics.MODEL_LABEL, settings.EMBED_MODEL))
    where = "{{ $labels.namespace }}/{{ $labels.job }}"
    return [
        _alert("TritonTargetDown", f"{q.up(job_sel)} == 0", "2m", "critical",
               f"Prometheus cannot scrape Triton at {{{{ $labels.instance }}}} ({where})",
               "1. Is the pod running and Ready? `kubectl get pods`; look for restarts and OOMKilled.\n"
               "2. `kubectl logs` the pod: a model that fails to load stops the server (--exit-on-error).\n"
               f"3. Is the metrics port ({settings.DEFAULT_METRICS_PORT}) exposed by the Service and selected by the "
               "ServiceMonitor?"),
        _alert("TritonModelNotLoaded", q.model_missing(job_sel), "5m", "critical",
               f"Triton at {{{{ $labels.instance }}}} ({where}) does not serve `{settings.EMBED_MODEL}`",
               "The server answers scrapes but exports no series for the ensemble: it was unloaded or a "
               "composing model failed to load.\n"
               f"1. `curl -X POST -H '{settings.CONTROL_KEY_HEADER}: ...' <pod>:{settings.DEFAULT_HTTP_PORT}"
               "/v2/repository/index` lists the models' states and reasons.\n"
               "2. Roll back the last model or chart change (`helm rollback`)."),
        _alert("TritonHighErrorRatio", f"{FAILURE_RATIO}{job_sel} > {thresholds.error_ratio}", "5m", "warning",
               f"{{{{ $value | humanizePercentage }}}} of requests to {{{{ $labels.model }}}} fail ({where})",
               "1. Failure reasons: `sum by (reason) (rate(nv_inference_request_failure[5m]))`; REJECTED means "
               "queues are full (scale out), BACKEND/OTHER come from the models.\n"
               "2. Read the pod logs and the clients' error messages (400s are the callers' input).\n"
               "Triton 2.51 counts a failed ensemble request twice: the ratio reads high by up to 2x."),
        _alert("TritonP99LatencyHigh",
               f"{q.latency_quantiles_us(entry_sel, q.SERVICE_LABELS, ('0.99',))} > "
               f"{thresholds.p99_latency_ms * 1000:g}",
               "10m", "warning",
               f"p99 latency of `{settings.EMBED_MODEL}` is {{{{ printf `%.0f` $value }}}} µs ({where})",
               f"Above {thresholds.p99_latency_ms:g} ms for 10 minutes on the worst pod.\n"
               "1. Queue time per request high too? Then the service is saturated: check the HPA "
               "(`kubectl get hpa`) is not at maxReplicas and that pods are not CPU-throttled.\n"
               "2. Compute time high? Look for larger inputs (longer texts) or a slower model version."),
        _alert("TritonQueueTimeHigh", f"{QUEUE_TIME}{job_sel} > {thresholds.queue_time_per_request_ms * 1000:g}",
               "10m", "warning",
               f"Requests queue {{{{ printf `%.0f` $value }}}} µs each on average ({where})",
               f"Queue time per request has been above {thresholds.queue_time_per_request_ms:g} ms for 10 "
               "minutes: the autoscaler has not caught up.\n"
               "1. `kubectl get hpa`: at maxReplicas? Raise it or add nodes.\n"
               "2. Pods Pending? The cluster has no room for more replicas.\n"
               "3. prometheus-adapter healthy? `kubectl get --raw /apis/external.metrics.k8s.io/v1beta1`."),
        _alert("TritonNoTraffic", f"{q.request_rate(entry_sel, '15m', q.SERVICE_LABELS)} == 0", "30m", "info",
               f"No successful requests to `{settings.EMBED_MODEL}` for 45 minutes ({where})",
               "Expected outside business hours; otherwise check the Ingress/Service in front of Triton and the "
               "clients."),
    ]


def rule_file(thresholds: Thresholds = Thresholds(), job: str = settings.METRICS_JOB) -> dict:
    """The whole rule file; also the `spec` of a PrometheusRule."""
    return {"groups": [
        {"name": f"{job}.recording", "rules": recording_rules(job)},
        {"name": f"{job}.alerts", "rules": alert_rules(thresholds, job)},
    ]}
