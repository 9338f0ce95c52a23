"""2xx for Python-backend models: the execution environment they name, the modules their code imports, and the
pinned requirements the model folder ships (`requirements.txt`, which `tools serve` installs before loading the model).

The stub imports model.py with its version folder on sys.path, in the interpreter of the model's environment:
EXECUTION_ENV_PATH's when the config names a folder, else the stub's own (`--python-env`, by default the
interpreter `tools serve` gives its stubs). Every import and every pin is resolved by that interpreter in one batch,
without importing anything (`importlib.util.find_spec` of top-level names, `importlib.metadata` versions).
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from tools.errors import UsageError
from tools.repository import Model, ModelConfig
from tools.serving import requirements
from tools.validation.context import Context

ENV_PARAMETER = "EXECUTION_ENV_PATH"
MODEL_DIR_VARIABLE = "$$TRITON_MODEL_DIRECTORY"
PROVIDED_BY_STUB = frozenset({"triton_python_backend_utils"})


@dataclass
class PythonModel:
    """A Python-backend model and its model files that compile (those whose imports can be read)."""

    model: Model
    config: ModelConfig
    files: list[Path] = field(default_factory=list)


def interpreter_of(path: Path) -> Path:
    """`--python-env`: an interpreter, or a virtual environment / prefix folder holding bin/python3."""
    if path.is_dir():
        for name in ("python3", "python"):
            if (path / "bin" / name).is_file():
                return path / "bin" / name
        raise UsageError(f"--python-env {path}: no bin/python3 in that folder (expected a venv or an interpreter)")
    if not path.is_file():
        raise UsageError(f"--python-env {path}: no such interpreter or folder")
    return path


def execution_env(model: Model, config: ModelConfig) -> Path | None:
    """EXECUTION_ENV_PATH with $$TRITON_MODEL_DIRECTORY expanded to the model folder, as the Python backend does;
    None when unset or relative (Triton resolves that against its own working directory)."""
    if ENV_PARAMETER not in config.parameters:
        return None
    value = config.parameters[ENV_PARAMETER].string_value.replace(MODEL_DIR_VARIABLE, str(model.path), 1)
    return Path(value) if Path(value).is_absolute() else None


def _env_problem(env: Path) -> str | None:
    if not env.exists():
        return "does not exist"
    if env.is_dir():
        return None if (env / "bin" / "activate").is_file() else "is a folder without bin/activate"
    return None if tarfile.is_tarfile(env) else "is neither a folder nor a tar archive (conda-pack makes one)"


def local_modules(path: Path) -> set[str]:
    """Modules that sit beside a model file (its version folder) or in its model folder: present by definition."""
    names = set()
    for folder in (path.parent, path.parent.parent):
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.endswith(".py"):
                        names.add(entry.name[:-3])
                    elif entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py")):
                        names.add(entry.name)
        except OSError:
            continue
    return names


def imported_modules(ctx: Context, path: Path) -> frozenset[str]:
    """What a module imports when loaded (parsed once per file, shared with the other rules)."""
    return ctx.python_model(path).imports


def _needed(ctx: Context, path: Path) -> set[str]:
    """External modules a model file needs, following its local modules transitively."""
    local = local_modules(path)
    needed: set[str] = set()
    seen: set[Path] = set()
    queue = [path]
    while queue:
        current = queue.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imported_modules(ctx, current):
            if name in local:
                queue += [p for p in (current.parent / f"{name}.py", path.parent / f"{name}.py",
                                      path.parent.parent / f"{name}.py") if p.is_file()]
            else:
                needed.add(name)
    return needed - PROVIDED_BY_STUB


def _report_requirement_problems(ctx: Context, model: Model, reqs: requirements.Requirements) -> None:
    for problem in reqs.problems:
        ctx.report("W227", f"{reqs.path.name} line {problem.line} \"{problem.text}\" {problem.reason}; "
                           f"`pip install --no-deps -r` installs the file as it is.", model, file=reqs.path,
                   line=problem.line or None)


def check(ctx: Context, models: list[PythonModel]) -> None:
    wanted: dict[Path, dict[Path, tuple[Model, set[str]]]] = {}  # interpreter -> model file -> (model, names)
    pinned: dict[Path, list[tuple[Model, requirements.Requirements]]] = {}  # interpreter -> models with pins
    default = ctx.options.python_env
    for item in models:
        reqs = requirements.of_model(item.model.path)
        if reqs is not None:
            _report_requirement_problems(ctx, item.model, reqs)
        env = execution_env(item.model, item.config)
        if env is not None:
            problem = _env_problem(env)
            if problem is not None:
                ctx.report("E220", f"{ENV_PARAMETER} {env} {problem}, so the Python backend cannot start the model; "
                                   "ship the environment there or drop the parameter.", item.model,
                           path=("parameters",))
                continue
            interpreter = next((env / "bin" / n for n in ("python3", "python") if (env / "bin" / n).is_file()), None)
            if interpreter is None:
                continue  # an archive: its interpreter is only known once Triton unpacks it
        else:
            interpreter = default if default is not None else None
        needs = {path: names for path in item.files if (names := _needed(ctx, path))}
        if (needs or (reqs is not None and reqs.pins)) and interpreter is None:
            interpreter = default = requirements.stub_interpreter()
        for path, names in needs.items():
            wanted.setdefault(interpreter, {})[path] = (item.model, names)
        if reqs is not None and reqs.pins:
            pinned.setdefault(interpreter, []).append((item.model, reqs))
    for interpreter in sorted(wanted.keys() | pinned.keys()):
        files, models_with_pins = wanted.get(interpreter, {}), pinned.get(interpreter, [])
        found = requirements.probe(interpreter, set().union(*(names for _, names in files.values())),
                                   {pin.name for _, reqs in models_with_pins for pin in reqs.pins})
        for path, (model, names) in files.items():
            for name in sorted(names & found.missing_modules):
                ctx.report("E219", f"{path.name} imports \"{name}\", which {interpreter} cannot import, so the stub "
                                   "fails to load the model; install it there (or pass --python-env) or drop the "
                                   "import.", model, file=path)
        for model, reqs in models_with_pins:
            missing = requirements.unmet(reqs, found.versions)
            if missing:
                ctx.report("W228", f"{reqs.path.name} pins {', '.join(map(str, missing))}, which {interpreter} "
                                   "lacks, so the model loads only once they are installed; `tools serve` installs "
                                   f"them before loading it (or run pip install --no-deps -r {reqs.path}).", model,
                           file=reqs.path)
