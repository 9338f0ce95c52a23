"""The rule file and dashboards in the chart: generated from `dashboards/`, valid for promtool, alerts unit-tested."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from dashboards import rules
from dashboards.generate import RULE_FILE_NAME, rendered_outputs, stale_outputs, write_outputs
from tests.support import paths
from tools.cli import app
from tools.monitoring.prometheus import promtool

UNIT_TESTS = Path(__file__).with_name("rules.test.yaml")
RULE_FILE = paths.CHART_RULES / RULE_FILE_NAME


def test_committed_outputs_equal_a_fresh_generation():
    outputs = rendered_outputs(paths.CHART)
    on_disk = {*paths.CHART_DASHBOARDS.glob("*.json"), *paths.CHART_RULES.glob("*.yaml")}
    assert set(outputs) == on_disk, "a generated file is missing or an old one is left over"
    assert stale_outputs(outputs) == [], "regenerate with `tools dashboards`"


def test_write_outputs_writes_only_what_changed(tmp_path: Path):
    outputs = rendered_outputs(dashboards_dir=tmp_path / "dashboards", rules_dir=tmp_path / "rules")
    assert sorted(write_outputs(outputs)) == sorted(outputs)
    assert write_outputs(outputs) == []


def test_promtool_accepts_the_rule_file():
    result = promtool("check", "rules", RULE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules.recording_rules()) + len(rules.alert_rules())} rules found" in result.stdout


def test_every_alert_is_unit_tested_firing_and_quiet():
    cases = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    checks = [check for case in cases for check in case.get("alert_rule_test", [])]
    fired = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    alerts = {rule["alert"] for rule in rules.alert_rules()}
    assert fired == alerts
    assert quiet == alerts


def test_alert_unit_tests_pass():
    result = promtool("test", "rules", UNIT_TESTS.name, cwd=UNIT_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_catch_a_changed_threshold(tmp_path: Path):
    """The unit tests have teeth: the same series against a laxer queue-time threshold must fail them."""
    lax = rules.Thresholds(queue_time_per_request_ms=150)
    rule_dir = tmp_path / "rules"
    outputs = rendered_outputs(thresholds=lax, dashboards_dir=tmp_path, rules_dir=rule_dir)
    write_outputs({path: content for path, content in outputs.items() if path.parent == rule_dir})
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = [str(rule_dir / RULE_FILE_NAME)]
    (tmp_path / "lax.test.yaml").write_text(yaml.safe_dump(tests, allow_unicode=True))
    result = promtool("test", "rules", "lax.test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: TritonQueueTimeHigh" in result.stdout + result.stderr


def test_the_cli_check_passes_on_the_committed_chart():
    result = CliRunner().invoke(app, ["dashboards", "--check"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output
