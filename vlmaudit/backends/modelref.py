"""Resolve --model (hub id or local directory) and load its config safely, with clear errors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from vlmaudit.errors import ModelError


@dataclass(frozen=True)
class ModelOptions:
    model: str
    device: str = "auto"
    precision: str = "auto"
    allow_unsafe_weights: bool = False
    trust_remote_code: bool = False
    compile: bool = False  # torch.compile the model's forward (clip backend)
    flag: str = "--model"  # the option that named this model, for hints (--judge-model, --vision-model)


def load_config(ref: str, trust_remote_code: bool, flag: str = "--model"):
    from transformers import AutoConfig

    from vlmaudit.backends.hubcheck import check_hub

    check_hub(ref, flag)
    try:
        return AutoConfig.from_pretrained(ref, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(_not_available(ref, exc, flag)) from None


def _not_available(ref: str, exc: Exception, flag: str = "--model") -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "trust_remote_code" in str(exc):
        return f"model {ref!r} needs custom code from its repository; re-run with --trust-remote-code if you trust it"
    if Path(ref).exists():
        return f"model {ref!r}: not a loadable checkpoint directory ({first[:200]})"
    from vlmaudit.backends.hubcheck import offline_hint

    return f"model {ref!r} is not available: not a local directory and not in the Hugging Face cache. {offline_hint(ref, flag)}"


def from_pretrained(cls, ref: str, options: ModelOptions, sdpa: bool = False, **kwargs):
    """cls.from_pretrained with safetensors only, unless --allow-unsafe-weights. sdpa: ask for
    PyTorch's scaled_dot_product_attention kernels (flash / memory-efficient on CUDA), falling
    back to the architecture's default where it does not support them."""
    if sdpa:
        kwargs["attn_implementation"] = "sdpa"
    try:
        return _load(cls, ref, options, kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        if not options.allow_unsafe_weights and "safetensors" in str(exc).lower():
            raise ModelError(f"model {ref!r} has no safetensors weights; pickle-based weights can run code: "
                             "convert them, or pass --allow-unsafe-weights if you trust the source") from None
        raise ModelError(_not_available(ref, exc, options.flag)) from None


def _load(cls, ref: str, options: ModelOptions, kwargs: dict):
    safetensors = None if options.allow_unsafe_weights else True
    try:
        return cls.from_pretrained(ref, use_safetensors=safetensors, trust_remote_code=options.trust_remote_code, **kwargs)
    except ValueError as exc:
        if kwargs.get("attn_implementation") != "sdpa" or "sdpa" not in str(exc).lower():
            raise
    kwargs = {k: v for k, v in kwargs.items() if k != "attn_implementation"}
    return cls.from_pretrained(ref, use_safetensors=safetensors, trust_remote_code=options.trust_remote_code, **kwargs)


def attention_of(model) -> str | None:
    """The attention implementation a loaded model runs (sdpa, eager, flash_attention_2...)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def fingerprint(ref: str, config) -> str:
    """Hub commit hash when known; for a local directory a hash of its config and weight files'
    names, sizes and first/last MiB (cheap, and changes whenever the weights do)."""
    path = Path(ref)
    if not path.is_dir():
        return getattr(config, "_commit_hash", None) or _cached_commit(ref) or "unknown"
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if file.suffix in (".json", ".safetensors", ".bin", ".txt", ".model"):
            digest.update(f"{file.name}:{file.stat().st_size}".encode())
            with open(file, "rb") as handle:
                digest.update(handle.read(1 << 20))
                handle.seek(max(0, file.stat().st_size - (1 << 20)))
                digest.update(handle.read())
    return "local-" + digest.hexdigest()[:16]


def _cached_commit(ref: str) -> str | None:
    """The commit of the hub model's cached config.json (HF_CACHE/models--org--name/snapshots/COMMIT/):
    transformers 5 no longer records it on the config (4.x set config._commit_hash)."""
    import re

    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(ref, "config.json")
    except Exception:  # an id the cache layout cannot hold
        return None
    if not isinstance(cached, str):
        return None
    snapshot = Path(cached).parent
    return snapshot.name if snapshot.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", snapshot.name) else None
