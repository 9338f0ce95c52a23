"""Every PromQL expression of the dashboards, the recording rules and the autoscaling metric: built once, here.

Ratios are always ratios of sums: sum the counters' rates over the pods (and models) first, then divide.
Averaging per-pod or per-model ratios, as NVIDIA's example charts do, weighs an idle pod like a busy one and
under-reports queueing. Triton facts these queries rely on (seen on 2.51):
- an ensemble's own queue time is ~0 and its pending count stays 0; the time and the pending requests sit in the
  composing models, so the service's queue time per request is the sum over all its models divided by the
  ensemble's requests, and pending requests per pod is the sum over its models with no double counting;
- an ensemble's `nv_inference_exec_count` equals its inference count: batch sizes only mean something for the
  composing models;
- `nv_inference_request_failure` carries a `reason` label (OTHER, BACKEND, CANCELED, REJECTED): sum over it;
- an error response returned by a Python model counts as a success of that model; the ensemble counts it as a
  failure, twice: the ensemble's failure ratio is the one to watch, and it reads high by up to 2x;
- the `*_summary_us` quantiles are per process and cannot be aggregated across pods: the worst pod is shown;
- a decoupled (streaming) model's request duration runs until its last response: its latency is judged by the time
  to the first token and by tokens per second, from the families below.

Series are selected by Triton's own metric names, never by the scrape job: whatever a ServiceMonitor, a PodMonitor
or a hand-written scrape config calls the job, the same expressions match. Results are still grouped by `job` (and
`namespace`), so two deployments never add up.
"""

from __future__ import annotations

from collections.abc import Sequence

from tools.monitoring import metrics

# Labels Prometheus (or the Prometheus Operator) attaches to every scraped series.
NAMESPACE_LABEL = "namespace"
POD_LABEL = "pod"
JOB_LABEL = "job"
INSTANCE_LABEL = "instance"
# One deployment of the service is one scrape job in one namespace.
SERVICE_LABELS = (NAMESPACE_LABEL, JOB_LABEL)
LATENCY_QUANTILES = ("0.5", "0.9", "0.99")


def selector(*matchers: str) -> str:
    """`{a="x", b=~"y"}` from ready-made matchers; empty matchers are dropped."""
    kept = [m for m in matchers if m]
    return "{" + ", ".join(kept) + "}" if kept else ""


def equals(label: str, value: str) -> str:
    return f'{label}="{value}"'


def not_equals(label: str, value: str) -> str:
    return f'{label}!="{value}"'


def matches(label: str, regex: str) -> str:
    return f'{label}=~"{regex}"'


def _by(labels: Sequence[str]) -> str:
    return f"by ({', '.join(labels)}) " if labels else ""


def with_matcher(sel: str, matcher: str) -> str:
    """The selector `sel` narrowed by one more matcher."""
    return selector(*([sel[1:-1]] if sel else []), matcher)


def rate_sum(metric: str, sel: str, window: str, by: Sequence[str]) -> str:
    return f"sum {_by(by)}(rate({metric}{sel}[{window}]))"


def gauge_sum(metric: str, sel: str, by: Sequence[str]) -> str:
    return f"sum {_by(by)}({metric}{sel})"


def request_rate(sel: str, window: str, by: Sequence[str]) -> str:
    """Successful requests per second."""
    return rate_sum(metrics.REQUEST_SUCCESS, sel, window, by)


def failure_ratio(sel: str, window: str, by: Sequence[str]) -> str:
    """Failed / all requests, summed over the failure reasons and the pods before dividing."""
    failures = rate_sum(metrics.REQUEST_FAILURE, sel, window, by)
    return f"{failures} / ({request_rate(sel, window, by)} + {failures})"


def time_per_request_us(duration_metric: str, sel: str, window: str, by: Sequence[str]) -> str:
    """Microseconds of `duration_metric` per successful request (Triton adds durations for successes only)."""
    return f"{rate_sum(duration_metric, sel, window, by)} / {request_rate(sel, window, by)}"


def models(names: Sequence[str]) -> str:
    """A matcher for any of the models (a regex of their names, which are plain words)."""
    return matches(metrics.MODEL_LABEL, "|".join(names))


def service_queue_time_per_request_us(sel: str, window: str, by: Sequence[str], entry_models: Sequence[str]) -> str:
    """Queue time requests accumulate in all the models, per request to any of the entry models (what clients call).

    The autoscaling signal: it rises as soon as requests wait for a busy instance, whatever the step and whatever the
    entry model; a composing model's requests are not counted twice, since only the entry models' requests divide.
    """
    queued = rate_sum(metrics.QUEUE_DURATION_US, sel, window, by)
    requests = request_rate(with_matcher(sel, models(entry_models)), window, by)
    return f"{queued} / {requests}"


def average_batch_size(sel: str, window: str, by: Sequence[str]) -> str:
    """Inferences per model execution: how well dynamic batching fills batches."""
    inferences = rate_sum(metrics.INFERENCE_COUNT, sel, window, by)
    return f"{inferences} / {rate_sum(metrics.EXEC_COUNT, sel, window, by)}"


def latency_quantiles_us(sel: str, by: Sequence[str], quantiles: Sequence[str] = LATENCY_QUANTILES) -> str:
    """End-to-end request latency quantiles from Triton's summaries, worst pod per group."""
    quantile = equals(metrics.QUANTILE_LABEL, quantiles[0]) if len(quantiles) == 1 \
        else matches(metrics.QUANTILE_LABEL, "|".join(quantiles))
    quantile_sel = with_matcher(sel, quantile)
    return f"max {_by([*by, metrics.QUANTILE_LABEL])}({metrics.REQUEST_SUMMARY_US}{quantile_sel})"


def pending_requests(sel: str, by: Sequence[str]) -> str:
    """Requests received but not yet executing (an ensemble's own count stays 0, so summing models is exact)."""
    return gauge_sum(metrics.PENDING_REQUESTS, sel, by)


def cpu_utilisation(sel: str, by: Sequence[str]) -> str:
    """Triton's own reading of the host CPU (0..1)."""
    return f"avg {_by(by)}({metrics.CPU_UTILIZATION}{sel})"


def memory_used_bytes(sel: str, by: Sequence[str]) -> str:
    return gauge_sum(metrics.CPU_MEMORY_USED_BYTES, sel, by)


def gpu_utilisation(sel: str, by: Sequence[str]) -> str:
    """Triton's (DCGM's) reading of how busy its GPUs are (0..1), averaged over the GPUs of each group."""
    return f"avg {_by(by)}({metrics.GPU_UTILIZATION}{sel})"


def gpu_memory_used_bytes(sel: str, by: Sequence[str]) -> str:
    return gauge_sum(metrics.GPU_MEMORY_USED_BYTES, sel, by)


def gpu_memory_total_bytes(sel: str, by: Sequence[str]) -> str:
    return gauge_sum(metrics.GPU_MEMORY_TOTAL_BYTES, sel, by)


def gpu_memory_used_ratio(sel: str, by: Sequence[str]) -> str:
    """Used / total GPU memory, both summed over the GPUs first (a small GPU nearly full does not hide)."""
    return f"{gpu_memory_used_bytes(sel, by)} / {gpu_memory_total_bytes(sel, by)}"


def gpu_power_watts(sel: str, by: Sequence[str]) -> str:
    return gauge_sum(metrics.GPU_POWER_USAGE, sel, by)


def gpu_power_limit_watts(sel: str, by: Sequence[str]) -> str:
    return gauge_sum(metrics.GPU_POWER_LIMIT, sel, by)


def gpu_energy_per_request_joules(gpu_sel: str, entry_sel: str, window: str, by: Sequence[str]) -> str:
    """GPU energy per request to the entry model: joules used per second / requests per second, both summed over
    the group's GPUs and pods first. `gpu_sel` and `entry_sel` select the same pods (the latter also the model)."""
    return f"{rate_sum(metrics.GPU_ENERGY_CONSUMPTION, gpu_sel, window, by)} / {request_rate(entry_sel, window, by)}"


def pod_count(sel: str) -> str:
    """Serving pods: every Triton process exports exactly one `nv_cpu_utilization` series."""
    return f"count({metrics.CPU_UTILIZATION}{sel})"


def up(sel: str) -> str:
    return f"up{sel}"


def triton_target_down(memory: str) -> str:
    """Targets that do not answer scrapes, in a job whose targets exported Triton's series within `memory`: `up` has
    no name of Triton's to select it by, so the job is recognised by what its other targets (or this one) exported."""
    served = f"group by ({JOB_LABEL}) (last_over_time({metrics.REQUEST_SUCCESS}[{memory}]))"
    return f"{up('')} == 0 and on ({JOB_LABEL}) {served}"


def model_missing(memory: str) -> str:
    """(target, model) pairs a target that still answers scrapes exported within `memory` and exports no more: the
    model was unloaded or failed to reload. Works for every model, whatever its name."""
    target = (JOB_LABEL, INSTANCE_LABEL)
    labels = ", ".join((NAMESPACE_LABEL, *target, POD_LABEL, metrics.MODEL_LABEL))
    seen = f"group by ({labels}) (last_over_time({metrics.REQUEST_SUCCESS}[{memory}]))"
    return (f"({seen} unless on ({', '.join((*target, metrics.MODEL_LABEL))}) {metrics.REQUEST_SUCCESS}) "
            f"and on ({', '.join(target)}) {up('')} == 1")


def first_token_latency_s(sel: str, window: str, by: Sequence[str], quantile: str) -> str:
    """Time to the first token (streamed response) of each group, in seconds: from Triton's first-response histogram
    where the server exports one, else from the generation model's own histogram (`or` keeps Triton's where both
    exist). Histograms, unlike summaries, add up across pods: the quantile is of the whole group."""
    by_le = (*by, metrics.BUCKET_LABEL)
    triton = rate_sum(metrics.FIRST_RESPONSE_HISTOGRAM_MS + metrics.BUCKET_SUFFIX, sel, window, by_le)
    own = rate_sum(metrics.GENERATION_FIRST_TOKEN_SECONDS + metrics.BUCKET_SUFFIX, sel, window, by_le)
    return f"histogram_quantile({quantile}, {triton}) / 1000 or histogram_quantile({quantile}, {own})"


def token_rate(counter: str, sel: str, window: str, by: Sequence[str]) -> str:
    """Tokens per second from a generation model's own counter (prompt or output tokens)."""
    return rate_sum(counter, sel, window, by)


def output_tokens_per_request(sel: str, window: str, by: Sequence[str]) -> str:
    """Average completion length: output tokens / successful requests (groups without the counter drop out)."""
    return f"{token_rate(metrics.GENERATION_OUTPUT_TOKENS, sel, window, by)} / {request_rate(sel, window, by)}"


def stream_tokens_per_second(sel: str, window: str, by: Sequence[str]) -> str:
    """What one stream receives: output tokens / seconds the requests ran (Triton's request duration, queueing and
    the first token included). `by` must hold the model label, or other models' durations would dilute it."""
    seconds = f"({rate_sum(metrics.REQUEST_DURATION_US, sel, window, by)} / 1000000)"
    return f"{token_rate(metrics.GENERATION_OUTPUT_TOKENS, sel, window, by)} / {seconds}"


def generation_models(sel: str, by: Sequence[str]) -> str:
    """One series per group that has a generation model (one counting output tokens)."""
    return f"group {_by(by)}({metrics.GENERATION_OUTPUT_TOKENS}{sel})"


def failure_rate(sel: str, window: str, by: Sequence[str]) -> str:
    """Failed requests per second, summed over the failure reasons."""
    return rate_sum(metrics.REQUEST_FAILURE, sel, window, by)


def series_by_model(metric: str, sel: str, window: str) -> str:
    """One sample per model that had a series of `metric` at some point in the window (what exists, not a rate)."""
    return f"count by ({metrics.MODEL_LABEL}) (last_over_time({metric}{sel}[{window}]))"


def series_count(metric: str, sel: str, window: str) -> str:
    return f"count(last_over_time({metric}{sel}[{window}]))"


def total_increase(metric: str, sel: str, window: str) -> str:
    """How much a counter grew over the window, summed over its series (pods, versions)."""
    return f"sum(increase({metric}{sel}[{window}]))"
