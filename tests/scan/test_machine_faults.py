"""Faults of the machine and the file system: killed parents, shards that can never succeed,
odd shard names, full or read-only output directories."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq
import pytest

from conftest import alive, run_cli, scan_args, write_shard


def test_loader_workers_die_with_a_killed_parent(tmp_path):
    """A worker blocked opening a shard (a FIFO nobody writes) would wait forever: torch only
    checks its parent between items. After kill -9 of the scan, no worker may remain."""
    fifo = tmp_path / "blocked.tar"
    os.mkfifo(fifo)
    script = textwrap.dedent(f"""
        import sys, time
        from vlmaudit.scan.loader import iter_prepared
        from vlmaudit.scan.worker import ScanSettings, ShardJob

        class Pre:
            draft_size = 32
            def prepare(self, images, captions):
                return {{}}

        it = iter_prepared([ShardJob({str(fifo)!r}, "a"), ShardJob({str(fifo)!r}, "b")], Pre(), ScanSettings(workers=2))
        print(" ".join(str(w.pid) for w in it._workers), flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(alive(p) for p in workers)
        time.sleep(1.0)  # the workers are now blocked in open()
        assert all(alive(p) for p in workers)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while any(alive(p) for p in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(alive(p) for p in workers), "loader workers outlived their parent"
    finally:
        for pid in [parent.pid] + (workers if "workers" in locals() else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_permanent_and_transient_shard_failures_are_told_apart(tmp_path, tiny_clip):
    import random

    from vlmaudit.demo.build import synthetic_image

    good = write_shard(tmp_path / "good.tar", [{"__key__": "a", "jpg": synthetic_image(random.Random(0)), "txt": b"x"}])
    (tmp_path / "notatar.tar").write_bytes(b"hello, this is not an archive\n" * 40)
    args = scan_args([good, tmp_path / "notatar.tar", "pipe:exit 3"], tmp_path / "out", tiny_clip, "--retries", "1")
    result = run_cli(*args)
    assert result.exit_code == 1
    stats = {p.name[: -len(".stats.json")]: json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.stats.json")}
    assert {n: s["failure"] for n, s in stats.items()} == {"good": None, "notatar": "permanent", "3": "transient"}
    assert stats["notatar"]["status"] == stats["3"]["status"] == "failed"
    output = " ".join(result.output.split())
    assert "1 shard(s) failed: notatar (permanent:" in output and "re-running will not help" in output
    assert "1 shard(s) failed: 3 (transient: re-run the same command" in output


def test_shard_names_with_leading_or_extra_dots_are_reported(tmp_path, tiny_clip):
    import random

    from vlmaudit.demo.build import synthetic_image

    shards = [write_shard(tmp_path / name, [{"__key__": "a", "jpg": synthetic_image(random.Random(0)), "txt": b"x"}])
              for name in (".hidden.tar", "..tar", "a..b.tar")]
    out = tmp_path / "out"
    assert run_cli(*scan_args(shards, out, tiny_clip)).exit_code == 0
    report = json.loads(run_cli("report", out, "--json").output)
    assert report["overview"]["samples"] == 3 and report["overview"]["shards"] == 3
    filtered = run_cli("filter", out, "--out", tmp_path / "f", "--on-failed", "keep", "--policy", "permissive")
    assert filtered.exit_code == 0 and "3 samples" in filtered.output
    shards_seen = set(pq.read_table(tmp_path / "f" / "keep.parquet").column("shard").to_pylist())
    assert ".hidden" in shards_seen


def test_a_full_disk_is_one_line_and_nothing_marked_done(tmp_path, tiny_clip):
    """Files may not grow past 16 KiB (RLIMIT_FSIZE: the write fails with EFBIG, as a full disk
    fails with ENOSPC; run.json fits, a shard's Parquet does not): one error line, exit 1, no
    stats, no temporary file left."""
    from vlmaudit.demo.build import build_demo_shards

    shards = build_demo_shards(tmp_path / "shards", shards=2, per_shard=20)
    code = textwrap.dedent("""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
        from vlmaudit.cli import main
        sys.argv = ["vlmaudit"] + sys.argv[1:]
        main()
    """)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", code, *scan_args(shards, out, tiny_clip)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.getcwd()})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[-1].startswith("error: ") and "File too large" in lines[-1]
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


def test_out_below_a_file_is_one_line_and_exit_2(tmp_path, tiny_clip, demo_shards):
    out = tmp_path / "out"
    out.write_text("a file where a directory should be")
    result = run_cli(*scan_args(demo_shards, out / "sub", tiny_clip))
    assert result.exit_code == 2 and "cannot write there" in result.output


def test_unreadable_subdirectory_is_reported(tmp_path, monkeypatch):
    from vlmaudit.errors import ShardSpecError
    from vlmaudit.scan.shards import expand_shard_specs

    (tmp_path / "ok").mkdir()
    write_shard(tmp_path / "ok" / "a.tar", [{"__key__": "a", "txt": b"x"}])
    locked = tmp_path / "locked"
    locked.mkdir()
    write_shard(locked / "b.tar", [{"__key__": "b", "txt": b"x"}])
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads through chmod 0: inject the error the kernel gives others
        real_scandir = os.scandir

        def scandir(path="."):
            if os.fspath(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(locked))
            return real_scandir(path)
        monkeypatch.setattr(os, "scandir", scandir)
    try:
        with pytest.raises(ShardSpecError, match="cannot read .*locked \\(Permission denied\\)"):
            expand_shard_specs([str(tmp_path)])
    finally:
        locked.chmod(0o755)
    monkeypatch.undo()
    assert sorted(os.path.basename(p) for p in expand_shard_specs([str(tmp_path)])) == ["a.tar", "b.tar"]
