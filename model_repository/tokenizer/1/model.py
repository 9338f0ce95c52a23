"""Triton glue for the tokenizer: TEXT (bytes) -> input_ids, attention_mask; the logic is in ../tokenization.py."""

import json
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tokenization import InvalidTextError, TextTokenizer, decode_texts, parse_buckets


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        max_length = int(parameters["max_length"]["string_value"])
        buckets = parse_buckets(parameters.get("length_buckets", {}).get("string_value", ""), max_length)
        self.tokenizer = TextTokenizer(max_length, buckets)

    def execute(self, requests):
        """Tokenize every valid request in one call; a bad text fails only its own request."""
        texts, errors = [], {}
        for index, request in enumerate(requests):
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            try:
                texts.append(decode_texts(raw.tolist()))
            except InvalidTextError as exc:
                errors[index] = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                texts.append([])
        token_lists = iter(self.tokenizer.token_lists([t for request_texts in texts for t in request_texts]))
        responses = []
        for index, request_texts in enumerate(texts):
            if index in errors:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=errors[index]))
                continue
            batch = self.tokenizer.pad([next(token_lists) for _ in request_texts])
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("input_ids", batch.input_ids),
                pb_utils.Tensor("attention_mask", batch.attention_mask),
            ]))
        return responses
