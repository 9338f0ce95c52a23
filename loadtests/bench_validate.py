"""Benchmark: `tools validate` on a generated repository of 1,000 models (100 of them ensembles).

Prints the median wall time of several full CLI runs (process start included) and, in-process,
where the time goes: reading + parsing configs, and the rules. Target: median under 2 s on 2 cores.

    .venv/bin/python loadtests/bench_validate.py [--runs 5] [--models 1000] [--ensembles 100]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tools import processes
from tools.repository import load_repository
from tools.validation import Options, validate

RUN_TIMEOUT_S = 300  # one `tools validate` run; the target is 2 s, so this only catches a hang

MODEL_PY = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.get_input_tensor_by_name(r, "IN")]) for r in requests]
"""
TENSORS = """\
input [ {{ name: "IN" data_type: TYPE_FP32 dims: [ -1, 16 ] }}, {{ name: "MASK" data_type: TYPE_INT64 dims: [ -1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_FP32 dims: [ -1, 16 ] }} ]
"""
MODEL = """\
name: "{name}"
backend: "python"
max_batch_size: 32
""" + TENSORS + """\
instance_group [ {{ kind: KIND_CPU count: 2 }} ]
dynamic_batching {{ preferred_batch_size: [ 8, 16 ] max_queue_delay_microseconds: 200 }}
parameters {{ key: "threads" value {{ string_value: "1" }} }}
"""
STEP = """    {{ model_name: "{model}" model_version: -1
      input_map {{ key: "IN" value: "{source}" }} input_map {{ key: "MASK" value: "MASK" }}
      output_map {{ key: "OUT" value: "{target}" }} }}"""
ENSEMBLE = """\
name: "{name}"
platform: "ensemble"
max_batch_size: 32
""" + TENSORS + """\
ensemble_scheduling {{
  step [
{steps}
  ]
}}
"""
STEPS_PER_ENSEMBLE = 3


def generate(root: Path, models: int, ensembles: int) -> None:
    plain = models - ensembles
    for index in range(plain):
        folder = root / f"model_{index:04d}"
        (folder / "1").mkdir(parents=True)
        (folder / "config.pbtxt").write_text(MODEL.format(name=folder.name))
        (folder / "1" / "model.py").write_text(MODEL_PY)
    for index in range(ensembles):
        folder = root / f"ensemble_{index:04d}"
        (folder / "1").mkdir(parents=True)
        tensors = ["IN", *[f"t{i}" for i in range(1, STEPS_PER_ENSEMBLE)], "OUT"]
        steps = ",\n".join(STEP.format(model=f"model_{(index * STEPS_PER_ENSEMBLE + i) % plain:04d}",
                                       source=tensors[i], target=tensors[i + 1]) for i in range(STEPS_PER_ENSEMBLE))
        (folder / "config.pbtxt").write_text(ENSEMBLE.format(name=folder.name, steps=steps))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--ensembles", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        root = Path(tmp)
        generate(root, args.models, args.ensembles)
        print(f"generated {args.models} models ({args.ensembles} ensembles) in {root}", flush=True)
        tools = Path(sys.executable).parent / "tools"
        walls, cpus = [], []
        for run in range(1, args.runs + 1):
            cpu_before = _children_cpu()
            started = time.perf_counter()
            completed = processes.run("tools validate", [tools, "validate", root, "--format", "json"],
                                      timeout=RUN_TIMEOUT_S)
            walls.append(time.perf_counter() - started)
            cpus.append(_children_cpu() - cpu_before)
            print(f"  run {run}/{args.runs}: {walls[-1]:.2f} s wall, {cpus[-1]:.2f} s CPU "
                  f"(exit {completed.returncode})", flush=True)
            if completed.returncode != 0:
                sys.exit(f"the generated repository should validate clean:\n{completed.stdout[:2000]}")
        loads, checks = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            repository = load_repository(root)
            loaded = time.perf_counter()
            validate(repository, Options())
            loads.append(loaded - started)
            checks.append(time.perf_counter() - loaded)
    print(f"tools validate, {args.models} models: median {statistics.median(walls):.2f} s wall over {args.runs} runs "
          f"(min {min(walls):.2f}, max {max(walls):.2f}), median {statistics.median(cpus):.2f} s CPU; in-process "
          f"median: read+parse {statistics.median(loads):.2f} s, rules {statistics.median(checks):.2f} s")
    print(f"(load average now {', '.join(f'{x:.1f}' for x in os.getloadavg())}: wall time grows with other work on "
          "the machine, CPU time much less)")


if __name__ == "__main__":
    main()
