"""The benchmark: its verdict arithmetic alone, each service dying with its starter, then a real end-to-end `--quick`
run of all four cases."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from tests.support import paths, starters
from tools import processes
from tools.bench import report
from tools.bench import runner as benchmark
from tools.bench.cases import Case, workloads_of
from tools.cli import app
from tools.loadtest.corpus import Workload
from tools.repository import load_repository


def _point(case: Case, concurrency: int, rate: float, p99: float) -> benchmark.Point:
    return benchmark.Point(case, concurrency, "2", rate, p99 / 2, p99, 100, 0.1)


def test_verdicts_compare_with_the_ceiling_and_at_equal_or_lower_p99():
    result = benchmark.BenchResult(benchmark.BenchConfig.quick(), {}, [
        _point(Case.CEILING, 32, 100, 300), _point(Case.CEILING, 1, 60, 20),
        _point(Case.TRITON, 4, 70, 40), _point(Case.TRITON, 16, 90, 200),
        _point(Case.FASTAPI, 16, 60, 150), _point(Case.PYTRITON, 16, 80, 120)])
    assert result.ceiling == 100 and result.best(Case.TRITON).concurrency == 16
    met, fastapi, pytriton = result.verdicts()
    assert met.endswith(": met") and "0.90 x ceiling" in met
    assert "beaten at 4 in flight" in fastapi  # 70/s at p99 40 ms beats 60/s at 150 ms
    assert "NOT beaten" in pytriton  # 90/s only at p99 200 ms > 120 ms


def test_each_workload_is_judged_against_its_own_ceiling():
    queries = Workload.QUERIES
    config = dataclasses.replace(benchmark.BenchConfig.quick(), workloads=tuple(Workload))
    machine = {"cpu_model": "test CPU", "logical_cores": 2, "physical_cores": 2}
    result = benchmark.BenchResult(config, machine, [
        _point(Case.CEILING, 8, 100, 300), _point(Case.TRITON, 16, 90, 200),
        benchmark.Point(Case.CEILING, 8, "2x1", 400, 10, 20, 100, None, queries),
        benchmark.Point(Case.TRITON, 16, "config", 200, 50, 90, 100, 0.1, queries)])
    assert result.ceiling == 100 and result.ceiling_of(queries) == 400
    assert [round(result.ratio(p), 2) for p in result.points] == [1.0, 0.9, 1.0, 0.5]
    passages_line, queries_line = result.verdicts()
    assert passages_line.startswith("passages: ") and "0.90 x ceiling" in passages_line
    assert passages_line.endswith(": met")
    assert queries_line.startswith("queries: ") and "0.50 x ceiling" in queries_line and "NOT met" in queries_line
    assert [p.workload for p in benchmark.combine(result.points)] == [p.workload for p in result.points]
    assert result.as_dict()["ceilings"] == {"passages": 100, "queries": 400}
    markdown = report.markdown(result)
    assert "| queries | in-process ceiling | 8 | 2x1 | 400.0 | 1.00 |" in markdown
    assert "| passages | Triton embed ensemble (as shipped) | 16 | 2 | 90.0 | 0.90 |" in markdown
    assert workloads_of("all") == tuple(Workload) and workloads_of("queries") == (queries,)


SERVICE_STARTER = """
import sys
import threading
import time
import time

from tests.support.starters import report_children
from tools.bench import runner

config = runner.BenchConfig.quick()
services = {"ceiling": runner.ceiling_process, "fastapi": lambda: runner.fastapi_target(config),
            "pytriton": lambda: runner.pytriton_target(config)}
with services[sys.argv[1]]():
    report_children()
    time.sleep(600)
"""


@pytest.mark.parametrize("case", [Case.CEILING, Case.FASTAPI, Case.PYTRITON])
def test_a_benchmark_service_dies_with_its_starter(case):
    aftermath = starters.kill_starter(SERVICE_STARTER, case.value)
    assert aftermath.pids, "the starter had no child"
    if case != Case.CEILING:  # the ceiling process listens on nothing; the servers, on loopback only
        assert aftermath.ports and aftermath.loopback_only, aftermath
    assert aftermath.left == [] and aftermath.bound == set()


def test_quick_run_measures_all_four_cases_end_to_end(tmp_path):
    outcome = CliRunner().invoke(app, ["bench", "--quick", "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads((tmp_path / "bench.json").read_text())
    by_case = {point["case"]: point for point in summary["points"]}
    assert set(by_case) == set(Case)
    assert all(point["sentences_per_s"] > 0 and point["p99_ms"] >= point["p50_ms"] > 0 for point in by_case.values())
    assert by_case[Case.CEILING]["ratio_to_ceiling"] == 1.0 and by_case[Case.CEILING]["loadgen_cpu"] is None
    assert all(by_case[case]["loadgen_cpu"] is not None for case in (Case.TRITON, Case.FASTAPI, Case.PYTRITON))
    assert {"cpu_model", "logical_cores", "physical_cores"} <= summary["machine"].keys()
    assert len(summary["verdicts"]) == 3
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (tmp_path / "bench.md").read_text()
    assert "| in-process ceiling | 8 |" in markdown and markdown.count("\n| ") == 1 + len(Case)
    assert "x ceiling" in outcome.output and str(tmp_path / "bench.md") in outcome.output


def test_a_quick_run_of_the_queries_workload_measures_queries_only(tmp_path):
    outcome = CliRunner().invoke(app, ["bench", "--quick", "--workload", "queries", "--case", "ceiling",
                                       "--case", "triton", "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads((tmp_path / "bench.json").read_text())
    points = {(point["workload"], point["case"]): point for point in summary["points"]}
    assert set(points) == {("queries", Case.CEILING), ("queries", Case.TRITON)}
    assert summary["config"]["workloads"] == ["queries"] and summary["ceilings"]["queries"] > 0
    assert 0 < points[("queries", Case.TRITON)]["ratio_to_ceiling"] == round(
        points[("queries", Case.TRITON)]["sentences_per_s"] / summary["ceilings"]["queries"], 3)
    assert "| queries | in-process ceiling | 8 |" in (tmp_path / "bench.md").read_text()


def test_only_the_cases_asked_for_run_and_are_reported(tmp_path):
    outcome = CliRunner().invoke(app, ["bench", "--quick", "--case", "ceiling", "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads((tmp_path / "bench.json").read_text())
    assert {point["case"] for point in summary["points"]} == {Case.CEILING}
    assert summary["verdicts"] == [] and report.COLUMNS[0] in (tmp_path / "bench.md").read_text()


@pytest.mark.parametrize(("args", "message"), [(["--case", "gpu"], "'gpu' is not one of"),
                                               (["--server-threads", "0"], "--server-threads must be at least 1"),
                                               (["--workload", "words"], "'words' is not one of"),
                                               (["--repository", "no/such/folder"], "is not a folder"),
                                               (["--repository", "tests"], "lacks the embedding pipeline's")])
def test_bad_options_exit_2_with_a_message(args, message, tmp_path):
    outcome = CliRunner().invoke(app, ["bench", "--out", str(tmp_path), *args], env={"COLUMNS": "200"})
    assert outcome.exit_code == 2 and message in outcome.output and "Traceback" not in outcome.output, outcome.output
    assert not (tmp_path / "bench.json").exists()


def test_the_command_runs_outside_the_checkout_with_repository(tmp_path):
    bench = [sys.executable, "-m", "tools", "bench", "--quick", "--case", "ceiling"]
    outcome = processes.run("tools bench", [*bench, "--repository", paths.REPOSITORY], timeout=300, cwd=tmp_path)
    assert outcome.returncode == 0, outcome.stderr
    summary = json.loads((tmp_path / "results" / "bench" / "bench.json").read_text())
    assert summary["points"][0]["sentences_per_s"] > 0 and summary["config"]["repository"] == str(paths.REPOSITORY)
    # Piped, the table keeps every column whole: rich would cut them at 80 columns.
    assert "load-gen CPU (cores)" in outcome.stdout and "…" not in outcome.stdout, outcome.stdout
    # Without --repository there: ./model_repository is missing, said in one line before anything runs.
    missing = processes.run("tools bench", [*bench, "--out", "elsewhere"], timeout=120, cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr
    assert missing.stderr.strip().count("\n") == 0 and "model_repository is not a folder" in missing.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_an_out_folder_that_cannot_be_made_is_refused_before_the_run(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    outcome = CliRunner().invoke(app, ["bench", "--quick", "--case", "ceiling", "--repository", str(paths.REPOSITORY),
                                       "--out", str(blocker / "results")])
    assert outcome.exit_code == 2 and "--out" in outcome.output and "cannot write" in outcome.output, outcome.output
    assert "x ceiling" not in outcome.output  # refused before measuring


def test_the_bench_serves_a_copy_without_the_shipped_queue_limit(tmp_path):
    """Closed-loop capacity is measured without load shedding; the shipped repository keeps its policy."""
    shipped = load_repository(paths.REPOSITORY)
    limited = [name for name, m in shipped.models.items()
               if m.config_file.config.dynamic_batching.HasField("default_queue_policy")]
    assert limited, "the shipped repository sheds load somewhere"
    copy = load_repository(benchmark.without_queue_limits(paths.REPOSITORY, tmp_path))
    assert set(copy.models) == set(shipped.models)
    assert not any(m.config_file.config.dynamic_batching.HasField("default_queue_policy") for m in copy.models.values())
    assert load_repository(paths.REPOSITORY).models[limited[0]].config_file.config.dynamic_batching.HasField(
        "default_queue_policy")


# -- loadtests/bench_generate.py: its arithmetic and its clients' schedule, without a model ------------------------
@pytest.fixture
def generate_bench(monkeypatch):
    """The script as a module (loadtests/ is no package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_generate", paths.PROJECT_ROOT / "loadtests/bench_generate.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_generate_bench_figures_and_targets(generate_bench):
    bench = generate_bench
    # Sent at 0 s, first token at 0.1 s, then one every 0.02 s: 11 tokens in 0.3 s.
    one = bench.Completion(0.0, [0.1 + 0.02 * n for n in range(11)], 11)
    late = bench.Completion(0.0, [0.5, 0.54], 2)
    assert round(one.ttft_s, 3) == 0.1 and [round(i, 3) for i in one.itls_s] == [0.02] * 10
    assert round(one.tokens_per_s, 1) == round(11 / 0.3, 1)
    row = bench.figures([one, late, bench.Completion(0.2)], wall_s=1.0)  # a request without text is left out
    assert row["requests"] == 2 and row["total_tokens_per_s"] == 13.0 and row["tokens_per_request"] == 6.5
    assert row["ttft_p50_ms"] == 300.0 and 490 < row["ttft_p99_ms"] <= 500 and row["itl_p50_ms"] == 20.0
    assert bench.medians([{**row, "total_tokens_per_s": rate} for rate in (10, 30, 20)])["total_tokens_per_s"] == 20
    assert bench.medians([row, row])["requests"] == 4

    def table(triton_1: float, triton_4: float, triton_p99: float) -> dict:
        return {bench.IN_PROCESS: {1: {"stream_tokens_per_s": 100.0}},
                bench.LLAMA_SERVER: {4: {"total_tokens_per_s": 90.0, "ttft_p99_ms": 400.0}},
                bench.TRITON: {1: {"stream_tokens_per_s": triton_1},
                               4: {"total_tokens_per_s": triton_4, "ttft_p99_ms": triton_p99}}}

    single, four = bench.verdicts(table(90.0, 95.0, 400.0), streams=4)
    assert "0.90 x the in-process ceiling" in single and single.endswith(": met")
    assert "1.06 x llama_cpp.server" in four and four.endswith(": met")  # equal p99 TTFT is enough
    single, four = bench.verdicts(table(89.0, 95.0, 401.0), streams=4)
    assert single.endswith("NOT met") and four.endswith("NOT met")
    assert bench.verdicts(table(90.0, 90.0, 100.0), streams=4)[1].endswith("NOT met")  # not more tokens/s
    assert bench.verdicts({bench.TRITON: {1: {"stream_tokens_per_s": 1.0}}}, streams=4) == []
    informed = {**table(90.0, 95.0, 400.0), bench.ONE_CONTEXT: {1: {"stream_tokens_per_s": 120.0}}}
    assert "Triton = 0.75 x one in-process context" in bench.verdicts(informed, streams=4)[1]


@pytest.mark.parametrize("streams", [4, 5])  # 5: as many streams as prompts
def test_generate_bench_streams_run_at_once_and_vary_their_prompts(generate_bench, streams):
    bench = generate_bench
    sent: dict[int, list[str]] = {}
    lock = threading.Lock()
    in_flight = {"now": 0, "most": 0}

    @contextlib.contextmanager
    def open_stream():
        mine: list[str] = []
        with lock:
            sent[len(sent)] = mine

        def stream(prompt: str, max_tokens: int):
            with lock:
                in_flight["now"] += 1
                in_flight["most"] = max(in_flight["most"], in_flight["now"])
            time.sleep(0.01)
            mine.append(prompt)
            with lock:
                in_flight["now"] -= 1
            now = time.perf_counter()
            return bench.Completion(now - 0.01, [now], max_tokens)

        yield stream

    row = bench.measure(open_stream, streams, 5, max_tokens=3)
    assert row["requests"] == streams * 5 and row["tokens_per_request"] == 3 and in_flight["most"] > 1
    assert all(len(prompts) == 5 and all(a != b for a, b in itertools.pairwise(prompts))
               for prompts in sent.values())
    assert sorted(collections.Counter(p for prompts in sent.values() for p in prompts).values()) == [streams] * 5

    @contextlib.contextmanager
    def broken():
        raise ConnectionError("refused")
        yield

    with pytest.raises(SystemExit, match="a stream failed: refused"):
        bench.measure(broken, 2, 1, max_tokens=3)
