"""The output file formats (images and animations), each with its name, content type and file extension."""

from __future__ import annotations

from enum import StrEnum
from typing import Self


class MediaFormat(StrEnum):
    """Members are ``NAME = value, content_type, extension``; the value is the format's name."""

    content_type: str
    extension: str

    def __new__(cls, value: str, content_type: str, extension: str) -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.content_type = content_type
        member.extension = extension
        return member

    @classmethod
    def content_types(cls) -> dict[Self, str]:
        return {member: member.content_type for member in cls}

    @classmethod
    def extensions(cls) -> dict[Self, str]:
        return {member: member.extension for member in cls}


class ImageFormat(MediaFormat):
    PNG = "png", "image/png", "png"
    WEBP = "webp", "image/webp", "webp"
    JPEG = "jpeg", "image/jpeg", "jpg"


class VideoFormat(MediaFormat):
    GIF = "gif", "image/gif", "gif"
    MP4 = "mp4", "video/mp4", "mp4"
    WEBP = "webp", "image/webp", "webp"
