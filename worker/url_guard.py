"""The URL guard: which URLs a job may give and which addresses may be connected to, as pure checks.

:mod:`worker.download` applies them to every hop of a fetch; :func:`redact_url` is how any module
shows a URL a job gave (no query, no credentials). Why each rule: :mod:`worker.download`'s docstring.
"""

from __future__ import annotations

import ipaddress
import json
import re
from urllib.parse import urlsplit

#: The schemes a URL may have, and their ports.
DEFAULT_PORTS = {"http": 80, "https": 443}


def redact_url(url: str, max_chars: int = 200, *, escape: bool = True) -> str:
    """``url`` fit for a log line or an error: no query, fragment or credentials; truncated.

    Signed URLs (S3, GCS, CDN tokens) carry their secret in the query string, so it becomes
    ``?…``; ``user:password@`` becomes ``…@`` for the same reason. Whitespace and control
    characters are escaped (unless ``escape`` is False: the caller quotes it as JSON), so the text
    stays one line. Works on malformed URLs too.
    """
    base, has_query = _strip_query(url)
    scheme, separator, rest = base.partition("://")
    if separator:
        netloc, slash, path = rest.partition("/")
        before, at, host = netloc.rpartition("@")
        base = f"{scheme}://{'…@' if at else ''}{host}{slash}{path}"
    shown = (_escaped(base) if escape else base) + ("?…" if has_query else "")
    if len(shown) > max_chars:
        shown = shown[: max_chars - 1] + "…"
    return shown


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be fetched at all (before any resolution), or None when its form is fine.

    Refused besides a scheme other than http(s) and a missing host: a backslash, whitespace or a
    control character anywhere, user info (``user@``, ``user:pass@``), and a host that is neither an
    IP literal nor a DNS name: parsers disagree on where the host of such a URL is
    (``http://127.0.0.1:8188\\@1.1.1.1/`` is 1.1.1.1 to ``urlsplit``, 127.0.0.1 to urllib3).
    """
    odd = _ODD_CHARACTER.search(url)
    if odd is not None:
        return f"has {_character_name(odd.group())} at position {odd.start()}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in DEFAULT_PORTS:
        return "is not an http or https URL"
    if "@" in parts.netloc:
        return "has user info (user@ or user:password@) before the host"
    if not parts.hostname:
        return "has no host name"
    if ascii_host(parts.hostname) is None:
        return "has a host that is not a valid name or IP address"
    if port == 0:
        return "has port 0"
    return None


#: Characters no fetched URL may hold: backslash, whitespace (Unicode too), C0 and C1 controls.
_ODD_CHARACTER = re.compile(r"[\\\s\x00-\x1f\x7f-\x9f]")
_UNPRINTABLE = re.compile(r"[^\S ]|[\x00-\x1f\x7f-\x9f]")
_DNS_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


def _character_name(char: str) -> str:
    if char == "\\":
        return "a backslash"
    if char.isspace():
        return f"whitespace ({_escaped(char)})"
    return f"a control character ({_escaped(char)})"


def _escaped(text: str) -> str:
    """``text`` with whitespace other than spaces and control characters written as JSON escapes."""
    return _UNPRINTABLE.sub(lambda m: json.dumps(m.group())[1:-1], text)


def ascii_host(hostname: str) -> str | None:
    """The host as it goes on the wire: an IP literal, or a DNS name in ASCII (IDNA); None when it is
    neither, or an IPv6 address with a zone (``%eth0``)."""
    if "%" in hostname:
        return None
    try:
        ipaddress.ip_address(hostname)
        return hostname
    except ValueError:
        pass
    try:
        ascii_host = hostname.encode("idna").decode("ascii") if not hostname.isascii() else hostname
    except UnicodeError:
        return None
    return ascii_host if _DNS_NAME.fullmatch(ascii_host) else None


def address_problem(address: str) -> str | None:
    """What kind of non-public address ``address`` is (e.g. ``"a loopback address"``), or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _ip_kind(ip.ipv4_mapped)
        embedded = ip.sixtofour or _nat64_ipv4(ip)
        if embedded is not None and _ip_kind(embedded) is not None:
            return f"{_ip_kind(embedded)} (IPv4 {embedded} inside IPv6)"
    return _ip_kind(ip)


# --- Addresses -----------------------------------------------------------------------------------

_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
_KINDS = (
    ("is_unspecified", "an unspecified address"),
    ("is_loopback", "a loopback address"),
    ("is_link_local", "a link-local address"),
    ("is_multicast", "a multicast address"),
    ("is_private", "a private address"),
    ("is_reserved", "a reserved address"),
)


def _ip_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    for attribute, kind in _KINDS:
        if getattr(ip, attribute):
            return kind
    if not ip.is_global:  # e.g. 100.64.0.0/10, carrier-grade NAT
        return "a non-public address"
    return None


def _nat64_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip in _NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _strip_query(url: str) -> tuple[str, bool]:
    """``url`` without ``?query`` and ``#fragment``, and whether there was a query."""
    before_fragment = url.split("#", 1)[0]
    base, question, _ = before_fragment.partition("?")
    return base, bool(question)
