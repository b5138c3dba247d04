"""Before a model is fetched from the Hugging Face hub: one quick, unretried look at whether the hub
answers. Unreachable and not cached: one line naming what works offline, instead of a minute of
"Retrying in Ns" lines. Unreachable but cached: the cached copy, with the hub switched off for this
process so nothing retries."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from vlmaudit.errors import ModelError
from vlmaudit.storage.location import is_url

PROBE_SECONDS = 5.0


def check_hub(ref: str, flag: str = "--model") -> None:
    """Raise ModelError when `ref` would have to come from a hub that cannot be reached."""
    from huggingface_hub import constants

    if not _is_hub_id(ref) or constants.HF_HUB_OFFLINE:
        return
    if hub_reachable(constants.ENDPOINT):
        return
    if _cached(ref):
        constants.HF_HUB_OFFLINE = True  # read by huggingface_hub and transformers at every request
        sys.stderr.write(f"note: the hub ({constants.ENDPOINT}) cannot be reached; using the cached copy of "
                         f"{ref} (set HF_HUB_OFFLINE=1 to skip this check)\n")
        return
    raise ModelError(f"model {ref!r} is not in the local Hugging Face cache and the hub ({constants.ENDPOINT}) "
                     f"cannot be reached. {offline_hint(ref, flag)}")


def offline_hint(ref: str, flag: str = "--model") -> str:
    """What to do without network, naming only flags that exist."""
    hint = (f"Offline or air-gapped: set HF_HUB_OFFLINE=1 with the model in the cache, or pass {flag} DIR "
            f"with a checkpoint downloaded elsewhere (hf download {ref} --local-dir DIR)")
    if flag == "--model":
        hint += ", or use --model opennsfw (bundled with vlmaudit[nsfw], no download)"
    return hint + "."


def _is_hub_id(ref: str) -> bool:
    from vlmaudit.backends.opennsfw import MODEL_NAME

    return bool(ref) and ref != MODEL_NAME and not Path(ref).exists() and not is_url(ref)


@functools.lru_cache(maxsize=8)
def hub_reachable(endpoint: str) -> bool:
    """One HEAD request with a short timeout and no retries; any HTTP answer counts as reachable.
    Uses the hub library's own session, so proxy settings apply as they would to the download."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=PROBE_SECONDS)
    except Exception:  # connection refused, DNS, timeout, TLS: all mean "cannot be reached"
        return False
    return True


def _cached(ref: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(ref, "config.json"), str)
    except Exception:  # an id the cache layout cannot even hold
        return False
