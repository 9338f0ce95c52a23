"""The settings the tuner turns, read from and written into a model's config (`ModelConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from google.protobuf import json_format

from tools.repository import ModelConfig

THREADS_PARAMETER = "intra_op_threads"  # ONNX Runtime threads per encoder instance (model_repository/encoder)
BUCKETS_PARAMETER = "length_buckets"  # lengths the tokenizer pads a request to (model_repository/tokenizer)
FIELDS = ("instances", "threads", "delay_us", "buckets", "preferred", "queue_size")


@dataclass(frozen=True)
class Knobs:
    """One model's tunable settings; None where the model has no such setting (no batcher, no thread parameter)."""

    instances: int
    threads: int | None = None
    delay_us: int | None = None
    buckets: str | None = None  # the length_buckets parameter ("" pads each request to its own longest text)
    preferred: tuple[int, ...] | None = None  # the batcher's preferred_batch_size (empty: none)
    queue_size: int | None = None  # the batcher's default_queue_policy.max_queue_size (0: unbounded)

    @classmethod
    def from_dict(cls, data: dict) -> Knobs:
        """The inverse of `__dict__` as a report stores it (JSON turns the preferred sizes into a list)."""
        preferred = data.get("preferred")
        return cls(**{**data, "preferred": tuple(preferred) if preferred is not None else None})

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
        if self.preferred:
            parts.append(f"preferred {','.join(map(str, self.preferred))}")
        if self.queue_size:
            parts.append(f"queue {self.queue_size}")
        if self.buckets:
            parts.append(f"buckets {self.buckets}")
        return ", ".join(parts)


Setting = dict[str, Knobs]  # model -> its knobs: one point of the search


def read(config: ModelConfig) -> Knobs:
    instances = sum(max(group.count, 1) for group in config.instance_group) or 1
    threads = None
    if THREADS_PARAMETER in config.parameters:
        threads = int(config.parameters[THREADS_PARAMETER].string_value or 1)
    buckets = config.parameters[BUCKETS_PARAMETER].string_value if BUCKETS_PARAMETER in config.parameters else None
    if not config.HasField("dynamic_batching"):
        return Knobs(instances, threads, buckets=buckets)
    batching = config.dynamic_batching
    return Knobs(instances, threads, batching.max_queue_delay_microseconds, buckets,
                 tuple(batching.preferred_batch_size), batching.default_queue_policy.max_queue_size)


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
    if knobs.buckets is not None:
        changed.parameters[BUCKETS_PARAMETER].string_value = knobs.buckets
    if knobs.preferred is not None and knobs.preferred != read(config).preferred:
        changed.dynamic_batching.ClearField("preferred_batch_size")
        changed.dynamic_batching.preferred_batch_size.extend(knobs.preferred)
    if knobs.queue_size is not None and knobs.queue_size != read(config).queue_size:
        changed.dynamic_batching.default_queue_policy.max_queue_size = knobs.queue_size
    return changed


def as_override(config: ModelConfig) -> dict:
    """The JSON Triton's load API takes as a config override (protobuf's JSON mapping, field names as in pbtxt)."""
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def with_change(setting: Setting, model: str, **change: int | str | tuple[int, ...]) -> Setting:
    return {**setting, model: replace(setting[model], **change)}


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return f'"{value}"' if isinstance(value, str) else str(value)


def describe_change(before: Setting, after: Setting) -> str:
    """'encoder instances 2 -> 3' for every knob that differs."""
    changes = []
    for model, knobs in after.items():
        old = before[model]
        for field in FIELDS:
            if getattr(old, field) != getattr(knobs, field):
                changes.append(f"{model} {field} {_shown(getattr(old, field))} -> {_shown(getattr(knobs, field))}")
    return ", ".join(changes) or "none"
