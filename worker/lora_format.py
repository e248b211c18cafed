"""Is a download a LoRA ComfyUI can load? Its safetensors header, read with the standard library.

A safetensors file is an 8-byte little-endian length ``N``, ``N`` bytes of UTF-8 JSON (tensor
name → ``dtype``, ``shape`` and ``data_offsets`` into the data that follows; an optional
``__metadata__`` of strings), then the tensor data. The checks are those the safetensors library
makes when ComfyUI opens the file — header at most 100 MB and starting with ``{``, each tensor's
offsets matching its shape and dtype, the tensors covering the data exactly to the end of the file
— plus one of ours: some tensor is named like a LoRA's (:data:`LORA_NAMES`).

:class:`LoraSniffer` is fed the download as it arrives, so an HTML page, a pickle or a full model
is refused at its first bytes or at the end of its header, not after gigabytes. Every refusal is a
:class:`NotALora` whose text says what the data is instead, when that can be told.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The safetensors library refuses larger headers (``HeaderTooLarge``).
MAX_HEADER_BYTES = 100_000_000
#: Tensor-name parts ComfyUI's LoRA loader patches with, as the message lists them.
LORA_NAMES = "lora_down/lora_up, lora_A/lora_B or diff/diff_b"
#: What a LoRA URL must serve, for the "(allowed: …)" part of messages.
LORA_ALLOWED = f"a LoRA in .safetensors format, its tensors named with {LORA_NAMES}"

_LORA_TENSOR = re.compile(
    r"(?:^|[._])lora[._](?:down|up|A|B)(?:[._]|$)"  # kohya lora_down/lora_up, PEFT lora_A/lora_B, lora.down
    r"|lora_linear_layer\.(?:down|up)\."  # diffusers' attention processors
    r"|\.diff(?:_b)?$"  # whole-weight differences (ComfyUI's "diff" patches)
    r"|\.(?:hada_w[12]_[ab]|lokr_w[12](?:_[ab])?)$"  # LoHa and LoKr, which ComfyUI's LoRA loader also takes
)
#: Bytes per element of the dtypes whose size is whole bytes; others (F4, F6…) are not size-checked.
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
_IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"))
#: Bytes looked at to say what non-safetensors data is.
_SNIFF_BYTES = 64


class NotALora(ValueError):
    """The data cannot be used as a LoRA; the text says why (and what it is, when known)."""


@dataclass(frozen=True)
class SafetensorsHeader:
    """The parsed header: what the file holds and how long it must be."""

    header_bytes: int
    tensors: Mapping[str, tuple[str, tuple[int, ...]]]  # name → (dtype, shape)
    metadata: Mapping[str, str]
    data_bytes: int

    @property
    def file_bytes(self) -> int:
        return 8 + self.header_bytes + self.data_bytes

    def lora_tensors(self) -> list[str]:
        return [name for name in self.tensors if _LORA_TENSOR.search(name)]


class LoraSniffer:
    """Checks a download chunk by chunk (:meth:`feed`), then as a whole (:meth:`finish`)."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._header_bytes: int | None = None
        self.header: SafetensorsHeader | None = None
        self.received = 0

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes; raise :class:`NotALora` as soon as they show the file is no LoRA."""
        self.received += len(chunk)
        if self.header is not None:
            if self.received > self.header.file_bytes:
                raise NotALora(self._longer_than_declared())
            return
        self._head += chunk
        self._check_head(final=False)

    def finish(self) -> SafetensorsHeader:
        """The header of the complete file; raise :class:`NotALora` if the file is not whole."""
        if self.header is None:
            self._check_head(final=True)
            if self.header is None:  # the header itself is cut short
                declared = self._header_bytes
                if declared is None:
                    raise NotALora(f"{self.received} bytes is too short to be a safetensors file")
                raise NotALora(
                    f"a truncated safetensors file: it ends after {self.received} bytes, inside its "
                    f"{declared}-byte header"
                )
        header = self.header
        if self.received < header.file_bytes:
            raise NotALora(
                f"a truncated safetensors file: {self.received} bytes, its header declares {header.file_bytes}"
            )
        if self.received > header.file_bytes:
            raise NotALora(self._longer_than_declared())
        return header

    def _check_head(self, final: bool) -> None:
        head = self._head
        if len(head) < 8:
            return
        declared = struct.unpack_from("<Q", head)[0]
        plausible = 2 <= declared <= MAX_HEADER_BYTES and (len(head) < 9 or head[8:9] == b"{")
        if not plausible:
            if final or len(head) >= _SNIFF_BYTES:
                raise NotALora(describe_data(bytes(head[:_SNIFF_BYTES]), declared))
            return
        self._header_bytes = declared
        if len(head) < 8 + declared:
            return
        header = parse_header(bytes(head[8 : 8 + declared]))
        check_lora(header)
        self.header = header
        self._head = bytearray()  # the header was all we needed to keep
        if self.received > header.file_bytes:
            raise NotALora(self._longer_than_declared())

    def _longer_than_declared(self) -> str:
        assert self.header is not None
        return (
            f"a damaged safetensors file: it goes on past the {self.header.file_bytes} bytes its header "
            "declares (the last tensor must end the file)"
        )


def parse_header(raw: bytes) -> SafetensorsHeader:
    """The JSON header ``raw`` (the ``N`` bytes after the length), checked as safetensors does."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise NotALora("a damaged safetensors file: its header is not valid JSON") from None
    if not isinstance(document, dict):
        raise NotALora("a damaged safetensors file: its header is not a JSON object")
    metadata = document.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise NotALora("a damaged safetensors file: __metadata__ is not a map of strings")
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    spans: list[tuple[int, int, str]] = []
    for name, info in document.items():
        dtype, shape, begin, end = _tensor_entry(name, info)
        tensors[name] = (dtype, shape)
        spans.append((begin, end, name))
    data_bytes = 0
    for begin, end, name in sorted(spans):
        if begin != data_bytes:
            raise NotALora(
                f"a damaged safetensors file: tensor {_quote(name)} starts at byte {begin} of the data, "
                f"expected {data_bytes} (gaps and overlaps are not allowed)"
            )
        data_bytes = end
    return SafetensorsHeader(len(raw), tensors, metadata, data_bytes)


def check_lora(header: SafetensorsHeader) -> None:
    """Raise :class:`NotALora` unless some tensor is named like a LoRA's."""
    if header.lora_tensors():
        return
    if not header.tensors:
        raise NotALora("a safetensors file that holds no tensors")
    example = next(iter(header.tensors))
    count = len(header.tensors)
    raise NotALora(
        f"a safetensors file of {count} tensor{'s' if count != 1 else ''} and none named like a LoRA's "
        f"(e.g. {_quote(example)}): a model checkpoint, not a LoRA"
    )


def read_header(path: Path) -> SafetensorsHeader:
    """The header of a safetensors file on disk, reading only its first bytes (not its data)."""
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) < 8:
            raise NotALora(describe_data(head))
        length = int.from_bytes(head, "little")
        if length > MAX_HEADER_BYTES:
            raise NotALora(describe_data(head))
        return parse_header(file.read(length))


def inspect_file(path: Path, chunk_bytes: int = 1 << 20) -> SafetensorsHeader:
    """Check a file on disk the way a download is checked."""
    sniffer = LoraSniffer()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            sniffer.feed(chunk)
    return sniffer.finish()


def describe_data(head: bytes, declared: int | None = None) -> str:
    """What data that is not safetensors is, from its first bytes, for a message."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")):
        return "an HTML page, not a safetensors file (a web page, login or error page instead of the file?)"
    if text.startswith(b"<?xml") or text.startswith(b"<"):
        return "XML or HTML, not a safetensors file (an error page instead of the file?)"
    if text.startswith((b"{", b"[")):
        return "JSON, not a safetensors file (an API answer or error instead of the file?)"
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
        return "text, not a safetensors file"
    if declared is not None and declared > MAX_HEADER_BYTES:
        return f"not a safetensors file (its first 8 bytes would declare a header of {declared} bytes)"
    return "not a safetensors file (the JSON header does not follow the 8-byte length)"


def _tensor_entry(name: str, info: object) -> tuple[str, tuple[int, ...], int, int]:
    """One tensor's dtype, shape and data offsets, refused unless they agree."""
    def damaged(what: str) -> NotALora:
        return NotALora(f"a damaged safetensors file: tensor {_quote(name)} {what}")

    if not isinstance(info, dict):
        raise damaged("is not described by an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise damaged("has no dtype")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise damaged("has no valid shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(n) for n in offsets) and offsets[0] <= offsets[1]):
        raise damaged("has no valid data_offsets")
    begin, end = offsets
    element_bytes = _DTYPE_BYTES.get(dtype)
    if element_bytes is not None and end - begin != math.prod(shape) * element_bytes:
        raise damaged(f"holds {end - begin} bytes, but {dtype} {shape} needs {math.prod(shape) * element_bytes}")
    return dtype, tuple(shape), begin, end


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _quote(text: str, max_chars: int = 80) -> str:
    short = text if len(text) <= max_chars else text[: max_chars - 1] + "…"
    return '"' + short.replace("\\", "\\\\").replace('"', '\\"') + '"'
