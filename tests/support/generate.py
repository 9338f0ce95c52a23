"""The generate model's plain-Python logic, imported from its version folder as model.py imports it."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from types import ModuleType

from tests.support import paths
from tools import settings


@cache
def generation() -> ModuleType:
    """`model_repository/generate/1/generation.py`, once, under its own name (dataclasses look their module up)."""
    path = paths.REPOSITORY / settings.GENERATE_MODEL / "1" / "generation.py"
    spec = importlib.util.spec_from_file_location("generation", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["generation"] = module
    spec.loader.exec_module(module)
    return module
