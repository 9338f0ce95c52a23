"""The real helm binary (installed on first use) and chart rendering through pyhelm3, for the chart and deploy tests."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from pyhelm3 import Client

from tests.support import paths
from tools import settings
from tools.deploy import helm as deploy

INSTALL_HELM = paths.SCRIPTS / "install-helm.sh"
RELEASE = "demo"
NAMESPACE = "ml-serving"


def install_helm() -> Path:
    """The project's helm v3.19.0; scripts/install-helm.sh fetches it once per machine (a no-op when cached)."""
    subprocess.run([str(INSTALL_HELM)], check=True)
    return deploy.find_helm(settings.HELM_BINARY)


def render(helm: Path, values: dict | None = None, chart: Path = paths.CHART,
           namespace: str = NAMESPACE) -> list[dict]:
    """Every object `helm template` renders for the values (through pyhelm3, as tools deploy uses it)."""
    async def run() -> list[dict]:
        client = Client(executable=str(helm))
        return [obj for obj in await client.template_resources(await client.get_chart(chart), RELEASE,
                                                               values or {}, namespace=namespace) if obj]
    return asyncio.run(run())


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]
