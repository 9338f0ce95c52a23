"""Which findings `tools validate` reports: code selection (select/ignore) and suppression comments in configs.

pyproject.toml:   [tool.tools-validate]  select = ["E", "W5"]  ignore = ["W502"]  per-model = { embed = ["W503"] }
                  cores = 4
command line:     --select E3,W   (replaces `select`)   --ignore W505   (adds to `ignore`)
config.pbtxt:     max_batch_size: 8  # tools: ignore[W505]     that line (alone on its line: the next line)
                  # tools: ignore W501, W505                   the whole model (old spelling
                                                               `# tools-validate: ignore W501` still works)
A directive may follow other comment text on its line, and a further `#` after it starts a free-text reason.
A selector is a code or a prefix of codes (`E3`, `W`, `E201`); the longest selector matching a code decides, and on
a tie `ignore` wins (ruff's rule). Only codes for problems Triton itself accepts can be ignored: ignoring one Triton
refuses is a usage error, and a comment naming one is reported (W603). `--select` may narrow the report, but the
serve/deploy gate (`gate=True`) checks every code Triton refuses regardless. `cores` is the target's core count per
server (W502), for when the command line does not give one.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tools.errors import UsageError
from tools.repository import ConfigFile, Repository
from tools.validation.findings import RULES, Finding

SECTION = "tools-validate"
UNUSED, UNKNOWN, UNSILENCEABLE = "W601", "W602", "W603"
# `# tools: ignore[W501, W505]` (a line), `# tools: ignore W501` or `# tools-validate: ignore W501` (the model).
_DIRECTIVE = re.compile(r"\btools(?P<old>-validate)?:\s*ignore\b\s*(?:\[(?P<line>[^\]]*)\]|[=:]?(?P<model>[^#]*))")


class SettingsError(UsageError):
    """pyproject.toml's validate section or a --select/--ignore value is malformed (a usage error)."""


def _matches(selector: str, code: str) -> bool:
    return selector == "ALL" or code.startswith(selector)


def check_selectors(selectors: Iterable[str], where: str, ignoring: bool = False) -> tuple[str, ...]:
    """Selectors upper-cased and checked: each must match some code, and an ignored one only codes Triton accepts."""
    checked = []
    for raw in selectors:
        selector = raw.strip().upper()
        covered = [code for code in RULES if _matches(selector, code)]
        if not selector or not covered:
            raise SettingsError(f"{where}: {raw!r} is not a rule code or a prefix of one (e.g. E201, E3, W)")
        refused = [code for code in covered if RULES[code].triton_rejects]
        if ignoring and refused:
            what = f"{refused[0]} ({RULES[refused[0]].title})" if len(refused) == 1 else ", ".join(refused)
            raise SettingsError(f"{where}: {selector} cannot be ignored: Triton refuses to load a model with {what}; "
                                "fix the config instead (only codes Triton accepts can be ignored)")
        checked.append(selector)
    return tuple(checked)


def split_codes(values: Iterable[str] | None) -> list[str]:
    """Command-line selector values, each comma-separated and the option repeatable: `--select E3,W --select E1`."""
    return [part for value in values or () for part in value.split(",") if part.strip()]


def _decides(selectors: tuple[str, ...], code: str) -> int:
    """How specific the longest matching selector is (-1: none matches); ALL is the least specific."""
    return max((0 if s == "ALL" else len(s) for s in selectors if _matches(s, code)), default=-1)


@dataclass(frozen=True)
class Directive:
    """One suppression comment: the codes it names, where it is, and the line it covers (None: the whole model)."""

    model: str
    file: Path
    line: int
    column: int
    codes: tuple[str, ...]
    covers: int | None


@dataclass
class Silenced:
    """Everything that decides what is reported; `apply` turns all findings into the reported ones."""

    select: tuple[str, ...] = ("ALL",)
    ignore: tuple[str, ...] = ()
    per_model: dict[str, tuple[str, ...]] = field(default_factory=dict)
    directives: list[Directive] = field(default_factory=list)
    gate: bool = False  # the serve/deploy gate: every code Triton refuses is checked, whatever `select` says

    def selects(self, finding: Finding) -> bool:
        code = finding.code
        if self.gate and RULES[code].triton_rejects:
            return True
        ignored = _decides(self.ignore + self.per_model.get(finding.model or "", ()), code)
        return _decides(self.select, code) > ignored

    def apply(self, findings: Iterable[Finding]) -> list[Finding]:
        """Suppression comments first (reporting unused, unknown and unsilenceable ones), then the selection."""
        findings = list(findings)
        kept = [f for f in findings if not any(self._suppresses(d, f) for d in self.directives)]
        return [f for f in kept + self._about_directives(findings) if self.selects(f)]

    @staticmethod
    def _suppresses(directive: Directive, finding: Finding) -> bool:
        return (finding.code in directive.codes and not RULES[finding.code].triton_rejects
                and finding.model == directive.model
                and (directive.covers is None or (finding.file == directive.file and finding.line == directive.covers)))

    def _about_directives(self, findings: list[Finding]) -> list[Finding]:
        """W601-W603: comments that silence nothing, name no rule, or name one Triton refuses."""
        reported = []
        for d in self.directives:
            def report(code: str, message: str, d: Directive = d) -> None:
                reported.append(Finding(code, message, d.model, d.file, d.line, d.column))

            if not d.codes:
                report(UNKNOWN, "suppression comment names no code; list the codes to silence, e.g. "
                                "`# tools: ignore[W501]`.")
            for code in d.codes:
                if code not in RULES:
                    report(UNKNOWN, f"suppression comment names {code}, which is not a rule code; correct or remove "
                                    "it (`tools validate --explain CODE` describes a code).")
                elif RULES[code].triton_rejects:
                    report(UNSILENCEABLE, f"suppression comment names {code}, which cannot be silenced because Triton "
                                          f"refuses to load a model with it ({RULES[code].title}); fix the config and "
                                          "remove the code from the comment.")
                elif not any(self._suppresses(Directive(d.model, d.file, d.line, d.column, (code,), d.covers), f)
                             for f in findings):
                    scope = f"line {d.covers}" if d.covers is not None else f"model {d.model}"
                    report(UNUSED, f"suppression of {code} matches no finding on {scope}; remove it.")
        return reported


def find_pyproject(start: Path) -> Path | None:
    for folder in [start.resolve(), *start.resolve().parents]:
        candidate = folder / "pyproject.toml"
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # a folder we may not search (the unreadable repository itself) holds no settings for us
            continue
    return None


def _section(repository: Repository, pyproject: Path | None) -> tuple[dict, str]:
    """The validate section of the nearest pyproject.toml above the repository (empty if none), and its name."""
    pyproject = pyproject or find_pyproject(repository.root)
    if pyproject is None:
        return {}, ""
    try:
        section = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get(SECTION, {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read {pyproject}: {exc}") from None
    where = f"{pyproject}: [tool.{SECTION}]"
    if not isinstance(section, dict):
        raise SettingsError(f"{where} must be a table")
    return section, where


def load_cores(repository: Repository, pyproject: Path | None = None) -> int | None:
    """The target's core count set in pyproject.toml (`cores = N`), or None when it sets none."""
    section, where = _section(repository, pyproject)
    cores = section.get("cores")
    if cores is None:
        return None
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise SettingsError(f"{where} cores must be a whole number of at least 1, got {cores!r}")
    return cores


def _listed(value: object, where: str, ignoring: bool) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(code, str) for code in value):
        raise SettingsError(f"{where} must be a list of codes or prefixes such as [\"W502\", \"E3\"]")
    return check_selectors(value, where, ignoring)


def load_silenced(repository: Repository, pyproject: Path | None = None, select: Iterable[str] | None = None,
                  ignore: Iterable[str] = ()) -> Silenced:
    """The selection from the nearest pyproject.toml above the repository and the command line (`select` replaces
    the file's, `ignore` adds to it), plus the suppression comments of every config."""
    section, where = _section(repository, pyproject)
    silenced = Silenced()
    if "select" in section:
        silenced.select = _listed(section["select"], f"{where} select", ignoring=False)
    silenced.ignore = _listed(section.get("ignore", []), f"{where} ignore", ignoring=True)
    per_model = section.get("per-model", {})
    if not isinstance(per_model, dict):
        raise SettingsError(f"{where} per-model must be a table of model = [codes]")
    for model, codes in per_model.items():
        silenced.per_model[model] = _listed(codes, f"{where} per-model.{model}", ignoring=True)
    if select is not None:
        silenced.select = check_selectors(select, "--select")
    silenced.ignore += check_selectors(ignore, "--ignore", ignoring=True)
    for model in repository.models.values():
        for config_file in [model.config_file, *model.variants.values()]:
            if config_file is not None:
                silenced.directives += directives(model.name, config_file)
    return silenced


def comment_start(line: str) -> int | None:
    """Where the line's comment starts (0-based), skipping `#` inside quoted strings; None if it has none."""
    quote = None
    escaped = False
    for index, char in enumerate(line):
        if quote:
            escaped = char == "\\" and not escaped
            if char == quote and not escaped:
                quote = None
        elif char in "\"'":
            quote, escaped = char, False
        elif char == "#":
            return index
    return None


def _has_content(line: str) -> bool:
    return bool(line[:comment_start(line)].strip())


def directives(model: str, config_file: ConfigFile) -> list[Directive]:
    """The suppression comments of one config file. A line directive alone on its line covers the next line that
    holds more than a comment."""
    lines = (config_file.text or "").splitlines()
    found = []
    for number, line in enumerate(lines, start=1):
        start = comment_start(line)
        match = _DIRECTIVE.search(line, start) if start is not None else None
        if match is None:
            continue
        if match["line"] is not None and not match["old"]:
            covers = number
            if not _has_content(line):
                covers = next((n for n, text in enumerate(lines[number:], start=number + 1) if _has_content(text)),
                              number)
            codes = match["line"]
        else:
            covers, codes = None, match["line"] if match["line"] is not None else match["model"]
        found.append(Directive(model, config_file.path, number, start + 1,
                               tuple(c.upper() for c in re.split(r"[,\s]+", codes.strip()) if c), covers))
    return found
