"""Decode the next batches on the device while the model scores this one (--decode gpu).

A helper thread takes prepared batches from the DataLoader, completes their deferred JPEGs
(nvJPEG decode + resize, on a CUDA stream of its own) and hands them over through a small queue.
Before the model reads a batch, the main thread's stream waits for that batch's decode event, and
the pixel tensors are marked as used by the main stream (so the caching allocator does not hand
their memory back to the decode stream too early). Order is kept, an error raised by the loader is
raised again in the main thread, and the helper stops when the scan stops.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time

DEPTH = 2  # batches decoded ahead: one being scored, one or two ready
POLL_SECONDS = 0.1
_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class DecodedAhead:
    """Iterate over BATCHES with DECODER.complete already applied, one to DEPTH batches ahead."""

    def __init__(self, batches, decoder, depth: int = DEPTH):
        self.batches, self.decoder = batches, decoder
        self.ready: queue.Queue = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        self.stream = _side_stream(decoder.device)
        self.thread = threading.Thread(target=self._decode_all, name="vlmaudit-decode-ahead", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping.set()
        self.thread.join(timeout=5 * POLL_SECONDS)  # a loader blocked on a read keeps it: it is a daemon

    def __iter__(self):
        while True:
            item = self.ready.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            batch, event = item
            _use_on_current_stream(batch, event, self.decoder.device)
            yield batch

    def _decode_all(self) -> None:
        try:
            for batch in self.batches:
                started = time.perf_counter()
                with _on_stream(self.stream):
                    self.decoder.complete(batch)
                    event = _record(self.stream)
                batch.prep_seconds += time.perf_counter() - started
                if not self._hand_over((batch, event)):
                    return
            self._hand_over(_END)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            self._hand_over(_Failure(exc))

    def _hand_over(self, item) -> bool:
        """Put ITEM in the queue unless the scan stops first."""
        while not self.stopping.is_set():
            try:
                self.ready.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False


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
