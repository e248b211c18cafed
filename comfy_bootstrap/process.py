"""The ComfyUI child process: start it, know whether it is usable, restart it, and never orphan it.

The worker runs ComfyUI as a headless child in its own session (so its process group holds
ComfyUI and everything ComfyUI spawns — ffmpeg, custom-node helpers), with its output appended to
``settings.log_file``. One :class:`ComfyServer` owns that child. Its verbs are what the worker
needs at boot (``start``), before each job (``ensure_alive``) and at exit (``stop``, signal and
``atexit`` hooks). In attach mode (``COMFY_URL``) no process is launched and only HTTP is checked.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from .client import HEALTH_PATH, ComfyClient
from .config import Settings
from .errors import ComfyBootError, ComfyUnavailable
from .launch import LaunchPlan, MemoryInfo, plan_launch, read_memory_info
from .models import describe_volume, write_extra_model_paths

logger = logging.getLogger(__name__)



class ComfyServer:
    """One ComfyUI (launched by the worker, or attached to via ``COMFY_URL``) and its lifecycle.

    Thread-safe for the worker's use: ``start``/``restart``/``ensure_alive`` serialise on a lock;
    ``stop`` does not take it, so a signal handler can always end the child.
    """

    #: Consecutive failed restarts after which the worker asks RunPod to replace it.
    MAX_FAILED_RESTARTS = 2

    def __init__(
        self,
        settings: Settings,
        *,
        memory: MemoryInfo | None = None,
        poll_interval: float = 0.25,
        health_timeout: float | None = None,
        stop_grace: float = 5.0,
    ):
        """``memory`` overrides the cgroup/meminfo reading (tests); the rest tune waits, in seconds.

        ``health_timeout`` (default: the smaller of 5 s and ``COMFY_HTTP_TIMEOUT``) bounds one
        liveness probe: short, because it runs before every job.
        """
        self.settings = settings
        #: Readiness and liveness both ask ComfyUI's health endpoint through the worker's client.
        self._client = ComfyClient(settings.base_url, timeout=settings.http_timeout)
        self.poll_interval = poll_interval
        self.health_timeout = health_timeout if health_timeout is not None else min(5.0, settings.http_timeout)
        self.stop_grace = stop_grace
        self.plan: LaunchPlan | None = None
        self.restarts = 0
        self._memory = memory
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._lock = threading.RLock()
        self._failed_restarts = 0
        self._stopped_by_us = False
        self._shutting_down = False
        self._atexit_registered = False
        self._volume_logged = False

    # ------------------------------------------------------------------ properties
    @property
    def url(self) -> str:
        return self.settings.base_url

    @property
    def pid(self) -> int | None:
        """PID of the current (or last) ComfyUI child; ``None`` when none was launched."""
        return self._proc.pid if self._proc is not None else None

    @property
    def exit_code(self) -> int | None:
        """Exit status of the last child (negative = killed by that signal); ``None`` while it runs."""
        return self._proc.poll() if self._proc is not None else None

    # ------------------------------------------------------------------ verbs
    def start(self) -> None:
        """Launch ComfyUI (or, attached, wait for its URL) and return once it answers HTTP.

        Raises :class:`ComfyBootError` with the exit code and the log tail if it exits or does not
        answer within ``COMFY_BOOT_TIMEOUT``.
        """
        with self._lock:
            if self.settings.attached:
                logger.info("attaching to the ComfyUI at %s (no process is launched)", self.url)
                self.wait_ready()
                return
            if self._proc is not None and self._proc.poll() is None:
                logger.debug("ComfyUI already running (pid %d)", self._proc.pid)
                self.wait_ready()
                return
            self._launch()
            self.wait_ready()

    def wait_ready(self) -> None:
        """Poll ``GET /system_stats`` until it answers, the child exits, or ``boot_timeout`` passes.

        No short fixed cap: loading custom nodes and torch on a cold network volume can take
        minutes; the only bound is ``COMFY_BOOT_TIMEOUT``.
        """
        timeout = self.settings.boot_timeout
        started = time.monotonic()
        deadline = started + timeout
        next_report = started + 30.0
        while True:
            proc = self._proc
            if not self.settings.attached:
                if proc is None:
                    raise ComfyBootError("ComfyUI is not running: it was never started or was stopped")
                code = proc.poll()
                if code is not None:
                    self._reap_group(proc)
                    raise ComfyBootError(
                        f"ComfyUI exited with {self._describe_exit(code)} while starting "
                        f"(after {time.monotonic() - started:.1f} s).\n{self._tail_block()}"
                    )
            now = time.monotonic()
            last_error = self._client.health_error(min(max(deadline - now, 0.1), 2.0))
            if last_error is None:
                if self.settings.attached:
                    logger.info("the attached ComfyUI at %s answers", self.url)
                    return
                if proc is not None and proc.poll() is None:
                    logger.info("ComfyUI is ready after %.1f s (pid %d)", time.monotonic() - started, proc.pid)
                    return
                continue  # it answered but our child just died: another server owns the port
            now = time.monotonic()
            if now >= deadline:
                if self.settings.attached:
                    raise ComfyBootError(
                        f"the attached ComfyUI at {self.url} did not answer {HEALTH_PATH} within "
                        f"{timeout:g} s (COMFY_BOOT_TIMEOUT; last: {last_error}); check COMFY_URL"
                    )
                tail = self._tail_block()
                self.stop()
                raise ComfyBootError(
                    f"ComfyUI did not answer {self.url}{HEALTH_PATH} within {timeout:g} s "
                    f"(COMFY_BOOT_TIMEOUT; last: {last_error}) and was stopped.\n{tail}"
                )
            if now >= next_report:
                last = self.log_tail(1) if not self.settings.attached else ""
                logger.info(
                    "still waiting for ComfyUI at %s (%.0f s of %.0f s)%s",
                    self.url, now - started, timeout, f"; last log line: {last}" if last else "",
                )  # fmt: skip
                next_report += 30.0
            time.sleep(min(self.poll_interval, max(deadline - now, 0.0)))

    def is_alive(self) -> bool:
        """True when the child runs and answers HTTP within ``health_timeout`` (attached: HTTP only)."""
        if not self.settings.attached:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return False
        return self._client.health_error(self.health_timeout) is None

    def ensure_alive(self) -> None:
        """Call before each job: if ComfyUI died or stopped answering, say why and restart it.

        Raises :class:`ComfyUnavailable` when it cannot be brought back; after
        ``MAX_FAILED_RESTARTS`` consecutive failed restarts with ``refresh_worker=True`` so RunPod
        replaces this worker instead of feeding it more jobs. Attached: no restart is possible.
        """
        if self.settings.attached:
            error = self._client.health_error(self.health_timeout)
            if error is not None:
                raise ComfyUnavailable(
                    f"the attached ComfyUI at {self.url} does not answer ({error}); the worker did not "
                    "start it and cannot restart it"
                )
            return
        with self._lock:
            reason = self._why_not_alive()
            if reason is None:
                self._failed_restarts = 0
                return
            if self._failed_restarts >= self.MAX_FAILED_RESTARTS:
                raise ComfyUnavailable(
                    f"ComfyUI is down ({reason}) and {self._failed_restarts} restarts in a row failed; "
                    "this worker needs replacing",
                    refresh_worker=True,
                )
            logger.warning("ComfyUI is not usable: %s; restarting it", reason)
            while True:
                try:
                    self.restart(reason)
                except ComfyBootError as exc:
                    self._failed_restarts += 1
                    if self._failed_restarts >= self.MAX_FAILED_RESTARTS:
                        raise ComfyUnavailable(
                            f"ComfyUI could not be restarted ({self._failed_restarts} attempts in a row "
                            f"failed) after: {reason}. Last error: {exc}",
                            refresh_worker=True,
                        ) from exc
                    logger.warning("restart %d of ComfyUI failed: %s; trying again", self._failed_restarts, exc)
                    continue
                self._failed_restarts = 0
                return

    def restart(self, reason: str) -> None:
        """Stop the child's whole process group and start a fresh one (raises ComfyBootError)."""
        if self.settings.attached:
            raise ComfyUnavailable(
                f"the attached ComfyUI at {self.url} cannot be restarted by the worker ({reason})"
            )
        with self._lock:
            logger.warning("restarting ComfyUI: %s", reason)
            self.stop()
            self.restarts += 1
            self._launch()
            self.wait_ready()

    def stop(self) -> None:
        """End ComfyUI and everything in its process group: SIGTERM, grace period, SIGKILL.

        Idempotent, and safe from a signal handler (takes no lock). Grandchildren share the group
        (the child runs in its own session), so none outlive it.
        """
        proc = self._proc
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the child leads its own process group
        if proc.poll() is None or _group_members(pgid):
            if proc.poll() is None:
                self._stopped_by_us = True
            logger.info("stopping ComfyUI (pid %d and its process group)", pgid)
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_grace
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                pass
            while proc.returncode is not None and _group_members(pgid) and time.monotonic() < deadline:
                _reap(pgid)
                time.sleep(0.05)
            if proc.poll() is None or _group_members(pgid):
                logger.warning(
                    "ComfyUI's process group did not exit within %.0f s of SIGTERM; sending SIGKILL",
                    self.stop_grace,
                )
                _signal_group(pgid, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                logger.error("ComfyUI (pid %d) did not die after SIGKILL", pgid)
            self._reap_group(proc, wait=2.0)
        if _group_members(pgid):
            logger.error("processes of ComfyUI's group %d survive: %s", pgid, _group_members(pgid))

    def shutdown(self) -> None:
        """Stop ComfyUI for good (worker exit): no later start or restart will launch it again."""
        self._shutting_down = True
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines ComfyUI wrote since its latest launch ("" when none/attached)."""
        path = self.settings.log_file
        if self.settings.attached:
            return ""
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                offset = self._log_offset if self._log_offset <= size else 0
                start = max(offset, size - 256 * 1024)
                fh.seek(start)
                data = fh.read()
        except OSError:
            return ""
        text = data.decode("utf-8", errors="replace")
        all_lines = text.splitlines()
        if start > offset and all_lines:
            all_lines = all_lines[1:]  # the first line was cut by the seek
        return "\n".join(all_lines[-lines:]) if lines > 0 else ""

    def crash_report(self, wait: float = 3.0) -> str:
        """Why the launched child is gone, with its log tail; "" while it runs or when attached.

        Appended to a job's error when ComfyUI died under it (a crash or the OOM killer), so the
        user sees the cause instead of a bare "connection refused". A dying process closes its
        sockets a moment before its exit is visible, so this waits up to ``wait`` seconds for it.
        """
        if self.settings.attached or self._proc is None:
            return ""
        try:
            code = self._proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return ""
        return f"ComfyUI exited with {self._describe_exit(code)}. {self._tail_block(15)}"

    def install_signal_handlers(self) -> None:
        """Make SIGTERM/SIGINT to the worker (and its normal exit) end ComfyUI's whole group.

        Chains to the previous handler, so the worker's own SIGTERM/SIGINT behaviour is unchanged.
        Must run in the main thread (Python only allows signal handlers there).
        """
        self._register_atexit()
        if threading.current_thread() is not threading.main_thread():
            logger.warning("install_signal_handlers() called outside the main thread; only atexit is hooked")
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            signal.signal(signum, self._make_handler(previous))

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

        memory = self._memory if self._memory is not None else read_memory_info()
        plan = plan_launch(s, memory=memory)
        self.plan = plan
        logger.info("ComfyUI command: %s\n%s", shlex.join(plan.command), "\n".join(f"  - {n}" for n in plan.notes))

        if _port_in_use(s.comfy_host, s.comfy_port):
            raise ComfyBootError(
                f"port {s.comfy_port} on {s.comfy_host} is already in use by another process; set "
                "COMFY_PORT to a free port, or COMFY_URL to use the server that listens there"
            )

        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")  # log lines reach the file (and the error tail) at once
        try:
            s.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(s.log_file, "ab") as log:
                stamp = datetime.datetime.now().isoformat(timespec="seconds")
                log.write(f"\n===== {stamp} worker starts ComfyUI: {shlex.join(plan.command)}\n".encode())
                log.flush()
                self._log_offset = log.tell()
                self._stopped_by_us = False
                self._proc = subprocess.Popen(
                    plan.command,
                    cwd=s.comfy_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # own process group: stop() can end all of it
                )
        except OSError as exc:
            raise ComfyBootError(f"cannot start ComfyUI with {shlex.join(plan.command[:2])}: {exc}") from exc
        self._register_atexit()
        logger.info(
            "ComfyUI started (pid %d); waiting up to %.0f s for %s%s; log: %s",
            self._proc.pid, s.boot_timeout, self.url, HEALTH_PATH, s.log_file,
        )  # fmt: skip

    def _why_not_alive(self) -> str | None:
        """None when usable, else a one-line reason for the log and the error message."""
        proc = self._proc
        if proc is None:
            return "ComfyUI was not started"
        code = proc.poll()
        if code is not None:
            return f"ComfyUI (pid {proc.pid}) exited with {self._describe_exit(code)}"
        error = self._client.health_error(self.health_timeout)
        if error is None:
            return None
        time.sleep(min(self.poll_interval, 0.5))  # one miss can be a busy moment: ask once more
        code = proc.poll()
        if code is not None:
            return f"ComfyUI (pid {proc.pid}) exited with {self._describe_exit(code)}"
        error = self._client.health_error(self.health_timeout)
        if error is None:
            return None
        return f"ComfyUI (pid {proc.pid}) runs but does not answer {self.url}{HEALTH_PATH}: {error}"

    def _describe_exit(self, code: int) -> str:
        if code >= 0:
            return f"exit code {code}"
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        text = f"signal {name}"
        if -code == signal.SIGKILL and not self._stopped_by_us:
            text += " (killed from outside; in a container usually the out-of-memory killer)"
        elif self._stopped_by_us:
            text += " (stopped by the worker)"
        return text

    def _tail_block(self, lines: int = 40) -> str:
        tail = self.log_tail(lines)
        if not tail:
            return f"ComfyUI wrote nothing to {self.settings.log_file}."
        return f"Last lines of {self.settings.log_file}:\n{tail}"

    def _reap_group(self, proc: subprocess.Popen[bytes], wait: float = 0.0) -> None:
        """Kill what is left of an exited child's group and reap what we are parent of."""
        pgid = proc.pid
        if proc.poll() is None:
            return
        if _group_members(pgid):
            _signal_group(pgid, signal.SIGKILL)
        end = time.monotonic() + wait
        while True:
            _reap(pgid)
            if not _group_members(pgid) or time.monotonic() >= end:
                return
            time.sleep(0.02)

    def _register_atexit(self) -> None:
        if not self._atexit_registered:
            self._atexit_registered = True
            atexit.register(self.shutdown)

    def _make_handler(self, previous):
        def handler(signum, frame):
            logger.warning("worker got %s: stopping ComfyUI", signal.Signals(signum).name)
            self.shutdown()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_IGN:
                return
            elif signum == signal.SIGINT:
                raise KeyboardInterrupt
            else:  # SIG_DFL: die of the same signal, as the worker would have without us
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        return handler


# ---------------------------------------------------------------------- process-group helpers
def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        logger.error("cannot signal ComfyUI's process group %d: %s", pgid, exc)


def _reap(pgid: int) -> None:
    """Collect exited members of the group that are our children (reparented to us if we are PID 1)."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, read from /proc."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():  # not Linux: ask the kernel whether the group has any member
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _port_in_use(host: str, port: int) -> bool:
    """True when something already accepts connections on (host, port)."""
    probe = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((probe, port), timeout=0.5):
            return True
    except OSError:
        return False
