"""Encoder version 1: runs every batch at its full padded length (one plain ONNX Runtime call)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from triton_encoder import make_model

TritonPythonModel = make_model(split_by_length=False)
