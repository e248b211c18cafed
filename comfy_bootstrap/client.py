"""ComfyUI's HTTP and websocket protocol, one method per endpoint the worker uses.

Every network failure becomes :class:`ComfyUnavailable` (recorded: ``requests`` raises
``ConnectionError`` and websocket-client the builtin ``ConnectionRefusedError`` when nothing
listens), and a rejected prompt becomes :class:`PromptRejected` with ComfyUI's per-node errors
spelled out, so callers never see a raw ``requests`` exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests
import websocket

from comfy_bootstrap.errors import ComfyUnavailable, PromptRejected

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Cheap, answered as soon as the server listens, and still answered while a prompt runs.
HEALTH_PATH = "/system_stats"
#: The liveness check before each job: the queue's size, ComfyUI's cheapest answer (~0.5 ms where
#: ``/system_stats``, which asks psutil and torch for the memory, takes ~1.4 ms on a CPU).
LIVENESS_PATH = "/prompt"

#: ComfyUI's validation details echo a job's values (a prompt text, a file name): each node error and
#: the whole refusal are cut to these, so the answer and the log line stay short.
MAX_NODE_ERROR_CHARS = 300
MAX_PROMPT_ERROR_CHARS = 2000

#: The errors that mean "ComfyUI is not there (any more)" rather than "ComfyUI said no".
NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, ConnectionError, OSError, websocket.WebSocketException)


class ComfyClient:
    """A thin, synchronous client; blocking calls are run in worker threads by the caller."""

    def __init__(self, base_url: str, *, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = requests.Session()
        # The launched ComfyUI is on loopback: an HTTP(S)_PROXY from the environment must not apply.
        self._http.trust_env = not self.base_url.startswith(("http://127.", "http://localhost", "http://[::1]"))

    # --- health --------------------------------------------------------------------------
    def health_error(self, timeout: float = 3.0) -> str | None:
        """None when ``GET /system_stats`` answers HTTP 200 within ``timeout``, else what went wrong.

        A fresh connection every time: a pooled one may belong to a ComfyUI that has since died,
        and readiness, liveness and reconnect checks must see the server as it is now.
        """
        try:
            with requests.Session() as session:
                session.trust_env = self._http.trust_env
                resp = session.get(self._url(HEALTH_PATH), timeout=timeout)
        except requests.Timeout:
            return f"no answer within {timeout:g} s"
        except requests.ConnectionError as exc:
            return f"connection failed ({_short(exc)})"
        except requests.RequestException as exc:
            return f"request failed ({exc})"
        return None if resp.status_code == 200 else f"HTTP {resp.status_code}"

    def liveness_error(self, timeout: float) -> str | None:
        """None when ``GET /prompt`` answers HTTP 200 within ``timeout``, else what went wrong: the
        check before each job, on the client's kept-alive connection (a connection to a ComfyUI that
        has gone is seen closed and replaced, so the answer is still the server's as it is now).
        A connection ComfyUI closes just as it is reused (its keep-alive ran out) fails once: the
        check is then made once more, on a new connection."""
        error = None
        for _attempt in range(2):
            try:
                resp = self._http.get(self._url(LIVENESS_PATH), timeout=timeout)
            except requests.Timeout:
                return f"no answer within {timeout:g} s"
            except requests.ConnectionError as exc:
                error = f"connection failed ({_short(exc)})"
                continue
            except requests.RequestException as exc:
                return f"request failed ({exc})"
            return None if resp.status_code == 200 else f"HTTP {resp.status_code}"
        return error

    def is_answering(self, timeout: float = 3.0) -> bool:
        """True when ComfyUI answers ``GET /system_stats`` with HTTP 200 within ``timeout``."""
        return self.health_error(timeout) is None

    # --- inputs ----------------------------------------------------------------------------
    def upload_file(self, name: str, data: bytes, content_type: str = "image/png") -> str:
        """Upload a file to ComfyUI's input folder; returns the name ComfyUI stored it under.

        ``POST /upload/image`` takes any file, not only images (recorded: media_upload_responses.json).
        """
        files = {"image": (name, data, content_type)}
        body = self._call(
            "upload the input file",
            lambda: self._http.post(
                self._url("/upload/image"), files=files, data={"overwrite": "true", "type": "input"}, timeout=self.timeout
            ),
        )
        subfolder = body.get("subfolder") or ""
        return f"{subfolder}/{body['name']}" if subfolder else str(body["name"])

    def node_classes(self) -> dict[str, bool]:
        """Every node class this ComfyUI has registered, each with whether it is an output node
        (``GET /object_info``, about a megabyte)."""
        body = self._call("list the node classes", lambda: self._http.get(self._url("/object_info"), timeout=max(self.timeout, 30.0)))
        return {str(name): isinstance(info, dict) and bool(info.get("output_node")) for name, info in body.items()}

    def list_models(self, folder: str) -> list[str]:
        """``GET /models/{folder}``: file names ComfyUI sees in one model folder (subfolders as ``a/b``)."""
        body = self._call("list the model folder " + folder, lambda: self._http.get(self._url(f"/models/{folder}"), timeout=self.timeout))
        return [str(name) for name in body]

    # --- prompts ---------------------------------------------------------------------------
    def queue_prompt(self, prompt: dict[str, Any], *, client_id: str, prompt_id: str) -> None:
        """``POST /prompt``; a 400 becomes PromptRejected naming each failing node and input."""
        payload = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        try:
            resp = self._http.post(self._url("/prompt"), json=payload, timeout=self.timeout)
        except NETWORK_ERRORS as exc:
            raise ComfyUnavailable(f"ComfyUI at {self.base_url} did not accept the prompt: {_short(exc)}") from exc
        if resp.status_code == 400:
            raise PromptRejected(format_prompt_error(_json_or_text(resp), prompt))
        if resp.status_code != 200:
            raise ComfyUnavailable(f"ComfyUI answered HTTP {resp.status_code} to POST /prompt: {resp.text[:300]}")

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of a finished prompt, or None while it is pending or running (``{}``)."""
        body = self._call("read the history", lambda: self._http.get(self._url(f"/history/{prompt_id}"), timeout=self.timeout))
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry or None

    def interrupt(self, prompt_id: str) -> None:
        """Interrupt ``prompt_id`` if it is the running one (ComfyUI skips it otherwise: recorded)."""
        self._call(
            "interrupt the prompt",
            lambda: self._http.post(self._url("/interrupt"), json={"prompt_id": prompt_id}, timeout=self.timeout),
            parse=False,
        )

    def delete_from_queue(self, prompt_id: str) -> None:
        """Drop a pending prompt (HTTP 200 whether or not it was pending: recorded)."""
        self._call(
            "delete the prompt from the queue",
            lambda: self._http.post(self._url("/queue"), json={"delete": [prompt_id]}, timeout=self.timeout),
            parse=False,
        )

    def is_running_or_pending(self, prompt_id: str) -> bool:
        """Whether ``GET /queue`` still lists the prompt (entries are ``[number, prompt_id, ...]``)."""
        body = self._call("read the queue", lambda: self._http.get(self._url("/queue"), timeout=self.timeout))
        entries = list(body.get("queue_running", [])) + list(body.get("queue_pending", []))
        return any(len(e) > 1 and e[1] == prompt_id for e in entries)

    # --- outputs ---------------------------------------------------------------------------
    def view(self, filename: str, *, subfolder: str = "", folder_type: str = "output") -> bytes | None:
        """Bytes of an output file via ``GET /view``, or None when ComfyUI answers 404."""
        query = urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        try:
            resp = self._http.get(self._url(f"/view?{query}"), timeout=max(self.timeout, 60.0))
        except NETWORK_ERRORS as exc:
            raise ComfyUnavailable(f"ComfyUI at {self.base_url} did not serve {filename}: {_short(exc)}") from exc
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise ComfyUnavailable(f"ComfyUI answered HTTP {resp.status_code} for {filename}")
        return resp.content

    # --- websocket -------------------------------------------------------------------------
    def open_socket(self, client_id: str, *, recv_timeout: float) -> websocket.WebSocket:
        """Connect ``/ws?clientId=``; receives time out after ``recv_timeout`` so loops can check flags.

        websocket-client checks each text frame's UTF-8 in pure Python (about 12 ms of CPU per job,
        shared with ComfyUI on a busy machine); the frames are decoded as UTF-8 anyway, so it is skipped.
        """
        url = self.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + f"/ws?clientId={client_id}"
        try:
            sock = websocket.create_connection(url, timeout=self.timeout, skip_utf8_validation=True)
        except NETWORK_ERRORS as exc:
            raise ComfyUnavailable(f"cannot open ComfyUI's websocket at {self.base_url}: {_short(exc)}") from exc
        sock.settimeout(recv_timeout)
        return sock

    def close(self) -> None:
        self._http.close()

    # --- helpers ---------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return self.base_url + path

    def _call(self, what: str, send: Callable[[], requests.Response], *, parse: bool = True) -> Any:
        try:
            resp = send()
        except NETWORK_ERRORS as exc:
            raise ComfyUnavailable(f"ComfyUI at {self.base_url} did not answer (trying to {what}): {_short(exc)}") from exc
        if resp.status_code != 200:
            raise ComfyUnavailable(f"ComfyUI answered HTTP {resp.status_code} (trying to {what}): {resp.text[:300]}")
        return resp.json() if parse else None


def format_prompt_error(body: Any, prompt: dict[str, Any]) -> str:
    """Turn a /prompt 400 body into one readable line per failing node input, bounded.

    Nodes are named by their role (``_meta.title``) and class, e.g.
    ``node 8 model_high_noise (UNETLoader): unet_name: Value not in list: 'x.safetensors' not in [...]``.
    Each node error is cut to :data:`MAX_NODE_ERROR_CHARS` and the whole to :data:`MAX_PROMPT_ERROR_CHARS`,
    the node errors left out counted.
    """
    if not isinstance(body, dict):
        return f"ComfyUI rejected the workflow: {_cut(str(body))}"
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    parts = [_cut(part) for part in _node_errors(body, prompt)]
    head = str(error.get("message") or error.get("type") or "ComfyUI rejected the workflow")
    if error.get("details") and not parts:
        head += f" ({error['details']})"
    head = _cut(head)
    return head + (": " + _joined(parts, MAX_PROMPT_ERROR_CHARS - len(head) - 2) if parts else "")


def _node_errors(body: dict[str, Any], prompt: dict[str, Any]) -> Iterator[str]:
    node_errors = body.get("node_errors")
    for node_id, node in (node_errors.items() if isinstance(node_errors, dict) else ()):
        if not isinstance(node, dict):
            continue
        meta = prompt.get(node_id, {}).get("_meta", {}) if isinstance(prompt.get(node_id), dict) else {}
        role = meta.get("title", "?")
        for err in node.get("errors") or []:
            if not isinstance(err, dict):
                continue
            extra = err.get("extra_info") if isinstance(err.get("extra_info"), dict) else {}
            name = extra.get("input_name")
            detail = str(err.get("details") or "")
            text = f"{err.get('message', err.get('type', 'error'))}" + (f": {detail}" if detail and detail != name else "")
            where = f"{name}: " if name and not detail.startswith(f"{name}:") else ""
            yield f"node {node_id} {role} ({node.get('class_type', '?')}): {where}{text}"


def _joined(parts: list[str], room: int) -> str:
    """``parts`` joined by ``; `` within ``room`` characters, ending with how many were left out."""
    shown: list[str] = []
    for index, part in enumerate(parts):
        count_room = 0 if index == len(parts) - 1 else len(f"; and {len(parts)} more node errors")
        if len("; ".join([*shown, part])) + count_room > room:
            break
        shown.append(part)
    left_out = len(parts) - len(shown)
    return "; ".join(shown + ([f"and {left_out} more node errors"] if left_out else []))


def _cut(text: str, limit: int = MAX_NODE_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_or_text(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text


def _short(exc: BaseException) -> str:
    """A one-line description of a network error (requests' messages nest several reprs)."""
    text = str(exc) or type(exc).__name__
    for marker in ("Connection refused", "Name or service not known", "No route to host", "Connection reset"):
        if marker in text:
            return marker.lower()
    if isinstance(exc, (requests.Timeout, TimeoutError, websocket.WebSocketTimeoutException)):
        return "timed out"
    return text.splitlines()[0][:200]

