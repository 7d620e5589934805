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
    packages=find_packages(include=["pipelines*", "components*", "models*", "serving*"]),
    package_data={"pipelines": ["configs/*.yaml"]},
    entry_points={"console_scripts": ["dxpipe=pipelines.cli:main"]},
)
