"""The safetensors header check and the LoRA name rule, on bytes built here."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from tests.comfy_double.inprocess import safetensors_stand_in
from worker.lora_format import MAX_HEADER_BYTES, LoraSniffer, NotALora, describe_data, inspect_file

# --- Files (test_lora_files uses them too) ----------------------------------------------------------


def safetensors(tensors: dict[str, tuple[int, ...]], seed: int = 0) -> bytes:
    """A valid safetensors file of F16 tensors; ``seed`` varies the data, so the hash differs."""
    header: dict[str, object] = {}
    offset = 0
    for name, shape in tensors.items():
        size = math.prod(shape) * 2
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    data = bytes((i * 7 + seed) % 251 for i in range(offset))
    return struct.pack("<Q", len(encoded)) + encoded + data


def lora(seed: int = 0, rank: int = 4, width: int = 64) -> bytes:
    """A LoRA in kohya's naming, ``2 * rank * width * 2`` bytes of data per block."""
    block = "diffusion_model.blocks.0.self_attn.q"
    return safetensors({f"{block}.lora_down.weight": (rank, width), f"{block}.lora_up.weight": (width, rank)}, seed)


LORA = lora()
MODEL = safetensors({"blocks.0.self_attn.q.weight": (64, 64), "blocks.0.self_attn.k.weight": (64, 64)})


def raw_file(header: object, data: bytes = b"") -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def problem(data: bytes, chunk: int = 7) -> str:
    """What the sniffer says about ``data`` fed in chunks of ``chunk`` bytes."""
    sniffer = LoraSniffer()
    with pytest.raises(NotALora) as caught:
        for start in range(0, len(data), chunk):
            sniffer.feed(data[start : start + chunk])
        sniffer.finish()
    return str(caught.value)


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_a_lora_passes_in_any_chunking(chunk: int) -> None:
    sniffer = LoraSniffer()
    for start in range(0, len(LORA), chunk):
        sniffer.feed(LORA[start : start + chunk])
    header = sniffer.finish()
    assert header.file_bytes == len(LORA) and len(header.lora_tensors()) == 2


def test_the_test_doubles_lora_stand_in_is_a_lora(tmp_path: Path) -> None:
    path = tmp_path / "stand-in.safetensors"
    path.write_bytes(safetensors_stand_in("loras/x.safetensors"))
    assert inspect_file(path).metadata["format"] == "pt"
    path.write_bytes(safetensors_stand_in("vae/x.safetensors"))
    with pytest.raises(NotALora, match="a model checkpoint, not a LoRA"):
        inspect_file(path)


def test_a_model_is_refused_once_its_header_is_in() -> None:
    header_end = 8 + struct.unpack_from("<Q", MODEL)[0]
    sniffer = LoraSniffer()
    sniffer.feed(MODEL[: header_end - 1])
    with pytest.raises(NotALora, match="none named like a LoRA's"):
        sniffer.feed(MODEL[header_end - 1 : header_end])


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (LORA + b"\0", "goes on past the"),
        (LORA[:-1], "a truncated safetensors file"),
        (LORA[:20], "ends after 20 bytes, inside its"),
        (raw_file({"a.lora_up.weight": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 6]}}, b"\0" * 6), "holds 6 bytes, but F16 [2, 2] needs 8"),
        (
            raw_file(
                {
                    "a.lora_up.weight": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
                    "a.lora_down.weight": {"dtype": "F16", "shape": [2], "data_offsets": [8, 12]},
                },
                b"\0" * 12,
            ),
            'tensor "a.lora_down.weight" starts at byte 8 of the data, expected 4',
        ),
        (raw_file({"a.lora_up.weight": {"dtype": "F16", "shape": [2]}}), "has no valid data_offsets"),
        (raw_file({"__metadata__": {"n": 1}}), "__metadata__ is not a map of strings"),
        (raw_file({}), "holds no tensors"),
        (struct.pack("<Q", 6) + b"{nope}", "its header is not valid JSON"),
        (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{" + b" " * 80, "would declare a header of 100000001 bytes"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 80, "a PNG image, not a safetensors file (a preview image instead of the file?)"),
        (struct.pack("<Q", 16) + b"\0" * 80, "not a safetensors file (the JSON header does not follow the 8-byte length)"),
    ],
)
def test_damaged_files_are_named(data: bytes, said: str) -> None:
    assert said in problem(data)


def test_lora_kinds_other_than_kohya_are_recognised() -> None:
    for names in (["x.lora_A.weight"], ["x_lora.up.weight"], ["x.lora_linear_layer.up.weight"], ["x.hada_w1_a"], ["x.lokr_w1"], ["x.diff_b"]):
        data = safetensors({name: (2, 2) for name in names})
        sniffer = LoraSniffer()
        sniffer.feed(data)
        assert sniffer.finish().lora_tensors() == names


def test_names_that_only_look_close_are_not_lora_names() -> None:
    data = safetensors({"lora_unet_blocks.weight": (2, 2), "blocks.0.different": (2, 2), "upload.weight": (2, 2)})
    assert "none named like a LoRA's" in problem(data)


def test_describe_data_without_a_length() -> None:
    assert describe_data(b"  \n<html><body>").startswith("an HTML page")
    assert describe_data(b"Access denied.\n").startswith("text")
    assert lora(seed=3) != LORA  # the seed changes the data, so test files hash apart
