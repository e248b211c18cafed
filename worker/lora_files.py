"""LoRAs given by URL → files ComfyUI can load, fetched once and kept in a content-addressed cache.

``cache.fetch(url, "loras[0].url")`` returns the name ComfyUI lists for the file,
``<sha256>.safetensors``, relative to :attr:`LoraCache.folder` — the folder the worker registers
as an extra ComfyUI ``loras`` path. On the way:

* the download goes through :func:`worker.download.fetch` with the LoRA rules: the same address
  guard as ``image_url`` (``ALLOW_PRIVATE_LORA_URLS`` opens it), ``LORA_MAX_BYTES``, a per-read
  timeout and an overall deadline; ``HF_TOKEN`` goes to huggingface.co (and its subdomains) and
  hf.co, ``CIVITAI_TOKEN`` to civitai.com (and its subdomains), as ``Authorization: Bearer``,
  never to the host a redirect leads to;
* the body streams into a temporary file in the cache folder while :class:`LoraSniffer` checks
  it, so an HTML page or a full model is refused early; it is then fsynced and renamed to its
  hash: a partial file is never visible under a final name, and every failure removes it;
* an index (``index/<sha256 of the URL>.json``) maps a URL to the file's hash, so a URL seen
  before is not downloaded again; the same bytes from two URLs are one file;
* two fetches of one URL at once download it once: the second waits for the first and gets the
  same name, or the same error under its own field name (when the first job's own time ran out or
  it was cancelled, the second downloads the file itself);
* a fetch ends with its job: at the job's deadline (``timeout``, naming JOB_TIMEOUT) or when the
  job is cancelled (``cancelled``), while downloading or waiting for another job's download;
* the cache stays within ``LORA_CACHE_BYTES``, a hard budget: a download reserves its size before
  its body is read, evicting the least recently used files that may go (a file's mtime is its last
  use), and is refused with ``storage_full`` when they are not enough or the disk lacks the room
  (:mod:`worker.lora_disk`). Never evicted: a file pinned by this process (from ``fetch`` until
  ``release``), nor one used within ``recent_use`` seconds, which another worker on the same
  network volume may be running a job with. A disk that fills up mid-download is ``storage_full`` too.

The folder is ``LORA_CACHE_DIR`` or ``<VOLUME_PATH>/lora-cache``; when it cannot be written (a
read-only or missing volume) it is ``<WORKER_DIR>/lora-cache``. The choice is made at first use
of :attr:`LoraCache.folder`: read it at boot, before ComfyUI starts, to register it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from comfy_bootstrap.errors import ExecutionInterrupted, ExecutionTimeout
from worker.download import FetchRules, Resolver, redact_url, resolve_host
from worker.download import fetch as guarded_fetch
from worker.errors import InvalidInput, StorageFull
from worker.job_time import JobTime
from worker.lora_disk import (
    SUFFIX,
    TEMP_PREFIX,
    TEMP_SUFFIX,
    CachedFile,
    cached_files,
    evict,
    fsync_folder,
    index_entry,
    no_room,
    partial_bytes,
    prune_index,
    require_free,
    writable_problem,
    write_atomically,
)
from worker.lora_format import LORA_ALLOWED, LoraSniffer, NotALora, lora_tensors
from worker.settings import LoraSettings, Settings

log = logging.getLogger(__name__)

#: The cache folder's name under the volume (or ``WORKER_DIR`` as a fallback). Outside
#: ``models/loras`` on purpose: registered on its own, its files are listed as ``<sha256>.safetensors``.
CACHE_FOLDER_NAME = "lora-cache"
_FILE_NAME = re.compile(r"^[0-9a-f]{64}\.safetensors$")
#: Hosts each token is sent to: exact names, and parents whose subdomains also get it.
_TOKEN_HOSTS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "hf_token": (frozenset({"huggingface.co", "hf.co"}), (".huggingface.co",)),
    "civitai_token": (frozenset({"civitai.com"}), (".civitai.com",)),
}


def token_hosts_match(host: str, token_name: str) -> bool:
    """True when the token ``token_name`` (``hf_token``, ``civitai_token``) belongs to ``host``."""
    exact, parents = _TOKEN_HOSTS[token_name]
    host = host.lower().rstrip(".")
    return host in exact or host.endswith(parents)


#: The errors that end a fetch because its job ended, not because of the URL: another job waiting
#: for the same download tries it again.
_JOB_ENDED = (ExecutionTimeout, ExecutionInterrupted)


@dataclass(eq=False)
class _Reservation:
    """The room one download took in the cache: ``need`` bytes, of which ``written`` are on disk."""

    folder: Path
    where: str  # the field and URL, first words of its messages
    need: int = 0
    written: int = 0


@dataclass
class _Flight:
    """One download in progress, which fetches of the same URL wait for."""

    leader_field: str
    done: threading.Event = field(default_factory=threading.Event)
    waiters: int = 0
    name: str | None = None
    error: BaseException | None = None


class LoraCache:
    """The worker's LoRA files by URL. Thread-safe; one per process (see the module docstring).

    ``resolve`` and ``ca_bundle`` are for tests (a resolver instead of DNS, a test CA);
    ``recent_use`` is how many seconds after its last use a file is safe from eviction.
    """

    def __init__(
        self,
        settings: LoraSettings,
        *,
        volume_path: Path,
        worker_dir: Path,
        recent_use: float = 900.0,
        resolve: Resolver = resolve_host,
        ca_bundle: str | None = None,
    ):
        self.settings = settings
        self._preferred = settings.cache_dir or volume_path / CACHE_FOLDER_NAME
        self._fallback = worker_dir / CACHE_FOLDER_NAME
        self._volume_path = None if settings.cache_dir else volume_path
        self._recent_use = recent_use
        self._resolve = resolve
        self._ca_bundle = ca_bundle
        self._lock = threading.Lock()
        self._folder: Path | None = None
        self._flights: dict[str, _Flight] = {}
        self._pins: Counter[str] = Counter()
        self._reservations: set[_Reservation] = set()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: object) -> LoraCache:
        """The cache as the worker's settings say; ``recent_use`` defaults to a job's longest run."""
        kwargs.setdefault("recent_use", settings.job_timeout + settings.loras.url_deadline + 60)
        return cls(
            settings.loras,
            volume_path=settings.comfy.volume_path,
            worker_dir=settings.comfy.work_dir,
            **kwargs,  # type: ignore[arg-type]
        )

    # --- The API ---------------------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        """The cache folder (chosen, created and cleaned of stale partial files at first use)."""
        with self._lock:
            return self._ready()

    def path(self, name: str) -> Path:
        """The file behind a name :meth:`fetch` returned."""
        return self.folder / name

    def fetch(self, url: str, field: str, *, job_deadline: float | None = None, stop: threading.Event | None = None) -> str:
        """The ComfyUI name (``<sha256>.safetensors``) of the LoRA at ``url``, downloading it if needed.

        The file is pinned (never evicted) until :meth:`release` is called with the name, once per
        fetch. Raise :class:`InvalidInput` starting with ``field`` when the URL is refused, cannot
        be fetched, or does not serve a LoRA; an ``OSError`` when the cache folder cannot be written.
        ``job_deadline`` (``time.monotonic()``) and ``stop`` are the job's: see :func:`worker.download.fetch`.
        """
        job = JobTime(job_deadline, stop)
        while True:
            with self._lock:
                folder = self._ready()
                name = self._lookup(folder, url)
                if name is not None:
                    self._pins[name] += 1
                    log.info("%s: %s from the cache (%s)", field, name, redact_url(url))
                    return name
                flight = self._flights.get(url)
                leading = flight is None
                if flight is None:
                    flight = self._flights[url] = _Flight(field)
                else:
                    flight.waiters += 1
            if leading:
                self._lead(flight, folder, url, job)
            else:
                log.info("%s: %s is already being downloaded; waiting for it", field, redact_url(url))
                self._wait(flight, job, f"{field}: {redact_url(url)}")
            if not isinstance(flight.error, _JOB_ENDED) or leading:
                return _outcome(flight, field)
            log.info("%s: the job downloading %s ended first; downloading it for this job", field, redact_url(url))

    def _wait(self, flight: _Flight, job: JobTime, where: str) -> None:
        """Wait for another fetch's download; leaving early, give back the pin it would take for us."""
        try:
            job.wait(flight.done, where)
        except _JOB_ENDED:
            with self._lock:
                if not flight.done.is_set():
                    flight.waiters -= 1
                elif flight.name is not None:
                    self._pins[flight.name] -= 1
            raise

    def release(self, name: str) -> None:
        """Unpin one :meth:`fetch` of ``name``; the file may be evicted once nothing pins it."""
        with self._lock:
            if self._pins[name] <= 1:
                del self._pins[name]
            else:
                self._pins[name] -= 1

    @contextmanager
    def job(self, *, job_deadline: float | None = None, stop: threading.Event | None = None) -> Iterator[LoraJob]:
        """``with cache.job(job_deadline=…, stop=…) as loras: loras.fetch(url, field)`` — every file
        released at the end; each fetch ends with the job (its deadline, its stop flag)."""
        job = LoraJob(self, JobTime(job_deadline, stop))
        try:
            yield job
        finally:
            job.release_all()

    # --- Download ----------------------------------------------------------------------------------

    def _lead(self, flight: _Flight, folder: Path, url: str, job: JobTime) -> None:
        """Download for every fetch waiting on ``flight``; pin the file once per fetch.

        Renaming the file into place, pinning it and ending the flight happen under one hold of
        the lock: no eviction runs in between, and a fetch either joined the flight (and is
        counted in its pins) or finds the file in the index.
        """
        temp: Path | None = None
        try:
            temp, digest, size = self._download(folder, url, flight.leader_field, job)
            with self._lock:
                try:
                    flight.name = self._admit(folder, url, temp, digest, size, pins=1 + flight.waiters)
                except OSError as exc:  # its index entry found no room
                    raise no_room(exc, folder, f"{flight.leader_field}: {redact_url(url)}", size) or exc from None
                self._land(flight, url)
        except BaseException as exc:
            if not flight.done.is_set():
                with self._lock:
                    self._land(flight, url, error=exc)
            raise
        finally:
            if temp is not None:
                temp.unlink(missing_ok=True)  # gone already once renamed

    def _land(self, flight: _Flight, url: str, error: BaseException | None = None) -> None:
        flight.error = error
        del self._flights[url]
        flight.done.set()

    def _download(self, folder: Path, url: str, field: str, job: JobTime) -> tuple[Path, str, int]:
        """Fetch into a temporary file in ``folder``, checked and fsynced: (its path, SHA-256, size)."""
        room, temp = _Reservation(folder, f"{field}: {redact_url(url)}"), None
        try:
            descriptor, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
            temp = Path(temp_name)
            with os.fdopen(descriptor, "wb") as file:
                digest, size = self._stream(url, field, file, job, room)
                file.flush()
                os.fsync(file.fileno())
                os.fchmod(file.fileno(), 0o644)
        except BaseException as exc:
            if temp is not None:
                temp.unlink(missing_ok=True)
            full = no_room(exc, folder, room.where, room.written) if isinstance(exc, OSError) else None
            if full is not None:
                raise full from None
            raise
        finally:
            with self._lock:
                self._reservations.discard(room)
        return temp, digest, size

    def _stream(self, url: str, field: str, file: BinaryIO, job: JobTime, room: _Reservation) -> tuple[str, int]:
        sniffer, digest = LoraSniffer(), hashlib.sha256()

        def write(chunk: bytes) -> None:
            try:
                sniffer.feed(chunk)
            except NotALora as exc:
                raise self._not_a_lora(field, url, exc) from None
            digest.update(chunk)
            file.write(chunk)
            room.written += len(chunk)

        started = time.monotonic()
        fetched = guarded_fetch(
            url, self._rules(field), write,
            resolve=self._resolve, ca_bundle=self._ca_bundle, job_deadline=job.deadline, stop=job.stop,
            expect=lambda declared: self._reserve(room, self.settings.max_bytes if declared is None else declared),
        )  # fmt: skip
        try:
            header = sniffer.finish()
        except NotALora as exc:
            raise self._not_a_lora(field, url, exc) from None
        log.info(
            "%s: %d bytes, %d LoRA tensors of %d, in %.1f s from %s",
            field, fetched.size, len(lora_tensors(header)), len(header.tensors),
            time.monotonic() - started, redact_url(fetched.url),
        )  # fmt: skip
        return digest.hexdigest(), fetched.size

    def _reserve(self, room: _Reservation, need: int) -> None:
        """Make room for ``need`` bytes in the cache's budget and check the disk has them (see the module docstring)."""
        budget, folder = self.settings.cache_bytes, room.folder
        with self._lock:
            pending = sum(other.need - other.written for other in self._reservations)
            left = budget - partial_bytes(folder, f"{TEMP_PREFIX}*{TEMP_SUFFIX}") - pending - need
            over, evicted = evict(cached_files(folder, _is_cached), left, self._may_go)
            if evicted:
                prune_index(folder)
            if over:
                raise StorageFull(
                    f"{room.where}: the LoRA cache {folder} cannot take {need:,} more bytes within LORA_CACHE_BYTES="
                    f"{budget:,}: {budget - need + over:,} bytes of it are files jobs may be using (pinned by this worker, "
                    f"or used by any worker in the last {self._recent_use:.0f} s) and downloads in progress; retry when "
                    "those jobs are done, or raise LORA_CACHE_BYTES"
                )
            require_free(folder, need, room.where)
            room.need = need
            self._reservations.add(room)

    def _may_go(self, file: CachedFile) -> bool:
        """Whether eviction may delete ``file``: no job of this worker pins it, none used it lately."""
        return not self._pins[file.path.name] and file.used <= time.time() - self._recent_use

    def _rules(self, field: str) -> FetchRules:
        s = self.settings
        return FetchRules(
            field=field,
            max_bytes=s.max_bytes,
            timeout=s.url_timeout,
            deadline=s.url_deadline,
            deadline_setting="LORA_URL_DEADLINE",
            allow_private=s.allow_private_urls,
            private_setting="ALLOW_PRIVATE_LORA_URLS",
            content="the LoRA file",
            accept="application/octet-stream, */*;q=0.8",
            user_agent="wan22-worker (LoRA fetch)",
            error=InvalidInput,
            credentials=self._credentials,
        )

    def _credentials(self, host: str) -> Mapping[str, str]:
        for name in _TOKEN_HOSTS:
            token = getattr(self.settings, name)
            if token and token_hosts_match(host, name):
                return {"Authorization": f"Bearer {token}"}
        return {}

    @staticmethod
    def _not_a_lora(field: str, url: str, problem: NotALora) -> InvalidInput:
        return InvalidInput(f"{field}: {redact_url(url)}: {problem}{_page_hint(url, str(problem))} (allowed: {LORA_ALLOWED})")

    # --- The folder, the index, eviction (all under self._lock) ------------------------------------

    def _ready(self) -> Path:
        if self._folder is None:
            self._folder = self._choose_folder()
            (self._folder / "index").mkdir(exist_ok=True)
            self._remove_stale_temps(self._folder)
            log.info("LoRA cache: %s (at most %d bytes)", self._folder, self.settings.cache_bytes)
        return self._folder

    def _choose_folder(self) -> Path:
        """The preferred folder if it can be written, else the fallback under WORKER_DIR."""
        problem = writable_problem(self._preferred, must_exist=self._volume_path)
        if problem is None:
            return self._preferred
        log.warning("LoRA cache: cannot use %s (%s); using %s instead", self._preferred, problem, self._fallback)
        self._fallback.mkdir(parents=True, exist_ok=True)
        return self._fallback

    def _remove_stale_temps(self, folder: Path) -> None:
        """Partial files of crashed downloads (older than any download may take) go."""
        too_old = time.time() - max(self._recent_use, self.settings.url_deadline + 60)
        for temp in [*folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"), *(folder / "index").glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}")]:
            try:
                if temp.stat().st_mtime < too_old:
                    temp.unlink()
            except OSError:
                pass

    def _lookup(self, folder: Path, url: str) -> str | None:
        """The cached file's name for ``url`` (its use recorded), or None when it must be fetched."""
        entry = index_entry(folder, url)
        try:
            record = json.loads(entry.read_text(encoding="utf-8"))
            name = f"{record['sha256']}{SUFFIX}"
            path = folder / name
            if not _FILE_NAME.match(name) or path.stat().st_size != record["bytes"]:
                raise ValueError("the entry does not match its file")
            os.utime(path)
        except FileNotFoundError:
            entry.unlink(missing_ok=True)  # the file was evicted (maybe by another worker)
            return None
        except (OSError, ValueError, KeyError, TypeError):
            entry.unlink(missing_ok=True)
            return None
        return name

    def _admit(self, folder: Path, url: str, temp: Path, digest: str, size: int, pins: int) -> str:
        """Put a checked download in place under its hash, indexed and pinned; then evict to fit."""
        name = f"{digest}{SUFFIX}"
        final = folder / name
        if final.exists():  # the same bytes came before, from another URL or another worker
            os.utime(final)
        else:
            os.replace(temp, final)
            fsync_folder(folder)
        write_atomically(index_entry(folder, url), json.dumps({"sha256": digest, "bytes": size, "url": redact_url(url)}))
        self._pins[name] += pins
        try:
            over, evicted = evict(cached_files(folder, _is_cached), self.settings.cache_bytes, self._may_go)
        except OSError as exc:  # the file is in place; a full eviction waits for the next download
            log.warning("LoRA cache: eviction failed: %s", os.strerror(exc.errno or 0))
            return name
        if evicted:
            prune_index(folder)
        if over:  # another worker's download, or a budget lowered since these files came
            log.warning("LoRA cache: %d bytes over the %d-byte budget; the rest is in use", over, self.settings.cache_bytes)
        return name


class LoraJob:
    """The LoRAs one job fetched, all released together (see :meth:`LoraCache.job`)."""

    def __init__(self, cache: LoraCache, time: JobTime):
        self._cache = cache
        self._time = time
        self.names: list[str] = []

    def fetch(self, url: str, field: str) -> str:
        name = self._cache.fetch(url, field, job_deadline=self._time.deadline, stop=self._time.stop)
        self.names.append(name)
        return name

    def path(self, name: str) -> Path:
        return self._cache.path(name)

    def release_all(self) -> None:
        for name in self.names:
            self._cache.release(name)
        self.names.clear()


# --- Helpers -------------------------------------------------------------------------------------------


def _outcome(flight: _Flight, field: str) -> str:
    """The flight's file name, or its error under this fetch's own field name."""
    error = flight.error
    if isinstance(error, InvalidInput):
        message = str(error)
        if field != flight.leader_field and message.startswith(flight.leader_field):
            message = field + message[len(flight.leader_field) :]
        raise InvalidInput(message)
    if error is not None:
        raise error
    assert flight.name is not None
    return flight.name


def _page_hint(url: str, problem: str) -> str:
    """For an HTML answer from the Hub or Civitai: the link that serves the file itself."""
    if not problem.startswith(("an HTML page", "XML or HTML")):
        return ""
    if "/blob/" in url and any(host in url for host in ("huggingface.co", "hf.co")):
        return "; on Hugging Face, link the file with /resolve/ instead of /blob/"
    if "civitai.com/models/" in url:
        return "; on Civitai, use the model version's download link (https://civitai.com/api/download/models/<id>)"
    return ""


def _is_cached(name: str) -> bool:
    return bool(_FILE_NAME.match(name))
