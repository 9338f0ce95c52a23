"""The generate model's logic without Triton: settings, bad input, chat rendering, and real generations with the real
GGUF file (it loads in a fraction of a second; every generation here is a few tokens)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.support.generate import generation
from tools.monitoring import metrics

gen = generation()
CONTEXT = 256
GUITARS = "Emoji: 🎸🎸🎸"  # the model answers more guitars, each emoji three byte-level tokens


@pytest.fixture(scope="module")
def generator():
    return gen.TextGenerator(gen.load_model(n_threads=1, n_ctx=CONTEXT))


def _run(generator, cancelled=lambda: False, **request) -> tuple[list, str, str]:
    """(pieces, text, finish_reason) of one request."""
    pieces = list(generator.stream(generator.prepare(**request), cancelled))
    return pieces, "".join(piece.text for piece in pieces), pieces[-1].finish_reason


def test_the_weights_are_found_without_importing_their_package():
    assert gen.weights_path().name == gen.WEIGHTS_FILE and gen.weights_path().stat().st_size > 50_000_000
    assert gen.WEIGHTS_PACKAGE not in sys.modules  # importing it would need the unrelated `llm` CLI


def test_the_model_exports_the_metric_names_the_dashboards_and_rules_read():
    assert (gen.PROMPT_TOKENS_METRIC, gen.OUTPUT_TOKENS_METRIC, gen.FIRST_TOKEN_METRIC) == (
        metrics.GENERATION_PROMPT_TOKENS, metrics.GENERATION_OUTPUT_TOKENS, metrics.GENERATION_FIRST_TOKEN_SECONDS)


def test_settings_default_to_greedy_64_tokens_without_streaming():
    assert gen.parse_settings() == gen.Settings(max_tokens=64, temperature=0.0, top_p=1.0, top_k=0, seed=None, stop=(),
                                                stream=False)


def test_parameters_win_over_the_stream_input_which_wins_over_sampling_parameters():
    sampling = json.dumps({"max_tokens": 5, "temperature": 0.5, "stream": False, "stop": ["a", "b"], "seed": 1})
    settings = gen.parse_settings(json.dumps({"max_tokens": 7, "top_k": 3}), sampling, stream=True)
    assert settings == gen.Settings(max_tokens=7, temperature=0.5, top_k=3, seed=1, stop=("a", "b"), stream=True)
    assert gen.parse_settings({"stream": False}, None, stream=True).stream is False


def test_stop_is_a_string_or_a_json_list_of_them_and_triton_parameters_are_ignored():
    assert gen.parse_settings({"stop": "\n\n"}).stop == ("\n\n",)
    assert gen.parse_settings({"stop": '["END", "\\n"]'}).stop == ("END", "\n")
    assert gen.parse_settings({"stop": "[not json"}).stop == ("[not json",)
    assert gen.parse_settings({"triton_enable_empty_final_response": True}) == gen.Settings()


def _hello(**fields) -> dict:
    return {"text_input": "Hello", **fields}


BAD_REQUESTS = [
    ({}, "no prompt: give text_input or messages"),
    ({"text_input": "hi", "messages": "[]"}, "exactly one of text_input and messages"),
    ({"text_input": b""}, "text_input is empty"),
    ({"text_input": " \n"}, "text_input is empty"),
    ({"text_input": b"caf\xe9"}, r"text_input is not valid UTF-8 \(byte 0xe9 at offset 3\)"),
    ({"messages": b'[{"role": "user", "content": "\xff"}]'}, "messages is not valid UTF-8"),
    ({"messages": "[{"}, "messages is not valid JSON"),
    ({"messages": "[]"}, "messages must be a non-empty JSON list"),
    ({"messages": '{"role": "user", "content": "hi"}'}, "messages must be a non-empty JSON list"),
    ({"messages": '[{"role": "user"}]'}, r"messages\[0\] must be an object with a string \"role\""),
    ({"messages": '[{"role": "user", "content": "a"}, {"content": "b"}]'}, r"messages\[1\] must be an object"),
    (_hello(sampling_parameters="{oops"), "sampling_parameters is not valid JSON"),
    (_hello(sampling_parameters="[1]"), "sampling_parameters must be a JSON object"),
    (_hello(sampling_parameters=b"\xc3("), "sampling_parameters is not valid UTF-8"),
    (_hello(sampling_parameters='{"temperature": NaN}'), "temperature must be a number >= 0, got nan"),
    (_hello(sampling_parameters='{"max_tokns": 3}'), "unknown sampling parameter 'max_tokns'"),
    (_hello(parameters={"max_tokens": 0}), "max_tokens must be an integer >= 1, got 0"),
    (_hello(parameters={"max_tokens": 4, "min_tokens": 5}), r"min_tokens \(5\) must not exceed max_tokens \(4\)"),
    (_hello(parameters={"min_tokens": -1}), "min_tokens must be an integer >= 0, got -1"),
    (_hello(parameters={"ignore_eos": 1}), "ignore_eos must be true or false, got 1"),
    (_hello(parameters={"max_tokens": "8"}), "max_tokens must be an integer >= 1, got '8'"),
    (_hello(parameters={"max_tokens": 2.5}), "max_tokens must be an integer >= 1, got 2.5"),
    (_hello(parameters={"max_tokens": True}), "max_tokens must be an integer >= 1, got True"),
    (_hello(parameters={"temperature": -0.1}), "temperature must be a number >= 0"),
    (_hello(parameters={"temperature": "hot"}), "temperature must be a number >= 0, got 'hot'"),
    (_hello(parameters={"top_p": 0}), r"top_p must be a number in \(0, 1\], got 0"),
    (_hello(parameters={"top_p": 1.5}), r"top_p must be a number in \(0, 1\]"),
    (_hello(parameters={"top_k": -1}), "top_k must be an integer >= 0, got -1"),
    (_hello(parameters={"seed": -1}), "seed must be an integer from 0 to 4294967294, got -1"),
    (_hello(parameters={"seed": 2**32}), "seed must be an integer from 0 to 4294967294"),
    (_hello(parameters={"stop": ""}), "stop must be a non-empty string or a list of them"),
    (_hello(parameters={"stop": "[1, 2]"}), "stop must be a non-empty string or a list of them, got \\[1, 2\\]"),
    (_hello(parameters={"stream": "yes"}), "stream must be true or false, got 'yes'"),
    (_hello(parameters={"max_token": 4}), "unknown parameter 'max_token' \\(known: max_tokens, temperature"),
    (_hello(parameters={"max_tokens": CONTEXT}),
     rf"the prompt \(\d+ tokens\) plus max_tokens \({CONTEXT}\) exceeds the model's context of {CONTEXT} tokens"),
]


@pytest.mark.parametrize(("request_fields", "problem"), BAD_REQUESTS, ids=[m[:40] for _, m in BAD_REQUESTS])
def test_a_bad_request_is_refused_with_a_message_naming_the_problem(generator, request_fields, problem):
    with pytest.raises(gen.RequestError, match=problem):
        generator.prepare(**request_fields)


def test_the_context_check_counts_the_prompts_tokens(generator):
    job = generator.prepare(text_input="one two three", parameters={"max_tokens": 1})
    fits = CONTEXT - len(job.prompt_tokens)
    assert generator.prepare(text_input="one two three", parameters={"max_tokens": fits}).settings.max_tokens == fits
    with pytest.raises(gen.RequestError, match="exceeds the model's context"):
        generator.prepare(text_input="one two three", parameters={"max_tokens": fits + 1})


def test_messages_are_rendered_with_the_chat_template_of_the_gguf(generator):
    assert "{% for message in messages %}" in generator.llm.metadata[gen.CHAT_TEMPLATE_KEY]
    default = generator.render([{"role": "user", "content": "Hi"}])
    assert default == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                       "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    own = generator.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert own == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_chat_content_given_as_text_parts_renders_like_a_string(generator):
    content = [{"type": "text", "text": "Hi "}, {"type": "text", "text": "you"}]
    parts = json.dumps([{"role": "user", "content": content}])
    plain = json.dumps([{"role": "user", "content": "Hi you"}])
    assert generator.prepare(messages=parts).prompt_tokens == generator.prepare(messages=plain).prompt_tokens


def test_the_chat_special_tokens_become_single_tokens(generator):
    tokens = generator.prepare(messages=json.dumps([{"role": "user", "content": "Hi"}])).prompt_tokens
    assert tokens[0] == generator.llm.token_bos()  # <|im_start|>, not its characters


def test_a_chat_answer_ends_at_the_models_end_of_turn(generator):
    pieces, text, reason = _run(generator, messages=json.dumps([{"role": "user", "content": "What is 2+2?"}]),
                                parameters={"max_tokens": 48})
    produced = sum(piece.tokens for piece in pieces)
    assert reason == gen.STOP and 0 < produced < 48 and "4" in text and "<|im_end|>" not in text


@pytest.mark.parametrize("fixing", [{"ignore_eos": True}, {"min_tokens": 40}])
def test_ignore_eos_and_min_tokens_carry_a_generation_past_the_end_of_turn(generator, fixing):
    """What benchmarks send to fix the output length: the same chat that ends early above runs on."""
    pieces, _, reason = _run(generator, messages=json.dumps([{"role": "user", "content": "What is 2+2?"}]),
                             parameters={"max_tokens": 48, **fixing})
    produced = sum(piece.tokens for piece in pieces)
    assert produced >= 40 and (reason == gen.LENGTH) == (produced == 48)


def test_max_tokens_ends_a_generation_with_length_after_exactly_that_many_tokens(generator):
    pieces, text, reason = _run(generator, text_input="Once upon a time", parameters={"max_tokens": 6})
    assert reason == gen.LENGTH and text
    assert [piece.tokens for piece in pieces] == [1] * 6 + [0]


def test_greedy_generation_is_reproducible_whatever_ran_before(generator):
    first = _run(generator, text_input="The capital of France is", parameters={"max_tokens": 8})[1]
    _run(generator, text_input="Something else entirely, to fill the context", parameters={"max_tokens": 8})
    again = _run(generator, text_input="The capital of France is", parameters={"max_tokens": 8})[1]
    assert first == again


def test_a_fixed_seed_reproduces_a_sampled_text_and_other_seeds_vary_it(generator):
    def sampled(seed):
        return _run(generator, text_input="Once upon a time", parameters={"max_tokens": 8, "temperature": 1.2,
                                                                           "seed": seed})[1]

    texts = [sampled(seed) for seed in (1, 2, 3, 4)]
    assert sampled(1) == texts[0]
    assert len(set(texts)) > 1


def test_a_stop_string_cuts_the_text_before_it_even_across_tokens(generator):
    full = _run(generator, text_input="Once upon a time", parameters={"max_tokens": 16})[1]
    words = full.split(" ")
    stop = " " + " ".join(words[4:6])  # two words: several tokens, so the text is held back in between
    pieces, text, reason = _run(generator, text_input="Once upon a time", parameters={"max_tokens": 16, "stop": stop})
    assert reason == gen.STOP and text == full[:full.index(stop)]
    assert stop not in text and not any(stop.strip() in piece.text for piece in pieces)


def test_a_stop_string_never_seen_changes_nothing(generator):
    plain = _run(generator, text_input="Once upon a time", parameters={"max_tokens": 10})
    stopped = _run(generator, text_input="Once upon a time", parameters={"max_tokens": 10, "stop": '["§§", "@@"]'})
    assert stopped[1:] == plain[1:]


def test_cancellation_is_checked_before_every_token(generator):
    checks = []

    def cancelled() -> bool:
        checks.append(True)
        return len(checks) > 3

    pieces, _, reason = _run(generator, cancelled, text_input="Once upon a time", parameters={"max_tokens": 32})
    assert reason == gen.CANCELLED and sum(piece.tokens for piece in pieces) == 3 and len(checks) == 4


def test_a_character_split_across_tokens_is_emitted_whole(generator):
    pieces, text, _ = _run(generator, text_input=GUITARS, parameters={"max_tokens": 12})
    assert text == "🎸" * 4 and "\ufffd" not in text
    assert [piece.text for piece in pieces if piece.tokens] == ["", "", "🎸"] * 4


def test_a_character_cut_by_max_tokens_is_dropped_not_garbled(generator):
    _, text, reason = _run(generator, text_input=GUITARS, parameters={"max_tokens": 11})
    assert reason == gen.LENGTH and text == "🎸" * 3
