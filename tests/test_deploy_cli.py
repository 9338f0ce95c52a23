"""`tools deploy` without a cluster: its input is checked first and every failure is one clear line, exit 1."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tests.support import paths
from tools import settings
from tools.cli import app
from tools.deploy import helm as deploy
from tools.serving.runtime import free_port


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["deploy", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())


def test_no_reachable_cluster_is_a_clear_error(helm_binary, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    server = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), settings.HELM_ENV: str(helm_binary)}
    for action in ([], ["--status"], ["--history"], ["--uninstall"], ["--rollback"]):
        result = subprocess.run([sys.executable, "-m", "tools", "deploy", *action], capture_output=True,
                                text=True, env=env, cwd=paths.PROJECT_ROOT, timeout=60)
        message = " ".join(result.stderr.split())
        assert result.returncode == 1, result.stderr
        assert f"no Kubernetes cluster reachable with kubeconfig {kubeconfig}" in message
        assert server.removeprefix("https://") in message and "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "image.tag"], "--set 'image.tag' is not of the form key.path=value"),
    (["--set", "a..b=1"], "is not of the form key.path=value"),
    (["--set", "imagePullSecrets[0].name=x"], "list indices are not supported"),
    (["--values", "/nonexistent/values.yaml"], "cannot read values file /nonexistent/values.yaml"),
    (["--status", "--history"], "choose one of --history, --status"),
    (["7"], "a REVISION argument only goes with --rollback"),
    (["--status", "--helm", "/nonexistent/helm"], "no helm binary found (tried: /nonexistent/helm)"),
])
def test_bad_arguments_are_refused_before_any_helm_call(args, message):
    code, output = run(*args)
    assert code == 1 and message in output, output


def test_values_files_must_be_mappings(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("image: {tag: [\n")
    assert run("--values", str(listing)) == (1, f"error: values file {listing} must hold a mapping, not a list")
    code, output = run("--values", str(broken))
    assert code == 1 and f"values file {broken} is not valid YAML" in output


def test_values_merge_like_helm(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("image: {repository: r, tag: one}\nreplicaCount: 2\n")
    second.write_text("image: {tag: two}\n")
    values = deploy.load_values([first, second], ["replicaCount=3", "autoscaling.enabled=true",
                                                  "server.loadModels=[embed, tokenizer]", "image.pullPolicy="])
    assert values == {"image": {"repository": "r", "tag": "two", "pullPolicy": ""}, "replicaCount": 3,
                      "autoscaling": {"enabled": True}, "server": {"loadModels": ["embed", "tokenizer"]}}


def test_repository_checksum_follows_content_not_bytecode(tmp_path):
    (tmp_path / "m" / "1" / "__pycache__").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.py").write_text("x = 1\n")
    before = deploy.repository_checksum(tmp_path)
    (tmp_path / "m" / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    assert deploy.repository_checksum(tmp_path) == before
    (tmp_path / "m" / "1" / "model.py").rename(tmp_path / "m" / "1" / "other.py")
    assert deploy.repository_checksum(tmp_path) != before
    assert deploy.values_for(tmp_path, {"image": {"tag": "x"}})["modelRepository"]["checksum"] == \
        deploy.repository_checksum(tmp_path)
