"""A media field's base64 → bytes: strict decoding, data URIs, and the byte cap before any copy.

Accepted: the standard alphabet (``+/``) or the URL-safe one (``-_``), not mixed; ``=`` padding
present, partial or absent; ASCII whitespace anywhere (line-wrapped output of ``base64``/MIME); or
a ``data:<kind>/<type>[;parameters];base64,`` URI whose kind and type the field allows. Refused,
with the position: any other character, padding before the end, a length no base64 encoder
produces. A URL given in the base64 field is refused with a pointer to the ``<field>_url`` form.
The bytes' real format decides how they are decoded later: a data URI's type is only checked.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from worker.errors import WorkerError

_HEADER_MAX = 200
_NOT_STANDARD = re.compile(r"[^A-Za-z0-9+/=\s]")
_NOT_URLSAFE = re.compile(r"[^A-Za-z0-9\-_=\s]")
_WHITESPACE = re.compile(r"\s+")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


@dataclass(frozen=True)
class DataForm:
    """What one kind of media field takes in base64: the data URI media types, the error to raise."""

    #: ``(kind, subtypes)`` pairs a data URI may declare, e.g. ``("audio", ("wav", "mpeg"))``.
    media_types: tuple[tuple[str, tuple[str, ...]], ...]
    error: type[WorkerError]

    @property
    def uri_form(self) -> str:
        """``data:audio/<wav|mpeg|…>;base64,`` (with a second kind when there is one)."""
        return " or ".join(f"data:{kind}/<{'|'.join(subtypes)}>;base64," for kind, subtypes in self.media_types)

    @property
    def allowed(self) -> str:
        return f"standard or URL-safe base64 (padding and line breaks optional), or a {self.uri_form} URI"

    def accepts(self, media_type: str) -> bool:
        kind, _, subtype = media_type.lower().partition("/")
        return any(kind == k and subtype in subtypes for k, subtypes in self.media_types)


def decode_field(value: str, field: str, form: DataForm, max_bytes: int) -> bytes:
    """The bytes of a base64 media field (raw or a data URI), refused past ``max_bytes`` before decoding."""
    payload, offset = _payload(value, field, form)
    what = f"a base64 string of {len(value)} characters"
    if len(payload) > 2 * (max_bytes + 2) // 3 * 4:  # cheap first: far too long even with line breaks, before any copy
        raise form.error(f"{field}: about {_bytes(len(payload) * 3 // 4)} is too large (allowed: at most {_bytes(max_bytes)})")
    compact = _WHITESPACE.sub("", payload)
    if len(compact) * 3 // 4 > max_bytes + 3:
        raise form.error(f"{field}: about {_bytes(len(compact) * 3 // 4)} is too large (allowed: at most {_bytes(max_bytes)})")
    urlsafe = "-" in compact or "_" in compact
    bad = (_NOT_URLSAFE if urlsafe else _NOT_STANDARD).search(payload)
    if bad is not None:
        mixed = " (standard and URL-safe alphabets are mixed)" if urlsafe and bad.group() in "+/" else ""
        raise form.error(
            f"{field}: {what} is not valid base64: character {_quote(bad.group())} at position "
            f"{offset + bad.start()}{mixed} (allowed: {form.allowed})"
        )
    data = compact.rstrip("=")
    if not data:
        raise form.error(f"{field}: {what} holds no data (allowed: {form.allowed})")
    if "=" in data:
        raise form.error(f"{field}: {what} is not valid base64: '=' padding before the end (allowed: {form.allowed})")
    if len(data) % 4 == 1:
        raise form.error(
            f"{field}: {what} is not valid base64: {len(data)} data characters is not a possible length "
            f"(truncated?) (allowed: {form.allowed})"
        )
    if urlsafe:
        data = data.translate(_URLSAFE_TO_STANDARD)
    decoded = binascii.a2b_base64(data + "=" * (-len(data) % 4), strict_mode=True)
    if len(decoded) > max_bytes:
        raise form.error(f"{field}: {_bytes(len(decoded))} is too large (allowed: at most {_bytes(max_bytes)})")
    return decoded


def _payload(value: str, field: str, form: DataForm) -> tuple[str, int]:
    """The base64 part of ``value`` and where it starts (for positions in messages)."""
    start = len(value) - len(value.lstrip())
    prefix = value[start : start + 8].lower()
    if not prefix.startswith("data:"):
        if prefix.startswith(("http://", "https://")):
            raise form.error(f"{field}: a URL is not base64 (allowed: {form.allowed}; send URLs as {field}_url)")
        return value, 0
    comma = value.find(",", start, start + _HEADER_MAX)
    if comma < 0:
        raise form.error(f"{field}: a data URI without ',' after its header (allowed: {form.allowed})")
    header = value[start + 5 : comma]
    media_type, *parameters = [part.strip() for part in header.split(";")]
    if not form.accepts(media_type):
        found = _quote(media_type) if media_type else "no media type"
        raise form.error(f"{field}: data URI media type {found} is not allowed (allowed: {form.uri_form})")
    if not parameters or parameters[-1].lower() != "base64":
        raise form.error(f"{field}: data URI {_quote('data:' + header + ',')} is not base64-encoded (allowed: {form.uri_form})")
    return value[comma + 1 :], comma + 1


def _quote(text: str, max_chars: int = 60) -> str:
    short = text if len(text) <= max_chars else text[: max_chars - 1] + "…"
    return '"' + short.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bytes(size: int) -> str:
    """``26214400 bytes (25.0 MiB)``: exact for the client, readable for a person."""
    return f"{size} bytes ({size / 2**20:.1f} MiB)" if size >= 2**20 else f"{size} bytes"
