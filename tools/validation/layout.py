"""2xx: the repository's layout: names, version folders, backends and the files each backend loads.

Each check mirrors one Triton 2.51 load-time check; parity.toml says which (and which Triton checks have no rule).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tools.repository import ENSEMBLE_PLATFORM, VARIANTS_DIR, ConfigFile, Model, ModelConfig
from tools.validation import python_env
from tools.validation.context import Context
from tools.validation.findings import Finding

PYTHON_BACKEND = "python"
WARMUP_DIR = "warmup"  # where model_warmup's input_data_file lives
# Folders Triton never reads as versions.
SKIPPED_DIRS = frozenset({VARIANTS_DIR, WARMUP_DIR, "initial_state"})
# Folders that belong in a model folder without being versions.
EXPECTED_DIRS = SKIPPED_DIRS | {"__pycache__"}
PYTHON_RUNTIME_LIBRARY = "libtriton_python.so"  # what `runtime` may name for the Python backend
PYTHON_BASED_RUNTIME = "model.py"  # a `runtime` of this name means a Python-based backend (backends/<name>/model.py)
FORCE_CPU_ONLY = "FORCE_CPU_ONLY_INPUT_TENSORS"  # a Python-backend model parameter: "yes" or "no"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the range std::stoll reads without throwing
# What Triton's std::stoll makes of a folder name: leading blanks, a sign and digits; the rest is dropped.
_STOLL = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+")
# Platform -> the backend that serves it (what Triton derives when only `platform` is set).
PLATFORM_BACKENDS = {
    "tensorrt_plan": "tensorrt",
    "tensorflow_graphdef": "tensorflow",
    "tensorflow_savedmodel": "tensorflow",
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
    ENSEMBLE_PLATFORM: "",
}
# Backends published with Triton releases; anything else must be installed as a custom backend.
KNOWN_BACKENDS = frozenset({
    PYTHON_BACKEND, "onnxruntime", "tensorflow", "pytorch", "tensorrt", "openvino", "fil", "dali", "vllm",
    "tensorrtllm", "identity", "repeat", "square",
})
# The file (or folder) each backend loads from a version folder when default_model_filename is unset.
DEFAULT_MODEL_FILES = {
    PYTHON_BACKEND: "model.py",
    "onnxruntime": "model.onnx",
    "pytorch": "model.pt",
    "tensorrt": "model.plan",
    "openvino": "model.xml",
}
PLATFORM_MODEL_FILES = {"tensorflow_graphdef": "model.graphdef", "tensorflow_savedmodel": "model.savedmodel"}
# The backends Triton knows by name: for these it insists that `platform` (when set) belongs to the backend.
TYPED_BACKENDS = frozenset({"tensorflow", "tensorrt", "onnxruntime", "pytorch"})
# File name in the first sub-folder of a model -> the backend Triton guesses from it (in Triton's order).
GUESSED_BACKENDS = (("model.savedmodel", "tensorflow"), ("model.graphdef", "tensorflow"), ("model.plan", "tensorrt"),
                    ("model.onnx", "onnxruntime"), ("model.xml", "openvino"), ("model.pt", "pytorch"),
                    ("model.py", PYTHON_BACKEND))
BATCH_STRATEGY_PARAMETER = "TRITON_BATCH_STRATEGY_PATH"


def effective_backend(config: ModelConfig) -> str:
    """The backend Triton will use: `backend`, else the one the platform implies."""
    return config.backend or PLATFORM_BACKENDS.get(config.platform, "")


def model_file(config: ModelConfig) -> str | None:
    """The file a served version must hold for this config's backend, when we know it."""
    if config.default_model_filename:
        return config.default_model_filename
    return PLATFORM_MODEL_FILES.get(config.platform) or DEFAULT_MODEL_FILES.get(effective_backend(config))


def guessed_backend(model: Model) -> str | None:
    """The backend Triton's auto-complete picks for a config without backend, platform or default_model_filename.

    Like Triton, it looks only in the model's first sub-folder in name order (whatever that folder is), then at a
    model name of the form `model.<backend>`; None when Triton would give up.
    """
    folders = sorted(entry.name for entry in _entries(model.path) if _is_dir(entry))
    contents = {entry.name for entry in _entries(model.path / folders[0])} if folders else set()
    for filename, backend in GUESSED_BACKENDS:
        if filename in contents:
            return backend
    return model.name.partition(".")[2] or None


def _entries(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except OSError:
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _dangling(entry: os.DirEntry) -> bool:
    """An entry Triton's stat() fails on: a symbolic link to nothing (or to itself)."""
    try:
        if not entry.is_symlink():
            return False
        os.stat(entry.path)
    except OSError:
        return True
    return False


def _check_root(ctx: Context) -> None:
    """What Triton sees at the root: every sub-folder is a model, dot-folders too, and one un-stat-able entry fails
    the listing of them all."""
    repository = ctx.repository
    for entry in sorted(_entries(repository.root), key=lambda e: e.name):
        if _dangling(entry):
            ctx.findings.append(Finding(
                "E218", f"\"{entry.name}\" at the repository root is a link to nothing, so Triton cannot list the "
                        "repository; remove it or fix its target.", entry.name, Path(entry.path)))
        elif entry.name.startswith(".") and _is_dir(entry):
            # Attributed to the model name Triton gives the folder.
            ctx.findings.append(Finding(
                "E217", f"hidden folder \"{entry.name}\" at the repository root is a model to Triton, which tries to "
                        "load it with --load-model=* or polling and fails; move it out of the repository.",
                entry.name, Path(entry.path)))
    for model in repository.models.values():
        for entry in sorted(_entries(model.path), key=lambda e: e.name):
            if _dangling(entry):
                ctx.report("E218", f"\"{entry.name}\" is a link to nothing, so Triton cannot list the model folder; "
                                   "remove it or fix its target.", model, file=Path(entry.path))


def _check_name(ctx: Context, model: Model, config_file: ConfigFile) -> None:
    name = config_file.config.name
    if name and name != model.name:
        ctx.report("E201", f"config says name \"{name}\" but the folder is \"{model.name}\"; rename one so they "
                           "match (or drop `name`).", model, config_file, ("name",))


def triton_versions(model: Model, config: ModelConfig, extra: int | None = None) -> list[int]:
    """The versions Triton's version policy selects on disk (`latest` with num_versions 0 selects none), counting
    `extra` as one more version when given."""
    on_disk = sorted(set(model.versions) | ({extra} if extra is not None else set()))
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return on_disk
    if choice == "specific":
        return [v for v in on_disk if v in set(policy.specific.versions)]
    count = policy.latest.num_versions if choice == "latest" else 1
    return on_disk[max(len(on_disk) - count, 0):] if count > 0 else []


def read_as_version(name: str) -> int | None:
    """The version Triton reads from a folder name that is not a plain number ("2_old" is 2), or None if it skips it."""
    if name in SKIPPED_DIRS or (len(name) > 1 and name.startswith("0")):
        return None
    match = _STOLL.match(name)
    return int(match[0]) if match else None


def _check_versions(ctx: Context, model: Model, config: ModelConfig) -> None:
    for folder in [str(v) for v in model.versions] + model.ignored_dirs:
        number = read_as_version(folder)
        if number is not None and not INT64_MIN <= number <= INT64_MAX:
            ctx.report("E223", f"folder \"{folder}\" starts with a number beyond 64 bits: reading it as a version "
                               "makes Triton abort, taking the whole server down; rename the folder.", model,
                       file=model.path / folder)
    for ignored in model.ignored_dirs:
        number = read_as_version(ignored)
        # Triton counts such a version, then loads it from the folder named by the plain number, which is absent.
        if number is not None and number not in model.versions and number in triton_versions(model, config, number):
            ctx.report("E222", f"Triton reads folder \"{ignored}\" as version {number} and then looks for "
                               f"{model.name}/{number}/, which does not exist; rename the folder.", model,
                       file=model.path / ignored)
            continue
        if ignored.isdigit():
            ctx.report("W203", f"version folder \"{ignored}\" has a leading zero, so Triton ignores it; rename it "
                               f"to \"{int(ignored)}\".", model, file=model.path / ignored)
        elif ignored not in EXPECTED_DIRS and not ignored.startswith("."):
            ctx.report("W202", f"folder \"{ignored}\" is not a version number, so Triton ignores it; move it into "
                               "a version folder or out of the repository.", model, file=model.path / ignored)
    policy = config.version_policy
    if not model.versions:
        ctx.report("E204", f"no version folder; put the model files in {model.name}/1/ (an ensemble needs an "
                           "empty one).", model, path=("version_policy",))
    elif not triton_versions(model, config):
        if policy.WhichOneof("policy_choice") == "latest":
            ctx.report("E205", "version_policy latest asks for 0 versions, so Triton serves none; set num_versions "
                               "to 1 or more.", model, path=("version_policy",))
        else:
            wanted = ", ".join(str(v) for v in policy.specific.versions) or "none"
            ctx.report("E205", f"version_policy asks for version(s) {wanted} but the folders on disk are "
                               f"{', '.join(map(str, sorted(model.versions)))}; fix the policy or add the folders.",
                       model, path=("version_policy",))
    elif policy.HasField("specific"):
        missing = sorted(set(policy.specific.versions) - set(model.versions))
        if missing:
            ctx.report("W215", f"version_policy asks for version(s) {', '.join(map(str, missing))}, which have no "
                               "folder, so Triton serves the others only; add the folders or drop them from the "
                               "policy.", model, path=("version_policy",))


def _check_backend(ctx: Context, model: Model, config_file: ConfigFile) -> None:
    config = config_file.config
    if not config.backend and not config.platform:
        if config.HasField("ensemble_scheduling"):
            return
        if config.default_model_filename:
            guess = dict(GUESSED_BACKENDS).get(config.default_model_filename)
        else:
            guess = guessed_backend(model)
        if guess is None:
            ctx.report("E213", "neither `backend` nor `platform` is set and no file in the first sub-folder names a "
                               "backend, so Triton refuses the model; add e.g. backend: \"python\".",
                       model, config_file)
        else:
            ctx.report("W206", f"neither `backend` nor `platform` is set, so Triton guesses \"{guess}\" from file "
                               f"names; write backend: \"{guess}\".", model, config_file)
        return
    implied = PLATFORM_BACKENDS.get(config.platform)
    if config.platform and implied is None and not config.backend:
        ctx.report("E207", f"unknown platform \"{config.platform}\"; use one of "
                           f"{', '.join(sorted(PLATFORM_BACKENDS))} or set `backend` instead.",
                   model, config_file, ("platform",))
    elif config.platform and config.backend and implied != config.backend and config.platform != ENSEMBLE_PLATFORM:
        if config.backend in TYPED_BACKENDS:
            ctx.report("E214", f"backend \"{config.backend}\" does not serve platform \"{config.platform}\", so Triton "
                               "refuses the pair; drop `platform` or make it match.", model, config_file, ("backend",))
        else:
            ctx.report("W209", f"platform \"{config.platform}\" is not served by backend \"{config.backend}\"; Triton "
                               "goes by `backend` and ignores it: drop `platform`.", model, config_file, ("platform",))
    near = _shipped_backend_like(config.backend)
    if near is not None and not _ships_backend(model, config.backend):
        ctx.report("E225", f"backend \"{config.backend}\" is not \"{near}\": Triton looks the name up as it is "
                           f"(backends/{config.backend}/libtriton_{config.backend}.so) and finds no such backend; "
                           f"write backend: \"{near}\".", model, config_file, ("backend",))
    elif config.backend and config.backend not in KNOWN_BACKENDS and not _ships_backend(model, config.backend):
        ctx.report("W208", f"backend \"{config.backend}\" is not a Triton backend; check the spelling, or install "
                           "it as a custom backend on every server.", model, config_file, ("backend",))


def _shipped_backend_like(backend: str) -> str | None:
    """The Triton backend a misspelt name stands for (other case, blanks around it), or None."""
    if backend in KNOWN_BACKENDS:
        return None
    return next((known for known in sorted(KNOWN_BACKENDS) if known == backend.strip().lower()), None)


def _ships_backend(model: Model, backend: str) -> bool:
    """Whether the model carries its backend's library itself (Triton looks in the version and model folders)."""
    library = f"libtriton_{backend}.so"
    return (model.path / library).is_file() or any(library in v.files for v in model.versions.values())


def _check_referenced_files(ctx: Context, model: Model, config_file: ConfigFile) -> None:
    """Files the config names that Triton reads at load time: label files and the custom batching library."""
    config = config_file.config
    for index, output in enumerate(config.output):
        if output.label_filename and not os.access(model.path / output.label_filename, os.R_OK):
            ctx.report("E216", f"output \"{output.name}\" names label file \"{output.label_filename}\", which is not a "
                               f"readable file in {model.name}/; add it or drop label_filename.", model, config_file,
                       ("output", index, "label_filename"))
    if BATCH_STRATEGY_PARAMETER in config.parameters:
        where = ("parameters",)
        library = config.parameters[BATCH_STRATEGY_PARAMETER].string_value
        if config.HasField("sequence_batching"):
            ctx.report("E221", f"{BATCH_STRATEGY_PARAMETER} cannot be used with sequence_batching; drop one of the "
                               "two.", model, config_file, where)
        elif Path(library).is_absolute() and not Path(library).exists():
            ctx.report("E221", f"{BATCH_STRATEGY_PARAMETER} names {library}, which does not exist; build it there or "
                               "drop the parameter.", model, config_file, where)


def _check_model_files(ctx: Context, model: Model, config: ModelConfig) -> list[Path]:
    """E210-E212; returns the Python model files that compile, for the import check."""
    filename = model_file(config)
    if filename is None or model.is_ensemble:
        return []
    compiled = []
    for number in model.served_versions(config):
        version = model.versions[number]
        if filename not in version.files:
            ctx.report("E210", f"version {number} has no {filename}, which the {effective_backend(config)} backend "
                               "loads; add it or change default_model_filename.", model, file=version.path)
        elif effective_backend(config) == PYTHON_BACKEND:
            path = version.path / filename
            info = ctx.python_model(path)
            if info.error is not None:
                ctx.report("E211", f"{filename} does not compile ({info.error}); fix the Python source.",
                           model, file=path, line=info.error_line)
            elif not (info.has_class and info.has_execute):
                ctx.report("E212", f"{filename} must define class TritonPythonModel with an execute(self, requests) "
                                   "method; add it.", model, file=path)
            else:
                compiled.append(path)
    return compiled


def _check_runtime(ctx: Context, model: Model, config_file: ConfigFile) -> None:
    """`runtime` on a Python-backend model: Triton looks for that exact library in the served version folder, the model
    folder and the Python backend's folder (which holds libtriton_python.so and no model.py)."""
    config = config_file.config
    runtime = config.runtime
    if not runtime or effective_backend(config) != PYTHON_BACKEND or runtime == PYTHON_RUNTIME_LIBRARY:
        return
    if runtime == PYTHON_BASED_RUNTIME:
        reason = ("makes Triton treat the model as a Python-based backend and look for "
                  f"backends/{PYTHON_BACKEND}/{PYTHON_BASED_RUNTIME}, which the Python backend does not have")
    elif (model.path / runtime).is_file() or any(runtime in model.versions[v].files
                                                  for v in model.served_versions(config) if v in model.versions):
        return
    else:
        reason = "names a library found neither in the version folder, the model folder nor the Python backend's"
    ctx.report("E226", f"runtime \"{runtime}\" {reason}, so Triton refuses the model; drop `runtime` (the Python "
                       "backend loads model.py by itself).", model, config_file, ("runtime",))


def _check_python_parameters(ctx: Context, model: Model, config_file: ConfigFile) -> None:
    """The Python backend's own model parameters, which it reads when the model loads."""
    config = config_file.config
    if effective_backend(config) != PYTHON_BACKEND or FORCE_CPU_ONLY not in config.parameters:
        return
    value = config.parameters[FORCE_CPU_ONLY].string_value
    if value not in ("yes", "no"):
        ctx.report("E224", f"parameter {FORCE_CPU_ONLY} is \"{value}\", but the Python backend takes only \"yes\" or "
                           "\"no\" (lower case) and refuses the model otherwise; set one of them.", model, config_file,
                   ("parameters",))


def check(ctx: Context) -> None:
    _check_root(ctx)
    python_models: list[python_env.PythonModel] = []
    for model in ctx.repository.models.values():
        files = ctx.config_files(model)
        for config_file in files:
            _check_name(ctx, model, config_file)
            _check_backend(ctx, model, config_file)
            _check_referenced_files(ctx, model, config_file)
            _check_python_parameters(ctx, model, config_file)
            _check_runtime(ctx, model, config_file)
        if model.config is not None:
            _check_versions(ctx, model, model.config)
            python_files = _check_model_files(ctx, model, model.config)
            if effective_backend(model.config) == PYTHON_BACKEND:
                python_models.append(python_env.PythonModel(model, model.config, python_files))
    python_env.check(ctx, python_models)

