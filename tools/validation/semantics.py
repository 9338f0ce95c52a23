"""3xx: one model's config on its own: tensors, batching, queues, instances, warmup, sequences, decoupling."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tools.repository import ConfigFile, Model, model_config_pb2
from tools.validation.context import Context, Target, is_batching
from tools.validation.layout import PYTHON_BACKEND, WARMUP_DIR, effective_backend, model_file

DataType = model_config_pb2.DataType
InstanceKind = model_config_pb2.ModelInstanceGroup.Kind
Control = model_config_pb2.ModelSequenceBatching.Control
BatchInputKind = model_config_pb2.BatchInput.Kind
InputFormat = model_config_pb2.ModelInput.Format
CORRID_TYPES = frozenset({DataType.TYPE_UINT64, DataType.TYPE_INT64, DataType.TYPE_UINT32, DataType.TYPE_INT32,
                          DataType.TYPE_STRING})
BATCH_INPUT_TYPES = frozenset({DataType.TYPE_INT32, DataType.TYPE_FP32})
# Bytes per element as Triton sizes warmup data (TYPE_STRING has no fixed size).
ELEMENT_BYTES = {
    DataType.TYPE_BOOL: 1, DataType.TYPE_UINT8: 1, DataType.TYPE_INT8: 1,
    DataType.TYPE_UINT16: 2, DataType.TYPE_INT16: 2, DataType.TYPE_FP16: 2, DataType.TYPE_BF16: 2,
    DataType.TYPE_UINT32: 4, DataType.TYPE_INT32: 4, DataType.TYPE_FP32: 4,
    DataType.TYPE_UINT64: 8, DataType.TYPE_INT64: 8, DataType.TYPE_FP64: 8,
}
# Repository agents published with Triton releases (Triton looks for repoagents/<name>/libtritonrepoagent_<name>.so).
SHIPPED_REPOSITORY_AGENTS = frozenset({"checksum"})
INITIAL_STATE_DIR = "initial_state"  # where a sequence state's initial_state data_file lives
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


def dims_fit(config_dims: Sequence[int], sample_dims: Sequence[int]) -> bool:
    """Whether a concrete shape fits declared dims: same rank, every fixed dimension equal."""
    return len(config_dims) == len(sample_dims) and all(c in (-1, s) for c, s in zip(config_dims, sample_dims,
                                                                                      strict=True))


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
                self.layout(label, tensor, where)
        self.batch_io()

    def layout(self, label: str, tensor, where: tuple[str, int]) -> None:
        """Shape tensors, non-linear formats and image formats: TensorRT-only flags and their rank."""
        tensorrt = effective_backend(self.config) == "tensorrt"
        for flag in ("is_shape_tensor", "is_non_linear_format_io"):
            if getattr(tensor, flag) and not tensorrt:
                self.report("E322", f"{label} sets {flag}, which only TensorRT models support; drop it.",
                            *where, flag)
        if tensor.is_non_linear_format_io and tensorrt and len(tensor.dims) != 3:
            self.report("E323", f"{label} is a non-linear format tensor with {len(tensor.dims)} dims; it needs "
                                "exactly 3.", *where, "dims")
        image = getattr(tensor, "format", InputFormat.FORMAT_NONE) != InputFormat.FORMAT_NONE
        if image and len(tensor.dims) != 3:
            self.report("E323", f"{label} has format {InputFormat.Name(tensor.format)} with {len(tensor.dims)} dims; "
                                "NHWC/NCHW needs exactly 3 (without the batch dimension).", *where, "format")

    def _one_known_source(self, code: str, label: str, sources: Sequence[str], inputs: set[str],
                          where: tuple[str, int]) -> None:
        """Triton's rule for a batch input or output: exactly one source, and it is one of the model's inputs."""
        if len(sources) != 1:
            self.report(code, f"{label} lists {len(sources)} source inputs; it needs exactly one.", *where,
                        "source_input")
        for source in sources:
            if source not in inputs:
                self.report(code, f"{label} reads source input \"{source}\", which is not an input; use one of "
                                  f"{sorted(inputs)}.", *where, "source_input")

    def batch_io(self) -> None:
        """batch_input and batch_output: one source each, sources among the inputs, targets among the outputs."""
        config = self.config
        inputs = {tensor.name for tensor in config.input}
        outputs = {tensor.name for tensor in config.output}
        for index, batch_input in enumerate(config.batch_input):
            where = ("batch_input", index)
            label = f"batch_input \"{batch_input.target_name[0]}\"" if batch_input.target_name \
                else f"batch_input #{index}"
            kind = BatchInputKind.Name(batch_input.kind)
            self._one_known_source("E320", f"{label} of kind {kind}", batch_input.source_input, inputs, where)
            if batch_input.data_type not in BATCH_INPUT_TYPES:
                self.report("E320", f"{label} has data_type {DataType.Name(batch_input.data_type)}; a batch input "
                                    "must be TYPE_INT32 or TYPE_FP32.", *where, "data_type")
        for index, batch_output in enumerate(config.batch_output):
            where = ("batch_output", index)
            label = f"batch_output #{index}"
            self._one_known_source("E321", label, batch_output.source_input, inputs, where)
            seen: set[str] = set()
            for target in batch_output.target_name:
                if target not in outputs:
                    self.report("E321", f"{label} targets \"{target}\", which is not an output; use one of "
                                        f"{sorted(outputs)}.", *where, "target_name")
                elif target in seen:
                    self.report("E321", f"{label} names target \"{target}\" twice; list each output once.",
                                *where, "target_name")
                seen.add(target)

    def batching(self) -> None:
        config = self.config
        if config.max_batch_size < 0:
            self.report("E308", f"max_batch_size is {config.max_batch_size}; use 0 (no batching) or a positive "
                                "size.", "max_batch_size")
        if not config.HasField("dynamic_batching"):
            return
        batcher = config.dynamic_batching
        # A model that does not batch may keep dynamic_batching for its queue policy: the only way to get one.
        if config.max_batch_size == 0 and not (batcher.HasField("default_queue_policy") or batcher.priority_levels):
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
        # Triton checks the levels of priority_queue_policy only when priority_levels is set; else it ignores them.
        wrong = sorted(level for level in batcher.priority_queue_policy if levels and not 0 < level <= levels)
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
                self.report("W327", f"{label} has count {group.count}, which Triton replaces by the backend's "
                                    "default (1 for Python); set the count you mean (>= 1).",
                            "instance_group", index, "count")
            # Without GPUs Triton turns KIND_AUTO into KIND_CPU before it checks the group.
            cpu_kinds = (InstanceKind.KIND_CPU, InstanceKind.KIND_MODEL) + (
                (InstanceKind.KIND_AUTO,) if self.ctx.options.target is Target.CPU else ())
            if group.gpus and group.kind in cpu_kinds:
                kind = "KIND_AUTO (KIND_CPU on a CPU-only target)" if group.kind == InstanceKind.KIND_AUTO else \
                    InstanceKind.Name(group.kind)
                self.report("E312", f"{label} is {kind} but lists GPUs; drop `gpus` or use KIND_GPU.",
                            "instance_group", index, "gpus")
            if group.profile and effective_backend(self.config) != "tensorrt":
                self.report("E312", f"{label} sets `profile`, which only TensorRT models have; drop it.",
                            "instance_group", index, "profile")
            if group.kind == InstanceKind.KIND_GPU and self.ctx.options.target is Target.CPU:
                self.report("E313", f"{label} is KIND_GPU but the target is CPU-only; use KIND_CPU (or validate "
                                    "with --target gpu).", "instance_group", index, "kind")

    def warmup(self) -> None:
        config = self.config
        inputs = {tensor.name: tensor for tensor in config.input}
        # Sequence controls and implicit states are not declared inputs, yet a warmup sample may feed them.
        batcher = config.sequence_batching
        extra = {c.name for c in batcher.control_input} | {s.input_name for s in batcher.state}
        for index, warmup in enumerate(config.model_warmup):
            where = ("model_warmup", index)
            label = f"model_warmup \"{warmup.name}\"" if warmup.name else f"model_warmup #{index}"
            if warmup.batch_size > max(config.max_batch_size, 1):
                self.report("E314", f"{label} uses batch_size {warmup.batch_size}, more than the model accepts "
                                    f"({max(config.max_batch_size, 1)}); lower batch_size or raise max_batch_size.",
                            *where, "batch_size")
            for name, sample in warmup.inputs.items():
                if name not in inputs:
                    if name not in extra:
                        self.report("W330", f"{label} feeds \"{name}\", which is not an input, sequence control "
                                            "or state (Triton passes it on as an extra tensor); use one of "
                                            f"{sorted(inputs)}.", *where, "inputs")
                    continue
                if sample.data_type != inputs[name].data_type:
                    self.report("E314", f"{label} feeds \"{name}\" as {DataType.Name(sample.data_type)} but the "
                                        f"input is {DataType.Name(inputs[name].data_type)}; make them agree.",
                                *where, "inputs")
                data_file = self.model.path / WARMUP_DIR / sample.input_data_file
                if sample.input_data_file and not data_file.is_file():
                    self.report("E314", f"{label} reads \"{sample.input_data_file}\", which is not in "
                                        f"{self.model.name}/{WARMUP_DIR}/; add the file.", *where, "inputs")
                if sample.WhichOneof("input_data_type") is None:
                    self.report("E318", f"{label} gives \"{name}\" no data; set zero_data, random_data or "
                                        "input_data_file.", *where, "inputs")
                if any(d < 0 for d in sample.dims):
                    self.report("E314", f"{label} gives \"{name}\" dims {list(sample.dims)}; warmup needs a concrete "
                                        "shape (every dimension a size >= 0, not -1).", *where, "inputs")
                    continue
                declared = inputs[name].dims
                if not dims_fit(declared, sample.dims):
                    self.report("E317", f"{label} gives \"{name}\" shape {list(sample.dims)}, which does not fit its "
                                        f"dims {list(declared)}; give the same rank and the fixed sizes.",
                                *where, "inputs")
                needed = math.prod(sample.dims) * ELEMENT_BYTES.get(sample.data_type, 0)
                size = data_file.stat().st_size if sample.input_data_file and data_file.is_file() else needed
                if size < needed:
                    self.report("E319", f"{label} reads {size} bytes from "
                                        f"\"{sample.input_data_file}\" but shape {list(sample.dims)} of "
                                        f"{DataType.Name(sample.data_type)} needs {needed}; make the file match.",
                                *where, "inputs")
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
                        self.report("E315", f"{kind} needs data_type TYPE_UINT64, TYPE_INT64, TYPE_UINT32, "
                                            "TYPE_INT32 or TYPE_STRING.", *where)
                    if control.int32_false_true or control.fp32_false_true or control.bool_false_true:
                        self.report("E315", f"{kind} takes a data_type, not false/true values; drop them.", *where)
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
        self.states()

    def states(self) -> None:
        """Implicit sequence state: its optional initial value must fit it, and growable memory needs GPUs."""
        seeded: set[str] = set()
        # With no group (or KIND_AUTO), Triton places instances on GPUs only when the target has them.
        kinds = [group.kind for group in self.config.instance_group] or [InstanceKind.KIND_AUTO]
        gpu_target = self.ctx.options.target is Target.GPU
        gpu_only = all(k == InstanceKind.KIND_GPU or (k == InstanceKind.KIND_AUTO and gpu_target) for k in kinds)
        for index, state in enumerate(self.config.sequence_batching.state):
            where = ("sequence_batching", "state", index)
            label = f"sequence state \"{state.input_name}\""
            # Triton checks these only when a sequence starts, so the model loads and then fails every sequence.
            if state.use_growable_memory and not state.use_same_buffer_for_input_output:
                self.report("W329", f"{label} sets use_growable_memory without use_same_buffer_for_input_output, so "
                                    "every sequence will fail; set both or neither.", *where)
            elif state.use_growable_memory and not gpu_only:
                self.report("W329", f"{label} sets use_growable_memory, which works only with KIND_GPU instances, so "
                                    "every sequence will fail; drop it.", *where)
            if len(state.initial_state) > 1:
                self.report("E328", f"{label} has {len(state.initial_state)} initial_state entries; keep at most one.",
                            *where, "initial_state")
                continue
            for initial in state.initial_state:
                problem = self.initial_state_problem(state, initial, seeded)
                if problem:
                    self.report("E328", f"{label}: {problem}.", *where, "initial_state")
                seeded.add(state.input_name)

    def initial_state_problem(self, state, initial, seeded: set[str]) -> str | None:
        """The first thing Triton's sequence batcher refuses in one initial_state (it stops there too), if any."""
        if initial.data_type != state.data_type:
            return (f"initial_state is {DataType.Name(initial.data_type)} but the state is "
                     f"{DataType.Name(state.data_type)}; make them agree")
        if not initial.name:
            return "initial_state has no name; name it"
        if state.input_name in seeded:
            return "another state with the same input_name already has an initial_state; rename one"
        if len(initial.dims) != len(state.dims):
            return (f"initial_state dims {list(initial.dims)} and state dims {list(state.dims)} differ in rank; give "
                     "the same number of dimensions")
        if any(d == -1 for d in initial.dims):
            return f"initial_state dims {list(initial.dims)} must be concrete; replace -1 by a size"
        if not dims_fit(state.dims, initial.dims):
            return (f"initial_state dims {list(initial.dims)} do not match state dims {list(state.dims)}; use the "
                     "fixed sizes")
        source = initial.WhichOneof("state_data")
        if source is None:
            return "initial_state has no data; set zero_data or data_file"
        if source == "data_file":
            path = self.model.path / INITIAL_STATE_DIR / initial.data_file
            needed = math.prod(initial.dims) * ELEMENT_BYTES.get(initial.data_type, 0)
            if not path.is_file():
                return (f"initial_state reads \"{initial.data_file}\", which is not in "
                         f"{self.model.name}/{INITIAL_STATE_DIR}/; add the file")
            if path.stat().st_size < needed:
                return (f"initial_state file \"{initial.data_file}\" holds {path.stat().st_size} bytes but the state "
                         f"needs {needed}; make the file match")
        return None

    def decoupled(self) -> None:
        config = self.config
        if config.model_transaction_policy.decoupled and config.response_cache.enable:
            self.report("E316", "a decoupled model cannot use the response cache; disable response_cache or "
                                "decoupling.", "response_cache")
        if config.HasField("sequence_batching") and config.response_cache.enable:
            self.report("E325", "a model with sequence batching cannot use the response cache; disable "
                                "response_cache.", "response_cache")

    def repository_agents(self) -> None:
        """Repository agents are shared libraries on the server; only the checksum agent ships with Triton."""
        for index, agent in enumerate(self.config.model_repository_agents.agents):
            if agent.name not in SHIPPED_REPOSITORY_AGENTS:
                self.report("W331", f"repository agent \"{agent.name}\" is not one Triton ships "
                                    f"({', '.join(sorted(SHIPPED_REPOSITORY_AGENTS))}); install it under "
                                    f"repoagents/{agent.name}/ on every server or drop it.",
                            "model_repository_agents", "agents", index)


def check(ctx: Context) -> None:
    for model in ctx.repository.models.values():
        for config_file in ctx.config_files(model):
            checks = _ModelChecks(ctx, model, config_file)
            checks.tensors()
            checks.batching()
            checks.decoupled()
            checks.repository_agents()
            if not model.is_ensemble:  # ensemble-only rules for these fields live in ensembles.py
                checks.instances()
                checks.warmup()
                checks.sequences()

