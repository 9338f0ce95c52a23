"""Encoder version 2: runs each batch as length classes, each trimmed to its longest sequence."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from triton_encoder import make_model

TritonPythonModel = make_model(split_by_length=True)
