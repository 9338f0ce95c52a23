"""The settings the tuner turns, read from and written into a model's config (`ModelConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from google.protobuf import json_format

from tools.repository import ModelConfig

THREADS_PARAMETER = "intra_op_threads"  # ONNX Runtime threads per encoder instance (model_repository/encoder)


@dataclass(frozen=True)
class Knobs:
    """One model's tunable settings; None where the model has no such setting (no batcher, no thread parameter)."""

    instances: int
    threads: int | None = None
    delay_us: int | None = None

    @property
    def cores(self) -> int:
        """Cores the model's instances may keep busy at once."""
        return self.instances * (self.threads or 1)

    def describe(self) -> str:
        parts = [f"{self.instances} inst"]
        if self.threads is not None:
            parts.append(f"{self.threads} thr")
        if self.delay_us is not None:
            parts.append(f"delay {self.delay_us} us")
        return ", ".join(parts)


Setting = dict[str, Knobs]  # model -> its knobs: one point of the search


def read(config: ModelConfig) -> Knobs:
    instances = sum(max(group.count, 1) for group in config.instance_group) or 1
    threads = None
    if THREADS_PARAMETER in config.parameters:
        threads = int(config.parameters[THREADS_PARAMETER].string_value or 1)
    delay = config.dynamic_batching.max_queue_delay_microseconds if config.HasField("dynamic_batching") else None
    return Knobs(instances, threads, delay)


def write(config: ModelConfig, knobs: Knobs) -> ModelConfig:
    """A copy of `config` carrying `knobs` (instances go to the first instance group, which must be the only one)."""
    changed = ModelConfig()
    changed.CopyFrom(config)
    if knobs.instances != read(config).instances:
        if len(changed.instance_group) > 1:
            raise ValueError(f"{config.name} has {len(changed.instance_group)} instance groups: cannot resize them")
        if not changed.instance_group:
            changed.instance_group.add()
        changed.instance_group[0].count = knobs.instances
    if knobs.threads is not None:
        changed.parameters[THREADS_PARAMETER].string_value = str(knobs.threads)
    if knobs.delay_us is not None:
        changed.dynamic_batching.max_queue_delay_microseconds = knobs.delay_us
    return changed


def as_override(config: ModelConfig) -> dict:
    """The JSON Triton's load API takes as a config override (protobuf's JSON mapping, field names as in pbtxt)."""
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def with_change(setting: Setting, model: str, **change: int) -> Setting:
    return {**setting, model: replace(setting[model], **change)}


def describe_change(before: Setting, after: Setting) -> str:
    """'encoder instances 2 -> 3' for every knob that differs."""
    changes = []
    for model, knobs in after.items():
        old = before[model]
        for field in ("instances", "threads", "delay_us"):
            if getattr(old, field) != getattr(knobs, field):
                changes.append(f"{model} {field} {getattr(old, field)} -> {getattr(knobs, field)}")
    return ", ".join(changes) or "none"
