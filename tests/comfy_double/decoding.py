"""Reading media files with PyAV as the real nodes do: ``LoadAudio``'s track, a video's frames,
frame rate, bit depth and sound (``GetVideoComponents``, ``VHS_LoadVideo``).

The recorded server's PyAV logs at FFmpeg's ERROR level, so a file FFmpeg cannot read fails with
its last error line in the message (``[Errno 1094995529] Invalid data found when processing input:
'<path>'; last error log: [mp3] Failed to find two consecutive MPEG audio frames.``,
``audio_formats.json``, ``video_formats.json``); :func:`opened` reads the same way, printing nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.logging
import numpy as np


@contextmanager
def opened(path: Path) -> Iterator[Any]:
    """``av.open`` for reading, its errors carrying FFmpeg's last logged error."""
    old_level, old_skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)  # the same bad file fails the same way every time
    try:
        with av.logging.Capture(local=True):
            container = av.open(str(path))
    finally:
        av.logging.set_level(old_level)
        av.logging.set_skip_repeated(old_skip)
    with container:
        yield container


def _decode_audio(container: Any, stream: Any) -> np.ndarray | None:
    """Every sample of ``stream`` as float32 ``(channels, samples)``, its rate and layout kept."""
    context = stream.codec_context
    resampler = av.AudioResampler(format="fltp", layout=context.layout, rate=context.sample_rate)
    blocks = [out.to_ndarray() for frame in container.decode(stream) for out in resampler.resample(frame)]
    blocks += [out.to_ndarray() for out in resampler.resample(None)]
    return np.concatenate(blocks, axis=1).astype(np.float32) if blocks else None


def load_audio(path: Path) -> tuple[np.ndarray, int]:
    """``LoadAudio`` (``comfy_extras/nodes_audio.py`` ``load``): the first audio stream, whole."""
    with opened(path) as container:
        if not container.streams.audio:
            raise ValueError("No audio stream found in the file.")
        stream = container.streams.audio[0]
        samples = _decode_audio(container, stream)
        if samples is None:
            raise ValueError("No audio frames decoded.")
        return samples, stream.codec_context.sample_rate


@dataclass(frozen=True)
class DecodedFile:
    """A video file's pictures (RGB uint8), average frame rate, bit depth, the frame count its
    header gives (0 when it gives none) and its last audio stream as ``(samples, rate)``."""

    frames: list[np.ndarray]
    fps: float
    bit_depth: int
    header_frames: int
    audio: tuple[np.ndarray, int] | None


def decode_video(path: Path) -> DecodedFile:
    """``VideoFromFile.get_components`` + ``get_bit_depth``: a PNG decodes as one frame at 25 fps."""
    with opened(path) as container:
        if not container.streams.video:
            raise ValueError(f"No video stream found in file '{path}'")
        stream = container.streams.video[0]
        rate = stream.average_rate
        header_frames = stream.frames
        components = stream.codec_context.format.components if stream.codec_context.format else ()
        bit_depth = max((c.bits for c in components), default=8)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    audio = None
    with opened(path) as container:
        if container.streams.audio:
            stream = container.streams.audio[-1]
            samples = _decode_audio(container, stream)
            audio = None if samples is None else (samples, stream.codec_context.sample_rate)
    return DecodedFile(frames, float(rate) if rate else 0.0, bit_depth, header_frames, audio)
