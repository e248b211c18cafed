"""The bad-input corpus: malformed job inputs kept as data in ``cases.json``.

Each case is ``{"name", "input", "error_code", "error_contains": [...]}`` plus optionally:

- ``"http_status"``: RunPod's local API refuses the request itself with this status (a non-object
  ``input`` is a 422 from its FastAPI model) and the handler never runs; ``error_code`` and
  ``error_contains`` then describe the handler's answer when it is given that input directly (as
  RunPod's hosted queue, which does not check ``input``'s type, would);
- ``"xfail"``: the reason the worker answers this case wrongly today (a worker bug for the lead);
- ``"note"``: why the case exists, when the name does not say it.

Large or binary payloads are not stored: a value ``{"$gen": "<generator>", ...parameters}``
anywhere in ``input`` is replaced by what :data:`GENERATORS` ``[<generator>](**parameters)``
returns, so a 20000×20000 image bomb is a one-line recipe, not a file. Generators are
deterministic: the same case always sends the same bytes.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CASES_FILE = Path(__file__).with_name("cases.json")
NETGUARD_DIR = Path(__file__).with_name("netguard")

#: The made-up public host of the corpus's redirect cases (see ``netguard/sitecustomize.py``):
#: the guard resolves it to ``PUBLIC_IP`` and routes port 80 of that address to a local server.
PUBLIC_HOST = "images.example.test"
PUBLIC_IP = "93.184.216.34"


# --- Generators ------------------------------------------------------------------------------------


def _png_bytes(width: int, height: int, texture: bool = True) -> bytes:
    """A real RGB PNG; ``texture`` adds deterministic grain so the file is not trivially small."""
    from PIL import Image

    image = Image.new("RGB", (width, height), (200, 40, 40))
    if texture:
        image.putdata([((x * 37 + y * 11) % 256, (x * y) % 256, (x ^ y) % 256) for y in range(height) for x in range(width)])
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def gen_png(width: int = 64, height: int = 64) -> str:
    """base64 of a valid PNG (for cases where something else is wrong)."""
    return _b64(_png_bytes(width, height))


def gen_png_truncated(width: int = 64, height: int = 64, keep: float = 0.5) -> str:
    """base64 of a PNG cut after ``keep`` of its bytes: valid base64, truncated image."""
    data = _png_bytes(width, height)
    return _b64(data[: int(len(data) * keep)])


def gen_png_bomb(width: int = 20000, height: int = 20000) -> str:
    """base64 of a PNG whose header claims ``width``×``height`` but holds a few rows: a few
    hundred bytes that would need width*height*3 bytes of memory if decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 4, 9)
    return _b64(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def tiff_pages(pages: int, broken_page: int | None = None) -> bytes:
    """A little-endian TIFF of ``pages`` 1x1 grey pages (chained IFDs sharing one strip); the page
    ``broken_page`` lacks its width and height tags (Pillow raises TypeError when it reaches it)."""
    tags = ((256, 3, 1), (257, 3, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, None), (278, 3, 1), (279, 4, 1))
    ifd_bytes = 2 + len(tags) * 12 + 4
    strip = 8 + pages * ifd_bytes
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for page in range(pages):
        out += struct.pack("<H", len(tags))
        for tag, kind, value in tags:
            tag = tag + 1000 if page == broken_page and tag in (256, 257) else tag  # an unknown tag instead
            value = strip if value is None else value
            out += struct.pack("<HHIHH" if kind == 3 else "<HHII", tag, kind, 1, value, *((0,) if kind == 3 else ()))
        out += struct.pack("<I", 8 + (page + 1) * ifd_bytes if page < pages - 1 else 0)
    return bytes(out + b"\x80")


def gif_cut(frame: int, frames: int = 3) -> bytes:
    """An animated GIF of ``frames`` 8x8 frames, cut 5 bytes into the image descriptor of ``frame``."""
    from PIL import Image

    images = [Image.new("P", (8, 8), index) for index in range(frames)]
    for image in images:
        image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=100, optimize=False)
    data, start = buf.getvalue(), 0
    for _ in range(frame + 1):
        start = data.index(b"\x2c\x00\x00\x00\x00", start) + 1  # an image descriptor at (0, 0)
    return data[: start + 4]


def gen_tiff_pages(pages: int, broken_page: int | None = None) -> str:
    """base64 of :func:`tiff_pages`."""
    return _b64(tiff_pages(pages, broken_page))


def gen_gif_cut(frame: int) -> str:
    """base64 of :func:`gif_cut`."""
    return _b64(gif_cut(frame))


def gen_b64_text(text: str) -> str:
    """base64 of ``text`` (UTF-8): an HTML page, a plain sentence, an SVG…"""
    return _b64(text.encode())


def gen_b64_bad_length(width: int = 16, height: int = 16) -> str:
    """A PNG's base64 without padding, cut to 4n+1 characters: no encoder makes that length."""
    text = gen_png(width, height).rstrip("=")
    while len(text) % 4 != 1:
        text = text[:-1]
    return text


def gen_data_uri(header: str, width: int = 16, height: int = 16) -> str:
    """``header`` (e.g. ``data:text/plain;base64,``) followed by a valid PNG's base64."""
    return header + gen_png(width, height)


def gen_text(chars: int, unit: str = "a") -> str:
    """A string of ``chars`` characters (``unit`` repeated): an over-long prompt."""
    return (unit * (chars // len(unit) + 1))[:chars]


def gen_base64_filler(megabytes: float) -> str:
    """``megabytes`` MB of the base64 character ``A``: a payload over every size limit."""
    return "A" * int(megabytes * 1_000_000)


def gen_audio(kind: str = "wav", seconds: float = 1.0, rate: int = 16_000, keep: int | None = None, video: bool = False) -> str:
    """base64 of a tone in ``kind`` (tests/media_files.py), cut to its first ``keep`` bytes when given."""
    from tests.media_files import audio_file

    data = audio_file(kind, seconds, rate, video=video)
    return _b64(data[:keep] if keep is not None else data)


def gen_wav_header(rate: int = 16_000, declared_seconds: float = 1.0, actual_seconds: float = 1.0) -> str:
    """base64 of a WAV whose header declares another length or rate than it holds."""
    from tests.media_files import wav_header

    return _b64(wav_header(rate, 1, declared_seconds, actual_seconds))


def gen_video(
    container: str = "mp4", seconds: float = 1.0, audio: bool = False, fps: int = 16, width: int = 64, height: int = 64,
    keep: int | None = None, declares: float | None = None, frameless: bool = False,
) -> str:  # fmt: skip
    """base64 of a small video (a picture track, and a tone when ``audio``); cut to its first ``keep``
    bytes, with a header that ``declares`` another length, or with a picture track of no frames."""
    from tests.media_files import frameless_video, matroska_declaring, mp4_declaring, video_file

    data = frameless_video(container) if frameless else video_file(container, seconds, fps, (width, height), audio=audio)
    if declares is not None:
        data = mp4_declaring(data, declares) if container == "mp4" else matroska_declaring(data, declares)
    return _b64(data[:keep] if keep is not None else data)


def gen_nested(depth: int = 600, leaf: Any = "x") -> Any:
    """``leaf`` inside ``depth`` lists: [[[…"x"…]]]."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def gen_keys(count: int = 20000, prefix: str = "key") -> dict[str, int]:
    """An object of ``count`` keys, each unknown to the worker."""
    return {f"{prefix}{n}": 1 for n in range(count)}


GENERATORS: dict[str, Callable[..., Any]] = {
    "nested": gen_nested,
    "keys": gen_keys,
    "audio": gen_audio,
    "wav_header": gen_wav_header,
    "video": gen_video,
    "png": gen_png,
    "png_truncated": gen_png_truncated,
    "png_bomb": gen_png_bomb,
    "tiff_pages": gen_tiff_pages,
    "gif_cut": gen_gif_cut,
    "b64_text": gen_b64_text,
    "b64_bad_length": gen_b64_bad_length,
    "data_uri": gen_data_uri,
    "text": gen_text,
    "base64_filler": gen_base64_filler,
}


def expand(value: Any) -> Any:
    """``value`` with every ``{"$gen": ...}`` object replaced by its generated value."""
    if isinstance(value, dict):
        if "$gen" in value:
            params = {k: v for k, v in value.items() if k != "$gen"}
            return GENERATORS[value["$gen"]](**params)
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    return value


# --- Cases -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    raw_input: Any
    error_code: str
    error_contains: tuple[str, ...]
    http_status: int | None = None
    xfail: str | None = None
    note: str = ""

    def job_input(self) -> Any:
        return expand(self.raw_input)


_KNOWN_KEYS = {"name", "input", "error_code", "error_contains", "http_status", "xfail", "note"}


def load_cases(path: Path = CASES_FILE) -> list[Case]:
    """Every case of ``cases.json``; a malformed entry fails loudly (the corpus is test code too)."""
    cases = []
    for entry in json.loads(path.read_text(encoding="utf-8")):
        unknown = set(entry) - _KNOWN_KEYS
        if unknown or not {"name", "input", "error_code", "error_contains"} <= set(entry):
            raise ValueError(f"bad corpus entry {entry.get('name')!r}: unknown keys {sorted(unknown)} or a required key missing")
        cases.append(
            Case(
                name=entry["name"],
                raw_input=entry["input"],
                error_code=entry["error_code"],
                error_contains=tuple(entry["error_contains"]),
                http_status=entry.get("http_status"),
                xfail=entry.get("xfail"),
                note=entry.get("note", ""),
            )
        )
    names = [case.name for case in cases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate corpus case names: {duplicates}")
    return cases
