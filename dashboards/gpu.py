"""The GPU dashboard: how busy, full and power-hungry the GPUs of a GPU deployment (chart gpu.enabled) are, next to
the models' compute time. Triton exports these families only on a CUDA build that sees a GPU, so this dashboard is
shipped by the chart only with gpu.enabled, and its queries are checked against promtool with series shaped like
Triton's (tests/monitoring/test_gpu_panels.py), not against the CPU-only Triton that runs in the live test."""

from __future__ import annotations

from dashboards.grafana import Dashboard, Panel, Query
from dashboards.overview import ENTRY_SEL, MODEL_SEL, POD_SEL, RATE_WINDOW, VARIABLES
from tools.monitoring import metrics
from tools.monitoring import queries as q

UID = "triton-embeddings-gpu"
BY_GPU = (q.POD_LABEL, metrics.GPU_LABEL)
BY_POD = (q.POD_LABEL,)
BY_MODEL = (metrics.MODEL_LABEL,)
GPU_LEGEND = "{{pod}} {{gpu_uuid}}"


def _stat(title: str, description: str, expr: str, unit: str) -> Panel:
    return Panel(title, description, (Query(expr),), unit=unit, kind="stat", width=6, height=4)


PANELS = (
    _stat("GPU utilisation", "Average over the selected pods' GPUs (DCGM's reading, 0-100 %).",
          q.gpu_utilisation(POD_SEL, ()), "percentunit"),
    _stat("GPU memory used", "Used / total memory of the selected pods' GPUs, both summed first.",
          q.gpu_memory_used_ratio(POD_SEL, ()), "percentunit"),
    _stat("GPU power", "Power drawn by the selected pods' GPUs now.", q.gpu_power_watts(POD_SEL, ()), "watt"),
    _stat("GPU energy per request", "Joules the GPUs used per request to the entry models: energy rate / "
          "request rate, both summed over the selected pods.",
          q.gpu_energy_per_request_joules(POD_SEL, ENTRY_SEL, RATE_WINDOW, ()), "joule"),
    Panel("GPU utilisation per GPU", "How busy each GPU is; low with queueing means batching or instances, not the "
          "GPU, are the limit.", (Query(q.gpu_utilisation(POD_SEL, BY_GPU), GPU_LEGEND),), unit="percentunit",
          max_value=1),
    Panel("GPU memory per GPU", "Used and total bytes of each GPU (model weights, CUDA contexts, batches).",
          (Query(q.gpu_memory_used_bytes(POD_SEL, BY_GPU), f"{GPU_LEGEND} used"),
           Query(q.gpu_memory_total_bytes(POD_SEL, BY_GPU), f"{GPU_LEGEND} total")), unit="bytes"),
    Panel("GPU power per GPU", "Power drawn and the GPU's power limit (throttling starts at the limit).",
          (Query(q.gpu_power_watts(POD_SEL, BY_GPU), f"{GPU_LEGEND} used"),
           Query(q.gpu_power_limit_watts(POD_SEL, BY_GPU), f"{GPU_LEGEND} limit")), unit="watt"),
    Panel("GPU energy per request per pod", "Joules per request to the entry models on each pod: a pod far above "
          "the others batches worse or runs another model version.",
          (Query(q.gpu_energy_per_request_joules(POD_SEL, ENTRY_SEL, RATE_WINDOW, BY_POD), "{{pod}}"),),
          unit="joule"),
    Panel("Compute time per request per model", "Microseconds per request in each model's execute: what the GPU "
          "time goes to.", (Query(q.time_per_request_us(metrics.COMPUTE_INFER_DURATION_US, MODEL_SEL, RATE_WINDOW,
                                                        BY_MODEL), "{{model}}"),), unit="µs", width=24),
)

DASHBOARD = Dashboard(
    uid=UID, title="Triton embeddings: GPUs",
    description="Utilisation, memory, power and energy per request of the GPUs serving the embedding service.",
    tags=("triton", "embeddings", "gpu"), variables=VARIABLES, panels=PANELS, gpu_only=True,
)
