"""Child processes that die with their parent: decoding workers and pipe: commands must not
keep running (and reading shards) after a scan is killed with SIGKILL. And Ctrl-C never lands
while a child is being forked: a KeyboardInterrupt raised inside the interpreter's fork handlers
leaves the logging lock held, and the interrupted scan then hangs instead of exiting."""

from __future__ import annotations

import contextlib
import json
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


# Runs in the pipe: command's own interpreter (never Python code between fork and exec in ours):
# ask for SIGKILL when the scan dies, give up if it already has, undo what the interpreter's own
# start changed (ignored SIGPIPE/SIGXFSZ survive exec; a C locale is coerced to C.UTF-8 through
# LC_CTYPE), then become `sh -c COMMAND`.
_EXEC_UNDER_PARENT = """
import ctypes, json, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
lc_ctype = json.loads(sys.argv[3])
if lc_ctype is None:
    os.environ.pop("LC_CTYPE", None)
else:
    os.environ["LC_CTYPE"] = lc_ctype
os.execv("/bin/sh", ["/bin/sh", "-c", sys.argv[2]])
"""


def shell_argv(command: str) -> list[str]:
    """argv that runs `command` with /bin/sh and, on Linux, dies with this process (no preexec_fn)."""
    if not sys.platform.startswith("linux") or not sys.executable:
        return ["/bin/sh", "-c", command]
    lc_ctype = json.dumps(os.environ.get("LC_CTYPE"))
    return [sys.executable, "-I", "-S", "-c", _EXEC_UNDER_PARENT, str(os.getpid()), command, lc_ctype]


@contextlib.contextmanager
def interrupts_deferred():
    """Hold Ctrl-C (SIGINT) until the block ends, then deliver it: for code that forks."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    previous = signal.SIG_DFL if previous is None else previous  # None: a handler set outside Python
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and callable(previous):
        previous(signal.SIGINT, None)
    elif caught and previous == signal.SIG_DFL:
        signal.raise_signal(signal.SIGINT)


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
