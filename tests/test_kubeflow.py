"""Golden compile test for Kubeflow Pipelines v2.

Refresh the golden file after an intended change with:
    DXPIPE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_kubeflow.py
"""

import os
import re
from pathlib import Path

import pytest
import yaml

from pipelines.kubeflow_runner import KubeflowTarget, compile_pipeline

GOLDEN = Path(__file__).parent / "golden" / "kfp_wdbc.yaml"
TARGET = KubeflowTarget(
    image="example.org/dxpipe:test", pipeline_root="/mnt/p", data_root="/mnt/d", serving_root="/mnt/s"
)


def _normalise(text: str) -> str:
    # The Trainer's cache key carries a digest of models/*.py; it changes with every model edit.
    return re.sub(r'(code_digest\\?"\s*:\s*\\?")[0-9a-f]+', r"\1<digest>", text)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, default_cfg):
    return compile_pipeline(default_cfg, tmp_path_factory.mktemp("kfp") / "wdbc.yaml", TARGET)


def test_compiled_spec_matches_golden(compiled):
    text = _normalise(compiled.read_text())
    if os.environ.get("DXPIPE_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "KFP spec changed; refresh the golden file if intended (see docstring)"


def test_kfp_sdk_loads_the_yaml(compiled):
    from kfp import components

    component = components.load_component_from_file(str(compiled))
    # With the exit handler, TFX nests the pipeline's tasks in the `tfx-dag` sub-DAG.
    tasks = component.pipeline_spec.components["tfx-dag"].dag.tasks
    assert component.name == "dxpipe-wdbc"
    assert set(tasks) >= {
        "CsvExampleGen",
        "DataGate",
        "Trainer",
        "Evaluator",
        "RegistryGate",
        "ServingPusher",
    }


def test_wiring_survives_compilation(compiled):
    spec = yaml.safe_load(compiled.read_text())
    tasks = spec["components"]["tfx-dag"]["dag"]["tasks"]
    assert "DataGate" in tasks["Trainer"]["dependentTasks"]  # nothing trains on rejected data
    # Push only what the registry gate passed (its policy requires the Evaluator's blessing).
    assert "_RegistryGate.verdict" in tasks["ServingPusher"]["triggerPolicy"]["condition"]
    assert all(
        c["container"]["image"] == TARGET.image
        for c in spec["deploymentSpec"]["executors"].values()
        if "container" in c
    )
    pusher = tasks["ServingPusher"]["inputs"]["parameters"]["base_path"]["runtimeValue"]["constant"]
    assert pusher == "/mnt/s/wdbc-staging"
