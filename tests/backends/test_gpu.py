"""The CUDA path (-m gpu; deselected by default, run by scripts/gpu-check.sh on a lent GPU).

CPU-side logic of the same features is tested in test_gpu_decode.py and test_perf.py. The first
test here needs only torchvision (the PyPI wheels are CUDA builds that do not import beside a
CPU-only torch, so it lives with the GPU tests, where gpu-check.sh installs torchvision)."""

import io

import numpy as np
import pytest
from conftest import run_cli, scan_args

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def cuda():
    import torch

    if not torch.cuda.is_available():
        pytest.fail("-m gpu selects tests that need a CUDA GPU; this machine has none")


def jpegs(n=8, subsampling=2):
    """Upscaled colour noise (hard on chroma); subsampling 2 is 4:2:0, PIL's default, 0 is 4:4:4."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        size = (64 + 16 * i, 48 + 8 * i)
        small = rng.integers(0, 256, (size[1] // 4, size[0] // 4, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize(size, Image.BILINEAR).save(buf, "JPEG", quality=90, subsampling=subsampling)
        out.append(buf.getvalue())
    return out


def smooth_jpegs(n=4):
    """Gradients and a slow wave, 4:2:0: closer to photographs than noise."""
    from PIL import Image

    out = []
    for i in range(n):
        h, w = 48 + 56 * i, 64 + 64 * i
        y, x = np.mgrid[0:h, 0:w]
        pixels = np.stack([255 * x / w, 255 * y / h, 128 + 100 * np.sin(x / 9.0 + y / 13.0)], -1)
        buf = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def pil_pixels(blob):
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")).astype(np.float32)


def decoded_diff(tensors, blobs):
    diffs = [np.abs(t.cpu().permute(1, 2, 0).numpy().astype(np.float32) - pil_pixels(b)) for t, b in zip(tensors, blobs)]
    return float(np.mean([d.mean() for d in diffs])), float(np.max([np.percentile(d, 99) for d in diffs]))


def test_torchvision_cpu_jpeg_decoder_matches_pil():
    from vlmaudit.scan.gpu_decode import torchvision_decoder

    blobs = jpegs()
    mean, p99 = decoded_diff(torchvision_decoder("cpu")(blobs), blobs)
    assert mean < 1.0 and p99 < 8, (mean, p99)


def test_gpu_jpeg_decode_matches_cpu_decode():
    """nvJPEG and libjpeg-turbo agree on full-resolution chroma (4:4:4) to the pixel; with 4:2:0 they
    upsample chroma differently (libjpeg's "fancy" upsampling). Measured on an H200 (torchvision
    0.26, torch 2.11): 4:4:4 identical; 4:2:0 smooth images mean 1.4-2.1, p99 9-11 (torchvision's own
    test allows a mean of 2 on photographs); 4:2:0 noise mean 8, p99 32, the chroma the CPU interpolates."""
    from vlmaudit.scan.gpu_decode import torchvision_decoder

    decode = torchvision_decoder("cuda")
    full_chroma = jpegs(subsampling=0)
    decoded = decode(full_chroma)
    assert all(t.is_cuda and t.dtype.is_floating_point is False for t in decoded)
    mean, p99 = decoded_diff(decoded, full_chroma)
    assert mean < 0.1 and p99 <= 2, (mean, p99)
    smooth = smooth_jpegs()
    mean, p99 = decoded_diff(decode(smooth), smooth)
    assert mean < 3.0 and p99 < 16, (mean, p99)


def scores(out):
    import duckdb

    rows = duckdb.sql(f"SELECT status, image_scores, caption_scores FROM read_parquet('{out}/*.parquet') "
                      "ORDER BY shard, sample_index").fetchall()
    ok = [r for r in rows if r[0] == "ok"]
    return [r[0] for r in rows], np.array([r[1] for r in ok]), np.array([r[2] for r in ok])


def test_cuda_scores_equal_the_cpu_path_within_fp16_tolerance(tmp_path, tiny_clip, demo_shards):
    runs = {"cpu": ("--device", "cpu"),
            "cuda": ("--device", "cuda", "--precision", "fp16", "--decode", "cpu"),
            "cuda-gpu-decode": ("--device", "cuda", "--precision", "fp16", "--decode", "gpu")}
    results = {}
    for name, extra in runs.items():
        result = run_cli(*scan_args(demo_shards, tmp_path / name, tiny_clip, *extra))
        assert result.exit_code == 0, result.output
        results[name] = scores(tmp_path / name)
    base_table, base_image, base_caption = results["cpu"]
    for name in ("cuda", "cuda-gpu-decode"):
        table, image, caption = results[name]
        assert table == base_table
        assert np.abs(caption - base_caption).max() < 1e-2, name
        assert np.abs(image - base_image).max() < (1e-2 if name == "cuda" else 3e-2), name


def test_batches_arrive_pinned_and_copy_without_blocking(tiny_clip, demo_shards):
    import torch

    from vlmaudit.backends.clip import ClipScorer
    from vlmaudit.backends.device import to_device
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.scan.loader import iter_prepared
    from vlmaudit.scan.worker import ScanSettings, ShardJob

    scorer = ClipScorer(load_rules().taxonomy, ModelOptions(str(tiny_clip), "cuda", "fp16"))
    jobs = [ShardJob(str(p), p.stem) for p in demo_shards]
    batches = list(iter_prepared(jobs, scorer.preprocessor, ScanSettings(batch_size=4, workers=2), pin_memory=True))
    pixels = [b.inputs["pixel_values"] for b in batches if "pixel_values" in b.inputs]
    assert pixels and all(p.is_pinned() for p in pixels)
    copied = to_device(pixels[0], "cuda")
    torch.cuda.synchronize()
    assert torch.equal(copied.cpu(), pixels[0])


def test_no_memory_growth_over_many_batches(tiny_clip):
    import torch

    from vlmaudit.backends.clip import ClipScorer
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.scan.gpu_decode import GpuJpegDecoder
    from vlmaudit.scan.rows import RowMeta
    from vlmaudit.scan.worker import PreparedBatch, ShardJob

    scorer = ClipScorer(load_rules().taxonomy, ModelOptions(str(tiny_clip), "cuda", "fp16"))
    decoder = GpuJpegDecoder(scorer.preprocessor, "cuda", 50_000_000)
    blobs = jpegs(8)
    text = scorer.preprocessor.tokenize([f"caption number {i}" for i in range(8)])

    def one_batch():
        metas = [RowMeta(f"k{i}", i, None, "c", "ok") for i in range(8)]
        batch = PreparedBatch(ShardJob("x", "x"), metas, dict(text), 0.0, extra={"jpeg": list(enumerate(blobs))})
        decoder.complete(batch)
        image, caption = scorer.score(batch.inputs)
        assert image.shape == (8, 75) and caption.shape == (8, 75)

    for _ in range(10):
        one_batch()
    torch.cuda.synchronize()
    settled = torch.cuda.memory_allocated()
    for _ in range(100):
        one_batch()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - settled < (1 << 20)


def test_compiled_clip_scores_like_eager(tiny_clip):
    import torch

    from vlmaudit.backends.clip import ClipScorer
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.rulebook.load import load_rules

    taxonomy = load_rules().taxonomy
    eager = ClipScorer(taxonomy, ModelOptions(str(tiny_clip), "cuda", "fp16"))
    compiled = ClipScorer(taxonomy, ModelOptions(str(tiny_clip), "cuda", "fp16", compile=True))
    for n in (4, 3):  # a second shape: the last, smaller batch of a shard
        inputs = {"pixel_values": torch.randn(n, 3, 32, 32)}
        inputs.update(eager.preprocessor.tokenize([f"text {i}" * (i + 1) for i in range(n)]))
        for a, b in zip(eager.score(inputs), compiled.score(inputs)):
            assert np.abs(a - b).max() < 1e-2


def test_vlm_judge_on_cuda_scores_like_the_cpu(tmp_path, tiny_vlms, demo_shards):
    results = {}
    for name, extra in {"cpu": ("--device", "cpu"), "cuda": ("--device", "cuda", "--precision", "fp32")}.items():
        result = run_cli(*scan_args(demo_shards[:1], tmp_path / name, tiny_vlms("llava"), "--backend", "vlm", *extra))
        assert result.exit_code == 0, result.output
        results[name] = scores(tmp_path / name)
    assert np.abs(results["cuda"][1] - results["cpu"][1]).max() < 1e-3
    assert np.abs(results["cuda"][2] - results["cpu"][2]).max() < 1e-3
