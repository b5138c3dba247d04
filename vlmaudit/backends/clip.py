"""Zero-shot CLIP/SigLIP scorer: images and captions against concept prompt embeddings.

score(x, c) = sigmoid(s_c - log(mean_j exp(s_safe_j))), with s = logit_scale * cos(x, prompt)
  s_c: similarity to concept c's prompt-ensemble embedding (mean of its normalised prompts)
  s_safe_j: similarity to each benign prompt of the taxonomy
i.e. the probability of "concept c" against "benign content" in a two-way softmax. The same
formula scores an image (image-text similarity) and a caption (text-text similarity).
"""

from __future__ import annotations

import math

import numpy as np

from vlmaudit.backends.device import (autocast_context, compiled, resolve_device, resolve_precision, to_device,
                                     weight_dtype)
from vlmaudit.errors import ModelError
from vlmaudit.rulebook.coverage import Coverage
from vlmaudit.backends.modelref import ModelOptions, fingerprint, from_pretrained, load_config

SUPPORTED_TYPES = ("clip", "siglip", "siglip2", "chinese_clip", "altclip", "metaclip_2")

DEFAULT_MODEL = "openai/clip-vit-large-patch14"


class ClipPreprocessor:
    """Runs in DataLoader workers: PIL images -> pixel_values, captions -> token ids."""

    def __init__(self, processor, max_text_len: int, pad_to_max: bool):
        self.image_processor, self.tokenizer = processor.image_processor, processor.tokenizer
        self.max_text_len, self.pad_to_max = max_text_len, pad_to_max
        size = getattr(self.image_processor, "size", None) or {}
        self.draft_size = int(size.get("shortest_edge") or size.get("height") or 224)

    def prepare(self, images: list, captions: list[str]) -> dict:
        out = {}
        if images:
            out["pixel_values"] = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        if captions:
            out.update(self.tokenize(captions))
        return out

    def tokenize(self, texts: list[str]) -> dict:
        padding = "max_length" if self.pad_to_max else True
        enc = self.tokenizer(texts, padding=padding, truncation=True, max_length=self.max_text_len, return_tensors="pt")
        return {k: enc[k] for k in ("input_ids", "attention_mask") if k in enc}


class ClipScorer:
    name = stage = "clip"
    escalation = None

    def __init__(self, taxonomy, options: ModelOptions):
        import torch
        from transformers import AutoModel, AutoProcessor

        self.options = options
        self.config = load_config(options.model, options.trust_remote_code, options.flag)
        if self.config.model_type not in SUPPORTED_TYPES:
            raise ModelError(f"model {options.model!r} is a {self.config.model_type!r} model; the clip backend needs "
                             f"a dual encoder ({', '.join(SUPPORTED_TYPES)})")
        self.device = resolve_device(options.device)
        self.precision = resolve_precision(options.precision, self.device)
        model = from_pretrained(AutoModel, options.model, options, sdpa=True,
                                dtype=weight_dtype(self.device, self.precision))
        self.model = model.to(self.device).eval()
        self.encode_image, self.encode_text = self.model.get_image_features, self.model.get_text_features
        if options.compile:
            self.encode_image, self.encode_text = compiled(self.encode_image), compiled(self.encode_text)
        processor = from_pretrained(AutoProcessor, options.model, options)
        self.preprocessor = ClipPreprocessor(processor, self._max_text_len(processor), self._is_siglip())
        with torch.inference_mode():
            self.concepts = self._embed_concepts(taxonomy)
            self.safe = self._embed_texts(list(taxonomy.safe_prompts))
            self.scale = float(self.model.logit_scale.exp().float())
        self.coverage = Coverage.of(taxonomy, options.model).to_json()  # every concept, image and caption

    def _is_siglip(self) -> bool:
        return self.config.model_type.startswith("siglip")

    def _max_text_len(self, processor) -> int:
        text_cfg = getattr(self.config, "text_config", self.config)
        limits = [getattr(text_cfg, "max_position_embeddings", 77), getattr(processor.tokenizer, "model_max_length", 77)]
        return int(min(v for v in limits if isinstance(v, int) and v > 0))

    def _embed_texts(self, texts: list[str], batch: int = 256):
        import torch

        chunks = []
        for start in range(0, len(texts), batch):
            enc = self.preprocessor.tokenize(texts[start:start + batch])
            chunks.append(self._text_features(enc))
        return torch.cat(chunks)

    def _embed_concepts(self, taxonomy):
        import torch

        rows = []
        for concept in taxonomy.concepts:
            prompts = self._embed_texts(taxonomy.prompts_for(concept))
            rows.append(torch.nn.functional.normalize(prompts.mean(0), dim=-1))
        return torch.stack(rows)

    def _features(self, fn, inputs):
        import torch

        inputs = {k: to_device(v, self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with autocast_context(self.device, self.precision):
            out = fn(**inputs)
        features = getattr(out, "pooler_output", out)
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def _text_features(self, enc):
        return self._features(self.encode_text, enc)

    def _image_features(self, pixel_values):
        return self._features(self.encode_image, {"pixel_values": pixel_values})

    def _scores(self, features) -> np.ndarray:
        import torch

        concept = self.scale * features @ self.concepts.T
        safe = torch.logsumexp(self.scale * features @ self.safe.T, dim=-1, keepdim=True) - math.log(len(self.safe))
        return torch.sigmoid(concept - safe).cpu().numpy().astype(np.float32)

    def score(self, inputs: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
        import torch

        with torch.inference_mode():
            image = self._scores(self._image_features(inputs["pixel_values"])) if "pixel_values" in inputs else None
            text = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
            caption = self._scores(self._text_features(text)) if text else None
        return image, caption

    def forward_only(self, inputs: dict) -> None:
        """The bare model forward on prepared inputs (benchmark baseline)."""
        import torch

        with torch.inference_mode():
            self._image_features(inputs["pixel_values"])
            self._text_features({k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs})

    def describe(self) -> dict:
        if not hasattr(self, "_description"):
            self._description = {
                "backend": self.name, "model": self.options.model,
                "revision": fingerprint(self.options.model, self.config), "family": self.config.model_type,
                "device": self.device, "precision": self.precision, "coverage": self.coverage,
            }
        return dict(self._description)
