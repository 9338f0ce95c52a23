"""Load testing: the parsing and arithmetic alone, then short real Locust runs against one real local Triton."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from tests.support import paths, starters
from tools import processes, settings
from tools.cli import app
from tools.errors import LoadTestError, UsageError
from tools.loadtest import corpus, report
from tools.loadtest import runner as loadtest
from tools.loadtest.profiles import Shape, pacing_interval, spike_baseline, users_at
from tools.monitoring import metrics, scrape
from tools.serving import runtime

# -- parsing and arithmetic ----------------------------------------------------------------------------------------


def test_durations_are_read_by_locusts_parser_without_importing_locust_here():
    assert [loadtest.parse_duration(text) for text in ("20", "20s", "3m", "1h30m")] == [20, 20, 180, 5400]
    # In a fresh interpreter: parsing must not run Locust's package, whose import patches the process with gevent.
    check = ("import sys; from tools.loadtest import runner; assert runner.parse_duration('2m') == 120; "
             "import gevent.monkey; print(sorted(m for m in sys.modules if m.startswith('locust')), "
             "gevent.monkey.is_anything_patched())")
    outcome = processes.run("a parse", [sys.executable, "-c", check], timeout=60, cwd=paths.PROJECT_ROOT)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.stdout.split() == ["[]", "False"]


@pytest.mark.parametrize("text", ["", "soon", "-5s", "0s", "3 days", "500ms", "2m30x"])
def test_bad_durations_are_refused_naming_the_accepted_forms(text):
    with pytest.raises(UsageError, match=r"invalid duration .* 20, 20s, 3m, 2h, 1h30m"):
        loadtest.parse_duration(text)


def test_slos_parse_with_units():
    targets = {t.key: t.limit for t in loadtest.parse_slo("p99=50ms, p50=2s,errors=0.1%,max=300us,rps=20")}
    assert targets == {"p99": 50, "p50": 2000, "errors": pytest.approx(0.001), "max": 0.3, "rps": 20}


@pytest.mark.parametrize("text", ["", "p99", "p98=5ms", "errors=5ms", "p99=fast", "rps=3%", "errors=200%",
                                  "errors=1.5"])
def test_bad_slos_are_refused_with_a_hint(text):
    with pytest.raises(UsageError, match="SLO"):
        loadtest.parse_slo(text)


def test_slo_check_reports_each_broken_term_with_the_measurement():
    summary = loadtest.ClientSummary(requests=1000, refused=20, failures=5, elapsed_s=10, throughput_rps=100,
                                     latency_ms={"p50": 10, "p90": 20, "p95": 30, "p99": 80, "max": 120}, errors={})
    assert loadtest.check_slo(summary, loadtest.parse_slo("p99=100ms,errors=1%,refused=5%,rps=50")) == []
    broken = loadtest.check_slo(summary, loadtest.parse_slo("p99=50ms,errors=0.1%,refused=1%,rps=200"))
    assert len(broken) == 4 and "80 ms" in broken[0] and "0.5000%" in broken[1] and "2.0000%" in broken[2]
    assert "100.0 req/s" in broken[3]


def test_profiles_shape_the_user_count_over_time():
    assert [users_at(Shape.STEP, t, 8, 8.0) for t in (0, 2.5, 4.5, 7.9)] == [2, 4, 6, 8]
    assert [users_at(Shape.SPIKE, t, 8, 10.0) for t in (1, 5, 9)] == [spike_baseline(8), 8, spike_baseline(8)]
    assert spike_baseline(8) < 8
    assert users_at(Shape.CONSTANT, 3, 5, 10) == 5
    assert users_at(Shape.RATE, 10, 5, 10) is None
    # Without a run time (Locust's UI with its run time cleared) every shape holds its users until stopped.
    assert [users_at(shape, 1e6, 5, None) for shape in Shape] == [5] * len(Shape)
    assert pacing_interval(50, 10) == pytest.approx(0.2)
    with pytest.raises(UsageError):
        pacing_interval(0, 10)
    with pytest.raises(ValueError):
        Shape("sawtooth")


def test_a_corpus_that_cannot_feed_a_run_is_a_usage_error_before_locust_starts(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    for path, message in [(empty, "holds no text"), (tmp_path, "is not a file"),
                          (tmp_path / "missing.txt", "cannot read corpus")]:
        with pytest.raises(UsageError, match=message):
            corpus.load(path)
        with pytest.raises(UsageError, match=message):
            loadtest.LoadTestConfig(url="127.0.0.1:1", corpus=path).check()


def test_metrics_urls_are_checked_and_completed_up_front():
    assert loadtest.parse_metrics_url("127.0.0.1:18102") == "http://127.0.0.1:18102/metrics"
    assert loadtest.parse_metrics_url("http://10.0.0.5:8002") == "http://10.0.0.5:8002/metrics"
    assert loadtest.parse_metrics_url("https://triton:9443/custom") == "https://triton:9443/custom"
    for text in ("ftp://x", "x", "http://:8002/metrics", "127.0.0.1:99999", "http://h:port/metrics", "h:8002/m"):
        with pytest.raises(UsageError, match="invalid metrics URL"):
            loadtest.parse_metrics_url(text)
    assert loadtest.LoadTestConfig(url="h:1", metrics_url="h:8002").metrics_url == "http://h:8002/metrics"


def test_a_run_where_no_request_succeeded_fails_with_or_without_an_slo():
    def result(requests: int, refused: int, failures: int, slo_broken: list[str]) -> loadtest.LoadTestResult:
        client = loadtest.ClientSummary(requests=requests, refused=refused, failures=failures, elapsed_s=1,
                                        throughput_rps=0, latency_ms=dict.fromkeys(loadtest.LATENCY_KEYS, 0.0),
                                        errors={"refused": 3})
        config = loadtest.LoadTestConfig(url="h:1", shape=Shape.SPIKE)
        return loadtest.LoadTestResult(config, client, [], [], loadtest.parse_slo("errors=80%"), slo_broken)

    for requests, refused, failures in ((0, 0, 0), (3, 0, 3), (3, 3, 0), (4, 2, 2)):
        with pytest.raises(LoadTestError, match="no request succeeded"):
            result(requests, refused, failures, []).verdict()
    with pytest.raises(LoadTestError, match="SLO"):
        result(3, 0, 0, ["p99 broken"]).verdict()
    result(4, 1, 2, []).verdict()


def test_the_corpus_is_deterministic_varied_and_has_long_texts():
    texts = corpus.generate(300, seed=7)
    assert texts == corpus.generate(300, seed=7) and texts != corpus.generate(300, seed=8)
    words = sorted(len(text.split()) for text in texts)
    assert words[0] <= 6 and words[-1] >= 150 and len(set(texts)) > 250
    assert corpus.load(corpus.DEFAULT_CORPUS)[:5] == corpus.generate(5)


def test_the_query_corpus_is_deterministic_short_and_shipped_as_generated():
    queries = corpus.generate_queries(500, seed=7)
    assert queries == corpus.generate_queries(500, seed=7) and queries != corpus.generate_queries(500, seed=8)
    low, high = corpus.QUERY_WORDS
    words = sorted(len(query.split()) for query in queries)
    assert words[0] == low and words[-1] == high and len(set(queries)) > 250, words
    passages = sorted(len(text.split()) for text in corpus.generate(500, seed=7))
    assert words[len(words) // 2] * 2 < passages[len(passages) // 2]  # the medians: a different workload
    # The shipped file is the generator's output, and each workload names its own file.
    assert corpus.load(corpus.CORPORA[corpus.Workload.QUERIES]) == corpus.generate_queries()
    assert corpus.resolve(corpus.Workload.QUERIES, None) == corpus.QUERIES_CORPUS
    assert corpus.resolve(None, None) == corpus.DEFAULT_CORPUS
    assert corpus.workload_of(corpus.QUERIES_CORPUS) == "queries" and corpus.workload_of(Path("mine.txt")) == "custom"


def test_triton_figures_are_per_request_deltas_between_two_scrapes():
    def exposition(success: int, queue_us: int, infer_us: int, inferences: int, executions: int) -> str:
        labels = '{model="encoder",version="2"}'
        return (f"# HELP x\n{metrics.REQUEST_SUCCESS}{labels} {success}\n{metrics.REQUEST_FAILURE}{labels} 0\n"
                f"{metrics.QUEUE_DURATION_US}{labels} {queue_us}\n{metrics.COMPUTE_INFER_DURATION_US}{labels} "
                f"{infer_us}\n{metrics.INFERENCE_COUNT}{labels} {inferences}\n{metrics.EXEC_COUNT}{labels} "
                f"{executions}\n")

    before = scrape.parse(exposition(10, 1000, 5000, 10, 10))
    after = scrape.parse(exposition(110, 201000, 805000, 110, 35))
    [figures] = scrape.model_figures(before, after)
    assert (figures.model, figures.version, figures.requests) == ("encoder", "2", 100)
    assert figures.queue_ms == pytest.approx(2.0) and figures.compute_ms == pytest.approx(8.0)
    assert figures.avg_batch == pytest.approx(4.0)
    assert scrape.model_figures(after, after) == []


def test_the_metrics_port_is_guessed_only_for_a_server_on_its_default_ports():
    http, grpc = settings.Protocol.HTTP, settings.Protocol.GRPC
    expected = f"http://10.0.0.5:{settings.DEFAULT_METRICS_PORT}/metrics"
    assert loadtest.default_metrics_url(f"10.0.0.5:{settings.DEFAULT_HTTP_PORT}", http) == expected
    assert loadtest.default_metrics_url(f"10.0.0.5:{settings.DEFAULT_GRPC_PORT}", grpc) == expected
    assert loadtest.default_metrics_url("10.0.0.5:9000", http) is None
    assert loadtest.default_metrics_url(f"10.0.0.5:{settings.DEFAULT_GRPC_PORT}", http) is None


@pytest.mark.parametrize("command", ["loadtest", "bench"])
def test_help_lists_the_choices_and_shows_defaults_without_checkout_paths(command):
    outcome = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert outcome.exit_code == 0, outcome.output
    choices = {"loadtest": ["<constant|step|spike|rate>", "<http|grpc>", "<passages|queries>", "the built-in corpus",
                            "./model_repository"],
               "bench": ["ceiling|triton|fastapi|pytriton", "passages|queries|all", "./model_repository"]}[command]
    assert all(choice in outcome.output for choice in choices), outcome.output
    assert str(paths.PROJECT_ROOT) not in outcome.output


# -- real runs -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    with runtime.running_server(runtime.ServerOptions.on_free_ports()) as started:
        yield started


def _config(server, protocol: str, **overrides) -> loadtest.LoadTestConfig:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    options = {"users": 2, "duration_s": 3.0, **overrides}
    return loadtest.LoadTestConfig(url=url, protocol=protocol, metrics_url=server.metrics_url, **options)


def _users(result: loadtest.LoadTestResult) -> list[int]:
    """The user count of every second of the run, from Locust's history."""
    return [int(row["users"]) for row in result.history if row["users"]]


def test_an_http_run_has_no_failures_and_writes_both_views_with_locusts_own_figures(server, tmp_path):
    seen = []
    result = loadtest.run(_config(server, "http"), tmp_path, loadtest.parse_slo("errors=0"), on_progress=seen.append)
    report.write(result, tmp_path)
    assert result.client.requests > 0 and result.client.failures == 0 and result.slo_broken == []
    assert seen and seen[-1].requests > 0 and "users 2" in seen[-1].describe(3.0)
    # The totals are Locust's: they match the JSON report Locust wrote itself.
    locust_report = json.loads((tmp_path / "locust.json").read_text())
    assert result.client.requests == sum(entry["num_requests"] for entry in locust_report)
    latency = result.client.latency_ms
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"] <= latency["max"] * 1.01
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"config", "client", "triton", "slo", "history"} <= summary.keys()
    assert {"requests", "failures", "throughput_rps", "latency_ms", "error_rate"} <= summary["client"].keys()
    assert set(summary["client"]["latency_ms"]) == {"p50", "p90", "p95", "p99", "max"}
    assert summary["slo"]["passed"] is True
    triton = {row["model"]: row for row in summary["triton"]}
    assert set(triton) == {settings.EMBED_MODEL, settings.TOKENIZER_MODEL, settings.ENCODER_MODEL}
    # Triton also counts requests that were in flight when Locust stopped its users.
    assert triton[settings.EMBED_MODEL]["requests"] >= result.client.requests
    assert all(row["avg_batch"] >= 1 and row["compute_ms"] > 0 for name, row in triton.items()
               if name != settings.EMBED_MODEL)
    header, row = (tmp_path / "summary.csv").read_text().splitlines()
    assert header.split(",") == list(report.SUMMARY_FIELDS) and row.startswith("embed,http,constant,2,")
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_a_grpc_step_run_climbs_its_stairs_in_order(server, tmp_path):
    result = loadtest.run(_config(server, "grpc", users=4, duration_s=8.0, shape=Shape.STEP), tmp_path)
    assert result.client.requests > 0 and result.client.failures == 0
    users = _users(result)
    assert users == sorted(users), f"users went down on a step ramp: {users}"
    assert set(users) <= {1, 2, 3, 4} and len(set(users)) >= 3 and users[-1] == 4, users


def test_a_spike_run_bursts_above_its_baseline_and_comes_back(server, tmp_path):
    result = loadtest.run(_config(server, "http", users=8, duration_s=10.0, shape=Shape.SPIKE), tmp_path)
    assert result.client.requests > 0 and result.client.failures == 0
    users = _users(result)
    peak_at = [i for i, count in enumerate(users) if count == 8]
    assert peak_at and users[0] == spike_baseline(8) < 8, users
    assert spike_baseline(8) in users[peak_at[-1]:], f"never back to the baseline after the spike: {users}"


def test_an_open_loop_run_sends_near_the_requested_rate(server, tmp_path):
    target = 10.0
    config = _config(server, "grpc", users=4, duration_s=6.0, shape=Shape.RATE, request_rate=target)
    result = loadtest.run(config, tmp_path)
    assert result.client.failures == 0
    # Paced, not back to back: the ratio to the target stays within a generous band on a busy machine.
    assert 0.5 <= result.client.throughput_rps / target <= 1.5, result.client.throughput_rps


def test_a_run_ends_early_with_its_summary_when_told(server, tmp_path):
    """Traffic for as long as an operation under load takes (a rollout, an upgrade), not a fixed time."""
    until = threading.Event()
    threading.Timer(4.0, until.set).start()
    started = time.monotonic()
    result = loadtest.run(_config(server, "grpc", duration_s=600.0), tmp_path, until=until)
    assert time.monotonic() - started < 60
    assert result.client.requests > 0 and result.client.failures == 0


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
    other = server.grpc_url if protocol == "http" else server.http_url  # a server, of the other protocol
    wrong = CliRunner().invoke(app, [*common, "--url", other])
    assert wrong.exit_code == 1 and "cannot reach" in wrong.output, wrong.output
    unknown = CliRunner().invoke(app, [*common, "--url", url, "--model", "no_such_model"])
    assert unknown.exit_code == 1 and "no_such_model at" in unknown.output and "not ready" in unknown.output
    assert not (tmp_path / "summary.json").exists(), "nothing ran"


@pytest.mark.parametrize(("args", "message"), [
    (["--slo", "p99=soon"], "invalid SLO term"), (["--shape", "zigzag"], "'zigzag' is not one of"),
    (["--protocol", "udp"], "'udp' is not one of"), (["--shape", "rate"], "needs --rate"),
    (["--duration", "forever"], "20s, 3m"), (["-t", "500ms"], "20s, 3m"),
    (["--metrics-url", "ftp://x"], "invalid metrics URL 'ftp://x'"), (["--spawn-rate", "-1"], "--spawn-rate"),
    (["--slo", "errors=200%"], "at most 100%"), (["--serve", "--url", "127.0.0.1:1"], "--serve"),
    (["--web", "--slo", "p99=50ms"], "--slo"), (["--web", "--web-port", "99999"], "--web-port"),
    (["--web", "--web-port", "0"], "--web-port"), (["--corpus", "."], "is not a file"),
    (["--workload", "words"], "'words' is not one of"),
    (["--workload", "queries", "--corpus", "x.txt"], "one of them")])
def test_bad_options_exit_2_with_a_message_and_no_traceback(args, message, tmp_path):
    outcome = CliRunner().invoke(app, ["loadtest", "--out", str(tmp_path), *args], env={"COLUMNS": "200"})
    assert outcome.exit_code == 2 and message in outcome.output and "Traceback" not in outcome.output, outcome.output


RECORDER_CONFIG = f"""
name: "recorder"
backend: "python"
max_batch_size: 8
input [{{ name: "{settings.EMBED_INPUT}" data_type: TYPE_STRING dims: [ 1 ] }}]
output [{{ name: "{settings.EMBED_OUTPUT}" data_type: TYPE_FP32 dims: [ {settings.EMBEDDING_DIM} ] }}]
instance_group [{{ kind: KIND_CPU count: 1 }}]
"""
RECORDER_MODEL = f"""
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.log = Path(args["model_repository"]) / "texts.log"

    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "{settings.EMBED_INPUT}").as_numpy().reshape(-1)
            with self.log.open("a") as log:
                log.writelines(text.decode() + "\\n" for text in texts)
            rows = np.zeros((len(texts), {settings.EMBEDDING_DIM}), np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("{settings.EMBED_OUTPUT}", rows)]))
        return responses
"""


def test_the_queries_workload_sends_short_queries_through_locust(tmp_path):
    """What the server received, written down by a model that records every text: the built-in queries only."""
    model = tmp_path / "repository" / "recorder"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(RECORDER_CONFIG)
    (model / "1" / "model.py").write_text(RECORDER_MODEL)
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=model.parent)) as server:
        outcome = CliRunner().invoke(app, [
            "loadtest", "--workload", "queries", "--url", server.http_url, "--protocol", "http", "--model", "recorder",
            "--metrics-url", server.metrics_url, "--users", "2", "-t", "2", "--out", str(tmp_path / "out")])
    assert outcome.exit_code == 0, outcome.output
    received = (model / "texts.log").read_text().splitlines()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["config"]["workload"] == "queries" and len(received) >= summary["client"]["requests"] > 0
    assert set(received) <= set(corpus.load(corpus.QUERIES_CORPUS)), set(received) - set(corpus.generate_queries())
    assert max(len(text.split()) for text in received) <= corpus.QUERY_WORDS[1]


def test_an_empty_corpus_is_refused_before_the_run(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.touch()
    outcome = CliRunner().invoke(app, ["loadtest", "--corpus", str(empty), "--out", str(tmp_path / "out")])
    assert outcome.exit_code == 2 and "holds no text" in outcome.output, outcome.output
    assert not (tmp_path / "out").exists()


def test_a_busy_web_port_is_one_line_naming_it(tmp_path):
    with socket.socket() as taken:
        taken.bind((settings.DEFAULT_HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        outcome = CliRunner().invoke(app, ["loadtest", "--web", "--web-port", str(port), "--url", "127.0.0.1:1"])
    assert outcome.exit_code == 1 and f"127.0.0.1:{port} is busy" in outcome.output, outcome.output
    assert "--web-port" in outcome.output
    assert "Traceback" not in outcome.output and len(outcome.output.strip().splitlines()) == 1, outcome.output


def test_a_run_where_every_request_fails_exits_1_without_an_slo(server, tmp_path):
    # More texts per request than the ensemble's max_batch_size: the server answers, and refuses every request.
    outcome = CliRunner().invoke(app, ["loadtest", "--url", server.http_url, "--metrics-url", server.metrics_url,
                                       "--users", "1", "-t", "2", "--texts-per-request", "100",
                                       "--out", str(tmp_path)])
    assert outcome.exit_code == 1 and "no request succeeded" in outcome.output, outcome.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["client"]["requests"] == summary["client"]["failures"] > 0


def test_an_unreachable_server_fails_every_request_and_breaks_the_error_slo(tmp_path):
    address = f"127.0.0.1:{runtime.free_port()}"
    config = loadtest.LoadTestConfig(url=address, protocol="http", users=1, duration_s=2.0,
                                     metrics_url=loadtest.default_metrics_url(address, settings.Protocol.HTTP))
    result = loadtest.run(config, tmp_path, loadtest.parse_slo("errors=1%"))
    assert result.client.requests > 0 and result.client.failures == result.client.requests
    assert result.client.errors and result.slo_broken
    assert result.triton == [] and "--metrics-url" in result.triton_note


def test_a_metrics_endpoint_without_the_model_under_test_is_named_not_shown(server, echo_repository, tmp_path):
    # Another real Triton, serving only a tiny echo model: a wrong --metrics-url for a test of `embed`.
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=echo_repository)) as other:
        config = loadtest.LoadTestConfig(url=server.http_url, users=1, duration_s=2.0, metrics_url=other.metrics_url)
        result = loadtest.run(config, tmp_path)
    assert result.client.requests > 0 and result.client.failures == 0
    assert result.triton == []
    assert f"{other.metrics_url} has no series for model {settings.EMBED_MODEL}" in result.triton_note
    assert "--metrics-url" in result.triton_note


def test_the_command_writes_its_report_under_the_folder_it_runs_from(server, tmp_path):
    outcome = processes.run("tools loadtest", [sys.executable, "-m", "tools", "loadtest", "--url", server.http_url,
                                               "--metrics-url", server.metrics_url, "--users", "1", "-t", "2"],
                            timeout=120, cwd=tmp_path)
    assert outcome.returncode == 0, outcome.stderr
    # Piped, the tables keep every column whole: rich would cut them at 80 columns ("reques…").
    assert all(name in outcome.stdout for name in ("request ms", "compute ms", "avg batch", settings.TOKENIZER_MODEL,
                                                   settings.ENCODER_MODEL)), outcome.stdout
    assert "…" not in outcome.stdout, outcome.stdout
    summary = json.loads((tmp_path / "results" / "loadtest" / "summary.json").read_text())
    assert summary["client"]["requests"] > 0 and summary["client"]["failures"] == 0 and summary["triton"]
    assert (tmp_path / "results" / "loadtest" / "locust_summary.json").exists()


def test_serve_starts_a_local_server_for_the_run_and_stops_it(tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    outcome = CliRunner().invoke(app, ["loadtest", "--serve", "--repository", str(paths.REPOSITORY), "--users", "1",
                                       "--duration", "2s", "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["client"]["requests"] > 0 and summary["client"]["failures"] == 0 and summary["triton"]
    config = summary["config"]
    assert config["url"].startswith(settings.DEFAULT_HOST) and config["metrics_url"]
    # Stopped: no new process of ours is left, and the ports it served on are free again.
    left = [p.pid for p in psutil.Process().children(recursive=True) if p.pid not in before and starters.alive(p)]
    assert left == []
    ports = [int(config["url"].rsplit(":", 1)[1]), urllib.parse.urlsplit(config["metrics_url"]).port]
    assert all(starters.port_free(port) for port in ports), ports


HEADLESS_STARTER = """
import sys
from pathlib import Path

from tests.support.starters import report_children
from tools.loadtest import runner

reported = []


def report_once(progress):
    if not reported:
        reported.append(report_children())


runner.run(runner.LoadTestConfig(url=sys.argv[1], users=2, duration_s=600), Path(sys.argv[2]), on_progress=report_once)
"""


def test_a_headless_locust_dies_with_its_starter_killed_mid_run(server, tmp_path):
    aftermath = starters.kill_starter(HEADLESS_STARTER, server.http_url, str(tmp_path))
    assert aftermath.pids, "the starter had no child"
    assert aftermath.left == [] and aftermath.bound == set()
    assert not (tmp_path / "summary.json").exists()


WEB_STARTER = """
import sys
import threading
import time
import urllib.request

from tests.support.starters import report_children
from tools.cli import app


def report_when_the_ui_answers():
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[2]}/", timeout=2) as response:
                if response.status == 200:
                    return report_children()
        except OSError:
            time.sleep(0.3)


threading.Thread(target=report_when_the_ui_answers, daemon=True).start()
app(["loadtest", "--web", "--web-port", sys.argv[2], "--url", sys.argv[1], "--protocol", "grpc"])
"""


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("shape", [Shape.CONSTANT, Shape.STEP])
def test_the_web_ui_starts_a_run_that_sends_requests(server, shape, tmp_path):
    port = runtime.free_port()
    base = f"http://{settings.DEFAULT_HOST}:{port}"
    argv = [sys.executable, "-m", "tools", "loadtest", "--web", "--web-port", str(port), "--url", server.http_url,
            "--shape", shape.value, "-t", "60s"]
    with processes.running("tools loadtest --web", argv, log=tmp_path / "web.log", cwd=tmp_path, timeout=60,
                           ready=lambda: processes.http_ok(base), waiting_for=f"Locust's UI at {base}") as ui:
        # What Locust's UI sends when Start is pressed.
        form = urllib.parse.urlencode({"user_count": 2, "spawn_rate": 2, "host": server.http_url}).encode()
        with urllib.request.urlopen(f"{base}/swarm", data=form, timeout=10) as response:
            assert json.loads(response.read())["success"] is True
        deadline = time.monotonic() + 60
        while (total := _aggregated(_get_json(f"{base}/stats/requests")))["num_requests"] < 5:
            assert ui.running() and time.monotonic() < deadline, ui.log_tail()
            time.sleep(0.5)
        stats = _get_json(f"{base}/stats/requests")
        assert _aggregated(stats)["num_failures"] == 0 and stats["errors"] == [], stats["errors"]
        assert stats["user_count"] >= 1 and total["num_requests"] >= 5
    assert "Traceback" not in (tmp_path / "web.log").read_text()


def _aggregated(stats: dict) -> dict:
    return next(row for row in stats["stats"] if row["name"] == "Aggregated")


def test_a_locust_web_ui_that_cannot_start_is_an_error(server):
    with socket.socket() as taken:  # the port taken after the command's own check: Locust itself fails
        taken.bind((settings.DEFAULT_HOST, 0))
        taken.listen()
        config = loadtest.LoadTestConfig(url=server.http_url, protocol="http")
        with pytest.raises(LoadTestError, match="exited with code"):
            loadtest.run_web(config, taken.getsockname()[1])


def test_the_web_ui_answers_on_loopback_and_dies_with_its_starter(server):
    port = runtime.free_port()
    aftermath = starters.kill_starter(WEB_STARTER, server.grpc_url, str(port))
    assert aftermath.pids and aftermath.ports == {port} and aftermath.loopback_only, aftermath
    assert aftermath.left == [] and aftermath.bound == set()
