"""``PREFETCH_MODELS``: what reading the model files ahead buys, measured on a cold page cache.

Writes model-sized stand-in files (random bytes) into ``--folder`` (put it on the disk you want to
measure, e.g. a network volume), drops them from the page cache (``posix_fadvise DONTNEED``), then
times three reads of all of them:

1. cold, one reader per file in turn (what ComfyUI's loaders do without prefetch);
2. the prefetch itself (worker/prefetch.py: ``--readers`` parallel readers), after dropping the
   cache again;
3. the loaders' read right after the prefetch (warm: from the page cache).

Usage: python bench/prefetch.py [--folder /tmp/wan22-prefetch] [--files 2] [--gb 1.0] [--readers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from worker.prefetch import prefetch, read_through  # noqa: E402


def drop_from_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sequential(paths: list[Path]) -> float:
    started = time.monotonic()
    for path in paths:
        read_through(path, 0, path.stat().st_size)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/wan22-prefetch"))
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--gb", type=float, default=1.0, help="size of each file")
    parser.add_argument("--readers", type=int, default=4)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    size = int(args.gb * 1e9)
    paths = []
    for n in range(args.files):
        path = args.folder / f"model_{n}.safetensors"
        if not path.exists() or path.stat().st_size != size:
            with open(path, "wb") as fh:
                for _ in range(size // (64 << 20)):
                    fh.write(os.urandom(64 << 20))
                fh.write(os.urandom(size % (64 << 20)))
        paths.append(path)
    total = size * len(paths) / 1e6

    for path in paths:
        drop_from_cache(path)
    cold = sequential(paths)
    for path in paths:
        drop_from_cache(path)
    _, prefetch_s = prefetch(paths, args.readers)
    warm = sequential(paths)
    rows = {"cold read, no prefetch": cold, f"prefetch, {args.readers} readers": prefetch_s, "read after the prefetch": warm}
    print(f"{len(paths)} files of {args.gb:g} GB in {args.folder}:")
    print("| read | seconds | MB/s |\n|---|---|---|")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.2f} | {total / seconds:.0f} |")
    print(json.dumps({name: round(seconds, 2) for name, seconds in rows.items()}))


if __name__ == "__main__":
    main()
