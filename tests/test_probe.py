"""The image's exec probe (probe/probe.py), run as the kubelet runs it, against a real tritonserver whose stub is
really SIGKILLed."""

from __future__ import annotations

import ast
import importlib.util
import os
import signal
import sys
import time

import psutil
import tritonclient.http as httpclient

from tests.support import paths
from tests.support.models import write_echo_model
from tests.test_healing import ENCODER_STUB_ARGV
from tools import processes
from tools.serving import healing, runtime

PROBE = paths.PROJECT_ROOT / "probe" / "probe.py"
WAIT_S = 30.0


def load_probe():
    spec = importlib.util.spec_from_file_location("probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_probe(*args: str):
    started = time.monotonic()
    result = processes.run("probe", [sys.executable, "-I", PROBE, *args], timeout=WAIT_S)
    print(f"probe {' '.join(args)}: exit {result.returncode} in {time.monotonic() - started:.3f} s {result.stderr}")
    return result


def test_the_probe_parses_as_python_3_10_the_python_of_nvidias_24_10_container():
    ast.parse(PROBE.read_text(), filename=str(PROBE), feature_version=(3, 10))


def test_the_probe_reads_a_stub_command_line_as_the_healer_does():
    probe = load_probe()
    stub = healing.stub_from_cmdline(1, ENCODER_STUB_ARGV)
    assert probe.stub_instance(ENCODER_STUB_ARGV) == (stub.model, stub.version, stub.instance)
    assert probe.stub_instance(["/usr/bin/python3", "-c", "pass"]) is None


def test_an_unreachable_server_fails_in_one_line():
    result = run_probe("--url", f"127.0.0.1:{processes.free_port()}", "--timeout", "2")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "/v2/health/live failed" in result.stderr


def _gone_or_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_probe_passes_on_a_healthy_server_and_names_the_instance_whose_stub_was_killed():
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=paths.REPOSITORY)) as server:
        url = f"http://{server.http_url}"
        healthy = run_probe("--url", url)
        assert (healthy.returncode, healthy.stderr) == (0, "")
        ready = run_probe("--url", url, "--ready", "--model", "embed", "--model", "encoder")
        assert (ready.returncode, ready.stderr) == (0, "")
        missing_model = run_probe("--url", url, "--ready", "--model", "embed", "--model", "no-such-model")
        assert missing_model.returncode == 1 and "GET /v2/models/no-such-model/ready answered 4" in missing_model.stderr

        # In process, the probe sees what the healer sees: the same instances expected, the same stubs running.
        probe = load_probe()
        expected = probe.expected_instances(probe.Server(url, timeout=10))
        assert expected == {(model, version, instance) for (model, version), instances in
                            healing.Healer(server).expected().items() for instance in instances}
        table = probe.processes()
        assert probe.server_pid(int(server.http_url.rsplit(":", 1)[1]), table) == server.child.pid
        stubs = healing.live_stubs(server.child.pid)
        running = {(s.model, s.version, s.instance) for s in stubs}
        assert probe.live_stubs(server.child.pid, table) == running == expected

        [victim] = [s for s in stubs if (s.model, s.version, s.instance) == ("encoder", "2", "encoder_0_1")]
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + WAIT_S
        while not _gone_or_zombie(victim.pid):
            assert time.monotonic() < deadline, "the killed stub still runs"
            time.sleep(0.05)
        assert server.is_ready(), "Triton 2.51 still reports ready: what the plain HTTP probes see"
        for args in ((), ("--ready", "--model", "embed")):
            dead = run_probe("--url", url, *args)
            assert dead.returncode == 1
            assert dead.stderr == "probe: no live stub process for encoder version 2 instance encoder_0_1\n"


def test_readiness_fails_when_an_entry_model_is_unloaded_while_the_server_stays_ready(tmp_path):
    """Strict readiness counts only the models loaded: once an explicit unload is done (during it, Triton 2.51 reports
    not ready for a second or two) the server is ready again, and only the entry-model check notices."""
    repository = tmp_path / "repository"
    for name in ("first", "second"):
        write_echo_model(repository, name)
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as server:
        both = ("--ready", "--model", "first", "--model", "second")
        assert run_probe("--url", server.http_url, *both).returncode == 0
        client = httpclient.InferenceServerClient(server.http_url)
        client.unload_model("second", headers=server.control_headers)
        deadline = time.monotonic() + WAIT_S
        while client.is_model_ready("second") or not server.is_ready():
            assert time.monotonic() < deadline, "the model is still ready, or the server never ready again"
            time.sleep(0.05)
        client.close()
        assert run_probe("--url", server.http_url, "--ready", "--model", "first").returncode == 0
        gone = run_probe("--url", server.http_url, *both)
        assert gone.returncode == 1
        assert gone.stderr.startswith("probe: GET /v2/models/second/ready answered 400")


def test_the_probe_only_looks_at_the_server_behind_its_url(tmp_path):
    """Two servers on one host: killing a stub of one fails the probe of that one only."""
    repository = tmp_path / "repository"
    write_echo_model(repository)
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as first, \
            runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as second:
        [victim] = healing.live_stubs(first.child.pid)
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + WAIT_S
        while not _gone_or_zombie(victim.pid):
            assert time.monotonic() < deadline, "the killed stub still runs"
            time.sleep(0.05)
        assert run_probe("--url", first.http_url).stderr == "probe: no live stub process for echo version 1 " \
                                                             "instance echo_0_0\n"
        assert run_probe("--url", second.http_url).returncode == 0
