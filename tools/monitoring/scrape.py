"""Triton's own view of a run: scrape its Prometheus endpoint and turn counter deltas into per-model figures.

Triton's latency metrics are cumulative sums of microseconds over requests, so per-request averages need two
scrapes (before and after a run) and the difference of both the sum and the request count.
"""

from __future__ import annotations

import urllib.request
from dataclasses import asdict, dataclass

from prometheus_client.parser import text_string_to_metric_families

from tools.errors import MonitoringError
from tools.monitoring import metrics

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


class MetricsUnavailableError(MonitoringError):
    """The metrics endpoint could not be read."""


def parse(text: str) -> Samples:
    """(metric name, sorted unescaped labels) -> value for every sample, read by prometheus_client's own parser.

    That parser names a counter's samples `<family>_total` (the OpenMetrics way); Triton's counters carry no such
    suffix, so counter samples are keyed by their family's name: the name Triton exposes and PromQL queries.
    ValueError if the text is not the Prometheus text format.
    """
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = family.name if family.type == "counter" else sample.name
            samples[(name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(url: str, timeout: float = 5.0) -> Samples:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse(response.read().decode())
    except (OSError, ValueError) as exc:
        raise MetricsUnavailableError(f"cannot read Triton metrics at {url}: {exc}") from None


@dataclass(frozen=True)
class ModelFigures:
    """What one model version did between two scrapes, as Triton measured it (times are ms per request)."""

    model: str
    version: str
    requests: int
    failures: int
    inferences: int
    executions: int
    request_ms: float
    queue_ms: float
    compute_ms: float

    @property
    def avg_batch(self) -> float:
        """Batch elements per model execution: how well (dynamic) batching worked."""
        return self.inferences / self.executions if self.executions else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "avg_batch": round(self.avg_batch, 2)}


def _per_model(samples: Samples, name: str) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = {}
    for (metric, labels), value in samples.items():
        if metric != name:
            continue
        label = dict(labels)
        key = (label.get(metrics.MODEL_LABEL, ""), label.get(metrics.VERSION_LABEL, ""))
        totals[key] = totals.get(key, 0.0) + value
    return totals


def model_figures(before: Samples, after: Samples) -> list[ModelFigures]:
    """Per model version, what changed between the scrapes; models with no traffic in between are left out."""

    def delta(name: str) -> dict[tuple[str, str], float]:
        start = _per_model(before, name)
        return {key: value - start.get(key, 0.0) for key, value in _per_model(after, name).items()}

    success, failure = delta(metrics.REQUEST_SUCCESS), delta(metrics.REQUEST_FAILURE)
    inferences, executions = delta(metrics.INFERENCE_COUNT), delta(metrics.EXEC_COUNT)
    request_us, queue_us = delta(metrics.REQUEST_DURATION_US), delta(metrics.QUEUE_DURATION_US)
    compute_us = [delta(name) for name in (metrics.COMPUTE_INPUT_DURATION_US, metrics.COMPUTE_INFER_DURATION_US,
                                           metrics.COMPUTE_OUTPUT_DURATION_US)]
    figures = []
    for key in sorted(success):
        ok, failed = success[key], failure.get(key, 0.0)
        if ok + failed <= 0:
            continue
        per_request_ms = 1.0 / (1000.0 * ok) if ok else 0.0
        figures.append(ModelFigures(
            model=key[0], version=key[1], requests=round(ok + failed), failures=round(failed),
            inferences=round(inferences.get(key, 0.0)), executions=round(executions.get(key, 0.0)),
            request_ms=request_us.get(key, 0.0) * per_request_ms,
            queue_ms=queue_us.get(key, 0.0) * per_request_ms,
            compute_ms=sum(part.get(key, 0.0) for part in compute_us) * per_request_ms,
        ))
    return figures
