"""The RegistryGate node's shell: artifacts in, the binding's verdict out, recorded where the push reads it.

The MLflow binding itself runs for real in tests/test_pipeline_e2e.py (unbound, as on Kubeflow) and
tests/test_product_e2e.py (bound to `dxpipe run`'s MLflow run); here the shell is driven directly.
"""

from __future__ import annotations

import json

import pytest
from tfx.types import standard_artifacts

from components.registry_gate.component import (
    VERDICT_FILE,
    RegistryGateExecutor,
    RegistryVerdict,
    read_verdict,
    verdict_record,
)
from pipelines.registry_executor import outputs_from_inputs


def _artifact(cls, uri: str, **ints):
    artifact = cls()
    artifact.uri = uri
    for key, value in ints.items():
        artifact.set_int_custom_property(key, value)
    return artifact


def _inputs(tmp_path, blessed: int | None):
    blessing = _artifact(standard_artifacts.ModelBlessing, str(tmp_path / "blessing"))
    if blessed is not None:
        blessing.set_int_custom_property("blessed", blessed)
    return {
        "examples": [_artifact(standard_artifacts.Examples, str(tmp_path / "examples"))],
        "model": [_artifact(standard_artifacts.Model, str(tmp_path / "model"))],
        "evaluation": [_artifact(standard_artifacts.ModelEvaluation, str(tmp_path / "evaluation"))],
        "blessing": [blessing],
    }


class _Recording(RegistryGateExecutor):
    """Stands in for the MLflow binding: records what the shell handed over, returns a fixed verdict."""

    seen: dict = {}

    def gate(self, inputs, blessed, params):
        _Recording.seen = {"inputs": dict(inputs), "blessed": blessed, "params": dict(params)}
        return verdict_record(
            model_name="wdbc",
            version="3",
            passed=params["model_name"] == "wdbc",
            reused=False,
            failures=[],
            compared_with="none (no champion yet)",
            digest="d" * 64,
            mlflow_run_id="r1",
            run_id=params["run_id"],
            verdict={"results": [], "notes": []},
        )


@pytest.mark.parametrize(
    ("blessed", "expected"), [(1, True), (0, False), (None, None)], ids=["blessed", "not", "absent"]
)
def test_shell_hands_over_uris_and_blessing_and_records_the_verdict(tmp_path, blessed, expected):
    verdict = _artifact(RegistryVerdict, str(tmp_path / "verdict"))
    params = {"model_name": "wdbc", "run_id": "run-1", "pipeline_name": "p"}
    _Recording().Do(_inputs(tmp_path, blessed), {"verdict": [verdict]}, params)
    seen = _Recording.seen
    assert seen["blessed"] is expected and seen["params"]["run_id"] == "run-1"
    assert seen["inputs"]["model"] == str(tmp_path / "model") and seen["inputs"]["baseline_model"] is None
    assert verdict.get_int_custom_property("passed") == 1
    assert verdict.get_string_custom_property("version") == "3"
    record = read_verdict(verdict)
    assert record == json.loads((tmp_path / "verdict" / VERDICT_FILE).read_text())
    assert record["passed"] is True and record["run_id"] == "run-1"


def test_unbound_node_refuses_to_run(tmp_path):
    verdict = _artifact(RegistryVerdict, str(tmp_path / "verdict"))
    with pytest.raises(NotImplementedError, match="no MLflow binding"):
        RegistryGateExecutor().Do(_inputs(tmp_path, 1), {"verdict": [verdict]}, {"run_id": "x"})
    assert not (tmp_path / "verdict" / VERDICT_FILE).exists()


def test_inputs_become_the_outputs_the_registry_reads(tmp_path):
    uris = {"model": "/r/Trainer/model/7", "evaluation": "/r/Evaluator/evaluation/8", "baseline_model": None}
    outputs = outputs_from_inputs(uris, True, "dxpipe-wdbc", "run-1")
    assert outputs.tfx_run_id == "run-1" and outputs.blessed is True
    assert outputs.saved_model_dir == "/r/Trainer/model/7/Format-Serving"
    assert outputs.baseline_model_uri is None and outputs.execution_ids == {}
