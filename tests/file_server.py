"""A small HTTP server on 127.0.0.1 serving bytes by path, for anything a job fetches by URL."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """Serves ``files`` (path → bytes; 404 for others) and records each request's path. A context manager.

    ``pace``: seconds between 1 KiB pieces of a body (0: all at once), as a slow or hostile server sends.
    """

    def __init__(self, files: dict[str, bytes] | None = None, pace: float = 0.0) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.pace = pace
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append(self.path)
                data = server.files.get(self.path.split("?")[0])
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    for piece in range(0, len(data), 1024 if server.pace else max(len(data), 1)):
                        self.wfile.write(data[piece : piece + (1024 if server.pace else len(data))])
                        time.sleep(server.pace)
                except OSError:  # the client hung up, as a job that ended does
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
