"""The CPU-testable parts of --decode gpu (scan/gpu_decode.py), without a model: header triage at
its limits, PixelTransform against the real transformers CLIP/SigLIP image processors on CPU
tensors, center-crop padding, processor settings, mode choice, and GpuJpegDecoder with an injected
CPU `decode_batch` through each fallback path."""

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, SiglipImageProcessor

from vlmaudit.backends.clip import ClipPreprocessor
from vlmaudit.errors import UserError
from vlmaudit.scan.gpu_decode import (FALLBACK_NOTE, GPU_PROCESSORS, GpuJpegDecoder, PixelTransform, _center_crop,
                                      _resample, defer_jpeg, gpu_decode_problem, resolve_decode, transform_for)
from vlmaudit.scan.rows import RowMeta


def jpeg(size=(32, 24), mode="RGB", **save) -> bytes:
    rng = np.random.default_rng(size[0] * 1000 + size[1])
    image = Image.fromarray(rng.integers(0, 256, (size[1] // 4 or 1, size[0] // 4 or 1, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.resize(size).convert(mode).save(buffer, "JPEG", quality=95, **save)
    return buffer.getvalue()


def chw(blob: bytes) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")).copy()).permute(2, 0, 1)


def clip_processor(**kw):
    return CLIPImageProcessor(**{"size": {"shortest_edge": 16}, "crop_size": {"height": 16, "width": 16}, **kw})


def preprocessor(processor=None):
    return ClipPreprocessor(SimpleNamespace(image_processor=processor or clip_processor(), tokenizer=None), 77, False)


# ---- worker-side triage ---------------------------------------------------------------------------

def test_the_pixel_budget_and_the_aspect_limit_admit_exactly_their_limit():
    assert defer_jpeg(jpeg((32, 24)), 32 * 24, 20.0) == (32, 24)
    assert defer_jpeg(jpeg((32, 24)), 32 * 24 - 1, 20.0) is None
    assert defer_jpeg(jpeg((200, 10)), 10**6, 20.0) == (200, 10)
    assert defer_jpeg(jpeg((201, 10)), 10**6, 20.0) is None
    assert defer_jpeg(jpeg((10, 201)), 10**6, 20.0) is None
    assert defer_jpeg(jpeg((10, 200)), 10**6, 20.0) == (10, 200)


def test_an_explicit_upright_orientation_and_grey_jpegs_are_deferred():
    exif = Image.Exif()
    exif[0x0112] = 1
    assert defer_jpeg(jpeg((16, 16), exif=exif.tobytes()), 10**6, 20.0) == (16, 16)
    assert defer_jpeg(jpeg((16, 8), mode="L"), 10**6, 20.0) == (16, 8)
    assert defer_jpeg(jpeg((16, 8), mode="CMYK"), 10**6, 20.0) is None
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    assert defer_jpeg(png.getvalue(), 10**6, 20.0) is None


# ---- the transform --------------------------------------------------------------------------------

def transform(size, crop=None, resample="bilinear", scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    return PixelTransform(size, resample, crop, scale, mean, std)


def test_rescale_and_normalise_per_channel():
    image = torch.tensor([[[10, 20]], [[30, 40]], [[50, 60]]], dtype=torch.uint8)  # 3 x 1 x 2
    got = transform({"height": 1, "width": 2}, scale=0.5, mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 8.0))(image)
    assert got.tolist() == [[[2.0, 4.5]], [[3.25, 4.5]], [[2.75, 3.375]]]


def test_a_grey_image_is_spread_over_three_channels():
    got = transform({"height": 1, "width": 2})(torch.tensor([[[7, 9]]], dtype=torch.uint8))
    assert got.tolist() == [[[7.0, 9.0]]] * 3


@pytest.mark.parametrize("height, width, resized", [(10, 20, (4, 8)), (20, 10, (8, 4)), (10, 10, (4, 4)),
                                                    (3, 10, (4, 13)), (10, 3, (13, 4))])
def test_shortest_edge_resizes_keep_the_aspect_and_truncate(height, width, resized):
    image = torch.full((3, height, width), 200, dtype=torch.uint8)
    got = transform({"shortest_edge": 4})(image)
    assert tuple(got.shape[1:]) == resized and torch.all(got == 200)


def test_a_fixed_size_resize_and_resampling_rounds_to_whole_values():
    image = torch.arange(16, dtype=torch.uint8).view(1, 4, 4).repeat(3, 1, 1) * 10
    got = transform({"height": 2, "width": 3})(image)
    assert tuple(got.shape) == (3, 2, 3) and torch.equal(got, got.round())
    nearest = transform({"height": 2, "width": 2}, resample="nearest")(image)
    assert set(nearest.flatten().tolist()) <= set((image.flatten().float()).tolist())


def test_an_image_already_at_its_size_is_not_resampled():
    image = torch.tensor([[[0, 255], [255, 0]]] * 3, dtype=torch.uint8)
    assert transform({"height": 2, "width": 2}, resample="bicubic")(image).tolist() == image.float().tolist()


def test_center_crop_takes_the_middle():
    pixels = torch.arange(30.0).view(1, 1, 5, 6)
    assert _center_crop(pixels, 3, 2)[0, 0].tolist() == [[8.0, 9.0], [14.0, 15.0], [20.0, 21.0]]
    assert _center_crop(pixels, 5, 6)[0, 0].tolist() == pixels[0, 0].tolist()
    assert _center_crop(pixels, 4, 4)[0, 0].tolist() == [[1.0, 2.0, 3.0, 4.0], [7.0, 8.0, 9.0, 10.0],
                                                         [13.0, 14.0, 15.0, 16.0], [19.0, 20.0, 21.0, 22.0]]


def test_center_crop_pads_a_small_image_with_zeros_around_it():
    pixels = torch.ones(1, 1, 2, 3)
    got = _center_crop(pixels, 5, 6)[0, 0]
    assert got.tolist() == [[0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0],
                            [0, 0, 0, 0, 0, 0]]
    taller = _center_crop(torch.ones(1, 1, 1, 4), 3, 2)[0, 0]
    assert taller.tolist() == [[0, 0], [1, 1], [0, 0]]
    wider = _center_crop(torch.ones(1, 1, 4, 1), 2, 4)[0, 0]
    assert wider.tolist() == [[0, 1, 0, 0]] * 2  # odd padding: the extra column goes right


@pytest.mark.parametrize("size", [(32, 24), (24, 32), (16, 16), (12, 9), (40, 11)])
def test_the_transform_reproduces_the_clip_image_processor(size):
    blob = jpeg(size)
    processor = clip_processor()
    expected = processor(images=[Image.open(io.BytesIO(blob)).convert("RGB")], return_tensors="pt")["pixel_values"][0]
    got = transform_for(preprocessor(processor))(chw(blob))
    assert got.shape == expected.shape == (3, 16, 16)
    diff = (got - expected).abs()
    assert float(diff.mean()) < 0.01 and float(diff.max()) < 0.1, (float(diff.mean()), float(diff.max()))


@pytest.mark.parametrize("size", [(32, 24), (9, 30)])
def test_the_transform_reproduces_the_siglip_image_processor(size):
    blob = jpeg(size)
    processor = SiglipImageProcessor(size={"height": 16, "width": 16})
    expected = processor(images=[Image.open(io.BytesIO(blob))], return_tensors="pt")["pixel_values"][0]
    got = transform_for(preprocessor(processor))(chw(blob))
    assert got.shape == expected.shape == (3, 16, 16)
    assert float((got - expected).abs().mean()) < 0.01


# ---- the processor's settings -----------------------------------------------------------------------

def test_the_clip_processor_settings_become_the_transform():
    got = transform_for(preprocessor(clip_processor(resample=2, rescale_factor=0.25)))
    assert got == PixelTransform({"shortest_edge": 16}, "bilinear", (16, 16), 0.25,
                                 tuple(CLIPImageProcessor().image_mean), tuple(CLIPImageProcessor().image_std))
    assert isinstance(got.scale, float)


def test_switched_off_steps_are_identities():
    processor = clip_processor(do_center_crop=False, do_rescale=False, do_normalize=False)
    got = transform_for(preprocessor(processor))
    assert (got.crop, got.scale, got.mean, got.std) == (None, 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    siglip = transform_for(preprocessor(SiglipImageProcessor(size={"height": 8, "width": 6})))
    assert (siglip.size, siglip.crop) == ({"height": 8, "width": 6}, None)


def test_no_transform_without_a_resize_an_understood_size_or_a_known_processor():
    assert transform_for(preprocessor(clip_processor(do_resize=False))) is None
    odd = clip_processor()
    odd.size = {"longest_edge": 16}
    assert transform_for(preprocessor(odd)) is None
    odd.size = {"height": 16}
    assert transform_for(preprocessor(odd)) is None
    assert transform_for(SimpleNamespace()) is None
    assert GPU_PROCESSORS == ("CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPImageProcessorPil",
                              "SiglipImageProcessor", "SiglipImageProcessorFast", "SiglipImageProcessorPil")


def test_a_processor_without_optional_attributes_uses_the_defaults():
    class CLIPImageProcessorFast:  # noqa: N801 - the name is what transform_for checks
        size = {"height": 4, "width": 4}
        rescale_factor = 0.5
        image_mean, image_std = [0.1, 0.2, 0.3], [1.0, 2.0, 3.0]

    got = transform_for(SimpleNamespace(image_processor=CLIPImageProcessorFast()))
    assert got == PixelTransform({"height": 4, "width": 4}, "bicubic", None, 0.5, (0.1, 0.2, 0.3), (1.0, 2.0, 3.0))


@pytest.mark.parametrize("value, mode", [
    (0, "nearest"), (2, "bilinear"), (3, "bicubic"), (1, "bicubic"), (5, "bicubic"), ("2", "bilinear"),
    (None, "bicubic"), ("nearest", "nearest"), ("BILINEAR", "bilinear"), ("lanczos", "bicubic"),
    (SimpleNamespace(value="nearest"), "nearest"), (SimpleNamespace(value="box"), "bicubic"),
])
def test_resample_codes_and_names(value, mode):
    assert _resample(value) == mode


# ---- choosing the mode --------------------------------------------------------------------------------

def backend(device="cuda:0", processor=None):
    return SimpleNamespace(device=device, preprocessor=preprocessor(processor), name="clip")


def test_the_mode_choice_and_each_reason_the_gpu_cannot_decode():
    assert gpu_decode_problem(backend("cpu")) == "the model does not run on a CUDA device"
    assert gpu_decode_problem(backend(processor=clip_processor(do_resize=False))) == (
        "the clip backend's image processor cannot run on the GPU (CLIP/SigLIP processors only)")
    problem = gpu_decode_problem(backend())
    try:
        import torchvision.io  # noqa: F401
    except Exception as exc:
        assert problem == f"torchvision's decode_jpeg is not importable ({type(exc).__name__}: {str(exc)[:120]})"
        assert resolve_decode("auto", backend()) == "cpu"
        with pytest.raises(UserError) as info:
            resolve_decode("gpu", backend())
        assert str(info.value) == f"--decode gpu: {problem} (use --decode cpu or auto)"
    else:
        assert problem is None and resolve_decode("auto", backend()) == "gpu" == resolve_decode("gpu", backend())
    assert resolve_decode("cpu", backend()) == "cpu"
    with pytest.raises(UserError) as info:
        resolve_decode("GPU", backend())
    assert str(info.value) == "--decode GPU: expected one of auto, cpu, gpu"


# ---- completing a batch --------------------------------------------------------------------------------

def cpu_decode(blobs):
    return [chw(blob) for blob in blobs]


def batch(deferred, existing=None, metas=None):
    metas = metas or [RowMeta(f"k{i}", i, None, None, "ok", width=1, height=1) for i in range(6)]
    inputs = {} if existing is None else {"pixel_values": existing}
    return SimpleNamespace(extra={"jpeg": deferred}, metas=metas, inputs=inputs)


def decoder(decode_batch=cpu_decode, max_pixels=10**6, processor=None):
    return GpuJpegDecoder(preprocessor(processor), "cpu", max_pixels, decode_batch)


def test_deferred_jpegs_are_appended_after_the_cpu_decoded_images():
    existing = torch.zeros(2, 3, 16, 16)
    b = batch([(3, jpeg((32, 24))), (1, jpeg((24, 40)))], existing)
    decoder().complete(b)
    assert tuple(b.inputs["pixel_values"].shape) == (4, 3, 16, 16) and "jpeg" not in b.extra
    assert [m.image_row for m in b.metas] == [-1, 3, -1, 2, -1, -1]
    assert torch.equal(b.inputs["pixel_values"][:2], existing)
    expected = transform_for(preprocessor())(chw(jpeg((32, 24))))
    assert torch.allclose(b.inputs["pixel_values"][2], expected)
    assert all(m.status == "ok" and m.notes == [] for m in b.metas)


def test_a_batch_of_only_deferred_jpegs_starts_at_row_zero():
    b = batch([(0, jpeg()), (5, jpeg((20, 20)))])
    decoder().complete(b)
    assert tuple(b.inputs["pixel_values"].shape) == (2, 3, 16, 16)
    assert (b.metas[0].image_row, b.metas[5].image_row) == (0, 1)


def test_nothing_deferred_leaves_the_batch_alone():
    for extra in ({}, {"jpeg": []}):
        b = SimpleNamespace(extra=dict(extra), metas=[], inputs={})
        decoder(decode_batch=lambda blobs: 1 / 0).complete(b)
        assert b.inputs == {} and "jpeg" not in b.extra


def test_a_failed_batched_call_is_retried_one_image_at_a_time_and_rejects_go_to_the_cpu():
    calls = []
    bad = jpeg((24, 24), progressive=True)

    def picky(blobs):
        calls.append(len(blobs))
        if bad in blobs:
            raise RuntimeError("nvjpeg: unsupported")
        return cpu_decode(blobs)

    b = batch([(0, jpeg()), (1, bad), (2, jpeg((20, 28)))])
    decoder(picky).complete(b)
    assert calls == [3, 1, 1, 1]
    assert [m.image_row for m in b.metas[:3]] == [0, 1, 2] and tuple(b.inputs["pixel_values"].shape) == (3, 3, 16, 16)
    assert b.metas[1].notes == [FALLBACK_NOTE] and b.metas[0].notes == [] and b.metas[2].notes == []
    assert (b.metas[1].width, b.metas[1].height, b.metas[1].status) == (24, 24, "ok")
    cpu = preprocessor().prepare([Image.open(io.BytesIO(bad)).convert("RGB")], [])["pixel_values"][0]
    assert torch.allclose(b.inputs["pixel_values"][1], cpu)


def test_cpu_fallbacks_that_fail_become_rows_with_their_status():
    def refuse(blobs):
        raise RuntimeError("no device")

    b = batch([(0, jpeg((32, 24))), (1, b"\xff\xd8\xff not really"), (2, jpeg((8, 8)))])
    decoder(refuse, max_pixels=100).complete(b)
    assert [(m.status, m.image_row, m.width, m.height) for m in b.metas[:3]] == [
        ("too_large", -1, None, None), ("decode_error", -1, None, None), ("ok", 0, 8, 8)]
    assert b.metas[0].error == "32x24 = 768 pixels exceeds --max-pixels 100"
    assert b.metas[1].error.startswith("UnidentifiedImageError: cannot identify image file")
    assert tuple(b.inputs["pixel_values"].shape) == (1, 3, 16, 16)


def test_a_processor_failure_on_the_cpu_fallback_is_a_decode_error():
    class Broken(ClipPreprocessor):
        def prepare(self, images, captions):
            raise ValueError("x" * 600)

    pre = Broken(SimpleNamespace(image_processor=clip_processor(), tokenizer=None), 77, False)
    def refuse(blobs):
        raise RuntimeError("rejected")

    gpu = GpuJpegDecoder(pre, "cpu", 10**6, refuse)
    b = batch([(0, jpeg())])
    gpu.complete(b)
    meta = b.metas[0]
    assert (meta.status, meta.image_row, meta.width, meta.height) == ("decode_error", -1, None, None)
    assert meta.error == ("preprocessing failed: ValueError: " + "x" * 600)[:500] and "pixel_values" not in b.inputs


def test_a_device_failure_marks_every_deferred_row_and_nothing_else():
    gpu = decoder()
    object.__setattr__(gpu, "transform", lambda image: (_ for _ in ()).throw(MemoryError("CUDA out of memory " * 50)))
    existing = torch.zeros(1, 3, 16, 16)
    b = batch([(2, jpeg()), (4, jpeg())], existing)
    b.metas[0].image_row = 0
    gpu.complete(b)
    for position in (2, 4):
        meta = b.metas[position]
        assert (meta.status, meta.image_row, meta.width, meta.height) == ("decode_error", -1, None, None)
        assert meta.error == ("GPU decode failed: MemoryError: " + "CUDA out of memory " * 50)[:500]
    assert b.metas[0].image_row == 0 and b.metas[0].status == "ok" and torch.equal(b.inputs["pixel_values"], existing)


@pytest.fixture
def fake_torchvision(monkeypatch):
    """torchvision.io stand-in (the CUDA wheels do not import beside a CPU torch): records decode_jpeg calls."""
    import sys
    import types

    calls = []
    io_module = types.ModuleType("torchvision.io")
    io_module.ImageReadMode = SimpleNamespace(RGB="RGB-mode")
    io_module.decode_jpeg = lambda tensors, mode, device: calls.append((tensors, mode, device)) or ["decoded"] * len(tensors)
    package = types.ModuleType("torchvision")
    package.io = io_module
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.io", io_module)
    return calls


def test_with_torchvision_a_cuda_clip_model_decodes_on_the_gpu(fake_torchvision):
    assert gpu_decode_problem(backend()) is None
    assert resolve_decode("auto", backend()) == "gpu" and resolve_decode("gpu", backend()) == "gpu"
    assert resolve_decode("auto", backend("cpu")) == "cpu"
    with pytest.raises(UserError) as info:
        resolve_decode("gpu", backend("cpu"))
    assert str(info.value) == "--decode gpu: the model does not run on a CUDA device (use --decode cpu or auto)"


def test_the_torchvision_decoder_gets_uint8_tensors_of_the_bytes(fake_torchvision):
    from vlmaudit.scan.gpu_decode import torchvision_decoder

    assert torchvision_decoder("cuda:3")([b"\x01\x02", b"\xff"]) == ["decoded", "decoded"]
    [(tensors, mode, device)] = fake_torchvision
    assert [t.tolist() for t in tensors] == [[1, 2], [255]] and all(t.dtype == torch.uint8 for t in tensors)
    assert (mode, device) == ("RGB-mode", "cuda:3")
    assert GpuJpegDecoder(preprocessor(), "cuda:3", 10).decode_batch([b"\x07"]) == ["decoded"]
    assert fake_torchvision[-1][2] == "cuda:3"
