"""The time one fetch may take: its own deadline, the job's deadline and the job's stop flag.

Per-read timeouts bound each wait but not their sum: a server that sends its TLS handshake, its
headers or its body a byte at a time, each within the timeout, holds a fetch for as long as it
likes. So :class:`FetchClock` runs a watchdog thread that shuts the fetch's sockets down the moment
the earlier of the two deadlines passes or the stop flag is set; whatever read was waiting returns
at once, and the fetch raises :meth:`FetchClock.error`. A shutdown, unlike a socket timeout
recomputed before each read, also reaches reads made inside urllib3's and the TLS layer's C code.

The watchdog shuts down its own duplicate of each socket (``socket.dup``): a descriptor the
connection has closed, and the system may have given to another socket, is never touched.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from types import TracebackType

from comfy_bootstrap.errors import ComfyError, ExecutionInterrupted, ExecutionTimeout
from worker.errors import WorkerError

#: How often the watchdog looks at the stop flag (the deadlines it waits for exactly).
_POLL_SECONDS = 0.05


class FetchClock:
    """The deadlines of one fetch and the watchdog that enforces them; a context manager.

    ``seconds``: the fetch's own limit (None: none), counted from now; a failure to meet it is a
    ``deadline_error`` naming ``deadline_setting``. ``job_deadline``: a ``time.monotonic()`` value
    by which the whole job must end; ``stop``: the job's cancel flag.
    """

    def __init__(
        self,
        seconds: float | None,
        *,
        deadline_error: type[WorkerError],
        deadline_setting: str,
        job_deadline: float | None = None,
        stop: threading.Event | None = None,
    ):
        own_end = math.inf if seconds is None else time.monotonic() + seconds
        job_end = math.inf if job_deadline is None else job_deadline
        self.seconds = seconds
        self._end = min(own_end, job_end)
        self._job_ends_first = job_end < own_end
        self._deadline_error = deadline_error
        self._deadline_setting = deadline_setting
        self._stop = stop
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._cut = False
        self._finished = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="fetch-watchdog", daemon=True)

    def __enter__(self) -> FetchClock:
        self._watchdog.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None) -> None:
        self._finished.set()
        self._watchdog.join()
        self.release()

    @property
    def over(self) -> bool:
        """The fetch must end: a deadline passed or the job was cancelled."""
        return (self._stop is not None and self._stop.is_set()) or self.remaining() <= 0

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def timeout(self, per_read: float) -> float:
        """How long the next connect or read may wait: the per-read timeout or what is left."""
        return max(0.001, min(per_read, self.remaining()))

    def watch(self, sock: socket.socket) -> None:
        """Cut ``sock`` when the fetch must end (at once if it already must)."""
        duplicate = sock.dup()
        with self._lock:
            self._watched.append(duplicate)
            cut = self._cut
        if cut:
            _shut_down(duplicate)

    def release(self) -> None:
        """Forget the sockets watched so far (after each hop: their connection is closed)."""
        with self._lock:
            watched, self._watched = self._watched, []
        for duplicate in watched:
            duplicate.close()

    def check(self, where: str, received: int = 0, declared: int | None = None) -> None:
        """Raise :meth:`error` if the fetch must end."""
        if self.over:
            raise self.error(where, received, declared)

    def error(self, where: str, received: int = 0, declared: int | None = None) -> WorkerError | ComfyError:
        """Why the fetch ended: the job was cancelled, the job's time ran out, or the fetch's own."""
        got = f" ({received} of {declared} bytes received)" if declared else f" ({received} bytes received)" if received else ""
        if self._stop is not None and self._stop.is_set():
            return ExecutionInterrupted(f"{where}: the job was cancelled during the download{got}")
        if self._job_ends_first:
            return ExecutionTimeout(f"{where}: the job's time budget (JOB_TIMEOUT) ran out during the download{got}")
        return self._deadline_error(
            f"{where}: the download did not finish within the {self.seconds:g} s of {self._deadline_setting}{got}"
        )

    def _watch(self) -> None:
        while not self._finished.wait(min(_POLL_SECONDS, max(self.remaining(), 0.0))):
            if self.over:
                with self._lock:
                    self._cut = True
                    watched = list(self._watched)
                for duplicate in watched:
                    _shut_down(duplicate)
                return


def _shut_down(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the peer
        pass
