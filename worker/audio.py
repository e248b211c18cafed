"""Audio bytes → a checked track, cut to the part the job asked for, as 16-bit PCM WAV for ComfyUI.

The steps, each refusing with an :class:`InvalidInput` naming the field (``audio``, ``audio_url``):

1. at most ``MAX_AUDIO_BYTES``;
2. a WAV, MP3, FLAC, OGG (Vorbis, Opus), AAC (ADTS), MP4/M4A/MOV or WebM/Matroska file,
   recognised by its signature, and opened with that one demuxer: no other FFmpeg demuxer ever
   runs on user data;
3. an audio stream, at most :data:`MAX_SAMPLE_RATE` Hz and :data:`MAX_CHANNELS` channels; a length
   its header declares past the limit is refused before anything is decoded;
4. decoded from ``start`` (seeking there) to ``end``, bounded by ``MAX_AUDIO_SECONDS`` of the cut
   track and by :data:`DECODE_SECONDS` of wall time, so a lying header or a slow file costs little;
5. converted to 16-bit PCM, mono or stereo (more channels are mixed down), at the file's own
   sample rate up to 48 kHz: the audio encoder resamples inside ComfyUI to what it needs.
"""

from __future__ import annotations

import io
import logging
import struct
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field

import av
import numpy as np

from worker.errors import InvalidInput
from worker.media_sniff import AAC, FLAC, MP3, MP4, OGG, WAV, WEBM, Container, declared_seconds, describe_other, find, short_error

log = logging.getLogger(__name__)

#: Sample rates above this are refused (studio files go to 192 kHz; more is no audio a job needs).
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
#: The uploaded track's highest sample rate (others are kept as they are).
UPLOAD_RATE = 48_000
#: Wall-clock seconds the decoding of one file may take.
DECODE_SECONDS = 30.0
FORMATS_TEXT = "WAV, MP3, FLAC, OGG (Vorbis, Opus), AAC, M4A, or the audio track of an MP4, MOV or WebM"


#: The containers tried, in this order (MP3 and AAC, recognised by a frame header, last).
CONTAINERS = (WAV, FLAC, OGG, MP4, WEBM, MP3, AAC)


@dataclass(frozen=True)
class PreparedAudio:
    """The track ComfyUI receives (WAV bytes) and what it was."""

    wav: bytes = field(repr=False)
    seconds: float
    sample_rate: int
    channels: int
    #: The container and codec the user sent (``MP3 mp3``, ``MP4 aac``).
    source: str
    description: str


def decode_audio(
    data: bytes, *, field: str, max_bytes: int, max_seconds: float, start: float = 0.0, end: float | None = None,
    decode_seconds: float = DECODE_SECONDS,
) -> PreparedAudio:  # fmt: skip
    """Check ``data`` is an allowed audio file within the limits and return the part from ``start`` to ``end`` as WAV
    (decoding it within ``decode_seconds`` of wall time)."""
    if not data:
        raise InvalidInput(f"{field}: 0 bytes is not an audio file (allowed: a {FORMATS_TEXT} file)")
    if len(data) > max_bytes:
        raise InvalidInput(f"{field}: {len(data)} bytes is too large (allowed: at most {max_bytes} bytes (MAX_AUDIO_BYTES))")
    container = find(data, CONTAINERS)
    if container is None:
        raise InvalidInput(f"{field}: {len(data)} bytes of {describe_other(data)} is not an allowed audio file (allowed: {FORMATS_TEXT})")
    if container.name == "WAV":
        _check_wav_data(data, field)
    try:
        return _decode(data, container, field, max_seconds, start, end, decode_seconds)
    except InvalidInput:
        raise
    except (av.FFmpegError, ValueError, IndexError, OverflowError, MemoryError) as exc:
        log.info("%s: FFmpeg cannot read the %s: %s", field, container.name, exc)
        raise InvalidInput(
            f"{field}: the {container.name} data is truncated or corrupt ({short_error(exc)}) (allowed: a complete {FORMATS_TEXT} file)"
        ) from None


def _decode(
    data: bytes, container: Container, field: str, max_seconds: float, start: float, end: float | None, decode_seconds: float
) -> PreparedAudio:
    with av.open(io.BytesIO(data), format=container.demuxer, options={"probesize": "1000000"}) as opened:
        stream = _audio_stream(opened, container, field)
        codec = stream.codec_context
        rate, channels = int(codec.sample_rate or 0), int(codec.layout.nb_channels if codec.layout else 0)
        if not 0 < rate <= MAX_SAMPLE_RATE:
            raise InvalidInput(f"{field}: a sample rate of {rate} Hz is not allowed (allowed: 1 to {MAX_SAMPLE_RATE} Hz)")
        if not 0 < channels <= MAX_CHANNELS:
            raise InvalidInput(f"{field}: {channels} channels is not allowed (allowed: 1 to {MAX_CHANNELS})")
        _check_declared_length(opened, stream, container, field, max_seconds, start, end)
        out_rate, layout = min(rate, UPLOAD_RATE), "mono" if channels == 1 else "stereo"
        samples = _cut(_frames(opened, stream, start), out_rate, layout, field, max_seconds, start, end, decode_seconds)
    if samples.size == 0:
        where = f" after {start:g} s" if start else ""
        raise InvalidInput(f"{field}: the {container.name} file holds no sound{where} (0 samples) (allowed: a track with sound)")
    width = 1 if layout == "mono" else 2
    seconds = samples.size / width / out_rate
    wav = _wav(samples, out_rate, width)
    source = f"{container.name} {codec.name}"
    cut = f", cut {start:g}–{end:g} s" if end is not None else f", from {start:g} s" if start else ""
    description = f"{source} {rate} Hz {channels} ch, {len(data)} bytes{cut} → WAV {out_rate} Hz {layout}, {seconds:.2f} s, {len(wav)} bytes"
    return PreparedAudio(wav, round(seconds, 3), out_rate, width, source, description)


def _check_wav_data(data: bytes, field: str) -> None:
    """A WAV whose ``data`` chunk declares more bytes than the file holds is cut short (FFmpeg would
    quietly read what is there): refused, saying how long its header claims it is."""
    offset, rate_bytes = 12, 0
    while offset + 8 <= min(len(data), 1 << 16):
        chunk, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        if chunk == b"fmt " and size >= 16 and offset + 16 <= len(data):
            rate_bytes = struct.unpack_from("<I", data, offset + 16)[0]  # the format's bytes per second
        elif chunk == b"data":
            held = len(data) - offset - 8
            if size not in (0, 0xFFFFFFFF) and size > held * 1.01 + 64:  # 0 and all ones: a stream's "unknown length"
                declared = f" ({size / rate_bytes:.1f} s)" if rate_bytes else ""
                raise InvalidInput(
                    f"{field}: the WAV header declares {size} bytes of sound{declared} but the file holds {held} "
                    f"(allowed: a complete {FORMATS_TEXT} file)"
                )
            return
        offset += 8 + size + (size & 1)


def _audio_stream(opened: av.container.InputContainer, container: Container, field: str) -> av.AudioStream:
    if opened.streams.audio:
        stream = opened.streams.audio[0]
        if stream.codec_context is None:  # a damaged header FFmpeg found no decoder for
            raise InvalidInput(
                f"{field}: the {container.name} file's audio stream has no codec FFmpeg knows (allowed: a complete {FORMATS_TEXT} file)"
            )
        return stream
    others = ", ".join(f"{s.type} ({s.codec_context.name})" for s in opened.streams if s.codec_context is not None) or "none"
    raise InvalidInput(f"{field}: the {container.name} file has no audio stream (its streams: {others}) (allowed: a file with sound)")


def _check_declared_length(
    opened: av.container.InputContainer, stream: av.AudioStream, container: Container, field: str,
    max_seconds: float, start: float, end: float | None,
) -> None:  # fmt: skip
    """Refuse before decoding when the header declares more than the limit after the cut (a lying header is caught while decoding)."""
    declared = declared_seconds(opened, stream)
    if declared is None:
        return
    if start >= declared:
        raise InvalidInput(f"{field}: audio_start {start:g} s is past the end of the track ({declared:.1f} s) (allowed: less than {declared:.1f})")
    used = min(declared, end if end is not None else declared) - start
    if used > max_seconds + 0.5:
        raise InvalidInput(
            f"{field}: the {container.name} header declares {declared:.1f} s, {used:.1f} s of it used, longer than allowed "
            f"(allowed: at most {max_seconds:g} s (MAX_AUDIO_SECONDS); cut it with audio_start and audio_end)"
        )


def _frames(opened: av.container.InputContainer, stream: av.AudioStream, start: float) -> Iterator[av.AudioFrame]:
    if start > 0 and stream.time_base:
        opened.seek(int(start / stream.time_base), stream=stream, backward=True)
    yield from opened.decode(stream)


def _cut(
    frames: Iterator[av.AudioFrame], rate: int, layout: str, field: str, max_seconds: float, start: float, end: float | None,
    decode_seconds: float,
) -> np.ndarray:  # fmt: skip
    """The interleaved 16-bit samples from ``start`` to ``end``, refused once they pass ``max_seconds``."""
    resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
    width = 1 if layout == "mono" else 2
    limit = int((min(end - start, max_seconds) if end is not None else max_seconds) * rate) + rate // 2
    deadline = time.monotonic() + decode_seconds
    kept: list[np.ndarray] = []
    position: float | None = None  # seconds of the next resampled sample
    taken = 0
    for frame in frames:
        if position is None:
            position = float(frame.time) if frame.time is not None else 0.0
        for out in resampler.resample(frame):
            block = out.to_ndarray().reshape(-1)
            count = block.size // width
            skip = max(0, min(count, round((start - position) * rate)))
            position += count / rate
            block = block[skip * width :]
            if end is not None:
                block = block[: max(0, round((end - start) * rate) - taken) * width]
            taken += block.size // width
            kept.append(block)
        if taken > limit and end is None:
            raise InvalidInput(
                f"{field}: the track is longer than allowed after {start:g} s (allowed: at most {max_seconds:g} s "
                "(MAX_AUDIO_SECONDS); cut it with audio_start and audio_end)"
            )
        if (end is not None and position is not None and position >= end) or time.monotonic() > deadline:
            break
    if time.monotonic() > deadline:
        raise InvalidInput(f"{field}: decoding took longer than {decode_seconds:g} s (allowed: a file that decodes in time)")
    return np.concatenate(kept) if kept else np.zeros(0, dtype=np.int16)


def _wav(samples: np.ndarray, rate: int, channels: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()

