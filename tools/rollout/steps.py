"""A rollout as timed steps on a running server, and the way back when any step fails.

Triton resolves an ensemble step with model_version -1 per request to the highest READY version of the model, and
an ensemble request holds every composing model it uses until it completes. So loading version N beside the serving
one would hand N the ensemble's traffic the moment it is ready, before any canary. The ensembles that call the model
are therefore pinned to the serving version first (a config override of the ensemble: Triton reloads an ensemble in
the background and swaps it, so nothing is refused), and re-pointed at the new version only at the switch, before the
old versions are dropped: dropping a version an ensemble is pinned to would make Triton unload the ensemble.

Any ensemble load makes Triton poll the composing models' folders, and a folder changed after the model's last load
is reloaded from the config on disk, undoing an override. Python stubs write `__pycache__` into the model folder
when they import its modules, so the folder is byte-compiled before anything loads, and the versions Triton serves
are checked after every load.
"""

from __future__ import annotations

import compileall
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format

from tools.errors import ServingError, ToolsError, UsageError, ValidationError
from tools.loadtest import corpus
from tools.repository import Repository
from tools.rollout import history
from tools.rollout.canary import DEFAULT_MAX_LATENCY_RATIO, DEFAULT_MIN_COSINE, CanaryResult, canary_texts, run_canary
from tools.rollout.policy import pinned, policy_versions, with_policy
from tools.serving.control import Control
from tools.validation.findings import Severity
from tools.validation.run import check_offline

DEFAULT_DRAIN_TIMEOUT_S = 60.0


class RolloutError(ServingError):
    """A step failed; the server was put back as it was (`report` says what ran)."""

    def __init__(self, message: str, report: Report):
        super().__init__(message)
        self.report = report


@dataclass
class Options:
    min_cosine: float = DEFAULT_MIN_COSINE
    max_latency_ratio: float = DEFAULT_MAX_LATENCY_RATIO
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    corpus: Path = corpus.DEFAULT_CORPUS


@dataclass
class Step:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass
class Report:
    """What a rollout or rollback did, step by step."""

    model: str
    action: str  # "rollout" or "rollback"
    before: list[int]  # versions served before
    after: list[int]  # versions meant to be served after
    steps: list[Step] = field(default_factory=list)
    canary: CanaryResult | None = None
    ok: bool = False
    error: str = ""
    restored: bool | None = None  # after a failure: whether the previous state was restored

    def as_dict(self) -> dict:
        return {"model": self.model, "action": self.action, "before": self.before, "after": self.after,
                "ok": self.ok, "error": self.error, "restored": self.restored,
                "steps": [vars(step) for step in self.steps],
                "canary": self.canary.as_dict() if self.canary else None,
                "total_s": sum(step.seconds for step in self.steps)}


@dataclass
class Hooks:
    """Progress for a caller: a step starts, a step ends, a canary request is done."""

    started: Callable[[str], None] = lambda name: None
    finished: Callable[[Step], None] = lambda step: None
    canary: Callable[[int, int], None] = lambda done, total: None


@dataclass
class _Run:
    control: Control
    repository: Repository
    model: str
    ensembles: list[str]
    report: Report
    hooks: Hooks
    original: dict = field(default_factory=dict)  # the model's running config
    ensemble_configs: dict[str, dict] = field(default_factory=dict)  # the ensembles' running configs

    @contextmanager
    def step(self, name: str):
        self.hooks.started(name)
        started = time.monotonic()
        try:
            yield
        except (ToolsError, KeyboardInterrupt) as exc:
            self._record(Step(name, time.monotonic() - started, False, str(exc) or "interrupted"))
            raise
        self._record(Step(name, time.monotonic() - started, True))

    def _record(self, step: Step) -> None:
        self.report.steps.append(step)
        self.hooks.finished(step)

    def expect(self, versions: list[int]) -> None:
        served = self.control.ready_versions(self.model)
        if served != sorted(versions):
            raise ServingError(f"{self.model} serves versions {served}, expected {sorted(versions)} (was its folder "
                               "changed on disk meanwhile?)")

    def pin(self, version: int | None, serving: list[int]) -> None:
        """Point every ensemble at `version` of the model (None: back to their running configs)."""
        for name in self.ensembles:
            config = self.ensemble_configs[name]
            self.control.load(name, config if version is None else pinned(config, self.model, version))
            self.expect(serving)

    def restore(self, before: list[int]) -> None:
        """Back to the running configs and versions seen at the start, whatever step failed."""
        with self.step("restore"):
            try:
                serving = self.control.ready_versions(self.model)
                both = sorted(set(serving) | set(before))
                self.control.load(self.model, with_policy(self.original, both))
                self.pin(max(before), both)
                self.control.load(self.model, with_policy(self.original, before))
                self.pin(None, before)
                self.report.restored = True
            except ToolsError:
                self.report.restored = False
                raise


def _prepare(path: Path, model: str) -> tuple[Repository, list[str]]:
    """Offline: validation and the plan's preconditions; the ensembles that follow the model's latest version."""
    repository, findings = check_offline(path)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        first = errors[0]
        raise ValidationError(f"{path} has {len(errors)} configuration error(s) (first: {first.model}: {first.code} "
                              f"{first.message}); `tools validate {path}` lists them; not rolling out")
    if model not in repository.models:
        raise UsageError(f"no model {model!r} in {path}")
    if repository.models[model].is_ensemble:
        raise UsageError(f"{model} is an ensemble: roll out the models it calls, one at a time")
    ensembles = [name for name in repository.models if model in repository.composing_models(name)]
    for name in ensembles:
        for step in repository.models[name].config.ensemble_scheduling.step:
            if step.model_name == model and step.model_version != -1:
                raise UsageError(f"ensemble {name} calls {model} at version {step.model_version}, not the latest: "
                                 "a rollout would break it")
    return repository, ensembles


def _start(control: Control, repository: Repository, ensembles: list[str], model: str, action: str,
           hooks: Hooks) -> _Run:
    """The server's side of the start: what it serves and runs now. Byte-compiles the model's folder first: a stub
    that writes __pycache__ after a load changes the folder, and Triton would then reload the model from the config
    on disk at the next ensemble load (see the module's doc)."""
    compileall.compile_dir(str(repository.models[model].path), quiet=2)
    before = control.ready_versions(model)
    if not before:
        raise ServingError(f"{model} has no ready version on the server at {control.url}")
    run = _Run(control, repository, model, ensembles, Report(model, action, before, []), hooks)
    run.original = control.config(model)
    run.ensemble_configs = {name: control.config(name) for name in ensembles}
    return run


def _finish(run: _Run, body: Callable[[], None]) -> Report:
    """Run the steps; on a failure (Ctrl-C too) restore the start's state and raise RolloutError naming the step."""
    try:
        body()
    except (ToolsError, KeyboardInterrupt) as exc:
        run.report.error = f"{run.report.steps[-1].name if run.report.steps else 'start'}: {exc or 'interrupted'}"
        try:
            run.restore(run.report.before)
        except ToolsError as restore_exc:
            raise RolloutError(f"{run.report.error}; restoring the previous state failed too: {restore_exc}",
                               run.report) from None
        raise RolloutError(f"{run.report.error}; restored versions {run.report.before}", run.report) from None
    run.report.ok = True
    return run.report


def _policy_before(run: _Run, before: list[int]) -> dict:
    """The policy to return to: the one on disk when it serves what was served, else exactly those versions.

    Not the running config's: after an in-place update (a policy or instance change) Triton 2.51 still reports the
    version_policy the version was created with.
    """
    model = run.repository.models[run.model]
    if model.served_versions() == before:
        policy = json_format.MessageToDict(model.config.version_policy, preserving_proto_field_name=True)
        if "specific" in policy:
            policy["specific"]["versions"] = [int(v) for v in policy["specific"]["versions"]]
        return policy
    return {"specific": {"versions": before}}


def rollout(control: Control, path: Path, model: str, version: int, options: Options | None = None,
            hooks: Hooks | None = None) -> Report:
    """Load `version` beside the serving versions, canary it, switch every caller to it, drain the rest, record."""
    options, hooks = options or Options(), hooks or Hooks()
    hooks.started("validate")
    started = time.monotonic()
    repository, ensembles = _prepare(path, model)
    if version not in repository.models[model].versions:
        raise UsageError(f"{model} has no version {version} in {path} (versions: "
                         f"{sorted(repository.models[model].versions)})")
    run = _start(control, repository, ensembles, model, "rollout", hooks)
    run._record(Step("validate", time.monotonic() - started, True))
    before = run.report.before
    if before == [version]:
        raise UsageError(f"{model} version {version} is already the only one served")
    run.report.after = [version]
    texts = canary_texts(options.corpus)
    old = max(v for v in before if v != version)
    policy = {"specific": {"versions": [version]}}

    def body() -> None:
        with run.step("pin ensembles"):
            run.pin(old, before)
        with run.step("load new version"):
            both = sorted(set(before) | {version})
            control.load(model, with_policy(run.original, both))
            run.expect(both)
        with run.step("canary"):
            run.report.canary = run_canary(control, model, old, version, run.ensemble_configs, texts,
                                           options.min_cosine, options.max_latency_ratio, hooks.canary)
            if run.report.canary.problems:
                problems = run.report.canary.problems
                raise ServingError(f"{len(problems)} problem(s), first: {problems[0]}")
        with run.step("switch"):
            run.pin(version, both)
            control.load(model, {**run.original, "version_policy": policy})
            run.expect([version])
            run.pin(None, [version])
        with run.step("drain"):
            control.wait_unloaded(model, set(before) - {version}, options.drain_timeout_s)
        with run.step("write config"):
            config = run.repository.models[model].config
            records = history.records(run.repository.models[model].config_file)
            history.write(run.repository, model, history.with_policy(config, policy),
                          [*records, history.Record.now(before, [version], _policy_before(run, before))])

    return _finish(run, body)


def rollback(control: Control, path: Path, model: str, options: Options | None = None,
             hooks: Hooks | None = None) -> Report:
    """Return to the versions and policy before the last recorded rollout, and drop that record."""
    options, hooks = options or Options(), hooks or Hooks()
    hooks.started("validate")
    started = time.monotonic()
    repository, ensembles = _prepare(path, model)
    records = history.records(repository.models[model].config_file)
    if not records:
        raise UsageError(f"no rollout of {model} is recorded in {path}/{model}/config.pbtxt: nothing to roll back")
    last = records[-1]
    target = policy_versions({"version_policy": last.policy}, sorted(repository.models[model].versions))
    if not target:
        raise UsageError(f"none of {model}'s versions {last.before} is on disk any more: cannot roll back")
    run = _start(control, repository, ensembles, model, "rollback", hooks)
    run._record(Step("validate", time.monotonic() - started, True))
    before = run.report.before
    run.report.after = target

    def body() -> None:
        with run.step("pin ensembles"):
            run.pin(max(before), before)
        both = sorted(set(before) | set(target))
        with run.step("load old versions"):
            control.load(model, with_policy(run.original, both))
            run.expect(both)
        with run.step("switch"):
            run.pin(max(target), both)
            control.load(model, {**run.original, "version_policy": last.policy})
            run.expect(target)
            run.pin(None, target)
        with run.step("drain"):
            control.wait_unloaded(model, set(before) - set(target), options.drain_timeout_s)
        with run.step("write config"):
            config = run.repository.models[model].config
            history.write(run.repository, model, history.with_policy(config, last.policy), records[:-1])

    return _finish(run, body)
