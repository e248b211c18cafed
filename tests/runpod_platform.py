"""A stand-in for RunPod's serverless platform: the real worker in production mode, a real client.

RunPod's local API (``handler.py --rp_serve_api``) has no progress, no /cancel, and runs a /run job
inside the first /status call, so a client's progress bar and cancel cannot be tested against it.
This server plays the platform instead: the worker runs as ``python handler.py`` with the
``RUNPOD_WEBHOOK_*`` variables of :meth:`FakeRunPod.worker_env`, i.e. the SDK's real job loop, and
a client calls the API shape of ``https://api.runpod.ai/v2/<endpoint_id>/…``.

Worker side: what runpod 1.12's job loop calls (files in ``runpod/serverless/``). ``worker.py``
runs the loop instead of the local test when ``RUNPOD_WEBHOOK_GET_JOB`` is set; ``worker_state.py``
takes the worker id from ``RUNPOD_POD_ID``; ``modules/rp_scale.py`` (JobScaler) runs three loops:

- ``GET job-take/<worker>?gpu=…&job_in_progress=0|1`` (``modules/rp_job.py`` get_job; the URL is
  ``RUNPOD_WEBHOOK_GET_JOB`` with ``$ID`` replaced): held open until a job is queued, then one job
  ``{"id", "input"}``; 204 when the hold ends empty. ``job-take-batch/…&batch_size=n`` (concurrency
  above 1) answers a list.
- ``POST job-done/<worker>/<job>?gpu=…&isStream=false`` (``modules/rp_http.py`` send_result, URL
  ``RUNPOD_WEBHOOK_POST_OUTPUT`` with ``$RUNPOD_POD_ID`` and ``$ID``): a JSON body sent as form
  data. ``{"output"}`` completes the job, ``{"error"}`` fails it, ``stopPod`` is refresh_worker;
  ``{"status": "IN_PROGRESS", "output"}`` is a ``progress_update`` (``modules/rp_progress.py``: a
  thread and a session per update, so updates can arrive after the result; those are ignored).
- ``POST job-stream/<worker>/<job>`` (rp_http.stream_result, ``RUNPOD_WEBHOOK_POST_STREAM``):
  partial outputs of generator handlers.
- ``GET job-stop/<worker>?gpu=…`` (rp_job.get_stop_signals, since 1.10; the job-take URL with
  ``/job-stop/``): held open until a job of this worker is cancelled, then ``{"jobsToStop": [ids]}``;
  204 when empty. JobScaler then cancels that job's task; the worker posts no result for it.
- ``GET ping/<worker>?job_id=…&runpod_version=…`` (``modules/rp_ping.py`` Heartbeat, a separate
  process, every ``RUNPOD_PING_INTERVAL`` ms, only with ``RUNPOD_AI_API_KEY`` and ``RUNPOD_POD_ID``
  set); ``status=unhealthy`` is ``modules/rp_fitness.py`` reporting a failed fitness check.

The worker sends ``Authorization: <RUNPOD_AI_API_KEY>`` (``runpod/http_client.py``); its fitness
checks are off through ``RUNPOD_SKIP_GPU_CHECK`` (``modules/rp_gpu_fitness.py``) and
``RUNPOD_SKIP_AUTO_SYSTEM_CHECKS`` (``modules/rp_fitness.py``).

Client side (``Authorization: Bearer <key>`` or the bare key, else 401), as ``runpod.Endpoint``
(``runpod/endpoint/runner.py``) and curl call it: ``POST run`` → ``{"id", "status": "IN_QUEUE"}``;
``GET|POST status/<id>`` → ``{"id", "status", "delayTime"?, "executionTime"?, "workerId"?, "output"?,
"error"?}`` with the latest progress update as ``output`` while IN_PROGRESS; ``POST cancel/<id>``;
``POST runsync[?wait=ms]`` (holds up to ``runsync_wait`` s, then answers the current status as RunPod
does); ``GET|POST stream/<id>``; ``GET health``. Times are milliseconds; bodies over 10 MB (run) or
20 MB (runsync) are refused. Not modelled: retries, execution timeouts, TTL, webhooks, lost workers.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
RUN_LIMIT, RUNSYNC_LIMIT = 10_000_000, 20_000_000
WORKER_ROUTES = frozenset({"job-take", "job-take-batch", "job-done", "job-stream", "job-stop", "ping"})


@dataclass
class Job:
    id: str
    input: Any
    submitted: float = field(default_factory=time.monotonic)
    status: str = "IN_QUEUE"
    worker: str | None = None
    taken: float | None = None
    finished: float | None = None
    output: Any = None
    error: Any = None
    progress: list[Any] = field(default_factory=list)
    stream: list[Any] = field(default_factory=list)
    stop_pod: bool = False

    def public(self) -> dict[str, Any]:
        """The /status answer."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.taken is not None:
            body["delayTime"] = round((self.taken - self.submitted) * 1000)
            body["workerId"] = self.worker
        if self.taken is not None and self.finished is not None:
            body["executionTime"] = round((self.finished - self.taken) * 1000)
        if self.status == "IN_PROGRESS" and self.progress:
            body["output"] = self.progress[-1]
        elif self.output is not None:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body


class FakeRunPod:
    """The platform on 127.0.0.1 (free port), run in a thread: ``with FakeRunPod() as rp: ...``."""

    def __init__(self, *, endpoint_id: str = "wan22test", api_key: str = "rp-test-key", worker_key: str = "rp-worker-key",
                 hold: float = 2.0, runsync_wait: float = 90.0):  # fmt: skip
        self.endpoint_id, self.api_key, self.worker_key = endpoint_id, api_key, worker_key
        self.hold, self.runsync_wait = hold, runsync_wait
        self.jobs: dict[str, Job] = {}
        self.pings: list[dict[str, str]] = []
        self._queue: deque[str] = deque()
        self._stops: dict[str, set[str]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-runpod", daemon=True)
        self._changed: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle and test helpers (called from the test's thread) -------------------------
    def start(self) -> FakeRunPod:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeRunPod:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What the SDK's ``endpoint_url_base`` (env ``RUNPOD_ENDPOINT_BASE_URL``) should be."""
        return f"http://127.0.0.1:{self.port}/v2"

    def worker_env(self, worker_id: str = "worker-1", ping_ms: int = 1000) -> dict[str, str]:
        """The variables RunPod gives a worker, pointing at this server."""
        url = f"{self.base_url}/{self.endpoint_id}"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{url}/job-take/$ID?gpu=TEST",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{url}/job-done/$RUNPOD_POD_ID/$ID?gpu=TEST",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{url}/job-stream/$RUNPOD_POD_ID/$ID?gpu=TEST",
            "RUNPOD_WEBHOOK_PING": f"{url}/ping/$RUNPOD_POD_ID?gpu=TEST",
            "RUNPOD_PING_INTERVAL": str(ping_ms),
            "RUNPOD_AI_API_KEY": self.worker_key,
            "RUNPOD_POD_ID": worker_id,
            "RUNPOD_ENDPOINT_ID": self.endpoint_id,
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        }

    def job(self, job_id: str) -> Job:
        """A copy of a job's record, progress history included."""
        return self._call(self._copy(lambda: self.jobs[job_id]))

    def all_jobs(self) -> list[Job]:
        return self._call(self._copy(lambda: list(self.jobs.values())))

    def heartbeats(self) -> list[dict[str, Any]]:
        """Every ping so far: ``worker``, ``at`` (monotonic) and the query (``job_id``, ``runpod_version``, …)."""
        return self._call(self._copy(lambda: self.pings))

    def wait_for(self, predicate: Callable[[FakeRunPod], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError("the fake platform did not reach the expected state")
            time.sleep(0.05)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _copy(self, get: Callable[[], Any]) -> Any:
        return copy.deepcopy(get())

    async def _start(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._auth])
        p = f"/v2/{self.endpoint_id}"
        app.add_routes([
            web.post(f"{p}/run", self.run), web.post(f"{p}/runsync", self.runsync),
            web.get(f"{p}/status/{{id}}", self.status), web.post(f"{p}/status/{{id}}", self.status),
            web.get(f"{p}/stream/{{id}}", self.stream), web.post(f"{p}/stream/{{id}}", self.stream),
            web.post(f"{p}/cancel/{{id}}", self.cancel), web.get(f"{p}/health", self.health),
            web.get(f"{p}/job-take/{{worker}}", self.job_take), web.get(f"{p}/job-take-batch/{{worker}}", self.job_take),
            web.post(f"{p}/job-done/{{worker}}/{{id}}", self.job_done),
            web.post(f"{p}/job-stream/{{worker}}/{{id}}", self.job_stream),
            web.get(f"{p}/job-stop/{{worker}}", self.job_stop), web.get(f"{p}/ping/{{worker}}", self.ping),
        ])  # fmt: skip
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    # ---- plumbing -------------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        parts = request.path.split("/")  # "", "v2", endpoint, route, ...
        given = request.headers.get("Authorization", "")
        if len(parts) > 3 and parts[3] in WORKER_ROUTES:
            allowed = given == self.worker_key
        else:
            allowed = given.removeprefix("Bearer ") == self.api_key and bool(self.api_key)
        if not allowed:
            return web.json_response({"error": "Unauthorized"}, status=401)
        return await handler(request)

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def _wait(self, ready: Callable[[], bool], timeout: float) -> bool:
        assert self._changed is not None
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(ready), timeout)
            except TimeoutError:
                pass
        return ready()

    def _known(self, request: web.Request) -> Job:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "request does not exist"}), content_type="application/json")
        return job

    # ---- client side ------------------------------------------------------------------------------
    async def _submit(self, request: web.Request, limit: int) -> Job:
        raw = await request.read()
        if len(raw) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(raw))
        try:
            body = json.loads(raw)
        except ValueError:
            raise web.HTTPBadRequest(text='{"error": "the body is not JSON"}', content_type="application/json") from None
        if not isinstance(body, dict) or "input" not in body:
            raise web.HTTPBadRequest(text='{"error": "the body needs an input"}', content_type="application/json")
        job = Job(id=f"{uuid.uuid4()}-e1", input=body["input"])
        self.jobs[job.id] = job
        self._queue.append(job.id)
        await self._notify()
        return job

    async def run(self, request: web.Request) -> web.Response:
        job = await self._submit(request, RUN_LIMIT)
        return web.json_response({"id": job.id, "status": job.status})

    async def runsync(self, request: web.Request) -> web.Response:
        job = await self._submit(request, RUNSYNC_LIMIT)
        wait = float(request.query["wait"]) / 1000 if "wait" in request.query else self.runsync_wait
        await self._wait(lambda: job.status in FINAL, min(wait, 300.0))
        return web.json_response(job.public() if job.status in FINAL else {"id": job.id, "status": job.status})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self._known(request).public())

    async def stream(self, request: web.Request) -> web.Response:
        job = self._known(request)
        chunks, job.stream = job.stream, []
        return web.json_response({"id": job.id, "status": job.status, "stream": [{"output": c} for c in chunks]})

    async def cancel(self, request: web.Request) -> web.Response:
        job = self._known(request)
        if job.status == "IN_QUEUE":
            self._queue.remove(job.id)
        elif job.status == "IN_PROGRESS" and job.worker is not None:
            self._stops.setdefault(job.worker, set()).add(job.id)
        if job.status not in FINAL:
            job.status, job.finished = "CANCELLED", time.monotonic()
            await self._notify()
        return web.json_response({"id": job.id, "status": job.status})

    async def health(self, request: web.Request) -> web.Response:
        count = {s: sum(j.status == s for j in self.jobs.values()) for s in ("COMPLETED", "FAILED", "IN_PROGRESS", "IN_QUEUE")}
        now = time.monotonic()
        seen = {p["worker"] for p in self.pings if now - p["at"] < 30}
        busy = {j.worker for j in self.jobs.values() if j.status == "IN_PROGRESS"}
        return web.json_response({
            "jobs": {"completed": count["COMPLETED"], "failed": count["FAILED"], "inProgress": count["IN_PROGRESS"],
                     "inQueue": count["IN_QUEUE"], "retried": 0},
            "workers": {"idle": len(seen - busy), "running": len(busy)},
        })  # fmt: skip

    # ---- worker side ------------------------------------------------------------------------------
    async def job_take(self, request: web.Request) -> web.Response:
        worker = request.match_info["worker"]
        batch = int(request.query.get("batch_size", 1)) if "job-take-batch" in request.path else None
        await self._wait(lambda: bool(self._queue), self.hold)
        transport = request.transport
        if not self._queue or transport is None or transport.is_closing():  # the worker gave up waiting
            return web.Response(status=204)
        taken = []
        while self._queue and len(taken) < (batch or 1):
            job = self.jobs[self._queue.popleft()]
            job.status, job.worker, job.taken = "IN_PROGRESS", worker, time.monotonic()
            taken.append({"id": job.id, "input": job.input})
        await self._notify()
        return web.json_response(taken if batch else taken[0])

    async def _posted(self, request: web.Request) -> tuple[Job, dict[str, Any]]:
        job = self._known(request)
        body = json.loads(await request.text())  # JSON sent as application/x-www-form-urlencoded
        return job, body if isinstance(body, dict) else {"output": body}

    async def job_done(self, request: web.Request) -> web.Response:
        job, body = await self._posted(request)
        if job.status != "IN_PROGRESS" or job.worker != request.match_info["worker"]:
            return web.Response(text="ignored")  # cancelled meanwhile, or a progress update after the result
        if body.get("status") == "IN_PROGRESS":
            job.progress.append(body.get("output"))
        else:
            job.output, job.error, job.stop_pod = body.get("output"), body.get("error"), bool(body.get("stopPod"))
            job.status, job.finished = ("FAILED" if job.error else "COMPLETED"), time.monotonic()
        await self._notify()
        return web.Response(text="OK")

    async def job_stream(self, request: web.Request) -> web.Response:
        job, body = await self._posted(request)
        job.stream.append(body.get("output"))
        return web.Response(text="OK")

    async def job_stop(self, request: web.Request) -> web.Response:
        worker = request.match_info["worker"]
        await self._wait(lambda: bool(self._stops.get(worker)), self.hold)
        transport = request.transport
        if not self._stops.get(worker) or transport is None or transport.is_closing():
            return web.Response(status=204)
        ids = sorted(self._stops.pop(worker))
        return web.json_response({"jobsToStop": ids})

    async def ping(self, request: web.Request) -> web.Response:
        self.pings.append({"worker": request.match_info["worker"], "at": time.monotonic(), **request.query})
        return web.Response(text="OK")
