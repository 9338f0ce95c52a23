"""Embedding accuracy against an independent reference: the upstream fp32 weights run in plain numpy.

The service runs an int8 ONNX export through the repository's own tokenizer, encoder and pooling modules; the
reference (tests/support/reference_minilm.py) shares none of that code, so a bug in any of them shows up here
instead of being compared with itself. Both the in-process pipeline and the real served `embed` ensemble must
stay within cosine MIN_COSINE of the reference for every text.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.support import paths
from tests.support import reference_minilm as reference_model
from tools import settings
from tools.bench import pipeline
from tools.serving import client, runtime

# int8 weights cost well under 0.01 of cosine; a masking or pooling bug costs far more (see the teeth test).
MIN_COSINE = 0.99

PASSAGE = (
    "The river rose slowly through the night, and by morning the lower fields had vanished under brown water. "
    "Farmers who had watched the sky for weeks gathered on the church steps to compare notes on what had been "
    "lost: a barn roof here, a flock of sheep there, the new bridge that the council had promised would survive "
    "a hundred years of floods. Children waded in the shallows looking for fish stranded by the current, while "
    "their parents argued about whether the dam upstream had been opened too late or too early. By noon the rain "
    "returned, harder than before, and the radio warned that the crest would not arrive until the following "
    "evening. Nobody went home; the baker handed out bread, the schoolteacher counted heads, and the old ferryman "
    "rowed back and forth across what had once been the main road, carrying letters, medicine and gossip."
)
TEXTS = {
    "english": "A man is playing a guitar on the street corner.",
    "question": "How do I reset my password if I no longer have access to my email?",
    "accents": "Café déjà vu: the naïve fiancée ordered crème brûlée in Zürich.",
    "cjk": "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "emoji": "Great concert tonight 🎸🔥🎉 can't wait for the encore 👏",
    "combining marks": "Cafe\u0301 nai\u0308ve e\u0301le\u0300ve (decomposed accents)",
    "one character": "a",
    "long passage": PASSAGE,
}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [n, d] arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def assert_close_to_reference(embeddings: np.ndarray, expected: np.ndarray) -> None:
    similarity = cosines(embeddings, expected)
    below = {name: round(float(value), 4) for name, value in zip(TEXTS, similarity, strict=True)
             if value < MIN_COSINE}
    assert not below, f"cosine below {MIN_COSINE} against the reference: {below}"


@pytest.fixture(scope="module")
def reference() -> reference_model.ReferenceMiniLM:
    return reference_model.load_reference(paths.REPOSITORY)


@pytest.fixture(scope="module")
def expected(reference) -> np.ndarray:
    """The reference embeddings of TEXTS, each text computed alone (no padding involved)."""
    return np.concatenate([reference.embed([text]) for text in TEXTS.values()])


def test_the_text_set_covers_truncation_and_a_single_character(reference):
    assert reference.max_length == pipeline.configured_max_length(paths.REPOSITORY)
    passage = reference.tokenizer.encode(PASSAGE)
    assert len(passage.ids) == reference.max_length and passage.overflowing  # really cut at 128 tokens
    assert reference.tokenize([TEXTS["one character"]]).input_ids.tolist() == [[101, 1037, 102]]  # [CLS] a [SEP]


def test_reference_refuses_weights_of_another_architecture(tmp_path):
    folder = reference_model.model_dir()
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 12}))
    shutil.copy(folder / "tokenizer.json", tmp_path)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        reference_model.ReferenceMiniLM(tmp_path, 128)


def test_reference_behaves_like_a_sentence_encoder(reference, expected):
    np.testing.assert_allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-12)
    assert reference.tokenize(["hello world"]).input_ids.tolist() == [[101, 7592, 2088, 102]]
    paraphrases = reference.embed(["A man is playing a guitar.", "Someone plays the guitar.",
                                   "The stock market fell today."])
    similarity = paraphrases @ paraphrases.T
    assert similarity[0, 1] > similarity[0, 2] + 0.5
    # Padding in a batch changes nothing: the mask keeps it out of attention and pooling.
    np.testing.assert_allclose(reference.embed(list(TEXTS.values())), expected, atol=1e-9)


def test_reference_has_teeth_a_mask_ignored_or_padding_pooled_falls_below_the_threshold(reference, expected):
    """Bugs the service could have: the same check that accepts the service rejects them."""
    tokens = reference.tokenize(list(TEXTS.values()))  # padded to the long passage's 128 tokens
    everything = np.ones_like(tokens.attention_mask)
    mask_ignored = reference_model.mean_pool(reference.hidden_states(tokens.input_ids, everything),
                                             tokens.attention_mask)
    padding_pooled = reference_model.mean_pool(reference.hidden_states(tokens.input_ids, tokens.attention_mask),
                                               everything)
    for broken in (mask_ignored, padding_pooled):
        similarity = cosines(broken, expected)
        assert similarity.min() < MIN_COSINE - 0.1
        with pytest.raises(AssertionError, match="cosine below"):
            assert_close_to_reference(broken, expected)
        assert similarity[list(TEXTS).index("long passage")] > 0.9999  # unpadded: the bug cannot show there


def test_in_process_pipeline_matches_the_reference(expected):
    assert_close_to_reference(pipeline.embed_in_process(list(TEXTS.values())), expected)


@pytest.fixture(scope="module")
def server():
    options = runtime.ServerOptions.on_free_ports(repository=paths.REPOSITORY, models=[settings.EMBED_MODEL])
    with runtime.running_server(options) as started:
        yield started


@pytest.mark.parametrize("protocol", list(client.Protocol))
def test_served_embed_matches_the_reference(server, expected, protocol):
    connection = client.connect(protocol, server.http_url if protocol == client.Protocol.HTTP else server.grpc_url)
    try:
        batched = client.embed(connection, list(TEXTS.values()))  # one request: the service pads them together
        alone = np.concatenate([client.embed(connection, [text]) for text in TEXTS.values()])
    finally:
        connection.close()
    assert_close_to_reference(batched, expected)
    assert_close_to_reference(alone, expected)
