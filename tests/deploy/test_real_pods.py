"""The chart on a real single-node Kubernetes 1.20, with the project's own image: `tools deploy` installs it, the
chart's probes gate the pods, `embed` answers through the ClusterIP Service, and a rolling upgrade, a failed upgrade,
an eviction and a dead stub happen under Locust traffic that counts what was lost.

Real: etcd, kube-apiserver, kube-controller-manager (every controller), kube-scheduler, kubelet, kube-proxy
(iptables), containerd + runc, the bridge CNI plugin (tests/support/node.py); the image (tests/support/image.py),
helm through `tools deploy`, Locust through `tools.loadtest`. No test double.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.support import image, paths
from tests.support.cluster import BUILD_TIMEOUT_S, Cluster, ok, running_cluster, tools_deploy, wait_for
from tests.support.node import HostState, Node, running_node
from tests.support.timeline import Timeline, served
from tools import settings
from tools.loadtest import runner
from tools.processes import http_ok
from tools.serving import client
from tools.settings import Protocol

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 900)

NAMESPACE = "serving"
RELEASE = settings.DEFAULT_RELEASE
VALUES = paths.CHART / "examples" / "single-node.yaml"
UPGRADE_TIMEOUT = "240s"
# Requests/s each protocol's Locust users send through the Service during an operation: steady traffic that leaves
# the node's two cores room to start pods.
RATE = 20.0
# Tokens of the generation in flight during the eviction: 4-10 s here under the tier's load, longer than the preStop
# delay (3 s) and shorter than the drain (3 + maxRequestSeconds 15 s), after which Triton cuts what is still running.
GENERATED_TOKENS = 300
# A folder for the timelines (PNG + JSON; the README's figure comes from such a run); unset: the test's own tmp folder.
ARTIFACTS_ENV = "TRITON_TOOLKIT_ARTIFACTS"


@dataclass
class RealCluster:
    cluster: Cluster
    node: Node
    image: image.LocalImage
    workdir: Path

    def deploy(self, built: image.LocalImage, repository: Path, timeout: str = UPGRADE_TIMEOUT):
        """`tools deploy upgrade` (install or upgrade; helm waits, and rolls back what never gets ready)."""
        return tools_deploy(self.cluster, "upgrade", "--create-namespace", "--timeout", timeout, "-f", str(VALUES),
                            "--set", f"image.repository={built.repository}", "--set", f"image.tag={built.tag}",
                            "--repository", str(repository), namespace=NAMESPACE)

    def service_ip(self) -> str:
        return self.cluster.api.get(f"/api/v1/namespaces/{NAMESPACE}/services/{RELEASE}")["spec"]["clusterIP"]

    def url(self, protocol: Protocol) -> str:
        port = settings.DEFAULT_GRPC_PORT if protocol == Protocol.GRPC else settings.DEFAULT_HTTP_PORT
        return f"{self.service_ip()}:{port}"

    def live_pods(self) -> list[dict]:
        return [p for p in self.cluster.api.pods(NAMESPACE) if not p["metadata"].get("deletionTimestamp")]

    def add_image(self, repository: Path) -> image.LocalImage:
        """The image of `repository`, built and imported into the node (its 850 MB archive then deleted)."""
        built = image.build_image(self.workdir / "images", repository)
        image.import_images(self.node.containerd, [built])
        built.archive.unlink()
        return built


def repository_copy(tmp: Path, name: str) -> Path:
    target = tmp / name
    shutil.copytree(paths.REPOSITORY, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture(scope="module")
def real(kube_binaries: None, helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    """A node with the project's image imported, and the chart installed on it from the shipped repository."""
    workdir = Path(tmp_path_factory.mktemp("real-node"))
    built, pause = image.build_image(workdir / "images", paths.REPOSITORY), image.pause_image()
    host = HostState.record()
    with running_cluster(workdir, real_node=True) as cluster, \
            running_node(cluster, pause.reference, lambda socket: image.import_images(socket, [pause, built])) as node:
        built.archive.unlink()
        started = time.monotonic()
        real = RealCluster(cluster, node, built, workdir)
        ok(real.deploy(built, paths.REPOSITORY))
        print(f"installed and Ready in {time.monotonic() - started:.1f} s")
        yield real
    # The node's teardown left the host as it found it.
    assert host.differences(HostState.record()) == []


def test_install_runs_ready_pods_that_answer_through_the_service(real: RealCluster):
    pods = real.live_pods()
    assert len(pods) == 2
    for pod in pods:
        status = pod["status"]
        assert status["phase"] == "Running"
        container = status["containerStatuses"][0]
        assert container["ready"] and container["started"] and container["restartCount"] == 0, container
        assert container["image"].endswith(real.image.reference)
    texts = ["how do I reset my password", "Triton serves models on Kubernetes"]
    answers = {protocol: client.embed_texts(texts, protocol, real.url(protocol)) for protocol in Protocol}
    for vectors in answers.values():
        assert vectors.shape == (2, 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(answers[Protocol.HTTP], answers[Protocol.GRPC], atol=1e-5)
    # Both pods answer: the Service spreads new connections over them (once kube-proxy has both endpoints, a moment
    # after helm saw the pods ready).
    before = {pod["metadata"]["name"]: served(pod["status"]["podIP"], settings.EMBED_MODEL) for pod in pods}

    def both_served() -> bool:
        client.embed_texts(texts[:1], Protocol.HTTP, real.url(Protocol.HTTP))
        return all(served(pod["status"]["podIP"], settings.EMBED_MODEL) > before[pod["metadata"]["name"]]
                   for pod in pods)

    wait_for(both_served, "requests through the Service to reach both pods", 30)


@contextlib.contextmanager
def traffic(real: RealCluster, out: Path) -> Iterator[dict[Protocol, runner.LoadTestResult]]:
    """Locust over HTTP and over gRPC through the Service, at RATE requests/s each, from entering to leaving."""
    results: dict[Protocol, runner.LoadTestResult] = {}
    done = threading.Event()
    errors: list[BaseException] = []

    def load(protocol: Protocol) -> None:
        config = runner.LoadTestConfig(url=real.url(protocol), protocol=protocol, users=4, duration_s=600,
                                       shape=runner.Shape.RATE, request_rate=RATE)
        try:
            results[protocol] = runner.run(config, out / protocol.value, until=done)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(protocol,)) for protocol in Protocol]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all((out / p.value / "locust_stats_history.csv").exists() for p in Protocol) or errors,
                 "Locust to start", 60)
        time.sleep(1)  # traffic flowing before the operation starts
        yield results
    finally:
        done.set()
        for thread in threads:
            thread.join(60)
    if errors:
        raise errors[0]


def lost(results: dict[Protocol, runner.LoadTestResult]) -> dict[str, int]:
    return {protocol.value: result.client.failures + result.client.refused for protocol, result in results.items()}


def report(what: str, results: dict[Protocol, runner.LoadTestResult]) -> None:
    print(f"{what}: " + "; ".join(f"{p}: {r.client.requests} requests, {r.client.failures} failed, "
                                  f"{r.client.refused} refused, {r.client.resent} resent" for p, r in results.items()))


def record(timeline: Timeline, name: str, title: str, tmp: Path) -> Path:
    target = Path(os.environ.get(ARTIFACTS_ENV) or tmp) / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    timeline.save(target.with_suffix(".json"))
    return timeline.plot(target, title)


def stopped(real: RealCluster, names: set[str]) -> bool:
    """The pods are gone or their server has exited: its metrics port no longer answers (the HTTP port refuses new
    connections from SIGTERM on, while it still serves the open ones; the 1.20 kubelet leaves a stopped pod's
    object Terminating for up to a minute)."""
    return not any(http_ok(f"http://{pod['status']['podIP']}:{settings.DEFAULT_METRICS_PORT}/metrics", 1.0)
                   for pod in real.cluster.api.pods(NAMESPACE)
                   if pod["metadata"]["name"] in names and pod["status"].get("podIP"))


@pytest.mark.parametrize("change", ["model-version", "instance-count"])
def test_rolling_upgrade_under_load_loses_no_request(real: RealCluster, tmp_path: Path, change: str):
    repository = repository_copy(tmp_path, "repository")
    config = repository / "encoder" / "config.pbtxt"
    if change == "model-version":
        # Version 3 of the encoder (a copy of 2), served beside 1 and 2; the ensemble takes the newest.
        shutil.copytree(repository / "encoder" / "2", repository / "encoder" / "3")
        config.write_text(config.read_text().replace("versions: [ 1, 2 ]", "versions: [ 1, 2, 3 ]"))
    else:
        config.write_text(config.read_text().replace("count: 2", "count: 1"))
    built = real.add_image(repository)
    assert built.reference != real.image.reference
    old = {p["metadata"]["name"] for p in real.live_pods()}
    with Timeline(real.cluster.api, NAMESPACE) as timeline, traffic(real, tmp_path / "load") as results:
        timeline.mark("upgrade")
        started = time.monotonic()
        ok(real.deploy(built, repository))
        upgrade_s = time.monotonic() - started
        timeline.mark("helm done")
        wait_for(lambda: stopped(real, old), "the old pods to stop", 120)
        timeline.mark("old pods stopped")
    plot = record(timeline, f"rolling-upgrade-{change}", f"helm upgrade ({change}) under Locust: "
                  f"{sum(r.client.requests for r in results.values())} requests, {sum(lost(results).values())} lost",
                  tmp_path)
    assert plot.stat().st_size > 10_000
    report(f"{change}: helm upgrade {upgrade_s:.1f} s", results)
    assert lost(results) == {"http": 0, "grpc": 0}, {p: r.client.errors for p, r in results.items()}
    assert all(r.client.requests > RATE * 10 for r in results.values())
    new = real.live_pods()
    assert len(new) == 2 and not old & {p["metadata"]["name"] for p in new}
    assert all(p["spec"]["containers"][0]["image"].endswith(built.reference) for p in new)
    # Capacity never dropped: from the upgrade's start, at least two pods were ready at every sample.
    assert min(timeline.ready_counts(after=timeline.marks[0][0])) >= 2
    # The new pods served traffic.
    served = timeline.requests_by_pod()
    assert all(served.get(p["metadata"]["name"], 0) > 0 for p in new), served
    url = real.url(Protocol.HTTP)
    connection = client.connect(Protocol.HTTP, url)
    try:
        if change == "model-version":
            assert connection.is_model_ready("encoder", "3")
        else:
            assert connection.get_model_config("encoder")["instance_group"][0]["count"] == 1
    finally:
        connection.close()
    real.image = built


def test_an_upgrade_that_never_gets_ready_is_rolled_back_without_losing_a_request(real: RealCluster,
                                                                                 tmp_path: Path):
    repository = repository_copy(tmp_path, "broken")
    # A model whose code fails as Triton loads it: with --exit-on-error the server exits, the pod never gets ready.
    model = repository / "tokenizer" / "1" / "model.py"
    model.write_text(model.read_text() + "\nraise RuntimeError('broken on purpose')\n")
    built = real.add_image(repository)
    old = {p["metadata"]["name"]: p["metadata"]["uid"] for p in real.live_pods()}
    with Timeline(real.cluster.api, NAMESPACE) as timeline, traffic(real, tmp_path / "load") as results:
        timeline.mark("upgrade")
        result = real.deploy(built, repository, timeout="30s")
        timeline.mark("rolled back")
        wait_for(lambda: len(real.live_pods()) == 2, "the failed pod to go", 90)
    record(timeline, "failed-upgrade-rollback", "an upgrade that never gets ready, rolled back by helm", tmp_path)
    report("failed upgrade", results)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert lost(results) == {"http": 0, "grpc": 0}, {p: r.client.errors for p, r in results.items()}
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in real.live_pods()} == old
    assert all(p["status"]["containerStatuses"][0]["restartCount"] == 0 for p in real.live_pods())


def test_an_eviction_drains_in_flight_requests_and_the_budget_holds(real: RealCluster, tmp_path: Path):
    pods = real.live_pods()
    victim, other = pods
    # A long generation straight to the victim pod: the eviction comes at its first token, and it must still be
    # running when SIGTERM follows the preStop delay, yet end within the drain (maxRequestSeconds).
    stream_url = f"{victim['status']['podIP']}:{settings.DEFAULT_GRPC_PORT}"
    generated: dict[str, object] = {}
    first_token = threading.Event()

    def generate() -> None:
        connection = client.connect(Protocol.GRPC, stream_url)
        stream = client.GrpcStream(connection)
        try:
            arrays = {"text_input": np.array([b"Write a long story about a lighthouse keeper."], dtype=np.object_)}
            pieces = []
            for piece in stream.request("generate", arrays, parameters={
                    "stream": True, "max_tokens": GENERATED_TOKENS, "ignore_eos": True, "temperature": 0.0}):
                pieces.append(piece)
                first_token.set()
            generated["pieces"], generated["ended"] = pieces, time.monotonic()
        except Exception as exc:
            generated["error"] = exc
        finally:
            first_token.set()
            stream.close()
            connection.close()

    evict = f"/api/v1/namespaces/{NAMESPACE}/pods/{{}}/eviction"
    with Timeline(real.cluster.api, NAMESPACE) as timeline, traffic(real, tmp_path / "load") as results:
        streamer = threading.Thread(target=generate)
        streamer.start()
        assert first_token.wait(60), "no token from the victim pod"
        evicted = time.monotonic()
        timeline.mark("evict")
        body = {"apiVersion": "policy/v1beta1", "kind": "Eviction"}
        real.cluster.api.request("POST", evict.format(victim["metadata"]["name"]),
                                 {**body, "metadata": {"name": victim["metadata"]["name"], "namespace": NAMESPACE}})
        # The budget (maxUnavailable 1) refuses a second eviction while the first pod is gone.
        with pytest.raises(urllib.error.HTTPError) as refused:
            real.cluster.api.request("POST", evict.format(other["metadata"]["name"]),
                                     {**body, "metadata": {"name": other["metadata"]["name"], "namespace": NAMESPACE}})
        streamer.join(120)
        wait_for(lambda: stopped(real, {victim["metadata"]["name"]}) and len(
            [p for p in real.live_pods() if p["status"].get("containerStatuses", [{}])[0].get("ready")]) == 2,
            "the evicted pod's replacement", 180)
        timeline.mark("replaced")
    record(timeline, "eviction-drain", "an eviction under load: preStop, SIGTERM, in-flight requests drained",
           tmp_path)
    report("eviction", results)
    assert refused.value.code == 429, refused.value
    assert "error" not in generated, generated.get("error")
    pieces = generated["pieces"]
    assert pieces[-1].final and pieces[-1].outputs.get("finish_reason") in ("length", b"length"), pieces[-1]
    assert pieces[-1].outputs["completion_tokens"] == GENERATED_TOKENS
    prestop = yaml.safe_load(VALUES.read_text())["deployment"]["preStopDelaySeconds"]
    print(f"eviction: the generation ended {generated['ended'] - evicted:.1f} s after the eviction "
          f"(SIGTERM at {prestop} s)")
    assert generated["ended"] - evicted > prestop, "the generation ended before SIGTERM: it proved no drain"
    assert lost(results) == {"http": 0, "grpc": 0}, {p: r.client.errors for p, r in results.items()}


def stub_pids(pod_uid: str) -> list[int]:
    """The pod's Python-backend stub processes, seen from the host (a container's processes are the host's)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if b"triton_python_backend_stub" in (proc / "cmdline").read_bytes() and \
                        pod_uid.replace("-", "_") in (proc / "cgroup").read_text().replace("-", "_"):
                    pids.append(int(proc.name))
    return pids


def test_a_dead_stub_takes_the_pod_out_of_the_service_and_liveness_restarts_it(real: RealCluster, tmp_path: Path):
    victim = real.live_pods()[0]
    name, uid = victim["metadata"]["name"], victim["metadata"]["uid"]
    stubs = stub_pids(uid)
    assert stubs, "no stub processes found for the pod"

    def pod() -> dict:
        return real.cluster.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")

    with Timeline(real.cluster.api, NAMESPACE) as timeline, traffic(real, tmp_path / "load") as results:
        timeline.mark("stub killed")
        os.kill(stubs[0], signal.SIGKILL)
        wait_for(lambda: not pod()["status"]["containerStatuses"][0]["ready"], "readiness to fail", 60)
        timeline.mark("unready")
        wait_for(lambda: pod()["status"]["containerStatuses"][0]["restartCount"] >= 1, "liveness to restart it", 120)
        timeline.mark("restarted")
        wait_for(lambda: pod()["status"]["containerStatuses"][0]["ready"], "the restarted pod to be ready", 180)
        timeline.mark("ready")
    record(timeline, "dead-stub", "a stub killed in a pod: readiness drops it, liveness restarts it", tmp_path)
    assert len(stub_pids(uid)) == len(stubs)
    # Requests the dead instance took before readiness dropped the pod fail (Triton 2.51 neither restarts the stub
    # nor stops routing to it): what was lost is reported, and bounded by the readiness period.
    report("dead stub", results)
    assert all(r.client.failures < r.client.requests / 4 for r in results.values())
