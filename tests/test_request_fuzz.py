"""Malformed inference requests by the hundred against a real tritonserver serving the shipped repository: the server
and its stubs survive, every refusal says what was wrong, no refusal comes from a failure inside our models, and good
requests sent among the bad ones (and after them) are answered correctly.

Triton 2.51 answers some malformed HTTP bodies with 500 before any model runs (invalid JSON, inputs of the wrong JSON
type): that is its front end, recorded here, not asserted away. A 500 from inside a model (a stub's traceback, an
ONNX Runtime failure) would be ours, and fails the test. loadtests/fuzz_requests.py sends a few thousand.
"""

from __future__ import annotations

import contextlib
import random
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.support import paths
from tests.support import request_fuzz as fuzz
from tools import settings
from tools.monitoring import scrape
from tools.serving import client, healing, runtime
from tools.settings import Protocol

CASES = 500
SEED = 20261130
# How a failure inside a Python model reaches the client: the stub's words, its traceback, ONNX Runtime's error.
MODEL_FAILURE = re.compile(r"Traceback|\bAt:|\.py\(\d+\)|Failed to process the request|ONNXRuntimeError|not healthy")
# The only kind the HTTP server may leave without an answer: a Content-Length that lies makes the request unreadable.
SILENT_KINDS = {"http/Content-Length lies"}


@pytest.fixture(scope="module")
def server():
    options = runtime.ServerOptions.on_free_ports(repository=Path(paths.REPOSITORY), models=[settings.EMBED_MODEL])
    with runtime.running_server(options) as server:
        yield server


def _embed_failures(samples: scrape.Samples) -> float:
    """The ensemble's failed requests, every reason (Triton 2.51 labels them OTHER, BACKEND, REJECTED, CANCELED)."""
    return sum(value for (name, labels), value in samples.items()
               if name == "nv_inference_request_failure" and ("model", "embed") in labels)


def _reference(server: runtime.TritonServer) -> np.ndarray:
    with contextlib.closing(client.connect(Protocol.HTTP, server.http_url)) as connection:
        return client.embed(connection, [fuzz.GOOD_TEXT])[0]


def test_malformed_requests_are_refused_in_words_and_the_server_and_its_stubs_survive(server):
    stubs_before = sorted(healing.live_stubs(server.child.pid), key=lambda stub: stub.pid)
    assert stubs_before, "no stub found: the check below would prove nothing"
    reference = _reference(server)
    metrics_before = scrape.scrape(server.metrics_url)
    with fuzz.Sender(server.http_url, server.grpc_url) as sender:
        outcomes = [sender.send(case) for case in fuzz.generate(CASES, SEED, oversized=1)]
    by_status, by_wording = fuzz.tally(outcomes)
    print(dict(by_status))
    for (kind, status, wording), count in sorted(by_wording.items()):
        print(f"{count:4} {kind:45} {status:17} {wording}")

    assert server.child.running() and server.is_ready()
    assert sorted(healing.live_stubs(server.child.pid), key=lambda stub: stub.pid) == stubs_before, "a stub restarted"
    good = [outcome for outcome in outcomes if outcome.case.expect_ok]
    assert len(good) >= 20 and all(outcome.ok for outcome in good), [o.message for o in good if not o.ok]
    for outcome in good:
        np.testing.assert_allclose(outcome.embedding, reference, atol=1e-5)
    refused = [outcome for outcome in outcomes if not outcome.ok]
    assert len(refused) > CASES // 2
    silent = [outcome.case.kind for outcome in refused if outcome.status == "no answer"]
    assert set(silent) <= SILENT_KINDS, silent
    unworded = [(o.case.kind, o.status) for o in refused if o.status != "no answer" and not o.message.strip()]
    assert not unworded
    from_models = [(o.case.kind, o.status, o.message[:200]) for o in refused if MODEL_FAILURE.search(o.message)]
    assert not from_models
    # Our models' refusals are client errors: 400 over HTTP, INVALID_ARGUMENT over gRPC.
    ours = [outcome for outcome in refused if outcome.case.kind.endswith(("UTF-8 in BYTES", "blank text",
                                                                         "above the size limit", "bad tokens"))]
    assert ours and {outcome.status for outcome in ours} <= {"400", "404", "INVALID_ARGUMENT", "NOT_FOUND"}

    assert _embed_failures(scrape.scrape(server.metrics_url)) > _embed_failures(metrics_before)
    np.testing.assert_allclose(_reference(server), reference, atol=1e-5)
    assert client.embed_texts([fuzz.GOOD_TEXT], Protocol.GRPC, server.grpc_url)[0] == pytest.approx(reference,
                                                                                                       abs=1e-5)


def test_one_clients_malformed_bytes_fail_no_other_clients_request(server):
    """Triton 2.51 fails a whole batch when one request in it has malformed BYTES data, before any model runs: with a
    batcher on the tokenizer, good requests batched with a bad one were refused. Good and bad clients side by side."""
    rounds, clients = 60, 3

    def run(make_case) -> list[fuzz.Outcome]:
        rng = random.Random(SEED)
        with fuzz.Sender(server.http_url, server.grpc_url) as sender:
            return [sender.send(make_case(rng)) for _ in range(rounds)]

    with ThreadPoolExecutor(2 * clients) as pool:
        bad = [pool.submit(run, fuzz.grpc_raw_length_lies) for _ in range(clients)]
        good = [pool.submit(run, fuzz.grpc_good) for _ in range(clients)]
        good_outcomes = [outcome for future in good for outcome in future.result()]
        bad_outcomes = [outcome for future in bad for outcome in future.result()]
    assert sum(not outcome.ok for outcome in bad_outcomes) > rounds, "the bad clients were not refused"
    failed = [outcome.message[:160] for outcome in good_outcomes if not outcome.ok]
    assert not failed, f"{len(failed)} of {len(good_outcomes)} good requests failed: {failed[:3]}"


def test_the_generator_is_seeded_and_covers_every_kind():
    first = list(fuzz.generate(60, SEED))
    assert first == list(fuzz.generate(60, SEED))
    assert first != list(fuzz.generate(60, SEED + 1))
    assert {case.kind for case in first} == {kind(random.Random(0)).kind
                                             for kind in fuzz.HTTP_KINDS + fuzz.GRPC_KINDS}
