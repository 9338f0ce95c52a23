"""Offline validation of a Triton model repository: rules by category, one module each.

`validate` runs every rule over a loaded `Repository` and returns the findings, sorted, with what the selection and
suppression comments silence removed (and unused suppressions reported); `reporters` turns them into text.
"""

from __future__ import annotations

from pathlib import Path

from tools.errors import ValidationError
from tools.repository import CONFIG_FILE, ConfigFile, ModelConfig, Repository, parse_config_text, replace_config
from tools.validation import ensembles, layout, production, semantics, syntax
from tools.validation.context import DEFAULT_CORES, Context, Options, Target
from tools.validation.findings import RULES, Finding, Severity, has_errors
from tools.validation.suppress import SettingsError, Silenced, load_silenced

RULE_MODULES = (syntax, layout, semantics, ensembles, production)

__all__ = ["DEFAULT_CORES", "RULES", "ConfigRejectedError", "Finding", "Options", "SettingsError", "Severity",
           "Target", "blocking_errors", "has_errors", "load_silenced", "validate", "write_config"]


def _sort_key(finding: Finding) -> tuple:
    return (finding.model or "", str(finding.file or ""), finding.line or 0, finding.code, finding.message)


def validate(repository: Repository, options: Options | None = None,
             silenced: Silenced | None = None) -> list[Finding]:
    """Every finding for the repository, grouped by model and ordered by file position."""
    ctx = Context(repository, options or Options())
    for module in RULE_MODULES:
        module.check(ctx)
    found = ctx.findings if silenced is None else silenced.apply(ctx.findings)
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


class ConfigRejectedError(ValidationError):
    """A config write-back was refused because validation found errors; `findings` says which."""

    def __init__(self, model: str, findings: list[Finding]):
        self.findings = findings
        super().__init__(f"refusing to write {model}/{CONFIG_FILE}: "
                         + "; ".join(f"{f.code} {f.message}" for f in findings))


def write_config(repository: Repository, name: str, config: ModelConfig) -> Path:
    """The one way to change a config on disk: validated (`blocking_errors`), then replaced atomically."""
    def accept(candidate: ConfigFile) -> None:
        errors = blocking_errors(repository, name, candidate)
        if errors:
            raise ConfigRejectedError(name, errors)

    return replace_config(repository, name, config, accept)
