"""`tools infer` against a real server (human and --json output), and `tools serve`'s smoke request."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.support import paths
from tools import settings
from tools.bench import pipeline as model_logic
from tools.cli import app
from tools.serving import client, infer, runtime

TEXTS = ["A man is playing a guitar.", "Someone is strumming a guitar.", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def server():
    with runtime.running_server(runtime.ServerOptions.on_free_ports()) as started:
        yield started


@pytest.mark.parametrize("protocol", list(client.Protocol))
def test_infer_json_gives_embeddings_and_similarity(server, protocol):
    url = server.http_url if protocol == client.Protocol.HTTP else server.grpc_url
    result = CliRunner().invoke(app, ["infer", *TEXTS, "--protocol", str(protocol), "--url", url, "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["shape"] == [3, settings.EMBEDDING_DIM] and answer["protocol"] == str(protocol)
    np.testing.assert_allclose(answer["embeddings"], model_logic.embed_in_process(TEXTS), atol=1e-4)
    similarity = np.array(answer["similarity"])
    np.testing.assert_allclose(np.diag(similarity), 1.0, atol=1e-5)
    assert similarity[0, 1] > similarity[0, 2] + 0.3


def test_infer_prints_shape_and_similarity_matrix_for_people(server):
    result = CliRunner().invoke(app, ["infer", *TEXTS[:2], "--url", server.http_url])
    assert result.exit_code == 0, result.output
    assert f"embeddings (2, {settings.EMBEDDING_DIM}) float32" in result.stdout
    assert "cosine similarity" in result.stdout and "1.000" in result.stdout


def test_infer_names_a_refused_text_and_exits_1_without_traceback(server):
    result = CliRunner().invoke(app, ["infer", "fine", "", "--protocol", "grpc", "--url", server.grpc_url])
    assert result.exit_code == 1
    assert "text 1 is empty" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("protocol", list(client.Protocol))
def test_infer_without_a_server_says_it_cannot_reach_it(protocol):
    url = f"127.0.0.1:{runtime.free_port()}"
    result = CliRunner().invoke(app, ["infer", "hello", "--url", url, "--protocol", str(protocol)])
    assert result.exit_code == 1 and "cannot reach the server" in result.output
    assert "Traceback" not in result.output


def test_serve_answers_the_smoke_request_over_both_protocols_and_exits():
    ports = [str(runtime.free_port()) for _ in range(3)]
    command = [sys.executable, "-m", "tools", "serve", "--http-port", ports[0], "--grpc-port", ports[1],
               "--metrics-port", ports[2], "--exit-after-smoke"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=paths.PROJECT_ROOT)
    assert done.returncode == 0, done.stderr
    assert f"HTTP 127.0.0.1:{ports[0]}" in done.stderr and f"gRPC 127.0.0.1:{ports[1]}" in done.stderr
    assert done.stdout.count(f"embeddings ({len(infer.SMOKE_TEXTS)}, {settings.EMBEDDING_DIM})") == 2
    assert f"over http at 127.0.0.1:{ports[0]}" in done.stdout and f"over grpc at 127.0.0.1:{ports[1]}" in done.stdout
