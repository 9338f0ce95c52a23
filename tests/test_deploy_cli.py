"""`tools deploy` without a cluster: values mean exactly what they mean to helm, input is checked before any cluster
call, and every failure is one line `error: ...` (exit 1: a problem found; exit 2: usage), never a traceback.

Real: the helm v3.19 binary (values, rendering) and the `tools` CLI, in process and as a child process. No cluster
runs here; the cluster tier is tests/deploy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import pytest
import typer
import yaml
from typer.testing import CliRunner

from tests.support import paths
from tests.support.helm import NAMESPACE, RELEASE, render
from tools import processes, settings
from tools.cli import app
from tools.deploy import helm as deploy

HELM_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 120.0
VERBS = ("upgrade", "install", "diff", "status", "history", "rollback", "uninstall")


def run(*args: str) -> tuple[int, str, str]:
    """`tools deploy ARGS` in process: exit code, stdout, stderr."""
    result = CliRunner().invoke(app, ["deploy", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str) -> str:
    """The one line a ToolsError becomes; anything else on stderr (a traceback, a second error) fails the test."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_no_reachable_cluster_is_a_clear_error(helm_binary, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    server = f"https://127.0.0.1:{processes.free_port()}"  # nothing listens there
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), settings.HELM_ENV: str(helm_binary)}
    for verb in VERBS:
        result = processes.run("tools deploy", [sys.executable, "-m", "tools", "deploy", verb], env=env,
                               cwd=paths.PROJECT_ROOT, timeout=CLI_TIMEOUT_S)
        assert result.returncode == 1, (verb, result.stderr)
        error = one_error_line(result.stderr)
        assert f"error: no Kubernetes cluster reachable with kubeconfig {kubeconfig}" in error, (verb, error)
        assert server.removeprefix("https://") in error and result.stdout == "", (verb, result.stdout)


# Each case: values files (YAML text, in order), --set and --set-string arguments, on keys the chart really reads.
HELM_PARITY = {
    "a.b=1,c=2": ([], ["deployment.maxSurge=2,replicaCount=3"], []),
    "leading zero stays a string": ([], ["image.tag=0123"], []),
    "yes stays a string": ([], ["deployment.podAnnotations.flag=yes"], []),
    "true is a boolean": ([], ["server.gpuMetrics=true"], []),
    "1.50 stays a string": ([], ["deployment.podAnnotations.x=1.50"], []),
    "list={a,b}": ([], ["server.loadModels={embed,tokenizer}"], []),
    "list[0]=x": ([], ["server.loadModels[0]=embed"], []),
    "list[0].key=x": ([], ["imagePullSecrets[0].name=registry"], []),
    "escaped comma": ([], ["deployment.podAnnotations.a=x\\,y"], []),
    "null removes a default": ([], ["podDisruptionBudget.maxUnavailable=null"], []),
    "--set-string n=5": ([], [], ["deployment.podAnnotations.n=5"]),
    "--set beats a values file": (["image: {tag: from-file}\nreplicaCount: 4\n"], ["image.tag=from-set"], []),
    "values files merge in order": (["image: {repository: r, tag: one}\nreplicaCount: 4\n", "image: {tag: two}\n"],
                                    [], []),
}


def comparable(objects: list[dict]) -> list[dict]:
    """The chart's objects with the Secret's data masked: its control key is random on every render."""
    return [{**obj, "data": sorted(obj["data"])} if obj["kind"] == "Secret" else obj for obj in objects]


def helm_template(helm: Path, *args: str) -> list[dict]:
    """The real `helm template` run directly, with its own reading of -f/--set/--set-string."""
    done = processes.run("helm template", [helm, "template", RELEASE, paths.CHART, "--namespace", NAMESPACE, *args],
                         timeout=HELM_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    return comparable([obj for obj in yaml.safe_load_all(done.stdout) if obj])


@pytest.mark.parametrize("case", HELM_PARITY)
def test_values_render_the_same_manifests_as_helm_template_with_the_same_flags(helm_binary, tmp_path, case):
    texts, assignments, string_assignments = HELM_PARITY[case]
    files = []
    for number, text in enumerate(texts):
        files.append(tmp_path / f"values-{number}.yaml")
        files[-1].write_text(text)
    flags = [*(arg for path in files for arg in ("--values", str(path))),
             *(arg for value in assignments for arg in ("--set", value)),
             *(arg for value in string_assignments for arg in ("--set-string", value))]

    values = deploy.load_values(deploy.Target(helm=helm_binary), files, assignments, string_assignments)
    expected = helm_template(helm_binary, *flags)
    assert expected != helm_template(helm_binary), "the case changes nothing the chart renders: it proves nothing"
    assert comparable(render(helm_binary, values)) == expected


@pytest.mark.parametrize(("args", "message"), [
    (["upgrade", "--set", "image.tag"], 'error: helm refused the values: failed parsing --set data: key "tag" has '
                                        'no value'),
    (["diff", "--set", "a..b=1"], 'error: helm refused the values: failed parsing --set data: key map "a" has no '
                                  'value'),
    (["upgrade", "--values", "/nonexistent/values.yaml"], "error: values file /nonexistent/values.yaml does not exist"),
    (["diff", "--repository", "/nonexistent/repository"],
     "error: /nonexistent/repository is not a directory (expected a Triton model repository)"),
    (["upgrade", "--timeout", "5x"], "error: --timeout '5x' is not a duration helm reads (e.g. 90s, 5m, 1h30m)"),
    (["install", "--chart", "/nonexistent/chart"], "error: no chart at /nonexistent/chart (no Chart.yaml there): "
                                                   "pass --chart"),
    (["diff", "--chart", "/tmp"], "error: no chart at /tmp (no Chart.yaml there): pass --chart"),
])
def test_bad_input_is_a_usage_error_before_any_cluster_call(helm_binary, monkeypatch, args, message):
    monkeypatch.setenv(settings.HELM_ENV, str(helm_binary))
    code, stdout, stderr = run(*args)
    assert (code, one_error_line(stderr), stdout) == (2, message, "")


def test_values_files_must_be_mappings_that_helm_can_read(helm_binary, monkeypatch, tmp_path):
    monkeypatch.setenv(settings.HELM_ENV, str(helm_binary))
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("image: {tag: [\n")
    for path, reason in ((listing, "cannot unmarshal array"), (broken, "did not find expected node content")):
        code, _, stderr = run("upgrade", "--values", str(path))
        error = one_error_line(stderr)
        assert code == 2 and f"error: helm refused the values: failed to parse {path}" in error and reason in error


@pytest.mark.parametrize("args", [["rollback", "seven"], ["status", "--output", "yaml"], ["history", "-o", "xml"]])
def test_malformed_arguments_are_usage_errors(args):
    code, stdout, stderr = run(*args)
    assert code == 2 and stdout == "" and "Invalid value" in stderr and "Traceback" not in stderr


def test_a_missing_helm_binary_is_a_clear_error():
    code, _, stderr = run("status", "--helm", "/nonexistent/helm")
    assert code == 1 and "error: no helm binary found (tried: /nonexistent/helm)" in one_error_line(stderr)


def test_every_verb_documents_every_option_without_local_paths():
    group = typer.main.get_command(app).commands["deploy"]
    assert sorted(group.commands) == sorted(VERBS)
    for verb, command in group.commands.items():
        undocumented = [p.name for p in command.params if isinstance(p, click.Option) and not p.help]
        assert undocumented == [], verb
        code, stdout, _ = run(verb, "--help")
        assert code == 0 and command.help.split()[0] in stdout
        for local in (str(paths.PROJECT_ROOT), str(Path.home())):
            assert local not in stdout, (verb, local)


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
