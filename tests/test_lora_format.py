"""The LoRA check of a download: the whole file, chunk by chunk, and the LoRA name rule (the format's own rules: test_safetensors)."""

from __future__ import annotations

import struct
import tracemalloc

import pytest

from tests.comfy_double.inprocess import safetensors_stand_in
from tests.test_safetensors import safetensors_file
from worker.lora_format import LORA_MAX_HEADER_BYTES, LoraSniffer, NotALora, lora_tensors

# --- Files (test_lora_files uses them too) ----------------------------------------------------------


def lora(seed: int = 0, rank: int = 4, width: int = 64) -> bytes:
    """A LoRA in kohya's naming, ``2 * rank * width * 2`` bytes of data per block."""
    block = "diffusion_model.blocks.0.self_attn.q"
    return safetensors_file({f"{block}.lora_down.weight": (rank, width), f"{block}.lora_up.weight": (width, rank)}, seed=seed)


LORA = lora()
MODEL = safetensors_file({"blocks.0.self_attn.q.weight": (64, 64), "blocks.0.self_attn.k.weight": (64, 64)})


def sniff(data: bytes, chunk: int = 7) -> LoraSniffer:
    """A sniffer fed ``data`` in chunks of ``chunk`` bytes."""
    sniffer = LoraSniffer()
    for start in range(0, len(data), chunk):
        sniffer.feed(data[start : start + chunk])
    return sniffer


def problem(data: bytes, chunk: int = 7) -> str:
    """What the sniffer says about ``data``."""
    with pytest.raises(NotALora) as caught:
        sniff(data, chunk).finish()
    return str(caught.value)


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_a_lora_passes_in_any_chunking(chunk: int) -> None:
    header = sniff(LORA, chunk).finish()
    assert header.file_bytes == len(LORA) and len(lora_tensors(header)) == 2


def test_the_test_doubles_lora_stand_in_is_a_lora() -> None:
    assert sniff(safetensors_stand_in("loras/x.safetensors")).finish().metadata["format"] == "pt"
    assert "a model checkpoint, not a LoRA" in problem(safetensors_stand_in("vae/x.safetensors"))


def test_a_model_is_refused_once_its_header_is_in() -> None:
    header_end = 8 + struct.unpack_from("<Q", MODEL)[0]
    sniffer = LoraSniffer()
    sniffer.feed(MODEL[: header_end - 1])
    with pytest.raises(NotALora, match="none named like a LoRA's"):
        sniffer.feed(MODEL[header_end - 1 : header_end])


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (LORA + b"\0", f"a damaged safetensors file: it goes on past the {len(LORA)} bytes its header declares (the last tensor must end the file)"),
        (LORA[:-1], f"a truncated safetensors file: {len(LORA) - 1} bytes, its header declares {len(LORA)}"),
        (safetensors_file({}), "a safetensors file that holds no tensors"),
        (MODEL, "a safetensors file of 2 tensors and none named like a LoRA's (e.g. 'blocks.0.self_attn.q.weight'): a model checkpoint, not a LoRA"),
    ],
)  # fmt: skip
def test_what_is_no_lora_is_named(data: bytes, said: str) -> None:
    assert problem(data) == said


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (LORA[:20], "the file ends inside its header"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 80, "a PNG image, not a safetensors file"),
        (b"tiny", "the file is 4 bytes, too short for a safetensors file"),
    ],
)
def test_what_is_no_safetensors_file_is_named_as_the_format_says(data: bytes, said: str) -> None:
    assert problem(data).startswith(said)


def test_lora_kinds_other_than_kohya_are_recognised() -> None:
    for names in (
        ["x.lora_A.weight"],
        ["x_lora.up.weight"],
        ["x.lora_linear_layer.up.weight"],
        ["x.hada_w1_a"],
        ["x.lokr_w1"],
        ["x.diff_b"],
    ):
        assert lora_tensors(sniff(safetensors_file({name: (2, 2) for name in names})).finish()) == names


def test_names_that_only_look_close_are_not_lora_names() -> None:
    data = safetensors_file({"lora_unet_blocks.weight": (2, 2), "blocks.0.different": (2, 2), "upload.weight": (2, 2)})
    assert "none named like a LoRA's" in problem(data)


def test_the_seed_changes_the_data() -> None:
    assert lora(seed=3) != LORA  # so test files hash apart


def test_a_huge_header_is_refused_at_its_length_and_costs_no_memory() -> None:
    # A 24 MB header of many small objects once cost 486 MB to parse; the library would take 100 MB.
    entries = b",".join(b'"%x":{}' % i for i in range(2_400_000))
    data = struct.pack("<Q", len(entries) + 2) + b"{" + entries + b"}"
    tracemalloc.start()
    try:
        said = problem(data, chunk=65536)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert said.startswith(f"its header declares {len(entries) + 2:,} bytes, more than the {LORA_MAX_HEADER_BYTES:,} bytes allowed")
    assert peak < 2**20
    assert LORA_MAX_HEADER_BYTES == 8 * 2**20


def test_a_header_within_the_cap_but_nested_deep_is_refused() -> None:
    encoded = b'{"t": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert problem(struct.pack("<Q", len(encoded)) + encoded, chunk=65536).startswith("a damaged safetensors file: its header nests")
