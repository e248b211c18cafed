"""worker/fetch_clock.py on real sockets: a read blocked past the deadline or the stop flag returns at once."""

from __future__ import annotations

import socket
import threading
import time

from comfy_bootstrap.errors import ExecutionInterrupted, ExecutionTimeout
from worker.errors import InvalidImage
from worker.fetch_clock import FetchClock


def blocked_read_seconds(clock: FetchClock) -> tuple[float, bytes]:
    """How long a read on a silent socket waits under ``clock``, and what it got."""
    ours, theirs = socket.socketpair()
    with ours, theirs, clock:
        clock.watch(ours)
        ours.settimeout(10)
        started = time.monotonic()
        data = ours.recv(10)
        return time.monotonic() - started, data


def test_the_fetchs_own_deadline_cuts_a_blocked_read() -> None:
    clock = FetchClock(0.3, deadline_error=InvalidImage, deadline_setting="IMAGE_URL_DEADLINE")
    seconds, data = blocked_read_seconds(clock)
    assert 0.25 < seconds < 1.0 and data == b""
    error = clock.error("image_url: http://h/a.png", 5, 68)
    assert isinstance(error, InvalidImage)
    assert str(error) == "image_url: http://h/a.png: the download did not finish within the 0.3 s of IMAGE_URL_DEADLINE (5 of 68 bytes received)"


def test_an_earlier_job_deadline_cuts_it_and_is_named() -> None:
    clock = FetchClock(30, deadline_error=InvalidImage, deadline_setting="IMAGE_URL_DEADLINE", job_deadline=time.monotonic() + 0.3)
    seconds, _ = blocked_read_seconds(clock)
    assert seconds < 1.0
    error = clock.error("loras[0].url: http://h/x")
    assert isinstance(error, ExecutionTimeout) and error.code == "timeout"
    assert str(error) == "loras[0].url: http://h/x: the job's time budget (JOB_TIMEOUT) ran out during the download"


def test_the_stop_flag_cuts_it_and_is_named() -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    clock = FetchClock(None, deadline_error=InvalidImage, deadline_setting="IMAGE_URL_DEADLINE", stop=stop)
    seconds, _ = blocked_read_seconds(clock)
    assert seconds < 1.0 and clock.over
    assert isinstance(clock.error("image_url: u"), ExecutionInterrupted)


def test_a_socket_watched_after_the_cut_is_cut_at_once_and_released_sockets_are_closed() -> None:
    clock = FetchClock(0.01, deadline_error=InvalidImage, deadline_setting="IMAGE_URL_DEADLINE")
    ours, theirs = socket.socketpair()
    with ours, theirs, clock:
        time.sleep(0.2)
        clock.watch(ours)
        ours.settimeout(10)
        assert ours.recv(10) == b""
    assert clock._watched == []  # the duplicates were closed on exit
