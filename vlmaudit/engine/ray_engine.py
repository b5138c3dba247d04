"""The Ray engine: a fixed pool of scorer actors, the model built once per actor in its
constructor; each actor takes whole shards and runs the same Scanner as the local engine.

Faults: Ray restarts a dead actor and retries its shard (max_restarts / max_task_retries); the
writer's temporary name + rename + stats-last makes the retry idempotent, and the retried shard's
claim is taken over from the dead process. Ctrl-C kills the actors; a re-run resumes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vlmaudit.errors import UserError, require
from vlmaudit.scan.scanner import NullProgress, ScanResult
from vlmaudit.schema import ShardStatus

MAX_RESTARTS = 3
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
        remote = self.ray.remote(ShardActor).options(
            num_cpus=options.cpus_per_worker, num_gpus=gpus, max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_RESTARTS, max_concurrency=1, runtime_env={"env_vars": forwarded_env()})
        self.actors = [remote.remote(spec) for _ in range(workers)]
        self.busy: dict = {}  # ObjectRef -> (actor index, job)

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
            if self._collect(ref, job, result, progress):  # else: its actor died MAX_RESTARTS times
                self._submit(index, todo)
        for job in reversed(todo):  # only when every actor died for good: left for a re-run
            result.shards[job.name] = ShardStatus.FAILED
        return result

    def _submit(self, index: int, todo: list) -> None:
        if todo:
            job = todo.pop()
            self.busy[self.actors[index].scan.remote(job)] = (index, job)

    def _collect(self, ref, job, result: ScanResult, progress) -> bool:
        """Merge one shard's result; False when its actor is dead for good."""
        try:
            shard = self.call(ref)
        except self.ray.exceptions.RayActorError:
            self._failed(job, result, progress)
            return False
        except self.ray.exceptions.RayTaskError:  # a bug in one shard's scan: that shard fails
            self._failed(job, result, progress)
            return True
        result.merge(shard)
        progress.batch(shard.rows, shard.flagged)
        for name, status in shard.shards.items():
            progress.shard_done(name, status)
        return True

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

    def __init__(self, request):
        options = RayOptions(request.ray_address, request.ray_workers, request.gpus_per_worker,
                             request.cpus_per_worker)
        self.pool = RayPool(request.spec(), options)

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
