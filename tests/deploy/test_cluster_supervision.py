"""The test control plane never outlives whatever started it, even when that starter is killed with SIGKILL (no
`finally`, no atexit runs): the supervisor's parent-death signal stops etcd, kube-apiserver and
kube-controller-manager. Everything here is real; nothing is mocked."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support import paths
from tests.support.cluster import BUILD_TIMEOUT_S, START_TIMEOUT_S
from tools.processes import spawn

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 300)

CONTROL_PLANE = {"etcd", "kube-apiserver", "kube-controller-manager"}
GONE_WITHIN_S = 60.0  # kube-apiserver shuts down gracefully on SIGTERM; generous on a busy machine
# The starter: brings the cluster up, says so, then waits to be killed.
STARTER = """
import sys, time
from pathlib import Path
from tests.support.cluster import running_cluster
with running_cluster(Path(sys.argv[1])):
    print("ready", flush=True)
    time.sleep(600)
"""


def group_members(groups: set[int]) -> list[psutil.Process]:
    """Live (not zombie) processes whose process group is one of `groups`."""
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) in groups and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def test_sigkill_of_the_starter_stops_every_control_plane_process(kube_binaries: None, tmp_path: Path):
    starter = spawn("cluster starter", [sys.executable, "-c", STARTER, tmp_path], stdout=subprocess.PIPE,
                    cwd=paths.PROJECT_ROOT, text=True)
    groups: set[int] = set()
    try:
        assert starter.process.stdout.readline().strip() == "ready", "the starter did not bring the cluster up"
        children = psutil.Process(starter.pid).children()
        assert {child.name() for child in children} == CONTROL_PLANE
        groups = {child.pid for child in children}  # each was spawned as the leader of a session of its own
        assert {os.getpgid(pid) for pid in groups} == groups
        assert len(group_members(groups)) >= len(CONTROL_PLANE)

        starter.process.kill()  # SIGKILL to the starter alone: its code never gets to stop anything
        assert starter.wait(START_TIMEOUT_S) == -9

        deadline = time.monotonic() + GONE_WITHIN_S
        while (survivors := group_members(groups)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not survivors, f"still running {GONE_WITHIN_S:.0f} s after the starter died: " \
                              f"{[(p.pid, p.name()) for p in survivors]}"
    finally:
        starter.stop()
        for survivor in group_members(groups):  # a failed run must not leave a control plane behind
            survivor.kill()
