"""A real Kubernetes node on this machine for the real-pods tier: containerd + runc (Debian's), the kubelet (cgroupfs),
kube-scheduler and kube-proxy (iptables) 1.20.2 (built with the control plane by scripts/install-kubernetes.sh), and
the bridge CNI plugin, all started by the project's supervisor and joined to a `running_cluster(real_node=True)`.

What is cached across runs: containerd's root (under the toolkit cache), so an imported image stays imported; all
run state lives under STATE_DIR (fixed, so a run killed before its teardown is cleaned up by the next one).

The kubelet and kube-proxy change the host: sysctls, iptables chains, mounts, network namespaces, a bridge,
cgroups and a few fixed paths. `HostState` records them before the node starts and puts them back afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.cluster import KUBE_BIN_DIR, Cluster, is_ready
from tools import settings
from tools.errors import ProcessError
from tools.processes import Child, free_port, run, spawn

NODE_NAME = "triton-node"
STATE_DIR = Path("/run/triton-toolkit-node")
CONTAINERD_ROOT = settings.CACHE_DIR / "containerd-root"
POD_SUBNET = "10.244.0.0/24"
BRIDGE = "tkcni0"
CNI_BIN_DIR = Path("/usr/lib/cni")
START_TIMEOUT_S = 90.0
TEARDOWN_TIMEOUT_S = 60.0
# The kubelet (setupKernelTunables), kube-proxy (route_localnet) and the bridge plugin (ip_forward) write these.
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/conf/all/route_localnet",
           "net/ipv4/ip_forward")
# Fixed host paths the kubelet, containerd and the CNI plugins create whatever their flags say.
HOST_PATHS = (Path("/var/log/pods"), Path("/var/log/containers"), Path("/var/lib/kubelet"), Path("/var/lib/cni"),
              Path("/run/containerd"), Path("/run/netns"), Path("/var/run/netns"), Path("/usr/libexec/kubernetes"),
              Path("/etc/cni"), Path("/opt/cni"))
CGROUP_NAMES = ("kubepods", "k8s.io")
IPTABLES = ("iptables", "ip6tables")


def log(message: str) -> None:
    print(f"==> [node] {message}", file=sys.stderr, flush=True)


@dataclass
class Node:
    name: str
    containerd: Path
    """containerd's socket (for `ctr --address`)."""
    kubelet_log: Path


@dataclass
class HostState:
    """What the node changes on the host, as it was before: restored by `restore`, each part on its own."""

    sysctls: dict[str, str] = field(default_factory=dict)
    iptables: dict[str, str] = field(default_factory=dict)
    paths: set[Path] = field(default_factory=set)
    mounts: set[str] = field(default_factory=set)
    cgroups: set[Path] = field(default_factory=set)

    @classmethod
    def record(cls) -> HostState:
        return cls(
            sysctls={name: (Path("/proc/sys") / name).read_text().strip() for name in SYSCTLS},
            iptables={tool: _iptables_save(tool) for tool in IPTABLES},
            paths={path for path in HOST_PATHS if path.exists() or path.is_symlink()},
            mounts=set(_mount_points()),
            cgroups=set(_our_cgroups()))

    def differences(self, other: HostState) -> list[str]:
        """What differs between two records, in words (iptables compared without counters and empty tables)."""
        found = [f"sysctl {name}: {value} then {other.sysctls.get(name)}" for name, value in self.sysctls.items()
                 if other.sysctls.get(name) != value]
        found += [f"{tool} rules differ" for tool in IPTABLES
                  if _rules(self.iptables.get(tool, "")) != _rules(other.iptables.get(tool, ""))]
        for kind in ("paths", "mounts", "cgroups"):
            mine, theirs = getattr(self, kind), getattr(other, kind)
            found += [f"{kind} added: {sorted(map(str, theirs - mine))}"] if theirs - mine else []
            found += [f"{kind} removed: {sorted(map(str, mine - theirs))}"] if mine - theirs else []
        return found

    def restore(self) -> list[str]:
        """Undo the node's changes; a step that fails is reported and the others still run."""
        problems = []
        for step in (self._unmount, self._delete_netns, self._delete_bridge, self._restore_iptables,
                     self._restore_sysctls, self._remove_cgroups, self._remove_paths):
            try:
                step()
            except Exception as exc:  # teardown goes on; the caller reports every failure
                problems.append(f"{step.__name__}: {exc}")
        return problems

    def _unmount(self) -> None:
        for point in sorted(set(_mount_points()) - self.mounts, key=len, reverse=True):
            run("umount", ["umount", "-l", point], timeout=30)

    @staticmethod
    def _delete_netns() -> None:
        for netns in Path("/run/netns").glob("cni-*"):
            run("ip netns delete", ["ip", "netns", "delete", netns.name], timeout=30)

    @staticmethod
    def _delete_bridge() -> None:
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            run("ip link delete", ["ip", "link", "delete", BRIDGE], timeout=30)

    def _restore_iptables(self) -> None:
        for tool, saved in self.iptables.items():
            now = _iptables_save(tool)
            for table in _tables(now) - _tables(saved):
                # A table the node brought: empty it (built-in chains stay, as the kernel keeps them).
                run(tool, [tool, "-t", table, "-F"], timeout=30)
                run(tool, [tool, "-t", table, "-X"], timeout=30)
            if saved.strip():
                restored = run(f"{tool}-restore", [f"{tool}-restore"], input=saved, timeout=30)
                if restored.returncode != 0:
                    raise ProcessError(f"{tool}-restore failed: {restored.stderr.strip()}")

    def _restore_sysctls(self) -> None:
        for name, value in self.sysctls.items():
            path = Path("/proc/sys") / name
            if path.read_text().strip() != value:
                path.write_text(value)

    def _remove_cgroups(self) -> None:
        for group in sorted(set(_our_cgroups()) - self.cgroups, key=lambda p: len(p.parts), reverse=True):
            # cgroupfs folders go bottom-up with rmdir once their processes are gone.
            for sub in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                group.rmdir()

    def _remove_paths(self) -> None:
        for path in HOST_PATHS:
            if path not in self.paths and (path.exists() or path.is_symlink()):
                if path.is_symlink() or path.is_file():
                    path.unlink()
                else:
                    shutil.rmtree(path, ignore_errors=True)


def _iptables_save(tool: str) -> str:
    saved = run(f"{tool}-save", [f"{tool}-save"], timeout=30)
    # Comment lines carry the time of the dump; restoring does not need them.
    return "".join(line + "\n" for line in saved.stdout.splitlines() if not line.startswith("#"))


BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})


def _rules(dump: str) -> dict[str, list[str]]:
    """Table -> its chains and rules, without counters; a table holding only built-in chains that accept is left out
    (an empty table is no change)."""
    tables: dict[str, list[str]] = {}
    for line in dump.splitlines():
        if line.startswith("*"):
            table = tables.setdefault(line[1:].strip(), [])
        elif line.startswith((":", "-")):
            table.append(re.sub(r" \[\d+:\d+\]$", "", line))
    return {name: lines for name, lines in tables.items()
            if any(not (line.startswith(":") and line[1:].split()[0] in BUILTIN_CHAINS and line.endswith(" ACCEPT"))
                   for line in lines)}


def _tables(dump: str) -> set[str]:
    return {line[1:].strip() for line in dump.splitlines() if line.startswith("*")}


def _mount_points() -> list[str]:
    """Mount points where the node mounts: under its state, the kubelet's root and the network namespaces."""
    prefixes = (str(STATE_DIR), "/run/netns", "/var/run/netns", "/run/containerd", "/var/lib/kubelet")
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefixes):
            points.append(point)
    return points


def _our_cgroups() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    return [path for name in CGROUP_NAMES for path in (*root.glob(f"*/{name}"), root / name) if path.is_dir()]


def _write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def _containerd_config(state: Path, socket_path: Path, sandbox_image: str) -> str:
    """containerd's CRI plugin as the node needs it. `restrict_oom_score_adj`: this VM lacks CAP_SYS_RESOURCE, and
    without it every sandbox fails in runc ("can't get final child's PID from pipe")."""
    return f"""version = 2
root = "{CONTAINERD_ROOT}"
state = "{state / 'containerd'}"
[grpc]
  address = "{socket_path}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{state / 'cni' / 'net.d'}"
"""


def _cni_config(state: Path) -> dict:
    """One bridge with hairpin (a pod reaching itself through its Service) and host-local addresses kept in the
    run's state rather than /var/lib/cni."""
    return {"cniVersion": "0.4.0", "name": "triton-node", "plugins": [{
        "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}],
                 "dataDir": str(state / "cni" / "ipam")}}]}


def _kubelet_config(state: Path, port: int, healthz_port: int) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": settings.DEFAULT_HOST, "port": port, "readOnlyPort": 0,
        "healthzBindAddress": settings.DEFAULT_HOST, "healthzPort": healthz_port,
        # Nothing calls the kubelet's API (no exec or logs through the API server): nobody is let in.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs", "failSwapOn": False, "maxPods": 30, "serializeImagePulls": False,
        # The tier's images are imported, never pulled back: no image garbage collection, and no disk-pressure
        # evictions on a shared disk.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "clusterDomain": "cluster.local", "resolvConf": "/etc/resolv.conf",
        "volumePluginDir": str(state / "volume-plugins"), "podCIDR": POD_SUBNET,
        "nodeStatusUpdateFrequency": "4s", "syncFrequency": "10s",
    }


def _healthy(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((settings.DEFAULT_HOST, port), timeout=1):
            return True
        return False
    return check


def _ctr(address: Path, *args: str, timeout: float = 60) -> list[str]:
    done = run("ctr", ["ctr", "--address", address, "-n", "k8s.io", *args], timeout=timeout)
    if done.returncode != 0:
        raise ProcessError(f"ctr {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.split()


def _leftover_shims() -> list[int]:
    """containerd-shim-runc-v2 processes of a node (they leave containerd's process group on purpose)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                if cmdline[0].endswith(b"containerd-shim-runc-v2") and any(str(STATE_DIR).encode() in part
                                                                             for part in cmdline):
                    pids.append(int(proc.name))
    return pids


def _kill_shims() -> None:
    """A shim's group holds its containers' processes (and the containers' own sessions follow their shim)."""
    for pid in _leftover_shims():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _clear_containers(address: Path) -> None:
    """Containers a killed run left in containerd's (cached) metadata go before the kubelet starts."""
    for task in _ctr(address, "tasks", "list", "-q"):
        with contextlib.suppress(ProcessError):
            _ctr(address, "tasks", "kill", "-s", "SIGKILL", task)
        with contextlib.suppress(ProcessError):
            _ctr(address, "tasks", "delete", "-f", task)
    containers = _ctr(address, "containers", "list", "-q")
    if containers:
        _ctr(address, "containers", "delete", *containers)


def _drain_pods(cluster: Cluster, address: Path) -> None:
    """Every pod deleted at once (no grace): the kubelet stops their containers and tears their sandboxes' networks
    down (CNI DEL), which only the kubelet through CRI does properly."""
    with contextlib.suppress(OSError):
        for pod in cluster.api.get("/api/v1/pods")["items"]:
            meta = pod["metadata"]
            with contextlib.suppress(OSError):
                cluster.api.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                                    {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
    deadline = time.monotonic() + TEARDOWN_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(ProcessError):
            if not _ctr(address, "tasks", "list", "-q"):
                return
        time.sleep(1)
    log(f"containers still running {TEARDOWN_TIMEOUT_S:.0f} s after their pods were deleted; killing them")


@contextlib.contextmanager
def running_node(cluster: Cluster, sandbox_image: str, import_images: Callable[[Path], None],
                 bin_dir: Path = KUBE_BIN_DIR) -> Iterator[Node]:
    """containerd, then `import_images(socket)`, then the kubelet, kube-proxy and the scheduler; a Ready node for the
    body, and the host as it was afterwards (pods deleted, children stopped, `HostState` restored)."""
    _kill_shims()  # a previous run that died before its teardown
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR, ignore_errors=True)
    host = HostState.record()
    state = STATE_DIR
    state.mkdir(parents=True)
    socket_path = state / "containerd.sock"
    children: list[Child] = []
    scheduler: Child | None = None
    started = time.monotonic()
    try:
        config = state / "containerd.toml"
        config.write_text(_containerd_config(state, socket_path, sandbox_image))
        _write_json(state / "cni" / "net.d" / "10-triton-node.conflist", _cni_config(state))
        containerd = spawn("containerd", ["containerd", "--config", config], log=state / "containerd.log")
        children.append(containerd)
        containerd.wait_until(socket_path.exists, START_TIMEOUT_S, "its socket")
        _clear_containers(socket_path)
        import_images(socket_path)

        kubelet_port, healthz_port = free_port(), free_port()
        kubelet_config = _write_json(state / "kubelet.json", _kubelet_config(state, kubelet_port, healthz_port))
        kubelet_log = state / "kubelet.log"
        kubelet = spawn("kubelet", [
            bin_dir / "kubelet", f"--config={kubelet_config}", f"--kubeconfig={cluster.kubeconfig}",
            "--container-runtime=remote", f"--container-runtime-endpoint=unix://{socket_path}",
            f"--root-dir={state / 'kubelet'}", f"--cert-dir={state / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}", "--oom-score-adj=0", "--v=1"], log=kubelet_log)
        children.append(kubelet)
        proxy = spawn("kube-proxy", [
            bin_dir / "kube-proxy", f"--kubeconfig={cluster.kubeconfig}", "--proxy-mode=iptables",
            f"--hostname-override={NODE_NAME}", "--cluster-cidr=10.244.0.0/16",
            f"--bind-address={settings.DEFAULT_HOST}",
            f"--healthz-bind-address={settings.DEFAULT_HOST}:{free_port()}",
            f"--metrics-bind-address={settings.DEFAULT_HOST}:{free_port()}",
            # Leave the host's conntrack settings and oom_score_adj alone.
            "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0", "--oom-score-adj=0"], log=state / "kube-proxy.log")
        children.append(proxy)
        scheduler = spawn("kube-scheduler", [
            bin_dir / "kube-scheduler", f"--kubeconfig={cluster.kubeconfig}", "--leader-elect=false",
            "--port=0", "--secure-port=0"], log=state / "kube-scheduler.log")
        children.append(scheduler)
        node_path = f"/api/v1/nodes/{NODE_NAME}"

        def node_ready() -> bool:
            with contextlib.suppress(OSError, ValueError):
                return cluster.api.exists(node_path) and is_ready(cluster.api.get(node_path))
            return False

        kubelet.wait_until(node_ready, START_TIMEOUT_S, f"node {NODE_NAME} to be Ready")
        log(f"node {NODE_NAME} Ready {time.monotonic() - started:.1f} s after containerd started")
        yield Node(name=NODE_NAME, containerd=socket_path, kubelet_log=kubelet_log)
    finally:
        teardown = time.monotonic()
        if scheduler is not None:
            scheduler.stop()  # the pods' controllers recreate what is deleted: the new ones must stay unscheduled
        if children and children[0].running():
            _drain_pods(cluster, socket_path)
        for child in reversed(children):
            child.stop()
        _kill_shims()
        problems = host.restore()
        shutil.rmtree(state, ignore_errors=True)
        log(f"node stopped and host restored in {time.monotonic() - teardown:.1f} s")
        if problems:
            raise ProcessError("the host was not fully restored: " + "; ".join(problems))
