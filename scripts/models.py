#!/usr/bin/env python3
"""Put the model files of the worker's tasks on a network volume: download, continue, verify.

    pip install huggingface_hub==2.4.0
    python scripts/models.py --volume /workspace --task i2v     # the i2v task's files, its 4-step LoRAs too
    python scripts/models.py --volume /workspace --task i2v --speed default   # without the 4-step LoRAs
    python scripts/models.py --volume /workspace --dry-run      # every task: what would be fetched, sizes
    python scripts/models.py --volume /workspace --check        # present? right size? right SHA-256?

The files are the tasks' model specs (worker/tasks: ComfyUI folder, default name, the MODEL_*
variable that renames it, where the Hugging Face Hub publishes it). Names come from the
environment exactly as the worker reads them, and each file goes to <volume>/models/<folder>/<name>
(the name may hold a subfolder), or stays where ComfyUI already finds it (models/unet,
models/clip). A file several tasks share is fetched once.

A download goes to <name>.<first 12 hex digits of its SHA-256>.part beside its place and is
continued from there after an interruption (an HTTP range request); the file gets its name only
once its size and SHA-256 match the Hub's. A file already under its name that is shorter than the
Hub's and whose safetensors header declares the Hub's size (an earlier download cut short) is
continued too; any other file that does not match is downloaded again, and replaced only once the
new copy is verified.

Why not hf_hub_download: in huggingface_hub 2.4.0 it writes to a temporary file of its own that it
deletes when the download fails, so nothing survives to continue. The script keeps its own .part
file and uses the library's http_get (range request, retries, progress bar) to fill it.

The Hub is reached through huggingface_hub: HF_TOKEN (for gated repositories) is sent to the Hub
only, never printed; HF_ENDPOINT names another Hub (a mirror). Docs: docs/deployment.md.

Exit codes: 0 done (--check: every file is right); 1 a file is missing or wrong (--check), or a
download failed; 2 bad arguments or configuration, or the Hub refused or could not be reached;
130 interrupted (partial files stay and the next run continues them).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from comfy_bootstrap.config import ComfySettings  # noqa: E402
from comfy_bootstrap.models import ModelFile, on_volume, searched_dirs  # noqa: E402
from worker.model_files import human_size  # noqa: E402
from worker.safetensors import SUFFIXES, NotSafetensors, read_header  # noqa: E402
from worker.settings import ConfigError, Settings  # noqa: E402
from worker.tasks import REGISTRY, SPEED_NAMES, TASK_NAMES  # noqa: E402
from worker.tasks.base import DEFAULT_SPEED, HubFile, ModelSpec, Task  # noqa: E402

try:
    import httpx2
    from huggingface_hub import HfApi, constants, get_hf_file_metadata, get_token, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    from huggingface_hub.file_download import http_get
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import build_hf_headers, tqdm
except ImportError as exc:  # only the worker's own modules are needed for --help
    HUB_IMPORT_ERROR: ImportError | None = exc
else:
    HUB_IMPORT_ERROR = None

EXIT_OK, EXIT_WRONG, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
REVISION = "main"
#: Bytes read at a time while hashing.
CHUNK = 8 * 1024 * 1024


class HubAccessError(Exception):
    """The Hub refused or could not be reached; the message says what to do."""


class DownloadError(Exception):
    """One file could not be put in place; the message names it and says what to do."""


@dataclass(frozen=True)
class Remote:
    """A file as the Hub describes it."""

    size: int
    #: LFS files carry their SHA-256; small files kept in git only have their git blob id.
    sha256: str | None
    blob_id: str


@dataclass
class Wanted:
    """One file for the volume: where it goes, where it comes from, which tasks need it."""

    folder: str
    name: str
    label: str
    setting: str
    source: HubFile
    tasks: list[str] = field(default_factory=list)
    remote: Remote | None = None

    @property
    def origin(self) -> str:
        return f"{self.source.repo}/{self.source.path}"


@dataclass(frozen=True)
class OnVolume:
    """What the volume holds of a file: the place it has or will have, and any partial download."""

    path: Path
    size: int | None
    part: Path
    part_size: int

    @property
    def exists(self) -> bool:
        return self.size is not None


# ---- what to fetch -------------------------------------------------------------------------------
def wanted_files(settings: Settings, tasks: Sequence[str], speeds: Sequence[str] | None = None) -> list[Wanted]:
    """Every file the tasks load at the given speeds (None: all of them), once, with the names
    configured by the MODEL_* variables."""
    files: dict[tuple[str, str], Wanted] = {}
    for task in tasks:
        for spec in _task_specs(REGISTRY[task], speeds):
            name = settings.model_names[spec.env]
            if spec.source is None:
                print(f"note: {spec.label} {name!r} ({spec.env}) has no known Hub source: put it in models/{spec.folder} yourself")
                continue
            want = files.setdefault((spec.folder, name), Wanted(spec.folder, name, spec.label, spec.env, spec.source))
            if want.source != spec.source:
                raise ConfigError(f"models/{spec.folder}/{name} would be both {want.origin} and {spec.source.repo}/{spec.source.path}")
            if task not in want.tasks:
                want.tasks.append(task)
    return list(files.values())


def _task_specs(task: Task, speeds: Sequence[str] | None) -> list[ModelSpec]:
    if speeds is None:
        return list(task.all_specs)
    chosen = [task.specs(speed) for speed in speeds if speed == DEFAULT_SPEED or speed in task.speeds]
    return list(dict.fromkeys(spec for specs in chosen for spec in specs))


def describe_remote(api: HfApi, files: Sequence[Wanted]) -> None:
    """Fill each file's size and SHA-256 from the Hub (one paths-info call per repository)."""
    by_repo: dict[str, list[Wanted]] = {}
    for want in files:
        by_repo.setdefault(want.source.repo, []).append(want)
    for repo, group in by_repo.items():
        try:
            infos = api.get_paths_info(repo, sorted({w.source.path for w in group}), revision=REVISION)
        except (HfHubHTTPError, httpx2.HTTPError) as exc:
            raise HubAccessError(hub_failure(exc, repo, api.endpoint)) from exc
        found = {info.path: info for info in infos if isinstance(info, RepoFile)}
        for want in group:
            info = found.get(want.source.path)
            if info is None:
                raise HubAccessError(f"{want.origin} is not on the Hub ({api.endpoint}): was it renamed? ({want.setting})")
            want.remote = Remote(info.size, info.lfs.sha256 if info.lfs else None, info.blob_id)


def hub_failure(exc: Exception, repo: str, endpoint: str) -> str:
    """One line saying why the Hub refused, and what to do; never the token."""
    token = "the token in use was refused" if get_token() else "no token: HF_TOKEN is not set"
    if isinstance(exc, GatedRepoError):
        return f"{repo} is gated: accept its terms at {endpoint}/{repo} and set HF_TOKEN to a token of that account ({token})"
    if isinstance(exc, RepositoryNotFoundError):
        return f"{repo} was not found at {endpoint}, or it is private ({token})"
    if isinstance(exc, HfHubHTTPError):
        return f"the Hub at {endpoint} answered {str(exc).splitlines()[0]}"
    if isinstance(exc, httpx2.HTTPError):
        return f"cannot reach the Hub at {endpoint} ({type(exc).__name__}: {exc}); check the network or HF_ENDPOINT"
    return f"{type(exc).__name__}: {exc}"


def where_on_volume(comfy: ComfySettings, want: Wanted) -> OnVolume:
    found = on_volume(comfy, ModelFile(want.folder, want.name))
    path = found or searched_dirs(comfy, want.folder)[0] / want.name
    part = part_path(path, want.remote)
    return OnVolume(path, found.stat().st_size if found else None, part, part.stat().st_size if part.is_file() else 0)


def part_path(path: Path, remote: Remote) -> Path:
    """Where the download of this version of the file collects: a new version never continues an old one."""
    return path.with_name(f"{path.name}.{(remote.sha256 or remote.blob_id)[:12]}.part")


def continues_download(path: Path, size: int) -> bool:
    """Whether the file under the final name looks like the start of the Hub's file (a download cut short)."""
    if not path.name.lower().endswith(SUFFIXES) or path.stat().st_size >= size:
        return False
    try:
        return read_header(path).file_bytes == size
    except NotSafetensors:
        return False


def plan(want: Wanted, local: OnVolume) -> tuple[str, str]:
    """What a download run does with a file (``present``, ``resume``, ``replace``, ``fetch``) and why."""
    size = want.remote.size
    if local.size == size:
        return "present", "the Hub's size; its SHA-256 is checked before it counts as done"
    if local.part_size and local.part_size <= size:
        return "resume", f"{human_size(local.part_size)} of {human_size(size)} downloaded in {local.part.name}"
    if local.exists and continues_download(local.path, size):
        return "resume", f"{human_size(local.size)} of {human_size(size)} there: a download cut short"
    if local.exists:
        return "replace", f"the file there is {human_size(local.size)}, the Hub's is {human_size(size)}"
    return "fetch", ""


# ---- hashing and downloading ---------------------------------------------------------------------
def digest(path: Path, remote: Remote, desc: str) -> tuple[str, str]:
    """(kind, hex digest) of the file, as the Hub gives it: SHA-256 for LFS files, else the git blob id."""
    if remote.sha256:
        hasher, kind = hashlib.sha256(), "SHA-256"
    else:
        hasher, kind = hashlib.sha1(f"blob {path.stat().st_size}\0".encode()), "git blob id"
    with path.open("rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=desc, leave=False, disable=None) as bar:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
            bar.update(len(chunk))
    return kind, hasher.hexdigest()


def expected_digest(remote: Remote) -> str:
    return remote.sha256 or remote.blob_id


def verify(path: Path, want: Wanted) -> str | None:
    """None when the file's size and digest are the Hub's; else what differs (expected and actual)."""
    remote = want.remote
    size = path.stat().st_size
    if size != remote.size:
        return f"{exact_size(size)}, the Hub's file is {exact_size(remote.size)}"
    kind, actual = digest(path, remote, f"checking {want.name}")
    if actual != expected_digest(remote):
        return f"{kind} {actual}, the Hub's is {expected_digest(remote)}"
    return None


def download(want: Wanted, local: OnVolume, action: str, endpoint: str) -> None:
    """Fetch (or continue) the file into its ``.part`` file, verify it, then give it its name."""
    remote, part = want.remote, local.part
    part.parent.mkdir(parents=True, exist_ok=True)
    for stale in part.parent.glob(f"{glob_escape(local.path.name)}.*.part"):
        if stale != part:  # an older version's partial download
            stale.unlink()
    if local.part_size > remote.size:
        part.unlink()
    if action == "resume" and not part.exists() and local.exists:
        os.replace(local.path, part)  # continue the cut-short file under the final name
    warn_disk_space(part, remote.size)
    url = hf_hub_url(want.source.repo, want.source.path, revision=REVISION, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint, retry_on_errors=True)
    except (HfHubHTTPError, httpx2.HTTPError) as exc:
        raise DownloadError(f"{want.name}: {hub_failure(exc, want.source.repo, endpoint)}") from exc
    if meta.size is not None and meta.size != remote.size:
        raise DownloadError(f"{want.name}: the Hub changed it while this ran ({meta.size:,} bytes now, {remote.size:,} before): run again")
    headers = build_hf_headers()
    if _origin(meta.location) != _origin(endpoint):
        headers.pop("authorization", None)  # a signed CDN link: the token stays with the Hub
    with part.open("r+b" if part.exists() else "wb", buffering=0) as f:  # on disk as it arrives
        resume = f.seek(0, os.SEEK_END)
        try:
            http_get(meta.location, f, resume_size=resume, headers=headers, expected_size=remote.size, displayed_filename=want.name)
        except (HfHubHTTPError, httpx2.HTTPError, OSError) as exc:  # the partial file stays for the next run
            raise DownloadError(interrupted(want, part, exc)) from exc
    problem = verify(part, want)
    if problem:
        part.unlink()
        raise DownloadError(
            f"{want.name}: the download from {want.origin} is {problem}; it was deleted. Run again; if it happens again, "
            "the Hub's copy or a proxy in between is at fault"
        )
    local.path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, local.path)


def interrupted(want: Wanted, part: Path, exc: Exception) -> str:
    held = part.stat().st_size if part.exists() else 0
    if held > want.remote.size:
        part.unlink()
        return f"{want.name}: the download went past the Hub's size and was deleted ({exc}); run again"
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"{want.name}: the download stopped at {human_size(held)} of {human_size(want.remote.size)} ({reason}); "
        f"run the same command again to continue it from {part.name}"
    )


def warn_disk_space(part: Path, size: int) -> None:
    have = part.stat().st_size if part.exists() else 0
    free = shutil.disk_usage(part.parent).free
    if free < size - have:
        print(f"warning: {human_size(size - have)} to download but only {human_size(free)} free on {part.parent}")


def exact_size(count: int) -> str:
    """Bytes, with the rounded size beside when it says more: ``14,290,000,000 bytes (14.3 GB)``."""
    rounded = human_size(count)
    return f"{count:,} bytes" + (f" ({rounded})" if not rounded.endswith(("bytes", "byte")) else "")


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


# ---- the three modes ------------------------------------------------------------------------------
def fix_command(volume: Path, tasks: Iterable[str]) -> str:
    flags = " ".join(f"--task {task}" for task in dict.fromkeys(tasks))
    return f"python scripts/models.py --volume {volume} {flags}".rstrip()


def show(want: Wanted, local: OnVolume, status: str, why: str = "") -> None:
    print(f"{status:<8} {want.name}  {human_size(want.remote.size)}  ({want.label}; {', '.join(want.tasks)})")
    print(f"{'':<8}   from {want.origin}")
    print(f"{'':<8}   to   {local.path}")
    if why:
        print(f"{'':<8}   {why}")


def show_plan(want: Wanted, comfy: ComfySettings) -> tuple[OnVolume, str]:
    """Where the file is or goes and what to do with it, printed; (place, action)."""
    local = where_on_volume(comfy, want)
    action, why = plan(want, local)
    show(want, local, action, why)
    return local, action


def dry_run(files: Sequence[Wanted], comfy: ComfySettings) -> int:
    to_fetch = 0
    for want in files:
        local, action = show_plan(want, comfy)
        if action != "present":
            to_fetch += want.remote.size - (local.part_size if action == "resume" and local.part_size else 0)
    total = sum(w.remote.size for w in files)
    print(f"\n{len(files)} files, {total / 1e9:.2f} GB in all; to download: {to_fetch / 1e9:.2f} GB. Dry run: nothing was written.")
    return EXIT_OK


def check(files: Sequence[Wanted], comfy: ComfySettings) -> int:
    bad: list[Wanted] = []
    for want in files:
        local = where_on_volume(comfy, want)
        if not local.exists:
            status, why = "missing", f"expected at {' or '.join(str(d / want.name) for d in searched_dirs(comfy, want.folder))}"
            if local.part_size:
                why += f"; {human_size(local.part_size)} of it downloaded in {local.part}"
        else:
            problem = verify(local.path, want)
            status, why = ("ok", "") if problem is None else ("wrong", f"it is {problem}")
        show(want, local, status, why)
        if status != "ok":
            bad.append(want)
    if not bad:
        print(f"\nall {len(files)} files are present with the Hub's size and SHA-256")
        return EXIT_OK
    names = ", ".join(w.name for w in bad)
    print(f"\n{len(bad)} of {len(files)} files missing or wrong: {names}")
    print(f"fix: {fix_command(comfy.volume_path, (t for w in bad for t in w.tasks))}")
    return EXIT_WRONG


def fetch(files: Sequence[Wanted], comfy: ComfySettings, endpoint: str) -> int:
    failed: list[str] = []
    downloaded = 0
    started = time.monotonic()
    for want in files:
        local, action = show_plan(want, comfy)
        try:
            if action == "present":
                problem = verify(local.path, want)
                if problem is None:
                    print(f"{'':<8}   ok")
                    continue
                print(f"{'':<8}   it is {problem}: downloading it again")
                action = "replace"
            download(want, local, action, endpoint)
        except DownloadError as exc:
            print(f"{'':<8}   FAILED: {exc}")
            failed.append(str(exc))
            continue
        downloaded += want.remote.size
        print(f"{'':<8}   ok: size and {'SHA-256' if want.remote.sha256 else 'git blob id'} match the Hub's")
    minutes = (time.monotonic() - started) / 60
    if failed:
        print(f"\n{len(failed)} of {len(files)} files failed:")
        for message in failed:
            print(f"- {message}")
        return EXIT_WRONG
    print(f"\nall {len(files)} files are in place under {comfy.volume_path / 'models'} ({downloaded / 1e9:.2f} GB downloaded in {minutes:.1f} min)")
    return EXIT_OK


# ---- the command line -----------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/models.py",
        description="Download the model files of the worker's tasks onto a network volume, and check them.",
        epilog="HF_TOKEN: a Hugging Face token for gated repositories (never printed). MODEL_*: the file names, as the worker reads them.",
    )
    parser.add_argument(
        "--volume",
        type=Path,
        default=Path(os.environ.get("VOLUME_PATH") or "/runpod-volume"),
        help="the volume holding models/ (default: $VOLUME_PATH or /runpod-volume; on a pod usually /workspace)",
    )
    parser.add_argument(
        "--task",
        action="append",
        choices=(*TASK_NAMES, "all"),
        help="a task whose files to fetch; repeat for several (default: all)",
    )
    parser.add_argument(
        "--speed",
        action="append",
        choices=(DEFAULT_SPEED, *SPEED_NAMES, "all"),
        help="the job speeds to fetch files for; repeat for several (default: all; "
        f"{DEFAULT_SPEED} alone leaves out the speed presets' LoRAs)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only verify the volume (present, size, SHA-256); exit 1 if anything is off")
    mode.add_argument("--dry-run", action="store_true", help="only list what would be fetched, from where, to where, and the sizes")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if HUB_IMPORT_ERROR is not None:
        print(f"scripts/models.py needs huggingface_hub 2.x: pip install huggingface_hub==2.4.0 ({HUB_IMPORT_ERROR})")
        return EXIT_USAGE
    tasks = TASK_NAMES if not args.task or "all" in args.task else tuple(dict.fromkeys(args.task))
    speeds = None if not args.speed or "all" in args.speed else args.speed
    try:
        settings = Settings.from_env({**os.environ, "VOLUME_PATH": str(args.volume)})
        files = wanted_files(settings, tasks, speeds)
    except ConfigError as exc:
        print(f"configuration error: {exc}")
        return EXIT_USAGE
    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    token = "with a token" if get_token() else "no token"
    print(f"volume {settings.comfy.volume_path}; tasks {', '.join(tasks)}; Hub {endpoint} ({token})\n")
    try:
        describe_remote(HfApi(endpoint=endpoint), files)
        if args.dry_run:
            return dry_run(files, settings.comfy)
        if args.check:
            return check(files, settings.comfy)
        return fetch(files, settings.comfy, endpoint)
    except HubAccessError as exc:
        print(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted: partial downloads stay (*.part beside each file); run the same command again to continue")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
