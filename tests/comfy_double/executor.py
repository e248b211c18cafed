"""Running prompts: one at a time, on a worker thread, with ComfyUI's message sequence.

Per prompt (``PromptRun``), mirroring ``PromptExecutor.execute`` and ``main.prompt_worker``:
``execution_start``, ``execution_cached`` (nodes whose signature is in the cache), then for each node
in ComfyUI's order ``progress_state`` (running), ``executing``, its ``progress``/``progress_state``
updates, ``executed`` (output nodes), ``progress_state`` (finished); then ``execution_success`` - or
``execution_error`` / ``execution_interrupted`` - the history entry, a ``status`` broadcast, and
``executing {"node": null}`` last. ``execution_*`` events also go to the history's ``messages``.

Messages go to the client that queued the prompt; without a ``client_id`` only ``progress``,
``progress_state`` and ``execution_interrupted`` are sent, to everyone (ComfyUI's ``sid=None``).

The cache keeps results by signature across prompts (ComfyUI's default RAM cache): a node whose
inputs, recursively, equal an earlier node's is not executed; a cached output node re-sends its old
``executed`` payload and writes no file, so history points at the earlier file.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from .faults import ArmedFaults, Fault, FaultBoard
from .folders import Folders
from .graph import NEVER_EQUAL, ExecutionOrder, is_link, node_signatures
from .hub import WebSocketHub
from .node_defs import INPUT_FILE_LOADERS, NodeCatalog
from .observations import Observations
from .prompt_queue import PromptQueue, QueueItem
from .registry import ACCEPTS_ANY_INPUT, NODE_FUNCTIONS, PROGRESS_CLASSES
from .validation import full_type_name
from .values import NodeContext

logger = logging.getLogger(__name__)

#: ComfyUI appends these tips to the message of an out-of-memory error.
OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before "
    "you might have accidentally set the batch_size to a large number."
)

_CACHE_SIZE = 512


class ExecutionInterrupted(Exception):
    """``comfy.model_management.InterruptProcessingException``."""


class SimulatedNodeError(Exception):
    """A ``runtime_error`` fault: reported with the fault's exception type name."""

    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type


class RunAborted(BaseException):
    """Unwinds the executor thread: the server is shutting down or "crashed" in-process."""


@dataclass
class CachedResult:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None


class NodeCache:
    """Results by signature, least recently used evicted first.

    Used by the executor thread; ``reset(cache=True)`` clears it from the HTTP thread, hence the lock.
    """

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, CachedResult] = OrderedDict()

    def get(self, key: Hashable) -> CachedResult | None:
        with self._lock:
            try:
                entry = self._entries.pop(key)
            except (KeyError, TypeError):
                return None
            self._entries[key] = entry
            return entry

    def has(self, key: Hashable) -> bool:
        with self._lock:
            try:
                return key in self._entries
            except TypeError:
                return False

    def put(self, key: Hashable, entry: CachedResult) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = entry
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _timestamp() -> int:
    return int(time.time() * 1000)


def format_value(value: Any) -> Any:
    """``execution.format_value``: JSON scalars as they are, anything else as ``str``."""
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


class PromptExecutor:
    """Owns the worker thread, the cache, the interrupt flag and the fault-release event."""

    def __init__(
        self,
        *,
        queue: PromptQueue,
        hub: WebSocketHub,
        catalog: NodeCatalog,
        folders: Folders,
        faults: FaultBoard,
        observations: Observations,
        on_crash: Callable[[int], None],
        disable_metadata: bool = False,
    ) -> None:
        self.queue = queue
        self.disable_metadata = disable_metadata  # ComfyUI's --disable-metadata (SaveImage)
        self.hub = hub
        self.catalog = catalog
        self.folders = folders
        self.faults = faults
        self.observations = observations
        self.on_crash = on_crash
        self.cache = NodeCache()
        self.process_state: dict[str, Any] = {}  # what node packs keep loaded (NodeContext.process)
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.running_prompt_id: str | None = None
        self.frozen = False
        self._interrupt = threading.Event()
        self._release = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="comfy-double-executor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._release.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.1)
            if item is None:
                continue
            try:
                PromptRun(self, item).run()
            except RunAborted:
                logger.warning("comfy_double: executor stopped while running %s", item.prompt_id)
                return

    # -- controls used by the HTTP side ---------------------------------------------------------------

    def interrupt(self) -> None:
        """``nodes.interrupt_processing()``: checked before each node and at each progress step."""
        self._interrupt.set()

    def release_blocks(self) -> None:
        """End a ``hang`` or ``freeze`` (reset/close); later faults get a fresh event."""
        old, self._release = self._release, threading.Event()
        old.set()
        self.frozen = False

    def freeze_now(self, seconds: float | None) -> None:
        """Block the event loop at once (``{"mode": "freeze", "immediate": true}``)."""
        self.frozen = True
        self.hub.block_loop_sync(self._release, seconds)

    def freeze_here(self, seconds: float | None) -> None:
        """Freeze mid-run: block the event loop *and* this thread until released or timed out."""
        self.freeze_now(seconds)
        self.block(seconds)
        self.frozen = False

    # -- helpers used by PromptRun ----------------------------------------------------------------------

    def check_interrupt(self) -> None:
        if self._stop.is_set():
            raise RunAborted()
        if self._interrupt.is_set():
            self._interrupt.clear()
            raise ExecutionInterrupted()

    def clear_interrupt(self) -> None:
        self._interrupt.clear()

    def sleep(self, seconds: float) -> None:
        """Wait, waking early on interrupt or stop (the caller then checks the flags)."""
        deadline = time.monotonic() + seconds
        while not self._interrupt.is_set() and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._interrupt.wait(min(remaining, 0.05))

    def block(self, seconds: float | None = None) -> None:
        """Hang until released (reset/close), ``seconds`` pass, or the executor stops."""
        release = self._release
        deadline = None if seconds is None else time.monotonic() + seconds
        while not release.is_set() and not self._stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            release.wait(0.05)
        if self._stop.is_set():
            raise RunAborted()

    def crash(self, exit_code: int) -> None:
        self.on_crash(exit_code)
        raise RunAborted()


class PromptRun:
    """The execution of one queued prompt."""

    def __init__(self, executor: PromptExecutor, item: QueueItem) -> None:
        self.ex = executor
        self.item = item
        self.prompt_id = item.prompt_id
        self.prompt: dict[str, Any] = item.prompt
        self.client_id: str | None = item.extra_data.get("client_id")
        self.status_messages: list[list[Any]] = []
        self.executed: set[str] = set()
        self.progress_nodes: dict[str, dict[str, Any]] = {}
        self.fired: set[int] = set()
        self.armed: ArmedFaults = ArmedFaults([])
        self.signatures: dict[str, Hashable] = {}
        self.values: dict[str, tuple[Any, ...]] = {}

    # -- messages -------------------------------------------------------------------------------------

    def send(self, event: str, data: Any) -> None:
        """Client-only messages (``executing``, ``executed``): dropped without a client id."""
        if self.client_id is not None:
            self.ex.hub.send_sync(event, data, self.client_id)

    def send_progress(self, event: str, data: Any) -> None:
        """``progress``/``progress_state``: to the client, or to everyone without a client id."""
        self.ex.hub.send_sync(event, data, self.client_id)

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": _timestamp()}
        self.status_messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.ex.hub.send_sync(event, data, self.client_id)

    def _progress_entry(self, node_id: str) -> dict[str, Any]:
        """ComfyUI's ``ensure_entry``: a node never started (served from the cache) keeps the
        integers ``0``/``1``, so it finishes as ``1``/``1`` (nodes 18, 19 of
        ``flf2v_lora_lastframe_ws.jsonl``); a started node has ``0.0``/``1.0``."""
        if node_id not in self.progress_nodes:
            self.progress_nodes[node_id] = {
                "value": 0,
                "max": 1,
                "state": "pending",
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
        return self.progress_nodes[node_id]

    def _publish_progress_state(self) -> None:
        self.send_progress("progress_state", {"prompt_id": self.prompt_id, "nodes": copy.deepcopy(self.progress_nodes)})

    def progress_start(self, node_id: str) -> None:
        entry = self._progress_entry(node_id)
        entry.update(value=0.0, max=1.0, state="running")
        self._publish_progress_state()

    def progress_finish(self, node_id: str) -> None:
        entry = self._progress_entry(node_id)
        entry.update(state="finished", value=entry["max"])
        self._publish_progress_state()

    # -- the run --------------------------------------------------------------------------------------

    def run(self) -> None:
        started = time.perf_counter()
        self.ex.clear_interrupt()
        self.ex.client_id = self.client_id
        self.ex.running_prompt_id = self.prompt_id
        self.armed = self.ex.faults.arm_for_prompt()
        if self.armed.faults:
            logger.warning("comfy_double: faults for %s: %s", self.prompt_id, [f.mode for f in self.armed.faults])
        try:
            success = self._execute()
        except RunAborted:
            raise
        except Exception:  # a bug of the double must not wedge its queue
            logger.exception("comfy_double: internal error while running %s", self.prompt_id)
            success = False
        result = self._history_result()
        self.ex.last_node_id = None
        status = {
            "status_str": "success" if success else "error",
            "completed": success,
            "messages": self.status_messages,
        }
        self.ex.queue.task_done(self.prompt_id, result, status)
        self.ex.running_prompt_id = None
        if self.client_id is not None:
            self.ex.hub.send_sync("executing", {"node": None, "prompt_id": self.prompt_id}, self.client_id)
        seconds = time.perf_counter() - started
        logger.info("Prompt executed in %.2f seconds", seconds, extra={"color": "green"})
        self.ex.observations.add(  # after the log line: a test that sees the execution sees its line too
            "executions",
            prompt_id=self.prompt_id,
            status_str=status["status_str"],
            seconds=round(seconds, 3),
            faults=[f.mode for f in self.armed.faults],
            cached=self.status_messages[1][1]["nodes"] if len(self.status_messages) > 1 else [],
            executed=sorted(self.executed, key=_node_sort_key),
        )

    def _execute(self) -> bool:
        self.add_message("execution_start", {"prompt_id": self.prompt_id}, broadcast=False)
        self.signatures = node_signatures(
            self.prompt,
            {nid: self._is_changed(nid) for nid in self.prompt},
            self.ex.catalog.includes_node_id_in_signature,
        )
        cache = self.ex.cache
        cached = [nid for nid in self.prompt if cache.has(self.signatures[nid])]
        self.add_message("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id}, broadcast=False)

        order = ExecutionOrder(
            self.prompt,
            is_output=lambda nid: self.ex.catalog.is_output(self.prompt[nid]["class_type"]),
            is_cached=lambda nid: cache.has(self.signatures[nid]),
        )
        for output in self.item.outputs:
            order.add_node(output)
        while not order.is_empty():
            node_id = order.next_node()
            try:
                self._run_node(node_id)
            except ExecutionInterrupted:
                logger.info("Processing interrupted")
                self.add_message("execution_interrupted", self._error_head(node_id), broadcast=True)
                return False
            except _NodeFailure as failure:
                self.add_message("execution_error", failure.details, broadcast=False)
                return False
            order.complete(node_id)
        self.add_message("execution_success", {"prompt_id": self.prompt_id}, broadcast=False)
        return True

    def _error_head(self, node_id: str) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "node_id": node_id,
            "node_type": self.prompt[node_id]["class_type"],
            "executed": list(self.executed),
        }

    def _history_result(self) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for node_id in self.prompt:
            entry = self.ex.cache.get(self.signatures.get(node_id)) if self.signatures else None
            if entry is not None and entry.ui is not None:
                outputs[node_id] = entry.ui["output"]
                meta[node_id] = entry.ui["meta"]
        return {"outputs": outputs, "meta": meta}

    def _is_changed(self, node_id: str) -> Any:
        """``IS_CHANGED`` / ``fingerprint_inputs`` of the input-file loaders: LoadImage and LoadAudio
        hash the file, the video loaders take its mtime, so a new file under the same name reruns."""
        node = self.prompt[node_id]
        loader = INPUT_FILE_LOADERS.get(node["class_type"])
        if loader is None:
            return None
        try:
            path = self.ex.folders.annotated_path(node["inputs"][loader.input])
            if loader.fingerprint == "mtime":
                return os.path.getmtime(path)
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except Exception as ex:  # noqa: BLE001 - ComfyUI logs and treats it as "always changed"
            logger.warning("WARNING: %s", ex)
            return NEVER_EQUAL()

    # -- one node -------------------------------------------------------------------------------------

    def _run_node(self, node_id: str) -> None:
        node = self.prompt[node_id]
        class_type = node["class_type"]
        signature = self.signatures[node_id]
        cached = self.ex.cache.get(signature)
        if cached is not None:
            self.values[node_id] = cached.outputs
            output = cached.ui["output"] if cached.ui else None
            self.send("executed", {"node": node_id, "display_node": node_id, "output": output, "prompt_id": self.prompt_id})
            self.progress_finish(node_id)
            return

        inputs = self._resolve_inputs(node_id)
        self.ex.last_node_id = node_id
        self.progress_start(node_id)
        self.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id})
        try:
            self.ex.check_interrupt()
            self._node_start_faults(node_id, class_type)
            ctx = self._context(node_id, class_type)
            outputs, ui = NODE_FUNCTIONS[class_type](ctx, **inputs)
        except (ExecutionInterrupted, RunAborted):
            raise
        except Exception as ex:  # noqa: BLE001 - any node failure becomes an execution_error
            raise _NodeFailure(self._failure_details(node_id, class_type, ex, inputs)) from ex

        ui_entry = None
        if ui:
            ui_entry = {
                "output": ui,
                "meta": {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id},
            }
        self.ex.cache.put(signature, CachedResult(tuple(outputs), ui_entry))
        self.values[node_id] = tuple(outputs)
        if ui:
            self.send("executed", {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": self.prompt_id})
        self.progress_finish(node_id)
        self.executed.add(node_id)

    def _resolve_inputs(self, node_id: str) -> dict[str, Any]:
        """``get_input_data``: declared inputs (all for VHS), links replaced by upstream outputs,
        plus the hidden inputs the class declares (``PROMPT``, ``EXTRA_PNGINFO``, ``UNIQUE_ID``)."""
        node = self.prompt[node_id]
        class_type = node["class_type"]
        declared = self.ex.catalog.input_types(class_type)
        names = set(declared.get("required", {})) | set(declared.get("optional", {}))
        values: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            if is_link(value):
                values[name] = self._output_of(value[0])[value[1]]
            elif name in names or class_type in ACCEPTS_ANY_INPUT:
                values[name] = value
        hidden = {"PROMPT": self.prompt, "EXTRA_PNGINFO": self.item.extra_data.get("extra_pnginfo"), "UNIQUE_ID": node_id}
        for name, kind in declared.get("hidden", {}).items():  # only the ones the class declares
            kind = kind[0] if isinstance(kind, list) else kind  # V3 nodes (SaveVideo) declare ["PROMPT"]
            if kind in hidden:
                values[name] = hidden[kind]
        return values

    def _output_of(self, node_id: str) -> tuple[Any, ...]:
        """Outputs of an upstream node: run now, or cached (then never staged in this run)."""
        if node_id not in self.values:
            entry = self.ex.cache.get(self.signatures[node_id])
            if entry is None:
                raise RuntimeError(f"comfy_double: no output for node {node_id}")
            self.values[node_id] = entry.outputs
        return self.values[node_id]

    def _context(self, node_id: str, class_type: str) -> NodeContext:
        crash = self._pending_fault("crash", node_id, class_type)
        sent = False

        def progress(value: int, total: int, delay: float = 0.0, slow: bool = False) -> None:
            """``comfy.utils.ProgressBar``: the first update and the last are sent, those between
            only when throttling lets them through (at least 0.1 s since the last: with a
            ``step_delay`` fault, or from a node whose every step takes longer, ``slow``)."""
            nonlocal sent
            if delay > 0:
                self.ex.sleep(delay)
            self.ex.check_interrupt()
            if self.armed.step_delay > 0 or slow or not sent or value >= total:
                sent = True
                entry = self._progress_entry(node_id)
                entry.update(value=value, max=total, state="running")
                self._publish_progress_state()
                self.send_progress("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id})
            if crash is not None:
                self._fire_crash(crash)

        return NodeContext(
            node_id=node_id,
            class_type=class_type,
            prompt=self.prompt,
            extra_data=self.item.extra_data,
            folders=self.ex.folders,
            catalog=self.ex.catalog,
            progress=progress,
            step_delay=self.armed.step_delay,
            missing_output=self.armed.first("missing_output") is not None,
            disable_metadata=self.ex.disable_metadata,
            process=self.ex.process_state,
        )

    # -- faults ---------------------------------------------------------------------------------------

    def _pending_fault(self, mode: str, node_id: str, class_type: str) -> Fault | None:
        fault = self.armed.at_node(mode, node_id, class_type)
        if fault is None or fault.id in self.fired:
            return None
        return fault

    def _node_start_faults(self, node_id: str, class_type: str) -> None:
        fault = self._pending_fault("ws_drop", node_id, class_type)
        if fault is not None:
            self.fired.add(fault.id)
            self.ex.hub.close_all_sync()
        fault = self._pending_fault("freeze", node_id, class_type)
        if fault is not None:
            self.fired.add(fault.id)
            logger.warning("comfy_double: freeze fault at node %s", node_id)
            self.ex.freeze_here(fault.seconds)
        fault = self._pending_fault("hang", node_id, class_type)
        if fault is not None:
            self.fired.add(fault.id)
            logger.warning("comfy_double: hang fault at node %s: silent until reset", node_id)
            self.ex.block(fault.seconds)
            self.ex.clear_interrupt()  # a hung ComfyUI ignored the interrupt
        fault = self._pending_fault("crash", node_id, class_type)
        if fault is not None and class_type not in PROGRESS_CLASSES:
            self._fire_crash(fault)
        fault = self._pending_fault("runtime_error", node_id, class_type)
        if fault is not None:
            self.fired.add(fault.id)
            raise SimulatedNodeError(fault.exception_type, fault.exception_message)

    def _fire_crash(self, fault: Fault) -> None:
        if fault.id in self.fired:
            return
        self.fired.add(fault.id)
        logger.error("comfy_double: crash fault: exiting with status %s", fault.exit_code)
        self.ex.crash(fault.exit_code)

    def _failure_details(self, node_id: str, class_type: str, ex: Exception, inputs: dict[str, Any]) -> dict[str, Any]:
        exception_type = ex.exception_type if isinstance(ex, SimulatedNodeError) else full_type_name(type(ex))
        tips = ""
        if "OutOfMemoryError" in exception_type:
            tips = OOM_TIPS
            logger.error("Got an OOM, unloading all loaded models.")
        logger.error("!!! Exception during processing !!! %s", ex)
        logger.error("%s", "".join(traceback.format_exception(ex)))
        current_inputs = {
            name: [format_value(v) for v in (value if isinstance(value, list) else [value])] for name, value in inputs.items()
        }
        return {
            **self._error_head(node_id),
            "exception_message": f"{ex}\n{tips}",
            "exception_type": exception_type,
            "traceback": traceback.format_tb(ex.__traceback__),
            "current_inputs": current_inputs,
            "current_outputs": list(self.prompt),
        }


class _NodeFailure(Exception):
    def __init__(self, details: dict[str, Any]) -> None:
        super().__init__(details.get("exception_message", ""))
        self.details = details


def _node_sort_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), node_id) if node_id.isdigit() else (sys.maxsize, node_id)


def hard_exit(code: int) -> None:
    """Child-process crash: flush the logs and leave without cleanup, like a killed ComfyUI."""
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001, S110 - best effort before dying
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
