"""URLs as the worker shows them: in messages and logs, never their query (a signature) or credentials.

A leaf, so that the request model can describe a URL without importing the fetcher.
"""

from __future__ import annotations

import json
import re

#: Whitespace other than the space, and C0/C1 control characters: escaped when shown.
_UNPRINTABLE = re.compile(r"[^\S ]|[\x00-\x1f\x7f-\x9f]")


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
    shown = (escaped(base) if escape else base) + ("?…" if has_query else "")
    if len(shown) > max_chars:
        shown = shown[: max_chars - 1] + "…"
    return shown


def escaped(text: str) -> str:
    """``text`` with whitespace other than spaces and control characters written as JSON escapes."""
    return _UNPRINTABLE.sub(lambda m: json.dumps(m.group())[1:-1], text)


def _strip_query(url: str) -> tuple[str, bool]:
    """``url`` without ``?query`` and ``#fragment``, and whether there was a query."""
    before_fragment = url.split("#", 1)[0]
    base, question, _ = before_fragment.partition("?")
    return base, bool(question)
