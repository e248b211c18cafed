"""A job's own LoRAs: by name and by URL, chained on the right expert, checked in ComfyUI's log.

Jobs run through the pipeline with the ComfyUI double launched as the worker's ComfyUI; LoRAs by
URL come from a local HTTP server (``ALLOW_PRIVATE_LORA_URLS=true``, as tests/test_lora_files.py
tests the address guard itself).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.comfy_double.inprocess import safetensors_stand_in
from tests.file_server import FileServer
from tests.harness import by_role, decode_mp4, filled_graph, png_b64
from worker.errors import InvalidInput
from worker.pipeline import generate_video

SMALL = {"width": 64, "height": 64, "length": 5, "seed": 3}
FITS = "loras/style/film.safetensors"
#: Tensor names of a LoRA made for another model (an image model's UNet).
OTHER_MODEL = [("lora_unet_down_blocks_0_attentions_0.lora_down.weight", (1, 4)),
               ("lora_unet_down_blocks_0_attentions_0.lora_up.weight", (4, 1))]  # fmt: skip


def _job(**fields) -> dict:
    return {"prompt": "a red ball bounces", "image": png_b64(), "options": SMALL, **fields}


def _put(volume: Path, rel: str, tensors=None) -> Path:
    path = volume / "models" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(safetensors_stand_in(rel, tensors))
    return path


def _chain(graph, start: str) -> list[str]:
    """Roles from ``start`` along the model links to the sampler."""
    roles = {node_id: role for role, node_id in graph.roles.items()}
    chain, node = [start], graph.roles[start]
    while True:
        fed = [nid for nid, n in graph.prompt.items() if n["inputs"].get("model") == [node, 0]]
        if not fed:
            return chain
        node = fed[0]
        chain.append(roles[node])


def test_loras_are_chained_after_the_lightx2v_lora_of_their_expert() -> None:
    loras = [{"name": "a.safetensors", "target": "high", "strength": 0.5}, {"name": "b.safetensors"},
             {"name": "c.safetensors", "target": "low", "strength": -1}]  # fmt: skip
    graph = filled_graph(_job(loras=loras))
    assert _chain(graph, "model_high_noise") == [
        "model_high_noise", "lora_high_noise", "user_lora_0_lora_high_noise", "user_lora_1_lora_high_noise",
        "shift_high_noise", "sampler_high_noise",
    ]  # fmt: skip
    assert _chain(graph, "model_low_noise") == [
        "model_low_noise", "lora_low_noise", "user_lora_1_lora_low_noise", "user_lora_2_lora_low_noise",
        "shift_low_noise", "sampler_low_noise",
    ]  # fmt: skip
    nodes = by_role(graph)
    assert (nodes["user_lora_0_lora_high_noise"]["lora_name"], nodes["user_lora_0_lora_high_noise"]["strength_model"]) == ("a.safetensors", 0.5)
    assert nodes["user_lora_2_lora_low_noise"]["strength_model"] == -1.0


def test_the_5b_task_takes_loras_on_its_one_model() -> None:
    graph = filled_graph({"prompt": "x", "task": "ti2v-5b", "loras": [{"name": "a.safetensors"}]})
    assert _chain(graph, "model") == ["model", "user_lora_0_model", "shift", "sampler"]


def test_a_lora_by_name_is_applied_and_listed_in_the_answer(make_runtime) -> None:
    runtime = make_runtime()
    _put(runtime.settings.comfy.volume_path, FITS)
    out = generate_video(_job(loras=[{"name": "style/film.safetensors", "strength": 0.7, "target": "high"}]), "lora", runtime)
    assert decode_mp4(base64.b64decode(out["video"]))["frames"] == 5
    assert out["loras"] == [{"name": "style/film.safetensors", "strength": 0.7, "target": "high"}]
    assert "warnings" not in out and "loras" in out["timings"]


def test_an_unknown_name_names_the_closest_files_before_comfyui_runs(make_runtime) -> None:
    runtime = make_runtime()
    _put(runtime.settings.comfy.volume_path, FITS)
    with pytest.raises(InvalidInput) as err:
        generate_video(_job(loras=[{"name": "film.safetensors"}]), "unknown", runtime)
    assert str(err.value).startswith("loras[0].name: 'film.safetensors' is not a LoRA file ComfyUI lists; the closest are 'style/film.safetensors'")
    state = requests.get(f"{runtime.settings.comfy.base_url}/__double__/state", timeout=5).json()
    assert state["prompts"] == []


def test_a_lora_made_for_another_model_is_a_warning_naming_it(make_runtime) -> None:
    runtime = make_runtime()
    _put(runtime.settings.comfy.volume_path, FITS)
    _put(runtime.settings.comfy.volume_path, "loras/sd15_style.safetensors", OTHER_MODEL)
    loras = [{"name": "style/film.safetensors"}, {"name": "sd15_style.safetensors", "target": "low"}]
    out = generate_video(_job(loras=loras), "mismatch", runtime)
    [warning] = out["warnings"]
    assert warning.startswith("loras[1] ('sd15_style.safetensors'): 2 of its 2 tensors did not fit the model and were not loaded")
    assert "made for another model" in warning
    assert [lora["name"] for lora in out["loras"]] == ["style/film.safetensors", "sd15_style.safetensors"]


@pytest.fixture
def lora_site() -> Iterator[FileServer]:
    with FileServer() as site:
        yield site


def test_a_lora_by_url_is_fetched_once_and_loaded_from_the_cache(make_runtime, lora_site: FileServer) -> None:
    runtime = make_runtime(ALLOW_PRIVATE_LORA_URLS="true")
    lora_site.files["/film.safetensors"] = safetensors_stand_in("loras/film.safetensors")
    job = _job(loras=[{"url": f"{lora_site.url}/film.safetensors?token=secret", "strength": 0.8}])
    first = generate_video(job, "url-1", runtime)
    second = generate_video({**job, "options": {**SMALL, "seed": 4}}, "url-2", runtime)
    assert lora_site.requests == ["/film.safetensors?token=secret"]  # downloaded once
    assert first["loras"] == second["loras"] == [{"url": f"{lora_site.url}/film.safetensors?…", "strength": 0.8, "target": "both"}]
    cached = list(runtime.loras.folder.glob("*.safetensors"))
    assert len(cached) == 1 and cached[0].name in runtime.client.list_models("loras")  # ComfyUI lists the cache folder


def test_a_url_that_is_not_a_lora_is_refused_before_comfyui_runs(make_runtime, lora_site: FileServer) -> None:
    runtime = make_runtime(ALLOW_PRIVATE_LORA_URLS="true")
    lora_site.files["/page"] = b"<!DOCTYPE html><html>Sign in</html>"
    with pytest.raises(InvalidInput, match=r"^loras\[0\]\.url: .*HTML"):
        generate_video(_job(loras=[{"url": f"{lora_site.url}/page"}]), "html", runtime)
    assert requests.get(f"{runtime.settings.comfy.base_url}/__double__/state", timeout=5).json()["prompts"] == []
