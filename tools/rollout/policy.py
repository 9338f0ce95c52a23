"""Version policies and ensemble pins as JSON configs (the form Triton's repository API reads and returns)."""

from __future__ import annotations

import copy


def with_policy(config: dict, versions: list[int]) -> dict:
    """`config` serving exactly `versions` (version_policy specific)."""
    changed = copy.deepcopy(config)
    changed["version_policy"] = {"specific": {"versions": sorted(versions)}}
    return changed


def policy_versions(config: dict, available: list[int]) -> list[int]:
    """The versions a JSON config's policy serves out of `available` (Triton's rule: latest 1 by default)."""
    policy = config.get("version_policy") or {}
    if "all" in policy:
        return sorted(available)
    if "specific" in policy:
        wanted = {int(v) for v in policy["specific"].get("versions", [])}
        return sorted(v for v in available if v in wanted)
    count = max(int((policy.get("latest") or {}).get("num_versions", 1) or 1), 1)
    return sorted(available)[-count:]


def ensemble_steps(config: dict, model: str) -> list[dict]:
    """The steps of an ensemble's JSON config that call `model`."""
    return [step for step in (config.get("ensemble_scheduling") or {}).get("step", [])
            if step.get("model_name") == model]


def pinned(config: dict, model: str, version: int) -> dict:
    """An ensemble config whose steps call `model` at `version` instead of its latest ready version."""
    changed = copy.deepcopy(config)
    for step in ensemble_steps(changed, model):
        step["model_version"] = str(version)
    return changed
