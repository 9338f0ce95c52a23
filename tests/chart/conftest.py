"""Fixtures for the chart tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import paths


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """A copy of the chart whose files/ the test may change."""
    target = tmp_path / "chart"
    shutil.copytree(paths.CHART, target)
    return target
