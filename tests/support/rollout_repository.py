"""A copy of the shipped repository to roll out on: encoder version 3 (a copy of 2) and two broken versions, for the
rollout tests and loadtests/bench_rollout.py."""

from __future__ import annotations

import compileall
import shutil
from pathlib import Path

from tests.support import paths

NEW_VERSION = 3
BROKEN_AT_LOAD = 4
BROKEN_ON_REQUEST = 5
BROKEN_MODELS = {
    BROKEN_AT_LOAD: "class TritonPythonModel:\n    def initialize(self, args):\n"
                    "        raise RuntimeError('version 4 cannot start')\n",
    # Passes the config's warm-up (all-zero ids: Triton would refuse to load a version that fails it), then raises.
    BROKEN_ON_REQUEST: """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
            if ids.any():
                raise RuntimeError("version 5 fails every request")
            hidden = np.zeros((*ids.shape, 384), dtype=np.float32)
            pooled = np.zeros((len(ids), 384), dtype=np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("last_hidden_state", hidden),
                                                         pb_utils.Tensor("sentence_embedding", pooled)]))
        return responses
""",
}


def build(root: Path) -> Path:
    """The repository at `root`, compiled before any server starts, as a deployed one would be (tools/rollout)."""
    shutil.copytree(paths.REPOSITORY, root, ignore=shutil.ignore_patterns("__pycache__"))
    encoder = root / "encoder"
    shutil.copytree(encoder / "2", encoder / str(NEW_VERSION))
    for version, source in BROKEN_MODELS.items():
        (encoder / str(version)).mkdir()
        (encoder / str(version) / "model.py").write_text(source)
    compileall.compile_dir(str(root), quiet=2)
    return root
