"""A real Kubernetes control plane on loopback for the deployment tests: etcd, kube-apiserver and
kube-controller-manager 1.20.2 (built once per machine by scripts/install-kubernetes.sh).

Alone it has no kubelet, scheduler or container runtime, so no container or probe runs: `PodReadiness` is then the
test double that stands in for the kubelet, marking pods Running and Ready — except pods whose image tag is
`never-ready`, which stay unready the way a crash-looping container would. With `real_node=True` there is no double:
tests/support/node.py joins a real node.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import paths
from tools import processes, settings
from tools.errors import ProcessError
from tools.processes import Child, free_port, run, spawn

# Built once per machine by scripts/install-kubernetes.sh.
KUBE_BIN_DIR = settings.CACHE_DIR / "kubernetes-1.20.2" / "bin"
NEVER_READY_TAG = "never-ready"
START_TIMEOUT_S = 60.0
# The first test of the tier also pays the one-time build: about 8 minutes on 2 idle cores, over 12 on busy ones.
BUILD_TIMEOUT_S = 1500


class KubeAPI:
    """Just enough of the Kubernetes REST API for the tests (bearer token, self-signed serving cert)."""

    def __init__(self, server: str, token: str):
        self.server = server
        self.token = token
        self._tls = ssl.create_default_context()
        self._tls.check_hostname = False
        self._tls.verify_mode = ssl.CERT_NONE  # the API server's throwaway self-signed certificate

    def request(self, method: str, path: str, body: dict | None = None,
                content_type: str = "application/json") -> dict:
        req = urllib.request.Request(self.server + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=10, context=self._tls) as resp:
            return json.loads(resp.read())

    def healthy(self) -> bool:
        req = urllib.request.Request(self.server + "/readyz", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=2, context=self._tls) as resp:
            return resp.status == 200

    def get(self, path: str) -> dict:
        return self.request("GET", path)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    def pods(self, namespace: str) -> list[dict]:
        return self.get(f"/api/v1/namespaces/{namespace}/pods")["items"]

    def ready_pods(self, namespace: str) -> list[dict]:
        return [p for p in self.pods(namespace) if is_ready(p) and not p["metadata"].get("deletionTimestamp")]

    def replica_sets(self, namespace: str) -> list[dict]:
        return self.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets")["items"]

    def deployment(self, namespace: str, name: str) -> dict:
        return self.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")


def is_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


class PodReadiness:
    """Kubelet stand-in: every pod becomes Running and Ready, unless its image tag is `never-ready`."""

    def __init__(self, api: KubeAPI, interval: float = 0.2):
        self.api = api
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-readiness", daemon=True)

    def start(self) -> PodReadiness:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
                for pod in self.api.get("/api/v1/pods")["items"]:
                    self._mark(pod)

    def _mark(self, pod: dict) -> None:
        meta = pod["metadata"]
        images = [c["image"] for c in pod["spec"]["containers"]]
        if is_ready(pod) or meta.get("deletionTimestamp") or any(i.endswith(f":{NEVER_READY_TAG}") for i in images):
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conditions = [{"type": kind, "status": "True", "lastTransitionTime": now}
                      for kind in ("Initialized", "ContainersReady", "Ready")]
        statuses = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "restartCount": 0,
                     "started": True, "state": {"running": {"startedAt": now}}} for c in pod["spec"]["containers"]]
        self.api.request("PATCH", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                         {"status": {"phase": "Running", "conditions": conditions, "containerStatuses": statuses,
                                     "podIP": "10.244.0.10", "startTime": now}},
                         content_type="application/merge-patch+json")


@dataclass
class Cluster:
    kubeconfig: Path
    api: KubeAPI


def _safely(check: Callable[[], bool]) -> Callable[[], bool]:
    """A readiness check that reads 'not yet' from a refused connection or a half-written answer."""
    def ready() -> bool:
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
            return bool(check())
        return False
    return ready


def write_kubeconfig(path: Path, server: str, token: str, namespace: str | None = None) -> Path:
    """A kubeconfig for the cluster; `namespace` becomes its context's namespace (helm's default namespace)."""
    context = {"cluster": "test", "user": "admin", **({"namespace": namespace} if namespace else {})}
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": context}],
    }))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def running_cluster(workdir: Path, bin_dir: Path = KUBE_BIN_DIR, real_node: bool = False) -> Iterator[Cluster]:
    """etcd + kube-apiserver + kube-controller-manager on free loopback ports, stopped (and wiped) on exit; with
    `real_node`, every controller (endpoints for Services, pod GC, node lifecycle) and no kubelet double."""
    host = settings.DEFAULT_HOST
    etcd_port, peer_port, api_port = free_port(host), free_port(host), free_port(host)
    token = secrets.token_urlsafe(24)
    (workdir / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
    key = run("openssl", ["openssl", "genrsa", "-out", workdir / "sa.key", "2048"], timeout=START_TIMEOUT_S)
    if key.returncode != 0:
        raise ProcessError(f"openssl genrsa failed ({key.returncode}): {key.stderr.strip()}")
    server = f"https://{host}:{api_port}"
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", server, token)
    api = KubeAPI(server, token)
    children: list[Child] = []
    readiness = None if real_node else PodReadiness(api)
    try:
        etcd = spawn("etcd", ["etcd", "--name=test", f"--data-dir={workdir / 'etcd'}",
                       f"--listen-client-urls=http://{host}:{etcd_port}",
                       f"--advertise-client-urls=http://{host}:{etcd_port}",
                       f"--listen-peer-urls=http://{host}:{peer_port}",
                       f"--initial-advertise-peer-urls=http://{host}:{peer_port}",
                       f"--initial-cluster=test=http://{host}:{peer_port}"], log=workdir / "etcd.log")
        children.append(etcd)
        etcd.wait_until(_safely(lambda: urllib.request.urlopen(f"http://{host}:{etcd_port}/health",
                                                               timeout=1).status == 200), START_TIMEOUT_S, "health")
        apiserver = spawn("kube-apiserver", [
            str(bin_dir / "kube-apiserver"), f"--etcd-servers=http://{host}:{etcd_port}",
            f"--bind-address={host}", f"--advertise-address={host}", f"--secure-port={api_port}",
            "--insecure-port=0", f"--cert-dir={workdir / 'certs'}", f"--token-auth-file={workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC", "--service-cluster-ip-range=10.96.0.0/16",
            f"--service-account-key-file={workdir / 'sa.key'}",
            f"--service-account-signing-key-file={workdir / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            # No token controller runs here: pods get no service-account token (the chart mounts none anyway).
            "--disable-admission-plugins=ServiceAccount"], log=workdir / "kube-apiserver.log")
        children.append(apiserver)
        apiserver.wait_until(_safely(api.healthy), START_TIMEOUT_S, "health")
        cm_log = workdir / "kube-controller-manager.log"
        manager = spawn("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"), f"--kubeconfig={kubeconfig}", "--leader-elect=false",
            "--port=0", "--secure-port=0",
            *(["--controllers=*", f"--flex-volume-plugin-dir={workdir / 'flexvolume'}"] if real_node else
              ["--controllers=deployment,replicaset,garbagecollector,namespace,disruption,horizontalpodautoscaling"]),
            "--horizontal-pod-autoscaler-sync-period=1s", "--concurrent-deployment-syncs=2"], log=cm_log)
        children.append(manager)
        manager.wait_until(lambda: 'Started "deployment"' in cm_log.read_text(), START_TIMEOUT_S,
                           "its deployment controller")
        if readiness:
            readiness.start()
        yield Cluster(kubeconfig=kubeconfig, api=api)
    finally:
        if readiness:
            readiness.stop()
        for child in reversed(children):
            child.stop()


# -- `tools deploy` as a user runs it, against a test cluster -------------------------------------------------
CLI_TIMEOUT_S = 180.0


def environment(cluster: Cluster, kubeconfig: Path | None = None, **extra: str) -> dict[str, str]:
    """The CLI's environment: this cluster, the project's helm, no HELM_NAMESPACE unless the test gives one."""
    env = {key: value for key, value in os.environ.items() if key != settings.NAMESPACE_ENV}
    return {**env, "KUBECONFIG": str(kubeconfig or cluster.kubeconfig), settings.HELM_ENV: str(settings.HELM_BINARY),
            "COLUMNS": "200", **extra}


def tools_deploy(cluster: Cluster, verb: str, *args: str, namespace: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m tools deploy VERB [--namespace NS] ARGS` as a child process."""
    flags = ["--namespace", namespace] if namespace else []
    return processes.run("tools deploy", [sys.executable, "-m", "tools", "deploy", verb, *flags, *args],
                         env=env or environment(cluster), cwd=paths.PROJECT_ROOT, timeout=CLI_TIMEOUT_S)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout + result.stderr


def data(result: subprocess.CompletedProcess) -> str:
    """What a successful command printed on stdout (its data; progress went to stderr)."""
    ok(result)
    return result.stdout


def refused(result: subprocess.CompletedProcess) -> str:
    """The one `error: ...` line of a failure (exit 1), which ends stderr; no traceback, no second error."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and lines[-1].startswith("error: "), result.stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
    return lines[-1]


def wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
