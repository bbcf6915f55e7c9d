"""Image encoding (PNG parameters chunk, WebP/JPEG quality) and hostile init images: every
rejection is InvalidArgument naming the field; odd modes come out RGB."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from genmesh.errors import InvalidArgument
from servers.media.images import a1111_parameters, decode_image, encode_image, png_parameters, snap_size


def png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with almost no data behind it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_a1111_parameter_text() -> None:
    text = a1111_parameters(
        prompt="a cat", negative_prompt="dog", steps=25, sampler="Euler a", cfg_scale=7.5, seed=1,
        width=512, height=512, model="sd15-base", extra={"Denoising strength": 0.75},
    )  # fmt: skip
    assert text == (
        "a cat\nNegative prompt: dog\n"
        "Steps: 25, Sampler: Euler a, CFG scale: 7.5, Seed: 1, Size: 512x512, Model: sd15-base, "
        "Denoising strength: 0.75"
    )
    no_negative = a1111_parameters(
        prompt="p", steps=1, sampler="DDIM", cfg_scale=1.0, seed=0, width=64, height=64, model="m, with comma"
    )
    assert no_negative == 'p\nSteps: 1, Sampler: DDIM, CFG scale: 1, Seed: 0, Size: 64x64, Model: "m, with comma"'


def test_png_embeds_parameters_and_is_deterministic() -> None:
    image = Image.new("RGB", (32, 32), (10, 200, 30))
    data = encode_image(image, "png", parameters="un chat\nSteps: 4")
    assert data == encode_image(image, "png", parameters="un chat\nSteps: 4")
    assert png_parameters(data) == "un chat\nSteps: 4"
    assert png_parameters(encode_image(image, "png", parameters="😺 ünïcode")) == "😺 ünïcode"
    assert png_parameters(encode_image(image, "png")) is None


@pytest.mark.parametrize(("fmt", "magic"), [("webp", b"RIFF"), ("jpeg", b"\xff\xd8")])
def test_webp_and_jpeg_follow_quality(fmt: str, magic: bytes) -> None:
    noisy = Image.effect_noise((128, 128), 64).convert("RGB")
    low, high = encode_image(noisy, fmt, quality=10), encode_image(noisy, fmt, quality=95)
    assert low.startswith(magic) and high.startswith(magic) and len(low) < len(high)
    with pytest.raises(InvalidArgument) as error:
        encode_image(noisy, fmt, quality=0)
    assert error.value.field == "quality"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"this is plain text, not an image at all", id="text"),
        pytest.param(png_bytes(Image.new("RGB", (64, 64)))[:60], id="truncated"),
        pytest.param(png_with_header(100_000, 100_000), id="huge-header"),
        pytest.param(png_with_header(20_000, 20_000), id="pillow-bomb-error"),
        pytest.param(png_with_header(0, 10), id="zero-width"),
    ],
)
def test_bad_init_images_are_invalid_argument(data: bytes) -> None:
    with pytest.raises(InvalidArgument) as error:
        decode_image(data, field="init_image_data")
    assert error.value.field == "init_image_data"
    assert str(error.value).startswith("init_image_data:")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # 6000 x 6000 of one colour: a ~100 KB file that decodes to 108 MB.
    bomb = png_bytes(Image.new("RGB", (6000, 6000)), optimize=False, compress_level=9)
    assert len(bomb) < 200_000
    with pytest.raises(InvalidArgument, match="6000x6000") as error:
        decode_image(bomb, max_pixels=16_000_000)
    assert error.value.field == "init_image"


def test_pillow_bomb_warning_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns above this, errors above twice
    with pytest.raises(InvalidArgument, match="decompression bomb"):
        decode_image(png_bytes(Image.new("RGB", (40, 40))))


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), (255, 0, 0), id="cmyk"),
        pytest.param(Image.new("L", (16, 8), 128), (128, 128, 128), id="grey"),
        pytest.param(Image.new("RGBA", (16, 8), (255, 0, 0, 0)), (255, 255, 255), id="transparent-on-white"),
        pytest.param(Image.new("I;16", (16, 8), 65535), (255, 255, 255), id="16-bit"),
        pytest.param(Image.new("RGB", (16, 8), (1, 2, 3)).quantize(4), (1, 2, 3), id="palette"),
    ],
)
def test_modes_are_converted_to_rgb(image: Image.Image, expected: tuple[int, int, int]) -> None:
    fmt = "JPEG" if image.mode == "CMYK" else "PNG"
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    decoded = decode_image(buffer.getvalue())
    assert decoded.mode == "RGB" and decoded.size == (16, 8)
    assert all(abs(a - b) <= 2 for a, b in zip(decoded.getpixel((3, 3)), expected, strict=True))


def test_transparent_palette_and_exif_rotation() -> None:
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    assert decode_image(png_bytes(palette, transparency=0)).getpixel((0, 0)) == (255, 255, 255)

    tall = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    tall.save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue()).size == (10, 20)


def test_snap_size() -> None:
    assert snap_size(Image.new("RGB", (517, 99))) == (512, 96)
    assert snap_size(Image.new("RGB", (5, 5))) == (8, 8)
