"""The embedding ensemble on a real tritonserver: answers, accuracy, bad input, versions (one server per module)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.support import paths
from tools import settings
from tools.bench import pipeline
from tools.repository import load_repository, replace_config
from tools.serving import client, runtime

TEXTS = ["A man is playing a guitar.", "Someone is strumming a guitar.", "The stock market fell sharply today.",
         "Ünïcödé text — with emoji 🎸 and 漢字."]
PROTOCOLS = list(client.Protocol)


@pytest.fixture(scope="module")
def server():
    # Only the ensemble (Triton loads the models it composes), not the generate model.
    with runtime.running_server(runtime.ServerOptions.on_free_ports(models=[settings.EMBED_MODEL])) as started:
        yield started


@pytest.fixture(scope="module")
def stub_pids(server) -> set[int]:
    """The Python-backend stub processes as first seen: none may be restarted by bad input."""
    return _stubs(server)


def _stubs(server) -> set[int]:
    return {child.pid for child in psutil.Process(server.process.pid).children(recursive=True)}


def _url(server, protocol: client.Protocol) -> str:
    return server.http_url if protocol == client.Protocol.HTTP else server.grpc_url


@pytest.fixture(scope="module", params=PROTOCOLS)
def connection(request, server):
    protocol_client = client.connect(request.param, _url(server, request.param))
    yield protocol_client
    protocol_client.close()


def test_embed_matches_the_in_process_onnx_reference(connection):
    embeddings = client.embed(connection, TEXTS)
    assert embeddings.shape == (len(TEXTS), settings.EMBEDDING_DIM) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, pipeline.embed_in_process(TEXTS), atol=1e-4)


def test_a_paraphrase_scores_higher_than_an_unrelated_pair(connection):
    similarity = client.cosine_similarity(client.embed(connection, TEXTS[:3]))
    assert similarity[0, 1] > similarity[0, 2] + 0.3 and similarity[1, 0] > similarity[1, 2] + 0.3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_concurrent_requests_from_asyncio_clients_get_the_reference_answers(server, protocol):
    async def run():
        aio = client.connect(protocol, _url(server, protocol), aio=True)
        try:
            return await asyncio.gather(*(client.embed_async(aio, [text]) for text in TEXTS))
        finally:
            await aio.close()

    answers = np.concatenate(asyncio.run(run()))
    np.testing.assert_allclose(answers, pipeline.embed_in_process(TEXTS), atol=1e-4)


def test_plain_json_over_http_works_as_the_readme_curl_shows(server):
    body = {"inputs": [{"name": settings.EMBED_INPUT, "shape": [2, 1], "datatype": "BYTES", "data": TEXTS[:2]}]}
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{settings.EMBED_MODEL}/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        output = json.loads(response.read())["outputs"][0]
    assert output["name"] == settings.EMBED_OUTPUT and output["shape"] == [2, settings.EMBEDDING_DIM]
    np.testing.assert_allclose(np.reshape(output["data"], (2, -1)), pipeline.embed_in_process(TEXTS[:2]),
                               atol=1e-4)


def test_a_100k_character_text_is_truncated_not_refused(connection):
    text = "lorem ipsum dolor sit amet " * 3704  # 100,008 characters
    embedding = client.embed(connection, [text])
    np.testing.assert_allclose(embedding, pipeline.embed_in_process([text]), atol=1e-4)
    first_tokens = pipeline.embed_in_process([" ".join(text.split()[:126])])  # 126 words + [CLS] + [SEP]
    np.testing.assert_allclose(embedding, first_tokens, atol=1e-4)


def _bad_text(texts):
    return lambda c: client.embed(c, texts)


def _raw_input(datatype: str, data: np.ndarray):
    def send(c):
        module = grpcclient if isinstance(c, client.GRPC_CLIENTS) else httpclient
        tensor = module.InferInput(settings.EMBED_INPUT, list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        try:
            c.infer(settings.EMBED_MODEL, [tensor])
        except Exception as exc:
            raise client.EmbeddingError(str(exc)) from None
    return send


BAD_INPUTS = {
    "non-utf8": (_bad_text([b"fine", b"caf\xe9 \xff"]), "text 1 is not valid UTF-8"),
    "empty string": (_bad_text(["fine", ""]), "text 1 is empty"),
    "blank string": (_bad_text([" \t\n"]), "text 0 is empty"),
    "wrong dtype": (_raw_input("FP32", np.zeros((1, 1), np.float32)), "data-type is 'FP32', but model 'embed' expects"),
    "wrong shape": (_raw_input("BYTES", np.array([[b"a", b"b"]], dtype=np.object_)), "unexpected shape for input"),
    "no texts": (_bad_text([]), "got 0"),
    "batch too large": (_bad_text(["x"] * 65), "batch-size must be <= 64"),
    "unknown model": (lambda c: client.embed(c, ["x"], model="no-such-model"), "unknown model: 'no-such-model'"),
    "unknown version": (lambda c: client.embed(c, ["x"], version="9"), "'embed' version 9 is not found"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_refused_by_name_and_nothing_restarts(server, stub_pids, connection, case):
    send, message = BAD_INPUTS[case]
    with pytest.raises(client.EmbeddingError, match=message.replace("[", r"\[")) as refused:
        send(connection)
    assert "Traceback" not in str(refused.value)
    assert server.is_ready() and _stubs(server) == stub_pids
    assert client.embed(connection, TEXTS[:1]).shape == (1, settings.EMBEDDING_DIM)


def _executions_by_batch_size(server, model: str) -> Counter[int]:
    """Triton's count of the model's executions per batch size (rows in the batch), since the server started."""
    with contextlib.closing(server.client()) as connection:
        versions = connection.get_inference_statistics(model)["model_stats"]
    return Counter({stats["batch_size"]: stats["compute_infer"]["count"]
                    for version in versions for stats in version["batch_stats"]})


@pytest.fixture
def batching_server(tmp_path):
    """The repository with a dynamic batcher on the tokenizer. It ships without one (a malformed BYTES request would
    fail its whole batch in Triton itself), but the model's own code must still fail only the bad request of a batch
    for anyone who batches it."""
    repository = load_repository(Path(shutil.copytree(paths.REPOSITORY, tmp_path / "repository")))
    config = repository.models[settings.TOKENIZER_MODEL].config
    config.dynamic_batching.max_queue_delay_microseconds = 100
    replace_config(repository, settings.TOKENIZER_MODEL, config, accept=lambda candidate: None)
    options = runtime.ServerOptions.on_free_ports(repository=repository.root, models=[settings.EMBED_MODEL])
    with runtime.running_server(options) as started:
        yield started


def test_a_bad_request_fails_alone_in_a_batch_of_good_ones(batching_server):
    """Both tokenizer instances are kept busy while the burst arrives, so its requests queue and run together.
    Every good request has 2 texts and the bad one 1: the only execution with an odd number of rows holds the bad
    request, and if it has 3 rows or more it held good requests too. Only the bad request fails."""
    server = batching_server
    good = [[TEXTS[i % len(TEXTS)], TEXTS[(i + 1) % len(TEXTS)]] for i in range(12)]
    blocker = ["lorem ipsum dolor sit amet " * 400] * 64  # about half a second of tokenizing per instance

    async def run():
        aio = client.connect(client.Protocol.GRPC, server.grpc_url, aio=True)
        try:
            blockers = [asyncio.ensure_future(aio.infer(settings.TOKENIZER_MODEL, [client.text_input(aio, blocker)]))
                        for _ in range(2)]
            await asyncio.sleep(0.2)
            sends = [client.embed_async(aio, texts) for texts in good]
            sends.insert(5, client.embed_async(aio, [b"\xc3\x28"]))
            answers = await asyncio.gather(*sends, return_exceptions=True)
            await asyncio.gather(*blockers)
            return answers
        finally:
            await aio.close()

    before = _executions_by_batch_size(server, settings.TOKENIZER_MODEL)
    answers = asyncio.run(run())
    executed = _executions_by_batch_size(server, settings.TOKENIZER_MODEL) - before
    assert sum(size * count for size, count in executed.items()) == 2 * 64 + 2 * len(good) + 1, executed
    odd = [size for size, count in executed.items() for _ in range(count) if size % 2]
    assert len(odd) == 1 and odd[0] >= 3, f"the bad request ran alone: executions by batch size {dict(executed)}"
    failed = answers.pop(5)
    assert isinstance(failed, client.EmbeddingError) and "text 0 is not valid UTF-8" in str(failed)
    assert all(isinstance(answer, np.ndarray) for answer in answers)
    expected = pipeline.embed_in_process([text for texts in good for text in texts])
    np.testing.assert_allclose(np.concatenate(answers), expected, atol=1e-4)


def _encode_directly(c, version: str, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    inputs = []
    for name, data in ((settings.TOKEN_IDS, ids), (settings.TOKEN_MASK, mask)):
        tensor = grpcclient.InferInput(name, list(data.shape), "INT64")
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return c.infer(settings.ENCODER_MODEL, inputs, model_version=version).as_numpy(settings.TOKEN_EMBEDDINGS)


def test_the_encoder_pools_and_answers_only_the_outputs_asked_for(server):
    """The ensemble takes `sentence_embedding` alone; a caller may ask for token embeddings, or get both by default."""
    c = grpcclient.InferenceServerClient(server.grpc_url)
    tokens = pipeline.load("tokenization").TextTokenizer(128, (32,))(TEXTS[:2])
    inputs = []
    for name, data in ((settings.TOKEN_IDS, tokens.input_ids), (settings.TOKEN_MASK, tokens.attention_mask)):
        inputs.append(grpcclient.InferInput(name, list(data.shape), "INT64"))
        inputs[-1].set_data_from_numpy(data)
    answers = {}
    for asked in ([settings.SENTENCE_EMBEDDING], [settings.TOKEN_EMBEDDINGS], None):
        outputs = [grpcclient.InferRequestedOutput(name) for name in asked] if asked else None
        result = c.infer(settings.ENCODER_MODEL, inputs, outputs=outputs)
        answers[tuple(asked or ())] = {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}
    assert set(answers[(settings.SENTENCE_EMBEDDING,)]) == {settings.SENTENCE_EMBEDDING}
    assert set(answers[(settings.TOKEN_EMBEDDINGS,)]) == {settings.TOKEN_EMBEDDINGS}
    both = answers[()]
    assert set(both) == {settings.SENTENCE_EMBEDDING, settings.TOKEN_EMBEDDINGS}
    pooled = pipeline.load("pooling").mean_pool(both[settings.TOKEN_EMBEDDINGS], tokens.attention_mask)
    np.testing.assert_allclose(both[settings.SENTENCE_EMBEDDING], pooled, atol=1e-6)
    np.testing.assert_allclose(answers[(settings.SENTENCE_EMBEDDING,)][settings.SENTENCE_EMBEDDING], pooled, atol=1e-6)
    np.testing.assert_allclose(client.embed_texts(TEXTS[:2], settings.Protocol.GRPC, server.grpc_url), pooled,
                               atol=1e-5)


def test_both_encoder_versions_are_served_and_agree(server):
    c = grpcclient.InferenceServerClient(server.grpc_url)
    assert set(c.get_model_metadata(settings.ENCODER_MODEL).versions) == {"1", "2"}
    assert c.is_model_ready(settings.ENCODER_MODEL, "1") and c.is_model_ready(settings.ENCODER_MODEL, "2")
    tokens = pipeline.load("tokenization").TextTokenizer(128, (32,))(["hi", TEXTS[2]])  # 3 and 9 tokens
    whole, split = (_encode_directly(c, v, tokens.input_ids, tokens.attention_mask) for v in ("1", "2"))
    assert whole.shape == split.shape == (2, 32, settings.EMBEDDING_DIM)
    real = tokens.attention_mask.astype(bool)
    np.testing.assert_allclose(split[real], whole[real], atol=1e-4)
    assert whole[~real].any() and not split[~real].any()  # what tells the versions apart
    with pytest.raises(Exception, match="must lie in"):
        _encode_directly(c, "2", tokens.input_ids + 40_000, tokens.attention_mask)
