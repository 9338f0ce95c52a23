"""The real-API-server tier: builds the Kubernetes binaries on first use (cached), starts a control plane."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.conftest import helm_binary
from tests.deploy.cluster import Cluster, running_cluster
from tools import settings

__all__ = ["cluster", "helm_binary"]

INSTALL_KUBE = settings.PROJECT_ROOT / "scripts" / "install-kube-apiserver.sh"


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            helm_binary: Path) -> Iterator[Cluster]:
    """A fresh control plane for the session. The first run on a machine builds kube-apiserver and
    kube-controller-manager (about 5-7 minutes on 2 cores); its progress goes straight to the terminal."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        subprocess.run([str(INSTALL_KUBE)], check=True)
    with running_cluster(Path(tmp_path_factory.mktemp("kube"))) as started:
        yield started
