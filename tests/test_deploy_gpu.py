"""`tools deploy --target gpu` without a cluster: the offline gate validates for the target and wants a model on the
GPU, the chart's gpu.enabled follows the target, and contradictions are usage errors before any cluster call.

Real: the helm v3.19 binary, the validator, the `tools` CLI. No cluster runs here: a kubeconfig pointing at a port
where nothing listens shows how far a command got (a gate that passes ends at "no Kubernetes cluster reachable").
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support import paths
from tests.support.helm import render
from tools import processes, settings
from tools.cli import app
from tools.deploy import helm as deploy
from tools.validation import Target

CLI_TIMEOUT_S = 120.0
GPU_EXAMPLE = paths.CHART / "examples" / "gpu.yaml"


@pytest.fixture
def gpu_repository(tmp_path: Path) -> Path:
    """The shipped repository with the encoder's instances moved to the GPU (what a GPU repository must carry)."""
    repository = tmp_path / "gpu_repository"
    shutil.copytree(paths.PROJECT_ROOT / settings.MODEL_REPOSITORY, repository,
                    ignore=shutil.ignore_patterns("__pycache__"))
    config = repository / settings.ENCODER_MODEL / "config.pbtxt"
    text, count = re.subn(r"kind: KIND_CPU", "kind: KIND_GPU", config.read_text())
    assert count == 1
    config.write_text(text)
    return repository


@pytest.fixture
def no_cluster(helm_binary: Path, tmp_path: Path) -> dict[str, str]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{processes.free_port()}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    return {**os.environ, "KUBECONFIG": str(kubeconfig), settings.HELM_ENV: str(helm_binary)}


def tools_deploy(env: dict[str, str], *args: str) -> tuple[int, list[str]]:
    """`tools deploy ARGS` as a child process: exit code and the stderr lines."""
    result = processes.run("tools deploy", [sys.executable, "-m", "tools", "deploy", *args], env=env,
                           cwd=paths.PROJECT_ROOT, timeout=CLI_TIMEOUT_S)
    assert result.stdout == ""
    return result.returncode, result.stderr.strip().splitlines()


def tools_deploy_in_process(env: dict[str, str], *args: str) -> tuple[int, list[str]]:
    """The same in this process (quicker, for the checks that stop before helm talks to a cluster)."""
    result = CliRunner().invoke(app, ["deploy", *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    return result.exit_code, result.stderr.strip().splitlines()


def test_a_cpu_repository_is_refused_for_a_gpu_target(no_cluster):
    code, lines = tools_deploy_in_process(no_cluster, "diff", "--target", "gpu")
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: --target gpu, but no model in {settings.MODEL_REPOSITORY} has a KIND_GPU "
                               "instance group")


def test_a_gpu_repository_passes_the_gpu_gate_and_fails_the_cpu_one(no_cluster, gpu_repository):
    for verb in ("diff", "upgrade"):
        code, lines = tools_deploy(no_cluster, verb, "--target", "gpu", "--repository", str(gpu_repository))
        assert code == 1 and len(lines) == 1, lines
        assert lines[0].startswith("error: no Kubernetes cluster reachable"), "the gate passed: helm was called"
    code, lines = tools_deploy_in_process(no_cluster, "diff", "--repository", str(gpu_repository))
    assert code == 1
    assert any("E313" in line and "KIND_GPU" in line for line in lines), lines
    assert lines[-1] == f"error: {gpu_repository} has configuration errors (listed above); nothing was deployed"
    assert deploy.gpu_models(gpu_repository) == [settings.ENCODER_MODEL]


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "cpu", "--values", str(GPU_EXAMPLE)],
     "error: the values set gpu.enabled=true but --target is cpu: pass --target gpu"),
    (["--target", "gpu", "--set", "gpu.enabled=false"],
     "error: the values set gpu.enabled=false but --target is gpu: pass --target cpu"),
])
def test_values_that_contradict_the_target_are_usage_errors(no_cluster, gpu_repository, args, message):
    code, lines = tools_deploy_in_process(no_cluster, "upgrade", "--repository", str(gpu_repository), *args)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(message)


def test_the_target_sets_the_charts_gpu_switch(helm_binary, gpu_repository):
    def container(values: dict) -> dict:
        pod = next(o for o in render(helm_binary, values) if o["kind"] == "Deployment")["spec"]["template"]["spec"]
        return pod["containers"][0]

    user = deploy.load_values(deploy.Target(helm=helm_binary), [GPU_EXAMPLE])
    on_gpu = container(deploy.values_for(gpu_repository, user, Target.GPU))
    assert on_gpu["resources"]["limits"]["nvidia.com/gpu"] == 1 and "--allow-gpu-metrics=true" in on_gpu["args"]
    on_gpu = container(deploy.values_for(gpu_repository, {}, Target.GPU))
    assert on_gpu["resources"]["limits"]["nvidia.com/gpu"] == 1, "the target alone turns the GPU pool on"
    on_cpu = container(deploy.values_for(gpu_repository, {}, Target.CPU))
    assert "nvidia.com/gpu" not in on_cpu["resources"]["limits"] and "--allow-gpu-metrics=false" in on_cpu["args"]
