"""Kubernetes exec probe for the triton-embeddings image: fails when a Python-backend stub died.

Triton 2.51 does not restart a `triton_python_backend_stub` that was killed (OOM killer, a crash): the server and its
models stay READY, so `/v2/health/*` answer 200, while the requests routed to the dead instance fail with 500 "Stub
process ... is not healthy". This probe compares what should run with what runs:
- the server answering at --url: `GET /v2/health/live` (or `ready` with --ready) must answer 200;
- what should run: every loaded version (`GET /v2/models/stats`) of every Python-backend model
  (`GET /v2/models/<name>/config`) runs one stub per instance of its instance groups (instance i of group g is
  named `g_i`); neither endpoint is behind the chart's restricted model-repository API;
- what runs: the server is the `tritonserver` process listening on the URL's port; its live (non-zombie) stub
  children, read from /proc, name their model folder, version and instance on their command line;
- with --model NAME (repeated; the chart passes its `entryModels` to readiness): `GET /v2/models/NAME/ready` must
  answer 200 for each. In explicit model-control mode an unloaded model leaves the server ready (strict readiness
  only counts the models loaded), so this is what notices that a model clients call is gone.
It exits 0 when all is well, else 1 with one line on stderr (Kubernetes shows it in the pod's events).

It lives in its own folder at the top of the repository because it belongs to the image, not to the `tools` package
(absent from the image) nor to the chart (which only names its path): the Dockerfile copies it to
/opt/triton-embeddings/probe.py. Hence the standard library only and Python 3.10 syntax (NVIDIA's 24.10 image).
The stub's command-line layout is the one tools/serving/healing.py reads (tests/test_probe.py checks they agree).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

STUB_NAME = "triton_python_backend_stub"
# Triton 2.51's stub argv: stub, <model folder>/<version>/model.py, shm region, sizes, parent pid, backend folder,
# ipc timeout, <instance name>, device.
STUB_MODEL_ARG = 1
STUB_INSTANCE_ARG = 8
SERVER_NAME = "tritonserver"
TCP_LISTEN = "0A"

Instance = tuple[str, str, str]  # (model, version, instance name)


class Unhealthy(Exception):
    """What is wrong, in one line."""


class Server:
    """Triton's HTTP endpoints, every call bounded by what is left of one deadline for the whole probe."""

    def __init__(self, url: str, timeout: float):
        self.url = (url if "://" in url else f"http://{url}").rstrip("/")  # host:port is fine too
        self.deadline = time.monotonic() + timeout

    def call(self, path: str) -> dict:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Unhealthy(f"GET {path}: out of time")
        try:
            with urllib.request.urlopen(self.url + path, timeout=left) as response:
                text = response.read()
            return json.loads(text) if text else {}
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()[:200]
            raise Unhealthy(f"GET {path} answered {exc.code}: {detail}") from None
        except (OSError, ValueError) as exc:  # refused, timed out, bad URL, not JSON
            raise Unhealthy(f"GET {path} failed: {getattr(exc, 'reason', exc)}") from None


def expected_instances(server: Server) -> set[Instance]:
    """One (model, version, instance) per instance of every loaded version of every Python-backend model."""
    versions: dict[str, list[str]] = {}
    for stats in server.call("/v2/models/stats").get("model_stats", []):
        versions.setdefault(stats["name"], []).append(str(stats["version"]))
    expected = set()
    for name, loaded in versions.items():
        config = server.call(f"/v2/models/{urllib.parse.quote(name)}/config")
        if config.get("backend") != "python":
            continue
        for group in config.get("instance_group", []):
            for i in range(int(group.get("count", 1))):
                expected |= {(name, version, f"{group['name']}_{i}") for version in loaded}
    return expected


def stub_instance(cmdline: list[str]) -> Instance | None:
    """The model, version and instance a stub's command line runs, or None for any other program."""
    if len(cmdline) <= STUB_INSTANCE_ARG or Path(cmdline[0]).name != STUB_NAME:
        return None
    version_dir = Path(cmdline[STUB_MODEL_ARG]).parent
    return version_dir.parent.name, version_dir.name, cmdline[STUB_INSTANCE_ARG]


def processes() -> dict[int, tuple[str, int, str]]:
    """pid -> (command name, parent pid, state) of every process this probe can see."""
    seen = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
            state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
            seen[int(entry.name)] = (stat[stat.index("(") + 1:stat.rindex(")")], int(ppid), state)
    return seen


def listening_sockets(port: int) -> set[str]:
    """The `socket:[inode]` links of TCP sockets listening on the port (IPv4 and IPv6)."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                sockets.add(f"socket:[{fields[9]}]")
    return sockets


def server_pid(port: int, table: dict[int, tuple[str, int, str]]) -> int:
    """The tritonserver process that listens on the port (in a pod the only one; on a host there may be several)."""
    sockets = listening_sockets(port)
    for pid, (name, _, _) in table.items():
        if name != SERVER_NAME:
            continue
        try:
            if any(os.readlink(fd) in sockets for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return pid
        except OSError:  # gone, or not ours to read
            continue
    raise Unhealthy(f"no {SERVER_NAME} process found listening on port {port}")


def live_stubs(parent: int, table: dict[int, tuple[str, int, str]]) -> set[Instance]:
    """Instances whose stub runs as a child of the server (a killed stub stays a zombie until Triton retires it)."""
    running = set()
    for pid, (_, ppid, state) in table.items():
        if ppid != parent or state == "Z":
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        instance = stub_instance(cmdline)
        if instance is not None:
            running.add(instance)
    return running


def check(url: str, timeout: float, ready: bool, models: list[str]) -> None:
    """Raise Unhealthy with what is wrong; return when all is well."""
    server = Server(url, timeout)
    server.call("/v2/health/ready" if ready else "/v2/health/live")
    for model in models:
        server.call(f"/v2/models/{urllib.parse.quote(model)}/ready")
    expected = expected_instances(server)
    if expected:
        table = processes()
        missing = expected - live_stubs(server_pid(urllib.parse.urlsplit(server.url).port or 80, table), table)
        if missing:
            names = ", ".join(f"{model} version {version} instance {instance}"
                              for model, version, instance in sorted(missing))
            raise Unhealthy(f"no live stub process for {names}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="Triton's HTTP endpoint (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=4.0,
                        help="seconds for the whole probe, below the probe's timeoutSeconds (default: %(default)s)")
    parser.add_argument("--ready", action="store_true", help="check /v2/health/ready instead of /v2/health/live")
    parser.add_argument("--model", metavar="NAME", action="append", default=[],
                        help="a model that must be ready (repeat for each entry model)")
    args = parser.parse_args(argv)
    try:
        check(args.url, args.timeout, args.ready, args.model)
    except Unhealthy as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
