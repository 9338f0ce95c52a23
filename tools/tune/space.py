"""The sweep's grid: every combination of a few levels of the knobs the greedy search turns, the reference the greedy
search is measured against; ordered so that consecutive points reload as few models as possible.

Per model, every instance count from 1 to the cores; where the model has ONNX threads (the encoder), only the
instances x threads pairs at the budget (neither one more instance nor one more thread fits): a pair below it leaves
cores idle in the model that computes most, and dropping those pairs halves the levels of the model whose reload is
slow. The tokenizer's length buckets and the batching delay take the levels `decide.SWEEP_*`; the delay is one axis
for every model with a batcher (one axis per model would triple the grid: 144 points for the shipped `embed` on 2
cores instead of 48). Preferred batch sizes and queue limits stay as configured: a queue limit only matters under
overload (it refuses what the load piles up beyond it), and a preferred size only refines a delay whose batches form.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tools.tune import decide
from tools.tune.knobs import Knobs, Setting, with_change

Level = dict[str, dict[str, int | str]]  # model -> the knobs one level of an axis sets


class Strategy(enum.StrEnum):
    """How a search picks the settings it measures."""

    GREEDY = "greedy"  # one move at a time where the per-model metrics point (tools/tune/decide.py), kept if it pays
    SWEEP = "sweep"  # every point of the grid below: the reference the greedy search is measured against


@dataclass(frozen=True)
class Levels:
    """The delays and length buckets the grid tries (`decide`'s by default; a test's tiny grid takes fewer)."""

    delays_us: tuple[int, ...] = decide.SWEEP_DELAYS_US
    buckets: tuple[str, ...] = decide.SWEEP_BUCKETS


@dataclass(frozen=True)
class Axis:
    """One dimension of the grid: what it turns, and per level what it sets in each model it touches."""

    name: str
    levels: tuple[Level, ...]
    labels: tuple[str, ...]


@dataclass
class Grid:
    """The points to measure, in order, and the model settings validation refused (points using them are left out)."""

    axes: list[Axis]
    points: list[Setting]
    size: int  # points before validation
    refused: dict[str, list[str]] = field(default_factory=dict)  # why -> the model settings refused for it

    def describe(self) -> str:
        axes = " x ".join(f"{axis.name} {{{', '.join(axis.labels)}}}" for axis in self.axes)
        refused = f", {self.size - len(self.points)} refused by validation" if self.refused else ""
        return f"{len(self.points)} point(s){refused}: {axes}"

    def refusals(self) -> str:
        return "; ".join(f"{why} (for {' | '.join(settings)})" for why, settings in self.refused.items())


def capacity(knobs: Knobs, cores: int) -> list[tuple[int, int | None]]:
    """(instances, threads) levels: 1..cores instances, or for a model with threads the pairs at the budget."""
    if knobs.threads is None:
        return [(instances, None) for instances in range(1, cores + 1)]
    return [(instances, cores // instances) for instances in range(1, cores + 1)
            if cores // (cores // instances) == instances]


def _model_axis(model: str, knobs: Knobs, cores: int, levels: Levels) -> Axis:
    buckets = levels.buckets if knobs.buckets is not None else (None,)
    pairs = list(itertools.product(capacity(knobs, cores), buckets))
    sets = tuple({model: {"instances": instances, **({"threads": threads} if threads else {}),
                          **({"buckets": bucket} if bucket is not None else {})}}
                 for (instances, threads), bucket in pairs)
    labels = tuple(f"{instances}" + (f"x{threads}" if threads else "") + (f' "{bucket}"' if bucket is not None else "")
                   for (instances, threads), bucket in pairs)
    name = "instances" + (" x threads" if knobs.threads is not None else "") + \
        (" with buckets" if knobs.buckets is not None else "")
    return Axis(f"{model} {name}", sets, labels)


def _nearest_first(axis: Axis, setting: Setting) -> Axis:
    """The axis with the level that changes the fewest knobs of `setting` first (the others in order): the sweep
    starts next to the settings it starts from."""
    def changes(index: int) -> int:
        return sum(getattr(setting[model], name) != value for model, change in axis.levels[index].items()
                   for name, value in change.items())

    order = sorted(range(len(axis.levels)), key=changes)[:1]
    order += [index for index in range(len(axis.levels)) if index not in order]
    return Axis(axis.name, tuple(axis.levels[i] for i in order), tuple(axis.labels[i] for i in order))


def axes(setting: Setting, cores: int, levels: Levels = Levels()) -> list[Axis]:
    """The grid's axes, the slowest to reload outermost: models with ONNX threads (a session to build: the encoder's
    reload took 2-12 s), then the batching delay (it reloads them too), then the other models."""
    threaded = [model for model, knobs in setting.items() if knobs.threads is not None]
    found = [_model_axis(model, setting[model], cores, levels) for model in threaded]
    batching = [model for model, knobs in setting.items() if knobs.delay_us is not None]
    if batching and levels.delays_us:
        found.append(Axis(f"delay of {', '.join(batching)}", tuple({model: {"delay_us": delay} for model in batching}
                                                                 for delay in levels.delays_us),
                          tuple(f"{delay} us" for delay in levels.delays_us)))
    found += [_model_axis(model, knobs, cores, levels) for model, knobs in setting.items() if model not in threaded]
    return [_nearest_first(axis, setting) for axis in found]


def snake(sizes: list[int]) -> Iterator[tuple[int, ...]]:
    """Every index of a grid of these sizes, the last axis fastest, each inner run walked back and forth so that
    consecutive indices differ in one axis only (a reflected mixed-radix Gray code)."""
    if not sizes:
        yield ()
        return
    inner = list(snake(sizes[1:]))
    for outer in range(sizes[0]):
        for rest in inner if outer % 2 == 0 else reversed(inner):
            yield outer, *rest


def grid(setting: Setting, cores: int, levels: Levels = Levels(),
         refusal: Callable[[str, Knobs], str | None] = lambda model, knobs: None) -> Grid:
    """Every point of the grid from `setting` (the repository's: the knobs no axis turns stay as they are), in
    order; a point with a model setting `refusal` objects to is left out (each model setting is judged once)."""
    found = axes(setting, cores, levels)
    judged: dict[tuple[str, Knobs], str | None] = {}
    refused: dict[str, list[str]] = {}
    points = []
    for index in snake([len(axis.levels) for axis in found]):
        point = dict(setting)
        for axis, level in zip(found, index, strict=True):
            for model, change in axis.levels[level].items():
                point = with_change(point, model, **change)
        for model, knobs in point.items():
            if (model, knobs) not in judged:
                judged[model, knobs] = why = refusal(model, knobs)
                if why is not None:
                    refused.setdefault(why, []).append(f"{model} {knobs.describe()}")
        if all(judged[model, knobs] is None for model, knobs in point.items()):
            points.append(point)
    return Grid(found, points, size=math.prod(len(axis.levels) for axis in found), refused=refused)
