"""--engine ray: a real local Ray (2 CPUs, ~200 MB object store) shared by this module's tests."""

import json
import os
import signal

import pytest

from conftest import STABLE, rows, run_cli, s3fs_client, same_rows, scan_args, wait_for


SHARD_FILES = (".parquet", ".stats.json", ".summary.json", ".hist.bin")  # what a finished shard leaves

@pytest.fixture(scope="module")
def ray_session():
    import ray

    from unittest import mock

    from s3_server import CREDENTIALS

    # the nodes carry their own (dummy) S3 credentials, as a cluster's machines would; the S3
    # endpoint is not set here: actors get it from the driver (test_ray_actors_write_reports_to_s3)
    with mock.patch.dict(os.environ, CREDENTIALS):
        ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from vlmaudit.demo.build import build_demo_shards

    return build_demo_shards(tmp_path_factory.mktemp("ray-shards"), shards=5, per_shard=24)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_clip, shards):
    out = tmp_path_factory.mktemp("local-reference")
    assert run_cli(*scan_args(shards, out, tiny_clip, "--batch-size", "4")).exit_code == 0
    return out


def stats_of(out):
    return {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.stats.json"))}


def assert_each_shard_once(out, shards):
    names = sorted(p.name for p in out.iterdir())
    expected = sorted([f"{s.stem}{suffix}" for s in shards for suffix in SHARD_FILES] + ["run.json"])
    assert names == expected  # no temporaries, no locks, no duplicates


def test_ray_engine_writes_the_same_reports_as_the_local_engine(ray_session, tmp_path, tiny_clip, shards, reference):
    out = tmp_path / "ray"
    ray_args = ("--engine", "ray", "--actors", "2", "--batch-size", "4")
    result = run_cli(*scan_args(shards, out, tiny_clip, *ray_args))
    assert result.exit_code == 0, result.output
    assert_each_shard_once(out, shards)
    assert same_rows(rows(out), rows(reference))
    statuses = lambda d: {k: (v["status"], v["rows"], v["status_counts"]) for k, v in stats_of(d).items()}  # noqa: E731
    assert statuses(out) == statuses(reference)
    assert json.loads((out / "run.json").read_text())["config"]["engine"] == "ray"
    again = run_cli(*scan_args(shards, out, tiny_clip, *ray_args))
    assert again.exit_code == 0 and "5 of 5 shards already done" in again.output


class KillOnFirstShard:
    """Progress that SIGKILLs the process of an actor still holding a shard, once."""

    def __init__(self, pool, pids):
        self.pool, self.pids, self.killed = pool, pids, None

    def batch(self, rows, flagged): ...

    def shard_done(self, name, status):
        if self.killed is None and self.pool.busy:
            index, _ = next(iter(self.pool.busy.values()))
            self.killed = self.pids[index]
            os.kill(self.killed, signal.SIGKILL)


def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(ray_session, tmp_path, tiny_clip, shards, reference):
    from dataclasses import replace

    from vlmaudit.backends import BackendOptions
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.engine.ray_engine import RayOptions, RayPool
    from vlmaudit.scan.runinfo import plan_jobs
    from vlmaudit.engine.spec import ScannerSpec
    from vlmaudit.scan.worker import ScanSettings

    out = tmp_path / "killed"
    settings = replace(ScanSettings(), batch_size=4, workers=0)
    spec = ScannerSpec("clip", ModelOptions(str(tiny_clip), "cpu", "fp32"), BackendOptions(), settings, str(out))
    pool = RayPool(spec, RayOptions(workers=2))
    try:
        pool.describe()
        pids = pool.pids()
        progress = KillOnFirstShard(pool, pids)
        result = pool.run(plan_jobs([str(s) for s in shards])[0], progress)
        assert progress.killed in pids and progress.killed not in pool.pids()  # it died and was restarted
    finally:
        pool.close()
    assert sorted(result.shards.values()) == ["complete"] * 5 and result.rows == 5 * 24
    (out / "run.json").write_text("{}")
    assert_each_shard_once(out, shards)
    assert same_rows(rows(out), rows(reference))


def test_actor_killing_shards_fail_alone_and_a_rerun_retries_only_them(ray_session, tmp_path, tiny_clip, shards,
                                                                        reference):
    """Two shards whose reading kills the actor (a pipe: that SIGKILLs its parent, the actor) among
    good ones: each is retried on fresh actors, then failed alone; every good shard is complete."""
    from dataclasses import replace

    from vlmaudit.backends import BackendOptions
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.engine import ray_engine
    from vlmaudit.engine.ray_engine import RayOptions, RayPool
    from vlmaudit.engine.spec import ScannerSpec
    from vlmaudit.scan.runinfo import plan_jobs, split_done
    from vlmaudit.scan.worker import ScanSettings

    out = tmp_path / "killers"
    killers = [f"pipe:kill -9 $PPID # kill-{x}.tar" for x in "ab"]
    specs = [str(shards[0]), killers[0], str(shards[1]), str(shards[2]), killers[1], str(shards[3]), str(shards[4])]
    settings = replace(ScanSettings(), batch_size=4, workers=0)
    spec = ScannerSpec("clip", ModelOptions(str(tiny_clip), "cpu", "fp32"), BackendOptions(), settings, str(out))
    pool = RayPool(spec, RayOptions(workers=2))
    try:
        result = pool.run(plan_jobs(specs)[0])
    finally:
        pool.close()
    assert result.shards == {**{s.stem: "complete" for s in shards}, "kill-a": "failed", "kill-b": "failed"}
    assert pool.deaths == {"kill-a": ray_engine.SHARD_RETRIES + 1, "kill-b": ray_engine.SHARD_RETRIES + 1}
    assert result.rows == 5 * 24
    todo, done = split_done(plan_jobs(specs)[0], out, overwrite=False)  # what a re-run scans
    assert sorted(j.name for j in todo) == ["kill-a", "kill-b"] and len(done) == 5
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no claim or temporary left
    (out / "run.json").write_text("{}")
    assert same_rows(rows(out), rows(reference))


def test_a_retry_takes_over_the_dead_writers_claim_at_once(tmp_path):
    """The driver names the dead actor: its claim is broken even while its pid still exists (a
    process being killed, or a reused pid), and an empty or half-written claim never exists."""
    from vlmaudit.storage.localfiles import ShardClaim, host

    first = ShardClaim.acquire(tmp_path, "s")
    assert first is not None and ShardClaim.acquire(tmp_path, "s") is None  # this process is alive
    assert ShardClaim.acquire(tmp_path, "s", takeover=("other-host", os.getpid())) is None
    second = ShardClaim.acquire(tmp_path, "s", takeover=(host(), os.getpid()))
    assert second is not None and json.loads((tmp_path / ".s.lock").read_text())["token"] == second.token


def test_core_scan_never_imports_ray_or_s3fs(tmp_path, tiny_clip, demo_shards):
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from vlmaudit.cli import app; "
            f"r = CliRunner().invoke(app, {[str(a) for a in scan_args(demo_shards, tmp_path / 'out', tiny_clip)]!r}); "
            "assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('ray', 's3fs', 'boto3') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_engine_ray_without_ray_installed_names_the_extra(tmp_path, tiny_clip, demo_shards, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does when it is not installed
    result = run_cli(*scan_args(demo_shards, tmp_path / "out", tiny_clip, "--engine", "ray"))
    assert result.exit_code == 2
    assert result.output.strip() == "error: 'ray' is needed for this; pip install 'vlmaudit[ray]'"


@pytest.mark.gpu
@pytest.mark.parametrize("gpus_per_worker", [1.0, 0.5])
def test_actors_are_placed_on_gpus(ray_session, tmp_path, tiny_clip, gpus_per_worker):
    """One actor per GPU (distinct devices), or two actors sharing a GPU at 0.5 each."""
    from vlmaudit.backends import BackendOptions
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.engine.ray_engine import RayOptions, RayPool
    from vlmaudit.engine.spec import ScannerSpec
    from vlmaudit.scan.worker import ScanSettings

    gpus = int(ray_session.cluster_resources().get("GPU", 0))
    assert gpus >= 1, "run -m gpu on a machine with a CUDA GPU"
    workers = gpus if gpus_per_worker == 1.0 else 2
    spec = ScannerSpec("clip", ModelOptions(str(tiny_clip), "auto", "fp32"), BackendOptions(),
                       ScanSettings(workers=0), str(tmp_path / "out"))
    pool = RayPool(spec, RayOptions(workers=workers, gpus_per_worker=gpus_per_worker))
    try:
        places = [pool.call(actor.placement.remote()) for actor in pool.actors]
    finally:
        pool.close()
    assert all(p["device"].startswith("cuda") and len(p["gpu_ids"]) == 1 for p in places)
    ids = [p["gpu_ids"][0] for p in places]
    assert len(set(ids)) == (workers if gpus_per_worker == 1.0 else 1)


def test_a_model_that_cannot_load_is_one_line_under_ray(ray_session, tmp_path, demo_shards):
    result = run_cli(*scan_args(demo_shards, tmp_path / "out", tmp_path / "no-such-model", "--engine", "ray",
                                "--actors", "1"))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output and not list((tmp_path / "out").glob("*.parquet"))
    # the old spelling --workers still sets the actors, with one deprecation line first
    old = run_cli(*scan_args(demo_shards, tmp_path / "out", tmp_path / "no-such-model", "--engine", "ray",
                             "--workers", "1"))
    lines = old.output.strip().splitlines()
    assert old.exit_code == 2 and len(lines) == 2 and lines[1] == result.output.strip().splitlines()[0]
    assert lines[0] == "warning: --workers with --engine ray is deprecated; use --actors 1"


@pytest.mark.parametrize("args, message", [
    (("--actors", "2"), "--actors: the number of Ray actors, for --engine ray only"),
    (("--engine", "ray", "--actors", "2", "--workers", "2"), "pass only --actors"),
])
def test_actors_are_not_decode_workers(tmp_path, demo_shards, args, message):
    """Planted: --actors accepted by the local engine, or silently combined with --workers."""
    result = run_cli(*scan_args(demo_shards, tmp_path / "out", tmp_path / "no-such-model", *args))
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_ctrl_c_on_the_ray_driver_leaves_an_out_that_resumes(tmp_path, tiny_clip, shards, reference):
    """A separate driver process with its own local Ray (--ray-address local), interrupted."""
    import subprocess
    import sys


    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "vlmaudit", *scan_args(shards, out, tiny_clip, "--batch-size", "1", "--engine", "ray",
                                                        "--ray-address", "local", "--actors", "1")]
    proc = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert wait_for(lambda: len(list(out.glob("*.stats.json"))) >= 1 or proc.poll() is not None, timeout=240)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("scan finished before the interrupt arrived")
    assert proc.returncode == 130 and b"re-run the same command to resume" in err
    resumed = run_cli(*scan_args(shards, out, tiny_clip, "--batch-size", "4"))  # the local engine resumes it
    assert resumed.exit_code == 0 and "shards already done" in resumed.output
    assert same_rows(rows(out), rows(reference))
    assert_each_shard_once(out, shards)


def test_ray_actors_write_reports_to_s3(ray_session, s3, tiny_clip, shards, reference):
    """The cluster started without the S3 endpoint: the driver forwards it to the actors (never the
    credentials), and they write the same reports to the bucket as the local engine to disk."""
    import pyarrow.parquet as pq


    endpoint, bucket = s3
    url = f"s3://{bucket}/ray"
    result = run_cli(*scan_args(shards, url, tiny_clip, "--engine", "ray", "--actors", "2", "--batch-size", "4"))
    assert result.exit_code == 0, result.output
    fs = s3fs_client(endpoint)
    names = sorted(s.stem for s in shards)
    objects = sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{bucket}/ray"))
    assert objects == sorted([f"{n}{suffix}" for n in names for suffix in SHARD_FILES] + ["run.json"])
    remote = [row for n in names for row in pq.read_table(fs.open(f"{bucket}/ray/{n}.parquet"), columns=STABLE).to_pylist()]
    assert same_rows(remote, rows(reference))


def test_only_storage_settings_reach_the_actors_environment(monkeypatch):
    from s3_server import CREDENTIALS
    from vlmaudit.engine.ray_engine import FORWARDED_ENV, forwarded_env

    for name in FORWARDED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_SESSION_TOKEN": "t",
                        "HF_TOKEN": "hf_x", "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)
    assert forwarded_env() == {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_DEFAULT_REGION": "us-east-1",
                               "HF_HUB_OFFLINE": "1"}
