"""The tuner's decisions on metric snapshots recorded from real `tools tune embed` runs (tests/tune/*.json), and
its reading and writing of the settings it turns. No server: these are plain functions."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support import paths
from tools import settings
from tools.repository import load_repository
from tools.tune import decide, knobs, search
from tools.tune.knobs import Knobs, Setting
from tools.tune.snapshot import Snapshot

FIXTURES = Path(__file__).with_name("tune")


def recorded(name: str) -> tuple[Snapshot, Setting]:
    """A recorded snapshot and the setting it was measured at; settings recorded before the tuner turned length
    buckets, preferred batch sizes and queue limits carry the shipped repository's preferred sizes and queue limits,
    and the buckets of the time (none: the tokenizer padded each request to its own longest text)."""
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    shipped = load_repository(paths.REPOSITORY).models
    setting = {}
    for model, fields in data["setting"].items():
        # The recordings' pooler has since been folded into the encoder: it had no buckets, preferred sizes or limit.
        read = knobs.read(shipped[model].config) if model in shipped else Knobs(1, preferred=(), queue_size=0)
        setting[model] = Knobs.from_dict({"buckets": None if read.buckets is None else "", "preferred": read.preferred,
                                          "queue_size": read.queue_size, **fields})
    return Snapshot.from_dict(data["snapshot"]), setting


ALL = sorted(path.stem for path in FIXTURES.glob("*.json"))
BATCHING = "short_queries_buckets_8_users"  # short queries after length buckets: the encoder's batches of 2.5 form


@pytest.mark.parametrize("name", [name for name in ALL if name != BATCHING])
def test_the_model_that_queues_most_is_the_bottleneck(name):
    snapshot, setting = recorded(name)
    most = max(setting, key=lambda m: snapshot.models[m].queue_ms)
    assert decide.bottleneck(snapshot, setting) == most == "encoder"


def test_the_bottleneck_gets_an_instance_then_a_thread_when_the_budget_allows():
    snapshot, setting = recorded("encoder_saturated_8_users")
    moves = decide.propose(snapshot, setting, cores=4, seen=[setting])
    assert [(m.setting["encoder"].instances, m.setting["encoder"].threads) for m in moves[:2]] == [(3, 1), (2, 2)]
    assert moves[0].reason.startswith("encoder: queue 80.6 ms per request, 2.8x its compute: +1 instance (3)")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("cores", [1, 2, 3, 4])
def test_no_move_takes_a_model_beyond_the_cpu_budget(name, cores):
    snapshot, setting = recorded(name)
    for move in decide.propose(snapshot, setting, cores, seen=[setting]):
        for model, wanted in move.setting.items():
            assert wanted.cores <= max(cores, setting[model].cores)
            if wanted.cores > setting[model].cores:
                assert wanted.cores <= cores


def test_at_the_budget_models_that_queue_little_on_a_busy_cpu_give_an_instance_back():
    snapshot, setting = recorded("encoder_queueing_4_users")
    moves = decide.propose(snapshot, setting, cores=2, seen=[setting])
    assert [(m.model, m.setting[m.model].instances) for m in moves[:2]] == [("tokenizer", 1), ("pooler", 1)]
    assert "2% of encoder's queue with the CPU 100% busy: -1 instance (1)" in moves[0].reason


def test_nothing_gives_back_when_the_cpu_has_room():
    snapshot, setting = recorded("encoder_queueing_4_users")
    calm = Snapshot(snapshot.window_s, snapshot.models, cpu=0.5)
    assert not [m for m in decide.propose(calm, setting, cores=2, seen=[setting]) if "-1 instance" in m.reason]


def test_the_batching_delay_grows_one_step_and_is_not_tried_again_once_measured():
    snapshot, setting = recorded("encoder_saturated_8_users")
    moves = decide.propose(snapshot, setting, cores=2, seen=[setting])
    delays = [m for m in moves if m.model == "encoder" and m.setting["encoder"].delay_us != 1000]
    assert [m.setting["encoder"].delay_us for m in delays] == [2000]
    assert "batches of 1.0 on average: batching delay 1000 -> 2000 us" in delays[0].reason
    seen = [setting, *(m.setting for m in moves)]
    assert decide.propose(snapshot, setting, cores=2, seen=seen) == []
    assert "at 2 of 2 core(s)" in decide.why_stop(snapshot, setting, cores=2)


@pytest.mark.parametrize("candidate, incumbent, kept, said", [
    (decide.Outcome(110, 100), decide.Outcome(100, 90), True, "kept"),
    (decide.Outcome(101, 100), decide.Outcome(100, 90), False, "less than 3% gained"),
    (decide.Outcome(150, 200), decide.Outcome(100, 90), False, "over the SLO"),
    (decide.Outcome(150, 100, failed=1), decide.Outcome(100, 90), False, "1 failed request"),
    (decide.Outcome(90, 140), decide.Outcome(100, 300), True, "back inside the SLO"),
    (decide.Outcome(90, 200), decide.Outcome(100, 300), True, "closer"),
])
def test_a_change_is_kept_only_when_it_buys_throughput_inside_the_slo(candidate, incumbent, kept, said):
    verdict = decide.judge(candidate, incumbent, slo_p99_ms=150)
    assert verdict[0] is kept and said in verdict[1]


def test_knobs_round_trip_through_the_shipped_encoder_config_and_its_override():
    config = load_repository(paths.REPOSITORY).models["encoder"].config
    wanted = replace(knobs.read(config), instances=3, threads=2, delay_us=4000, preferred=(4,), queue_size=26)
    changed = knobs.write(config, wanted)
    assert knobs.read(changed) == wanted and knobs.read(config) != wanted  # the original is untouched
    override = knobs.as_override(changed)
    assert override["instance_group"][0]["count"] == 3
    assert override["parameters"]["intra_op_threads"]["string_value"] == "2"
    assert int(override["dynamic_batching"]["max_queue_delay_microseconds"]) == 4000
    assert override["dynamic_batching"]["preferred_batch_size"] == [4]
    assert int(override["dynamic_batching"]["default_queue_policy"]["max_queue_size"]) == 26
    assert Knobs.from_dict(json.loads(json.dumps(wanted.__dict__))) == wanted  # as a report stores it


def test_the_tokenizer_length_buckets_round_trip():
    config = load_repository(paths.REPOSITORY).models[settings.TOKENIZER_MODEL].config
    shipped = knobs.read(config)
    assert shipped.buckets not in (None, "32") and shipped.delay_us is None and shipped.queue_size is None
    changed = knobs.write(config, replace(shipped, buckets="32"))
    assert knobs.as_override(changed)["parameters"]["length_buckets"]["string_value"] == "32"
    assert knobs.describe_change({"t": shipped}, {"t": knobs.read(changed)}) == f't buckets "{shipped.buckets}" -> "32"'


def test_throughput_and_p99_are_read_after_the_change_only():
    rows = [{"timestamp": t, "users": 4, "requests": 10 * t, "refused": 0.0, "failures": 0.0, "p99_ms": 50.0 + t}
            for t in range(1, 13)]
    rows[0]["users"] = 2  # still spawning: not measured
    assert search.settled(rows, since=5.5, users=4) == (10.0, 62.0, 6)
    assert search.settled(rows, since=12, users=4) is None


SHORT = "short_queries_8_users"  # recorded on short queries: the encoder queues 30 ms, 5 wait, batches of 1.1


def _bucket_moves(moves: list[decide.Move]) -> list[str]:
    """The length buckets proposed, in order (moves of the tokenizer that keep its knobs but the buckets)."""
    return [m.setting["tokenizer"].buckets for m in moves
            if m.model == "tokenizer" and m.setting["tokenizer"].buckets and "length buckets" in m.reason]


def test_short_queries_that_wait_yet_never_batch_get_length_buckets_then_one_small_bucket():
    snapshot, setting = recorded(SHORT)
    moves = decide.propose(snapshot, setting, cores=2, seen=[setting], users=8, short_texts=True)
    assert _bucket_moves(moves) == ["16,32,64,128", "32"]
    first = next(m for m in moves if m.setting["tokenizer"].buckets)
    assert first.model == "tokenizer" and "yet batches of 1.1: the short texts' lengths differ" in first.reason
    assert 'tokenizer pads to length buckets "16,32,64,128"' in first.reason
    after = first.setting  # measured: only the single small bucket is left to try, then nothing
    assert _bucket_moves(decide.propose(snapshot, after, cores=2, seen=[setting, after], short_texts=True)) == ["32"]
    single = {**after, "tokenizer": replace(after["tokenizer"], buckets="32")}
    assert _bucket_moves(decide.propose(snapshot, single, cores=2, seen=[setting, after, single],
                                        short_texts=True)) == []


@pytest.mark.parametrize("name", ALL)
def test_no_length_buckets_unless_the_texts_are_short(name):
    snapshot, setting = recorded(name)  # texts of up to 128 tokens: padding them to a bucket would cost compute
    assert _bucket_moves(decide.propose(snapshot, setting, cores=2, seen=[setting], short_texts=False)) == []


def test_no_length_buckets_when_batches_form_or_nothing_waits():
    snapshot, setting = recorded(SHORT)
    encoder = snapshot.models["encoder"]
    for view in (replace(encoder, batch_size=2.5), replace(encoder, pending=1.0)):
        changed = Snapshot(snapshot.window_s, {**snapshot.models, "encoder": view}, snapshot.cpu)
        assert _bucket_moves(decide.propose(changed, setting, cores=2, seen=[setting], short_texts=True)) == []


def test_a_preferred_batch_size_only_where_batches_form():
    snapshot, setting = recorded(SHORT)  # batches of 1.1: nothing to prefer
    assert not [m for m in decide.propose(snapshot, setting, cores=2, seen=[setting], short_texts=True)
                if m.setting[m.model].preferred]
    snapshot, setting = recorded(BATCHING)
    # The encoder's queue (4.8 ms) is small beside its batch's compute (21 ms): the pooler passes the bottleneck
    # ratio, but the encoder still queues most, and both batch.
    assert decide.bottleneck(snapshot, setting) == "pooler" and decide.most_queueing(snapshot, setting) == "encoder"
    moves = [m for m in decide.propose(snapshot, setting, cores=2, seen=[setting]) if m.setting[m.model].preferred]
    assert [(m.model, m.setting[m.model].preferred) for m in moves] == [("pooler", (4,)), ("encoder", (4,))]
    assert "encoder: queue 4.8 ms per request, batches of 2.5 form: preferred batch size 4" in moves[1].reason
    grown = moves[1].setting  # measured and kept: next, twice the size
    again = [m for m in decide.propose(snapshot, grown, cores=2, seen=[setting, grown])
             if m.model == "encoder" and m.setting["encoder"].preferred != (4,)]
    assert [m.setting["encoder"].preferred for m in again] == [(8,)]


def test_a_queueing_model_other_than_the_bottleneck_that_never_batches_loses_its_delay():
    snapshot, setting = recorded("encoder_saturated_8_users")  # the pooler queues 1.9 ms at batches of 1.0
    moves = [m for m in decide.propose(snapshot, setting, cores=2, seen=[setting]) if m.model == "pooler"
             and m.setting["pooler"].delay_us != setting["pooler"].delay_us]
    assert [m.setting["pooler"].delay_us for m in moves] == [0]
    assert "pooler: queue 1.9 ms per request" in moves[0].reason and "no batches to wait for: delay 100 -> 0 us" \
        in moves[0].reason
    calm, setting = recorded("encoder_queueing_4_users")  # the pooler queues 0.8 ms: under the floor, left alone
    assert not [m for m in decide.propose(calm, setting, cores=2, seen=[setting])
                if m.model == "pooler" and m.setting["pooler"].delay_us != setting["pooler"].delay_us]


def test_a_queue_limit_under_the_requests_in_flight_is_raised_to_users_plus_instances():
    recorded_8, setting = recorded("encoder_saturated_8_users")  # 6 pending at the encoder, whose queue sheds at 16
    snapshot = Snapshot(recorded_8.window_s, {**recorded_8.models,  # as 24 users would pile them up
                                              "encoder": replace(recorded_8.models["encoder"], pending=12)}, 1.0)
    moves = decide.propose(snapshot, setting, cores=2, seen=[setting], users=24)
    assert moves[0].model == "encoder" and moves[0].setting["encoder"].queue_size == 26
    assert "max_queue_size 16 -> 26 (users + instances: never less" in moves[0].reason
    assert not [m for m in decide.propose(snapshot, setting, cores=2, seen=[setting], users=8)
                if m.setting[m.model].queue_size != setting[m.model].queue_size]  # 8 users + 2 instances fit in 16
    # As recorded (6 pending, none failed) the queue is far from its limit: no evidence, no move even at 24 users.
    assert not [m for m in decide.propose(recorded_8, setting, cores=2, seen=[setting], users=24)
                if m.setting[m.model].queue_size != setting[m.model].queue_size]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("users", [1, 8, 14, 30])
def test_no_move_sets_a_queue_limit_below_users_plus_instances(name, users):
    snapshot, setting = recorded(name)
    for move in decide.propose(snapshot, setting, cores=4, seen=[setting], users=users):
        for model, wanted in move.setting.items():
            if wanted.queue_size != setting[model].queue_size:
                assert wanted.queue_size >= users + wanted.instances
