"""The `tools validate` command's work: load, check (offline, then optionally on a server), fix, report, exit code."""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable
from dataclasses import replace
from enum import StrEnum
from pathlib import Path

from rich.console import Console

from tools.errors import UsageError, ValidationError
from tools.repository import Repository, load_repository
from tools.validation import Options, Target, has_errors, load_silenced, validate
from tools.validation.context import DEFAULT_CORES
from tools.validation.findings import Finding, Severity
from tools.validation.fix import FIXABLE, Outcome
from tools.validation.fix import fix as fix_findings
from tools.validation.python_env import interpreter_of
from tools.validation.reporters import print_grouped, print_lines, to_github, to_json, to_junit, to_sarif
from tools.validation.suppress import load_cores

EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class OutputFormat(StrEnum):
    HUMAN = "human"  # one `path:line:col: CODE message` line per finding, then a summary
    GROUPED = "grouped"  # a block per model
    JSON = "json"
    SARIF = "sarif"
    GITHUB = "github"  # workflow annotations
    JUNIT = "junit"


def exit_code(findings: list[Finding], strict: bool) -> int:
    if has_errors(findings) or (strict and any(f.severity is Severity.WARNING for f in findings)):
        return EXIT_FINDINGS
    return EXIT_CLEAN


def check_offline(path: Path, target: Target = Target.CPU, cores: int | None = None,
                  select: Iterable[str] | None = None, ignore: Iterable[str] = (),
                  gate: bool = False, python_env: Path | None = None) -> tuple[Repository, list[Finding]]:
    """Load the repository and run every offline rule, honouring the selection and suppression comments (bad
    settings: SettingsError). `gate`: report every code Triton refuses, whatever the selection says.

    The target's cores are `cores` if given, else pyproject.toml's `cores`, else DEFAULT_CORES: never this machine's.
    Python models' imports are resolved with `python_env` (an interpreter or a venv), else with the stubs' own.
    """
    repository = load_repository(path)
    if cores is None:
        cores = load_cores(repository) or DEFAULT_CORES
    interpreter = interpreter_of(python_env) if python_env is not None else None
    silenced = replace(load_silenced(repository, select=select, ignore=ignore), gate=gate)
    options = Options(target=target, cores=cores, python_env=interpreter)
    return repository, validate(repository, options, silenced)


def run_validation(path: Path, fmt: OutputFormat = OutputFormat.HUMAN, strict: bool = False,
                   target: Target = Target.CPU, server: bool = False, console: Console | None = None,
                   cores: int | None = None, select: Iterable[str] | None = None, ignore: Iterable[str] = (),
                   fix: bool = False, diff: bool = False,
                   python_env: Path | None = None) -> int:
    """Validate the repository at `path` and print the report; returns the process exit code.

    `fix` rewrites what is mechanical and reports what remains; `diff` only shows those fixes (exit 1 if any)."""
    console = console or Console(stderr=True)
    _require_folder(path)
    repository, findings = check_offline(path, target, cores, select, ignore, python_env=python_env)
    if diff:
        return _show_fixes(repository, findings, console)
    if fix and _apply_fixes(repository, findings, console):
        repository, findings = check_offline(path, target, cores, select, ignore, python_env=python_env)
    if server:
        from tools.validation.server import check_with_server  # starts processes: only imported when asked

        selection = load_silenced(repository, select=select, ignore=ignore)
        with console.status("loading models in tritonserver...") as status:
            findings += [f for f in check_with_server(repository, lambda n: status.update(f"tritonserver: loading {n}"))
                         if selection.selects(f)]
    _print_report(findings, fmt, repository)
    return exit_code(findings, strict)


def _not_fixed(outcome: Outcome, console: Console) -> None:
    for finding, reason in outcome.left:
        console.print(f"not fixed: {finding.code} {finding.model or ''}: {reason}", highlight=False, soft_wrap=True,
                      markup=False)


def _show_fixes(repository: Repository, findings: list[Finding], console: Console) -> int:
    """--diff: the fixes as a patch on stdout, nothing written; exit 1 when there is something to fix."""
    outcome = fix_findings(repository, findings, write=False)
    _not_fixed(outcome, console)
    sys.stdout.write("".join(outcome.diffs))
    console.print(f"would fix {len(outcome.fixed)} finding(s); --fix applies them", highlight=False)
    return EXIT_FINDINGS if outcome.fixed else EXIT_CLEAN


def _apply_fixes(repository: Repository, findings: list[Finding], console: Console) -> bool:
    """--fix: write the fixes, show them as a patch on stderr (stdout keeps the report); whether anything changed."""
    outcome = fix_findings(repository, findings, write=True)
    _not_fixed(outcome, console)
    if outcome.fixed:
        console.out("".join(outcome.diffs), highlight=False, end="")
        fixed = ", ".join(f"{f.code} {f.model}" for f in outcome.fixed)
        console.print(f"fixed {len(outcome.fixed)} finding(s): {fixed}", highlight=False, markup=False)
    return bool(outcome.fixed)


def _print_report(findings: list[Finding], fmt: OutputFormat, repository: Repository) -> None:
    if fmt in (OutputFormat.HUMAN, OutputFormat.GROUPED):
        printer = print_lines if fmt is OutputFormat.HUMAN else print_grouped
        fixable = len(fix_findings(repository, findings, write=False).fixed) if FIXABLE & {f.code for f in findings} \
            else 0
        printer(findings, Console(), len(repository.models), fixable)
        return
    text = {OutputFormat.JSON: to_json, OutputFormat.SARIF: to_sarif, OutputFormat.GITHUB: to_github,
            OutputFormat.JUNIT: lambda found: to_junit(found, repository.models)}[fmt](findings)
    sys.stdout.write(text + "\n" if text else "")


def _require_folder(path: Path) -> None:
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory (expected a Triton model repository)")


def refuse_errors(path: Path, console: Console, refusing: str, target: Target = Target.CPU,
                  deferred: Collection[str] = ()) -> None:
    """The offline gate in front of `tools serve` and `tools deploy`: print the errors (warnings only counted) on
    `console` and raise ValidationError ending in `refusing` (what was not done) when there are any.

    `deferred`: models loaded only once their requirements are installed: their missing modules (E219) and pins (W228)
    are expected, and the caller says so.
    """
    _require_folder(path)
    repository, findings = check_offline(path, target, gate=True)
    findings = [f for f in findings if not (f.code in ("E219", "W228") and f.model in deferred)]
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        print_lines(errors, console, len(repository.models))
        raise ValidationError(f"{path} has configuration errors (listed above); {refusing}")
    if findings:
        console.print(f"validate: {len(findings)} warning(s); `tools validate {path}` lists them", highlight=False)
