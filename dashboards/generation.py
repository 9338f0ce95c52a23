"""The generation dashboard: time to the first token, tokens per second and completion lengths of the streaming
(decoupled) models. Its `model` variable lists only the models that count output tokens, and "All" means those
models, so every panel shows generation models alone; an embedding-only deployment shows no data here."""

from __future__ import annotations

from dashboards.grafana import Dashboard, Panel, Query, Variable
from dashboards.overview import NAMESPACE, POD, POD_SEL, RATE_WINDOW
from tools.monitoring import metrics
from tools.monitoring import queries as q

UID = "triton-generation"
MODEL_SEL = q.selector(NAMESPACE, POD, q.matches(metrics.MODEL_LABEL, "$model"))
BY_MODEL = (metrics.MODEL_LABEL,)
QUANTILES = ("0.5", "0.9", "0.99")

VARIABLES = (
    Variable("namespace", "Namespace", f"{metrics.GENERATION_OUTPUT_TOKENS}, {q.NAMESPACE_LABEL}"),
    Variable("pod", "Pod", f"{metrics.GENERATION_OUTPUT_TOKENS}{q.selector(NAMESPACE)}, {q.POD_LABEL}"),
    Variable("model", "Generation model", f"{metrics.GENERATION_OUTPUT_TOKENS}{POD_SEL}, {metrics.MODEL_LABEL}",
             all_value=None),
)


def _stat(title: str, description: str, expr: str, unit: str) -> Panel:
    return Panel(title, description, (Query(expr, "{{model}}"),), unit=unit, kind="stat", width=6, height=4)


PANELS = (
    _stat("Output tokens / s", "Tokens the models generated per second, all selected pods (the models' own "
          "counter).", q.token_rate(metrics.GENERATION_OUTPUT_TOKENS, MODEL_SEL, RATE_WINDOW, BY_MODEL), "short"),
    _stat("Prompt tokens / s", "Prompt tokens the models read per second.",
          q.token_rate(metrics.GENERATION_PROMPT_TOKENS, MODEL_SEL, RATE_WINDOW, BY_MODEL), "short"),
    _stat("p99 time to first token", "Over all selected pods (histograms add up): Triton's first-response "
          "histogram where the server has one, else the model's own.",
          q.first_token_latency_s(MODEL_SEL, RATE_WINDOW, BY_MODEL, "0.99"), "s"),
    _stat("Requests / s", "Successful generation requests (a stream counts once).",
          q.request_rate(MODEL_SEL, RATE_WINDOW, BY_MODEL), "reqps"),
    Panel("Time to first token", "p50/p90/p99 of the time to the first streamed token, per model.",
          tuple(Query(q.first_token_latency_s(MODEL_SEL, RATE_WINDOW, BY_MODEL, quantile), f"{{{{model}}}} p{quantile}")
                for quantile in QUANTILES), unit="s"),
    Panel("Tokens per second", "Output and prompt tokens per second, per model, all selected pods.",
          (Query(q.token_rate(metrics.GENERATION_OUTPUT_TOKENS, MODEL_SEL, RATE_WINDOW, BY_MODEL),
                 "{{model}} output"),
           Query(q.token_rate(metrics.GENERATION_PROMPT_TOKENS, MODEL_SEL, RATE_WINDOW, BY_MODEL),
                 "{{model}} prompt"))),
    Panel("Tokens per second per stream", "Output tokens / seconds the requests ran (queueing and the first "
          "token included): the speed one client sees. Falls as concurrent streams share the CPU.",
          (Query(q.stream_tokens_per_second(MODEL_SEL, RATE_WINDOW, BY_MODEL), "{{model}}"),)),
    Panel("Output tokens per request", "Average completion length: output tokens / successful requests.",
          (Query(q.output_tokens_per_request(MODEL_SEL, RATE_WINDOW, BY_MODEL), "{{model}}"),)),
    Panel("Queue time per request", "Microseconds a generation request waits for a free model instance.",
          (Query(q.time_per_request_us(metrics.QUEUE_DURATION_US, MODEL_SEL, RATE_WINDOW, BY_MODEL),
                 "{{model}}"),), unit="µs"),
    Panel("Failure ratio and pending requests", "Failed / all requests (cancelled streams count as failures "
          "with reason CANCELED) and requests waiting, per model.",
          (Query(q.failure_ratio(MODEL_SEL, RATE_WINDOW, BY_MODEL), "{{model}} failure ratio"),
           Query(q.pending_requests(MODEL_SEL, BY_MODEL), "{{model}} pending"))),
)

DASHBOARD = Dashboard(
    uid=UID, title="Triton: generation",
    description="Time to first token, tokens per second and completion lengths of the streaming generation models.",
    tags=("triton", "generation"), variables=VARIABLES, panels=PANELS,
)
