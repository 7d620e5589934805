"""Fixtures for the image pipeline: the official MedMNIST files, found where CI and checkouts keep them.

CI clones the repository with `../shared` beside it; an engineer's worktree may keep the shared data
elsewhere and says so with DXPIPE_MEDMNIST_DIR (the variable the config's `source.dir_env` names). The
files are required: a missing copy fails these tests rather than skipping them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import PROJECT_ROOT

ENV = "DXPIPE_MEDMNIST_DIR"


def medmnist_dir() -> Path:
    """Returns the directory holding the official MedMNIST files."""
    candidates = [Path(os.environ[ENV])] if os.environ.get(ENV) else []
    candidates.append(PROJECT_ROOT.parent / "shared" / "data" / "medmnist")
    for directory in candidates:
        if (directory / "pneumoniamnist.npz").is_file():
            return directory
    pytest.fail(f"MedMNIST files not found in {[str(c) for c in candidates]}; set {ENV} to their directory.")


@pytest.fixture(scope="session")
def medmnist() -> Path:
    return medmnist_dir()


@pytest.fixture(scope="session")
def image_cfg(medmnist):
    """The packaged config's pneumoniamnist entry, reading the files from wherever they were found."""
    from pipelines.config import load_config

    os.environ.setdefault(ENV, str(medmnist))
    return load_config(dataset="pneumoniamnist")


@pytest.fixture(scope="session")
def pneumonia_arrays(medmnist) -> dict[str, np.ndarray]:
    with np.load(medmnist / "pneumoniamnist.npz") as npz:
        return {k: npz[k] for k in npz.files}


def with_model(cfg, **changes):
    """Returns `cfg` with the selected dataset's CNN settings changed (e.g. fewer epochs for a test)."""
    data = cfg.data
    image = dataclasses.replace(data.image, model=dataclasses.replace(data.image.model, **changes))
    return dataclasses.replace(
        cfg, datasets={**cfg.datasets, cfg.dataset: dataclasses.replace(data, image=image)}
    )
