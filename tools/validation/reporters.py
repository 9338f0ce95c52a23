"""Findings as text for people (grouped by model, coloured on a terminal), JSON, or SARIF 2.1.0 for code review."""

from __future__ import annotations

import json
import os
from collections import Counter
from itertools import groupby
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from tools.validation.findings import RULES, Finding, Severity

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


def print_human(findings: list[Finding], console: Console, checked: int) -> None:
    """One block per model; each line: code, severity, file:line, [step], message."""
    for model, group in groupby(findings, key=lambda f: f.model):
        console.print(f"[bold]{escape(model or '(repository)')}[/]")
        for finding in group:
            where = ":".join(str(p) for p in (_display_path(finding.file), finding.line) if p is not None)
            step = escape(f"[step {finding.step.index} {finding.step.model}] ") if finding.step else ""
            console.print(f"  [{_STYLE[finding.severity]}]{finding.code} {finding.severity.value}[/] "
                          f"[dim]{escape(where)}[/] {step}{escape(finding.message)}", highlight=False,
                          soft_wrap=True)
    counts = summary(findings)
    verdict = "[green]clean[/]" if not findings else \
        f"[bold red]{counts['errors']} error(s)[/], [yellow]{counts['warnings']} warning(s)[/]"
    console.print(f"{checked} model(s) checked: {verdict}", highlight=False)


def to_json(findings: list[Finding]) -> str:
    items = [{
        "code": f.code, "severity": f.severity.value, "model": f.model,
        "step": {"index": f.step.index, "model": f.step.model} if f.step else None,
        "file": _display_path(f.file), "line": f.line, "message": f.message,
    } for f in findings]
    return json.dumps({"findings": items, "summary": summary(findings)}, indent=2)


def to_sarif(findings: list[Finding]) -> str:
    """SARIF 2.1.0: one run, every rule described, one result per finding with its physical location."""
    rules = [{"id": rule.code, "shortDescription": {"text": rule.title},
              "defaultConfiguration": {"level": rule.severity.value}} for rule in RULES.values()]
    index = {rule.code: i for i, rule in enumerate(RULES.values())}
    results = []
    for f in findings:
        result = {"ruleId": f.code, "ruleIndex": index[f.code], "level": f.severity.value,
                  "message": {"text": (f"[{f.model}] " if f.model else "") + f.message}}
        if f.file is not None:
            location = {"artifactLocation": {"uri": Path(_display_path(f.file)).as_posix()}}
            if f.line is not None:
                location["region"] = {"startLine": f.line}
            result["locations"] = [{"physicalLocation": location}]
        results.append(result)
    sarif = {"$schema": SARIF_SCHEMA, "version": "2.1.0",
             "runs": [{"tool": {"driver": {"name": TOOL_NAME, "rules": rules}}, "results": results}]}
    return json.dumps(sarif, indent=2)
