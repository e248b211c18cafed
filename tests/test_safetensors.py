"""worker/safetensors.py: the header rules, the reader and what other data is, on bytes built here."""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path

import pytest

from worker import safetensors
from worker.safetensors import MAX_HEADER_BYTES, NotSafetensors, describe_data, parse_header, read_header

# --- Files (the model file, LoRA and models script tests use them too) -----------------------------


def safetensors_file(
    tensors: Mapping[str, tuple[int, ...]], *, metadata: Mapping[str, str] | None = None, seed: int = 0
) -> bytes:
    """A valid safetensors file of F16 tensors back to back; ``seed`` varies the data, so the hash differs."""
    header: dict[str, object] = {} if metadata is None else {"__metadata__": dict(metadata)}
    offset = 0
    for name, shape in tensors.items():
        size = math.prod(shape) * 2
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + bytes((i * 7 + seed) % 251 for i in range(offset))


def raw_file(header: object, data: bytes = b"") -> bytes:
    """A file with ``header`` as its JSON header, whatever it holds."""
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


FILE = safetensors_file({"blocks.0.weight": (4, 8), "blocks.1.weight": (8,)}, metadata={"format": "pt"})
HEADER_END = 8 + struct.unpack_from("<Q", FILE)[0]


def refusal(data: bytes) -> str:
    with pytest.raises(NotSafetensors) as caught:
        parse_header(data)
    return str(caught.value)


# --- The header -------------------------------------------------------------------------------------


def test_a_header_gives_the_tensors_the_metadata_and_the_files_size() -> None:
    header = parse_header(FILE)
    assert header is not None
    assert header.tensors == {"blocks.0.weight": ("F16", (4, 8)), "blocks.1.weight": ("F16", (8,))}
    assert header.metadata == {"format": "pt"}
    assert (header.header_bytes, header.data_bytes, header.file_bytes) == (HEADER_END - 8, 80, len(FILE))


def test_a_file_of_no_tensors_is_valid() -> None:
    header = parse_header(safetensors_file({}))
    assert header is not None and header.tensors == {} and header.data_bytes == 0


def test_metadata_may_be_null() -> None:
    header = parse_header(raw_file({"__metadata__": None, "w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}))
    assert header is not None and header.metadata == {} and list(header.tensors) == ["w"]


def test_more_bytes_are_waited_for_until_the_header_is_in() -> None:
    for end in range(HEADER_END):
        assert parse_header(FILE[:end], complete=False) is None, end
    assert parse_header(FILE[:HEADER_END], complete=False) == parse_header(FILE)


def test_other_data_is_refused_at_64_bytes_or_at_its_end() -> None:
    page = b"<!doctype html><html><head><title>404</title></head><body>" + b" " * 100
    assert parse_header(page[:63], complete=False) is None
    with pytest.raises(NotSafetensors, match="an HTML page"):
        parse_header(page[:64], complete=False)
    with pytest.raises(NotSafetensors, match="an HTML page"):
        parse_header(page[:20])


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"", "the file is 0 bytes, too short for a safetensors file (an empty or cut-off download)"),
        (b"\x01", "the file is 1 byte, too short for a safetensors file (an empty or cut-off download)"),
        (FILE[:20], f"the file ends inside its header (a header of {HEADER_END - 8} bytes, the file holds 20 bytes): the download was cut short"),
        (struct.pack("<Q", 2**62) + b"\0" * 100, "not a safetensors file (its first 8 bytes would declare a header of 4,611,686,018,427,387,904 bytes)"),
        (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{" + b" " * 80, "would declare a header of 100,000,001 bytes"),
        (struct.pack("<Q", 16) + b"\0\x01binary\xff\xfe garbage", "not a safetensors file (the JSON header does not follow the 8-byte length)"),
        (struct.pack("<Q", 6) + b"{nope}", "a damaged safetensors file: its header is not valid JSON"),
        (raw_file({"__metadata__": {"n": 1}}), "a damaged safetensors file: __metadata__ is not a map of strings"),
        (raw_file({"w": [0, 4]}), "a damaged safetensors file: tensor 'w' is not described by an object"),
        (raw_file({"w": {"shape": [2], "data_offsets": [0, 4]}}), "tensor 'w' has no dtype (None)"),
        (raw_file({"w": {"dtype": "F16", "shape": [2, -1], "data_offsets": [0, 4]}}), "tensor 'w' has no valid shape ([2, -1])"),
        (raw_file({"w": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 6]}}, b"\0" * 6), "tensor 'w' holds 6 bytes, but F16 [2, 2] needs 8"),
        (
            raw_file({"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}, "b": {"dtype": "F16", "shape": [2], "data_offsets": [8, 12]}}),
            "tensor 'b' starts at byte 8 of the data, expected 4 (gaps and overlaps are not allowed)",
        ),
        (
            raw_file({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}, "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}),
            "tensor 'b' starts at byte 2 of the data, expected 4",
        ),
    ],
)  # fmt: skip
def test_damaged_headers_are_named(data: bytes, said: str) -> None:
    assert said in refusal(data)


@pytest.mark.parametrize("offsets", [[10, 5], [-1, 4], [0], "0-4", [0, 4.0], [False, True], None])
def test_malformed_offsets(offsets: object) -> None:
    data = raw_file({"w": {"dtype": "U8", "shape": [4], "data_offsets": offsets}}, b"\0" * 16)
    assert refusal(data) == f"a damaged safetensors file: tensor 'w' has no valid data_offsets ({offsets!r})"


def test_dtypes_of_no_whole_byte_size_are_not_size_checked() -> None:
    header = parse_header(raw_file({"w": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, b"\0\0"))
    assert header is not None and header.data_bytes == 2


def test_a_long_tensor_name_is_cut_in_the_message() -> None:
    name = "x" * 200
    said = refusal(raw_file({name: {"dtype": "F16", "shape": [1], "data_offsets": [0, 4]}}))
    assert f"tensor '{'x' * 79}…' holds 4 bytes" in said


# --- The reader -------------------------------------------------------------------------------------


def test_the_reader_reads_the_header_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(FILE)
    assert read_header(path) == parse_header(FILE)


def test_a_file_cut_short_after_its_header_still_gives_its_header(tmp_path: Path) -> None:
    """What scripts/models.py uses to tell an interrupted download from another file."""
    path = tmp_path / "x.safetensors"
    path.write_bytes(FILE[: HEADER_END + 3])
    assert read_header(path).file_bytes == len(FILE)


def test_the_reader_reads_no_more_than_the_header(monkeypatch) -> None:
    class Kept(io.BytesIO):
        def __exit__(self, *exc: object) -> None:  # left open to ask where reading stopped
            return None

    file = Kept(FILE + bytes(1_000_000))
    monkeypatch.setattr(safetensors, "open", lambda path, mode: file, raising=False)
    assert read_header(Path("x.safetensors")).file_bytes == len(FILE)
    assert file.tell() == HEADER_END


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"", "the file is 0 bytes, too short"),
        (b"Entry not found", "text, not a safetensors file: it starts with 'Entry not found'"),
        (FILE[:20], "the file ends inside its header"),
    ],
)
def test_the_reader_refuses_what_parsing_refuses(tmp_path: Path, data: bytes, said: str) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    with pytest.raises(NotSafetensors, match=said):
        read_header(path)


# --- What the data is instead -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "said"),
    [
        (
            b"<!DOCTYPE html>\n<html>\n<head><title>Hugging Face - Sign in</title></head><body>",
            "an HTML page, not a safetensors file: it starts with '<!DOCTYPE html> <html> <head><title>Hugging Face - Sign in<…' "
            "(a web page, login or error page instead of the file?)",
        ),
        (b"\xef\xbb\xbf  \n<html><body>", "an HTML page, not a safetensors file: it starts with '<html><body>'"),
        (b"<?xml version='1.0'?><Error><Code>AccessDenied</Code>", "XML or HTML, not a safetensors file: it starts with \"<?xml version='1.0'?><Error><Code>AccessDenied</Code>\" (an error page instead of the file?)"),
        (b'{"error": "Repository not found"}', "JSON, not a safetensors file: it starts with '{\"error\": \"Repository not found\"}' (an API answer or error instead of the file?)"),
        (b"Access denied.\n", "text, not a safetensors file: it starts with 'Access denied.' (an error message instead of the file?)"),
        (b"PK\x03\x04\x14\x00\x00\x00" + b"\0" * 56, "a ZIP archive, not a safetensors file (a PyTorch .pt/.ckpt checkpoint? those are pickles and are never loaded)"),
        (b"\x80\x02}q\x00(X\x05\x00\x00\x00state", "a Python pickle, not a safetensors file (a .ckpt/.pt/.bin checkpoint? pickles can run code and are never loaded)"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 56, "a PNG image, not a safetensors file (a preview image instead of the file?)"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 60, "a JPEG image"),
        (b"GIF89a" + b"\0" * 58, "a GIF image"),
        (b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 48, "a WEBP image"),
        (b"GGUF\x03\x00\x00\x00" + b"\0" * 56, "a GGUF file, not a safetensors file"),
        (b"\x1f\x8b\x08\x00" + b"\0" * 60, "gzip-compressed data, not a safetensors file"),
        (struct.pack("<Q", 0) + b"\0" * 56, "not a safetensors file (its first 8 bytes would declare a header of 0 bytes)"),
    ],
)  # fmt: skip
def test_describe_data(head: bytes, said: str) -> None:
    assert describe_data(head).startswith(said)


# --- Bounded parsing ---------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    """A file whose header holds a list ``depth`` levels deep under one tensor name."""
    encoded = b'{"t": ' + b"[" * depth + b"]" * depth + b"}"
    return struct.pack("<Q", len(encoded)) + encoded


@pytest.mark.parametrize("depth", [4, 100, 100_000])
def test_a_header_nested_deeper_than_the_format_is_refused_before_parsing(depth: int) -> None:
    # 100000 levels once raised RecursionError out of json.loads: internal_error.
    assert refusal(nested(depth)) == (
        "a damaged safetensors file: its header nests more than 3 levels deep (the format has an object "
        "of tensors, each an object holding lists)"
    )


def test_three_levels_are_the_format_and_pass_the_depth_check() -> None:
    assert "nests" not in refusal(nested(2))  # refused for the tensor's form, not its depth


def test_brackets_inside_strings_are_not_nesting() -> None:
    header = parse_header(safetensors_file({"t[[[[{{{{": (2,)}, metadata={"note": "]]]]}}}} [[[[ {{{{"}))
    assert list(header.tensors) == ["t[[[[{{{{"] and header.metadata == {"note": "]]]]}}}} [[[[ {{{{"}


def test_a_header_over_the_callers_cap_is_refused_from_its_length_alone() -> None:
    head = struct.pack("<Q", 24_000_000) + b'{"a'  # the rest would follow
    with pytest.raises(NotSafetensors) as caught:
        parse_header(head, complete=False, max_header_bytes=8 * 2**20)
    assert str(caught.value) == (
        "its header declares 24,000,000 bytes, more than the 8,388,608 bytes allowed here (a real one is a few hundred kB)"
    )
    assert parse_header(head, complete=False) is None  # the library's 100 MB: more bytes are waited for
