"""The websocket side of ComfyUI's ``PromptServer``: clients, ordered publishing, reconnects.

Faithful details that clients depend on:

- one socket per ``clientId``: a new connection with the same id replaces the old one in the table,
  and *any* socket of that id closing removes the entry (ComfyUI pops by id) - so a client must close
  its old socket before opening the new one, or it may lose messages;
- messages for a client without a socket are dropped (no replay);
- on connect: ``status`` with ``sid``, then, if this client's prompt is running,
  ``executing {"node": <current>}`` without ``prompt_id`` (``ws_reconnect_midrun.jsonl``);
- messages from the executor thread go through one asyncio queue, so their order is kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from .observations import Observations

logger = logging.getLogger(__name__)

#: What the server answers to a client's ``feature_flags`` message.
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}


class WebSocketHub:
    """Sockets by client id and a publisher task draining the message queue in order."""

    def __init__(
        self,
        observations: Observations,
        queue_info: Callable[[], dict[str, Any]],
        running_client: Callable[[], tuple[str | None, str | None]],
    ) -> None:
        self._observations = observations
        self._queue_info = queue_info
        self._running_client = running_client
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self._open: set[web.WebSocketResponse] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._messages: asyncio.Queue[tuple[Any, ...]] | None = None
        self._publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._messages = asyncio.Queue()
        self._publisher = self._loop.create_task(self._publish())

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
        await self._close_all()

    # -- thread-safe entry points (executor thread, HTTP handlers) -------------------------------

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        """Queue a message for ``sid`` (None = every socket), keeping the order of calls."""
        self._call_soon(("send", event, data, sid))

    def close_all_sync(self) -> None:
        """Queue "close every socket" behind the messages already queued."""
        self._call_soon(("close_all",))

    def block_loop_sync(self, release: threading.Event, seconds: float | None) -> None:
        """Freeze: block the event loop until ``release`` is set (or ``seconds`` pass)."""
        if self._loop is None or self._loop.is_closed():
            return

        def block() -> None:
            logger.warning("comfy_double: freeze fault: event loop blocked")
            release.wait(seconds)
            logger.warning("comfy_double: freeze fault: event loop released")

        try:
            self._loop.call_soon_threadsafe(block)
        except RuntimeError:
            pass

    def _call_soon(self, item: tuple[Any, ...]) -> None:
        loop, messages = self._loop, self._messages
        if loop is None or messages is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(messages.put_nowait, item)
        except RuntimeError:  # loop closed between the check and the call (shutdown)
            pass

    # -- loop side ---------------------------------------------------------------------------------

    async def _publish(self) -> None:
        assert self._messages is not None
        while True:
            item = await self._messages.get()
            if item[0] == "send":
                await self.send(item[1], item[2], item[3])
            elif item[0] == "close_all":
                logger.warning("comfy_double: ws_drop fault: closing every websocket")
                await self._close_all()

    async def send(self, event: str, data: Any, sid: str | None = None) -> None:
        message = {"type": event, "data": data}
        if sid is None:
            targets = list(self.sockets.values())
        elif sid in self.sockets:
            targets = [self.sockets[sid]]
        else:
            return
        for ws in targets:
            try:
                await ws.send_json(message)
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as err:
                logger.warning("send error: %s", err)

    async def _close_all(self) -> None:
        for ws in list(self._open):
            try:
                await ws.close()
            except (aiohttp.ClientError, ConnectionError, RuntimeError):
                pass

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """``GET /ws?clientId=...``."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "")
        if sid:
            self.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self._open.add(ws)
        record = self._observations.add(
            "ws_connections",
            client_id=sid,
            given_client_id=bool(request.query.get("clientId")),
            closed_at=None,
        )
        try:
            await self.send("status", {"status": self._queue_info(), "sid": sid}, sid)
            client_id, last_node = self._running_client()
            if client_id == sid and last_node is not None:
                await self.send("executing", {"node": last_node}, sid)
            first = True
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT and first:
                    await self._maybe_feature_flags(msg.data, sid)
                first = False
        finally:
            self.sockets.pop(sid, None)
            self._open.discard(ws)
            self._observations.update(record, closed_at=time.time())
        return ws

    async def _maybe_feature_flags(self, text: str, sid: str) -> None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            logger.warning("Invalid JSON received from client %s: %s", sid, text)
            return
        if isinstance(data, dict) and data.get("type") == "feature_flags":
            await self.send("feature_flags", dict(SERVER_FEATURES), sid)
