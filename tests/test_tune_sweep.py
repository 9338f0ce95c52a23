"""`tools tune --strategy sweep`: the grid on the shipped repository's configs (no server: plain functions), one tiny
sweep for real (tritonserver on a copy of the shipped repository, Prometheus, Locust; two points, short windows) and
the option's one-line errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support import paths
from tools import settings
from tools.cli import app
from tools.errors import TuneError
from tools.repository import load_repository
from tools.tune import decide, knobs, report, search, space
from tools.tune.search import TuneOptions
from tools.tune.space import Strategy

runner = CliRunner()


def _options(repository: Path = paths.REPOSITORY, cores: int = 2, slo_p99_ms: float = 150, **more) -> TuneOptions:
    return TuneOptions("embed", repository, slo_p99_ms, cores=cores, strategy=Strategy.SWEEP, **more)


def _shipped() -> knobs.Setting:
    repository = load_repository(paths.REPOSITORY)
    return {m: knobs.read(repository.models[m].config) for m in repository.composing_models("embed")}


def test_the_grid_of_the_shipped_embed_on_2_cores_is_every_combination_of_the_levels():
    grid = search.plan(_options())
    assert grid.refused == {} and len(grid.points) == grid.size
    # The encoder's two instances x threads pairs at the budget (1x2, 2x1), the delays, the tokenizer's instances
    # with and without buckets.
    assert grid.size == 2 * len(decide.SWEEP_DELAYS_US) * 2 * len(decide.SWEEP_BUCKETS)
    assert 20 <= grid.size <= 50  # minutes on 2 cores, not hours
    shown = {(m, k.instances, k.threads, k.delay_us, k.buckets) for point in grid.points for m, k in point.items()}
    assert len({tuple(sorted(point.items())) for point in grid.points}) == grid.size  # no point twice
    assert {(i, t) for m, i, t, *_ in shown if m == "encoder"} == {(1, 2), (2, 1)}
    assert {d for m, _, _, d, _ in shown if m == "encoder"} == set(decide.SWEEP_DELAYS_US)
    assert {b for m, *_, b in shown if m == "tokenizer"} == set(decide.SWEEP_BUCKETS)
    shipped = _shipped()  # what no axis turns stays as configured
    assert all((k.preferred, k.queue_size) == (shipped[m].preferred, shipped[m].queue_size)
               for point in grid.points for m, k in point.items())
    assert f"{grid.size} point(s): encoder instances x threads {{2x1, 1x2}}" in grid.describe()


@pytest.mark.parametrize("cores", [1, 2, 3, 4])
def test_every_point_keeps_each_model_within_the_cores_and_the_encoder_at_them(cores):
    grid = space.grid(_shipped(), cores)
    assert grid.size == len(grid.points) == math.prod(len(axis.levels) for axis in grid.axes)
    for point in grid.points:
        for wanted in point.values():
            assert wanted.cores <= cores
            if wanted.threads is not None:  # neither one more instance nor one more thread would fit
                assert (wanted.instances + 1) * wanted.threads > cores
                assert wanted.instances * (wanted.threads + 1) > cores
    assert {point["tokenizer"].instances for point in grid.points} == set(range(1, cores + 1))


def test_consecutive_points_reload_one_model_or_change_one_delay_and_the_encoder_least():
    shipped = _shipped()
    grid = space.grid(shipped, 2)
    assert grid.points[0] == shipped  # the sweep starts at the repository's settings
    before = shipped
    changed = []
    for point in grid.points[1:]:
        models = {m for m in point if point[m] != before[m]}
        fields = {f for m in models for f in knobs.FIELDS if getattr(point[m], f) != getattr(before[m], f)}
        assert len(models) == 1 or fields == {"delay_us"}, (before, point)
        changed.append(models)
        before = point
    # The encoder (slowest to reload) is loaded once per setting of its own: each forms one run of points.
    encoder_runs = sum(1 for models in changed if "encoder" in models)
    assert encoder_runs == len({point["encoder"] for point in grid.points}) - 1


def test_points_validation_refuses_are_left_out_before_anything_starts(tmp_path):
    copy = tmp_path / "model_repository"
    shutil.copytree(paths.REPOSITORY, copy)
    config = copy / "encoder" / "config.pbtxt"
    # An encoder that fails validation as it stands (E310, which Triton refuses too): no point may rewrite it.
    config.write_text(config.read_text().replace("  max_queue_delay_microseconds: 1000\n",
                                                 "  max_queue_delay_microseconds: 100 preferred_batch_size: [ 128 ]\n"))
    with pytest.raises(TuneError, match=r"refuses every point of the sweep.s grid: encoder: E310 .* \(for encoder 2"):
        search.plan(_options(copy))  # an encoder delay of 100 us is no level: every point changes it
    config.write_text(config.read_text().replace("max_queue_delay_microseconds: 100 ",
                                                 "max_queue_delay_microseconds: 1000 "))
    grid = search.plan(_options(copy))
    encoder = knobs.read(load_repository(copy).models["encoder"].config)
    assert grid.points and all(point["encoder"] == encoder for point in grid.points)
    encoder_levels = 2 * len(decide.SWEEP_DELAYS_US)  # the encoder's instances x threads pairs x the delays
    assert len(grid.points) == grid.size // encoder_levels
    [(why, settings)] = grid.refused.items()
    assert why.startswith("encoder: E310") and len(settings) == encoder_levels - 1
    assert "refused by validation" in grid.describe()


def test_a_tiny_sweep_loads_every_point_live_without_failing_a_request(tmp_path):
    # Two points that reload the tokenizer only (the quickest reload, so that one run measures each): its buckets,
    # then its instances. The grid's own construction is tested above. Over HTTP: Locust's gRPC teardown now and then
    # hangs until it is killed, 15 s a run.
    options = _options(slo_p99_ms=10_000, window_s=5, users=4, protocol=settings.Protocol.HTTP,
                       out_dir=tmp_path / "tune")
    shipped = _shipped()
    first = knobs.with_change(shipped, "tokenizer", buckets="32")
    grid = space.Grid([], [first, knobs.with_change(first, "tokenizer", instances=1)], size=2)
    lines = []
    found = search.run(options, on_step=lambda step: lines.append(report.progress_line(step, Strategy.SWEEP)),
                       grid=grid)
    assert [step.setting for step in found.steps[1:]] == grid.points
    # Each point is loaded over the one before it: only what differs from it is reloaded.
    assert [step.change for step in found.steps[1:]] == [
        f'tokenizer buckets "{shipped["tokenizer"].buckets}" -> "32"', "tokenizer instances 2 -> 1"]
    for step in found.steps[1:]:
        assert step.apply_s > 0 and step.requests > 0 and step.failed == 0 and step.throughput_rps > 0, step
    assert lines[1].startswith("sweep 1/2: tokenizer 2 inst, buckets 32")
    assert lines[2].startswith("sweep 2/2: tokenizer 1 inst, buckets 32")
    assert found.best() is not None and found.stopped == "every point of the grid was tried (2)"
    files = report.write(found, options.out_dir)
    saved = json.loads(files["json"].read_text())
    assert saved["strategy"] == "sweep" and saved["grid"]["points"] == 2 and saved["failed_during_changes"] == 0
    assert report.title(found).startswith("tools tune embed (sweep): 3 settings measured")
    assert files["plot"].stat().st_size > 0
    assert report.table_columns(found)[-1] == "winner"
    assert [row[-1] for row in report.table_rows(found)].count("yes") == 1


@pytest.mark.parametrize("argv, said", [
    (["--strategy", "sweep", "--steps", "3"], "--steps is the greedy's budget"),
    (["--strategy", "sweep", "--observe", "--prometheus", "http://127.0.0.1:9"], "no --apply or --strategy"),
])
def test_the_sweeps_misused_options_are_one_line_and_exit_2(tmp_path, argv, said):
    result = runner.invoke(app, ["tune", "embed", "--slo", "p99=150ms", *argv, "--repository", str(paths.REPOSITORY),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.output.startswith("error: ") and said in result.output, result.output
    assert result.output.strip().count("\n") == 0
