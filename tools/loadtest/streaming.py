"""What a load test measures of a streaming (decoupled) model, as GenAI-Perf defines it, in plain functions testable
without Locust: per request the time to first token (the first response carrying text), the inter-token latency
((request latency - time to first token) / (output tokens - 1)), the output tokens (the model's completion_tokens
when its final response says, else the responses that carried text) and the request latency; per run their
statistics and the output tokens per second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STAT_PERCENTILES = (50, 90, 95, 99)
STAT_KEYS = ("avg", "min", *(f"p{p}" for p in STAT_PERCENTILES), "max")


@dataclass(frozen=True)
class StreamRecord:
    """One accepted streamed request (milliseconds; ttft None when no response carried text)."""

    ttft_ms: float | None
    latency_ms: float
    output_tokens: int

    @property
    def itl_ms(self) -> float | None:
        if self.ttft_ms is None or self.output_tokens < 2:
            return None
        return (self.latency_ms - self.ttft_ms) / (self.output_tokens - 1)

    def as_row(self) -> list[float | int | None]:
        return [self.ttft_ms, self.latency_ms, self.output_tokens]


def statistics(values: Sequence[float]) -> dict[str, float]:
    """avg, min, p50..p99 and max of the values (zeros when there are none), rounded to 0.01."""
    if not values:
        return dict.fromkeys(STAT_KEYS, 0.0)
    data = np.asarray(values, dtype=np.float64)
    found = {"avg": data.mean(), "min": data.min(), "max": data.max(),
             **{f"p{p}": np.percentile(data, p) for p in STAT_PERCENTILES}}
    return {key: round(float(found[key]), 2) for key in STAT_KEYS}


@dataclass(frozen=True)
class StreamingSummary:
    """GenAI-Perf's figures of a run: request count and output tokens, output tokens per second over the run's
    elapsed time, and the statistics of time to first token, inter-token latency and output tokens per request."""

    requests: int
    output_tokens: int
    output_tokens_per_s: float
    ttft_ms: dict[str, float]
    itl_ms: dict[str, float]
    output_tokens_per_request: dict[str, float]

    @classmethod
    def of(cls, records: Sequence[StreamRecord], elapsed_s: float) -> StreamingSummary:
        tokens = sum(record.output_tokens for record in records)
        return cls(requests=len(records), output_tokens=tokens,
                   output_tokens_per_s=round(tokens / elapsed_s, 2) if elapsed_s > 0 else 0.0,
                   ttft_ms=statistics([r.ttft_ms for r in records if r.ttft_ms is not None]),
                   itl_ms=statistics([r.itl_ms for r in records if r.itl_ms is not None]),
                   output_tokens_per_request=statistics([r.output_tokens for r in records]))

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence], elapsed_s: float) -> StreamingSummary:
        """From the rows `StreamRecord.as_row` gave (what the locustfile writes)."""
        return cls.of([StreamRecord(row[0], row[1], int(row[2])) for row in rows], elapsed_s)
