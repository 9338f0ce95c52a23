"""1xx: can the repository and each config be read and parsed at all."""

from __future__ import annotations

import re

from tools.repository import CONFIG_FILE, ConfigFile, Model
from tools.validation.context import Context
from tools.validation.layout import PYTHON_BACKEND, guessed_backend

# Protobuf's C++ tokenizer, which Triton parses with, accepts only these escapes in a string literal (Python's
# text_format lets any other `\\c` through as the two characters).
_VALID_ESCAPE = re.compile(r"""\\(?:[abfnrtv\\?'"]|[0-7]|x[0-9a-fA-F]|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})""")
_STRING_OR_COMMENT = re.compile(r"""#[^\n]*|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'""")


# ModelConfig fields the Python protobuf (tritonclient's, newer) knows but Triton 2.51's (r24.10) does not: its parser
# refuses them as unknown fields. Both names occur nowhere else in ModelConfig.
NEWER_THAN_TRITON = ("model_metrics", "max_inflight_requests")
_NEWER_FIELD = re.compile(rf"\b({'|'.join(NEWER_THAN_TRITON)})\s*[:{{<]")


# A number written with a leading "+": Python's text_format takes it, protobuf's C++ parser accepts only "-".
_PLUS_NUMBER = re.compile(r"[:\[,]\s*(\+)\s*[0-9.]")


def _code_only(text: str) -> str:
    """The text with comments and string literals blanked out (line breaks kept)."""
    return _STRING_OR_COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m[0]), text)


def newer_field(text: str) -> tuple[int, str] | None:
    """Line and name of the first field Triton 2.51's parser does not know, if any (comments and strings skipped)."""
    code = _code_only(text)
    match = _NEWER_FIELD.search(code)
    return (code.count("\n", 0, match.start()) + 1, match[1]) if match else None


def plus_signed_number(text: str) -> int | None:
    """Line of the first number written with a leading "+", which Triton's parser refuses, if any."""
    code = _code_only(text)
    match = _PLUS_NUMBER.search(code)
    return code.count("\n", 0, match.start(1)) + 1 if match else None


def bad_escape(text: str) -> tuple[int, int, str] | None:
    """Line, column and text of the first escape in a string literal that Triton's parser refuses, if any."""
    for literal in _STRING_OR_COMMENT.finditer(text):
        if literal[0].startswith("#"):
            continue
        for escape in re.finditer(r"\\.", literal[0]):
            if not _VALID_ESCAPE.match(literal[0], escape.start()):
                offset = literal.start() + escape.start()
                line = text.count("\n", 0, offset) + 1
                return line, offset - (text.rfind("\n", 0, offset) + 1) + 1, escape[0]
    return None


def _check_file(ctx: Context, model: Model, config_file: ConfigFile) -> None:
    error = config_file.error
    if error is None:
        escape = bad_escape(config_file.text or "")
        if escape is not None:
            line, column, sequence = escape
            ctx.report("E103", f"{line}:{column}: invalid escape sequence {sequence} in a string literal, which "
                               "Triton's parser refuses; write the character itself or a valid escape (\\n, \\t, "
                               "\\\\, \\\", \\xHH, \\uHHHH).", model, file=config_file.path, line=line)
        plus = plus_signed_number(config_file.text or "")
        if plus is not None:
            ctx.report("E103", f"{plus}: a number written with a leading \"+\", which Triton's parser refuses "
                               "(only \"-\" may sign a number); drop the \"+\".", model, file=config_file.path,
                       line=plus)
        newer = newer_field(config_file.text or "")
        if newer is not None:
            line, name = newer
            ctx.report("E103", f"{line}: `{name}` is a ModelConfig field newer than Triton 2.51, whose parser refuses "
                               "it as unknown; drop it (or upgrade the server).", model, file=config_file.path,
                       line=line)
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
