"""Prove that nothing outlives a starter killed with SIGKILL: run a starter script until it prints its children's
pids (with `report_children`), SIGKILL it, and wait for every one of those processes to vanish and for the ports they
listened on to be free again."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import psutil

from tests.support import paths
from tools import processes, settings

MARK = "children:"
VANISH_TIMEOUT_S = 20.0


def report_children() -> None:
    """In a starter: print, on one marked line, its descendants and every member of the groups its children lead."""
    me = psutil.Process()
    groups = {child.pid for child in me.children()}  # each supervised child leads its own process group
    pids = {process.pid for process in me.children(recursive=True)}
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) in groups:
                pids.add(process.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    print(MARK, json.dumps(sorted(pids)), flush=True)


@dataclass(frozen=True)
class Aftermath:
    """What a starter's SIGKILL left behind: `left` and `bound` are empty when everything went with it."""

    pids: list[int]  # what the starter reported
    notes: list[str]  # what it printed before that, e.g. a folder or a name prefix of what it started
    listening: set[tuple[str, int]]  # the (address, port) those processes listened on
    left: list[int]  # still running after the wait
    bound: set[int]  # ports still not free after that

    @property
    def ports(self) -> set[int]:
        return {port for _, port in self.listening}

    @property
    def loopback_only(self) -> bool:
        """Every socket listened on loopback (gRPC's IPv6 sockets show 127.0.0.1 as ::ffff:127.0.0.1)."""
        addresses = (ipaddress.ip_address(address) for address, _ in self.listening)
        return all((getattr(address, "ipv4_mapped", None) or address).is_loopback for address in addresses)


def _listening(process: psutil.Process) -> set[tuple[str, int]]:
    try:
        return {(c.laddr.ip, c.laddr.port) for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    except psutil.Error:
        return set()


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.DEFAULT_HOST, port))
        except OSError:
            return False
    return True


def alive(process: psutil.Process) -> bool:
    """Running and not a zombie (a zombie holds no port or memory; only its new parent's wait is missing)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_starter(script: str, *args: str, ready_timeout_s: float = 180.0,
                 vanish_timeout_s: float = VANISH_TIMEOUT_S) -> Aftermath:
    """Run `script` (Python source, from the checkout) until it reports its children, SIGKILL it, and wait up to
    `vanish_timeout_s` for them to go."""
    starter = processes.spawn("a starter", [sys.executable, "-c", script, *args], cwd=paths.PROJECT_ROOT,
                              stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in starter.process.stdout], daemon=True).start()
    try:
        deadline, line, notes = time.monotonic() + ready_timeout_s, "", []
        while not line.startswith(MARK):
            assert starter.running(), f"the starter exited with code {starter.returncode} before reporting"
            assert time.monotonic() < deadline, "the starter did not report its children in time"
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if not line.startswith(MARK):
                notes.append(line.rstrip("\n"))
        pids = json.loads(line.removeprefix(MARK))
        watched = []
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                watched.append(psutil.Process(pid))
        listening = set().union(*(_listening(process) for process in watched))
        starter.process.kill()  # SIGKILL: no handler, no cleanup in the starter
        starter.wait(10)
        until = time.monotonic() + vanish_timeout_s
        # Gone, and their ports free again (the kernel may take a moment after the last process exits).
        while ((left := [process.pid for process in watched if alive(process)])
               or not all(port_free(port) for _, port in listening)) and time.monotonic() < until:
            time.sleep(0.2)
        aftermath = Aftermath(pids, notes, listening, left, {port for _, port in listening if not port_free(port)})
        for process in watched:  # a failing test must not leave its survivors running
            if alive(process):
                with contextlib.suppress(psutil.Error):
                    process.kill()
        return aftermath
    finally:
        starter.stop()
