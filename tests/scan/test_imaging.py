"""Image decoding (scan/imaging.py) pinned on exact pixels: bit-depth scaling, alpha over white,
the pixel budget at its boundary, reduction factors and EXIF orientation on both decode paths."""

import io

import numpy as np
import pytest
from PIL import Image

from vlmaudit.scan.imaging import ImageDecodeError, ImageTooLarge, decode_image, shrink

BIG = 10**8


def encode(image, fmt="PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def red(image) -> list:
    return np.asarray(image)[..., 0].tolist()


def test_16_bit_values_are_divided_by_257():
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    image, size = decode_image(encode(Image.fromarray(values)), BIG)
    assert size == (4, 1) and image.mode == "RGB"
    assert red(image) == [[0, 1, 127, 255]]


@pytest.mark.parametrize("values, expected", [
    ([0, 200, 255, 17], [0, 200, 255, 17]),        # 8-bit range: kept as is
    ([0, 256, 514, 65535], [0, 0, 2, 255]),         # over 255: scaled by 1/257
    ([-5, 255, 100, 7], [0, 255, 100, 7]),          # negative: clipped to black
])
def test_32_bit_integer_images(values, expected):
    image, _ = decode_image(encode(Image.fromarray(np.array([values], np.int32), mode="I"), "TIFF"), BIG)
    assert red(image) == [expected]


def test_float_images_are_clipped_to_8_bits():
    values = np.array([[-3.0, 12.7, 254.9, 999.0]], np.float32)
    image, _ = decode_image(encode(Image.fromarray(values, mode="F"), "TIFF"), BIG)
    assert red(image) == [[0, 12, 254, 255]]


@pytest.mark.parametrize("mode, colour", [("RGBA", (0, 0, 0, 128)), ("LA", (0, 128))])
def test_half_transparent_black_over_white_is_mid_grey(mode, colour):
    image, _ = decode_image(encode(Image.new(mode, (2, 2), colour)), BIG)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (127, 127, 127)


def test_palette_transparency_is_white_and_opaque_palette_keeps_its_colours():
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0, 0, 0] * 254)
    palette.putpixel((1, 0), 1)
    clear, _ = decode_image(encode(palette, transparency=0), BIG)
    assert [clear.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (200, 100, 50)]
    opaque, _ = decode_image(encode(palette), BIG)
    assert [opaque.getpixel((x, 0)) for x in range(2)] == [(10, 20, 30), (200, 100, 50)]


def test_one_bit_and_cmyk_convert_to_rgb():
    bits = Image.new("1", (2, 1), 0)
    bits.putpixel((1, 0), 1)
    image, _ = decode_image(encode(bits), BIG)
    assert [image.getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), (255, 255, 255)]
    cmyk, _ = decode_image(encode(Image.new("CMYK", (2, 2), (0, 0, 0, 0)), "TIFF"), BIG)
    assert cmyk.getpixel((0, 0)) == (255, 255, 255)


def test_an_rgb_image_is_returned_as_decoded():
    image, size = decode_image(encode(Image.new("RGB", (3, 2), (9, 8, 7))), BIG)
    assert image.getpixel((2, 1)) == (9, 8, 7) and size == (3, 2)


def test_the_pixel_budget_admits_exactly_its_limit():
    data = encode(Image.new("L", (30, 20)))
    image, size = decode_image(data, max_pixels=600)
    assert size == (30, 20)
    with pytest.raises(ImageTooLarge) as info:
        decode_image(data, max_pixels=599)
    assert str(info.value) == "30x20 = 600 pixels exceeds --max-pixels 599"


def test_pillows_own_bomb_check_is_an_image_too_large(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageTooLarge) as info:
        decode_image(encode(Image.new("L", (30, 20))), max_pixels=BIG)
    assert "600 pixels" in str(info.value) and "decompression bomb" in str(info.value)


@pytest.mark.parametrize("data, message", [
    (b"", "empty image member (0 bytes)"),
    (b"GIF89a", "UnidentifiedImageError: cannot identify image file"),
])
def test_decode_errors_name_the_decoder_error(data, message):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, BIG)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX"])
def test_formats_outside_the_allowed_list_are_refused(fmt):
    with pytest.raises(ImageDecodeError, match="^UnidentifiedImageError: cannot identify image file"):
        decode_image(encode(Image.new("RGB", (16, 16)), fmt), BIG)


def test_truncated_png_is_a_decode_error_with_the_decoders_words():
    data = encode(Image.effect_noise((64, 64), 50))
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data[: len(data) // 2], BIG)
    assert str(info.value).startswith(("OSError: ", "SyntaxError: ", "ValueError: "))


@pytest.mark.parametrize("short, factor", [(447, 1), (448, 2), (671, 2), (672, 3), (10, 1)])
def test_shrink_uses_the_largest_factor_keeping_the_short_side_at_the_target(short, factor):
    image = Image.new("RGB", (short + 5, short))
    small = shrink(image, 224)
    assert small.size == (-(-(short + 5) // factor), -(-short // factor))  # reduce() rounds up
    assert (small is image) == (factor == 1)


def test_shrink_with_a_target_under_one_reduces_to_one_pixel():
    assert shrink(Image.new("RGB", (10, 12)), 0).size == (1, 2)
    assert shrink(Image.new("RGB", (10, 12)), 1).size == (1, 2)


def checkerboard(mode) -> Image.Image:
    array = (np.indices((8, 8)).sum(axis=0) % 2).astype(np.uint8)
    scale = {"1": 1, "P": 1, "L": 255, "I;16": 65535}[mode]
    image = Image.fromarray(array.astype(np.uint16 if mode == "I;16" else np.uint8) * scale)
    return image.convert(mode) if mode in ("1", "P") else image


@pytest.mark.parametrize("mode, nearest", [("L", False), ("P", True), ("1", True), ("I;16", True)])
def test_shrink_averages_except_palette_one_bit_and_16_bit(mode, nearest):
    small = shrink(checkerboard(mode), 4)
    assert small.size == (4, 4) and small.mode == mode
    values = set(np.asarray(small).ravel().tolist())
    assert (len(values) == 1 and values != {127, 128}) if nearest else values <= {127, 128}


def test_a_jpeg_is_decoded_in_draft_mode_then_reduced():
    data = encode(Image.new("RGB", (1000, 900), (250, 0, 0)), "JPEG")
    image, size = decode_image(data, BIG, draft_size=224)
    assert size == (1000, 900) and image.size == (250, 225)  # libjpeg scale 1/4
    image, _ = decode_image(data, BIG, draft_size=200)
    assert image.size == (250, 225)  # 1/4, and reduce(225 // 200 = 1) keeps it
    image, _ = decode_image(data, BIG, draft_size=100)
    assert image.size == (125, 113)  # 1/8 from libjpeg
    image, _ = decode_image(data, BIG)
    assert image.size == (1000, 900)
    image, _ = decode_image(encode(Image.new("RGB", (1000, 900)), "PNG"), BIG, draft_size=224)
    assert image.size == (250, 225)  # no draft for PNG: reduce(4)


def quadrants(size=(64, 32)) -> Image.Image:
    w, h = size
    image = Image.new("RGB", size)
    for box, colour in (((0, 0, w // 2, h // 2), (255, 0, 0)), ((w // 2, 0, w, h // 2), (0, 255, 0)),
                        ((0, h // 2, w // 2, h), (0, 0, 255)), ((w // 2, h // 2, w, h), (255, 255, 255))):
        image.paste(colour, box)
    return image


def corners(image) -> list:
    w, h = image.size
    return [image.getpixel(xy) for xy in ((1, 1), (w - 2, 1), (1, h - 2), (w - 2, h - 2))]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_the_same_on_the_full_and_the_reduced_path(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(quadrants(), "PNG", exif=exif)
    full, size = decode_image(data, BIG)
    small, small_size = decode_image(data, BIG, draft_size=8)  # reduce(4)
    swapped = orientation in (5, 6, 7, 8)
    assert size == small_size == ((32, 64) if swapped else (64, 32))
    assert full.size == size and small.size == (size[0] // 4, size[1] // 4)
    assert corners(small) == corners(full)
    expected = {1: [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)],
                3: [(255, 255, 255), (0, 0, 255), (0, 255, 0), (255, 0, 0)],
                6: [(0, 0, 255), (255, 0, 0), (255, 255, 255), (0, 255, 0)]}
    if orientation in expected:
        assert corners(full) == expected[orientation]


def test_an_unknown_orientation_is_left_alone():
    exif = Image.Exif()
    exif[0x0112] = 9
    data = encode(quadrants(), "PNG", exif=exif)
    small, size = decode_image(data, BIG, draft_size=8)
    assert size == (64, 32) and small.size == (16, 8) and corners(small)[0] == (255, 0, 0)
