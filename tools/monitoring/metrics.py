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
# GPU gauges, one series per GPU (label `gpu_uuid`), with --allow-gpu-metrics=true on a CUDA build that sees a GPU
# (collected through DCGM; Triton 2.51, core src/metrics.cc). Utilisation is 0..1, power in watts.
GPU_UTILIZATION = "nv_gpu_utilization"
GPU_MEMORY_USED_BYTES = "nv_gpu_memory_used_bytes"
GPU_MEMORY_TOTAL_BYTES = "nv_gpu_memory_total_bytes"
GPU_POWER_USAGE = "nv_gpu_power_usage"
GPU_POWER_LIMIT = "nv_gpu_power_limit"
# Counter: joules the GPU used since Triton started (no `_total` suffix either).
GPU_ENERGY_CONSUMPTION = "nv_energy_consumption"
# Quantile summaries (with --metrics-config=summary_latencies=true); label `quantile`.
REQUEST_SUMMARY_US = "nv_inference_request_summary_us"
# Histogram (`_bucket`, label `le`) of the time to a decoupled model's first response, in ms. Newer Triton releases
# export it with --metrics-config=histogram_latencies=true; 2.51 accepts that flag but exports no histogram at all
# (its core has neither the option nor the family: checked against the wheel's server). The chart passes the flag, so
# the panels read it on an image with a newer Triton; until then they read the model's own histogram below.
FIRST_RESPONSE_HISTOGRAM_MS = "nv_inference_first_response_histogram_ms"

# What a generation model exports itself (Triton 2.51's Python backend: pb_utils.MetricFamily), labels `model` and
# `version`. model_repository/generate defines the same names again (model code never imports `tools`); a test there
# holds them equal. Counters, exposed with their `_total` suffix as named.
GENERATION_PROMPT_TOKENS = "generation_prompt_tokens_total"
GENERATION_OUTPUT_TOKENS = "generation_output_tokens_total"
# Histogram of the seconds from the start of a request's execution to its first streamed token (the 2.51 Python
# backend supports HISTOGRAM families: seen working). Read only where Triton has no first-response histogram.
GENERATION_FIRST_TOKEN_SECONDS = "generation_first_token_seconds"
BUCKET_SUFFIX = "_bucket"

MODEL_LABEL = "model"
VERSION_LABEL = "version"
QUANTILE_LABEL = "quantile"  # on the *_summary_us families
GPU_LABEL = "gpu_uuid"  # on the GPU families
BUCKET_LABEL = "le"  # on the histograms' `_bucket` series
