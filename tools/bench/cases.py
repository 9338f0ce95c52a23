"""The four ways the benchmark serves one pipeline; apart from the runner so that the CLI lists them without
importing the benchmark's heavy modules."""

from __future__ import annotations

import enum


class Case(enum.StrEnum):
    CEILING = "ceiling"
    TRITON = "triton"
    FASTAPI = "fastapi"
    PYTRITON = "pytriton"


CASE_TITLES = {Case.CEILING: "in-process ceiling", Case.TRITON: "Triton embed ensemble (as shipped)",
          Case.FASTAPI: "FastAPI microservice", Case.PYTRITON: "PyTriton @batch"}
