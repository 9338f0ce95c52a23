"""Load tests of models other than the embedding service: GenAI-Perf's figures of a streaming model (arithmetic
alone, then short real Locust runs against a real decoupled model over gRPC streams and HTTP generate_stream), the
SLO gate on them, and a numeric model fed generated data or perf_analyzer input data."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.support.zoo import TENSORS, WORDS, write_zoo
from tools.cli import app
from tools.errors import UsageError
from tools.loadtest import corpus, report
from tools.loadtest import runner as loadtest
from tools.loadtest.streaming import StreamingSummary, StreamRecord, statistics
from tools.serving import runtime

# -- arithmetic --------------------------------------------------------------------------------------------------


def test_inter_token_latency_is_genai_perfs_per_request_mean_after_the_first_token():
    assert StreamRecord(ttft_ms=10, latency_ms=40, output_tokens=4).itl_ms == pytest.approx(10)
    assert StreamRecord(ttft_ms=10, latency_ms=10, output_tokens=1).itl_ms is None
    assert StreamRecord(ttft_ms=None, latency_ms=10, output_tokens=0).itl_ms is None


def test_a_runs_streaming_figures_are_statistics_over_requests_and_tokens_over_its_time():
    records = [StreamRecord(10, 40, 4), StreamRecord(20, 20, 1), StreamRecord(30, 130, 11)]
    summary = StreamingSummary.of(records, elapsed_s=2.0)
    assert (summary.requests, summary.output_tokens, summary.output_tokens_per_s) == (3, 16, 8.0)
    assert summary.ttft_ms["min"] == 10 and summary.ttft_ms["max"] == 30 and summary.ttft_ms["p50"] == 20
    assert summary.itl_ms["avg"] == 10 and summary.itl_ms["p99"] == 10  # the one-token request has no ITL
    assert summary.output_tokens_per_request["avg"] == pytest.approx(16 / 3, abs=0.01)
    assert StreamingSummary.from_rows([r.as_row() for r in records], 2.0) == summary
    assert statistics([]) == dict.fromkeys(statistics([1.0]), 0.0)


def test_slos_take_streaming_keys_with_their_direction():
    targets = {t.key: t.limit for t in loadtest.parse_slo(
        "ttft_p99=500ms,itl_p50<=0.05s,ttft_avg=200us,output_tokens_per_s>=100,rps>=5,p99<=1s")}
    assert targets == {"ttft_p99": 500, "itl_p50": 50, "ttft_avg": 0.2, "output_tokens_per_s": 100, "rps": 5,
                       "p99": 1000}
    assert [t.describe() for t in loadtest.parse_slo("ttft_p99=500ms,output_tokens_per_s>=100")] == [
        "ttft_p99 <= 500 ms", "output_tokens_per_s >= 100 output tokens/s"]


@pytest.mark.parametrize(("text", "message"), [
    ("ttft_p99>=5ms", "is a ceiling"), ("output_tokens_per_s<=3", "is a floor"), ("rps<=3", "is a floor"),
    ("ttft_p42=1ms", "ttft_ and itl_"), ("output_tokens_per_s=5ms", "throughput floors"), ("ttft_min=1ms", "keys")])
def test_bad_streaming_slo_terms_are_refused_with_a_hint(text, message):
    with pytest.raises(UsageError, match=message):
        loadtest.parse_slo(text)


def _client(streaming: StreamingSummary | None) -> loadtest.ClientSummary:
    return loadtest.ClientSummary(requests=3, refused=0, failures=0, elapsed_s=2, throughput_rps=1.5,
                                  latency_ms=dict.fromkeys(loadtest.LATENCY_KEYS, 100.0), errors={},
                                  streaming=streaming)


def test_the_slo_check_judges_streaming_figures_and_names_a_model_that_does_not_stream():
    summary = StreamingSummary.of([StreamRecord(10, 40, 4), StreamRecord(30, 130, 11)], elapsed_s=1.0)
    kept = loadtest.parse_slo("ttft_p99=50ms,itl_max=10ms,output_tokens_per_s>=15")
    assert loadtest.check_slo(_client(summary), kept) == []
    broken = loadtest.check_slo(_client(summary), loadtest.parse_slo("ttft_p50=5ms,output_tokens_per_s>=20"))
    assert broken == ["ttft_p50 <= 5 ms broken: measured 20 ms",
                      "output_tokens_per_s >= 20 output tokens/s broken: measured 15.0 output tokens/s"]
    [unstreamed] = loadtest.check_slo(_client(None), loadtest.parse_slo("itl_p99=5ms"))
    assert "the model does not stream" in unstreamed


# -- real runs ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = write_zoo(tmp_path_factory.mktemp("zoo") / "repository")
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as started:
        yield started


def _config(server, protocol: str, model: str = WORDS, **overrides) -> loadtest.LoadTestConfig:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    options = {"users": 2, "duration_s": 3.0, "corpus": corpus.QUERIES_CORPUS, **overrides}
    return loadtest.LoadTestConfig(url=url, protocol=protocol, model=model, metrics_url=server.metrics_url, **options)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_streaming_run_measures_first_token_inter_token_latency_and_tokens(server, protocol, tmp_path):
    delay_ms, max_tokens = 10, 3
    config = _config(server, protocol, params={"delay_ms": delay_ms, "max_tokens": max_tokens})
    loadtest.check_target(config)
    result = loadtest.run(config, tmp_path, loadtest.parse_slo("errors=0,ttft_p99=60s,output_tokens_per_s>=0.1"))
    client, streamed = result.client, result.client.streaming
    assert client.failures == 0 and client.accepted > 0 and result.slo_broken == [], client.errors
    assert streamed is not None and streamed.requests == client.accepted
    # The parameters reached the model: every answer stops at max_tokens (queries have 2 to 12 words) ...
    assert 2 <= streamed.output_tokens_per_request["min"] <= streamed.output_tokens_per_request["max"] == max_tokens
    # ... and its responses come at least delay_ms apart, which the inter-token latency sees.
    assert streamed.itl_ms["p50"] >= delay_ms * 0.9, streamed.itl_ms
    assert 0 < streamed.ttft_ms["p50"] <= streamed.ttft_ms["p99"] <= client.latency_ms["max"] * 1.01
    assert streamed.output_tokens_per_s == pytest.approx(streamed.output_tokens / client.elapsed_s, rel=0.01)
    files = report.write(result, tmp_path)
    summary = json.loads(files["json"].read_text())
    assert summary["client"]["streaming"]["ttft_ms"]["p99"] == streamed.ttft_ms["p99"]
    header, row = files["csv"].read_text().splitlines()
    columns = dict(zip(header.split(","), row.split(","), strict=True))
    assert float(columns["itl_p50_ms"]) == streamed.itl_ms["p50"] and columns["output_tokens_per_s"]


def test_the_command_reports_genai_perfs_figures_and_gates_on_them(server, tmp_path):
    common = ["loadtest", "--model", WORDS, "--url", f"grpc://{server.grpc_url}", "--metrics-url",
              server.metrics_url, "--users", "2", "-t", "2", "--workload", "queries", "--out", str(tmp_path)]
    passed = CliRunner().invoke(app, [*common, "--slo", "ttft_p99=60s,itl_p99=60s,output_tokens_per_s>=0.1"],
                                env={"COLUMNS": "200"})
    assert passed.exit_code == 0, passed.output
    for words in ("time to first token (ms)", "inter-token latency (ms)", "output tokens/s", "requests/s",
                  "SLO ttft_p99 <= 60000 ms"):
        assert words in passed.stdout, passed.stdout
    broken = CliRunner().invoke(app, [*common, "--slo", "ttft_p99=0.001ms"], env={"COLUMNS": "200"})
    assert broken.exit_code == 1 and "ttft_p99 <= 0.001 ms broken: measured" in broken.output, broken.output


def test_input_data_drives_a_streaming_run(server, tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"data": [{"text_input": ["exactly four words here"]}]}))
    result = loadtest.run(_config(server, "grpc", input_data=path), tmp_path / "out")
    streamed = result.client.streaming
    assert result.client.failures == 0 and streamed.requests > 0
    assert streamed.output_tokens_per_request["min"] == streamed.output_tokens_per_request["max"] == 4


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_numeric_model_is_loaded_with_generated_data_and_a_streaming_slo_names_it(server, protocol, tmp_path):
    config = _config(server, protocol, model=TENSORS, shapes={"X": (5, 3)}, texts_per_request=2)
    result = loadtest.run(config, tmp_path, loadtest.parse_slo("errors=0,ttft_p99=1s"))
    assert result.client.accepted > 0 and result.client.failures == 0 and result.client.streaming is None
    assert result.slo_broken == ["ttft_p99 <= 1000 ms broken: measured nothing: the model does not stream (it is "
                                 "not decoupled)"]
    [triton] = result.triton
    assert triton.model == TENSORS and triton.avg_batch >= 2  # two rows per request


@pytest.mark.parametrize(("args", "message"), [
    (["--model", TENSORS, "--input-shape", "X:2,2"], "does not fit its declared dims"),
    (["--model", TENSORS, "--text-input", "X"], "is INT32, not text"),
    (["--model", WORDS, "--texts-per-request", "2"], "does not batch"),
    (["--model", WORDS, "--param", "timeout=3"], "reserved")])
def test_requests_that_cannot_be_built_for_the_model_are_refused_before_locust_starts(server, args, message,
                                                                                      tmp_path):
    outcome = CliRunner().invoke(app, ["loadtest", "--url", server.http_url, "--users", "1", "-t", "2",
                                       "--out", str(tmp_path), *args], env={"COLUMNS": "200"})
    assert outcome.exit_code == 2 and message in outcome.output, outcome.output
    assert not (tmp_path / "locust.log").exists()


def test_the_grpc_streams_of_several_users_run_at_once_not_one_after_another(server, tmp_path):
    """Locust's users are greenlets of one process: a gRPC stream that blocked it would serialise them. By Little's
    law the requests in flight are throughput x latency: about the user count when they overlap, 1 when not."""
    users = 4
    config = _config(server, "grpc", users=users, params={"delay_ms": 50, "max_tokens": 3})
    client = loadtest.run(config, tmp_path).client
    in_flight = client.throughput_rps * client.latency_ms["p50"] / 1e3
    assert client.failures == 0 and in_flight > users / 2, (client.throughput_rps, client.latency_ms)
