"""Safety-head backend: a frozen vision tower + the trained SafeVLM-style head (see safety_head.py).

Scores images only (the head is a vision classifier): P(unsafe) = 1 - P(safe category); per-concept
scores from the category and concept heads as in verdicts.py. Captions stay unscored; pair it with
the CLIP scorer in a cascade, or use the VLM judge, to score captions.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from vlmaudit.backends.verdicts import concept_scores
from vlmaudit.errors import ModelError
from vlmaudit.head.preprocess import HeadPreprocessor


class HeadScorer:
    name = stage = "head"
    escalation = None

    def __init__(self, taxonomy, options, head_dir: Path):
        from vlmaudit.head.model import load_head, read_head_config
        from vlmaudit.backends.vision import VisionTower

        self.head_dir = Path(head_dir)
        self.head_config = read_head_config(self.head_dir)
        check_taxonomy(self.head_config, taxonomy, self.head_dir)
        self.tower = VisionTower(replace(options, model=options.model or self.head_config["vision_model"]))
        self._check_features()
        self.head = load_head(self.head_dir, self.head_config).to(self.tower.device)
        self.preprocessor = HeadPreprocessor(self.tower.image_processor)
        self.concept_category = taxonomy.concept_category_index()
        self.device, self.precision = self.tower.device, "fp32"
        from vlmaudit.rulebook.coverage import Coverage

        # the concepts it saw examples of (older heads: all), images only
        self.coverage = Coverage.of(taxonomy, str(self.head_dir), self.head_config.get("trained_concepts"),
                                    ("image",)).to_json()

    def _check_features(self) -> None:
        trained, now = self.head_config["vision_revision"], self.tower.revision
        if self.tower.width != self.head_config["vision_dim"] or ("unknown" not in (trained, now) and trained != now):
            raise ModelError(f"--head {self.head_dir} was trained on {self.head_config['vision_model']}@{trained}; "
                             f"{self.tower.options.model}@{now} gives different features (drop --model)")

    def probabilities(self, pixel_values):
        """(P(unsafe) [n], per-concept scores [n, C]) for a batch of images."""
        import torch

        features = self.tower.features(pixel_values)
        with torch.inference_mode():
            concept_logits, category_logits = self.head(features)
        category = torch.softmax(category_logits.float(), -1).cpu().numpy()
        concept = torch.softmax(concept_logits.float(), -1).cpu().numpy()
        p_unsafe = 1.0 - category[:, -1]
        return p_unsafe.astype(np.float32), concept_scores(p_unsafe, category[:, :-1], self.concept_category, concept[:, :-1])

    def score(self, inputs: dict):
        if "pixel_values" not in inputs:
            return None, None, {}
        p_unsafe, scores = self.probabilities(inputs["pixel_values"])
        return scores, None, {"image_unsafe": p_unsafe}

    def forward_only(self, inputs: dict) -> None:
        import torch

        with torch.inference_mode():
            self.head(self.tower.features(inputs["pixel_values"]))

    def describe(self) -> dict:
        return {"backend": self.name, "model": str(self.head_dir), "revision": self.head_revision(),
                "family": "safety-head", "vision_model": self.tower.options.model,
                "vision_revision": self.tower.revision, "device": self.device, "precision": self.precision,
                "coverage": self.coverage}

    def head_revision(self) -> str:
        import hashlib

        from vlmaudit.head.model import WEIGHTS_FILE

        return "head-" + hashlib.sha256((self.head_dir / WEIGHTS_FILE).read_bytes()).hexdigest()[:16]


def check_taxonomy(config: dict, taxonomy, head_dir: Path) -> None:
    if config.get("concepts") != taxonomy.concept_ids or config.get("categories") != taxonomy.category_ids:
        raise ModelError(f"--head {head_dir} was trained for taxonomy {config.get('taxonomy_version')} "
                         f"({len(config.get('concepts', []))} concepts); these rules have {taxonomy.tag} "
                         f"({len(taxonomy.concepts)} concepts): retrain it or pass the matching --rules")
