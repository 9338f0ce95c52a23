"""A tiny decoupled Python-backend model that follows the `generate` model's contract (tensors, parameters, final
response, errors, cancellation) without a language model: it "generates" the words of its prompt in reverse order,
cycling, one word per response, with a configurable pause per word. It loads in a second, so clients of generation
models (the OpenAI-compatible gateway) are tested against a real, decoupled tritonserver model.

Tokens are whitespace-separated words; a chat request's prompt is its messages rendered as "role: content" lines;
a stop string stops generation when it equals the next word.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support import paths
from tools import settings

CONTEXT_TOKENS = 512  # prompt + max_tokens beyond this is refused, as a real model's context is

CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [
  {{ name: "text_input" data_type: TYPE_STRING dims: [ 1 ] optional: true }},
  {{ name: "messages" data_type: TYPE_STRING dims: [ 1 ] optional: true }},
  {{ name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true }},
  {{ name: "sampling_parameters" data_type: TYPE_STRING dims: [ 1 ] optional: true }},
  {{ name: "exclude_input_in_output" data_type: TYPE_BOOL dims: [ 1 ] optional: true }}
]
output [
  {{ name: "text_output" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "finish_reason" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "prompt_tokens" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "completion_tokens" data_type: TYPE_INT32 dims: [ 1 ] }}
]
instance_group [{{ kind: KIND_CPU count: 1 }}]
parameters {{ key: "token_delay_s" value: {{ string_value: "{delay}" }} }}
parameters {{ key: "journal" value: {{ string_value: "{journal}" }} }}
"""

MODEL = '''\
import json
import random
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

CONTEXT_TOKENS = {context}
DEFAULTS = {{"max_tokens": 64, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "seed": None, "stop": [], "stream": False}}


class BadRequest(Exception):
    pass


def _string(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    value = tensor.as_numpy().reshape(-1)[0]
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise BadRequest(f"{{name}} is not valid UTF-8") from None


def _options(request):
    options = dict(DEFAULTS)
    sampling = _string(request, "sampling_parameters")
    if sampling:
        try:
            options.update(json.loads(sampling))
        except ValueError as exc:
            raise BadRequest(f"sampling_parameters is not JSON: {{exc}}") from None
    stream = pb_utils.get_input_tensor_by_name(request, "stream")
    if stream is not None:
        options["stream"] = bool(stream.as_numpy().reshape(-1)[0])
    options.update(json.loads(request.parameters() or "{{}}"))
    if isinstance(options["stop"], str):
        options["stop"] = json.loads(options["stop"]) if options["stop"].startswith("[") else [options["stop"]]
    if not isinstance(options["max_tokens"], int) or options["max_tokens"] < 1:
        raise BadRequest(f"max_tokens must be a positive integer, got {{options['max_tokens']!r}}")
    if not isinstance(options["temperature"], (int, float)) or options["temperature"] < 0:
        raise BadRequest(f"temperature must be a number >= 0, got {{options['temperature']!r}}")
    if not isinstance(options["top_p"], (int, float)) or not 0 < options["top_p"] <= 1:
        raise BadRequest(f"top_p must be in (0, 1], got {{options['top_p']!r}}")
    return options


def _prompt(request):
    text, messages = _string(request, "text_input"), _string(request, "messages")
    if (text is None) == (messages is None):
        raise BadRequest("send exactly one of text_input and messages")
    if messages is not None:
        try:
            text = "\\n".join(f"{{m['role']}}: {{m['content']}}" for m in json.loads(messages))
        except (ValueError, TypeError, KeyError) as exc:
            raise BadRequest(f"messages must be a JSON list of {{{{role, content}}}} objects: {{exc}}") from None
    if not text.strip():
        raise BadRequest("the prompt is empty")
    return text.split()


def _final(text, reason, prompt_tokens, completion_tokens):
    return pb_utils.InferenceResponse([
        pb_utils.Tensor("text_output", np.array([text.encode()], dtype=np.object_)),
        pb_utils.Tensor("finish_reason", np.array([reason.encode()], dtype=np.object_)),
        pb_utils.Tensor("prompt_tokens", np.array([prompt_tokens], dtype=np.int32)),
        pb_utils.Tensor("completion_tokens", np.array([completion_tokens], dtype=np.int32)),
    ])


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.delay = float(config["parameters"]["token_delay_s"]["string_value"])
        self.journal = config["parameters"]["journal"]["string_value"]

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self._generate, args=(request,), daemon=True).start()
        return None

    def _generate(self, request):
        sender = request.get_response_sender()
        try:
            words, options = _prompt(request), _options(request)
            if len(words) + options["max_tokens"] > CONTEXT_TOKENS:
                raise BadRequest(f"prompt ({{len(words)}} tokens) + max_tokens exceeds the context "
                                 f"({{CONTEXT_TOKENS}})")
        except BadRequest as exc:
            error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
            sender.send(pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        order = list(reversed(words))
        if options["temperature"] > 0:
            random.Random(options["seed"]).shuffle(order)
        text, reason, produced = "", "length", 0
        for count in range(options["max_tokens"]):
            if request.is_cancelled():
                reason = "cancelled"
                break
            time.sleep(self.delay)
            word = order[count % len(order)]
            if word in options["stop"]:
                reason = "stop"
                break
            text, produced = text + " " + word, produced + 1
            if options["stream"]:
                sender.send(pb_utils.InferenceResponse([
                    pb_utils.Tensor("text_output", np.array([(" " + word).encode()], dtype=np.object_))]))
        last = "" if options["stream"] else text
        sender.send(_final(last, reason, len(words), produced), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        if self.journal:
            with open(self.journal, "a") as journal:
                journal.write(json.dumps({{"finish_reason": reason, "completion_tokens": produced}}) + "\\n")
'''


def write_generation_model(repository: Path, name: str = settings.GENERATE_MODEL, token_delay_s: float = 0.002,
                           journal: Path | None = None) -> Path:
    """The tiny generation model at `repository/name`, pausing `token_delay_s` per word; with a `journal`, it appends
    one JSON line per finished request there (finish reason, tokens produced): how a test sees what it did."""
    version = repository / name / "1"
    version.mkdir(parents=True)
    config = CONFIG.format(name=name, delay=token_delay_s, journal=journal or "")
    (repository / name / "config.pbtxt").write_text(config)
    (version / "model.py").write_text(MODEL.format(context=CONTEXT_TOKENS))
    return repository / name


def embed_and_generation_repository(repository: Path, token_delay_s: float = 0.002) -> Path:
    """The shipped embedding ensemble (its three models) beside the tiny generation model."""
    for model in (settings.EMBED_MODEL, settings.TOKENIZER_MODEL, settings.ENCODER_MODEL):
        shutil.copytree(paths.REPOSITORY / model, repository / model)
    write_generation_model(repository, token_delay_s=token_delay_s)
    return repository
