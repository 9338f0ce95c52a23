"""Record real traffic as OpenMetrics for `tools tune --observe`'s tests: a real Triton serving the shipped repository,
the project's Locust runner loading it, Triton's /metrics read every second and written with each read's time and
the labels a Prometheus scraping the chart's pods attaches (`job`, `namespace`, `pod`).

    .venv/bin/python -m tests.tune.record_traffic tests/tune/traffic.om

The tests shift the timestamps so that the recording ends just before they start, and backfill it with promtool.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.support import paths
from tools import settings
from tools.loadtest import runner
from tools.monitoring import queries, scrape
from tools.serving import runtime

LABELS = {queries.JOB_LABEL: settings.METRICS_JOB, queries.NAMESPACE_LABEL: "embeddings",
          queries.POD_LABEL: "triton-embeddings-0"}
LOAD_S = 12
USERS = 8
IDLE_S = 2  # read before and after the load, so the recording starts and ends quiet


def _line(name: str, labels: dict[str, str], value: float, at: float) -> str:
    escaped = ",".join(f'{key}="{text}"' for key, text in sorted(labels.items()))
    return f"{name}{{{escaped}}} {value!r} {at:.3f}"


def openmetrics(reads: list[tuple[float, scrape.Samples]]) -> str:
    """Every `nv_` sample of every read, grouped by family as OpenMetrics requires, oldest first, `# EOF` last."""
    lines: dict[str, list[str]] = {}
    series = sorted({key for _, samples in reads for key in samples if key[0].startswith("nv_")})
    for name, labels in series:
        for at, samples in reads:
            if (name, labels) in samples:
                lines.setdefault(name, []).append(_line(name, {**dict(labels), **LABELS}, samples[(name, labels)], at))
    return "\n".join(line for name in sorted(lines) for line in lines[name]) + "\n# EOF\n"


def record(out: Path) -> None:
    reads: list[tuple[float, scrape.Samples]] = []
    stop = threading.Event()
    with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=paths.REPOSITORY)) as server:
        def read_every_second() -> None:
            while not stop.is_set():
                reads.append((time.time(), scrape.scrape(server.metrics_url)))
                stop.wait(1.0)

        reader = threading.Thread(target=read_every_second)
        reader.start()
        try:
            time.sleep(IDLE_S)
            config = runner.LoadTestConfig(url=server.grpc_url, protocol=settings.Protocol.GRPC, users=USERS,
                                           duration_s=LOAD_S)
            with tempfile.TemporaryDirectory() as folder:
                result = runner.run(config, Path(folder))
            time.sleep(IDLE_S)
        finally:
            stop.set()
            reader.join()
    out.write_text(openmetrics(reads))
    print(f"{len(reads)} reads, {result.client.requests} requests ({result.client.failures} failed) -> {out}")


if __name__ == "__main__":
    record(Path(sys.argv[1]))
