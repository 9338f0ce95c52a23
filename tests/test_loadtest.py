"""Load testing: the parsing and arithmetic alone, then short real Locust runs against one real local Triton."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from typer.testing import CliRunner

from tests.support import paths
from tools import settings
from tools.cli import app
from tools.loadtest import corpus
from tools.loadtest import profiles as load_profiles
from tools.loadtest import runner as loadtest
from tools.monitoring import metrics
from tools.monitoring import scrape as triton_metrics
from tools.serving import runtime

# -- parsing and arithmetic ----------------------------------------------------------------------------------------


def test_durations_and_slos_parse_with_units():
    assert loadtest.parse_duration("60s") == 60 and loadtest.parse_duration("2m") == 120
    assert loadtest.parse_duration("500ms") == 0.5 and loadtest.parse_duration("7") == 7
    targets = {t.key: t.limit for t in loadtest.parse_slo("p99=50ms, p50=2s,errors=0.1%,max=300us,rps=20")}
    assert targets == {"p99": 50, "p50": 2000, "errors": pytest.approx(0.001), "max": 0.3, "rps": 20}


@pytest.mark.parametrize("text", ["", "p99", "p98=5ms", "errors=5ms", "p99=fast", "rps=3%"])
def test_bad_slos_are_refused_with_a_hint(text):
    with pytest.raises(ValueError, match="SLO"):
        loadtest.parse_slo(text)


@pytest.mark.parametrize("text", ["", "soon", "-5s", "0s", "3 days"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="duration"):
        loadtest.parse_duration(text)


def test_slo_check_reports_each_broken_term_with_the_measurement():
    summary = loadtest.ClientSummary(requests=1000, failures=5, elapsed_s=10, throughput_rps=100,
                                     latency_ms={"p50": 10, "p90": 20, "p95": 30, "p99": 80, "max": 120}, errors={})
    assert loadtest.check_slo(summary, loadtest.parse_slo("p99=100ms,errors=1%,rps=50")) == []
    broken = loadtest.check_slo(summary, loadtest.parse_slo("p99=50ms,errors=0.1%,rps=200"))
    assert len(broken) == 3 and "80 ms" in broken[0] and "0.5000%" in broken[1] and "100.0 req/s" in broken[2]


def test_percentiles_come_from_the_merged_histogram():
    histogram = {1.0: 50, 2.0: 40, 10.0: 9, 100.0: 1}
    assert [loadtest.percentile(histogram, q) for q in (0.5, 0.9, 0.99, 1.0)] == [1.0, 2.0, 10.0, 100.0]
    assert loadtest.percentile({}, 0.5) == 0.0


def test_profiles_shape_the_user_count_over_time():
    users = [load_profiles.users_at(load_profiles.STEP, t, 8, 8.0) for t in (0, 2.5, 4.5, 7.9)]
    assert users == [2, 4, 6, 8]
    spike = [load_profiles.users_at(load_profiles.SPIKE, t, 8, 10.0) for t in (1, 5, 9)]
    assert spike == [2, 8, 2]
    assert load_profiles.users_at(load_profiles.CONSTANT, 3, 5, 10) == 5
    assert load_profiles.users_at(load_profiles.RATE, 10, 5, 10) is None
    assert load_profiles.pacing_interval(50, 10) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        load_profiles.users_at("sawtooth", 1, 1, 2)


def test_the_corpus_is_deterministic_varied_and_has_long_texts():
    texts = corpus.generate(300, seed=7)
    assert texts == corpus.generate(300, seed=7) and texts != corpus.generate(300, seed=8)
    words = sorted(len(text.split()) for text in texts)
    assert words[0] <= 6 and words[-1] >= 150 and len(set(texts)) > 250
    assert corpus.load(corpus.DEFAULT_CORPUS)[:5] == corpus.generate(5)


def test_triton_figures_are_per_request_deltas_between_two_scrapes():
    def exposition(success: int, queue_us: int, infer_us: int, inferences: int, executions: int) -> str:
        labels = '{model="encoder",version="2"}'
        return (f"# HELP x\n{metrics.REQUEST_SUCCESS}{labels} {success}\n{metrics.REQUEST_FAILURE}{labels} 0\n"
                f"{metrics.QUEUE_DURATION_US}{labels} {queue_us}\n{metrics.COMPUTE_INFER_DURATION_US}{labels} "
                f"{infer_us}\n{metrics.INFERENCE_COUNT}{labels} {inferences}\n{metrics.EXEC_COUNT}{labels} "
                f"{executions}\n")

    before = triton_metrics.parse(exposition(10, 1000, 5000, 10, 10))
    after = triton_metrics.parse(exposition(110, 201000, 805000, 110, 35))
    [figures] = triton_metrics.model_figures(before, after)
    assert (figures.model, figures.version, figures.requests) == ("encoder", "2", 100)
    assert figures.queue_ms == pytest.approx(2.0) and figures.compute_ms == pytest.approx(8.0)
    assert figures.avg_batch == pytest.approx(4.0)
    assert triton_metrics.model_figures(after, after) == []


# -- real runs -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    with runtime.running_server(runtime.ServerOptions.on_free_ports()) as started:
        yield started


def _config(server, protocol: str, **overrides) -> loadtest.LoadTestConfig:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    options = {"users": 2, "duration_s": 3.0, **overrides}
    return loadtest.LoadTestConfig(url=url, protocol=protocol, metrics_url=server.metrics_url, **options)


def test_an_http_run_has_no_failures_and_writes_both_views(server, tmp_path):
    seen = []
    result = loadtest.run(_config(server, "http"), tmp_path, loadtest.parse_slo("errors=0"), on_progress=seen.append)
    assert result.client.requests > 0 and result.client.failures == 0 and result.slo_broken == []
    assert seen and seen[-1].requests > 0 and "users 2" in seen[-1].describe(3.0)
    report = json.loads((tmp_path / "summary.json").read_text())
    assert {"config", "client", "triton", "slo", "history"} <= report.keys()
    assert {"requests", "failures", "throughput_rps", "latency_ms", "error_rate"} <= report["client"].keys()
    assert set(report["client"]["latency_ms"]) == {"p50", "p90", "p95", "p99", "max"}
    assert report["slo"]["passed"] is True
    triton = {row["model"]: row for row in report["triton"]}
    assert set(triton) == {settings.EMBED_MODEL, settings.TOKENIZER_MODEL, settings.ENCODER_MODEL,
                           settings.POOLER_MODEL}
    # Triton also counts requests that were in flight when Locust stopped its users.
    assert triton[settings.EMBED_MODEL]["requests"] >= result.client.requests
    assert all(row["avg_batch"] >= 1 and row["compute_ms"] > 0 for name, row in triton.items()
               if name != settings.EMBED_MODEL)
    header, row = (tmp_path / "summary.csv").read_text().splitlines()
    assert header.split(",") == list(loadtest.SUMMARY_FIELDS) and row.startswith("embed,http,constant,2,")
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_a_grpc_step_run_reports_requests_and_ramps_users(server, tmp_path):
    result = loadtest.run(_config(server, "grpc", users=4, duration_s=4.0, shape=load_profiles.STEP), tmp_path)
    assert result.client.requests > 0 and result.client.failures == 0
    users = [row["users"] for row in result.history if row["users"]]
    assert min(users) < max(users) == 4


def test_an_open_loop_run_holds_the_requested_rate(server, tmp_path):
    config = _config(server, "grpc", users=4, duration_s=4.0, shape=load_profiles.RATE, request_rate=10.0)
    result = loadtest.run(config, tmp_path)
    assert result.client.failures == 0
    assert 5 <= result.client.throughput_rps <= 15


def test_an_impossible_slo_fails_the_command(server, tmp_path):
    outcome = CliRunner().invoke(app, ["loadtest", "--url", server.http_url, "--protocol", "http", "--metrics-url",
                                       server.metrics_url, "--users", "1", "--duration", "2s",
                                       "--slo", "p99=0.001ms", "--out", str(tmp_path)])
    assert outcome.exit_code == 1, outcome.output
    assert "p99 <= 0.001 ms broken" in outcome.output and "Triton's view" in outcome.output


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_command_refuses_to_start_without_a_ready_model(server, protocol, tmp_path):
    url = server.http_url if protocol == "http" else server.grpc_url
    common = ["loadtest", "--protocol", protocol, "--users", "1", "--duration", "2s", "--out", str(tmp_path)]
    nobody = CliRunner().invoke(app, [*common, "--url", f"127.0.0.1:{runtime.free_port()}"])
    assert nobody.exit_code == 1 and "cannot reach" in nobody.output
    unknown = CliRunner().invoke(app, [*common, "--url", url, "--model", "no_such_model"])
    assert unknown.exit_code == 1 and "no_such_model at" in unknown.output and "not ready" in unknown.output
    assert not (tmp_path / "summary.json").exists(), "nothing ran"


@pytest.mark.parametrize("args", [["--slo", "p99=soon"], ["--shape", "zigzag"], ["--protocol", "udp"],
                                  ["--shape", "rate"], ["--duration", "forever"]])
def test_bad_options_exit_2_with_a_message_and_no_traceback(args, tmp_path):
    outcome = CliRunner().invoke(app, ["loadtest", "--out", str(tmp_path), *args])
    assert outcome.exit_code == 2 and "error" in outcome.output.lower() and "Traceback" not in outcome.output


def test_an_unreachable_server_fails_every_request_and_breaks_the_error_slo(tmp_path):
    config = loadtest.LoadTestConfig(url=f"127.0.0.1:{runtime.free_port()}", protocol="http", users=1,
                                     duration_s=2.0)
    result = loadtest.run(config, tmp_path, loadtest.parse_slo("errors=1%"))
    assert result.client.requests > 0 and result.client.failures == result.client.requests
    assert result.client.errors and result.slo_broken and "--metrics-url" in result.triton_note


def test_the_web_ui_answers_on_loopback(server):
    port = runtime.free_port()
    process = subprocess.Popen([sys.executable, "-m", "tools", "loadtest", "--web", "--web-port", str(port),
                                "--url", server.grpc_url], cwd=paths.PROJECT_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, status = time.monotonic() + 30, None
        while status is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{settings.DEFAULT_HOST}:{port}/", timeout=2) as response:
                    status = response.status
            except OSError:
                time.sleep(0.3)
        assert status == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the command and the Locust it started share a process group
        process.wait(15)


def test_serve_starts_a_local_server_for_the_run_and_stops_it(tmp_path):
    outcome = CliRunner().invoke(app, ["loadtest", "--serve", "--protocol", "http", "--users", "1", "--duration", "2s",
                                       "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads((tmp_path / "summary.json").read_text())
    assert report["client"]["requests"] > 0 and report["client"]["failures"] == 0
    assert report["config"]["url"].startswith(settings.DEFAULT_HOST) and report["triton"]
