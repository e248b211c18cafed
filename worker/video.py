"""Find the MP4 VideoHelperSuite wrote, check it, encode it for RunPod, and clean up after it.

In S3 output mode the bytes go to :mod:`worker.storage` instead of :func:`encode_video`.

VHS reports its files under the ``gifs`` key of the output node (recorded in
``e2e_history.json``): ``filename``, ``subfolder``, ``type``, ``format``, ``frame_rate`` and the
``workflow`` PNG it writes beside the video. The MP4 is read through ``GET /view``, which works
for a launched and an attached ComfyUI alike.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_bootstrap.client import ComfyClient
from comfy_bootstrap.errors import OutputMissing
from worker.errors import OutputTooLarge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFile:
    """One file VHS reported."""

    filename: str
    subfolder: str
    folder_type: str
    format: str
    workflow_png: str | None


def find_videos(outputs: dict[str, Any], output_node: str) -> list[VideoFile]:
    """The MP4 entries of the output node; raise OutputMissing when there are none."""
    entries = (outputs.get(output_node) or {}).get("gifs") or []
    videos = [
        VideoFile(
            filename=str(e["filename"]),
            subfolder=str(e.get("subfolder") or ""),
            folder_type=str(e.get("type") or "output"),
            format=str(e.get("format") or ""),
            workflow_png=e.get("workflow"),
        )
        for e in entries
        if isinstance(e, dict) and str(e.get("filename", "")).lower().endswith(".mp4")
    ]
    if not videos:
        raise OutputMissing(
            f"ComfyUI finished but its video node ({output_node}) reported no MP4 "
            f"(outputs: {sorted(outputs)}); check VideoHelperSuite in ComfyUI's log"
        )
    return videos


def read_video(client: ComfyClient, video: VideoFile) -> bytes:
    """Download the MP4 and check it really is one (an ``ftyp`` box at offset 4)."""
    data = client.view(video.filename, subfolder=video.subfolder, folder_type=video.folder_type)
    if data is None:
        raise OutputMissing(f"VideoHelperSuite reported {video.filename} but ComfyUI cannot serve it (HTTP 404)")
    if len(data) < 12 or data[4:8] != b"ftyp":
        raise OutputMissing(f"{video.filename} is not an MP4 file ({len(data)} bytes, no ftyp box)")
    return data


def encode_video(data: bytes, *, response_overhead: int, limit: int, s3_configured: bool = False) -> str:
    """Base64 of the MP4, refused when the JSON answer would pass RunPod's payload limit.

    RunPod drops results over 10 MB (/run) or 20 MB (/runsync) *silently*: the job then shows
    COMPLETED with no output. A clear error is better than a lost video. The message names the
    way out that has no size limit: S3 output (``output_mode`` when the worker has it, else the
    variables that configure it).
    """
    encoded_size = 4 * ((len(data) + 2) // 3)
    if encoded_size + response_overhead > limit:
        raise OutputTooLarge(
            f"the video is {len(data) / 1e6:.1f} MB ({encoded_size / 1e6:.1f} MB as base64), over the "
            f"{limit / 1e6:.1f} MB response limit (MAX_RESPONSE_BYTES; RunPod accepts 10 MB from /run and "
            "20 MB from /runsync); ask for fewer frames (options.length) or a smaller size (options.width/height), "
            + (S3_REMEDY_CONFIGURED if s3_configured else S3_REMEDY_UNCONFIGURED)
        )
    return base64.b64encode(data).decode("ascii")


S3_REMEDY_CONFIGURED = 'or ask for output_mode "s3" (or "auto"): this worker uploads to S3, which has no size limit'
S3_REMEDY_UNCONFIGURED = (
    "or configure S3 output, which has no size limit (BUCKET_ENDPOINT_URL, BUCKET_NAME, "
    "BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY; see docs/deployment.md)"
)


def remove_job_files(input_dir: Path, output_dir: Path, image_name: str, videos: list[VideoFile]) -> int:
    """Delete the job's uploaded image and every file VHS wrote for it; returns how many went.

    Warm workers serve jobs for hours: without this their disks fill with inputs and videos.
    Only names inside our own folders are touched.
    """
    targets = [input_dir / image_name]
    for video in videos:
        folder = output_dir / video.subfolder if video.subfolder else output_dir
        targets.append(folder / video.filename)
        if video.workflow_png:
            targets.append(folder / video.workflow_png)
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
    return removed
