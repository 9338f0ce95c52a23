"""`tools validate --fix` / `--diff`: the mechanical findings, fixed through the one config write-back.

Fixed: E201 (the config's name becomes the folder's), W206 (no backend, but every served version holds only a
model.py: backend "python"), W203 (a zero-prefixed version folder renamed to its number when that name is free).
A config is only rewritten when it parsed; every rewrite goes through `write_config` (validated, atomic), changes only
the fixed fields' text (comments and layout stay) and shows as a unified diff. Should the write-back ever have to
re-render a config that holds comments below its leading block, that fix is left for a hand edit.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

from tools.repository import CONFIG_FILE, ConfigFile, Model, ModelConfig, Repository, replace_config
from tools.validation import ConfigRejectedError, blocking_errors, write_config
from tools.validation.findings import Finding
from tools.validation.layout import DEFAULT_MODEL_FILES, GUESSED_BACKENDS, PLATFORM_MODEL_FILES, PYTHON_BACKEND
from tools.validation.suppress import comment_start

FIXABLE = frozenset({"E201", "W206", "W203"})
PYTHON_BACKEND_FILE = DEFAULT_MODEL_FILES[PYTHON_BACKEND]
_MODEL_FILES = frozenset({*DEFAULT_MODEL_FILES.values(), *PLATFORM_MODEL_FILES.values(),
                          *(name for name, _ in GUESSED_BACKENDS)})


@dataclass
class Outcome:
    """What a fix run did (or, with --diff, would do): the findings fixed, those left and why, the diffs."""

    fixed: list[Finding] = field(default_factory=list)
    left: list[tuple[Finding, str]] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)


class _Preview(Exception):
    """Stops replace_config after its check and before it writes: the candidate is all a preview needs."""

    def __init__(self, candidate: ConfigFile):
        self.candidate = candidate


def _comments_below_header(text: str) -> bool:
    lines = text.splitlines()
    body = next((i for i, line in enumerate(lines) if not line.lstrip().startswith("#") and line.strip()), len(lines))
    return any(comment_start(line) is not None for line in lines[body:])


def _served_python_only(model: Model, config: ModelConfig) -> bool:
    """Every served version holds model.py and no other model file: only the Python backend can be meant."""
    served = [model.versions[number] for number in model.served_versions(config)]
    return bool(served) and all(PYTHON_BACKEND_FILE in v.files and not (v.files & _MODEL_FILES) - {PYTHON_BACKEND_FILE}
                                for v in served)


def _edit(model: Model, finding: Finding, config: ModelConfig) -> str | None:
    """Apply the fix for `finding` to `config`; None when done, else why it cannot be fixed mechanically."""
    if finding.code == "E201":
        config.name = model.name
    elif config.platform or config.HasField("ensemble_scheduling") or not _served_python_only(model, config):
        return "the backend cannot be told from the files: set `backend` by hand"
    else:
        config.backend = PYTHON_BACKEND
    return None


def _preview(repository: Repository, name: str, config: ModelConfig) -> ConfigFile:
    """The file `write_config` would write, checked the same way, without writing it."""
    def accept(candidate: ConfigFile) -> None:
        errors = blocking_errors(repository, name, candidate)
        if errors:
            raise ConfigRejectedError(name, errors)
        raise _Preview(candidate)

    try:
        replace_config(repository, name, config, accept)
    except _Preview as preview:
        return preview.candidate
    raise AssertionError("replace_config wrote without asking")  # pragma: no cover - replace_config calls accept


def _diff(path: Path, before: str, after: str) -> str:
    shown = os.path.relpath(path)
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        f"a/{shown}", f"b/{shown}"))


def _fix_config(repository: Repository, model: Model, found: list[Finding], write: bool, outcome: Outcome) -> None:
    config_file = model.config_file
    if config_file is None or config_file.config is None or config_file.text is None:
        outcome.left += [(f, f"{CONFIG_FILE} cannot be parsed, so it is left alone") for f in found]
        return
    config = ModelConfig()
    config.CopyFrom(config_file.config)
    done = []
    for finding in found:
        reason = _edit(model, finding, config)
        if reason:
            outcome.left.append((finding, reason))
        else:
            done.append(finding)
    if not done:
        return
    try:
        candidate = _preview(repository, model.name, config)
        if not candidate.layout_kept and _comments_below_header(config_file.text):
            outcome.left += [(f, f"{CONFIG_FILE}: comments could not be kept in a rewrite: fix by hand") for f in done]
            return
        if write:
            write_config(repository, model.name, config)
    except ConfigRejectedError as exc:
        outcome.left += [(f, str(exc)) for f in done]
        return
    outcome.diffs.append(_diff(config_file.path, config_file.text, candidate.text or ""))
    outcome.fixed += done


def _rename_version(model: Model, finding: Finding, write: bool, outcome: Outcome) -> None:
    source = finding.file
    target = source.with_name(str(int(source.name))) if source is not None and source.name.isdigit() else None
    if target is None or target.exists():
        outcome.left.append((finding, f"{target} exists already: merge the folders by hand" if target else
                             "not a version folder"))
        return
    if write:
        os.rename(source, target)
    outcome.diffs.append(f"rename from {os.path.relpath(source)}\nrename to {os.path.relpath(target)}\n")
    outcome.fixed.append(finding)


def fix(repository: Repository, findings: list[Finding], write: bool) -> Outcome:
    """Fix (or with `write=False` only show) every mechanical finding; the caller validates again afterwards."""
    outcome = Outcome()
    for name, model in repository.models.items():
        mine = [f for f in findings if f.model == name and f.code in FIXABLE]
        in_config = [f for f in mine if f.code != "W203" and model.config_file is not None
                     and f.file == model.config_file.path]
        outcome.left += [(f, "only config.pbtxt is rewritten, not the variants under configs/")
                         for f in mine if f.code != "W203" and f not in in_config]
        if in_config:
            _fix_config(repository, model, in_config, write, outcome)
        for finding in (f for f in mine if f.code == "W203"):
            _rename_version(model, finding, write, outcome)
    return outcome
