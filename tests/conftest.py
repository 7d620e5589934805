"""Shared fixtures: real datasets, a real trained model, and the packaged config."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

from pipelines.config import load_config


@pytest.fixture(scope="session")
def default_cfg():
    return load_config()


@pytest.fixture()
def cfg_in(tmp_path, default_cfg):
    """The packaged config with its workdir moved into a temporary directory."""

    def make(dataset: str = "wdbc", **data_changes):
        cfg = dataclasses.replace(default_cfg.with_dataset(dataset), workdir=str(tmp_path / "work"))
        if data_changes:
            datasets = dict(cfg.datasets)
            datasets[dataset] = dataclasses.replace(cfg.data, **data_changes)
            cfg = dataclasses.replace(cfg, datasets=datasets)
        return cfg

    return make
