"""The test control plane never outlives whatever started it, even when that starter is killed with SIGKILL (no
`finally`, no atexit runs): the supervisor's parent-death signal stops etcd, kube-apiserver and
kube-controller-manager. Everything here is real; nothing is mocked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cluster import BUILD_TIMEOUT_S
from tests.support.starters import kill_starter

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 300)

CONTROL_PLANE = {"etcd", "kube-apiserver", "kube-controller-manager"}
GONE_WITHIN_S = 60.0  # kube-apiserver shuts down gracefully on SIGTERM; generous on a busy machine
# The starter: brings the cluster up, names its children, reports their process groups, then waits to be killed.
STARTER = """
import sys, time
from pathlib import Path
import psutil
from tests.support.cluster import running_cluster
from tests.support.starters import report_children
with running_cluster(Path(sys.argv[1])):
    print(" ".join(sorted(child.name() for child in psutil.Process().children())), flush=True)
    report_children()
    time.sleep(600)
"""


def test_sigkill_of_the_starter_stops_every_control_plane_process(kube_binaries: None, tmp_path: Path):
    aftermath = kill_starter(STARTER, str(tmp_path), vanish_timeout_s=GONE_WITHIN_S)
    assert set(" ".join(aftermath.notes).split()) == CONTROL_PLANE, aftermath.notes
    assert len(aftermath.pids) >= len(CONTROL_PLANE)
    assert not aftermath.left, f"still running {GONE_WITHIN_S:.0f} s after the starter died: {aftermath.left}"
    assert not aftermath.bound and aftermath.loopback_only
