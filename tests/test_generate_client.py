"""End to end: `tools infer`, `infer.smoke` and `tools loadtest` against the real `generate` model (SmolLM2-135M on a
real tritonserver, loaded alone), the way the README shows them."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.support import paths
from tools import settings
from tools.cli import app
from tools.loadtest import corpus
from tools.loadtest import runner as loadtest
from tools.serving import infer, runtime

MODEL = settings.GENERATE_MODEL
PROMPT = "Once upon a time"
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def server():
    options = runtime.ServerOptions.on_free_ports(repository=paths.REPOSITORY, models=[MODEL])
    with runtime.running_server(options) as started:
        yield started


def test_infer_streams_the_same_greedy_text_over_both_protocols_with_its_counts(server):
    texts = []
    for url in (f"grpc://{server.grpc_url}", f"http://{server.http_url}"):
        result = CliRunner().invoke(app, ["infer", MODEL, PROMPT, "--param", f"max_tokens={MAX_TOKENS}", "--url", url])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip(), "no text"
        assert "finish_reason length, prompt_tokens" in result.stderr
        assert f"completion_tokens {MAX_TOKENS}" in result.stderr and "first text after" in result.stderr
        texts.append(result.stdout)
    assert texts[0] == texts[1]  # temperature 0 by default: greedy, the same text


def test_infer_json_and_smoke_of_generate(server):
    result = CliRunner().invoke(app, ["infer", MODEL, PROMPT, "--json", "--param", "max_tokens=4",
                                      "--url", f"grpc://{server.grpc_url}"])
    [request] = json.loads(result.stdout)["requests"]
    assert request["completion_tokens"] == request["output_tokens"] == 4 and request["responses"] >= 2
    assert 0 < request["ttft_ms"] < request["latency_ms"]
    results = infer.smoke(server.http_url, server.grpc_url, Console(file=io.StringIO()), [MODEL])
    assert len(results) == 2 and all(r.text and r.output_tokens == infer.SMOKE_PARAMETERS["max_tokens"]
                                     for r in results)


def test_a_short_load_test_of_generate_reports_genai_perfs_figures(server, tmp_path):
    config = loadtest.LoadTestConfig(url=server.grpc_url, protocol="grpc", model=MODEL, users=2, duration_s=4.0,
                                     corpus=corpus.QUERIES_CORPUS, metrics_url=server.metrics_url,
                                     params={"max_tokens": MAX_TOKENS})
    result = loadtest.run(config, tmp_path, loadtest.parse_slo("errors=0,ttft_p99=60s,output_tokens_per_s>=0.1"))
    streamed = result.client.streaming
    assert result.client.failures == 0 and result.slo_broken == [] and streamed.requests == result.client.accepted
    assert streamed.output_tokens_per_request["max"] <= MAX_TOKENS and streamed.output_tokens > 0
    assert streamed.itl_ms["p50"] > 0 and streamed.ttft_ms["p50"] <= result.client.latency_ms["max"] * 1.01
