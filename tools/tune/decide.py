"""The tuner's decisions, as plain functions of a metrics snapshot and the current settings.

Greedy and metric-led: the composing model whose queue time per request dominates is the bottleneck and gets
capacity (one more instance, or one more ONNX thread per instance), as long as its instances x threads stay
within the CPU budget; models that barely queue give an instance back; a batching delay grows one step at a time,
and a step that does not buy throughput inside the SLO is undone, so the delay grows only while it pays.
When the bottleneck's batcher has requests waiting yet dispatches them one by one, their shapes differ: the
tokenizer is asked to pad to a few lengths (buckets) so that they can join. Where batches do form, preferred batch
sizes let the batcher dispatch a full batch without waiting out its delay. Other models that queue get their own
delay moved. A queue limit below the requests the load keeps in flight is raised, never lowered below that.
"""

from __future__ import annotations

import math
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
BATCH_ALONE = 1.3  # an average batch under this: requests are dispatched one by one
BATCH_FORMS = 1.5  # an average batch of at least this: the batcher does join requests
WAITING = 2.0  # requests pending at a model at which several wait together (and could have been joined)
MAX_PREFERRED = 32  # the largest preferred batch size proposed (the shipped encoder batches up to 64)
BUCKET_STEPS = ("16,32,64,128", "32")  # length buckets to try, in order: a few shapes, then one for short texts
# The sweep's levels (tools/tune/space.py), coarse subsets of the ladders above: every instance count up to the cores
# (instances x threads at the budget where a model has threads), these delays and these buckets, each combination.
SWEEP_DELAYS_US = tuple(DELAY_STEPS_US[i] for i in (0, 3, 5))  # none, the shipped encoder's 1 ms, 4 ms
SWEEP_BUCKETS = ("", BUCKET_STEPS[0])  # pad each request to its own longest text, or to a few shapes


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


def most_queueing(snapshot: Snapshot, setting: Setting) -> str | None:
    """The tuned model that queues most per request, if over the floor: once batches form, a batching model's
    compute per request is its whole batch's, so its queue can be worth batching moves under the bottleneck ratio."""
    queueing = [(view.queue_ms, model) for model, view in snapshot.models.items()
                if model in setting and view.requests_per_s > 0 and view.queue_ms >= QUEUE_FLOOR_MS]
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


def bucket_moves(snapshot: Snapshot, setting: Setting, busy: str, short_texts: bool) -> list[Move]:
    """Length buckets for a model that pads (the tokenizer) when the bottleneck's batcher has requests waiting
    together yet runs them one by one (Triton joins only equal shapes) and the texts are short, so that padding them
    to a bucket costs little. The metrics do not tell short texts from long ones (the bottleneck's compute per
    request measured 5x the other hops' on short queries on a busy host, 6-10x on passages): the load says it."""
    view = snapshot.models[busy]
    if not short_texts or setting[busy].delay_us is None or view.batch_size >= BATCH_ALONE or view.pending < WAITING:
        return []
    evidence = (f"{busy}: queue {view.queue_ms:.1f} ms per request, {view.pending:.0f} waiting, yet batches of "
                f"{view.batch_size:.1f}: the short texts' lengths differ, so they cannot join")
    moves = []
    for model, knobs in setting.items():
        if knobs.buckets is None or knobs.buckets in BUCKET_STEPS[1:]:
            continue
        tried = BUCKET_STEPS.index(knobs.buckets) + 1 if knobs.buckets in BUCKET_STEPS else 0
        for buckets in BUCKET_STEPS[tried:]:
            shapes = "one shape for short texts" if "," not in buckets else "a few shapes"
            moves.append(Move(model, with_change(setting, model, buckets=buckets),
                              f"{evidence}: {model} pads to length buckets \"{buckets}\" ({shapes})"))
    return moves


def preferred_move(model: str, view: ModelView, knobs: Knobs, setting: Setting) -> Move | None:
    """A preferred batch size where batches do form: the next power of two over the average batch (or twice the
    largest preferred size already set), dispatched as soon as that many wait instead of after the delay."""
    if knobs.preferred is None or view.batch_size < BATCH_FORMS:
        return None
    size = 2 * max(knobs.preferred) if knobs.preferred else 2 ** math.ceil(math.log2(view.batch_size))
    if size > MAX_PREFERRED:
        return None
    return Move(model, with_change(setting, model, preferred=(size,)),
                f"{model}: queue {view.queue_ms:.1f} ms per request, batches of {view.batch_size:.1f} form: preferred "
                f"batch size {size} (dispatched once {size} wait, without waiting out the {knobs.delay_us} us delay)")


def side_delay_moves(snapshot: Snapshot, setting: Setting, done: list[str]) -> list[Move]:
    """The batching delay of a model other than the bottleneck (and the model that queues most: `done`) that
    queues: shorter when its batches do not form (it waits for nothing), one step longer when they do."""
    moves = []
    for model, knobs in setting.items():
        view = snapshot.models.get(model)
        if model in done or knobs.delay_us is None or view is None or view.requests_per_s <= 0 \
                or view.queue_ms < max(QUEUE_FLOOR_MS, BOTTLENECK_RATIO * view.compute_ms):
            continue
        evidence = f"{_evidence(model, view)}, batches of {view.batch_size:.1f}"
        if view.batch_size < BATCH_ALONE and knobs.delay_us > 0:
            shorter = max(step for step in DELAY_STEPS_US if step < knobs.delay_us)
            moves.append(Move(model, with_change(setting, model, delay_us=shorter),
                              f"{evidence}: no batches to wait for: delay {knobs.delay_us} -> {shorter} us"))
        elif view.batch_size >= BATCH_FORMS and (longer := _next_delay(knobs.delay_us)) is not None:
            moves.append(Move(model, with_change(setting, model, delay_us=longer),
                              f"{evidence}: delay {knobs.delay_us} -> {longer} us"))
    return moves


def queue_floor(knobs: Knobs, users: int) -> int:
    """The least queue limit the load can live with: every user's request may wait while each instance runs one."""
    return users + knobs.instances


def queue_moves(snapshot: Snapshot, setting: Setting, users: int) -> list[Move]:
    """A bounded queue shorter than the load's requests in flight sheds the very load the SLO is measured at: raise
    it to `queue_floor` when the model's requests pile up toward it or fail. Never lowered below that floor."""
    moves = []
    for model, knobs in setting.items():
        view = snapshot.models.get(model)
        if not knobs.queue_size or view is None or knobs.queue_size >= (floor := queue_floor(knobs, users)):
            continue
        if view.failures_per_s > 0 or view.pending >= knobs.queue_size / 2:
            moves.append(Move(model, with_change(setting, model, queue_size=floor),
                              f"{model}: {view.pending:.0f} pending, {view.failures_per_s:.1f} failed/s, sheds beyond "
                              f"{knobs.queue_size} queued while {users} users keep up to {users} requests in flight: "
                              f"max_queue_size {knobs.queue_size} -> {floor} (users + instances: never less, or it "
                              f"refuses the load the SLO is measured at)"))
    return moves


def propose(snapshot: Snapshot, setting: Setting, cores: int, seen: list[Setting],
            users: int | None = None, short_texts: bool = False) -> list[Move]:
    """Every move worth measuring next, best first; settings already measured (`seen`) are left out. `users`: the
    requests the load keeps in flight (None when unknown: no queue-limit move); `short_texts`: the load sends short
    texts (search queries), cheap to pad to a length bucket.

    A queue limit that sheds the load comes first (nothing else can be measured fairly); then capacity for the
    bottleneck; length buckets when its requests cannot join; instances handed back by idle models (cores for the
    bottleneck); a preferred batch size where batches form and a longer batching delay, for the bottleneck and for
    the model that queues most (the same one, or one whose batches make its queue small beside its compute); the
    delays of other models that queue.
    """
    busy = bottleneck(snapshot, setting)
    moves: list[Move] = queue_moves(snapshot, setting, users) if users is not None else []
    if busy is not None:
        view, knobs = snapshot.models[busy], setting[busy]
        moves += capacity_moves(busy, view, knobs, setting, cores)
        moves += bucket_moves(snapshot, setting, busy, short_texts)
    moves += give_back_moves(snapshot, setting, busy)
    batching = list(dict.fromkeys(model for model in (busy, most_queueing(snapshot, setting)) if model is not None))
    for model in batching:
        view, knobs = snapshot.models[model], setting[model]
        moves += [move for move in (preferred_move(model, view, knobs, setting),
                                    delay_move(model, view, knobs, setting)) if move is not None]
    moves += side_delay_moves(snapshot, setting, batching)
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
