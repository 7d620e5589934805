"""Production deployment facts, in one place: what `serving/k8s/` runs and what the code assumes of it.

Production runs the official `tensorflow/serving` image (manifests in `serving/k8s/`); `dxpipe serve` is its
stand-in wherever that binary cannot run. Both read the same `models.config`, listen on the same port and serve
the same paths, and the tests check the manifests against the constants below.
"""

from __future__ import annotations

from pathlib import Path

from serving.metrics import PROMETHEUS_PATH
from serving.server import DEFAULT_REST_API_PORT

MANIFEST_DIR = Path(__file__).parent / "k8s"
MODEL_NAME = "wdbc"  # the pipeline's model name for its default dataset (pipelines/configs/default.yaml)
STAGING_MODEL_NAME = "wdbc-staging"
# Mount path of the serving volume, the same as in the pipeline's pods (KubeflowTarget.serving_root); base
# paths are MODEL_ROOT/<model name>.
MODEL_ROOT = "/mnt/dxpipe/serving"
CONFIG_DIR = "/etc/tfserving"
REST_API_PORT = DEFAULT_REST_API_PORT
GRPC_PORT = 8500
METRICS_PATH = PROMETHEUS_PATH


def readiness_path(model_name: str = MODEL_NAME) -> str:
    """The model status URL used as the readiness probe."""
    return f"/v1/models/{model_name}"


def load_manifests(directory: Path = MANIFEST_DIR) -> list[dict]:
    """Every Kubernetes object of the manifests (kustomization excluded), parsed."""
    import yaml

    objects: list[dict] = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects
