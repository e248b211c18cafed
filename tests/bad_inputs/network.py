"""The corpus's network: a small HTTP site on 127.0.0.1 and the guard that routes the worker to it.

The site plays the "public" host ``images.example.test`` of the image_url cases (the guard in
``netguard/sitecustomize.py`` resolves that name to a public address and routes port 80 of it
here). Its paths:

- ``/redirect/metadata`` → 302 to the cloud metadata service (169.254.169.254);
- ``/redirect/loopback`` → 302 to ComfyUI's default port on 127.0.0.1, with a query;
- ``/redirect/file`` → 302 to ``file:///etc/passwd``;
- ``/loop/<n>`` → 302 to ``/loop/<n+1>``, forever;
- ``/page.html`` → 200, an HTML page; ``/cat.png`` → 200, a PNG; anything else → 404.

Every request is recorded (``hits``), so a test can tell the worker really went there.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.bad_inputs import NETGUARD_DIR, PUBLIC_HOST, PUBLIC_IP, _png_bytes

METADATA_URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
LOOPBACK_URL = "http://127.0.0.1:8188/view?filename=secret.png&type=output"

_REDIRECTS = {
    "/redirect/metadata": METADATA_URL,
    "/redirect/loopback": LOOPBACK_URL,
    "/redirect/file": "file:///etc/passwd",
}


class ImageSite:
    """A threaded HTTP server on 127.0.0.1 (``with ImageSite() as site:``; ``site.port``, ``site.hits``)."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self._png = _png_bytes(32, 32)
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                site.hits.append(self.path)
                path = self.path.split("?", 1)[0]
                if path in _REDIRECTS:
                    self._answer(302, b"", {"Location": _REDIRECTS[path]})
                elif path.startswith("/loop/"):
                    self._answer(302, b"", {"Location": f"/loop/{int(path.rsplit('/', 1)[1]) + 1}"})
                elif path == "/page.html":
                    self._answer(200, b"<!DOCTYPE html><html><body>Access denied</body></html>", {"Content-Type": "text/html"})
                elif path == "/cat.png":
                    self._answer(200, site._png, {"Content-Type": "image/png"})
                else:
                    self._answer(404, b"not found", {"Content-Type": "text/plain"})

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="image-site", daemon=True)

    def __enter__(self) -> ImageSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def guarded_env(log: Path, site_port: int | None = None) -> dict[str, str]:
    """Environment entries that load the network guard into the worker (and its ComfyUI child).

    With ``site_port``, ``images.example.test`` resolves to a public address whose port 80 is
    routed to the :class:`ImageSite` on that local port.
    """
    config: dict[str, Any] = {"log": str(log)}
    if site_port is not None:
        config["hosts"] = {PUBLIC_HOST: [PUBLIC_IP]}
        config["routes"] = {f"{PUBLIC_IP}:80": site_port}
    pythonpath = os.pathsep.join(p for p in (str(NETGUARD_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": pythonpath, "WAN22_NETGUARD": json.dumps(config)}


def guard_events(log: Path) -> list[dict[str, Any]]:
    """What the guard recorded, oldest first."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def non_local(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Connections and DNS lookups that were not to 127.0.0.1 and not routed to the local site."""
    return [e for e in events if e["event"] in ("connect", "dns") and e.get("action") not in ("local", "routed")]
