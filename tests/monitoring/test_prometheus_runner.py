"""tools.monitoring.prometheus: a Prometheus that cannot scrape says which job it waited for and leaves nothing; one
whose starter is SIGKILLed does not outlive it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.starters import kill_starter
from tools.monitoring.prometheus import Prometheus, PrometheusError, ScrapeTarget, promtool, remove_stale_workdirs
from tools.processes import free_port

# A starter that serves its own /metrics, runs Prometheus on it until the first scrape, prints its folder and
# its children, and waits.
PROMETHEUS_STARTER = """\
import time
from prometheus_client import start_http_server
from tests.support.starters import report_children
from tools.monitoring.prometheus import ScrapeTarget, running_prometheus
from tools.processes import free_port
port = free_port()
start_http_server(port, addr="127.0.0.1")
with running_prometheus([ScrapeTarget(job="starter", address=f"127.0.0.1:{port}")]) as prometheus:
    print(prometheus.workdir, flush=True)
    report_children()
    time.sleep(600)
"""


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
    aftermath = kill_starter(PROMETHEUS_STARTER)
    (workdir,) = map(Path, aftermath.notes)
    try:
        assert aftermath.pids, "the starter reported its Prometheus"
        assert not aftermath.left, f"left running: {aftermath.left}"
        assert not aftermath.bound and aftermath.loopback_only
        assert workdir.is_dir()
        assert workdir in remove_stale_workdirs() and not workdir.exists()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_promtool_reports_a_broken_rule_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("groups:\n- name: x\n  rules:\n  - record: a:b\n    expr: sum(rate(x[1m])\n")
    result = promtool("check", "rules", broken)
    assert result.returncode != 0
    assert "parse error" in (result.stdout + result.stderr).lower()
