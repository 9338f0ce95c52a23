"""Locust load shapes, one per `tools.loadtest.profiles.Shape`; they read -u/-r/-t like plain runs do.

Locust picks the first shape it finds in a locustfile, so `locustfile.py` exports only the one named by
$LOADTEST_SHAPE (what `tools loadtest --shape` sets).
"""

from __future__ import annotations

from locust import LoadTestShape

from tools.loadtest.profiles import Shape, users_at


class ProfileShape(LoadTestShape):
    # Locust's shape metaclass makes every subclass that does not say otherwise concrete (abstract = False).
    abstract = True
    use_common_options = True
    profile = Shape.CONSTANT

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        users = users_at(self.profile, self.get_run_time(), options.num_users, options.run_time)
        return None if users is None else (users, options.spawn_rate)


class ConstantShape(ProfileShape):
    """-u users for the whole run."""

    profile = Shape.CONSTANT


class StepShape(ProfileShape):
    """A step ramp up to -u users in equal stairs."""

    profile = Shape.STEP


class SpikeShape(ProfileShape):
    """A quarter of -u users, a burst to all of them mid-run, then back."""

    profile = Shape.SPIKE


class RateShape(ProfileShape):
    """Open loop: a fixed pool of -u users, each pacing itself so that together they send --request-rate."""

    profile = Shape.RATE


BY_PROFILE: dict[Shape, type[ProfileShape]] = {
    shape.profile: shape for shape in (ConstantShape, StepShape, SpikeShape, RateShape)
}
