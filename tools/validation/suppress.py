"""Project settings of `tools validate`: `[tool.tools-validate]` in pyproject.toml, and per-model comments.

pyproject.toml:   [tool.tools-validate]  ignore = ["W502"]   per-model = { embed = ["W503"] }   cores = 4
config.pbtxt:     # tools-validate: ignore W501, W505
Only codes for problems Triton itself accepts can be silenced; what Triton refuses stays an error. `cores` is the
target's core count per server (W502), for when the command line does not give one.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tools.errors import UsageError
from tools.repository import Repository
from tools.validation.findings import RULES, Finding

SECTION = "tools-validate"
_DIRECTIVE = re.compile(r"#\s*tools-validate:\s*ignore\b[=:\s]*([A-Z0-9, ]+)")


class SettingsError(UsageError):
    """pyproject.toml's validate section is malformed (a usage error)."""


@dataclass
class Silenced:
    everywhere: set[str] = field(default_factory=set)
    per_model: dict[str, set[str]] = field(default_factory=dict)

    def hides(self, finding: Finding) -> bool:
        if RULES[finding.code].triton_rejects:
            return False
        return finding.code in self.everywhere or finding.code in self.per_model.get(finding.model or "", set())


def _codes(value: object, where: str) -> set[str]:
    if not isinstance(value, list) or not all(isinstance(code, str) for code in value):
        raise SettingsError(f"{where} must be a list of codes such as [\"W502\"]")
    unknown = sorted(set(value) - set(RULES))
    if unknown:
        raise SettingsError(f"{where} names unknown code(s) {unknown}")
    return set(value)


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


def load_silenced(repository: Repository, pyproject: Path | None = None) -> Silenced:
    """What to silence: the nearest pyproject.toml above the repository, plus per-model comments."""
    silenced = Silenced()
    section, where = _section(repository, pyproject)
    if section:
        silenced.everywhere = _codes(section.get("ignore", []), f"{where} ignore")
        per_model = section.get("per-model", {})
        if not isinstance(per_model, dict):
            raise SettingsError(f"{where} per-model must be a table of model = [codes]")
        for model, codes in per_model.items():
            silenced.per_model[model] = _codes(codes, f"{where} per-model.{model}")
    for model in repository.models.values():
        text = model.config_file.text if model.config_file else None
        for match in _DIRECTIVE.finditer(text or ""):
            codes = {code for code in re.split(r"[,\s]+", match[1]) if code in RULES}
            silenced.per_model.setdefault(model.name, set()).update(codes)
    return silenced
