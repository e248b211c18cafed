"""The ComfyUI the worker launches: started, ready or not, restarted when it dies.

:class:`LaunchedServer` is the readiness and restart policy. It launches a :class:`ComfyChild`
without waiting for it, so the worker can take jobs while ComfyUI boots; before every job it waits
for readiness (``GET /system_stats`` answers, bounded by ``COMFY_BOOT_TIMEOUT`` from the launch),
and restarts a dead or hung child, giving up after :attr:`LaunchedServer.MAX_FAILED_RESTARTS`
failures in a row.
"""

from __future__ import annotations

import logging
import shlex
import socket
import threading
import time
from collections.abc import Callable

from .child import ComfyChild
from .client import HEALTH_PATH, LIVENESS_PATH, ComfyClient
from .config import ComfySettings
from .crash import Crash, diagnose
from .errors import ComfyBootError, ComfyUnavailable
from .gpu import GpuInfo, read_gpus
from .launch import LaunchPlan, MemoryInfo, needs_gpus, needs_sage_probe, plan_launch, read_memory_info, read_oom_kills
from .models import describe_volume, write_extra_model_paths
from .speed import SageProbe, describe_gpus, probe_sageattention

logger = logging.getLogger(__name__)


class LaunchedServer:
    """The ComfyUI child the worker launches; thread-safe for the worker's use.

    ``start``/``restart``/``ensure_alive`` serialise on a lock; ``stop`` does not take it, so a
    signal handler can always end the child.
    """

    #: Consecutive failed restarts after which the worker asks RunPod to replace it.
    MAX_FAILED_RESTARTS = 2

    def __init__(
        self,
        settings: ComfySettings,
        *,
        memory: MemoryInfo | None = None,
        poll_interval: float = 0.25,
        health_timeout: float | None = None,
        stop_grace: float = 5.0,
        gpu_reader: Callable[[], list[GpuInfo] | None] = read_gpus,
        sage_prober: Callable[[str], SageProbe] = probe_sageattention,
    ):
        """``memory`` overrides the cgroup/meminfo reading (tests); the rest tune waits, in seconds.

        ``gpu_reader`` and ``sage_prober`` run once, before the first launch, and only when a setting
        needs them (COMFY_ATTENTION=sage, COMFY_FAST=auto); restarts reuse what they found.

        ``health_timeout`` (default: the smaller of 5 s and ``COMFY_HTTP_TIMEOUT``) bounds one
        liveness probe: short, because it runs before every job.
        """
        self.settings = settings
        self._client = ComfyClient(settings.base_url, timeout=settings.http_timeout)
        self.poll_interval = poll_interval
        self.health_timeout = health_timeout if health_timeout is not None else min(5.0, settings.http_timeout)
        self.stop_grace = stop_grace
        self.plan: LaunchPlan | None = None
        self.restarts = 0
        self._memory = memory
        self._child: ComfyChild | None = None
        self._launched_at = time.monotonic()
        self._oom_kills_at_launch: int | None = None
        self._ready = False
        self._lock = threading.RLock()
        self._failed_restarts = 0
        self._first_failure: str | None = None
        self._shutting_down = False
        self._volume_logged = False
        self._gpu_reader = gpu_reader
        self._sage_prober = sage_prober
        self._facts: tuple[list[GpuInfo] | None, SageProbe | None] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def url(self) -> str:
        return self.settings.base_url

    @property
    def pid(self) -> int | None:
        """PID of the current (or last) ComfyUI child; ``None`` when none was launched."""
        return self._child.pid if self._child is not None else None

    @property
    def exit_code(self) -> int | None:
        """Exit status of the last child (negative = killed by that signal); ``None`` while it runs."""
        return self._child.exit_code if self._child is not None else None

    # ------------------------------------------------------------------ verbs
    def launch(self) -> None:
        """Start ComfyUI without waiting for it.

        Raises :class:`ComfyBootError` when it cannot even be started (no ComfyUI at ``COMFY_DIR``,
        the port taken); the reason is kept and quoted by the jobs that find ComfyUI down.
        """
        with self._lock:
            self._launched_at = time.monotonic()
            if self._child is None or not self._child.running:
                try:
                    self._launch()
                except ComfyBootError as exc:
                    self._first_failure = self._first_failure or str(exc)
                    raise

    def start(self) -> None:
        """Launch ComfyUI and return once it answers HTTP (raises :class:`ComfyBootError`)."""
        with self._lock:
            self.launch()
            self.wait_ready()

    def wait_ready(self, report_every: float = 10.0) -> None:
        """Poll ``GET /system_stats`` until it answers, the child exits, or ``COMFY_BOOT_TIMEOUT``
        (counted from the launch) passes; every ``report_every`` seconds, log what ComfyUI is doing."""
        timeout = self.settings.boot_timeout
        deadline = self._launched_at + timeout
        next_report = time.monotonic() + report_every
        while True:
            self._raise_if_child_exited()
            now = time.monotonic()
            last_error = self._client.health_error(min(max(deadline - now, 0.1), 2.0))
            if last_error is None:
                if self._child is not None and self._child.running:
                    logger.info("ComfyUI is ready %.1f s after its launch (pid %d)", now - self._launched_at, self._child.pid)
                    self._ready = True
                    return
                continue  # it answered but our child just died: another server owns the port
            now = time.monotonic()
            if now >= deadline:
                raise self._boot_timeout(timeout, last_error)
            if now >= next_report:
                last = self.log_tail(1)
                logger.info(
                    "waiting for ComfyUI at %s (%.0f s of COMFY_BOOT_TIMEOUT=%.0f s)%s",
                    self.url, now - self._launched_at, timeout, f"; its last log line: {last}" if last else "",
                )  # fmt: skip
                next_report += report_every
            time.sleep(min(self.poll_interval, max(deadline - now, 0.0)))

    def is_alive(self) -> bool:
        """True when the child runs and HTTP answers within ``health_timeout``."""
        if self._child is None or not self._child.running:
            return False
        return self._client.health_error(self.health_timeout) is None

    def ensure_alive(self) -> None:
        """Call before each job: if ComfyUI died or stopped answering, say why and restart it.

        Raises :class:`ComfyUnavailable` when it cannot be brought back; after
        ``MAX_FAILED_RESTARTS`` consecutive failed restarts with ``refresh_worker=True``. The
        message keeps quoting the first failure, so later jobs still show the cause.
        """
        with self._lock:
            reason = self._boot_failure() or self._why_not_alive()
            if reason is None:
                self._failed_restarts, self._first_failure = 0, None
                return
            if self._failed_restarts >= self.MAX_FAILED_RESTARTS:
                raise ComfyUnavailable(
                    f"ComfyUI is down and {self._failed_restarts} restarts in a row failed; "
                    f"the first failure: {self._first_failure or reason}",
                    refresh_worker=True,
                )
            logger.warning("ComfyUI is not usable: %s; restarting it", reason)
            while True:
                try:
                    self.restart(reason)
                except ComfyBootError as exc:
                    self._failed_restarts += 1
                    self._first_failure = self._first_failure or str(exc)
                    if self._failed_restarts >= self.MAX_FAILED_RESTARTS:
                        raise ComfyUnavailable(
                            f"ComfyUI could not be restarted ({self._failed_restarts} attempts in a row "
                            f"failed) after: {reason}. Last error: {exc}",
                            refresh_worker=True,
                        ) from exc
                    logger.warning("restart %d of ComfyUI failed: %s; trying again", self._failed_restarts, exc)
                    continue
                self._failed_restarts, self._first_failure = 0, None
                return

    def restart(self, reason: str) -> None:
        """Stop the child's whole process group and start a fresh one (raises ComfyBootError)."""
        with self._lock:
            logger.warning("restarting ComfyUI: %s", reason)
            self.stop()
            self.restarts += 1
            self._ready = False
            self._launched_at = time.monotonic()
            self._launch()
            self.wait_ready()

    def stop(self) -> None:
        """End the child and its process group. Idempotent."""
        child = self._child
        if child is not None:
            child.stop()

    def shutdown(self) -> None:
        """Stop ComfyUI for good (worker exit): no later start or restart will launch it again."""
        self._shutting_down = True
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines ComfyUI wrote since its latest launch ("" when none)."""
        return self._child.log_tail(lines) if self._child is not None else ""

    def log_position(self) -> tuple[int | None, int]:
        """Where ComfyUI's log is now, for :meth:`log_since` (a job's own lines)."""
        child = self._child
        return (child.pid, child.log_size()) if child is not None else (None, 0)

    def log_since(self, position: tuple[int | None, int]) -> str:
        """What ComfyUI logged since ``position``; "" when it was restarted since."""
        pid, offset = position
        child = self._child
        if child is None or child.pid != pid:
            return ""
        return child.log_since(offset)

    def crash_report(self, wait: float = 3.0) -> Crash | None:
        """Why the launched child is gone, with its log tail; None while it runs (:func:`crash.diagnose`)."""
        return diagnose(self._child, self._oom_kills_at_launch, wait) if self._child is not None else None

    # ------------------------------------------------------------------ internals
    def _launch(self) -> None:
        s = self.settings
        if self._shutting_down:
            raise ComfyBootError("the worker is shutting down; ComfyUI is not started again")
        main = s.comfy_dir / "main.py"
        if not main.is_file():
            raise ComfyBootError(f"ComfyUI not found: {main} does not exist (COMFY_DIR={s.comfy_dir})")
        try:
            for folder in (s.input_dir, s.output_dir, s.temp_dir, s.user_dir):
                folder.mkdir(parents=True, exist_ok=True)
            write_extra_model_paths(s)
        except OSError as exc:
            raise ComfyBootError(f"cannot prepare the worker directory {s.work_dir}: {exc}") from exc
        if not self._volume_logged:
            self._volume_logged = True
            logger.info("%s", describe_volume(s))

        gpus, sage = self._launch_facts()
        plan = plan_launch(s, memory=self._memory if self._memory is not None else read_memory_info(), gpus=gpus, sage=sage)
        self.plan = plan
        logger.info("ComfyUI command: %s\n%s", shlex.join(plan.command), "\n".join(f"  - {n}" for n in plan.notes))
        if _port_in_use(s.host, s.port):
            raise ComfyBootError(
                f"port {s.port} on {s.host} is already in use by another process; set "
                "COMFY_PORT to a free port, or COMFY_URL to use the server that listens there"
            )
        self._oom_kills_at_launch = read_oom_kills()
        try:
            self._child = ComfyChild.spawn(plan.command, cwd=s.comfy_dir, log_file=s.log_file, stop_grace=self.stop_grace)
        except OSError as exc:
            raise ComfyBootError(f"cannot start ComfyUI with {shlex.join(plan.command[:2])}: {exc}") from exc
        logger.info(
            "ComfyUI started (pid %d); waiting up to %.0f s for %s%s; log: %s",
            self._child.pid, s.boot_timeout, self.url, HEALTH_PATH, s.log_file,
        )  # fmt: skip

    def _launch_facts(self) -> tuple[list[GpuInfo] | None, SageProbe | None]:
        """The GPUs and the SageAttention check, when a setting needs them; read once per worker."""
        if self._facts is None:
            gpus = sage = None
            if needs_gpus(self.settings):
                started = time.monotonic()
                gpus = self._gpu_reader()
                seen = describe_gpus(gpus) if gpus else "no GPU" if gpus == [] else "no nvidia-smi"
                logger.info("GPUs for the launch settings: %s (nvidia-smi, %.2f s)", seen, time.monotonic() - started)
            if needs_sage_probe(self.settings, gpus):
                sage = self._sage_prober(self.settings.comfy_python)
                logger.info("%s (checked in %s, %.1f s)", sage.describe(), self.settings.comfy_python, sage.seconds)
            self._facts = (gpus, sage)
        return self._facts

    def _raise_if_child_exited(self) -> None:
        child = self._child
        if child is None:
            raise ComfyBootError(f"ComfyUI is not running: {self._first_failure or 'it was never started or was stopped'}")
        code = child.exit_code
        if code is not None:
            child.reap_group()
            raise ComfyBootError(
                f"ComfyUI exited with {child.describe_exit(code)} while starting "
                f"(after {time.monotonic() - self._launched_at:.1f} s).\n{child.tail_block()}"
            )

    def _boot_failure(self) -> str | None:
        """While ComfyUI has never been ready since its launch: wait for it; why it failed, or None."""
        if self._ready or self._child is None:
            return None
        try:
            self.wait_ready()
        except ComfyBootError as exc:
            self._first_failure = self._first_failure or str(exc)
            return f"ComfyUI did not start: {exc}"
        return None

    def _boot_timeout(self, timeout: float, last_error: str) -> ComfyBootError:
        tail = self._child.tail_block() if self._child is not None else ""
        self.stop()
        return ComfyBootError(
            f"ComfyUI did not answer {self.url}{HEALTH_PATH} within {timeout:g} s "
            f"(COMFY_BOOT_TIMEOUT; last: {last_error}) and was stopped.\n{tail}"
        )

    def _why_not_alive(self) -> str | None:
        """None when usable, else a one-line reason for the log and the error message."""
        child = self._child
        if child is None:
            return f"ComfyUI did not start: {self._first_failure}" if self._first_failure else "ComfyUI was not started"
        for attempt in range(2):  # one miss can be a busy moment: ask once more
            code = child.exit_code
            if code is not None:
                return f"ComfyUI (pid {child.pid}) exited with {child.describe_exit(code)}"
            error = self._client.liveness_error(self.health_timeout)
            if error is None:
                return None
            if attempt == 0:
                time.sleep(min(self.poll_interval, 0.5))
        return f"ComfyUI (pid {child.pid}) runs but does not answer {self.url}{LIVENESS_PATH}: {error}"


def _port_in_use(host: str, port: int) -> bool:
    """True when something already accepts connections on (host, port)."""
    probe = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((probe, port), timeout=0.5):
            return True
    except OSError:
        return False
