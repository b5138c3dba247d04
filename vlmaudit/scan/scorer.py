"""What the scanner asks of a scoring backend: the Scorer protocol. Backends (vlmaudit/backends/)
implement it structurally, without importing this module; the scanner, the engines and the
cascade's second stage call only what is declared here."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Scorer(Protocol):
    name: str  # the backend, as run.json names it
    stage: str  # what its rows say in decided_by (a cascade: its first stage)
    device: str  # "cpu", "cuda", "cuda:N"
    preprocessor: Any  # picklable .prepare(images, captions) -> dict of tensors, and .draft_size
    escalation: "Escalation | None"  # a second pass over each shard (the cascade), else None

    def score(self, inputs: dict) -> tuple:
        """(image_scores [n_images, C], caption_scores [n_captions, C]) float32, optionally a third
        item: extras {"image_unsafe": ..., "caption_unsafe": ..., "image_rationale": ...}."""

    def forward_only(self, inputs: dict) -> None:
        """The bare model work (benchmark baseline)."""

    def describe(self) -> dict:
        """run.json's model record: model, revision, family, device, precision."""


class Escalation(Protocol):
    """The shard-level second stage: which samples to judge again, and the judge."""

    judge: Scorer

    def escalated(self, table) -> np.ndarray:
        """Sample indices of the shard's first-stage table to judge."""
