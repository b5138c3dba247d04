"""VLM judge: any transformers image-text-to-text model asked the alignment questions of a prompt
file (rules/prompts/), scored from next-token probabilities, no free-form generation.

Per batch and modality: one forward over the prefixes (left-padded; images expanded by the
processor), then for each question a forward over its suffix tokens reusing the prefix KV cache
(or, for families not known to support that, a full forward of prefix + suffix). The last
position's next-token distribution gives P(unsafe) (yes/no questions, averaged) and the category
(option letters). See verdicts.py for how these become per-concept scores.
"""

from __future__ import annotations

import numpy as np

from vlmaudit.backends import chat
from vlmaudit.backends.verdicts import concept_scores, option_probabilities, yes_no_unsafe
from vlmaudit.backends.device import autocast_context, resolve_device, resolve_precision, to_device, weight_dtype
from vlmaudit.errors import ModelError
from vlmaudit.backends.modelref import ModelOptions, fingerprint, from_pretrained, load_config
from vlmaudit.rulebook.prompts import PromptSet, category_options

DEFAULT_JUDGE = "llava-hf/llava-1.5-7b-hf"
KV_REUSE_FAMILIES = {"llava", "llava_next", "llava_onevision", "gemma3"}
MAX_CAPTION_TOKENS = 256
RATIONALE_TOKENS = 64


class VlmPreprocessor:
    """Runs in DataLoader workers: images -> processor inputs of the image prefix; captions -> the
    caption prefix (text only, or with a blank image), both left-padded."""

    def __init__(self, processor, layout: chat.ChatLayout, prompts: PromptSet):
        self.processor, self.layout = processor, layout
        self.caption_context, self.blank_caption_image = prompts.caption_context, prompts.caption_image == "blank"
        self.draft_size = _draft_size(processor.image_processor)

    def prepare(self, images: list, captions: list[str]) -> dict:
        out = {}
        if images:
            out["image"] = self._encode([self.layout.image_head] * len(images), [[im.convert("RGB")] for im in images])
        if captions:
            blank = [[self._blank()] for _ in captions] if self.blank_caption_image else None
            out["caption"] = self._encode([self.caption_head(c) for c in captions], blank)
        return out

    def caption_head(self, caption: str) -> str:
        head = self.layout.image_head if self.blank_caption_image else self.layout.text_head
        return head + self.caption_context.format(caption=self._clip(caption)) + "\n"

    def _clip(self, caption: str) -> str:
        ids = self.processor.tokenizer(caption, add_special_tokens=False)["input_ids"]
        return caption if len(ids) <= MAX_CAPTION_TOKENS else self.processor.tokenizer.decode(ids[:MAX_CAPTION_TOKENS])

    def _blank(self):
        from PIL import Image

        return Image.new("RGB", (self.draft_size, self.draft_size), "white")

    def _encode(self, texts: list[str], images) -> dict:
        enc = self.processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt",
                             add_special_tokens=self.layout.add_special_tokens)
        return dict(enc)


def _draft_size(image_processor) -> int:
    size = getattr(image_processor, "size", None) or {}
    edge = size.get("shortest_edge") or size.get("height") or 336
    return int(edge) if edge <= 2048 else 448  # Qwen2-VL's "shortest_edge" is a pixel count


class VlmJudge:
    name = stage = "vlm"
    escalation = None

    def __init__(self, taxonomy, options: ModelOptions, prompts: PromptSet, thresholds=None, rationale: bool = False):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.options, self.prompts, self.thresholds, self.rationale = options, prompts, thresholds, rationale
        self.config = load_config(options.model, options.trust_remote_code, options.flag)
        _check_image_text_to_text(self.config, options.model)
        processor = from_pretrained(AutoProcessor, options.model, options)
        self.layout = chat.chat_layout(processor, options.model)
        self._build_questions(processor.tokenizer, taxonomy)
        self.preprocessor = VlmPreprocessor(processor, self.layout, prompts)
        self.tokenizer = processor.tokenizer
        self.device = resolve_device(options.device)
        self.precision = _vlm_precision(options.precision, self.device)
        model = from_pretrained(AutoModelForImageTextToText, options.model, options, sdpa=True,
                                dtype=weight_dtype(self.device, self.precision))
        self.model = model.to(self.device).eval()
        self.kv_reuse = self.config.model_type in KV_REUSE_FAMILIES
        self.concept_category = taxonomy.concept_category_index()
        from vlmaudit.rulebook.coverage import Coverage

        # the prompts ask which category (every one is an option), of images and of captions: one
        # figure per category, its concepts share it
        self.coverage = Coverage.of(taxonomy, options.model, None, tuple(self.suffixes), level="category").to_json()

    def _build_questions(self, tokenizer, taxonomy) -> None:
        """Suffix token ids per question and the answer-token ids; every check runs before the
        weights load, so a bad prompt file fails fast."""
        p, layout = self.prompts, self.layout
        ref, path = self.options.model, p.path
        self.safe_ids = chat.checked_answer_ids(tokenizer, p.safe_answers, layout.tail + p.prefill, "answers.safe", path, ref)
        self.unsafe_ids = chat.checked_answer_ids(tokenizer, p.unsafe_answers, layout.tail + p.prefill, "answers.unsafe", path, ref)
        if set(self.safe_ids) & set(self.unsafe_ids):
            raise ModelError(f"{path}: answers.safe and answers.unsafe share a token for {ref!r}")
        options_text, letters = category_options([c.name for c in taxonomy.categories], p.none_option)
        self.letter_ids = [chat.checked_answer_ids(tokenizer, [letter], layout.tail, "category_question", path, ref)
                           for letter in letters]
        sample_caption = p.caption_context.format(caption="a photo") + "\n"
        heads = {"image": layout.image_head,
                 "caption": (layout.image_head if p.caption_image == "blank" else layout.text_head) + sample_caption}
        questions = {"image": (p.image_questions, p.category_image), "caption": (p.caption_questions, p.category_caption)}
        self.suffixes = {}
        for modality, (yes_no, category) in questions.items():
            ids = [chat.suffix_ids(tokenizer, layout, heads[modality], q, p.prefill) for q in yes_no]
            ids.append(chat.suffix_ids(tokenizer, layout, heads[modality], category.format(options=options_text)))
            self.suffixes[modality] = ids
        self.rationale_suffix = chat.suffix_ids(tokenizer, layout, layout.image_head, p.rationale_question)

    # ---- scoring -------------------------------------------------------------------------
    def score(self, inputs: dict):
        import torch

        extras, out = {}, {}
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            for modality in ("image", "caption"):
                if modality not in inputs:
                    out[modality] = None
                    continue
                prefix = self._to_device(inputs[modality])
                scores, p_unsafe = self._judge(prefix, self.suffixes[modality])
                out[modality], extras[f"{modality}_unsafe"] = scores, p_unsafe
                if self.rationale:
                    extras[f"{modality}_rationale"] = self._explain(prefix, scores, modality)
        return out["image"], out["caption"], extras

    def _judge(self, prefix: dict, suffixes: list[list[int]]):
        logprobs = self.next_token_logprobs(prefix, suffixes)
        p_unsafe = torch_mean([yes_no_unsafe(lp, self.safe_ids, self.unsafe_ids) for lp in logprobs[:-1]])
        options = option_probabilities(logprobs[-1], self.letter_ids).cpu().numpy()
        return concept_scores(p_unsafe, options[:, :-1], self.concept_category), p_unsafe.astype(np.float32)

    def next_token_logprobs(self, prefix: dict, suffixes: list[list[int]]) -> list:
        """For each suffix: log-probabilities [n, vocab] of the token after prefix + suffix."""
        if self.kv_reuse:
            return self._with_cache(prefix, suffixes)
        return [self._last_logprobs(self.model(**_joined(prefix, ids), logits_to_keep=1)) for ids in suffixes]

    def _with_cache(self, prefix: dict, suffixes: list[list[int]]) -> list:
        cache = self.model(**prefix, use_cache=True, logits_to_keep=1).past_key_values
        for layer in getattr(cache, "layers", []):
            getattr(layer, "activate_past_recording", lambda: None)()
        out, length = [], prefix["input_ids"].shape[1]
        for ids in suffixes:
            step = _suffix_step(prefix, ids)
            out.append(self._last_logprobs(self.model(**step, past_key_values=cache, use_cache=True, logits_to_keep=1)))
            _rewind(cache, len(ids), length)
        return out

    @staticmethod
    def _last_logprobs(output):
        import torch

        return torch.log_softmax(output.logits[:, -1, :].float(), dim=-1)

    def _explain(self, prefix: dict, scores: np.ndarray, modality: str) -> list:
        """A short generated explanation for flagged rows only (None elsewhere)."""
        limits = getattr(self.thresholds, modality) if self.thresholds is not None else np.full(scores.shape[1], 0.5)
        rows = np.flatnonzero((scores >= limits[None, :]).any(axis=1))
        texts: list = [None] * scores.shape[0]
        if rows.size == 0:
            return texts
        inputs = _joined(_select_rows(prefix, rows), self.rationale_suffix)
        generated = self.model.generate(**inputs, max_new_tokens=RATIONALE_TOKENS, do_sample=False)
        new = generated[:, inputs["input_ids"].shape[1]:]
        for row, text in zip(rows, self.tokenizer.batch_decode(new, skip_special_tokens=True)):
            texts[row] = text.strip()
        return texts

    def image_prefix(self, images: list) -> dict:
        """Model inputs (on the device) of the image prefix for these PIL images."""
        return self._to_device(self.preprocessor.prepare(images, [])["image"])

    def question_ids(self, question: str, prefill: bool = True) -> list[int]:
        """Suffix token ids of a question asked after the image prefix (with the prompt file's
        assistant prefill for yes/no questions; without it for option letters)."""
        return chat.suffix_ids(self.tokenizer, self.layout, self.layout.image_head, question,
                               self.prompts.prefill if prefill else "")

    def _to_device(self, inputs: dict) -> dict:
        import torch

        out = {}
        for key, value in inputs.items():
            value = to_device(value, self.device)
            out[key] = value.to(self.model.dtype) if torch.is_floating_point(value) else value
        return out

    def forward_only(self, inputs: dict) -> None:
        """The bare model work on prepared inputs (benchmark baseline): the same forwards, no
        probability reading, no rows."""
        import torch

        with torch.inference_mode(), autocast_context(self.device, self.precision):
            for modality in ("image", "caption"):
                if modality in inputs:
                    self.next_token_logprobs(self._to_device(inputs[modality]), self.suffixes[modality])

    def describe(self) -> dict:
        if not hasattr(self, "_description"):
            self._description = {
                "backend": self.name, "model": self.options.model,
                "revision": fingerprint(self.options.model, self.config), "family": self.config.model_type,
                "device": self.device, "precision": self.precision, "prompts": str(self.prompts.path.name),
                "kv_cache_reuse": self.kv_reuse, "rationale": self.rationale, "coverage": self.coverage,
            }
        return dict(self._description)


def torch_mean(tensors: list) -> np.ndarray:
    import torch

    return torch.stack(tensors).mean(0).cpu().numpy()


def _joined(prefix: dict, suffix: list[int]) -> dict:
    """prefix + the same suffix on every row (attention mask and token types extended)."""
    import torch

    ids = prefix["input_ids"]
    extra = torch.tensor(suffix, dtype=ids.dtype, device=ids.device).expand(ids.shape[0], -1)
    out = dict(prefix)
    out["input_ids"] = torch.cat([ids, extra], dim=1)
    out["attention_mask"] = torch.cat([prefix["attention_mask"], torch.ones_like(extra)], dim=1)
    if "token_type_ids" in prefix:
        out["token_type_ids"] = torch.cat([prefix["token_type_ids"], torch.zeros_like(extra)], dim=1)
    return out


def _suffix_step(prefix: dict, suffix: list[int]) -> dict:
    """Inputs for the suffix alone, on top of a cached prefix."""
    joined = _joined({k: prefix[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in prefix}, suffix)
    length = prefix["input_ids"].shape[1]
    step = {"input_ids": joined["input_ids"][:, length:], "attention_mask": joined["attention_mask"]}
    if "token_type_ids" in joined:
        step["token_type_ids"] = joined["token_type_ids"][:, length:]
    return step


def _rewind(cache, suffix_len: int, prefix_len: int) -> None:
    """Drop the suffix from the cache (transformers 5 crops by a negative count, 4.x to a length)."""
    try:
        cache.crop(-suffix_len)
    except ValueError:
        cache.crop(prefix_len)


def _select_rows(inputs: dict, rows: np.ndarray) -> dict:
    """Rows of a batch. Qwen2-VL packs all images' patches in one tensor: split it by image_grid_thw."""
    import torch

    index = torch.as_tensor(rows, device=inputs["input_ids"].device)
    n = inputs["input_ids"].shape[0]
    out = {k: v[index] for k, v in inputs.items() if v.shape[0] == n and k != "pixel_values"}
    pixels = inputs.get("pixel_values")
    if pixels is not None and "image_grid_thw" in inputs:
        sizes = inputs["image_grid_thw"].prod(-1).tolist()
        out["pixel_values"] = torch.cat([torch.split(pixels, sizes)[i] for i in rows.tolist()])
    elif pixels is not None:
        out["pixel_values"] = pixels[index]
    return out


def _check_image_text_to_text(config, ref: str) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise ModelError(f"model {ref!r} is a {config.model_type!r} model, not an image-text-to-text (chat VLM) "
                         "model; the vlm backend needs one, e.g. llava-hf/llava-1.5-7b-hf")


def _vlm_precision(precision: str, device: str) -> str:
    """auto on CUDA: bf16 where supported (LLM activations overflow fp16 more often), else fp16."""
    import torch

    if precision == "auto" and device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return resolve_precision(precision, device)
