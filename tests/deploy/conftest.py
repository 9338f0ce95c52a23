"""The real-API-server tier: builds the Kubernetes binaries on first use (cached), starts a control plane."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import paths
from tests.support.cluster import BUILD_TIMEOUT_S, Cluster, running_cluster
from tools.processes import spawn

INSTALL_KUBE = paths.SCRIPTS / "install-kubernetes.sh"


def build_kubernetes_binaries() -> None:
    """Run the (cached, idempotent) build as a supervised child, so an interrupted build leaves nothing running."""
    build = spawn(INSTALL_KUBE.name, [INSTALL_KUBE], stdin=None)
    try:
        if build.wait(BUILD_TIMEOUT_S) != 0:
            pytest.fail(f"{INSTALL_KUBE.name} failed with exit code {build.returncode} (its output is above)")
    finally:
        build.stop()


@pytest.fixture(scope="session")
def kube_binaries(request: pytest.FixtureRequest) -> None:
    """etcd, the control plane, the node's binaries and runtime are on this machine (built once; the build's progress
    goes straight to the terminal)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        build_kubernetes_binaries()


@pytest.fixture(scope="session")
def cluster(kube_binaries: None, tmp_path_factory: pytest.TempPathFactory, helm_binary: Path) -> Iterator[Cluster]:
    """A fresh control plane for the session."""
    with running_cluster(Path(tmp_path_factory.mktemp("kube"))) as started:
        yield started
