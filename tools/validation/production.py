"""5xx: configs Triton loads that will still hurt in production (warnings, each silenceable)."""

from __future__ import annotations

from tools.repository import Model
from tools.validation.context import Context, is_batching
from tools.validation.findings import Step
from tools.validation.layout import PYTHON_BACKEND, effective_backend


def check(ctx: Context) -> None:
    cores = ctx.options.cores
    for model in ctx.repository.models.values():
        config = model.config
        if config is None:
            continue
        if len(model.versions) > 1 and config.version_policy.WhichOneof("policy_choice") != "specific":
            ctx.report("W504", f"{len(model.versions)} versions on disk and the policy serves the latest, so a new "
                               "folder changes what is served; pin them with version_policy { specific { ... } }.",
                       model, path=("version_policy",))
        if model.is_ensemble:
            if is_batching(config):
                for index, step in enumerate(config.ensemble_scheduling.step):
                    target = ctx.repository.models.get(step.model_name)
                    if target is not None and target.config is not None and target.config.max_batch_size == 0:
                        ctx.report("W503", f"the ensemble batches but step {index}'s \"{step.model_name}\" does not "
                                           "(max_batch_size 0), so it sees one request at a time; let it batch.",
                                   model, path=("ensemble_scheduling", "step", index),
                                   step=Step(index, step.model_name))
            continue
        if is_batching(config):
            if config.HasField("dynamic_batching") and not config.dynamic_batching.max_queue_delay_microseconds:
                ctx.report("W501", "dynamic batching with no max_queue_delay_microseconds only batches requests that "
                                   "happen to queue up; allow a short delay (e.g. 100-1000 us).", model,
                           path=("dynamic_batching",))
            if not config.HasField("dynamic_batching") and not config.HasField("sequence_batching"):
                ctx.report("W505", f"max_batch_size is {config.max_batch_size} but no batcher is configured, so "
                                   "batches only come from clients; add dynamic_batching { }.", model,
                           path=("max_batch_size",))
        _check_timeout_overrides(ctx, model)
        instances = sum(max(group.count, 1) for group in config.instance_group)
        if effective_backend(config) == PYTHON_BACKEND and cores > 1 and instances == 1:
            ctx.report("W502", f"a Python model runs one request at a time per instance and this one has a single "
                               f"instance on a {cores}-core target; raise instance_group count.", model,
                       path=("instance_group",))


def _check_timeout_overrides(ctx: Context, model: Model) -> None:
    """Triton takes a request's own timeout only when it is shorter than the policy's default, and a default of 0
    (no timeout) is never longer: `allow_timeout_override` then silently ignores every client's timeout."""
    batcher = model.config.dynamic_batching
    policies = [(("dynamic_batching", "default_queue_policy"), batcher.default_queue_policy)]
    policies += [(("dynamic_batching", "priority_queue_policy"), policy)
                 for policy in batcher.priority_queue_policy.values()]
    for path, policy in policies:
        if policy.allow_timeout_override and not policy.default_timeout_microseconds:
            ctx.report("W506", "allow_timeout_override is set but default_timeout_microseconds is 0, so Triton ignores "
                               "every client's timeout (it only takes one shorter than the default); set a default "
                               "timeout or drop the override.", model, path=path)
