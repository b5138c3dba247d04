"""Two writers on one --out never corrupt it: exclusive temporary files that never follow a
symlink, a per-shard claim with owner and staleness, the atomic rename, stats last."""

import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq

from conftest import rows, run_cli, same_rows, scan_args, start_scan


def test_two_processes_scanning_the_same_shards_into_one_out(tmp_path, tiny_clip, many_shards):
    reference = tmp_path / "reference"
    assert run_cli(*scan_args(many_shards, reference, tiny_clip, "--batch-size", "2")).exit_code == 0
    out = tmp_path / "shared"
    procs = [start_scan(many_shards, out, tiny_clip, "--batch-size", "2") for _ in range(2)]
    outputs = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s.stem}{suffix}" for s in many_shards for suffix in (".parquet", ".stats.json", ".summary.json", ".hist.bin")]
        + ["run.json"])
    assert same_rows(rows(out), rows(reference))
    for shard in many_shards:  # each shard's summary whole, of the rows its Parquet holds
        summary = json.loads((out / f"{shard.stem}.summary.json").read_text())
        assert summary["rows"] == pq.read_metadata(out / f"{shard.stem}.parquet").num_rows
    for shard in many_shards:
        stats = json.loads((out / f"{shard.stem}.stats.json").read_text())
        assert stats["status"] == "complete" and stats["rows"] == pq.read_metadata(out / f"{shard.stem}.parquet").num_rows


def test_claim_is_exclusive_and_taken_over_from_a_dead_owner(tmp_path):
    from vlmaudit.storage.localfiles import ShardClaim, host

    first = ShardClaim.acquire(tmp_path, "s")
    assert first is not None and ShardClaim.acquire(tmp_path, "s") is None
    first.release()
    assert not (tmp_path / ".s.lock").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".s.lock").write_text(json.dumps({"host": host(), "pid": dead.pid, "since": 0, "token": "x"}))
    taken = ShardClaim.acquire(tmp_path, "s")
    assert taken is not None and json.loads((tmp_path / ".s.lock").read_text())["pid"] == os.getpid()
    # another host's fresh claim is respected, even when a process with its pid is gone here
    assert host() != "elsewhere-host"
    (tmp_path / ".t.lock").write_text(json.dumps({"host": "elsewhere-host", "pid": dead.pid, "since": 0, "token": "y"}))
    assert ShardClaim.acquire(tmp_path, "t") is None
    assert json.loads((tmp_path / ".t.lock").read_text())["token"] == "y"


def test_a_planted_symlink_is_never_written_through(tmp_path):
    from vlmaudit.scan.writer import write_json_atomic
    from vlmaudit.storage.localfiles import ShardClaim, create_exclusive

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".s.lock").symlink_to(victim)
    claim = ShardClaim.acquire(tmp_path, "s")  # a symlink is no claim: moved aside, not followed
    assert claim is not None and victim.read_text() == "precious"
    (tmp_path / "link").symlink_to(victim)
    try:
        create_exclusive(tmp_path / "link")
        raise AssertionError("create_exclusive opened an existing symlink")
    except FileExistsError:
        pass
    write_json_atomic(tmp_path / "link", {"a": 1})  # replaces the link itself
    assert victim.read_text() == "precious" and json.loads((tmp_path / "link").read_text()) == {"a": 1}


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    from vlmaudit.storage.localfiles import host, remove_abandoned_temps

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f".s.parquet.{host()}~{dead.pid}~abcd1234.partial"
    mine = tmp_path / f".s.parquet.{host()}~{os.getpid()}~abcd1234.partial"
    other = tmp_path / f".s2.parquet.{host()}~{dead.pid}~abcd1234.partial"
    for path in (gone, mine, other):
        path.write_bytes(b"x")
    assert remove_abandoned_temps(tmp_path, "s") == 1
    assert not gone.exists() and mine.exists() and other.exists()


def test_a_killed_writer_that_is_not_yet_reaped_counts_as_dead():
    """A SIGKILLed process stays a zombie until its parent reaps it (Ray's raylet may take a
    while): its claims must be taken over all the same."""
    import signal
    import subprocess

    from vlmaudit.storage.localfiles import pid_alive

    child = subprocess.Popen(["sleep", "60"])
    try:
        assert pid_alive(child.pid)
        child.send_signal(signal.SIGKILL)
        deadline = time.time() + 10
        while pid_alive(child.pid) and time.time() < deadline:  # not reaped: no wait() yet
            time.sleep(0.05)
        assert not pid_alive(child.pid)
    finally:
        child.wait()
