"""The stored graphs and the task fill: roles found by title, values injected by role, loud failure on gaps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import by_role, filled_graph
from worker.errors import WorkflowError
from worker.graph import JobFiles, job_files, load_template
from worker.pipeline import Runtime
from worker.request.fields import DEFAULT_NEGATIVE_PROMPT
from worker.request.parse import parse_request
from worker.settings import Settings
from worker.tasks import REGISTRY
from worker.tasks.stored import build_graph

I2V = REGISTRY["i2v"]
I2V_PATH = Settings().workflows_dir / I2V.workflow
TEMPLATE = load_template(I2V_PATH, I2V.roles)
FILES = JobFiles("wan22_job1_ab")
LORA = "wan/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors"


def _job(**options) -> dict:
    return {"prompt": "a fox runs", "image": "aGk=", "options": options}


def test_template_has_every_role_once() -> None:
    assert set(TEMPLATE.roles) == set(I2V.roles)


def test_defaults_fill_the_original_workers_values() -> None:
    n = by_role(filled_graph(_job(seed=7), files=FILES))
    assert (n["latent"]["width"], n["latent"]["height"], n["latent"]["length"]) == (832, 832, 81)
    assert (n["resize_image"]["width"], n["resize_image"]["height"]) == (832, 832)
    assert n["positive_prompt"]["text"] == "a fox runs"
    assert n["negative_prompt"]["text"] == DEFAULT_NEGATIVE_PROMPT
    assert n["load_image"]["image"] == FILES.input_name("image", ".png")
    assert n["video_output"]["filename_prefix"] == FILES.filename_prefix
    assert n["video_output"]["frame_rate"] == 24.0 and n["video_output"]["save_metadata"] is False
    assert n["resize_image"]["method"] == "fill / crop"
    high, low = n["sampler_high_noise"], n["sampler_low_noise"]
    assert (high["start_at_step"], high["end_at_step"], high["add_noise"], high["return_with_leftover_noise"]) == (0, 3, "enable", "enable")
    assert (low["start_at_step"], low["add_noise"], low["return_with_leftover_noise"]) == (3, "disable", "disable")
    assert high["noise_seed"] == low["noise_seed"] == 7 and high["steps"] == low["steps"] == 6 and high["cfg"] == 1.0
    assert n["lora_high_noise"]["lora_name"] == n["lora_low_noise"]["lora_name"] == LORA
    assert n["shift_high_noise"]["shift"] == n["shift_low_noise"]["shift"] == 8.0
    assert n["text_encoder"]["type"] == "wan"


def test_options_and_model_overrides_reach_their_nodes() -> None:
    env = {"MODEL_HIGH_NOISE": "h.safetensors", "MODEL_LOW_NOISE": "l.safetensors", "MODEL_TEXT_ENCODER": "t.safetensors",
           "MODEL_VAE": "v.safetensors", "MODEL_LORA": "x.safetensors", "SAVE_METADATA": "true"}  # fmt: skip
    job = _job(width=480, height=320, length=33, steps=8, split_step=5, cfg=2.5, shift=5.0, sampler_name="uni_pc",
               scheduler="beta", lora_strength=0.75, resize="pad", fps=16)  # fmt: skip
    n = by_role(filled_graph(job, Settings.from_env(env)))
    assert (n["resize_image"]["width"], n["resize_image"]["height"], n["resize_image"]["method"]) == (480, 320, "pad")
    assert n["sampler_high_noise"]["end_at_step"] == 5 and n["sampler_low_noise"]["start_at_step"] == 5
    assert n["sampler_low_noise"]["sampler_name"] == "uni_pc" and n["sampler_high_noise"]["scheduler"] == "beta"
    assert n["lora_low_noise"]["strength_model"] == 0.75 and n["lora_high_noise"]["lora_name"] == "x.safetensors"
    assert (n["model_high_noise"]["unet_name"], n["model_low_noise"]["unet_name"]) == ("h.safetensors", "l.safetensors")
    assert n["text_encoder"]["clip_name"] == "t.safetensors" and n["vae"]["vae_name"] == "v.safetensors"
    assert n["video_output"]["frame_rate"] == 16.0 and n["video_output"]["save_metadata"] is True


def test_filling_does_not_touch_the_loaded_graphs() -> None:
    runtime = Runtime.create(Settings())
    def snapshot() -> str:
        return json.dumps([{name: t.graph for name, t in loaded.items()} for loaded in (runtime.templates, runtime.fragments)])

    before = snapshot()
    request = parse_request({**_job(), "return_last_frame": True}, runtime.settings)
    build_graph(runtime, I2V, request, FILES, {"image": FILES.input_name("image", ".png")})
    assert snapshot() == before


def test_renumbered_nodes_are_still_found_by_role(tmp_path: Path) -> None:
    graph = json.loads(I2V_PATH.read_text())
    mapping = {old: str(100 + i) for i, old in enumerate(graph)}
    renumbered = {}
    for old, node in graph.items():
        node = json.loads(json.dumps(node))
        for key, value in node["inputs"].items():
            if isinstance(value, list):
                node["inputs"][key] = [mapping[value[0]], value[1]]
        renumbered[mapping[old]] = node
    (tmp_path / "fragments").mkdir()
    for fragment in (Settings().workflows_dir / "fragments").iterdir():
        (tmp_path / "fragments" / fragment.name).write_text(fragment.read_text())
    (tmp_path / I2V.workflow).write_text(json.dumps(renumbered))
    settings = Settings(workflows_dir=tmp_path, tasks=("i2v",))
    filled = filled_graph(_job(width=64, height=64, length=5), settings)
    assert filled.prompt[filled.roles["latent"]]["inputs"]["width"] == 64
    assert filled.roles["video_output"] == mapping[TEMPLATE.roles["video_output"]]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda g: g.pop(next(k for k, v in g.items() if v["_meta"]["title"] == "sampler_low_noise")), "role 'sampler_low_noise' found 0 times"),
        (lambda g: g.__setitem__("99", dict(next(v for v in g.values() if v["_meta"]["title"] == "decode"))), "role 'decode' found 2 times"),
        (lambda g: next(v for v in g.values() if v["_meta"]["title"] == "vae").__setitem__("class_type", "CLIPLoader"), "role 'vae' is a CLIPLoader, expected VAELoader"),
    ],
)
def test_a_missing_duplicated_or_wrong_role_fails_loudly(tmp_path: Path, mutate, message: str) -> None:
    graph = json.loads(I2V_PATH.read_text())
    mutate(graph)
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(graph))
    with pytest.raises(WorkflowError, match=message):
        load_template(path, I2V.roles)


def test_unreadable_workflow_is_a_workflow_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="cannot read the workflow"):
        load_template(tmp_path / "missing.json", I2V.roles)


def test_job_files_are_unique_and_safe() -> None:
    a, b = job_files("sync-1/../x"), job_files("sync-1/../x")
    assert a != b and "/" not in a.input_name("image", ".png") and a.input_name("image", ".png").endswith(".png")
    assert a.filename_prefix.startswith("wan22_sync-1____x_")


def _recorded_by_class(name: str) -> dict[str, list[dict]]:
    from tests.comfy_double import recordings

    prompt = next(iter(recordings.load_json(f"{name}_history.json").values()))["prompt"][2]
    by_class: dict[str, list[dict]] = {}
    for node_id in sorted(prompt, key=int):
        node = prompt[node_id]
        by_class.setdefault(node["class_type"], []).append({k: v for k, v in node["inputs"].items() if not isinstance(v, list)})
    return by_class


def test_the_4step_preset_fills_the_experts_as_the_recorded_4step_graph() -> None:
    recorded = _recorded_by_class("i2v4step")
    graph = by_role(filled_graph({**_job(seed=42, width=64, height=64, length=5), "speed": "4step"}, files=FILES))
    n = {role: {k: v for k, v in inputs.items() if not isinstance(v, list)} for role, inputs in graph.items()}  # values, not links
    assert [n["lora_high_noise"], n["lora_low_noise"]] == recorded["LoraLoaderModelOnly"]
    assert [n["shift_high_noise"], n["shift_low_noise"]] == recorded["ModelSamplingSD3"]
    assert [n["sampler_high_noise"], n["sampler_low_noise"]] == recorded["KSamplerAdvanced"]
    assert [n["model_high_noise"], n["model_low_noise"]] == recorded["UNETLoader"]


def test_the_4step_preset_takes_the_jobs_own_values_and_the_t2v_loras() -> None:
    n = by_role(filled_graph({**_job(steps=6, shift=7.0, lora_strength=0.5), "speed": "4step"}, files=FILES))
    assert n["sampler_high_noise"]["steps"] == 6 and n["sampler_high_noise"]["end_at_step"] == 3 and n["shift_low_noise"]["shift"] == 7.0
    assert n["lora_high_noise"]["strength_model"] == n["lora_low_noise"]["strength_model"] == 0.5
    t2v = by_role(filled_graph({"prompt": "p", "task": "t2v", "speed": "4step"}, files=FILES))
    assert t2v["lora_high_noise"]["lora_name"] == "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors"
    assert t2v["lora_low_noise"]["lora_name"] == "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors"
    env = {"MODEL_LORA_4STEP_HIGH_NOISE": "fast/h.safetensors", "MODEL_T2V_LORA_4STEP_LOW_NOISE": "fast/tl.safetensors"}
    flf2v = by_role(filled_graph({"prompt": "p", "end_image": "aGk=", "speed": "4step"}, Settings.from_env(env), files=FILES))
    assert flf2v["lora_high_noise"]["lora_name"] == "fast/h.safetensors"
    assert flf2v["lora_low_noise"]["lora_name"] == "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors"
    t2v = by_role(filled_graph({"prompt": "p", "task": "t2v", "speed": "4step"}, Settings.from_env(env), files=FILES))
    assert t2v["lora_low_noise"]["lora_name"] == "fast/tl.safetensors"


def test_torch_compile_puts_a_compile_node_between_each_final_model_and_its_sampler() -> None:
    compiled = Settings.from_env({"TORCH_COMPILE": "true"})
    job = {**_job(), "loras": [{"name": "style/film.safetensors", "target": "high"}]}
    graph = filled_graph(job, compiled, files=FILES)
    n = by_role(graph)
    for expert in ("high_noise", "low_noise"):
        assert graph.prompt[graph.roles[f"compile_shift_{expert}"]]["class_type"] == "TorchCompileModel"
        assert n[f"compile_shift_{expert}"] == {"model": graph.link(f"shift_{expert}"), "backend": "inductor"}
        assert n[f"sampler_{expert}"]["model"] == graph.link(f"compile_shift_{expert}")
    assert n["shift_high_noise"]["model"] == graph.link("user_lora_0_lora_high_noise")  # the LoRAs are compiled in
    five_b = filled_graph({"prompt": "p", "task": "ti2v-5b"}, compiled, files=FILES)
    assert by_role(five_b)["sampler"]["model"] == five_b.link("compile_shift")
    plain = filled_graph(_job(), files=FILES)
    assert not any(node["class_type"] == "TorchCompileModel" for node in plain.prompt.values())
