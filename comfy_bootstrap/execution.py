"""Run one prompt on ComfyUI and follow it over the websocket until it is settled.

The order matters and follows the recordings: the socket is opened *before* ``POST /prompt``
(messages sent while a client has no socket are lost), the prompt id is generated here (ComfyUI
v0.30.0 wants a lowercase UUID), and completion is ``executing`` with ``node: null`` for our
prompt, which ComfyUI sends after history is written.

Everything here blocks; it runs in a worker thread. ``stop`` (set on job cancellation) and the
deadline are checked after every receive, which times out every ``poll`` seconds, so the thread
ends promptly. On cancel or timeout the prompt is interrupted *and* deleted from the queue (an
interrupt only affects the running prompt; ours may still be pending).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import websocket

from comfy_bootstrap import messages as m
from comfy_bootstrap.client import NETWORK_ERRORS, ComfyClient
from comfy_bootstrap.errors import ComfyUnavailable, ExecutionFailed, ExecutionInterrupted, ExecutionTimeout

log = logging.getLogger(__name__)

#: How long to wait for ComfyUI to confirm an interrupt before declaring it unresponsive.
INTERRUPT_GRACE = 10.0


@dataclass
class RunResult:
    """A finished prompt: its history entry and when it started and ended (monotonic seconds)."""

    prompt_id: str
    history: dict[str, Any]
    queued_at: float
    started_at: float | None
    finished_at: float
    reconnects: int = 0

    @property
    def outputs(self) -> dict[str, Any]:
        return self.history.get("outputs") or {}

    @property
    def execution_seconds(self) -> float:
        """ComfyUI's own time for the prompt, from ``execution_start`` to completion."""
        return self.finished_at - (self.started_at if self.started_at is not None else self.queued_at)


@dataclass
class RunOptions:
    timeout: float
    #: When the run must end (``time.monotonic()``); None: ``timeout`` seconds from the queueing.
    deadline: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    on_message: Callable[[m.Message], None] = lambda _msg: None
    reconnect_attempts: int = 5
    poll: float = 0.5


class StopRequested(Exception):
    """Internal: the stop flag or the deadline fired; the caller interrupts and reports."""


def run_prompt(client: ComfyClient, prompt: dict[str, Any], options: RunOptions) -> RunResult:
    """Queue ``prompt`` and follow it to the end; raise a ComfyError subclass on any failure."""
    return _PromptRun(client, prompt, options).run()


class _PromptRun:
    def __init__(self, client: ComfyClient, prompt: dict[str, Any], options: RunOptions):
        self.client = client
        self.prompt = prompt
        self.opt = options
        self.client_id = str(uuid.uuid4())
        self.prompt_id = str(uuid.uuid4())
        self.deadline = options.deadline if options.deadline is not None else time.monotonic() + options.timeout
        self.started_at: float | None = None
        self.reconnects = 0
        self.sock: websocket.WebSocket | None = None

    def run(self) -> RunResult:
        self.sock = self.client.open_socket(self.client_id, recv_timeout=self.opt.poll)
        try:
            self.client.queue_prompt(self.prompt, client_id=self.client_id, prompt_id=self.prompt_id)
            queued_at = time.monotonic()
            log.info("queued prompt %s", self.prompt_id)
            try:
                self._follow()
            except StopRequested:
                self._abort()
            history = self._settled_history()
            return RunResult(self.prompt_id, history, queued_at, self.started_at, time.monotonic(), self.reconnects)
        finally:
            self._close_socket()

    # --- following --------------------------------------------------------------------------
    def _follow(self) -> None:
        """Read messages until our prompt is done; reconnect when the socket drops."""
        while True:
            self._check_stop()
            try:
                text = self.sock.recv() if self.sock else None
            except websocket.WebSocketTimeoutException:
                continue
            except NETWORK_ERRORS as exc:
                log.warning("websocket dropped during prompt %s: %s", self.prompt_id, exc)
                if self._reconnect():
                    return  # finished while we were away: settle from history
                continue
            if not text or isinstance(text, bytes):
                continue  # binary frames are previews (off) — nothing to act on
            if self._handle(m.parse_message(text)):
                return

    def _handle(self, msg: m.Message) -> bool:
        """Act on one message; True when our prompt has completed successfully."""
        pid = getattr(msg, "prompt_id", None)
        if pid is not None and pid != self.prompt_id:
            return False
        if isinstance(msg, m.ExecutionStart):
            self.started_at = time.monotonic()
        elif isinstance(msg, m.ExecutionError):
            raise ExecutionFailed(
                _describe_error(msg),
                exception_type=msg.exception_type,
                exception_message=msg.exception_message,
                node_type=msg.node_type,
            )
        elif isinstance(msg, m.ExecutionInterrupted):
            raise ExecutionInterrupted(f"ComfyUI interrupted the prompt at node {msg.node_id} ({msg.node_type})")
        self.opt.on_message(msg)
        return isinstance(msg, m.Executing) and msg.node is None and pid == self.prompt_id

    def _check_stop(self) -> None:
        if self.opt.stop.is_set() or time.monotonic() > self.deadline:
            raise StopRequested

    # --- reconnect ----------------------------------------------------------------------------
    def _reconnect(self) -> bool:
        """Reopen the socket with backoff while HTTP answers; True if the prompt already finished.

        Messages sent while we were away are lost (recorded), so after reconnecting the history
        tells whether the prompt ended in the meantime.
        """
        self._close_socket()
        delay = 0.25
        for attempt in range(1, self.opt.reconnect_attempts + 1):
            self._check_stop()
            if not self.client.is_answering():
                raise ComfyUnavailable("ComfyUI stopped answering during the job (it may have crashed or run out of memory)")
            try:
                self.sock = self.client.open_socket(self.client_id, recv_timeout=self.opt.poll)
            except ComfyUnavailable:
                log.info("websocket reconnect attempt %d failed; retrying in %.2fs", attempt, delay)
                time.sleep(delay)
                delay = min(delay * 2, 4.0)
                continue
            self.reconnects += 1
            log.info("websocket reconnected (attempt %d)", attempt)
            return self._finished_in_history()
        raise ComfyUnavailable(f"lost ComfyUI's websocket and could not reconnect after {self.opt.reconnect_attempts} attempts")

    def _finished_in_history(self) -> bool:
        entry = self.client.history(self.prompt_id)
        if entry is None:
            return False
        self._raise_for_history_status(entry)
        return True

    # --- settling -----------------------------------------------------------------------------
    def _settled_history(self) -> dict[str, Any]:
        entry = self.client.history(self.prompt_id)
        if entry is None:
            raise ComfyUnavailable(f"prompt {self.prompt_id} finished but ComfyUI has no history for it")
        self._raise_for_history_status(entry)
        return entry

    def _raise_for_history_status(self, entry: dict[str, Any]) -> None:
        status = entry.get("status") or {}
        if status.get("status_str") != "error":
            return
        for kind, data in status.get("messages", []):
            msg = m.parse_message_dict(kind, data)
            if isinstance(msg, (m.ExecutionError, m.ExecutionInterrupted)):
                self._handle(msg)  # raises the matching error
        raise ExecutionFailed("ComfyUI reports the prompt failed without an error message")

    # --- abort --------------------------------------------------------------------------------
    def _abort(self) -> NoReturn:
        """Interrupt and dequeue our prompt, wait briefly for ComfyUI to confirm, then raise."""
        cancelled = self.opt.stop.is_set()
        what = "cancelled" if cancelled else f"ran past the job timeout of {self.opt.timeout:g} s"
        log.warning("prompt %s %s: interrupting it", self.prompt_id, what)
        confirmed = self._interrupt_and_wait()
        if cancelled:
            raise ExecutionInterrupted("the job was cancelled; ComfyUI's prompt was interrupted")
        raise ExecutionTimeout(
            f"the video was not ready within the job timeout of {self.opt.timeout:g} s (JOB_TIMEOUT); "
            "try fewer frames, a smaller size or fewer steps, or raise JOB_TIMEOUT and the endpoint's execution timeout",
            unresponsive=not confirmed,
        )

    def _interrupt_and_wait(self) -> bool:
        """True when ComfyUI confirmed the prompt stopped within INTERRUPT_GRACE seconds."""
        try:
            self.client.delete_from_queue(self.prompt_id)
            self.client.interrupt(self.prompt_id)
        except ComfyUnavailable as exc:
            log.error("could not interrupt prompt %s: %s", self.prompt_id, exc)
            return False
        end = time.monotonic() + INTERRUPT_GRACE
        while time.monotonic() < end:
            if self.sock is not None:
                try:
                    text = self.sock.recv()
                except websocket.WebSocketTimeoutException:
                    text = None
                except NETWORK_ERRORS:
                    self._close_socket()
                    text = None
                if isinstance(text, str) and _ends_prompt(m.parse_message(text), self.prompt_id):
                    return True
            else:
                time.sleep(self.opt.poll)
            if self.client.history(self.prompt_id) is not None or not self._still_queued():
                return True
        return False

    def _still_queued(self) -> bool:
        """After a delete from the queue, a pending prompt is gone; a running one still shows."""
        try:
            return self.client.is_running_or_pending(self.prompt_id)
        except ComfyUnavailable:
            return True

    def _close_socket(self) -> None:
        """Send the close frame and go: waiting for ComfyUI's reply, which it sends only once its
        event loop is free again after a prompt, cost a job several ms (up to tens)."""
        if self.sock is not None:
            try:
                self.sock.close(timeout=0)
            except Exception:  # closing a broken socket must never mask the real error
                pass
            self.sock = None


def _ends_prompt(msg: m.Message, prompt_id: str) -> bool:
    if isinstance(msg, (m.ExecutionInterrupted, m.ExecutionError, m.ExecutionSuccess)):
        return msg.prompt_id == prompt_id
    return isinstance(msg, m.Executing) and msg.node is None and msg.prompt_id == prompt_id


def _describe_error(msg: m.ExecutionError) -> str:
    """``node 14 (KSamplerAdvanced) raised torch.OutOfMemoryError: CUDA out of memory ...``."""
    text = msg.exception_message.strip().splitlines()[0][:500] if msg.exception_message.strip() else "(no message)"
    return f"node {msg.node_id} ({msg.node_type}) raised {msg.exception_type}: {text}"
