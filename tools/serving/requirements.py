"""A model's own Python requirements: `requirements.txt` at the top of its model folder, fully pinned.

Triton reads only the numeric version folders of a model folder, so the file travels with the model and Triton
ignores it. The file lists what the model needs beyond the project's venv (the closure the venv lacks, each
`name==version`) and is installed with `pip install --no-deps -r`, so no dependency the model never imports is pulled.
Here: read it, compare it with the interpreter the stubs run (one child process asks that interpreter), install it
there through the supervisor, and turn pip's verbose output into progress (a source build prints ninja's `[12/193]`
or make's `[ 45%]`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from tools import processes
from tools.errors import ServingError
from tools.repository import Repository

REQUIREMENTS_FILE = "requirements.txt"
PROBE_TIMEOUT_S = 60.0
# A source build of a native package takes minutes (llama-cpp-python: 11 min on 2 busy cores).
INSTALL_TIMEOUT_S = 3600.0
POLL_INTERVAL_S = 0.2

# Run by the target interpreter: module names and distribution names in (JSON on stdin); the modules it cannot find
# and the installed version of each distribution (null: not installed) out. Nothing is imported.
_PROBE = """\
import importlib.metadata, importlib.util, json, sys
asked = json.load(sys.stdin)
missing = []
for name in asked["modules"]:
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        missing.append(name)
versions = {}
for name in asked["distributions"]:
    try:
        versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        versions[name] = None
json.dump({"missing": missing, "versions": versions}, sys.stdout)
"""


def stub_interpreter() -> Path:
    """The interpreter `tools serve`'s stubs run with: the python3 beside this interpreter, which
    `tools.serving.runtime.stub_environment` puts first on their PATH (a test holds the two together; importing
    runtime here would cost half a second of pytriton import on every validation)."""
    return Path(shutil.which("python3", path=str(Path(sys.executable).parent)) or sys.executable)


class RequirementsError(ServingError):
    """A model's requirements could not be checked or installed."""


@dataclass(frozen=True)
class Problem:
    """A line of a requirements file that is not a pinned requirement."""

    line: int
    text: str
    reason: str


@dataclass(frozen=True)
class Requirements:
    """One model's requirements file: the pins that apply to this platform, and the lines that are not pins."""

    path: Path
    pins: tuple[Requirement, ...] = ()
    problems: tuple[Problem, ...] = ()


def _pinned_version(requirement: Requirement) -> str | None:
    specifiers = list(requirement.specifier)
    if len(specifiers) == 1 and specifiers[0].operator in ("==", "===") and "*" not in specifiers[0].version:
        return specifiers[0].version
    return None


def _judge(text: str) -> Requirement | str:
    """The requirement a line pins, or why the line is not one."""
    if text.startswith("-"):
        return "is a pip option; list pinned requirements only (the file is installed with --no-deps as it is)"
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        return f"does not parse ({str(exc).splitlines()[0]})"
    if requirement.url:
        return "is a direct reference; pin a release from the index (name==version)"
    if _pinned_version(requirement) is None:
        return "is not pinned to one version; write name==version"
    return requirement


def read(path: Path) -> Requirements:
    """Parse a requirements file (comments and blank lines skipped, environment markers evaluated here)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return Requirements(path, problems=(Problem(0, "", f"cannot be read ({exc})"),))
    pins, problems = [], []
    for number, raw in enumerate(lines, 1):
        text = re.sub(r"(^|\s)#.*$", "", raw).strip()  # pip's comment rule
        if not text:
            continue
        judged = _judge(text)
        if isinstance(judged, str):
            problems.append(Problem(number, text, judged))
        elif judged.marker is None or judged.marker.evaluate():
            pins.append(judged)
    return Requirements(path, tuple(pins), tuple(problems))


def of_model(folder: Path) -> Requirements | None:
    """The requirements of the model in `folder`, None when it has no requirements file."""
    path = folder / REQUIREMENTS_FILE
    return read(path) if path.is_file() else None


@dataclass(frozen=True)
class Interpreter:
    """What one interpreter has: the asked modules it cannot import, the installed version of each asked
    distribution (None: not installed)."""

    missing_modules: frozenset[str]
    versions: dict[str, str | None]


def probe(interpreter: Path, modules: Iterable[str] = (), distributions: Iterable[str] = ()) -> Interpreter:
    """Ask `interpreter` about modules and distributions in one child process."""
    asked = {"modules": sorted(set(modules)), "distributions": sorted(set(distributions))}
    result = processes.run("python-env", [interpreter, "-c", _PROBE], timeout=PROBE_TIMEOUT_S,
                           input=json.dumps(asked), cwd=Path("/"))
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        said = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RequirementsError(f"{interpreter} could not be asked about its modules (exit {result.returncode}): "
                                f"{said}") from None
    return Interpreter(frozenset(answer["missing"]), answer["versions"])


@dataclass(frozen=True)
class Unmet:
    """A pin the interpreter does not satisfy: not installed, or installed in another version."""

    requirement: Requirement
    installed: str | None

    def __str__(self) -> str:
        wanted = f"{self.requirement.name}{self.requirement.specifier}"
        return wanted if self.installed is None else f"{wanted} (installed: {self.installed})"


def unmet(requirements: Requirements, versions: dict[str, str | None]) -> list[Unmet]:
    """The pins `versions` (from `probe`) does not satisfy."""
    return [Unmet(pin, versions.get(pin.name)) for pin in requirements.pins
            if versions.get(pin.name) is None or not pin.specifier.contains(versions[pin.name], prereleases=True)]


@dataclass(frozen=True)
class Pending:
    """A model held back until its requirements are installed."""

    model: str
    requirements: Requirements
    unmet: tuple[Unmet, ...]
    ensembles: tuple[str, ...] = ()  # the ensembles that step into it, which wait with it

    def summary(self) -> str:
        return ", ".join(str(u) for u in self.unmet)


@dataclass(frozen=True)
class Plan:
    """What to load at start and what to load once requirements are installed."""

    pending: tuple[Pending, ...] = ()
    deferred: tuple[str, ...] = ()  # the pending models and every ensemble that steps into one, in load order
    now: tuple[str, ...] = ()  # the others, in load order

    @property
    def load_models(self) -> list[str]:
        """Triton's --load-model values: every model, or the ones that can load now."""
        return list(self.now) if self.deferred else ["*"]


def plan(repository: Repository, interpreter: Path) -> Plan:
    """Which models wait for their requirements (one probe of `interpreter` for every model's pins)."""
    found = {name: reqs for name, model in repository.models.items()
             if (reqs := of_model(model.path)) is not None and reqs.pins}
    if not found:
        return Plan(now=tuple(repository.load_order()))
    versions = probe(interpreter, distributions={pin.name for reqs in found.values() for pin in reqs.pins}).versions
    waiting = {name: reqs for name, reqs in sorted(found.items()) if unmet(reqs, versions)}
    roots: dict[str, set[str]] = {name: {name} for name in waiting}  # deferred model -> the pending ones it waits for
    order = repository.load_order()
    for name in order:  # an ensemble comes after the models it steps into
        if waited := set().union(*(roots.get(step, set()) for step in repository.composing_models(name))):
            roots[name] = roots.get(name, set()) | waited
    pending = tuple(Pending(name, reqs, tuple(unmet(reqs, versions)),
                            tuple(n for n in order if n != name and name in roots.get(n, ())))
                    for name, reqs in waiting.items())
    return Plan(pending, tuple(n for n in order if n in roots), tuple(n for n in order if n not in roots))


# -- installing, with progress read from pip's verbose output ----------------------------------------------------
_STAGES = (
    (re.compile(r"^Collecting (\S+)"), "collecting {0}"),
    (re.compile(r"^\s*Downloading (\S+) \(([^)]+)\)"), "downloading {0} ({1})"),
    (re.compile(r"^\s*Building wheel for (\S+)"), "building {0}"),
    (re.compile(r"^Installing collected packages"), "installing"),
)
_NINJA_STEP = re.compile(r"^\s*\[(\d+)/(\d+)\]")
_MAKE_PERCENT = re.compile(r"^\s*\[\s*(\d+)%\]")


@dataclass
class InstallProgress:
    """Where a pip run is: its stage, the build's steps when a build reports them, and its last line."""

    stage: str = "starting pip"
    done: int | None = None
    total: int | None = None
    last: str = ""

    def feed(self, line: str) -> None:
        line = line.rstrip()
        if not line.strip():
            return
        self.last = line.strip()
        for pattern, template in _STAGES:
            if match := pattern.search(line):
                self.stage = template.format(*match.groups())
                self.done = self.total = None
                return
        if match := _NINJA_STEP.search(line):
            self.done, self.total = int(match[1]), int(match[2])
        elif match := _MAKE_PERCENT.search(line):
            self.done, self.total = int(match[1]), 100


@dataclass
class _LogReader:
    """The complete lines a growing log gained since the last call."""

    path: Path
    offset: int = 0
    partial: str = field(default="")

    def new_lines(self) -> list[str]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk.decode(errors="replace")).split("\n")
        return lines


def pip_command(interpreter: Path, requirements: Requirements) -> list[str | os.PathLike]:
    return [interpreter, "-m", "pip", "install", "--no-deps", "--no-input", "--disable-pip-version-check", "-v",
            "-r", requirements.path]


def install(interpreter: Path, requirements: Requirements, log: Path,
            on_progress: Callable[[InstallProgress], None] = lambda progress: None,
            timeout: float = INSTALL_TIMEOUT_S) -> None:
    """Install a requirements file into `interpreter`'s environment (pip's output appended to `log`); one-line
    RequirementsError naming what failed and the log when pip does."""
    log.touch()
    start = log.stat().st_size
    reader, progress = _LogReader(log, start), InstallProgress()
    child = processes.spawn(f"pip install -r {requirements.path}", pip_command(interpreter, requirements), log=log)
    deadline = time.monotonic() + timeout
    try:
        while True:
            finished = not child.running()
            for line in reader.new_lines():
                progress.feed(line)
            on_progress(progress)
            if finished:
                break
            if time.monotonic() > deadline:
                raise RequirementsError(f"installing {requirements.path} did not finish in {timeout:.0f} s "
                                        f"(last: {progress.last}); log: {log}")
            time.sleep(POLL_INTERVAL_S)
    finally:
        child.stop()
    if child.returncode != 0:
        raise RequirementsError(f"installing {requirements.path} failed (pip exit {child.returncode}: "
                                f"{_pip_error(log, start)}); log: {log}")


def _pip_error(log: Path, start: int) -> str:
    """pip's first ERROR line of this run (it names the package), else its last line."""
    with log.open("rb") as reader:
        reader.seek(start)
        lines = [line.strip() for line in reader.read().decode(errors="replace").splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    return errors[0] if errors else (lines[-1] if lines else "no output")


# -- the deferred models: install, then load ------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What became of one deferred model: loaded, or why not; `install_s` is its own requirements' install."""

    model: str
    install_s: float | None = None
    load_s: float | None = None
    error: str | None = None


def install_and_load(plan: Plan, interpreter: Path, log: Path, load: Callable[[str], None],
                     on_progress: Callable[[Pending, InstallProgress], None] = lambda pending, progress: None,
                     on_outcome: Callable[[Outcome], None] = lambda outcome: None) -> list[Outcome]:
    """Install each pending model's requirements, then load it and the ensembles that wait only for it (in load
    order) with `load` (the repository API) before the next install starts; a failure is that model's (and its
    ensembles') outcome, never the others'."""
    failed: dict[str, str] = {}  # pending model -> why it did not load
    waits_for = {name: {p.model for p in plan.pending if name == p.model or name in p.ensembles}
                 for name in plan.deferred}
    installed: dict[str, float] = {}
    outcomes: list[Outcome] = []
    for pending in plan.pending:
        started = time.monotonic()
        try:
            install(interpreter, pending.requirements, log, lambda progress, p=pending: on_progress(p, progress))
        except RequirementsError as exc:
            failed[pending.model] = str(exc)
        installed[pending.model] = time.monotonic() - started
        for name in plan.deferred:
            if name in {o.model for o in outcomes} or not waits_for[name] <= installed.keys():
                continue
            outcome = _load_one(name, waits_for[name], failed, installed, load)
            if outcome.error is not None:
                failed[name] = outcome.error
            outcomes.append(outcome)
            on_outcome(outcome)
    return outcomes


def _load_one(name: str, waits_for: set[str], failed: dict[str, str], installed: dict[str, float],
              load: Callable[[str], None]) -> Outcome:
    install_s = installed.get(name)
    if name in failed:
        return Outcome(name, install_s, error=failed[name])
    if broken := sorted(waits_for & failed.keys()):
        return Outcome(name, error=f"steps into {', '.join(broken)}, which did not load")
    started = time.monotonic()
    try:
        load(name)
    except ServingError as exc:
        return Outcome(name, install_s, error=f"loading failed: {exc}")
    return Outcome(name, install_s, time.monotonic() - started)
