"""The real helm binary (installed on first use) and chart rendering through pyhelm3, for the chart and deploy tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pyhelm3 import Client

from tests.support import paths
from tools import processes, settings
from tools.deploy import helm as deploy

INSTALL_HELM = paths.SCRIPTS / "install-helm.sh"
RELEASE = "demo"
NAMESPACE = "ml-serving"
INSTALL_TIMEOUT_S = 300.0


def install_helm() -> Path:
    """The project's helm v3.19.0; scripts/install-helm.sh fetches it once per machine (a no-op when cached)."""
    done = processes.run(INSTALL_HELM.name, [INSTALL_HELM], timeout=INSTALL_TIMEOUT_S)
    assert done.returncode == 0, f"{INSTALL_HELM.name} failed ({done.returncode}): {done.stdout}{done.stderr}"
    return deploy.find_helm(settings.HELM_BINARY)


def render(helm: Path, values: dict | None = None, chart: Path = paths.CHART,
           namespace: str = NAMESPACE, release: str = RELEASE) -> list[dict]:
    """Every object `helm template` renders for the values (through pyhelm3, as tools deploy uses it)."""
    async def run() -> list[dict]:
        client = Client(executable=str(helm))
        return [obj for obj in await client.template_resources(await client.get_chart(chart), release,
                                                               values or {}, namespace=namespace) if obj]
    return asyncio.run(run())


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]
