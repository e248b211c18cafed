"""Audio in: every format a job may send is checked, cut and decoded into the WAV ComfyUI loads, within
its limits; refusals are clear. Unit level: worker/audio.py, worker/media_data.py, the audio input kind."""

from __future__ import annotations

import base64
import io
import time
import wave

import pytest

from tests.file_server import FileServer
from tests.media_files import AUDIO_FORMATS, audio_file, video_file, wav_header
from worker import audio as audio_module
from worker.audio import decode_audio
from worker.errors import InvalidInput
from worker.inputs import KINDS
from worker.job_time import JobTime
from worker.request.model import MediaInput
from worker.settings import Limits

LIMITS = Limits(max_audio_seconds=60.0)


def decode(data: bytes, **kwargs: float) -> tuple[int, int, float]:
    """Decode and read the WAV back: its rate, channels and seconds."""
    prepared = decode_audio(data, field="audio", max_bytes=LIMITS.max_audio_bytes, max_seconds=kwargs.pop("max_seconds", 60.0), **kwargs)
    with wave.open(io.BytesIO(prepared.wav)) as reader:
        assert reader.getsampwidth() == 2
        return reader.getframerate(), reader.getnchannels(), reader.getnframes() / reader.getframerate()


def refusal(data: bytes, **kwargs: float) -> str:
    with pytest.raises(InvalidInput) as caught:
        decode_audio(data, field="audio", max_bytes=kwargs.pop("max_bytes", 1 << 30), max_seconds=kwargs.pop("max_seconds", 60.0), **kwargs)
    return str(caught.value)


@pytest.mark.parametrize("kind", list(AUDIO_FORMATS))
def test_every_format_becomes_a_16_bit_wav_of_the_same_length(kind: str) -> None:
    rate, channels, seconds = decode(audio_file(kind, 2.0, 44_100, channels=2))
    assert channels == 2 and rate in (44_100, 48_000)  # opus is 48 kHz
    assert seconds == pytest.approx(2.0, abs=0.1)  # AAC and MP3 add their encoder's priming


def test_the_audio_track_of_a_video_is_used() -> None:
    for container in ("mp4", "webm"):
        _, _, seconds = decode(video_file(container, 1.5, audio=True))
        assert seconds == pytest.approx(1.5, abs=0.1)


def test_more_than_two_channels_are_mixed_down_and_high_rates_lowered() -> None:
    rate, channels, _ = decode(wav_header(rate=96_000, declared_seconds=0.5, actual_seconds=0.5))
    assert (rate, channels) == (48_000, 1)


def test_a_cut_keeps_exactly_the_part_asked_for() -> None:
    data = audio_file("wav", 5.0, 16_000)
    assert decode(data, start=1.0, end=3.5)[2] == pytest.approx(2.5, abs=1e-3)
    assert decode(data, start=4.0)[2] == pytest.approx(1.0, abs=1e-3)
    assert decode(data, end=0.25)[2] == pytest.approx(0.25, abs=1e-3)
    assert decode(audio_file("mp3", 5.0), start=2.0, end=3.0)[2] == pytest.approx(1.0, abs=0.01)  # seeks, then cuts


def test_a_track_longer_than_allowed_is_refused_from_its_header_before_decoding() -> None:
    data = audio_file("flac", 30.0)
    started = time.monotonic()
    message = refusal(data, max_seconds=5.0)
    assert message.startswith("audio: the FLAC header declares 30.0 s, 30.0 s of it used, longer than allowed")
    assert "(allowed: at most 5 s (MAX_AUDIO_SECONDS); cut it with audio_start and audio_end)" in message
    assert time.monotonic() - started < 1.0
    assert decode(data, start=20.0, end=24.0, max_seconds=5.0)[2] == pytest.approx(4.0, abs=1e-3)  # the cut is what counts


def test_a_header_that_lies_is_caught_while_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """FFmpeg estimates every allowed format's length; should an estimate be wrong, decoding stops at the limit."""
    monkeypatch.setattr(audio_module, "_check_declared_length", lambda *args: None)
    message = refusal(audio_file("aac", 8.0), max_seconds=3.0)
    assert message.startswith("audio: the track is longer than allowed after 0 s (allowed: at most 3 s (MAX_AUDIO_SECONDS)")


def test_a_streamed_wav_of_unknown_length_is_read_to_its_end() -> None:
    data = bytearray(wav_header(declared_seconds=1, actual_seconds=2))
    data[data.index(b"data") + 4 : data.index(b"data") + 8] = b"\xff\xff\xff\xff"
    assert decode(bytes(data))[2] == pytest.approx(2.0, abs=1e-3)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"", "audio: 0 bytes is not an audio file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "audio: 108 bytes of PNG data is not an allowed audio file"),
        (b"<!doctype html><html>sign in</html>", "audio: 35 bytes of HTML data is not an allowed audio file"),
        (video_file("mp4"), "audio: the MP4 file has no audio stream (its streams: video (h264))"),
        (wav_header(declared_seconds=0, actual_seconds=0), "audio: the WAV file holds no sound (0 samples)"),
        (wav_header(declared_seconds=36000), "audio: the WAV header declares 1152000000 bytes of sound (36000.0 s) but the file holds 32000"),
        (wav_header(rate=1_000_000, declared_seconds=0.01, actual_seconds=0.01), "audio: a sample rate of 1000000 Hz is not allowed"),
        (audio_file("mp3", 2.0)[:200], "audio: the MP3 "),
        (b"fLaC" + bytes(60), "audio: the FLAC data is truncated or corrupt"),
        (b"OggS" + bytes(60), "audio: the OGG data is truncated or corrupt"),
    ],
)
def test_what_is_not_usable_audio_is_refused_clearly(data: bytes, what: str) -> None:
    message = refusal(data)
    assert message.startswith(what) and "(allowed: " in message and len(message) < 400


def test_the_byte_cap_comes_first() -> None:
    assert refusal(audio_file("wav", 1.0), max_bytes=1000) == "audio: 32078 bytes is too large (allowed: at most 1000 bytes (MAX_AUDIO_BYTES))"


def test_a_start_past_the_end_is_refused() -> None:
    assert refusal(audio_file("wav", 1.0), start=3.0).startswith("audio: audio_start 3 s is past the end of the track (1.0 s)")


# --- The input kind: base64 forms and URLs -------------------------------------------------------------


def prepare(given: MediaInput, limits: Limits = LIMITS):
    return KINDS["audio"].prepare(given, limits, JobTime())


def test_raw_base64_url_safe_base64_and_data_uris_of_audio_or_video_types_are_accepted() -> None:
    data = audio_file("mp3", 1.0)
    encoded = base64.b64encode(data).decode()
    for given in (encoded, base64.urlsafe_b64encode(data).decode().rstrip("="), "data:audio/mpeg;base64," + encoded,
                  "data:video/mp4;base64," + base64.b64encode(audio_file("mp4", 1.0)).decode()):  # fmt: skip
        prepared = prepare(MediaInput("audio", "audio", b64=given))
        assert prepared.suffix == ".wav" and prepared.content_type == "audio/wav" and prepared.seconds == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("data:image/png;base64,AAAA", 'audio: data URI media type "image/png" is not allowed (allowed: data:audio/<wav|'),
        ("https://example.com/a.wav", "audio: a URL is not base64 (allowed: standard or URL-safe base64"),
        ("UklG!", 'audio: a base64 string of 5 characters is not valid base64: character "!" at position 4'),
        ("A", "audio: a base64 string of 1 characters is not valid base64: 1 data characters is not a possible length"),
    ],
)
def test_bad_base64_is_refused_before_decoding(value: str, what: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        prepare(MediaInput("audio", "audio", b64=value))
    assert str(caught.value).startswith(what)


def test_audio_url_goes_through_the_guarded_fetcher() -> None:
    with FileServer({"/voice.ogg": audio_file("ogg", 1.0)}) as server:
        url = f"{server.url}/voice.ogg?sig=secret"
        with pytest.raises(InvalidInput) as caught:
            prepare(MediaInput("audio", "audio", url=url))
        assert "127.0.0.1 is a loopback address" in str(caught.value) and "secret" not in str(caught.value)
        assert server.requests == []  # refused before connecting
        prepared = prepare(MediaInput("audio", "audio", url=url, start=0.25), Limits(allow_private_image_urls=True))
        assert prepared.seconds == pytest.approx(0.75, abs=0.01) and "sig" not in prepared.description
