"""fetch_image against real HTTP(S) servers on 127.0.0.1, and its refusal of non-public hosts.

No test sends a packet anywhere but 127.0.0.1: an autouse fixture wraps ``socket.connect`` and
fails the test on any other destination. "Public" hosts are names the injected resolver maps to
public addresses, and the fixture's fake network routes those addresses to the local server, so
the redirect and pinning rules can be exercised without the internet.
"""

from __future__ import annotations

import datetime
import gzip
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from comfy_bootstrap.errors import ExecutionInterrupted, ExecutionTimeout
from tests.tls import make_tls as make_tls_for
from worker.download import MAX_REDIRECTS, FetchRules, address_problem, fetch, fetch_image, redact_url
from worker.errors import InvalidImage, InvalidInput
from worker.settings import Limits

PUBLIC_IP = "93.184.216.34"
OTHER_PUBLIC_IP = "93.184.216.35"
BODY = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
OPEN = Limits(allow_private_image_urls=True, image_url_timeout=2.0)
CLOSED = Limits(allow_private_image_urls=False, image_url_timeout=2.0)
PRIVATE_ALLOWED = "(allowed: hosts on the public internet; private addresses are allowed only when the worker runs with ALLOW_PRIVATE_IMAGE_URLS=true)"


# --- A fake network that only ever reaches 127.0.0.1 --------------------------------------------------


@dataclass
class Network:
    """Records every connect; routes chosen public addresses to a local port (None: refused)."""

    routes: dict[str, int | None] = field(default_factory=dict)
    connects: list[str] = field(default_factory=list)


@pytest.fixture(autouse=True)
def network(monkeypatch: pytest.MonkeyPatch) -> Network:
    net = Network()
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: tuple) -> None:  # type: ignore[type-arg]
        host, port = address[0], address[1]
        net.connects.append(host)
        if host in net.routes:
            routed = net.routes[host]
            if routed is None:
                raise ConnectionRefusedError(111, "refused by the test network")
            return real_connect(sock, ("127.0.0.1", routed))
        if host != "127.0.0.1":
            raise AssertionError(f"the code under test tried to connect to {host}:{port}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return net


def resolver(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    """A resolver that knows only ``table`` (and IP literals), so no test touches real DNS."""

    def resolve(host: str, port: int) -> list[str]:
        if host in table:
            return table[host]
        if host.replace(".", "").isdigit() or ":" in host:
            return [host]
        raise socket.gaierror(socket.EAI_NONAME, "unknown to the test resolver")

    return resolve


# --- A local HTTP server ---------------------------------------------------------------------------


Route = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """A threaded HTTP(S) server on 127.0.0.1 whose routes each test sets."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str | None, str | None]] = []  # (path, Host, Accept)
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append((self.path, self.headers.get("Host"), self.headers.get("Accept")))
                route = server.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.requests]

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.stop()


def body(data: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for name, value in (headers if headers is not None else {"Content-Length": str(len(data))}).items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)

    return route


def drip(data: bytes, every: float, stop: threading.Event) -> Route:
    """Send the headers, then ``data`` a byte at a time."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        for byte in data:
            if stop.wait(every):
                return
            h.wfile.write(bytes([byte]))
            h.wfile.flush()

    return route


def redirect(location: str, status: int = 302) -> Route:
    return body(b"", status, {"Location": location, "Content-Length": "0"})


def fetch_error(url: str, limits: Limits = OPEN, **kwargs: object) -> str:
    with pytest.raises(InvalidImage) as caught:
        fetch_image(url, limits, **kwargs)  # type: ignore[arg-type]
    return str(caught.value)


# --- Success ----------------------------------------------------------------------------------------


def test_fetches_the_body(server: Server) -> None:
    server.routes["/cat.png"] = body(BODY)
    assert fetch_image(server.url("/cat.png"), OPEN) == BODY
    assert "image/png" in (server.requests[0][2] or "")  # asks for formats the worker decodes


def test_connects_to_the_resolved_address_and_sends_the_real_host(server: Server, network: Network) -> None:
    server.routes["/cat.png"] = body(BODY)
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    assert fetch_image(server.url("/cat.png", host="images.test"), OPEN, resolve=resolve) == BODY
    assert calls == ["images.test"]  # resolved once: the checked address is the one used
    assert network.connects == ["127.0.0.1"]
    assert server.requests[0][1] == f"images.test:{server.port}"


def test_dns_is_not_asked_twice_so_rebinding_gets_nowhere(server: Server, network: Network) -> None:
    """A resolver that answers public first and private next: only the first answer is used."""
    server.routes["/cat.png"] = body(BODY)
    network.routes[PUBLIC_IP] = server.port
    answers = iter([[PUBLIC_IP], ["127.0.0.1"]])
    data = fetch_image(server.url("/cat.png", host="rebind.test"), CLOSED, resolve=lambda h, p: next(answers))
    assert data == BODY and network.connects == [PUBLIC_IP]


def test_environment_proxies_are_ignored(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.routes["/cat.png"] = body(BODY)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert fetch_image(server.url("/cat.png"), OPEN) == BODY


def test_tries_the_next_address_when_one_refuses(server: Server, network: Network) -> None:
    server.routes["/cat.png"] = body(BODY)
    network.routes.update({PUBLIC_IP: None, OTHER_PUBLIC_IP: server.port})
    resolve = resolver({"cdn.test": [PUBLIC_IP, OTHER_PUBLIC_IP]})
    assert fetch_image(server.url("/cat.png", host="cdn.test"), CLOSED, resolve=resolve) == BODY
    assert network.connects == [PUBLIC_IP, OTHER_PUBLIC_IP]


# --- Redirects -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_follows_redirects(server: Server, status: int) -> None:
    server.routes["/old"] = redirect(server.url("/cat.png"), status)
    server.routes["/cat.png"] = body(BODY)
    assert fetch_image(server.url("/old"), OPEN) == BODY


def test_relative_redirect_is_resolved_against_the_url_not_the_address(server: Server, network: Network) -> None:
    server.routes["/a/old"] = redirect("new.png")
    server.routes["/a/new.png"] = body(BODY)
    network.routes[PUBLIC_IP] = server.port
    resolve = resolver({"cdn.test": [PUBLIC_IP]})
    assert fetch_image(server.url("/a/old", host="cdn.test"), CLOSED, resolve=resolve) == BODY
    assert [host for _, host, _ in server.requests] == [f"cdn.test:{server.port}"] * 2


def test_at_most_five_redirects(server: Server) -> None:
    assert MAX_REDIRECTS == 5
    for hop in range(7):
        server.routes[f"/r{hop}"] = redirect(f"/r{hop + 1}")
    server.routes["/r5"] = body(BODY)
    assert fetch_image(server.url("/r0"), OPEN) == BODY  # five redirects: fine
    server.routes["/r6"] = body(BODY)
    server.routes["/r5"] = redirect("/r6")
    assert fetch_error(server.url("/r0?sig=SECRET")) == (
        f"image_url: more than 5 redirects starting at http://127.0.0.1:{server.port}/r0?… (allowed: at most 5)"
    )


def test_redirect_without_location(server: Server) -> None:
    server.routes["/bad"] = body(b"", 302, {"Content-Length": "0"})
    assert fetch_error(server.url("/bad")) == (
        f"image_url: http://127.0.0.1:{server.port}/bad: HTTP 302 redirect without a Location header"
    )


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/"])
def test_redirect_to_another_scheme_is_refused(server: Server, target: str) -> None:
    server.routes["/old"] = redirect(target)
    assert fetch_error(server.url("/old")) == (
        f"image_url: redirect 1 goes to {target}, which is not an http or https URL (allowed: an http:// or https:// URL)"
    )


def test_redirect_from_a_public_host_to_loopback_is_refused(server: Server, network: Network) -> None:
    server.routes["/old"] = redirect(server.url("/cat.png?sig=SECRET"))
    server.routes["/cat.png"] = body(BODY)
    network.routes[PUBLIC_IP] = server.port
    resolve = resolver({"cdn.test": [PUBLIC_IP]})
    message = fetch_error(server.url("/old", host="cdn.test"), CLOSED, resolve=resolve)
    assert message == (
        f"image_url: redirect 1 goes to http://127.0.0.1:{server.port}/cat.png?…: "
        f"127.0.0.1 is a loopback address {PRIVATE_ALLOWED}"
    )
    assert server.paths() == ["/old"] and network.connects == [PUBLIC_IP]


def test_redirect_to_a_name_resolving_to_a_private_address_is_refused(server: Server, network: Network) -> None:
    server.routes["/old"] = redirect("http://intranet.test/secret.png")
    network.routes[PUBLIC_IP] = server.port
    resolve = resolver({"cdn.test": [PUBLIC_IP], "intranet.test": ["10.0.0.7"]})
    assert fetch_error(server.url("/old", host="cdn.test"), CLOSED, resolve=resolve) == (
        "image_url: redirect 1 goes to http://intranet.test/secret.png: "
        f"intranet.test resolves to 10.0.0.7, which is a private address {PRIVATE_ALLOWED}"
    )


# --- Refused addresses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "address", "kind"),
    [
        ("http://127.0.0.1:8188/view", "127.0.0.1", "a loopback address"),
        ("http://10.1.2.3/a.png", "10.1.2.3", "a private address"),
        ("http://192.168.1.1/a.png", "192.168.1.1", "a private address"),
        ("http://172.16.0.1/a.png", "172.16.0.1", "a private address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254", "a link-local address"),
        ("http://0.0.0.0:8188/", "0.0.0.0", "an unspecified address"),
        ("http://224.0.0.1/", "224.0.0.1", "a multicast address"),
        ("http://240.0.0.1/", "240.0.0.1", "a private address"),
        ("http://100.64.0.1/", "100.64.0.1", "a non-public address"),
        ("http://[::1]:8188/", "::1", "a loopback address"),
        ("http://[::]/", "::", "an unspecified address"),
        ("http://[fe80::1]/", "fe80::1", "a link-local address"),
        ("http://[fc00::1]/", "fc00::1", "a private address"),
        ("http://[ff02::1]/", "ff02::1", "a multicast address"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1", "a loopback address"),
        ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254", "a link-local address"),
        ("http://[2002:a00:1::]/", "2002:a00:1::", "a private address (IPv4 10.0.0.1 inside IPv6)"),
        ("http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::a9fe:a9fe", "a link-local address (IPv4 169.254.169.254 inside IPv6)"),
    ],
)
def test_non_public_ip_literals_are_refused_without_connecting(
    url: str, address: str, kind: str, network: Network
) -> None:
    message = fetch_error(url, CLOSED, resolve=resolver({}))
    assert message == f"image_url: {redact_url(url)}: {address} is {kind} {PRIVATE_ALLOWED}"
    assert network.connects == []


def test_localhost_is_refused_through_the_system_resolver(network: Network) -> None:
    message = fetch_error("http://localhost:8188/view?filename=x", CLOSED)
    assert message.startswith("image_url: http://localhost:8188/view?…: localhost resolves to ")
    assert "which is a loopback address" in message and network.connects == []


def test_a_host_with_any_private_address_is_refused(network: Network) -> None:
    resolve = resolver({"mixed.test": [PUBLIC_IP, "10.0.0.1"]})
    assert fetch_error("https://mixed.test/a.png", CLOSED, resolve=resolve) == (
        f"image_url: https://mixed.test/a.png: mixed.test resolves to 10.0.0.1, which is a private address {PRIVATE_ALLOWED}"
    )
    assert network.connects == []


def test_public_addresses_pass_the_check() -> None:
    for address in (PUBLIC_IP, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"):
        assert address_problem(address) is None, address


def test_allow_private_lets_loopback_through(server: Server) -> None:
    server.routes["/cat.png"] = body(BODY)
    assert fetch_error(server.url("/cat.png"), CLOSED).endswith(f"127.0.0.1 is a loopback address {PRIVATE_ALLOWED}")
    assert fetch_image(server.url("/cat.png"), OPEN) == BODY


def test_unresolvable_host() -> None:
    assert fetch_error("https://nowhere.test/a.png?sig=SECRET", CLOSED, resolve=resolver({})) == (
        "image_url: https://nowhere.test/a.png?…: the host nowhere.test cannot be resolved"
    )


def test_url_form_is_checked_before_anything_else(network: Network) -> None:
    assert fetch_error("file:///etc/passwd") == (
        "image_url: file:///etc/passwd is not an http or https URL (allowed: an http:// or https:// URL)"
    )
    assert network.connects == []


# --- HTTP failures ------------------------------------------------------------------------------------------


def test_non_2xx_names_the_status(server: Server) -> None:
    server.routes["/gone"] = body(b"nope", 410)
    assert fetch_error(server.url("/gone")) == (
        f"image_url: http://127.0.0.1:{server.port}/gone: the server answered HTTP 410 Gone "
        "(allowed: a URL that answers 2xx with the image)"
    )
    assert "HTTP 404 Not Found" in fetch_error(server.url("/missing"))


def test_too_large_content_length_is_refused_before_the_body(server: Server) -> None:
    server.routes["/huge"] = body(b"x" * 10, headers={"Content-Length": "5000"})
    assert fetch_error(server.url("/huge"), Limits(allow_private_image_urls=True, max_image_bytes=1000)) == (
        f"image_url: http://127.0.0.1:{server.port}/huge: the server announces 5000 bytes, too large "
        "(allowed: at most 1000 bytes)"
    )


def test_body_without_length_is_cut_at_the_limit(server: Server) -> None:
    server.routes["/stream"] = body(b"x" * 200_000, headers={})  # no Content-Length: read until close
    limits = Limits(allow_private_image_urls=True, max_image_bytes=100_000)
    assert fetch_error(server.url("/stream"), limits) == (
        f"image_url: http://127.0.0.1:{server.port}/stream: the body is larger than the limit "
        "(allowed: at most 100000 bytes)"
    )
    server.routes["/ok"] = body(b"x" * 100_000, headers={})
    assert len(fetch_image(server.url("/ok"), limits)) == 100_000


def test_a_compressed_body_is_limited_after_decompression(server: Server) -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)
    server.routes["/bomb"] = body(bomb, headers={"Content-Encoding": "gzip", "Content-Length": str(len(bomb))})
    message = fetch_error(server.url("/bomb"), Limits(allow_private_image_urls=True, max_image_bytes=2**20))
    assert message.endswith("the body is larger than the limit (allowed: at most 1048576 bytes (1.0 MiB))")



def test_the_decompression_bound_runs_on_the_urllib3_that_requirements_pin() -> None:
    """The bound above reads through urllib3 2.x's ``read1(decode_content=True)``: requirements.txt
    pins a 2.x, and that is the urllib3 the tests ran with."""
    import urllib3

    pins = dict(line.split("==", 1) for line in (Path(__file__).parents[1] / "requirements.txt").read_text().splitlines() if "==" in line)
    assert pins["urllib3"].split(".")[0] == "2" and urllib3.__version__ == pins["urllib3"]


def test_empty_body(server: Server) -> None:
    server.routes["/empty"] = body(b"")
    assert fetch_error(server.url("/empty")) == (
        f"image_url: http://127.0.0.1:{server.port}/empty: the server answered HTTP 200 with an empty body"
    )


def test_slow_server_times_out(server: Server) -> None:
    def slow(h: BaseHTTPRequestHandler) -> None:
        server.release.wait(5)

    server.routes["/slow"] = slow
    started = time.monotonic()
    message = fetch_error(server.url("/slow"), Limits(allow_private_image_urls=True, image_url_timeout=0.3))
    assert message == f"image_url: http://127.0.0.1:{server.port}/slow: the server did not answer within 0.3 s"
    assert time.monotonic() - started < 3


def test_body_that_stalls_times_out(server: Server) -> None:
    def stall(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b"x" * 10)
        h.wfile.flush()
        server.release.wait(5)

    server.routes["/stall"] = stall
    message = fetch_error(server.url("/stall"), Limits(allow_private_image_urls=True, image_url_timeout=0.3))
    assert message == f"image_url: http://127.0.0.1:{server.port}/stall: the server stopped sending for 0.3 s"


def test_connection_refused() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert fetch_error(f"http://127.0.0.1:{port}/a.png") == (
        f"image_url: http://127.0.0.1:{port}/a.png: could not connect (connection refused, reset or unreachable)"
    )


# --- Secrets stay out of messages and logs ---------------------------------------------------------------


def test_query_and_credentials_never_reach_messages_or_logs(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.routes["/old"] = redirect(server.url("/missing?X-Amz-Signature=SECRET2"))
    refused = fetch_error(f"http://user:SECRET0@127.0.0.1:{server.port}/old?X-Amz-Signature=SECRET1")
    assert refused == (
        f"image_url: http://…@127.0.0.1:{server.port}/old?… has user info (user@ or user:password@) before the host "
        "(allowed: an http:// or https:// URL)"
    )
    message = fetch_error(f"http://127.0.0.1:{server.port}/old?X-Amz-Signature=SECRET1")
    assert message == (
        f"image_url: redirect 1 goes to http://127.0.0.1:{server.port}/missing?…: the server answered "
        "HTTP 404 Not Found (allowed: a URL that answers 2xx with the image)"
    )
    worker_logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("worker"))
    assert worker_logs and "SECRET" not in worker_logs + message + refused
    assert server.requests[0][0] == "/old?X-Amz-Signature=SECRET1"  # the query itself is still sent


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@h.example/a.png?sig=1#frag", "https://…@h.example/a.png?…"),
        ("http://127.0.0.1:8188\\@h.example/a\r\nb.png", "http://…@h.example/a\\r\\nb.png"),
        ("https://h.example/a.png#frag", "https://h.example/a.png"),
        ("not a url?x=1", "not a url?…"),
        ("https://h.example/" + "a" * 300, "https://h.example/" + "a" * 181 + "…"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# --- HTTPS ----------------------------------------------------------------------------------------------


def make_tls(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, str]:
    """A throwaway CA and a certificate for ``name`` signed by it; returns (server context, CA file)."""
    pytest.importorskip("cryptography")  # a dependency of runpod
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
        )
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate("test CA", ca_key, "test CA", ca_key, ca=True)
    leaf_cert = certificate(name, leaf_key, "test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    cert_file.write_bytes(leaf_cert.public_bytes(pem))
    key_file.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, str(ca_file)


def test_https_verifies_the_certificate_against_the_host_name(tmp_path: Path) -> None:
    context, ca_file = make_tls(tmp_path, "images.test")
    tls_server = Server(tls=context)
    try:
        tls_server.routes["/cat.png"] = body(BODY)
        resolve = resolver({"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        url = tls_server.url("/cat.png", host="images.test", scheme="https")
        assert fetch_image(url, OPEN, resolve=resolve, ca_bundle=ca_file) == BODY
        wrong_name = tls_server.url("/cat.png", host="other.test", scheme="https")
        assert fetch_error(wrong_name, resolve=resolve, ca_bundle=ca_file) == (
            f"image_url: {wrong_name}: the TLS handshake failed (is the certificate valid for this host?)"
        )
        assert fetch_error(url, resolve=resolve).endswith("the TLS handshake failed (is the certificate valid for this host?)")
    finally:
        tls_server.stop()


# --- URLs whose host two parsers read differently ---------------------------------------------------


def test_backslash_userinfo_cannot_reach_loopback(server: Server, network: Network) -> None:
    """``http://127.0.0.1:P\\@<public>/x.png`` is checked as the public host by ``urlsplit``; urllib3
    would read 127.0.0.1:P from it. The URL is refused before anything is sent."""
    server.routes["/x.png"] = body(BODY)
    network.routes[PUBLIC_IP] = None
    url = f"http://127.0.0.1:{server.port}\\@{PUBLIC_IP}/x.png"
    message = fetch_error(url, CLOSED, resolve=resolver({}))
    assert message.startswith("image_url: ") and "backslash" in message
    assert server.requests == [] and network.connects == []


@pytest.mark.parametrize(
    "url",
    [
        "http://user@cdn.test/a.png",
        "http://user:pass@cdn.test/a.png",
        "http://127.0.0.1:8188\\@cdn.test/a.png",
        "http:\\\\cdn.test/a.png",
        "http://cdn.test\\a.png",
        "http://cdn.test/a\\b.png",
        "http://cdn.test/a b.png",
        "http://cdn.test/a\tb.png",
        "http://cdn.test/a.png\r\nX-Injected: 1",
        "http://cdn.test/a\x00.png",
        "http://cdn.test/a\x7f.png",
        "http://cdn.test/a\u00a0.png",
        "http://[fe80::1%25eth0]/a.png",
        "http://evil%40127.0.0.1/a.png",
        "http:/cdn.test/a.png",
    ],
)
def test_urls_with_userinfo_backslash_whitespace_or_odd_hosts_are_refused(url: str, network: Network) -> None:
    message = fetch_error(url, CLOSED, resolve=resolver({"cdn.test": [PUBLIC_IP]}))
    assert message.startswith("image_url: ") and "(allowed: an http:// or https:// URL" in message
    assert network.connects == []
    assert ":pass@" not in message and "\n" not in message and "\t" not in message


@pytest.mark.parametrize(
    ("url", "host", "port", "target"),
    [
        ("http://cdn.test/a@b.png", "cdn.test", 80, "/a@b.png"),
        ("http://cdn.test/?next=@127.0.0.1", "cdn.test", 80, "/?next=@127.0.0.1"),
        ("http://cdn.test?x@127.0.0.1:8188", "cdn.test", 80, "/?x@127.0.0.1:8188"),
        ("http://cdn.test#@127.0.0.1/x", "cdn.test", 80, "/"),
        ("http://cdn.test/%40127.0.0.1/x", "cdn.test", 80, "/%40127.0.0.1/x"),
        ("http://cdn.test/%5C@127.0.0.1/x", "cdn.test", 80, "/%5C@127.0.0.1/x"),
        ("HTTP://CDN.Test:8080/A.png", "cdn.test", 8080, "/A.png"),
        ("http://cdn.test./a.png", "cdn.test.", 80, "/a.png"),
        ("https://bücher.test/a.png", "xn--bcher-kva.test", 443, "/a.png"),
        ("http://[2606:4700:4700::1111]:81/a.png", "2606:4700:4700::1111", 81, "/a.png"),
    ],
)
def test_the_request_goes_to_the_checked_address_and_nowhere_else(url: str, host: str, port: int, target: str) -> None:
    """The URL handed to urllib3 is built from parsed parts: the host it connects to is the address
    that was checked, for every tricky form (what urllib3 and requests parse from it)."""
    import urllib3.util
    from requests import Request

    from worker.download import FetchRules, _Target

    parsed = _Target.parse(url, 0, FetchRules.for_media(CLOSED))
    assert (parsed.host, parsed.port) == (host, port)
    for address in (PUBLIC_IP, "2606:4700:4700::1111"):
        built = parsed.url_for(address)
        seen = urllib3.util.parse_url(Request("GET", built).prepare().url)
        assert (seen.host.strip("[]"), seen.port) == (address, port), built
        assert seen.auth is None and seen.request_uri == target


def test_each_redirect_hop_goes_through_the_same_checks(server: Server, network: Network) -> None:
    network.routes[PUBLIC_IP] = server.port
    resolve = resolver({"cdn.test": [PUBLIC_IP]})
    for location in (f"http://127.0.0.1:{server.port}\\@cdn.test/x.png", "http://u:p@cdn.test/x.png", "http:\\\\cdn.test/x"):
        server.requests.clear()
        network.connects.clear()
        server.routes["/old"] = redirect(location)
        server.routes["/x.png"] = body(BODY)
        message = fetch_error(server.url("/old", host="cdn.test"), CLOSED, resolve=resolve)
        assert message.startswith("image_url: redirect 1 goes to "), message
        assert server.paths() == ["/old"] and network.connects == [PUBLIC_IP]


# --- Time: one deadline per fetch, the job's deadline, the job's stop flag ---------------------------------


class DripProxy:
    """A TCP proxy on 127.0.0.1 that passes the client's bytes on at once and sends the server's back
    one byte every ``every`` seconds: the TLS handshake, the status line, the headers and the body alike."""

    def __init__(self, upstream_port: int, every: float) -> None:
        self.upstream_port, self.every = upstream_port, every
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.every), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, every: float) -> None:
        try:
            while data := source.recv(4096):
                for piece in ([data] if not every else [data[i : i + 1] for i in range(len(data))]):
                    if every and self.stop.wait(every):
                        return
                    target.sendall(piece)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                sock.close()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.fixture
def dripping(server: Server) -> Iterator[DripProxy]:
    """``server`` behind a proxy that drips its answers: 10 bytes a second."""
    proxy = DripProxy(server.port, 0.1)
    yield proxy
    proxy.close()


def lora_rules(deadline: float = 1.0) -> FetchRules:
    """The LoRA fetch's rules (worker/lora_files.py) with a short deadline and a long per-read timeout."""
    return FetchRules(field="loras[0].url", max_bytes=2**20, timeout=5.0, deadline=deadline, allow_private=True,
                      error=InvalidInput, deadline_setting="LORA_URL_DEADLINE")  # fmt: skip


def fetch_failure(url: str, rules: FetchRules, error: type[Exception] = InvalidInput, **kwargs: object) -> tuple[str, float]:
    """The message a fetch fails with and the seconds it took."""
    started = time.monotonic()
    with pytest.raises(error) as caught:
        fetch(url, rules, lambda chunk: None, **kwargs)  # type: ignore[arg-type]
    return str(caught.value), time.monotonic() - started


def test_an_image_dripped_a_byte_at_a_time_ends_at_IMAGE_URL_DEADLINE(server: Server) -> None:
    # Each byte comes within the 1 s per-read timeout: 68 bytes once took 8 s, without a deadline.
    server.routes["/drip.png"] = drip(BODY[:68], 0.12, server.release)
    limits = Limits(allow_private_image_urls=True, image_url_timeout=1.0, image_url_deadline=1.0)
    started = time.monotonic()
    message = fetch_error(server.url("/drip.png"), limits)
    assert time.monotonic() - started < 1.8
    assert message.startswith(
        f"image_url: http://127.0.0.1:{server.port}/drip.png: the download did not finish within the 1 s of "
        "IMAGE_URL_DEADLINE ("
    ) and message.endswith(" of 68 bytes received)")
    assert Limits().image_url_deadline == 30.0


def test_headers_dripped_a_byte_at_a_time_end_at_the_deadline(server: Server, dripping: DripProxy) -> None:
    # Each byte of the status line and headers comes within the 5 s per-read timeout: once 23 s for a 2 s deadline.
    server.routes["/lora.safetensors"] = body(b"x" * 100)
    url = f"http://127.0.0.1:{dripping.port}/lora.safetensors"
    message, seconds = fetch_failure(url, lora_rules(deadline=1.0))
    assert message == f"loras[0].url: {url}: the download did not finish within the 1 s of LORA_URL_DEADLINE"
    assert seconds < 1.8


def test_a_dripped_tls_handshake_ends_at_the_deadline(tmp_path: Path) -> None:
    context, ca_file = make_tls_for(tmp_path, "loras.test")
    tls_server = Server(tls=context)
    proxy = DripProxy(tls_server.port, 0.1)
    try:
        tls_server.routes["/lora.safetensors"] = body(b"x" * 100)
        url = f"https://loras.test:{proxy.port}/lora.safetensors"
        message, seconds = fetch_failure(url, lora_rules(), resolve=resolver({"loras.test": ["127.0.0.1"]}), ca_bundle=ca_file)
        assert message == f"loras[0].url: {url}: the download did not finish within the 1 s of LORA_URL_DEADLINE"
        assert seconds < 1.8
    finally:
        proxy.close()
        tls_server.stop()


def test_the_jobs_deadline_ends_a_fetch_first_and_names_JOB_TIMEOUT(server: Server, dripping: DripProxy) -> None:
    server.routes["/lora.safetensors"] = body(b"x" * 100)
    url = f"http://127.0.0.1:{dripping.port}/lora.safetensors"
    message, seconds = fetch_failure(url, lora_rules(deadline=30.0), ExecutionTimeout, job_deadline=time.monotonic() + 0.6)
    assert message.startswith(f"loras[0].url: {url}: the job's time budget (JOB_TIMEOUT) ran out during the download")
    assert seconds < 1.4


def test_a_body_dripping_past_the_jobs_deadline_says_how_far_it_got(server: Server) -> None:
    server.routes["/drip.png"] = drip(BODY[:68], 0.1, server.release)
    limits = Limits(allow_private_image_urls=True, image_url_timeout=1.0, image_url_deadline=30.0)
    started = time.monotonic()
    with pytest.raises(ExecutionTimeout) as caught:
        fetch_image(server.url("/drip.png"), limits, job_deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 1.3
    assert str(caught.value).startswith(f"image_url: http://127.0.0.1:{server.port}/drip.png: the job's time budget")
    assert str(caught.value).endswith(" of 68 bytes received)") and caught.value.code == "timeout"


def test_nothing_is_sent_once_the_jobs_deadline_has_passed(server: Server) -> None:
    server.routes["/a.png"] = body(BODY)
    message, _ = fetch_failure(server.url("/a.png"), lora_rules(), ExecutionTimeout, job_deadline=time.monotonic() - 1)
    assert "the job's time budget (JOB_TIMEOUT) ran out" in message and server.requests == []


@pytest.mark.parametrize("where", ["headers", "body"])
def test_the_stop_flag_cancels_a_fetch_at_once(server: Server, dripping: DripProxy, where: str) -> None:
    server.routes["/drip.png"] = drip(BODY[:68], 0.1, server.release)
    url = f"http://127.0.0.1:{dripping.port}/drip.png" if where == "headers" else server.url("/drip.png")
    stop = threading.Event()
    threading.Timer(0.4, stop.set).start()
    message, seconds = fetch_failure(url, lora_rules(deadline=30.0), ExecutionInterrupted, stop=stop)
    assert message.startswith(f"loras[0].url: {url}: the job was cancelled during the download")
    assert seconds < 1.0


def test_a_fast_fetch_with_a_job_deadline_and_a_stop_flag_just_works(server: Server) -> None:
    server.routes["/a.png"] = body(BODY)
    assert fetch_image(server.url("/a.png"), OPEN, job_deadline=time.monotonic() + 30, stop=threading.Event()) == BODY
