"""Known-content hashes of every image, computed where the image already is (decoding workers):
SHA-256 and MD5 of the bytes as stored, and Meta's PDQ (256 bits + quality 0-100) of the decoded
pixels, through the `pdqhash` bindings of the reference C++ (the `hashes` extra). Without
pdqhash the exact digests are still computed and PDQ stays null."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


PDQ_MIN_SIDE = 512  # decode at least this short side when hashing: JPEG draft mode below it moves PDQ bits


def hashing_draft(model_draft: int | None, hashes: bool) -> int | None:
    """The draft size to decode at: the model's, raised to PDQ_MIN_SIDE when PDQ is computed
    (measured on scikit-image photos: within 12 bits of the full-resolution hash, vs up to 26 at 32-224 px)."""
    if not hashes or model_draft is None:
        return model_draft
    return max(model_draft, PDQ_MIN_SIDE)


@dataclass
class ImageHashes:
    sha256: bytes | None = None
    md5: bytes | None = None
    pdq: bytes | None = None  # 32 bytes, big-endian: .hex() is ThreatExchange's hex form
    pdq_quality: int | None = None


def byte_digests(data: bytes) -> tuple[bytes, bytes]:
    return hashlib.sha256(data).digest(), hashlib.md5(data, usedforsecurity=False).digest()


def pdq_available() -> bool:
    try:
        import pdqhash  # noqa: F401
    except ImportError:
        return False
    return True


def pdq_hash(rgb_image) -> tuple[bytes | None, int | None]:
    """PDQ of an RGB PIL image: (32 bytes, quality), or (None, None) without pdqhash."""
    try:
        import pdqhash
    except ImportError:
        return None, None
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.asarray(rgb_image, dtype=np.uint8)))
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes(), int(quality)
