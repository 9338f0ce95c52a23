"""`tools validate --fix` / `--diff`: mechanical fixes through the validated write-back, and what they leave alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.validation.corpus import DOUBLE, base_spec
from tools import repository
from tools.cli import app
from tools.repository import load_repository
from tools.validation import validate
from tools.validation.fix import fix
from tools.validation.run import EXIT_CLEAN, EXIT_FINDINGS

runner = CliRunner()
# "double" named "dbl" (E201) without a backend (W206), its header comment to keep; "add" served from "01" (W203).
FIXABLE = "# double: the test model\n" + DOUBLE.replace("@double", "dbl").replace('backend: "python"\n', "")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


@pytest.fixture
def fixable_repo(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    spec = base_spec("")
    spec.files["double/config.pbtxt"] = FIXABLE
    spec.files["add/01/model.py"] = spec.files.pop("add/1/model.py")
    spec.write(root)
    monkeypatch.chdir(tmp_path)
    return root


def validate_cli(*args: str):
    return runner.invoke(app, ["validate", "repo", "--format", "json", *args])


def test_the_report_counts_what_fix_would_fix(fixable_repo):
    result = runner.invoke(app, ["validate", "repo"])
    assert result.stdout.splitlines()[-1] == "[*] 3 fixable with --fix (--diff shows the changes)."
    (fixable_repo / "add" / "1").mkdir()  # now W203's rename target exists: two left
    assert "[*] 2 fixable" in runner.invoke(app, ["validate", "repo"]).stdout


def test_diff_shows_every_fix_and_writes_nothing(fixable_repo):
    before = snapshot(fixable_repo)
    result = validate_cli("--diff")
    assert result.exit_code == EXIT_FINDINGS
    assert snapshot(fixable_repo) == before
    assert "rename from repo/add/01\nrename to repo/add/1\n" in result.stdout
    assert "--- a/repo/double/config.pbtxt\n+++ b/repo/double/config.pbtxt\n" in result.stdout
    assert '-name: "dbl"\n+name: "double"\n' in result.stdout and '+backend: "python"\n' in result.stdout
    assert "would fix 3 finding(s)" in result.stderr


def test_fix_writes_through_the_validated_write_back_and_reports_what_remains(fixable_repo):
    result = validate_cli("--fix")
    assert result.exit_code == EXIT_CLEAN, result.output
    assert '"findings": []' in result.stdout and "fixed 3 finding(s)" in result.stderr
    assert '+name: "double"' in result.stderr  # the patch goes to stderr, the report keeps stdout
    text = (fixable_repo / "double" / "config.pbtxt").read_text()
    assert text.startswith("# double: the test model\n") and 'backend: "python"' in text
    assert (fixable_repo / "add" / "1" / "model.py").is_file() and not (fixable_repo / "add" / "01").exists()
    assert validate(load_repository(fixable_repo)) == []
    again = validate_cli("--diff")
    assert again.exit_code == EXIT_CLEAN and again.stdout == ""


def test_fix_keeps_comments_below_the_header_and_changes_only_the_fixed_lines(fixable_repo):
    config = fixable_repo / "double" / "config.pbtxt"
    before = FIXABLE.replace("max_batch_size: 8", "# why eight:\nmax_batch_size: 8  # keep me")
    config.write_text(before)
    result = validate_cli("--fix")
    assert result.exit_code == EXIT_CLEAN, result.output
    after = config.read_text()
    assert after == before.replace('name: "dbl"\n', 'name: "double"\nbackend: "python"\n')
    assert "-name: \"dbl\"\n+name: \"double\"\n+backend: \"python\"\n" in result.stderr


def test_fix_leaves_what_it_cannot_fix_safely_and_says_why(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    spec = base_spec("")
    spec.files["double/config.pbtxt"] = FIXABLE.replace("max_batch_size: 8", "max_batch_size: 8  # keep me")
    spec.files["add/config.pbtxt"] = spec.files["add/config.pbtxt"].replace('backend: "python"\n', "")
    spec.files["add/1/model.onnx"] = "not really onnx"
    spec.files["add/01/model.py"] = spec.files["add/1/model.py"]
    spec.write(root)
    monkeypatch.chdir(tmp_path)
    # Stand-in for a layout the text editor gives up on: name and backend edits always fit in place, so the
    # fallback to a full rendering (which would drop "# keep me") is forced here.
    monkeypatch.setattr(repository, "edit_config_text", lambda text, old, new: None)
    before = snapshot(root)
    result = runner.invoke(app, ["validate", "repo", "--fix"])
    assert snapshot(root) == before
    assert "not fixed: E201 double: config.pbtxt: comments could not be kept in a rewrite" in result.stderr
    assert "not fixed: W206 add: the backend cannot be told from the files" in result.stderr
    assert "not fixed: W203 add: repo/add/1 exists already" in result.stderr
    assert all(f" {code} " in result.stdout for code in ("E201", "W206", "W203"))  # reported as remaining


def test_fix_never_writes_a_config_the_validator_refuses(fixable_repo):
    """E201 is mechanical, but "double" also has an error no fix removes: write_config refuses, nothing changes."""
    config = fixable_repo / "double" / "config.pbtxt"
    config.write_text(FIXABLE.replace("max_batch_size: 8", "max_batch_size: -1"))
    before = snapshot(fixable_repo / "double")
    repository = load_repository(fixable_repo)
    outcome = fix(repository, validate(repository), write=True)
    assert snapshot(fixable_repo / "double") == before
    reasons = {finding.code: reason for finding, reason in outcome.left}
    assert "refusing to write double/config.pbtxt: E308" in reasons["E201"]
    assert [f.code for f in outcome.fixed] == ["W203"]


def test_fix_never_touches_a_file_it_cannot_parse(fixable_repo):
    config = fixable_repo / "double" / "config.pbtxt"
    config.write_text('name: "dbl"\nmax_batch_size: [\n')
    (fixable_repo / "double" / "configs").mkdir()
    (fixable_repo / "double" / "configs" / "big.pbtxt").write_text('name: "other"\n')
    before = snapshot(fixable_repo / "double")
    result = runner.invoke(app, ["validate", "repo", "--fix"])
    assert result.exit_code == EXIT_FINDINGS and snapshot(fixable_repo / "double") == before
    assert "not fixed: E201 double: only config.pbtxt is rewritten" in result.stderr
