"""What a finished graph made: find its files in ComfyUI's history, read them, delete them afterwards.

VHS reports its video under the ``gifs`` key of its node (``filename``, ``subfolder``, ``type``,
``format``, ``frame_rate`` and the ``workflow`` PNG it writes beside the video); ``SaveImage``
reports ``images`` (recorded in ``e2e_history.json`` and ``flf2v_lora_lastframe_history.json``).
Files are read through ``GET /view`` from an attached ComfyUI, and straight from the folders of
the one the worker launched (:class:`LocalFiles`: the same bytes, without a request).
"""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import av

from comfy_bootstrap.errors import OutputMissing
from worker.encoding import DEFAULT_FORMAT, FORMATS, VideoFormat, by_extension

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: VideoHelperSuite's file of a video's metadata (the job's prompt and graph) in ComfyUI's temp folder.
VHS_METADATA = "metadata.txt"
#: VideoHelperSuite's name ending for the video it muxed the audio into.
_WITH_AUDIO = "-audio"


@dataclass(frozen=True)
class OutputFile:
    """One file a node reported, and the files written beside it (VHS's workflow PNG)."""

    filename: str
    subfolder: str = ""
    folder_type: str = "output"
    companions: tuple[str, ...] = ()

    @property
    def format(self) -> VideoFormat:
        """The video format its name says (MP4 for anything else)."""
        return by_extension(self.filename) or FORMATS[DEFAULT_FORMAT]

    @classmethod
    def from_entry(cls, entry: dict[str, Any], *companion_keys: str) -> OutputFile:
        """The file of a history entry; VHS's video with sound (``<name>-audio.mp4``) also leaves the
        silent ``<name>.mp4`` beside it (VideoHelperSuite's mux; recorded: s2v_*), a companion too."""
        filename = str(entry["filename"])
        companions = tuple(str(entry[key]) for key in companion_keys if entry.get(key))
        stem, dot, extension = filename.rpartition(".")
        if stem.endswith(_WITH_AUDIO):
            companions += (f"{stem.removesuffix(_WITH_AUDIO)}{dot}{extension}",)
        return cls(filename, str(entry.get("subfolder") or ""), str(entry.get("type") or "output"), companions)


def find_videos(outputs: dict[str, Any], node: str) -> list[OutputFile]:
    """The video entries (MP4, WebM) of the video node; raise OutputMissing when there are none."""
    entries = (outputs.get(node) or {}).get("gifs") or []
    videos = [
        OutputFile.from_entry(e, "workflow")
        for e in entries
        if isinstance(e, dict) and by_extension(str(e.get("filename", ""))) is not None
    ]
    if not videos:
        raise OutputMissing(
            f"ComfyUI finished but its video node ({node}) reported no video "
            f"(outputs: {sorted(outputs)}); check VideoHelperSuite in ComfyUI's log"
        )
    return videos


def find_image(outputs: dict[str, Any], node: str) -> OutputFile:
    """The first PNG a ``SaveImage`` node reported; raise OutputMissing when there is none."""
    entries = [e for e in (outputs.get(node) or {}).get("images") or [] if isinstance(e, dict) and e.get("filename")]
    if not entries:
        raise OutputMissing(f"ComfyUI finished but its image node ({node}) reported no image (outputs: {sorted(outputs)})")
    return OutputFile.from_entry(entries[0])


def read_video(client: FileSource, video: OutputFile) -> bytes:
    """Download the video and check it really is one (its container's signature: MP4's ``ftyp``
    box, WebM's EBML header); an encoder that failed late leaves an empty file (vhs_*_crf*)."""
    data = _view(client, video)
    fmt = video.format
    if len(data) < 12 or not fmt.is_file(data):
        raise OutputMissing(
            f"{video.filename} is not a playable {fmt.extension} file ({len(data)} bytes): the encoder failed, "
            "see ffmpeg's lines in ComfyUI's log"
        )
    return data


def audio_track(video: bytes) -> dict[str, Any] | None:
    """The sound track of a video the run made (the answer's ``audio``), from its container; None without one."""
    try:
        with av.open(io.BytesIO(video)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            seconds = float(stream.duration * stream.time_base) if stream.duration else (container.duration or 0) / av.time_base
            context = stream.codec_context
            return {"codec": context.name, "seconds": round(seconds, 3), "sample_rate": context.sample_rate,
                    "channels": context.layout.nb_channels}  # fmt: skip
    except av.FFmpegError as exc:
        raise OutputMissing(f"the video's sound track cannot be read: {exc}") from None


def read_png(client: FileSource, image: OutputFile) -> bytes:
    data = _view(client, image)
    if not data.startswith(PNG_SIGNATURE):
        raise OutputMissing(f"{image.filename} is not a PNG file ({len(data)} bytes)")
    return data


class FileSource(Protocol):
    """Where a job's media are written and a run's files read: ComfyUI's ``POST /upload/image`` and
    ``GET /view`` (:class:`comfy_bootstrap.client.ComfyClient`), or :class:`LocalFiles`."""

    def upload_file(self, name: str, data: bytes, content_type: str = "image/png") -> str: ...

    def view(self, filename: str, *, subfolder: str = "", folder_type: str = "output") -> bytes | None: ...


class LocalFiles:
    """The folders of the ComfyUI the worker launched (the worker's own, on its disk): a job's media
    written into ``input`` as ComfyUI's upload would write them, files read as ``GET /view`` would
    serve them (None for a file that is not there or not inside its folder), without the requests."""

    def __init__(self, folders: Mapping[str, Path]):
        self._folders = {kind: folder.resolve() for kind, folder in folders.items()}

    def upload_file(self, name: str, data: bytes, content_type: str = "image/png") -> str:
        (self._folders["input"] / name).write_bytes(data)  # OSError (a full disk) is the caller's to explain
        return name

    def view(self, filename: str, *, subfolder: str = "", folder_type: str = "output") -> bytes | None:
        root = self._folders.get(folder_type)
        if root is None:
            return None
        path = (root / subfolder / filename).resolve()
        if not path.is_relative_to(root) or path == root:
            return None
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None


def _view(client: FileSource, file: OutputFile) -> bytes:
    data = client.view(file.filename, subfolder=file.subfolder, folder_type=file.folder_type)
    if data is None:
        raise OutputMissing(f"ComfyUI reported {file.filename} but cannot serve it (no such file in its {file.folder_type} folder)")
    return data


def remove_job_files(
    input_dir: Path, output_dir: Path, inputs: Iterable[str], outputs: Iterable[OutputFile], own: Iterable[tuple[Path, str]] = ()
) -> int:
    """Delete the job's uploaded images, every file its nodes reported, and what else is the job's
    (``(root, name)``: the file or the folder ``root/name`` with all it holds, whatever node wrote
    there); returns how many files went.

    Warm workers serve jobs for hours: without this their disks fill with inputs and videos.
    Only names inside our own folders are touched.
    """
    targets = [input_dir / name for name in inputs]
    for file in outputs:
        folder = output_dir / file.subfolder if file.subfolder else output_dir
        targets.extend(folder / name for name in (file.filename, *file.companions))
    removed = 0
    for path in targets:
        resolved = path.resolve()
        if not (resolved.is_relative_to(input_dir.resolve()) or resolved.is_relative_to(output_dir.resolve())):
            log.warning("not removing %s: outside the worker's folders", path)
            continue
        try:
            resolved.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)
    return removed + sum(_remove_entry(root, name) for root, name in own)


def _remove_entry(root: Path, name: str) -> int:
    """Remove the file or folder ``root/name`` (``name`` one plain path part); returns how many files went."""
    path = root / name
    if not name or name in (".", "..") or Path(name).name != name or path.is_symlink():
        return 0
    if path.is_file():
        path.unlink()
        return 1
    if not path.is_dir():
        return 0
    files = [entry for entry in path.rglob("*") if not entry.is_dir()]
    shutil.rmtree(path, onerror=lambda _fn, where, exc: log.warning("could not remove %s: %s", where, exc[1]))
    return len(files)
