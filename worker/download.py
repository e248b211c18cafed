"""Fetch a URL a job gives without letting the job reach the worker's own network.

Every hop (the URL and each redirect) is checked before a byte is sent: http(s) only, the host
resolved once to public addresses and the connection pinned to the one checked, credentials only
over https to their own host, the body capped after decoding, and one deadline over the whole
fetch (:mod:`worker.fetch_clock`). The rules and why the worker keeps its own guard:
docs/deployment.md ("What is guarded") and docs/development.md.

One loop serves every URL field; :class:`FetchRules` says what differs between them, and the caller
says where the body goes (``write``). The URL's form and the addresses are judged by the pure checks
of :mod:`worker.url_guard`; messages and logs show URLs through :func:`redact_url`.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool

from worker.errors import InvalidImage, WorkerError
from worker.fetch_clock import FetchClock
from worker.settings import Limits
from worker.url_guard import DEFAULT_PORTS, address_problem, ascii_host, redact_url, url_problem

log = logging.getLogger(__name__)

#: Redirect hops followed before giving up. Not in ``Limits`` yet (see the module's report).
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
#: Ask for the formats :mod:`worker.image` accepts, so content-negotiating CDNs do not answer
#: with AVIF or HEIC.
_IMAGE_ACCEPT = "image/png,image/jpeg,image/webp,image/gif,image/bmp,image/tiff;q=0.9,*/*;q=0.5"

#: ``resolve(host, port)`` returns the IP addresses (as strings) a connection may use.
Resolver = Callable[[str, int], Sequence[str]]
#: ``credentials(host)`` returns the headers that authenticate to ``host`` (usually none).
Credentials = Callable[[str], Mapping[str, str]]
#: ``write(chunk)`` takes the body as it arrives; it may raise the rules' error to stop early.
Writer = Callable[[bytes], None]
#: ``expect(size)`` hears the body's announced size (None: not announced) before it is read; it may refuse it.
Expect = Callable[[int | None], None]


@dataclass(frozen=True)
class FetchRules:
    """What one kind of URL field may fetch; every message starts with ``field``."""

    field: str
    max_bytes: int
    #: Seconds one connect or one read may wait.
    timeout: float
    #: Seconds the whole fetch may take, redirects and body included; None for no overall limit.
    deadline: float | None = None
    #: The variable that sets ``deadline``, named when it passes.
    deadline_setting: str = "IMAGE_URL_DEADLINE"
    allow_private: bool = False
    #: The variable that allows private addresses, named in the refusal.
    private_setting: str = "ALLOW_PRIVATE_IMAGE_URLS"
    #: What a good answer holds, for the message about a non-2xx status.
    content: str = "the image"
    accept: str = "*/*"
    user_agent: str = "wan22-worker"
    error: type[WorkerError] = InvalidImage
    credentials: Credentials | None = None

    @classmethod
    def for_media(
        cls, limits: Limits, field: str = "image_url", kind: str = "image", max_bytes: int | None = None,
        accept: str = _IMAGE_ACCEPT, error: type[WorkerError] = InvalidImage,
    ) -> FetchRules:
        """A job's media URL: the image URLs' network settings, the kind's byte cap (the image's by default)."""
        return cls(
            field=field, max_bytes=limits.max_image_bytes if max_bytes is None else max_bytes,
            timeout=limits.image_url_timeout, deadline=limits.image_url_deadline, allow_private=limits.allow_private_image_urls,
            content=f"the {kind}", accept=accept, user_agent=f"wan22-worker ({kind}_url fetch)", error=error,
        )  # fmt: skip


@dataclass(frozen=True)
class Fetched:
    """What a finished fetch got: the URL that answered 2xx and how many body bytes it sent."""

    url: str
    size: int


def resolve_host(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the system resolver, in its preferred order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def fetch_image(
    url: str,
    limits: Limits,
    *,
    field: str = "image_url",
    resolve: Resolver = resolve_host,
    ca_bundle: str | None = None,
    job_deadline: float | None = None,
    stop: threading.Event | None = None,
) -> bytes:
    """Download ``url`` under the rules in the module docstring and return the body's bytes.

    ``resolve`` replaces DNS (tests map names to addresses with it); ``ca_bundle`` is a PEM file
    of trusted CAs instead of requests' default (tests use their own CA); ``job_deadline`` and
    ``stop`` are :func:`fetch`'s. Every failure is an :class:`InvalidImage` whose message starts with
    ``field`` (``image_url:``) and never shows the query, or the job's timeout or cancel.
    """
    body = bytearray()
    fetch(
        url, FetchRules.for_media(limits, field), body.extend,
        resolve=resolve, ca_bundle=ca_bundle, job_deadline=job_deadline, stop=stop,
    )  # fmt: skip
    return bytes(body)


def fetch(
    url: str,
    rules: FetchRules,
    write: Writer,
    *,
    resolve: Resolver = resolve_host,
    ca_bundle: str | None = None,
    job_deadline: float | None = None,
    stop: threading.Event | None = None,
    expect: Expect | None = None,
) -> Fetched:
    """Download ``url`` under ``rules``, handing the body to ``write`` chunk by chunk.

    ``job_deadline`` (a ``time.monotonic()`` value) ends the fetch when it comes before the rules'
    own deadline, with :class:`ExecutionTimeout` (``timeout``) naming JOB_TIMEOUT; ``stop`` set
    ends it at once with :class:`ExecutionInterrupted` (``cancelled``). Every other failure is a
    ``rules.error`` whose message starts with ``rules.field``. ``write`` has received part of the
    body when a failure happens mid-transfer: the caller discards it. ``expect`` hears the size the
    final answer announces, within the byte cap, before its body is read.
    """
    clock = FetchClock(
        rules.deadline, deadline_error=rules.error, deadline_setting=rules.deadline_setting, job_deadline=job_deadline, stop=stop
    )
    with clock:
        return _follow(url, rules, write, expect or _anything, clock, resolve, ca_bundle)


def _anything(size: int | None) -> None:
    """An ``expect`` that takes any size."""


def _follow(
    url: str, rules: FetchRules, write: Writer, expect: Expect, clock: FetchClock, resolve: Resolver, ca_bundle: str | None
) -> Fetched:
    """The URL and its redirects, hop by hop, until one answers with the body."""
    current, first_host, same_host = url, None, True
    for hop in range(MAX_REDIRECTS + 1):
        target = _Target.parse(current, hop, rules)
        clock.check(target.where)
        addresses = _allowed_addresses(target, rules, resolve)
        first_host = first_host or target.host
        same_host = same_host and target.host == first_host
        credentials = _credentials_for(target, rules, same_host)
        with _open(target, addresses, rules, credentials, clock, ca_bundle) as response:
            if response.status_code in _REDIRECT_STATUSES:
                current = _redirect_location(target, response, rules)
                log.info("%s: HTTP %d redirect to %s", rules.field, response.status_code, redact_url(current))
                continue
            _check_status(target, response, rules)
            size = _read_body(target, response, rules, clock, write, expect)
        log.info("%s: downloaded %d bytes from %s", rules.field, size, target.shown)
        return Fetched(target.url, size)
    raise rules.error(
        f"{rules.field}: more than {MAX_REDIRECTS} redirects starting at {redact_url(url)} "
        f"(allowed: at most {MAX_REDIRECTS})"
    )


# --- One hop ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """One URL to fetch, split into what the connection needs."""

    url: str
    parts: SplitResult
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    hop: int  # 0 for the user's URL, n for the n-th redirect
    field: str  # the request field, first word of every message

    @classmethod
    def parse(cls, url: str, hop: int, rules: FetchRules) -> _Target:
        field = rules.field
        problem = url_problem(url)
        if problem is not None:
            subject = f"{field}: {redact_url(url)}" if hop == 0 else f"{_where(url, hop, field)}, which"
            raise rules.error(f"{subject} {problem} (allowed: an http:// or https:// URL)")
        parts = urlsplit(url)
        host = ascii_host(parts.hostname or "") or ""  # url_problem refused any other host
        return cls(url, parts, host, parts.port or DEFAULT_PORTS[parts.scheme], hop, field)

    @property
    def shown(self) -> str:
        return redact_url(self.url)

    @property
    def where(self) -> str:
        return _where(self.url, self.hop, self.field)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.parts.scheme] else f"{host}:{self.port}"

    def url_for(self, address: str) -> str:
        """The URL to send: built from the parsed parts, with the checked ``address`` as its host.

        Never an edit of the netloc string: whatever the user wrote before the host is not in it.
        """
        host = f"[{address}]" if ":" in address else address
        return urlunsplit((self.parts.scheme, f"{host}:{self.port}", self.parts.path or "/", self.parts.query, ""))


def _where(url: str, hop: int, field: str) -> str:
    """The start of a message about one hop: the field, and which redirect it was."""
    if hop == 0:
        return f"{field}: {redact_url(url)}"
    return f"{field}: redirect {hop} goes to {redact_url(url)}"


def _allowed_addresses(target: _Target, rules: FetchRules, resolve: Resolver) -> list[str]:
    """Resolve the host and refuse it if any address is not public (unless private ones are allowed)."""
    try:
        addresses = [str(a) for a in resolve(target.host, target.port)]
    except (OSError, UnicodeError) as exc:
        log.warning("%s: cannot resolve %s: %s", target.field, target.host, type(exc).__name__)
        raise rules.error(f"{target.where}: the host {target.host} cannot be resolved") from None
    if not addresses:
        raise rules.error(f"{target.where}: the host {target.host} resolves to no address")
    if rules.allow_private:
        return addresses
    for address in addresses:
        try:
            kind = address_problem(address)
        except ValueError:
            kind = "not an IP address"
        if kind is not None:
            log.warning("%s: refused %s: %s is %s", target.field, target.shown, address, kind)
            named = target.host if target.host == address else f"{target.host} resolves to {address}, which"
            raise rules.error(
                f"{target.where}: {named} is {kind} "
                "(allowed: hosts on the public internet; private addresses are allowed only "
                f"when the worker runs with {rules.private_setting}=true)"
            )
    return addresses


def _credentials_for(target: _Target, rules: FetchRules, same_host: bool) -> Mapping[str, str]:
    """The rules' credentials for this hop: over https only, and never carried to another host.

    The user's URL gets them when its host is one they are for, and so do redirects as long as
    every hop stayed on that host (``same_host``); once a redirect leaves it — to a CDN's signed
    URL, say — no later hop gets them, even one back on a host they are for.
    """
    if rules.credentials is None or target.parts.scheme != "https" or not same_host:
        return {}
    headers = rules.credentials(target.host)
    if headers:
        log.debug("%s: sending credentials to %s", target.field, target.host)
    return headers


@contextmanager
def _open(
    target: _Target,
    addresses: list[str],
    rules: FetchRules,
    credentials: Mapping[str, str],
    clock: FetchClock,
    ca_bundle: str | None,
) -> Iterator[requests.Response]:
    """GET the target (body not read yet) and close the response and its pool afterwards."""
    adapter = _PinnedAdapter(target.host, clock)
    try:
        response = _send_to_first_reachable(adapter, target, addresses, rules, credentials, clock, ca_bundle)
        try:
            yield response
        finally:
            response.close()
    finally:
        adapter.close()
        clock.release()


def _send_to_first_reachable(
    adapter: HTTPAdapter,
    target: _Target,
    addresses: list[str],
    rules: FetchRules,
    credentials: Mapping[str, str],
    clock: FetchClock,
    ca_bundle: str | None,
) -> requests.Response:
    """Try the checked addresses in the resolver's order, as urllib3 does for a host name."""
    failure: Exception | None = None
    headers = {"Host": target.host_header, "Accept": rules.accept, "User-Agent": rules.user_agent, **credentials}
    for address in addresses:
        request = requests.Request("GET", target.url_for(address), headers=headers).prepare()
        timeout = clock.timeout(rules.timeout)
        try:
            return adapter.send(
                request,
                stream=True,
                timeout=(timeout, timeout),
                verify=ca_bundle if ca_bundle is not None else True,
            )
        except requests.exceptions.SSLError as exc:
            failure = exc
            break  # the certificate belongs to the host, not the address: another one won't help
        except requests.exceptions.ConnectionError as exc:  # refused, unreachable, ConnectTimeout
            log.info("%s: %s via %s failed: %s", target.field, target.host, address, type(exc).__name__)
            failure = exc
            if clock.over:
                break
        except requests.exceptions.RequestException as exc:
            failure = exc
            break
    clock.check(target.where)  # the watchdog cut the connection: that, not the symptom, is the cause
    raise rules.error(f"{target.where}: {_describe_failure(failure, rules)}")


class _PinnedAdapter(HTTPAdapter):
    """An adapter that connects to an IP address but speaks TLS to ``hostname``, under ``clock``.

    The request URL carries the checked IP address (so no second DNS lookup happens); SNI and
    certificate verification use the real host name through urllib3's ``server_hostname`` and
    ``assert_hostname`` pool keys. Environment proxies and .netrc are never consulted: the
    adapter is used directly, without a Session. Every socket it opens is watched by ``clock``.
    """

    def __init__(self, hostname: str, clock: FetchClock):
        super().__init__(max_retries=0)
        self._hostname = hostname
        self._connections = {"http": _watched(HTTPConnection, clock), "https": _watched(HTTPSConnection, clock)}

    def get_connection_with_tls_context(
        self, request: requests.PreparedRequest, verify: Any, proxies: Any = None, cert: Any = None
    ) -> HTTPConnectionPool:
        pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
        pool.ConnectionCls = self._connections[pool.scheme]
        return pool

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params.get("scheme") == "https":
            pool_kwargs["server_hostname"] = self._hostname
            pool_kwargs["assert_hostname"] = self._hostname
        return host_params, pool_kwargs


def _watched(base: type[HTTPConnection], clock: FetchClock) -> type[HTTPConnection]:
    """``base`` whose every new socket ``clock`` can cut (before any TLS handshake on it)."""

    class Watched(base):  # type: ignore[valid-type, misc]
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            clock.watch(sock)
            return sock

    return Watched


def _describe_failure(exc: Exception | None, rules: FetchRules) -> str:
    """What went wrong on the wire, in words, without the exception text (it holds the full URL)."""
    timeout = f"{rules.timeout:g} s"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"timed out connecting after {timeout}"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"the server did not answer within {timeout}"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed (is the certificate valid for this host?)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "could not connect (connection refused, reset or unreachable)"
    return f"the request failed ({type(exc).__name__})"


def _redirect_location(target: _Target, response: requests.Response, rules: FetchRules) -> str:
    """The absolute URL of the next hop, relative to the URL the user knows (not the IP)."""
    location = response.headers.get("Location")
    if not location:
        raise rules.error(f"{target.where}: HTTP {response.status_code} redirect without a Location header")
    return urljoin(target.url, location)


def _check_status(target: _Target, response: requests.Response, rules: FetchRules) -> None:
    if not 200 <= response.status_code < 300:
        reason = f" {response.reason}" if response.reason else ""
        raise rules.error(
            f"{target.where}: the server answered HTTP {response.status_code}{reason} "
            f"(allowed: a URL that answers 2xx with {rules.content})"
        )


def _read_body(
    target: _Target, response: requests.Response, rules: FetchRules, clock: FetchClock, write: Writer, expect: Expect
) -> int:
    """Stream the body into ``write``, refused as soon as it is known to exceed the byte cap."""
    cap = rules.max_bytes
    declared = _content_length(response)
    if declared is not None and declared > cap:
        raise rules.error(f"{target.where}: the server announces {_bytes(declared)}, too large {_over_limit(cap)}")
    expect(declared)
    size = 0
    while True:
        chunk = _read_chunk(target, response, rules, clock, size, declared)
        clock.check(target.where, size, declared)  # an end of the body may be the watchdog's cut
        if not chunk:
            break
        size += len(chunk)
        if size > cap:
            raise rules.error(f"{target.where}: the body is larger than the limit {_over_limit(cap)}")
        write(chunk)
    if size == 0:
        raise rules.error(f"{target.where}: the server answered HTTP {response.status_code} with an empty body")
    return size


def _read_chunk(
    target: _Target, response: requests.Response, rules: FetchRules, clock: FetchClock, received: int, declared: int | None
) -> bytes:
    """The next decoded piece of the body (b"" at its end), as soon as any of it arrives.

    ``read1`` returns what the socket has instead of waiting for a full chunk, so a server that
    drips a byte at a time meets the checks between reads; the socket's timeout is lowered to what
    is left of the deadline (the watchdog cuts a read that waits past it anyway).
    """
    raw = response.raw
    _set_socket_timeout(raw, clock.timeout(rules.timeout))
    try:
        return raw.read1(_CHUNK_BYTES, decode_content=True)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        log.warning("%s: body of %s broke off: %s", target.field, target.shown, type(exc).__name__)
        clock.check(target.where, received, declared)
        if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
            detail = f"the server stopped sending for {rules.timeout:g} s"
        elif declared is not None and isinstance(exc, urllib3.exceptions.ProtocolError) and received < declared:
            detail = f"the connection closed after {received} of the {declared} bytes announced (an incomplete transfer)"
        else:
            detail = "the connection broke off or the body could not be decoded"
        raise rules.error(f"{target.where}: {detail}") from None


def _set_socket_timeout(raw: Any, seconds: float) -> None:
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _content_length(response: requests.Response) -> int | None:
    raw = response.headers.get("Content-Length", "")
    return int(raw) if raw.strip().isdigit() else None


def _over_limit(cap: int) -> str:
    return f"(allowed: at most {_bytes(cap)})"


def _bytes(size: int) -> str:
    """``26214400 bytes (25.0 MiB)``: exact for the client, readable for a person."""
    return f"{size} bytes ({size / 2**20:.1f} MiB)" if size >= 2**20 else f"{size} bytes"
