"""Child-process lifetime helpers (scan/lifetime.py) and the loader's worker set-up (scan/loader.py),
in process: the parent watchdog, the death signal request, the pipe launcher's argv, Ctrl-C held
while forking and delivered after."""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from vlmaudit.scan import lifetime as L
from vlmaudit.scan import loader
from vlmaudit.scan.worker import ScanSettings, ShardJob


class Exited(Exception):
    pass


def exit_raises(monkeypatch):
    codes = []

    def fake_exit(code):
        codes.append(code)
        raise Exited(code)

    monkeypatch.setattr(L.os, "_exit", fake_exit)
    return codes


def test_watch_parent_exits_at_once_when_the_parent_is_already_gone(monkeypatch):
    codes = exit_raises(monkeypatch)
    started = []
    monkeypatch.setattr(L.threading, "Thread", lambda **kw: started.append(kw))
    with pytest.raises(Exited):
        L.watch_parent(os.getppid() + 1)
    assert codes == [1] and started == []


def test_watch_parent_starts_a_daemon_watchdog_on_the_parent(monkeypatch):
    made = []

    class Thread:
        def __init__(self, **kw):
            made.append(kw)

        def start(self):
            made.append("started")

    monkeypatch.setattr(L.threading, "Thread", Thread)
    L.watch_parent(os.getppid())
    assert made == [{"target": L._watch, "args": (os.getppid(),), "name": "parent-watchdog", "daemon": True},
                    "started"]


def test_the_watchdog_polls_until_the_parent_changes(monkeypatch):
    codes = exit_raises(monkeypatch)
    sleeps, parents = [], iter([7, 7, 7, 1])
    monkeypatch.setattr(L.time, "sleep", sleeps.append)
    monkeypatch.setattr(L.os, "getppid", lambda: next(parents))
    with pytest.raises(Exited):
        L._watch(7)
    assert sleeps == [L.WATCH_SECONDS] * 4 == [1.0] * 4 and codes == [1]


def test_die_with_parent_asks_for_sigkill_on_linux_only(monkeypatch):
    import ctypes

    calls = []

    class Libc:
        def prctl(self, *args):
            calls.append(args)

    monkeypatch.setattr(ctypes, "CDLL", lambda name, use_errno=False: calls.append((name, use_errno)) or Libc())
    monkeypatch.setattr(L.sys, "platform", "linux")
    L.die_with_parent()
    assert calls == [(None, True), (1, signal.SIGKILL, 0, 0, 0)] and L.PR_SET_PDEATHSIG == 1
    calls.clear()
    monkeypatch.setattr(L.sys, "platform", "darwin")
    L.die_with_parent()
    assert calls == []


@pytest.mark.parametrize("error", [OSError("no libc"), AttributeError("no prctl")])
def test_die_with_parent_without_prctl_is_a_no_op(monkeypatch, error):
    import ctypes

    def broken(*args, **kw):
        raise error

    monkeypatch.setattr(ctypes, "CDLL", broken)
    monkeypatch.setattr(L.sys, "platform", "linux")
    L.die_with_parent()


def test_shell_argv(monkeypatch):
    monkeypatch.setenv("LC_CTYPE", "C.UTF-8")
    argv = L.shell_argv("echo hi")
    assert argv == [sys.executable, "-I", "-S", "-c", L._EXEC_UNDER_PARENT, str(os.getpid()), "echo hi",
                    json.dumps("C.UTF-8")]
    monkeypatch.delenv("LC_CTYPE")
    assert L.shell_argv("x")[-1] == "null"
    monkeypatch.setattr(L.sys, "executable", "")
    assert L.shell_argv("echo hi") == ["/bin/sh", "-c", "echo hi"]
    monkeypatch.setattr(L.sys, "executable", sys.executable)
    monkeypatch.setattr(L.sys, "platform", "darwin")
    assert L.shell_argv("echo hi") == ["/bin/sh", "-c", "echo hi"]


def test_the_launcher_runs_the_command_and_restores_lc_ctype():
    for value, expected in (("C.UTF-8", b"C.UTF-8\n"), (None, b"unset\n")):
        argv = L.shell_argv("echo ${LC_CTYPE-unset}")
        argv[-1] = json.dumps(value)
        assert subprocess.run(argv, capture_output=True, timeout=60).stdout == expected


def test_the_launcher_gives_up_when_its_parent_is_not_the_scan():
    argv = L.shell_argv("echo ran")
    argv[5] = str(os.getpid() + 12345)
    done = subprocess.run(argv, capture_output=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, b"")


def test_ctrl_c_is_held_then_given_to_the_previous_handler(monkeypatch):
    got = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append((signum, frame)))
    try:
        with L.interrupts_deferred():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            assert got == []
        assert got == [(signal.SIGINT, None)]
        with L.interrupts_deferred():
            pass
        assert got == [(signal.SIGINT, None)]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_held_under_an_ignoring_handler_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with L.interrupts_deferred():
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_nothing_is_held():
    seen = []

    def body():
        with L.interrupts_deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before]


# ---- loader ----------------------------------------------------------------------------------------

def test_a_worker_restores_ctrl_c_and_watches_its_parent(monkeypatch):
    calls = []
    monkeypatch.setattr(loader, "die_with_parent", lambda: calls.append("die"))
    monkeypatch.setattr(loader, "watch_parent", lambda pid: calls.append(("watch", pid)))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        loader._worker_init(4242, 3)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == ["die", ("watch", 4242)]


def test_in_process_the_stream_reads_every_job_in_order(monkeypatch):
    monkeypatch.setattr(loader, "prepare_shard", lambda job, prep, settings: iter([job.name + "1", job.name + "2"]))
    jobs = [ShardJob("a", "a"), ShardJob("b", "b")]
    assert list(loader.ShardStream(jobs, None, ScanSettings())) == ["a1", "a2", "b1", "b2"]
    assert loader._identity("x") == "x"


def test_iter_prepared_uses_no_more_workers_than_jobs(monkeypatch):
    made = []

    class Loader:
        def __init__(self, dataset, **kw):
            made.append(kw)

        def __iter__(self):
            return iter(())

    monkeypatch.setattr(loader.torch.utils.data, "DataLoader", Loader)
    loader.iter_prepared([ShardJob("a", "a")], None, ScanSettings(workers=4), pin_memory=True)
    loader.iter_prepared([ShardJob("a", "a")] * 6, None, ScanSettings(workers=4))
    loader.iter_prepared([], None, ScanSettings(workers=4))
    first, second, none = made
    assert (first["num_workers"], first["prefetch_factor"], first["pin_memory"], first["batch_size"]) == (1, 4, True, None)
    assert first["collate_fn"] is loader._identity and first["worker_init_fn"].args == (os.getpid(),)
    assert (second["num_workers"], second["pin_memory"]) == (4, False)
    assert (none["num_workers"], none["prefetch_factor"], none["worker_init_fn"]) == (0, None, None)


def test_in_a_worker_the_stream_takes_every_nth_job_on_one_thread(monkeypatch):
    from types import SimpleNamespace

    threads = []
    monkeypatch.setattr(loader, "prepare_shard", lambda job, prep, settings: iter([job.name]))
    monkeypatch.setattr(loader.torch.utils.data, "get_worker_info", lambda: SimpleNamespace(id=1, num_workers=2))
    monkeypatch.setattr(loader.torch, "set_num_threads", threads.append)
    jobs = [ShardJob(n, n) for n in "abcde"]
    assert list(loader.ShardStream(jobs, None, ScanSettings())) == ["b", "d"] and threads == [1]
