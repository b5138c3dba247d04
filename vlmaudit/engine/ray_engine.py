"""The Ray engine: a fixed pool of scorer actors, the model built once per actor in its
constructor; each actor takes whole shards and runs the same Scanner as the local engine.

Faults: when an actor dies (killed, out of memory, a crash in a decoder) the driver replaces it
with a fresh actor and retries that shard there, up to SHARD_RETRIES times; then that shard alone is
failed and the others go on. The retry takes over the dead actor's claim at once (the driver passes
the dead writer's host and pid), and the writer's temporary name + rename + stats-last makes it
idempotent. Ctrl-C kills the actors; a re-run resumes and rescans only the shards not done.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vlmaudit.errors import UserError, require
from vlmaudit.scan.scanner import NullProgress, ScanResult
from vlmaudit.schema import ShardStatus

SHARD_RETRIES = 2  # a shard whose actor died is retried this many times, each on a fresh actor
# Settings the actors need to reach the storage the driver names (an S3-compatible endpoint, the
# region, offline hub mode), forwarded through the actors' runtime_env. Never credentials: a
# runtime_env is readable in Ray's dashboard and state API, so actors use their nodes' own
# (instance roles, ~/.aws, the environment the cluster was started with).
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "HF_HUB_OFFLINE", "HF_ENDPOINT")


@dataclass
class RayOptions:
    address: str | None = None  # None: a running cluster if there is one, else a local one
    workers: int | None = None  # actors; None: one per GPU in the cluster, else 2
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_worker: float = 1.0  # each actor also decodes with int(cpus) - 1 worker processes


class ShardActor:
    """Built once per actor process; a failure to build is kept and raised by every call, so a
    bad --model is reported once instead of restarting the actor over and over."""

    def __init__(self, spec):
        self.scanner, self.error = None, None
        try:
            self.scanner = spec.build()
        except Exception as exc:  # noqa: BLE001 - re-raised by describe()/scan() on the driver
            self.error = exc

    def describe(self) -> dict:
        self._check()
        return self.scanner.backend.describe()

    def pid(self) -> int:
        return os.getpid()

    def owner(self) -> tuple[str, int]:
        """(host, pid) as this actor's shard claims record them."""
        from vlmaudit.storage.localfiles import host

        return host(), os.getpid()

    def placement(self) -> dict:
        """Where this actor runs: its GPUs as Ray assigned them and the model's device."""
        import ray

        return {"gpu_ids": [str(g) for g in ray.get_gpu_ids()], "node": ray.get_runtime_context().get_node_id(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "device": str(getattr(self.scanner.backend, "device", None)) if self.scanner else None}

    def scan(self, job) -> ScanResult:
        self._check()
        return self.scanner.run([job])

    def _check(self) -> None:
        if self.error is not None:
            raise self.error


class RayPool:
    def __init__(self, spec, options: RayOptions):
        self.ray = require("ray", "ray")
        self.started = connect(self.ray, options.address)
        gpus = options.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if self.ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        workers = options.workers or default_workers(self.ray, gpus)
        self.spec, self.remote = spec, self.ray.remote(ShardActor).options(
            num_cpus=options.cpus_per_worker, num_gpus=gpus, max_restarts=0, max_task_retries=0,
            max_concurrency=1, runtime_env={"env_vars": forwarded_env()})
        self.actors, self.owners = [], []  # per index: the actor, a reference to its (host, pid)
        for _ in range(workers):
            self._start_actor()
        self.busy: dict = {}  # ObjectRef -> (actor index, job)
        self.deaths: dict[str, int] = {}  # shard name -> actors that died scanning it
        self.deaths_in_a_row = 0

    def _start_actor(self, index: int | None = None) -> None:
        actor = self.remote.remote(self.spec)
        if index is None:
            self.actors.append(actor)
            self.owners.append(actor.owner.remote())
        else:
            self.actors[index], self.owners[index] = actor, actor.owner.remote()

    def describe(self) -> dict:
        """The first actor's model description (for run.json); raises its build error, if any."""
        return self.call(self.actors[0].describe.remote())

    def pids(self) -> list[int]:
        return [self.call(actor.pid.remote()) for actor in self.actors]

    def call(self, ref):
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, UserError):
                raise cause from None
            raise

    def run(self, jobs, progress=None) -> ScanResult:
        progress, result, todo = progress or NullProgress(), ScanResult(), list(reversed(jobs))
        for index in range(len(self.actors)):
            self._submit(index, todo)
        while self.busy:
            [ref], _ = self.ray.wait(list(self.busy), num_returns=1)
            index, job = self.busy.pop(ref)
            if self._collect(ref, index, job, todo, result, progress):  # else: actors keep dying, give up
                self._submit(index, todo)
        for job in reversed(todo):  # only when fresh actors kept dying before any shard finished
            self._failed(job, result, progress)
        return result

    def _submit(self, index: int, todo: list) -> None:
        if todo:
            job = todo.pop()
            self.busy[self.actors[index].scan.remote(job)] = (index, job)

    def _collect(self, ref, index: int, job, todo: list, result: ScanResult, progress) -> bool:
        """Merge one shard's result. When its actor died: a fresh actor replaces it and the shard
        is queued again (first), or failed after SHARD_RETRIES; False when fresh actors keep dying
        before any shard finishes (the model cannot run at all)."""
        try:
            shard = self.call(ref)
        except self.ray.exceptions.RayActorError:
            return self._actor_died(index, job, todo, result, progress)
        except self.ray.exceptions.RayTaskError:  # a bug in one shard's scan: that shard fails
            self._failed(job, result, progress)
            return True
        self.deaths_in_a_row = 0
        result.merge(shard)
        progress.batch(shard.rows, shard.flagged)
        for name, status in shard.shards.items():
            progress.shard_done(name, status)
        return True

    def _actor_died(self, index: int, job, todo: list, result: ScanResult, progress) -> bool:
        from dataclasses import replace

        dead = self._owner(index)
        self.ray.kill(self.actors[index], no_restart=True)
        self._start_actor(index)
        self.deaths[job.name] = self.deaths.get(job.name, 0) + 1
        self.deaths_in_a_row += 1
        if self.deaths[job.name] > SHARD_RETRIES:
            self._failed(job, result, progress)
        else:
            todo.append(replace(job, takeover=dead))  # next out: retried now, on a fresh actor
        return self.deaths_in_a_row <= (SHARD_RETRIES + 1) * 2 * len(self.actors)

    def _owner(self, index: int) -> tuple[str, int] | None:
        """(host, pid) of the actor at `index`, if it answered before it died."""
        try:
            return tuple(self.ray.get(self.owners[index], timeout=10))
        except Exception:  # noqa: BLE001 - it died before answering: its claim goes stale the usual way
            return None

    @staticmethod
    def _failed(job, result: ScanResult, progress) -> None:
        result.shards[job.name] = ShardStatus.FAILED
        progress.shard_done(job.name, ShardStatus.FAILED)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors, self.busy = [], {}
        if self.started:
            self.ray.shutdown()


class RayEngine:
    """A pool of Ray actors, each with its own model (see engine/ray_engine.py)."""

    def __init__(self, spec, options: RayOptions):
        """SPEC: an engine.spec.ScannerSpec each actor builds its scanner from."""
        self.pool = RayPool(spec, options)

    def describe(self) -> dict:
        return self.pool.describe()

    def run(self, jobs, progress=None):
        return self.pool.run(jobs, progress)

    def close(self) -> None:
        self.pool.close()


def forwarded_env() -> dict[str, str]:
    return {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}


def connect(ray, address: str | None) -> bool:
    """Join the cluster at ADDRESS, else a running one, else start a local one. True when this
    process started Ray (and so shuts it down)."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UserError(f"--ray-address {address or '(auto)'}: cannot connect to Ray ({exc})") from None
    return True


def default_workers(ray, gpus_per_worker: float) -> int:
    if gpus_per_worker > 0:
        return max(1, int(ray.cluster_resources().get("GPU", 0) / gpus_per_worker))
    return 2
