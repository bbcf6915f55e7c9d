"""Clean content for synthetic training pairs, rendered from a numpy random generator.

Three kinds (the proto's ``ContentKind``), each a pure function ``(width, height, rng) -> (RGB
image, info)`` where ``info`` is a small JSON-able description of what was drawn (it goes into the
batch manifest):

- ``documents``: pages on paper-coloured backgrounds: a letterhead, headings, paragraphs of text
  (left-aligned or justified), bullet lists, form fields, tables with ruled cells, rules, rotated
  stamps/seals (circles or boxes with text) and a signature scribble. Text uses Pillow's built-in
  font (``ImageFont.load_default(size=...)``, Aileron, ASCII only) and a built-in word list.
- ``textures``: procedural patterns: fractal value noise, linear and radial gradients, (warped)
  stripes, rotated checkers, dot grids, and blends of two of those through a noise mask.
- ``shapes``: flat-coloured rectangles, ellipses, lines, polygons, stars and pie slices on a flat
  background.

Nothing here reads files, the clock or global random state: the same generator state gives the
same pixels. Fonts are loaded per call (about 50 microseconds each), so renderers are safe to run
in several threads at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from genmesh.errors import InvalidArgument
from servers.training.data.synthetic.words import HEADING_WORDS, STAMP_WORDS, WORDS

DOCUMENTS = "documents"
TEXTURES = "textures"
SHAPES = "shapes"
# In the proto's ContentKind order (CONTENT_KIND_DOCUMENTS = 1, TEXTURES = 2, SHAPES = 3).
CONTENT_KINDS: tuple[str, ...] = (DOCUMENTS, TEXTURES, SHAPES)

Info = dict[str, Any]
Renderer = Callable[[int, int, np.random.Generator], tuple[Image.Image, Info]]
RGB = tuple[int, int, int]


def render_content(kind: str, width: int, height: int, rng: np.random.Generator) -> tuple[Image.Image, Info]:
    """Render one clean RGB image of ``kind`` (one of ``CONTENT_KINDS``), ``width`` x ``height``."""
    renderer = RENDERERS.get(kind)
    if renderer is None:
        raise InvalidArgument(
            f"content_kinds: unknown kind {kind!r}; kinds: {', '.join(CONTENT_KINDS)}", field="content_kinds"
        )
    image, info = renderer(width, height, rng)
    return image, {"kind": kind, **info}


# --- small helpers ---------------------------------------------------------------------------------


def _int(rng: np.random.Generator, low: int, high: int) -> int:
    """A Python int in ``low..high`` (inclusive)."""
    return int(rng.integers(low, high + 1))


def _colour(rng: np.random.Generator, low: int = 0, high: int = 255) -> RGB:
    r, g, b = rng.integers(low, high + 1, size=3)
    return int(r), int(g), int(b)


def _vivid(rng: np.random.Generator) -> RGB:
    """A saturated colour: random hue, high saturation and value."""
    hue, sat, val = rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0)
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    rgb = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return int(rgb[0] * 255), int(rgb[1] * 255), int(rgb[2] * 255)


def _pick(rng: np.random.Generator, items: tuple[str, ...] | list[str]) -> str:
    return items[int(rng.integers(len(items)))]


class _Fonts:
    """Pillow's built-in font at integer sizes, loaded on first use (one cache per render)."""

    def __init__(self) -> None:
        self._fonts: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}

    def __call__(self, size: float) -> Any:
        key = max(6, round(size))
        font = self._fonts.get(key)
        if font is None:
            font = self._fonts[key] = ImageFont.load_default(size=key)
        return font


# --- documents -------------------------------------------------------------------------------------


@dataclass
class _Page:
    draw: ImageDraw.ImageDraw
    rng: np.random.Generator
    fonts: _Fonts
    left: int
    right: int
    top: int
    bottom: int
    body: int  # body text size in pixels
    leading: int  # line pitch in pixels
    ink: RGB
    paper: RGB
    y: int = 0  # where the next block starts
    blocks: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return self.right - self.left


def _paper_colour(rng: np.random.Generator) -> RGB:
    base = rng.uniform(228, 253)
    warm = rng.uniform(0, 10)  # yellowish / cream papers
    tint = rng.uniform(-3, 3, size=3)
    r, g, b = base + tint[0], base - warm * 0.3 + tint[1], base - warm + tint[2]
    return int(np.clip(r, 0, 255)), int(np.clip(g, 0, 255)), int(np.clip(b, 0, 255))


def _ink_colour(rng: np.random.Generator) -> RGB:
    if rng.random() < 0.15:  # ballpoint / typewriter blue
        return _int(rng, 10, 40), _int(rng, 20, 50), _int(rng, 80, 140)
    grey = _int(rng, 5, 60)
    return grey, grey, min(255, grey + _int(rng, 0, 10))


def _sentence_words(rng: np.random.Generator, count: int) -> list[str]:
    words = [WORDS[int(i)] for i in rng.integers(len(WORDS), size=count)]
    words[0] = words[0].capitalize()
    return words


def _fill_line(rng: np.random.Generator, font: Any, max_width: float, state: dict[str, int]) -> list[str]:
    """Words for one line of running text no wider than ``max_width`` (sentence state carries over)."""
    space = font.getlength(" ")
    line: list[str] = []
    used = 0.0
    for _ in range(64):
        word = WORDS[int(rng.integers(len(WORDS)))]
        if state["left"] <= 0:  # a new sentence
            state["left"] = _int(rng, 4, 14)
            word = word.capitalize()
        state["left"] -= 1
        if state["left"] == 0:
            word += "."
        elif rng.random() < 0.06:
            word += ","
        length = font.getlength(word)
        if line and used + space + length > max_width:
            state["left"] += 1  # this word was not placed
            break
        if not line and length > max_width:
            break
        line.append(word)
        used += (space if len(line) > 1 else 0) + length
    return line


def _block_paragraph(page: _Page) -> int:
    rng, font = page.rng, page.fonts(page.body)
    lines = _int(rng, 2, 9)
    indent = page.body * 2 if rng.random() < 0.4 else 0
    justify = rng.random() < 0.35
    state = {"left": 0}
    y = page.y
    for n in range(lines):
        if y + page.leading > page.bottom:
            break
        x0 = page.left + (indent if n == 0 else 0)
        last = n == lines - 1
        max_width = page.right - x0
        if last:
            max_width *= rng.uniform(0.3, 0.95)
        words = _fill_line(rng, font, max_width, state)
        if not words:
            break
        if justify and not last and len(words) > 1:
            lengths = [font.getlength(w) for w in words]
            gap = (page.right - x0 - sum(lengths)) / (len(words) - 1)
            x = float(x0)
            for word, length in zip(words, lengths, strict=True):
                page.draw.text((round(x), y), word, font=font, fill=page.ink)
                x += length + gap
        else:
            page.draw.text((x0, y), " ".join(words), font=font, fill=page.ink)
        y += page.leading
    return y


def _block_heading(page: _Page) -> int:
    rng = page.rng
    size = page.body * rng.uniform(1.25, 2.2)
    font = page.fonts(size)
    words = [_pick(rng, HEADING_WORDS)] + [WORDS[int(i)] for i in rng.integers(len(WORDS), size=_int(rng, 0, 3))]
    text = " ".join(words)
    if rng.random() < 0.3:
        text = text.upper()
    if rng.random() < 0.4:
        text = f"{_int(rng, 1, 9)}. {text}"
    while len(text) > 1 and font.getlength(text) > page.width:
        text = text[:-1]
    bold = 1 if size >= 14 and rng.random() < 0.5 else 0
    height = round(size * 1.3)
    if page.y + height > page.bottom:
        return page.y
    length = font.getlength(text)
    x = page.left if rng.random() < 0.7 else page.left + max(0, int((page.width - length) / 2))
    page.draw.text((x, page.y), text, font=font, fill=page.ink, stroke_width=bold, stroke_fill=page.ink)
    y = page.y + height
    if rng.random() < 0.3:  # underline rule
        page.draw.line([(x, y), (x + length, y)], fill=page.ink, width=max(1, round(size / 12)))
        y += max(2, round(size / 6))
    return y + round(page.body * 0.4)


def _cell_text(rng: np.random.Generator) -> str:
    roll = rng.random()
    if roll < 0.35:
        return WORDS[int(rng.integers(len(WORDS)))]
    if roll < 0.6:
        return f"{rng.uniform(0, 10000):.2f}"
    if roll < 0.75:
        return f"20{_int(rng, 10, 29)}-{_int(rng, 1, 12):02d}-{_int(rng, 1, 28):02d}"
    if roll < 0.85:
        return f"{_int(rng, 0, 100)}%"
    return str(_int(rng, 1, 999))


def _block_table(page: _Page) -> int:
    rng, draw = page.rng, page.draw
    font = page.fonts(page.body * rng.uniform(0.85, 1.0))
    row_h = round(page.body * rng.uniform(1.5, 2.0))
    rows = min(_int(rng, 2, 9), (page.bottom - page.y) // row_h)
    if rows < 2:
        return page.y
    cols = _int(rng, 2, 5)
    table_w = page.width * rng.uniform(0.55, 1.0)
    widths = rng.dirichlet(np.full(cols, 3.0)) * table_w
    x0 = page.left if rng.random() < 0.6 else page.left + (page.width - table_w) / 2
    xs = [round(x0 + float(s)) for s in np.concatenate([[0.0], np.cumsum(widths)])]
    y0 = page.y
    ys = [y0 + r * row_h for r in range(rows + 1)]
    line_w = 1 if page.body < 20 or rng.random() < 0.5 else 2
    if rng.random() < 0.5:  # shaded header row
        shade = tuple(int(c * rng.uniform(0.8, 0.92)) for c in page.paper)
        draw.rectangle([xs[0], ys[0], xs[-1], ys[1]], fill=shade)
    grid = rng.random() < 0.75
    for y in ys:
        draw.line([(xs[0], y), (xs[-1], y)], fill=page.ink, width=line_w)
    for i, x in enumerate(xs):
        if grid or i in (0, len(xs) - 1):
            draw.line([(x, ys[0]), (x, ys[-1])], fill=page.ink, width=line_w)
    pad = max(2, row_h // 5)
    text_y = (row_h - page.body) // 2
    for r in range(rows):
        for c in range(cols):
            text = _pick(rng, HEADING_WORDS) if r == 0 else _cell_text(rng)
            room = xs[c + 1] - xs[c] - 2 * pad
            while text and font.getlength(text) > room:
                text = text[:-1]
            if text:
                stroke = 1 if r == 0 and page.body >= 14 else 0
                draw.text(
                    (xs[c] + pad, ys[r] + text_y),
                    text,
                    font=font,
                    fill=page.ink,
                    stroke_width=stroke,
                    stroke_fill=page.ink,
                )
    return ys[-1] + round(page.body * 0.8)


def _block_list(page: _Page) -> int:
    rng, font = page.rng, page.fonts(page.body)
    numbered = rng.random() < 0.35
    y = page.y
    state = {"left": 0}
    for n in range(_int(rng, 2, 6)):
        if y + page.leading > page.bottom:
            break
        bx = page.left + page.body
        if numbered:
            page.draw.text((bx, y), f"{n + 1}.", font=font, fill=page.ink)
        else:
            r = max(1, page.body // 6)
            cy = y + page.body * 0.6
            page.draw.ellipse([bx, cy - r, bx + 2 * r, cy + r], fill=page.ink)
        x = bx + page.body * 1.5
        words = _fill_line(rng, font, (page.right - x) * rng.uniform(0.4, 1.0), state)
        if words:
            page.draw.text((round(x), y), " ".join(words), font=font, fill=page.ink)
        y += page.leading
    return y + round(page.body * 0.4)


def _block_form(page: _Page) -> int:
    rng, font = page.rng, page.fonts(page.body)
    y = page.y
    for _ in range(_int(rng, 2, 5)):
        if y + page.leading * 1.4 > page.bottom:
            break
        label = _pick(rng, HEADING_WORDS) + ":"
        page.draw.text((page.left, y), label, font=font, fill=page.ink)
        x = page.left + font.getlength(label) + page.body * 0.5
        end = page.left + page.width * rng.uniform(0.5, 1.0)
        base = y + page.body
        if rng.random() < 0.25:  # a checkbox instead of a line
            side = max(4, page.body * 0.8)
            page.draw.rectangle([x, y + page.body * 0.15, x + side, y + page.body * 0.15 + side], outline=page.ink)
            if rng.random() < 0.5:
                page.draw.line([(x, y + page.body * 0.15), (x + side, y + page.body * 0.15 + side)], fill=page.ink)
        elif end > x + page.body:
            page.draw.line([(x, base), (end, base)], fill=page.ink, width=1)
        y += round(page.leading * 1.4)
    return y + round(page.body * 0.3)


def _block_rule(page: _Page) -> int:
    rng = page.rng
    y = page.y + page.body // 2
    page.draw.line([(page.left, y), (page.right, y)], fill=page.ink, width=_int(rng, 1, max(1, page.body // 8)))
    return y + page.body


def _letterhead(page: _Page) -> int:
    rng, draw = page.rng, page.draw
    band = round(page.body * rng.uniform(2.2, 3.5))
    if page.top + band > page.bottom:
        return page.top
    colour = _vivid(rng) if rng.random() < 0.5 else page.ink
    text = " ".join(_pick(rng, HEADING_WORDS).upper() for _ in range(_int(rng, 1, 3)))
    font = page.fonts(band * 0.45)
    if rng.random() < 0.5:  # filled band with paper-coloured text
        draw.rectangle([page.left, page.top, page.right, page.top + band], fill=colour)
        draw.text((page.left + band * 0.3, page.top + band * 0.25), text, font=font, fill=page.paper)
    else:  # logo mark + title + rule
        side = band * 0.8
        if rng.random() < 0.5:
            draw.ellipse([page.left, page.top, page.left + side, page.top + side], fill=colour)
        else:
            draw.rectangle([page.left, page.top, page.left + side, page.top + side], fill=colour)
        draw.text((page.left + side * 1.3, page.top + band * 0.1), text, font=font, fill=colour)
        draw.line([(page.left, page.top + band), (page.right, page.top + band)], fill=colour, width=max(1, band // 20))
    return page.top + band + page.body


_BLOCKS: tuple[tuple[str, Callable[[_Page], int], float], ...] = (
    ("paragraph", _block_paragraph, 0.45),
    ("heading", _block_heading, 0.14),
    ("table", _block_table, 0.14),
    ("list", _block_list, 0.1),
    ("form", _block_form, 0.09),
    ("rule", _block_rule, 0.08),
)
_BLOCK_P = np.array([w for _, _, w in _BLOCKS]) / sum(w for _, _, w in _BLOCKS)


def _stamp(image: Image.Image, page: _Page) -> None:
    """A rotated, slightly uneven ink stamp: a circle seal or a box, with a word in it."""
    rng, fonts = page.rng, page.fonts
    short = min(image.size)
    d = max(24, round(short * rng.uniform(0.14, 0.3)))
    colour = [(180, 25, 40), (30, 60, 170), (110, 40, 150), (20, 110, 60)][_int(rng, 0, 3)]
    word = _pick(rng, STAMP_WORDS)
    round_seal = rng.random() < 0.6
    w, h = (d, d) if round_seal else (round(d * rng.uniform(1.4, 2.0)), round(d * rng.uniform(0.45, 0.6)))
    layer = Image.new("L", (w, h), 0)
    ld = ImageDraw.Draw(layer)
    stroke = max(1, d // 28)
    if round_seal:
        ld.ellipse([1, 1, w - 2, h - 2], outline=255, width=stroke * 2)
        inset = round(d * 0.13)
        ld.ellipse([inset, inset, w - 1 - inset, h - 1 - inset], outline=255, width=stroke)
        room = (w - 2 * inset) * 0.85
        # Small stars on the ring between the circles.
        for k in range(_int(rng, 0, 8)):
            a = 2 * math.pi * k / 8 + 0.3
            cx, cy, r = w / 2 + (w / 2 - inset / 2) * math.cos(a), h / 2 + (h / 2 - inset / 2) * math.sin(a), inset / 5
            ld.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        ld.rectangle([1, 1, w - 2, h - 2], outline=255, width=stroke * 2)
        if rng.random() < 0.5:
            inset = stroke * 4
            ld.rectangle([inset, inset, w - 1 - inset, h - 1 - inset], outline=255, width=stroke)
        room = w * 0.8
    size = h * (0.3 if round_seal else 0.5)
    font = fonts(size)
    while size > 6 and font.getlength(word) > room:
        size *= 0.9
        font = fonts(size)
    ld.text(
        (w / 2, h / 2), word, font=font, fill=255, anchor="mm", stroke_width=1 if size >= 14 else 0, stroke_fill=255
    )
    layer = layer.rotate(float(rng.uniform(-35, 35)), resample=Image.Resampling.BICUBIC, expand=True)
    # Uneven inking: scale the mask by coarse noise and an overall opacity.
    lw, lh = layer.size
    grain = _value_noise(rng, lh, lw, max(4.0, d / 6))
    opacity = rng.uniform(0.55, 0.95)
    alpha = np.asarray(layer, dtype=np.float32) * (opacity * (0.55 + 0.45 * grain))
    mask = Image.fromarray(alpha.astype(np.uint8), "L")
    x = _int(rng, -lw // 6, max(-lw // 6, image.width - lw * 5 // 6))
    y = _int(rng, -lh // 6, max(-lh // 6, image.height - lh * 5 // 6))
    image.paste(Image.new("RGB", layer.size, colour), (x, y), mask)


def _signature(page: _Page, y_hint: int) -> None:
    rng = page.rng
    short = page.right - page.left
    sw = short * rng.uniform(0.22, 0.45)
    sh = sw * rng.uniform(0.18, 0.35)
    x0 = page.left + rng.uniform(0, max(1.0, page.width - sw))
    yc = min(max(y_hint, page.top + sh), page.bottom - sh)
    t = np.linspace(0.0, 1.0, 240)
    loops = rng.uniform(3, 9)
    phase = rng.uniform(0, 2 * np.pi)
    radius = sh * 0.35 * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 6)))
    x = x0 + sw * t + radius * np.cos(2 * np.pi * loops * t + phase)
    y = yc + radius * np.sin(2 * np.pi * loops * t + phase) * rng.uniform(1.0, 1.8)
    y += sh * 0.25 * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t + rng.uniform(0, 6))
    ink = (_int(rng, 10, 40), _int(rng, 20, 60), _int(rng, 90, 170)) if rng.random() < 0.7 else page.ink
    width = max(1, round(page.body / 8 * rng.uniform(0.8, 1.6)))
    page.draw.line(list(zip(x.tolist(), y.tolist(), strict=True)), fill=ink, width=width, joint="curve")
    if rng.random() < 0.6:  # the line signed on, and a label under it
        base = yc + sh * 0.9
        page.draw.line([(x0, base), (x0 + sw, base)], fill=page.ink, width=1)
        font = page.fonts(page.body * 0.85)
        page.draw.text(
            (x0, base + 2), _pick(rng, ("Firma", "Signature", "Fdo.", "El director")), font=font, fill=page.ink
        )


def render_documents(width: int, height: int, rng: np.random.Generator) -> tuple[Image.Image, Info]:
    paper = _paper_colour(rng)
    image = Image.new("RGB", (width, height), paper)
    short = min(width, height)
    # Body text size, log-uniform: small print up to large type on big images.
    body = round(math.exp(rng.uniform(math.log(8), math.log(max(9.0, min(36.0, short / 16))))))
    mx, my = round(width * rng.uniform(0.04, 0.1)), round(height * rng.uniform(0.03, 0.08))
    page = _Page(
        draw=ImageDraw.Draw(image),
        rng=rng,
        fonts=_Fonts(),
        left=mx,
        right=width - mx,
        top=my,
        bottom=height - my,
        body=body,
        leading=round(body * rng.uniform(1.2, 1.6)),
        ink=_ink_colour(rng),
        paper=paper,
    )
    page.y = page.top
    if rng.random() < 0.3:
        page.y = _letterhead(page)
        page.blocks.append("letterhead")
    last_y = page.y
    for _ in range(200):  # far more than fit
        if page.y + page.leading > page.bottom:
            break
        name, block, _weight = _BLOCKS[int(rng.choice(len(_BLOCKS), p=_BLOCK_P))]
        before = page.y
        page.y = block(page)
        if page.y > before:
            page.blocks.append(name)
            last_y = page.y
        else:  # the block did not fit: leave a gap and try something else
            page.y += page.leading
        page.y += round(body * rng.uniform(0.3, 1.0))
    signature = rng.random() < 0.4
    if signature:
        _signature(page, round(page.top + (last_y - page.top) * rng.uniform(0.6, 1.0)))
    stamps = 0
    while stamps < 3 and rng.random() < (0.45 if stamps == 0 else 0.25):
        _stamp(image, page)
        stamps += 1
    info: Info = {
        "paper": list(paper),
        "ink": list(page.ink),
        "body_px": body,
        "blocks": page.blocks,
        "stamps": stamps,
        "signature": signature,
    }
    return image, info


# --- textures ----------------------------------------------------------------------------------------


def _value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1]: random values on a grid of ``cell``-pixel cells, bicubic-interpolated."""
    gw = max(2, math.ceil(width / cell) + 1)
    gh = max(2, math.ceil(height / cell) + 1)
    grid = rng.random((gh, gw), dtype=np.float32)
    up = Image.fromarray(grid, "F").resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(up, dtype=np.float32), 0.0, 1.0)


def _fbm(rng: np.random.Generator, height: int, width: int, cell: float, octaves: int, gain: float = 0.5) -> np.ndarray:
    """Fractal (multi-octave) value noise, normalised to [0, 1]; ``gain`` is each octave's weight
    relative to the previous one (higher: rougher)."""
    total = np.zeros((height, width), dtype=np.float32)
    amplitude = 1.0
    for _ in range(octaves):
        total += np.float32(amplitude) * _value_noise(rng, height, width, max(1.5, cell))
        cell /= 2
        amplitude *= gain
    low, high = float(total.min()), float(total.max())
    return (total - low) / max(high - low, 1e-6)


def _ramp(t: np.ndarray, colours: list[RGB]) -> np.ndarray:
    """Map ``t`` in [0, 1] (H x W) through evenly spaced colour stops -> H x W x 3 float32."""
    stops = np.linspace(0.0, 1.0, len(colours))
    table = np.asarray(colours, dtype=np.float32)
    out = np.empty((*t.shape, 3), dtype=np.float32)
    for c in range(3):
        out[..., c] = np.interp(t, stops, table[:, c])
    return out


def _coords(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(height, dtype=np.float32)[:, None], np.arange(width, dtype=np.float32)[None, :]


def _palette(rng: np.random.Generator, n: int) -> list[RGB]:
    return [_vivid(rng) if rng.random() < 0.6 else _colour(rng) for _ in range(n)]


def _tex_noise(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, Info]:
    cell = min(h, w) * rng.uniform(0.05, 0.5)
    # Enough octaves to reach cells of 2..6 pixels: detail at every scale.
    octaves = max(2, math.ceil(math.log2(cell / rng.uniform(1.5, 4))) + 1)
    gain = rng.uniform(0.45, 0.75)
    t = _fbm(rng, h, w, cell, octaves, gain)
    if rng.random() < 0.3:  # turbulence-like ridges
        t = 1.0 - np.abs(2.0 * t - 1.0)
    return _ramp(t, _palette(rng, _int(rng, 2, 4))), {
        "octaves": octaves,
        "cell_px": round(cell, 1),
        "gain": round(gain, 3),
    }


def _tex_gradient(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, Info]:
    y, x = _coords(h, w)
    radial = rng.random() < 0.35
    if radial:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        t = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / (max(h, w) * rng.uniform(0.5, 1.4))
    else:
        a = rng.uniform(0, 2 * np.pi)
        s = x * math.cos(a) + y * math.sin(a)
        t = (s - s.min()) / max(float(s.max() - s.min()), 1.0)
    t = np.clip(np.broadcast_to(t, (h, w)), 0.0, 1.0)
    return _ramp(t, _palette(rng, _int(rng, 2, 3))), {"radial": radial}


def _tex_stripes(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, Info]:
    y, x = _coords(h, w)
    a = rng.uniform(0, np.pi)
    period = math.exp(rng.uniform(math.log(4), math.log(max(5.0, min(h, w) / 3))))
    phase = 2 * np.pi * (x * math.cos(a) + y * math.sin(a)) / period
    warp = rng.random() < 0.4
    if warp:  # marble / wood grain
        phase = phase + rng.uniform(2, 10) * _fbm(rng, h, w, min(h, w) * rng.uniform(0.1, 0.4), 3)
    wave = 0.5 + 0.5 * np.sin(phase)
    hard = rng.random() < 0.5
    if hard:
        wave = (wave > rng.uniform(0.3, 0.7)).astype(np.float32)
    return _ramp(np.broadcast_to(wave, (h, w)), _palette(rng, 2)), {
        "period_px": round(period, 1),
        "warped": warp,
        "hard": hard,
    }


def _tex_checker(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, Info]:
    y, x = _coords(h, w)
    a = rng.uniform(0, np.pi / 2) if rng.random() < 0.5 else 0.0
    cell = math.exp(rng.uniform(math.log(4), math.log(max(5.0, min(h, w) / 3))))
    u = (x * math.cos(a) + y * math.sin(a)) / cell
    v = (-x * math.sin(a) + y * math.cos(a)) / cell
    t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    return _ramp(t, _palette(rng, 2)), {"cell_px": round(cell, 1), "angle_deg": round(math.degrees(a), 1)}


def _tex_dots(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, Info]:
    y, x = _coords(h, w)
    pitch = math.exp(rng.uniform(math.log(6), math.log(max(7.0, min(h, w) / 4))))
    radius = pitch * rng.uniform(0.15, 0.45)
    dx = (x % pitch) - pitch / 2
    dy = ((y + (pitch / 2 if rng.random() < 0.5 else 0)) % pitch) - pitch / 2
    t = (dx**2 + dy**2 <= radius**2).astype(np.float32)
    return _ramp(t, _palette(rng, 2)), {"pitch_px": round(pitch, 1)}


_TEXTURES: dict[str, Callable[[np.random.Generator, int, int], tuple[np.ndarray, Info]]] = {
    "noise": _tex_noise,
    "gradient": _tex_gradient,
    "stripes": _tex_stripes,
    "checker": _tex_checker,
    "dots": _tex_dots,
}
_TEXTURE_NAMES = tuple(_TEXTURES)


def render_textures(width: int, height: int, rng: np.random.Generator) -> tuple[Image.Image, Info]:
    h, w = height, width
    if rng.random() < 0.35:  # blend two patterns through a soft noise mask
        a, b = (str(n) for n in rng.choice(_TEXTURE_NAMES, size=2, replace=False))
        first, _ = _TEXTURES[a](rng, h, w)
        second, _ = _TEXTURES[b](rng, h, w)
        mask = _fbm(rng, h, w, min(h, w) * rng.uniform(0.15, 0.6), 3)
        edge = rng.uniform(0.02, 0.3)
        mask = np.clip((mask - 0.5) / edge + 0.5, 0.0, 1.0)[..., None]
        pixels = first * (1.0 - mask) + second * mask
        info: Info = {"pattern": "blend", "layers": [a, b]}
    else:
        name = _pick(rng, _TEXTURE_NAMES)
        pixels, extra = _TEXTURES[name](rng, h, w)
        info = {"pattern": name, **extra}
    # Fine grain (always on smooth gradients): multiplicative noise with 1.5..4-pixel cells.
    grain = rng.uniform(0.1, 0.4) if info["pattern"] == "gradient" or rng.random() < 0.5 else 0.0
    if grain:
        fine = _fbm(rng, h, w, rng.uniform(3, 8), 2, 0.7)
        pixels = pixels * (1.0 + np.float32(grain) * (fine[..., None] - 0.5))
    info["grain"] = round(grain, 3)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB"), info


# --- shapes ------------------------------------------------------------------------------------------


def _polygon_points(rng: np.random.Generator, cx: float, cy: float, r: float, star: bool) -> list[tuple[float, float]]:
    n = _int(rng, 5, 8) if star else _int(rng, 3, 8)
    if star:
        angles = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) + rng.uniform(0, np.pi)
        radii = np.where(np.arange(2 * n) % 2 == 0, r, r * rng.uniform(0.35, 0.6))
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=n))
        radii = r * rng.uniform(0.6, 1.0, size=n)
    return list(zip((cx + radii * np.cos(angles)).tolist(), (cy + radii * np.sin(angles)).tolist(), strict=True))


_SHAPE_KINDS = ("rectangle", "ellipse", "line", "polygon", "star", "pieslice")


def render_shapes(width: int, height: int, rng: np.random.Generator) -> tuple[Image.Image, Info]:
    background = _colour(rng) if rng.random() < 0.5 else _vivid(rng)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    count = _int(rng, 4, 16)
    drawn: dict[str, int] = {}
    for _ in range(count):
        kind = _pick(rng, _SHAPE_KINDS)
        drawn[kind] = drawn.get(kind, 0) + 1
        fill = _vivid(rng) if rng.random() < 0.7 else _colour(rng)
        outline = _colour(rng) if rng.random() < 0.3 else None
        outline_w = _int(rng, 1, max(1, short // 64))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = short * rng.uniform(0.04, 0.3), short * rng.uniform(0.04, 0.3)
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        if kind == "rectangle":
            if rng.random() < 0.3:
                draw.rounded_rectangle(box, radius=min(rx, ry) * 0.4, fill=fill, outline=outline, width=outline_w)
            else:
                draw.rectangle(box, fill=fill, outline=outline, width=outline_w)
        elif kind == "ellipse":
            draw.ellipse(box, fill=fill, outline=outline, width=outline_w)
        elif kind == "line":
            end = (rng.uniform(0, width), rng.uniform(0, height))
            draw.line([(cx, cy), end], fill=fill, width=_int(rng, 1, max(2, short // 24)))
        elif kind in ("polygon", "star"):
            points = _polygon_points(rng, cx, cy, max(rx, ry), star=kind == "star")
            draw.polygon(points, fill=fill, outline=outline, width=outline_w)
        else:
            start = rng.uniform(0, 360)
            draw.pieslice(box, start, start + rng.uniform(40, 320), fill=fill, outline=outline, width=outline_w)
    return image, {"background": list(background), "shapes": count, "by_kind": dict(sorted(drawn.items()))}


RENDERERS: dict[str, Renderer] = {
    DOCUMENTS: render_documents,
    TEXTURES: render_textures,
    SHAPES: render_shapes,
}
