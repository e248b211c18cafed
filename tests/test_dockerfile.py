"""The Dockerfile, .dockerignore and docker-compose.yml, checked against comfy_bootstrap/pins.env.

Nothing here builds an image (no Docker engine in CI): the files are parsed and held to the rules
of docs/deployment.md — same versions as pins.env, a coherent torch set, linux/amd64 only, heavy
layers before the code, no model weights in the image.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PINS_FILE = ROOT / "comfy_bootstrap" / "pins.env"
DOCKERFILE = ROOT / "Dockerfile"

#: Build arguments that are options rather than pins, with their required defaults.
OPTIONS = {"INSTALL_SAGEATTENTION": "0", "WORKER_VERSION": "dev", "BAKE_TASKS": "i2v", "BAKED_VOLUME": "/opt/wan22-volume"}
#: The stage of the default image (no model files); `baked` adds them.
WORKER_STAGE = "worker"

#: xformers release -> the torch its wheels declare (Requires-Dist torch==X on PyPI). Extend this
#: only after reading the new wheel's metadata: an xformers built for another torch fails to load.
XFORMERS_TORCH = {
    "0.0.32.post2": "2.8.0",
    "0.0.33.post1": "2.9.0",
    "0.0.33.post2": "2.9.1",
    "0.0.34": "2.10.0",
}

CODE_PATHS = ("handler.py", "comfy_bootstrap/", "worker/", "workflows/", "test_input.json")
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".gguf", ".bin")


def load_pins(path: Path = PINS_FILE) -> dict[str, str]:
    """pins.env as a dict: KEY=value lines, '#' comments, a value may be double-quoted."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        pins[key] = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return pins


def instructions(path: Path = DOCKERFILE, stage: str | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped; with ``stage``,
    the ARGs before the first FROM and that stage's own instructions only."""
    if stage is not None:
        return stages(path)[""] + stages(path)[stage]
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def stages(path: Path = DOCKERFILE) -> dict[str, list[tuple[str, str]]]:
    """Instructions by stage (``AS`` name, else ``#<position>``); "" holds those before the first FROM."""
    result: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for word, rest in instructions(path):
        if word == "FROM":
            words = rest.split()
            current = words[-1] if len(words) > 2 and words[-2].upper() == "AS" else f"#{len(result)}"
            result[current] = []
        result[current].append((word, rest))
    return result


def build_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ARG":
            name, _, default = rest.partition("=")
            assert name not in args, f"ARG {name} declared twice"
            args[name] = default[1:-1] if default[:1] == default[-1:] == '"' and len(default) > 1 else default
    return args


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    return load_pins()


# --- pins.env ----------------------------------------------------------------------------------

def test_pins_file_lines_are_plain_key_value() -> None:
    for line in PINS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r'[A-Z][A-Z0-9_]*=("[^"$`\\\s]*"|[^"\'$`\\\s;]*)', line), line


def test_pins_file_reads_the_same_in_shell_and_python(pins: dict[str, str]) -> None:
    script = f'set -eu; . "{PINS_FILE}"; for k in {" ".join(pins)}; do printf "%s=%s\\n" "$k" "${{!k}}"; done'
    shell = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True).stdout
    assert dict(line.split("=", 1) for line in shell.splitlines()) == pins


def test_pins_are_the_recorded_comfyui_and_node_packs(pins: dict[str, str]) -> None:
    assert pins["COMFYUI_VERSION"] == "v0.30.0"
    assert pins["COMFYUI_REF"] == "b1693ecba9f5b65f8c80ab36b195ab963ec92413"
    assert pins["VHS_REF"] == "4ee72c065db22c9d96c2427954dc69e7b908444b"
    assert pins["ESSENTIALS_REF"] == "33ff89fd354d8ec3ab6affb605a79a931b445d99"
    provenance = (ROOT / "tests" / "recordings" / "PROVENANCE.md").read_text()
    for key in ("COMFYUI_REF", "VHS_REF", "ESSENTIALS_REF"):
        assert pins[key] in provenance, f"{key} differs from the pins the recordings were made with"
    for key in ("COMFYUI_REPO", "VHS_REPO", "ESSENTIALS_REPO", "SAGEATTENTION_REPO"):
        assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+\.git", pins[key]), key
    for key in ("COMFYUI_REF", "VHS_REF", "ESSENTIALS_REF", "SAGEATTENTION_REF"):
        assert re.fullmatch(r"[0-9a-f]{40}", pins[key]), f"{key} must be a full commit id"


def test_torch_set_is_built_for_one_torch_and_blackwell(pins: dict[str, str]) -> None:
    torch = pins["TORCH_VERSION"]
    major, minor, patch = (int(x) for x in torch.split("."))
    assert pins["TORCHVISION_VERSION"] == f"0.{minor + 15}.{patch}", "torchvision must match torch"
    assert pins["TORCHAUDIO_VERSION"] == torch, "torchaudio must match torch"
    assert XFORMERS_TORCH.get(pins["XFORMERS_VERSION"]) == torch, "xformers must be the build for this torch"

    cuda = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)(\d)", pins["TORCH_INDEX_URL"])
    assert cuda, "torch comes from the PyTorch CUDA wheel index"
    wheel_cuda = (int(cuda.group(1)), int(cuda.group(2)))
    assert wheel_cuda >= (12, 8), "RTX 5090 (sm_120) needs CUDA 12.8+ wheels"

    base = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:cudnn-)?runtime-ubuntu\d\d\.\d\d", pins["BASE_IMAGE"])
    assert base, "the base image is a pinned NVIDIA CUDA runtime tag"
    assert (int(base.group(1)), int(base.group(2))) == wheel_cuda, "base image CUDA = torch wheels' CUDA"


def test_python_and_sageattention_pins(pins: dict[str, str]) -> None:
    assert re.fullmatch(r"3\.11\.\d+", pins["PYTHON_VERSION"]), "the recordings were made on Python 3.11"
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["UV_VERSION"])
    arches = pins["TORCH_CUDA_ARCH_LIST"].split(";")
    assert arches == ["8.9", "9.0", "12.0"], "4090/L40S, H100 and 5090 — never 9.0 alone"


# --- Dockerfile ----------------------------------------------------------------------------------

def test_every_build_arg_default_is_the_pin(pins: dict[str, str]) -> None:
    args = build_args()
    for name, default in args.items():
        if name in OPTIONS:
            assert default == OPTIONS[name], f"ARG {name} default"
        else:
            assert name in pins, f"ARG {name} is neither a pin of pins.env nor a known option"
            assert default == pins[name], f"ARG {name}={default!r} but pins.env has {pins[name]!r}"
    assert set(pins) <= set(args), f"pins without a build ARG: {sorted(set(pins) - set(args))}"


def test_base_images_are_pinned_amd64_tags() -> None:
    args = build_args()
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert froms
    named: set[str] = set()
    for rest in froms:
        words = rest.split()
        if words[0] in named:  # a stage built on an earlier one: its platform already
            continue
        if len(words) > 2 and words[-2].upper() == "AS":
            named.add(words[-1])
        assert words[0] == "--platform=linux/amd64", f"FROM {rest}: every stage is linux/amd64"
        image = expand(words[1], args)
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "$" not in image, f"FROM {rest}: pin a tag"
    text = DOCKERFILE.read_text()
    assert "arm64" not in text and "aarch64" not in text
    assert set(re.findall(r"--platform=(\S+)", text)) == {"linux/amd64"}
    assert not re.search(r":latest\b", text)


def test_torch_comes_from_the_cuda_index_at_the_pins(pins: dict[str, str]) -> None:
    runs = [expand(rest, build_args()) for word, rest in instructions() if word == "RUN"]
    torch_runs = [r for r in runs if "torch==" in r]
    assert len(torch_runs) == 1
    cmd = torch_runs[0]
    assert f"--index-url \"{pins['TORCH_INDEX_URL']}\"" in cmd or f"--index-url {pins['TORCH_INDEX_URL']}" in cmd
    for package, key in (("torch", "TORCH_VERSION"), ("torchvision", "TORCHVISION_VERSION"),
                         ("torchaudio", "TORCHAUDIO_VERSION"), ("xformers", "XFORMERS_VERSION")):
        assert f"{package}=={pins[key]}" in cmd


def test_python_is_the_pinned_version() -> None:
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert 'uv python install "${PYTHON_VERSION}"' in runs
    assert 'uv venv --seed --python "${PYTHON_VERSION}" /opt/venv' in runs


def test_install_script_runs_before_the_code_is_copied() -> None:
    steps = instructions(stage=WORKER_STAGE)
    # The stored graphs are copied early for install.sh's node check; the code comes last.
    code_copies = [i for i, (word, rest) in enumerate(steps)
                   if word == "COPY" and any(p in rest.split()[:-1] for p in CODE_PATHS if p != "workflows/")]
    assert code_copies, "the worker code is copied into the image"
    first_code = min(code_copies)
    heavy = [i for i, (word, rest) in enumerate(steps)
             if word == "RUN" and re.search(r"pip install|install\.sh|apt-get|uv python", rest)]
    assert heavy and max(heavy) < first_code, "every install step comes before the code"
    assert any(word == "RUN" and "install.sh comfyui" in rest for word, rest in steps[:first_code])
    # Before the code, only the install script's own files and requirements.txt are copied.
    for word, rest in steps[:first_code]:
        if word == "COPY" and not rest.startswith("--from="):
            sources = rest.split()[:-1]
            assert set(sources) <= {"comfy_bootstrap/pins.env", "comfy_bootstrap/install.sh",
                                    "comfy_bootstrap/verify_nodes.py", "requirements.txt", "workflows/"}, rest
    copied = " ".join(rest for word, rest in steps[first_code:] if word == "COPY")
    for path in CODE_PATHS:
        assert path in copied, f"{path} is copied into the image"


def test_sageattention_is_optional_and_the_arch_list_only_serves_it() -> None:
    steps = instructions()
    names = [(i, rest.partition("=")[0]) for i, (word, rest) in enumerate(steps) if word == "ARG"]
    arch_at = next(i for i, name in names if name == "TORCH_CUDA_ARCH_LIST")
    sage_runs = [i for i, (word, rest) in enumerate(steps) if word == "RUN" and "INSTALL_SAGEATTENTION" in rest]
    assert len(sage_runs) == 1 and sage_runs[0] > arch_at
    install_comfy = next(i for i, (w, r) in enumerate(steps) if w == "RUN" and "install.sh comfyui" in r)
    assert arch_at > install_comfy, "the arch list must not reach the torch or ComfyUI layers"
    sage = steps[sage_runs[0]][1]
    assert 'if [ "${INSTALL_SAGEATTENTION}" = "1" ]' in sage and "install.sh sageattention" in sage


def test_no_model_files_in_the_image() -> None:
    for word, rest in instructions(stage=WORKER_STAGE):
        if word in ("COPY", "ADD"):
            assert word == "COPY", "ADD can fetch URLs; the image uses COPY only"
            for source in rest.split()[:-1]:
                assert not source.endswith(MODEL_SUFFIXES) and "models" not in source, rest
        if word == "RUN":
            assert not re.search(r"huggingface|hf_hub|\.safetensors|wget|curl", rest), rest


def test_entrypoint_workdir_and_env_defaults_match_config() -> None:
    steps = instructions(stage=WORKER_STAGE)
    cmds = [rest for word, rest in steps if word == "CMD"]
    assert [json.loads(c) for c in cmds] == [["python", "-u", "handler.py"]]
    assert ("WORKDIR", "/app") in steps
    assert not any(word in ("USER", "ENTRYPOINT", "VOLUME") for word, _ in steps)

    env: dict[str, str] = {}
    for word, rest in steps:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    worker_vars = {"COMFY_DIR": "/comfyui", "VOLUME_PATH": "/runpod-volume", "WORKER_DIR": "/tmp/wan22-worker"}
    for key, value in worker_vars.items():
        assert env.get(key) == value
        assert Settings.from_env({key: value}) == Settings.from_env({}), f"ENV {key} differs from config.py"


def test_dockerignore_keeps_the_context_to_what_is_copied() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "allow-list: ignore everything, then re-include"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from="):
            for source in rest.split()[:-1]:
                assert source.rstrip("/") in allowed or source.split("/")[0] in allowed, f"{source} is excluded by .dockerignore"
    assert {".git", ".venv", "models", "tests"}.isdisjoint(allowed)
    assert "**/*.safetensors" in lines


# --- docker-compose.yml --------------------------------------------------------------------------

def test_compose_runs_the_local_api_with_the_models_and_a_gpu() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    assert service["command"] == ["python", "-u", "handler.py", "--rp_serve_api",
                                  "--rp_api_host", "0.0.0.0", "--rp_api_port", "8000"]
    assert service["platform"] == "linux/amd64"
    assert service["ports"] == ["127.0.0.1:${API_PORT:-8000}:8000"]
    assert not any("8188" in str(port) for port in service["ports"]), "ComfyUI's port stays unpublished"
    assert "${MODELS_DIR:-./models}:/runpod-volume/models:ro" in service["volumes"]
    assert service["environment"]["VOLUME_PATH"] == "/runpod-volume"
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert service["image"] == "${IMAGE:-wan22-worker}:${VERSION:-dev}", "never :latest"
