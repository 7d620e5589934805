# The dxpipe pipeline image: what every task of the compiled Kubeflow pipeline runs in.
#
# It installs exactly requirements.lock (hash-checked, as `make setup` does), the data-only lock without
# dependencies, and this repository at /opt/dxpipe (the path `dxpipe compile` writes into the spec, e.g. the
# curated schema /opt/dxpipe/schemas/<dataset>/schema.pbtxt). The spec's tasks run
# `python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor`, so `python` on PATH is the
# environment's interpreter. Build with `make image` (docker or podman).
ARG BASE_IMAGE=python:3.10-slim
FROM ${BASE_IMAGE}

# uv's version pins the installer as the Makefile does.
ARG UV_VERSION=0.13.9
# Only for builds behind a TLS-intercepting proxy: a CA bundle mounted into the build (see `make image-local`).
ARG SSL_CERT_FILE
ARG PIP_CERT

ENV PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TF_CPP_MIN_LOG_LEVEL=1

WORKDIR /opt/dxpipe

# The locks first: this layer (the slow one) is reused while only the code changes.
COPY requirements.lock requirements-data.lock ./
# g++ builds pyfarmhash (no wheel for it); it is removed in the same layer so the image does not ship a
# compiler. libstdc++6 and libgomp1 are what TensorFlow needs at run time, so they are kept explicitly.
# The data-only packages pin old pandas/numpy that break TensorFlow: they go in without dependencies.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++ libstdc++6 libgomp1 libsqlite3-0 \
 && python3 -m venv $VIRTUAL_ENV \
 && $VIRTUAL_ENV/bin/python -m pip install --quiet --disable-pip-version-check uv==${UV_VERSION} \
 && uv pip sync --python $VIRTUAL_ENV/bin/python --quiet --compile-bytecode requirements.lock \
 && uv pip install --python $VIRTUAL_ENV/bin/python --quiet --no-deps --compile-bytecode -r requirements-data.lock \
 && DEBIAN_FRONTEND=noninteractive apt-get purge -y --auto-remove g++ \
 && rm -rf /var/lib/apt/lists/* /root/.cache

COPY . .
RUN uv pip install --python $VIRTUAL_ENV/bin/python --quiet --no-deps --no-build-isolation \
      --config-settings editable_mode=compat -e . \
 && python -c "import pipelines, components, models, serving, tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"

CMD ["dxpipe", "--help"]
