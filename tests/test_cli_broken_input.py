"""Every command fed broken input (missing files, bad flags, unreachable URLs, garbage configs, garbage environment
variables) answers with a worded error and a non-zero exit, never a traceback: one `error: ...` line from the tools
(exit 1 or 2), or click's usage message for a flag it cannot parse (exit 2)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support import paths
from tools import processes, settings
from tools.cli import app

runner = CliRunner()
DEAD = f"127.0.0.1:{processes.free_port()}"  # nothing listens there
MISSING = "/nonexistent/triton-toolkit"


def _garbage(tmp: Path) -> dict[str, Path]:
    """Broken files of every sort a command reads."""
    repository = tmp / "garbage_repository"
    (repository / "embed" / "1").mkdir(parents=True)
    (repository / "embed" / "config.pbtxt").write_bytes(b"name: \"embed\"\nplatform: {{{ \xff\xfe not a config")
    values = tmp / "values.yaml"
    values.write_text("replicaCount: [unclosed\n  - : :\n")
    binary = tmp / "binary.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    empty = tmp / "empty.txt"
    empty.write_text("")
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text("this: is: not: a kubeconfig\n")
    return {"repository": repository, "values": values, "binary": binary, "empty": empty, "kubeconfig": kubeconfig}


# (kind of breakage, arguments with {placeholders}, environment)
CASES = [
    # missing files
    ("missing file", ["serve", MISSING], {}),
    ("missing file", ["validate", MISSING], {}),
    ("missing file", ["loadtest", "--url", DEAD, "--corpus", MISSING, "-t", "1s"], {}),
    ("missing file", ["loadtest", "--serve", "--repository", MISSING, "-t", "1s"], {}),
    ("missing file", ["bench", "--quick", "--repository", MISSING], {}),
    ("missing file", ["dashboards", "--chart", MISSING], {}),
    ("missing file", ["deploy", "upgrade", "--chart", MISSING], {}),
    ("missing file", ["deploy", "diff", "--values", MISSING], {}),
    ("missing file", ["deploy", "upgrade", "--repository", MISSING], {}),
    ("missing file", ["deploy", "status", "--helm", MISSING], {}),
    ("missing file", ["deploy", "status", "--kubeconfig", MISSING], {}),
    # bad flags
    ("bad flag", ["infer"], {}),
    ("bad flag", ["infer", "--bogus", "hello"], {}),
    ("bad flag", ["serve", "--http-port", "abc"], {}),
    ("bad flag", ["serve", "--timeout", "0"], {}),
    ("bad flag", ["validate", "--cores", "0", str(paths.REPOSITORY)], {}),
    ("bad flag", ["loadtest", "--url", DEAD, "--users", "-3", "-t", "1s"], {}),
    ("bad flag", ["loadtest", "--url", DEAD, "-t", "forever"], {}),
    ("bad flag", ["loadtest", "--url", DEAD, "--rate", "-1", "-t", "1s"], {}),
    ("bad flag", ["loadtest", "--url", DEAD, "--slo", "p99<<fast", "-t", "1s"], {}),
    ("bad flag", ["loadtest", "--url", DEAD, "--texts-per-request", "0", "-t", "1s"], {}),
    ("bad flag", ["loadtest", "--url", DEAD, "--web-port", "99999", "-t", "1s"], {}),
    ("bad flag", ["bench", "--case", "nope"], {}),
    ("bad flag", ["deploy", "rollback", "abc"], {}),
    ("bad flag", ["deploy", "upgrade", "--timeout", "forever"], {}),
    ("bad flag", ["deploy", "upgrade", "--set", "novalue"], {}),
    ("bad flag", ["deploy", "status", "-o", "xml"], {}),
    # unreachable URLs
    ("unreachable URL", ["infer", "embed", "--url", DEAD, "hello"], {}),
    ("unreachable URL", ["infer", "embed", "--url", f"grpc://{DEAD}", "hello"], {}),
    ("unreachable URL", ["infer", "--url", "no-such-host.invalid:8000", "hello"], {}),
    ("unreachable URL", ["infer", "--url", "http://127.0.0.1:0", "hello"], {}),
    ("unreachable URL", ["loadtest", "--url", DEAD, "-t", "1s"], {}),
    ("unreachable URL", ["loadtest", "--url", f"grpc://{DEAD}", "-t", "1s"], {}),
    ("unreachable URL", ["loadtest", "--url", DEAD, "--metrics-url", f"http://{DEAD}/metrics", "-t", "1s"], {}),
    # garbage configs and files
    ("garbage config", ["validate", "{repository}"], {}),
    ("garbage config", ["serve", "{repository}"], {}),
    ("garbage config", ["bench", "--quick", "--repository", "{repository}"], {}),
    ("garbage config", ["loadtest", "--serve", "--repository", "{repository}", "-t", "1s"], {}),
    ("garbage config", ["loadtest", "--url", DEAD, "--corpus", "{empty}", "-t", "1s"], {}),
    ("garbage config", ["loadtest", "--url", DEAD, "--corpus", "{binary}", "-t", "1s"], {}),
    ("garbage config", ["deploy", "diff", "--values", "{values}"], {}),
    ("garbage config", ["deploy", "status", "--kubeconfig", "{kubeconfig}"], {}),
    ("garbage config", ["deploy", "upgrade", "--repository", "{repository}"], {}),
    # garbage environment variables
    ("garbage env", ["infer", "hello"], {settings.URL_ENV: "::::"}),
    ("garbage env", ["infer", "hello"], {settings.URL_ENV: "http://"}),
    ("garbage env", ["infer", "hello"], {settings.URL_ENV: "grpc://host:port"}),
    ("garbage env", ["loadtest", "-t", "1s"], {settings.URL_ENV: "::::"}),
    ("garbage env", ["loadtest", "--url", DEAD, "-t", "1s"], {settings.METRICS_URL_ENV: "::::"}),
    ("garbage env", ["serve", str(paths.REPOSITORY)], {settings.TRITONSERVER_ENV: "::::"}),
    ("garbage env", ["serve", str(paths.REPOSITORY)], {settings.TRITONSERVER_ENV: "/etc/passwd"}),
    ("garbage env", ["deploy", "status"], {settings.HELM_ENV: "::::"}),
    ("garbage env", ["deploy", "status"], {settings.NAMESPACE_ENV: "Not A Namespace!"}),
    ("garbage env", ["deploy", "status"], {"KUBECONFIG": "::::"}),
]


@pytest.mark.parametrize(("kind", "args", "env"), CASES, ids=[f"{kind}: {' '.join(args)} {env or ''}".strip()
                                                               for kind, args, env in CASES])
def test_broken_input_is_one_worded_error_and_a_non_zero_exit(tmp_path: Path, kind: str, args: list[str],
                                                               env: dict[str, str]):
    files = _garbage(tmp_path)
    args = [arg.format(**files) if arg.startswith("{") else arg for arg in args]
    result = runner.invoke(app, args, env={"COLUMNS": "200", **env})
    output = result.output
    assert "Traceback" not in output, output
    assert isinstance(result.exception, SystemExit), f"{type(result.exception).__name__}: {result.exception}"
    assert result.exit_code in (1, 2), (result.exit_code, output)
    assert _worded(result.exit_code, result.stdout, result.stderr), result.stderr


def _worded(code: int, stdout: str, stderr: str) -> bool:
    """One `error:` line; click's usage message; or a repository's findings listed, then (when the command had more
    to do) one `error:` line."""
    tools_error = stderr.startswith("error: ") and stderr.count("\n") == 1
    usage_error = code == 2 and "Usage:" in stderr and "Error" in stderr
    lines = (stdout + stderr).strip().splitlines()
    findings = code == 1 and "model(s) checked" in stdout + stderr and (
        "model(s) checked" in lines[-1] or (lines[-1].startswith("error: ") and stderr.count("error: ") == 1))
    return tools_error or usage_error or findings


# Read when the package is imported, so only the real entry point sees them.
ENTRY_POINT_CASES = [
    (["serve", str(paths.REPOSITORY), "--http-port", "{port}", "--grpc-port", "{port2}", "--metrics-port", "{port3}"],
     {"TRITON_TOOLKIT_CACHE": "/dev/null/cache"}),
    (["bench", "--quick", "--case", "triton"], {"TRITON_TOOLKIT_CACHE": "/dev/null/cache"}),
    (["deploy", "status"], {"TRITON_TOOLKIT_CACHE": "/dev/null/cache"}),
    (["infer", "hello"], {settings.URL_ENV: "::::"}),
    (["infer", "hello"], {"HOME": "/nonexistent", settings.URL_ENV: DEAD}),
]


@pytest.mark.parametrize(("args", "env"), ENTRY_POINT_CASES,
                         ids=[f"{args[0]} {env}" for args, env in ENTRY_POINT_CASES])
def test_garbage_in_the_environment_of_the_real_entry_point_is_one_worded_error(tmp_path: Path, args, env):
    ports = {f"port{suffix}": str(processes.free_port()) for suffix in ("", "2", "3")}
    args = [arg.format(**ports) for arg in args]
    done = processes.run("tools", [Path(sys.executable).with_name("tools"), *args], timeout=120, cwd=tmp_path,
                         env={**os.environ, **env})
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.returncode in (1, 2) and _worded(done.returncode, done.stdout, done.stderr), done.stderr
