"""Kill -9 at any moment, Ctrl-C, changed settings, unwritable output: nothing looks done that isn't."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import NoInputs, alive, interrupt_after_two_shards, rows, run_cli, same_rows, scan_args, start_scan, wait_for

def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_clip, many_shards):
    reference = tmp_path / "reference"
    assert run_cli(*scan_args(many_shards, reference, tiny_clip, "--batch-size", "2")).exit_code == 0
    out = tmp_path / "killed"
    proc = start_scan(many_shards, out, tiny_clip, "--batch-size", "2")
    assert wait_for(lambda: len(list(out.glob("*.stats.json"))) >= 2 or proc.poll() is not None)
    proc.kill()
    proc.wait()
    done_before = len(list(out.glob("*.stats.json")))
    result = run_cli(*scan_args(many_shards, out, tiny_clip, "--batch-size", "2"))
    assert result.exit_code == 0
    assert f"{done_before} of 6 shards already done" in result.output or done_before == 0
    assert same_rows(rows(out), rows(reference))
    assert not list(out.glob(".*partial"))


def test_ctrl_c_exits_130_and_resumes(tmp_path, tiny_clip, many_shards):
    out = tmp_path / "out"
    returncode, err = interrupt_after_two_shards(many_shards, out, tiny_clip, tmp_path / "block", "--batch-size", "2")
    assert returncode == 130 and b"re-run the same command to resume" in err
    assert sorted(p.name for p in out.glob("*.stats.json")) == ["00000.stats.json", "00001.stats.json"]
    assert not list(out.glob("block*")) and not list(out.glob(".*partial"))
    result = run_cli(*scan_args(many_shards, out, tiny_clip))
    assert result.exit_code == 0 and "2 of 6 shards already done" in result.output
    assert len(rows(out)) == 180


def test_resume_with_other_thresholds_is_refused_unless_overwrite(tmp_path, tiny_clip, many_shards):
    import shutil

    from vlmaudit.rulebook.load import shipped_rules_dir

    out = tmp_path / "out"
    assert run_cli(*scan_args(many_shards[:1], out, tiny_clip)).exit_code == 0
    rules = tmp_path / "rules"
    shutil.copytree(shipped_rules_dir(), rules)
    (rules / "thresholds.yaml").write_text("default: 0.5\n")
    result = run_cli(*scan_args(many_shards, out, tiny_clip, "--rules", rules))
    assert result.exit_code == 2 and "different thresholds_fingerprint" in result.output
    assert len(list(out.glob("*.parquet"))) == 1
    assert run_cli(*scan_args(many_shards, out, tiny_clip, "--rules", rules, "--overwrite")).exit_code == 0
    assert json.loads((out / "run.json").read_text())["rules_dir"] == str(rules)


def test_opening_a_pipe_shard_runs_no_python_between_fork_and_exec():
    """A Ctrl-C that lands in the interpreter's fork handlers (which run only when Python code
    runs between fork and exec, e.g. a preexec_fn) leaves the logging lock held: the interrupted
    scan then hangs forever instead of exiting 130 (seen in CI)."""
    from vlmaudit.scan.tario import open_stream

    forks = []
    os.register_at_fork(after_in_parent=lambda: forks.append(os.getpid()))
    stream = open_stream("pipe:echo hello")
    try:
        assert stream.read() == b"hello\n"
    finally:
        stream.close()
    assert forks == []


def test_pipe_command_dies_with_a_killed_scan(tmp_path):
    """kill -9 of the scan takes its pipe: command with it (PR_SET_PDEATHSIG, set by the command's
    own launcher instead of a preexec_fn)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    pid_file = tmp_path / "pid"
    code = ("import sys, time; from vlmaudit.scan.tario import open_stream; "
            f"s = open_stream('pipe:echo $$ > {pid_file}; exec sleep 600'); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=60)
        child = int(pid_file.read_text())
        assert alive(child)
    finally:
        parent.kill()
        parent.wait()
    assert wait_for(lambda: not alive(child), timeout=30), "the pipe: command outlived the killed scan"


def test_ctrl_c_while_children_start_is_delivered_after_they_have():
    from vlmaudit.scan.lifetime import interrupts_deferred

    reached_the_end = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs at the next bytecode boundary
            reached_the_end = True
    assert reached_the_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_pipe_command_gets_the_environment_a_shell_would(monkeypatch):
    """The launcher's interpreter coerces a C locale to C.UTF-8 through LC_CTYPE (PEP 538); the
    command must not see that (it changes what sort, tr and grep do)."""
    from vlmaudit.scan.tario import open_stream

    for name in ("LC_ALL", "LC_CTYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C")
    command = "echo ${LC_CTYPE-unset} ${LANG-unset}"
    stream = open_stream(f"pipe:{command}")
    try:
        got = stream.read()
    finally:
        stream.close()
    assert got == subprocess.run(command, shell=True, capture_output=True).stdout == b"unset C\n"


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_ctrl_c_held_under_the_default_action_still_ends_the_process():
    code = ("import os, signal, time; from vlmaudit.scan.lifetime import interrupts_deferred\n"
            "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
            "with interrupts_deferred():\n    os.kill(os.getpid(), signal.SIGINT); time.sleep(0.05)\n"
            "print('survived')")
    done = run_python(code)
    assert done.returncode == -signal.SIGINT and "survived" not in done.stdout


def test_loader_workers_stop_on_ctrl_c_again():
    """Workers fork while the scan holds Ctrl-C; each puts the KeyboardInterrupt handler back
    (a worker blocked on a read that ignored Ctrl-C would hold up the exit 5 s per worker)."""
    code = ("import os, signal; from vlmaudit.scan.loader import _worker_init\n"
            "signal.signal(signal.SIGINT, lambda *a: None)\n"
            "_worker_init(os.getppid(), 0)\n"
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    done = run_python(code)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr


def test_decoding_workers_fork_with_ctrl_c_held(tmp_path):
    from vlmaudit.scan.loader import iter_prepared
    from vlmaudit.scan.worker import ScanSettings, ShardJob

    handlers = []
    os.register_at_fork(after_in_parent=lambda: handlers.append(signal.getsignal(signal.SIGINT)))
    jobs = [ShardJob(str(tmp_path / "missing.tar"), "missing")]
    batches = list(iter_prepared(jobs, NoInputs(), ScanSettings(workers=1)))
    assert batches[-1].end.status == "failed"  # the worker ran
    assert handlers and signal.default_int_handler not in handlers
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
