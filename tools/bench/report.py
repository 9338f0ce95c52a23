"""How a benchmark is shown and kept: a rich table on the console; bench.json, a Markdown table and a PNG on disk."""

from __future__ import annotations

import json
from pathlib import Path

from tools.bench.cases import CASE_TITLES, Case
from tools.bench.runner import TARGET_RATIO, BenchResult, Point
from tools.errors import UsageError

COLUMNS = ("workload", "case", "in flight / batch", "threads", "sentences/s", "x ceiling", "p50 ms", "p99 ms",
           "load-gen CPU (cores)")


def prepare(out_dir: Path) -> None:
    """Create the output folder and prove it writable before a run of minutes, not after it."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-check"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out {out_dir}: cannot write there ({exc.strerror})") from None


def write(result: BenchResult, out_dir: Path) -> dict[str, Path]:
    """bench.json (every figure, every round, the machine), bench.md (the table and verdicts), bench.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "bench.json", "plot": out_dir / "bench.png", "markdown": out_dir / "bench.md"}
    files["json"].write_text(json.dumps(result.as_dict(), indent=2))
    files["markdown"].write_text(markdown(result))
    plot(result, files["plot"])
    return files


def plot(result: BenchResult, path: Path) -> None:
    """Sentences/s and p99 against concurrency for each served case, with the ceiling and the target line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    several = len(result.workloads) > 1
    for workload, style in zip(result.workloads, ("-", "--"), strict=False):
        named = f", {workload}" if several else ""
        for case in (Case.TRITON, Case.FASTAPI, Case.PYTRITON):
            points = result.case_points(case, workload)
            if points:
                xs = [p.concurrency for p in points]
                left.plot(xs, [p.sentences_per_s for p in points], style, marker="o", label=CASE_TITLES[case] + named)
                right.plot(xs, [p.p99_ms for p in points], style, marker="o", label=CASE_TITLES[case] + named)
        if ceiling := result.ceiling_of(workload):
            left.axhline(ceiling, color="black", linestyle=style, label="in-process ceiling" + named)
            left.axhline(TARGET_RATIO * ceiling, color="gray", linestyle=style, linewidth=0.8,
                         label=f"{TARGET_RATIO} x ceiling{named}")
    for axis, label in ((left, "sentences/s"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("requests in flight (one text each)")
        axis.set_ylabel(label)
        if axis.get_legend_handles_labels()[0]:  # a run of the ceiling alone draws no curve
            axis.legend(fontsize=8)
    info = result.machine
    figure.suptitle(f"{info['cpu_model']}, {info['logical_cores']} cores: same pipeline, four ways")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _cells(result: BenchResult, point: Point) -> list[str]:
    return [str(point.workload), CASE_TITLES[point.case], str(point.concurrency), point.threads,
            f"{point.sentences_per_s:.1f}",
            f"{result.ratio(point):.2f}", f"{point.p50_ms:.1f}", f"{point.p99_ms:.1f}",
            "-" if point.loadgen_cpu is None else f"{point.loadgen_cpu:.2f}"]


def markdown(result: BenchResult) -> str:
    """The table and verdicts as Markdown (for a README or a pull request)."""
    info = result.machine
    lines = [f"{info['cpu_model']}, {info['logical_cores']} logical / {info['physical_cores']} physical cores; "
             f"load average {info.get('load_average_1m_at_start', '?')} at start, "
             f"{info.get('load_average_1m_at_end', '?')} at end; medians of {result.config.rounds} round(s).", "",
             "| " + " | ".join(COLUMNS) + " |", "|---" + "|--:" * (len(COLUMNS) - 1) + "|"]
    lines += ["| " + " | ".join(_cells(result, point)) + " |" for point in result.points]
    return "\n".join([*lines, "", *(f"- {line}" for line in result.verdicts())]) + "\n"


def render(result: BenchResult, console) -> None:
    """The table and verdicts as rich output."""
    from rich.table import Table

    info = result.machine
    table = Table(title=f"{info['cpu_model']} ({info['logical_cores']} logical / {info['physical_cores']} physical "
                        "cores); ratios to each workload's ceiling: "
                        + ", ".join(f"{w} {result.ceiling_of(w):.1f} sentences/s" for w in result.workloads))
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "case" else "right")
    for point in result.points:
        table.add_row(*_cells(result, point))
    console.print(table)
    for line in result.verdicts():
        console.print(line, highlight=False)
