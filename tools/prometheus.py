"""Run a real Prometheus (Debian's package) on loopback, and promtool: to check dashboards and rules for real.

The first scrape lands seconds after start, so `wait_for_targets` polls `up` before anything is queried.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from prometheus_api_client import PrometheusConnect

from tools import settings
from tools.processes import die_with_parent
from tools.runtime import free_port

PROMETHEUS_BINARY = "prometheus"
PROMTOOL_BINARY = "promtool"
INSTALL_HINT = "run scripts/install-prometheus.sh"
READY_TIMEOUT_S = 30.0
FIRST_SCRAPE_TIMEOUT_S = 30.0


class PrometheusError(Exception):
    """Prometheus or promtool is missing, did not start, or did not scrape in time."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape job with one target; `labels` are attached to every series (e.g. namespace and pod)."""

    job: str
    address: str  # host:port
    labels: dict[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"


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
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = READY_TIMEOUT_S) -> Prometheus:
        executable = binary(PROMETHEUS_BINARY)
        self.workdir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config(self.targets, self.rule_files, self.interval)))
        with (self.workdir / "prometheus.log").open("wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [executable, f"--config.file={config_path}", f"--web.listen-address={self.address}",
                 f"--storage.tsdb.path={self.workdir / 'data'}", "--log.level=warn"],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=die_with_parent)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def log_text(self) -> str:
        log = self.workdir / "prometheus.log" if self.workdir else None
        return log.read_text(errors="replace") if log and log.exists() else ""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited with code {self.process.returncode}: {self.log_text()}")
            with contextlib.suppress(urllib.error.URLError, OSError), \
                    urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise PrometheusError(f"prometheus was not ready at {self.url} after {timeout:.0f} s")

    def api(self, path: str) -> dict | list:
        """The `data` of a GET on the HTTP API, e.g. `rules` or `alerts`."""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}", timeout=5) as response:
            return json.load(response)["data"]

    def client(self) -> PrometheusConnect:
        return PrometheusConnect(url=self.url, disable_ssl=True)

    def wait_for_targets(self, timeout: float = FIRST_SCRAPE_TIMEOUT_S) -> None:
        """Block until every job has been scraped successfully once (`up == 1`)."""
        client, jobs = self.client(), {t.job for t in self.targets}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            scraped = {s["metric"]["job"] for s in client.custom_query("up == 1")}
            if jobs <= scraped:
                return
            time.sleep(0.2)
        raise PrometheusError(f"no successful scrape of {sorted(jobs - scraped)} after {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
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
    return subprocess.run([binary(PROMTOOL_BINARY), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=120)
