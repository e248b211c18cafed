"""Video bytes → a checked clip, cut to the part the job asked for and resampled to the task's frame
rate, as an H.264 MP4 that ComfyUI's ``LoadVideo`` reads, with its sound as 16-bit WAV.

Why re-encode instead of forwarding the user's file: as images become PNGs and sound WAV, ComfyUI
gets one kind of file, holding exactly the frames the task uses at the task's rate, and a broken or
hostile file is refused here with a message instead of failing late inside ComfyUI (the recorded
``LoadVideo`` takes a PNG renamed ``.mp4`` as a one-frame video and fails in
``GetVideoComponents`` on a truncated MP4: tests/recordings/video_formats.json).

The steps, each refusing with an :class:`InvalidInput` naming the field (``video``, ``video_url``,
``pose_video``…), what was found and what is allowed:

1. at most ``MAX_VIDEO_BYTES``;
2. an MP4 / MOV (ISO media) or WebM / Matroska file, recognised by its signature and opened with
   that one demuxer (``mov``, ``matroska``): no other FFmpeg demuxer runs on user data;
3. a video stream in one of :data:`CODECS` (no other decoder runs), frames of at most
   ``MAX_VIDEO_PIXELS``, read from the header before decoding and checked again on every frame;
4. the length its header declares: ``start`` before its end, the part used at most
   ``MAX_VIDEO_SECONDS`` and, at the target rate, at most ``MAX_VIDEO_FRAMES`` frames, refused
   before anything is decoded;
5. decoded from ``start`` (seeking to the keyframe before it) to ``end``, bounded by the same limits
   again (a header that lies is caught while decoding), by :data:`DECODE_SECONDS` of wall time and
   by the job's own deadline; a file up to :data:`SLACK_SECONDS` longer than ``MAX_VIDEO_SECONDS``
   (a phone's "30 s" clip runs a few frames over) is cut to the limit;
6. resampled by timestamp: output frame k is the source frame shown at ``start + k / rate``, for
   k = 0 … ⌈seconds · rate⌉ − 1, so frames are dropped or repeated as the rates need and a variable
   frame rate needs no special case; the rotation a phone writes in the header applied; the size
   kept, cut to even numbers (yuv420p);
7. encoded while it is decoded (one decoded frame held at a time, never the whole clip) as H.264
   yuv420p, CRF :data:`CRF`, preset :data:`PRESET`;
8. the file's own sound over the same span, if it has any, decoded by :mod:`worker.audio` into
   16-bit WAV (a sound track that cannot be read is left out, and said so in the description).
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

import av
import numpy as np

from worker.audio import PreparedAudio, decode_audio
from worker.errors import InvalidInput
from worker.media_sniff import MP4, WEBM, Container, declared_seconds, describe_other, find, short_error

if TYPE_CHECKING:
    from worker.job_time import JobTime
    from worker.settings import Limits

log = logging.getLogger(__name__)

#: The decoders allowed to run on user data, by FFmpeg's codec name, and their names in messages.
CODECS = {"h264": "H.264", "hevc": "H.265", "vp8": "VP8", "vp9": "VP9", "av1": "AV1", "mpeg4": "MPEG-4"}
CONTAINERS = (MP4, WEBM)
FORMATS_TEXT = "an MP4, MOV, WebM or Matroska file of H.264, H.265, VP8, VP9, AV1 or MPEG-4 video"
#: Wall-clock seconds decoding and encoding one file may take (a 30 s 1080p clip at 16 fps takes about
#: 11 s on 2 CPU cores; more where a job keeps a 60 fps source's rate).
DECODE_SECONDS = 120.0
#: How much longer than ``MAX_VIDEO_SECONDS`` a file may run; the extra is cut off, not refused.
SLACK_SECONDS = 0.5
#: The encoding: visually lossless for what the model sees, fast enough to stay a small part of a job.
CRF = 14
PRESET = "veryfast"
#: Source frame rates above this are not read from a header (a 240 fps slow-motion clip is real; more is a bad header).
_MAX_SOURCE_RATE = 1000.0
#: Timestamps this close are the same instant: Matroska stores whole milliseconds, so a 16 fps
#: frame due at 62.5 ms says 63 ms, and must still be the one shown at 62.5 ms.
_EPSILON = 0.001


@dataclass(frozen=True)
class PreparedVideo:
    """The clip ComfyUI receives (an H.264 MP4) and what it was."""

    mp4: bytes = field(repr=False)
    frames: int
    #: Frames per second of ``mp4``.
    rate: float
    #: Seconds of the source the frames cover (from ``start``); ``frames`` is ⌈seconds · rate⌉.
    seconds: float
    width: int
    height: int
    #: The container and codec the user sent (``MP4 H.264``, ``WebM VP9``).
    source: str
    #: The file's own sound over the same span as 16-bit WAV, and its length; None without sound.
    audio_wav: bytes | None = field(repr=False)
    audio_seconds: float | None
    description: str


@dataclass(frozen=True)
class _Clip:
    """What the header says: the stream's codec, size, rate and declared length, and the span to use."""

    container: str
    codec: str
    width: int
    height: int
    #: The source's average frame rate (None: unreadable) and the rate of the output.
    source_rate: float | None
    rate: Fraction
    #: Seconds of the file's timeline where the stream begins; the span is counted from there.
    origin: float
    start: float
    #: Where the output stops: ``end``, else ``start`` + ``MAX_VIDEO_SECONDS``.
    stop: float
    #: Past this time a frame makes the video too long (None with ``end`` given).
    too_long: float | None


def decode_video(
    data: bytes, *, field: str, limits: Limits, start: float = 0.0, end: float | None = None, rate: float | None = None,
    cover: tuple[int, int] | None = None, time_left: JobTime | None = None,
) -> PreparedVideo:  # fmt: skip
    """Check ``data`` is an allowed video within ``limits`` and return the part from ``start`` to ``end``
    (seconds) at ``rate`` frames per second (None: the source's own, 1 to ``MAX_FRAME_RATE``) as an
    H.264 MP4, with its sound as WAV. ``cover``: a width × height the frames are scaled down to cover
    (never up), so ComfyUI holds no more pixels than the job uses. ``time_left``: the job's deadline
    and cancel, checked per frame."""
    if rate is not None and not rate >= 1:
        raise ValueError(f"a frame rate of {rate} fps")
    if not data:
        raise InvalidInput(f"{field}: 0 bytes is not a video file (allowed: {FORMATS_TEXT})")
    if len(data) > limits.max_video_bytes:
        raise InvalidInput(
            f"{field}: {len(data)} bytes is too large (allowed: at most {limits.max_video_bytes} bytes (MAX_VIDEO_BYTES))"
        )
    span = field.removesuffix("_url")
    if end is not None and end <= start:
        raise InvalidInput(f"{field}: {span}_end {end:g} s is not after {span}_start {start:g} s (allowed: an end after the start)")
    container = find(data, CONTAINERS)
    if container is None:
        raise InvalidInput(f"{field}: {len(data)} bytes of {describe_other(data)} is not an allowed video file (allowed: {FORMATS_TEXT})")
    name = _container_name(data, container)
    deadline = time.monotonic() + DECODE_SECONDS
    try:
        with av.open(io.BytesIO(data), format=container.demuxer, options={"probesize": "1000000"}) as opened:
            stream = _video_stream(opened, name, field)
            clip = _read_header(opened, stream, name, field, limits, span, start, end, rate)
            has_sound = bool(opened.streams.audio)
            frames = _timed_frames(opened, stream, clip, field, limits, span, deadline, time_left)
            mp4, count, width, height, last = _encode(frames, clip, field, limits, span, cover)
    except InvalidInput:
        raise
    except (av.FFmpegError, ValueError, IndexError, OverflowError, MemoryError) as exc:
        log.info("%s: FFmpeg cannot read the %s: %s", field, name, exc)
        raise InvalidInput(
            f"{field}: the {name} data is truncated or corrupt ({short_error(exc)}) (allowed: a complete video file)"
        ) from None
    seconds = min(clip.stop, last) - clip.start
    sound, sound_note = _sound(data, field, clip, seconds, deadline) if has_sound else (None, "")
    source = f"{name} {clip.codec}"
    source_rate = f"{clip.source_rate:.3g} fps" if clip.source_rate else "no frame rate"
    cut = f", {span} {start:g}–{start + seconds:g} s" if start or end is not None else ""
    description = (
        f"{source} {clip.width}×{clip.height}, {source_rate}, {len(data)} bytes{cut} → {count} frames at {float(clip.rate):.3g} fps, "
        f"{width}×{height} H.264 MP4, {len(mp4)} bytes{sound_note}"
    )
    return PreparedVideo(
        mp4, count, float(clip.rate), round(seconds, 3), width, height, source, sound.wav if sound else None,
        sound.seconds if sound else None, description,
    )  # fmt: skip


def _container_name(data: bytes, container: Container) -> str:
    """``MOV`` for a QuickTime file and ``Matroska`` for a non-WebM one, for messages."""
    if container is MP4:
        return "MOV" if data[8:12] == b"qt  " else "MP4"
    return "WebM" if b"webm" in data[:64] else "Matroska"


def _video_stream(opened: av.container.InputContainer, name: str, field: str) -> av.VideoStream:
    """The first video stream that is not a cover picture (an M4A's album art is a one-frame "video")."""
    moving = [stream for stream in opened.streams.video if not stream.disposition & av.stream.Disposition.attached_pic]
    if moving:
        stream = moving[0]
        codec = _codec_name(stream)
        if codec not in CODECS:
            raise InvalidInput(
                f"{field}: the {name} file's video is {codec}, which is not allowed (allowed: {', '.join(CODECS.values())})"
            )
        stream.codec_context.thread_type = "AUTO"
        return stream
    others = ", ".join(
        f"{'cover picture' if s.disposition & av.stream.Disposition.attached_pic else s.type} ({s.codec_context.name})"
        for s in opened.streams if s.codec_context is not None
    ) or "none"  # fmt: skip
    raise InvalidInput(f"{field}: the {name} file has no video stream (its streams: {others}) (allowed: {FORMATS_TEXT})")


def _codec_name(stream: av.VideoStream) -> str:
    """FFmpeg's name of the stream's codec (``h264``; ``libdav1d`` reads ``av1``), or one saying none is known."""
    context = stream.codec_context
    codec = context.codec if context is not None else None
    return codec.canonical_name if codec is not None else "of no codec FFmpeg knows"


def _read_header(
    opened: av.container.InputContainer, stream: av.VideoStream, name: str, field: str, limits: Limits, span: str,
    start: float, end: float | None, rate: float | None,
) -> _Clip:  # fmt: skip
    """The clip as its header describes it; refused here when that already breaks a limit."""
    codec = stream.codec_context
    width, height = int(codec.width or 0), int(codec.height or 0)
    if width <= 0 or height <= 0:
        raise InvalidInput(f"{field}: the {name} header gives no frame size (allowed: {FORMATS_TEXT})")
    _check_pixels(width, height, field, limits)
    source_rate = _source_rate(stream)
    if rate is None and source_rate is None:
        raise InvalidInput(
            f"{field}: the {name} header gives no frame rate, so the video's own cannot be kept "
            "(allowed: a video whose header gives its frame rate)"
        )
    kept = max(1.0, min(source_rate or 0.0, limits.max_frame_rate))  # a slide show's 0.2 fps is shown at 1
    chosen = Fraction(rate if rate is not None else kept).limit_denominator(1001)
    origin = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
    stop = end if end is not None else start + limits.max_video_seconds
    clip = _Clip(
        name, CODECS[_codec_name(stream)], width, height, source_rate, chosen, origin, start, stop,
        None if end is not None else start + limits.max_video_seconds + SLACK_SECONDS,
    )  # fmt: skip
    _check_declared_length(opened, stream, clip, field, limits, span)
    return clip


def _check_pixels(width: int, height: int, field: str, limits: Limits) -> None:
    if width < 2 or height < 2:
        raise InvalidInput(f"{field}: frames of {width}×{height} are too small (allowed: at least 2×2 pixels)")
    if width * height > limits.max_video_pixels:
        raise InvalidInput(
            f"{field}: frames of {width}×{height} ({width * height} pixels) are too large "
            f"(allowed: at most {limits.max_video_pixels} pixels a frame (MAX_VIDEO_PIXELS))"
        )


def _source_rate(stream: av.VideoStream) -> float | None:
    for guess in (stream.average_rate, stream.guessed_rate):
        if guess is not None and 0 < guess <= _MAX_SOURCE_RATE:
            return float(guess)
    return None


def _check_declared_length(
    opened: av.container.InputContainer, stream: av.VideoStream, clip: _Clip, field: str, limits: Limits, span: str
) -> None:
    """Refuse before decoding when the header declares more than the limits after the cut (a lying
    header is caught while decoding)."""
    declared = declared_seconds(opened, stream)
    if declared is None or declared <= 0:
        return
    if clip.start >= declared:
        raise InvalidInput(
            f"{field}: {span}_start {clip.start:g} s is past the end of the video ({declared:.1f} s) (allowed: less than {declared:.1f})"
        )
    used = min(declared, clip.stop if clip.too_long is None else math.inf) - clip.start
    if clip.too_long is not None and declared > clip.too_long:
        raise InvalidInput(
            f"{field}: the {clip.container} header declares {declared:.1f} s, {used:.1f} s of it used, longer than allowed "
            f"(allowed: at most {limits.max_video_seconds:g} s (MAX_VIDEO_SECONDS); cut it with {span}_start and {span}_end)"
        )
    frames = math.ceil(min(used, clip.stop - clip.start) * clip.rate - _EPSILON)
    if frames > limits.max_video_frames:
        raise InvalidInput(
            f"{field}: {min(used, clip.stop - clip.start):.1f} s at {float(clip.rate):.3g} fps makes {frames} frames, more than allowed "
            f"(allowed: at most {limits.max_video_frames} frames (MAX_VIDEO_FRAMES); cut it with {span}_start and {span}_end)"
        )


def _timed_frames(
    opened: av.container.InputContainer, stream: av.VideoStream, clip: _Clip, field: str, limits: Limits, span: str,
    deadline: float, time_left: JobTime | None,
) -> Iterator[tuple[float, float, av.VideoFrame]]:  # fmt: skip
    """The decoded frames from the keyframe before ``start`` on, as (seconds from the origin, seconds
    it is shown, frame), until one at or past the stop (with ``end``); refused when a frame breaks a
    limit. A frame's duration, when the file gives none, is one frame at the source's rate."""
    base = stream.time_base
    if clip.start > 0 and base:
        opened.seek(int((clip.origin + clip.start) / base), stream=stream, backward=True)
    previous: float | None = None
    for frame in _decoded(opened, stream, field, deadline, time_left):
        _check_pixels(frame.width, frame.height, field, limits)
        at = _frame_time(frame, previous, clip, field)
        if clip.too_long is not None and at > clip.too_long:
            raise InvalidInput(
                f"{field}: the video is longer than allowed after {clip.start:g} s (allowed: at most "
                f"{limits.max_video_seconds:g} s (MAX_VIDEO_SECONDS); cut it with {span}_start and {span}_end)"
            )
        shown = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
        yield at, shown if shown > 0 else 1 / (clip.source_rate or clip.rate), frame
        previous = at
        if at >= clip.stop and clip.too_long is None:
            return


def _decoded(
    opened: av.container.InputContainer, stream: av.VideoStream, field: str, deadline: float, time_left: JobTime | None
) -> Iterator[av.VideoFrame]:
    """The stream's frames, the clock checked at every packet (packets the decoder drops take time too)."""
    for packet in opened.demux(stream):
        if time.monotonic() > deadline:
            raise InvalidInput(f"{field}: decoding took longer than {DECODE_SECONDS:g} s (allowed: a video that decodes in time)")
        if time_left is not None:
            time_left.check(f"decoding {field}")
        yield from packet.decode()


def _frame_time(frame: av.VideoFrame, previous: float | None, clip: _Clip, field: str) -> float:
    """Seconds from the stream's origin; a frame without a timestamp follows the one before at the
    source's rate, and none goes back in time."""
    if frame.pts is not None and frame.time_base:
        at = float(frame.pts * frame.time_base) - clip.origin
    elif previous is None:
        at = 0.0
    elif clip.source_rate:
        at = previous + 1 / clip.source_rate
    else:
        raise InvalidInput(f"{field}: the video's frames carry no timestamps and its header no frame rate (allowed: {FORMATS_TEXT})")
    return at if previous is None else max(at, previous)


def _picked(frames: Iterator[tuple[float, float, av.VideoFrame]], clip: _Clip) -> Iterator[tuple[int, av.VideoFrame]]:
    """(k, the frame shown at ``start + k / rate``) for k = 0, 1, … while that time is before the stop
    and before the last frame's end; before the first frame, the first frame."""
    shown: av.VideoFrame | None = None
    ends = 0.0
    k = 0

    def target() -> float:
        return clip.start + k / clip.rate

    for at, duration, frame in frames:
        if shown is None:
            shown = frame
        while target() < min(at, clip.stop) - _EPSILON:
            yield k, shown
            k += 1
        shown, ends = frame, max(ends, at + duration)
    while shown is not None and target() < min(ends, clip.stop) - _EPSILON:
        yield k, shown
        k += 1


def _encode(
    frames: Iterator[tuple[float, float, av.VideoFrame]], clip: _Clip, field: str, limits: Limits, span: str,
    cover: tuple[int, int] | None,
) -> tuple[bytes, int, int, int, float]:  # fmt: skip
    """The picked frames encoded as they come: the MP4, its frame count and size, and where the video ends."""
    buffer = io.BytesIO()
    count, width, height = 0, 0, 0
    decoded = _Counted(frames)
    with av.open(buffer, "w", format="mp4") as output:
        encoder: av.VideoStream | None = None
        shape: _Shape | None = None
        for k, frame in _picked(iter(decoded), clip):
            if k >= limits.max_video_frames:
                raise InvalidInput(
                    f"{field}: the video makes more than {limits.max_video_frames} frames at {float(clip.rate):.3g} fps after "
                    f"{clip.start:g} s (allowed: at most {limits.max_video_frames} frames (MAX_VIDEO_FRAMES); cut it with "
                    f"{span}_start and {span}_end)"
                )
            if encoder is None or shape is None:
                shape = _Shape.of(frame, cover)
                width, height = shape.width, shape.height
                encoder = _encoder(output, clip.rate, width, height)
            picture = shape.apply(frame)
            picture.pts, picture.time_base = k, encoder.codec_context.time_base
            for packet in encoder.encode(picture):
                output.mux(packet)
            count = k + 1
        if encoder is not None:
            for packet in encoder.encode(None):
                output.mux(packet)
    if count == 0:
        if decoded.count:
            raise InvalidInput(
                f"{field}: {span}_start {clip.start:g} s is past the end of the video ({decoded.ends:.1f} s) "
                f"(allowed: less than {decoded.ends:.1f})"
            )
        raise InvalidInput(f"{field}: the {clip.container} file holds no video frames (allowed: a video with at least one frame)")
    return buffer.getvalue(), count, width, height, decoded.ends


class _Counted:
    """The decoded frames, counted as they pass, and where the last one seen ends (seconds from the
    origin): an empty file and a start past the end get their own messages, the clip its length."""

    def __init__(self, frames: Iterator[tuple[float, float, av.VideoFrame]]) -> None:
        self._frames = frames
        self.count = 0
        self.ends = 0.0

    def __iter__(self) -> Iterator[tuple[float, float, av.VideoFrame]]:
        for at, duration, frame in self._frames:
            self.count += 1
            self.ends = max(self.ends, at + duration)
            yield at, duration, frame


def _encoder(output: av.container.OutputContainer, rate: Fraction, width: int, height: int) -> av.VideoStream:
    encoder = output.add_stream("libx264", rate=rate)
    encoder.codec_context.time_base = 1 / rate
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.options = {"crf": str(CRF), "preset": PRESET}
    return encoder


@dataclass(frozen=True)
class _Shape:
    """How every decoded frame becomes the output's: the first frame's coded size, its rotation (a
    multiple of 90° counter-clockwise), its upright size cut to even numbers (sides are at least 2
    pixels, :func:`_check_pixels`), and the output size (that, scaled down to cover the job's frame)."""

    coded: tuple[int, int]
    quarter_turns: int
    upright: tuple[int, int]
    width: int
    height: int

    @classmethod
    def of(cls, frame: av.VideoFrame, cover: tuple[int, int] | None) -> _Shape:
        turns = round((frame.rotation or 0) / 90) % 4
        width, height = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
        upright = (width - width % 2, height - height % 2)
        return cls((frame.width, frame.height), turns, upright, *_covering(*upright, cover))

    def apply(self, frame: av.VideoFrame) -> av.VideoFrame:
        """The frame upright, at the output size, as yuv420p (the encoder copies it: one decoded frame may be sent again)."""
        if (frame.width, frame.height) != self.coded:  # a stream that changes size mid-way is scaled back
            frame = frame.reformat(width=self.coded[0], height=self.coded[1])
        if self.quarter_turns or self.coded != self.upright:
            pixels = frame.to_ndarray(format="rgb24")
            if self.quarter_turns:
                pixels = np.rot90(pixels, self.quarter_turns)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels[: self.upright[1], : self.upright[0]]), format="rgb24")
        if (self.width, self.height) == self.upright:
            return frame.reformat(format="yuv420p")
        return frame.reformat(width=self.width, height=self.height, format="yuv420p", interpolation="AREA")


def _covering(width: int, height: int, cover: tuple[int, int] | None) -> tuple[int, int]:
    """``width`` × ``height`` scaled down (keeping the aspect, to even sides) to the smallest size that
    covers ``cover``; unchanged when it is no larger."""
    if cover is None:
        return width, height
    scale = max(cover[0] / width, cover[1] / height)
    if scale >= 1:
        return width, height
    even = lambda side: min(side, max(2, math.ceil(side * scale / 2) * 2))  # noqa: E731
    return even(width), even(height)


def _sound(data: bytes, field: str, clip: _Clip, seconds: float, deadline: float) -> tuple[PreparedAudio | None, str]:
    """The file's sound over the span, and a note for the description; a track that cannot be read is left out."""
    begin = max(0.0, clip.origin + clip.start)
    try:
        sound = decode_audio(
            data, field=field, max_bytes=len(data), max_seconds=seconds + 1.0, start=begin, end=begin + seconds,
            decode_seconds=max(1.0, deadline - time.monotonic()),
        )  # fmt: skip
    except InvalidInput as exc:
        log.warning("%s: the video's sound is left out: %s", field, exc)
        return None, ", its sound left out (unreadable)"
    return sound, f", sound {sound.seconds:g} s as WAV {sound.sample_rate} Hz"
