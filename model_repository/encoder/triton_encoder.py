"""Triton glue shared by every encoder version: batch the requests, run ../onnx_encoder.py, pool, split the answers.

Each version's model.py only says how its encoder behaves (see EncoderSettings.split_by_length). Two outputs:
`last_hidden_state` (token embeddings) and `sentence_embedding` (../pooling.py over them); each is computed and
sent only for the requests that ask for it (a request naming no outputs gets both).
"""

import json
from collections import defaultdict

import numpy as np
import triton_python_backend_utils as pb_utils
from onnx_encoder import EncoderSettings, OnnxEncoder
from pooling import mean_pool

TOKEN_EMBEDDINGS = "last_hidden_state"
SENTENCE_EMBEDDING = "sentence_embedding"
OUTPUTS = (TOKEN_EMBEDDINGS, SENTENCE_EMBEDDING)


def _int_parameter(parameters: dict, key: str, default: int) -> int:
    return int(parameters.get(key, {}).get("string_value", default))


def _wanted(request) -> tuple:
    """The outputs a request asks for, in OUTPUTS order; all of them when it names none."""
    names = request.requested_output_names()
    return tuple(name for name in OUTPUTS if name in names) if names else OUTPUTS


def make_model(split_by_length: bool) -> type:
    """A TritonPythonModel class whose encoder runs batches whole or split into length classes."""

    class TritonPythonModel:
        def initialize(self, args):
            parameters = json.loads(args["model_config"]).get("parameters", {})
            self.encoder = OnnxEncoder(EncoderSettings(
                intra_op_threads=_int_parameter(parameters, "intra_op_threads", 1),
                inter_op_threads=_int_parameter(parameters, "inter_op_threads", 1),
                split_by_length=split_by_length,
            ))

        def execute(self, requests):
            """One ONNX Runtime call per sequence length among the requests (the batcher sends one length), then
            one pooling call over the rows that want a sentence embedding: microseconds inside the batch."""
            by_length = defaultdict(list)
            tokens = []
            wanted = []
            for index, request in enumerate(requests):
                ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
                mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy()
                tokens.append((ids, mask))
                wanted.append(_wanted(request))
                by_length[ids.shape[1:]].append(index)
            responses = [None] * len(requests)
            for indices in by_length.values():
                ids = np.concatenate([tokens[i][0] for i in indices])
                mask = np.concatenate([tokens[i][1] for i in indices])
                try:
                    hidden = self.encoder.encode(ids, mask)
                except ValueError as exc:
                    error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                    for i in indices:
                        responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                    continue
                outputs = {TOKEN_EMBEDDINGS: hidden}
                if any(SENTENCE_EMBEDDING in wanted[i] for i in indices):
                    outputs[SENTENCE_EMBEDDING] = mean_pool(hidden, mask)
                splits = np.cumsum([len(tokens[i][0]) for i in indices])[:-1]
                parts = {name: np.split(values, splits) for name, values in outputs.items()}
                for row, i in enumerate(indices):
                    tensors = [pb_utils.Tensor(name, parts[name][row]) for name in wanted[i]]
                    responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
            return responses

    return TritonPythonModel
