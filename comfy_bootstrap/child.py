"""The ComfyUI child process: spawned in its own session, its output in a log file, ended as a group.

:class:`ComfyChild` owns one process and nothing else: it knows whether the process runs, why it
exited, what it last wrote, and how to end it together with everything it spawned (ffmpeg,
custom-node helpers). When to start, wait for or restart ComfyUI is :mod:`comfy_bootstrap.server`'s
business.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

#: Bytes of the log read for a tail: enough for 40 long lines, cheap on a big log.
_TAIL_BYTES = 256 * 1024
#: Lines of the tail searched for the ones that explain an exit; each quoted line is cut to this.
_EXPLAIN_WINDOW, MAX_LINE_CHARS = 200, 300
#: Log lines that explain an exit (a traceback's lines are kept as a block besides).
_EXPLAINS = re.compile(
    r"\[(ERROR|WARNING|CRITICAL)\]|^During handling of the above|^The above exception|^[\w.]+(Error|Exception|Exit): "
    r"|Fatal Python error|Segmentation fault|core dumped|Killed|Aborted|out of memory"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=_-]{100,}")
_URL_QUERY = re.compile(r"(\w+://[^\s?#\"']+)\?[^\s\"']*")
_URL_USER = re.compile(r"://[^/\s@\"']+@")

#: The worker's variables ComfyUI, torch, CUDA and the node packs read, by exact name
#: (docs/deployment.md, "Security", lists them); every other variable stays with the worker.
CHILD_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "HF_HOME",
    "XDG_CACHE_HOME", "CC", "CXX", "PYTHONPATH", "PYTHONHOME", "PYTHONIOENCODING", "PYTHONUTF8",
    "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONWARNINGS", "PYTHONFAULTHANDLER", "PYTHONHASHSEED",
})  # fmt: skip
#: ... and by prefix: locale, the CUDA runtime and container toolkit, torch, Triton, xformers, the
#: maths libraries' threads, VideoHelperSuite's own switches.
CHILD_ENV_PREFIXES = (
    "LC_", "CUDA_", "NVIDIA_", "CUBLAS_", "CUDNN_", "NCCL_", "TORCH_", "TORCHINDUCTOR_", "PYTORCH_", "TRITON_",
    "XFORMERS_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "VHS_",
)  # fmt: skip
#: Dropped even under an allowed name or prefix: a name that says it holds a secret.
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
#: Set whatever the worker has: output reaches the log at once, no hub download ever starts, and
#: VideoHelperSuite refuses paths outside ComfyUI's folders.
CHILD_ENV_FORCED = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "VHS_STRICT_PATHS": "1"}


def child_environment(parent: Mapping[str, str]) -> dict[str, str]:
    """The environment ComfyUI runs with: ``parent``'s allowed variables without secrets, plus the forced ones."""
    kept = {
        name: value
        for name, value in parent.items()
        if (name in CHILD_ENV_NAMES or name.startswith(CHILD_ENV_PREFIXES)) and not SECRET_NAME.search(name)
    }
    return {**kept, **CHILD_ENV_FORCED}


class ComfyChild:
    """One running (or exited) ComfyUI process and its process group."""

    def __init__(self, proc: subprocess.Popen[bytes], log_file: Path, log_offset: int, *, stop_grace: float = 5.0):
        self._proc = proc
        self.log_file = log_file
        self._log_offset = log_offset
        self.stop_grace = stop_grace
        self._stopped_by_us = False

    @classmethod
    def spawn(cls, command: list[str], *, cwd: Path, log_file: Path, stop_grace: float = 5.0) -> ComfyChild:
        """Start ``command`` in its own session with stdout and stderr appended to ``log_file``."""
        env = child_environment(os.environ)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as log:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            log.write(f"\n===== {stamp} worker starts ComfyUI: {shlex.join(command)}\n".encode())
            log.flush()
            offset = log.tell()
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: stop() ends all of it
            )
        return cls(proc, log_file, offset, stop_grace=stop_grace)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def exit_code(self) -> int | None:
        """Exit status (negative = killed by that signal); ``None`` while it runs."""
        return self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def killed_from_outside(self) -> bool:
        """Ended by a SIGKILL the worker did not send (in a container: usually the OOM killer)."""
        return self._proc.poll() == -signal.SIGKILL and not self._stopped_by_us

    def wait_exit(self, timeout: float) -> int | None:
        """The exit status once the process is gone, or None if it still runs after ``timeout``."""
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def describe_exit(self, code: int) -> str:
        """``exit code 3``, ``signal SIGKILL (killed from outside; …)``."""
        if code >= 0:
            return f"exit code {code}"
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        text = f"signal {name}"
        if self.killed_from_outside:
            text += " (killed from outside; in a container usually the out-of-memory killer)"
        elif self._stopped_by_us:
            text += " (stopped by the worker)"
        return text

    def stop(self) -> None:
        """End the process and its whole group: SIGTERM, grace period, SIGKILL. Idempotent, lock-free."""
        proc, pgid = self._proc, self._proc.pid  # start_new_session: the child leads its group
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
                logger.warning("ComfyUI's process group did not exit within %.0f s of SIGTERM; sending SIGKILL", self.stop_grace)
                _signal_group(pgid, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                logger.error("ComfyUI (pid %d) did not die after SIGKILL", pgid)
            self.reap_group(wait=2.0)
        if _group_members(pgid):
            logger.error("processes of ComfyUI's group %d survive: %s", pgid, _group_members(pgid))

    def reap_group(self, wait: float = 0.0) -> None:
        """After the child exited: kill what is left of its group and reap what we are parent of."""
        pgid = self._proc.pid
        if self._proc.poll() is None:
            return
        if _group_members(pgid):
            _signal_group(pgid, signal.SIGKILL)
        end = time.monotonic() + wait
        while True:
            _reap(pgid)
            if not _group_members(pgid) or time.monotonic() >= end:
                return
            time.sleep(0.02)

    def log_size(self) -> int:
        """How many bytes the log holds now: a position for :meth:`log_since`."""
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def log_since(self, position: int, limit: int = 4 * 1024 * 1024) -> str:
        """What was written to the log after ``position`` (at most ``limit`` bytes, the latest)."""
        try:
            with open(self.log_file, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(position, size - limit) if position <= size else 0)
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines this process wrote ("" when none)."""
        try:
            with open(self.log_file, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                offset = self._log_offset if self._log_offset <= size else 0
                start = max(offset, size - _TAIL_BYTES)
                fh.seek(start)
                data = fh.read()
        except OSError:
            return ""
        all_lines = data.decode("utf-8", errors="replace").splitlines()
        if start > offset and all_lines:
            all_lines = all_lines[1:]  # the first line was cut by the seek
        return "\n".join(all_lines[-lines:]) if lines > 0 else ""

    def tail_block(self, lines: int = 40) -> str:
        """The log tail as a paragraph for an error message: of the last lines, only those that explain
        an exit (:func:`explaining_lines`), since the log holds every job's lines; the tail as it is
        goes to the worker's own log."""
        tail = self.log_tail(_EXPLAIN_WINDOW)
        if not tail:
            return f"ComfyUI wrote nothing to {self.log_file}."
        logger.warning("the last lines of %s:\n%s", self.log_file, "\n".join(tail.splitlines()[-lines:]))
        shown = "\n".join(explaining_lines(tail.splitlines(), lines))
        return f"Last lines of {self.log_file} that explain it (the whole tail is in the worker's log):\n{shown}"


def explaining_lines(lines: list[str], keep: int) -> list[str]:
    """The last ``keep`` of ``lines`` that explain an exit — tracebacks, error and warning lines,
    fatal signals, and the very last line — without colour codes, base64, URL queries or user
    info, each at most :data:`MAX_LINE_CHARS`."""
    kept, in_traceback = [], False
    for index, line in enumerate(lines):
        plain = _ANSI.sub("", line)
        ends_traceback = in_traceback and not plain.startswith(" ")  # the exception's own line
        in_traceback = plain.startswith("Traceback (most recent call last)") or (in_traceback and plain.startswith(" "))
        if in_traceback or ends_traceback or _EXPLAINS.search(plain) or index == len(lines) - 1:
            kept.append(_quotable(plain))
    return kept[-keep:] if keep > 0 else []


def _quotable(line: str) -> str:
    line = _BASE64_RUN.sub(lambda m: f"<{len(m.group())} chars of base64>", line)
    line = _URL_USER.sub("://…@", _URL_QUERY.sub(r"\1?…", line))
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…"


def stop_on_exit(stop: Callable[[], None]) -> None:
    """Call ``stop`` at interpreter exit and on SIGTERM/SIGINT, then behave as before.

    The previous signal handlers are chained, so the worker's own reaction is unchanged. Signal
    handlers can only be set from the main thread; elsewhere only the exit hook is registered.
    """
    atexit.register(stop)
    if threading.current_thread() is not threading.main_thread():
        logger.warning("stop_on_exit() called outside the main thread; only atexit is hooked")
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _chained(signum, signal.getsignal(signum), stop))


def _chained(signum: int, previous: object, stop: Callable[[], None]) -> Callable[[int, object], None]:
    def handler(received: int, frame: object) -> None:
        logger.warning("worker got %s: stopping ComfyUI", signal.Signals(received).name)
        stop()
        if callable(previous):
            previous(received, frame)
        elif previous == signal.SIG_IGN:
            return
        elif received == signal.SIGINT:
            raise KeyboardInterrupt
        else:  # SIG_DFL: die of the same signal, as the worker would have without us
            signal.signal(received, signal.SIG_DFL)
            os.kill(os.getpid(), received)

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
