"""The corpus against the real Triton: what it says Triton rejects, Triton rejects; what it says loads, loads.

One tritonserver (explicit model control, nothing loaded at start) serves the whole corpus as one
repository; each case's target model is loaded through the repository API and unloaded again, a few
at a time. Only Triton's own refusal counts as rejecting (and it must say what the rule's `triton_says`
says); a load that times out or loses its connection is "no answer", a verdict of its own. OFFLINE cases
are not tried here: each says why in the corpus.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.validation.corpus import CASES, Case, Triton, build_corpus, model_name
from tools.errors import ServingError
from tools.serving import runtime
from tools.validation import parity
from tools.validation.findings import RULES
from tools.validation.server import poll_failure

CONCURRENT_LOADS = 4
LOAD_TIMEOUT_S = 60.0
NO_ANSWER_WAIT_S = 15.0  # how long a NO_ANSWER case is given to answer after all
TRIED = [case for case in CASES if case.triton is not Triton.OFFLINE]


@dataclass(frozen=True)
class Verdict:
    """What Triton did with one load request: loaded, refused (with its message) or never answered."""

    outcome: Triton  # LOADS, REJECTS or NO_ANSWER
    message: str = ""


def load(server: runtime.TritonServer, name: str, timeout: float) -> Verdict:
    try:
        server.load_model(name, timeout=timeout)
    except runtime.NoAnswerError as exc:  # a deadline or a lost connection: Triton never said no
        return Verdict(Triton.NO_ANSWER, str(exc))
    except ServingError as exc:  # Triton's own refusal
        return Verdict(Triton.REJECTS, str(exc))
    return Verdict(Triton.LOADS)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict[str, Verdict]:
    root = tmp_path_factory.mktemp("differential")
    built = build_corpus(root)

    def try_case(server: runtime.TritonServer, case: Case) -> tuple[str, Verdict]:
        name = model_name(built[case.id][1], case.target)
        verdict = load(server, name, NO_ANSWER_WAIT_S if case.triton is Triton.NO_ANSWER else LOAD_TIMEOUT_S)
        if verdict.outcome is Triton.LOADS:
            with server.client(LOAD_TIMEOUT_S) as connection:
                connection.unload_model(name, headers=server.control_headers, unload_dependents=True)
        return case.id, verdict

    results: dict[str, Verdict] = {}
    log = ""
    # Cases Triton never answers get a server of their own: a load left hanging can take the server down with it.
    hanging = [case for case in TRIED if case.triton is Triton.NO_ANSWER]
    for batch in ([case for case in TRIED if case not in hanging], hanging):
        with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=root, models=[])) as server, \
                ThreadPoolExecutor(CONCURRENT_LOADS) as pool:
            results.update(pool.map(lambda case: try_case(server, case), batch))
            log += server.log_text()
    for case_id, verdict in results.items():
        if verdict.outcome is Triton.REJECTS:
            case, prefix = built[case_id]
            reason = poll_failure(log, model_name(prefix, case.target))
            results[case_id] = Verdict(Triton.REJECTS, f"{verdict.message} ({reason})" if reason else verdict.message)
    return results


def expected_messages(case: Case) -> list[str]:
    return [RULES[code].triton_says for code in sorted(case.codes) if RULES[code].triton_says]


@pytest.mark.parametrize("case", TRIED, ids=[case.id for case in TRIED])
def test_triton_agrees_with_the_corpus(verdicts, case):
    verdict = verdicts[case.id]
    has_errors = any(code.startswith("E") for code in case.codes)
    if case.triton is Triton.REJECTS:
        assert verdict.outcome is Triton.REJECTS, f"{case.id}: the corpus says Triton refuses it: {verdict}"
        patterns = expected_messages(case)
        assert not patterns or any(re.search(p, verdict.message) for p in patterns), \
            f"{case.id}: Triton refused it for another reason: {verdict.message}"
    elif case.triton is Triton.NO_ANSWER:
        assert verdict.outcome is Triton.NO_ANSWER, f"{case.id}: Triton answered: {verdict}"
    else:
        assert verdict.outcome is Triton.LOADS, f"{case.id}: Triton did not load it: {verdict}"
        # LOADS cases are clean or warnings only; STRICTER cases are the errors we report on purpose.
        assert has_errors == (case.triton is Triton.STRICTER)


def proven_codes(verdicts: dict[str, Verdict]) -> set[str]:
    """Codes backed by Triton's own refusal of a case: every error code of the case, except a rule whose
    `triton_says` the refusal does not match. Cases never tried (OFFLINE) or never answered prove nothing."""
    proven = set()
    for case in TRIED:
        verdict = verdicts[case.id]
        if case.triton is Triton.REJECTS and verdict.outcome is Triton.REJECTS:
            proven |= {code for code in case.codes if code.startswith("E")
                       and re.search(RULES[code].triton_says or "", verdict.message)}
    return proven


def test_rules_claiming_triton_rejects_are_proven_or_listed_as_unproven(verdicts):
    """A rule claiming `triton_rejects` needs a case Triton refused for that reason; the others are listed (and the
    parity figure reports them) as unproven."""
    claimed = {code for code, rule in RULES.items() if rule.triton_rejects and code[1] in "1234"}
    assert claimed - proven_codes(verdicts) == set(parity.load_parity().unproven)


def test_accepted_problems_are_never_errors():
    """A repository Triton loads and serves exits 0: a rule whose problem Triton accepts is a warning, unless
    the project marks it as its own on purpose (in parity.toml)."""
    errors = {code for code, rule in RULES.items() if not rule.triton_rejects and code.startswith("E")}
    assert errors <= set(parity.load_parity().project_only), sorted(errors)
