"""comfy_bootstrap/child.py's pure parts: the environment ComfyUI is given."""

from __future__ import annotations

import pytest

from comfy_bootstrap.child import MAX_LINE_CHARS, child_environment, explaining_lines

WORKER_ENV = {
    "PATH": "/opt/venv/bin:/usr/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "TMPDIR": "/tmp",
    "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
    "PYTHONPATH": "/app",
    "CUDA_VISIBLE_DEVICES": "0",
    "CUDA_HOME": "/usr/local/cuda",
    "NVIDIA_VISIBLE_DEVICES": "all",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,video",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    "TORCH_CUDA_ARCH_LIST": "8.9;9.0;12.0",
    "TORCHINDUCTOR_CACHE_DIR": "/tmp/inductor",
    "TRITON_CACHE_DIR": "/tmp/triton",
    "XFORMERS_FORCE_DISABLE_TRITON": "1",
    "OMP_NUM_THREADS": "8",
    "MKL_NUM_THREADS": "8",
    "HF_HOME": "/runpod-volume/hf",
    "VHS_FORCE_FFMPEG_PATH": "/usr/bin/ffmpeg",
    # The worker's own settings and secrets, and the platform's.
    "COMFY_PORT": "8188",
    "WORKER_DIR": "/tmp/wan22-worker",
    "HF_TOKEN": "hf_x",
    "CIVITAI_TOKEN": "c",
    "BUCKET_ENDPOINT_URL": "https://s3.example.com",
    "BUCKET_ACCESS_KEY_ID": "AKIA",
    "BUCKET_SECRET_ACCESS_KEY": "s",
    "RUNPOD_AI_API_KEY": "k",
    "RUNPOD_WEBHOOK_GET_JOB": "https://api.runpod.ai/v2/x/job-take/y?token=z",
    "RUNPOD_POD_ID": "pod",
    "AWS_ACCESS_KEY_ID": "AKIA2",
    "HTTPS_PROXY": "http://user:pass@proxy:3128",
    "SSH_AUTH_SOCK": "/tmp/ssh",
    "PUBLIC_KEY": "ssh-ed25519 AAAA",
    "JUPYTER_PASSWORD": "p",
}


def test_only_what_comfyui_needs_is_kept_and_two_settings_are_forced() -> None:
    env = child_environment(WORKER_ENV)
    kept = {name for name in WORKER_ENV if name in env}
    assert kept == {
        "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "PYTHONPATH", "CUDA_VISIBLE_DEVICES",
        "CUDA_HOME", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "PYTORCH_CUDA_ALLOC_CONF",
        "TORCH_CUDA_ARCH_LIST", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "XFORMERS_FORCE_DISABLE_TRITON",
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "HF_HOME", "VHS_FORCE_FFMPEG_PATH",
    }  # fmt: skip
    assert all(env[name] == WORKER_ENV[name] for name in kept)
    assert env["VHS_STRICT_PATHS"] == "1" and env["HF_HUB_OFFLINE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert set(env) == kept | {"VHS_STRICT_PATHS", "HF_HUB_OFFLINE", "PYTHONUNBUFFERED"}


@pytest.mark.parametrize(
    "name", ["TORCH_HUB_TOKEN", "CUDA_API_KEY", "NVIDIA_NGC_SECRET", "TRITON_PASSWORD", "LC_PASSWD", "OMP_CREDENTIALS",
             "HF_HUB_TOKEN", "VHS_AUTH_TOKEN", "PYTHON_KEYRING_BACKEND"],
)  # fmt: skip
def test_a_secret_looking_name_is_dropped_even_under_an_allowed_prefix(name: str) -> None:
    assert name not in child_environment({name: "secret"})


def test_forced_values_win_over_the_workers_own() -> None:
    env = child_environment({"VHS_STRICT_PATHS": "0", "HF_HUB_OFFLINE": "0", "PYTHONUNBUFFERED": ""})
    assert env == {"VHS_STRICT_PATHS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


# --- What a crash answer quotes of ComfyUI's log -------------------------------------------------------------

BLOB = "iVBORw0KGgo" + "A" * 400
TAIL = [
    "\x1b[32m[INFO]\x1b[0m got prompt",
    "[INFO] job A's prompt: a secret garden at dawn, by the client's own words",
    f"[INFO] loading image {BLOB}",
    "\x1b[1m\x1b[33m[WARNING]\x1b[0m fetching https://cdn.example.com/lora.safetensors?X-Amz-Signature=abc123&token=SECRET",
    "[INFO] model_type FLOW",
    "Traceback (most recent call last):",
    '  File "/comfyui/execution.py", line 510, in execute',
    "    output_data = get_output_data(obj, input_data_all)",
    '  File "/comfyui/comfy/sd.py", line 90, in decode',
    "    pixel_samples = self.first_stage_model.decode(samples)",
    "torch.AcceleratorError: CUDA error: an illegal memory access was encountered " + "in block 7, " * 50,
    "[INFO] job B's prompt: the other client's private words",
    "\x1b[1m\x1b[31m[ERROR]\x1b[0m comfy_double: crash fault: exiting with status 1 for http://u:pw@h.example/x?q=1",
]


def test_only_the_lines_that_explain_an_exit_are_kept_bounded_and_redacted() -> None:
    kept = explaining_lines(TAIL, 15)
    assert kept == [
        "[WARNING] fetching https://cdn.example.com/lora.safetensors?…",
        "Traceback (most recent call last):",
        '  File "/comfyui/execution.py", line 510, in execute',
        "    output_data = get_output_data(obj, input_data_all)",
        '  File "/comfyui/comfy/sd.py", line 90, in decode',
        "    pixel_samples = self.first_stage_model.decode(samples)",
        TAIL[10][: MAX_LINE_CHARS - 1] + "…",
        "[ERROR] comfy_double: crash fault: exiting with status 1 for http://…@h.example/x?…",
    ]
    assert all(len(line) <= MAX_LINE_CHARS for line in kept)


def test_the_last_line_is_kept_whatever_it_is_and_the_count_is_bounded() -> None:
    assert explaining_lines(["[INFO] Starting server", "fake ComfyUI starting"], 15) == ["fake ComfyUI starting"]
    assert explaining_lines([f"[ERROR] failure {n}" for n in range(50)], 5) == [f"[ERROR] failure {n}" for n in range(45, 50)]
    assert explaining_lines([f"[INFO] {BLOB}"], 5) == ["[INFO] <411 chars of base64>"]
