"""Triton glue for the pooler: last_hidden_state + attention_mask -> EMBEDDING; the logic is in ../pooling.py."""

import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pooling import mean_pool


class TritonPythonModel:
    def execute(self, requests):
        """Pooling is cheap: each request on its own, so a malformed one fails alone."""
        responses = []
        for request in requests:
            hidden = pb_utils.get_input_tensor_by_name(request, "last_hidden_state").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy()
            try:
                embedding = mean_pool(hidden, mask)
            except ValueError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("EMBEDDING", embedding)]))
        return responses
