# dxpipe: the two front-door commands are `make run` and `make test`; both bootstrap .venv from the lock.
SHELL := /bin/bash
# python3.10 may exist only as a pyenv version that is not the global one: look for a working interpreter.
PYTHON ?= $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10; do \
	  $$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
UV_VERSION := 0.13.9
# The stamp changes whenever a lock, setup.py or this file changes, so a stale venv is re-synced, never trusted.
LOCK_DIGEST := $(shell cat requirements.lock requirements-data.lock setup.py Makefile | sha256sum | cut -c1-16)
STAMP := $(VENV)/.dxpipe-$(LOCK_DIGEST)
DXPIPE := $(VENV)/bin/dxpipe
ARGS ?=
# The shared, authenticated MLflow server (PostgreSQL + basic auth + dxpipe's approval rules).
MLFLOW_SERVER_DIR ?= .dxpipe/mlflow-server
MLFLOW_PORT ?= 5000

.PHONY: setup run test lint bench lock clean mlflow-server mlflow-user mlflow-server-stop image image-local image-base-local test-kfp-image podman-host

setup: $(STAMP)

$(STAMP): requirements.lock requirements-data.lock setup.py Makefile
	@test -n "$(PYTHON)" || { echo "error: Python 3.10 not found (tried python3.10 and ~/.pyenv/versions/3.10*); install it with pyenv install 3.10"; exit 1; }
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE set (as on these machines) every process
	# would otherwise re-compile TensorFlow, TFX, Beam and MLflow from source, ~20 s per `dxpipe run`.
	$(VENV)/bin/uv pip sync --python $(VENV)/bin/python --quiet --compile-bytecode requirements.lock
	# The data-only packages pin old pandas/numpy that break TensorFlow: install them without dependencies.
	$(VENV)/bin/uv pip install --python $(VENV)/bin/python --quiet --no-deps --compile-bytecode -r requirements-data.lock
	$(VENV)/bin/uv pip install --python $(VENV)/bin/python --quiet --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	rm -f $(VENV)/.dxpipe-* && touch $@

run: setup
	$(DXPIPE) run $(ARGS)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest $(ARGS)

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

bench: setup
	$(VENV)/bin/python -m bench.pipeline_bench

# Shared MLflow server on 127.0.0.1:$(MLFLOW_PORT), in the foreground (Ctrl-C stops it and PostgreSQL).
mlflow-server: setup
	$(VENV)/bin/python -m pipelines.registry_server.deploy start $(MLFLOW_SERVER_DIR) --port $(MLFLOW_PORT)

# Stops what a killed `make mlflow-server` left running (the server and PostgreSQL).
mlflow-server-stop: setup
	$(VENV)/bin/python -m pipelines.registry_server.deploy stop $(MLFLOW_SERVER_DIR)

# A user on the running server: make mlflow-user NAME=alice [REVIEWER=1]; prints the generated password.
mlflow-user: setup
	@test -n "$(NAME)" || { echo "error: NAME is required: make mlflow-user NAME=alice [REVIEWER=1]"; exit 2; }
	$(VENV)/bin/python -m pipelines.registry_server.deploy add-user $(MLFLOW_SERVER_DIR) $(NAME) $(if $(REVIEWER),--reviewer)

# The pipeline image (Dockerfile) that `dxpipe compile`'s spec names; docker if it is there, else podman.
VERSION := $(shell sed -n 's/^ *version="\(.*\)",/\1/p' setup.py)
IMAGE ?= ghcr.io/dxpipe/dxpipe:$(VERSION)
BASE_IMAGE ?= python:3.10-slim
CONTAINER_TOOL ?= $(shell docker info >/dev/null 2>&1 && echo docker || echo podman)
IMAGE_BUILD_FLAGS ?=
image:
	$(CONTAINER_TOOL) build --build-arg BASE_IMAGE=$(BASE_IMAGE) $(IMAGE_BUILD_FLAGS) -t $(IMAGE) .

# No image registry reachable (as on the development machines): a bookworm base built with debootstrap and
# this machine's Python 3.10 (tools/image/local_base.sh, cached), the build on the host's network with the
# host's CA bundle mounted (builds reach PyPI and Debian through a TLS-intercepting proxy).
LOCAL_BASE ?= localhost/dxpipe-base:py3.10-bookworm
HOST_CA ?= /etc/ssl/certs/ca-certificates.crt
image-base-local: podman-host
	tools/image/local_base.sh $(LOCAL_BASE)

# podman, runc and debootstrap from Debian, and the containers.conf settings this sandbox needs.
podman-host:
	tools/image/podman_host.sh

image-local: image-base-local
	$(MAKE) image CONTAINER_TOOL=podman BASE_IMAGE=$(LOCAL_BASE) IMAGE_BUILD_FLAGS="--network=host \
	  -v $(HOST_CA):/run/dxpipe-host-ca.crt:ro --build-arg SSL_CERT_FILE=/run/dxpipe-host-ca.crt \
	  --build-arg PIP_CERT=/run/dxpipe-host-ca.crt"

# The compiled WDBC pipeline executed task by task in the image (tests/kfp_driver); builds the image first.
# The test starts the shared MLflow server (PostgreSQL via runuser, as `make mlflow-server`) for the pods.
test-kfp-image: setup image-local
	DXPIPE_KFP_IMAGE=$(IMAGE) $(VENV)/bin/python -m pytest -m kfp_image tests/test_kfp_image.py $(ARGS)

# Re-resolve the lock after editing requirements.in (needs PyPI).
lock: setup
	$(VENV)/bin/uv pip compile requirements.in --python-version 3.10 --generate-hashes --no-header -o requirements.lock

clean:
	rm -rf $(VENV) .dxpipe
