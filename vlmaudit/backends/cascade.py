"""Cascade: a cheap first stage (CLIP scorer, or a safety head) on every sample; the VLM judge on
the samples it escalates.

Escalation is decided per shard once the first stage has scored all of it (the shard's rows are
held in memory, ~1 KB each): every sample whose top score (image or caption) is >= --escalate-above,
or the top --escalate-top percent of the shard's scored samples. scan/escalation.py reads the
escalated samples again from the shard (only they are decoded) and judges them; their rows carry the judge's scores,
decided_by = "vlm", and the first stage's scores in screen_image_scores / screen_caption_scores.
Other rows keep the first stage's scores with decided_by = its name.
"""

from __future__ import annotations

import math

import numpy as np

from vlmaudit.errors import UserError


def build_cascade(rules, options, extra):
    from dataclasses import replace

    from vlmaudit.backends.stages import build_judge, build_screen
    from vlmaudit.backends.vlm import DEFAULT_JUDGE

    if (extra.escalate_above is None) == (extra.escalate_top is None):
        raise UserError("--backend cascade needs exactly one of --escalate-above SCORE or --escalate-top PERCENT")
    if extra.head is not None:
        from vlmaudit.backends.head import HeadScorer

        screen = HeadScorer(rules.taxonomy, options, extra.head)
    else:
        screen = build_screen(rules.taxonomy, options)
    judge = build_judge(rules, replace(options, model=extra.judge_model or DEFAULT_JUDGE, flag="--judge-model"), extra)
    return Cascade(screen, judge, extra.escalate_above, extra.escalate_top)


class Cascade:
    name = "cascade"

    def __init__(self, screen, judge, above: float | None, top_percent: float | None):
        self.screen, self.judge, self.above, self.top_percent = screen, judge, above, top_percent
        self.preprocessor, self.stage = screen.preprocessor, screen.name
        self.escalation = self  # escalated() + judge: the scanner's second stage
        self.device, self.precision = screen.device, screen.precision

    def score(self, inputs: dict):
        return self.screen.score(inputs)

    def forward_only(self, inputs: dict) -> None:
        self.screen.forward_only(inputs)

    def describe(self) -> dict:
        screen, judge = self.screen.describe(), self.judge.describe()
        rule = f"above={self.above}" if self.above is not None else f"top={self.top_percent}%"
        return {"backend": self.name, "model": screen["model"], "revision": f"{screen['revision']}+{judge['revision']}+{rule}",
                "family": screen["family"], "device": self.device, "precision": self.precision,
                "screen": screen, "judge": judge, "escalate_above": self.above, "escalate_top_percent": self.top_percent,
                "coverage": cascade_coverage(screen, judge)}

    def escalated(self, table) -> np.ndarray:
        """Sample indices to judge, from the first stage's top scores."""
        top = _top_scores(table)
        scored = ~np.isnan(top)
        index = np.asarray(table.column("sample_index").to_numpy(zero_copy_only=False))
        if self.above is not None:
            return index[scored & (np.nan_to_num(top, nan=-1.0) >= self.above)]
        count = math.ceil(self.top_percent / 100.0 * int(scored.sum()))
        order = np.lexsort((index, -np.nan_to_num(top, nan=-np.inf)))  # highest first, ties in shard order
        return np.sort(index[order[:count]])


def cascade_coverage(screen: dict, judge: dict) -> dict | None:
    """What the cascade measures: what its screen scores (a category or modality the screen cannot
    see is never escalated for, so the judge's figure for it is not a measurement of the set),
    at the coarser level of the two stages."""
    cover = screen.get("coverage")
    if not isinstance(cover, dict):
        return judge.get("coverage")
    levels = {cover.get("level"), (judge.get("coverage") or {}).get("level")}
    return {**cover, "model": f"{screen.get('model')}+{judge.get('model')}",
            "level": "category" if "category" in levels else "concept"}


def _top_scores(table) -> np.ndarray:
    image = table.column("image_top_score").to_numpy(zero_copy_only=False).astype(np.float64)
    caption = table.column("caption_top_score").to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.fmax(image, caption)  # NaN only when neither modality was scored
