"""2xx for Python-backend models: the execution environment they name, and the modules their code imports.

The stub imports model.py with its version folder on sys.path, in the interpreter of the model's environment:
EXECUTION_ENV_PATH's when the config names a folder, else the stub's own (`--python-env`, by default the
interpreter `tools serve` gives its stubs). Every import is resolved by that interpreter in one batch, without
importing anything (`importlib.util.find_spec` of top-level names).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from tools import processes
from tools.errors import UsageError, ValidationError
from tools.repository import Model, ModelConfig
from tools.validation.context import Context

ENV_PARAMETER = "EXECUTION_ENV_PATH"
MODEL_DIR_VARIABLE = "$$TRITON_MODEL_DIRECTORY"
PROVIDED_BY_STUB = frozenset({"triton_python_backend_utils"})
RESOLVE_TIMEOUT_S = 60.0
# Run by the target interpreter: module names in (JSON on stdin), the ones it cannot find out.
_RESOLVER = """\
import importlib.util, json, sys
missing = []
for name in json.load(sys.stdin):
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        missing.append(name)
json.dump(missing, sys.stdout)
"""


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


def stub_interpreter() -> Path:
    """The interpreter `tools serve`'s stubs run with: the python3 beside this interpreter, which
    `tools.serving.runtime.stub_environment` puts first on their PATH (a test holds the two together; importing
    runtime here would cost half a second of pytriton import on every validation)."""
    return Path(shutil.which("python3", path=str(Path(sys.executable).parent)) or sys.executable)


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


def missing_modules(interpreter: Path, names: set[str]) -> set[str]:
    """The names `interpreter` cannot import: one child process for all of them."""
    if not names:
        return set()
    result = processes.run("python-env", [interpreter, "-c", _RESOLVER], timeout=RESOLVE_TIMEOUT_S,
                           input=json.dumps(sorted(names)), cwd=Path("/"))
    try:
        return set(json.loads(result.stdout))
    except ValueError:
        raise ValidationError(f"{interpreter} could not resolve imports (exit {result.returncode}): "
                              f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}") from None


def check(ctx: Context, models: list[PythonModel]) -> None:
    wanted: dict[Path, dict[Path, tuple[Model, set[str]]]] = {}  # interpreter -> model file -> (model, names)
    default = ctx.options.python_env
    for item in models:
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
        for path in item.files:
            names = _needed(ctx, path)
            if names:
                if interpreter is None:
                    interpreter = default = stub_interpreter()
                wanted.setdefault(interpreter, {})[path] = (item.model, names)
    for interpreter, files in wanted.items():
        missing = missing_modules(interpreter, set().union(*(names for _, names in files.values())))
        for path, (model, names) in files.items():
            for name in sorted(names & missing):
                ctx.report("E219", f"{path.name} imports \"{name}\", which {interpreter} cannot import, so the stub "
                                   "fails to load the model; install it there (or pass --python-env) or drop the "
                                   "import.", model, file=path)
