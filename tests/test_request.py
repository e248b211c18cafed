"""parse_request: every rule of the API, checked through the message a client would read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from worker.errors import InvalidInput
from worker.request import options as request_module
from worker.request.fields import DEFAULT_NEGATIVE_PROMPT
from worker.request.model import MediaInput, VideoRequest
from worker.request.options import SAMPLER_NAMES, SCHEDULERS
from worker.request.parse import parse_request
from worker.settings import Limits, Settings
from worker.tasks import REGISTRY
from worker.tasks.common import RESIZE_METHODS

ROOT = Path(__file__).resolve().parent.parent
OBJECT_INFO = json.loads((ROOT / "tests" / "recordings" / "object_info_used_nodes.json").read_text(encoding="utf-8"))
WORKFLOW = json.loads((ROOT / "workflows" / "wan22_i2v_14b_lightx2v.json").read_text(encoding="utf-8"))
LIMITS = Limits()
IMAGE = "iVBORw0KGgo="  # parse_request only checks the type; worker.image decodes it


def job(**options: Any) -> dict[str, Any]:
    return {"prompt": "a cat walks on the beach", "image": IMAGE, "options": options}


def parse(job_input: object, limits: Limits = LIMITS) -> VideoRequest:
    return parse_request(job_input, Settings(limits=limits))


def error_of(job_input: object, limits: Limits = LIMITS) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_request(job_input, Settings(limits=limits))
    return str(caught.value)


def comfy_input(node: str, name: str) -> Any:
    return OBJECT_INFO[node]["input"]["required"][name]


# --- Defaults and the ComfyUI ground truth --------------------------------------------------------


def test_minimal_job_gets_every_default() -> None:
    req = parse({"prompt": "a cat", "image": IMAGE})
    assert (req.width, req.height, req.length, req.steps, req.split_step) == (832, 832, 81, 6, 3)
    assert (req.cfg, req.frame_rate, req.shift, req.lora_strength) == (1.0, 24.0, 8.0, 1.0)
    assert (req.sampler_name, req.scheduler, req.resize) == ("euler", "simple", "crop")
    assert req.negative_prompt == DEFAULT_NEGATIVE_PROMPT
    assert req.inputs == (MediaInput("image", "image", b64=IMAGE, rate=24.0, cover=(832, 832)),) and req.input("image").url is None
    assert req.seed_randomized is True and 0 <= req.seed <= 2**64 - 1
    assert (req.task, req.return_last_frame, req.output_mode) == ("i2v", False, None)


def test_values_have_the_types_the_workflow_needs() -> None:
    req = parse(job(width="640", cfg=2, frame_rate=16, shift="5", lora_strength=1))
    assert type(req.width) is int and req.width == 640
    assert all(type(v) is float for v in (req.cfg, req.frame_rate, req.shift, req.lora_strength))


def test_default_negative_prompt_is_the_one_in_the_workflow() -> None:
    negative = next(n for n in WORKFLOW.values() if n["_meta"]["title"] == "negative_prompt")
    assert DEFAULT_NEGATIVE_PROMPT == negative["inputs"]["text"]
    assert DEFAULT_NEGATIVE_PROMPT.startswith("色调艳丽，过曝") and DEFAULT_NEGATIVE_PROMPT.endswith("倒着走")


def test_sampler_and_scheduler_lists_are_comfyuis() -> None:
    assert list(SAMPLER_NAMES) == comfy_input("KSamplerAdvanced", "sampler_name")[0]
    assert list(SCHEDULERS) == comfy_input("KSamplerAdvanced", "scheduler")[0]


def test_resize_methods_are_imageresize_methods() -> None:
    assert set(RESIZE_METHODS) == {"crop", "pad", "stretch"}
    assert set(RESIZE_METHODS.values()) <= set(comfy_input("ImageResize+", "method")[0])
    assert parse(job(resize="pad")).resize == "pad"
    assert parse(job()).resize == "crop"


def test_fixed_bounds_are_comfyuis() -> None:
    wan = OBJECT_INFO["WanImageToVideo"]["input"]["required"]
    assert REGISTRY["i2v"].size_step == wan["width"][1]["min"] == wan["width"][1]["step"]
    assert request_module.LENGTH_STEP == wan["length"][1]["step"]
    assert request_module.CFG_MAX == comfy_input("KSamplerAdvanced", "cfg")[1]["max"]
    assert request_module.SEED_MAX == comfy_input("KSamplerAdvanced", "noise_seed")[1]["max"]
    assert request_module.SHIFT_MAX == comfy_input("ModelSamplingSD3", "shift")[1]["max"]
    lora = comfy_input("LoraLoaderModelOnly", "strength_model")[1]
    assert (-request_module.LORA_STRENGTH_MAX, request_module.LORA_STRENGTH_MAX) == (lora["min"], lora["max"])
    assert request_module.MIN_FRAME_RATE == comfy_input("VHS_VideoCombine", "frame_rate")[1]["min"]


# --- Integers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [832, 832.0, "832", " 832 "])
def test_integers_accept_int_integral_float_and_decimal_string(value: object) -> None:
    assert parse(job(width=value)).width == 832


@pytest.mark.parametrize(
    ("value", "shown"), [(True, "true"), (832.5, "832.5"), ("832.5", '"832.5"'), ("abc", '"abc"'), ([832], "an array of 1 items")]
)
def test_integers_refuse_bools_fractions_and_text(value: object, shown: str) -> None:
    assert error_of(job(width=value)) == (
        f"options.width: {shown} is not an integer (allowed: multiples of 16 from 16 to 1280)"
    )


@pytest.mark.parametrize("name", ["width", "height"])
def test_dimension_must_be_a_multiple_of_16(name: str) -> None:
    assert error_of(job(**{name: 70})) == f"options.{name}: 70 is not a multiple of 16 (allowed: multiples of 16 from 16 to 1280)"


@pytest.mark.parametrize(
    ("value", "problem"), [(0, "is less than 16"), (-16, "is less than 16"), (1296, "is greater than 1280")]
)
def test_dimension_bounds(value: int, problem: str) -> None:
    assert error_of(job(height=value)) == f"options.height: {value} {problem} (allowed: multiples of 16 from 16 to 1280)"


def test_dimension_bounds_come_from_limits_and_name_the_real_maximum() -> None:
    limits = Limits(max_width=1000, max_height=640)
    assert parse(job(width=992, height=640), limits).width == 992
    assert error_of(job(width=1008), limits) == (
        "options.width: 1008 is greater than 992 (allowed: multiples of 16 from 16 to 992)"
    )
    assert parse(job(width=16, height=16)).height == 16


@pytest.mark.parametrize("value", [1, 5, 81, 161])
def test_length_accepts_4n_plus_1(value: int) -> None:
    assert parse(job(length=value)).length == value


@pytest.mark.parametrize(("value", "problem"), [(80, "is not 4n+1"), (6, "is not 4n+1"), (165, "is greater than 161")])
def test_length_must_be_4n_plus_1_within_the_limit(value: int, problem: str) -> None:
    assert error_of(job(length=value)) == (
        f"options.length: {value} {problem} (allowed: 4n+1 from 1 to 161 (1, 5, 9, …, 161))"
    )


def test_length_maximum_follows_limits() -> None:
    assert "4n+1 from 1 to 97 (1, 5, 9, …, 97)" in error_of(job(length=101), Limits(max_length=100))


@pytest.mark.parametrize(("value", "problem"), [(0, "is less than 1"), (61, "is greater than 60")])
def test_steps_bounds(value: int, problem: str) -> None:
    assert error_of(job(steps=value)) == f"options.steps: {value} {problem} (allowed: integers from 1 to 60)"


def test_split_step_defaults_to_half_the_steps() -> None:
    assert parse(job(steps=6)).split_step == 3
    assert parse(job(steps=7)).split_step == 3
    assert parse(job(steps=1)).split_step == 0


@pytest.mark.parametrize("split", [0, 4, 8])
def test_split_step_may_be_anything_from_0_to_steps(split: int) -> None:
    assert parse(job(steps=8, split_step=split)).split_step == split


def test_split_step_above_steps_names_the_steps() -> None:
    assert error_of(job(steps=6, split_step=7)) == (
        "options.split_step: 7 is greater than steps (6) (allowed: integers from 0 to steps (6))"
    )
    assert error_of(job(split_step=-1)) == (
        "options.split_step: -1 is less than 0 (allowed: integers from 0 to steps (6))"
    )


def test_split_step_is_still_checked_when_steps_is_wrong() -> None:
    message = error_of(job(steps="x", split_step=99))
    assert message == (
        'options.steps: "x" is not an integer (allowed: integers from 1 to 60); '
        "options.split_step: 99 is greater than steps (at most 60) (allowed: integers from 0 to steps (at most 60))"
    )


def test_seed_bounds_and_whether_it_was_random() -> None:
    top = 18446744073709551615
    assert parse(job(seed=top)).seed == top
    given = parse(job(seed="42"))
    assert (given.seed, given.seed_randomized) == (42, False)
    assert parse(job(seed=0)).seed_randomized is False
    assert parse(job(seed=None)).seed_randomized is True
    allowed = "(allowed: integers from 0 to 18446744073709551615)"
    assert error_of(job(seed=top + 1)) == f"options.seed: 18446744073709551616 is greater than {top} {allowed}"
    assert error_of(job(seed=-1)) == f"options.seed: -1 is less than 0 {allowed}"


def test_random_seed_comes_from_secrets_over_the_whole_range(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    def randbelow(n: int) -> int:
        asked.append(n)
        return n - 1

    monkeypatch.setattr(request_module.secrets, "randbelow", randbelow)
    assert parse(job()).seed == 2**64 - 1
    assert asked == [2**64]


def test_random_seeds_differ() -> None:
    assert len({parse(job()).seed for _ in range(5)}) == 5


# --- Floats ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2, 2.0, "2", "2.0", " 2e0 "])
def test_floats_accept_numbers_and_numeric_strings(value: object) -> None:
    assert parse(job(cfg=value)).cfg == 2.0


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (True, "true is not a number"),
        ("high", '"high" is not a number'),
        (float("nan"), "NaN is not a finite number"),
        (float("inf"), "Infinity is not a finite number"),
        ("nan", '"nan" is not a number'),
        ("1e999", '"1e999" is not a finite number'),
        (10**400, "an integer of 401 digits is not a finite number"),
        (-0.5, "-0.5 is less than 0"),
        (100.5, "100.5 is greater than 100"),
    ],
)
def test_cfg_refusals(value: object, problem: str) -> None:
    assert error_of(job(cfg=value)) == f"options.cfg: {problem} (allowed: numbers from 0 to 100)"


def test_cfg_bounds_are_inclusive() -> None:
    assert parse(job(cfg=0)).cfg == 0.0
    assert parse(job(cfg=100)).cfg == 100.0


@pytest.mark.parametrize(("value", "problem"), [(0.5, "0.5 is less than 1"), (61, "61 is greater than 60")])
def test_frame_rate_bounds(value: float, problem: str) -> None:
    assert error_of(job(frame_rate=value)) == f"options.frame_rate: {problem} (allowed: numbers from 1 to 60)"


def test_frame_rate_maximum_follows_limits() -> None:
    assert parse(job(frame_rate=120), Limits(max_frame_rate=120.0)).frame_rate == 120.0
    assert "numbers from 1 to 30" in error_of(job(frame_rate=31), Limits(max_frame_rate=30.0))


def test_shift_and_lora_strength_bounds() -> None:
    assert error_of(job(shift=-1)) == "options.shift: -1 is less than 0 (allowed: numbers from 0 to 100)"
    assert error_of(job(lora_strength=100.01)) == (
        "options.lora_strength: 100.01 is greater than 100 (allowed: numbers from -100 to 100)"
    )
    assert parse(job(lora_strength=-100, shift=100)).lora_strength == -100.0


# --- Choices ------------------------------------------------------------------------------------------


def test_sampler_and_scheduler_choices() -> None:
    req = parse(job(sampler_name="uni_pc", scheduler="beta"))
    assert (req.sampler_name, req.scheduler) == ("uni_pc", "beta")
    message = error_of(job(sampler_name="Euler"))
    assert message.startswith('options.sampler_name: "Euler" is not one of the allowed values (allowed: euler, euler_cfg_pp, ')
    assert message.endswith("uni_pc, uni_pc_bh2)")
    assert error_of(job(scheduler=3)) == (
        "options.scheduler: 3 is not a string (allowed: simple, sgm_uniform, karras, exponential, "
        "ddim_uniform, beta, normal, linear_quadratic, kl_optimal)"
    )


def test_resize_choice() -> None:
    assert parse(job(resize="stretch")).resize == "stretch"
    assert error_of(job(resize="fit")) == 'options.resize: "fit" is not one of the allowed values (allowed: crop, pad, stretch)'


# --- Aliases, unknown names, structure ------------------------------------------------------------------


def test_aliases_set_their_canonical_option() -> None:
    req = parse(job(num_frames=49, fps=16, guidance_scale=3.5))
    assert (req.length, req.frame_rate, req.cfg) == (49, 16.0, 3.5)
    assert parse(job(cfg_scale=2)).cfg == 2.0


def test_alias_errors_name_the_key_the_client_used() -> None:
    assert error_of(job(num_frames=80)).startswith("options.num_frames: 80 is not 4n+1 (allowed: 4n+1 from 1 to 161")
    assert error_of(job(fps=0)) == "options.fps: 0 is less than 1 (allowed: numbers from 1 to 60)"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"length": 81, "num_frames": 81}, "options.num_frames: given together with options.length (allowed: only one of length, num_frames)"),
        ({"frame_rate": 24, "fps": 24}, "options.fps: given together with options.frame_rate (allowed: only one of frame_rate, fps)"),
        ({"guidance_scale": 1, "cfg_scale": 1}, "options.cfg_scale: given together with options.guidance_scale (allowed: only one of cfg, guidance_scale, cfg_scale)"),
    ],
)
def test_alias_and_canonical_together_is_an_error(options: dict[str, Any], message: str) -> None:
    assert error_of(job(**options)) == message


def test_unknown_option_lists_the_allowed_names() -> None:
    assert error_of(job(widht=832)) == (
        "options.widht: unknown option (allowed: width, height, length, num_frames, steps, split_step, cfg, "
        "guidance_scale, cfg_scale, frame_rate, fps, seed, shift, sampler_name, scheduler, lora_strength, resize, resolution, aspect_ratio, duration, interpolate, interpolation_model, output_frame_rate, video_format, crf, fit, cache)"
    )


def test_unknown_top_level_field_lists_the_allowed_names() -> None:
    assert error_of({"prompt": "x", "image": IMAGE, "width": 832}) == (
        "width: unknown field (allowed: prompt, image, image_url, negative_prompt, options, output_mode, task, end_image, end_image_url, return_last_frame, loras, workflow, speed, keep_audio, audio, audio_url, audio_start, audio_end, video, video_url, video_start, video_end, pose_video, pose_video_url, pose_video_start, pose_video_end, face_video, face_video_url, face_video_start, face_video_end, mask_video, mask_video_url, mask_video_start, mask_video_end)"
    )


@pytest.mark.parametrize(("value", "shown"), [("hello", '"hello"'), ([1, 2], "an array of 2 items"), (None, "null"), (7, "7")])
def test_input_must_be_an_object(value: object, shown: str) -> None:
    assert error_of(value) == (
        f"input: {shown} is not an object (allowed: an object with the fields prompt, image, image_url, negative_prompt, options, output_mode, task, end_image, end_image_url, return_last_frame, loras, workflow, speed, keep_audio, audio, audio_url, audio_start, audio_end, video, video_url, video_start, video_end, pose_video, pose_video_url, pose_video_start, pose_video_end, face_video, face_video_url, face_video_start, face_video_end, mask_video, mask_video_url, mask_video_start, mask_video_end)"
    )


def test_options_must_be_an_object_and_null_means_defaults() -> None:
    assert error_of({"prompt": "x", "image": IMAGE, "options": [1]}).startswith(
        "options: an array of 1 items is not an object (allowed: an object with width, height, length, steps"
    )
    assert parse({"prompt": "x", "image": IMAGE, "options": None}).width == 832


def test_every_problem_is_reported_in_one_message() -> None:
    message = error_of({"image": 5, "options": {"width": 70, "steps": 0, "resize": "fit", "x": 1}})
    assert message.split("; ") == [
        "prompt: missing (allowed: a non-empty string of at most 5000 characters)",
        "image: 5 is not a string (allowed: a base64 string or a data:image/<type>;base64, URI)",
        "options.x: unknown option (allowed: width, height, length, num_frames, steps, split_step, cfg, "
        "guidance_scale, cfg_scale, frame_rate, fps, seed, shift, sampler_name, scheduler, lora_strength, resize, resolution, aspect_ratio, duration, interpolate, interpolation_model, output_frame_rate, video_format, crf, fit, cache)",
        "options.width: 70 is not a multiple of 16 (allowed: multiples of 16 from 16 to 1280)",
        "options.steps: 0 is less than 1 (allowed: integers from 1 to 60)",
        'options.resize: "fit" is not one of the allowed values (allowed: crop, pad, stretch)',
    ]


# --- Prompts -------------------------------------------------------------------------------------------


def test_prompt_is_stripped() -> None:
    assert parse({"prompt": "  a dog runs \n", "image": IMAGE}).prompt == "a dog runs"


@pytest.mark.parametrize(
    ("value", "what"), [(None, "missing"), ("   ", '"   " is empty'), (12, "12 is not a string"), ({"t": 1}, "an object is not a string")]
)
def test_prompt_refusals(value: object, what: str) -> None:
    assert error_of({"prompt": value, "image": IMAGE}) == f"prompt: {what} (allowed: a non-empty string of at most 5000 characters)"


def test_prompt_length_limit_and_the_value_is_truncated_in_the_message() -> None:
    assert parse({"prompt": "x" * 5000, "image": IMAGE}).prompt == "x" * 5000
    message = error_of({"prompt": "y" * 5001, "image": IMAGE})
    assert message == (
        'prompt: "' + "y" * 40 + '…" (5001 characters) is too long (allowed: a non-empty string of at most 5000 characters)'
    )
    assert "at most 10 characters" in error_of({"prompt": "y" * 11, "image": IMAGE}, Limits(max_prompt_chars=10))


def test_negative_prompt_may_be_empty_and_null_means_the_default() -> None:
    assert parse({"prompt": "x", "image": IMAGE, "negative_prompt": ""}).negative_prompt == ""
    assert parse({"prompt": "x", "image": IMAGE, "negative_prompt": " blur "}).negative_prompt == " blur "
    assert parse({"prompt": "x", "image": IMAGE, "negative_prompt": None}).negative_prompt == DEFAULT_NEGATIVE_PROMPT


def test_negative_prompt_refusals() -> None:
    allowed = "(allowed: a string of at most 5000 characters, may be empty)"
    assert error_of({"prompt": "x", "image": IMAGE, "negative_prompt": ["a"]}) == (
        f"negative_prompt: an array of 1 items is not a string {allowed}"
    )
    assert error_of({"prompt": "x", "image": IMAGE, "negative_prompt": "n" * 5001}).startswith(
        'negative_prompt: "nnnn'
    )


# --- Image source -------------------------------------------------------------------------------------

IMAGE_ALLOWED = (
    "(allowed: exactly one of image (base64 or a data:image/<type>;base64, URI) "
    "or image_url (an http:// or https:// URL))"
)


def test_image_url_is_accepted_instead_of_image() -> None:
    req = parse({"prompt": "x", "image_url": " https://cdn.example.com/cat.png?sig=1 "})
    assert (req.input("image").url, req.input("image").b64) == ("https://cdn.example.com/cat.png?sig=1", None)


def test_exactly_one_image_source() -> None:
    t2v_hint = IMAGE_ALLOWED[:-1] + '; or task "t2v" or "ti2v-5b" for a video from the prompt alone)'
    assert error_of({"prompt": "x"}) == f"image: missing (and no image_url) {t2v_hint}"
    assert error_of({"prompt": "x", "image": None, "image_url": None}) == f"image: missing (and no image_url) {t2v_hint}"
    assert error_of({"prompt": "x", "image": IMAGE, "image_url": "https://a.example/b.png"}) == (
        f"image, image_url: both given {IMAGE_ALLOWED}"
    )


def test_image_refusals_never_echo_the_data() -> None:
    allowed = "(allowed: a base64 string or a data:image/<type>;base64, URI)"
    assert error_of({"prompt": "x", "image": ""}) == f"image: an empty string {allowed}"
    assert error_of({"prompt": "x", "image": " \n"}) == f"image: a string of 2 whitespace characters {allowed}"
    assert error_of({"prompt": "x", "image": {"b64": "AAAA"}}) == f"image: an object is not a string {allowed}"


@pytest.mark.parametrize(
    ("url", "what"),
    [
        ("ftp://example.com/a.png", '"ftp://example.com/a.png" is not an http or https URL'),
        ("file:///etc/passwd", '"file:///etc/passwd" is not an http or https URL'),
        ("example.com/a.png", '"example.com/a.png" is not an http or https URL'),
        ("https:///a.png", '"https:///a.png" has no host name'),
        ("http://example.com:99999/a.png", '"http://example.com:99999/a.png" is not a valid URL'),
    ],
)
def test_image_url_form(url: str, what: str) -> None:
    assert error_of({"prompt": "x", "image_url": url}) == f"image_url: {what} (allowed: an http:// or https:// URL)"


def test_image_url_messages_hide_query_and_credentials() -> None:
    message = error_of({"prompt": "x", "image_url": "gopher://user:hunter2@host/a.png?X-Amz-Signature=SECRET"})
    assert message == 'image_url: "gopher://…@host/a.png?…" is not an http or https URL (allowed: an http:// or https:// URL)'
    assert error_of({"prompt": "x", "image_url": 42}) == "image_url: 42 is not a string (allowed: an http:// or https:// URL)"


# --- The request object -----------------------------------------------------------------------------------


def test_request_is_frozen_and_its_repr_and_log_view_hold_no_image() -> None:
    req = parse({"prompt": "x", "image": "QUJD" * 1000})
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.width = 64  # type: ignore[misc]
    assert "QUJD" not in repr(req)
    described = req.describe()
    assert described["image"] == "base64, 4000 characters" and "QUJD" not in str(described)
    assert described["width"] == 832 and described["seed_randomized"] is True
    by_url = parse({"prompt": "x", "image_url": "https://h.example/a.png?token=SECRET"})
    assert "SECRET" not in repr(by_url) and by_url.describe()["image"] == "url https://h.example/a.png?…"


# --- Output mode ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["base64", "s3", "auto"])
def test_output_mode_is_one_of_the_modes_and_defaults_to_the_worker_setting(mode: str) -> None:
    assert parse({"prompt": "x", "image": IMAGE, "output_mode": mode}).output_mode == mode
    assert parse({"prompt": "x", "image": IMAGE}).output_mode is None
    assert parse({"prompt": "x", "image": IMAGE, "output_mode": None}).output_mode is None


@pytest.mark.parametrize(
    ("value", "what"),
    [("S3", '"S3" is not one of the allowed values'), ("", '"" is not one of the allowed values'), (1, "1 is not a string")],
)
def test_output_mode_refuses_other_values(value: object, what: str) -> None:
    assert error_of({"prompt": "x", "image": IMAGE, "output_mode": value}) == f"output_mode: {what} (allowed: base64, s3, auto)"


def test_output_mode_s3_is_refused_where_s3_is_not_configured_with_the_other_problems() -> None:
    job_input = {"prompt": "", "image": IMAGE, "output_mode": "s3"}
    unavailable = {"s3": "S3 output is not configured (the operator sets BUCKET_NAME)"}
    with pytest.raises(InvalidInput) as caught:
        parse_request(job_input, Settings(), unavailable_modes=unavailable)
    assert str(caught.value) == (
        'prompt: "" is empty (allowed: a non-empty string of at most 5000 characters); '
        'output_mode: "s3" is not available on this worker: S3 output is not configured '
        "(the operator sets BUCKET_NAME) (allowed: base64, auto)"
    )
    fixed = {**job_input, "prompt": "x", "output_mode": "auto"}
    assert parse_request(fixed, Settings(), unavailable_modes=unavailable).output_mode == "auto"
    assert parse_request({**job_input, "prompt": "x"}, Settings()).output_mode == "s3"  # S3 available


# --- Tasks ---------------------------------------------------------------------------------------------------


def test_the_task_follows_the_images_when_not_given() -> None:
    assert parse({"prompt": "x", "image": IMAGE}).task == "i2v"
    assert parse({"prompt": "x", "end_image": IMAGE}).task == "flf2v"
    assert parse({"prompt": "x", "image": IMAGE, "end_image_url": "https://a.example/b.png"}).task == "flf2v"
    assert parse({"prompt": "x", "task": "t2v"}).task == "t2v"
    both = parse({"prompt": "x", "image": IMAGE, "end_image": IMAGE})
    assert [image.field for image in both.inputs] == ["image", "end_image"]


def test_a_task_is_one_of_the_served_ones() -> None:
    served = Settings(tasks=("i2v", "t2v"))
    assert error_of_with({"prompt": "x", "task": "i2V"}, served) == 'task: "i2V" is not a task (allowed: i2v, t2v)'
    assert error_of_with({"prompt": "x", "task": 2}, served) == "task: 2 is not a string (allowed: i2v, t2v)"
    assert error_of_with({"prompt": "x", "task": "ti2v-5b"}, served) == (
        'task: "ti2v-5b" is not served by this worker (TASKS) (allowed: i2v, t2v)'
    )
    assert error_of_with({"prompt": "x", "end_image": IMAGE}, served) == (
        'task: "flf2v" (chosen because end_image was given) is not served by this worker (allowed: i2v, t2v)'
    )


def error_of_with(job_input: object, settings: Settings) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_request(job_input, settings)
    return str(caught.value)


def test_images_a_task_does_not_take_are_refused_by_name() -> None:
    assert error_of({"prompt": "x", "task": "t2v", "image": IMAGE}) == (
        "image: not used by task t2v (allowed: only with task i2v, flf2v, ti2v-5b, s2v, control, animate)"
    )
    assert error_of({"prompt": "x", "image": IMAGE, "task": "i2v", "end_image_url": "https://a.example/e.png"}) == (
        "end_image_url: not used by task i2v (allowed: only with task flf2v)"
    )
    assert error_of({"prompt": "x", "task": "flf2v", "image": IMAGE}) == (
        "end_image: missing (and no end_image_url) (allowed: exactly one of end_image (base64 or a "
        "data:image/<type>;base64, URI) or end_image_url (an http:// or https:// URL))"
    )
    assert error_of({"prompt": "x", "end_image": IMAGE, "end_image_url": "https://a.example/e.png"}).startswith(
        "end_image, end_image_url: both given (allowed: exactly one of end_image"
    )


def test_the_5b_task_has_its_own_defaults_and_a_32_pixel_step() -> None:
    req = parse({"prompt": "x", "task": "ti2v-5b"})
    assert (req.width, req.height, req.length, req.frame_rate, req.steps, req.cfg) == (1280, 704, 121, 24.0, 20, 5.0)
    assert (req.sampler_name, req.scheduler, req.shift, req.split_step, req.lora_strength) == ("uni_pc", "simple", 8.0, None, None)
    assert req.inputs == ()
    assert error_of({"prompt": "x", "task": "ti2v-5b", "options": {"width": 848}}) == (
        "options.width: 848 is not a multiple of 32 (allowed: multiples of 32 from 32 to 1280)"
    )
    assert error_of({"prompt": "x", "task": "ti2v-5b", "options": {"split_step": 3, "lora_strength": 1}}).startswith(
        "options.split_step: not used by task ti2v-5b (allowed: width, height, length, num_frames, steps, cfg"
    )


def test_options_a_task_does_not_take_are_refused_but_null_is_ignored() -> None:
    assert error_of({"prompt": "x", "task": "t2v", "options": {"resize": "pad"}}).startswith(
        "options.resize: not used by task t2v (allowed: width, height"
    )
    assert parse({"prompt": "x", "task": "t2v", "options": {"resize": None}}).resize is None


def test_default_frame_rate_is_the_workers_for_the_14b_tasks_only() -> None:
    settings = Settings(default_frame_rate=16.0)
    assert parse_request({"prompt": "x", "task": "t2v"}, settings).frame_rate == 16.0
    assert parse_request({"prompt": "x", "image": IMAGE}, settings).frame_rate == 16.0
    assert parse_request({"prompt": "x", "task": "ti2v-5b"}, settings).frame_rate == 24.0


def test_return_last_frame_is_a_boolean() -> None:
    assert parse({**job(), "return_last_frame": True}).return_last_frame is True
    assert parse({**job(), "return_last_frame": None}).return_last_frame is False
    assert error_of({**job(), "return_last_frame": "yes"}) == 'return_last_frame: "yes" is not a boolean (allowed: true or false)'


# --- Sizes and length by preset ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "resolution", "aspect", "size"),
    [
        ("t2v", "480p", "16:9", (832, 480)),
        ("t2v", "480p", "9:16", (480, 832)),
        ("t2v", "576p", "4:3", (768, 576)),
        ("t2v", "720p", "1:1", (720, 720)),
        ("t2v", "720p", "3:4", (720, 960)),
        ("ti2v-5b", "720p", "16:9", (1280, 704)),
        ("ti2v-5b", "720p", "9:16", (704, 1280)),
        ("ti2v-5b", "480p", "1:1", (480, 480)),
    ],
)
def test_resolution_and_aspect_ratio_give_the_documented_size(task: str, resolution: str, aspect: str, size: tuple) -> None:
    req = parse({"prompt": "x", "task": task, "options": {"resolution": resolution, "aspect_ratio": aspect}})
    assert (req.width, req.height) == size and req.fit_resolution is None


def test_resolution_without_aspect_follows_the_image_or_is_16_9() -> None:
    assert parse({"prompt": "x", "image": IMAGE, "options": {"resolution": "480p"}}).fit_resolution == "480p"
    req = parse({"prompt": "x", "task": "t2v", "options": {"resolution": "720p"}})
    assert (req.width, req.height, req.fit_resolution) == (1280, 720, None)
    assert error_of({"prompt": "x", "task": "t2v", "options": {"resolution": "720p", "aspect_ratio": "auto"}}) == (
        'options.aspect_ratio: "auto" needs an image or a video to take the aspect from (allowed: 16:9, 9:16, 1:1, 4:3, 3:4)'
    )


@pytest.mark.parametrize(
    ("image", "resolution", "size"),
    [((1920, 1080), "480p", (848, 480)), ((1080, 1920), "720p", (720, 1280)), ((1000, 1000), "576p", (576, 576)),
     ((4000, 1000), "720p", (1280, 320)), ((640, 480), "480p", (640, 480))],
)  # fmt: skip
def test_auto_aspect_keeps_the_images_shape_within_the_maxima(image: tuple, resolution: str, size: tuple) -> None:
    req = parse({"prompt": "x", "image": IMAGE, "options": {"resolution": resolution}})
    fitted = request_module.fit_to_image(req, *image, LIMITS)
    assert (fitted.width, fitted.height) == size and fitted.fit_resolution is None


def test_presets_and_explicit_sizes_do_not_mix() -> None:
    assert error_of(job(resolution="480p", width=832)) == (
        "options.width: given together with options.resolution "
        "(allowed: either resolution (with aspect_ratio) or width and height)"
    )
    assert error_of(job(aspect_ratio="1:1")) == (
        "options.aspect_ratio: given without options.resolution (allowed: together with options.resolution)"
    )
    assert error_of(job(resolution="1080p")) == (
        'options.resolution: "1080p" is not one of the allowed values (allowed: 480p, 576p, 720p)'
    )
    assert error_of(job(resolution="720p", aspect_ratio="16:9"), Limits(max_width=1024)) == (
        'options.resolution: "720p" at 16:9 is 1280x720, larger than this worker allows (1024x1280) (allowed: 480p, 576p)'
    )


@pytest.mark.parametrize(("duration", "fps", "length"), [(5, 16, 81), (5, 24, 121), (3.4, 16, 57), (0.1, 24, 5), (0.04, 24, 1), (6.6, 24, 161)])
def test_duration_is_the_nearest_4n_plus_1_frame_count(duration: float, fps: float, length: int) -> None:
    assert parse(job(duration=duration, frame_rate=fps)).length == length


def test_duration_limits_and_conflicts() -> None:
    assert error_of(job(duration=10, fps=24)) == (
        "options.duration: 10 is greater than 6.667 s (allowed: numbers from 0 to 6.667 s)"
    )
    assert error_of(job(duration=-1)) == "options.duration: -1 is less than 0 (allowed: numbers from 0 to 6.667 s)"
    assert error_of(job(duration=2, num_frames=33)) == (
        "options.num_frames: given together with options.duration (allowed: only one of length or duration)"
    )
    assert error_of(job(duration="long")) == 'options.duration: "long" is not a number (allowed: numbers from 0 to 6.667 s)'


# --- Speed presets --------------------------------------------------------------------------------


def test_speed_4step_brings_its_defaults_and_the_job_may_still_change_them() -> None:
    assert parse(job()).speed == "default"
    fast = parse({**job(), "speed": "4step"})
    assert (fast.speed, fast.steps, fast.split_step, fast.shift, fast.cfg) == ("4step", 4, 2, 5.0, 1.0)
    assert (fast.sampler_name, fast.scheduler, fast.lora_strength) == ("euler", "simple", 1.0)
    tuned = parse({**job(steps=8, shift=6), "speed": "4step"})
    assert (tuned.steps, tuned.split_step, tuned.shift) == (8, 4, 6.0)
    t2v = parse({"prompt": "x", "task": "t2v", "speed": "4step"})
    assert (t2v.speed, t2v.steps, t2v.shift) == ("4step", 4, 5.0)
    assert parse({**job(), "speed": "default"}).steps == 6


def test_a_speed_the_task_does_not_offer_names_the_field_the_value_and_the_choices() -> None:
    assert error_of({**job(), "speed": "turbo"}) == 'speed: "turbo" is not a speed of task i2v (allowed: "default", "4step")'
    assert error_of({**job(), "speed": 4}) == 'speed: 4 is not a string (allowed: "default", "4step")'
    assert error_of({"prompt": "x", "task": "ti2v-5b", "speed": "4step"}) == (
        'speed: "4step" is not a speed of task ti2v-5b ("4step" is offered by the tasks i2v, flf2v, t2v, s2v, control) (allowed: "default")'
    )
    custom = {"prompt": "x", "workflow": {"1": {"class_type": "SaveImage", "inputs": {}}}, "speed": "4step"}
    assert "speed: not used with your own workflow (allowed: prompt, negative_prompt, image" in error_of(custom)
