"""Decode the next batch on the device while the model scores this one (--decode gpu).

The scan's thread takes prepared batches from the DataLoader as before and hands each one to a
single decode thread, which completes its deferred JPEGs (nvJPEG decode + resize) on a CUDA
stream of its own; a batch reaches the model once its decode is done, while the decode of the next
batch runs. Before the model reads a batch, the model's stream waits for that batch's decode event
and the pixel tensors are marked as used by the model's stream (so the caching allocator does not
give their memory back to the decode stream too early).

Only decoding runs in the decode thread (bounded work, never a blocking read), so stopping always
waits for it: a thread killed inside a CUDA call at interpreter exit would abort the process. One
batch is decoded ahead at most: the decode's memory peak already overlaps the model's.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque

DEPTH = 1  # batches decoded ahead of the one being scored


class DecodedAhead:
    """`with DecodedAhead(batches, decoder) as ready: for batch in ready: ...` yields BATCHES in
    order, each with DECODER.complete already applied."""

    def __init__(self, batches, decoder, depth: int = DEPTH):
        from concurrent.futures import ThreadPoolExecutor

        self.batches, self.decoder, self.depth = batches, decoder, depth
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmaudit-decode")
        self.pending: deque = deque()
        self.stream = _side_stream(decoder.device)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True)  # at most the one decode in progress

    def __iter__(self):
        try:
            for batch in self.batches:
                self.pending.append(self.pool.submit(self._decode, batch))
                if len(self.pending) > self.depth:
                    yield self._ready(self.pending.popleft())
        except Exception:  # the loader broke: the batches already read still become rows
            while self.pending:
                yield self._ready(self.pending.popleft())
            raise
        while self.pending:
            yield self._ready(self.pending.popleft())

    def _decode(self, batch):
        started = time.perf_counter()
        with _on_stream(self.stream):
            self.decoder.complete(batch)
            event = _record(self.stream)
        batch.prep_seconds += time.perf_counter() - started
        return batch, event

    def _ready(self, future):
        batch, event = future.result()
        _use_on_current_stream(batch, event, self.decoder.device)
        return batch


def _side_stream(device):
    if not str(device).startswith("cuda"):
        return None
    import torch

    return torch.cuda.Stream(device=device)


def _on_stream(stream):
    if stream is None:
        return contextlib.nullcontext()
    import torch

    return torch.cuda.stream(stream)


def _record(stream):
    if stream is None:
        return None
    import torch

    event = torch.cuda.Event()
    event.record(stream)
    return event


def _use_on_current_stream(batch, event, device) -> None:
    if event is None:
        return
    import torch

    current = torch.cuda.current_stream(torch.device(device))
    current.wait_event(event)
    for tensor in batch.inputs.values():
        if isinstance(tensor, torch.Tensor) and tensor.is_cuda:
            tensor.record_stream(current)
