"""Decode untrusted image bytes into an RGB PIL image, checking the size from the header first.

Memory budget: an image over --max-pixels is refused from its header, before any pixel is
decoded. Below that, JPEG is decoded at a reduced scale (libjpeg's draft mode) and every other
format (PNG, WebP, TIFF, GIF, BMP) is reduced by an integer factor right after decoding, before
any mode conversion, so only one full-size image exists at a time per worker and a batch holds
model-sized images only.
"""

from __future__ import annotations

import io

import numpy as np

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}  # EXIF orientation -> PIL.Image.Transpose value


class ImageTooLarge(Exception):
    pass


class ImageDecodeError(Exception):
    pass


def decode_image(data: bytes, max_pixels: int, draft_size: int | None = None):
    """Return (rgb_image, (width, height)) with EXIF orientation applied.

    Raises ImageTooLarge before decoding pixels when the header says width*height > max_pixels,
    ImageDecodeError (with the decoder's message) for empty, truncated or non-image bytes.
    """
    from PIL import Image

    if not data:
        raise ImageDecodeError("empty image member (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(f"{width}x{height} = {width * height} pixels exceeds --max-pixels {max_pixels}")
        return _to_rgb(_load_oriented(image, draft_size)), _oriented_size(image, width, height)
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    except Exception as exc:  # untrusted bytes: any decoder failure is a per-sample error
        raise ImageDecodeError(f"{type(exc).__name__}: {exc}") from exc


def _load_oriented(image, draft_size):
    from PIL import ImageOps

    if draft_size and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))  # decode at a reduced scale: much faster
    image.load()
    small = shrink(image, draft_size) if draft_size else image
    if small is image:
        return ImageOps.exif_transpose(image)
    method = TRANSPOSE.get(image.getexif().get(0x0112, 1))  # reduce() drops EXIF: orient from the original
    return small.transpose(method) if method is not None else small


def shrink(image, target: int):
    """Reduce by the largest integer factor that keeps the short side >= target (box filter;
    nearest for palette, 1-bit and 16-bit modes, which the box filter does not take)."""
    from PIL import Image

    width, height = image.size
    factor = min(width, height) // max(1, target)
    if factor < 2:
        return image
    if image.mode in ("P", "1") or image.mode.startswith("I;16"):
        return image.resize((width // factor, height // factor), Image.NEAREST)
    return image.reduce(factor)


def _oriented_size(image, width: int, height: int) -> tuple[int, int]:
    orientation = image.getexif().get(0x0112, 1) if hasattr(image, "getexif") else 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _to_rgb(image):
    from PIL import Image

    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image), mode)).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """16/32-bit integer or float grayscale -> 8 bit, scaled rather than clipped."""
    array = array.astype(np.float32)
    if mode.startswith("I;16") or (mode == "I" and array.max(initial=0) > 255):
        array = array / 257.0
    return np.clip(array, 0, 255).astype(np.uint8)
