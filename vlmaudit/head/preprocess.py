"""What the safety head's vision tower takes: pixel values from its image processor. Picklable
(runs in DataLoader workers); shared by the head backend and distillation."""

from __future__ import annotations


class HeadPreprocessor:
    def __init__(self, image_processor):
        self.image_processor = image_processor
        size = getattr(image_processor, "size", None) or {}
        self.draft_size = int(size.get("shortest_edge") or size.get("height") or 224)

    def prepare(self, images: list, captions: list[str]) -> dict:
        if not images:
            return {}
        return {"pixel_values": self.image_processor(images=images, return_tensors="pt")["pixel_values"]}
