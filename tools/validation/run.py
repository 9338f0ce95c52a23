"""The `tools validate` command's work: load, check (offline, then optionally on a server), report, exit code."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

from rich.console import Console

from tools.errors import UsageError, ValidationError
from tools.repository import Repository, load_repository
from tools.validation import Options, Target, has_errors, load_silenced, validate
from tools.validation.context import DEFAULT_CORES
from tools.validation.findings import Finding, Severity
from tools.validation.python_env import interpreter_of
from tools.validation.reporters import print_human, to_json, to_sarif
from tools.validation.suppress import load_cores

EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class OutputFormat(StrEnum):
    HUMAN = "human"
    JSON = "json"
    SARIF = "sarif"


def exit_code(findings: list[Finding], strict: bool) -> int:
    if has_errors(findings) or (strict and any(f.severity is Severity.WARNING for f in findings)):
        return EXIT_FINDINGS
    return EXIT_CLEAN


def check_offline(path: Path, target: Target = Target.CPU, cores: int | None = None,
                  python_env: Path | None = None) -> tuple[Repository, list[Finding]]:
    """Load the repository and run every offline rule, honouring silencing (a bad settings table: SettingsError).

    The target's cores are `cores` if given, else pyproject.toml's `cores`, else DEFAULT_CORES: never this machine's.
    Python models' imports are resolved with `python_env` (an interpreter or a venv), else with the stubs' own.
    """
    repository = load_repository(path)
    if cores is None:
        cores = load_cores(repository) or DEFAULT_CORES
    interpreter = interpreter_of(python_env) if python_env is not None else None
    return repository, validate(repository, Options(target=target, cores=cores, python_env=interpreter),
                                load_silenced(repository))


def run_validation(path: Path, fmt: OutputFormat = OutputFormat.HUMAN, strict: bool = False,
                   target: Target = Target.CPU, server: bool = False, console: Console | None = None,
                   cores: int | None = None, python_env: Path | None = None) -> int:
    """Validate the repository at `path` and print the report; returns the process exit code."""
    console = console or Console(stderr=True)
    _require_folder(path)
    repository, findings = check_offline(path, target, cores, python_env)
    if server:
        from tools.validation.server import check_with_server  # starts processes: only imported when asked

        with console.status("loading models in tritonserver...") as status:
            findings += check_with_server(repository, lambda name: status.update(f"tritonserver: loading {name}"))
    if fmt is OutputFormat.HUMAN:
        print_human(findings, Console(), len(repository.models))
    else:
        sys.stdout.write((to_json(findings) if fmt is OutputFormat.JSON else to_sarif(findings)) + "\n")
    return exit_code(findings, strict)


def _require_folder(path: Path) -> None:
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory (expected a Triton model repository)")


def refuse_errors(path: Path, console: Console, refusing: str, target: Target = Target.CPU) -> None:
    """The offline gate in front of `tools serve` and `tools deploy`: print the errors (warnings only counted) on
    `console` and raise ValidationError ending in `refusing` (what was not done) when there are any."""
    _require_folder(path)
    repository, findings = check_offline(path, target)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        print_human(errors, console, len(repository.models))
        raise ValidationError(f"{path} has configuration errors (listed above); {refusing}")
    if findings:
        console.print(f"validate: {len(findings)} warning(s); `tools validate {path}` lists them", highlight=False)
