"""The OpenAI-compatible gateway, spoken to with OpenAI's own Python client, over a real tritonserver serving the
shipped embedding ensemble and tiny decoupled generation models (tests/support/generation_model.py: they stream
their prompt's words in reverse, one per response, as the `generate` contract says a model streams)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import openai
import pytest
import tritonclient.http as httpclient

from tests.support.generation_model import embed_and_generation_repository, write_generation_model
from tools import processes, settings
from tools.gateway import Gateway, GatewayOptions
from tools.serving import client, runtime

SLOW = "generate_slow"  # pauses long enough per word that a test can tell streamed chunks and cancellation apart
SLOW_DELAY_S = 0.05


@pytest.fixture(scope="module")
def journal(tmp_path_factory) -> Path:
    """Where the slow model notes how each of its requests finished."""
    return tmp_path_factory.mktemp("journal") / "slow.jsonl"


@pytest.fixture(scope="module")
def server(tmp_path_factory, journal):
    repository = embed_and_generation_repository(tmp_path_factory.mktemp("gateway") / "repository")
    write_generation_model(repository, SLOW, token_delay_s=SLOW_DELAY_S, journal=journal)
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as started:
        yield started


@pytest.fixture(scope="module")
def gateway(server):
    options = GatewayOptions(server.grpc_url, port=processes.free_port(), control_key=server.control_key)
    with Gateway(options) as running:
        yield running


@pytest.fixture(scope="module")
def api(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url, api_key="unused", max_retries=0)


def _finished(journal: Path) -> list[dict]:
    return [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []


def test_models_are_the_servable_ones_told_from_metadata(api):
    # The tokenizer and encoder are ready too, but neither is a whole embedding or generation model.
    assert sorted(model.id for model in api.models.list()) == [settings.EMBED_MODEL, settings.GENERATE_MODEL, SLOW]


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings_equal_the_grpc_clients(api, server, encoding):
    texts = ["A man is playing a guitar.", "Ünïcödé text — with emoji 🎸 and 漢字.", "hello world"]
    answer = api.embeddings.create(model=settings.EMBED_MODEL, input=texts, encoding_format=encoding)
    with client.connect(client.Protocol.GRPC, server.grpc_url) as connection:
        direct = client.embed(connection, texts)
    got = np.array([item.embedding for item in answer.data]) if encoding == "float" else \
        np.stack([np.frombuffer(base64.b64decode(item.embedding), dtype="<f4") for item in answer.data])
    np.testing.assert_allclose(got, direct, atol=1e-6)
    assert [item.index for item in answer.data] == [0, 1, 2]


def test_embedding_usage_counts_the_tokenizers_tokens(api):
    one = api.embeddings.create(model=settings.EMBED_MODEL, input="hello world")
    two = api.embeddings.create(model=settings.EMBED_MODEL, input=["hello world", "hello world"])
    assert one.usage.prompt_tokens == 4  # [CLS] hello world [SEP]
    assert two.usage.prompt_tokens == 2 * one.usage.prompt_tokens == two.usage.total_tokens
    assert len(one.data[0].embedding) == settings.EMBEDDING_DIM


def test_completion_answers_the_models_text_finish_reason_and_usage(api):
    answer = api.completions.create(model=settings.GENERATE_MODEL, prompt="one two three four", max_tokens=3)
    assert answer.choices[0].text == " four three two"
    assert answer.choices[0].finish_reason == "length"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (4, 3, 7)
    stopped = api.completions.create(model=settings.GENERATE_MODEL, prompt="one two three four", max_tokens=3,
                                     stop=["two", "zzz"])
    assert (stopped.choices[0].text, stopped.choices[0].finish_reason) == (" four three", "stop")


def test_chat_streams_chunks_as_the_model_produces_them_then_usage(api):
    stream = api.chat.completions.create(model=SLOW, messages=[{"role": "user", "content": "hi there"}],
                                         max_tokens=4, stream=True, stream_options={"include_usage": True})
    arrivals, chunks = [], []
    for chunk in stream:
        arrivals.append(time.monotonic())
        chunks.append(chunk)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [(chunk.choices[0].delta.content, at) for chunk, at in zip(chunks, arrivals, strict=True)
               if chunk.choices and chunk.choices[0].delta.content]
    # The model renders "user: hi there" and streams its words in reverse, one word per chunk.
    assert [text for text, _ in content] == [" there", " hi", " user:", " there"]
    # One by one: the model pauses before each word, so the chunks cannot have come in one burst.
    assert content[-1][1] - content[0][1] >= 0.5 * 3 * SLOW_DELAY_S
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"
    assert chunks[-1].choices == [] and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 4)


def test_completion_streams_over_plain_http_as_server_sent_events(gateway):
    body = {"model": settings.GENERATE_MODEL, "prompt": "a b c", "max_tokens": 2, "stream": True}
    request = urllib.request.Request(f"{gateway.url}/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [line.decode().strip() for line in response if line.strip()]
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(line.removeprefix("data: ")) for line in events[:-1]]
    assert [p["choices"][0]["text"] for p in payloads] == [" c", " b", ""]
    assert payloads[-1]["choices"][0]["finish_reason"] == "length"


def test_bad_requests_are_400_with_the_models_words_and_the_gateway_keeps_serving(api):
    with pytest.raises(openai.BadRequestError, match="exceeds the context"):  # the model's INVALID_ARG
        api.completions.create(model=settings.GENERATE_MODEL, prompt="x", max_tokens=100_000)
    with pytest.raises(openai.BadRequestError, match="exceeds the context"):  # refused before the first event
        list(api.chat.completions.create(model=settings.GENERATE_MODEL, max_tokens=100_000, stream=True,
                                         messages=[{"role": "user", "content": "x"}]))
    with pytest.raises(openai.BadRequestError, match="max_tokens"):  # the gateway's own check of types
        api.completions.create(model=settings.GENERATE_MODEL, prompt="x", extra_body={"max_tokens": "many"})
    with pytest.raises(openai.BadRequestError, match="top_p"):
        api.completions.create(model=settings.GENERATE_MODEL, prompt="x", top_p=0)
    assert api.completions.create(model=settings.GENERATE_MODEL, prompt="x y", max_tokens=1).choices[0].text == " y"


def test_unknown_models_are_404(api):
    with pytest.raises(openai.NotFoundError, match="nope"):
        api.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.NotFoundError):  # a generation model is no embedding model
        api.embeddings.create(model=settings.GENERATE_MODEL, input="x")
    with pytest.raises(openai.NotFoundError):  # nor the other way round
        api.chat.completions.create(model=settings.EMBED_MODEL, messages=[{"role": "user", "content": "x"}])


def test_a_client_leaving_mid_stream_cancels_the_triton_request(api, journal):
    before = len(_finished(journal))
    max_tokens = 400  # 20 s of words at the model's pace, unless cancelled
    stream = api.completions.create(model=SLOW, prompt="one two three", max_tokens=max_tokens, stream=True)
    chunks = iter(stream)
    assert [next(chunks).choices[0].text for _ in range(2)] == [" three", " two"]
    stream.close()
    deadline = time.monotonic() + 0.5 * max_tokens * SLOW_DELAY_S  # half the time the whole generation takes
    while len(_finished(journal)) == before:
        assert time.monotonic() < deadline, "the model was still generating after its client left"
        time.sleep(0.1)
    last = _finished(journal)[-1]
    assert last["finish_reason"] == "cancelled" and last["completion_tokens"] < max_tokens // 2


def test_a_model_unloaded_is_404_and_triton_gone_is_503(tmp_path):
    repository = tmp_path / "repository"
    write_generation_model(repository)
    server = runtime.TritonServer(runtime.ServerOptions.on_free_ports(repository=repository)).start()
    try:
        options = GatewayOptions(server.grpc_url, port=processes.free_port(), control_key=server.control_key)
        with Gateway(options) as running:
            api = openai.OpenAI(base_url=running.url, api_key="unused", max_retries=0)
            assert api.completions.create(model=settings.GENERATE_MODEL, prompt="a b", max_tokens=1).choices
            with httpclient.InferenceServerClient(server.http_url) as control:
                control.unload_model(settings.GENERATE_MODEL, headers=server.control_headers)
            with pytest.raises(openai.NotFoundError):  # Triton's refusal of a model the gateway had seen ready
                api.completions.create(model=settings.GENERATE_MODEL, prompt="a b", max_tokens=1)
            assert list(api.models.list()) == []
            server.stop()
            with pytest.raises(openai.InternalServerError) as refused:
                api.completions.create(model=settings.GENERATE_MODEL, prompt="a b", max_tokens=1)
            assert refused.value.status_code == 503
    finally:
        server.stop()


def test_the_gateway_command_serves_until_terminated(server):
    port = processes.free_port()
    command = [sys.executable, "-m", "tools", "gateway", "--url", f"grpc://{server.grpc_url}", "--port", str(port),
               "--control-key", server.control_key]
    base = f"http://{settings.DEFAULT_HOST}:{port}/v1"
    with processes.running("tools gateway", command, ready=lambda: processes.http_ok(f"{base}/models"),
                           timeout=60, waiting_for="the gateway's /v1/models", stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) as child:
        api = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
        assert api.completions.create(model=settings.GENERATE_MODEL, prompt="a b", max_tokens=1).choices[0].text == " b"
        assert child.stop() == 0  # SIGTERM stops it as Ctrl-C does


def test_the_gateway_command_names_what_it_cannot_reach(tmp_path):
    command = [sys.executable, "-m", "tools", "gateway", "--url", f"127.0.0.1:{processes.free_port()}",
               "--port", str(processes.free_port())]
    done = processes.run("tools gateway", command, timeout=60, cwd=Path(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: the OpenAI gateway") and len(done.stderr.strip().splitlines()) == 1
