"""Self-healing of killed Python-backend stubs: the detection on recorded inputs, then real servers whose stubs are
really SIGKILLed, idle and under load."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from tests.support import paths
from tests.support.models import write_echo_model
from tools.errors import ServingError
from tools.serving import client, healing, runtime
from tools.settings import Protocol

POLL_S = 0.25
WAIT_S = 60.0  # upper bound of every wait below; the events end them much sooner

# Recorded from tritonserver 2.51 serving the shipped repository.
ENCODER_STUB_ARGV = [
    "/root/.cache/triton-toolkit/backends-py3.11/python/triton_python_backend_stub",
    "/work/model_repository/encoder/2/model.py", "triton_toolkit_6791_462ab849_19f3171c", "16777216", "1048576",
    "6793", "/root/.cache/triton-toolkit/backends-py3.11/python", "336", "encoder_0_1", "DEFAULT"]
INDEX = [{"name": "embed", "version": "1", "state": "READY"}, {"name": "encoder", "version": "1", "state": "READY"},
         {"name": "encoder", "version": "2", "state": "READY"}, {"name": "pooler", "version": "1", "state": "READY"},
         {"name": "tokenizer", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}]
CONFIGS = {
    "embed": {"name": "embed", "platform": "ensemble", "backend": "", "instance_group": []},
    "encoder": {"name": "encoder", "backend": "python",
                "instance_group": [{"name": "encoder_0", "kind": "KIND_CPU", "count": 2}]},
    "pooler": {"name": "pooler", "backend": "python",
               "instance_group": [{"name": "pooler_0", "kind": "KIND_CPU", "count": 1},
                                  {"name": "extra", "kind": "KIND_CPU", "count": 1}]},
}


def test_a_stub_command_line_names_its_model_version_and_instance():
    assert healing.stub_from_cmdline(6864, ENCODER_STUB_ARGV) == healing.Stub(6864, "encoder", "2", "encoder_0_1")
    assert healing.stub_from_cmdline(1, ["/usr/bin/python3", "-c", "pass"]) is None
    assert healing.stub_from_cmdline(1, ENCODER_STUB_ARGV[:5]) is None


def test_every_ready_python_version_expects_one_stub_per_instance():
    assert healing.expected_instances(INDEX, CONFIGS) == {
        ("encoder", "1"): {"encoder_0_0", "encoder_0_1"}, ("encoder", "2"): {"encoder_0_0", "encoder_0_1"},
        ("pooler", "1"): {"pooler_0_0", "extra_0"}}


def test_a_stub_missing_on_consecutive_polls_is_a_finding_that_names_its_pid():
    expected = {("encoder", "2"): {"encoder_0_0", "encoder_0_1"}, ("pooler", "1"): {"pooler_0_0"}}
    everyone = [healing.Stub(10, "encoder", "2", "encoder_0_0"), healing.Stub(11, "encoder", "2", "encoder_0_1"),
                healing.Stub(12, "pooler", "1", "pooler_0_0")]
    detector = healing.Detector(confirmations=2)
    assert detector.observe(expected, everyone) == []
    assert detector.observe(expected, everyone[::2]) == [], "one poll is not enough: it may fall inside a reload"
    [finding] = detector.observe(expected, everyone[::2])
    assert (finding.model, finding.version, finding.instances) == ("encoder", "2", ("encoder_0_1",))
    assert finding.pids == (11,)
    assert finding.reason == "stub encoder_0_1 (pid 11) died"
    detector.forget(finding)
    assert detector.observe(expected, everyone[::2]) == [], "after a heal the count starts again"
    assert detector.observe(expected, everyone) == []
    assert detector.observe(expected, everyone[::2]) == [], "a stub back in between resets the count"


def test_a_stub_that_never_ran_and_an_unloaded_model_are_told_apart():
    detector = healing.Detector(confirmations=1)
    [finding] = detector.observe({("pooler", "1"): {"pooler_0_0"}}, [])
    assert finding.pids == () and finding.reason == "stub pooler_0_0 missing"
    assert detector.observe({}, []) == [], "a model no longer loaded expects no stub"


def _stubs(server: runtime.TritonServer, model: str) -> list[healing.Stub]:
    return [stub for stub in healing.live_stubs(server.child.pid) if stub.model == model]


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


class Recorder:
    """The healer's callbacks: heals and failures, and an event when a heal is reported."""

    def __init__(self):
        self.heals: list[tuple[healing.Heal, float]] = []
        self.failures: list[healing.HealFailure] = []
        self.healed = threading.Event()

    def heal(self, heal: healing.Heal) -> None:
        self.heals.append((heal, time.monotonic()))
        self.healed.set()


def test_an_idle_server_gets_a_killed_stub_back(tmp_path: Path):
    repository = tmp_path / "repository"
    write_echo_model(repository)
    recorder = Recorder()
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as server, \
            healing.Healer(server, recorder.heal, recorder.failures.append, interval=POLL_S):
        [victim] = _stubs(server, "echo")
        os.kill(victim.pid, signal.SIGKILL)
        assert recorder.healed.wait(WAIT_S), f"no heal reported; failures: {recorder.failures}"
        [(heal, _)] = recorder.heals
        assert (heal.model, heal.finding.instances, heal.finding.pids) == ("echo", ("echo_0_0",), (victim.pid,))
        assert heal.recovered_s >= heal.reload_s > 0
        [stub] = _stubs(server, "echo")
        assert stub.pid != victim.pid and stub.instance == "echo_0_0"
        with contextlib.closing(server.client()) as connection:
            data = np.array([[1.0, 2.0]], dtype=np.float32)
            tensor = httpclient.InferInput("X", [1, 2], "FP32")
            tensor.set_data_from_numpy(data)
            assert (connection.infer("echo", [tensor]).as_numpy("Y") == data).all()
    assert recorder.failures == []


def test_a_stub_killed_under_load_is_healed_and_requests_succeed_again(tmp_path: Path):
    repository = tmp_path / "repository"
    shutil.copytree(paths.REPOSITORY, repository)  # the heal touches a version folder: not the checkout's
    recorder = Recorder()
    requests: list[tuple[float, bool, str]] = []  # (started, succeeded, error)
    stopping = threading.Event()

    def send(url: str) -> None:
        connection = client.connect(Protocol.HTTP, url)
        with contextlib.closing(connection):
            while not stopping.is_set():
                started = time.monotonic()
                try:
                    client.embed(connection, ["A man is playing a guitar."])
                    requests.append((started, True, ""))
                except ServingError as exc:
                    requests.append((started, False, str(exc)))

    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as server:
        senders = [threading.Thread(target=send, args=(server.http_url,)) for _ in range(3)]
        for sender in senders:
            sender.start()
        try:
            with healing.Healer(server, recorder.heal, recorder.failures.append, interval=POLL_S):
                _wait(lambda: sum(ok for _, ok, _ in requests) >= 10, "traffic before the kill")
                [victim] = [s for s in _stubs(server, "encoder") if (s.version, s.instance) == ("2", "encoder_0_1")]
                os.kill(victim.pid, signal.SIGKILL)
                assert recorder.healed.wait(WAIT_S), f"no heal reported; failures: {recorder.failures}"
                [(heal, healed_at)] = recorder.heals
                _wait(lambda: sum(ok for started, ok, _ in requests if started > healed_at) >= 30,
                      "traffic after the heal")
        finally:
            stopping.set()
            for sender in senders:
                sender.join(WAIT_S)
        assert (heal.model, heal.finding.version, heal.finding.instances) == ("encoder", "2", ("encoder_0_1",))
        # Every instance of both versions runs (under load Triton 2.51 may keep the replaced version's surviving
        # stub alive beside the new ones: more stubs, never fewer).
        assert {(s.version, s.instance) for s in _stubs(server, "encoder")} == {
            (v, f"encoder_0_{i}") for v in "12" for i in range(2)}
        assert victim.pid not in {s.pid for s in _stubs(server, "encoder")}
    failed = [(started, error) for started, ok, error in requests if not ok]
    print(f"{len(requests)} requests, {len(failed)} failed, heal: {heal}")
    assert not [error for started, error in failed if started > healed_at], "requests failed after the heal"
    assert all("is not healthy" in error for _, error in failed), "only the dead stub's requests failed"
    assert recorder.failures == []
