"""The HTTP API: ComfyUI's routes (also under ``/api``) plus the double's ``/__double__`` controls.

Status codes, bodies and content types follow the recordings: JSON answers are
``application/json; charset=utf-8``; ``POST /interrupt``, ``POST /queue`` and the 404s of ``/view``
and ``/models/{folder}`` have an empty body and no content type.

Control API (not part of ComfyUI; also available as ``DoubleServer`` methods):

- ``POST /__double__/faults``: a fault object (see ``faults.py``), a list of them, or
  ``{"faults": [...]}``; answers ``{"faults": [<active faults>]}``, or 400 ``{"error": ...}``.
- ``GET /__double__/faults``: ``{"faults": [...]}`` (each with its remaining ``times``).
- ``POST /__double__/reset``: optional body ``{"faults": true, "observations": true,
  "history": false, "cache": false, "queue": false}`` (the defaults); resetting faults also releases
  a ``hang``/``freeze``. Answers ``{"reset": [<what was reset>]}``.
- ``GET /__double__/state``: what the double saw (``prompts``, ``uploads``, ``interrupts``,
  ``queue_requests``, ``ws_connections``, ``views``, ``executions``), the ``files`` now in
  input/output/temp, active ``faults``, ``queue`` ids, ``history_ids``, ``connected_clients``,
  ``running_prompt_id``, ``frozen``, ``crashed`` and the resolved ``folders``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import mimetypes
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from . import recordings
from .executor import PromptExecutor
from .faults import FaultBoard, FaultSpecError, parse_faults
from .folders import Folders
from .hub import WebSocketHub
from .node_defs import NodeCatalog
from .observations import Observations
from .prompt_queue import PromptQueue, QueueItem
from .validation import PromptValidator

logger = logging.getLogger(__name__)

#: ComfyUI v0.30.0 only accepts a client-supplied prompt_id in this form.
_CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

#: ``execution.SENSITIVE_EXTRA_DATA_KEYS``: kept out of the queue and the history.
_SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _nosniff(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ComfyUI adds ``X-Content-Type-Options: nosniff`` (see ``view_mp4_response.json``)."""
    response = await handler(request)
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


class DoubleApp:
    """Everything one double instance shares: folders, queue, executor, sockets, faults, log."""

    def __init__(
        self,
        folders: Folders,
        *,
        argv: list[str],
        on_crash: Callable[[int], None],
        disable_metadata: bool = False,
    ) -> None:
        self.folders = folders
        self.argv = argv
        self.catalog = NodeCatalog(folders)
        self.validator = PromptValidator(self.catalog, folders)
        self.observations = Observations()
        self.faults = FaultBoard()
        self.queue = PromptQueue(on_update=self._queue_updated)
        self.hub = WebSocketHub(
            self.observations,
            queue_info=self.queue_info,
            running_client=lambda: (self.executor.client_id, self.executor.last_node_id),
        )
        self.executor = PromptExecutor(
            queue=self.queue,
            hub=self.hub,
            catalog=self.catalog,
            folders=folders,
            faults=self.faults,
            observations=self.observations,
            on_crash=on_crash,
            disable_metadata=disable_metadata,
        )
        self.crashed = False
        self._number = 0
        self.web_app = self._make_app()

    # -- shared helpers -----------------------------------------------------------------------------

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def _queue_updated(self) -> None:
        self.hub.send_sync("status", {"status": self.queue_info()})

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=100 * 1024 * 1024, middlewares=[_nosniff])
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/ws", self.hub.handle),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.post_interrupt),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_id),
            ("POST", "/history", self.post_history),
            ("GET", "/view", self.view),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/object_info", self.object_info),
            ("GET", "/object_info/{node_class}", self.object_info_node),
            ("GET", "/models", self.models),
            ("GET", "/models/{folder}", self.models_folder),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/embeddings", self.empty_list),
            ("GET", "/extensions", self.empty_list),
            ("POST", "/free", self.empty_ok),
        ]
        for method, path, handler in routes:
            for prefix in ("/api", ""):
                if method == "GET":  # add_get also answers HEAD, as aiohttp's RouteTableDef does
                    app.router.add_get(prefix + path, handler)
                else:
                    app.router.add_route(method, prefix + path, handler)
        app.router.add_get("/", self.index)
        app.router.add_get("/__double__/state", self.double_state)
        app.router.add_get("/__double__/faults", self.double_get_faults)
        app.router.add_post("/__double__/faults", self.double_post_faults)
        app.router.add_post("/__double__/reset", self.double_reset)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        await self.hub.start()

    async def _on_shutdown(self, _app: web.Application) -> None:
        """Close the websockets first: shutdown then does not wait for their handlers."""
        await self.hub.stop()

    # -- prompts ------------------------------------------------------------------------------------

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        logger.info("got prompt")
        body = await request.json()
        record = self.observations.add("prompts", body=copy.deepcopy(body), status=None, prompt_id=None)
        if not isinstance(body, dict):
            self.observations.update(record, status=500)
            return web.Response(status=500, text="500 Internal Server Error")
        if "number" in body:
            number: float = float(body["number"])
        else:
            number = self._number
            if body.get("front"):
                number = -number
            self._number += 1

        if "prompt" not in body:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided", "extra_info": {}}
            return self._reject(record, error)
        if "prompt_id" in body and not (isinstance(body["prompt_id"], str) and _CANONICAL_UUID.match(body["prompt_id"])):
            error = {
                "type": "invalid_prompt_id",
                "message": "Invalid prompt_id",
                "details": "prompt_id must be a lowercase canonical UUID "
                f"(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), got {body['prompt_id']!r}",
                "extra_info": {},
            }
            return self._reject(record, error)

        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        if not isinstance(prompt, dict):
            self.observations.update(record, status=500)
            return web.Response(status=500, text="500 Internal Server Error")
        result = self.validator.validate(prompt, body.get("partial_execution_targets"))
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not result.valid:
            return self._reject(record, result.error or {}, result.node_errors)
        for key in _SENSITIVE_EXTRA_DATA_KEYS:
            extra_data.pop(key, None)
        extra_data["create_time"] = int(time.time() * 1000)
        self.queue.put(QueueItem(number, prompt_id, prompt, extra_data, result.outputs))
        self.observations.update(record, status=200, prompt_id=prompt_id, number=number)
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})

    def _reject(self, record: dict[str, Any], error: dict[str, Any], node_errors: dict[str, Any] | None = None) -> web.Response:
        logger.warning("invalid prompt: %s", error)
        self.observations.update(record, status=400, error=error, node_errors=node_errors or {})
        return web.json_response({"error": error, "node_errors": node_errors or {}}, status=400)

    async def get_queue(self, request: web.Request) -> web.Response:
        return web.json_response({"queue_running": self.queue.running_items(), "queue_pending": self.queue.pending_items()})

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        deleted: list[str] = []
        if body.get("clear"):
            self.queue.wipe()
        for prompt_id in body.get("delete", []):
            if self.queue.delete(prompt_id):
                deleted.append(prompt_id)
        self.observations.add("queue_requests", body=body, deleted=deleted)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        running = self.executor.running_prompt_id
        if prompt_id:
            effective = self.queue.is_running(prompt_id)
            if effective:
                logger.info("Interrupting prompt %s", prompt_id)
                self.executor.interrupt()
            else:
                logger.info("Prompt %s is not currently running, skipping interrupt", prompt_id)
        else:
            logger.info("Global interrupt (no prompt_id specified)")
            self.executor.interrupt()
            effective = running is not None
        self.observations.add("interrupts", prompt_id=prompt_id, running=running, effective=effective)
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        max_items = request.query.get("max_items")
        offset = request.query.get("offset")
        return web.json_response(
            self.queue.history(
                max_items=int(max_items) if max_items is not None else None,
                offset=int(offset) if offset is not None else -1,
            )
        )

    async def get_history_id(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue.history(prompt_id=request.match_info["prompt_id"]))

    async def post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.queue.wipe_history()
        for prompt_id in body.get("delete", []):
            self.queue.delete_history(prompt_id)
        return web.Response(status=200)

    # -- files --------------------------------------------------------------------------------------

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        record = self.observations.add("views", query=dict(query), status=None)
        response = self._view(query)
        self.observations.update(record, status=response.status)
        return response

    def _view(self, query: Any) -> web.StreamResponse:
        if "filename" not in query:
            return web.Response(status=404)
        filename = query["filename"]
        directory: Path | None = None
        for suffix, folder in ((" [output]", "output"), (" [input]", "input"), (" [temp]", "temp")):
            if filename.endswith(suffix):
                filename = filename[: -len(suffix)]
                directory = self.folders.directory_by_type(folder)
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if directory is None:
            directory = self.folders.directory_by_type(query.get("type", "output"))
        if directory is None:
            return web.Response(status=400)
        if "subfolder" in query:
            full = os.path.join(directory, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full), str(directory))) != str(directory):
                return web.Response(status=403)
            directory = Path(full)
        filename = os.path.basename(filename)
        path = directory / filename
        if not path.is_file():
            return web.Response(status=404)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}:
            content_type = "application/octet-stream"
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{filename}"', "Content-Type": content_type})

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        overwrite = post.get("overwrite")
        kind = post.get("type") or "input"
        record = self.observations.add(
            "uploads", type=kind, overwrite=overwrite, subfolder=post.get("subfolder", ""), status=None
        )
        upload_dir = self.folders.directory_by_type(str(kind))
        if upload_dir is None:  # ComfyUI fails with UnboundLocalError here
            self.observations.update(record, status=500)
            return web.Response(status=500, text="500 Internal Server Error")
        if not isinstance(image, web.FileField) or not image.filename:
            self.observations.update(record, status=400)
            return web.Response(status=400)
        data = image.file.read()
        subfolder = str(post.get("subfolder", ""))
        filename = image.filename
        full_folder = os.path.join(upload_dir, os.path.normpath(subfolder))
        filepath = os.path.abspath(os.path.join(full_folder, filename))
        if os.path.commonpath((str(upload_dir), filepath)) != str(upload_dir):
            self.observations.update(record, status=400)
            return web.Response(status=400)
        os.makedirs(full_folder, exist_ok=True)
        duplicate = False
        if overwrite not in ("true", "1"):
            stem, ext = os.path.splitext(filename)
            index = 1
            while os.path.exists(filepath):
                if _same_bytes(filepath, data):
                    duplicate = True
                    break
                filename = f"{stem} ({index}){ext}"
                filepath = os.path.join(full_folder, filename)
                index += 1
        if not duplicate:
            with open(filepath, "wb") as stream:
                stream.write(data)
        self.observations.update(
            record,
            status=200,
            name=filename,
            original_name=image.filename,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            duplicate=duplicate,
        )
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    # -- node and model information ------------------------------------------------------------------

    async def object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.catalog.all_info())

    async def object_info_node(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        return web.json_response({name: self.catalog.info(name)} if self.catalog.has(name) else {})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(self.folders.folder_names())

    async def models_folder(self, request: web.Request) -> web.Response:
        files = self.folders.list_models(request.match_info["folder"])
        return web.Response(status=404) if files is None else web.json_response(files)

    async def system_stats(self, request: web.Request) -> web.Response:
        stats = recordings.system_stats()
        stats["system"]["argv"] = list(self.argv)
        return web.json_response(stats)

    async def empty_list(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def empty_ok(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>ComfyUI</title><p>comfy_double: ComfyUI test double</p>",
            content_type="text/html",
        )

    # -- /__double__ controls ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What ``GET /__double__/state`` returns (also ``DoubleServer.state()``)."""
        return {
            **self.observations.snapshot(),
            "files": self.folders.snapshot(),
            "faults": self.faults.active(),
            "queue": {
                "running": [i[1] for i in self.queue.running_items()],
                "pending": [i[1] for i in self.queue.pending_items()],
            },
            "history_ids": self.queue.history_ids(),
            "connected_clients": list(self.hub.sockets),
            "running_prompt_id": self.executor.running_prompt_id,
            "frozen": self.executor.frozen,
            "crashed": self.crashed,
            "folders": {
                "input": str(self.folders.input_dir),
                "output": str(self.folders.output_dir),
                "temp": str(self.folders.temp_dir),
                "models": {n: [str(p) for p in f.paths] for n, f in self.folders.model_folders.items()},
            },
        }

    def add_faults(self, spec: Any) -> list[dict[str, Any]]:
        """Arm faults (``POST /__double__/faults``); immediate freeze/crash act now."""
        faults = parse_faults(spec)
        later = []
        for fault in faults:
            if fault.immediate and fault.mode == "freeze":
                logger.warning("comfy_double: immediate freeze fault")
                self.executor.freeze_now(fault.seconds)
            elif fault.immediate and fault.mode == "crash":
                logger.error("comfy_double: immediate crash fault")
                self.executor.on_crash(fault.exit_code)
            else:
                later.append(fault)
        self.faults.add(later)
        return self.faults.active()

    def reset(
        self,
        *,
        faults: bool = True,
        observations: bool = True,
        history: bool = False,
        cache: bool = False,
        queue: bool = False,
    ) -> list[str]:
        """Clear faults (and release a hang/freeze), the log; optionally history/cache/queue."""
        done = []
        if faults:
            self.faults.clear()
            self.executor.release_blocks()
            done.append("faults")
        if observations:
            self.observations.clear()
            done.append("observations")
        if history:
            self.queue.wipe_history()
            done.append("history")
        if cache:
            self.executor.cache.clear()
            done.append("cache")
        if queue:
            self.queue.wipe()
            done.append("queue")
        return done

    async def double_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def double_get_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": self.faults.active()})

    async def double_post_faults(self, request: web.Request) -> web.Response:
        try:
            spec = await request.json()
            active = self.add_faults(spec)
        except (ValueError, FaultSpecError) as ex:
            return web.json_response({"error": str(ex)}, status=400)
        return web.json_response({"faults": active})

    async def double_reset(self, request: web.Request) -> web.Response:
        body: Any = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        allowed = {"faults", "observations", "history", "cache", "queue"}
        unknown = set(body) - allowed
        if unknown:
            return web.json_response({"error": f"unknown reset keys {sorted(unknown)}"}, status=400)
        done = self.reset(**{k: bool(v) for k, v in body.items()})
        return web.json_response({"reset": done})


def _same_bytes(path: str, data: bytes) -> bool:
    """ComfyUI compares hashes to avoid saving the same image twice under new names."""
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read()).digest() == hashlib.sha256(data).digest()
