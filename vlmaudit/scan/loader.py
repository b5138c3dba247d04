"""torch DataLoader over shard jobs: decoding and preprocessing run in worker processes.

Workers never outlive the scan: on Linux each asks the kernel for SIGKILL when its parent dies
(PR_SET_PDEATHSIG), and everywhere a watchdog thread exits it once its parent is gone (torch's
own check only runs between items, not while a worker is blocked reading a shard).
"""

from __future__ import annotations

import functools
import os
import signal

import torch

from vlmaudit.scan.lifetime import die_with_parent, interrupts_deferred, watch_parent
from vlmaudit.scan.worker import ScanSettings, prepare_shard


class ShardStream(torch.utils.data.IterableDataset):
    """Worker w of W takes jobs w, w+W, w+2W, ... (whole shards, so rows stay in tar order)."""

    def __init__(self, jobs, preprocessor, settings: ScanSettings):
        self.jobs, self.preprocessor, self.settings = jobs, preprocessor, settings

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None:
            torch.set_num_threads(1)  # the model's process owns the cores' math threads
        mine = self.jobs if info is None else self.jobs[info.id::info.num_workers]
        for job in mine:
            yield from prepare_shard(job, self.preprocessor, self.settings)


def _identity(batch):
    return batch


def _worker_init(parent_pid: int, worker_id: int) -> None:
    # forked under interrupts_deferred: Ctrl-C stops a worker again (torch's worker loop exits on
    # KeyboardInterrupt; a worker that ignored it would hold up the scan's exit 5 s per worker)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    die_with_parent()
    watch_parent(parent_pid)


def iter_prepared(jobs, preprocessor, settings: ScanSettings, pin_memory: bool = False):
    """Workers decode and preprocess the next batches while the model works on this one;
    pin_memory (CUDA): batches arrive page-locked, so their copies to the GPU are asynchronous."""
    workers = min(settings.workers, len(jobs))
    loader = torch.utils.data.DataLoader(
        ShardStream(jobs, preprocessor, settings), batch_size=None, num_workers=workers,
        collate_fn=_identity, prefetch_factor=4 if workers else None, pin_memory=pin_memory,
        worker_init_fn=functools.partial(_worker_init, os.getpid()) if workers else None,
    )
    with interrupts_deferred():  # iter() forks the workers
        return iter(loader)
