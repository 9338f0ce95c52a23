"""The tritonserver runtime: command line, failure reporting, and a real start/stop on loopback."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from tests.support import paths
from tests.support.models import write_echo_model
from tools import settings
from tools.cli import app
from tools.serving import runtime


def _post(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=b"{}", method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


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
           "E1128 model_lifecycle.cc:654] failed to load 'pooler': Not found: no model.py\n")
    assert runtime.parse_load_errors(log) == {"encoder": "Invalid argument: bad dims",
                                              "pooler": "Not found: no model.py"}


def test_busy_port_is_named_before_anything_starts(echo_repository: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        opts = runtime.ServerOptions.on_free_ports(repository=echo_repository)
        opts.grpc_port = port
        with pytest.raises(runtime.PortInUseError, match=f"grpc port 127.0.0.1:{port} is busy"):
            runtime.TritonServer(opts).start()


def test_cli_reports_a_busy_port_without_a_traceback(echo_repository: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", str(echo_repository), "--http-port", str(port)])
    assert result.exit_code == 1
    assert f"http port 127.0.0.1:{port} is busy" in result.output
    assert "Traceback" not in result.output


def test_missing_binary_is_a_clear_error(tmp_path: Path):
    with pytest.raises(runtime.TritonNotFoundError, match="no tritonserver binary"):
        runtime.find_tritonserver(tmp_path / "nope")


def test_server_serves_guards_model_control_and_leaves_nothing_behind(echo_repository: Path):
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=echo_repository)) as server:
        index_url = f"http://{server.http_url}/v2/repository/index"
        assert _post(index_url) == 403, "model control must need the secret header"
        assert _post(index_url, server.control_headers) == 200
        assert [m["state"] for m in server.repository_index()] == ["READY"]
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


def test_a_model_that_fails_to_load_is_named_with_tritons_message(tmp_path: Path):
    repository = tmp_path / "repository"
    write_echo_model(repository, "good")
    write_echo_model(repository, "broken", model_source="raise ImportError('no such dependency: frobnicate')\n")
    with pytest.raises(runtime.ServerStartError) as info:
        runtime.TritonServer(runtime.ServerOptions.on_free_ports(repository=repository)).start(timeout=60)
    assert "broken" in info.value.model_errors
    assert "frobnicate" in info.value.model_errors["broken"]


def test_serve_guards_model_control_with_a_private_key_and_stops_cleanly_on_sigterm(tmp_path: Path):
    ports = [str(runtime.free_port()) for _ in range(3)]
    command = [sys.executable, "-m", "tools", "serve", "--http-port", ports[0], "--grpc-port", ports[1],
               "--metrics-port", ports[2]]
    stderr_path = tmp_path / "serve.err"
    with stderr_path.open("w") as stderr:
        env = {**os.environ, "TRITON_TOOLKIT_CACHE": str(tmp_path / "cache")}
        env.pop(settings.CONTROL_KEY_ENV, None)
        serve = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=paths.PROJECT_ROOT,
                                 env=env)
        try:
            deadline = time.monotonic() + 180
            while "serving; Ctrl-C to stop" not in stderr_path.read_text() and serve.poll() is None:
                assert time.monotonic() < deadline, stderr_path.read_text()
                time.sleep(0.2)
            key_file = tmp_path / "cache" / "control-key"
            assert str(key_file) in stderr_path.read_text() and key_file.stat().st_mode & 0o077 == 0
            index_url = f"http://127.0.0.1:{ports[0]}/v2/repository/index"
            assert _post(index_url) == 403
            assert _post(index_url, {settings.CONTROL_KEY_HEADER: key_file.read_text()}) == 200
            family = psutil.Process(serve.pid).children(recursive=True)
            assert any(p.name() == "tritonserver" for p in family), stderr_path.read_text()
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(timeout=60) == 0, stderr_path.read_text()
        finally:
            serve.kill()
    assert "stopping" in stderr_path.read_text()
    _, alive = psutil.wait_procs(family, timeout=5)
    assert not alive, f"left running: {alive}"


def test_the_server_does_not_outlive_a_starter_killed_by_sigkill(echo_repository: Path):
    starter = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from tools.serving import runtime\n"
         "server = runtime.TritonServer(runtime.ServerOptions.on_free_ports(repository=sys.argv[1])).start()\n"
         "print(server.process.pid, flush=True)\n"
         "time.sleep(600)\n", str(echo_repository)],
        stdout=subprocess.PIPE, text=True, cwd=paths.PROJECT_ROOT)
    try:
        server = psutil.Process(int(starter.stdout.readline()))
        starter.kill()  # no finally, no atexit: only the kernel can stop the server now
        server.wait(timeout=60)
    finally:
        starter.kill()
        starter.wait()
