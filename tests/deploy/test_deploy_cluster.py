"""`tools deploy` against a real Kubernetes 1.20 API server and controller-manager on loopback.

Real: etcd, kube-apiserver, kube-controller-manager (Deployment, ReplicaSet, HPA, disruption, garbage-collector,
namespace controllers), helm v3.19 driven through pyhelm3 by the `tools deploy` command run as a child process.
Test double: no kubelet can run here, so `PodReadiness` (tests/support/cluster.py) marks pods Ready; pods of the
image tag `never-ready` stay unready, standing in for a broken image. No container or probe runs.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
from pathlib import Path

import pytest

from tests.support import paths
from tests.support.cluster import (
    BUILD_TIMEOUT_S,
    CLI_TIMEOUT_S,
    NEVER_READY_TAG,
    Cluster,
    data,
    environment,
    ok,
    refused,
    tools_deploy,
    wait_for,
    write_kubeconfig,
)
from tests.support.helm import render
from tools import processes, settings
from tools.deploy import helm as deploy

# Whichever test runs first sets up the session's cluster, and on a new machine that includes the build.
# Every step inside a test has its own, much shorter timeout (helm --timeout, CLI and wait_for limits).
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 300)

DEPLOYMENT = settings.DEFAULT_RELEASE  # the release name equals the chart name, so objects carry it alone
FAST = ("--timeout", "60s", "--set", "deployment.minReadySeconds=1")


def target(cluster: Cluster, namespace: str) -> deploy.Target:
    return deploy.Target(namespace=namespace, kubeconfig=cluster.kubeconfig, helm=settings.HELM_BINARY)


def images(cluster: Cluster, namespace: str) -> list[str]:
    return [p["spec"]["containers"][0]["image"] for p in cluster.api.ready_pods(namespace)]


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

    # Install (under helm's own verb; `upgrade` does the same).
    installed = ok(tools_deploy(cluster, "install", *FAST, "--create-namespace", "--set", "image.tag=v1",
                                namespace=ns))
    assert f"in namespace {ns}: revision 1" in " ".join(installed.split())
    assert images(cluster, ns) == ["triton-embeddings:v1"] * 2
    deployment = api.deployment(ns, DEPLOYMENT)
    assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/model-repository"] == \
        deploy.repository_checksum(paths.REPOSITORY)
    # 1.20 serves no policy/v1: the chart picked policy/v1beta1 from the cluster's capabilities.
    assert api.exists(f"/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets/{DEPLOYMENT}")
    assert api.exists(f"/api/v1/namespaces/{ns}/secrets/{DEPLOYMENT}-control-key")
    for service in ("", "-metrics", "-grpc-headless"):
        assert api.exists(f"/api/v1/namespaces/{ns}/services/{DEPLOYMENT}{service}")

    # `install` refuses a release that exists, as helm's does; nothing changes.
    again = refused(tools_deploy(cluster, "install", *FAST, "--set", "image.tag=v9", namespace=ns))
    assert f"release 'triton-embeddings' already exists in namespace '{ns}' (revision 1)" in again
    assert images(cluster, ns) == ["triton-embeddings:v1"] * 2

    # Rolling upgrade: a new ReplicaSet comes up, the old one is scaled to zero, ready pods never drop below 2.
    with ReadyPodSampler(cluster, ns) as sampler:
        assert "revision 2" in ok(tools_deploy(cluster, "upgrade", *FAST, "--set", "image.tag=v2", namespace=ns))
        wait_for(lambda: rollout_done(cluster, ns, "triton-embeddings:v2"), "the old ReplicaSet to scale down")
    assert min(sampler.counts) >= 2, sampler.counts
    assert len(api.replica_sets(ns)) == 2

    # A failing upgrade (pods never ready) is rolled back automatically (helm --atomic).
    failed = refused(tools_deploy(cluster, "upgrade", "--timeout", "15s", "--set", f"image.tag={NEVER_READY_TAG}",
                                  namespace=ns))
    assert "rolled back" in failed
    wait_for(lambda: rollout_done(cluster, ns, "triton-embeddings:v2"), "the broken ReplicaSet to go")
    assert api.deployment(ns, DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "triton-embeddings:v2"

    history = json.loads(data(tools_deploy(cluster, "history", "-o", "json", namespace=ns)))
    assert [(r["revision"], r["status"]) for r in history] == [
        (1, "superseded"), (2, "superseded"), (3, "failed"), (4, "deployed")]
    assert history[-1]["description"] == "Rollback to 2" and {r["namespace"] for r in history} == {ns}

    # Explicit rollback to a revision; history and status as tables and as JSON.
    assert "now revision 5" in ok(tools_deploy(cluster, "rollback", "1", "--timeout", "60s", namespace=ns))
    wait_for(lambda: rollout_done(cluster, ns, "triton-embeddings:v1"), "the rollback to v1")
    rows = data(tools_deploy(cluster, "history", namespace=ns)).splitlines()
    assert rows[0].split() == ["REVISION", "STATUS", "UPDATED", "DESCRIPTION"] and len(rows) == 6
    assert rows[-1].split()[:2] == ["5", "deployed"] and rows[-1].endswith("Rollback to 1")
    assert "revision 5 deployed" in ok(tools_deploy(cluster, "status", namespace=ns))
    current = json.loads(data(tools_deploy(cluster, "status", "--output", "json", namespace=ns)))
    assert (current["revision"], current["status"], current["namespace"]) == (5, "deployed", ns)

    # Rollback without a revision: to the previous one (4, itself the rollback to 2's image v2).
    assert "now revision 6" in ok(tools_deploy(cluster, "rollback", "--timeout", "60s", namespace=ns))
    assert deploy.history(target(cluster, ns))[-1].description == "Rollback to 4"
    wait_for(lambda: rollout_done(cluster, ns, "triton-embeddings:v2"), "the rollback to the previous revision")

    # Uninstall removes the objects; the release is then gone.
    ok(tools_deploy(cluster, "uninstall", namespace=ns))
    assert not api.exists(f"/apis/apps/v1/namespaces/{ns}/deployments/{DEPLOYMENT}")
    assert "not found" in refused(tools_deploy(cluster, "status", namespace=ns))


def test_autoscaling_uses_the_api_versions_the_cluster_serves(cluster):
    ns, api = "autoscale", cluster.api
    ok(tools_deploy(cluster, "upgrade", *FAST, "--create-namespace", "--set", "autoscaling.enabled=true",
                    "--set", "autoscaling.minReplicas=3", namespace=ns))
    # 1.20 serves autoscaling/v2beta2, not v2; the HPA controller enforces minReplicas on the Deployment.
    hpa = api.get(f"/apis/autoscaling/v2beta2/namespaces/{ns}/horizontalpodautoscalers/{DEPLOYMENT}")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "triton_queue_time_per_request_us"
    wait_for(lambda: api.deployment(ns, DEPLOYMENT)["status"].get("readyReplicas") == 3,
             "the HPA to scale the Deployment to minReplicas")
    rules = api.get(f"/api/v1/namespaces/{ns}/configmaps/{DEPLOYMENT}-prometheus-adapter")["data"]["config.yaml"]
    assert f'namespace="{ns}"' in rules
    ok(tools_deploy(cluster, "uninstall", namespace=ns))


def diff_to_file(cluster: Cluster, namespace: str, plan: Path, *args: str) -> str:
    """`python -m tools deploy diff ... > plan`: stdout is a file, as in a shell; returns stderr."""
    errors = plan.with_suffix(".stderr")
    with plan.open("w") as stdout, errors.open("w") as stderr:
        child = processes.spawn("tools deploy diff", [sys.executable, "-m", "tools", "deploy", "diff", "--namespace",
                                                      namespace, *args],
                                stdout=stdout, stderr=stderr, env=environment(cluster), cwd=paths.PROJECT_ROOT)
        try:
            assert child.wait(CLI_TIMEOUT_S) == 0, errors.read_text()
        finally:
            child.stop()
    return errors.read_text()


UNIFIED_DIFF_LINE = re.compile(r"(--- deployed |\+\+\+ planned |@@ -\d+(,\d+)? \+\d+(,\d+)? @@|[ +-])")


def test_bad_input_and_previews_change_nothing(cluster, tmp_path: Path):
    ns = "guarded"
    ok(tools_deploy(cluster, "upgrade", *FAST, "--create-namespace", "--set", "image.tag=v1", namespace=ns))

    bad_values = refused(tools_deploy(cluster, "upgrade", "--set", "autoscaling.engine=knative", namespace=ns))
    assert "/autoscaling/engine" in bad_values and "value must be one of" in bad_values

    broken = tmp_path / "repository" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('name: "broken"\nmax_batch_size: [\n')
    rejected = refused(tools_deploy(cluster, "upgrade", "--repository", str(broken.parent), namespace=ns))
    assert "has configuration errors (listed above); nothing was deployed" in rejected

    # Data on stdout, progress on stderr: the redirected file holds the unified diff and nothing else.
    plan = tmp_path / "plan.diff"
    progress = diff_to_file(cluster, ns, plan, "--set", "image.tag=v9")
    preview = plan.read_text()
    assert "-        image: triton-embeddings:v1\n" in preview and "+        image: triton-embeddings:v9\n" in preview
    assert [line for line in preview.splitlines() if not UNIFIED_DIFF_LINE.match(line)] == []
    assert preview.startswith("--- deployed Deployment/") and "would change" not in preview
    assert progress.strip().endswith(f"{preview.count('+++ ')} object(s) would change")
    # The control key is kept across upgrades (looked up), so its Secret is no part of the diff; never its value.
    key = cluster.api.get(f"/api/v1/namespaces/{ns}/secrets/{DEPLOYMENT}-control-key")["data"]["control-key"]
    assert "Secret/" not in preview and key not in preview
    assert "dry run ok" in ok(tools_deploy(cluster, "upgrade", "--dry-run", "--set", "image.tag=v9", namespace=ns))

    assert [r.revision for r in deploy.history(target(cluster, ns))] == [1]
    assert images(cluster, ns) == ["triton-embeddings:v1"] * 2
    ok(tools_deploy(cluster, "uninstall", namespace=ns))


@pytest.mark.parametrize("verb", ["status", "history", "rollback", "uninstall"])
def test_an_unknown_release_is_one_error_line_and_exit_1(cluster, verb):
    result = tools_deploy(cluster, verb, namespace="nowhere")
    assert refused(result) == "error: release 'triton-embeddings' not found in namespace 'nowhere'"
    assert result.stdout == ""


def test_diff_of_a_new_release_shows_every_object_and_no_secret_value(cluster, helm_binary):
    preview = ok(tools_deploy(cluster, "diff", namespace="fresh"))
    planned = set(re.findall(r"^\+\+\+ planned (\S+)$", preview, flags=re.MULTILINE))
    rendered = {f"{o['kind']}/{o['metadata']['name']}" for o in render(helm_binary, namespace="fresh",
                                                                       release=DEPLOYMENT)}
    assert planned == rendered and "Deployment/triton-embeddings" in planned
    assert preview.count("--- deployed ") == len(rendered)  # nothing is deployed: every object is new
    assert "+  control-key: (hidden)" in preview  # the Secret is there, its value is not
    assert "not found" in refused(tools_deploy(cluster, "status", namespace="fresh"))  # nothing was installed


def releases(cluster: Cluster, namespace: str) -> list[int]:
    """Revisions of the release in `namespace` (empty: none there), read with helm through the library."""
    try:
        return [r.revision for r in deploy.history(target(cluster, namespace))]
    except deploy.DeployError:
        return []


def test_namespace_is_the_flag_then_helm_namespace_then_the_kube_contexts(cluster, tmp_path: Path):
    """helm's order, each case in a namespace that does not exist yet: --create-namespace is needed for it."""
    api = cluster.api
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.server, api.token, namespace="from-context")
    cases = [  # (extra environment, --namespace flag, where the release must land)
        ({}, None, "from-context"),
        ({settings.NAMESPACE_ENV: "from-env"}, None, "from-env"),
        ({settings.NAMESPACE_ENV: "from-env"}, "from-flag", "from-flag"),
    ]
    for extra, flag, expected in cases:
        env = environment(cluster, kubeconfig, **extra)
        missing = refused(tools_deploy(cluster, "upgrade", *FAST, namespace=flag, env=env))
        assert missing == f"error: namespace {expected!r} does not exist (pass --create-namespace to create it)"
        assert not api.exists(f"/api/v1/namespaces/{expected}")

        done = ok(tools_deploy(cluster, "upgrade", *FAST, "--create-namespace", namespace=flag, env=env))
        assert f"in namespace {expected}: revision 1" in " ".join(done.split())
        assert api.exists(f"/apis/apps/v1/namespaces/{expected}/deployments/{DEPLOYMENT}")
        status = json.loads(data(tools_deploy(cluster, "status", "-o", "json", namespace=flag, env=env)))
        assert (status["namespace"], status["revision"]) == (expected, 1)
    # Three installs, not an install and two upgrades: each case reached its own namespace and no other.
    assert {ns: releases(cluster, ns) for ns in ("from-context", "from-env", "from-flag", "default")} == {
        "from-context": [1], "from-env": [1], "from-flag": [1], "default": []}
    for extra, flag, _ in cases:
        ok(tools_deploy(cluster, "uninstall", namespace=flag, env=environment(cluster, kubeconfig, **extra)))


def test_gpu_on_spot_profile_installs_and_the_api_server_accepts_it(cluster, tmp_path: Path):
    """The example GPU and spot values with a GPU repository, through `tools deploy --target gpu`: the API server
    validates the GPU requests and limits, creates the PriorityClass, and its Priority admission gives the pods the
    class's value. No scheduler or GPU runs here: where the pods would land is asserted on their spec only."""
    repository = tmp_path / "gpu_repository"
    shutil.copytree(paths.PROJECT_ROOT / settings.MODEL_REPOSITORY, repository,
                    ignore=shutil.ignore_patterns("__pycache__"))
    config = repository / settings.ENCODER_MODEL / "config.pbtxt"
    config.write_text(config.read_text().replace("kind: KIND_CPU", "kind: KIND_GPU"))
    examples = paths.CHART / "examples"
    ns, api = "gpu-spot", cluster.api
    ok(tools_deploy(cluster, "upgrade", *FAST, "--create-namespace", "--target", "gpu", "--repository",
                    str(repository), "-f", str(examples / "gpu.yaml"), "-f", str(examples / "spot.yaml"),
                    "--set", "monitoring.scrape=none,monitoring.grafanaDashboards.enabled=false", namespace=ns))
    priority = api.get("/apis/scheduling.k8s.io/v1/priorityclasses/triton-embeddings-serving")
    pods = wait_for(lambda: api.ready_pods(ns), "ready pods")
    for pod in pods:
        spec = pod["spec"]
        assert spec["priority"] == priority["value"] == 100000, "the Priority admission resolved the class"
        limits = spec["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == spec["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"
        assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
        assert {t["key"] for t in spec["tolerations"]} >= {"nvidia.com/gpu", "cloud.google.com/gke-spot"}
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in spec["affinity"]["nodeAffinity"]
        assert spec["terminationGracePeriodSeconds"] == 14
    ok(tools_deploy(cluster, "uninstall", namespace=ns))
    assert not api.exists("/apis/scheduling.k8s.io/v1/priorityclasses/triton-embeddings-serving")
