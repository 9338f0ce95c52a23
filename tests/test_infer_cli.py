"""`tools infer` against a real server (human and --json output; every way to name it), its usage and connection
errors, and `tools serve`'s smoke request."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.support import paths
from tools import processes, settings
from tools.bench import pipeline
from tools.cli import app
from tools.serving import client, infer, runtime

TEXTS = ["A man is playing a guitar.", "Someone is strumming a guitar.", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def server():
    with runtime.running_server(runtime.ServerOptions.on_free_ports()) as started:
        yield started


def one_line_error(output: str) -> str:
    """The CLI's whole report of a failure: exactly one line, `error: ...`, and no traceback."""
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


# How a user may name the server: (URL form, whether --protocol is given, whether the URL comes from $TRITON_URL).
URL_FORMS = {
    "host:port --protocol": ("{address}", True, False),
    "scheme://host:port": ("{protocol}://{address}", False, False),
    "TRITON_URL=scheme://host:port": ("{protocol}://{address}", False, True),
}


@pytest.mark.parametrize("form", URL_FORMS)
@pytest.mark.parametrize("protocol", list(client.Protocol))
def test_infer_json_gives_embeddings_and_similarity_over_the_protocol_the_url_names(server, protocol, form):
    address = server.http_url if protocol == client.Protocol.HTTP else server.grpc_url
    template, with_option, from_env = URL_FORMS[form]
    url = template.format(protocol=protocol, address=address)
    args = ["infer", settings.EMBED_MODEL, *TEXTS, "--json", *(["--protocol", str(protocol)] if with_option else [])]
    env = {settings.URL_ENV: url if from_env else None}  # None: unset for the run
    result = CliRunner().invoke(app, args if from_env else [*args, "--url", url], env=env)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["shape"] == [3, settings.EMBEDDING_DIM]
    assert (answer["protocol"], answer["url"]) == (str(protocol), address)
    np.testing.assert_allclose(answer["embeddings"], pipeline.embed_in_process(TEXTS), atol=1e-4)
    similarity = np.array(answer["similarity"])
    np.testing.assert_allclose(np.diag(similarity), 1.0, atol=1e-5)
    assert similarity[0, 1] > similarity[0, 2] + 0.3


def test_infer_prints_shape_and_similarity_matrix_for_people(server):
    result = CliRunner().invoke(app, ["infer", settings.EMBED_MODEL, *TEXTS[:2], "--url", server.http_url])
    assert result.exit_code == 0, result.output
    assert f"embeddings (2, {settings.EMBEDDING_DIM}) float32" in result.stdout
    assert "cosine similarity" in result.stdout and "1.000" in result.stdout


def test_infer_names_a_refused_text_and_exits_1_on_one_line(server):
    result = CliRunner().invoke(app, ["infer", settings.EMBED_MODEL, "fine", "", "--url", f"grpc://{server.grpc_url}"])
    assert result.exit_code == 1
    assert "text 1 is empty" in one_line_error(result.output)


@pytest.mark.parametrize("protocol", list(client.Protocol))
def test_infer_without_a_server_says_on_one_line_it_cannot_reach_it(protocol):
    url = f"{protocol}://127.0.0.1:{processes.free_port()}"
    result = CliRunner().invoke(app, ["infer", settings.EMBED_MODEL, "hello", "--url", url])
    assert result.exit_code == 1
    assert "cannot reach the server" in one_line_error(result.output)


@pytest.mark.parametrize(("url", "protocol", "message"), [
    ("grpc://127.0.0.1:8001", "http", "is grpc but --protocol is http"),
    ("http://127.0.0.1:8000", "grpc", "is http but --protocol is grpc"),
    ("ftp://127.0.0.1:8000", None, "unknown scheme 'ftp'"),
    ("http://[::1", None, "Invalid IPv6 URL"),
    ("host:notaport", None, "Port could not be cast to integer"),
    ("127.0.0.1:99999", None, "Port out of range"),
    ("justahost", None, "is not host:port"),
    ("grpc://host:1/v2", None, "is not host:port"),
])
def test_a_malformed_url_or_one_that_contradicts_the_protocol_is_a_usage_error(url, protocol, message):
    args = ["infer", settings.EMBED_MODEL, "hello", "--url", url, *(["--protocol", protocol] if protocol else [])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in one_line_error(result.output)


def test_resolve_reads_every_url_form_and_defaults_to_the_local_port_of_the_protocol():
    assert client.resolve("example:9000") == (settings.DEFAULT_PROTOCOL, "example:9000")
    assert client.resolve("GRPC://example:9001/") == (client.Protocol.GRPC, "example:9001")
    assert client.resolve("example:9001", client.Protocol.GRPC) == (client.Protocol.GRPC, "example:9001")
    assert client.resolve(None, client.Protocol.GRPC) == (client.Protocol.GRPC,
                                                          f"{settings.DEFAULT_HOST}:{settings.DEFAULT_GRPC_PORT}")
    assert client.resolve("http://") == (client.Protocol.HTTP, f"{settings.DEFAULT_HOST}:{settings.DEFAULT_HTTP_PORT}")


def test_serve_answers_the_smoke_request_over_both_protocols_and_exits():
    ports = [str(processes.free_port()) for _ in range(3)]
    command = [sys.executable, "-m", "tools", "serve", "--http-port", ports[0], "--grpc-port", ports[1],
               "--metrics-port", ports[2], "--exit-after-smoke"]
    done = processes.run("tools serve", command, timeout=180, cwd=paths.PROJECT_ROOT)
    assert done.returncode == 0, done.stderr
    assert f"HTTP 127.0.0.1:{ports[0]}" in done.stderr and f"gRPC 127.0.0.1:{ports[1]}" in done.stderr
    assert done.stdout.count(f"embeddings ({len(infer.SMOKE_TEXTS)}, {settings.EMBEDDING_DIM})") == 2
    assert f"over http at 127.0.0.1:{ports[0]}" in done.stdout and f"over grpc at 127.0.0.1:{ports[1]}" in done.stdout


def test_the_http_client_on_the_grpc_port_is_told_what_it_reached(server):
    result = CliRunner().invoke(app, ["infer", settings.EMBED_MODEL, "hello", "--url", f"http://{server.grpc_url}"])
    assert result.exit_code == 1
    assert "does not answer as Triton's HTTP endpoint does" in one_line_error(result.output)


def test_a_model_without_the_embedding_output_shows_its_own_outputs(server):
    result = CliRunner().invoke(app, ["infer", settings.TOKENIZER_MODEL, "hello world", "--url", server.http_url])
    assert result.exit_code == 0, result.output
    assert f"{settings.TOKENIZER_MODEL} over http" in result.stdout and "TEXT BYTES [1, 1]" in result.stdout
    assert f"{settings.TOKEN_IDS} INT64 [1, " in result.stdout and f"{settings.TOKEN_MASK} INT64 [1, " in result.stdout
    answer = json.loads(CliRunner().invoke(app, ["infer", settings.TOKENIZER_MODEL, "hello world", "--json",
                                                 "--url", server.http_url]).stdout)
    [request] = answer["requests"]
    assert request["inputs"][settings.EMBED_INPUT]["data"] == ["hello world"]
    assert sum(request["outputs"][settings.TOKEN_MASK]["data"]) == 4  # [CLS] hello world [SEP]
