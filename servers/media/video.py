"""Animations: encoding frames as GIF, animated WebP or MP4, and safe decoding of input videos.

GIF and WebP need only Pillow. MP4 (H.264, yuv420p, ``+faststart`` so browsers play it while it
downloads) is written with PyAV, whose wheels bundle FFmpeg: no system ffmpeg, about 35 MB
installed against imageio-ffmpeg's 170 MB, and it both encodes and decodes. Encoding is
deterministic: the same frames and parameters give the same bytes (the MP4 encoder runs
single-threaded for that reason; clips are short). Generation parameters travel with the file
where the format has a place for them: the GIF comment, WebP's EXIF ImageDescription, the MP4
``comment`` tag.

Decoding an uploaded video is hostile-input handling, as for images: the size is checked before
frames are decoded, the frame count is bounded while decoding (a tiny file can claim thousands
of frames), and anything unreadable is ``InvalidArgument`` naming the request field.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import warnings
from fractions import Fraction

from PIL import Image, ImageSequence, UnidentifiedImageError

from genmesh.errors import InvalidArgument
from servers.media.formats import VideoFormat
from servers.media.images import to_rgb

MAX_INPUT_FRAMES = 256
MAX_INPUT_SIDE = 2048
MAX_INPUT_PIXELS = 2048 * 2048  # per frame
MAX_FPS = 60


CONTENT_TYPES = VideoFormat.content_types()  # also each format's .content_type and .extension
EXTENSIONS = VideoFormat.extensions()
# H.264 encoders in order of preference; PyAV's wheels ship libopenh264 when not libx264.
_H264_ENCODERS = ("libx264", "libopenh264", "h264")


def mp4_encoder() -> str | None:
    """The H.264 encoder this server can use, or None (PyAV missing or built without one)."""
    try:
        import av
    except ImportError:
        return None
    available = av.codecs_available
    return next((name for name in _H264_ENCODERS if name in available), None)


def _frame_ms(fps: int) -> int:
    return max(1, round(1000 / fps))


def _gif_frame_ms(fps: int) -> int:
    """GIF delays are whole centiseconds (Pillow truncates, so round here instead), and browsers
    play a delay under 2 cs as 10 cs: above 50 fps a GIF is written at 50 fps, not slowed to 10."""
    return 10 * max(2, round(100 / fps))


def _check(frames: list[Image.Image], fps: int) -> None:
    if not frames:
        raise InvalidArgument("num_frames: there are no frames to encode", field="num_frames")
    if not 1 <= fps <= MAX_FPS:
        raise InvalidArgument(f"fps must be between 1 and {MAX_FPS} (got {fps})", field="fps")


def _encode_gif(frames: list[Image.Image], fps: int, comment: str | None) -> bytes:
    buffer = io.BytesIO()
    # One adaptive palette per frame (Pillow's default for RGB input); loop forever.
    first, *rest = (frame.convert("RGB") for frame in frames)
    # Cut at 65,000 bytes without splitting a UTF-8 sequence.
    options = {"comment": comment.encode("utf-8")[:65_000].decode("utf-8", "ignore").encode("utf-8")} if comment else {}
    first.save(
        buffer, format="GIF", save_all=True, append_images=rest, duration=_gif_frame_ms(fps), loop=0, optimize=False,
        disposal=1, **options,
    )  # fmt: skip
    return buffer.getvalue()


def _encode_webp(frames: list[Image.Image], fps: int, comment: str | None, quality: int) -> bytes:
    buffer = io.BytesIO()
    first, *rest = (frame.convert("RGB") for frame in frames)
    options = {}
    if comment:
        exif = Image.Exif()
        # ImageDescription, as UTF-8 bytes: Pillow would write a str as ASCII with "?" for the rest.
        exif[0x010E] = comment.encode("utf-8")
        options["exif"] = exif.tobytes()
    first.save(
        buffer, format="WEBP", save_all=True, append_images=rest, duration=_frame_ms(fps), loop=0, quality=quality,
        method=4, minimize_size=False, **options,
    )  # fmt: skip
    return buffer.getvalue()


def _encode_mp4(frames: list[Image.Image], fps: int, comment: str | None, quality: int) -> bytes:
    encoder = mp4_encoder()
    if encoder is None:
        raise InvalidArgument(
            "output_format: MP4 needs PyAV with an H.264 encoder on the server; use GIF or WebP", field="output_format"
        )
    # +faststart moves the index in front of the media data in a second pass that reopens the
    # output by name, so it cannot write to a BytesIO (FFmpeg fails on close): use a temporary file.
    with tempfile.TemporaryDirectory(prefix="genmesh-mp4-") as workdir:
        path = os.path.join(workdir, "video.mp4")
        _write_mp4(path, frames, fps, comment, quality, encoder)
        with open(path, "rb") as file:
            return file.read()


def _write_mp4(path: str, frames: list[Image.Image], fps: int, comment: str | None, quality: int, encoder: str) -> None:
    import av

    width, height = frames[0].size
    # yuv420p needs even sides: pad by one pixel (edge-replicated) rather than crop content away.
    even = (width + width % 2, height + height % 2)
    with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        if comment:
            container.metadata["comment"] = comment
        stream = container.add_stream(encoder, rate=Fraction(fps, 1))
        stream.width, stream.height = even
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1  # deterministic bytes
        if encoder == "libx264":
            # CRF from the 1..100 quality scale: 90 -> 18 (visually lossless), 50 -> 28, 1 -> 51.
            crf = round(51 - (quality / 100) * 37)
            # Without cpu-independent (x264: the same output on any CPU, by leaving out its SIMD code
            # that is not bit-exact) the same frames gave different bytes within one process, about
            # one encode in three after encodes of other sizes: thread_count = 1 is not enough.
            stream.options = {
                "crf": str(max(0, min(51, crf))),
                "preset": "medium",
                "x264-params": "cpu-independent=1",
            }
        for frame in frames:
            rgb = frame.convert("RGB")
            if rgb.size != even:
                padded = Image.new("RGB", even)
                padded.paste(rgb, (0, 0))
                if even[0] != width:
                    padded.paste(rgb.crop((width - 1, 0, width, height)), (width, 0))
                if even[1] != height:
                    padded.paste(padded.crop((0, height - 1, even[0], height)), (0, height))
                rgb = padded
            for packet in stream.encode(av.VideoFrame.from_image(rgb)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def encode_video(
    frames: list[Image.Image],
    fmt: VideoFormat | str = VideoFormat.GIF,
    *,
    fps: int = 8,
    comment: str | None = None,
    quality: int = 90,
) -> bytes:
    """Encode ``frames`` (all the same size) at ``fps``; ``comment`` is stored in the file's metadata."""
    fmt = VideoFormat(fmt)
    _check(frames, fps)
    if fmt is VideoFormat.GIF:
        return _encode_gif(frames, fps, comment)
    if fmt is VideoFormat.WEBP:
        return _encode_webp(frames, fps, comment, quality)
    return _encode_mp4(frames, fps, comment, quality)


def _too_large(field: str, width: int, height: int, max_side: int) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: frames are {width}x{height}; at most {max_side} px a side and {MAX_INPUT_PIXELS} pixels",
        field=field,
    )


def _too_long(field: str, max_frames: int) -> InvalidArgument:
    return InvalidArgument(f"{field}: the video has more than {max_frames} frames", field=field)


def _decode_animated_image(image: Image.Image, field: str, max_frames: int, max_side: int) -> list[Image.Image]:
    width, height = image.size
    if width > max_side or height > max_side or width * height > MAX_INPUT_PIXELS:
        raise _too_large(field, width, height, max_side)
    frames = []
    for frame in ImageSequence.Iterator(image):
        if len(frames) == max_frames:
            raise _too_long(field, max_frames)
        frame.load()
        frames.append(to_rgb(frame.copy()))
    return frames


def _decode_with_av(data: bytes, field: str, max_frames: int, max_side: int) -> list[Image.Image]:
    try:
        import av
    except ImportError:
        raise InvalidArgument(f"{field}: this server decodes GIF and WebP videos only (no PyAV)", field=field) from None
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise InvalidArgument(f"{field}: the file has no video stream", field=field)
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width < 1 or height < 1 or width > max_side or height > max_side or width * height > MAX_INPUT_PIXELS:
                raise _too_large(field, width, height, max_side)
            if stream.frames and stream.frames > max_frames:
                raise _too_long(field, max_frames)
            frames = []
            for frame in container.decode(stream):
                if len(frames) == max_frames:
                    raise _too_long(field, max_frames)
                if (frame.width, frame.height) != (width, height):
                    raise InvalidArgument(f"{field}: the frame size changes inside the video", field=field)
                frames.append(frame.to_image().convert("RGB"))
    except InvalidArgument:
        raise
    except Exception as exc:  # av.FFmpegError and friends: not a video, or a damaged one
        raise InvalidArgument(
            f"{field}: not a video in a format this server decodes (GIF, WebP, MP4...): {type(exc).__name__}",
            field=field,
        ) from None
    if not frames:
        raise InvalidArgument(f"{field}: the video has no frames", field=field)
    return frames


def decode_video(
    data: bytes, *, field: str = "init_video", max_frames: int = MAX_INPUT_FRAMES, max_side: int = MAX_INPUT_SIDE
) -> list[Image.Image]:
    """Decode untrusted video bytes (animated GIF/WebP/PNG with Pillow, MP4/WebM/... with PyAV)
    into RGB frames; ``InvalidArgument`` naming ``field`` for anything too large, too long or broken.
    A still image decodes as a one-frame video."""
    if not data:
        raise InvalidArgument(f"{field}: empty video data", field=field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return _decode_animated_image(image, field, max_frames, max_side)
    except InvalidArgument:
        raise
    except UnidentifiedImageError:
        return _decode_with_av(data, field, max_frames, max_side)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument(f"{field}: rejected as a decompression bomb ({exc})", field=field) from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, KeyError, struct.error) as exc:
        # IndexError and struct.error: Pillow's GIF reader on a file cut inside a frame's extension block.
        raise InvalidArgument(f"{field}: the video data is damaged or truncated ({exc})", field=field) from None
