"""Options several commands share, spelled and documented once."""

from __future__ import annotations

from pathlib import Path

import typer

from tools import settings

# Defaults are shown as what they mean, never as a path of the machine that wrote the help.
REPOSITORY_HELP = "Model repository (default: ./model_repository)."


def repository_argument(help: str = REPOSITORY_HELP) -> Path:
    return typer.Argument(settings.MODEL_REPOSITORY, help=help, show_default=False)


def repository_option(help: str = REPOSITORY_HELP) -> Path:
    return typer.Option(settings.MODEL_REPOSITORY, "--repository", help=help, show_default=False)


def url_option() -> str | None:
    return typer.Option(None, "--url", envvar=settings.URL_ENV, show_default=False,
                        help="A running server: host:port, http://host:port or grpc://host:port "
                             "(default: this machine's default port of the protocol).")


def protocol_option() -> settings.Protocol | None:
    return typer.Option(None, "--protocol", case_sensitive=False, show_default=False,
                        help=f"Protocol to call the server with (default: the URL's scheme, else "
                             f"{settings.DEFAULT_PROTOCOL}).")


def model_option(help: str = "Model to call.") -> str:
    return typer.Option(settings.EMBED_MODEL, "--model", "-m", help=help)


def model_version_option() -> str:
    return typer.Option("", "--model-version", show_default=False,
                        help="Model version (default: the server's choice by the version policy).")


def control_key_option(help: str = "Secret of the model-control API (default: the key `tools serve` left for you).") \
        -> str | None:
    return typer.Option(None, "--control-key", envvar=settings.CONTROL_KEY_ENV, show_default=False, help=help)


def param_option() -> list[str]:
    return typer.Option([], "--param", show_default=False,
                        help="A request parameter key=value, repeatable; the value is typed as JSON reads it "
                             "(max_tokens=16, temperature=0.5, stream=false, stop='[\"\\n\"]'), else a string.")


def shape_option() -> list[str]:
    return typer.Option([], "--input-shape", show_default=False,
                        help="Dims of a variable-size input, name:d1,d2 (no batch dimension; repeatable), what "
                             "perf_analyzer calls --shape; a variable dim is 1 otherwise.")


def input_data_option() -> Path | None:
    return typer.Option(None, "--input-data", show_default=False, exists=False,
                        help="Inputs from a JSON file in perf_analyzer's --input-data format ({\"data\": [{INPUT: "
                             "value, ...}, ...]}, one object per request; values as lists, {content, shape} or {b64}).")


def text_input_option() -> str | None:
    return typer.Option(None, "--text-input", show_default=False,
                        help="Input that takes the texts (default: the model's first required BYTES input, else its "
                             "first BYTES input).")
