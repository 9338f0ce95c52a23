"""The tuner's decisions on metric snapshots recorded from real `tools tune embed` runs (tests/tune/*.json), and
its reading and writing of the settings it turns. No server: these are plain functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import paths
from tools.repository import load_repository
from tools.tune import decide, knobs, search
from tools.tune.knobs import Knobs, Setting
from tools.tune.snapshot import Snapshot

FIXTURES = Path(__file__).with_name("tune")


def recorded(name: str) -> tuple[Snapshot, Setting]:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    return Snapshot.from_dict(data["snapshot"]), {m: Knobs(**k) for m, k in data["setting"].items()}


ALL = sorted(path.stem for path in FIXTURES.glob("*.json"))


@pytest.mark.parametrize("name", ALL)
def test_the_model_that_queues_most_is_the_bottleneck(name):
    snapshot, setting = recorded(name)
    most = max(setting, key=lambda m: snapshot.models[m].queue_ms)
    assert decide.bottleneck(snapshot, setting) == most == "encoder"


def test_the_bottleneck_gets_an_instance_then_a_thread_when_the_budget_allows():
    snapshot, setting = recorded("encoder_saturated_8_users")
    moves = decide.propose(snapshot, setting, cores=4, seen=[setting])
    assert [m.setting["encoder"] for m in moves[:2]] == [Knobs(3, 1, 1000), Knobs(2, 2, 1000)]
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
    assert moves[-1].setting["encoder"].delay_us == 2000
    assert "batches of 1.0 on average: batching delay 1000 -> 2000 us" in moves[-1].reason
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
    wanted = Knobs(instances=3, threads=2, delay_us=4000)
    changed = knobs.write(config, wanted)
    assert knobs.read(changed) == wanted and knobs.read(config) != wanted  # the original is untouched
    override = knobs.as_override(changed)
    assert override["instance_group"][0]["count"] == 3
    assert override["parameters"]["intra_op_threads"]["string_value"] == "2"
    assert int(override["dynamic_batching"]["max_queue_delay_microseconds"]) == 4000


def test_throughput_and_p99_are_read_after_the_change_only():
    rows = [{"timestamp": t, "users": 4, "requests": 10 * t, "refused": 0.0, "failures": 0.0, "p99_ms": 50.0 + t}
            for t in range(1, 13)]
    rows[0]["users"] = 2  # still spawning: not measured
    assert search.settled(rows, since=5.5, users=4) == (10.0, 62.0, 6)
    assert search.settled(rows, since=12, users=4) is None
