"""Device and precision choice: what --device / --precision resolve to on a machine with or without
CUDA and native bf16 (both pinned here, so the result never depends on this machine's CPU)."""

import pytest
import torch

from vlmaudit.backends import device as D
from vlmaudit.errors import UserError


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def cpu_features(monkeypatch, avx512_bf16, amx):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


def test_auto_device_is_cuda_only_where_cuda_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert D.resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert D.resolve_device("auto") == "cuda"


def test_explicit_devices_pass_through(with_cuda):
    assert [D.resolve_device(n) for n in ("cpu", "cuda", "cuda:1")] == ["cpu", "cuda", "cuda:1"]


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_one_clear_error(no_cuda, name):
    with pytest.raises(UserError) as err:
        D.resolve_device(name)
    assert str(err.value) == f"--device {name}: CUDA is not available on this machine (use --device cpu)"


@pytest.mark.parametrize("name", ["gpu", "mps", "CPU", ""])
def test_unknown_device_names_the_choices(no_cuda, name):
    with pytest.raises(UserError) as err:
        D.resolve_device(name)
    assert str(err.value) == f"--device {name}: expected auto, cpu, cuda or cuda:N"


@pytest.mark.parametrize("avx512_bf16,amx,expected", [(True, False, True), (False, True, True), (True, True, True),
                                                       (False, False, False)])
def test_native_bf16_is_either_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, expected):
    cpu_features(monkeypatch, avx512_bf16, amx)
    assert D.cpu_supports_bf16() is expected


def test_a_torch_without_the_cpu_probes_means_no_native_bf16(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert D.cpu_supports_bf16() is False


def test_auto_precision_per_device_and_cpu(monkeypatch):
    cpu_features(monkeypatch, True, False)
    assert D.resolve_precision("auto", "cpu") == "bf16"
    assert D.resolve_precision("auto", "cuda") == "fp16"
    assert D.resolve_precision("auto", "cuda:1") == "fp16"
    cpu_features(monkeypatch, False, False)
    assert D.resolve_precision("auto", "cpu") == "fp32"


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_explicit_precision_is_kept_on_every_device(monkeypatch, precision):
    cpu_features(monkeypatch, False, False)
    assert D.resolve_precision(precision, "cpu") == precision
    assert D.resolve_precision(precision, "cuda") == precision


@pytest.mark.parametrize("precision", ["int8", "FP32", "", "float32"])
def test_unknown_precision_names_the_choices(precision):
    with pytest.raises(UserError) as err:
        D.resolve_precision(precision, "cpu")
    assert str(err.value) == f"--precision {precision}: expected one of auto, fp32, fp16, bf16"


def test_bf16_autocasts_on_cpu_only():
    with D.autocast_context("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    for device, precision in (("cpu", "fp32"), ("cpu", "fp16"), ("cuda", "bf16"), ("cuda", "fp16")):
        with D.autocast_context(device, precision):
            assert not torch.is_autocast_enabled("cpu")
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_weights_are_cast_on_cuda_only():
    assert D.weight_dtype("cuda", "fp16") == torch.float16
    assert D.weight_dtype("cuda:0", "bf16") == torch.bfloat16
    assert D.weight_dtype("cuda", "fp32") == torch.float32
    assert D.weight_dtype("cpu", "bf16") == torch.float32  # CPU: fp32 weights under bf16 autocast
    assert D.weight_dtype("cpu", "fp16") == torch.float32


def test_to_device_on_cpu_keeps_the_values():
    tensor = torch.arange(6.0).reshape(2, 3)
    moved = D.to_device(tensor, "cpu")
    assert moved.device.type == "cpu" and torch.equal(moved, tensor)


def test_compile_traces_once_for_every_batch_size(monkeypatch):
    """--compile: the last batch of a shard is smaller; dynamic shapes mean it is not compiled again."""
    import torch._dynamo

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, backend="eager", **kw))  # no C compiler needed
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()

    def double(x):
        return x * 2 + 1

    fn = D.compiled(double)
    for n in (8, 8, 3, 5):
        assert torch.equal(fn(torch.ones(n, 4)), torch.full((n, 4), 3.0))
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()
