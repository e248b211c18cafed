"""The safetensors format, read with the standard library: a file's header, checked as the safetensors library does.

A file is an 8-byte little-endian length ``N``, ``N`` bytes of UTF-8 JSON (tensor name → ``dtype``,
``shape`` and ``data_offsets`` into the data that follows; an optional ``__metadata__`` of strings),
then the tensor data. The rules are those the safetensors library applies when ComfyUI opens a file:
a header of at most 100 MB starting with ``{``, each tensor's offsets matching its dtype and shape,
the tensors covering the data back to back. Whether the data that follows is all there is the
caller's to check against :attr:`Header.file_bytes`.

Parsing is bounded for data from strangers: a caller may cap the header's size below the library's
100 MB (:func:`parse_header`'s ``max_header_bytes``: parsing JSON costs about 20 times its size in
memory), and a header nested deeper than the format's three levels is refused before it is parsed.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: Name endings of safetensors files (ComfyUI also loads ``.sft`` as safetensors).
SUFFIXES = (".safetensors", ".sft")
#: The little-endian header length every file starts with.
_LENGTH_BYTES = 8
#: The safetensors library refuses larger headers (``HeaderTooLarge``).
MAX_HEADER_BYTES = 100_000_000
#: Bytes looked at to say what data that is not safetensors is.
_SNIFF_BYTES = 64
#: Levels of a header: the object of tensors, each tensor's object, its shape and offsets lists.
MAX_JSON_DEPTH = 3
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+"', re.DOTALL)
_NOT_A_BRACKET = re.compile(rb"[^\[\]{}]+")
_INNERMOST_PAIR = re.compile(rb"\[\]|\{\}")

#: Bytes per element of the dtypes whose size is whole bytes; others (F4, F6…) are not size-checked.
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
_IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"))


class NotSafetensors(ValueError):
    """The data is not a whole, valid safetensors header; the text says why, and what the data is when that can be told."""


@dataclass(frozen=True)
class Header:
    """A parsed header: the tensors it declares and how long the whole file must be."""

    header_bytes: int
    tensors: Mapping[str, tuple[str, tuple[int, ...]]]  # name → (dtype, shape)
    metadata: Mapping[str, str]
    data_bytes: int

    @property
    def file_bytes(self) -> int:
        return _LENGTH_BYTES + self.header_bytes + self.data_bytes


def read_header(path: Path) -> Header:
    """The header of the safetensors file at ``path``, reading only its first bytes, never the data.

    A file cut short after its header still gives its header.
    """
    with open(path, "rb") as file:
        head = file.read(_SNIFF_BYTES)
        end = _header_end(head)
        head += file.read(max(0, end - len(head)))
    return _header_within(head, end)


def parse_header(head: bytes | bytearray, *, complete: bool = True, max_header_bytes: int = MAX_HEADER_BYTES) -> Header | None:
    """The header at the start of ``head``, the first bytes of a file; None while more bytes are needed.

    ``complete=False``: more bytes may come (a download), so a head too short to tell is waited for;
    raises :class:`NotSafetensors` as soon as the bytes show the data cannot be a safetensors file,
    or its first 8 bytes declare a header longer than ``max_header_bytes``.
    """
    try:
        end = _header_end(head)
    except NotSafetensors:
        if complete or len(head) >= _SNIFF_BYTES:
            raise
        return None  # more bytes tell better what the data is
    if end - _LENGTH_BYTES > max_header_bytes:
        raise NotSafetensors(
            f"its header declares {_count(end - _LENGTH_BYTES)}, more than the {_count(max_header_bytes)} allowed here "
            "(a real one is a few hundred kB)"
        )
    if len(head) < end and not complete:
        return None
    return _header_within(head, end)


def _header_end(head: bytes | bytearray) -> int:
    """Where the header that ``head``'s first 8 bytes declare ends; refused when they cannot start a safetensors file."""
    if len(head) < _LENGTH_BYTES:
        raise NotSafetensors(f"the file is {_count(len(head))}, too short for a safetensors file (an empty or cut-off download)")
    length = int.from_bytes(head[:_LENGTH_BYTES], "little")
    if not (2 <= length <= MAX_HEADER_BYTES and head[_LENGTH_BYTES : _LENGTH_BYTES + 1] in (b"", b"{")):
        raise NotSafetensors(describe_data(bytes(head[:_SNIFF_BYTES])))
    return _LENGTH_BYTES + length


def _header_within(head: bytes | bytearray, end: int) -> Header:
    if len(head) < end:
        raise NotSafetensors(
            f"the file ends inside its header (a header of {_count(end - _LENGTH_BYTES)}, the file holds "
            f"{_count(len(head))}): the download was cut short"
        )
    return _parse_json(bytes(head[_LENGTH_BYTES:end]))


def describe_data(head: bytes) -> str:
    """What data that is not safetensors is, from its first bytes, for a message; text is quoted."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")):
        return _text_kind("an HTML page", head, "a web page, login or error page instead of the file?")
    if text.startswith(b"<"):
        return _text_kind("XML or HTML", head, "an error page instead of the file?")
    if text.startswith((b"{", b"[")):
        return _text_kind("JSON", head, "an API answer or error instead of the file?")
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive, not a safetensors file (a PyTorch .pt/.ckpt checkpoint? those are pickles and are never loaded)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle, not a safetensors file (a .ckpt/.pt/.bin checkpoint? pickles can run code and are never loaded)"
    image = next((name for signature, name in _IMAGE_SIGNATURES if head.startswith(signature)), None)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        image = "WEBP"
    if image is not None:
        return f"a {image} image, not a safetensors file (a preview image instead of the file?)"
    if head.startswith(b"GGUF"):
        return "a GGUF file, not a safetensors file"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed data, not a safetensors file"
    if head and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        return _text_kind("text", head, "an error message instead of the file?")
    declared = int.from_bytes(head[:_LENGTH_BYTES], "little") if len(head) >= _LENGTH_BYTES else None
    if declared is not None and not 2 <= declared <= MAX_HEADER_BYTES:
        return f"not a safetensors file (its first 8 bytes would declare a header of {declared:,} bytes)"
    return "not a safetensors file (the JSON header does not follow the 8-byte length)"


def quote(text: str, max_chars: int = 80) -> str:
    """``text`` in quotes for a message, cut to ``max_chars``."""
    return repr(text if len(text) <= max_chars else text[: max_chars - 1] + "…")


def _text_kind(kind: str, head: bytes, guess: str) -> str:
    start = " ".join(head.decode("utf-8-sig", "ignore").split())
    return f"{kind}, not a safetensors file: it starts with {quote(start, 60)} ({guess})"


def _parse_json(raw: bytes) -> Header:
    if _nested_too_deep(raw):
        raise NotSafetensors(
            f"a damaged safetensors file: its header nests more than {MAX_JSON_DEPTH} levels deep (the format has "
            "an object of tensors, each an object holding lists)"
        )
    try:
        document = json.loads(raw.decode("utf-8"))  # starts with "{": an object once it parses
    except (UnicodeDecodeError, ValueError):
        raise NotSafetensors("a damaged safetensors file: its header is not valid JSON") from None
    metadata = document.pop("__metadata__", None)  # null is allowed too
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise NotSafetensors("a damaged safetensors file: __metadata__ is not a map of strings")
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    spans: list[tuple[int, int, str]] = []
    for name, info in document.items():
        dtype, shape, begin, end = _tensor_entry(name, info)
        tensors[name] = (dtype, shape)
        spans.append((begin, end, name))
    data_bytes = 0
    for begin, end, name in sorted(spans):
        if begin != data_bytes:
            raise NotSafetensors(
                f"a damaged safetensors file: tensor {quote(name)} starts at byte {begin:,} of the data, "
                f"expected {data_bytes:,} (gaps and overlaps are not allowed)"
            )
        data_bytes = end
    return Header(len(raw), tensors, metadata or {}, data_bytes)


def _nested_too_deep(raw: bytes) -> bool:
    """Whether the JSON in ``raw`` nests deeper than :data:`MAX_JSON_DEPTH`, told without parsing it.

    With strings and everything but brackets removed, each pass removes the innermost empty pairs;
    an empty pair left after ``MAX_JSON_DEPTH`` passes was deeper (unbalanced brackets are left to the parser).
    """
    brackets = _NOT_A_BRACKET.sub(b"", _JSON_STRING.sub(b"", raw))
    for _ in range(MAX_JSON_DEPTH):
        brackets = _INNERMOST_PAIR.sub(b"", brackets)
    return _INNERMOST_PAIR.search(brackets) is not None


def _tensor_entry(name: str, info: object) -> tuple[str, tuple[int, ...], int, int]:
    """One tensor's dtype, shape and data offsets, refused unless they agree."""

    def damaged(what: str) -> NotSafetensors:
        return NotSafetensors(f"a damaged safetensors file: tensor {quote(name)} {what}")

    if not isinstance(info, dict):
        raise damaged("is not described by an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise damaged(f"has no dtype ({reprlib.repr(dtype)})")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise damaged(f"has no valid shape ({reprlib.repr(shape)})")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(n) for n in offsets) and offsets[0] <= offsets[1]):
        raise damaged(f"has no valid data_offsets ({reprlib.repr(offsets)})")
    begin, end = offsets
    element_bytes = _DTYPE_BYTES.get(dtype)
    if element_bytes is not None and end - begin != math.prod(shape) * element_bytes:
        raise damaged(f"holds {end - begin:,} bytes, but {dtype} {shape} needs {math.prod(shape) * element_bytes:,}")
    return dtype, tuple(shape), begin, end


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(n: int) -> str:
    return "1 byte" if n == 1 else f"{n:,} bytes"
