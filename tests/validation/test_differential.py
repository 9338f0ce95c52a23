"""The corpus against the real Triton: what it says Triton rejects, Triton rejects; what it says loads, loads.

One tritonserver (explicit model control, nothing loaded at start) serves the whole corpus as one
repository; each case's target model is loaded through the repository API and unloaded again, a few
at a time. OFFLINE cases are not tried here: each says why in the corpus.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.validation.corpus import CASES, Triton, build_corpus
from tools.serving import runtime
from tools.validation.findings import RULES
from tools.validation.server import poll_failure, refusal_of

CONCURRENT_LOADS = 4
LOAD_TIMEOUT_S = 60.0
TRIED = [case for case in CASES if case.triton is not Triton.OFFLINE]


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    """case id -> Triton's refusal message, or None when it loaded the case's target model."""
    root = tmp_path_factory.mktemp("differential")
    built = build_corpus(root)

    def try_case(server: runtime.TritonServer, case_id: str) -> tuple[str, str | None]:
        case, prefix = built[case_id]
        name = prefix + case.target
        refusal = refusal_of(server, name, LOAD_TIMEOUT_S)
        if refusal is None:
            with server.client(LOAD_TIMEOUT_S) as connection:
                connection.unload_model(name, headers=server.control_headers, unload_dependents=True)
        return case_id, refusal

    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=root, models=[])) as server, \
            ThreadPoolExecutor(CONCURRENT_LOADS) as pool:
        results = dict(pool.map(lambda case: try_case(server, case.id), TRIED))
        log = server.log_text()
    return {cid: (poll_failure(log, built[cid][1] + built[cid][0].target) or refusal) if refusal else None
            for cid, refusal in results.items()}


@pytest.mark.parametrize("case", TRIED, ids=[case.id for case in TRIED])
def test_triton_agrees_with_the_corpus(verdicts, case):
    refusal = verdicts[case.id]
    has_errors = any(code.startswith("E") for code in case.codes)
    if case.triton is Triton.REJECTS:
        assert refusal is not None, f"{case.id}: the corpus says Triton refuses it, but Triton loaded it"
    else:
        assert refusal is None, f"{case.id}: Triton refused it: {refusal}"
        # LOADS cases are clean or warnings only; STRICTER cases are the errors we report on purpose.
        assert has_errors == (case.triton is Triton.STRICTER)


def test_codes_marked_as_rejected_by_triton_are_backed_by_a_rejected_case():
    """A rule claiming `triton_rejects` needs a case Triton rejected (or one that cannot be tried here)."""
    backed = {code for case in CASES if case.triton in (Triton.REJECTS, Triton.OFFLINE) for code in case.codes}
    claimed = {code for code, rule in RULES.items() if rule.triton_rejects and code[1] in "1234"}
    assert claimed - backed <= {"E104"}, sorted(claimed - backed)
