"""The tritonserver runtime: command line, failure reporting, and a real start/stop on loopback."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from tests.support import paths
from tests.support.models import write_echo_model
from tests.support.starters import kill_starter
from tools import settings
from tools.cli import app
from tools.processes import PortBusyError, spawn
from tools.serving import client, runtime

# A starter that runs a server, prints its pid, shm prefix and stub pids, then waits to be killed.
SERVER_STARTER = """
import sys, time
from tests.support.starters import report_children
from tools.serving import runtime
server = runtime.TritonServer(runtime.ServerOptions.on_free_ports(repository=sys.argv[1])).start()
print(server.shm_prefix, flush=True)
report_children()
time.sleep(600)
"""


def index_status(url: str, headers: dict[str, str] | None = None) -> str:
    """The HTTP status Triton gives the repository index, through tritonclient, with or without the control key."""
    with contextlib.closing(httpclient.InferenceServerClient(url)) as connection:
        try:
            connection.get_model_repository_index(headers=headers)
        except InferenceServerException as exc:
            return exc.status()
    return "200"


def test_command_binds_every_endpoint_to_the_host_and_restricts_model_control():
    opts = runtime.ServerOptions(host="127.0.0.1", http_port=1, grpc_port=2, metrics_port=3)
    cmd = runtime.build_command(Path("/bin/tritonserver"), opts, Path("/b"), "s3cret", "pfx_")
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(cmd)
    assert "--model-control-mode=explicit" in cmd and "--strict-readiness=true" in cmd
    restricted = f"model-repository:{settings.CONTROL_KEY_HEADER}=s3cret"
    assert f"--http-restricted-api={restricted}" in cmd
    assert f"--grpc-restricted-protocol={restricted}" in cmd
    assert "--backend-directory=/b" in cmd


def test_load_errors_are_read_from_the_log_per_model():
    log = ("E1128 model_lifecycle.cc:654] failed to load 'encoder' version 1: Invalid argument: bad dims\n"
           "E1128 model_lifecycle.cc:654] failed to load 'tokenizer': Not found: no model.py\n")
    assert runtime.parse_load_errors(log) == {"encoder": "Invalid argument: bad dims",
                                              "tokenizer": "Not found: no model.py"}


def test_busy_port_is_named_before_anything_starts(echo_repository: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        opts = runtime.ServerOptions.on_free_ports(repository=echo_repository)
        opts.grpc_port = port
        server = runtime.TritonServer(opts)
        with pytest.raises(PortBusyError, match=f"port 127.0.0.1:{port} is busy"):
            server.start()
    assert server.child is None, "nothing was spawned"


def test_cli_reports_a_busy_port_without_a_traceback(echo_repository: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", str(echo_repository), "--http-port", str(port)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: ")
    assert f"port 127.0.0.1:{port} is busy" in result.output and "pick another with --http-port" in result.output
    assert "Traceback" not in result.output


def test_missing_binary_is_a_clear_error(tmp_path: Path):
    with pytest.raises(runtime.TritonNotFoundError, match="no tritonserver binary"):
        runtime.find_tritonserver(tmp_path / "nope")


def test_server_serves_guards_model_control_and_leaves_nothing_behind(echo_repository: Path):
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=echo_repository)) as server:
        assert index_status(server.http_url) == "403", "model control must need the secret header"
        assert index_status(server.http_url, server.control_headers) == "200"
        assert [m["state"] for m in server.repository_index()] == ["READY"]
        assert client.model_ready(server.http_url, "echo") and not client.model_ready(server.http_url, "nope")
        tensor = httpclient.InferInput("X", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.array([[1.5, -2.0]], np.float32))
        with contextlib.closing(server.client()) as connection:
            np.testing.assert_array_equal(connection.infer("echo", [tensor]).as_numpy("Y"), [[1.5, -2.0]])
        family = [server.process.pid] + [c.pid for c in psutil.Process(server.process.pid).children(recursive=True)]
        assert len(family) >= 2, "the Python model runs in a stub process"
        shm_prefix = server.shm_prefix
        assert list(runtime.SHM_DIR.glob(f"{shm_prefix}*")), "the stub's shared memory is under our prefix"
        # An idle keep-alive client must not hold shutdown past Triton's exit timeout into our SIGKILL.
        idle_client = http.client.HTTPConnection(*server.http_url.split(":"))
        idle_client.request("GET", "/v2/health/live")
        assert idle_client.getresponse().status == 200
    idle_client.close()
    assert server.process.returncode >= 0, "Triton exited by itself on SIGTERM, not by our SIGKILL"
    assert not [pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert not list(runtime.SHM_DIR.glob(f"{shm_prefix}*"))
    assert not client.model_ready(server.http_url, "echo"), "a stopped server is not ready"


def test_a_model_that_fails_to_load_is_named_with_tritons_message(tmp_path: Path):
    repository = tmp_path / "repository"
    write_echo_model(repository, "good")
    write_echo_model(repository, "broken", model_source="raise ImportError('no such dependency: frobnicate')\n")
    with pytest.raises(runtime.ServerStartError) as info:
        runtime.TritonServer(runtime.ServerOptions.on_free_ports(repository=repository)).start(timeout=60)
    assert set(info.value.model_errors) == {"broken"}
    assert "frobnicate" in info.value.model_errors["broken"]
    assert "\n" not in str(info.value) and "At:" not in str(info.value), "one line, without the stub's stack"


def test_serve_guards_model_control_with_a_private_key_and_stops_cleanly_on_sigterm(tmp_path: Path):
    ports = [str(runtime.free_port()) for _ in range(3)]
    command = [sys.executable, "-m", "tools", "serve", "--http-port", ports[0], "--grpc-port", ports[1],
               "--metrics-port", ports[2]]
    stderr_path = tmp_path / "serve.err"
    with stderr_path.open("w") as stderr:
        env = {**os.environ, "TRITON_TOOLKIT_CACHE": str(tmp_path / "cache")}
        env.pop(settings.CONTROL_KEY_ENV, None)
        serve = spawn("tools serve", command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=paths.PROJECT_ROOT,
                      env=env)
        try:
            serve.wait_until(lambda: "serving; Ctrl-C to stop" in stderr_path.read_text(), 180, "serving")
            key_file = tmp_path / "cache" / "control-key"
            assert str(key_file) in stderr_path.read_text() and key_file.stat().st_mode & 0o077 == 0
            http_url = f"127.0.0.1:{ports[0]}"
            assert index_status(http_url) == "403"
            assert index_status(http_url, {settings.CONTROL_KEY_HEADER: key_file.read_text()}) == "200"
            family = psutil.Process(serve.pid).children(recursive=True)
            assert any(p.name() == "tritonserver" for p in family), stderr_path.read_text()
            serve.process.terminate()
            assert serve.wait(timeout=60) == 0, stderr_path.read_text()
        finally:
            serve.stop()
    assert "stopping" in stderr_path.read_text()
    _, alive = psutil.wait_procs(family, timeout=5)
    assert not alive, f"left running: {alive}"


def test_no_server_stub_or_shared_memory_outlives_a_starter_killed_by_sigkill(echo_repository: Path):
    """The kernel SIGTERMs the orphaned server; it shuts down by itself, its stubs exit with it, and the Python
    backend unlinks the stubs' /dev/shm regions on the way out: nothing is left for anyone to clean."""
    aftermath = kill_starter(SERVER_STARTER, str(echo_repository), vanish_timeout_s=60)
    (shm_prefix,) = aftermath.notes
    assert len(aftermath.pids) >= 2, "the server and the echo model's stub process"
    assert not aftermath.left, f"left running: {aftermath.left}"
    assert not aftermath.bound, f"ports still bound: {aftermath.bound}"
    deadline = time.monotonic() + 10  # the last stub unlinks its region as it exits
    while list(runtime.SHM_DIR.glob(f"{shm_prefix}*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(runtime.SHM_DIR.glob(f"{shm_prefix}*"))
