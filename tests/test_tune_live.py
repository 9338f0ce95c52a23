"""`tools tune` for real: tritonserver on a copy of the shipped repository, Prometheus scraping it, Locust loading it
(tiny windows, one step); a candidate Triton refuses; the winner written back; the one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from tests.support import paths
from tools import settings
from tools.cli import app
from tools.repository import load_repository
from tools.serving import client, runtime
from tools.serving.control import Control
from tools.tune import knobs, report, search
from tools.tune.search import Search, Step, TuneOptions
from tools.validation import Severity, validate

runner = CliRunner()
TUNED = [settings.TOKENIZER_MODEL, "encoder"]


def _configs(repository: Path) -> dict[str, str]:
    return {path.parent.name: path.read_text() for path in sorted(repository.glob("*/config.pbtxt"))}


def test_a_short_tune_changes_the_live_server_without_failing_a_request(tmp_path):
    before = _configs(paths.REPOSITORY)
    # A 4-core budget lets the queueing encoder grow on any host; a loose SLO gives a winner whatever the machine.
    result = runner.invoke(app, ["tune", "embed", "--slo", "p99=10s", "--repository", str(paths.REPOSITORY),
                                 "--steps", "1", "--window", "5", "--users", "8", "--cores", "4",
                                 "--out", str(tmp_path / "tune")])
    assert result.exit_code == 0, result.output
    tuned = json.loads((tmp_path / "tune" / "report.json").read_text())
    changes = [step for step in tuned["steps"][1:] if step["requests"]]
    assert changes, tuned["steps"]
    assert all(step["apply_s"] > 0 and step["failed"] == 0 and step["throughput_rps"] > 0 for step in changes)
    assert tuned["failed_during_changes"] == 0 and tuned["winner"] is not None
    for step in [tuned["steps"][0], *changes]:  # Prometheus' per-model view: every composing model, read back non-zero
        views = step["snapshot"]["models"]
        assert set(views) == set(TUNED) and all(v["requests_per_s"] > 0 and v["compute_infer_ms"] > 0
                                                for v in views.values()), views
    assert "step 1: " in result.output and "winner: step" in result.output
    assert (tmp_path / "tune" / "search.png").stat().st_size > 0
    assert _configs(paths.REPOSITORY) == before  # the user's files are only written with --write


def test_a_candidate_triton_refuses_is_undone_and_the_last_good_setting_serves(tmp_path):
    copy = tmp_path / "model_repository"
    shutil.copytree(paths.REPOSITORY, copy)
    repository = load_repository(copy)
    good = {model: knobs.read(repository.models[model].config) for model in TUNED}
    # ONNX Runtime cannot take this many threads: the encoder's initialize raises and Triton refuses the load.
    bad = knobs.with_change(good, "encoder", threads=2 ** 40)
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=copy)) as server:
        control = Control(server.http_url, server.control_key)
        try:
            search.load_or_restore(control, repository, bad, good)
            raise AssertionError("Triton loaded an encoder with 2**40 threads")
        except search.ServingError as exc:
            assert "encoder" in str(exc)
        running = control.config("encoder")
        assert running["parameters"]["intra_op_threads"]["string_value"] == "1"
        assert client.embed_texts(["still serving"], settings.Protocol.HTTP, server.http_url).shape == (1, 384)


def test_the_winner_is_written_back_validated_with_a_diff(tmp_path):
    copy = tmp_path / "model_repository"
    shutil.copytree(paths.REPOSITORY, copy)
    original = {model: knobs.read(load_repository(copy).models[model].config) for model in TUNED}
    winner = knobs.with_change(original, "encoder", delay_us=2000)
    found = Search(TuneOptions("embed", copy, slo_p99_ms=150), TUNED, original,
                   steps=[Step(0, "none", "", original), Step(1, "encoder delay", "", winner)])
    diff = report.write_back(found, found.steps[1])
    assert "b/encoder/config.pbtxt" in diff and "max_queue_delay_microseconds: 2000" in diff
    assert "tokenizer" not in diff
    assert knobs.read(load_repository(copy).models["encoder"].config).delay_us == 2000
    assert not [f for f in validate(load_repository(copy)) if f.severity is Severity.ERROR]


def test_an_unknown_model_or_an_slo_without_p99_is_one_line_and_exit_2(tmp_path):
    for argv, said in ((["tune", "nope", "--slo", "p99=150ms"], "unknown model 'nope'"),
                       (["tune", "embed", "--slo", "p50=10ms"], "one p99 bound")):
        result = runner.invoke(app, [*argv, "--repository", str(paths.REPOSITORY), "--out", str(tmp_path)])
        assert result.exit_code == 2 and result.output.startswith("error: ") and said in result.output
        assert result.output.strip().count("\n") == 0
