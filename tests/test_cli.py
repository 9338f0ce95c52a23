"""The CLI behaves like the tools its users know: --version, -h, completion, environment variables shown in --help,
fixed choices checked, and every failure one line with the same exit codes (0 ok, 1 problem found, 2 usage)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support import paths
from tools import __version__, processes, settings
from tools.cli import app

runner = CliRunner()


def _plain(text: str) -> str:
    """Help text without rich's box drawing and colour codes, whitespace folded."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m|[│╭╮╰╯─]", " ", text).split())


def test_version_and_short_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"tools {__version__}"
    assert runner.invoke(app, ["-h"]).exit_code == 0


def _complete(line: str) -> list[str]:
    """What bash completion offers for the last word of `line`, from the real `tools` entry point."""
    words = line.split(" ")
    done = processes.run("tools", [Path(sys.executable).with_name("tools")], timeout=60, env={
        **os.environ, "_TOOLS_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)})
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_shell_completion_completes_commands_verbs_and_choices():
    assert "--install-completion" in _plain(runner.invoke(app, ["--help"]).stdout)
    assert _complete("tools de") == ["deploy"]
    assert _complete("tools deploy st") == ["status"]
    assert sorted(_complete("tools loadtest --shape s")) == ["spike", "step"]


@pytest.mark.parametrize(("command", "variables"), [
    (["infer"], [settings.URL_ENV]),
    (["loadtest"], [settings.URL_ENV, settings.METRICS_URL_ENV]),
    (["serve"], [settings.TRITONSERVER_ENV, settings.CONTROL_KEY_ENV]),
    (["deploy", "upgrade"], [settings.NAMESPACE_ENV, settings.HELM_ENV, "KUBECONFIG"]),
    (["deploy", "status"], [settings.NAMESPACE_ENV]),
])
def test_help_names_the_environment_variables_a_command_reads(command, variables):
    help_text = _plain(runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).stdout)
    for variable in variables:
        assert f"env var: {variable}" in help_text, (command, variable)


@pytest.mark.parametrize("command", [["serve"], ["validate"], ["loadtest"], ["bench"], ["dashboards"],
                                     ["deploy", "upgrade"], ["deploy", "diff"]])
def test_help_shows_no_path_of_this_checkout(command):
    help_text = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).stdout
    assert "/work/" not in help_text and "/home/" not in help_text and "site-packages" not in help_text


@pytest.mark.parametrize("args", [
    ["infer", settings.EMBED_MODEL, "--protocol", "htp", "hello"],
    ["validate", "--format", "xml"],
    ["deploy", "status", "-o", "yaml"],
])
def test_a_typo_in_a_fixed_choice_is_a_usage_error(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_a_problem_is_one_line_and_exit_1():
    port = processes.free_port()  # nothing listens there
    result = runner.invoke(app, ["infer", settings.EMBED_MODEL, "--url", f"127.0.0.1:{port}", "hello"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output


def test_a_usage_error_of_the_tools_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["infer", settings.EMBED_MODEL, "--url", "grpc://127.0.0.1:1", "--protocol", "http",
                                 "hello"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    result = runner.invoke(app, ["validate", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "is not a directory" in result.stderr


def test_the_url_comes_from_the_environment_when_not_given():
    port = processes.free_port()
    result = runner.invoke(app, ["infer", settings.EMBED_MODEL, "hello"], env={settings.URL_ENV: f"grpc://127.0.0.1:{port}"})
    assert result.exit_code == 1 and f"127.0.0.1:{port}" in result.stderr


def test_dashboards_refuse_a_folder_that_is_not_a_chart_and_write_nothing(tmp_path):
    result = runner.invoke(app, ["dashboards", "--chart", str(tmp_path)])
    assert result.exit_code == 2 and "no chart at" in result.stderr and result.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--http-port", "18300", "--grpc-port", "18300"], "--http-port, --grpc-port and --metrics-port must differ"),
    (["--host", "10.9.9.9", "--http-port", "18300", "--grpc-port", "18301", "--metrics-port", "18302"],
     "10.9.9.9 is not an address of this machine"),
])
def test_serve_refuses_impossible_addresses_before_starting_anything(args, message):
    result = runner.invoke(app, ["serve", str(paths.REPOSITORY), *args])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.output


def test_a_port_out_of_range_is_a_usage_error():
    result = runner.invoke(app, ["serve", "--http-port", "70000"])
    assert result.exit_code == 2 and "--http-port" in result.output
