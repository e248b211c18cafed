"""A stand-in of the Hugging Face Hub on 127.0.0.1, for scripts/models.py's tests.

It serves exactly what huggingface_hub 2.4.0 asks for when the script looks files up and
downloads them, answered the way the real Hub answers for files stored with LFS:

- ``POST /api/models/{repo}/paths-info/{revision}`` (``HfApi.get_paths_info``): form field ``paths``
  repeated; a JSON list of ``{"type": "file", "path", "size", "oid", "lfs": {"oid": sha256, "size",
  "pointerSize"}}`` for the paths that exist (others are left out, as the Hub does).
- ``HEAD /{repo}/resolve/{revision}/{path}`` (``get_hf_file_metadata``): for an LFS file a 302 to a
  second origin (the "CDN", another port, so huggingface_hub does not follow it and does not send
  the token there) with ``X-Repo-Commit``, ``ETag`` (the pointer's git oid), ``X-Linked-Etag``
  (the SHA-256) and ``X-Linked-Size``; a file kept in git answers 200 with its git blob id as ETag.
- ``GET`` of the CDN link, with ``Range: bytes=N-`` answered 206 and ``Content-Range``.
- Errors as the Hub signals them: ``X-Error-Code: RepoNotFound`` / ``EntryNotFound`` (404),
  ``GatedRepo`` (401) for a gated repository asked without the right ``Authorization: Bearer``.

:func:`fill_cache` lays files out in a Hugging Face cache with huggingface_hub itself (blobs,
snapshot symlinks, ``refs/main``), as RunPod places an endpoint's cached model.

Faults for the CDN's next GETs (:meth:`FakeHub.fault`): ``("drop", n)`` sends n bytes of the body
and closes the connection; ``("stall", n)`` sends n bytes and waits until :attr:`release` is set.
Every request is recorded with its headers (:attr:`requests`).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")
_PATHS_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<revision>[^/]+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class HubEntry:
    """One file of a repository. ``sha256`` is what the Hub advertises (normally the content's)."""

    content: bytes
    lfs: bool = True
    sha256: str = ""

    def __post_init__(self) -> None:
        self.sha256 = self.sha256 or hashlib.sha256(self.content).hexdigest()

    @property
    def pointer_oid(self) -> str:
        """The git oid of the LFS pointer file (what ``oid`` / ``ETag`` carry for an LFS file)."""
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.content)}\n"
        return git_blob_id(pointer.encode())

    def paths_info(self, path: str) -> dict:
        info: dict = {"type": "file", "path": path, "size": len(self.content)}
        if self.lfs:
            info.update(oid=self.pointer_oid, lfs={"oid": self.sha256, "size": len(self.content), "pointerSize": 134})
        else:
            info["oid"] = git_blob_id(self.content)
        return info


@dataclass(frozen=True)
class Seen:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    #: Header names in lower case.
    headers: Mapping[str, str]


@dataclass
class FakeHub:
    #: Files by (repo, path).
    files: dict[tuple[str, str], HubEntry]
    #: Repositories that need ``Authorization: Bearer <token>``.
    gated: set[str] = field(default_factory=set)
    token: str = ""
    #: The commit the Hub names for every repository (``X-Repo-Commit``): a new one is a new revision.
    commit: str = COMMIT
    requests: list[Seen] = field(default_factory=list)
    #: Set when a ``stall`` fault starts; :attr:`release` ends it.
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    _faults: list[tuple[str, int]] = field(default_factory=list)
    _servers: list[ThreadingHTTPServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def fault(self, *faults: tuple[str, int]) -> None:
        """Arm faults for the CDN's next GETs, one each, in order."""
        self._faults.extend(faults)

    def seen(self, server: str, method: str | None = None) -> list[Seen]:
        return [r for r in self.requests if r.server == server and (method is None or r.method == method)]

    def start(self) -> FakeHub:
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, role))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, args=(0.05,), name=f"fake-{role}", daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        self.release.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_fault(self) -> tuple[str, int] | None:
        return self._faults.pop(0) if self._faults else None

    def _by_blob(self, key: str) -> HubEntry | None:
        return next((e for e in self.files.values() if hashlib.sha256(e.content).hexdigest() == key), None)


def _handler(hub: FakeHub, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._dispatch(body=False)

        def do_GET(self) -> None:
            self._dispatch(body=True)

        def do_POST(self) -> None:
            self._record()
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            match = _PATHS_INFO.match(urlsplit(self.path).path)
            if role != "hub" or not match:
                return self._error(404, "NotFound")
            repo = unquote(match["repo"])
            if not self._allowed(repo):
                return
            found = [hub.files[(repo, p)].paths_info(p) for p in form.get("paths", []) if (repo, p) in hub.files]
            self._send(200, json.dumps(found).encode(), {"Content-Type": "application/json"})

        def _dispatch(self, body: bool) -> None:
            self._record()
            path = urlsplit(self.path).path
            if role == "cdn":
                return self._serve_blob(path.rsplit("/", 1)[-1], body)
            match = _RESOLVE.match(path)
            if not match:
                return self._error(404, "NotFound")
            repo, name = unquote(match["repo"]), unquote(match["path"])
            if not self._allowed(repo):
                return
            entry = hub.files.get((repo, name))
            if entry is None:
                return self._error(404, "EntryNotFound")
            headers = {"X-Repo-Commit": hub.commit}
            if not entry.lfs:
                headers["ETag"] = f'"{git_blob_id(entry.content)}"'
                return self._send(200, entry.content, headers, body=body)
            headers.update(
                {
                    "ETag": f'"{entry.pointer_oid}"',
                    "X-Linked-Etag": f'"{entry.sha256}"',
                    "X-Linked-Size": str(len(entry.content)),
                    "Location": f"{hub.cdn_url}/blobs/{hashlib.sha256(entry.content).hexdigest()}?name={quote(name)}",
                }
            )
            self._send(302, b"", headers, body=body)

        def _serve_blob(self, key: str, body: bool) -> None:
            entry = hub._by_blob(key)
            if entry is None:
                return self._error(404, "NotFound")
            content, status = entry.content, 200
            headers = {"Accept-Ranges": "bytes", "ETag": f'"{key}"', "Content-Type": "application/octet-stream"}
            match = _RANGE.match(self.headers.get("Range", ""))
            if match:
                start = int(match[1])
                end = int(match[2]) if match[2] else len(content) - 1
                if start >= len(content):
                    return self._send(416, b"", {"Content-Range": f"bytes */{len(content)}"})
                content, status = content[start : end + 1], 206
                headers["Content-Range"] = f"bytes {start}-{start + len(content) - 1}/{len(entry.content)}"
            fault = hub._next_fault() if body else None
            if fault is None:
                return self._send(status, content, headers, body=body)
            kind, count = fault
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(content))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(content[:count])
            self.wfile.flush()
            if kind == "stall":
                hub.stalled.set()
                hub.release.wait(30)
            self.close_connection = True
            self.connection.close()

        def _allowed(self, repo: str) -> bool:
            if repo not in {r for r, _ in hub.files}:
                self._error(404, "RepoNotFound", "Repository not found")
                return False
            if repo in hub.gated and self.headers.get("Authorization") != f"Bearer {hub.token}":
                self._error(401, "GatedRepo", "Access to model is restricted. You must have access to it and be authenticated.")
                return False
            return True

        def _error(self, status: int, code: str, message: str = "") -> None:
            headers = {"X-Error-Code": code, "Content-Type": "application/json"}
            if message:
                headers["X-Error-Message"] = message
            self._send(status, json.dumps({"error": message or code}).encode(), headers)

        def _send(self, status: int, content: bytes, headers: Mapping[str, str], *, body: bool = True) -> None:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(content))}.items():
                self.send_header(name, value)
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(content)

        def _record(self) -> None:
            hub.requests.append(Seen(role, self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))

    return Handler


def fill_cache(hub: FakeHub, cache: Path, files: Iterable[tuple[str, str]]) -> list[Path]:
    """Download ``files`` (repository, path) from ``hub`` into the Hugging Face cache ``cache`` with
    ``hf_hub_download``; the snapshot paths (symlinks into ``blobs/``)."""
    from huggingface_hub import hf_hub_download

    return [Path(hf_hub_download(repo, path, cache_dir=cache, endpoint=hub.url)) for repo, path in files]
