"""2xx: the repository's layout: names, version folders, backends and the files each backend loads."""

from __future__ import annotations

from tools.repository import ENSEMBLE_PLATFORM, VARIANTS_DIR, ConfigFile, Model, ModelConfig
from tools.validation.context import Context

PYTHON_BACKEND = "python"
WARMUP_DIR = "warmup"  # where model_warmup's input_data_file lives
# Folders that belong in a model folder without being versions.
EXPECTED_DIRS = frozenset({VARIANTS_DIR, WARMUP_DIR, "__pycache__"})
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


def effective_backend(config: ModelConfig) -> str:
    """The backend Triton will use: `backend`, else the one the platform implies."""
    return config.backend or PLATFORM_BACKENDS.get(config.platform, "")


def model_file(config: ModelConfig) -> str | None:
    """The file a served version must hold for this config's backend, when we know it."""
    if config.default_model_filename:
        return config.default_model_filename
    return PLATFORM_MODEL_FILES.get(config.platform) or DEFAULT_MODEL_FILES.get(effective_backend(config))


def _check_name(ctx: Context, model: Model, config_file: ConfigFile) -> None:
    name = config_file.config.name
    if name and name != model.name:
        ctx.report("E201", f"config says name \"{name}\" but the folder is \"{model.name}\"; rename one so they "
                           "match (or drop `name`).", model, config_file, ("name",))


def _check_versions(ctx: Context, model: Model, config: ModelConfig) -> None:
    for ignored in model.ignored_dirs:
        if ignored.isdigit():
            ctx.report("W203", f"version folder \"{ignored}\" has a leading zero, so Triton ignores it; rename it "
                               f"to \"{int(ignored)}\".", model, file=model.path / ignored)
        elif ignored not in EXPECTED_DIRS and not ignored.startswith("."):
            ctx.report("W202", f"folder \"{ignored}\" is not a version number, so Triton ignores it; move it into "
                               "a version folder or out of the repository.", model, file=model.path / ignored)
    if not model.versions:
        ctx.report("E204", f"no version folder; put the model files in {model.name}/1/ (an ensemble needs an "
                           "empty one).", model, path=("version_policy",))
    elif not model.served_versions(config):
        wanted = ", ".join(str(v) for v in config.version_policy.specific.versions)
        ctx.report("E205", f"version_policy asks for version(s) {wanted} but the folders on disk are "
                           f"{', '.join(map(str, sorted(model.versions)))}; fix the policy or add the folders.",
                   model, path=("version_policy",))


def _check_backend(ctx: Context, model: Model, config_file: ConfigFile) -> None:
    config = config_file.config
    if not config.backend and not config.platform:
        if not config.HasField("ensemble_scheduling"):
            ctx.report("E206", "neither `backend` nor `platform` is set, so Triton guesses from file names; add e.g. "
                                "backend: \"python\".",
                       model, config_file)
        return
    if config.platform and config.platform not in PLATFORM_BACKENDS:
        ctx.report("E207", f"unknown platform \"{config.platform}\"; use one of "
                           f"{', '.join(sorted(PLATFORM_BACKENDS))} or set `backend` instead.",
                   model, config_file, ("platform",))
    elif config.platform and config.backend and PLATFORM_BACKENDS[config.platform] != config.backend:
        ctx.report("E209", f"platform \"{config.platform}\" is served by backend "
                           f"\"{PLATFORM_BACKENDS[config.platform] or 'none (ensemble)'}\", not \"{config.backend}\"; "
                           "drop one of the two.", model, config_file, ("backend",))
    if config.backend and config.backend not in KNOWN_BACKENDS:
        ctx.report("W208", f"backend \"{config.backend}\" is not a Triton backend; check the spelling, or install "
                           "it as a custom backend on every server.", model, config_file, ("backend",))


def _check_model_files(ctx: Context, model: Model, config: ModelConfig) -> None:
    filename = model_file(config)
    if filename is None or model.is_ensemble:
        return
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


def check(ctx: Context) -> None:
    for model in ctx.repository.models.values():
        files = ctx.config_files(model)
        for config_file in files:
            _check_name(ctx, model, config_file)
            _check_backend(ctx, model, config_file)
        if model.config is not None:
            _check_versions(ctx, model, model.config)
            _check_model_files(ctx, model, model.config)

