"""Measure self-healing on a real local tritonserver: what a SIGKILLed Python-backend stub costs the clients.

A server like `tools serve`'s (the shipped repository, free loopback ports, the healer polling every second) gets
`embed` requests over HTTP from a few client threads at a steady concurrency. One stub of each model of the ensemble
(tokenizer, encoder) is killed in turn; for each kill we count the failed requests and time, from the kill,
the healer's detection, the end of the reload, and the recovery: the first success after the heal with no failure
after it.

Run from the checkout: .venv/bin/python -m loadtests.bench_healing [--clients 4] [--settle 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.support.traffic import SHORT, Traffic
from tools.serving import healing, runtime
from tools.settings import Protocol

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
RESULTS = Path(__file__).resolve().parent / "results" / "healing.json"
VICTIMS = [("tokenizer", "1", "tokenizer_0_1"), ("encoder", "2", "encoder_0_1")]
HEAL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Kill:
    """One SIGKILLed stub and what the clients saw."""

    model: str
    instance: str
    requests: int
    failed: int
    failed_after_heal: int
    detected_s: float
    healed_s: float
    recovered_s: float


def kill_and_measure(server: runtime.TritonServer, traffic: Traffic, heals: list[tuple[healing.Heal, float]],
                     healed: threading.Event, victim: tuple[str, str, str], settle: float) -> Kill:
    model, _, instance = victim
    [stub] = [s for s in healing.live_stubs(server.child.pid) if (s.model, s.version, s.instance) == victim]
    healed.clear()
    killed = time.monotonic()
    os.kill(stub.pid, signal.SIGKILL)
    if not healed.wait(HEAL_TIMEOUT_S):
        sys.exit(f"{model}: no heal within {HEAL_TIMEOUT_S:.0f} s")
    heal, healed_at = heals[-1]
    time.sleep(settle)  # traffic after the heal: any failure there would count
    window = [request for request in traffic.log if request.ended >= killed]
    failures = [request for request in window if not request.ok]
    last_failure = max((request.ended for request in failures), default=killed)
    recovered = min(r.ended for r in window if r.ok and r.ended >= max(healed_at, last_failure))
    return Kill(model, instance, len(window), len(failures), sum(r.started > healed_at for r in failures),
                round(heal.detected_at - killed, 2), round(healed_at - killed, 2), round(recovered - killed, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="client threads, one request in flight each")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of traffic before each kill and after")
    args = parser.parse_args()
    heals: list[tuple[healing.Heal, float]] = []
    healed = threading.Event()

    def on_heal(heal: healing.Heal) -> None:
        heals.append((heal, time.monotonic()))
        healed.set()

    with tempfile.TemporaryDirectory() as scratch:
        repository = Path(scratch) / "repository"
        shutil.copytree(REPOSITORY, repository)  # the heal touches a version folder: not the checkout's
        opts = runtime.ServerOptions.on_free_ports(repository=repository)
        with runtime.running_server(opts) as server, \
                healing.Healer(server, on_heal, lambda failure: print(f"heal failed: {failure}")), \
                Traffic([(Protocol.HTTP, server.http_url, SHORT)] * args.clients, pause_after_failure_s=0) as traffic:
            kills = []
            for victim in VICTIMS:
                time.sleep(args.settle)
                kills.append(kill_and_measure(server, traffic, heals, healed, victim, args.settle))
    print(f"{'stub killed':<16}{'requests':>9}{'failed':>8}{'failed after heal':>19}"
          f"{'detected':>10}{'healed':>8}{'recovered':>11}")
    for kill in kills:
        print(f"{kill.instance:<16}{kill.requests:>9}{kill.failed:>8}{kill.failed_after_heal:>19}"
              f"{kill.detected_s:>9.2f}s{kill.healed_s:>7.2f}s{kill.recovered_s:>10.2f}s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "setup": {"clients": args.clients, "poll_interval_s": healing.POLL_INTERVAL_S,
                  "confirmations": healing.CONFIRMATIONS, "protocol": "http", "cpus": os.cpu_count()},
        "kills": [asdict(kill) for kill in kills]}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
