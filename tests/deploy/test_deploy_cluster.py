"""`tools deploy` against a real Kubernetes 1.20 API server and controller-manager on loopback.

Real: etcd, kube-apiserver, kube-controller-manager (Deployment, ReplicaSet, HPA, disruption, garbage-collector
controllers), helm v3.19 driven through pyhelm3 by the `tools deploy` command. Test double: no kubelet can run
here, so `PodReadiness` (tests/deploy/cluster.py) marks pods Ready; pods of the image tag `never-ready` stay
unready, standing in for a broken image. No container or probe runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import paths
from tests.support.cluster import BUILD_TIMEOUT_S, NEVER_READY_TAG, Cluster
from tools import settings
from tools.deploy import helm as deploy

# Whichever test runs first sets up the session's cluster, and on a new machine that includes the build.
# Every step inside a test has its own, much shorter timeout (helm --timeout, subprocess and wait_for limits).
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 300)

DEPLOYMENT = settings.DEFAULT_RELEASE  # the release name equals the chart name, so objects carry it alone


def tools_deploy(cluster: Cluster, namespace: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), settings.HELM_ENV: str(settings.HELM_BINARY),
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "tools", "deploy", "--namespace", namespace, *args],
                          capture_output=True, text=True, env=env, cwd=paths.PROJECT_ROOT, timeout=180)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout + result.stderr


def refused(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return " ".join((result.stdout + result.stderr).split())  # rich wraps long lines


def target(cluster: Cluster, namespace: str) -> deploy.Target:
    return deploy.Target(namespace=namespace, kubeconfig=cluster.kubeconfig, helm=settings.HELM_BINARY)


def images(cluster: Cluster, namespace: str) -> list[str]:
    return [p["spec"]["containers"][0]["image"] for p in cluster.api.ready_pods(namespace)]


def wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def rollout_done(cluster: Cluster, namespace: str, image: str) -> bool:
    """Only the ReplicaSet of `image` has pods left, all of them ready."""
    sets = cluster.api.replica_sets(namespace)
    live = [rs for rs in sets if rs["spec"]["replicas"] or rs["status"].get("replicas")]
    return len(live) == 1 and live[0]["spec"]["template"]["spec"]["containers"][0]["image"] == image and \
        live[0]["status"].get("readyReplicas") == live[0]["spec"]["replicas"]


class ReadyPodSampler:
    """Counts ready pods while a rollout runs, to check capacity never dipped (maxUnavailable: 0)."""

    def __init__(self, cluster: Cluster, namespace: str):
        self.cluster, self.namespace, self.counts = cluster, namespace, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.counts.append(len(self.cluster.api.ready_pods(self.namespace)))

    def __enter__(self) -> ReadyPodSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_install_upgrade_failed_upgrade_rollback_history_uninstall(cluster):
    ns, api = "lifecycle", cluster.api
    base = ("--timeout", "60s", "--set", "deployment.minReadySeconds=1")

    # Install.
    assert "revision 1" in ok(tools_deploy(cluster, ns, *base, "--set", "image.tag=v1"))
    assert images(cluster, ns) == ["triton-embeddings:v1"] * 2
    deployment = api.deployment(ns, DEPLOYMENT)
    assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/model-repository"] == \
        deploy.repository_checksum(paths.REPOSITORY)
    # 1.20 serves no policy/v1: the chart picked policy/v1beta1 from the cluster's capabilities.
    assert api.exists(f"/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets/{DEPLOYMENT}")
    assert api.exists(f"/api/v1/namespaces/{ns}/secrets/{DEPLOYMENT}-control-key")
    for service in ("", "-metrics", "-grpc-headless"):
        assert api.exists(f"/api/v1/namespaces/{ns}/services/{DEPLOYMENT}{service}")

    # Rolling upgrade: a new ReplicaSet comes up, the old one is scaled to zero, ready pods never drop below 2.
    with ReadyPodSampler(cluster, ns) as sampler:
        assert "revision 2" in ok(tools_deploy(cluster, ns, *base, "--set", "image.tag=v2"))
        wait_for(lambda: rollout_done(cluster, ns, "triton-embeddings:v2"), "the old ReplicaSet to scale down")
    assert min(sampler.counts) >= 2, sampler.counts
    assert len(api.replica_sets(ns)) == 2

    # A failing upgrade (pods never ready) is rolled back automatically (helm --atomic).
    failed = refused(tools_deploy(cluster, ns, "--timeout", "15s", "--set", f"image.tag={NEVER_READY_TAG}"))
    assert "rolled back" in failed
    wait_for(lambda: rollout_done(cluster, ns, "triton-embeddings:v2"), "the broken ReplicaSet to go")
    assert api.deployment(ns, DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "triton-embeddings:v2"

    history = deploy.history(target(cluster, ns))
    assert [r.status for r in history] == ["superseded", "superseded", "failed", "deployed"]
    assert history[-1].description == "Rollback to 2"

    # Explicit rollback to a revision; history and status through the CLI.
    assert "now revision 5" in ok(tools_deploy(cluster, ns, "--timeout", "60s", "--rollback", "1"))
    wait_for(lambda: rollout_done(cluster, ns, "triton-embeddings:v1"), "the rollback to v1")
    listed = ok(tools_deploy(cluster, ns, "--history"))
    assert "Rollback to 1" in listed and listed.count("\n") >= 5
    assert "revision 5 deployed" in ok(tools_deploy(cluster, ns, "--status"))
    assert "now revision 6" in ok(tools_deploy(cluster, ns, "--timeout", "60s", "--rollback"))
    assert deploy.history(target(cluster, ns))[-1].description == "Rollback to 4"  # the previous revision
    wait_for(lambda: rollout_done(cluster, ns, "triton-embeddings:v2"), "the rollback to the previous revision")

    # Uninstall removes the objects; the release is then gone.
    ok(tools_deploy(cluster, ns, "--uninstall"))
    assert not api.exists(f"/apis/apps/v1/namespaces/{ns}/deployments/{DEPLOYMENT}")
    assert "not found" in refused(tools_deploy(cluster, ns, "--status"))


def test_autoscaling_uses_the_api_versions_the_cluster_serves(cluster):
    ns, api = "autoscale", cluster.api
    ok(tools_deploy(cluster, ns, "--timeout", "60s", "--set", "autoscaling.enabled=true",
                    "--set", "autoscaling.minReplicas=3", "--set", "deployment.minReadySeconds=1"))
    # 1.20 serves autoscaling/v2beta2, not v2; the HPA controller enforces minReplicas on the Deployment.
    hpa = api.get(f"/apis/autoscaling/v2beta2/namespaces/{ns}/horizontalpodautoscalers/{DEPLOYMENT}")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "triton_queue_time_per_request_us"
    wait_for(lambda: api.deployment(ns, DEPLOYMENT)["status"].get("readyReplicas") == 3,
             "the HPA to scale the Deployment to minReplicas")
    rules = api.get(f"/api/v1/namespaces/{ns}/configmaps/{DEPLOYMENT}-prometheus-adapter")["data"]["config.yaml"]
    assert f'namespace="{ns}"' in rules
    ok(tools_deploy(cluster, ns, "--uninstall"))


def test_bad_input_and_previews_change_nothing(cluster, tmp_path: Path):
    ns = "guarded"
    ok(tools_deploy(cluster, ns, "--timeout", "60s", "--set", "image.tag=v1"))

    bad_values = refused(tools_deploy(cluster, ns, "--set", "autoscaling.engine=knative"))
    assert "/autoscaling/engine" in bad_values and "value must be one of" in bad_values

    broken = tmp_path / "repository" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('name: "broken"\nmax_batch_size: [\n')
    assert "tools validate rejected" in refused(tools_deploy(cluster, ns, "--repository", str(broken.parent)))

    preview = ok(tools_deploy(cluster, ns, "--diff", "--set", "image.tag=v9"))
    assert "-        image: triton-embeddings:v1" in preview and "+        image: triton-embeddings:v9" in preview
    # The control key is kept across upgrades (looked up), so its Secret is no part of the diff; never its value.
    key = cluster.api.get(f"/api/v1/namespaces/{ns}/secrets/{DEPLOYMENT}-control-key")["data"]["control-key"]
    assert "Secret/" not in preview and key not in preview
    assert "dry run ok" in ok(tools_deploy(cluster, ns, "--dry-run", "--set", "image.tag=v9"))

    assert [r.revision for r in deploy.history(target(cluster, ns))] == [1]
    assert images(cluster, ns) == ["triton-embeddings:v1"] * 2
    ok(tools_deploy(cluster, ns, "--uninstall"))


@pytest.mark.parametrize("action", ["--status", "--history"])
def test_unknown_release_is_a_clear_error(cluster, action):
    assert "release 'triton-embeddings' not found" in refused(tools_deploy(cluster, "nowhere", action))


def test_diff_of_a_new_release_shows_everything_but_secrets(cluster):
    preview = ok(tools_deploy(cluster, "fresh", "--diff"))
    assert "+++ planned Deployment/triton-embeddings" in preview and "--- deployed Deployment" in preview
    assert "+  control-key: (hidden)" in preview
    assert "not found" in refused(tools_deploy(cluster, "fresh", "--status"))  # nothing was installed
