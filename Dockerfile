# syntax=docker/dockerfile:1
#
# wan22-worker: RunPod serverless worker for Wan 2.2 (i2v, flf2v, t2v, ti2v-5b) in ComfyUI. linux/amd64 only.
#
#   docker build --platform linux/amd64 -t wan22-worker:$(cat VERSION) .      (or: make build)
#   docker build --platform linux/amd64 --target baked --build-arg BAKE_TASKS=i2v ...   (make build-baked TASK=i2v)
#
# Every ARG default below equals the same key of comfy_bootstrap/pins.env (tests/test_dockerfile.py
# checks it). Layers go from what changes least to what changes most: system packages, Python,
# torch, ComfyUI + node packs, [SageAttention], the worker's requirements, and the worker's code
# last, so a code change rebuilds only the last layers. The Wan model weights are not in the default
# image: they are read from the network volume or a cached model at run time (docs/deployment.md),
# as are the frame interpolation models. The `baked` stage adds the model files of chosen tasks
# (make build-baked).

ARG BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG UV_VERSION=0.13.0

FROM --platform=linux/amd64 ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM --platform=linux/amd64 ${BASE_IMAGE} AS worker

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ffmpeg: VideoHelperSuite encodes the MP4 with it. git: install.sh clones at the pins.
# libglib2.0-0: needed by opencv-python-headless. gcc, libc6-dev: Triton compiles a small C module
# at first use (torch.compile's inductor for TORCH_COMPILE=true, SageAttention's Triton kernels).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates ffmpeg gcc git libc6-dev libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# Python at the pinned patch version (a uv-managed CPython build), in a venv that comes first on
# PATH: `python` below, in install.sh and in the worker is /opt/venv/bin/python.
ARG PYTHON_VERSION=3.11.17
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --seed --python "${PYTHON_VERSION}" /opt/venv \
    && python --version

# torch, torchvision, torchaudio and xformers: one set built for the same torch, CUDA 12.8 wheels
# (sm_89 RTX 4090 / L40S, sm_90 H100, sm_120 RTX 5090).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.10.0
ARG TORCHVISION_VERSION=0.25.0
ARG TORCHAUDIO_VERSION=2.10.0
ARG XFORMERS_VERSION=0.0.34
RUN python -m pip install --index-url "${TORCH_INDEX_URL}" \
        "torch==${TORCH_VERSION}" \
        "torchvision==${TORCHVISION_VERSION}" \
        "torchaudio==${TORCHAUDIO_VERSION}" \
        "xformers==${XFORMERS_VERSION}"

# ComfyUI and the two node packs at their pins, their requirements, and a CPU boot of ComfyUI that
# checks every node class of the stored graphs and fragments (workflows/, copied for that) registers
# (install.sh reads these ARGs from the environment; they win over pins.env).
ARG COMFYUI_REPO=https://github.com/Comfy-Org/ComfyUI.git
ARG COMFYUI_VERSION=v0.30.0
ARG COMFYUI_REF=b1693ecba9f5b65f8c80ab36b195ab963ec92413
ARG VHS_REPO=https://github.com/Kosinkadink/ComfyUI-VideoHelperSuite.git
ARG VHS_REF=4ee72c065db22c9d96c2427954dc69e7b908444b
ARG ESSENTIALS_REPO=https://github.com/cubiq/ComfyUI_essentials.git
ARG ESSENTIALS_REF=33ff89fd354d8ec3ab6affb605a79a931b445d99
ENV COMFY_DIR=/comfyui
COPY comfy_bootstrap/pins.env comfy_bootstrap/install.sh comfy_bootstrap/verify_nodes.py /opt/wan22-install/
COPY workflows/ /opt/workflows/
RUN bash /opt/wan22-install/install.sh comfyui

# Optional SageAttention 2.2 (COMFY_ATTENTION=sage), compiled for 8.9;9.0;12.0 by default. The CUDA
# compiler comes from NVIDIA's apt repository of the base image and is removed again in the same
# layer; the C compiler stays, Triton needs it at run time.
ARG INSTALL_SAGEATTENTION=0
ARG SAGEATTENTION_REPO=https://github.com/thu-ml/SageAttention.git
ARG SAGEATTENTION_REF=9eefd876281e93a41b2245ab1f671e1f104f420a
ARG TORCH_CUDA_ARCH_LIST="8.9;9.0;12.0"
RUN if [ "${INSTALL_SAGEATTENTION}" = "1" ]; then \
        set -eux; \
        cuda_mm=$(echo "${CUDA_VERSION}" | cut -d. -f1,2 | tr . -); \
        apt-get update; \
        apt-get install -y --no-install-recommends build-essential \
            "cuda-minimal-build-${cuda_mm}" "cuda-libraries-dev-${cuda_mm}"; \
        bash /opt/wan22-install/install.sh sageattention; \
        apt-get purge -y --auto-remove "cuda-minimal-build-${cuda_mm}" "cuda-libraries-dev-${cuda_mm}"; \
        rm -rf /var/lib/apt/lists/*; \
    else \
        echo "SageAttention not built (INSTALL_SAGEATTENTION=${INSTALL_SAGEATTENTION})"; \
    fi

# The worker's own requirements (runpod SDK, requests, websocket-client, pillow).
WORKDIR /app
COPY requirements.txt /app/requirements.txt
RUN python -m pip install -r /app/requirements.txt

# Runtime defaults; each equals the default of comfy_bootstrap/config.py (docs/deployment.md lists
# every variable). Models are read from $VOLUME_PATH/models; ComfyUI's input, output, temp and user
# folders live in $WORKER_DIR, created world-writable here for images run as another user.
ENV VOLUME_PATH=/runpod-volume \
    WORKER_DIR=/tmp/wan22-worker
RUN mkdir -p "${WORKER_DIR}" && chmod 1777 "${WORKER_DIR}"

ARG WORKER_VERSION=dev
LABEL org.opencontainers.image.title="wan22-worker" \
      org.opencontainers.image.description="RunPod serverless worker: Wan 2.2 video tasks (i2v, flf2v, t2v, ti2v-5b) in ComfyUI" \
      org.opencontainers.image.version="${WORKER_VERSION}"

# The worker's code, last.
COPY handler.py test_input.json VERSION /app/
COPY comfy_bootstrap/ /app/comfy_bootstrap/
COPY worker/ /app/worker/
COPY workflows/ /app/workflows/
RUN chmod -R a+rX /app

CMD ["python", "-u", "handler.py"]

# The image with model files inside, for endpoints that would rather pull one large image (which
# FlashBoot keeps on the host) than read a network volume: scripts/models.py downloads the files of
# BAKE_TASKS (comma-separated, or all) into the image's own volume path, each checked against the
# Hub's SHA-256, then --check verifies them again; a mismatch fails the build. A gated repository
# needs the token as a build secret (make build-baked passes HF_TOKEN so), never a layer.
FROM worker AS baked
ARG BAKE_TASKS=i2v
ARG BAKED_VOLUME=/opt/wan22-volume
COPY scripts/requirements-models.txt scripts/models.py scripts/hub_files.py /app/scripts/
RUN python -m pip install -r /app/scripts/requirements-models.txt
RUN --mount=type=secret,id=HF_TOKEN,env=HF_TOKEN \
    set -e; set --; for task in $(echo "${BAKE_TASKS}" | tr ',' ' '); do set -- "$@" --task "$task"; done; \
    python scripts/models.py --volume "${BAKED_VOLUME}" "$@"; \
    python scripts/models.py --volume "${BAKED_VOLUME}" "$@" --check; \
    chmod -R a+rX "${BAKED_VOLUME}"
# The worker reads the baked files; a network volume, if one is attached, is not searched for models.
ENV VOLUME_PATH=${BAKED_VOLUME}

# The default image (make build, the RunPod Hub's build): the worker without model files.
FROM worker
