import io

import numpy as np
import pytest
from PIL import Image

from vlmaudit.scan.imaging import ImageDecodeError, ImageTooLarge, decode_image

BIG = 10**8


def encode(image, fmt, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_format_decodes_to_rgb(fmt):
    image, size = decode_image(encode(Image.new("RGB", (40, 30), (200, 10, 10)), fmt), BIG)
    assert image.mode == "RGB" and size == (40, 30)
    r, g, b = image.getpixel((20, 15))
    assert r > 150 and g < 60 and b < 60


def test_modes_convert_correctly():
    cmyk, _ = decode_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), BIG)
    assert cmyk.getpixel((4, 4))[0] > 200 and cmyk.getpixel((4, 4))[1] < 60  # red
    gray, _ = decode_image(encode(Image.new("L", (8, 8), 128), "PNG"), BIG)
    assert gray.getpixel((1, 1)) == (128, 128, 128)
    rgba, _ = decode_image(encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"), BIG)
    assert rgba.getpixel((1, 1)) == (255, 255, 255)  # transparent -> white, not black
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0] * 256)
    pal, _ = decode_image(encode(palette, "PNG", transparency=0), BIG)
    assert pal.getpixel((1, 1)) == (255, 255, 255)


def test_16_bit_png_is_scaled_not_clipped():
    array = np.full((8, 8), 32768, np.uint16)
    image, _ = decode_image(encode(Image.fromarray(array), "PNG"), BIG)
    assert 120 <= image.getpixel((1, 1))[0] <= 135


def test_exif_orientation_applied():
    source = Image.new("RGB", (60, 20), (0, 0, 255))
    exif = source.getexif()
    exif[0x0112] = 6  # rotate 90
    image, size = decode_image(encode(source, "JPEG", exif=exif.tobytes()), BIG)
    assert image.size == (20, 60) and size == (20, 60)


def test_too_large_is_rejected_from_the_header_before_decoding():
    header_only = encode(Image.new("L", (3000, 3000)), "PNG")[:200]  # pixels absent: decoding would fail
    with pytest.raises(ImageTooLarge, match="3000x3000"):
        decode_image(header_only, max_pixels=1_000_000)


@pytest.mark.parametrize("data, message", [
    (b"", "empty image member"),
    (b"<html><body>404 Not Found</body></html>", "cannot identify image"),
])
def test_bad_bytes_give_the_decoders_message(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data, BIG)


def test_truncated_jpeg_is_a_decode_error():
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageDecodeError, match="truncated|broken|OSError"):
        decode_image(data[: len(data) // 2], BIG)


@pytest.mark.parametrize("size", [(1, 1), (1, 3000), (3000, 2)])
def test_tiny_and_extreme_aspect_images_decode(size):
    image, got = decode_image(encode(Image.new("RGB", size, (1, 2, 3)), "PNG"), BIG)
    assert got == size
