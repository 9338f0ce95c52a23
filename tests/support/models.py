"""Tiny Python-backend repositories that load in a second."""

from __future__ import annotations

from pathlib import Path

ECHO_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
input [{{ name: "X" data_type: TYPE_FP32 dims: [ 2 ] }}]
output [{{ name: "Y" data_type: TYPE_FP32 dims: [ 2 ] }}]
instance_group [{{ kind: KIND_CPU count: 1 }}]
"""

ECHO_MODEL = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
"""


def write_echo_model(repository: Path, name: str = "echo", model_source: str = ECHO_MODEL) -> Path:
    """A one-version Python model that returns its input: the cheapest thing Triton can load."""
    version = repository / name / "1"
    version.mkdir(parents=True)
    (repository / name / "config.pbtxt").write_text(ECHO_CONFIG.format(name=name))
    (version / "model.py").write_text(model_source)
    return repository / name
