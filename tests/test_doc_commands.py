"""The shell commands the docs give for the local API, run as written (curl, jq, base64, bash)
against a small HTTP server on 127.0.0.1 that answers like RunPod's local API: a job that fails
must end with a non-zero status and no video file, one that completes with a playable video."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest

from tests.harness import REPO, decode_mp4, png_b64

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("bash", "curl", "jq", "base64")), reason="needs bash, curl, jq and base64"
)
FAILED = {"id": "test-1", "status": "FAILED", "error": "invalid_input: options.width: 70 is not a multiple of 16"}


def tiny_mp4() -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return out.getvalue()


class LocalApi:
    """POST /runsync answering ``answer`` (a dict, or an int: that HTTP status with an empty body)."""

    def __init__(self) -> None:
        self.answers: list[object] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = api.answers.pop(0)
                body = b"" if isinstance(answer, int) else json.dumps(answer).encode()
                self.send_response(answer if isinstance(answer, int) else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def api() -> Iterator[LocalApi]:
    server = LocalApi()
    yield server
    server.server.shutdown()


def completed(**extra: object) -> dict:
    return {"id": "test-2", "status": "COMPLETED", "output": {"video": base64.b64encode(tiny_mp4()).decode(), **extra}}


def block(path: str, marker: str) -> str:
    """The fenced bash block of ``path`` that holds ``marker``."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / path).read_text(), re.DOTALL)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"{path}: {len(found)} bash blocks hold {marker!r}"
    return found[0]


def run(script: str, api: LocalApi, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = script.replace("http://localhost:8000", f"http://{api.address}").replace("localhost:8000", api.address)
    (cwd / "test_input.json").write_text((REPO / "test_input.json").read_text())
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60)


LOCAL_API_COMMANDS = {
    "README.md": "base64 -d > out.mp4.part",
    "docs/client.md": "-d @test_input.json \\\n    | jq",
    "docs/deployment.md": "tee response.json",
}


@pytest.mark.parametrize("doc", LOCAL_API_COMMANDS)
def test_the_local_api_command_fails_loudly_and_writes_no_file(doc: str, api: LocalApi, tmp_path: Path) -> None:
    end = "|| { rm -f out.mp4.part; false; }"
    command = block(doc, LOCAL_API_COMMANDS[doc]).split(end)[0] + end  # the lines after it are other commands
    api.answers = [FAILED, 500, completed()]
    failed = run(command, api, tmp_path)
    assert failed.returncode != 0 and "invalid_input: options.width: 70 is not a multiple of 16" in failed.stderr
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.mp4.part").exists()
    refused = run(command, api, tmp_path)  # an HTTP error of the API itself
    assert refused.returncode != 0 and "500" in refused.stderr and not (tmp_path / "out.mp4").exists()
    done = run(command, api, tmp_path)
    assert done.returncode == 0, done.stderr
    assert decode_mp4((tmp_path / "out.mp4").read_bytes())["frames"] == 5 and not (tmp_path / "out.mp4.part").exists()


def test_the_clip_by_clip_script_stops_at_the_failed_clip(api: LocalApi, tmp_path: Path) -> None:
    script = block("docs/api.md", "clip2.json")
    (tmp_path / "start.png").write_bytes(base64.b64decode(png_b64()))
    last_frame = base64.b64encode(b"\x89PNG last frame").decode()
    api.answers = [completed(last_frame=last_frame), FAILED]
    failed = run(script, api, tmp_path)
    assert failed.returncode != 0 and "invalid_input" in failed.stderr
    assert decode_mp4((tmp_path / "clip1.mp4").read_bytes())["frames"] == 5
    assert json.loads((tmp_path / "clip2.json").read_text())["input"]["image"] == last_frame
    assert sorted(p.name for p in tmp_path.glob("clip*.mp4*")) == ["clip1.mp4"]
    api.answers = [completed(last_frame=last_frame), completed()]
    assert run(script, api, tmp_path).returncode == 0 and (tmp_path / "clip2.mp4").stat().st_size > 0
