"""Suppression comments in configs and code selection, through the library: what is hidden, what is reported about
the comments themselves (W601 unused, W602 unknown, W603 Triton rejects it), and the serve gate."""

from __future__ import annotations

import re

import pytest

from tests.validation.corpus import DOUBLE, base_spec
from tools.repository import load_repository
from tools.validation import Options, SettingsError, validate
from tools.validation.suppress import check_selectors, load_silenced

# "double" with two warnings on separate lines: W502 (one instance, 4-core target) and W501 (no queue delay).
WARNED = (DOUBLE.replace("@", "").replace("count: 2", "count: 1")
          .replace("dynamic_batching { max_queue_delay_microseconds: 100 }", "dynamic_batching { }"))
INSTANCES, BATCHER = "instance_group [ { kind: KIND_CPU count: 1 } ]", "dynamic_batching { }"


def found(tmp_path, config_text: str, pyproject: str = "", **selection) -> list[tuple[str, int | None]]:
    """(code, line) of every finding in model "double" whose config is `config_text`."""
    root = tmp_path / "repo"
    base_spec("").write(root)
    (root / "double" / "config.pbtxt").write_text(config_text)
    if pyproject:
        (tmp_path / "pyproject.toml").write_text(pyproject)
    repository = load_repository(root)
    findings = validate(repository, Options(cores=4), load_silenced(repository, **selection))
    return sorted((f.code, f.line) for f in findings if f.model == "double")


def line_of(text: str, fragment: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_without_comments_both_warnings_are_reported(tmp_path):
    assert found(tmp_path, WARNED) == sorted([("W502", line_of(WARNED, INSTANCES)), ("W501", line_of(WARNED, BATCHER))])


def test_a_trailing_comment_silences_its_code_on_its_line_only(tmp_path):
    text = WARNED.replace(INSTANCES, INSTANCES + "  # tools: ignore[W502]")
    assert found(tmp_path, text) == [("W501", line_of(text, BATCHER))]
    with_reasons = WARNED.replace(INSTANCES, INSTANCES + "  # one is enough here; tools: ignore[W502]  # see #12")
    assert found(tmp_path, with_reasons) == [("W501", line_of(text, BATCHER))]
    wrong_line = WARNED.replace(BATCHER, BATCHER + "  # tools: ignore[W502]")
    assert sorted(code for code, _ in found(tmp_path, wrong_line)) == ["W501", "W502", "W601"]


def test_a_comment_alone_on_its_line_covers_the_next_line_with_content(tmp_path):
    text = WARNED.replace(INSTANCES, "# tools: ignore[W502, w501]\n\n# why: one instance is enough here\n" + INSTANCES)
    # W502 is silenced; W501 is on another line, so that half of the comment matches nothing.
    assert found(tmp_path, text) == sorted([("W501", line_of(text, BATCHER)), ("W601", line_of(text, "tools:"))])


def test_a_hash_inside_a_string_is_not_a_comment(tmp_path):
    text = WARNED.replace('backend: "python"', 'backend: "python"\nparameters { key: "k" value: { string_value: '
                          '"# tools: ignore[W502]" } }')
    assert sorted(code for code, _ in found(tmp_path, text)) == ["W501", "W502"]


@pytest.mark.parametrize("directive", ["# tools: ignore W501, W502", "# tools-validate: ignore W501, W502",
                                       "# tools-validate: ignore=W501,W502", "# tools: ignore W501 W502  # reason"])
def test_the_whole_model_form_old_and_new_silences_anywhere_in_the_model(tmp_path, directive):
    assert found(tmp_path, WARNED + directive + "\n") == []
    assert found(tmp_path, directive + "\n" + WARNED) == []


def test_unused_unknown_and_unsilenceable_codes_in_comments_are_reported(tmp_path):
    text = WARNED.replace(INSTANCES, INSTANCES + "  # tools: ignore[W502, W505, W999]") + "# tools: ignore E308\n"
    where = line_of(text, INSTANCES)
    assert found(tmp_path, text) == sorted([("W501", line_of(text, BATCHER)), ("W601", where), ("W602", where),
                                            ("W603", line_of(text, "E308"))])
    assert sorted(found(tmp_path, WARNED + "# tools: ignore\n")) == sorted(
        [*found(tmp_path, WARNED), ("W602", len(WARNED.splitlines()) + 1)])


def test_findings_about_comments_follow_select_and_ignore(tmp_path):
    text = WARNED + "# tools: ignore W505\n"
    assert ("W601", len(WARNED.splitlines()) + 1) in found(tmp_path, text)
    assert [code for code, _ in found(tmp_path, text, ignore=["W6"])] == ["W501", "W502"]
    assert [code for code, _ in found(tmp_path, text, select=["W601"])] == ["W601"]


def test_a_comment_is_used_even_when_the_selection_hides_its_code(tmp_path):
    text = WARNED.replace(INSTANCES, INSTANCES + "  # tools: ignore[W502]")
    assert found(tmp_path, text, pyproject='[tool.tools-validate]\nignore = ["W502"]\n') == [
        ("W501", line_of(text, BATCHER))]


def test_the_gate_reports_what_triton_rejects_even_when_not_selected(tmp_path):
    root = tmp_path / "repo"
    base_spec("").write(root)
    (root / "double" / "config.pbtxt").write_text(WARNED.replace("max_batch_size: 8", "max_batch_size: -1"))
    repository = load_repository(root)
    silenced = load_silenced(repository, select=["W5"])
    assert "E308" not in {f.code for f in validate(repository, Options(), silenced)}
    silenced.gate = True
    assert "E308" in {f.code for f in validate(repository, Options(), silenced)}


@pytest.mark.parametrize(("selectors", "ignoring", "error"), [
    (["E9999"], False, "not a rule code or a prefix"), (["X"], False, "not a rule code"), ([""], False, "not a rule"),
    (["E"], True, "E cannot be ignored"), (["E201"], True, "E201 cannot be ignored: Triton refuses to load a model "
                                                          "with E201 (config name differs from the model folder name)"),
])
def test_selectors_are_checked(selectors, ignoring, error):
    with pytest.raises(SettingsError, match=re.escape(error)):
        check_selectors(selectors, "--x", ignoring)


def test_selectors_accept_codes_prefixes_and_all():
    assert check_selectors(["e3", " W ", "ALL", "E201"], "--x") == ("E3", "W", "ALL", "E201")
    assert check_selectors(["W", "W301"], "--x", ignoring=True) == ("W", "W301")
