"""Load shedding: how a request's outcome is classified, how the verdict treats refusals and errors, and a real
Triton whose encoder queue holds one request, so that a burst is refused in Triton's own words and the report counts
those refusals apart from errors."""

from __future__ import annotations

import json
import shutil

import pytest
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from tests.support import paths
from tools import repository, settings
from tools.cli import app
from tools.errors import LoadTestError
from tools.loadtest import outcomes, report
from tools.loadtest import runner as loadtest
from tools.loadtest.outcomes import Outcome
from tools.loadtest.profiles import Shape
from tools.serving import client, runtime
from tools.validation import write_config

# What Triton 2.51 answers when an ensemble step's queue is full (seen on this server; worded in core's
# scheduler_utils.cc, prefixed by the ensemble scheduler).
QUEUE_FULL = f"in ensemble '{settings.EMBED_MODEL}', [request id: <id_unknown>] Exceeds maximum queue size"

# -- classification -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "outcome"), [
    ("503", Outcome.REFUSED), ("429", Outcome.REFUSED), ("StatusCode.UNAVAILABLE", Outcome.REFUSED),
    ("StatusCode.RESOURCE_EXHAUSTED", Outcome.REFUSED), ("400", Outcome.ERROR), ("500", Outcome.ERROR),
    ("StatusCode.INTERNAL", Outcome.ERROR), ("StatusCode.INVALID_ARGUMENT", Outcome.ERROR), (None, Outcome.ERROR)])
def test_overload_statuses_are_refusals_and_the_rest_are_errors(status, outcome):
    assert outcomes.classify(client.EmbeddingError("words", status)) == outcome


def test_an_answer_is_accepted_and_a_non_triton_exception_is_an_error():
    assert outcomes.classify(None) == Outcome.ACCEPTED
    assert outcomes.classify(ValueError("expected 1 rows of EMBEDDING")) == Outcome.ERROR


def test_grpc_unavailable_is_a_refusal_only_in_triton_queue_words():
    # tritonclient raises the same status for Triton's refusal and for a server it cannot reach.
    refused = client._error(InferenceServerException(QUEUE_FULL, "StatusCode.UNAVAILABLE"))
    timed_out = client._error(InferenceServerException("in ensemble 'embed', Request timeout expired",
                                                       "StatusCode.UNAVAILABLE"))
    unreachable = client._error(InferenceServerException("failed to connect to all addresses",
                                                         "StatusCode.UNAVAILABLE"))
    assert [outcomes.classify(e) for e in (refused, timed_out, unreachable)] == [Outcome.REFUSED, Outcome.REFUSED,
                                                                                  Outcome.ERROR]
    assert str(refused) == QUEUE_FULL and "cannot reach" in str(unreachable)


@pytest.mark.parametrize("protocol", list(settings.Protocol))
def test_a_server_that_cannot_be_reached_is_an_error_not_a_refusal(protocol):
    connection = client.connect(protocol, f"127.0.0.1:{runtime.free_port()}")
    with pytest.raises(client.EmbeddingError) as raised:
        client.embed(connection, ["a"])
    assert outcomes.classify(raised.value) == Outcome.ERROR


def test_a_refusal_tells_locust_its_status_and_the_servers_words_and_entries_round_trip():
    told = outcomes.reported(client.EmbeddingError(QUEUE_FULL, "503"))
    assert isinstance(told, outcomes.Refused) and str(told) == f"503: {QUEUE_FULL}"
    error = client.EmbeddingError("bad input", "400")
    assert outcomes.reported(error) is error
    for outcome in Outcome:
        assert outcomes.outcome_of_entry(outcomes.entry_name("embed/2", outcome)) == outcome
    assert outcomes.entry_name("embed", Outcome.ACCEPTED) == "embed"


def _result(shape: Shape, refused: int, failures: int, slo: str | None = None) -> loadtest.LoadTestResult:
    summary = loadtest.ClientSummary(requests=100, refused=refused, failures=failures, elapsed_s=1, throughput_rps=1,
                                     latency_ms=dict.fromkeys(loadtest.LATENCY_KEYS, 1.0), errors={})
    targets = loadtest.parse_slo(slo) if slo else []
    return loadtest.LoadTestResult(loadtest.LoadTestConfig(url="h:1", shape=shape), summary, [], [], targets,
                                   loadtest.check_slo(summary, targets))


def test_refusals_are_expected_in_a_spike_and_errors_fail_any_run():
    _result(Shape.SPIKE, refused=40, failures=0).verdict()
    _result(Shape.CONSTANT, refused=0, failures=0).verdict()
    for shape in (Shape.CONSTANT, Shape.STEP, Shape.RATE):
        with pytest.raises(LoadTestError, match=r"refused 40 request.* outside a spike"):
            _result(shape, refused=40, failures=0).verdict()
    _result(Shape.CONSTANT, refused=4, failures=0, slo="refused=5%").verdict()
    with pytest.raises(LoadTestError, match="SLO"):
        _result(Shape.SPIKE, refused=40, failures=0, slo="refused=5%").verdict()
    with pytest.raises(LoadTestError, match=r"1 request.* failed with an error"):
        _result(Shape.SPIKE, refused=40, failures=1).verdict()
    _result(Shape.SPIKE, refused=40, failures=1, slo="errors=1%").verdict()


# -- a real burst against a one-request queue -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_queue_server(tmp_path_factory):
    """The shipped repository with the encoder's queue cut to one request (written through the validator)."""
    target = tmp_path_factory.mktemp("shedding") / "repository"
    shutil.copytree(paths.REPOSITORY, target, ignore=shutil.ignore_patterns("__pycache__"))
    repo = repository.load_repository(target)
    encoder = repo.models[settings.ENCODER_MODEL].config
    encoder.dynamic_batching.ClearField("default_queue_policy")  # no timeout: only the queue's length refuses
    encoder.dynamic_batching.default_queue_policy.max_queue_size = 1
    write_config(repo, settings.ENCODER_MODEL, encoder)
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=target)) as server:
        yield server


def test_a_burst_is_refused_in_tritons_words_and_counted_apart_from_errors(tiny_queue_server, tmp_path):
    server = tiny_queue_server
    outcome = CliRunner().invoke(app, ["loadtest", "--url", server.http_url, "--protocol", "http", "--metrics-url",
                                       server.metrics_url, "--shape", "spike", "--users", "16", "-t", "4",
                                       "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output  # refusals are expected in a spike
    summary = json.loads((tmp_path / "summary.json").read_text())["client"]
    assert summary["refused"] > 0 and summary["failures"] == 0 and summary["accepted"] > 0, summary
    assert summary["accepted"] + summary["refused"] == summary["requests"]
    assert list(summary["refusals"]) == [f"http embed (refused): Refused(\"503: {QUEUE_FULL}\")"], summary
    assert summary["errors"] == {}
    header, row = (tmp_path / "summary.csv").read_text().splitlines()
    values = dict(zip(header.split(","), row.split(","), strict=True))
    assert int(values["refused"]) == summary["refused"] and values["failures"] == "0"
    assert "refused:" in outcome.output and "Exceeds maximum queue size" in outcome.output
    assert server.is_ready()


def test_refusals_outside_a_spike_fail_the_grpc_run_with_triton_words(tiny_queue_server, tmp_path):
    server = tiny_queue_server
    config = loadtest.LoadTestConfig(url=server.grpc_url, protocol="grpc", users=16, duration_s=3.0,
                                     metrics_url=server.metrics_url)
    result = loadtest.run(config, tmp_path)
    client_view = result.client
    assert client_view.refused > 0 and client_view.failures == 0 and client_view.accepted > 0
    assert list(client_view.refusals) == [f"grpc embed (refused): Refused(\"StatusCode.UNAVAILABLE: {QUEUE_FULL}\")"]
    # The history counts refusals apart, second by second, and the plot draws them.
    assert sum(row["refused_per_s"] for row in result.history) > 0
    assert max(row["refused"] for row in result.history) <= client_view.refused
    report.write(result, tmp_path)
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(LoadTestError, match="outside a spike"):
        result.verdict()
    assert server.is_ready()


def test_the_help_states_the_exit_rule():
    outcome = CliRunner().invoke(app, ["loadtest", "--help"], env={"COLUMNS": "200"})
    text = " ".join(outcome.output.split())
    assert outcome.exit_code == 0 and "refusals are counted apart from errors" in text, text
    assert "unless --slo refused=... allows some): in a spike, refusals are expected" in text, text
