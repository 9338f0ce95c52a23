"""What a validation finding is, and the catalogue of stable codes (one source of truth per code)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from enum import StrEnum
from importlib import resources
from pathlib import Path


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Rule:
    """A rule as `rules.toml` describes it (that file documents every field)."""

    code: str
    title: str
    triton_rejects: bool
    mirrors: tuple[str, ...] = ()
    triton_says: str = ""
    why: str = ""
    triton: str = ""
    broken: str = ""
    fixed: str = ""

    @property
    def severity(self) -> Severity:
        return Severity.ERROR if self.code.startswith("E") else Severity.WARNING


def _load_rules() -> dict[str, Rule]:
    """The catalogue, read once from the package's `rules.toml`; a malformed entry fails the import loudly."""
    table = tomllib.loads(resources.files(__package__).joinpath(CATALOGUE).read_text(encoding="utf-8"))
    known = {f.name for f in fields(Rule)} - {"code"}
    rules = {}
    for code, entry in table.items():
        unknown = set(entry) - known
        if not re.fullmatch(r"[EW]\d{3}", code) or unknown:
            raise ValueError(f"{CATALOGUE}: [{code}] is not a rule code or has unknown keys {sorted(unknown)}")
        rules[code] = Rule(code, **{**entry, "mirrors": tuple(entry.get("mirrors", ()))})
    return rules


CATALOGUE = "rules.toml"
RULES: dict[str, Rule] = _load_rules()


@dataclass(frozen=True)
class Step:
    """An ensemble step, as users count them (0-based, as in Triton's messages) and the model it calls."""

    index: int
    model: str


@dataclass(frozen=True)
class Finding:
    """One problem: a stable code, where it is, and one sentence saying what is wrong and how to fix it."""

    code: str
    message: str
    model: str | None = None
    file: Path | None = None
    line: int | None = None
    column: int | None = None
    step: Step | None = None

    @property
    def rule(self) -> Rule:
        return RULES[self.code]

    @property
    def severity(self) -> Severity:
        return self.rule.severity

    @property
    def location(self) -> str:
        if self.file is None:
            return ""
        return ":".join(str(part) for part in (self.file, self.line, self.column) if part is not None)


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity is Severity.ERROR for f in findings)
