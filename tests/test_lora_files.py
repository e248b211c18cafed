"""LoraCache against local HTTP(S) servers: the guarded download, the LoRA check, the cache.

The network is test_download's: an autouse fixture fails any connect that is not to 127.0.0.1,
and public-looking names resolve (through an injected resolver) to public addresses that the
fixture routes to a local server. Every test ends by checking that no partial file is left.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

import worker.lora_disk as lora_disk
from comfy_bootstrap.errors import ExecutionInterrupted, ExecutionTimeout
from tests import test_download
from tests.test_download import OTHER_PUBLIC_IP, PUBLIC_IP, DripProxy, Network, Route, Server, body, drip, redirect, resolver
from tests.test_lora_format import LORA, MODEL, lora
from tests.test_safetensors import safetensors_file
from tests.tls import make_tls
from worker.errors import InvalidInput, StorageFull
from worker.lora_files import LoraCache, token_hosts_match
from worker.settings import ConfigError, LoraSettings, Settings

#: test_download's fixtures: the network guard (autouse) and a local HTTP server per test.
network = test_download.network
server = test_download.server

HF_TOKEN = "hf_testtoken0123456789abcdef"
CIVITAI_TOKEN = "civitai0123456789secret"
ALLOWED = "(allowed: a LoRA in .safetensors format, its tensors named with lora_down/lora_up, lora_A/lora_B or diff/diff_b)"


def sha_name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() + ".safetensors"


# --- The cache under test -------------------------------------------------------------------------------


def settings(**overrides: object) -> LoraSettings:
    base: dict[str, object] = {"allow_private_urls": True, "url_timeout": 2.0, "url_deadline": 10.0, "cache_bytes": 10 * 2**20}
    return LoraSettings(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "runpod-volume"
    path.mkdir()
    return path


@pytest.fixture
def make_cache(tmp_path: Path, volume: Path) -> Iterator[Callable[..., LoraCache]]:
    """``make_cache(**LoraSettings fields, resolve=…, ca_bundle=…)``; checks no partial file is left after the test."""
    made: list[LoraCache] = []

    def make(*, resolve: object = None, ca_bundle: str | None = None, recent_use: float = 0.0, **overrides: object) -> LoraCache:
        cache = LoraCache(
            settings(**overrides),
            volume_path=volume,
            worker_dir=tmp_path / "worker",
            recent_use=recent_use,
            resolve=resolve or resolver({}),  # type: ignore[arg-type]
            ca_bundle=ca_bundle,
        )
        made.append(cache)
        return cache

    yield make
    for cache in made:
        assert partial_files(cache) == []


def partial_files(cache: LoraCache) -> list[str]:
    folder = cache.folder
    return sorted(p.name for p in [*folder.iterdir(), *(folder / "index").iterdir()] if p.name.endswith(".part"))


def cached_names(cache: LoraCache) -> list[str]:
    return sorted(p.name for p in cache.folder.glob("*.safetensors"))


def error(cache: LoraCache, url: str, field: str = "loras[0].url") -> str:
    with pytest.raises(InvalidInput) as caught:
        cache.fetch(url, field)
    assert caught.value.code == "invalid_input"
    return str(caught.value)


# --- Routes -----------------------------------------------------------------------------------------------


def cut(data: bytes, announced: int) -> Route:
    """Announce ``announced`` bytes, send ``data`` (fewer), close the connection."""
    return body(data, headers={"Content-Length": str(announced)})


Seen = list[tuple[str, str, str | None]]  # (Host, path, Authorization)


def seen_by(route: Route, seen: Seen) -> Route:
    def record(h: BaseHTTPRequestHandler) -> None:
        seen.append((h.headers.get("Host", ""), h.path, h.headers.get("Authorization")))
        route(h)

    return record


# --- A good LoRA ------------------------------------------------------------------------------------------


def test_a_lora_is_downloaded_and_named_by_its_hash(server: Server, make_cache: Callable[..., LoraCache], volume: Path) -> None:
    server.routes["/style.safetensors"] = body(LORA)
    cache = make_cache()
    name = cache.fetch(server.url("/style.safetensors?download=true"), "loras[0].url")
    assert name == sha_name(LORA)
    assert cache.folder == volume / "lora-cache"
    assert (cache.folder / name).read_bytes() == LORA and cache.path(name) == cache.folder / name
    assert cached_names(cache) == [name]


def test_a_url_already_cached_is_not_requested_again(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/style.safetensors"] = body(LORA)
    url = server.url("/style.safetensors")
    cache = make_cache()
    first = cache.fetch(url, "loras[0].url")
    assert cache.fetch(url, "loras[1].url") == first
    assert make_cache().fetch(url, "loras[0].url") == first  # a new process finds the index on disk
    assert server.paths() == ["/style.safetensors"]


def test_the_same_bytes_from_two_urls_are_one_file(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/a.safetensors"] = body(LORA)
    server.routes["/b.safetensors"] = body(LORA)
    cache = make_cache()
    assert cache.fetch(server.url("/a.safetensors"), "f") == cache.fetch(server.url("/b.safetensors"), "f")
    assert len(cached_names(cache)) == 1


@pytest.mark.parametrize(
    "names",
    [
        ("blocks.0.attn.q.lora_A.weight", "blocks.0.attn.q.lora_B.weight"),  # PEFT / diffusers
        ("lora_unet_blocks_0_cross_attn_k.lora_down.weight", "lora_unet_blocks_0_cross_attn_k.lora_up.weight", "lora_unet_blocks_0_cross_attn_k.alpha"),
        ("diffusion_model.blocks.0.ffn.0.diff", "diffusion_model.blocks.0.ffn.0.diff_b"),  # whole-weight differences
    ],
)
def test_lora_naming_schemes_are_accepted(names: tuple[str, ...], server: Server, make_cache: Callable[..., LoraCache]) -> None:
    data = safetensors_file({name: (4, 4) for name in names})
    server.routes["/x.safetensors"] = body(data)
    assert make_cache().fetch(server.url("/x.safetensors"), "f") == sha_name(data)


# --- Limits -------------------------------------------------------------------------------------------------


def test_content_length_over_the_cap_is_refused_before_the_body(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/big.safetensors"] = body(LORA, headers={"Content-Length": str(3 * 2**30)})
    message = error(make_cache(max_bytes=2**30), server.url("/big.safetensors?token=abc"))
    assert message == (
        f"loras[0].url: http://127.0.0.1:{server.port}/big.safetensors?…: the server announces "
        "3221225472 bytes (3072.0 MiB), too large (allowed: at most 1073741824 bytes (1024.0 MiB))"
    )


def test_a_streamed_body_over_the_cap_is_cut(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    big = lora(rank=64, width=512)  # about 128 KiB
    server.routes["/stream.safetensors"] = body(big, headers={})  # no Content-Length: read until close
    message = error(make_cache(max_bytes=100_000), server.url("/stream.safetensors"))
    assert message == (
        f"loras[0].url: http://127.0.0.1:{server.port}/stream.safetensors: the body is larger than the limit "
        "(allowed: at most 100000 bytes)"
    )


def test_a_slow_drip_fails_at_the_overall_deadline(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/drip.safetensors"] = drip(LORA, 0.2, server.release)
    started = time.monotonic()
    message = error(make_cache(url_timeout=5.0, url_deadline=1.0), server.url("/drip.safetensors"))
    elapsed = time.monotonic() - started
    prefix = f"loras[0].url: http://127.0.0.1:{server.port}/drip.safetensors: the download did not finish within the 1 s of LORA_URL_DEADLINE ("
    assert message.startswith(prefix) and message.endswith(f" of {len(LORA)} bytes received)"), message
    assert 0.9 < elapsed < 2.0  # each byte came within the 5 s per-read timeout; the deadline cut it


def test_a_server_that_never_answers_fails_at_the_deadline_too(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/hang.safetensors"] = lambda h: server.release.wait(5)
    started = time.monotonic()
    message = error(make_cache(url_timeout=5.0, url_deadline=1.0), server.url("/hang.safetensors"))
    assert message.endswith("hang.safetensors: the download did not finish within the 1 s of LORA_URL_DEADLINE")
    assert time.monotonic() - started < 2.0


def test_a_truncated_transfer_is_refused(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/cut.safetensors"] = cut(LORA[:1000], announced=len(LORA))
    assert error(make_cache(), server.url("/cut.safetensors")) == (
        f"loras[0].url: http://127.0.0.1:{server.port}/cut.safetensors: the connection closed after 1000 of the "
        f"{len(LORA)} bytes announced (an incomplete transfer)"
    )


def test_a_file_shorter_than_its_header_says_is_refused(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/short.safetensors"] = body(LORA[:1000])  # an honest server serving a cut file
    assert error(make_cache(), server.url("/short.safetensors")) == (
        f"loras[0].url: http://127.0.0.1:{server.port}/short.safetensors: a truncated safetensors file: "
        f"1000 bytes, its header declares {len(LORA)} {ALLOWED}"
    )


# --- Not a LoRA ---------------------------------------------------------------------------------------------


def test_an_html_page_is_refused(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/page"] = body(b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>...</body></html>" * 4)
    assert error(make_cache(), server.url("/page")) == (
        f"loras[0].url: http://127.0.0.1:{server.port}/page: an HTML page, not a safetensors file: it starts with "
        f"'<!DOCTYPE html><html><head><title>Sign in</title></head><bo…' (a web page, login or error page instead of "
        f"the file?) {ALLOWED}"
    )


def test_a_hub_blob_page_gets_the_resolve_hint(server: Server, network: Network, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/user/repo/blob/main/style.safetensors"] = body(b"<!doctype html>\n<html lang=en>" + b" " * 200)
    network.routes[PUBLIC_IP] = server.port
    cache = make_cache(allow_private_urls=False, resolve=resolver({"huggingface.co": [PUBLIC_IP]}))
    message = error(cache, "http://huggingface.co/user/repo/blob/main/style.safetensors")
    assert "an HTML page" in message and "; on Hugging Face, link the file with /resolve/ instead of /blob/" in message


def test_a_full_model_is_refused_at_its_header(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/model.safetensors"] = body(MODEL)
    assert error(make_cache(), server.url("/model.safetensors")) == (
        f"loras[0].url: http://127.0.0.1:{server.port}/model.safetensors: a safetensors file of 2 tensors and none "
        f"named like a LoRA's (e.g. 'blocks.0.self_attn.q.weight'): a model checkpoint, not a LoRA {ALLOWED}"
    )


def test_a_big_model_is_refused_without_downloading_it(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    sent = threading.Event()
    big = safetensors_file({"blocks.0.weight": (1024, 1024)})  # 2 MiB of data after a short header

    def slow_model(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(big)))
        h.end_headers()
        h.wfile.write(big[:4096])
        h.wfile.flush()
        sent.set()
        server.release.wait(5)  # the rest would take long: the header must be enough

    server.routes["/big-model.safetensors"] = slow_model
    started = time.monotonic()
    assert "a model checkpoint, not a LoRA" in error(make_cache(), server.url("/big-model.safetensors"))
    assert sent.is_set() and time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"\x80\x02}q\x00(X\x05\x00\x00\x00state" + b"\x00" * 64, "a Python pickle, not a safetensors file"),
        (b"PK\x03\x04\x14\x00\x00\x00" + b"\x00" * 64, "a ZIP archive, not a safetensors file"),
        (b'{"error": "Repository not found"}' + b" " * 40, "JSON, not a safetensors file: it starts with '{\"error\": \"Repository not found\"}'"),
        (b"GGUF\x03\x00\x00\x00" + b"\x00" * 64, "a GGUF file, not a safetensors file"),
        (b"tiny", "the file is 4 bytes, too short for a safetensors file (an empty or cut-off download)"),
    ],
)
def test_other_files_are_named(data: bytes, said: str, server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/file"] = body(data)
    message = error(make_cache(), server.url("/file"))
    assert message.startswith(f"loras[0].url: http://127.0.0.1:{server.port}/file: {said}") and message.endswith(ALLOWED)


# --- The address guard ---------------------------------------------------------------------------------------


def test_a_redirect_to_a_private_address_is_refused_before_connecting(
    server: Server, network: Network, make_cache: Callable[..., LoraCache]
) -> None:
    server.routes["/style.safetensors"] = redirect("http://intranet.test/loras/style.safetensors?sig=SECRET")
    network.routes[PUBLIC_IP] = server.port
    cache = make_cache(allow_private_urls=False, resolve=resolver({"cdn.test": [PUBLIC_IP], "intranet.test": ["10.0.0.7"]}))
    assert error(cache, "http://cdn.test/style.safetensors", "loras[1].url") == (
        "loras[1].url: redirect 1 goes to http://intranet.test/loras/style.safetensors?…: intranet.test resolves to "
        "10.0.0.7, which is a private address (allowed: hosts on the public internet; private addresses are allowed "
        "only when the worker runs with ALLOW_PRIVATE_LORA_URLS=true)"
    )
    assert network.connects == [PUBLIC_IP]


def test_loopback_is_refused_unless_allowed(server: Server, network: Network, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/style.safetensors"] = body(LORA)
    url = server.url("/style.safetensors")
    assert error(make_cache(allow_private_urls=False), url).endswith(
        "127.0.0.1 is a loopback address (allowed: hosts on the public internet; private addresses are allowed only "
        "when the worker runs with ALLOW_PRIVATE_LORA_URLS=true)"
    )
    assert network.connects == []
    assert make_cache(allow_private_urls=True).fetch(url, "f") == sha_name(LORA)


def test_a_non_http_url_is_refused(make_cache: Callable[..., LoraCache]) -> None:
    assert error(make_cache(), "file:///runpod-volume/models/loras/x.safetensors") == (
        "loras[0].url: file:///runpod-volume/models/loras/x.safetensors is not an http or https URL "
        "(allowed: an http:// or https:// URL)"
    )


def test_a_status_other_than_2xx(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    assert error(make_cache(), server.url("/missing.safetensors")) == (
        f"loras[0].url: http://127.0.0.1:{server.port}/missing.safetensors: the server answered HTTP 404 Not Found "
        "(allowed: a URL that answers 2xx with the LoRA file)"
    )


# --- Tokens ------------------------------------------------------------------------------------------------------

HUB_NAMES = ("huggingface.co", "cas-bridge.xethub.hf.co", "civitai.com", "civitai-delivery.example.net")


@pytest.fixture
def hub(tmp_path: Path, network: Network) -> Iterator[tuple[Server, str, Callable[..., list[str]]]]:
    """An HTTPS server playing the Hub, its CDN, Civitai and Civitai's storage; yields (server, CA file, resolve)."""
    context, ca_file = make_tls(tmp_path / "tls", *HUB_NAMES)
    srv = Server(tls=context)
    network.routes[PUBLIC_IP] = srv.port
    try:
        yield srv, ca_file, resolver({name: [PUBLIC_IP] for name in HUB_NAMES})
    finally:
        srv.stop()


def test_the_hf_token_goes_to_the_hub_and_not_to_its_cdn(
    hub: tuple[Server, str, Callable[..., list[str]]], make_cache: Callable[..., LoraCache], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    srv, ca_file, resolve = hub
    seen: Seen = []
    cdn = "https://cas-bridge.xethub.hf.co/xet-bridge-us/abc123?X-Amz-Signature=deadbeef&Expires=1"
    srv.routes["/old-user/repo/resolve/main/style.safetensors"] = seen_by(redirect("/user/repo/resolve/main/style.safetensors", 301), seen)
    srv.routes["/user/repo/resolve/main/style.safetensors"] = seen_by(redirect(cdn), seen)
    srv.routes["/xet-bridge-us/abc123"] = seen_by(body(LORA), seen)
    cache = make_cache(allow_private_urls=False, resolve=resolve, ca_bundle=ca_file, hf_token=HF_TOKEN, civitai_token=CIVITAI_TOKEN)
    name = cache.fetch("https://huggingface.co/old-user/repo/resolve/main/style.safetensors", "loras[0].url")
    assert name == sha_name(LORA)
    assert seen == [
        ("huggingface.co", "/old-user/repo/resolve/main/style.safetensors", f"Bearer {HF_TOKEN}"),
        ("huggingface.co", "/user/repo/resolve/main/style.safetensors", f"Bearer {HF_TOKEN}"),  # same host: kept
        ("cas-bridge.xethub.hf.co", "/xet-bridge-us/abc123?X-Amz-Signature=deadbeef&Expires=1", None),
    ]
    assert_no_secret_logged(caplog)


def test_the_civitai_token_goes_to_civitai_only(
    hub: tuple[Server, str, Callable[..., list[str]]], make_cache: Callable[..., LoraCache], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    srv, ca_file, resolve = hub
    seen: Seen = []
    srv.routes["/api/download/models/123"] = seen_by(redirect("https://civitai-delivery.example.net/file/abc?token=signed"), seen)
    srv.routes["/file/abc"] = seen_by(body(LORA), seen)
    srv.routes["/user/repo/resolve/main/other.safetensors"] = seen_by(body(lora(seed=1)), seen)
    cache = make_cache(allow_private_urls=False, resolve=resolve, ca_bundle=ca_file, civitai_token=CIVITAI_TOKEN)
    cache.fetch("https://civitai.com/api/download/models/123", "loras[0].url")
    cache.fetch("https://huggingface.co/user/repo/resolve/main/other.safetensors", "loras[1].url")
    assert seen == [
        ("civitai.com", "/api/download/models/123", f"Bearer {CIVITAI_TOKEN}"),
        ("civitai-delivery.example.net", "/file/abc?token=signed", None),
        ("huggingface.co", "/user/repo/resolve/main/other.safetensors", None),  # no HF_TOKEN; never Civitai's
    ]
    assert_no_secret_logged(caplog)


def test_a_token_is_never_sent_over_plain_http_or_after_leaving_its_host(
    server: Server, network: Network, make_cache: Callable[..., LoraCache], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: Seen = []
    server.routes["/go"] = seen_by(redirect("http://huggingface.co/user/repo/resolve/main/x.safetensors"), seen)
    server.routes["/user/repo/resolve/main/x.safetensors"] = seen_by(body(b"nope", 401), seen)
    network.routes[PUBLIC_IP] = server.port
    cache = make_cache(allow_private_urls=False, resolve=resolver({"short.test": [PUBLIC_IP], "huggingface.co": [PUBLIC_IP]}), hf_token=HF_TOKEN)
    assert "HTTP 401 Unauthorized" in error(cache, "http://short.test/go")
    assert "HTTP 401 Unauthorized" in error(cache, "http://huggingface.co/user/repo/resolve/main/x.safetensors")
    assert [auth for _, _, auth in seen] == [None, None, None]
    assert_no_secret_logged(caplog)


def test_a_token_follows_an_upgrade_to_https_but_not_a_return_from_another_host(
    hub: tuple[Server, str, Callable[..., list[str]]], server: Server, network: Network, make_cache: Callable[..., LoraCache]
) -> None:
    tls_server, ca_file, _ = hub
    network.routes[OTHER_PUBLIC_IP] = server.port  # port 80 of every name: the plain server; 443: the TLS one
    seen: Seen = []
    server.routes["/user/repo/resolve/main/a.safetensors"] = seen_by(redirect("https://huggingface.co/user/repo/resolve/main/a.safetensors", 301), seen)
    tls_server.routes["/user/repo/resolve/main/a.safetensors"] = seen_by(body(LORA), seen)
    tls_server.routes["/user/repo/resolve/main/b.safetensors"] = seen_by(redirect("https://cas-bridge.xethub.hf.co/back"), seen)
    tls_server.routes["/back"] = seen_by(redirect("https://huggingface.co/user/repo/resolve/main/c.safetensors"), seen)
    tls_server.routes["/user/repo/resolve/main/c.safetensors"] = seen_by(body(lora(seed=2)), seen)
    cache = make_cache(
        allow_private_urls=False, ca_bundle=ca_file, hf_token=HF_TOKEN,
        resolve=lambda host, port: [OTHER_PUBLIC_IP if port == 80 else PUBLIC_IP],
    )  # fmt: skip
    cache.fetch("http://huggingface.co/user/repo/resolve/main/a.safetensors", "loras[0].url")
    cache.fetch("https://huggingface.co/user/repo/resolve/main/b.safetensors", "loras[1].url")
    assert [(host, auth) for host, _, auth in seen] == [
        ("huggingface.co", None),  # plain http: never
        ("huggingface.co", f"Bearer {HF_TOKEN}"),  # the same host over https
        ("huggingface.co", f"Bearer {HF_TOKEN}"),
        ("cas-bridge.xethub.hf.co", None),
        ("huggingface.co", None),  # the chain left the host once: no token after that
    ]


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert caplog.records and HF_TOKEN not in text and CIVITAI_TOKEN not in text


@pytest.mark.parametrize(
    ("host", "token", "matches"),
    [
        ("huggingface.co", "hf_token", True),
        ("cdn-lfs.huggingface.co", "hf_token", True),
        ("hf.co", "hf_token", True),
        ("HuggingFace.co.", "hf_token", True),
        ("cas-bridge.xethub.hf.co", "hf_token", False),
        ("evilhuggingface.co", "hf_token", False),
        ("huggingface.co.evil.example", "hf_token", False),
        ("civitai.com", "civitai_token", True),
        ("www.civitai.com", "civitai_token", True),
        ("civitai.com", "hf_token", False),
        ("huggingface.co", "civitai_token", False),
    ],
)
def test_token_hosts(host: str, token: str, matches: bool) -> None:
    assert token_hosts_match(host, token) is matches


def test_tokens_stay_out_of_the_settings_repr() -> None:
    loaded = Settings.from_env({"HF_TOKEN": HF_TOKEN, "CIVITAI_TOKEN": CIVITAI_TOKEN})
    assert loaded.loras.hf_token == HF_TOKEN and loaded.loras.civitai_token == CIVITAI_TOKEN
    assert HF_TOKEN not in str(loaded.describe()) and CIVITAI_TOKEN not in repr(loaded)


def test_a_lora_cap_above_the_cache_budget_stops_the_boot() -> None:
    with pytest.raises(ConfigError, match="LORA_MAX_BYTES=3000 is larger than LORA_CACHE_BYTES=2000"):
        Settings.from_env({"LORA_MAX_BYTES": "3000", "LORA_CACHE_BYTES": "2000"})


# --- Single flight ----------------------------------------------------------------------------------------------


def wait_for_waiters(cache: LoraCache, url: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with cache._lock:  # the flight's own count: the only way to know a fetch is really waiting
            flight = cache._flights.get(url)
            if flight is not None and flight.waiters >= count:
                return
        time.sleep(0.01)
    raise AssertionError("the second fetch never joined the download")


def run_both(cache: LoraCache, url: str, server: Server, arrived: threading.Event, go: threading.Event) -> list[object]:
    """Fetch ``url`` from two threads; the route holds the first until the second waits for it."""
    results: list[object] = [None, None]

    def run(index: int) -> None:
        try:
            results[index] = cache.fetch(url, f"loras[{index}].url")
        except InvalidInput as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    threads[0].start()
    assert arrived.wait(5)
    threads[1].start()
    wait_for_waiters(cache, url, 1)
    go.set()
    for thread in threads:
        thread.join(10)
    return results


def held(route: Route, arrived: threading.Event, go: threading.Event) -> Route:
    def hold(h: BaseHTTPRequestHandler) -> None:
        arrived.set()
        go.wait(5)
        route(h)

    return hold


def test_two_fetches_of_one_url_download_it_once(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    arrived, go = threading.Event(), threading.Event()
    server.routes["/style.safetensors"] = held(body(LORA), arrived, go)
    cache = make_cache()
    results = run_both(cache, server.url("/style.safetensors"), server, arrived, go)
    assert results == [sha_name(LORA), sha_name(LORA)]
    assert server.paths() == ["/style.safetensors"]
    assert cache._pins[sha_name(LORA)] == 2  # pinned for each fetch


def test_two_fetches_share_the_error_each_under_its_own_field(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    arrived, go = threading.Event(), threading.Event()
    server.routes["/page"] = held(body(b"<html><body>not found</body></html>" * 3), arrived, go)
    results = run_both(make_cache(), server.url("/page"), server, arrived, go)
    messages = [str(r) for r in results]
    assert messages[0].startswith("loras[0].url: ") and messages[1].startswith("loras[1].url: ")
    assert messages[0].removeprefix("loras[0].url") == messages[1].removeprefix("loras[1].url")
    assert server.paths() == ["/page"]


# --- Eviction ------------------------------------------------------------------------------------------------------


def test_the_least_recently_used_file_is_evicted_and_a_pinned_one_stays(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    files = {key: lora(seed=i, rank=16, width=256) for i, key in enumerate("abcd")}  # 16 KiB each
    for key, data in files.items():
        server.routes[f"/{key}.safetensors"] = body(data)
    size = len(files["a"])
    cache = make_cache(cache_bytes=int(3.5 * size), max_bytes=size * 2)
    cache.release(cache.fetch(server.url("/a.safetensors"), "f"))
    pinned = cache.fetch(server.url("/b.safetensors"), "f")  # a job is using b
    cache.release(cache.fetch(server.url("/c.safetensors"), "f"))
    now = time.time()
    for key, age in (("b", 300), ("a", 200), ("c", 100)):  # b is the oldest, but pinned
        os.utime(cache.folder / sha_name(files[key]), (now - age, now - age))
    cache.release(cache.fetch(server.url("/d.safetensors"), "f"))
    assert cached_names(cache) == sorted(sha_name(files[k]) for k in "bcd")
    assert len(list((cache.folder / "index").iterdir())) == 3  # a's index entry went with it
    cache.release(pinned)
    cache.fetch(server.url("/a.safetensors"), "f")  # a is downloaded again
    assert server.paths().count("/a.safetensors") == 2


def test_the_budget_is_hard_files_in_use_stay_and_a_download_that_cannot_fit_fails(
    server: Server, make_cache: Callable[..., LoraCache]
) -> None:
    """Another worker on the same volume may be running a job with a file it used a moment ago, so
    that file stays; a download that does not fit beside it is refused before its body is read."""
    first, second = lora(seed=1, rank=16, width=256), lora(seed=2, rank=16, width=256)
    server.routes["/1.safetensors"], server.routes["/2.safetensors"] = body(first), body(second)
    budget = int(1.5 * len(first))
    cache = make_cache(cache_bytes=budget, max_bytes=len(first), recent_use=600)
    cache.release(cache.fetch(server.url("/1.safetensors"), "f"))
    with pytest.raises(StorageFull) as caught:  # once admitted: the cache grew past its budget
        cache.fetch(server.url("/2.safetensors"), "loras[1].url")
    assert caught.value.code == "storage_full"
    assert str(caught.value) == (
        f"loras[1].url: {server.url('/2.safetensors')}: the LoRA cache {cache.folder} cannot take "
        f"{len(second):,} more bytes within LORA_CACHE_BYTES={budget:,}: {len(first):,} bytes of it are files jobs "
        "may be using (pinned by this worker, or used by any worker in the last 600 s) and downloads in progress; "
        "retry when those jobs are done, or raise LORA_CACHE_BYTES"
    )
    assert cached_names(cache) == [sha_name(first)]
    past = time.time() - 700
    os.utime(cache.folder / sha_name(first), (past, past))
    assert cache.fetch(server.url("/2.safetensors"), "f") == sha_name(second)  # the first may go now
    assert cached_names(cache) == [sha_name(second)]


def test_a_download_of_unknown_length_reserves_LORA_MAX_BYTES(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/chunked.safetensors"] = body(LORA, headers={})  # no Content-Length: the body ends with the connection
    with pytest.raises(StorageFull, match=r"cannot take 4,096 more bytes within LORA_CACHE_BYTES=4,000"):
        make_cache(cache_bytes=4000, max_bytes=4096).fetch(server.url("/chunked.safetensors"), "f")
    assert make_cache(cache_bytes=8192, max_bytes=4096).fetch(server.url("/chunked.safetensors"), "f") == sha_name(LORA)


def test_a_job_releases_its_files(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/a.safetensors"] = body(LORA)
    cache = make_cache()
    with cache.job() as loras:
        name = loras.fetch(server.url("/a.safetensors"), "loras[0].url")
        assert cache._pins[name] == 1
    assert cache._pins[name] == 0


# --- The folder ------------------------------------------------------------------------------------------------------


def test_a_read_only_volume_falls_back_to_the_worker_dir(
    tmp_path: Path, volume: Path, server: Server, make_cache: Callable[..., LoraCache], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_probe = lora_disk.write_probe

    def probe(folder: Path) -> None:
        if volume in folder.parents:
            raise OSError(errno.EROFS, "Read-only file system")
        real_probe(folder)

    monkeypatch.setattr(lora_disk, "write_probe", probe)
    server.routes["/a.safetensors"] = body(LORA)
    cache = make_cache()
    assert cache.fetch(server.url("/a.safetensors"), "f") == sha_name(LORA)
    assert cache.folder == tmp_path / "worker" / "lora-cache"
    assert (cache.folder / sha_name(LORA)).is_file()
    assert any("Read-only file system" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_no_volume_falls_back_to_the_worker_dir_without_creating_the_mount_point(tmp_path: Path) -> None:
    cache = LoraCache(settings(), volume_path=tmp_path / "no-volume", worker_dir=tmp_path / "worker")
    assert cache.folder == tmp_path / "worker" / "lora-cache"
    assert not (tmp_path / "no-volume").exists()


def test_lora_cache_dir_is_used_when_set(tmp_path: Path, volume: Path) -> None:
    chosen = tmp_path / "elsewhere" / "loras"
    cache = LoraCache(settings(cache_dir=chosen), volume_path=volume, worker_dir=tmp_path / "worker")
    assert cache.folder == chosen and chosen.is_dir()


def test_partial_files_of_a_crashed_worker_are_removed_at_first_use(tmp_path: Path, volume: Path) -> None:
    folder = volume / "lora-cache"
    folder.mkdir()
    old, fresh = folder / ".download-old.part", folder / ".download-fresh.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"x")  # maybe another worker's download in progress
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    cache = LoraCache(settings(), volume_path=volume, worker_dir=tmp_path / "worker", recent_use=900)
    assert cache.folder == folder
    assert not old.exists() and fresh.exists()
    fresh.unlink()


def test_a_stale_index_entry_is_a_miss(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/a.safetensors"] = body(LORA)
    cache = make_cache()
    name = cache.fetch(server.url("/a.safetensors"), "f")
    (cache.folder / name).unlink()  # evicted by another worker
    assert cache.fetch(server.url("/a.safetensors"), "f") == name
    assert server.paths() == ["/a.safetensors"] * 2


# --- The job's time --------------------------------------------------------------------------------------------


def test_headers_dripped_past_LORA_URL_DEADLINE_end_the_fetch(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    # A server dripping its headers once held a fetch for 23 s under a 2 s deadline.
    server.routes["/style.safetensors"] = body(LORA)
    proxy = DripProxy(server.port, 0.1)
    try:
        url = f"http://127.0.0.1:{proxy.port}/style.safetensors"
        started = time.monotonic()
        message = error(make_cache(url_timeout=5.0, url_deadline=1.0), url)
        assert message == f"loras[0].url: {url}: the download did not finish within the 1 s of LORA_URL_DEADLINE"
        assert time.monotonic() - started < 1.8
    finally:
        proxy.close()


def test_a_jobs_fetches_end_with_its_deadline_and_its_stop_flag(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    server.routes["/slow.safetensors"] = drip(LORA, 0.05, server.release)
    cache = make_cache(url_deadline=60.0)
    with cache.job(job_deadline=time.monotonic() + 0.5) as loras, pytest.raises(ExecutionTimeout) as timed_out:
        loras.fetch(server.url("/slow.safetensors"), "loras[0].url")
    assert "the job's time budget (JOB_TIMEOUT) ran out during the download" in str(timed_out.value)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with cache.job(stop=stop) as loras, pytest.raises(ExecutionInterrupted):
        loras.fetch(server.url("/slow.safetensors"), "loras[0].url")
    assert time.monotonic() - started < 1.0 and cached_names(cache) == []


def test_a_fetch_waiting_for_another_jobs_download_ends_with_its_own_job(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    arrived, go = threading.Event(), threading.Event()
    server.routes["/style.safetensors"] = held(body(LORA), arrived, go)
    cache, url = make_cache(), server.url("/style.safetensors")
    first = threading.Thread(target=lambda: cache.release(cache.fetch(url, "loras[0].url")))
    first.start()
    assert arrived.wait(5)
    with pytest.raises(ExecutionTimeout):
        cache.fetch(url, "loras[1].url", job_deadline=time.monotonic() + 0.3)
    go.set()
    first.join(10)
    assert cache._pins[sha_name(LORA)] == 0  # the leaver's pin was given back


def test_when_the_downloading_job_is_cancelled_a_waiting_job_downloads_itself(server: Server, make_cache: Callable[..., LoraCache]) -> None:
    arrived, go = threading.Event(), threading.Event()
    server.routes["/style.safetensors"] = held(body(LORA), arrived, go)
    cache, url, stop = make_cache(), server.url("/style.safetensors"), threading.Event()
    outcome: list[object] = []

    def cancelled_leader() -> None:
        try:
            cache.fetch(url, "loras[0].url", stop=stop)
        except ExecutionInterrupted as exc:
            outcome.append(exc)

    leader = threading.Thread(target=cancelled_leader)
    leader.start()
    assert arrived.wait(5)
    waiter = threading.Thread(target=lambda: outcome.append(cache.fetch(url, "loras[1].url")))
    waiter.start()
    wait_for_waiters(cache, url, 1)
    stop.set()
    leader.join(5)
    go.set()
    waiter.join(10)
    assert isinstance(outcome[0], ExecutionInterrupted) and outcome[1] == sha_name(LORA)
    assert server.paths() == ["/style.safetensors", "/style.safetensors"]


# --- A full disk -------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk that really fills up (ENOSPC). Skipped where tests may not mount one."""
    path = tmp_path / "small-disk"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Write zeros into ``folder/filler`` until the disk has at most ``leave`` bytes free."""
    filler = folder / "filler"
    with open(filler, "wb") as file:
        try:
            while shutil.disk_usage(folder).free > leave:
                file.write(b"\0" * min(65536, max(4096, shutil.disk_usage(folder).free - leave)))
                file.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


BIG_LORA = lora(seed=5, rank=64, width=2048)  # 512 KiB of tensors


def test_too_little_free_space_is_storage_full_before_the_body_is_read(
    small_disk: Path, server: Server, make_cache: Callable[..., LoraCache]
) -> None:
    server.routes["/big.safetensors"] = body(BIG_LORA)
    cache = make_cache(cache_dir=small_disk / "loras", max_bytes=2**20)
    filler = fill(small_disk, leave=256 * 1024)
    with pytest.raises(StorageFull) as caught:
        cache.fetch(server.url("/big.safetensors"), "loras[0].url")
    free = shutil.disk_usage(small_disk).free
    assert str(caught.value) == (
        f"loras[0].url: {server.url('/big.safetensors')}: the disk of the LoRA cache {cache.folder} has {free:,} bytes "
        f"free; the download needs {len(BIG_LORA):,} and {4 * 2**20 // 100:,} more are kept free (free some space "
        "on the volume, lower LORA_CACHE_BYTES, or give the endpoint a larger volume)"
    )
    filler.unlink()
    assert cache.fetch(server.url("/big.safetensors"), "loras[0].url") == sha_name(BIG_LORA)  # the next job is fine


def test_a_disk_that_fills_up_during_the_download_is_storage_full_and_leaves_no_partial_file(
    small_disk: Path, server: Server, make_cache: Callable[..., LoraCache]
) -> None:
    def fill_midway(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(BIG_LORA)))
        h.end_headers()
        h.wfile.write(BIG_LORA[:100_000])
        h.wfile.flush()
        time.sleep(0.2)
        fill(small_disk)  # another worker writes the volume full
        h.wfile.write(BIG_LORA[100_000:])

    server.routes["/big.safetensors"] = fill_midway
    cache = make_cache(cache_dir=small_disk / "loras", max_bytes=2**20)
    with pytest.raises(StorageFull) as caught:
        cache.fetch(server.url("/big.safetensors"), "loras[0].url")
    assert str(caught.value).startswith(
        f"loras[0].url: {server.url('/big.safetensors')}: no space left on the disk of the LoRA cache {cache.folder} "
    )
    assert partial_files(cache) == []
    (small_disk / "filler").unlink()
    server.routes["/big.safetensors"] = body(BIG_LORA)
    assert cache.fetch(server.url("/big.safetensors"), "loras[0].url") == sha_name(BIG_LORA)
