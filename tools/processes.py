"""Child processes that never outlive the process that started them (servers, load generators, test clusters)."""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Popen's preexec_fn: the kernel SIGTERMs the child if its starter dies, even by SIGKILL (Linux only).

    The signal follows the *thread* that called Popen, so start long-lived children from a thread that lives as long.
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
