"""1xx: can the repository and each config be read and parsed at all."""

from __future__ import annotations

from tools.repository import CONFIG_FILE, ConfigFile, Model
from tools.validation.context import Context
from tools.validation.layout import PYTHON_BACKEND, guessed_backend


def _check_file(ctx: Context, model: Model, config_file: ConfigFile) -> None:
    error = config_file.error
    if error is None:
        return
    if config_file.text is None:
        ctx.report("E102", f"{error.message}; make it a readable UTF-8 text file.", model, config_file)
    else:
        ctx.report("E103", f"{error.message}; fix the protobuf text (field names and types are those of "
                           "ModelConfig).", model, config_file)


def check(ctx: Context) -> None:
    repository = ctx.repository
    if repository.error is not None:
        ctx.report("E104", f"{repository.error.message}; point the command at a readable model repository.",
                   file=repository.root)
    for model in repository.models.values():
        for path, error in model.read_errors:
            ctx.report("E102", f"{error.message}; fix the permissions or remove the entry.", model, file=path)
        if model.config_file is None:
            backend = guessed_backend(model)
            if backend is None:
                ctx.report("E213", f"no {CONFIG_FILE} and no file in the first sub-folder names a backend, so Triton "
                                   f"refuses the model; add {model.name}/{CONFIG_FILE} with its backend.",
                           model, file=model.path / CONFIG_FILE)
            elif backend == PYTHON_BACKEND:
                ctx.report("W101", f"no {CONFIG_FILE}, so Triton guesses the Python backend and the model runs with "
                                   f"no declared inputs, outputs or batching; add {model.name}/{CONFIG_FILE}.",
                           model, file=model.path / CONFIG_FILE)
            else:
                ctx.report("W105", f"no {CONFIG_FILE}: the {backend} backend will guess one from the model file; "
                                   "write it down so batching and instances are under your control.", model,
                           file=model.path / CONFIG_FILE)
            continue
        _check_file(ctx, model, model.config_file)
        for variant in model.variants.values():
            _check_file(ctx, model, variant)
