"""The benchmark: its verdict arithmetic alone, then a real end-to-end `--quick` run of all four cases."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tools.bench import runner as benchmark
from tools.cli import app


def _point(case: str, concurrency: int, rate: float, p99: float) -> benchmark.Point:
    return benchmark.Point(case, concurrency, "2", rate, p99 / 2, p99, 100, 0.1)


def test_verdicts_compare_with_the_ceiling_and_at_equal_or_lower_p99():
    result = benchmark.BenchResult(benchmark.BenchConfig.quick(), {}, [
        _point(benchmark.CEILING, 32, 100, 300), _point(benchmark.CEILING, 1, 60, 20),
        _point(benchmark.TRITON, 4, 70, 40), _point(benchmark.TRITON, 16, 90, 200),
        _point(benchmark.FASTAPI, 16, 60, 150), _point(benchmark.PYTRITON, 16, 80, 120)])
    assert result.ceiling == 100 and result.best(benchmark.TRITON).concurrency == 16
    met, fastapi, pytriton = result.verdicts()
    assert met.endswith(": met") and "0.90 x ceiling" in met
    assert "beaten at 4 in flight" in fastapi  # 70/s at p99 40 ms beats 60/s at 150 ms
    assert "NOT beaten" in pytriton  # 90/s only at p99 200 ms > 120 ms


def test_quick_run_measures_all_four_cases_end_to_end(tmp_path):
    outcome = CliRunner().invoke(app, ["bench", "--quick", "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads((tmp_path / "bench.json").read_text())
    by_case = {point["case"]: point for point in report["points"]}
    assert set(by_case) == set(benchmark.CASE_TITLES)
    assert all(point["sentences_per_s"] > 0 and point["p99_ms"] >= point["p50_ms"] > 0 for point in by_case.values())
    assert by_case[benchmark.CEILING]["ratio_to_ceiling"] == 1.0 and by_case[benchmark.CEILING]["loadgen_cpu"] is None
    assert all(by_case[case]["loadgen_cpu"] is not None for case in (benchmark.TRITON, benchmark.FASTAPI,
                                                                      benchmark.PYTRITON))
    assert {"cpu_model", "logical_cores", "physical_cores"} <= report["machine"].keys()
    assert len(report["verdicts"]) == 3
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert "| in-process ceiling | 8 |" in (tmp_path / "bench.md").read_text()
    assert "x ceiling" in outcome.output


def test_bad_options_exit_2_with_a_message(tmp_path):
    for args in (["--case", "gpu"], ["--server-threads", "0"]):
        outcome = CliRunner().invoke(app, ["bench", "--out", str(tmp_path), *args])
        assert outcome.exit_code == 2 and "error:" in outcome.output and "Traceback" not in outcome.output
