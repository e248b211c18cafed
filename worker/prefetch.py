"""``PREFETCH_MODELS=true``: read a task's model files while ComfyUI boots, so its loaders find them
in the page cache.

A network volume reads a few hundred MB/s to one reader; several readers in parallel get more of
it, and the reading overlaps ComfyUI's own start. The pages stay cached only while the machine has
free RAM for them (docs/deployment.md says when this helps). Runs in a daemon thread and never fails
the worker: a file it cannot read is logged and skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 16 * 1024 * 1024
READERS = 4


def read_through(path: Path, start: int, end: int) -> int:
    """Read bytes [start, end) of ``path`` and drop them; returns how many were read."""
    done = 0
    with open(path, "rb", buffering=0) as fh:
        fh.seek(start)
        while done < end - start:
            chunk = fh.read(min(CHUNK, end - start - done))
            if not chunk:
                break
            done += len(chunk)
    return done


def prefetch(paths: list[Path], readers: int = READERS) -> tuple[int, float]:
    """Read every file with ``readers`` parallel readers (each file split in ranges); (bytes, seconds)."""
    started = time.monotonic()
    ranges = []
    for path in paths:
        try:
            size = path.stat().st_size
        except OSError as exc:
            log.warning("prefetch: cannot read %s: %s", path, exc)
            continue
        step = max(CHUNK, -(-size // readers))
        ranges += [(path, offset, min(offset + step, size)) for offset in range(0, size, step)]
    with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="prefetch") as pool:
        total = sum(pool.map(lambda r: _safe_read(*r), ranges))
    return total, time.monotonic() - started


def _safe_read(path: Path, start: int, end: int) -> int:
    try:
        return read_through(path, start, end)
    except OSError as exc:
        log.warning("prefetch: reading %s failed: %s", path, exc)
        return 0


def start_prefetch(paths: list[Path], readers: int = READERS) -> threading.Thread:
    """Prefetch in the background; logs how much it read and how fast."""

    def run() -> None:
        total, seconds = prefetch(paths, readers)
        log.info("prefetch: read %.2f GB of %d model files in %.1f s (%.0f MB/s)",
                 total / 1e9, len(paths), seconds, total / 1e6 / max(seconds, 1e-6))  # fmt: skip

    thread = threading.Thread(target=run, name="prefetch", daemon=True)
    thread.start()
    return thread
