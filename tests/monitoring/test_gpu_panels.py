"""The GPU dashboard's queries, evaluated by Prometheus' own engine (`promtool test rules`) over series shaped like a
GPU Triton's: no GPU exists here, so the live test's CPU-only Triton cannot export them, and these input series stand
in for it. Family and label names are Triton 2.51's (core src/metrics.cc: `nv_gpu_*`, `nv_energy_consumption`,
label `gpu_uuid`). Two pods with one GPU each, chosen so that a ratio of sums and an average of per-pod ratios differ.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dashboards import gpu, grafana
from tools import settings
from tools.monitoring import metrics
from tools.monitoring.prometheus import promtool

NAMESPACE = "gpu-test"
VARIABLE_VALUES = {"namespace": NAMESPACE, "pod": ".*", "model": ".*", "entry": "|".join(settings.ENTRY_MODELS),
                   "__rate_interval": "1m"}
STEP_S, STEPS = 15, 40
GIB = 1024 ** 3
# pod -> (GPU utilisation, memory used, memory total, power W, power limit W, ensemble requests/s,
#         encoder requests/s, encoder µs of compute per request)
PODS = {"triton-a": (0.75, 12 * GIB, 16 * GIB, 60, 72, 20, 20, 1000),
        "triton-b": (0.25, 4 * GIB, 48 * GIB, 40, 72, 5, 5, 3000)}


def series(name: str, pod: str, value: float, per_second: float = 0, **labels: str) -> dict:
    """A gauge (per_second 0) or a counter rising at `per_second`, sampled every STEP_S."""
    matchers = {"job": settings.METRICS_JOB, "instance": f"{pod}:8002", "namespace": NAMESPACE, "pod": pod, **labels}
    body = ", ".join(f'{k}="{v}"' for k, v in matchers.items())
    values = f"{value}+{per_second * STEP_S}x{STEPS}" if per_second else f"{value}x{STEPS}"
    return {"series": f"{name}{{{body}}}", "values": values}


def input_series() -> list[dict]:
    out = []
    for pod, (util, used, total, watts, limit, requests, encoder, compute_us) in PODS.items():
        uuid = {"gpu_uuid": f"GPU-{pod}"}
        out += [series(metrics.GPU_UTILIZATION, pod, util, **uuid),
                series(metrics.GPU_MEMORY_USED_BYTES, pod, used, **uuid),
                series(metrics.GPU_MEMORY_TOTAL_BYTES, pod, total, **uuid),
                series(metrics.GPU_POWER_USAGE, pod, watts, **uuid),
                series(metrics.GPU_POWER_LIMIT, pod, limit, **uuid),
                series(metrics.GPU_ENERGY_CONSUMPTION, pod, 0, watts, **uuid),  # joules rise at the power drawn
                series(metrics.REQUEST_SUCCESS, pod, 0, requests, model=settings.EMBED_MODEL, version="1"),
                series(metrics.REQUEST_SUCCESS, pod, 0, encoder, model=settings.ENCODER_MODEL, version="1"),
                series(metrics.COMPUTE_INFER_DURATION_US, pod, 0, encoder * compute_us,
                       model=settings.ENCODER_MODEL, version="1")]
    return out


def per_gpu(index: int) -> list[dict]:
    return [{"labels": f'{{gpu_uuid="GPU-{pod}", pod="{pod}"}}', "value": values[index]}
            for pod, values in PODS.items()]


a, b = PODS.values()
# Panel title -> expected samples of each of its queries, worked out by hand from PODS.
EXPECTED = {
    "GPU utilisation": [[{"labels": "{}", "value": (a[0] + b[0]) / 2}]],
    "GPU memory used": [[{"labels": "{}", "value": (a[1] + b[1]) / (a[2] + b[2])}]],  # 0.25, not 0.42 (avg of ratios)
    "GPU power": [[{"labels": "{}", "value": a[3] + b[3]}]],
    "GPU energy per request": [[{"labels": "{}", "value": (a[3] + b[3]) / (a[5] + b[5])}]],  # 4 J, not 5.5
    "GPU utilisation per GPU": [per_gpu(0)],
    "GPU memory per GPU": [per_gpu(1), per_gpu(2)],
    "GPU power per GPU": [per_gpu(3), per_gpu(4)],
    "GPU energy per request per pod": [[{"labels": f'{{pod="{pod}"}}', "value": v[3] / v[5]}
                                        for pod, v in PODS.items()]],
    "Compute time per request per model": [[{"labels": f'{{model="{settings.ENCODER_MODEL}"}}',
                                             "value": (a[6] * a[7] + b[6] * b[7]) / (a[6] + b[6])}]],  # 1400 µs
}


def substitute(text: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: VARIABLE_VALUES[m[1]], text)


def unit_tests(expected: dict[str, list[list[dict]]]) -> dict:
    panels = grafana.render(gpu.DASHBOARD)["panels"]
    checks = [{"expr": substitute(target["expr"]), "eval_time": f"{STEPS * STEP_S // 2}s", "exp_samples": samples}
              for panel in panels for target, samples in zip(panel["targets"], expected[panel["title"]], strict=True)]
    return {"rule_files": [], "evaluation_interval": f"{STEP_S}s",
            "tests": [{"interval": f"{STEP_S}s", "input_series": input_series(), "promql_expr_test": checks}]}


def run_promtool(tmp_path: Path, expected: dict) -> str:
    (tmp_path / "gpu.test.yaml").write_text(yaml.safe_dump(unit_tests(expected)))
    result = promtool("test", "rules", "gpu.test.yaml", cwd=tmp_path)
    return "" if result.returncode == 0 else result.stdout + result.stderr


def test_every_gpu_panel_is_checked():
    assert {p.title for p in gpu.PANELS} == set(EXPECTED)
    assert gpu.DASHBOARD.gpu_only


def test_gpu_panels_compute_ratios_of_sums_over_gpu_series(tmp_path: Path):
    assert run_promtool(tmp_path, EXPECTED) == ""


def test_the_check_has_teeth(tmp_path: Path):
    """An average of per-pod ratios, the mistake the queries avoid, is refused by the same check."""
    wrong = {**EXPECTED, "GPU energy per request": [[{"labels": "{}", "value": (a[3] / a[5] + b[3] / b[5]) / 2}]]}
    assert "nv_energy_consumption" in run_promtool(tmp_path, wrong)
