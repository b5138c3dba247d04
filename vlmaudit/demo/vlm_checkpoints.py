"""Randomly initialised image-text-to-text checkpoints (LLaVA-1.5, LLaVA-NeXT, Qwen2-VL) saved with
save_pretrained, for offline tests, demos and benchmarks. Their answers are MEANINGLESS: they
exercise the real processor, chat template, loading and forward path of each family.

The tokenizer is a byte-level BPE (any text tokenizes) whose merges make the usual answer words
("Yes", "No", ...) single tokens, as they are in the real models' vocabularies.
"""

from __future__ import annotations

from pathlib import Path

ANSWER_WORDS = ("Yes", "No", "yes", "no", "Safe", "Unsafe", "safe", "unsafe")
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{{ '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' "
    "else message['role']) + '\n' }}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<start_of_image>' }}{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{{ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
FAMILIES = ("llava", "llava_next", "gemma3", "qwen2_vl", "llava-0.5b")


def byte_bpe(words=ANSWER_WORDS, specials=()) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level alphabet + merges building each word (with and without a leading space)."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {"<|endoftext|>": 0, **{s: i + 1 for i, s in enumerate(specials)}}
    for char in sorted(ByteLevel.alphabet()):
        vocab.setdefault(char, len(vocab))
    merges = []
    for word in words:
        pairs = [(word[:i], word[i]) for i in range(1, len(word))] + [("\u0120", word)]
        for left, right in pairs:
            if left + right not in vocab:
                merges.append((left, right))
                vocab[left + right] = len(vocab)
    return vocab, merges


def _tokenizer(specials: tuple[str, ...], **kwargs):
    from transformers import Qwen2Tokenizer

    vocab, merges = byte_bpe(specials=specials)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=4096, **kwargs)
    tokenizer.add_special_tokens({"additional_special_tokens": list(specials)})
    return tokenizer


def _text_config(vocab_size: int, hidden: int, layers: int, **extra) -> dict:
    heads = max(2, hidden // 16)
    return dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=4096,
                bos_token_id=0, eos_token_id=0, pad_token_id=0, **extra)


def build_random_vlm(out_dir: Path, family: str = "llava", hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a random image-text-to-text checkpoint of FAMILY (see FAMILIES) to OUT_DIR."""
    import torch

    builders = {"llava": _llava, "llava_next": _llava_next, "gemma3": _gemma3, "qwen2_vl": _qwen2_vl,
                "llava-0.5b": lambda h, n: _llava(h, n, real_size=True)}
    if family not in builders:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    model, processor = builders[family](hidden, layers)
    out_dir = Path(out_dir)
    model.eval().save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(f"Random-weight {family} built by vlmaudit: its answers are meaningless.\n")
    return out_dir


def _clip_vision(hidden: int, layers: int, image: int = 32, patch: int = 8) -> dict:
    return dict(model_type="clip_vision_model", hidden_size=hidden, intermediate_size=hidden * 2,
                num_hidden_layers=layers, num_attention_heads=max(2, hidden // 16), image_size=image, patch_size=patch)


def _llava(hidden: int, layers: int, real_size: bool = False):
    """real_size: LLaVA-1.5's vision tower (CLIP ViT-L/14-336, 576 image tokens) on a 0.5B-class
    LM (Qwen2-0.5B's width and depth; small vocabulary), for CPU/GPU benchmarks."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = _tokenizer(("<image>",))
    image, patch = (336, 14) if real_size else (32, 8)
    vision = (dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                   num_attention_heads=16, image_size=336, patch_size=14) if real_size else _clip_vision(hidden, layers))
    text = _text_config(len(tokenizer), hidden, layers)
    if real_size:
        text.update(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                    num_key_value_heads=2)
    config = LlavaConfig(vision_config=vision, text_config=dict(model_type="llama", **text),
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": image}, crop_size={"height": image, "width": image}),
        tokenizer=tokenizer, patch_size=patch, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE)
    return LlavaForConditionalGeneration(config), processor


def _llava_next(hidden: int, layers: int):
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessor,
                              LlavaNextProcessor)

    tokenizer = _tokenizer(("<image>",))
    config = LlavaNextConfig(vision_config=_clip_vision(hidden, layers), text_config=dict(
        model_type="llama", **_text_config(len(tokenizer), hidden, layers)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        image_grid_pinpoints=[[32, 32], [32, 64], [64, 32]])
    image_processor = LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                              image_grid_pinpoints=[[32, 32], [32, 64], [64, 32]])
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=LLAVA_TEMPLATE)
    return LlavaNextForConditionalGeneration(config), processor


def _gemma3(hidden: int, layers: int):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    specials = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tokenizer = _tokenizer(("<bos>", "<start_of_turn>", "<end_of_turn>", *specials.values()), bos_token="<bos>",
                           extra_special_tokens=specials)
    heads = max(2, hidden // 16)
    text = _text_config(len(tokenizer), hidden, layers, head_dim=hidden // heads, sliding_window=64)
    text.update(bos_token_id=tokenizer.convert_tokens_to_ids("<bos>"))
    config = Gemma3Config(
        text_config=text, mm_tokens_per_image=4,
        vision_config=dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                           num_attention_heads=heads, image_size=32, patch_size=8),
        boi_token_index=tokenizer.convert_tokens_to_ids(specials["boi_token"]),
        eoi_token_index=tokenizer.convert_tokens_to_ids(specials["eoi_token"]),
        image_token_index=tokenizer.convert_tokens_to_ids(specials["image_token"]))
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": 32, "width": 32}),
                                tokenizer=tokenizer, chat_template=GEMMA_TEMPLATE, image_seq_length=4)
    return Gemma3ForConditionalGeneration(config), processor


def _qwen2_vl(hidden: int, layers: int):
    """Needs torchvision: transformers 5.x bundles a video processor with the Qwen2-VL processor."""
    from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor)

    specials = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    tokenizer = _tokenizer(specials)
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in specials}
    heads = max(2, hidden // 16)
    half_head = hidden // heads // 2
    text = _text_config(len(tokenizer), hidden, layers,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                         "mrope_section": [half_head // 4, half_head // 4, half_head - 2 * (half_head // 4)]})
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=dict(depth=layers, embed_dim=hidden, hidden_size=hidden, num_heads=heads, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2,
                                            temporal_patch_size=2)
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_TEMPLATE)
    return Qwen2VLForConditionalGeneration(config), processor
