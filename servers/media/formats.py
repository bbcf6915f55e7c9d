"""An output file format (image or animation): its name, content type and file extension in one place."""

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
