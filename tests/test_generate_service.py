"""The generate model on a real tritonserver (one per module, loading only `generate`): gRPC streaming, Triton's HTTP
generate and generate_stream endpoints, reproducibility, cancellation seen in the model's token counter, and bad input
refused with the problem named while the model keeps serving. Every generation is a few tokens."""

from __future__ import annotations

import contextlib
import json
import queue
import time

import numpy as np
import psutil
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.support import paths
from tests.support.generate import generation
from tools import settings
from tools.repository import load_model
from tools.serving import runtime

gen = generation()
MODEL = settings.GENERATE_MODEL
PROMPT = "Once upon a time"
CONTEXT = int(load_model(paths.REPOSITORY / MODEL).config.parameters["n_ctx"].string_value)
WAIT_S = 60.0  # for one response on a busy machine; a healthy one takes milliseconds


@pytest.fixture(scope="module")
def server():
    options = runtime.ServerOptions.on_free_ports(repository=paths.REPOSITORY, models=[MODEL])
    with runtime.running_server(options) as started:
        yield started


@pytest.fixture(scope="module")
def stub_pids(server) -> set[int]:
    """The model's stub processes as first seen: bad input and cancellation must not restart any."""
    return {child.pid for child in psutil.Process(server.process.pid).children(recursive=True)}


# -- clients ---------------------------------------------------------------------------------------------------------

def _inputs(fields: dict[str, str | bytes | bool]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, value in fields.items():
        boolean = isinstance(value, bool)
        tensor = grpcclient.InferInput(name, [1], "BOOL" if boolean else "BYTES")
        data = value if boolean else value.encode("utf-8") if isinstance(value, str) else value
        tensor.set_data_from_numpy(np.array([data], dtype=np.bool_ if boolean else np.object_))
        inputs.append(tensor)
    return inputs


def _final(result: grpcclient.InferResult) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


def _stream(server, fields: dict, parameters: dict, cancel_after: int | None = None) -> list:
    """The responses of one request on a gRPC stream as (arrival, result), up to the final one or, with
    `cancel_after`, up to that many and then the stream is cancelled. An error response is raised."""
    arrivals: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: arrivals.put((time.monotonic(), result, error)))
    try:
        client.async_stream_infer(MODEL, _inputs(fields), parameters=parameters, enable_empty_final_response=True)
        received = []
        while not received or not _final(received[-1][1]):
            arrival, result, error = arrivals.get(timeout=WAIT_S)
            if error is not None:
                raise error
            received.append((arrival, result))
            if len(received) == cancel_after:
                client.stop_stream(cancel_requests=True)
                break
        return received
    finally:
        client.stop_stream()
        client.close()


def _text(result: grpcclient.InferResult) -> str:
    return result.as_numpy(settings.GENERATE_OUTPUT)[0].decode("utf-8")


def _grpc_text(server, parameters: dict) -> str:
    return "".join(_text(result) for _, result in _stream(server, {"text_input": PROMPT}, parameters))


def _generate(server, body: dict) -> requests.Response:
    return requests.post(f"http://{server.http_url}/v2/models/{MODEL}/generate", json=body, timeout=WAIT_S)


def _events(server, body: dict) -> list[dict]:
    """The server-sent events of Triton's generate_stream endpoint, parsed."""
    with requests.post(f"http://{server.http_url}/v2/models/{MODEL}/generate_stream", json=body, stream=True,
                       timeout=WAIT_S) as response:
        assert response.status_code == 200, response.text
        return [json.loads(line.removeprefix("data: ")) for line in response.iter_lines(decode_unicode=True)
                if line.startswith("data: ")]


def _counter(server, name: str) -> float:
    metrics = requests.get(server.metrics_url, timeout=WAIT_S).text
    return sum(sample.value for family in text_string_to_metric_families(metrics) for sample in family.samples
               if sample.name == name and sample.labels.get("model") == MODEL)


def _executions(server) -> int:
    """How many executions of the model have ended (an execution serves one request to its end)."""
    with contextlib.closing(httpclient.InferenceServerClient(server.http_url)) as client:
        return int(client.get_inference_statistics(MODEL)["model_stats"][0]["execution_count"])


# -- streaming and the two HTTP endpoints ----------------------------------------------------------------------------

def test_grpc_streams_one_response_per_piece_while_generating_and_flags_only_the_last_final(server):
    before = _counter(server, gen.OUTPUT_TOKENS_METRIC)
    arrivals: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: arrivals.put((result, error)))
    try:
        client.async_stream_infer(MODEL, _inputs({"text_input": PROMPT}), parameters={"stream": True, "max_tokens": 40},
                                  enable_empty_final_response=True)
        first, error = arrivals.get(timeout=WAIT_S)
        generated_by_then = _counter(server, gen.OUTPUT_TOKENS_METRIC) - before
        results = [first]
        while error is None and not _final(results[-1]):
            result, error = arrivals.get(timeout=WAIT_S)
            results.append(result)
    finally:
        client.stop_stream()
        client.close()
    assert error is None, error
    assert generated_by_then < 40  # the first piece came while the model was still generating
    *pieces, last = results
    assert len(pieces) >= 20 and not any(_final(piece) for piece in pieces) and _final(last)
    assert all({o.name for o in piece.get_response().outputs} == {settings.GENERATE_OUTPUT} and _text(piece)
               for piece in pieces)
    assert last.as_numpy("finish_reason")[0] == b"length"
    assert int(last.as_numpy("completion_tokens")[0]) == 40 and int(last.as_numpy("prompt_tokens")[0]) > 0


def test_http_generate_answers_one_json_with_the_whole_text_and_the_counts(server):
    answer = _generate(server, {"text_input": PROMPT, "parameters": {"max_tokens": 8}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["text_output"] and body["finish_reason"] == "length" and body["completion_tokens"] == 8
    assert body["prompt_tokens"] > 0


def test_http_generate_stream_sends_events_that_add_up_to_the_same_text_as_grpc(server):
    events = _events(server, {"text_input": PROMPT, "parameters": {"stream": True, "max_tokens": 8}})
    *pieces, last = events
    assert len(pieces) >= 4 and all(set(e) == {"model_name", "model_version", "text_output"} for e in pieces)
    assert last["finish_reason"] == "length" and last["completion_tokens"] == 8
    streamed = "".join(event["text_output"] for event in events)
    assert streamed == _generate(server, {"text_input": PROMPT, "parameters": {"max_tokens": 8}}).json()["text_output"]
    assert streamed == _grpc_text(server, {"stream": True, "max_tokens": 8})


def test_vllm_style_inputs_stream_and_sampling_parameters_are_honoured(server):
    events = _events(server, {"text_input": PROMPT, "stream": True, "exclude_input_in_output": True,
                              "sampling_parameters": json.dumps({"max_tokens": 5, "temperature": 0})})
    assert len(events) >= 3 and events[-1]["completion_tokens"] == 5


def test_a_seed_reproduces_a_sampled_text_over_both_protocols(server):
    sampled = {"max_tokens": 8, "temperature": 1.0, "top_p": 0.95, "top_k": 50, "seed": 11}
    first = _generate(server, {"text_input": PROMPT, "parameters": sampled}).json()["text_output"]
    assert _generate(server, {"text_input": PROMPT, "parameters": sampled}).json()["text_output"] == first
    assert _grpc_text(server, sampled | {"stream": True}) == first


def test_chat_messages_get_an_answer_that_ends_at_the_end_of_turn(server):
    messages = json.dumps([{"role": "user", "content": "What is 2+2?"}])
    body = _generate(server, {"messages": messages, "parameters": {"max_tokens": 48}}).json()
    assert body["finish_reason"] == "stop" and "4" in body["text_output"] and body["completion_tokens"] < 48
    assert body["prompt_tokens"] > 20  # the template's system prompt and turn markers


def test_a_stop_list_given_as_a_json_string_parameter_cuts_the_text(server):
    full = _generate(server, {"text_input": PROMPT, "parameters": {"max_tokens": 8}}).json()["text_output"]
    word = full.split()[2]
    body = _generate(server, {"text_input": PROMPT, "parameters": {"max_tokens": 8,
                                                                   "stop": json.dumps(["@@", word])}}).json()
    assert body["finish_reason"] == "stop" and body["text_output"] == full[:full.index(word)]


def test_the_token_counters_grow_by_each_requests_counts(server):
    prompt_before, output_before = (_counter(server, name) for name in (gen.PROMPT_TOKENS_METRIC,
                                                                         gen.OUTPUT_TOKENS_METRIC))
    body = _generate(server, {"text_input": PROMPT, "parameters": {"max_tokens": 6}}).json()
    assert _counter(server, gen.PROMPT_TOKENS_METRIC) - prompt_before == body["prompt_tokens"]
    assert _counter(server, gen.OUTPUT_TOKENS_METRIC) - output_before == body["completion_tokens"] == 6


def test_each_request_with_tokens_adds_one_first_token_time(server):
    count = gen.FIRST_TOKEN_METRIC + "_count"
    before, seconds_before = _counter(server, count), _counter(server, gen.FIRST_TOKEN_METRIC + "_sum")
    _generate(server, {"text_input": PROMPT, "parameters": {"max_tokens": 3}})
    assert _counter(server, count) - before == 1
    assert 0 < _counter(server, gen.FIRST_TOKEN_METRIC + "_sum") - seconds_before < WAIT_S


# -- cancellation ----------------------------------------------------------------------------------------------------

def test_cancelling_a_grpc_stream_stops_the_generation(server, stub_pids):
    executions, before = _executions(server), _counter(server, gen.OUTPUT_TOKENS_METRIC)
    received = _stream(server, {"text_input": PROMPT}, {"stream": True, "max_tokens": 400}, cancel_after=3)
    at_cancel = _counter(server, gen.OUTPUT_TOKENS_METRIC)
    deadline = time.monotonic() + WAIT_S
    while _executions(server) == executions:  # the model's execution ends when it sees the cancellation
        assert time.monotonic() < deadline, "the cancelled generation did not end"
        time.sleep(0.1)
    after = _counter(server, gen.OUTPUT_TOKENS_METRIC)
    assert len(received) == 3 and not _final(received[-1][1])
    assert after - at_cancel <= 2, f"{after - at_cancel} tokens generated after the cancel"
    assert after - before < 400
    assert _generate(server, {"text_input": PROMPT, "parameters": {"max_tokens": 2}}).json()["completion_tokens"] == 2
    assert {child.pid for child in psutil.Process(server.process.pid).children(recursive=True)} == stub_pids


# -- bad input -------------------------------------------------------------------------------------------------------

BAD_BODIES = [
    ({"parameters": {"max_tokens": 4}}, "no prompt: give text_input or messages"),
    ({"text_input": "", "parameters": {"max_tokens": 4}}, "text_input is empty"),
    ({"text_input": PROMPT, "messages": json.dumps([{"role": "user", "content": "hi"}])},
     "give exactly one of text_input and messages"),
    ({"messages": "[{\"role\": \"user\""}, "messages is not valid JSON"),
    ({"messages": json.dumps([{"role": "user", "content": 3}])}, "messages[0] must be an object with a string"),
    ({"text_input": PROMPT, "sampling_parameters": "{max_tokens: 3}"}, "sampling_parameters is not valid JSON"),
    ({"text_input": PROMPT, "parameters": {"max_tokens": CONTEXT}}, f"exceeds the model's context of {CONTEXT} tokens"),
    ({"text_input": PROMPT, "parameters": {"max_tokens": 0}}, "max_tokens must be an integer >= 1, got 0"),
    ({"text_input": PROMPT, "parameters": {"max_tokens": "many"}}, "max_tokens must be an integer >= 1, got 'many'"),
    ({"text_input": PROMPT, "parameters": {"temperature": -1}}, "temperature must be a number >= 0, got -1"),
    ({"text_input": PROMPT, "parameters": {"top_p": 1.5}}, "top_p must be a number in (0, 1], got 1.5"),
    ({"text_input": PROMPT, "parameters": {"top_k": -3}}, "top_k must be an integer >= 0, got -3"),
    ({"text_input": PROMPT, "parameters": {"seed": -5}}, "seed must be an integer from 0 to 4294967294, got -5"),
    ({"text_input": PROMPT, "parameters": {"stop": "[3]"}}, "stop must be a non-empty string or a list of them"),
    # (Triton's generate endpoint itself reads a `stream` parameter and answers a non-boolean one with a 500.)
    ({"text_input": PROMPT, "sampling_parameters": '{"stream": "yes"}'}, "stream must be true or false, got 'yes'"),
    ({"text_input": PROMPT, "parameters": {"max_new_tokens": 4}}, "unknown parameter 'max_new_tokens'"),
]


@pytest.mark.parametrize(("body", "problem"), BAD_BODIES, ids=[problem[:40] for _, problem in BAD_BODIES])
def test_bad_input_over_http_is_a_400_naming_the_problem(server, body, problem):
    answer = _generate(server, body)
    assert answer.status_code == 400 and problem in answer.json()["error"], answer.text


def test_bad_input_over_a_grpc_stream_names_the_problem(server):
    with pytest.raises(InferenceServerException, match=r"text_input is not valid UTF-8 \(byte 0xff at offset 2\)"):
        _stream(server, {"text_input": b"ok\xff"}, {"max_tokens": 4})
    with pytest.raises(InferenceServerException, match="give exactly one of text_input and messages"):
        _stream(server, {"text_input": PROMPT, "messages": "[]"}, {"max_tokens": 4})


def test_a_good_request_succeeds_right_after_bad_ones_on_the_same_stubs(server, stub_pids):
    for body, _ in BAD_BODIES:
        assert _generate(server, body).status_code == 400
    assert _generate(server, {"text_input": PROMPT, "parameters": {"max_tokens": 3}}).json()["completion_tokens"] == 3
    assert {child.pid for child in psutil.Process(server.process.pid).children(recursive=True)} == stub_pids
