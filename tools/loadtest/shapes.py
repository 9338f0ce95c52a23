"""Locust load shapes, one per profile of `tools.loadtest.runner.profiles`; they read -u/-r/-t like plain runs do.

Locust picks the first shape it finds in a locustfile, so `locustfile.py` exports only the one named by
$LOADTEST_SHAPE (what `tools loadtest --shape` sets).
"""

from __future__ import annotations

from locust import LoadTestShape

from tools.loadtest import profiles as load_profiles


class ProfileShape(LoadTestShape):
    # Locust's shape metaclass makes every subclass that does not say otherwise concrete (abstract = False).
    abstract = True
    use_common_options = True
    profile = load_profiles.CONSTANT

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        users = load_profiles.users_at(self.profile, self.get_run_time(), options.num_users, options.run_time)
        return None if users is None else (users, options.spawn_rate)


class ConstantShape(ProfileShape):
    """-u users for the whole run."""

    profile = load_profiles.CONSTANT


class StepShape(ProfileShape):
    """A step ramp up to -u users in equal stairs."""

    profile = load_profiles.STEP


class SpikeShape(ProfileShape):
    """A quarter of -u users, a burst to all of them mid-run, then back."""

    profile = load_profiles.SPIKE


class RateShape(ProfileShape):
    """Open loop: a fixed pool of -u users, each pacing itself so that together they send --request-rate."""

    profile = load_profiles.RATE


BY_PROFILE: dict[str, type[ProfileShape]] = {
    shape.profile: shape for shape in (ConstantShape, StepShape, SpikeShape, RateShape)
}
