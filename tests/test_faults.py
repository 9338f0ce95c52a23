"""Faults an operator causes, on a real tritonserver under client traffic: the server SIGKILLed and started again
(clients, which keep their connection as Locust users do, see worded errors and recover by themselves; `tools infer`
against the dead server is one line and exit 1), and SIGTERM to `tools serve` under traffic (requests in flight
complete, later ones are refused in words, serve stops its server and every stub and exits 0).

Measured on Triton 2.51 (loadtests/bench_faults.py has the numbers): on SIGTERM it keeps answering for up to its exit
timeout while client connections stay open, then gives up on what is still in flight, and under traffic its forced
exit can crash and hang; `tools serve` then kills it after its stop grace.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

from tests.support import paths
from tests.support.traffic import LONG, SHORT, Traffic
from tools import processes
from tools.serving import runtime
from tools.settings import Protocol

TOOLS = Path(sys.executable).with_name("tools")
RECOVERY_TIMEOUT_S = 60.0
SERVE_READY_TIMEOUT_S = 180.0


def _one_line_error(done) -> bool:
    return done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_server_is_a_worded_error_and_clients_recover_when_it_is_back():
    opts = runtime.ServerOptions.on_free_ports(repository=paths.REPOSITORY)
    first = runtime.TritonServer(opts).start()
    try:
        with Traffic([(Protocol.HTTP, first.http_url, SHORT), (Protocol.GRPC, first.grpc_url, SHORT)]) as traffic:
            assert traffic.wait_for_every_sender(0.0, RECOVERY_TIMEOUT_S), "no traffic before the kill"
            killed = time.monotonic()
            os.kill(first.child.pid, signal.SIGKILL)
            first.child.wait(10)
            for url in (f"http://{first.http_url}", f"grpc://{first.grpc_url}"):
                done = processes.run("tools infer", [TOOLS, "infer", "--url", url, "hello"], timeout=60)
                assert done.returncode == 1 and _one_line_error(done), done.stderr
                assert "cannot reach the server" in done.stderr
            first.stop()  # what `tools serve` does when its server died: the stubs and shared memory go too
            with runtime.TritonServer(opts) as second:
                back = time.monotonic()
                recovered = traffic.wait_for_every_sender(back, RECOVERY_TIMEOUT_S)
                assert recovered is not None, f"clients did not recover: {traffic.log[-4:]}"
                assert second.is_ready()
                until = time.monotonic()  # what follows is the second server's own shutdown
    finally:
        first.stop()
    failed = [request for request in traffic.log if not request.ok and request.started < until]
    print(f"{len(traffic.log)} requests, {len(failed)} failed; clients back {recovered - back:.2f} s after the "
          f"restarted server was ready ({recovered - killed:.1f} s after the kill)")
    print(dict(Counter((r.sender, "down" if r.started < back else "back", r.error.split(" (")[0]) for r in failed)))
    assert traffic.unexpected == []
    assert failed and all(request.error for request in failed)
    # Only requests around the outage fail (the one in flight at the kill at most a second before it), and once the
    # server is back only with `cannot reach` (a gRPC channel retries its connection with a backoff).
    assert all(killed - 1 <= request.started <= recovered for request in failed)
    assert all(request.error.startswith("cannot reach the server") for request in failed if request.started > back)


def test_sigterm_to_tools_serve_under_traffic_completes_what_is_in_flight_and_stops_everything(tmp_path: Path):
    ports = [processes.free_port() for _ in range(3)]
    http_url, grpc_url = (f"127.0.0.1:{port}" for port in ports[:2])
    log = tmp_path / "serve.log"
    serve = processes.spawn("tools serve", [TOOLS, "serve", str(paths.REPOSITORY), "--http-port", str(ports[0]),
                                            "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])], log=log)
    try:
        serve.wait_until(lambda: "serving; Ctrl-C to stop" in log.read_text(), SERVE_READY_TIMEOUT_S, "serve")
        tree = psutil.Process(serve.pid).children(recursive=True)
        assert len(tree) > 1, "no server and stubs under serve"
        senders = [(Protocol.HTTP, http_url, SHORT), (Protocol.GRPC, grpc_url, SHORT),
                   (Protocol.HTTP, http_url, LONG), (Protocol.GRPC, grpc_url, LONG)]
        with Traffic(senders) as traffic:
            assert traffic.wait_for_every_sender(0.0, RECOVERY_TIMEOUT_S), "no traffic before SIGTERM"
            term = time.monotonic()
            os.kill(serve.pid, signal.SIGTERM)
            code = serve.wait(runtime.STOP_TIMEOUT_S + 30)
            stopped = time.monotonic()
            time.sleep(0.5)  # requests after the stop
    finally:
        serve.stop()
    output = log.read_text()
    in_flight = [request for request in traffic.log if request.started < term < request.ended]
    after = [request for request in traffic.log if request.started >= term]
    print(f"serve exited {code} {stopped - term:.1f} s after SIGTERM; in flight: {[r.ok for r in in_flight]}; "
          f"after: {sum(r.ok for r in after)} of {len(after)} answered")
    assert code == 0 and "stopping" in output and "Traceback" not in output
    assert [process.pid for process in tree if _alive(process)] == [], "serve left its server or a stub behind"
    # What was in flight completes, unless it was still running when Triton's exit timeout ran out (a long request on a
    # busy machine).
    cut_off = term + runtime.EXIT_TIMEOUT_S
    assert any(request.ok for request in in_flight)
    assert all(request.ok or request.ended >= cut_off for request in in_flight), [r.error for r in in_flight]
    refused = [request for request in after if not request.ok]
    assert refused and all(request.error for request in refused)
    assert all(not request.ok for request in after if request.started > stopped)
    assert traffic.unexpected == []
