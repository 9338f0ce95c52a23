"""3xx: one model's config on its own: tensors, batching, queues, instances, warmup, sequences, decoupling."""

from __future__ import annotations

from collections.abc import Sequence

from tools.repository import ConfigFile, Model, model_config_pb2
from tools.validation.context import Context, Target, is_batching
from tools.validation.layout import PYTHON_BACKEND, WARMUP_DIR, effective_backend, model_file

DataType = model_config_pb2.DataType
InstanceKind = model_config_pb2.ModelInstanceGroup.Kind
Control = model_config_pb2.ModelSequenceBatching.Control
CORRID_TYPES = frozenset({DataType.TYPE_UINT64, DataType.TYPE_INT64, DataType.TYPE_UINT32, DataType.TYPE_INT32})
# Backends that fill in inputs/outputs from the model file when the config leaves them out.
AUTO_COMPLETING_BACKENDS = frozenset({"onnxruntime", "tensorflow", "tensorrt", "openvino"})


def segment_counts(dims: Sequence[int]) -> list[int]:
    """Element counts of the runs of fixed dimensions between variable (-1) ones."""
    counts, current = [], 1
    for dim in dims:
        if dim == -1:
            counts.append(current)
            current = 1
        else:
            current *= dim
    return [*counts, current]


def reshape_problem(dims: Sequence[int], shape: Sequence[int], batching: bool) -> str | None:
    """Why `reshape` cannot reinterpret `dims`, or None when it can."""
    if not shape:
        if not batching:
            return "an empty reshape is only allowed on a batching model"
        return None if segment_counts(dims) == [1] else "an empty reshape needs dims whose element count is 1"
    if segment_counts(dims) != segment_counts(shape):
        return (f"dims {list(dims)} and reshape {list(shape)} must hold the same number of elements, with -1 in "
                "matching places")
    return None


class _ModelChecks:
    """The checks of one config file; a class only so the many small checks share their arguments."""

    def __init__(self, ctx: Context, model: Model, config_file: ConfigFile):
        self.ctx, self.model, self.file, self.config = ctx, model, config_file, config_file.config

    def report(self, code: str, message: str, *path: str | int) -> None:
        self.ctx.report(code, message, self.model, self.file, tuple(path))

    def can_auto_complete(self) -> bool:
        config = self.config
        backend = effective_backend(config)
        if backend in AUTO_COMPLETING_BACKENDS:
            return True
        if backend == PYTHON_BACKEND:
            served = self.model.served_versions(config)
            filename = model_file(config)
            return bool(served) and self.ctx.python_model(self.model.versions[served[-1]].path / filename) \
                .has_auto_complete
        return False

    def tensors(self) -> None:
        config = self.config
        auto = None if self.model.is_ensemble else self.can_auto_complete()
        for kind, code, tensors in (("input", "W301", config.input), ("output", "W302", config.output)):
            if not tensors and not auto:
                self.report(code, f"no {kind}s declared and the backend cannot fill them in; add an `{kind}` "
                                  "entry per tensor.", kind)
            seen: set[str] = set()
            for index, tensor in enumerate(tensors):
                where = (kind, index)
                label = f"{kind} \"{tensor.name}\"" if tensor.name else f"{kind} #{index}"
                if not tensor.name:
                    self.report("E303", f"{label} has no name; give every {kind} a unique name.", *where)
                elif tensor.name in seen:
                    self.report("W303", f"{label} is declared twice; {kind} names must be unique.", *where, "name")
                seen.add(tensor.name)
                if tensor.data_type == DataType.TYPE_INVALID:
                    self.report("E304", f"{label} has no data_type; set one such as TYPE_FP32.", *where)
                if not tensor.dims:
                    self.report("E305", f"{label} has no dims; list its shape without the batch dimension, "
                                        "e.g. dims: [ -1 ].", *where)
                bad = [d for d in (*tensor.dims, *tensor.reshape.shape) if d < 1 and d != -1]
                if bad:
                    self.report("E306", f"{label} has dimension {bad[0]}; use integers >= 1, or -1 for a "
                                        "variable size.", *where, "dims")
                elif tensor.HasField("reshape"):
                    problem = reshape_problem(tensor.dims, tensor.reshape.shape, is_batching(config))
                    if problem:
                        self.report("E307", f"{label}: {problem}.", *where, "reshape")

    def batching(self) -> None:
        config = self.config
        if config.max_batch_size < 0:
            self.report("E308", f"max_batch_size is {config.max_batch_size}; use 0 (no batching) or a positive "
                                "size.", "max_batch_size")
        if not config.HasField("dynamic_batching"):
            return
        batcher = config.dynamic_batching
        if config.max_batch_size == 0:
            self.report("W309", "dynamic_batching is set but max_batch_size is 0, so no batch can form; set "
                                "max_batch_size or drop dynamic_batching.", "dynamic_batching")
        for size in batcher.preferred_batch_size:
            if not 0 < size <= config.max_batch_size:
                self.report("E310", f"preferred_batch_size {size} is outside 1..{config.max_batch_size} "
                                    "(max_batch_size); lower it or raise max_batch_size.",
                            "dynamic_batching", "preferred_batch_size")
        levels = batcher.priority_levels
        if levels and not 0 < batcher.default_priority_level <= levels:
            self.report("E311", f"default_priority_level must be in 1..{levels} (priority_levels).",
                        "dynamic_batching", "default_priority_level")
        wrong = sorted(level for level in batcher.priority_queue_policy if not 0 < level <= levels)
        if wrong:
            self.report("E311", f"priority_queue_policy names level(s) {wrong} outside 1..{levels} "
                                "(priority_levels).", "dynamic_batching", "priority_queue_policy")
        if batcher.preserve_ordering:
            policies = [batcher.default_queue_policy, *batcher.priority_queue_policy.values()]
            if levels > 1:
                self.report("E311", "preserve_ordering allows only one priority level; drop one of them.",
                            "dynamic_batching", "preserve_ordering")
            if any(p.default_timeout_microseconds and p.timeout_action == p.DELAY for p in policies):
                self.report("E311", "preserve_ordering cannot be combined with a DELAY timeout action; use REJECT.",
                            "dynamic_batching", "default_queue_policy")

    def instances(self) -> None:
        for index, group in enumerate(self.config.instance_group):
            label = f"instance_group #{index}" + (f" ({group.name})" if group.name else "")
            if group.count < 0:
                self.report("E312", f"{label} has count {group.count}; use a count >= 1.",
                            "instance_group", index, "count")
            if group.gpus and group.kind in (InstanceKind.KIND_CPU, InstanceKind.KIND_MODEL):
                self.report("E312", f"{label} is {InstanceKind.Name(group.kind)} but lists GPUs; drop `gpus` or "
                                    "use KIND_GPU.", "instance_group", index, "gpus")
            if group.profile and effective_backend(self.config) != "tensorrt":
                self.report("E312", f"{label} sets `profile`, which only TensorRT models have; drop it.",
                            "instance_group", index, "profile")
            if group.kind == InstanceKind.KIND_GPU and self.ctx.options.target is Target.CPU:
                self.report("E313", f"{label} is KIND_GPU but the target is CPU-only; use KIND_CPU (or validate "
                                    "with --target gpu).", "instance_group", index, "kind")

    def warmup(self) -> None:
        config = self.config
        inputs = {tensor.name: tensor for tensor in config.input}
        for index, warmup in enumerate(config.model_warmup):
            where = ("model_warmup", index)
            label = f"model_warmup \"{warmup.name}\"" if warmup.name else f"model_warmup #{index}"
            if warmup.batch_size > max(config.max_batch_size, 1):
                self.report("E314", f"{label} uses batch_size {warmup.batch_size}, more than the model accepts "
                                    f"({max(config.max_batch_size, 1)}).", *where, "batch_size")
            for name, sample in warmup.inputs.items():
                if name not in inputs:
                    self.report("E314", f"{label} feeds \"{name}\", which is not an input; use one of "
                                        f"{sorted(inputs)}.", *where, "inputs")
                    continue
                if sample.data_type != inputs[name].data_type:
                    self.report("E314", f"{label} feeds \"{name}\" as {DataType.Name(sample.data_type)} but the "
                                        f"input is {DataType.Name(inputs[name].data_type)}; make them agree.",
                                *where, "inputs")
                if sample.input_data_file and not (self.model.path / WARMUP_DIR / sample.input_data_file).is_file():
                    self.report("E314", f"{label} reads \"{sample.input_data_file}\", which is not in "
                                        f"{self.model.name}/{WARMUP_DIR}/; add the file.", *where, "inputs")
                if not sample.dims or any(d < 1 for d in sample.dims):
                    self.report("E314", f"{label} gives \"{name}\" dims {list(sample.dims)}; warmup needs a concrete "
                                        "shape (every dimension >= 1).", *where, "inputs")
            missing = sorted(n for n, t in inputs.items() if not t.optional and n not in warmup.inputs)
            if missing:
                self.report("E314", f"{label} does not feed required input(s) {missing}; add them.", *where)

    def sequences(self) -> None:
        config = self.config
        if not config.HasField("sequence_batching"):
            return
        batcher = config.sequence_batching
        seen_tensors: set[str] = set()
        seen_kinds: set[int] = set()
        for index, control_input in enumerate(batcher.control_input):
            where = ("sequence_batching", "control_input", index)
            if not control_input.name:
                self.report("E315", "a sequence control_input has no name; name the tensor.", *where)
            elif control_input.name in seen_tensors:
                self.report("E315", f"control tensor \"{control_input.name}\" is used for several controls; give "
                                    "each control its own tensor.", *where)
            seen_tensors.add(control_input.name)
            for control in control_input.control:
                kind = Control.Kind.Name(control.kind)
                if control.kind in seen_kinds:
                    self.report("E315", f"{kind} is specified more than once; keep one.", *where)
                seen_kinds.add(control.kind)
                if control.kind == Control.CONTROL_SEQUENCE_CORRID:
                    if control.data_type not in CORRID_TYPES:
                        self.report("E315", f"{kind} needs data_type TYPE_UINT64, TYPE_INT64, TYPE_UINT32 or "
                                            "TYPE_INT32.", *where)
                    continue
                given = [len(v) for v in (control.int32_false_true, control.fp32_false_true,
                                          control.bool_false_true) if len(v)]
                if given != [2]:
                    self.report("E315", f"{kind} needs exactly one of int32_false_true, fp32_false_true or "
                                        "bool_false_true, with two values (false, true).", *where)
        if batcher.HasField("oldest"):
            for size in batcher.oldest.preferred_batch_size:
                if not 0 < size <= config.max_batch_size:
                    self.report("E310", f"sequence preferred_batch_size {size} is outside 1..{config.max_batch_size} "
                                        "(max_batch_size).", "sequence_batching", "oldest")
        if batcher.HasField("direct") and not 0.0 <= batcher.direct.minimum_slot_utilization <= 1.0:
            self.report("E315", "minimum_slot_utilization must be within 0.0..1.0.", "sequence_batching", "direct")

    def decoupled(self) -> None:
        config = self.config
        if config.model_transaction_policy.decoupled and config.response_cache.enable:
            self.report("E316", "a decoupled model cannot use the response cache; disable response_cache or "
                                "decoupling.", "response_cache")


def check(ctx: Context) -> None:
    for model in ctx.repository.models.values():
        for config_file in ctx.config_files(model):
            checks = _ModelChecks(ctx, model, config_file)
            checks.tensors()
            checks.batching()
            checks.decoupled()
            if not model.is_ensemble:  # ensemble-only rules for these fields live in ensembles.py
                checks.instances()
                checks.warmup()
                checks.sequences()

