"""Findings as text: one line per finding (ruff's `path:line:col: CODE message`), grouped by model, JSON, SARIF 2.1.0
for code review, GitHub workflow annotations, and JUnit XML for CI test reports."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from itertools import groupby
from pathlib import Path
from xml.etree import ElementTree

from rich.console import Console
from rich.markup import escape

from tools import __version__
from tools.validation.findings import RULES, Finding, Rule, Severity

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL_NAME = "tools validate"
_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow"}


def summary(findings: list[Finding]) -> dict[str, int]:
    counts = Counter(f.severity.value for f in findings)
    return {"errors": counts[Severity.ERROR.value], "warnings": counts[Severity.WARNING.value]}


def _display_path(path: Path | None) -> str | None:
    """Relative to the working directory when inside it (as editors and CI annotations want), else absolute."""
    if path is None:
        return None
    absolute = Path(os.path.abspath(path))
    return str(absolute.relative_to(Path.cwd())) if absolute.is_relative_to(Path.cwd()) else str(absolute)


def _where(finding: Finding) -> str:
    """`path:line:col` as far as known; a finding without a file is placed at its model (or nowhere)."""
    if finding.file is None:
        return finding.model or "(repository)"
    return ":".join(str(p) for p in (_display_path(finding.file), finding.line, finding.column) if p is not None)


def _text(finding: Finding) -> str:
    """The message, led by the ensemble step it is about when there is one."""
    step = f"[step {finding.step.index} {finding.step.model}] " if finding.step else ""
    return step + finding.message


def _verdict(findings: list[Finding], checked: int, fixable: int) -> str:
    counts = summary(findings)
    if not findings:
        return f"[green]All checks passed![/] ({checked} model(s) checked)"
    hint = f"\n[*] {fixable} fixable with --fix (--diff shows the changes)." if fixable else ""
    return (f"Found [bold red]{counts['errors']} error(s)[/] and [yellow]{counts['warnings']} warning(s)[/] in "
            f"{checked} model(s) checked.{escape(hint)}")


def print_lines(findings: list[Finding], console: Console, checked: int, fixable: int = 0) -> None:
    """One line per finding, `path:line:col: CODE message` (the form editors and ruff users know), then a summary."""
    for finding in findings:
        console.print(f"[bold]{escape(_where(finding))}[/]: [{_STYLE[finding.severity]}]{finding.code}[/] "
                      f"{escape(_text(finding))}", highlight=False, soft_wrap=True)
    console.print(_verdict(findings, checked, fixable), highlight=False)


def print_grouped(findings: list[Finding], console: Console, checked: int, fixable: int = 0) -> None:
    """One block per model; each line: code, severity, file:line, [step], message."""
    for model, group in groupby(findings, key=lambda f: f.model):
        console.print(f"[bold]{escape(model or '(repository)')}[/]")
        for finding in group:
            where = ":".join(str(p) for p in (_display_path(finding.file), finding.line) if p is not None)
            console.print(f"  [{_STYLE[finding.severity]}]{finding.code} {finding.severity.value}[/] "
                          f"[dim]{escape(where)}[/] {escape(_text(finding))}", highlight=False, soft_wrap=True)
    console.print(_verdict(findings, checked, fixable), highlight=False)


def to_json(findings: list[Finding]) -> str:
    items = [{
        "code": f.code, "severity": f.severity.value, "model": f.model,
        "step": {"index": f.step.index, "model": f.step.model} if f.step else None,
        "file": _display_path(f.file), "line": f.line, "column": f.column, "message": f.message,
    } for f in findings]
    return json.dumps({"findings": items, "summary": summary(findings)}, indent=2)


def rule_help(rule: Rule) -> str:
    """A rule's explanation as Markdown: why, what Triton does, a broken and a fixed excerpt, the source it mirrors."""
    parts = [f"**{rule.code}**: {rule.title}.", rule.why, f"Triton: {rule.triton}",
             f"Broken:\n```\n{rule.broken}\n```", f"Fixed:\n```\n{rule.fixed}\n```"]
    if rule.mirrors:
        parts.append("Mirrors Triton 2.51: " + "; ".join(rule.mirrors))
    return "\n\n".join(part for part in parts if part.strip())


def _sarif_rule(rule: Rule) -> dict:
    return {"id": rule.code, "shortDescription": {"text": rule.title},
            "fullDescription": {"text": " ".join(part for part in (rule.why, rule.triton) if part)},
            "help": {"text": rule_help(rule), "markdown": rule_help(rule)},
            "defaultConfiguration": {"level": rule.severity.value},
            "properties": {"tritonRejects": rule.triton_rejects}}


def to_sarif(findings: list[Finding]) -> str:
    """SARIF 2.1.0: one run, every rule described, one result per finding with its physical location."""
    index = {code: i for i, code in enumerate(RULES)}
    results = []
    for f in findings:
        result = {"ruleId": f.code, "ruleIndex": index[f.code], "level": f.severity.value,
                  "message": {"text": (f"[{f.model}] " if f.model else "") + _text(f)}}
        if f.file is not None:
            location: dict = {"artifactLocation": {"uri": Path(_display_path(f.file)).as_posix()}}
            if f.line is not None:
                location["region"] = {"startLine": f.line, **({"startColumn": f.column} if f.column else {})}
            result["locations"] = [{"physicalLocation": location}]
        results.append(result)
    driver = {"name": TOOL_NAME, "version": __version__, "rules": [_sarif_rule(rule) for rule in RULES.values()]}
    sarif = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [{"tool": {"driver": driver}, "results": results}]}
    return json.dumps(sarif, indent=2)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def to_github(findings: list[Finding]) -> str:
    """GitHub workflow commands (`::error file=...,line=...,col=...,title=CODE::message`): annotations on the diff."""
    lines = []
    for f in findings:
        properties = {"file": _display_path(f.file), "line": f.line, "col": f.column,
                      "title": f"{f.code} {f.rule.title}"}
        spec = ",".join(f"{key}={_escape_property(str(value))}" for key, value in properties.items() if value)
        model = f"[{f.model}] " if f.model else ""
        lines.append(f"::{f.severity.value} {spec}::{_escape_data(model + _text(f))}")
    return "\n".join(lines)


def to_junit(findings: list[Finding], models: Iterable[str]) -> str:
    """JUnit XML: one test case per model (passing when clean), one failure per finding; repository-wide findings
    go to a case of their own."""
    cases: dict[str, list[Finding]] = {name: [] for name in sorted(models)}
    for f in findings:
        cases.setdefault(f.model or "(repository)", []).append(f)
    suite = ElementTree.Element("testsuite", name=TOOL_NAME, tests=str(len(cases)), errors="0", skipped="0",
                                failures=str(sum(1 for found in cases.values() if found)))
    for name, found in cases.items():
        case = ElementTree.SubElement(suite, "testcase", classname=TOOL_NAME, name=name)
        for f in found:
            failure = ElementTree.SubElement(case, "failure", type=f.code, message=f"{f.code} {f.message}")
            failure.text = f"{_where(f)}: {f.code} [{f.severity.value}] {_text(f)}"
    root = ElementTree.Element("testsuites", name=TOOL_NAME, tests=suite.get("tests"), failures=suite.get("failures"))
    root.append(suite)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True)
