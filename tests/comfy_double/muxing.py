"""Sound into files: VHS's mux of a track into the video it wrote, and ``SaveAudio``'s FLAC.

VHS (``nodes.py``, ``VideoCombine``) pipes the waveform to ffmpeg with ``-c:v copy``, its format's
``audio_pass`` codec, ``-af apad=whole_dur=<video + 1 s>`` unless ``trim_to_audio`` and
``-shortest`` (``vhs_audio.json``): a track longer than the video is cut at the video's end, a
shorter one padded with silence to it; with ``trim_to_audio`` a shorter track ends the file, and
the copied H.264 stream keeps only its first frame. The track keeps its sample rate and channels.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from .values import AudioValue

#: VHS's ``audio_pass`` per format (``video_formats/*.json``): the codec its mux re-encodes the audio with.
#: webm's libvorbis is not in PyAV's FFmpeg; its native (experimental) vorbis encoder stands in and
#: writes stereo only, so a mono track comes out as two equal channels here.
AUDIO_CODECS: dict[str, str] = {
    "video/h264-mp4": "aac",
    "video/h265-mp4": "aac",
    "video/nvenc_h264-mp4": "aac",
    "video/webm": "vorbis",
}
#: Samples in one AAC frame; ``-shortest`` ends an AAC track on a whole frame.
AAC_FRAME = 1024


def mux_audio(video: Path, out: Path, audio: AudioValue, video_format: str, video_seconds: float, *, trim_to_audio: bool) -> None:
    """``out``: the video stream of ``video`` copied, ``audio`` encoded with the format's codec."""
    codec = AUDIO_CODECS[video_format]
    channels = 2 if codec == "vorbis" else audio.samples.shape[0]
    track = _track(audio, channels, video_seconds, codec, trim_to_audio)
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(video)) as inp, av.open(str(out), "w", format=out.suffix.lstrip(".")) as output:
        video_in = inp.streams.video[0]
        video_out = output.add_stream_from_template(video_in)
        audio_out = output.add_stream(codec, rate=audio.rate, layout=layout)
        if codec == "vorbis":
            audio_out.codec_context.options = {"strict": "-2"}  # FFmpeg's own vorbis encoder is "experimental"
        packets = [packet for packet in inp.demux(video_in) if packet.dts is not None]
        if trim_to_audio and audio.seconds < video_seconds:
            packets = packets[:1]
        for packet in packets:
            packet.stream = video_out
            output.mux(packet)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(track), format="fltp", layout=layout)
        frame.sample_rate = audio.rate
        for packet in audio_out.encode(frame):
            output.mux(packet)
        for packet in audio_out.encode(None):
            output.mux(packet)


def _track(audio: AudioValue, channels: int, video_seconds: float, codec: str, trim_to_audio: bool) -> np.ndarray:
    """The samples VHS's ffmpeg encodes: the track padded with silence (``apad``) to the video's
    end, or its own end with ``trim_to_audio``. An AAC track ends on a whole frame, the encoder's
    priming frame counted: cut at the video's end, the frame it falls in is dropped; at the track's
    own end, it is kept (``vhs_audio.json``: 13312 samples for 0.3125 s at 44.1 kHz, 11264 for 0.25 s)."""
    source = audio.samples if audio.samples.shape[0] == channels else np.repeat(audio.samples[:1], channels, axis=0)
    own_end = trim_to_audio and audio.seconds < video_seconds
    length = source.shape[1] if own_end else round(video_seconds * audio.rate)
    if codec == "aac":
        frames = -(-length // AAC_FRAME) if own_end else length // AAC_FRAME
        length = max(0, frames * AAC_FRAME - AAC_FRAME)
    track = np.zeros((channels, length), dtype=np.float32)
    kept = min(length, source.shape[1])
    track[:, :kept] = source[:, :kept]
    return track


def write_flac(path: Path, samples: np.ndarray, rate: int, metadata: dict[str, str]) -> None:
    """``SaveAudio``'s FLAC (``AudioSaveHelper.save_audio``): the samples at their own rate and layout."""
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format="flac") as output:
        for key, value in metadata.items():
            output.metadata[key] = value
        stream = output.add_stream("flac", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T.reshape(1, -1)), format="flt", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
