"""Batched JPEG decoding on the GPU (--decode gpu): nvJPEG through torchvision.io.decode_jpeg.

Split of work: DataLoader workers read each JPEG's header only (format, mode, EXIF orientation,
size against --max-pixels) and pass plain baseline/progressive RGB or grey JPEGs on as bytes
(`defer_jpeg`); everything else (PNG, WebP, CMYK, rotated, huge or extreme-aspect JPEGs) takes the
CPU path of imaging.py as before. In the main process `GpuJpegDecoder.complete` decodes a batch's
deferred JPEGs in one call on the device, resizes / crops / normalises them there as the model's
image processor would (CLIP and SigLIP processors), and decodes any JPEG the GPU rejects on the CPU
under the same pixel budget, so every sample still becomes a row.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from vlmaudit.errors import UserError
from vlmaudit.schema import SampleStatus

DECODE_MODES = ("auto", "cpu", "gpu")
GPU_PROCESSORS = tuple(f"{family}ImageProcessor{kind}" for family in ("CLIP", "Siglip") for kind in ("", "Fast", "Pil"))
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes
FALLBACK_NOTE = "gpu_decode_failed_cpu_fallback"


# ---- choosing the mode (main process, before any shard is read) ------------------------------
def resolve_decode(mode: str, backend) -> str:
    """cpu or gpu. auto: gpu when the model runs on CUDA, its image processor is one we can run on
    the GPU and torchvision imports; gpu insists and says why it cannot."""
    if mode not in DECODE_MODES:
        raise UserError(f"--decode {mode}: expected one of {', '.join(DECODE_MODES)}")
    if mode == "cpu":
        return "cpu"
    problem = gpu_decode_problem(backend)
    if problem is None:
        return "gpu"
    if mode == "gpu":
        raise UserError(f"--decode gpu: {problem} (use --decode cpu or auto)")
    return "cpu"


def gpu_decode_problem(backend) -> str | None:
    if not str(backend.device).startswith("cuda"):
        return "the model does not run on a CUDA device"
    if transform_for(backend.preprocessor) is None:
        return f"the {backend.name} backend's image processor cannot run on the GPU (CLIP/SigLIP processors only)"
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        return f"torchvision's decode_jpeg is not importable ({type(exc).__name__}: {str(exc)[:120]})"
    return None


# ---- worker side: header only ---------------------------------------------------------------
def defer_jpeg(data: bytes, max_pixels: int, max_aspect: float) -> tuple[int, int] | None:
    """(width, height) when DATA is a JPEG the GPU path takes, else None (the CPU path decides,
    with its own errors). Reads the header only; never decodes pixels."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data), formats=("JPEG",))
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    except Exception:
        return None
    if image.mode not in ("RGB", "L") or orientation != 1 or not 0 < width * height <= max_pixels:
        return None
    if max(width, height) > max_aspect * min(width, height):
        return None
    return width, height


# ---- main process: decode + preprocess on the device ----------------------------------------
@dataclass(frozen=True)
class PixelTransform:
    """The image processor's resize / center crop / rescale / normalise, on uint8 CHW tensors."""

    size: dict
    resample: str
    crop: tuple[int, int] | None
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, image):
        import torch

        pixels = image.float()[None]
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        height, width = self._resized(pixels.shape[2], pixels.shape[3])
        if (height, width) != tuple(pixels.shape[2:]):
            pixels = torch.nn.functional.interpolate(pixels, size=(height, width), mode=self.resample,
                                                     antialias=self.resample != "nearest")
            pixels = pixels.clamp(0, 255).round()  # the CPU path resizes uint8 images
        if self.crop:
            pixels = _center_crop(pixels, *self.crop)
        mean = torch.tensor(self.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, 3, 1, 1)
        return ((pixels * self.scale - mean) / std)[0]

    def _resized(self, height: int, width: int) -> tuple[int, int]:
        if "shortest_edge" in self.size:
            edge = self.size["shortest_edge"]
            if height <= width:
                return edge, int(edge * width / height)
            return int(edge * height / width), edge
        return self.size["height"], self.size["width"]


def _center_crop(pixels, crop_height: int, crop_width: int):
    import torch

    height, width = pixels.shape[2:]
    if height < crop_height or width < crop_width:  # pad like the image processors do
        pad_h, pad_w = max(0, crop_height - height), max(0, crop_width - width)
        pixels = torch.nn.functional.pad(pixels, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        height, width = pixels.shape[2:]
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    return pixels[:, :, top:top + crop_height, left:left + crop_width]


def transform_for(preprocessor) -> PixelTransform | None:
    """The GPU equivalent of PREPROCESSOR's image processor, or None if we have none."""
    processor = getattr(preprocessor, "image_processor", None)
    if type(processor).__name__ not in GPU_PROCESSORS or not getattr(processor, "do_resize", True):
        return None
    size = dict(processor.size)
    if "shortest_edge" not in size and not {"height", "width"} <= set(size):
        return None
    crop = None
    if getattr(processor, "do_center_crop", False):
        crop = (processor.crop_size["height"], processor.crop_size["width"])
    resample = _resample(getattr(processor, "resample", None))
    scale = processor.rescale_factor if getattr(processor, "do_rescale", True) else 1.0
    normalise = getattr(processor, "do_normalize", True)
    mean = tuple(processor.image_mean) if normalise else (0.0, 0.0, 0.0)
    std = tuple(processor.image_std) if normalise else (1.0, 1.0, 1.0)
    return PixelTransform(size, resample, crop, float(scale), mean, std)


def _resample(value) -> str:
    """PIL resample code (0 nearest, 2 bilinear, 3 bicubic) or a torchvision InterpolationMode."""
    try:
        return RESAMPLE.get(int(value), "bicubic")
    except (TypeError, ValueError):
        name = str(getattr(value, "value", value)).lower()
        return name if name in RESAMPLE.values() else "bicubic"


def torchvision_decoder(device: str):
    """Batched nvJPEG decode of a list of JPEG byte strings into uint8 RGB CHW tensors on DEVICE."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(blobs: list[bytes]) -> list:
        tensors = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)

    return decode


class GpuJpegDecoder:
    """Completes batches whose JPEGs the workers deferred (PreparedBatch.extra["jpeg"])."""

    def __init__(self, preprocessor, device: str, max_pixels: int, decode_batch=None):
        self.preprocessor, self.device, self.max_pixels = preprocessor, device, max_pixels
        self.transform = transform_for(preprocessor)
        self.decode_batch = decode_batch or torchvision_decoder(device)

    def complete(self, batch) -> None:
        """Decode the batch's deferred JPEGs, append their pixels to pixel_values and point their
        rows at them; a JPEG the device cannot decode is decoded on the CPU, or recorded as a
        decode_error. Whatever else fails here (e.g. out of GPU memory) costs these rows, not the run."""
        deferred = batch.extra.pop("jpeg", None)
        if not deferred:
            return
        try:
            self._complete(batch, deferred)
        except Exception as exc:
            for position, _ in deferred:
                meta = batch.metas[position]
                meta.status, meta.error = SampleStatus.DECODE_ERROR, f"GPU decode failed: {type(exc).__name__}: {exc}"[:500]
                meta.image_row, meta.width, meta.height = -1, None, None

    def _complete(self, batch, deferred: list) -> None:
        import torch

        existing = batch.inputs.get("pixel_values")
        pixels = [] if existing is None else [existing.to(self.device, non_blocking=existing.is_pinned())]
        rows = []
        for (position, blob), image in zip(deferred, self._decode([blob for _, blob in deferred])):
            meta = batch.metas[position]
            tensor = self._on_cpu(blob, meta) if isinstance(image, Exception) else self.transform(image)
            if tensor is not None:
                pixels.append(tensor[None] if tensor.dim() == 3 else tensor)
                rows.append(meta)
        if rows:
            batch.inputs["pixel_values"] = torch.cat(pixels)
        start = 0 if existing is None else existing.shape[0]
        for offset, meta in enumerate(rows):  # only once the batch is whole
            meta.image_row = start + offset

    def _decode(self, blobs: list[bytes]) -> list:
        """One batched call; if the batch fails, one call per image to isolate the bad ones."""
        try:
            return list(self.decode_batch(blobs))
        except Exception:
            out = []
            for blob in blobs:
                try:
                    out.append(self.decode_batch([blob])[0])
                except Exception as exc:
                    out.append(exc)
            return out

    def _on_cpu(self, blob: bytes, meta):
        """The CPU decode and image processor for a JPEG the device rejected (same pixel budget)."""
        from vlmaudit.scan.imaging import ImageDecodeError, ImageTooLarge, decode_image

        meta.width = meta.height = None  # as on the CPU path: a size only for decoded images
        try:
            image, size = decode_image(blob, self.max_pixels, self.preprocessor.draft_size)
            pixels = self.preprocessor.prepare([image], [])["pixel_values"]
        except ImageTooLarge as exc:
            meta.status, meta.error = SampleStatus.TOO_LARGE, str(exc)
            return None
        except ImageDecodeError as exc:
            meta.status, meta.error = SampleStatus.DECODE_ERROR, str(exc)[:500]
            return None
        except Exception as exc:  # the image processor failed on an image the decoder accepted
            meta.status, meta.error = SampleStatus.DECODE_ERROR, f"preprocessing failed: {type(exc).__name__}: {exc}"[:500]
            return None
        meta.width, meta.height = size
        meta.notes.append(FALLBACK_NOTE)
        return pixels.to(self.device)
