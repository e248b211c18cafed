# wan22-worker: development, image and release commands. `make` alone lists them.
#
# `make test` and `make serve` set themselves up: they create .venv and install what they need
# the first time (again only when a requirements file changes).

.DEFAULT_GOAL := help
SHELL := /bin/bash

# The versions of torch, ComfyUI and the node packs (KEY=value lines), for `make comfyui`.
-include comfy_bootstrap/pins.env

VENV := .venv
PY := $(VENV)/bin/python
# The system Python that creates .venv (3.11 or newer).
PYTHON3 ?= python3
# Image name without tag; releases are tagged with VERSION, never :latest.
IMAGE ?= wan22-worker
VERSION := $(shell cat VERSION)
# Host folder mounted at /runpod-volume/models by `make run-local` (docker-compose.yml).
MODELS_DIR ?= ./models
# Extra `docker build` options, e.g. BUILD_ARGS="--build-arg INSTALL_SAGEATTENTION=1".
BUILD_ARGS ?=
# The local API's port for `make serve`.
API_PORT ?= 8000
# Where `make comfyui` installs ComfyUI (and its own Python environment), and the local volume
# `make serve` and `make models` use when VOLUME_PATH is not set.
LOCAL_COMFY := $(CURDIR)/.comfy
LOCAL_VOLUME := $(CURDIR)/volume
# `make models`: the volume holding models/ and the tasks whose files to fetch (i2v, flf2v, t2v,
# ti2v-5b, all; several as "i2v t2v" or "i2v,t2v"); MODELS_ARGS adds options, e.g.
# MODELS_ARGS=--check or MODELS_ARGS=--dry-run.
VOLUME ?= $(or $(VOLUME_PATH),$(LOCAL_VOLUME))
TASK ?= i2v
MODELS_ARGS ?=
comma := ,
space := $(subst ,, )
# `make build-baked`: TASK as one comma list (the build argument) and as a tag suffix (i2v-t2v).
BAKE_TASKS := $(subst $(space),$(comma),$(strip $(TASK)))

# `make serve` uses the ComfyUI of `make comfyui` once it is complete, and the volume `make models`
# fills (./volume), unless COMFY_DIR / VOLUME_PATH are set.
SERVE_ENV = $(if $(and $(wildcard $(LOCAL_COMFY)/.complete),$(if $(COMFY_DIR),,1)),COMFY_DIR=$(LOCAL_COMFY)/ComfyUI COMFY_PYTHON=$(LOCAL_COMFY)/venv/bin/python) \
	$(if $(VOLUME_PATH),,VOLUME_PATH=$(LOCAL_VOLUME))

.PHONY: help install-dev test fuzz lint serve comfyui models run-local build build-sage build-baked push first-release patch minor major

help: ## List the targets with what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.runtime: requirements.txt
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt scripts/requirements-models.txt scripts/requirements-client.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install-dev: $(VENV)/.dev ## Create .venv and install requirements-dev.txt into it (test and lint do it themselves)

test: $(VENV)/.dev ## Run the tests (sets up .venv first): python -m pytest -q
	$(PY) -m pytest -q

fuzz: $(VENV)/.dev ## Fuzz the request parser, the URL guard, the image decoder and the safetensors reader: tests/test_fuzz_*.py, thousands of inputs each, with Hypothesis' statistics
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q --hypothesis-show-statistics tests/test_fuzz_*.py

lint: $(VENV)/.dev ## Lint the code: ruff check .
	$(PY) -m ruff check .

serve: $(VENV)/.runtime ## Run the worker with RunPod's local API on :8000 (sets up .venv first; API_PORT to change)
	$(SERVE_ENV) $(PY) handler.py --rp_serve_api --rp_api_port $(API_PORT)

comfyui: ## Install ComfyUI v0.30.0, its node packs and the pinned torch into .comfy/ (about 9 GB); checks its sources first, leaves nothing half-built
	PYTHON3=$(PYTHON3) bash comfy_bootstrap/install.sh local $(LOCAL_COMFY)

models: $(VENV)/.dev ## Download TASK's model files (default i2v; all for every task) onto VOLUME (default VOLUME_PATH or ./volume), resumably, SHA-256 checked
	$(PY) scripts/models.py --volume "$(VOLUME)" $(foreach task,$(subst $(comma), ,$(TASK)),--task $(task)) $(MODELS_ARGS)

run-local: ## Build and run the image with a GPU and MODELS_DIR mounted (docker compose, API on :8000)
	@test -d "$(MODELS_DIR)" || { echo "MODELS_DIR=$(MODELS_DIR) is not a folder: point it at your models (docs/deployment.md)"; exit 1; }
	@docker compose version >/dev/null 2>&1 || { echo "make run-local needs Docker Compose v2 (the 'docker compose' plugin): https://docs.docker.com/compose/install/linux/"; exit 1; }
	IMAGE="$(IMAGE)" VERSION="$(VERSION)" MODELS_DIR="$(MODELS_DIR)" docker compose up --build

build: ## Build the image IMAGE:VERSION for linux/amd64 (default wan22-worker:<the VERSION file>)
	docker build --platform linux/amd64 --build-arg WORKER_VERSION=$(VERSION) $(BUILD_ARGS) -t $(IMAGE):$(VERSION) .

build-sage: ## Build IMAGE:VERSION-sage: the image with SageAttention 2.2 compiled in, for COMFY_ATTENTION=sage (10-30 min more)
	docker build --platform linux/amd64 --build-arg WORKER_VERSION=$(VERSION) --build-arg INSTALL_SAGEATTENTION=1 $(BUILD_ARGS) \
		-t $(IMAGE):$(VERSION)-sage .

build-baked: ## Build IMAGE:VERSION-<TASK>: the image with TASK's model files inside (default i2v; all, or a list), SHA-256 checked at build time
	docker build --platform linux/amd64 --target baked --build-arg WORKER_VERSION=$(VERSION) --build-arg BAKE_TASKS=$(BAKE_TASKS) \
		$(if $(HF_TOKEN),--secret id=HF_TOKEN$(comma)env=HF_TOKEN) $(BUILD_ARGS) -t $(IMAGE):$(VERSION)-$(subst $(comma),-,$(BAKE_TASKS)) .

push: build ## Build, then push IMAGE:VERSION (set IMAGE to your registry path, e.g. docker.io/you/wan22-worker)
	docker push $(IMAGE):$(VERSION)

first-release: ## Release VERSION as it is, the first time: date the changelog, commit and tag (PUSH=1 also pushes)
	$(PYTHON3) scripts/release.py first

patch: ## Release: bump the patch version, date the changelog, commit and tag (PUSH=1 also pushes)
	$(PYTHON3) scripts/release.py patch

minor: ## Release: bump the minor version, date the changelog, commit and tag (PUSH=1 also pushes)
	$(PYTHON3) scripts/release.py minor

major: ## Release: bump the major version, date the changelog, commit and tag (PUSH=1 also pushes)
	$(PYTHON3) scripts/release.py major
