"""Scoring backends. Each turns prepared batches into per-concept scores in [0, 1].

Interface (duck-typed, see ClipScorer):
  preprocessor -> picklable object with .prepare(images, captions) -> dict of tensors; runs in
                  DataLoader workers, so it must not hold the model
  score(inputs) -> (image_scores[n_images, C], caption_scores[n_captions, C]) float32 numpy
  describe()    -> dict for run.json (model id, revision, family, device, precision)
"""

from __future__ import annotations

BACKENDS = ("clip",)


def build_backend(name: str, taxonomy, options):
    if name == "clip":
        from vlmaudit.backends.clip import ClipScorer

        return ClipScorer(taxonomy, options)
    from vlmaudit.errors import UserError

    raise UserError(f"--backend {name}: unknown backend (available: {', '.join(BACKENDS)})")
