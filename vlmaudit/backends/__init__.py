"""Scoring backends. Each turns prepared batches into per-concept scores in [0, 1].

Every backend implements the scanner's Scorer protocol (vlmaudit/scan/scorer.py): name, stage
(its rows' decided_by), device, preprocessor (picklable; runs in DataLoader workers, so it must
not hold the model), escalation (the cascade's second stage, else None), score(inputs),
forward_only(inputs) and describe().
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("clip", "vlm", "head", "cascade")


@dataclass(frozen=True)
class BackendOptions:
    """Options beyond the model reference that only some backends use."""

    prompts: str = "unsafeconcepts"  # vlm / cascade judge: prompt file name in rules/prompts/ or a .yaml path
    rationale: bool = False  # vlm / cascade judge: explain flagged samples
    head: Path | None = None  # head backend, or cascade with a head as the first stage
    judge_model: str | None = None  # cascade: the VLM judge
    escalate_above: float | None = None  # cascade: escalate samples whose top score is >= this
    escalate_top: float | None = None  # cascade: or the top fraction of each shard


def build_backend(name: str, rules, options, extra: BackendOptions | None = None):
    """The backend NAME for these rules; every user-fixable problem raises before shards are read."""
    from vlmaudit.errors import UserError

    extra = extra or BackendOptions()
    if getattr(options, "compile", False) and name != "clip":
        raise UserError(f"--compile: supported by the clip backend only, not --backend {name}")
    if name == "clip":
        from vlmaudit.backends.stages import build_screen

        return build_screen(rules.taxonomy, options)
    if name == "vlm":
        from vlmaudit.backends.stages import build_judge

        return build_judge(rules, options, extra)
    if name == "head":
        from vlmaudit.backends.head import HeadScorer

        if extra.head is None:
            raise UserError("--backend head needs --head HEAD_DIR (a directory written by `vlmaudit train-head`)")
        return HeadScorer(rules.taxonomy, options, extra.head)
    if name == "cascade":
        from vlmaudit.backends.cascade import build_cascade

        return build_cascade(rules, options, extra)
    raise UserError(f"--backend {name}: unknown backend (available: {', '.join(BACKENDS)})")
