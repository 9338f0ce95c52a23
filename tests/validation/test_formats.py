"""Report formats for CI (SARIF, GitHub annotations, JUnit XML) and the rule catalogue's explanations."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from tests.validation.corpus import base_spec, write_broken_repository
from tools import __version__
from tools.cli import app
from tools.validation.explain import explain
from tools.validation.findings import RULES, Finding
from tools.validation.reporters import to_github
from tools.validation.run import EXIT_FINDINGS

runner = CliRunner()


@pytest.fixture
def broken_repo(tmp_path, monkeypatch):
    """An error (E404, in an ensemble step) and a warning (W501) in a repository of three models; cwd its parent."""
    root = write_broken_repository(tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    return root


def report(fmt: str) -> str:
    result = runner.invoke(app, ["validate", "repo", "--format", fmt])
    assert result.exit_code == EXIT_FINDINGS, result.output
    return result.stdout


def test_every_rule_explains_itself():
    for code, rule in RULES.items():
        for key in ("title", "why", "triton", "broken", "fixed"):
            assert getattr(rule, key).strip(), f"{code} has no {key}"
        assert rule.broken != rule.fixed, code


def test_github_annotations_carry_file_line_column_and_code(broken_repo):
    lines = report("github").splitlines()
    assert len(lines) == 2
    pattern = re.compile(r"::(error|warning) file=([^,]+),line=(\d+),col=(\d+),title=(\w+) [^:]*::(.+)")
    parsed = {m[5]: m for m in map(pattern.fullmatch, lines)}
    assert parsed["E404"][1] == "error" and parsed["E404"][2] == "repo/pipe/config.pbtxt"
    assert parsed["W501"][1] == "warning" and parsed["W501"][6].startswith("[double] dynamic batching")


def test_github_annotations_escape_what_would_end_a_property_or_a_line():
    finding = Finding("W501", "first line\nsecond, 100%", "m", Path("a:b,c.pbtxt"), 3, 4)
    (line,) = to_github([finding]).splitlines()
    assert line.startswith("::warning file=a%3Ab%2Cc.pbtxt,line=3,col=4,title=W501 ")
    assert line.endswith("::[m] first line%0Asecond, 100%25")


def test_junit_has_a_test_case_per_model_and_a_failure_per_finding(broken_repo):
    root = ElementTree.fromstring(report("junit"))
    (suite,) = root.findall("testsuite")
    cases = {case.get("name"): case.findall("failure") for case in suite.findall("testcase")}
    assert set(cases) == {"double", "add", "pipe"}
    assert [f.get("type") for f in cases["pipe"]] == ["E404"] and cases["add"] == []
    assert [f.get("type") for f in cases["double"]] == ["W501"]
    assert "repo/double/config.pbtxt:" in cases["double"][0].text
    assert (suite.get("tests"), suite.get("failures")) == ("3", "2")


def test_sarif_carries_the_version_the_rules_help_and_the_column(broken_repo):
    run = json.loads(report("sarif"))["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["version"] == __version__
    rules = {rule["id"]: rule for rule in driver["rules"]}
    assert set(rules) == set(RULES)
    for code, rule in rules.items():
        assert RULES[code].why in rule["fullDescription"]["text"]
        assert RULES[code].fixed in rule["help"]["text"] and rule["help"]["markdown"]
    for result in run["results"]:
        region = result["locations"][0]["physicalLocation"]["region"]
        path = Path(result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"])
        line = path.read_text().splitlines()[region["startLine"] - 1]
        assert region["startColumn"] >= 1 and line[region["startColumn"] - 1].isalpha()


def test_json_gives_the_column_of_the_field(broken_repo):
    (warning,) = [f for f in json.loads(report("json"))["findings"] if f["code"] == "W501"]
    line = Path(warning["file"]).read_text().splitlines()[warning["line"] - 1]
    assert line[warning["column"] - 1:].startswith("dynamic_batching")


def test_a_syntax_error_is_placed_at_its_column(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    base_spec("").write(root)
    (root / "double" / "config.pbtxt").write_text('name: "double"\nmax_batch_size: eight\n')
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", "repo", "--select", "E103"])
    assert result.stdout.startswith("repo/double/config.pbtxt:2:17: E103 ")


def test_explain_names_the_triton_source_a_rule_mirrors(monkeypatch):
    where = "server/src/example.cc: CheckSomething"
    monkeypatch.setitem(RULES, "E201", replace(RULES["E201"], mirrors=(where,)))
    text = explain("E201")
    assert text.index("Triton 2.51 source it mirrors") < text.index(where)
