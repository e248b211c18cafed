# wan22-worker: development, image and release commands. `make` alone lists them.

.DEFAULT_GOAL := help
SHELL := /bin/bash

# The venv's Python when .venv exists (make install-dev), else the system's python3.
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
# Image name without tag; releases are tagged with VERSION, never :latest.
IMAGE ?= wan22-worker
VERSION := $(shell cat VERSION)
# Host folder mounted at /runpod-volume/models by `make run-local` (docker-compose.yml).
MODELS_DIR ?= ./models
# Extra `docker build` options, e.g. BUILD_ARGS="--build-arg INSTALL_SAGEATTENTION=1".
BUILD_ARGS ?=
# `make models`: the volume holding models/ and the tasks whose files to fetch (all, or e.g. "i2v t2v"
# or "i2v,t2v"); MODELS_ARGS adds options, e.g. MODELS_ARGS=--check or MODELS_ARGS=--dry-run.
VOLUME ?= $(or $(VOLUME_PATH),/runpod-volume)
TASK ?= all
MODELS_ARGS ?=
comma := ,

.PHONY: help install-dev test lint serve run-local models build push patch minor major

help: ## List the targets with what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install-dev: ## Create .venv and install requirements-dev.txt into it
	python3 -m venv .venv
	.venv/bin/python -m pip install -r requirements-dev.txt

test: ## Run the test suite: python -m pytest -q
	$(PYTHON) -m pytest -q

lint: ## Lint the code: ruff check .
	$(PYTHON) -m ruff check .

serve: ## Run RunPod's local test API on :8000 (needs a ComfyUI: COMFY_DIR, or COMFY_URL to attach)
	$(PYTHON) handler.py --rp_serve_api

run-local: ## Build and run the image with a GPU and MODELS_DIR mounted (docker compose, API on :8000)
	@test -d "$(MODELS_DIR)" || { echo "MODELS_DIR=$(MODELS_DIR) is not a folder: point it at your models (docs/deployment.md)"; exit 1; }
	IMAGE="$(IMAGE)" VERSION="$(VERSION)" MODELS_DIR="$(MODELS_DIR)" docker compose up --build

models: ## Download TASK's model files (default all) onto VOLUME, resumably, and check their SHA-256 (needs huggingface_hub)
	$(PYTHON) scripts/models.py --volume "$(VOLUME)" $(foreach task,$(subst $(comma), ,$(TASK)),--task $(task)) $(MODELS_ARGS)

build: ## Build the image IMAGE:VERSION for linux/amd64 (default wan22-worker:<the VERSION file>)
	docker build --platform linux/amd64 --build-arg WORKER_VERSION=$(VERSION) $(BUILD_ARGS) -t $(IMAGE):$(VERSION) .

push: build ## Build, then push IMAGE:VERSION (set IMAGE to your registry path, e.g. docker.io/you/wan22-worker)
	docker push $(IMAGE):$(VERSION)

patch: ## Release: bump the patch version, date the changelog, commit and tag (PUSH=1 also pushes)
	$(PYTHON) scripts/release.py patch

minor: ## Release: bump the minor version, date the changelog, commit and tag (PUSH=1 also pushes)
	$(PYTHON) scripts/release.py minor

major: ## Release: bump the major version, date the changelog, commit and tag (PUSH=1 also pushes)
	$(PYTHON) scripts/release.py major
