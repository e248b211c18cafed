"""The Hugging Face Hub side of scripts/models.py: what the Hub says of a file, and fetching it into place.

Why not hf_hub_download: in huggingface_hub 2.4.0 it writes to a temporary file of its own that it
deletes when the download fails, so nothing survives to continue. This keeps its own ``.part``
file beside the file's place and uses the library's http_get (range request, retries, progress
bar) to fill it; the file gets its name only once its size and SHA-256 match the Hub's.

HF_TOKEN (for gated repositories) is sent to the Hub only, never to the storage the Hub redirects
downloads to, and never printed; HF_ENDPOINT names another Hub (a mirror).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from worker.model_files import human_size
from worker.safetensors import SUFFIXES, NotSafetensors, read_header
from worker.tasks.base import HubFile

try:
    import httpx2
    from huggingface_hub import HfApi, constants, get_hf_file_metadata, get_token, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    from huggingface_hub.file_download import http_get
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import build_hf_headers, tqdm
except ImportError as exc:  # huggingface_hub, or one of its own dependencies (httpx2), is missing
    HUB_IMPORT_ERROR: ImportError | None = exc
else:
    HUB_IMPORT_ERROR = None

REVISION = "main"
#: Bytes read at a time while hashing.
CHUNK = 8 * 1024 * 1024
#: What a run without huggingface_hub 2.x says, with the import error.
NEEDS_HUB = "huggingface_hub 2.x is needed: pip install huggingface_hub==2.4.0"


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
    """One file to put in place: its ComfyUI folder and name, where it comes from, which tasks need it."""

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
class Place:
    """What the target holds of a file: the place it has or will have, and any partial download."""

    path: Path
    size: int | None
    part: Path
    part_size: int

    @property
    def exists(self) -> bool:
        return self.size is not None


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def has_token() -> bool:
    return bool(get_token())


def describe_remote(files: Sequence[Wanted], endpoint: str) -> None:
    """Fill each file's size and SHA-256 from the Hub (one paths-info call per repository)."""
    api = HfApi(endpoint=endpoint)
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


def download(want: Wanted, local: Place, action: str, endpoint: str) -> None:
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

