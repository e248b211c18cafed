"""Property-based tests of the image decoder (worker/image.py) on hostile bytes.

Whatever the bytes — random, or a real PNG, JPEG, GIF, TIFF, WEBP or BMP damaged by flipped,
cut, repeated or inserted bytes, or base64 text of any kind — the answer is a PreparedImage or one
InvalidImage naming the field, never another exception, and within the profile's deadline.
"""

from __future__ import annotations

import base64
import io

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image

from tests.bad_inputs import gif_cut, tiff_pages
from worker.errors import InvalidImage
from worker.image import PreparedImage, decode_base64_image, decode_image
from worker.settings import Limits

#: Pillow warns of the damage it meets (a corrupt EXIF block, a huge GIF frame, which the worker's
#: pixel limit then refuses) and carries on: expected here.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")]

#: Small limits, so a mutation that inflates a header is refused as fast as in production.
LIMITS = Limits(max_image_bytes=2**20, max_image_pixels=1_000_000)


def _encoded(fmt: str, **params: object) -> bytes:
    image = Image.effect_noise((24, 16), 60).convert("RGB")
    if fmt == "GIF":
        frames = [image.convert("P"), Image.new("P", (24, 16), 3)]
        buf = io.BytesIO()
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
        return buf.getvalue()
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


SEEDS = {
    "PNG": _encoded("PNG"),
    "JPEG": _encoded("JPEG", quality=80, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00"),
    "GIF": _encoded("GIF"),
    "TIFF": _encoded("TIFF", compression="tiff_lzw"),
    "WEBP": _encoded("WEBP", quality=70),
    "BMP": _encoded("BMP"),
    "TIFF pages": tiff_pages(3),
    "GIF cut": gif_cut(1),
}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real file with a few bytes flipped, removed, repeated or inserted, or cut short."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    event(f"seed {name}")
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "set", "cut", "drop", "repeat", "insert"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
        elif kind == "cut":
            del data[at:]
        elif kind == "drop":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 64))] * draw(st.integers(1, 8))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def _decoded_or_refused(decode: object, value: object) -> None:
    try:
        prepared = decode(value, LIMITS, field="end_image")  # type: ignore[operator]
    except InvalidImage as refused:
        assert str(refused).startswith("end_image: ") and "\n" not in str(refused)
        event("refused")
        return
    assert isinstance(prepared, PreparedImage) and prepared.png.startswith(b"\x89PNG")
    assert 0 < prepared.width * prepared.height <= LIMITS.max_image_pixels
    event("decoded")


@given(mutated())
def test_a_damaged_real_image_is_decoded_or_refused(data: bytes) -> None:
    _decoded_or_refused(decode_image, data)


@given(st.one_of(st.binary(max_size=512), st.sampled_from(sorted(SEEDS)).flatmap(lambda n: st.just(SEEDS[n][:16]).map(lambda h: h + b"\0" * 8))))
def test_random_bytes_are_decoded_or_refused(data: bytes) -> None:
    _decoded_or_refused(decode_image, data)


@given(st.one_of(st.text(max_size=300), mutated().map(lambda d: base64.b64encode(d).decode()),
                 mutated().map(lambda d: "data:image/png;base64," + base64.urlsafe_b64encode(d).decode().rstrip("="))))  # fmt: skip
def test_any_text_as_an_image_field_is_decoded_or_refused(value: str) -> None:
    _decoded_or_refused(decode_base64_image, value)

