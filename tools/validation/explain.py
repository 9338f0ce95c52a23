"""`tools validate --explain CODE`: what a rule checks and why, from the rule catalogue (rules.toml)."""

from __future__ import annotations

import textwrap

from tools.errors import UsageError
from tools.validation.findings import RULES

WIDTH = 100


def explain(code: str) -> str:
    """The rule's text as people read it in a terminal; an unknown code is a usage error naming the known ranges."""
    rule = RULES.get(code.strip().upper())
    if rule is None:
        ranges = ", ".join(sorted({c[:2] + "xx" for c in RULES}, key=lambda r: r[1:]))
        raise UsageError(f"--explain: {code!r} is not a rule code (codes: {ranges})")
    verdict = ("Triton refuses to load a model with this problem, so it cannot be silenced" if rule.triton_rejects
               else "Triton accepts this; select/ignore settings and `# tools: ignore[...]` comments can silence it")

    def para(text: str) -> str:
        return textwrap.fill(text, WIDTH, initial_indent="  ", subsequent_indent="  ")

    sections = [f"{rule.code} ({rule.severity.value}): {rule.title}", para(verdict + "."),
                "Why it matters", para(rule.why), "What Triton does", para(rule.triton),
                "Broken", textwrap.indent(rule.broken, "    "), "Fixed", textwrap.indent(rule.fixed, "    ")]
    if rule.mirrors:
        sections += ["Triton 2.51 source it mirrors", *(f"  {where}" for where in rule.mirrors)]
    return "\n".join(sections)
