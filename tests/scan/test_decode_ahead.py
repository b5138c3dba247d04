"""Decode-ahead (scan/decode_ahead.py) on the CPU: order, depth, the decode time added to the
batch, and the CUDA stream calls made through stand-ins for torch.cuda (no GPU here)."""

import time
from types import SimpleNamespace

import pytest
import torch

from vlmaudit.scan import decode_ahead as D
from vlmaudit.scan.decode_ahead import DEPTH, DecodedAhead


class Decoder:
    def __init__(self, device="cpu"):
        self.device, self.done = device, []

    def complete(self, batch):
        time.sleep(0.002)
        self.done.append(batch.n)


def batches(count):
    for n in range(count):
        yield SimpleNamespace(n=n, prep_seconds=1.0, inputs={})


def test_batches_come_in_order_with_their_decode_time_added():
    decoder = Decoder()
    with DecodedAhead(batches(4), decoder) as ready:
        got = list(ready)
    assert [b.n for b in got] == [0, 1, 2, 3] and decoder.done == [0, 1, 2, 3]
    assert all(b.prep_seconds > 1.0 for b in got) and DEPTH == 1


def test_depth_is_how_many_batches_are_decoded_before_one_is_handed_over():
    submitted = []

    def source():
        for n in range(4):
            submitted.append(n)
            yield SimpleNamespace(n=n, prep_seconds=0.0, inputs={})

    for depth, first_after in ((1, [0, 1]), (2, [0, 1, 2])):
        submitted.clear()
        with DecodedAhead(source(), Decoder(), depth=depth) as ready:
            iterator = iter(ready)
            assert next(iterator).n == 0 and submitted == first_after
            assert [b.n for b in iterator] == [1, 2, 3]


def test_fewer_batches_than_the_depth_still_all_arrive():
    with DecodedAhead(batches(1), Decoder(), depth=3) as ready:
        assert [b.n for b in ready] == [0]
    with DecodedAhead(batches(0), Decoder()) as ready:
        assert list(ready) == []


def test_a_decode_error_reaches_the_scan():
    class Failing(Decoder):
        def complete(self, batch):
            raise ValueError(f"bad {batch.n}")

    with pytest.raises(ValueError, match="^bad "):
        with DecodedAhead(batches(3), Failing()) as ready:
            list(ready)


def test_on_the_cpu_no_stream_is_made():
    assert D._side_stream("cpu") is None and D._record(None) is None
    assert D._on_stream(None).__enter__() is None
    D._use_on_current_stream(SimpleNamespace(inputs={"x": torch.zeros(1)}), None, "cpu")


class FakeCuda:
    """Records what decode_ahead asks of torch.cuda."""

    def __init__(self):
        self.calls = []
        cuda = self

        class Stream:
            def __init__(self, device):
                cuda.calls.append(("stream", device))

            def wait_event(self, event):
                cuda.calls.append(("wait", event))

        class Event:
            def record(self, stream):
                cuda.calls.append(("record", type(stream).__name__))

        class StreamContext:
            def __init__(self, stream):
                cuda.calls.append(("use", type(stream).__name__))

            def __enter__(self):
                cuda.calls.append("enter")

            def __exit__(self, *exc):
                cuda.calls.append("exit")

        self.Stream, self.Event, self.stream = Stream, Event, StreamContext
        self.current = Stream("current")

    def current_stream(self, device):
        self.calls.append(("current", str(device)))
        return self.current


def test_on_cuda_each_batch_is_decoded_on_a_side_stream_and_waited_for(monkeypatch):
    cuda = FakeCuda()
    monkeypatch.setattr(torch, "cuda", cuda)
    recorded = []

    class CudaLike(torch.Tensor):
        @property
        def is_cuda(self):
            return True

        def record_stream(self, stream):
            recorded.append(stream)

    pixels = torch.zeros(2).as_subclass(CudaLike)
    batch = SimpleNamespace(n=0, prep_seconds=0.0, inputs={"pixel_values": pixels, "ids": torch.zeros(1), "n": 3})
    cuda.calls.clear()
    with DecodedAhead(iter([batch]), Decoder("cuda:1")) as ready:
        assert [b.n for b in ready] == [0]
    kinds = [c if isinstance(c, str) else c[0] for c in cuda.calls]
    assert cuda.calls[0] == ("stream", "cuda:1")
    assert kinds == ["stream", "use", "enter", "record", "exit", "current", "wait"]
    assert ("use", "Stream") in cuda.calls and ("record", "Stream") in cuda.calls
    assert ("current", "cuda:1") in cuda.calls and recorded == [cuda.current]
    assert type(cuda.calls[-1][1]).__name__ == "Event"
