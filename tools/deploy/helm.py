"""Deploy the chart to Kubernetes through pyhelm3 and a real helm binary.

Every operation names its release by a `Target`; failures come back as one `DeployError` whose message says
what went wrong (no cluster, bad values, a rollout that never became ready) without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pyhelm3 import Client, ReleaseRevision
from pyhelm3 import errors as helm_errors
from rich.console import Console

from tools import processes, settings
from tools.errors import DeployError, UsageError
from tools.repository import load_repository, model_config_pb2
from tools.validation import Target as Hardware
from tools.validation.run import refuse_errors

# pyhelm3 logs every failed helm call; our DeployError already says it once, clearly.
logging.getLogger("pyhelm3").addHandler(logging.NullHandler())

T = TypeVar("T")
_GO_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")  # what helm's --timeout accepts


@dataclass
class Target:
    """Which release, where, and with which helm."""

    release: str = settings.DEFAULT_RELEASE
    namespace: str | None = None  # None: the kube context's namespace, as helm does
    helm: Path | None = None
    kubeconfig: Path | None = None
    kube_context: str | None = None
    timeout: str = settings.DEFAULT_DEPLOY_TIMEOUT
    chart: Path = field(default=settings.CHART_DIR)
    create_namespace: bool = False  # opt-in, as with helm

    def __post_init__(self) -> None:
        if not _GO_DURATION.fullmatch(self.timeout):
            raise UsageError(f"--timeout {self.timeout!r} is not a duration helm reads (e.g. 90s, 5m, 1h30m)")

    def require_chart(self) -> None:
        """A usage error, before anything runs, when the chart folder is not a chart."""
        if not (Path(self.chart) / "Chart.yaml").is_file():
            raise UsageError(f"no chart at {self.chart} (no Chart.yaml there): pass --chart")


@dataclass(frozen=True)
class RevisionInfo:
    """One revision of a release, as `status` and `history` report it."""

    revision: int
    status: str
    updated: str
    description: str
    namespace: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def of(cls, revision: ReleaseRevision) -> RevisionInfo:
        return cls(revision.revision, revision.status.value, revision.updated.isoformat(timespec="seconds"),
                   revision.description or "", revision.release.namespace)


def find_helm(explicit: Path | None = None) -> Path:
    """The helm to run: an explicit path, $HELM, PATH's, or the one scripts/install-helm.sh installed."""
    if explicit is not None:
        candidates = [explicit]
    else:
        candidates = [Path(p) for p in (os.environ.get(settings.HELM_ENV), shutil.which("helm")) if p]
        candidates.append(settings.HELM_BINARY)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise DeployError(f"no helm binary found (tried: {tried}); run scripts/install-helm.sh, put helm on PATH, "
                      f"set ${settings.HELM_ENV} or pass --helm")


def make_client(target: Target) -> Client:
    return Client(executable=str(find_helm(target.helm)), kubeconfig=target.kubeconfig,
                  kubecontext=target.kube_context, default_timeout=target.timeout)


def _one_line(text: str) -> str:
    """helm's message on one line, without its `Error:` prefix."""
    return " ".join(text.split()).removeprefix("Error: ")


def _where(target: Target) -> str:
    return f"namespace {target.namespace!r}" if target.namespace else "the kube context's namespace"


def _explain(exc: helm_errors.Error, target: Target) -> DeployError:
    detail = _one_line(str(exc))
    unreachable = any(sign in detail.lower() for sign in ("cluster unreachable", "connection refused"))
    if unreachable or isinstance(exc, helm_errors.ConnectionError):
        where = target.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        return DeployError(f"no Kubernetes cluster reachable with kubeconfig {where}"
                           f"{f' (context {target.kube_context})' if target.kube_context else ''}: {detail}")
    if isinstance(exc, helm_errors.ReleaseNotFoundError):
        return DeployError(f"release {target.release!r} not found in {_where(target)}")
    missing = re.search(r'namespaces "([^"]+)" not found', detail)
    if missing:  # helm names the namespace even when it came from the kube context
        return DeployError(f"namespace {missing[1]!r} does not exist (pass --create-namespace to create it)")
    return DeployError(detail)


def _run(target: Target, operation: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(operation)
    except helm_errors.Error as exc:
        raise _explain(exc, target) from None


# -- values -----------------------------------------------------------------------------------------------


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


# A chart with no values of its own whose one template prints the values helm computed: helm itself reads the
# user's -f, --set and --set-string, so every value means exactly what it means to helm (types, commas, lists,
# escapes, leading zeros), and the result is handed to the real chart as one values file.
_ECHO_CHART = {
    "Chart.yaml": "apiVersion: v2\nname: values-echo\nversion: 0.0.0\n",
    "templates/values.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: values\n"
                             "data:\n  values.json: {{ toJson .Values | quote }}\n",
}
HELM_VALUES_TIMEOUT_S = 60.0


def load_values(target: Target, files: list[Path], assignments: list[str] = (),
                string_assignments: list[str] = ()) -> dict:
    """The values helm makes of `-f FILE... --set ... --set-string ...` (in helm's order: files, then --set)."""
    for path in files:
        if not Path(path).is_file():
            raise UsageError(f"values file {path} does not exist")
    if not (files or assignments or string_assignments):
        return {}
    with tempfile.TemporaryDirectory(prefix="values-echo-") as chart:
        for name, text in _ECHO_CHART.items():
            (Path(chart) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(chart) / name).write_text(text)
        argv = [find_helm(target.helm), "template", "values", chart,
                *[arg for path in files for arg in ("--values", Path(path).resolve())],
                *[arg for value in assignments for arg in ("--set", value)],
                *[arg for value in string_assignments for arg in ("--set-string", value)]]
        done = processes.run("helm template", argv, timeout=HELM_VALUES_TIMEOUT_S)
    if done.returncode != 0:
        raise UsageError(f"helm refused the values: {_one_line(done.stderr)}")
    rendered = next(doc for doc in yaml.safe_load_all(done.stdout) if doc)
    return json.loads(rendered["data"]["values.json"]) or {}


def repository_checksum(repository: Path) -> str:
    """Digest of every file under the repository (paths and bytes): the chart rolls pods when it changes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in repository.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(repository).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def values_for(repository: Path, values: dict, hardware: Hardware = Hardware.CPU) -> dict:
    """User values plus the repository checksum (unless the user set one) and the target's GPU switch.

    The chart's `gpu.enabled` follows the target; values that contradict it are a usage error, so a GPU pool is
    never requested for a repository checked only for CPU (or the reverse).
    """
    gpu = hardware is Hardware.GPU
    asked = (values.get("gpu") or {}).get("enabled")
    if asked is not None and bool(asked) != gpu:
        raise UsageError(f"the values set gpu.enabled={str(asked).lower()} but --target is {hardware.value}: pass "
                         f"--target {'gpu' if asked else 'cpu'} (the repository is then validated for it)")
    return _merge({"modelRepository": {"checksum": repository_checksum(repository)}, "gpu": {"enabled": gpu}}, values)


_KIND_GPU = model_config_pb2.ModelInstanceGroup.Kind.KIND_GPU


def gpu_models(repository: Path) -> list[str]:
    """Models whose config.pbtxt (what Triton loads) has a KIND_GPU instance group."""
    loaded = load_repository(repository)
    return sorted(name for name, model in loaded.models.items()
                  if model.config is not None and any(g.kind == _KIND_GPU for g in model.config.instance_group))


def check_repository(repository: Path, hardware: Hardware = Hardware.CPU) -> None:
    """Refuse a repository `tools validate --target <hardware>` finds errors in; they are printed on stderr, so stdout
    keeps only data (a diff, JSON). For a GPU target the repository must also put at least one model on the GPU: the
    chart rewrites no model config, and pods holding GPUs that no model uses only cost money."""
    refuse_errors(repository, Console(stderr=True), "nothing was deployed", hardware)
    if hardware is Hardware.GPU and not gpu_models(repository):
        raise DeployError(f"--target gpu, but no model in {repository} has a KIND_GPU instance group (the chart "
                          "rewrites no config): set `instance_group [{ kind: KIND_GPU ... }]` where the model should "
                          "run on the GPU, or deploy with --target cpu; nothing was deployed")


# -- operations -------------------------------------------------------------------------------------------


def install_or_upgrade(target: Target, values: dict, *, dry_run: bool = False,
                       install_only: bool = False) -> ReleaseRevision:
    """Install or upgrade (only install with `install_only`: an existing release is refused, as `helm install` does);
    wait for every pod to be ready, or roll back to the last good revision (atomic)."""
    async def run() -> ReleaseRevision:
        client = make_client(target)
        if install_only:
            with contextlib.suppress(helm_errors.ReleaseNotFoundError):
                current = await client.get_current_revision(target.release, namespace=target.namespace)
                raise DeployError(f"release {target.release!r} already exists in namespace "
                                  f"{current.release.namespace!r} (revision {current.revision}): "
                                  "`tools deploy upgrade` changes it")
        chart = await client.get_chart(target.chart)
        return await client.install_or_upgrade_release(
            target.release, chart, values, namespace=target.namespace, create_namespace=target.create_namespace,
            atomic=not dry_run, wait=not dry_run, dry_run=dry_run, timeout=target.timeout)
    return _run(target, run())


def _manifests_by_name(resources: list[dict]) -> dict[str, str]:
    """kind/name -> YAML text, with Secret data masked so a diff never prints a secret."""
    texts = {}
    for resource in resources:
        if not resource:
            continue
        if resource.get("kind") == "Secret":
            resource = {**resource, "data": {k: "(hidden)" for k in resource.get("data") or {}}}
        key = f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"
        texts[key] = yaml.safe_dump(resource, sort_keys=True)
    return texts


def diff(target: Target, values: dict) -> str:
    """Unified diff between the deployed manifests and what an upgrade with `values` would apply."""
    async def run() -> tuple[list[dict], list[dict]]:
        client = make_client(target)
        try:
            current = list(await (await client.get_current_revision(
                target.release, namespace=target.namespace)).resources())
        except helm_errors.ReleaseNotFoundError:
            current = []
        chart = await client.get_chart(target.chart)
        planned = await client.install_or_upgrade_release(
            target.release, chart, values, namespace=target.namespace, dry_run=True, timeout=target.timeout)
        return current, list(await planned.resources())
    current, planned = _run(target, run())
    before, after = _manifests_by_name(current), _manifests_by_name(planned)
    lines: list[str] = []
    for key in sorted(before.keys() | after.keys()):
        lines += difflib.unified_diff(before.get(key, "").splitlines(keepends=True),
                                      after.get(key, "").splitlines(keepends=True),
                                      fromfile=f"deployed {key}", tofile=f"planned {key}")
    return "".join(lines)


def status(target: Target) -> RevisionInfo:
    """The release's current revision."""
    async def run() -> RevisionInfo:
        return RevisionInfo.of(await make_client(target).get_current_revision(target.release,
                                                                              namespace=target.namespace))
    return _run(target, run())


def history(target: Target) -> list[RevisionInfo]:
    async def run() -> list[RevisionInfo]:
        current = await make_client(target).get_current_revision(target.release, namespace=target.namespace)
        return [RevisionInfo.of(revision) for revision in await current.release.history()]
    return _run(target, run())


def rollback(target: Target, revision: int | None = None) -> ReleaseRevision:
    """Roll back to `revision` (default: the previous one) and wait for the pods."""
    async def run() -> ReleaseRevision:
        current = await make_client(target).get_current_revision(target.release, namespace=target.namespace)
        return await current.release.rollback(revision, wait=True, timeout=target.timeout, cleanup_on_fail=True)
    return _run(target, run())


def uninstall(target: Target) -> None:
    async def run() -> None:
        client = make_client(target)
        await client.get_current_revision(target.release, namespace=target.namespace)  # clear error if absent
        await client.uninstall_release(target.release, namespace=target.namespace, wait=True,
                                       timeout=target.timeout)
    _run(target, run())
