"""Running and following a prompt against the ComfyUI double: success, errors, cancel, timeout, drops."""

from __future__ import annotations

import base64
import threading
import time

import av
import pytest

from comfy_bootstrap import messages as m
from comfy_bootstrap.client import ComfyClient
from comfy_bootstrap.errors import ComfyUnavailable, ExecutionFailed, ExecutionInterrupted, ExecutionTimeout, PromptRejected
from comfy_bootstrap.execution import RunOptions, run_prompt
from tests.harness import filled_graph
from worker.graph import job_files
from worker.outputs import find_videos, read_video
from worker.settings import Settings

PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


def _prompt(client: ComfyClient, *, env: dict[str, str] | None = None, **options):
    """A filled graph whose input image is uploaded, as the pipeline builds it."""
    options = {"width": 64, "height": 64, "length": 5, "seed": 1, **options}
    files = job_files("t")
    client.upload_file(files.input_name("image", ".png"), base64.b64decode(PNG_1PX))
    job = {"prompt": "a red square", "image": PNG_1PX, "options": options}
    return filled_graph(job, Settings.from_env(env or {}), files)


@pytest.fixture
def client(comfy_double):
    c = ComfyClient(comfy_double.url, timeout=5)
    yield c
    c.close()


def test_successful_run_returns_history_and_a_real_mp4(client, comfy_double) -> None:
    filled = _prompt(client)
    seen: list[m.Message] = []
    result = run_prompt(client, filled.prompt, RunOptions(timeout=30, on_message=seen.append))
    assert result.history["status"]["status_str"] == "success"
    assert result.execution_seconds > 0
    [video] = find_videos(result.outputs, filled.roles["video_output"])
    data = read_video(client, video)
    path = comfy_double.output_dir / video.filename
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert (stream.codec_context.width, stream.codec_context.height, frames) == (64, 64, 5)
    assert data == path.read_bytes()
    assert any(isinstance(msg, m.Progress) for msg in seen)
    assert isinstance(seen[-1], m.Executing) and seen[-1].node is None


def test_prompt_id_is_a_lowercase_uuid_sent_with_our_client_id(client, comfy_double) -> None:
    result = run_prompt(client, _prompt(client).prompt, RunOptions(timeout=30))
    assert result.prompt_id == result.prompt_id.lower() and len(result.prompt_id) == 36
    sent = comfy_double.state()["prompts"][-1]["body"]
    assert sent["prompt_id"] == result.prompt_id and sent["client_id"]


def test_rejected_prompt_names_node_role_and_input(client, comfy_double) -> None:
    filled = _prompt(client, env={"MODEL_VAE": "nope.safetensors"})
    with pytest.raises(PromptRejected) as err:
        run_prompt(client, filled.prompt, RunOptions(timeout=30))
    text = str(err.value)
    assert "vae (VAELoader)" in text and "vae_name" in text and "nope.safetensors" in text


def test_runtime_error_names_node_and_exception(client, comfy_double) -> None:
    comfy_double.add_faults({"mode": "runtime_error"})
    with pytest.raises(ExecutionFailed, match=r"node \d+ \(KSamplerAdvanced\) raised torch.OutOfMemoryError: CUDA out of memory"):
        run_prompt(client, _prompt(client).prompt, RunOptions(timeout=30))
    # The worker's next prompt runs normally.
    assert run_prompt(client, _prompt(client, seed=2).prompt, RunOptions(timeout=30)).history


def test_cancel_interrupts_and_dequeues_our_prompt(client, comfy_double) -> None:
    comfy_double.add_faults({"mode": "step_delay", "seconds": 0.5})
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    with pytest.raises(ExecutionInterrupted, match="cancelled"):
        run_prompt(client, _prompt(client).prompt, RunOptions(timeout=60, stop=stop, poll=0.1))
    assert time.monotonic() - started < 5
    state = comfy_double.state()
    assert state["interrupts"] and any(r["body"].get("delete") for r in state["queue_requests"])
    comfy_double.wait_idle()
    assert run_prompt(client, _prompt(client, seed=3).prompt, RunOptions(timeout=30)).history


def test_timeout_interrupts_and_reports_a_responsive_comfyui(client, comfy_double) -> None:
    comfy_double.add_faults({"mode": "step_delay", "seconds": 1.0})
    with pytest.raises(ExecutionTimeout, match="job timeout of 1 s") as err:
        run_prompt(client, _prompt(client).prompt, RunOptions(timeout=1, poll=0.1))
    assert err.value.unresponsive is False


def test_timeout_on_a_hung_comfyui_is_flagged_unresponsive(client, comfy_double, monkeypatch) -> None:
    monkeypatch.setattr("comfy_bootstrap.execution.INTERRUPT_GRACE", 1.0)
    comfy_double.add_faults({"mode": "hang"})
    with pytest.raises(ExecutionTimeout) as err:
        run_prompt(client, _prompt(client).prompt, RunOptions(timeout=1, poll=0.1))
    assert err.value.unresponsive is True


def test_websocket_drop_mid_run_reconnects_and_completes(client, comfy_double) -> None:
    comfy_double.add_faults({"mode": "ws_drop"})
    filled = _prompt(client)
    result = run_prompt(client, filled.prompt, RunOptions(timeout=30, poll=0.1))
    assert result.reconnects >= 1
    assert find_videos(result.outputs, filled.roles["video_output"])


def test_comfyui_gone_mid_run_is_unavailable_not_a_hang(client, comfy_double) -> None:
    comfy_double.add_faults({"mode": "crash"})
    started = time.monotonic()
    with pytest.raises(ComfyUnavailable, match="stopped answering"):
        run_prompt(client, _prompt(client).prompt, RunOptions(timeout=60, poll=0.1))
    assert time.monotonic() - started < 10


def test_nothing_listening_is_comfy_unavailable() -> None:
    client = ComfyClient("http://127.0.0.1:9", timeout=1)
    assert client.is_answering() is False
    with pytest.raises(ComfyUnavailable, match="connection refused"):
        client.list_models("vae")
    with pytest.raises(ComfyUnavailable, match="websocket"):
        run_prompt(client, {}, RunOptions(timeout=1))


def test_list_models_sees_files_as_comfyui_does(client, comfy_volume) -> None:
    assert Settings().model_names["MODEL_LORA"] in client.list_models("loras")
    (comfy_volume / "models" / "vae" / "added.safetensors").write_bytes(b"")
    assert "added.safetensors" in client.list_models("vae")
    with pytest.raises(ComfyUnavailable, match="HTTP 404"):
        client.list_models("unet")
