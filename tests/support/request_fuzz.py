"""Malformed inference requests for a real tritonserver serving the shipped repository, from a seeded generator.

Each case is built by one of the KINDS below (bad JSON, lying binary-data headers, wrong dtypes and shapes, invalid
UTF-8, unknown models and outputs, ...) with random details drawn from `random.Random(seed)`: the same seed sends the
same requests. HTTP cases go over a raw socket (so that headers and body can lie); gRPC cases go through tritonclient's
generated stubs as raw protobuf messages. What comes back is an Outcome: a status class and the server's words.
The test suite sends a few hundred cases, loadtests/fuzz_requests.py a few thousand.
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tools import settings

GOOD_TEXT = "A man is playing a guitar."
TIMEOUT_S = 30.0
# A body above 64 MiB (Triton's later releases cap HTTP bodies there by default; 2.51 takes it).
OVERSIZED_BYTES = 64 * 1024 * 1024 + 1024
# Above the tokenizer's text limit (1 MiB): refused before it is tokenized.
HUGE_TEXT_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class HttpCase:
    kind: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    expect_ok: bool = False


@dataclass(frozen=True)
class GrpcCase:
    kind: str
    request: service_pb2.ModelInferRequest
    expect_ok: bool = False


Case = HttpCase | GrpcCase


@dataclass(frozen=True)
class Outcome:
    """What the server answered: `status` is the HTTP code or gRPC status name ('no answer' when it closed the
    connection or went silent), `message` its error text, `embedding` the first row when it answered with one."""

    case: Case
    status: str
    message: str
    embedding: np.ndarray | None = None

    @property
    def status_class(self) -> str:
        """'2xx', '4xx', '5xx' for HTTP; the gRPC status name; 'no answer'."""
        if self.status.isdigit():
            return f"{self.status[0]}xx"
        return self.status

    @property
    def ok(self) -> bool:
        return self.status in ("200", "OK")

    @property
    def wording(self) -> str:
        """The message with its varying parts (numbers, quoted names) blanked: what to count refusals by."""
        text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", self.message)
        return re.sub(r"\d+", "N", text)[:110]


# -- request bodies ---------------------------------------------------------------------------------------------------
def _infer_path(model: str = settings.EMBED_MODEL, version: str = "") -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"


def _json_case(kind: str, payload, model: str = settings.EMBED_MODEL, version: str = "",
               expect_ok: bool = False) -> HttpCase:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return HttpCase(kind, "POST", _infer_path(model, version), {"Content-Type": "application/json"}, body, expect_ok)


def _text_input(texts: list, shape: list[int] | None = None, datatype: str = "BYTES", name: str = "TEXT") -> dict:
    return {"name": name, "shape": shape if shape is not None else [len(texts), 1], "datatype": datatype,
            "data": texts}


def _bytes_elements(items: list[bytes]) -> bytes:
    """Triton's binary BYTES layout: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _binary_case(kind: str, header: dict, binary: bytes, declared_header: int | str | None = None,
                 model: str = settings.EMBED_MODEL) -> HttpCase:
    """A body of JSON header + binary tensor data; `declared_header` lies about the JSON's length when given."""
    head = json.dumps(header).encode()
    length = len(head) if declared_header is None else declared_header
    return HttpCase(kind, "POST", _infer_path(model), {"Inference-Header-Content-Length": str(length),
                                                       "Content-Type": "application/octet-stream"}, head + binary)


def _binary_text_header(count: int, size: int, shape: list[int] | None = None, outputs: list | None = None) -> dict:
    header = {"inputs": [{"name": "TEXT", "shape": shape or [count, 1], "datatype": "BYTES",
                          "parameters": {"binary_data_size": size}}]}
    if outputs is not None:
        header["outputs"] = outputs
    return header


def _words(rng: random.Random) -> str:
    return " ".join(rng.choice(["guitar", "market", "a", "the", "plays", "fell", "🎸", "naïve", "x" * 40])
                    for _ in range(rng.randint(1, 12)))


def _invalid_utf8(rng: random.Random) -> bytes:
    """Bytes no UTF-8 decoder accepts: a stray continuation byte, a truncated sequence, an overlong form, 0xff."""
    bad = rng.choice([b"\x80", b"\xc3", b"\xe2\x82", b"\xc0\xaf", b"\xff\xfe", b"\xed\xa0\x80"])
    return _words(rng).encode()[: rng.randint(0, 10)] + bad + b" tail"


# -- HTTP kinds -------------------------------------------------------------------------------------------------------
def http_good(rng: random.Random) -> HttpCase:
    return _json_case("http/good", {"inputs": [_text_input([GOOD_TEXT])]}, expect_ok=True)


def http_bad_json(rng: random.Random) -> HttpCase:
    good = json.dumps({"inputs": [_text_input([_words(rng)])]}).encode()
    choice = rng.randrange(5)
    if choice == 0:
        body = good[: rng.randrange(1, len(good))]  # truncated
    elif choice == 1:
        body = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))  # noise
    elif choice == 2:
        body = good.replace(b":", b"=", 1)
    elif choice == 3:
        body = b""
    else:
        body = good + b"}" * rng.randint(1, 3)
    return _json_case("http/bad JSON", body)


def http_wrong_json_shape(rng: random.Random) -> HttpCase:
    payload = rng.choice([[], 42, "inputs", None, {}, {"inputs": {}}, {"inputs": "TEXT"}, {"inputs": [42]},
                          {"inputs": [{}]}, {"inputs": [{"name": "TEXT"}]}, {"inputs": None}])
    return _json_case("http/JSON of the wrong structure", payload)


def http_wrong_dtype(rng: random.Random) -> HttpCase:
    datatype = rng.choice(["FP32", "INT64", "INT8", "BOOL", "FP16", "UINT8", "STRING", "bytes", ""])
    data = [1.5] if datatype.startswith("FP") else [1] if datatype else [GOOD_TEXT]
    return _json_case("http/wrong dtype", {"inputs": [_text_input(data, [1, 1], datatype)]})


def http_wrong_shape(rng: random.Random) -> HttpCase:
    texts = [_words(rng) for _ in range(rng.randint(1, 3))]
    shape = rng.choice([[len(texts)], [len(texts), 2], [len(texts), 1, 1], [-1, 1], [len(texts) + 1, 1], [],
                        [2**40, 1], [1, 2**40], [len(texts), 0], [0, 1, 5]])
    return _json_case("http/wrong shape", {"inputs": [_text_input(texts, shape)]})


def http_bad_data(rng: random.Random) -> HttpCase:
    data = rng.choice([[1, 2], [None], [[GOOD_TEXT]], [{"a": 1}], [True], None, "text", [GOOD_TEXT, 3]])
    return _json_case("http/data of the wrong type", {"inputs": [_text_input([GOOD_TEXT], [1, 1]) | {"data": data}]})


def http_blank_text(rng: random.Random) -> HttpCase:
    texts = [rng.choice(["", " ", "\n\t", "   "])] + [_words(rng) for _ in range(rng.randint(0, 2))]
    rng.shuffle(texts)
    return _json_case("http/blank text", {"inputs": [_text_input(texts)]})


def http_empty_batch(rng: random.Random) -> HttpCase:
    return _json_case("http/empty batch", {"inputs": [_text_input([], rng.choice([[0, 1], [0]]))]})


def http_batch_too_large(rng: random.Random) -> HttpCase:
    count = rng.randint(65, 200)
    return _json_case("http/batch above max_batch_size", {"inputs": [_text_input([GOOD_TEXT] * count)]})


def http_missing_input(rng: random.Random) -> HttpCase:
    name = rng.choice(["text", "INPUT", "", "TEXT ", "input_ids"])
    inputs = rng.choice([[], [_text_input([GOOD_TEXT], name=name)]])
    return _json_case("http/missing or unknown input", {"inputs": inputs})


def http_extra_input(rng: random.Random) -> HttpCase:
    return _json_case("http/duplicate or extra input", {"inputs": [
        _text_input([GOOD_TEXT]), _text_input([GOOD_TEXT], name=rng.choice(["TEXT", "EXTRA"]))]})


def http_unknown_output(rng: random.Random) -> HttpCase:
    name = rng.choice(["embedding", "OUTPUT", "input_ids", "", "EMBEDDING2"])
    return _json_case("http/unknown output", {"inputs": [_text_input([GOOD_TEXT])], "outputs": [{"name": name}]})


def http_unknown_model(rng: random.Random) -> HttpCase:
    model, version = rng.choice([("nosuch", ""), ("EMBED", ""), ("embed", "99"), ("embed", "abc"), ("embed", "-1"),
                                 ("encoder", "7"), ("..%2Fembed", ""), ("embed%00", ""), ("e" * 300, "")])
    return _json_case("http/unknown model or version", {"inputs": [_text_input([GOOD_TEXT])]}, model, version)


def http_huge_text(rng: random.Random) -> HttpCase:
    return _json_case("http/text above the size limit", {"inputs": [_text_input([GOOD_TEXT, "x" * HUGE_TEXT_BYTES])]})


def http_composing_model_bad_tokens(rng: random.Random) -> HttpCase:
    """The composing models are reachable too: token ids out of the vocabulary, masks of other shapes or values,
    sequences of no or too many tokens."""
    length = rng.choice([0, 1, 3, 6, 513, 600])
    ids = [rng.choice([-5, 0, 101, 30522, 2**40]) for _ in range(length)]
    mask_length = rng.choice([length, length, length + 1, max(length - 1, 0)])
    mask = [rng.choice([0, 1, 1, 2, -1]) for _ in range(mask_length)]
    payload = {"inputs": [
        {"name": "input_ids", "shape": [1, length], "datatype": "INT64", "data": ids},
        {"name": "attention_mask", "shape": [1, mask_length], "datatype": "INT64", "data": mask}]}
    return _json_case("http/encoder given bad tokens", payload, settings.ENCODER_MODEL, rng.choice(["", "1", "2"]))


def http_encoder_pooling_mismatch(rng: random.Random) -> HttpCase:
    """The encoder's pooled output asked for (alone, with the token embeddings, or with a name it lacks) over token
    ids and a mask of different lengths."""
    length = rng.randint(1, 4)
    mask_length = rng.choice([length - 1, length + 1, length + 3])
    outputs = rng.choice([[settings.SENTENCE_EMBEDDING], [settings.SENTENCE_EMBEDDING, settings.TOKEN_EMBEDDINGS],
                          [settings.SENTENCE_EMBEDDING, settings.EMBED_OUTPUT]])
    payload = {"inputs": [
        {"name": settings.TOKEN_IDS, "shape": [1, length], "datatype": "INT64", "data": [101] * length},
        {"name": settings.TOKEN_MASK, "shape": [1, mask_length], "datatype": "INT64", "data": [1] * mask_length}],
        "outputs": [{"name": name} for name in outputs]}
    return _json_case("http/encoder pooling given mismatched shapes", payload, settings.ENCODER_MODEL,
                      rng.choice(["", "1", "2"]))


def http_binary_invalid_utf8(rng: random.Random) -> HttpCase:
    items = [_words(rng).encode() for _ in range(rng.randint(0, 2))] + [_invalid_utf8(rng)]
    rng.shuffle(items)
    binary = _bytes_elements(items)
    return _binary_case("http/invalid UTF-8 in BYTES", _binary_text_header(len(items), len(binary)), binary)


def http_binary_header_length_lies(rng: random.Random) -> HttpCase:
    binary = _bytes_elements([GOOD_TEXT.encode()])
    head = len(json.dumps(_binary_text_header(1, len(binary))))
    declared = rng.choice([head + rng.randint(1, 40), head - rng.randint(1, 20), head + len(binary) + 1, 2**31,
                           2**63, -1, 0, "abc", ""])
    return _binary_case("http/Inference-Header-Content-Length lies", _binary_text_header(1, len(binary)), binary,
                        declared)


def http_binary_size_lies(rng: random.Random) -> HttpCase:
    binary = _bytes_elements([_words(rng).encode()])
    size = rng.choice([len(binary) + rng.randint(1, 50), len(binary) - rng.randint(1, 4), 0, 2**40, -1])
    return _binary_case("http/binary_data_size lies", _binary_text_header(1, size), binary)


def http_bytes_element_length_lies(rng: random.Random) -> HttpCase:
    text = _words(rng).encode()
    declared = rng.choice([len(text) + rng.randint(1, 100), 2**32 - 1, len(text) - 1])
    binary = struct.pack("<I", declared) + text
    return _binary_case("http/BYTES element length lies", _binary_text_header(1, len(binary)), binary)


def http_content_length_lies(rng: random.Random) -> HttpCase:
    body = json.dumps({"inputs": [_text_input([GOOD_TEXT])]}).encode()
    declared = rng.choice([len(body) - rng.randint(1, 30), len(body) + rng.randint(1, 30), 2**62, -3, "x"])
    return HttpCase("http/Content-Length lies", "POST", _infer_path(),
                    {"Content-Type": "application/json", "Content-Length": str(declared)}, body)


def http_wrong_method(rng: random.Random) -> HttpCase:
    method = rng.choice(["GET", "PUT", "DELETE", "PATCH"])
    return HttpCase("http/wrong method", method, _infer_path(), {}, b"")


def http_oversized(rng: random.Random) -> HttpCase:
    padding = "x" * OVERSIZED_BYTES
    return _json_case("http/oversized body", {"inputs": [_text_input([padding])]})


# -- gRPC kinds -------------------------------------------------------------------------------------------------------
def _grpc_request(model: str = settings.EMBED_MODEL, version: str = "") -> service_pb2.ModelInferRequest:
    return service_pb2.ModelInferRequest(model_name=model, model_version=version)


def _grpc_text(request, count: int, shape: list[int] | None = None, datatype: str = "BYTES", name: str = "TEXT"):
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = name, datatype
    tensor.shape.extend(shape if shape is not None else [count, 1])
    return tensor


def grpc_good(rng: random.Random) -> GrpcCase:
    request = _grpc_request()
    _grpc_text(request, 1)
    request.raw_input_contents.append(_bytes_elements([GOOD_TEXT.encode()]))
    return GrpcCase("grpc/good", request, expect_ok=True)


def grpc_raw_length_lies(rng: random.Random) -> GrpcCase:
    request = _grpc_request()
    _grpc_text(request, 1)
    text = _words(rng).encode()
    raw = rng.choice([struct.pack("<I", len(text) + rng.randint(1, 99)) + text, b"\x01\x02", b"",
                      struct.pack("<I", 2**32 - 1) + text, _bytes_elements([text]) + b"\x00"])
    request.raw_input_contents.append(raw)
    return GrpcCase("grpc/raw BYTES length lies", request)


def grpc_invalid_utf8(rng: random.Random) -> GrpcCase:
    request = _grpc_request()
    items = [_invalid_utf8(rng)] + [_words(rng).encode() for _ in range(rng.randint(0, 2))]
    rng.shuffle(items)
    _grpc_text(request, len(items))
    request.raw_input_contents.append(_bytes_elements(items))
    return GrpcCase("grpc/invalid UTF-8 in BYTES", request)


def grpc_raw_count_mismatch(rng: random.Random) -> GrpcCase:
    request = _grpc_request()
    _grpc_text(request, 1)
    for _ in range(rng.choice([0, 2, 3])):
        request.raw_input_contents.append(_bytes_elements([GOOD_TEXT.encode()]))
    if not request.raw_input_contents and rng.random() < 0.5:
        request.inputs[0].contents.bytes_contents.append(GOOD_TEXT.encode())
        request.raw_input_contents.append(_bytes_elements([GOOD_TEXT.encode()]))  # both kinds at once
    return GrpcCase("grpc/raw_input_contents count wrong", request)


def grpc_wrong_dtype_or_shape(rng: random.Random) -> GrpcCase:
    request = _grpc_request()
    datatype = rng.choice(["BYTES", "FP32", "INT64", "UINT8", "NOPE"])
    shape = rng.choice([[1, 1], [1], [2, 1], [-1, 1], [0, 1], [2**40, 1], [1, 1, 1]])
    _grpc_text(request, 1, shape, datatype)
    raw = _bytes_elements([GOOD_TEXT.encode()]) if datatype == "BYTES" else bytes(rng.randint(1, 13))
    request.raw_input_contents.append(raw)
    if datatype == "BYTES" and shape == [1, 1]:
        request.inputs[0].name = rng.choice(["text", "", "input_ids"])
    return GrpcCase("grpc/wrong dtype, shape or name", request)


def grpc_unknown_model_or_output(rng: random.Random) -> GrpcCase:
    model, version = rng.choice([("nosuch", ""), ("embed", "42"), ("embed", "x"), ("", ""), ("embed", "")])
    request = _grpc_request(model, version)
    _grpc_text(request, 1)
    request.raw_input_contents.append(_bytes_elements([GOOD_TEXT.encode()]))
    if model == "embed" and not version:
        request.outputs.add().name = rng.choice(["embedding", "", "attention_mask"])
    return GrpcCase("grpc/unknown model, version or output", request)


def grpc_encoder_bad_tokens(rng: random.Random) -> GrpcCase:
    request = _grpc_request(settings.ENCODER_MODEL, rng.choice(["", "1", "2"]))
    length = rng.choice([0, 1, 5, 513])
    mask_length = rng.choice([length, length + 1])
    for name, count, values in (("input_ids", length, [-1, 0, 101, 101, 99999]),
                                ("attention_mask", mask_length, [0, 1, 1, 7])):
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = name, "INT64"
        tensor.shape.extend([1, count])
        request.raw_input_contents.append(np.array([rng.choice(values) for _ in range(count)], np.int64).tobytes())
    return GrpcCase("grpc/encoder given bad tokens", request)


HTTP_KINDS: list[Callable[[random.Random], HttpCase]] = [
    http_good, http_bad_json, http_wrong_json_shape, http_wrong_dtype, http_wrong_shape, http_bad_data,
    http_blank_text, http_huge_text, http_empty_batch, http_batch_too_large, http_missing_input, http_extra_input,
    http_unknown_output, http_unknown_model, http_composing_model_bad_tokens, http_encoder_pooling_mismatch,
    http_binary_invalid_utf8, http_binary_header_length_lies, http_binary_size_lies, http_bytes_element_length_lies,
    http_content_length_lies, http_wrong_method]
GRPC_KINDS: list[Callable[[random.Random], GrpcCase]] = [
    grpc_good, grpc_raw_length_lies, grpc_invalid_utf8, grpc_raw_count_mismatch, grpc_wrong_dtype_or_shape,
    grpc_unknown_model_or_output, grpc_encoder_bad_tokens]


def generate(count: int, seed: int, oversized: int = 0) -> Iterator[Case]:
    """`count` cases: every kind once, then kinds at random; then `oversized` bodies above 64 MiB."""
    rng = random.Random(seed)
    kinds = HTTP_KINDS + GRPC_KINDS
    for index in range(count):
        yield kinds[index % len(kinds)](rng) if index < len(kinds) else rng.choice(kinds)(rng)
    for _ in range(oversized):
        yield http_oversized(rng)


# -- sending ----------------------------------------------------------------------------------------------------------
def _header(head: bytes, name: bytes) -> int | None:
    match = re.search(rb"(?im)^" + name + rb":\s*(\d+)", head)
    return int(match[1]) if match else None


def _http_answer(response: bytes) -> tuple[str, bytes, bytes]:
    """(status, JSON part, binary part) of a response: Triton answers binary outputs after a JSON header."""
    head, _, body = response.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    status = status_line[1].decode() if len(status_line) > 1 else "no answer"
    json_length = _header(head, b"Inference-Header-Content-Length")
    if json_length is None:
        return status, body, b""
    return status, body[:json_length], body[json_length:]


def _read_response(sock: socket.socket) -> bytes:
    """One HTTP response: the headers, then Content-Length bytes of body (Triton always sends one)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = _header(head, b"Content-Length") or 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def send_http(case: HttpCase, address: tuple[str, int]) -> Outcome:
    headers = {"Host": f"{address[0]}:{address[1]}", "Connection": "close", **case.headers}
    headers.setdefault("Content-Length", str(len(case.body)))
    head = f"{case.method} {case.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    try:
        with socket.create_connection(address, timeout=TIMEOUT_S) as sock:
            try:
                sock.sendall(head.encode() + case.body)
                sock.shutdown(socket.SHUT_WR)  # a body shorter than declared ends here, not at our timeout
            except OSError:
                pass  # the server may answer and close before taking a body it refuses: read what it said
            response = _read_response(sock)
    except (TimeoutError, ConnectionError):
        return Outcome(case, "no answer", "")
    if not response:
        return Outcome(case, "no answer", "")
    status, body, binary = _http_answer(response)
    try:
        answer = json.loads(body) if body else {}
    except ValueError:
        return Outcome(case, status, body.decode(errors="replace")[:300])
    if not isinstance(answer, dict):
        return Outcome(case, status, str(answer)[:300])
    embedding = None
    for output in answer.get("outputs", []):
        if output.get("name") == settings.EMBED_OUTPUT:
            data = output["data"] if "data" in output else np.frombuffer(binary, dtype=np.float32)
            embedding = np.asarray(data[: settings.EMBEDDING_DIM], dtype=np.float32)
    return Outcome(case, status, str(answer.get("error", "")), embedding)


def send_grpc(case: GrpcCase, stub: service_pb2_grpc.GRPCInferenceServiceStub) -> Outcome:
    try:
        response = stub.ModelInfer(case.request, timeout=TIMEOUT_S)
    except grpc.RpcError as exc:
        return Outcome(case, exc.code().name, exc.details() or "")
    embedding = None
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=False):
        if output.name == settings.EMBED_OUTPUT:
            embedding = np.frombuffer(raw, dtype=np.float32)[: settings.EMBEDDING_DIM]
    return Outcome(case, "OK", "", embedding)


class Sender:
    """Sends cases to one server: HTTP on a fresh connection each, gRPC over one channel."""

    def __init__(self, http_url: str, grpc_url: str):
        host, port = http_url.rsplit(":", 1)
        self.http_address = (host, int(port))
        self._channel = grpc.insecure_channel(grpc_url, options=[("grpc.max_send_message_length", -1),
                                                                 ("grpc.max_receive_message_length", -1)])
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def send(self, case: Case) -> Outcome:
        if isinstance(case, HttpCase):
            return send_http(case, self.http_address)
        return send_grpc(case, self._stub)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tally(outcomes: list[Outcome]) -> tuple[Counter, Counter]:
    """(status class -> count, (kind, status class, wording) -> count)."""
    by_status = Counter(outcome.status_class for outcome in outcomes)
    by_wording = Counter((outcome.case.kind, outcome.status_class, outcome.wording) for outcome in outcomes)
    return by_status, by_wording
