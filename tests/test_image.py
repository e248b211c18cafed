"""worker.image: what reaches ComfyUI is always a verified, upright, 8-bit RGB PNG — or a clear no."""

from __future__ import annotations

import base64
import dataclasses
import io
import logging
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import pytest
from PIL import Image, ImageCms

from comfy_bootstrap.errors import ExecutionInterrupted, ExecutionTimeout
from tests.bad_inputs import gif_cut, tiff_pages
from tests.file_server import FileServer
from worker.errors import InvalidImage
from worker.image import PreparedImage, decode_base64_image, decode_image, prepare_image
from worker.request.model import MediaInput
from worker.request.parse import parse_request
from worker.settings import Limits, Settings

LIMITS = Limits()
FORMATS_ALLOWED = "(allowed: PNG, JPEG, WEBP, GIF, BMP or TIFF)"
COMPLETE_ALLOWED = "(allowed: a complete PNG, JPEG, WEBP, GIF, BMP or TIFF file)"
BASE64_ALLOWED = (
    "(allowed: standard or URL-safe base64 (padding and line breaks optional), "
    "or a data:image/<png|jpeg|jpg|webp|gif|bmp|tiff>;base64, URI)"
)


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def opened(prepared: PreparedImage) -> Image.Image:
    """The PNG the worker would upload, opened the way ComfyUI's LoadImage opens it."""
    image = Image.open(io.BytesIO(prepared.png))
    assert image.format == "PNG" and image.mode == "RGB"
    assert image.size == (prepared.width, prepared.height)
    return image


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 6) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def image_error(data: bytes, limits: Limits = LIMITS) -> str:
    with pytest.raises(InvalidImage) as caught:
        decode_image(data, limits)
    return str(caught.value)


def base64_error(value: str, limits: Limits = LIMITS) -> str:
    with pytest.raises(InvalidImage) as caught:
        decode_base64_image(value, limits)
    return str(caught.value)


def two_colour(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue: orientation and colour are both visible."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    return image


RED_PNG = encode(two_colour())


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height``: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# --- Formats ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("PNG", {}), ("JPEG", {"quality": 95}), ("WEBP", {"lossless": True}), ("GIF", {}), ("BMP", {}), ("TIFF", {})],
)
def test_every_allowed_format_becomes_an_rgb_png(fmt: str, params: dict[str, object]) -> None:
    prepared = decode_image(encode(two_colour(), fmt, **params), LIMITS)
    assert (prepared.width, prepared.height, prepared.source_format) == (40, 20, fmt)
    image = opened(prepared)
    assert close_to(image.getpixel((2, 10)), (255, 0, 0)) and close_to(image.getpixel((37, 10)), (0, 0, 255))
    assert prepared.description.startswith(f"{fmt} 40x20 ") and "→ PNG 40x20 RGB" in prepared.description


def test_multi_picture_jpeg_from_a_phone_uses_the_first_picture() -> None:
    data = encode(two_colour(), "MPO", save_all=True, append_images=[Image.new("RGB", (40, 20), (0, 255, 0))])
    prepared = decode_image(data, LIMITS)
    assert prepared.source_format == "MPO"
    assert close_to(opened(prepared).getpixel((2, 10)), (255, 0, 0))


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    prepared = decode_image(encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100), LIMITS)
    assert opened(prepared).getpixel((8, 8)) == (255, 0, 0)


def test_an_animated_png_is_reencoded_as_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)
    prepared = decode_image(data, LIMITS)
    assert prepared.png != data and getattr(opened(prepared), "n_frames", 1) == 1
    assert opened(prepared).getpixel((8, 8)) == (255, 0, 0)


# --- Frames after the first are never read: no cost, no failure ---------------------------------------


@pytest.mark.parametrize("pages", [16_000, 32_000])
def test_a_tiff_of_thousands_of_pages_decodes_its_first_page_at_once(pages: int) -> None:
    started = time.monotonic()  # Pillow's frame count walks the pages quadratically: 16k took 4 s, 32k 14 s
    prepared = decode_image(tiff_pages(pages), LIMITS)
    assert time.monotonic() - started < 1.0
    assert (prepared.width, prepared.height, prepared.source_format) == (1, 1, "TIFF")


@pytest.mark.parametrize(
    ("data", "fmt", "size"), [(gif_cut(frame=1), "GIF", (8, 8)), (tiff_pages(2, broken_page=1), "TIFF", (1, 1))], ids=["gif", "tiff"]
)
def test_damage_after_the_first_frame_does_not_matter(data: bytes, fmt: str, size: tuple[int, int]) -> None:
    # Once struct.error (GIF) and TypeError (TIFF) from the frame count: internal_error.
    prepared = decode_image(data, LIMITS)
    assert prepared.source_format == fmt and (prepared.width, prepared.height) == size


@pytest.mark.parametrize(
    ("data", "fmt"),
    [(gif_cut(frame=0), "GIF"), (tiff_pages(2, broken_page=0), "TIFF"), (tiff_pages(16_000, broken_page=0), "TIFF")],
    ids=["gif", "tiff", "tiff-16k-pages"],
)
def test_damage_in_the_first_frame_is_invalid_image_naming_the_field(data: bytes, fmt: str) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidImage) as caught:
        decode_base64_image(base64.b64encode(data).decode(), LIMITS, field="end_image")
    assert str(caught.value).startswith(f"end_image: the {fmt} data is truncated or corrupt (")
    assert str(caught.value).endswith(COMPLETE_ALLOWED) and time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"<!DOCTYPE html><html><body>Access denied</body></html>", "54 bytes of HTML data"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "62 bytes of SVG data"),
        (b"%PDF-1.7\n...", "12 bytes of PDF data"),
        (b'{"error": "not found"}', "22 bytes of JSON data"),
        (b"\0\0\0\x1cftypheic" + b"\0" * 20, "32 bytes of HEIC/HEIF data"),
        (b"\x01\x02\x03\x04\x05", "5 bytes of data"),
    ],
)
def test_non_images_are_refused_with_a_guess_of_what_they_are(data: bytes, what: str) -> None:
    assert image_error(data) == f"image: {what} is not an allowed image {FORMATS_ALLOWED}"


@pytest.mark.parametrize("fmt", ["ICO", "PCX", "TGA", "PPM"])
def test_formats_pillow_knows_but_the_worker_does_not_allow_are_refused(fmt: str) -> None:
    data = encode(Image.new("RGB", (16, 16)), fmt)
    assert image_error(data).endswith(f"is not an allowed image {FORMATS_ALLOWED}")


def test_empty_data() -> None:
    assert image_error(b"") == "image: 0 bytes is not an image (allowed: a PNG, JPEG, WEBP, GIF, BMP or TIFF file)"


# --- Limits -----------------------------------------------------------------------------------------------


def test_byte_limit() -> None:
    data = encode(Image.effect_noise((64, 64), 60).convert("RGB"))
    limits = Limits(max_image_bytes=len(data) - 1)
    assert image_error(data, limits) == (
        f"image: {len(data)} bytes is too large (allowed: at most {len(data) - 1} bytes)"
    )
    assert decode_image(data, Limits(max_image_bytes=len(data))).width == 64
    assert image_error(b"\0" * (LIMITS.max_image_bytes + 1)) == (
        "image: 26214401 bytes (25.0 MiB) is too large (allowed: at most 26214400 bytes (25.0 MiB))"
    )


def test_pixel_limit_is_the_workers_and_names_itself() -> None:
    assert image_error(encode(Image.new("RGB", (20, 20))), Limits(max_image_pixels=399)) == (
        "image: 20x20 is 400 pixels, too many (allowed: at most 399 pixels, e.g. 19x19)"
    )
    assert decode_image(encode(Image.new("RGB", (20, 20))), Limits(max_image_pixels=400)).width == 20


@pytest.mark.parametrize(("width", "height"), [(8000, 6000), (20_000, 20_000), (100_000, 100_000)])
def test_decompression_bomb_is_refused_from_its_header_fast(width: int, height: int) -> None:
    """Above Pillow's own limit too (2 x 89 M pixels): the worker's limit answers, Pillow's global stays."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    started = time.monotonic()
    message = image_error(png_declaring(width, height))
    assert time.monotonic() - started < 0.5
    assert message == (
        f"image: {width}x{height} is {width * height} pixels, too many (allowed: at most 40000000 pixels, e.g. 6324x6324)"
    )
    assert Image.MAX_IMAGE_PIXELS == pillow_limit


def test_gif_frame_larger_than_its_screen_is_refused_with_the_workers_limit() -> None:
    """Pillow enlarges a GIF to its first frame while opening; the message is still the worker's."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, 20_000, 20_000, 0) + b"\x02\x02\x4c\x01\x00;"
    assert image_error(screen + frame) == (
        "image: the image has too many pixels (allowed: at most 40000000 pixels, e.g. 6324x6324)"
    )


# --- Broken files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_truncated_files_are_refused_here_not_in_comfyui(fmt: str) -> None:
    data = encode(Image.effect_noise((128, 128), 60).convert("RGB"), fmt)
    message = image_error(data[: len(data) * 2 // 3])
    assert message.startswith(f"image: the {fmt} data is truncated or corrupt (")
    assert message.endswith(COMPLETE_ALLOWED)


def test_corrupt_header() -> None:
    message = image_error(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    assert message.startswith("image: the PNG data is truncated or corrupt (") and message.endswith(COMPLETE_ALLOWED)


# --- Orientation and colour -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "size", "top_left", "bottom_right"),
    [
        (1, (40, 20), (255, 0, 0), (0, 0, 255)),
        (3, (40, 20), (0, 0, 255), (255, 0, 0)),  # rotated 180
        (6, (20, 40), (255, 0, 0), (0, 0, 255)),  # rotated 90 clockwise: left half on top
        (8, (20, 40), (0, 0, 255), (255, 0, 0)),  # rotated 90 counter-clockwise: right half on top
    ],
)
def test_exif_orientation_is_applied(
    orientation: int, size: tuple[int, int], top_left: tuple[int, int, int], bottom_right: tuple[int, int, int]
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    prepared = decode_image(encode(two_colour(), "JPEG", quality=95, exif=exif), LIMITS)
    image = opened(prepared)
    assert image.size == size
    assert close_to(image.getpixel((1, 1)), top_left) and close_to(image.getpixel((size[0] - 2, size[1] - 2)), bottom_right)
    assert (f"EXIF orientation {orientation} applied" in prepared.description) == (orientation != 1)


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 255))
    image.putpixel((2, 0), (255, 0, 0, 128))
    prepared = decode_image(encode(image), LIMITS)
    pixels = [opened(prepared).getpixel((x, 0)) for x in range(3)]
    assert pixels[0] == (255, 255, 255) and pixels[1] == (255, 0, 0)
    assert close_to(pixels[2], (255, 127, 127), 2)
    assert "transparency composited on white" in prepared.description


def test_palette_transparency_and_grey_alpha_become_white() -> None:
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.putpixel((0, 0), 1)
    gif = decode_image(encode(palette, "GIF", transparency=0), LIMITS)
    assert opened(gif).getpixel((0, 0)) == (255, 0, 0) and opened(gif).getpixel((3, 3)) == (255, 255, 255)
    grey_alpha = decode_image(encode(Image.new("LA", (2, 2), (0, 0))), LIMITS)
    assert opened(grey_alpha).getpixel((0, 0)) == (255, 255, 255)


def test_palette_without_transparency_keeps_its_colours() -> None:
    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30])
    assert opened(decode_image(encode(palette), LIMITS)).getpixel((1, 1)) == (10, 200, 30)


def test_cmyk_becomes_rgb() -> None:
    prepared = decode_image(encode(Image.new("CMYK", (8, 8), (0, 255, 0, 0)), "JPEG", quality=100), LIMITS)
    assert close_to(opened(prepared).getpixel((4, 4)), (255, 0, 255))
    assert prepared.description.startswith("JPEG 8x8 CMYK")


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    prepared = decode_image(encode(Image.new("I;16", (4, 4), 30_000)), LIMITS)
    assert opened(prepared).getpixel((0, 0)) == (117, 117, 117)  # 30000 / 256; a plain convert gives 255


def test_grayscale_and_bilevel_become_rgb() -> None:
    assert opened(decode_image(encode(Image.new("L", (2, 2), 77)), LIMITS)).getpixel((0, 0)) == (77, 77, 77)
    assert opened(decode_image(encode(Image.new("1", (2, 2), 1), "BMP"), LIMITS)).getpixel((0, 0)) == (255, 255, 255)


def test_an_embedded_srgb_profile_keeps_colours_and_a_broken_one_is_ignored() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with_profile = decode_image(encode(two_colour(), icc_profile=srgb), LIMITS)
    assert close_to(opened(with_profile).getpixel((2, 2)), (255, 0, 0), 2)
    assert "ICC profile → sRGB" in with_profile.description
    broken = decode_image(encode(two_colour(), icc_profile=b"not a profile"), LIMITS)
    assert opened(broken).getpixel((2, 2)) == (255, 0, 0)


# --- base64 -------------------------------------------------------------------------------------------------


B64 = base64.b64encode(RED_PNG).decode()


@pytest.mark.parametrize(
    "value",
    [
        B64,
        B64.rstrip("="),
        base64.encodebytes(RED_PNG).decode(),  # MIME style: a line break every 76 characters
        base64.urlsafe_b64encode(RED_PNG).decode(),
        "data:image/png;base64," + B64,
        "DATA:IMAGE/PNG;BASE64," + B64,
        "data:image/jpeg;base64," + B64,  # a mislabelled PNG is read as the PNG it is
        "data:image/png;name=cat.png;base64," + B64,
        "  data:image/png;base64," + B64 + "\n",
    ],
)
def test_base64_forms_accepted(value: str) -> None:
    prepared = decode_base64_image(value, LIMITS)
    assert (prepared.width, prepared.height, prepared.source_format) == (40, 20, "PNG")


def test_an_invalid_character_is_located_and_the_data_not_echoed() -> None:
    value = "data:image/png;base64," + B64[:100] + "%" + B64[100:]
    assert base64_error(value) == (
        f'image: a base64 string of {len(value)} characters is not valid base64: character "%" at position 122 '
        f"{BASE64_ALLOWED}"
    )


def test_mixed_alphabets_are_refused() -> None:
    message = base64_error("ab-c+def")
    assert message == (
        'image: a base64 string of 8 characters is not valid base64: character "+" at position 4 '
        f"(standard and URL-safe alphabets are mixed) {BASE64_ALLOWED}"
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("QUJD=REVG", "'=' padding before the end"),
        ("QUJDR", "5 data characters is not a possible length (truncated?)"),
    ],
)
def test_malformed_base64(value: str, problem: str) -> None:
    assert base64_error(value) == f"image: a base64 string of {len(value)} characters is not valid base64: {problem} {BASE64_ALLOWED}"


def test_base64_of_nothing() -> None:
    assert base64_error("data:image/png;base64,") == (
        f"image: a base64 string of 22 characters holds no data {BASE64_ALLOWED}"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("data:text/plain;base64,QUJD", 'image: data URI media type "text/plain" is not an allowed image type'),
        ("data:image/svg+xml;base64,QUJD", 'image: data URI media type "image/svg+xml" is not an allowed image type'),
        ("data:image/heic;base64,QUJD", 'image: data URI media type "image/heic" is not an allowed image type'),
        ("data:;base64,QUJD", "image: data URI media type no media type is not an allowed image type"),
    ],
)
def test_data_uri_media_type_must_be_an_allowed_image_type(value: str, message: str) -> None:
    assert base64_error(value) == f"{message} (allowed: data:image/<png|jpeg|jpg|webp|gif|bmp|tiff>;base64,)"


def test_data_uri_must_be_base64_and_have_a_comma() -> None:
    assert base64_error("data:image/png,%89PNG") == (
        'image: data URI "data:image/png," is not base64-encoded (allowed: data:image/png;base64,<data>)'
    )
    assert base64_error("data:image/png;base64" + "A" * 300) == (
        f"image: a data URI without ',' after its header {BASE64_ALLOWED}"
    )


def test_a_url_sent_as_image_gets_a_hint() -> None:
    assert base64_error("https://example.com/cat.png") == (
        f"image: a URL is not base64 {BASE64_ALLOWED[:-1]}; send URLs as image_url)"
    )


def test_decoded_size_is_checked_before_decoding() -> None:
    limits = Limits(max_image_bytes=len(RED_PNG) - 1)
    assert base64_error(B64, limits) == (
        f"image: {len(RED_PNG)} bytes is too large (allowed: at most {len(RED_PNG) - 1} bytes)"
    )
    huge = "A" * 10_000_000
    started = time.monotonic()
    assert base64_error(huge, Limits(max_image_bytes=1000)) == (
        "image: about 7500000 bytes (7.2 MiB) is too large (allowed: at most 1000 bytes)"
    )
    assert time.monotonic() - started < 0.5


def test_base64_never_reaches_logs_or_messages(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    decode_base64_image(B64, LIMITS)
    broken = B64[:-10] + "!" + B64[-10:]
    message = base64_error(broken)
    truncated = base64_error(base64.b64encode(RED_PNG[: len(RED_PNG) // 2]).decode())
    for text in (caplog.text, message, truncated):
        assert B64[:24] not in text and B64[-40:-10] not in text


# --- The prepared image and the pipeline's entry point ---------------------------------------------------------


def test_prepared_image_is_frozen_and_its_repr_has_no_bytes() -> None:
    prepared = decode_image(RED_PNG, LIMITS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        prepared.width = 1  # type: ignore[misc]
    assert "png=" not in repr(prepared) and "40x20" in repr(prepared)


def test_prepare_image_from_base64_request() -> None:
    request = parse_request({"prompt": "a cat", "image": "data:image/png;base64," + B64}, Settings())
    prepared = prepare_image(request.input("image"), LIMITS)
    assert (prepared.width, prepared.height) == (40, 20) and opened(prepared)


def test_an_end_image_is_checked_like_the_image_and_named_in_its_errors() -> None:
    with pytest.raises(InvalidImage, match=r"^end_image: 3 bytes of data is not an allowed image"):
        prepare_image(MediaInput("end_image", "image", b64="data:image/png;base64,AAAA"), LIMITS)
    with pytest.raises(InvalidImage, match=r"^end_image: a URL is not base64 .*send URLs as end_image_url"):
        decode_base64_image("https://example.com/a.png", LIMITS, field="end_image")


@pytest.fixture
def image_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """An HTTP server on 127.0.0.1 serving ``files`` by path."""
    with FileServer() as server:
        yield server.url, server.files


def test_prepare_image_from_url(image_server: tuple[str, dict[str, bytes]]) -> None:
    base, files = image_server
    files["/cat.jpg"] = encode(two_colour(), "JPEG")
    files["/page.html"] = b"<html><body>Sign in</body></html>"
    limits = Limits(allow_private_image_urls=True)
    request = parse_request({"prompt": "a cat", "image_url": base + "/cat.jpg?sig=1"}, Settings(limits=limits))
    prepared = prepare_image(request.input("image"), limits)
    assert (prepared.width, prepared.height, prepared.source_format) == (40, 20, "JPEG")
    html = parse_request({"prompt": "a cat", "image_url": base + "/page.html"}, Settings(limits=limits))
    with pytest.raises(InvalidImage) as caught:
        prepare_image(html.input("image"), limits)
    assert str(caught.value) == f"image_url: 33 bytes of HTML data is not an allowed image {FORMATS_ALLOWED}"


def test_prepare_image_refuses_loopback_urls_by_default(image_server: tuple[str, dict[str, bytes]]) -> None:
    base, files = image_server
    files["/cat.png"] = RED_PNG
    request = parse_request({"prompt": "a cat", "image_url": base + "/cat.png"}, Settings())
    with pytest.raises(InvalidImage, match=r"^image_url: .*127\.0\.0\.1 is a loopback address"):
        prepare_image(request.input("image"), LIMITS)


def test_prepare_image_ends_with_the_jobs_time(image_server: tuple[str, dict[str, bytes]]) -> None:
    base, files = image_server
    files["/cat.png"] = RED_PNG
    limits = Limits(allow_private_image_urls=True)
    given = parse_request({"prompt": "a cat", "image_url": base + "/cat.png"}, Settings(limits=limits)).input("image")
    with pytest.raises(ExecutionTimeout, match=r"^image_url: .*the job's time budget \(JOB_TIMEOUT\) ran out"):
        prepare_image(given, limits, job_deadline=time.monotonic() - 1)
    stop = threading.Event()
    stop.set()
    with pytest.raises(ExecutionInterrupted, match=r"^image_url: .*the job was cancelled during the download"):
        prepare_image(given, limits, job_deadline=time.monotonic() + 60, stop=stop)
    assert prepare_image(given, limits, job_deadline=time.monotonic() + 60, stop=threading.Event()).width > 0


def test_an_rgb_png_needing_no_change_is_uploaded_byte_for_byte() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (9, 99, 199)).save(buf, "PNG")
    assert decode_image(buf.getvalue(), LIMITS).png == buf.getvalue()


def test_a_png_with_alpha_is_reencoded_as_rgb() -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (40, 30), (9, 99, 199, 0)).save(buf, "PNG")
    prepared = decode_image(buf.getvalue(), LIMITS)
    assert prepared.png != buf.getvalue()
    with Image.open(io.BytesIO(prepared.png)) as out:
        assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)
