"""Triton adapter of the generate model (decoupled): the request's tensors and parameters in, one response per text
piece (or one with the whole text) out, the last flagged final with the finish reason and token counts. The logic
lives in generation.py."""

from __future__ import annotations

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils
from generation import (
    FIRST_TOKEN_BUCKETS,
    FIRST_TOKEN_METRIC,
    OUTPUT_TOKENS_METRIC,
    PROMPT_TOKENS_METRIC,
    Job,
    RequestError,
    TextGenerator,
    load_model,
)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _text(name: str, value: str) -> pb_utils.Tensor:
    return pb_utils.Tensor(name, np.array([value.encode("utf-8")], dtype=np.object_))


def _count(name: str, value: int) -> pb_utils.Tensor:
    return pb_utils.Tensor(name, np.array([value], dtype=np.int32))


def _scalar(request, name: str) -> object | None:
    """The one element of an optional [1] input (bytes for strings), or None when the request leaves it out."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    value = tensor.as_numpy().reshape(-1)[0]
    return bool(value) if isinstance(value, np.bool_) else value


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        wrong = [key for key in ("n_threads", "n_ctx")
                 if not parameters.get(key, "").isdigit() or int(parameters[key]) < 1]
        if wrong:
            raise pb_utils.TritonModelException(f"config parameters {', '.join(wrong)} must be positive integers")
        self.generator = TextGenerator(load_model(int(parameters["n_threads"]), int(parameters["n_ctx"])))
        labels = {"model": args["model_name"], "version": args["model_version"]}
        # A family must outlive its metrics: keep both.
        described = ((PROMPT_TOKENS_METRIC, "Prompt tokens of accepted generation requests"),
                     (OUTPUT_TOKENS_METRIC, "Tokens generated, counted as they are produced"))
        self.families = [pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.COUNTER)
                         for name, description in described]
        self.prompt_tokens, self.output_tokens = (family.Metric(labels=labels) for family in self.families)
        self.families.append(pb_utils.MetricFamily(
            name=FIRST_TOKEN_METRIC, description="Seconds from the model receiving a request to its first token",
            kind=pb_utils.MetricFamily.HISTOGRAM))
        self.first_token = self.families[-1].Metric(labels=labels, buckets=list(FIRST_TOKEN_BUCKETS))

    def execute(self, requests):
        """One request at a time: a llama.cpp context serves one generation (more instances serve more)."""
        received = time.monotonic()  # requests of one call all arrived by now: the later ones wait in this loop
        for request in requests:
            sender = request.get_response_sender()
            try:
                job = self.generator.prepare(
                    text_input=_scalar(request, "text_input"), messages=_scalar(request, "messages"),
                    parameters=request.parameters(), sampling_parameters=_scalar(request, "sampling_parameters"),
                    stream=_scalar(request, "stream"))
            except RequestError as exc:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    str(exc), pb_utils.TritonError.INVALID_ARG)), flags=FINAL)
                continue
            self.prompt_tokens.increment(len(job.prompt_tokens))
            try:
                self._generate(request, sender, job, received)
            except Exception as exc:  # llama.cpp failed: this request fails, the model keeps serving
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"generation failed: {exc}")),
                            flags=FINAL)
        return None

    def _generate(self, request, sender, job: Job, received: float) -> None:
        """Stream: a response per new text piece; otherwise the text is gathered into the final response."""
        streaming, gathered, produced = job.settings.stream, [], 0
        for piece in self.generator.stream(job, request.is_cancelled):
            if piece.tokens:
                if not produced:
                    self.first_token.observe(time.monotonic() - received)
                self.output_tokens.increment(piece.tokens)
                produced += piece.tokens
            if piece.finish_reason is None:
                if streaming and piece.text:
                    sender.send(pb_utils.InferenceResponse([_text("text_output", piece.text)]))
                elif piece.text:
                    gathered.append(piece.text)
                continue
            outputs = [_text("text_output", "".join(gathered) + piece.text),
                       _text("finish_reason", piece.finish_reason),
                       _count("prompt_tokens", len(job.prompt_tokens)), _count("completion_tokens", produced)]
            sender.send(pb_utils.InferenceResponse(outputs), flags=FINAL)

    def finalize(self):
        self.generator.llm.close()
