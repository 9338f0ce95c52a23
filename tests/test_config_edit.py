"""The text-level config write-back (`edit_config_text`): random field changes on the shipped configs and on every
config of the validation corpus must parse to the new config, keep every comment whose field stays, and leave the
lines outside the changed fields byte-identical."""

from __future__ import annotations

import difflib
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.validation.corpus import CASES
from tools.repository import (
    ConfigFile,
    ModelConfig,
    edit_config_text,
    field_positions,
    load_repository,
    parse_config_text,
    replace_config,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "model_repository").glob("*/config.pbtxt"))}


def corpus_configs() -> dict[str, str]:
    """Every distinct config text of the validation corpus that parses (the editor only sees parsed configs)."""
    found: dict[str, str] = {}
    for case in CASES:
        for relative, content in case.build("").files.items():
            if relative.endswith(".pbtxt") and isinstance(content, str) and parse_config_text(content)[0]:
                found.setdefault(content, f"{case.id}:{relative}")
    return {name: text for text, name in found.items()}


CORPUS = corpus_configs()


# Each change edits a config in place and says whether it may remove a field (and with it the field's comments).
def instance_count(config: ModelConfig, rng: random.Random) -> bool:
    if not config.instance_group:
        config.instance_group.add(kind="KIND_CPU", count=1)
    rng.choice(config.instance_group).count = rng.randint(1, 8)
    return False


def queue_delay(config: ModelConfig, rng: random.Random) -> bool:
    if config.HasField("ensemble_scheduling"):
        return False
    config.dynamic_batching.max_queue_delay_microseconds = rng.choice([0, 50, 100, 1000, 2500])
    return False


def version_policy(config: ModelConfig, rng: random.Random) -> bool:
    choice = rng.choice(["latest", "all", "specific"])
    if choice == "latest":
        config.version_policy.latest.num_versions = rng.randint(1, 3)
    elif choice == "all":
        config.version_policy.all.SetInParent()
    else:
        config.version_policy.specific.ClearField("versions")
        config.version_policy.specific.versions.extend(sorted(rng.sample(range(1, 6), rng.randint(1, 3))))
    return True


def toggle_dynamic_batching(config: ModelConfig, rng: random.Random) -> bool:
    if config.HasField("dynamic_batching"):
        config.ClearField("dynamic_batching")
        return True
    if not config.HasField("ensemble_scheduling"):
        config.dynamic_batching.max_queue_delay_microseconds = rng.randint(1, 500)
    return False


def parameters(config: ModelConfig, rng: random.Random) -> bool:
    keys = sorted(config.parameters)
    action = rng.choice(["add", "change", "remove"] if keys else ["add"])
    if action == "add":
        config.parameters[f"added_{rng.randint(0, 99)}"].string_value = str(rng.randint(0, 9))
    elif action == "change":
        config.parameters[rng.choice(keys)].string_value = f"changed {rng.randint(0, 9)}"
    else:
        del config.parameters[rng.choice(keys)]
    return action == "remove"


def preferred_batch_sizes(config: ModelConfig, rng: random.Random) -> bool:
    if config.HasField("ensemble_scheduling"):
        return False
    sizes = config.dynamic_batching.preferred_batch_size
    del sizes[:]
    sizes.extend(sorted(rng.sample([1, 2, 4, 8, 16, 32], rng.randint(0, 3))))
    return True


CHANGES: list[Callable[[ModelConfig, random.Random], bool]] = [
    instance_count, queue_delay, version_policy, toggle_dynamic_batching, parameters, preferred_batch_sizes]


def top_level_lines(text: str) -> dict[str, set[int]]:
    """The lines (1-based) of each top-level field: each occurrence from its name to the line before the next one."""
    starts = sorted({(line, path[0]) for path, (line, _) in field_positions(text).items()
                     if len(path) == 1 or (len(path) == 2 and isinstance(path[1], int))})
    last_line = len(text.splitlines())
    lines: dict[str, set[int]] = {}
    for index, (line, name) in enumerate(starts):
        end = starts[index + 1][0] - 1 if index + 1 < len(starts) else last_line
        lines.setdefault(name, set()).update(range(line, end + 1))
    return lines


def changed_fields(old: ModelConfig, new: ModelConfig) -> set[str]:
    """Top-level fields whose value or presence differs (an empty message set or cleared is a change)."""
    return {f.name for f in old.DESCRIPTOR.fields if getattr(old, f.name) != getattr(new, f.name)
            or (f.has_presence and old.HasField(f.name) != new.HasField(f.name))}


def check_edit(text: str, new: ModelConfig, may_remove: bool) -> list[str]:
    """The unified diff of the edit; asserts the edited text parses to `new`, that every line outside the changed
    top-level fields is still there byte for byte and in order, and that every comment survives unless a field could
    have been removed."""
    old, _ = parse_config_text(text)
    edited = edit_config_text(text, old, new)
    assert edited is not None, "the editor fell back"
    assert parse_config_text(edited)[0] == new
    before, after = text.splitlines(keepends=True), edited.splitlines(keepends=True)
    diff = list(difflib.unified_diff(before, after, n=0))
    lines = top_level_lines(text)
    changed = {line for name in changed_fields(old, new) for line in lines.get(name, ())}
    remaining = iter(after)
    for number, line in enumerate(before, start=1):
        if number not in changed:
            assert line in remaining, f"line {number} {line!r} lost or moved:\n" + "".join(diff)
    if not may_remove:
        for line in before:
            if "#" in line:
                assert line[line.index("#"):].rstrip("\n") in edited, "".join(diff)
    return diff


@pytest.mark.parametrize(("texts", "trials"), [(SHIPPED, 50), (CORPUS, 8)], ids=["shipped", "corpus"])
def test_random_field_changes_parse_to_the_new_config_and_keep_the_rest(texts, trials):
    rng = random.Random(2051)
    assert len(texts) >= (3 if texts is SHIPPED else 50)
    for name, text in texts.items():
        old, _ = parse_config_text(text)
        for _ in range(trials):
            new = ModelConfig()
            new.CopyFrom(old)
            may_remove = False
            for change in rng.sample(CHANGES, rng.randint(1, 3)):
                may_remove |= change(new, rng)
            try:
                check_edit(text, new, may_remove)
            except AssertionError as failure:
                raise AssertionError(f"{name}: {failure}") from failure


@pytest.mark.parametrize("name", sorted(n for n, text in SHIPPED.items() if parse_config_text(text)[0].max_batch_size))
def test_a_one_field_change_is_a_one_line_diff(name):
    text = SHIPPED[name]
    old, _ = parse_config_text(text)
    new = ModelConfig()
    new.CopyFrom(old)
    new.max_batch_size //= 2  # the tokenizer's line also carries a suppression comment
    diff = check_edit(text, new, may_remove=False)
    changed = [line for line in diff if line[0] in "+-" and not line.startswith(("+++", "---"))]
    assert len(changed) == 2 and changed[0].startswith("-max_batch_size: 64")
    assert changed[1] == "+" + changed[0][1:].replace("64", "32", 1)


def test_added_and_removed_fields_land_beside_their_siblings():
    text = ('# header\nname: "m"\n# about the batch\nmax_batch_size: 8  # eight\n'
            "input [\n  { name: \"A\" dims: [ 1 ] },  # first\n  { name: \"B\" dims: [ 2 ] }\n]\n"
            "dynamic_batching {\n  # wait a little\n  max_queue_delay_microseconds: 100\n}\n")
    old, _ = parse_config_text(text)
    new = ModelConfig()
    new.CopyFrom(old)
    new.backend = "python"
    del new.input[1]
    new.dynamic_batching.preferred_batch_size.append(4)
    new.input[0].dims.append(3)
    edited = edit_config_text(text, old, new)
    assert edited == ('# header\nname: "m"\nbackend: "python"\n# about the batch\nmax_batch_size: 8  # eight\n'
                      "input [\n  { name: \"A\" dims: [ 1, 3 ] }  # first\n]\n"
                      "dynamic_batching {\n  preferred_batch_size: [ 4 ]\n  # wait a little\n"
                      "  max_queue_delay_microseconds: 100\n}\n")


def test_write_back_keeps_comments_and_falls_back_only_when_the_editor_gives_up(tmp_path):
    """Dropping the last entry of a `[ ... ]` map list while adding one to it is a layout the editor leaves to a full
    rendering (which keeps the leading comment block only)."""
    (tmp_path / "m" / "1").mkdir(parents=True)
    path = tmp_path / "m" / "config.pbtxt"
    path.write_text('# silencing\nname: "m"\n# two instances\ninstance_group [ { count: 2 } ]\n'
                    'parameters [\n  { key: "a" value { string_value: "1" } },\n'
                    '  { key: "b" value { string_value: "2" } }\n]\n')
    repository = load_repository(tmp_path)
    seen: list[ConfigFile] = []
    config = ModelConfig()
    config.CopyFrom(repository.models["m"].config)
    config.instance_group[0].count = 3
    before = path.read_text()
    replace_config(repository, "m", config, seen.append)
    assert path.read_text() == before.replace("count: 2", "count: 3")
    assert seen[-1].layout_kept and repository.models["m"].config_file.text == path.read_text()
    del config.parameters["b"]
    config.parameters["c"].string_value = "3"
    replace_config(repository, "m", config, seen.append)
    assert not seen[-1].layout_kept
    assert path.read_text().startswith("# silencing\nname:") and "# two instances" not in path.read_text()
    assert parse_config_text(path.read_text())[0] == config
