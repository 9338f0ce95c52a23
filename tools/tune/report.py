"""How a search is shown and kept: one line per decision as it happens, a table, search.png and report.json; and
the winner written back into the repository's config files (through the validator) with a diff. An observation
(`--observe`) is kept as observe.json."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from google.protobuf import text_format

from tools.repository import Repository, edit_config_text, load_repository
from tools.tune import knobs, search
from tools.tune.observe import Observation
from tools.tune.search import Search, Step
from tools.tune.space import Strategy
from tools.validation import write_config

TABLE_COLUMNS = ("step", "change", "req/s", "p99 ms", "within SLO", "failed", "load gen CPU")
LAST_COLUMN = {Strategy.GREEDY: "kept", Strategy.SWEEP: "winner"}  # a sweep keeps nothing: it names its best


def progress_line(step: Step, strategy: Strategy = Strategy.GREEDY) -> str:
    """One line per decision: what changed, why, what it measured, whether it stays (a sweep's point says where in
    the grid it is instead)."""
    if step.index == 0:
        return f"step 0: start ({step.setting_text()}): {step.verdict}"
    measured = (f" [loaded in {step.apply_s:.1f} s under load: {step.failed} failed, slowest {step.slowest_ms:.0f} "
                f"ms; load generator {step.load_cpu:.2f} cores]") if step.requests else ""
    where = f"step {step.index}: " if strategy == Strategy.GREEDY else ""
    return f"{where}{step.reason} -> {step.verdict}{measured}"


def table_columns(search: Search) -> tuple[str, ...]:
    return (*TABLE_COLUMNS, LAST_COLUMN[search.options.strategy])


def table_rows(search: Search) -> list[tuple[str, ...]]:
    slo = search.options.slo_p99_ms
    best, greedy = search.best(), search.options.strategy == Strategy.GREEDY
    return [(str(s.index), s.change, f"{s.throughput_rps:.1f}", f"{s.p99_ms:.0f}",
             "yes" if s.requests and s.outcome().within(slo) else "no", str(s.failed), f"{s.load_cpu:.2f}",
             "yes" if (s.kept if greedy else s is best) else "no") for s in search.steps]


def title(search: Search) -> str:
    measured = sum(1 for s in search.steps if s.requests)
    return (f"tools tune {search.options.model} ({search.options.strategy}): {measured} settings measured, "
            f"{search.wall_s:.0f} s")


def as_dict(search: Search) -> dict:
    best = search.best()
    options = search.options
    grid = search.grid
    return {"model": options.model, "strategy": str(options.strategy), "slo_p99_ms": options.slo_p99_ms,
            "cores": options.cores,
            "window_s": options.window_s, "users": options.users, "protocol": str(options.protocol),
            "workload": str(options.workload),
            "load_generator": "Locust, one process (tools.loadtest.runner), constant users",
            "tuned_models": search.models, "wall_s": search.wall_s, "stopped": search.stopped,
            "winner": best.index if best else None,
            "grid": {"points": len(grid.points), "size": grid.size, "axes": {a.name: list(a.labels) for a in grid.axes},
                     "refused": grid.refused} if grid else None,
            "failed_during_changes": sum(s.failed for s in search.steps[1:]),
            "steps": [s.as_dict(options.slo_p99_ms) for s in search.steps]}


def plot(search: Search, path: Path) -> None:
    """Throughput against p99 for every measured step, the SLO as a vertical line, the winner marked; the greedy's
    steps joined in order and coloured kept or undone, the sweep's coloured inside or over the SLO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [s for s in search.steps if s.requests]
    slo = search.options.slo_p99_ms
    greedy = search.options.strategy == Strategy.GREEDY
    figure, axis = plt.subplots(figsize=(8, 5))
    if greedy:
        axis.plot([s.p99_ms for s in measured], [s.throughput_rps for s in measured], color="tab:gray", alpha=0.4)
    for s in measured:
        blue = s.kept if greedy else s.outcome().within(slo)
        axis.scatter(s.p99_ms, s.throughput_rps, color="tab:blue" if blue else "tab:orange", zorder=3)
        axis.annotate(str(s.index), (s.p99_ms, s.throughput_rps), textcoords="offset points", xytext=(5, 5))
    axis.axvline(slo, color="tab:red", linestyle="--", label=f"SLO p99 {slo:g} ms")
    if best := search.best():
        axis.scatter(best.p99_ms, best.throughput_rps, s=250, facecolors="none", edgecolors="tab:green", linewidths=2,
                     zorder=4, label=f"winner: step {best.index}")
    axis.scatter([], [], color="tab:blue", label="kept" if greedy else "inside the SLO")
    axis.scatter([], [], color="tab:orange", label="undone" if greedy else "over the SLO or failing")
    axis.set_xlabel("p99 latency (ms)")
    axis.set_ylabel("throughput (req/s)")
    axis.set_title(title(search))
    axis.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(search: Search, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "report.json", "plot": out_dir / "search.png"}
    files["json"].write_text(json.dumps(as_dict(search), indent=2))
    plot(search, files["plot"])
    return files


def write_back(search: Search, winner: Step) -> str:
    """Write the winner's settings into the repository's config files (validated by `write_config`); the diff."""
    repository = load_repository(search.options.repository)
    diffs = []
    for model in search.models:
        if winner.setting[model] == search.original[model]:
            continue
        before = repository.models[model].config_file.text or ""
        path = write_config(repository, model, knobs.write(repository.models[model].config, winner.setting[model]))
        diffs.append(unified_diff(model, path.name, before, path.read_text()))
    return "".join(diffs)


def unified_diff(model: str, name: str, before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        f"a/{model}/{name}", f"b/{model}/{name}"))


def config_diff(repository: Repository, model: str, wanted: knobs.Knobs) -> str:
    """The diff `--write` would make to `model`'s config (only the changed fields; comments kept)."""
    entry = repository.models[model]
    before = entry.config_file.text or ""
    after = knobs.write(entry.config, wanted)
    text = edit_config_text(before, entry.config, after) or text_format.MessageToString(after)
    return unified_diff(model, entry.config_file.path.name, before, text)


def recommended_diff(observation: Observation) -> str:
    """What `--write` would change, validated as it would be: '' when nothing is recommended."""
    move = observation.recommended
    if move is None:
        return ""
    repository = load_repository(observation.options.repository)
    search.candidate_configs(repository, move.setting, observation.options.cores)
    return "".join(config_diff(repository, model, move.setting[model]) for model in observation.models
                   if move.setting[model] != observation.repository_setting[model])


def write_observation(observation: Observation, out_dir: Path) -> Path:
    """The evidence, the settings judged, the recommendation and the other moves, as JSON: observe.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "observe.json"
    path.write_text(json.dumps({**observation.as_dict(), "diff": recommended_diff(observation)}, indent=2))
    return path
