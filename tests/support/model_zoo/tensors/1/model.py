"""SUM[b, i] = sum(X[b, i, :]) + BIAS[b] (0 when BIAS is not sent)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            bias = pb_utils.get_input_tensor_by_name(request, "BIAS")
            offset = 0.0 if bias is None else bias.as_numpy().reshape(-1, 1)
            total = (x.sum(axis=2) + offset).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", total)]))
        return responses
