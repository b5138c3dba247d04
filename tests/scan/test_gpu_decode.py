"""--decode gpu's logic, run on the CPU: the worker-side JPEG triage, the device-side transform
against the model's own image processor, the batch completion and every fallback. The decoder is
swapped for PIL here (torchvision's CUDA wheels do not import beside a CPU torch); the CUDA
decoder itself is exercised by tests/backends/test_gpu.py (-m gpu)."""

import io
import json

import numpy as np
import pytest
from conftest import run_cli, scan_args, write_shard

from vlmaudit.scan.gpu_decode import FALLBACK_NOTE, GpuJpegDecoder, defer_jpeg, resolve_decode, transform_for


def jpeg(size=(96, 80), mode="RGB", **save) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(sum(size))
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(array).resize((size[0] // 4 or 1, size[1] // 4 or 1)).resize(size)  # smooth, JPEG-like
    buf = io.BytesIO()
    image.convert(mode).save(buf, "JPEG", quality=95, **save)
    return buf.getvalue()


def pil_decode(blobs: list[bytes]) -> list:
    """Stands in for torchvision.io.decode_jpeg: uint8 RGB CHW tensors, raising on bad data."""
    import torch
    from PIL import Image

    out = []
    for blob in blobs:
        image = Image.open(io.BytesIO(blob))
        image.load()
        out.append(torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).contiguous())
    return out


@pytest.fixture(scope="module")
def scorer(tiny_clip):
    from vlmaudit.backends.clip import ClipScorer
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.rulebook.load import load_rules

    return ClipScorer(load_rules().taxonomy, ModelOptions(str(tiny_clip), "cpu", "fp32"))


# ---- worker-side triage ----------------------------------------------------------------------
def test_plain_rgb_and_grey_jpegs_are_deferred_with_their_size():
    assert defer_jpeg(jpeg((96, 80)), 10_000, 20.0) == (96, 80)
    assert defer_jpeg(jpeg((64, 48), mode="L"), 10_000, 20.0) == (64, 48)


def test_everything_unusual_stays_on_the_cpu_path():
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (32, 32)).save(png, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the CPU path applies EXIF orientation
    assert defer_jpeg(png.getvalue(), 10_000, 20.0) is None
    assert defer_jpeg(jpeg((64, 48), mode="CMYK"), 10_000, 20.0) is None
    assert defer_jpeg(jpeg((64, 48), exif=exif.tobytes()), 10_000, 20.0) is None
    assert defer_jpeg(jpeg((96, 80)), 96 * 80 - 1, 20.0) is None  # over the pixel budget
    assert defer_jpeg(jpeg((400, 16)), 10_000, 20.0) is None  # extreme aspect: the CPU path crops it
    assert defer_jpeg(b"\xff\xd8\xff garbage", 10_000, 20.0) is None
    assert defer_jpeg(b"", 10_000, 20.0) is None


# ---- device-side transform -------------------------------------------------------------------
@pytest.mark.parametrize("size", [(96, 80), (80, 96), (40, 33), (32, 32), (20, 50)])
def test_transform_matches_the_clip_image_processor(scorer, size):
    """Same decoded pixels in: the tensor path must reproduce the HF processor's resize
    (shortest edge), center crop, rescale and normalisation."""
    from PIL import Image

    blob = jpeg(size)
    expected = scorer.preprocessor.image_processor(images=[Image.open(io.BytesIO(blob)).convert("RGB")],
                                                   return_tensors="pt")["pixel_values"][0]
    got = transform_for(scorer.preprocessor)(pil_decode([blob])[0])
    assert got.shape == expected.shape
    diff = (got - expected).abs()
    assert float(diff.mean()) < 0.02 and float(diff.max()) < 0.35, (float(diff.mean()), float(diff.max()))


def test_transform_matches_a_siglip_processor_without_crop(tmp_path):
    from PIL import Image

    from vlmaudit.backends.clip import ClipScorer
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.demo.checkpoints import build_random_siglip
    from vlmaudit.rulebook.load import load_rules

    siglip = ClipScorer(load_rules().taxonomy, ModelOptions(str(build_random_siglip(tmp_path / "s")), "cpu", "fp32"))
    blob = jpeg((96, 50))
    expected = siglip.preprocessor.image_processor(images=[Image.open(io.BytesIO(blob))], return_tensors="pt")
    got = transform_for(siglip.preprocessor)(pil_decode([blob])[0])
    assert got.shape == expected["pixel_values"][0].shape == (3, 32, 32)
    assert float((got - expected["pixel_values"][0]).abs().mean()) < 0.02


def test_no_gpu_transform_for_unknown_processors():
    class Other:
        image_processor = object()

    assert transform_for(Other()) is None


# ---- choosing the mode -----------------------------------------------------------------------
def test_resolve_decode(scorer):
    from vlmaudit.errors import UserError

    assert resolve_decode("auto", scorer) == "cpu"  # a CPU model: decoding stays in the workers
    assert resolve_decode("cpu", scorer) == "cpu"
    with pytest.raises(UserError, match="does not run on a CUDA device"):
        resolve_decode("gpu", scorer)
    with pytest.raises(UserError, match="expected one of auto, cpu, gpu"):
        resolve_decode("nvjpeg", scorer)


def test_scan_decode_gpu_without_cuda_is_one_clear_error(tmp_path, tiny_clip, demo_shards):
    result = run_cli(*scan_args(demo_shards[:1], tmp_path / "out", tiny_clip, "--decode", "gpu", "--device", "cpu"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: --decode gpu: the model does not run on a CUDA")
    assert "Traceback" not in result.output


# ---- the scan with deferred JPEGs --------------------------------------------------------------
def scan_rows(scorer, shards, out, decode: str, decode_batch=None):
    import polars as pl

    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.scan.scanner import Scanner
    from vlmaudit.scan.worker import ScanSettings, ShardJob
    from vlmaudit.schema import report_meta, report_schema

    rules = load_rules()
    out.mkdir()
    schema = report_schema(rules.taxonomy, report_meta(rules.taxonomy, rules.thresholds, scorer.describe()))
    settings = ScanSettings(batch_size=4, workers=0, decode=decode)
    decoder = GpuJpegDecoder(scorer.preprocessor, "cpu", settings.max_pixels, decode_batch) if decode_batch else None
    scanner = Scanner(scorer, rules, out, settings, schema, decoder=decoder)
    scanner.run([ShardJob(str(p), p.stem) for p in shards])
    return pl.read_parquet(str(out / "*.parquet")).sort(["shard", "sample_index"])


def mixed_shard(path):
    """Plain JPEGs, a PNG, a grey JPEG, a truncated JPEG, a progressive JPEG, a caption-only sample."""
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(np.full((40, 56, 3), 90, np.uint8)).save(png, "PNG")
    samples = [{"__key__": f"plain{i}", "jpg": jpeg((96 + 8 * i, 80)), "txt": f"caption {i}"} for i in range(5)]
    samples += [
        {"__key__": "png", "png": png.getvalue(), "txt": "a png"},
        {"__key__": "grey", "jpg": jpeg((64, 48), mode="L"), "txt": "grey"},
        {"__key__": "truncated", "jpg": jpeg((96, 80))[:1200], "txt": "cut"},  # header intact
        {"__key__": "progressive", "jpg": jpeg((72, 60), progressive=True), "txt": "progressive"},
        {"__key__": "textonly", "txt": "no image here"},
    ]
    return write_shard(path, samples)


def test_gpu_decode_path_scores_like_the_cpu_path(scorer, tmp_path, demo_shards):
    shards = demo_shards + [mixed_shard(tmp_path / "mixed.tar")]
    decoded = []

    def counting(blobs):
        decoded.extend(blobs)
        return pil_decode(blobs)

    cpu = scan_rows(scorer, shards, tmp_path / "cpu", "cpu")
    gpu = scan_rows(scorer, shards, tmp_path / "gpu", "gpu", counting)
    assert len(set(decoded)) == 3 * 7 + 8  # every plain JPEG (demo + mixed) went to the device decoder, nothing else
    assert gpu["key"].to_list() == cpu["key"].to_list()
    assert gpu["status"].to_list() == cpu["status"].to_list()
    assert gpu["width"].to_list() == cpu["width"].to_list() and gpu["height"].to_list() == cpu["height"].to_list()
    assert gpu.filter(gpu["key"] == "truncated")["status"].item() == "decode_error"
    ok = cpu["status"] == "ok"
    assert gpu["caption_scores"].to_list() == cpu["caption_scores"].to_list()
    a = np.array(gpu.filter(ok)["image_scores"].to_list())
    b = np.array(cpu.filter(ok)["image_scores"].to_list())
    assert a.shape == b.shape and a.shape[0] >= 20
    assert np.abs(a - b).max() < 0.02  # full decode + tensor resize vs PIL draft decode + PIL resize


def test_jpegs_the_device_rejects_fall_back_to_the_cpu(scorer, tmp_path):
    """nvJPEG refuses some JPEGs a CPU decoder reads: they are decoded on the CPU (noted), and
    the whole batch is not lost when one image fails the batched call."""
    from PIL import Image

    def no_progressive(blobs):
        if any(Image.open(io.BytesIO(b)).info.get("progressive") for b in blobs):
            raise RuntimeError("nvjpeg: unsupported progressive JPEG")
        return pil_decode(blobs)

    shard = mixed_shard(tmp_path / "mixed.tar")
    cpu = scan_rows(scorer, [shard], tmp_path / "cpu", "cpu")
    gpu = scan_rows(scorer, [shard], tmp_path / "gpu", "gpu", no_progressive)
    assert gpu["status"].to_list() == cpu["status"].to_list()
    notes = dict(zip(gpu["key"].to_list(), gpu["notes"].to_list()))
    assert notes["progressive"] == [FALLBACK_NOTE]
    assert notes["truncated"] is None or FALLBACK_NOTE not in notes["truncated"]
    assert all(not n or FALLBACK_NOTE not in n for k, n in notes.items() if k != "progressive")
    row = lambda t, k: np.array(t.filter(t["key"] == k)["image_scores"].item())  # noqa: E731
    assert np.allclose(row(gpu, "progressive"), row(cpu, "progressive"), atol=1e-5)  # same CPU decode
    assert np.abs(row(gpu, "plain3") - row(cpu, "plain3")).max() < 0.02


def test_a_batch_of_only_deferred_images_without_captions_is_scored(scorer, tmp_path):
    shard = write_shard(tmp_path / "images.tar", [{"__key__": f"k{i}", "jpg": jpeg((64, 64 + i))} for i in range(3)])
    rows = scan_rows(scorer, [shard], tmp_path / "gpu", "gpu", pil_decode)
    assert rows["status"].to_list() == ["ok"] * 3
    assert all(s is not None and len(s) == 75 for s in rows["image_scores"].to_list())
    stats = json.loads(next((tmp_path / "gpu").glob("*.stats.json")).read_text())
    assert stats["status"] == "complete"


def test_a_device_failure_costs_the_deferred_rows_not_the_run(scorer, tmp_path):
    """E.g. CUDA out of memory in the transform: those images become decode_error rows, the PNG
    decoded on the CPU and every caption are still scored, and the shard completes."""

    class OutOfMemory(RuntimeError):
        pass

    def transform_fails(image):
        raise OutOfMemory("CUDA out of memory")

    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.scan.scanner import Scanner
    from vlmaudit.scan.worker import ScanSettings, ShardJob
    from vlmaudit.schema import report_meta, report_schema
    import polars as pl

    shard = mixed_shard(tmp_path / "mixed.tar")
    rules = load_rules()
    schema = report_schema(rules.taxonomy, report_meta(rules.taxonomy, rules.thresholds, scorer.describe()))
    settings = ScanSettings(batch_size=16, workers=0, decode="gpu")
    decoder = GpuJpegDecoder(scorer.preprocessor, "cpu", settings.max_pixels, pil_decode)
    object.__setattr__(decoder, "transform", transform_fails)
    (tmp_path / "out").mkdir()
    result = Scanner(scorer, rules, tmp_path / "out", settings, schema, decoder=decoder).run([ShardJob(str(shard), "mixed")])
    assert result.shards == {"mixed": "complete"}
    rows = pl.read_parquet(tmp_path / "out" / "mixed.parquet")
    status = dict(zip(rows["key"].to_list(), rows["status"].to_list()))
    assert status["png"] == "ok" and status["textonly"] == "missing_image"
    assert status["plain0"] == "decode_error"
    assert "CUDA out of memory" in rows.filter(rows["key"] == "plain0")["error"].item()
    assert rows.filter(rows["key"] == "png")["image_scores"].item() is not None
    assert rows["caption_scores"].null_count() == 0


def test_resample_codes_map_to_tensor_modes():
    from PIL import Image

    from vlmaudit.scan.gpu_decode import _resample

    assert _resample(Image.Resampling.NEAREST) == "nearest"  # 0 is a real code, not "unset"
    assert _resample(Image.Resampling.BILINEAR) == "bilinear" and _resample(3) == "bicubic"
    assert _resample(None) == "bicubic" and _resample("bilinear") == "bilinear"


# ---- decode ahead: the next batch decodes while the model scores this one ----------------------
class _Decoder:
    """A stand-in device decoder that signals when it starts each batch."""

    device = "cpu"

    def __init__(self):
        import threading

        self.started = [threading.Event() for _ in range(8)]

    def complete(self, batch):
        self.started[batch.n].set()
        batch.inputs["decoded"] = True


def _batches(count, fail_after=None):
    from types import SimpleNamespace

    for n in range(count):
        if n == fail_after:
            raise RuntimeError("loader broke")
        yield SimpleNamespace(n=n, prep_seconds=0.0, inputs={})


def test_the_next_batch_decodes_while_the_model_scores_this_one():
    from vlmaudit.scan.decode_ahead import DecodedAhead

    decoder, seen, overlapped = _Decoder(), [], []
    with DecodedAhead(_batches(5), decoder) as ready:
        for batch in ready:
            assert batch.inputs == {"decoded": True}  # complete() ran before the model sees it
            if batch.n + 1 < 5:  # "the model" waits for the decode of the next batch to start
                overlapped.append(decoder.started[batch.n + 1].wait(timeout=30))
            seen.append(batch.n)
    assert seen == [0, 1, 2, 3, 4] and all(overlapped)


def test_a_loader_error_reaches_the_scan_after_the_batches_before_it():
    from vlmaudit.scan.decode_ahead import DecodedAhead

    seen = []
    with pytest.raises(RuntimeError, match="loader broke"):
        with DecodedAhead(_batches(5, fail_after=2), _Decoder()) as ready:
            seen.extend(batch.n for batch in ready)
    assert seen == [0, 1]


def test_the_decode_thread_stops_when_the_scan_does():
    """The model fails: the scan leaves with no decode thread behind (one killed inside a CUDA
    call at interpreter exit would abort the process) and nothing more is decoded."""
    import threading

    from vlmaudit.scan.decode_ahead import DecodedAhead

    def endless():
        from types import SimpleNamespace

        n = 0
        while True:
            yield SimpleNamespace(n=n % 8, prep_seconds=0.0, inputs={})
            n += 1

    decoder = _Decoder()
    with pytest.raises(KeyError):
        with DecodedAhead(endless(), decoder) as ready:
            next(iter(ready))
            raise KeyError("the model failed")
    assert not [t for t in threading.enumerate() if t.name.startswith("vlmaudit-decode")]
    assert decoder.started[0].is_set() and not any(e.is_set() for e in decoder.started[2:])  # 1 may be cancelled
