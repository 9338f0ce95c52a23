"""Run a real Prometheus (Debian's package) on loopback, and promtool: to check dashboards and rules for real.

The first scrape lands seconds after start, so `wait_for_targets` polls `up` before anything is queried.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml
from prometheus_api_client import PrometheusConnect

from tools import processes, settings
from tools.errors import MonitoringError, ProcessError
from tools.processes import Child, free_port, spawn

PROMETHEUS_BINARY = "prometheus"
PROMTOOL_BINARY = "promtool"
INSTALL_HINT = "run scripts/install-prometheus.sh"
READY_TIMEOUT_S = 30.0
FIRST_SCRAPE_TIMEOUT_S = 30.0
WORKDIR_PREFIX = "prometheus-toolkit-"  # + the starter's pid: what `remove_stale_workdirs` goes by


class PrometheusError(MonitoringError):
    """Prometheus or promtool is missing, did not start, or did not scrape in time."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape job with one target; `labels` are attached to every series (e.g. namespace and pod)."""

    job: str
    address: str  # host:port
    labels: dict[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"


def remove_stale_workdirs(parent: Path | None = None) -> list[Path]:
    """Remove the folders (config, data, log) of Prometheus runs whose starter died without cleaning up, e.g. by
    SIGKILL: each folder is named after its starter's pid. Returns what was removed."""
    removed = []
    for folder in Path(parent or tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*-*"):
        pid = folder.name.removeprefix(WORKDIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PrometheusError(f"`{name}` is not on PATH; {INSTALL_HINT}")
    return path


def config(targets: Sequence[ScrapeTarget], rule_files: Sequence[Path], interval: str) -> dict:
    """A prometheus.yml scraping and evaluating every `interval`."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": t.job, "metrics_path": t.metrics_path,
                            "static_configs": [{"targets": [t.address], "labels": t.labels}]} for t in targets],
    }


class Prometheus:
    """One Prometheus process with its own config and storage in a temporary folder; stop() removes both."""

    def __init__(self, targets: Sequence[ScrapeTarget], rule_files: Sequence[Path] = (), interval: str = "1s",
                 host: str = settings.DEFAULT_HOST, port: int | None = None):
        self.targets, self.rule_files, self.interval = list(targets), list(rule_files), interval
        self.address = f"{host}:{port or free_port(host)}"
        self.workdir: Path | None = None
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = READY_TIMEOUT_S) -> Prometheus:
        executable = binary(PROMETHEUS_BINARY)
        remove_stale_workdirs()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config(self.targets, self.rule_files, self.interval)))
        self.child = spawn("prometheus", [executable, f"--config.file={config_path}",
                                          f"--web.listen-address={self.address}",
                                          f"--storage.tsdb.path={self.workdir / 'data'}", "--log.level=warn"],
                           log=self.workdir / "prometheus.log")
        try:
            self.child.wait_until(self._ready, timeout, f"readiness at {self.url}")
        except ProcessError as exc:
            self.stop()
            raise PrometheusError(str(exc)) from None
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        return processes.http_ok(f"{self.url}/-/ready", timeout=1)

    def api(self, path: str) -> dict | list:
        """The `data` of a GET on the HTTP API, e.g. `rules` or `alerts`."""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}", timeout=5) as response:
            return json.load(response)["data"]

    def client(self) -> PrometheusConnect:
        return PrometheusConnect(url=self.url, disable_ssl=True)

    def wait_for_targets(self, timeout: float = FIRST_SCRAPE_TIMEOUT_S) -> None:
        """Block until every job has been scraped successfully once (`up == 1`)."""
        client, jobs = self.client(), {t.job for t in self.targets}

        def scraped() -> bool:
            return jobs <= {s["metric"]["job"] for s in client.custom_query("up == 1")}

        try:
            self.child.wait_until(scraped, timeout, f"successful scrape of {sorted(jobs)}")
        except ProcessError as exc:
            raise PrometheusError(str(exc)) from None

    def stop(self, timeout: float = 10.0) -> None:
        if self.child is not None:
            self.child.stop(timeout)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


@contextlib.contextmanager
def running_prometheus(targets: Sequence[ScrapeTarget], rule_files: Sequence[Path] = (),
                       interval: str = "1s") -> Iterator[Prometheus]:
    """A started Prometheus that has scraped every target once; always stopped."""
    prometheus = Prometheus(targets, rule_files, interval)
    prometheus.start()
    try:
        prometheus.wait_for_targets()
        yield prometheus
    finally:
        prometheus.stop()


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run promtool (e.g. `check rules FILE`, `test rules FILE`); output in the result, never raises on failure."""
    return processes.run("promtool", [binary(PROMTOOL_BINARY), *args], cwd=cwd, timeout=120)
