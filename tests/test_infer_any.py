"""`tools infer` on models other than the embedding service, on a real tritonserver: a decoupled model streamed over
gRPC and HTTP (`words`, which has `generate`'s tensors), a numeric model fed generated data or perf_analyzer input
data (`tensors`); request building from a model's configuration, and `infer.smoke` of any model."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.support.zoo import TENSORS, WORDS, write_zoo
from tools import settings
from tools.cli import app
from tools.errors import UsageError
from tools.serving import client, infer, payloads, runtime

PROMPT = "Once upon a time there was a"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = write_zoo(tmp_path_factory.mktemp("zoo") / "repository")
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as started:
        yield started


def urls(server) -> dict[str, str]:
    return {"grpc": f"grpc://{server.grpc_url}", "http": f"http://{server.http_url}"}


def one_line_error(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


# -- request building without a server ---------------------------------------------------------------------------

SPEC = payloads.spec_from_config({"config": {
    "name": "m", "max_batch_size": 4,
    "input": [{"name": "X", "data_type": "TYPE_INT32", "dims": ["-1", "3"]},
              {"name": "BIAS", "data_type": "TYPE_FP32", "dims": ["1"], "optional": True},
              {"name": "TEXT", "data_type": "TYPE_STRING", "dims": ["1"]}],
    "output": [{"name": "SUM", "data_type": "TYPE_FP32", "dims": ["-1"]}]}})


def test_params_are_typed_as_json_reads_them_and_reserved_or_malformed_ones_refused():
    assert payloads.parse_params(["max_tokens=16", "temperature=0.5", "stream=false", "stop=[\"\\n\", \".\"]",
                                  "name=plain text", "empty="]) == {
        "max_tokens": 16, "temperature": 0.5, "stream": False, "stop": "[\"\\n\", \".\"]", "name": "plain text",
        "empty": ""}
    for term, message in [("novalue", "key=value"), ("=3", "key=value"), ("priority=1", "reserved"),
                          ("triton_x=1", "reserved"), ("x=null", "a number, true/false or a string")]:
        with pytest.raises(UsageError, match=message):
            payloads.parse_params([term])


def test_shapes_read_perf_analyzers_form_and_must_fit_the_declared_dims():
    assert payloads.parse_shapes(["X:4,3", "ns:input:2"]) == {"X": (4, 3), "ns:input": (2,)}
    for term in ("X", "X:", "X:a,3", ":3", "X:-1,3"):
        with pytest.raises(UsageError, match="invalid --input-shape"):
            payloads.parse_shapes([term])
    with pytest.raises(UsageError, match="does not fit its declared dims"):
        payloads.RequestBuilder(SPEC, ["t"], shapes={"X": (4, 2)}).request()
    with pytest.raises(UsageError, match="has no input 'Y'"):
        payloads.RequestBuilder(SPEC, ["t"], shapes={"Y": (1,)})


def test_a_request_has_texts_and_generated_data_of_the_declared_dims_and_leaves_optional_inputs_out():
    builder = payloads.RequestBuilder(SPEC, ["a", "b", "c"], batch=2, shapes={"X": (5, 3)}, seed=1)
    arrays = builder.request()
    assert set(arrays) == {"X", "TEXT"}  # BIAS is optional
    assert arrays["X"].shape == (2, 5, 3) and arrays["X"].dtype == np.int32
    assert arrays["TEXT"].shape == (2, 1) and arrays["TEXT"].ravel().tolist() == [b"a", b"b"]
    assert builder.request()["TEXT"].ravel().tolist() == [b"c", b"a"]  # the corpus cycles
    assert payloads.RequestBuilder(SPEC, ["a"]).request()["X"].shape == (1, 1, 3)  # a variable dim is 1


def test_a_model_that_does_not_batch_takes_one_text_per_request():
    spec = payloads.spec_from_config({"name": "g", "max_batch_size": 0,
                                      "model_transaction_policy": {"decoupled": True},
                                      "input": [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [1],
                                                 "optional": True}]})
    assert spec.decoupled and spec.text_input().name == "text_input"
    assert payloads.RequestBuilder(spec, ["hi"]).request()["text_input"].shape == (1,)
    with pytest.raises(UsageError, match="does not batch"):
        payloads.RequestBuilder(spec, ["hi"], batch=2)


def test_input_data_reads_lists_content_and_shape_and_b64(tmp_path):
    raw = np.arange(6, dtype=np.int32)
    document = {"data": [
        {"X": [1, 2, 3, 4, 5, 6], "TEXT": ["hello"]},  # X's variable dim inferred from the count
        {"X": {"content": [[7, 8, 9]], "shape": [1, 3]}, "BIAS": [0.5], "TEXT": {"content": ["x"], "shape": [1]}},
        [{"X": {"b64": base64.b64encode(raw.tobytes()).decode()}, "TEXT": ["y"]}],  # a sequence stream, flattened
    ]}
    path = tmp_path / "data.json"
    path.write_text(json.dumps(document))
    builder = payloads.RequestBuilder(SPEC, ["t"], input_data=payloads.read_input_data(path))
    first, second, third = (builder.request(i) for i in range(3))
    assert first["X"].tolist() == [[[1, 2, 3], [4, 5, 6]]] and first["TEXT"].tolist() == [[b"hello"]]
    assert second["BIAS"].tolist() == [[0.5]] and second["X"].shape == (1, 1, 3)
    assert third["X"].ravel().tolist() == raw.tolist() and "BIAS" not in third
    assert builder.request(3)["X"].tolist() == first["X"].tolist()  # the file's requests cycle


@pytest.mark.parametrize(("text", "message"), [
    ("{", "is not JSON"), ("{}", "no \"data\" list"), ('{"data": [3]}', "an object of input name"),
    ('{"data": [{"NOPE": [1]}]}', "names no input of model m: NOPE"),
    ('{"data": [{"X": [1, 2]}]}', "input X (INT32, dims [-1, 3])"),
    ('{"data": [{"X": {"b64": "not base64!"}}]}', "input X (INT32, dims [-1, 3])"),
    ('{"data": [{"X": {"b64": "AAAA"}}]}', "input X (INT32, dims [-1, 3])"),
    ('{"data": [{"TEXT": {"b64": "AAAA"}}]}', "input TEXT (BYTES, dims [1])")])
def test_bad_input_data_is_a_usage_error_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "data.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        payloads.RequestBuilder(SPEC, ["t"], input_data=payloads.read_input_data(path))
    with pytest.raises(UsageError, match="cannot read --input-data"):
        payloads.read_input_data(tmp_path / "missing.json")


# -- a streaming model -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_infer_prints_a_streaming_models_text_and_a_summary_line(server, protocol):
    result = CliRunner().invoke(app, ["infer", WORDS, PROMPT, "--url", urls(server)[protocol]])
    assert result.exit_code == 0, result.output
    assert result.stdout == PROMPT + " \n"
    summary = result.stderr.strip()
    assert summary.startswith(f"{WORDS} over {protocol} at ") and "\n" not in summary, summary
    assert "first text after" in summary and "7 responses, 7 tokens in" in summary
    assert "finish_reason stop, prompt_tokens 7, completion_tokens 7" in summary


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_pieces_are_handed_on_as_they_arrive_not_when_the_stream_ends(server, protocol):
    seen: list[float] = []
    call = infer.Call(WORDS, [PROMPT], parameters={"delay_ms": 30})
    address = server.grpc_url if protocol == "grpc" else server.http_url
    [result] = infer.run_any(call, client.Protocol(protocol), address, on_piece=lambda piece: seen.append(
        time.perf_counter()))
    arrivals = [piece.at for piece in result.pieces]
    assert len(seen) == len(arrivals) == 7 and arrivals == sorted(arrivals)
    assert seen[0] < arrivals[-1], "the first piece was handed on only after the last had arrived"
    assert result.text == PROMPT + " " and result.output_tokens == 7
    assert 0 < result.ttft_ms < result.latency_ms


def test_infer_json_of_a_streaming_model_has_its_timing_and_final_outputs(server):
    result = CliRunner().invoke(app, ["infer", WORDS, "a b c d", "one two", "--json", "--param", "max_tokens=3",
                                      "--url", urls(server)["grpc"]])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert (answer["model"], answer["protocol"]) == (WORDS, "grpc")
    first, second = answer["requests"]
    assert (first["prompt"], first["text"], first["finish_reason"], first["completion_tokens"]) == \
        ("a b c d", "a b c ", "length", 3)
    assert (second["text"], second["finish_reason"], second["prompt_tokens"]) == ("one two ", "stop", 2)
    assert first["ttft_ms"] <= first["latency_ms"] and first["output_tokens"] == 3


def test_stream_false_gets_one_response_with_the_whole_text(server):
    result = CliRunner().invoke(app, ["infer", WORDS, PROMPT, "--param", "stream=false", "--json",
                                      "--url", urls(server)["http"]])
    assert result.exit_code == 0, result.output
    [request] = json.loads(result.stdout)["requests"]
    assert request["responses"] == 1 and request["text"] == PROMPT + " "


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_streaming_models_refusal_is_one_line_and_exit_1(server, protocol):
    result = CliRunner().invoke(app, ["infer", WORDS, "  ", "--url", urls(server)[protocol]])
    assert result.exit_code == 1
    assert "text_input is missing or empty" in one_line_error(result.output)


def test_input_data_feeds_a_streaming_model(server, tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"data": [{"text_input": ["from the file"]}, {"text_input": ["and again"]}]}))
    result = CliRunner().invoke(app, ["infer", WORDS, "--input-data", str(path), "--url", urls(server)["grpc"]])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["from the file ", "and again "]


# -- a numeric model ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_numeric_model_gets_generated_data_of_the_declared_dtype_and_shape(server, protocol):
    result = CliRunner().invoke(app, ["infer", TENSORS, "--input-shape", "X:4,3", "--json",
                                      "--url", urls(server)[protocol]])
    assert result.exit_code == 0, result.output
    [request] = json.loads(result.stdout)["requests"]
    sent = request["inputs"]
    assert set(sent) == {"X"} and sent["X"]["datatype"] == "INT32" and sent["X"]["shape"] == [1, 4, 3]
    x = np.array(sent["X"]["data"]).reshape(4, 3)
    assert len(set(sent["X"]["data"])) > 1  # generated, not a constant
    out = request["outputs"]["SUM"]
    assert out["shape"] == [1, 4] and out["data"] == x.sum(axis=1).astype(float).tolist()


def test_a_numeric_model_is_shown_with_names_dtypes_shapes_and_values(server):
    result = CliRunner().invoke(app, ["infer", TENSORS, "--url", urls(server)["http"]])
    assert result.exit_code == 0, result.output
    assert f"{TENSORS} over http" in result.stdout and "(X INT32 [1, 1, 3])" in result.stdout
    assert "SUM FP32 [1, 1]: [" in result.stdout


def test_input_data_feeds_a_numeric_model_with_its_optional_input(server, tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"data": [{"X": {"content": [1, 2, 3, 10, 20, 30], "shape": [2, 3]}, "BIAS": [0.5]}]}))
    result = CliRunner().invoke(app, ["infer", TENSORS, "--input-data", str(path), "--json",
                                      "--url", urls(server)["grpc"]])
    assert result.exit_code == 0, result.output
    [request] = json.loads(result.stdout)["requests"]
    assert request["outputs"]["SUM"]["data"] == [6.5, 60.5]


@pytest.mark.parametrize(("args", "message"), [
    (["some text"], "has no text input (BYTES) to send texts to; its inputs: X, BIAS"),
    (["--input-shape", "X:2,2"], "does not fit its declared dims [-1, 3]"),
    (["--text-input", "X"], "input 'X' of model tensors is INT32, not text"),
    (["--param", "nope"], "invalid --param 'nope'")])
def test_what_does_not_fit_the_model_is_a_usage_error(server, args, message):
    result = CliRunner().invoke(app, ["infer", TENSORS, *args, "--url", urls(server)["http"]])
    assert result.exit_code == 2, result.output
    assert message in one_line_error(result.output)


def test_texts_and_input_data_together_are_refused(tmp_path):
    result = CliRunner().invoke(app, ["infer", TENSORS, "text", "--input-data", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "not both" in one_line_error(result.output)


def test_smoke_calls_any_given_model_over_both_protocols(server):
    out = io.StringIO()
    results = infer.smoke(server.http_url, server.grpc_url, Console(file=out, width=200), [WORDS, TENSORS])
    streamed = [r for r in results if isinstance(r, infer.StreamResult)]
    answered = [r for r in results if isinstance(r, infer.OutputsResult)]
    assert [r.protocol for r in streamed] == [r.protocol for r in answered] == [client.Protocol.HTTP,
                                                                                 client.Protocol.GRPC]
    expected = " ".join(infer.SMOKE_TEXTS[0].split()[:infer.SMOKE_PARAMETERS["max_tokens"]]) + " "
    assert all(r.text == expected for r in streamed)
    printed = out.getvalue()
    assert printed.count("first text after") == 2 and printed.count("SUM FP32 [1, 1]") == 2, printed
    with pytest.raises(client.EmbeddingError, match="unknown model"):
        infer.smoke(server.http_url, server.grpc_url, Console(file=io.StringIO()), ["nothing"])
    assert settings.GENERATE_INPUT == "text_input" and settings.GENERATE_OUTPUT == "text_output"


def test_an_answer_missing_an_output_or_rows_is_named():
    arrays = {"X": np.zeros((2, 1, 3), np.int32)}
    assert payloads.answer_problem(SPEC, arrays, {"SUM": np.zeros((2, 1), np.float32)}) is None
    assert payloads.answer_problem(SPEC, arrays, {}) == "m answered without SUM"
    assert payloads.answer_problem(SPEC, arrays, {"SUM": np.zeros((1, 1), np.float32)}) == \
        "m answered {'SUM': [1, 1]} for 2 rows"
