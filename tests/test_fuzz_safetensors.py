"""Property-based tests of the safetensors header reader (worker/safetensors.py) on hostile bytes.

Whatever the first bytes of a download are — random, a real header damaged, or any JSON value
under a plausible length — ``parse_header`` answers a Header, None (more bytes needed, for a
download in progress) or one NotSafetensors, never another exception, within the deadline. The
LoRA check (worker/lora_format.py) refuses through the same path, with its own header cap.
"""

from __future__ import annotations

import json
import struct

from hypothesis import event, given
from hypothesis import strategies as st

from tests.test_lora_format import LORA, lora
from tests.test_safetensors import safetensors_file
from worker.lora_format import LORA_MAX_HEADER_BYTES, LoraSniffer, NotALora
from worker.safetensors import Header, NotSafetensors, parse_header

SEEDS = [LORA, lora(seed=3, rank=8, width=32)[:400], safetensors_file({"a": (2, 3), "b": (4,)}, metadata={"format": "pt"})]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)
tensor_entries = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["F16", "BF16", "F32", "I8", "F8_E4M3", "F4", "", "X"]) | json_values,
        "shape": st.lists(st.integers(-2, 2**40), max_size=4) | json_values,
        "data_offsets": st.lists(st.integers(-2, 2**40), max_size=3) | json_values,
    },
)
headers = st.dictionaries(st.text(max_size=16), tensor_entries | json_values, max_size=6)


def _framed_raw(encoded: bytes) -> bytes:
    return struct.pack("<Q", len(encoded)) + encoded


def _framed(document: object, declared_delta: int = 0) -> bytes:
    encoded = json.dumps(document).encode()
    return struct.pack("<Q", max(0, len(encoded) + declared_delta)) + encoded


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A real safetensors head with bytes flipped, cut, dropped or inserted."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "cut", "drop", "insert"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:]
        elif kind == "drop":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            data[at:at] = draw(st.sampled_from([b"[", b"{", b'"', b"\\", b"\xff", b"]]]", b"[[[[[[[[", b"\x00"]))
    return bytes(data)


heads = st.one_of(
    st.binary(max_size=256),
    damaged(),
    headers.map(_framed),
    st.tuples(headers, st.integers(-20, 20)).map(lambda pair: _framed(*pair)),
    st.integers(1, 200_000).map(lambda depth: _framed_raw(b'{"t":' + b"[" * depth + b"]" * depth + b"}")),
)


@given(heads, st.booleans())
def test_any_head_is_a_header_more_bytes_or_one_refusal(head: bytes, complete: bool) -> None:
    try:
        header = parse_header(head, complete=complete)
    except NotSafetensors as refused:
        assert str(refused) and "\n" not in str(refused)
        event("refused")
        return
    if header is None:
        assert not complete
        event("more bytes needed")
        return
    assert isinstance(header, Header) and header.data_bytes >= 0 and header.header_bytes >= 2
    event("header")


@given(heads, st.integers(1, 97))
def test_the_lora_check_refuses_any_damage_in_any_chunking_with_one_error(head: bytes, chunk: int) -> None:
    sniffer = LoraSniffer()
    try:
        for start in range(0, len(head), chunk):
            sniffer.feed(head[start : start + chunk])
        sniffer.finish()
    except NotALora as refused:
        assert str(refused) and "\n" not in str(refused)
        event("refused")
        return
    event("a LoRA")
    assert len(head) <= LORA_MAX_HEADER_BYTES + 8 + len(LORA)
