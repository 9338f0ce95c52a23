"""The parity of `tools validate` with Triton's load-time checks, from parity.toml (that file documents its format).

`parity_figure` gives, per area, how many of Triton's checks a rule mirrors and which mirrored rules are still
unproven against the real server: the figure the README states.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources

PARITY_FILE = "parity.toml"


@dataclass(frozen=True)
class Check:
    source: str
    area: str
    check: str
    rules: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Parity:
    checks: tuple[Check, ...]
    unproven: tuple[str, ...] = ()
    project_only: tuple[str, ...] = ()


@dataclass
class AreaFigure:
    checks: int = 0
    mirrored: int = 0
    unproven: set[str] = field(default_factory=set)

    def __str__(self) -> str:
        note = f" ({len(self.unproven)} unproven: {', '.join(sorted(self.unproven))})" if self.unproven else ""
        return f"{self.mirrored}/{self.checks}{note}"


def load_parity() -> Parity:
    """parity.toml, read from the package; a malformed entry raises ValueError naming it."""
    table = tomllib.loads(resources.files(__package__).joinpath(PARITY_FILE).read_text(encoding="utf-8"))
    checks = []
    for index, entry in enumerate(table.get("check", [])):
        try:
            check = Check(**{**entry, "rules": tuple(entry.get("rules", ()))})
        except TypeError as exc:
            raise ValueError(f"{PARITY_FILE}: check #{index}: {exc}") from None
        if bool(check.rules) == bool(check.reason):
            raise ValueError(f"{PARITY_FILE}: check #{index} ({check.check}) needs exactly one of rules / reason")
        checks.append(check)
    return Parity(tuple(checks), tuple(table.get("unproven", ())), tuple(table.get("project_only", ())))


def parity_figure(parity: Parity | None = None) -> dict[str, AreaFigure]:
    """Area -> checks mirrored by a rule / checks, and the unproven rules among those mirroring them."""
    parity = parity or load_parity()
    figures: dict[str, AreaFigure] = {}
    for check in parity.checks:
        figure = figures.setdefault(check.area, AreaFigure())
        figure.checks += 1
        figure.mirrored += bool(check.rules)
        figure.unproven |= set(check.rules) & set(parity.unproven)
    return figures
