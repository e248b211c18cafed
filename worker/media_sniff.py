"""What media bytes are, from their first bytes: the containers the worker opens, each with the one
FFmpeg demuxer that reads it, and a name for data that is none of them (for the refusal).

Shared by :mod:`worker.audio` and :mod:`worker.video`: a file is recognised by its signature and
opened with ``av.open(..., format=container.demuxer)``, so FFmpeg never probes user data with
every demuxer it has; once open, its header's length is read the same way for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import av


@dataclass(frozen=True)
class Container:
    """An allowed container: its name in messages, the FFmpeg demuxer that reads it, how its files begin."""

    name: str
    demuxer: str
    matches: Callable[[bytes], bool] = field(repr=False, compare=False)


def _mp3_frame(head: bytes) -> bool:
    return len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06 != 0


def _adts(head: bytes) -> bool:
    return len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0


def _iso_media(head: bytes) -> bool:
    """MP4, MOV, M4A, 3GP: ISO base media boxes (the first box's type after its 4-byte size)."""
    return head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free")


def _ebml(head: bytes) -> bool:
    """WebM and Matroska: an EBML header."""
    return head[:4] == b"\x1a\x45\xdf\xa3"


WAV = Container("WAV", "wav", lambda head: head[:4] == b"RIFF" and head[8:12] == b"WAVE")
FLAC = Container("FLAC", "flac", lambda head: head[:4] == b"fLaC")
OGG = Container("OGG", "ogg", lambda head: head[:4] == b"OggS")
MP4 = Container("MP4", "mov", _iso_media)
WEBM = Container("WebM", "matroska", _ebml)
MP3 = Container("MP3", "mp3", lambda head: head[:3] == b"ID3" or _mp3_frame(head))
AAC = Container("AAC", "aac", _adts)


def find(data: bytes, containers: tuple[Container, ...]) -> Container | None:
    """The first of ``containers`` whose signature ``data`` begins with."""
    head = data[:16]
    return next((container for container in containers if container.matches(head)), None)


def describe_other(data: bytes) -> str:
    """What data of no allowed container is, so the message helps (an image, an HTML page…)."""
    head = data[:64].lstrip().lower()
    for test, name in (
        (head.startswith(b"\x89png"), "PNG"), (head.startswith(b"\xff\xd8\xff"), "JPEG"), (head.startswith(b"gif8"), "GIF"),
        (head.startswith((b"<!doctype html", b"<html")), "HTML"), (head.startswith(b"%pdf"), "PDF"),
        (head[:1] in (b"{", b"["), "JSON"),
    ):  # fmt: skip
        if test:
            return f"{name} data"
    return "data"


def short_error(exc: BaseException) -> str:
    """An FFmpeg (or other) error as at most 80 characters, for a message."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text if len(text) <= 80 else text[:79] + "…"


def declared_seconds(opened: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    """The length the header declares: the stream's, else the container's; None when neither says."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return opened.duration / av.time_base if opened.duration else None
