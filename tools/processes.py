"""The one supervisor for every child process the project starts (servers, Locust, Prometheus, benchmark services,
test clusters): spawned in a session of its own so that the whole group can be stopped, killed by the kernel if
its starter dies (even by SIGKILL), stopped with TERM, a grace period, then KILL, and waited for with a deadline
that names what it was waiting for.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tools import settings
from tools.errors import ProcessError, UsageError

PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_GRACE_S = 10.0
POLL_INTERVAL_S = 0.1


def die_with_parent() -> None:
    """Popen's preexec_fn: the kernel SIGTERMs the child if its starter dies, even by SIGKILL (Linux only).

    The signal follows the *thread* that called Popen, so start long-lived children from a thread that lives as long.
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = settings.DEFAULT_HOST) -> int:
    """A port nothing listens on right now (the kernel's choice): tests and throwaway servers never collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class PortBusyError(ProcessError):
    """A port a child was to listen on is taken."""


def require_free_port(host: str, port: int, option: str) -> None:
    """Name a taken port (and the flag that changes it) before a child fails on it with a traceback of its own."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no obstacle
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UsageError(f"{host} is not an address of this machine; bind one of its own with --host "
                                 f"({settings.DEFAULT_HOST} by default)") from None
            raise PortBusyError(f"port {host}:{port} is busy ({exc.strerror}); pick another with {option}") from None


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether `url` answers 200 now: the readiness probe of children that serve HTTP."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass
class Child:
    """One supervised process and its process group; `log` holds its stdout and stderr when it was given one."""

    name: str
    process: subprocess.Popen
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last `lines` non-empty lines of the log."""
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join([line for line in self.log.read_text(errors="replace").splitlines() if line.strip()][-lines:])

    def wait_until(self, ready: Callable[[], bool], timeout: float, waiting_for: str) -> None:
        """Poll `ready` until it holds; raise ProcessError naming `waiting_for` if the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise ProcessError(f"{self.name} exited with code {self.returncode} while waiting for "
                                   f"{waiting_for}{self._tail_note()}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise ProcessError(f"{self.name}: gave up waiting for {waiting_for} after {timeout:.0f} s"
                                   f"{self._tail_note()}")
            time.sleep(POLL_INTERVAL_S)

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; ProcessError if the child still runs after `timeout` seconds."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ProcessError(f"{self.name} still running after {timeout:.0f} s") from None

    def stop(self, grace: float = STOP_GRACE_S) -> int:
        """SIGTERM the whole group, SIGKILL it after `grace` seconds, reap the child; safe to call twice."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(grace)
        # Members of the group that outlived its leader (e.g. stubs of a killed server) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait()

    def _tail_note(self) -> str:
        """The log's last line and where the log is: one line, as every error the tools print."""
        last = self.log_tail(1).strip()
        return f"; last log line: {last} (log: {self.log})" if last else ""


def spawn(name: str, argv: Sequence[str | os.PathLike], *, log: Path | None = None,
          env: dict[str, str] | None = None, cwd: Path | None = None,
          stdin: int | IO | None = subprocess.DEVNULL, stdout: int | IO | None = None,
          stderr: int | IO | None = None, text: bool = False) -> Child:
    """Start `argv` in a new session that dies with its starter. Output goes to `log` (appended), else to `stdout`
    and `stderr` (None: inherited, e.g. a web UI's console)."""
    log_file = log.open("ab") if log is not None else None
    try:
        process = subprocess.Popen(
            [str(arg) for arg in argv], stdin=stdin,
            stdout=log_file if log_file is not None else stdout,
            stderr=subprocess.STDOUT if log_file is not None else stderr,
            env=env, cwd=cwd, text=text, start_new_session=True, preexec_fn=die_with_parent)
    except OSError as exc:
        raise ProcessError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from None
    finally:
        if log_file is not None:
            log_file.close()  # the child holds its own descriptor
    return Child(name, process, log)


@contextlib.contextmanager
def running(name: str, argv: Sequence[str | os.PathLike], *, ready: Callable[[], bool] | None = None,
            timeout: float = 60.0, waiting_for: str = "readiness", grace: float = STOP_GRACE_S,
            **spawn_options) -> Iterator[Child]:
    """A child that is ready (when `ready` is given) for the body of the `with`, and stopped after it, always."""
    child = spawn(name, argv, **spawn_options)
    try:
        if ready is not None:
            child.wait_until(ready, timeout, waiting_for)
        yield child
    finally:
        child.stop(grace)


def run(name: str, argv: Sequence[str | os.PathLike], *, timeout: float, input: str | None = None,
        env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """A short command, supervised like every child: output captured as text, its whole group stopped on timeout.
    A failing exit status is returned, not raised: the caller knows what it means."""
    child = spawn(name, argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd, text=True)
    try:
        out, err = child.process.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ProcessError(f"{name} did not finish in {timeout:.0f} s") from None
    finally:
        child.stop()
    return subprocess.CompletedProcess(child.process.args, child.process.returncode, out, err)
