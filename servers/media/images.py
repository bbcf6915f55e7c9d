"""Image encoding (PNG with A1111-style parameters, WebP, JPEG) and safe decoding of input images.

Encoding is deterministic: the same pixels and parameters give the same bytes. PNGs carry the
generation parameters in a ``parameters`` text chunk, in the format A1111 writes and most tools
(A1111, ComfyUI loaders, civitai, image viewers) read back.

Decoding an uploaded init image is hostile-input handling: the header is checked before any pixel
is decoded (a decompression bomb is a small file that claims a huge image), Pillow's own bomb
check is turned from a warning into an error, truncated or corrupt data and non-images are
rejected, and every accepted mode (RGBA, LA, P, L, 1, I, I;16, F, CMYK, YCbCr...) comes out RGB, with
transparency composited onto white and the EXIF orientation applied. Every rejection is a
``genmesh.errors.InvalidArgument`` naming the request field.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from genmesh.errors import InvalidArgument
from servers.media.formats import ImageFormat

# Init images larger than this are refused before decoding (the output is at most 2048 x 2048).
MAX_INPUT_SIDE = 8192
MAX_INPUT_PIXELS = 40_000_000  # ~120 MB decoded as RGB


CONTENT_TYPES = ImageFormat.content_types()  # also each format's .content_type and .extension
EXTENSIONS = ImageFormat.extensions()


def _fmt_number(value: float) -> str:
    return f"{value:g}"


def a1111_parameters(
    *,
    prompt: str,
    negative_prompt: str = "",
    steps: int,
    sampler: str,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model: str,
    extra: dict[str, Any] | None = None,
) -> str:
    """The ``parameters`` text A1111 writes:
    ``prompt\\nNegative prompt: ...\\nSteps: 25, Sampler: Euler a, CFG scale: 7.5, Seed: 1, Size: 512x512, Model: m``
    (``extra`` items are appended as ``Key: value``; commas in values are not escaped by A1111
    either, so values with commas are quoted)."""
    fields: dict[str, Any] = {
        "Steps": steps,
        "Sampler": sampler,
        "CFG scale": _fmt_number(cfg_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model": model,
    }
    fields.update(extra or {})
    rendered = []
    for key, value in fields.items():
        text = _fmt_number(value) if isinstance(value, float) else str(value)
        if "," in text or "\n" in text:
            text = '"' + text.replace('"', '\\"').replace("\n", " ") + '"'
        rendered.append(f"{key}: {text}")
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(rendered))
    return "\n".join(lines)


def encode_image(
    image: Image.Image, fmt: ImageFormat | str = ImageFormat.PNG, *, quality: int = 90, parameters: str | None = None
) -> bytes:
    """Encode ``image``; PNG embeds ``parameters`` as a text chunk; ``quality`` (1..100) is for
    WebP/JPEG only."""
    fmt = ImageFormat(fmt)
    if not 1 <= quality <= 100:
        raise InvalidArgument(f"quality must be between 1 and 100 (got {quality})", field="quality")
    buffer = io.BytesIO()
    if fmt is ImageFormat.PNG:
        info = PngImagePlugin.PngInfo()
        if parameters:
            info.add_text("parameters", parameters)  # tEXt, or iTXt when it is not Latin-1
        image.save(buffer, format="PNG", pnginfo=info, compress_level=6)
    elif fmt is ImageFormat.WEBP:
        image.save(buffer, format="WEBP", quality=quality, method=4)
    else:
        image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=False)
    return buffer.getvalue()


def png_parameters(data: bytes) -> str | None:
    """The ``parameters`` text of a PNG, if it has one."""
    with Image.open(io.BytesIO(data)) as image:
        return image.info.get("parameters")


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit/32-bit single channel: scale to 8 bits instead of clipping everything above 255.
        peak = 65535.0 if image.mode.startswith("I;16") else max(1.0, float(image.getextrema()[1] or 1))
        image = image.convert("F").point(lambda value: value * 255.0 / peak).convert("L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(
    data: bytes,
    *,
    field: str = "init_image",
    max_side: int = MAX_INPUT_SIDE,
    max_pixels: int = MAX_INPUT_PIXELS,
) -> Image.Image:
    """Decode untrusted image bytes into an RGB ``PIL.Image``; ``InvalidArgument`` naming ``field``
    for anything that is not a reasonably sized, intact image."""
    if not data:
        raise InvalidArgument(f"{field}: empty image data", field=field)
    try:
        # Pillow warns (not raises) above Image.MAX_IMAGE_PIXELS: make that an error here. The
        # warnings filter is process-wide, but a lost or leaked filter is harmless: the size check
        # below is stricter than Pillow's warning threshold with the default limits.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width < 1 or height < 1 or width > max_side or height > max_side or width * height > max_pixels:
                raise InvalidArgument(
                    f"{field}: image is {width}x{height}; at most {max_side} px a side and {max_pixels} pixels",
                    field=field,
                )
            image.seek(0)  # animated formats: the first frame
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except InvalidArgument:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument(f"{field}: image rejected as a decompression bomb ({exc})", field=field) from None
    except UnidentifiedImageError:
        raise InvalidArgument(
            f"{field}: not an image in a format this server decodes (PNG, JPEG, WebP...)", field=field
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError) as exc:
        raise InvalidArgument(f"{field}: the image data is damaged or truncated ({exc})", field=field) from None


def snap_size(image: Image.Image, multiple: int = 8) -> tuple[int, int]:
    """The image's size rounded down to a multiple of ``multiple`` (at least ``multiple``)."""
    return tuple(max(multiple, side - side % multiple) for side in image.size)  # type: ignore[return-value]


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` resized to exactly ``width`` x ``height`` (Lanczos), as img2img takes it."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.LANCZOS)
