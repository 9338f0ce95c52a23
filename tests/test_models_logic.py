"""The models' plain-Python logic (tokenizer, ONNX encoder, pooling), called without Triton."""

from __future__ import annotations

import ast

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import paths
from tools.bench import pipeline

tokenization = pipeline.load("tokenization")
onnx_encoder = pipeline.load("onnx_encoder")
pooling = pipeline.load("pooling")


@pytest.fixture(scope="module")
def tokenizer():
    return tokenization.TextTokenizer(max_length=16, buckets=(8, 16))


@pytest.fixture(scope="module")
def encoders():
    """(whole-batch, length-split) encoders: what versions 1 and 2 run."""
    return (onnx_encoder.OnnxEncoder(onnx_encoder.EncoderSettings(split_by_length=False)),
            onnx_encoder.OnnxEncoder(onnx_encoder.EncoderSettings(split_by_length=True)))


def test_texts_decode_from_utf8_and_bad_ones_are_named_by_index():
    assert tokenization.decode_texts([b"caf\xc3\xa9", "plain"]) == ["café", "plain"]
    with pytest.raises(tokenization.InvalidTextError, match="text 1 is not valid UTF-8"):
        tokenization.decode_texts([b"fine", b"\xff\xfe"])
    with pytest.raises(tokenization.InvalidTextError, match="text 0 is empty"):
        tokenization.decode_texts([b"", b"fine"])
    with pytest.raises(tokenization.InvalidTextError, match="text 2 is empty"):
        tokenization.decode_texts(["a", "b", " \n\t"])
    with pytest.raises(tokenization.InvalidTextError, match="no texts"):
        tokenization.decode_texts([])


def test_bucket_spec_is_sorted_capped_and_ends_at_max_length():
    assert tokenization.parse_buckets("64, 16,32,512", 128) == (16, 32, 64, 128)
    assert tokenization.parse_buckets("", 128) == ()
    with pytest.raises(ValueError, match="comma-separated integers"):
        tokenization.parse_buckets("16,abc", 128)
    with pytest.raises(ValueError, match="at least 2"):
        tokenization.parse_buckets("1,8", 128)


@given(st.integers(1, 200), st.lists(st.integers(2, 128), min_size=1, max_size=6))
def test_padded_length_is_the_smallest_bucket_that_fits(longest, spec):
    buckets = tokenization.parse_buckets(",".join(map(str, spec)), 128)
    length = tokenization.padded_length(min(longest, 128), buckets)
    assert length >= min(longest, 128) and length in buckets
    assert all(b < min(longest, 128) for b in buckets if b < length)


def test_tokens_are_padded_to_a_bucket_with_a_matching_mask(tokenizer):
    batch = tokenizer(["hello world", "a somewhat longer sentence than the first"])
    assert batch.input_ids.dtype == np.int64 and batch.attention_mask.dtype == np.int64
    assert batch.input_ids.shape == (2, 16)  # the longer text needs more than 8 tokens
    assert batch.input_ids[0, :4].tolist() == [101, 7592, 2088, 102]  # [CLS] hello world [SEP]
    assert batch.attention_mask[0].tolist() == [1] * 4 + [0] * 12
    assert (batch.input_ids[batch.attention_mask == 0] == 0).all()
    assert tokenizer(["hi"]).input_ids.shape == (1, 8)


def test_long_text_is_truncated_to_max_length_not_refused(tokenizer):
    batch = tokenizer(["word " * 100_000])
    assert batch.input_ids.shape == (1, 16)
    assert batch.attention_mask.all() and batch.input_ids[0, -1] == 102  # still ends with [SEP]


def test_encoder_refuses_tokens_onnx_runtime_would_choke_on(encoders):
    ids = np.array([[101, 102]], dtype=np.int64)
    with pytest.raises(ValueError, match=r"must lie in \[0, 30522\)"):
        encoders[0].encode(ids + 40_000, np.ones_like(ids))
    with pytest.raises(ValueError, match="only 0 and 1"):
        encoders[0].encode(ids, np.full_like(ids, 2))
    with pytest.raises(ValueError, match="must both be"):
        encoders[0].encode(ids, np.ones((1, 3), dtype=np.int64))


def test_encoder_refuses_sequences_of_no_tokens_or_more_than_the_model_has_positions_for(encoders):
    for encoder in encoders:
        for length in (0, onnx_encoder.MAX_SEQUENCE + 1):
            ids = np.full((1, length), 101, dtype=np.int64)
            with pytest.raises(ValueError, match=f"must hold 1 to 512 tokens, got {length}"):
                encoder.encode(ids, np.ones_like(ids))
        longest = np.full((1, onnx_encoder.MAX_SEQUENCE), 101, dtype=np.int64)
        assert encoder.encode(longest, np.ones_like(longest)).shape == (1, onnx_encoder.MAX_SEQUENCE, 384)


def test_a_text_above_the_size_limit_is_refused_before_it_is_tokenized():
    limit = tokenization.MAX_TEXT_BYTES
    assert tokenization.decode_texts([b"x" * limit]) == ["x" * limit]
    with pytest.raises(tokenization.InvalidTextError, match=f"text 1 is {limit + 1} bytes, above the limit"):
        tokenization.decode_texts([b"fine", b"x" * (limit + 1)])
    with pytest.raises(tokenization.InvalidTextError, match=f"text 0 is {limit + 2} bytes"):
        tokenization.decode_texts(["é" * (limit // 2 + 1)])  # counted in UTF-8 bytes, not characters


def test_used_lengths_and_length_classes():
    mask = np.array([[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    lengths = onnx_encoder.used_lengths(mask)
    assert lengths.tolist() == [2, 3, 1, 5]
    assert [rows.tolist() for rows in onnx_encoder.length_classes(lengths)] == [[2], [0], [1], [3]]
    assert [rows.tolist() for rows in onnx_encoder.length_classes(np.array([3, 4, 9, 16, 2]))] == [[4], [0, 1],
                                                                                                   [2, 3]]


def test_splitting_a_batch_by_length_keeps_the_embeddings(encoders):
    tokenizer = tokenization.TextTokenizer(max_length=64, buckets=(64,))
    texts = ["short", "a sentence that is a little longer than the first one", "mid length text here"]
    batch = tokenizer(texts)
    whole, split = (encoder.encode(batch.input_ids, batch.attention_mask) for encoder in encoders)
    assert whole.shape == split.shape == (3, 64, 384)
    real = batch.attention_mask.astype(bool)
    np.testing.assert_allclose(split[real], whole[real], atol=1e-4)
    for row, text in enumerate(texts):  # each row as if it ran alone, without padding
        alone = tokenization.TextTokenizer(max_length=64)([text])
        np.testing.assert_allclose(split[row, real[row]], encoders[0].encode(alone.input_ids, alone.attention_mask)[0],
                                   atol=1e-4)
    assert not split[~real].any()


def test_mean_pooling_ignores_padding_and_normalises():
    hidden = np.zeros((2, 3, 4), dtype=np.float32)
    hidden[0, 0] = [3, 0, 0, 0]
    hidden[0, 1] = [0, 4, 0, 0]
    hidden[0, 2] = [100, 100, 100, 100]  # padding: must not count
    hidden[1, 0] = [0, 0, 2, 0]
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    pooled = pooling.mean_pool(hidden, mask)
    np.testing.assert_allclose(pooled, [[0.6, 0.8, 0, 0], [0, 0, 1, 0]], atol=1e-6)
    assert pooled.dtype == np.float32


def test_pooling_a_sequence_without_tokens_gives_zeros_and_bad_shapes_are_named():
    assert not pooling.mean_pool(np.ones((1, 2, 3), np.float32), np.zeros((1, 2), np.int64)).any()
    with pytest.raises(ValueError, match="must be"):
        pooling.mean_pool(np.ones((1, 2, 3), np.float32), np.ones((1, 3), np.int64))


def test_in_process_embeddings_rank_a_paraphrase_above_an_unrelated_text():
    embeddings = pipeline.embed_in_process(["A man is playing a guitar.", "Someone plays the guitar.",
                                               "The stock market fell today."])
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > 0.6 > 0.2 > similarity[0, 2]


@pytest.mark.parametrize("path", sorted(paths.REPOSITORY.rglob("*.py")), ids=str)
def test_model_code_parses_as_python_3_10_the_python_of_nvidias_24_10_container(path):
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
