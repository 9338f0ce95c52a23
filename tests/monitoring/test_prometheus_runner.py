"""tools.monitoring.prometheus: a Prometheus that cannot scrape says which job it waited for and leaves nothing; one
whose starter is SIGKILLed does not outlive it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.support import paths
from tools.monitoring.prometheus import Prometheus, PrometheusError, ScrapeTarget, promtool, remove_stale_workdirs
from tools.processes import Child, free_port, spawn

# A starter that serves its own /metrics, runs Prometheus on it until the first scrape, prints its pid and folder,
# and waits.
PROMETHEUS_STARTER = """\
import time
from prometheus_client import start_http_server
from tools.monitoring.prometheus import ScrapeTarget, running_prometheus
from tools.processes import free_port
port = free_port()
start_http_server(port, addr="127.0.0.1")
with running_prometheus([ScrapeTarget(job="starter", address=f"127.0.0.1:{port}")]) as prometheus:
    print(prometheus.child.pid, prometheus.workdir, flush=True)
    time.sleep(600)
"""


def start_starter(code: str, *args: str) -> tuple[Child, list[str]]:
    """Run `code` in a Python child of this test and read the first line it prints (its report of what it started)."""
    starter = spawn("starter", [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True,
                    cwd=paths.PROJECT_ROOT)
    return starter, starter.process.stdout.readline().split()


def sigkill_and_wait_gone(starter: Child, pids: list[int], timeout: float = 60.0) -> list[psutil.Process]:
    """SIGKILL the starter alone (no finally, no atexit runs in it); what of `pids` still runs after `timeout`."""
    family = [psutil.Process(pid) for pid in pids]
    starter.process.kill()
    starter.wait(10)
    _, alive = psutil.wait_procs(family, timeout=timeout)
    return alive


def test_a_target_that_never_answers_is_named_and_the_server_cleaned_up():
    prometheus = Prometheus([ScrapeTarget(job="nobody-home", address=f"127.0.0.1:{free_port()}")]).start()
    workdir = prometheus.workdir
    try:
        assert prometheus.client().check_prometheus_connection()
        with pytest.raises(PrometheusError, match="nobody-home"):
            prometheus.wait_for_targets(timeout=3)
    finally:
        prometheus.stop()
    assert prometheus.child.returncode is not None
    assert not workdir.exists()


def test_prometheus_does_not_outlive_a_starter_killed_by_sigkill():
    """The process goes; its folder stays (nobody is left to remove it) until the next start sweeps it away."""
    starter, (prometheus_pid, workdir) = start_starter(PROMETHEUS_STARTER)
    try:
        prometheus = psutil.Process(int(prometheus_pid))
        assert prometheus.name() == "prometheus" and prometheus.is_running()
        alive = sigkill_and_wait_gone(starter, [prometheus.pid])
        assert not alive, f"left running: {alive}"
        assert Path(workdir).is_dir()
        assert Path(workdir) in remove_stale_workdirs() and not Path(workdir).exists()
    finally:
        starter.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_promtool_reports_a_broken_rule_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("groups:\n- name: x\n  rules:\n  - record: a:b\n    expr: sum(rate(x[1m])\n")
    result = promtool("check", "rules", broken)
    assert result.returncode != 0
    assert "parse error" in (result.stdout + result.stderr).lower()
