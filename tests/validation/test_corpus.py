"""Every corpus case yields exactly its codes; the corpus covers every category and every rule."""

from __future__ import annotations

import re
import tomllib
from importlib import resources

import pytest

from tests.validation.corpus import CASES, build_corpus
from tools.repository import load_repository
from tools.validation import RULES, Options, load_silenced, validate

# Reported outside the corpus: a missing repository (tests/validation/test_cli.py), the server's verdicts, and the
# findings about suppression comments (tests/validation/test_suppress.py).
NOT_IN_CORPUS = {"E104", "E901", "E902", "W601", "W602", "W603"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The whole corpus in one repository, validated once; case id -> (case, its findings)."""
    root = tmp_path_factory.mktemp("corpus")
    built = build_corpus(root)
    repository = load_repository(root)
    findings = validate(repository, Options(cores=2), load_silenced(repository))
    return {cid: (case, [f for f in findings if f.model and f.model.lstrip(".").startswith(prefix)])
            for cid, (case, prefix) in built.items()}


@pytest.mark.parametrize("case_id", [case.id for case in CASES])
def test_case_reports_exactly_its_codes(corpus, case_id):
    case, findings = corpus[case_id]
    assert {f.code for f in findings} == case.codes, [f"{f.code} {f.message}" for f in findings]


def test_corpus_is_large_and_covers_every_category():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)
    codes = set().union(*(case.codes for case in CASES))
    for category in ("E1", "E2", "E3", "E4", "W5"):
        assert sum(1 for case in CASES if any(c.startswith(category) for c in case.codes)) >= 3, category
    assert set(RULES) - NOT_IN_CORPUS - codes == set()
    assert sum(1 for case in CASES if not case.codes) >= 8  # valid shapes


def test_findings_name_the_step_and_the_line(corpus):
    _, findings = corpus["input_map_unknown_input"]
    unknown = next(f for f in findings if f.code == "E406")
    assert (unknown.step.index, unknown.step.model.endswith("double")) == (0, True)
    lines = unknown.file.read_text().splitlines()
    assert "step" in lines[unknown.line - 1]
    _, findings = corpus["zero_dimension"]
    (finding,) = findings
    assert "dims" in finding.file.read_text().splitlines()[finding.line - 1]
    _, findings = corpus["syntax_error"]
    (finding,) = findings
    assert finding.line is not None and "max_batch_size" in finding.file.read_text().splitlines()[finding.line - 1]


def test_every_finding_is_one_actionable_sentence(corpus):
    """What is wrong, then how to fix it: a clause after a semicolon, a `must` or a `needs`."""
    for _, findings in corpus.values():
        for finding in findings:
            assert finding.message.endswith("."), finding.message
            assert any(word in finding.message for word in ("; ", " must ", " needs ")), finding.message


def test_model_and_ensemble_parity_entries_name_real_rules_or_a_reason():
    """parity.toml: each Triton check of these areas has mirroring rules or a reason, never both; rules mirror back."""
    entries = tomllib.loads(resources.files("tools.validation").joinpath("parity.toml").read_text())["check"]
    ours = [entry for entry in entries if entry["area"] in ("model config", "ensemble")]
    assert len(ours) >= 100
    for entry in ours:
        assert ("rules" in entry) != ("reason" in entry), entry
        for code in entry.get("rules", []):
            assert code in RULES, entry
    for code, rule in RULES.items():
        if code[1] in "34" and rule.triton_says:
            re.compile(rule.triton_says)
        if code[1] in "34" and rule.triton_rejects:
            assert rule.mirrors, code
