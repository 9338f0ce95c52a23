"""Measure load shedding of the `embed` ensemble with the project's load tester (Locust, `tools.loadtest.runner`).

1. Sustainable rate: open-loop short queries (corpus texts of at most 12 words, one per request) at rising rates
   against the repository with no queue policy; the sustainable rate is the highest one whose accepted throughput
   reaches 95 % of the target with accepted p99 inside the SLO and no error.
2. Spike: Locust's spike shape with --rate 4 x sustainable (the baseline quarter of the users sends ~1 x, all of
   them ~4 x in the middle fifth of the run), against servers up side by side: one without a queue policy and one
   per encoder policy (the shipped one unless --policy says otherwise). Runs alternate between them in interleaved
   rounds, the order rotating each round (the machine is shared and noisy); medians and ratios are printed.

Only the encoder gets the policy: it is the step whose queue grows (the tokenizer stays far below its
capacity); its refusal ends the ensemble request with Triton's status (HTTP 503 / gRPC UNAVAILABLE).

Run: .venv/bin/python loadtests/bench_overload.py [--rounds 3] [--spike-s 30] [--policy 16:150 --policy 8:100]
Writes loadtests/results/overload.json and overload.md (--name picks another stem).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from tools import repository, settings
from tools.loadtest import corpus
from tools.loadtest import runner as loadtest
from tools.loadtest.profiles import Shape
from tools.serving import runtime
from tools.validation import write_config

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
RESULTS = Path(__file__).resolve().parent / "results"
SHORT_QUERY_WORDS = 12
SUSTAINED = 0.95  # a rate is sustained when accepted/s reaches this share of it


def short_queries(folder: Path) -> Path:
    """The built-in corpus's texts of at most SHORT_QUERY_WORDS words, as a corpus file of their own."""
    texts = [text for text in corpus.load() if len(text.split()) <= SHORT_QUERY_WORDS]
    path = folder / "short_queries.txt"
    path.write_text("\n".join(texts) + "\n")
    return path


def shipped_policy() -> str:
    """The encoder's policy as shipped, as --policy reads it ('' when it has none)."""
    policy = repository.load_repository(REPOSITORY).models[settings.ENCODER_MODEL].config.dynamic_batching
    queue = policy.default_queue_policy
    if not (queue.max_queue_size or queue.default_timeout_microseconds):
        return ""
    return f"{queue.max_queue_size}:{queue.default_timeout_microseconds / 1000:g}"


def parse_policy(text: str) -> tuple[int, int]:
    """'16:150' -> (max_queue_size 16, default_timeout_microseconds 150000); '16' has no timeout."""
    size, _, timeout_ms = text.partition(":")
    try:
        policy = int(size), round(float(timeout_ms or 0) * 1000)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid policy {text!r}: use MAX_QUEUE_SIZE[:TIMEOUT_MS]") from None
    if min(policy) < 0 or not any(policy):
        raise argparse.ArgumentTypeError(f"invalid policy {text!r}: a queue size and/or a timeout above 0")
    return policy


def policy_name(policy: tuple[int, int]) -> str:
    size, timeout_us = policy
    if not any(policy):
        return "none"
    return f"queue {size or '-'}, timeout {f'{timeout_us / 1000:g} ms' if timeout_us else '-'}"


def policy_repository(folder: Path, queue_size: int, timeout_us: int) -> Path:
    """A copy of the repository whose encoder has this queue policy (none when both are 0), written validated."""
    target = folder / f"repository_q{queue_size}_t{timeout_us}"
    shutil.copytree(REPOSITORY, target, ignore=shutil.ignore_patterns("__pycache__"))
    repo = repository.load_repository(target)
    encoder = repo.models[settings.ENCODER_MODEL].config
    encoder.dynamic_batching.ClearField("default_queue_policy")
    if queue_size or timeout_us:
        policy = encoder.dynamic_batching.default_queue_policy
        policy.max_queue_size, policy.default_timeout_microseconds = queue_size, timeout_us
        policy.timeout_action = policy.REJECT
    write_config(repo, settings.ENCODER_MODEL, encoder)
    return target


def measure(server: runtime.TritonServer, args: argparse.Namespace, queries: Path, out: Path, **shape) -> dict:
    """One Locust run against `server`; the figures a row of the report needs."""
    url = server.grpc_url if args.protocol == "grpc" else server.http_url
    config = loadtest.LoadTestConfig(url=url, protocol=args.protocol, corpus=queries, metrics_url=server.metrics_url,
                                     **shape)
    result = loadtest.run(config, out)
    client = result.client
    # Triton's own view: where requests waited, and how long `embed` took inside the server (its client-side p99 on
    # a starved machine also holds the time Locust's own process waited for a core).
    return {"triton_request_ms": {f.model: round(f.request_ms, 1) for f in result.triton},
            "triton_queue_ms": {f.model: round(f.queue_ms, 1) for f in result.triton},
            "triton_failures": {f.model: f.failures for f in result.triton},
            "requests": client.requests, "accepted": client.accepted, "refused": client.refused,
            "errors": client.failures, "offered_rps": round(client.offered_rps, 1),
            "accepted_rps": round(client.throughput_rps, 1), "p50_ms": client.latency_ms["p50"],
            "p99_ms": client.latency_ms["p99"], "max_ms": client.latency_ms["max"],
            "refused_p50_ms": client.refusal_latency_ms["p50"], "refused_p99_ms": client.refusal_latency_ms["p99"],
            "refusals": client.refusals,
            "error_messages": client.errors}


def users_for(rate: float, slo_ms: float) -> int:
    """Enough paced users to keep `rate` up while each waits up to twice the SLO for an answer."""
    return max(4, math.ceil(rate * slo_ms / 1000 * 2))


def find_sustainable(server, args, queries: Path, out: Path) -> tuple[float, list[dict]]:
    steps, sustainable = [], 0.0
    rate = args.start_rate
    while rate <= args.max_rate:
        row = {"rate": rate, **measure(server, args, queries, out / f"rate_{rate:g}", shape=Shape.RATE,
                                       request_rate=rate, users=users_for(rate, args.slo_p99_ms),
                                       duration_s=args.step_s)}
        ok = row["accepted_rps"] >= SUSTAINED * rate and row["p99_ms"] <= args.slo_p99_ms and not row["errors"]
        row["sustained"] = ok
        steps.append(row)
        print(f"  {rate:6.0f} req/s -> accepted {row['accepted_rps']:6.1f}/s  p50 {row['p50_ms']:6.0f} ms  "
              f"p99 {row['p99_ms']:6.0f} ms  refused {row['refused']}  errors {row['errors']}  "
              f"{'sustained' if ok else 'NOT sustained'}", flush=True)
        if not ok:
            break
        sustainable = rate
        rate += args.rate_step
    return sustainable, steps


def median_of(runs: list[dict]) -> dict:
    keys = ("requests", "accepted", "refused", "errors", "offered_rps", "accepted_rps", "p50_ms", "p99_ms", "max_ms",
            "refused_p50_ms", "refused_p99_ms")
    return {key: statistics.median(run[key] for run in runs) for key in keys}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def markdown(report: dict) -> str:
    s = report["spike"]
    lines = [f"Load shedding of `embed` ({report['protocol']}, short queries), {report['load_average']}; "
             f"SLO: accepted p99 <= {report['slo_p99_ms']:g} ms.", "",
             f"Sustainable rate: **{report['sustainable_rps']:g} req/s** (open loop, {report['step_s']:g} s steps).",
             "", "| rate req/s | accepted/s | p50 ms | p99 ms | refused | errors |", "|--:|--:|--:|--:|--:|--:|"]
    lines += [f"| {r['rate']:g} | {r['accepted_rps']:g} | {r['p50_ms']:g} | {r['p99_ms']:g} | {r['refused']} | "
              f"{r['errors']} |" for r in report["sustainable_steps"]]
    lines += ["", f"Spike: {s['rate']:g} req/s (4 x) from {s['users']} paced users, {s['duration_s']:g} s runs "
                  f"(spike in the middle fifth), {s['rounds']} interleaved rounds (each column the median of its "
                  "rounds); encoder queue policy "
                  "(max_queue_size, default_timeout_microseconds; timeout_action REJECT):", "",
              "| encoder queue policy | requests | accepted | refused | errors | accepted/s | p50 ms | p99 ms | "
              "max ms | refused p50 / p99 ms | p99 none / this |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for name, row in s["median"].items():
        lines.append(f"| {name} | {row['requests']:g} | {row['accepted']:g} | {row['refused']:g} | {row['errors']:g} "
                     f"| {row['accepted_rps']:g} | {row['p50_ms']:g} | {row['p99_ms']:g} | {row['max_ms']:g} | "
                     f"{row['refused_p50_ms']:g} / {row['refused_p99_ms']:g} | {s['p99_ratios'][name]} |")
    lines += ["", "Refusal wording (Locust's failure table): " + "; ".join(f"`{m}`" for m in s["refusal_wording"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=[p.value for p in settings.Protocol], default="grpc")
    parser.add_argument("--slo-p99-ms", type=float, default=250.0, help="accepted p99 the policy must keep")
    parser.add_argument("--start-rate", type=float, default=40.0)
    parser.add_argument("--rate-step", type=float, default=20.0)
    parser.add_argument("--max-rate", type=float, default=300.0)
    parser.add_argument("--step-s", type=float, default=8.0, help="length of each sustainable-rate step")
    parser.add_argument("--sustainable", type=float, default=0.0, help="skip the search: use this rate")
    parser.add_argument("--spike-s", type=float, default=30.0, help="length of each spike run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved spike rounds")
    parser.add_argument("--name", default="overload", help="results/<name>.json and .md")
    parser.add_argument("--policy", type=parse_policy, action="append", default=[],
                        help="an encoder policy to test, MAX_QUEUE_SIZE[:TIMEOUT_MS] (repeat; default: the shipped)")
    args = parser.parse_args()
    policies = [(0, 0), *(args.policy or ([parse_policy(shipped_policy())] if shipped_policy() else []))]
    if len(policies) < 2:
        parser.error("no policy to test: the shipped encoder has none; pass --policy")
    RESULTS.mkdir(exist_ok=True)
    load_average = "load average {:.1f}/{:.1f}/{:.1f} at start".format(*os.getloadavg())
    print(f"{load_average}; {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_overload_") as scratch, contextlib.ExitStack() as stack:
        work = Path(scratch)
        queries = short_queries(work)
        servers = {policy_name(policy): stack.enter_context(runtime.running_server(runtime.ServerOptions.on_free_ports(
            repository=policy_repository(work, *policy)))) for policy in policies}
        sustainable, steps = args.sustainable, []
        if not sustainable:
            print(f"sustainable rate (no policy, {args.protocol}, short queries):", flush=True)
            sustainable, steps = find_sustainable(servers["none"], args, queries, work)
        if not sustainable:
            raise SystemExit(f"not even {args.start_rate:g} req/s was sustained: lower --start-rate")
        rate = 4 * sustainable
        users = users_for(rate, args.slo_p99_ms)
        print(f"sustainable {sustainable:g} req/s; spike to {rate:g} req/s with {users} users, {args.rounds} "
              f"interleaved rounds:", flush=True)
        names = list(servers)
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for number in range(args.rounds):
            for name in names[number % len(names):] + names[:number % len(names)]:
                row = measure(servers[name], args, queries, work / f"spike_{name}_{number}", shape=Shape.SPIKE,
                              request_rate=rate, users=users, duration_s=args.spike_s)
                runs[name].append(row)
                print(f"  round {number + 1} {name}: requests {row['requests']}  refused {row['refused']}  "
                      f"errors {row['errors']}  accepted {row['accepted_rps']}/s  p50 {row['p50_ms']:g} ms  "
                      f"p99 {row['p99_ms']:g} ms  refused p50/p99 {row['refused_p50_ms']:g}/"
                      f"{row['refused_p99_ms']:g} ms  "
                      "Triton: embed "
                      f"{row['triton_request_ms'].get(settings.EMBED_MODEL, 0):g} ms/request, queue ms "
                      f"{row['triton_queue_ms']}", flush=True)
    median = {name: median_of(rows) for name, rows in runs.items()}
    wording = sorted({message for rows in runs.values() for row in rows for message in row["refusals"]})
    report = {
        "protocol": args.protocol, "load_average": load_average, "slo_p99_ms": args.slo_p99_ms,
        "step_s": args.step_s, "sustainable_rps": sustainable, "sustainable_steps": steps,
        "spike": {"rate": rate, "users": users, "duration_s": args.spike_s, "rounds": args.rounds,
                  "policies": {policy_name(p): {"max_queue_size": p[0], "default_timeout_microseconds": p[1]}
                               for p in policies}, "runs": runs, "median": median,
                  "p99_ratios": {name: ratio(median["none"]["p99_ms"], row["p99_ms"]) for name, row in median.items()},
                  "accepted_rps_ratios": {name: ratio(median["none"]["accepted_rps"], row["accepted_rps"])
                                          for name, row in median.items()},
                  "refusal_wording": wording}}
    stem = args.name
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {RESULTS / f'{stem}.json'} and {RESULTS / f'{stem}.md'}")


if __name__ == "__main__":
    main()
