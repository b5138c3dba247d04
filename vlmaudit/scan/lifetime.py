"""Child processes that die with their parent: decoding workers and pipe: commands must not
keep running (and reading shards) after a scan is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 1.0


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; no-op elsewhere).
    Safe to call between fork and exec (a preexec_fn)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def watch_parent(parent_pid: int) -> None:
    """Die now if `parent_pid` is already gone, else exit as soon as it is (a daemon thread
    polls: the fallback where PR_SET_PDEATHSIG does not exist)."""
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="parent-watchdog", daemon=True).start()


def _watch(parent_pid: int) -> None:
    while True:
        time.sleep(WATCH_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(1)
