"""Offline validation of a Triton model repository: rules by category, one module each.

`validate` runs every rule over a loaded `Repository` and returns the findings, sorted and with
silenced ones removed; the reporters turn them into human, JSON or SARIF output.
"""

from __future__ import annotations

from tools.repository import ConfigFile, Repository, parse_config_text
from tools.validation import ensembles, layout, production, semantics, syntax
from tools.validation.context import Context, Options, Target
from tools.validation.findings import RULES, Finding, Severity, has_errors
from tools.validation.suppress import SettingsError, Silenced, load_silenced

RULE_MODULES = (syntax, layout, semantics, ensembles, production)

__all__ = ["RULES", "Finding", "Options", "SettingsError", "Severity", "Target", "blocking_errors", "has_errors",
           "load_silenced", "validate"]


def _sort_key(finding: Finding) -> tuple:
    return (finding.model or "", str(finding.file or ""), finding.line or 0, finding.code, finding.message)


def validate(repository: Repository, options: Options | None = None,
             silenced: Silenced | None = None) -> list[Finding]:
    """Every finding for the repository, grouped by model and ordered by file position."""
    ctx = Context(repository, options or Options())
    for module in RULE_MODULES:
        module.check(ctx)
    found = [f for f in ctx.findings if silenced is None or not silenced.hides(f)]
    return sorted(set(found), key=_sort_key)


def blocking_errors(repository: Repository, name: str, candidate: ConfigFile,
                    options: Options | None = None) -> list[Finding]:
    """Errors that forbid making `candidate` the config of model `name`.

    Any error in the model itself blocks, and so does any error the change introduces elsewhere
    (an ensemble that uses the model, say); errors that were already there elsewhere do not.
    """
    def errors() -> list[Finding]:
        return [f for f in validate(repository, options) if f.severity is Severity.ERROR]

    model = repository.models[name]
    previous = model.config_file
    try:
        # The caller may have edited the live config object in place: judge "before" by the text on disk.
        if previous is not None and previous.text is not None:
            model.config_file = ConfigFile(previous.path, previous.text, *parse_config_text(previous.text))
        before = {(f.code, f.model, f.message) for f in errors()}
        model.config_file = candidate
        after = errors()
    finally:
        model.config_file = previous
    return [f for f in after if f.model == name or (f.code, f.model, f.message) not in before]
