"""The LoRA cache on disk: its room (the budget ``LORA_CACHE_BYTES``, the disk's free space,
eviction), its index files, and writes that are whole or absent.

A download reserves the bytes it will write before its body is read: its ``Content-Length``, or
``LORA_MAX_BYTES`` when the server sends none. The cache must fit them within its budget once the
files that may go are evicted, least recently used first; and the disk must have them free, with
:func:`free_margin` to spare. A file may not go while a job of this worker pins it, nor within
``recent_use`` seconds of its last use: a job on another worker of the same volume may be loading
it. When that is not enough, the download fails at once with :class:`StorageFull`: the budget is
hard, and waiting would rarely help, since files other workers used stay protected for minutes.
Running out of space (or quota) while writing is the same error.

What the cache holds is counted from the folder itself, so every worker sharing it is seen: its
files, and the partial files of downloads in progress (at their size so far).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker.errors import StorageFull

log = logging.getLogger(__name__)

#: Every cached file's name ends so: ``<sha256>.safetensors``.
SUFFIX = ".safetensors"
#: A file being written (a download, an index entry) is ``.download-<random>.part`` until renamed.
TEMP_PREFIX, TEMP_SUFFIX = ".download-", ".part"

#: The errors of a write that found no room: the disk, or the user's quota on it.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass(frozen=True)
class CachedFile:
    """One file of the cache: when it was last used (its mtime), its size, where it is."""

    used: float
    size: int
    path: Path


def free_margin(disk_bytes: int) -> int:
    """Bytes a download leaves free: 1% of the disk, at most 1 GiB (a volume written to its last
    byte fails the writes of every worker and of ComfyUI)."""
    return min(2**30, disk_bytes // 100)


def cached_files(folder: Path, is_cached: Callable[[str], bool]) -> list[CachedFile]:
    """Every file of ``folder`` whose name ``is_cached`` says is a cache entry."""
    files = []
    for path in folder.iterdir():
        if is_cached(path.name):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            files.append(CachedFile(stat.st_mtime, stat.st_size, path))
    return files


def partial_bytes(folder: Path, pattern: str) -> int:
    """What the downloads in progress (of every worker) have written so far."""
    total = 0
    for path in folder.glob(pattern):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def evict(files: list[CachedFile], room: int, may_go: Callable[[CachedFile], bool]) -> tuple[int, int]:
    """Delete least recently used files that ``may_go`` until the rest fit in ``room`` bytes.

    Returns (bytes still over ``room``, 0 when they fit; files deleted).
    """
    total = sum(file.size for file in files)
    evicted = 0
    for file in sorted(files, key=lambda f: f.used):
        if total <= room:
            break
        if not may_go(file):
            continue
        try:
            file.path.unlink()
        except FileNotFoundError:
            pass  # another worker evicted it first
        except OSError as exc:
            log.warning("LoRA cache: cannot evict %s: %s", file.path.name, os.strerror(exc.errno or 0))
            continue
        total -= file.size
        evicted += 1
        log.info("LoRA cache: evicted %s (%d bytes, last used %s)", file.path.name, file.size, time.ctime(file.used))
    return max(0, total - room), evicted


def require_free(folder: Path, need: int, where: str) -> None:
    """Raise :class:`StorageFull` unless ``folder``'s disk has ``need`` bytes free and the margin."""
    usage = shutil.disk_usage(folder)
    margin = free_margin(usage.total)
    if usage.free < need + margin:
        raise StorageFull(
            f"{where}: the disk of the LoRA cache {folder} has {usage.free:,} bytes free; the download needs "
            f"{need:,} and {margin:,} more are kept free (free some space on the volume, lower LORA_CACHE_BYTES, "
            "or give the endpoint a larger volume)"
        )


def no_room(exc: OSError, folder: Path, where: str, written: int) -> StorageFull | None:
    """The :class:`StorageFull` a write's ``exc`` means, or None when it is another failure."""
    if exc.errno not in _NO_ROOM:
        return None
    return StorageFull(
        f"{where}: no space left on the disk of the LoRA cache {folder} after {written:,} bytes of the download "
        f"({os.strerror(exc.errno or 0)}); the partial file was removed (free some space on the volume, lower "
        "LORA_CACHE_BYTES, or give the endpoint a larger volume)"
    )


# --- The folder and its index ------------------------------------------------------------------


def writable_problem(folder: Path, must_exist: Path | None) -> str | None:
    """Why ``folder`` cannot hold the cache, or None (it is created, and a probe file written)."""
    if must_exist is not None and not must_exist.is_dir():
        return f"{must_exist} is not mounted"
    try:
        folder.mkdir(parents=must_exist is None, exist_ok=True)
        write_probe(folder)
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else type(exc).__name__
    return None


def write_probe(folder: Path) -> None:
    descriptor, name = tempfile.mkstemp(prefix=".probe-", dir=folder)
    try:
        os.write(descriptor, b"ok")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
        os.unlink(name)


def index_entry(folder: Path, url: str) -> Path:
    """Where the index records ``url`` (its hash: the URL may hold a token in its query)."""
    return folder / "index" / f"{hashlib.sha256(url.encode('utf-8')).hexdigest()}.json"


def prune_index(folder: Path) -> None:
    """Drop index entries whose file is gone."""
    for entry in (folder / "index").glob("*.json"):
        try:
            digest = json.loads(entry.read_text(encoding="utf-8"))["sha256"]
            if (folder / f"{digest}{SUFFIX}").exists():
                continue
        except (OSError, ValueError, KeyError, TypeError):
            pass
        entry.unlink(missing_ok=True)


def write_atomically(path: Path, text: str) -> None:
    descriptor, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def fsync_folder(folder: Path) -> None:
    """Make the rename durable; some network file systems cannot fsync a folder, which is fine."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            log.debug("LoRA cache: fsync of %s failed: %s", folder, exc)
    finally:
        os.close(descriptor)
