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

.PHONY: setup run test lint bench lock clean mlflow-server mlflow-user mlflow-server-stop

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

# Re-resolve the lock after editing requirements.in (needs PyPI).
lock: setup
	$(VENV)/bin/uv pip compile requirements.in --python-version 3.10 --generate-hashes --no-header -o requirements.lock

clean:
	rm -rf $(VENV) .dxpipe
