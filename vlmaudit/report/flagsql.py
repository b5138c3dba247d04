"""Concept flags as DuckDB SQL: per row, the sorted list of (1-based) concept indices flagged in
one modality, from the score lists (thresholds or a policy) or from the stored flag columns.

The modality rule itself lives in rulebook.policy.rule_parts; this module only renders it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlmaudit.report.engine import bools, floats, ints, texts
from vlmaudit.rulebook.policy import rule_parts

SIDES = ("image", "caption")
EMPTY = "[]::INTEGER[]"


@dataclass
class Rules:
    """Per concept: a threshold per modality, which modalities the rule looks at, whether it needs
    all of them, and whether its flags count (the view's concepts, a policy's non-keep rules)."""

    threshold: dict  # side -> float32 [C]
    uses: dict  # side -> bool [C]
    needs_both: np.ndarray
    counted: np.ndarray

    @classmethod
    def from_thresholds(cls, thr_image, thr_caption, counted) -> "Rules":
        every = np.ones(len(counted), bool)
        return cls({"image": thr_image, "caption": thr_caption}, {"image": every, "caption": every},
                   ~every, np.asarray(counted, bool))

    @classmethod
    def from_policy(cls, policy, counted) -> "Rules":
        uses_image, uses_caption, needs_both = np.array([rule_parts(m) for m in policy.modality], bool).reshape(-1, 3).T
        return cls({"image": policy.threshold, "caption": policy.threshold},
                   {"image": uses_image, "caption": uses_caption}, needs_both, np.asarray(counted, bool))


def hit(rules: Rules, side: str, index: str) -> str:
    """SQL: the side's score of concept `index` reaches its threshold (never true when unscored)."""
    return f"coalesce({side}_scores[{index}] >= {floats(rules.threshold[side])}[{index}], false)"


def _filtered(indices, condition: str) -> str | None:
    return f"list_filter({ints(np.asarray(indices) + 1)}, lambda i: {condition})" if len(indices) else None


def _concat(parts) -> str:
    parts = [p for p in parts if p]
    if not parts:
        return EMPTY
    return parts[0] if len(parts) == 1 else f"list_sort(flatten([{', '.join(parts)}]))"


def side_flags(rules: Rules, side: str) -> str:
    """SQL list of the counted concepts flagged on this side: the side's score reaches the
    threshold, and the other side's too where the rule needs both."""
    other = SIDES[1 - SIDES.index(side)]
    own = rules.counted & rules.uses[side]
    paired = rules.needs_both & rules.uses[other]
    return _concat([_filtered(np.flatnonzero(own & ~paired), hit(rules, side, "i")),
                    _filtered(np.flatnonzero(own & paired), f"{hit(rules, side, 'i')} AND {hit(rules, other, 'i')}")])


def fired(rules: Rules) -> str:
    """SQL list of every concept whose rule fires (the filter's reasons), counted or not."""
    img, cap, both = rules.uses["image"], rules.uses["caption"], rules.needs_both
    return _concat([
        _filtered(np.flatnonzero(img & ~cap), hit(rules, "image", "i")),
        _filtered(np.flatnonzero(cap & ~img), hit(rules, "caption", "i")),
        _filtered(np.flatnonzero(img & cap & both), f"{hit(rules, 'image', 'i')} AND {hit(rules, 'caption', 'i')}"),
        _filtered(np.flatnonzero(img & cap & ~both), f"({hit(rules, 'image', 'i')} OR {hit(rules, 'caption', 'i')})"),
    ])


def stored_flags(side: str, concepts: list[str], counted) -> str:
    """SQL list of the counted concepts in the side's stored `*_flagged_concepts` column."""
    index = f"list_transform({side}_flagged_concepts, lambda c: list_position({texts(concepts)}, c)::INTEGER)"
    return f"list_sort(list_filter({index}, lambda i: coalesce({bools(counted)}[i], false)))"
