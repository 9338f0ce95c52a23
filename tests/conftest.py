"""Shared fixtures (their helpers live in tests/support)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.helm import install_helm
from tests.support.models import write_echo_model


@pytest.fixture
def echo_repository(tmp_path: Path) -> Path:
    repository = tmp_path / "repository"
    write_echo_model(repository)
    return repository


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    """The project's helm v3.19.0; scripts/install-helm.sh fetches it once per machine (a no-op when cached)."""
    return install_helm()
