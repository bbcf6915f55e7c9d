"""Animations: GIF, WebP and MP4 round trips (frame count, size, colours), deterministic bytes,
metadata, and hostile input videos: every rejection is InvalidArgument naming the field."""

from __future__ import annotations

import functools
import io
import random
import struct
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genmesh.errors import InvalidArgument
from servers.media import video
from servers.media.video import CONTENT_TYPES, EXTENSIONS, VideoFormat, decode_video, encode_video, mp4_encoder

needs_h264 = pytest.mark.skipif(mp4_encoder() is None, reason="PyAV with an H.264 encoder is not installed")

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (128, 128, 128)]
# Worst mean absolute error per channel against the source frame, at the default quality 90.
TOLERANCE = {VideoFormat.GIF: 5.0, VideoFormat.WEBP: 4.0, VideoFormat.MP4: 4.0}
ALL_FORMATS = [
    pytest.param(VideoFormat.GIF, id="gif"),
    pytest.param(VideoFormat.WEBP, id="webp"),
    pytest.param(VideoFormat.MP4, id="mp4", marks=needs_h264),
]


def gradient(index: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """Frame ``index``: red rises left to right, green top to bottom, blue is 30 * index."""
    width, height = size
    red = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    green = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    blue = np.full((height, width), 30 * index)
    return Image.fromarray(np.stack([red, green, blue], -1).round().astype(np.uint8))


def gradients(count: int = 8, size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    return [gradient(index, size) for index in range(count)]


def solids(count: int = len(COLOURS), size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    return [Image.new("RGB", size, COLOURS[index % len(COLOURS)]) for index in range(count)]


def mean_error(decoded: Image.Image, source: Image.Image) -> float:
    """Mean absolute difference over the source's area (an MP4 frame may carry one padded row/column)."""
    width, height = source.size
    got = np.asarray(decoded, dtype=np.float64)[:height, :width]
    return float(np.abs(got - np.asarray(source.convert("RGB"), dtype=np.float64)).mean())


def pyav_video(frames: list[Image.Image], fmt: str, fps: int = 8) -> bytes:
    """A video written directly with PyAV (matroska has no frame count in its header)."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def still_png(size: tuple[int, int] = (20, 10), colour: tuple[int, int, int] = (1, 2, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_formats_tables() -> None:
    assert set(CONTENT_TYPES) == set(EXTENSIONS) == set(VideoFormat)
    assert CONTENT_TYPES == {"gif": "image/gif", "mp4": "video/mp4", "webp": "image/webp"}
    assert EXTENSIONS == {"gif": "gif", "mp4": "mp4", "webp": "webp"}
    assert VideoFormat("mp4") is VideoFormat.MP4


@needs_h264
def test_mp4_encoder_is_libx264() -> None:
    assert mp4_encoder() == "libx264"


def test_mp4_encoder_without_pyav(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    assert mp4_encoder() is None
    with pytest.raises(InvalidArgument) as error:
        encode_video(solids(2), "mp4")
    assert error.value.field == "output_format" and "output_format" in str(error.value)
    # Pillow formats still decode; anything else is refused, naming the field.
    assert len(decode_video(encode_video(solids(3), "gif"), field="clip")) == 3
    with pytest.raises(InvalidArgument, match="no PyAV") as error:
        decode_video(b"\x00\x00\x00\x20ftypisom" + bytes(64), field="clip")
    assert error.value.field == "clip"


def test_mp4_without_an_h264_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video, "mp4_encoder", lambda: None)
    with pytest.raises(InvalidArgument) as error:
        encode_video(solids(2), VideoFormat.MP4)
    assert error.value.field == "output_format"


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_solid_colours_round_trip(fmt: VideoFormat) -> None:
    frames = solids()
    decoded = decode_video(encode_video(frames, fmt, fps=10))
    assert len(decoded) == len(frames)
    for got, colour in zip(decoded, COLOURS, strict=True):
        assert got.mode == "RGB" and got.size == (64, 48)
        mean = np.asarray(got, dtype=np.float64).reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - colour).max() <= 4, (fmt, colour, mean)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_gradients_round_trip_in_order(fmt: VideoFormat) -> None:
    frames = gradients()
    decoded = decode_video(encode_video(frames, fmt, fps=10))
    assert [frame.size for frame in decoded] == [(64, 48)] * len(frames)
    for index, got in enumerate(decoded):
        errors = [mean_error(got, source) for source in frames]
        assert errors[index] <= TOLERANCE[fmt], (fmt, index, errors[index])
        assert min(range(len(frames)), key=errors.__getitem__) == index  # each frame is in its place


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_encoding_is_deterministic(fmt: VideoFormat) -> None:
    frames = gradients()
    first = encode_video(frames, fmt, fps=12, comment="a cat\nSteps: 4, Seed: 1")
    assert first == encode_video(gradients(), fmt, fps=12, comment="a cat\nSteps: 4, Seed: 1")
    assert first != encode_video(frames, fmt, fps=12, comment="a dog\nSteps: 4, Seed: 1")


# Run in a fresh interpreter: whether x264 output drifts depends on the process's heap, and the
# state left by a whole test session can hide it.
REPEAT_AFTER_OTHER_ENCODES = """
import random

from PIL import Image

from servers.media.video import encode_video


def frames(count, size, seed):
    rng = random.Random(seed)
    ramp = Image.linear_gradient("L")
    red, green = ramp.rotate(90).resize(size), ramp.resize(size)
    return [Image.merge("RGB", (red, green, Image.new("L", size, rng.randrange(256)))) for _ in range(count)]


clip = frames(8, (64, 48), 0)
reference = encode_video(clip, "mp4", fps=12)
rng = random.Random(0)
changed = 0
for _ in range(12):
    size = (rng.randrange(1, 90), rng.randrange(1, 90))
    encode_video(frames(3, size, rng.random()), "mp4", fps=rng.randrange(1, 61))
    changed += encode_video(clip, "mp4", fps=12) != reference
print(changed)
"""


@needs_h264
def test_mp4_bytes_do_not_depend_on_earlier_encodes() -> None:
    # Without x264's cpu-independent switch, re-encoding a clip after encodes of other sizes gave
    # different bytes for about a third of the tries.
    result = subprocess.run(
        [sys.executable, "-c", REPEAT_AFTER_OTHER_ENCODES],
        cwd=Path(__file__).resolve().parents[2],  # the repository root, on the child's sys.path
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0", "MP4 bytes changed after other encodes"


def test_gif_container() -> None:
    data = encode_video(solids(), "gif", fps=10)
    assert data.startswith(b"GIF89a")
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "GIF" and image.is_animated and image.n_frames == len(COLOURS)
        assert image.size == (64, 48)
        assert image.info["loop"] == 0  # forever
        assert "comment" not in image.info
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            durations.append(image.info["duration"])
    assert durations == [100] * len(COLOURS)


@pytest.mark.parametrize("fps", [1, 2, 4, 5, 10, 20, 25, 50])
def test_gif_frame_duration(fps: int) -> None:
    with Image.open(io.BytesIO(encode_video(solids(3), "gif", fps=fps))) as image:
        assert image.info["duration"] == round(1000 / fps)
        assert image.info["loop"] == 0


@pytest.mark.parametrize(
    ("fps", "ms"),
    [
        pytest.param(8, 120, id="8fps-125ms-rounded-to-centiseconds"),
        pytest.param(15, 70, id="15fps-67ms-nearest-not-truncated"),
        pytest.param(30, 30, id="30fps"),
        pytest.param(60, 20, id="60fps-clamped-to-2cs"),  # browsers play 0-1 cs as 10 cs
    ],
)
def test_gif_frame_duration_is_whole_centiseconds(fps: int, ms: int) -> None:
    with Image.open(io.BytesIO(encode_video(solids(3), "gif", fps=fps))) as image:
        assert image.info["duration"] == ms


@pytest.mark.parametrize("fps", [1, 8, 10, 24, 60])
def test_webp_container(fps: int) -> None:
    data = encode_video(solids(), "webp", fps=fps)
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP" and image.is_animated and image.n_frames == len(COLOURS)
        assert image.size == (64, 48)
        assert image.info["loop"] == 0
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            image.load()
            durations.append(image.info["duration"])
        assert 0x010E not in image.getexif()
    assert durations == [round(1000 / fps)] * len(COLOURS)


@needs_h264
@pytest.mark.parametrize("fps", [1, 8, 24, 60])
def test_mp4_container(fps: int) -> None:
    import av

    data = encode_video(gradients(), "mp4", fps=fps)
    assert data[4:12] == b"ftypisom"
    assert 0 < data.find(b"moov") < data.find(b"mdat")  # +faststart: the index comes first
    with av.open(io.BytesIO(data)) as container:
        assert "comment" not in container.metadata
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (64, 48)
        assert stream.average_rate == fps
        assert stream.frames == 8
        assert sum(1 for _ in container.decode(stream)) == 8


@needs_h264
def test_mp4_odd_sides_are_padded_to_even() -> None:
    import av

    frames = gradients(size=(65, 47))
    data = encode_video(frames, "mp4", fps=10)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (66, 48)
    decoded = decode_video(data)
    assert len(decoded) == 8 and {frame.size for frame in decoded} == {(66, 48)}
    for got, source in zip(decoded, frames, strict=True):
        assert mean_error(got, source) <= TOLERANCE[VideoFormat.MP4]
        pixels = np.asarray(got, dtype=np.float64)
        # The added column and row repeat the edge, not black.
        assert np.abs(pixels[:, 65] - pixels[:, 64]).mean() <= 4
        assert np.abs(pixels[47] - pixels[46]).mean() <= 4


@needs_h264
def test_mp4_one_frame_and_odd_one_pixel() -> None:
    decoded = decode_video(encode_video([Image.new("RGB", (1, 1), (200, 100, 50))], "mp4", fps=1))
    assert len(decoded) == 1 and decoded[0].size == (2, 2)
    assert all(abs(a - b) <= 6 for a, b in zip(decoded[0].getpixel((0, 0)), (200, 100, 50), strict=True))


@pytest.mark.parametrize("fmt", [pytest.param("webp", id="webp"), pytest.param("mp4", id="mp4", marks=needs_h264)])
def test_quality_sets_the_size(fmt: str) -> None:
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(4)]
    sizes = [len(encode_video(noise, fmt, quality=quality)) for quality in (10, 50, 95)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_frames_in_other_modes_are_encoded_as_rgb() -> None:
    frames = [Image.new("L", (16, 8), 200), Image.new("RGBA", (16, 8), (0, 0, 255, 255)), Image.new("P", (16, 8))]
    decoded = decode_video(encode_video(frames, "gif"))
    assert [frame.getpixel((2, 2)) for frame in decoded] == [(200, 200, 200), (0, 0, 255), (0, 0, 0)]


COMMENT = "a cat, in the rain\nNegative prompt: dog\nSteps: 25, Sampler: Euler a, Seed: 1"
UNICODE_COMMENT = "un chat sous la pluie, ünïcode 😺 猫"


@pytest.mark.parametrize("comment", [COMMENT, UNICODE_COMMENT])
def test_gif_comment(comment: str) -> None:
    with Image.open(io.BytesIO(encode_video(solids(3), "gif", comment=comment))) as image:
        assert image.info["comment"].decode("utf-8") == comment


def test_gif_long_comment_is_cut_on_a_character_boundary() -> None:
    # 1 + 2 * 40,000 bytes: byte 65,000 falls in the middle of an "é".
    with Image.open(io.BytesIO(encode_video(solids(2), "gif", comment="x" + "é" * 40_000))) as image:
        stored = image.info["comment"]
    assert len(stored) <= 65_000
    assert stored.decode("utf-8") == "x" + "é" * 32_499


def test_webp_comment_in_exif_image_description() -> None:
    with Image.open(io.BytesIO(encode_video(solids(3), "webp", comment=COMMENT))) as image:
        assert image.getexif()[0x010E] == COMMENT


def test_webp_unicode_comment_is_kept_as_utf8() -> None:
    with Image.open(io.BytesIO(encode_video(solids(3), "webp", comment=UNICODE_COMMENT))) as image:
        # EXIF ASCII fields are read back as Latin-1 by Pillow; the bytes are UTF-8, not "?".
        assert image.getexif()[0x010E].encode("latin-1").decode("utf-8") == UNICODE_COMMENT


@needs_h264
@pytest.mark.parametrize("comment", [COMMENT, UNICODE_COMMENT])
def test_mp4_comment(comment: str) -> None:
    import av

    with av.open(io.BytesIO(encode_video(solids(3), "mp4", comment=comment))) as container:
        assert container.metadata["comment"] == comment


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_no_frames_is_invalid(fmt: VideoFormat) -> None:
    with pytest.raises(InvalidArgument) as error:
        encode_video([], fmt)
    assert error.value.field == "num_frames" and "num_frames" in str(error.value)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@pytest.mark.parametrize("fps", [0, -1, 61, 1000])
def test_fps_out_of_range_is_invalid(fmt: VideoFormat, fps: int) -> None:
    with pytest.raises(InvalidArgument) as error:
        encode_video(solids(2), fmt, fps=fps)
    assert error.value.field == "fps" and "fps" in str(error.value)


@pytest.mark.parametrize("fps", [1, 60])
def test_fps_bounds_are_accepted(fps: int) -> None:
    assert len(decode_video(encode_video(solids(2), "gif", fps=fps))) == 2


def gif_with_screen(width: int, height: int) -> bytes:
    """A small GIF whose logical screen claims ``width`` x ``height``."""
    data = encode_video(solids(3, size=(8, 8)), "gif")
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


@functools.cache
def sample(fmt: str) -> bytes:
    """A 7-frame 64x48 clip (8 for MP4), encoded once per test run, when a test first needs it."""
    return encode_video(gradients() if fmt == "mp4" else solids(), fmt)


BAD_VIDEOS = [
    pytest.param(lambda: b"", {}, id="empty"),
    pytest.param(lambda: random.Random(0).randbytes(4096), {}, id="garbage"),
    pytest.param(lambda: b"this is plain text, not a video at all", {}, id="text"),
    pytest.param(lambda: sample("gif")[: len(sample("gif")) // 2], {}, id="truncated-gif"),
    pytest.param(lambda: sample("gif")[:156], {}, id="gif-cut-in-an-extension-block"),
    pytest.param(lambda: sample("gif")[:159], {}, id="gif-cut-in-a-graphic-control-block"),
    pytest.param(lambda: sample("webp")[: len(sample("webp")) // 2], {}, id="truncated-webp"),
    pytest.param(lambda: sample("gif"), {"max_frames": 4}, id="gif-too-many-frames"),
    pytest.param(lambda: sample("webp"), {"max_frames": 4}, id="webp-too-many-frames"),
    pytest.param(lambda: sample("gif"), {"max_side": 32}, id="gif-too-large"),
    pytest.param(lambda: sample("webp"), {"max_side": 32}, id="webp-too-large"),
    pytest.param(lambda: still_png((40, 10)), {"max_side": 32}, id="png-too-wide"),
    pytest.param(lambda: gif_with_screen(4000, 4000), {}, id="gif-screen-over-max-side"),
    pytest.param(lambda: gif_with_screen(3000, 8), {}, id="gif-screen-too-wide"),
    pytest.param(lambda: gif_with_screen(10_000, 10_000), {}, id="gif-pillow-bomb-warning"),
    pytest.param(lambda: gif_with_screen(60_000, 60_000), {}, id="gif-pillow-bomb-error"),
    pytest.param(lambda: sample("mp4"), {"max_frames": 4}, id="mp4-too-many-frames", marks=needs_h264),
    pytest.param(
        lambda: pyav_video(gradients(), "matroska"),
        {"max_frames": 4},
        id="mkv-too-many-frames-uncounted",
        marks=needs_h264,
    ),
    pytest.param(lambda: sample("mp4"), {"max_side": 32}, id="mp4-too-large", marks=needs_h264),
    pytest.param(lambda: sample("mp4")[:200], {}, id="mp4-cut-in-the-index", marks=needs_h264),
    pytest.param(lambda: sample("mp4")[:48] + bytes(len(sample("mp4")) - 48), {}, id="mp4-zeroed", marks=needs_h264),
]


@pytest.mark.parametrize(("make", "limits"), BAD_VIDEOS)
def test_bad_videos_are_invalid_argument(make: Callable[[], bytes], limits: dict) -> None:
    with pytest.raises(InvalidArgument) as error:
        decode_video(make(), field="init_video_data", **limits)
    assert error.value.field == "init_video_data"
    assert str(error.value).startswith("init_video_data:")


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        pytest.param({"max_frames": 4}, "more than 4 frames", id="frames"),
        pytest.param({"max_side": 32}, "64x48", id="side"),
    ],
)
@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_limit_messages(fmt: VideoFormat, limits: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as error:
        decode_video(encode_video(solids(), fmt), field="clip", **limits)
    assert error.value.field == "clip"


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_limits_are_inclusive(fmt: VideoFormat) -> None:
    decoded = decode_video(encode_video(gradients(4), fmt), max_frames=4, max_side=64)
    assert len(decoded) == 4


def test_still_png_is_a_one_frame_video() -> None:
    decoded = decode_video(still_png((20, 10), (1, 2, 3)))
    assert len(decoded) == 1
    assert decoded[0].mode == "RGB" and decoded[0].size == (20, 10) and decoded[0].getpixel((5, 5)) == (1, 2, 3)


def test_transparent_gif_frames_come_out_on_white() -> None:
    frame = Image.new("P", (8, 8), 0)
    frame.putpalette([0, 0, 0, 255, 0, 0])
    buffer = io.BytesIO()
    frame.save(buffer, format="GIF", transparency=0)
    decoded = decode_video(buffer.getvalue())
    assert len(decoded) == 1 and decoded[0].getpixel((0, 0)) == (255, 255, 255)


@needs_h264
def test_matroska_decodes_with_pyav() -> None:
    frames = gradients(6)
    decoded = decode_video(pyav_video(frames, "matroska"))
    assert len(decoded) == 6
    assert all(mean_error(got, source) <= 6 for got, source in zip(decoded, frames, strict=True))


def assert_prefixes_decode_or_are_invalid(data: bytes, step: int = 1) -> None:
    """Every prefix of ``data`` is a (shorter) video or InvalidArgument, never another exception."""
    for cut in range(0, len(data), step):
        try:
            frames = decode_video(data[:cut], field="clip")
        except InvalidArgument as error:
            assert error.field == "clip", cut
        else:
            assert 1 <= len(frames) <= 8, cut


@pytest.mark.parametrize("fmt", [pytest.param("gif", id="gif"), pytest.param("webp", id="webp")])
def test_every_truncation_is_handled(fmt: str) -> None:
    assert_prefixes_decode_or_are_invalid(encode_video(solids(8), fmt))


@needs_h264
def test_mp4_truncations_are_handled() -> None:
    assert_prefixes_decode_or_are_invalid(encode_video(gradients(), "mp4"), step=53)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_random_corruption_is_handled(fmt: VideoFormat) -> None:
    data = encode_video(gradients(), fmt)
    rng = random.Random(1)
    for _ in range(40):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            frames = decode_video(bytes(damaged), field="clip")
        except InvalidArgument as error:
            assert error.field == "clip"
        else:
            assert 1 <= len(frames) <= 8 and all(frame.mode == "RGB" for frame in frames)
