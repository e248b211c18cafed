"""Run the double inside a test process: ``with DoubleServer(...) as comfy: ...``.

The server runs its own asyncio loop on a background thread, bound to 127.0.0.1 on a free port;
the executor runs on another thread, exactly as in the child process. Every control of the HTTP
``/__double__`` API is also a Python method here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
import struct
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from .folders import Folders, apply_model_paths, load_extra_model_paths, volume_model_paths
from .server import DoubleApp

logger = logging.getLogger(__name__)

#: The model files of the worker's stored workflow, as laid out on the volume (``models/...``);
#: the LoRA sits in ``loras/wan/`` (the worker's default layout).
WORKFLOW_MODEL_FILES: tuple[str, ...] = (
    "diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
    "diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
    "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    "vae/wan_2.1_vae.safetensors",
    "loras/wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors",
)


#: Every model file of the graphs the double has recordings of: the stored workflow's, plus
#: T2V-A14B (``t2v_*``), TI2V-5B with the Wan 2.2 VAE (``ti2v5b_*``) and the 4-step LoRA preset
#: (``i2v4step_*``), named as in ``object_info_used_nodes.json``'s model lists, the T2V 4-step
#: LoRAs (not recorded; named as Comfy-Org's Wan 2.2 repackaging publishes them), S2V's model and
#: audio encoder (``s2v_*``), Animate's model and CLIP vision (``animate_*``) and its relight LoRA
#: (not recorded; named as the worker's task animate loads it), Fun-Control's two
#: experts (``fun_control_*``), the native frame interpolation models (``native_*``) and the two
#: the worker's interpolating jobs load (Comfy-Org's names; a stand-in whose name says ``film`` is FILM).
ALL_MODEL_FILES: tuple[str, ...] = WORKFLOW_MODEL_FILES + (
    "diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
    "diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
    "diffusion_models/wan2.2_ti2v_5B_fp16.safetensors",
    "vae/wan2.2_vae.safetensors",
    "loras/wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
    "loras/wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
    "loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
    "loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors",
    "diffusion_models/wan2.2_s2v_14B_fp8_scaled.safetensors",
    "audio_encoders/wav2vec2_large_english_fp16.safetensors",
    "diffusion_models/wan2.2_animate_14B_bf16.safetensors",
    "clip_vision/clip_vision_h.safetensors",
    "loras/wan/WanAnimate_relight_lora_fp16.safetensors",
    "diffusion_models/wan2.2_fun_control_high_noise_14B_fp8_scaled.safetensors",
    "diffusion_models/wan2.2_fun_control_low_noise_14B_fp8_scaled.safetensors",
    "frame_interpolation/rife_ifnet5_random.safetensors",  # the names the native_* recordings used
    "frame_interpolation/film_net_random.safetensors",
    "frame_interpolation/rife_v4.26.safetensors",
    "frame_interpolation/film_net_fp16.safetensors",
    "checkpoints/sdpose_wholebody_fp16.safetensors",
    "checkpoints/sam3.1_multiplex_fp16.safetensors",
)

#: One tiny tensor per stand-in, named like a tensor of that kind of model; a LoRA gets a
#: ``lora_down`` / ``lora_up`` pair (rank 1), as LoRA files hold, named to fit the Wan model. Where
#: ComfyUI tells models apart by their keys the stand-in has those: wav2vec2 large's
#: ``encoder.layer_norm.bias`` (1024 wide), the keys a 5-block RIFE is recognised by, and SDPose's heatmap head.
_STAND_IN_TENSORS: dict[str, tuple[tuple[str, tuple[int, ...]], ...]] = {
    "diffusion_models": (("blocks.0.self_attn.q.weight", (4, 4)),),
    "unet": (("blocks.0.self_attn.q.weight", (4, 4)),),
    "text_encoders": (("shared.weight", (4, 4)),),
    "clip": (("shared.weight", (4, 4)),),
    "vae": (("decoder.head.2.weight", (4, 4)),),
    "loras": (
        ("diffusion_model.blocks.0.self_attn.q.lora_down.weight", (1, 4)),
        ("diffusion_model.blocks.0.self_attn.q.lora_up.weight", (4, 1)),
    ),
    "audio_encoders": (("encoder.layer_norm.bias", (1024,)),),
    "frame_interpolation": (("encode.cnn3.weight", (4, 4, 4, 4)), *((f"blocks.{i}.conv0.1.0.weight", (4, 4, 3, 3)) for i in range(5))),
    "checkpoints": (("model.diffusion_model.input_blocks.0.0.weight", (4, 4, 3, 3)), ("model.diffusion_model.heatmap_head.conv_layers.0.weight", (4, 4, 1, 1))),
}
#: SAM 3.1 is recognised by these keys (the stand-ins of ``checkpoints`` whose name says ``sam3``).
_SAM3_TENSORS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv.weight", (4, 4)),
    ("detector.transformer.decoder.query_embed.weight", (4, 4)),
    ("detector.backbone.vision_backbone.propagation_convs.0.conv_1x1.weight", (4, 4, 1, 1)),
)
#: FILM is recognised by this key (the stand-ins of ``frame_interpolation`` whose name says ``film``).
_FILM_TENSORS: tuple[tuple[str, tuple[int, ...]], ...] = (("extract.extract_sublevels.convs.0.0.conv.weight", (4, 3, 3, 3)),)
_DEFAULT_TENSORS: tuple[tuple[str, tuple[int, ...]], ...] = (("weight", (4, 4)),)
#: (folder, a word of the file name) -> the tensors of the stand-ins told apart by name within a folder.
_NAMED_TENSORS: dict[tuple[str, str], tuple[tuple[str, tuple[int, ...]], ...]] = {
    ("frame_interpolation", "film"): _FILM_TENSORS, ("checkpoints", "sam3"): _SAM3_TENSORS,
}


def safetensors_stand_in(rel: str, tensors: Sequence[tuple[str, tuple[int, ...]]] | None = None) -> bytes:
    """A minimal valid ``.safetensors`` file for the model ``rel`` (``<folder>/.../<name>``).

    The format: an 8-byte little-endian header length, the JSON header (tensor name -> dtype,
    shape, ``data_offsets`` into the data; ``__metadata__`` string -> string), padded with spaces
    to a multiple of 8, then the tensors' bytes (zeros, float16) back to back. ``tensors`` replaces
    the usual names: a LoRA whose names do not start with ``diffusion_model.blocks.`` does not fit
    the model, and the double logs ``lora key not loaded`` for each (``node_impls``).
    """
    if tensors is None:
        folder, name = Path(rel).parts[0], Path(rel).name
        named = (t for (f, word), t in _NAMED_TENSORS.items() if f == folder and word in name)
        tensors = next(named, _STAND_IN_TENSORS.get(folder, _DEFAULT_TENSORS))
    header: dict[str, object] = {}
    offset = 0
    for name, shape in tensors:
        size = math.prod(shape) * 2  # F16
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt", "comfy_double": f"stand-in for {Path(rel).name}"}
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + bytes(offset)


def create_model_files(models_root: Path, files: Iterable[str] = WORKFLOW_MODEL_FILES) -> list[Path]:
    """Create model files under ``models_root``: for ``.safetensors`` names a minimal valid
    safetensors file (:func:`safetensors_stand_in`, so a header check passes), else an empty file.
    The double itself only looks at the names."""
    created = []
    for rel in files:
        path = Path(models_root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".safetensors":
            path.write_bytes(safetensors_stand_in(rel))
        else:
            path.touch()
        created.append(path)
    return created


class DoubleServer:
    """An in-process ComfyUI double serving on ``127.0.0.1:<free port>``.

    ``models_root`` is a volume's ``models`` folder, registered like the worker's
    extra_model_paths.yaml does (``diffusion_models`` + ``unet``, ``text_encoders`` + ``clip``,
    ``vae``, ``loras``); ``model_folders`` adds explicit ``{folder_name: [paths]}``;
    ``extra_model_paths_configs`` are YAML files parsed like ComfyUI. Missing input/output/temp/user
    folders are created in a temporary base folder removed on close. ``disable_metadata`` is
    ComfyUI's ``--disable-metadata`` (the worker passes it): SaveImage then writes bare PNGs.
    """

    def __init__(
        self,
        *,
        models_root: Path | None = None,
        model_folders: Mapping[str, Sequence[Path]] | None = None,
        extra_model_paths_configs: Sequence[Path] = (),
        input_dir: Path | None = None,
        output_dir: Path | None = None,
        temp_dir: Path | None = None,
        user_dir: Path | None = None,
        base_dir: Path | None = None,
        faults: Any = None,
        disable_metadata: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._own_base = base_dir is None
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="comfy_double_"))
        self.folders = Folders.create(
            self.base_dir, input_dir=input_dir, output_dir=output_dir, temp_dir=temp_dir, user_dir=user_dir
        )
        self.models_root = Path(models_root) if models_root else None
        if self.models_root is not None:
            apply_model_paths(self.folders, volume_model_paths(self.models_root))
        if model_folders:
            apply_model_paths(self.folders, model_folders)
        for config in extra_model_paths_configs:
            load_extra_model_paths(self.folders, Path(config))
        self.folders.ensure_io_dirs()
        self.host = host
        self._requested_port = port
        self.port = 0
        self.disable_metadata = disable_metadata
        self.app = DoubleApp(self.folders, argv=[], on_crash=self._on_crash, disable_metadata=disable_metadata)
        if faults:
            self.app.add_faults(faults)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> DoubleServer:
        self._thread = threading.Thread(target=self._serve, name="comfy-double-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("comfy_double did not start within 10 s")
        if self._startup_error is not None:
            raise RuntimeError("comfy_double failed to start") from self._startup_error
        self.app.argv = [
            "main.py",
            "--listen",
            self.host,
            "--port",
            str(self.port),
            "--disable-auto-launch",
            "--preview-method",
            "none",
            "--input-directory",
            str(self.input_dir),
            "--output-directory",
            str(self.output_dir),
            "--temp-directory",
            str(self.temp_dir),
        ] + (["--disable-metadata"] if self.disable_metadata else [])
        self.app.executor.start()
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start_http())
        except BaseException as ex:  # noqa: BLE001 - reported to start()
            self._startup_error = ex
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._stop_http())
            loop.close()

    async def _start_http(self) -> None:
        self._runner = web.AppRunner(self.app.web_app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop_http(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def close(self) -> None:
        """Stop everything (releases a hang/freeze first); safe to call twice or after a crash."""
        if self._closed:
            return
        self._closed = True
        self.app.executor.release_blocks()
        self.app.executor.stop()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(10)
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> DoubleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_crash(self, exit_code: int) -> None:
        """In-process "crash": stop listening and drop every socket, as a dead process would."""
        logger.error("comfy_double: in-process crash (status %s): listener and sockets closed", exit_code)
        self.app.crashed = True
        loop = self._loop
        if threading.current_thread() is self._thread and loop is not None:
            loop.create_task(self._stop_http())  # called from a request handler: cannot wait here
            return
        if loop is not None and not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(self._stop_http(), loop)
            try:
                future.result(5)
            except Exception:  # noqa: BLE001 - best effort
                logger.exception("comfy_double: error while simulating the crash")

    # -- addresses and folders ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, client_id: str) -> str:
        return f"ws://{self.host}:{self.port}/ws?clientId={client_id}"

    @property
    def input_dir(self) -> Path:
        return self.folders.input_dir

    @property
    def output_dir(self) -> Path:
        return self.folders.output_dir

    @property
    def temp_dir(self) -> Path:
        return self.folders.temp_dir

    @property
    def user_dir(self) -> Path:
        return self.folders.user_dir

    @property
    def crashed(self) -> bool:
        return self.app.crashed

    # -- controls (same as /__double__) ----------------------------------------------------------------

    def add_faults(self, *specs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Arm faults, e.g. ``add_faults({"mode": "step_delay", "seconds": 0.2})``."""
        return self.app.add_faults(list(specs))

    def reset(self, **what: bool) -> list[str]:
        """Clear faults + observations (default); ``history=True``, ``cache=True``, ``queue=True``."""
        return self.app.reset(**what)

    def state(self) -> dict[str, Any]:
        """Same as ``GET /__double__/state``, without HTTP (works while frozen)."""
        return json.loads(json.dumps(self.app.state()))

    def history(self, prompt_id: str | None = None) -> dict[str, Any]:
        return self.app.queue.history(prompt_id=prompt_id)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until nothing is pending or running."""
        deadline = time.monotonic() + timeout
        while self.app.queue.remaining():
            if time.monotonic() > deadline:
                raise TimeoutError(f"comfy_double still busy after {timeout} s")
            time.sleep(0.01)

    def wait_history(self, prompt_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the history entry of ``prompt_id`` and return it."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id)
            if entry:
                return entry[prompt_id]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no history for {prompt_id} after {timeout} s")
            time.sleep(0.01)

    def get_json(self, path: str) -> Any:
        """Small helper for tests: ``GET`` a JSON endpoint of this server."""
        with urllib.request.urlopen(self.url + path, timeout=10) as response:  # noqa: S310 - local URL
            return json.loads(response.read())
