"""Load profiles as plain functions of time, so the Locust shapes stay one-liners and the arithmetic is testable
without importing Locust (whose gevent monkey-patching must not leak into other processes)."""

from __future__ import annotations

import math

CONSTANT, STEP, SPIKE, RATE = "constant", "step", "spike", "rate"
PROFILES = (CONSTANT, STEP, SPIKE, RATE)
STEPS = 4  # a step ramp climbs in this many equal stairs
SPIKE_WINDOW = (0.4, 0.6)  # the spike holds the peak over this fraction of the run
SPIKE_BASELINE = 0.25  # users outside the spike, as a fraction of the peak


def users_at(profile: str, elapsed_s: float, users: int, duration_s: float) -> int | None:
    """How many users should run `elapsed_s` into the run; None once the run is over."""
    if elapsed_s >= duration_s:
        return None
    if profile in (CONSTANT, RATE):  # RATE: a fixed pool; each user paces itself (see `pacing_interval`)
        return users
    fraction = elapsed_s / duration_s
    if profile == STEP:
        stair = math.floor(fraction * STEPS) + 1
        return max(1, math.ceil(users * stair / STEPS))
    if profile == SPIKE:
        start, end = SPIKE_WINDOW
        return users if start <= fraction < end else max(1, math.ceil(users * SPIKE_BASELINE))
    raise ValueError(f"unknown load profile {profile!r}; choose one of {', '.join(PROFILES)}")


def pacing_interval(rate_per_s: float, users: int) -> float:
    """Seconds between one user's request starts so that `users` users together send `rate_per_s`."""
    if rate_per_s <= 0:
        raise ValueError("the request rate must be positive")
    return users / rate_per_s
