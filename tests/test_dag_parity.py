"""One DAG for the whole product: the local pipeline and the compiled Kubeflow pipeline are the same graph.

The local side is TFX's own IR of `create_pipeline` (what LocalDagRunner executes); the Kubeflow side is
the compiled KFP v2 spec. The one documented difference is the Evaluator's baseline: locally a resolver
(`BaselineStrategy`: the registry's champion or the latest blessed model, never the candidate, so it
reads the Trainer's output); compiled, an Importer of the champion named at compile time (open-source KFP
runs no resolver nodes, see `pipelines.kubeflow_spec`), absent without one. Either is folded into one
`baseline` node before comparing.
"""

from __future__ import annotations

import re

import pytest
import yaml

from pipelines.kubeflow_runner import EXIT_HANDLER_ID, TFX_DAG, KubeflowTarget, compile_pipeline
from pipelines.pipeline import create_pipeline

BASELINE = "baseline"
PRODUCT = {
    "CsvExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "DataGate",
    "Trainer",
    BASELINE,
    "Evaluator",
    "RegistryGate",
    "ServingPusher",
}


def _fold(node: str) -> str:
    return BASELINE if "resolver" in node or "importer" in node else node


def _graph(nodes: dict[str, list[str]]) -> tuple[set[str], set[tuple[str, str]]]:
    names = {_fold(n) for n in nodes}
    edges = {(_fold(u), _fold(n)) for n, ups in nodes.items() for u in ups if _fold(u) != _fold(n)}
    return names, edges


@pytest.fixture(scope="module")
def local_ir(default_cfg, tmp_path_factory):
    from tfx.dsl.compiler import compiler

    pipeline = create_pipeline(
        default_cfg,
        pipeline_root=str(tmp_path_factory.mktemp("root")),
        input_base=str(tmp_path_factory.mktemp("data")),
        source_name="wdbc",
    )
    return compiler.Compiler().compile(pipeline)


@pytest.fixture(scope="module")
def kfp_spec(default_cfg, tmp_path_factory):
    path = compile_pipeline(default_cfg, tmp_path_factory.mktemp("kfp") / "wdbc.yaml", KubeflowTarget())
    return yaml.safe_load(path.read_text())


def _local_nodes(ir) -> dict[str, list[str]]:
    return {n.pipeline_node.node_info.id: list(n.pipeline_node.upstream_nodes) for n in ir.nodes}


def _kfp_tasks(spec) -> dict:
    return spec["components"][TFX_DAG]["dag"]["tasks"]


def test_same_components_and_edges(local_ir, kfp_spec, default_cfg, tmp_path):
    local_names, local_edges = _graph(_local_nodes(local_ir))
    assert local_names == PRODUCT
    tasks = _kfp_tasks(kfp_spec)
    kfp_names, kfp_edges = _graph({name: task.get("dependentTasks", []) for name, task in tasks.items()})
    # Without a champion named at compile time the compiled run has no baseline node; all else is equal.
    assert kfp_names == PRODUCT - {BASELINE}
    assert kfp_edges == {e for e in local_edges if BASELINE not in e}
    # Tracking, registration and the gate sit after the Evaluator; the push after the gate.
    assert {("Evaluator", "RegistryGate"), ("RegistryGate", "ServingPusher")} <= kfp_edges
    # With a champion, the baseline node and its edges are the local ones, less the local resolver's
    # read of the Trainer's model (it skips the candidate; an Importer needs no such check).
    target = KubeflowTarget(baseline_model_uri="/mnt/dxpipe/pipelines/champion/Trainer/model/7")
    with_champion = yaml.safe_load(compile_pipeline(default_cfg, tmp_path / "c.yaml", target).read_text())
    tasks = _kfp_tasks(with_champion)
    names, edges = _graph({name: task.get("dependentTasks", []) for name, task in tasks.items()})
    assert names == PRODUCT and edges == local_edges - {("Trainer", BASELINE)}


def test_same_conditions(local_ir, kfp_spec):
    local = {
        n.pipeline_node.node_info.id: n.pipeline_node.inputs.conditionals
        for n in local_ir.nodes
        if n.pipeline_node.inputs.conditionals
    }
    assert set(local) == {"ServingPusher"}
    (expression,) = (str(c.placeholder_expression) for c in local["ServingPusher"].values())
    assert '"_RegistryGate.verdict"' in expression and '"passed"' in expression
    assert "int_value: 1" in expression
    conditions = {
        n: t["triggerPolicy"]["condition"] for n, t in _kfp_tasks(kfp_spec).items() if "triggerPolicy" in t
    }
    assert conditions == {
        "ServingPusher": "(inputs.artifacts['_RegistryGate.verdict'].artifacts[0].metadata['passed'] == 1.0)"
    }


def test_registry_gate_runs_the_mlflow_executor_with_the_run_id(kfp_spec):
    gate = _kfp_tasks(kfp_spec)["RegistryGate"]
    assert gate["inputs"]["parameters"]["run_id"] == {"componentInputParameter": "dxpipe_run_id"}
    executor = kfp_spec["deploymentSpec"]["executors"]["RegistryGate_executor"]["container"]["args"]
    assert executor[executor.index("--executor_class_path") + 1] == (
        "pipelines.registry_executor.MlflowRegistryGateExecutor"
    )
    tracking = gate["inputs"]["parameters"]["tracking"]["runtimeValue"]["constant"]
    # The pods' MLFLOW_TRACKING_URI decides the server; nothing of this machine's store is compiled in.
    assert '"tracking_uri": null' in tracking and '"workdir": "/mnt/dxpipe/work"' in tracking


def test_exit_handler_gets_the_final_status_and_the_run_id(kfp_spec):
    root = kfp_spec["root"]
    assert set(root["dag"]["tasks"]) == {TFX_DAG, EXIT_HANDLER_ID}
    assert root["inputDefinitions"]["parameters"] == {"dxpipe_run_id": {"parameterType": "STRING"}}
    handler = root["dag"]["tasks"][EXIT_HANDLER_ID]
    assert handler["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert handler["inputs"]["parameters"]["final_status"] == {"taskFinalStatus": {"producerTask": TFX_DAG}}
    assert handler["inputs"]["parameters"]["run_id"] == {"componentInputParameter": "dxpipe_run_id"}
    # The sub-DAG declares and receives the parameter its RegistryGate task reads.
    assert (
        kfp_spec["components"][TFX_DAG]["inputDefinitions"]["parameters"]
        == root["inputDefinitions"]["parameters"]
    )
    assert root["dag"]["tasks"][TFX_DAG]["inputs"]["parameters"] == {
        "dxpipe_run_id": {"componentInputParameter": "dxpipe_run_id"}
    }
    args = kfp_spec["deploymentSpec"]["executors"][f"{EXIT_HANDLER_ID}_executor"]["container"]["args"]
    assert re.fullmatch(r"pipelines\.kubeflow_exit\.MlflowRunFinalizer\w*", args[1])


def test_kfp_sdk_loads_the_spec_with_exit_handler(kfp_spec, tmp_path):
    from kfp import components

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(kfp_spec))
    component = components.load_component_from_file(str(path))
    assert set(component.pipeline_spec.root.dag.tasks) == {TFX_DAG, EXIT_HANDLER_ID}


def test_no_credentials_reach_the_compiled_node_parameters(default_cfg, tmp_path):
    """Execution parameters are stored in ML Metadata and the spec: a password in the URI stays out."""
    import dataclasses

    from tfx.dsl.compiler import compiler

    cfg = dataclasses.replace(
        default_cfg, tracking={"tracking_uri": "https://alice:s3cret@mlflow.example.org"}
    )
    pipeline = create_pipeline(cfg, pipeline_root=str(tmp_path), input_base=str(tmp_path), source_name="wdbc")
    ir = str(compiler.Compiler().compile(pipeline))
    assert "mlflow.example.org" in ir and "s3cret" not in ir
    spec = compile_pipeline(cfg, tmp_path / "kfp" / "wdbc.yaml", KubeflowTarget()).read_text()
    assert "s3cret" not in spec and "s3cret" not in (tmp_path / "kfp" / "wdbc.json").read_text()
