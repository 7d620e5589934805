"""Packaging for dxpipe.

Dependencies are pinned in requirements.lock (installed by `make setup`), not here: the TFX 1.16 stack only
resolves with exact pins, and a second, looser list would drift from the lock.
"""

from setuptools import find_packages, setup

setup(
    name="dxpipe",
    version="0.1.0",
    description="Train, validate, gate and serve medical diagnostic models with TFX, MLflow and TF Serving.",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["pipelines*", "components*", "models*", "serving*", "schemas"]),
    # Non-Python files read at run time: the packaged config, the curated schemas it points to (relative
    # to the install root, as in the repository), and the Kubernetes manifests serving.deploy loads.
    package_data={
        "pipelines": ["configs/*.yaml"],
        "schemas": ["*/schema.pbtxt", "README.md", "MEDMNIST-ATTRIBUTION.md"],
        "serving": ["k8s/*.yaml", "k8s/dxpipe-serve/*.yaml"],
    },
    entry_points={
        "console_scripts": ["dxpipe=pipelines.cli:console_main"],
        # `mlflow server --app-name dxpipe`: MLflow's basic-auth app plus dxpipe's approval rules.
        "mlflow.app": ["dxpipe=pipelines.registry_server.app:create_app"],
    },
)
