"""Faults an operator causes, measured on a real local tritonserver (the shipped repository) under client traffic.

Client threads (HTTP and gRPC, each keeping one client for its whole life as a Locust user does) send `embed` requests
throughout; every request is logged. Three parts:

1. kill: SIGKILL the server, start it again on the same ports; per cycle the failed requests, the restart time, and
   how long after the restarted server is ready every client has succeeded again (medians over the cycles);
2. term: SIGTERM the server (what a rolling update or a spot notice sends) while long requests are in flight; what
   the requests in flight got, what later requests got, and when the server exited (or hung and was killed);
3. soak: a few minutes of steady traffic with the resident memory of the server and of its stubs sampled; the
   medians of the first and last minute, and the growth.

Run: .venv/bin/python -m loadtests.bench_faults [--cycles 3] [--soak 180]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

from tests.support.traffic import LONG, SHORT, Traffic
from tools import processes, settings
from tools.serving import runtime
from tools.settings import Protocol

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
RESULTS = Path(__file__).resolve().parent / "results" / "faults.json"
TOOLS = Path(sys.executable).with_name("tools")
RECOVERY_TIMEOUT_S = 120.0
TERM_WAIT_S = runtime.STOP_TIMEOUT_S  # what `tools serve` waits before it kills the server
SAMPLE_EVERY_S = 5.0
MIB = 1024 * 1024


def _senders(server: runtime.TritonServer, texts=SHORT) -> list:
    return [(Protocol.HTTP, server.http_url, texts), (Protocol.HTTP, server.http_url, texts),
            (Protocol.GRPC, server.grpc_url, texts), (Protocol.GRPC, server.grpc_url, texts)]


def _words(error: str) -> str:
    return error.split(" (")[0][:90]


def kill_cycle(opts: runtime.ServerOptions) -> dict:
    first = runtime.TritonServer(opts).start()
    try:
        with Traffic(_senders(first)) as traffic:
            traffic.wait_for_every_sender(0.0, RECOVERY_TIMEOUT_S)
            time.sleep(2)
            killed = time.monotonic()
            os.kill(first.child.pid, signal.SIGKILL)
            first.child.wait(10)
            infer = processes.run("tools infer", [TOOLS, "infer", settings.EMBED_MODEL, "--url", first.http_url,
                                                  "hello"], timeout=60)
            first.stop()
            with runtime.TritonServer(opts) as second:
                back = time.monotonic()
                recovered = traffic.wait_for_every_sender(back, RECOVERY_TIMEOUT_S)
                until = time.monotonic()
                assert second.is_ready()
    finally:
        first.stop()
    window = [r for r in traffic.log if killed - 1 <= r.started < until]
    failed = [r for r in window if not r.ok]
    return {"requests": len(window), "failed": len(failed),
            "failed_after_ready": sum(r.started > back for r in failed),
            "restart_s": round(back - killed, 2),
            "recovered_after_ready_s": None if recovered is None else round(recovered - back, 2),
            "recovered_after_kill_s": None if recovered is None else round(recovered - killed, 2),
            "errors": dict(Counter(_words(r.error) for r in failed).most_common()),
            "unexpected_client_errors": traffic.unexpected,
            "tools_infer": {"exit": infer.returncode, "stderr": infer.stderr.strip()}}


def term_cycle(opts: runtime.ServerOptions) -> dict:
    with runtime.running_server(opts) as server:
        senders = _senders(server) + _senders(server, LONG)
        with Traffic(senders) as traffic:
            traffic.wait_for_every_sender(0.0, RECOVERY_TIMEOUT_S)
            time.sleep(1)
            term = time.monotonic()
            os.kill(server.child.pid, signal.SIGTERM)  # the server alone, as a container runtime signals PID 1
            try:
                code = server.child.process.wait(TERM_WAIT_S)
                exited = time.monotonic()
            except subprocess.TimeoutExpired:
                code, exited = None, None
            time.sleep(0.5)
        log = server.log_text()
    in_flight = [r for r in traffic.log if r.started < term < r.ended]
    after = [r for r in traffic.log if r.started >= term]
    answered = [r for r in after if r.ok]
    return {"in_flight": len(in_flight), "in_flight_completed": sum(r.ok for r in in_flight),
            "in_flight_errors": [_words(r.error) for r in in_flight if not r.ok],
            "after_term": len(after), "after_term_answered": len(answered),
            "last_answer_after_term_s": round(max((r.ended for r in answered), default=term) - term, 2),
            "after_term_errors": dict(Counter(_words(r.error) for r in after if not r.ok).most_common()),
            "exit_code": code, "exited_after_s": None if exited is None else round(exited - term, 2),
            "hung": exited is None, "forced_exit": "Exit timeout expired" in log,
            "crashed_on_exit": any(f"Signal ({n}) received" in log for n in (6, 11)),
            "unexpected_client_errors": traffic.unexpected}


def _rss_mib(server: runtime.TritonServer) -> tuple[float, float]:
    """(server, all its stubs together) resident memory in MiB."""
    parent = psutil.Process(server.child.pid)
    stubs = sum(child.memory_info().rss for child in parent.children(recursive=True))
    return parent.memory_info().rss / MIB, stubs / MIB


def soak(opts: runtime.ServerOptions, seconds: float) -> dict:
    samples: list[tuple[float, float, float]] = []
    with runtime.running_server(opts) as server, Traffic(_senders(server)) as traffic:
        started = time.monotonic()
        while (now := time.monotonic()) - started < seconds:
            samples.append((now - started, *_rss_mib(server)))
            time.sleep(SAMPLE_EVERY_S)
        samples.append((time.monotonic() - started, *_rss_mib(server)))
    first = [s for s in samples if s[0] <= 60]
    last = [s for s in samples if s[0] >= samples[-1][0] - 60]

    def growth(index: int) -> dict:
        before, after = statistics.median(s[index] for s in first), statistics.median(s[index] for s in last)
        return {"first_minute_mib": round(before, 1), "last_minute_mib": round(after, 1),
                "growth_mib": round(after - before, 1), "growth_pct": round(100 * (after - before) / before, 1)}

    return {"seconds": round(samples[-1][0]), "requests": len(traffic.log),
            "failed": sum(not r.ok for r in traffic.log), "server": growth(1), "stubs": growth(2),
            "series": [{"t_s": round(t), "server_mib": round(a, 1), "stubs_mib": round(b, 1)} for t, a, b in samples]}


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3, help="kill and SIGTERM cycles (each)")
    parser.add_argument("--soak", type=float, default=180.0, help="seconds of the soak (0: none)")
    args = parser.parse_args()
    opts = runtime.ServerOptions.on_free_ports(repository=REPOSITORY)

    kills = [kill_cycle(opts) for _ in range(args.cycles)]
    print("kill -9 and restart, 4 clients (2 HTTP, 2 gRPC):")
    for cycle in kills:
        print(f"  {cycle['requests']:5} requests {cycle['failed']:4} failed "
              f"({cycle['failed_after_ready']} after ready); "
              f"restart {cycle['restart_s']:.1f} s; clients back {cycle['recovered_after_ready_s']} s after ready, "
              f"{cycle['recovered_after_kill_s']} s after the kill")
    print(f"  medians: failed {_median([c['failed'] for c in kills])}, clients back "
          f"{_median([c['recovered_after_ready_s'] for c in kills])} s after ready, "
          f"{_median([c['recovered_after_kill_s'] for c in kills])} s after the kill")
    print(f"  errors: {kills[0]['errors']}")
    infer = kills[0]["tools_infer"]
    print(f"  tools infer on the dead server: exit {infer['exit']}: {infer['stderr']}")

    terms = [term_cycle(opts) for _ in range(args.cycles)]
    print("SIGTERM under traffic (4 short + 4 long senders):")
    for cycle in terms:
        print(f"  in flight {cycle['in_flight_completed']}/{cycle['in_flight']} completed; after TERM "
              f"{cycle['after_term_answered']}/{cycle['after_term']} answered (last {cycle['last_answer_after_term_s']}"
              f" s after); exit {cycle['exit_code']} after {cycle['exited_after_s']} s; hung {cycle['hung']}, "
              f"forced exit {cycle['forced_exit']}, crashed on exit {cycle['crashed_on_exit']}")
        print(f"    errors after TERM: {cycle['after_term_errors']}")

    soaked = soak(opts, args.soak) if args.soak > 0 else None
    if soaked:
        print(f"soak {soaked['seconds']} s: {soaked['requests']} requests, {soaked['failed']} failed")
        for part in ("server", "stubs"):
            g = soaked[part]
            print(f"  {part} RSS: first minute {g['first_minute_mib']} MiB, last minute {g['last_minute_mib']} MiB "
                  f"({g['growth_mib']:+} MiB, {g['growth_pct']:+}%)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"setup": {"cycles": args.cycles, "soak_s": args.soak, "cpus": os.cpu_count(),
                                             "exit_timeout_s": runtime.EXIT_TIMEOUT_S},
                                   "kill": kills, "term": terms, "soak": soaked}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
