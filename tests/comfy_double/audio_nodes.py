"""Sound to video: ``LoadAudio``, the audio encoder, the S2V nodes and the latent joins S2V and
Animate chain segments with (``comfy_extras/nodes_audio.py``, ``nodes_audio_encoder.py``,
``nodes_wan.py``, ``nodes_latent.py``, ``comfy/audio_encoders/audio_encoders.py``).

``LoadAudio`` decodes the real file (its errors are FFmpeg's, ``audio_formats.json``); the encoder
loader tells wav2vec2 large from base by the checkpoint's ``encoder.layer_norm.bias``, as ComfyUI
does, and refuses a file without it (``s2v_error_random_keys_encoder_*``); the S2V model weighs 25
hidden states, so a base encoding (13) fails at the sampler (``s2v_error_base_encoder_*``). A
segment chain of ``N`` latent frames decodes to ``4N - 3`` frames (``s2v_3seg_*``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import decoding, media, state_dicts
from .values import (
    AudioValue,
    Conditioning,
    Handle,
    Images,
    Latent,
    LazyVideo,
    NodeContext,
    NodeFunction,
    NodeResult,
    image_frames,
    latent_length,
    require_model,
)

#: wav2vec2 layouts ``load_audio_encoder_from_sd`` accepts: width of ``encoder.layer_norm.bias`` -> layers.
WAV2VEC2_LAYERS: dict[int, int] = {1024: 24, 768: 12}
#: The key of a Whisper encoder, the other kind it accepts.
WHISPER_KEY = "model.encoder.embed_positions.weight"


@dataclass(frozen=True)
class AudioEncoding:
    """``AudioEncoderEncode``'s output: the track's length and the encoder's hidden states (layers + input)."""

    seconds: float
    hidden_states: int | None

    def __str__(self) -> str:
        return f"<AUDIO_ENCODER_OUTPUT {self.seconds:.2f}s>"


def load_audio(ctx: NodeContext, audio: str) -> NodeResult:
    """``LoadAudio``: the file of the input folder, decoded whole at its own rate and channels."""
    samples, rate = decoding.load_audio(ctx.folders.annotated_path(audio))
    return (AudioValue(samples, rate),), None


def audio_encoder_loader(ctx: NodeContext, audio_encoder_name: str) -> NodeResult:
    shapes = state_dicts.tensor_shapes(require_model(ctx, "audio_encoders", audio_encoder_name))
    shapes = {key.removeprefix("wav2vec2."): shape for key, shape in shapes.items()}
    if "encoder.layer_norm.bias" in shapes:
        width = shapes["encoder.layer_norm.bias"][0]
        if width not in WAV2VEC2_LAYERS:
            raise RuntimeError(f"ERROR: audio encoder file is invalid or unsupported embed_dim: {width}")
        return (Handle("AUDIO_ENCODER", audio_encoder_name, (f"wav2vec2:{WAV2VEC2_LAYERS[width] + 1}",)),), None
    if WHISPER_KEY in shapes:
        return (Handle("AUDIO_ENCODER", audio_encoder_name, ("whisper3",)),), None
    raise RuntimeError("ERROR: audio encoder not supported.")


def audio_encoder_encode(ctx: NodeContext, audio_encoder: Handle, audio: AudioValue) -> NodeResult:
    """The encoding of the whole track (wav2vec2: resampled to 16 kHz, every hidden state kept)."""
    kind = audio_encoder.patches[0]
    hidden_states = int(kind.split(":")[1]) if kind.startswith("wav2vec2:") else None
    return (AudioEncoding(audio.seconds, hidden_states),), None


def _with_audio(conditioning: Conditioning, encoding: AudioEncoding | None) -> Conditioning:
    if encoding is None:
        return conditioning
    return dataclasses.replace(conditioning, audio_layers=encoding.hidden_states)


def _reference(ref_image: Images | LazyVideo | None, width: int, height: int) -> np.ndarray | None:
    frames = image_frames(ref_image)
    return media.upscale_center(frames[0], width, height) if frames else None


def wan_sound_image_to_video(
    ctx: NodeContext, positive: Conditioning, negative: Conditioning, vae: Handle, width: int, height: int, length: int,
    batch_size: int, audio_encoder_output: AudioEncoding | None = None, ref_image: Images | None = None,
    control_video: Images | None = None, ref_motion: Images | None = None,
) -> NodeResult:  # fmt: skip
    """``WanSoundImageToVideo``: a ``length``-frame latent; the reference image (bilinear, centre) is what the double's frames show."""
    latent = Latent(width=width, height=height, length=length, batch=batch_size, start=_reference(ref_image, width, height))
    return (_with_audio(positive, audio_encoder_output), _with_audio(negative, audio_encoder_output), latent), None


def wan_sound_image_to_video_extend(
    ctx: NodeContext, positive: Conditioning, negative: Conditioning, vae: Handle, length: int, video_latent: Latent,
    audio_encoder_output: AudioEncoding | None = None, ref_image: Images | None = None, control_video: Images | None = None,
) -> NodeResult:  # fmt: skip
    """``WanSoundImageToVideoExtend``: the next ``length`` frames, sized and batched like ``video_latent`` (the segments so far)."""
    width, height = video_latent.width // 8 * 8, video_latent.height // 8 * 8
    start = _reference(ref_image, width, height)
    latent = Latent(width=width, height=height, length=length, batch=video_latent.batch, start=video_latent.start if start is None else start)
    return (_with_audio(positive, audio_encoder_output), _with_audio(negative, audio_encoder_output), latent), None


def latent_concat(ctx: NodeContext, samples1: Latent, samples2: Latent, dim: str) -> NodeResult:
    """``LatentConcat`` along time (``t``): the latent frames of both, the first one's start image.
    Joined, the second latent's first frame stands for four pictures, not one."""
    if dim != "t":
        raise Exception(f"[comfy_double] LatentConcat along {dim!r} is not emulated")  # noqa: TRY002
    pictures = None
    if samples1.pictures is not None and samples2.pictures is not None:
        pictures = samples1.pictures + (samples2.pictures[0],) * 3 + samples2.pictures
    length = latent_length(samples1.latent_frames + samples2.latent_frames)
    return (dataclasses.replace(samples1, length=length, end=samples2.end, pictures=pictures),), None


def trim_video_latent(ctx: NodeContext, samples: Latent, trim_amount: int) -> NodeResult:
    """``TrimVideoLatent``: the latent without its first ``trim_amount`` latent frames."""
    trimmed = dataclasses.replace(samples, length=latent_length(max(1, samples.latent_frames - trim_amount)))
    if samples.pictures is not None:
        trimmed.pictures = samples.pictures[-trimmed.decoded_frames :]
    return (trimmed,), None


#: class_type -> implementation.
NODES: dict[str, NodeFunction] = {
    "LoadAudio": load_audio,
    "AudioEncoderLoader": audio_encoder_loader,
    "AudioEncoderEncode": audio_encoder_encode,
    "WanSoundImageToVideo": wan_sound_image_to_video,
    "WanSoundImageToVideoExtend": wan_sound_image_to_video_extend,
    "LatentConcat": latent_concat,
    "TrimVideoLatent": trim_video_latent,
}
