"""Triton's Prometheus metric families and labels: named once, used by load tests, dashboards and the chart."""

from __future__ import annotations

# Counters (Triton 2.51 exposes them without a `_total` suffix).
REQUEST_SUCCESS = "nv_inference_request_success"
REQUEST_FAILURE = "nv_inference_request_failure"
INFERENCE_COUNT = "nv_inference_count"  # inferences (batch elements); / EXEC_COUNT = average batch size
EXEC_COUNT = "nv_inference_exec_count"
REQUEST_DURATION_US = "nv_inference_request_duration_us"
QUEUE_DURATION_US = "nv_inference_queue_duration_us"
COMPUTE_INPUT_DURATION_US = "nv_inference_compute_input_duration_us"
COMPUTE_INFER_DURATION_US = "nv_inference_compute_infer_duration_us"
COMPUTE_OUTPUT_DURATION_US = "nv_inference_compute_output_duration_us"
# Gauges.
PENDING_REQUESTS = "nv_inference_pending_request_count"
CPU_UTILIZATION = "nv_cpu_utilization"
CPU_MEMORY_USED_BYTES = "nv_cpu_memory_used_bytes"
# Quantile summaries (with --metrics-config=summary_latencies=true); label `quantile`.
REQUEST_SUMMARY_US = "nv_inference_request_summary_us"

MODEL_LABEL = "model"
VERSION_LABEL = "version"
QUANTILE_LABEL = "quantile"  # on the *_summary_us families
