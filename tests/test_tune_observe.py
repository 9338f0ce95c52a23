"""`tools tune --observe` against a real Prometheus holding recorded traffic, and the recommendation's rendering.

The traffic is real and recorded once (tests/tune/record_traffic.py: a real Triton under the project's Locust runner,
its /metrics read every second, labelled as a Prometheus scraping the chart's pods labels them). Here it is shifted
to end just now, backfilled with `promtool tsdb create-blocks-from openmetrics` and served by a real Prometheus: the
window is deterministic and nothing is started but Prometheus (a live recording would cost a Triton and a Locust run
per suite, and give a different bottleneck on a noisy host). A second copy without the latency summaries, under
another job, stands for a deployment with summaries off.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.support import paths
from tools import processes, settings
from tools.cli import app
from tools.monitoring import metrics
from tools.monitoring.prometheus import PROMETHEUS_BINARY, binary, promtool
from tools.repository import load_repository
from tools.serving import runtime
from tools.tune import decide, knobs, observe, report
from tools.tune.snapshot import Snapshot
from tools.validation import Severity, validate, write_config

RECORDING = Path(__file__).parent / "tune" / "traffic.om"
SUMMARIES_OFF_JOB = "triton-summaries-off"
TUNED = [settings.TOKENIZER_MODEL, "encoder"]
runner = CliRunner()


def _samples(text: str) -> list[tuple[str, str, float, float]]:
    """(name, labels, value, time) of every sample line of an OpenMetrics text."""
    rows = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value, at = line.rsplit(" ", 2)
            name, labels = series.split("{", 1)
            rows.append((name, labels, float(value), float(at)))
    return rows


def _shifted(text: str, end: float) -> str:
    """The recording moved in time to end at `end`, plus a copy without summaries under another job."""
    rows = _samples(text)
    offset = end - max(at for *_, at in rows)
    kept = [(n, labels, v, at + offset) for n, labels, v, at in rows]
    off = [(n, labels.replace(f'job="{settings.METRICS_JOB}"', f'job="{SUMMARIES_OFF_JOB}"'), v, at)
           for n, labels, v, at in kept if not n.startswith(metrics.REQUEST_SUMMARY_US)]
    return "".join(f"{n}{{{labels} {v!r} {at:.3f}\n" for n, labels, v, at in [*kept, *off]) + "# EOF\n"


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("observe")
    shifted = folder / "traffic.om"
    shifted.write_text(_shifted(RECORDING.read_text(), time.time() - 3))
    done = promtool("tsdb", "create-blocks-from", "openmetrics", shifted, folder / "data")
    assert done.returncode == 0, done.stderr
    (folder / "prometheus.yml").write_text(yaml.safe_dump({"global": {"scrape_interval": "1m"}}))
    address = f"{settings.DEFAULT_HOST}:{processes.free_port()}"
    child = processes.spawn("prometheus", [binary(PROMETHEUS_BINARY), f"--config.file={folder / 'prometheus.yml'}",
                                           f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address={address}",
                                           "--log.level=warn"], log=folder / "prometheus.log")
    try:
        child.wait_until(lambda: processes.http_ok(f"http://{address}/-/ready", timeout=1), 30, "Prometheus ready")
        yield f"http://{address}"
    finally:
        child.stop()


def _recorded_per_model() -> dict[str, tuple[float, float]]:
    """Requests and queue µs per request of every composing model over the whole recording, from the file itself."""
    rows = _samples(RECORDING.read_text())

    def total(family: str, model: str) -> float:
        last: dict[str, float] = {}
        for name, labels, value, _ in rows:
            if name == family and f'model="{model}"' in labels:
                last[labels] = value  # counters: the last reading of each series is its total
        return sum(last.values())

    return {m: (total(metrics.REQUEST_SUCCESS, m), total(metrics.QUEUE_DURATION_US, m)) for m in [*TUNED, "embed"]}


def _observe(url: str, *extra: str, repository: Path = paths.REPOSITORY, out: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["tune", "embed", "--observe", "--prometheus", url, "--window", "2m",
                                 "--repository", str(repository), "--cores", "4", "--out", str(out), *extra])
    return result.exit_code, result.output


def test_observe_names_the_bottleneck_of_the_recorded_traffic_with_its_evidence(prometheus_url, tmp_path):
    before = {p: p.read_text() for p in sorted(paths.REPOSITORY.glob("*/config.pbtxt"))}
    code, output = _observe(prometheus_url, out=tmp_path)
    assert code == 0, output
    found = json.loads((tmp_path / "observe.json").read_text())
    recorded = _recorded_per_model()
    # Prometheus' reading of the window agrees with the recording itself: the requests, and the model that queued most.
    assert found["requests"] == pytest.approx(recorded["embed"][0], rel=0.1)
    queue_per_request = {m: queued / requests for m, (requests, queued) in recorded.items() if m in TUNED}
    busiest = max(queue_per_request, key=queue_per_request.get)
    assert found["bottleneck"] == busiest and found["recommended"]["model"] == busiest, (found, queue_per_request)
    views = found["snapshot"]["models"]
    assert all(views[m]["requests_per_s"] > 0 and views[m]["compute_infer_ms"] > 0 for m in TUNED), views
    assert views[busiest]["queue_ms"] == pytest.approx(queue_per_request[busiest] / 1e3, rel=0.15)
    assert f"recommended: {found['recommended']['change']}" in output and f"{busiest}: queue" in output
    assert f"b/{busiest}/config.pbtxt" in found["diff"] and f"+++ b/{busiest}/config.pbtxt" in output
    assert "tools deploy upgrade --repository" in " ".join(output.split())
    assert {p: p.read_text() for p in before} == before  # nothing written without --write


def test_write_applies_the_recommendation_validated(prometheus_url, tmp_path):
    copy = tmp_path / "model_repository"
    shutil.copytree(paths.REPOSITORY, copy, ignore=shutil.ignore_patterns("*.onnx"))
    code, output = _observe(prometheus_url, "--write", repository=copy, out=tmp_path / "out")
    assert code == 0, output
    found = json.loads((tmp_path / "out" / "observe.json").read_text())
    model = found["recommended"]["model"]
    written = knobs.read(load_repository(copy).models[model].config)
    assert written == knobs.Knobs.from_dict(found["recommended"]["setting"][model]) \
        != knobs.Knobs.from_dict(found["current"][model])
    assert "written (validated)" in output
    assert not [f for f in validate(load_repository(copy)) if f.severity is Severity.ERROR and f.model == model]


@pytest.mark.parametrize("extra, said", [
    (["--namespace", "nowhere"], 'no series of nv_inference_request_success{job="triton-embeddings", '
                                 'namespace="nowhere"} for embed'),
    (["--job", SUMMARIES_OFF_JOB], "no series of nv_inference_request_summary_us"),
    (["--min-requests", "1000000"], "too little traffic to judge"),
])
def test_what_the_window_lacks_is_one_line_and_exit_1(prometheus_url, tmp_path, extra, said):
    code, output = _observe(prometheus_url, *extra, out=tmp_path)
    assert code == 1 and output.startswith("error: ") and said in output, output
    assert output.strip().count("\n") == 0
    if "--min-requests" in extra:
        assert "at least 1000000 needed" in output


def test_an_unreachable_prometheus_or_a_missing_one_is_one_line(tmp_path):
    url = f"http://{settings.DEFAULT_HOST}:{processes.free_port()}"
    code, output = _observe(url, out=tmp_path)
    assert code == 1 and output == f"error: Prometheus at {url} is unreachable\n"
    result = runner.invoke(app, ["tune", "embed", "--observe", "--repository", str(paths.REPOSITORY)])
    assert result.exit_code == 2 and "--prometheus" in result.output


def _recorded_observation(name: str, cores: int = 4) -> observe.Observation:
    """An observation made of a snapshot the live search recorded (tests/tune/), judged against its settings."""
    data = json.loads((Path(__file__).parent / "tune" / f"{name}.json").read_text())
    current = {m: knobs.Knobs(**k) for m, k in data["setting"].items()}
    view = Snapshot.from_dict(data["snapshot"])
    moves = decide.propose(view, current, cores, [current])
    options = observe.ObserveOptions("embed", paths.REPOSITORY, "http://prometheus:9090", 1800,
                                     namespace="embeddings", cores=cores)
    return observe.Observation(options, list(current), 5000, 80.0, view, current, moves,
                               "" if moves else decide.why_stop(view, current, cores))


def test_the_recommendation_is_rendered_with_its_reason_and_alternatives():
    found = _recorded_observation("encoder_queueing_4_users")
    lines = observe.decision_lines(found)
    assert lines[0] == f"recommended: encoder instances 2 -> 3 ({found.moves[0].reason})"
    assert "encoder: queue 14.3 ms per request" in lines[0]
    assert len(lines) == len(found.moves) and all(line.startswith("  also possible: ") for line in lines[1:])
    rows = {row[0]: row for row in observe.evidence_rows(found)}
    assert rows["encoder"][3] == "14.32" and rows["encoder"][6] == "2 inst, 1 thr, delay 1000 us"
    assert 'job="triton-embeddings", namespace="embeddings"' in observe.headline(found)
    assert observe.headline(found).startswith("embed over the last 30m")
    assert observe.deploy_command(found.options) == (f"tools deploy upgrade --repository {paths.REPOSITORY} "
                                                     "--release triton-embeddings --namespace embeddings")
    as_json = json.loads(json.dumps(found.as_dict()))
    assert as_json["bottleneck"] == "encoder" and as_json["recommended"]["change"] == "encoder instances 2 -> 3"
    assert len(as_json["alternatives"]) == len(found.moves) - 1


def test_the_diff_shows_only_the_changed_field_of_the_shipped_config():
    found = _recorded_observation("encoder_queueing_4_users")
    shipped = knobs.read(load_repository(paths.REPOSITORY).models["encoder"].config)
    found.models, found.current = ["encoder"], {"encoder": shipped}  # the shipped encoder alone
    found.moves = [decide.Move("encoder", knobs.with_change(found.current, "encoder", instances=shipped.instances + 1),
                               "because")]
    diff = report.recommended_diff(found)
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert diff.startswith("--- a/encoder/config.pbtxt") and len(changed) == 2, diff
    before, after = changed[0][1:], changed[1][1:]
    assert after == before.replace(str(shipped.instances), str(shipped.instances + 1)) and "count" in after


def test_no_move_is_rendered_as_why_nothing_changes():
    found = _recorded_observation("encoder_queueing_4_users", cores=2)
    found.moves, found.why_none = [], "nothing queues"
    assert observe.decision_lines(found) == ["no change recommended: nothing queues"]
    assert report.recommended_diff(found) == "" and found.as_dict()["recommended"] is None


def test_with_url_the_settings_the_server_runs_are_judged_and_the_diff_carries_them(prometheus_url, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(paths.REPOSITORY, served)
    repository = load_repository(served)
    shipped = knobs.read(repository.models["tokenizer"].config)
    write_config(repository, "tokenizer", knobs.write(repository.models["tokenizer"].config,
                                                      replace(shipped, instances=shipped.instances + 1)))
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=served)) as server:
        code, output = _observe(prometheus_url, "--url", server.http_url, out=tmp_path / "out")
    assert code == 0, output
    found = json.loads((tmp_path / "out" / "observe.json").read_text())
    assert found["current"]["tokenizer"]["instances"] == shipped.instances + 1
    change = f"tokenizer instances {shipped.instances} -> {shipped.instances + 1}"
    assert found["server_differs_from_repository"] == change and change in " ".join(output.split())
    # --write makes the repository what the server runs, plus the recommendation
    assert "+++ b/tokenizer/config.pbtxt" in found["diff"]
    if found["recommended"]["model"] != "tokenizer":
        assert f"+++ b/{found['recommended']['model']}/config.pbtxt" in found["diff"]
