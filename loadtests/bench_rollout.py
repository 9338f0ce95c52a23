"""Measure `tools rollout` on a real local tritonserver under Locust traffic: failed requests and step timings.

A copy of the shipped repository gets an encoder version 3 (a copy of 2) and two broken versions (one fails to
load, one loads and fails every request). Locust (the project's load-test runner, `embed` over HTTP, the corpus)
runs through each scenario while it happens:
- rollouts: encoder 2 -> 3 and back (`--rollback`), `--cycles` times;
- instances: the encoder's instance count changed 2 -> 1 -> 3 -> 2 by config reloads;
- broken versions: a rollout to each, which must fail and restore, with failures only on the canary's requests.
It prints the failed requests per scenario and the median of each step's time, and writes them as JSON.

Run from the checkout: .venv/bin/python -m loadtests.bench_rollout [--cycles 5] [--users 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from tests.support import rollout_repository
from tools.loadtest import runner
from tools.rollout import steps
from tools.rollout.policy import with_policy
from tools.serving import runtime
from tools.serving.control import Control

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "loadtests" / "results" / "rollout.json"
WARMUP_S = 5.0  # Locust's users start and settle before each operation
def prepare(scratch: Path) -> Path:
    return rollout_repository.build(scratch / "repository")


def under_traffic(server: runtime.TritonServer, users: int, seconds: float, out: Path,
                  operation: Callable[[], object]) -> tuple[runner.LoadTestResult, object, float, bool]:
    """Locust for `seconds` with `operation` run after the warm-up; (Locust's result, the operation's, its time,
    whether the traffic lasted the whole operation)."""
    config = runner.LoadTestConfig(url=server.http_url, users=users, duration_s=seconds)
    results: dict[str, runner.LoadTestResult] = {}
    locust = threading.Thread(target=lambda: results.update(run=runner.run(config, out)))
    locust.start()
    time.sleep(WARMUP_S)
    started = time.monotonic()
    value = operation()
    took = time.monotonic() - started
    covered = locust.is_alive()
    locust.join()
    return results["run"], value, took, covered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5, help="rollouts to version 3 and back")
    parser.add_argument("--users", type=int, default=4, help="Locust users (one request in flight each)")
    parser.add_argument("--cycle-seconds", type=float, default=40.0, help="traffic time allowed per cycle")
    args = parser.parse_args()
    timings: dict[str, list[float]] = defaultdict(list)
    scenarios = []

    def record(report: steps.Report) -> steps.Report:
        for step in report.steps:
            timings[f"{report.action}: {step.name}"].append(step.seconds)
        return report

    with tempfile.TemporaryDirectory() as scratch:
        repository = prepare(Path(scratch))
        with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as server:
            control = Control(server.http_url, server.control_key)

            def cycles() -> int:
                for _ in range(args.cycles):
                    record(steps.rollout(control, repository, "encoder", 3))
                    record(steps.rollback(control, repository, "encoder"))
                return args.cycles

            def instances() -> int:
                config = with_policy(control.config("encoder"), control.ready_versions("encoder"))
                for count in (1, 3, 2):
                    config["instance_group"][0]["count"] = count
                    started = time.monotonic()
                    control.load("encoder", config)
                    timings["instance count change"].append(time.monotonic() - started)
                return 3

            def broken(version: int) -> Callable[[], str]:
                def attempt() -> str:
                    try:
                        steps.rollout(control, repository, "encoder", version)
                    except steps.RolloutError as exc:
                        record(exc.report)
                        canary = exc.report.canary
                        return (f"refused ({exc.report.steps[-2].name} failed, restored: {exc.report.restored}; "
                                f"canary requests failed: {canary.failed_requests if canary else 0})")
                    return "rolled out (it should not have been)"
                return attempt

            plan = [(f"{args.cycles} rollouts 2 -> 3 and back", args.cycles * args.cycle_seconds, cycles),
                    ("instance count 2 -> 1 -> 3 -> 2", 30.0, instances),
                    ("broken version: fails to load", 30.0, broken(4)),
                    ("broken version: fails every request", 40.0, broken(5))]
            for name, seconds, operation in plan:
                print(f"{name} under {args.users} Locust users ...", flush=True)
                result, outcome, took, covered = under_traffic(server, args.users, seconds,
                                                               Path(scratch) / "locust", operation)
                scenarios.append({"scenario": name, "requests": result.client.requests,
                                  "failed": result.client.failures, "errors": result.client.errors,
                                  "operation_s": round(took, 2), "traffic_covered_operation": covered,
                                  "outcome": outcome})
    print(f"\n{'scenario':<40}{'requests':>9}{'failed':>8}{'op time':>9}  outcome")
    for s in scenarios:
        print(f"{s['scenario']:<40}{s['requests']:>9}{s['failed']:>8}{s['operation_s']:>8.1f}s  {s['outcome']}"
              + ("" if s["traffic_covered_operation"] else "  (traffic ended first: raise --cycle-seconds)"))
    medians = {name: round(statistics.median(values), 3) for name, values in timings.items()}
    print(f"\n{'step':<40}{'median':>9}{'runs':>6}")
    for name, median in medians.items():
        print(f"{name:<40}{median:>8.2f}s{len(timings[name]):>6}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"setup": {"users": args.users, "cycles": args.cycles, "protocol": "http",
                                             "cpus": os.cpu_count()},
                                   "scenarios": scenarios, "step_median_s": medians,
                                   "step_runs_s": {k: [round(v, 3) for v in vs] for k, vs in timings.items()}},
                                  indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
