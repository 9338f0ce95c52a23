"""Load profiles as plain functions of time, so the Locust shapes stay one-liners and the arithmetic is testable
without importing Locust (whose gevent monkey-patching must not leak into other processes)."""

from __future__ import annotations

import enum
import math

from tools.errors import UsageError


class Shape(enum.StrEnum):
    """How the user count moves over a run (`tools loadtest --shape`)."""

    CONSTANT = "constant"  # -u users throughout
    STEP = "step"  # a staircase up to -u users
    SPIKE = "spike"  # a baseline, a burst to -u users mid-run, the baseline again
    RATE = "rate"  # open loop: a fixed pool pacing itself to a request rate


STEPS = 4  # a step ramp climbs in this many equal stairs
SPIKE_WINDOW = (0.4, 0.6)  # the spike holds the peak over this fraction of the run
SPIKE_BASELINE = 0.25  # users outside the spike, as a fraction of the peak


def users_at(shape: Shape, elapsed_s: float, users: int, duration_s: float | None) -> int | None:
    """How many users should run `elapsed_s` into the run; None once the run is over. Without a duration (a run
    started from Locust's UI with its run time cleared) the run goes on until stopped, at `users` throughout:
    a ramp or a spike has no length to be drawn over."""
    if duration_s is None or duration_s <= 0:
        return users
    if elapsed_s >= duration_s:
        return None
    if shape in (Shape.CONSTANT, Shape.RATE):  # RATE: a fixed pool; each user paces itself (see `pacing_interval`)
        return users
    fraction = elapsed_s / duration_s
    if shape == Shape.STEP:
        stair = math.floor(fraction * STEPS) + 1
        return max(1, math.ceil(users * stair / STEPS))
    start, end = SPIKE_WINDOW
    return users if start <= fraction < end else spike_baseline(users)


def spike_baseline(users: int) -> int:
    """Users outside the spike."""
    return max(1, math.ceil(users * SPIKE_BASELINE))


def pacing_interval(rate_per_s: float, users: int) -> float:
    """Seconds between one user's request starts so that `users` users together send `rate_per_s`."""
    if rate_per_s <= 0:
        raise UsageError("the request rate must be positive")
    return users / rate_per_s
