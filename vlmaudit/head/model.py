"""SafeVLM's safety modules over frozen vision features (Liu et al., arXiv 2405.13581):

  safety projector  a convolutional abstractor over the patch grid (3x3 conv, GELU, 3x3 conv)
  safety tokens     K learnable vectors
  safety head       cross-attention whose queries are the safety tokens and whose keys/values are
                    [safety tokens ; projected patch features], then two linear heads:
                    concept logits (C concepts + safe) and category logits (K categories + safe)

Saved as head.safetensors + head_config.json (never pickle).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

CONFIG_FILE, WEIGHTS_FILE, FORMAT = "head_config.json", "head.safetensors", "vlmaudit-safety-head"


class SafetyHead(nn.Module):
    def __init__(self, vision_dim: int, n_concepts: int, n_categories: int, dim: int, tokens: int, heads: int):
        super().__init__()
        self.projector = nn.Sequential(nn.Conv2d(vision_dim, dim, 3, padding=1), nn.GELU(), nn.Conv2d(dim, dim, 3, padding=1))
        self.safety_tokens = nn.Parameter(torch.randn(tokens, dim) * 0.02)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.concept_logits = nn.Linear(dim, n_concepts + 1)
        self.category_logits = nn.Linear(dim, n_categories + 1)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """patches [n, P, D] on a square grid -> (concept logits [n, C+1], category logits [n, K+1]);
        the last logit of each is 'safe'."""
        n, count, width = patches.shape
        side = math.isqrt(count)
        grid = patches.transpose(1, 2).reshape(n, width, side, side)
        projected = self.projector(grid).flatten(2).transpose(1, 2)  # [n, P, dim]
        tokens = self.safety_tokens.unsqueeze(0).expand(n, -1, -1)
        memory = torch.cat([tokens, projected], dim=1)
        attended, _ = self.attention(tokens, memory, memory, need_weights=False)
        pooled = self.norm(attended + tokens).mean(dim=1)
        return self.concept_logits(pooled), self.category_logits(pooled)


def save_head(head: SafetyHead, out_dir: Path, config: dict) -> None:
    from safetensors.torch import save

    from vlmaudit.storage.localfiles import atomic_output, write_text_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_dir / WEIGHTS_FILE) as handle:  # never written through a planted symlink
        handle.write(save({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}))
    write_text_atomic(out_dir / CONFIG_FILE, json.dumps({"format": FORMAT, **config}, indent=2))


def read_head_config(head_dir: Path) -> dict:
    from vlmaudit.errors import ModelError

    path = Path(head_dir) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"--head {head_dir}: no readable {CONFIG_FILE} ({exc}); train one with `vlmaudit train-head`") from None
    if config.get("format") != FORMAT or not (Path(head_dir) / WEIGHTS_FILE).is_file():
        raise ModelError(f"--head {head_dir}: not a safety head written by `vlmaudit train-head`")
    return config


def load_head(head_dir: Path, config: dict) -> SafetyHead:
    from safetensors.torch import load_file

    head = SafetyHead(config["vision_dim"], len(config["concepts"]), len(config["categories"]),
                      config["dim"], config["tokens"], config["heads"])
    head.load_state_dict(load_file(str(Path(head_dir) / WEIGHTS_FILE)))
    return head.eval()
