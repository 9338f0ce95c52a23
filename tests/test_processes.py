"""The one supervisor: a whole process group stopped (TERM, grace, KILL), waits that name what they waited for,
and short commands that cannot hang. Real processes throughout (sh and Python children)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from tools import processes
from tools.errors import ProcessError

# A child that ignores SIGTERM and starts a grandchild in its own process group, then prints both pids.
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
ignore_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
grandchild = subprocess.Popen([sys.executable, "-c", ignore_term])
print(os.getpid(), grandchild.pid, flush=True)
time.sleep(600)
"""


def _gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids):
            return True
        time.sleep(0.1)
    return False


def test_stop_kills_a_group_that_ignores_sigterm_after_the_grace(tmp_path):
    child = processes.spawn("stubborn", [sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    pids = [int(pid) for pid in child.process.stdout.readline().split()]
    assert len(pids) == 2 and all(psutil.pid_exists(pid) for pid in pids)
    assert psutil.Process(pids[1]).ppid() == pids[0], "the grandchild belongs to the child"
    started = time.monotonic()
    returncode = child.stop(grace=0.5)
    assert returncode == -9, "SIGTERM was ignored, so only SIGKILL ends it"
    assert time.monotonic() - started >= 0.5, "SIGKILL came only after the grace period"
    assert _gone(pids), "the grandchild in the same group is killed too"
    assert child.stop() == -9, "a second stop is harmless"


def test_the_child_has_a_session_of_its_own():
    with processes.running("sleeper", ["sleep", "30"]) as child:
        assert os.getsid(child.pid) == child.pid != os.getsid(0)
    assert not child.running()


def test_wait_until_names_what_it_waited_for_on_timeout_and_on_exit(tmp_path):
    log = tmp_path / "child.log"
    with processes.running("sleeper", ["sleep", "30"], log=log) as child, \
            pytest.raises(ProcessError, match=r"sleeper: gave up waiting for the answer after 0 s"):
        child.wait_until(lambda: False, 0.3, "the answer")
    child = processes.spawn("quitter", ["sh", "-c", "echo about to quit; exit 3"], log=log)
    one_line = r"^quitter exited with code 3 while waiting for readiness; last log line: about to quit \(log: .*\)$"
    with pytest.raises(ProcessError, match=one_line):
        child.wait_until(lambda: False, 30, "readiness")


def test_a_missing_program_is_a_clear_error():
    with pytest.raises(ProcessError, match=r"cannot start ghost \(/nonexistent/ghost\)"):
        processes.spawn("ghost", ["/nonexistent/ghost"])


def test_run_captures_output_and_stops_a_hung_command(tmp_path):
    done = processes.run("echo", ["sh", "-c", "echo out; echo err >&2; exit 4"], timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (4, "out\n", "err\n")
    pid_file = tmp_path / "sleeper.pid"
    started = time.monotonic()
    with pytest.raises(ProcessError, match="hang did not finish in 1 s"):
        processes.run("hang", ["sh", "-c", f"sleep 600 & echo $! > {pid_file}; wait"], timeout=1)
    assert time.monotonic() - started < 60
    sleeper = int(pid_file.read_text())
    assert _gone([sleeper]), "the command's own child went with it"
