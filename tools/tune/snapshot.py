"""What Prometheus says each model did over a window: the evidence every tuning decision is made from.

The PromQL is `tools.monitoring.queries`' (the dashboards' own expressions); this module only asks and files the
answers per model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_api_client import PrometheusApiClientException, PrometheusConnect

from tools.errors import MonitoringError
from tools.monitoring import metrics, queries

MODEL_BY = (metrics.MODEL_LABEL,)
# Families a decision cannot do without: the per-model counters and Triton's CPU gauge.
REQUIRED_FAMILIES = (metrics.REQUEST_SUCCESS, metrics.QUEUE_DURATION_US, metrics.COMPUTE_INFER_DURATION_US,
                     metrics.EXEC_COUNT, metrics.PENDING_REQUESTS, metrics.CPU_UTILIZATION)


class SnapshotError(MonitoringError):
    """Prometheus could not be asked, or lacks what the tuner needs."""


@dataclass(frozen=True)
class ModelView:
    """One model over the window: rates per second, times in ms per request."""

    requests_per_s: float = 0.0
    failures_per_s: float = 0.0
    queue_ms: float = 0.0
    compute_input_ms: float = 0.0
    compute_infer_ms: float = 0.0
    compute_output_ms: float = 0.0
    batch_size: float = 0.0
    pending: float = 0.0

    @property
    def compute_ms(self) -> float:
        return self.compute_input_ms + self.compute_infer_ms + self.compute_output_ms


@dataclass(frozen=True)
class Snapshot:
    """Every model of the server over one window, and Triton's reading of the host CPU (0..1)."""

    window_s: int
    models: dict[str, ModelView]
    cpu: float = 0.0

    def as_dict(self) -> dict:
        return {"window_s": self.window_s, "cpu": self.cpu,
                "models": {name: asdict(view) for name, view in self.models.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Snapshot:
        return cls(window_s=int(data["window_s"]), cpu=float(data.get("cpu", 0.0)),
                   models={name: ModelView(**view) for name, view in data["models"].items()})

    @classmethod
    def load(cls, path: Path) -> Snapshot:
        return cls.from_dict(json.loads(path.read_text()))


def query(client: PrometheusConnect, promql: str) -> dict[str, float]:
    """model -> value of an instant query grouped by model (NaN from 0/0 counts as 0)."""
    try:
        result = client.custom_query(promql)
    except (PrometheusApiClientException, OSError) as exc:
        raise SnapshotError(f"cannot query Prometheus at {client.url}: {exc}") from None
    values = {}
    for series in result:
        value = float(series["value"][1])
        values[series["metric"].get(metrics.MODEL_LABEL, "")] = 0.0 if value != value else value
    return values


def require_families(client: PrometheusConnect, job_sel: str) -> None:
    """Fail with the names of the metric families Prometheus holds no series of for the job."""
    missing = [family for family in REQUIRED_FAMILIES if not query(client, f"count({family}{job_sel})")]
    if missing:
        raise SnapshotError(f"Prometheus has no series of {', '.join(missing)} for {job_sel or 'any job'}: is "
                            "Triton started with --allow-metrics=true --allow-cpu-metrics=true?")


def read(client: PrometheusConnect, models: list[str], window_s: int, job_sel: str = "") -> Snapshot:
    """The per-model view of `models` over the last `window_s` seconds."""
    window = f"{max(window_s, 2)}s"

    def per_request(metric: str) -> dict[str, float]:
        return query(client, queries.time_per_request_us(metric, job_sel, window, MODEL_BY))

    columns = {
        "requests_per_s": query(client, queries.request_rate(job_sel, window, MODEL_BY)),
        "failures_per_s": query(client, queries.failure_rate(job_sel, window, MODEL_BY)),
        "queue_ms": per_request(metrics.QUEUE_DURATION_US),
        "compute_input_ms": per_request(metrics.COMPUTE_INPUT_DURATION_US),
        "compute_infer_ms": per_request(metrics.COMPUTE_INFER_DURATION_US),
        "compute_output_ms": per_request(metrics.COMPUTE_OUTPUT_DURATION_US),
        "batch_size": query(client, queries.average_batch_size(job_sel, window, MODEL_BY)),
        "pending": query(client, queries.pending_requests(job_sel, MODEL_BY)),
    }
    scale = {key: 1e-3 if key.endswith("_ms") else 1.0 for key in columns}
    views = {model: ModelView(**{key: round(values.get(model, 0.0) * scale[key], 3)
                                 for key, values in columns.items()}) for model in models}
    cpu = query(client, queries.cpu_utilisation(job_sel, ()))
    return Snapshot(window_s=window_s, models=views, cpu=round(next(iter(cpu.values()), 0.0), 3))
