"""What became of one request in a load test: accepted, refused by an overloaded server (load shedding, expected in a
burst), or failed with an error (a fault). Plain functions, so the rule is testable without Locust.

Locust keeps the three apart as three stats entries of the same request name: the accepted entry's percentiles are
the latencies of answered requests only, and the refused entry's tell how fast the server said no.
"""

from __future__ import annotations

import enum

from tools.serving.client import EmbeddingError


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    ERROR = "error"


# A server's "too busy, not now": HTTP 503 (Triton's UNAVAILABLE) and 429 (a gateway's rate limit); gRPC UNAVAILABLE
# and RESOURCE_EXHAUSTED. The client keeps gRPC's UNAVAILABLE status only when Triton worded it as a queue refusal
# (`client.QUEUE_REFUSALS`): otherwise the server could not be reached, which is an error.
REFUSAL_STATUSES = frozenset({"503", "429", "StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED"})


class Refused(Exception):
    """What Locust is told of a refusal: the status and the server's own words ('503: ... Exceeds maximum queue
    size'), so Locust's failure table records exactly what was sent."""


def classify(error: BaseException | None) -> Outcome:
    """The outcome of a request that raised `error` (None: it was answered)."""
    if error is None:
        return Outcome.ACCEPTED
    if isinstance(error, EmbeddingError) and error.status in REFUSAL_STATUSES:
        return Outcome.REFUSED
    return Outcome.ERROR


def reported(error: BaseException) -> BaseException:
    """The exception handed to Locust for a request that raised `error`: a refusal says its status and words."""
    if classify(error) == Outcome.REFUSED:
        return Refused(f"{error.status}: {error}")
    return error


def entry_name(request_name: str, outcome: Outcome) -> str:
    """The Locust stats entry a request is counted under: the plain name for accepted requests."""
    return request_name if outcome == Outcome.ACCEPTED else f"{request_name} ({outcome})"


def outcome_of_entry(name: str) -> Outcome:
    """Which outcome a Locust stats entry (named by `entry_name`) counts."""
    for outcome in (Outcome.REFUSED, Outcome.ERROR):
        if name.endswith(f" ({outcome})"):
            return outcome
    return Outcome.ACCEPTED
