"""parity.toml: every Triton check names existing rules or says why none; every rule Triton enforces mirrors one."""

from __future__ import annotations

from tests.support import paths
from tools.validation import RULES
from tools.validation.parity import load_parity, parity_figure

# The catalogue ranges whose Triton checks parity.toml covers so far (1xx reading, 2xx layout).
COVERED_RANGES = ("1", "2", "3", "4")


def test_every_check_names_existing_rules_or_gives_a_reason():
    parity = load_parity()
    assert parity.checks
    for check in parity.checks:
        assert set(check.rules) <= set(RULES), (check.check, sorted(set(check.rules) - set(RULES)))
        assert check.rules or check.reason.strip(), check.check
        assert ": " in check.source and check.source.split("/")[0] in ("core", "python_backend"), check.source
    assert set(parity.unproven) <= set(RULES) and set(parity.project_only) <= set(RULES)


def test_every_rule_triton_enforces_mirrors_a_check_or_is_project_only():
    parity = load_parity()
    mirrored = {code for check in parity.checks for code in check.rules}
    for code, rule in RULES.items():
        if rule.triton_rejects and code[1] in COVERED_RANGES:
            assert code in mirrored or code in parity.project_only, code
            assert rule.mirrors, f"{code} has no `mirrors` in rules.toml"


def test_parity_figure_counts_checks_by_area():
    parity = load_parity()
    figures = parity_figure(parity)
    assert sum(f.checks for f in figures.values()) == len(parity.checks)
    for area, figure in figures.items():
        in_area = [c for c in parity.checks if c.area == area]
        assert figure.mirrored == sum(1 for c in in_area if c.rules)
        assert figure.unproven <= set(parity.unproven)


def test_readme_states_the_parity_figure():
    """The README's table of mirrored checks is the one parity.toml gives (docs that cannot drift)."""
    figures = parity_figure()
    rows = ["| area | Triton checks | mirrored by a rule | unproven rules |", "| --- | ---: | ---: | --- |"]
    rows += [f"| {area} | {f.checks} | {f.mirrored} | {', '.join(sorted(f.unproven)) or '-'} |"
             for area, f in figures.items()]
    total = sum(f.checks for f in figures.values()), sum(f.mirrored for f in figures.values())
    rows.append(f"| **all** | **{total[0]}** | **{total[1]}** | |")
    assert "\n".join(rows) in (paths.PROJECT_ROOT / "README.md").read_text(encoding="utf-8"), "\n".join(rows)
