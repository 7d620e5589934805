"""Fixtures: one real SQLite MLflow store template, tiny real SavedModels and a real TFMA evaluation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.mlflow_store import TrackingConfig


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory) -> dict[str, str]:
    """Tiny SavedModels, examples, data reports and a TFMA run (TensorFlow; built once per session)."""
    from tests.registry import tiny_models

    return tiny_models.make_all(tmp_path_factory.mktemp("tfx"))


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite store; copying it is much faster than migrating a new one per test."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def cfg(tmp_path, mlflow_template, monkeypatch) -> TrackingConfig:
    """An embedded-store config in a fresh working directory; the environment cannot redirect it.

    MLflow work runs in-process here (each worker process would import MLflow afresh, seconds per run);
    the worker process, the default, has its own tests in test_tracking.py and test_mlflow_server.py.
    """
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    workdir = tmp_path / "wd"
    workdir.mkdir()
    shutil.copy(mlflow_template, workdir / "mlflow.db")
    return TrackingConfig(workdir=str(workdir), worker_process=False)
