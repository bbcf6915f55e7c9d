"""Degradation presets: turn a clean image into the degraded input a restoration model learns from.

A preset is ``(clean RGB image, numpy Generator) -> (degraded RGB image, params)``. Every strength is
drawn from the generator, so the same generator state gives the same degraded pixels, and the
degraded image always has the clean image's size (no geometric changes: pairs stay pixel-aligned).
``params`` is JSON-able and says what was drawn::

    {"preset": "document-clean", "steps": [{"op": "illumination", "strength": 0.07, ...}, ...]}

Steps are listed in the order applied. Units: ``sigma`` of noise is on the 0..255 pixel scale;
blur ``sigma``, motion ``length`` and sizes are in pixels; opacities and strengths are 0..1.

Presets (``PRESETS``, in the order ``preset_names()`` lists them):

- ``document-clean``: a decent office scan: uneven illumination (2..8 %), a few light stains
  (sometimes), slight optical blur (sigma 0.3..0.8, usually), light sensor noise, JPEG 60..92.
- ``gaussian-noise``: additive Gaussian noise, sigma 4..30 (colour or luminance-only).
- ``blur``: Gaussian blur (sigma 0.8..3), motion blur (length 5..17 px, any angle), or both.
- ``jpeg``: JPEG compression at quality 10..60 (4:2:0 or 4:4:4 chroma).
- ``mixed``: a random non-empty subset of blur, downsample, gaussian-noise and jpeg, in that order.
- ``document-heavy``: an old or bad scan: show-through of the back page, faded ink and yellowed
  paper, strong illumination falloff, coffee stains and rings, dust specks, blur, noise, JPEG 30..75.
- ``downsample``: resolution loss: downscaled by 1.5..4 with a random filter and scaled back up.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from genmesh.errors import InvalidArgument

Params = dict[str, Any]
Step = dict[str, Any]
Preset = Callable[[Image.Image, np.random.Generator], tuple[Image.Image, Params]]
Op = Callable[..., tuple[np.ndarray, Step]]
Plan = list[tuple[float, Op, dict[str, Any]]]  # (probability, op, its ranges), in the order applied


def _r(value: float, digits: int = 3) -> float:
    return round(float(value), digits)


def _to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def _to_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


# --- elementary operations (float32 H x W x 3 arrays on the 0..255 scale) ------------------------


def gaussian_noise(
    arr: np.ndarray, rng: np.random.Generator, sigma: tuple[float, float], colour_p: float = 0.7
) -> tuple[np.ndarray, Step]:
    """Additive Gaussian noise; per channel ("colour") or the same on every channel (luminance)."""
    s = rng.uniform(*sigma)
    colour = bool(rng.random() < colour_p)
    h, w = arr.shape[:2]
    noise = rng.standard_normal((h, w, 3 if colour else 1), dtype=np.float32)
    noise *= np.float32(s)
    return arr + noise, {"op": "gaussian-noise", "sigma": _r(s), "colour": colour}


def gaussian_blur(arr: np.ndarray, rng: np.random.Generator, sigma: tuple[float, float]) -> tuple[np.ndarray, Step]:
    s = rng.uniform(*sigma)
    out = _to_image(arr).filter(ImageFilter.GaussianBlur(radius=s))
    return _to_array(out), {"op": "gaussian-blur", "sigma": _r(s)}


def motion_blur(arr: np.ndarray, rng: np.random.Generator, length: tuple[int, int]) -> tuple[np.ndarray, Step]:
    """Linear motion blur: the mean of ``n`` copies shifted along a line at a random angle."""
    n = int(rng.integers(length[0], length[1] + 1))
    angle = rng.uniform(0, 180)
    dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    taps: dict[tuple[int, int], int] = {}
    for k in range(n):
        t = k - (n - 1) / 2
        key = (round(t * dy), round(t * dx))
        taps[key] = taps.get(key, 0) + 1
    pad = (n + 1) // 2
    padded = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    h, w = arr.shape[:2]
    out = np.zeros_like(arr)
    for (oy, ox), weight in taps.items():
        view = padded[pad + oy : pad + oy + h, pad + ox : pad + ox + w]
        out += view if weight == 1 else view * np.float32(weight)
    out *= np.float32(1.0 / n)
    return out, {"op": "motion-blur", "length": n, "angle_deg": _r(angle, 1)}


def jpeg(arr: np.ndarray, rng: np.random.Generator, quality: tuple[int, int]) -> tuple[np.ndarray, Step]:
    q = int(rng.integers(quality[0], quality[1] + 1))
    subsampling = "4:2:0" if rng.random() < 0.7 else "4:4:4"
    buffer = io.BytesIO()
    _to_image(arr).save(buffer, "JPEG", quality=q, subsampling=subsampling)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        out = _to_array(decoded.convert("RGB"))
    return out, {"op": "jpeg", "quality": q, "subsampling": subsampling}


_RESAMPLERS = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


def downsample(arr: np.ndarray, rng: np.random.Generator, factor: tuple[float, float]) -> tuple[np.ndarray, Step]:
    """Down by ``factor`` with a random filter, then back up to the original size."""
    f = rng.uniform(*factor)
    down = ("box", "bilinear", "bicubic", "lanczos")[int(rng.integers(4))]
    up = ("bilinear", "bicubic", "lanczos", "nearest")[int(rng.choice(4, p=[0.35, 0.4, 0.15, 0.1]))]
    h, w = arr.shape[:2]
    image = _to_image(arr)
    small = image.resize((max(8, round(w / f)), max(8, round(h / f))), _RESAMPLERS[down])
    out = small.resize((w, h), _RESAMPLERS[up])
    return _to_array(out), {"op": "downsample", "factor": _r(f), "down": down, "up": up}


def illumination(
    arr: np.ndarray, rng: np.random.Generator, strength: tuple[float, float], vignette_p: float = 0.4
) -> tuple[np.ndarray, Step]:
    """Uneven lighting: a linear falloff across the page at a random angle, sometimes a vignette."""
    h, w = arr.shape[:2]
    s = rng.uniform(*strength)
    angle = rng.uniform(0, 360)
    y = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    x = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    ramp = x * np.float32(math.cos(math.radians(angle))) + y * np.float32(math.sin(math.radians(angle)))
    factor = 1.0 - np.float32(s) * (ramp + np.float32(0.5))  # 1 on the lit side, 1 - s on the dark side
    v = rng.uniform(0.3, 1.0) * s if rng.random() < vignette_p else 0.0
    if v:
        factor = factor - np.float32(v) * (x * x + y * y) * np.float32(2.0)
    return arr * factor[..., None], {
        "op": "illumination",
        "strength": _r(s),
        "angle_deg": _r(angle, 1),
        "vignette": _r(v),
    }


def _soft_blob(rng: np.random.Generator, h: int, w: int, ring: bool) -> np.ndarray:
    """A stain mask (0..1) in an ``h`` x ``w`` box: an irregular ellipse, or a coffee ring."""
    y = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    d = np.sqrt(x * x + y * y)
    grid = rng.random((5, 5), dtype=np.float32)
    wobble = np.asarray(Image.fromarray(grid, "F").resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    d = d / np.float32(0.8 + 0.25 * (wobble - 0.5) * 2)
    if ring:
        width = rng.uniform(0.04, 0.12)
        return np.exp(-(((d - 0.85) / np.float32(width)) ** 2)) + 0.25 * np.clip(1.0 - d, 0.0, 1.0)
    edge = rng.uniform(0.05, 0.3)
    return np.clip((1.0 - d) / np.float32(edge), 0.0, 1.0) * np.float32(rng.uniform(0.6, 1.0))


def stains(
    arr: np.ndarray, rng: np.random.Generator, count: tuple[int, int], opacity: tuple[float, float], ring_p: float = 0.3
) -> tuple[np.ndarray, Step]:
    """Brownish/yellowish blotches and coffee rings, multiplied onto the page."""
    h, w = arr.shape[:2]
    short = min(h, w)
    n = int(rng.integers(count[0], count[1] + 1))
    drawn = []
    out = arr.copy()
    for _ in range(n):
        rx, ry = short * rng.uniform(0.04, 0.22), short * rng.uniform(0.04, 0.22)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ring = bool(rng.random() < ring_p)
        alpha = rng.uniform(*opacity)
        tint = np.array([rng.uniform(0.75, 0.95), rng.uniform(0.6, 0.85), rng.uniform(0.35, 0.7)], dtype=np.float32)
        x0, x1 = round(cx - rx), round(cx + rx)
        y0, y1 = round(cy - ry), round(cy + ry)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        mask = _soft_blob(rng, y1 - y0, x1 - x0, ring)
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        m = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0, None] * np.float32(alpha)
        out[cy0:cy1, cx0:cx1] *= 1.0 - m * (1.0 - tint)
        drawn.append(
            {"x": round(cx), "y": round(cy), "rx": round(rx), "ry": round(ry), "opacity": _r(alpha), "ring": ring}
        )
    return out, {"op": "stains", "count": len(drawn), "stains": drawn}


def specks(arr: np.ndarray, rng: np.random.Generator, density: tuple[float, float]) -> tuple[np.ndarray, Step]:
    """Dust and toner specks: small dark (and a few light) dots, ``density`` per 10,000 pixels."""
    h, w = arr.shape[:2]
    d = rng.uniform(*density)
    n = int(d * h * w / 10_000)
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    xs, ys = rng.uniform(0, w, size=n), rng.uniform(0, h, size=n)
    rs = rng.uniform(0.4, 1.8, size=n)
    for x, y, r in zip(xs.tolist(), ys.tolist(), rs.tolist(), strict=True):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    m = np.asarray(mask, dtype=np.float32)[..., None] * np.float32(rng.uniform(0.4, 0.9) / 255)
    return arr * (1.0 - m) + np.float32(20.0) * m, {"op": "specks", "density": _r(d), "count": n}


def fade(arr: np.ndarray, rng: np.random.Generator, amount: tuple[float, float]) -> tuple[np.ndarray, Step]:
    """Faded ink (contrast lost toward white) and yellowed paper."""
    a = rng.uniform(*amount)
    yellow = rng.uniform(0.0, 0.12)
    tint = np.array([1.0, 1.0 - yellow * 0.35, 1.0 - yellow], dtype=np.float32)
    out = (255.0 - (255.0 - arr) * np.float32(1.0 - a)) * tint
    return out, {"op": "fade", "amount": _r(a), "yellowing": _r(yellow)}


def bleed_through(arr: np.ndarray, rng: np.random.Generator, opacity: tuple[float, float]) -> tuple[np.ndarray, Step]:
    """Show-through of the back of the sheet: the page mirrored, blurred and shifted, faintly darkening."""
    a = rng.uniform(*opacity)
    s = rng.uniform(0.8, 2.5)
    h, w = arr.shape[:2]
    dy, dx = int(rng.integers(-h // 8, h // 8 + 1)), int(rng.integers(-w // 8, w // 8 + 1))
    back = np.roll(arr[:, ::-1], (dy, dx), axis=(0, 1))
    back = _to_array(_to_image(back).filter(ImageFilter.GaussianBlur(radius=s)))
    darkness = (255.0 - back.mean(axis=2, keepdims=True)) / np.float32(255.0)
    out = arr * (1.0 - np.float32(a) * darkness)
    return out, {"op": "bleed-through", "opacity": _r(a), "blur_sigma": _r(s), "shift": [dx, dy]}


# --- presets -------------------------------------------------------------------------------------


def _apply(image: Image.Image, rng: np.random.Generator, name: str, plan: Plan) -> tuple[Image.Image, Params]:
    """Apply each ``(probability, op, ranges)`` of ``plan`` in order (a probability draw per step,
    always taken so the generator advances the same way whatever is skipped)."""
    arr = _to_array(image)
    steps: list[Step] = []
    for probability, op, ranges in plan:
        if rng.random() < probability:
            arr, step = op(arr, rng, **ranges)
            steps.append(step)
    return _to_image(arr), {"preset": name, "steps": steps}


def planned(name: str, plan: Plan) -> Preset:
    """A preset that applies one fixed ``plan`` (see ``_apply``)."""
    return lambda image, rng: _apply(image, rng, name, plan)


DOCUMENT_CLEAN = [
    (1.0, illumination, {"strength": (0.02, 0.08)}),
    (0.5, stains, {"count": (1, 3), "opacity": (0.05, 0.25)}),
    (0.7, gaussian_blur, {"sigma": (0.3, 0.8)}),
    (1.0, gaussian_noise, {"sigma": (1.5, 5.0), "colour_p": 0.3}),
    (1.0, jpeg, {"quality": (60, 92)}),
]
DOCUMENT_HEAVY = [
    (0.5, bleed_through, {"opacity": (0.05, 0.25)}),
    (0.7, fade, {"amount": (0.05, 0.3)}),
    (1.0, illumination, {"strength": (0.05, 0.2), "vignette_p": 0.6}),
    (0.9, stains, {"count": (1, 6), "opacity": (0.1, 0.45), "ring_p": 0.4}),
    (0.7, specks, {"density": (0.5, 6.0)}),
    (0.9, gaussian_blur, {"sigma": (0.5, 1.5)}),
    (1.0, gaussian_noise, {"sigma": (3.0, 12.0), "colour_p": 0.4}),
    (1.0, jpeg, {"quality": (30, 75)}),
]


def _blur_plan(rng: np.random.Generator) -> Plan:
    mode = float(rng.random())
    if mode < 0.5:
        return [(1.0, gaussian_blur, {"sigma": (0.8, 3.0)})]
    if mode < 0.8:
        return [(1.0, motion_blur, {"length": (5, 17)})]
    return [(1.0, gaussian_blur, {"sigma": (0.5, 1.5)}), (1.0, motion_blur, {"length": (3, 11)})]


def blur_preset(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    return _apply(image, rng, "blur", _blur_plan(rng))


# What "mixed" draws from, in the order it applies them.
MIXED_COMPONENTS: tuple[str, ...] = ("blur", "downsample", "gaussian-noise", "jpeg")


def mixed_preset(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Each of ``MIXED_COMPONENTS`` with probability 1/2 (at least one), applied in that order."""
    chosen = [name for name in MIXED_COMPONENTS if rng.random() < 0.5]
    if not chosen:
        chosen = [MIXED_COMPONENTS[int(rng.integers(len(MIXED_COMPONENTS)))]]
    steps: list[Step] = []
    for name in chosen:
        image, params = PRESETS[name](image, rng)
        steps.extend(params["steps"])
    return image, {"preset": "mixed", "components": chosen, "steps": steps}


PRESETS: dict[str, Preset] = {
    "document-clean": planned("document-clean", DOCUMENT_CLEAN),
    "gaussian-noise": planned("gaussian-noise", [(1.0, gaussian_noise, {"sigma": (4.0, 30.0)})]),
    "blur": blur_preset,
    "jpeg": planned("jpeg", [(1.0, jpeg, {"quality": (10, 60)})]),
    "mixed": mixed_preset,
    "document-heavy": planned("document-heavy", DOCUMENT_HEAVY),
    "downsample": planned("downsample", [(1.0, downsample, {"factor": (1.5, 4.0)})]),
}


def preset_names() -> tuple[str, ...]:
    """Every preset name, in the order error messages list them."""
    return tuple(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ``InvalidArgument`` (field ``degradation_type``) listing the names."""
    preset = PRESETS.get(name)
    if preset is None:
        raise InvalidArgument(
            f"degradation_type: unknown preset {name!r}; presets: {', '.join(PRESETS)}", field="degradation_type"
        )
    return preset


def degrade(name: str, image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Apply preset ``name`` to ``image`` (RGB); returns the degraded RGB image and its params."""
    degraded, params = get_preset(name)(image.convert("RGB"), rng)
    if degraded.size != image.size:  # every op keeps the size; a pair must stay pixel-aligned
        raise AssertionError(f"preset {name} changed the size {image.size} -> {degraded.size}")
    return degraded, params
