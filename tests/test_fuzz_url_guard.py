"""Property-based tests of the URL guard (worker/url_guard.py, worker/download.py's ``_Target``).

Any URL at all is either refused with one clear line, or parsed so that the host urllib3 connects
to is the address that was checked: the request is built from the parsed parts, and urllib3 (and
requests before it) read the same host and port back from it. Where urllib3 can parse the URL the
job gave, it finds the same host the guard checks, so no form of URL is read one way by the guard
and another by the library (the backslash hole: ``http://127.0.0.1:P\\@public/``).
"""

from __future__ import annotations

import urllib3.util
from hypothesis import event, example, given
from hypothesis import strategies as st
from requests import Request

from worker.download import FetchRules, _Target
from worker.errors import InvalidImage
from worker.settings import Limits
from worker.url_guard import url_problem

RULES = FetchRules.for_media(Limits())
ADDRESSES = ("93.184.216.34", "2606:4700:4700::1111")

#: Pieces a URL is made of, and the characters parsers disagree about.
TRICKY = ["\\", "@", ":", "/", "?", "#", "%", "[", "]", " ", "\t", "\n", "\x00", "\x7f", "\u3002", "\uff0e", "%40", "%2f", ".."]
schemes = st.one_of(st.sampled_from(["http", "https"]), st.sampled_from(["HTTP", "hTTps", "ftp", "file", "javascript", "", "http:/"]))
hosts = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,3}", fullmatch=True),
    st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip)),
    st.sampled_from(["127.0.0.1", "169.254.169.254", "[::1]", "[::ffff:10.0.0.1]", "localhost", "example.com",
                     "EXAMPLE.com.", "xn--bcher-kva.example", "bücher.example", "0x7f.1", "2130706433", "[fe80::1%25eth0]",
                     "images.example.test", "a..b", "-a.example", "_x.example", ""]),
)  # fmt: skip
userinfo = st.one_of(st.just(""), st.sampled_from(["user@", "u:p@", "@", ":@", "a\\@", "%40@"]))
ports = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"), st.sampled_from([":", ":0", ":70000", ":80a", ": 80", ":-1"]))
paths = st.one_of(st.from_regex(r"[A-Za-z0-9._~/-]{0,20}(\?[A-Za-z0-9=&%-]{0,20})?", fullmatch=True),
                  st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=4)), max_size=6).map("".join))  # fmt: skip


@st.composite
def urls(draw: st.DrawFn) -> str:
    """A URL built from parts, each plain or odd, sometimes with odd pieces put anywhere."""
    url = f"{draw(schemes)}://{draw(userinfo)}{draw(hosts)}{draw(ports)}/{draw(paths)}"
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        at = draw(st.integers(0, len(url)))
        url = url[:at] + draw(st.sampled_from(TRICKY)) + url[at:]
    return url


def _agreed_host(host: str | None) -> str:
    return (host or "").strip("[]").lower().rstrip(".")


def _check(url: str) -> None:
    problem = url_problem(url)
    event("refused" if problem else "accepted")
    if problem is not None:
        assert isinstance(problem, str) and problem and "\n" not in problem
        try:
            _Target.parse(url, 0, RULES)
        except InvalidImage as refused:
            assert "\n" not in str(refused) and str(refused).startswith("image_url: ")
        else:
            raise AssertionError(f"url_problem refused {url!r} but _Target.parse did not")
        return
    target = _Target.parse(url, 0, RULES)
    for address in ADDRESSES:
        built = target.url_for(address)
        sent = urllib3.util.parse_url(Request("GET", built).prepare().url)
        assert (sent.host or "").strip("[]") == address and sent.port == target.port and sent.auth is None, (url, built)
    try:
        theirs = urllib3.util.parse_url(url)
    except urllib3.exceptions.LocationParseError:
        return  # urllib3 would not connect anywhere with it
    if theirs.host is not None and theirs.host.isascii():
        assert _agreed_host(theirs.host) == _agreed_host(target.host), (url, theirs.host, target.host)


@given(urls())
@example("http://127.0.0.1:8188\\@1.1.1.1/x.png")
@example("http://1.1.1.1 @127.0.0.1/")
@example("http://[::ffff:127.0.0.1]/")
def test_a_built_url_is_refused_in_one_line_or_reaches_exactly_the_checked_address(url: str) -> None:
    _check(url)


@given(st.text(max_size=200))
def test_any_text_at_all_is_refused_in_one_line_or_reaches_exactly_the_checked_address(url: str) -> None:
    _check(url)
