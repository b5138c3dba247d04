"""Randomly initialised CLIP checkpoints saved with save_pretrained, for offline demos, tests and
benchmarks. Their scores are MEANINGLESS: they only exercise the real loading and scoring path."""

from __future__ import annotations

from pathlib import Path

SIZES = {
    # name: (vision: hidden, layers, heads, mlp, patch, image; text: hidden, layers, heads, mlp; proj)
    "tiny": (32, 2, 4, 64, 8, 32, 32, 2, 4, 64, 16),
    "vit-b-32": (768, 12, 12, 3072, 32, 224, 512, 12, 8, 2048, 512),
    "vit-l-14": (1024, 24, 16, 4096, 14, 224, 768, 12, 12, 3072, 768),
}


def byte_level_vocab() -> dict[str, int]:
    """A character-level byte-BPE vocabulary: enough to tokenize any text, no merges needed."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(ByteLevel.alphabet()):
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    return vocab


def build_random_siglip(out_dir: Path, seed: int = 0) -> Path:
    """A tiny random SigLIP (sigmoid dual encoder, logit_bias, max-length padding) with the same
    byte-level tokenizer: exercises the SigLIP family's model, processor and loading path."""
    import torch
    from transformers import CLIPTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    vocab = byte_level_vocab()
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1, **common),
        vision_config=dict(image_size=32, patch_size=8, **common),
    )
    torch.manual_seed(seed)
    processor = SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}),
                                tokenizer=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=64))
    SiglipModel(config).eval().save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return Path(out_dir)


def build_random_clip(out_dir: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write config, safetensors weights, tokenizer and image processor of a random CLIP model."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vh, vl, vn, vm, patch, image, th, tl, tn, tm, proj = SIZES[size]
    vocab = byte_level_vocab()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=th, num_hidden_layers=tl, num_attention_heads=tn,
                         intermediate_size=tm, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=vh, num_hidden_layers=vl, num_attention_heads=vn, intermediate_size=vm,
                           patch_size=patch, image_size=image),
        projection_dim=proj,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": image}, crop_size={"height": image, "width": image}),
        tokenizer=tokenizer,
    )
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(f"Random-weight CLIP ({size}) built by vlmaudit: its scores are meaningless.\n")
    return out_dir
