"""One video from the videos of its segments, with the job's sound track: streams copied, never re-encoded.

A video made in segments (task ``s2v``) is encoded by VideoHelperSuite one segment at a time, so no
step holds all its frames. Here the segments' video packets are copied into one container with their
timestamps running on, and the track is encoded in as VideoHelperSuite would mux it: AAC in MP4
(Opus in WebM), padded with silence or cut to the video's length. Only the worker's own files (the
run's segments, the track it prepared) are read here.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np

from worker.encoding import VideoFormat

#: The audio codec of each container, the sample rate it takes (None: any), and the samples of
#: priming a decoder plays before the track (FFmpeg's AAC encoder: one 1024-sample frame).
_AUDIO = {"mp4": ("aac", None, 1024), "webm": ("libopus", 48_000, 0)}


def join_segments(segments: Sequence[bytes], fmt: VideoFormat, track: bytes | None = None) -> bytes:
    """``segments`` (videos of one format, in order) as one video; ``track``, a WAV, as its sound."""
    out = io.BytesIO()
    with av.open(out, "w", format=fmt.extension) as output:
        with av.open(io.BytesIO(segments[0])) as first:  # every stream is added before the first packet
            video = output.add_stream_from_template(first.streams.video[0])
        sound = _track(track) if track is not None else None
        audio = _audio_stream(output, sound[1], sound[2], fmt.extension) if sound is not None else None
        end = Fraction(0)  # seconds of video so far
        for data in segments:
            with av.open(io.BytesIO(data)) as source:
                end = _copy_packets(source, source.streams.video[0], video, output, end)
        if sound is not None and audio is not None:
            _encode_track(output, audio, *sound, float(end))
    return out.getvalue()


def _copy_packets(
    source: av.container.InputContainer, stream: av.VideoStream, video: av.VideoStream, output: av.container.OutputContainer,
    start: Fraction,
) -> Fraction:  # fmt: skip
    """Copy one segment's packets, shifted to begin at ``start`` seconds; return where the segment ends."""
    base = stream.time_base
    shift = round(start / base)
    end = start
    for packet in source.demux(stream):
        if packet.dts is None:  # the demuxer's flush packet
            continue
        last = packet.pts + (packet.duration or 0)
        end = max(end, start + last * base)
        packet.pts += shift
        packet.dts += shift
        packet.stream = video
        output.mux(packet)
    return end


def _track(wav: bytes) -> tuple[np.ndarray, int, int]:
    """The WAV's 16-bit samples (``(frames, channels)``), sample rate and channels."""
    with wave.open(io.BytesIO(wav)) as reader:
        rate, channels = reader.getframerate(), reader.getnchannels()
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").reshape(-1, channels), rate, channels


def _audio_stream(output: av.container.OutputContainer, rate: int, channels: int, container: str) -> av.AudioStream:
    codec, fixed_rate, _ = _AUDIO[container]
    return output.add_stream(codec, rate=fixed_rate or rate, layout="mono" if channels == 1 else "stereo")


def _encode_track(
    output: av.container.OutputContainer, stream: av.AudioStream, pcm: np.ndarray, rate: int, channels: int, seconds: float
) -> None:
    """The track encoded into ``stream``, padded with silence or cut so that it plays no longer than
    ``seconds``: as FFmpeg's ``-shortest`` leaves it (recorded: s2v_mp4_probe.json, 0.256 s of AAC on 0.3125 s)."""
    priming = _AUDIO["mp4"][2] if stream.codec_context.name == "aac" else 0
    length = round(seconds * rate)
    if priming:
        length = max(0, length // priming * priming - priming)  # whole AAC frames, the priming one included
    samples = np.zeros((channels, length), dtype=np.float32)
    used = min(samples.shape[1], pcm.shape[0])
    samples[:, :used] = pcm[:used].T / 32768.0
    layout = "mono" if channels == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
    frame.sample_rate = rate
    frames = [frame]
    if stream.rate != rate:
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=stream.rate)
        frames = [*resampler.resample(frame), *resampler.resample(None)]
    for piece in frames:
        for packet in stream.encode(piece):
            output.mux(packet)
    for packet in stream.encode(None):
        output.mux(packet)
