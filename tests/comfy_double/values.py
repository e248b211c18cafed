"""The values nodes pass to each other in the double, and the context the executor gives a node.

Every node module works on these: a MODEL is a :class:`Handle` (a name and its patches), an IMAGE
batch real RGB frames (:class:`Images`, or a :class:`LazyVideo` made frame by frame), a LATENT a
:class:`Latent` that knows what VAEDecode will show, an AUDIO real samples, a VIDEO a file or frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import decoding, media
from .folders import Folders
from .node_defs import NodeCatalog


@dataclass(frozen=True)
class Handle:
    """A loaded MODEL / CLIP / VAE (only its identity matters to the double)."""

    kind: str
    name: str
    patches: tuple[Any, ...] = ()

    def __str__(self) -> str:
        return f"<{self.kind} {self.name}{''.join(f' +{p}' for p in self.patches)}>"

    def patched(self, patch: Any) -> Handle:
        return Handle(self.kind, self.name, self.patches + (patch,))


@dataclass(frozen=True)
class Conditioning:
    """A text's conditioning; ``audio_layers``: the hidden states of the audio encoding an S2V node added."""

    text: str
    audio_layers: int | None = None

    def __str__(self) -> str:
        return f"<CONDITIONING {self.text[:40]!r}>"


@dataclass
class Images:
    """An IMAGE batch: frames as RGB uint8 arrays of one size."""

    frames: list[np.ndarray]

    def __str__(self) -> str:
        h, w = self.frames[0].shape[:2] if self.frames else (0, 0)
        return f"<IMAGE {len(self.frames)}x{h}x{w}x3>"


class LazyVideo:
    """An IMAGE batch made frame by frame on demand, so an 81-frame 832x480 video is never held."""

    @property
    def count(self) -> int:
        raise NotImplementedError

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` of the whole IMAGE batch (``0 <= index < count``)."""
        raise NotImplementedError

    def frames(self) -> Iterator[np.ndarray]:
        for index in range(self.count):
            yield self.frame(index)

    def __str__(self) -> str:
        h, w = self.frame(0).shape[:2] if self.count else (0, 0)
        return f"<IMAGE {self.count}x{h}x{w}x3>"


def image_frames(image: Images | LazyVideo | None) -> list[np.ndarray]:
    """The frames of an IMAGE input, whether a loaded image or a lazy output (VAEDecode, RIFE)."""
    if image is None:
        return []
    return image.frames if isinstance(image, Images) else list(image.frames())


def image_count(image: Images | LazyVideo) -> int:
    return len(image.frames) if isinstance(image, Images) else image.count


@dataclass
class Latent:
    """A Wan video latent: what VAEDecode needs to know to "decode" it.

    ``length`` is in pictures: ``(length - 1) // 4 + 1`` latent frames, which decode to
    ``4 * frames - 3`` pictures (the first latent frame stands for one picture, every other for four).
    ``start`` / ``end`` are the images the latent was conditioned on (first / last frame), already
    fitted to ``width x height``: the decoded frames pan from ``start`` or cross-fade to ``end``.
    ``pictures``, when a node fixes every frame (Animate, Fun-Control), are the decoded frames.
    ``spatial`` is the VAE's spatial compression (8 for the Wan 2.1 VAE, 16 for the Wan 2.2 VAE) and
    ``channels`` the latent's (16, or 48 for Wan 2.2).
    """

    width: int
    height: int
    length: int
    batch: int
    start: np.ndarray | None
    seed: int | None = None
    end: np.ndarray | None = None
    spatial: int = 8
    channels: int = 16
    pictures: tuple[np.ndarray, ...] | None = None

    @property
    def latent_frames(self) -> int:
        return (self.length - 1) // 4 + 1

    @property
    def decoded_frames(self) -> int:
        return 4 * self.latent_frames - 3

    def __str__(self) -> str:
        return f"<LATENT {self.batch}x{self.channels}x{self.latent_frames}x{self.height // self.spatial}x{self.width // self.spatial}>"


def latent_length(latent_frames: int) -> int:
    """The ``length`` (in pictures) of a latent of ``latent_frames`` frames."""
    return (latent_frames - 1) * 4 + 1


@dataclass
class DecodedVideo(LazyVideo):
    """VAEDecode's IMAGE output, produced lazily frame by frame (batch items one after the other)."""

    plan: media.FramePlan
    batch: int

    @property
    def count(self) -> int:
        return self.plan.count * self.batch

    def frames(self) -> Iterator[np.ndarray]:
        for _ in range(self.batch):
            for index in range(self.plan.count):
                yield self.plan.frame(index)

    def frame(self, index: int) -> np.ndarray:
        return self.plan.frame(index % self.plan.count)

    def __str__(self) -> str:
        h, w = self.plan.first.shape[:2]
        return f"<IMAGE {self.count}x{h}x{w}x3>"


@dataclass
class AudioValue:
    """An ``AUDIO``: ``{"waveform": (batch, channels, samples), "sample_rate"}`` in ComfyUI; here the samples and rate."""

    samples: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return self.samples.shape[1] / self.rate

    def __str__(self) -> str:
        """``str()`` of ComfyUI's dict, the tensor's values left out (``PreviewAny`` shows it)."""
        return f"{{'waveform': tensor(shape=(1, {self.samples.shape[0]}, {self.samples.shape[1]})), 'sample_rate': {self.rate}}}"


@dataclass(frozen=True)
class VideoComponents:
    """``GetVideoComponents``' outputs: frames, audio (or None), frame rate and bit depth."""

    images: Images
    audio: AudioValue | None
    fps: float
    bit_depth: int = 8


@dataclass(frozen=True)
class VideoFile:
    """``LoadVideo``'s VIDEO: the file, decoded only when its components are asked for."""

    path: Path

    def components(self) -> VideoComponents:
        decoded = decoding.decode_video(self.path)
        audio = AudioValue(*decoded.audio) if decoded.audio is not None else None
        return VideoComponents(Images(decoded.frames), audio, decoded.fps, decoded.bit_depth)

    def __str__(self) -> str:
        return f"<VIDEO {self.path.name}>"


@dataclass
class VideoValue:
    """``CreateVideo``'s VIDEO: frames, a frame rate and maybe a track."""

    frames: list[np.ndarray]
    fps: float
    audio: AudioValue | None = None

    def components(self) -> VideoComponents:
        return VideoComponents(Images(self.frames), self.audio, self.fps)

    def __str__(self) -> str:
        return f"<VIDEO {len(self.frames)} frames at {self.fps:g} fps>"


@dataclass
class NodeContext:
    """Everything a node implementation may use; callbacks come from the executor."""

    node_id: str
    class_type: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    folders: Folders
    catalog: NodeCatalog
    progress: Callable[..., None]  # progress(value, total, delay=0.0, slow=False): interrupt check + report
    step_delay: float = 0.0
    missing_output: bool = False
    disable_metadata: bool = False
    #: What stays loaded in the "process" between prompts (the RIFE model cache), kept by the executor.
    process: dict[str, Any] = field(default_factory=dict)


NodeResult = tuple[tuple[Any, ...], dict[str, Any] | None]
NodeFunction = Callable[..., NodeResult]


def require_model(ctx: NodeContext, folder: str, name: str) -> Path:
    """``folder_paths.get_full_path_or_raise``: the file may have vanished since validation."""
    path = ctx.folders.find_model(folder, name)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder}' with filename '{name}' not found.")
    return path
