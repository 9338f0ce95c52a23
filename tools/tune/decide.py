"""The tuner's decisions, as plain functions of a metrics snapshot and the current settings.

Greedy and metric-led: the composing model whose queue time per request dominates is the bottleneck and gets
capacity (one more instance, or one more ONNX thread per instance), as long as its instances x threads stay
within the CPU budget; models that barely queue give an instance back; a batching delay grows one step at a time,
and a step that does not buy throughput inside the SLO is undone, so the delay grows only while it pays.
"""

from __future__ import annotations

from dataclasses import dataclass

from tools.tune.knobs import Knobs, Setting, with_change
from tools.tune.snapshot import ModelView, Snapshot

QUEUE_FLOOR_MS = 1.0  # below this a model's queue is noise, whatever its ratio to compute
BOTTLENECK_RATIO = 0.25  # queue / compute at which a model counts as queueing
IDLE_QUEUE_MS = 0.2  # a model queueing less than this (and IDLE_RATIO) can give an instance back
IDLE_RATIO = 0.05
CPU_SATURATED = 0.9  # Triton's host CPU reading at which instances compete for cores
GIVE_BACK_SHARE = 0.1  # on a saturated CPU, a model queueing under this share of the bottleneck's queue gives back
DELAY_STEPS_US = (0, 250, 500, 1000, 2000, 4000, 8000)
MIN_GAIN = 0.03  # a change must buy 3 % throughput to be kept: less is within run-to-run noise here


@dataclass(frozen=True)
class Move:
    """One proposed change of one knob of one model, with the reason in words."""

    model: str
    setting: Setting  # the whole setting after the move
    reason: str


@dataclass(frozen=True)
class Outcome:
    """What one measured setting gave: the client's throughput and p99, and whether it kept the SLO."""

    throughput_rps: float
    p99_ms: float
    failed: int = 0

    def within(self, slo_p99_ms: float) -> bool:
        return self.throughput_rps > 0 and self.p99_ms <= slo_p99_ms and self.failed == 0


def _ratio(view: ModelView) -> float:
    return view.queue_ms / view.compute_ms if view.compute_ms > 0 else 0.0


def _evidence(model: str, view: ModelView) -> str:
    return f"{model}: queue {view.queue_ms:.1f} ms per request, {_ratio(view):.1f}x its compute"


def bottleneck(snapshot: Snapshot, setting: Setting) -> str | None:
    """The tuned model that queues most per request, if it queues at all."""
    queueing = [(view.queue_ms, model) for model, view in snapshot.models.items()
                if model in setting and view.requests_per_s > 0
                and view.queue_ms >= max(QUEUE_FLOOR_MS, BOTTLENECK_RATIO * view.compute_ms)]
    return max(queueing)[1] if queueing else None


def _next_delay(delay_us: int) -> int | None:
    bigger = [step for step in DELAY_STEPS_US if step > delay_us]
    return bigger[0] if bigger else None


def capacity_moves(model: str, view: ModelView, knobs: Knobs, setting: Setting, cores: int) -> list[Move]:
    evidence = _evidence(model, view)
    moves = []
    if (knobs.instances + 1) * (knobs.threads or 1) <= cores:
        moves.append(Move(model, with_change(setting, model, instances=knobs.instances + 1),
                          f"{evidence}: +1 instance ({knobs.instances + 1})"))
    if knobs.threads is not None and knobs.instances * (knobs.threads + 1) <= cores:
        moves.append(Move(model, with_change(setting, model, threads=knobs.threads + 1),
                          f"{evidence}: +1 ONNX thread per instance ({knobs.threads + 1})"))
    return moves


def delay_move(model: str, view: ModelView, knobs: Knobs, setting: Setting) -> Move | None:
    if knobs.delay_us is None or (delay := _next_delay(knobs.delay_us)) is None:
        return None
    return Move(model, with_change(setting, model, delay_us=delay),
                f"{model}: queue {view.queue_ms:.1f} ms per request, batches of {view.batch_size:.1f} on average: "
                f"batching delay {knobs.delay_us} -> {delay} us")


def _idle_because(view: ModelView, snapshot: Snapshot, busy: str | None) -> str | None:
    """Why a model can spare an instance, or None: it barely queues, or it queues far less than the bottleneck
    while the CPU is saturated (its instances then take cores the bottleneck could use)."""
    if view.queue_ms < IDLE_QUEUE_MS and _ratio(view) < IDLE_RATIO:
        return "idle"
    if busy is not None and snapshot.cpu >= CPU_SATURATED \
            and view.queue_ms < GIVE_BACK_SHARE * snapshot.models[busy].queue_ms:
        return (f"{view.queue_ms / snapshot.models[busy].queue_ms:.0%} of {busy}'s queue with the CPU "
                f"{snapshot.cpu:.0%} busy")
    return None


def give_back_moves(snapshot: Snapshot, setting: Setting, busy: str | None) -> list[Move]:
    """An instance less for every model that can spare one (the least queueing first)."""
    moves = []
    for _, model in sorted((view.queue_ms, model) for model, view in snapshot.models.items()
                           if model in setting and model != busy and setting[model].instances > 1):
        view, left = snapshot.models[model], setting[model].instances - 1
        if why := _idle_because(view, snapshot, busy):
            moves.append(Move(model, with_change(setting, model, instances=left),
                              f"{_evidence(model, view)}, {why}: -1 instance ({left})"))
    return moves


def propose(snapshot: Snapshot, setting: Setting, cores: int, seen: list[Setting]) -> list[Move]:
    """Every move worth measuring next, best first; settings already measured (`seen`) are left out.

    Capacity for the bottleneck comes first, then instances handed back by idle models (cores for the bottleneck),
    then a longer batching delay for the bottleneck.
    """
    busy = bottleneck(snapshot, setting)
    moves: list[Move] = []
    if busy is not None:
        view, knobs = snapshot.models[busy], setting[busy]
        moves += capacity_moves(busy, view, knobs, setting, cores)
    moves += give_back_moves(snapshot, setting, busy)
    if busy is not None and (delay := delay_move(busy, snapshot.models[busy], setting[busy], setting)):
        moves.append(delay)
    return [move for move in moves if move.setting not in seen]


def why_stop(snapshot: Snapshot, setting: Setting, cores: int) -> str:
    """Why no move is left to measure, in words."""
    busy = bottleneck(snapshot, setting)
    if busy is None:
        return "no model queues enough to need capacity, none can spare an instance, every other move was measured"
    knobs = setting[busy]
    return (f"{_evidence(busy, snapshot.models[busy])}, at {knobs.cores} of {cores} core(s) "
            f"({knobs.describe()}); every move from here was measured")


def judge(candidate: Outcome, incumbent: Outcome, slo_p99_ms: float, min_gain: float = MIN_GAIN) -> tuple[bool, str]:
    """Keep the candidate? With the reason in words."""
    gain = candidate.throughput_rps / incumbent.throughput_rps - 1 if incumbent.throughput_rps else float("inf")
    shown = f"{candidate.throughput_rps:.1f} req/s ({gain:+.0%}), p99 {candidate.p99_ms:.0f} ms"
    if candidate.failed:
        return False, f"{shown}: {candidate.failed} failed request(s): undone"
    if not candidate.within(slo_p99_ms):
        if not incumbent.within(slo_p99_ms) and candidate.p99_ms < incumbent.p99_ms:
            return True, f"{shown}: still over the SLO, but closer: kept"
        return False, f"{shown}: over the SLO ({slo_p99_ms:.0f} ms): undone"
    if not incumbent.within(slo_p99_ms):
        return True, f"{shown}: back inside the SLO: kept"
    if gain >= min_gain:
        return True, f"{shown}: kept"
    return False, f"{shown}: less than {min_gain:.0%} gained: undone"
