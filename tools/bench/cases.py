"""The four ways the benchmark serves one pipeline; apart from the runner so that the CLI lists them without
importing the benchmark's heavy modules."""

from __future__ import annotations

import enum

from tools.loadtest.corpus import Workload


class Case(enum.StrEnum):
    CEILING = "ceiling"
    TRITON = "triton"
    FASTAPI = "fastapi"
    PYTRITON = "pytriton"


CASE_TITLES = {Case.CEILING: "in-process ceiling", Case.TRITON: "Triton embed ensemble (as shipped)",
          Case.FASTAPI: "FastAPI microservice", Case.PYTRITON: "PyTriton @batch"}


ALL_WORKLOADS = "all"
# What `tools bench --workload` accepts: each workload's name, or all of them measured side by side.
WorkloadChoice = enum.StrEnum("WorkloadChoice", [*(str(w) for w in Workload), ALL_WORKLOADS])


def workloads_of(choice: str) -> tuple[Workload, ...]:
    return tuple(Workload) if choice == ALL_WORKLOADS else (Workload(choice),)
