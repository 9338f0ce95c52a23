"""The real-API-server tier: builds the Kubernetes binaries on first use (cached), starts a control plane."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.conftest import helm_binary
from tests.deploy.cluster import BUILD_TIMEOUT_S, Cluster, running_cluster
from tools import settings

__all__ = ["cluster", "helm_binary"]

INSTALL_KUBE = settings.PROJECT_ROOT / "scripts" / "install-kube-apiserver.sh"


def build_kubernetes_binaries() -> None:
    """Run the (cached, idempotent) build in its own process group, so an interrupted build leaves nothing running."""
    build = subprocess.Popen([str(INSTALL_KUBE)], start_new_session=True)
    try:
        if build.wait(BUILD_TIMEOUT_S) != 0:
            pytest.fail(f"{INSTALL_KUBE.name} failed with exit code {build.returncode} (its output is above)")
    finally:
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            helm_binary: Path) -> Iterator[Cluster]:
    """A fresh control plane for the session; the build's progress goes straight to the terminal."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        build_kubernetes_binaries()
    with running_cluster(Path(tmp_path_factory.mktemp("kube"))) as started:
        yield started
