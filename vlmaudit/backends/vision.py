"""A frozen vision tower (CLIP/SigLIP, or a VLM's own) producing patch features on a square grid,
average-pooled to at most MAX_GRID x MAX_GRID so cached features stay small."""

from __future__ import annotations

import math

from vlmaudit.backends.device import resolve_device, to_device
from vlmaudit.errors import ModelError
from vlmaudit.backends.modelref import ModelOptions, fingerprint, from_pretrained, load_config

MAX_GRID = 16
DUAL_ENCODERS = ("clip", "siglip", "siglip2", "chinese_clip", "altclip", "metaclip_2")
VISION_ONLY = ("clip_vision_model", "siglip_vision_model", "siglip2_vision_model")


class VisionTower:
    def __init__(self, options: ModelOptions):
        from transformers import AutoImageProcessor

        self.options = options
        self.config = load_config(options.model, options.trust_remote_code, options.flag)
        self.device = resolve_device(options.device)
        self.model = self._load().to(self.device).eval().requires_grad_(False)
        self.image_processor = from_pretrained(AutoImageProcessor, options.model, options)
        self.revision = fingerprint(options.model, self.config)

    def _load(self):
        from transformers import AutoModel, AutoModelForImageTextToText
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        kind = self.config.model_type
        if kind in DUAL_ENCODERS:
            return from_pretrained(AutoModel, self.options.model, self.options, sdpa=True).vision_model
        if kind in VISION_ONLY:
            return from_pretrained(AutoModel, self.options.model, self.options, sdpa=True)
        if kind in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            vlm = from_pretrained(AutoModelForImageTextToText, self.options.model, self.options, sdpa=True)
            tower = getattr(getattr(vlm, "model", vlm), "vision_tower", None)
            if tower is not None:
                return tower
        raise ModelError(f"model {self.options.model!r} ({kind}) has no CLIP/SigLIP-style vision tower to put a "
                         "safety head on; use a CLIP or SigLIP checkpoint, or a LLaVA-style VLM")

    def features(self, pixel_values):
        """[n, P, D] patch features (CLS dropped), pooled to at most MAX_GRID^2 patches."""
        import torch

        with torch.inference_mode():
            hidden = self.model(pixel_values=to_device(pixel_values, self.device)).last_hidden_state.float()
        return pool_grid(hidden)

    @property
    def width(self) -> int:
        config = getattr(self.model, "config", None)
        return int(config.hidden_size)


def pool_grid(hidden):
    """Drop a CLS token if present (P = side^2 + 1), then average-pool the grid to <= MAX_GRID."""
    import torch

    count = hidden.shape[1]
    if math.isqrt(count) ** 2 != count and math.isqrt(count - 1) ** 2 == count - 1:
        hidden = hidden[:, 1:]
        count -= 1
    side = math.isqrt(count)
    if side * side != count:
        raise ModelError(f"vision tower gives {count} patch tokens, not a square grid")
    if side <= MAX_GRID:
        return hidden
    grid = hidden.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], side, side)
    pooled = torch.nn.functional.adaptive_avg_pool2d(grid, MAX_GRID)
    return pooled.flatten(2).transpose(1, 2)
