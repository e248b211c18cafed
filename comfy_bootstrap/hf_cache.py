"""Model files in a Hugging Face cache: find the ones a graph needs, and link them where ComfyUI looks.

RunPod's cached models are such a cache (docs/deployment.md, "Cached models"): huggingface_hub's
layout, ``<cache>/models--<org>--<name>/`` with ``blobs/<hash>``, ``snapshots/<commit>/<path>``
(symlinks into ``blobs/``) and ``refs/<branch>`` (a file holding the commit). ComfyUI only searches
folders by ComfyUI folder name (``diffusion_models/<name>``), so the files found are linked into
a folder of the caller's (:func:`link`) that extra_model_paths.yaml then names first.

:func:`search` is a pure function of the directory tree; which files to look for is the caller's
knowledge (this module knows repositories and ComfyUI folders, nothing of any model family).
"""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import REPO_PATTERN
from .models import LAYOUTS, VOLUME_SUBDIRS, ModelFile

_PREFIX = "models--"


@dataclass(frozen=True)
class RepoPin:
    """The one repository (and revision: a commit, or a branch of ``refs/``) to take files from."""

    repo: str
    revision: str | None = None

    @classmethod
    def parse(cls, raw: str) -> RepoPin:
        match = REPO_PATTERN.match(raw.strip())
        if not match:
            raise ValueError("expected a Hugging Face repository as org/name or org/name@revision")
        return cls(match["repo"], match["revision"])

    def __str__(self) -> str:
        return self.repo + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class Snapshot:
    """One revision of a repository in the cache."""

    repo: str
    revision: str
    path: Path
    #: The branch of ``refs/`` that names it ("main"), or "" when none does.
    branch: str = ""

    def __str__(self) -> str:
        return f"{self.repo}@{self.revision[:12]}" + (f" ({self.branch})" if self.branch else "")


@dataclass(frozen=True)
class Sought:
    """A file to look for, and where its publisher keeps it (repository, path), tried first."""

    file: ModelFile
    published: tuple[str, str] | None = None


@dataclass(frozen=True)
class Found:
    file: ModelFile
    snapshot: Snapshot
    #: The file's path inside the snapshot, ``/``-separated.
    relative: str

    @property
    def path(self) -> Path:
        return self.snapshot.path / self.relative


@dataclass(frozen=True)
class CacheSearch:
    """What :func:`search` found in ``cache``, and what it did not."""

    cache: Path
    pin: RepoPin | None
    snapshots: tuple[Snapshot, ...]
    found: tuple[Found, ...]
    missing: tuple[Sought, ...]


def repo_folder(repo: str) -> str:
    """huggingface_hub's folder name for a model repository: ``models--org--name``."""
    return _PREFIX + repo.replace("/", "--")


def snapshots(cache: Path, pin: RepoPin | None = None) -> list[Snapshot]:
    """The revisions to take files from: per repository the one ``refs/main`` names (else each
    snapshot there, by name), or only the pinned repository and revision."""
    if not cache.is_dir():
        return []
    folders = [cache / repo_folder(pin.repo)] if pin else sorted(cache.glob(f"{_PREFIX}*"))
    found: list[Snapshot] = []
    for folder in folders:
        if (folder / "snapshots").is_dir():
            repo = folder.name[len(_PREFIX) :].replace("--", "/", 1)
            found.extend(_revisions(folder, repo, pin.revision if pin else None))
    return found


def candidates(sought: Sought) -> list[str]:
    """Paths inside a snapshot where the file may be, in the order tried."""
    file = sought.file
    names = dict.fromkeys((file.name, posixpath.basename(file.name)))
    folders = dict.fromkeys([file.folder, *(sub.removeprefix("models/") for sub in VOLUME_SUBDIRS.get(file.folder, ()))])
    paths = [sought.published[1]] if sought.published else []
    paths += [layout.format(folder=folder, name=name) for layout in LAYOUTS for folder in folders for name in names]
    return [path for path in dict.fromkeys(paths) if _inside(path)]


def search(cache: Path, sought: Sequence[Sought], pin: RepoPin | None = None) -> CacheSearch:
    """Where each sought file is in the cache: the first candidate path that is a file, trying its
    publisher's repository first, then every other one."""
    revisions = snapshots(cache, pin)
    found: list[Found] = []
    missing: list[Sought] = []
    for item in sought:
        publisher = item.published[0] if item.published else None
        ordered = sorted(revisions, key=lambda snapshot: snapshot.repo != publisher)
        hit = next(
            (Found(item.file, snap, rel) for snap in ordered for rel in candidates(item) if (snap.path / rel).is_file()), None
        )
        if hit is None:
            missing.append(item)
        else:
            found.append(hit)
    return CacheSearch(cache, pin, tuple(revisions), tuple(found), tuple(missing))


def link(found: Sequence[Found], root: Path) -> tuple[tuple[str, Path], ...]:
    """Make ``root/<folder>/<name>`` a symlink to each found file (``root`` is rebuilt, so links of
    an earlier boot go); return the (ComfyUI folder, path) pairs ComfyUI should search."""
    shutil.rmtree(root, ignore_errors=True)
    folders: dict[str, Path] = {}
    for item in found:
        place = root / item.file.folder / item.file.name
        place.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(item.path, place)
        folders.setdefault(item.file.folder, root / item.file.folder)
    return tuple(folders.items())


def describe(result: CacheSearch) -> str:
    """Where each file was found, or looked for, in the cache: for the boot log."""
    if not result.snapshots:
        what = f"MODEL_REPO={result.pin} is not there" if result.pin else "no repository there"
        return f"Hugging Face cache {result.cache}: {what} (no cached model)"
    lines = [f"Hugging Face cache {result.cache}: {', '.join(map(str, result.snapshots))}"]
    lines += [f"  found {f.file.folder}/{f.file.name}: {f.snapshot.repo}/{f.relative}" for f in result.found]
    lines += [f"  not there: {s.file.folder}/{s.file.name} (looked for {', '.join(candidates(s))})" for s in result.missing]
    return "\n".join(lines)


def _revisions(folder: Path, repo: str, revision: str | None) -> list[Snapshot]:
    refs = {ref.name: ref.read_text().strip() for ref in sorted((folder / "refs").glob("*")) if ref.is_file()}
    if revision is not None:
        commit = refs.get(revision, revision)
        path = folder / "snapshots" / commit
        return [Snapshot(repo, commit, path, revision if revision in refs else "")] if path.is_dir() else []
    main = refs.get("main")
    if main and (folder / "snapshots" / main).is_dir():
        return [Snapshot(repo, main, folder / "snapshots" / main, "main")]
    return [Snapshot(repo, path.name, path) for path in sorted((folder / "snapshots").iterdir()) if path.is_dir()]


def _inside(path: str) -> bool:
    """False for a path that would leave the snapshot (a configured name with ``..`` or a leading ``/``)."""
    normal = posixpath.normpath(path)
    return not (normal.startswith(("../", "/")) or normal == "..")
