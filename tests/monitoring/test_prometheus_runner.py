"""tools.monitoring.prometheus: a Prometheus that cannot scrape says which job it waited for, and leaves nothing."""

from __future__ import annotations

import pytest

from tools.monitoring.prometheus import Prometheus, PrometheusError, ScrapeTarget, promtool
from tools.serving.runtime import free_port


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


def test_promtool_reports_a_broken_rule_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("groups:\n- name: x\n  rules:\n  - record: a:b\n    expr: sum(rate(x[1m])\n")
    result = promtool("check", "rules", broken)
    assert result.returncode != 0
    assert "parse error" in (result.stdout + result.stderr).lower()
