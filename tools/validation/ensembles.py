"""4xx: ensembles, checked the way Triton checks them at load time, plus clearer messages per step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tools.repository import ENSEMBLE_PLATFORM, Model, ModelConfig, model_config_pb2
from tools.validation.context import Context, is_batching
from tools.validation.findings import Step

DataType = model_config_pb2.DataType


@dataclass(frozen=True)
class TensorUse:
    """What one side (the ensemble's declaration or a step's model) says about an ensemble tensor."""

    source: str  # e.g. "ensemble input" or "step 1 (encoder) input IDS"
    data_type: int
    dims: tuple[int, ...]
    batching: bool

    @property
    def full_dims(self) -> tuple[int, ...]:
        return (-1, *self.dims) if self.batching else self.dims


def _same_dims(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def shapes_agree(a: TensorUse, b: TensorUse) -> bool:
    """Shapes match dimension by dimension (-1 matches anything), with or without the batch dimension."""
    return _same_dims(a.dims, b.dims) or _same_dims(a.full_dims, b.full_dims)


def _declared_dims(tensor) -> tuple[int, ...]:
    return tuple(tensor.reshape.shape) if tensor.HasField("reshape") else tuple(tensor.dims)


class _EnsembleChecks:
    """Checks of one ensemble; a class only so the checks share the ensemble, its steps and the sink."""

    def __init__(self, ctx: Context, model: Model):
        self.ctx, self.model, self.config = ctx, model, model.config
        self.steps = list(self.config.ensemble_scheduling.step)

    def report(self, code: str, message: str, *path: str | int, step: int | None = None) -> None:
        label = None if step is None else Step(step, self.steps[step].model_name)
        if step is not None and not path:
            path = ("ensemble_scheduling", "step", step)
        self.ctx.report(code, message, self.model, self.model.config_file, tuple(path), step=label)

    def composing(self, index: int) -> ModelConfig | None:
        model = self.ctx.repository.models.get(self.steps[index].model_name)
        return model.config if model is not None else None

    def structure(self) -> bool:
        """Platform, forbidden fields and step completeness; False when nothing more can be checked."""
        config = self.config
        if config.platform != ENSEMBLE_PLATFORM:
            self.report("E401", f"ensemble_scheduling is set but platform is \"{config.platform}\"; set platform: "
                                "\"ensemble\".", "platform")
            return False
        if not config.HasField("ensemble_scheduling"):
            self.report("E401", "platform is \"ensemble\" but there is no ensemble_scheduling; add its steps.",
                        "platform")
            return False
        for name, present in (("instance_group", bool(config.instance_group)),
                              ("optimization", config.HasField("optimization")),
                              ("model_warmup", bool(config.model_warmup))):
            if present:
                self.report("E402", f"an ensemble cannot set {name}; set it on the composing models instead.", name)
        if config.backend:
            self.report("E419", f"an ensemble cannot set a backend (\"{config.backend}\"); drop `backend` and keep "
                                "platform \"ensemble\".", "backend")
        if not self.steps:
            self.report("E403", "the ensemble has no steps; add at least one step.", "ensemble_scheduling")
            return False
        complete = True
        for index, step in enumerate(self.steps):
            missing = [name for name, value in (("model_name", step.model_name), ("input_map", step.input_map),
                                                ("output_map", step.output_map)) if not value]
            if missing:
                self.report("E403", f"step {index} lacks {', '.join(missing)}; every step needs a model, an "
                                    "input_map and an output_map.", step=index)
                complete = False
        return complete

    def steps_against_models(self) -> None:
        repository = self.ctx.repository
        for index, step in enumerate(self.steps):
            target = repository.models.get(step.model_name)
            if target is None:
                self.report("E404", f"step {index} calls model \"{step.model_name}\", which is not in the repository; "
                                    "fix the name or add the model.", step=index)
                continue
            config = target.config
            if config is None:
                continue  # the composing model's own findings say why
            # Only -1 means "the latest"; any other number, negative ones included, must be a served version.
            if step.model_version != -1 and step.model_version not in target.served_versions():
                omitted = " (an omitted model_version means 0, not the latest)" if step.model_version == 0 else ""
                self.report("E405", f"step {index} asks for version {step.model_version} of \"{step.model_name}\""
                                    f"{omitted}, which serves {target.served_versions() or 'no version'}; set "
                                    "model_version: -1 (latest) or a served version.", step=index)
            inputs = {tensor.name: tensor for tensor in config.input}
            outputs = {tensor.name for tensor in config.output}
            for key in step.input_map:
                if key not in inputs:
                    self.report("E406", f"step {index} maps input \"{key}\", but \"{step.model_name}\" has inputs "
                                        f"{sorted(inputs)}; map one of those.", step=index)
            for key in step.output_map:
                if key not in outputs:
                    self.report("E407", f"step {index} maps output \"{key}\", but \"{step.model_name}\" has outputs "
                                        f"{sorted(outputs)}; map one of those.", step=index)
            for name, tensor in inputs.items():
                if name not in step.input_map and not tensor.optional:
                    self.report("E408", f"step {index} does not map required input \"{name}\" of "
                                        f"\"{step.model_name}\"; add it to input_map.", step=index)
            if config.max_batch_size > 0 and config.max_batch_size < self.config.max_batch_size:
                self.report("E417", f"the ensemble allows batches of {self.config.max_batch_size} but step {index}'s "
                                    f"\"{step.model_name}\" only {config.max_batch_size}; lower the ensemble's "
                                    "max_batch_size.", step=index)

    def data_flow(self) -> list[int]:
        """Producers, consumers, reachability and cycles; returns the steps in an order they can run."""
        config = self.config
        inputs = [tensor.name for tensor in config.input]
        outputs = [tensor.name for tensor in config.output]
        producers: dict[str, list[int]] = {}
        consumers: dict[str, list[int]] = {}
        for index, step in enumerate(self.steps):
            for tensor in step.output_map.values():
                producers.setdefault(tensor, []).append(index)
            for tensor in step.input_map.values():
                consumers.setdefault(tensor, []).append(index)
        for tensor, indices in producers.items():
            if len(indices) > 1:
                by = ", ".join(f"step {i}" for i in indices) + (" and the ensemble input" if tensor in inputs else "")
                self.report("E411", f"tensor \"{tensor}\" is produced by {by}; rename all but one.",
                            step=indices[-1])
            elif tensor in inputs:
                # Triton loads this, leaving the tensor with two sources: the request and the step.
                self.report("W420", f"step {indices[0]} writes ensemble input \"{tensor}\", which then has two "
                                    "sources; write to a tensor of its own.",
                            step=indices[0])
        for name in inputs:
            if name not in consumers:
                self.report("E409", f"ensemble input \"{name}\" is not used by any step; map it or remove it.",
                            "input")
        for name in outputs:
            if name not in producers:
                self.report("E410", f"ensemble output \"{name}\" is not produced by any step; map a step output to "
                                    "it or remove it.", "output")
        for tensor, indices in consumers.items():
            if tensor not in producers and tensor not in inputs:
                self.report("E413", f"step {indices[0]} consumes \"{tensor}\", which is neither an ensemble input nor "
                                    "any step's output; fix the name.", step=indices[0])
        for tensor, indices in producers.items():
            if tensor not in consumers and tensor not in outputs:
                self.report("E412", f"step {indices[0]} produces \"{tensor}\", which nothing uses; consume it, make it "
                                    "an ensemble output, or drop it from output_map.", step=indices[0])
        # Run order: a step runs once every tensor it reads is ready.
        ready, order = set(inputs), []
        pending = list(range(len(self.steps)))
        progress = True
        while pending and progress:
            progress = False
            for index in list(pending):
                if all(t in ready for t in self.steps[index].input_map.values()):
                    order.append(index)
                    pending.remove(index)
                    ready.update(self.steps[index].output_map.values())
                    progress = True
        cyclic = [i for i in pending if all(t in producers or t in inputs for t in self.steps[i].input_map.values())]
        if cyclic and self._has_cycle(cyclic):
            names = ", ".join(f"{i} ({self.steps[i].model_name})" for i in cyclic)
            self.report("E414", f"steps {names} wait on each other's outputs; break the cycle.", step=cyclic[0])
        return order

    def _has_cycle(self, candidates: list[int]) -> bool:
        produced_by = {t: i for i in candidates for t in self.steps[i].output_map.values()}
        edges = {i: {produced_by[t] for t in self.steps[i].input_map.values() if t in produced_by}
                 for i in candidates}
        state: dict[int, int] = {}  # 1 visiting, 2 done

        def visit(node: int) -> bool:
            state[node] = 1
            for nxt in edges[node]:
                if state.get(nxt) == 1 or (nxt not in state and visit(nxt)):
                    return True
            state[node] = 2
            return False

        return any(node not in state and visit(node) for node in candidates)

    def types_and_shapes(self) -> None:
        """Every mention of an ensemble tensor must agree with its first mention, as in Triton."""
        config = self.config
        seen: dict[str, TensorUse] = {}

        def meet(tensor: str, use: TensorUse, step: int | None) -> None:
            first = seen.setdefault(tensor, use)
            if first is use:
                return
            if first.data_type != use.data_type:
                self.report("E415", f"tensor \"{tensor}\" is {DataType.Name(first.data_type)} in {first.source} but "
                                    f"{DataType.Name(use.data_type)} in {use.source}; make them agree.", step=step)
            elif not shapes_agree(first, use):
                self.report("E416", f"tensor \"{tensor}\" has shape {list(first.full_dims)} in {first.source} but "
                                    f"{list(use.full_dims)} in {use.source}; make them agree (batch dimension "
                                    "included).", step=step)

        batching = is_batching(config)
        for kind, tensors in (("input", config.input), ("output", config.output)):
            for tensor in tensors:
                meet(tensor.name, TensorUse(f"the ensemble {kind}", tensor.data_type, _declared_dims(tensor),
                                            batching), None)
        for index, step in enumerate(self.steps):
            target = self.composing(index)
            if target is None:
                continue
            declared = {"input": {t.name: t for t in target.input}, "output": {t.name: t for t in target.output}}
            for kind, mapping in (("input", step.input_map), ("output", step.output_map)):
                for key, tensor in mapping.items():
                    model_tensor = declared[kind].get(key)
                    # A tensor without a type or dims is reported on its own model; do not echo it here.
                    if model_tensor is not None and model_tensor.data_type and model_tensor.dims:
                        meet(tensor, TensorUse(f"step {index} ({step.model_name}) {kind} {key}", model_tensor.data_type,
                                               tuple(model_tensor.dims), is_batching(target)), index)

    def decoupled_branches(self, order: list[int]) -> None:
        """A step (or the ensemble's outputs) must not join tensors that come from different decoupled steps."""
        label = dict.fromkeys((tensor.name for tensor in self.config.input), 0)
        next_label = 0
        for index in order:
            step = self.steps[index]
            labels = {label[t] for t in step.input_map.values() if t in label}
            if len(labels) > 1:
                self.report("E418", f"step {index} ({step.model_name}) joins tensors from different decoupled steps, "
                                    "whose responses do not line up; restructure the ensemble.", step=index)
            out_label = min(labels, default=0)
            if is_decoupled(self.ctx, step.model_name):
                next_label += 1
                out_label = next_label
            label.update(dict.fromkeys(step.output_map.values(), out_label))
        if len({label[t.name] for t in self.config.output if t.name in label}) > 1:
            self.report("E418", "the ensemble's outputs come from different decoupled steps, whose responses do not "
                                "line up; restructure the ensemble.", "output")


def is_decoupled(ctx: Context, name: str, seen: frozenset[str] = frozenset()) -> bool:
    """Decoupled itself, or an ensemble with a decoupled model anywhere inside (Triton marks those decoupled)."""
    model = ctx.repository.models.get(name)
    if model is None or model.config is None or name in seen:
        return False
    if model.config.model_transaction_policy.decoupled:
        return True
    return model.is_ensemble and any(is_decoupled(ctx, inner, seen | {name})
                                     for inner in ctx.repository.composing_models(name))


def _nesting_cycle(ctx: Context, name: str) -> list[str] | None:
    """The chain of ensembles leading from `name` back to itself, if there is one."""
    repository = ctx.repository
    stack, seen = [(name, [name])], set()
    while stack:
        current, chain = stack.pop()
        for dependency in repository.composing_models(current):
            if dependency == name:
                return [*chain, name]
            if dependency not in seen and dependency in repository.models \
                    and repository.models[dependency].is_ensemble:
                seen.add(dependency)
                stack.append((dependency, [*chain, dependency]))
    return None


def check(ctx: Context) -> None:
    for model in ctx.repository.models.values():
        if not model.is_ensemble:
            continue
        checks = _EnsembleChecks(ctx, model)
        if not checks.structure():
            continue
        cycle = _nesting_cycle(ctx, model.name)
        if cycle:
            checks.report("E414", f"ensembles call each other in a loop ({' -> '.join(cycle)}); break it.",
                          "ensemble_scheduling")
            continue
        checks.steps_against_models()
        order = checks.data_flow()
        checks.types_and_shapes()
        checks.decoupled_branches(order)
