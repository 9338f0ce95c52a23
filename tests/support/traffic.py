"""Steady client traffic for fault tests and benchmarks: threads that each keep one client for their whole life, as a
Locust user does, and log every request (started, ended, succeeded, the error's words)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tools.errors import ServingError
from tools.serving import client
from tools.settings import Protocol

SHORT = ("A man is playing a guitar.",)
# A request that takes about a second on this machine (16 texts of 128 tokens): it is in flight when a signal lands.
LONG = ("word " * 200,) * 16
PAUSE_AFTER_FAILURE_S = 0.1


@dataclass(frozen=True)
class Request:
    sender: str
    started: float  # time.monotonic()
    ended: float
    ok: bool
    error: str


class Traffic:
    """One thread per (protocol, url, texts); `unexpected` collects anything but a ServingError (a client crash)."""

    def __init__(self, senders: Sequence[tuple[Protocol, str, Sequence[str]]],
                 pause_after_failure_s: float = PAUSE_AFTER_FAILURE_S):
        self.pause_after_failure_s = pause_after_failure_s
        self.log: list[Request] = []
        self.unexpected: list[str] = []
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(f"{protocol}-{index}", protocol, url, texts))
                         for index, (protocol, url, texts) in enumerate(senders)]

    def _send(self, name: str, protocol: Protocol, url: str, texts: Sequence[str]) -> None:
        with contextlib.closing(client.connect(protocol, url)) as connection:
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    client.embed(connection, list(texts))
                    error = ""
                except ServingError as exc:
                    error = str(exc) or type(exc).__name__
                except Exception as exc:  # a crash of the client is a finding: keep sending, report it
                    self.unexpected.append(f"{type(exc).__name__}: {exc}")
                    error = f"unexpected {type(exc).__name__}"
                self.log.append(Request(name, started, time.monotonic(), not error, error))
                if error:
                    time.sleep(self.pause_after_failure_s)

    @property
    def ok(self) -> int:
        return sum(request.ok for request in self.log)

    @property
    def failures(self) -> list[Request]:
        return [request for request in self.log if not request.ok]

    def succeeded_since(self, moment: float) -> set[str]:
        """The senders with a success started after `moment`."""
        return {request.sender for request in self.log if request.ok and request.started > moment}

    def wait_for_every_sender(self, moment: float, timeout: float) -> float | None:
        """When every sender had a success started after `moment` (monotonic), or None after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.succeeded_since(moment)) == len(self._threads):
                return max(min(r.ended for r in self.log if r.sender == s and r.ok and r.started > moment)
                           for s in self.succeeded_since(moment))
            time.sleep(0.1)
        return None

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join()
