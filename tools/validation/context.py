"""What every rule module receives: the repository, the target it is checked for, and a findings sink."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from tools.repository import ConfigFile, FieldPath, Model, ModelConfig, Repository
from tools.validation.findings import Finding, Step


class Target(StrEnum):
    """The hardware the repository will be served on (KIND_GPU is an error on a CPU-only target)."""

    CPU = "cpu"
    GPU = "gpu"


# The cores W502 assumes when nobody says: the chart's CPU limit (charts/triton-embeddings values.yaml,
# resources.limits.cpu "2"), i.e. what one served replica gets. A fixed number, so that a verdict does not
# depend on the machine that runs the validator.
DEFAULT_CORES = 2


@dataclass(frozen=True)
class Options:
    """What the repository is checked for: the target's hardware kind, its core count (per server) and the Python
    environment its Python-backend stubs run in."""

    target: Target = Target.CPU
    cores: int = DEFAULT_CORES
    python_env: Path | None = None  # the interpreter Python models' imports are resolved with (None: tools serve's)


@dataclass(frozen=True)
class PythonModelInfo:
    """What the validator needs from a Python backend's model file."""

    error: str | None = None
    error_line: int | None = None
    has_class: bool = False
    has_execute: bool = False
    has_auto_complete: bool = False
    imports: frozenset[str] = frozenset()  # top-level names of the absolute imports run when the module loads


def module_imports(tree: ast.Module) -> frozenset[str]:
    """Top-level names of the absolute imports a module runs when loaded (optional imports in try blocks and
    imports inside functions are not counted)."""
    names: set[str] = set()
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.If | ast.With):
            pending += node.body + getattr(node, "orelse", [])
    return frozenset(names - {"__future__"})


def inspect_python_model(path: Path) -> PythonModelInfo:
    """Compile a model.py (without running it) and look for TritonPythonModel and its methods."""
    try:
        source = path.read_bytes()  # as bytes, the way Python's import reads it: a BOM or a coding line is honoured
    except OSError as exc:
        return PythonModelInfo(error=f"cannot read {path.name}: {exc.strerror or exc}")
    try:
        tree = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return PythonModelInfo(error=f"{type(exc).__name__}: {getattr(exc, 'msg', exc)}",
                               error_line=getattr(exc, "lineno", None))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "TritonPythonModel":
            methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)}
            return PythonModelInfo(has_class=True, has_execute="execute" in methods,
                                   has_auto_complete="auto_complete_config" in methods, imports=module_imports(tree))
    if any(_binds_model_class(node) for node in tree.body):
        # Built or imported elsewhere (a factory, a sibling module): trust it, as we cannot see its methods.
        return PythonModelInfo(has_class=True, has_execute=True, has_auto_complete=True, imports=module_imports(tree))
    return PythonModelInfo(imports=module_imports(tree))


def _binds_model_class(node: ast.stmt) -> bool:
    """Whether a top-level statement binds the name TritonPythonModel other than by a class definition."""
    if isinstance(node, ast.Assign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(t, ast.Name) and t.id == "TritonPythonModel" for t in targets)
    if isinstance(node, ast.Import | ast.ImportFrom):
        return any((alias.asname or alias.name) in ("TritonPythonModel", "*") for alias in node.names)
    return False


@dataclass
class Context:
    repository: Repository
    options: Options = field(default_factory=Options)
    findings: list[Finding] = field(default_factory=list)
    _python_models: dict[Path, PythonModelInfo] = field(default_factory=dict)

    def report(self, code: str, message: str, model: Model | None = None, config_file: ConfigFile | None = None,
               path: FieldPath = (), step: Step | None = None, file: Path | None = None,
               line: int | None = None) -> None:
        """Record a finding; its file, line and column come from `config_file` and the field `path` unless given."""
        if config_file is None and model is not None and file is None:
            config_file = model.config_file
        column = None
        if config_file is not None and file is None:
            file = config_file.path
            line, column = config_file.position_of(path) or (None, None)
        self.findings.append(Finding(code, message, model.name if model else None, file, line, column, step=step))

    def python_model(self, path: Path) -> PythonModelInfo:
        if path not in self._python_models:
            self._python_models[path] = inspect_python_model(path)
        return self._python_models[path]

    def config_files(self, model: Model) -> list[ConfigFile]:
        """The model's parsed config and every parsed variant under configs/."""
        files = [model.config_file] if model.config_file and model.config_file.config else []
        return files + [variant for variant in model.variants.values() if variant.config is not None]


def is_batching(config: ModelConfig) -> bool:
    return config.max_batch_size > 0
