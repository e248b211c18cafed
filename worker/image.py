"""Image bytes → a verified, upright RGB image, re-encoded as PNG for ComfyUI's upload.

Why re-encode instead of forwarding the user's file: ComfyUI's ``LoadImage`` would open any
format Pillow knows, ignore colour profiles, keep alpha as a mask and fail late and vaguely on a
broken file. Decoding here refuses bad input before ComfyUI is involved, with a message that
says what was wrong, and hands ComfyUI one predictable thing: an 8-bit RGB PNG.

The steps, each refusing with an :class:`InvalidImage` naming the field (``image`` or
``image_url``):

1. base64 (or a ``data:image/<type>;base64,`` URI) → bytes, see :func:`decode_base64_image`;
2. at most ``Limits.max_image_bytes`` bytes;
3. a real PNG, JPEG (also MPO, the multi-picture JPEG of phone cameras), WEBP, GIF, BMP or TIFF,
   recognised by its signature; no other Pillow decoder ever runs on user data;
4. at most ``Limits.max_image_pixels`` pixels, read from the header *before* the pixels are
   decoded, so a decompression bomb costs nothing. The header is read through the format's
   plugin class rather than ``Image.open``, so this limit, not Pillow's global
   ``MAX_IMAGE_PIXELS`` (left untouched), decides and names itself in the message;
5. fully decoded, so a truncated file fails here, not inside ComfyUI;
6. the first frame of an animation, and only it: frames are never counted or read, since Pillow
   walks every frame to count them (quadratically for TIFF pages) and fails on damage in any of
   them; EXIF orientation applied; transparency composited on white;
   an embedded ICC profile converted to sRGB; palette, CMYK, grayscale and 16-bit modes turned
   into 8-bit RGB.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import re
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageCms,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from worker.download import fetch_image, redact_url
from worker.errors import InvalidImage
from worker.settings import Limits

if TYPE_CHECKING:
    from worker.request.model import MediaInput

log = logging.getLogger(__name__)

#: Media types a data URI may declare.
DATA_URI_TYPES: tuple[str, ...] = ("png", "jpeg", "jpg", "webp", "gif", "bmp", "tiff")
_BASE64_ALLOWED = (
    "standard or URL-safe base64 (padding and line breaks optional), "
    f"or a data:image/<{'|'.join(DATA_URI_TYPES)}>;base64, URI"
)
#: Pillow's exceptions for files it cannot parse: fuzzed or damaged files raise any of these.
_DECODER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError, ZeroDivisionError)
#: PNG's fastest compression: the file only travels to ComfyUI on the same machine.
_PNG_COMPRESS_LEVEL = 1
_WHITE = (255, 255, 255)
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PreparedImage:
    """The image ComfyUI receives: RGB PNG bytes and what they came from."""

    png: bytes = field(repr=False)
    width: int
    height: int
    #: Pillow's name of the format the user sent (``"JPEG"``, ``"PNG"``, ``"MPO"``…).
    source_format: str
    #: One line for the logs: source, size, what was done to it.
    description: str = ""


def prepare_image(
    given: MediaInput, limits: Limits, *, job_deadline: float | None = None, stop: threading.Event | None = None
) -> PreparedImage:
    """One of the job's images, whichever way it came (base64 / data URI or URL), ready to upload.

    A URL's download ends with the job: at ``job_deadline`` (``time.monotonic()``) or when ``stop``
    is set (:func:`worker.download.fetch`).
    """
    field = given.source_field
    if given.b64 is not None:
        image = decode_base64_image(given.b64, limits, field=field)
        source = f"{field} (base64)"
    else:
        data = fetch_image(given.url or "", limits, field=field, job_deadline=job_deadline, stop=stop)
        image = decode_image(data, limits, field=field)
        source = f"{field} {redact_url(given.url or '')}"
    log.info("%s: %s", source, image.description)
    return image


def decode_base64_image(value: str, limits: Limits, *, field: str = "image") -> PreparedImage:
    """Decode an image field (``image``, ``end_image``): raw base64 or a ``data:image/<type>;base64,`` URI.

    Accepted: the standard alphabet (``+/``) or the URL-safe one (``-_``), not mixed; ``=``
    padding present, partial or absent; ASCII whitespace anywhere (line-wrapped output of
    ``base64``/MIME). Refused, with the position: any other character, padding before the end,
    a length no base64 encoder produces. The data URI's media type must be an image type; the
    bytes' real format decides how they are decoded (a mislabelled PNG is still read as PNG).
    """
    payload, offset = _strip_data_uri(value, field)
    data = _decode_base64(payload, offset, len(value), limits, field)
    return decode_image(data, limits, field=field)


def decode_image(data: bytes, limits: Limits, *, field: str = "image") -> PreparedImage:
    """Verify ``data`` is an allowed image within the limits and re-encode it as RGB PNG."""
    _check_byte_size(len(data), limits, field)
    with _opened(data, field, limits) as image:
        source_format = image.format or "unknown"
        source_size, source_mode = image.size, image.mode
        _check_pixels(image.size, limits, field)
        _load(image, source_format, field, limits)
        animated_png = source_format == "PNG" and image.is_animated  # from its acTL chunk: no frame is read
        rgb, steps = _to_upright_rgb(image, source_format, field)
    # An RGB PNG that needed no change is already what ComfyUI should get: re-encoding it would
    # cost ~0.2 s per 1280x720 image for identical pixels.
    if source_format == "PNG" and source_mode == "RGB" and not animated_png and not steps:
        png = data
    else:
        png = _encode_png(rgb)
    description = (
        f"{source_format} {source_size[0]}x{source_size[1]} {source_mode}, {len(data)} bytes"
        f"{''.join(', ' + step for step in steps)} → PNG {rgb.width}x{rgb.height} RGB, {len(png)} bytes"
    )
    return PreparedImage(png, rgb.width, rgb.height, source_format, description)


# --- base64 ---------------------------------------------------------------------------------------

_DATA_URI_HEADER_MAX = 200
_NOT_STANDARD = re.compile(r"[^A-Za-z0-9+/=\s]")
_NOT_URLSAFE = re.compile(r"[^A-Za-z0-9\-_=\s]")
_WHITESPACE = re.compile(r"\s+")
_LEADING_WHITESPACE = re.compile(r"\s*")


def _strip_data_uri(value: str, field: str) -> tuple[str, int]:
    """The base64 part of ``value`` and where it starts (for positions in messages).

    Without a ``data:`` prefix the whole value is the payload. With one, the header must be
    ``data:image/<allowed type>[;parameters];base64,``.
    """
    start = _LEADING_WHITESPACE.match(value).end()  # type: ignore[union-attr]
    prefix = value[start : start + 8].lower()
    if not prefix.startswith("data:"):
        if prefix.startswith(("http://", "https://")):
            raise InvalidImage(f"{field}: a URL is not base64 (allowed: {_BASE64_ALLOWED}; send URLs as {field}_url)")
        return value, 0
    comma = value.find(",", start, start + _DATA_URI_HEADER_MAX)
    if comma < 0:
        raise InvalidImage(f"{field}: a data URI without ',' after its header (allowed: {_BASE64_ALLOWED})")
    header = value[start + 5 : comma]
    media_type, *parameters = [part.strip() for part in header.split(";")]
    kind, _, subtype = media_type.lower().partition("/")
    if kind != "image" or subtype not in DATA_URI_TYPES:
        found = _quote(media_type) if media_type else "no media type"
        raise InvalidImage(
            f"{field}: data URI media type {found} is not an allowed image type "
            f"(allowed: data:image/<{'|'.join(DATA_URI_TYPES)}>;base64,)"
        )
    if not parameters or parameters[-1].lower() != "base64":
        raise InvalidImage(
            f"{field}: data URI {_quote('data:' + header + ',')} is not base64-encoded "
            f"(allowed: data:image/{subtype};base64,<data>)"
        )
    return value[comma + 1 :], comma + 1


def _decode_base64(payload: str, offset: int, total_chars: int, limits: Limits, field: str) -> bytes:
    """Strict base64 decoding (see :func:`decode_base64_image`), size-checked before decoding."""
    what = f"a base64 string of {total_chars} characters"
    # Cheap first: a string far longer than any allowed image is refused before any copy.
    if len(payload) > _max_base64_chars(limits.max_image_bytes) * 2:
        _too_many_bytes(field, len(payload) * 3 // 4, limits, estimated=True)
    # Fast path for what nearly every client sends (standard alphabet, padded, one line): C-speed
    # strict decoding; anything else goes through the checks below for a precise message.
    if payload and len(payload) % 4 == 0:
        try:
            data = binascii.a2b_base64(payload, strict_mode=True)
        except (binascii.Error, ValueError):  # ValueError: non-ASCII text
            pass
        else:
            _check_byte_size(len(data), limits, field)
            return data
    urlsafe = "-" in payload or "_" in payload
    bad = (_NOT_URLSAFE if urlsafe else _NOT_STANDARD).search(payload)
    if bad is not None:
        mixed = " (standard and URL-safe alphabets are mixed)" if urlsafe and bad.group() in "+/" else ""
        raise InvalidImage(
            f"{field}: {what} is not valid base64: character {_quote(bad.group())} at position "
            f"{offset + bad.start()}{mixed} (allowed: {_BASE64_ALLOWED})"
        )
    compact = _WHITESPACE.sub("", payload).rstrip("=")
    if not compact:
        raise InvalidImage(f"{field}: {what} holds no data (allowed: {_BASE64_ALLOWED})")
    if "=" in compact:
        raise InvalidImage(
            f"{field}: {what} is not valid base64: '=' padding before the end (allowed: {_BASE64_ALLOWED})"
        )
    if len(compact) % 4 == 1:
        raise InvalidImage(
            f"{field}: {what} is not valid base64: {len(compact)} data characters is not a possible "
            f"length (truncated?) (allowed: {_BASE64_ALLOWED})"
        )
    _check_byte_size(len(compact) * 3 // 4, limits, field)
    if urlsafe:
        compact = compact.translate(_URLSAFE_TO_STANDARD)
    try:
        return binascii.a2b_base64(compact + "=" * (-len(compact) % 4), strict_mode=True)
    except binascii.Error:
        raise InvalidImage(f"{field}: {what} is not valid base64 (allowed: {_BASE64_ALLOWED})") from None


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def _max_base64_chars(max_bytes: int) -> int:
    return len(base64.b64encode(b"")) + (max_bytes + 2) // 3 * 4


def _quote(text: str, max_chars: int = 60) -> str:
    """``text`` in double quotes, shortened, for a message."""
    short = text if len(text) <= max_chars else text[: max_chars - 1] + "…"
    return '"' + short.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- Checks -------------------------------------------------------------------------------------


def _check_byte_size(size: int, limits: Limits, field: str) -> None:
    if size == 0:
        raise InvalidImage(f"{field}: 0 bytes is not an image (allowed: a {_FORMATS_TEXT} file)")
    if size > limits.max_image_bytes:
        _too_many_bytes(field, size, limits)


def _too_many_bytes(field: str, size: int, limits: Limits, *, estimated: bool = False) -> None:
    about = "about " if estimated else ""
    raise InvalidImage(
        f"{field}: {about}{_bytes(size)} is too large (allowed: at most {_bytes(limits.max_image_bytes)})"
    )


def _bytes(size: int) -> str:
    """``26214400 bytes (25.0 MiB)``: exact for the client, readable for a person."""
    return f"{size} bytes ({size / 2**20:.1f} MiB)" if size >= 2**20 else f"{size} bytes"


@dataclass(frozen=True)
class _Format:
    """One allowed format: how its files begin and the Pillow class that reads its header."""

    name: str
    accepts: Callable[[bytes], bool]
    opener: Callable[[IO[bytes]], ImageFile.ImageFile]


def _starts_with(*signatures: bytes) -> Callable[[bytes], bool]:
    return lambda head: head.startswith(signatures)


#: Opened through their plugin classes, not ``Image.open``: ``Image.open`` applies Pillow's global
#: decompression-bomb limit, and the worker's own limit must decide (and say so) instead.
_FORMATS: tuple[_Format, ...] = (
    _Format("PNG", _starts_with(b"\x89PNG\r\n\x1a\n"), PngImagePlugin.PngImageFile),
    _Format("JPEG", _starts_with(b"\xff\xd8\xff"), JpegImagePlugin.jpeg_factory),
    _Format("WEBP", lambda head: head[:4] == b"RIFF" and head[8:12] == b"WEBP", WebPImagePlugin.WebPImageFile),
    _Format("GIF", _starts_with(b"GIF87a", b"GIF89a"), GifImagePlugin.GifImageFile),
    _Format("BMP", _starts_with(b"BM"), BmpImagePlugin.BmpImageFile),
    _Format("TIFF", _starts_with(*TiffImagePlugin.PREFIXES), TiffImagePlugin.TiffImageFile),
)
#: The only Pillow decoders ever run on user data. A JPEG may come back as "MPO" (Pillow's
#: name for the multi-picture JPEGs of phone cameras); its first picture is used.
ALLOWED_FORMATS: tuple[str, ...] = tuple(kind.name for kind in _FORMATS)
_FORMATS_TEXT = ", ".join(ALLOWED_FORMATS[:-1]) + " or " + ALLOWED_FORMATS[-1]


@contextmanager
def _opened(data: bytes, field: str, limits: Limits) -> Iterator[Image.Image]:
    """Read the header of an allowed format; the pixels are decoded later by :func:`_load`."""
    head = data[:16]
    kind = next((candidate for candidate in _FORMATS if candidate.accepts(head)), None)
    if kind is None:
        raise InvalidImage(
            f"{field}: {len(data)} bytes of {_sniff(data)} is not an allowed image (allowed: {_FORMATS_TEXT})"
        )
    try:
        image = kind.opener(io.BytesIO(data))
    except Image.DecompressionBombError:  # Pillow checks GIF frames itself while opening
        raise InvalidImage(_too_many_pixels(field, limits)) from None
    except _DECODER_ERRORS as exc:
        log.info("%s: Pillow cannot read the %s header: %s", field, kind.name, _short(exc))
        raise InvalidImage(
            f"{field}: the {kind.name} data is truncated or corrupt ({_short(exc)}) "
            f"(allowed: a complete {_FORMATS_TEXT} file)"
        ) from None
    with image:
        yield image


def _check_pixels(size: tuple[int, int], limits: Limits, field: str) -> None:
    """Refuse an image whose header declares more pixels than allowed, before decoding them."""
    width, height = size
    if width * height > limits.max_image_pixels:
        raise InvalidImage(_too_many_pixels(field, limits, f"{width}x{height} is {width * height} pixels, too many"))


def _too_many_pixels(field: str, limits: Limits, what: str = "the image has too many pixels") -> str:
    side = int(limits.max_image_pixels**0.5)
    return f"{field}: {what} (allowed: at most {limits.max_image_pixels} pixels, e.g. {side}x{side})"


def _load(image: Image.Image, source_format: str, field: str, limits: Limits) -> None:
    """Decode every pixel of the first frame now, so a truncated file fails with our message."""
    try:
        image.load()
    except Image.DecompressionBombError:  # a TIFF tile larger than Pillow's own limit
        raise InvalidImage(_too_many_pixels(field, limits)) from None
    except _DECODER_ERRORS as exc:
        log.info("%s: Pillow cannot decode the %s: %s", field, source_format, _short(exc))
        raise InvalidImage(
            f"{field}: the {source_format} data is truncated or corrupt ({_short(exc)}) "
            f"(allowed: a complete {_FORMATS_TEXT} file)"
        ) from None


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 80 else text[:79] + "…"


# --- Conversion ---------------------------------------------------------------------------------


def _to_upright_rgb(image: Image.Image, source_format: str, field: str) -> tuple[Image.Image, list[str]]:
    """Orientation, alpha, colour profile and mode → an 8-bit RGB image; also what was done."""
    steps: list[str] = []
    upright = _apply_orientation(image, steps)
    try:
        rgb = _to_rgb(upright, steps)
    except _DECODER_ERRORS as exc:
        raise InvalidImage(
            f"{field}: a {source_format} in mode {image.mode} cannot be converted to RGB ({_short(exc)}) "
            f"(allowed: {_FORMATS_TEXT} in a common colour mode)"
        ) from None
    return rgb, steps


def _apply_orientation(image: Image.Image, steps: list[str]) -> Image.Image:
    """Rotate / flip as the EXIF Orientation tag says, as every photo viewer does."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation == 1:
            return image
        upright = ImageOps.exif_transpose(image)
    except _DECODER_ERRORS as exc:  # a damaged EXIF block must not cost the user the job
        log.warning("ignoring unreadable EXIF orientation: %s", _short(exc))
        return image
    if upright is None:
        return image
    steps.append(f"EXIF orientation {orientation} applied")
    return upright


def _to_rgb(image: Image.Image, steps: list[str]) -> Image.Image:
    image = _flatten_16_bit(image, steps)
    image = _composite_on_white(image, steps)
    profiled = _to_srgb(image, steps)
    if profiled is not None:
        return profiled
    if image.mode != "RGB":
        steps.append(f"{image.mode} → RGB")
    return image.convert("RGB")


def _flatten_16_bit(image: Image.Image, steps: list[str]) -> Image.Image:
    """16-bit grayscale (``I;16*``, ``I``) scaled to 8 bits; Pillow's own convert would clip at 255."""
    if image.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return image
    steps.append(f"{image.mode} scaled to 8 bits")
    as_int = image if image.mode == "I" else image.convert("I")
    return as_int.point(lambda v: v / 256).convert("L")


def _composite_on_white(image: Image.Image, steps: list[str]) -> Image.Image:
    """Transparent pixels become white (not black, as a plain convert would make them)."""
    if not image.has_transparency_data:
        return image
    steps.append("transparency composited on white")
    icc = image.info.get("icc_profile")
    background = Image.new("RGBA", image.size, (*_WHITE, 255))
    background.alpha_composite(image.convert("RGBA"))
    flat = background.convert("RGB")
    if icc:
        flat.info["icc_profile"] = icc
    return flat


def _to_srgb(image: Image.Image, steps: list[str]) -> Image.Image | None:
    """Convert with the embedded ICC profile, if any (CMYK and wide-gamut photos need it)."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "CMYK", "L"):
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, *_DECODER_ERRORS) as exc:
        log.warning("ignoring unusable ICC profile: %s", _short(exc))
        return None
    if converted is None:
        return None
    steps.append(f"{image.mode} ICC profile → sRGB")
    return converted


_SRGB = ImageCms.createProfile("sRGB")


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _sniff(data: bytes) -> str:
    """A guess at what non-image data is, so the message helps (an HTML error page, a PDF…)."""
    head = data[:64].lstrip()
    lowered = head.lower()
    guesses = (
        (lowered.startswith((b"<!doctype html", b"<html")), "HTML"),
        (b"<svg" in lowered or (lowered.startswith(b"<?xml") and b"svg" in data[:1024].lower()), "SVG"),
        (lowered.startswith(b"<?xml"), "XML"),
        (head.startswith(b"%PDF"), "PDF"),
        (data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc"), "HEIC/HEIF"),
        (data[4:12] == b"ftypavif", "AVIF"),
        (head[:1] in (b"{", b"["), "JSON"),
    )
    for matched, name in guesses:
        if matched:
            return f"{name} data"
    return "data"
