"""Encoder version 2: drops the padding columns a whole batch shares before running ONNX Runtime."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from triton_encoder import make_model

TritonPythonModel = make_model(trim_padding=True)
