"""Where the way back is kept: the last lines of the config's leading comment block, one per rollout.

The record travels with the config it describes (and with the repository's own version control), survives a server
restart, and needs no other file: a file added to a model folder counts, for Triton, as a change of every version,
which it would reload in full at the next poll, whereas a changed config.pbtxt whose only change is the version
policy is applied in place. `tools.validation.write_config` keeps the leading comment block, so the lines stay.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf import json_format

from tools.repository import ConfigFile, ModelConfig, Repository, parse_config_text
from tools.validation import write_config

KEEP = 10  # records kept per model, newest last
_LINE = re.compile(r"^# rollout (?P<at>\S+): versions (?P<before>\[[\d, ]*\]) -> (?P<after>\[[\d, ]*\]); "
                   r"policy before: (?P<policy>\{.*\})$")


@dataclass(frozen=True)
class Record:
    """One rollout: the versions served before and after, and the version policy to return to."""

    at: str
    before: list[int]
    after: list[int]
    policy: dict  # version_policy before, in Triton's JSON

    def line(self) -> str:
        return (f"# rollout {self.at}: versions {self.before} -> {self.after}; "
                f"policy before: {json.dumps(self.policy, separators=(',', ':'), sort_keys=True)}")

    @classmethod
    def now(cls, before: list[int], after: list[int], policy: dict) -> Record:
        return cls(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), sorted(before), sorted(after), policy)


def _split(text: str) -> tuple[list[str], str]:
    """(leading comment lines, the rest of the text)."""
    lines = text.splitlines(keepends=True)
    count = 0
    while count < len(lines) and lines[count].lstrip().startswith("#"):
        count += 1
    return [line.rstrip("\n") for line in lines[:count]], "".join(lines[count:])


def records(config_file: ConfigFile | None) -> list[Record]:
    """The rollouts recorded in a config file, oldest first."""
    comments, _ = _split(config_file.text or "") if config_file else ([], "")
    found = []
    for line in comments:
        if match := _LINE.match(line):
            found.append(Record(match["at"], json.loads(match["before"]), json.loads(match["after"]),
                                json.loads(match["policy"])))
    return found


def with_policy(config: ModelConfig, policy: dict) -> ModelConfig:
    """A copy of `config` with `policy` (Triton's JSON of a version_policy)."""
    changed = ModelConfig()
    changed.CopyFrom(config)
    changed.ClearField("version_policy")
    json_format.ParseDict({"version_policy": policy}, changed)
    return changed


def write(repository: Repository, name: str, config: ModelConfig, history: list[Record]) -> Path:
    """Write `config` through the validator, its leading comment block ending with `history` (the last KEEP)."""
    model = repository.models[name]
    previous = model.config_file
    comments, rest = _split(previous.text or "")
    kept = [line for line in comments if not _LINE.match(line)] + [r.line() for r in history[-KEEP:]]
    text = "".join(line + "\n" for line in kept) + rest
    # write_config keeps the current file's leading comment block: hand it the block the file should have.
    model.config_file = ConfigFile(previous.path, text, *parse_config_text(text))
    try:
        return write_config(repository, name, config)
    except BaseException:
        model.config_file = previous
        raise
