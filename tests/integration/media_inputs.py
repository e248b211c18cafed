"""Input media for the recordings, made with PyAV and numpy: sine tones and plain coloured frames.

Every function returns the file's bytes; nothing here needs ComfyUI.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
from PIL import Image


def tone(seconds: float, rate: int, channels: int, hz: float = 440.0, pulse: float = 0.0) -> np.ndarray:
    """float32 samples, shape (channels, n): a sine at ``hz`` (each further channel a fifth higher),
    amplitude-modulated at ``pulse`` Hz when given (a crude syllable rhythm)."""
    t = np.arange(int(round(seconds * rate))) / rate
    rows = [0.4 * np.sin(2 * np.pi * hz * 1.5**c * t) for c in range(channels)]
    wave = np.stack(rows).astype(np.float32)
    if pulse:
        wave *= (0.55 + 0.45 * np.sin(2 * np.pi * pulse * t)).astype(np.float32)
    return wave


def _add_audio(container: av.container.OutputContainer, codec: str, rate: int, channels: int):
    stream = container.add_stream(codec, rate=rate)
    stream.layout = "mono" if channels == 1 else "stereo"
    return stream


def _write_audio(container: av.container.OutputContainer, stream, wave: np.ndarray, rate: int) -> None:
    """Encode ``wave`` through ``stream`` (resampled to the encoder's sample format and frame size)."""
    layout = "mono" if wave.shape[0] == 1 else "stereo"
    resampler = av.AudioResampler(format=stream.codec_context.format or "s16", layout=layout, rate=rate)
    frame_size = stream.codec_context.frame_size or 1024
    pts = 0
    for start in range(0, wave.shape[1], frame_size):
        chunk = np.ascontiguousarray(wave[:, start : start + frame_size])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = pts
        pts += chunk.shape[1]
        for out in resampler.resample(frame):
            container.mux(stream.encode(out))
    for out in resampler.resample(None):
        container.mux(stream.encode(out))
    container.mux(stream.encode(None))


def audio_file(fmt: str, codec: str, seconds: float, rate: int, channels: int, pulse: float = 0.0) -> bytes:
    """An audio-only file: ``fmt`` is the muxer (wav, flac, mp3, ogg, ipod for .m4a)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = _add_audio(container, codec, rate, channels)
        _write_audio(container, stream, tone(seconds, rate, channels, pulse=pulse), rate)
    return buf.getvalue()


def frames(count: int, width: int = 64, height: int = 64, shift: int = 0) -> list[np.ndarray]:
    """``count`` RGB frames whose colour walks around the hue circle (each frame differs from the last)."""
    out = []
    for i in range(count):
        hue = (i + shift) / max(count, 1)
        rgb = [int(127 + 120 * np.cos(2 * np.pi * (hue + k / 3))) for k in range(3)]
        frame = np.empty((height, width, 3), dtype=np.uint8)
        frame[:] = rgb
        frame[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = [255 - c for c in rgb]  # a square in the middle
        out.append(frame)
    return out


def video_file(fmt: str, codec: str, count: int, fps: int, width: int = 64, height: int = 64, shift: int = 0,
               audio: tuple[str, int, int] | None = None, audio_seconds: float | None = None) -> bytes:  # fmt: skip
    """A video of ``count`` frames at ``fps``; ``audio`` = (codec, rate, channels) adds a tone track."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libsvtav1":
            stream.options = {"preset": "12", "svtav1-params": "log-level=0"}
        elif codec == "libx265":
            stream.options = {"x265-params": "log-level=none"}
        sound = _add_audio(container, audio[0], audio[1], audio[2]) if audio else None
        for image in frames(count, width, height, shift):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
        if sound is not None:
            seconds = audio_seconds if audio_seconds is not None else count / fps
            _write_audio(container, sound, tone(seconds, audio[1], audio[2]), audio[1])
    return buf.getvalue()


def png(width: int = 64, height: int = 64, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()
