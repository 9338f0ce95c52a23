"""`tools rollout` on a real tritonserver under traffic: a copy of the shipped repository whose encoder gets a
version 3 (a copy of 2) and two broken versions, one that fails to load and one that raises on every request.

The traffic is a light client of the ensemble (a few threads over HTTP) that counts failed requests while each step
runs: the rollout, a change of instance count, and the broken versions must cost the ensemble's clients nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.support import paths, rollout_repository
from tests.support.rollout_repository import BROKEN_AT_LOAD, BROKEN_ON_REQUEST
from tests.support.traffic import Traffic
from tools import settings
from tools.cli.app import app
from tools.loadtest import corpus
from tools.repository import load_repository
from tools.rollout import history
from tools.rollout.policy import with_policy
from tools.serving import client, healing, runtime
from tools.serving.control import Control

USERS = 3
STUB_EXIT_TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return rollout_repository.build(tmp_path_factory.mktemp("rollout") / "repository")


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[runtime.TritonServer]:
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as triton:
        yield triton


@pytest.fixture
def control(server) -> Control:
    return Control(server.http_url, server.control_key)


def ensemble_traffic(server: runtime.TritonServer) -> Traffic:
    """USERS clients of the ensemble, each sending its own corpus text one per request."""
    texts = corpus.load()[:USERS]
    return Traffic([(settings.Protocol.HTTP, server.http_url, (text,)) for text in texts])


def _embedding(server) -> np.ndarray:
    return client.embed_texts(["where is my parcel"], settings.Protocol.HTTP, server.http_url)[0]


def _encoder_stubs(server, expected: dict[str, int] | None = None) -> dict[str, int]:
    """Live stub processes of the encoder, per version (waiting a while for `expected`: a stub exits a moment after
    Triton reports its version unloaded)."""
    deadline = time.monotonic() + STUB_EXIT_TIMEOUT_S
    while True:
        counts: dict[str, int] = {}
        for stub in healing.live_stubs(server.child.pid):
            if stub.model == settings.ENCODER_MODEL:
                counts[stub.version] = counts.get(stub.version, 0) + 1
        if expected is None or counts == expected or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def test_a_rollout_and_its_rollback_under_traffic_fail_no_request(server, repository, control, tmp_path):
    assert control.ready_versions("encoder") == [1, 2]
    reference = _embedding(server)
    config_before = (repository / "encoder" / "config.pbtxt").read_text()
    report_path = tmp_path / "report.json"
    runner = CliRunner()
    args = ["rollout", "encoder", "--url", server.http_url, "--repository", str(repository),
            "--control-key", server.control_key]
    with ensemble_traffic(server) as traffic:
        result = runner.invoke(app, [*args, "--version", "3", "--json", str(report_path)])
        during_rollout = traffic.ok
    assert result.exit_code == 0, result.output
    assert not traffic.failures, traffic.failures[:3]
    assert during_rollout > 0
    for step in ("validate", "pin ensembles", "load new version", "canary", "switch", "drain", "write config"):
        assert step in result.output
    assert control.ready_versions("encoder") == [3]
    assert _encoder_stubs(server, {"3": 2}) == {"3": 2}, "the old versions' stubs are gone"
    assert float(client.cosine_similarity(reference[None], _embedding(server)[None])[0, 0]) > 0.999
    on_disk = load_repository(repository).models["encoder"]
    assert on_disk.served_versions() == [3], "a restart serves what the server serves"
    assert [(r.before, r.after) for r in history.records(on_disk.config_file)] == [([1, 2], [3])]
    assert '"ok": true' in report_path.read_text()

    with ensemble_traffic(server) as traffic:
        result = runner.invoke(app, [*args, "--rollback"])
    assert result.exit_code == 0, result.output
    assert not traffic.failures, traffic.failures[:3]
    assert control.ready_versions("encoder") == [1, 2]
    on_disk = load_repository(repository).models["encoder"]
    assert on_disk.served_versions() == [1, 2] and history.records(on_disk.config_file) == []
    assert on_disk.config == load_repository(paths.PROJECT_ROOT / "model_repository").models["encoder"].config
    assert config_before.splitlines()[0] == (repository / "encoder" / "config.pbtxt").read_text().splitlines()[0]


def test_an_instance_count_change_under_traffic_fails_no_request(server, control):
    ready = control.ready_versions("encoder")
    config = with_policy(control.config("encoder"), ready)
    before = _encoder_stubs(server)
    with ensemble_traffic(server) as traffic:
        for count in (1, 2):
            config["instance_group"][0]["count"] = count
            control.load("encoder", config)
            if count == 1:
                fewer = _encoder_stubs(server, {str(v): 1 for v in ready})
    assert not traffic.failures, traffic.failures[:3]
    assert traffic.ok > 0
    assert fewer == {str(v): 1 for v in ready} and _encoder_stubs(server, before) == before


@pytest.mark.parametrize(("version", "failed_step"), [(BROKEN_AT_LOAD, "load new version"),
                                                      (BROKEN_ON_REQUEST, "canary")])
def test_a_broken_version_is_rolled_back_and_only_canary_requests_fail(server, repository, control, version,
                                                                        failed_step, tmp_path):
    config_before = (repository / "encoder" / "config.pbtxt").read_text()
    report_path = tmp_path / "report.json"
    with ensemble_traffic(server) as traffic:
        result = CliRunner().invoke(app, ["rollout", "encoder", "--version", str(version), "--url", server.http_url,
                                          "--repository", str(repository), "--control-key", server.control_key,
                                          "--json", str(report_path)])
    assert not traffic.failures, traffic.failures[:3]
    assert traffic.ok > 0
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1].startswith(f"error: {failed_step}: ")
    report = json.loads(report_path.read_text())
    assert report["restored"] is True and report["ok"] is False
    assert [s["name"] for s in report["steps"] if not s["ok"]] == [failed_step]
    if version == BROKEN_ON_REQUEST:
        canary = report["canary"]
        assert canary["failed_requests"] == canary["requests"] // 2, "every request to the new version, none to the old"
        assert "fails every request" in canary["problems"][0]
    assert control.ready_versions("encoder") == [1, 2]
    assert _encoder_stubs(server, {"1": 2, "2": 2}) == {"1": 2, "2": 2}
    assert (repository / "encoder" / "config.pbtxt").read_text() == config_before


def test_bad_requests_are_one_line_errors_before_the_server_is_touched(repository):
    runner = CliRunner()
    unreachable = "127.0.0.1:9"
    cases = [
        (["encoder", "--version", "9"], 2, "has no version 9"),
        (["encoder", "--version", "3", "--rollback"], 2, "not both"),
        (["embed", "--version", "1"], 2, "is an ensemble"),
        (["nothing", "--version", "1"], 2, "no model 'nothing'"),
        (["encoder", "--rollback"], 2, "nothing to roll back"),
    ]
    for args, code, message in cases:
        result = runner.invoke(app, ["rollout", *args, "--url", unreachable, "--repository", str(repository)])
        assert result.exit_code == code, (args, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_a_repository_with_errors_is_refused_in_one_line(echo_repository):
    (echo_repository / "echo" / "config.pbtxt").write_text('name: "echo"\nbackend: "python"\nmax_batch_size: -1\n')
    result = CliRunner().invoke(app, ["rollout", "echo", "--version", "1", "--url", "127.0.0.1:9",
                                      "--repository", str(echo_repository)])
    assert result.exit_code == 1 and "configuration error" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
