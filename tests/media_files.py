"""Real media files for the tests, made with PyAV: tones in every container the worker takes, videos
with and without sound, and hand-built WAV headers that lie. Deterministic: the same call, the same bytes."""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import av
import numpy as np

#: (PyAV container, audio codec) of each format a job may send as ``audio``.
AUDIO_FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("wav", "pcm_s16le"),
    "mp3": ("mp3", "mp3"),
    "flac": ("flac", "flac"),
    "ogg": ("ogg", "libopus"),
    "m4a": ("ipod", "aac"),
    "aac": ("adts", "aac"),
    "mp4": ("mp4", "aac"),
    "mov": ("mov", "aac"),
    "webm": ("webm", "libopus"),
}
#: Codecs whose encoder takes only some sample rates.
_RATES = {"libopus": 48_000}


def tone(seconds: float, rate: int, channels: int = 1, hz: float = 440.0) -> np.ndarray:
    """A sine at ``hz`` as float32 ``(channels, samples)``, half scale."""
    t = np.arange(round(seconds * rate)) / rate
    return np.tile((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32), (channels, 1))


def audio_file(kind: str = "wav", seconds: float = 1.0, rate: int = 16_000, channels: int = 1, *, video: bool = False) -> bytes:
    """A file of ``kind`` (:data:`AUDIO_FORMATS`) holding a tone of ``seconds``; with ``video``, a picture track too."""
    container, codec = AUDIO_FORMATS[kind]
    return _media(container, seconds, (codec, _RATES.get(codec, rate), channels), video=video)


def video_file(container: str = "mp4", seconds: float = 1.0, fps: int = 16, size: tuple[int, int] = (64, 64), *,
               codec: str | None = None, audio: bool = False) -> bytes:  # fmt: skip
    """A video of ``seconds`` at ``fps`` whose frames get lighter, optionally with a tone."""
    sound = ("libopus" if container == "webm" else "aac", 48_000, 1) if audio else None
    return _media(container, seconds, sound, video=True, fps=fps, size=size, codec=codec)


def _media(
    container: str, seconds: float, sound: tuple[str, int, int] | None, *, video: bool, fps: int = 16,
    size: tuple[int, int] = (64, 64), codec: str | None = None,
) -> bytes:  # fmt: skip
    """Every stream is added before the first packet is written (a muxer's header holds them all)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        picture = output.add_stream(codec or ("libvpx-vp9" if container == "webm" else "libx264"), rate=fps) if video else None
        track = None
        if sound is not None:
            audio_codec, rate, channels = sound
            track = output.add_stream(audio_codec, rate=rate, layout="mono" if channels == 1 else "stereo")
        if picture is not None:
            picture.width, picture.height = size
            picture.pix_fmt = "yuv420p"
            for index in range(max(1, round(seconds * fps))):
                pixels = np.full((size[1], size[0], 3), (index * 9) % 256, dtype=np.uint8)
                for packet in picture.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                    output.mux(packet)
            for packet in picture.encode(None):
                output.mux(packet)
        if track is not None and sound is not None:
            frame = av.AudioFrame.from_ndarray(tone(seconds, sound[1], sound[2]), format="fltp", layout=track.layout.name)
            frame.sample_rate = sound[1]
            for packet in [*track.encode(frame), *track.encode(None)]:
                output.mux(packet)
    return buffer.getvalue()


def wav_header(rate: int = 16_000, channels: int = 1, declared_seconds: float = 1.0, actual_seconds: float = 1.0) -> bytes:
    """A 16-bit PCM WAV whose header declares ``declared_seconds`` but that holds ``actual_seconds``."""
    block = channels * 2
    declared = round(declared_seconds * rate) * block
    data = (tone(actual_seconds, rate, channels).T * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, 16)
    riff = 4 + (8 + len(fmt)) + (8 + declared)
    return b"RIFF" + struct.pack("<I", min(riff, 0xFFFFFFFF)) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + \
        b"data" + struct.pack("<I", min(declared, 0xFFFFFFFF)) + data  # fmt: skip


def numbered_video(
    container: str = "mp4", count: int = 16, fps: int = 16, *, times: list[float] | None = None, size: tuple[int, int] = (64, 48),
    codec: str | None = None, rotation: int = 0,
) -> bytes:  # fmt: skip
    """``count`` flat grey frames whose brightness tells their index (:func:`shown_indices` reads it back),
    ``fps`` apart or at ``times`` (seconds: a variable frame rate); ``rotation``: the display rotation
    a phone writes (degrees counter-clockwise)."""
    given_times = times is not None
    times = times if times is not None else [index / fps for index in range(count)]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec or ("libvpx-vp9" if container == "webm" else "libx264"), rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv444p" if size[0] % 2 or size[1] % 2 else "yuv420p"  # 4:2:0 needs even sides
        tick = Fraction(1, 1000) if given_times else Fraction(1, fps)
        stream.codec_context.time_base = tick
        if rotation:
            stream.set_display_rotation(rotation)
        for index, at in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), _level(index, len(times)), dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(at / tick), tick
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


def _level(index: int, count: int) -> int:
    return 16 + round(index * 224 / max(1, count - 1))


def shown_indices(mp4: bytes, count: int) -> list[int]:
    """Which frame of a :func:`numbered_video` of ``count`` frames each frame of ``mp4`` shows."""
    levels = np.array([_level(index, count) for index in range(count)])
    with av.open(io.BytesIO(mp4)) as opened:
        means = [frame.to_ndarray(format="rgb24").mean() for frame in opened.decode(video=0)]
    return [int(np.abs(levels - mean).argmin()) for mean in means]


def covered_audio() -> bytes:
    """An MP4 of a second of tone with album art: a PNG stream marked as an attached picture."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        track = output.add_stream("aac", rate=48_000, layout="mono")
        cover = output.add_stream("png", rate=1)
        cover.width, cover.height, cover.pix_fmt = 32, 32, "rgb24"
        cover.disposition = av.stream.Disposition.attached_pic
        frame = av.AudioFrame.from_ndarray(tone(1.0, 48_000), format="fltp", layout="mono")
        frame.sample_rate = 48_000
        picture = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), dtype=np.uint8), format="rgb24")
        for packet in [*cover.encode(picture), *cover.encode(None), *track.encode(frame), *track.encode(None)]:
            output.mux(packet)
    return buffer.getvalue()


def frameless_video(container: str = "webm") -> bytes:
    """A WebM or Matroska whose video track holds no frame (its audio track a second of tone)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        picture = output.add_stream("libvpx-vp9" if container == "webm" else "libx264", rate=16)
        picture.width, picture.height, picture.pix_fmt = 64, 64, "yuv420p"
        track = output.add_stream("libopus", rate=48_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(tone(1.0, 48_000), format="fltp", layout="mono")
        frame.sample_rate = 48_000
        for packet in [*track.encode(frame), *track.encode(None), *picture.encode(None)]:
            output.mux(packet)
    return buffer.getvalue()


def mp4_declaring(data: bytes, seconds: float) -> bytes:
    """The MP4 ``data`` (one video track, one stts entry, one edit) with every box that gives a length
    (mvhd, tkhd, elst, mdhd, and stts, which spaces its frames out) declaring ``seconds``."""
    out = bytearray(data)
    box = {name: out.find(name.encode()) - 4 for name in ("mvhd", "tkhd", "elst", "mdhd", "stts")}
    movie_scale = struct.unpack_from(">I", out, box["mvhd"] + 20)[0]
    media_scale = struct.unpack_from(">I", out, box["mdhd"] + 20)[0]
    struct.pack_into(">I", out, box["mvhd"] + 24, round(seconds * movie_scale))
    struct.pack_into(">I", out, box["tkhd"] + 28, round(seconds * movie_scale))
    struct.pack_into(">I", out, box["elst"] + 16, round(seconds * movie_scale))
    struct.pack_into(">I", out, box["mdhd"] + 24, min(round(seconds * media_scale), 0xFFFFFFFF))
    samples = struct.unpack_from(">I", out, box["stts"] + 16)[0]
    struct.pack_into(">I", out, box["stts"] + 20, round(seconds * media_scale / samples))
    return bytes(out)


def matroska_declaring(data: bytes, seconds: float) -> bytes:
    """The WebM or Matroska ``data`` with its Segment Info's Duration element set to ``seconds``."""
    out = bytearray(data)
    at = out.find(b"\x44\x89")  # the Duration element: its ID, a one-byte size, a float of milliseconds
    size = out[at + 2] & 0x7F
    struct.pack_into(">d" if size == 8 else ">f", out, at + 3, seconds * 1000)
    return bytes(out)
