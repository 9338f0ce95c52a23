"""What happens to a Deployment's pods while something is done to them (a Helm upgrade, a rollback, an eviction):
each pod's state (starting, ready, terminating) and the requests it served, sampled from the API server and from
each pod's own metrics port, with the moments worth marking; saved as a plot.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.support.cluster import KubeAPI, is_ready
from tools import settings
from tools.monitoring import metrics, scrape

INTERVAL_S = 0.5
RATE_WINDOW = 4  # samples: requests/s over two seconds


@dataclass(frozen=True)
class PodSample:
    pod: str
    state: str  # pending | starting | ready | terminating
    restarts: int
    served: float | None  # the entry model's successful requests so far (None: metrics unreadable)


def pod_state(pod: dict) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "terminating"
    if is_ready(pod):
        return "ready"
    return "starting" if pod.get("status", {}).get("podIP") else "pending"


def served(pod_ip: str, model: str) -> float | None:
    """Requests `model` answered in this pod, from its metrics port (the chart's service.metricsPort)."""
    try:
        samples = scrape.scrape(f"http://{pod_ip}:{settings.DEFAULT_METRICS_PORT}/metrics", timeout=1.0)
    except scrape.MetricsUnavailableError:
        return None
    return sum(value for (name, labels), value in samples.items()
               if name == metrics.REQUEST_SUCCESS and dict(labels).get(metrics.MODEL_LABEL) == model)


@dataclass
class Timeline:
    """Samples the namespace's pods every INTERVAL_S from `start()` to `stop()`; `mark` notes an event."""

    api: KubeAPI
    namespace: str
    model: str = settings.EMBED_MODEL
    samples: list[tuple[float, list[PodSample]]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._t0 = time.monotonic()

    def __enter__(self) -> Timeline:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def now(self) -> float:
        return round(time.monotonic() - self._t0, 2)

    def mark(self, label: str) -> None:
        self.marks.append((self.now(), label))

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.samples.append((self.now(), [self._sample(pod) for pod in self.api.pods(self.namespace)]))
            self._stop.wait(INTERVAL_S)

    def _sample(self, pod: dict) -> PodSample:
        status = pod.get("status", {})
        ip = status.get("podIP")
        restarts = sum(c.get("restartCount", 0) for c in status.get("containerStatuses", []))
        return PodSample(pod["metadata"]["name"], pod_state(pod), restarts, served(ip, self.model) if ip else None)

    def pods(self) -> list[str]:
        """Every pod seen, in order of appearance."""
        seen: dict[str, None] = {}
        for _, pods in self.samples:
            seen.update((sample.pod, None) for sample in pods)
        return list(seen)

    def ready_counts(self, after: float = 0.0) -> list[int]:
        """Ready pods at each sample taken after `after`: capacity during the operation."""
        return [sum(sample.state == "ready" for sample in pods) for t, pods in self.samples if t >= after]

    def requests_by_pod(self) -> dict[str, float]:
        """Requests each pod served while sampled (last count minus first; a restart resets Triton's counters)."""
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        for _, pods in self.samples:
            for sample in pods:
                if sample.served is not None:
                    first.setdefault(sample.pod, sample.served)
                    last[sample.pod] = sample.served
        return {pod: last[pod] - first[pod] for pod in last}

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps({"marks": self.marks, "samples": [
            {"t": t, "pods": [asdict(sample) for sample in pods]} for t, pods in self.samples]}))
        return path

    def plot(self, path: Path, title: str) -> Path:
        """Top: one lane per pod, coloured by state. Bottom: requests/s each pod served. Marks as vertical lines."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        colours = {"pending": "#d9d9d9", "starting": "#fdb863", "ready": "#5aae61", "terminating": "#d6604d"}
        pods = self.pods()
        figure, (lanes, rates) = plt.subplots(2, 1, figsize=(11, 2.2 + 0.45 * len(pods) + 2.8), sharex=True,
                                              gridspec_kw={"height_ratios": [max(1, len(pods)), 4]})
        for (t, samples), (t_next, _) in itertools.pairwise(self.samples):
            for sample in samples:
                lanes.barh(pods.index(sample.pod), t_next - t, left=t, color=colours[sample.state], height=0.7)
        lanes.set_yticks(range(len(pods)), [pod.rsplit("-", 2)[-2][-5:] + "-" + pod[-5:] for pod in pods])
        lanes.invert_yaxis()
        lanes.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()], labels=list(colours),
                     loc="upper right", fontsize=8, ncols=4)
        for pod in pods:
            points = [(t, s.served) for t, samples in self.samples for s in samples
                      if s.pod == pod and s.served is not None]
            # Over RATE_WINDOW samples: Triton's counters move in steps, a rate per sample would only show them.
            rate = [((t0 + t1) / 2, (n1 - n0) / (t1 - t0))
                    for (t0, n0), (t1, n1) in zip(points, points[RATE_WINDOW:], strict=False) if t1 > t0 and n1 >= n0]
            if rate:
                rates.plot(*zip(*rate, strict=True), label=pod[-5:], linewidth=1.2)
        rates.set_ylabel(f"{self.model} requests/s")
        rates.set_xlabel("seconds")
        rates.legend(fontsize=8, loc="upper left")
        for t, label in self.marks:
            for axis in (lanes, rates):
                axis.axvline(t, color="black", linestyle=":", linewidth=0.8)
            lanes.annotate(label, (t, -0.6), fontsize=8, rotation=0, annotation_clip=False)
        lanes.set_title(title, fontsize=10, pad=18)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return path
