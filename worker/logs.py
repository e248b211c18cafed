"""Logging setup: one format, the job id on every line, and no base64 blobs ever.

The job id travels in a context variable, which ``handler.py`` copies into the worker thread,
so every module can log plainly and still be attributed to its job.
"""

from __future__ import annotations

import contextvars
import logging
import re

JOB_ID: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="-")

#: A run of base64 this long in a log line is a payload (image or video), never useful to read;
#: either alphabet, standard (``+/``) or URL-safe (``-_``), since jobs may send both.
_BLOB = re.compile(r"[A-Za-z0-9+/=_-]{200,}")


class _JobContext(logging.Filter):
    """Adds ``job_id`` to every record and cuts base64 blobs out of the rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = JOB_ID.get()
        message = record.getMessage()
        if _BLOB.search(message):
            record.msg, record.args = _BLOB.sub(lambda mt: f"<{len(mt.group())} chars of base64>", message), None
        return True


def configure_logging(level: str) -> None:
    """Make the worker's filtered handler the root logger's only one (idempotent).

    Libraries add their own root handlers at import (runpod's ``rp_upload`` calls
    ``basicConfig``): they would print every line twice, the second time without the job id and
    the base64 filter, so they are removed.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(job_id)s] %(name)s: %(message)s"))
    handler.addFilter(_JobContext())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "websocket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
