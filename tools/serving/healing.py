"""Self-healing of Python-backend stubs that died under a running tritonserver.

Triton 2.51 does not restart a stub process that was killed (OOM killer, a crash, SIGKILL): the model and the server
stay READY while every request routed to the dead instance fails with 500 "Stub process ... is not healthy". We see
it without any traffic: each loaded Python-backend model version should have one live
`triton_python_backend_stub` child of the server per instance of its instance groups, and the stub's command line
names its model folder, version and instance. When one stays missing, we reload that model version from disk.

Triton reloads only what changed on disk: a plain load of an unchanged model is a no-op (the dead stub stays), so the
heal first touches the version folder (its mtime only), then loads the model. Triton then loads that version anew
(new stubs, warm-up included), switches traffic to it and retires the old one; other versions and the ensembles that
use the model keep serving.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from tritonclient.utils import InferenceServerException

from tools.errors import ServingError
from tools.serving.runtime import TritonServer

STUB_NAME = "triton_python_backend_stub"
# Triton 2.51's stub argv: stub, <model folder>/<version>/model.py, shm region, sizes, parent pid, backend folder,
# ipc timeout, <instance name>, device.
STUB_MODEL_ARG = 1
STUB_INSTANCE_ARG = 8
POLL_INTERVAL_S = 1.0
CONFIRMATIONS = 2  # a stub is missing on this many polls in a row: one poll can fall in the middle of a reload
MAX_ATTEMPTS = 3  # failed heals in a row before we stop retrying a model version
RECOVERY_TIMEOUT_S = 60.0

Key = tuple[str, str]  # (model, version)


@dataclass(frozen=True)
class Stub:
    """One live stub process: which instance of which model version it runs."""

    pid: int
    model: str
    version: str
    instance: str


@dataclass(frozen=True)
class Finding:
    """A model version whose instances have had no live stub for CONFIRMATIONS polls; `pids` are the dead stubs'
    pids when they were seen alive before."""

    model: str
    version: str
    instances: tuple[str, ...]
    pids: tuple[int, ...]

    @property
    def reason(self) -> str:
        stubs = ", ".join(self.instances)
        if self.pids:
            return f"stub {stubs} (pid {', '.join(map(str, self.pids))}) died"
        return f"stub {stubs} missing"


@dataclass(frozen=True)
class Heal:
    """One model version reloaded: what was wrong, how long the reload took, and from detection until every stub was
    back."""

    finding: Finding
    detected_at: float  # time.monotonic()
    reload_s: float
    recovered_s: float

    @property
    def model(self) -> str:
        return self.finding.model


@dataclass(frozen=True)
class HealFailure:
    """A heal that did not bring the stubs back; `gave_up` when no more attempts will be made for this version."""

    finding: Finding
    error: str
    attempt: int
    gave_up: bool


def stub_from_cmdline(pid: int, cmdline: list[str]) -> Stub | None:
    """The stub a command line runs, or None for anything else."""
    if len(cmdline) <= STUB_INSTANCE_ARG or Path(cmdline[0]).name != STUB_NAME:
        return None
    version_dir = Path(cmdline[STUB_MODEL_ARG]).parent
    return Stub(pid, version_dir.parent.name, version_dir.name, cmdline[STUB_INSTANCE_ARG])


def live_stubs(server_pid: int) -> list[Stub]:
    """The server's stub children that still run (a killed stub stays a zombie until Triton retires its model)."""
    stubs = []
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(server_pid).children():
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
                stub = stub_from_cmdline(child.pid, child.cmdline())
            except psutil.Error:
                continue
            if stub is not None:
                stubs.append(stub)
    return stubs


def expected_instances(index: Iterable[dict], configs: dict[str, dict]) -> dict[Key, set[str]]:
    """Instance names each READY Python-backend model version should run, from the repository index and the models'
    configs (Triton names instance i of group g `g_i`)."""
    expected: dict[Key, set[str]] = {}
    for entry in index:
        config = configs.get(entry["name"])
        if entry.get("state") != "READY" or config is None or config.get("backend") != "python":
            continue
        expected[(entry["name"], str(entry["version"]))] = {
            f"{group['name']}_{i}" for group in config.get("instance_group", []) for i in range(int(group["count"]))}
    return expected


@dataclass
class Detector:
    """Compares what should run with what runs, poll after poll; remembers pids so that a finding can name them."""

    confirmations: int = CONFIRMATIONS
    _streaks: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _pids: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def observe(self, expected: dict[Key, set[str]], stubs: Iterable[Stub]) -> list[Finding]:
        live = set()
        for stub in stubs:
            live.add((stub.model, stub.version, stub.instance))
            self._pids[(stub.model, stub.version, stub.instance)] = stub.pid
        missing = {(model, version, instance) for (model, version), instances in expected.items()
                   for instance in instances} - live
        self._streaks = {key: self._streaks.get(key, 0) + 1 for key in missing}
        confirmed: dict[Key, list[str]] = {}
        for (model, version, instance), streak in sorted(self._streaks.items()):
            if streak >= self.confirmations:
                confirmed.setdefault((model, version), []).append(instance)
        return [Finding(model, version, tuple(instances),
                        tuple(self._pids[(model, version, i)] for i in instances if (model, version, i) in self._pids))
                for (model, version), instances in confirmed.items()]

    def forget(self, finding: Finding) -> None:
        """After a heal: the old pids are gone for good and the count starts again."""
        for instance in finding.instances:
            key = (finding.model, finding.version, instance)
            self._streaks.pop(key, None)
            self._pids.pop(key, None)


class Healer:
    """Polls one server's stubs and reloads the model versions that lost one; `check()` is one poll, `start()` runs
    it on a background thread until `stop()`."""

    def __init__(self, server: TritonServer, on_heal: Callable[[Heal], None] = lambda heal: None,
                 on_failure: Callable[[HealFailure], None] = lambda failure: None,
                 interval: float = POLL_INTERVAL_S, detector: Detector | None = None,
                 max_attempts: int = MAX_ATTEMPTS, recovery_timeout: float = RECOVERY_TIMEOUT_S):
        self.server = server
        self.on_heal = on_heal
        self.on_failure = on_failure
        self.interval = interval
        self.detector = detector or Detector()
        self.max_attempts = max_attempts
        self.recovery_timeout = recovery_timeout
        self._attempts: dict[Key, int] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def expected(self) -> dict[Key, set[str]]:
        index = self.server.repository_index()
        names = {entry["name"] for entry in index if entry.get("state") == "READY"}
        with contextlib.closing(self.server.client()) as connection:
            configs = {name: connection.get_model_config(name) for name in names}
        return expected_instances(index, configs)

    def check(self) -> list[Heal | HealFailure]:
        """One poll: find model versions that lost a stub and heal each; an unreachable server is no finding."""
        if self.server.child is None or not self.server.child.running():
            return []
        try:
            expected = self.expected()
        except (InferenceServerException, ServingError, OSError):
            return []
        findings = self.detector.observe(expected, live_stubs(self.server.child.pid))
        unhealthy = {(finding.model, finding.version) for finding in findings}
        self._attempts = {key: count for key, count in self._attempts.items() if key in unhealthy}
        outcomes = []
        for finding in findings:
            key = (finding.model, finding.version)
            if self._attempts.get(key, 0) >= self.max_attempts:
                continue  # given up on; reported once already
            outcome = self.heal(finding)
            outcomes.append(outcome)
            if isinstance(outcome, Heal):
                self._attempts.pop(key, None)
                self.on_heal(outcome)
            else:
                self.on_failure(outcome)
        return outcomes

    def heal(self, finding: Finding) -> Heal | HealFailure:
        """Reload the version from disk and wait until all its instances run again."""
        detected = time.monotonic()
        key = (finding.model, finding.version)
        try:
            os.utime(Path(self.server.opts.repository) / finding.model / finding.version)
            self.server.load_model(finding.model)
            reloaded = time.monotonic()
            self._wait_recovered(finding)
        except (ServingError, OSError) as exc:
            attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
            return HealFailure(finding, str(exc), attempt, attempt >= self.max_attempts)
        self.detector.forget(finding)
        return Heal(finding, detected, reloaded - detected, time.monotonic() - detected)

    def _wait_recovered(self, finding: Finding) -> None:
        deadline = time.monotonic() + self.recovery_timeout
        wanted = set(finding.instances)
        while True:
            running = {s.instance for s in live_stubs(self.server.child.pid)
                       if (s.model, s.version) == (finding.model, finding.version)}
            if wanted <= running:
                return
            if time.monotonic() > deadline:
                raise ServingError(f"{finding.model} version {finding.version} reloaded but stubs "
                                   f"{', '.join(sorted(wanted - running))} did not come back "
                                   f"in {self.recovery_timeout:.0f} s")
            time.sleep(0.1)

    # -- background thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.check()

    def start(self) -> Healer:
        """First poll here, so the stubs running now are known by pid; the next ones on the thread."""
        self.check()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="healer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = RECOVERY_TIMEOUT_S) -> None:
        """Stop polling; a heal under way finishes first (bounded by its own timeouts)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Healer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
